//! SFTP's primitives for the folder store (`storage_folders::FolderStore`): stat, reads of an
//! opened file, temporary files committed by rename under a per-key lock file, listings,
//! removal, and emptied folders pruned after a delete.
//!
//! - A write goes into a temporary file beside the target, its parts at their offsets
//!   ([`WRITES_IN_FLIGHT`] WRITE requests pipelined), and is renamed over the target under the
//!   key's lock (`client.rs`).
//! - A get opens the file and takes the open file's attributes (fstat), so the ETag names
//!   exactly the bytes read; it pipelines READ requests, [`READS_IN_FLIGHT`] at a time.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, BoxStream};
use futures::{FutureExt, StreamExt, TryFutureExt, TryStreamExt};
use object_store::{GetRange, ObjectMeta, PutPayload, UploadPart};
use russh_sftp::protocol::{FileAttributes, OpenFlags, StatusCode};
use storage_core::bounds::{timed_out, transfer_deadline};
use storage_folders::Listed;
use storage_folders::lock::{LockFiles, TryLock};
use storage_folders::protocol::{Protocol, TempWriter, not_found};

use super::client::{Remote, meta};
use super::session::{Conn, STORE, generic, status, store_error};

const READS_IN_FLIGHT: usize = 16;
const WRITES_IN_FLIGHT: usize = 16;

/// Closes a file handle when the last user lets go of it.
pub(crate) struct OpenFile {
    conn: Arc<Conn>,
    handle: String,
}

impl Drop for OpenFile {
    fn drop(&mut self) {
        let (conn, handle) = (self.conn.clone(), std::mem::take(&mut self.handle));
        if handle.is_empty() {
            return;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = conn.sftp.close(handle).await;
            });
        }
    }
}

/// Reads exactly `len` bytes at `offset` (a server may answer a READ with fewer).
async fn read_exact(
    file: &OpenFile,
    key: &str,
    offset: u64,
    len: u64,
) -> object_store::Result<Bytes> {
    let mut out = Vec::with_capacity(len.min(1 << 20) as usize);
    while (out.len() as u64) < len {
        let at = offset + out.len() as u64;
        let want = (len - out.len() as u64) as u32;
        match file.conn.sftp.read(file.handle.clone(), at, want).await {
            Ok(data) if !data.data.is_empty() => out.extend_from_slice(&data.data),
            Ok(_) => break,
            Err(e) if status(&e) == Some(StatusCode::Eof) => break,
            Err(e) => return Err(store_error("reading", key, e)),
        }
    }
    if out.len() as u64 != len {
        return Err(generic(format!("{key} changed while it was read")));
    }
    Ok(out.into())
}

/// Writes `data` at `offset`, [`WRITES_IN_FLIGHT`] requests of the connection's chunk size at
/// a time.
async fn write_at(
    file: &OpenFile,
    key: &str,
    offset: u64,
    data: PutPayload,
) -> object_store::Result<()> {
    let chunk = file.conn.chunk as usize;
    let mut pieces = Vec::new();
    let mut at = offset;
    for part in data.iter() {
        let mut rest = part.clone();
        while !rest.is_empty() {
            let piece = rest.split_to(chunk.min(rest.len()));
            pieces.push((at, piece));
            at += pieces.last().map_or(0, |(_, p)| p.len() as u64);
        }
    }
    stream::iter(pieces)
        .map(|(at, piece)| {
            file.conn
                .sftp
                .write(file.handle.clone(), at, piece.to_vec())
                .map_err(|e| store_error("writing", key, e))
        })
        .buffer_unordered(WRITES_IN_FLIGHT)
        .try_collect::<Vec<_>>()
        .await
        .map(drop)
}

#[async_trait]
impl Protocol for Remote {
    const FAN_OUT: usize = 8;

    type Facts = FileAttributes;
    type Reader = Arc<OpenFile>;
    type Writer = TempFile;

    fn describe(&self) -> String {
        Remote::describe(self)
    }

    fn meta(&self, key: &str, attrs: &FileAttributes) -> ObjectMeta {
        meta(key, attrs)
    }

    async fn stat(&self, key: &str) -> object_store::Result<Option<FileAttributes>> {
        Ok(Remote::stat(self, key).await?.filter(|a| !a.is_dir()))
    }

    async fn open(
        &self,
        key: &str,
        _range: Option<&GetRange>,
    ) -> object_store::Result<(ObjectMeta, Arc<OpenFile>)> {
        let full = self.full(key);
        let (conn, handle) = self
            .call("reading", key, |c| async move {
                let h = c
                    .sftp
                    .open(full, OpenFlags::READ, Default::default())
                    .await?;
                Ok((c, h.handle))
            })
            .await?;
        let file = Arc::new(OpenFile { conn, handle });
        // The attributes of the open file, so the ETag names exactly the bytes read.
        let attrs = file
            .conn
            .sftp
            .fstat(file.handle.clone())
            .await
            .map_err(|e| store_error("reading", key, e))?
            .attrs;
        if attrs.is_dir() {
            return Err(not_found(key));
        }
        Ok((meta(key, &attrs), file))
    }

