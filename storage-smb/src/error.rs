//! SMB errors as `object_store`'s, keeping the kinds the adapter maps to exit codes.

use std::fmt;

use object_store::Error as StoreError;
use smb2::ErrorKind;

/// An SMB failure with what was being done, shown in one line.
#[derive(Debug)]
struct Failure {
    what: String,
    source: smb2::Error,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.source {
            smb2::Error::Timeout => write!(
                f,
                "{} timed out (the block's timeout bounds a whole request)",
                self.what
            ),
            _ => write!(f, "{}: {}", self.what, self.source),
        }
    }
}

impl std::error::Error for Failure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self.source {
            // Its whole text is in ours already.
            smb2::Error::Timeout => None,
            _ => Some(&self.source),
        }
    }
}

/// An SMB error as `object_store`'s, keeping the kinds the adapter maps to exit codes (a
/// refused logon or access is 4, a missing file 3).
pub(crate) fn store_error(what: impl Into<String>, path: &str, e: smb2::Error) -> StoreError {
    let path = path.to_string();
    let kind = e.kind();
    let source = Box::new(Failure {
        what: what.into(),
        source: e,
    });
    match kind {
        ErrorKind::NotFound => StoreError::NotFound { path, source },
        ErrorKind::AlreadyExists => StoreError::AlreadyExists { path, source },
        ErrorKind::AccessDenied => StoreError::PermissionDenied { path, source },
        ErrorKind::AuthRequired | ErrorKind::SigningRequired | ErrorKind::SessionExpired => {
            StoreError::Unauthenticated { path, source }
        }
        _ => StoreError::Generic {
            store: "SMB",
            source,
        },
    }
}
