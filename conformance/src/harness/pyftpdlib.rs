//! An FTP server: pyftpdlib, installed from PyPI into the harness's venv, serving one folder
//! on a free port of 127.0.0.1 (passive data connections on ports it picks) to one user with
//! a password. Recipe from shared/EMULATORS.md.

use std::fs;
use std::io::Read;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use super::{install, process};

/// Pinned so that every machine tests against the same server.
const PYFTPDLIB: &str = "pyftpdlib==2.2.0";
const USER: &str = "blockftp";
/// Distinctive, so that an echo of it in any message is found.
const PASSWORD: &str = "ftp-pw-W4z7-must-never-be-echoed";

/// A running pyftpdlib; stopped (by its PID) when dropped.
pub struct PyFtpd {
    pub port: u16,
    pub user: String,
    pub password: String,
    /// The folder it serves (the user's `/`): blocks live below it.
    pub root: PathBuf,
    /// The venv's python, which has `ftplib` for cross-checks.
    pub python: PathBuf,
    // Declared before `_dir`: the server stops before its folder goes away.
    _server: process::Server,
    _dir: TempDir,
}

impl PyFtpd {
    pub fn start() -> Result<PyFtpd, String> {
        let venv = install::pip("pyftpdlib", PYFTPDLIB)?;
        let python = venv.join("bin/python");
        let dir = tempfile::Builder::new()
            .prefix("pyftpdlib-")
            .tempdir()
            .map_err(|e| format!("pyftpdlib: temp dir: {e}"))?;
        let root = dir.path().join("ftp");
        fs::create_dir(&root).map_err(|e| format!("pyftpdlib: {e}"))?;
        let (server, port) = process::start(
            "pyftpdlib",
            |_dir, port| {
                let mut cmd = Command::new(&python);
                cmd.args(["-m", "pyftpdlib", "-i", "127.0.0.1", "-p"])
                    .arg(port.to_string())
                    .arg("-w")
                    .arg("-d")
                    .arg(&root)
                    .args(["-u", USER, "-P", PASSWORD]);
                cmd
            },
            banner_seen,
        )?;
        Ok(PyFtpd {
            port,
            user: USER.into(),
            password: PASSWORD.into(),
            root,
            python,
            _server: server,
            _dir: dir,
        })
    }

    /// `ftp://127.0.0.1:PORT/<sub>`.
    pub fn url(&self, sub: &str) -> String {
        format!("ftp://127.0.0.1:{}/{sub}", self.port)
    }
}

/// The server greets with `220`.
fn banner_seen(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut buf = [0u8; 3];
    s.read_exact(&mut buf).is_ok() && &buf == b"220"
}
