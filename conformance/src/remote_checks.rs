//! Checks the tests of remote stores share (SFTP, WebDAV, FTP, SMB, OCI): a login refused
//! with exit 4 and no secret, a files layout put for another client to look at, a
//! compare-and-swap between two clients, a store left sound after a fault, and puts and gets
//! through a [`FaultProxy`] cut by resets or stalled.

use std::any::Any;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use object_store::path::Path as Key;
use object_store::{
    Error as StoreError, ObjectStore, ObjectStoreExt, PutMode, PutOptions as StorePut, PutPayload,
    UpdateVersion,
};
use storage_core::{BlockPath, GetOptions, Layout, ObjectStoreBlock, PutOptions, StorageBlock};

use crate::checks::{assert_clean_failure, within_bound};
use crate::harness::{Cut, Direction, FaultProxy};
use crate::tree::{noise, small_tree, write};

/// check, put and get of each block fail with exit 4, one line that names `label`, and
/// no secret in the message or in the Debug output of the error or the block.
pub async fn refused<B: StorageBlock + fmt::Debug>(blocks: &[&B], label: &str, secrets: &[&str]) {
    refused_by(blocks, label, secrets, false).await;
}

/// As [`refused`], and listing the versions of a path fails the same way (a registry answers
/// that apart from reads and writes).
pub async fn refused_listing_too<B: StorageBlock + fmt::Debug>(
    blocks: &[&B],
    label: &str,
    secrets: &[&str],
) {
    refused_by(blocks, label, secrets, true).await;
}

async fn refused_by<B: StorageBlock + fmt::Debug>(
    blocks: &[&B],
    label: &str,
    secrets: &[&str],
    listing: bool,
) {
    let src = tempfile::tempdir().unwrap();
    small_tree(src.path(), "x");
    let at = BlockPath::parse("refused").unwrap();
    let scratch_dest = tempfile::tempdir().unwrap();
    let dest = scratch_dest.path().join("dest");
    for block in blocks {
        let mut failures = vec![
            ("check", block.check().await.err()),
            (
                "put",
                block
                    .put_directory(src.path(), &at, &PutOptions::default())
                    .await
                    .err(),
            ),
            // No frame from the agent cache, which other tests may have filled.
            (
                "get",
                block.get_directory(&at, &dest, &uncached()).await.err(),
            ),
        ];
        if listing {
            failures.push(("versions", block.list_versions(&at).await.err()));
        }
        for (what, err) in failures {
            let err = err.unwrap_or_else(|| panic!("{what} succeeded without valid credentials"));
            let (shown, debugged) = (err.to_string(), format!("{err:?} {block:?}"));
            eprintln!("{what}: exit {}: {shown}", err.exit_code());
            assert_eq!(err.exit_code(), 4, "{what}: {shown}");
            assert!(shown.starts_with(label), "{what}: {shown}");
            assert!(!shown.contains('\n'), "{what}: {shown}");
            for secret in secrets {
                assert!(
                    !shown.contains(secret) && !debugged.contains(secret),
                    "{what}: a secret appears in the error: {debugged}"
                );
            }
        }
    }
    assert!(!dest.exists());
}

/// A files layout put to `block` at `mirror-seen`, for another client to look at: a small
/// tree marked `files`, with `deep/er/data.csv`, `odd/plus+percent%hash#.cfg` and the `extra`
/// files (path, content). Returns the source, the path and the options, for a second put.
pub async fn put_a_mirror<B: StorageBlock>(
    block: &B,
    extra: &[(&str, &str)],
) -> (tempfile::TempDir, BlockPath, PutOptions) {
    let src = tempfile::tempdir().unwrap();
    small_tree(src.path(), "files");
    write(src.path(), "deep/er/data.csv", "a,b\n1,2\n");
    write(src.path(), "odd/plus+percent%hash#.cfg", "odd\n");
    for (path, content) in extra {
        write(src.path(), path, content);
    }
    let at = BlockPath::parse("mirror-seen").unwrap();
    let opts = PutOptions {
        layout: Layout::Files,
        ..PutOptions::default()
    };
    block.put_directory(src.path(), &at, &opts).await.unwrap();
    (src, at, opts)
}

