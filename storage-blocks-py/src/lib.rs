//! `storage_blocks._native`: the Rust half of the `storage_blocks` Python module. Each function
//! opens a slug through the registry, runs the transfer on a shared tokio runtime with the
//! GIL released, and turns a failure into the exception class of its blockctl exit code. The
//! Python half (`python/storage_blocks`) adds the async twins and the Prefect integration.

mod errors;
mod reports;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use pyo3::prelude::*;
use pyo3::types::PyBytes;
use storage_blocks::{
    BlockSlug, Error, GetMode, GetOptions, Layout, PutOptions, Registry, RollbackOptions,
    StorageBlock, VersionPrecondition, prefect,
};

use errors::to_py;
use reports::{GetReport, ListedFile, PutReport, RollbackReport, VersionInfo};

/// The runtime every call runs on, with the id of the process that made it: a child made by
/// `fork` has none of its threads, so it makes its own (the parent's is left alone).
static RUNTIME: Mutex<Option<(u32, Arc<tokio::runtime::Runtime>)>> = Mutex::new(None);

fn runtime() -> storage_blocks::Result<Arc<tokio::runtime::Runtime>> {
    let mut slot = RUNTIME.lock().unwrap_or_else(PoisonError::into_inner);
    let pid = std::process::id();
    if let Some((owner, rt)) = slot.as_ref()
        && *owner == pid
    {
        return Ok(rt.clone());
    }
    let rt = Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("storage-blocks")
            .build()
            .map_err(|e| Error::io("starting the async runtime", e))?,
    );
    // A runtime inherited through fork has no threads left to join: never drop it.
    if let Some(stale) = slot.replace((pid, rt.clone())) {
        std::mem::forget(stale);
    }
    Ok(rt)
}

/// Runs `work` on the runtime with the GIL released, so other Python threads (and asyncio's
/// `to_thread` twins) go on during a transfer.
fn detached<T: Send>(
    py: Python<'_>,
    work: impl Future<Output = storage_blocks::Result<T>> + Send,
) -> PyResult<T> {
    py.detach(|| runtime()?.block_on(work)).map_err(to_py)
}

fn open(slug: &str) -> storage_blocks::Result<(Arc<dyn StorageBlock>, BlockSlug)> {
    let parsed = BlockSlug::parse(slug)?;
    let block = Registry::load()?.open_block(&parsed.block)?;
    Ok((block, parsed))
}

/// Uploads the folder `local_path` to `slug`.
#[pyfunction]
#[pyo3(signature = (local_path, slug, *, layout = "package", ignore_file = None, if_version = None, follow_symlinks = false, no_default_ignores = false, message = None, author = None, labels = None))]
#[allow(clippy::too_many_arguments)]
fn put_directory(
    py: Python<'_>,
    local_path: PathBuf,
    slug: String,
    layout: &str,
    ignore_file: Option<PathBuf>,
    if_version: Option<String>,
    follow_symlinks: bool,
    no_default_ignores: bool,
    message: Option<String>,
    author: Option<String>,
    labels: Option<BTreeMap<String, String>>,
) -> PyResult<PutReport> {
    let layout = match layout {
        "package" => Layout::Package,
        "files" => Layout::Files,
        other => {
            return Err(to_py(Error::Usage(format!(
                "layout must be \"package\" or \"files\", not {other:?}"
            ))));
        }
    };
    let if_version = if_version.map(precondition);
    let mut checked = BTreeMap::new();
    for (k, v) in labels.unwrap_or_default() {
        let (k, v) = storage_blocks::record::parse_label(&format!("{k}={v}")).map_err(to_py)?;
        checked.insert(k, v);
    }
    // A git repository that cannot be read loses only its provenance, as in blockctl.
    let (record, _warning) =
        storage_blocks::provenance::version_record(&local_path, message, author, checked)
            .map_err(to_py)?;
    let opts = PutOptions {
        layout,
        ignore_file,
        no_default_ignores,
        if_version,
        follow_symlinks,
        record: Some(record.clone()),
        ..PutOptions::default()
    };
    let report = detached(py, async move {
        let (block, slug) = open(&slug)?;
        block.put_directory(&local_path, &slug.path, &opts).await
    })?;
    PutReport::new(py, report, &record)
}

/// `--if-version`'s argument: `"none"` (no version yet) or an id or unique prefix.
fn precondition(v: String) -> VersionPrecondition {
    match v.as_str() {
        "none" => VersionPrecondition::NoVersion,
        _ => VersionPrecondition::Current(v),
    }
}

/// Downloads `slug` into the folder `local_path`, verified before anything appears there.
/// `allow_rollback` takes a signed HEAD older than one this agent already accepted.
#[pyfunction]
#[pyo3(signature = (slug, local_path, *, version = None, mode = "empty", only = None, allow_rollback = false))]
fn get_directory(
    py: Python<'_>,
    slug: String,
    local_path: PathBuf,
    version: Option<String>,
    mode: &str,
    only: Option<Vec<String>>,
    allow_rollback: bool,
) -> PyResult<GetReport> {
    let mode = match mode {
        "empty" => GetMode::EmptyOnly,
        "replace" => GetMode::Replace,
        "merge" => GetMode::Merge,
        other => {
            return Err(to_py(Error::Usage(format!(
                "mode must be \"empty\", \"replace\" or \"merge\", not {other:?}"
            ))));
        }
    };
    let opts = GetOptions {
        version,
        mode,
        only: only.unwrap_or_default(),
        allow_rollback,
        ..GetOptions::default()
    };
    let report = detached(py, async move {
        let (block, slug) = open(&slug)?;
        block.get_directory(&slug.path, &local_path, &opts).await
    })?;
    Ok(report.into())
}

