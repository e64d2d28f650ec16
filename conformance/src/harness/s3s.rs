//! An S3 server that checks SigV4 signatures: s3s-fs, built from crates.io with cargo into
//! `<cache>/s3s` the first time it is needed (3 to 4 minutes). moto accepts any key, so
//! this is the server that proves wrong credentials are refused and reported as such. It has
//! listing bugs (shared/EMULATORS.md), so it serves signature checks, not the conformance suite.

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use tempfile::TempDir;

use super::http::status_of;
use super::{install, process};

/// Pinned: newer versions need a newer rustc than the workspace's.
const VERSION: &str = "0.14.1";
/// Test-only credentials the server is started with.
const ACCESS_KEY: &str = "AKIDS3SFSHARNESS";
const SECRET_KEY: &str = "s3s-fs-harness-secret-5b8e1d";

/// A running s3s-fs server; stopped, and its data removed, when dropped.
pub struct S3sFs {
    /// `http://127.0.0.1:PORT`, for a path-style S3 client.
    pub endpoint: String,
    /// The only keys whose signatures it accepts.
    pub access_key: &'static str,
    pub secret_key: &'static str,
    // Declared before `data`, so the process is killed before its folder is removed.
    _server: process::Server,
    /// The server's root: each folder in it is a bucket.
    data: TempDir,
}

impl S3sFs {
    /// Installs s3s-fs if missing and starts it on a free port of 127.0.0.1, with a fresh
    /// data folder and [`S3sFs::access_key`] / [`S3sFs::secret_key`] as its only keys.
    pub fn start() -> Result<S3sFs, String> {
        let bin = installed()?;
        let data = tempfile::Builder::new()
            .prefix("s3s-fs-data-")
            .tempdir()
            .map_err(|e| format!("s3s-fs: data dir: {e}"))?;
        let root = data.path().to_path_buf();
        let (server, port) = process::start(
            "s3s-fs",
            |_dir, port| {
                let mut cmd = Command::new(&bin);
                cmd.args(["--host", "127.0.0.1", "--port", &port.to_string()])
                    .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
                    .arg(&root);
                cmd
            },
            // With keys set, an unsigned request is refused with 403 once it listens.
            |port| status_of(&format!("http://127.0.0.1:{port}/")) == Some(403),
        )?;
        Ok(S3sFs {
            endpoint: format!("http://127.0.0.1:{port}"),
            access_key: ACCESS_KEY,
            secret_key: SECRET_KEY,
            _server: server,
            data,
        })
    }

    /// Creates bucket `name`, or accepts that it exists. s3s-fs serves every folder of its
    /// root as a bucket, so this makes the folder: the client under test (object_store) has
    /// no call for it, and the block's own signed requests are what the tests are about.
    pub fn create_bucket(&self, name: &str) -> Result<(), String> {
        let dir = self.data.path().join(name);
        fs::create_dir_all(&dir).map_err(|e| format!("create bucket {}: {e}", dir.display()))
    }
}

/// The s3s-fs binary, built by `cargo install` into `<cache>/s3s` under the harness's install
/// lock when it is missing.
fn installed() -> Result<PathBuf, String> {
    install::cargo_install("s3s", "s3s-fs", VERSION, &["binary"], "s3s-fs")
}
