//! The conformance suite against git, over git:// (git daemon) and over smart HTTP with basic
//! auth (lighttpd + git http-backend), both started by the harness; each case gets its own
//! repository. Then what is specific to git: a wrong password, what `git clone` sees after a
//! put, shallow gets, tags and commit ids, links that leave the destination, and pushes
//! that lose a race.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use conformance::checks::first_upload_phase;
use conformance::harness::{GitDaemon, GitHttp, shared};
use conformance::tree::{small_tree, snapshot, write};
use conformance::{Subject, conformance_suite};
use storage_core::{
    BlockPath, GetOptions, ProgressEvent, ProgressObserver, PutOptions, Secret, StorageBlock,
    VersionPrecondition,
};
use storage_git::{GitBlock, GitConfig, open};

fn config(url: String, username: Option<&str>, token: Option<&str>) -> GitConfig {
    GitConfig {
        url,
        reference: None,
        branch: None,
        token: token.map(Secret::new),
        username: username.map(str::to_string),
        depth: None,
        author_name: Some("Conformance".into()),
        author_email: Some("conformance@example.test".into()),
    }
}

/// One git:// server for the cases that overlap in time, and a fresh repository.
fn daemon_repo(name: &str) -> (Arc<GitDaemon>, String) {
    let server = shared::<GitDaemon>(GitDaemon::start);
    let url = server
        .create_repo(&conformance::bucket_name(name))
        .expect("create repo");
    (server, url)
}

/// One smart HTTP server for the cases that overlap in time, and a fresh repository.
fn http_repo(name: &str) -> (Arc<GitHttp>, String, String) {
    let server = shared::<GitHttp>(GitHttp::start);
    let name = conformance::bucket_name(name);
    let url = server.create_repo(&name).expect("create repo");
    let authed = server.authed_url(&name);
    (server, url, authed)
}

fn http_block(server: &GitHttp, url: String) -> GitBlock {
    open(
        &config(url, Some(server.user), Some(server.password)),
        "git/conformance",
    )
    .expect("open git block")
}

mod over_git_daemon {
    use super::*;

    async fn subject(case: &str) -> Subject {
        let (server, url) = daemon_repo(case);
        let block = open(&config(url, None, None), "git/conformance").expect("open git block");
        Subject::new(Arc::new(block), case).with_guard(server)
    }

    conformance_suite!(subject);
}

mod over_smart_http {
    use super::*;

    async fn subject(case: &str) -> Subject {
        let (server, url, _) = http_repo(case);
        let block = http_block(&server, url);
        Subject::new(Arc::new(block), case).with_guard(server)
    }

    conformance_suite!(subject);
}

