//! Fault injection: S3 (moto), Azure (Azurite) and GCS (fake-gcs-server), each with the
//! block's endpoint pointed at a [`FaultProxy`] in front of the real emulator. Under 503s,
//! connections reset mid-transfer and stalled connections, put and get either succeed
//! through retries or fail cleanly (exit 1, one line) in bounded time; the previous version
//! stays current and whole, no partial version is ever listed, and gc leaves a sound store.
//! Each test checks that its fault really happened. A case runs for all its backends at
//! once (`side_by_side`): most of its time is waiting, not work.

use std::any::Any;
use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use conformance::checks::{assert_clean_failure, within_bound};
use conformance::harness::{Azurite, Cut, Direction, FakeGcs, FaultProxy, Moto, shared};
use conformance::run_once::{RunOnce, panic_text};
use conformance::tree::{Node, noise, small_tree, snapshot, write};
use storage_azure::AzureConfig;
use storage_core::{BlockPath, GetOptions, PutOptions, PutReport, Secret, StorageBlock};
use storage_gcs::GcsConfig;
use storage_s3::S3Config;
use tempfile::TempDir;

/// Per-request timeout of a block that must get past one stalled connection: every other
/// request must fit in it, on a loaded machine too.
const SHORT_TIMEOUT: i64 = 3;
/// Per-request timeout of the blocks that must give up on stalled connections: each stalled
/// request waits it out once per attempt, so it sets how long those operations take. The
/// least a block accepts; a request it cuts short for want of time fails the same way.
const STALL_TIMEOUT: i64 = 1;
/// Per-request timeout otherwise: generous, but it bounds a hang all the same.
const TIMEOUT: i64 = 30;
const MIB: usize = 1024 * 1024;
/// Where a connection is cut: inside one frame's transfer (frames are about 1 MiB, and
/// several go up or down at once, each connection carrying only a few of them).
const CUT_AFTER: u64 = 512 * 1024;

#[derive(Debug, Clone, Copy)]
enum Backend {
    S3,
    Azure,
    Gcs,
}

impl Backend {
    /// The `type/name` the blocks are opened with, which every error must name.
    fn label(self) -> &'static str {
        match self {
            Backend::S3 => "s3/faults",
            Backend::Azure => "azure/faults",
            Backend::Gcs => "gcs/faults",
        }
    }
}

/// Opens a block of the rig's backend on an endpoint, with a request timeout (seconds).
type Opener = Box<dyn Fn(&str, i64) -> Arc<dyn StorageBlock> + Send + Sync>;
/// Keeps an emulator running.
type Server = Arc<dyn Any + Send + Sync>;

/// One backend's emulator, a proxy in front of it, and a way to open blocks on either.
struct Rig {
    backend: Backend,
    proxy: FaultProxy,
    /// Opens a block whose endpoint is the given one, with the given request timeout.
    open: Opener,
    /// The emulator's own endpoint, for setup and checks that no fault may touch.
    direct_endpoint: String,
    /// What the block's endpoint is below the server's address (Azure: the account).
    endpoint_path: String,
    at: BlockPath,
    scratch: TempDir,
    /// Makes every destination folder new.
    folders: AtomicU32,
    _server: Server,
}

impl Rig {
    async fn new(backend: Backend, case: &str) -> Rig {
        let name = conformance::bucket_name(&format!("{backend:?}-{case}").to_lowercase());
        let (server, direct_endpoint, endpoint_path, open): (Server, String, String, Opener) =
            match backend {
                Backend::S3 => {
                    let moto = shared::<Moto>(Moto::start);
                    moto.create_bucket(&name).expect("create bucket");
                    let endpoint = moto.endpoint.clone();
                    let open = move |endpoint: &str, timeout: i64| {
                        let config = S3Config {
                            bucket: name.clone(),
                            prefix: Some("team/flows".into()),
                            region: Some("us-east-1".into()),
                            endpoint: Some(endpoint.into()),
                            access_key_id: Some("AKIDFAULTS".into()),
                            secret_access_key: Some(Secret::new("faults-secret")),
                            session_token: None,
                            allow_http: Some(true),
                            virtual_hosted_style: None,
                            timeout: Some(timeout),
                        };
                        let block =
                            storage_s3::open(&config, Backend::S3.label()).expect("open s3 block");
                        Arc::new(block) as Arc<dyn StorageBlock>
                    };
                    (moto, endpoint, String::new(), Box::new(open))
                }
                Backend::Azure => {
                    let azurite = shared::<Azurite>(Azurite::start);
                    azurite.create_container(&name).expect("create container");
                    let (account, key) = (azurite.account, azurite.key);
                    let (server, path) = azurite
                        .endpoint
                        .rsplit_once('/')
                        .expect("azurite endpoint ends with the account");
                    let open = move |endpoint: &str, timeout: i64| {
                        let config = AzureConfig {
                            container: name.clone(),
                            prefix: Some("team/flows".into()),
                            account: Some(account.into()),
                            access_key: Some(Secret::new(key)),
                            connection_string: None,
                            sas_token: None,
                            endpoint: Some(endpoint.into()),
                            use_emulator: None,
                            timeout: Some(timeout),
                        };
                        let block = storage_azure::open(&config, Backend::Azure.label())
                            .expect("open azure block");
                        Arc::new(block) as Arc<dyn StorageBlock>
                    };
                    let (server, path) = (server.to_string(), format!("/{path}"));
                    (azurite, server, path, Box::new(open))
                }
                Backend::Gcs => {
                    let gcs = shared::<FakeGcs>(FakeGcs::start);
                    gcs.create_bucket(&name).expect("create bucket");
                    let endpoint = gcs.endpoint.clone();
                    let open = move |endpoint: &str, timeout: i64| {
                        let config = GcsConfig {
                            bucket: name.clone(),
                            prefix: Some("team/flows".into()),
                            endpoint: Some(endpoint.into()),
                            service_account_key: None,
                            service_account_path: None,
                            anonymous: Some(true),
                            timeout: Some(timeout),
                        };
                        let block = storage_gcs::open(&config, Backend::Gcs.label())
                            .expect("open gcs block");
                        Arc::new(block) as Arc<dyn StorageBlock>
                    };
                    (gcs, endpoint, String::new(), Box::new(open))
                }
            };
        // A proxy that does not start fails the test, like an emulator that does not.
        let proxy = FaultProxy::start(&direct_endpoint)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        Rig {
            backend,
            proxy,
            open,
            direct_endpoint,
            endpoint_path,
            at: BlockPath::parse("etl/daily").unwrap(),
            scratch: tempfile::tempdir().expect("scratch dir"),
            folders: AtomicU32::new(0),
            _server: server,
        }
    }

