//! The generic adapter: any `object_store::ObjectStore` becomes a [`StorageBlock`]. Package
//! upload with HEAD written last, conditional HEAD swap, the files layout, versions, gc and
//! verification live here once; a backend crate only builds its store. Its parts:
//!
//! - `package`: where the package layout lives (HEAD, manifests, frame objects): the
//!   `PackageStore` the package engine puts and gets through;
//! - `coordination`: the records by which puts and `gc` share a path;
//! - `files`: the files layout (a plain mirror);
//! - `multipart`: streamed uploads, with the multipart ids `gc` may have to abort;
//! - `gc`: dropping old versions and what interrupted puts left;
//! - `settings`: the retry and timeout settings every remote store shares.

#[cfg(feature = "cloud")]
mod capped_answers;
mod coordination;
mod files;
mod gc;
mod multipart;
mod package;
mod settings;
mod traced;

#[cfg(feature = "cloud")]
pub use capped_answers::CappedConnector;
pub use settings::request_timeout;
#[cfg(feature = "cloud")]
pub use settings::{client_options, retry_config};

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
use crate::hashcache::{UploadLedger, same_etag};
use crate::package::PackageEngine;
use crate::package::destination::{check_destination, commit, staging_for};
use crate::package::manifest::{
    HeadRecord, PackageManifest, is_safe_relative_path, is_version_id, short,
};
use crate::slug::BlockPath;
use crate::source_tree::SourceTree;
use crate::stream::ChunkWriter;

const BLOCKS_DIR: &str = ".blocks";
const HEAD: &str = ".blocks/HEAD";
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
    /// The block's signing key and trusted keys (shared by its clones).
    trust: Arc<std::sync::RwLock<Arc<crate::config::Trust>>>,
}

