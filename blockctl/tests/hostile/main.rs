//! `blockctl get` (and, for a registry, `blockctl put`) against hostile servers, one file
//! per kind of server: conformance's `HostileHttp` and `HostileFtp` on 127.0.0.1 standing in
//! for a web folder (`http.rs`: `remote-file-system` over http://, its listings and a
//! package's own objects), a WebDAV server (`webdav.rs`), an FTP server (`ftp.rs`), an
//! OCI registry (`registry.rs`), an S3 endpoint (`s3.rs`) and a GCS endpoint (`gcs.rs`); real OpenSSH and Samba servers
//! serving planted trees, and a proxy that trickles their answers (`sftp.rs`, `smb.rs`), and
//! a silent TCP server. The cases: folder listings that loop or nest without end, endless,
//! oversized and trickled answers, names that escape their folder or read as Windows paths,
//! a redirect to another origin, forged manifests and blobs. Every case checks the exit
//! code, one line on stderr naming the block, an end well under a minute (the blocks'
//! timeout is 3 s), the peak memory of the blockctl process (its maximum resident set, from
//! `wait4`) below 64 MiB, and that DEST was not created and nothing was written beside it.

use std::fs;
use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

use conformance::harness::hostile_ftp::Listing;
use conformance::harness::hostile_http::{Request, autoindex, multistatus};
use conformance::harness::{HostileFtp, HostileHttp, Reply};

#[path = "../common/mod.rs"]
mod common;
use common::Home;

mod ftp;
mod gcs;
mod http;
mod planted;
mod registry;
mod s3;
mod sftp;
mod smb;
mod webdav;

/// The blocks' `timeout`, in seconds.
const TIMEOUT: u64 = 3;
/// How long a get may take: twice the timeout, the retry pauses, and room for a slow machine.
const TIME_BOUND: Duration = Duration::from_secs(2 * TIMEOUT + 2 + 12);
/// Peak resident memory of one get.
const MEMORY_BOUND_KIB: i64 = 64 * 1024;
/// A get still running after this is killed and the test fails.
const KILL_AFTER: Duration = Duration::from_secs(60);

/// How one `blockctl get` ended.
struct Run {
    code: i32,
    stderr: String,
    took: Duration,
    peak_kib: i64,
}

/// Starts blockctl and reports its own peak memory. `ru_maxrss` of a child spawned by this
/// test process would count this (large, many-threaded) process's memory as well: a child's
/// high-water mark includes its parent's pages until it execs. A small Python process
/// spawns blockctl instead and reports `wait4`'s figure for it, as `/usr/bin/time` would.
const MEASURE: &str = r#"
import os, sys
pid = os.posix_spawn(sys.argv[1], sys.argv[1:], os.environ,
                     file_actions=[(os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)])
_, status, usage = os.wait4(pid, 0)
print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)
"#;

/// Runs `blockctl get slug DEST` in `h`, with DEST in an empty scratch folder; checks that
/// DEST is not there afterwards and nothing else was written beside it.
fn get(h: &Home, slug: &str) -> Run {
    get_with(h, slug, &[])
}

/// [`get`] with `extra` arguments after DEST.
fn get_with(h: &Home, slug: &str, extra: &[&str]) -> Run {
    let scratch = tempfile::tempdir().unwrap();
    let dest = scratch.path().join("dest");
    let mut args = vec!["get", slug, dest.to_str().unwrap()];
    args.extend_from_slice(extra);
    let run = measured(h, slug, &args);
    assert!(!dest.exists(), "{slug}: DEST was created: {}", run.stderr);
    let beside: Vec<_> = fs::read_dir(scratch.path()).unwrap().collect();
    assert!(beside.is_empty(), "{slug}: written beside DEST: {beside:?}");
    run
}

/// Runs `blockctl put SRC slug` in `h`, SRC a small tree.
fn put(h: &Home, slug: &str) -> Run {
    let src = tempfile::tempdir().unwrap();
    fs::write(src.path().join("flow.py"), "print('hello')\n").unwrap();
    measured(h, slug, &["put", src.path().to_str().unwrap(), slug])
}

/// Runs blockctl with `args` in `h`, killed (and the test failed) past [`KILL_AFTER`]; its
/// exit code, stderr, time and peak memory.
fn measured(h: &Home, slug: &str, args: &[&str]) -> Run {
    let stderr_path = h.path("stderr");
    let blockctl = h.cmd(args);
    let mut measured = std::process::Command::new("python3");
    measured.args(["-c", MEASURE]).arg(blockctl.get_program());
    measured.args(blockctl.get_args());
    for (k, v) in blockctl.get_envs() {
        if let Some(v) = v {
            measured.env(k, v);
        }
    }
    let mut child = measured
        .stdout(Stdio::piped())
        .stderr(fs::File::create(&stderr_path).unwrap())
        .spawn()
        .expect("python3 runs");
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > KILL_AFTER {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{slug}: {} did not end within {KILL_AFTER:?}", args[0]);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = started.elapsed();
    let out = child.wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    let mut fields = report.split_whitespace().map(|f| f.parse::<i64>());
    let (Some(Ok(code)), Some(Ok(peak_kib))) = (fields.next(), fields.next()) else {
        panic!("{slug}: the measuring wrapper reported {report:?}");
    };
    let code = code as i32;
    let stderr = fs::read_to_string(&stderr_path).unwrap();
    eprintln!("{slug}: exit {code} in {took:?}, peak {peak_kib} KiB: {stderr}");
    Run {
        code,
        stderr,
        took,
        peak_kib,
    }
}

/// The contract of every case: `code`, one stderr line naming `block` and containing `says`,
/// in bounded time and memory.
fn assert_refused(run: &Run, block: &str, code: i32, says: &str) {
    let lines: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(run.code, code, "wrong exit code: {}", run.stderr);
    assert_eq!(lines.len(), 1, "not one line: {:?}", run.stderr);
    assert!(
        lines[0].contains(block),
        "does not name {block}: {}",
        lines[0]
    );
    assert!(
        lines[0].contains(says),
        "does not say {says:?}: {}",
        lines[0]
    );
    assert!(
        run.took < TIME_BOUND,
        "took {:?} (bound {TIME_BOUND:?})",
        run.took
    );
    assert!(
        run.peak_kib < MEMORY_BOUND_KIB,
        "peak memory {} KiB (bound {MEMORY_BOUND_KIB} KiB)",
        run.peak_kib
    );
}

/// A home with one block of `kind` named `hostile`, over `settings`.
fn home_with(kind: &str, settings: &[String]) -> Home {
    let h = Home::new();
    let slug = format!("{kind}/hostile");
    let mut create = vec!["block", "create", slug.as_str()];
    for s in settings {
        create.extend(["--set", s.as_str()]);
    }
    h.ok(&create);
    h
}

const WEB: &str = "remote-file-system/hostile/app";

fn start(handler: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> HostileHttp {
    HostileHttp::start(handler).expect("the hostile server starts")
}
