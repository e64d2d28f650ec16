//! The generic adapter: any `object_store::ObjectStore` becomes a [`StorageBlock`]. Package
//! upload with HEAD written last, conditional HEAD swap, the files layout, versions, gc and
//! verification live here once; a backend crate only builds its store.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt, stream};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as ObjPath;
use object_store::{
    GetResultPayload, ObjectMeta, ObjectStore, ObjectStoreExt, PutMode,
    PutOptions as StorePutOptions, PutPayload, UpdateVersion, WriteMultipart,
};
use tokio::sync::mpsc;

use crate::block::*;
use crate::error::{Error, Result};
use crate::extract::unpack_verified;
use crate::hashcache::{HashCache, UploadLedger, same_etag};
use crate::manifest::{
    HeadRecord, MANIFEST_FORMAT, ManifestEntry, PackageManifest, Totals, is_safe_relative_path,
    is_version_id, short,
};
use crate::pack::{DEFAULT_LEVEL, write_package};
use crate::place::{check_destination, commit, staging_for};
use crate::secret::scrub;
use crate::slug::BlockPath;
use crate::stream::{ChunkWriter, FileRange, StreamReader};
use crate::tree::{ScanOptions, SourceTree};

const BLOCKS_DIR: &str = ".blocks";
const HEAD: &str = ".blocks/HEAD";
/// Packages younger than this without a manifest may belong to a put still under way.
const LEFTOVER_GRACE: Duration = Duration::from_secs(60);
/// Markers of package uploads in progress, one per multipart upload: `<id>.json`.
const UPLOADS: &str = ".blocks/uploads";

/// A storage block over an object store, rooted at a prefix inside it.
#[derive(Clone)]
pub struct ObjectStoreBlock {
    store: Arc<dyn ObjectStore>,
    root: String,
    label: String,
    caps: Capabilities,
    secrets: Vec<String>,
    part_size: usize,
    concurrency: usize,
    sweeper: Option<Arc<dyn LeftoverSweeper>>,
    multipart: Option<Arc<dyn MultipartStore>>,
}

/// Removes what interrupted uploads leave that the store's listing does not show (staged
/// files of a local store, incomplete multipart uploads), for `gc`.
pub trait LeftoverSweeper: Send + Sync + std::fmt::Debug {
    /// Removes leftovers under `prefix` last touched before `older_than`; returns how many.
    fn sweep(&self, prefix: &ObjPath, older_than: SystemTime) -> Result<u64>;
}

/// Never shows the secrets it scrubs.
impl std::fmt::Debug for ObjectStoreBlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStoreBlock")
            .field("store", &self.store.to_string())
            .field("root", &self.root)
            .field("label", &self.label)
            .field("secrets", &format_args!("[{} masked]", self.secrets.len()))
            .finish_non_exhaustive()
    }
}

/// What is stored at a path, as `get` finds it.
enum Stored {
    Package {
        at: BlockPath,
        version: String,
        subtree: String,
    },
    Files(Vec<ObjectMeta>),
}

