//! A temporary file written part by part: parts are written in the order they were handed
//! over (the writer keeps several WRITEs in flight); the folder store renames the finished
//! file into place, so the object appears whole or not at all. `abort` deletes it.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::FutureExt;
use object_store::{PutPayload, UploadPart};
use smb2::FileWriter;
use storage_core::bounds::transfer_deadline;
use storage_folders::TempWriter;
use tokio::sync::{Mutex, oneshot};

use crate::error::store_error;
use crate::share::{Share, within};

pub(crate) struct TempFileUpload {
    state: Arc<Mutex<WriterState>>,
    /// The key the file goes to, as messages name it.
    key: String,
    /// The block's `timeout`.
    limit: Duration,
    /// Fires when the part handed over last has been written (or given up).
    last: Option<oneshot::Receiver<()>>,
}

struct WriterState {
    writer: Option<FileWriter>,
    failed: bool,
}

impl TempFileUpload {
    fn new(limit: Duration, writer: FileWriter, key: String) -> Self {
        TempFileUpload {
            state: Arc::new(Mutex::new(WriterState {
                writer: Some(writer),
                failed: false,
            })),
            key,
            limit,
            last: None,
        }
    }

    async fn wait_for_parts(&mut self) {
        if let Some(previous) = self.last.take() {
            // An error only means the previous part's task went away.
            let _ = previous.await;
        }
    }

    fn failed(&self) -> object_store::Error {
        object_store::Error::Generic {
            store: "SMB",
            source: format!("a part of {} could not be written", self.key).into(),
        }
    }
}

impl fmt::Debug for TempFileUpload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TempFileUpload")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl TempWriter<Share> for TempFileUpload {
    async fn create(share: &Share, temp: &str, key: &str) -> object_store::Result<Self> {
        let writer = share.create_temp(temp).await?;
        Ok(TempFileUpload::new(
            share.timeout(),
            writer,
            key.to_string(),
        ))
    }

    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let (done, next) = oneshot::channel::<()>();
        let previous = self.last.replace(next);
        let state = self.state.clone();
        let key = self.key.clone();
        let limit = self.limit;
        async move {
            if let Some(previous) = previous {
                let _ = previous.await;
            }
            let mut guard = state.lock().await;
            let state = &mut *guard;
            let result = match (&mut state.writer, state.failed) {
                (Some(writer), false) => {
                    let mut result = Ok(());
                    for chunk in data.iter() {
                        let deadline = transfer_deadline(limit, chunk.len() as u64);
                        result = within(deadline, writer.write_chunk(chunk)).await;
                        if result.is_err() {
                            break;
                        }
                    }
                    result.map_err(|e| store_error(format!("writing {key}"), &key, e))
                }
                _ => Err(object_store::Error::Generic {
                    store: "SMB",
                    source: format!("an earlier part of {key} failed").into(),
                }),
            };
            state.failed |= result.is_err();
            drop(done);
            result
        }
        .boxed()
    }

    async fn finish(&mut self, _share: &Share, _temp: &str) -> object_store::Result<()> {
        self.wait_for_parts().await;
        let (writer, failed) = {
            let mut state = self.state.lock().await;
            (state.writer.take(), state.failed)
        };
        let Some(writer) = writer.filter(|_| !failed) else {
            return Err(self.failed());
        };
        within(self.limit, writer.finish())
            .await
            .map(drop)
            .map_err(|e| store_error(format!("writing {}", self.key), &self.key, e))
    }

    async fn abort(&mut self, share: &Share, temp: &str) {
        self.wait_for_parts().await;
        let writer = {
            let mut state = self.state.lock().await;
            state.failed = true;
            state.writer.take()
        };
        if let Some(writer) = writer {
            let _ = within(self.limit, writer.abort()).await;
        }
        share.discard(temp).await;
    }
}
