//! A misbehaving HTTP server on 127.0.0.1, for proving that a server never decides how long
//! a get waits or how much memory it uses: each request is answered by a test's handler with
//! a whole body, an endless one, or a trickle of one byte at a time. It stands in for a web
//! folder (autoindex pages), a WebDAV server (PROPFIND answers) and an OCI registry, and
//! records every request (method, path, whether it carried credentials), so a test can check
//! what reached it. Plain std::net: one thread per connection, every loop bounded (requests
//! per connection, bytes per endless body, bytes per trickle), everything stopped when the
//! value is dropped.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use super::hostile_listener::HostileListener;

/// Requests one connection serves before it is closed.
const REQUESTS_PER_CONNECTION: usize = 10_000;
/// Bytes an endless body sends at most (the client must give up long before).
const ENDLESS_MAX: u64 = 8 << 30;
/// Longest request head read.
const HEAD_MAX: usize = 64 * 1024;
/// Longest request body read (PROPFIND bodies, small PUTs).
const BODY_MAX: usize = 1 << 20;

/// One request as the server read it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    /// The path and query, as sent.
    pub path: String,
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// How a request is answered.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A whole body with its length.
    Full {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// A body that never ends (up to `ENDLESS_MAX`, 8 GiB): `chunk` again and again, with no
    /// length (the connection closes after it) or a lying `declared` one.
    Endless {
        status: u16,
        headers: Vec<(String, String)>,
        chunk: Vec<u8>,
        declared: Option<u64>,
    },
    /// `body` one byte every `every`, with its true length declared.
    Trickle {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        every: Duration,
    },
}

impl Reply {
    pub fn ok(content_type: &str, body: impl Into<Vec<u8>>) -> Reply {
        Reply::Full {
            status: 200,
            headers: vec![("Content-Type".into(), content_type.into())],
            body: body.into(),
        }
    }

    pub fn status(status: u16) -> Reply {
        Reply::Full {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn not_found() -> Reply {
        Reply::status(404)
    }

    pub fn redirect(to: &str) -> Reply {
        Reply::Full {
            status: 302,
            headers: vec![("Location".into(), to.into())],
            body: Vec::new(),
        }
    }

    /// An endless body of `chunk`s with no length.
    pub fn endless(status: u16, content_type: &str, chunk: &[u8]) -> Reply {
        Reply::Endless {
            status,
            headers: vec![("Content-Type".into(), content_type.into())],
            chunk: chunk.to_vec(),
            declared: None,
        }
    }

    /// `body` a byte a second.
    pub fn trickle(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Reply {
        Reply::Trickle {
            status,
            headers: vec![("Content-Type".into(), content_type.into())],
            body: body.into(),
            every: Duration::from_secs(1),
        }
    }
}

type Handler = dyn Fn(&Request) -> Reply + Send + Sync;

/// A running hostile server; stopped (its threads end) when dropped.
pub struct HostileHttp {
    /// Records every request read.
    server: HostileListener<Request>,
}

impl HostileHttp {
    /// Listens on a free port of 127.0.0.1 and answers every request with `handler`.
    pub fn start(
        handler: impl Fn(&Request) -> Reply + Send + Sync + 'static,
    ) -> Result<HostileHttp, String> {
        let server = HostileListener::start("hostile http", move |conn, stop, seen| {
            serve(conn, stop, seen, &handler)
        })?;
        Ok(HostileHttp { server })
    }

    /// `host:port`.
    pub fn host(&self) -> String {
        self.server.addr.to_string()
    }

    /// `http://127.0.0.1:PORT/path` (`path` starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.server.addr)
    }

    /// Every request read so far.
    pub fn requests(&self) -> Vec<Request> {
        self.server.seen()
    }
}

/// Serves one connection until the client closes it, a reply ends it, or the server stops.
fn serve(conn: TcpStream, stop: &AtomicBool, seen: &Mutex<Vec<Request>>, handler: &Handler) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let _ = conn.set_write_timeout(Some(Duration::from_secs(30)));
    let Ok(writer) = conn.try_clone() else { return };
    let mut reader = BufReader::new(conn);
    let mut writer = writer;
    for _ in 0..REQUESTS_PER_CONNECTION {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let Some(request) = read_request(&mut reader) else {
            return;
        };
        seen.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(request.clone());
        let head_only = request.method == "HEAD";
        if !answer(&mut writer, handler(&request), head_only, stop) {
            return;
        }
    }
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut head = Vec::new();
    loop {
        let mut line = Vec::new();
        let n = reader
            .by_ref()
            .take(HEAD_MAX as u64)
            .read_until(b'\n', &mut line)
            .ok()?;
        if n == 0 || head.len() > HEAD_MAX {
            return None;
        }
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        head.push(String::from_utf8_lossy(&line).trim_end().to_string());
    }
    let mut first = head.first()?.split(' ');
    let method = first.next()?.to_string();
    let path = first.next()?.to_string();
    let headers: Vec<(String, String)> = head[1..]
        .iter()
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length.min(BODY_MAX)];
    reader.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        path,
        headers,
    })
}