impl ObjectStoreBlock {
    /// `root` is the prefix inside the store (may be empty); `label` (`type/name`) prefixes
    /// every message.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        root: &str,
        label: impl Into<String>,
        caps: Capabilities,
    ) -> Self {
        ObjectStoreBlock {
            store,
            root: root.trim_matches('/').to_string(),
            label: label.into(),
            caps,
            secrets: Vec::new(),
            // 8 MiB parts, 4 in flight: about 40 MiB of upload buffers at most.
            part_size: 8 * 1024 * 1024,
            concurrency: 4,
            sweeper: None,
            multipart: None,
        }
    }

    /// Runs package uploads through `store`'s multipart API directly, so their ids are
    /// known: a marker under `.blocks/uploads/` names each one while it runs, and `gc`
    /// aborts the uploads that a killed put left (S3 keeps their parts, and bills them,
    /// until they are aborted; no listing shows them).
    pub fn with_multipart(mut self, store: Arc<dyn MultipartStore>) -> Self {
        self.multipart = Some(store);
        self
    }

    /// Lets `gc` also remove leftovers the listing does not show.
    pub fn with_sweeper(mut self, sweeper: Arc<dyn LeftoverSweeper>) -> Self {
        self.sweeper = Some(sweeper);
        self
    }

    /// Values scrubbed from every error text (the block's resolved secrets).
    pub fn with_secrets(mut self, secrets: Vec<String>) -> Self {
        self.secrets = secrets;
        self
    }

    /// Size of multipart upload parts; packages smaller than one part go up in one request.
    pub fn with_part_size(mut self, bytes: usize) -> Self {
        self.part_size = bytes;
        self
    }

    fn slug(&self, at: &BlockPath) -> String {
        if at.is_root() {
            self.label.clone()
        } else {
            format!("{}/{at}", self.label)
        }
    }

    fn key(&self, at: &BlockPath, rel: &str) -> Result<ObjPath> {
        let inner = at.join(rel);
        let full = match (self.root.is_empty(), inner.is_empty()) {
            (true, _) => inner,
            (false, true) => self.root.clone(),
            (false, false) => format!("{}/{inner}", self.root),
        };
        ObjPath::parse(&full)
            .map_err(|e| Error::Usage(format!("{}: bad object path: {e}", self.slug(at))))
    }

    /// Turns a store error into ours, scrubbed of secrets and naming the slug.
    fn fail(&self, at: &BlockPath) -> impl Fn(object_store::Error) -> Error + '_ {
        let slug = self.slug(at);
        move |e| scrub_error(Error::from_store(e), &self.secrets).context(&slug)
    }

    fn package_key(&self, at: &BlockPath, version: &str) -> Result<ObjPath> {
        self.key(at, &format!(".blocks/packages/{version}.tar.zst"))
    }

    fn manifest_key(&self, at: &BlockPath, version: &str) -> Result<ObjPath> {
        self.key(at, &format!(".blocks/manifests/{version}.json"))
    }

    async fn read_head(&self, at: &BlockPath) -> Result<Option<(HeadRecord, UpdateVersion)>> {
        let got = match self.store.get(&self.key(at, HEAD)?).await {
            Ok(g) => g,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.fail(at)(e)),
        };
        let tag = UpdateVersion {
            e_tag: got.meta.e_tag.clone(),
            version: got.meta.version.clone(),
        };
        let bytes = got.bytes().await.map_err(self.fail(at))?;
        let head = HeadRecord::parse(&bytes, &self.slug(at))?;
        Ok(Some((head, tag)))
    }

    async fn exists(&self, at: &BlockPath, key: &ObjPath) -> Result<bool> {
        match self.store.head(key).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.fail(at)(e)),
        }
    }

    async fn read_manifest(&self, at: &BlockPath, version: &str) -> Result<PackageManifest> {
        let key = self.manifest_key(at, version)?;
        let bytes = match self.store.get(&key).await {
            Ok(g) => g.bytes().await.map_err(self.fail(at))?,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(Error::NotFound(format!(
                    "{}: version {} has no manifest (is it deleted or incomplete?)",
                    self.slug(at),
                    short(version)
                )));
            }
            Err(e) => return Err(self.fail(at)(e)),
        };
        PackageManifest::parse(&bytes, version).map_err(|e| e.context(self.slug(at)))
    }

    /// Every version id that has a manifest at `at`.
    async fn stored_versions(&self, at: &BlockPath) -> Result<Vec<(String, ObjectMeta)>> {
        let prefix = self.key(at, ".blocks/manifests")?;
        let metas: Vec<ObjectMeta> = self
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(self.fail(at))?;
        Ok(metas
            .into_iter()
            .filter_map(|m| {
                let name = m.location.filename()?.strip_suffix(".json")?.to_string();
                is_version_id(&name).then_some((name, m))
            })
            .collect())
    }

    /// A full version id from an id or a unique prefix of at least 4 characters.
    async fn resolve_version(&self, at: &BlockPath, wanted: &str) -> Result<String> {
        if is_version_id(wanted) {
            return Ok(wanted.to_string());
        }
        if wanted.len() < 4 {
            return Err(Error::Usage(format!(
                "version `{wanted}` is too short; give at least 4 characters"
            )));
        }
        let matches: Vec<String> = self
            .stored_versions(at)
            .await?
            .into_iter()
            .map(|(v, _)| v)
            .filter(|v| v.starts_with(wanted))
            .collect();
        match matches.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(Error::NotFound(format!(
                "{}: no version {wanted}",
                self.slug(at)
            ))),
            _ => Err(Error::Usage(format!(
                "{}: version prefix {wanted} is ambiguous",
                self.slug(at)
            ))),
        }
    }

    /// Files of a files layout under `at`: every object except those of `.blocks` folders.
    async fn mirror_objects(&self, at: &BlockPath) -> Result<Vec<ObjectMeta>> {
        let prefix = self.key(at, "")?;
        let prefix = (!prefix.as_ref().is_empty()).then_some(prefix);
        let metas: Vec<ObjectMeta> = self
            .store
            .list(prefix.as_ref())
            .try_collect()
            .await
            .map_err(self.fail(at))?;
        Ok(metas
            .into_iter()
            .filter(|m| !m.location.parts().any(|p| p.as_ref() == BLOCKS_DIR))
            .collect())
    }

    fn relative(&self, at: &BlockPath, meta: &ObjectMeta) -> Result<String> {
        let base = self.key(at, "")?;
        let rel: Vec<String> = meta
            .location
            .prefix_match(&base)
            .ok_or_else(|| {
                Error::Backend(format!("listing returned {} outside {base}", meta.location))
            })?
            .map(|p| p.as_ref().to_string())
            .collect();
        Ok(rel.join("/"))
    }

    async fn locate(&self, from: &BlockPath, version: Option<&str>) -> Result<Stored> {
        if let Some(v) = version {
            let version = self.resolve_version(from, v).await?;
            return Ok(Stored::Package {
                at: from.clone(),
                version,
                subtree: String::new(),
            });
        }
        if let Some((head, _)) = self.read_head(from).await? {
            return Ok(Stored::Package {
                at: from.clone(),
                version: head.version,
                subtree: String::new(),
            });
        }
        let files = self.mirror_objects(from).await?;
        if !files.is_empty() {
            return Ok(Stored::Files(files));
        }
        for anc in from.ancestors() {
            if let Some((head, _)) = self.read_head(&anc).await? {
                let subtree = from.strip_prefix(&anc).unwrap_or_default().to_string();
                return Ok(Stored::Package {
                    at: anc,
                    version: head.version,
                    subtree,
                });
            }
        }
        Err(Error::NotFound(format!(
            "{}: nothing is stored there",
            self.slug(from)
        )))
    }

    /// Uploads what arrives on `rx` to `key`: one request when it fits in a part, else a
    /// multipart upload with parallel parts. The object appears only if `producer` succeeds.
    async fn upload<T: Send + 'static>(
        &self,
        at: &BlockPath,
        key: &ObjPath,
        mut rx: mpsc::Receiver<Bytes>,
        producer: tokio::task::JoinHandle<Result<T>>,
        track: bool,
    ) -> Result<(T, Option<String>)> {
        let mut head: Vec<Bytes> = Vec::new();
        let mut buffered = 0usize;
        while buffered < self.part_size {
            match rx.recv().await {
                Some(b) => {
                    buffered += b.len();
                    head.push(b);
                }
                None => break,
            }
        }
        if buffered < self.part_size {
            let out = producer.await??;
            let payload: PutPayload = head.into_iter().collect();
            let put = self.store.put(key, payload).await.map_err(self.fail(at))?;
            return Ok((out, put.e_tag));
        }
        if let (true, Some(mp)) = (track, self.multipart.clone()) {
            return self.upload_tracked(at, key, mp, head, rx, producer).await;
        }
        let upload = self.store.put_multipart(key).await.map_err(self.fail(at))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, self.part_size);
        for b in head {
            writer.put(b);
        }
        let sent: Result<()> = async {
            while let Some(b) = rx.recv().await {
                writer
                    .wait_for_capacity(self.concurrency)
                    .await
                    .map_err(self.fail(at))?;
                writer.put(b);
            }
            Ok(())
        }
        .await;
        drop(rx);
        let produced = producer.await.map_err(Error::from).and_then(|r| r);
        match (sent, produced) {
            (Ok(()), Ok(out)) => {
                let put = writer.finish().await.map_err(self.fail(at))?;
                Ok((out, put.e_tag))
            }
            (Err(e), _) | (Ok(()), Err(e)) => {
                let _ = writer.abort().await;
                Err(e)
            }
        }
    }

    /// A multipart upload with its id recorded in a marker object until it completes or is
    /// aborted; parts of `part_size` go up `concurrency` at a time, in order.
    async fn upload_tracked<T: Send + 'static>(
        &self,
        at: &BlockPath,
        key: &ObjPath,
        mp: Arc<dyn MultipartStore>,
        head: Vec<Bytes>,
        rx: mpsc::Receiver<Bytes>,
        producer: tokio::task::JoinHandle<Result<T>>,
    ) -> Result<(T, Option<String>)> {
        let id = mp.create_multipart(key).await.map_err(self.fail(at))?;
        let marker = self.key(at, &format!("{UPLOADS}/{}.json", upload_name(key, &id)))?;
        let record = serde_json::to_vec(&UploadMarker {
            key: key.to_string(),
            id: id.clone(),
        })
        .expect("a marker serializes");
        if let Err(e) = self.store.put(&marker, record.into()).await {
            let _ = mp.abort_multipart(key, &id).await;
            return Err(self.fail(at)(e));
        }
        // The chunks, regrouped into parts of `part_size` (no copying: a part is a list of
        // the chunks' buffers), go up `concurrency` at a time and complete in order.
        let part_size = self.part_size;
        let parts = stream::unfold(
            (head.into_iter(), rx, false),
            move |(mut head, mut rx, ended)| async move {
                if ended {
                    return None;
                }
                let (mut part, mut len) = (Vec::new(), 0usize);
                while len < part_size {
                    let next = match head.next() {
                        Some(b) => Some(b),
                        None => rx.recv().await,
                    };
                    let Some(b) = next else {
                        return (!part.is_empty()).then_some((part, (head, rx, true)));
                    };
                    len += b.len();
                    part.push(b);
                }
                Some((part, (head, rx, false)))
            },
        );
        let sent: Result<Vec<PartId>> = parts
            .enumerate()
            .map(|(i, part)| {
                let (mp, key, id) = (mp.clone(), key.clone(), id.clone());
                let payload: PutPayload = part.into_iter().collect();
                async move { mp.put_part(&key, &id, i, payload).await }
            })
            .buffered(self.concurrency)
            .map_err(self.fail(at))
            .try_collect()
            .await;
        let produced = producer.await.map_err(Error::from).and_then(|r| r);
        let result = match (sent, produced) {
            (Ok(parts), Ok(out)) => match mp.complete_multipart(key, &id, parts).await {
                Ok(put) => Ok((out, put.e_tag)),
                Err(e) => Err(self.fail(at)(e)),
            },
            (Err(e), _) | (Ok(_), Err(e)) => Err(e),
        };
        if result.is_err() {
            let _ = mp.abort_multipart(key, &id).await;
        }
        let _ = self.store.delete(&marker).await;
        result
    }

    /// Aborts the multipart uploads whose markers are older than the grace (a killed put's),
    /// and removes their markers; returns how many.
    async fn abort_abandoned_uploads(&self, at: &BlockPath, cutoff: i64) -> Result<u64> {
        let Some(mp) = self.multipart.clone() else {
            return Ok(0);
        };
        let prefix = self.key(at, UPLOADS)?;
        let markers: Vec<ObjectMeta> = self
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(self.fail(at))?;
        let base = self.key(at, "")?;
        let mut removed = 0;
        for m in markers
            .into_iter()
            .filter(|m| m.last_modified.timestamp() < cutoff)
        {
            let body = self.store.get(&m.location).await.map_err(self.fail(at))?;
            let bytes = body.bytes().await.map_err(self.fail(at))?;
            // A marker that does not parse, or names an object elsewhere, is only removed.
            let upload = serde_json::from_slice::<UploadMarker>(&bytes)
                .ok()
                .and_then(|u| Some((ObjPath::parse(&u.key).ok()?, u.id)))
                .filter(|(key, _)| key.prefix_matches(&base));
            if let Some((key, id)) = upload {
                match mp.abort_multipart(&key, &id).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(self.fail(at)(e)),
                }
            }
            match self.store.delete(&m.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => removed += 1,
                Err(e) => return Err(self.fail(at)(e)),
            }
        }
        Ok(removed)
    }

    async fn put_package(
        &self,
        tree: SourceTree,
        to: &BlockPath,
        opts: &PutOptions,
    ) -> Result<PutReport> {
        let slug = self.slug(to);
        let version = tree.version_id();
        let mut report = PutReport {
            version: Some(version.clone()),
            layout: Layout::Package,
            files: tree.file_count(),
            bytes: tree.file_bytes(),
            skipped: true,
            warnings: tree.warnings.clone(),
        };
        if opts.if_version.is_some() && !self.caps.compare_and_swap {
            return Err(Error::Unsupported(format!(
                "{slug}: this backend cannot swap versions conditionally"
            )));
        }
        let head = self.read_head(to).await?;
        let precondition = match (&opts.if_version, &head) {
            (None, _) => PutMode::Overwrite,
            (Some(VersionPrecondition::NoVersion), None) => PutMode::Create,
            (Some(VersionPrecondition::Current(want)), Some((h, tag)))
                if h.version.starts_with(want.as_str()) && want.len() >= 4 =>
            {
                PutMode::Update(tag.clone())
            }
            (Some(_), current) => {
                let current = current
                    .as_ref()
                    .map_or("none".to_string(), |(h, _)| short(&h.version).to_string());
                return Err(Error::Conflict(format!(
                    "{slug}: --if-version does not hold: the current version is {current}"
                )));
            }
        };
        if head.as_ref().is_some_and(|(h, _)| h.version == version) {
            return Ok(report);
        }

        let manifest_key = self.manifest_key(to, &version)?;
        let package_key = self.package_key(to, &version)?;
        if !(self.exists(to, &manifest_key).await? && self.exists(to, &package_key).await?) {
            report.skipped = false;
            emit(
                &opts.progress,
                ProgressEvent::Phase {
                    name: "uploading",
                    total: Some(report.bytes),
                },
            );
            let (tx, rx) = mpsc::channel::<Bytes>(8);
            let entries = Arc::new(tree.entries);
            let packer_entries = entries.clone();
            let progress = opts.progress.clone();
            let packer = tokio::task::spawn_blocking(move || {
                let mut out = ChunkWriter::new(tx);
                let layout = write_package(&packer_entries, DEFAULT_LEVEL, &mut out, |n| {
                    emit(&progress, ProgressEvent::Advance(n))
                })?;
                std::io::Write::flush(&mut out).map_err(|e| Error::io("writing the package", e))?;
                Ok(layout)
            });
            let (layout, _) = self.upload(to, &package_key, rx, packer, true).await?;

            let records: Vec<_> = entries
                .iter()
                .zip(&layout.placements)
                .map(|(e, &(frame, offset))| ManifestEntry {
                    frame,
                    offset,
                    ..e.record.clone()
                })
                .collect();
            let totals = Totals::count(&records, layout.package_bytes);
            let manifest = PackageManifest {
                format: MANIFEST_FORMAT,
                version: version.clone(),
                created: now(),
                compression: "zstd".into(),
                totals,
                frames: layout.frames,
                entries: records,
            };
            self.store
                .put(&manifest_key, manifest.to_json().into())
                .await
                .map_err(self.fail(to))?;
        }

        let head = HeadRecord {
            version: version.clone(),
            updated: now(),
        };
        let body = serde_json::to_vec(&head).expect("HEAD serializes");
        let opts_head = StorePutOptions {
            mode: precondition,
            ..Default::default()
        };
        match self
            .store
            .put_opts(&self.key(to, HEAD)?, body.into(), opts_head)
            .await
        {
            Ok(_) => {}
            Err(
                object_store::Error::Precondition { .. }
                | object_store::Error::AlreadyExists { .. },
            ) => {
                return Err(Error::Conflict(format!(
                    "{slug}: another put changed the current version first; version {} is stored but not current",
                    short(&version)
                )));
            }
            Err(e) => return Err(self.fail(to)(e)),
        }
        emit(&opts.progress, ProgressEvent::Done);
        Ok(report)
    }

    async fn put_files(
        &self,
        tree: SourceTree,
        to: &BlockPath,
        opts: &PutOptions,
    ) -> Result<PutReport> {
        let slug = self.slug(to);
        if self.read_head(to).await?.is_some() {
            return Err(Error::Conflict(format!(
                "{slug} holds a package layout; rm it first or put to another path"
            )));
        }
        let mut warnings = tree.warnings.clone();
        if !self.caps.files_keep_metadata {
            let dropped = tree
                .entries
                .iter()
                .filter(|e| e.record.kind == EntryKind::Symlink)
                .count();
            if dropped > 0 {
                warnings.push(format!(
                    "{dropped} symlink(s) left out: the files layout stores only files"
                ));
            }
        }
        let existing = self.mirror_objects(to).await?;
        let files: Vec<_> = tree
            .entries
            .into_iter()
            .filter(|e| e.record.kind == EntryKind::File)
            .collect();
        let total: u64 = files.iter().map(|e| e.record.size).sum();
        emit(
            &opts.progress,
            ProgressEvent::Phase {
                name: "uploading",
                total: Some(total),
            },
        );
        // On a store that folds case (SMB), `README.md` and `Readme.md` are one object: a
        // tree holding both cannot be mirrored, and the stale check must compare folded
        // names, or it would delete the file just written under its old spelling.
        let fold = |p: &str| {
            if self.caps.files_case_sensitive {
                p.to_string()
            } else {
                p.to_lowercase()
            }
        };
        let mut keep = std::collections::HashMap::<String, &str>::new();
        for e in &files {
            if let Some(other) = keep.insert(fold(&e.record.path), &e.record.path) {
                return Err(Error::Usage(format!(
                    "{slug}: `{other}` and `{}` differ only by case, which this store folds \
                     into one file; put with --layout package to keep both",
                    e.record.path
                )));
            }
        }
        let keep: std::collections::HashSet<String> = keep.into_keys().collect();
        let count = files.len() as u64;
        // What an earlier put from here uploaded: a file whose content is what was uploaded
        // then, and whose object still carries the ETag that upload got back, is skipped.
        let ledger = UploadLedger::open(&slug);
        let remote: std::collections::HashMap<String, (u64, Option<&str>)> = existing
            .iter()
            .filter_map(|m| {
                let rel = self.relative(to, m).ok()?;
                Some((rel, (m.size, m.e_tag.as_deref())))
            })
            .collect();
        let (files, unchanged): (Vec<_>, Vec<_>) = files.into_iter().partition(|e| {
            let sha = e.record.sha256.as_deref();
            let uploaded = sha.and_then(|sha| ledger.get(&e.record.path, sha, e.record.size));
            let stored = remote.get(&e.record.path);
            !matches!((uploaded, stored), (Some(tag), Some((size, Some(now))))
                if *size == e.record.size && same_etag(tag, now))
        });
        let skipped_bytes: u64 = unchanged.iter().map(|e| e.record.size).sum();
        let mut recorded: Vec<(String, String, u64, String)> = unchanged
            .iter()
            .filter_map(|e| {
                let sha = e.record.sha256.clone()?;
                let tag = ledger.get(&e.record.path, &sha, e.record.size)?.to_string();
                Some((e.record.path.clone(), sha, e.record.size, tag))
            })
            .collect();
        emit(&opts.progress, ProgressEvent::Advance(skipped_bytes));
        let nothing_to_upload = files.is_empty();
        let uploaded: Vec<Option<(String, String, u64, String)>> = stream::iter(files)
            .map(|e| async move {
                let key = self.key(to, &e.record.path)?;
                let tag = self
                    .upload_file(to, &key, &e.fs_path, e.record.size)
                    .await?;
                emit(&opts.progress, ProgressEvent::Advance(e.record.size));
                let record = |sha, tag| (e.record.path, sha, e.record.size, tag);
                Ok::<_, Error>(e.record.sha256.zip(tag).map(|(sha, tag)| record(sha, tag)))
            })
            .buffer_unordered(self.concurrency * 2)
            .try_collect()
            .await?;
        recorded.extend(uploaded.into_iter().flatten());
        ledger.save(&recorded);
        let stale: Vec<ObjPath> = existing
            .iter()
            .filter(|m| {
                self.relative(to, m)
                    .is_ok_and(|r| !keep.contains(&fold(&r)))
            })
            .map(|m| m.location.clone())
            .collect();
        let removed = self.delete_all(to, stale).await?;
        emit(&opts.progress, ProgressEvent::Done);
        Ok(PutReport {
            version: None,
            layout: Layout::Files,
            files: count,
            bytes: total,
            skipped: nothing_to_upload && removed == 0,
            warnings,
        })
    }

    async fn upload_file(
        &self,
        at: &BlockPath,
        key: &ObjPath,
        path: &Path,
        size: u64,
    ) -> Result<Option<String>> {
        let read_err = |e| Error::io(format!("reading {}", path.display()), e);
        if size < self.part_size as u64 {
            let data = tokio::fs::read(path).await.map_err(read_err)?;
            let put = self
                .store
                .put(key, data.into())
                .await
                .map_err(self.fail(at))?;
            return Ok(put.e_tag);
        }
        let (tx, rx) = mpsc::channel::<Bytes>(8);
        let path = path.to_path_buf();
        let reader = tokio::task::spawn_blocking(move || {
            let mut f = std::fs::File::open(&path)
                .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
            let mut out = ChunkWriter::new(tx);
            std::io::copy(&mut f, &mut out)
                .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
            std::io::Write::flush(&mut out).map_err(|e| Error::io("uploading", e))?;
            Ok(())
        });
        let ((), e_tag) = self.upload(at, key, rx, reader, false).await?;
        Ok(e_tag)
    }

    async fn delete_all(&self, at: &BlockPath, keys: Vec<ObjPath>) -> Result<usize> {
        let n = keys.len();
        if n == 0 {
            return Ok(0);
        }
        let locations = stream::iter(keys.into_iter().map(Ok)).boxed();
        self.store
            .delete_stream(locations)
            .try_collect::<Vec<_>>()
            .await
            .map_err(self.fail(at))?;
        Ok(n)
    }

    async fn get_package(
        &self,
        at: &BlockPath,
        version: &str,
        subtree: &str,
        staging: &Path,
        opts: &GetOptions,
    ) -> Result<GetReport> {
        let manifest = self.read_manifest(at, version).await?;
        if !subtree.is_empty()
            && !manifest
                .entries
                .iter()
                .any(|e| e.path == subtree || e.path.starts_with(&format!("{subtree}/")))
        {
            return Err(Error::NotFound(format!(
                "{}: no such path in version {}",
                self.slug(&BlockPath::parse(&at.join(subtree))?),
                short(version)
            )));
        }
        let key = self.package_key(at, version)?;
        let got = self.store.get(&key).await.map_err(|e| match e {
            object_store::Error::NotFound { .. } => Error::Integrity(format!(
                "{}: the package of version {} is missing",
                self.slug(at),
                short(version)
            )),
            e => self.fail(at)(e),
        })?;
        emit(
            &opts.progress,
            ProgressEvent::Phase {
                name: "downloading",
                total: Some(manifest.totals.package_bytes),
            },
        );
        let progress = opts.progress.clone();
        let on_bytes = Box::new(move |n| emit(&progress, ProgressEvent::Advance(n)));
        let range = got.range.clone();
        let (reader, failure): (Box<dyn Read + Send>, _) = match got.payload {
            // A local file is read directly: its stream form hands over 8 KiB at a time
            // through a blocking task each, which took longer than unpacking.
            GetResultPayload::File(file, _) => (
                Box::new(FileRange::new(file, range, on_bytes)),
                Arc::new(std::sync::Mutex::new(None)),
            ),
            GetResultPayload::Stream(stream) => {
                let (r, f) = StreamReader::new(tokio::runtime::Handle::current(), stream, on_bytes);
                (Box::new(r), f)
            }
        };
        let staging = staging.to_path_buf();
        let subtree = subtree.to_string();
        let slug = self.slug(at);
        let secrets = self.secrets.clone();
        let done = tokio::task::spawn_blocking(move || {
            let result = unpack_verified(reader, &manifest, &staging, &subtree, |_| {});
            match (result, failure.lock().expect("failure slot").take()) {
                (Err(_), Some(transfer)) => Err(scrub_error(transfer, &secrets).context(&slug)),
                (r, _) => r.map_err(|e| e.context(&slug)),
            }
        })
        .await??;
        emit(&opts.progress, ProgressEvent::Done);
        Ok(GetReport {
            version: Some(version.to_string()),
            layout: Layout::Package,
            files: done.files,
            bytes: done.bytes,
        })
    }

    async fn get_files(
        &self,
        at: &BlockPath,
        objects: Vec<ObjectMeta>,
        staging: &Path,
        opts: &GetOptions,
    ) -> Result<GetReport> {
        let total: u64 = objects.iter().map(|m| m.size).sum();
        emit(
            &opts.progress,
            ProgressEvent::Phase {
                name: "downloading",
                total: Some(total),
            },
        );
        let files = objects.len() as u64;
        stream::iter(objects)
            .map(|meta| async move {
                let rel = self.relative(at, &meta)?;
                if !is_safe_relative_path(&rel) {
                    return Err(Error::Integrity(format!(
                        "{}: object `{}` would leave the destination",
                        self.slug(at),
                        rel.escape_debug()
                    )));
                }
                let dest = staging.join(&rel);
                if let Some(parent) = dest.parent() {
                    tokio::fs::create_dir_all(parent)
                        .await
                        .map_err(|e| Error::io(format!("creating the folder of {rel}"), e))?;
                }
                let got = self
                    .store
                    .get(&meta.location)
                    .await
                    .map_err(self.fail(at))?;
                let written = if let GetResultPayload::File(mut from, _) = got.payload {
                    // A local file: one kernel copy instead of a stream of 8 KiB chunks.
                    let (to, rel) = (dest.clone(), rel.clone());
                    tokio::task::spawn_blocking(move || {
                        let mut out = std::fs::File::create(&to)
                            .map_err(|e| Error::io(format!("creating {rel}"), e))?;
                        std::io::copy(&mut from, &mut out)
                            .map_err(|e| Error::io(format!("writing {rel}"), e))
                    })
                    .await??
                } else {
                    self.write_stream(at, &rel, &dest, got.into_stream())
                        .await?
                };
                if written != meta.size {
                    return Err(Error::Integrity(format!(
                        "{}: `{rel}` arrived with {written} of {} bytes",
                        self.slug(at),
                        meta.size
                    )));
                }
                emit(&opts.progress, ProgressEvent::Advance(written));
                Ok(())
            })
            .buffer_unordered(self.concurrency * 2)
            .try_collect::<Vec<()>>()
            .await?;
        emit(&opts.progress, ProgressEvent::Done);
        Ok(GetReport {
            version: None,
            layout: Layout::Files,
            files,
            bytes: total,
        })
    }

    /// Writes a download stream to a new file at `dest`; returns the bytes written.
    async fn write_stream(
        &self,
        at: &BlockPath,
        rel: &str,
        dest: &Path,
        mut body: futures::stream::BoxStream<'static, object_store::Result<Bytes>>,
    ) -> Result<u64> {
        let mut file = tokio::fs::File::create(dest)
            .await
            .map_err(|e| Error::io(format!("creating {rel}"), e))?;
        let mut written = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(self.fail(at))?;
            written += chunk.len() as u64;
            tokio::io::AsyncWriteExt::write_all(&mut file, &chunk)
                .await
                .map_err(|e| Error::io(format!("writing {rel}"), e))?;
        }
        tokio::io::AsyncWriteExt::flush(&mut file)
            .await
            .map_err(|e| Error::io(format!("writing {rel}"), e))?;
        Ok(written)
    }

    /// One file of a package: a ranged read of the frame that holds it, checked by sha256.
    async fn read_package_file(&self, at: &BlockPath, version: &str, rel: &str) -> Result<Bytes> {
        let manifest = self.read_manifest(at, version).await?;
        let slug = self.slug(at);
        let entry = manifest
            .entries
            .iter()
            .find(|e| e.path == rel)
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "{slug}: no file {rel} in version {}",
                    short(version)
                ))
            })?
            .clone();
        if entry.kind != EntryKind::File {
            return Err(Error::Usage(
                format!("{slug}: {rel} is a {:?}, not a file", entry.kind).to_lowercase(),
            ));
        }
        let frame = manifest.frames[entry.frame as usize];
        let rel = rel.to_string();
        let key = self.package_key(at, version)?;
        let compressed = self
            .store
            .get_range(&key, frame.offset..frame.offset + frame.length)
            .await
            .map_err(self.fail(at))?;
        tokio::task::spawn_blocking(move || {
            let corrupt = |why: String| Error::Integrity(format!("{slug}: {rel}: {why}"));
            let data = zstd::stream::decode_all(&compressed[..])
                .map_err(|e| corrupt(format!("frame is corrupt: {e}")))?;
            let start = (entry.offset - frame.uncompressed_offset) as usize;
            let tail = data
                .get(start..)
                .ok_or_else(|| corrupt("offset outside its frame".into()))?;
            let mut archive = tar::Archive::new(tail);
            let mut first = archive
                .entries()
                .and_then(|mut it| it.next().transpose())
                .map_err(|e| corrupt(e.to_string()))?
                .ok_or_else(|| corrupt("no entry at its offset".into()))?;
            let mut out = Vec::with_capacity(entry.size as usize);
            first
                .read_to_end(&mut out)
                .map_err(|e| corrupt(e.to_string()))?;
            let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&out));
            if Some(&sha) != entry.sha256.as_ref() || out.len() as u64 != entry.size {
                return Err(corrupt("checksum mismatch: the package is corrupt".into()));
            }
            Ok(Bytes::from(out))
        })
        .await?
    }
}

