//! What a `put` keeps from earlier runs on this machine, to do less work: the stat cache of
//! source hashes ([`HashCache`]), and the ledger of files-layout uploads ([`UploadLedger`]).
//!
//! The stat cache: the sha256 of each source file, kept between runs and trusted
//! only while `stat` still says the same thing of the file (device, inode, size, mtime and
//! ctime, to the nanosecond). An unchanged re-put then reads no file at all.
//!
//! Racy entries are never stored: a file whose mtime or ctime is less than
//! [`RACY_MARGIN`] older than the moment hashing began could still change within the same
//! clock tick without its times moving, so it is hashed again next time (git's "racily
//! clean" rule). Any later write moves ctime past the stored value, which the kernel does
//! not let a user set back. The packer checks the stamp again (or the hash, for a racy file)
//! as it reads each file, and `get` verifies every sha256, so a wrong entry can fail a put
//! or be refused by a get, but never unpack wrong bytes.
//!
//! One file per source root, in `$BLOCKCTL_CACHE_DIR`, else `$BLOCKCTL_HOME/cache`, else
//! `$XDG_CACHE_HOME/blockctl`, else `~/.cache/blockctl`. A cache that cannot be read or
//! written is treated as empty: it only ever saves time.

use std::collections::HashMap;
use std::fs::Metadata;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// How much older than the start of hashing a file's times must be for its hash to be kept.
pub const RACY_MARGIN: Duration = Duration::from_secs(2);
const FORMAT: u32 = 1;

/// What `stat` says of a file; a cached hash is used only when all of it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    /// The stamp of a file as `meta` describes it.
    pub fn of(meta: &Metadata) -> Stamp {
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// The file's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Whether both times are at least [`RACY_MARGIN`] before `start`.
    pub(crate) fn settled_before(&self, start: SystemTime) -> bool {
        let Ok(since_epoch) = start.duration_since(SystemTime::UNIX_EPOCH) else {
            return false;
        };
        let limit = since_epoch.saturating_sub(RACY_MARGIN);
        let limit = (limit.as_secs() as i64, i64::from(limit.subsec_nanos()));
        self.mtime < limit && self.ctime < limit
    }
}

#[derive(Serialize, Deserialize)]
struct OnDisk {
    format: u32,
    root: PathBuf,
    files: HashMap<String, (Stamp, String)>,
}

/// The cached hashes of one source root.
pub struct HashCache {
    file: Option<PathBuf>,
    root: PathBuf,
    old: HashMap<String, (Stamp, String)>,
    /// When hashing began; entries newer than this (minus the margin) are not kept.
    start: SystemTime,
}

impl HashCache {
    /// The cache of `root` (an absent or unreadable cache is empty).
    pub fn open(root: &Path) -> HashCache {
        let root = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
        let file = cache_file("hashes", root.as_os_str().as_encoded_bytes());
        HashCache::open_in(root, file)
    }

    fn open_in(root: PathBuf, file: Option<PathBuf>) -> HashCache {
        let old = read_json::<OnDisk>(file.as_deref())
            .filter(|d| d.format == FORMAT && d.root == root)
            .map(|d| d.files)
            .unwrap_or_default();
        HashCache {
            file,
            root,
            old,
            start: SystemTime::now(),
        }
    }

    /// An empty cache that is never saved (for callers that want every file read).
    pub fn disabled() -> HashCache {
        HashCache {
            file: None,
            root: PathBuf::new(),
            old: HashMap::new(),
            start: SystemTime::now(),
        }
    }

    /// Whether a file with `stamp` last changed well before this put began (see
    /// [`RACY_MARGIN`]): then any later write moves its ctime, so an unchanged stamp
    /// means unchanged content.
    pub fn is_settled(&self, stamp: &Stamp) -> bool {
        stamp.settled_before(self.start)
    }

    /// The cached sha256 of `rel`, if `stamp` still matches.
    pub fn get(&self, rel: &str, stamp: &Stamp) -> Option<&str> {
        self.old
            .get(rel)
            .filter(|(s, _)| s == stamp)
            .map(|(_, sha)| sha.as_str())
    }

