//! A repository as the package engine's store: `current` is HEAD, a version is an artifact
//! tagged with its id (the blockctl manifest as its config blob, its packs as its layers, or
//! format 2's frames), and packs and frames are blobs named by their digests (both are named
//! by the sha256 of their bytes). Packs are read by HTTP Range requests where the registry
//! honours them, else whole. A signing block's manifest signature is the one layer of an
//! artifact tagged `<version>.sig`, its signed HEAD record an annotation of `current`. Put and
//! get themselves are the engine's.

use std::collections::HashSet;
use std::ops::Range;

use storage_core::bounds::REGISTRY_MANIFEST_MAX;
use storage_core::package::manifest::{HeadRecord, PACKS_FORMAT};
use storage_core::package::packs::PACK_MAX;
use storage_core::package::store::{
    ByteStream, HeadPrecondition, HeadTag, ObjectName, PackageStore, StoredManifest, Swap,
    unix_millis,
};

use super::*;
use crate::registry::Ranged;

impl OciBlock {
    /// The image manifest of `version`: the one a get just located (taken, so it is read
    /// once), else read from the registry.
    async fn located_image(&self, repo: &str, version: &str) -> Result<Image> {
        let located = self
            .inner
            .located
            .lock()
            .expect("located slot")
            .remove(&(repo.to_string(), version.to_string()));
        match located {
            Some(image) => Ok(image),
            None => Ok(self.version_artifact(repo, version).await?.image),
        }
    }

    /// The digest of an object a registry can hold: packs and frames.
    fn digest(&self, at: &BlockPath, name: &ObjectName) -> Result<String> {
        match name {
            ObjectName::Frame(sha) | ObjectName::Pack(sha) => Ok(format!("sha256:{sha}")),
            other => Err(Error::Unsupported(format!(
                "{}: a registry holds packs and frames, not {other:?}",
                self.slug(at)
            ))),
        }
    }
}

#[async_trait]
impl PackageStore for OciBlock {
    fn slug(&self, at: &BlockPath) -> String {
        OciBlock::slug(self, at)
    }

    fn secrets(&self) -> &[String] {
        self.registry().secrets()
    }

    /// Packs are read by range until the registry answers a Range request with the whole
    /// blob.
    fn ranged_reads(&self) -> bool {
        self.ranges_honoured()
    }

    /// Packs are the layers: a version is a few blobs of up to `PACK_MAX`, whatever its
    /// frame count.
    fn keeps_packs(&self) -> bool {
        true
    }

    async fn read_head(&self, at: &BlockPath) -> Result<Option<(HeadRecord, HeadTag)>> {
        let named = self.named(at);
        let repo = self.repo(at).map_err(&named)?;
        let Some(found) = self.current(&repo).await.map_err(&named)? else {
            self.inner
                .history_read
                .lock()
                .expect("history slot")
                .insert(repo, Vec::new());
            return Ok(None);
        };
        self.inner
            .history_read
            .lock()
            .expect("history slot")
            .insert(repo, artifact::history_of(&found.image));
        Ok(Some((head_record(&found), HeadTag::default())))
    }

