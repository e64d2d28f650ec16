//! The folder on the SFTP server and the file operations its primitives (`protocol.rs`) are
//! built from: stat, listing, folders made as needed, exclusive creates, removal, and the
//! stamped rename that commits a temporary file (the folder store holds the key's lock).
//!
//! SFTP v3 gives only whole-second modification times and no inode numbers, so an ETag of
//! size and mtime alone could repeat when a small file (HEAD) is replaced twice within a
//! second. Every commit therefore runs under the key's lock and stamps the new file with an
//! mtime one second past the old file's: successive contents of a key never share an ETag.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use object_store::ObjectMeta;
use object_store::path::Path;
use russh_sftp::client::error::Error as SftpError;
use russh_sftp::protocol::{FileAttributes, OpenFlags, Packet, StatusCode};

use super::session::{Conn, STORE, Session, generic, status, store_error};
use storage_core::bounds::{WALK_MAX_ENTRIES, timed_out};
use storage_folders::key_names::{child, folders_down_to, parent};

/// The server folder a store works in, and the connection to it.
pub(crate) struct Remote {
    pub session: Session,
    /// Absolute, relative to the login folder, or empty for the login folder.
    root: String,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("login", &self.session.login)
            .field("root", &self.root)
            .finish_non_exhaustive()
    }
}

/// One listed file or folder.
pub(crate) struct Entry {
    pub key: String,
    pub attrs: FileAttributes,
}

impl Remote {
    pub(crate) fn new(session: Session, root: String) -> Self {
        Remote { session, root }
    }

    pub(crate) fn describe(&self) -> String {
        let root = match self.root.as_str() {
            "" => "~",
            r => r,
        };
        format!(
            "sftp://{}@{}{root}",
            self.session.login.username,
            self.session.login.server()
        )
    }

    /// The server path of a key (or of a folder key; `""` is the root).
    pub(crate) fn full(&self, key: &str) -> String {
        match (self.root.as_str(), key) {
            ("", "") => ".".into(),
            ("", k) => k.into(),
            (r, "") => r.into(),
            ("/", k) => format!("/{k}"),
            (r, k) => format!("{r}/{k}"),
        }
    }

    /// Runs one SFTP request on the live connection; a broken connection is dropped so the
    /// next request makes a new one.
    pub(crate) async fn call<T, F, Fut>(
        &self,
        what: &str,
        key: &str,
        op: F,
    ) -> object_store::Result<T>
    where
        F: FnOnce(Arc<Conn>) -> Fut,
        Fut: Future<Output = Result<T, SftpError>>,
    {
        let conn = self.session.conn().await?;
        match op(conn.clone()).await {
            Ok(v) => Ok(v),
            Err(e) => {
                if super::session::breaks_connection(&e) {
                    self.session.reset(&conn).await;
                }
                Err(store_error(what, key, e))
            }
        }
    }

