//! The package manifest (per-file records with sha256, the frame table), the HEAD record,
//! and the content version id.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::bounds::{MANIFEST_RATIO_MAX, manifest_unpacked_max};
use crate::error::{Error, Result};
use crate::slug::check_portable_segment;

/// What kind of thing an entry of a tree is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A folder.
    Dir,
    /// A symbolic link, stored as its target.
    Symlink,
}

/// Format 1: one `<version>.tar.zst` per version, its manifest as plain JSON.
pub const MANIFEST_FORMAT: u32 = 1;
/// Format 2: content-addressed frames shared by versions, the manifest zstd-compressed.
pub const FRAMES_FORMAT: u32 = 2;
/// Format 3: format 2's frames, stored together in packs read by range.
pub const PACKS_FORMAT: u32 = 3;
/// The zstd level of a stored manifest. Level 9 made `flow`'s manifest (584 KB of JSON) 5%
/// smaller than level 3 (159 KB against 167 KB) and cost a put 15-20 ms more.
pub const MANIFEST_LEVEL: i32 = 3;
/// A compressed manifest may not unpack to more than this (a bomb is refused, not read).
pub const MAX_MANIFEST_BYTES: u64 = crate::bounds::MANIFEST_MAX.bytes;

/// zstd cannot expand more than this: a block of at most 128 KiB costs at least 4 bytes
/// (an RLE block), so 32768 is the ceiling, doubled for frame overheads. A manifest whose
/// files hold more bytes than this times its package declares what no package can hold.
pub const MAX_EXPANSION: u64 = 65536;

/// One entry of a packaged tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// The entry's path in the tree, `/`-separated, checked safe before anything is written.
    pub path: String,
    /// File, folder or link.
    pub kind: EntryKind,
    /// 0o644 or 0o755 for files, 0o755 for directories, 0o777 for symlinks.
    pub mode: u32,
    /// Bytes of a file; 0 for folders and links.
    #[serde(default)]
    pub size: u64,
    /// The sha256 of a file's contents, checked when it is unpacked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// A link's target, which must stay inside the tree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Index of the frame that holds the entry.
    #[serde(default)]
    pub frame: u32,
    /// Offset of the entry's first tar header in the uncompressed stream.
    #[serde(default)]
    pub offset: u64,
}

impl ManifestEntry {
    /// The record of a regular file (mode 0o644) at `path` holding `data`, at the start of
    /// the first frame: what a package of hand-made entries says of a file.
    pub fn file(path: &str, data: &[u8]) -> ManifestEntry {
        ManifestEntry {
            path: path.into(),
            kind: EntryKind::File,
            mode: 0o644,
            size: data.len() as u64,
            sha256: Some(hex::encode(Sha256::digest(data))),
            target: None,
            frame: 0,
            offset: 0,
        }
    }
}

/// One independent zstd frame of the package. Offsets are positions in the concatenation of
/// the frames in order (in format 1, in the package file).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    /// Where the frame starts in the concatenated compressed frames.
    pub offset: u64,
    /// Bytes of the compressed frame.
    pub length: u64,
    /// Where the frame's bytes start in the uncompressed tar stream.
    pub uncompressed_offset: u64,
    /// Bytes of the frame once decompressed.
    pub uncompressed_length: u64,
    /// Format 2: the sha256 of the frame's compressed bytes, which is also its object name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Format 3: the pack holding the frame (the sha256 of the pack's bytes)...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pack: Option<String>,
    /// ...and where in that pack the frame starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pack_offset: Option<u64>,
}

impl Frame {
    /// Whether a version of this format names its frames by their sha256.
    pub fn named_in(format: u32) -> bool {
        format == FRAMES_FORMAT || format == PACKS_FORMAT
    }
}

/// Counts of a version's entries, for listings and for refusing a manifest that declares more
/// than its package can hold.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Regular files.
    pub files: u64,
    /// Folders.
    pub dirs: u64,
    /// Symbolic links.
    pub symlinks: u64,
    /// Bytes of file contents.
    pub bytes: u64,
    /// Bytes of the compressed package.
    pub package_bytes: u64,
}

