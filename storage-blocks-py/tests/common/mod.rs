//! Runs pytest in the harness's venv (the wheel of this checkout and Prefect installed).

use std::path::Path;
use std::process::Command;

use conformance::harness::{path_with_venv, storage_blocks_venv};

/// Runs pytest on `paths` (relative to this crate) with `env` added; panics with pytest's
/// output when a test fails. The venv's `bin/` comes first on PATH, so `blockctl` is the
/// wheel's console script.
pub fn pytest(paths: &[&str], env: &[(&str, &str)]) {
    let venv = storage_blocks_venv().unwrap_or_else(|e| panic!("{e}"));
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let path = path_with_venv().unwrap_or_else(|e| panic!("{e}"));
    let scratch = tempfile::tempdir().expect("temp dir");
    let mut cmd = Command::new(venv.join("bin/python"));
    cmd.args(["-m", "pytest", "-q", "-p", "no:cacheprovider", "-rA"])
        .arg("--basetemp")
        .arg(scratch.path().join("pytest"))
        .args(paths.iter().map(|p| crate_dir.join(p)))
        .current_dir(scratch.path())
        .env("PATH", path)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env_remove("BLOCKCTL_HOME");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run pytest");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "pytest failed:\n{text}");
    // Shown with --nocapture: which Python tests ran.
    eprintln!("{text}");
}
