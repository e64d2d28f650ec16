//! Who published what from where, and keys a block signs with: version records from a git
//! work tree, `blockctl show`, `blockctl key generate`, and signatures that Debian's
//! `minisign` and blockctl accept from each other.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use storage_blocks::signing::{Signer, TrustedKeys};

mod common;
use common::Home;

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A git work tree with one commit of `flows/`, an origin URL holding credentials, and the
/// commit's id.
fn work_tree(root: &Path) -> String {
    let repo = git2::Repository::init(root).unwrap();
    repo.remote(
        "origin",
        "https://deployer:glpat-SECRETTOKEN99@git.example.invalid/team/flows.git",
    )
    .unwrap();
    std::fs::create_dir_all(root.join("flows")).unwrap();
    std::fs::write(root.join("flows/etl.py"), "print('etl')\n").unwrap();
    let mut index = repo.index().unwrap();
    index
        .add_all(["*"], git2::IndexAddOption::DEFAULT, None)
        .unwrap();
    index.write().unwrap();
    let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
    let sig = git2::Signature::now("t", "t@example.invalid").unwrap();
    repo.commit(Some("HEAD"), &sig, &sig, "first", &tree, &[])
        .unwrap()
        .to_string()
}

#[test]
fn a_put_records_message_author_labels_and_scrubbed_git_provenance() {
    let h = Home::new();
    let root = h.path("src");
    let commit = work_tree(&root);
    let flows = root.join("flows");
    let flows = flows.to_str().unwrap();
    let put = h.json(&[
        "--json",
        "put",
        flows,
        "local/default/etl",
        "--message",
        "nightly schedule",
        "--author",
        "ana@ci",
        "--label",
        "ticket=OPS-7",
        "--label",
        "env=prod",
    ]);
    assert_eq!(put["message"], "nightly schedule");
    assert_eq!(put["source"]["commit"], commit);
    let version = put["version"].as_str().unwrap().to_string();

    let listed = h.json(&["--json", "versions", "local/default/etl"]);
    let v = &listed[0];
    assert_eq!(v["version"], version);
    assert_eq!(v["message"], "nightly schedule");
    assert_eq!(v["author"], "ana@ci");
    assert_eq!(
        v["labels"],
        serde_json::json!({"ticket": "OPS-7", "env": "prod"})
    );
    assert_eq!(v["source"]["commit"], commit);
    assert_eq!(v["source"]["dirty"], false);
    assert!(v["source"]["branch"].is_string(), "{v}");
    assert_eq!(
        v["source"]["origin"],
        "https://git.example.invalid/team/flows.git"
    );
    let everything = String::from_utf8(h.ok(&["--json", "versions", "local/default/etl"]).stdout)
        .unwrap()
        + &String::from_utf8(h.ok(&["show", "local/default/etl"]).stdout).unwrap();
    assert!(!everything.contains("SECRETTOKEN"), "{everything}");
    assert!(!everything.contains("deployer"), "{everything}");

    // The text listing names the author, the commit and the message.
    let text = String::from_utf8(h.ok(&["versions", "local/default/etl"]).stdout).unwrap();
    assert!(text.contains("ana@ci"), "{text}");
    assert!(text.contains(&commit[..12]), "{text}");
    assert!(text.contains("nightly schedule"), "{text}");

    // The same tree with another message is the same version, its first record kept.
    let again = h.json(&["--json", "put", flows, "local/default/etl", "-m", "other"]);
    assert_eq!(again["version"], version);
    assert_eq!(again["skipped"], true);
    let shown = h.json(&[
        "--json",
        "show",
        "local/default/etl",
        "--version",
        &version[..8],
    ]);
    assert_eq!(shown["version"], version);
    assert_eq!(shown["message"], "nightly schedule");
    assert_eq!(shown["labels"]["ticket"], "OPS-7");
    assert_eq!(shown["source"]["commit"], commit);

    // A change not committed makes the next version dirty; the default author is user@host.
    std::fs::write(root.join("flows/etl.py"), "print('changed')\n").unwrap();
    let dirty = h.json(&["--json", "put", flows, "local/default/etl"]);
    assert_ne!(dirty["version"], version);
    assert_eq!(dirty["source"]["dirty"], true);
    assert!(dirty["author"].as_str().unwrap().contains('@'), "{dirty}");
    assert_eq!(dirty["message"], serde_json::Value::Null);

    // Outside git there is no source; a bad label is exit 2 before anything is stored.
    let plain = h.path("plain");
    std::fs::create_dir_all(&plain).unwrap();
    std::fs::write(plain.join("a.txt"), "a").unwrap();
    let p = h.json(&[
        "--json",
        "put",
        plain.to_str().unwrap(),
        "local/default/plain",
    ]);
    assert_eq!(p["source"], serde_json::Value::Null);
    let bad = h.run(&[
        "put",
        plain.to_str().unwrap(),
        "local/default/x",
        "--label",
        "no value",
    ]);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    assert_eq!(stderr(&bad).lines().count(), 1, "{}", stderr(&bad));
}

