//! A cold get of large files: when files span many frames, their ranged reads run many at
//! once and arrive in any order; each frame is verified against its sha256 as it lands and
//! decompressed straight to its own offset in its file, preallocated in the staging folder.
//! The ordered unpacking meanwhile reads the tar stream back (the files' parts from disk,
//! the few frames around them from memory) and hashes every file as its frames land, so
//! hashing overlaps the transfer, and memory holds only the frames being read.
//!
//! Used for format 3 on stores with ranged reads when the frames outside the large files'
//! data are few (at most [`OTHERS_MAX`] bytes, all of which may be held at once); any other
//! version takes the ordered path of `packs::frames_in_order`.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Instant;

use bytes::Bytes;
use futures::StreamExt;

use crate::block::EntryKind;
use crate::error::{Error, Result};
use crate::package::frame_cache::{FrameCache, FrameCounts, decompress_frame, verify_frame};
use crate::package::manifest::{
    Frame, PACKS_FORMAT, PackageManifest, is_safe_relative_path, short,
};
use crate::package::packs::{PACK_MAX, RangeRead, plan_reads, worth_reading_again};
use crate::package::store::{ObjectName, PackageStore};
use crate::retry::{RANGED_READ_WINDOW, RetryPolicy};
use crate::slug::BlockPath;

/// Files from this size on are fetched by position.
pub const LARGE_GET: u64 = 16 << 20;
/// Ranged reads in flight at once; each holds about one frame (≤ 4 MiB) at a time.
pub const LARGE_RANGES_IN_FLIGHT: usize = 6;
/// The frames outside the large files' data may hold at most this many bytes, uncompressed:
/// they wait in memory, in any order, until the unpacking reaches them.
pub const OTHERS_MAX: u64 = 16 << 20;
/// A file of the version written by position, and where its data lies in the tar stream.
#[derive(Debug)]
pub struct LargeFile {
    /// The entry's path in the version.
    pub path: String,
    /// Where it goes under the staging folder.
    pub out_rel: String,
    /// The offset of its first data byte in the uncompressed tar stream.
    pub data_start: u64,
    /// Its size.
    pub size: u64,
    mode: u32,
    file: Option<File>,
}

/// The large files of a version and, per frame, the one whose data holds all of it.
#[derive(Debug)]
pub struct LargePlan {
    /// The large files, in stream order.
    pub files: Vec<LargeFile>,
    inside: Vec<Option<usize>>,
}

impl LargePlan {
    /// Where each large file's data starts in the tar stream, by entry path: the unpacking
    /// checks the tar agrees, then only hashes what is already in place.
    pub fn prefilled(&self) -> HashMap<String, u64> {
        self.files
            .iter()
            .map(|f| (f.path.clone(), f.data_start))
            .collect()
    }
}

/// The large-file plan of `manifest` (its `subtree`), when it has large files whose frames
/// are worth fetching by position and the other frames are few enough to hold.
pub fn plan(manifest: &PackageManifest, subtree: &str) -> Option<LargePlan> {
    if manifest.format != PACKS_FORMAT {
        return None;
    }
    let mut end = 0u64;
    for f in &manifest.frames {
        if f.uncompressed_offset != end || f.sha256.is_none() || f.pack.is_none() {
            return None;
        }
        end = f.uncompressed_offset.checked_add(f.uncompressed_length)?;
    }
    let mut files = Vec::new();
    for e in &manifest.entries {
        if e.kind != EntryKind::File || e.size < LARGE_GET || !is_safe_relative_path(&e.path) {
            continue;
        }
        let out_rel = match subtree {
            "" => e.path.clone(),
            s => match e.path.strip_prefix(s).and_then(|r| r.strip_prefix('/')) {
                Some(r) if !r.is_empty() => r.to_string(),
                _ => continue,
            },
        };
        let data_start = e.offset.checked_add(header_len(&e.path)?)?;
        files.push(LargeFile {
            path: e.path.clone(),
            out_rel,
            data_start,
            size: e.size,
            mode: e.mode,
            file: None,
        });
    }
    files.sort_by_key(|f| f.data_start);
    let inside: Vec<Option<usize>> = manifest
        .frames
        .iter()
        .map(|f| {
            let (start, end) = (
                f.uncompressed_offset,
                f.uncompressed_offset + f.uncompressed_length,
            );
            files
                .iter()
                .position(|l| start >= l.data_start && end <= l.data_start + l.size)
        })
        .collect();
    let others: u64 = manifest
        .frames
        .iter()
        .zip(&inside)
        .filter(|(_, i)| i.is_none())
        .map(|(f, _)| f.uncompressed_length)
        .sum();
    (inside.iter().any(Option::is_some) && others <= OTHERS_MAX)
        .then_some(LargePlan { files, inside })
}

