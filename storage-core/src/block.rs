//! The `StorageBlock` trait every backend implements, with its capabilities, options,
//! reports and progress events.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use serde::Serialize;

use crate::error::Result;
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
    #[default]
    Package,
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

#[derive(Clone, Default)]
pub struct PutOptions {
    pub layout: Layout,
    /// The package format (package layout only).
    pub format: PackageFormat,
    /// Use this ignore file instead of `.blockignore` / `.prefectignore`.
    pub ignore_file: Option<PathBuf>,
    /// Leave out `.git/`, `.hg/` and `.svn/` (the default).
    pub no_default_ignores: bool,
    pub if_version: Option<VersionPrecondition>,
    /// Store the targets of symlinks instead of refusing links that leave the tree.
    pub follow_symlinks: bool,
    /// What the version's manifest records about it (message, author, labels, git source).
    /// It never changes the version id.
    pub record: Option<VersionRecord>,
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

#[derive(Clone, Default)]
pub struct GetOptions {
    /// A version id or a unique prefix of one; the current version when `None`.
    pub version: Option<String>,
    pub mode: GetMode,
    /// Neither read nor fill the agent's frame cache.
    pub no_cache: bool,
    /// The frame cache's folder, instead of `frames/` in the cache folder.
    pub cache_dir: Option<PathBuf>,
    /// Only the entries matching one of these globs (over their paths below DEST; `**`
    /// crosses folders), fetching only the frames that hold them; all when empty.
    pub only: Vec<String>,
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
}

impl GcOptions {
    /// The grace when none is given: long enough for any put's objects to be referenced.
    pub const DEFAULT_GRACE: std::time::Duration = std::time::Duration::from_secs(60);

    pub fn keep(keep: usize) -> Self {
        GcOptions {
            keep,
            grace: Self::DEFAULT_GRACE,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    /// Delete only this version (not the current one); the whole path when `None`.
    pub version: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PutReport {
    pub version: Option<String>,
    pub layout: Layout,
    pub files: u64,
    pub bytes: u64,
    /// Nothing was uploaded because this version was already stored.
    pub skipped: bool,
    /// Things the user should know (secret-looking files, skipped special files).
    pub warnings: Vec<String>,
    /// Bytes of objects this put wrote (format 2: new frames and the manifest).
    pub uploaded_bytes: u64,
    /// Format 2: frames sent, and frames the store already held.
    pub frames_uploaded: u64,
    pub frames_reused: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GetReport {
    pub version: Option<String>,
    pub layout: Layout,
    pub files: u64,
    pub bytes: u64,
    /// Bytes of frames (format 2) downloaded; the manifest not included.
    pub downloaded_bytes: u64,
    /// Format 2: frames downloaded, and frames taken from the agent cache.
    pub frames_downloaded: u64,
    pub frames_cached: u64,
    /// `--replace`: unchanged files taken over from the folder replaced, not written again.
    pub files_linked: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VersionInfo {
    pub version: String,
    pub created: String,
    pub files: u64,
    pub bytes: u64,
    pub current: bool,
    /// The version's record (message, author, labels, source), when it has one.
    #[serde(flatten)]
    pub record: VersionRecord,
}

/// One file of a stored tree, as `ls` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListedFile {
    pub path: String,
    pub kind: EntryKind,
    pub size: u64,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    File,
    Dir,
    Symlink,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GcReport {
    pub kept: Vec<String>,
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
    pub version: String,
    pub bytes: u64,
    pub stream: futures::stream::BoxStream<'static, Result<Bytes>>,
}

/// Progress of a long operation. The library prints nothing; blockctl draws bars from these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProgressEvent {
    /// A phase begins; `total` is in bytes when known.
    Phase {
        name: &'static str,
        total: Option<u64>,
    },
    /// Bytes done in the current phase.
    Advance(u64),
    /// Something the user should read now (e.g. a secret-looking file is about to be uploaded).
    Warning(String),
    Done,
}

pub trait ProgressObserver: Send + Sync {
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
#[async_trait]
pub trait StorageBlock: Send + Sync {
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

    async fn delete(&self, at: &BlockPath, opts: &DeleteOptions) -> Result<()>;

    /// Keeps the current version and the `keep` newest, drops the rest, the frames no kept
    /// version uses, and the leftovers of interrupted uploads (those older than the grace).
    async fn gc(&self, at: &BlockPath, opts: &GcOptions) -> Result<GcReport> {
        let _ = opts;
        Err(unsupported(self.label(), at, "gc"))
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

    /// Receives the block's trust settings (`signing_key`, `trusted_keys`) once, before first
    /// use. A backend that signs and verifies versions keeps them; the default refuses any
    /// setting, so a block never ignores `trusted_keys` silently.
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
