//! storage-blocks: the library a deployment CLI or an agent links. It opens a slug through the
//! registry and builds the backend its type names (one cargo feature per backend).
//!
//! Open a block by its slug, put a folder there, and get it back where a flow runs:
//!
//! ```
//! use storage_blocks::{GetOptions, PutOptions, Registry};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // blocks.toml, `local/default`'s data and the caches live in `$BLOCKCTL_HOME`: a
//! // temporary folder here, so the example leaves the user's own untouched.
//! let home = tempfile::tempdir()?;
//! // SAFETY: no other thread of this program reads the environment yet.
//! unsafe { std::env::set_var("BLOCKCTL_HOME", home.path()) };
//!
//! let project = home.path().join("flow-project");
//! std::fs::create_dir_all(project.join("flows"))?;
//! std::fs::write(project.join("flows/etl.py"), "print('etl')\n")?;
//!
//! tokio::runtime::Runtime::new()?.block_on(async {
//!     let registry = Registry::load()?;
//!     let (block, path) = registry.open("local/default/etl")?;
//!
//!     let put = block.put_directory(&project, &path, &PutOptions::default()).await?;
//!     assert_eq!(put.files, 1);
//!
//!     let run = home.path().join("run");
//!     let got = block.get_directory(&path, &run, &GetOptions::default()).await?;
//!     assert_eq!(got.version, put.version);
//!     assert_eq!(std::fs::read_to_string(run.join("flows/etl.py"))?, "print('etl')\n");
//!     Ok::<_, Box<dyn std::error::Error>>(())
//! })
//! # }
//! ```

#![warn(missing_docs)]

use std::sync::Arc;

pub use storage_core::*;

#[cfg(feature = "prefect")]
pub mod prefect;
pub mod provenance;

/// Saved blocks, and the way from a slug to a ready backend.
#[derive(Debug, Clone)]
pub struct Registry {
    file: RegistryFile,
}

impl Registry {
    /// Reads `$BLOCKCTL_HOME/blocks.toml`.
    pub fn load() -> Result<Self> {
        Ok(Registry {
            file: RegistryFile::load()?,
        })
    }

    /// The blocks of `file`, e.g. a registry kept somewhere else than `$BLOCKCTL_HOME`.
    pub fn from_file(file: RegistryFile) -> Self {
        Registry { file }
    }

    /// The registry file the blocks come from.
    pub fn file(&self) -> &RegistryFile {
        &self.file
    }

    /// Parses the slug, loads its block, resolves `env:` secrets and builds the backend.
    ///
    /// ```
    /// use storage_blocks::{BlockId, Registry, RegistryFile};
    ///
    /// # fn main() -> storage_blocks::Result<()> {
    /// let dir = tempfile::tempdir().unwrap();
    /// let file = RegistryFile::load_from(dir.path().join("blocks.toml"))?;
    /// let mut registry = Registry::from_file(file);
    /// let store = dir.path().join("store").display().to_string();
    /// registry.create(BlockId::parse("local/scratch")?, &[("basepath".into(), store)], false)?;
    ///
    /// let (block, path) = registry.open("local/scratch/etl/daily")?;
    /// assert_eq!(block.label(), "local/scratch");
    /// assert_eq!(path.as_str(), "etl/daily");
    /// assert!(block.capabilities().versions);
    /// assert!(registry.open("local/missing").is_err());
    /// # Ok(())
    /// # }
    /// ```
    pub fn open(&self, slug: &str) -> Result<(Arc<dyn StorageBlock>, BlockPath)> {
        let slug = BlockSlug::parse(slug)?;
        Ok((self.open_block(&slug.block)?, slug.path))
    }

    /// The block named `id`, its capabilities enforced by [`storage_core::Checked`].
    pub fn open_block(&self, id: &BlockId) -> Result<Arc<dyn StorageBlock>> {
        let doc = self.file.get(id)?;
        let block = build(&doc)?;
        block.set_trust(doc.trust(&type_spec(id.block_type)?)?)?;
        Ok(storage_core::Checked::wrap(block))
    }

    /// The document of block `id`, secrets as written (`env:` unresolved).
    pub fn document(&self, id: &BlockId) -> Result<BlockDocument> {
        self.file.get(id)
    }

    /// Every block's document, `local/default` included, sorted by id.
    pub fn documents(&self) -> Vec<BlockDocument> {
        self.file.documents()
    }

    /// Validates `K=V` settings against the type's fields and saves the block.
    pub fn create(
        &mut self,
        id: BlockId,
        settings: &[(String, String)],
        overwrite: bool,
    ) -> Result<BlockDocument> {
        let spec = type_spec(id.block_type)?;
        let doc = BlockDocument::from_settings(id, &spec, settings)?;
        check_typed(&doc)?;
        self.file.create(doc.clone(), overwrite)?;
        Ok(doc)
    }

    /// Removes block `id` from the registry file; what it stored stays where it is.
    pub fn remove(&mut self, id: &BlockId) -> Result<()> {
        self.file.remove(id)
    }
}