    /// A block straight on the emulator.
    fn direct(&self) -> Arc<dyn StorageBlock> {
        (self.open)(
            &format!("{}{}", self.direct_endpoint, self.endpoint_path),
            TIMEOUT,
        )
    }

    /// A fresh block (a fresh connection pool) through the proxy.
    fn proxied(&self, timeout: i64) -> Arc<dyn StorageBlock> {
        (self.open)(
            &format!("{}{}", self.proxy.url(), self.endpoint_path),
            timeout,
        )
    }

    /// A source tree: a small project plus `mib` MiB of data that does not compress.
    fn tree(&self, marker: &str, mib: usize) -> PathBuf {
        source_tree(self.scratch.path(), marker, mib)
    }

    /// A fresh destination in an empty folder of its own: (folder, destination).
    fn destination(&self, hint: &str) -> (PathBuf, PathBuf) {
        let n = self.folders.fetch_add(1, Ordering::Relaxed);
        let parent = self.scratch.path().join(format!("out-{hint}-{n}"));
        std::fs::create_dir_all(&parent).unwrap();
        let dest = parent.join("dest");
        (parent, dest)
    }

    async fn put_direct(&self, src: &Path) -> PutReport {
        self.direct()
            .put_directory(src, &self.at, &PutOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{:?}: put without faults: {e}", self.backend))
    }

    /// Checks, straight on the emulator, that every listed version reads back as exactly one
    /// of `sources`, and that the current one (and a plain get) is exactly `current`.
    async fn assert_sound(&self, sources: &[&Path], current: &Path) {
        let trees: Vec<BTreeMap<String, Node>> = sources.iter().map(|s| snapshot(s)).collect();
        let direct = self.direct();
        let versions = direct
            .list_versions(&self.at)
            .await
            .unwrap_or_else(|e| panic!("{:?}: versions: {e}", self.backend));
        assert_eq!(
            versions.iter().filter(|v| v.current).count(),
            1,
            "{:?}: one current version: {versions:?}",
            self.backend
        );
        for v in &versions {
            let (_, dest) = self.destination(&format!("check-{}", &v.version[..12]));
            let opts = GetOptions {
                version: Some(v.version.clone()),
                ..uncached()
            };
            direct
                .get_directory(&self.at, &dest, &opts)
                .await
                .unwrap_or_else(|e| {
                    panic!("{:?}: listed version does not read: {e}", self.backend)
                });
            let got = snapshot(&dest);
            assert!(
                trees.contains(&got),
                "{:?}: version {} is not any source tree",
                self.backend,
                v.version
            );
            if v.current {
                assert_eq!(
                    got,
                    snapshot(current),
                    "{:?}: current version",
                    self.backend
                );
            }
            std::fs::remove_dir_all(&dest).unwrap();
        }
        let (_, dest) = self.destination("check-current");
        direct
            .get_directory(&self.at, &dest, &uncached())
            .await
            .unwrap_or_else(|e| panic!("{:?}: get of current: {e}", self.backend));
        assert_eq!(snapshot(&dest), snapshot(current), "{:?}", self.backend);
    }

    /// gc keeping only the current version must work and leave it whole.
    async fn assert_gc_keeps_current(&self, sources: &[&Path], current: &Path) {
        self.direct()
            .gc(&self.at, &storage_core::GcOptions::keep(1))
            .await
            .unwrap_or_else(|e| panic!("{:?}: gc after faults: {e}", self.backend));
        self.assert_sound(sources, current).await;
        let versions = self.direct().list_versions(&self.at).await.unwrap();
        assert_eq!(
            versions.len(),
            1,
            "{:?}: gc --keep 1: {versions:?}",
            self.backend
        );
    }
}

/// A source tree in `dir`: a small project plus `mib` MiB of data that does not compress.
fn source_tree(dir: &Path, marker: &str, mib: usize) -> PathBuf {
    let root = dir.join(format!("src-{marker}"));
    small_tree(&root, marker);
    write(&root, "data/blob.bin", noise(mib * MIB, mib as u64 + 17));
    root
}

/// Gets here test the network: no frame comes from the agent cache.
fn uncached() -> GetOptions {
    GetOptions {
        no_cache: true,
        ..GetOptions::default()
    }
}

/// The next 3 requests of a put, then of a get, are answered 503: both succeed through
/// retries and the download is exactly the source.
async fn answers_503_are_retried(backend: Backend) {
    let rig = Rig::new(backend, "503").await;
    let src = rig.tree("v1", 6);

    rig.proxy.answer_503(3);
    let (put, took) = within_bound(
        "put",
        rig.proxied(TIMEOUT)
            .put_directory(&src, &rig.at, &PutOptions::default()),
    )
    .await;
    let put = put.unwrap_or_else(|e| panic!("{backend:?}: put through 3 × 503: {e}"));
    assert!(!put.skipped);
    assert_eq!(
        rig.proxy.injected().unavailable,
        3,
        "{backend:?}: 503s on put"
    );
    eprintln!("{backend:?}: put through 3 × 503 in {took:?}");

    rig.proxy.answer_503(3);
    let (_, dest) = rig.destination("503");
    let (got, took) = within_bound(
        "get",
        rig.proxied(TIMEOUT)
            .get_directory(&rig.at, &dest, &uncached()),
    )
    .await;
    let got = got.unwrap_or_else(|e| panic!("{backend:?}: get through 3 × 503: {e}"));
    assert_eq!(got.version, put.version);
    assert_eq!(snapshot(&dest), snapshot(&src), "{backend:?}: download");
    assert_eq!(
        rig.proxy.injected().unavailable,
        6,
        "{backend:?}: 503s on get"
    );
    eprintln!("{backend:?}: get through 3 × 503 in {took:?}");
    rig.assert_sound(&[&src], &src).await;
}

/// One connection is reset after 512 KiB of a 12 MiB put: the put succeeds through retries or
/// fails cleanly, and either way the store is sound (the new version whole and current, or
/// the old one still current).
async fn a_reset_during_put_is_retried_or_fails_cleanly(backend: Backend) {
    let rig = Rig::new(backend, "reset-put").await;
    let v1 = rig.tree("v1", 1);
    let v2 = rig.tree("v2", 12);
    rig.put_direct(&v1).await;

    rig.proxy.cut(Cut::Reset, 1, CUT_AFTER, Direction::Upstream);
    let (put, took) = within_bound(
        "put",
        rig.proxied(TIMEOUT)
            .put_directory(&v2, &rig.at, &PutOptions::default()),
    )
    .await;
    assert_eq!(
        rig.proxy.injected().reset,
        1,
        "{backend:?}: no reset happened"
    );
    let current = match put {
        Ok(_) => &v2,
        Err(e) => {
            assert_clean_failure(backend.label(), "put under one reset", &e);
            &v1
        }
    };
    eprintln!(
        "{backend:?}: put under one reset: {} in {took:?}",
        if current == &v2 {
            "succeeded"
        } else {
            "failed"
        }
    );
    rig.assert_sound(&[&v1, &v2], current).await;
    rig.assert_gc_keeps_current(&[&v1, &v2], current).await;
}

/// Every connection is reset after 512 KiB up: the put cannot succeed, fails cleanly, HEAD
/// stays on the previous version, nothing partial is listed, and gc leaves a sound store.
async fn a_put_that_keeps_being_reset_fails_cleanly_and_keeps_head(backend: Backend) {
    let rig = Rig::new(backend, "reset-put-always").await;
    let v1 = rig.tree("v1", 1);
    let v2 = rig.tree("v2", 12);
    rig.put_direct(&v1).await;

    rig.proxy
        .cut(Cut::Reset, u32::MAX, CUT_AFTER, Direction::Upstream);
    let (put, took) = within_bound(
        "put",
        rig.proxied(TIMEOUT)
            .put_directory(&v2, &rig.at, &PutOptions::default()),
    )
    .await;
    let resets = rig.proxy.injected().reset;
    assert!(resets > 1, "{backend:?}: {resets} resets: was it retried?");
    let err = put.expect_err("a put whose every upload is reset succeeded");
    assert_clean_failure(backend.label(), "put under resets", &err);
    eprintln!("{backend:?}: put failed after {resets} resets in {took:?}");
    rig.proxy.pass_through();
    rig.assert_sound(&[&v1], &v1).await;
    rig.assert_gc_keeps_current(&[&v1], &v1).await;
}

/// One connection is reset after 512 KiB of a 12 MiB download: the get succeeds through
/// retries with exactly the source, or fails cleanly with nothing written.
async fn a_reset_during_get_is_retried_or_fails_cleanly(backend: Backend) {
    let rig = Rig::new(backend, "reset-get").await;
    let v1 = rig.tree("v1", 12);
    rig.put_direct(&v1).await;

    rig.proxy
        .cut(Cut::Reset, 1, CUT_AFTER, Direction::Downstream);
    let (parent, dest) = rig.destination("reset-get");
    let (got, took) = within_bound(
        "get",
        rig.proxied(TIMEOUT)
            .get_directory(&rig.at, &dest, &uncached()),
    )
    .await;
    assert_eq!(
        rig.proxy.injected().reset,
        1,
        "{backend:?}: no reset happened"
    );
    let outcome = match got {
        Ok(_) => {
            assert_eq!(snapshot(&dest), snapshot(&v1), "{backend:?}: download");
            "succeeded"
        }
        Err(e) => {
            assert_clean_failure(backend.label(), "get under one reset", &e);
            assert_nothing_written(&parent);
            "failed"
        }
    };
    eprintln!("{backend:?}: get under one reset {outcome} in {took:?}");

    // Every connection reset from 512 KiB into the download on: the get cannot succeed, even
    // by resuming, and must leave nothing behind.
    rig.proxy
        .partition_after(Cut::Reset, CUT_AFTER, Direction::Downstream);
    let (parent, dest) = rig.destination("reset-get-always");
    let (got, took) = within_bound(
        "get",
        rig.proxied(TIMEOUT)
            .get_directory(&rig.at, &dest, &uncached()),
    )
    .await;
    let err = got.expect_err("a get whose every download is reset succeeded");
    assert_clean_failure(backend.label(), "get under resets", &err);
    assert_nothing_written(&parent);
    eprintln!("{backend:?}: get failed under resets in {took:?}");
    rig.assert_sound(&[&v1], &v1).await;
}

/// With a 3 s request timeout, a put whose first connection stalls succeeds through a retry;
/// with a 1 s one, a put whose every connection stalls after 512 KiB up, and a get cut off by
/// a stall 1 MiB into its download, fail cleanly in bounded time, and the previous version
/// stays current. Each of the three waits out its stalls on a rig (bucket and proxy) of its
/// own, side by side with the others.
async fn stalled_connections_fail_cleanly_in_bounded_time(backend: Backend) {
    // The sources outlive every rig.
    let sources = tempfile::tempdir().expect("sources dir");
    let v1 = source_tree(sources.path(), "v1", 1);
    let v2 = source_tree(sources.path(), "v2", 12);
    let past_one = Rig::new(backend, "stall").await;
    let put_stalled = Rig::new(backend, "stall-put").await;
    let get_stalled = Rig::new(backend, "stall-get").await;
    let phases = [
        tokio::spawn(a_put_gets_past_one_stalled_connection(past_one, v1.clone())),
        tokio::spawn(a_put_whose_uploads_all_stall_fails_cleanly(
            put_stalled,
            v1.clone(),
            v2.clone(),
        )),
        tokio::spawn(a_get_cut_off_by_a_stall_fails_cleanly(get_stalled, v1, v2)),
    ];
    for phase in phases {
        if let Err(e) = phase.await {
            std::panic::resume_unwind(e.into_panic());
        }
    }
}

async fn a_put_gets_past_one_stalled_connection(rig: Rig, v1: PathBuf) {
    let backend = rig.backend;
    rig.proxy.cut(Cut::Stall, 1, 0, Direction::Upstream);
    let (put, took) = within_bound(
        "put",
        rig.proxied(SHORT_TIMEOUT)
            .put_directory(&v1, &rig.at, &PutOptions::default()),
    )
    .await;
    put.unwrap_or_else(|e| panic!("{backend:?}: put after one stalled connection: {e}"));
    assert_eq!(
        rig.proxy.injected().stalled,
        1,
        "{backend:?}: nothing stalled"
    );
    eprintln!("{backend:?}: put past one stalled connection in {took:?}");
    rig.assert_sound(&[&v1], &v1).await;
}

async fn a_put_whose_uploads_all_stall_fails_cleanly(rig: Rig, v1: PathBuf, v2: PathBuf) {
    let backend = rig.backend;
    rig.put_direct(&v1).await;
    rig.proxy
        .cut(Cut::Stall, u32::MAX, CUT_AFTER, Direction::Upstream);
    let (put, took) = within_bound(
        "put",
        rig.proxied(STALL_TIMEOUT)
            .put_directory(&v2, &rig.at, &PutOptions::default()),
    )
    .await;
    assert!(
        rig.proxy.injected().stalled > 1,
        "{backend:?}: no upload stalled"
    );
    let err = put.expect_err("a put whose uploads all stall succeeded");
    assert_clean_failure(backend.label(), "put under stalls", &err);
    eprintln!("{backend:?}: stalled put failed in {took:?}");
    rig.proxy.pass_through();
    rig.assert_sound(&[&v1], &v1).await;
    rig.assert_gc_keeps_current(&[&v1], &v1).await;
}

/// A 12 MiB version to read, then the network goes silent 1 MiB into its download.
async fn a_get_cut_off_by_a_stall_fails_cleanly(rig: Rig, v1: PathBuf, v2: PathBuf) {
    let backend = rig.backend;
    rig.put_direct(&v1).await;
    rig.put_direct(&v2).await;
    rig.proxy
        .partition_after(Cut::Stall, MIB as u64, Direction::Downstream);
    let (parent, dest) = rig.destination("stall-get");
    let (got, took) = within_bound(
        "get",
        rig.proxied(STALL_TIMEOUT)
            .get_directory(&rig.at, &dest, &uncached()),
    )
    .await;
    assert!(
        rig.proxy.injected().stalled > 0,
        "{backend:?}: no download stalled"
    );
    let err = got.expect_err("a get whose downloads all stall succeeded");
    assert_clean_failure(backend.label(), "get under stalls", &err);
    assert_nothing_written(&parent);
    eprintln!("{backend:?}: stalled get failed in {took:?}");
    rig.proxy.pass_through();
    rig.assert_sound(&[&v1, &v2], &v2).await;
}

/// A failed get leaves its destination's folder as it was: empty, no staging left behind.
/// The response to the put's HEAD swap is lost after the server made it: the client sees a
/// reset (and may retry into the precondition its own write changed). The put must know the
/// swap as its own: it succeeds, and the new version is current and whole.
async fn a_lost_head_swap_response_is_recognised_as_our_own(backend: Backend) {
    let rig = Rig::new(backend, "lost-head").await;
    let (v1, v2) = (rig.tree("v1", 1), rig.tree("v2", 1));
    rig.put_direct(&v1).await;
    rig.proxy.lose_response_to(1, "PUT", "/.blocks/HEAD");
    let (put, took) = within_bound(
        "put",
        rig.proxied(TIMEOUT).put_directory(
            &v2,
            &rig.at,
            &PutOptions {
                // Conditional, so a retry of the swap meets the precondition it changed.
                if_version: Some(storage_core::VersionPrecondition::Current(
                    rig.direct().list_versions(&rig.at).await.unwrap()[0]
                        .version
                        .clone(),
                )),
                ..PutOptions::default()
            },
        ),
    )
    .await;
    assert_eq!(
        rig.proxy.injected().lost,
        1,
        "{backend:?}: no response was lost"
    );
    let put = put.unwrap_or_else(|e| panic!("{backend:?}: put with its HEAD answer lost: {e}"));
    eprintln!("{backend:?}: put with a lost HEAD answer in {took:?}");
    let versions = rig.direct().list_versions(&rig.at).await.unwrap();
    let current = versions
        .iter()
        .find(|v| v.current)
        .expect("a current version");
    assert_eq!(Some(&current.version), put.version.as_ref());
    rig.assert_sound(&[&v1, &v2], &v2).await;
}

/// Requests on the wire a cold get of one version may make, however many frames it has:
/// HEAD, the manifest and a few ranged reads of packs.
const COLD_GET_REQUESTS: u64 = 8;

/// A cold get of a version of many frames makes a few requests (not one per frame), and so
/// does one after 20 successive one-file edits, each put sending a small share of the bytes.
async fn cold_gets_make_few_requests_even_after_many_edits(backend: Backend) {
    let rig = Rig::new(backend, "requests").await;
    let src = rig.scratch.path().join("src-requests");
    conformance::delta::project(&src);
    let first = rig.put_direct(&src).await;
    assert!(first.frames_uploaded >= 10, "{backend:?}: {first:?}");

    let cold_get = |hint: &'static str| {
        let rig = &rig;
        async move {
            let before = rig.proxy.requests();
            let (_, dest) = rig.destination(hint);
            rig.proxied(TIMEOUT)
                .get_directory(&rig.at, &dest, &uncached())
                .await
                .unwrap_or_else(|e| panic!("{backend:?}: {hint}: {e}"));
            (rig.proxy.requests() - before, dest)
        }
    };
    let (requests, dest) = cold_get("cold").await;
    assert_eq!(snapshot(&dest), snapshot(&src));
    eprintln!(
        "{backend:?}: cold get of {} frames: {requests} requests",
        first.frames_uploaded
    );
    assert!(
        requests <= COLD_GET_REQUESTS,
        "{backend:?}: a cold get made {requests} requests"
    );

