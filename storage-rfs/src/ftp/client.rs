//! The folder on the FTP server and the file operations its primitives (`protocol.rs`) are
//! built from, over a small pool of logged-in control connections (suppaftp on tokio,
//! passive mode, binary): MLST and MLSD for stat and listings, STOR of a temporary file,
//! RNFR/RNTO over the key (under the key's lock folder, made by MKD), DELE, REST + RETR for
//! ranges.
//!
//! MLST's `modify` fact has whole seconds, so every commit stamps the temporary file (MFMT)
//! one second past the old file's time, and the ETag holds the `unique` fact (the inode on
//! pyftpdlib) too: successive contents of a key never share an ETag.
//!
//! A connection that failed mid-transfer never goes back to the pool. A transfer whose
//! passive data connection could not be opened (refused, reset) or that the server dropped
//! (it ended early, or no completion reply followed its end) is tried again on a fresh
//! connection after a short pause, twice at most: pyftpdlib's event loop hands an event of
//! a socket it closed to the new socket that took over the descriptor within the same
//! poll, so under churn it now and then closes a passive listener or a data connection it
//! has just opened. A short read that every try repeats says how long the file is now.

use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use object_store::ObjectMeta;
use object_store::path::Path;
use suppaftp::tokio::AsyncFtpStream;
use suppaftp::types::FileType;
use suppaftp::{FtpError, Status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Semaphore, SemaphorePermit};

use storage_core::RetryPolicy;
use storage_core::bounds::{FTP_LISTING_MAX, transfer_deadline};
use storage_folders::Listed;
use storage_folders::key_names::{child, folders_down_to, parent};

