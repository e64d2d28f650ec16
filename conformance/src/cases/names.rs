//! Names: bad slugs, missing paths, long names, and names that differ only by case or Unicode normalization.

use super::*;

pub async fn bad_slugs_are_usage_errors(s: &Subject) {
    for bad in [
        "local",
        "local/UPPER",
        "nope/x",
        "local/x/../up",
        "local/x//abs",
        "local/x/a\0b",
        "local/x/./a",
    ] {
        assert_eq!(code(BlockSlug::parse(bad)), 2, "{bad:?}");
    }
    // The block itself refuses a path that is not one.
    let r = s.block.read_path(&storage_core::BlockPath::root()).await;
    assert_eq!(code(r), 2);
}

pub async fn missing_paths_are_not_found_and_create_nothing(s: &Subject) {
    let dest = s.fresh_dir("dest");
    let r = s
        .block
        .get_directory(&s.path("never/put"), &dest, &GetOptions::default())
        .await;
    assert_eq!(code(r), 3);
    assert!(!dest.exists(), "a failed get created its destination");
    assert_no_leftovers_beside(&dest);
    assert_eq!(code(s.block.list_versions(&s.path("never/put")).await), 3);
    assert_eq!(
        code(s.block.read_path(&s.path("never/put/file.txt")).await),
        3
    );
    assert_eq!(
        code(
            s.block
                .delete(&s.path("never/put"), &DeleteOptions::default())
                .await
        ),
        3
    );
    let src = s.fresh_dir("src");
    small_tree(&src, "x");
    put(s, &src, "there").await;
    let opts = GetOptions {
        version: Some("0000000000".into()),
        ..GetOptions::default()
    };
    assert_eq!(
        code(s.block.get_directory(&s.path("there"), &dest, &opts).await),
        3
    );
    assert_eq!(
        code(
            s.block
                .get_directory(
                    &s.path("there/no-such-folder"),
                    &dest,
                    &GetOptions::default()
                )
                .await
        ),
        3
    );
    assert!(!dest.exists());
    let missing_src = s.fresh_dir("missing");
    assert_eq!(
        code(
            s.block
                .put_directory(&missing_src, &s.path("y"), &PutOptions::default())
                .await
        ),
        3
    );
}

