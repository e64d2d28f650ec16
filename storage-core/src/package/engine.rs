//! The package engine: a put (compare HEAD, hold gc back, cut and seal frames, send what the
//! store lacks, write the manifest, swap HEAD) and a get (manifest, frames from the cache or
//! the store, each verified, unpacked into a staging folder) end to end, over any
//! [`PackageStore`]. Backends only say where bytes live; what a version is and how it is
//! checked is decided here once.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt, stream};
use tokio::sync::mpsc;

use crate::block::{
    EntryKind, GetMode, GetOptions, GetReport, Layout, PackageExport, PackageFormat, ProgressEvent,
    PutOptions, PutReport, emit,
};
use crate::bounds::{joined, read_exact_len};
use crate::config::Trust;
use crate::error::{Error, Result};
use crate::hashcache::{FrameLedger, HashCache};
use crate::package::cuts::{ContentCuts, Cut, SealedFrame, frame_hash, seal};
use crate::package::destination::{commit, empty_folder, staging_for};
use crate::package::extract::{decompressing, file_in_frames, unpack_tar_over};
use crate::package::frame_cache::{FrameCache, FrameCounts, decompress_frame, fetch_verified};
use crate::package::known_frames::KnownFrames;
use crate::package::large_files;
use crate::package::manifest::{
    FRAMES_FORMAT, Frame, HeadRecord, MANIFEST_FORMAT, PACKS_FORMAT, PackageManifest, Totals, short,
};
use crate::package::manifest_cache::ManifestCache;
use crate::package::packs::{self, PACKS_IN_FLIGHT, PackBuilder, StoredFrame};
use crate::package::partial::{self, Selection};
use crate::package::placed::{Held, Placed};
use crate::package::store::{ByteStream, HeadPrecondition, ObjectName, PackageStore, Swap};
use crate::package::tar_stream::{DEFAULT_LEVEL, pack_entries, placed, write_package};
use crate::package::tree_cache::TreeCache;
use crate::signing::{SeenHeads, Signer};
use crate::slug::BlockPath;
use crate::source_tree::{ScanOptions, SourceEntry, SourceTree};
use crate::stream::{ChunkWriter, StreamReader};

/// Frames fetched or sent at once.
pub const IN_FLIGHT: usize = 8;
/// A put re-packs at most this many times when a gc removed frames it meant to reuse.
const ATTEMPTS: usize = 3;
/// What the packer reports when the uploader has gone.
const UPLOAD_STOPPED: &str = "the upload stopped";

/// Put and get of packages over one store.
#[derive(Clone)]
pub struct PackageEngine {
    pub(super) store: Arc<dyn PackageStore>,
    /// The block's signing key and trusted keys (empty: neither signs nor checks).
    pub(super) trust: Arc<Trust>,
    /// The newest HEAD this agent accepted, per block and path.
    pub(super) seen: Arc<SeenHeads>,
}

/// What a put sent.
#[derive(Debug, Default)]
struct Sent {
    bytes: u64,
    frames_uploaded: u64,
    frames_reused: u64,
    /// The manifest written, which a signing block signs.
    manifest: Option<PackageManifest>,
}

impl PackageEngine {
    /// An engine that keeps its packages in `store`.
    pub fn new(store: Arc<dyn PackageStore>) -> Self {
        PackageEngine {
            store,
            trust: Arc::new(Trust::default()),
            seen: Arc::new(SeenHeads::default_location()),
        }
    }

    /// The engine of a block with trust settings: puts sign, reads check.
    pub fn with_trust(mut self, trust: Arc<Trust>) -> Self {
        self.seen = Arc::new(trust.seen());
        self.trust = trust;
        self
    }

    pub(super) fn slug(&self, at: &BlockPath) -> String {
        self.store.slug(at)
    }

    /// Scans and hashes `src`, then [`put`](Self::put)s it.
    pub async fn put_directory(
        &self,
        src: &Path,
        to: &BlockPath,
        opts: &PutOptions,
    ) -> Result<PutReport> {
        let tree = scan(src, opts)
            .await
            .map_err(|e| e.context(self.slug(to)))?;
        self.put(tree, to, opts).await
    }

    /// Stores `tree` as a version at `to` and makes it current (unless `opts.if_version`
    /// fails). A version already stored moves HEAD only; the current one changes nothing.
    pub async fn put(
        &self,
        tree: SourceTree,
        to: &BlockPath,
        opts: &PutOptions,
    ) -> Result<PutReport> {
        let slug = self.slug(to);
        let version = tree.version_id();
        let report = PutReport {
            version: Some(version.clone()),
            layout: Layout::Package,
            files: tree.file_count(),
            bytes: tree.file_bytes(),
            skipped: true,
            warnings: tree.warnings.clone(),
            ..PutReport::default()
        };
        // Loaded first: a wrong password fails the put before anything is sent.
        let signer = self.signer(to)?;
        let head = self.store.read_head(to).await?;
        let precondition =
            super::trust::precondition_for(opts.if_version.as_ref(), head.as_ref(), &slug)?;
        // A signing block re-signs HEAD of the current version (a new sequence number and
        // expiry); otherwise putting the current version again changes nothing.
        if signer.is_none() && head.as_ref().is_some_and(|(h, _)| h.version == version) {
            return Ok(report);
        }
        // Held before anything is looked up or written, so that no gc removes what this put
        // reuses or writes.
        let guard = self.store.begin_put(to).await?;
        let result = self
            .store_version(
                to,
                &version,
                tree,
                precondition,
                head,
                report,
                opts,
                signer.as_ref(),
            )
            .await;
        guard.end().await;
        result
    }

