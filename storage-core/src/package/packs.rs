//! Format 3: frames stored together in packs, read by range.
//!
//! A put writes the frames the current version lacks into new packs of about [`PACK_TARGET`]
//! bytes ([`LARGE_PACK_TARGET`] in a version of more than [`LARGE_VERSION`] file bytes), each named by the sha256 of its bytes; the manifest names every frame's pack and
//! offset. A get groups the frames it lacks by pack, coalesces neighbours (gaps up to
//! [`GAP_MAX`], reads up to [`RANGE_MAX`]) into ranged reads, runs [`RANGES_IN_FLIGHT`] of
//! them at once, checks every frame against its sha256 and hands them on in order. So a cold
//! get costs HEAD, the manifest and about one request per 16 MiB, whatever the frame count.
//! A get of more than [`READ_ALL_AT_ONCE`] reads by [`LARGE_GET_RANGE_MAX`] instead, holding
//! at most [`READ_BYTES_HELD`] in reads and frames not yet handed on: its memory stays flat
//! as the version grows. Each frame gets its own buffer as its bytes arrive, so a frame
//! still being unpacked keeps no range alive.
//!
//! Edits add small packs. So that a version never spans many of them, a put retires the
//! packs of the previous version that hold the least of it once that version spans more
//! than its size needs plus [`EXTRA_PACKS`]: their frames are written again into the new
//! pack. What a put rewrites is thus bounded by the bytes of the retired small packs, and a
//! version spans at most `ceil(size / pack_target) + EXTRA_PACKS + 1` packs.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::package::frame_cache::{FrameCache, FrameCounts, verify_frame};
use crate::package::manifest::{Frame, PACKS_FORMAT, PackageManifest, short};
use crate::package::store::{ByteStream, ObjectName, PackageStore};
use crate::retry::{RANGED_READ_WINDOW, RetryPolicy};
use crate::slug::BlockPath;

/// A pack is closed once the next frame would take it past this many bytes (in a version
/// of no more than [`LARGE_VERSION`] file bytes; see [`pack_target`]).
pub const PACK_TARGET: usize = 16 << 20;
/// The pack target of a version of more than [`LARGE_VERSION`] file bytes. Its get reads by
/// [`LARGE_GET_RANGE_MAX`] whatever its packs' size, so smaller packs cost it no request,
/// and its put holds half the bytes in the pack uploading and the one filled meanwhile.
pub const LARGE_PACK_TARGET: usize = 8 << 20;
/// File bytes past which a version's packs are [`LARGE_PACK_TARGET`]: above
/// [`READ_ALL_AT_ONCE`], so that a flow project keeps its few 16 MiB packs.
pub const LARGE_VERSION: u64 = 64 << 20;
/// No pack is larger: the target plus one frame (at most 4 MiB of data, compressed).
pub const PACK_MAX: u64 = (PACK_TARGET as u64) + (5 << 20);
/// A ranged read never asks for more than this (nor for more than one pack)...
pub const RANGE_MAX: u64 = 16 << 20;
/// ...and reads through a gap of unneeded bytes up to this size rather than make a request.
pub const GAP_MAX: u64 = 1 << 20;
/// Ranged reads in flight at once.
pub const RANGES_IN_FLIGHT: usize = 4;
/// A get of no more than this many bytes from the store reads them all at once, in reads of
/// up to [`RANGE_MAX`] (a flow project: HEAD, manifest and a request per pack)...
pub const READ_ALL_AT_ONCE: u64 = 48 << 20;
/// ...a larger one in reads of up to this size, as many in flight as fit
/// [`READ_BYTES_HELD`], so that its memory stays flat however large the version.
pub const LARGE_GET_RANGE_MAX: u64 = 8 << 20;
/// Bytes a large get holds at most between its reads in flight and the frames they brought
/// that are not yet handed on (one read more when none is in flight: a get always moves).
pub const READ_BYTES_HELD: u64 = 24 << 20;
/// Packs being uploaded at once while the next one fills: a put holds at most this many
/// packs and the one filled meanwhile (32 MiB; 16 MiB past [`LARGE_VERSION`]).
pub const PACKS_IN_FLIGHT: usize = 1;
/// How many packs beyond what its size needs a version may span before a put repacks.
pub const EXTRA_PACKS: usize = 2;

