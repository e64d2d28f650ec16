//! SMB blocks: configuration and capabilities. The pure-Rust SMB client is built in issue 4.

use FieldKind::{Integer, String as Text};
use serde::Deserialize;
use storage_core::slug::BlockType;
use storage_core::{BlockConfig, Capabilities, FieldKind, FieldSpec, Secret, TypeSpec};

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
}

const fn field(
    name: &'static str,
    kind: FieldKind,
    required: bool,
    secret: bool,
    default: Option<&'static str>,
    help: &'static str,
) -> FieldSpec {
    FieldSpec {
        name,
        kind,
        required,
        secret,
        default,
        help,
    }
}

impl BlockConfig for SmbConfig {
    const SPEC: TypeSpec = TypeSpec {
        block_type: BlockType::Smb,
        summary: "an SMB 2/3 share",
        fields: &[
            field(
                "host",
                Text,
                true,
                false,
                None,
                "server host name or address",
            ),
            field("share", Text, true, false, None, "share name"),
            field("port", Integer, false, false, Some("445"), "TCP port"),
            field(
                "prefix",
                Text,
                false,
                false,
                None,
                "folder inside the share",
            ),
            field("username", Text, false, false, None, "user name"),
            field("password", Text, false, true, None, "password, or env:NAME"),
            field("domain", Text, false, false, None, "domain or workgroup"),
        ],
        capabilities: Capabilities {
            package_layout: true,
            files_layout: true,
            versions: true,
            atomic_put: true,
            compare_and_swap: false,
            files_keep_metadata: false,
            gc: true,
            native_tree: false,
        },
    };
}