impl Totals {
    /// The totals of `entries`, for a package of `package_bytes`.
    pub fn count(entries: &[ManifestEntry], package_bytes: u64) -> Self {
        let mut t = Totals {
            package_bytes,
            ..Totals::default()
        };
        for e in entries {
            match e.kind {
                EntryKind::File => {
                    t.files += 1;
                    // Saturating: a hostile manifest's sizes may add up past u64.
                    t.bytes = t.bytes.saturating_add(e.size);
                }
                EntryKind::Dir => t.dirs += 1,
                EntryKind::Symlink => t.symlinks += 1,
            }
        }
        t
    }
}

/// Everything a version is: its entries with their hashes, and the frames that hold them.
/// Stored beside the frames; a get checks every file against it. (The default, format 0 and
/// empty, is no version: a start for a manifest made by hand.)
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageManifest {
    /// The package format: [`MANIFEST_FORMAT`], [`FRAMES_FORMAT`] or [`PACKS_FORMAT`].
    pub format: u32,
    /// The version id, [`version_id`] of the entries.
    pub version: String,
    /// When the version was stored (RFC 3339, UTC).
    pub created: String,
    /// How frames are compressed; always `zstd`.
    pub compression: String,
    /// Counts of the entries and bytes of the package.
    pub totals: Totals,
    /// The frames, in tar-stream order.
    pub frames: Vec<Frame>,
    /// The tree's entries, sorted by path.
    pub entries: Vec<ManifestEntry>,
    /// Who published this version, why and from where. Not part of the version id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<crate::record::VersionRecord>,
}

/// `.blocks/HEAD`: which version is current, and since when. A signing block adds the
/// fields of [`crate::signing::SignedHead`]; agents that know nothing of signing read the
/// first two and ignore the rest.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeadRecord {
    /// The current version's id.
    pub version: String,
    /// When HEAD was last swapped (RFC 3339, UTC).
    pub updated: String,
    /// Grows by one with every signed HEAD swap at this path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// When a trusting agent stops accepting this HEAD (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    /// The path this HEAD was signed for (`/` for the block's root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// A minisign signature over the fields above.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

impl HeadRecord {
    /// Parses a HEAD read at `at`; an integrity error when it is not JSON or names no valid id.
    pub fn parse(bytes: &[u8], at: &str) -> Result<Self> {
        let head: HeadRecord = serde_json::from_slice(bytes)
            .map_err(|e| Error::Integrity(format!("{at}: HEAD is not valid: {e}")))?;
        if !is_version_id(&head.version) {
            return Err(Error::Integrity(format!(
                "{at}: HEAD names an invalid version"
            )));
        }
        Ok(head)
    }
}

/// sha256 over the canonical entry list: one line per entry (kind, mode, size, content hash
/// or link target, path), sorted by path. The same tree always gives the same id.
pub fn version_id(entries: &[ManifestEntry]) -> String {
    let mut h = Sha256::new();
    for e in entries {
        let kind = match e.kind {
            EntryKind::File => "f",
            EntryKind::Dir => "d",
            EntryKind::Symlink => "l",
        };
        let content = e.sha256.as_deref().or(e.target.as_deref()).unwrap_or("-");
        h.update(format!(
            "{kind}\t{:o}\t{}\t{content}\t{}\n",
            e.mode, e.size, e.path
        ));
    }
    hex::encode(h.finalize())
}

/// Whether `s` is a full version id: 64 lowercase hex digits.
pub fn is_version_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A full version id from `wanted` (an id, or a unique prefix of at least 4 characters of
/// one of `known`). The errors name no place: callers add it.
pub fn resolve_version(wanted: &str, known: impl IntoIterator<Item = String>) -> Result<String> {
    if is_version_id(wanted) {
        return Ok(wanted.to_string());
    }
    if wanted.len() < 4 {
        return Err(Error::Usage(format!(
            "version `{wanted}` is too short; give at least 4 characters"
        )));
    }
    let matches: Vec<String> = known
        .into_iter()
        .filter(|v| v.starts_with(wanted))
        .collect();
    match matches.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(Error::NotFound(format!("no version {wanted}"))),
        _ => Err(Error::Usage(format!(
            "version prefix {wanted} is ambiguous"
        ))),
    }
}