/// Makes an older stored version of `slug` current again (`to`, an id or unique prefix; by
/// default the one current before), through the same HEAD swap as a put: `blockctl
/// rollback`. A signing block signs the new HEAD; `valid_for` is its lifetime in seconds.
#[pyfunction]
#[pyo3(signature = (slug, *, to = None, if_version = None, valid_for = None))]
fn rollback(
    py: Python<'_>,
    slug: String,
    to: Option<String>,
    if_version: Option<String>,
    valid_for: Option<f64>,
) -> PyResult<RollbackReport> {
    let valid_for = valid_for
        .map(|s| {
            std::time::Duration::try_from_secs_f64(s)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    to_py(Error::Usage(format!(
                        "valid_for must be a positive number of seconds, not {s}"
                    )))
                })
        })
        .transpose()?;
    let opts = RollbackOptions {
        to,
        if_version: if_version.map(precondition),
        valid_for,
    };
    let report = detached(py, async move {
        let (block, parsed) = open(&slug)?;
        block.rollback(&parsed.path, &opts).await
    })?;
    Ok(report.into())
}

/// One file's bytes: `slug` is `TYPE/NAME/PATH/FILE`.
#[pyfunction]
fn read_path<'py>(py: Python<'py>, slug: String) -> PyResult<Bound<'py, PyBytes>> {
    let bytes = detached(py, async move {
        let (block, parsed) = open(&slug)?;
        if parsed.path.is_root() {
            return Err(Error::Usage(format!("{slug}: read_path needs SLUG/FILE")));
        }
        block.read_path(&parsed.path).await
    })?;
    Ok(PyBytes::new(py, &bytes))
}

/// Versions stored at `slug`, newest first.
#[pyfunction]
fn list_versions(py: Python<'_>, slug: String) -> PyResult<Vec<VersionInfo>> {
    let versions = detached(py, async move {
        let (block, parsed) = open(&slug)?;
        block.list_versions(&parsed.path).await
    })?;
    versions
        .into_iter()
        .map(|v| VersionInfo::new(py, v))
        .collect()
}

/// Files of the current version (or of the mirror) at `slug`.
#[pyfunction]
fn list_files(py: Python<'_>, slug: String) -> PyResult<Vec<ListedFile>> {
    let files = detached(py, async move {
        let (block, parsed) = open(&slug)?;
        block.list_files(&parsed.path).await
    })?;
    Ok(files.into_iter().map(Into::into).collect())
}

/// Reaches the storage of the block `slug` names and checks its credentials.
#[pyfunction]
fn check(py: Python<'_>, slug: String) -> PyResult<()> {
    detached(py, async move {
        let (block, _) = open(&slug)?;
        block.check().await
    })
}

/// `(blockctl id, Prefect block)` pairs imported and `(Prefect block, reason)` pairs skipped.
type ImportLists = (Vec<(String, String)>, Vec<(String, String)>);

/// Imports the storage blocks saved on the Prefect server at `api_url` into the registry:
/// what `blockctl block import-prefect` does.
#[pyfunction]
#[pyo3(signature = (api_url, api_key = None, *, overwrite = false, dry_run = false))]
fn import_prefect(
    py: Python<'_>,
    api_url: String,
    api_key: Option<String>,
    overwrite: bool,
    dry_run: bool,
) -> PyResult<ImportLists> {
    let report = detached(py, async move {
        let blocks = prefect::fetch_blocks(&api_url, api_key.as_deref()).await?;
        let mut registry = Registry::load()?;
        prefect::import_blocks(&mut registry, &blocks, overwrite, dry_run)
    })?;
    Ok((report.imported, report.skipped))
}

/// Runs blockctl with `args` (program name first) and returns its exit code: the body of the
/// wheel's `blockctl` console script.
#[pyfunction]
fn run_cli(py: Python<'_>, args: Vec<OsString>) -> i32 {
    py.detach(|| blockctl::run(args))
}

/// storage blocks: ship flow-project folders to storage and back, addressed by slugs.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    errors::register(m)?;
    m.add_class::<PutReport>()?;
    m.add_class::<GetReport>()?;
    m.add_class::<VersionInfo>()?;
    m.add_class::<ListedFile>()?;
    m.add_class::<RollbackReport>()?;
    m.add_function(wrap_pyfunction!(put_directory, m)?)?;
    m.add_function(wrap_pyfunction!(get_directory, m)?)?;
    m.add_function(wrap_pyfunction!(read_path, m)?)?;
    m.add_function(wrap_pyfunction!(rollback, m)?)?;
    m.add_function(wrap_pyfunction!(list_versions, m)?)?;
    m.add_function(wrap_pyfunction!(list_files, m)?)?;
    m.add_function(wrap_pyfunction!(check, m)?)?;
    m.add_function(wrap_pyfunction!(import_prefect, m)?)?;
    m.add_function(wrap_pyfunction!(run_cli, m)?)?;
    Ok(())
}
