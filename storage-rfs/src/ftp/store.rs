//! `FtpStore`: a folder on an FTP server as an `object_store::ObjectStore`. A put STORes a
//! temporary file beside the key and renames it over the key under the key's lock
//! (`remote.rs`); RNTO replaces an existing file in one step, so readers see the old file or
//! the new one. A get reads its range with REST + RETR into memory.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, BoxStream};
use futures::{FutureExt, StreamExt, TryFutureExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    Attributes, CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload,
    ObjectMeta, ObjectStore, PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

use super::remote::{Remote, STORE};
use crate::bookkeeping::{is_bookkeeping, temp_for};
use crate::whole::{BufferedUpload, PutWhole, copy_by_rewriting};

/// Folders listed, or files deleted, at once.
const FAN_OUT: usize = 4;

pub(crate) struct FtpStore {
    remote: Arc<Remote>,
}

impl FtpStore {
    pub(crate) fn new(remote: Arc<Remote>) -> Self {
        FtpStore { remote }
    }
}

impl fmt::Debug for FtpStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FtpStore")
            .field("login", &self.remote.login)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for FtpStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FTP({})", self.remote.describe())
    }
}

fn not_found(key: &str) -> object_store::Error {
    object_store::Error::NotFound {
        path: key.to_string(),
        source: format!("no file {key}").into(),
    }
}

impl FtpStore {
    /// Every file under folder `dir`, folder by folder, [`FAN_OUT`] at a time.
    async fn walk(remote: Arc<Remote>, dir: String) -> object_store::Result<Vec<ObjectMeta>> {
        let mut files = Vec::new();
        let mut level = vec![dir];
        while !level.is_empty() {
            let listed: Vec<_> = stream::iter(level)
                .map(|d| {
                    let remote = remote.clone();
                    async move { remote.list_dir(&d).await }
                })
                .buffer_unordered(FAN_OUT)
                .try_collect()
                .await?;
            level = Vec::new();
            for f in listed.into_iter().flatten().flatten() {
                if is_bookkeeping(f.key.rsplit('/').next().unwrap_or_default()) {
                    continue;
                }
                if f.folder {
                    level.push(f.key);
                } else {
                    files.push(f.meta());
                }
            }
        }
        Ok(files)
    }
}

#[async_trait]
impl PutWhole for FtpStore {
    async fn put_whole(
        &self,
        key: &str,
        body: Bytes,
        mode: PutMode,
    ) -> object_store::Result<PutResult> {
        let temp = temp_for(key);
        if let Err(e) = self.remote.store(&temp, &body).await {
            let _ = self.remote.remove(&temp).await;
            return Err(e);
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
impl ObjectStore for FtpStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.put_whole(location.as_ref(), Bytes::from(payload), opts.mode)
            .await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        _opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        Ok(BufferedUpload::boxed(
            FtpStore::new(self.remote.clone()),
            location,
        ))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let key = location.as_ref().to_string();
        let facts = self
            .remote
            .stat(&key)
            .await?
            .filter(|f| !f.folder)
            .ok_or_else(|| not_found(&key))?;
        let meta = facts.meta();
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
        let payload = if options.head {
            stream::empty().boxed()
        } else {
            let data = self
                .remote
                .read(
                    &key,
                    range.start,
                    range.end - range.start,
                    range.end == meta.size,
                )
                .await?;
            stream::once(async move { Ok(data) }).boxed()
        };
        Ok(GetResult {
            payload: GetResultPayload::Stream(payload),
            range,
            meta,
            attributes: Attributes::default(),
            extensions: Default::default(),
        })
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let remote = self.remote.clone();
        locations
            .map(move |location| {
                let remote = remote.clone();
                async move {
                    let location = location?;
                    remote.delete(location.as_ref()).await?;
                    Ok(location)
                }
            })
            .buffered(FAN_OUT)
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let dir = prefix.map_or(String::new(), |p| p.as_ref().to_string());
        Self::walk(self.remote.clone(), dir)
            .map_ok(|files| stream::iter(files.into_iter().map(Ok)))
            .into_stream()
            .try_flatten()
            .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let dir = prefix.map_or(String::new(), |p| p.as_ref().to_string());
        let mut out = ListResult {
            common_prefixes: Vec::new(),
            objects: Vec::new(),
            extensions: Default::default(),
        };
        for f in self.remote.list_dir(&dir).await?.into_iter().flatten() {
            if is_bookkeeping(f.key.rsplit('/').next().unwrap_or_default()) {
                continue;
            }
            if f.folder {
                out.common_prefixes.push(f.meta().location);
            } else {
                out.objects.push(f.meta());
            }
        }
        Ok(out)
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