    for i in 0..20 {
        let n = 100 + i * 7;
        let file = src.join(format!("flows/pkg{}/mod_{n:03}.py", n % 9));
        let mut text = std::fs::read(&file).unwrap_or_default();
        text.extend_from_slice(format!("\n# edit {i}\n").as_bytes());
        write(
            &src,
            file.strip_prefix(&src).unwrap().to_str().unwrap(),
            text,
        );
        let edit = rig.put_direct(&src).await;
        assert!(
            edit.uploaded_bytes * 10 < first.uploaded_bytes,
            "{backend:?}: edit {i} sent {} of {} bytes",
            edit.uploaded_bytes,
            first.uploaded_bytes
        );
    }
    let (requests, dest) = cold_get("after-edits").await;
    assert_eq!(snapshot(&dest), snapshot(&src));
    eprintln!("{backend:?}: cold get after 20 edits: {requests} requests");
    assert!(
        requests <= COLD_GET_REQUESTS,
        "{backend:?}: after 20 edits a cold get made {requests} requests"
    );
    let m = rig
        .direct()
        .manifest(&rig.at, None)
        .await
        .expect("the current manifest");
    let packs: std::collections::BTreeSet<_> = m.frames.iter().map(|f| f.pack.clone()).collect();
    assert!(
        packs.len() <= 1 + storage_core::package::packs::EXTRA_PACKS + 1,
        "{backend:?}: the version spans {} packs",
        packs.len()
    );
}

