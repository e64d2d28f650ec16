//! A private Samba server (`smbd`, installed with apt when missing) serving one share,
//! `share`, to one user, on a free port of 127.0.0.1. Recipe from shared/EMULATORS.md: every
//! state folder of the server lives in a fresh folder of its own.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use tempfile::TempDir;

use super::{cache_dir, install, process};

/// The unix account the share's files belong to; made once per machine.
const USER: &str = "blocksmb";
/// Distinctive, so that an echo of it in any message is found.
const PASSWORD: &str = "samba-pw-Zq4t-must-never-be-echoed";

/// A running smbd; stopped (by its PID) when dropped.
pub struct Samba {
    pub host: String,
    pub port: u16,
    pub share: String,
    pub user: String,
    pub password: String,
    /// The folder the share serves.
    pub share_dir: PathBuf,
    // Declared before `_root`: the server stops before its folders go away.
    _server: process::Server,
    _root: TempDir,
}

impl Samba {
    /// Installs Samba if missing, makes the user, and starts smbd on a free port.
    pub fn start() -> Result<Samba, String> {
        let smbd = install::apt("smbd", &["samba", "smbclient"])?;
        let smbpasswd = install::find_program("smbpasswd")
            .ok_or("smbpasswd is missing although smbd is installed")?;
        unix_user()?;
        let root = tempfile::Builder::new()
            .prefix("samba-")
            .tempdir()
            .map_err(|e| format!("samba: temp dir: {e}"))?;
        // The share's user must reach the share through this folder.
        set_mode(root.path(), 0o755)?;
        for dir in ["private", "lock", "state", "cache", "pid", "ncalrpc", "log"] {
            fs::create_dir_all(root.path().join("samba").join(dir))
                .map_err(|e| format!("samba: {dir} folder: {e}"))?;
        }
        let share_dir = root.path().join("share");
        fs::create_dir(&share_dir).map_err(|e| format!("samba: share folder: {e}"))?;
        install::run(Command::new("chown").arg(USER).arg(&share_dir))?;
        let conf = root.path().join("smb.conf");
        // smbpasswd binds no port (any valid one will do here); smbd gets its own below.
        write_conf(&conf, root.path(), 445)?;
        add_samba_user(&smbpasswd, &conf)?;

        let base = root.path().to_path_buf();
        let (server, port) = process::start(
            "smbd",
            |_dir, port| {
                // Written here, before each start, because the port is part of it. A failed
                // write shows as smbd's own error in the log.
                let _ = write_conf(&conf, &base, port);
                let mut cmd = Command::new(&smbd);
                cmd.args([
                    "-F",
                    "--no-process-group",
                    "--debug-stdout",
                    "-d",
                    "1",
                    "-s",
                ])
                .arg(&conf);
                cmd
            },
            |port| smbclient_at(port, "ls").is_ok(),
        )?;
        Ok(Samba {
            host: "127.0.0.1".into(),
            port,
            share: "share".into(),
            user: USER.into(),
            password: PASSWORD.into(),
            share_dir,
            _server: server,
            _root: root,
        })
    }

    /// Runs `smbclient -c COMMANDS` against the share as its user; returns what it printed.
    pub fn smbclient(&self, commands: &str) -> Result<String, String> {
        smbclient_at(self.port, commands)
    }
}

fn smbclient_at(port: u16, commands: &str) -> Result<String, String> {
    let out = Command::new("smbclient")
        .arg("//127.0.0.1/share")
        .args(["-p", &port.to_string(), "-U", &format!("{USER}%{PASSWORD}")])
        .args(["-c", commands])
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run smbclient: {e}"))?;
    process::printed(out, &format!("smbclient -c {commands:?}"))
}

fn set_mode(path: &Path, mode: u32) -> Result<(), String> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {}: {e}", path.display()))
}

fn write_conf(conf: &Path, root: &Path, port: u16) -> Result<(), String> {
    let s = root.join("samba");
    let s = s.display();
    let share = root.join("share");
    let text = format!(
        "[global]
   server role = standalone server
   security = user
   passdb backend = tdbsam:{s}/private/passdb.tdb
   private dir = {s}/private
   lock directory = {s}/lock
   state directory = {s}/state
   cache directory = {s}/cache
   pid directory = {s}/pid
   ncalrpc dir = {s}/ncalrpc
   log file = {s}/log/log.%m
   smb ports = {port}
   interfaces = 127.0.0.1/8
   bind interfaces only = yes
   disable netbios = yes
   load printers = no
   printing = bsd
   printcap name = /dev/null
   disable spoolss = yes
   server min protocol = SMB2_02
[share]
   path = {share}
   read only = no
   valid users = {USER}
",
        share = share.display()
    );
    fs::write(conf, text).map_err(|e| format!("write {}: {e}", conf.display()))
}

/// The unix account behind the Samba user (no home, no shell), made once per machine.
fn unix_user() -> Result<(), String> {
    let exists = || install::unix_user_exists(USER);
    if exists() {
        return Ok(());
    }
    let marker = cache_dir().join(".samba-user");
    let _ = fs::remove_file(&marker);
    install::once("samba-user", &marker, USER, || {
        if exists() {
            return Ok(());
        }
        install::run(Command::new("useradd").args(["-M", "-s", "/usr/sbin/nologin", USER]))
    })
}

/// Adds the user to this server's password database (`smbpasswd -s` reads the password
/// twice from stdin).
fn add_samba_user(smbpasswd: &Path, conf: &Path) -> Result<(), String> {
    let out = process::output_fed(
        Command::new(smbpasswd)
            .arg("-c")
            .arg(conf)
            .args(["-s", "-a", USER]),
        &format!("{PASSWORD}\n{PASSWORD}\n"),
        "smbpasswd",
    )?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "smbpasswd -a {USER} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}
