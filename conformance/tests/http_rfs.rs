//! Read-only `http://` remote file systems against python's http.server (no Range support,
//! autoindex listings), serving a folder that a `local` block wrote. A read-only block cannot
//! run the conformance suite (every case starts with a put), so this checks the contract
//! case by case: gets of a package, of a sub-folder of it, of an old version and of a files
//! layout, each verified; `cat`, `ls` and `versions`; a missing path is exit 3; and every
//! write (put, `--if-version`, rm, gc, write_path) is refused as unsupported (exit 2) with
//! nothing changed on the server. `curl` reads the same files. Through the fault proxy, a get
//! cut by resets fails with exit 1 in bounded time and writes nothing; a frame damaged on
//! the server is exit 5.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use conformance::harness::{Cut, Direction, FaultProxy, StaticHttp, shared};
use conformance::tree::{noise, small_tree, snapshot, write};
use storage_core::{
    BlockPath, DeleteOptions, GetOptions, Layout, PutOptions, StorageBlock, VersionPrecondition,
};
use storage_local::LocalConfig;
use storage_rfs::RfsConfig;

fn server() -> Arc<StaticHttp> {
    shared::<StaticHttp>(StaticHttp::start)
}

/// A read-only block over `server`'s `sub`, as the facade opens it (capabilities checked).
fn http_block(server: &StaticHttp, sub: &str) -> Arc<dyn StorageBlock> {
    block_at(&server.url(sub), None)
}

/// A read-only block over the web folder at `url`, its requests bounded by `timeout` seconds.
fn block_at(url: &str, timeout: Option<i64>) -> Arc<dyn StorageBlock> {
    let config = RfsConfig {
        basepath: url.to_string(),
        username: None,
        password: None,
        private_key_path: None,
        private_key: None,
        known_hosts: None,
        insecure_accept_host_key: None,
        timeout,
    };
    storage_core::Checked::wrap(Arc::new(
        storage_rfs::open(&config, "remote-file-system/web").unwrap(),
    ))
}

/// A local block writing into the served folder's `sub`.
fn writer(server: &StaticHttp, sub: &str) -> storage_core::ObjectStoreBlock {
    let basepath = server.root.join(sub);
    std::fs::create_dir_all(&basepath).unwrap();
    let config = LocalConfig {
        basepath: basepath.display().to_string(),
    };
    storage_local::open(&config, "local/served").unwrap()
}

fn path(p: &str) -> BlockPath {
    BlockPath::parse(p).unwrap()
}

