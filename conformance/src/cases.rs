//! The cases. Each asserts what a user would observe: the files in the destination, the
//! version listed, the error's exit code, and that nothing was written where it must not be.

use std::fs;
use std::path::Path;

use storage_core::{
    BlockSlug, DeleteOptions, EntryKind, Error, GcOptions, GetMode, GetOptions, Layout, PutOptions,
    PutReport, Result, VersionPrecondition,
};

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use storage_core::{BlockPath, ProgressEvent, ProgressObserver, StorageBlock};

use crate::Subject;
use crate::hostile::{
    RawEntry, file_record, header, plant, plant_package, read, symlink_record, tar_bytes,
    tar_entries, write, zstd_skippable, zstd_zeros,
};
use crate::tree::{
    files_only, small_tree, snapshot, tricky_tree, without_empty_dirs, write as write_file,
};

fn code<T: std::fmt::Debug>(r: Result<T>) -> i32 {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.exit_code(),
    }
}

pub(crate) async fn put(s: &Subject, src: &Path, at: &str) -> PutReport {
    s.block
        .put_directory(src, &s.path(at), &PutOptions::default())
        .await
        .unwrap_or_else(|e| panic!("put to {at}: {e}"))
}

fn get_opts(mode: GetMode) -> GetOptions {
    GetOptions {
        mode,
        ..GetOptions::default()
    }
}

/// No staging folder may be left beside a destination after a failed get.
fn assert_no_leftovers_beside(dest: &Path) {
    let parent = dest.parent().unwrap();
    for e in fs::read_dir(parent).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            !name.contains(".blockctl-"),
            "staging folder {name} left beside {}",
            dest.display()
        );
    }
}

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

pub async fn get_refuses_a_non_empty_destination(s: &Subject) {
    let src = s.fresh_dir("src");
    small_tree(&src, "x");
    put(s, &src, "busy").await;
    let dest = s.fresh_dir("dest");
    write_file(&dest, "mine.txt", "keep me");
    let r = s
        .block
        .get_directory(&s.path("busy"), &dest, &GetOptions::default())
        .await;
    assert_eq!(code(r), 6);
    assert_eq!(fs::read_dir(&dest).unwrap().count(), 1);
    assert_eq!(
        fs::read_to_string(dest.join("mine.txt")).unwrap(),
        "keep me"
    );
    // An existing but empty folder is fine.
    let empty = s.fresh_dir("empty");
    fs::create_dir(&empty).unwrap();
    s.block
        .get_directory(&s.path("busy"), &empty, &GetOptions::default())
        .await
        .expect("get into empty dir");
    assert!(empty.join("flow.py").is_file());
}

pub async fn get_replace_makes_the_destination_exactly_the_version(s: &Subject) {
    let src = s.fresh_dir("src");
    small_tree(&src, "r");
    put(s, &src, "rep").await;
    let dest = s.fresh_dir("dest");
    write_file(&dest, "stale.txt", "old");
    write_file(&dest, "flow.py", "old flow");
    s.block
        .get_directory(&s.path("rep"), &dest, &get_opts(GetMode::Replace))
        .await
        .expect("replace");
    assert_eq!(snapshot(&dest), snapshot(&src));
    assert_no_leftovers_beside(&dest);
}

