//! blockctl as a user runs it: real processes, a private BLOCKCTL_HOME, exit codes, JSON
//! output and what reaches stdout and stderr.

use std::path::{Path, PathBuf};
use std::process::Output;

mod common;
use common::Home;

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/flow-project")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn put_and_get_on_local_default_round_trip_the_example() {
    let h = Home::new();
    let src = example();
    let put = h.run(&["--json", "put", src.to_str().unwrap(), "local/default/etl"]);
    assert_eq!(put.status.code(), Some(0), "{}", stderr(&put));
    let p: serde_json::Value = serde_json::from_slice(&put.stdout).unwrap();
    assert_eq!(p["slug"], "local/default/etl");
    assert_eq!(p["skipped"], false);
    assert_eq!(p["files"], 6);
    let dest = h.path("run");
    let get = h.run(&["--json", "get", "local/default/etl", dest.to_str().unwrap()]);
    assert_eq!(get.status.code(), Some(0), "{}", stderr(&get));
    let g: serde_json::Value = serde_json::from_slice(&get.stdout).unwrap();
    assert_eq!(g["version"], p["version"]);
    assert_eq!(
        std::fs::read(dest.join("sql/daily_totals.sql")).unwrap(),
        std::fs::read(src.join("sql/daily_totals.sql")).unwrap()
    );
    assert!(
        h.path("home/storage/etl/.blocks/HEAD").is_file(),
        "local/default stores under $BLOCKCTL_HOME/storage"
    );

    let again = h.run(&["--json", "put", src.to_str().unwrap(), "local/default/etl"]);
    let a: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(a["skipped"], true);

    let versions = h.run(&["--json", "versions", "local/default/etl"]);
    let v: serde_json::Value = serde_json::from_slice(&versions.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["current"], true);

    let cat = h.run(&["cat", "local/default/etl/config/settings.toml"]);
    assert_eq!(
        cat.stdout,
        std::fs::read(src.join("config/settings.toml")).unwrap()
    );
}

#[test]
fn errors_are_one_line_with_the_documented_exit_code() {
    let h = Home::new();
    let src = example();
    assert_eq!(
        h.run(&["put", src.to_str().unwrap(), "local/default/x"])
            .status
            .code(),
        Some(0)
    );
    let busy = h.path("busy");
    std::fs::create_dir_all(&busy).unwrap();
    std::fs::write(busy.join("mine"), "x").unwrap();
    let d = h.path("d");
    let d = d.to_str().unwrap();
    let cases: [(&[&str], i32); 5] = [
        (&["get", "local/default/x", busy.to_str().unwrap()], 6),
        (&["get", "local/default/nothing", d], 3),
        (&["get", "local/default/../x", d], 2),
        (&["versions", "nope/x"], 2),
        (&["ls", "local/missing-block"], 3),
    ];
    for (args, code) in cases {
        let o = h.run(args);
        assert_eq!(o.status.code(), Some(code), "{args:?}: {}", stderr(&o));
        let err = stderr(&o);
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("blockctl: "), "{err}");
        assert!(stdout(&o).is_empty());
    }
    assert_eq!(
        std::fs::read_dir(&busy).unwrap().count(),
        1,
        "a refused get touched DEST"
    );
}

