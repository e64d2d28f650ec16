//! Bounded fuzzing with every test run: each cargo-fuzz target of `fuzz/` (slug, manifest,
//! frames_manifest, archive) runs for `FUZZ_SECONDS` seconds (default 20), all at once (more libFuzzer
//! flags in `FUZZ_ARGS`), seeded from
//! `fuzz/seeds/<target>` where it exists. cargo-fuzz comes from the harness (pinned, built
//! once into `<cache>/cargo-fuzz`); the fuzz build, corpora, artifacts and logs all live in
//! `<target dir>/fuzz`, never in the source tree. The nested cargo has that target dir of its
//! own, so it never waits for the lock of the cargo running this test. A crash fails the test
//! with the crashing input's path and the fuzzer's last lines.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use conformance::harness;

const TARGETS: [&str; 4] = ["slug", "manifest", "frames_manifest", "archive"];
/// Per target, unless `FUZZ_SECONDS` says otherwise.
const DEFAULT_SECONDS: u64 = 20;
/// libFuzzer's per-input limit: an input slower than this is reported as a hang.
const INPUT_TIMEOUT_SECONDS: u64 = 25;
/// How many lines of the fuzzer's output a failure shows.
const TAIL_LINES: usize = 40;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("conformance sits in the workspace")
        .to_path_buf()
}

/// `<target dir>/fuzz`: the target dir this test was built in (wherever `CARGO_TARGET_DIR`
/// put it), one folder down, so the nested cargo has a lock of its own.
fn fuzz_target_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("CARGO_TARGET_TMPDIR is inside the target dir")
        .join("fuzz")
}

fn seconds() -> u64 {
    match std::env::var("FUZZ_SECONDS") {
        Ok(s) if !s.trim().is_empty() => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("FUZZ_SECONDS must be a whole number of seconds: {s:?}")),
        _ => DEFAULT_SECONDS,
    }
}

/// More libFuzzer flags from `FUZZ_ARGS` (split on whitespace), e.g. `-jobs=2 -workers=2`.
fn extra_args() -> Vec<String> {
    std::env::var("FUZZ_ARGS")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// `cargo-fuzz fuzz <args>` on the workspace's fuzz project, building into `target`.
fn cargo_fuzz(bin: &Path, target: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin);
    cmd.arg("fuzz")
        .args(args)
        .current_dir(workspace())
        // Sanitizer flags need unstable options; this stable toolchain allows them so.
        .env("RUSTC_BOOTSTRAP", "1")
        .env("CARGO_TARGET_DIR", target)
        .env_remove("CARGO_BUILD_TARGET_DIR")
        // cargo-fuzz passes its flags in RUSTFLAGS, which this one would override.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .stdin(Stdio::null());
    cmd
}

