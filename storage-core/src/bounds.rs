//! Bounds on what servers send: a server never decides how long we wait or how much memory
//! we use. Every read of a body is bounded before it is buffered, by the length the protocol
//! or a manifest declares ([`read_exact_len`]) or by a named cap ([`read_capped`]); every
//! request has a deadline ([`with_deadline`]); folder walks stop at [`WALK_MAX_DEPTH`] and
//! [`WALK_MAX_ENTRIES`]. Going past a cap is an integrity error (exit 5) naming the object
//! and the cap; a deadline passed is an error whose text says it "timed out".

use std::fmt;
use std::future::Future;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};

use crate::{Error, Result};

/// A named limit on the bytes read from one answer with no declared length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cap {
    /// The constant's name, as errors and the docs show it.
    pub name: &'static str,
    /// The most bytes allowed.
    pub bytes: u64,
}

impl Cap {
    /// A cap of `bytes` that errors name `name`.
    pub const fn new(name: &'static str, bytes: u64) -> Self {
        Cap { name, bytes }
    }

    /// Options for a get that carry this cap to the store: a store that must buffer a body
    /// sent without a length (plain HTTP) buffers no more than this, and names it.
    pub fn get_options(self) -> object_store::GetOptions {
        let mut options = object_store::GetOptions::default();
        options.extensions.insert(self);
        options
    }

    /// The cap a get's `options` carry, when it is below `otherwise`; else `otherwise`.
    pub fn carried(options: &object_store::GetOptions, otherwise: Cap) -> Cap {
        match options.extensions.get::<Cap>() {
            Some(cap) if cap.bytes < otherwise.bytes => *cap,
            _ => otherwise,
        }
    }

    /// The integrity error for `what` having gone past this cap.
    pub fn exceeded(&self, what: &str) -> Error {
        Error::Integrity(format!(
            "{what} is larger than {} bytes (the cap {})",
            self.bytes, self.name
        ))
    }
}

impl fmt::Display for Cap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({} bytes)", self.name, self.bytes)
    }
}

/// A package's HEAD record: a few hundred bytes of JSON; anything past 64 KiB is not one.
pub const HEAD_MAX: Cap = Cap::new("HEAD_MAX", 64 << 10);
/// A manifest's `.minisig` signature: a few hundred bytes of text.
pub const SIGNATURE_MAX: Cap = Cap::new("SIGNATURE_MAX", 16 << 10);
/// One page of an HTTP folder listing (an autoindex page): about a hundred thousand entries.
pub const LISTING_PAGE_MAX: Cap = Cap::new("LISTING_PAGE_MAX", 16 << 20);
/// One WebDAV PROPFIND answer (one folder, depth 1): some thirty thousand entries.
pub const PROPFIND_MAX: Cap = Cap::new("PROPFIND_MAX", 16 << 20);
/// One FTP folder listing (an MLSD answer, one folder): some hundred thousand entries.
pub const FTP_LISTING_MAX: Cap = Cap::new("FTP_LISTING_MAX", 16 << 20);
/// A package manifest as stored (compressed): enough for trees of about half a million
/// files (a sha256 digest alone compresses to no less than 32 bytes).
pub const MANIFEST_COMPRESSED_MAX: Cap = Cap::new("MANIFEST_COMPRESSED_MAX", 16 << 20);
/// A package manifest once decompressed: decompression stops here.
pub const MANIFEST_MAX: Cap = Cap::new("MANIFEST_MAX", 256 << 20);
/// How many times its stored size a compressed manifest may unpack to, past
/// [`MANIFEST_UNPACKED_FREE`]: paths and sha256 digests compress a few times over, not a
/// hundred, so a few KiB that unpack to a GiB are refused after a few MiB, not at
/// [`MANIFEST_MAX`].
pub const MANIFEST_RATIO_MAX: u64 = 256;
/// What any compressed manifest may unpack to, whatever its ratio (some eighty thousand files).
pub const MANIFEST_UNPACKED_FREE: u64 = 16 << 20;

