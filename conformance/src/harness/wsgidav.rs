//! A WebDAV server: wsgidav on cheroot, installed from PyPI into the harness's venv, serving
//! one folder on a free port of 127.0.0.1 with basic auth for one user. Recipe from
//! shared/EMULATORS.md.

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use base64::Engine as _;
use tempfile::TempDir;

use super::http::request;
use super::{install, process};

/// Pinned so that every machine tests against the same server.
const WSGIDAV: &str = "wsgidav==4.4.0";
const CHEROOT: &str = "cheroot==11.1.2";
const USER: &str = "blockdav";
/// Distinctive, so that an echo of it in any message is found.
const PASSWORD: &str = "dav-pw-Q8r2-must-never-be-echoed";

/// A running wsgidav; stopped (by its PID) when dropped.
pub struct WsgiDav {
    pub port: u16,
    pub user: String,
    pub password: String,
    /// The folder it serves: blocks live below it.
    pub root: PathBuf,
    // Declared before `_dir`: the server stops before its folder goes away.
    _server: process::Server,
    _dir: TempDir,
}

impl WsgiDav {
    pub fn start() -> Result<WsgiDav, String> {
        install::pip("wsgidav", WSGIDAV)?;
        let venv = install::pip("cheroot", CHEROOT)?;
        let dir = tempfile::Builder::new()
            .prefix("wsgidav-")
            .tempdir()
            .map_err(|e| format!("wsgidav: temp dir: {e}"))?;
        let root = dir.path().join("dav");
        fs::create_dir(&root).map_err(|e| format!("wsgidav: {e}"))?;
        let conf = dir.path().join("wsgidav.yaml");
        let served = root.clone();
        let auth = basic_auth(USER, PASSWORD);
        let (server, port) = process::start(
            "wsgidav",
            |_dir, port| {
                // Written before each start, since the port is part of it; a failed write
                // shows as wsgidav's own error in its log.
                let _ = fs::write(&conf, config(port, &served));
                let mut cmd = Command::new(venv.join("bin/wsgidav"));
                cmd.arg("--config").arg(&conf);
                cmd
            },
            |port| {
                let url = format!("http://127.0.0.1:{port}/");
                let authorized = [("Authorization", auth.as_str())];
                request("PROPFIND", &url, &authorized, b"").is_ok_and(|r| r.status == 207)
            },
        )?;
        Ok(WsgiDav {
            port,
            user: USER.into(),
            password: PASSWORD.into(),
            root,
            _server: server,
            _dir: dir,
        })
    }

    /// `webdav+http://127.0.0.1:PORT/<sub>`.
    pub fn url(&self, sub: &str) -> String {
        format!("webdav+http://127.0.0.1:{}/{sub}", self.port)
    }

    /// The `Authorization` header value of the server's user.
    pub fn authorization(&self) -> String {
        basic_auth(&self.user, &self.password)
    }
}

fn basic_auth(user: &str, password: &str) -> String {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {token}")
}

fn config(port: u16, root: &std::path::Path) -> String {
    format!(
        "host: 127.0.0.1\n\
         port: {port}\n\
         provider_mapping: {{'/': '{root}'}}\n\
         http_authenticator: {{domain_controller: null, accept_basic: true, accept_digest: false, default_to_digest: false}}\n\
         simple_dc: {{user_mapping: {{'*': {{'{USER}': {{password: '{PASSWORD}'}}}}}}}}\n\
         verbose: 1\n",
        root = root.display()
    )
}
