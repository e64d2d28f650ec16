//! SMB blocks: a share on an SMB 2/3 server (Samba, Windows, a NAS) through the pure-Rust
//! `smb2` client, as the one folder store of storage-folders under the generic adapter. What
//! is the same for every store (packages, HEAD, files layout, versions, gc) lives in
//! storage-core, and what every folder store shares in storage-folders; what is SMB's own is
//! here: its primitives (`protocol.rs`) over the share (`share/`), the cross-client lock that
//! makes the HEAD swap a compare-and-swap (`share/lock.rs`), SMB errors as object_store's
//! (`error.rs`), and streamed uploads (`upload.rs`).
//!
//! `smb2` rather than the `smb` crate: `smb` 0.12's directory listing stream loses a wakeup
//! and hangs when its consumer keeps up, and it reads one block at a time; `smb2` pipelines.

mod error;
mod protocol;
mod share;
mod upload;

use std::sync::Arc;

use FieldKind::{Integer, String as Text};
use serde::Deserialize;
use storage_core::secret::resolve_optional;
use storage_core::slug::BlockType;
use storage_core::{
    BlockConfig, Capabilities, Error, FieldKind, FieldSpec, ObjectStoreBlock, Result, Secret,
    TypeSpec,
};
use storage_folders::FolderStore;

use share::{Share, Target};

/// The `object_store` crate whose trait [`open_store`] implements.
pub use object_store;

/// The SMB port when none is set.
pub const DEFAULT_PORT: u16 = 445;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmbConfig {
    pub host: String,
    pub share: String,
    pub port: Option<i64>,
    pub prefix: Option<String>,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub domain: Option<String>,
    /// Seconds one request may take, first byte to last ([`timeout_of`]).
    pub timeout: Option<i64>,
}

impl BlockConfig for SmbConfig {
    const SPEC: TypeSpec = TypeSpec {
        block_type: BlockType::Smb,
        summary: "an SMB 2/3 share",
        fields: &[
            FieldSpec::new("host", Text, "server host name or address").required(),
            FieldSpec::new("share", Text, "share name").required(),
            FieldSpec::new("port", Integer, "TCP port").with_default("445"),
            FieldSpec::new("prefix", Text, "folder inside the share"),
            FieldSpec::new("username", Text, "user name"),
            FieldSpec::new("password", Text, "password, or env:NAME").secret(),
            FieldSpec::new("domain", Text, "domain or workgroup"),
            FieldSpec::timeout(
                "seconds one request (or the logon) may take, first byte to last (a read or \
                 write: a second more per MiB)",
            )
            .with_default("60"),
        ],
        capabilities: CAPABILITIES,
    };
}

/// Both layouts, versions, an atomic HEAD swap by rename, a compare-and-swap under a lock
/// every writer takes, gc; a files layout keeps only files.
pub const CAPABILITIES: Capabilities = Capabilities {
    // Samba and Windows fold case by default: `Readme.md` and `README.md` are one file.
    files_case_sensitive: false,
    ..Capabilities::OBJECT_STORE
};

/// The block's `timeout`: 1 to 86400 seconds, 60 when unset.
pub fn timeout_of(config: &SmbConfig, label: &str) -> Result<std::time::Duration> {
    match config.timeout {
        None => Ok(storage_core::bounds::DEFAULT_TIMEOUT),
        Some(s) if (1..=86_400).contains(&s) => Ok(std::time::Duration::from_secs(s as u64)),
        Some(s) => Err(Error::Usage(format!(
            "{label}: timeout {s} is not between 1 and 86400 seconds"
        ))),
    }
}

/// Builds the block. Nothing is sent until the first operation, which logs on.
pub fn open(config: &SmbConfig, label: &str) -> Result<ObjectStoreBlock> {
    let (share, secrets) = build(config, label)?;
    let store = FolderStore::new(share);
    let sweeper = Arc::new(store.sweeper());
    let prefix = config.prefix.as_deref().unwrap_or("");
    Ok(
        ObjectStoreBlock::new(Arc::new(store), prefix, label, CAPABILITIES)
            .with_secrets(secrets)
            .with_sweeper(sweeper),
    )
}

