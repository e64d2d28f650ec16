//! Scanning a source tree for `put`: ignore rules (`.blockignore`, `.prefectignore`,
//! `--ignore-file`, VCS directories), symlink policy, and parallel sha256 of every file.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ignore::gitignore::{Gitignore, GitignoreBuilder};
use ignore::{DirEntry, ParallelVisitor, ParallelVisitorBuilder, WalkState};
use rayon::prelude::*;
use sha2::{Digest, Sha256};

use crate::block::EntryKind;
use crate::error::{Error, Result};
use crate::hashcache::{HashCache, Stamp};
use crate::package::manifest::{ManifestEntry, link_stays_inside, version_id};
use crate::slug::check_portable_segment;

/// Ignore files read at the source root, in this order (later rules win).
pub const IGNORE_FILES: [&str; 2] = [".blockignore", ".prefectignore"];
/// Left out unless `--no-default-ignores`.
pub const DEFAULT_IGNORES: [&str; 3] = [".git/", ".hg/", ".svn/"];

/// The parts of [`crate::PutOptions`] that decide which entries a scan takes.
#[derive(Debug, Clone, Default)]
pub struct ScanOptions {
    /// Use this ignore file instead of `.blockignore` / `.prefectignore`.
    pub ignore_file: Option<PathBuf>,
    /// Keep `.git/`, `.hg/` and `.svn/`.
    pub no_default_ignores: bool,
    /// Take the targets of symlinks instead of refusing links that leave the tree.
    pub follow_symlinks: bool,
}

/// One entry to upload: its manifest record and where it is on disk.
#[derive(Debug, Clone)]
pub struct SourceEntry {
    /// What the manifest will say of the entry (its sha256 once hashed).
    pub record: ManifestEntry,
    /// The entry's path on disk, under the scanned root.
    pub fs_path: PathBuf,
    /// What `stat` said of a file at scan time, the key of the hash cache.
    pub stamp: Option<Stamp>,
    /// Set by hashing when the file had not changed for a while before the put began: the
    /// packer may then check its stamp instead of hashing it again.
    pub settled: bool,
}

/// A scanned source tree: what a put stores, with the warnings the user should see.
#[derive(Debug, Clone)]
pub struct SourceTree {
    /// The folder scanned.
    pub root: PathBuf,
    /// Sorted by path.
    pub entries: Vec<SourceEntry>,
    /// Things the user should know, such as secret-looking files and skipped special files.
    pub warnings: Vec<String>,
}

impl SourceTree {
    /// Walks `root` with the ignore rules; file contents are not read yet.
    pub fn scan(root: &Path, opts: &ScanOptions) -> Result<Self> {
        let meta = std::fs::metadata(root)
            .map_err(|e| Error::NotFound(format!("source {}: {e}", root.display())))?;
        if !meta.is_dir() {
            return Err(Error::Usage(format!(
                "source {} is not a directory",
                root.display()
            )));
        }
        let rules = Arc::new(ignore_rules(root, opts)?);
        let walk_root = root.to_path_buf();
        let walker = ignore::WalkBuilder::new(root)
            .standard_filters(false)
            .follow_links(opts.follow_symlinks)
            .filter_entry(move |e| {
                let rel = e.path().strip_prefix(&walk_root).unwrap_or(e.path());
                let is_dir = e.file_type().is_some_and(|t| t.is_dir());
                rel.as_os_str().is_empty() || !rules.matched(rel, is_dir).is_ignore()
            })
            .threads(
                std::thread::available_parallelism()
                    .map_or(1, |n| n.get())
                    .min(4),
            )
            .build_parallel();

        // Each walker thread fills its own lists; they are merged (and sorted) at the end.
        let all = Mutex::new(Vec::new());
        walker.visit(&mut Collector { root, all: &all });
        let mut entries = Vec::new();
        let mut warnings = Vec::new();
        let mut errors = Vec::new();
        for found in all.into_inner().expect("walker threads ended") {
            entries.extend(found.entries);
            warnings.extend(found.warnings);
            errors.extend(found.errors);
        }
        // The same error whichever thread met it first: the first by message.
        if let Some(e) = errors.into_iter().min_by_key(|e| e.to_string()) {
            return Err(e);
        }
        warnings.sort();
        entries.sort_by(|a, b| a.record.path.cmp(&b.record.path));
        Ok(SourceTree {
            root: root.to_path_buf(),
            entries,
            warnings,
        })
    }

    /// Reads every file once, in parallel, recording its size and sha256.
    pub fn hash_files(&mut self) -> Result<()> {
        self.hash_files_cached(&HashCache::disabled())
    }

