//! What a remote file system gives the one folder store ([`crate::FolderStore`]): stat, read
//! a range of an opened file, write a temporary file, rename it over a key, take a key's lock
//! ([`LockFiles`]), list a folder, remove a file. The store builds every `ObjectStore`
//! method from these once; a protocol keeps only its own quirks (how it reads, how it dates
//! a new file past the old one, how its lock is made).

use std::fmt;
use std::ops::Range;

use async_trait::async_trait;
use bytes::Bytes;
use futures::FutureExt;
use futures::stream::BoxStream;
use object_store::{GetRange, ObjectMeta, PutPayload, UploadPart};

use crate::Listed;
use crate::lock::LockFiles;

/// One remote file system's file operations, as the folder store needs them. Keys are
/// `/`-separated paths below the store's folder (`""` is the folder itself).
#[async_trait]
pub trait Protocol: LockFiles + fmt::Debug + 'static {
    /// Folders listed, or files deleted, at once.
    const FAN_OUT: usize = 4;
    /// Whether [`Protocol::rename_over`] needs the facts of the file it replaces (to date the
    /// new file past it); when not, an overwrite does not stat the key first.
    const DATES_PAST_OLD: bool = true;

    /// What the server says of a file.
    type Facts: Send + Sync;
    /// A file opened for reading.
    type Reader: Send + 'static;
    /// A temporary file being written part by part.
    type Writer: TempWriter<Self>;

    /// Where the store's folder is, as messages show it (no secrets).
    fn describe(&self) -> String;

    /// `facts` of the file at `key` as object_store shows them.
    fn meta(&self, key: &str, facts: &Self::Facts) -> ObjectMeta;

    /// The file at `key`; `None` when nothing (or a folder) is there.
    async fn stat(&self, key: &str) -> object_store::Result<Option<Self::Facts>>;

    /// The file at `key` for a get that wants no body: [`Protocol::stat`], unless the
    /// protocol must look past a swap under way.
    async fn head(&self, key: &str) -> object_store::Result<ObjectMeta> {
        let facts = self.stat(key).await?.ok_or_else(|| not_found(key))?;
        Ok(self.meta(key, &facts))
    }

    /// Opens the file at `key` for reading; the metadata returned is that of exactly the bytes
    /// the reader will give. `range` is what will be read, for a protocol that asks for it
    /// as it opens.
    async fn open(
        &self,
        key: &str,
        range: Option<&GetRange>,
    ) -> object_store::Result<(ObjectMeta, Self::Reader)>;

    /// Bytes `range` of a file opened by [`Protocol::open`].
    async fn read(
        &self,
        key: &str,
        reader: Self::Reader,
        range: Range<u64>,
    ) -> object_store::Result<BoxStream<'static, object_store::Result<Bytes>>>;

    /// Puts the finished temporary file `temp` in place of `key` in one step (replacing a file
    /// there only when `replace`), dated past `old`, the file it replaces; returns the new
    /// file's ETag. Runs under `key`'s lock.
    async fn rename_over(
        &self,
        temp: &str,
        key: &str,
        old: Option<&Self::Facts>,
        replace: bool,
    ) -> object_store::Result<Option<String>>;

    /// The files and folders in folder `dir` (`""` is the root), temporary and lock files
    /// included; `None` when there is no such folder.
    async fn list(&self, dir: &str) -> object_store::Result<Option<Vec<Listed>>>;

    /// Removes the file at `key` without its lock; a missing one is no error.
    async fn remove(&self, key: &str) -> object_store::Result<()>;

    /// Removes folder `dir` if it is empty, and says whether it went. Protocols that keep
    /// emptied folders keep this default.
    async fn remove_empty_folder(&self, _dir: &str) -> bool {
        false
    }
}

/// A temporary file being written, part after part, each where the one before ended.
#[async_trait]
pub trait TempWriter<P: ?Sized + Sync>: Sized + Send + fmt::Debug + 'static {
    /// Starts the new temporary file `temp` beside `key` (which messages name), its folders
    /// made as needed.
    async fn create(protocol: &P, temp: &str, key: &str) -> object_store::Result<Self>;

    /// Writes the next part.
    fn put_part(&mut self, data: PutPayload) -> UploadPart;

    /// Ends the writing once every part is in; on an error the store removes the file.
    async fn finish(&mut self, protocol: &P, temp: &str) -> object_store::Result<()>;

    /// Gives up, removing whatever was written.
    async fn abort(&mut self, protocol: &P, temp: &str);
}

/// For protocols that write a file only whole (WebDAV, FTP): one request with the body.
#[async_trait]
pub trait WriteWhole: Send + Sync {
    /// Writes `body` as the new temporary file `temp`, its folders made as needed.
    async fn write_whole(&self, temp: &str, body: Bytes) -> object_store::Result<()>;
}

/// The writer of a protocol that writes a file only whole: parts held in memory, sent as one
/// body when finished. Only large files of a files layout and format-1 archives come in
/// parts.
#[derive(Debug, Default)]
pub struct Buffered {
    parts: Vec<Bytes>,
}

#[async_trait]
impl<P: WriteWhole + ?Sized> TempWriter<P> for Buffered {
    /// Nothing is sent before the whole body is there.
    async fn create(_protocol: &P, _temp: &str, _key: &str) -> object_store::Result<Self> {
        Ok(Buffered::default())
    }

    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        self.parts.extend(data);
        async { Ok(()) }.boxed()
    }

    async fn finish(&mut self, protocol: &P, temp: &str) -> object_store::Result<()> {
        let body: PutPayload = self.parts.drain(..).collect();
        protocol.write_whole(temp, body.into()).await
    }

    async fn abort(&mut self, _protocol: &P, _temp: &str) {
        self.parts.clear();
    }
}

/// The error of a get or head of a key where no file is.
pub fn not_found(key: &str) -> object_store::Error {
    object_store::Error::NotFound {
        path: key.to_string(),
        source: format!("no file {key}").into(),
    }
}
