//! One emulator process: a free port, output to a log file in a fresh temp dir, a readiness
//! wait that reports the log's tail on failure, and kill-by-PID when dropped. And the short
//! commands around servers: one fed on its stdin, one whose printed text is the answer.

use std::fs::{self, File};
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long a server may take to answer its readiness check.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How many ports to try when a server exits before it is ready (a port taken in between).
const ATTEMPTS: usize = 3;
/// How many log lines an error shows.
const LOG_LINES: usize = 30;

/// A running emulator; killed and its temp dir removed on drop.
pub(super) struct Server {
    child: Child,
    name: &'static str,
    log: PathBuf,
    // Holds the log and the server's data; removed after the process is gone.
    _dir: TempDir,
}

/// Starts a server on a free port: `build` makes its command from its temp dir and port, and
/// it is ready once `ready(port)` holds while the process still runs. Returns it and its port.
pub(super) fn start(
    name: &'static str,
    build: impl Fn(&Path, u16) -> Command,
    ready: impl Fn(u16) -> bool,
) -> Result<(Server, u16), String> {
    start_within(name, READY_TIMEOUT, build, ready)
}

/// [`start`] for a server that may take up to `timeout` to be ready.
pub(super) fn start_within(
    name: &'static str,
    timeout: Duration,
    build: impl Fn(&Path, u16) -> Command,
    ready: impl Fn(u16) -> bool,
) -> Result<(Server, u16), String> {
    let mut last_error = String::new();
    for _ in 0..ATTEMPTS {
        let port = free_port()?;
        let mut server = Server::spawn(name, |dir| build(dir, port))?;
        match server.wait_ready(timeout, || ready(port)) {
            Ok(()) => return Ok((server, port)),
            // An early exit is most likely a port lost to another process: try another one.
            Err((true, e)) => last_error = e,
            Err((false, e)) => return Err(e),
        }
    }
    Err(last_error)
}

/// A port that was free a moment ago: bind port 0 and let the listener go.
fn free_port() -> Result<u16, String> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind 127.0.0.1:0: {e}"))?;
    listener
        .local_addr()
        .map(|addr| addr.port())
        .map_err(|e| format!("local_addr: {e}"))
}

impl Server {
    fn spawn(name: &'static str, build: impl FnOnce(&Path) -> Command) -> Result<Server, String> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("{name}-"))
            .tempdir()
            .map_err(|e| format!("{name}: temp dir: {e}"))?;
        let log = dir.path().join("server.log");
        let out = File::create(&log).map_err(|e| format!("{name}: create log: {e}"))?;
        let err = out.try_clone().map_err(|e| format!("{name}: log: {e}"))?;
        let mut cmd = build(dir.path());
        cmd.current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let child = cmd
            .spawn()
            .map_err(|e| format!("{name}: cannot start {cmd:?}: {e}"))?;
        Ok(Server {
            child,
            name,
            log,
            _dir: dir,
        })
    }

    /// Polls `ready` until it holds. The error says whether the process had exited.
    fn wait_ready(
        &mut self,
        timeout: Duration,
        ready: impl Fn() -> bool,
    ) -> Result<(), (bool, String)> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err((
                    true,
                    self.failure(&format!("exited ({status}) before it was ready")),
                ));
            }
            // Checked again after `ready`: a reply from another process on a reused port
            // must not count.
            if ready() && matches!(self.child.try_wait(), Ok(None)) {
                return Ok(());
            }
            if Instant::now() > deadline {
                let secs = timeout.as_secs();
                return Err((false, self.failure(&format!("not ready after {secs} s"))));
            }
            sleep(Duration::from_millis(100));
        }
    }

    fn failure(&self, what: &str) -> String {
        let log = fs::read(&self.log).unwrap_or_default();
        let log = String::from_utf8_lossy(&log);
        format!(
            "{} {what}; last lines of its log:\n{}",
            self.name,
            tail(&log, LOG_LINES)
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // Kill exactly this PID and reap it; errors mean it is already gone.
        let _ = self.child.kill();
        let _ = self.child.wait();
        keep_log(self.name, self.child.id(), &self.log);
    }
}

/// With `BLOCKS_KEEP_SERVER_LOGS=DIR`, a stopped server's log is copied to
/// `DIR/<name>-<pid>.log` (its temp dir goes away with it): the evidence when a test that
/// shares a server fails now and then.
fn keep_log(name: &str, pid: u32, log: &Path) {
    let Some(dir) = std::env::var_os("BLOCKS_KEEP_SERVER_LOGS") else {
        return;
    };
    let dir = PathBuf::from(dir);
    let _ = fs::create_dir_all(&dir);
    let _ = fs::copy(log, dir.join(format!("{name}-{pid}.log")));
}

/// The last `n` lines of `text`.
pub(super) fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Runs `cmd` with `input` on its stdin (closed after it) and waits for it; `what` names it
/// in errors.
pub(super) fn output_fed(cmd: &mut Command, input: &str, what: &str) -> Result<Output, String> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(input.as_bytes())
        .map_err(|e| format!("{what}: {e}"))?;
    child.wait_with_output().map_err(|e| format!("{what}: {e}"))
}

/// What a command (`what`) printed, if it succeeded; else an error with its status and
/// everything it printed.
pub(super) fn printed(out: Output, what: &str) -> Result<String, String> {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!(
            "{what} failed ({}): {text}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}
