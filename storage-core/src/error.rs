//! The one error type of the crate family and its mapping to blockctl's exit codes.

use crate::redaction::redact;

/// Every failure a storage block can report. The variant decides the exit code; the message
/// is one line that says what failed and, where it helps, what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad usage, a bad slug or a bad block configuration (exit 2).
    #[error("{0}")]
    Usage(String),
    /// The backend cannot do what was asked; its capabilities say so (exit 2).
    #[error("{0}")]
    Unsupported(String),
    /// A block, path or version does not exist (exit 3).
    #[error("{0}")]
    NotFound(String),
    /// Authentication failed or permission was denied (exit 4).
    #[error("{0}")]
    Auth(String),
    /// A checksum did not match, or an archive was unsafe (exit 5).
    #[error("{0}")]
    Integrity(String),
    /// The destination is not empty, or a precondition on the current version failed (exit 6).
    #[error("{0}")]
    Conflict(String),
    /// What was read cannot be trusted: unsigned, signed by a key not trusted, changed after
    /// signing, expired, signed for another path, or older than a HEAD already accepted
    /// (exit 7).
    #[error("{0}")]
    Trust(String),
    /// A local file operation failed (exit 1).
    #[error("{context}: {source}")]
    Io {
        /// What was being done, with the file (`reading /path`).
        context: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// Any other backend failure (exit 1).
    #[error("{0}")]
    Backend(String),
    /// A failure another try may not meet: a request that timed out, a connection that
    /// dropped or was refused, a server that was busy or failing (exit 1). Set where the
    /// failure is raised, so that a retry policy (`crate::retry`) decides from it.
    #[error("{message}")]
    Temporary {
        /// What failed, where, and why.
        message: String,
        /// The kind of network failure it was, where one was seen (`TimedOut` for a
        /// deadline passed); its own text is already in `message`.
        #[source]
        source: Option<std::io::Error>,
    },
}

