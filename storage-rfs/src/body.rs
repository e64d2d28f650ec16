//! Downloads over HTTP (read-only http(s):// folders and WebDAV alike): how long the object
//! of a (ranged) reply is, and the wanted bytes of its body, never more than asked for, within
//! one deadline for the whole body.

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::{self, BoxStream};
use storage_core::bounds::{timed_out, transfer_deadline};
use storage_core::error::with_causes;
use tokio::time::Instant;

/// The body of `resp`, chunk by chunk.
pub(crate) fn chunks(
    resp: reqwest::Response,
) -> impl futures::Stream<Item = Result<Bytes, reqwest::Error>> {
    stream::try_unfold(resp, |mut resp| async move {
        Ok(resp.chunk().await?.map(|chunk| (chunk, resp)))
    })
}

/// A GET's reply, its head come, its body not yet read.
pub(crate) struct Download {
    resp: reqwest::Response,
    /// Whether the server sent only the range asked for (206).
    partial: bool,
    /// The whole object's length: from `Content-Range: bytes a-b/total` for a part, else the
    /// body's own; `None` when the reply does not say.
    pub(crate) total: Option<u64>,
    /// When the head came; the body has its deadline from then.
    pub(crate) started: Instant,
}

impl Download {
    pub(crate) fn new(resp: reqwest::Response) -> Self {
        let started = Instant::now();
        let partial = resp.status() == reqwest::StatusCode::PARTIAL_CONTENT;
        let total = if partial {
            resp.headers()
                .get(reqwest::header::CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.rsplit('/').next())
                .and_then(|t| t.parse().ok())
        } else {
            resp.content_length()
        };
        Download {
            resp,
            partial,
            total,
            started,
        }
    }

    pub(crate) fn response(&self) -> &reqwest::Response {
        &self.resp
    }

    /// The reply given back, to be read another way (a body without a length).
    pub(crate) fn into_response(self) -> reqwest::Response {
        self.resp
    }

    /// Bytes `range` of the object: the body whole when the server sent just them, else the
    /// slice of it they are (see [`sliced`]).
    pub(crate) fn range(
        self,
        range: std::ops::Range<u64>,
        shown: String,
        timeout: std::time::Duration,
        store: &'static str,
    ) -> BoxStream<'static, object_store::Result<Bytes>> {
        let skip = if self.partial { 0 } else { range.start };
        let take = range.end - range.start;
        sliced(self.resp, skip, take, shown, self.started, timeout, store)
    }
}

/// Bytes `skip..skip + take` of `resp`'s body (`shown` is its URL in messages, `store` the
/// store's name in errors), all of them before `started + transfer_deadline(timeout, skip +
/// take)`: a trickle fails as silence does, with an error that says it timed out. A body
/// that ends early is an error; bytes past the wanted ones are never read.
fn sliced(
    resp: reqwest::Response,
    skip: u64,
    take: u64,
    shown: String,
    started: Instant,
    timeout: std::time::Duration,
    store: &'static str,
) -> BoxStream<'static, object_store::Result<Bytes>> {
    let allowed = transfer_deadline(timeout, skip + take);
    let deadline = started + allowed;
    let fail = move |shown: &str, why: String| object_store::Error::Generic {
        store,
        source: format!("reading {shown}: {why}").into(),
    };
    stream::try_unfold((resp, skip, take), move |(mut resp, mut skip, mut take)| {
        let shown = shown.clone();
        async move {
            loop {
                if take == 0 {
                    return Ok(None);
                }
                let chunk = match tokio::time::timeout_at(deadline, resp.chunk()).await {
                    Ok(c) => c.map_err(|e| fail(&shown, with_causes(&e.without_url())))?,
                    Err(_) => {
                        return Err(
                            timed_out(&format!("reading {shown}"), allowed).into_store(store)
                        );
                    }
                };
                let Some(mut chunk) = chunk else {
                    return Err(fail(&shown, "the body ended early".into()));
                };
                let front = skip.min(chunk.len() as u64);
                skip -= front;
                let chunk = chunk.split_off(front as usize);
                if chunk.is_empty() {
                    continue;
                }
                let keep = take.min(chunk.len() as u64);
                take -= keep;
                return Ok(Some((chunk.slice(..keep as usize), (resp, skip, take))));
            }
        }
    })
    .boxed()
}