pub async fn long_names_round_trip_and_overlong_ones_are_refused(s: &Subject) {
    let src = s.fresh_dir("src");
    write_file(
        &src,
        &format!("long/{}.txt", "a".repeat(200)),
        "200-byte name\n",
    );
    write_file(
        &src,
        &format!("long/{}.txt", "b".repeat(251)),
        "255-byte name\n",
    );
    let deep: Vec<String> = (0..24)
        .map(|i| format!("d{i:02}-{}", "x".repeat(60)))
        .collect();
    let deep = deep.join("/");
    assert!(deep.len() > 1500);
    write_file(&src, &format!("{deep}/leaf.txt"), "deep\n");
    let before = snapshot(&src);
    let report = put(s, &src, "long").await;
    assert_eq!(report.files, 3);
    let dest = s.fresh_dir("dest");
    s.block
        .get_directory(&s.path("long"), &dest, &GetOptions::default())
        .await
        .expect("get of long names");
    assert_eq!(snapshot(&dest), before, "long names did not round-trip");
    let got = s
        .block
        .read_path(&s.path(&format!("long/{deep}/leaf.txt")))
        .await
        .expect("cat of a deep file");
    assert_eq!(&got[..], b"deep\n");

    if s.block.capabilities().files_layout {
        // A mirror holds a 200-byte name and the deep path as they are.
        let opts = PutOptions {
            layout: Layout::Files,
            ..PutOptions::default()
        };
        let mirror = s.fresh_dir("mirror");
        write_file(
            &mirror,
            &format!("long/{}.txt", "a".repeat(200)),
            "200
",
        );
        write_file(
            &mirror,
            &format!("{deep}/leaf.txt"),
            "deep
",
        );
        s.block
            .put_directory(&mirror, &s.path("long-files"), &opts)
            .await
            .expect("files put of long names");
        let dest = s.fresh_dir("dest-files");
        s.block
            .get_directory(&s.path("long-files"), &dest, &GetOptions::default())
            .await
            .expect("files get of long names");
        assert_eq!(files_only(&snapshot(&dest)), files_only(&snapshot(&mirror)));
        // A name of the full 255 bytes: kept, or refused in one line naming the slug (a
        // store that writes through a temporary name beside it has fewer bytes to spare).
        match s
            .block
            .put_directory(&src, &s.path("long-files-255"), &opts)
            .await
        {
            Ok(_) => {
                let dest = s.fresh_dir("dest-255");
                s.block
                    .get_directory(&s.path("long-files-255"), &dest, &GetOptions::default())
                    .await
                    .expect("files get of a 255-byte name");
                assert_eq!(files_only(&snapshot(&dest)), files_only(&before));
            }
            Err(e) => {
                let msg = e.to_string();
                eprintln!(
                    "files put of a 255-byte name: exit {}: {msg}",
                    e.exit_code()
                );
                assert!(matches!(e.exit_code(), 1 | 2), "{msg}");
                assert!(
                    !msg.contains('\n') && msg.contains("long-files-255"),
                    "{msg}"
                );
            }
        }
    }

    if !tamperable(s) {
        return;
    }
    let evil = b"evil".as_slice();
    let long_component = format!("{}.txt", "c".repeat(300));
    let over_path_max: Vec<String> = (0..20)
        .map(|i| format!("{i:02}{}", "p".repeat(247)))
        .collect();
    let over_path_max = over_path_max.join("/");
    assert!(over_path_max.len() > 4096);
    let cases: Vec<(
        &str,
        Vec<RawEntry>,
        Vec<storage_core::package::manifest::ManifestEntry>,
    )> = vec![
        (
            "component-over-255",
            vec![RawEntry::file(&long_component, evil)],
            vec![file_record("short.txt", evil)],
        ),
        (
            "component-over-255-in-manifest",
            vec![RawEntry::file(&long_component, evil)],
            vec![file_record(&long_component, evil)],
        ),
        (
            "path-over-path-max",
            vec![RawEntry::file(&over_path_max, evil)],
            vec![file_record("short.txt", evil)],
        ),
        (
            "path-over-path-max-in-manifest",
            vec![RawEntry::file(&over_path_max, evil)],
            vec![file_record(&over_path_max, evil)],
        ),
        (
            "link-target-over-path-max",
            vec![RawEntry::link("l", tar::EntryType::Symlink, &over_path_max)],
            vec![symlink_record("l", "short")],
        ),
    ];
    for (name, entries, records) in cases {
        let at = format!("long-hostile/{name}");
        plant_entries(s, &at, &entries, records).await;
        refused_cleanly(s, &at, 5).await;
    }
}

/// The same names in several spellings: case, and NFC beside NFD.
fn case_and_normalization_tree(root: &Path) {
    write_file(root, "Readme.md", "mixed case\n");
    write_file(root, "README.md", "upper case\n");
    write_file(root, "readme.md", "lower case\n");
    write_file(root, "caf\u{e9}.txt", "NFC\n");
    write_file(root, "cafe\u{301}.txt", "NFD\n");
    write_file(root, "Dir/a.txt", "in Dir\n");
    write_file(root, "dir/a.txt", "in dir\n");
}