/// The result of every fallible operation of the blocks.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The process exit code blockctl uses for this error, as DESIGN.md lists them.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) | Error::Unsupported(_) => 2,
            Error::NotFound(_) => 3,
            Error::Auth(_) => 4,
            Error::Integrity(_) => 5,
            Error::Conflict(_) => 6,
            Error::Trust(_) => 7,
            Error::Io { .. } | Error::Backend(_) | Error::Temporary { .. } => 1,
        }
    }

    /// Whether another try may not meet this failure (see [`Error::Temporary`]).
    pub fn is_temporary(&self) -> bool {
        matches!(self, Error::Temporary { .. })
    }

    /// A temporary failure (see [`Error::Temporary`]) caused by a network failure of `kind`,
    /// if one is known.
    pub fn temporary(message: impl Into<String>, kind: Option<std::io::ErrorKind>) -> Self {
        Error::Temporary {
            message: message.into(),
            source: kind.map(std::io::Error::from),
        }
    }

    /// An I/O error with what was being done (`reading /path`), keeping the source for `?`.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// Maps an object store error, with the credentials in its text redacted. One of ours
    /// carried through a store (see [`Error::into_store`]) keeps its kind.
    pub fn from_store(err: object_store::Error) -> Self {
        use object_store::Error as E;
        let text = one_line(&redact(&with_causes(&err)));
        // One of ours anywhere among the causes (a folder store's, or a capped answer's
        // inside the client's error) keeps its kind.
        let ours = std::iter::successors(Some(&err as &(dyn std::error::Error + 'static)), |e| {
            e.source()
        })
        .find_map(|e| e.downcast_ref::<Error>());
        if let Some(ours) = ours {
            // Its own text: the store's "Generic ... error:" wrapper says nothing more.
            return ours.with_text(one_line(&redact(&ours.to_string())));
        }
        match err {
            E::NotFound { .. } => Error::NotFound(text),
            E::AlreadyExists { .. } | E::Precondition { .. } => Error::Conflict(text),
            E::Unauthenticated { .. } | E::PermissionDenied { .. } => Error::Auth(text),
            E::NotSupported { .. } | E::NotImplemented { .. } => Error::Unsupported(text),
            E::InvalidPath { .. } => Error::Usage(text),
            _ => match network_failure(&err) {
                Some(kind) => Error::temporary(text, Some(kind)),
                None => Error::Backend(text),
            },
        }
    }

    /// This error as `store`'s object store error, for a store (a remote file system's) that
    /// finds what it cannot trust: [`Error::from_store`] gives back its kind (an integrity
    /// error stays exit 5).
    pub fn into_store(self, store: &'static str) -> object_store::Error {
        object_store::Error::Generic {
            store,
            source: Box::new(self),
        }
    }

    /// An error of the same kind with the message `text` (an I/O error becomes a backend one).
    fn with_text(&self, text: String) -> Self {
        match self {
            Error::Usage(_) => Error::Usage(text),
            Error::Unsupported(_) => Error::Unsupported(text),
            Error::NotFound(_) => Error::NotFound(text),
            Error::Auth(_) => Error::Auth(text),
            Error::Integrity(_) => Error::Integrity(text),
            Error::Conflict(_) => Error::Conflict(text),
            Error::Trust(_) => Error::Trust(text),
            Error::Io { .. } | Error::Backend(_) => Error::Backend(text),
            Error::Temporary { source, .. } => {
                Error::temporary(text, source.as_ref().map(std::io::Error::kind))
            }
        }
    }

    /// The same error with `secrets` (and credentials in URLs) masked in its text, for errors
    /// of clients that may echo what they were given.
    pub fn scrubbed(self, secrets: &[String]) -> Self {
        if secrets.is_empty() {
            return self;
        }
        let s = |m: String| crate::secret::scrub(&m, secrets);
        match self {
            Error::Usage(m) => Error::Usage(s(m)),
            Error::Unsupported(m) => Error::Unsupported(s(m)),
            Error::NotFound(m) => Error::NotFound(s(m)),
            Error::Auth(m) => Error::Auth(s(m)),
            Error::Integrity(m) => Error::Integrity(s(m)),
            Error::Conflict(m) => Error::Conflict(s(m)),
            Error::Trust(m) => Error::Trust(s(m)),
            Error::Backend(m) => Error::Backend(s(m)),
            Error::Io { context, source } => Error::Io {
                context: s(context),
                source,
            },
            Error::Temporary { message, source } => Error::Temporary {
                message: s(message),
                source,
            },
        }
    }

    /// Prefixes the message with where it happened (usually the slug), keeping the kind.
    pub fn context(self, at: impl std::fmt::Display) -> Self {
        let add = |m: String| format!("{at}: {m}");
        match self {
            Error::Usage(m) => Error::Usage(add(m)),
            Error::Unsupported(m) => Error::Unsupported(add(m)),
            Error::NotFound(m) => Error::NotFound(add(m)),
            Error::Auth(m) => Error::Auth(add(m)),
            Error::Integrity(m) => Error::Integrity(add(m)),
            Error::Conflict(m) => Error::Conflict(add(m)),
            Error::Trust(m) => Error::Trust(add(m)),
            Error::Backend(m) => Error::Backend(add(m)),
            Error::Io { context, source } => Error::Io {
                context: add(context),
                source,
            },
            Error::Temporary { message, source } => Error::Temporary {
                message: add(message),
                source,
            },
        }
    }
}

/// `err` and each of its causes not already in its text: "error sending request" alone
/// hides what happened, its innermost cause ("connection reset by peer", "timed out") says it.
pub fn with_causes(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(c) = cause {
        let said = c.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        cause = c.source();
    }
    text
}

/// Server replies (XML error bodies) span lines; a message is one line.
pub fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The kind of the network failure among `err`'s causes that another try may not meet (a
/// timeout, a reset, a refused or dropped connection), from the typed errors in the chain.
fn network_failure(err: &(dyn std::error::Error + 'static)) -> Option<std::io::ErrorKind> {
    use std::io::ErrorKind as K;
    let mut cause = Some(err);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                K::TimedOut
                    | K::ConnectionReset
                    | K::ConnectionAborted
                    | K::ConnectionRefused
                    | K::BrokenPipe
                    | K::UnexpectedEof
            )
        {
            return Some(io.kind());
        }
        if let Some(ours) = c.downcast_ref::<Error>()
            && let Error::Temporary { source, .. } = ours
        {
            return Some(source.as_ref().map_or(K::Other, std::io::Error::kind));
        }
        cause = c.source();
    }
    None
}

