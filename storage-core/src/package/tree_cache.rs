//! The agent's copies of versions it got, as plain trees: a warm get copies a version's
//! files from here instead of reading, checking and decompressing its frames.
//!
//! A get that took most of its frames from the frame cache (an agent pulling the same
//! versions again) links the files it unpacked into `trees/<version>/` before they go to
//! DEST: hard links, so keeping a copy costs no bytes while DEST holds the files. The next
//! get of that version copies each file from there into its staging folder, hashing it on
//! the way against the manifest's sha256, on every core: it reads no frame and decompresses
//! nothing, and every file is still checked. A file that does not match (DEST's file was
//! changed in place, which changes the linked copy too) drops the copy and the get goes on
//! from the frames, so a copy can cost a get time but never bring wrong bytes. Copies go
//! out as new files, never links: two folders got from one copy share nothing.
//!
//! The folder sits beside the frame cache (`<frames>-trees`, else `trees/` in the cache
//! folder) and keeps the [`TREES_KEPT`] copies used last, each of a version of at most a
//! [`TREES_KEPT`]th of the frame cache's limit (`BLOCKCTL_CACHE_LIMIT`), so that the copies
//! take no more room than the frames once DEST is gone. A get with `--no-cache` neither
//! reads nor makes one.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;

use crate::block::EntryKind;
use crate::package::destination::empty_folder;
use crate::package::extract::{
    Extracted, check_free_space, create_file, link_unchanged, verify_stream,
};
use crate::package::frame_cache::{beside_frames, limit_from_env};
use crate::package::manifest::{ManifestEntry, PackageManifest, link_stays_inside, short};

/// Copies kept: the versions got most recently.
pub const TREES_KEPT: usize = 4;

/// Where the agent keeps its copies; disabled with `--no-cache`.
#[derive(Debug, Clone)]
pub struct TreeCache {
    dir: Option<PathBuf>,
    /// Bytes of files of the largest version kept.
    largest: u64,
}

impl TreeCache {
    /// The copies beside the frame cache in `frames_dir` (the default cache when `None`),
    /// or none with `no_cache`.
    pub fn for_get(no_cache: bool, frames_dir: Option<&Path>) -> Self {
        TreeCache {
            dir: match no_cache {
                true => None,
                false => beside_frames(frames_dir, "trees"),
            },
            largest: limit_from_env() / TREES_KEPT as u64,
        }
    }

    fn tree(&self, version: &str) -> Option<PathBuf> {
        // A version id names a folder only when it is plain hex.
        let plain = !version.is_empty() && version.bytes().all(|b| b.is_ascii_hexdigit());
        plain.then(|| self.dir.as_ref().map(|d| d.join(version)))?
    }

    /// Copies the whole version `manifest` describes into `staging` (empty) from the copy
    /// kept of it, each file checked against its sha256; files that `previous` (the folder
    /// a `--replace` replaces) holds unchanged are linked from there as an unpacking would.
    /// `None` when there is no copy or it does not match: `staging` is then emptied again
    /// and the copy dropped.
    pub fn copy_out(
        &self,
        manifest: &PackageManifest,
        staging: &Path,
        previous: Option<&Path>,
    ) -> Option<Extracted> {
        let tree = self.tree(&manifest.version)?;
        if !tree.is_dir() || check_free_space(manifest, staging, "", 0).is_err() {
            return None;
        }
        match copy_tree(&tree, manifest, staging, previous) {
            Ok(done) => {
                // Used now: the last to be dropped.
                let _ = fs::File::open(&tree).and_then(|d| d.set_modified(now()));
                Some(done)
            }
            Err(why) => {
                tracing::debug!(version = %short(&manifest.version), why = %why,
                    "the kept copy of a version does not match it; getting it from its frames");
                let _ = fs::remove_dir_all(&tree);
                // A staging folder that cannot be emptied fails the get from the frames.
                let _ = empty_folder(staging);
                None
            }
        }
    }

    /// Keeps a copy of the version `manifest` describes, whose files a get just unpacked
    /// and checked in `staging`, as hard links (no copy when they cannot be linked: another
    /// file system). Then drops all but the [`TREES_KEPT`] copies used last.
    pub fn link_in(&self, manifest: &PackageManifest, staging: &Path) {
        let Some(tree) = self.tree(&manifest.version) else {
            return;
        };
        let bytes = files(manifest)
            .iter()
            .fold(0u64, |n, e| n.saturating_add(e.size));
        if bytes > self.largest {
            return;
        }
        if tree.is_dir() {
            let _ = fs::File::open(&tree).and_then(|d| d.set_modified(now()));
            return;
        }
        let Some(dir) = tree.parent() else {
            return;
        };
        static MADE: AtomicU64 = AtomicU64::new(0);
        let partial = dir.join(format!(
            ".{}.{}-{}.partial",
            manifest.version,
            std::process::id(),
            MADE.fetch_add(1, Ordering::Relaxed)
        ));
        let linked = link_tree(staging, manifest, &partial);
        let kept = linked.is_ok() && fs::rename(&partial, &tree).is_ok();
        if !kept {
            let _ = fs::remove_dir_all(&partial);
        }
        drop_unused(dir);
    }
}

