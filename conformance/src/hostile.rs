//! Planting hand-made packages in a block, to prove that `get` refuses what it must: raw tar
//! headers (so names like `../x` and hard links can be written at all) and a manifest that
//! is otherwise consistent.

use bytes::Bytes;
use storage_core::manifest::{Frame, ManifestEntry, PackageManifest, Totals, version_id};
use storage_core::{BlockPath, EntryKind, StorageBlock};

/// One raw tar entry.
pub struct RawEntry {
    pub name: Vec<u8>,
    pub kind: tar::EntryType,
    pub data: Vec<u8>,
    pub link: Option<Vec<u8>>,
}

impl RawEntry {
    pub fn file(name: &str, data: &[u8]) -> Self {
        RawEntry {
            name: name.as_bytes().to_vec(),
            kind: tar::EntryType::Regular,
            data: data.to_vec(),
            link: None,
        }
    }
    pub fn link(name: &str, kind: tar::EntryType, target: &str) -> Self {
        RawEntry {
            name: name.as_bytes().to_vec(),
            kind,
            data: Vec::new(),
            link: Some(target.as_bytes().to_vec()),
        }
    }
    pub fn special(name: &str, kind: tar::EntryType) -> Self {
        RawEntry {
            name: name.as_bytes().to_vec(),
            kind,
            data: Vec::new(),
            link: None,
        }
    }
}

/// A manifest record for a regular file with these contents.
pub fn file_record(path: &str, data: &[u8]) -> ManifestEntry {
    use sha2::Digest;
    ManifestEntry {
        path: path.into(),
        kind: EntryKind::File,
        mode: 0o644,
        size: data.len() as u64,
        sha256: Some(hex::encode(sha2::Sha256::digest(data))),
        target: None,
        frame: 0,
        offset: 0,
    }
}

pub fn symlink_record(path: &str, target: &str) -> ManifestEntry {
    ManifestEntry {
        path: path.into(),
        kind: EntryKind::Symlink,
        mode: 0o777,
        size: 0,
        sha256: None,
        target: Some(target.into()),
        frame: 0,
        offset: 0,
    }
}

pub fn tar_bytes(entries: &[RawEntry]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        let old = h.as_old_mut();
        old.name[..e.name.len()].copy_from_slice(&e.name);
        if let Some(l) = &e.link {
            old.linkname[..l.len()].copy_from_slice(l);
        }
        h.set_entry_type(e.kind);
        h.set_size(e.data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_cksum();
        b.append(&h, e.data.as_slice()).expect("tar in memory");
    }
    b.into_inner().expect("tar in memory")
}

/// Writes package, manifest and HEAD at `at` as a put would, returning the version id.
pub async fn plant(
    block: &dyn StorageBlock,
    at: &BlockPath,
    tar: &[u8],
    mut records: Vec<ManifestEntry>,
) -> String {
    records.sort_by(|a, b| a.path.cmp(&b.path));
    let package = zstd::encode_all(tar, 3).expect("zstd in memory");
    let version = version_id(&records);
    let totals = Totals::count(&records, package.len() as u64);
    let manifest = PackageManifest {
        format: 1,
        version: version.clone(),
        created: "2026-01-01T00:00:00Z".into(),
        compression: "zstd".into(),
        totals,
        frames: vec![Frame {
            offset: 0,
            length: package.len() as u64,
            uncompressed_offset: 0,
            uncompressed_length: tar.len() as u64,
        }],
        entries: records,
    };
    write(
        block,
        at,
        &format!(".blocks/packages/{version}.tar.zst"),
        package,
    )
    .await;
    write(
        block,
        at,
        &format!(".blocks/manifests/{version}.json"),
        manifest.to_json(),
    )
    .await;
    let head = serde_json::json!({"version": version, "updated": "2026-01-01T00:00:00Z"});
    write(
        block,
        at,
        ".blocks/HEAD",
        serde_json::to_vec(&head).unwrap(),
    )
    .await;
    version
}

pub async fn write(block: &dyn StorageBlock, at: &BlockPath, rel: &str, data: Vec<u8>) {
    let path = BlockPath::parse(&at.join(rel)).expect("valid object path");
    block
        .write_path(&path, Bytes::from(data))
        .await
        .expect("raw write");
}

pub async fn read(block: &dyn StorageBlock, at: &BlockPath, rel: &str) -> Vec<u8> {
    let path = BlockPath::parse(&at.join(rel)).expect("valid object path");
    block.read_path(&path).await.expect("raw read").to_vec()
}