/// Whether a relative archive path is safe: non-empty `/`-separated segments, none `.` or
/// `..`, no NUL or control characters, not absolute.
pub fn is_safe_relative_path(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && path.split('/').all(|s| check_portable_segment(s).is_ok())
}

/// Whether a symlink at `link_path` with `target` resolves, lexically, inside the tree whose
/// root is the empty path.
pub fn link_stays_inside(link_path: &str, target: &str) -> bool {
    if target.is_empty() || target.starts_with('/') || target.contains('\0') {
        return false;
    }
    let mut depth = link_path.split('/').count() as i64 - 1;
    for seg in target.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                depth -= 1;
                if depth < 0 {
                    return false;
                }
            }
            _ => depth += 1,
        }
    }
    true
}

impl PackageManifest {
    /// Parses a manifest and checks that it is whole and that it is the manifest of
    /// `expected_version`: the version id recomputed from its entries must match.
    pub fn parse(bytes: &[u8], expected_version: &str) -> Result<Self> {
        let bad = |why: String| {
            Error::Integrity(format!(
                "manifest of version {}: {why}",
                short(expected_version)
            ))
        };
        let m: PackageManifest =
            serde_json::from_slice(bytes).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        if ![MANIFEST_FORMAT, FRAMES_FORMAT, PACKS_FORMAT].contains(&m.format) {
            return Err(bad(format!("unsupported format {}", m.format)));
        }
        if Frame::named_in(m.format)
            && !m
                .frames
                .iter()
                .all(|f| f.sha256.as_deref().is_some_and(is_version_id))
        {
            return Err(bad("a frame has no valid sha256".into()));
        }
        if m.format == PACKS_FORMAT
            && !m.frames.iter().all(|f| {
                f.pack.as_deref().is_some_and(is_version_id)
                    && f.pack_offset
                        .is_some_and(|o| o.checked_add(f.length).is_some())
            })
        {
            return Err(bad("a frame has no valid pack".into()));
        }
        if m.compression != "zstd" {
            return Err(bad(format!("unsupported compression {}", m.compression)));
        }
        if m.version != expected_version {
            return Err(bad(format!("it names version {}", short(&m.version))));
        }
        if version_id(&m.entries) != m.version {
            return Err(bad("its entries do not hash to its version id".into()));
        }
        let mut kinds: HashMap<&str, EntryKind> = HashMap::with_capacity(m.entries.len());
        let mut prev: Option<&str> = None;
        for e in &m.entries {
            if !is_safe_relative_path(&e.path) {
                return Err(bad(format!("unsafe path `{}`", e.path.escape_debug())));
            }
            if prev.is_some_and(|p| p >= e.path.as_str()) {
                return Err(bad(format!(
                    "entries are not sorted and unique at `{}`",
                    e.path
                )));
            }
            prev = Some(&e.path);
            for (i, _) in e.path.match_indices('/') {
                if kinds
                    .get(&e.path[..i])
                    .is_some_and(|k| *k != EntryKind::Dir)
                {
                    return Err(bad(format!("`{}` lies under a file or symlink", e.path)));
                }
            }
            if e.frame as usize >= m.frames.len() {
                return Err(bad(format!("`{}` names a missing frame", e.path)));
            }
            match e.kind {
                EntryKind::File => {
                    if !e.sha256.as_deref().is_some_and(is_version_id) {
                        return Err(bad(format!("`{}` has no valid sha256", e.path)));
                    }
                    if e.mode != 0o644 && e.mode != 0o755 {
                        return Err(bad(format!("`{}` has mode {:o}", e.path, e.mode)));
                    }
                }
                EntryKind::Dir => {}
                EntryKind::Symlink => {
                    let inside = e
                        .target
                        .as_deref()
                        .is_some_and(|t| link_stays_inside(&e.path, t));
                    if !inside {
                        return Err(bad(format!("symlink `{}` points outside the tree", e.path)));
                    }
                }
            }
            kinds.insert(&e.path, e.kind);
        }
        if Totals::count(&m.entries, m.totals.package_bytes) != m.totals {
            return Err(bad("its totals do not match its entries".into()));
        }
        if m.totals.bytes > m.totals.package_bytes.saturating_mul(MAX_EXPANSION) {
            return Err(bad(format!(
                "it declares {} bytes of files in a package of {} bytes, more than zstd can expand to",
                m.totals.bytes, m.totals.package_bytes
            )));
        }
        let mut next = (0u64, 0u64);
        for f in &m.frames {
            if (f.offset, f.uncompressed_offset) != next {
                return Err(bad("its frame table is not contiguous".into()));
            }
            next = match (
                f.offset.checked_add(f.length),
                f.uncompressed_offset.checked_add(f.uncompressed_length),
            ) {
                (Some(a), Some(b)) => (a, b),
                _ => return Err(bad("its frame table overflows".into())),
            };
        }
        if next.0 != m.totals.package_bytes {
            return Err(bad("its frame table does not cover the package".into()));
        }
        Ok(m)
    }