    /// The part of a put under its guard: objects and manifest unless the version is stored
    /// already, then the HEAD swap.
    #[allow(clippy::too_many_arguments)]
    async fn store_version(
        &self,
        to: &BlockPath,
        version: &str,
        tree: SourceTree,
        precondition: HeadPrecondition,
        head: Option<(HeadRecord, crate::package::store::HeadTag)>,
        mut report: PutReport,
        opts: &PutOptions,
        signer: Option<&Signer>,
    ) -> Result<PutReport> {
        let slug = self.slug(to);
        let previous = head.as_ref().map(|(h, _)| h.version.clone());
        // A gc that began before the guard may be removing this version: let it finish.
        self.store.settle(to).await?;
        let mut written = None;
        if !self.store.has_version(to, version).await? {
            report.skipped = false;
            emit(
                &opts.progress,
                ProgressEvent::Phase {
                    name: "uploading",
                    total: Some(report.bytes),
                },
            );
            let sent = match opts.format {
                PackageFormat::Archive => self.put_archive(to, version, tree.entries, opts).await?,
                PackageFormat::Packs if self.store.keeps_packs() => {
                    self.put_packs(to, version, tree.entries, previous.as_deref(), opts)
                        .await?
                }
                PackageFormat::Frames | PackageFormat::Packs => {
                    self.put_frames(to, version, tree.entries, opts).await?
                }
            };
            report.uploaded_bytes = sent.bytes;
            report.frames_uploaded = sent.frames_uploaded;
            report.frames_reused = sent.frames_reused;
            written = sent.manifest;
        }
        if let Some(signer) = signer {
            self.sign_manifest(to, version, written.as_ref(), signer)
                .await?;
        }
        emit(
            &opts.progress,
            ProgressEvent::Phase {
                name: "committing",
                total: None,
            },
        );
        let swap = self
            .swap_to(to, version, head, precondition, signer, opts.valid_for)
            .await?;
        if swap == Swap::Lost {
            return Err(Error::Conflict(format!(
                "{slug}: another put changed the current version first; version {} is stored but not current",
                short(version)
            )));
        }
        emit(&opts.progress, ProgressEvent::Done);
        Ok(report)
    }

    /// Format 1: the whole tree as one archive, then its JSON manifest.
    async fn put_archive(
        &self,
        to: &BlockPath,
        version: &str,
        entries: Vec<SourceEntry>,
        opts: &PutOptions,
    ) -> Result<Sent> {
        let (tx, rx) = mpsc::channel::<Bytes>(8);
        let entries = Arc::new(entries);
        let packer_entries = entries.clone();
        let progress = opts.progress.clone();
        let layout = Arc::new(std::sync::Mutex::new(None));
        let layout_slot = layout.clone();
        let packer = tokio::task::spawn_blocking(move || {
            let mut out = ChunkWriter::new(tx);
            let written = write_package(&packer_entries, DEFAULT_LEVEL, &mut out, |n| {
                emit(&progress, ProgressEvent::Advance(n))
            })?;
            std::io::Write::flush(&mut out).map_err(|e| Error::io("writing the package", e))?;
            *layout_slot.lock().expect("layout slot") = Some(written);
            Ok(())
        });
        let name = ObjectName::Archive(version.to_string());
        self.store
            .write_object_stream(to, &name, rx, packer)
            .await?;
        let layout = layout.lock().expect("layout slot").take().ok_or_else(|| {
            Error::Backend(format!("{}: the package was not written", self.slug(to)))
        })?;
        let records = placed(&entries, &layout.placements);
        let manifest = PackageManifest {
            format: MANIFEST_FORMAT,
            version: version.to_string(),
            created: now(),
            compression: "zstd".into(),
            totals: Totals::count(&records, layout.package_bytes),
            frames: layout.frames,
            entries: records,
            record: opts.record.clone(),
        };
        let sent = self.store.write_manifest(to, &manifest).await?;
        Ok(Sent {
            bytes: layout.package_bytes + sent,
            manifest: Some(manifest),
            ..Sent::default()
        })
    }

    /// Format 2: content-defined frames, those the store lacks sent, then the manifest.
    /// A gc that removed a frame this put reused while it ran makes it pack again.
    async fn put_frames(
        &self,
        to: &BlockPath,
        version: &str,
        entries: Vec<SourceEntry>,
        opts: &PutOptions,
    ) -> Result<Sent> {
        let entries = Arc::new(entries);
        let mut known = self.store.stored_frames(to).await?;
        let mut sent = Sent::default();
        for attempt in 1..=ATTEMPTS {
            let (placements, frames) = self
                .pack_and_send(
                    to,
                    entries.clone(),
                    known.as_ref(),
                    &mut sent,
                    opts,
                    attempt == 1,
                )
                .await?;
            // A gc that began before our guard may still be removing frames we reuse: wait
            // for it, then check that every frame is there.
            self.store.settle(to).await?;
            known = self.store.stored_frames(to).await?;
            let missing = known.as_ref().map_or(0, |known| {
                frames
                    .iter()
                    .filter(|f| !known.contains(f.sha256.as_deref().unwrap_or_default()))
                    .count()
            });
            if missing > 0 {
                tracing::debug!(missing, attempt, "a gc removed frames this put reused");
                continue;
            }
            let manifest =
                frames_manifest(FRAMES_FORMAT, version, &entries, &placements, frames, opts);
            return self.write_manifest(to, manifest, sent).await;
        }
        Err(self.gc_kept_removing(to, "frames"))
    }

    /// Format 3: content-defined frames; those the current version's packs hold (less the
    /// packs retired to keep the version compact) are reused, the rest written into new
    /// packs; then the manifest. A gc that removed a reused pack meanwhile makes it pack again.
    async fn put_packs(
        &self,
        to: &BlockPath,
        version: &str,
        entries: Vec<SourceEntry>,
        previous: Option<&str>,
        opts: &PutOptions,
    ) -> Result<Sent> {
        let entries = Arc::new(entries);
        let previous = match previous {
            Some(v) => match self.store.read_manifest(to, v).await {
                Ok(m) => Some(Arc::new(m)),
                // A HEAD whose manifest is gone or damaged offers nothing to reuse.
                Err(Error::NotFound(_) | Error::Integrity(_)) => None,
                Err(e) => return Err(e),
            },
            None => None,
        };
        let mut reuse = previous
            .as_ref()
            .map(|m| packs::reusable_frames(m))
            .unwrap_or_default();
        self.drop_missing_packs(to, &mut reuse).await?;
        let mut sent = Sent::default();
        for attempt in 1..=ATTEMPTS {
            let known = previous
                .as_ref()
                .and_then(|m| KnownFrames::new(m, |sha| reuse.contains_key(sha)))
                .map(Arc::new);
            let (placements, frames) = self
                .pack_frames(
                    to,
                    entries.clone(),
                    &reuse,
                    known,
                    &mut sent,
                    opts,
                    attempt == 1,
                )
                .await?;
            // A gc that began before our guard may still be removing packs we reuse: wait
            // for it, then check that every one is there.
            self.store.settle(to).await?;
            let before = reuse.len();
            self.drop_missing_packs(to, &mut reuse).await?;
            if reuse.len() != before {
                tracing::debug!(attempt, "a gc removed packs this put reused");
                continue;
            }
            let manifest =
                frames_manifest(PACKS_FORMAT, version, &entries, &placements, frames, opts);
            return self.write_manifest(to, manifest, sent).await;
        }
        Err(self.gc_kept_removing(to, "packs"))
    }