/// Writes `reply`; false when the connection must close.
fn answer(out: &mut TcpStream, reply: Reply, head_only: bool, stop: &AtomicBool) -> bool {
    let head = |status: u16, headers: &[(String, String)], length: Option<u64>| {
        let mut h = format!("HTTP/1.1 {status} {}\r\n", reason(status));
        for (n, v) in headers {
            h.push_str(&format!("{n}: {v}\r\n"));
        }
        match length {
            Some(l) => h.push_str(&format!("Content-Length: {l}\r\n")),
            None => h.push_str("Connection: close\r\n"),
        }
        h.push_str("\r\n");
        h.into_bytes()
    };
    match reply {
        Reply::Full {
            status,
            headers,
            body,
        } => {
            let mut bytes = head(status, &headers, Some(body.len() as u64));
            if !head_only {
                bytes.extend_from_slice(&body);
            }
            out.write_all(&bytes).is_ok()
        }
        Reply::Endless {
            status,
            headers,
            chunk,
            declared,
        } => {
            if out.write_all(&head(status, &headers, declared)).is_err() || head_only {
                return declared.is_some();
            }
            let mut sent = 0u64;
            while sent < ENDLESS_MAX && !chunk.is_empty() && !stop.load(Ordering::Relaxed) {
                if out.write_all(&chunk).is_err() {
                    break;
                }
                sent += chunk.len() as u64;
            }
            false
        }
        Reply::Trickle {
            status,
            headers,
            body,
            every,
        } => {
            if out
                .write_all(&head(status, &headers, Some(body.len() as u64)))
                .is_err()
            {
                return false;
            }
            if head_only {
                return true;
            }
            for byte in &body {
                if stop.load(Ordering::Relaxed) || out.write_all(&[*byte]).is_err() {
                    return false;
                }
                let _ = out.flush();
                std::thread::sleep(every);
            }
            true
        }
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        207 => "Multi-Status",
        302 => "Found",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Whatever",
    }
}

/// An autoindex page linking `names` (folders end in `/`), as python's http.server writes.
pub fn autoindex(names: &[&str]) -> Vec<u8> {
    let mut page = String::from("<!DOCTYPE HTML>\n<html><body><ul>\n");
    for n in names {
        page.push_str(&format!("<li><a href=\"{n}\">{n}</a></li>\n"));
    }
    page.push_str("</ul></body></html>\n");
    page.into_bytes()
}

/// A WebDAV multistatus answer: `(href, is_folder)` for each response.
pub fn multistatus(entries: &[(&str, bool)]) -> Vec<u8> {
    let mut xml = String::from(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<D:multistatus xmlns:D=\"DAV:\">",
    );
    for (href, folder) in entries {
        let kind = if *folder {
            "<D:resourcetype><D:collection/></D:resourcetype>"
        } else {
            "<D:resourcetype/><D:getcontentlength>5</D:getcontentlength>"
        };
        xml.push_str(&format!(
            "<D:response><D:href>{href}</D:href><D:propstat><D:prop>{kind}\
             <D:getlastmodified>Mon, 30 Nov 2026 12:13:42 GMT</D:getlastmodified></D:prop>\
             <D:status>HTTP/1.1 200 OK</D:status></D:propstat></D:response>"
        ));
    }
    xml.push_str("</D:multistatus>\n");
    xml.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn it_answers_records_and_stops() {
        let server = HostileHttp::start(|r| match r.path.as_str() {
            "/a" => Reply::ok("text/plain", "hello"),
            _ => Reply::not_found(),
        })
        .unwrap();
        let got = crate::harness::http::request("GET", &server.url("/a"), &[], b"").unwrap();
        assert_eq!((got.status, got.text().as_str()), (200, "hello"));
        let missing = crate::harness::http::request("GET", &server.url("/b"), &[], b"").unwrap();
        assert_eq!(missing.status, 404);
        assert_eq!(server.requests().len(), 2);
        let addr = server.host();
        drop(server);
        // Nothing accepts any more (the listener is gone with its thread).
        assert!(TcpStream::connect(addr).is_err());
    }
}
