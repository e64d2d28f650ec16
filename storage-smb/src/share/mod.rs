//! One share on one server: the logon (made on first use) and the SMB operations the store
//! is built from. The lock that serializes writers of a key across clients is in `lock.rs`,
//! SMB errors as `object_store` errors in `../error.rs`.
//!
//! Every operation runs on a clone of the one connection, so operations started together
//! overlap on the wire (SMB credits, not a mutex, bound how many are in flight).
//!
//! Every request ends within the block's `timeout` ([`within`]): the logon, each stat,
//! listing, create, rename and delete, each try of a lock; a read or write of `n` bytes
//! within `transfer_deadline(timeout, n)`. Past it the request is dropped and the error says
//! it timed out.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use object_store::Error as StoreError;
use smb2::client::connection::Connection;
use smb2::msg::create::{
    CreateDisposition, CreateRequest, CreateResponse, ImpersonationLevel, ShareAccess,
};
use smb2::pack::{FileTime, ReadCursor, Unpack};
use smb2::types::flags::FileAccessMask;
use smb2::types::status::NtStatus;
use smb2::types::{Command, FileId, OplockLevel};
use smb2::{
    ClientConfig, DirectoryEntry, ErrorKind, FileInfo, FileReader, FileTimes, FileWriter,
    ListOptions, RenameOptions, SmbClient, Tree,
};
use tokio::sync::OnceCell;

mod lock;

use crate::error::store_error;
use storage_core::RetryPolicy;

/// Where to log on, and as whom.
pub(crate) struct Target {
    /// `host:port`.
    pub addr: String,
    pub share: String,
    pub username: String,
    pub password: String,
    pub domain: String,
    /// How long one request may take, first byte to last.
    pub timeout: Duration,
}

/// A share, connected on first use; see the module docs.
pub(crate) struct Share {
    target: Target,
    connected: OnceCell<Connected>,
}

struct Connected {
    conn: Connection,
    tree: Arc<Tree>,
    /// Owns the session the connection runs in; not used after logon.
    _client: std::sync::Mutex<SmbClient>,
}

impl fmt::Debug for Share {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Share")
            .field("addr", &self.target.addr)
            .field("share", &self.target.share)
            .field("username", &self.target.username)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for Share {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "//{}/{}", self.target.addr, self.target.share)
    }
}

/// `op` within `limit`, else [`smb2::Error::Timeout`] (the request is dropped).
pub(crate) async fn within<T>(
    limit: Duration,
    op: impl Future<Output = Result<T, smb2::Error>>,
) -> Result<T, smb2::Error> {
    tokio::time::timeout(limit, op)
        .await
        .unwrap_or(Err(smb2::Error::Timeout))
}

/// The file name part of a `/`-separated path.
fn split(path: &str) -> (&str, &str) {
    match path.rsplit_once('/') {
        Some((dir, name)) => (dir, name),
        None => ("", path),
    }
}

/// The ETag of a file: its creation time, last write time and size. Every write replaces the
/// file with a new one whose write time is later than its predecessor's (see
/// [`Share::rename_over`]), so a version is never seen twice.
pub(crate) fn e_tag(created: FileTime, modified: FileTime, size: u64) -> String {
    format!("{:x}-{:x}-{size:x}", created.0, modified.0)
}

pub(crate) fn info_e_tag(info: &FileInfo) -> String {
    e_tag(info.created, info.modified, info.size)
}

pub(crate) fn entry_e_tag(entry: &DirectoryEntry) -> String {
    e_tag(entry.created, entry.modified, entry.size)
}

impl Share {
    pub(crate) fn new(target: Target) -> Self {
        Share {
            target,
            connected: OnceCell::new(),
        }
    }

    /// How long one request may take (the block's `timeout`).
    pub(crate) fn timeout(&self) -> Duration {
        self.target.timeout
    }

    /// A connection clone and the tree, after logging on if that has not happened yet (a
    /// failed logon is tried again by the next call).
    async fn session(&self) -> Result<(Connection, Arc<Tree>), StoreError> {
        let c = self.connected.get_or_try_init(|| self.connect()).await?;
        Ok((c.conn.clone(), c.tree.clone()))
    }