/// The size a put closes packs at, for a version of `file_bytes` bytes of files.
pub fn pack_target(file_bytes: u64) -> usize {
    if file_bytes > LARGE_VERSION {
        LARGE_PACK_TARGET
    } else {
        PACK_TARGET
    }
}

/// Where a frame of the previous version lives, for a put that reuses it.
#[derive(Debug, Clone)]
pub struct StoredFrame {
    /// The pack holding the frame (the sha256 of the pack's bytes).
    pub pack: String,
    /// Where the frame starts in that pack.
    pub pack_offset: u64,
    /// Bytes of the compressed frame.
    pub length: u64,
}

/// The frames of `previous` (a format-3 manifest) that a put may reuse: all but those in
/// the packs it retires so that the new version spans few packs.
pub fn reusable_frames(previous: &PackageManifest) -> HashMap<String, StoredFrame> {
    if previous.format != PACKS_FORMAT {
        return HashMap::new();
    }
    let mut used: HashMap<&str, u64> = HashMap::new();
    let mut total = 0u64;
    for f in &previous.frames {
        *used
            .entry(f.pack.as_deref().unwrap_or_default())
            .or_default() += f.length;
        total += f.length;
    }
    let target = pack_target(previous.totals.bytes) as u64;
    let allowed = (total.div_ceil(target) as usize).max(1) + EXTRA_PACKS;
    let mut by_use: Vec<(&str, u64)> = used.into_iter().collect();
    // Most used first; ties by name, so the choice is the same on every machine.
    by_use.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    // The new version adds a pack of its own: keep room for it.
    let kept: HashSet<&str> = by_use
        .iter()
        .take(allowed.saturating_sub(1))
        .map(|(p, _)| *p)
        .collect();
    previous
        .frames
        .iter()
        .filter(|f| kept.contains(f.pack.as_deref().unwrap_or_default()))
        .filter_map(|f| {
            Some((
                f.sha256.clone()?,
                StoredFrame {
                    pack: f.pack.clone()?,
                    pack_offset: f.pack_offset?,
                    length: f.length,
                },
            ))
        })
        .collect()
}

/// One ranged read: `start..end` of a pack, and the frames (by index) it holds, with their
/// place in the range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeRead {
    /// The pack to read from.
    pub pack: String,
    /// The first byte of the range.
    pub start: u64,
    /// The byte after the range's last.
    pub end: u64,
    /// The frames the range covers, in pack order.
    pub frames: Vec<RangeFrame>,
}

/// A frame inside a [`RangeRead`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeFrame {
    /// The frame's index in the manifest's frame table.
    pub index: usize,
    /// Where the frame starts in the pack.
    pub offset: u64,
    /// Bytes of the compressed frame.
    pub length: u64,
    /// The sha256 its compressed bytes must have.
    pub sha256: String,
}

impl RangeRead {
    fn first_index(&self) -> usize {
        self.frames.iter().map(|f| f.index).min().unwrap_or(0)
    }
}

/// The ranged reads that fetch `frames` (index, frame; all of format 3): per pack, sorted by
/// offset, neighbours merged through gaps up to [`GAP_MAX`] into reads of at most
/// [`RANGE_MAX`]; ordered by the first frame each holds, as a get consumes them.
pub fn plan_reads(frames: &[(usize, &Frame)]) -> Vec<RangeRead> {
    plan_reads_of_at_most(frames, RANGE_MAX)
}

