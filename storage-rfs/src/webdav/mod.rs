//! WebDAV (`webdav+http://`, `webdav+https://`): the requests (`client.rs`), with basic-auth
//! logins over reqwest, and the primitives the one folder store is built from
//! (`protocol.rs`).

mod client;
mod protocol;

pub(crate) use client::Dav;

/// A folder on a WebDAV server as an object store.
pub(crate) type DavStore = storage_folders::FolderStore<Dav>;