pub(crate) const STORE: &str = "FTP";
/// Control connections open at once (each transfer needs its own).
const CONNECTIONS: usize = 8;
/// Bytes sent or read under one timeout.
const CHUNK: usize = 1 << 20;
/// How a transfer (RETR, STOR, MLSD) whose data connection the server dropped is tried
/// again on a fresh connection: 3 tries, pauses of 100 and 400 ms. The server's event loop
/// must first see the failed try's sockets close, or the fresh try's sockets can take over
/// their descriptors and the events meant for them.
const TRANSFER: RetryPolicy = RetryPolicy::DATA_CONNECTION;
/// How long, on all but the last try, the completion reply may take once the data
/// connection has ended: the server sends it as it closes that connection, so one that
/// never comes means the server dropped the data connection and waits for another.
const COMPLETION_GRACE: Duration = Duration::from_secs(5);

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

    pub(super) fn listed(self) -> Listed {
        if self.folder {
            return Listed::folder(self.key);
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

/// A failed try of a transfer, and whether a fresh connection may do better.
#[derive(Debug)]
struct Failed {
    error: object_store::Error,
    retry: bool,
}

/// The error of a data connection that the server closed or dropped before the transfer
/// was done: pyftpdlib, for one, now and then closes a passive data connection it has just
/// accepted (an event of a closed socket delivered to the new one on the same descriptor),
/// then answers `150` to the transfer command and waits for a connection that never comes.
fn data_dropped(why: String) -> FtpError {
    FtpError::ConnectionError(std::io::Error::new(
        std::io::ErrorKind::ConnectionAborted,
        DataDropped(why),
    ))
}

/// What [`data_dropped`] wraps, so that [`is_data_dropped`] tells it from other failures.
#[derive(Debug)]
struct DataDropped(String);

impl std::fmt::Display for DataDropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DataDropped {}

impl Failed {
    /// A failure no retry helps (no connection could be had).
    fn fatal(error: object_store::Error) -> Self {
        Failed {
            error,
            retry: false,
        }
    }
}

/// A data connection that could not be opened (the listener the server named in its `227`
/// refused or reset it): the same defect as [`data_dropped`]'s, met earlier. Other errors
/// (a refusal by the server, a timeout) are returned as they are.
fn opening(e: FtpError) -> FtpError {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionRefused, ConnectionReset};
    match &e {
        FtpError::ConnectionError(io)
            if matches!(
                io.kind(),
                ConnectionRefused | ConnectionReset | ConnectionAborted | BrokenPipe
            ) && !is_data_dropped(&e) =>
        {
            data_dropped(format!("opening the data connection: {io}"))
        }
        _ => e,
    }
}

/// Whether `e` is [`data_dropped`]'s.
fn is_data_dropped(e: &FtpError) -> bool {
    matches!(e, FtpError::ConnectionError(io)
        if io.get_ref().is_some_and(|inner| inner.is::<DataDropped>()))
}

/// The completion reply of a transfer whose data connection has ended: within the grace
/// unless `last`, else within `limit`.
async fn completion(
    limit: Duration,
    last: bool,
    finish: impl Future<Output = Result<(), FtpError>>,
) -> Result<(), FtpError> {
    if last {
        return within(limit, finish).await;
    }
    match tokio::time::timeout(COMPLETION_GRACE.min(limit), finish).await {
        Ok(r) => r,
        Err(_) => Err(data_dropped(
            "no completion reply once the data connection had ended".into(),
        )),
    }
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
    pub(super) async fn run<T>(
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
        match self.mlsd(dir, path.as_deref()).await {
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
        for at in folders_down_to(&self.root, dir) {
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

    /// STOR of `body` at `key`; a data connection the server dropped is retried.
    async fn store_once(&self, key: &str, body: &Bytes) -> object_store::Result<()> {
        TRANSFER
            .run(|t| self.store_try(key, body, t.last), |f| f.retry)
            .await
            .map_err(|f| f.error)
    }

    async fn store_try(&self, key: &str, body: &Bytes, last: bool) -> Result<(), Failed> {
        let full = self.full(key);
        let limit = self.login.timeout;
        let mut conn = self.conn().await.map_err(Failed::fatal)?;
        let stream = conn.stream.as_mut().expect("a live connection");
        let work = async {
            let mut up = within(limit, stream.put_with_stream(&full))
                .await
                .map_err(opening)?;
            for piece in body.chunks(CHUNK) {
                within(limit, async {
                    up.write_all(piece)
                        .await
                        .map_err(|e| data_dropped(format!("sending the file: {e}")))
                })
                .await?;
            }
            completion(limit, last, up.finish()).await
        };
        // A slow trickle fails as silence does: the whole upload has one deadline too.
        let done = within(transfer_deadline(limit, body.len() as u64), work).await;
        let retry = matches!(&done, Err(e) if is_data_dropped(e));
        if done.is_err() {
            // A refused STOR may leave the passive data channel it opened half set up on
            // the server: a new connection serves the next request.
            conn.stream = None;
        }
        self.settle(&mut conn, "writing", key, done)
            .map_err(|error| Failed { error, retry })
    }

    /// MLSD of `path` (the server path of folder `dir`); a data connection the server
    /// dropped is retried.
    async fn mlsd(&self, dir: &str, path: Option<&str>) -> object_store::Result<Vec<String>> {
        let command = match path {
            Some(p) => format!("MLSD {p}"),
            None => "MLSD".to_string(),
        };
        TRANSFER
            .run(|t| self.mlsd_try(dir, &command, t.last), |f| f.retry)
            .await
            .map_err(|f| f.error)
    }

    /// One try of an MLSD, read up to [`FTP_LISTING_MAX`] (more is an integrity error).
    async fn mlsd_try(&self, dir: &str, command: &str, last: bool) -> Result<Vec<String>, Failed> {
        let limit = self.login.timeout;
        let mut conn = self.conn().await.map_err(Failed::fatal)?;
        let stream = conn.stream.as_mut().expect("a live connection");
        let work = async {
            let (_, mut down) = within(
                limit,
                stream.custom_data_command(command, &[Status::AboutToSend, Status::AlreadyOpen]),
            )
            .await
            .map_err(opening)?;
            // One byte past the cap tells a listing that exceeds it from one that just fits;
            // the buffer grows as bytes arrive.
            let mut raw = Vec::new();
            within(limit, async {
                (&mut down)
                    .take(FTP_LISTING_MAX.bytes + 1)
                    .read_to_end(&mut raw)
                    .await
                    .map_err(|e| data_dropped(format!("reading the listing: {e}")))
            })
            .await?;
            if raw.len() as u64 > FTP_LISTING_MAX.bytes {
                return Ok(None);
            }
            completion(limit, last, down.finish()).await?;
            Ok(Some(
                String::from_utf8_lossy(&raw)
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(str::to_string)
                    .collect(),
            ))
        };
        let done = work.await;
        let retry = matches!(&done, Err(e) if is_data_dropped(e));
        match self.settle(&mut conn, "listing", dir, done) {
            Ok(Some(lines)) => Ok(lines),
            Ok(None) => {
                // The server is still sending: this connection owes the rest and a reply.
                conn.stream = None;
                let at = format!("{}/{dir}", self.describe().trim_end_matches('/'));
                let what = format!("the MLSD listing of {}", at.trim_end_matches('/'));
                Err(Failed::fatal(
                    FTP_LISTING_MAX.exceeded(&what).into_store(STORE),
                ))
            }
            Err(error) => Err(Failed { error, retry }),
        }
    }

    /// `len` bytes of `key` from `offset` (REST + RETR). `to_end` says the range ends where
    /// the file does; otherwise the transfer is cut short and its connection closed. A data
    /// connection that ends early (the server dropped it) is retried on a fresh connection.
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
        let read = TRANSFER
            .run(|_| self.read_try(key, offset, len, to_end), |f| f.retry)
            .await;
        match read {
            Ok(data) => Ok(data),
            // Still worth another try: every try lost its data connection.
            Err(f) if f.retry => Err(self.short_every_time(key, f.error).await),
            Err(f) => Err(f.error),
        }
    }

    async fn read_try(
        &self,
        key: &str,
        offset: u64,
        len: u64,
        to_end: bool,
    ) -> Result<Bytes, Failed> {
        let full = self.full(key);
        let limit = self.login.timeout;
        let mut conn = self.conn().await.map_err(Failed::fatal)?;
        let stream = conn.stream.as_mut().expect("a live connection");
        let work = async {
            stream.resume_transfer(offset as usize).await?;
            let mut down = within(limit, stream.retr_as_stream(&full))
                .await
                .map_err(opening)?;
            // `len` comes from the server's listing: the buffer grows as bytes arrive.
            let mut out = Vec::with_capacity(len.min(CHUNK as u64) as usize);
            let mut piece = vec![0u8; len.min(CHUNK as u64) as usize];
            while (out.len() as u64) < len {
                let want = (len - out.len() as u64).min(piece.len() as u64) as usize;
                let n = within(limit, async {
                    down.read(&mut piece[..want])
                        .await
                        .map_err(|e| data_dropped(format!("reading the file: {e}")))
                })
                .await?;
                if n == 0 {
                    return Err(data_dropped(format!(
                        "the data connection ended after {} of {len} bytes (the server \
                         dropped it, or the file changed while it was read)",
                        out.len()
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
        let retry = matches!(&done, Err(e) if is_data_dropped(e));
        // As for a refused STOR, and a transfer cut short leaves a reply not worth waiting
        // for: only a read to the end keeps its connection.
        if !matches!(done, Ok((_, true))) {
            conn.stream = None;
        }
        let out = self
            .settle(&mut conn, "reading", key, done.map(|(out, _)| out))
            .map_err(|error| Failed { error, retry })?;
        Ok(out.into())
    }

    /// The error of a read whose every try lost its data connection, saying how long the
    /// file is on the server now: the same length means the server cut the transfers, another
    /// one that the file changed while it was read.
    async fn short_every_time(&self, key: &str, error: object_store::Error) -> object_store::Error {
        let now = match self.stat(key).await {
            Ok(Some(facts)) => format!("; the file on the server has {} bytes now", facts.size),
            Ok(None) => "; the file is gone from the server now".into(),
            Err(_) => String::new(),
        };
        let said = match error {
            object_store::Error::Generic { source, .. } => source.to_string(),
            other => other.to_string(),
        };
        generic(format!("{said} ({} tries{now})", TRANSFER.tries))
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

    /// Renames the finished temporary file `temp` over `key` (held locked), dated one second
    /// past `old`, the file it replaces, so the new ETag differs even if the server reuses the
    /// inode; returns the new file's ETag.
    pub(super) async fn rename_over(
        &self,
        temp: &str,
        key: &str,
        old: Option<&Facts>,
    ) -> object_store::Result<String> {
        let now = chrono::Utc::now();
        let stamp = match old.and_then(Facts::modified) {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncBufReadExt, BufReader};
    use tokio::net::{TcpListener, TcpStream};

    const FILE: &[u8] = b"a file the server holds whole";

    /// A small FTP server on 127.0.0.1 with pyftpdlib's defects: its first passive listener
    /// is closed before the client connects (refused), and the first transfer of each kind
    /// (RETR, MLSD, STOR) finds its passive data connection closed as soon as it was
    /// accepted, answers `150`, and never says more on that control connection. Stored
    /// bodies go to `stored`. Serves at most 16 control connections; aborted by the test.
    struct DroppingServer {
        port: u16,
        task: tokio::task::JoinHandle<()>,
        stored: Arc<Mutex<Vec<u8>>>,
        transfers: Arc<AtomicUsize>,
        refused: Arc<AtomicUsize>,
    }

    impl Drop for DroppingServer {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    impl DroppingServer {
        async fn start() -> Self {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let stored = Arc::new(Mutex::new(Vec::new()));
            let transfers = Arc::new(AtomicUsize::new(0));
            let dropped = Arc::new(Mutex::new(std::collections::HashSet::<String>::new()));
            let refused = Arc::new(AtomicUsize::new(0));
            let (s, t, r) = (stored.clone(), transfers.clone(), refused.clone());
            let task = tokio::spawn(async move {
                for _ in 0..16 {
                    let Ok((sock, _)) = listener.accept().await else {
                        return;
                    };
                    let defects = Defects {
                        dropped: dropped.clone(),
                        refused: r.clone(),
                    };
                    tokio::spawn(serve(sock, defects, s.clone(), t.clone()));
                }
            });
            DroppingServer {
                port,
                task,
                stored,
                transfers,
                refused,
            }
        }

        fn remote(&self) -> Remote {
            let login = Login {
                host: "127.0.0.1".into(),
                port: self.port,
                username: "u".into(),
                password: "p".into(),
                timeout: Duration::from_secs(20),
            };
            Remote::new(login, String::new())
        }
    }

    /// The defects met so far: transfer kinds whose data connection was dropped, and
    /// passive listeners closed before the client came.
    struct Defects {
        dropped: Arc<Mutex<std::collections::HashSet<String>>>,
        refused: Arc<AtomicUsize>,
    }

    async fn serve(
        sock: TcpStream,
        defects: Defects,
        stored: Arc<Mutex<Vec<u8>>>,
        transfers: Arc<AtomicUsize>,
    ) {
        let Defects { dropped, refused } = defects;
        let (read, mut write) = sock.into_split();
        let mut lines = BufReader::new(read).lines();
        let mut passive: Option<TcpListener> = None;
        let _ = write.write_all(b"220 ready\r\n").await;
        for _ in 0..64 {
            let Ok(Some(line)) = lines.next_line().await else {
                return;
            };
            let (verb, arg) = line.split_once(' ').unwrap_or((line.as_str(), ""));
            let reply = match verb {
                "USER" => "331 password please\r\n".to_string(),
                "PASS" => "230 logged in\r\n".to_string(),
                "TYPE" => "200 binary\r\n".to_string(),
                "MLST" => format!(
                    "250-facts\r\n type=file;size={};modify=20260101000000;unique=1; {arg}\r\n\
                     250 end\r\n",
                    FILE.len()
                ),
                "PASV" => {
                    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
                    let p = l.local_addr().unwrap().port();
                    // The first listener goes before anyone connects: the client is refused.
                    if refused.fetch_add(1, Ordering::SeqCst) == 0 {
                        drop(l);
                    } else {
                        passive = Some(l);
                    }
                    format!("227 passive (127,0,0,1,{},{})\r\n", p / 256, p % 256)
                }
                "RETR" | "MLSD" | "STOR" => {
                    let (mut data, _) = passive.take().unwrap().accept().await.unwrap();
                    transfers.fetch_add(1, Ordering::SeqCst);
                    if dropped.lock().unwrap().insert(verb.to_string()) {
                        // The defect: the data connection goes, `150` comes, then silence.
                        drop(data);
                        let _ = write
                            .write_all(b"150 about to open data connection\r\n")
                            .await;
                        while let Ok(Some(_)) = lines.next_line().await {}
                        return;
                    }
                    let _ = write.write_all(b"125 transfer starting\r\n").await;
                    match verb {
                        "RETR" => data.write_all(FILE).await.unwrap(),
                        "MLSD" => data
                            .write_all(b"type=file;size=3;modify=20260101000000;unique=2; f\r\n")
                            .await
                            .unwrap(),
                        _ => {
                            let mut body = Vec::new();
                            data.read_to_end(&mut body).await.unwrap();
                            *stored.lock().unwrap() = body;
                        }
                    }
                    drop(data);
                    "226 done\r\n".to_string()
                }
                _ => "502 not here\r\n".to_string(),
            };
            if write.write_all(reply.as_bytes()).await.is_err() {
                return;
            }
        }
    }

    /// A server that refuses a passive data connection, then drops a fresh one, must cost
    /// two retries on fresh connections, not a failed or short read, a listing that hangs, or
    /// a lost upload.
    #[tokio::test]
    async fn a_refused_or_dropped_data_connection_is_retried_on_a_fresh_connection() {
        let server = DroppingServer::start().await;
        let remote = server.remote();
        let got = remote.read("f", 0, FILE.len() as u64, true).await;
        assert_eq!(got.unwrap(), Bytes::from_static(FILE));
        // The read's first try was refused, its second dropped, its third whole.
        assert!(server.refused.load(Ordering::SeqCst) >= 3);
        let listed = remote.list_dir("").await.unwrap().unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!((listed[0].key.as_str(), listed[0].size), ("f", 3));
        let body = Bytes::from_static(b"uploaded whole");
        remote.store_once("up", &body).await.unwrap();
        assert_eq!(server.stored.lock().unwrap().as_slice(), &body[..]);
        // Each kind was tried twice: the dropped try and the good one.
        assert_eq!(server.transfers.load(Ordering::SeqCst), 6);
    }

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
