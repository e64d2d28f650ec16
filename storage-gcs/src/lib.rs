//! GCS blocks: configuration and capabilities. The client (opendal's GCS service under the
//! generic adapter) is built in issue 3.

use FieldKind::{Bool, String as Text};
use serde::Deserialize;
use storage_core::slug::BlockType;
use storage_core::{BlockConfig, Capabilities, FieldKind, FieldSpec, Secret, TypeSpec};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcsConfig {
    pub bucket: String,
    pub prefix: Option<String>,
    pub endpoint: Option<String>,
    pub service_account_key: Option<Secret>,
    pub service_account_path: Option<String>,
    pub anonymous: Option<bool>,
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

impl BlockConfig for GcsConfig {
    const SPEC: TypeSpec = TypeSpec {
        block_type: BlockType::Gcs,
        summary: "a Google Cloud Storage bucket",
        fields: &[
            field("bucket", Text, true, false, "bucket name"),
            field(
                "prefix",
                Text,
                false,
                false,
                "object name prefix inside the bucket",
            ),
            field(
                "endpoint",
                Text,
                false,
                false,
                "custom endpoint URL (emulators)",
            ),
            field(
                "service_account_key",
                Text,
                false,
                true,
                "service account key JSON, or env:NAME",
            ),
            field(
                "service_account_path",
                Text,
                false,
                false,
                "path to a service account key file",
            ),
            field("anonymous", Bool, false, false, "send no credentials"),
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