    /// Like [`hash_files`](Self::hash_files), but a file whose stamp matches its entry in
    /// `cache` is not read; the cache is then rewritten with this tree's hashes.
    pub fn hash_files_cached(&mut self, cache: &HashCache) -> Result<()> {
        self.entries
            .par_iter_mut()
            .filter(|e| e.record.kind == EntryKind::File)
            .try_for_each(|e| {
                let cached = e.stamp.as_ref().and_then(|s| {
                    cache
                        .get(&e.record.path, s)
                        .map(|sha| (s.size(), sha.to_string()))
                });
                let (size, sha) = match cached {
                    Some(hit) => hit,
                    None => hash_file(&e.fs_path)
                        .map_err(|err| Error::io(format!("reading {}", e.record.path), err))?,
                };
                e.record.size = size;
                e.record.sha256 = Some(sha);
                e.settled = e
                    .stamp
                    .as_ref()
                    .is_some_and(|s| s.size() == size && cache.is_settled(s));
                Ok::<_, Error>(())
            })?;
        cache.save(self.entries.iter().filter_map(|e| {
            let stamp = e.stamp.as_ref().filter(|s| s.size() == e.record.size)?;
            Some((e.record.path.as_str(), stamp, e.record.sha256.as_deref()?))
        }));
        Ok(())
    }

    /// The manifest records of the entries, in path order.
    pub fn records(&self) -> Vec<ManifestEntry> {
        self.entries.iter().map(|e| e.record.clone()).collect()
    }

    /// The content version id; valid after `hash_files`.
    pub fn version_id(&self) -> String {
        version_id(&self.records())
    }

    /// How many regular files the tree holds.
    pub fn file_count(&self) -> u64 {
        self.entries
            .iter()
            .filter(|e| e.record.kind == EntryKind::File)
            .count() as u64
    }

    /// Bytes of the tree's files (folders and links count 0).
    pub fn file_bytes(&self) -> u64 {
        self.entries.iter().map(|e| e.record.size).sum()
    }
}

enum Visited {
    Entry(SourceEntry, Option<String>),
    Skip(Option<String>),
}

/// One walked item: its entry (with a warning, if any), or why it is left out.
fn visit(root: &Path, item: std::result::Result<DirEntry, ignore::Error>) -> Result<Visited> {
    let item = item.map_err(|e| Error::Usage(format!("reading source: {e}")))?;
    if item.depth() == 0 {
        return Ok(Visited::Skip(None));
    }
    let rel = rel_path(root, item.path())?;
    let ft = item
        .file_type()
        .ok_or_else(|| Error::Usage(format!("cannot read the type of {rel}")))?;
    let mut stamp = None;
    let mut warning = None;
    let record = if ft.is_dir() {
        entry(rel, EntryKind::Dir, 0o755, 0, None)
    } else if ft.is_file() {
        let meta = item
            .metadata()
            .map_err(|e| Error::Usage(format!("reading {rel}: {e}")))?;
        if let Some(pattern) = secret_pattern(&rel) {
            warning = Some(format!(
                "{rel} looks like a secret (matches {pattern}); add it to .blockignore to leave it out"
            ));
        }
        stamp = Some(Stamp::of(&meta));
        entry(rel, EntryKind::File, file_mode(&meta), meta.len(), None)
    } else if ft.is_symlink() {
        let target = std::fs::read_link(item.path())
            .map_err(|e| Error::io(format!("reading link {rel}"), e))?;
        let target = target
            .to_str()
            .map(str::to_string)
            .filter(|t| link_stays_inside(&rel, t));
        match target {
            Some(t) => entry(rel, EntryKind::Symlink, 0o777, 0, Some(t)),
            None => {
                return Err(Error::Usage(format!(
                    "symlink {rel} points outside the tree; use --follow-symlinks to store its target instead"
                )));
            }
        }
    } else {
        return Ok(Visited::Skip(Some(format!(
            "{rel} is not a file, directory or symlink; left out"
        ))));
    };
    Ok(Visited::Entry(
        SourceEntry {
            record,
            fs_path: item.into_path(),
            stamp,
            settled: false,
        },
        warning,
    ))
}

#[derive(Default)]
struct Found {
    entries: Vec<SourceEntry>,
    warnings: Vec<String>,
    errors: Vec<Error>,
}

/// Gives each walker thread its own [`Found`], handed over when the thread is done.
struct Collector<'a> {
    root: &'a Path,
    all: &'a Mutex<Vec<Found>>,
}

impl<'s> ParallelVisitorBuilder<'s> for Collector<'s> {
    fn build(&mut self) -> Box<dyn ParallelVisitor + 's> {
        Box::new(ThreadLists {
            root: self.root,
            all: self.all,
            found: Found::default(),
        })
    }
}

struct ThreadLists<'a> {
    root: &'a Path,
    all: &'a Mutex<Vec<Found>>,
    found: Found,
}

impl ParallelVisitor for ThreadLists<'_> {
    fn visit(&mut self, item: std::result::Result<DirEntry, ignore::Error>) -> WalkState {
        match visit(self.root, item) {
            Ok(Visited::Entry(e, warning)) => {
                self.found.entries.push(e);
                self.found.warnings.extend(warning);
            }
            Ok(Visited::Skip(warning)) => self.found.warnings.extend(warning),
            Err(e) => {
                self.found.errors.push(e);
                return WalkState::Quit;
            }
        }
        WalkState::Continue
    }
}

impl Drop for ThreadLists<'_> {
    fn drop(&mut self) {
        let found = std::mem::take(&mut self.found);
        if let Ok(mut all) = self.all.lock() {
            all.push(found);
        }
    }
}

