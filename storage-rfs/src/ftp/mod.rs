//! FTP (`ftp://`): the block's login (here), a pool of logged-in connections and the file
//! operations over them (`client.rs`), and the primitives the one folder store is built from
//! (`protocol.rs`).

mod client;
mod protocol;

use std::sync::Arc;

use storage_core::Result;

use crate::{RfsConfig, Target, password_login, timeout};
use client::{Login, Remote};

/// A folder on an FTP server as an object store.
pub(crate) type FtpStore = storage_folders::FolderStore<Remote>;

/// The store of `target`'s folder, logged in as the block says (anonymous without a
/// username), and the secrets to keep out of messages.
pub(crate) fn store(
    config: &RfsConfig,
    target: &Target,
    label: &str,
) -> Result<(FtpStore, Vec<String>)> {
    let (username, password, secrets) = password_login(config, target, label)?;
    let login = Login {
        host: target.host.clone(),
        port: target.port,
        username: username.unwrap_or_else(|| "anonymous".into()),
        password: password.unwrap_or_default(),
        timeout: timeout(config, label)?,
    };
    let remote = Remote::new(login, target.path.clone());
    Ok((FtpStore::new(Arc::new(remote)), secrets))
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("login", &self.login)
            .finish_non_exhaustive()
    }
}
