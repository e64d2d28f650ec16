//! The agent's frame cache: verified format-2 frames kept in `<cache folder>/frames/`, named by
//! their sha256, so a get of a version whose frames are cached downloads only its manifest.
//!
//! A frame is checked against its name on every read (a damaged one is dropped and fetched
//! again). Writes go to a temporary file renamed into place, so several processes can share
//! the folder: a reader sees a whole frame or none. The folder is kept under a size limit
//! (`BLOCKCTL_CACHE_LIMIT`, default 2 GiB) by dropping the least recently used frames; a
//! read marks a frame used by touching its mtime.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use bytes::Bytes;

use crate::hashcache::cache_dir;
use crate::package::cuts::frame_hash;
use crate::package::manifest::{Frame, short};

/// The folder set by [`set_process_default`], if any.
static PROCESS_DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Makes `dir` the frame cache of this process wherever a get names none (a test harness
/// keeps its frames out of the user's cache this way). The first call wins.
pub fn set_process_default(dir: PathBuf) {
    let _ = PROCESS_DIR.set(dir);
}

/// The size limit when `BLOCKCTL_CACHE_LIMIT` is not set.
pub const DEFAULT_LIMIT: u64 = 2 << 30;

/// A frame cache folder and its size limit, or no cache at all.
#[derive(Debug, Clone)]
pub struct FrameCache {
    dir: Option<PathBuf>,
    limit: u64,
}

impl FrameCache {
    /// The cache of this user (see `hashcache::cache_dir`), or none when `enabled` is false or
    /// no folder can be found.
    pub fn open(enabled: bool) -> Self {
        let dir = enabled.then(cache_dir).flatten().map(|d| d.join("frames"));
        FrameCache {
            dir,
            limit: limit_from_env(),
        }
    }

    /// The cache a get with these settings uses.
    pub fn for_get(no_cache: bool, dir: Option<&Path>) -> Self {
        match (no_cache, dir) {
            (true, _) => Self::disabled(),
            (false, Some(d)) => Self::at(d.to_path_buf(), limit_from_env()),
            (false, None) => Self::open(true),
        }
    }

    /// A cache in `dir` holding at most `limit` bytes.
    pub fn at(dir: PathBuf, limit: u64) -> Self {
        FrameCache {
            dir: Some(dir),
            limit,
        }
    }

    /// No cache: every frame is downloaded and nothing is kept.
    pub fn disabled() -> Self {
        FrameCache {
            dir: None,
            limit: 0,
        }
    }

    /// Whether frames are read from and kept in a folder.
    pub fn is_enabled(&self) -> bool {
        self.dir.is_some()
    }

    fn path(&self, sha256: &str) -> Option<PathBuf> {
        Some(self.dir.as_ref()?.join(format!("{sha256}.zst")))
    }

    /// Whether a frame named `sha256` is in the cache (not yet checked).
    pub fn contains(&self, sha256: &str) -> bool {
        self.path(sha256).is_some_and(|p| p.is_file())
    }

    /// The frame named `sha256`, if cached and whole.
    pub fn get(&self, sha256: &str) -> Option<Bytes> {
        let path = self.path(sha256)?;
        let data = std::fs::read(&path).ok()?;
        if frame_hash(&data) != sha256 {
            let _ = std::fs::remove_file(&path);
            return None;
        }
        if let Ok(f) = std::fs::File::options().write(true).open(&path) {
            let _ = f.set_modified(SystemTime::now());
        }
        Some(data.into())
    }

    /// Keeps a verified frame. Failures only cost a later download, so they are ignored.
    pub fn put(&self, sha256: &str, data: &[u8]) {
        let (Some(dir), Some(path)) = (self.dir.as_ref(), self.path(sha256)) else {
            return;
        };
        if path.exists() || (data.len() as u64) > self.limit {
            return;
        }
        let _ = std::fs::create_dir_all(dir);
        let Ok(mut tmp) = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir) else {
            return;
        };
        if std::io::Write::write_all(&mut tmp, data).is_ok() {
            let _ = tmp.persist(&path);
        }
    }

    /// Drops the least recently used frames until the folder holds at most the limit.
    pub fn trim(&self) {
        if let Some(dir) = &self.dir {
            trim_dir(dir, self.limit);
        }
    }

    /// The cache's folder; `None` when disabled.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }
}

/// Drops the least recently used files of `dir` (not its folders) until it holds at most
/// `limit` bytes; a read marks a file used by touching its mtime.
pub(crate) fn trim_dir(dir: &Path, limit: u64) {
    let Ok(read) = std::fs::read_dir(dir) else {
        return;
    };
    let mut files: Vec<(SystemTime, u64, PathBuf)> = read
        .filter_map(|e| {
            let e = e.ok()?;
            let meta = e.metadata().ok()?;
            if !meta.is_file() {
                return None;
            }
            Some((meta.modified().ok()?, meta.len(), e.path()))
        })
        .collect();
    let mut total: u64 = files.iter().map(|f| f.1).sum();
    if total <= limit {
        return;
    }
    files.sort();
    for (_, len, path) in files {
        if total <= limit {
            break;
        }
        if std::fs::remove_file(&path).is_ok() {
            total -= len;
        }
    }
}

/// `BLOCKCTL_CACHE_LIMIT`: bytes, or a number with `K`, `M`, `G` (`KiB`, `MiB`, `GiB`).
pub(crate) fn limit_from_env() -> u64 {
    std::env::var("BLOCKCTL_CACHE_LIMIT")
        .ok()
        .and_then(|v| parse_size(&v))
        .unwrap_or(DEFAULT_LIMIT)
}