    /// Stores the manifest of a put whose objects are all stored, counting its bytes.
    async fn write_manifest(
        &self,
        to: &BlockPath,
        manifest: PackageManifest,
        mut sent: Sent,
    ) -> Result<Sent> {
        sent.bytes += self.store.write_manifest(to, &manifest).await?;
        sent.manifest = Some(manifest);
        Ok(sent)
    }

    /// The error of a put that found the frames or packs it reuses removed by a gc after
    /// every attempt.
    fn gc_kept_removing(&self, to: &BlockPath, what: &str) -> Error {
        Error::Backend(format!(
            "{}: a gc running at the same time kept removing {what} this put reuses; put again",
            self.slug(to)
        ))
    }

    /// Forgets the reusable frames whose pack the store no longer holds.
    async fn drop_missing_packs(
        &self,
        to: &BlockPath,
        reuse: &mut HashMap<String, StoredFrame>,
    ) -> Result<()> {
        let packs: HashSet<String> = reuse.values().map(|f| f.pack.clone()).collect();
        for pack in packs {
            if !self
                .store
                .has_object(to, &ObjectName::Pack(pack.clone()))
                .await?
            {
                reuse.retain(|_, f| f.pack != pack);
            }
        }
        Ok(())
    }

    /// One pass of format 3's packing: frames cut and sealed as for format 2, the new ones
    /// appended to packs of about [`packs::pack_target`] bytes, each uploaded once full while
    /// the next fills; frames of `known` (all in `reuse`) are named without reading their
    /// files. Returns the entries' placements and the frame table.
    #[allow(clippy::too_many_arguments)]
    async fn pack_frames(
        &self,
        to: &BlockPath,
        entries: Arc<Vec<SourceEntry>>,
        reuse: &HashMap<String, StoredFrame>,
        known: Option<Arc<KnownFrames>>,
        sent: &mut Sent,
        opts: &PutOptions,
        report_progress: bool,
    ) -> Result<(Vec<(u32, u64)>, Vec<Frame>)> {
        let progress = report_progress.then(|| opts.progress.clone()).flatten();
        let target = packs::pack_target(entries.iter().map(|e| e.record.size).sum());
        let (rx, packer) = cut_frames(entries, progress, known);
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        let ledger = Arc::new(FrameLedger::open(&self.slug(to)));
        let reusable: Arc<HashSet<String>> = Arc::new(reuse.keys().cloned().collect());
        let mut sealed = sealed_frames(rx, ledger.clone(), reusable, workers).boxed();
        // Where each frame went: an existing pack (by name), or a new one (by its number).
        enum Place {
            Stored(String, u64),
            New(usize, u64),
        }
        let mut table: Vec<(SealedFrame, Place)> = Vec::new();
        let mut placed_here: HashMap<String, (usize, u64)> = HashMap::new();
        let mut builder = PackBuilder::new(target);
        let mut names: Vec<String> = Vec::new();
        // Uploads run on tasks of their own while the next pack fills (dropped, they stop).
        // Each returns the pack's length, and its bytes when the builder reuses buffers (a
        // finished upload holds them until it is joined).
        let mut uploads: tokio::task::JoinSet<Result<(u64, Option<Bytes>)>> =
            tokio::task::JoinSet::new();
        let keep = builder.reuses_buffers();
        let upload = |name: String, data: Bytes| {
            let (store, to) = (self.store.clone(), to.clone());
            async move {
                let len = data.len() as u64;
                store
                    .write_object(&to, &ObjectName::Pack(name), data.clone())
                    .await?;
                Ok::<_, Error>((len, keep.then_some(data)))
            }
        };
        let result: Result<()> = async {
            while let Some(frame) = sealed.next().await {
                let mut frame = frame?;
                let place = if let Some(s) = reuse.get(&frame.sha256) {
                    Place::Stored(s.pack.clone(), s.pack_offset)
                } else if let Some((pack, offset)) = placed_here.get(&frame.sha256) {
                    // The same frame twice in one version is stored once, and counted as
                    // format 2 counts it: sent.
                    sent.frames_uploaded += 1;
                    Place::New(*pack, *offset)
                } else if frame.data.is_empty() {
                    // Only a frame of a kept pack is named without its bytes.
                    return Err(Error::Backend(format!(
                        "{}: frame {} was named for reuse but no kept pack holds it",
                        self.slug(to),
                        short(&frame.sha256)
                    )));
                } else {
                    if builder.is_full_for(frame.data.len()) {
                        let (name, data) = builder.close();
                        names.push(name.clone());
                        while uploads.len() >= PACKS_IN_FLIGHT {
                            if let Some(done) = uploads.join_next().await {
                                let (len, data) = done??;
                                sent.bytes += len;
                                if let Some(data) = data {
                                    builder.recycle(data);
                                }
                            }
                        }
                        uploads.spawn(upload(name, data));
                    }
                    let offset = builder.push(&frame.data);
                    sent.frames_uploaded += 1;
                    placed_here.insert(frame.sha256.clone(), (names.len(), offset));
                    Place::New(names.len(), offset)
                };
                frame.data = Bytes::new();
                table.push((frame, place));
            }
            if !builder.is_empty() {
                let (name, data) = builder.close();
                names.push(name.clone());
                uploads.spawn(upload(name, data));
            }
            while let Some(done) = uploads.join_next().await {
                sent.bytes += done??.0;
            }
            Ok(())
        }
        .await;
        drop(sealed);
        let packed = packer.await.map_err(Error::from).and_then(|r| r);
        let placements = match (result, packed) {
            (Ok(()), Ok(p)) => p,
            (Err(up), Err(pack)) if pack.to_string().contains(UPLOAD_STOPPED) => return Err(up),
            (_, Err(e)) | (Err(e), _) => return Err(e),
        };
        ledger.save(
            table
                .iter()
                .filter(|(f, _)| !f.raw_sha256.is_empty())
                .map(|(f, _)| (f.raw_sha256.clone(), f.sha256.clone(), f.length)),
        );
        let mut frames = Vec::with_capacity(table.len());
        let (mut offset, mut uncompressed_offset) = (0u64, 0u64);
        for (f, place) in table {
            let (pack, pack_offset) = match place {
                Place::Stored(pack, at) => (pack, at),
                Place::New(i, at) => (names[i].clone(), at),
            };
            frames.push(Frame {
                offset,
                length: f.length,
                uncompressed_offset,
                uncompressed_length: f.uncompressed,
                sha256: Some(f.sha256),
                pack: Some(pack),
                pack_offset: Some(pack_offset),
            });
            offset += f.length;
            uncompressed_offset += f.uncompressed;
        }
        sent.frames_reused = frames.len() as u64 - sent.frames_uploaded.min(frames.len() as u64);
        Ok((placements, frames))
    }