    async fn read(
        &self,
        key: &str,
        file: Arc<OpenFile>,
        range: Range<u64>,
    ) -> object_store::Result<BoxStream<'static, object_store::Result<Bytes>>> {
        let chunk = u64::from(file.conn.chunk);
        let pieces = (range.start..range.end)
            .step_by(chunk as usize)
            .map(move |at| (at, chunk.min(range.end - at)));
        // Each piece (a few hundred KiB at most) whole within `timeout`: a server answering a
        // byte at a time fails as one that is silent does.
        let timeout = self.session.login.timeout;
        let key = key.to_string();
        let body = stream::iter(pieces)
            .map(move |(at, len)| {
                let (file, key) = (file.clone(), key.clone());
                async move {
                    let limit = transfer_deadline(timeout, len);
                    match tokio::time::timeout(limit, read_exact(&file, &key, at, len)).await {
                        Ok(read) => read,
                        Err(_) => {
                            Err(timed_out(&format!("reading {key}"), limit).into_store(STORE))
                        }
                    }
                }
            })
            .buffered(READS_IN_FLIGHT);
        Ok(body.boxed())
    }

    async fn rename_over(
        &self,
        temp: &str,
        key: &str,
        old: Option<&FileAttributes>,
        _replace: bool,
    ) -> object_store::Result<Option<String>> {
        self.rename_stamped(temp, key, old).await.map(Some)
    }

    async fn list(&self, dir: &str) -> object_store::Result<Option<Vec<Listed>>> {
        let found = self.list_dir(dir).await?;
        Ok(found.map(|entries| {
            entries
                .into_iter()
                .filter_map(|e| {
                    if e.attrs.is_dir() {
                        Some(Listed::folder(e.key))
                    } else if e.attrs.is_regular() {
                        Some(Listed::File {
                            modified: e
                                .attrs
                                .mtime
                                .map(|m| UNIX_EPOCH + Duration::from_secs(m.into())),
                            meta: meta(&e.key, &e.attrs),
                        })
                    } else {
                        None
                    }
                })
                .collect()
        }))
    }

    async fn remove(&self, key: &str) -> object_store::Result<()> {
        Remote::remove(self, key).await
    }

    async fn remove_empty_folder(&self, dir: &str) -> bool {
        let full = self.full(dir);
        self.call("removing folder", dir, |c| async move {
            c.sftp.rmdir(full).await
        })
        .await
        .is_ok()
    }
}

/// A temporary file being written: parts at their offsets, closed when finished.
pub(crate) struct TempFile {
    file: Option<Arc<OpenFile>>,
    /// The key the file goes to, as messages name it.
    key: String,
    /// Where the next part starts.
    offset: u64,
    failed: Arc<AtomicBool>,
    written: Arc<AtomicU64>,
}

impl fmt::Debug for TempFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TempFile")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl TempWriter<Remote> for TempFile {
    async fn create(remote: &Remote, temp: &str, key: &str) -> object_store::Result<Self> {
        let (conn, handle) = remote.create_new(temp).await?;
        Ok(TempFile {
            file: Some(Arc::new(OpenFile { conn, handle })),
            key: key.to_string(),
            offset: 0,
            failed: Arc::new(AtomicBool::new(false)),
            written: Arc::new(AtomicU64::new(0)),
        })
    }

    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let at = self.offset;
        self.offset += data.content_length() as u64;
        let (file, key, failed, written) = (
            self.file.clone(),
            self.key.clone(),
            self.failed.clone(),
            self.written.clone(),
        );
        async move {
            let Some(file) = file else {
                return Err(generic(format!("{key}: the upload is already finished")));
            };
            let len = data.content_length() as u64;
            let result = write_at(&file, &key, at, data).await;
            match &result {
                Ok(()) => {
                    written.fetch_add(len, Ordering::Relaxed);
                }
                Err(_) => failed.store(true, Ordering::Relaxed),
            }
            result
        }
        .boxed()
    }

    async fn finish(&mut self, _remote: &Remote, _temp: &str) -> object_store::Result<()> {
        let complete = !self.failed.load(Ordering::Relaxed)
            && self.written.load(Ordering::Relaxed) == self.offset;
        let Some(file) = self.file.take().filter(|_| complete) else {
            return Err(generic(format!(
                "a part of {} could not be written",
                self.key
            )));
        };
        let Ok(mut file) = Arc::try_unwrap(file) else {
            return Err(generic(format!("{}: parts still being written", self.key)));
        };
        let handle = std::mem::take(&mut file.handle);
        file.conn
            .sftp
            .close(handle)
            .await
            .map(drop)
            .map_err(|e| store_error("writing", &self.key, e))
    }

    async fn abort(&mut self, remote: &Remote, temp: &str) {
        drop(self.file.take());
        let _ = remote.remove(temp).await;
    }
}

/// A lock is a file created exclusively (folders made as needed).
#[async_trait]
impl LockFiles for Remote {
    const STORE: &'static str = STORE;
    /// The lock file's name.
    type Held = String;

    async fn try_lock(&self, lock: &str) -> object_store::Result<TryLock<String>> {
        match self.create_new(lock).await {
            Ok((conn, handle)) => {
                let _ = conn.sftp.close(handle).await;
                Ok(TryLock::Taken(lock.to_string()))
            }
            // Exists (SFTP v3 says only "failure").
            Err(object_store::Error::Generic { .. }) => {
                let made = Remote::stat(self, lock).await?.and_then(|a| a.mtime);
                Ok(TryLock::Held {
                    made: made.map(|m| UNIX_EPOCH + Duration::from_secs(m.into())),
                })
            }
            Err(e) => Err(e),
        }
    }

    async fn make_dirs(&self, dir: &str) -> object_store::Result<()> {
        Remote::make_dirs(self, dir).await
    }

    async fn remove_lock(&self, lock: &str) -> object_store::Result<()> {
        Remote::remove(self, lock).await
    }

    async fn unlock(&self, lock: String) {
        let _ = Remote::remove(self, &lock).await;
    }
}