/// Parses a size: bytes, or a number with `K`, `M`, `G` or `T` (also `KB`/`KiB`, ...; all
/// powers of 1024). `None` when it is not one or overflows.
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().ok()?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return None,
    };
    n.checked_mul(1 << shift)
}

/// One frame's verified bytes: from `cache` if it holds them, else from `download` (`None`
/// when `from`, the store, has no such frame), checked against `sha256` and cached.
pub async fn fetch_verified<Fut>(
    cache: &FrameCache,
    counts: &FrameCounts,
    sha256: &str,
    from: &str,
    download: Fut,
) -> crate::Result<Bytes>
where
    Fut: std::future::Future<Output = crate::Result<Option<Bytes>>>,
{
    use crate::Error;
    use crate::package::manifest::short;
    if cache.is_enabled() {
        let (c, s) = (cache.clone(), sha256.to_string());
        if let Some(data) = tokio::task::spawn_blocking(move || c.get(&s)).await? {
            counts.add_cached();
            return Ok(data);
        }
    }
    let Some(data) = download.await? else {
        return Err(Error::Integrity(format!(
            "frame {} is missing from the {from}",
            short(sha256)
        )));
    };
    counts.add_download(data.len() as u64);
    let (cache, sha256, from) = (cache.clone(), sha256.to_string(), from.to_string());
    tokio::task::spawn_blocking(move || {
        verify_frame(&sha256, &data, &from)?;
        cache.put(&sha256, &data);
        Ok(data)
    })
    .await?
}

/// The one check of a frame read from anywhere but the cache: its bytes must hash to the
/// sha256 the manifest names. `from` says where it came from, for the message.
pub fn verify_frame(sha256: &str, data: &[u8], from: &str) -> crate::Result<()> {
    if frame_hash(data) != sha256 {
        return Err(crate::Error::Integrity(format!(
            "frame {} does not match its sha256: the {from} holds a corrupt copy",
            short(sha256)
        )));
    }
    Ok(())
}

/// The folder of the agent's `kind` cache (manifests, versions in place) beside its frames:
/// `<frames_dir>-<kind>` when a get names its frame folder (which then holds frames only),
/// else `<kind>/` in the cache folder.
pub(crate) fn beside_frames(frames_dir: Option<&Path>, kind: &str) -> Option<PathBuf> {
    match frames_dir {
        Some(d) => Some(match (d.parent(), d.file_name()) {
            (Some(parent), Some(name)) => parent.join(format!("{}-{kind}", name.to_string_lossy())),
            _ => d.join(kind),
        }),
        None => cache_dir().map(|d| d.join(kind)),
    }
}

/// A verified frame's bytes decompressed, refused (an integrity error) when they are not
/// the length its manifest declares: never decompressed past it.
pub(crate) fn decompress_frame(data: &[u8], frame: &Frame) -> crate::Result<Vec<u8>> {
    let corrupt = |why: String| {
        crate::Error::Integrity(format!(
            "unsafe or corrupt package: frame {} {why}",
            short(frame.sha256.as_deref().unwrap_or_default())
        ))
    };
    let declared = usize::try_from(frame.uncompressed_length)
        .map_err(|_| corrupt("declares an impossible length".into()))?;
    let out = zstd::bulk::decompress(data, declared)
        .map_err(|e| corrupt(format!("does not decompress to its {declared} bytes: {e}")))?;
    if out.len() != declared {
        return Err(corrupt(format!(
            "decompresses to {} bytes, not its {declared}",
            out.len()
        )));
    }
    Ok(out)
}

/// Counts what a get moved, for its report.
#[derive(Debug, Default)]
pub struct FrameCounts {
    /// Bytes of frames downloaded.
    pub downloaded_bytes: AtomicU64,
    /// Frames downloaded.
    pub downloaded: AtomicU64,
    /// Frames taken from the cache.
    pub cached: AtomicU64,
}

impl FrameCounts {
    /// Counts one frame of `bytes` downloaded.
    pub fn add_download(&self, bytes: u64) {
        self.downloaded.fetch_add(1, Ordering::Relaxed);
        self.downloaded_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Counts one frame taken from the cache.
    pub fn add_cached(&self) {
        self.cached.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_damaged_frame_is_dropped_and_the_oldest_go_first() {
        let dir = tempfile::tempdir().unwrap();
        let cache = FrameCache::at(dir.path().to_path_buf(), 25);
        let (a, b) = (b"0123456789".to_vec(), b"abcdefghij".to_vec());
        let (ha, hb) = (frame_hash(&a), frame_hash(&b));
        cache.put(&ha, &a);
        assert_eq!(cache.get(&ha).as_deref(), Some(&a[..]));
        std::fs::write(dir.path().join(format!("{ha}.zst")), b"0123456789X").unwrap();
        assert!(cache.get(&ha).is_none(), "a damaged frame is not served");
        cache.put(&ha, &a);
        std::thread::sleep(std::time::Duration::from_millis(20));
        cache.put(&hb, &b);
        let c = b"ABCDEFGHIJ".to_vec();
        std::thread::sleep(std::time::Duration::from_millis(20));
        cache.put(&frame_hash(&c), &c);
        cache.trim();
        assert!(cache.get(&ha).is_none(), "the oldest frame went");
        assert!(cache.get(&hb).is_some());
    }

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_size("512MiB"), Some(512 << 20));
        assert_eq!(parse_size("2G"), Some(2 << 30));
        assert_eq!(parse_size("1000"), Some(1000));
        assert_eq!(parse_size("lots"), None);
    }
}
