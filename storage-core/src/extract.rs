//! Safe extraction: a package is unpacked into a fresh staging directory, every entry checked
//! against the manifest (path, kind, size, mode, sha256). Absolute paths, `..`, links that
//! leave the tree, hard links, devices and FIFOs are refused; symlinks are made last, so no
//! entry can be written through one.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use crate::block::EntryKind;
use crate::error::{Error, Result};
use crate::manifest::{ManifestEntry, PackageManifest, is_safe_relative_path, link_stays_inside};
use crate::pack::HashingReader;

/// Files and bytes written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Extracted {
    pub files: u64,
    pub bytes: u64,
}

fn unsafe_archive(why: String) -> Error {
    Error::Integrity(format!("unsafe or corrupt package: {why}"))
}

/// Unpacks the package read from `package` into `staging` (an empty directory the caller
/// owns), keeping only the entries under `subtree` (`""` for all) with that prefix removed.
/// The whole package is read and checked even when only a subtree is kept.
pub fn unpack_verified(
    package: impl Read,
    manifest: &PackageManifest,
    staging: &Path,
    subtree: &str,
    mut on_bytes: impl FnMut(u64),
) -> Result<Extracted> {
    let by_path: HashMap<&str, &ManifestEntry> = manifest
        .entries
        .iter()
        .map(|e| (e.path.as_str(), e))
        .collect();
    let mut seen: HashSet<String> = HashSet::with_capacity(by_path.len());
    let mut links: Vec<(String, String)> = Vec::new();
    let mut done = Extracted::default();
    let mut made_dirs: HashSet<PathBuf> = HashSet::new();

    let decoder =
        zstd::stream::read::Decoder::new(package).map_err(|e| Error::io("starting zstd", e))?;
    let mut archive = tar::Archive::new(decoder);
    let entries = archive.entries().map_err(corrupt)?;
    for entry in entries {
        let mut entry = entry.map_err(corrupt)?;
        let raw = entry.path_bytes().into_owned();
        let path = std::str::from_utf8(&raw)
            .map_err(|_| unsafe_archive("an entry name is not UTF-8".into()))?;
        let path = path.strip_suffix('/').unwrap_or(path).to_string();
        if !is_safe_relative_path(&path) {
            return Err(unsafe_archive(format!(
                "entry `{}` would leave the destination",
                path.escape_debug()
            )));
        }
        let kind = match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => EntryKind::File,
            tar::EntryType::Directory => EntryKind::Dir,
            tar::EntryType::Symlink => EntryKind::Symlink,
            tar::EntryType::Link => return Err(unsafe_archive(format!("hard link `{path}`"))),
            other => return Err(unsafe_archive(format!("`{path}` is a {other:?} entry"))),
        };
        let record = by_path
            .get(path.as_str())
            .ok_or_else(|| unsafe_archive(format!("`{path}` is not in the manifest")))?;
        if record.kind != kind {
            return Err(unsafe_archive(format!(
                "`{path}` is a {kind:?} but the manifest says {:?}",
                record.kind
            )));
        }
        if !seen.insert(path.clone()) {
            return Err(unsafe_archive(format!("`{path}` appears twice")));
        }
        let out_rel = match kept_path(&path, subtree) {
            Some(rel) => rel,
            None => {
                // Outside the requested subtree: still verified, not written.
                if kind == EntryKind::File {
                    verify_stream(&mut entry, record, io::sink())?;
                }
                continue;
            }
        };
        match kind {
            EntryKind::Dir => {
                if !out_rel.is_empty() {
                    fs::create_dir_all(staging.join(&out_rel))
                        .map_err(|e| Error::io(format!("creating {out_rel}"), e))?;
                }
            }
            EntryKind::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .and_then(|t| String::from_utf8(t.into_owned()).ok())
                    .ok_or_else(|| unsafe_archive(format!("symlink `{path}` has no target")))?;
                if Some(&target) != record.target.as_ref() || !link_stays_inside(&out_rel, &target)
                {
                    return Err(unsafe_archive(format!(
                        "symlink `{path}` points outside the destination"
                    )));
                }
                links.push((out_rel, target));
            }
            EntryKind::File => {
                if out_rel.is_empty() {
                    return Err(Error::Usage(format!("`{path}` is a file, not a directory")));
                }
                if entry.header().size().map_err(corrupt)? != record.size {
                    return Err(unsafe_archive(format!(
                        "`{path}` has a size the manifest does not list"
                    )));
                }
                let dest = staging.join(&out_rel);
                if let Some(parent) = dest.parent()
                    && !made_dirs.contains(parent)
                {
                    fs::create_dir_all(parent)
                        .map_err(|e| Error::io(format!("creating the folder of {out_rel}"), e))?;
                    made_dirs.insert(parent.to_path_buf());
                }
                let file = create_file(&dest, record.mode)
                    .map_err(|e| Error::io(format!("creating {out_rel}"), e))?;
                if record.size <= SMALL_FILE {
                    verify_stream(&mut entry, record, file)?;
                } else {
                    let out = io::BufWriter::with_capacity(256 * 1024, file);
                    verify_stream(&mut entry, record, out)?;
                }
                done.files += 1;
                done.bytes += record.size;
                on_bytes(record.size);
            }
        }
    }
    if let Some(missing) = manifest.entries.iter().find(|e| !seen.contains(&e.path)) {
        return Err(Error::Integrity(format!(
            "package is incomplete: `{}` is in the manifest but not in the package",
            missing.path
        )));
    }
    for (rel, target) in links {
        let at = staging.join(&rel);
        if let Some(parent) = at.parent() {
            fs::create_dir_all(parent)
                .map_err(|e| Error::io(format!("creating the folder of {rel}"), e))?;
        }
        make_symlink(&target, &at).map_err(|e| Error::io(format!("creating symlink {rel}"), e))?;
    }
    Ok(done)
}

