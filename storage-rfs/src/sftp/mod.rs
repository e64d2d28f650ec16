//! SFTP: an SSH login (`session.rs`), the server folder's file operations (`remote.rs`), and
//! the object store over them (`store.rs`).

mod remote;
mod session;
mod store;

pub(crate) use session::Login;
pub(crate) use store::SftpStore;

impl SftpStore {
    /// A store on `root` (absolute, or relative to the login folder) that logs in with `login`.
    pub(crate) fn open(login: Login, root: String) -> Self {
        SftpStore::new(remote::Remote::new(session::Session::new(login), root))
    }
}
