//! Damaged packages (corrupt, truncated, tampered, a HEAD naming a missing version) are refused and nothing is written.

use super::*;

/// Puts a small tree and returns the version and the path of its largest frame or pack.
async fn stored(s: &Subject, at: &str) -> (String, String) {
    let src = s.fresh_dir("src");
    small_tree(&src, at);
    write_file(&src, "data/blob.bin", crate::tree::noise(300 * 1024, 3));
    let v = put(s, &src, at).await.version.unwrap();
    let manifest = crate::delta::stored_manifest(s, at, &v).await;
    let object = crate::delta::frame_objects(&manifest)
        .into_iter()
        .max_by_key(|(_, len)| *len)
        .expect("a frame")
        .0;
    (v, object)
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