/// The object store under [`open`]'s block (keys are paths from the share's root: the
/// block's prefix is not applied), for tools and tests that work on files directly.
pub fn open_store(config: &SmbConfig, label: &str) -> Result<Arc<dyn object_store::ObjectStore>> {
    let (share, _) = build(config, label)?;
    Ok(Arc::new(FolderStore::new(share)))
}

fn build(config: &SmbConfig, label: &str) -> Result<(Arc<Share>, Vec<String>)> {
    let host = config.host.trim();
    if host.is_empty() {
        return Err(Error::Usage(format!("{label}: host is empty")));
    }
    let share = config.share.trim().trim_matches(['/', '\\']);
    if share.is_empty() || share.contains(['/', '\\']) {
        return Err(Error::Usage(format!(
            "{label}: share `{}` is not a share name",
            config.share
        )));
    }
    let port = match config.port {
        None => DEFAULT_PORT,
        Some(p) => u16::try_from(p)
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| Error::Usage(format!("{label}: port {p} is not a TCP port")))?,
    };
    let password = resolve_optional(config.password.as_ref(), "password")?.unwrap_or_default();
    let secrets = if password.is_empty() {
        Vec::new()
    } else {
        vec![password.clone()]
    };
    // An IPv6 address needs brackets before the port.
    let addr = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let target = Target {
        addr,
        share: share.to_string(),
        username: config.username.clone().unwrap_or_default(),
        password,
        domain: config.domain.clone().unwrap_or_default(),
        timeout: timeout_of(config, label)?,
    };
    Ok((Arc::new(Share::new(target)), secrets))
}

#[cfg(test)]
mod tests {
    use super::*;
    use storage_core::{BlockDocument, BlockId, StorageBlock};

    fn config() -> SmbConfig {
        SmbConfig {
            host: "127.0.0.1".into(),
            share: "share".into(),
            port: Some(1445),
            prefix: Some("team".into()),
            username: Some("flows".into()),
            password: Some(Secret::new("s3cr3t-pw")),
            domain: None,
            timeout: None,
        }
    }

    #[test]
    fn every_spec_field_deserializes() {
        let id = BlockId::parse("smb/x").unwrap();
        let settings: Vec<(String, String)> = [
            ("host", "nas"),
            ("share", "flows"),
            ("port", "1445"),
            ("prefix", "team"),
            ("username", "u"),
            ("password", "env:SMB_PW"),
            ("domain", "WORKGROUP"),
            ("timeout", "30"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let doc = BlockDocument::from_settings(id, &SmbConfig::SPEC, &settings).unwrap();
        let c: SmbConfig = doc.typed().unwrap();
        assert_eq!((c.host.as_str(), c.port), ("nas", Some(1445)));
    }

    #[test]
    fn bad_settings_are_usage_errors_that_show_no_password() {
        for bad in [
            SmbConfig {
                port: Some(70000),
                ..config()
            },
            SmbConfig {
                share: "a/b".into(),
                ..config()
            },
            SmbConfig {
                host: " ".into(),
                ..config()
            },
            SmbConfig {
                timeout: Some(0),
                ..config()
            },
        ] {
            let err = open(&bad, "smb/x").unwrap_err();
            assert_eq!(err.exit_code(), 2, "{err}");
            assert!(!err.to_string().contains("s3cr3t"), "{err}");
        }
    }

    #[test]
    fn blocks_open_without_touching_the_network() {
        let block = open(&config(), "smb/x").unwrap();
        assert!(block.capabilities().compare_and_swap);
        let store = open_store(&config(), "smb/x").unwrap();
        assert!(!format!("{store:?} {store}").contains("s3cr3t"));
    }
}
