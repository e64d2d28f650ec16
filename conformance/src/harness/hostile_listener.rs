//! What the hostile servers of our own share ([`super::HostileHttp`], [`super::HostileFtp`]):
//! a listener on a free port of 127.0.0.1, a thread per connection, a record of what the
//! clients sent, and a stop that wakes the accept loop when the server is dropped.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// A running listener whose connections `serve` answers, each on a thread of its own, and
/// the `T`s they recorded; stopped (its threads end) when dropped.
pub(super) struct HostileListener<T> {
    pub(super) addr: SocketAddr,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<T>>>,
    accept: Option<JoinHandle<()>>,
}

impl<T: Clone + Send + 'static> HostileListener<T> {
    /// Listens on a free port of 127.0.0.1; `serve(conn, stop, seen)` answers one connection
    /// until the client closes it or `stop` is set, recording into `seen`. `what` names the
    /// server in errors.
    pub(super) fn start(
        what: &str,
        serve: impl Fn(TcpStream, &AtomicBool, &Mutex<Vec<T>>) + Send + Sync + 'static,
    ) -> Result<Self, String> {
        let listener =
            TcpListener::bind("127.0.0.1:0").map_err(|e| format!("{what}: bind: {e}"))?;
        let addr = listener
            .local_addr()
            .map_err(|e| format!("{what}: local_addr: {e}"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let serve = Arc::new(serve);
        let accept = {
            let (stop, seen) = (stop.clone(), seen.clone());
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let (stop, seen, serve) = (stop.clone(), seen.clone(), serve.clone());
                    std::thread::spawn(move || serve(conn, &stop, &seen));
                }
            })
        };
        Ok(HostileListener {
            addr,
            stop,
            seen,
            accept: Some(accept),
        })
    }

    /// Everything recorded so far.
    pub(super) fn seen(&self) -> Vec<T> {
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl<T> Drop for HostileListener<T> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}
