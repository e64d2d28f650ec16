//! The `StorageBlock` trait every backend implements, with its capabilities, options,
//! reports and progress events.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use serde::Serialize;

use crate::error::Result;
pub use crate::package::manifest::EntryKind;
use crate::package::manifest::PackageManifest;
use crate::record::VersionRecord;
use crate::slug::BlockPath;

/// What a backend can do. The conformance suite picks its cases from these declarations and
/// checks that what is declared missing fails with [`crate::Error::Unsupported`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Capabilities {
    /// Stores trees as versioned packages (`.blocks/` with HEAD).
    pub package_layout: bool,
    /// Stores trees as a plain mirror of files.
    pub files_layout: bool,
    /// Stores trees natively as the store's own commits (git) instead of packages: the
    /// default layout is a commit of the tree, so there are no raw package objects to read or
    /// write (`write_path` is unsupported); a path is a folder of one tree, so a put below it
    /// changes it; empty folders are left out (with a warning) and a folder named `.git`
    /// cannot be stored.
    pub native_tree: bool,
    /// Keeps old versions and can list them.
    pub versions: bool,
    /// A reader never sees a partly written version.
    pub atomic_put: bool,
    /// `put --if-version` is a real compare-and-swap of the current version.
    pub compare_and_swap: bool,
    /// The files layout keeps empty directories, modes and symlinks.
    pub files_keep_metadata: bool,
    /// Old versions can be dropped, one by one (`rm --version`) or by `gc`.
    pub gc: bool,
    /// The files layout keeps names that differ only by case (`README.md`, `Readme.md`)
    /// apart. When false the store folds case (SMB shares do), such names overwrite each
    /// other in a mirror, and only the package layout keeps them.
    pub files_case_sensitive: bool,
    /// Nothing can be written, swapped or dropped (read-only HTTP): put, write, rm and gc
    /// are refused.
    pub read_only: bool,
    /// A package's objects (`.blocks/` manifests, frames, HEAD) are objects of the store that
    /// `read_path` and `write_path` reach one by one. A registry holds blobs under their
    /// digests instead, so a frame cannot be overwritten with other bytes: the suite then
    /// checks that raw writes are refused, and the backend's own tests damage its storage.
    pub raw_objects: bool,
}

impl Capabilities {
    /// What every store behind the generic adapter can do: both layouts, versions, an atomic
    /// and conditional HEAD swap, gc; a files layout keeps only files.
    pub const OBJECT_STORE: Capabilities = Capabilities {
        package_layout: true,
        files_layout: true,
        native_tree: false,
        versions: true,
        atomic_put: true,
        compare_and_swap: true,
        files_keep_metadata: false,
        gc: true,
        files_case_sensitive: true,
        read_only: false,
        raw_objects: true,
    };
}

/// How a tree is stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// Versioned packages under `.blocks/`, swapped in by one HEAD write: the default, and the
    /// only layout that keeps versions.
    #[default]
    Package,
    /// A plain mirror of the files, readable by any other client of the store.
    Files,
    /// The store's own tree (a git commit): what a native-tree store keeps.
    Tree,
}

impl std::fmt::Display for Layout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Layout::Package => "package",
            Layout::Files => "files",
            Layout::Tree => "tree",
        })
    }
}

/// What `put --if-version` requires of the current version before it is replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionPrecondition {
    /// No version may exist yet (`--if-version none`).
    NoVersion,
    /// The current version must be this one (a full id or a unique prefix).
    Current(String),
}

/// Which package format a put writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub enum PackageFormat {
    /// Format 3: format 2's frames stored together in packs, read by range.
    #[default]
    Packs,
    /// Format 2: content-addressed frames shared between versions, one object each.
    Frames,
    /// Format 1: one archive per version, for agents still on a release before format 2.
    Archive,
}