    /// The attributes of `key`, or `None` when nothing is there.
    pub(crate) async fn stat(&self, key: &str) -> object_store::Result<Option<FileAttributes>> {
        let full = self.full(key);
        match self
            .call("stat", key, |c| async move { c.sftp.stat(full).await })
            .await
        {
            Ok(a) => Ok(Some(a.attrs)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The entries of folder `dir` (a key; `""` is the root), bookkeeping files included;
    /// `None` when the folder does not exist.
    pub(crate) async fn list_dir(&self, dir: &str) -> object_store::Result<Option<Vec<Entry>>> {
        let full = self.full(dir);
        // One listing is one request: it ends within `timeout`, and stops reading names
        // past the walk's entry limit (which the walk then reports).
        let timeout = self.session.login.timeout;
        let listing = self.call("listing", dir, |c| async move {
            let handle = c.sftp.opendir(full).await?.handle;
            let mut files = Vec::new();
            let result = loop {
                match c.sftp.readdir(handle.clone()).await {
                    Ok(_) if files.len() > WALK_MAX_ENTRIES => break Ok(files),
                    Ok(name) => files.extend(name.files),
                    Err(e) if status(&e) == Some(StatusCode::Eof) => break Ok(files),
                    Err(e) => break Err(e),
                }
            };
            let _ = c.sftp.close(handle).await;
            result
        });
        let listed = match tokio::time::timeout(timeout, listing).await {
            Ok(listed) => listed,
            Err(_) => {
                return Err(timed_out(&format!("listing {dir:?}"), timeout).into_store(STORE));
            }
        };
        let files = match listed {
            Ok(files) => files,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(Some(
            files
                .into_iter()
                .filter(|f| f.filename != "." && f.filename != "..")
                .map(|f| Entry {
                    key: child(dir, &f.filename),
                    attrs: f.attrs,
                })
                .collect(),
        ))
    }

    /// Makes the folders of `dir` (a key) that are missing, the block's own folder
    /// included, from the top down. Called only when a create found no folder.
    pub(crate) async fn make_dirs(&self, dir: &str) -> object_store::Result<()> {
        for full in folders_down_to(&self.root, dir) {
            let target = full.clone();
            let made = self
                .call("making folder", &full, |c| async move {
                    c.sftp.mkdir(target, FileAttributes::default()).await
                })
                .await;
            if made.is_err() {
                let probe = full.clone();
                let is_dir = self
                    .call("stat", &full, |c| async move { c.sftp.stat(probe).await })
                    .await
                    .is_ok_and(|a| a.attrs.is_dir());
                if !is_dir {
                    return made.map(drop);
                }
            }
        }
        Ok(())
    }

    /// Creates `key` exclusively and returns its handle, making its folders when missing.
    pub(crate) async fn create_new(&self, key: &str) -> object_store::Result<(Arc<Conn>, String)> {
        let mut made_dirs = false;
        loop {
            let full = self.full(key);
            let conn = self.session.conn().await?;
            let flags = OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::EXCLUDE;
            match conn.sftp.open(full, flags, FileAttributes::default()).await {
                Ok(h) => return Ok((conn, h.handle)),
                Err(e) if status(&e) == Some(StatusCode::NoSuchFile) && !made_dirs => {
                    made_dirs = true;
                    self.make_dirs(parent(key)).await?;
                }
                Err(e) => {
                    if super::session::breaks_connection(&e) {
                        self.session.reset(&conn).await;
                    }
                    return Err(store_error("creating", key, e));
                }
            }
        }
    }

    /// Removes `key` (a missing file is fine).
    pub(crate) async fn remove(&self, key: &str) -> object_store::Result<()> {
        let full = self.full(key);
        match self
            .call(
                "deleting",
                key,
                |c| async move { c.sftp.remove(full).await },
            )
            .await
        {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Renames the finished temporary file `temp` over `key` (held locked), stamped one
    /// second past `old`, the file it replaces (see the module docs); returns the new file's
    /// ETag.
    pub(super) async fn rename_stamped(
        &self,
        temp: &str,
        key: &str,
        old: Option<&FileAttributes>,
    ) -> object_store::Result<String> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            .min(u64::from(u32::MAX)) as u32;
        let stamp = match old.and_then(|a| a.mtime) {
            Some(old) => now.max(old.saturating_add(1)),
            None => now,
        };
        let full_temp = self.full(temp);
        let attrs = FileAttributes {
            atime: Some(stamp),
            mtime: Some(stamp),
            ..FileAttributes::default()
        };
        let stamped = self
            .call("stamping", temp, |c| async move {
                c.sftp.setstat(full_temp, attrs).await
            })
            .await?;
        drop(stamped);
        self.rename_over(temp, key).await?;
        let attrs = self
            .stat(key)
            .await?
            .ok_or_else(|| generic(format!("{key} is missing right after it was written")))?;
        Ok(e_tag(&attrs))
    }

    /// Renames `from` over `to` in one step (OpenSSH's `posix-rename@openssh.com`; plain
    /// SFTP rename refuses an existing target).
    async fn rename_over(&self, from: &str, to: &str) -> object_store::Result<()> {
        let (old, new) = (self.full(from), self.full(to));
        let mut data = Vec::with_capacity(8 + old.len() + new.len());
        for s in [&old, &new] {
            data.extend_from_slice(&(s.len() as u32).to_be_bytes());
            data.extend_from_slice(s.as_bytes());
        }
        let reply = self
            .call("renaming", to, |c| async move {
                c.sftp.extended("posix-rename@openssh.com", data).await
            })
            .await?;
        match reply {
            Packet::Status(s) if s.status_code == StatusCode::Ok => Ok(()),
            Packet::Status(s) if s.status_code == StatusCode::OpUnsupported => Err(generic(
                format!("the server has no atomic rename (posix-rename@openssh.com) for {to}"),
            )),
            Packet::Status(s) => Err(store_error("renaming", to, SftpError::Status(s))),
            _ => Err(generic(format!("renaming {to}: unexpected reply"))),
        }
    }
}

pub(crate) fn e_tag(attrs: &FileAttributes) -> String {
    format!(
        "{:x}-{:x}",
        attrs.size.unwrap_or(0),
        attrs.mtime.unwrap_or(0)
    )
}

pub(crate) fn meta(key: &str, attrs: &FileAttributes) -> ObjectMeta {
    let secs = i64::from(attrs.mtime.unwrap_or(0));
    ObjectMeta {
        location: Path::parse(key).unwrap_or_else(|_| Path::from_iter(key.split('/'))),
        last_modified: chrono::DateTime::from_timestamp(secs, 0).unwrap_or_default(),
        size: attrs.size.unwrap_or(0),
        e_tag: Some(e_tag(attrs)),
        version: None,
    }
}
