//! Trees both ways: a scanned source folder written as git objects and spliced into the
//! repository's tree at a path, and a git tree written out into a staging folder, refusing
//! entries that would leave it. Also listings and totals of a stored tree.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::path::Path;

use git2::{ObjectType, Oid, Repository, Tree};
use storage_core::package::manifest::{is_safe_relative_path, link_stays_inside};
use storage_core::source_tree::SourceTree;
use storage_core::{EntryKind, Error, ListedFile, Result};

const MODE_TREE: i32 = 0o040000;
const MODE_FILE: i32 = 0o100644;
const MODE_EXEC: i32 = 0o100755;
const MODE_LINK: i32 = 0o120000;

/// libgit2 errors on the local repository: no credentials can be in them.
pub(crate) trait Local<T> {
    fn local(self, what: &str) -> Result<T>;
}

impl<T> Local<T> for std::result::Result<T, git2::Error> {
    fn local(self, what: &str) -> Result<T> {
        self.map_err(|e| Error::Backend(format!("git: {what}: {}", e.message())))
    }
}

/// Writes the files and links of `src` as blobs and its folders as trees. Returns the root
/// tree (`None` when there is no file at all) and a warning for every empty folder, which git
/// cannot store.
pub(crate) fn write_source(
    repo: &Repository,
    src: &SourceTree,
) -> Result<(Option<Oid>, Vec<String>)> {
    let mut dirs: BTreeMap<String, Vec<(String, Oid, i32)>> = BTreeMap::new();
    let mut not_empty: BTreeSet<String> = BTreeSet::new();
    dirs.insert(String::new(), Vec::new());
    for e in &src.entries {
        let path = e.record.path.as_str();
        if let Some(seg) = path.split('/').find(|s| s.eq_ignore_ascii_case(".git")) {
            return Err(Error::Unsupported(format!(
                "{path}: git cannot store a folder or file named {seg}; leave it out (add .git/ to .blockignore or drop --no-default-ignores)"
            )));
        }
        let (parent, name) = split(path);
        not_empty.insert(parent.to_string());
        for anc in ancestors(parent) {
            dirs.entry(anc.to_string()).or_default();
        }
        let (oid, mode) = match e.record.kind {
            EntryKind::Dir => {
                dirs.entry(path.to_string()).or_default();
                continue;
            }
            EntryKind::Symlink => {
                let target = e.record.target.as_deref().unwrap_or_default();
                (
                    repo.blob(target.as_bytes()).local("writing a link")?,
                    MODE_LINK,
                )
            }
            EntryKind::File => {
                let mode = if e.record.mode & 0o111 != 0 {
                    MODE_EXEC
                } else {
                    MODE_FILE
                };
                (write_blob(repo, &e.fs_path, path)?, mode)
            }
        };
        dirs.entry(parent.to_string())
            .or_default()
            .push((name.to_string(), oid, mode));
    }
    let mut warnings = Vec::new();
    // Deepest first, so each folder's tree is written before its parent's.
    let mut order: Vec<String> = dirs.keys().filter(|d| !d.is_empty()).cloned().collect();
    order.sort_by_key(|d| std::cmp::Reverse(d.matches('/').count()));
    for dir in order {
        let children = dirs.remove(&dir).unwrap_or_default();
        if children.is_empty() {
            if !not_empty.contains(&dir) {
                warnings.push(format!(
                    "empty folder {dir} left out: git stores no empty folders"
                ));
            }
            continue;
        }
        let oid = build(repo, &children)?;
        let (parent, name) = split(&dir);
        dirs.entry(parent.to_string())
            .or_default()
            .push((name.to_string(), oid, MODE_TREE));
    }
    let root = dirs.remove("").unwrap_or_default();
    if root.is_empty() {
        return Ok((None, warnings));
    }
    Ok((Some(build(repo, &root)?), warnings))
}

/// A file's bytes as a blob, streamed (a link that `--follow-symlinks` let in is read through).
fn write_blob(repo: &Repository, file: &Path, rel: &str) -> Result<Oid> {
    let mut writer = repo.blob_writer(None).local("writing a blob")?;
    let mut f = fs::File::open(file).map_err(|e| Error::io(format!("reading {rel}"), e))?;
    std::io::copy(&mut f, &mut writer).map_err(|e| Error::io(format!("reading {rel}"), e))?;
    writer
        .flush()
        .map_err(|e| Error::io(format!("reading {rel}"), e))?;
    writer.commit().local("writing a blob")
}

fn build(repo: &Repository, children: &[(String, Oid, i32)]) -> Result<Oid> {
    let mut b = repo.treebuilder(None).local("building a tree")?;
    for (name, oid, mode) in children {
        b.insert(name, *oid, *mode)
            .map_err(|e| Error::Usage(format!("git refuses the name {name:?}: {}", e.message())))?;
    }
    b.write().local("writing a tree")
}

