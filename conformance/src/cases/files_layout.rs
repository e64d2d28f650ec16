//! The files layout: a plain mirror that other tools can read, or a refusal where the backend has none.

use super::*;

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
