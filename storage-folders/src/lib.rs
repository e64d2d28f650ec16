//! What every store over a remote file system shares (SMB in storage-smb; SFTP, WebDAV and
//! FTP in storage-rfs): one object store ([`FolderStore`]) over each protocol's primitives
//! ([`Protocol`]), the names of the temporary and lock files kept beside objects
//! ([`names`]), the lock wait loop ([`lock`]), listing and deleting built on one folder
//! listing ([`Folders`]), and the sweep of the temporary files that killed uploads left
//! ([`TempFileSweeper`]).
//!
//! A backend implements [`Protocol`] on its connection and hands it to [`FolderStore`].

pub mod key_names;
pub mod lock;
pub mod protocol;
mod store;
pub mod walk;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use futures::stream::{self, BoxStream};
use futures::{FutureExt, StreamExt, TryFutureExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ListResult, ObjectMeta};

pub use protocol::{Buffered, Protocol, TempWriter, WriteWhole};
pub use store::{FolderStore, get_result, wanted_range};

use key_names::{TEMP_MARK, is_bookkeeping};
use storage_core::{Error, LeftoverSweeper, Result};
use walk::{WalkBounds, check_listed};

/// One entry of a folder.
#[derive(Debug, Clone)]
pub enum Listed {
    /// A file, with its modification time where the server gives one.
    File {
        /// The file's key, size and tag, as the store lists it.
        meta: ObjectMeta,
        /// When the file last changed, as the server says.
        modified: Option<SystemTime>,
    },
    /// A folder, by its key, and its file id where the server gives one (the walk takes a
    /// folder whose id it has listed already for a cycle).
    Folder {
        /// The folder's key.
        key: String,
        /// The server's id of the folder (SMB's index number; a link shows its target's).
        file_id: Option<u64>,
    },
}

impl Listed {
    /// A folder the server gives no id for.
    pub fn folder(key: String) -> Listed {
        Listed::Folder { key, file_id: None }
    }

    fn key(&self) -> &str {
        match self {
            Listed::File { meta, .. } => meta.location.as_ref(),
            Listed::Folder { key, .. } => key,
        }
    }

    fn name(&self) -> &str {
        self.key().rsplit('/').next().unwrap_or_default()
    }
}

/// A remote file system's folder listing and file deletion, as the stores need them.
#[async_trait]
pub trait Folders: Send + Sync + fmt::Debug + 'static {
    /// Folders listed, or files deleted, at once.
    const FAN_OUT: usize = 4;

    /// The files and folders in folder `dir` (`""` is the root), temporary and lock files
    /// included; `None` when there is no such folder.
    async fn entries(&self, dir: &str) -> object_store::Result<Option<Vec<Listed>>>;

    /// Deletes the object at `key`, under its lock where writers take one; a missing one is
    /// no error.
    async fn delete(&self, key: &str) -> object_store::Result<()>;

    /// Removes a temporary file no upload writes any more.
    async fn remove_temp(&self, key: &str) -> object_store::Result<()>;
}

/// A protocol's folders, listed and deleted as the folder store does.
#[async_trait]
impl<P: Protocol> Folders for P {
    const FAN_OUT: usize = P::FAN_OUT;

    async fn entries(&self, dir: &str) -> object_store::Result<Option<Vec<Listed>>> {
        self.list(dir).await
    }

    async fn delete(&self, key: &str) -> object_store::Result<()> {
        store::delete(self, key).await
    }

    async fn remove_temp(&self, key: &str) -> object_store::Result<()> {
        self.remove(key).await
    }
}