pub async fn get_merge_overwrites_and_keeps_other_files(s: &Subject) {
    let src = s.fresh_dir("src");
    small_tree(&src, "m");
    put(s, &src, "merge").await;
    let dest = s.fresh_dir("dest");
    write_file(&dest, "local-only.txt", "mine");
    write_file(&dest, "flow.py", "old flow");
    s.block
        .get_directory(&s.path("merge"), &dest, &get_opts(GetMode::Merge))
        .await
        .expect("merge");
    assert_eq!(
        fs::read_to_string(dest.join("flow.py")).unwrap(),
        "VERSION = \"m\"\n"
    );
    assert_eq!(
        fs::read_to_string(dest.join("local-only.txt")).unwrap(),
        "mine"
    );
    assert!(dest.join("conf/settings.toml").is_file());
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

pub async fn files_layout_is_a_plain_mirror_or_declared_unsupported(s: &Subject) {
    let caps = s.block.capabilities();
    let src = s.fresh_dir("src");
    small_tree(&src, "files");
    write_file(&src, "deep/er/data.csv", "a,b\n1,2\n");
    write_file(&src, "odd/plus+percent%hash#.cfg", "odd\n");
    let opts = PutOptions {
        layout: Layout::Files,
        ..PutOptions::default()
    };
    let r = s.block.put_directory(&src, &s.path("mirror"), &opts).await;
    if !caps.files_layout {
        assert_eq!(
            code(r),
            2,
            "a backend without a files layout must refuse it as unsupported"
        );
        return;
    }
    let report = r.expect("files put");
    assert_eq!(report.layout, Layout::Files);
    assert_eq!(report.files, 4);
    // Each file is its own object at <path>/<relpath>.
    let raw = s
        .block
        .read_path(&s.path("mirror/deep/er/data.csv"))
        .await
        .expect("read mirrored object");
    assert_eq!(&raw[..], b"a,b\n1,2\n");
    let listed: Vec<String> = s
        .block
        .list_files(&s.path("mirror"))
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.path)
        .collect();
    assert_eq!(
        listed,
        [
            "conf/settings.toml",
            "deep/er/data.csv",
            "flow.py",
            "odd/plus+percent%hash#.cfg"
        ]
    );
    // A second put mirrors deletions too.
    fs::remove_file(src.join("deep/er/data.csv")).unwrap();
    s.block
        .put_directory(&src, &s.path("mirror"), &opts)
        .await
        .expect("second files put");
    let dest = s.fresh_dir("dest");
    let got = s
        .block
        .get_directory(&s.path("mirror"), &dest, &GetOptions::default())
        .await
        .expect("files get");
    assert_eq!(got.layout, Layout::Files);
    let expect = if caps.files_keep_metadata {
        snapshot(&src)
    } else {
        files_only(&snapshot(&src))
    };
    assert_eq!(files_only(&snapshot(&dest)), files_only(&expect));
    // An object written by another client (no .blocks/HEAD) is pulled the same way.
    write(
        s.block.as_ref(),
        &s.path("foreign"),
        "from-elsewhere/readme.md",
        b"hello".to_vec(),
    )
    .await;
    let d2 = s.fresh_dir("foreign");
    s.block
        .get_directory(&s.path("foreign"), &d2, &GetOptions::default())
        .await
        .expect("get foreign mirror");
    assert_eq!(
        fs::read_to_string(d2.join("from-elsewhere/readme.md")).unwrap(),
        "hello"
    );
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

/// Puts a small tree and returns the version and the path of its largest frame object.
async fn stored(s: &Subject, at: &str) -> (String, String) {
    let src = s.fresh_dir("src");
    small_tree(&src, at);
    write_file(&src, "data/blob.bin", crate::tree::noise(300 * 1024, 3));
    let v = put(s, &src, at).await.version.unwrap();
    let manifest = crate::delta::stored_manifest(s, at, &v).await;
    let frame = crate::delta::frames_of(&manifest)
        .into_iter()
        .max_by_key(|(_, len)| *len)
        .expect("a frame")
        .0;
    (v, format!(".blocks/frames/{frame}.zst"))
}

/// A get that must fail because of what the store holds: no cached frame may stand in for
/// the damaged one.
async fn assert_get_fails_cleanly(s: &Subject, at: &str, codes: &[i32]) {
    let dest = s.fresh_dir("dest");
    let uncached = GetOptions {
        no_cache: true,
        ..GetOptions::default()
    };
    let r = s.block.get_directory(&s.path(at), &dest, &uncached).await;
    let c = code(r);
    assert!(
        codes.contains(&c),
        "exit code {c}, expected one of {codes:?}"
    );
    assert!(
        !dest.exists(),
        "a refused get left {} behind",
        dest.display()
    );
    assert_no_leftovers_beside(&dest);
    // --merge into a folder with files leaves that folder as it was.
    let keep = s.fresh_dir("keep");
    write_file(&keep, "mine.txt", "mine");
    let before = snapshot(&keep);
    let merge = GetOptions {
        no_cache: true,
        ..get_opts(GetMode::Merge)
    };
    let r = s.block.get_directory(&s.path(at), &keep, &merge).await;
    assert!(codes.contains(&code(r)));
    assert_eq!(snapshot(&keep), before);
}

/// Whether packages can be tampered with object by object: a package layout whose objects
/// `write_path` reaches (not a native tree, not a registry's digest-addressed blobs).
fn tamperable(s: &Subject) -> bool {
    let caps = s.block.capabilities();
    caps.package_layout && caps.raw_objects
}

/// What a backend without raw package objects (no package layout, or blobs a registry keeps
/// under their digests) declares instead of the cases that tamper with packages: writing one
/// is refused as unsupported, and what was put reads back unchanged. Such a backend's own
/// tests damage its storage directly.
pub(crate) async fn assert_no_raw_objects(s: &Subject, at: &str) {
    let src = s.fresh_dir("src");
    small_tree(&src, at);
    let v = put(s, &src, at).await.version.unwrap();
    for rel in [
        format!(".blocks/packages/{v}.tar.zst"),
        format!(".blocks/manifests/{v}.json"),
        ".blocks/HEAD".to_string(),
    ] {
        let path = BlockPath::parse(&s.path(at).join(&rel)).unwrap();
        let r = s
            .block
            .write_path(&path, b"{not json".to_vec().into())
            .await;
        assert_eq!(
            code(r),
            2,
            "{rel}: a backend without the package layout must refuse raw writes"
        );
    }
    let dest = s.fresh_dir("dest");
    s.block
        .get_directory(&s.path(at), &dest, &GetOptions::default())
        .await
        .expect("get after the refused writes");
    assert_eq!(snapshot(&dest), snapshot(&src));
}

pub async fn corrupted_package_is_refused_and_nothing_is_written(s: &Subject) {
    if !tamperable(s) {
        return assert_no_raw_objects(s, "corrupt").await;
    }
    let (_, pkg) = stored(s, "corrupt").await;
    let at = s.path("corrupt");
    let mut bytes = read(s.block.as_ref(), &at, &pkg).await;
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x5a;
    write(s.block.as_ref(), &at, &pkg, bytes).await;
    assert_get_fails_cleanly(s, "corrupt", &[5]).await;
}

pub async fn truncated_package_is_refused_and_nothing_is_written(s: &Subject) {
    if !tamperable(s) {
        return assert_no_raw_objects(s, "trunc").await;
    }
    let (_, pkg) = stored(s, "trunc").await;
    let at = s.path("trunc");
    let mut bytes = read(s.block.as_ref(), &at, &pkg).await;
    bytes.truncate(bytes.len() * 2 / 3);
    write(s.block.as_ref(), &at, &pkg, bytes).await;
    assert_get_fails_cleanly(s, "trunc", &[5]).await;
}

pub async fn tampered_manifest_is_refused(s: &Subject) {
    if !tamperable(s) {
        return assert_no_raw_objects(s, "tamper").await;
    }
    let (v, _) = stored(s, "tamper").await;
    let mut m = crate::delta::stored_manifest(s, "tamper", &v).await;
    let entries = m["entries"].as_array_mut().unwrap();
    let file = entries.iter_mut().find(|e| e["kind"] == "file").unwrap();
    file["sha256"] = serde_json::Value::String("0".repeat(64));
    crate::delta::write_manifest(s, "tamper", &v, &m).await;
    assert_get_fails_cleanly(s, "tamper", &[5]).await;
}

pub async fn head_pointing_at_a_missing_version_is_refused(s: &Subject) {
    if !tamperable(s) {
        return assert_no_raw_objects(s, "dangling").await;
    }
    stored(s, "dangling").await;
    let head = serde_json::json!({"version": "ab".repeat(32), "updated": "2026-01-01T00:00:00Z"});
    write(
        s.block.as_ref(),
        &s.path("dangling"),
        ".blocks/HEAD",
        serde_json::to_vec(&head).unwrap(),
    )
    .await;
    assert_get_fails_cleanly(s, "dangling", &[3, 5]).await;
    write(
        s.block.as_ref(),
        &s.path("dangling"),
        ".blocks/HEAD",
        b"{not json".to_vec(),
    )
    .await;
    assert_get_fails_cleanly(s, "dangling", &[5]).await;
}

pub async fn hostile_archives_are_refused_with_nothing_written(s: &Subject) {
    if !tamperable(s) {
        // No archives to plant; a native tree's own hostile entries are its backend's tests.
        return assert_no_raw_objects(s, "hostile").await;
    }
    let outside = s.fresh_dir("outside");
    fs::create_dir_all(&outside).unwrap();
    let abs = outside.join("abs-evil.txt");
    let abs_name = abs.to_str().unwrap().to_string();
    let evil = b"evil".as_slice();
    let cases: Vec<(
        &str,
        Vec<RawEntry>,
        Vec<storage_core::manifest::ManifestEntry>,
    )> = vec![
        (
            "dotdot",
            vec![RawEntry::file("../../dotdot-evil.txt", evil)],
            vec![file_record("dotdot-evil.txt", evil)],
        ),
        (
            "dotdot-in-manifest",
            vec![RawEntry::file("../x.txt", evil)],
            vec![file_record("../x.txt", evil)],
        ),
        (
            "absolute",
            vec![RawEntry::file(&abs_name, evil)],
            vec![file_record("abs-evil.txt", evil)],
        ),
        (
            "escaping-link",
            vec![RawEntry::link(
                "esc",
                tar::EntryType::Symlink,
                "../../../outside",
            )],
            vec![symlink_record("esc", "inside")],
        ),
        (
            "escaping-link-in-manifest",
            vec![RawEntry::link(
                "esc",
                tar::EntryType::Symlink,
                "../../../outside",
            )],
            vec![symlink_record("esc", "../../../outside")],
        ),
        (
            "write-through-link",
            vec![
                RawEntry::link("l", tar::EntryType::Symlink, "."),
                RawEntry::file("l/x.txt", evil),
            ],
            vec![symlink_record("l", "."), file_record("l/x.txt", evil)],
        ),
        (
            "hard-link",
            vec![
                RawEntry::file("a.txt", evil),
                RawEntry::link("h.txt", tar::EntryType::Link, "a.txt"),
            ],
            vec![file_record("a.txt", evil), file_record("h.txt", evil)],
        ),
        (
            "fifo",
            vec![RawEntry::special("p", tar::EntryType::Fifo)],
            vec![file_record("p", b"")],
        ),
        (
            "device",
            vec![RawEntry::special("dev", tar::EntryType::Char)],
            vec![file_record("dev", b"")],
        ),
        (
            "not-in-manifest",
            vec![
                RawEntry::file("a.txt", evil),
                RawEntry::file("extra.sh", evil),
            ],
            vec![file_record("a.txt", evil)],
        ),
        (
            "same-path-twice",
            vec![
                RawEntry::file("a.txt", b"good"),
                RawEntry::file("a.txt", evil),
            ],
            vec![file_record("a.txt", b"good")],
        ),
        (
            "same-path-twice-in-manifest",
            vec![RawEntry::file("a.txt", evil), RawEntry::file("a.txt", evil)],
            vec![file_record("a.txt", evil), file_record("a.txt", evil)],
        ),
        (
            "file-then-folder-of-the-same-name",
            vec![RawEntry::file("a", evil), RawEntry::dir("a")],
            vec![file_record("a", evil)],
        ),
    ];
    for (name, entries, records) in cases {
        let at = format!("hostile/{name}");
        plant(
            s.block.as_ref(),
            &s.path(&at),
            &tar_bytes(&entries),
            records,
        )
        .await;
        let dest = outside.join(format!("dest-{name}"));
        let r = s
            .block
            .get_directory(&s.path(&at), &dest, &GetOptions::default())
            .await;
        let c = code(r);
        assert_eq!(c, 5, "{name}: exit code {c}");
        assert!(!dest.exists(), "{name}: destination was created");
        assert_no_leftovers_beside(&dest);
    }
    let left: Vec<String> = fs::read_dir(&outside)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        left.is_empty(),
        "files written outside their destination: {left:?}"
    );
    assert!(!abs.exists());
    assert!(
        !s.fresh_dir("x")
            .parent()
            .unwrap()
            .join("dotdot-evil.txt")
            .exists()
    );
}

