//! An exclusive lock on a lock file in a folder of this machine, for the files that
//! processes here change in turn (the registry file, the HEADs an agent accepted): each
//! re-reads, changes and replaces its file while it holds the lock.

use std::path::Path;

use crate::error::{Error, Result};

/// Runs `work` holding an exclusive lock on `dir/lock_name` (the folder and the file made
/// if missing); waits while another process holds it.
pub(crate) fn while_locked<T>(
    dir: &Path,
    lock_name: &str,
    work: impl FnOnce() -> Result<T>,
) -> Result<T> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let lock_path = dir.join(lock_name);
    let lock_file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| Error::io(format!("opening {}", lock_path.display()), e))?;
    let mut lock = fd_lock::RwLock::new(lock_file);
    let _held = lock
        .write()
        .map_err(|e| Error::io(format!("locking {}", lock_path.display()), e))?;
    work()
}
