//! Fault injection: a TCP proxy on 127.0.0.1 between a block and its emulator that passes
//! traffic through untouched until told to misbehave: answer `503` to the next requests,
//! reset or stall connections once they have carried some bytes, cut every connection
//! once the proxy as a whole has (a partition), or hold back the answers to ranged reads so
//! that later ones arrive first. What it really injected is counted, so a
//! test can check that its fault happened. Its tasks are aborted when it is dropped.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// Longest request head read when a 503 may be due.
const MAX_HEAD: usize = 64 * 1024;
/// How long a refused request's body is read before the connection is closed anyway.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// An S3-style throttling answer; Azure's and GCS's clients retry any 503.
const UNAVAILABLE: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code>\
<Message>Please reduce your request rate.</Message></Error>\n";

/// Which way bytes go through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the client to the emulator (uploads).
    Upstream,
    /// From the emulator to the client (downloads).
    Downstream,
}

/// What happens to a connection once it has carried its share of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// Reset both sides (RST), as a crashed peer or a dropped route does.
    Reset,
    /// Forward nothing more and never answer; the client's timeout must end it.
    Stall,
    /// Forward the rest one byte at a time, `TRICKLE_EVERY` apart, as a server that answers
    /// but never finishes does; the client's deadline for the whole request must end it.
    Trickle,
}

/// The pause between the bytes of a [`Cut::Trickle`]d connection.
pub const TRICKLE_EVERY: Duration = Duration::from_secs(1);

/// How many faults of each kind were really injected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Injected {
    /// Requests answered with 503.
    pub unavailable: u32,
    /// Connections reset mid-transfer.
    pub reset: u32,
    /// Connections stalled.
    pub stalled: u32,
    /// Connections trickled.
    pub trickled: u32,
    /// Responses the server sent that the client never got (each also counts as a reset).
    pub lost: u32,
    /// Answers to ranged reads held back.
    pub delayed: u32,
    /// Connections accepted in all.
    pub connections: u32,
}

/// What is still to be done wrong.
#[derive(Debug, Clone, Copy)]
struct Plan {
    /// Requests still to be answered with 503.
    unavailable: u32,
    /// Connections still to be cut, how, after how many bytes going which way.
    cuts: u32,
    cut: Cut,
    after: u64,
    direction: Direction,
    partition: Option<Partition>,
    /// Requests still to lose the response of, and their method and a part of their path.
    lose: u32,
    lose_matching: (&'static str, &'static str),
    /// Ranged reads still to have their answer held back, and for how long.
    delays: u32,
    delay: Duration,
    delay_matching: &'static str,
}

/// Every connection is cut once the proxy as a whole has carried `after` bytes `direction`.
#[derive(Debug, Clone, Copy)]
struct Partition {
    cut: Cut,
    after: u64,
    direction: Direction,
    /// Bytes carried `direction` since the partition was planned.
    moved: u64,
}

/// The plan, changed by the test at any time while connections run, and the counts of what
/// was done.
#[derive(Debug)]
struct Faults {
    plan: Mutex<Plan>,
    injected_unavailable: AtomicU32,
    injected_reset: AtomicU32,
    injected_stalled: AtomicU32,
    injected_trickled: AtomicU32,
    injected_lost: AtomicU32,
    injected_delayed: AtomicU32,
    connections: AtomicU32,
    /// Bytes forwarded (upstream, downstream) over every connection.
    carried: [AtomicU64; 2],
    /// HTTP requests seen going up (request lines at the start of what a client sent).
    requests: AtomicU64,
    /// Whether `Range` headers going up are renamed (to `Xange`), so that the server sends
    /// whole objects, as one that ignores ranges does.
    hide_ranges: AtomicBool,
    /// Request heads seen going up with a `Range` header (hidden or not).
    ranged: AtomicU64,
}

impl Faults {
    fn plan(&self) -> std::sync::MutexGuard<'_, Plan> {
        // Nothing panics while holding it; a poisoned plan is still a whole plan.
        self.plan.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes one 503 from the plan if any is left.
    fn take_unavailable(&self) -> bool {
        let mut plan = self.plan();
        plan.unavailable = match plan.unavailable.checked_sub(1) {
            Some(left) => left,
            None => return false,
        };
        true
    }
}

