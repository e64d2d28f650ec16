//! Remote file system blocks (Prefect's `RemoteFileSystem`): one `basepath` URL whose scheme
//! picks the protocol. Each protocol is an object store under the generic adapter, so
//! packages, HEAD, the files layout, versions and gc are storage-core's; what is here is the
//! URL, the login, and what each protocol needs to keep the adapter's promises.
//!
//! - `sftp://` (`sftp/`): pure-Rust SSH (`russh` + `russh-sftp`), password or key logins,
//!   host keys checked against a known_hosts file. Writes go to a temporary file renamed over
//!   the target (OpenSSH's `posix-rename`), and the HEAD compare-and-swap runs under a lock
//!   file every writer takes, as storage-smb does for SMB.
//! - `webdav+http://`, `webdav+https://` (`webdav/`): reqwest with basic auth. A put goes to a
//!   temporary file MOVEd over the key under a lock folder (MKCOL, which only one writer
//!   can make); conditional puts compare the server's ETag under that lock.
//! - `ftp://` (`ftp/`): suppaftp on tokio, passive mode. A put STORes a temporary file and
//!   renames it over the key (RNTO replaces in one step) under a lock folder (MKD).
//! - `http://`, `https://` (`http.rs`): read-only; packages by plain GETs, a files layout
//!   through the server's directory listing.
//!
//! Why russh and not opendal's `services-sftp`: that service drives the system `ssh` binary
//! and has no password login, which Prefect's RemoteFileSystem users rely on.

mod basepath;
mod body;
mod ftp;
mod http;
mod http_folder;
mod sftp;
mod webdav;

use std::path::PathBuf;
use std::sync::Arc;

use std::time::Duration;

use FieldKind::{Bool, Integer, String as Text};
use serde::Deserialize;
use storage_core::slug::BlockType;
use storage_core::{
    BlockConfig, Capabilities, Error, FieldKind, FieldSpec, ObjectStoreBlock, Result, Secret,
    TypeSpec,
};
use storage_folders::FolderStore;

pub use basepath::{Protocol, Target};

/// The `object_store` crate whose trait [`open_store`] implements.
pub use object_store;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RfsConfig {
    pub basepath: String,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub private_key_path: Option<String>,
    pub private_key: Option<Secret>,
    pub known_hosts: Option<String>,
    pub insecure_accept_host_key: Option<bool>,
    pub timeout: Option<i64>,
}

impl BlockConfig for RfsConfig {
    const SPEC: TypeSpec = TypeSpec {
        block_type: BlockType::RemoteFileSystem,
        summary: "a folder on a remote file system, by URL. sftp://[user@]host[:port]/path \
                  (an absolute path; /~/path is below the login folder): both layouts, \
                  versions, atomic put (temp file + rename), compare-and-swap under a lock \
                  file, gc. webdav+http(s)://host[:port]/path (basic auth): both layouts, \
                  versions, atomic put (temp file + MOVE under a lock; readers wait out a \
                  swap), compare-and-swap of the ETag under a lock folder (MKCOL), gc. \
                  http(s)://host/path: read-only (get, cat, ls, versions of what a web \
                  server serves; a files layout needs its directory listing), no put, rm, gc \
                  or compare-and-swap. ftp://host[:port]/path (plain FTP, passive): both \
                  layouts, versions, atomic put (temp file + RNFR/RNTO under a lock), \
                  compare-and-swap of MLST facts under a lock folder (MKD), gc; the server \
                  must offer MLST and MFMT",
        fields: &[
            FieldSpec::new("basepath", Text, "URL of the folder: sftp://[user@]host[:port]/path, webdav+http(s)://host[:port]/path, ftp://host[:port]/path, or http(s)://host/path (read-only)").required(),
            FieldSpec::new("username", Text, "login name (else the URL's; else $USER for sftp://, anonymous for ftp://)"),
            FieldSpec::new("password", Text, "password, or env:NAME (also decrypts an encrypted private key)").secret(),
            FieldSpec::new("private_key_path", Text, "OpenSSH private key file for a key login"),
            FieldSpec::new("private_key", Text, "OpenSSH private key text, or env:NAME").secret(),
            FieldSpec::new("known_hosts", Text, "known_hosts file the server's host key must be in").with_default("~/.ssh/known_hosts"),
            FieldSpec::new("insecure_accept_host_key", Bool, "accept a host key that known_hosts does not list (a changed key is still refused)").with_default("false"),
            FieldSpec::new("timeout", Integer, "seconds one request (or the login) may take before it fails").with_default("60"),
        ],
        capabilities: SFTP_CAPABILITIES,
    };
}