fn git(args: &[&str], dir: &Path) {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_AUTHOR_NAME", "Other Writer")
        .env("GIT_AUTHOR_EMAIL", "other@example.test")
        .env("GIT_COMMITTER_NAME", "Other Writer")
        .env("GIT_COMMITTER_EMAIL", "other@example.test")
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn git_output(args: &[&str], dir: &Path) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run git");
    assert!(out.status.success(), "git {args:?} failed");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A clone of `url`'s branch main by the git command line, in `at`.
fn clone(url: &str, at: &Path) {
    git(
        &["clone", "-q", "--branch", "main", url, at.to_str().unwrap()],
        Path::new("/"),
    );
}

/// A snapshot of a checkout, without its `.git`.
fn checkout_snapshot(dir: &Path) -> std::collections::BTreeMap<String, conformance::tree::Node> {
    snapshot(dir)
        .into_iter()
        .filter(|(k, _)| k != ".git" && !k.starts_with(".git/"))
        .collect()
}

/// A tree with what git keeps: nested folders, an executable, an internal link, odd names.
fn project(root: &Path, marker: &str) {
    small_tree(root, marker);
    write(root, "sql/q1.sql", "select 1;\n");
    write(root, "with space/été+%.txt", "odd\n");
    write(root, "bin/run.sh", "#!/bin/sh\necho run\n");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        root.join("bin/run.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::os::unix::fs::symlink("../flow.py", root.join("bin/flow-link.py")).unwrap();
}

async fn put(block: &dyn StorageBlock, src: &Path, at: &str) -> String {
    block
        .put_directory(src, &BlockPath::parse(at).unwrap(), &PutOptions::default())
        .await
        .expect("put")
        .version
        .expect("a put has a version")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_over_http_is_exit_4_and_names_no_secret() {
    const WRONG: &str = "wrong-Passw0rd-4f1c";
    let (server, url, _) = http_repo("wrong-password");
    let scratch = tempfile::tempdir().unwrap();
    let src = scratch.path().join("src");
    small_tree(&src, "refused");
    let at = BlockPath::parse("etl").unwrap();
    let secrets = [WRONG, server.password];
    let wrong = open(
        &config(url.clone(), Some(server.user), Some(WRONG)),
        "git/auth",
    )
    .unwrap();
    // The same password in the URL's user info is scrubbed the same way.
    let in_url = url.replacen("http://", &format!("http://{}:{WRONG}@", server.user), 1);
    let wrong_in_url = open(&config(in_url, None, None), "git/auth").unwrap();
    for block in [&wrong, &wrong_in_url] {
        let put = block.put_directory(&src, &at, &PutOptions::default()).await;
        let dest = scratch.path().join("dest");
        let get = block
            .get_directory(&at, &dest, &GetOptions::default())
            .await;
        assert!(!dest.exists());
        let errors = [
            put.map(drop).unwrap_err(),
            get.map(drop).unwrap_err(),
            block.check().await.unwrap_err(),
            block.list_versions(&at).await.map(drop).unwrap_err(),
        ];
        for e in errors {
            let text = e.to_string();
            eprintln!("wrong password: exit {}: {text}", e.exit_code());
            assert_eq!(e.exit_code(), 4, "{text}");
            for s in secrets {
                assert!(!text.contains(s), "a secret in the message: {text}");
            }
            assert!(!format!("{e:?}").contains(WRONG));
        }
    }
    // No credentials at all: also exit 4, saying what to set.
    let none = open(&config(url, None, None), "git/auth").unwrap();
    let e = none.check().await.unwrap_err();
    assert_eq!(e.exit_code(), 4, "{e}");
    assert!(e.to_string().contains("token"), "{e}");
}

async fn clone_shows_exactly_what_was_put(block: &dyn StorageBlock, clone_url: &str) {
    let scratch = tempfile::tempdir().unwrap();
    let (etl, docs) = (scratch.path().join("etl"), scratch.path().join("docs"));
    project(&etl, "etl");
    write(&docs, "readme.md", "# docs\n");
    put(block, &etl, "flows/etl").await;
    let v = put(block, &docs, "docs").await;
    // A second put of flows/etl replaces that folder only.
    std::fs::remove_file(etl.join("sql/q1.sql")).unwrap();
    write(&etl, "sql/q2.sql", "select 2;\n");
    let last = put(block, &etl, "flows/etl").await;
    assert_ne!(v, last);

    let checkout = scratch.path().join("checkout");
    clone(clone_url, &checkout);
    let expected = scratch.path().join("expected");
    project(&expected.join("flows/etl"), "etl");
    std::fs::remove_file(expected.join("flows/etl/sql/q1.sql")).unwrap();
    write(&expected, "flows/etl/sql/q2.sql", "select 2;\n");
    write(&expected, "docs/readme.md", "# docs\n");
    assert_eq!(checkout_snapshot(&checkout), snapshot(&expected));
    assert_eq!(git_output(&["rev-parse", "HEAD"], &checkout), last);
    assert_eq!(
        git_output(&["log", "-1", "--format=%an <%ae>"], &checkout),
        "Conformance <conformance@example.test>"
    );
    assert_eq!(git_output(&["rev-list", "--count", "HEAD"], &checkout), "3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_clone_over_git_daemon_shows_exactly_the_uploaded_tree() {
    let (_server, url) = daemon_repo("clone-daemon");
    let block = open(&config(url.clone(), None, None), "git/clone").unwrap();
    clone_shows_exactly_what_was_put(&block, &url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_clone_over_http_shows_exactly_the_uploaded_tree() {
    let (server, url, authed) = http_repo("clone-http");
    let block = http_block(&server, url);
    clone_shows_exactly_what_was_put(&block, &authed).await;
}

/// Three commits, then gets at depth 1 (the default) and 0, and of the oldest version,
/// which needs the history a shallow fetch does not bring.
async fn shallow_and_full_gets_work(url: &str, user: Option<&str>, token: Option<&str>) {
    let scratch = tempfile::tempdir().unwrap();
    let src = scratch.path().join("src");
    let writer = open(&config(url.into(), user, token), "git/depth").unwrap();
    let mut versions = Vec::new();
    for marker in ["d1", "d2", "d3"] {
        small_tree(&src, marker);
        versions.push(put(&writer, &src, "etl").await);
    }
    let at = BlockPath::parse("etl").unwrap();
    for depth in [None, Some(1), Some(2), Some(0)] {
        let block = open(
            &GitConfig {
                depth,
                ..config(url.into(), user, token)
            },
            "git/depth",
        )
        .unwrap();
        let dest = scratch.path().join(format!("dest-{depth:?}"));
        let got = block
            .get_directory(&at, &dest, &GetOptions::default())
            .await
            .expect("get");
        assert_eq!(got.version.as_ref(), versions.last());
        assert_eq!(snapshot(&dest), snapshot(&src), "depth {depth:?}");
        assert!(!dest.join(".git").exists());
        let old = scratch.path().join(format!("old-{depth:?}"));
        let opts = GetOptions {
            version: Some(versions[0][..8].to_string()),
            ..GetOptions::default()
        };
        block.get_directory(&at, &old, &opts).await.expect("old");
        assert_eq!(
            std::fs::read_to_string(old.join("flow.py")).unwrap(),
            "VERSION = \"d1\"\n"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shallow_get_works_over_git_daemon() {
    let (_server, url) = daemon_repo("shallow-daemon");
    shallow_and_full_gets_work(&url, None, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shallow_get_works_over_http() {
    let (server, url, _) = http_repo("shallow-http");
    shallow_and_full_gets_work(&url, Some(server.user), Some(server.password)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reference_can_be_a_tag_or_a_commit_id() {
    let (_server, url) = daemon_repo("reference-kinds");
    let scratch = tempfile::tempdir().unwrap();
    let src = scratch.path().join("src");
    let block = open(&config(url.clone(), None, None), "git/refs").unwrap();
    small_tree(&src, "tagged");
    let tagged = put(&block, &src, "etl").await;
    small_tree(&src, "later");
    put(&block, &src, "etl").await;
    // An annotated tag on the first commit, made and pushed by the git command line.
    let work = scratch.path().join("work");
    clone(&url, &work);
    git(&["tag", "-a", "v1", "-m", "release 1", &tagged], &work);
    git(&["push", "-q", "origin", "v1"], &work);

    let at = BlockPath::parse("etl").unwrap();
    for reference in ["v1", tagged.as_str(), &tagged[..10]] {
        let pinned = open(
            &GitConfig {
                reference: Some(reference.into()),
                ..config(url.clone(), None, None)
            },
            "git/refs",
        )
        .unwrap();
        let dest = scratch.path().join(format!("dest-{reference}"));
        let got = pinned
            .get_directory(&at, &dest, &GetOptions::default())
            .await
            .unwrap_or_else(|e| panic!("get at {reference}: {e}"));
        assert_eq!(got.version.as_deref(), Some(tagged.as_str()));
        assert_eq!(
            std::fs::read_to_string(dest.join("flow.py")).unwrap(),
            "VERSION = \"tagged\"\n"
        );
    }
    let missing = open(
        &GitConfig {
            reference: Some("no-such-branch".into()),
            ..config(url, None, None)
        },
        "git/refs",
    )
    .unwrap();
    let dest = scratch.path().join("missing");
    let e = missing
        .get_directory(&at, &dest, &GetOptions::default())
        .await
        .unwrap_err();
    assert_eq!(e.exit_code(), 3, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_refuses_a_symlink_that_leaves_the_destination() {
    let (_server, url) = daemon_repo("escaping-link");
    let scratch = tempfile::tempdir().unwrap();
    let work = scratch.path().join("work");
    std::fs::create_dir(&work).unwrap();
    git(&["init", "-q", "-b", "main"], &work);
    write(&work, "etl/flow.py", "print(1)\n");
    std::os::unix::fs::symlink("../../../outside", work.join("etl/esc")).unwrap();
    git(&["add", "-A"], &work);
    git(&["commit", "-q", "-m", "hostile"], &work);
    git(&["push", "-q", &url, "main"], &work);

    let block = open(&config(url, None, None), "git/hostile").unwrap();
    let dest = scratch.path().join("dest");
    let e = block
        .get_directory(
            &BlockPath::parse("etl").unwrap(),
            &dest,
            &GetOptions::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.exit_code(), 5, "{e}");
    assert!(e.to_string().contains("esc"), "{e}");
    assert!(!dest.exists());
    let left: Vec<String> = std::fs::read_dir(scratch.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        left.iter().all(|n| !n.contains(".blockctl-")),
        "staging left behind: {left:?}"
    );
}

/// When the put starts pushing, another writer pushes a commit of its own with the git
/// command line, as a concurrent writer would.
struct OtherWriter {
    url: String,
    work: std::path::PathBuf,
    fired: AtomicBool,
}

impl ProgressObserver for OtherWriter {
    fn event(&self, event: ProgressEvent) {
        if !first_upload_phase(&event, &self.fired) {
            return;
        }
        clone(&self.url, &self.work);
        let note = format!("from the writer in {}\n", self.work.display());
        write(&self.work, "other/notes.md", note);
        git(&["add", "-A"], &self.work);
        git(&["commit", "-q", "-m", "other writer"], &self.work);
        git(&["push", "-q", "origin", "main"], &self.work);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_that_loses_the_race_is_a_conflict_and_changes_nothing() {
    let (_server, url) = daemon_repo("lost-race");
    let scratch = tempfile::tempdir().unwrap();
    let src = scratch.path().join("src");
    let block = open(&config(url.clone(), None, None), "git/race").unwrap();
    small_tree(&src, "r1");
    let v1 = put(&block, &src, "etl").await;

    // --if-version v1: the branch moves after the put read it, so the push must not land.
    small_tree(&src, "r2");
    let other = Arc::new(OtherWriter {
        url: url.clone(),
        work: scratch.path().join("other"),
        fired: AtomicBool::new(false),
    });
    let opts = PutOptions {
        if_version: Some(VersionPrecondition::Current(v1.clone())),
        progress: Some(other.clone()),
        ..PutOptions::default()
    };
    let at = BlockPath::parse("etl").unwrap();
    let e = block.put_directory(&src, &at, &opts).await.unwrap_err();
    eprintln!("lost race: exit {}: {e}", e.exit_code());
    assert!(other.fired.load(Ordering::SeqCst));
    assert_eq!(e.exit_code(), 6, "{e}");
    assert!(e.to_string().contains("non-fast-forward"), "{e}");
    let tip = git_output(&["rev-parse", "HEAD"], &scratch.path().join("other"));
    let current = block.list_versions(&at).await.unwrap();
    assert_eq!(current[0].version, v1, "the losing put changed etl");

    // A stale --if-version is refused before anything is pushed.
    let e = block.put_directory(&src, &at, &opts).await.unwrap_err();
    eprintln!("stale --if-version: exit {}: {e}", e.exit_code());
    assert_eq!(e.exit_code(), 6, "{e}");

    // A plain put builds again on the moved branch and keeps the other writer's commit.
    let other = Arc::new(OtherWriter {
        url: url.clone(),
        work: scratch.path().join("other-2"),
        fired: AtomicBool::new(false),
    });
    let opts = PutOptions {
        progress: Some(other.clone()),
        ..PutOptions::default()
    };
    let report = block.put_directory(&src, &at, &opts).await.expect("put");
    assert!(other.fired.load(Ordering::SeqCst));
    let checkout = scratch.path().join("checkout");
    clone(&url, &checkout);
    assert_eq!(
        git_output(&["rev-parse", "HEAD"], &checkout),
        report.version.unwrap()
    );
    assert_ne!(git_output(&["rev-parse", "HEAD~1"], &checkout), tip);
    assert!(checkout.join("other/notes.md").is_file());
    assert_eq!(
        std::fs::read_to_string(checkout.join("etl/flow.py")).unwrap(),
        "VERSION = \"r2\"\n"
    );
}

fn answers(url: &str) -> bool {
    Command::new("git")
        .args(["ls-remote", url])
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn git_servers_answer_and_stop_when_dropped() {
    let daemon = GitDaemon::start().unwrap_or_else(|e| panic!("{e}"));
    let url = format!("{}/repo.git", daemon.base_url);
    assert!(answers(&url));
    drop(daemon);
    assert!(!answers(&url), "git daemon still answers after drop");

    let http = GitHttp::start().unwrap_or_else(|e| panic!("{e}"));
    let url = http.authed_url("repo");
    assert!(answers(&url));
    let wrong = url.replace(http.password, "not-the-password");
    assert!(!answers(&wrong), "the server let a wrong password in");
    drop(http);
    assert!(!answers(&url), "lighttpd still answers after drop");
}

/// A put's version record rides in its commit: the message is the commit's subject (what
/// `git log` shows), the whole record a `Blockctl-Record:` trailer that `versions` reads back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_records_its_message_author_labels_and_source_in_the_commit() {
    let (_server, url) = daemon_repo("record");
    let block = open(&config(url.clone(), None, None), "git/record").unwrap();
    let src = tempfile::tempdir().unwrap();
    project(src.path(), "record");
    let record = storage_core::VersionRecord {
        message: Some("nightly ETL: add the q1 query".into()),
        author: Some("ci@build-7".into()),
        labels: [("ticket".to_string(), "OPS-7".to_string())].into(),
        source: Some(storage_core::SourceInfo {
            commit: "0123456789abcdef0123456789abcdef01234567".into(),
            branch: Some("main".into()),
            dirty: false,
            origin: Some("https://example.test/flows.git".into()),
        }),
    };
    let at = BlockPath::parse("flows").unwrap();
    let opts = PutOptions {
        record: Some(record.clone()),
        ..PutOptions::default()
    };
    let v = block
        .put_directory(src.path(), &at, &opts)
        .await
        .expect("put")
        .version
        .unwrap();
    let listed = block.list_versions(&at).await.unwrap();
    let mine = listed.iter().find(|i| i.version == v).expect("listed");
    assert_eq!(mine.record, record);
    // A put without a record keeps the plain message, and lists an empty record.
    write(src.path(), "flow.py", "print('again')\n");
    let plain = put(&block, src.path(), "flows").await;
    let listed = block.list_versions(&at).await.unwrap();
    let second = listed.iter().find(|i| i.version == plain).unwrap();
    assert!(second.record.is_empty(), "{:?}", second.record);
    // What git itself shows.
    let checkout = tempfile::tempdir().unwrap();
    let dir = checkout.path().join("c");
    clone(&url, &dir);
    let subject = git_output(&["log", "-1", "--format=%s", &v], &dir);
    assert_eq!(subject, "nightly ETL: add the q1 query");
    let body = git_output(&["log", "-1", "--format=%b", &v], &dir);
    assert!(body.starts_with("Blockctl-Record: {"), "{body}");
    assert_eq!(
        git_output(&["log", "-1", "--format=%s", &plain], &dir),
        "blockctl put flows"
    );
}

/// A get by `block` that must be refused for trust: exit 7, one line naming the block,
/// nothing written. Returns the message.
async fn refused(block: &GitBlock, at: &str, opts: &GetOptions, why: &str) -> String {
    let scratch = tempfile::tempdir().unwrap();
    let dest = scratch.path().join("dest");
    let e = block
        .get_directory(&BlockPath::parse(at).unwrap(), &dest, opts)
        .await
        .expect_err(why);
    let text = e.to_string();
    assert_eq!(e.exit_code(), 7, "{why}: {text}");
    assert_eq!(text.lines().count(), 1, "{why}: {text}");
    assert!(text.contains("git/agent"), "{why}: {text}");
    assert!(!dest.exists(), "{why}: a refused get wrote DEST");
    text
}

/// A get by `block` that must succeed with the flow file of `marker`.
async fn accepted(block: &GitBlock, at: &str, opts: &GetOptions, marker: &str) {
    let scratch = tempfile::tempdir().unwrap();
    let dest = scratch.path().join("dest");
    block
        .get_directory(&BlockPath::parse(at).unwrap(), &dest, opts)
        .await
        .unwrap_or_else(|e| panic!("a trusted get ({marker}): {e}"));
    assert_eq!(
        std::fs::read_to_string(dest.join("flow.py")).unwrap(),
        format!("VERSION = \"{marker}\"\n")
    );
}

/// Signed commits: a signing block signs every commit it pushes; an agent with trusted keys
/// takes them and refuses, with exit 7 and nothing written, a commit pushed by another tool,
/// a tree changed after signing, a signature by a key it does not trust, a signature made
/// for another branch, a force-push back to an older signed commit after it saw the newer
/// (unless told to take it) and an expired HEAD; a signed rollback is taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_commits_refuse_every_attack_and_roll_back() {
    use storage_core::signing::{TrustedKeys, generate_key_pair};
    use storage_core::{RollbackOptions, Trust};

    let (_server, url) = daemon_repo("signed");
    let scratch = tempfile::tempdir().unwrap();
    let keys = scratch.path().join("keys");
    let own = generate_key_pair(&keys, "own", None).unwrap();
    let other = generate_key_pair(&keys, "other", None).unwrap();
    let trust = |sign: bool, key: &str, seen: &str| Trust {
        signing_key: sign.then(|| own.secret_key.clone()),
        signing_password: None,
        trusted_keys: Some(TrustedKeys::parse(&[key.to_string()]).unwrap()),
        seen_heads: Some(scratch.path().join(seen)),
    };
    let block_on = |branch: &str, label: &str, t: Trust| {
        let b = open(
            &GitConfig {
                branch: Some(branch.into()),
                ..config(url.clone(), None, None)
            },
            label,
        )
        .unwrap();
        b.set_trust(t).unwrap();
        b
    };
    let publisher = block_on("main", "git/publisher", trust(true, &own.public_key, "p"));
    let agent = block_on("main", "git/agent", trust(false, &own.public_key, "a"));
    let stranger = block_on("main", "git/agent", trust(false, &other.public_key, "s"));
    let plain = GetOptions::default();
    let src = scratch.path().join("src");
    let put_signed = |marker: &'static str, valid_for: Option<std::time::Duration>| {
        small_tree(&src, marker);
        let (publisher, src) = (&publisher, src.clone());
        async move {
            let opts = PutOptions {
                valid_for,
                ..PutOptions::default()
            };
            publisher
                .put_directory(&src, &BlockPath::parse("etl").unwrap(), &opts)
                .await
                .unwrap_or_else(|e| panic!("a signed put: {e}"))
                .version
                .unwrap()
        }
    };

    let v1 = put_signed("one", None).await;
    accepted(&agent, "etl", &plain, "one").await;
    let why = refused(&stranger, "etl", &plain, "a key not trusted").await;
    assert!(why.contains("not trusted") || why.contains("key"), "{why}");
    let v2 = put_signed("two", None).await;
    accepted(&agent, "etl", &plain, "two").await;

    // The branch forced back to the older signed commit, after the agent saw the newer.
    let work = scratch.path().join("work");
    clone(&url, &work);
    git(
        &[
            "push",
            "-q",
            "-f",
            "origin",
            &format!("{v1}:refs/heads/main"),
        ],
        &work,
    );
    let why = refused(&agent, "etl", &plain, "a rollback").await;
    assert!(why.contains("older"), "{why}");
    let take = GetOptions {
        allow_rollback: true,
        ..GetOptions::default()
    };
    accepted(&agent, "etl", &take, "one").await;
    git(
        &[
            "push",
            "-q",
            "-f",
            "origin",
            &format!("{v2}:refs/heads/main"),
        ],
        &work,
    );
    accepted(&agent, "etl", &plain, "two").await;

    // A commit pushed by another tool carries no signature; cat and ls refuse it too.
    git(&["fetch", "-q", "origin"], &work);
    git(&["reset", "-q", "--hard", "origin/main"], &work);
    write(&work, "etl/flow.py", "VERSION = \"evil\"\n");
    git(&["commit", "-q", "-am", "an edit by hand"], &work);
    git(&["push", "-q", "origin", "HEAD:main"], &work);
    let why = refused(&agent, "etl", &plain, "an unsigned commit").await;
    assert!(why.contains("not signed"), "{why}");
    let e = agent
        .read_path(&BlockPath::parse("etl/flow.py").unwrap())
        .await
        .expect_err("cat of an unsigned commit");
    assert_eq!(e.exit_code(), 7, "{e}");
    let e = agent
        .list_files(&BlockPath::parse("etl").unwrap())
        .await
        .expect_err("ls of an unsigned commit");
    assert_eq!(e.exit_code(), 7, "{e}");

    // The signed message of v2 copied onto another tree.
    let message = git_output(&["log", "-1", "--format=%B", &v2], &work);
    let file = scratch.path().join("message");
    std::fs::write(&file, message).unwrap();
    write(&work, "etl/flow.py", "VERSION = \"evil again\"\n");
    git(&["commit", "-q", "-a", "-F", file.to_str().unwrap()], &work);
    git(&["push", "-q", "origin", "HEAD:main"], &work);
    let why = refused(&agent, "etl", &plain, "a tree changed after signing").await;
    assert!(why.contains("not the one signed"), "{why}");

    // A commit signed for main, served on another branch.
    git(
        &["push", "-q", "origin", &format!("{v2}:refs/heads/other")],
        &work,
    );
    let elsewhere = block_on("other", "git/agent", trust(false, &own.public_key, "o"));
    let why = refused(&elsewhere, "etl", &plain, "a signature for another branch").await;
    assert!(why.contains("branch main"), "{why}");

    // A version named by id is checked for its signature, not its age.
    let named = |v: &str| GetOptions {
        version: Some(v.to_string()),
        ..GetOptions::default()
    };
    accepted(&agent, "etl", &named(&v1), "one").await;
    let tip = git_output(&["rev-parse", "HEAD"], &work);
    refused(&agent, "etl", &named(&tip), "an unsigned version by id").await;

    // A signed rollback (over the tampered tip) is taken, through the checks every block
    // the facade opens passes.
    let at = BlockPath::parse("etl").unwrap();
    let checked = storage_core::Checked::wrap(Arc::new(publisher.clone()));
    let back = checked
        .rollback(
            &at,
            &RollbackOptions {
                to: Some(v1[..10].to_string()),
                ..RollbackOptions::default()
            },
        )
        .await
        .expect("a signed rollback");
    assert_eq!(back.from.as_deref(), Some(tip.as_str()));
    assert_ne!(
        back.to, v1,
        "a rollback is a new commit holding the old tree"
    );
    let listed = checked.list_versions(&at).await.unwrap();
    assert_eq!(listed[0].version, back.to);
    assert!(listed[0].current && listed[0].current_since.is_some());
    accepted(&agent, "etl", &plain, "one").await;
    let e = checked
        .rollback(
            &at,
            &RollbackOptions {
                to: Some("abcdef0".into()),
                ..RollbackOptions::default()
            },
        )
        .await
        .expect_err("an unlisted version");
    assert_eq!(e.exit_code(), 3, "{e}");

    // An expired HEAD: no leeway past its expiry beyond a second.
    put_signed("short", Some(std::time::Duration::from_secs(1))).await;
    accepted(&agent, "etl", &plain, "short").await;
    std::thread::sleep(std::time::Duration::from_millis(2_100));
    let why = refused(&agent, "etl", &plain, "an expired HEAD").await;
    assert!(why.contains("expired"), "{why}");
    // A re-put of the same tree signs HEAD again (a commit of the same tree), as a re-put
    // of the current version does on the other backends: the agent takes it once more.
    let short = git_output(&["ls-remote", &url, "refs/heads/main"], &work);
    let again = put_signed("short", None).await;
    assert!(!short.starts_with(&again), "a new commit signs HEAD again");
    accepted(&agent, "etl", &plain, "short").await;
}