/// Bytes of the tar headers of a file at `path` (GNU long-name records included), as the
/// put wrote them.
fn header_len(path: &str) -> Option<u64> {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(0);
    let mut tar = tar::Builder::new(Vec::new());
    tar.append_data(&mut h, path, io::empty()).ok()?;
    Some(tar.get_ref().len() as u64)
}

/// Creates every large file in `staging`, at its final mode and size (space reserved), so
/// frames can be written at their offsets as they land.
pub fn prepare(plan: &mut LargePlan, staging: &Path) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    for f in &mut plan.files {
        let dest = staging.join(&f.out_rel);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::io(format!("creating the folder of {}", f.out_rel), e))?;
        }
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(f.mode)
            .open(&dest)
            .map_err(|e| Error::io(format!("creating {}", f.out_rel), e))?;
        let reserved = rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, f.size);
        if reserved.is_err() {
            file.set_len(f.size)
                .map_err(|e| Error::io(format!("creating {}", f.out_rel), e))?;
        }
        f.file = Some(file);
    }
    Ok(())
}

/// Frames landed so far, shared by the fetch and the unpacking.
#[derive(Debug)]
pub struct Board {
    state: Mutex<BoardState>,
    changed: Condvar,
}

#[derive(Debug)]
struct BoardState {
    /// Frames whose bytes are in their large file.
    landed: Vec<bool>,
    /// Decompressed frames outside the large files' data, until the unpacking takes them.
    held: HashMap<usize, Bytes>,
    failure: Option<Error>,
}

