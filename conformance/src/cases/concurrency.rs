//! Concurrent puts and gets: every reader sees a whole version, and the current one is always whole.

use super::*;

pub async fn concurrent_puts_leave_a_whole_current_version(s: &Subject) {
    let mut trees = Vec::new();
    for i in 0..4 {
        let src = s.fresh_dir("src");
        small_tree(&src, &format!("c{i}"));
        write_file(
            &src,
            "data/blob.bin",
            crate::tree::noise(256 * 1024, i + 11),
        );
        trees.push(src);
    }
    let race = s.path("race");
    let opts = PutOptions::default();
    let puts = trees
        .iter()
        .map(|src| s.block.put_directory(src, &race, &opts));
    let reports: Vec<PutReport> = futures::future::join_all(puts)
        .await
        .into_iter()
        .collect::<Result<_, Error>>()
        .expect("concurrent puts");
    let versions = s.block.list_versions(&s.path("race")).await.unwrap();
    assert_eq!(versions.len(), 4);
    let current = versions
        .iter()
        .find(|v| v.current)
        .expect("one current version");
    let winner = reports
        .iter()
        .position(|r| r.version.as_ref() == Some(&current.version))
        .expect("HEAD is one of the puts");
    for v in &versions {
        let dest = s.fresh_dir("v");
        let opts = GetOptions {
            version: Some(v.version.clone()),
            ..GetOptions::default()
        };
        s.block
            .get_directory(&s.path("race"), &dest, &opts)
            .await
            .expect("every listed version reads back whole");
    }
    let dest = s.fresh_dir("cur");
    s.block
        .get_directory(&s.path("race"), &dest, &GetOptions::default())
        .await
        .unwrap();
    assert_eq!(snapshot(&dest), snapshot(&trees[winner]));
}

pub async fn racing_puts_of_different_trees_and_gets_see_only_whole_versions(s: &Subject) {
    let tree = |marker: &str, seed: u64| {
        let src = s.fresh_dir("src");
        small_tree(&src, marker);
        write_file(&src, &format!("only/{marker}.txt"), marker);
        write_file(&src, "data/blob.bin", crate::tree::noise(64 * 1024, seed));
        src
    };
    let base = tree("base", 40);
    let at = s.path("race8");
    let v0 = put(s, &base, "race8").await.version.unwrap();
    let trees: Vec<_> = (0..8).map(|i| tree(&format!("racer{i}"), 41 + i)).collect();
    let mut whole: Vec<_> = trees.iter().map(|t| snapshot(t)).collect();
    whole.push(snapshot(&base));
    let whole = &whole;

    let cas = s.block.capabilities().compare_and_swap;
    let opts = PutOptions {
        if_version: cas.then(|| VersionPrecondition::Current(v0.clone())),
        ..PutOptions::default()
    };
    let done = AtomicBool::new(false);
    let puts = async {
        let r =
            futures::future::join_all(trees.iter().map(|t| s.block.put_directory(t, &at, &opts)))
                .await;
        done.store(true, Ordering::SeqCst);
        r
    };
    // Readers during the race: each get is one whole version, never a mix.
    let gets = async {
        let mut n = 0;
        while n < 3 || !done.load(Ordering::SeqCst) {
            let dest = s.fresh_dir("reader");
            s.block
                .get_directory(&at, &dest, &GetOptions::default())
                .await
                .expect("a get during the race");
            let got = snapshot(&dest);
            assert!(
                whole.contains(&got),
                "a get during the race read a tree that was never put: {:?}",
                got.keys().collect::<Vec<_>>()
            );
            n += 1;
        }
        n
    };
    let (results, reads) = tokio::join!(puts, gets);
    assert!(reads >= 3);
    let winners: Vec<(usize, &PutReport)> = results
        .iter()
        .enumerate()
        .filter_map(|(i, r)| r.as_ref().ok().map(|r| (i, r)))
        .collect();
    for e in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(e.exit_code(), 6, "a losing put: {e}");
        assert!(!e.to_string().contains('\n'), "{e}");
    }
    if cas {
        assert_eq!(
            winners.len(),
            1,
            "exactly one --if-version put may win: {results:?}"
        );
    } else {
        assert_eq!(
            winners.len(),
            8,
            "every unconditional put succeeds: {results:?}"
        );
    }
    let listed = s.block.list_versions(&at).await.expect("versions");
    let current: Vec<_> = listed.iter().filter(|v| v.current).collect();
    assert_eq!(current.len(), 1, "{listed:?}");
    let (winner, _) = winners
        .iter()
        .find(|(_, r)| r.version.as_ref() == Some(&current[0].version))
        .expect("HEAD is one of the successful puts");
    let dest = s.fresh_dir("head");
    s.block
        .get_directory(&at, &dest, &GetOptions::default())
        .await
        .unwrap();
    assert_eq!(
        snapshot(&dest),
        whole[*winner],
        "HEAD does not read back as its tree"
    );
    assert!(listed.iter().any(|v| v.version == v0));
    for v in &listed {
        let dest = s.fresh_dir("listed");
        let opts = GetOptions {
            version: Some(v.version.clone()),
            ..GetOptions::default()
        };
        s.block
            .get_directory(&at, &dest, &opts)
            .await
            .unwrap_or_else(|e| panic!("listed version {} does not read back: {e}", v.version));
        assert!(
            whole.contains(&snapshot(&dest)),
            "listed version {} is not one of the trees put",
            v.version
        );
    }
}
