//! FTP (`ftp://`): a pool of logged-in connections and the file operations over them
//! (`remote.rs`), and the primitives the one folder store is built from (`protocol.rs`).

mod protocol;
mod remote;

pub(crate) use remote::{Login, Remote};

/// A folder on an FTP server as an object store.
pub(crate) type FtpStore = storage_folders::FolderStore<Remote>;

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("login", &self.login)
            .finish_non_exhaustive()
    }
}
