//! `FolderStore`: a folder on a remote file system as an `object_store::ObjectStore`, written
//! once over a [`Protocol`]. Every write goes to a temporary file beside its key, renamed over
//! the key under the key's lock once whole, so readers see the old file or the new one; the
//! lock also makes `PutMode::Create` and `Update` a check and a rename that no other writer
//! comes between. A delete takes the same lock. A get opens the file first, so its ETag names
//! exactly the bytes read.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::{self, BoxStream};
use object_store::path::Path;
use object_store::{
    Attributes, CopyMode, CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult,
    MultipartUpload, ObjectMeta, ObjectStore, PutMode, PutMultipartOptions, PutOptions, PutPayload,
    PutResult, UploadPart,
};

use crate::key_names::{parent, temp_for};
use crate::lock::take_lock;
use crate::protocol::{Protocol, TempWriter};
use crate::{TempFileSweeper, delete_stream, list, list_with_delimiter};

/// See the module docs.
pub struct FolderStore<P> {
    protocol: Arc<P>,
}

impl<P: Protocol> FolderStore<P> {
    /// The store over `protocol`'s folder.
    pub fn new(protocol: Arc<P>) -> Self {
        FolderStore { protocol }
    }

    /// The sweeper of the temporary files that killed uploads left in this store.
    pub fn sweeper(&self) -> TempFileSweeper<P> {
        TempFileSweeper::new(self.protocol.clone())
    }

    /// A temporary file for `key`, written part by part and committed as `mode` allows.
    async fn upload(&self, key: &str, mode: PutMode) -> object_store::Result<FolderUpload<P>> {
        let temp = temp_for(key);
        let writer = P::Writer::create(&self.protocol, &temp, key).await?;
        Ok(FolderUpload {
            protocol: self.protocol.clone(),
            writer,
            temp,
            key: key.to_string(),
            mode,
        })
    }
}

impl<P: Protocol> fmt::Debug for FolderStore<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("FolderStore").field(&self.protocol).finish()
    }
}

impl<P: Protocol> fmt::Display for FolderStore<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({})", P::STORE, self.protocol.describe())
    }
}

/// Moves the finished temporary file `temp` over `key` if `mode` allows, under `key`'s lock;
/// returns the new file's ETag. The temporary file is gone afterwards either way.
async fn commit<P: Protocol>(
    protocol: &P,
    temp: &str,
    key: &str,
    mode: PutMode,
) -> object_store::Result<Option<String>> {
    let result = match take_lock(protocol, key).await {
        Ok(held) => {
            let done = commit_locked(protocol, temp, key, mode).await;
            protocol.unlock(held).await;
            done
        }
        Err(e) => Err(e),
    };
    if result.is_err() {
        let _ = protocol.remove(temp).await;
    }
    result
}

async fn commit_locked<P: Protocol>(
    protocol: &P,
    temp: &str,
    key: &str,
    mode: PutMode,
) -> object_store::Result<Option<String>> {
    let overwrite = matches!(mode, PutMode::Overwrite);
    let current = match overwrite && !P::DATES_PAST_OLD {
        true => None,
        false => protocol.stat(key).await?,
    };
    let e_tag = current.as_ref().and_then(|c| protocol.meta(key, c).e_tag);
    match (&mode, &current) {
        (PutMode::Overwrite, _) | (PutMode::Create, None) => {}
        (PutMode::Create, Some(_)) => {
            return Err(object_store::Error::AlreadyExists {
                path: key.to_string(),
                source: format!("{key} already exists").into(),
            });
        }
        (PutMode::Update(want), Some(_)) if want.e_tag.is_some() && want.e_tag == e_tag => {}
        (PutMode::Update(_), _) => {
            return Err(object_store::Error::Precondition {
                path: key.to_string(),
                source: format!("{key} changed since it was read").into(),
            });
        }
    }
    let replace = !matches!(mode, PutMode::Create);
    protocol
        .rename_over(temp, key, current.as_ref(), replace)
        .await
}

/// Deletes the file at `key` under its lock (a missing one is fine), then the folders this
/// left empty where the protocol removes them.
pub(crate) async fn delete<P: Protocol>(protocol: &P, key: &str) -> object_store::Result<()> {
    let held = match take_lock(protocol, key).await {
        Ok(held) => held,
        // The lock's folder is missing (a lock that never makes it): so is the file.
        Err(object_store::Error::NotFound { .. }) => return Ok(()),
        Err(e) => return Err(e),
    };
    let removed = protocol.remove(key).await;
    protocol.unlock(held).await;
    removed?;
    let mut dir = parent(key);
    while !dir.is_empty() && protocol.remove_empty_folder(dir).await {
        dir = parent(dir);
    }
    Ok(())
}

