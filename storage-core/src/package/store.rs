//! The one trait a backend implements to hold packages: HEAD with a precondition, manifests,
//! and the immutable objects frames live in. Everything else a put or a get does (scanning,
//! cutting, sealing, deciding what to send, verifying, unpacking, placing) is the engine's.

use std::collections::HashSet;
use std::ops::Range;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::package::manifest::{HeadRecord, PackageManifest};
use crate::slug::BlockPath;

/// An immutable object of a package path, named by what it holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ObjectName {
    /// Format 2: one frame, named by the sha256 of its bytes (`.blocks/frames/<sha>.zst`).
    Frame(String),
    /// Format 3: a pack of frames, named by the sha256 of its bytes (`.blocks/packs/<sha>.pack`).
    Pack(String),
    /// Format 1: one version's whole `.tar.zst` (`.blocks/packages/<version>.tar.zst`).
    Archive(String),
}

impl ObjectName {
    /// The object's path below the package path.
    pub fn relative_path(&self) -> String {
        match self {
            ObjectName::Frame(sha) => format!(".blocks/frames/{sha}.zst"),
            ObjectName::Pack(sha) => format!(".blocks/packs/{sha}.pack"),
            ObjectName::Archive(version) => format!(".blocks/packages/{version}.tar.zst"),
        }
    }
}

/// What a conditional HEAD swap must find to go ahead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadPrecondition {
    /// Whatever HEAD holds.
    Any,
    /// No HEAD at all.
    Absent,
    /// The HEAD read with this tag, unchanged since.
    Unchanged(HeadTag),
}

/// What identifies one stored HEAD, for a conditional swap (an ETag or a generation).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeadTag {
    /// The HEAD object's ETag, when the store gives one.
    pub e_tag: Option<String>,
    /// The HEAD object's version or generation, when the store keeps one.
    pub version: Option<String>,
}

/// How a HEAD swap ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Swap {
    /// HEAD now holds the new record.
    Done,
    /// The precondition no longer held: another writer changed HEAD first.
    Lost,
}

/// A manifest with the bytes it was parsed from and their signature, if one is stored.
#[derive(Debug, Clone)]
pub struct StoredManifest {
    /// Exactly as stored: what a signature covers.
    pub bytes: Bytes,
    /// Whether `bytes` are zstd-compressed JSON (else plain JSON, format 1).
    pub compressed: bool,
    /// The `.minisig` text stored beside it.
    pub signature: Option<String>,
}

/// A stream of an object's bytes, as they arrive.
pub type ByteStream = BoxStream<'static, Result<Bytes>>;

