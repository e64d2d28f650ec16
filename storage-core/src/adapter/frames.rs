//! Format 2 transfers: a put sends only the frames the store lacks, many in flight; a get
//! fetches frames many in flight (or from the agent cache), each checked against its sha256
//! before it is used. Puts and `gc` coordinate through small records under `.blocks/`: a put
//! declares an intent before it looks for frames to reuse, and `gc` removes no frame while an
//! intent is live; a `gc` marks itself while it runs, and a put re-checks its frames after
//! every running `gc` is done, before its manifest and HEAD are written.

use std::collections::HashSet;
use std::sync::atomic::AtomicU64;

use crate::framecache::{FrameCache, FrameCounts, fetch_verified};
use crate::frames::{ContentCuts, SealedFrame, frame_hash, seal};
use crate::hashcache::FrameLedger;
use crate::manifest::{FRAMES_FORMAT, Frame};
use crate::pack::pack_entries;
use crate::tree::SourceEntry;

use super::*;

/// Where frames live, shared by every version at a path.
pub(super) const FRAMES: &str = ".blocks/frames";
/// One record per put under way that may reuse frames.
pub(super) const INTENTS: &str = ".blocks/intents";
/// One record per gc under way.
pub(super) const GC_MARKS: &str = ".blocks/gc";
/// An intent not renewed for this long is a killed put's, and no longer holds gc back.
pub(super) const INTENT_LIFETIME: Duration = Duration::from_secs(60);
/// How often a put renews its intent.
const INTENT_RENEWAL: Duration = Duration::from_secs(15);
/// A gc mark older than this is a killed gc's, and no longer holds puts back.
pub(super) const GC_LIFETIME: Duration = Duration::from_secs(600);
/// Frames fetched or sent at once.
pub(super) const IN_FLIGHT: usize = 8;
/// A put re-packs at most this many times when a gc removed frames it meant to reuse.
const ATTEMPTS: usize = 3;

/// A put's intent record, and the task that renews it.
pub(super) struct Intent {
    key: ObjPath,
    renewal: tokio::task::JoinHandle<()>,
}

/// What the packer reports when the uploader has gone.
const UPLOAD_STOPPED: &str = "the upload stopped";

/// What a put sent.
#[derive(Debug, Default)]
pub(super) struct Sent {
    pub bytes: u64,
    pub frames_uploaded: u64,
    pub frames_reused: u64,
}

impl ObjectStoreBlock {
    pub(super) fn frame_key(&self, at: &BlockPath, sha256: &str) -> Result<ObjPath> {
        self.key(at, &format!("{FRAMES}/{sha256}.zst"))
    }

    /// Names of the frames stored at `at`, with their times.
    pub(super) async fn stored_frames(&self, at: &BlockPath) -> Result<Vec<(String, ObjectMeta)>> {
        let prefix = self.key(at, FRAMES)?;
        let metas: Vec<ObjectMeta> = self
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(self.fail(at))?;
        Ok(metas
            .into_iter()
            .filter_map(|m| {
                let name = m.location.filename()?.strip_suffix(".zst")?.to_string();
                is_version_id(&name).then_some((name, m))
            })
            .collect())
    }

    /// Records of one kind (`INTENTS`, `GC_MARKS`) younger than `lifetime`; older ones are
    /// removed when `sweep` is set.
    pub(super) async fn live_records(
        &self,
        at: &BlockPath,
        kind: &str,
        lifetime: Duration,
        sweep: bool,
    ) -> Result<usize> {
        let prefix = self.key(at, kind)?;
        let metas: Vec<ObjectMeta> = self
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(self.fail(at))?;
        let cutoff = unix_millis() - lifetime.as_millis() as i64;
        let (live, stale): (Vec<_>, Vec<_>) = metas
            .into_iter()
            .partition(|m| m.last_modified.timestamp_millis() >= cutoff);
        if sweep {
            self.delete_all(at, stale.into_iter().map(|m| m.location).collect())
                .await?;
        }
        Ok(live.len())
    }