/// Removes what interrupted uploads leave that the store's listing does not show (staged
/// files of a local store, temp files of SMB and SFTP), for `gc`.
#[async_trait]
pub trait LeftoverSweeper: Send + Sync + std::fmt::Debug {
    /// Removes leftovers under `prefix` last touched before `older_than`; returns how many.
    async fn sweep(&self, prefix: &ObjPath, older_than: SystemTime) -> Result<u64>;
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
            store: traced::Traced::wrap(store),
            root: root.trim_matches('/').to_string(),
            label: label.into(),
            caps,
            secrets: Vec::new(),
            // 8 MiB parts, 4 in flight: about 40 MiB of upload buffers at most.
            part_size: 8 * 1024 * 1024,
            concurrency: 4,
            sweeper: None,
            multipart: None,
            trust: Arc::default(),
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
        crate::block::slug_of(&self.label, at)
    }

    /// Whether the block requires signatures (`trusted_keys`): then it reads signed packages
    /// and nothing else.
    fn trusting(&self) -> bool {
        self.trust
            .read()
            .expect("trust settings")
            .trusted_keys
            .is_some()
    }

    /// The package engine over this store, with the block's trust settings.
    fn engine(&self) -> PackageEngine {
        let trust = self.trust.read().expect("trust settings").clone();
        PackageEngine::new(Arc::new(self.clone())).with_trust(trust)
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

    async fn exists(&self, at: &BlockPath, key: &ObjPath) -> Result<bool> {
        match self.store.head(key).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.fail(at)(e)),
        }
    }

    async fn locate(
        &self,
        from: &BlockPath,
        version: Option<&str>,
        allow_rollback: bool,
    ) -> Result<Stored> {
        let engine = self.engine();
        if let Some(v) = version {
            let version = self.resolve_version(from, v).await?;
            return Ok(Stored::Package {
                at: from.clone(),
                version,
                subtree: String::new(),
            });
        }
        if let Some(head) = engine.current(from, allow_rollback).await? {
            return Ok(Stored::Package {
                at: from.clone(),
                version: head.version,
                subtree: String::new(),
            });
        }
        // A block that requires signatures reads signed packages only: never a plain
        // mirror, which anyone who can write there could have planted.
        let files = match self.trusting() {
            true => Vec::new(),
            false => self.mirror_objects(from).await?,
        };
        if !files.is_empty() {
            return Ok(Stored::Files(files));
        }
        for anc in from.ancestors() {
            if let Some(head) = engine.current(&anc, allow_rollback).await? {
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

    /// Deletes `keys` (those already gone count as deleted); returns how many.
    async fn delete_all(&self, at: &BlockPath, keys: Vec<ObjPath>) -> Result<usize> {
        let n = keys.len();
        if n == 0 {
            return Ok(0);
        }
        let locations = stream::iter(keys.into_iter().map(Ok)).boxed();
        self.store
            .delete_stream(locations)
            .filter_map(|r| async move {
                match r {
                    Err(object_store::Error::NotFound { .. }) => None,
                    other => Some(other),
                }
            })
            .try_collect::<Vec<_>>()
            .await
            .map_err(self.fail(at))?;
        Ok(n)
    }

    /// Of a mirror's objects, those `opts.only` keeps (all when it is empty); keeping none
    /// is `NotFound`.
    fn only_matching(
        &self,
        at: &BlockPath,
        mut objects: Vec<ObjectMeta>,
        opts: &GetOptions,
    ) -> Result<Vec<ObjectMeta>> {
        if opts.only.is_empty() {
            return Ok(objects);
        }
        let set =
            crate::package::partial::globs(&opts.only).map_err(|e| e.context(self.slug(at)))?;
        objects.retain(|m| self.relative(at, m).is_ok_and(|rel| set.is_match(rel)));
        if objects.is_empty() {
            return Err(Error::NotFound(format!(
                "{}: --only {} matches no file",
                self.slug(at),
                opts.only.join(" ")
            )));
        }
        Ok(objects)
    }

    /// A full version id: `version` resolved, else the current one.
    async fn version_or_current(&self, at: &BlockPath, version: Option<&str>) -> Result<String> {
        match version {
            Some(v) => self.resolve_version(at, v).await,
            None => match self.engine().current(at, false).await? {
                Some(head) => Ok(head.version),
                None => Err(Error::NotFound(format!(
                    "{}: no version is stored there",
                    self.slug(at)
                ))),
            },
        }
    }
}

fn scrub_error(e: Error, secrets: &[String]) -> Error {
    e.scrubbed(secrets)
}

pub(crate) use crate::package::engine::now;

#[async_trait]
impl StorageBlock for ObjectStoreBlock {
    fn capabilities(&self) -> Capabilities {
        self.caps
    }

    fn label(&self) -> &str {
        &self.label
    }

    async fn put_directory(
        &self,
        src: &Path,
        to: &BlockPath,
        opts: &PutOptions,
    ) -> Result<PutReport> {
        let tree = crate::package::engine::scan(src, opts)
            .await
            .map_err(|e| e.context(self.slug(to)))?;
        match opts.layout {
            Layout::Package => self.engine().put(tree, to, opts).await,
            Layout::Files => self.put_files(tree, to, opts).await,
            Layout::Tree => Err(Error::Unsupported(format!(
                "{}: put: object stores keep packages or files, not native trees",
                self.slug(to)
            ))),
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
        emit(
            &opts.progress,
            ProgressEvent::Phase {
                name: "locating",
                total: None,
            },
        );
        let stored = self
            .locate(from, opts.version.as_deref(), opts.allow_rollback)
            .await?;
        let named = |e: Error| e.context(&slug);
        match stored {
            Stored::Package {
                at,
                version,
                subtree,
            } => {
                self.engine()
                    .get_into(&at, &version, &subtree, dest, opts, named)
                    .await
            }
            Stored::Files(objects) => {
                let objects = self.only_matching(from, objects, opts)?;
                let staging = staging_for(dest).map_err(named)?;
                let report = self.get_files(from, objects, staging.path(), opts).await?;
                commit(staging, dest, opts.mode).map_err(named)?;
                Ok(report)
            }
        }
    }

    async fn read_path(&self, path: &BlockPath) -> Result<Bytes> {
        crate::block::refuse_root_read(&self.label, path)?;
        // A plain object is read as it is, unless the block requires signatures: then only
        // a file of a signed version is.
        if !self.trusting() {
            match self.store.get(&self.key(path, "")?).await {
                Ok(g) => return g.bytes().await.map_err(self.fail(path)),
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.fail(path)(e)),
            }
        }
        for anc in path.ancestors() {
            if let Some(head) = self.engine().current(&anc, false).await? {
                let rel = path.strip_prefix(&anc).unwrap_or_default();
                return self.engine().read_file(&anc, &head.version, rel).await;
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
        let head = self.read_head(at).await?.map(|(h, _)| h);
        let stored = self.stored_versions(at).await?;
        let current = head.as_ref().map(|h| h.version.as_str());
        let since = head.as_ref().map(|h| h.updated.as_str());
        if stored.is_empty() && current.is_none() {
            return Err(Error::NotFound(format!(
                "{}: no versions are stored there",
                self.slug(at)
            )));
        }
        let mut out: Vec<VersionInfo> = stream::iter(stored)
            .map(|(v, _)| async move {
                let m = self.read_manifest(at, &v).await?;
                let is_current = current == Some(v.as_str());
                Ok::<_, Error>(VersionInfo::of_package(v, m, is_current, since))
            })
            .buffer_unordered(self.concurrency)
            .try_collect()
            .await?;
        VersionInfo::newest_first(&mut out);
        Ok(out)
    }

    async fn list_files(&self, at: &BlockPath) -> Result<Vec<ListedFile>> {
        let engine = self.engine();
        if let Some(head) = engine.current(at, false).await? {
            let m = engine.manifest(at, &head.version).await?;
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
        if self.trusting() {
            return Err(Error::NotFound(format!(
                "{}: no signed version is stored there",
                self.slug(at)
            )));
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
            let manifests = [
                self.manifest_zst_key(at, &version)?,
                self.manifest_key(at, &version)?,
            ];
            if !(self.exists(at, &manifests[0]).await? || self.exists(at, &manifests[1]).await?) {
                return Err(Error::NotFound(format!(
                    "{slug}: no version {}",
                    short(&version)
                )));
            }
            // Manifest first: a version without a manifest is no longer listed. Its frames
            // may be shared; gc removes those no version uses.
            self.delete_all(at, self.version_keys(at, &version)?)
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

    async fn gc(&self, at: &BlockPath, opts: &GcOptions) -> Result<GcReport> {
        self.collect(at, opts).await
    }

    async fn manifest(&self, at: &BlockPath, version: Option<&str>) -> Result<PackageManifest> {
        let version = self.version_or_current(at, version).await?;
        self.engine().manifest(at, &version).await
    }

    async fn rollback(&self, at: &BlockPath, opts: &RollbackOptions) -> Result<RollbackReport> {
        let from = self.read_head(at).await?.map(|(h, _)| h.version);
        let to = match &opts.to {
            Some(v) => self.resolve_version(at, v).await?,
            None => self.previous_version(at, from.as_deref()).await?,
        };
        self.engine()
            .rollback(at, &to, opts.if_version.as_ref(), opts.valid_for)
            .await?;
        Ok(RollbackReport { from, to })
    }

    async fn export(&self, at: &BlockPath, version: Option<&str>) -> Result<PackageExport> {
        let version = self.version_or_current(at, version).await?;
        self.engine().export(at, &version).await
    }

    fn set_trust(&self, trust: crate::config::Trust) -> Result<()> {
        *self.trust.write().expect("trust settings") = Arc::new(trust);
        Ok(())
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
