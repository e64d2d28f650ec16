//! FTP (`ftp://`): a pool of logged-in connections and the file operations over them
//! (`remote.rs`), and the object store they make (`store.rs`).

mod remote;
mod store;

pub(crate) use remote::{Login, Remote};
pub(crate) use store::FtpStore;

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("login", &self.login)
            .finish_non_exhaustive()
    }
}