    /// Replaces the cache with `files` (path, stamp, sha256), leaving out racy entries.
    /// Written to a temp file and renamed, so readers see the old or the new cache whole.
    pub fn save<'a>(&self, files: impl Iterator<Item = (&'a str, &'a Stamp, &'a str)>) {
        let Some(file) = &self.file else { return };
        let files: HashMap<String, (Stamp, String)> = files
            .filter(|(_, stamp, _)| stamp.settled_before(self.start))
            .map(|(rel, stamp, sha)| (rel.to_string(), (*stamp, sha.to_string())))
            .collect();
        if files == self.old {
            // An unchanged tree: nothing to write.
            return;
        }
        let doc = OnDisk {
            format: FORMAT,
            root: self.root.clone(),
            files,
        };
        // Best effort: a failure here costs only a re-hash next time.
        let _ = write_atomically(file, &doc);
    }
}

/// `<cache dir>/<kind>/<digest of key>.json`, when there is a cache dir.
fn cache_file(kind: &str, key: &[u8]) -> Option<PathBuf> {
    let name = hex::encode(&Sha256::digest(key)[..16]);
    cache_dir().map(|dir| dir.join(kind).join(format!("{name}.json")))
}

/// A cache file's contents; absent or unreadable is `None` (the cache is then empty).
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(file: Option<&Path>) -> Option<T> {
    serde_json::from_slice(&std::fs::read(file?).ok()?).ok()
}

/// Writes `doc` as JSON to `file` through a temporary file renamed into place.
pub(crate) fn write_atomically(file: &Path, doc: &impl Serialize) -> std::io::Result<()> {
    let dir = file.parent().expect("cache file has a folder");
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    let mut out = std::io::BufWriter::new(tmp.as_file_mut());
    serde_json::to_writer(&mut out, doc)?;
    out.flush()?;
    drop(out);
    tmp.persist(file).map_err(|e| e.error)?;
    Ok(())
}

fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The folder set by [`set_process_cache_dir`], if any.
static PROCESS_CACHE_DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Makes `dir` this process's cache folder (hashes, ledgers, frames), before any variable of
/// the environment: a test harness keeps the user's cache out of its runs this way. The
/// first call wins.
pub fn set_process_cache_dir(dir: PathBuf) {
    let _ = PROCESS_CACHE_DIR.set(dir);
}

/// The folder of [`set_process_cache_dir`], else `$BLOCKCTL_CACHE_DIR`, else
/// `$BLOCKCTL_HOME/cache`, else `$XDG_CACHE_HOME/blockctl`, else `~/.cache/blockctl`.
pub fn cache_dir() -> Option<PathBuf> {
    PROCESS_CACHE_DIR
        .get()
        .cloned()
        .or_else(|| env_path("BLOCKCTL_CACHE_DIR"))
        .or_else(|| env_path("BLOCKCTL_HOME").map(|h| h.join("cache")))
        .or_else(|| env_path("XDG_CACHE_HOME").map(|x| x.join("blockctl")))
        .or_else(|| env_path("HOME").map(|h| h.join(".cache").join("blockctl")))
}

/// The files layout's record of what was uploaded from here: per object, the sha256 and
/// size of the content sent and the ETag the store answered with. A later put skips a file
/// when its content is the same and the object's current ETag is still that one, so an
/// object changed by anyone else since is uploaded again.
pub struct UploadLedger {
    file: Option<PathBuf>,
    slug: String,
    old: HashMap<String, (String, u64, String)>,
}

#[derive(Serialize, Deserialize)]
struct LedgerOnDisk {
    format: u32,
    slug: String,
    files: HashMap<String, (String, u64, String)>,
}

impl UploadLedger {
    /// The ledger of `slug` (absent or unreadable: empty).
    pub fn open(slug: &str) -> UploadLedger {
        let file = cache_file("uploads", slug.as_bytes());
        let old = read_json::<LedgerOnDisk>(file.as_deref())
            .filter(|d| d.format == FORMAT && d.slug == slug)
            .map(|d| d.files)
            .unwrap_or_default();
        UploadLedger {
            file,
            slug: slug.to_string(),
            old,
        }
    }

    /// The ETag recorded for `rel` when content `sha256` of `size` bytes was uploaded.
    pub fn get(&self, rel: &str, sha256: &str, size: u64) -> Option<&str> {
        self.old
            .get(rel)
            .filter(|(sha, n, _)| sha == sha256 && *n == size)
            .map(|(_, _, tag)| tag.as_str())
    }

