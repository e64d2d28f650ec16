//! Putting a verified download in place: staging next to the destination, then a rename
//! (empty destination), an atomic exchange (`--replace`), or a file-by-file overwrite
//! (`--merge`) that never writes through a symlink.

use std::fs;
use std::path::{Path, PathBuf};

use tempfile::TempDir;

use crate::block::GetMode;
use crate::error::{Error, Result};

/// Fails early, before any download, when the destination does not allow `mode`.
pub fn check_destination(dest: &Path, mode: GetMode) -> Result<()> {
    match fs::symlink_metadata(dest) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("reading {}", dest.display()), e)),
        Ok(meta) if !meta.is_dir() => Err(Error::Conflict(format!(
            "destination {} exists and is not a directory",
            dest.display()
        ))),
        Ok(_) if mode == GetMode::EmptyOnly && !is_empty_dir(dest)? => {
            Err(Error::Conflict(format!(
                "destination {} is not empty (use --replace or --merge)",
                dest.display()
            )))
        }
        Ok(_) => Ok(()),
    }
}

/// A fresh staging directory on the destination's filesystem.
pub fn staging_for(dest: &Path) -> Result<TempDir> {
    let parent = parent_of(dest);
    fs::create_dir_all(&parent)
        .map_err(|e| Error::io(format!("creating {}", parent.display()), e))?;
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    remove_abandoned_staging(&parent, &name);
    tempfile::Builder::new()
        .prefix(&format!(".{name}.blockctl-{}-", std::process::id()))
        .tempdir_in(&parent)
        .map_err(|e| {
            Error::io(
                format!("creating a staging directory in {}", parent.display()),
                e,
            )
        })
}

/// Removes staging folders for `name` left by a get that was killed: their names carry the
/// PID of the process that made them, and that process is gone.
fn remove_abandoned_staging(parent: &Path, name: &str) {
    let prefix = format!(".{name}.blockctl-");
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(rest) = file_name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        if !process_alive(pid) {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

fn process_alive(pid: i32) -> bool {
    #[cfg(unix)]
    {
        match rustix::process::Pid::from_raw(pid) {
            Some(pid) => rustix::process::test_kill_process(pid).is_ok(),
            None => false,
        }
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        true
    }
}

fn parent_of(dest: &Path) -> PathBuf {
    match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Removes what a failed attempt left in the staging folder `folder`, keeping the folder.
pub(crate) fn empty_folder(folder: &Path) -> Result<()> {
    let what = || format!("emptying {}", folder.display());
    for entry in fs::read_dir(folder).map_err(|e| Error::io(what(), e))? {
        let path = entry.map_err(|e| Error::io(what(), e))?.path();
        let removed = match fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => fs::remove_dir_all(&path),
            _ => fs::remove_file(&path),
        };
        removed.map_err(|e| Error::io(what(), e))?;
    }
    Ok(())
}

/// Moves the verified tree in `staging` into `dest` as `mode` says.
pub fn commit(staging: TempDir, dest: &Path, mode: GetMode) -> Result<()> {
    check_destination(dest, mode)?;
    set_dir_mode(staging.path())?;
    let exists = fs::symlink_metadata(dest).is_ok();
    if !exists || is_empty_dir(dest)? {
        let src = staging.keep();
        return fs::rename(&src, dest).map_err(|e| {
            let _ = fs::remove_dir_all(&src);
            Error::io(format!("moving the download into {}", dest.display()), e)
        });
    }
    match mode {
        GetMode::EmptyOnly => unreachable!("checked above"),
        GetMode::Replace => replace(staging, dest),
        GetMode::Merge => merge(staging.path(), dest),
    }
}

fn replace(staging: TempDir, dest: &Path) -> Result<()> {
    // After the exchange the staging path holds the old tree; dropping it removes it.
    match exchange(staging.path(), dest) {
        Ok(()) => Ok(()),
        Err(_) => {
            // No atomic exchange on this filesystem: move the old tree aside, then rename.
            let aside = staging_for(dest)?;
            let old = aside.path().join("old");
            fs::rename(dest, &old)
                .map_err(|e| Error::io(format!("moving {} aside", dest.display()), e))?;
            let src = staging.keep();
            fs::rename(&src, dest).map_err(|e| {
                let _ = fs::rename(&old, dest);
                Error::io(format!("moving the download into {}", dest.display()), e)
            })
        }
    }
}

#[cfg(target_os = "linux")]
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    renameat_with(CWD, a, CWD, b, RenameFlags::EXCHANGE).map_err(std::io::Error::from)
}

#[cfg(not(target_os = "linux"))]
fn exchange(_: &Path, _: &Path) -> std::io::Result<()> {
    Err(std::io::Error::other("no atomic exchange"))
}

/// Checks everything first (no symlinked folder in DEST on the way, no folder where a file
/// goes), then renames each staged file over its counterpart.
fn merge(staging: &Path, dest: &Path) -> Result<()> {
    let mut items = Vec::new();
    for item in walk(staging)? {
        let rel = item
            .strip_prefix(staging)
            .expect("walk stays under staging")
            .to_path_buf();
        let target = dest.join(&rel);
        let mut at = dest.to_path_buf();
        for c in rel.parent().into_iter().flat_map(|p| p.components()) {
            at.push(c);
            if fs::symlink_metadata(&at).is_ok_and(|m| m.file_type().is_symlink()) {
                return Err(Error::Integrity(format!(
                    "{} is a symlink in the destination; merging would write through it",
                    at.display()
                )));
            }
        }
        let staged_dir = fs::symlink_metadata(&item).is_ok_and(|m| m.is_dir());
        let target_is_link =
            fs::symlink_metadata(&target).is_ok_and(|m| m.file_type().is_symlink());
        if staged_dir && target_is_link {
            return Err(Error::Integrity(format!(
                "{} is a symlink in the destination; merging would write through it",
                target.display()
            )));
        }
        if let Ok(m) = fs::symlink_metadata(&target)
            && m.is_dir()
            && !staged_dir
        {
            return Err(Error::Conflict(format!(
                "{} is a folder in the destination but a file in the version",
                target.display()
            )));
        }
        if let Ok(m) = fs::symlink_metadata(&target)
            && !m.is_dir()
            && staged_dir
        {
            return Err(Error::Conflict(format!(
                "{} is a file in the destination but a folder in the version",
                target.display()
            )));
        }
        items.push((item, target, staged_dir));
    }
    for (item, target, is_dir) in items {
        if is_dir {
            if !target.exists() {
                fs::create_dir(&target)
                    .map_err(|e| Error::io(format!("creating {}", target.display()), e))?;
            }
        } else {
            fs::rename(&item, &target)
                .map_err(|e| Error::io(format!("writing {}", target.display()), e))?;
        }
    }
    Ok(())
}

/// Every path under `root`, parents before children.
fn walk(root: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let mut children: Vec<PathBuf> = fs::read_dir(&dir)
            .map_err(|e| Error::io(format!("reading {}", dir.display()), e))?
            .map(|e| e.map(|e| e.path()))
            .collect::<std::io::Result<_>>()
            .map_err(|e| Error::io(format!("reading {}", dir.display()), e))?;
        children.sort();
        for c in children {
            if fs::symlink_metadata(&c).is_ok_and(|m| m.is_dir()) {
                stack.push(c.clone());
            }
            out.push(c);
        }
    }
    out.sort_by_key(|p| p.components().count());
    Ok(out)
}

