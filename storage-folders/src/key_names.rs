//! Keys as a folder store names them: a key's folder and a child's key, the folders down to
//! a key, names no server may be sent, and the files a store keeps beside its objects
//! (temporary files that uploads write before renaming, or moving, them over their key, and
//! the lock each writer takes on a key while it swaps it). The SMB, SFTP, WebDAV and FTP stores share them, so one folder
//! written by any of them looks the same, and their listings hide the same names.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// What a temporary file's name starts with.
pub const TEMP_MARK: &str = ".~tmp-";
/// What a lock file's name starts with.
pub const LOCK_MARK: &str = ".~lock-";
/// How long a writer waits for another writer's lock on the same key.
pub const LOCK_WAIT: Duration = Duration::from_secs(60);
/// A lock this old belongs to a writer that died (a commit holds it for milliseconds).
pub const LOCK_STALE: Duration = Duration::from_secs(30);

/// A fresh temporary name beside `key`.
pub fn temp_for(key: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let tag = format!("-{}-{n}-{nanos:08x}", std::process::id());
    beside(key, TEMP_MARK, &tag)
}

/// `<dir>/<mark><name><tag>`, with the name shortened so the whole stays a legal file name.
pub fn beside(key: &str, mark: &str, tag: &str) -> String {
    let (dir, name) = match key.rsplit_once('/') {
        Some((d, n)) => (d, n),
        None => ("", key),
    };
    let room = 255usize.saturating_sub(mark.len() + tag.len());
    let mut cut = name.len().min(room);
    while !name.is_char_boundary(cut) {
        cut -= 1;
    }
    child(dir, &format!("{mark}{}{tag}", &name[..cut]))
}

/// Temporary and lock files: this store's own, never objects.
pub fn is_bookkeeping(name: &str) -> bool {
    name.starts_with(TEMP_MARK) || name.starts_with(LOCK_MARK)
}

/// The key of `name` inside folder `dir` (`""` is the root).
pub fn child(dir: &str, name: &str) -> String {
    match dir {
        "" => name.to_string(),
        d => format!("{d}/{name}"),
    }
}

/// The folder holding `key` (`""` for a key in the root).
pub fn parent(key: &str) -> &str {
    key.rsplit_once('/').map_or("", |(d, _)| d)
}

/// The server paths of the folders from the top of `root` (the store's folder: absolute, or
/// relative to the login folder) down to folder `dir` (a key below it), top first: the
/// folders a file in `dir` needs, in the order they are made.
pub fn folders_down_to(root: &str, dir: &str) -> Vec<String> {
    let mut paths = Vec::new();
    let mut at = match root.starts_with('/') {
        true => String::from("/"),
        false => String::new(),
    };
    for seg in root.split('/').chain(dir.split('/')) {
        if seg.is_empty() {
            continue;
        }
        if !at.is_empty() && !at.ends_with('/') {
            at.push('/');
        }
        at.push_str(seg);
        paths.push(at.clone());
    }
    paths
}

/// Why `name`, one path segment a server listed (or a manifest holds), is no safe file name
/// on every platform: empty, `.` or `..`, a slash, a backslash or a NUL in it (a Windows
/// agent reads a backslash as a separator), or a drive prefix (`C:`).
pub fn unsafe_name(name: &str) -> Option<&'static str> {
    let bytes = name.as_bytes();
    if name.is_empty() || name == "." || name == ".." {
        Some("it is no file name")
    } else if name.contains(['/', '\\']) {
        Some("a name with a slash or a backslash would be a path, not a name")
    } else if name.contains('\0') {
        Some("a name with a NUL byte is no file name")
    } else if bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':' {
        Some("a name with a drive prefix (`C:`) is a path on Windows")
    } else {
        None
    }
}

/// The lock name of `key`.
pub fn lock_for(key: &str) -> String {
    beside(key, LOCK_MARK, "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bookkeeping_files_sit_beside_their_key_and_are_recognized() {
        let t = temp_for("a/b/HEAD");
        assert!(t.starts_with("a/b/.~tmp-HEAD-"), "{t}");
        assert_eq!(beside("a/b/HEAD", LOCK_MARK, ""), "a/b/.~lock-HEAD");
        assert!(is_bookkeeping(".~lock-HEAD") && is_bookkeeping(t.rsplit('/').next().unwrap()));
        assert!(!is_bookkeeping("HEAD"));
        assert!(unsafe_name("a b.txt").is_none() && unsafe_name("ab:c").is_none());
        for bad in ["", ".", "..", "a\\b", "C:", "d:x", "a\0b"] {
            assert!(unsafe_name(bad).is_some(), "{bad:?}");
        }
        let long = "x".repeat(255);
        assert!(temp_for(&long).len() <= 255);
    }

    #[test]
    fn the_folders_of_a_key_are_made_from_the_top_of_the_root_down() {
        assert_eq!(
            folders_down_to("/srv/flows", "a/b"),
            ["/srv", "/srv/flows", "/srv/flows/a", "/srv/flows/a/b"]
        );
        assert_eq!(folders_down_to("flows", "a"), ["flows", "flows/a"]);
        assert_eq!(folders_down_to("", "a/b"), ["a", "a/b"]);
        assert_eq!(folders_down_to("/", ""), Vec::<String>::new());
    }
}