    /// Moves `current` onto the version's artifact. Registries honour no precondition (the
    /// capabilities say so, and `--if-version` is refused before any request).
    async fn swap_head(
        &self,
        at: &BlockPath,
        head: &HeadRecord,
        _expect: HeadPrecondition,
    ) -> Result<Swap> {
        let named = self.named(at);
        let repo = self.repo(at).map_err(&named)?;
        let pushed = self
            .inner
            .pushed
            .lock()
            .expect("pushed slot")
            .remove(&(repo.clone(), head.version.clone()));
        let (image, existed) = match pushed {
            Some((image, existed)) => (image, existed),
            None => (
                self.tagged(&repo, &head.version)
                    .await
                    .map_err(&named)?
                    .image,
                true,
            ),
        };
        // The history `current` carries, one swap longer: as read before this swap, else
        // read now.
        let read = self
            .inner
            .history_read
            .lock()
            .expect("history slot")
            .remove(&repo);
        let mut history = match read {
            Some(h) => h,
            None => self
                .current(&repo)
                .await
                .map_err(&named)?
                .map(|c| artifact::history_of(&c.image))
                .unwrap_or_default(),
        };
        history.push((unix_millis(), head.version.clone()));
        // Its manifest differs from the version tag's by annotations, so that deleting an
        // old version by digest can never take `current` with it.
        let current = artifact::as_current(&image, Some(head), &history);
        self.registry()
            .push_manifest_bytes(
                &repo,
                CURRENT,
                serde_json::to_vec(&current).expect("a manifest serializes"),
            )
            .await
            .map_err(&named)?;
        if existed {
            // A gc that dropped this old version meanwhile deleted its manifest, and with it
            // the version tag: tag it again, now that it is current.
            let body = serde_json::to_vec(&image).expect("a manifest serializes");
            self.registry()
                .push_manifest_bytes(&repo, &head.version, body)
                .await
                .map_err(&named)?;
        }
        Ok(Swap::Done)
    }

    /// The swaps `current` remembers (its last `HISTORY_MAX`), oldest first.
    async fn head_history(&self, at: &BlockPath) -> Result<Vec<(i64, String)>> {
        let named = self.named(at);
        let repo = self.repo(at).map_err(&named)?;
        Ok(self
            .current(&repo)
            .await
            .map_err(&named)?
            .map(|c| artifact::history_of(&c.image))
            .unwrap_or_default())
    }

    async fn read_manifest(&self, at: &BlockPath, version: &str) -> Result<PackageManifest> {
        let named = self.named(at);
        let repo = self.repo(at).map_err(&named)?;
        let image = self.located_image(&repo, version).await.map_err(&named)?;
        let found = Artifact {
            repo,
            version: version.to_string(),
            image,
            digest: String::new(),
        };
        self.manifest_of(&found).await.map_err(&named)
    }

    /// The version's config blob as stored, and the `.minisig` of the artifact tagged
    /// `<version>.sig`. Its layers are not checked against it: the engine checks the
    /// signature before parsing, and every pack and frame is read by the digest the signed
    /// manifest names.
    async fn read_manifest_signed(&self, at: &BlockPath, version: &str) -> Result<StoredManifest> {
        let named = self.named(at);
        let repo = self.repo(at).map_err(&named)?;
        let image = self.located_image(&repo, version).await.map_err(&named)?;
        let bytes = artifact::read_config(self.registry(), &repo, &image, version)
            .await
            .map_err(&named)?;
        let tag = artifact::signature_tag(version);
        let signature = match self.registry().manifest(&repo, &tag).await {
            Ok(Some((sig, _))) => Some(
                artifact::read_signature(self.registry(), &repo, &sig, version)
                    .await
                    .map_err(&named)?,
            ),
            Ok(None) => None,
            Err(e) => return Err(named(e)),
        };
        Ok(StoredManifest {
            bytes,
            compressed: true,
            signature,
        })
    }

    /// Pushes the signature as the one layer of an artifact tagged `<version>.sig` (a tag,
    /// not a referrer: every registry serves tags, not all the referrers API).
    async fn write_manifest_signature(
        &self,
        at: &BlockPath,
        manifest: &PackageManifest,
        signature: &str,
    ) -> Result<()> {
        let named = self.named(at);
        let repo = self.repo(at).map_err(&named)?;
        let registry = self.registry();
        let sig = Bytes::from(signature.as_bytes().to_vec());
        let empty = Bytes::from_static(artifact::EMPTY_CONFIG);
        registry
            .push_blob(&repo, empty.clone(), &registry::digest_of(&empty))
            .await
            .map_err(&named)?;
        registry
            .push_blob(&repo, sig.clone(), &registry::digest_of(&sig))
            .await
            .map_err(&named)?;
        let image = artifact::signature_manifest(&manifest.version, &sig);
        registry
            .push_manifest_bytes(
                &repo,
                &artifact::signature_tag(&manifest.version),
                serde_json::to_vec(&image).expect("a manifest serializes"),
            )
            .await
            .map_err(&named)?;
        Ok(())
    }