/// Storage for packages at the paths of one block.
#[async_trait]
pub trait PackageStore: Send + Sync + 'static {
    /// `type/name[/path]`: what every message about `at` starts with.
    fn slug(&self, at: &BlockPath) -> String;

    /// Values no message may show (the block's resolved secrets).
    fn secrets(&self) -> &[String] {
        &[]
    }

    /// Whether a part of an object can be read; when not, whole objects are read.
    fn ranged_reads(&self) -> bool {
        true
    }

    /// Whether the store keeps format 3's packs (else puts write format 2).
    fn keeps_packs(&self) -> bool {
        true
    }

    /// What tells this store apart from any other holding the same slugs (its kind, bucket
    /// and prefix), for the agent's manifest cache; `None` keeps no manifests.
    fn cache_scope(&self) -> Option<String> {
        None
    }

    /// HEAD at `at`, with its tag for a conditional swap.
    async fn read_head(&self, at: &BlockPath) -> Result<Option<(HeadRecord, HeadTag)>>;

    /// Writes `head` at `at` if `expect` holds.
    async fn swap_head(
        &self,
        at: &BlockPath,
        head: &HeadRecord,
        expect: HeadPrecondition,
    ) -> Result<Swap>;

    /// The manifest of `version`, checked against its id; `Error::NotFound` when it has none.
    async fn read_manifest(&self, at: &BlockPath, version: &str) -> Result<PackageManifest>;

    /// The manifest of `version` as stored, unparsed (bounded as
    /// [`read_manifest`](Self::read_manifest) bounds it), with the signature stored beside
    /// it. Stores that keep no signatures say so.
    async fn read_manifest_signed(&self, at: &BlockPath, version: &str) -> Result<StoredManifest> {
        let _ = version;
        Err(Error::Unsupported(format!(
            "{}: this store keeps no signatures",
            self.slug(at)
        )))
    }

    /// Stores `signature` (minisign text over the manifest's stored bytes) beside the
    /// manifest of `manifest.version`.
    async fn write_manifest_signature(
        &self,
        at: &BlockPath,
        manifest: &PackageManifest,
        signature: &str,
    ) -> Result<()> {
        let _ = (manifest, signature);
        Err(Error::Unsupported(format!(
            "{}: this store keeps no signatures",
            self.slug(at)
        )))
    }

    /// Notes a HEAD swap that landed, for [`head_history`](Self::head_history). Stores
    /// without a history ignore it.
    async fn record_head(&self, at: &BlockPath, head: &HeadRecord) -> Result<()> {
        let _ = (at, head);
        Ok(())
    }

    /// The HEAD swaps noted at `at`, oldest first: when (Unix milliseconds) and which
    /// version. Empty when the store keeps no history.
    async fn head_history(&self, at: &BlockPath) -> Result<Vec<(i64, String)>> {
        let _ = at;
        Ok(Vec::new())
    }

    /// Whether `version` is stored whole, so that a put of it only moves HEAD.
    async fn has_version(&self, at: &BlockPath, version: &str) -> Result<bool>;

    /// Stores the manifest of a version whose objects are all stored; returns bytes sent.
    async fn write_manifest(&self, at: &BlockPath, manifest: &PackageManifest) -> Result<u64>;

    /// The format-2 frames stored at `at`, or `None` when the store cannot list them (then
    /// the engine asks [`has_object`](Self::has_object) frame by frame).
    async fn stored_frames(&self, at: &BlockPath) -> Result<Option<HashSet<String>>>;

    /// Whether an object is stored.
    async fn has_object(&self, at: &BlockPath, name: &ObjectName) -> Result<bool>;

    /// Stores an object whose bytes are all at hand.
    async fn write_object(&self, at: &BlockPath, name: &ObjectName, data: Bytes) -> Result<()>;

    /// Stores an object whose bytes arrive on `chunks` (format 1's archive). The object is
    /// whole only if `producer` ends well: a store completes it only after that, and
    /// abandons it otherwise, returning the producer's error.
    async fn write_object_stream(
        &self,
        at: &BlockPath,
        name: &ObjectName,
        chunks: mpsc::Receiver<Bytes>,
        producer: tokio::task::JoinHandle<Result<()>>,
    ) -> Result<()> {
        let _ = (name, chunks, producer);
        Err(Error::Unsupported(format!(
            "{}: this store keeps no format-1 archives",
            self.slug(at)
        )))
    }

    /// Reads `range` of an object (all of it when `None`); `None` when it is not stored.
    async fn read_object(
        &self,
        at: &BlockPath,
        name: &ObjectName,
        range: Option<Range<u64>>,
    ) -> Result<Option<ByteStream>>;

    /// Called before a put looks at the store; the engine ends the returned guard after the
    /// HEAD swap, whatever happened. Stores that `gc` frames use it to hold gc back.
    async fn begin_put(&self, at: &BlockPath) -> Result<Box<dyn PutGuard>> {
        let _ = at;
        Ok(Box::new(NoGuard))
    }

    /// Waits until no gc that could remove objects this put reuses is running at `at`.
    async fn settle(&self, at: &BlockPath) -> Result<()> {
        let _ = at;
        Ok(())
    }
}

/// What a store keeps alive while a put runs (an intent record, renewed).
#[async_trait]
pub trait PutGuard: Send {
    /// Ends the guard; failures only leave it to expire.
    async fn end(self: Box<Self>);
}

struct NoGuard;

#[async_trait]
impl PutGuard for NoGuard {
    async fn end(self: Box<Self>) {}
}

/// The versions a HEAD `history` (oldest first, Unix milliseconds) made current within
/// `window` of now, and the one current when the window began: what `gc --keep-within` keeps.
/// Empty without a window.
pub fn recently_current(
    history: &[(i64, String)],
    window: Option<std::time::Duration>,
) -> HashSet<String> {
    let Some(window) = window else {
        return HashSet::new();
    };
    let start = unix_millis().saturating_sub(window.as_millis() as i64);
    let before = history.iter().rev().find(|(when, _)| *when < start);
    history
        .iter()
        .filter(|(when, _)| *when >= start)
        .chain(before)
        .map(|(_, v)| v.clone())
        .collect()
}

/// Now, in Unix milliseconds: the time of HEAD notes and histories, intents and markers.
pub fn unix_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