/// A get of `at` that must fail with exit `want` and write nothing: DEST not created, no
/// staging left, a `--merge` folder unchanged. Returns the one-line message.
async fn refused_cleanly(s: &Subject, at: &str, want: i32) -> String {
    let dest = s.fresh_dir("dest");
    let started = std::time::Instant::now();
    let err = s
        .block
        .get_directory(&s.path(at), &dest, &GetOptions::default())
        .await
        .expect_err(&format!("{at}: the get succeeded"));
    let took = started.elapsed();
    let msg = err.to_string();
    assert_eq!(err.exit_code(), want, "{at}: {msg}");
    assert!(!msg.contains('\n'), "{at}: not one line: {msg}");
    assert!(msg.len() < 600, "{at}: a message of {} bytes", msg.len());
    assert!(
        took < std::time::Duration::from_secs(60),
        "{at}: refused only after {took:?}"
    );
    assert!(
        !dest.exists(),
        "{at}: a refused get created its destination"
    );
    assert_no_leftovers_beside(&dest);
    let keep = s.fresh_dir("keep");
    write_file(&keep, "mine.txt", "mine");
    let before = snapshot(&keep);
    let r = s
        .block
        .get_directory(&s.path(at), &keep, &get_opts(GetMode::Merge))
        .await;
    assert_eq!(code(r), want, "{at}: --merge");
    assert_eq!(
        snapshot(&keep),
        before,
        "{at}: a refused --merge touched DEST"
    );
    msg
}