    /// The manifest as JSON, as format 1 stores it.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a manifest always serializes")
    }

    /// A format-2 manifest as stored: zstd-compressed JSON, at [`MANIFEST_LEVEL`].
    pub fn to_compressed(&self) -> Vec<u8> {
        zstd::bulk::compress(&self.to_json(), MANIFEST_LEVEL).expect("compressing to memory")
    }

    /// The manifest as a store keeps it: format 1 as plain JSON, later formats compressed.
    /// A signature covers exactly these bytes.
    pub fn stored_bytes(&self) -> Vec<u8> {
        if self.format == MANIFEST_FORMAT {
            self.to_json()
        } else {
            self.to_compressed()
        }
    }

    /// Parses a stored manifest, compressed (`.json.zst`) or not (`.json`), as [`Self::parse`];
    /// a compressed one may unpack to at most [`manifest_unpacked_max`] of its size (a few
    /// hundred times it, within [`MAX_MANIFEST_BYTES`]).
    pub fn parse_stored(bytes: &[u8], compressed: bool, expected_version: &str) -> Result<Self> {
        if !compressed {
            return Self::parse(bytes, expected_version);
        }
        let bad = |why: String| {
            Error::Integrity(format!(
                "manifest of version {}: {why}",
                short(expected_version)
            ))
        };
        let limit = manifest_unpacked_max(bytes.len() as u64);
        let mut json = Vec::new();
        let decoder =
            zstd::stream::read::Decoder::new(bytes).map_err(|e| bad(format!("not zstd: {e}")))?;
        std::io::Read::read_to_end(&mut std::io::Read::take(decoder, limit + 1), &mut json)
            .map_err(|e| bad(format!("not valid zstd: {e}")))?;
        if json.len() as u64 > limit {
            return Err(bad(match limit < MAX_MANIFEST_BYTES {
                true => format!(
                    "its {} bytes unpack to more than {limit} (MANIFEST_RATIO_MAX: \
                     {MANIFEST_RATIO_MAX} times its size)",
                    bytes.len()
                ),
                false => format!("it unpacks to more than {limit} bytes (MANIFEST_MAX)"),
            }));
        }
        let m = Self::parse(&json, expected_version)?;
        if !Frame::named_in(m.format) {
            return Err(bad(format!("a compressed manifest of format {}", m.format)));
        }
        Ok(m)
    }

    /// For each frame, the range of entries (by index) whose bytes lie in it: the frames a
    /// reader needs for one entry run from its `frame` up to the frame holding its last byte,
    /// which is just before the next entry's offset.
    pub fn entry_end(&self, index: usize) -> u64 {
        match self.entries.get(index + 1) {
            Some(next) => next.offset,
            None => self
                .frames
                .last()
                .map_or(0, |f| f.uncompressed_offset + f.uncompressed_length),
        }
    }
}

