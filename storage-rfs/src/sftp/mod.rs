//! SFTP (`sftp://`): the block's login (here: a key or a password, host keys checked against
//! known_hosts), the SSH connection (`session.rs`), the server folder's file operations
//! (`client.rs`), and the primitives the one folder store is built from (`protocol.rs`).

mod client;
mod protocol;
mod session;

use std::sync::Arc;

use storage_core::{Error, Result};

use crate::{RfsConfig, Target, expand_home, timeout};
use client::Remote;
use session::{Login, Session};

/// A folder on an SFTP server as an object store.
pub(crate) type SftpStore = storage_folders::FolderStore<Remote>;

/// The store of `target`'s folder, logged in with the block's key (a file or the key
/// itself) or password, and the secrets to keep out of messages.
pub(crate) fn store(
    config: &RfsConfig,
    target: &Target,
    label: &str,
) -> Result<(SftpStore, Vec<String>)> {
    let mut secrets = Vec::new();
    let mut keep = |s: String| {
        if !s.is_empty() {
            secrets.push(s.clone());
        }
        s
    };
    let password = match (&config.password, &target.password) {
        (Some(p), _) => Some(keep(p.resolve("password")?)),
        (None, Some(p)) => Some(keep(p.clone())),
        (None, None) => None,
    };
    let key_text = match (&config.private_key, &config.private_key_path) {
        (Some(_), Some(_)) => {
            return Err(Error::Usage(format!(
                "{label}: set private_key or private_key_path, not both"
            )));
        }
        (Some(k), None) => Some(keep(k.resolve("private_key")?)),
        (None, Some(path)) => {
            let path = expand_home(path);
            Some(std::fs::read_to_string(&path).map_err(|e| {
                Error::Usage(format!(
                    "{label}: cannot read private_key_path {}: {e}",
                    path.display()
                ))
            })?)
        }
        (None, None) => None,
    };
    let key = key_text
        .map(|text| {
            russh::keys::decode_secret_key(&text, password.as_deref())
                .map_err(|e| Error::Usage(format!("{label}: the private key cannot be read: {e}")))
        })
        .transpose()?;
    let username = config
        .username
        .clone()
        .or_else(|| target.username.clone())
        .or_else(|| std::env::var("USER").ok())
        .filter(|u| !u.is_empty())
        .ok_or_else(|| Error::Usage(format!("{label}: no username (--set username=...)")))?;
    let known_hosts = expand_home(
        config
            .known_hosts
            .as_deref()
            .unwrap_or("~/.ssh/known_hosts"),
    );
    let login = Login {
        host: target.host.clone(),
        port: target.port,
        username,
        password,
        key: key.map(Arc::new),
        known_hosts,
        accept_unknown_host_key: config.insecure_accept_host_key.unwrap_or(false),
        timeout: timeout(config, label)?,
    };
    let remote = Remote::new(Session::new(login), target.path.clone());
    Ok((SftpStore::new(Arc::new(remote)), secrets))
}