/// Two stores (two clients) on one folder: Create, a stale Update and six racing Updates
/// behave as a compare-and-swap between them. Returns what `dir` (the HEAD's folder on disk)
/// holds afterwards.
pub async fn compare_and_swap_between(
    one: Arc<dyn ObjectStore>,
    two: Arc<dyn ObjectStore>,
    dir: &Path,
) {
    let key = Key::parse("two-clients/.blocks/HEAD").unwrap();
    let put = |store: Arc<dyn ObjectStore>, mode: PutMode, body: &'static str| {
        let key = key.clone();
        async move {
            let opts = StorePut {
                mode,
                ..Default::default()
            };
            store
                .put_opts(&key, PutPayload::from_static(body.as_bytes()), opts)
                .await
        }
    };
    put(one.clone(), PutMode::Create, "first").await.unwrap();
    let again = put(two.clone(), PutMode::Create, "second").await;
    assert!(
        matches!(again, Err(StoreError::AlreadyExists { .. })),
        "{again:?}"
    );

    let read = one.get(&key).await.unwrap();
    let seen = UpdateVersion {
        e_tag: read.meta.e_tag.clone(),
        version: None,
    };
    // The other client replaces the file within the same second, with the same size.
    put(two.clone(), PutMode::Overwrite, "other").await.unwrap();
    let stale = put(one.clone(), PutMode::Update(seen), "mine!").await;
    assert!(
        matches!(stale, Err(StoreError::Precondition { .. })),
        "{stale:?}"
    );
    assert_eq!(
        &two.get(&key).await.unwrap().bytes().await.unwrap()[..],
        b"other"
    );

    // Both race to swap the version they both read: exactly one wins.
    let current = one.head(&key).await.unwrap();
    let seen = UpdateVersion {
        e_tag: current.e_tag.clone(),
        version: None,
    };
    let mut racers = Vec::new();
    for i in 0..6 {
        let store = if i % 2 == 0 { one.clone() } else { two.clone() };
        racers.push(put(store, PutMode::Update(seen.clone()), "racer"));
    }
    let results = futures::future::join_all(racers).await;
    let won = results.iter().filter(|r| r.is_ok()).count();
    assert_eq!(won, 1, "{results:?}");
    for lost in results.iter().filter_map(|r| r.as_ref().err()) {
        assert!(matches!(lost, StoreError::Precondition { .. }), "{lost:?}");
    }
    // No lock or temporary file is left behind.
    let left: Vec<String> = std::fs::read_dir(dir.join("two-clients/.blocks"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["HEAD"]);
}

/// Gets here test the network: no frame comes from the agent cache.
pub fn uncached() -> GetOptions {
    GetOptions {
        no_cache: true,
        ..GetOptions::default()
    }
}

/// Straight on the server (`direct`): every listed version at `etl` reads back as one of
/// `sources`, the current one as `current`; then gc --keep 1 leaves just the current one.
pub async fn assert_sound<B: StorageBlock>(
    direct: &B,
    scratch: &Path,
    sources: &[&Path],
    current: &Path,
) {
    let at = BlockPath::parse("etl").unwrap();
    let trees: Vec<_> = sources.iter().map(|s| crate::tree::snapshot(s)).collect();
    for v in direct.list_versions(&at).await.unwrap() {
        let dest = scratch.join(format!("check-{}", &v.version[..12]));
        let opts = GetOptions {
            version: Some(v.version.clone()),
            ..uncached()
        };
        direct.get_directory(&at, &dest, &opts).await.unwrap();
        let got = crate::tree::snapshot(&dest);
        assert!(trees.contains(&got), "version {} is no source", v.version);
        if v.current {
            assert_eq!(got, crate::tree::snapshot(current));
        }
        std::fs::remove_dir_all(&dest).unwrap();
    }
    direct
        .gc(&at, &storage_core::GcOptions::keep(1))
        .await
        .unwrap();
    assert_eq!(direct.list_versions(&at).await.unwrap().len(), 1);
}

/// A block (an object store's, unless `B` says) through a [`FaultProxy`] in front of a
/// server, and one straight on it; trees to put, and a look at the store afterwards.
pub struct FaultRig<B = ObjectStoreBlock> {
    /// The proxy: the test plans its faults.
    pub proxy: FaultProxy,
    /// The label the blocks' errors start with.
    pub label: &'static str,
    direct: B,
    proxied: Box<dyn Fn(u16, i64) -> B + Send + Sync>,
    scratch: tempfile::TempDir,
    _server: Arc<dyn Any + Send + Sync>,
}

