//! The folder on the FTP server and the file operations the store is built from, over a
//! small pool of logged-in control connections (suppaftp on tokio, passive mode, binary):
//! MLST and MLSD for stat and listings, STOR of a temporary file, RNFR/RNTO over the key
//! under a lock folder (MKD, which only one writer can make), DELE, REST + RETR for ranges.
//!
//! MLST's `modify` fact has whole seconds, so every commit stamps the temporary file (MFMT)
//! one second past the old file's time, and the ETag holds the `unique` fact (the inode on
//! pyftpdlib) too: successive contents of a key never share an ETag.

use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectMeta, PutMode};
use suppaftp::tokio::AsyncFtpStream;
use suppaftp::types::FileType;
use suppaftp::{FtpError, Status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Semaphore, SemaphorePermit};

use storage_core::bounds::transfer_deadline;
use storage_core::folders::lock::{LockFiles, TryLock, take_lock};
use storage_core::folders::names::{child, parent};
use storage_core::folders::{Folders, Listed};

pub(crate) const STORE: &str = "FTP";
/// Control connections open at once (each transfer needs its own).
const CONNECTIONS: usize = 8;
/// Bytes sent or read under one timeout.
const CHUNK: usize = 1 << 20;

/// Where and how to log in.
pub(crate) struct Login {
    pub host: String,
    pub port: u16,
    pub username: String,
    pub password: String,
    pub timeout: Duration,
}

/// Never shows the password.
impl std::fmt::Debug for Login {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Login")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// One file or folder as MLST / MLSD report it.
#[derive(Debug, Clone)]
pub(crate) struct Facts {
    pub key: String,
    pub folder: bool,
    pub size: u64,
    /// `YYYYMMDDHHMMSS[.sss]`, UTC.
    pub modify: String,
    pub unique: String,
}

impl Facts {
    pub(crate) fn e_tag(&self) -> String {
        format!("{}-{}-{:x}", self.unique, self.modify, self.size)
    }

    pub(crate) fn modified(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        let secs = self.modify.get(..14)?;
        chrono::NaiveDateTime::parse_from_str(secs, "%Y%m%d%H%M%S")
            .ok()
            .map(|t| t.and_utc())
    }

    pub(crate) fn meta(&self) -> ObjectMeta {
        ObjectMeta {
            location: Path::parse(&self.key)
                .unwrap_or_else(|_| Path::from_iter(self.key.split('/'))),
            last_modified: self.modified().unwrap_or_default(),
            size: self.size,
            e_tag: Some(self.e_tag()),
            version: None,
        }
    }

    fn listed(self) -> Listed {
        if self.folder {
            return Listed::Folder(self.key);
        }
        Listed::File {
            modified: self.modified().map(Into::into),
            meta: self.meta(),
        }
    }
}

/// `type=file;size=5;modify=...;unique=...; name` as facts (the key is left empty).
fn parse_facts(line: &str) -> Option<(String, Facts)> {
    let (facts, name) = line.split_once(' ')?;
    let mut out = Facts {
        key: String::new(),
        folder: false,
        size: 0,
        modify: String::new(),
        unique: String::new(),
    };
    let mut kind = "";
    for fact in facts.split(';') {
        let Some((k, v)) = fact.split_once('=') else {
            continue;
        };
        match k.to_ascii_lowercase().as_str() {
            "type" => kind = v,
            "size" => out.size = v.parse().unwrap_or(0),
            "modify" => out.modify = v.to_string(),
            "unique" => out.unique = v.to_string(),
            _ => {}
        }
    }
    match kind.to_ascii_lowercase().as_str() {
        "cdir" | "pdir" => return None,
        "dir" => out.folder = true,
        _ => {}
    }
    Some((name.to_string(), out))
}

pub(crate) struct Remote {
    pub login: Login,
    /// Absolute, or relative to the login folder (empty for the login folder itself).
    root: String,
    idle: Mutex<Vec<AsyncFtpStream>>,
    slots: Semaphore,
    /// Folders this process made or found: a STOR into them needs no MKD first.
    folders: Mutex<std::collections::HashSet<String>>,
}

/// A connection taken from the pool. It goes back on drop only once its command has been
/// settled: one whose future was dropped mid-command (a cancelled get) may still owe a
/// reply, which the next command would read as its own.
pub(crate) struct Conn<'a> {
    stream: Option<AsyncFtpStream>,
    settled: bool,
    remote: &'a Remote,
    _slot: SemaphorePermit<'a>,
}

