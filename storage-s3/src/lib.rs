//! S3 blocks: configuration and capabilities. The object_store client is built in issue 3;
//! until then `storage-blocks` reports the type as not available.

use FieldKind::{Bool, String as Text};
use serde::Deserialize;
use storage_core::slug::BlockType;
use storage_core::{BlockConfig, Capabilities, FieldKind, FieldSpec, Secret, TypeSpec};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    pub bucket: String,
    pub prefix: Option<String>,
    pub region: Option<String>,
    pub endpoint: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<Secret>,
    pub session_token: Option<Secret>,
    pub allow_http: Option<bool>,
    pub virtual_hosted_style: Option<bool>,
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

impl BlockConfig for S3Config {
    const SPEC: TypeSpec = TypeSpec {
        block_type: BlockType::S3,
        summary: "an S3 bucket (AWS or any S3-compatible server)",
        fields: &[
            field("bucket", Text, true, false, "bucket name"),
            field("prefix", Text, false, false, "key prefix inside the bucket"),
            field("region", Text, false, false, "region (default us-east-1)"),
            field(
                "endpoint",
                Text,
                false,
                false,
                "custom endpoint URL; path-style addressing by default",
            ),
            field(
                "access_key_id",
                Text,
                false,
                false,
                "access key id (else from the AWS environment)",
            ),
            field(
                "secret_access_key",
                Text,
                false,
                true,
                "secret access key, or env:NAME",
            ),
            field(
                "session_token",
                Text,
                false,
                true,
                "session token, or env:NAME",
            ),
            field(
                "allow_http",
                Bool,
                false,
                false,
                "allow plain http endpoints",
            ),
            field(
                "virtual_hosted_style",
                Bool,
                false,
                false,
                "use virtual-hosted-style requests",
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
