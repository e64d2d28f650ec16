//! The exception classes, one per blockctl exit code, all under `StorageBlocksError`, and the
//! mapping from the crate family's `Error` to them. A message is the line blockctl prints
//! after `blockctl: `; the core has already removed credentials from it.

use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use storage_blocks::Error;

create_exception!(
    storage_blocks,
    StorageBlocksError,
    PyException,
    "Any failure of storage blocks; `exit_code` is the one blockctl exits with."
);
create_exception!(
    storage_blocks,
    BackendError,
    StorageBlocksError,
    "Exit 1: the storage or a local file operation failed."
);
create_exception!(
    storage_blocks,
    UsageError,
    StorageBlocksError,
    "Exit 2: bad arguments, a bad slug or block configuration, or not supported by the backend."
);
create_exception!(
    storage_blocks,
    NotFound,
    StorageBlocksError,
    "Exit 3: the block, path or version does not exist."
);
create_exception!(
    storage_blocks,
    AuthError,
    StorageBlocksError,
    "Exit 4: authentication failed or permission was denied."
);
create_exception!(
    storage_blocks,
    IntegrityError,
    StorageBlocksError,
    "Exit 5: a checksum did not match, or an archive was unsafe."
);
create_exception!(
    storage_blocks,
    Conflict,
    StorageBlocksError,
    "Exit 6: the destination is not empty, or `if_version` did not hold."
);
create_exception!(
    storage_blocks,
    TrustError,
    StorageBlocksError,
    "Exit 7: what was read is not trusted (unsigned, an untrusted key, changed after signing, expired, signed for another path, or rolled back)."
);

/// The exception for `err`, of the class its exit code names.
pub(crate) fn to_py(err: Error) -> PyErr {
    let message = storage_blocks::error::one_line(&err.to_string());
    match err.exit_code() {
        2 => UsageError::new_err(message),
        3 => NotFound::new_err(message),
        4 => AuthError::new_err(message),
        5 => IntegrityError::new_err(message),
        6 => Conflict::new_err(message),
        7 => TrustError::new_err(message),
        _ => BackendError::new_err(message),
    }
}

/// Adds the classes to the module, each with its `exit_code` as a class attribute.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    let classes = [
        ("StorageBlocksError", py.get_type::<StorageBlocksError>(), 1),
        ("BackendError", py.get_type::<BackendError>(), 1),
        ("UsageError", py.get_type::<UsageError>(), 2),
        ("NotFound", py.get_type::<NotFound>(), 3),
        ("AuthError", py.get_type::<AuthError>(), 4),
        ("IntegrityError", py.get_type::<IntegrityError>(), 5),
        ("Conflict", py.get_type::<Conflict>(), 6),
        ("TrustError", py.get_type::<TrustError>(), 7),
    ];
    for (name, class, code) in classes {
        class.setattr("exit_code", code)?;
        m.add(name, class)?;
    }
    Ok(())
}