/// How `put` reads the tree and stores it; the default stores a format-3 package with the
/// usual ignore rules.
#[derive(Clone, Default)]
pub struct PutOptions {
    /// How the tree is stored.
    pub layout: Layout,
    /// The package format (package layout only).
    pub format: PackageFormat,
    /// Use this ignore file instead of `.blockignore` / `.prefectignore`.
    pub ignore_file: Option<PathBuf>,
    /// Leave out `.git/`, `.hg/` and `.svn/` (the default).
    pub no_default_ignores: bool,
    /// Refuse the put unless the current version is what this requires (a compare-and-swap).
    pub if_version: Option<VersionPrecondition>,
    /// Store the targets of symlinks instead of refusing links that leave the tree.
    pub follow_symlinks: bool,
    /// What the version's manifest records about it (message, author, labels, git source).
    /// It never changes the version id.
    pub record: Option<VersionRecord>,
    /// How long a signed HEAD stays valid (`put --valid-for`); the signing default when
    /// `None`. Ignored by blocks that do not sign.
    pub valid_for: Option<std::time::Duration>,
    /// Receives the put's phases and bytes; nothing is reported when `None`.
    pub progress: Option<Arc<dyn ProgressObserver>>,
}

/// What `get` does with a destination that already has files.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum GetMode {
    /// The destination must not exist or be empty.
    #[default]
    EmptyOnly,
    /// The destination becomes exactly the version, swapped in at once.
    Replace,
    /// Files of the version overwrite, other files stay.
    Merge,
}

/// Which version `get` brings and what it does with the destination; the default brings the
/// current version into an empty or absent folder.
#[derive(Clone, Default)]
pub struct GetOptions {
    /// A version id or a unique prefix of one; the current version when `None`.
    pub version: Option<String>,
    /// What happens to files already in the destination.
    pub mode: GetMode,
    /// Neither read nor fill the agent's frame cache.
    pub no_cache: bool,
    /// The frame cache's folder, instead of `frames/` in the cache folder.
    pub cache_dir: Option<PathBuf>,
    /// Only the entries matching one of these globs (over their paths below DEST; `**`
    /// crosses folders), fetching only the frames that hold them; all when empty.
    pub only: Vec<String>,
    /// Take a signed HEAD older than one this agent already accepted (a rollback it was
    /// told about). Only blocks with `trusted_keys` refuse such a HEAD at all.
    pub allow_rollback: bool,
    /// Receives the get's phases and bytes; nothing is reported when `None`.
    pub progress: Option<Arc<dyn ProgressObserver>>,
}

/// What `gc` keeps.
#[derive(Debug, Clone)]
pub struct GcOptions {
    /// The current version and this many of the newest stay.
    pub keep: usize,
    /// Unreferenced objects (frames, leftovers of interrupted puts) younger than this stay:
    /// a put may still be writing them.
    pub grace: std::time::Duration,
    /// Every version a HEAD swap of this long ago or later made current stays as well
    /// (`gc --keep-within`), and so does the one current when that window began.
    pub keep_within: Option<std::time::Duration>,
}

impl GcOptions {
    /// The grace when none is given: long enough for any put's objects to be referenced.
    pub const DEFAULT_GRACE: std::time::Duration = std::time::Duration::from_secs(60);

    /// Keeps the current version and the `keep` newest, with the default grace.
    pub fn keep(keep: usize) -> Self {
        GcOptions {
            keep,
            grace: Self::DEFAULT_GRACE,
            keep_within: None,
        }
    }
}

/// What `rollback` makes current, and under which condition.
#[derive(Debug, Clone, Default)]
pub struct RollbackOptions {
    /// The version to make current (an id or unique prefix); by default the one HEAD named
    /// before the current one.
    pub to: Option<String>,
    /// Roll back only if the current version is this one (`--if-version`).
    pub if_version: Option<VersionPrecondition>,
    /// How long the signed HEAD stays valid (signing blocks only).
    pub valid_for: Option<std::time::Duration>,
}

/// What a rollback did.
#[derive(Debug, Clone, Serialize)]
pub struct RollbackReport {
    /// The version current before.
    pub from: Option<String>,
    /// The version current now.
    pub to: String,
}

