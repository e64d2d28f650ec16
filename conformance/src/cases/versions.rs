//! Versions: listed newest first, read back by id, swapped only by compare-and-swap when asked, dropped by rm and gc.

use super::*;

pub async fn versions_are_listed_newest_first_and_old_ones_can_be_read(s: &Subject) {
    let src = s.fresh_dir("src");
    small_tree(&src, "v1");
    let v1 = put(s, &src, "ver").await.version.unwrap();
    small_tree(&src, "v2");
    let v2 = put(s, &src, "ver").await.version.unwrap();
    assert_ne!(v1, v2);
    let listed = s
        .block
        .list_versions(&s.path("ver"))
        .await
        .expect("versions");
    let ids: Vec<&str> = listed.iter().map(|v| v.version.as_str()).collect();
    assert_eq!(ids, [v2.as_str(), v1.as_str()]);
    assert!(listed[0].current && !listed[1].current);
    assert_eq!(listed[0].files, 2);
    let dest = s.fresh_dir("old");
    let opts = GetOptions {
        version: Some(v1[..10].to_string()),
        ..GetOptions::default()
    };
    let got = s
        .block
        .get_directory(&s.path("ver"), &dest, &opts)
        .await
        .expect("get old version");
    assert_eq!(got.version.as_deref(), Some(v1.as_str()));
    assert_eq!(
        fs::read_to_string(dest.join("flow.py")).unwrap(),
        "VERSION = \"v1\"\n"
    );
}

pub async fn if_version_is_a_compare_and_swap_or_declared_unsupported(s: &Subject) {
    let src = s.fresh_dir("src");
    small_tree(&src, "c1");
    let with = |p: VersionPrecondition| PutOptions {
        if_version: Some(p),
        ..PutOptions::default()
    };
    // A put of `src` at `cas` if HEAD is as `p` says.
    let (at, src) = (s.path("cas"), &src);
    let put_if = |p: VersionPrecondition| {
        let (opts, at) = (with(p), &at);
        async move { s.block.put_directory(src, at, &opts).await }
    };
    let first = put_if(VersionPrecondition::NoVersion).await;
    if !s.block.capabilities().compare_and_swap {
        assert_eq!(
            code(first),
            2,
            "a backend without compare-and-swap must refuse --if-version"
        );
        return;
    }
    let v1 = first
        .expect("first put with --if-version none")
        .version
        .unwrap();
    small_tree(src, "c2");
    let v2 = put_if(VersionPrecondition::Current(v1.clone()))
        .await
        .unwrap()
        .version
        .unwrap();
    small_tree(src, "c3");
    let stale = put_if(VersionPrecondition::Current(v1.clone())).await;
    assert_eq!(code(stale), 6);
    let again = put_if(VersionPrecondition::NoVersion).await;
    assert_eq!(code(again), 6);
    let current = current_versions(s, &at).await;
    assert_eq!(current.len(), 1);
    assert_eq!(current[0].version, v2, "a failed --if-version moved HEAD");

    // Another writer moves HEAD between this put's read of HEAD and its swap: the swap must
    // fail, and HEAD must keep the other writer's value. A native tree has no HEAD object:
    // there the other writer puts a tree of its own.
    small_tree(src, "c4");
    let native = s.block.capabilities().native_tree;
    let other_move = if native {
        let other = s.fresh_dir("other");
        small_tree(&other, "other writer");
        Move::Put {
            src: other,
            at: s.path("cas"),
        }
    } else {
        let body = serde_json::to_vec(
            &serde_json::json!({"version": v1, "updated": "2026-01-01T00:00:00Z"}),
        )
        .unwrap();
        Move::WriteHead {
            head: s.path("cas/.blocks/HEAD"),
            body,
        }
    };
    let interloper = Arc::new(Interloper::new(s.block.clone(), other_move));
    let opts = PutOptions {
        progress: Some(interloper.clone()),
        ..with(VersionPrecondition::Current(v2.clone()))
    };
    let lost = s.block.put_directory(src, &at, &opts).await;
    assert!(
        interloper.fired.load(Ordering::SeqCst),
        "the interloper never ran"
    );
    assert_eq!(
        code(lost),
        6,
        "a HEAD swap ignored a concurrent change of HEAD"
    );
    let current = current_versions(s, &at).await;
    let v2 = if native {
        let theirs = interloper.stored.lock().unwrap().clone();
        assert_eq!(
            Some(&current[0].version),
            theirs.as_ref(),
            "the losing put overwrote the other writer's version"
        );
        current[0].version.clone()
    } else {
        assert_eq!(
            current[0].version, v1,
            "the losing put overwrote the other writer's HEAD"
        );
        let back = serde_json::to_vec(
            &serde_json::json!({"version": v2, "updated": "2026-01-01T00:00:01Z"}),
        )
        .unwrap();
        write(s.block.as_ref(), &s.path("cas"), ".blocks/HEAD", back).await;
        v2
    };

    // Racing puts that all saw v2: exactly one may swap HEAD, the others lose with exit 6.
    let mut trees = Vec::new();
    for i in 0..4 {
        let t = s.fresh_dir("racer");
        small_tree(&t, &format!("racer{i}"));
        trees.push(t);
    }
    let cas = s.path("cas");
    let opts = with(VersionPrecondition::Current(v2.clone()));
    let results =
        futures::future::join_all(trees.iter().map(|t| s.block.put_directory(t, &cas, &opts)))
            .await;
    let winners: Vec<&PutReport> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(
        winners.len(),
        1,
        "exactly one racing --if-version put may win: {results:?}"
    );
    for r in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(r.exit_code(), 6, "{r}");
    }
    let current = current_versions(s, &cas).await;
    assert_eq!(Some(&current[0].version), winners[0].version.as_ref());
}

