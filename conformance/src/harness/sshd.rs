//! A private OpenSSH server (`sshd`, installed with apt when missing) on a free port of
//! 127.0.0.1, with its own config, a generated host key, one user that logs in with a key or a
//! password, and the internal SFTP server. Recipe from shared/EMULATORS.md.

use std::fs;
use std::io::Read;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use super::{cache_dir, install, process};

/// The unix account that logs in; made once per machine.
const USER: &str = "blocksftp";
/// Distinctive, so that an echo of it in any message is found.
const PASSWORD: &str = "sftp-pw-Hv7c-must-never-be-echoed";

/// A running sshd; stopped (by its PID) when dropped.
pub struct Sshd {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    /// The client's private key (OpenSSH format, no passphrase), authorized for `user`.
    pub client_key: PathBuf,
    /// A key the server does not authorize.
    pub stranger_key: PathBuf,
    /// A known_hosts file that lists this server's host key.
    pub known_hosts: PathBuf,
    /// A known_hosts file that lists another key for this server.
    pub wrong_known_hosts: PathBuf,
    /// A folder the user owns: blocks live below it.
    pub data_dir: PathBuf,
    /// The host key's public half, as `ALGORITHM BASE64`.
    pub host_key: String,
    // Declared before `_root`: the server stops before its folders go away.
    _server: process::Server,
    _root: TempDir,
}

impl Sshd {
    /// Installs OpenSSH's server if missing, makes the user, and starts sshd on a free port.
    pub fn start() -> Result<Sshd, String> {
        let sshd = install::apt("sshd", &["openssh-server", "openssh-client"])?;
        // Privilege separation needs this folder; Debian makes it only when the service runs.
        fs::create_dir_all("/run/sshd").map_err(|e| format!("sshd: /run/sshd: {e}"))?;
        unix_user()?;
        let root = tempfile::Builder::new()
            .prefix("sshd-")
            .tempdir()
            .map_err(|e| format!("sshd: temp dir: {e}"))?;
        // The user must reach its data folder through this one.
        set_mode(root.path(), 0o755)?;
        let base = root.path().to_path_buf();
        for key in ["host", "client", "stranger", "other_host"] {
            keygen(&base.join(key))?;
        }
        fs::copy(base.join("client.pub"), base.join("authorized_keys"))
            .map_err(|e| format!("sshd: authorized_keys: {e}"))?;
        let data_dir = base.join("data");
        fs::create_dir(&data_dir).map_err(|e| format!("sshd: data folder: {e}"))?;
        install::run(Command::new("chown").arg(USER).arg(&data_dir))?;
        let conf = base.join("sshd_config");
        let (server, port) = process::start(
            "sshd",
            |_dir, port| {
                // Written before each start, since the port is part of it; a failed write
                // shows as sshd's own error in its log.
                let _ = write_conf(&conf, &base, port);
                let mut cmd = Command::new(&sshd);
                cmd.args(["-D", "-e", "-f"]).arg(&conf);
                cmd
            },
            banner_seen,
        )?;
        let public = |pub_file: &str| -> Result<String, String> {
            let key = fs::read_to_string(base.join(pub_file))
                .map_err(|e| format!("sshd: {pub_file}: {e}"))?;
            Ok(key.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
        };
        let host_line =
            |pub_file: &str| Ok::<_, String>(format!("[127.0.0.1]:{port} {}\n", public(pub_file)?));
        let known_hosts = base.join("known_hosts");
        fs::write(&known_hosts, host_line("host.pub")?)
            .map_err(|e| format!("sshd: known_hosts: {e}"))?;
        let wrong_known_hosts = base.join("wrong_known_hosts");
        fs::write(&wrong_known_hosts, host_line("other_host.pub")?)
            .map_err(|e| format!("sshd: known_hosts: {e}"))?;
        Ok(Sshd {
            host: "127.0.0.1".into(),
            port,
            user: USER.into(),
            password: PASSWORD.into(),
            client_key: base.join("client"),
            stranger_key: base.join("stranger"),
            known_hosts,
            wrong_known_hosts,
            data_dir,
            host_key: public("host.pub")?,
            _server: server,
            _root: root,
        })
    }

    /// A known_hosts file in `dir` that lists this server's host key for `port` (a proxy in
    /// front of it, say).
    pub fn known_hosts_for(&self, port: u16, dir: &Path) -> PathBuf {
        let path = dir.join(format!("known_hosts-{port}"));
        fs::write(&path, format!("[127.0.0.1]:{port} {}\n", self.host_key))
            .expect("write known_hosts");
        path
    }

    /// `sftp://127.0.0.1:PORT/<data dir>/<sub>`.
    pub fn url(&self, sub: &str) -> String {
        format!(
            "sftp://{}:{}{}/{sub}",
            self.host,
            self.port,
            self.data_dir.display()
        )
    }

    /// Runs the OpenSSH `sftp` client in batch mode with the client key, the commands given
    /// on its stdin; returns what it printed.
    pub fn sftp(&self, commands: &str) -> Result<String, String> {
        let out = process::output_fed(
            Command::new("sftp")
                .args(["-b", "-", "-P", &self.port.to_string(), "-i"])
                .arg(&self.client_key)
                .arg("-o")
                .arg(format!("UserKnownHostsFile={}", self.known_hosts.display()))
                .args(["-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes"])
                .arg(format!("{}@{}", self.user, self.host)),
            commands,
            "sftp",
        )?;
        process::printed(out, "sftp")
    }
}

/// The server answers with its `SSH-2.0-` banner.
fn banner_seen(port: u16) -> bool {
    let Ok(mut conn) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
    let mut buf = [0u8; 8];
    conn.read_exact(&mut buf).is_ok() && buf.starts_with(b"SSH-")
}

fn keygen(path: &Path) -> Result<(), String> {
    install::run(
        Command::new("ssh-keygen")
            .args([
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                "storage-blocks-test",
                "-f",
            ])
            .arg(path),
    )
}

fn set_mode(path: &Path, mode: u32) -> Result<(), String> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {}: {e}", path.display()))
}

fn write_conf(conf: &Path, base: &Path, port: u16) -> Result<(), String> {
    let b = base.display();
    let text = format!(
        "Port {port}
ListenAddress 127.0.0.1
HostKey {b}/host
PidFile {b}/sshd.pid
AuthorizedKeysFile {b}/authorized_keys
StrictModes no
UsePAM no
PasswordAuthentication yes
KbdInteractiveAuthentication no
PermitRootLogin no
AllowUsers {USER}
UseDNS no
MaxStartups 200
MaxAuthTries 10
LoginGraceTime 30
Subsystem sftp internal-sftp
"
    );
    fs::write(conf, text).map_err(|e| format!("write {}: {e}", conf.display()))
}

/// The unix account that logs in (no home, a shell for sshd to accept it), with its
/// password; made once per machine.
fn unix_user() -> Result<(), String> {
    let exists = || install::unix_user_exists(USER);
    let marker = cache_dir().join(".sftp-user");
    if !exists() {
        let _ = fs::remove_file(&marker);
    }
    install::once("sftp-user", &marker, USER, || {
        if !exists() {
            install::run(Command::new("useradd").args(["-M", "-s", "/bin/sh", USER]))?;
        }
        let out = process::output_fed(
            &mut Command::new("chpasswd"),
            &format!("{USER}:{PASSWORD}\n"),
            "chpasswd",
        )?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "chpasswd failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    })
}