    async fn has_version(&self, at: &BlockPath, version: &str) -> Result<bool> {
        let named = self.named(at);
        let repo = self.repo(at).map_err(&named)?;
        let found = self
            .registry()
            .manifest(&repo, version)
            .await
            .map_err(&named)?;
        match found {
            Some((image, _)) if artifact::version_of(&image) == Some(version) => {
                self.inner
                    .pushed
                    .lock()
                    .expect("pushed slot")
                    .insert((repo, version.to_string()), (image, true));
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Pushes the config blob, then the image manifest tagged with the version id.
    async fn write_manifest(&self, at: &BlockPath, manifest: &PackageManifest) -> Result<u64> {
        let named = self.named(at);
        let repo = self.repo(at).map_err(&named)?;
        let blobs = artifact::layer_blobs(manifest);
        let sizes: Vec<u64> = if manifest.format == PACKS_FORMAT {
            let mut sizes = Vec::with_capacity(blobs.len());
            for sha in &blobs {
                let size = self.pack_size(&repo, sha).await.map_err(&named)?;
                sizes.push(size.ok_or_else(|| {
                    named(Error::Integrity(format!(
                        "pack {} is missing from the registry",
                        short(sha)
                    )))
                })?);
            }
            sizes
        } else {
            manifest.frames.iter().map(|f| f.length).collect()
        };
        let config = Bytes::from(manifest.to_compressed());
        let image = artifact::image_manifest(manifest, &config, &sizes);
        let body = serde_json::to_vec(&image).expect("a manifest serializes");
        // Readers (and registries) take no larger image manifest. Format 3 lists a few
        // packs; format 2 one layer per frame, which a package of some GiB can pass.
        if body.len() as u64 > REGISTRY_MANIFEST_MAX.bytes {
            return Err(named(Error::Unsupported(format!(
                "the image manifest of version {} would list {} layers in {} bytes, more than {} (the cap {}); put it in format 3",
                short(&manifest.version),
                image.layers.len(),
                body.len(),
                REGISTRY_MANIFEST_MAX.bytes,
                REGISTRY_MANIFEST_MAX.name
            ))));
        }
        self.registry()
            .push_blob(&repo, config.clone(), &registry::digest_of(&config))
            .await
            .map_err(&named)?;
        let sent = (config.len() + body.len()) as u64;
        self.registry()
            .push_manifest_bytes(&repo, &manifest.version, body)
            .await
            .map_err(&named)?;
        self.inner
            .pushed
            .lock()
            .expect("pushed slot")
            .insert((repo, manifest.version.clone()), (image, false));
        Ok(sent)
    }

    /// Registries list no blobs: the engine asks frame by frame.
    async fn stored_frames(&self, _at: &BlockPath) -> Result<Option<HashSet<String>>> {
        Ok(None)
    }

    async fn has_object(&self, at: &BlockPath, name: &ObjectName) -> Result<bool> {
        let named = self.named(at);
        let repo = self.repo(at).map_err(&named)?;
        let digest = self.digest(at, name)?;
        if let ObjectName::Pack(sha) = name {
            // Asked of the registry every time (a registry gc may have reclaimed it), and
            // its size kept for the layer that names it.
            let size = self
                .registry()
                .blob_size(&repo, &digest)
                .await
                .map_err(&named)?;
            if let Some(size) = size {
                self.remember_pack(&repo, sha, size);
            }
            return Ok(size.is_some());
        }
        self.registry()
            .has_blob(&repo, &digest)
            .await
            .map_err(&named)
    }

    async fn write_object(&self, at: &BlockPath, name: &ObjectName, data: Bytes) -> Result<()> {
        let named = self.named(at);
        let repo = self.repo(at).map_err(&named)?;
        let digest = self.digest(at, name)?;
        let len = data.len() as u64;
        self.registry()
            .push_blob(&repo, data, &digest)
            .await
            .map_err(&named)?;
        if let ObjectName::Pack(sha) = name {
            self.remember_pack(&repo, sha, len);
        }
        Ok(())
    }

    async fn read_object(
        &self,
        at: &BlockPath,
        name: &ObjectName,
        range: Option<Range<u64>>,
    ) -> Result<Option<ByteStream>> {
        let named = self.named(at);
        let repo = self.repo(at).map_err(&named)?;
        let digest = self.digest(at, name)?;
        if let ObjectName::Pack(sha) = name {
            return self.read_pack(&repo, sha, range).await.map_err(&named);
        }
        // A frame's length comes from the manifest: the blob is read as exactly that long.
        let got = match &range {
            Some(r) if r.start == 0 => self.registry().blob_sized(&repo, &digest, r.end).await,
            _ => self.registry().blob(&repo, &digest).await,
        };
        let data = match got {
            Ok(d) => d,
            Err(Error::NotFound(_)) => return Ok(None),
            Err(e) => return Err(named(e)),
        };
        let data = match range {
            Some(r) if r.end as usize <= data.len() && r.start <= r.end => {
                data.slice(r.start as usize..r.end as usize)
            }
            Some(_) => {
                return Err(named(Error::Integrity(format!(
                    "blob {} is shorter than the part asked of it",
                    short(&digest)
                ))));
            }
            None => data,
        };
        Ok(Some(stream::once(async move { Ok(data) }).boxed()))
    }
}

impl OciBlock {
    /// `range` of pack `sha` (all of it when `None`); `None` when the registry lacks it. A
    /// part is read by an HTTP Range request while the registry honours them, else the
    /// whole pack is read (never more than its descriptor's size) and sliced.
    async fn read_pack(
        &self,
        repo: &str,
        sha: &str,
        range: Option<Range<u64>>,
    ) -> Result<Option<ByteStream>> {
        let Some(size) = self.pack_size(repo, sha).await? else {
            return Ok(None);
        };
        if size > PACK_MAX {
            return Err(Error::Integrity(format!(
                "pack {} is {size} bytes, more than any pack holds",
                short(sha)
            )));
        }
        let digest = format!("sha256:{sha}");
        let whole = match range {
            Some(r) if r.start > r.end || r.end > size => {
                return Err(Error::Integrity(format!(
                    "pack {} holds {size} bytes, less than the part asked of it",
                    short(sha)
                )));
            }
            Some(r) if r.start == r.end => Bytes::new(),
            Some(r) if self.ranges_honoured() => {
                match self
                    .registry()
                    .blob_range(repo, &digest, r.clone(), size)
                    .await
                {
                    Ok(Ranged::Part(data)) => return Ok(Some(once(data))),
                    Ok(Ranged::Whole(data)) => {
                        self.ranges_ignored();
                        data.slice(r.start as usize..r.end as usize)
                    }
                    Err(Error::NotFound(_)) => return Ok(None),
                    Err(e) => return Err(e),
                }
            }
            r => {
                let data = match self.registry().blob_sized(repo, &digest, size).await {
                    Ok(d) => d,
                    Err(Error::NotFound(_)) => return Ok(None),
                    Err(e) => return Err(e),
                };
                match r {
                    Some(r) => data.slice(r.start as usize..r.end as usize),
                    None => data,
                }
            }
        };
        Ok(Some(once(whole)))
    }
}

/// The HEAD record `current` carries (a signing block's), else one naming its version. A
/// record that cannot be read counts as none: a trusting agent then refuses HEAD as
/// unsigned, and any put replaces it.
pub(super) fn head_record(found: &Artifact) -> HeadRecord {
    match artifact::head_of(&found.image) {
        Ok(Some(head)) => head,
        other => {
            if let Err(e) = other {
                tracing::debug!(error = %e, repo = %found.repo, "the HEAD record of `current` is not readable");
            }
            HeadRecord {
                version: found.version.clone(),
                updated: artifact::created_of(&found.image).unwrap_or_default(),
                ..HeadRecord::default()
            }
        }
    }
}

/// A stream of one chunk.
fn once(data: Bytes) -> ByteStream {
    stream::once(async move { Ok(data) }).boxed()
}
