//! storage-core: what every storage block stands on — the [`StorageBlock`] trait, slugs,
//! block documents and the registry, deterministic packaging, ignore rules, safe extraction,
//! and the generic adapter that turns any `object_store::ObjectStore` into a storage block.

#![warn(missing_docs)]

pub mod block;
pub mod bounds;
pub mod capability_checks;
pub mod config;
pub mod error;
pub mod record;
pub mod redaction;
pub mod registry;
pub mod retry;
pub mod secret;
pub mod signing;
pub mod slug;

pub use block::{
    Capabilities, DeleteOptions, EntryKind, GcOptions, GcReport, GetMode, GetOptions, GetReport,
    Layout, ListedFile, PackageExport, PackageFormat, ProgressEvent, ProgressObserver, PutOptions,
    PutReport, RollbackOptions, RollbackReport, StorageBlock, VersionInfo, VersionPrecondition,
};
pub use capability_checks::Checked;
pub use config::{BlockConfig, BlockDocument, FieldKind, FieldSpec, Trust, TypeSpec};
pub use error::{Error, Result};
pub use record::{SourceInfo, VersionRecord};
pub use registry::RegistryFile;
pub use retry::RetryPolicy;
pub use secret::Secret;
pub use slug::{BlockId, BlockName, BlockPath, BlockSlug, BlockType};

pub mod adapter;
pub mod diff;
pub mod hashcache;
mod machine_lock;
pub mod package;
pub mod source_tree;
pub mod stream;

#[cfg(feature = "cloud")]
pub use adapter::retry_config;
pub use adapter::{LeftoverSweeper, ObjectStoreBlock};
pub use package::manifest::{HeadRecord, PackageManifest};