    /// One pass of packing: frames are cut on a blocking thread, sealed as many at a time as
    /// there are cores, and those the store lacks sent `IN_FLIGHT` at a time. `known` is what
    /// the store lists (`None`: ask it frame by frame). Returns the entries' placements and
    /// the frame table.
    async fn pack_and_send(
        &self,
        to: &BlockPath,
        entries: Arc<Vec<SourceEntry>>,
        known: Option<&HashSet<String>>,
        sent: &mut Sent,
        opts: &PutOptions,
        report_progress: bool,
    ) -> Result<(Vec<(u32, u64)>, Vec<Frame>)> {
        let progress = report_progress.then(|| opts.progress.clone()).flatten();
        let (rx, packer) = cut_frames(entries, progress, None);
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        let uploaded = AtomicU64::new(0);
        let uploaded_bytes = AtomicU64::new(0);
        // A frame compressed by an earlier put from here, whose compressed form the store
        // still lists, is found by hashing it rather than compressed again.
        let ledger = Arc::new(FrameLedger::open(&self.slug(to)));
        let reusable: Arc<HashSet<String>> = Arc::new(known.cloned().unwrap_or_default());
        let sealed = sealed_frames(rx, ledger.clone(), reusable, workers)
            .map_ok(|frame: SealedFrame| {
                let (uploaded, uploaded_bytes) = (&uploaded, &uploaded_bytes);
                async move {
                    let name = ObjectName::Frame(frame.sha256.clone());
                    let stored = match known {
                        Some(known) => known.contains(&frame.sha256),
                        None => self.store.has_object(to, &name).await?,
                    };
                    if !stored {
                        self.store
                            .write_object(to, &name, frame.data.clone())
                            .await?;
                        uploaded.fetch_add(1, Ordering::Relaxed);
                        uploaded_bytes.fetch_add(frame.length, Ordering::Relaxed);
                    }
                    Ok::<_, Error>((
                        frame.sha256,
                        frame.length,
                        frame.uncompressed,
                        frame.raw_sha256,
                    ))
                }
            })
            .try_buffered(IN_FLIGHT)
            .try_collect::<Vec<_>>()
            .await;
        let packed = packer.await.map_err(Error::from).and_then(|r| r);
        let (sealed, placements) = match (sealed, packed) {
            (Ok(s), Ok(p)) => (s, p),
            // When the upload failed, the packer only saw its channel close: the upload's
            // error says what happened. Otherwise the packer's own failure (a file changed
            // or unreadable) is the cause.
            (Err(up), Err(pack)) if pack.to_string().contains(UPLOAD_STOPPED) => return Err(up),
            (_, Err(e)) | (Err(e), _) => return Err(e),
        };
        ledger.save(
            sealed
                .iter()
                .map(|(sha, len, _, raw)| (raw.clone(), sha.clone(), *len)),
        );
        let mut frames = Vec::with_capacity(sealed.len());
        let (mut offset, mut uncompressed_offset) = (0u64, 0u64);
        for (sha256, length, uncompressed_length, _) in sealed {
            frames.push(Frame {
                offset,
                length,
                uncompressed_offset,
                uncompressed_length,
                sha256: Some(sha256),
                ..Frame::default()
            });
            offset += length;
            uncompressed_offset += uncompressed_length;
        }
        let ups = uploaded.into_inner();
        sent.frames_uploaded += ups;
        sent.bytes += uploaded_bytes.into_inner();
        sent.frames_reused = frames.len() as u64 - ups.min(frames.len() as u64);
        Ok((placements, frames))
    }

    /// A get of `version` (its `subtree`; with `opts.only`, the entries matching it) at `at`
    /// into `dest`, end to end: unpacked and verified in a staging folder beside it, then put
    /// in place as `opts.mode` says. A `--replace` of the whole version `dest` already holds,
    /// as this agent's record of it says ([`Placed`]), writes nothing. `name` gives an error
    /// of the destination the block's name.
    pub async fn get_into(
        &self,
        at: &BlockPath,
        version: &str,
        subtree: &str,
        dest: &Path,
        opts: &GetOptions,
        name: impl Fn(Error) -> Error,
    ) -> Result<GetReport> {
        let whole = subtree.is_empty() && opts.only.is_empty() && opts.mode != GetMode::Merge;
        let placed = Placed::for_get(dest, opts.no_cache, opts.cache_dir.as_deref());
        if whole && opts.mode == GetMode::Replace {
            let (p, d, v) = (placed.clone(), dest.to_path_buf(), version.to_string());
            let manifests = self.manifest_cache(at, opts);
            let held =
                tokio::task::spawn_blocking(move || p.holds(&d, &v, || manifests.get(&v))).await?;
            if let Some(held) = held {
                return Ok(GetReport {
                    version: Some(version.to_string()),
                    layout: Layout::Package,
                    files: held.files,
                    bytes: held.bytes,
                    files_linked: held.files,
                    ..GetReport::default()
                });
            }
        }
        let staging = staging_for(dest).map_err(&name)?;
        let report = self
            .get(at, version, subtree, staging.path(), dest, opts)
            .await?;
        commit(staging, dest, opts.mode).map_err(&name)?;
        let (d, v) = (dest.to_path_buf(), version.to_string());
        let held = Held {
            files: report.files,
            bytes: report.bytes,
        };
        tokio::task::spawn_blocking(move || match whole {
            true => placed.record(&d, &v, held),
            false => placed.forget(),
        })
        .await?;
        Ok(report)
    }