#[test]
fn get_only_takes_the_matching_files_and_refuses_a_glob_that_matches_nothing() {
    let h = Home::new();
    let src = example();
    let put = h.run(&["put", src.to_str().unwrap(), "local/default/only"]);
    assert_eq!(put.status.code(), Some(0), "{}", stderr(&put));
    let dest = h.path("part");
    let get = h.run(&[
        "--json",
        "get",
        "local/default/only",
        dest.to_str().unwrap(),
        "--only",
        "flows/**",
        "--only",
        "*.sh",
    ]);
    assert_eq!(get.status.code(), Some(0), "{}", stderr(&get));
    let g: serde_json::Value = serde_json::from_slice(&get.stdout).unwrap();
    assert_eq!(g["files"], 2, "{g}");
    assert_eq!(
        std::fs::read(dest.join("flows/etl/daily.py")).unwrap(),
        std::fs::read(src.join("flows/etl/daily.py")).unwrap()
    );
    assert!(dest.join("run.sh").is_file());
    assert!(!dest.join("sql").exists() && !dest.join("config").exists());

    let none = h.path("none");
    let o = h.run(&[
        "get",
        "local/default/only",
        none.to_str().unwrap(),
        "--only",
        "nothing/**",
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let err = stderr(&o);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.starts_with("blockctl: local/default/only: ") && err.contains("nothing/**"),
        "{err}"
    );
    assert!(stdout(&o).is_empty());
    assert!(!none.exists(), "a refused get made DEST");
}

#[test]
fn secrets_are_masked_stored_as_written_and_never_printed() {
    let h = Home::new();
    let create = h.run(&[
        "block",
        "create",
        "s3/prod-flows",
        "--set",
        "bucket=flows",
        "--set",
        "secret_access_key=plain-secret-93215",
        "--set",
        "session_token=env:BLOCKCTL_TEST_SECRET",
    ]);
    assert_eq!(create.status.code(), Some(0), "{}", stderr(&create));
    let inspect = h.run(&["--json", "block", "inspect", "s3/prod-flows"]);
    let shown = stdout(&inspect);
    assert!(!shown.contains("plain-secret-93215"), "{shown}");
    let i: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(i["fields"]["secret_access_key"], "********");
    assert_eq!(i["fields"]["session_token"], "env:BLOCKCTL_TEST_SECRET");

    let file = h.path("home/blocks.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("env:BLOCKCTL_TEST_SECRET"));
    assert!(
        !text.contains("s3cret-from-env-71842"),
        "env: secrets must not be written back resolved"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );

    for args in [
        vec!["block", "check", "s3/prod-flows"],
        vec!["put", ".", "s3/prod-flows/x"],
        vec!["block", "ls", "--json"],
        vec!["block", "inspect", "s3/prod-flows"],
    ] {
        let o = h.run(&args);
        let all = format!("{}{}", stdout(&o), stderr(&o));
        assert!(
            !all.contains("plain-secret-93215") && !all.contains("s3cret-from-env-71842"),
            "{args:?}: {all}"
        );
    }
}

#[test]
fn block_lifecycle_and_types() {
    let h = Home::new();
    let base = h.path("data");
    let set = format!("basepath={}", base.display());
    assert_eq!(
        h.run(&["block", "create", "local/team", "--set", &set])
            .status
            .code(),
        Some(0)
    );
    assert_eq!(
        h.run(&["block", "create", "local/team", "--set", &set])
            .status
            .code(),
        Some(6)
    );
    assert_eq!(
        h.run(&["block", "create", "local/team", "--set", "nope=1"])
            .status
            .code(),
        Some(2)
    );
    assert_eq!(
        h.run(&["block", "create", "local/Bad", "--set", &set])
            .status
            .code(),
        Some(2)
    );
    let ls = stdout(&h.run(&["block", "ls"]));
    assert_eq!(
        ls.lines().collect::<Vec<_>>(),
        ["local/default", "local/team"]
    );
    assert_eq!(
        h.run(&["block", "check", "local/team"]).status.code(),
        Some(0)
    );
    assert_eq!(h.run(&["block", "rm", "local/team"]).status.code(), Some(0));
    assert_eq!(h.run(&["block", "rm", "local/team"]).status.code(), Some(3));
    let types: serde_json::Value =
        serde_json::from_slice(&h.run(&["--json", "types"]).stdout).unwrap();
    let names: Vec<&str> = types
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "local",
            "s3",
            "gcs",
            "azure",
            "git",
            "smb",
            "remote-file-system",
            "oci"
        ]
    );
}