/// [`plan_reads`] with reads of at most `range_max` bytes (or one frame, if larger).
pub fn plan_reads_of_at_most(frames: &[(usize, &Frame)], range_max: u64) -> Vec<RangeRead> {
    let mut by_pack: BTreeMap<&str, Vec<RangeFrame>> = BTreeMap::new();
    for (index, f) in frames {
        by_pack
            .entry(f.pack.as_deref().unwrap_or_default())
            .or_default()
            .push(RangeFrame {
                index: *index,
                offset: f.pack_offset.unwrap_or_default(),
                length: f.length,
                sha256: f.sha256.clone().unwrap_or_default(),
            });
    }
    let mut reads = Vec::new();
    for (pack, mut members) in by_pack {
        members.sort_by_key(|m| (m.offset, m.index));
        let mut current: Option<RangeRead> = None;
        for m in members {
            let end = m.offset.saturating_add(m.length);
            if let Some(r) = current.as_mut()
                && m.offset <= r.end.saturating_add(GAP_MAX)
                && end.max(r.end) - r.start <= range_max
            {
                r.end = r.end.max(end);
                r.frames.push(m);
                continue;
            }
            reads.extend(current.take());
            current = Some(RangeRead {
                pack: pack.to_string(),
                start: m.offset,
                end,
                frames: vec![m],
            });
        }
        reads.extend(current);
    }
    for r in &mut reads {
        for f in &mut r.frames {
            f.offset -= r.start;
        }
    }
    reads.sort_by_key(RangeRead::first_index);
    reads
}

/// Reads one range and returns its frames, each verified against its sha256 and cached.
/// A cut or short read is tried again under [`RetryPolicy::RANGED_READ`].
async fn fetch_range(
    store: Arc<dyn PackageStore>,
    at: BlockPath,
    read: RangeRead,
    cache: FrameCache,
    counts: Arc<FrameCounts>,
) -> Result<Vec<(usize, Bytes)>> {
    let began = std::time::Instant::now();
    let data = RetryPolicy::RANGED_READ
        .run(
            |_| read_range(store.as_ref(), &at, &read),
            |e| worth_reading_again(e) && began.elapsed() <= RANGED_READ_WINDOW,
        )
        .await?;
    tokio::task::spawn_blocking(move || {
        let mut out = Vec::with_capacity(read.frames.len());
        for (f, bytes) in read.frames.iter().zip(data) {
            verify_frame(&f.sha256, &bytes, "store")?;
            counts.add_download(f.length);
            cache.put(&f.sha256, &bytes);
            out.push((f.index, bytes));
        }
        Ok(out)
    })
    .await?
}

/// Whether a ranged read that failed with `e` may do better read again: a cut, short or
/// failed read may; a missing pack, refused credentials or a bad request will not.
pub(crate) fn worth_reading_again(e: &Error) -> bool {
    !matches!(e, Error::NotFound(_) | Error::Auth(_) | Error::Usage(_))
}