impl Board {
    /// A board for a version of `frames` frames, none landed.
    pub fn new(frames: usize) -> Self {
        Board {
            state: Mutex::new(BoardState {
                landed: vec![false; frames],
                held: HashMap::new(),
                failure: None,
            }),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BoardState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn land(&self, index: usize, held: Option<Bytes>) {
        let mut s = self.lock();
        match held {
            Some(b) => {
                s.held.insert(index, b);
            }
            None => s.landed[index] = true,
        }
        self.changed.notify_all();
    }

    /// Records why the fetch failed; the unpacking stops at its next wait.
    pub fn fail(&self, e: Error) {
        let mut s = self.lock();
        s.failure.get_or_insert(e);
        self.changed.notify_all();
    }

    /// Why the fetch failed, if it did.
    pub fn failure(&self) -> Option<Error> {
        self.lock().failure.take()
    }

    /// Waits for frame `index`: `None` once it is in its file, else its bytes.
    fn wait(&self, index: usize) -> io::Result<Option<Bytes>> {
        let mut s = self.lock();
        loop {
            if s.failure.is_some() {
                return Err(io::Error::other("the download failed"));
            }
            if s.landed[index] {
                return Ok(None);
            }
            if let Some(b) = s.held.remove(&index) {
                return Ok(Some(b));
            }
            s = self.changed.wait(s).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

/// What the fetch needs besides the store, shared by its reads.
pub struct Landing {
    /// The version's frame table.
    pub frames: Vec<Frame>,
    /// Its large files, open in staging.
    pub plan: Arc<LargePlan>,
    /// What has landed, and any failure.
    pub board: Arc<Board>,
    /// The agent's frame cache.
    pub cache: FrameCache,
    /// What the get moved, for its report.
    pub counts: Arc<FrameCounts>,
    /// Told of every downloaded byte (progress).
    pub on_bytes: Box<dyn Fn(u64) + Send + Sync>,
}

impl Landing {
    /// Checks one frame's compressed bytes, keeps them in the cache, decompresses them and
    /// puts them where they go: their large file, else the board (and any part of a large
    /// file they hold into it).
    fn land(&self, index: usize, data: &[u8], from: &str) -> Result<()> {
        let f = &self.frames[index];
        let sha = f.sha256.as_deref().unwrap_or_default();
        verify_frame(sha, data, from)?;
        self.cache.put(sha, data);
        let raw = decompress_frame(data, f)?;
        let (start, end) = (
            f.uncompressed_offset,
            f.uncompressed_offset + f.uncompressed_length,
        );
        for l in &self.plan.files {
            let (lo, hi) = (start.max(l.data_start), end.min(l.data_start + l.size));
            if lo >= hi {
                continue;
            }
            let part = &raw[(lo - start) as usize..(hi - start) as usize];
            let file = l.file.as_ref().expect("prepared");
            file.write_all_at(part, lo - l.data_start)
                .map_err(|e| Error::io(format!("writing {}", l.out_rel), e))?;
        }
        let held = self.plan.inside[index].is_none().then(|| Bytes::from(raw));
        self.board.land(index, held);
        Ok(())
    }
}

/// Fetches every frame of `landing` (the cached ones from the cache), the rest by coalesced
/// ranged reads [`LARGE_RANGES_IN_FLIGHT`] at once, each landed as it arrives. A failure is
/// left on the board.
pub async fn fetch(store: Arc<dyn PackageStore>, at: BlockPath, landing: Arc<Landing>) {
    if let Err(e) = fetch_all(store.clone(), &at, landing.clone()).await {
        landing.board.fail(e.scrubbed(store.secrets()));
    }
}

async fn fetch_all(
    store: Arc<dyn PackageStore>,
    at: &BlockPath,
    landing: Arc<Landing>,
) -> Result<()> {
    let probe = landing.clone();
    let missing: Vec<usize> = tokio::task::spawn_blocking(move || {
        let mut missing = Vec::new();
        for (i, f) in probe.frames.iter().enumerate() {
            let sha = f.sha256.as_deref().unwrap_or_default();
            match probe.cache.get(sha) {
                Some(data) => {
                    probe.land(i, &data, "cache")?;
                    probe.counts.add_cached();
                }
                None => missing.push(i),
            }
        }
        Ok::<_, Error>(missing)
    })
    .await??;
    let wanted: Vec<(usize, &Frame)> = missing.iter().map(|&i| (i, &landing.frames[i])).collect();
    let reads = plan_reads(&wanted);
    let mut running = futures::stream::iter(reads)
        .map(|read| read_landing(store.as_ref(), at, read, &landing))
        .buffer_unordered(LARGE_RANGES_IN_FLIGHT);
    while let Some(done) = running.next().await {
        done?;
    }
    Ok(())
}

/// Why a ranged read stopped: the transfer (worth another try) or a frame that cannot land.
enum Stop {
    Transfer(Error),
    Fatal(Error),
}

/// One ranged read, its frames landed as each completes; a cut read resumes at the first
/// frame not landed.
async fn read_landing(
    store: &dyn PackageStore,
    at: &BlockPath,
    read: RangeRead,
    landing: &Arc<Landing>,
) -> Result<()> {
    let slug = store.slug(at);
    if read.end - read.start > PACK_MAX {
        return Err(Error::Integrity(format!(
            "{slug}: pack {}: a read of {} bytes, more than any pack holds",
            short(&read.pack),
            read.end - read.start
        )));
    }
    let mut next = 0usize;
    // The tries and the window of [`RetryPolicy::RANGED_READ`] start again at each progress.
    let (mut pauses, mut since) = (RetryPolicy::RANGED_READ.pauses(), Instant::now());
    while next < read.frames.len() {
        let before = next;
        match read_from(store, at, &read, &mut next, landing).await {
            Ok(()) => {}
            Err(Stop::Fatal(e)) => return Err(e),
            Err(Stop::Transfer(e)) if !worth_reading_again(&e) => return Err(e),
            Err(Stop::Transfer(e)) => {
                if next > before {
                    (pauses, since) = (RetryPolicy::RANGED_READ.pauses(), Instant::now());
                }
                let pause = pauses
                    .next()
                    .filter(|_| since.elapsed() <= RANGED_READ_WINDOW);
                let Some(pause) = pause else {
                    return Err(e);
                };
                tracing::debug!(pack = %read.pack, error = %e, landed = next, "a ranged read was cut; resuming");
                tokio::time::sleep(pause).await;
            }
        }
    }
    Ok(())
}

/// Reads `read` from its frame `*next` on, landing each frame as its bytes complete.
async fn read_from(
    store: &dyn PackageStore,
    at: &BlockPath,
    read: &RangeRead,
    next: &mut usize,
    landing: &Arc<Landing>,
) -> std::result::Result<(), Stop> {
    let slug = store.slug(at);
    let first = read.frames[*next].offset;
    let name = ObjectName::Pack(read.pack.clone());
    let mut stream = store
        .read_object(at, &name, Some(read.start + first..read.end))
        .await
        .map_err(Stop::Transfer)?
        .ok_or_else(|| {
            Stop::Fatal(Error::Integrity(format!(
                "{slug}: pack {} is missing from the store",
                short(&read.pack)
            )))
        })?;
    // Position in the read, and the frame being filled.
    let mut pos = first;
    let mut buf: Vec<u8> = Vec::new();
    let mut last: Option<(u64, Bytes)> = None;
    loop {
        let Some(chunk) = stream.next().await else {
            break;
        };
        let chunk = chunk.map_err(Stop::Transfer)?;
        let mut c = &chunk[..];
        while !c.is_empty() {
            let Some(f) = read.frames.get(*next) else {
                return Err(Stop::Fatal(Error::Integrity(format!(
                    "{slug}: pack {}: the store sent more than the bytes asked",
                    short(&read.pack)
                ))));
            };
            if pos < f.offset {
                let skip = c.len().min((f.offset - pos) as usize);
                (c, pos) = (&c[skip..], pos + skip as u64);
                continue;
            }
            if buf.is_empty() {
                buf.reserve_exact(f.length as usize);
            }
            let take = c.len().min((f.offset + f.length - pos) as usize);
            buf.extend_from_slice(&c[..take]);
            (c, pos) = (&c[take..], pos + take as u64);
            (landing.on_bytes)(take as u64);
            if buf.len() as u64 == f.length {
                let data = Bytes::from(std::mem::take(&mut buf));
                land(landing, f.index, data.clone()).await?;
                last = Some((f.offset, data));
                *next += 1;
            }
            // A frame listed twice at one offset (the same bytes twice in a version) lands
            // again from `last`.
            while let Some(f) = read.frames.get(*next)
                && f.offset < pos
                && buf.is_empty()
            {
                match &last {
                    Some((offset, data))
                        if *offset == f.offset && data.len() as u64 == f.length =>
                    {
                        land(landing, f.index, data.clone()).await?;
                        *next += 1;
                    }
                    _ => {
                        return Err(Stop::Fatal(Error::Integrity(format!(
                            "{slug}: pack {}: frames overlap",
                            short(&read.pack)
                        ))));
                    }
                }
            }
        }
    }
    if *next < read.frames.len() {
        return Err(Stop::Transfer(Error::Integrity(format!(
            "{slug}: pack {}: the store sent {} bytes of the {} asked",
            short(&read.pack),
            pos - first,
            read.end - read.start - first
        ))));
    }
    Ok(())
}

/// Lands one downloaded frame on a blocking thread.
async fn land(landing: &Arc<Landing>, index: usize, data: Bytes) -> std::result::Result<(), Stop> {
    let l = landing.clone();
    let length = data.len() as u64;
    tokio::task::spawn_blocking(move || l.land(index, &data, "store"))
        .await
        .map_err(|e| Stop::Fatal(e.into()))?
        .map_err(Stop::Fatal)?;
    landing.counts.add_download(length);
    Ok(())
}

/// The version's uncompressed tar stream, in order, as the frames land: large files' parts
/// read back from their files, the other frames taken from the board.
pub struct LandedStream {
    landing: Arc<Landing>,
    next: usize,
    held: Bytes,
    /// A part of a large file still to read back: (file, offset, bytes left).
    in_file: Option<(usize, u64, u64)>,
}

impl LandedStream {
    /// The stream of `landing`'s version, from its first frame.
    pub fn new(landing: Arc<Landing>) -> Self {
        LandedStream {
            landing,
            next: 0,
            held: Bytes::new(),
            in_file: None,
        }
    }
}

impl Read for LandedStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if !self.held.is_empty() {
                let n = buf.len().min(self.held.len());
                buf[..n].copy_from_slice(&self.held[..n]);
                let _ = self.held.split_to(n);
                return Ok(n);
            }
            if let Some((k, offset, left)) = self.in_file.as_mut()
                && *left > 0
            {
                let l = &self.landing.plan.files[*k];
                let want = buf.len().min(*left as usize);
                let n = l
                    .file
                    .as_ref()
                    .expect("prepared")
                    .read_at(&mut buf[..want], *offset)?;
                if n == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                *offset += n as u64;
                *left -= n as u64;
                return Ok(n);
            }
            let Some(f) = self.landing.frames.get(self.next) else {
                return Ok(0);
            };
            let index = self.next;
            self.next += 1;
            match self.landing.board.wait(index)? {
                Some(bytes) => self.held = bytes,
                None => {
                    let k = self.landing.plan.inside[index].expect("a landed frame lies in a file");
                    let offset = f.uncompressed_offset - self.landing.plan.files[k].data_start;
                    self.in_file = Some((k, offset, f.uncompressed_length));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_lengths_follow_the_tar_layout() {
        assert_eq!(header_len("a.bin"), Some(512));
        // A path past 100 bytes takes a GNU long-name record: a header and its blocks.
        let long = "d/".repeat(60) + "f";
        assert_eq!(header_len(&long), Some(512 + 512 + 512));
    }
}
