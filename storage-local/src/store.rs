//! `LocalFileSystem` with `PutMode::Update`: the write is a rename (atomic), and the check of
//! the current ETag and the rename happen under an exclusive lock on a sibling lock file.

use std::fmt;
use std::path::Path as FsPath;

use async_trait::async_trait;
use futures::stream::BoxStream;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    ObjectStoreExt, PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult, Result,
};

#[derive(Debug)]
pub struct LockedLocalStore {
    inner: LocalFileSystem,
}

impl LockedLocalStore {
    pub fn new(base: &FsPath) -> storage_core::Result<Self> {
        let inner = LocalFileSystem::new_with_prefix(base)
            .map_err(storage_core::Error::from_store)?
            .with_automatic_cleanup(true);
        Ok(LockedLocalStore { inner })
    }

    /// The gc helper that removes staged files of interrupted writes.
    pub fn sweeper(&self) -> StagedFileSweeper {
        StagedFileSweeper {
            inner: self.inner.clone(),
        }
    }

    async fn put_if_current(
        &self,
        location: &Path,
        payload: PutPayload,
        expected: Option<String>,
    ) -> Result<PutResult> {
        let target = self.inner.path_to_filesystem(location)?;
        let lock_path = target.with_file_name(format!(
            "{}.lock",
            target
                .file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        ));
        let generic = |e: std::io::Error| object_store::Error::Generic {
            store: "LocalFileSystem",
            source: Box::new(e),
        };
        let _lock = tokio::task::spawn_blocking(move || -> std::io::Result<std::fs::File> {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)?;
            rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive)?;
            Ok(f)
        })
        .await
        .map_err(|e| object_store::Error::JoinError { source: e })?
        .map_err(generic)?;
        let current = match self.inner.head(location).await {
            Ok(meta) => meta.e_tag,
            Err(object_store::Error::NotFound { .. }) => None,
            Err(e) => return Err(e),
        };
        if current.is_none() || current != expected {
            return Err(object_store::Error::Precondition {
                path: location.to_string(),
                source: "the object changed since it was read".into(),
            });
        }
        self.inner
            .put_opts(location, payload, PutOptions::default())
            .await
    }
}

impl fmt::Display for LockedLocalStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Locked({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for LockedLocalStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        match opts.mode {
            PutMode::Update(v) => self.put_if_current(location, payload, v.e_tag).await,
            _ => self.inner.put_opts(location, payload, opts).await,
        }
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}

/// Removes the staged files (`NAME#N`) that an interrupted write leaves beside its target;
/// `LocalFileSystem` hides them from listings.
#[derive(Debug)]
pub struct StagedFileSweeper {
    pub(crate) inner: LocalFileSystem,
}

#[async_trait::async_trait]
impl storage_core::LeftoverSweeper for StagedFileSweeper {
    async fn sweep(
        &self,
        prefix: &Path,
        older_than: std::time::SystemTime,
    ) -> storage_core::Result<u64> {
        let Ok(dir) = self.inner.path_to_filesystem(&prefix.clone().join("x")) else {
            return Ok(0);
        };
        let dir = dir.parent().map(FsPath::to_path_buf).unwrap_or_default();
        tokio::task::spawn_blocking(move || sweep_staged(dir, older_than)).await?
    }
}

/// Removes the staged files under `dir` last written before `older_than`; returns how many.
fn sweep_staged(
    dir: std::path::PathBuf,
    older_than: std::time::SystemTime,
) -> storage_core::Result<u64> {
    let mut removed = 0;
    let mut stack = vec![dir];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(path);
            } else if is_staged(&path) && meta.modified().is_ok_and(|m| m < older_than) {
                std::fs::remove_file(&path).map_err(|e| {
                    storage_core::Error::io(format!("removing {}", path.display()), e)
                })?;
                removed += 1;
            }
        }
    }
    Ok(removed)
}

/// `NAME#DIGITS`: how `LocalFileSystem` names a write in progress.
fn is_staged(path: &FsPath) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    name.rsplit_once('#')
        .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}
