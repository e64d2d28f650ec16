//! What keeps a folder walk finite and inside its folder, whatever the server lists: the
//! folders already listed (by resolved path, or by file id where the server gives one), a depth limit, an entry-count limit, and the
//! check that each listed name is one safe segment directly in its folder. The generic walk
//! of [`crate::list`] and the HTTP listing walk both keep a [`WalkBounds`].

use std::collections::HashSet;

use storage_core::bounds::{WALK_MAX_DEPTH, WALK_MAX_ENTRIES};
use storage_core::{Error, Result};

use crate::key_names::{parent, unsafe_name};

/// The state of one walk. Errors are integrity errors (exit 5) naming the folder; the
/// adapter adds the block's slug.
#[derive(Debug)]
pub struct WalkBounds {
    seen: HashSet<String>,
    /// Folders already listed by their file id, where the server gives one (SMB): a folder
    /// the server reaches by a link shows the id of the folder it leads to.
    seen_ids: HashSet<u64>,
    entries: usize,
    max_depth: usize,
    max_entries: usize,
}

impl Default for WalkBounds {
    fn default() -> Self {
        WalkBounds::with_limits(WALK_MAX_DEPTH, WALK_MAX_ENTRIES)
    }
}

impl WalkBounds {
    /// A walk that goes at most `max_depth` folders deep and lists at most `max_entries`
    /// entries; the default takes the caps of [`storage_core::bounds`].
    pub fn with_limits(max_depth: usize, max_entries: usize) -> Self {
        WalkBounds {
            seen: HashSet::new(),
            seen_ids: HashSet::new(),
            entries: 0,
            max_depth,
            max_entries,
        }
    }

    /// Records that folder `dir` (`resolved` is where the server really answered for it: its
    /// URL after redirects, or the key itself) is to be listed, `depth` folders below where
    /// the walk started. A folder already listed is a cycle.
    pub fn enter(&mut self, dir: &str, resolved: &str, depth: usize) -> Result<()> {
        if depth > self.max_depth {
            return Err(Error::Integrity(format!(
                "listing {}: folders nest deeper than {} levels (the limit WALK_MAX_DEPTH); \
                 the server's folders may loop",
                shown(dir),
                self.max_depth
            )));
        }
        if !self.seen.insert(resolved.to_string()) {
            return Err(Error::Integrity(format!(
                "listing {}: the server answered with a folder already listed ({resolved}): \
                 its folders form a cycle",
                shown(dir)
            )));
        }
        Ok(())
    }

    /// [`Self::enter`] for a folder the server gave a file id: a folder already listed under
    /// that id is a cycle, whatever its path.
    pub fn enter_by_id(&mut self, dir: &str, id: Option<u64>, depth: usize) -> Result<()> {
        self.enter(dir, dir, depth)?;
        match id {
            Some(id) if !self.seen_ids.insert(id) => Err(Error::Integrity(format!(
                "listing {}: the server answered with a folder already listed (file id {id}): \
                 its folders form a cycle",
                shown(dir)
            ))),
            _ => Ok(()),
        }
    }

    /// Counts `n` more entries listed in `dir`.
    pub fn count(&mut self, dir: &str, n: usize) -> Result<()> {
        self.entries = self.entries.saturating_add(n);
        if self.entries > self.max_entries {
            return Err(Error::Integrity(format!(
                "listing {}: more than {} entries (the limit WALK_MAX_ENTRIES)",
                shown(dir),
                self.max_entries
            )));
        }
        Ok(())
    }
}

/// Checks that `key`, listed in folder `dir`, is directly in it under a name every platform
/// reads as one file name.
pub fn check_listed(dir: &str, key: &str) -> Result<()> {
    let name = match dir {
        "" => key,
        d => key
            .strip_prefix(d)
            .and_then(|rest| rest.strip_prefix('/'))
            .unwrap_or(key),
    };
    if parent(key) != dir || name.contains('/') {
        return Err(Error::Integrity(format!(
            "listing {}: the server listed {key:?}, which is not in that folder",
            shown(dir)
        )));
    }
    if let Some(why) = unsafe_name(name) {
        return Err(Error::Integrity(format!(
            "listing {}: the server listed {name:?}: {why}",
            shown(dir)
        )));
    }
    Ok(())
}

/// `dir` as messages show it: a folder nested without end is shown by its first and last
/// levels.
fn shown(dir: &str) -> String {
    const KEEP: usize = 3;
    let parts: Vec<&str> = dir.split('/').collect();
    match dir {
        "" => "the top folder".to_string(),
        _ if parts.len() > 2 * KEEP + 1 => format!(
            "folder \"{}/…/{}\" ({} levels)",
            parts[..KEEP].join("/"),
            parts[parts.len() - KEEP..].join("/"),
            parts.len()
        ),
        d => format!("folder {d:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_listed_twice_is_a_cycle() {
        let mut w = WalkBounds::default();
        w.enter("", "/", 0).unwrap();
        w.enter("a", "/a/", 1).unwrap();
        let err = w.enter("a/b", "/", 2).unwrap_err();
        assert_eq!(err.exit_code(), 5);
        assert!(err.to_string().contains("cycle"), "{err}");
    }

    #[test]
    fn a_folder_reached_again_under_another_path_is_a_cycle_by_its_id() {
        let mut w = WalkBounds::default();
        w.enter_by_id("app", None, 0).unwrap();
        w.enter_by_id("app/loop", Some(7), 1).unwrap();
        w.enter_by_id("app/other", Some(8), 1).unwrap();
        let again = w.enter_by_id("app/loop/loop", Some(7), 2).unwrap_err();
        assert!(again.to_string().contains("file id 7"), "{again}");
    }

    #[test]
    fn depth_and_entry_limits_end_a_walk() {
        let mut w = WalkBounds::with_limits(2, 3);
        w.enter("a/b", "a/b", 2).unwrap();
        let deep = w.enter("a/b/c", "a/b/c", 3).unwrap_err();
        assert!(deep.to_string().contains("WALK_MAX_DEPTH"), "{deep}");
        let long = vec!["d"; 130].join("/");
        assert!(
            shown(&long).contains("d/d/d/…/d/d/d\" (130 levels)"),
            "{}",
            shown(&long)
        );
        w.count("a", 3).unwrap();
        let many = w.count("a", 1).unwrap_err();
        assert!(many.to_string().contains("WALK_MAX_ENTRIES"), "{many}");
    }

    #[test]
    fn only_safe_names_directly_in_the_folder_pass() {
        check_listed("", "x").unwrap();
        check_listed("a/b", "a/b/x y.txt").unwrap();
        for (dir, key) in [
            ("a", "b/x"),
            ("a", "a"),
            ("a", "a/b/c"),
            ("", "a/.."),
            ("a", "a/.."),
            ("a", "a/c:x"),
            ("a", "a/..\\..\\x"),
            ("", "C:"),
            ("", "c:\\windows"),
        ] {
            let err = check_listed(dir, key).unwrap_err();
            assert_eq!(err.exit_code(), 5, "{dir} {key}");
        }
    }
}
