//! Git blocks: configuration and capabilities. The git2 client is built in issue 4. Git
//! stores trees natively (commits), so it declares neither the package nor the files layout.

use FieldKind::{Integer, String as Text};
use serde::Deserialize;
use storage_core::slug::BlockType;
use storage_core::{BlockConfig, Capabilities, FieldKind, FieldSpec, Secret, TypeSpec};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitConfig {
    pub url: String,
    pub reference: Option<String>,
    pub branch: Option<String>,
    pub token: Option<Secret>,
    pub username: Option<String>,
    pub depth: Option<i64>,
    pub author_name: Option<String>,
    pub author_email: Option<String>,
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

impl BlockConfig for GitConfig {
    const SPEC: TypeSpec = TypeSpec {
        block_type: BlockType::Git,
        summary: "a git repository (GitHub, GitLab, Bitbucket or any remote)",
        fields: &[
            field(
                "url",
                Text,
                true,
                false,
                "repository URL (https://, http:// or git://)",
            ),
            field(
                "reference",
                Text,
                false,
                false,
                "branch, tag or commit id to get",
            ),
            field(
                "branch",
                Text,
                false,
                false,
                "branch that put commits to (default main)",
            ),
            field(
                "token",
                Text,
                false,
                true,
                "access token or password, or env:NAME",
            ),
            field("username", Text, false, false, "user name for basic auth"),
            field(
                "depth",
                Integer,
                false,
                false,
                "fetch depth; 0 = full history (default 1)",
            ),
            field("author_name", Text, false, false, "commit author name"),
            field("author_email", Text, false, false, "commit author email"),
        ],
        capabilities: Capabilities {
            package_layout: false,
            files_layout: false,
            versions: true,
            atomic_put: true,
            compare_and_swap: true,
            files_keep_metadata: true,
            gc: false,
        },
    };
}
