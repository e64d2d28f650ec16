//! Azure Blob blocks: configuration and capabilities. The object_store client is built in
//! issue 3.

use FieldKind::{Bool, String as Text};
use serde::Deserialize;
use storage_core::slug::BlockType;
use storage_core::{BlockConfig, Capabilities, FieldKind, FieldSpec, Secret, TypeSpec};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureConfig {
    pub container: String,
    pub prefix: Option<String>,
    pub account: Option<String>,
    pub access_key: Option<Secret>,
    pub connection_string: Option<Secret>,
    pub sas_token: Option<Secret>,
    pub endpoint: Option<String>,
    pub use_emulator: Option<bool>,
}

const fn field(
    name: &'static str,
    kind: FieldKind,
    required: bool,
    secret: bool,
    help: &'static str,
) -> FieldSpec {
    FieldSpec {
        name,
        kind,
        required,
        secret,
        default: None,
        help,
    }
}

impl BlockConfig for AzureConfig {
    const SPEC: TypeSpec = TypeSpec {
        block_type: BlockType::Azure,
        summary: "an Azure Blob Storage container",
        fields: &[
            field("container", Text, true, false, "container name"),
            field(
                "prefix",
                Text,
                false,
                false,
                "blob name prefix inside the container",
            ),
            field("account", Text, false, false, "storage account name"),
            field("access_key", Text, false, true, "account key, or env:NAME"),
            field(
                "connection_string",
                Text,
                false,
                true,
                "connection string, or env:NAME",
            ),
            field("sas_token", Text, false, true, "SAS token, or env:NAME"),
            field("endpoint", Text, false, false, "blob endpoint URL"),
            field(
                "use_emulator",
                Bool,
                false,
                false,
                "talk to Azurite with its well-known account",
            ),
        ],
        capabilities: Capabilities {
            package_layout: true,
            files_layout: true,
            versions: true,
            atomic_put: true,
            compare_and_swap: true,
            files_keep_metadata: false,
            gc: true,
        },
    };
}