fn scrub_error(e: Error, secrets: &[String]) -> Error {
    if secrets.is_empty() {
        return e;
    }
    let s = |m: String| scrub(&m, secrets);
    match e {
        Error::Usage(m) => Error::Usage(s(m)),
        Error::Unsupported(m) => Error::Unsupported(s(m)),
        Error::NotFound(m) => Error::NotFound(s(m)),
        Error::Auth(m) => Error::Auth(s(m)),
        Error::Integrity(m) => Error::Integrity(s(m)),
        Error::Conflict(m) => Error::Conflict(s(m)),
        Error::Backend(m) => Error::Backend(s(m)),
        Error::Io { context, source } => Error::Io {
            context: s(context),
            source,
        },
    }
}

#[cfg(feature = "cloud")]
/// What every remote object store retries: timeouts, 5xx and connection resets, with
/// exponential backoff, for at most two minutes per request.
pub fn retry_config() -> object_store::RetryConfig {
    object_store::RetryConfig {
        backoff: object_store::BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            base: 2.0,
        },
        max_retries: 6,
        retry_timeout: Duration::from_secs(120),
    }
}

/// How long one request of a remote block may take before it is given up (and retried): the
/// block's `timeout` field in seconds, else `default`.
pub fn request_timeout(label: &str, secs: Option<i64>, default: Duration) -> Result<Duration> {
    match secs {
        None => Ok(default),
        Some(s) if s > 0 => Ok(Duration::from_secs(s as u64)),
        Some(s) => Err(Error::Usage(format!(
            "{label}: timeout must be a positive number of seconds, not {s}"
        ))),
    }
}