/// A running proxy to one upstream address; its tasks are aborted when it is dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    faults: Arc<Faults>,
    accept: JoinHandle<()>,
}

impl FaultProxy {
    /// Listens on a free port of 127.0.0.1 and forwards every connection to `upstream`
    /// (`host:port`, or a URL whose authority is taken).
    pub async fn start(upstream: &str) -> Result<FaultProxy, String> {
        let authority = upstream
            .strip_prefix("http://")
            .unwrap_or(upstream)
            .split('/')
            .next()
            .unwrap_or_default();
        let upstream: SocketAddr = tokio::net::lookup_host(authority)
            .await
            .map_err(|e| format!("fault proxy: resolve {authority}: {e}"))?
            .next()
            .ok_or_else(|| format!("fault proxy: no address for {authority}"))?;
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("fault proxy: bind 127.0.0.1:0: {e}"))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("fault proxy: local_addr: {e}"))?;
        let faults = Arc::new(Faults {
            plan: Mutex::new(Plan {
                unavailable: 0,
                cuts: 0,
                cut: Cut::Reset,
                after: 0,
                direction: Direction::Upstream,
                partition: None,
                lose: 0,
                lose_matching: ("", ""),
                delays: 0,
                delay: Duration::ZERO,
                delay_matching: "",
            }),
            injected_unavailable: AtomicU32::new(0),
            injected_reset: AtomicU32::new(0),
            injected_stalled: AtomicU32::new(0),
            injected_trickled: AtomicU32::new(0),
            injected_lost: AtomicU32::new(0),
            injected_delayed: AtomicU32::new(0),
            connections: AtomicU32::new(0),
            carried: [AtomicU64::new(0), AtomicU64::new(0)],
            requests: AtomicU64::new(0),
            hide_ranges: AtomicBool::new(false),
            ranged: AtomicU64::new(0),
        });
        let accept = tokio::spawn(accept_loop(listener, upstream, faults.clone()));
        Ok(FaultProxy {
            addr,
            faults,
            accept,
        })
    }

    /// The port it listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Answers the next `n` requests with `503 Service Unavailable` and closes each of their
    /// connections; a request already under way on a kept-alive connection is not counted.
    pub fn answer_503(&self, n: u32) {
        self.faults.plan().unavailable = n;
    }

    /// Cuts (`how`) the next `connections` connections that carry more than `after` bytes
    /// in `direction`, once they have carried exactly `after`. `after` 0 upstream with
    /// [`Cut::Stall`] stalls a connection before its first request reaches the emulator.
    pub fn cut(&self, how: Cut, connections: u32, after: u64, direction: Direction) {
        let mut plan = self.faults.plan();
        plan.cuts = connections;
        plan.cut = how;
        plan.after = after;
        plan.direction = direction;
    }

    /// A network partition in the middle of a transfer: once `after` more bytes have gone
    /// `direction` through the proxy as a whole, every connection, open or new, is cut
    /// (`how`) at its next byte either way. Unlike [`FaultProxy::cut`], a client cannot get
    /// through by resuming on a new connection.
    pub fn partition_after(&self, how: Cut, after: u64, direction: Direction) {
        self.faults.plan().partition = Some(Partition {
            cut: how,
            after,
            direction,
            moved: 0,
        });
    }

    /// The next `n` requests with `method` whose request line contains `path_part` (e.g.
    /// `"PUT"`, `"/.blocks/HEAD"`) reach the server, which acts on them; their responses are
    /// then dropped and the connection reset, as when a route fails after the server
    /// committed. The client's retry meets the state its own request left.
    pub fn lose_response_to(&self, n: u32, method: &'static str, path_part: &'static str) {
        let mut plan = self.faults.plan();
        plan.lose = n;
        plan.lose_matching = (method, path_part);
    }

    /// The answers to the next `n` ranged reads whose request line contains `path_part` are
    /// held back `by` before their first byte comes down, so reads sent after them are
    /// answered first.
    pub fn delay_ranged(&self, n: u32, path_part: &'static str, by: Duration) {
        let mut plan = self.faults.plan();
        plan.delays = n;
        plan.delay = by;
        plan.delay_matching = path_part;
    }

    /// Back to passing everything through (connections already cut stay so).
    pub fn pass_through(&self) {
        let mut plan = self.faults.plan();
        plan.unavailable = 0;
        plan.cuts = 0;
        plan.partition = None;
        plan.lose = 0;
        plan.delays = 0;
    }

    /// From now on, `Range` headers going up are renamed (same length, so byte counts hold)
    /// and the server answers with whole objects, as a server that ignores ranges does.
    pub fn hide_ranges(&self, hide: bool) {
        self.faults.hide_ranges.store(hide, Ordering::SeqCst);
    }

    /// Requests that went up with a `Range` header so far.
    pub fn ranged_requests(&self) -> u64 {
        self.faults.ranged.load(Ordering::SeqCst)
    }

    /// HTTP requests that went up so far (for HTTP/1.1 clients that do not pipeline, as
    /// object-store clients do not: each request head starts a client's write).
    pub fn requests(&self) -> u64 {
        self.faults.requests.load(Ordering::SeqCst)
    }

    /// Bytes forwarded so far: (to the server, to the client), request and response heads
    /// included, as they crossed the wire.
    pub fn carried(&self) -> (u64, u64) {
        let c = &self.faults.carried;
        (c[0].load(Ordering::SeqCst), c[1].load(Ordering::SeqCst))
    }

    pub fn injected(&self) -> Injected {
        let f = &self.faults;
        Injected {
            unavailable: f.injected_unavailable.load(Ordering::SeqCst),
            reset: f.injected_reset.load(Ordering::SeqCst),
            stalled: f.injected_stalled.load(Ordering::SeqCst),
            trickled: f.injected_trickled.load(Ordering::SeqCst),
            lost: f.injected_lost.load(Ordering::SeqCst),
            delayed: f.injected_delayed.load(Ordering::SeqCst),
            connections: f.connections.load(Ordering::SeqCst),
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        // The connection tasks live in the accept task's JoinSet, which aborts them.
        self.accept.abort();
    }
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, faults: Arc<Faults>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((client, _)) = accepted {
                    faults.connections.fetch_add(1, Ordering::SeqCst);
                    connections.spawn(serve(client, upstream, faults.clone()));
                }
            }
            // Reaps finished connections so the set does not grow.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Why a connection's forwarding stopped early.