/// The tree `base` with the entry at `path` replaced by `new` (removed when `None`); other
/// entries stay as they were. Folders left empty disappear, as git keeps no empty folders.
pub(crate) fn splice(
    repo: &Repository,
    base: Option<&Tree<'_>>,
    path: &[&str],
    new: Option<Oid>,
) -> Result<Oid> {
    Ok(match splice_in(repo, base, path, new)? {
        Some(oid) => oid,
        None => build(repo, &[])?,
    })
}

fn splice_in(
    repo: &Repository,
    base: Option<&Tree<'_>>,
    path: &[&str],
    new: Option<Oid>,
) -> Result<Option<Oid>> {
    let Some((first, rest)) = path.split_first() else {
        return Ok(new);
    };
    let mut b = repo.treebuilder(base).local("building a tree")?;
    let child_base = match base.and_then(|t| t.get_name(first)) {
        Some(e) if e.kind() == Some(ObjectType::Tree) => {
            Some(repo.find_tree(e.id()).local("reading a tree")?)
        }
        _ => None,
    };
    match splice_in(repo, child_base.as_ref(), rest, new)? {
        Some(oid) => {
            b.insert(first, oid, MODE_TREE).local("building a tree")?;
        }
        None => {
            if b.get(first).local("building a tree")?.is_some() {
                b.remove(first).local("building a tree")?;
            }
        }
    }
    if b.is_empty() {
        return Ok(None);
    }
    b.write().local("writing a tree").map(Some)
}

/// What sits at `path` in `root`: its id and whether it is a folder. `None` when nothing is.
pub(crate) fn entry_at(root: &Tree<'_>, path: &str) -> Result<Option<(Oid, bool)>> {
    if path.is_empty() {
        return Ok(Some((root.id(), true)));
    }
    match root.get_path(Path::new(path)) {
        Ok(e) => Ok(Some((e.id(), e.kind() == Some(ObjectType::Tree)))),
        Err(e) if e.code() == git2::ErrorCode::NotFound => Ok(None),
        Err(e) => Err(Error::Backend(format!(
            "git: reading {path}: {}",
            e.message()
        ))),
    }
}

/// Files and bytes written by [`write_out`].
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Written {
    pub files: u64,
    pub bytes: u64,
}

/// Writes `tree` into the empty folder `dest`, keeping executable bits and links. Refuses
/// (as an integrity failure) names that could leave `dest` or make it a repository, and
/// links that point outside it.
pub(crate) fn write_out(repo: &Repository, tree: &Tree<'_>, dest: &Path) -> Result<Written> {
    let mut done = Written::default();
    write_dir(repo, tree, dest, "", &mut done)?;
    Ok(done)
}

fn write_dir(
    repo: &Repository,
    tree: &Tree<'_>,
    dir: &Path,
    rel: &str,
    done: &mut Written,
) -> Result<()> {
    for entry in tree.iter() {
        let name = match entry.name() {
            Ok(n)
                if is_safe_relative_path(n)
                    && !n.contains('/')
                    && !n.eq_ignore_ascii_case(".git") =>
            {
                n
            }
            _ => {
                return Err(Error::Integrity(format!(
                    "the tree holds an unsafe entry {:?} in `{rel}`; nothing was written",
                    String::from_utf8_lossy(entry.name_bytes())
                )));
            }
        };
        let rel_path = if rel.is_empty() {
            name.to_string()
        } else {
            format!("{rel}/{name}")
        };
        let path = dir.join(name);
        let exists = |e: std::io::Error| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                Error::Integrity(format!("the tree holds `{rel_path}` twice"))
            } else {
                Error::io(format!("writing {rel_path}"), e)
            }
        };
        match (entry.kind(), entry.filemode()) {
            (Some(ObjectType::Tree), _) => {
                fs::create_dir(&path).map_err(exists)?;
                let sub = repo.find_tree(entry.id()).local("reading a tree")?;
                write_dir(repo, &sub, &path, &rel_path, done)?;
            }
            (Some(ObjectType::Blob), MODE_LINK) => {
                let blob = repo.find_blob(entry.id()).local("reading a link")?;
                let target = std::str::from_utf8(blob.content())
                    .ok()
                    .filter(|t| link_stays_inside(&rel_path, t))
                    .ok_or_else(|| {
                        Error::Integrity(format!(
                            "symlink `{rel_path}` points outside the destination ({:?}); nothing was written",
                            String::from_utf8_lossy(blob.content())
                        ))
                    })?;
                std::os::unix::fs::symlink(target, &path).map_err(exists)?;
            }
            (Some(ObjectType::Blob), mode) => {
                let blob = repo.find_blob(entry.id()).local("reading a file")?;
                let perm = if mode == MODE_EXEC { 0o755 } else { 0o644 };
                write_file(&path, blob.content(), perm).map_err(exists)?;
                done.files += 1;
                done.bytes += blob.size() as u64;
            }
            // A submodule: its commit lives in another repository; git leaves an empty folder.
            (Some(ObjectType::Commit), _) => fs::create_dir(&path).map_err(exists)?,
            _ => {
                return Err(Error::Integrity(format!(
                    "the tree holds `{rel_path}` of an unknown kind"
                )));
            }
        }
    }
    Ok(())
}