    /// The manifest cache a get with `opts` uses for the package at `at`. An agent with
    /// trusted keys checks the signature of every manifest it reads: it keeps none (its warm
    /// gets read HEAD and the manifest).
    fn manifest_cache(&self, at: &BlockPath, opts: &GetOptions) -> ManifestCache {
        let scope = match self.trust.trusted_keys {
            Some(_) => None,
            None => self.store.cache_scope(),
        };
        ManifestCache::for_get(
            scope.as_deref(),
            &self.slug(at),
            opts.no_cache,
            opts.cache_dir.as_deref(),
        )
    }

    /// Unpacks `version` (its `subtree`; with `opts.only`, the entries matching it) at `at`
    /// into `staging`; `dest` is where it will go, whose unchanged files a `--replace` takes
    /// over. The manifest comes from the agent's manifest cache when it holds it. Called by
    /// [`get_into`](Self::get_into), which makes the staging folder, commits and records.
    async fn get(
        &self,
        at: &BlockPath,
        version: &str,
        subtree: &str,
        staging: &Path,
        dest: &Path,
        opts: &GetOptions,
    ) -> Result<GetReport> {
        let cache = self.manifest_cache(at, opts);
        let (probe, v) = (cache.clone(), version.to_string());
        if let Some(manifest) = tokio::task::spawn_blocking(move || probe.get(&v)).await? {
            match self
                .get_manifest(at, manifest, subtree, staging, dest, opts)
                .await
            {
                // The store no longer holds what the cached manifest names (the version was
                // removed, then stored again in other packs): read its manifest again.
                Err(Error::Integrity(why)) => {
                    tracing::debug!(why = %why, "a get from a cached manifest failed; reading it again");
                    cache.forget(version);
                    empty_folder(staging)?;
                }
                done => return done,
            }
        }
        let manifest = self.manifest(at, version).await?;
        let (keep, m) = (cache, manifest.clone());
        tokio::task::spawn_blocking(move || {
            keep.put(&m);
            keep.trim();
        })
        .await?;
        self.get_manifest(at, manifest, subtree, staging, dest, opts)
            .await
    }

    /// [`get`](Self::get) of the version `manifest` describes.
    async fn get_manifest(
        &self,
        at: &BlockPath,
        mut manifest: PackageManifest,
        subtree: &str,
        staging: &Path,
        dest: &Path,
        opts: &GetOptions,
    ) -> Result<GetReport> {
        let slug = self.slug(at);
        let version = manifest.version.clone();
        let version = version.as_str();
        if !subtree.is_empty()
            && !manifest
                .entries
                .iter()
                .any(|e| e.path == subtree || e.path.starts_with(&format!("{subtree}/")))
        {
            return Err(Error::NotFound(format!(
                "{}: no such path in version {}",
                self.slug(&BlockPath::parse(&at.join(subtree))?),
                short(version)
            )));
        }
        let selection = self.select_only(at, &manifest, subtree, opts)?;
        let frames = match &selection {
            Some(s) => s.frames.clone(),
            None => manifest.frames.clone(),
        };
        let total = match &selection {
            Some(_) => frames.iter().map(|f| f.length).sum(),
            None => manifest.totals.package_bytes,
        };
        emit(
            &opts.progress,
            ProgressEvent::Phase {
                name: "downloading",
                total: Some(total),
            },
        );
        let progress = opts.progress.clone();
        let on_bytes: Box<dyn FnMut(u64) + Send> =
            Box::new(move |n| emit(&progress, ProgressEvent::Advance(n)));
        let counts = Arc::new(FrameCounts::default());
        let cache = FrameCache::for_get(opts.no_cache, opts.cache_dir.as_deref());
        let previous = (opts.mode == GetMode::Replace && dest.is_dir()).then(|| dest.to_path_buf());
        // A whole version the agent keeps a copy of is copied from it, each file checked.
        let trees = TreeCache::for_get(opts.no_cache, opts.cache_dir.as_deref());
        let whole = subtree.is_empty() && selection.is_none();
        if whole {
            let (t, s, p) = (trees.clone(), staging.to_path_buf(), previous.clone());
            let (copied, m) = tokio::task::spawn_blocking(move || {
                (t.copy_out(&manifest, &s, p.as_deref()), manifest)
            })
            .await?;
            manifest = m;
            if let Some(done) = copied {
                emit(&opts.progress, ProgressEvent::Done);
                return Ok(GetReport {
                    version: Some(version.to_string()),
                    layout: Layout::Package,
                    files: done.files,
                    bytes: done.bytes,
                    files_linked: done.linked,
                    files_copied: done.files - done.linked,
                    ..GetReport::default()
                });
            }
        }
        // Shared, not copied: the unpacking holds it, and a get that keeps a copy of the
        // version needs it after.
        let manifest = Arc::new(manifest);
        let kept = whole.then(|| manifest.clone());
        let done = if selection.is_none()
            && self.store.ranged_reads()
            && let Some(plan) = large_files::plan(&manifest, subtree)
        {
            self.get_large(
                at, manifest, plan, subtree, staging, previous, &cache, &counts, opts,
            )
            .await?
        } else {
            // A version of frames (not one archive) read whole has its frames decompressed
            // here, each on a thread of its own, ahead of the unpacking thread.
            let unpacked =
                selection.is_none() && matches!(manifest.format, FRAMES_FORMAT | PACKS_FORMAT);
            let stream = self
                .package_stream(at, &manifest, frames.clone(), cache.clone(), counts.clone())
                .await?;
            let (stream, on_bytes) = match unpacked {
                true => (decompressed(stream, frames, on_bytes), no_progress()),
                false => (stream, on_bytes),
            };
            let (reader, failure) =
                StreamReader::new(tokio::runtime::Handle::current(), stream, on_bytes);
            let staging = staging.to_path_buf();
            let subtree = subtree.to_string();
            let secrets = self.store.secrets().to_vec();
            tokio::task::spawn_blocking(move || {
                let reader: Box<dyn Read + Send> = Box::new(reader);
                let result = match selection {
                    None => {
                        // Format 1's one archive is decompressed here; frames were above.
                        let tar: Result<Box<dyn Read + Send>> = match unpacked {
                            true => Ok(reader),
                            false => decompressing(reader).map(|r| Box::new(r) as _),
                        };
                        tar.and_then(|tar| {
                            let prev = previous.as_deref();
                            unpack_tar_over(tar, &manifest, &staging, &subtree, prev, |_| {})
                        })
                    }
                    Some(s) => unpack_selection(reader, s, &manifest, &staging, &subtree, previous),
                };
                match (result, failure.lock().expect("failure slot").take()) {
                    (Err(_), Some(transfer)) => Err(transfer.scrubbed(&secrets).context(&slug)),
                    (r, _) => r.map_err(|e| e.context(&slug)),
                }
            })
            .await??
        };
        // An agent pulling versions again (most frames were cached) keeps a copy of this one.
        let (cached, downloaded) = (
            counts.cached.load(Ordering::Relaxed),
            counts.downloaded.load(Ordering::Relaxed),
        );
        let staging = staging.to_path_buf();
        tokio::task::spawn_blocking(move || {
            if let Some(m) = kept
                && cached > 0
                && cached >= downloaded
            {
                trees.link_in(&m, &staging);
            }
            cache.trim()
        })
        .await?;
        emit(&opts.progress, ProgressEvent::Done);
        Ok(GetReport {
            version: Some(version.to_string()),
            layout: Layout::Package,
            files: done.files,
            bytes: done.bytes,
            downloaded_bytes: counts.downloaded_bytes.load(Ordering::Relaxed),
            frames_downloaded: counts.downloaded.load(Ordering::Relaxed),
            frames_cached: counts.cached.load(Ordering::Relaxed),
            files_linked: done.linked,
            files_copied: 0,
        })
    }

