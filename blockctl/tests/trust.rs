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

/// A local block at `h.path("store")` signing with a new key and trusting it; returns the
/// key as `key generate --json` printed it.
fn signing_block(h: &Home, name: &str) -> serde_json::Value {
    let k = h.json(&["--json", "key", "generate", name, "--unencrypted"]);
    h.ok(&[
        "block",
        "create",
        &format!("local/{name}"),
        "--set",
        &format!("basepath={}", h.path("store").display()),
        "--set",
        &format!("signing_key={}", k["secret_key"].as_str().unwrap()),
        "--set",
        &format!("trusted_keys={}", k["public_key_file"].as_str().unwrap()),
    ]);
    k
}

fn put_version(h: &Home, slug: &str, marker: &str) -> String {
    let src = h.path(&format!("src-{marker}"));
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("flow.py"), format!("print('{marker}')\n")).unwrap();
    let put = h.json(&["--json", "put", src.to_str().unwrap(), slug]);
    put["version"].as_str().unwrap().to_string()
}

/// A refusal: exit `code`, one stderr line naming `block`, nothing on stdout, DEST absent.
fn assert_refused(h: &Home, args: &[&str], code: i32, block: &str) -> String {
    let out = h.run(args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(block), "{err}");
    assert!(out.stdout.is_empty(), "{args:?}");
    err
}

#[test]
fn a_signing_block_signs_what_minisign_verifies_and_refuses_a_stripped_signature() {
    let h = Home::new();
    let k = signing_block(&h, "signed");
    let v = put_version(&h, "local/signed/etl", "one");
    let manifest = h.path(&format!("store/etl/.blocks/manifests/{v}.json.zst"));
    let sig = manifest.with_file_name(format!("{v}.json.zst.minisig"));
    let out = Command::new(minisign())
        .args(["-V", "-p", k["public_key_file"].as_str().unwrap(), "-m"])
        .arg(&manifest)
        .arg("-x")
        .arg(&sig)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("version={v}")),
        "{out:?}"
    );
    let dest = h.path("dest");
    h.ok(&["get", "local/signed/etl", dest.to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(dest.join("flow.py")).unwrap(),
        "print('one')\n"
    );
    // HEAD is still JSON naming the version, with its sequence number and expiry.
    let head: serde_json::Value =
        serde_json::from_slice(&std::fs::read(h.path("store/etl/.blocks/HEAD")).unwrap()).unwrap();
    assert_eq!(head["version"], v.as_str());
    assert!(
        head["seq"].as_u64().unwrap() > 0 && head["expires"].is_string(),
        "{head}"
    );

    // A plain object planted beside the signed package, or a plain mirror, is never read
    // by a block that requires signatures.
    std::fs::write(h.path("store/etl/flow.py"), "print('planted')\n").unwrap();
    let cat = h.ok(&["cat", "local/signed/etl/flow.py"]);
    assert_eq!(String::from_utf8_lossy(&cat.stdout), "print('one')\n");
    std::fs::create_dir_all(h.path("store/mirror")).unwrap();
    std::fs::write(h.path("store/mirror/flow.py"), "print('planted')\n").unwrap();
    let planted = h.path("planted");
    assert_refused(
        &h,
        &["get", "local/signed/mirror", planted.to_str().unwrap()],
        3,
        "local/signed/mirror",
    );
    assert_refused(
        &h,
        &["cat", "local/signed/mirror/flow.py"],
        3,
        "local/signed/mirror",
    );
    assert!(!planted.exists());

    std::fs::remove_file(&sig).unwrap();
    let dest2 = h.path("dest2");
    for args in [
        vec!["get", "local/signed/etl", dest2.to_str().unwrap()],
        vec!["cat", "local/signed/etl/flow.py"],
        vec!["ls", "local/signed/etl"],
        vec!["export", "local/signed/etl"],
    ] {
        let err = assert_refused(&h, &args, 7, "local/signed/etl");
        assert!(err.contains("not signed"), "{err}");
    }
    assert!(!dest2.exists());
    // The next signed put of the same tree signs it again.
    put_version(&h, "local/signed/etl", "one");
    assert!(sig.exists());
    h.ok(&["get", "local/signed/etl", dest2.to_str().unwrap()]);
}

#[test]
fn rollback_makes_an_older_version_current_and_gc_keeps_what_was_recently_current() {
    let h = Home::new();
    signing_block(&h, "signed");
    let slug = "local/signed/etl";
    let v1 = put_version(&h, slug, "one");
    let v2 = put_version(&h, slug, "two");
    // An agent that saw v2 ...
    h.ok(&["get", slug, h.path("seen").to_str().unwrap()]);
    let back = h.json(&["--json", "rollback", slug]);
    assert_eq!(back["from"], v2.as_str());
    assert_eq!(back["version"], v1.as_str());
    // ... takes the signed rollback (a newer sequence number), and gets v1.
    let dest = h.path("dest");
    h.ok(&["get", slug, dest.to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(dest.join("flow.py")).unwrap(),
        "print('one')\n"
    );
    let listed = h.json(&["--json", "versions", slug]);
    let current: Vec<&serde_json::Value> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["current"] == true)
        .collect();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0]["version"], v1.as_str());
    assert!(current[0]["current_since"].is_string(), "{listed}");
    // A version not listed is exit 3; a stale --if-version is exit 6; neither moves HEAD.
    assert_refused(&h, &["rollback", slug, "--to", "deadbeef"], 3, slug);
    assert_refused(&h, &["rollback", slug, "--if-version", &v2[..12]], 6, slug);
    let again = h.json(&[
        "--json",
        "rollback",
        slug,
        "--to",
        &v2[..12],
        "--if-version",
        &v1[..12],
    ]);
    assert_eq!(again["version"], v2.as_str());

    // Every version made current within the last hour stays; without the window they go.
    let v3 = put_version(&h, slug, "three");
    let kept = h.json(&["--json", "gc", slug, "--keep", "0", "--keep-within", "1h"]);
    assert_eq!(kept["removed"].as_array().unwrap().len(), 0, "{kept}");
    let gone = h.json(&["--json", "gc", slug, "--keep", "0"]);
    let mut removed: Vec<String> = gone["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    removed.sort();
    let mut want = vec![v1.clone(), v2.clone()];
    want.sort();
    assert_eq!(removed, want, "{gone}");
    assert!(
        !h.path(&format!(
            "store/etl/.blocks/manifests/{v1}.json.zst.minisig"
        ))
        .exists()
    );
    let listed = h.json(&["--json", "versions", slug]);
    assert_eq!(listed[0]["version"], v3.as_str());
    // Nothing left to go back to.
    assert_refused(&h, &["rollback", slug], 3, slug);
}