enum Interrupted {
    Fault(Cut),
    Io,
}

async fn serve(mut client: TcpStream, upstream: SocketAddr, faults: Arc<Faults>) {
    let _ = client.set_nodelay(true);
    let mut early = Vec::new();
    if faults.plan().unavailable > 0 {
        let Ok(head) = read_head(&mut client).await else {
            return;
        };
        if faults.take_unavailable() {
            refuse(client, &head).await;
            faults.injected_unavailable.fetch_add(1, Ordering::SeqCst);
            return;
        }
        early = head;
    }
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = server.set_nodelay(true);
    let counted = Counted {
        faults: &faults,
        moved: [AtomicU64::new(0), AtomicU64::new(0)],
        cut_once: AtomicBool::new(false),
        losing: AtomicBool::new(false),
        hold: Mutex::new(None),
    };
    let outcome = {
        let (mut client_read, mut client_write) = client.split();
        let (mut server_read, mut server_write) = server.split();
        tokio::try_join!(
            counted.pump(
                &early,
                &mut client_read,
                &mut server_write,
                Direction::Upstream
            ),
            counted.pump(
                &[],
                &mut server_read,
                &mut client_write,
                Direction::Downstream
            ),
        )
    };
    match outcome {
        Ok(_) | Err(Interrupted::Io) => {}
        Err(Interrupted::Fault(Cut::Reset)) => {
            // A zero linger makes the close an RST on both sides.
            let _ = client.set_zero_linger();
            let _ = server.set_zero_linger();
            faults.injected_reset.fetch_add(1, Ordering::SeqCst);
        }
        // A trickled connection forwards to its end and never stops early.
        Err(Interrupted::Fault(Cut::Trickle)) => {}
        Err(Interrupted::Fault(Cut::Stall)) => {
            faults.injected_stalled.fetch_add(1, Ordering::SeqCst);
            drop(server);
            // Keep the client's connection open, reading and answering nothing, until it
            // gives up (or the proxy is dropped).
            let _ = tokio::io::copy(&mut client, &mut tokio::io::sink()).await;
        }
    }
}