    /// [`get_manifest`](Self::get_manifest) of a version with large files: their frames
    /// fetched by many ranged reads at once and written at their offsets as they land (see
    /// `large_files`), while the ordered unpacking hashes them and writes the rest.
    #[allow(clippy::too_many_arguments)]
    async fn get_large(
        &self,
        at: &BlockPath,
        manifest: Arc<PackageManifest>,
        mut plan: large_files::LargePlan,
        subtree: &str,
        staging: &Path,
        previous: Option<std::path::PathBuf>,
        cache: &FrameCache,
        counts: &Arc<FrameCounts>,
        opts: &GetOptions,
    ) -> Result<crate::package::extract::Extracted> {
        let slug = self.slug(at);
        let (staging, subtree) = (staging.to_path_buf(), subtree.to_string());
        let (plan, staging) = tokio::task::spawn_blocking(move || {
            large_files::prepare(&mut plan, &staging).map(|()| (plan, staging))
        })
        .await?
        .map_err(|e| e.context(&slug))?;
        let prefilled = plan.prefilled();
        let progress = opts.progress.clone();
        let landing = Arc::new(large_files::Landing {
            frames: manifest.frames.clone(),
            plan: Arc::new(plan),
            board: Arc::new(large_files::Board::new(manifest.frames.len())),
            cache: cache.clone(),
            counts: counts.clone(),
            on_bytes: Box::new(move |n| emit(&progress, ProgressEvent::Advance(n))),
        });
        let fetch = tokio::spawn(large_files::fetch(
            self.store.clone(),
            at.clone(),
            landing.clone(),
        ));
        let reader = large_files::LandedStream::new(landing.clone());
        let unpacked = tokio::task::spawn_blocking(move || {
            crate::package::extract::unpack_tar_prefilled(
                reader,
                &manifest,
                &staging,
                &subtree,
                previous.as_deref(),
                &prefilled,
                |_| {},
            )
        })
        .await;
        let unpacked = unpacked?;
        if unpacked.is_err() {
            // No read goes on for an unpacking that failed.
            fetch.abort();
        }
        let _ = fetch.await;
        // A store's own errors name the block already.
        let named = |e: Error| match e.to_string().contains(&slug) {
            true => e,
            false => e.context(&slug),
        };
        match (unpacked, landing.board.failure()) {
            (Err(_), Some(transfer)) => Err(named(transfer)),
            (r, _) => r.map_err(named),
        }
    }

    /// With `opts.only`, the entries it keeps and the frames that hold them; a glob set that
    /// keeps nothing is `NotFound`.
    fn select_only(
        &self,
        at: &BlockPath,
        manifest: &PackageManifest,
        subtree: &str,
        opts: &GetOptions,
    ) -> Result<Option<Selection>> {
        if opts.only.is_empty() {
            return Ok(None);
        }
        let slug = match subtree {
            "" => self.slug(at),
            s => self.slug(&BlockPath::parse(&at.join(s))?),
        };
        let set = partial::globs(&opts.only).map_err(|e| e.context(&slug))?;
        match partial::select(manifest, subtree, &set) {
            Some(selection) => Ok(Some(selection)),
            None => Err(Error::NotFound(format!(
                "{slug}: --only {} matches no entry of version {}",
                opts.only.join(" "),
                short(&manifest.version)
            ))),
        }
    }

    /// The package of a version as its `.tar.zst` stream, frames verified (`export`).
    pub async fn export(&self, at: &BlockPath, version: &str) -> Result<PackageExport> {
        let manifest = self.manifest(at, version).await?;
        let bytes = manifest.totals.package_bytes;
        let counts = Arc::new(FrameCounts::default());
        let slug = self.slug(at);
        let stream = self
            .package_stream(
                at,
                &manifest,
                manifest.frames.clone(),
                FrameCache::open(true),
                counts,
            )
            .await?
            .map_err(move |e| e.context(&slug))
            .boxed();
        Ok(PackageExport {
            version: version.to_string(),
            bytes,
            stream,
        })
    }

