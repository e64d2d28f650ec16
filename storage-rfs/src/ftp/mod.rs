//! FTP (`ftp://`): a pool of logged-in connections and the file operations over them
//! (`remote.rs`), and the object store they make (`store.rs`).

mod remote;
mod store;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use object_store::path::Path as ObjPath;
use storage_core::{Error, LeftoverSweeper, Result};

pub(crate) use remote::{Login, Remote};
pub(crate) use store::FtpStore;

use crate::bookkeeping::TEMP_MARK;

/// Removes the temporary files of uploads that never finished (they are hidden from
/// listings, so the adapter's own leftover pass cannot see them).
#[derive(Debug)]
pub(crate) struct TempFileSweeper {
    remote: Arc<Remote>,
}

impl TempFileSweeper {
    pub(crate) fn new(remote: Arc<Remote>) -> Self {
        TempFileSweeper { remote }
    }

    async fn sweep_temps(&self, dir: &str, older_than: SystemTime) -> object_store::Result<u64> {
        let mut removed = 0;
        let mut level = vec![dir.to_string()];
        while let Some(d) = level.pop() {
            for f in self.remote.list_dir(&d).await?.into_iter().flatten() {
                let name = f.key.rsplit('/').next().unwrap_or_default();
                if f.folder {
                    level.push(f.key);
                } else if name.starts_with(TEMP_MARK)
                    && f.modified()
                        .is_some_and(|m| SystemTime::from(m) < older_than)
                {
                    self.remote.remove(&f.key).await?;
                    removed += 1;
                }
            }
        }
        Ok(removed)
    }
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("login", &self.login)
            .finish_non_exhaustive()
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