fn is_empty_dir(dir: &Path) -> Result<bool> {
    let mut it =
        fs::read_dir(dir).map_err(|e| Error::io(format!("reading {}", dir.display()), e))?;
    Ok(it.next().is_none())
}

fn set_dir_mode(dir: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755))
            .map_err(|e| Error::io(format!("setting the mode of {}", dir.display()), e))?;
    }
    let _ = dir;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn staged(files: &[(&str, &str)], dest: &Path) -> TempDir {
        let s = staging_for(dest).unwrap();
        for (p, c) in files {
            let at = s.path().join(p);
            fs::create_dir_all(at.parent().unwrap()).unwrap();
            fs::write(at, c).unwrap();
        }
        s
    }

    #[test]
    fn replace_swaps_the_whole_tree() {
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("run");
        fs::create_dir(&dest).unwrap();
        fs::write(dest.join("stale.txt"), "old").unwrap();
        commit(
            staged(&[("a/new.txt", "new")], &dest),
            &dest,
            GetMode::Replace,
        )
        .unwrap();
        assert!(!dest.join("stale.txt").exists());
        assert_eq!(fs::read_to_string(dest.join("a/new.txt")).unwrap(), "new");
        assert_eq!(
            fs::read_dir(d.path()).unwrap().count(),
            1,
            "no staging left behind"
        );
    }

    #[test]
    fn merge_overwrites_and_keeps_other_files() {
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("run");
        fs::create_dir_all(dest.join("a")).unwrap();
        fs::write(dest.join("a/x.txt"), "old").unwrap();
        fs::write(dest.join("mine.txt"), "mine").unwrap();
        commit(staged(&[("a/x.txt", "new")], &dest), &dest, GetMode::Merge).unwrap();
        assert_eq!(fs::read_to_string(dest.join("a/x.txt")).unwrap(), "new");
        assert_eq!(fs::read_to_string(dest.join("mine.txt")).unwrap(), "mine");
    }

    #[cfg(unix)]
    #[test]
    fn merge_refuses_to_write_through_a_symlink() {
        let d = tempfile::tempdir().unwrap();
        let outside = d.path().join("outside");
        fs::create_dir(&outside).unwrap();
        let dest = d.path().join("run");
        fs::create_dir(&dest).unwrap();
        std::os::unix::fs::symlink(&outside, dest.join("a")).unwrap();
        let err = commit(staged(&[("a/x.txt", "new")], &dest), &dest, GetMode::Merge).unwrap_err();
        assert_eq!(err.exit_code(), 5);
        assert!(!outside.join("x.txt").exists());
    }

    #[test]
    fn staging_of_a_dead_process_is_removed_and_a_live_one_kept() {
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("run");
        // PIDs above the kernel's maximum (4194304) are never alive.
        let dead = d.path().join(".run.blockctl-999999999-abc");
        let live = d
            .path()
            .join(format!(".run.blockctl-{}-def", std::process::id()));
        fs::create_dir(&dead).unwrap();
        fs::create_dir(&live).unwrap();
        let fresh = staging_for(&dest).unwrap();
        assert!(!dead.exists());
        assert!(live.exists());
        assert!(fresh.path().exists());
    }

    #[test]
    fn non_empty_destination_is_a_conflict() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("x"), "x").unwrap();
        assert_eq!(
            check_destination(d.path(), GetMode::EmptyOnly)
                .unwrap_err()
                .exit_code(),
            6
        );
        assert!(check_destination(d.path(), GetMode::Merge).is_ok());
    }
}
