//! An OCI registry: the CNCF distribution registry (Debian `docker-registry`, installed with
//! apt when missing) on a free port of 127.0.0.1, with a private config.yml, its storage in a
//! temp dir, deletes enabled and htpasswd auth for one user. Recipe from shared/EMULATORS.md.

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use base64::Engine;
use tempfile::TempDir;

use super::http::request;
use super::{install, process};

const USER: &str = "blockoci";
/// Distinctive, so that an echo of it in any message is found.
const PASSWORD: &str = "oci-pw-Qz4t-must-never-be-echoed";

/// A running registry; stopped (by its PID) when dropped.
pub struct OciRegistry {
    /// `127.0.0.1:PORT`, as a block's `registry` field takes it.
    pub host: String,
    pub user: String,
    pub password: String,
    /// The registry's filesystem storage (`rootdirectory`).
    pub storage: PathBuf,
    // Declared before `_root`: the server stops before its storage goes away.
    _server: process::Server,
    _root: TempDir,
}

impl OciRegistry {
    /// Installs the registry and htpasswd if missing and starts the registry on a free port.
    pub fn start() -> Result<OciRegistry, String> {
        let registry = install::apt("docker-registry", &["docker-registry"])?;
        let htpasswd = install::apt("htpasswd", &["apache2-utils"])?;
        let root = tempfile::Builder::new()
            .prefix("oci-registry-")
            .tempdir()
            .map_err(|e| format!("registry: temp dir: {e}"))?;
        let base = root.path().to_path_buf();
        let storage = base.join("storage");
        fs::create_dir(&storage).map_err(|e| format!("registry: storage folder: {e}"))?;
        let users = base.join("htpasswd");
        let out = Command::new(&htpasswd)
            .args(["-Bbn", USER, PASSWORD])
            .output()
            .map_err(|e| format!("registry: htpasswd: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "registry: htpasswd failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        fs::write(&users, &out.stdout).map_err(|e| format!("registry: htpasswd file: {e}"))?;
        let conf = base.join("config.yml");
        let basic = basic_header(USER, PASSWORD);
        let (server, port) = process::start(
            "docker-registry",
            |_dir, port| {
                // Written before each start, since the port is part of it.
                let _ = fs::write(&conf, config(&storage, &users, port));
                let mut cmd = Command::new(&registry);
                cmd.arg("serve").arg(&conf);
                cmd
            },
            |port| {
                let url = format!("http://127.0.0.1:{port}/v2/");
                let anonymous = request("GET", &url, &[], b"").map(|r| r.status);
                let with_user =
                    request("GET", &url, &[("Authorization", &basic)], b"").map(|r| r.status);
                anonymous == Ok(401) && with_user == Ok(200)
            },
        )?;
        Ok(OciRegistry {
            host: format!("127.0.0.1:{port}"),
            user: USER.into(),
            password: PASSWORD.into(),
            storage,
            _server: server,
            _root: root,
        })
    }

    /// Where the registry keeps the bytes of blob `sha256:<hex>` (to damage it on purpose).
    pub fn blob_file(&self, hex: &str) -> PathBuf {
        self.storage
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

fn basic_header(user: &str, password: &str) -> String {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {token}")
}

fn config(storage: &std::path::Path, users: &std::path::Path, port: u16) -> String {
    format!(
        "version: 0.1\n\
         log:\n  level: warn\n\
         storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
         http:\n  addr: 127.0.0.1:{port}\n  secret: blockctl-test-secret\n\
         auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
        storage.display(),
        users.display()
    )
}