/// What `rm` deletes at a path.
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    /// Delete only this version (not the current one); the whole path when `None`.
    pub version: Option<String>,
}

/// What a put stored, for the CLI's summary and `--json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PutReport {
    /// The id of the version stored; `None` for a files layout, which keeps no versions.
    pub version: Option<String>,
    /// The layout the tree was stored in.
    pub layout: Layout,
    /// Files in the tree stored.
    pub files: u64,
    /// Bytes of those files, uncompressed.
    pub bytes: u64,
    /// Nothing was uploaded because this version was already stored.
    pub skipped: bool,
    /// Things the user should know (secret-looking files, skipped special files).
    pub warnings: Vec<String>,
    /// Bytes of objects this put wrote (format 2: new frames and the manifest).
    pub uploaded_bytes: u64,
    /// Format 2: frames sent, and frames the store already held.
    pub frames_uploaded: u64,
    /// Format 2: frames the store already held, so not sent again.
    pub frames_reused: u64,
}

/// What a get brought, for the CLI's summary and `--json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GetReport {
    /// The id of the version brought; `None` for a files layout.
    pub version: Option<String>,
    /// The layout the tree was stored in.
    pub layout: Layout,
    /// Files of the version brought.
    pub files: u64,
    /// Bytes of those files, uncompressed.
    pub bytes: u64,
    /// Bytes of frames (format 2) downloaded; the manifest not included.
    pub downloaded_bytes: u64,
    /// Format 2: frames downloaded, and frames taken from the agent cache.
    pub frames_downloaded: u64,
    /// Format 2: frames taken from the agent cache instead of downloaded.
    pub frames_cached: u64,
    /// `--replace`: unchanged files taken over from the folder replaced, not written again.
    pub files_linked: u64,
    /// Files copied from the agent's copy of the version (a warm get: no frame read).
    pub files_copied: u64,
}

/// One stored version, as `versions` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VersionInfo {
    /// The version id: a package's content hash, or a git commit id.
    pub version: String,
    /// When the version was stored (RFC 3339, UTC).
    pub created: String,
    /// Files in the version.
    pub files: u64,
    /// Bytes of those files, uncompressed.
    pub bytes: u64,
    /// Whether HEAD names this version, so that a get without `version` brings it.
    pub current: bool,
    /// When HEAD last moved to this version, if it is the current one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_since: Option<String>,
    /// The version's record (message, author, labels, source), when it has one.
    #[serde(flatten)]
    pub record: VersionRecord,
}

impl VersionInfo {
    /// What `versions` says of the package version `version`, stored as `manifest`: the
    /// current one when `current`, then since `since`.
    pub fn of_package(
        version: String,
        manifest: PackageManifest,
        current: bool,
        since: Option<&str>,
    ) -> VersionInfo {
        VersionInfo {
            current,
            current_since: since.filter(|_| current).map(str::to_string),
            version,
            created: manifest.created,
            files: manifest.totals.files,
            bytes: manifest.totals.bytes,
            record: manifest.record.unwrap_or_default(),
        }
    }

    /// Sorts `versions` as `versions` lists them: newest first, ties by id.
    pub fn newest_first(versions: &mut [VersionInfo]) {
        versions.sort_by(|a, b| {
            b.created
                .cmp(&a.created)
                .then_with(|| a.version.cmp(&b.version))
        });
    }
}

/// One file of a stored tree, as `ls` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListedFile {
    /// The file's path inside the stored tree, `/`-separated.
    pub path: String,
    /// Whether it is a file, a folder or a link.
    pub kind: EntryKind,
    /// Bytes of a file; 0 for a folder or a link.
    pub size: u64,
}

/// What a gc kept and removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GcReport {
    /// Ids of the versions kept, the current one included.
    pub kept: Vec<String>,
    /// Ids of the versions dropped.
    pub removed_versions: Vec<String>,
    /// Objects of uploads that never completed.
    pub removed_leftovers: u64,
    /// Format-2 frames no kept version refers to.
    pub removed_frames: u64,
    /// A put was under way, so nothing was removed (a later gc removes it).
    pub held_by_puts: bool,
}