/// SFTP: both layouts, versions, an atomic HEAD swap by rename, a compare-and-swap under a
/// lock file every writer takes, gc; a files layout keeps only files.
pub const SFTP_CAPABILITIES: Capabilities = Capabilities::OBJECT_STORE;

/// Read-only HTTP(S): both layouts and versions can be read; nothing can be written,
/// swapped or dropped (a put, rm or gc is refused as unsupported, exit 2).
pub const HTTP_CAPABILITIES: Capabilities = Capabilities {
    atomic_put: false,
    compare_and_swap: false,
    gc: false,
    read_only: true,
    ..Capabilities::OBJECT_STORE
};

/// WebDAV: what SFTP can do. Puts go to a temporary file MOVEd over the key under a lock
/// (a lock folder made by MKCOL), and the compare-and-swap checks the ETag under that lock.
pub const WEBDAV_CAPABILITIES: Capabilities = Capabilities::OBJECT_STORE;

/// FTP: what SFTP can do. Puts STOR a temporary file renamed (RNFR/RNTO) over the key under
/// a lock folder (MKD); the compare-and-swap checks the MLST facts under that lock.
pub const FTP_CAPABILITIES: Capabilities = Capabilities::OBJECT_STORE;

/// The capabilities of a block whose basepath uses `protocol`.
pub fn capabilities(protocol: Protocol) -> Capabilities {
    match protocol {
        Protocol::Sftp => SFTP_CAPABILITIES,
        Protocol::Http => HTTP_CAPABILITIES,
        Protocol::WebDav => WEBDAV_CAPABILITIES,
        Protocol::Ftp => FTP_CAPABILITIES,
    }
}

/// Builds the block. Nothing is sent until the first operation, which logs in.
pub fn open(config: &RfsConfig, label: &str) -> Result<ObjectStoreBlock> {
    let _ = timeout(config, label)?;
    let target = Target::parse(&config.basepath, label)?;
    let caps = capabilities(target.protocol);
    match target.protocol {
        Protocol::Sftp => folder_block(sftp::store(config, &target, label)?, label, caps),
        Protocol::WebDav => folder_block(webdav::store(config, &target, label)?, label, caps),
        Protocol::Ftp => folder_block(ftp::store(config, &target, label)?, label, caps),
        Protocol::Http => {
            let (store, secrets) = http_store(config, &target, label)?;
            Ok(ObjectStoreBlock::new(store, "", label, caps).with_secrets(secrets))
        }
    }
}

/// The block of a folder store and its secrets, with the sweeper of the temporary files
/// that killed uploads left.
fn folder_block<P: storage_folders::Protocol>(
    (store, secrets): (FolderStore<P>, Vec<String>),
    label: &str,
    caps: Capabilities,
) -> Result<ObjectStoreBlock> {
    let sweeper = Arc::new(store.sweeper());
    Ok(ObjectStoreBlock::new(Arc::new(store), "", label, caps)
        .with_secrets(secrets)
        .with_sweeper(sweeper))
}

/// The object store under [`open`]'s block (keys are relative to the basepath's folder),
/// for tools and tests that work on files directly.
pub fn open_store(config: &RfsConfig, label: &str) -> Result<Arc<dyn object_store::ObjectStore>> {
    let target = Target::parse(&config.basepath, label)?;
    Ok(match target.protocol {
        Protocol::Sftp => Arc::new(sftp::store(config, &target, label)?.0),
        Protocol::WebDav => Arc::new(webdav::store(config, &target, label)?.0),
        Protocol::Ftp => Arc::new(ftp::store(config, &target, label)?.0),
        Protocol::Http => http_store(config, &target, label)?.0,
    })
}

