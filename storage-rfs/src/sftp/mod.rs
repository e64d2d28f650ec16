//! SFTP: an SSH login (`session.rs`), the server folder's file operations (`remote.rs`), and
//! the primitives the one folder store is built from (`protocol.rs`).

mod protocol;
mod remote;
mod session;

pub(crate) use session::Login;

/// A folder on an SFTP server as an object store.
pub(crate) type SftpStore = storage_folders::FolderStore<remote::Remote>;

/// A store on `root` (absolute, or relative to the login folder) that logs in with `login`.
pub(crate) fn open(login: Login, root: String) -> SftpStore {
    let remote = remote::Remote::new(session::Session::new(login), root);
    SftpStore::new(std::sync::Arc::new(remote))
}