/// The ranged reads of a get run side by side; one cut half-way is read again, every frame
/// verified, and the tree arrives whole.
async fn a_ranged_read_cut_midway_is_read_again(backend: Backend) {
    let rig = Rig::new(backend, "ranges").await;
    // Random data: about 40 MiB of packs, so three ranged reads run at once.
    let v1 = rig.tree("v1", 40);
    rig.put_direct(&v1).await;
    rig.proxy
        .cut(Cut::Reset, 1, 4 * MIB as u64, Direction::Downstream);
    let (_, dest) = rig.destination("ranges");
    let (got, took) = within_bound(
        "get",
        rig.proxied(TIMEOUT)
            .get_directory(&rig.at, &dest, &uncached()),
    )
    .await;
    got.unwrap_or_else(|e| panic!("{backend:?}: a get with one cut read failed: {e}"));
    assert_eq!(
        rig.proxy.injected().reset,
        1,
        "{backend:?}: no cut happened"
    );
    assert_eq!(snapshot(&dest), snapshot(&v1));
    eprintln!("{backend:?}: get with one cut ranged read took {took:?}");
}

/// A large file is got by many ranged reads at once, each frame verified and written where
/// it goes as it lands: with the answer to the first read of a pack held back 2 s (so the
/// later ranges land first) and one read cut 10 MiB in (and resumed where it was cut), the
/// tree arrives whole. With every read cut once 20 MiB have come down, the get fails cleanly
/// and leaves nothing, not even the part of the file already written.
async fn a_large_file_lands_from_ranges_out_of_order_and_cut(backend: Backend) {
    let rig = Rig::new(backend, "large").await;
    let v1 = rig.tree("v1", 64);
    rig.put_direct(&v1).await;
    let (ranged, down) = (rig.proxy.ranged_requests(), rig.proxy.carried().1);
    rig.proxy
        .delay_ranged(1, "/.blocks/packs/", std::time::Duration::from_secs(2));
    rig.proxy
        .cut(Cut::Reset, 1, 5 * MIB as u64, Direction::Downstream);
    let (_, dest) = rig.destination("large");
    let (got, took) = within_bound(
        "get",
        rig.proxied(TIMEOUT)
            .get_directory(&rig.at, &dest, &uncached()),
    )
    .await;
    got.unwrap_or_else(|e| panic!("{backend:?}: a get of a large file failed: {e}"));
    let injected = rig.proxy.injected();
    assert_eq!(injected.delayed, 1, "{backend:?}: no answer was held back");
    assert_eq!(injected.reset, 1, "{backend:?}: no read was cut");
    assert!(
        took >= std::time::Duration::from_secs(2),
        "{backend:?}: the held-back read did not hold the get"
    );
    let reads = rig.proxy.ranged_requests() - ranged;
    // 64 MiB in ranges of at most 8 MiB (a version of more than 64 MiB of files has packs of
    // 8 MiB), and the cut one resumed.
    assert!(reads >= 9, "{backend:?}: {reads} ranged reads");
    assert_eq!(snapshot(&dest), snapshot(&v1), "{backend:?}: download");
    // The cut read resumed at its first frame not landed (frames are at most 4 MiB), rather
    // than reading its whole range again.
    let moved = rig.proxy.carried().1 - down;
    assert!(
        moved < (64 + 5) * MIB as u64,
        "{backend:?}: {moved} bytes came down for 64 MiB"
    );
    eprintln!(
        "{backend:?}: large get with {reads} ranged reads, one held, one cut, {moved} bytes down, in {took:?}"
    );

    rig.proxy.pass_through();
    rig.proxy
        .partition_after(Cut::Reset, 20 * MIB as u64, Direction::Downstream);
    let (parent, dest) = rig.destination("large-cut");
    let (got, _) = within_bound(
        "get",
        rig.proxied(TIMEOUT)
            .get_directory(&rig.at, &dest, &uncached()),
    )
    .await;
    let err = got.expect_err("a get whose every read is cut succeeded");
    assert_clean_failure(backend.label(), "large get under resets", &err);
    assert_nothing_written(&parent);
}

