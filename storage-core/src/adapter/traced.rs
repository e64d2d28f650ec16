//! Every request the adapter makes, as `RUST_LOG=storage_core=debug` shows it: one line
//! per call with the operation, the key, the size and how long it took, or the error. A
//! wrapper in object_store's manner, so every backend behind the adapter gets it.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

/// `inner`, with each request logged at debug level (target `storage_core::request`).
#[derive(Debug)]
pub(crate) struct Traced {
    inner: Arc<dyn ObjectStore>,
}

impl Traced {
    pub(crate) fn wrap(inner: Arc<dyn ObjectStore>) -> Arc<dyn ObjectStore> {
        Arc::new(Traced { inner })
    }
}

impl fmt::Display for Traced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

/// Logs how `op` on `key` ended, after `began`.
fn log<T>(op: &str, key: &Path, began: Instant, result: &object_store::Result<T>, bytes: u64) {
    let ms = began.elapsed().as_millis() as u64;
    match result {
        Ok(_) => tracing::debug!(target: "storage_core::request", op, %key, bytes, ms, "ok"),
        Err(e) => {
            tracing::debug!(target: "storage_core::request", op, %key, ms, error = %e, "failed")
        }
    }
}

#[async_trait]
impl ObjectStore for Traced {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let (began, bytes) = (Instant::now(), payload.content_length() as u64);
        let result = self.inner.put_opts(location, payload, opts).await;
        log("put", location, began, &result, bytes);
        result
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let began = Instant::now();
        let result = self.inner.put_multipart_opts(location, opts).await;
        log("multipart", location, began, &result, 0);
        result
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let began = Instant::now();
        let op = if options.head { "head" } else { "get" };
        let result = self.inner.get_opts(location, options).await;
        let bytes = result
            .as_ref()
            .map(|r| r.range.end - r.range.start)
            .unwrap_or(0);
        log(op, location, began, &result, bytes);
        result
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner
            .delete_stream(locations)
            .inspect(|r| match r {
                Ok(key) => tracing::debug!(target: "storage_core::request", op = "delete", %key, "ok"),
                Err(e) => tracing::debug!(target: "storage_core::request", op = "delete", error = %e, "failed"),
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        tracing::debug!(target: "storage_core::request", op = "list", prefix = ?prefix.map(|p| p.as_ref()), "begins");
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let began = Instant::now();
        let result = self.inner.list_with_delimiter(prefix).await;
        let key = prefix.cloned().unwrap_or_default();
        let found = result.as_ref().map(|r| r.objects.len() as u64).unwrap_or(0);
        log("list_with_delimiter", &key, began, &result, found);
        result
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        let began = Instant::now();
        let result = self.inner.copy_opts(from, to, options).await;
        log("copy", to, began, &result, 0);
        result
    }
}