    /// Writes a record of one kind; returns its key.
    pub(super) async fn write_record(&self, at: &BlockPath, kind: &str) -> Result<ObjPath> {
        let key = self.key(at, &format!("{kind}/{}.json", unique_name()))?;
        self.renew_record(at, &key).await?;
        Ok(key)
    }

    async fn renew_record(&self, at: &BlockPath, key: &ObjPath) -> Result<()> {
        let body = serde_json::json!({ "pid": std::process::id(), "written": now() });
        self.store
            .put(key, body.to_string().into())
            .await
            .map_err(self.fail(at))?;
        Ok(())
    }

    /// Records that a put is under way at `at`, renewed until it is withdrawn. Retried once:
    /// with `gc --grace 0` on a local store, a gc may sweep the record's staging file before
    /// it is renamed into place.
    pub(super) async fn declare_intent(&self, at: &BlockPath) -> Result<Intent> {
        let key = match self.write_record(at, INTENTS).await {
            Ok(key) => key,
            Err(_) => self.write_record(at, INTENTS).await?,
        };
        let (block, at2, key2) = (self.clone(), at.clone(), key.clone());
        let renewal = tokio::spawn(async move {
            loop {
                tokio::time::sleep(INTENT_RENEWAL).await;
                let _ = block.renew_record(&at2, &key2).await;
            }
        });
        Ok(Intent { key, renewal })
    }

    /// Removes an intent; a failure only leaves it to expire.
    pub(super) async fn withdraw_intent(&self, intent: Intent) {
        intent.renewal.abort();
        let _ = self.store.delete(&intent.key).await;
    }

