//! Cases of package format 2 and the agent cache: frames shared between versions, missing
//! frames refused, cached pulls, gc racing puts, export, diff, and format-1 versions still
//! read. A backend that stores native trees (git) has no frames or manifests: it declares so
//! (`native_tree`), and these cases check that export and manifests are refused instead.

use std::path::Path;
use std::sync::Arc;

use storage_core::diff::diff;
use storage_core::{BlockPath, GcOptions, GetMode, GetOptions, PutOptions, StorageBlock};

use crate::Subject;
use crate::cases::put;
use crate::hostile::{read, write};
use crate::tree::{noise, snapshot, write as write_file};

/// The format-2 manifest of `version` at `at`, as JSON.
pub async fn stored_manifest(s: &Subject, at: &str, version: &str) -> serde_json::Value {
    let rel = format!(".blocks/manifests/{version}.json.zst");
    let bytes = read(s.block.as_ref(), &s.path(at), &rel).await;
    let json = zstd::decode_all(&bytes[..]).expect("a zstd manifest");
    serde_json::from_slice(&json).expect("a JSON manifest")
}

/// Replaces the format-2 manifest of `version` at `at`.
pub async fn write_manifest(s: &Subject, at: &str, version: &str, m: &serde_json::Value) {
    let rel = format!(".blocks/manifests/{version}.json.zst");
    let json = serde_json::to_vec(m).unwrap();
    let bytes = zstd::encode_all(&json[..], 3).unwrap();
    write(s.block.as_ref(), &s.path(at), &rel, bytes).await;
}

