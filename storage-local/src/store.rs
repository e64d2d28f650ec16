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