/// Username and password of an http(s)://, webdav+http(s):// or ftp:// block (the fields
/// first, else the URL's), and the secrets to keep out of messages.
pub(crate) fn password_login(
    config: &RfsConfig,
    target: &Target,
    label: &str,
) -> Result<(Option<String>, Option<String>, Vec<String>)> {
    if config.private_key.is_some() || config.private_key_path.is_some() {
        return Err(Error::Usage(format!(
            "{label}: private keys are for sftp://; this URL takes username and password"
        )));
    }
    let password = match (&config.password, &target.password) {
        (Some(p), _) => Some(p.resolve("password")?),
        (None, Some(p)) => Some(p.clone()),
        (None, None) => None,
    };
    let username = config.username.clone().or_else(|| target.username.clone());
    let secrets = password.iter().filter(|p| !p.is_empty()).cloned().collect();
    Ok((username, password, secrets))
}

fn http_store(
    config: &RfsConfig,
    target: &Target,
    label: &str,
) -> Result<(Arc<http::HttpStore>, Vec<String>)> {
    let (username, password, secrets) = password_login(config, target, label)?;
    let store = http::HttpStore::new(
        target.folder_url.clone(),
        username,
        password,
        timeout(config, label)?,
    )
    .map_err(|e| Error::from_store(e).context(label))?;
    Ok((Arc::new(store), secrets))
}

/// The per-request timeout: `timeout` seconds, default 60.
pub(crate) fn timeout(config: &RfsConfig, label: &str) -> Result<Duration> {
    match config.timeout {
        None => Ok(Duration::from_secs(60)),
        Some(s) if (1..=86_400).contains(&s) => Ok(Duration::from_secs(s as u64)),
        Some(s) => Err(Error::Usage(format!(
            "{label}: timeout {s} is not between 1 and 86400 seconds"
        ))),
    }
}

/// `~/x` as `$HOME/x`.
pub(crate) fn expand_home(path: &str) -> PathBuf {
    match (path.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use storage_core::{BlockDocument, BlockId, StorageBlock};

    fn config(basepath: &str) -> RfsConfig {
        RfsConfig {
            basepath: basepath.into(),
            username: Some("flows".into()),
            password: Some(Secret::new("s3cr3t-pw")),
            private_key_path: None,
            private_key: None,
            known_hosts: Some("/nonexistent/known_hosts".into()),
            insecure_accept_host_key: None,
            timeout: None,
        }
    }

    #[test]
    fn every_spec_field_deserializes() {
        let id = BlockId::parse("rfs/x").unwrap();
        let settings: Vec<(String, String)> = [
            ("basepath", "sftp://nas:2222/srv/flows"),
            ("username", "u"),
            ("password", "env:RFS_PW"),
            ("private_key_path", "~/.ssh/id_ed25519"),
            ("known_hosts", "/etc/ssh/ssh_known_hosts"),
            ("insecure_accept_host_key", "true"),
            ("timeout", "5"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let doc = BlockDocument::from_settings(id, &RfsConfig::SPEC, &settings).unwrap();
        let c: RfsConfig = doc.typed().unwrap();
        assert_eq!(c.insecure_accept_host_key, Some(true));
        assert_eq!(c.basepath, "sftp://nas:2222/srv/flows");
    }

    #[test]
    fn bad_settings_are_usage_errors_that_show_no_password() {
        for bad in [
            "nas/srv/flows",
            "sftp:///srv",
            "sftp://nas:0/x",
            "gopher://nas/x",
            "sftp://nas/a/../b",
        ] {
            let err = open(&config(bad), "remote-file-system/x").unwrap_err();
            assert_eq!(err.exit_code(), 2, "{bad}: {err}");
            assert!(!err.to_string().contains("s3cr3t"), "{err}");
        }
        let with_key = RfsConfig {
            private_key: Some(Secret::new("not a key s3cr3t")),
            ..config("sftp://nas/x")
        };
        let err = open(&with_key, "remote-file-system/x").unwrap_err();
        assert_eq!(err.exit_code(), 2, "{err}");
        assert!(!err.to_string().contains("s3cr3t"), "{err}");
    }

    #[test]
    fn blocks_open_without_touching_the_network() {
        let block = open(
            &config("sftp://u:url-s3cr3t@127.0.0.1:1/srv"),
            "remote-file-system/x",
        )
        .unwrap();
        assert!(block.capabilities().compare_and_swap);
        let store = open_store(&config("sftp://127.0.0.1:1/~/flows"), "rfs/x").unwrap();
        assert!(!format!("{store:?} {store} {block:?}").contains("s3cr3t"));
    }
}