const GIB: u64 = 1024 * 1024 * 1024;

pub async fn zstd_bombs_and_huge_sizes_are_refused_early_with_nothing_written(s: &Subject) {
    if !tamperable(s) {
        return assert_no_raw_objects(s, "bomb").await;
    }
    let small = b"ok\n".as_slice();
    let good = tar_entries(&[RawEntry::file("a.txt", small)]);

    // A valid tar followed by 4 GiB of zeros: the package unpacks to far more than its
    // entries take up.
    let mut tar = good.clone();
    tar.extend_from_slice(&[0u8; 1024]);
    let mut package = zstd::encode_all(&tar[..], 3).unwrap();
    package.extend(zstd_zeros(4 * GIB));
    let records = vec![file_record("a.txt", small)];
    plant_package(
        s.block.as_ref(),
        &s.path("bomb/trailing"),
        package,
        4 * GIB,
        records,
    )
    .await;
    let msg = refused_cleanly(s, "bomb/trailing", 5).await;
    assert!(
        msg.contains("bomb/trailing"),
        "the message names no slug: {msg}"
    );
    assert!(msg.contains("unpacks to more than"), "{msg}");

    // A GNU long-name record claiming 16 GiB (of zeros): tar would read it into memory.
    let mut head = Vec::new();
    header(
        &mut head,
        b"././@LongLink",
        tar::EntryType::GNULongName,
        16 * GIB,
        None,
    );
    let mut package = zstd::encode_all(&head[..], 3).unwrap();
    package.extend(zstd_zeros(16 * GIB));
    let records = vec![file_record("a.txt", small)];
    plant_package(
        s.block.as_ref(),
        &s.path("bomb/long-name"),
        package,
        16 * GIB,
        records,
    )
    .await;
    let msg = refused_cleanly(s, "bomb/long-name", 5).await;
    assert!(msg.contains("PATH_MAX"), "{msg}");

    // A file header claiming 1 TiB where the manifest lists 3 bytes.
    let mut head = Vec::new();
    header(
        &mut head,
        b"a.txt",
        tar::EntryType::Regular,
        1024 * GIB,
        None,
    );
    let mut package = zstd::encode_all(&head[..], 3).unwrap();
    package.extend(zstd_zeros(GIB));
    let records = vec![file_record("a.txt", small)];
    plant_package(
        s.block.as_ref(),
        &s.path("bomb/huge-header"),
        package,
        GIB,
        records,
    )
    .await;
    refused_cleanly(s, "bomb/huge-header", 5).await;

    // A manifest that declares a 1 TiB file in a package of a few KiB: more than zstd can
    // expand to, refused before anything is unpacked.
    let mut record = file_record("a.txt", small);
    record.size = 1024 * GIB;
    let mut head = Vec::new();
    header(
        &mut head,
        b"a.txt",
        tar::EntryType::Regular,
        record.size,
        None,
    );
    let mut package = zstd::encode_all(&head[..], 3).unwrap();
    package.extend(zstd_zeros(64 * 1024 * 1024));
    plant_package(
        s.block.as_ref(),
        &s.path("bomb/absurd"),
        package,
        1024 * GIB,
        vec![record],
    )
    .await;
    let msg = refused_cleanly(s, "bomb/absurd", 5).await;
    assert!(msg.contains("more than zstd can expand to"), "{msg}");

    // Sizes that add up past u64.
    let mut a = file_record("a.txt", small);
    let mut b = file_record("b.txt", small);
    a.size = 1 << 63;
    b.size = 1 << 63;
    let package = zstd::encode_all(&tar_bytes(&[RawEntry::file("a.txt", small)])[..], 3).unwrap();
    plant_package(
        s.block.as_ref(),
        &s.path("bomb/overflow"),
        package,
        0,
        vec![a, b],
    )
    .await;
    refused_cleanly(s, "bomb/overflow", 5).await;

    // A pax header: `tar -x` would take its size and path, so a package never holds one.
    let pax = b"17 path=evil.txt\n".to_vec();
    let mut entries = vec![RawEntry::file("pax", &pax)];
    entries[0].kind = tar::EntryType::XHeader;
    entries.push(RawEntry::file("a.txt", small));
    plant(
        s.block.as_ref(),
        &s.path("bomb/pax"),
        &tar_bytes(&entries),
        vec![file_record("a.txt", small)],
    )
    .await;
    let msg = refused_cleanly(s, "bomb/pax", 5).await;
    assert!(msg.contains("pax"), "{msg}");
}

