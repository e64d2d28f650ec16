//! Where the package layout lives in an object store: a manifest per version (format 2:
//! compressed; format 1: plain JSON beside one archive), HEAD naming the current one, and the
//! objects frames live in. This is the store the package engine puts and gets through; the
//! engine (`crate::package::engine`) decides everything else.

use std::collections::HashSet;
use std::ops::Range;

use crate::package::store::{
    ByteStream, HeadPrecondition, HeadTag, ObjectName, PackageStore, PutGuard, StoredManifest, Swap,
};

use crate::bounds::{HEAD_MAX, MANIFEST_COMPRESSED_MAX, MANIFEST_MAX, SIGNATURE_MAX, read_capped};

use super::coordination::Intent;

/// Where each HEAD swap leaves a note (`<unix millis>-<version>.json`, HEAD's body).
pub(super) const HEADS_DIR: &str = ".blocks/heads";
use super::*;

impl ObjectStoreBlock {
    pub(super) fn package_key(&self, at: &BlockPath, version: &str) -> Result<ObjPath> {
        self.key(at, &format!(".blocks/packages/{version}.tar.zst"))
    }

    /// Format 1's manifest (plain JSON).
    pub(super) fn manifest_key(&self, at: &BlockPath, version: &str) -> Result<ObjPath> {
        self.key(at, &format!(".blocks/manifests/{version}.json"))
    }

    /// Format 2's manifest (zstd-compressed JSON).
    pub(super) fn manifest_zst_key(&self, at: &BlockPath, version: &str) -> Result<ObjPath> {
        self.key(at, &format!(".blocks/manifests/{version}.json.zst"))
    }

