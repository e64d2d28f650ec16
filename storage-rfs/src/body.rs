//! Downloads over HTTP (read-only http(s):// folders and WebDAV alike): the wanted bytes of a
//! response body, never more than asked for, within one deadline for the whole body.

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

/// Bytes `skip..skip + take` of `resp`'s body (`shown` is its URL in messages, `store` the
/// store's name in errors), all of them before `started + transfer_deadline(timeout, skip +
/// take)`: a trickle fails as silence does, with an error that says it timed out. A body
/// that ends early is an error; bytes past the wanted ones are never read.
pub(crate) fn sliced(
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