/// Bytes free on the filesystem that holds `dir`.
fn free_bytes(dir: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).unwrap();
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid NUL-terminated path and a struct statvfs to fill.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    assert_eq!(rc, 0, "statvfs {}", dir.display());
    st.f_bavail as u64 * st.f_frsize as u64
}

pub async fn versions_larger_than_the_free_space_are_refused_before_unpacking(s: &Subject) {
    if !tamperable(s) {
        return assert_no_raw_objects(s, "full").await;
    }
    let probe = s.fresh_dir("probe");
    fs::create_dir_all(&probe).unwrap();
    let declared = free_bytes(&probe) + 64 * GIB;
    let small = b"ok\n".as_slice();
    let mut record = file_record("big.bin", small);
    record.size = declared;
    // The header claims the declared size; the stream then ends. A skippable frame makes the
    // package big enough that zstd could expand it that far.
    let mut head = Vec::new();
    header(
        &mut head,
        b"big.bin",
        tar::EntryType::Regular,
        declared,
        None,
    );
    let mut package = zstd::encode_all(&head[..], 3).unwrap();
    let padding = declared / storage_core::manifest::MAX_EXPANSION + 4096;
    package.extend(zstd_skippable(padding as u32));
    plant_package(
        s.block.as_ref(),
        &s.path("full"),
        package,
        declared,
        vec![record],
    )
    .await;
    let msg = refused_cleanly(s, "full", 1).await;
    assert!(msg.contains("not enough space"), "{msg}");
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
        Vec<storage_core::manifest::ManifestEntry>,
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
        plant(
            s.block.as_ref(),
            &s.path(&at),
            &tar_bytes(&entries),
            records,
        )
        .await;
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
    plant(
        s.block.as_ref(),
        &s.path("case-hostile"),
        &tar_bytes(&[
            RawEntry::dir("sub"),
            RawEntry::link("sub/Link", tar::EntryType::Symlink, ".."),
            RawEntry::dir("sub/link"),
            RawEntry::file("sub/link/x.txt", evil),
        ]),
        vec![
            storage_core::manifest::ManifestEntry {
                kind: EntryKind::Dir,
                mode: 0o755,
                size: 0,
                sha256: None,
                ..file_record("sub", b"")
            },
            symlink_record("sub/Link", ".."),
            storage_core::manifest::ManifestEntry {
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

pub async fn if_version_is_a_compare_and_swap_or_declared_unsupported(s: &Subject) {
    let src = s.fresh_dir("src");
    small_tree(&src, "c1");
    let with = |p: VersionPrecondition| PutOptions {
        if_version: Some(p),
        ..PutOptions::default()
    };
    let first = s
        .block
        .put_directory(&src, &s.path("cas"), &with(VersionPrecondition::NoVersion))
        .await;
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
    small_tree(&src, "c2");
    let v2 = s
        .block
        .put_directory(
            &src,
            &s.path("cas"),
            &with(VersionPrecondition::Current(v1.clone())),
        )
        .await
        .unwrap()
        .version
        .unwrap();
    small_tree(&src, "c3");
    let stale = s
        .block
        .put_directory(
            &src,
            &s.path("cas"),
            &with(VersionPrecondition::Current(v1.clone())),
        )
        .await;
    assert_eq!(code(stale), 6);
    let again = s
        .block
        .put_directory(&src, &s.path("cas"), &with(VersionPrecondition::NoVersion))
        .await;
    assert_eq!(code(again), 6);
    let current: Vec<_> = s
        .block
        .list_versions(&s.path("cas"))
        .await
        .unwrap()
        .into_iter()
        .filter(|v| v.current)
        .collect();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0].version, v2, "a failed --if-version moved HEAD");

    // Another writer moves HEAD between this put's read of HEAD and its swap: the swap must
    // fail, and HEAD must keep the other writer's value. A native tree has no HEAD object:
    // there the other writer puts a tree of its own.
    small_tree(&src, "c4");
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
    let lost = s.block.put_directory(&src, &s.path("cas"), &opts).await;
    assert!(
        interloper.fired.load(Ordering::SeqCst),
        "the interloper never ran"
    );
    assert_eq!(
        code(lost),
        6,
        "a HEAD swap ignored a concurrent change of HEAD"
    );
    let current: Vec<_> = s
        .block
        .list_versions(&s.path("cas"))
        .await
        .unwrap()
        .into_iter()
        .filter(|v| v.current)
        .collect();
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
    let current: Vec<_> = s
        .block
        .list_versions(&cas)
        .await
        .unwrap()
        .into_iter()
        .filter(|v| v.current)
        .collect();
    assert_eq!(Some(&current[0].version), winners[0].version.as_ref());
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
        let left: Vec<String> = s
            .block
            .list_versions(&at)
            .await
            .unwrap()
            .into_iter()
            .map(|v| v.version)
            .collect();
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
    let left: Vec<String> = s
        .block
        .list_versions(&at)
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.version)
        .collect();
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

/// A progress observer that, when the upload phase starts (after the put has read HEAD),
/// moves the current version itself from another thread, as a concurrent writer would.
struct Interloper {
    block: Arc<dyn StorageBlock>,
    action: Move,
    fired: AtomicBool,
    /// The version the other writer's put stored.
    stored: std::sync::Mutex<Option<String>>,
}

/// How the other writer moves the current version.
enum Move {
    /// Writes HEAD as it is (package layout).
    WriteHead { head: BlockPath, body: Vec<u8> },
    /// Puts another tree (native trees, which have no HEAD object).
    Put {
        src: std::path::PathBuf,
        at: BlockPath,
    },
}

impl Interloper {
    fn new(block: Arc<dyn StorageBlock>, action: Move) -> Self {
        Interloper {
            block,
            action,
            fired: AtomicBool::new(false),
            stored: std::sync::Mutex::new(None),
        }
    }
}

impl ProgressObserver for Interloper {
    fn event(&self, event: ProgressEvent) {
        if !matches!(
            event,
            ProgressEvent::Phase {
                name: "uploading",
                ..
            }
        ) || self.fired.swap(true, Ordering::SeqCst)
        {
            return;
        }
        let block = self.block.clone();
        let stored = std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("runtime");
                    match &self.action {
                        Move::WriteHead { head, body } => {
                            rt.block_on(block.write_path(head, body.clone().into()))
                                .expect("interloper write");
                            None
                        }
                        Move::Put { src, at } => {
                            rt.block_on(block.put_directory(src, at, &PutOptions::default()))
                                .expect("interloper put")
                                .version
                        }
                    }
                })
                .join()
                .expect("interloper thread")
        });
        *self.stored.lock().unwrap() = stored;
    }
}

