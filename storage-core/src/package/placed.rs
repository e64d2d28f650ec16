//! What a get left in its destination, so that a `get --replace` of the version the
//! destination already holds writes nothing and reads no file.
//!
//! After a get puts a whole version in place (not `--merge`, not `--only`, not a sub-path),
//! it records the version id and what `stat` says of the destination and of every entry in
//! it (device, inode, size, mtime and ctime, as the stat cache of a put keeps them). A later
//! `get --replace` of the same version into the same folder stats them again: when every
//! stamp is the same, nothing can have changed (a write, a chmod, a rename or a file added to
//! or removed from a folder moves a ctime or an mtime, and no user can set a ctime back), and
//! the get is done.
//!
//! A stamp taken within [`RACY_MARGIN`](crate::hashcache::RACY_MARGIN) of a change is not trusted on its own (a write in the
//! same clock tick could leave it as it was, git's "racily clean" case), and right after a
//! get every stamp is that young. Then the folder is compared with the manifest instead
//! (every path, kind, mode, link target, size and sha256, and nothing more): still no file
//! written, and the record is taken again so that the next check needs only the stamps.
//!
//! Records live in the agent's cache (`placed/` beside `frames/`), one per destination
//! folder. One that cannot be read or written only costs the time this saves.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, Metadata};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::hashcache::{Stamp, read_json, write_atomically};
use crate::package::extract::{has_recorded_content, is_file_as_recorded};
use crate::package::frame_cache::beside_frames;
use crate::package::manifest::EntryKind;
use crate::package::manifest::PackageManifest;

const FORMAT: u32 = 1;

/// The record of one destination folder, or none (no cache).
#[derive(Debug, Clone)]
pub struct Placed {
    file: Option<PathBuf>,
}

#[derive(Serialize, Deserialize)]
struct Record {
    format: u32,
    dest: PathBuf,
    version: String,
    files: u64,
    bytes: u64,
    /// When the stamps were taken, as a duration since the epoch.
    taken: Duration,
    /// The destination (`""`) and every path below it.
    stamps: BTreeMap<String, Stamp>,
}

/// What a version in place holds: its files and their bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Held {
    /// Files of the version.
    pub files: u64,
    /// Bytes of those files.
    pub bytes: u64,
}

impl Placed {
    /// The record of `dest` a get with these settings keeps: in `placed/` of the cache
    /// folder (`<frames_dir>-placed` when a frame folder is given), none when `no_cache`.
    pub fn for_get(dest: &Path, no_cache: bool, frames_dir: Option<&Path>) -> Self {
        let dir = match no_cache {
            true => None,
            false => beside_frames(frames_dir, "placed"),
        };
        let file = dir.and_then(|dir| {
            let dest = absolute(dest)?;
            let name = hex::encode(&Sha256::digest(dest.as_os_str().as_encoded_bytes())[..16]);
            Some(dir.join(format!("{name}.json")))
        });
        Placed { file }
    }

    /// Forgets what was recorded (the folder is about to change).
    pub fn forget(&self) {
        if let Some(file) = &self.file {
            let _ = fs::remove_file(file);
        }
    }

    /// Records that `dest` now holds exactly `version`, as a get just put it there.
    pub fn record(&self, dest: &Path, version: &str, held: Held) {
        let (Some(file), Some(dest)) = (&self.file, absolute(dest)) else {
            return;
        };
        let Some(look) = Look::of(&dest) else {
            self.forget();
            return;
        };
        let record = Record {
            format: FORMAT,
            dest,
            version: version.to_string(),
            files: held.files,
            bytes: held.bytes,
            taken: look.taken,
            stamps: look.stamps(),
        };
        let _ = write_atomically(file, &record);
    }

    /// Whether `dest` holds exactly the version `manifest` describes, as this agent put it
    /// there: by the stamps alone when they are settled, else by comparing the folder with
    /// the manifest (after which the record is taken again). `manifest` is read only then.
    pub fn holds(
        &self,
        dest: &Path,
        version: &str,
        manifest: impl FnOnce() -> Option<PackageManifest>,
    ) -> Option<Held> {
        let (file, dest) = (self.file.as_ref()?, absolute(dest)?);
        let record: Record = read_json(Some(file))?;
        if record.format != FORMAT || record.dest != dest || record.version != version {
            return None;
        }
        let held = Held {
            files: record.files,
            bytes: record.bytes,
        };
        let since = SystemTime::UNIX_EPOCH + record.taken;
        let mut settled = true;
        for (path, stamp) in &record.stamps {
            let meta = fs::symlink_metadata(dest.join(path)).ok()?;
            if Stamp::of(&meta) != *stamp {
                return None;
            }
            settled &= stamp.settled_before(since);
        }
        if settled {
            return Some(held);
        }
        let manifest = manifest().filter(|m| m.version == version)?;
        let look = Look::of(&dest)?;
        let stamps = look.stamps();
        if stamps != record.stamps || !look.holds(&dest, &manifest) {
            return None;
        }
        let record = Record {
            taken: look.taken,
            stamps,
            ..record
        };
        let _ = write_atomically(file, &record);
        Some(held)
    }
}

