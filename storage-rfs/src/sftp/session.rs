//! One SSH connection with its SFTP channel: the login (key first, then password), the host
//! key check against known_hosts, and SFTP errors as object store errors. The connection is
//! made on first use and made again when it drops; every request of the store shares it
//! (SFTP requests are pipelined by id).

use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;

use russh::client::{self, AuthResult, Handle};
use russh::keys::{HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh_sftp::client::RawSftpSession;
use russh_sftp::client::error::Error as SftpError;
use russh_sftp::protocol::StatusCode;
use tokio::sync::Mutex;

pub(crate) const STORE: &str = "SFTP";

/// AES-GCM first: ring's assembly with the CPU's AES instructions is several times faster
/// than the ChaCha20-Poly1305 russh prefers (plain Rust), and servers all offer it.
const CIPHERS: &[russh::cipher::Name] = &[
    russh::cipher::AES_128_GCM,
    russh::cipher::AES_256_GCM,
    russh::cipher::CHACHA20_POLY1305,
    russh::cipher::AES_256_CTR,
    russh::cipher::AES_128_CTR,
];

/// Who logs in where, and which host keys are trusted.
pub(crate) struct Login {
    pub host: String,
    pub port: u16,
    pub username: String,
    pub password: Option<String>,
    pub key: Option<Arc<PrivateKey>>,
    pub known_hosts: PathBuf,
    pub accept_unknown_host_key: bool,
    /// How long one request, or the connect and login, may take.
    pub timeout: Duration,
}

/// Never shows the password or the key.
impl fmt::Debug for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Login")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "********"))
            .field("key", &self.key.as_ref().map(|_| "********"))
            .field("known_hosts", &self.known_hosts)
            .finish()
    }
}