/// One version's package as an ordinary `.tar.zst`, in pieces.
pub struct PackageExport {
    /// The id of the version exported.
    pub version: String,
    /// Bytes of the whole stream (the compressed package), for a progress bar.
    pub bytes: u64,
    /// The archive's bytes, frames verified as they arrive.
    pub stream: futures::stream::BoxStream<'static, Result<Bytes>>,
}

/// Progress of a long operation. The library prints nothing; blockctl draws bars from these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProgressEvent {
    /// A phase begins; `total` is in bytes when known.
    Phase {
        /// The phase's name (`scanning`, `uploading`, `downloading`, ...).
        name: &'static str,
        /// The bytes the phase will do, when known.
        total: Option<u64>,
    },
    /// Bytes done in the current phase.
    Advance(u64),
    /// Something the user should read now (e.g. a secret-looking file is about to be uploaded).
    Warning(String),
    /// The operation finished.
    Done,
}

/// Receives the progress of a put or get, e.g. to draw bars. It is called from the task doing
/// the work, so it should return quickly.
pub trait ProgressObserver: Send + Sync {
    /// Called once per event, in order.
    fn event(&self, event: ProgressEvent);
}

/// Sends an event when an observer is set; a phase is also logged (`RUST_LOG=debug`).
pub fn emit(progress: &Option<Arc<dyn ProgressObserver>>, event: ProgressEvent) {
    if let ProgressEvent::Phase { name, total } = &event {
        tracing::debug!(phase = name, total, "phase begins");
    }
    if let Some(p) = progress {
        p.event(event);
    }
}

/// `s3/prod/etl`: the block's name and the path inside it, as messages name a place.
pub fn slug_of(label: &str, at: &BlockPath) -> String {
    if at.is_root() {
        label.to_string()
    } else {
        format!("{label}/{at}")
    }
}

/// A read of the block's root, which is a folder, is refused (exit 2, naming the block
/// `label`): a read names a file.
pub fn refuse_root_read(label: &str, path: &BlockPath) -> Result<()> {
    if path.is_root() {
        return Err(crate::Error::Usage(format!(
            "{}: name a file to read",
            slug_of(label, path)
        )));
    }
    Ok(())
}

/// What an operation a backend does not implement returns, naming the slug and the operation. Blocks opened through the facade
/// never get here: [`crate::Checked`] refuses first, with the reason the capabilities give.
pub fn unsupported(label: &str, at: &BlockPath, op: &str) -> crate::Error {
    crate::Error::Unsupported(format!(
        "{}: {op}: not supported by this backend",
        slug_of(label, at)
    ))
}

/// A place flow code is stored: the one interface every backend implements. Operations a
/// backend cannot do keep the default bodies; [`crate::Checked`] enforces the capabilities.
///
/// A put stores a folder as a new version and a get brings it back, checked file by file;
/// here over the generic adapter on an in-memory store:
///
/// ```
/// use std::sync::Arc;
/// use storage_core::{BlockPath, Capabilities, GetOptions, ObjectStoreBlock, PutOptions};
/// use storage_core::StorageBlock;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // The hash and frame caches live under `$BLOCKCTL_HOME`: a temporary folder here.
/// let home = tempfile::tempdir()?;
/// // SAFETY: no other thread of this program reads the environment yet.
/// unsafe { std::env::set_var("BLOCKCTL_HOME", home.path()) };
/// let src = home.path().join("src");
/// std::fs::create_dir_all(&src)?;
/// std::fs::write(src.join("flow.py"), "print('hi')\n")?;
///
/// let store = Arc::new(object_store::memory::InMemory::new());
/// let block = ObjectStoreBlock::new(store, "", "memory/demo", Capabilities::OBJECT_STORE);
/// let at = BlockPath::parse("etl")?;
/// tokio::runtime::Runtime::new()?.block_on(async {
///     let put = block.put_directory(&src, &at, &PutOptions::default()).await?;
///     let dest = home.path().join("dest");
///     let got = block.get_directory(&at, &dest, &GetOptions::default()).await?;
///     assert_eq!(got.version, put.version);
///     assert_eq!(std::fs::read_to_string(dest.join("flow.py"))?, "print('hi')\n");
///     assert_eq!(block.list_versions(&at).await?.len(), 1);
///     Ok::<_, Box<dyn std::error::Error>>(())
/// })
/// # }
/// ```
#[async_trait]
pub trait StorageBlock: Send + Sync {
    /// What this backend can do; the facade refuses the rest before any request is sent.
    fn capabilities(&self) -> Capabilities;

