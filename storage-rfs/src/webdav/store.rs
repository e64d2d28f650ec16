//! `DavStore`: a folder on a WebDAV server as an `object_store::ObjectStore`.
//!
//! A PUT onto an existing file lets readers see it half written (wsgidav truncates the target
//! before the body arrives), so every put goes to a temporary file beside the key and is
//! MOVEd over it under the key's lock. A MOVE onto an existing file may delete the target
//! before moving (wsgidav does): a reader that finds a key missing waits for its lock if a
//! writer holds it, and reads again (once more when the lock is gone already: the swap may
//! have ended between the read and the look), so it never sees a key vanish mid-swap. Conditional
//! puts compare the server's ETag under the same lock.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::{self, BoxStream};
use object_store::path::Path;
use object_store::{
    Attributes, CopyOptions, GetOptions, GetRange, GetResult, GetResultPayload, ListResult,
    MultipartUpload, ObjectMeta, ObjectStore, PutMode, PutMultipartOptions, PutOptions, PutPayload,
    PutResult,
};
use reqwest::StatusCode;

use super::client::{Dav, Entry, STORE, bare_tag, generic, object_path};
use storage_folders::names::{LOCK_WAIT, temp_for};
use storage_folders::{self as folders, BufferedUpload, PutWhole, copy_by_rewriting};

pub(crate) struct DavStore {
    dav: Arc<Dav>,
}

impl DavStore {
    pub(crate) fn new(dav: Arc<Dav>) -> Self {
        DavStore { dav }
    }
}

impl fmt::Debug for DavStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DavStore")
            .field("base", &self.dav.shown(""))
            .field("username", &self.dav.username)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for DavStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WebDAV({})", self.dav.shown(""))
    }
}

fn not_found(key: &str) -> object_store::Error {
    object_store::Error::NotFound {
        path: key.to_string(),
        source: format!("no file {key}").into(),
    }
}

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

impl DavStore {
    async fn commit_locked(
        &self,
        temp: &str,
        key: &str,
        mode: PutMode,
    ) -> object_store::Result<Option<String>> {
        if !matches!(mode, PutMode::Overwrite) {
            let current = self.dav.stat(key).await?.filter(|e| !e.folder);
            match (&mode, &current) {
                (PutMode::Create, None) => {}
                (PutMode::Create, Some(_)) => {
                    return Err(object_store::Error::AlreadyExists {
                        path: key.to_string(),
                        source: format!("{key} already exists").into(),
                    });
                }
                (PutMode::Update(want), Some(e))
                    if want.e_tag.is_some() && want.e_tag.as_deref().map(bare_tag) == e.e_tag => {}
                _ => {
                    return Err(object_store::Error::Precondition {
                        path: key.to_string(),
                        source: format!("{key} changed since it was read").into(),
                    });
                }
            }
        }
        self.dav.move_over(temp, key).await?;
        Ok(self.dav.stat(key).await?.and_then(|e| e.e_tag))
    }

    async fn head_entry(&self, key: &str) -> object_store::Result<Entry> {
        read_through_swaps(&self.dav, key, || async {
            self.dav
                .stat(key)
                .await?
                .filter(|e| !e.folder)
                .ok_or_else(|| not_found(key))
        })
        .await
    }
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
impl PutWhole for DavStore {
    /// Writes `body` to a temporary file and moves it over `key` if `mode` allows.
    async fn put_whole(
        &self,
        key: &str,
        body: Bytes,
        mode: PutMode,
    ) -> object_store::Result<PutResult> {
        let temp = temp_for(key);
        if let Err(e) = self.dav.put(&temp, body).await {
            let _ = self.dav.delete(&temp, false).await;
            return Err(e);
        }
        let lock = match self.dav.lock(key).await {
            Ok(lock) => lock,
            Err(e) => {
                let _ = self.dav.delete(&temp, false).await;
                return Err(e);
            }
        };
        let done = self.commit_locked(&temp, key, mode).await;
        self.dav.unlock(&lock).await;
        if done.is_err() {
            let _ = self.dav.delete(&temp, false).await;
        }
        let e_tag = done?;
        Ok(PutResult {
            e_tag,
            version: None,
            extensions: Default::default(),
        })
    }
}

#[async_trait]
impl ObjectStore for DavStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.put_whole(location.as_ref(), Bytes::from(payload), opts.mode)
            .await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        _opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        Ok(BufferedUpload::boxed(
            DavStore {
                dav: self.dav.clone(),
            },
            location,
        ))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let key = location.as_ref().to_string();
        if options.head {
            let meta = self.head_entry(&key).await?.meta();
            options.check_preconditions(&meta)?;
            return Ok(GetResult {
                payload: GetResultPayload::Stream(stream::empty().boxed()),
                range: 0..meta.size,
                meta,
                attributes: Attributes::default(),
                extensions: Default::default(),
            });
        }
        let header = options.range.as_ref().map(range_header);
        let resp =
            read_through_swaps(&self.dav, &key, || self.dav.get(&key, header.clone())).await?;
        // The head came within `timeout` (each try); the body has its own deadline.
        let started = tokio::time::Instant::now();
        let partial = resp.status() == StatusCode::PARTIAL_CONTENT;
        let total = if partial {
            // `Content-Range: bytes a-b/total`
            resp.headers()
                .get(reqwest::header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.rsplit('/').next())
                .and_then(|t| t.parse().ok())
        } else {
            resp.content_length()
        };
        let Some(total) = total else {
            return Err(generic(format!(
                "{}: no length in the reply",
                self.dav.shown(&key)
            )));
        };
        let meta = meta_of(&key, &resp, total);
        options.check_preconditions(&meta)?;
        let range = match &options.range {
            Some(r) => r
                .as_range(total)
                .map_err(|e| object_store::Error::Generic {
                    store: STORE,
                    source: Box::new(e),
                })?,
            None => 0..total,
        };
        // Where the body starts in the object, and how many of its bytes are wanted.
        let (skip, take) = if partial {
            (0, range.end - range.start)
        } else {
            (range.start, range.end - range.start)
        };
        let body = crate::body::sliced(
            resp,
            skip,
            take,
            self.dav.shown(&key),
            started,
            self.dav.timeout,
            STORE,
        );
        Ok(GetResult {
            payload: GetResultPayload::Stream(body),
            range,
            meta,
            attributes: Attributes::default(),
            extensions: Default::default(),
        })
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        folders::delete_stream(self.dav.clone(), locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        folders::list(self.dav.clone(), prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        folders::list_with_delimiter(&*self.dav, prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        copy_by_rewriting(self, from, to, options).await
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