/// 64 agents pull the current version at once while a put makes another current: none
/// fails, and each gets exactly one of the two.
async fn many_agents_and_a_racing_put_get_whole_versions(backend: Backend) {
    let rig = Rig::new(backend, "agents").await;
    let v1 = rig.tree("v1", 4);
    let v2 = rig.tree("v2", 4);
    rig.put_direct(&v1).await;
    let trees = [snapshot(&v1), snapshot(&v2)];
    let block = rig.direct();
    let mut gets = Vec::new();
    for i in 0..64 {
        let (block, at) = (block.clone(), rig.at.clone());
        let (_, dest) = rig.destination(&format!("agent-{i}"));
        gets.push(tokio::spawn(async move {
            let r = block.get_directory(&at, &dest, &uncached()).await;
            (r, dest)
        }));
    }
    let put = rig.put_direct(&v2).await;
    assert!(!put.skipped);
    let mut got = [0, 0];
    for g in gets {
        let (r, dest) = g.await.unwrap();
        r.unwrap_or_else(|e| panic!("{backend:?}: an agent's get failed: {e}"));
        let tree = snapshot(&dest);
        let which = trees
            .iter()
            .position(|t| *t == tree)
            .unwrap_or_else(|| panic!("{backend:?}: an agent got neither version"));
        got[which] += 1;
    }
    eprintln!(
        "{backend:?}: 64 agents got v1 {} times, v2 {} times",
        got[0], got[1]
    );
    rig.assert_sound(&[&v1, &v2], &v2).await;
}