impl Login {
    pub(crate) fn server(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// A live connection: the SSH handle (kept so the connection stays up) and the SFTP session.
pub(crate) struct Conn {
    ssh: Handle<HostKeyCheck>,
    pub sftp: RawSftpSession,
    /// Bytes per READ or WRITE request, within the server's limits.
    pub chunk: u32,
}

impl Conn {
    fn is_closed(&self) -> bool {
        self.ssh.is_closed()
    }
}

/// The connection shared by a store's requests.
pub(crate) struct Session {
    pub login: Login,
    conn: Mutex<Option<Arc<Conn>>>,
}

impl Session {
    pub(crate) fn new(login: Login) -> Self {
        Session {
            login,
            conn: Mutex::new(None),
        }
    }

    /// The live connection, made (again) when there is none.
    pub(crate) async fn conn(&self) -> object_store::Result<Arc<Conn>> {
        let mut slot = self.conn.lock().await;
        if let Some(conn) = slot.as_ref().filter(|c| !c.is_closed()) {
            return Ok(conn.clone());
        }
        *slot = None;
        let conn = Arc::new(
            tokio::time::timeout(self.login.timeout, self.connect())
                .await
                .map_err(|_| generic(format!("{}: connect timed out", self.login.server())))??,
        );
        *slot = Some(conn.clone());
        Ok(conn)
    }

    /// Drops the connection after a failure that may have broken it; the next request
    /// connects again.
    pub(crate) async fn reset(&self, conn: &Arc<Conn>) {
        let mut slot = self.conn.lock().await;
        if slot.as_ref().is_some_and(|c| Arc::ptr_eq(c, conn)) {
            *slot = None;
        }
    }

    async fn connect(&self) -> object_store::Result<Conn> {
        let login = &self.login;
        let server = login.server();
        let verdict = Arc::new(StdMutex::new(None));
        let check = HostKeyCheck {
            host: login.host.clone(),
            port: login.port,
            known_hosts: login.known_hosts.clone(),
            accept_unknown: login.accept_unknown_host_key,
            refusal: verdict.clone(),
        };
        let config = client::Config {
            // No inactivity timeout: a store may sit idle between operations; a dead
            // connection is found by the next request (each has a timeout) and made again.
            nodelay: true,
            window_size: 8 * 1024 * 1024,
            maximum_packet_size: 64 * 1024,
            preferred: russh::Preferred {
                cipher: std::borrow::Cow::Borrowed(CIPHERS),
                ..russh::Preferred::DEFAULT
            },
            ..client::Config::default()
        };
        let mut ssh =
            match client::connect(Arc::new(config), (login.host.as_str(), login.port), check).await
            {
                Ok(ssh) => ssh,
                Err(e) => {
                    if let Some(refusal) = verdict.lock().map(|v| v.clone()).unwrap_or_default() {
                        return Err(unauthenticated(&server, refusal));
                    }
                    return Err(generic(format!("{server}: cannot connect: {e}")));
                }
            };
        let mut tried = Vec::new();
        let mut ok = false;
        if let Some(key) = &login.key {
            tried.push("key");
            let hash = if key.algorithm().is_rsa() {
                ssh.best_supported_rsa_hash()
                    .await
                    .ok()
                    .flatten()
                    .flatten()
                    .or(Some(HashAlg::Sha512))
            } else {
                None
            };
            let with_hash = PrivateKeyWithHashAlg::new(key.clone(), hash);
            ok = ssh
                .authenticate_publickey(login.username.clone(), with_hash)
                .await
                .map_err(|e| generic(format!("{server}: key login failed: {e}")))?
                .success();
        }
        if !ok && let Some(password) = &login.password {
            tried.push("password");
            let result = ssh
                .authenticate_password(login.username.clone(), password.clone())
                .await
                .map_err(|e| generic(format!("{server}: password login failed: {e}")))?;
            ok = matches!(result, AuthResult::Success);
        }
        if !ok {
            let how = if tried.is_empty() {
                "no password or private key is set".to_string()
            } else {
                format!("the server refused the {}", tried.join(" and the "))
            };
            return Err(unauthenticated(
                &server,
                format!("login as {} failed: {how}", login.username),
            ));
        }
        let channel = ssh
            .channel_open_session()
            .await
            .map_err(|e| generic(format!("{server}: cannot open a channel: {e}")))?;
        channel
            .request_subsystem(true, "sftp")
            .await
            .map_err(|e| generic(format!("{server}: no sftp subsystem: {e}")))?;
        let mut sftp = RawSftpSession::new(channel.into_stream());
        sftp.set_timeout(self.login.timeout.as_secs().max(1));
        sftp.init()
            .await
            .map_err(|e| generic(format!("{server}: sftp init failed: {e}")))?;
        // OpenSSH states its limits; others get the 32 KiB every server must take.
        let mut chunk = 32 * 1024;
        if let Ok(limits) = sftp.limits().await {
            let limits = russh_sftp::client::rawsession::Limits::from(limits);
            let most = limits
                .read_len
                .unwrap_or(0)
                .min(limits.write_len.unwrap_or(0));
            chunk = most.clamp(32 * 1024, 128 * 1024) as u32;
            sftp.set_limits(limits);
        }
        Ok(Conn { ssh, sftp, chunk })
    }
}

/// Checks the server's host key against known_hosts; the reason for a refusal is kept so
/// that the connect error can say it.
pub(crate) struct HostKeyCheck {
    host: String,
    port: u16,
    known_hosts: PathBuf,
    accept_unknown: bool,
    refusal: Arc<StdMutex<Option<String>>>,
}

impl HostKeyCheck {
    fn refuse(&self, why: String) -> bool {
        if let Ok(mut slot) = self.refusal.lock() {
            *slot = Some(why);
        }
        false
    }
}

impl client::Handler for HostKeyCheck {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let PublicKeyOrCertificate::PublicKey { key, .. } = server_key else {
            return Ok(self.refuse("the server offered a host certificate; only host keys listed in known_hosts are accepted".into()));
        };
        let file = self.known_hosts.display().to_string();
        let fingerprint = key.fingerprint(HashAlg::Sha256);
        match russh::keys::check_known_hosts_path(&self.host, self.port, key, &self.known_hosts) {
            Ok(true) => Ok(true),
            Ok(false) if self.accept_unknown => Ok(true),
            Ok(false) => Ok(self.refuse(format!(
                "host key {fingerprint} is not in known_hosts {file} (add the server's key, \
                 e.g. with ssh-keyscan, or set insecure_accept_host_key=true)"
            ))),
            Err(russh::keys::Error::KeyChanged { line }) => Ok(self.refuse(format!(
                "host key {fingerprint} differs from the one on line {line} of {file}: \
                 refused (possible man-in-the-middle)"
            ))),
            Err(e) => Ok(self.refuse(format!("cannot read known_hosts {file}: {e}"))),
        }
    }
}

pub(crate) fn generic(message: String) -> object_store::Error {
    object_store::Error::Generic {
        store: STORE,
        source: message.into(),
    }
}

pub(crate) fn unauthenticated(server: &str, why: String) -> object_store::Error {
    object_store::Error::Unauthenticated {
        path: server.to_string(),
        source: why.into(),
    }
}

/// Whether an error says the connection itself is gone (as opposed to a refused request).
pub(crate) fn breaks_connection(e: &SftpError) -> bool {
    !matches!(e, SftpError::Status(_) | SftpError::Limited(_))
}

/// The status code of a refused request.
pub(crate) fn status(e: &SftpError) -> Option<StatusCode> {
    match e {
        SftpError::Status(s) => Some(s.status_code),
        _ => None,
    }
}

/// An SFTP error as an object store error about `path`.
pub(crate) fn store_error(what: &str, path: &str, e: SftpError) -> object_store::Error {
    match status(&e) {
        Some(StatusCode::NoSuchFile) => object_store::Error::NotFound {
            path: path.to_string(),
            source: format!("{what} {path}: no such file").into(),
        },
        Some(StatusCode::PermissionDenied) => object_store::Error::PermissionDenied {
            path: path.to_string(),
            source: format!("{what} {path}: permission denied").into(),
        },
        None if breaks_connection(&e) => generic(format!(
            "{what} {path}: the SFTP connection was lost or timed out ({e})"
        )),
        _ => generic(format!("{what} {path}: {e}")),
    }
}
