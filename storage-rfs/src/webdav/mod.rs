//! WebDAV (`webdav+http://`, `webdav+https://`): the requests (`client.rs`) and the object
//! store over them (`store.rs`), with basic-auth logins over reqwest.

mod client;
mod store;

pub(crate) use client::Dav;
pub(crate) use store::DavStore;