impl From<object_store::Error> for Error {
    fn from(err: object_store::Error) -> Self {
        Error::from_store(err)
    }
}

impl From<tokio::task::JoinError> for Error {
    fn from(err: tokio::task::JoinError) -> Self {
        if err.is_panic() {
            Error::Backend("internal error: a worker task panicked".into())
        } else {
            Error::Backend("internal error: a worker task was cancelled".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_error_names_its_innermost_cause() {
        let reset = std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "connection reset by peer",
        );
        let err = object_store::Error::Generic {
            store: "S3",
            source: Box::new(reset),
        };
        let text = Error::from_store(err).to_string();
        assert!(text.contains("connection reset by peer"), "{text}");
        assert_eq!(text.matches("connection reset").count(), 1, "{text}");
    }

    #[test]
    fn exit_codes_follow_the_contract() {
        assert_eq!(Error::Usage("x".into()).exit_code(), 2);
        assert_eq!(Error::NotFound("x".into()).exit_code(), 3);
        assert_eq!(Error::Auth("x".into()).exit_code(), 4);
        assert_eq!(Error::Integrity("x".into()).exit_code(), 5);
        assert_eq!(Error::Conflict("x".into()).exit_code(), 6);
        assert_eq!(Error::Trust("x".into()).exit_code(), 7);
        assert_eq!(Error::Backend("x".into()).exit_code(), 1);
    }

    #[test]
    fn store_errors_become_one_line() {
        let err = object_store::Error::Generic {
            store: "S3",
            source: "403 Forbidden: <Error>\n  <Code>AccessDenied</Code>\r\n</Error>".into(),
        };
        let e = Error::from_store(err);
        // A kind comes from the error's type (a 403 reaches us as `Error::Auth` from
        // `CappedConnector`), never from its text: a generic error stays exit 1.
        assert_eq!(e.exit_code(), 1);
        assert!(!e.to_string().contains('\n'), "{e}");
    }

    #[test]
    fn our_error_through_a_store_keeps_its_kind() {
        let e = Error::Integrity("listing of a: a cycle".into()).into_store("WebDAV");
        let back = Error::from_store(e);
        assert_eq!(back.exit_code(), 5);
        assert_eq!(back.to_string(), "listing of a: a cycle");
    }

    #[test]
    fn a_dropped_connection_is_temporary_and_keeps_its_kind() {
        let reset = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
        let err = object_store::Error::Generic {
            store: "S3",
            source: Box::new(reset),
        };
        let e = Error::from_store(err);
        assert!(e.is_temporary(), "{e:?}");
        assert_eq!(e.exit_code(), 1);
        let source = std::error::Error::source(&e).and_then(|s| s.downcast_ref::<std::io::Error>());
        assert_eq!(
            source.map(|s| s.kind()),
            Some(std::io::ErrorKind::ConnectionReset)
        );
        let refused = object_store::Error::Generic {
            store: "S3",
            source: "400 Bad Request".into(),
        };
        assert!(!Error::from_store(refused).is_temporary());
    }

    #[test]
    fn a_temporary_error_through_a_store_stays_temporary() {
        let e = Error::temporary("GET x timed out", Some(std::io::ErrorKind::TimedOut))
            .into_store("WebDAV");
        let back = Error::from_store(e).context("webdav/site");
        assert!(back.is_temporary());
        assert_eq!(back.to_string(), "webdav/site: GET x timed out");
    }

    #[test]
    fn context_keeps_the_kind() {
        let e = Error::NotFound("no HEAD".into()).context("s3/prod/etl");
        assert_eq!(e.exit_code(), 3);
        assert_eq!(e.to_string(), "s3/prod/etl: no HEAD");
    }
}
