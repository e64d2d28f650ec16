//! What the functions return, as read-only Python objects with the fields of the Rust reports.

use pyo3::prelude::*;

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
}

/// What `get_directory` wrote.
#[pyclass(frozen, get_all, module = "storage_blocks")]
pub(crate) struct GetReport {
    version: Option<String>,
    layout: String,
    files: u64,
    bytes: u64,
}

/// One stored version, as `list_versions` lists them (newest first).
#[pyclass(frozen, get_all, module = "storage_blocks")]
pub(crate) struct VersionInfo {
    version: String,
    created: String,
    files: u64,
    bytes: u64,
    current: bool,
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

impl From<storage_blocks::PutReport> for PutReport {
    fn from(r: storage_blocks::PutReport) -> Self {
        PutReport {
            version: r.version,
            layout: r.layout.to_string(),
            files: r.files,
            bytes: r.bytes,
            skipped: r.skipped,
            warnings: r.warnings,
        }
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

impl From<storage_blocks::VersionInfo> for VersionInfo {
    fn from(v: storage_blocks::VersionInfo) -> Self {
        VersionInfo {
            version: v.version,
            created: v.created,
            files: v.files,
            bytes: v.bytes,
            current: v.current,
        }
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
