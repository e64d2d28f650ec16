//! An OCI registry: the CNCF distribution registry (Debian `docker-registry`, installed with
//! apt when missing) on a free port of 127.0.0.1, with a private config.yml, its storage in a
//! temp dir, deletes enabled and one user, either checked by the registry itself (htpasswd,
//! Basic auth) or by a token service beside it (token auth, Bearer challenges). Recipe from
//! shared/EMULATORS.md.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;
use tempfile::TempDir;

use super::distribution_token::{ISSUER, SERVICE, TokenServer};
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
    /// The token service of a registry started with tokens.
    tokens: Option<TokenServer>,
    _root: TempDir,
}

impl OciRegistry {
    /// The port the registry listens on, on 127.0.0.1.
    pub fn port(&self) -> u16 {
        let (_, port) = self.host.rsplit_once(':').expect("127.0.0.1:PORT");
        port.parse().expect("a port")
    }

    /// Installs the registry and htpasswd if missing and starts the registry on a free port,
    /// taking Basic credentials itself.
    pub fn start() -> Result<OciRegistry, String> {
        let htpasswd = install::apt("htpasswd", &["apache2-utils"])?;
        let root = temp_root()?;
        let users = root.path().join("htpasswd");
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
        let auth = format!(
            "auth:\n  htpasswd:\n    realm: test\n    path: {}\n",
            users.display()
        );
        Self::serve(root, auth, basic_header(USER, PASSWORD), None)
    }

    /// Starts the registry with distribution's token auth, as hosted registries run: it
    /// answers with a Bearer challenge, and a token service run by this harness trades the
    /// user's Basic credentials for signed tokens.
    pub fn start_with_tokens() -> Result<OciRegistry, String> {
        let root = temp_root()?;
        let tokens = TokenServer::start(USER, PASSWORD)?;
        let bundle = root.path().join("token-signer.pem");
        fs::write(&bundle, &tokens.certificate)
            .map_err(|e| format!("registry: rootcertbundle: {e}"))?;
        let auth = format!(
            "auth:\n  token:\n    realm: {}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    \
             rootcertbundle: {}\n",
            tokens.realm,
            bundle.display()
        );
        // Ready once a token of the service opens the registry: the signature is trusted.
        let bearer = format!("Bearer {}", tokens.fetch("")?);
        Self::serve(root, auth, bearer, Some(tokens))
    }

    /// Starts the registry with `auth` (its config section) on a free port; it is ready once
    /// it refuses an anonymous request and lets one with `authorization` in.
    fn serve(
        root: TempDir,
        auth: String,
        authorization: String,
        tokens: Option<TokenServer>,
    ) -> Result<OciRegistry, String> {
        let registry = install::apt("docker-registry", &["docker-registry"])?;
        let storage = root.path().join("storage");
        fs::create_dir(&storage).map_err(|e| format!("registry: storage folder: {e}"))?;
        let conf = root.path().join("config.yml");
        let (server, port) = process::start(
            "docker-registry",
            |_dir, port| {
                // Written before each start, since the port is part of it.
                let _ = fs::write(&conf, config(&storage, &auth, port));
                let mut cmd = Command::new(&registry);
                cmd.arg("serve").arg(&conf);
                cmd
            },
            |port| {
                let url = format!("http://127.0.0.1:{port}/v2/");
                let anonymous = request("GET", &url, &[], b"").map(|r| r.status);
                let with_auth = request("GET", &url, &[("Authorization", &authorization)], b"")
                    .map(|r| r.status);
                anonymous == Ok(401) && with_auth == Ok(200)
            },
        )?;
        Ok(OciRegistry {
            host: format!("127.0.0.1:{port}"),
            user: USER.into(),
            password: PASSWORD.into(),
            storage,
            _server: server,
            tokens,
            _root: root,
        })
    }

    /// A token for `scope` (`repository:NAME:ACTIONS`) from the token service, as a user
    /// would fetch one with curl. Only a registry started with tokens has one.
    pub fn fetch_token(&self, scope: &str) -> Result<String, String> {
        let tokens = self
            .tokens
            .as_ref()
            .ok_or("this registry takes no tokens")?;
        tokens.fetch(scope)
    }

    /// Every scope the token service issued a token for so far (none without tokens).
    pub fn scopes_granted(&self) -> Vec<String> {
        self.tokens
            .as_ref()
            .map(TokenServer::granted)
            .unwrap_or_default()
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

fn temp_root() -> Result<TempDir, String> {
    tempfile::Builder::new()
        .prefix("oci-registry-")
        .tempdir()
        .map_err(|e| format!("registry: temp dir: {e}"))
}

pub(super) fn basic_header(user: &str, password: &str) -> String {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {token}")
}

fn config(storage: &Path, auth: &str, port: u16) -> String {
    format!(
        "version: 0.1\n\
         log:\n  level: warn\n\
         storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
         http:\n  addr: 127.0.0.1:{port}\n  secret: blockctl-test-secret\n\
         {auth}",
        storage.display()
    )
}
