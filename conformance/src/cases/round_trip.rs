//! A tree goes up and comes back exactly: the tricky tree, an unchanged re-put, sub-paths, ignore rules, cat.

use super::*;

pub async fn round_trip_keeps_a_tricky_tree_exactly(s: &Subject) {
    let src = s.fresh_dir("src");
    tricky_tree(&src);
    let report = put(s, &src, "tricky").await;
    assert!(!report.skipped);
    let before = snapshot(&src);
    let files = before
        .values()
        .filter(|n| matches!(n, crate::tree::Node::File { .. }))
        .count() as u64;
    assert_eq!(report.files, files);
    let dest = s.fresh_dir("dest");
    let got = s
        .block
        .get_directory(&s.path("tricky"), &dest, &GetOptions::default())
        .await
        .expect("get");
    assert_eq!(got.version, report.version);
    assert_eq!(got.files, files);
    let expected = if s.block.capabilities().native_tree {
        // Declared: a native tree has no empty folders, and the put says what it left out.
        assert!(
            report
                .warnings
                .iter()
                .any(|w| w.contains("empty-dir/inner-empty")),
            "no warning about the empty folder: {:?}",
            report.warnings
        );
        without_empty_dirs(&before)
    } else {
        before
    };
    assert_eq!(snapshot(&dest), expected, "the tree read back differs");
}

pub async fn unchanged_reput_uploads_nothing(s: &Subject) {
    let src = s.fresh_dir("src");
    small_tree(&src, "one");
    let first = put(s, &src, "same").await;
    let second = put(s, &src, "same").await;
    assert!(!first.skipped);
    assert!(second.skipped, "an unchanged tree was uploaded again");
    assert_eq!(first.version, second.version);
    if s.block.capabilities().versions {
        assert_eq!(
            s.block.list_versions(&s.path("same")).await.unwrap().len(),
            1
        );
    }
}

pub async fn sub_paths_are_independent_and_a_package_folder_can_be_pulled(s: &Subject) {
    let outer = s.fresh_dir("outer");
    small_tree(&outer, "outer");
    write_file(&outer, "sub/only-here.txt", "sub file");
    let inner = s.fresh_dir("inner");
    small_tree(&inner, "inner");
    put(s, &outer, "p").await;
    put(s, &inner, "p/deeper/inner").await;
    let d1 = s.fresh_dir("d1");
    s.block
        .get_directory(&s.path("p"), &d1, &GetOptions::default())
        .await
        .unwrap();
    if s.block.capabilities().native_tree {
        // Declared: a path is a folder of one tree, so the nested put is part of `p` now.
        let both = s.fresh_dir("both");
        small_tree(&both, "outer");
        write_file(&both, "sub/only-here.txt", "sub file");
        small_tree(&both.join("deeper/inner"), "inner");
        assert_eq!(
            snapshot(&d1),
            snapshot(&both),
            "p does not hold the nested put"
        );
    } else {
        assert_eq!(
            snapshot(&d1),
            snapshot(&outer),
            "a nested put leaked into its parent's version"
        );
    }
    let d2 = s.fresh_dir("d2");
    s.block
        .get_directory(&s.path("p/deeper/inner"), &d2, &GetOptions::default())
        .await
        .unwrap();
    assert_eq!(snapshot(&d2), snapshot(&inner));
    // A folder inside a package is pulled on its own, into DEST itself.
    let d3 = s.fresh_dir("d3");
    s.block
        .get_directory(&s.path("p/sub"), &d3, &GetOptions::default())
        .await
        .expect("get a folder of a package");
    assert_eq!(snapshot(&d3), snapshot(&outer.join("sub")));
}

pub async fn ignore_rules_leave_files_out(s: &Subject) {
    let src = s.fresh_dir("src");
    small_tree(&src, "ign");
    write_file(&src, ".git/HEAD", "ref: refs/heads/main\n");
    write_file(&src, "build/out.o", "obj");
    write_file(&src, "notes.log", "log");
    write_file(&src, "keep.log", "kept");
    write_file(&src, "__pycache__/x.pyc", "pyc");
    write_file(&src, ".blockignore", "build/\n*.log\n!keep.log\n");
    write_file(&src, ".prefectignore", "__pycache__/\n");
    put(s, &src, "ign").await;
    let dest = s.fresh_dir("dest");
    s.block
        .get_directory(&s.path("ign"), &dest, &GetOptions::default())
        .await
        .unwrap();
    let got: Vec<String> = snapshot(&dest).into_keys().collect();
    assert_eq!(
        got,
        [
            ".blockignore",
            ".prefectignore",
            "conf",
            "conf/settings.toml",
            "flow.py",
            "keep.log"
        ]
    );

    // --ignore-file replaces both files; --no-default-ignores keeps .git.
    let rules = s.fresh_dir("rules");
    write_file(&rules, "only.ignore", "conf/\n");
    let opts = PutOptions {
        ignore_file: Some(rules.join("only.ignore")),
        no_default_ignores: true,
        ..PutOptions::default()
    };
    let native = s.block.capabilities().native_tree;
    if native {
        // Declared: a native (git) tree cannot hold `.git`; the put says so and stores nothing.
        let r = s.block.put_directory(&src, &s.path("ign2"), &opts).await;
        assert_eq!(code(r), 2, "a native tree must refuse a folder named .git");
        assert_eq!(code(s.block.list_versions(&s.path("ign2")).await), 3);
        fs::remove_dir_all(src.join(".git")).unwrap();
    }
    s.block
        .put_directory(&src, &s.path("ign2"), &opts)
        .await
        .unwrap();
    let d2 = s.fresh_dir("d2");
    s.block
        .get_directory(&s.path("ign2"), &d2, &GetOptions::default())
        .await
        .unwrap();
    assert_eq!(d2.join(".git/HEAD").is_file(), !native);
    assert!(d2.join("build/out.o").is_file());
    assert!(!d2.join("conf").exists());
}

pub async fn cat_reads_one_file_of_the_current_version(s: &Subject) {
    let src = s.fresh_dir("src");
    tricky_tree(&src);
    put(s, &src, "cat").await;
    let got = s
        .block
        .read_path(&s.path("cat/données/été 2026/résumé.txt"))
        .await
        .expect("cat");
    assert_eq!(&got[..], b"unicode\n");
    let big = s
        .block
        .read_path(&s.path("cat/data/big.bin"))
        .await
        .expect("cat big");
    assert_eq!(big.len(), 20 * 1024 * 1024);
    assert_eq!(&big[..], &crate::tree::noise(20 * 1024 * 1024, 7)[..]);
    assert_eq!(code(s.block.read_path(&s.path("cat/flows")).await), 2);
    assert_eq!(code(s.block.read_path(&s.path("cat/nope.txt")).await), 3);
    let files = s.block.list_files(&s.path("cat")).await.unwrap();
    assert!(
        files
            .iter()
            .any(|f| f.path == "bin/daily-link.py" && f.kind == EntryKind::Symlink)
    );
    // A native tree has no empty folders (declared); every other layout lists them.
    assert_eq!(
        files
            .iter()
            .any(|f| f.path == "empty-dir/inner-empty" && f.kind == EntryKind::Dir),
        !s.block.capabilities().native_tree
    );
    assert!(
        files
            .iter()
            .any(|f| f.path == "flows/etl" && f.kind == EntryKind::Dir)
    );
}