pub async fn names_that_differ_by_case_or_normalization_stay_distinct(s: &Subject) {
    let src = s.fresh_dir("src");
    case_and_normalization_tree(&src);
    let before = snapshot(&src);
    assert_eq!(
        before.len(),
        9,
        "the test folder itself folds names: {before:?}"
    );
    let report = put(s, &src, "case").await;
    assert_eq!(report.files, 7);
    let dest = s.fresh_dir("dest");
    s.block
        .get_directory(&s.path("case"), &dest, &GetOptions::default())
        .await
        .expect("get");
    assert_eq!(snapshot(&dest), before, "names were folded together");
    for (name, want) in [("README.md", "upper case\n"), ("cafe\u{301}.txt", "NFD\n")] {
        let got = s
            .block
            .read_path(&s.path(&format!("case/{name}")))
            .await
            .expect("cat");
        assert_eq!(&got[..], want.as_bytes(), "cat {name}");
    }

    let caps = s.block.capabilities();
    if caps.files_layout {
        let opts = PutOptions {
            layout: Layout::Files,
            ..PutOptions::default()
        };
        if !caps.files_case_sensitive {
            // The store folds case: a tree holding names that differ only by case cannot
            // be mirrored, and is refused before anything is written.
            let err = s
                .block
                .put_directory(&src, &s.path("case-files"), &opts)
                .await
                .expect_err("a files put of case-colliding names to a case-folding store");
            assert_eq!(err.exit_code(), 2, "{err}");
            assert!(err.to_string().contains("differ only by case"), "{err}");
            assert!(
                s.block.list_files(&s.path("case-files")).await.is_err(),
                "the refused put wrote something"
            );
            // Renaming a file by case only: the new spelling's content must survive the
            // stale-file sweep (which would delete it under its old spelling).
            let one = s.fresh_dir("rename-before");
            crate::tree::write(&one, "Readme.md", b"old spelling\n");
            s.block
                .put_directory(&one, &s.path("case-rename"), &opts)
                .await
                .expect("files put, old spelling");
            let two = s.fresh_dir("rename-after");
            crate::tree::write(&two, "README.md", b"new spelling\n");
            s.block
                .put_directory(&two, &s.path("case-rename"), &opts)
                .await
                .expect("files put, new spelling");
            let dest = s.fresh_dir("dest-rename");
            s.block
                .get_directory(&s.path("case-rename"), &dest, &GetOptions::default())
                .await
                .expect("files get after a rename by case");
            let got = files_only(&snapshot(&dest));
            assert_eq!(got.len(), 1, "one file after a rename by case: {got:?}");
            let name = got.keys().next().expect("one file");
            assert_eq!(
                std::fs::read(dest.join(name)).expect("read the renamed file"),
                b"new spelling\n",
                "the file renamed by case lost its new content"
            );
        } else {
            s.block
                .put_directory(&src, &s.path("case-files"), &opts)
                .await
                .expect("files put");
            let dest = s.fresh_dir("dest-files");
            s.block
                .get_directory(&s.path("case-files"), &dest, &GetOptions::default())
                .await
                .expect("files get");
            let got = files_only(&snapshot(&dest));
            assert_eq!(
                got,
                files_only(&before),
                "a files layout folded names together"
            );
        }
    }

    if !tamperable(s) {
        return;
    }
    // A link whose name differs only by case from a folder: on a case-folding filesystem
    // the file below would be written through the link. It must be refused, or kept as two
    // distinct names with nothing outside DEST.
    let evil = b"evil".as_slice();
    plant_entries(
        s,
        "case-hostile",
        &[
            RawEntry::dir("sub"),
            RawEntry::link("sub/Link", tar::EntryType::Symlink, ".."),
            RawEntry::dir("sub/link"),
            RawEntry::file("sub/link/x.txt", evil),
        ],
        vec![
            storage_core::package::manifest::ManifestEntry {
                kind: EntryKind::Dir,
                mode: 0o755,
                size: 0,
                sha256: None,
                ..file_record("sub", b"")
            },
            symlink_record("sub/Link", ".."),
            storage_core::package::manifest::ManifestEntry {
                kind: EntryKind::Dir,
                mode: 0o755,
                size: 0,
                sha256: None,
                ..file_record("sub/link", b"")
            },
            file_record("sub/link/x.txt", evil),
        ],
    )
    .await;
    let outside = s.fresh_dir("outside");
    let dest = outside.join("dest");
    match s
        .block
        .get_directory(&s.path("case-hostile"), &dest, &GetOptions::default())
        .await
    {
        Err(e) => {
            assert_eq!(e.exit_code(), 5, "{e}");
            assert!(!dest.exists());
        }
        Ok(_) => {
            let got = snapshot(&dest);
            assert_eq!(
                got.get("sub/Link"),
                Some(&crate::tree::Node::Symlink("..".into()))
            );
            assert!(matches!(
                got.get("sub/link/x.txt"),
                Some(crate::tree::Node::File { size: 4, .. })
            ));
            assert!(
                !fs::symlink_metadata(dest.join("sub/link"))
                    .unwrap()
                    .is_symlink()
            );
        }
    }
    let left: Vec<_> = fs::read_dir(&outside)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != "dest")
        .collect();
    assert!(left.is_empty(), "written beside DEST: {left:?}");
    assert!(!outside.join("x.txt").exists());
}