#[test]
fn key_generate_writes_a_private_minisign_key_pair() {
    use std::os::unix::fs::PermissionsExt;
    let h = Home::new();
    let k = h.json(&["--json", "key", "generate", "ci", "--unencrypted"]);
    let secret = k["secret_key"].as_str().unwrap();
    assert_eq!(Path::new(secret), h.path("home/keys/ci.key"));
    let mode = std::fs::metadata(secret).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let public = k["public_key"].as_str().unwrap();
    let signer = Signer::from_key_file(Path::new(secret), None).unwrap();
    assert_eq!(signer.public_key(), public);
    assert_eq!(k["key_id"], signer.key_id().to_string());

    // A password from the environment; never from the command line; no terminal, no prompt.
    let enc = h
        .cmd(&[
            "--json",
            "key",
            "generate",
            "prod",
            "--password",
            "env:KEY_PW",
        ])
        .env("KEY_PW", "hunter2-horse")
        .output()
        .unwrap();
    assert!(enc.status.success(), "{}", stderr(&enc));
    let enc: serde_json::Value = serde_json::from_slice(&enc.stdout).unwrap();
    assert_eq!(enc["encrypted"], true);
    let secret = enc["secret_key"].as_str().unwrap();
    assert!(Signer::from_key_file(Path::new(secret), None).is_err());
    Signer::from_key_file(Path::new(secret), Some("hunter2-horse")).unwrap();
    for args in [
        &["key", "generate", "x", "--password", "hunter2"][..],
        &["key", "generate", "y"][..],
        &["key", "generate", "ci", "--unencrypted"][..],
    ] {
        let out = h.cmd(args).stdin(Stdio::null()).output().unwrap();
        assert!(
            matches!(out.status.code(), Some(2 | 6)),
            "{args:?}: {}",
            stderr(&out)
        );
        assert!(out.stdout.is_empty());
        assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    }
}

fn minisign() -> std::path::PathBuf {
    conformance::harness::peers::minisign().expect("Debian's minisign")
}