/// One connection's byte counts (upstream, downstream) and whether it was cut. Its two pumps
/// run in one task, hence atomics only to share it between them.
struct Counted<'a> {
    faults: &'a Faults,
    moved: [AtomicU64; 2],
    cut_once: AtomicBool,
    /// A request whose response is to be lost went up; its response must not come down.
    losing: AtomicBool,
    /// A ranged read went up whose answer is to be held back this long.
    hold: Mutex<Option<Duration>>,
}

impl Counted<'_> {
    /// Copies `from` to `to` (after `early`, bytes already read from `from`) until EOF, then
    /// half-closes `to`; stops early if this connection is cut.
    async fn pump(
        &self,
        early: &[u8],
        from: &mut (impl AsyncRead + Unpin),
        to: &mut (impl AsyncWrite + Unpin),
        direction: Direction,
    ) -> Result<(), Interrupted> {
        let mut buf = vec![0u8; early.len().max(64 * 1024)];
        let mut pending = early.len();
        buf[..pending].copy_from_slice(early);
        let mut trickling = false;
        loop {
            if pending == 0 {
                pending = from.read(&mut buf).await.map_err(|_| Interrupted::Io)?;
                if pending == 0 {
                    let _ = to.shutdown().await;
                    return Ok(());
                }
            }
            let chunk = &mut buf[..pending];
            if direction == Direction::Upstream {
                if starts_request(chunk) {
                    self.faults.requests.fetch_add(1, Ordering::SeqCst);
                    if let Some(at) = range_header(chunk) {
                        self.faults.ranged.fetch_add(1, Ordering::SeqCst);
                        if self.faults.hide_ranges.load(Ordering::SeqCst) {
                            chunk[at] = b'X';
                        }
                        self.mark_if_to_hold(chunk);
                    }
                }
                let chunk = &*chunk;
                self.mark_if_to_lose(chunk);
            } else if let Some(by) = self.take_hold() {
                self.faults.injected_delayed.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(by).await;
            }
            if direction == Direction::Downstream && self.losing.load(Ordering::SeqCst) {
                // HTTP/1.1 without pipelining: what comes down now is that request's answer.
                self.faults.injected_lost.fetch_add(1, Ordering::SeqCst);
                return Err(Interrupted::Fault(Cut::Reset));
            }
            let (forward, cut) = match trickling {
                true => (0, None),
                false => self.allowance(chunk.len() as u64, direction),
            };
            to.write_all(&chunk[..forward as usize])
                .await
                .map_err(|_| Interrupted::Io)?;
            let index = usize::from(direction == Direction::Downstream);
            self.faults.carried[index].fetch_add(forward, Ordering::SeqCst);
            if cut == Some(Cut::Trickle) {
                trickling = true;
                self.faults.injected_trickled.fetch_add(1, Ordering::SeqCst);
            }
            if trickling {
                for byte in chunk[forward as usize..].chunks(1) {
                    tokio::time::sleep(TRICKLE_EVERY).await;
                    to.write_all(byte).await.map_err(|_| Interrupted::Io)?;
                    to.flush().await.map_err(|_| Interrupted::Io)?;
                    self.faults.carried[index].fetch_add(1, Ordering::SeqCst);
                }
                pending = 0;
                continue;
            }
            if let Some(cut) = cut {
                let _ = to.flush().await;
                return Err(Interrupted::Fault(cut));
            }
            pending = 0;
        }
    }

    /// Marks this connection's next answer to be held back, while the plan has delays left.
    fn mark_if_to_hold(&self, chunk: &[u8]) {
        let mut plan = self.faults.plan();
        let line = &chunk[..find(
            chunk, b"
",
        )
        .unwrap_or(chunk.len())];
        if plan.delays > 0 && find(line, plan.delay_matching.as_bytes()).is_some() {
            plan.delays -= 1;
            *self.hold.lock().unwrap_or_else(PoisonError::into_inner) = Some(plan.delay);
        }
    }

    fn take_hold(&self) -> Option<Duration> {
        self.hold
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// Marks this connection when `chunk` carries a request whose response is to be lost.
    fn mark_if_to_lose(&self, chunk: &[u8]) {
        let mut plan = self.faults.plan();
        if plan.lose == 0 {
            return;
        }
        let (method, path_part) = plan.lose_matching;
        let line = &chunk[..find(chunk, b"\r\n").unwrap_or(chunk.len())];
        let matches = line.starts_with(method.as_bytes())
            && line.get(method.len()) == Some(&b' ')
            && find(line, path_part.as_bytes()).is_some();
        if matches {
            plan.lose -= 1;
            self.losing.store(true, Ordering::SeqCst);
        }
    }

    /// How many of the next `n` bytes going `direction` may pass, and the cut that follows
    /// them if this connection is to be cut now.
    fn allowance(&self, n: u64, direction: Direction) -> (u64, Option<Cut>) {
        let index = usize::from(direction == Direction::Downstream);
        let before = self.moved[index].fetch_add(n, Ordering::SeqCst);
        let mut plan = self.faults.plan();
        if let Some(p) = &mut plan.partition {
            let before_all = p.moved;
            if p.direction == direction {
                p.moved += n;
            }
            if before_all > p.after || (p.direction == direction && p.moved > p.after) {
                self.cut_once.store(true, Ordering::SeqCst);
                return (p.after.saturating_sub(before_all).min(n), Some(p.cut));
            }
        }
        let crosses =
            plan.direction == direction && before <= plan.after && before + n > plan.after;
        // Once per connection, and only while the plan has cuts left to give.
        if plan.cuts == 0 || !crosses || self.cut_once.swap(true, Ordering::SeqCst) {
            return (n, None);
        }
        plan.cuts -= 1;
        (plan.after - before, Some(plan.cut))
    }
}

