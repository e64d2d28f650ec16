//! Azure Blob emulator: Azurite's blob service, installed from npm. Every request must be
//! signed (SharedKey) with the well-known emulator account and key, so containers are made
//! by the client under test, not here.

use std::process::Command;

use super::http::status_of;
use super::{install, process};

/// Pinned so that every machine tests against the same Azure behavior.
const PACKAGE: &str = "azurite@3.35.0";
const ACCOUNT: &str = "devstoreaccount1";
/// The emulator's published, well-known key: not a secret.
const KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// A running Azurite blob service; stopped, and its data removed, when dropped.
pub struct Azurite {
    /// `http://127.0.0.1:PORT/devstoreaccount1`.
    pub endpoint: String,
    pub account: &'static str,
    pub key: &'static str,
    _server: process::Server,
}

impl Azurite {
    /// Installs Azurite if missing and starts its blob service on a free port, with its data
    /// in a fresh temp dir.
    pub fn start() -> Result<Azurite, String> {
        let node = install::npm(PACKAGE)?;
        let bin = node.join("node_modules").join(".bin").join("azurite-blob");
        let (server, port) = process::start(
            "azurite",
            |dir, port| {
                let mut cmd = Command::new(&bin);
                cmd.args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
                    .arg("--location")
                    .arg(dir.join("data"))
                    // --disableTelemetry: otherwise it tries to reach the network.
                    .args([
                        "--skipApiVersionCheck",
                        "--loose",
                        "--disableTelemetry",
                        "--silent",
                    ]);
                cmd
            },
            // An unsigned request is refused with 403 once the service is up.
            |port| {
                let url = format!("http://127.0.0.1:{port}/{ACCOUNT}?comp=list");
                status_of(&url) == Some(403)
            },
        )?;
        Ok(Azurite {
            endpoint: format!("http://127.0.0.1:{port}/{ACCOUNT}"),
            account: ACCOUNT,
            key: KEY,
            _server: server,
        })
    }
}