/// The field specs and capabilities of a type, when its backend is built in.
pub fn type_spec(t: BlockType) -> Result<TypeSpec> {
    let spec = match t {
        #[cfg(feature = "local")]
        BlockType::Local => Some(<storage_local::LocalConfig as BlockConfig>::SPEC),
        #[cfg(feature = "s3")]
        BlockType::S3 => Some(<storage_s3::S3Config as BlockConfig>::SPEC),
        #[cfg(feature = "gcs")]
        BlockType::Gcs => Some(<storage_gcs::GcsConfig as BlockConfig>::SPEC),
        #[cfg(feature = "azure")]
        BlockType::Azure => Some(<storage_azure::AzureConfig as BlockConfig>::SPEC),
        #[cfg(feature = "git")]
        BlockType::Git => Some(<storage_git::GitConfig as BlockConfig>::SPEC),
        #[cfg(feature = "smb")]
        BlockType::Smb => Some(<storage_smb::SmbConfig as BlockConfig>::SPEC),
        #[cfg(feature = "remote-file-system")]
        BlockType::RemoteFileSystem => Some(<storage_rfs::RfsConfig as BlockConfig>::SPEC),
        #[cfg(feature = "oci")]
        BlockType::Oci => Some(<storage_oci::OciConfig as BlockConfig>::SPEC),
        #[allow(unreachable_patterns)]
        _ => None,
    };
    spec.ok_or_else(|| {
        Error::Unsupported(format!(
            "block type {t} is not built into this program (enable the `{t}` feature of storage-blocks)"
        ))
    })
}

/// Specs of every type built in.
pub fn type_specs() -> Vec<TypeSpec> {
    BlockType::ALL
        .into_iter()
        .filter_map(|t| type_spec(t).ok())
        .collect()
}

/// Deserializes the document into its backend's typed config, to reject bad documents early.
fn check_typed(doc: &BlockDocument) -> Result<()> {
    match doc.id.block_type {
        #[cfg(feature = "local")]
        BlockType::Local => doc.typed::<storage_local::LocalConfig>().map(drop),
        #[cfg(feature = "s3")]
        BlockType::S3 => doc.typed::<storage_s3::S3Config>().map(drop),
        #[cfg(feature = "gcs")]
        BlockType::Gcs => doc.typed::<storage_gcs::GcsConfig>().map(drop),
        #[cfg(feature = "azure")]
        BlockType::Azure => doc.typed::<storage_azure::AzureConfig>().map(drop),
        #[cfg(feature = "git")]
        BlockType::Git => doc.typed::<storage_git::GitConfig>().map(drop),
        #[cfg(feature = "smb")]
        BlockType::Smb => doc.typed::<storage_smb::SmbConfig>().map(drop),
        #[cfg(feature = "remote-file-system")]
        BlockType::RemoteFileSystem => doc.typed::<storage_rfs::RfsConfig>().map(drop),
        #[cfg(feature = "oci")]
        BlockType::Oci => doc.typed::<storage_oci::OciConfig>().map(drop),
        #[allow(unreachable_patterns)]
        t => type_spec(t).map(drop),
    }
}

fn build(doc: &BlockDocument) -> Result<Arc<dyn StorageBlock>> {
    let label = doc.id.to_string();
    match doc.id.block_type {
        #[cfg(feature = "local")]
        BlockType::Local => Ok(Arc::new(storage_local::open(&doc.typed()?, &label)?)),
        #[cfg(feature = "s3")]
        BlockType::S3 => Ok(Arc::new(storage_s3::open(&doc.typed()?, &label)?)),
        #[cfg(feature = "gcs")]
        BlockType::Gcs => Ok(Arc::new(storage_gcs::open(&doc.typed()?, &label)?)),
        #[cfg(feature = "azure")]
        BlockType::Azure => Ok(Arc::new(storage_azure::open(&doc.typed()?, &label)?)),
        #[cfg(feature = "git")]
        BlockType::Git => Ok(Arc::new(storage_git::open(&doc.typed()?, &label)?)),
        #[cfg(feature = "smb")]
        BlockType::Smb => Ok(Arc::new(storage_smb::open(&doc.typed()?, &label)?)),
        #[cfg(feature = "remote-file-system")]
        BlockType::RemoteFileSystem => Ok(Arc::new(storage_rfs::open(&doc.typed()?, &label)?)),
        #[cfg(feature = "oci")]
        BlockType::Oci => Ok(Arc::new(storage_oci::open(&doc.typed()?, &label)?)),
        // Reached only in builds that leave a backend's feature out.
        #[allow(unreachable_patterns)]
        t => {
            check_typed(doc)?;
            Err(Error::Unsupported(format!(
                "{label}: {t} blocks can be configured but not used yet: this build has no {t} client"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_is_built_in_by_default() {
        assert_eq!(type_specs().len(), BlockType::ALL.len());
    }

    #[test]
    fn create_validates_against_the_type() {
        let dir = tempfile::tempdir().unwrap();
        let mut reg =
            Registry::from_file(RegistryFile::load_from(dir.path().join("blocks.toml")).unwrap());
        let id = BlockId::parse("s3/prod").unwrap();
        let err = reg
            .create(id.clone(), &[("region".into(), "x".into())], false)
            .unwrap_err();
        assert_eq!(err.exit_code(), 2);
        reg.create(id.clone(), &[("bucket".into(), "b".into())], false)
            .unwrap();
        assert!(reg.document(&id).is_ok());
    }
}