    /// The compressed package of `manifest`, in order: format 2's frames, each verified
    /// (from the cache where it can), or format 1's archive.
    async fn package_stream(
        &self,
        at: &BlockPath,
        manifest: &PackageManifest,
        frames: Vec<Frame>,
        cache: FrameCache,
        counts: Arc<FrameCounts>,
    ) -> Result<ByteStream> {
        if manifest.format == PACKS_FORMAT {
            return Ok(packs::frames_in_order(
                self.store.clone(),
                at.clone(),
                frames,
                cache,
                counts,
            ));
        }
        if manifest.format == FRAMES_FORMAT {
            return Ok(self.frame_stream(at, frames, cache, counts));
        }
        let name = ObjectName::Archive(manifest.version.clone());
        match self.store.read_object(at, &name, None).await? {
            Some(stream) => Ok(stream),
            None => Err(Error::Integrity(format!(
                "{}: the package of version {} is missing",
                self.slug(at),
                short(&manifest.version)
            ))),
        }
    }

    /// The frames of a format-2 version, in order, verified, `IN_FLIGHT` at a time.
    fn frame_stream(
        &self,
        at: &BlockPath,
        frames: Vec<Frame>,
        cache: FrameCache,
        counts: Arc<FrameCounts>,
    ) -> ByteStream {
        let (engine, at) = (self.clone(), at.clone());
        stream::iter(frames)
            .map(move |f| {
                let (engine, at, cache, counts) =
                    (engine.clone(), at.clone(), cache.clone(), counts.clone());
                async move { engine.fetch_frame(&at, &f, &cache, &counts).await }
            })
            .buffered(IN_FLIGHT)
            .boxed()
    }

    /// One frame's verified bytes: from the cache, else read from the store, checked and
    /// cached.
    async fn fetch_frame(
        &self,
        at: &BlockPath,
        frame: &Frame,
        cache: &FrameCache,
        counts: &FrameCounts,
    ) -> Result<Bytes> {
        let sha = frame.sha256.clone().unwrap_or_default();
        let download = async {
            // The manifest says how long the frame is: no more is read, and less is refused.
            let name = ObjectName::Frame(sha.clone());
            match self
                .store
                .read_object(at, &name, Some(0..frame.length))
                .await?
            {
                Some(stream) => {
                    let what = format!("{}: frame {}", self.slug(at), short(&sha));
                    Ok(Some(read_exact_len(stream, frame.length, &what).await?))
                }
                None => Ok(None),
            }
        };
        fetch_verified(cache, counts, &sha, "store", download)
            .await
            .map_err(|e| e.scrubbed(self.store.secrets()))
    }

    /// One file of a version: the frames that hold it (format 2: fetched by name, through
    /// the cache; format 1: one ranged read of the archive), checked by sha256.
    pub async fn read_file(&self, at: &BlockPath, version: &str, rel: &str) -> Result<Bytes> {
        let manifest = self.manifest(at, version).await?;
        let slug = self.slug(at);
        let index = manifest
            .entries
            .iter()
            .position(|e| e.path == rel)
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "{slug}: no file {rel} in version {}",
                    short(version)
                ))
            })?;
        let entry = manifest.entries[index].clone();
        if entry.kind != EntryKind::File {
            return Err(Error::Usage(
                format!("{slug}: {rel} is a {:?}, not a file", entry.kind).to_lowercase(),
            ));
        }
        let needed = manifest.frames_of_entry(index);
        let Some(start_frame) = needed.first().cloned() else {
            return Err(Error::Integrity(format!(
                "{slug}: {rel}: no frame holds it"
            )));
        };
        let compressed: Bytes = if manifest.format == PACKS_FORMAT {
            let counts = Arc::new(FrameCounts::default());
            let stream = packs::frames_in_order(
                self.store.clone(),
                at.clone(),
                needed.clone(),
                FrameCache::open(true),
                counts,
            );
            collect(stream).await.map_err(|e| e.context(&slug))?
        } else if manifest.format == FRAMES_FORMAT {
            let counts = FrameCounts::default();
            let cache = FrameCache::open(true);
            let mut all = Vec::new();
            for f in &needed {
                let data = self
                    .fetch_frame(at, f, &cache, &counts)
                    .await
                    .map_err(|e| e.context(&slug))?;
                all.extend_from_slice(&data);
            }
            all.into()
        } else {
            let last = needed.last().expect("one frame at least");
            let range = start_frame.offset..last.offset + last.length;
            let name = ObjectName::Archive(version.to_string());
            match self.store.read_object(at, &name, Some(range)).await? {
                Some(stream) => collect(stream).await?,
                None => {
                    return Err(Error::Integrity(format!(
                        "{slug}: the package of version {} is missing",
                        short(version)
                    )));
                }
            }
        };
        let rel = rel.to_string();
        tokio::task::spawn_blocking(move || {
            file_in_frames(&entry, &start_frame, &compressed)
                .map_err(|why| Error::Integrity(format!("{slug}: {rel}: {why}")))
        })
        .await?
    }
}

/// Unpacks, of `package` (the compressed frames `selection` names, or format 1's whole
/// archive), the kept entries' records, checked against the kept entries alone.
fn unpack_selection(
    package: Box<dyn Read + Send>,
    selection: Selection,
    manifest: &PackageManifest,
    staging: &Path,
    subtree: &str,
    previous: Option<std::path::PathBuf>,
) -> Result<crate::package::extract::Extracted> {
    let decoder =
        zstd::stream::read::Decoder::new(package).map_err(|e| Error::io("starting zstd", e))?;
    let frames = Frame::named_in(manifest.format).then_some(selection.frames.as_slice());
    let tar = partial::Kept::new(decoder, frames, selection.keep);
    unpack_tar_over(
        tar,
        &selection.manifest,
        staging,
        subtree,
        previous.as_deref(),
        |_| {},
    )
}

