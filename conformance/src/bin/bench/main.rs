//! Benchmark: blockctl beside its peers (rclone, tar + zstd, cp -a) on the same seeded
//! corpora and the same emulators, in one run. Not part of the test command.
//!
//! ```text
//! cargo build --release -p blockctl
//! cargo run --release -p conformance --bin bench -- \
//!     [--targets local,s3,azure,gcs,smb,sftp,webdav,ftp,http,oci] [--corpora flow,many,big,tree] [--runs N] \
//!     [--many-runs N] \
//!     [--big-mib N] [--tree-mib N] [--fleet N] [--json out.json]
//! ```
//!
//! On `flow` it also measures the next deploy and the next run (package format 2): one small
//! file edited (300 bytes appended) and put again, beside `rclone copy` of the same edit and
//! beside a format-1 put; then a get of the new version over the previous one with the agent
//! cache holding the previous frames, and a get of a fully cached version. Bytes are counted
//! on the wire by a `FaultProxy` (injecting nothing) between the tools and the emulator, and
//! on `local` as the growth of the store folder.
//!
//! Each figure is the median wall time of `--runs` runs (`--many-runs` for the 20,000-file
//! corpus, whose peer and files-layout runs take minutes each on the emulators), with the peak resident memory of the
//! child process tree (from `wait4`). Every download is checked file by file (sha256)
//! against the source tree.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use conformance::harness::{
    Azurite, FakeGcs, FaultProxy, Moto, OciRegistry, PyFtpd, Samba, Sshd, StaticHttp, WsgiDav,
    hmac_sha256, peers,
};
use sha2::{Digest, Sha256};

mod corpus;
mod measure;
mod report;
mod runs;
mod targets;

use clap::Parser;
use corpus::*;
use measure::*;
use runs::*;
use targets::*;

const TARGETS: [&str; 10] = [
    "local", "s3", "azure", "gcs", "smb", "sftp", "webdav", "ftp", "http", "oci",
];

/// blockctl beside rclone, tar + zstd and cp -a on the same corpora and emulators.
#[derive(Parser)]
struct Args {
    /// Where to measure, comma-separated: local, s3, azure, gcs, smb, sftp, webdav, ftp, http
    /// (read-only: gets only), oci (a registry: on `flow`, cold put and get of package
    /// formats 2 and 3 only) (the last three only when asked for).
    #[arg(long, value_delimiter = ',', default_value = "local,s3,azure,gcs,smb,sftp", value_parser = TARGETS)]
    targets: Vec<String>,
    /// Which corpora, comma-separated: flow (3,036 files, 43 MiB), many (20,000 small files),
    /// big (one file of --big-mib MiB), tree (--tree-mib MiB in 1 MiB files, half of them
    /// text; only when asked for).
    #[arg(long, value_delimiter = ',', default_value = "flow,many,big", value_parser = ["flow", "many", "big", "tree"])]
    corpora: Vec<String>,
    /// Runs per figure; the median is reported.
    #[arg(long, default_value_t = 3, value_parser = at_least_one)]
    runs: usize,
    /// Runs per figure on `many` (default: --runs).
    #[arg(long, value_parser = at_least_one)]
    many_runs: Option<usize>,
    /// Size of the `big` corpus's file, in MiB.
    #[arg(long, default_value_t = 512)]
    big_mib: usize,
    /// Size of the `tree` corpus, in MiB.
    #[arg(long, default_value_t = 2048)]
    tree_mib: usize,
    /// Also time this many agents getting the `flow` package at once, each cold
    /// (`--no-cache`), beside one alone: what a fleet of fresh pods starting together costs.
    #[arg(long, default_value_t = 0)]
    fleet: usize,
    /// Also write every figure as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("{text}: give a whole number of at least 1")),
    }
}

const BUCKET: &str = "bench";

fn prefect_script() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    workspace.join("bench").join("prefect_put_get.py")
}

fn find_blockctl() -> Result<PathBuf, String> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    let bin = target.join("release").join("blockctl");
    // Always (a no-op when up to date), so a stale binary is never measured.
    eprintln!("cargo build --release -p blockctl");
    let ok = Command::new(env!("CARGO"))
        .args(["build", "--release", "-q", "-p", "blockctl"])
        .current_dir(workspace)
        .status()
        .map_err(|e| e.to_string())?
        .success();
    if !ok || !bin.exists() {
        return Err(format!(
            "{} is missing: `cargo build --release -p blockctl` failed",
            bin.display()
        ));
    }
    Ok(bin)
}

