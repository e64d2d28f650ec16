//! For stores whose protocol cannot write a file in parts (WebDAV, FTP):
//! a store that writes a key whole ([`PutWhole`]), multipart uploads held in memory and sent
//! whole on completion ([`BufferedUpload`]), and copies made by reading and writing again
//! ([`copy_by_rewriting`]).

use std::fmt;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use object_store::path::Path;
use object_store::{
    CopyMode, CopyOptions, GetOptions, MultipartUpload, ObjectStore, PutMode, PutPayload,
    PutResult, UploadPart,
};

/// A store that writes `body` at `key` in one go (a temporary file moved over the key), if
/// `mode` allows.
#[async_trait]
pub trait PutWhole: Send + Sync + 'static {
    /// Writes `body` at `key` through a temporary file, as `mode` allows (overwrite, create
    /// only, or replace the version read).
    async fn put_whole(
        &self,
        key: &str,
        body: Bytes,
        mode: PutMode,
    ) -> object_store::Result<PutResult>;
}

/// A multipart upload held in memory and written whole on completion. Only large files of a
/// files layout and format-1 archives use it.
pub struct BufferedUpload<S> {
    store: S,
    key: String,
    parts: Vec<PutPayload>,
}

impl<S: PutWhole> BufferedUpload<S> {
    /// An upload to `key` that buffers its parts and writes them with one put when completed.
    pub fn boxed(store: S, key: &Path) -> Box<dyn MultipartUpload> {
        Box::new(BufferedUpload {
            store,
            key: key.as_ref().to_string(),
            parts: Vec::new(),
        })
    }
}

impl<S> fmt::Debug for BufferedUpload<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BufferedUpload")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl<S: PutWhole> MultipartUpload for BufferedUpload<S> {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        self.parts.push(data);
        async { Ok(()) }.boxed()
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let size = self.parts.iter().map(|p| p.content_length()).sum();
        let mut body = BytesMut::with_capacity(size);
        for part in self.parts.drain(..) {
            for piece in part.iter() {
                body.extend_from_slice(piece);
            }
        }
        self.store
            .put_whole(&self.key, body.freeze(), PutMode::Overwrite)
            .await
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.parts.clear();
        Ok(())
    }
}

/// `copy_opts` for a store without a server-side copy: `from` read whole and written at `to`.
pub async fn copy_by_rewriting<S: ObjectStore + PutWhole>(
    store: &S,
    from: &Path,
    to: &Path,
    options: CopyOptions,
) -> object_store::Result<()> {
    let mode = match options.mode {
        CopyMode::Overwrite => PutMode::Overwrite,
        CopyMode::Create => PutMode::Create,
    };
    let data = store
        .get_opts(from, GetOptions::default())
        .await?
        .bytes()
        .await?;
    store.put_whole(to.as_ref(), data, mode).await.map(drop)
}
