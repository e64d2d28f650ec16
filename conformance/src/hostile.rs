//! Planting hand-made packages in a block, to prove that `get` refuses what it must: raw tar
//! headers (so names like `../x` and hard links can be written at all) and a manifest that
//! is otherwise consistent.

use bytes::Bytes;
use storage_core::package::manifest::{Frame, ManifestEntry, PackageManifest, Totals, version_id};
use storage_core::{BlockPath, EntryKind, StorageBlock};

/// One raw tar entry. A name or link of 100 bytes or more goes into a GNU long-name record
/// before it, as GNU tar writes it.
pub struct RawEntry {
    pub name: Vec<u8>,
    pub kind: tar::EntryType,
    pub data: Vec<u8>,
    pub link: Option<Vec<u8>>,
    /// The size the header claims, when it is not the data's.
    pub declared_size: Option<u64>,
}

impl RawEntry {
    pub fn file(name: &str, data: &[u8]) -> Self {
        RawEntry {
            name: name.as_bytes().to_vec(),
            kind: tar::EntryType::Regular,
            data: data.to_vec(),
            link: None,
            declared_size: None,
        }
    }
    pub fn dir(name: &str) -> Self {
        RawEntry {
            name: format!("{name}/").into_bytes(),
            kind: tar::EntryType::Directory,
            data: Vec::new(),
            link: None,
            declared_size: None,
        }
    }
    /// The header claims `size` bytes whatever the data holds.
    pub fn claiming(mut self, size: u64) -> Self {
        self.declared_size = Some(size);
        self
    }
    pub fn link(name: &str, kind: tar::EntryType, target: &str) -> Self {
        RawEntry {
            name: name.as_bytes().to_vec(),
            kind,
            data: Vec::new(),
            link: Some(target.as_bytes().to_vec()),
            declared_size: None,
        }
    }
    pub fn special(name: &str, kind: tar::EntryType) -> Self {
        RawEntry {
            name: name.as_bytes().to_vec(),
            kind,
            data: Vec::new(),
            link: None,
            declared_size: None,
        }
    }
}

/// A manifest record for a regular file with these contents.
pub fn file_record(path: &str, data: &[u8]) -> ManifestEntry {
    ManifestEntry::file(path, data)
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

/// A tar of `entries`, ended as a tar is.
pub fn tar_bytes(entries: &[RawEntry]) -> Vec<u8> {
    let mut out = tar_entries(entries);
    out.extend_from_slice(&[0u8; 1024]);
    out
}

/// The entries' records without the end-of-archive blocks, so more can follow.
pub fn tar_entries(entries: &[RawEntry]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        if e.name.len() >= 100 {
            long_record(&mut out, tar::EntryType::GNULongName, &e.name);
        }
        if let Some(l) = e.link.as_ref().filter(|l| l.len() >= 100) {
            long_record(&mut out, tar::EntryType::GNULongLink, l);
        }
        let size = e.declared_size.unwrap_or(e.data.len() as u64);
        header(&mut out, &e.name, e.kind, size, e.link.as_deref());
        out.extend_from_slice(&e.data);
        pad(&mut out);
    }
    out
}

/// One header block: the name (cut to the 100 bytes a header holds), type, size, link.
pub fn header(
    out: &mut Vec<u8>,
    name: &[u8],
    kind: tar::EntryType,
    size: u64,
    link: Option<&[u8]>,
) {
    let mut h = tar::Header::new_gnu();
    let old = h.as_old_mut();
    let n = name.len().min(100);
    old.name[..n].copy_from_slice(&name[..n]);
    if let Some(l) = link {
        let n = l.len().min(100);
        old.linkname[..n].copy_from_slice(&l[..n]);
    }
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_cksum();
    out.extend_from_slice(h.as_bytes());
}

/// A GNU long-name or long-link record holding `name` and its NUL.
fn long_record(out: &mut Vec<u8>, kind: tar::EntryType, name: &[u8]) {
    header(out, b"././@LongLink", kind, name.len() as u64 + 1, None);
    out.extend_from_slice(name);
    out.push(0);
    pad(out);
}

fn pad(out: &mut Vec<u8>) {
    out.resize(out.len().div_ceil(512) * 512, 0);
}

/// A zstd frame that expands to `len` zero bytes, written by hand as RLE blocks (4 bytes
/// per 128 KiB), so a bomb of many GiB costs little to build and to store.
pub fn zstd_zeros(len: u64) -> Vec<u8> {
    const BLOCK: u64 = 128 * 1024;
    let mut out = 0xFD2F_B528u32.to_le_bytes().to_vec();
    // No content size, no checksum; a window of 2^17 bytes, so RLE blocks of 128 KiB.
    out.extend_from_slice(&[0x00, 7 << 3]);
    if len == 0 {
        out.extend_from_slice(&[1, 0, 0]);
    }
    let mut left = len;
    while left > 0 {
        let n = left.min(BLOCK);
        left -= n;
        let block = u32::from(left == 0) | (1 << 1) | ((n as u32) << 3);
        out.extend_from_slice(&block.to_le_bytes()[..3]);
        out.push(0);
    }
    out
}

/// A zstd skippable frame of `len` bytes: decoders pass over it, so it only makes a package
/// bigger.
pub fn zstd_skippable(len: u32) -> Vec<u8> {
    let mut out = 0x184D_2A50u32.to_le_bytes().to_vec();
    out.extend_from_slice(&len.to_le_bytes());
    out.resize(out.len() + len as usize, 0);
    out
}

/// Writes package, manifest and HEAD at `at` as a put would, returning the version id.
pub async fn plant(
    block: &dyn StorageBlock,
    at: &BlockPath,
    tar: &[u8],
    mut records: Vec<ManifestEntry>,
) -> String {
    let package = zstd::encode_all(tar, 3).expect("zstd in memory");
    records.sort_by(|a, b| a.path.cmp(&b.path));
    plant_package(block, at, package, tar.len() as u64, records).await
}

/// Writes `package` (zstd bytes as they are, declared as one frame of `uncompressed` bytes)
/// with a manifest of `records` (kept in the order given) and HEAD, returning the version.
/// [`plant`] of the tar of `entries` at `at`, below `s`'s base path.
pub async fn plant_entries(
    s: &crate::Subject,
    at: &str,
    entries: &[RawEntry],
    records: Vec<ManifestEntry>,
) -> String {
    plant(s.block.as_ref(), &s.path(at), &tar_bytes(entries), records).await
}

pub async fn plant_package(
    block: &dyn StorageBlock,
    at: &BlockPath,
    package: Vec<u8>,
    uncompressed: u64,
    records: Vec<ManifestEntry>,
) -> String {
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
            uncompressed_length: uncompressed,
            sha256: None,
            ..Default::default()
        }],
        entries: records,
        record: None,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_made_zstd_frames_decode_as_zstd_does() {
        let mut package = zstd_zeros(300 * 1024 + 7);
        package.extend(zstd_skippable(1000));
        package.extend(zstd_zeros(0));
        let plain = zstd::decode_all(&package[..]).expect("valid zstd");
        assert_eq!(plain.len(), 300 * 1024 + 7);
        assert!(plain.iter().all(|b| *b == 0));
    }

    #[test]
    fn long_names_go_into_gnu_records_that_tar_reads() {
        let name = format!("{}/{}.txt", "d".repeat(120), "f".repeat(150));
        let tar = tar_bytes(&[RawEntry::file(&name, b"x")]);
        let mut archive = tar::Archive::new(&tar[..]);
        let entry = archive.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(&entry.path_bytes()[..], name.as_bytes());
    }
}