/// A get through the proxy: the requests it made, the bytes it moved to us, and its report.
async fn counted_get(
    rig: &Rig,
    dest: &Path,
    opts: &GetOptions,
) -> storage_core::Result<(u64, u64, storage_core::GetReport)> {
    let (requests, down) = (rig.proxy.requests(), rig.proxy.carried().1);
    let report = rig
        .proxied(TIMEOUT)
        .get_directory(&rig.at, dest, opts)
        .await?;
    Ok((
        rig.proxy.requests() - requests,
        rig.proxy.carried().1 - down,
        report,
    ))
}

/// The inode of every file under `root`: a `get --replace` that writes nothing keeps them.
fn inodes(root: &Path) -> BTreeMap<String, u64> {
    use std::os::unix::fs::MetadataExt;
    snapshot(root)
        .into_iter()
        .filter(|(_, n)| matches!(n, Node::File { .. }))
        .map(|(rel, _)| {
            let ino = std::fs::metadata(root.join(&rel)).unwrap().ino();
            (rel, ino)
        })
        .collect()
}

/// A get whose manifest and frames the agent holds asks the store for HEAD only, and for
/// nothing when it names the version in full; a `--replace` of the version DEST already
/// holds writes no file.
async fn warm_gets_ask_only_for_head(backend: Backend) {
    let rig = Rig::new(backend, "warm").await;
    let src = rig.scratch.path().join("src-warm");
    conformance::delta::project(&src);
    let version = rig.put_direct(&src).await.version.expect("a version");
    let warm = GetOptions {
        cache_dir: Some(rig.scratch.path().join("cache")),
        ..GetOptions::default()
    };
    let (_, dest) = rig.destination("cold");
    let (cold, cold_bytes, report) = counted_get(&rig, &dest, &warm).await.unwrap();
    assert!(report.frames_downloaded > 0, "{backend:?}: {report:?}");
    let (_, dest) = rig.destination("warm");
    let (requests, bytes, report) = counted_get(&rig, &dest, &warm).await.unwrap();
    assert_eq!(snapshot(&dest), snapshot(&src), "{backend:?}");
    assert_eq!(report.frames_downloaded, 0, "{backend:?}: {report:?}");
    eprintln!(
        "{backend:?}: cold get {cold} requests, {cold_bytes} bytes; warm get {requests} requests, {bytes} bytes"
    );
    assert_eq!(requests, 1, "{backend:?}: a warm get asks for HEAD only");

    let pinned = GetOptions {
        version: Some(version.clone()),
        ..warm.clone()
    };
    let (_, pinned_dest) = rig.destination("pinned");
    let (requests, _, _) = counted_get(&rig, &pinned_dest, &pinned).await.unwrap();
    assert_eq!(snapshot(&pinned_dest), snapshot(&src), "{backend:?}");
    eprintln!("{backend:?}: warm get --version <id>: {requests} requests");
    assert_eq!(
        requests, 0,
        "{backend:?}: a warm get of a named version asks nothing"
    );

    let before = inodes(&dest);
    let replace = GetOptions {
        mode: storage_core::GetMode::Replace,
        ..warm.clone()
    };
    let (requests, _, report) = counted_get(&rig, &dest, &replace).await.unwrap();
    assert_eq!(snapshot(&dest), snapshot(&src), "{backend:?}");
    eprintln!("{backend:?}: get --replace of the version held: {requests} requests, {report:?}");
    assert_eq!(requests, 1, "{backend:?}");
    assert_eq!(report.files_linked, report.files, "{backend:?}: {report:?}");
    assert_eq!(
        inodes(&dest),
        before,
        "{backend:?}: a file was written again"
    );
}

