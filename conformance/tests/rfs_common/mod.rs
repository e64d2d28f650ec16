//! Checks the WebDAV and FTP tests share: a login refused with exit 4 and no secret, a
//! compare-and-swap between two clients, and a store left sound after a fault.

use std::path::Path;
use std::sync::Arc;

pub use conformance::checks::{assert_clean_failure, within_bound};
use conformance::tree::small_tree;
use storage_core::{BlockPath, GetOptions, ObjectStoreBlock, PutOptions, StorageBlock};
use storage_rfs::object_store::path::Path as Key;
use storage_rfs::object_store::{
    Error as StoreError, ObjectStore, ObjectStoreExt, PutMode, PutOptions as StorePut, PutPayload,
    UpdateVersion,
};

/// check, put and get of each block fail with exit 4, one line that names `label`, and
/// no secret in the message or in the Debug output of the error or the block.
pub async fn refused(blocks: &[&ObjectStoreBlock], label: &str, secrets: &[&str]) {
    let src = tempfile::tempdir().unwrap();
    small_tree(src.path(), "x");
    let at = BlockPath::parse("refused").unwrap();
    let dest = tempfile::tempdir().unwrap().path().join("dest");
    for block in blocks {
        let failures = [
            ("check", block.check().await.err()),
            (
                "put",
                block
                    .put_directory(src.path(), &at, &PutOptions::default())
                    .await
                    .err(),
            ),
            (
                "get",
                block
                    .get_directory(&at, &dest, &GetOptions::default())
                    .await
                    .err(),
            ),
        ];
        for (what, err) in failures {
            let err = err.unwrap_or_else(|| panic!("{what} succeeded"));
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
pub async fn assert_sound(
    direct: &ObjectStoreBlock,
    scratch: &Path,
    sources: &[&Path],
    current: &Path,
) {
    let at = BlockPath::parse("etl").unwrap();
    let trees: Vec<_> = sources
        .iter()
        .map(|s| conformance::tree::snapshot(s))
        .collect();
    for v in direct.list_versions(&at).await.unwrap() {
        let dest = scratch.join(format!("check-{}", &v.version[..12]));
        let opts = GetOptions {
            version: Some(v.version.clone()),
            ..uncached()
        };
        direct.get_directory(&at, &dest, &opts).await.unwrap();
        let got = conformance::tree::snapshot(&dest);
        assert!(trees.contains(&got), "version {} is no source", v.version);
        if v.current {
            assert_eq!(got, conformance::tree::snapshot(current));
        }
        std::fs::remove_dir_all(&dest).unwrap();
    }
    direct
        .gc(&at, &storage_core::GcOptions::keep(1))
        .await
        .unwrap();
    assert_eq!(direct.list_versions(&at).await.unwrap().len(), 1);
}