pub(crate) fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

#[async_trait]
impl StorageBlock for ObjectStoreBlock {
    fn capabilities(&self) -> Capabilities {
        self.caps
    }

    async fn put_directory(
        &self,
        src: &Path,
        to: &BlockPath,
        opts: &PutOptions,
    ) -> Result<PutReport> {
        let slug = self.slug(to);
        if opts.layout == Layout::Files && !self.caps.files_layout {
            return Err(Error::Unsupported(format!(
                "{slug}: this backend has no files layout"
            )));
        }
        if opts.layout == Layout::Package && !self.caps.package_layout {
            return Err(Error::Unsupported(format!(
                "{slug}: this backend has no package layout"
            )));
        }
        let scan = ScanOptions {
            ignore_file: opts.ignore_file.clone(),
            no_default_ignores: opts.no_default_ignores,
            follow_symlinks: opts.follow_symlinks,
        };
        let src = src.to_path_buf();
        let layout = opts.layout;
        let tree = tokio::task::spawn_blocking(move || {
            let mut tree = SourceTree::scan(&src, &scan)?;
            // Files are hashed for both layouts: the package's version id, and the files
            // layout's skip of what is already uploaded. The stat cache makes it cheap.
            let _ = layout;
            tree.hash_files_cached(&HashCache::open(&src))?;
            Ok::<_, Error>(tree)
        })
        .await?
        .map_err(|e| e.context(&slug))?;
        for w in &tree.warnings {
            emit(&opts.progress, ProgressEvent::Warning(w.clone()));
        }
        match opts.layout {
            Layout::Package => self.put_package(tree, to, opts).await,
            Layout::Files => self.put_files(tree, to, opts).await,
        }
    }

