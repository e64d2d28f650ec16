//! The lock a writer takes on a key while it swaps it: a file or folder beside the key
//! ([`lock_for`]) that only one of racing writers can create (SFTP, WebDAV and FTP make one;
//! SMB opens one with delete-on-close, so it exists exactly while held). [`take_lock`] is
//! the one wait loop over each protocol's [`LockFiles`]; a lock older than [`LOCK_STALE`] was
//! left by a writer that died and is broken.

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use async_trait::async_trait;

use crate::key_names::{LOCK_STALE, LOCK_WAIT, lock_for, parent};

/// What one try to create a lock came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TryLock<H> {
    /// The lock is ours now, held by `H`.
    Taken(H),
    /// Another writer holds it, since `made` where the server tells.
    Held {
        /// When the lock was made, if the server tells.
        made: Option<SystemTime>,
    },
    /// The folder the lock goes in does not exist.
    NoFolder,
}

/// The lock operations of one protocol.
#[async_trait]
pub trait LockFiles: Send + Sync {
    /// The store's name in errors.
    const STORE: &'static str;
    /// The pause after the first try that found the lock held; it doubles up to
    /// [`LockFiles::LONGEST_PAUSE`].
    const FIRST_PAUSE: Duration = Duration::from_millis(5);
    /// The longest pause between tries.
    const LONGEST_PAUSE: Duration = Duration::from_millis(100);

    /// A lock taken: its name, or the handle that keeps it.
    type Held: Send;

    /// Creates `lock` if nobody has.
    async fn try_lock(&self, lock: &str) -> object_store::Result<TryLock<Self::Held>>;

    /// Makes folder `dir` and the folders above it.
    async fn make_dirs(&self, dir: &str) -> object_store::Result<()>;

    /// Removes a stale `lock`.
    async fn remove_lock(&self, lock: &str) -> object_store::Result<()>;

    /// Gives back a lock taken; one left behind turns stale, so failing is no error.
    async fn unlock(&self, held: Self::Held);
}

/// Takes `key`'s lock: waits for another writer's (from [`LockFiles::FIRST_PAUSE`], doubling
/// to [`LockFiles::LONGEST_PAUSE`]) up to [`LOCK_WAIT`], makes the folder it goes in once,
/// breaks a stale one.
pub async fn take_lock<L: LockFiles + ?Sized>(
    files: &L,
    key: &str,
) -> object_store::Result<L::Held> {
    let lock = lock_for(key);
    let deadline = Instant::now() + LOCK_WAIT;
    let mut pause = L::FIRST_PAUSE;
    let mut made_dirs = false;
    loop {
        match files.try_lock(&lock).await? {
            TryLock::Taken(held) => return Ok(held),
            TryLock::NoFolder if !made_dirs => {
                made_dirs = true;
                files.make_dirs(parent(&lock)).await?;
                continue;
            }
            TryLock::Held { made: Some(made) }
                if SystemTime::now()
                    .duration_since(made)
                    .is_ok_and(|age| age > LOCK_STALE) =>
            {
                files.remove_lock(&lock).await?;
                continue;
            }
            // Held, or a lock released between a failed create and the look at it.
            _ => {}
        }
        if Instant::now() > deadline {
            return Err(object_store::Error::Generic {
                store: L::STORE,
                source: format!(
                    "{key} stayed locked by another writer for {} s",
                    LOCK_WAIT.as_secs()
                )
                .into(),
            });
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(L::LONGEST_PAUSE);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    /// Locks in memory: name → when made; `dirs` says whether folders exist yet.
    #[derive(Debug, Default)]
    pub(crate) struct Memory {
        pub(crate) locks: Mutex<BTreeMap<String, SystemTime>>,
        dirs: Mutex<bool>,
    }

    #[async_trait]
    impl LockFiles for Memory {
        const STORE: &'static str = "memory";
        type Held = String;

        async fn try_lock(&self, lock: &str) -> object_store::Result<TryLock<String>> {
            if !*self.dirs.lock().unwrap() {
                return Ok(TryLock::NoFolder);
            }
            let mut locks = self.locks.lock().unwrap();
            if let Some(made) = locks.get(lock) {
                return Ok(TryLock::Held { made: Some(*made) });
            }
            locks.insert(lock.to_string(), SystemTime::now());
            Ok(TryLock::Taken(lock.to_string()))
        }

        async fn make_dirs(&self, _dir: &str) -> object_store::Result<()> {
            *self.dirs.lock().unwrap() = true;
            Ok(())
        }

        async fn remove_lock(&self, lock: &str) -> object_store::Result<()> {
            self.locks.lock().unwrap().remove(lock);
            Ok(())
        }

        async fn unlock(&self, lock: String) {
            self.locks.lock().unwrap().remove(&lock);
        }
    }

    #[tokio::test]
    async fn a_lock_is_taken_after_making_its_folder_and_a_stale_one_is_broken() {
        let m = Memory::default();
        assert_eq!(take_lock(&m, "a/HEAD").await.unwrap(), "a/.~lock-HEAD");
        // Left by a writer that died a minute ago.
        let old = SystemTime::now() - Duration::from_secs(60);
        m.locks.lock().unwrap().insert("a/.~lock-HEAD".into(), old);
        assert_eq!(take_lock(&m, "a/HEAD").await.unwrap(), "a/.~lock-HEAD");
        assert!(m.locks.lock().unwrap()["a/.~lock-HEAD"] > old);
    }

    #[tokio::test(start_paused = true)]
    async fn a_live_lock_is_waited_for_until_the_deadline() {
        let m = Memory::default();
        take_lock(&m, "HEAD").await.unwrap();
        // Dated ahead, as a live holder's never turns stale.
        let ahead = SystemTime::now() + Duration::from_secs(3600);
        m.locks.lock().unwrap().insert(".~lock-HEAD".into(), ahead);
        let started = Instant::now();
        let err = take_lock(&m, "HEAD").await.unwrap_err();
        assert!(err.to_string().contains("stayed locked"), "{err}");
        assert!(started.elapsed() >= LOCK_WAIT);
    }
}