fn now() -> std::time::SystemTime {
    std::time::SystemTime::now()
}

/// Links every file of `manifest` from `staging` into the new folder `partial`.
fn link_tree(staging: &Path, manifest: &PackageManifest, partial: &Path) -> io::Result<()> {
    fs::create_dir_all(partial)?;
    for e in manifest.entries.iter().filter(|e| e.kind == EntryKind::Dir) {
        fs::create_dir_all(partial.join(&e.path))?;
    }
    files(manifest)
        .par_iter()
        .try_for_each(|e| fs::hard_link(staging.join(&e.path), partial.join(&e.path)))
}

/// The regular files of `manifest`.
fn files(manifest: &PackageManifest) -> Vec<&ManifestEntry> {
    manifest
        .entries
        .iter()
        .filter(|e| e.kind == EntryKind::File)
        .collect()
}

/// Copies the version from `tree` into `staging`: folders, then files (each hashed), then
/// links.
fn copy_tree(
    tree: &Path,
    manifest: &PackageManifest,
    staging: &Path,
    previous: Option<&Path>,
) -> Result<Extracted, String> {
    for e in manifest.entries.iter().filter(|e| e.kind == EntryKind::Dir) {
        fs::create_dir_all(staging.join(&e.path)).map_err(|err| format!("{}: {err}", e.path))?;
    }
    let (bytes, linked) = (AtomicU64::new(0), AtomicU64::new(0));
    let files = files(manifest);
    files.par_iter().try_for_each(|e| {
        let to = staging.join(&e.path);
        if let Some(prev) = previous
            && link_unchanged(&prev.join(&e.path), &to, e)
        {
            linked.fetch_add(1, Ordering::Relaxed);
        } else {
            copy_checked(&tree.join(&e.path), &to, e)
                .map_err(|why| format!("{}: {why}", e.path))?;
        }
        bytes.fetch_add(e.size, Ordering::Relaxed);
        Ok::<_, String>(())
    })?;
    for e in manifest
        .entries
        .iter()
        .filter(|e| e.kind == EntryKind::Symlink)
    {
        let target = e.target.as_deref().unwrap_or_default();
        if !link_stays_inside(&e.path, target) {
            return Err(format!("{}: the link leaves the destination", e.path));
        }
        std::os::unix::fs::symlink(target, staging.join(&e.path))
            .map_err(|err| format!("{}: {err}", e.path))?;
    }
    Ok(Extracted {
        files: files.len() as u64,
        bytes: bytes.into_inner(),
        linked: linked.into_inner(),
    })
}

/// Copies `from` to the new file `to` with the record's mode, checked as an unpacking checks
/// a file ([`verify_stream`]): refused unless the bytes are the record's size and sha256.
fn copy_checked(from: &Path, to: &Path, record: &ManifestEntry) -> crate::Result<()> {
    let failed = |e| crate::Error::io(format!("copying {}", record.path), e);
    let mut src = fs::File::open(from).map_err(failed)?;
    if src.metadata().map_err(failed)?.len() != record.size {
        return Err(crate::Error::Integrity(
            "not the size the manifest lists".into(),
        ));
    }
    let out = create_file(to, record.mode).map_err(failed)?;
    verify_stream(
        &mut src,
        record,
        io::BufWriter::with_capacity(256 * 1024, out),
    )
}