fn main() {
    let args = Args::parse();
    let blockctl = find_blockctl().unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(1)
    });
    let work = tempfile::Builder::new()
        .prefix("blockctl-bench-")
        .tempdir()
        .expect("temp dir");
    let mut corpora = Vec::new();
    for c in &args.corpora {
        eprintln!("generating corpus {c}");
        let root = work.path().join("corpus").join(c);
        generate(c, &root, args.big_mib, args.tree_mib);
        corpora.push((c.clone(), root));
    }
    let mut notes = Vec::new();
    let prefect = if args.targets.iter().any(|t| t == "local" || t == "s3") {
        eprintln!("installing Prefect if missing");
        peers::prefect_python()
            .map_err(|e| notes.push(format!("prefect could not be installed: {e}")))
            .ok()
    } else {
        None
    };
    if args.targets.iter().any(|t| t == "local")
        && let Err(e) = peers::zstd()
    {
        notes.push(format!("zstd could not be installed: {e}"));
    }
    let mut bench = Bench {
        blockctl,
        prefect,
        fleet: args.fleet,
        rows: Vec::new(),
        bytes: Vec::new(),
        notes,
    };
    for name in &args.targets {
        eprintln!("== starting {name}");
        match start_target(name, work.path()) {
            Ok(t) => bench.target(&t, &corpora, &args, work.path()),
            Err(e) => bench
                .notes
                .push(format!("{name}: emulator did not start: {e}")),
        }
    }

    println!("| target | corpus | tool | op | median s | peak MiB | ratio peer/blockctl |");
    println!("|---|---|---|---|---:|---:|---:|");
    let mut json = Vec::new();
    for r in &bench.rows {
        let med = median(&r.secs);
        let peak = *r.peak_kib.iter().max().unwrap_or(&0) as f64 / 1024.0;
        let ratio = bench.ratio(r);
        println!(
            "| {} | {} | {} | {} | {:.3} | {:.1} | {} |",
            r.target,
            r.corpus,
            r.tool,
            r.op,
            med,
            peak,
            ratio.map_or("—".to_string(), |x| format!("{x:.2}"))
        );
        json.push(serde_json::json!({
            "target": r.target, "corpus": r.corpus, "tool": r.tool, "op": r.op,
            "median_s": med, "runs_s": r.secs, "peak_mib": peak, "ratio_vs_blockctl": ratio,
        }));
    }
    if !bench.bytes.is_empty() {
        println!("\n| target | tool | bytes (median over runs) | what |");
        println!("|---|---|---:|---|");
        let mut seen = Vec::new();
        for (t, tool, what, _) in &bench.bytes {
            if seen.contains(&(t, tool, what)) {
                continue;
            }
            seen.push((t, tool, what));
            let n = bench.bytes_of(t, tool, what).unwrap_or(0.0);
            println!("| {t} | {tool} | {n:.0} | {what} |");
        }
    }
    let goals = bench.goals();
    println!("\n| goal | target | corpus | op | measured | limit | met |");
    println!("|---|---|---|---|---:|---:|---|");
    for g in &goals {
        println!(
            "| {} | {} | {} | {} | {:.3} | {} {} | {} |",
            g.goal,
            g.target,
            g.corpus,
            g.op,
            g.measured,
            if g.at_least { "≥" } else { "<" },
            g.limit,
            if g.met { "yes" } else { "**no**" }
        );
    }
    for n in &bench.notes {
        println!("\n- {n}");
    }
    if let Some(path) = &args.json {
        let bytes: Vec<_> = bench
            .bytes
            .iter()
            .map(|(t, tool, what, n)| serde_json::json!({"target": t, "tool": tool, "what": what, "bytes": n}))
            .collect();
        let doc = serde_json::json!({
            "bytes": bytes,
            "runs": args.runs, "many_runs": args.many_runs.unwrap_or(args.runs), "big_mib": args.big_mib, "tree_mib": args.tree_mib, "rows": json, "notes": bench.notes,
            "goals": goals.iter().map(|g| serde_json::json!({
                "goal": g.goal, "target": g.target, "corpus": g.corpus, "op": g.op,
                "measured": g.measured, "limit": g.limit, "at_least": g.at_least, "met": g.met,
            })).collect::<Vec<_>>(),
        });
        fs::write(path, serde_json::to_vec_pretty(&doc).unwrap())
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }
    if !bench.notes.is_empty() {
        std::process::exit(1);
    }
}