/// What one target's run found.
struct Outcome {
    target: &'static str,
    ok: bool,
    /// Executions, and the seconds libFuzzer spent on them.
    executions: Option<(u64, Option<u64>)>,
    elapsed: Duration,
    artifacts: Vec<PathBuf>,
    log: PathBuf,
    tail: String,
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// libFuzzer's last words, `Done 123456 runs in 20 second(s)`: the executions and the
/// seconds spent fuzzing; else the executions of the final stats or the last `#N` line.
fn executions(log: &str) -> Option<(u64, Option<u64>)> {
    let done = log.lines().rev().find_map(|l| {
        let mut words = l.strip_prefix("Done ")?.split_whitespace();
        let runs = words.next()?.parse().ok()?;
        let secs = words.nth(2).and_then(|s| s.parse().ok());
        Some((runs, secs))
    });
    let stats = || {
        log.lines().rev().find_map(|l| {
            let n = l.strip_prefix("stat::number_of_executed_units:")?;
            Some((n.trim().parse().ok()?, None))
        })
    };
    done.or_else(stats).or_else(|| {
        log.lines().rev().find_map(|l| {
            let rest = l.strip_prefix('#')?;
            let runs = rest
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()?;
            Some((runs, None))
        })
    })
}

fn run_target(bin: &Path, target_dir: &Path, target: &'static str, secs: u64) -> Outcome {
    let corpus = target_dir.join("corpus").join(target);
    let artifacts = target_dir.join("artifacts").join(target);
    let logs = target_dir.join("logs");
    for dir in [&corpus, &artifacts, &logs] {
        fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    }
    let log = logs.join(format!("{target}.log"));
    let out = File::create(&log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
    let err = out.try_clone().expect("clone log handle");

    let fuzz_dir = workspace().join("fuzz");
    let mut cmd = cargo_fuzz(bin, target_dir, &["run", "-O", "--fuzz-dir"]);
    cmd.arg(&fuzz_dir).arg(target);
    // New inputs go to the first folder; the checked-in seeds are only read.
    cmd.arg(&corpus);
    let seeds = fuzz_dir.join("seeds").join(target);
    if seeds.is_dir() {
        cmd.arg(&seeds);
    }
    let mut prefix = artifacts.clone().into_os_string();
    prefix.push("/");
    let mut artifact_arg = std::ffi::OsString::from("-artifact_prefix=");
    artifact_arg.push(prefix);
    cmd.arg("--")
        .arg(format!("-max_total_time={secs}"))
        .arg(format!("-timeout={INPUT_TIMEOUT_SECONDS}"))
        .arg("-print_final_stats=1")
        // libFuzzer takes the last of a repeated flag: this one beats cargo-fuzz's own.
        .arg(artifact_arg)
        .args(extra_args());
    let started = Instant::now();
    let began = SystemTime::now();
    let status = cmd
        .stdout(out)
        .stderr(err)
        .status()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let elapsed = started.elapsed();
    let text = String::from_utf8_lossy(&fs::read(&log).unwrap_or_default()).into_owned();
    // libFuzzer names what it wrote; else whatever in the folder is newer than the run.
    let mut written: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| {
            l.split_once("Test unit written to ")
                .map(|(_, p)| p.trim().into())
        })
        .collect();
    if written.is_empty() {
        written = list(&artifacts)
            .into_iter()
            .filter(|p| {
                p.metadata()
                    .and_then(|m| m.modified())
                    .is_ok_and(|t| t >= began)
            })
            .collect();
    }
    // The fuzzer's own last lines, not cargo-fuzz's error report after them.
    let fuzzer_text = text
        .rfind("Error: Fuzz target exited")
        .map_or(text.as_str(), |at| &text[..at]);
    Outcome {
        target,
        ok: status.success(),
        executions: executions(&text),
        elapsed,
        artifacts: written,
        log,
        tail: tail(fuzzer_text, TAIL_LINES),
    }
}

fn list(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    found.sort();
    found
}

#[test]
fn fuzz_targets_find_nothing_within_the_time_limit() {
    let secs = seconds();
    let started = Instant::now();
    let bin = harness::cargo_fuzz().unwrap_or_else(|e| panic!("{e}"));
    let installed = started.elapsed();

    // Every target in one build first, so the parallel runs below find them built.
    let target_dir = fuzz_target_dir();
    let fuzz_dir = workspace().join("fuzz");
    let build_started = Instant::now();
    let mut build = cargo_fuzz(&bin, &target_dir, &["build", "-O", "--fuzz-dir"]);
    build.arg(&fuzz_dir);
    let out = build
        .output()
        .unwrap_or_else(|e| panic!("cannot run {build:?}: {e}"));
    assert!(
        out.status.success(),
        "{build:?} failed ({}):\n{}",
        out.status,
        tail(&String::from_utf8_lossy(&out.stderr), TAIL_LINES)
    );
    let built = build_started.elapsed();

    let outcomes: Vec<Outcome> = std::thread::scope(|s| {
        let runs: Vec<_> = TARGETS
            .iter()
            .map(|&t| {
                let (bin, dir) = (&bin, &target_dir);
                s.spawn(move || run_target(bin, dir, t, secs))
            })
            .collect();
        runs.into_iter()
            .map(|r| r.join().expect("fuzz thread"))
            .collect()
    });

    eprintln!(
        "fuzz: cargo-fuzz {} ready in {:.1} s, targets built in {:.1} s, {secs} s per target",
        harness::CARGO_FUZZ_VERSION,
        installed.as_secs_f64(),
        built.as_secs_f64()
    );
    for o in &outcomes {
        let (execs, fuzzed) = match o.executions {
            Some((n, Some(s))) => (n.to_string(), format!("{s} s of fuzzing")),
            Some((n, None)) => (n.to_string(), "fuzzing".to_string()),
            None => ("?".to_string(), "fuzzing".to_string()),
        };
        eprintln!(
            "fuzz: {:<8} {execs} executions in {fuzzed} ({:.1} s with cargo fuzz run): {}",
            o.target,
            o.elapsed.as_secs_f64(),
            if o.ok { "nothing found" } else { "FAILED" }
        );
    }
    let failures: Vec<String> = outcomes
        .iter()
        .filter(|o| !o.ok)
        .map(|o| {
            let found: Vec<String> = o
                .artifacts
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            format!(
                "fuzz target {} failed; crashing input: {}; full log: {}\n{}",
                o.target,
                if found.is_empty() {
                    "none written".to_string()
                } else {
                    found.join(", ")
                },
                o.log.display(),
                o.tail
            )
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
    for o in &outcomes {
        assert!(
            o.executions.is_some_and(|(n, _)| n > 0),
            "fuzz target {} reported no executions; log {}:\n{}",
            o.target,
            o.log.display(),
            o.tail
        );
    }
}