#[test]
fn export_piped_into_zstd_and_tar_gives_the_tree_and_diff_names_the_edit() {
    let zstd = conformance::harness::peers::zstd().expect("zstd installed");
    let h = Home::new();
    let src = h.path("src");
    conformance::tree::tricky_tree(&src);
    let v1 = h.json(&["--json", "put", src.to_str().unwrap(), "local/default/x"]);
    let out = h.path("untarred");
    std::fs::create_dir_all(&out).unwrap();
    let exported = h.path("x.tar.zst");
    let blockctl = h.cmd(&["export", "local/default/x"]).output().unwrap();
    assert_eq!(blockctl.status.code(), Some(0), "{}", stderr(&blockctl));
    std::fs::write(&exported, &blockctl.stdout).unwrap();
    let shell = format!(
        "'{}' -dc '{}' | tar -x -C '{}'",
        zstd.display(),
        exported.display(),
        out.display()
    );
    let untar = std::process::Command::new("sh")
        .args(["-c", &shell])
        .output()
        .unwrap();
    assert!(untar.status.success(), "{}", stderr(&untar));
    assert_eq!(
        conformance::tree::snapshot(&out),
        conformance::tree::snapshot(&src)
    );

    // One file edited: diff names it, and says a pull moves a small part of the package.
    let edited = src.join("flows/etl/daily.py");
    let mut text = std::fs::read(&edited).unwrap();
    text.extend_from_slice(b"# edited\n");
    std::fs::write(&edited, text).unwrap();
    let v2 = h.json(&["--json", "put", src.to_str().unwrap(), "local/default/x"]);
    assert_eq!(
        v2["frames_reused"].as_u64().map(|n| n > 0),
        Some(true),
        "{v2}"
    );
    let d = h.json(&["--json", "diff", "local/default/x"]);
    assert_eq!(d["from"], v1["version"]);
    assert_eq!(d["to"], v2["version"]);
    assert_eq!(d["changed"], serde_json::json!(["flows/etl/daily.py"]));
    assert!(
        d["pull_bytes"].as_u64() < d["package_bytes"].as_u64(),
        "{d}"
    );
    let text = stdout(&h.ok(&["diff", "local/default/x"]));
    assert!(text.contains("~ flows/etl/daily.py"), "{text}");

    // A terminal is not a place for a .tar.zst; a missing version is exit 3.
    let missing = h.run(&["export", "local/default/x", "--version", "abcdef12"]);
    assert_eq!(missing.status.code(), Some(3), "{}", stderr(&missing));
}

#[test]
fn verbose_prints_each_phase_and_completions_are_printed() {
    let h = Home::new();
    let src = example();
    let put = h.ok(&["-v", "put", src.to_str().unwrap(), "local/default/v"]);
    let err = stderr(&put);
    for phase in ["scanning", "uploading", "committing"] {
        assert!(
            err.lines()
                .any(|l| l.trim_start().starts_with(phase) && l.trim_end().ends_with('s')),
            "-v put shows no {phase} time: {err}"
        );
    }
    let dest = h.path("v-out");
    let get = h.ok(&["-v", "get", "local/default/v", dest.to_str().unwrap()]);
    let err = stderr(&get);
    for phase in ["locating", "downloading"] {
        assert!(err.contains(phase), "-v get shows no {phase} time: {err}");
    }
    for shell in ["bash", "zsh", "fish"] {
        let out = stdout(&h.ok(&["completions", shell]));
        assert!(
            out.contains("blockctl") && out.contains("export"),
            "{shell} completions name no subcommand: {out}"
        );
    }
    let help = stdout(&h.ok(&["help", "get"]));
    assert!(
        help.contains("This version (an id or unique prefix)"),
        "{help}"
    );
}

#[test]
fn a_replace_of_the_version_dest_holds_writes_nothing() {
    use std::os::unix::fs::MetadataExt;
    let h = Home::new();
    let src = example();
    h.ok(&["put", src.to_str().unwrap(), "local/default/etl"]);
    let dest = h.path("run");
    let d = dest.to_str().unwrap();
    h.ok(&["get", "local/default/etl", d]);
    let stamp = |p: &Path| {
        let m = std::fs::symlink_metadata(p).unwrap();
        (m.ino(), m.ctime(), m.ctime_nsec())
    };
    let file = dest.join("sql/daily_totals.sql");
    let (folder, content) = (stamp(&dest), stamp(&file));
    // Right after the get: the folder is compared with the manifest, nothing is written.
    let again = h.json(&["--json", "get", "local/default/etl", d, "--replace"]);
    assert_eq!(again["files_linked"], again["files"], "{again}");
    assert_eq!((stamp(&dest), stamp(&file)), (folder, content));
    // A changed file: the version is put in place again, the change undone.
    std::fs::write(&file, "-- changed\n").unwrap();
    h.ok(&["get", "local/default/etl", d, "--replace"]);
    assert_eq!(
        std::fs::read(&file).unwrap(),
        std::fs::read(src.join("sql/daily_totals.sql")).unwrap()
    );
    assert_ne!(stamp(&dest).0, folder.0, "the folder was not replaced");
    // With --no-cache nothing is recorded or trusted: the folder is replaced.
    let folder = stamp(&dest);
    h.ok(&["get", "local/default/etl", d, "--replace", "--no-cache"]);
    assert_ne!(stamp(&dest).0, folder.0, "--no-cache trusted a record");
}
