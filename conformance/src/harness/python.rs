//! Python for the tests of storage-blocks-py: a venv of its own holding Prefect, maturin and
//! pytest (pinned, installed once from PyPI), with the storage-blocks wheel built from this
//! checkout by maturin and installed into it on every test run (cargo rebuilds only what
//! changed); and a Prefect server (SQLite) and process worker on 127.0.0.1.
//!
//! The wheel is built in a target dir of its own, seeded from the workspace's: `cargo test`
//! holds the lock of its target dir while the tests run, so a maturin build there would wait
//! for ever. Seeded, the wheel's build finds every crate the workspace build compiled with the
//! same features (the C libraries among them) and compiles only the others.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::http::request;
use super::install::{locked, once, run};
use super::{cache_dir, process};

/// Pinned so that every machine tests against the same Prefect and builds the same way.
pub const PREFECT: &str = "prefect==3.9.1";
const REQUIREMENTS: [&str; 3] = [PREFECT, "maturin==1.16.0", "pytest==9.2.0"];

/// A server that does not answer in this time fails the test (about 12 s when idle).
const SERVER_READY: Duration = Duration::from_secs(240);
/// A worker polls for runs this often (Prefect's default is 10 s).
const WORKER_POLL_SECONDS: &str = "1";

/// The venv with Prefect and the storage-blocks wheel of this checkout; its `bin/` holds
/// `python`, `prefect` and `blockctl`. The first call of a test process builds the wheel.
pub fn storage_blocks_venv() -> Result<PathBuf, String> {
    static READY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    READY.get_or_init(build_and_install).clone()
}

fn venv_dir() -> PathBuf {
    cache_dir().join("storage-blocks-venv")
}

/// `PATH` with the venv's `bin/` first: its `blockctl` (the wheel's console script),
/// `prefect`, and the `patchelf` maturin runs.
pub fn path_with_venv() -> Result<std::ffi::OsString, String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::join_paths(
        std::iter::once(venv_dir().join("bin")).chain(std::env::split_paths(&path)),
    )
    .map_err(|e| format!("PATH: {e}"))
}

/// The workspace this harness belongs to.
pub fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("conformance crate has a parent folder")
        .to_path_buf()
}

fn build_and_install() -> Result<PathBuf, String> {
    let venv = venv_dir();
    once(
        "storage-blocks-venv",
        &venv.join(".installed"),
        &REQUIREMENTS.join(" "),
        || {
            run(Command::new("python3")
                .args(["-m", "venv", "--clear"])
                .arg(&venv))?;
            run(Command::new(venv.join("bin/pip"))
                .args(["install", "--disable-pip-version-check", "--no-input"])
                .args(REQUIREMENTS))
        },
    )?;
    let wheel_dir = cache_dir().join("wheel");
    locked("wheel", || {
        let started = Instant::now();
        let dist = wheel_dir.join("dist");
        let _ = std::fs::remove_dir_all(&dist);
        let wheel_target = wheel_dir.join("target");
        seed_from_workspace(&wheel_target)?;
        // A debug build, as the workspace's, so that the seeded crates are reused. Stripped,
        // so the wheel (260 MB of debug info otherwise) installs quickly. Not repaired: the
        // repair copies the OpenSSL that libgit2 links into the wheel with patchelf, which
        // edits the linked library in place, and then an unchanged rebuild fails; the wheel
        // is installed on this machine, where the system's OpenSSL is.
        run(Command::new(venv.join("bin/maturin"))
            .args(["build", "--strip", "--auditwheel", "warn"])
            .arg("--manifest-path")
            .arg(workspace_dir().join("storage-blocks-py/Cargo.toml"))
            .arg("--interpreter")
            .arg(venv.join("bin/python"))
            .arg("--out")
            .arg(&dist)
            .arg("--target-dir")
            .arg(&wheel_target)
            .env("PATH", path_with_venv()?)
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("CARGO_BUILD_TARGET_DIR"))?;
        let wheel = std::fs::read_dir(&dist)
            .map_err(|e| format!("read {}: {e}", dist.display()))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|x| x == "whl"))
            .ok_or_else(|| format!("maturin left no wheel in {}", dist.display()))?;
        run(Command::new(venv.join("bin/pip"))
            .args(["install", "--disable-pip-version-check", "--no-input"])
            .args(["--no-deps", "--force-reinstall"])
            .arg(&wheel))?;
        eprintln!(
            "harness: built and installed {} in {:.1} s",
            wheel.display(),
            started.elapsed().as_secs_f64()
        );
        Ok(())
    })?;
    Ok(venv)
}

/// The target dir of the running test binary (`<target>/debug/deps/<test>-<hash>`): the
/// nearest folder above it that cargo marked with `CACHEDIR.TAG`.
fn workspace_target_dir() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    exe.ancestors()
        .skip(1)
        .find(|dir| dir.join("CACHEDIR.TAG").is_file())
        .map(Path::to_path_buf)
}