/// Every file under folder `dir`, folder by folder, `F::FAN_OUT` at a time; the store's own
/// files only when `bookkeeping`. The walk ends whatever the server lists: each folder is
/// listed once, no deeper than `WALK_MAX_DEPTH` and up to `WALK_MAX_ENTRIES` entries, and an
/// entry not directly in its folder, or named unsafely, is refused ([`walk::WalkBounds`]).
async fn walk<F: Folders + ?Sized>(
    folders: Arc<F>,
    dir: String,
    bookkeeping: bool,
) -> object_store::Result<Vec<Listed>> {
    let refused = |e: Error| e.into_store("remote file system");
    let mut bounds = WalkBounds::default();
    let mut files = Vec::new();
    let mut level = vec![(dir, None)];
    let mut depth = 0;
    while !level.is_empty() {
        for (d, id) in &level {
            bounds.enter_by_id(d, *id, depth).map_err(refused)?;
        }
        let listed: Vec<_> = stream::iter(level)
            .map(|(d, _)| {
                let folders = folders.clone();
                async move { Ok::<_, object_store::Error>((folders.entries(&d).await?, d)) }
            })
            .buffer_unordered(F::FAN_OUT)
            .try_collect()
            .await?;
        level = Vec::new();
        depth += 1;
        for (entries, d) in listed {
            let entries = entries.unwrap_or_default();
            bounds.count(&d, entries.len()).map_err(refused)?;
            for entry in entries {
                check_listed(&d, entry.key()).map_err(refused)?;
                if !bookkeeping && is_bookkeeping(entry.name()) {
                    continue;
                }
                match entry {
                    Listed::Folder { key, file_id } => level.push((key, file_id)),
                    file => files.push(file),
                }
            }
        }
    }
    Ok(files)
}

fn dir_of(prefix: Option<&Path>) -> String {
    prefix.map_or(String::new(), |p| p.as_ref().to_string())
}

/// `ObjectStore::list`: every object under `prefix`, recursively.
pub fn list<F: Folders + ?Sized>(
    folders: Arc<F>,
    prefix: Option<&Path>,
) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
    walk(folders, dir_of(prefix), false)
        .map_ok(|files| {
            stream::iter(files.into_iter().filter_map(|f| match f {
                Listed::File { meta, .. } => Some(Ok(meta)),
                Listed::Folder { .. } => None,
            }))
        })
        .into_stream()
        .try_flatten()
        .boxed()
}

/// `ObjectStore::list_with_delimiter`: the objects and folders directly under `prefix`.
pub async fn list_with_delimiter<F: Folders + ?Sized>(
    folders: &F,
    prefix: Option<&Path>,
) -> object_store::Result<ListResult> {
    let mut out = ListResult {
        common_prefixes: Vec::new(),
        objects: Vec::new(),
        extensions: Default::default(),
    };
    let dir = dir_of(prefix);
    let entries = folders.entries(&dir).await?.unwrap_or_default();
    let refused = |e: Error| e.into_store("remote file system");
    WalkBounds::default()
        .count(&dir, entries.len())
        .map_err(refused)?;
    for entry in entries {
        check_listed(&dir, entry.key()).map_err(refused)?;
        if is_bookkeeping(entry.name()) {
            continue;
        }
        match entry {
            Listed::File { meta, .. } => out.objects.push(meta),
            Listed::Folder { key, .. } => out.common_prefixes.push(location_of(&key)),
        }
    }
    Ok(out)
}

/// `ObjectStore::delete_stream`: `F::FAN_OUT` deletes at a time.
pub fn delete_stream<F: Folders + ?Sized>(
    folders: Arc<F>,
    locations: BoxStream<'static, object_store::Result<Path>>,
) -> BoxStream<'static, object_store::Result<Path>> {
    locations
        .map(move |location| {
            let folders = folders.clone();
            async move {
                let location = location?;
                folders.delete(location.as_ref()).await?;
                Ok(location)
            }
        })
        .buffered(F::FAN_OUT)
        .boxed()
}

/// A listed key as an object path: the key itself where it parses, as the adapter builds
/// its keys.
pub fn location_of(key: &str) -> Path {
    Path::parse(key).unwrap_or_else(|_| Path::from_iter(key.split('/')))
}

/// Removes the temporary files of uploads that never finished: they are hidden from
/// listings, so the adapter's own leftover pass cannot see them.
#[derive(Debug)]
pub struct TempFileSweeper<F: ?Sized> {
    folders: Arc<F>,
}