impl Drop for Conn<'_> {
    fn drop(&mut self) {
        if let Some(s) = self.stream.take().filter(|_| self.settled)
            && let Ok(mut idle) = self.remote.idle.lock()
        {
            idle.push(s);
        }
    }
}

pub(crate) fn generic(message: String) -> object_store::Error {
    object_store::Error::Generic {
        store: STORE,
        source: message.into(),
    }
}

/// `op`, or a timed-out connection error when it takes longer than `limit`.
async fn within<T>(
    limit: Duration,
    op: impl Future<Output = Result<T, FtpError>>,
) -> Result<T, FtpError> {
    match tokio::time::timeout(limit, op).await {
        Ok(r) => r,
        Err(_) => Err(FtpError::ConnectionError(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "timed out: the server did not answer in time",
        ))),
    }
}

/// Whether the connection can carry on after `e` (the server said no to one command).
fn keeps_connection(e: &FtpError) -> bool {
    matches!(e, FtpError::UnexpectedResponse(_))
}

fn status_of(e: &FtpError) -> Option<Status> {
    match e {
        FtpError::UnexpectedResponse(r) => Some(r.status),
        _ => None,
    }
}

impl Remote {
    pub(crate) fn new(login: Login, root: String) -> Self {
        Remote {
            login,
            root,
            idle: Mutex::new(Vec::new()),
            slots: Semaphore::new(CONNECTIONS),
            folders: Mutex::new(std::collections::HashSet::new()),
        }
    }

    pub(crate) fn describe(&self) -> String {
        format!(
            "ftp://{}@{}:{}/{}",
            self.login.username,
            self.login.host,
            self.login.port,
            self.root.trim_start_matches('/')
        )
    }

    /// The server path of a key (`""` is the root).
    pub(crate) fn full(&self, key: &str) -> String {
        match (self.root.as_str(), key) {
            ("", k) => k.to_string(),
            ("/", k) => format!("/{k}"),
            (r, "") => r.to_string(),
            (r, k) => format!("{r}/{k}"),
        }
    }

    fn error(&self, what: &str, key: &str, e: FtpError) -> object_store::Error {
        let path = key.to_string();
        let text = match &e {
            FtpError::UnexpectedResponse(r) => {
                let body = String::from_utf8_lossy(&r.body);
                match body.trim() {
                    "" => r.status.code().to_string(),
                    text => text.to_string(),
                }
            }
            FtpError::ConnectionError(io) => format!("the connection failed: {io}"),
            other => other.to_string(),
        };
        let source = format!("{what} {key} on {}: {text}", self.describe()).into();
        match status_of(&e) {
            Some(Status::FileUnavailable) => object_store::Error::NotFound { path, source },
            // MLSD of a missing folder: pyftpdlib says "501 No such directory".
            Some(Status::BadArguments) if what == "listing" => {
                object_store::Error::NotFound { path, source }
            }
            Some(Status::NotLoggedIn) => object_store::Error::Unauthenticated { path, source },
            _ => object_store::Error::Generic {
                store: STORE,
                source,
            },
        }
    }