/// `dest` made absolute (not resolved: the record is of the name the user gives).
fn absolute(dest: &Path) -> Option<PathBuf> {
    std::path::absolute(dest).ok()
}

/// `dest` as one walk found it: when, what `lstat` said of `dest` itself, and of every path
/// below it.
struct Look {
    taken: Duration,
    root: Metadata,
    below: BTreeMap<String, Metadata>,
}

impl Look {
    /// A walk of `dest`; `None` when it cannot be read whole (or holds a name that is not
    /// UTF-8, which no manifest holds).
    fn of(dest: &Path) -> Option<Look> {
        let taken = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .ok()?;
        let root = fs::symlink_metadata(dest).ok()?;
        let mut below = BTreeMap::new();
        let mut pending = vec![String::new()];
        while let Some(folder) = pending.pop() {
            for name in fs::read_dir(dest.join(&folder)).ok()? {
                let name = name.ok()?.file_name().into_string().ok()?;
                let path = match folder.is_empty() {
                    true => name,
                    false => format!("{folder}/{name}"),
                };
                let meta = fs::symlink_metadata(dest.join(&path)).ok()?;
                if meta.is_dir() {
                    pending.push(path.clone());
                }
                below.insert(path, meta);
            }
        }
        Some(Look { taken, root, below })
    }

    /// The stamps of `dest` (`""`) and of everything below it.
    fn stamps(&self) -> BTreeMap<String, Stamp> {
        let below = self.below.iter().map(|(p, m)| (p.clone(), Stamp::of(m)));
        std::iter::once((String::new(), Stamp::of(&self.root)))
            .chain(below)
            .collect()
    }