/// What a compressed manifest of `stored` bytes may unpack to: [`MANIFEST_RATIO_MAX`] times
/// its size, at least [`MANIFEST_UNPACKED_FREE`], at most [`MANIFEST_MAX`].
pub fn manifest_unpacked_max(stored: u64) -> u64 {
    stored
        .saturating_mul(MANIFEST_RATIO_MAX)
        .clamp(MANIFEST_UNPACKED_FREE, MANIFEST_MAX.bytes)
}
/// An OCI image manifest from a registry (the distribution registry itself refuses larger
/// ones).
pub const REGISTRY_MANIFEST_MAX: Cap = Cap::new("REGISTRY_MANIFEST_MAX", 4 << 20);
/// One page of a registry's tag list (a thousand tags of at most 128 characters each).
pub const REGISTRY_TAG_LIST_MAX: Cap = Cap::new("REGISTRY_TAG_LIST_MAX", 1 << 20);
/// A registry token service's answer: a token (a few KiB of JWT) and its lifetime.
pub const REGISTRY_TOKEN_MAX: Cap = Cap::new("REGISTRY_TOKEN_MAX", 1 << 20);
/// A download whose server sent no length, buffered whole to learn its size (HTTP).
pub const UNSIZED_BODY_MAX: Cap = Cap::new("UNSIZED_BODY_MAX", 64 << 20);
/// A registry blob read without its descriptor's size at hand: a frame (a few MiB) or a
/// package manifest (see [`MANIFEST_COMPRESSED_MAX`]).
pub const REGISTRY_BLOB_MAX: Cap = Cap::new("REGISTRY_BLOB_MAX", 16 << 20);
/// An error body or any other small answer read only to be shown or parsed.
pub const SMALL_ANSWER_MAX: Cap = Cap::new("SMALL_ANSWER_MAX", 64 << 10);

/// Folders a walk may descend below where it started.
pub const WALK_MAX_DEPTH: usize = 128;
/// Entries (files and folders) one walk may meet before it stops: far more than a flow
/// project holds, few enough that the listing stays some tens of MiB.
pub const WALK_MAX_ENTRIES: usize = 200_000;

/// A block's `timeout` when it sets none: how long one request may take, first byte to last.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// The slowest transfer a download of declared length may run at: a body of `n` bytes may
/// take [`transfer_deadline`]`(timeout, n)` = `timeout + n / MIN_TRANSFER_RATE` seconds.
pub const MIN_TRANSFER_RATE: u64 = 1 << 20;

/// How long a request whose body declares `len` bytes may take, first byte to last: the
/// block's `timeout`, plus a second per [`MIN_TRANSFER_RATE`] bytes so that large files on
/// slow links still arrive, while a trickle of a small body fails like silence.
pub fn transfer_deadline(timeout: Duration, len: u64) -> Duration {
    timeout + Duration::from_secs(len / MIN_TRANSFER_RATE)
}

/// Counts bytes of one answer as they arrive and refuses the chunk that goes past a limit.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    cap: Cap,
    seen: u64,
}

impl Budget {
    /// A budget with nothing counted yet.
    pub fn new(cap: Cap) -> Self {
        Budget { cap, seen: 0 }
    }

    /// Counts `n` more bytes of `what`; an integrity error once past the cap.
    pub fn take(&mut self, n: usize, what: &str) -> Result<()> {
        self.seen = self.seen.saturating_add(n as u64);
        if self.seen > self.cap.bytes {
            return Err(self.cap.exceeded(what));
        }
        Ok(())
    }

    /// Bytes counted so far.
    pub fn seen(&self) -> u64 {
        self.seen
    }
}

/// Reads `stream` whole, refusing it (integrity error naming `what` and `cap`) as soon as it
/// holds more than `cap` bytes: at most `cap` bytes plus one chunk are ever buffered.
pub async fn read_capped<S, E>(stream: S, cap: Cap, what: &str) -> Result<Bytes>
where
    S: Stream<Item = std::result::Result<Bytes, E>>,
    E: Into<Error>,
{
    let mut stream = std::pin::pin!(stream);
    let mut budget = Budget::new(cap);
    let mut parts = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(Into::into)?;
        budget.take(chunk.len(), what)?;
        parts.push(chunk);
    }
    Ok(joined(parts))
}

/// The chunks of one body as one: the chunk itself when there is one, else one copy. Held
/// as chunks until then, a body refused at its cap never cost more than the cap.
pub fn joined(mut parts: Vec<Bytes>) -> Bytes {
    match parts.len() {
        0 => Bytes::new(),
        1 => parts.pop().expect("one part"),
        _ => {
            let mut out = BytesMut::with_capacity(parts.iter().map(Bytes::len).sum());
            for part in parts {
                out.extend_from_slice(&part);
            }
            out.freeze()
        }
    }
}

