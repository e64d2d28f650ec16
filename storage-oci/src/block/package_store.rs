//! A repository as the package engine's store: `current` is HEAD, a version is an artifact
//! tagged with its id (the blockctl manifest as its config blob, the frames as its layers),
//! and frames are blobs named by their digests. Put and get themselves are the engine's.

use std::collections::HashSet;
use std::ops::Range;

use storage_core::package::manifest::HeadRecord;
use storage_core::package::store::{
    ByteStream, HeadPrecondition, HeadTag, ObjectName, PackageStore, Swap,
};

use super::*;

impl OciBlock {
    /// The digest of an object a registry can hold: frames only.
    fn digest(&self, at: &BlockPath, name: &ObjectName) -> Result<String> {
        match name {
            ObjectName::Frame(sha) => Ok(format!("sha256:{sha}")),
            other => Err(Error::Unsupported(format!(
                "{}: a registry holds frames, not {other:?}",
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

    fn ranged_reads(&self) -> bool {
        false
    }

    /// Layers stay one frame each (format 2), so that an artifact client that pulls the
    /// layers in order gets exactly the version's `.tar.zst`.
    fn keeps_packs(&self) -> bool {
        false
    }

    async fn read_head(&self, at: &BlockPath) -> Result<Option<(HeadRecord, HeadTag)>> {
        let named = self.named(at);
        let repo = self.repo(at).map_err(&named)?;
        let Some(found) = self.current(&repo).await.map_err(&named)? else {
            return Ok(None);
        };
        let updated = artifact::created_of(&found.image).unwrap_or_default();
        let head = HeadRecord {
            version: found.version,
            updated,
            ..HeadRecord::default()
        };
        Ok(Some((head, HeadTag::default())))
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
        // Its manifest differs from the version tag's by one annotation, so that deleting an
        // old version by digest can never take `current` with it.
        let current = artifact::as_current(&image);
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

    async fn read_manifest(&self, at: &BlockPath, version: &str) -> Result<PackageManifest> {
        let named = self.named(at);
        let repo = self.repo(at).map_err(&named)?;
        let found = self
            .version_artifact(&repo, version)
            .await
            .map_err(&named)?;
        self.manifest_of(&found).await.map_err(&named)
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
        let config = Bytes::from(manifest.to_compressed());
        self.registry()
            .push_blob(&repo, config.clone(), &registry::digest_of(&config))
            .await
            .map_err(&named)?;
        let image = artifact::image_manifest(manifest, &config);
        let body = serde_json::to_vec(&image).expect("a manifest serializes");
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
        self.registry()
            .has_blob(&repo, &digest)
            .await
            .map_err(&named)
    }

    async fn write_object(&self, at: &BlockPath, name: &ObjectName, data: Bytes) -> Result<()> {
        let named = self.named(at);
        let repo = self.repo(at).map_err(&named)?;
        let digest = self.digest(at, name)?;
        self.registry()
            .push_blob(&repo, data, &digest)
            .await
            .map_err(&named)
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