/// `--only` a sub-folder reads only the frames that hold it, and a glob that matches nothing
/// is `NotFound` (exit 3), one line naming the slug, nothing written.
async fn only_a_sub_folder_moves_only_its_frames(backend: Backend) {
    let rig = Rig::new(backend, "only").await;
    let src = rig.scratch.path().join("src-only");
    conformance::delta::project(&src);
    rig.put_direct(&src).await;
    let (_, dest) = rig.destination("whole");
    let (whole_requests, whole, _) = counted_get(&rig, &dest, &uncached()).await.unwrap();

    let only = |globs: &[&str]| GetOptions {
        only: globs.iter().map(|g| g.to_string()).collect(),
        ..uncached()
    };
    let (_, dest) = rig.destination("part");
    let (requests, part, report) = counted_get(&rig, &dest, &only(&["flows/pkg3/**"]))
        .await
        .unwrap_or_else(|e| panic!("{backend:?}: --only: {e}"));
    let expected: BTreeMap<String, Node> = snapshot(&src)
        .into_iter()
        .filter(|(k, _)| k == "flows" || k == "flows/pkg3" || k.starts_with("flows/pkg3/"))
        .collect();
    assert_eq!(snapshot(&dest), expected, "{backend:?}");
    eprintln!(
        "{backend:?}: whole get {whole_requests} requests, {whole} bytes; --only flows/pkg3/** {requests} requests, {part} bytes, {report:?}"
    );
    assert!(
        part * 4 < whole,
        "{backend:?}: --only moved {part} bytes of a whole get's {whole}"
    );

    let (parent, dest) = rig.destination("nothing");
    let err = counted_get(&rig, &dest, &only(&["nothing/**"]))
        .await
        .err()
        .unwrap_or_else(|| panic!("{backend:?}: a glob that matches nothing succeeded"));
    let text = err.to_string();
    assert_eq!(err.exit_code(), 3, "{backend:?}: {text}");
    assert!(
        !text.contains('\n') && text.starts_with(backend.label()),
        "{text}"
    );
    assert_nothing_written(&parent);
}