    /// A logged-in connection: an idle one, else a new one.
    pub(crate) async fn conn(&self) -> object_store::Result<Conn<'_>> {
        let slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| generic("the connection pool is closed".into()))?;
        let idle = self.idle.lock().ok().and_then(|mut i| i.pop());
        let stream = match idle {
            Some(s) => s,
            None => self.connect().await?,
        };
        Ok(Conn {
            stream: Some(stream),
            settled: false,
            remote: self,
            _slot: slot,
        })
    }

    async fn connect(&self) -> object_store::Result<AsyncFtpStream> {
        let login = &self.login;
        let fail = |why: String| generic(format!("connecting to {}: {why}", self.describe()));
        let work = async {
            let addr = tokio::net::lookup_host((login.host.as_str(), login.port))
                .await
                .map_err(|e| fail(e.to_string()))?
                .next()
                .ok_or_else(|| fail("no address".into()))?;
            let mut s = AsyncFtpStream::connect_timeout(addr, login.timeout)
                .await
                .map_err(|e| fail(e.to_string()))?;
            s.login(login.username.as_str(), login.password.as_str())
                .await
                .map_err(|e| match status_of(&e) {
                    Some(Status::NotLoggedIn) => object_store::Error::Unauthenticated {
                        path: self.describe(),
                        source: "login refused (530): wrong username or password".into(),
                    },
                    _ => self.error("logging in to", "", e),
                })?;
            s.transfer_type(FileType::Binary)
                .await
                .map_err(|e| self.error("setting binary mode on", "", e))?;
            Ok::<_, object_store::Error>(s)
        };
        match tokio::time::timeout(login.timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(fail("the server did not answer in time".into())),
        }
    }

    /// Runs one command on a pooled connection within the timeout; a connection that
    /// failed (not just refused the command) is dropped.
    async fn run<T>(
        &self,
        what: &str,
        key: &str,
        op: impl AsyncFnOnce(&mut AsyncFtpStream) -> Result<T, FtpError>,
    ) -> object_store::Result<T> {
        let mut conn = self.conn().await?;
        let stream = conn.stream.as_mut().expect("a live connection");
        let done = within(self.login.timeout, op(stream)).await;
        self.settle(&mut conn, what, key, done)
    }

    /// MLST of `key`, or `None` when nothing is there.
    pub(crate) async fn stat(&self, key: &str) -> object_store::Result<Option<Facts>> {
        let full = self.full(key);
        match self
            .run("stat", key, async |s| s.mlst(Some(&full)).await)
            .await
        {
            Ok(line) => Ok(parse_facts(&line).map(|(_, mut f)| {
                f.key = key.to_string();
                f
            })),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The entries of folder `dir` (a key; `""` is the root), or `None` when it is missing.
    pub(crate) async fn list_dir(&self, dir: &str) -> object_store::Result<Option<Vec<Facts>>> {
        let full = self.full(dir);
        let path = if full.is_empty() { None } else { Some(full) };
        match self
            .run("listing", dir, async |s| s.mlsd(path.as_deref()).await)
            .await
        {
            Ok(lines) => Ok(Some(
                lines
                    .iter()
                    .filter_map(|l| parse_facts(l.trim_end()))
                    .filter(|(name, _)| name != "." && name != "..")
                    .map(|(name, mut f)| {
                        f.key = child(dir, &name);
                        f
                    })
                    .collect(),
            )),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Makes the folders of `dir` (a key) that are missing, the root's too, top down.
    pub(crate) async fn make_dirs(&self, dir: &str) -> object_store::Result<()> {
        let mut at = if self.root.starts_with('/') {
            String::from("/")
        } else {
            String::new()
        };
        for seg in self.root.split('/').chain(dir.split('/')) {
            if seg.is_empty() {
                continue;
            }
            if !at.is_empty() && !at.ends_with('/') {
                at.push('/');
            }
            at.push_str(seg);
            let target = at.clone();
            // An existing folder is refused (550); the write that follows tells.
            let _ = self
                .run("making folder", &at, async |s| s.mkdir(&target).await)
                .await;
        }
        Ok(())
    }

    /// STOR of `body` at `key`, making its folders when missing. Folders are made before
    /// the first STOR into them: a STOR the server refuses (550, no such folder) after its
    /// passive data connection was set up left the next transfers hanging now and then.
    pub(crate) async fn store(&self, key: &str, body: &Bytes) -> object_store::Result<()> {
        let dir = parent(key);
        let known = |folders: &Mutex<std::collections::HashSet<String>>| {
            folders.lock().map(|f| f.contains(dir)).unwrap_or(false)
        };
        if !dir.is_empty() && !known(&self.folders) {
            self.make_dirs(dir).await?;
            if let Ok(mut f) = self.folders.lock() {
                f.insert(dir.to_string());
            }
        }
        // A folder removed since (by an rm) is made again.
        match self.store_once(key, body).await {
            Err(object_store::Error::NotFound { .. }) => {
                self.make_dirs(parent(key)).await?;
                self.store_once(key, body).await
            }
            other => other,
        }
    }

    async fn store_once(&self, key: &str, body: &Bytes) -> object_store::Result<()> {
        let full = self.full(key);
        let limit = self.login.timeout;
        let mut conn = self.conn().await?;
        let stream = conn.stream.as_mut().expect("a live connection");
        let work = async {
            let mut up = within(limit, stream.put_with_stream(&full)).await?;
            for piece in body.chunks(CHUNK) {
                within(limit, async {
                    up.write_all(piece).await.map_err(FtpError::ConnectionError)
                })
                .await?;
            }
            within(limit, up.finish()).await
        };
        // A slow trickle fails as silence does: the whole upload has one deadline too.
        let done = within(transfer_deadline(limit, body.len() as u64), work).await;
        if done.is_err() {
            // A refused STOR may leave the passive data channel it opened half set up on
            // the server: a new connection serves the next request.
            conn.stream = None;
        }
        self.settle(&mut conn, "writing", key, done)
    }

    /// `len` bytes of `key` from `offset` (REST + RETR). `to_end` says the range ends where
    /// the file does; otherwise the transfer is cut short and its connection closed.
    pub(crate) async fn read(
        &self,
        key: &str,
        offset: u64,
        len: u64,
        to_end: bool,
    ) -> object_store::Result<Bytes> {
        if len == 0 {
            return Ok(Bytes::new());
        }
        let full = self.full(key);
        let limit = self.login.timeout;
        let mut conn = self.conn().await?;
        let stream = conn.stream.as_mut().expect("a live connection");
        let work = async {
            stream.resume_transfer(offset as usize).await?;
            let mut down = within(limit, stream.retr_as_stream(&full)).await?;
            // `len` comes from the server's listing: the buffer grows as bytes arrive.
            let mut out = Vec::with_capacity(len.min(CHUNK as u64) as usize);
            let mut piece = vec![0u8; len.min(CHUNK as u64) as usize];
            while (out.len() as u64) < len {
                let want = (len - out.len() as u64).min(piece.len() as u64) as usize;
                let n = within(limit, async {
                    down.read(&mut piece[..want])
                        .await
                        .map_err(FtpError::ConnectionError)
                })
                .await?;
                if n == 0 {
                    return Err(FtpError::ConnectionError(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the file ended early (it changed while it was read)",
                    )));
                }
                out.extend_from_slice(&piece[..n]);
            }
            if to_end {
                within(limit, down.finish()).await?;
                Ok((out, true))
            } else {
                Ok((out, false))
            }
        };
        // Each piece within `timeout`, and the whole transfer within its deadline, so that a
        // trickle of a byte at a time cannot hold a read for ever.
        let done = within(transfer_deadline(limit, len), work).await;
        // As for a refused STOR, and a transfer cut short leaves a reply not worth waiting
        // for: only a read to the end keeps its connection.
        if !matches!(done, Ok((_, true))) {
            conn.stream = None;
        }
        let out = self.settle(&mut conn, "reading", key, done.map(|(out, _)| out))?;
        Ok(out.into())
    }

    /// The result of a command on `conn`, which is dropped unless the server merely refused.
    fn settle<T>(
        &self,
        conn: &mut Conn<'_>,
        what: &str,
        key: &str,
        done: Result<T, FtpError>,
    ) -> object_store::Result<T> {
        conn.settled = true;
        match done {
            Ok(v) => Ok(v),
            Err(e) => {
                if !keeps_connection(&e) {
                    conn.stream = None;
                }
                Err(self.error(what, key, e))
            }
        }
    }

    /// DELE of `key`; a missing file is fine.
    pub(crate) async fn remove(&self, key: &str) -> object_store::Result<()> {
        let full = self.full(key);
        match self.run("deleting", key, async |s| s.rm(&full).await).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Deletes `key` under its lock.
    pub(crate) async fn delete(&self, key: &str) -> object_store::Result<()> {
        let lock = self.lock(key).await?;
        let removed = self.remove(key).await;
        self.unlock(&lock).await;
        removed
    }

    /// Moves the finished temporary file `temp` over `key` if `mode` allows, under `key`'s
    /// lock; returns the new file's ETag. The temporary file is gone afterwards either way.
    pub(crate) async fn commit(
        &self,
        temp: &str,
        key: &str,
        mode: PutMode,
    ) -> object_store::Result<String> {
        let result = match self.lock(key).await {
            Ok(lock) => {
                let done = self.commit_locked(temp, key, mode).await;
                self.unlock(&lock).await;
                done
            }
            Err(e) => Err(e),
        };
        if result.is_err() {
            let _ = self.remove(temp).await;
        }
        result
    }

    async fn commit_locked(
        &self,
        temp: &str,
        key: &str,
        mode: PutMode,
    ) -> object_store::Result<String> {
        let current = self.stat(key).await?.filter(|f| !f.folder);
        match (&mode, &current) {
            (PutMode::Overwrite, _) | (PutMode::Create, None) => {}
            (PutMode::Create, Some(_)) => {
                return Err(object_store::Error::AlreadyExists {
                    path: key.to_string(),
                    source: format!("{key} already exists").into(),
                });
            }
            (PutMode::Update(want), Some(f)) if want.e_tag.as_deref() == Some(&f.e_tag()) => {}
            (PutMode::Update(_), _) => {
                return Err(object_store::Error::Precondition {
                    path: key.to_string(),
                    source: format!("{key} changed since it was read").into(),
                });
            }
        }
        // A time one second past the old file's, so the new ETag differs even if the
        // server reuses the inode.
        let now = chrono::Utc::now();
        let stamp = match current.as_ref().and_then(Facts::modified) {
            Some(old) => now.max(old + chrono::Duration::seconds(1)),
            None => now,
        };
        let (full_temp, full_key) = (self.full(temp), self.full(key));
        let mfmt = format!("MFMT {} {}", stamp.format("%Y%m%d%H%M%S"), full_temp);
        self.run("stamping", temp, async |s| {
            s.custom_command(mfmt, &[Status::File]).await.map(drop)
        })
        .await?;
        self.run("renaming", key, async |s| {
            s.rename(&full_temp, &full_key).await
        })
        .await?;
        let facts = self
            .stat(key)
            .await?
            .ok_or_else(|| generic(format!("{key} is missing right after it was written")))?;
        Ok(facts.e_tag())
    }

    /// Takes `key`'s lock (see [`LockFiles`] below).
    async fn lock(&self, key: &str) -> object_store::Result<String> {
        take_lock(self, key).await
    }

    async fn unlock(&self, lock: &str) {
        let full = self.full(lock);
        let _ = self
            .run("unlocking", lock, async |s| s.rmdir(&full).await)
            .await;
    }
}

/// A lock is a folder made by MKD, which only one writer can make.
#[async_trait::async_trait]
impl LockFiles for Remote {
    const STORE: &'static str = STORE;

    async fn try_lock(&self, lock: &str) -> object_store::Result<TryLock> {
        let full = self.full(lock);
        match self
            .run("locking", lock, async |s| s.mkdir(&full).await)
            .await
        {
            Ok(()) => return Ok(TryLock::Taken),
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        Ok(match self.stat(lock).await? {
            // Nothing there: the folder the lock goes in is missing.
            None => TryLock::NoFolder,
            Some(f) => TryLock::Held {
                made: f.modified().map(Into::into),
            },
        })
    }

    async fn make_dirs(&self, dir: &str) -> object_store::Result<()> {
        Remote::make_dirs(self, dir).await
    }

    async fn remove_lock(&self, lock: &str) -> object_store::Result<()> {
        let full = self.full(lock);
        self.run("unlocking", lock, async |s| s.rmdir(&full).await)
            .await
    }
}

#[async_trait::async_trait]
impl Folders for Remote {
    async fn entries(&self, dir: &str) -> object_store::Result<Option<Vec<Listed>>> {
        let found = self.list_dir(dir).await?;
        Ok(found.map(|facts| facts.into_iter().map(Facts::listed).collect()))
    }

    async fn delete(&self, key: &str) -> object_store::Result<()> {
        Remote::delete(self, key).await
    }

    async fn remove_temp(&self, key: &str) -> object_store::Result<()> {
        self.remove(key).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mlst_facts_give_kind_size_and_tag() {
        let (name, f) = parse_facts(
            "modify=20261130121352;perm=radfwMT;size=5;type=file;unique=fe00g9; a b.txt",
        )
        .unwrap();
        assert_eq!((name.as_str(), f.size, f.folder), ("a b.txt", 5, false));
        assert_eq!(f.e_tag(), "fe00g9-20261130121352-5");
        assert!(f.modified().is_some());
        assert!(parse_facts("type=cdir;modify=20261130121352; .").is_none());
        assert!(
            parse_facts("type=dir;modify=20261130121352; sub")
                .unwrap()
                .1
                .folder
        );
    }
}
