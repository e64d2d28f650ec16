//! Local filesystem blocks: object_store's `LocalFileSystem` under the generic adapter, with
//! the conditional HEAD swap that `LocalFileSystem` lacks done here under a file lock.

mod store;

use std::sync::Arc;

use serde::Deserialize;
use storage_core::slug::BlockType;
use storage_core::{
    BlockConfig, Capabilities, Error, FieldKind, FieldSpec, ObjectStoreBlock, Result, TypeSpec,
};

pub use store::{LockedLocalStore, StagedFileSweeper};

/// A folder on this machine (or a mounted share) that holds the block's data.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalConfig {
    pub basepath: String,
}

pub const CAPABILITIES: Capabilities = Capabilities::OBJECT_STORE;

impl BlockConfig for LocalConfig {
    const SPEC: TypeSpec = TypeSpec {
        block_type: BlockType::Local,
        summary: "a folder on the local filesystem; HEAD is swapped by rename",
        fields: &[FieldSpec {
            name: "basepath",
            kind: FieldKind::String,
            required: true,
            secret: false,
            default: None,
            help: "folder that holds the block's data (created on first use)",
        }],
        capabilities: CAPABILITIES,
    };
}

/// Builds the block for `config`; `label` is its `type/name`.
pub fn open(config: &LocalConfig, label: &str) -> Result<ObjectStoreBlock> {
    let base = std::path::Path::new(&config.basepath);
    if !base.is_absolute() {
        return Err(Error::Usage(format!(
            "{label}: basepath {} must be absolute",
            config.basepath
        )));
    }
    std::fs::create_dir_all(base)
        .map_err(|e| Error::io(format!("{label}: creating {}", base.display()), e))?;
    let store = LockedLocalStore::new(base)?;
    let sweeper = Arc::new(store.sweeper());
    Ok(ObjectStoreBlock::new(Arc::new(store), "", label, CAPABILITIES).with_sweeper(sweeper))
}

#[cfg(test)]
mod tests {
    use super::*;
    use storage_core::{BlockDocument, BlockId};

    #[test]
    fn every_spec_field_deserializes() {
        let id = BlockId::parse("local/x").unwrap();
        let doc = BlockDocument::from_settings(
            id,
            &LocalConfig::SPEC,
            &[("basepath".into(), "/tmp/x".into())],
        )
        .unwrap();
        let c: LocalConfig = doc.typed().unwrap();
        assert_eq!(c.basepath, "/tmp/x");
    }

    #[test]
    fn relative_basepath_is_a_usage_error() {
        let err = open(
            &LocalConfig {
                basepath: "rel/dir".into(),
            },
            "local/x",
        )
        .unwrap_err();
        assert_eq!(err.exit_code(), 2);
    }
}