/// The bytes of an object of `size` that a get's `options` ask for: all of them without a
/// range; a range the object does not have is an error of `store`.
pub fn wanted_range(
    options: &GetOptions,
    size: u64,
    store: &'static str,
) -> object_store::Result<Range<u64>> {
    match &options.range {
        Some(r) => r.as_range(size).map_err(|e| object_store::Error::Generic {
            store,
            source: Box::new(e),
        }),
        None => Ok(0..size),
    }
}

/// A get's answer: `body` streams bytes `range` of the object `meta` describes.
pub fn get_result(
    body: BoxStream<'static, object_store::Result<Bytes>>,
    range: Range<u64>,
    meta: ObjectMeta,
) -> GetResult {
    GetResult {
        payload: GetResultPayload::Stream(body),
        range,
        meta,
        attributes: Attributes::default(),
        extensions: Default::default(),
    }
}

fn put_result(e_tag: Option<String>) -> PutResult {
    PutResult {
        e_tag,
        version: None,
        extensions: Default::default(),
    }
}

#[async_trait]
impl<P: Protocol> ObjectStore for FolderStore<P> {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let mut upload = self.upload(location.as_ref(), opts.mode).await?;
        if let Err(e) = upload.put_part(payload).await {
            let _ = upload.abort().await;
            return Err(e);
        }
        upload.complete().await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        _opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let upload = self.upload(location.as_ref(), PutMode::Overwrite).await?;
        Ok(Box::new(upload))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let key = location.as_ref();
        if options.head {
            let meta = self.protocol.head(key).await?;
            options.check_preconditions(&meta)?;
            return Ok(get_result(stream::empty().boxed(), 0..meta.size, meta));
        }
        let (meta, reader) = self.protocol.open(key, options.range.as_ref()).await?;
        options.check_preconditions(&meta)?;
        let range = wanted_range(&options, meta.size, P::STORE)?;
        let body = self.protocol.read(key, reader, range.clone()).await?;
        Ok(get_result(body, range, meta))
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        delete_stream(self.protocol.clone(), locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        list(self.protocol.clone(), prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        list_with_delimiter(&*self.protocol, prefix).await
    }

    /// No protocol here copies on the server: `from` is read and written again at `to`,
    /// part by part as it arrives.
    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        let mode = match options.mode {
            CopyMode::Overwrite => PutMode::Overwrite,
            CopyMode::Create => PutMode::Create,
        };
        let mut body = self
            .get_opts(from, GetOptions::default())
            .await?
            .into_stream();
        let mut upload = self.upload(to.as_ref(), mode).await?;
        while let Some(chunk) = body.next().await {
            let sent = match chunk {
                Ok(data) => upload.put_part(data.into()).await,
                Err(e) => Err(e),
            };
            if let Err(e) = sent {
                let _ = upload.abort().await;
                return Err(e);
            }
        }
        upload.complete().await.map(drop)
    }
}

/// A write in progress: a temporary file beside `key`, renamed over it on completion as
/// `mode` allows, so the object appears whole or not at all.
struct FolderUpload<P: Protocol> {
    protocol: Arc<P>,
    writer: P::Writer,
    temp: String,
    key: String,
    mode: PutMode,
}