    /// The block's name (`s3/prod`), which every error message starts with.
    fn label(&self) -> &str;

    /// Stores the tree at `src` under `to`.
    async fn put_directory(
        &self,
        src: &Path,
        to: &BlockPath,
        opts: &PutOptions,
    ) -> Result<PutReport>;

    /// Brings the tree stored at `from` into `dest`, verified before anything appears there.
    async fn get_directory(
        &self,
        from: &BlockPath,
        dest: &Path,
        opts: &GetOptions,
    ) -> Result<GetReport>;

    /// One file's bytes: a file of the current version, or an object of a files layout.
    async fn read_path(&self, path: &BlockPath) -> Result<Bytes>;

    /// Writes one object as it is, at `path`.
    async fn write_path(&self, path: &BlockPath, data: Bytes) -> Result<()> {
        let _ = data;
        Err(unsupported(self.label(), path, "write"))
    }

    /// Versions stored at `at`, newest first.
    async fn list_versions(&self, at: &BlockPath) -> Result<Vec<VersionInfo>>;

    /// Files of the current version (or of the mirror) at `at`.
    async fn list_files(&self, at: &BlockPath) -> Result<Vec<ListedFile>>;

    /// Deletes the tree at `at` with all its versions, or only the old version `opts.version`.
    async fn delete(&self, at: &BlockPath, opts: &DeleteOptions) -> Result<()>;

    /// Keeps the current version and the `keep` newest, drops the rest, the frames no kept
    /// version uses, and the leftovers of interrupted uploads (those older than the grace).
    async fn gc(&self, at: &BlockPath, opts: &GcOptions) -> Result<GcReport> {
        let _ = opts;
        Err(unsupported(self.label(), at, "gc"))
    }

    /// Makes an older stored version current again (default: the one current before the
    /// current one), through the same conditional HEAD swap as a put.
    async fn rollback(&self, at: &BlockPath, opts: &RollbackOptions) -> Result<RollbackReport> {
        let _ = opts;
        Err(unsupported(self.label(), at, "rollback"))
    }

    /// The manifest of a version (the current one when `None`).
    async fn manifest(&self, at: &BlockPath, version: Option<&str>) -> Result<PackageManifest> {
        let _ = version;
        Err(unsupported(self.label(), at, "manifest"))
    }

    /// A version (the current one when `None`) as one ordinary `.tar.zst` stream.
    async fn export(&self, at: &BlockPath, version: Option<&str>) -> Result<PackageExport> {
        let _ = version;
        Err(unsupported(self.label(), at, "export"))
    }

    /// Reaches the storage and checks the credentials.
    async fn check(&self) -> Result<()>;

    /// Receives the block's trust settings (`signing_key`, `trusted_keys`) before first use;
    /// a later call replaces them. A backend that signs and verifies versions keeps them; the
    /// default refuses any setting, so a block never ignores `trusted_keys` silently.
    fn set_trust(&self, trust: crate::config::Trust) -> Result<()> {
        if trust.is_empty() {
            return Ok(());
        }
        Err(crate::Error::Unsupported(format!(
            "{}: signing_key and trusted_keys: this backend does not sign or verify versions yet",
            self.label()
        )))
    }
}
