//! The conformance suite against fake-gcs-server, started by the harness. One server is shared
//! by the cases that overlap in time; each case gets its own bucket. Then what is specific to
//! GCS: keys under the prefix, a HEAD swap the server itself checks, and a 256 MiB package
//! that streams.

use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;

use conformance::harness::{FakeGcs, shared};
use conformance::tree::noise;
use conformance::{Subject, conformance_suite};
use sha2::{Digest, Sha256};
use storage_core::{BlockPath, GetOptions, PutOptions, StorageBlock};
use storage_gcs::object_store::path::Path as Key;
use storage_gcs::object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions as StorePut};
use storage_gcs::object_store::{PutPayload, UpdateVersion};
use storage_gcs::{GcsConfig, open, open_store};

const PREFIX: &str = "team/flows";

fn config(gcs: &FakeGcs, bucket: &str) -> GcsConfig {
    GcsConfig {
        bucket: bucket.into(),
        prefix: Some(PREFIX.into()),
        endpoint: Some(gcs.endpoint.clone()),
        service_account_key: None,
        service_account_path: None,
        anonymous: Some(true),
        timeout: None,
    }
}

/// The shared server and a fresh bucket on it.
fn server_with_bucket(case: &str) -> (Arc<FakeGcs>, GcsConfig) {
    let gcs = shared::<FakeGcs>(FakeGcs::start);
    let bucket = conformance::bucket_name(case);
    gcs.create_bucket(&bucket).expect("create bucket");
    let config = config(&gcs, &bucket);
    (gcs, config)
}

async fn gcs_subject(case: &str) -> Subject {
    let (gcs, config) = server_with_bucket(case);
    let block = open(&config, "gcs/conformance").expect("open gcs block");
    Subject::new(Arc::new(block), case).with_guard(gcs)
}

conformance_suite!(gcs_subject);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_land_under_the_prefix() {
    let (_gcs, config) = server_with_bucket("keys-land-under-the-prefix");
    let block = open(&config, "gcs/prefix").unwrap();
    let src = tempfile::tempdir().unwrap();
    conformance::tree::small_tree(src.path(), "p1");
    let at = BlockPath::parse("etl/daily").unwrap();
    let version = block
        .put_directory(src.path(), &at, &PutOptions::default())
        .await
        .unwrap()
        .version
        .unwrap();

    let store = open_store(&config, "gcs/prefix").unwrap();
    let mut keys: Vec<String> = futures::TryStreamExt::try_collect::<Vec<_>>(store.list(None))
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.location.to_string())
        .collect();
    keys.sort();
    let base = format!("{PREFIX}/etl/daily/.blocks");
    let (frames, rest): (Vec<&String>, Vec<&String>) = keys
        .iter()
        .partition(|k| k.starts_with(&format!("{base}/packs/")));
    // HEAD, the note of its swap (`<unix millis>-<version>.json`), the manifest.
    assert_eq!(rest.len(), 3, "{keys:?}");
    assert_eq!(rest[0], &format!("{base}/HEAD"));
    let note = rest[1]
        .strip_prefix(&format!("{base}/heads/"))
        .and_then(|n| n.strip_suffix(&format!("-{version}.json")));
    assert!(
        note.is_some_and(|ms| ms.len() == 13 && ms.bytes().all(|b| b.is_ascii_digit())),
        "{keys:?}"
    );
    assert_eq!(rest[2], &format!("{base}/manifests/{version}.json.zst"));
    assert!(!frames.is_empty(), "{keys:?}");

    block.check().await.expect("check reaches the bucket");
    let missing = GcsConfig {
        bucket: "no-such-bucket".into(),
        ..config.clone()
    };
    let err = open(&missing, "gcs/missing")
        .unwrap()
        .check()
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), 3, "{err}");
    assert!(err.to_string().starts_with("gcs/missing"), "{err}");
}

