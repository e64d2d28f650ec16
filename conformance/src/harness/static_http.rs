//! A static web server (`python3 -m http.server`) serving one folder on a free port of
//! 127.0.0.1, with directory listings and no Range support: the plainest server a read-only
//! `http://` block must cope with.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;

use tempfile::TempDir;

use super::process;

/// A running http.server; stopped (by its PID) when dropped.
pub struct StaticHttp {
    pub port: u16,
    /// The folder it serves.
    pub root: PathBuf,
    // Declared before `_dir`: the server stops before its folder goes away.
    _server: process::Server,
    _dir: TempDir,
}

impl StaticHttp {
    pub fn start() -> Result<StaticHttp, String> {
        let dir = tempfile::Builder::new()
            .prefix("static-http-")
            .tempdir()
            .map_err(|e| format!("static http: temp dir: {e}"))?;
        let root = dir.path().to_path_buf();
        let served = root.clone();
        let (server, port) = process::start(
            "http.server",
            |_dir, port| {
                let mut cmd = Command::new("python3");
                cmd.args([
                    "-m",
                    "http.server",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                ])
                .arg("--directory")
                .arg(&served);
                cmd
            },
            |port| TcpStream::connect(("127.0.0.1", port)).is_ok(),
        )?;
        Ok(StaticHttp {
            port,
            root,
            _server: server,
            _dir: dir,
        })
    }

    /// `http://127.0.0.1:PORT/<sub>`.
    pub fn url(&self, sub: &str) -> String {
        format!("http://127.0.0.1:{}/{sub}", self.port)
    }
}