/// `(sha256, compressed length)` of each frame a manifest lists.
pub fn frames_of(m: &serde_json::Value) -> Vec<(String, u64)> {
    m["frames"]
        .as_array()
        .expect("a frame table")
        .iter()
        .map(|f| {
            (
                f["sha256"].as_str().expect("a frame hash").to_string(),
                f["length"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// The objects a version's frames live in, with the bytes of it each holds: its packs
/// (format 3) or its frames (format 2), as paths below the package path.
pub fn frame_objects(m: &serde_json::Value) -> Vec<(String, u64)> {
    let mut objects: Vec<(String, u64)> = Vec::new();
    for f in m["frames"].as_array().expect("a frame table") {
        let len = f["length"].as_u64().unwrap();
        let path = match f["pack"].as_str() {
            Some(pack) => format!(".blocks/packs/{pack}.pack"),
            None => format!(
                ".blocks/frames/{}.zst",
                f["sha256"].as_str().expect("a frame hash")
            ),
        };
        match objects.iter_mut().find(|(p, _)| *p == path) {
            Some((_, n)) => *n += len,
            None => objects.push((path, len)),
        }
    }
    objects
}

/// A version's `.tar.zst`, put together from its frame objects as an independent client
/// reads them: `fetch` gets an object by its path below the package path (each pack or
/// frame once), and each frame is cut out of its pack (format 3) or is the object (format 2).
pub fn assemble_package(
    manifest: &storage_core::PackageManifest,
    mut fetch: impl FnMut(&str) -> Vec<u8>,
) -> Vec<u8> {
    let mut objects: std::collections::HashMap<String, Vec<u8>> = Default::default();
    let mut package = Vec::new();
    for f in &manifest.frames {
        let sha = f.sha256.as_deref().expect("a frame hash");
        let (path, start) = match (&f.pack, f.pack_offset) {
            (Some(pack), Some(at)) => (format!(".blocks/packs/{pack}.pack"), at as usize),
            _ => (format!(".blocks/frames/{sha}.zst"), 0),
        };
        let object = objects.entry(path.clone()).or_insert_with(|| fetch(&path));
        package.extend_from_slice(&object[start..start + f.length as usize]);
    }
    package
}

/// A project like the benchmark's `flow`, smaller: 400 Python modules in 9 packages
/// (`flows/pkg{n % 9}/mod_{n:03}.py`) and a few larger random files.
pub fn project(root: &Path) {
    for i in 0..400 {
        let body = format!("# module {i}\nimport os\nVALUE_{i} = {i}\n").repeat(10 + i % 40);
        write_file(root, &format!("flows/pkg{}/mod_{i:03}.py", i % 9), body);
    }
    for i in 0..3 {
        write_file(
            root,
            &format!("data/blob{i}.bin"),
            noise(1536 * 1024, 40 + i),
        );
    }
}

fn append(root: &Path, rel: &str, extra: &[u8]) {
    let mut data = std::fs::read(root.join(rel)).unwrap();
    data.extend_from_slice(extra);
    std::fs::write(root.join(rel), data).unwrap();
}

fn cached(dir: &Path) -> GetOptions {
    GetOptions {
        cache_dir: Some(dir.to_path_buf()),
        ..GetOptions::default()
    }
}

async fn get(s: &Subject, at: &str, dest: &Path, opts: &GetOptions) -> storage_core::GetReport {
    s.block
        .get_directory(&s.path(at), dest, opts)
        .await
        .unwrap_or_else(|e| panic!("get of {at}: {e}"))
}

/// What a native-tree backend answers instead: no manifests, no export.
async fn assert_no_frames(s: &Subject, at: &str) {
    let src = s.fresh_dir("src");
    crate::tree::small_tree(&src, at);
    put(s, &src, at).await;
    let code = |e: storage_core::Error| e.exit_code();
    let m = s.block.manifest(&s.path(at), None).await.map(drop);
    assert_eq!(m.map_err(code), Err(2), "manifest of a native tree");
    let x = s.block.export(&s.path(at), None).await.map(drop);
    assert_eq!(x.map_err(code), Err(2), "export of a native tree");
}

pub async fn frames_are_shared_between_versions_and_only_new_ones_are_sent(s: &Subject) {
    if s.block.capabilities().native_tree {
        return assert_no_frames(s, "shared").await;
    }
    let src = s.fresh_dir("src");
    project(&src);
    let first = put(s, &src, "shared").await;
    assert_eq!(first.frames_reused, 0, "{first:?}");
    assert!(first.frames_uploaded >= 5, "{first:?}");
    append(&src, "flows/pkg3/mod_201.py", &[b'#'; 300]);
    let second = put(s, &src, "shared").await;
    assert!(
        second.frames_uploaded <= 2,
        "a one-file edit sent {} frames: {second:?}",
        second.frames_uploaded
    );
    assert!(
        second.frames_reused + 2 >= first.frames_uploaded,
        "{second:?}"
    );
    assert!(
        second.uploaded_bytes * 10 < first.uploaded_bytes,
        "a one-file edit sent {} of {} bytes",
        second.uploaded_bytes,
        first.uploaded_bytes
    );
    // What the store holds: the new manifest names every frame, all of them there (where
    // frames are objects to read; a registry's are checked by the get below).
    let m = s
        .block
        .manifest(&s.path("shared"), second.version.as_deref())
        .await
        .expect("the manifest of the new version");
    let m = serde_json::to_value(&m).unwrap();
    let raw = s.block.capabilities().raw_objects;
    for (object, _) in frame_objects(&m).into_iter().filter(|_| raw) {
        read(s.block.as_ref(), &s.path("shared"), &object).await;
    }
    let dest = s.fresh_dir("dest");
    get(s, "shared", &dest, &GetOptions::default()).await;
    assert_eq!(snapshot(&dest), snapshot(&src));
}

pub async fn a_missing_frame_is_refused_with_nothing_written(s: &Subject) {
    if s.block.capabilities().native_tree {
        return assert_no_frames(s, "missing").await;
    }
    if !s.block.capabilities().raw_objects {
        // A registry's missing blob is its backend's own test.
        return crate::cases::assert_no_raw_objects(s, "missing").await;
    }
    let src = s.fresh_dir("src");
    project(&src);
    let v = put(s, &src, "missing").await.version.unwrap();
    let mut m = stored_manifest(s, "missing", &v).await;
    let frames = m["frames"].as_array_mut().unwrap();
    let mid = frames.len() / 2;
    // A frame no cache holds, in a pack (format 3) or an object (format 2) the store lacks.
    frames[mid]["sha256"] = serde_json::Value::String("ab".repeat(32));
    if frames[mid].get("pack").is_some() {
        frames[mid]["pack"] = serde_json::Value::String("cd".repeat(32));
    }
    write_manifest(s, "missing", &v, &m).await;
    for opts in [
        GetOptions::default(),
        GetOptions {
            no_cache: true,
            ..GetOptions::default()
        },
    ] {
        let dest = s.fresh_dir("dest");
        let err = s
            .block
            .get_directory(&s.path("missing"), &dest, &opts)
            .await
            .expect_err("a version with a missing frame");
        assert_eq!(err.exit_code(), 5, "{err}");
        assert!(err.to_string().contains("missing"), "{err}");
        assert!(!dest.exists(), "a refused get left {}", dest.display());
    }
}

pub async fn a_version_whose_frames_are_cached_is_pulled_without_frame_downloads(s: &Subject) {
    if s.block.capabilities().native_tree {
        return assert_no_frames(s, "cached").await;
    }
    let cache = s.fresh_dir("cache");
    let src = s.fresh_dir("src");
    project(&src);
    put(s, &src, "cached").await;
    let first = get(s, "cached", &s.fresh_dir("d"), &cached(&cache)).await;
    // A frame that occurs twice in one version may come from the cache the second time.
    assert!(
        first.frames_downloaded > 0 && first.frames_cached <= 1,
        "{first:?}"
    );
    let again = get(s, "cached", &s.fresh_dir("d"), &cached(&cache)).await;
    assert_eq!(
        (again.frames_downloaded, again.downloaded_bytes),
        (0, 0),
        "{again:?}"
    );
    assert_eq!(
        again.frames_cached,
        first.frames_downloaded + first.frames_cached
    );

    // That get took every frame from the cache, so the agent kept a copy of the version:
    // the next get copies its files from there, reading no frame.
    let dest = s.fresh_dir("run");
    let copied = get(s, "cached", &dest, &cached(&cache)).await;
    assert_eq!(
        (
            copied.files_copied,
            copied.frames_cached,
            copied.downloaded_bytes
        ),
        (copied.files, 0, 0),
        "{copied:?}"
    );
    assert_eq!(snapshot(&dest), snapshot(&src));

    // One file changed: about its frame is downloaded, and --replace brings DEST up to it.
    append(&src, "flows/pkg5/mod_104.py", &[b'#'; 300]);
    put(s, &src, "cached").await;
    let mut opts = cached(&cache);
    opts.mode = GetMode::Replace;
    let delta = get(s, "cached", &dest, &opts).await;
    assert!(delta.frames_downloaded <= 2, "{delta:?}");
    assert_eq!(
        delta.files_linked + 1,
        delta.files,
        "only the edited file is written: {delta:?}"
    );
    assert!(
        delta.downloaded_bytes * 10 < first.downloaded_bytes,
        "{} of {} bytes",
        delta.downloaded_bytes,
        first.downloaded_bytes
    );
    assert_eq!(snapshot(&dest), snapshot(&src));

    // A cached frame that went bad is not used: it is fetched again (no copy of the version
    // kept, so that the frames are read).
    let trees = cache.with_file_name(format!(
        "{}-trees",
        cache.file_name().unwrap().to_string_lossy()
    ));
    std::fs::remove_dir_all(&trees).unwrap();
    for entry in std::fs::read_dir(&cache).unwrap() {
        let path = entry.unwrap().path();
        std::fs::write(&path, b"rotten").unwrap();
    }
    let healed = get(s, "cached", &s.fresh_dir("d"), &cached(&cache)).await;
    // A frame that occurs twice may come from the cache the second time, once fetched again.
    assert!(healed.frames_cached <= 2, "{healed:?}");
    let no_cache = GetOptions {
        no_cache: true,
        ..GetOptions::default()
    };
    let bypass = get(s, "cached", &s.fresh_dir("d"), &no_cache).await;
    assert!(bypass.frames_downloaded > 0 && bypass.frames_cached == 0);
}

pub async fn gc_racing_puts_never_breaks_a_listed_version(s: &Subject) {
    if s.block.capabilities().native_tree {
        return assert_no_frames(s, "race").await;
    }
    // Two trees that share most frames; each put reuses frames the other's gc may find
    // unreferenced, with and without a grace.
    let (a, b) = (s.fresh_dir("a"), s.fresh_dir("b"));
    for (dir, tag) in [(&a, "A"), (&b, "B")] {
        project(dir);
        for i in 0..30 {
            append(
                dir,
                &format!("flows/pkg{}/mod_{:03}.py", (i * 13) % 9, i * 13),
                tag.as_bytes(),
            );
        }
    }
    put(s, &a, "race").await;
    put(s, &b, "race").await;
    let block: Arc<dyn StorageBlock> = s.block.clone();
    let at = s.path("race");
    let rounds = 6;
    let putter = {
        let (block, at, a, b) = (block.clone(), at.clone(), a.clone(), b.clone());
        tokio::spawn(async move {
            for i in 0..rounds {
                let src = if i % 2 == 0 { &a } else { &b };
                block
                    .put_directory(src, &at, &PutOptions::default())
                    .await
                    .expect("a put racing gc");
            }
        })
    };
    let collector = {
        let (block, at) = (block.clone(), at.clone());
        tokio::spawn(async move {
            for i in 0..rounds * 2 {
                let grace = if i % 2 == 0 {
                    std::time::Duration::ZERO
                } else {
                    std::time::Duration::from_millis(200)
                };
                block
                    .gc(
                        &at,
                        &GcOptions {
                            grace,
                            ..GcOptions::keep(0)
                        },
                    )
                    .await
                    .expect("a gc racing puts");
            }
        })
    };
    putter.await.unwrap();
    collector.await.unwrap();
    let versions = s.block.list_versions(&at).await.expect("versions");
    assert!(!versions.is_empty());
    for v in versions {
        let dest = s.fresh_dir("v");
        let opts = GetOptions {
            version: Some(v.version.clone()),
            no_cache: true,
            ..GetOptions::default()
        };
        s.block
            .get_directory(&at, &dest, &opts)
            .await
            .unwrap_or_else(|e| panic!("listed version {} is broken: {e}", v.version));
        let got = snapshot(&dest);
        assert!(got == snapshot(&a) || got == snapshot(&b));
    }
    // With nothing else running, gc --grace 0 leaves only the current version's frames.
    s.block.gc(&at, &only_current_now()).await.unwrap();
    let m = s.block.manifest(&at, None).await.unwrap();
    let dest = s.fresh_dir("after");
    get(
        s,
        "race",
        &dest,
        &GetOptions {
            no_cache: true,
            ..GetOptions::default()
        },
    )
    .await;
    assert_eq!(
        m.totals.files as usize,
        snapshot(&dest)
            .values()
            .filter(|n| matches!(n, crate::tree::Node::File { .. }))
            .count()
    );
}

pub async fn export_is_an_ordinary_tar_zst_of_the_version(s: &Subject) {
    if s.block.capabilities().native_tree {
        return assert_no_frames(s, "export").await;
    }
    let src = s.fresh_dir("src");
    crate::tree::tricky_tree(&src);
    put(s, &src, "export").await;
    let export = s
        .block
        .export(&s.path("export"), None)
        .await
        .expect("export");
    use futures::TryStreamExt;
    let chunks: Vec<bytes::Bytes> = export.stream.try_collect().await.expect("export bytes");
    let all: Vec<u8> = chunks.concat();
    assert_eq!(all.len() as u64, export.bytes);
    let tar = zstd::decode_all(&all[..]).expect("one .tar.zst");
    let dest = s.fresh_dir("untar");
    tar::Archive::new(&tar[..])
        .unpack(&dest)
        .expect("an ordinary tar");
    let mut expected = snapshot(&src);
    if !s.block.capabilities().package_layout {
        expected = crate::tree::files_only(&expected);
    }
    assert_eq!(snapshot(&dest), expected);
}

pub async fn diff_lists_changes_and_the_bytes_a_pull_moves(s: &Subject) {
    if s.block.capabilities().native_tree {
        return assert_no_frames(s, "diff").await;
    }
    let src = s.fresh_dir("src");
    project(&src);
    let v1 = put(s, &src, "diff").await.version.unwrap();
    append(&src, "flows/pkg1/mod_010.py", b"# changed\n");
    write_file(&src, "flows/new.py", "print('new')\n");
    std::fs::remove_file(src.join("flows/pkg2/mod_011.py")).unwrap();
    let v2 = put(s, &src, "diff").await.version.unwrap();
    let at = s.path("diff");
    let old = s.block.manifest(&at, Some(&v1)).await.unwrap();
    let new = s.block.manifest(&at, Some(&v2[..8])).await.unwrap();
    let d = diff(&old, &new);
    assert_eq!(d.added, ["flows/new.py"]);
    assert_eq!(d.removed, ["flows/pkg2/mod_011.py"]);
    assert_eq!(d.changed, ["flows/pkg1/mod_010.py"]);
    assert!(d.pull_frames >= 1 && d.pull_frames <= 4, "{d:?}");
    assert!(d.pull_bytes * 10 < d.package_bytes, "{d:?}");
    // The pull moves what diff said.
    let cache = s.fresh_dir("cache");
    let opts = GetOptions {
        version: Some(v1),
        ..cached(&cache)
    };
    get(s, "diff", &s.fresh_dir("d"), &opts).await;
    let pulled = get(s, "diff", &s.fresh_dir("d"), &cached(&cache)).await;
    assert_eq!(pulled.downloaded_bytes, d.pull_bytes, "{pulled:?} {d:?}");
}

/// The files of `conformance/fixtures/<name>` (its `.blocks` folder, walked), as the
/// previous release wrote them: two versions of one small tree at a block path.
fn fixture(name: &str) -> Vec<(String, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name);
    let mut out = Vec::new();
    let mut dirs = vec![root.join(".blocks")];
    while let Some(dir) = dirs.pop() {
        for e in std::fs::read_dir(&dir).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                dirs.push(e.path());
            } else {
                let rel = e.path().strip_prefix(&root).unwrap().to_path_buf();
                out.push((
                    rel.to_str().unwrap().to_string(),
                    std::fs::read(e.path()).unwrap(),
                ));
            }
        }
    }
    out.sort();
    out
}

pub async fn format_1_versions_written_by_the_previous_release_still_read(s: &Subject) {
    previous_release_still_reads(s, "format1", "packages").await;
}

/// Format 2 as the release before format 3 wrote it (`blockctl put` of commit a38f4bb,
/// frames under `.blocks/frames`): read, diffed against and collected like format 1.
pub async fn format_2_versions_written_by_the_previous_release_still_read(s: &Subject) {
    previous_release_still_reads(s, "format2", "frames").await;
}

/// The two versions of fixture `name` planted at `name` read back whole (current and by
/// id, and one file by `cat`), a put of this release goes on top and diffs against them,
/// and gc then removes them with their `data` objects (packages or frames).
async fn previous_release_still_reads(s: &Subject, name: &str, data: &str) {
    if !s.block.capabilities().package_layout || s.block.capabilities().native_tree {
        return assert_no_frames(s, name).await;
    }
    if !s.block.capabilities().raw_objects {
        // No earlier release wrote this format there, and nothing can plant it.
        return crate::cases::assert_no_raw_objects(s, name).await;
    }
    let at = s.path(name);
    for (rel, bytes) in fixture(name) {
        write(s.block.as_ref(), &at, &rel, bytes).await;
    }
    let versions = s
        .block
        .list_versions(&at)
        .await
        .expect("the fixture's versions");
    assert_eq!(versions.len(), 2, "{versions:?}");
    let check = |dest: &Path, daily: &str| {
        assert_eq!(
            std::fs::read_to_string(dest.join("flows/etl/daily.py")).unwrap(),
            daily
        );
        assert_eq!(
            std::fs::read_to_string(dest.join("flows/etl/q.sql")).unwrap(),
            "select 1;\n"
        );
        assert!(dest.join("empty").is_dir());
        let link = std::fs::read_link(dest.join("bin/daily-link.py")).unwrap();
        assert_eq!(link, Path::new("../flows/etl/daily.py"));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dest.join("bin/run.sh"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o755);
    };
    let dest = s.fresh_dir("cur");
    get(s, name, &dest, &GetOptions::default()).await;
    check(&dest, "print(\"daily v2\")\n");
    let old = versions
        .iter()
        .find(|v| !v.current)
        .unwrap()
        .version
        .clone();
    let dest = s.fresh_dir("old");
    let opts = GetOptions {
        version: Some(old.clone()),
        ..GetOptions::default()
    };
    get(s, name, &dest, &opts).await;
    check(&dest, "print(\"daily v1\")\n");
    let file = BlockPath::parse(&at.join("flows/etl/daily.py")).unwrap();
    assert_eq!(
        &s.block.read_path(&file).await.unwrap()[..],
        b"print(\"daily v2\")\n"
    );
    // A put of this release on top, diffed against the old versions, then gc drops them.
    let src = s.fresh_dir("src");
    crate::tree::small_tree(&src, "format2");
    let v2 = put(s, &src, name).await.version.unwrap();
    let d = diff(
        &s.block.manifest(&at, Some(&old)).await.unwrap(),
        &s.block.manifest(&at, Some(&v2)).await.unwrap(),
    );
    assert!(d.removed.contains(&"flows/etl/q.sql".to_string()), "{d:?}");
    let report = s.block.gc(&at, &only_current_now()).await.unwrap();
    assert_eq!(report.removed_versions.len(), 2, "{report:?}");
    let left = s.block.list_versions(&at).await.unwrap();
    assert_eq!(left.len(), 1);
    // A frame whose bytes the new version holds too stays (gc keeps frames by hash).
    let kept: Vec<String> = frames_of(&stored_manifest(s, name, &v2).await)
        .into_iter()
        .map(|(sha, _)| sha)
        .collect();
    for (rel, _) in fixture(name).into_iter().filter(|(r, _)| {
        r.contains(&format!("/{data}/")) && !kept.iter().any(|sha| r.contains(sha.as_str()))
    }) {
        let path = BlockPath::parse(&at.join(&rel)).unwrap();
        assert_eq!(
            s.block
                .read_path(&path)
                .await
                .map_err(|e| e.exit_code())
                .err(),
            Some(3),
            "{rel} stays"
        );
    }
}

/// gc that keeps the current version only, and nothing for a grace period.
fn only_current_now() -> GcOptions {
    GcOptions {
        grace: std::time::Duration::ZERO,
        ..GcOptions::keep(0)
    }
}
