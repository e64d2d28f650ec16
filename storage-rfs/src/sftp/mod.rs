//! SFTP: an SSH login (`session.rs`), the server folder's file operations (`remote.rs`), and
//! the object store over them (`store.rs`).

mod remote;
mod session;
mod store;

use std::sync::Arc;
use std::time::SystemTime;

use object_store::path::Path as ObjPath;
use storage_core::{Error, LeftoverSweeper, Result};

pub(crate) use session::Login;
pub(crate) use store::SftpStore;

impl SftpStore {
    /// A store on `root` (absolute, or relative to the login folder) that logs in with `login`.
    pub(crate) fn open(login: Login, root: String) -> Self {
        SftpStore::new(remote::Remote::new(session::Session::new(login), root))
    }
}

/// Removes the temporary files of uploads that never finished (they are hidden from
/// listings, so the adapter's own leftover pass cannot see them).
#[derive(Debug)]
pub(crate) struct TempFileSweeper {
    store: Arc<SftpStore>,
}

impl TempFileSweeper {
    pub(crate) fn new(store: Arc<SftpStore>) -> Self {
        TempFileSweeper { store }
    }
}

#[async_trait::async_trait]
impl LeftoverSweeper for TempFileSweeper {
    async fn sweep(&self, prefix: &ObjPath, older_than: SystemTime) -> Result<u64> {
        self.store
            .remote()
            .sweep_temps(prefix.as_ref(), older_than)
            .await
            .map_err(Error::from_store)
    }
}