/// The frames of one range, in the read's order, each in its own buffer as the bytes
/// arrive (so that a range is never held whole, nor kept alive by one frame still in use):
/// exactly the range's bytes are read (the whole pack where the store has no ranged reads);
/// a store sending more or fewer is refused.
async fn read_range(
    store: &dyn PackageStore,
    at: &BlockPath,
    read: &RangeRead,
) -> Result<Vec<Bytes>> {
    let name = ObjectName::Pack(read.pack.clone());
    let slug = store.slug(at);
    let pack = short(&read.pack);
    let wanted = read.end - read.start;
    if wanted > PACK_MAX {
        // No pack holds more: a manifest that says otherwise is not one a put wrote.
        return Err(Error::Integrity(format!(
            "{slug}: pack {pack}: a read of {wanted} bytes, more than any pack holds"
        )));
    }
    // Where the range starts in the stream (the whole pack's, without ranged reads), and the
    // most the stream may send.
    let ranged = store.ranged_reads();
    let (base, cap) = match ranged {
        true => (0, wanted),
        false => (read.start, PACK_MAX),
    };
    let range = ranged.then_some(read.start..read.end);
    let mut stream = store.read_object(at, &name, range).await?.ok_or_else(|| {
        Error::Integrity(format!("{slug}: pack {pack} is missing from the store"))
    })?;
    let mut frames: Vec<BytesMut> = read
        .frames
        .iter()
        .map(|f| BytesMut::with_capacity(f.length as usize))
        .collect();
    // Frames before this one are complete.
    let mut first_open = 0;
    let mut sent = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        // The chunk's place in the stream.
        let (from, to) = (sent, sent + chunk.len() as u64);
        sent = to;
        if sent > cap {
            return Err(Error::Integrity(format!(
                "{slug}: pack {pack}: the store sent more than the {cap} bytes asked"
            )));
        }
        for (f, buf) in read.frames.iter().zip(frames.iter_mut()).skip(first_open) {
            let (start, end) = (base + f.offset, base + f.offset + f.length);
            if start >= to {
                break;
            }
            let (lo, hi) = (start.max(from), end.min(to));
            if lo < hi {
                buf.extend_from_slice(&chunk[(lo - from) as usize..(hi - from) as usize]);
            }
        }
        while first_open < frames.len()
            && frames[first_open].len() as u64 == read.frames[first_open].length
        {
            first_open += 1;
        }
    }
    if ranged && sent != wanted {
        return Err(Error::Integrity(format!(
            "{slug}: pack {pack}: the store sent {sent} bytes of the {wanted} asked"
        )));
    }
    if first_open < frames.len() {
        return Err(Error::Integrity(format!(
            "{slug}: pack {pack} holds {sent} bytes, less than its manifest says"
        )));
    }
    Ok(frames.into_iter().map(BytesMut::freeze).collect())
}

/// `frames` (format 3), in order, verified: from the cache where it holds them, the rest by
/// coalesced ranged reads: all at once when they come to [`READ_ALL_AT_ONCE`] or less,
/// else smaller ones, as many as fit [`READ_BYTES_HELD`] between the reads in flight and
/// the frames read but not yet handed on.
pub fn frames_in_order(
    store: Arc<dyn PackageStore>,
    at: BlockPath,
    frames: Vec<Frame>,
    cache: FrameCache,
    counts: Arc<FrameCounts>,
) -> ByteStream {
    let (tx, rx) = mpsc::channel::<Result<Bytes>>(FRAMES_AHEAD);
    tokio::spawn(async move {
        let probe = (cache.clone(), frames.clone());
        let cached: Vec<bool> = match tokio::task::spawn_blocking(move || {
            let (cache, frames) = probe;
            frames
                .iter()
                .map(|f| cache.contains(f.sha256.as_deref().unwrap_or_default()))
                .collect()
        })
        .await
        {
            Ok(c) => c,
            Err(e) => {
                let _ = tx.send(Err(e.into())).await;
                return;
            }
        };
        let missing: Vec<(usize, &Frame)> = frames
            .iter()
            .enumerate()
            .filter(|(i, _)| !cached[*i])
            .collect();
        let bytes: u64 = missing.iter().map(|(_, f)| f.length).sum();
        let (plan, budget) = if bytes <= READ_ALL_AT_ONCE {
            (plan_reads(&missing), READ_ALL_AT_ONCE)
        } else if !store.ranged_reads() {
            // Each read streams its whole pack: smaller reads would stream each pack twice.
            (plan_reads(&missing), READ_BYTES_HELD)
        } else {
            let plan = plan_reads_of_at_most(&missing, LARGE_GET_RANGE_MAX);
            (plan, READ_BYTES_HELD)
        };
        let mut reads = Reads::new(plan, budget, |read| {
            let (store, at, cache, counts) =
                (store.clone(), at.clone(), cache.clone(), counts.clone());
            tokio::spawn(fetch_range(store, at, read, cache, counts))
        });
        for (i, f) in frames.iter().enumerate() {
            let sha = f.sha256.clone().unwrap_or_default();
            reads.start_within_budget();
            let next = if cached[i] {
                from_cache_or_store(&store, &at, i, f, &cache, &counts, &sha).await
            } else {
                reads.frame(i).await.unwrap_or_else(|| {
                    Err(Error::Integrity(format!(
                        "{}: frame {} was planned in no read",
                        store.slug(&at),
                        short(&sha)
                    )))
                })
            };
            let failed = next.is_err();
            if tx.send(next).await.is_err() || failed {
                return;
            }
        }
    });
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|v| (v, rx)) }).boxed()
}

