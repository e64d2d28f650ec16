//! Git blocks: a repository (GitHub, GitLab, Bitbucket or any remote) through git2. Git
//! stores trees natively: a put commits the tree at its path onto a branch and pushes it, a
//! version is a commit id, and a get fetches a branch, tag or commit (shallow by default)
//! and writes the tree of its path. It has neither the package nor the files layout.

mod block;
mod git_trees;
mod remote;

use FieldKind::{Integer, String as Text};
use serde::Deserialize;
use storage_core::slug::BlockType;
use storage_core::{BlockConfig, Capabilities, FieldKind, FieldSpec, Result, Secret, TypeSpec};

pub use block::GitBlock;

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

/// What git can do: versions are commits, a put is one commit (atomic) pushed only as a
/// fast-forward from the commit it was built on (compare-and-swap), trees keep modes and
/// symlinks. History is never rewritten, so versions cannot be dropped (no gc, no
/// `rm --version`), and there are no packages, mirrors or raw objects.
pub const CAPABILITIES: Capabilities = Capabilities {
    package_layout: false,
    files_layout: false,
    native_tree: true,
    versions: true,
    atomic_put: true,
    compare_and_swap: true,
    files_keep_metadata: false,
    gc: false,
    files_case_sensitive: true,
    read_only: false,
    raw_objects: false,
};

impl BlockConfig for GitConfig {
    const SPEC: TypeSpec = TypeSpec {
        block_type: BlockType::Git,
        summary: "a git repository (GitHub, GitLab, Bitbucket or any remote)",
        fields: &[
            FieldSpec::new(
                "url",
                Text,
                "repository URL (https://, http://, git:// or file://)",
            )
            .required(),
            FieldSpec::new(
                "reference",
                Text,
                "branch, tag or commit id to get (default: the branch)",
            ),
            FieldSpec::new("branch", Text, "branch that put commits to (default main)"),
            FieldSpec::new("token", Text, "access token or password, or env:NAME").secret(),
            FieldSpec::new(
                "username",
                Text,
                "user name for basic auth (default: what the host expects with a token)",
            ),
            FieldSpec::new(
                "depth",
                Integer,
                "fetch depth; 0 = full history (default 1)",
            ),
            FieldSpec::new("author_name", Text, "commit author name (default blockctl)"),
            FieldSpec::new(
                "author_email",
                Text,
                "commit author email (default blockctl@localhost)",
            ),
        ],
        capabilities: CAPABILITIES,
    };
}

/// Builds the block: checks the URL and depth, resolves the token. Nothing is contacted yet.
pub fn open(config: &GitConfig, label: &str) -> Result<GitBlock> {
    GitBlock::new(config, label)
}
