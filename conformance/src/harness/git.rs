//! Git servers: `git daemon` (git://, anonymous push) and smart HTTP with basic auth
//! (lighttpd + mod_cgi + `git http-backend`, lighttpd installed with apt when missing), each
//! serving bare repositories under a fresh folder. Recipes follow shared/EMULATORS.md.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

use tempfile::TempDir;

use super::{install, process};

/// A running git daemon; stopped when dropped.
pub struct GitDaemon {
    /// `git://127.0.0.1:PORT`; a repository `NAME` is at `{base_url}/NAME.git`.
    pub base_url: String,
    // Declared before `repos`: the server stops before its folder goes away.
    _server: process::Server,
    repos: TempDir,
}

impl GitDaemon {
    /// Starts `git-daemon` on a free port over a fresh folder holding the bare repository
    /// `repo.git` (branch `main`).
    pub fn start() -> Result<GitDaemon, String> {
        let repos = repos_dir()?;
        let daemon = Path::new(&exec_path()?).join("git-daemon");
        let base = repos.path().to_path_buf();
        let (server, port) = process::start(
            "git-daemon",
            |_dir, port| {
                // Started directly: `git daemon` forks, so its PID would be the wrong one.
                let mut cmd = Command::new(&daemon);
                cmd.args(["--export-all", "--enable=receive-pack", "--reuseaddr"])
                    .arg(format!("--base-path={}", base.display()))
                    .args(["--listen=127.0.0.1", &format!("--port={port}")])
                    .arg(&base);
                cmd
            },
            |port| ls_remote(&format!("git://127.0.0.1:{port}/repo.git")),
        )?;
        Ok(GitDaemon {
            base_url: format!("git://127.0.0.1:{port}"),
            _server: server,
            repos,
        })
    }

    /// Creates the empty bare repository `NAME.git` and returns its URL.
    pub fn create_repo(&self, name: &str) -> Result<String, String> {
        init_bare(&self.repos.path().join(format!("{name}.git")))?;
        Ok(format!("{}/{name}.git", self.base_url))
    }
}

/// A running lighttpd serving `git http-backend` behind basic auth; stopped when dropped.
pub struct GitHttp {
    /// `http://127.0.0.1:PORT/git`; a repository `NAME` is at `{base_url}/NAME.git`.
    pub base_url: String,
    /// The one user the server knows.
    pub user: &'static str,
    pub password: &'static str,
    _server: process::Server,
    repos: TempDir,
}

impl GitHttp {
    const USER: &'static str = "flows";
    const PASSWORD: &'static str = "http-Passw0rd-for-conformance";

    /// Installs lighttpd if missing and starts it on a free port over a fresh folder holding
    /// the bare repository `repo.git` (branch `main`).
    pub fn start() -> Result<GitHttp, String> {
        let lighttpd = install::apt("lighttpd", &["lighttpd"])?;
        let backend = Path::new(&exec_path()?).join("git-http-backend");
        let repos = repos_dir()?;
        let root = repos.path().to_path_buf();
        let user = Self::USER;
        let password = Self::PASSWORD;
        let (server, port) = process::start(
            "lighttpd",
            |dir, port| {
                let conf = dir.join("lighttpd.conf");
                let docs = dir.join("www");
                let _ = fs::create_dir_all(&docs);
                let users = dir.join("users");
                let _ = fs::write(&users, format!("{user}:{password}\n"));
                let _ = fs::write(&conf, config(port, &docs, dir, &backend, &root, &users));
                let mut cmd = Command::new(&lighttpd);
                cmd.arg("-D").arg("-f").arg(&conf);
                cmd
            },
            |port| {
                ls_remote(&format!(
                    "http://{user}:{password}@127.0.0.1:{port}/git/repo.git"
                ))
            },
        )?;
        Ok(GitHttp {
            base_url: format!("http://127.0.0.1:{port}/git"),
            user,
            password,
            _server: server,
            repos,
        })
    }

    /// Creates the empty bare repository `NAME.git` and returns its URL (no credentials in
    /// it).
    pub fn create_repo(&self, name: &str) -> Result<String, String> {
        init_bare(&self.repos.path().join(format!("{name}.git")))?;
        Ok(format!("{}/{name}.git", self.base_url))
    }

    /// The URL of `NAME.git` with the user and password in it, for the git command line.
    pub fn authed_url(&self, name: &str) -> String {
        self.base_url.replacen(
            "http://",
            &format!("http://{}:{}@", self.user, self.password),
            1,
        ) + &format!("/{name}.git")
    }
}

fn config(
    port: u16,
    docs: &Path,
    dir: &Path,
    backend: &Path,
    repos: &Path,
    users: &Path,
) -> String {
    // No server.stream-request-body = 2: chunked pushes then get 411.
    format!(
        r#"server.modules = ("mod_auth", "mod_authn_file", "mod_alias", "mod_setenv", "mod_cgi")
server.bind = "127.0.0.1"
server.port = {port}
server.document-root = "{docs}"
server.pid-file = "{pid}"
alias.url = ( "/git" => "{backend}" )
$HTTP["url"] =~ "^/git" {{
    cgi.assign = ( "" => "" )
    setenv.add-environment = ( "GIT_PROJECT_ROOT" => "{repos}", "GIT_HTTP_EXPORT_ALL" => "1" )
    auth.backend = "plain"
    auth.backend.plain.userfile = "{users}"
    auth.require = ( "" => ( "method" => "basic", "realm" => "git", "require" => "valid-user" ) )
}}
"#,
        docs = docs.display(),
        pid = dir.join("lighttpd.pid").display(),
        backend = backend.display(),
        repos = repos.display(),
        users = users.display(),
    )
}

/// A fresh folder of bare repositories, with the empty `repo.git` in it.
fn repos_dir() -> Result<TempDir, String> {
    let dir = tempfile::Builder::new()
        .prefix("git-repos-")
        .tempdir()
        .map_err(|e| format!("git: temp dir: {e}"))?;
    init_bare(&dir.path().join("repo.git"))?;
    Ok(dir)
}

fn init_bare(at: &Path) -> Result<(), String> {
    // -b main: otherwise HEAD names master, whatever the branch pushed.
    install::run(
        Command::new("git")
            .args(["init", "-q", "--bare", "-b", "main"])
            .arg(at),
    )
}

fn exec_path() -> Result<String, String> {
    let out = Command::new("git")
        .arg("--exec-path")
        .output()
        .map_err(|e| format!("git --exec-path: {e} (is git installed?)"))?;
    if !out.status.success() {
        return Err(format!("git --exec-path failed ({})", out.status));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Whether `git ls-remote URL` succeeds (the server answers, with auth if in the URL).
fn ls_remote(url: &str) -> bool {
    Command::new("git")
        .args(["ls-remote", url])
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}
