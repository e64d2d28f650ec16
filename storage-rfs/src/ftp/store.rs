//! `FtpStore`: a folder on an FTP server as an `object_store::ObjectStore`. A put STORes a
//! temporary file beside the key and renames it over the key under the key's lock
//! (`remote.rs`); RNTO replaces an existing file in one step, so readers see the old file or
//! the new one. A get reads its range with REST + RETR into memory.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::{self, BoxStream};
use object_store::path::Path;
use object_store::{
    Attributes, CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload,
    ObjectMeta, ObjectStore, PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

use super::remote::{Remote, STORE};
use storage_folders::names::temp_for;
use storage_folders::{self as folders, BufferedUpload, PutWhole, copy_by_rewriting};

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