/// Frames handed on ahead of the one being unpacked.
const FRAMES_AHEAD: usize = 2;

type ReadTask = tokio::task::JoinHandle<Result<Vec<(usize, Bytes)>>>;
type Read = futures::future::BoxFuture<'static, (u64, Result<Vec<(usize, Bytes)>>)>;

/// The planned reads of one get: started in plan order (the order frames are consumed)
/// while they fit the budget, finished in any order, their frames kept by index until asked
/// for.
struct Reads<F> {
    plan: std::iter::Peekable<std::vec::IntoIter<RangeRead>>,
    spawn: F,
    in_flight: futures::stream::FuturesUnordered<Read>,
    /// Frames read and not yet asked for, by index.
    pending: HashMap<usize, Bytes>,
    /// Bytes of the reads in flight and of the frames pending.
    held: u64,
    /// The most `held` may be, but for the read started when none is in flight.
    budget: u64,
}

impl<F: FnMut(RangeRead) -> ReadTask> Reads<F> {
    fn new(plan: Vec<RangeRead>, budget: u64, spawn: F) -> Self {
        Reads {
            plan: plan.into_iter().peekable(),
            spawn,
            in_flight: futures::stream::FuturesUnordered::new(),
            pending: HashMap::new(),
            held: 0,
            budget,
        }
    }

    /// Starts the next reads of the plan while they fit the budget, and the next one in any
    /// case when none is in flight (the frame asked for next is then in it).
    fn start_within_budget(&mut self) {
        while let Some(next) = self.plan.peek() {
            let len = next.end - next.start;
            let fits = self.in_flight.len() < RANGES_IN_FLIGHT
                && self.held.saturating_add(len) <= self.budget;
            if !fits && !self.in_flight.is_empty() {
                return;
            }
            let task = (self.spawn)(self.plan.next().expect("peeked"));
            self.held += len;
            self.in_flight.push(Box::pin(async move {
                (len, task.await.unwrap_or_else(|e| Err(e.into())))
            }));
        }
    }

