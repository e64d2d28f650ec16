//! Bridges between blocking packers/unpackers and async object stores: a `Write` that hands
//! fixed-size chunks to an async uploader, and a `Read` over an async download stream.
//! Both hold a bounded amount of data, so memory does not grow with the package.

use std::io::{self, Read, Seek, SeekFrom, Write};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use tokio::sync::mpsc;

use crate::error::Error;

/// Bytes per chunk handed to an uploader: large enough for few requests, small enough to keep
/// little in memory.
pub const CHUNK: usize = 1024 * 1024;

/// Writes go out as `CHUNK`-sized `Bytes` on a bounded channel.
pub struct ChunkWriter {
    tx: mpsc::Sender<Bytes>,
    buf: Vec<u8>,
}

impl ChunkWriter {
    /// A writer that sends its chunks on `tx`; a full channel blocks the writer.
    pub fn new(tx: mpsc::Sender<Bytes>) -> Self {
        ChunkWriter {
            tx,
            buf: Vec::with_capacity(CHUNK),
        }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send(Bytes::from(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the upload stopped"))
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(CHUNK - self.buf.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// Reads an async byte stream from a blocking thread. A transfer error is kept aside so the
/// caller can report it as what it is, not as a corrupt archive.
pub struct StreamReader {
    handle: tokio::runtime::Handle,
    stream: BoxStream<'static, Result<Bytes, Error>>,
    current: Bytes,
    failure: Arc<Mutex<Option<Error>>>,
    on_bytes: Box<dyn FnMut(u64) + Send>,
}

impl StreamReader {
    /// Reads `stream` on `handle`'s runtime, calling `on_bytes` per chunk. The shared slot
    /// returned receives a transfer error, so the caller can tell it from a bad archive.
    pub fn new(
        handle: tokio::runtime::Handle,
        stream: BoxStream<'static, Result<Bytes, Error>>,
        on_bytes: Box<dyn FnMut(u64) + Send>,
    ) -> (Self, Arc<Mutex<Option<Error>>>) {
        let failure = Arc::new(Mutex::new(None));
        let reader = StreamReader {
            handle,
            stream,
            current: Bytes::new(),
            failure: failure.clone(),
            on_bytes,
        };
        (reader, failure)
    }
}

impl Read for StreamReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.handle.block_on(self.stream.next()) {
                None => return Ok(0),
                Some(Ok(b)) => {
                    (self.on_bytes)(b.len() as u64);
                    self.current = b;
                }
                Some(Err(e)) => {
                    let msg = e.to_string();
                    *self.failure.lock().expect("failure slot") = Some(e);
                    return Err(io::Error::other(msg));
                }
            }
        }
        let n = out.len().min(self.current.len());
        out[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// A byte range of a local file, read directly (positioned on first read), counting bytes.
pub struct FileRange {
    file: io::Take<std::fs::File>,
    start: Option<u64>,
    on_bytes: Box<dyn FnMut(u64) + Send>,
}

impl FileRange {
    /// A reader of the bytes `range` of `file`, calling `on_bytes` per read.
    pub fn new(
        file: std::fs::File,
        range: std::ops::Range<u64>,
        on_bytes: Box<dyn FnMut(u64) + Send>,
    ) -> Self {
        FileRange {
            file: file.take(range.end.saturating_sub(range.start)),
            start: Some(range.start),
            on_bytes,
        }
    }
}

impl Read for FileRange {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if let Some(start) = self.start.take() {
            self.file.get_mut().seek(SeekFrom::Start(start))?;
        }
        let n = self.file.read(out)?;
        (self.on_bytes)(n as u64);
        Ok(n)
    }
}