    pub(super) async fn read_head(&self, at: &BlockPath) -> Result<Option<(HeadRecord, HeadTag)>> {
        let got = match self
            .store
            .get_opts(&self.key(at, HEAD)?, HEAD_MAX.get_options())
            .await
        {
            Ok(g) => g,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.fail(at)(e)),
        };
        let tag = HeadTag {
            e_tag: got.meta.e_tag.clone(),
            version: got.meta.version.clone(),
        };
        let what = format!("{}: HEAD", self.slug(at));
        let bytes = read_capped(got.into_stream().map_err(self.fail(at)), HEAD_MAX, &what).await?;
        let head = HeadRecord::parse(&bytes, &self.slug(at))?;
        Ok(Some((head, tag)))
    }

    /// HEAD is exactly `head` (same version, same timestamp): the record this put wrote.
    async fn head_is(&self, at: &BlockPath, head: &HeadRecord) -> bool {
        matches!(self.read_head(at).await, Ok(Some((h, _))) if h == *head)
    }

    /// The manifest of `version`, format 2 or 1, checked against its id.
    pub(super) async fn read_manifest(
        &self,
        at: &BlockPath,
        version: &str,
    ) -> Result<PackageManifest> {
        Ok(self.read_manifest_sized(at, version).await?.0)
    }

    /// The manifest and its stored size in bytes.
    pub(super) async fn read_manifest_sized(
        &self,
        at: &BlockPath,
        version: &str,
    ) -> Result<(PackageManifest, u64)> {
        let (manifest, bytes, _) = self.read_manifest_stored(at, version).await?;
        Ok((manifest, bytes.len() as u64))
    }

    /// A signature beside a manifest: its key plus `.minisig`.
    fn signature_key(manifest: &ObjPath) -> Result<ObjPath> {
        ObjPath::parse(format!("{manifest}.minisig"))
            .map_err(|e| Error::Usage(format!("bad object path: {e}")))
    }

    /// The manifest, its bytes as stored and the key it was read from.
    async fn read_manifest_stored(
        &self,
        at: &BlockPath,
        version: &str,
    ) -> Result<(PackageManifest, Bytes, ObjPath)> {
        let (bytes, compressed, key) = self.read_manifest_bytes(at, version).await?;
        let manifest = PackageManifest::parse_stored(&bytes, compressed, version)
            .map_err(|e| e.context(self.slug(at)))?;
        Ok((manifest, bytes, key))
    }

    /// A manifest's bytes as stored, unparsed: whether they are compressed, and their key.
    async fn read_manifest_bytes(
        &self,
        at: &BlockPath,
        version: &str,
    ) -> Result<(Bytes, bool, ObjPath)> {
        for (key, compressed) in [
            (self.manifest_zst_key(at, version)?, true),
            (self.manifest_key(at, version)?, false),
        ] {
            let (cap, what) = match compressed {
                true => (MANIFEST_COMPRESSED_MAX, "compressed manifest"),
                false => (MANIFEST_MAX, "manifest"),
            };
            let bytes = match self.store.get_opts(&key, cap.get_options()).await {
                Ok(g) => {
                    let what = format!(
                        "{}: the {what} of version {}",
                        self.slug(at),
                        short(version)
                    );
                    read_capped(g.into_stream().map_err(self.fail(at)), cap, &what).await?
                }
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(self.fail(at)(e)),
            };
            return Ok((bytes, compressed, key));
        }
        Err(Error::NotFound(format!(
            "{}: version {} has no manifest (is it deleted or incomplete?)",
            self.slug(at),
            short(version)
        )))
    }

    /// The HEAD history at `at`, oldest first: when, which version, and the note's key.
    pub(super) async fn listed_heads(&self, at: &BlockPath) -> Result<Vec<(i64, String, ObjPath)>> {
        let mut out: Vec<(i64, String, ObjPath)> = self
            .listed(at, HEADS_DIR)
            .await?
            .into_iter()
            .filter_map(|m| {
                let (when, version) = m
                    .location
                    .filename()?
                    .strip_suffix(".json")?
                    .split_once('-')?;
                let when = when.parse().ok()?;
                is_version_id(version).then(|| (when, version.to_string(), m.location.clone()))
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// Every object of one version but its frames and packs (which versions share):
    /// manifests first (a version without one is no longer listed), their signatures, and
    /// format 1's archive.
    pub(super) fn version_keys(&self, at: &BlockPath, version: &str) -> Result<Vec<ObjPath>> {
        let (zst, json) = (
            self.manifest_zst_key(at, version)?,
            self.manifest_key(at, version)?,
        );
        Ok(vec![
            Self::signature_key(&zst)?,
            Self::signature_key(&json)?,
            zst,
            json,
            self.package_key(at, version)?,
        ])
    }

    /// What `rollback` goes back to by default: the newest version HEAD named before
    /// `current` that is still stored; without a HEAD history, the newest version created
    /// before it.
    pub(super) async fn previous_version(
        &self,
        at: &BlockPath,
        current: Option<&str>,
    ) -> Result<String> {
        let stored: HashSet<String> = self
            .stored_versions(at)
            .await?
            .into_iter()
            .map(|(v, _)| v)
            .collect();
        let history = self.listed_heads(at).await?;
        if let Some((_, v, _)) = history
            .iter()
            .rev()
            .find(|(_, v, _)| Some(v.as_str()) != current && stored.contains(v))
        {
            return Ok(v.clone());
        }
        let versions = self.list_versions(at).await?;
        let current_created = versions
            .iter()
            .find(|v| v.current)
            .map(|v| v.created.clone());
        versions
            .into_iter()
            .filter(|v| !v.current && current_created.as_ref().is_none_or(|c| v.created < *c))
            .map(|v| v.version)
            .next()
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "{}: no version before the current one to roll back to",
                    self.slug(at)
                ))
            })
    }

    /// Every version id that has a manifest at `at`.
    pub(super) async fn stored_versions(
        &self,
        at: &BlockPath,
    ) -> Result<Vec<(String, ObjectMeta)>> {
        Ok(self
            .listed(at, ".blocks/manifests")
            .await?
            .into_iter()
            .filter_map(|m| {
                let file = m.location.filename()?;
                let name = file
                    .strip_suffix(".json.zst")
                    .or_else(|| file.strip_suffix(".json"))?
                    .to_string();
                is_version_id(&name).then_some((name, m))
            })
            .collect())
    }

    /// A full version id from an id or a unique prefix of one stored at `at`.
    pub(super) async fn resolve_version(&self, at: &BlockPath, wanted: &str) -> Result<String> {
        let known = if is_version_id(wanted) || wanted.len() < 4 {
            Vec::new()
        } else {
            self.stored_versions(at).await?
        };
        crate::package::manifest::resolve_version(wanted, known.into_iter().map(|(v, _)| v))
            .map_err(|e| e.context(self.slug(at)))
    }
}

#[async_trait]
impl PackageStore for ObjectStoreBlock {
    fn slug(&self, at: &BlockPath) -> String {
        ObjectStoreBlock::slug(self, at)
    }

    fn secrets(&self) -> &[String] {
        &self.secrets
    }

    fn cache_scope(&self) -> Option<String> {
        Some(format!("{}\n{}", self.store, self.root))
    }

    async fn read_head(&self, at: &BlockPath) -> Result<Option<(HeadRecord, HeadTag)>> {
        ObjectStoreBlock::read_head(self, at).await
    }