/// Reads `stream`, which must hold exactly `declared` bytes (a frame's manifest length, a
/// blob's descriptor size): more is an integrity error as soon as the extra byte arrives,
/// fewer is an integrity error at the end. Nothing past `declared` is ever buffered.
pub async fn read_exact_len<S, E>(stream: S, declared: u64, what: &str) -> Result<Bytes>
where
    S: Stream<Item = std::result::Result<Bytes, E>>,
    E: Into<Error>,
{
    let mut stream = std::pin::pin!(stream);
    // The declared length is the server's or a manifest's: reserve only what has arrived.
    let mut out = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(Into::into)?;
        if out.len() as u64 + chunk.len() as u64 > declared {
            return Err(Error::Integrity(format!(
                "{what} is longer than the {declared} bytes declared for it"
            )));
        }
        out.extend_from_slice(&chunk);
    }
    if (out.len() as u64) < declared {
        return Err(Error::Integrity(format!(
            "{what} ended after {} of the {declared} bytes declared for it",
            out.len()
        )));
    }
    Ok(out.freeze())
}

/// Runs `fut` (a whole request: sending, waiting, reading the body) within `timeout`; once
/// it has passed, the request is dropped and the error says `what` timed out.
pub async fn with_deadline<T, F>(fut: F, timeout: Duration, what: &str) -> Result<T>
where
    F: Future<Output = Result<T>>,
{
    match tokio::time::timeout(timeout, fut).await {
        Ok(result) => result,
        Err(_) => Err(timed_out(what, timeout)),
    }
}

/// The error for `what` not finished within `timeout`: temporary, of kind `TimedOut`.
pub fn timed_out(what: &str, timeout: Duration) -> Error {
    Error::temporary(
        format!(
            "{what} timed out after {} (the block's timeout bounds a whole request)",
            humantime::format_duration(timeout)
        ),
        Some(std::io::ErrorKind::TimedOut),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::stream;

    fn chunks(parts: &[&'static [u8]]) -> impl Stream<Item = Result<Bytes>> + use<> {
        stream::iter(
            parts
                .iter()
                .map(|p| Ok(Bytes::from_static(p)))
                .collect::<Vec<_>>(),
        )
    }

    #[tokio::test]
    async fn a_capped_read_keeps_what_fits_and_refuses_what_does_not() {
        let cap = Cap::new("TEST_MAX", 4);
        let got = read_capped(chunks(&[b"ab", b"cd"]), cap, "page")
            .await
            .unwrap();
        assert_eq!(&got[..], b"abcd");
        let err = read_capped(chunks(&[b"ab", b"cde"]), cap, "page of x")
            .await
            .unwrap_err();
        assert_eq!(err.exit_code(), 5);
        assert_eq!(
            err.to_string(),
            "page of x is larger than 4 bytes (the cap TEST_MAX)"
        );
    }

    #[tokio::test]
    async fn an_endless_body_is_refused_at_its_cap() {
        let endless = stream::repeat_with(|| Ok::<_, Error>(Bytes::from(vec![0u8; 1 << 16])));
        let err = read_capped(endless, Cap::new("T", 1 << 20), "endless")
            .await
            .unwrap_err();
        assert_eq!(err.exit_code(), 5, "{err}");
    }

    #[tokio::test]
    async fn an_exact_read_refuses_more_and_less_than_declared() {
        let got = read_exact_len(chunks(&[b"ab", b"c"]), 3, "frame")
            .await
            .unwrap();
        assert_eq!(&got[..], b"abc");
        let long = read_exact_len(chunks(&[b"ab", b"cd"]), 3, "frame 1")
            .await
            .unwrap_err();
        assert_eq!(long.exit_code(), 5);
        assert!(
            long.to_string().contains("longer than the 3 bytes"),
            "{long}"
        );
        let short = read_exact_len(chunks(&[b"ab"]), 3, "frame 1")
            .await
            .unwrap_err();
        assert_eq!(short.exit_code(), 5);
        assert!(short.to_string().contains("ended after 2"), "{short}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_past_its_deadline_times_out() {
        let slow = async {
            tokio::time::sleep(Duration::from_secs(10)).await;
            Ok(())
        };
        let err = with_deadline(slow, Duration::from_secs(3), "GET x")
            .await
            .unwrap_err();
        assert_eq!(err.exit_code(), 1);
        assert!(
            err.to_string().starts_with("GET x timed out after 3s"),
            "{err}"
        );
        let quick = with_deadline(async { Ok(7) }, Duration::from_secs(3), "GET y");
        assert_eq!(quick.await.unwrap(), 7);
    }

    #[test]
    fn large_declared_bodies_get_more_time() {
        let t = Duration::from_secs(3);
        assert_eq!(transfer_deadline(t, 100), t);
        assert_eq!(
            transfer_deadline(t, 10 * MIN_TRANSFER_RATE),
            Duration::from_secs(13)
        );
    }
}
