//! WebDAV (`webdav+http://`, `webdav+https://`): the block's login (here, basic auth), the
//! requests over reqwest (`client.rs`), and the primitives the one folder store is built from
//! (`protocol.rs`).

mod client;
mod protocol;

use std::sync::Arc;

use storage_core::{Error, Result};

use crate::{RfsConfig, Target, password_login, timeout};
use client::Dav;

/// A folder on a WebDAV server as an object store.
pub(crate) type DavStore = storage_folders::FolderStore<Dav>;

/// The store of `target`'s folder, logged in as the block says, and the secrets to keep out
/// of messages.
pub(crate) fn store(
    config: &RfsConfig,
    target: &Target,
    label: &str,
) -> Result<(DavStore, Vec<String>)> {
    let (username, password, secrets) = password_login(config, target, label)?;
    let dav = Dav::new(
        target.folder_url.clone(),
        username,
        password,
        timeout(config, label)?,
    )
    .map_err(|e| Error::from_store(e).context(label))?;
    Ok((DavStore::new(Arc::new(dav)), secrets))
}
