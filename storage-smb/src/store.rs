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
use futures::StreamExt;
use futures::stream::{self, BoxStream};
use object_store::path::Path;
use object_store::{
    Attributes, CopyMode, CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult,
    MultipartUpload, ObjectMeta, ObjectStore, PutMode, PutMultipartOptions, PutOptions, PutPayload,
    PutResult,
};
use smb2::{DirectoryEntry, FileInfo};

use crate::error::store_error;
use storage_folders::{self as folders, Folders, Listed, location_of};

use crate::share::{self, Replace, Share, date_time, entry_e_tag, info_e_tag, within};
use crate::upload::TempFileUpload;
use storage_core::bounds::transfer_deadline;

/// Bytes per READ request.
const READ_CHUNK: u64 = 1024 * 1024;
/// READ requests in flight per get.
const READ_AHEAD: usize = 4;

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
        let limit = self.share.timeout();
        let mut written: Result<(), smb2::Error> = Ok(());
        for chunk in payload.iter() {
            let deadline = transfer_deadline(limit, chunk.len() as u64);
            written = within(deadline, writer.write_chunk(chunk)).await;
            if written.is_err() {
                break;
            }
        }
        let finished = match written {
            Ok(()) => within(limit, writer.finish()).await.map(drop),
            Err(e) => {
                let _ = within(limit, writer.abort()).await;
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
        let limit = self.share.timeout();
        let chunks = (range.start..range.end)
            .step_by(READ_CHUNK as usize)
            .map(move |at| (at, READ_CHUNK.min(range.end - at)));
        let body = stream::iter(chunks)
            .map(move |(at, len)| {
                let reader = reader.clone();
                let path = path.clone();
                async move {
                    // Each piece within its own deadline, from when it is asked for.
                    let data = within(transfer_deadline(limit, len), reader.read_at(at, len))
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
        folders::delete_stream(self.share.clone(), locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        folders::list(self.share.clone(), prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        folders::list_with_delimiter(&*self.share, prefix).await
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

#[async_trait::async_trait]
impl Folders for Share {
    const FAN_OUT: usize = 8;

    async fn entries(&self, dir: &str) -> Result<Option<Vec<Listed>>, object_store::Error> {
        let found = self.list_dir(dir).await?;
        Ok(found.map(|entries| {
            entries
                .iter()
                .map(|e| match e.is_directory {
                    true => Listed::Folder(child(dir, &e.name)),
                    false => {
                        let meta = meta_of_entry(dir, e);
                        Listed::File {
                            modified: Some(meta.last_modified.into()),
                            meta,
                        }
                    }
                })
                .collect()
        }))
    }

    async fn delete(&self, key: &str) -> Result<(), object_store::Error> {
        Share::delete(self, key).await
    }

    async fn remove_temp(&self, key: &str) -> Result<(), object_store::Error> {
        self.remove_file(key).await
    }
}
