//! What the functions return, as read-only Python objects with the fields of the Rust reports.

use pyo3::prelude::*;
use pyo3::types::PyDict;

/// A version's record as a dict: `message`, `author`, `labels` (a dict) and `source`
/// (`commit`, `branch`, `dirty`, `origin`, or `None` outside git), as `versions --json`.
pub(crate) fn record_dict(
    py: Python<'_>,
    r: &storage_blocks::VersionRecord,
) -> PyResult<Py<PyDict>> {
    let d = PyDict::new(py);
    d.set_item("message", &r.message)?;
    d.set_item("author", &r.author)?;
    d.set_item("labels", r.labels.clone())?;
    match &r.source {
        Some(s) => {
            let src = PyDict::new(py);
            src.set_item("commit", &s.commit)?;
            src.set_item("branch", &s.branch)?;
            src.set_item("dirty", s.dirty)?;
            src.set_item("origin", &s.origin)?;
            d.set_item("source", src)?;
        }
        None => d.set_item("source", py.None())?,
    }
    Ok(d.unbind())
}

/// What `put_directory` stored.
#[pyclass(frozen, get_all, module = "storage_blocks")]
pub(crate) struct PutReport {
    /// The version id (`None` for a files layout, which has no versions).
    version: Option<String>,
    /// `"package"` or `"files"`.
    layout: String,
    files: u64,
    bytes: u64,
    /// Nothing was uploaded: this version was already stored.
    skipped: bool,
    /// What the user should know, e.g. secret-looking files that were uploaded.
    warnings: Vec<String>,
    /// The version's record as this put gave it: `message`, `author`, `labels`, `source`.
    record: Py<PyDict>,
}

/// What `get_directory` wrote.
#[pyclass(frozen, get_all, module = "storage_blocks")]
pub(crate) struct GetReport {
    version: Option<String>,
    layout: String,
    files: u64,
    bytes: u64,
}

/// What `rollback` did: the version current now, and the one current before.
#[pyclass(frozen, get_all, module = "storage_blocks")]
pub(crate) struct RollbackReport {
    /// The version made current.
    version: String,
    /// The version that was current before (`None` when there was none).
    previous: Option<String>,
}

/// One stored version, as `list_versions` lists them (newest first).
#[pyclass(frozen, get_all, module = "storage_blocks")]
pub(crate) struct VersionInfo {
    version: String,
    created: String,
    files: u64,
    bytes: u64,
    current: bool,
    /// Who put it, why and from which commit: `message`, `author`, `labels`, `source`.
    record: Py<PyDict>,
}

/// One file of a stored tree, as `list_files` lists them.
#[pyclass(frozen, get_all, module = "storage_blocks")]
pub(crate) struct ListedFile {
    path: String,
    /// `"file"`, `"dir"` or `"symlink"`.
    kind: String,
    size: u64,
}

/// An optional string as Python shows it: `'abc'` or `None`.
fn py_repr(value: &Option<String>) -> String {
    match value {
        Some(v) => format!("'{v}'"),
        None => "None".into(),
    }
}

#[pymethods]
impl PutReport {
    fn __repr__(&self) -> String {
        format!(
            "PutReport(version={}, layout={:?}, files={}, bytes={}, skipped={})",
            py_repr(&self.version),
            self.layout,
            self.files,
            self.bytes,
            if self.skipped { "True" } else { "False" }
        )
    }
}

#[pymethods]
impl GetReport {
    fn __repr__(&self) -> String {
        format!(
            "GetReport(version={}, layout={:?}, files={}, bytes={})",
            py_repr(&self.version),
            self.layout,
            self.files,
            self.bytes
        )
    }
}

#[pymethods]
impl VersionInfo {
    fn __repr__(&self) -> String {
        format!(
            "VersionInfo(version={:?}, created={:?}, files={}, bytes={}, current={})",
            self.version,
            self.created,
            self.files,
            self.bytes,
            if self.current { "True" } else { "False" }
        )
    }
}

#[pymethods]
impl ListedFile {
    fn __repr__(&self) -> String {
        format!(
            "ListedFile(path={:?}, kind={:?}, size={})",
            self.path, self.kind, self.size
        )
    }
}

impl PutReport {
    pub(crate) fn new(
        py: Python<'_>,
        r: storage_blocks::PutReport,
        record: &storage_blocks::VersionRecord,
    ) -> PyResult<Self> {
        Ok(PutReport {
            version: r.version,
            layout: r.layout.to_string(),
            files: r.files,
            bytes: r.bytes,
            skipped: r.skipped,
            warnings: r.warnings,
            record: record_dict(py, record)?,
        })
    }
}

impl From<storage_blocks::GetReport> for GetReport {
    fn from(r: storage_blocks::GetReport) -> Self {
        GetReport {
            version: r.version,
            layout: r.layout.to_string(),
            files: r.files,
            bytes: r.bytes,
        }
    }
}

#[pymethods]
impl RollbackReport {
    fn __repr__(&self) -> String {
        format!(
            "RollbackReport(version={:?}, previous={})",
            self.version,
            py_repr(&self.previous)
        )
    }
}

impl From<storage_blocks::RollbackReport> for RollbackReport {
    fn from(r: storage_blocks::RollbackReport) -> Self {
        RollbackReport {
            version: r.to,
            previous: r.from,
        }
    }
}

impl VersionInfo {
    pub(crate) fn new(py: Python<'_>, v: storage_blocks::VersionInfo) -> PyResult<Self> {
        Ok(VersionInfo {
            record: record_dict(py, &v.record)?,
            version: v.version,
            created: v.created,
            files: v.files,
            bytes: v.bytes,
            current: v.current,
        })
    }
}

impl From<storage_blocks::ListedFile> for ListedFile {
    fn from(f: storage_blocks::ListedFile) -> Self {
        let kind = match f.kind {
            storage_blocks::EntryKind::File => "file",
            storage_blocks::EntryKind::Dir => "dir",
            storage_blocks::EntryKind::Symlink => "symlink",
        };
        ListedFile {
            path: f.path,
            kind: kind.to_string(),
            size: f.size,
        }
    }
}
