//! The benchmark's peers, installed like the emulators: rclone and zstd from Debian's
//! packages, oras (an independent OCI client) from PyPI into the emulators' venv, and Prefect (with s3fs and paramiko, for its RemoteFileSystem over S3 and SFTP)
//! from PyPI into a venv of its own, so its pins never meet the emulators'.

use std::path::PathBuf;
use std::process::Command;

use super::cache_dir;
use super::install::{apt, once, pip, run};

/// Pinned so that every machine measures the same Prefect.
const PREFECT: [&str; 3] = ["prefect==3.8.8", "s3fs==2026.9.0", "paramiko==5.1.0"];

/// The `rclone` program, installed from Debian's packages when missing.
pub fn rclone() -> Result<PathBuf, String> {
    apt("rclone", &["rclone"])
}

/// The `zstd` program, installed from Debian's packages when missing.
pub fn zstd() -> Result<PathBuf, String> {
    apt("zstd", &["zstd"])
}

/// Debian's `minisign`, the reference implementation signed versions are checked against,
/// installed when missing.
pub fn minisign() -> Result<PathBuf, String> {
    apt("minisign", &["minisign"])
}

/// Pinned so that every machine cross-checks against the same OCI client.
const ORAS: &str = "oras==0.2.43";

/// A python that can `import oras` (the PyPI OCI client), installed when missing.
pub fn oras_python() -> Result<PathBuf, String> {
    Ok(pip("oras", ORAS)?.join("bin/python"))
}

/// The python of a venv holding Prefect, s3fs and paramiko (about a minute the first time).
pub fn prefect_python() -> Result<PathBuf, String> {
    let venv = cache_dir().join("prefect-venv");
    let marker = venv.join(".installed");
    once("prefect", &marker, &PREFECT.join(" "), || {
        run(Command::new("python3")
            .args(["-m", "venv", "--clear"])
            .arg(&venv))?;
        run(Command::new(venv.join("bin/pip"))
            .args(["install", "--disable-pip-version-check", "--no-input"])
            .args(PREFECT))
    })?;
    Ok(venv.join("bin/python"))
}
