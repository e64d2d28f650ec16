//! What an attacker who can write to a store does to a package path in the signed-versions
//! case: reads and replaces HEAD, a version's stored manifest and its signature, each as the
//! bytes the store keeps. Object and folder stores hand out their raw objects
//! ([`RawObjects`]); a registry's tests talk to its HTTP API
//! ([`crate::harness::RegistryAttacker`]).

use std::sync::Arc;

use async_trait::async_trait;
use storage_core::{BlockPath, StorageBlock, Trust};

use crate::hostile::{read, write};

/// One attacker's view of a store: every method panics when the store refuses it (a test
/// that cannot plant what it means to plant proves nothing).
#[async_trait]
pub trait Attacker: Send + Sync {
    /// HEAD at `at` as stored: a JSON HEAD record.
    async fn head(&self, at: &BlockPath) -> Vec<u8>;
    /// Replaces HEAD at `at` with `record` (JSON, as [`Attacker::head`] returns it).
    async fn set_head(&self, at: &BlockPath, record: Vec<u8>);
    /// The manifest of `version` as stored (what its signature covers).
    async fn manifest(&self, at: &BlockPath, version: &str) -> Vec<u8>;
    /// Replaces the stored manifest of `version`.
    async fn set_manifest(&self, at: &BlockPath, version: &str, bytes: Vec<u8>);
    /// The `.minisig` text of `version`'s manifest.
    async fn signature(&self, at: &BlockPath, version: &str) -> Vec<u8>;
    /// Replaces (or plants) the signature of `version`'s manifest.
    async fn set_signature(&self, at: &BlockPath, version: &str, text: Vec<u8>);
}

/// The attacker of a store that takes raw objects: `.blocks/HEAD`, the manifest and the
/// `.minisig` beside it, read through the block without trusted keys (a block that requires
/// signatures reads no plain object) and written through it.
pub struct RawObjects {
    pub block: Arc<dyn StorageBlock>,
    /// The block's trust settings while the attacker reads (no trusted keys)...
    pub reading: Trust,
    /// ... and the ones put back after.
    pub after: Trust,
}

impl RawObjects {
    async fn read(&self, at: &BlockPath, rel: &str) -> Vec<u8> {
        self.block
            .set_trust(self.reading.clone())
            .expect("trust settings");
        let bytes = read(self.block.as_ref(), at, rel).await;
        self.block
            .set_trust(self.after.clone())
            .expect("trust settings");
        bytes
    }
}

fn manifest_rel(version: &str) -> String {
    format!(".blocks/manifests/{version}.json.zst")
}

fn signature_rel(version: &str) -> String {
    format!(".blocks/manifests/{version}.json.zst.minisig")
}

const HEAD: &str = ".blocks/HEAD";

#[async_trait]
impl Attacker for RawObjects {
    async fn head(&self, at: &BlockPath) -> Vec<u8> {
        self.read(at, HEAD).await
    }

    async fn set_head(&self, at: &BlockPath, record: Vec<u8>) {
        write(self.block.as_ref(), at, HEAD, record).await
    }

    async fn manifest(&self, at: &BlockPath, version: &str) -> Vec<u8> {
        self.read(at, &manifest_rel(version)).await
    }

    async fn set_manifest(&self, at: &BlockPath, version: &str, bytes: Vec<u8>) {
        write(self.block.as_ref(), at, &manifest_rel(version), bytes).await
    }

    async fn signature(&self, at: &BlockPath, version: &str) -> Vec<u8> {
        self.read(at, &signature_rel(version)).await
    }

    async fn set_signature(&self, at: &BlockPath, version: &str, text: Vec<u8>) {
        write(self.block.as_ref(), at, &signature_rel(version), text).await
    }
}