/// Seeds `wheel_target` with the debug build of the workspace's target dir, once (when it
/// has no `debug/` yet), so that maturin's cargo reuses every crate compiled there with the
/// same features instead of compiling the whole tree a second time. `deps/` is hard-linked
/// (rustc replaces an rlib or rmeta by renaming a new file over it, so neither dir ever
/// writes through the other's files); `build/` and `.fingerprint/` are copied, since cargo
/// and build scripts rewrite their files in place. `incremental/` stays behind: it only
/// serves crates edited since, which the wheel's build recompiles anyway.
fn seed_from_workspace(wheel_target: &Path) -> Result<(), String> {
    let seeded = wheel_target.join("debug");
    let Some(source) = workspace_target_dir()
        .map(|t| t.join("debug"))
        .filter(|d| d.join("deps").is_dir() && d.join(".fingerprint").is_dir())
    else {
        return Ok(());
    };
    if seeded.exists() || source.starts_with(wheel_target) {
        return Ok(());
    }
    let started = Instant::now();
    let partial = wheel_target.join("debug.seeding");
    let _ = fs::remove_dir_all(&partial);
    fs::create_dir_all(&partial).map_err(|e| format!("create {}: {e}", partial.display()))?;
    run(Command::new("cp")
        .arg("-al")
        .arg(source.join("deps"))
        .arg(&partial))?;
    let mut copy = Command::new("cp");
    copy.arg("-a").arg(source.join(".fingerprint"));
    if source.join("build").is_dir() {
        copy.arg(source.join("build"));
    }
    run(copy.arg(&partial))?;
    fs::rename(&partial, &seeded)
        .map_err(|e| format!("rename {} to {}: {e}", partial.display(), seeded.display()))?;
    eprintln!(
        "harness: seeded {} from {} in {:.1} s",
        seeded.display(),
        source.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A Prefect server on 127.0.0.1 with its own `PREFECT_HOME` (SQLite) in a temp dir;
/// stopped by its PID when dropped.
pub struct PrefectServer {
    /// `http://127.0.0.1:PORT/api`, for `PREFECT_API_URL`.
    pub api_url: String,
    _server: process::Server,
}

impl PrefectServer {
    pub fn start() -> Result<PrefectServer, String> {
        let venv = storage_blocks_venv()?;
        let (server, port) = process::start_within(
            "prefect server",
            SERVER_READY,
            |dir, port| {
                let mut cmd = Command::new(venv.join("bin/prefect"));
                cmd.args(["server", "start", "--host", "127.0.0.1", "--port"])
                    .arg(port.to_string())
                    .env("PREFECT_HOME", dir.join("prefect-home"))
                    .env("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
                    .env("PREFECT_SERVER_UI_ENABLED", "false")
                    .env("PREFECT_UI_ENABLED", "false");
                cmd
            },
            |port| {
                request(
                    "GET",
                    &format!("http://127.0.0.1:{port}/api/health"),
                    &[],
                    b"",
                )
                .is_ok_and(|r| r.status == 200 && r.text().trim() == "true")
            },
        )?;
        Ok(PrefectServer {
            api_url: format!("http://127.0.0.1:{port}/api"),
            _server: server,
        })
    }
}

/// A Prefect process worker polling `pool` (created if missing); flow runs are its child
/// processes and inherit `env`. Stopped by its PID when dropped.
pub struct PrefectWorker {
    pub pool: String,
    _worker: process::Server,
}

impl PrefectWorker {
    pub fn start(
        server: &PrefectServer,
        pool: &str,
        env: &[(&str, &Path)],
    ) -> Result<PrefectWorker, String> {
        let venv = storage_blocks_venv()?;
        let filter = format!("{}/work_pools/{pool}/workers/filter", server.api_url);
        // The worker listens on no port; the port `start` picks is only unused.
        let (worker, _) = process::start_within(
            "prefect worker",
            SERVER_READY,
            |dir, _port| {
                let mut cmd = Command::new(venv.join("bin/prefect"));
                cmd.args(["worker", "start", "--pool", pool, "--type", "process"])
                    .env("PREFECT_API_URL", &server.api_url)
                    .env("PREFECT_HOME", dir.join("prefect-home"))
                    .env("PREFECT_WORKER_QUERY_SECONDS", WORKER_POLL_SECONDS)
                    .env("PREFECT_WORKER_PREFETCH_SECONDS", "5");
                for (k, v) in env {
                    cmd.env(k, v);
                }
                cmd
            },
            |_| {
                request(
                    "POST",
                    &filter,
                    &[("Content-Type", "application/json")],
                    b"{}",
                )
                .is_ok_and(|r| r.status == 200 && r.text().contains("\"name\""))
            },
        )?;
        Ok(PrefectWorker {
            pool: pool.to_string(),
            _worker: worker,
        })
    }
}
