//! Conditional writes through the JSON API, sent by this crate itself.
//!
//! opendal's GCS service turns every conditional write (`if_not_exists`, `if_version_match`)
//! into a resumable upload. GCS enforces `ifGenerationMatch` there, but fake-gcs-server
//! 1.54 (the build on PyPI) ignores it on resumable and `uploadType=media` uploads and
//! enforces it only on `uploadType=multipart`. A HEAD record is a few hundred bytes, so one
//! multipart request is also the cheapest way to write it: so conditional writes go out as
//! `POST /upload/storage/v1/b/B/o?uploadType=multipart&ifGenerationMatch=G`, signed with the
//! block's own credentials, and the swap is checked by the server on both.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http::{Request, StatusCode, header};
use object_store::path::Path;
use object_store::{PutPayload, PutResult};

use crate::error::{Kind, from_status, generic, translate};
use opendal::{Buffer, HttpTransporter, Operator};
use reqsign_core::Signer;
use reqsign_google::Credential;
use storage_core::RetryPolicy;

/// How a conditional write that failed for a transient reason is tried again.
const RETRIES: RetryPolicy = RetryPolicy::CONDITIONAL_WRITE;
/// Bodies up to this size are compared with the stored object when a retried conditional
/// write meets a precondition failure (the first attempt may have been the one that won).
const RECONCILE_LIMIT: usize = 1 << 20;

#[derive(Clone)]
pub(crate) struct JsonApi {
    endpoint: String,
    bucket: String,
    http: HttpTransporter,
    signer: Option<Signer<Credential>>,
    /// Reads the object back when a retried write must be reconciled.
    op: Operator,
    /// Bound on one request, connection included.
    timeout: Duration,
}

/// What an attempt came to, where another try would not change it.
enum Settled {
    Done(PutResult),
    Precondition,
    Failed(object_store::Error),
}

/// A failure worth another try; `maybe_applied` when the server may have written the object.
#[derive(Debug)]
struct Retry {
    why: String,
    maybe_applied: bool,
}

impl JsonApi {
    pub(crate) fn new(
        endpoint: &str,
        bucket: &str,
        http: HttpTransporter,
        signer: Option<Signer<Credential>>,
        op: Operator,
        timeout: Duration,
    ) -> Self {
        JsonApi {
            endpoint: endpoint.to_string(),
            bucket: bucket.to_string(),
            http,
            signer,
            op,
            timeout,
        }
    }

    /// Writes `name` only if its live generation is `generation` (`"0"`: only if there is no
    /// live object). A lost race is `Error::Precondition`.
    pub(crate) async fn insert_if_generation(
        &self,
        location: &Path,
        name: &str,
        payload: PutPayload,
        generation: &str,
    ) -> object_store::Result<PutResult> {
        if generation.is_empty() || !generation.bytes().all(|b| b.is_ascii_digit()) {
            return Err(generic(format!("`{generation}` is not a GCS generation")));
        }
        let data: Bytes = Bytes::from(payload);
        let (content_type, body) = multipart_body(name, &data);
        let url = format!(
            "{}/upload/storage/v1/b/{}/o?uploadType=multipart&name={}&ifGenerationMatch={generation}",
            self.endpoint,
            encode(&self.bucket),
            encode(name),
        );
        let maybe_applied = AtomicBool::new(false);
        let settled = RETRIES
            .run(
                |_| self.attempt(location, &url, &content_type, body.clone()),
                |r: &Retry| {
                    // A try that failed may still have written: a later precondition
                    // failure is then checked against what is stored.
                    maybe_applied.fetch_or(r.maybe_applied, Ordering::Relaxed);
                    true
                },
            )
            .await;
        match settled {
            Ok(Settled::Done(r)) => Ok(r),
            Ok(Settled::Precondition) => {
                if maybe_applied.load(Ordering::Relaxed)
                    && data.len() <= RECONCILE_LIMIT
                    && let Some(r) = self.written_by_us(name, &data).await
                {
                    return Ok(r);
                }
                Err(translate(
                    Kind::Precondition,
                    location.as_ref(),
                    format!(
                        "the object's generation is no longer {generation}: another writer \
                         changed it first"
                    )
                    .into(),
                ))
            }
            Ok(Settled::Failed(e)) => Err(e),
            Err(last) => Err(generic(format!(
                "conditional write of {location} failed {} times: {}",
                RETRIES.tries, last.why
            ))),
        }
    }

