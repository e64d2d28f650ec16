//! GCS errors as object_store's, in one place: [`translate`] is the one table from what
//! went wrong to the object_store error the adapter maps to an exit code. opendal's errors
//! ([`store_error`], and [`fix_error`] for those `OpendalStore` wraps) and the JSON upload
//! client's HTTP answers ([`from_status`]) both go through it.

use std::fmt;

use http::StatusCode;
use object_store::path::Path;
use opendal::ErrorKind;

type Source = Box<dyn std::error::Error + Send + Sync>;

/// What went wrong, as the adapter tells failures apart.
pub(crate) enum Kind {
    NotFound,
    AlreadyExists,
    Precondition,
    PermissionDenied,
    Unauthenticated,
    Unsupported,
    Other,
}

/// The one translation: `kind` at `path`, with `source` saying what happened.
pub(crate) fn translate(kind: Kind, path: &str, source: Source) -> object_store::Error {
    let path = path.to_string();
    match kind {
        Kind::NotFound => object_store::Error::NotFound { path, source },
        Kind::AlreadyExists => object_store::Error::AlreadyExists { path, source },
        Kind::Precondition => object_store::Error::Precondition { path, source },
        Kind::PermissionDenied => object_store::Error::PermissionDenied { path, source },
        Kind::Unauthenticated => object_store::Error::Unauthenticated { path, source },
        Kind::Unsupported => object_store::Error::NotSupported { source },
        Kind::Other => generic(source),
    }
}

/// Something GCS-specific went wrong (exit 1).
pub(crate) fn generic(source: impl Into<Source>) -> object_store::Error {
    object_store::Error::Generic {
        store: "GCS",
        source: source.into(),
    }
}

/// An HTTP answer of the JSON API that is not a success, as object_store's error.
pub(crate) fn from_status(status: StatusCode, path: &str, text: String) -> object_store::Error {
    let kind = match status {
        StatusCode::NOT_FOUND => Kind::NotFound,
        StatusCode::UNAUTHORIZED => Kind::Unauthenticated,
        StatusCode::FORBIDDEN => Kind::PermissionDenied,
        StatusCode::PRECONDITION_FAILED => Kind::Precondition,
        _ => Kind::Other,
    };
    translate(kind, path, text.into())
}

/// An opendal error shown in one short line (its own text carries the whole request and
/// response context), keeping the full error as its source.
#[derive(Debug)]
struct Brief {
    text: String,
    source: opendal::Error,
}

impl fmt::Display for Brief {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for Brief {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

impl Brief {
    fn new(e: opendal::Error) -> Brief {
        let message = e.message();
        // GCS's JSON error, as opendal prints it: `GcsErrorResponse { error: GcsError {
        // code: 404, message: "Not Found", .. } }`.
        let field = |name: &str| {
            let start = message.find(name)? + name.len();
            let rest = &message[start..];
            Some(rest[..rest.find(['"', ','])?].to_string())
        };
        let mut text = match (field("code: "), field("message: \"")) {
            (Some(code), Some(msg)) => format!("{}: HTTP {code} {msg}", e.kind()),
            _ => format!(
                "{}: {}",
                e.kind(),
                message.chars().take(300).collect::<String>()
            ),
        };
        // The causes, down to the root one (`Connection refused`).
        let mut cause = std::error::Error::source(&e);
        let mut causes: Vec<String> = Vec::new();
        while let Some(c) = cause {
            let c_text = c.to_string();
            if !causes.iter().any(|seen| seen.contains(&c_text)) {
                causes.push(c_text);
            }
            cause = c.source();
        }
        if !causes.is_empty() {
            text.push_str(&format!(" ({})", causes.join(": ")));
        }
        Brief { text, source: e }
    }
}

/// opendal's error as object_store's, keeping the kinds the adapter tells apart.
pub(crate) fn store_error(e: opendal::Error, path: &str) -> object_store::Error {
    let kind = match e.kind() {
        ErrorKind::NotFound => Kind::NotFound,
        ErrorKind::AlreadyExists => Kind::AlreadyExists,
        ErrorKind::ConditionNotMatch => Kind::Precondition,
        ErrorKind::PermissionDenied => Kind::PermissionDenied,
        ErrorKind::Unsupported => Kind::Unsupported,
        _ => Kind::Other,
    };
    translate(kind, path, Box::new(Brief::new(e)))
}

/// `OpendalStore`'s errors carry opendal's error as their source, with its whole request
/// context in the text, and a refused credential as a generic error: remake them as
/// [`store_error`] does for the calls made here.
pub(crate) fn fix_error(e: object_store::Error, location: &Path) -> object_store::Error {
    use object_store::Error as E;
    let from_opendal = match &e {
        E::Generic { source, .. }
        | E::NotFound { source, .. }
        | E::AlreadyExists { source, .. }
        | E::Precondition { source, .. }
        | E::NotSupported { source } => source.is::<opendal::Error>(),
        _ => false,
    };
    if !from_opendal {
        return e;
    }
    match e {
        E::Generic { source, .. }
        | E::NotFound { source, .. }
        | E::AlreadyExists { source, .. }
        | E::Precondition { source, .. }
        | E::NotSupported { source } => match source.downcast::<opendal::Error>() {
            Ok(inner) => store_error(*inner, location.as_ref()),
            Err(source) => E::Generic {
                store: "GCS",
                source,
            },
        },
        e => e,
    }
}