/// Where the name of a `Range` header starts in the request head at the start of `chunk`.
fn range_header(chunk: &[u8]) -> Option<usize> {
    let head = &chunk[..find(chunk, b"\r\n\r\n").unwrap_or(chunk.len())];
    let lower = head.to_ascii_lowercase();
    find(&lower, b"\r\nrange:").map(|i| i + 2)
}

/// Whether `chunk` starts with an HTTP/1.x request line.
fn starts_request(chunk: &[u8]) -> bool {
    let line = &chunk[..find(chunk, b"\r\n").unwrap_or(chunk.len())];
    let methods: [&[u8]; 6] = [b"GET ", b"PUT ", b"HEAD ", b"POST ", b"DELETE ", b"PATCH "];
    methods.iter().any(|m| line.starts_with(m)) && find(line, b" HTTP/1.").is_some()
}

/// Reads a request head (through its blank line), and whatever else came with it.
async fn read_head(client: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::new();
    let mut buf = [0u8; 8192];
    while find(&head, b"\r\n\r\n").is_none() && head.len() < MAX_HEAD {
        let n = client.read(&mut buf).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        head.extend_from_slice(&buf[..n]);
    }
    Ok(head)
}

/// Answers 503 and closes, having read the request's body first when its length is known
/// and the client is not waiting for `100 Continue` (an unread body would turn the close
/// into a reset that can swallow the answer).
async fn refuse(mut client: TcpStream, head: &[u8]) {
    let end = find(head, b"\r\n\r\n").map_or(head.len(), |i| i + 4);
    let text = String::from_utf8_lossy(&head[..end]).to_ascii_lowercase();
    let header = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.trim_start().strip_prefix(':'))
            .map(str::trim)
    };
    let waits_for_continue = header("expect").is_some_and(|v| v == "100-continue");
    let length: u64 = header("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut left = length.saturating_sub((head.len() - end) as u64);
    if !waits_for_continue && left > 0 {
        let mut buf = vec![0u8; 64 * 1024];
        let drain = async {
            while left > 0 {
                match client.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => left = left.saturating_sub(n as u64),
                }
            }
        };
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, drain).await;
    }
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/xml\r\n\
         Content-Length: {}\r\nRetry-After: 0\r\nConnection: close\r\n\r\n{UNAVAILABLE}",
        UNAVAILABLE.len()
    );
    if client.write_all(answer.as_bytes()).await.is_ok() {
        let _ = client.shutdown().await;
        // Reads until the client closes, so that nothing unread resets the connection.
        let mut sink = [0u8; 8192];
        let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
            while matches!(client.read(&mut sink).await, Ok(n) if n > 0) {}
        })
        .await;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::http::request;

    /// A one-shot HTTP server that answers every request with `ok` plus `size` bytes.
    async fn upstream(size: usize) -> (SocketAddr, JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    if read_head(&mut s).await.is_err() {
                        return;
                    }
                    let body = vec![b'x'; size];
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n"
                    );
                    let _ = s.write_all(head.as_bytes()).await;
                    let _ = s.write_all(&body).await;
                    let _ = s.shutdown().await;
                });
            }
        });
        (addr, task)
    }

    /// Runs the blocking harness client off the runtime.
    async fn get(url: String) -> Result<crate::harness::http::Response, String> {
        tokio::task::spawn_blocking(move || request("GET", &url, &[], b""))
            .await
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn answers_503_to_the_next_n_requests_then_passes_through() {
        let (addr, server) = upstream(3).await;
        let proxy = FaultProxy::start(&addr.to_string()).await.unwrap();
        proxy.answer_503(2);
        let mut statuses = Vec::new();
        for _ in 0..3 {
            statuses.push(get(format!("{}/x", proxy.url())).await.unwrap().status);
        }
        assert_eq!(statuses, [503, 503, 200]);
        assert_eq!(proxy.injected().unavailable, 2);
        server.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn resets_a_download_after_the_given_bytes() {
        let (addr, server) = upstream(1 << 20).await;
        let proxy = FaultProxy::start(&addr.to_string()).await.unwrap();
        proxy.cut(Cut::Reset, 1, 1000, Direction::Downstream);
        let cut = get(format!("{}/x", proxy.url())).await;
        assert!(cut.is_err(), "a cut download came back whole");
        let whole = get(format!("{}/x", proxy.url())).await.unwrap();
        assert_eq!(whole.body.len(), 1 << 20);
        assert_eq!(proxy.injected().reset, 1);
        server.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_partition_cuts_every_connection_after_the_given_bytes() {
        let (addr, server) = upstream(1 << 20).await;
        let proxy = FaultProxy::start(&addr.to_string()).await.unwrap();
        proxy.partition_after(Cut::Reset, 1000, Direction::Downstream);
        assert!(get(format!("{}/x", proxy.url())).await.is_err());
        assert!(get(format!("{}/x", proxy.url())).await.is_err());
        assert_eq!(proxy.injected().reset, 2);
        proxy.pass_through();
        let whole = get(format!("{}/x", proxy.url())).await.unwrap();
        assert_eq!(whole.body.len(), 1 << 20);
        server.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_trickled_connection_sends_a_byte_a_second() {
        let (addr, server) = upstream(3).await;
        let proxy = FaultProxy::start(&addr.to_string()).await.unwrap();
        proxy.cut(Cut::Trickle, 1, 0, Direction::Downstream);
        let url = format!("{}/x", proxy.url());
        let trickled = tokio::task::spawn_blocking(move || request("GET", &url, &[], b""));
        tokio::time::sleep(TRICKLE_EVERY * 5 / 2).await;
        assert!(!trickled.is_finished(), "a trickled answer came at once");
        let (_, down) = proxy.carried();
        assert!((1..=3).contains(&down), "{down} bytes came down in 2.5 s");
        assert_eq!(proxy.injected().trickled, 1);
        drop(proxy);
        let _ = tokio::time::timeout(Duration::from_secs(10), trickled).await;
        server.abort();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stalled_connection_is_never_answered_and_dropping_the_proxy_ends_it() {
        let (addr, server) = upstream(3).await;
        let proxy = FaultProxy::start(&addr.to_string()).await.unwrap();
        proxy.cut(Cut::Stall, 1, 0, Direction::Upstream);
        let url = format!("{}/x", proxy.url());
        let stalled = tokio::task::spawn_blocking(move || request("GET", &url, &[], b""));
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!stalled.is_finished(), "a stalled request was answered");
        assert_eq!(proxy.injected().stalled, 1);
        drop(proxy);
        let ended = tokio::time::timeout(Duration::from_secs(10), stalled).await;
        assert!(
            matches!(ended, Ok(Ok(Err(_)))),
            "the request did not end with an error once the proxy was gone: {ended:?}"
        );
        server.abort();
    }
}