impl<F: Folders + ?Sized> TempFileSweeper<F> {
    /// A sweeper of the temporary files in `folders`.
    pub fn new(folders: Arc<F>) -> Self {
        TempFileSweeper { folders }
    }
}

#[async_trait]
impl<F: Folders + ?Sized> LeftoverSweeper for TempFileSweeper<F> {
    async fn sweep(&self, prefix: &Path, older_than: SystemTime) -> Result<u64> {
        // Some servers give modification times in whole seconds.
        let older_than = older_than - Duration::from_secs(1);
        let files = walk(self.folders.clone(), dir_of(Some(prefix)), true)
            .await
            .map_err(Error::from_store)?;
        let mut removed = 0;
        for file in files {
            if let Listed::File {
                meta,
                modified: Some(modified),
            } = &file
                && file.name().starts_with(TEMP_MARK)
                && *modified < older_than
            {
                self.folders
                    .remove_temp(meta.location.as_ref())
                    .await
                    .map_err(Error::from_store)?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::Mutex;

    /// Folders in memory: key → modification time (`None` for a folder).
    #[derive(Debug, Default)]
    struct Memory(Mutex<BTreeMap<String, Option<SystemTime>>>);

    #[async_trait]
    impl Folders for Memory {
        async fn entries(&self, dir: &str) -> object_store::Result<Option<Vec<Listed>>> {
            let all = self.0.lock().unwrap();
            let inside = |k: &String| key_names::parent(k) == dir && !k.is_empty();
            let found: Vec<Listed> = all
                .iter()
                .filter(|(k, _)| inside(k))
                .map(|(k, m)| match m {
                    None => Listed::folder(k.clone()),
                    Some(t) => Listed::File {
                        meta: ObjectMeta {
                            location: location_of(k),
                            last_modified: (*t).into(),
                            size: 1,
                            e_tag: None,
                            version: None,
                        },
                        modified: Some(*t),
                    },
                })
                .collect();
            Ok((dir.is_empty() || all.contains_key(dir)).then_some(found))
        }

        async fn delete(&self, key: &str) -> object_store::Result<()> {
            self.0.lock().unwrap().remove(key);
            Ok(())
        }

        async fn remove_temp(&self, key: &str) -> object_store::Result<()> {
            self.delete(key).await
        }
    }

    fn memory(entries: &[(&str, Option<u64>)]) -> Arc<Memory> {
        let now = SystemTime::now();
        let m = Memory::default();
        for (k, age) in entries {
            let at = age.map(|s| now - Duration::from_secs(s));
            m.0.lock().unwrap().insert(k.to_string(), at);
        }
        Arc::new(m)
    }

    #[tokio::test]
    async fn listings_hide_bookkeeping_and_the_sweep_removes_only_old_temp_files() {
        let m = memory(&[
            ("a", None),
            ("a/HEAD", Some(0)),
            ("a/.~lock-HEAD", Some(0)),
            ("a/b", None),
            ("a/b/x", Some(0)),
            ("a/b/.~tmp-x-1", Some(3600)),
            ("a/b/.~tmp-x-2", Some(0)),
        ]);
        let all: Vec<String> = list(m.clone(), None)
            .map_ok(|meta| meta.location.to_string())
            .try_collect()
            .await
            .unwrap();
        assert_eq!(all, ["a/HEAD", "a/b/x"]);
        let top = list_with_delimiter(&*m, Some(&Path::from("a")))
            .await
            .unwrap();
        assert_eq!(top.objects.len(), 1);
        assert_eq!(top.common_prefixes, [Path::from("a/b")]);

        let minute_ago = SystemTime::now() - Duration::from_secs(60);
        let removed = TempFileSweeper::new(m.clone())
            .sweep(&Path::from("a"), minute_ago)
            .await
            .unwrap();
        assert_eq!(removed, 1);
        let left = m.0.lock().unwrap();
        assert!(!left.contains_key("a/b/.~tmp-x-1") && left.contains_key("a/b/.~tmp-x-2"));
    }
}