fn write_file(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    // create_new: never through a link or over an entry already written.
    let mut f = fs::File::options()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    f.write_all(data)
}

/// Every entry below `tree`, sorted by path, as `ls` shows them.
pub(crate) fn list(repo: &Repository, tree: &Tree<'_>) -> Result<Vec<ListedFile>> {
    let odb = repo.odb().local("opening the object database")?;
    let mut out = Vec::new();
    let mut failed = None;
    tree.walk(git2::TreeWalkMode::PreOrder, |dir, e| {
        let path = format!("{dir}{}", e.name().unwrap_or_default());
        let (kind, size) = match (e.kind(), e.filemode()) {
            (Some(ObjectType::Tree), _) | (Some(ObjectType::Commit), _) => (EntryKind::Dir, 0),
            (Some(ObjectType::Blob), MODE_LINK) => (EntryKind::Symlink, 0),
            _ => match odb.read_header(e.id()) {
                Ok((size, _)) => (EntryKind::File, size as u64),
                Err(err) => {
                    failed = Some(err);
                    return git2::TreeWalkResult::Abort;
                }
            },
        };
        out.push(ListedFile { path, kind, size });
        git2::TreeWalkResult::Ok
    })
    .local("listing a tree")?;
    if let Some(e) = failed {
        return Err(e).local("reading an object");
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// Files (links left out) and their bytes below the object `id`: a tree, or one file.
pub(crate) fn totals(repo: &Repository, id: Oid, is_tree: bool) -> Result<(u64, u64)> {
    if !is_tree {
        let odb = repo.odb().local("opening the object database")?;
        let (size, _) = odb.read_header(id).local("reading an object")?;
        return Ok((1, size as u64));
    }
    let tree = repo.find_tree(id).local("reading a tree")?;
    let files: Vec<ListedFile> = list(repo, &tree)?;
    let files: Vec<&ListedFile> = files.iter().filter(|f| f.kind == EntryKind::File).collect();
    Ok((files.len() as u64, files.iter().map(|f| f.size).sum()))
}

/// `a/b/c` → (`a/b`, `c`); `c` → (``, `c`).
fn split(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or(("", path))
}

/// `a/b` → `a/b`, `a`, ``.
fn ancestors(dir: &str) -> Vec<&str> {
    let mut out = vec![dir];
    let mut cur = dir;
    while let Some((head, _)) = cur.rsplit_once('/') {
        out.push(head);
        cur = head;
    }
    if !dir.is_empty() {
        out.push("");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(repo: &Repository, data: &str) -> Oid {
        repo.blob(data.as_bytes()).unwrap()
    }

    #[test]
    fn splice_replaces_only_its_path() {
        let d = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(d.path()).unwrap();
        let a = build(&repo, &[("x.txt".into(), blob(&repo, "a"), MODE_FILE)]).unwrap();
        let b = build(&repo, &[("y.txt".into(), blob(&repo, "b"), MODE_FILE)]).unwrap();
        let root = splice(&repo, None, &["flows", "etl"], Some(a)).unwrap();
        let root = repo.find_tree(root).unwrap();
        let root = splice(&repo, Some(&root), &["docs"], Some(b)).unwrap();
        let root = repo.find_tree(root).unwrap();
        assert_eq!(entry_at(&root, "flows/etl").unwrap(), Some((a, true)));
        assert_eq!(entry_at(&root, "docs").unwrap(), Some((b, true)));
        // Removing the only folder below `flows` removes `flows` too.
        let gone = splice(&repo, Some(&root), &["flows", "etl"], None).unwrap();
        let gone = repo.find_tree(gone).unwrap();
        assert_eq!(entry_at(&gone, "flows").unwrap(), None);
        assert_eq!(entry_at(&gone, "docs").unwrap(), Some((b, true)));
    }

    #[test]
    fn write_out_refuses_a_link_that_leaves_dest() {
        let d = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(d.path().join("repo")).unwrap();
        let inner = build(&repo, &[("esc".into(), blob(&repo, "../../x"), MODE_LINK)]).unwrap();
        let root = build(
            &repo,
            &[
                ("ok.txt".into(), blob(&repo, "ok"), MODE_EXEC),
                ("sub".into(), inner, MODE_TREE),
            ],
        )
        .unwrap();
        let dest = d.path().join("dest");
        fs::create_dir(&dest).unwrap();
        let tree = repo.find_tree(root).unwrap();
        let e = write_out(&repo, &tree, &dest).unwrap_err();
        assert_eq!(e.exit_code(), 5, "{e}");
        assert!(e.to_string().contains("sub/esc"), "{e}");
    }
}
