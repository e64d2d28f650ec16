//! OCI registry blocks ("Docker storage" without Docker): a version is an OCI artifact, an
//! image manifest of its own artifact type tagged with the version id, whose layers are the
//! packs of package format 3 (format 2: its frames, in order), each titled so that artifact
//! clients such as oras pull them as files, and whose config blob is the blockctl manifest. The tag `current` is moved
//! last, as HEAD (carrying a signing block's signed HEAD record; manifest signatures are
//! artifacts tagged `<version>.sig`). The slug path names the repository below the block's
//! `repository`.

mod artifact;
mod block;
mod registry;
mod repository_names;

use FieldKind::{Bool, String as Text};
use serde::Deserialize;
use storage_core::slug::BlockType;
use storage_core::{BlockConfig, Capabilities, FieldKind, FieldSpec, Result, Secret, TypeSpec};

pub use block::OciBlock;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OciConfig {
    pub registry: String,
    pub repository: String,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub token: Option<Secret>,
    pub plain_http: Option<bool>,
    /// Seconds one try of a registry request may take, first byte to last ([`timeout_of`]).
    #[serde(default)]
    pub timeout: Option<i64>,
}

/// What a registry can do: versioned packages (artifacts), `current` tagged only once a
/// version is whole (atomic), old versions dropped by manifest digest. Registries ignore
/// conditional manifest writes, so there is no compare-and-swap; there is no files layout,
/// and blobs live under their digests, so package objects cannot be written one by one.
pub const CAPABILITIES: Capabilities = Capabilities {
    package_layout: true,
    files_layout: false,
    native_tree: false,
    versions: true,
    atomic_put: true,
    compare_and_swap: false,
    files_keep_metadata: false,
    gc: true,
    files_case_sensitive: true,
    raw_objects: false,
    read_only: false,
};

impl BlockConfig for OciConfig {
    const SPEC: TypeSpec = TypeSpec {
        block_type: BlockType::Oci,
        summary: "an OCI registry (Docker Hub, GHCR, Harbor, distribution...): versions as OCI artifacts",
        fields: &[
            FieldSpec::new("registry", Text, "registry host, with :port when not 443").required(),
            FieldSpec::new(
                "repository",
                Text,
                "repository name prefix (e.g. team/flows); the slug path is appended",
            )
            .required(),
            FieldSpec::new(
                "username",
                Text,
                "user name (default: ~/.docker/config.json auths)",
            ),
            FieldSpec::new("password", Text, "password, or env:NAME").secret(),
            FieldSpec::new(
                "token",
                Text,
                "bearer token instead of a password, or env:NAME",
            )
            .secret(),
            FieldSpec::new(
                "plain_http",
                Bool,
                "talk plain HTTP instead of HTTPS (default: only for 127.0.0.1, ::1 and localhost)",
            ),
            FieldSpec::timeout(
                "seconds one try of a registry request may take, first byte to last (a blob: \
                 a second more per MiB); a request with its retries ends within twice that \
                 plus 1.3 s",
            )
            .with_default("60"),
        ],
        capabilities: CAPABILITIES,
    };
}

/// The block's `timeout`: 1 to 86400 seconds, 60 when unset.
pub fn timeout_of(config: &OciConfig, label: &str) -> Result<std::time::Duration> {
    match config.timeout {
        None => Ok(storage_core::bounds::DEFAULT_TIMEOUT),
        Some(s) if (1..=86_400).contains(&s) => Ok(std::time::Duration::from_secs(s as u64)),
        Some(s) => Err(storage_core::Error::Usage(format!(
            "{label}: timeout {s} is not between 1 and 86400 seconds"
        ))),
    }
}

/// Builds the block: checks the registry and repository names, resolves the credentials.
/// Nothing is contacted yet.
pub fn open(config: &OciConfig, label: &str) -> Result<OciBlock> {
    OciBlock::new(config, label)
}