    async fn connect(&self) -> Result<Connected, StoreError> {
        let t = &self.target;
        let config = ClientConfig {
            addr: t.addr.clone(),
            username: t.username.clone(),
            password: t.password.clone(),
            domain: t.domain.clone(),
            timeout: t.timeout,
            auto_reconnect: true,
            compression: false,
            dfs_enabled: false,
            ..ClientConfig::default()
        };
        let whom = match t.username.as_str() {
            "" => "as guest".to_string(),
            user => format!("as {user}"),
        };
        let mut client = within(t.timeout, SmbClient::connect(config))
            .await
            .map_err(|e| {
                store_error(format!("logon to {} {whom}", t.addr), &self.to_string(), e)
            })?;
        let tree = within(t.timeout, client.connect_share(&t.share))
            .await
            .map_err(|e| store_error(format!("opening share {self}"), &self.to_string(), e))?;
        Ok(Connected {
            conn: client.connection().clone(),
            tree: Arc::new(tree),
            _client: std::sync::Mutex::new(client),
        })
    }

    /// The file at `path`, or `None` when there is none (or it is a folder).
    pub(crate) async fn stat(&self, path: &str) -> Result<Option<FileInfo>, StoreError> {
        let (mut conn, tree) = self.session().await?;
        match within(self.timeout(), tree.stat(&mut conn, path)).await {
            Ok(info) if !info.is_directory => Ok(Some(info)),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(store_error(format!("reading {path}"), path, e)),
        }
    }

    /// The entries of a folder (without `.` and `..`), or `None` when there is no such folder.
    pub(crate) async fn list_dir(
        &self,
        path: &str,
    ) -> Result<Option<Vec<DirectoryEntry>>, StoreError> {
        let (conn, tree) = self.session().await?;
        // With index numbers, so that a walk knows a folder it reached again by a link.
        let options = ListOptions::new().index_numbers(true);
        let listing = async {
            let mut reader = tree.open_directory_reader_with(conn, path, options).await?;
            let mut entries = Vec::new();
            loop {
                match reader.next_batch().await {
                    Ok(Some(batch)) => entries.extend(batch),
                    Ok(None) => return Ok(entries),
                    // The listing ended; the folder emptied and removed meanwhile by a gc
                    // (delete pending until the last handle, ours, closes) was refilled by a
                    // racing put, and Samba tells the last closer the delete failed. The
                    // entries are whole; the folder stays.
                    Err(smb2::Error::Protocol {
                        status: NtStatus::DIRECTORY_NOT_EMPTY,
                        command: Command::Close,
                    }) => return Ok(entries),
                    Err(e) => return Err(e),
                }
            }
        };
        match within(self.timeout(), listing).await {
            Ok(entries) => Ok(Some(
                entries
                    .into_iter()
                    .filter(|e| e.name != "." && e.name != "..")
                    .collect(),
            )),
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => {
                Ok(None)
            }
            Err(e) => Err(store_error(format!("listing /{path}"), path, e)),
        }
    }

    /// Creates every missing folder on the way to `dir`.
    async fn make_dirs(&self, dir: &str) -> Result<(), StoreError> {
        let (mut conn, tree) = self.session().await?;
        let mut at = String::new();
        for part in dir.split('/').filter(|p| !p.is_empty()) {
            if !at.is_empty() {
                at.push('/');
            }
            at.push_str(part);
            match within(self.timeout(), tree.create_directory(&mut conn, &at)).await {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
                Err(e) => return Err(store_error(format!("creating folder {at}"), &at, e)),
            }
        }
        Ok(())
    }

    /// Runs `op` and, when it fails because the folder of `path` is missing, makes the folders
    /// and runs it again (a concurrent delete may remove an emptied folder in between).
    async fn in_dir_of<T, F, Fut>(&self, path: &str, op: F) -> Result<T, StoreError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, smb2::Error>>,
    {
        let mut attempts = 0;
        loop {
            match within(self.timeout(), op()).await {
                Err(e) if e.kind() == ErrorKind::NotFound && attempts < 4 => {
                    attempts += 1;
                    self.make_dirs(split(path).0).await?;
                }
                Err(e) => return Err(store_error(format!("creating {path}"), path, e)),
                Ok(v) => return Ok(v),
            }
        }
    }

