//! A git block over a `file://` URL: no server needed, full history (libgit2 fetches no
//! shallow history over file://). The conformance suite runs over git:// and smart HTTP.

use std::path::Path;
use std::process::Command;

use storage_core::{BlockPath, DeleteOptions, GetOptions, PutOptions, StorageBlock};
use storage_git::{GitConfig, open};

fn bare_repo(at: &Path) -> String {
    let ok = Command::new("git")
        .args(["init", "-q", "--bare", "-b", "main"])
        .arg(at)
        .status()
        .expect("git init")
        .success();
    assert!(ok);
    format!("file://{}", at.display())
}

fn config(url: String) -> GitConfig {
    GitConfig {
        url,
        reference: None,
        branch: None,
        token: None,
        username: None,
        depth: None,
        author_name: None,
        author_email: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_versions_and_rm_over_a_file_url() {
    let d = tempfile::tempdir().unwrap();
    let block = open(&config(bare_repo(&d.path().join("r.git"))), "git/local").unwrap();
    let at = BlockPath::parse("flows/etl").unwrap();
    let src = d.path().join("src");
    std::fs::create_dir_all(src.join("sql")).unwrap();
    std::fs::write(src.join("flow.py"), "v = 1\n").unwrap();
    std::fs::write(src.join("sql/q.sql"), "select 1;\n").unwrap();

    let first = block
        .put_directory(&src, &at, &PutOptions::default())
        .await
        .unwrap();
    assert!(!first.skipped);
    let again = block
        .put_directory(&src, &at, &PutOptions::default())
        .await
        .unwrap();
    assert!(again.skipped);
    assert_eq!(again.version, first.version);

    std::fs::write(src.join("flow.py"), "v = 2\n").unwrap();
    let second = block
        .put_directory(&src, &at, &PutOptions::default())
        .await
        .unwrap();
    let versions = block.list_versions(&at).await.unwrap();
    let ids: Vec<_> = versions.iter().map(|v| Some(v.version.clone())).collect();
    assert_eq!(ids, [second.version.clone(), first.version.clone()]);
    assert!(versions[0].current && versions[0].files == 2);

    let dest = d.path().join("dest");
    let got = block
        .get_directory(&at, &dest, &GetOptions::default())
        .await
        .unwrap();
    assert_eq!(got.version, second.version);
    assert_eq!(
        std::fs::read_to_string(dest.join("flow.py")).unwrap(),
        "v = 2\n"
    );
    assert!(!dest.join(".git").exists());
    let cat = block
        .read_path(&BlockPath::parse("flows/etl/sql/q.sql").unwrap())
        .await
        .unwrap();
    assert_eq!(&cat[..], b"select 1;\n");

    block.delete(&at, &DeleteOptions::default()).await.unwrap();
    let gone = block
        .get_directory(&at, &d.path().join("gone"), &GetOptions::default())
        .await
        .unwrap_err();
    assert_eq!(gone.exit_code(), 3, "{gone}");
    // History stays: the old versions can still be got by id.
    let old = d.path().join("old");
    let opts = GetOptions {
        version: first.version.clone(),
        ..GetOptions::default()
    };
    block.get_directory(&at, &old, &opts).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(old.join("flow.py")).unwrap(),
        "v = 1\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_layout_write_path_and_gc_are_refused_as_unsupported() {
    let d = tempfile::tempdir().unwrap();
    // As the facade opens it: Checked refuses what the capabilities leave out.
    let block = storage_core::Checked::wrap(std::sync::Arc::new(
        open(&config(bare_repo(&d.path().join("r.git"))), "git/local").unwrap(),
    ));
    let at = BlockPath::parse("etl").unwrap();
    let opts = PutOptions {
        layout: storage_core::Layout::Files,
        ..PutOptions::default()
    };
    let e = block.put_directory(d.path(), &at, &opts).await.unwrap_err();
    assert_eq!(e.exit_code(), 2);
    let e = block.write_path(&at, "x".into()).await.unwrap_err();
    assert_eq!(e.exit_code(), 2);
    assert_eq!(
        block
            .gc(&at, &storage_core::GcOptions::keep(1))
            .await
            .unwrap_err()
            .exit_code(),
        2
    );
    let caps = block.capabilities();
    assert!(caps.native_tree && !caps.package_layout && !caps.files_layout && !caps.gc);
}