/// Files up to this size are copied with one write instead of through a buffer.
const SMALL_FILE: u64 = 64 * 1024;

/// Creates a new file (never over an existing one) with its final mode, in one call.
fn create_file(path: &Path, mode: u32) -> io::Result<fs::File> {
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(mode);
    }
    let _ = mode;
    opts.open(path)
}

/// The path an entry takes under the destination, if it lies in `subtree`.
fn kept_path(path: &str, subtree: &str) -> Option<String> {
    if subtree.is_empty() {
        return Some(path.to_string());
    }
    if path == subtree {
        return Some(String::new());
    }
    path.strip_prefix(subtree)?
        .strip_prefix('/')
        .map(str::to_string)
}

/// Copies an entry's bytes to `out`, checking its length and sha256 against the record.
fn verify_stream(entry: &mut impl Read, record: &ManifestEntry, mut out: impl Write) -> Result<()> {
    let mut reader = HashingReader::new(entry);
    if record.size <= SMALL_FILE {
        let mut data = Vec::with_capacity(record.size as usize);
        reader.read_to_end(&mut data).map_err(corrupt)?;
        out.write_all(&data)
            .map_err(|e| Error::io(format!("writing {}", record.path), e))?;
    } else {
        io::copy(&mut reader, &mut out).map_err(corrupt)?;
    }
    out.flush()
        .map_err(|e| Error::io(format!("writing {}", record.path), e))?;
    let (size, sha) = reader.finish();
    if size != record.size || Some(&sha) != record.sha256.as_ref() {
        return Err(Error::Integrity(format!(
            "checksum mismatch for `{}`: the package is corrupt",
            record.path
        )));
    }
    Ok(())
}

fn corrupt(e: io::Error) -> Error {
    Error::Integrity(format!("package is corrupt or truncated: {e}"))
}

fn make_symlink(target: &str, at: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(target, at)
    }
    #[cfg(not(unix))]
    {
        let _ = (target, at);
        Err(io::Error::other(
            "symlinks are not supported on this platform",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{Frame, Totals, version_id};

    fn record(path: &str, data: &[u8]) -> ManifestEntry {
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

    /// A bounded, seeded stand-in for the `archive` fuzz target that runs with every test
    /// run: random byte flips of a valid package never panic and never write outside.
    #[test]
    fn mutated_packages_never_panic_or_escape() {
        let files: Vec<(String, Vec<u8>)> = (0..6)
            .map(|i| {
                (
                    format!("d{i}/f{i}.txt"),
                    vec![b'a' + i as u8; 700 * (i + 1)],
                )
            })
            .collect();
        let mut tar = tar::Builder::new(Vec::new());
        for (p, d) in &files {
            let mut h = tar::Header::new_gnu();
            h.set_size(d.len() as u64);
            h.set_mode(0o644);
            tar.append_data(&mut h, p, &d[..]).unwrap();
        }
        let package = zstd::encode_all(&tar.into_inner().unwrap()[..], 3).unwrap();
        let entries: Vec<ManifestEntry> = files.iter().map(|(p, d)| record(p, d)).collect();
        let manifest = PackageManifest {
            format: 1,
            version: version_id(&entries),
            created: String::new(),
            compression: "zstd".into(),
            totals: Totals::default(),
            frames: vec![Frame {
                offset: 0,
                length: package.len() as u64,
                uncompressed_offset: 0,
                uncompressed_length: 0,
            }],
            entries,
        };
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut refused = 0;
        for _ in 0..300 {
            let mut bytes = package.clone();
            for _ in 0..1 + next() % 4 {
                let at = (next() % bytes.len() as u64) as usize;
                bytes[at] ^= 1 << (next() % 8);
            }
            let outer = tempfile::tempdir().unwrap();
            let staging = outer.path().join("s");
            fs::create_dir(&staging).unwrap();
            if unpack_verified(&bytes[..], &manifest, &staging, "", |_| {}).is_err() {
                refused += 1;
            }
            assert_eq!(
                fs::read_dir(outer.path()).unwrap().count(),
                1,
                "wrote outside staging"
            );
        }
        assert!(
            refused > 250,
            "only {refused} of 300 corrupted packages were refused"
        );
    }
}