impl<P: Protocol> fmt::Debug for FolderUpload<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FolderUpload")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl<P: Protocol> MultipartUpload for FolderUpload<P> {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        self.writer.put_part(data)
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let protocol = &*self.protocol;
        if let Err(e) = self.writer.finish(protocol, &self.temp).await {
            let _ = protocol.remove(&self.temp).await;
            return Err(e);
        }
        let e_tag = commit(protocol, &self.temp, &self.key, self.mode.clone()).await?;
        Ok(put_result(e_tag))
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.writer.abort(&*self.protocol, &self.temp).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use futures::TryStreamExt;
    use object_store::{GetRange, ObjectStoreExt, UpdateVersion};

    use crate::Listed;
    use crate::key_names::{child, is_bookkeeping};
    use crate::lock::{LockFiles, TryLock};
    use crate::protocol::{Buffered, WriteWhole, not_found};

    /// A file system in memory: key → (body, tag); a body of `fail` is written but refused,
    /// as a write cut short. Its locks are those of the lock tests.
    #[derive(Debug, Default)]
    struct Memory {
        files: Mutex<BTreeMap<String, (Bytes, u64)>>,
        lock_files: crate::lock::tests::Memory,
        pruned: Mutex<Vec<String>>,
        tags: std::sync::atomic::AtomicU64,
    }

    impl Memory {
        fn keys(&self) -> Vec<String> {
            self.files.lock().unwrap().keys().cloned().collect()
        }

        fn tag(&self) -> u64 {
            self.tags.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1
        }
    }

    #[async_trait]
    impl LockFiles for Memory {
        const STORE: &'static str = "memory";
        type Held = String;

        async fn try_lock(&self, lock: &str) -> object_store::Result<TryLock<String>> {
            self.lock_files.try_lock(lock).await
        }

        async fn make_dirs(&self, dir: &str) -> object_store::Result<()> {
            self.lock_files.make_dirs(dir).await
        }

        async fn remove_lock(&self, lock: &str) -> object_store::Result<()> {
            self.lock_files.remove_lock(lock).await
        }

        async fn unlock(&self, lock: String) {
            self.lock_files.unlock(lock).await
        }
    }

    #[async_trait]
    impl WriteWhole for Memory {
        async fn write_whole(&self, temp: &str, body: Bytes) -> object_store::Result<()> {
            let refused = body == "fail";
            let tag = self.tag();
            self.files
                .lock()
                .unwrap()
                .insert(temp.to_string(), (body, tag));
            match refused {
                true => Err(object_store::Error::Generic {
                    store: "memory",
                    source: "cut short".into(),
                }),
                false => Ok(()),
            }
        }
    }

    #[async_trait]
    impl Protocol for Memory {
        type Facts = (Bytes, u64);
        type Reader = Bytes;
        type Writer = Buffered;

        fn describe(&self) -> String {
            "memory".into()
        }

        fn meta(&self, key: &str, (body, tag): &(Bytes, u64)) -> ObjectMeta {
            ObjectMeta {
                location: crate::location_of(key),
                last_modified: Default::default(),
                size: body.len() as u64,
                e_tag: Some(tag.to_string()),
                version: None,
            }
        }

        async fn stat(&self, key: &str) -> object_store::Result<Option<(Bytes, u64)>> {
            Ok(self.files.lock().unwrap().get(key).cloned())
        }

        async fn open(
            &self,
            key: &str,
            _range: Option<&GetRange>,
        ) -> object_store::Result<(ObjectMeta, Bytes)> {
            let file = self.stat(key).await?.ok_or_else(|| not_found(key))?;
            Ok((self.meta(key, &file), file.0))
        }

        async fn read(
            &self,
            _key: &str,
            body: Bytes,
            range: Range<u64>,
        ) -> object_store::Result<BoxStream<'static, object_store::Result<Bytes>>> {
            let part = body.slice(range.start as usize..range.end as usize);
            Ok(stream::once(async move { Ok(part) }).boxed())
        }

        async fn rename_over(
            &self,
            temp: &str,
            key: &str,
            _old: Option<&(Bytes, u64)>,
            replace: bool,
        ) -> object_store::Result<Option<String>> {
            let mut files = self.files.lock().unwrap();
            assert!(
                replace || !files.contains_key(key),
                "a create replaced {key}"
            );
            let (body, _) = files.remove(temp).expect("a finished temporary file");
            let tag = self.tag();
            files.insert(key.to_string(), (body, tag));
            Ok(Some(tag.to_string()))
        }

        async fn list(&self, dir: &str) -> object_store::Result<Option<Vec<Listed>>> {
            let mut found = BTreeMap::new();
            for (key, file) in self.files.lock().unwrap().iter() {
                let rest = match dir {
                    "" => key.as_str(),
                    d => match key.strip_prefix(d).and_then(|r| r.strip_prefix('/')) {
                        Some(rest) => rest,
                        None => continue,
                    },
                };
                let entry = match rest.split_once('/') {
                    Some((folder, _)) => Listed::folder(child(dir, folder)),
                    None => Listed::File {
                        meta: self.meta(key, file),
                        modified: None,
                    },
                };
                found.insert(entry.key().to_string(), entry);
            }
            Ok(Some(found.into_values().collect()))
        }

        async fn remove(&self, key: &str) -> object_store::Result<()> {
            self.files.lock().unwrap().remove(key);
            Ok(())
        }

        async fn remove_empty_folder(&self, dir: &str) -> bool {
            let inside = format!("{dir}/");
            let empty = !self.keys().iter().any(|k| k.starts_with(&inside));
            if empty {
                self.pruned.lock().unwrap().push(dir.to_string());
            }
            empty
        }
    }

    fn store() -> (FolderStore<Memory>, Arc<Memory>) {
        let memory = Arc::new(Memory::default());
        (FolderStore::new(memory.clone()), memory)
    }

    fn update(e_tag: Option<String>) -> PutOptions {
        PutOptions::from(PutMode::Update(UpdateVersion {
            e_tag,
            version: None,
        }))
    }

    #[tokio::test]
    async fn a_put_is_read_back_whole_or_by_range_and_leaves_no_bookkeeping() {
        let (store, memory) = store();
        let at = Path::from("a/b/file");
        store.put(&at, "hello world".into()).await.unwrap();
        let whole = store.get(&at).await.unwrap().bytes().await.unwrap();
        assert_eq!(whole, "hello world");
        assert_eq!(store.get_range(&at, 6..11).await.unwrap(), "world");
        let head = store.head(&at).await.unwrap();
        assert_eq!(head.size, 11);
        assert_eq!(memory.keys(), ["a/b/file"]);
        assert!(memory.lock_files.locks.lock().unwrap().is_empty());
        assert_eq!(store.to_string(), "memory(memory)");
    }

    #[tokio::test]
    async fn create_and_update_are_checked_against_the_file_there() {
        let (store, _) = store();
        let at = Path::from("HEAD");
        let first = store
            .put_opts(&at, "1".into(), PutMode::Create.into())
            .await
            .unwrap();
        let again = store
            .put_opts(&at, "2".into(), PutMode::Create.into())
            .await;
        assert!(matches!(
            again,
            Err(object_store::Error::AlreadyExists { .. })
        ));
        let stale = store
            .put_opts(&at, "2".into(), update(Some("0".into())))
            .await;
        assert!(matches!(
            stale,
            Err(object_store::Error::Precondition { .. })
        ));
        let blind = store.put_opts(&at, "2".into(), update(None)).await;
        assert!(matches!(
            blind,
            Err(object_store::Error::Precondition { .. })
        ));
        store
            .put_opts(&at, "3".into(), update(first.e_tag))
            .await
            .unwrap();
        assert_eq!(store.get(&at).await.unwrap().bytes().await.unwrap(), "3");
    }

    #[tokio::test]
    async fn a_write_cut_short_leaves_the_old_file_and_no_temporary_one() {
        let (store, memory) = store();
        let at = Path::from("a/HEAD");
        store.put(&at, "old".into()).await.unwrap();
        assert!(store.put(&at, "fail".into()).await.is_err());
        assert_eq!(memory.keys(), ["a/HEAD"]);
        let mut upload = store.put_multipart(&at).await.unwrap();
        upload.put_part("fa".into()).await.unwrap();
        upload.put_part("il".into()).await.unwrap();
        assert!(upload.complete().await.is_err());
        assert_eq!(store.get(&at).await.unwrap().bytes().await.unwrap(), "old");
        let names = memory.keys();
        assert!(
            !names
                .iter()
                .any(|k| is_bookkeeping(k.rsplit('/').next().unwrap()))
        );
    }

    #[tokio::test]
    async fn lists_copies_and_deletes_prune_emptied_folders() {
        let (store, memory) = store();
        store.put(&Path::from("a/b/x"), "x".into()).await.unwrap();
        store.put(&Path::from("a/y"), "y".into()).await.unwrap();
        store
            .copy_if_not_exists(&Path::from("a/y"), &Path::from("a/z"))
            .await
            .unwrap();
        let (y, z) = (Path::from("a/y"), Path::from("a/z"));
        assert!(store.copy_if_not_exists(&y, &z).await.is_err());
        let mut listed: Vec<String> = store
            .list(None)
            .map_ok(|m| m.location.to_string())
            .try_collect()
            .await
            .unwrap();
        listed.sort();
        assert_eq!(listed, ["a/b/x", "a/y", "a/z"]);
        let top = store
            .list_with_delimiter(Some(&Path::from("a")))
            .await
            .unwrap();
        assert_eq!(top.common_prefixes, [Path::from("a/b")]);
        store.delete(&Path::from("a/b/x")).await.unwrap();
        store.delete(&Path::from("a/missing")).await.unwrap();
        assert_eq!(*memory.pruned.lock().unwrap(), ["a/b"]);
        assert_eq!(memory.keys(), ["a/y", "a/z"]);
    }
}