/// Drops the copies in `dir` beyond the [`TREES_KEPT`] used last, and partial ones left by
/// a get that ended before renaming its copy in (older than a minute).
fn drop_unused(dir: &Path) {
    let Ok(read) = fs::read_dir(dir) else {
        return;
    };
    let mut trees: Vec<(std::time::SystemTime, PathBuf)> = Vec::new();
    for e in read.flatten() {
        let Ok(modified) = e.metadata().and_then(|m| m.modified()) else {
            continue;
        };
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".partial") {
            if now().duration_since(modified).unwrap_or_default().as_secs() > 60 {
                let _ = fs::remove_dir_all(e.path());
            }
        } else {
            trees.push((modified, e.path()));
        }
    }
    trees.sort_by_key(|t| std::cmp::Reverse(t.0));
    for (_, path) in trees.into_iter().skip(TREES_KEPT) {
        let _ = fs::remove_dir_all(path);
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use std::io::Write;

    use super::*;
    use crate::hashcache::HashCache;

    /// A file larger than the size past which an unpacking hashes beside the copy.
    const BIG: usize = 5 << 20;
    use crate::source_tree::{ScanOptions, SourceTree};

    /// A version of a small project, and a staging folder holding it as a get unpacked it.
    fn version(root: &Path) -> (PackageManifest, PathBuf) {
        let src = root.join("src");
        for i in 0..40 {
            let p = src.join(format!("d{}/f{i}.py", i % 3));
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, format!("print({i})\n").repeat(i + 1)).unwrap();
        }
        fs::write(src.join("big.bin"), vec![7u8; BIG + 5]).unwrap();
        std::os::unix::fs::symlink("d0/f0.py", src.join("link.py")).unwrap();
        let mut tree = SourceTree::scan(&src, &ScanOptions::default()).unwrap();
        tree.hash_files_cached(&HashCache::disabled()).unwrap();
        let manifest = PackageManifest {
            version: tree.version_id(),
            entries: tree.entries.iter().map(|e| e.record.clone()).collect(),
            ..PackageManifest::default()
        };
        let staging = root.join("staging");
        copy_dir(&src, &staging);
        (manifest, staging)
    }

    fn copy_dir(from: &Path, to: &Path) {
        let ok = std::process::Command::new("cp")
            .arg("-a")
            .arg(from)
            .arg(to)
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }

    fn listing(root: &Path) -> Vec<(String, Vec<u8>)> {
        let mut out = Vec::new();
        fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>)>) {
            let mut entries: Vec<_> = fs::read_dir(dir).unwrap().flatten().collect();
            entries.sort_by_key(|e| e.file_name());
            for e in entries {
                let rel = e.path().strip_prefix(root).unwrap().display().to_string();
                let t = e.file_type().unwrap();
                if t.is_symlink() {
                    let target = fs::read_link(e.path()).unwrap();
                    out.push((rel, target.display().to_string().into_bytes()));
                } else if t.is_dir() {
                    out.push((rel, Vec::new()));
                    walk(root, &e.path(), out);
                } else {
                    out.push((rel, fs::read(e.path()).unwrap()));
                }
            }
        }
        walk(root, root, &mut out);
        out
    }

    #[test]
    fn a_kept_copy_is_copied_out_whole_into_new_files() {
        let dir = tempfile::tempdir().unwrap();
        let (manifest, staging) = version(dir.path());
        let trees = TreeCache::for_get(false, Some(&dir.path().join("frames")));
        trees.link_in(&manifest, &staging);
        let kept = dir.path().join("frames-trees").join(&manifest.version);
        assert!(kept.is_dir(), "no copy kept");

        let out = dir.path().join("out");
        fs::create_dir(&out).unwrap();
        let done = trees.copy_out(&manifest, &out, None).expect("copied");
        assert_eq!(listing(&out), listing(&staging));
        assert_eq!((done.files, done.linked), (41, 0));
        assert_eq!(
            done.bytes,
            BIG as u64
                + 5
                + (1..=40)
                    .map(|i| { format!("print({})\n", i - 1).len() as u64 * i as u64 })
                    .sum::<u64>()
        );
        let (a, b) = (out.join("d0/f0.py"), staging.join("d0/f0.py"));
        assert_ne!(
            fs::metadata(a).unwrap().ino(),
            fs::metadata(b).unwrap().ino()
        );

        // Disabled, nothing is kept or copied.
        let off = TreeCache::for_get(true, Some(&dir.path().join("frames")));
        let empty = dir.path().join("empty");
        fs::create_dir(&empty).unwrap();
        assert!(off.copy_out(&manifest, &empty, None).is_none());
    }

    #[test]
    fn a_copy_changed_through_its_folder_is_dropped_and_nothing_copied() {
        let dir = tempfile::tempdir().unwrap();
        let (manifest, staging) = version(dir.path());
        let trees = TreeCache::for_get(false, Some(&dir.path().join("frames")));
        trees.link_in(&manifest, &staging);
        // DEST's file (the same inode) rewritten in place, same size.
        let file = staging.join("d1/f1.py");
        let len = fs::metadata(&file).unwrap().len() as usize;
        fs::OpenOptions::new()
            .write(true)
            .open(&file)
            .unwrap()
            .write_all(&vec![b'x'; len])
            .unwrap();
        let out = dir.path().join("out");
        fs::create_dir(&out).unwrap();
        assert!(trees.copy_out(&manifest, &out, None).is_none());
        assert_eq!(fs::read_dir(&out).unwrap().count(), 0, "staging emptied");
        let kept = dir.path().join("frames-trees").join(&manifest.version);
        assert!(!kept.exists(), "the copy is dropped");
    }

    #[test]
    fn only_the_copies_used_last_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (mut manifest, staging) = version(dir.path());
        let trees = TreeCache::for_get(false, Some(&dir.path().join("frames")));
        let kept = dir.path().join("frames-trees");
        for i in 0..TREES_KEPT + 2 {
            manifest.version = format!("{i:064x}");
            trees.link_in(&manifest, &staging);
            let when =
                std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(i as u64 * 60);
            fs::File::open(kept.join(&manifest.version))
                .unwrap()
                .set_modified(when)
                .unwrap();
        }
        drop_unused(&kept);
        let mut left: Vec<String> = fs::read_dir(&kept)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        let newest: Vec<String> = (2..TREES_KEPT + 2).map(|i| format!("{i:064x}")).collect();
        assert_eq!(left, newest);
    }
}