/// Cuts `entries`' tar stream into frames on a blocking thread, handing them on `rx`; the
/// task returns where each entry landed.
type Placements = Vec<(u32, u64)>;
fn cut_frames(
    entries: Arc<Vec<SourceEntry>>,
    progress: Option<Arc<dyn crate::block::ProgressObserver>>,
    known: Option<Arc<KnownFrames>>,
) -> (
    mpsc::Receiver<Cut>,
    tokio::task::JoinHandle<Result<Placements>>,
) {
    // Frames are up to 4 MiB each: two waiting are enough to keep the sealers busy.
    let (tx, rx) = mpsc::channel::<Cut>(2);
    let packer = tokio::task::spawn_blocking(move || {
        let send = |frame| {
            tx.blocking_send(frame)
                .map_err(|_| std::io::Error::other(UPLOAD_STOPPED))
        };
        let cuts = ContentCuts::reusing(send, known);
        let (placements, cuts) = pack_entries(&entries, cuts, |n| {
            emit(&progress, ProgressEvent::Advance(n))
        })?;
        cuts.finish()
            .map_err(|e| Error::io("writing the package", e))?;
        Ok::<_, Error>(placements)
    });
    (rx, packer)
}

/// The frames arriving on `rx`, sealed `workers` at a time, in order.
fn sealed_frames(
    rx: mpsc::Receiver<Cut>,
    ledger: Arc<FrameLedger>,
    reusable: Arc<HashSet<String>>,
    workers: usize,
) -> impl futures::Stream<Item = Result<SealedFrame>> + Send {
    receiver_stream(rx)
        .map(move |cut| {
            let (ledger, reusable) = (ledger.clone(), reusable.clone());
            async move {
                let raw = match cut {
                    Cut::Raw(raw) => raw,
                    // Named from the previous version: nothing to compress or hash.
                    Cut::Known(f) => {
                        return Ok(SealedFrame {
                            sha256: f.sha256,
                            data: Bytes::new(),
                            length: f.length,
                            uncompressed: f.uncompressed,
                            raw_sha256: String::new(),
                        });
                    }
                };
                tokio::task::spawn_blocking(move || seal_unless_known(&raw, &ledger, &reusable))
                    .await?
                    .map_err(|e| Error::io("compressing a frame", e))
            }
        })
        .buffered(workers)
}

/// The manifest of a version of `entries` whose frames (format 2 or 3) are `frames`.
fn frames_manifest(
    format: u32,
    version: &str,
    entries: &[SourceEntry],
    placements: &[(u32, u64)],
    frames: Vec<Frame>,
    opts: &PutOptions,
) -> PackageManifest {
    let records = placed(entries, placements);
    let package_bytes = frames.last().map_or(0, |f| f.offset + f.length);
    PackageManifest {
        format,
        version: version.to_string(),
        created: now(),
        compression: "zstd".into(),
        totals: Totals::count(&records, package_bytes),
        frames,
        entries: records,
        record: opts.record.clone(),
    }
}

/// A frame sealed (compressed and named), or, when an earlier put from here compressed the
/// same bytes into a frame the store still holds, named from the ledger without compressing.
fn seal_unless_known(
    raw: &[u8],
    ledger: &FrameLedger,
    reusable: &HashSet<String>,
) -> std::io::Result<SealedFrame> {
    let raw_sha256 = frame_hash(raw);
    match ledger.get(&raw_sha256) {
        Some((sha, length)) if reusable.contains(sha) => Ok(SealedFrame {
            sha256: sha.to_string(),
            data: Bytes::new(),
            length,
            uncompressed: raw.len() as u64,
            raw_sha256,
        }),
        _ => seal(raw),
    }
}

/// The tree a put of `src` stores, every file hashed (the stat cache makes re-puts cheap);
/// its warnings are reported as progress events.
pub async fn scan(src: &Path, opts: &PutOptions) -> Result<SourceTree> {
    let scan = ScanOptions {
        ignore_file: opts.ignore_file.clone(),
        no_default_ignores: opts.no_default_ignores,
        follow_symlinks: opts.follow_symlinks,
    };
    emit(
        &opts.progress,
        ProgressEvent::Phase {
            name: "scanning",
            total: None,
        },
    );
    let src = src.to_path_buf();
    let tree = tokio::task::spawn_blocking(move || {
        let mut tree = SourceTree::scan(&src, &scan)?;
        tree.hash_files_cached(&HashCache::open(&src))?;
        Ok::<_, Error>(tree)
    })
    .await??;
    for w in &tree.warnings {
        emit(&opts.progress, ProgressEvent::Warning(w.clone()));
    }
    Ok(tree)
}

/// All of a stream's bytes (the chunk itself when there is one, as [`joined`] gives them).
async fn collect(stream: ByteStream) -> Result<Bytes> {
    Ok(joined(stream.try_collect().await?))
}

/// Frames a reader decompresses at once, ahead of the unpacking.
const DECOMPRESSING: usize = 2;

/// `stream`, the verified compressed `frames` in order, as their decompressed bytes: each
/// frame on a blocking thread, [`DECOMPRESSING`] at a time, never past the length its
/// manifest declares (more, or less, is an integrity error). `on_bytes` counts the
/// compressed bytes, as the download's progress does.
fn decompressed(
    stream: ByteStream,
    frames: Vec<Frame>,
    mut on_bytes: Box<dyn FnMut(u64) + Send>,
) -> ByteStream {
    stream
        .zip(stream::iter(frames))
        .map(move |(data, frame)| {
            if let Ok(d) = &data {
                on_bytes(d.len() as u64);
            }
            async move {
                let data = data?;
                let raw = tokio::task::spawn_blocking(move || decompress_frame(&data, &frame));
                raw.await?.map(Bytes::from)
            }
        })
        .buffered(DECOMPRESSING)
        .boxed()
}

/// A progress callback that reports nothing.
fn no_progress() -> Box<dyn FnMut(u64) + Send> {
    Box::new(|_| {})
}

/// A stream over a channel's receiver.
fn receiver_stream<T: Send + 'static>(
    rx: mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send {
    stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|v| (v, rx)) })
}

pub(crate) fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}