fn entry(
    path: String,
    kind: EntryKind,
    mode: u32,
    size: u64,
    target: Option<String>,
) -> ManifestEntry {
    ManifestEntry {
        path,
        kind,
        mode,
        size,
        sha256: None,
        target,
        frame: 0,
        offset: 0,
    }
}

fn ignore_rules(root: &Path, opts: &ScanOptions) -> Result<Gitignore> {
    let mut b = GitignoreBuilder::new(root);
    if !opts.no_default_ignores {
        for line in DEFAULT_IGNORES {
            b.add_line(None, line)
                .expect("default ignore patterns are valid");
        }
    }
    let files: Vec<PathBuf> = match &opts.ignore_file {
        Some(f) => {
            if !f.is_file() {
                return Err(Error::NotFound(format!(
                    "ignore file {} not found",
                    f.display()
                )));
            }
            vec![f.clone()]
        }
        None => IGNORE_FILES
            .iter()
            .map(|n| root.join(n))
            .filter(|p| p.is_file())
            .collect(),
    };
    for f in files {
        if let Some(err) = b.add(&f) {
            return Err(Error::Usage(format!("ignore file {}: {err}", f.display())));
        }
    }
    b.build()
        .map_err(|e| Error::Usage(format!("ignore rules: {e}")))
}

fn rel_path(root: &Path, path: &Path) -> Result<String> {
    let rel = path.strip_prefix(root).unwrap_or(path);
    let mut parts = Vec::new();
    for c in rel.components() {
        let s = c
            .as_os_str()
            .to_str()
            .ok_or_else(|| Error::Usage(format!("file name {} is not UTF-8", rel.display())))?;
        check_portable_segment(s)
            .map_err(|why| Error::Usage(format!("file name {s:?} is not allowed: {why}")))?;
        parts.push(s);
    }
    Ok(parts.join("/"))
}

fn file_mode(meta: &std::fs::Metadata) -> u32 {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o111 != 0 {
            return 0o755;
        }
    }
    let _ = meta;
    0o644
}

/// The secret-looking pattern a file name matches, if any.
fn secret_pattern(rel: &str) -> Option<&'static str> {
    let name = rel.rsplit('/').next().unwrap_or(rel);
    if name.starts_with(".env") {
        Some(".env*")
    } else if name.ends_with(".pem") {
        Some("*.pem")
    } else if name.ends_with(".key") {
        Some("*.key")
    } else if name.starts_with("id_rsa") {
        Some("id_rsa*")
    } else {
        None
    }
}

pub(crate) fn hash_file(path: &Path) -> std::io::Result<(u64, String)> {
    thread_local! {
        // One read buffer per hashing thread: a fresh zeroed 256 KiB per file cost more
        // than hashing a small file.
        static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; 256 * 1024]);
    }
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    let mut size = 0u64;
    BUF.with_borrow_mut(|buf| {
        loop {
            let n = f.read(buf)?;
            if n == 0 {
                return Ok::<_, std::io::Error>(());
            }
            h.update(&buf[..n]);
            size += n as u64;
        }
    })?;
    Ok((size, hex::encode(h.finalize())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn names(t: &SourceTree) -> Vec<&str> {
        t.entries.iter().map(|e| e.record.path.as_str()).collect()
    }

    #[test]
    fn blockignore_and_vcs_dirs_are_left_out() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        fs::create_dir_all(r.join(".git/objects")).unwrap();
        fs::write(r.join(".git/HEAD"), "x").unwrap();
        fs::create_dir_all(r.join("build")).unwrap();
        fs::write(r.join("build/out.bin"), "x").unwrap();
        fs::write(r.join("keep.log"), "x").unwrap();
        fs::write(r.join("drop.log"), "x").unwrap();
        fs::write(r.join("flow.py"), "x").unwrap();
        fs::write(r.join(".blockignore"), "build/\n*.log\n!keep.log\n").unwrap();
        let t = SourceTree::scan(r, &ScanOptions::default()).unwrap();
        assert_eq!(names(&t), [".blockignore", "flow.py", "keep.log"]);
        let all = SourceTree::scan(
            r,
            &ScanOptions {
                no_default_ignores: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert!(names(&all).contains(&".git/HEAD"));
    }

    #[test]
    fn secret_looking_files_draw_warnings() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join(".env.prod"), "A=1").unwrap();
        fs::write(d.path().join("server.pem"), "x").unwrap();
        let t = SourceTree::scan(d.path(), &ScanOptions::default()).unwrap();
        assert_eq!(t.warnings.len(), 2, "{:?}", t.warnings);
    }

    #[cfg(unix)]
    #[test]
    fn escaping_symlink_fails_naming_the_link() {
        let d = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc/hostname", d.path().join("out")).unwrap();
        let err = SourceTree::scan(d.path(), &ScanOptions::default()).unwrap_err();
        assert!(err.to_string().contains("out"), "{err}");
        let t = SourceTree::scan(
            d.path(),
            &ScanOptions {
                follow_symlinks: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(t.entries[0].record.kind, EntryKind::File);
    }
}