pub async fn rm_and_gc_drop_versions_but_never_the_current_one(s: &Subject) {
    let src = s.fresh_dir("src");
    let mut ids = Vec::new();
    for v in ["g1", "g2", "g3", "g4"] {
        small_tree(&src, v);
        ids.push(put(s, &src, "gc").await.version.unwrap());
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let at = s.path("gc");
    let current = ids[3].clone();
    if !s.block.capabilities().gc {
        // Declared: versions cannot be dropped, neither one by one nor by gc; rm of the whole
        // path still works.
        for v in [&current, &ids[0]] {
            let one = DeleteOptions {
                version: Some(v.clone()),
            };
            assert_eq!(code(s.block.delete(&at, &one).await), 2);
        }
        assert_eq!(code(s.block.gc(&at, &GcOptions::keep(1)).await), 2);
        let left = version_ids(s, &at).await;
        let newest_first: Vec<String> = ids.iter().rev().cloned().collect();
        assert_eq!(left, newest_first);
        s.block
            .delete(&at, &DeleteOptions::default())
            .await
            .expect("rm whole path");
        let gone = s
            .block
            .get_directory(&at, &s.fresh_dir("gone"), &GetOptions::default())
            .await;
        assert_eq!(code(gone), 3);
        return;
    }
    let r = s
        .block
        .delete(
            &at,
            &DeleteOptions {
                version: Some(current.clone()),
            },
        )
        .await;
    assert_eq!(code(r), 6, "the current version must not be deleted alone");
    s.block
        .delete(
            &at,
            &DeleteOptions {
                version: Some(ids[0].clone()),
            },
        )
        .await
        .expect("rm old version");
    let left = version_ids(s, &at).await;
    assert_eq!(left, [ids[3].clone(), ids[2].clone(), ids[1].clone()]);
    if !s.block.capabilities().gc {
        assert_eq!(code(s.block.gc(&at, &GcOptions::keep(1)).await), 2);
        return;
    }
    let report = s.block.gc(&at, &GcOptions::keep(2)).await.expect("gc");
    assert_eq!(report.kept, [ids[3].clone(), ids[2].clone()]);
    assert_eq!(report.removed_versions, [ids[1].clone()]);
    let dest = s.fresh_dir("dest");
    s.block
        .get_directory(&at, &dest, &GetOptions::default())
        .await
        .expect("current survives gc");
    assert_eq!(
        fs::read_to_string(dest.join("flow.py")).unwrap(),
        "VERSION = \"g4\"\n"
    );
    s.block
        .delete(&at, &DeleteOptions::default())
        .await
        .expect("rm whole path");
    assert_eq!(
        code(
            s.block
                .get_directory(&at, &s.fresh_dir("gone"), &GetOptions::default())
                .await
        ),
        3
    );
}

/// The versions listed at `at` that are current (one, where HEAD is sound).
async fn current_versions(s: &Subject, at: &BlockPath) -> Vec<storage_core::VersionInfo> {
    let listed = s.block.list_versions(at).await.unwrap();
    listed.into_iter().filter(|v| v.current).collect()
}

/// The ids of the versions listed at `at`, in the listing's order.
async fn version_ids(s: &Subject, at: &BlockPath) -> Vec<String> {
    let listed = s.block.list_versions(at).await.unwrap();
    listed.into_iter().map(|v| v.version).collect()
}