    async fn attempt(
        &self,
        location: &Path,
        url: &str,
        content_type: &str,
        body: Bytes,
    ) -> Result<Settled, Retry> {
        let req = Request::post(url)
            .header(header::CONTENT_TYPE, content_type)
            .header(header::CONTENT_LENGTH, body.len())
            .body(Buffer::from(body));
        let req = match req {
            Ok(r) => r,
            Err(e) => {
                return Ok(Settled::Failed(generic(format!(
                    "bad request for {location}: {e}"
                ))));
            }
        };
        let req = match &self.signer {
            None => req,
            Some(signer) => {
                let (mut parts, body) = req.into_parts();
                if let Err(e) = signer.sign(&mut parts, None).await {
                    return Ok(Settled::Failed(translate(
                        Kind::Unauthenticated,
                        location.as_ref(),
                        Box::new(e),
                    )));
                }
                // As opendal does: let the client set Host, or GCS may reset HTTP/2 streams.
                parts.headers.remove(header::HOST);
                Request::from_parts(parts, body)
            }
        };
        let resp = match tokio::time::timeout(self.timeout, self.http.send(req)).await {
            Err(_) => {
                return Err(Retry {
                    why: format!("no answer within {}s", self.timeout.as_secs()),
                    maybe_applied: true,
                });
            }
            Ok(Err(e)) if e.is_temporary() => {
                return Err(Retry {
                    why: e.to_string(),
                    maybe_applied: true,
                });
            }
            Ok(Err(e)) => return Ok(Settled::Failed(generic(e.to_string()))),
            Ok(Ok(resp)) => resp,
        };
        let status = resp.status();
        let text = || {
            let body = resp.body().to_bytes();
            let s = String::from_utf8_lossy(&body);
            s.chars().take(400).collect::<String>()
        };
        let path = location.to_string();
        let settled = match status {
            StatusCode::OK | StatusCode::CREATED => {
                match serde_json::from_slice::<ObjectResource>(&resp.body().to_bytes()) {
                    Ok(o) => Settled::Done(PutResult {
                        e_tag: o.etag,
                        version: o.generation,
                        extensions: Default::default(),
                    }),
                    Err(e) => Settled::Failed(generic(format!(
                        "GCS answered an upload of {location} with an unreadable object: {e}"
                    ))),
                }
            }
            StatusCode::PRECONDITION_FAILED => Settled::Precondition,
            StatusCode::NOT_FOUND => Settled::Failed(from_status(
                status,
                &path,
                format!("404 Not Found (is the bucket there?): {}", text()),
            )),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                Settled::Failed(from_status(status, &path, format!("{status}: {}", text())))
            }
            StatusCode::REQUEST_TIMEOUT | StatusCode::TOO_MANY_REQUESTS => {
                return Err(Retry {
                    why: format!("{status}: {}", text()),
                    maybe_applied: false,
                });
            }
            s if s.is_server_error() => {
                return Err(Retry {
                    why: format!("{status}: {}", text()),
                    maybe_applied: true,
                });
            }
            s => Settled::Failed(from_status(
                s,
                &path,
                format!("upload of {location}: {s}: {}", text()),
            )),
        };
        Ok(settled)
    }

    /// After a lost answer and then a precondition failure: is the live object ours?
    async fn written_by_us(&self, name: &str, data: &Bytes) -> Option<PutResult> {
        let meta = self.op.stat(name).await.ok()?;
        let stored = self.op.read(name).await.ok()?;
        (stored.to_bytes() == *data).then(|| PutResult {
            e_tag: meta.etag().map(str::to_string),
            version: meta.version().map(str::to_string),
            extensions: Default::default(),
        })
    }
}

#[derive(serde::Deserialize)]
struct ObjectResource {
    generation: Option<String>,
    etag: Option<String>,
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
pub(crate) fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// A `multipart/related` body: the object's metadata, then its bytes. Returns the content
/// type (with the boundary) and the body.
fn multipart_body(name: &str, data: &[u8]) -> (String, Bytes) {
    let metadata = serde_json::json!({ "name": name }).to_string();
    let mut boundary = format!("blocks-{:016x}", seed());
    while contains(data, boundary.as_bytes()) || metadata.contains(&boundary) {
        boundary = format!("blocks-{:016x}", seed());
    }
    let mut body = BytesMut::with_capacity(data.len() + metadata.len() + 256);
    body.put_slice(format!("--{boundary}\r\n").as_bytes());
    body.put_slice(b"Content-Type: application/json; charset=UTF-8\r\n\r\n");
    body.put_slice(metadata.as_bytes());
    body.put_slice(format!("\r\n--{boundary}\r\n").as_bytes());
    body.put_slice(b"Content-Type: application/octet-stream\r\n\r\n");
    body.put_slice(data);
    body.put_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (
        format!("multipart/related; boundary={boundary}"),
        body.freeze(),
    )
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// A value that differs from call to call (a boundary only has to be absent from the body).
fn seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_encoded_for_a_query() {
        assert_eq!(encode("a b/c+d%e#é"), "a%20b%2Fc%2Bd%25e%23%C3%A9");
        assert_eq!(encode("x-y_z.~1"), "x-y_z.~1");
    }

    #[test]
    fn multipart_body_frames_the_data() {
        let (ct, body) = multipart_body("a/.blocks/HEAD", b"{\"version\":\"v\"}");
        let boundary = ct.strip_prefix("multipart/related; boundary=").unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(text.starts_with(&format!("--{boundary}\r\n")));
        assert!(text.ends_with(&format!("\r\n--{boundary}--\r\n")));
        assert!(text.contains("\r\n\r\n{\"version\":\"v\"}\r\n"));
        assert!(text.contains(r#"{"name":"a/.blocks/HEAD"}"#));
    }

    #[test]
    fn retries_pause_200_ms_doubling() {
        let pauses: Vec<u128> = RETRIES.pauses().map(|d| d.as_millis()).collect();
        assert_eq!(pauses, [200, 400, 800, 1600, 3200]);
    }
}