fn assert_nothing_written(parent: &Path) {
    let left: Vec<_> = std::fs::read_dir(parent)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        left.is_empty(),
        "a failed get left {left:?} in {}",
        parent.display()
    );
}

/// One case of this file run against one backend.
type Case = fn(Backend) -> Pin<Box<dyn Future<Output = ()>>>;
/// How each backend's run of one case ended, by backend: `Err` holds its panic message.
type Outcomes = BTreeMap<&'static str, Result<(), String>>;

/// Runs the test of `case` on `backend`. Most of a case's time is spent waiting (request
/// timeouts over stalled connections, retry pauses), so the first test of a case to run runs
/// that case for every backend that has it, side by side, each on a runtime of its own as a
/// test of its own would (scoped threads: nothing outlives it); the case's other tests then
/// find their outcome ready, and each fails with its own backend's panic only.
fn side_by_side(case: &'static str, backend: Backend) {
    static GROUPS: RunOnce<Outcomes> = RunOnce::new();
    let outcomes = GROUPS.get_or_run(case, || {
        std::thread::scope(|s| {
            let runs: Vec<_> = CASES
                .iter()
                .filter(|(_, name, _)| *name == case)
                .map(|&(backend, _, run)| {
                    let thread = s.spawn(move || {
                        tokio::runtime::Builder::new_multi_thread()
                            .worker_threads(2)
                            .enable_all()
                            .build()
                            .expect("a tokio runtime")
                            .block_on(run(backend))
                    });
                    (backend.label(), thread)
                })
                .collect();
            runs.into_iter()
                .map(|(label, thread)| (label, thread.join().map_err(panic_text)))
                .collect()
        })
    });
    if let Err(e) = &outcomes[backend.label()] {
        panic!("{e}");
    }
}

macro_rules! fault_tests {
    ($($module:ident => $backend:ident: $($case:ident),* ;)*) => {
        /// Every test of this file: its backend, its case's name, and the case.
        const CASES: &[(Backend, &str, Case)] = &[
            $($((Backend::$backend, stringify!($case), |backend| Box::pin($case(backend))),)*)*
        ];
        $(
            mod $module {
                use super::*;
                $(
                    #[test]
                    fn $case() {
                        side_by_side(stringify!($case), Backend::$backend);
                    }
                )*
            }
        )*
    };
}

fault_tests! {
    s3 => S3: answers_503_are_retried,
        a_reset_during_put_is_retried_or_fails_cleanly,
        a_put_that_keeps_being_reset_fails_cleanly_and_keeps_head,
        a_reset_during_get_is_retried_or_fails_cleanly,
        stalled_connections_fail_cleanly_in_bounded_time,
        a_lost_head_swap_response_is_recognised_as_our_own,
        cold_gets_make_few_requests_even_after_many_edits,
        a_ranged_read_cut_midway_is_read_again,
        a_large_file_lands_from_ranges_out_of_order_and_cut,
        many_agents_and_a_racing_put_get_whole_versions,
        warm_gets_ask_only_for_head,
        only_a_sub_folder_moves_only_its_frames;
    azure => Azure: answers_503_are_retried,
        a_reset_during_put_is_retried_or_fails_cleanly,
        a_put_that_keeps_being_reset_fails_cleanly_and_keeps_head,
        a_reset_during_get_is_retried_or_fails_cleanly,
        stalled_connections_fail_cleanly_in_bounded_time,
        a_lost_head_swap_response_is_recognised_as_our_own,
        cold_gets_make_few_requests_even_after_many_edits,
        a_ranged_read_cut_midway_is_read_again,
        a_large_file_lands_from_ranges_out_of_order_and_cut,
        warm_gets_ask_only_for_head,
        only_a_sub_folder_moves_only_its_frames;
    gcs => Gcs: answers_503_are_retried,
        a_reset_during_put_is_retried_or_fails_cleanly,
        a_put_that_keeps_being_reset_fails_cleanly_and_keeps_head,
        a_reset_during_get_is_retried_or_fails_cleanly,
        stalled_connections_fail_cleanly_in_bounded_time;
}