impl PackageManifest {
    /// The frames that hold entry `index`, from its own frame to the one holding its last byte.
    pub fn frames_of_entry(&self, index: usize) -> Vec<Frame> {
        let Some(entry) = self.entries.get(index) else {
            return Vec::new();
        };
        let end = self.entry_end(index);
        self.frames[(entry.frame as usize).min(self.frames.len())..]
            .iter()
            .take_while(|f| f.uncompressed_offset < end || f.uncompressed_offset == entry.offset)
            .cloned()
            .collect()
    }
}

/// The first 12 characters of a version id, for messages.
pub fn short(version: &str) -> &str {
    &version[..version.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bounds::MANIFEST_UNPACKED_FREE;

    #[test]
    fn links_are_checked_lexically() {
        assert!(link_stays_inside("a/b", "c"));
        assert!(link_stays_inside("a/b", "../x"));
        assert!(!link_stays_inside("a/b", "../../x"));
        assert!(!link_stays_inside("a", "/etc/passwd"));
        assert!(link_stays_inside("a/b/c", "../../d/../e"));
        assert!(!link_stays_inside("l", ".."));
    }

    #[test]
    fn unsafe_paths_are_rejected() {
        for p in ["", "/abs", "a/../b", "..", "a//b", "./a", "a\0b"] {
            assert!(!is_safe_relative_path(p), "{p:?}");
        }
        assert!(is_safe_relative_path("a b/c+%#.txt"));
        for windows_path in ["a\\b", "C:/x", "d/c:evil"] {
            assert!(!is_safe_relative_path(windows_path), "{windows_path:?}");
        }
    }

    #[test]
    fn version_id_depends_on_content_and_mode() {
        let e = |sha: &str, mode| ManifestEntry {
            path: "a".into(),
            kind: EntryKind::File,
            mode,
            size: 1,
            sha256: Some(sha.repeat(64)),
            target: None,
            frame: 0,
            offset: 0,
        };
        let v1 = version_id(&[e("a", 0o644)]);
        assert_eq!(v1, version_id(&[e("a", 0o644)]));
        assert_ne!(v1, version_id(&[e("b", 0o644)]));
        assert_ne!(v1, version_id(&[e("a", 0o755)]));
        assert!(is_version_id(&v1));
    }

    /// The tree that compresses best in practice, many empty files each in a folder of its
    /// own, stays readable under the bound a reader puts on a manifest's ratio.
    #[test]
    fn the_most_compressible_real_entries_unpack_within_the_ratio_bound() {
        let empty = Some(hex::encode(Sha256::digest(b"")));
        let entries: Vec<ManifestEntry> = (0..150_000)
            .flat_map(|i| {
                let dir = format!("pkg{i:06}");
                let file = format!("{dir}/__init__.py");
                [
                    (dir, EntryKind::Dir, None),
                    (file, EntryKind::File, empty.clone()),
                ]
            })
            .map(|(path, kind, sha256)| ManifestEntry {
                path,
                kind,
                mode: 0o644,
                size: 0,
                sha256,
                target: None,
                frame: 0,
                offset: 0,
            })
            .collect();
        let json = serde_json::to_vec(&entries).unwrap();
        let stored = zstd::bulk::compress(&json, 9).unwrap();
        assert!(json.len() as u64 > MANIFEST_UNPACKED_FREE, "{}", json.len());
        let ratio = json.len() / stored.len();
        assert!(
            json.len() as u64 <= manifest_unpacked_max(stored.len() as u64) / 2,
            "{} bytes from {} ({ratio}×)",
            json.len(),
            stored.len()
        );
    }
}
