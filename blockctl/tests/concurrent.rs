//! Concurrent blockctl processes on one registry: every write is kept, and the file stays
//! private and whole.

use std::process::Stdio;

mod common;
use common::Home;

#[test]
fn ten_concurrent_block_creates_lose_nothing() {
    use std::os::unix::fs::PermissionsExt;
    let h = Home::new();
    // The registry exists before the race, so every writer rewrites the same file.
    h.ok(&["block", "create", "s3/first", "--set", "bucket=first"]);
    let names: Vec<String> = (0..10).map(|i| format!("s3/racer-{i}")).collect();
    let children: Vec<_> = names
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let bucket = format!("bucket=bucket-{i}");
            let key = format!("secret_access_key=env:RACER_{i}_KEY");
            h.cmd(&["block", "create", id, "--set", &bucket, "--set", &key])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (id, child) in names.iter().zip(children) {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{id}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let listed: Vec<String> = h
        .json(&["--json", "block", "ls"])
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["block"].as_str().unwrap().to_string())
        .collect();
    for id in names.iter().chain([&"s3/first".to_string()]) {
        assert!(listed.contains(id), "{id} was lost: {listed:?}");
    }

    let file = h.path("home/blocks.toml");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "blocks.toml has mode {mode:o}");
    let text = std::fs::read_to_string(&file).unwrap();
    let parsed: toml::Table = toml::from_str(&text).expect("blocks.toml parses");
    for (i, id) in names.iter().enumerate() {
        let shown = h.json(&["--json", "block", "inspect", id]);
        assert_eq!(shown["fields"]["bucket"], format!("bucket-{i}"), "{id}");
        assert_eq!(
            shown["fields"]["secret_access_key"],
            format!("env:RACER_{i}_KEY"),
            "{id}"
        );
    }
    assert!(!parsed.is_empty());
    // No temp files of the atomic rewrites are left beside it.
    let left: Vec<String> = std::fs::read_dir(h.path("home"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "blocks.toml" && !n.ends_with(".lock") && n != "storage")
        .collect();
    assert!(left.is_empty(), "left beside the registry: {left:?}");
}