    async fn swap_head(
        &self,
        at: &BlockPath,
        head: &HeadRecord,
        expect: HeadPrecondition,
    ) -> Result<Swap> {
        let mode = match expect {
            HeadPrecondition::Any => PutMode::Overwrite,
            HeadPrecondition::Absent => PutMode::Create,
            HeadPrecondition::Unchanged(tag) => PutMode::Update(UpdateVersion {
                e_tag: tag.e_tag,
                version: tag.version,
            }),
        };
        let body = serde_json::to_vec(head).expect("HEAD serializes");
        let opts = StorePutOptions {
            mode,
            ..Default::default()
        };
        match self
            .store
            .put_opts(&self.key(at, HEAD)?, body.into(), opts)
            .await
        {
            Ok(_) => Ok(Swap::Done),
            // The swap landed but its response was lost: the client's retry then met the
            // precondition our own write had changed, or it gave up. HEAD holding exactly
            // the record this put wrote is our success either way.
            Err(e) if self.head_is(at, head).await => {
                tracing::debug!(slug = self.slug(at), error = %e, "HEAD swap answered with an error, but HEAD is ours");
                Ok(Swap::Done)
            }
            Err(
                object_store::Error::Precondition { .. }
                | object_store::Error::AlreadyExists { .. },
            ) => Ok(Swap::Lost),
            Err(e) => Err(self.fail(at)(e)),
        }
    }

    async fn read_manifest(&self, at: &BlockPath, version: &str) -> Result<PackageManifest> {
        ObjectStoreBlock::read_manifest(self, at, version).await
    }

    async fn read_manifest_signed(&self, at: &BlockPath, version: &str) -> Result<StoredManifest> {
        let (bytes, compressed, key) = self.read_manifest_bytes(at, version).await?;
        let sig_key = Self::signature_key(&key)?;
        let signature = match self
            .store
            .get_opts(&sig_key, SIGNATURE_MAX.get_options())
            .await
        {
            Ok(g) => {
                let what = format!(
                    "{}: the signature of version {}",
                    self.slug(at),
                    short(version)
                );
                let bytes =
                    read_capped(g.into_stream().map_err(self.fail(at)), SIGNATURE_MAX, &what)
                        .await?;
                Some(
                    String::from_utf8(bytes.to_vec())
                        .map_err(|_| Error::Trust(format!("{what} is not text")))?,
                )
            }
            Err(object_store::Error::NotFound { .. }) => None,
            Err(e) => return Err(self.fail(at)(e)),
        };
        Ok(StoredManifest {
            bytes,
            compressed,
            signature,
        })
    }

    async fn write_manifest_signature(
        &self,
        at: &BlockPath,
        manifest: &PackageManifest,
        signature: &str,
    ) -> Result<()> {
        let key = if manifest.format == crate::package::manifest::MANIFEST_FORMAT {
            self.manifest_key(at, &manifest.version)?
        } else {
            self.manifest_zst_key(at, &manifest.version)?
        };
        self.store
            .put(
                &Self::signature_key(&key)?,
                signature.as_bytes().to_vec().into(),
            )
            .await
            .map_err(self.fail(at))?;
        Ok(())
    }