fn curl(url: &str) -> Vec<u8> {
    let out = Command::new("curl")
        .args(["-sSf", url])
        .output()
        .expect("run curl");
    assert!(
        out.status.success(),
        "curl {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packages_and_versions_are_read_and_verified() {
    let server = server();
    let (local, web) = (writer(&server, "pkg"), http_block(&server, "pkg"));
    assert!(!web.capabilities().compare_and_swap && !web.capabilities().gc);
    let src = tempfile::tempdir().unwrap();
    small_tree(src.path(), "one");
    write(src.path(), "sql/odd name+%.sql", "select 1;\n");
    // A put of `src` at `etl` through the writer: the version it made.
    let put = || async {
        local
            .put_directory(src.path(), &path("etl"), &PutOptions::default())
            .await
            .unwrap()
            .version
            .unwrap()
    };
    let v1 = put().await;
    let first = snapshot(src.path());
    write(src.path(), "flow.py", "print('two')\n");
    let v2 = put().await;

    let scratch = tempfile::tempdir().unwrap();
    let dest = scratch.path().join("current");
    let got = web
        .get_directory(&path("etl"), &dest, &GetOptions::default())
        .await
        .unwrap();
    assert_eq!(got.version.as_deref(), Some(v2.as_str()));
    assert_eq!(snapshot(&dest), snapshot(src.path()));

    let old = scratch.path().join("old");
    let opts = GetOptions {
        version: Some(v1[..12].to_string()),
        ..GetOptions::default()
    };
    web.get_directory(&path("etl"), &old, &opts).await.unwrap();
    assert_eq!(snapshot(&old), first);

    let sql = scratch.path().join("sql");
    web.get_directory(&path("etl/sql"), &sql, &GetOptions::default())
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(sql.join("odd name+%.sql")).unwrap(),
        "select 1;\n"
    );

    // cat: a ranged read of one frame, sliced locally since http.server ignores Range.
    let flow = web.read_path(&path("etl/flow.py")).await.unwrap();
    assert_eq!(&flow[..], b"print('two')\n");
    let versions = web.list_versions(&path("etl")).await.unwrap();
    let ids: Vec<&str> = versions.iter().map(|v| v.version.as_str()).collect();
    assert_eq!(ids, [v2.as_str(), v1.as_str()]);
    assert!(versions[0].current);
    let files = web.list_files(&path("etl")).await.unwrap();
    assert!(
        files.iter().any(|f| f.path == "sql/odd name+%.sql"),
        "{files:?}"
    );

    // curl reads the same objects.
    let head = curl(&server.url("pkg/etl/.blocks/HEAD"));
    assert!(String::from_utf8_lossy(&head).contains(&v2));

    let missing = web
        .get_directory(
            &path("nothing-here"),
            &scratch.path().join("m"),
            &GetOptions::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(missing.exit_code(), 3, "{missing}");
    assert!(!scratch.path().join("m").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_files_layout_is_read_through_the_directory_listing() {
    let server = server();
    let (local, web) = (writer(&server, "mirror"), http_block(&server, "mirror"));
    let src = tempfile::tempdir().unwrap();
    small_tree(src.path(), "files");
    write(src.path(), "deep/er/data.csv", "a,b\n1,2\n");
    write(src.path(), "odd/plus+percent%hash#.cfg", "odd\n");
    let files = PutOptions {
        layout: Layout::Files,
        ..PutOptions::default()
    };
    local
        .put_directory(src.path(), &path("site"), &files)
        .await
        .unwrap();
    let scratch_dest = tempfile::tempdir().unwrap();
    let dest = scratch_dest.path().join("dest");
    web.get_directory(&path("site"), &dest, &GetOptions::default())
        .await
        .unwrap();
    // A files layout keeps only files (no empty folders, no modes).
    let only_files = |root: &std::path::Path| {
        snapshot(root)
            .into_iter()
            .filter(|(_, n)| matches!(n, conformance::tree::Node::File { .. }))
            .map(|(k, _)| k)
            .collect::<Vec<_>>()
    };
    assert_eq!(only_files(&dest), only_files(src.path()));
    assert_eq!(
        std::fs::read(dest.join("deep/er/data.csv")).unwrap(),
        curl(&server.url("mirror/site/deep/er/data.csv"))
    );
    let cat = web
        .read_path(&path("site/odd/plus+percent%hash#.cfg"))
        .await;
    assert_eq!(&cat.unwrap()[..], b"odd\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_is_refused_as_unsupported_and_changes_nothing() {
    let server = server();
    let (local, web) = (writer(&server, "ro"), http_block(&server, "ro"));
    let src = tempfile::tempdir().unwrap();
    small_tree(src.path(), "ro");
    let v1 = local
        .put_directory(src.path(), &path("etl"), &PutOptions::default())
        .await
        .unwrap()
        .version
        .unwrap();
    // A second version, so that gc has an old one to drop.
    write(src.path(), "flow.py", "print('two')\n");
    local
        .put_directory(src.path(), &path("etl"), &PutOptions::default())
        .await
        .unwrap();
    let before = snapshot(&server.root.join("ro"));
    write(src.path(), "flow.py", "print('changed')\n");
    let attempts = [
        (
            "put",
            web.put_directory(src.path(), &path("etl"), &PutOptions::default())
                .await
                .err(),
        ),
        (
            "put --layout files",
            web.put_directory(
                src.path(),
                &path("etl2"),
                &PutOptions {
                    layout: Layout::Files,
                    ..PutOptions::default()
                },
            )
            .await
            .err(),
        ),
        (
            "put --if-version",
            web.put_directory(
                src.path(),
                &path("etl"),
                &PutOptions {
                    if_version: Some(VersionPrecondition::Current(v1[..12].to_string())),
                    ..PutOptions::default()
                },
            )
            .await
            .err(),
        ),
        (
            "write_path",
            web.write_path(&path("etl/x"), Bytes::from_static(b"x"))
                .await
                .err(),
        ),
        (
            "rm",
            web.delete(&path("etl"), &DeleteOptions::default())
                .await
                .err(),
        ),
        (
            "rm --version",
            web.delete(
                &path("etl"),
                &DeleteOptions {
                    version: Some(v1.clone()),
                },
            )
            .await
            .err(),
        ),
        (
            "gc",
            web.gc(&path("etl"), &storage_core::GcOptions::keep(0))
                .await
                .err(),
        ),
    ];
    for (what, err) in attempts {
        let err = err.unwrap_or_else(|| panic!("{what} succeeded on a read-only block"));
        assert_eq!(err.exit_code(), 2, "{what}: {err}");
        assert!(!err.to_string().contains('\n'), "{what}: {err}");
    }
    assert_eq!(snapshot(&server.root.join("ro")), before);
}

/// Through a proxy that resets every connection once 256 KiB have come down, a get of a
/// package fails with exit 1 in bounded time and writes nothing; once the proxy passes
/// everything again the same get succeeds. A frame damaged on the server is exit 5, with
/// nothing written either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_or_damaged_download_fails_cleanly_with_nothing_written() {
    let server = server();
    let local = writer(&server, "faulty");
    let src = tempfile::tempdir().unwrap();
    small_tree(src.path(), "big");
    write(src.path(), "data/blob.bin", noise(4 << 20, 7));
    local
        .put_directory(src.path(), &path("etl"), &PutOptions::default())
        .await
        .unwrap();
    let proxy = FaultProxy::start(&format!("127.0.0.1:{}", server.port))
        .await
        .unwrap();
    let web = block_at(&format!("{}/faulty", proxy.url()), Some(10));
    let uncached = GetOptions {
        no_cache: true,
        ..GetOptions::default()
    };
    let scratch = tempfile::tempdir().unwrap();

    proxy.partition_after(Cut::Reset, 256 << 10, Direction::Downstream);
    let started = Instant::now();
    let err = web
        .get_directory(&path("etl"), &scratch.path().join("cut"), &uncached)
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(err.exit_code(), 1, "{err}");
    assert!(proxy.injected().reset >= 1, "no reset happened");
    assert_eq!(std::fs::read_dir(scratch.path()).unwrap().count(), 0);

    proxy.pass_through();
    let whole = scratch.path().join("whole");
    web.get_directory(&path("etl"), &whole, &uncached)
        .await
        .unwrap();
    assert_eq!(snapshot(&whole), snapshot(src.path()));

    // One pack of frames damaged where the server keeps it.
    let packs = server.root.join("faulty/etl/.blocks/packs");
    let frame = walkdir_files(&packs)
        .into_iter()
        .max_by_key(|p| p.metadata().unwrap().len())
        .expect("a stored pack");
    let mut bytes = std::fs::read(&frame).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&frame, bytes).unwrap();
    let bad = scratch.path().join("bad");
    let err = web
        .get_directory(&path("etl"), &bad, &uncached)
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), 5, "{err}");
    assert!(!bad.exists());
}

/// Every file under `dir`.
fn walkdir_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walkdir_files(&p));
        } else {
            out.push(p);
        }
    }
    out
}