impl<B: StorageBlock> FaultRig<B> {
    /// A proxy in front of `server` at `port` on 127.0.0.1 (the rig keeps the server
    /// running); `direct` a block on the server, `proxied(port, timeout)` the same block at
    /// the proxy's port with `timeout` seconds.
    pub async fn new(
        server: Arc<dyn Any + Send + Sync>,
        port: u16,
        label: &'static str,
        direct: B,
        proxied: impl Fn(u16, i64) -> B + Send + Sync + 'static,
    ) -> FaultRig<B> {
        let proxy = FaultProxy::start(&format!("127.0.0.1:{port}"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        FaultRig {
            proxy,
            label,
            direct,
            proxied: Box::new(proxied),
            scratch: tempfile::tempdir().unwrap(),
            _server: server,
        }
    }

    /// A folder of the rig's own, for files a block needs (a known_hosts, say).
    pub fn scratch(&self) -> &Path {
        self.scratch.path()
    }

    /// The block straight on the server.
    pub fn direct(&self) -> &B {
        &self.direct
    }

    /// The block through the proxy, with `timeout` seconds.
    pub fn proxied(&self, timeout: i64) -> B {
        (self.proxied)(self.proxy.port(), timeout)
    }

    /// A small tree marked `marker` with one `mib` MiB file of noise.
    pub fn tree(&self, marker: &str, mib: usize) -> PathBuf {
        let root = self.scratch.path().join(format!("src-{marker}"));
        small_tree(&root, marker);
        write(&root, "data/blob.bin", noise(mib << 20, mib as u64 + 91));
        root
    }

    /// See [`assert_sound`], straight on the server.
    pub async fn assert_sound(&self, sources: &[&Path], current: &Path) {
        assert_sound(&self.direct, self.scratch.path(), sources, current).await;
    }
}

/// A put whose connections are all reset once `after` bytes went up fails cleanly, HEAD
/// stays on the previous version, and gc leaves a sound store.
pub async fn a_put_cut_by_resets_fails_cleanly_and_keeps_head<B: StorageBlock>(
    rig: &FaultRig<B>,
    after: u64,
) {
    a_put_under(rig, Cut::Reset, after, 30).await;
    assert!(rig.proxy.injected().reset >= 1, "no reset happened");
}

/// A get whose connections are all reset once `after` bytes came down fails cleanly and
/// writes nothing.
pub async fn a_get_cut_by_resets_fails_cleanly_with_nothing_written<B: StorageBlock>(
    rig: &FaultRig<B>,
    after: u64,
) {
    let v1 = rig.tree("v1", 12);
    let at = BlockPath::parse("etl").unwrap();
    rig.direct()
        .put_directory(&v1, &at, &PutOptions::default())
        .await
        .unwrap();
    rig.proxy
        .partition_after(Cut::Reset, after, Direction::Downstream);
    let parent = rig.scratch.path().join("out");
    std::fs::create_dir_all(&parent).unwrap();
    let (got, took) = within_bound(
        "get",
        rig.proxied(30)
            .get_directory(&at, &parent.join("dest"), &uncached()),
    )
    .await;
    assert_clean_failure(rig.label, "get under resets", &got.unwrap_err());
    eprintln!("get failed under resets in {took:?}");
    assert_eq!(std::fs::read_dir(&parent).unwrap().count(), 0);
    rig.assert_sound(&[&v1], &v1).await;
}

/// With a 3 s timeout, a put whose connections stall once `after` bytes went up fails
/// cleanly in bounded time and the previous version stays current.
pub async fn a_stalled_connection_fails_cleanly_in_bounded_time<B: StorageBlock>(
    rig: &FaultRig<B>,
    after: u64,
) {
    a_put_under(rig, Cut::Stall, after, 3).await;
    assert!(rig.proxy.injected().stalled >= 1, "no stall happened");
}

/// A put of a second version, its connections cut (`how`) once `after` bytes went up, with
/// `timeout` seconds: it fails cleanly, in bounded time, and the first version stays current.
async fn a_put_under<B: StorageBlock>(rig: &FaultRig<B>, how: Cut, after: u64, timeout: i64) {
    let (v1, v2) = (rig.tree("v1", 1), rig.tree("v2", 12));
    let at = BlockPath::parse("etl").unwrap();
    rig.direct()
        .put_directory(&v1, &at, &PutOptions::default())
        .await
        .unwrap();
    rig.proxy.partition_after(how, after, Direction::Upstream);
    let (put, took) = within_bound(
        "put",
        rig.proxied(timeout)
            .put_directory(&v2, &at, &PutOptions::default()),
    )
    .await;
    let what = format!("put under {how:?}");
    assert_clean_failure(rig.label, &what, &put.unwrap_err());
    eprintln!("{what} failed in {took:?}");
    rig.proxy.pass_through();
    rig.assert_sound(&[&v1], &v1).await;
}

/// A package put of `src` at `package-seen`, as another client reads it: `fetch(object)`
/// gives the bytes of one stored object by its key below the block path (each pack once);
/// its frames, in order, unpack as a tar that holds `flow.py`. Then no lock or temporary
/// file is left in `blocks_on_disk` (the block path's `.blocks` folder on the server's
/// disk), when given.
pub async fn another_client_reads_a_package(
    block: &ObjectStoreBlock,
    src: &Path,
    fetch: impl FnMut(&str) -> Vec<u8>,
    blocks_on_disk: Option<&Path>,
) {
    let at = BlockPath::parse("package-seen").unwrap();
    let report = block
        .put_directory(src, &at, &PutOptions::default())
        .await
        .unwrap();
    let version = report.version.unwrap();
    let manifest = block.manifest(&at, Some(&version)).await.unwrap();
    let package = crate::delta::assemble_package(&manifest, fetch);
    let tar = zstd::decode_all(&package[..]).unwrap();
    let mut names: Vec<String> = tar::Archive::new(&tar[..])
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    names.retain(|n| n.ends_with("flow.py"));
    assert_eq!(names, ["flow.py"]);
    if let Some(dir) = blocks_on_disk {
        let left: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".~"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }
}

/// Expands to a remote store's three fault tests, each on a fresh rig from `$rig` (an async
/// fn taking a folder name and returning a [`FaultRig`]): a put whose connections are reset
/// once `$put` bytes went up, a get whose connections are reset once `$get` bytes came down,
/// and a put whose connections stall once `$stall` bytes went up. Without the three: reset
/// 2 MiB into an upload or a download, stalled 1 MiB up.
#[macro_export]
macro_rules! remote_fault_tests {
    ($rig:path $(,)?) => {
        $crate::remote_fault_tests!(
            $rig,
            put_reset_after: 2 << 20,
            get_reset_after: 2 << 20,
            stall_after: 1 << 20,
        );
    };
    ($rig:path, put_reset_after: $put:expr, get_reset_after: $get:expr, stall_after: $stall:expr $(,)?) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_put_cut_by_resets_fails_cleanly_and_keeps_head() {
            let rig = $rig("faults-put").await;
            $crate::remote_checks::a_put_cut_by_resets_fails_cleanly_and_keeps_head(&rig, $put)
                .await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_get_cut_by_resets_fails_cleanly_with_nothing_written() {
            let rig = $rig("faults-get").await;
            $crate::remote_checks::a_get_cut_by_resets_fails_cleanly_with_nothing_written(
                &rig, $get,
            )
            .await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_stalled_connection_fails_cleanly_in_bounded_time() {
            let rig = $rig("faults-stall").await;
            $crate::remote_checks::a_stalled_connection_fails_cleanly_in_bounded_time(&rig, $stall)
                .await;
        }
    };
}

/// A tree of `flow.py` and one `mib` MiB file of noise (which does not compress, so the
/// package is as big as the file), put to `block` and got back whole (no frame from the
/// agent cache); the times go to stderr, `over` saying over what.
pub async fn a_large_package_round_trips<B: StorageBlock>(block: &B, mib: usize, over: &str) {
    use std::io::Write as _;
    let scratch = tempfile::tempdir().unwrap();
    let src = scratch.path().join("src");
    let file = src.join("data/big.bin");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    write(&src, "flow.py", "print('big')\n");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
    for i in 0..mib / 4 {
        out.write_all(&noise(4 << 20, 2000 + i as u64)).unwrap();
    }
    out.flush().unwrap();
    drop(out);

    let at = BlockPath::parse("big").unwrap();
    let started = std::time::Instant::now();
    let report = block
        .put_directory(&src, &at, &PutOptions::default())
        .await
        .unwrap_or_else(|e| panic!("put {mib} MiB: {e}"));
    let put_secs = started.elapsed().as_secs_f64();
    assert_eq!(report.bytes, (mib << 20) as u64 + 13);
    let dest = scratch.path().join("dest");
    let started = std::time::Instant::now();
    block
        .get_directory(&at, &dest, &uncached())
        .await
        .unwrap_or_else(|e| panic!("get {mib} MiB: {e}"));
    let get_secs = started.elapsed().as_secs_f64();
    let rate = |secs: f64| mib as f64 / secs;
    eprintln!(
        "{mib} MiB package over {over}: put {put_secs:.2} s ({:.0} MiB/s), get {get_secs:.2} s \
         ({:.0} MiB/s)",
        rate(put_secs),
        rate(get_secs)
    );
    assert_eq!(sha256_of(&dest.join("data/big.bin")), sha256_of(&file));
    assert_eq!(
        std::fs::read_to_string(dest.join("flow.py")).unwrap(),
        "print('big')\n"
    );
}

fn sha256_of(path: &Path) -> String {
    use sha2::Digest as _;
    let mut f = std::fs::File::open(path).unwrap();
    let mut h = sha2::Sha256::new();
    std::io::copy(&mut f, &mut h).unwrap();
    hex::encode(h.finalize())
}
