//! SMB's primitives for the folder store (`storage_folders::FolderStore`). Keys are
//! `/`-separated paths from the share's root; folders are made as needed and removed once
//! emptied.
//!
//! - A write goes into a temporary file beside the target, streamed part by part
//!   (`upload.rs`), and is renamed over the target under the lock every writer of that key
//!   takes (`share/lock.rs`), so a reader sees the old file or the new one, whole.
//! - A get opens the file first (the ETag comes from the open itself, so it names exactly
//!   the bytes read) and reads ranges of up to [`READ_CHUNK`] bytes, [`READ_AHEAD`] of them
//!   in flight, each within its own deadline.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::{self, BoxStream};
use object_store::{GetRange, ObjectMeta};
use smb2::{DirectoryEntry, FileInfo, FileReader};
use storage_core::bounds::transfer_deadline;
use storage_folders::key_names::child;
use storage_folders::protocol::{Protocol, not_found};
use storage_folders::{Listed, location_of};

use crate::error::store_error;
use crate::share::{Share, date_time, entry_e_tag, info_e_tag, within};
use crate::upload::TempFileUpload;

/// Bytes per READ request.
const READ_CHUNK: u64 = 1024 * 1024;
/// READ requests in flight per get.
const READ_AHEAD: usize = 4;

fn meta_of_info(key: &str, info: &FileInfo) -> ObjectMeta {
    ObjectMeta {
        location: location_of(key),
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

#[async_trait]
impl Protocol for Share {
    const FAN_OUT: usize = 8;

    type Facts = FileInfo;
    type Reader = FileReader;
    type Writer = TempFileUpload;

    fn describe(&self) -> String {
        self.to_string()
    }

    fn meta(&self, key: &str, info: &FileInfo) -> ObjectMeta {
        meta_of_info(key, info)
    }

    async fn stat(&self, key: &str) -> object_store::Result<Option<FileInfo>> {
        Share::stat(self, key).await
    }

    async fn open(
        &self,
        key: &str,
        _range: Option<&GetRange>,
    ) -> object_store::Result<(ObjectMeta, FileReader)> {
        let reader = self.open_reader(key).await?;
        let info = reader.info().clone();
        if info.is_directory {
            return Err(not_found(key));
        }
        Ok((meta_of_info(key, &info), reader))
    }

    async fn read(
        &self,
        key: &str,
        reader: FileReader,
        range: Range<u64>,
    ) -> object_store::Result<BoxStream<'static, object_store::Result<Bytes>>> {
        let reader = Arc::new(reader);
        let path = key.to_string();
        let limit = self.timeout();
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
        Ok(body.boxed())
    }

    async fn rename_over(
        &self,
        temp: &str,
        key: &str,
        old: Option<&FileInfo>,
        replace: bool,
    ) -> object_store::Result<Option<String>> {
        Share::rename_over(self, temp, key, old, replace)
            .await
            .map(Some)
    }

    async fn list(&self, dir: &str) -> object_store::Result<Option<Vec<Listed>>> {
        let found = self.list_dir(dir).await?;
        Ok(found.map(|entries| {
            entries
                .iter()
                .map(|e| match e.is_directory {
                    true => Listed::Folder {
                        key: child(dir, &e.name),
                        file_id: e.index_number,
                    },
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

    async fn remove(&self, key: &str) -> object_store::Result<()> {
        self.remove_file(key).await
    }

    async fn remove_empty_folder(&self, dir: &str) -> bool {
        self.remove_folder(dir).await
    }
}