    async fn get_directory(
        &self,
        from: &BlockPath,
        dest: &Path,
        opts: &GetOptions,
    ) -> Result<GetReport> {
        let slug = self.slug(from);
        check_destination(dest, opts.mode).map_err(|e| e.context(&slug))?;
        let stored = self.locate(from, opts.version.as_deref()).await?;
        let staging = staging_for(dest).map_err(|e| e.context(&slug))?;
        let report = match stored {
            Stored::Package {
                at,
                version,
                subtree,
            } => {
                self.get_package(&at, &version, &subtree, staging.path(), opts)
                    .await?
            }
            Stored::Files(objects) => self.get_files(from, objects, staging.path(), opts).await?,
        };
        commit(staging, dest, opts.mode).map_err(|e| e.context(&slug))?;
        Ok(report)
    }

    async fn read_path(&self, path: &BlockPath) -> Result<Bytes> {
        if path.is_root() {
            return Err(Error::Usage(format!(
                "{}: name a file to read",
                self.slug(path)
            )));
        }
        match self.store.get(&self.key(path, "")?).await {
            Ok(g) => return g.bytes().await.map_err(self.fail(path)),
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(self.fail(path)(e)),
        }
        for anc in path.ancestors() {
            if let Some((head, _)) = self.read_head(&anc).await? {
                let rel = path.strip_prefix(&anc).unwrap_or_default();
                return self.read_package_file(&anc, &head.version, rel).await;
            }
        }
        Err(Error::NotFound(format!(
            "{}: no such file",
            self.slug(path)
        )))
    }

