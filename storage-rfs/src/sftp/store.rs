//! `SftpStore`: a folder on an SFTP server as an `object_store::ObjectStore`. Keys are
//! `/`-separated paths below the folder; folders are made as needed and pruned once emptied.
//!
//! - A put writes a temporary file beside the target ([`WRITES_IN_FLIGHT`] WRITE requests
//!   pipelined) and renames it over the target under the key's lock (`remote.rs`).
//! - A multipart upload writes its parts into the temporary file at their offsets.
//! - A get pipelines READ requests, [`READS_IN_FLIGHT`] at a time.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, BoxStream};
use futures::{FutureExt, StreamExt, TryFutureExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    Attributes, CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload,
    ObjectMeta, ObjectStore, PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult,
    UploadPart,
};
use russh_sftp::protocol::{OpenFlags, StatusCode};

use storage_folders::{self as folders, PutWhole, copy_by_rewriting};

use super::remote::{Remote, meta, temp_for};
use storage_core::bounds::{timed_out, transfer_deadline};

use super::session::{Conn, STORE, generic, status, store_error};

const READS_IN_FLIGHT: usize = 16;
const WRITES_IN_FLIGHT: usize = 16;

pub(crate) struct SftpStore {
    remote: Arc<Remote>,
}

impl SftpStore {
    pub(crate) fn new(remote: Remote) -> Self {
        SftpStore {
            remote: Arc::new(remote),
        }
    }

    pub(crate) fn remote(&self) -> &Arc<Remote> {
        &self.remote
    }
}

impl fmt::Debug for SftpStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SftpStore")
            .field("login", &self.remote.session.login)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for SftpStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SFTP({})", self.remote.describe())
    }
}

fn not_found(key: &str) -> object_store::Error {
    object_store::Error::NotFound {
        path: key.to_string(),
        source: format!("no file {key}").into(),
    }
}

/// Closes a file handle when the last user lets go of it.
struct OpenFile {
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

impl SftpStore {
    /// Writes `payload` to a temporary file and commits it to `key` if `mode` allows.
    async fn write_whole(
        &self,
        key: &str,
        payload: PutPayload,
        mode: PutMode,
    ) -> object_store::Result<PutResult> {
        let temp = temp_for(key);
        let (conn, handle) = self.remote.create_new(&temp).await?;
        let mut file = OpenFile { conn, handle };
        let written = write_at(&file, key, 0, payload).await;
        let handle = std::mem::take(&mut file.handle);
        let closed = file.conn.sftp.close(handle).await;
        if let Err(e) = written {
            let _ = self.remote.remove(&temp).await;
            return Err(e);
        }
        if let Err(e) = closed {
            let _ = self.remote.remove(&temp).await;
            return Err(store_error("writing", key, e));
        }
        let e_tag = self.remote.commit(&temp, key, mode).await?;
        Ok(PutResult {
            e_tag: Some(e_tag),
            version: None,
            extensions: Default::default(),
        })
    }
}

#[async_trait]
impl ObjectStore for SftpStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.write_whole(location.as_ref(), payload, opts.mode)
            .await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        _opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let key = location.as_ref().to_string();
        let temp = temp_for(&key);
        let (conn, handle) = self.remote.create_new(&temp).await?;
        Ok(Box::new(TempFileUpload {
            remote: self.remote.clone(),
            file: Some(Arc::new(OpenFile { conn, handle })),
            temp,
            key,
            offset: 0,
            failed: Arc::new(AtomicBool::new(false)),
            written: Arc::new(AtomicU64::new(0)),
        }))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let key = location.as_ref().to_string();
        if options.head {
            let attrs = self
                .remote
                .stat(&key)
                .await?
                .filter(|a| !a.is_dir())
                .ok_or_else(|| not_found(&key))?;
            let meta = meta(&key, &attrs);
            options.check_preconditions(&meta)?;
            return Ok(GetResult {
                payload: GetResultPayload::Stream(stream::empty().boxed()),
                range: 0..meta.size,
                meta,
                attributes: Attributes::default(),
                extensions: Default::default(),
            });
        }
        let full = self.remote.full(&key);
        let (conn, handle) = self
            .remote
            .call("reading", &key, |c| async move {
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
            .map_err(|e| store_error("reading", &key, e))?
            .attrs;
        if attrs.is_dir() {
            return Err(not_found(&key));
        }
        let meta = meta(&key, &attrs);
        options.check_preconditions(&meta)?;
        let range = match &options.range {
            Some(r) => r
                .as_range(meta.size)
                .map_err(|e| object_store::Error::Generic {
                    store: STORE,
                    source: Box::new(e),
                })?,
            None => 0..meta.size,
        };
        let returned = range.clone();
        let chunk = u64::from(file.conn.chunk);
        let pieces = (range.start..range.end)
            .step_by(chunk as usize)
            .map(move |at| (at, chunk.min(range.end - at)));
        // Each piece (a few hundred KiB at most) whole within `timeout`: a server answering a
        // byte at a time fails as one that is silent does.
        let timeout = self.remote.session.login.timeout;
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
        Ok(GetResult {
            payload: GetResultPayload::Stream(body.boxed()),
            range: returned,
            meta,
            attributes: Attributes::default(),
            extensions: Default::default(),
        })
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        folders::delete_stream(self.remote.clone(), locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        folders::list(self.remote.clone(), prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        folders::list_with_delimiter(&*self.remote, prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        copy_by_rewriting(self, from, to, options).await
    }
}

#[async_trait]
impl PutWhole for SftpStore {
    async fn put_whole(
        &self,
        key: &str,
        body: Bytes,
        mode: PutMode,
    ) -> object_store::Result<PutResult> {
        self.write_whole(key, body.into(), mode).await
    }
}

/// A multipart upload: parts written into one temporary file at their offsets, committed by
/// rename on completion.
struct TempFileUpload {
    remote: Arc<Remote>,
    file: Option<Arc<OpenFile>>,
    temp: String,
    key: String,
    /// Where the next part starts.
    offset: u64,
    failed: Arc<AtomicBool>,
    written: Arc<AtomicU64>,
}

impl fmt::Debug for TempFileUpload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TempFileUpload")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl TempFileUpload {
    async fn discard(&mut self) {
        if let Some(file) = self.file.take() {
            drop(file);
        }
        let _ = self.remote.remove(&self.temp).await;
    }
}

#[async_trait]
impl MultipartUpload for TempFileUpload {
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

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let complete = !self.failed.load(Ordering::Relaxed)
            && self.written.load(Ordering::Relaxed) == self.offset;
        let Some(file) = self.file.take().filter(|_| complete) else {
            self.discard().await;
            return Err(generic(format!(
                "a part of {} could not be written",
                self.key
            )));
        };
        let Ok(mut file) = Arc::try_unwrap(file) else {
            self.discard().await;
            return Err(generic(format!("{}: parts still being written", self.key)));
        };
        let handle = std::mem::take(&mut file.handle);
        if let Err(e) = file.conn.sftp.close(handle).await {
            let _ = self.remote.remove(&self.temp).await;
            return Err(store_error("writing", &self.key, e));
        }
        let e_tag = self
            .remote
            .commit(&self.temp, &self.key, PutMode::Overwrite)
            .await?;
        Ok(PutResult {
            e_tag: Some(e_tag),
            version: None,
            extensions: Default::default(),
        })
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.discard().await;
        Ok(())
    }
}