    /// A writer on a new temporary file beside `path` (folders made as needed).
    pub(crate) async fn create_temp(&self, temp: &str) -> Result<FileWriter, StoreError> {
        let (conn, tree) = self.session().await?;
        self.in_dir_of(temp, || {
            tree.create_file_writer_exclusive(conn.clone(), temp)
        })
        .await
    }

    pub(crate) async fn open_reader(&self, path: &str) -> Result<FileReader, StoreError> {
        let (conn, tree) = self.session().await?;
        within(self.timeout(), tree.open_file_reader(conn, path))
            .await
            .map_err(|e| store_error(format!("opening {path}"), path, e))
    }

    /// Best effort: removes a temporary file that will not be committed.
    pub(crate) async fn discard(&self, temp: &str) {
        let _ = self.remove_file(temp).await;
    }

    /// Deletes the file at `path` without taking its lock (a missing file is fine).
    pub(crate) async fn remove_file(&self, path: &str) -> Result<(), StoreError> {
        let (mut conn, tree) = self.session().await?;
        match within(self.timeout(), tree.delete_file(&mut conn, path)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(store_error(format!("deleting {path}"), path, e)),
        }
    }

    /// Puts the finished temporary file `temp` in place of `path` (held locked), atomically
    /// (a rename over it, replacing a file there only when `replace`); `old` is the file it
    /// replaces. Returns the new file's ETag.
    ///
    /// The new file's last write time is made later than the old one's (the server may stamp
    /// both in the same clock tick), so a file never gets the ETag of one it replaced.
    pub(crate) async fn rename_over(
        &self,
        temp: &str,
        path: &str,
        old: Option<&FileInfo>,
        replace: bool,
    ) -> Result<String, StoreError> {
        let (mut conn, tree) = self.session().await?;
        let mut new = within(self.timeout(), tree.stat(&mut conn, temp))
            .await
            .map_err(|e| store_error(format!("reading {temp}"), temp, e))?;
        if let Some(old) = old
            && new.modified.0 <= old.modified.0
        {
            let later = FileTime(old.modified.0 + 1);
            let stamp = tree.set_times(&mut conn, temp, FileTimes::new().set_modified(later));
            within(self.timeout(), stamp)
                .await
                .map_err(|e| store_error(format!("stamping {temp}"), temp, e))?;
            new.modified = later;
        }
        let options = RenameOptions::new().replace_if_exists(replace);
        // A reader that has `path` open (a get reading HEAD) makes the server refuse the
        // rename for a moment (STATUS_ACCESS_DENIED); we still hold the lock, so try again.
        let limit = self.timeout();
        RetryPolicy::BUSY_RENAME
            .run(
                |_| {
                    let (mut conn, tree) = (conn.clone(), tree.clone());
                    async move {
                        within(limit, tree.rename_with(&mut conn, temp, path, options)).await
                    }
                },
                // Each try has the whole timeout: one that ran out is not tried again.
                |e| !matches!(e, smb2::Error::Timeout),
            )
            .await
            .map_err(|e| store_error(format!("renaming {temp} to {path}"), path, e))?;
        Ok(info_e_tag(&new))
    }

    /// Removes folder `dir` if it is empty; says whether it went.
    pub(crate) async fn remove_folder(&self, dir: &str) -> bool {
        let Ok((mut conn, tree)) = self.session().await else {
            return false;
        };
        within(self.timeout(), tree.delete_directory(&mut conn, dir))
            .await
            .is_ok()
    }
}

/// An SMB time (100 ns ticks since 1601) as `object_store` shows it.
pub(crate) fn date_time(t: FileTime) -> chrono::DateTime<chrono::Utc> {
    const UNIX_EPOCH_SECS: i64 = 11_644_473_600;
    let secs = (t.0 / 10_000_000) as i64 - UNIX_EPOCH_SECS;
    let nanos = (t.0 % 10_000_000) as u32 * 100;
    chrono::DateTime::from_timestamp(secs, nanos).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smb_times_are_shown_as_utc() {
        let ticks = 116_444_736_000_000_000 + 17_000_000_001_230_000;
        assert_eq!(
            date_time(FileTime(ticks)).timestamp_millis(),
            1_700_000_000_123
        );
    }
}