pub async fn files_layout_reput_skips_what_is_uploaded_and_restores_what_changed(s: &Subject) {
    let caps = s.block.capabilities();
    let src = s.fresh_dir("src");
    small_tree(&src, "reput");
    let opts = PutOptions {
        layout: Layout::Files,
        ..PutOptions::default()
    };
    let r = s.block.put_directory(&src, &s.path("m"), &opts).await;
    if !caps.files_layout {
        assert_eq!(code(r), 2, "a files layout must be refused as unsupported");
        return;
    }
    assert!(!r.expect("first files put").skipped);
    let reput = s
        .block
        .put_directory(&src, &s.path("m"), &opts)
        .await
        .expect("unchanged files re-put");
    assert!(
        reput.skipped,
        "an unchanged files re-put uploaded something"
    );

    let local = fs::read(src.join("flow.py")).unwrap();
    let read = |rel: &'static str| async move {
        s.block
            .read_path(&s.path(&format!("m/{rel}")))
            .await
            .expect("read a mirrored object")
    };
    // Another client overwrites an object with other bytes of the same size: its ETag
    // changes, so the next put restores it even though the local file did not change.
    let tampered: Vec<u8> = local.iter().map(|b| b ^ 0x20).collect();
    s.block
        .write_path(&s.path("m/flow.py"), tampered.into())
        .await
        .expect("overwrite an object from elsewhere");
    let again = s
        .block
        .put_directory(&src, &s.path("m"), &opts)
        .await
        .expect("re-put after a remote change");
    assert!(!again.skipped, "a changed object was not uploaded again");
    assert_eq!(&read("flow.py").await[..], &local[..], "not restored");

    // A local change is uploaded; the other files are not.
    write_file(&src, "flow.py", "print('changed')\n");
    let changed = s
        .block
        .put_directory(&src, &s.path("m"), &opts)
        .await
        .expect("re-put after a local change");
    assert!(!changed.skipped);
    assert_eq!(&read("flow.py").await[..], b"print('changed')\n");
    let dest = s.fresh_dir("dest");
    s.block
        .get_directory(&s.path("m"), &dest, &GetOptions::default())
        .await
        .expect("files get");
    assert_eq!(files_only(&snapshot(&dest)), files_only(&snapshot(&src)));
}
