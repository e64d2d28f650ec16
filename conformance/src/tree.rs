//! Test trees: building the tricky tree, and snapshots of a folder to compare exactly.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use sha2::{Digest, Sha256};

/// What a path is, as far as a round trip must keep it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    File {
        sha256: String,
        size: u64,
        executable: bool,
    },
    Dir,
    Symlink(String),
}

/// Every path under `root` (relative, `/`-separated) and what it is.
pub fn snapshot(root: &Path) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Node>) {
    for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display())) {
        let entry = entry.expect("dir entry");
        let path = entry.path();
        let rel = path
            .strip_prefix(root)
            .unwrap()
            .to_str()
            .expect("utf-8 test names")
            .to_string();
        let meta = fs::symlink_metadata(&path).unwrap();
        let node = if meta.file_type().is_symlink() {
            Node::Symlink(fs::read_link(&path).unwrap().to_str().unwrap().to_string())
        } else if meta.is_dir() {
            walk(root, &path, out);
            Node::Dir
        } else {
            let data = fs::read(&path).unwrap();
            Node::File {
                sha256: hex::encode(Sha256::digest(&data)),
                size: data.len() as u64,
                executable: is_exec(&meta),
            }
        };
        out.insert(rel, node);
    }
}

fn is_exec(meta: &fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o111 != 0
}

/// Deterministic pseudo-random bytes (xorshift), so big files do not compress away.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

pub fn write(root: &Path, rel: &str, data: impl AsRef<[u8]>) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, data).unwrap();
}

/// Nested folders, unicode, spaces, `+ % #` in names, empty files and folders, executable
/// bits, an internal symlink and a 20 MiB file.
pub fn tricky_tree(root: &Path) {
    write(root, "flows/etl/daily.py", "print('daily')\n");
    write(root, "flows/etl/sql/q1.sql", "select 1;\n");
    write(root, "données/été 2026/résumé.txt", "unicode\n");
    write(root, "with space/a b c.txt", "spaces\n");
    write(root, "odd/plus+percent%hash#.cfg", "odd names\n");
    write(root, "odd/100%.txt", "percent\n");
    write(root, "empty.txt", "");
    write(root, "nested/deeper/still/empty-too.txt", "");
    fs::create_dir_all(root.join("empty-dir/inner-empty")).unwrap();
    write(root, "bin/run.sh", "#!/bin/sh\necho run\n");
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(root.join("bin/run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::os::unix::fs::symlink("../flows/etl/daily.py", root.join("bin/daily-link.py")).unwrap();
    write(root, "data/big.bin", noise(20 * 1024 * 1024, 7));
    write(
        root,
        &format!("long/{}.txt", "n".repeat(150)),
        "a name past tar's 100 bytes\n",
    );
}

/// A small tree with one varying file, for version tests.
pub fn small_tree(root: &Path, marker: &str) {
    write(root, "flow.py", format!("VERSION = {marker:?}\n"));
    write(root, "conf/settings.toml", "level = 3\n");
}

/// The snapshot a files layout keeps when it cannot store empty folders, modes or links:
/// only files, every file non-executable, links left out.
pub fn files_only(snap: &BTreeMap<String, Node>) -> BTreeMap<String, Node> {
    snap.iter()
        .filter_map(|(k, v)| match v {
            Node::File { sha256, size, .. } => Some((
                k.clone(),
                Node::File {
                    sha256: sha256.clone(),
                    size: *size,
                    executable: false,
                },
            )),
            _ => None,
        })
        .collect()
}

/// Strips what a files layout cannot keep from a snapshot of a downloaded tree too.
pub fn files_of(snap: &BTreeMap<String, Node>) -> BTreeMap<String, Node> {
    files_only(snap)
}

/// A snapshot without the folders that hold no file or link, at any depth: what a store that
/// keeps no empty folders (git) gives back.
pub fn without_empty_dirs(snap: &BTreeMap<String, Node>) -> BTreeMap<String, Node> {
    let holds_something = |dir: &str| {
        let prefix = format!("{dir}/");
        snap.iter()
            .any(|(k, v)| *v != Node::Dir && k.starts_with(&prefix))
    };
    snap.iter()
        .filter(|(k, v)| **v != Node::Dir || holds_something(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}
