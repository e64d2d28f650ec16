//! WebDAV's primitives for the folder store (`storage_folders::FolderStore`): PROPFIND for
//! stat and listings, ranged GETs, a temporary file PUT whole and MOVEd over its key, a lock
//! folder made by MKCOL, DELETE.
//!
//! A PUT onto an existing file lets readers see it half written (wsgidav truncates the target
//! before the body arrives), so every put goes to a temporary file beside the key and is
//! MOVEd over it under the key's lock. A MOVE onto an existing file may delete the target
//! before moving (wsgidav does): a reader that finds a key missing waits for its lock if a
//! writer holds it, and reads again (once more when the lock is gone already: the swap may
//! have ended between the read and the look), so it never sees a key vanish mid-swap. Conditional
//! puts compare the server's ETag under the same lock.

use std::ops::Range;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use object_store::{GetRange, ObjectMeta};
use storage_folders::Listed;
use storage_folders::key_names::LOCK_WAIT;
use storage_folders::lock::{LockFiles, TryLock};
use storage_folders::protocol::{Buffered, Protocol, WriteWhole, not_found};

use super::client::{Dav, Entry, STORE, bare_tag, generic, object_path};
use crate::body::Download;

/// How many times a read that found nothing is tried again (see [`read_through_swaps`]).
const SWAP_REREADS: usize = 3;

/// Runs `read`; when it finds nothing, the key may be mid-swap (a MOVE over it deletes it
/// first): while a writer holds the key's lock, waits for the lock to go, and reads again.
/// A swap can also end between the read and the look at the lock, so a key found missing
/// with no lock held is read once more before it counts as missing; a key that stays
/// missing costs one more read and two looks at its lock.
async fn read_through_swaps<T, F, Fut>(dav: &Dav, key: &str, read: F) -> object_store::Result<T>
where
    F: Fn() -> Fut,
    Fut: Future<Output = object_store::Result<T>>,
{
    reread_through_swaps(read, || dav.locked(key)).await
}

/// [`read_through_swaps`] over any `locked` check, so that its order of reads and looks is
/// tested without a server.
async fn reread_through_swaps<T, F, Fut, L, LFut>(read: F, locked: L) -> object_store::Result<T>
where
    F: Fn() -> Fut,
    Fut: Future<Output = object_store::Result<T>>,
    L: Fn() -> LFut,
    LFut: Future<Output = object_store::Result<bool>>,
{
    let mut result = read().await;
    let mut unlocked_rereads = 0;
    for _ in 0..SWAP_REREADS {
        if !matches!(result, Err(object_store::Error::NotFound { .. })) {
            break;
        }
        if locked().await? {
            let deadline = Instant::now() + LOCK_WAIT;
            while locked().await? && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        } else if unlocked_rereads == 1 {
            break;
        } else {
            unlocked_rereads += 1;
        }
        result = read().await;
    }
    result
}

fn range_header(range: &GetRange) -> String {
    match range {
        GetRange::Bounded(r) => format!("bytes={}-{}", r.start, r.end.saturating_sub(1)),
        GetRange::Offset(o) => format!("bytes={o}-"),
        GetRange::Suffix(n) => format!("bytes=-{n}"),
    }
}

fn meta_of(key: &str, resp: &reqwest::Response, size: u64) -> ObjectMeta {
    let header = |name: reqwest::header::HeaderName| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    ObjectMeta {
        location: object_path(key),
        last_modified: header(reqwest::header::LAST_MODIFIED)
            .and_then(|d| chrono::DateTime::parse_from_rfc2822(&d).ok())
            .map(|d| d.with_timezone(&chrono::Utc))
            .unwrap_or_default(),
        size,
        e_tag: header(reqwest::header::ETAG).map(|t| bare_tag(&t)),
        version: None,
    }
}

#[async_trait]
impl Protocol for Dav {
    const FAN_OUT: usize = 8;
    /// A MOVE needs nothing of the file it replaces.
    const DATES_PAST_OLD: bool = false;

    type Facts = Entry;
    type Reader = Download;
    type Writer = Buffered;

    fn describe(&self) -> String {
        self.shown("")
    }

    fn meta(&self, _key: &str, entry: &Entry) -> ObjectMeta {
        entry.meta()
    }

    async fn stat(&self, key: &str) -> object_store::Result<Option<Entry>> {
        Ok(Dav::stat(self, key).await?.filter(|e| !e.folder))
    }

    async fn head(&self, key: &str) -> object_store::Result<ObjectMeta> {
        read_through_swaps(self, key, || async {
            let entry = Protocol::stat(self, key)
                .await?
                .ok_or_else(|| not_found(key))?;
            Ok(entry.meta())
        })
        .await
    }

