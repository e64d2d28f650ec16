//! blockctl killed with SIGKILL in the middle of a put or a get: the previous version stays
//! current and whole, DEST is untouched, and the leftovers are cleaned up afterwards.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant, SystemTime};

use conformance::tree::{noise, small_tree, snapshot, write};

mod common;
use common::Home;

const BIG: usize = 300 * 1024 * 1024;

/// Polls `cond` every 2 ms for up to 60 s.
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Files under `dir` (recursively) whose names satisfy `pred`.
fn find(dir: &Path, pred: &dyn Fn(&str) -> bool) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(find(&p, pred));
        } else if pred(&e.file_name().to_string_lossy()) {
            out.push(p);
        }
    }
    out
}

fn is_staged(name: &str) -> bool {
    name.rsplit_once('#')
        .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

fn kill(mut child: Child) {
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn kill_during_put_keeps_the_previous_version_and_gc_removes_the_leftovers() {
    let h = Home::new();
    let v1_src = h.path("v1");
    small_tree(&v1_src, "v1");
    let v1 = h.json(&[
        "--json",
        "put",
        v1_src.to_str().unwrap(),
        "local/default/app",
    ])["version"]
        .clone();
    let big = h.path("big");
    small_tree(&big, "v2");
    write(&big, "data/big.bin", noise(BIG, 5));
    let blocks = h.path("home/storage/app/.blocks");
    let v1_objects = find(&blocks, &|_| true);

    // While hashing (before anything is written) and while packs are being written.
    let early = h.spawn(&["put", big.to_str().unwrap(), "local/default/app"]);
    std::thread::sleep(Duration::from_millis(30));
    kill(early);
    let mid = h.spawn(&["put", big.to_str().unwrap(), "local/default/app"]);
    wait_until("packs of the big file", || {
        find(&blocks.join("packs"), &|_| true).len() >= v1_objects.len() + 2
    });
    kill(mid);

    let versions = h.json(&["--json", "versions", "local/default/app"]);
    let listed: Vec<&serde_json::Value> = versions
        .as_array()
        .unwrap()
        .iter()
        .map(|v| &v["version"])
        .collect();
    assert_eq!(listed, [&v1], "an interrupted put became visible");
    let dest = h.path("after-kill");
    h.ok(&["get", "local/default/app", dest.to_str().unwrap()]);
    assert_eq!(snapshot(&dest), snapshot(&v1_src));

    // gc keeps what a put may still be using (its intent is fresh) and removes it once old.
    let left: Vec<PathBuf> = find(&blocks, &|_| true)
        .into_iter()
        .filter(|p| !v1_objects.contains(p))
        .collect();
    assert!(
        left.iter().any(|p| p.starts_with(blocks.join("intents"))),
        "the killed put left no intent: {left:?}"
    );
    let fresh = h.json(&["--json", "gc", "local/default/app", "--keep", "5"]);
    assert_eq!(
        (fresh["frames"].as_u64(), fresh["leftovers"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(fresh["held_by_puts"], true);
    let hour_ago = SystemTime::now() - Duration::from_secs(3600);
    for p in &left {
        std::fs::File::options()
            .write(true)
            .open(p)
            .unwrap()
            .set_modified(hour_ago)
            .unwrap();
    }
    let old = h.json(&["--json", "gc", "local/default/app", "--keep", "5"]);
    let frames = left
        .iter()
        .filter(|p| p.starts_with(blocks.join("packs")) && !is_staged(&p.to_string_lossy()))
        .count();
    let staged = left
        .iter()
        .filter(|p| is_staged(&p.to_string_lossy()))
        .count();
    assert_eq!(old["frames"], frames, "{old}");
    assert_eq!(old["leftovers"], staged, "{old}");
    let mut after = find(&blocks, &|_| true);
    after.sort();
    let mut expected = v1_objects.clone();
    expected.sort();
    assert_eq!(after, expected, "only v1's objects stay");
    assert_eq!(
        h.json(&["--json", "versions", "local/default/app"])
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn kill_during_get_leaves_dest_untouched_and_the_next_get_cleans_up() {
    let h = Home::new();
    let big = h.path("big");
    small_tree(&big, "big");
    write(&big, "data/big.bin", noise(BIG, 9));
    h.ok(&["put", big.to_str().unwrap(), "local/default/app"]);
    let staging_of = |dest: &str| {
        let prefix = format!(".{dest}.blockctl-");
        move |root: &Path| -> Vec<PathBuf> {
            std::fs::read_dir(root)
                .unwrap()
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                .map(|e| e.path())
                .collect()
        }
    };

    // Into a new folder: it must not appear.
    let fresh = h.path("fresh");
    let get = h.spawn(&["get", "local/default/app", fresh.to_str().unwrap()]);
    let staged = staging_of("fresh");
    wait_until("a staging folder with data", || {
        staged(h.dir.path()).iter().any(|s| {
            find(s, &|n| n == "big.bin")
                .iter()
                .any(|f| f.metadata().is_ok_and(|m| m.len() > 0))
        })
    });
    kill(get);
    assert!(!fresh.exists(), "a killed get created DEST");

    // Over an existing folder with --replace: it must keep its old content.
    let dest = h.path("run");
    small_tree(&dest, "old");
    let before = snapshot(&dest);
    let get = h.spawn(&[
        "get",
        "local/default/app",
        dest.to_str().unwrap(),
        "--replace",
    ]);
    let staged_run = staging_of("run");
    wait_until("a staging folder with data", || {
        staged_run(h.dir.path()).iter().any(|s| {
            find(s, &|n| n == "big.bin")
                .iter()
                .any(|f| f.metadata().is_ok_and(|m| m.len() > 0))
        })
    });
    kill(get);
    assert_eq!(snapshot(&dest), before, "a killed get changed DEST");
    assert!(
        !staged_run(h.dir.path()).is_empty(),
        "expected the killed get's staging folder"
    );

    // The next get completes and removes what the killed one left.
    h.ok(&[
        "get",
        "local/default/app",
        dest.to_str().unwrap(),
        "--replace",
    ]);
    assert_eq!(snapshot(&dest), snapshot(&big));
    assert!(
        staged_run(h.dir.path()).is_empty(),
        "abandoned staging folder left behind"
    );
    h.ok(&["get", "local/default/app", fresh.to_str().unwrap()]);
    assert!(staged(h.dir.path()).is_empty());
}
