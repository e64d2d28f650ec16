//! What object_store's cloud clients (S3, Azure) buffer of a server's answers, capped, and
//! their refusals told by status. They read a listing page or an error answer whole before
//! they parse it, so a server sending one without end would decide how much memory a get
//! takes. [`CappedConnector`] wraps the client's connector and ends such a body at its cap
//! ([`LISTING_PAGE_MAX`], [`SMALL_ANSWER_MAX`]) with an integrity error (exit 5) that names
//! the cap. Objects' own bodies pass as they come: the package engine reads them to their
//! declared lengths.
//!
//! A 401 or 403 answer becomes an authentication error (exit 4) here, where its status is
//! known: object_store keeps the status of some failures (a listing's, a credential
//! fetch's) in an error type of its own that no caller can read, and would otherwise hand
//! them on as generic errors.

use std::pin::Pin;
use std::task::{Context, Poll};

use async_trait::async_trait;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use object_store::ClientOptions;
use object_store::client::{
    HttpClient, HttpConnector, HttpError, HttpErrorKind, HttpRequest, HttpResponse,
    HttpResponseBody, HttpService,
};

use crate::Error;
use crate::bounds::{Cap, LISTING_PAGE_MAX, SMALL_ANSWER_MAX};

/// A connector whose clients cap the answers they buffer whole; `C` makes the connections.
#[derive(Debug, Default)]
pub struct CappedConnector<C>(pub C);

impl<C: HttpConnector> HttpConnector for CappedConnector<C> {
    fn connect(&self, options: &ClientOptions) -> object_store::Result<HttpClient> {
        Ok(HttpClient::new(Capped(self.0.connect(options)?)))
    }
}

#[derive(Debug)]
struct Capped(HttpClient);

#[async_trait]
impl HttpService for Capped {
    async fn call(&self, req: HttpRequest) -> Result<HttpResponse, HttpError> {
        // The path only: a query may carry a signature or a SAS token.
        let (method, path) = (req.method().clone(), req.uri().path().to_string());
        let listing = is_listing(req.uri().query().unwrap_or_default());
        let response = self.0.execute(req).await?;
        let status = response.status();
        if matches!(status.as_u16(), 401 | 403) {
            // Not retried (an error of kind `Unknown`), and found again among the causes of
            // the store's error by `Error::from_store`.
            let what = format!("the error answer to {method} {path}");
            let answer = capped(response.into_body(), SMALL_ANSWER_MAX, what)
                .bytes()
                .await?;
            let reason = error_code(&answer).map_or(String::new(), |c| format!(" ({c})"));
            let refused = Error::Auth(format!("{method} {path} was refused: {status}{reason}"));
            return Err(HttpError::new(HttpErrorKind::Unknown, refused));
        }
        let (cap, what) = if !status.is_success() {
            (
                SMALL_ANSWER_MAX,
                format!("the error answer to {method} {path}"),
            )
        } else if listing {
            (LISTING_PAGE_MAX, format!("the listing page {path}"))
        } else {
            return Ok(response);
        };
        let (parts, body) = response.into_parts();
        Ok(HttpResponse::from_parts(parts, capped(body, cap, what)))
    }
}

/// `body`, ending in an error once more than `cap` has come.
fn capped(body: HttpResponseBody, cap: Cap, what: String) -> HttpResponseBody {
    HttpResponseBody::new(CappedBody {
        inner: body,
        left: cap.bytes,
        cap,
        what,
    })
}

/// The code an S3 or Azure error answer gives its error (`<Code>AccessDenied</Code>`), if
/// it is a short word: shown, never used to decide what the error is.
fn error_code(answer: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(answer).ok()?;
    let start = text.find("<Code>")? + "<Code>".len();
    let code = &text[start..start + text[start..].find("</Code>")?];
    (code.len() <= 64 && code.chars().all(|c| c.is_ascii_alphanumeric())).then_some(code)
}

/// Whether a request's query asks for a listing: S3's ListObjectsV2 or Azure's List Blobs.
fn is_listing(query: &str) -> bool {
    query
        .split('&')
        .any(|pair| pair.starts_with("list-type=") || pair == "comp=list")
}

/// A body that fails once more than its cap has come.
struct CappedBody {
    inner: HttpResponseBody,
    left: u64,
    cap: Cap,
    what: String,
}

impl Body for CappedBody {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        let this = &mut *self;
        let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => frame,
            other => return other,
        };
        if let Some(data) = frame.data_ref() {
            match this.left.checked_sub(data.len() as u64) {
                Some(left) => this.left = left,
                None => {
                    let refused: Error = this.cap.exceeded(&this.what);
                    return Poll::Ready(Some(Err(HttpError::new(HttpErrorKind::Decode, refused))));
                }
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[test]
    fn listings_are_known_by_their_query() {
        assert!(is_listing("list-type=2&prefix=app%2F"));
        assert!(is_listing("restype=container&comp=list&prefix=app"));
        assert!(!is_listing("partNumber=1&uploadId=x"));
        assert!(!is_listing(""));
    }

    #[test]
    fn an_error_code_is_shown_only_when_it_is_a_word() {
        let s3 = b"<Error><Code>SignatureDoesNotMatch</Code><Message>..</Message></Error>";
        assert_eq!(error_code(s3), Some("SignatureDoesNotMatch"));
        assert_eq!(error_code(b"<Code>two words</Code>"), None);
        assert_eq!(error_code(b"<Code>unended"), None);
        assert_eq!(error_code(b"{}"), None);
    }

    #[tokio::test]
    async fn a_body_past_its_cap_fails_naming_it() {
        let capped = |n: usize| CappedBody {
            inner: HttpResponseBody::from(vec![b'x'; n]),
            left: 4,
            cap: Cap::new("T", 4),
            what: "the listing page /b".into(),
        };
        assert_eq!(capped(4).collect().await.unwrap().to_bytes().len(), 4);
        let err = capped(5).collect().await.unwrap_err();
        let source = std::error::Error::source(&err).unwrap().to_string();
        assert!(source.contains("the cap T"), "{source}");
    }
}
