//! What opendal's GCS service buffers of a server's answers, capped: it reads a listing page,
//! an object's metadata, an upload's answer, a batch answer or an error answer whole before
//! it parses it, so a server sending one without end would decide how much memory a get
//! takes. [`CappedTransport`] sits under every request of a block (opendal's, and the JSON
//! writes and token requests this crate sends itself) and ends such a body at its cap
//! ([`LISTING_PAGE_MAX`] for a listing page or a batch answer, [`SMALL_ANSWER_MAX`] for the
//! rest) with an integrity error (exit 5) that names the cap. Objects' own bodies
//! (`alt=media`) pass as they come: the package engine reads them to their declared lengths.
//! This is `storage_core::adapter::CappedConnector` for the client object_store does not
//! build.

use futures::StreamExt;
use http::{Request, Response};
use opendal::{Buffer, ErrorKind, HttpBody, HttpTransport};
use storage_core::Error;
use storage_core::bounds::{Cap, LISTING_PAGE_MAX, SMALL_ANSWER_MAX};

/// A transport whose answers that opendal reads whole are capped; `T` sends the requests.
#[derive(Debug)]
pub(crate) struct CappedTransport<T>(pub T);

impl<T: HttpTransport> HttpTransport for CappedTransport<T> {
    async fn fetch(&self, req: Request<Buffer>) -> opendal::Result<Response<HttpBody>> {
        // The path only: a query may carry a signature.
        let (method, path) = (req.method().clone(), req.uri().path().to_string());
        let read_whole = Answer::of(&path, req.uri().query().unwrap_or_default());
        let response = self.0.fetch(req).await?;
        let (cap, what) = if !response.status().is_success() {
            (
                SMALL_ANSWER_MAX,
                format!("the error answer to {method} {path}"),
            )
        } else {
            match read_whole {
                Answer::Media => return Ok(response),
                Answer::Listing => (LISTING_PAGE_MAX, format!("the listing page {path}")),
                Answer::Batch => (LISTING_PAGE_MAX, format!("the batch answer {path}")),
                Answer::Small => (SMALL_ANSWER_MAX, format!("the answer to {method} {path}")),
            }
        };
        let (parts, body) = response.into_parts();
        let body = body.map_inner(|stream| Box::new(capped(stream, cap, what)));
        Ok(Response::from_parts(parts, body))
    }
}

/// What a request's successful answer holds, as far as its cap goes.
#[derive(Debug, PartialEq)]
enum Answer {
    /// An object's bytes, read by the caller to its declared length.
    Media,
    /// One page of a bucket's listing (`GET /storage/v1/b/{bucket}/o`).
    Listing,
    /// The answers to a batch of deletes, one part each.
    Batch,
    /// Metadata, an upload's answer, a token: a few KiB of JSON.
    Small,
}

impl Answer {
    fn of(path: &str, query: &str) -> Answer {
        if query.split('&').any(|pair| pair == "alt=media") {
            Answer::Media
        } else if path.starts_with("/batch/") {
            Answer::Batch
        } else if path.starts_with("/storage/v1/b/") && path.ends_with("/o") {
            Answer::Listing
        } else {
            Answer::Small
        }
    }
}

type Chunks = Box<dyn futures::Stream<Item = opendal::Result<Buffer>> + Send + Sync + Unpin>;

/// `stream`, failing once more than `cap` has come.
fn capped(
    stream: Chunks,
    cap: Cap,
    what: String,
) -> impl futures::Stream<Item = opendal::Result<Buffer>> + Send + Sync + Unpin + 'static {
    let mut left = cap.bytes;
    stream.map(move |chunk| {
        let chunk = chunk?;
        match left.checked_sub(chunk.len() as u64) {
            Some(rest) => {
                left = rest;
                Ok(chunk)
            }
            None => {
                let ours: Error = cap.exceeded(&what);
                Err(opendal::Error::new(ErrorKind::Unexpected, ours.to_string()).set_source(ours))
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_known_by_their_request() {
        let of = Answer::of;
        assert_eq!(
            of("/storage/v1/b/flows/o/a%2FHEAD", "alt=media"),
            Answer::Media
        );
        assert_eq!(
            of("/storage/v1/b/flows/o", "prefix=a%2F&delimiter=%2F"),
            Answer::Listing
        );
        assert_eq!(of("/storage/v1/b/flows/o/a%2FHEAD", ""), Answer::Small);
        assert_eq!(
            of("/upload/storage/v1/b/flows/o", "uploadType=media"),
            Answer::Small
        );
        assert_eq!(of("/batch/storage/v1", ""), Answer::Batch);
        assert_eq!(of("/token", ""), Answer::Small);
    }

    #[tokio::test]
    async fn a_body_past_its_cap_fails_naming_it() {
        let body = |n: usize| -> Chunks {
            let chunks = vec![
                Ok(Buffer::from(vec![b'x'; n])),
                Ok(Buffer::from(vec![b'y'; n])),
            ];
            Box::new(futures::stream::iter(chunks))
        };
        async fn read(chunks: Chunks) -> opendal::Result<usize> {
            let mut stream = capped(chunks, Cap::new("T", 4), "the listing page /o".into());
            let mut got = 0;
            while let Some(chunk) = stream.next().await {
                got += chunk?.len();
            }
            Ok(got)
        }
        assert_eq!(read(body(2)).await.unwrap(), 4);
        let err = read(body(3)).await.unwrap_err();
        let ours = std::error::Error::source(&err)
            .and_then(|e| e.downcast_ref::<Error>())
            .expect("the cap's own error is the source");
        assert_eq!(ours.exit_code(), 5);
        assert!(ours.to_string().contains("the cap T"), "{ours}");
    }
}