    /// Replaces the ledger with `files` (path, sha256, size, ETag).
    pub fn save(&self, files: &[(String, String, u64, String)]) {
        let Some(file) = &self.file else { return };
        let files: HashMap<String, (String, u64, String)> = files
            .iter()
            .map(|(rel, sha, size, tag)| (rel.clone(), (sha.clone(), *size, tag.clone())))
            .collect();
        if files == self.old {
            return;
        }
        let doc = LedgerOnDisk {
            format: FORMAT,
            slug: self.slug.clone(),
            files,
        };
        let _ = write_atomically(file, &doc);
    }
}

/// What format-2 puts from here compressed before, per slug: the sha256 of a frame's
/// uncompressed bytes → the sha256 and length of its compressed bytes. A re-put finds an
/// unchanged frame by hashing it (cheap) instead of compressing it again (not), and trusts
/// the entry only when the store still lists that compressed frame.
pub struct FrameLedger {
    file: Option<PathBuf>,
    slug: String,
    old: HashMap<String, (String, u64)>,
}

#[derive(Serialize, Deserialize)]
struct FrameLedgerOnDisk {
    format: u32,
    slug: String,
    frames: HashMap<String, (String, u64)>,
}

impl FrameLedger {
    /// The ledger of `slug` from the cache folder; empty when there is none or it is unreadable.
    pub fn open(slug: &str) -> FrameLedger {
        let file = cache_file("frames-ledger", slug.as_bytes());
        let old = read_json::<FrameLedgerOnDisk>(file.as_deref())
            .filter(|d| d.format == FORMAT && d.slug == slug)
            .map(|d| d.frames)
            .unwrap_or_default();
        FrameLedger {
            file,
            slug: slug.to_string(),
            old,
        }
    }

    /// The compressed frame's sha256 and length recorded for uncompressed bytes `raw_sha256`.
    pub fn get(&self, raw_sha256: &str) -> Option<(&str, u64)> {
        self.old
            .get(raw_sha256)
            .map(|(sha, len)| (sha.as_str(), *len))
    }

    /// Replaces the ledger with `frames` (uncompressed sha256, compressed sha256, length).
    pub fn save(&self, frames: impl Iterator<Item = (String, String, u64)>) {
        let Some(file) = &self.file else { return };
        let frames: HashMap<String, (String, u64)> =
            frames.map(|(raw, sha, len)| (raw, (sha, len))).collect();
        if frames == self.old {
            return;
        }
        let doc = FrameLedgerOnDisk {
            format: FORMAT,
            slug: self.slug.clone(),
            frames,
        };
        let _ = write_atomically(file, &doc);
    }
}

/// ETags as the same object's: stores quote them in some answers and not in others.
pub fn same_etag(a: &str, b: &str) -> bool {
    let bare = |t: &str| t.trim_start_matches("W/").trim_matches('"').to_string();
    bare(a) == bare(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(secs: i64) -> Stamp {
        Stamp {
            dev: 1,
            ino: 2,
            size: 3,
            mtime: (secs, 0),
            ctime: (secs, 0),
        }
    }

    #[test]
    fn a_hash_is_used_only_while_the_stamp_matches_and_racy_ones_are_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("src");
        std::fs::create_dir(&root).unwrap();
        let file = dir.path().join("cache.json");
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let cache = HashCache::open_in(root.clone(), Some(file.clone()));
        let (old, racy) = (stamp(now - 60), stamp(now));
        cache.save([("a", &old, "aa"), ("b", &racy, "bb")].into_iter());

        let again = HashCache::open_in(root.clone(), Some(file.clone()));
        assert_eq!(again.get("a", &old), Some("aa"));
        assert_eq!(again.get("b", &racy), None, "a racy entry was kept");
        let mut touched = old;
        touched.ctime.1 += 1;
        assert_eq!(again.get("a", &touched), None, "a changed ctime matched");
        let mut other = old;
        other.ino += 1;
        assert_eq!(again.get("a", &other), None, "another inode matched");
        let elsewhere = HashCache::open_in(dir.path().to_path_buf(), Some(file));
        assert_eq!(
            elsewhere.get("a", &old),
            None,
            "another root's cache was used"
        );
    }
}