    /// Frame `index`: pending already, or once the read holding it is done; `None` when no
    /// read holds it.
    async fn frame(&mut self, index: usize) -> Option<Result<Bytes>> {
        loop {
            if let Some(data) = self.pending.remove(&index) {
                self.held = self.held.saturating_sub(data.len() as u64);
                return Some(Ok(data));
            }
            self.start_within_budget();
            let (len, got) = self.in_flight.next().await?;
            // The read's gaps are dropped with it; its frames stay held until handed on.
            self.held = self.held.saturating_sub(len);
            match got {
                Ok(frames) => {
                    for (i, data) in frames {
                        self.held += data.len() as u64;
                        self.pending.insert(i, data);
                    }
                }
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

/// A frame the cache said it held: from there, or read on its own when the cached copy
/// turned out damaged (and was dropped).
async fn from_cache_or_store(
    store: &Arc<dyn PackageStore>,
    at: &BlockPath,
    index: usize,
    frame: &Frame,
    cache: &FrameCache,
    counts: &Arc<FrameCounts>,
    sha: &str,
) -> Result<Bytes> {
    let (c, s) = (cache.clone(), sha.to_string());
    if let Some(data) = tokio::task::spawn_blocking(move || c.get(&s)).await? {
        counts.add_cached();
        return Ok(data);
    }
    let plan = plan_reads(&[(index, frame)]);
    let read = plan.into_iter().next().expect("one frame, one read");
    let got = fetch_range(
        store.clone(),
        at.clone(),
        read,
        cache.clone(),
        counts.clone(),
    )
    .await?;
    Ok(got.into_iter().next().expect("one frame read").1)
}

/// Frames collected into packs of about `target` bytes during a put.
pub struct PackBuilder {
    buf: Vec<u8>,
    target: usize,
    /// The buffer of a pack uploaded, for the next pack to fill: its pages are mapped
    /// already, where a new buffer's would each fault in again.
    spare: Option<Vec<u8>>,
}

impl PackBuilder {
    /// A builder closing packs at `target` bytes ([`pack_target`]).
    pub fn new(target: usize) -> Self {
        PackBuilder {
            buf: Vec::new(),
            target,
            spare: None,
        }
    }

    /// Whether the builder takes back the buffers of packs uploaded: in a large version,
    /// which fills many packs, where a new buffer costs a page fault per 4 KiB (a 512 MiB put
    /// faulted 130,000 times fewer). A small version's two or three packs gain nothing, and
    /// a buffer kept whole would outweigh its last, partly filled pack.
    pub fn reuses_buffers(&self) -> bool {
        self.target == LARGE_PACK_TARGET
    }

    /// Takes back the bytes of a pack whose upload ended, when nothing else holds them.
    pub fn recycle(&mut self, data: Bytes) {
        if !self.reuses_buffers() {
            return;
        }
        if let Ok(data) = data.try_into_mut() {
            let mut buf = Vec::from(data);
            buf.clear();
            if buf.capacity() >= self.target {
                self.spare = Some(buf);
            }
        }
    }

    /// Whether adding `len` bytes would take the open pack past its target.
    pub fn is_full_for(&self, len: usize) -> bool {
        !self.buf.is_empty() && self.buf.len() + len > self.target
    }

    /// Appends a frame; returns its offset in the open pack. The first frame of a pack takes
    /// a buffer then, after the upload before it ended: so a put holds the pack uploading
    /// and the one filling, not a third.
    pub fn push(&mut self, data: &[u8]) -> u64 {
        if self.buf.capacity() == 0 {
            let target = self.target;
            self.buf = self
                .spare
                .take()
                .unwrap_or_else(|| Vec::with_capacity(target));
        }
        let at = self.buf.len() as u64;
        self.buf.extend_from_slice(data);
        at
    }

    /// Whether the open pack has no frame yet.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Closes the open pack: its name (the sha256 of its bytes) and bytes.
    pub fn close(&mut self) -> (String, Bytes) {
        let data = Bytes::from(std::mem::take(&mut self.buf));
        (crate::package::cuts::frame_hash(&data), data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(pack: &str, offset: u64, length: u64) -> Frame {
        Frame {
            length,
            sha256: Some(format!("{:0>64}", format!("{pack}{offset}"))),
            pack: Some(pack.to_string()),
            pack_offset: Some(offset),
            ..Frame::default()
        }
    }

    #[test]
    fn neighbours_in_a_pack_are_read_together_and_reads_follow_the_frames() {
        let frames = [
            frame("b", 0, 100),
            frame("a", 0, 100),
            frame("a", 100, 100),
            // A gap wider than GAP_MAX starts a new read.
            frame("a", 200 + GAP_MAX + 1, 100),
        ];
        let refs: Vec<(usize, &Frame)> = frames.iter().enumerate().collect();
        let plan = plan_reads(&refs);
        let shape: Vec<(&str, u64, u64, Vec<usize>)> = plan
            .iter()
            .map(|r| {
                let idx = r.frames.iter().map(|f| f.index).collect();
                (r.pack.as_str(), r.start, r.end, idx)
            })
            .collect();
        assert_eq!(
            shape,
            vec![
                ("b", 0, 100, vec![0]),
                ("a", 0, 200, vec![1, 2]),
                ("a", 201 + GAP_MAX, 301 + GAP_MAX, vec![3]),
            ]
        );
        assert_eq!(plan[1].frames[1].offset, 100, "offsets are within the read");
    }

    #[test]
    fn no_read_passes_the_range_limit() {
        let n = (3 * RANGE_MAX / (1 << 20)) as usize;
        let frames: Vec<Frame> = (0..n)
            .map(|i| frame("p", i as u64 * (1 << 20), 1 << 20))
            .collect();
        let refs: Vec<(usize, &Frame)> = frames.iter().enumerate().collect();
        let plan = plan_reads(&refs);
        assert_eq!(plan.len(), 3);
        assert!(plan.iter().all(|r| r.end - r.start <= RANGE_MAX));
    }

    /// Frames interleaved across packs (as after edits), read under a budget that holds
    /// about two reads: every frame comes in order, and past the budget no second read is
    /// ever in flight (one is started when none is, so that the get moves).
    #[tokio::test]
    async fn a_large_get_holds_no_more_than_its_budget_and_always_moves() {
        const MIB: u64 = 1 << 20;
        let frames: Vec<Frame> = (0..96u64)
            .map(|i| frame(["p", "q", "r"][(i % 3) as usize], (i / 3) * MIB, MIB))
            .collect();
        let refs: Vec<(usize, &Frame)> = frames.iter().enumerate().collect();
        let plan = plan_reads_of_at_most(&refs, 8 * MIB);
        let lengths: HashMap<usize, u64> = frames
            .iter()
            .enumerate()
            .map(|(i, f)| (i, f.length))
            .collect();
        let mut reads = Reads::new(plan, 17 * MIB, |read: RangeRead| {
            let lengths = lengths.clone();
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
                Ok(read
                    .frames
                    .iter()
                    .map(|f| (f.index, Bytes::from(vec![0u8; lengths[&f.index] as usize])))
                    .collect())
            })
        });
        for i in 0..frames.len() {
            reads.start_within_budget();
            assert!(
                reads.held <= 17 * MIB || reads.in_flight.len() <= 1,
                "held {}",
                reads.held
            );
            let got = reads.frame(i).await.expect("planned").expect("read");
            assert_eq!(got.len() as u64, MIB);
        }
        assert_eq!(reads.held, 0);
    }

    #[test]
    fn a_put_retires_the_least_used_packs_of_a_scattered_version() {
        let mut frames = vec![frame("big", 0, 10 << 20)];
        for (i, p) in ["e1", "e2", "e3", "e4"].iter().enumerate() {
            frames.push(frame(p, 0, 1000 + i as u64));
        }
        let m = PackageManifest {
            format: PACKS_FORMAT,
            compression: "zstd".into(),
            frames,
            ..PackageManifest::default()
        };
        let reusable = reusable_frames(&m);
        let packs: HashSet<&str> = reusable.values().map(|f| f.pack.as_str()).collect();
        // 1 pack for its size + 2 extra, less 1 for the new pack: the 2 most used stay.
        assert_eq!(packs, HashSet::from(["big", "e4"]));
    }

    #[test]
    fn a_large_version_has_smaller_packs_and_may_span_as_many_more() {
        assert_eq!(pack_target(LARGE_VERSION), PACK_TARGET);
        assert_eq!(pack_target(LARGE_VERSION + 1), LARGE_PACK_TARGET);
        // 20 MiB compressed in 8 MiB packs plus five small ones: of 3 + 2 allowed, 4 stay.
        let mut frames: Vec<Frame> = ["p1", "p2", "p3"]
            .iter()
            .map(|p| frame(p, 0, (20 << 20) / 3))
            .collect();
        for (i, p) in ["e1", "e2", "e3", "e4", "e5"].iter().enumerate() {
            frames.push(frame(p, 0, 1000 + i as u64));
        }
        let mut m = PackageManifest {
            format: PACKS_FORMAT,
            compression: "zstd".into(),
            frames,
            ..PackageManifest::default()
        };
        m.totals.bytes = LARGE_VERSION + 1;
        let kept = |m: &PackageManifest| {
            let r = reusable_frames(m);
            let packs: HashSet<String> = r.values().map(|f| f.pack.clone()).collect();
            packs.len()
        };
        assert_eq!(kept(&m), 4);
        // The same frames in a small version: 2 + 2 allowed, 3 stay.
        m.totals.bytes = LARGE_VERSION;
        assert_eq!(kept(&m), 3);
    }
}
