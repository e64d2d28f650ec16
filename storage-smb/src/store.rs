//! `SmbStore`: an SMB share as an `object_store::ObjectStore`. Keys are `/`-separated paths
//! from the share's root; folders are made as needed and removed once emptied.
//!
//! - A put writes a temporary file beside the target and renames it over the target, so a
//!   reader sees the old file or the new one, whole. `PutMode::Create` and `Update` are
//!   checked under a lock every writer of that key takes (see `Share::commit`).
//! - A multipart upload streams its parts into the temporary file (`upload.rs`).
//! - A get reads ranges of up to [`READ_CHUNK`] bytes, [`READ_AHEAD`] of them in flight.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, BoxStream};
use futures::{FutureExt, StreamExt, TryFutureExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    Attributes, CopyMode, CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult,
    MultipartUpload, ObjectMeta, ObjectStore, PutMode, PutMultipartOptions, PutOptions, PutPayload,
    PutResult,
};
use smb2::{DirectoryEntry, FileInfo};

use crate::error::store_error;
use crate::share::{self, Replace, Share, date_time, entry_e_tag, info_e_tag};
use crate::upload::TempFileUpload;

/// Bytes per READ request.
const READ_CHUNK: u64 = 1024 * 1024;
/// READ requests in flight per get.
const READ_AHEAD: usize = 4;
/// Folders listed, or files deleted, at once.
const FAN_OUT: usize = 8;

#[derive(Debug)]
pub(crate) struct SmbStore {
    share: Arc<Share>,
}

impl SmbStore {
    pub(crate) fn new(share: Arc<Share>) -> Self {
        SmbStore { share }
    }
}

impl fmt::Display for SmbStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SMB({})", self.share)
    }
}

/// A listed name as a key: the name itself, as the adapter builds its keys.
fn location_of(name: &str) -> Path {
    Path::parse(name).unwrap_or_else(|_| Path::from_iter(name.split('/')))
}

fn child(dir: &str, name: &str) -> String {
    match dir {
        "" => name.to_string(),
        dir => format!("{dir}/{name}"),
    }
}

fn meta_of_info(location: &Path, info: &FileInfo) -> ObjectMeta {
    ObjectMeta {
        location: location.clone(),
        last_modified: date_time(info.modified),
        size: info.size,
        e_tag: Some(info_e_tag(info)),
        version: None,
    }
}

fn meta_of_entry(dir: &str, entry: &DirectoryEntry) -> ObjectMeta {
    ObjectMeta {
        location: location_of(&child(dir, &entry.name)),
        last_modified: date_time(entry.modified),
        size: entry.size,
        e_tag: Some(entry_e_tag(entry)),
        version: None,
    }
}

fn not_found(location: &Path) -> object_store::Error {
    object_store::Error::NotFound {
        path: location.to_string(),
        source: format!("no file {location}").into(),
    }
}

fn replace_for(mode: PutMode) -> Replace {
    match mode {
        PutMode::Overwrite => Replace::Any,
        PutMode::Create => Replace::Absent,
        PutMode::Update(v) => Replace::Matching(v.e_tag),
    }
}

impl SmbStore {
    /// Every file under `dir` (recursively), folder by folder, [`FAN_OUT`] folders at a time.
    async fn walk(share: Arc<Share>, dir: String) -> object_store::Result<Vec<ObjectMeta>> {
        let mut files = Vec::new();
        let mut level = vec![dir];
        while !level.is_empty() {
            let listed: Vec<(String, Option<Vec<DirectoryEntry>>)> = stream::iter(level)
                .map(|d| {
                    let share = share.clone();
                    async move { share.list_dir(&d).await.map(|e| (d, e)) }
                })
                .buffer_unordered(FAN_OUT)
                .try_collect()
                .await?;
            level = Vec::new();
            for (d, entries) in listed {
                for e in entries.into_iter().flatten() {
                    if share::is_bookkeeping(&e.name) {
                        continue;
                    }
                    if e.is_directory {
                        level.push(child(&d, &e.name));
                    } else {
                        files.push(meta_of_entry(&d, &e));
                    }
                }
            }
        }
        Ok(files)
    }