    async fn write_path(&self, path: &BlockPath, data: Bytes) -> Result<()> {
        if path.is_root() {
            return Err(Error::Usage(format!(
                "{}: name a file to write",
                self.slug(path)
            )));
        }
        self.store
            .put(&self.key(path, "")?, data.into())
            .await
            .map_err(self.fail(path))?;
        Ok(())
    }

    async fn list_versions(&self, at: &BlockPath) -> Result<Vec<VersionInfo>> {
        let current = self.read_head(at).await?.map(|(h, _)| h.version);
        let stored = self.stored_versions(at).await?;
        let current = current.as_deref();
        if stored.is_empty() && current.is_none() {
            return Err(Error::NotFound(format!(
                "{}: no versions are stored there",
                self.slug(at)
            )));
        }
        let mut out: Vec<VersionInfo> = stream::iter(stored)
            .map(|(v, _)| async move {
                let m = self.read_manifest(at, &v).await?;
                Ok::<_, Error>(VersionInfo {
                    current: current == Some(v.as_str()),
                    version: v,
                    created: m.created,
                    files: m.totals.files,
                    bytes: m.totals.bytes,
                })
            })
            .buffer_unordered(self.concurrency)
            .try_collect()
            .await?;
        out.sort_by(|a, b| {
            b.created
                .cmp(&a.created)
                .then_with(|| a.version.cmp(&b.version))
        });
        Ok(out)
    }

