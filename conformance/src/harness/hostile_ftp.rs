//! A misbehaving FTP server on 127.0.0.1, the FTP counterpart of [`super::HostileHttp`]: it
//! logs anyone in (USER, PASS), takes TYPE and PASV, answers MLST as if every path were a
//! folder (a path under `.blocks` is missing, so a get finds no package and lists the
//! folder), and answers MLSD with what the test chose: a whole listing, an endless one, or
//! one sent a byte at a time. Everything else is refused (502). It records every command.
//! Plain std::net: one thread per control connection, every loop bounded (commands per
//! connection, bytes per endless listing, bytes per trickle, the wait for a passive data
//! connection), everything stopped when the value is dropped.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::hostile_listener::HostileListener;

/// Commands one control connection serves before it is closed.
const COMMANDS_PER_CONNECTION: usize = 10_000;
/// Bytes an endless listing sends at most (the client must give up long before).
const ENDLESS_MAX: u64 = 8 << 30;
/// Longest command line read.
const LINE_MAX: u64 = 4096;
/// How long a passive listener waits for the client's data connection.
const DATA_WAIT: Duration = Duration::from_secs(10);

/// What MLSD sends on its data connection.
#[derive(Debug, Clone)]
pub enum Listing {
    /// These bytes, then the end of the data connection and `226`.
    Full(Vec<u8>),
    /// `chunk` again and again (up to `ENDLESS_MAX`), without end.
    Endless(Vec<u8>),
    /// These bytes, one every `every`.
    Trickle { body: Vec<u8>, every: Duration },
}

impl Listing {
    /// MLSD lines (`type=...; name`) for `(name, is_folder)` entries.
    pub fn of(entries: &[(&str, bool)]) -> Listing {
        let mut text = String::new();
        for (name, folder) in entries {
            let kind = if *folder { "dir" } else { "file" };
            text.push_str(&format!(
                "type={kind};size=5;modify=20261130121342;unique=1; {name}\r\n"
            ));
        }
        Listing::Full(text.into_bytes())
    }

    /// An endless listing of valid-looking file lines.
    pub fn endless() -> Listing {
        let line = "type=file;size=5;modify=20261130121342;unique=1; f.txt\r\n";
        Listing::Endless(line.repeat(64 * 1024 / line.len()).into_bytes())
    }

    /// `entries` as [`Listing::of`] gives them, a byte a second.
    pub fn trickle(entries: &[(&str, bool)]) -> Listing {
        let Listing::Full(body) = Listing::of(entries) else {
            unreachable!("Listing::of gives a whole listing")
        };
        Listing::Trickle {
            body,
            every: Duration::from_secs(1),
        }
    }
}

/// A running hostile FTP server; stopped (its threads end) when dropped.
pub struct HostileFtp {
    /// Records every command line read.
    server: HostileListener<String>,
}

impl HostileFtp {
    /// Listens on a free port of 127.0.0.1 and answers every MLSD with `listing`.
    pub fn start(listing: Listing) -> Result<HostileFtp, String> {
        let server = HostileListener::start("hostile ftp", move |conn, stop, seen| {
            serve(conn, stop, seen, &listing)
        })?;
        Ok(HostileFtp { server })
    }

    /// `ftp://127.0.0.1:PORT/path` (`path` starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("ftp://{}{path}", self.server.addr)
    }

    /// Every command line read so far (a PASS line shows as `PASS`).
    pub fn commands(&self) -> Vec<String> {
        self.server.seen()
    }
}