#[test]
fn debian_minisign_verifies_what_blockctl_signs_and_the_other_way_round() {
    let h = Home::new();
    let k = h.json(&["--json", "key", "generate", "ci", "--unencrypted"]);
    let signer = Signer::from_key_file(Path::new(k["secret_key"].as_str().unwrap()), None).unwrap();
    let data = h.path("manifest.json");
    std::fs::write(&data, b"{\"version\":\"abc\"}").unwrap();
    let sig = signer
        .sign(
            &std::fs::read(&data).unwrap(),
            "blocks manifest path=etl version=abc",
        )
        .unwrap();
    std::fs::write(h.path("manifest.json.minisig"), &sig).unwrap();
    let verify = |pubkey: &str| {
        Command::new(minisign())
            .args(["-V", "-p", pubkey, "-m", data.to_str().unwrap()])
            .output()
            .unwrap()
    };
    let ok = verify(k["public_key_file"].as_str().unwrap());
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert!(
        String::from_utf8_lossy(&ok.stdout).contains("blocks manifest path=etl"),
        "{:?}",
        ok
    );
    // Changed after signing: minisign refuses too (the test can fail).
    std::fs::write(&data, b"{\"version\":\"abd\"}").unwrap();
    assert!(
        !verify(k["public_key_file"].as_str().unwrap())
            .status
            .success()
    );

    // Keys made by `minisign -G`, encrypted (password on stdin) and not, load and sign, and
    // blockctl verifies what `minisign -S` signed.
    let run = |args: &[&str], stdin: &str| {
        use std::io::Write;
        let mut child = Command::new(minisign())
            .args(args)
            .current_dir(h.path(""))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "minisign {args:?}: {}", stderr(&out));
    };
    run(&["-G", "-p", "enc.pub", "-s", "enc.key"], "pw-9f\npw-9f\n");
    run(&["-G", "-W", "-p", "plain.pub", "-s", "plain.key"], "");
    Signer::from_key_file(&h.path("enc.key"), Some("pw-9f")).unwrap();
    let err = Signer::from_key_file(&h.path("enc.key"), Some("nope")).unwrap_err();
    assert_eq!(err.exit_code(), 4, "{err}");
    Signer::from_key_file(&h.path("plain.key"), None).unwrap();
    std::fs::write(h.path("flow.py"), b"print(1)\n").unwrap();
    run(
        &[
            "-S",
            "-s",
            "enc.key",
            "-m",
            "flow.py",
            "-t",
            "made by minisign",
        ],
        "pw-9f\n",
    );
    let sig = std::fs::read_to_string(h.path("flow.py.minisig")).unwrap();
    let keys = TrustedKeys::parse(&[h.path("enc.pub").display().to_string()]).unwrap();
    let v = keys.verify(b"print(1)\n", &sig).unwrap();
    assert_eq!(v.trusted_comment, "made by minisign");
    assert_eq!(keys.verify(b"print(2)\n", &sig).unwrap_err().exit_code(), 7);
    let other = TrustedKeys::parse(&[h.path("plain.pub").display().to_string()]).unwrap();
    assert_eq!(
        other.verify(b"print(1)\n", &sig).unwrap_err().exit_code(),
        7
    );
}

#[test]
fn every_storing_type_takes_the_trust_fields_and_checks_them_at_open() {
    let h = Home::new();
    let types = String::from_utf8(h.ok(&["types", "local"]).stdout).unwrap();
    for f in ["signing_key", "signing_password", "trusted_keys"] {
        assert!(types.contains(f), "{types}");
    }
    let k = h.json(&["--json", "key", "generate", "ci", "--unencrypted"]);
    let base = h.path("store");
    h.ok(&[
        "block",
        "create",
        "local/signed",
        "--set",
        &format!("basepath={}", base.display()),
        "--set",
        &format!("signing_key={}", k["secret_key"].as_str().unwrap()),
        "--set",
        &format!("trusted_keys={}", k["public_key"].as_str().unwrap()),
    ]);
    let shown = String::from_utf8(h.ok(&["block", "inspect", "local/signed"]).stdout).unwrap();
    assert!(shown.contains("trusted_keys"), "{shown}");
    // A trusted key file that is not there fails every command at open, in one line.
    h.ok(&[
        "block",
        "create",
        "local/broken",
        "--set",
        &format!("basepath={}", base.display()),
        "--set",
        "trusted_keys=/nonexistent/ci.pub",
    ]);
    let out = h.run(&["ls", "local/broken/etl"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert_eq!(stderr(&out).lines().count(), 1);
    assert!(stderr(&out).contains("local/broken"), "{}", stderr(&out));
}