    async fn open(
        &self,
        key: &str,
        range: Option<&GetRange>,
    ) -> object_store::Result<(ObjectMeta, Download)> {
        let header = range.map(range_header);
        let resp = read_through_swaps(self, key, || self.get(key, header.clone())).await?;
        // The head came within `timeout` (each try); the body has its own deadline.
        let download = Download::new(resp);
        let Some(total) = download.total else {
            return Err(generic(format!(
                "{}: no length in the reply",
                self.shown(key)
            )));
        };
        let meta = meta_of(key, download.response(), total);
        Ok((meta, download))
    }

    async fn read(
        &self,
        key: &str,
        download: Download,
        range: Range<u64>,
    ) -> object_store::Result<BoxStream<'static, object_store::Result<Bytes>>> {
        Ok(download.range(range, self.shown(key), self.folder.timeout, STORE))
    }

    async fn rename_over(
        &self,
        temp: &str,
        key: &str,
        _old: Option<&Entry>,
        _replace: bool,
    ) -> object_store::Result<Option<String>> {
        self.move_over(temp, key).await?;
        Ok(Dav::stat(self, key).await?.and_then(|e| e.e_tag))
    }

    async fn list(&self, dir: &str) -> object_store::Result<Option<Vec<Listed>>> {
        let found = self.list_dir(dir).await?;
        Ok(found.map(|entries| entries.into_iter().map(Entry::listed).collect()))
    }

    async fn remove(&self, key: &str) -> object_store::Result<()> {
        self.delete(key, false).await
    }
}

#[async_trait]
impl WriteWhole for Dav {
    async fn write_whole(&self, temp: &str, body: Bytes) -> object_store::Result<()> {
        self.put(temp, body).await
    }
}

/// A lock is a folder made by MKCOL, which only one of racing writers can make.
#[async_trait]
impl LockFiles for Dav {
    const STORE: &'static str = STORE;
    /// The lock folder's name.
    type Held = String;

    async fn try_lock(&self, lock: &str) -> object_store::Result<TryLock<String>> {
        match self.mkcol(lock).await {
            Ok(true) => Ok(TryLock::Taken(lock.to_string())),
            Ok(false) => Ok(TryLock::Held {
                made: Dav::stat(self, lock)
                    .await?
                    .and_then(|e| e.modified.map(Into::into)),
            }),
            // 409: the folder the lock goes in is missing.
            Err(object_store::Error::Generic { .. }) => Ok(TryLock::NoFolder),
            Err(e) => Err(e),
        }
    }

    async fn make_dirs(&self, dir: &str) -> object_store::Result<()> {
        Dav::make_dirs(self, dir).await
    }

    async fn remove_lock(&self, lock: &str) -> object_store::Result<()> {
        self.delete(lock, true).await
    }

    async fn unlock(&self, lock: String) {
        let _ = self.delete(&lock, true).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::Mutex;

    /// Scripted reads (`Some` found, `None` missing) and looks at the lock, in order.
    struct Script {
        reads: Mutex<Vec<Option<u8>>>,
        locks: Mutex<Vec<bool>>,
        calls: Mutex<Vec<&'static str>>,
    }

    impl Script {
        fn new(reads: &[Option<u8>], locks: &[bool]) -> Script {
            Script {
                reads: Mutex::new(reads.iter().rev().copied().collect()),
                locks: Mutex::new(locks.iter().rev().copied().collect()),
                calls: Mutex::new(Vec::new()),
            }
        }

        async fn run(&self) -> object_store::Result<u8> {
            reread_through_swaps(
                || async {
                    self.calls.lock().unwrap().push("read");
                    match self.reads.lock().unwrap().pop().expect("a scripted read") {
                        Some(v) => Ok(v),
                        None => Err(not_found("HEAD")),
                    }
                },
                || async {
                    self.calls.lock().unwrap().push("lock");
                    Ok(self.locks.lock().unwrap().pop().expect("a scripted look"))
                },
            )
            .await
        }
    }

    /// The race seen on wsgidav: the read falls in a MOVE's window (target deleted), and
    /// the swap and its unlock end before the reader looks at the lock. The key is there
    /// again: the reader must find it, not report nothing stored.
    #[tokio::test]
    async fn a_swap_that_ends_before_the_look_at_its_lock_is_read_through() {
        let s = Script::new(&[None, Some(7)], &[false]);
        assert_eq!(s.run().await.unwrap(), 7);
        assert_eq!(*s.calls.lock().unwrap(), ["read", "lock", "read"]);
    }

    #[tokio::test]
    async fn a_swap_under_way_is_waited_for() {
        let s = Script::new(&[None, Some(3)], &[true, true, false]);
        assert_eq!(s.run().await.unwrap(), 3);
        assert_eq!(
            *s.calls.lock().unwrap(),
            ["read", "lock", "lock", "lock", "read"]
        );
    }

    #[tokio::test]
    async fn a_key_that_stays_missing_costs_one_more_read() {
        let s = Script::new(&[None, None], &[false, false]);
        assert!(matches!(
            s.run().await,
            Err(object_store::Error::NotFound { .. })
        ));
        assert_eq!(*s.calls.lock().unwrap(), ["read", "lock", "read", "lock"]);
    }
}