    async fn record_head(&self, at: &BlockPath, head: &HeadRecord) -> Result<()> {
        let when = humantime::parse_rfc3339_weak(&head.updated)
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as i64);
        let key = self.key(at, &format!("{HEADS_DIR}/{when:013}-{}.json", head.version))?;
        let body = serde_json::to_vec(head).expect("HEAD serializes");
        self.store
            .put(&key, body.into())
            .await
            .map_err(self.fail(at))?;
        Ok(())
    }

    async fn head_history(&self, at: &BlockPath) -> Result<Vec<(i64, String)>> {
        Ok(self
            .listed_heads(at)
            .await?
            .into_iter()
            .map(|(w, v, _)| (w, v))
            .collect())
    }

    async fn has_version(&self, at: &BlockPath, version: &str) -> Result<bool> {
        Ok(self
            .exists(at, &self.manifest_zst_key(at, version)?)
            .await?
            || (self.exists(at, &self.manifest_key(at, version)?).await?
                && self.exists(at, &self.package_key(at, version)?).await?))
    }

    async fn write_manifest(&self, at: &BlockPath, manifest: &PackageManifest) -> Result<u64> {
        let (key, body) = if manifest.format == crate::package::manifest::MANIFEST_FORMAT {
            (
                self.manifest_key(at, &manifest.version)?,
                manifest.to_json(),
            )
        } else {
            (
                self.manifest_zst_key(at, &manifest.version)?,
                manifest.to_compressed(),
            )
        };
        let len = body.len() as u64;
        // What no reader would take is not written: the version would be unreadable.
        if manifest.format != crate::package::manifest::MANIFEST_FORMAT
            && len > MANIFEST_COMPRESSED_MAX.bytes
        {
            return Err(Error::Usage(format!(
                "{}: the tree has {} entries; its manifest would be {len} bytes, past the \
                 {} bytes an agent reads (MANIFEST_COMPRESSED_MAX): split it into smaller \
                 blocks",
                self.slug(at),
                manifest.entries.len(),
                MANIFEST_COMPRESSED_MAX.bytes
            )));
        }
        self.store
            .put(&key, body.into())
            .await
            .map_err(self.fail(at))?;
        Ok(len)
    }

    async fn stored_frames(&self, at: &BlockPath) -> Result<Option<HashSet<String>>> {
        Ok(Some(
            self.listed_frames(at)
                .await?
                .into_iter()
                .map(|(n, _)| n)
                .collect(),
        ))
    }

    async fn has_object(&self, at: &BlockPath, name: &ObjectName) -> Result<bool> {
        self.exists(at, &self.key(at, &name.relative_path())?).await
    }

    async fn write_object(&self, at: &BlockPath, name: &ObjectName, data: Bytes) -> Result<()> {
        self.store
            .put(&self.key(at, &name.relative_path())?, data.into())
            .await
            .map_err(self.fail(at))?;
        Ok(())
    }

    async fn write_object_stream(
        &self,
        at: &BlockPath,
        name: &ObjectName,
        chunks: mpsc::Receiver<Bytes>,
        producer: tokio::task::JoinHandle<Result<()>>,
    ) -> Result<()> {
        let key = self.key(at, &name.relative_path())?;
        self.upload(at, &key, chunks, producer, true).await?;
        Ok(())
    }

    async fn read_object(
        &self,
        at: &BlockPath,
        name: &ObjectName,
        range: Option<Range<u64>>,
    ) -> Result<Option<ByteStream>> {
        let key = self.key(at, &name.relative_path())?;
        let opts = object_store::GetOptions {
            range: range.map(Into::into),
            ..Default::default()
        };
        let got = match self.store.get_opts(&key, opts).await {
            Ok(g) => g,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.fail(at)(e)),
        };
        let (slug, secrets) = (self.slug(at), self.secrets.clone());
        let range = got.range.clone();
        Ok(Some(match got.payload {
            // A local file is read directly in large chunks: its stream form hands over
            // 8 KiB at a time through a blocking task each, which took longer than unpacking.
            GetResultPayload::File(file, _) => file_chunks(file, range),
            GetResultPayload::Stream(stream) => stream
                .map_err(move |e| scrub_error(Error::from_store(e), &secrets).context(&slug))
                .boxed(),
        }))
    }

    async fn begin_put(&self, at: &BlockPath) -> Result<Box<dyn PutGuard>> {
        Ok(Box::new(IntentGuard {
            block: self.clone(),
            intent: Some(self.declare_intent(at).await?),
        }))
    }

    async fn settle(&self, at: &BlockPath) -> Result<()> {
        self.wait_for_gc(at).await
    }
}

/// A put's intent, withdrawn when the put ends.
struct IntentGuard {
    block: ObjectStoreBlock,
    intent: Option<Intent>,
}

#[async_trait]
impl PutGuard for IntentGuard {
    async fn end(mut self: Box<Self>) {
        if let Some(intent) = self.intent.take() {
            self.block.withdraw_intent(intent).await;
        }
    }
}

/// `range` of a local file, in chunks read on a blocking thread.
fn file_chunks(file: std::fs::File, range: Range<u64>) -> ByteStream {
    // 1 MiB chunks; a get runs many reads at once, each holding at most three.
    let (tx, rx) = mpsc::channel::<Result<Bytes>>(2);
    tokio::task::spawn_blocking(move || {
        use std::io::{Seek, SeekFrom};
        let mut file = file;
        if let Err(e) = file.seek(SeekFrom::Start(range.start)) {
            let _ = tx.blocking_send(Err(Error::io("reading the package", e)));
            return;
        }
        let mut left = range.end - range.start;
        while left > 0 {
            let mut buf = vec![0u8; (left as usize).min(crate::stream::CHUNK)];
            match file.read(&mut buf) {
                Ok(0) => {
                    let e = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
                    let _ = tx.blocking_send(Err(Error::io("reading the package", e)));
                    return;
                }
                Ok(n) => {
                    buf.truncate(n);
                    left -= n as u64;
                    if tx.blocking_send(Ok(buf.into())).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(Error::io("reading the package", e)));
                    return;
                }
            }
        }
    });
    stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|v| (v, rx)) }).boxed()
}
