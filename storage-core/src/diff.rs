//! `diff`: what changed between two versions, and what a pull of the newer one moves when
//! the older one's frames are already at hand.

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use crate::package::manifest::{Frame, ManifestEntry, PackageManifest};

/// What `blockctl diff` prints: the paths that differ between two versions, and the bytes a
/// pull of `to` moves when `from` is cached.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct VersionDiff {
    /// The older version's id.
    pub from: String,
    /// The newer version's id.
    pub to: String,
    /// Paths only `to` has.
    pub added: Vec<String>,
    /// Paths only `from` has.
    pub removed: Vec<String>,
    /// Content, mode, kind or link target differ.
    pub changed: Vec<String>,
    /// Bytes of frames of `to` that `from` does not have: what a pull with `from` cached
    /// downloads besides the manifest (a format-1 `to` is always pulled whole).
    pub pull_bytes: u64,
    /// How many frames those are.
    pub pull_frames: u64,
    /// Bytes of all of `to`'s frames.
    pub package_bytes: u64,
}

/// Compares two versions' manifests.
pub fn diff(from: &PackageManifest, to: &PackageManifest) -> VersionDiff {
    let old: HashMap<&str, &ManifestEntry> =
        from.entries.iter().map(|e| (e.path.as_str(), e)).collect();
    let new: HashSet<&str> = to.entries.iter().map(|e| e.path.as_str()).collect();
    let mut d = VersionDiff {
        from: from.version.clone(),
        to: to.version.clone(),
        package_bytes: to.totals.package_bytes,
        ..VersionDiff::default()
    };
    for e in &to.entries {
        match old.get(e.path.as_str()) {
            None => d.added.push(e.path.clone()),
            Some(o) if !same_content(o, e) => d.changed.push(e.path.clone()),
            Some(_) => {}
        }
    }
    d.removed = from
        .entries
        .iter()
        .filter(|e| !new.contains(e.path.as_str()))
        .map(|e| e.path.clone())
        .collect();
    if Frame::named_in(to.format) {
        let have: HashSet<&str> = from
            .frames
            .iter()
            .filter_map(|f| f.sha256.as_deref())
            .collect();
        let mut counted = HashSet::new();
        for f in &to.frames {
            let sha = f.sha256.as_deref().unwrap_or_default();
            if !have.contains(sha) && counted.insert(sha) {
                d.pull_bytes += f.length;
                d.pull_frames += 1;
            }
        }
    } else {
        d.pull_bytes = to.totals.package_bytes;
        d.pull_frames = to.frames.len() as u64;
    }
    d
}

fn same_content(a: &ManifestEntry, b: &ManifestEntry) -> bool {
    (a.kind, a.mode, a.size, &a.sha256, &a.target) == (b.kind, b.mode, b.size, &b.sha256, &b.target)
}
