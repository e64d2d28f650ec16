//! The agent's manifest cache: the manifests of versions it got, kept in `manifests/` beside
//! the frame cache. A version id names its content, so a manifest once read never changes;
//! a get of a version whose manifest and frames are here asks the store for nothing more
//! than HEAD (nothing at all when it names the version in full).
//!
//! A manifest is kept per store and path: its file is named by a hash of the store's scope
//! and the slug, then the version id (the same tree stored elsewhere has other frames and
//! packs). It is checked against its version id on every read (a damaged one is dropped), and
//! written through a temporary file renamed into place. The folder is kept under an eighth
//! of the frame cache's limit by dropping the least recently used manifests.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use sha2::{Digest, Sha256};

use crate::package::frame_cache::{beside_frames, limit_from_env, trim_dir};
use crate::package::manifest::{Frame, PackageManifest, is_version_id};

/// The manifest cache holds this share of the frame cache's limit.
const SHARE_OF_FRAME_LIMIT: u64 = 8;

/// The manifests of one slug on one store that this agent got, or none (disabled).
#[derive(Debug, Clone)]
pub struct ManifestCache {
    dir: Option<PathBuf>,
    /// Names the store and path: the first part of every file name.
    key: String,
    limit: u64,
}

impl ManifestCache {
    /// The cache a get with these settings uses for `slug` on the store `scope` names:
    /// beside the frame cache (`manifests/` in the cache folder; `<frames_dir>-manifests`
    /// when a frame folder is given, which then holds frames only); none when `no_cache`, or
    /// when the store names no scope.
    pub fn for_get(
        scope: Option<&str>,
        slug: &str,
        no_cache: bool,
        frames_dir: Option<&Path>,
    ) -> Self {
        let dir = match (no_cache, scope) {
            (true, _) | (_, None) => None,
            (false, Some(_)) => beside_frames(frames_dir, "manifests"),
        };
        let mut h = Sha256::new();
        h.update(scope.unwrap_or_default().as_bytes());
        h.update(b"\n");
        h.update(slug.as_bytes());
        ManifestCache {
            dir,
            key: hex::encode(&h.finalize()[..16]),
            limit: limit_from_env() / SHARE_OF_FRAME_LIMIT,
        }
    }

    /// Whether manifests are read and kept at all.
    pub fn is_enabled(&self) -> bool {
        self.dir.is_some()
    }

    fn path(&self, version: &str) -> Option<PathBuf> {
        if !is_version_id(version) {
            return None;
        }
        Some(
            self.dir
                .as_ref()?
                .join(format!("{}-{version}.json.zst", self.key)),
        )
    }

    /// The manifest of `version`, if cached and whole (checked against the id).
    pub fn get(&self, version: &str) -> Option<PackageManifest> {
        let path = self.path(version)?;
        let data = std::fs::read(&path).ok()?;
        match PackageManifest::parse_stored(&data, true, version) {
            Ok(m) => {
                if let Ok(f) = std::fs::File::options().write(true).open(&path) {
                    let _ = f.set_modified(SystemTime::now());
                }
                Some(m)
            }
            Err(_) => {
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// Keeps a manifest read from the store (formats 2 and 3; format 1's archives are read
    /// whole anyway). Failures only cost a later read, so they are ignored.
    pub fn put(&self, manifest: &PackageManifest) {
        let (Some(dir), Some(path)) = (self.dir.as_ref(), self.path(&manifest.version)) else {
            return;
        };
        if !Frame::named_in(manifest.format) || path.exists() {
            return;
        }
        let data = manifest.to_compressed();
        if data.len() as u64 > self.limit {
            return;
        }
        let _ = std::fs::create_dir_all(dir);
        let Ok(mut tmp) = tempfile::Builder::new().prefix(".tmp-").tempfile_in(dir) else {
            return;
        };
        if std::io::Write::write_all(&mut tmp, &data).is_ok() {
            let _ = tmp.persist(&path);
        }
    }

    /// Drops the cached manifest of `version` (its store no longer holds what it names).
    pub fn forget(&self, version: &str) {
        if let Some(path) = self.path(version) {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Drops the least recently used manifests until the folder holds at most the limit.
    pub fn trim(&self) {
        if let Some(dir) = &self.dir {
            trim_dir(dir, self.limit);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::EntryKind;
    use crate::package::manifest::{FRAMES_FORMAT, ManifestEntry, Totals, version_id};

    fn manifest(text: &str) -> PackageManifest {
        use sha2::Digest;
        let entries = vec![ManifestEntry {
            path: "a.txt".into(),
            kind: EntryKind::File,
            mode: 0o644,
            size: text.len() as u64,
            sha256: Some(hex::encode(sha2::Sha256::digest(text.as_bytes()))),
            target: None,
            frame: 0,
            offset: 0,
        }];
        let frames = vec![Frame {
            length: 10,
            uncompressed_length: 1536,
            sha256: Some("ab".repeat(32)),
            ..Frame::default()
        }];
        PackageManifest {
            format: FRAMES_FORMAT,
            version: version_id(&entries),
            created: String::new(),
            compression: "zstd".into(),
            totals: Totals::count(&entries, 10),
            frames,
            entries,
            record: None,
        }
    }

    #[test]
    fn manifests_are_kept_per_store_and_path_and_checked_when_read() {
        let dir = tempfile::tempdir().unwrap();
        let frames = dir.path().join("frames");
        let cache = ManifestCache::for_get(Some("store-a"), "s3/x/etl", false, Some(&frames));
        let m = manifest("hello");
        assert!(cache.get(&m.version).is_none());
        cache.put(&m);
        assert_eq!(cache.get(&m.version), Some(m.clone()));
        assert!(
            dir.path().join("frames-manifests").is_dir(),
            "beside the frames"
        );
        let other = ManifestCache::for_get(Some("store-b"), "s3/x/etl", false, Some(&frames));
        assert!(other.get(&m.version).is_none(), "another store's manifest");
        let path = cache.path(&m.version).unwrap();
        let mut other_manifest = manifest("other");
        other_manifest.version = m.version.clone();
        std::fs::write(&path, other_manifest.to_compressed()).unwrap();
        assert!(cache.get(&m.version).is_none(), "a manifest not of its id");
        assert!(!path.exists(), "a damaged manifest is dropped");
        cache.put(&m);
        cache.forget(&m.version);
        assert!(cache.get(&m.version).is_none());
        let off = ManifestCache::for_get(Some("store-a"), "s3/x/etl", true, Some(&frames));
        off.put(&m);
        assert!(off.get(&m.version).is_none() && !off.is_enabled());
    }
}
