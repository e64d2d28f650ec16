//! Packages from a hostile store: unpacking never panics and never writes outside the
//! staging folder, whatever the bytes (zstd frames, or a tar compressed here first so the
//! fuzzer reaches tar's structure).
#![no_main]

use libfuzzer_sys::fuzz_target;
use storage_core::EntryKind;
use storage_core::package::extract::unpack_verified;
use storage_core::package::manifest::{Frame, ManifestEntry, PackageManifest, Totals, version_id};

fn entry(path: &str, kind: EntryKind, target: Option<&str>) -> ManifestEntry {
    ManifestEntry {
        path: path.into(),
        kind,
        mode: if kind == EntryKind::File { 0o644 } else { 0o755 },
        size: if kind == EntryKind::File { 2 } else { 0 },
        // sha256("hi")
        sha256: (kind == EntryKind::File)
            .then(|| "8f434346648f6b96df89dda901c5176b10a6d83961dd3c1ac88b59b2dc327aa4".into()),
        target: target.map(Into::into),
        frame: 0,
        offset: 0,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let package = if mode & 1 == 0 { rest.to_vec() } else { zstd::encode_all(rest, 1).unwrap() };
    let entries = vec![
        entry("a", EntryKind::Dir, None),
        entry("a/f.txt", EntryKind::File, None),
        entry("l", EntryKind::Symlink, Some("a/f.txt")),
    ];
    let manifest = PackageManifest {
        format: 1,
        version: version_id(&entries),
        created: String::new(),
        compression: "zstd".into(),
        totals: Totals { files: 1, dirs: 1, symlinks: 1, bytes: 2, package_bytes: package.len() as u64 },
        frames: vec![Frame { offset: 0, length: package.len() as u64, uncompressed_offset: 0, uncompressed_length: 0, sha256: None, ..Default::default() }],
        entries,
        record: None,
    };
    let outer = tempfile::tempdir().unwrap();
    let staging = outer.path().join("staging");
    std::fs::create_dir(&staging).unwrap();
    let _ = unpack_verified(&package[..], &manifest, &staging, "", |_| {});
    let outside: Vec<_> = std::fs::read_dir(outer.path()).unwrap().flatten().map(|e| e.file_name()).collect();
    assert_eq!(outside, vec![std::ffi::OsString::from("staging")], "something was written outside");
});