    /// Writes `payload` to a temporary file and commits it to `location`.
    async fn put_whole(
        &self,
        location: &Path,
        payload: PutPayload,
        replace: Replace,
    ) -> object_store::Result<PutResult> {
        let key = location.as_ref();
        let temp = share::temp_for(key);
        let mut writer = self.share.create_temp(&temp).await?;
        let mut written: Result<(), smb2::Error> = Ok(());
        for chunk in payload.iter() {
            written = writer.write_chunk(chunk).await;
            if written.is_err() {
                break;
            }
        }
        let finished = match written {
            Ok(()) => writer.finish().await.map(drop),
            Err(e) => {
                let _ = writer.abort().await;
                Err(e)
            }
        };
        if let Err(e) = finished {
            self.share.discard(&temp).await;
            return Err(store_error(format!("writing {key}"), key, e));
        }
        let e_tag = self.share.commit(&temp, key, replace).await?;
        Ok(PutResult {
            e_tag: Some(e_tag),
            version: None,
            extensions: Default::default(),
        })
    }
}

#[async_trait]
impl ObjectStore for SmbStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.put_whole(location, payload, replace_for(opts.mode))
            .await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        _opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let key = location.as_ref().to_string();
        let temp = share::temp_for(&key);
        let writer = self.share.create_temp(&temp).await?;
        Ok(Box::new(TempFileUpload::new(
            self.share.clone(),
            writer,
            temp,
            key,
            Replace::Any,
        )))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let key = location.as_ref();
        if options.head {
            let info = self
                .share
                .stat(key)
                .await?
                .ok_or_else(|| not_found(location))?;
            let meta = meta_of_info(location, &info);
            options.check_preconditions(&meta)?;
            return Ok(GetResult {
                payload: GetResultPayload::Stream(stream::empty().boxed()),
                range: 0..meta.size,
                meta,
                attributes: Attributes::default(),
                extensions: Default::default(),
            });
        }
        // The ETag comes from the open itself, so it names exactly the bytes read.
        let reader = self.share.open_reader(key).await?;
        let info = reader.info().clone();
        if info.is_directory {
            return Err(not_found(location));
        }
        let meta = meta_of_info(location, &info);
        options.check_preconditions(&meta)?;
        let range = match &options.range {
            Some(r) => r
                .as_range(meta.size)
                .map_err(|e| object_store::Error::Generic {
                    store: "SMB",
                    source: Box::new(e),
                })?,
            None => 0..meta.size,
        };
        let returned = range.clone();
        let reader = Arc::new(reader);
        let path = key.to_string();
        let chunks = (range.start..range.end)
            .step_by(READ_CHUNK as usize)
            .map(move |at| (at, READ_CHUNK.min(range.end - at)));
        let body = stream::iter(chunks)
            .map(move |(at, len)| {
                let reader = reader.clone();
                let path = path.clone();
                async move {
                    let data = reader
                        .read_at(at, len)
                        .await
                        .map_err(|e| store_error(format!("reading {path}"), &path, e))?;
                    if data.len() as u64 != len {
                        return Err(object_store::Error::Generic {
                            store: "SMB",
                            source: format!("{path} changed while it was read").into(),
                        });
                    }
                    Ok(Bytes::from(data))
                }
            })
            .buffered(READ_AHEAD);
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
        let share = self.share.clone();
        locations
            .map(move |location| {
                let share = share.clone();
                async move {
                    let location = location?;
                    share.delete(location.as_ref()).await?;
                    Ok(location)
                }
            })
            .buffered(FAN_OUT)
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let dir = prefix.map_or(String::new(), |p| p.as_ref().to_string());
        Self::walk(self.share.clone(), dir)
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
        for e in self.share.list_dir(&dir).await?.into_iter().flatten() {
            if share::is_bookkeeping(&e.name) {
                continue;
            }
            if e.is_directory {
                out.common_prefixes.push(location_of(&child(&dir, &e.name)));
            } else {
                out.objects.push(meta_of_entry(&dir, &e));
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
        let replace = match options.mode {
            CopyMode::Overwrite => Replace::Any,
            CopyMode::Create => Replace::Absent,
        };
        let mut body = self
            .get_opts(from, GetOptions::default())
            .await?
            .into_stream();
        let key = to.as_ref().to_string();
        let temp = share::temp_for(&key);
        let writer = self.share.create_temp(&temp).await?;
        let mut upload = TempFileUpload::new(self.share.clone(), writer, temp, key, replace);
        while let Some(chunk) = body.next().await {
            let sent = match chunk {
                Ok(data) => upload.put_part(data.into()).await,
                Err(e) => Err(e),
            };
            if let Err(e) = sent {
                let _ = upload.abort().await;
                return Err(e);
            }
        }
        upload.complete().await.map(drop)
    }
}
