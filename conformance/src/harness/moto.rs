//! S3 emulator: moto's server mode, installed from PyPI into the harness's python venv.
//! It keeps data in memory and does not check signatures, so any access key works.

use std::process::Command;

use super::http::{expect, status_of};
use super::{install, process};

/// Pinned so that every machine tests against the same S3 behavior.
const REQUIREMENT: &str = "moto[server]==5.2.5";

/// A running moto server; stopped when dropped.
pub struct Moto {
    /// `http://127.0.0.1:PORT`, for a path-style S3 client.
    pub endpoint: String,
    _server: process::Server,
}

impl Moto {
    /// Installs moto if missing and starts it on a free port.
    pub fn start() -> Result<Moto, String> {
        let venv = install::pip("moto", REQUIREMENT)?;
        let bin = venv.join("bin").join("moto_server");
        let (server, port) = process::start(
            "moto",
            |_dir, port| {
                let mut cmd = Command::new(&bin);
                cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
                cmd
            },
            |port| status_of(&format!("http://127.0.0.1:{port}/moto-api/")) == Some(200),
        )?;
        Ok(Moto {
            endpoint: format!("http://127.0.0.1:{port}"),
            _server: server,
        })
    }

    /// Creates bucket `name` (in us-east-1, which needs no location body).
    pub fn create_bucket(&self, name: &str) -> Result<(), String> {
        expect(200, "PUT", &format!("{}/{name}", self.endpoint), &[], b"").map(drop)
    }

    /// Wipes every bucket and object. Panics if moto refuses, since the test cannot go on.
    pub fn reset(&self) {
        let url = format!("{}/moto-api/reset", self.endpoint);
        if let Err(e) = expect(200, "POST", &url, &[], b"") {
            panic!("moto reset failed: {e}");
        }
    }
}