/// The HEAD swap is a compare-and-swap that the server enforces, not only the adapter's
/// check beforehand: stale generations and creates over a live object are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_writes_are_checked_by_the_server() {
    let (_gcs, config) = server_with_bucket("conditional-writes");
    let store = open_store(&config, "gcs/cas").unwrap();
    let key = Key::parse("x/.blocks/HEAD").unwrap();
    let put = |mode: PutMode, body: &'static str| {
        let store = store.clone();
        let key = key.clone();
        async move {
            store
                .put_opts(
                    &key,
                    PutPayload::from_static(body.as_bytes()),
                    StorePut {
                        mode,
                        ..Default::default()
                    },
                )
                .await
        }
    };
    let first = put(PutMode::Create, "one").await.expect("create");
    let again = put(PutMode::Create, "two").await;
    assert!(
        matches!(
            again,
            Err(storage_gcs::object_store::Error::AlreadyExists { .. })
        ),
        "{again:?}"
    );

    let read = store.get(&key).await.unwrap();
    let seen = UpdateVersion {
        e_tag: read.meta.e_tag.clone(),
        version: read.meta.version.clone(),
    };
    assert_eq!(seen.version, first.version, "a read reports the generation");
    // Another writer replaces the object (a plain write, which checks nothing).
    store
        .put(&key, PutPayload::from_static(b"other"))
        .await
        .unwrap();
    let stale = put(PutMode::Update(seen), "mine").await;
    assert!(
        matches!(
            stale,
            Err(storage_gcs::object_store::Error::Precondition { .. })
        ),
        "{stale:?}"
    );
    let now = store.get(&key).await.unwrap();
    let current = UpdateVersion {
        e_tag: now.meta.e_tag.clone(),
        version: now.meta.version.clone(),
    };
    assert_eq!(&now.bytes().await.unwrap()[..], b"other");
    put(PutMode::Update(current), "mine").await.expect("swap");
    assert_eq!(
        &store.get(&key).await.unwrap().bytes().await.unwrap()[..],
        b"mine"
    );
}

const BIG: usize = 256 * 1024 * 1024;
const BIG_ENV: &str = "GCS_BIG_PACKAGE_BUCKET";
const BIG_ENDPOINT_ENV: &str = "GCS_BIG_PACKAGE_ENDPOINT";

/// Runs [`big_package_in_this_process`] in a process of its own, so that its peak memory can
/// be read without the other tests' allocations, and checks it stayed well under the package
/// size: the package streams up and down, it is never held whole.
#[test]
fn a_256_mib_package_round_trips_in_bounded_memory() {
    let (gcs, config) = server_with_bucket("big-package");
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "big_package_in_this_process", "--ignored"])
        .args(["--nocapture", "--test-threads", "1"])
        .env(BIG_ENV, &config.bucket)
        .env(BIG_ENDPOINT_ENV, &gcs.endpoint)
        .output()
        .expect("run the big package test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "big package test failed:\n{stdout}\n{stderr}"
    );
    let peak_mib: u64 = stdout
        .lines()
        .find_map(|l| l.split("peak-rss-mib=").nth(1))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no peak reported:\n{stdout}"));
    eprintln!("256 MiB package: peak RSS {peak_mib} MiB");
    assert!(
        peak_mib < 240,
        "a 256 MiB package took {peak_mib} MiB of memory: it was not streamed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run in its own process by a_256_mib_package_round_trips_in_bounded_memory"]
async fn big_package_in_this_process() {
    // Started by the bounded-memory test with its server and bucket, or on its own (`cargo
    // test -- --ignored`) with a server of its own.
    let (_server, config) = match std::env::var(BIG_ENV) {
        Ok(bucket) => (
            None,
            GcsConfig {
                bucket,
                prefix: Some(PREFIX.into()),
                endpoint: Some(std::env::var(BIG_ENDPOINT_ENV).unwrap()),
                service_account_key: None,
                service_account_path: None,
                anonymous: Some(true),
                timeout: None,
            },
        ),
        Err(_) => {
            let (gcs, config) = server_with_bucket("big-package-alone");
            (Some(gcs), config)
        }
    };
    let block = open(&config, "gcs/big").unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let src = scratch.path().join("src");
    let file = src.join("data/big.bin");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    conformance::tree::write(&src, "flow.py", "print('big')\n");
    // Written 4 MiB at a time (noise does not compress), so that the file never sits in
    // memory either.
    let mut out = std::io::BufWriter::new(std::fs::File::create(&file).unwrap());
    for i in 0..(BIG / (4 << 20)) {
        out.write_all(&noise(4 << 20, 1000 + i as u64)).unwrap();
    }
    out.flush().unwrap();
    drop(out);

    let at = BlockPath::parse("big").unwrap();
    let report = block
        .put_directory(&src, &at, &PutOptions::default())
        .await
        .expect("put 256 MiB");
    assert_eq!(report.bytes, BIG as u64 + 13);
    let dest = scratch.path().join("dest");
    block
        .get_directory(&at, &dest, &GetOptions::default())
        .await
        .expect("get 256 MiB");
    assert_eq!(sha256_of(&dest.join("data/big.bin")), sha256_of(&file));
    assert_eq!(
        std::fs::read_to_string(dest.join("flow.py")).unwrap(),
        "print('big')\n"
    );
    println!("peak-rss-mib={}", peak_rss_mib());
}

fn sha256_of(path: &Path) -> String {
    let mut f = std::fs::File::open(path).unwrap();
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).unwrap();
    hex::encode(h.finalize())
}

/// The process's peak resident memory (`VmHWM`).
fn peak_rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status");
    kib / 1024
}