/// Serves one control connection until the client closes it or the server stops.
fn serve(conn: TcpStream, stop: &AtomicBool, seen: &Mutex<Vec<String>>, listing: &Listing) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let _ = conn.set_write_timeout(Some(Duration::from_secs(30)));
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    let mut passive: Option<TcpListener> = None;
    if out.write_all(b"220 hostile ready\r\n").is_err() {
        return;
    }
    for _ in 0..COMMANDS_PER_CONNECTION {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let mut line = Vec::new();
        match reader.by_ref().take(LINE_MAX).read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&line).trim_end().to_string();
        let (verb, arg) = line.split_once(' ').unwrap_or((line.as_str(), ""));
        let verb = verb.to_ascii_uppercase();
        seen.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(if verb == "PASS" {
                verb.clone()
            } else {
                line.clone()
            });
        let reply = match verb.as_str() {
            "USER" => "331 password please\r\n".to_string(),
            "PASS" => "230 logged in\r\n".to_string(),
            "TYPE" => "200 binary it is\r\n".to_string(),
            "MLST" if arg.contains(".blocks") => "550 no such file\r\n".to_string(),
            "MLST" => format!(
                "250-facts\r\n type=dir;modify=20261130121342;unique=1; {arg}\r\n250 end\r\n"
            ),
            "PASV" => match TcpListener::bind("127.0.0.1:0") {
                Ok(l) => {
                    let port = l.local_addr().map(|a| a.port()).unwrap_or(0);
                    passive = Some(l);
                    format!(
                        "227 Entering Passive Mode (127,0,0,1,{},{})\r\n",
                        port / 256,
                        port % 256
                    )
                }
                Err(_) => "425 no passive port\r\n".to_string(),
            },
            "MLSD" => {
                let Some(data) = passive.take().and_then(|l| accept_data(&l, stop)) else {
                    let _ = out.write_all(b"425 no data connection\r\n");
                    continue;
                };
                if out.write_all(b"150 here it comes\r\n").is_err() {
                    return;
                }
                if !send(data, listing, stop) {
                    // The client went away mid-listing: this connection is done too.
                    return;
                }
                "226 listing sent\r\n".to_string()
            }
            "QUIT" => {
                let _ = out.write_all(b"221 bye\r\n");
                return;
            }
            _ => "502 not here\r\n".to_string(),
        };
        if out.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

/// The client's data connection to `listener`, within [`DATA_WAIT`].
fn accept_data(listener: &TcpListener, stop: &AtomicBool) -> Option<TcpStream> {
    listener.set_nonblocking(true).ok()?;
    let started = Instant::now();
    while started.elapsed() < DATA_WAIT && !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((data, _)) => {
                data.set_nonblocking(false).ok()?;
                let _ = data.set_write_timeout(Some(Duration::from_secs(30)));
                return Some(data);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(_) => return None,
        }
    }
    None
}

/// Sends `listing` on `data` and closes it; false when the client went away first.
fn send(mut data: TcpStream, listing: &Listing, stop: &AtomicBool) -> bool {
    match listing {
        Listing::Full(body) => data.write_all(body).is_ok(),
        Listing::Endless(chunk) => {
            let mut sent = 0u64;
            while sent < ENDLESS_MAX && !chunk.is_empty() && !stop.load(Ordering::Relaxed) {
                if data.write_all(chunk).is_err() {
                    return false;
                }
                sent += chunk.len() as u64;
            }
            true
        }
        Listing::Trickle { body, every } => {
            for byte in body {
                if stop.load(Ordering::Relaxed) || data.write_all(&[*byte]).is_err() {
                    return false;
                }
                let _ = data.flush();
                std::thread::sleep(*every);
            }
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads one reply line from `r`.
    fn reply(r: &mut BufReader<TcpStream>) -> String {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        line
    }

    #[test]
    fn it_logs_in_lists_records_and_stops() {
        let server = HostileFtp::start(Listing::of(&[("a", true), ("b.txt", false)])).unwrap();
        let control = TcpStream::connect(server.server.addr).unwrap();
        control
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut out = control.try_clone().unwrap();
        let mut r = BufReader::new(control);
        assert!(reply(&mut r).starts_with("220"));
        out.write_all(b"USER u\r\n").unwrap();
        assert!(reply(&mut r).starts_with("331"));
        out.write_all(b"PASS p\r\n").unwrap();
        assert!(reply(&mut r).starts_with("230"));
        out.write_all(b"PASV\r\n").unwrap();
        let pasv = reply(&mut r);
        let nums: Vec<u16> = pasv
            .split(['(', ')'])
            .nth(1)
            .unwrap()
            .split(',')
            .map(|n| n.trim().parse().unwrap())
            .collect();
        let mut data = TcpStream::connect(("127.0.0.1", nums[4] * 256 + nums[5])).unwrap();
        out.write_all(b"MLSD /x\r\n").unwrap();
        assert!(reply(&mut r).starts_with("150"));
        let mut listing = String::new();
        data.read_to_string(&mut listing).unwrap();
        assert!(listing.contains("type=dir;") && listing.contains("; b.txt\r\n"));
        assert!(reply(&mut r).starts_with("226"));
        let commands = server.commands();
        assert_eq!(commands, ["USER u", "PASS", "PASV", "MLSD /x"]);
        let addr = server.server.addr;
        drop(server);
        assert!(TcpStream::connect(addr).is_err());
    }
}