    /// Waits until no gc is running at `at` (or the marks of those running have expired).
    pub(super) async fn wait_for_gc(&self, at: &BlockPath) -> Result<()> {
        let mut pause = Duration::from_millis(50);
        while self.live_records(at, GC_MARKS, GC_LIFETIME, false).await? > 0 {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
        Ok(())
    }

    /// Packs `entries` into content-defined frames, uploads those the store lacks, and
    /// writes the format-2 manifest. Called with an intent declared.
    pub(super) async fn put_frames(
        &self,
        to: &BlockPath,
        version: &str,
        entries: Vec<SourceEntry>,
        opts: &PutOptions,
    ) -> Result<Sent> {
        let entries = Arc::new(entries);
        let mut known: HashSet<String> = self
            .stored_frames(to)
            .await?
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        let mut sent = Sent::default();
        for attempt in 1..=ATTEMPTS {
            let (placements, frames) = self
                .pack_and_send(to, entries.clone(), &known, &mut sent, opts, attempt == 1)
                .await?;
            // A gc that began before our intent may still be removing frames we reuse: wait
            // for it, then check that every frame is there.
            self.wait_for_gc(to).await?;
            known = self
                .stored_frames(to)
                .await?
                .into_iter()
                .map(|(n, _)| n)
                .collect();
            let missing = frames
                .iter()
                .filter(|f| !known.contains(f.sha256.as_deref().unwrap_or_default()))
                .count();
            if missing > 0 {
                tracing::debug!(missing, attempt, "a gc removed frames this put reused");
                continue;
            }
            let records = crate::pack::placed(&entries, &placements);
            let package_bytes = frames.last().map_or(0, |f| f.offset + f.length);
            let manifest = PackageManifest {
                format: FRAMES_FORMAT,
                version: version.to_string(),
                created: now(),
                compression: "zstd".into(),
                totals: Totals::count(&records, package_bytes),
                frames,
                entries: records,
                record: opts.record.clone(),
            };
            let body = manifest.to_compressed();
            sent.bytes += body.len() as u64;
            self.store
                .put(&self.manifest_zst_key(to, version)?, body.into())
                .await
                .map_err(self.fail(to))?;
            return Ok(sent);
        }
        Err(Error::Backend(format!(
            "{}: a gc running at the same time kept removing frames this put reuses; put again",
            self.slug(to)
        )))
    }

    /// One pass of packing: frames are cut on a blocking thread, compressed two at a time,
    /// and those not in `known` uploaded `IN_FLIGHT` at a time. Returns the placements of
    /// the entries and the frame table.
    async fn pack_and_send(
        &self,
        to: &BlockPath,
        entries: Arc<Vec<SourceEntry>>,
        known: &HashSet<String>,
        sent: &mut Sent,
        opts: &PutOptions,
        report_progress: bool,
    ) -> Result<(Vec<(u32, u64)>, Vec<Frame>)> {
        let (tx, rx) = mpsc::channel::<Vec<u8>>(4);
        let progress = report_progress.then(|| opts.progress.clone()).flatten();
        let packer = tokio::task::spawn_blocking(move || {
            let cuts = ContentCuts::new(|frame| {
                tx.blocking_send(frame)
                    .map_err(|_| std::io::Error::other(UPLOAD_STOPPED))
            });
            let (placements, cuts) = pack_entries(&entries, cuts, |n| {
                emit(&progress, ProgressEvent::Advance(n))
            })?;
            cuts.finish()
                .map_err(|e| Error::io("writing the package", e))?;
            Ok::<_, Error>(placements)
        });
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        let uploaded = AtomicU64::new(0);
        let uploaded_bytes = AtomicU64::new(0);
        // A frame compressed by an earlier put from here, whose compressed form the store
        // still lists, is found by hashing it rather than compressed again.
        let ledger = Arc::new(FrameLedger::open(&self.slug(to)));
        let reusable: Arc<HashSet<String>> = Arc::new(known.clone());
        let sealed = tokio_stream_of(rx)
            .map(|raw| {
                let (ledger, reusable) = (ledger.clone(), reusable.clone());
                async move {
                    tokio::task::spawn_blocking(move || {
                        let raw_sha256 = frame_hash(&raw);
                        match ledger.get(&raw_sha256) {
                            Some((sha, length)) if reusable.contains(sha) => Ok(SealedFrame {
                                sha256: sha.to_string(),
                                data: Bytes::new(),
                                length,
                                uncompressed: raw.len() as u64,
                                raw_sha256,
                            }),
                            _ => seal(&raw),
                        }
                    })
                    .await?
                    .map_err(|e| Error::io("compressing a frame", e))
                }
            })
            .buffered(workers)
            .map_ok(|frame: SealedFrame| {
                let (uploaded, uploaded_bytes) = (&uploaded, &uploaded_bytes);
                async move {
                    if !known.contains(&frame.sha256) {
                        let key = self.frame_key(to, &frame.sha256)?;
                        let len = frame.length;
                        self.store
                            .put(&key, frame.data.clone().into())
                            .await
                            .map_err(self.fail(to))?;
                        uploaded.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        uploaded_bytes.fetch_add(len, std::sync::atomic::Ordering::Relaxed);
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

    /// One frame's verified bytes: from the cache, else downloaded, checked and cached.
    pub(super) async fn fetch_frame(
        &self,
        at: &BlockPath,
        frame: &Frame,
        cache: &FrameCache,
        counts: &FrameCounts,
    ) -> Result<Bytes> {
        let sha = frame.sha256.clone().unwrap_or_default();
        let download = async {
            let key = self.frame_key(at, &sha)?;
            let data = match self.store.get(&key).await {
                Ok(got) => got.bytes().await,
                Err(e) => Err(e),
            };
            match data {
                Ok(d) => Ok(Some(d)),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(scrub_error(Error::from_store(e), &self.secrets)),
            }
        };
        fetch_verified(cache, counts, &sha, "store", download).await
    }
}

/// A stream over a channel's receiver.
fn tokio_stream_of<T: Send + 'static>(
    rx: mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send {
    stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|v| (v, rx)) })
}

/// A name no other process picks: the process id, the time, and a counter, hashed.
fn unique_name() -> String {
    use sha2::Digest;
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let t = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    hex::encode(&sha2::Sha256::digest(format!("{}-{t}-{n}", std::process::id()))[..12])
}

pub(super) fn unix_millis() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i64
}
