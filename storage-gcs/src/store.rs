//! `GcsStore`: object_store_opendal's `OpendalStore` over opendal's GCS service, with the
//! parts it cannot do against GCS's JSON API done here:
//!
//! - conditional puts (`PutMode::Create` / `Update`) are real generation-match writes, sent
//!   as one multipart upload (see `conditional_writes.rs`); `OpendalStore` would send the ETag as
//!   `if_match`, which opendal's GCS writer does not support;
//! - large uploads stream through opendal's resumable-upload writer (8 MiB chunks, each
//!   retried on its own), where `OpendalStore` would start an XML-API multipart upload that
//!   the JSON API (and fake-gcs-server) does not serve;
//! - listings come straight from opendal, without folder entries, and every name crosses
//!   into `OpendalStore` escaped so that its percent-decoding gives the name back unchanged
//!   (`100%.txt`, `a%41` stay themselves).

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult, UploadPart,
};
use object_store_opendal::OpendalStore;
use opendal::{Buffer, ErrorKind, Operator};
use tokio::sync::{Mutex, oneshot};

use crate::conditional_writes::JsonApi;
use crate::error::{Kind, fix_error, generic, store_error, translate};

/// How many deletes are in flight at once.
const DELETE_CONCURRENCY: usize = 8;

pub(crate) struct GcsStore {
    inner: OpendalStore,
    op: Operator,
    json: JsonApi,
    bucket: String,
}

impl GcsStore {
    pub(crate) fn new(op: Operator, json: JsonApi, bucket: &str) -> Self {
        GcsStore {
            inner: OpendalStore::new(op.clone()),
            op,
            json,
            bucket: bucket.to_string(),
        }
    }
}

impl fmt::Debug for GcsStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GcsStore")
            .field("bucket", &self.bucket)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for GcsStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GCS(bucket={})", self.bucket)
    }
}

/// The location as `OpendalStore` wants it: it percent-decodes what it is given, so every
/// `%` (and the other characters object_store escapes) goes in escaped.
fn escaped(location: &Path) -> Path {
    Path::from_iter(location.as_ref().split('/'))
}

/// A listed name as a location: the name itself, as the adapter builds its keys.
fn location_of(name: &str) -> Path {
    Path::parse(name).unwrap_or_else(|_| Path::from(name))
}

/// A listing that finds no bucket says so (a missing prefix lists as empty).
fn list_error(e: opendal::Error, dir: &str, bucket: &str) -> object_store::Error {
    if e.kind() == ErrorKind::NotFound {
        return translate(
            Kind::NotFound,
            dir,
            format!("bucket {bucket} not found").into(),
        );
    }
    store_error(e, dir)
}

fn meta_of(location: Path, meta: &opendal::Metadata) -> ObjectMeta {
    let last_modified = meta
        .last_modified()
        .and_then(|t| {
            let t = t.into_inner();
            chrono::DateTime::from_timestamp(t.as_second(), t.subsec_nanosecond() as u32)
        })
        .unwrap_or_default();
    ObjectMeta {
        location,
        last_modified,
        size: meta.content_length(),
        e_tag: meta.etag().map(str::to_string),
        version: meta.version().map(str::to_string),
    }
}