    /// Whether the folder holds exactly `manifest`'s entries (and the folders above them):
    /// every path, kind, mode, link target, size and sha256, and nothing else.
    fn holds(&self, dest: &Path, manifest: &PackageManifest) -> bool {
        let by_path: HashMap<&str, _> = manifest
            .entries
            .iter()
            .map(|e| (e.path.as_str(), e))
            .collect();
        let folders: HashSet<&str> = manifest
            .entries
            .iter()
            .flat_map(|e| {
                std::iter::successors(Some(e.path.as_str()), |p| p.rsplit_once('/').map(|s| s.0))
                    .skip(1)
            })
            .collect();
        let mut seen = 0usize;
        for (path, meta) in &self.below {
            let Some(entry) = by_path.get(path.as_str()) else {
                // A folder the manifest holds only by the entries below it.
                if meta.is_dir() && folders.contains(path.as_str()) {
                    continue;
                }
                return false;
            };
            seen += 1;
            let at = dest.join(path);
            let same = match entry.kind {
                EntryKind::Dir => meta.is_dir(),
                EntryKind::Symlink => {
                    meta.is_symlink()
                        && fs::read_link(&at).is_ok_and(|t| {
                            Some(t.as_os_str()) == entry.target.as_deref().map(|t| t.as_ref())
                        })
                }
                EntryKind::File => {
                    is_file_as_recorded(meta, entry) && has_recorded_content(&at, entry)
                }
            };
            if !same {
                return false;
            }
        }
        seen == manifest.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::package::manifest::{ManifestEntry, version_id};

    /// A folder `dest` holding `a.txt` and `sub/b.txt`, as a get would leave it, and its
    /// manifest; its record in `cache`.
    fn placed_tree(root: &Path) -> (PathBuf, PackageManifest, Placed) {
        let dest = root.join("dest");
        fs::create_dir_all(dest.join("sub")).unwrap();
        for (path, data) in [("a.txt", "a"), ("sub/b.txt", "bb")] {
            fs::write(dest.join(path), data).unwrap();
            fs::set_permissions(dest.join(path), fs::Permissions::from_mode(0o644)).unwrap();
        }
        let entries = vec![
            ManifestEntry::file("a.txt", b"a"),
            ManifestEntry::file("sub/b.txt", b"bb"),
        ];
        let manifest = PackageManifest {
            format: 3,
            version: version_id(&entries),
            entries,
            ..PackageManifest::default()
        };
        let placed = Placed::for_get(&dest, false, Some(&root.join("cache").join("frames")));
        placed.record(&dest, &manifest.version, HELD);
        (dest, manifest, placed)
    }

    const HELD: Held = Held { files: 2, bytes: 3 };

    /// Moves the record's time `by` later, as if its stamps had been taken that much after
    /// the folder last changed.
    fn age(placed: &Placed, by: Duration) {
        let file = placed.file.as_ref().unwrap();
        let mut record: Record = serde_json::from_slice(&fs::read(file).unwrap()).unwrap();
        record.taken += by;
        fs::write(file, serde_json::to_vec(&record).unwrap()).unwrap();
    }

    #[test]
    fn settled_stamps_alone_say_the_version_is_in_place() {
        let root = tempfile::tempdir().unwrap();
        let (dest, manifest, placed) = placed_tree(root.path());
        age(&placed, 2 * RACY);
        let unread = || panic!("the manifest was read although every stamp is settled");
        assert_eq!(placed.holds(&dest, &manifest.version, unread), Some(HELD));
        assert_eq!(placed.holds(&dest, "other", unread), None);
    }

    #[test]
    fn young_stamps_are_checked_against_the_manifest_then_settle() {
        let root = tempfile::tempdir().unwrap();
        let (dest, manifest, placed) = placed_tree(root.path());
        let mut read = 0;
        let mut read_manifest = || {
            read += 1;
            Some(manifest.clone())
        };
        assert_eq!(
            placed.holds(&dest, &manifest.version, &mut read_manifest),
            Some(HELD)
        );
        assert_eq!(read, 1);
        // Taken again by the check: once that is old enough, the stamps do.
        age(&placed, 2 * RACY);
        let unread = || panic!("the manifest was read although every stamp is settled");
        assert_eq!(placed.holds(&dest, &manifest.version, unread), Some(HELD));
        // A manifest of another version never vouches for this one.
        let (dest2, manifest2, placed2) = placed_tree(&root.path().join("two"));
        let mut other = manifest2.clone();
        other.version = "0".repeat(64);
        assert_eq!(
            placed2.holds(&dest2, &manifest2.version, || Some(other)),
            None
        );
    }

    #[test]
    fn any_change_in_the_folder_is_seen() {
        type Change = fn(&Path);
        let changes: [(&str, Change); 6] = [
            ("a file rewritten", |d| {
                fs::write(d.join("a.txt"), "A").unwrap()
            }),
            ("a file added", |d| {
                fs::write(d.join("sub/new"), "").unwrap()
            }),
            ("a file removed", |d| {
                fs::remove_file(d.join("sub/b.txt")).unwrap()
            }),
            ("a mode changed", |d| {
                fs::set_permissions(d.join("a.txt"), fs::Permissions::from_mode(0o755)).unwrap()
            }),
            ("a folder added", |d| {
                fs::create_dir(d.join("extra")).unwrap()
            }),
            ("a file replaced", |d| {
                fs::remove_file(d.join("a.txt")).unwrap();
                fs::write(d.join("a.txt"), "a").unwrap();
            }),
        ];
        for (what, change) in changes {
            let root = tempfile::tempdir().unwrap();
            let (dest, manifest, placed) = placed_tree(root.path());
            age(&placed, 2 * RACY);
            // Past the clock tick of the record's stamps, as any real change after a get
            // is (one within it is what the racy check is for).
            std::thread::sleep(Duration::from_millis(50));
            change(&dest);
            let fresh = || Some(manifest.clone());
            assert_eq!(
                placed.holds(&dest, &manifest.version, fresh),
                None,
                "{what}"
            );
        }
    }

    #[test]
    fn a_young_folder_that_differs_from_the_manifest_is_not_in_place() {
        let root = tempfile::tempdir().unwrap();
        let (dest, manifest, placed) = placed_tree(root.path());
        let mut other = manifest.clone();
        other.entries[0] = ManifestEntry::file("a.txt", b"z");
        other.version = manifest.version.clone();
        assert_eq!(placed.holds(&dest, &manifest.version, || Some(other)), None);
        let none = Placed::for_get(&dest, true, None);
        assert_eq!(
            none.holds(&dest, &manifest.version, || Some(manifest.clone())),
            None
        );
    }

    const RACY: Duration = crate::hashcache::RACY_MARGIN;
}