    async fn list_files(&self, at: &BlockPath) -> Result<Vec<ListedFile>> {
        if let Some((head, _)) = self.read_head(at).await? {
            let m = self.read_manifest(at, &head.version).await?;
            return Ok(m
                .entries
                .into_iter()
                .map(|e| ListedFile {
                    path: e.path,
                    kind: e.kind,
                    size: e.size,
                })
                .collect());
        }
        let objects = self.mirror_objects(at).await?;
        if objects.is_empty() {
            return Err(Error::NotFound(format!(
                "{}: nothing is stored there",
                self.slug(at)
            )));
        }
        let mut out = objects
            .iter()
            .map(|m| {
                Ok(ListedFile {
                    path: self.relative(at, m)?,
                    kind: EntryKind::File,
                    size: m.size,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    async fn delete(&self, at: &BlockPath, opts: &DeleteOptions) -> Result<()> {
        let slug = self.slug(at);
        if let Some(v) = &opts.version {
            let version = self.resolve_version(at, v).await?;
            if self
                .read_head(at)
                .await?
                .is_some_and(|(h, _)| h.version == version)
            {
                return Err(Error::Conflict(format!(
                    "{slug}: version {} is current; put another version first or rm the whole path",
                    short(&version)
                )));
            }
            let manifest = self.manifest_key(at, &version)?;
            if !self.exists(at, &manifest).await? {
                return Err(Error::NotFound(format!(
                    "{slug}: no version {}",
                    short(&version)
                )));
            }
            // Manifest first: a version without a manifest is no longer listed.
            self.delete_all(at, vec![manifest, self.package_key(at, &version)?])
                .await?;
            return Ok(());
        }
        let prefix = self.key(at, "")?;
        let prefix = (!prefix.as_ref().is_empty()).then_some(prefix);
        let all: Vec<ObjPath> = self
            .store
            .list(prefix.as_ref())
            .map_ok(|m| m.location)
            .try_collect()
            .await
            .map_err(self.fail(at))?;
        if all.is_empty() {
            return Err(Error::NotFound(format!("{slug}: nothing is stored there")));
        }
        // HEAD goes first, so readers stop seeing a version before its objects disappear.
        let head = self.key(at, HEAD)?;
        if all.contains(&head) {
            self.delete_all(at, vec![head.clone()]).await?;
        }
        self.delete_all(at, all.into_iter().filter(|k| *k != head).collect())
            .await?;
        Ok(())
    }

    async fn gc(&self, at: &BlockPath, keep: usize) -> Result<GcReport> {
        let versions = self.list_versions(at).await?;
        let mut report = GcReport::default();
        let mut doomed = Vec::new();
        for (i, v) in versions.iter().enumerate() {
            // The `keep` newest stay, and the current version always does.
            if v.current || i < keep {
                report.kept.push(v.version.clone());
            } else {
                doomed.push(self.manifest_key(at, &v.version)?);
                doomed.push(self.package_key(at, &v.version)?);
                report.removed_versions.push(v.version.clone());
            }
        }
        self.delete_all(at, doomed).await?;

        let known: std::collections::HashSet<&str> =
            report.kept.iter().map(String::as_str).collect();
        let prefix = self.key(at, ".blocks/packages")?;
        let packages: Vec<ObjectMeta> = self
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(self.fail(at))?;
        let cutoff = chrono_cutoff();
        let leftovers: Vec<ObjPath> = packages
            .into_iter()
            .filter(|m| {
                let v = m
                    .location
                    .filename()
                    .and_then(|f| f.strip_suffix(".tar.zst"))
                    .unwrap_or("");
                !known.contains(v) && m.last_modified.timestamp() < cutoff
            })
            .map(|m| m.location)
            .collect();
        report.removed_leftovers = self.delete_all(at, leftovers).await? as u64;
        report.removed_leftovers += self.abort_abandoned_uploads(at, cutoff).await?;
        if let Some(sweeper) = self.sweeper.clone() {
            let prefix = self.key(at, BLOCKS_DIR)?;
            let older_than = SystemTime::now() - LEFTOVER_GRACE;
            report.removed_leftovers +=
                tokio::task::spawn_blocking(move || sweeper.sweep(&prefix, older_than)).await??;
        }
        Ok(report)
    }

    async fn check(&self) -> Result<()> {
        let root = BlockPath::root();
        let prefix = self.key(&root, "")?;
        let prefix = (!prefix.as_ref().is_empty()).then_some(prefix);
        self.store
            .list_with_delimiter(prefix.as_ref())
            .await
            .map_err(self.fail(&root))?;
        Ok(())
    }
}

/// What `.blocks/uploads/<name>.json` records of a multipart upload in progress.
#[derive(serde::Serialize, serde::Deserialize)]
struct UploadMarker {
    key: String,
    id: String,
}

/// A marker's name: a digest of the upload's key and id (an id may hold any character).
fn upload_name(key: &ObjPath, id: &str) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(format!("{key}\n{id}"))[..16])
}

/// Unix seconds before which a package without a manifest is a leftover.
fn chrono_cutoff() -> i64 {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    (now.saturating_sub(LEFTOVER_GRACE)).as_secs() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_secrets() {
        let store = Arc::new(object_store::memory::InMemory::new());
        let block = ObjectStoreBlock::new(store, "p", "s3/x", Capabilities::OBJECT_STORE)
            .with_secrets(vec!["very-secret-value-1234".into()]);
        let shown = format!("{block:?}");
        assert!(!shown.contains("very-secret-value-1234"), "{shown}");
        assert!(shown.contains("s3/x"));
    }
}
