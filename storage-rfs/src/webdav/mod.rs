//! WebDAV (`webdav+http://`, `webdav+https://`): the requests (`client.rs`) and the object
//! store over them (`store.rs`), with basic-auth logins over reqwest.

mod client;
mod store;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use object_store::path::Path as ObjPath;
use storage_core::{Error, LeftoverSweeper, Result};

pub(crate) use client::Dav;
pub(crate) use store::DavStore;

use crate::bookkeeping::TEMP_MARK;

/// Removes the temporary files of uploads that never finished (they are hidden from
/// listings, so the adapter's own leftover pass cannot see them).
#[derive(Debug)]
pub(crate) struct TempFileSweeper {
    dav: Arc<Dav>,
}

impl TempFileSweeper {
    pub(crate) fn new(dav: Arc<Dav>) -> Self {
        TempFileSweeper { dav }
    }

    async fn sweep_temps(&self, dir: &str, older_than: SystemTime) -> object_store::Result<u64> {
        let mut removed = 0;
        let mut level = vec![dir.to_string()];
        while let Some(d) = level.pop() {
            for e in self.dav.list_dir(&d).await?.into_iter().flatten() {
                let name = e.key.rsplit('/').next().unwrap_or_default();
                if e.folder {
                    level.push(e.key);
                } else if name.starts_with(TEMP_MARK)
                    && e.modified.is_some_and(|m| SystemTime::from(m) < older_than)
                {
                    self.dav.delete(&e.key, false).await?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }
}

#[async_trait::async_trait]
impl LeftoverSweeper for TempFileSweeper {
    async fn sweep(&self, prefix: &ObjPath, older_than: SystemTime) -> Result<u64> {
        // Modification times are whole seconds.
        let older_than = older_than - Duration::from_secs(1);
        self.sweep_temps(prefix.as_ref(), older_than)
            .await
            .map_err(Error::from_store)
    }
}
