//! FTP's primitives for the folder store (`storage_folders::FolderStore`): MLST for stat,
//! REST + RETR of a range read whole into memory, a temporary file STORed whole and renamed
//! (RNFR/RNTO) over its key, a lock folder made by MKD, MLSD listings, DELE. RNTO replaces an
//! existing file in one step, so readers see the old file or the new one.

use std::ops::Range;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::{self, BoxStream};
use object_store::{GetRange, ObjectMeta};
use storage_folders::Listed;
use storage_folders::lock::{LockFiles, TryLock};
use storage_folders::protocol::{Buffered, Protocol, WriteWhole, not_found};

use super::client::{Facts, Remote, STORE};

#[async_trait]
impl Protocol for Remote {
    type Facts = Facts;
    /// The file's size, so a read that ends where the file does is known.
    type Reader = u64;
    type Writer = Buffered;

    fn describe(&self) -> String {
        Remote::describe(self)
    }

    fn meta(&self, _key: &str, facts: &Facts) -> ObjectMeta {
        facts.meta()
    }

    async fn stat(&self, key: &str) -> object_store::Result<Option<Facts>> {
        Ok(Remote::stat(self, key).await?.filter(|f| !f.folder))
    }

    async fn open(
        &self,
        key: &str,
        _range: Option<&GetRange>,
    ) -> object_store::Result<(ObjectMeta, u64)> {
        let facts = Protocol::stat(self, key)
            .await?
            .ok_or_else(|| not_found(key))?;
        Ok((facts.meta(), facts.size))
    }

    async fn read(
        &self,
        key: &str,
        size: u64,
        range: Range<u64>,
    ) -> object_store::Result<BoxStream<'static, object_store::Result<Bytes>>> {
        let len = range.end - range.start;
        let data = Remote::read(self, key, range.start, len, range.end == size).await?;
        Ok(stream::once(async move { Ok(data) }).boxed())
    }

    async fn rename_over(
        &self,
        temp: &str,
        key: &str,
        old: Option<&Facts>,
        _replace: bool,
    ) -> object_store::Result<Option<String>> {
        Remote::rename_over(self, temp, key, old).await.map(Some)
    }

    async fn list(&self, dir: &str) -> object_store::Result<Option<Vec<Listed>>> {
        let found = self.list_dir(dir).await?;
        Ok(found.map(|facts| facts.into_iter().map(Facts::listed).collect()))
    }

    async fn remove(&self, key: &str) -> object_store::Result<()> {
        Remote::remove(self, key).await
    }
}

#[async_trait]
impl WriteWhole for Remote {
    async fn write_whole(&self, temp: &str, body: Bytes) -> object_store::Result<()> {
        self.store(temp, &body).await
    }
}

/// A lock is a folder made by MKD, which only one writer can make.
#[async_trait]
impl LockFiles for Remote {
    const STORE: &'static str = STORE;
    /// The lock folder's name.
    type Held = String;

    async fn try_lock(&self, lock: &str) -> object_store::Result<TryLock<String>> {
        let full = self.full(lock);
        match self
            .run("locking", lock, async |s| s.mkdir(&full).await)
            .await
        {
            Ok(()) => return Ok(TryLock::Taken(lock.to_string())),
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        Ok(match Remote::stat(self, lock).await? {
            // Nothing there: the folder the lock goes in is missing.
            None => TryLock::NoFolder,
            Some(f) => TryLock::Held {
                made: f.modified().map(Into::into),
            },
        })
    }

    async fn make_dirs(&self, dir: &str) -> object_store::Result<()> {
        Remote::make_dirs(self, dir).await
    }

    async fn remove_lock(&self, lock: &str) -> object_store::Result<()> {
        let full = self.full(lock);
        self.run("unlocking", lock, async |s| s.rmdir(&full).await)
            .await
    }

    async fn unlock(&self, lock: String) {
        let _ = self.remove_lock(&lock).await;
    }
}