#[async_trait]
impl ObjectStore for GcsStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let name = location.as_ref();
        match opts.mode {
            PutMode::Overwrite => self
                .inner
                .put_opts(&escaped(location), payload, opts)
                .await
                .map_err(|e| fix_error(e, location)),
            PutMode::Create => self
                .json
                .insert_if_generation(location, name, payload, "0")
                .await
                .map_err(|e| match e {
                    object_store::Error::Precondition { path, source } => {
                        object_store::Error::AlreadyExists { path, source }
                    }
                    e => e,
                }),
            PutMode::Update(v) => {
                let generation = v.version.ok_or_else(|| {
                    translate(
                        Kind::Precondition,
                        location.as_ref(),
                        "the object was read without its generation".into(),
                    )
                })?;
                self.json
                    .insert_if_generation(location, name, payload, &generation)
                    .await
            }
        }
    }

    /// A resumable upload: the object appears, whole, when the upload completes.
    ///
    /// opendal sends resumable uploads only for conditional writes, so the write is made
    /// conditional on what is there now (its generation, or nothing). Should another writer
    /// replace or delete the object while this upload runs, that writer is the later one:
    /// this upload is dropped and reported done, as if it had landed just before (for the
    /// content-addressed packages the adapter uploads, that other writer stored the same
    /// bytes).
    async fn put_multipart_opts(
        &self,
        location: &Path,
        _opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let name = location.as_ref();
        let writer = match self.op.stat(name).await {
            Ok(meta) => match meta.version() {
                Some(generation) => self.op.writer_with(name).if_version_match(generation).await,
                None => {
                    return Err(generic(format!("{location} has no generation")));
                }
            },
            Err(e) if e.kind() == ErrorKind::NotFound => {
                self.op.writer_with(name).if_not_exists(true).await
            }
            Err(e) => return Err(store_error(e, name)),
        }
        .map_err(|e| store_error(e, name))?;
        Ok(Box::new(ResumableUpload::new(writer, location.clone())))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let mut got = self
            .inner
            .get_opts(&escaped(location), options)
            .await
            .map_err(|e| fix_error(e, location))?;
        got.meta.location = location.clone();
        Ok(got)
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[std::ops::Range<u64>],
    ) -> object_store::Result<Vec<bytes::Bytes>> {
        self.inner
            .get_ranges(&escaped(location), ranges)
            .await
            .map_err(|e| fix_error(e, location))
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let op = self.op.clone();
        locations
            .map(move |location| {
                let op = op.clone();
                async move {
                    let location = location?;
                    op.delete(location.as_ref())
                        .await
                        .map_err(|e| store_error(e, location.as_ref()))?;
                    Ok(location)
                }
            })
            .buffered(DELETE_CONCURRENCY)
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let dir = prefix.map_or(String::new(), |p| format!("{}/", p.as_ref()));
        let op = self.op.clone();
        let bucket = self.bucket.clone();
        async move {
            let lister = op
                .lister_with(&dir)
                .recursive(true)
                .await
                .map_err(|e| list_error(e, &dir, &bucket))?;
            let dir_for_errors = dir.clone();
            Ok::<_, object_store::Error>(
                lister
                    .map_err(move |e| list_error(e, &dir_for_errors, &bucket))
                    .try_filter_map(|entry| async move {
                        let (name, meta) = entry.into_parts();
                        if meta.is_dir() || name.ends_with('/') {
                            return Ok(None);
                        }
                        Ok(Some(meta_of(location_of(&name), &meta)))
                    }),
            )
        }
        .into_stream()
        .try_flatten()
        .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let dir = prefix.map_or(String::new(), |p| format!("{}/", p.as_ref()));
        let mut lister = self
            .op
            .lister_with(&dir)
            .await
            .map_err(|e| list_error(e, &dir, &self.bucket))?;
        let mut out = ListResult {
            common_prefixes: Vec::new(),
            objects: Vec::new(),
            extensions: Default::default(),
        };
        while let Some(entry) = lister.next().await {
            let (name, meta) = entry
                .map_err(|e| list_error(e, &dir, &self.bucket))?
                .into_parts();
            if name == dir {
                continue;
            }
            if meta.is_dir() {
                out.common_prefixes
                    .push(location_of(name.trim_end_matches('/')));
            } else {
                out.objects.push(meta_of(location_of(&name), &meta));
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
        self.inner
            .copy_opts(&escaped(from), &escaped(to), options)
            .await
            .map_err(|e| fix_error(e, from))
    }
}

/// Parts go into one opendal resumable writer strictly in the order they were handed over.
struct ResumableUpload {
    state: Arc<Mutex<UploadState>>,
    /// Fires when the part handed over last has been written (or given up).
    last: Option<oneshot::Receiver<()>>,
}

struct UploadState {
    writer: opendal::Writer,
    location: Path,
    /// Another writer replaced the object meanwhile: the rest of this upload is dropped.
    superseded: bool,
    failed: bool,
}

impl ResumableUpload {
    fn new(writer: opendal::Writer, location: Path) -> Self {
        ResumableUpload {
            state: Arc::new(Mutex::new(UploadState {
                writer,
                location,
                superseded: false,
                failed: false,
            })),
            last: None,
        }
    }
}

impl UploadState {
    fn error(&self, e: opendal::Error) -> object_store::Error {
        store_error(e, self.location.as_ref())
    }

    async fn write(&mut self, data: PutPayload) -> object_store::Result<()> {
        if self.failed {
            return Err(generic(format!(
                "an earlier part of {} failed",
                self.location
            )));
        }
        if self.superseded {
            return Ok(());
        }
        match self.writer.write(Buffer::from_iter(data)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::ConditionNotMatch => {
                self.superseded = true;
                let _ = self.writer.abort().await;
                Ok(())
            }
            Err(e) => {
                self.failed = true;
                Err(self.error(e))
            }
        }
    }
}

impl fmt::Debug for ResumableUpload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResumableUpload").finish_non_exhaustive()
    }
}

#[async_trait]
impl MultipartUpload for ResumableUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let (done, next) = oneshot::channel::<()>();
        let previous = self.last.replace(next);
        let state = self.state.clone();
        async move {
            if let Some(previous) = previous {
                // An error only means the previous part's task went away: go on in order.
                let _ = previous.await;
            }
            let result = state.lock().await.write(data).await;
            drop(done);
            result
        }
        .boxed()
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        if let Some(previous) = self.last.take() {
            let _ = previous.await;
        }
        let mut state = self.state.lock().await;
        if state.failed {
            return Err(generic(format!("a part of {} failed", state.location)));
        }
        let superseded = PutResult {
            e_tag: None,
            version: None,
            extensions: Default::default(),
        };
        if state.superseded {
            return Ok(superseded);
        }
        match state.writer.close().await {
            Ok(meta) => Ok(PutResult {
                e_tag: meta.etag().map(str::to_string),
                version: meta.version().map(str::to_string),
                extensions: Default::default(),
            }),
            Err(e) if e.kind() == ErrorKind::ConditionNotMatch => Ok(superseded),
            Err(e) => Err(state.error(e)),
        }
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        let mut state = self.state.lock().await;
        state.failed = true;
        if state.superseded {
            return Ok(());
        }
        state.writer.abort().await.map_err(|e| state.error(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaped_names_decode_back_to_themselves() {
        for name in ["odd/100%.txt", "a%41/b#c", "plain/name.txt", "sp ace/é"] {
            let p = Path::parse(name).unwrap();
            let decoded = opendal::raw::percent_decode_path(escaped(&p).as_ref());
            assert_eq!(decoded, name);
        }
    }

    #[test]
    fn listed_names_become_the_keys_the_adapter_builds() {
        let name = "odd/plus+percent%hash#.cfg";
        assert_eq!(location_of(name), Path::parse(name).unwrap());
    }
}
