//! Safe extraction: a package is unpacked into a fresh staging directory, every entry checked
//! against the manifest (path, kind, size, mode, sha256). Absolute paths, `..`, links that
//! leave the tree, hard links, devices and FIFOs are refused; symlinks are made last, so no
//! entry can be written through one. The decompressed stream is bounded by what the
//! manifest's entries can take up, and long-name records by PATH_MAX, so a zstd bomb or a
//! huge declared size is refused before it fills memory or disk.

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use crate::block::EntryKind;
use crate::error::{Error, Result};
use crate::package::manifest::{
    Frame, ManifestEntry, PackageManifest, is_safe_relative_path, link_stays_inside,
};
use crate::package::tar_stream::HashingReader;

/// Files and bytes written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Extracted {
    /// Files written.
    pub files: u64,
    /// Bytes of those files.
    pub bytes: u64,
    /// Files taken over from the folder being replaced instead of written.
    pub linked: u64,
}

/// Links `old` to `new` when it is a regular file of the record's size and mode whose
/// content (read through the new link) has the record's sha256; otherwise leaves nothing at
/// `new` and says no.
pub(crate) fn link_unchanged(old: &Path, new: &Path, record: &ManifestEntry) -> bool {
    let Ok(meta) = fs::symlink_metadata(old) else {
        return false;
    };
    if !is_file_as_recorded(&meta, record) || fs::hard_link(old, new).is_err() {
        return false;
    }
    let same = has_recorded_content(new, record);
    if !same {
        let _ = fs::remove_file(new);
    }
    same
}

/// Whether `meta` is of a regular file of the record's size and mode.
pub(crate) fn is_file_as_recorded(meta: &fs::Metadata, record: &ManifestEntry) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.is_file() && meta.len() == record.size && meta.permissions().mode() & 0o7777 == record.mode
}

/// Whether the file at `path` holds the record's size of bytes with the record's sha256.
pub(crate) fn has_recorded_content(path: &Path, record: &ManifestEntry) -> bool {
    fs::File::open(path).is_ok_and(|f| {
        let mut reader = HashingReader::new(f);
        io::copy(&mut reader, &mut io::sink()).is_ok() && {
            let (n, sha) = reader.finish();
            n == record.size && Some(&sha) == record.sha256.as_ref()
        }
    })
}

/// `package`, a compressed package, as the tar it holds.
pub fn decompressing(package: impl Read) -> Result<impl Read> {
    zstd::stream::read::Decoder::new(package).map_err(|e| Error::io("starting zstd", e))
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
    on_bytes: impl FnMut(u64),
) -> Result<Extracted> {
    unpack_tar_over(
        decompressing(package)?,
        manifest,
        staging,
        subtree,
        None,
        on_bytes,
    )
}

/// [`unpack_verified`] of an unpacked tar stream, for a `get --replace` too: a file that
/// `previous` (the folder being replaced) already holds with the same size, mode and sha256
/// is linked into staging instead of written (its content hashed through the link first), so
/// only changed files are written. The whole stream is still read and checked.
pub fn unpack_tar_over(
    tar: impl Read,
    manifest: &PackageManifest,
    staging: &Path,
    subtree: &str,
    previous: Option<&Path>,
    on_bytes: impl FnMut(u64),
) -> Result<Extracted> {
    let none = HashMap::new();
    unpack_tar_prefilled(tar, manifest, staging, subtree, previous, &none, on_bytes)
}

/// [`unpack_tar_over`] where the files named in `prefilled` (path → where their data starts
/// in the tar stream) were already written into staging, by position, as their frames
/// landed: their data is checked to lie there and hashed, not written again.
pub fn unpack_tar_prefilled(
    tar: impl Read,
    manifest: &PackageManifest,
    staging: &Path,
    subtree: &str,
    previous: Option<&Path>,
    prefilled: &HashMap<String, u64>,
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
    // The prefilled files took their space already.
    let reserved = manifest
        .entries
        .iter()
        .filter(|e| prefilled.contains_key(&e.path))
        .fold(0u64, |acc, e| acc.saturating_add(e.size));
    check_free_space(manifest, staging, subtree, reserved)?;

    let limit = tar_bound(manifest);
    let overflowed = Rc::new(Cell::new(false));
    let bounded = Bounded {
        inner: tar,
        left: limit,
        overflowed: overflowed.clone(),
    };
    let mut archive = tar::Archive::new(bounded);
    let bomb = || {
        unsafe_archive(format!(
            "it unpacks to more than the {limit} bytes its manifest accounts for"
        ))
    };
    // Raw entries: long-name records are read here, bounded, not by tar into memory.
    let mut long_name: Option<Vec<u8>> = None;
    let mut long_link: Option<Vec<u8>> = None;
    let entries = archive.entries().map_err(corrupt)?.raw(true);
    for entry in entries {
        let mut entry = entry.map_err(|e| or_bomb(&overflowed, bomb, corrupt(e)))?;
        let entry_type = entry.header().entry_type();
        if entry_type.is_gnu_longname() || entry_type.is_gnu_longlink() {
            let slot = if entry_type.is_gnu_longname() {
                &mut long_name
            } else {
                &mut long_link
            };
            let record = read_name_record(&mut entry, slot.is_some())
                .map_err(|e| or_bomb(&overflowed, bomb, e))?;
            *slot = Some(record);
            continue;
        }
        if entry_type.is_pax_local_extensions() || entry_type.is_pax_global_extensions() {
            return Err(unsafe_archive(
                "it holds a pax header, which no package has".into(),
            ));
        }
        let raw = long_name
            .take()
            .unwrap_or_else(|| entry.path_bytes().into_owned());
        let long_target = long_link.take();
        let path = std::str::from_utf8(&raw)
            .map_err(|_| unsafe_archive("an entry name is not UTF-8".into()))?;
        let path = path.strip_suffix('/').unwrap_or(path).to_string();
        if let Some(why) = name_too_long(&path) {
            return Err(unsafe_archive(format!("entry `{}` {why}", shown(&path))));
        }
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
                let target = long_target
                    .or_else(|| entry.link_name_bytes().map(|t| t.into_owned()))
                    .and_then(|t| String::from_utf8(t).ok())
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
                if let Some(&data_start) = prefilled.get(&path) {
                    if entry.raw_file_position() != data_start {
                        return Err(unsafe_archive(format!(
                            "`{path}` is not where its manifest places it"
                        )));
                    }
                    let mut reader = HashingReader::new(&mut entry);
                    let mut buf = vec![0u8; 1 << 20];
                    while reader.read(&mut buf).map_err(corrupt)? > 0 {}
                    let (size, sha) = reader.finish();
                    check_digest(record, size, sha)?;
                    done.files += 1;
                    done.bytes += record.size;
                    on_bytes(record.size);
                    continue;
                }
                let dest = staging.join(&out_rel);
                if let Some(parent) = dest.parent()
                    && !made_dirs.contains(parent)
                {
                    fs::create_dir_all(parent)
                        .map_err(|e| Error::io(format!("creating the folder of {out_rel}"), e))?;
                    made_dirs.insert(parent.to_path_buf());
                }
                if let Some(prev) = previous
                    && link_unchanged(&prev.join(&out_rel), &dest, record)
                {
                    verify_stream(&mut entry, record, io::sink())?;
                    done.files += 1;
                    done.bytes += record.size;
                    done.linked += 1;
                    on_bytes(record.size);
                    continue;
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
    if long_name.is_some() || long_link.is_some() {
        return Err(unsafe_archive(
            "a long-name record at its end names no entry".into(),
        ));
    }
    // What follows the end of the tar is read too, within the bound: a package is refused
    // when it unpacks to more than its entries take up.
    io::copy(&mut archive.into_inner(), &mut io::sink())
        .map_err(|e| or_bomb(&overflowed, bomb, corrupt(e)))?;
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

/// The longest relative path an entry may have: Linux's PATH_MAX less its NUL.
const MAX_PATH: usize = 4095;
/// The longest name one path component may have (NAME_MAX).
const MAX_NAME: usize = 255;
/// Besides the entries: two end-of-archive blocks and a blocking factor's padding.
const TAR_SLACK: u64 = 1024 + 10240;

/// The most bytes a tar of the manifest's entries can take up: per entry a header, GNU
/// long-name records for a long path or link target, and its data in 512-byte blocks.
fn tar_bound(manifest: &PackageManifest) -> u64 {
    let blocks = |n: u64| n.div_ceil(512).saturating_mul(512);
    let name_record = |len: usize| {
        if len >= 100 {
            512 + blocks(len as u64 + 2)
        } else {
            0
        }
    };
    manifest.entries.iter().fold(TAR_SLACK, |acc, e| {
        let link = e.target.as_ref().map_or(0, |t| name_record(t.len()));
        acc.saturating_add(512 + name_record(e.path.len() + 1) + link)
            .saturating_add(blocks(e.size))
    })
}

/// A reader that fails once more than `left` bytes would come through, and says so.
struct Bounded<R> {
    inner: R,
    left: u64,
    overflowed: Rc<Cell<bool>>,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            // One byte more than allowed is enough to know.
            let mut probe = [0u8; 1];
            if self.inner.read(&mut probe)? == 0 {
                return Ok(0);
            }
            self.overflowed.set(true);
            return Err(io::Error::other(
                "the package unpacks to more than declared",
            ));
        }
        let max = buf.len().min(self.left.min(usize::MAX as u64) as usize);
        let n = self.inner.read(&mut buf[..max])?;
        self.left -= n as u64;
        Ok(n)
    }
}

/// The error to report: the bound's, when the stream went past it.
fn or_bomb(overflowed: &Cell<bool>, bomb: impl Fn() -> Error, err: Error) -> Error {
    if overflowed.get() { bomb() } else { err }
}

/// Reads a GNU long-name (or long-link) record, at most PATH_MAX long, up to its first NUL.
fn read_name_record(entry: &mut impl Read, twice: bool) -> Result<Vec<u8>> {
    if twice {
        return Err(unsafe_archive(
            "two long-name records describe one entry".into(),
        ));
    }
    let mut name = Vec::new();
    let read = entry
        .take(MAX_PATH as u64 + 2)
        .read_to_end(&mut name)
        .map_err(corrupt)?;
    if read > MAX_PATH + 1 {
        return Err(unsafe_archive(format!(
            "a long-name record is longer than PATH_MAX ({MAX_PATH} bytes)"
        )));
    }
    if let Some(nul) = name.iter().position(|&b| b == 0) {
        name.truncate(nul);
    }
    Ok(name)
}

/// Why a path cannot be made on Linux, if it cannot: too long, or a component too long.
fn name_too_long(path: &str) -> Option<String> {
    if path.len() > MAX_PATH {
        return Some(format!(
            "is {} bytes long, more than PATH_MAX ({MAX_PATH})",
            path.len()
        ));
    }
    path.split('/')
        .find(|c| c.len() > MAX_NAME)
        .map(|c| format!("has a {}-byte name, more than {MAX_NAME}", c.len()))
}

/// A path for a message: at most 80 characters of it, escaped.
fn shown(path: &str) -> String {
    let mut cut: String = path.chars().take(80).collect();
    if cut.len() < path.len() {
        cut.push('…');
    }
    cut.escape_debug().to_string()
}

/// Refuses, before anything is written, a version whose files need more space than is free
/// where it is unpacked.
pub(crate) fn check_free_space(
    manifest: &PackageManifest,
    staging: &Path,
    subtree: &str,
    reserved: u64,
) -> Result<()> {
    let needed = manifest
        .entries
        .iter()
        .filter(|e| e.kind == EntryKind::File && kept_path(&e.path, subtree).is_some())
        .fold(0u64, |acc, e| acc.saturating_add(e.size))
        .saturating_sub(reserved);
    #[cfg(unix)]
    {
        let Ok(fs) = rustix::fs::statvfs(staging) else {
            return Ok(());
        };
        let free = fs.f_bavail.saturating_mul(fs.f_frsize);
        if needed > free {
            let at = staging.parent().unwrap_or(staging);
            return Err(Error::io(
                format!("unpacking into {}", at.display()),
                io::Error::new(
                    io::ErrorKind::StorageFull,
                    format!(
                        "not enough space: the version holds {needed} bytes of files and {free} bytes are free"
                    ),
                ),
            ));
        }
    }
    let _ = (needed, staging);
    Ok(())
}

/// Creates a new file (never over an existing one) with its final mode, in one call.
pub(crate) fn create_file(path: &Path, mode: u32) -> io::Result<fs::File> {
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

/// Files from this size on are hashed on a second thread while the first unpacks and writes.
const HASH_BESIDE: u64 = 4 * 1024 * 1024;

/// Copies an entry's bytes to `out`, checking its length and sha256 against the record.
pub(crate) fn verify_stream(
    entry: &mut impl Read,
    record: &ManifestEntry,
    mut out: impl Write,
) -> Result<()> {
    if record.size >= HASH_BESIDE {
        let (size, sha) = copy_hashing_beside(entry, &mut out, &record.path)?;
        return check_digest(record, size, sha);
    }
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
    check_digest(record, size, sha)
}

fn check_digest(record: &ManifestEntry, size: u64, sha: String) -> Result<()> {
    if size != record.size || Some(&sha) != record.sha256.as_ref() {
        return Err(Error::Integrity(format!(
            "checksum mismatch for `{}`: the package is corrupt",
            record.path
        )));
    }
    Ok(())
}

/// Copies `entry` to `out` in 1 MiB buffers while a second thread hashes each buffer once
/// it is written (buffers go back for reuse, so at most a few MiB are held). For a large
/// file the sha256 is then no longer added to the unpacking time.
fn copy_hashing_beside(
    entry: &mut impl Read,
    out: &mut impl Write,
    path: &str,
) -> Result<(u64, String)> {
    use sha2::{Digest, Sha256};
    const BUF: usize = 1024 * 1024;
    let (to_hasher, written) = std::sync::mpsc::sync_channel::<Vec<u8>>(4);
    let (give_back, spare) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::scope(|scope| {
        let hasher = scope.spawn(move || {
            let (mut h, mut n) = (Sha256::new(), 0u64);
            for buf in written {
                h.update(&buf);
                n += buf.len() as u64;
                let _ = give_back.send(buf);
            }
            (n, hex::encode(h.finalize()))
        });
        let copied = (|| {
            loop {
                let mut buf = spare.try_recv().unwrap_or_default();
                buf.resize(BUF, 0);
                let mut filled = 0;
                while filled < BUF {
                    match entry.read(&mut buf[filled..]) {
                        Ok(0) => break,
                        Ok(n) => filled += n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(corrupt(e)),
                    }
                }
                if filled == 0 {
                    return out
                        .flush()
                        .map_err(|e| Error::io(format!("writing {path}"), e));
                }
                buf.truncate(filled);
                out.write_all(&buf)
                    .map_err(|e| Error::io(format!("writing {path}"), e))?;
                if to_hasher.send(buf).is_err() {
                    return Err(Error::Backend("the hashing thread stopped".into()));
                }
            }
        })();
        drop(to_hasher);
        let digest = hasher.join().expect("the hashing thread does not panic");
        copied.map(|()| digest)
    })
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

/// One file's bytes from `compressed`, the frames that hold it (the first being `first`),
/// checked against the entry's size and sha256. The error says what is wrong.
pub fn file_in_frames(
    entry: &ManifestEntry,
    first: &Frame,
    compressed: &[u8],
) -> std::result::Result<bytes::Bytes, String> {
    let data =
        zstd::stream::decode_all(compressed).map_err(|e| format!("frame is corrupt: {e}"))?;
    let tail = entry
        .offset
        .checked_sub(first.uncompressed_offset)
        .and_then(|start| data.get(start as usize..))
        .ok_or_else(|| "offset outside its frame".to_string())?;
    let mut archive = tar::Archive::new(tail);
    let mut found = archive
        .entries()
        .and_then(|mut it| it.next().transpose())
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "no entry at its offset".to_string())?;
    let mut out = Vec::with_capacity(entry.size.min(1 << 30) as usize);
    found.read_to_end(&mut out).map_err(|e| e.to_string())?;
    let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&out));
    if Some(&sha) != entry.sha256.as_ref() || out.len() as u64 != entry.size {
        return Err("checksum mismatch: the package is corrupt".into());
    }
    Ok(out.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::package::manifest::{Frame, Totals, version_id};

    fn one_file_manifest(data: &[u8]) -> PackageManifest {
        let entries = vec![ManifestEntry::file("a.txt", data)];
        PackageManifest {
            format: 1,
            version: version_id(&entries),
            created: String::new(),
            compression: "zstd".into(),
            totals: Totals::default(),
            frames: Vec::new(),
            entries,
            record: None,
        }
    }

    fn unpack(package: &[u8], manifest: &PackageManifest) -> Result<Extracted> {
        let outer = tempfile::tempdir().unwrap();
        let staging = outer.path().join("s");
        fs::create_dir(&staging).unwrap();
        unpack_verified(package, manifest, &staging, "", |_| {})
    }

    #[test]
    fn a_package_that_unpacks_past_its_entries_is_refused() {
        let mut tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(2);
        h.set_mode(0o644);
        tar.append_data(&mut h, "a.txt", &b"hi"[..]).unwrap();
        let mut plain = tar.into_inner().unwrap();
        let manifest = one_file_manifest(b"hi");
        let package = zstd::encode_all(&plain[..], 3).unwrap();
        assert_eq!(unpack(&package, &manifest).unwrap().files, 1);
        plain.extend(vec![0u8; 1024 * 1024]);
        let package = zstd::encode_all(&plain[..], 3).unwrap();
        let err = unpack(&package, &manifest).unwrap_err();
        assert_eq!(err.exit_code(), 5);
        assert!(err.to_string().contains("unpacks to more than"), "{err}");
    }

    #[test]
    fn a_large_file_hashed_beside_the_copy_is_verified_byte_for_byte() {
        // Over HASH_BESIDE, and not a whole number of copy buffers.
        let data: Vec<u8> = (0..HASH_BESIDE as usize + 1_234_567)
            .map(|i| (i * 7 + i / 4099) as u8)
            .collect();
        let tar_of = |body: &[u8]| {
            let mut tar = tar::Builder::new(Vec::new());
            let mut h = tar::Header::new_gnu();
            h.set_size(body.len() as u64);
            h.set_mode(0o644);
            tar.append_data(&mut h, "a.txt", body).unwrap();
            zstd::encode_all(&tar.into_inner().unwrap()[..], 1).unwrap()
        };
        let manifest = one_file_manifest(&data);
        let outer = tempfile::tempdir().unwrap();
        let staging = outer.path().join("s");
        fs::create_dir(&staging).unwrap();
        unpack_verified(&tar_of(&data)[..], &manifest, &staging, "", |_| {}).expect("whole");
        assert!(
            fs::read(staging.join("a.txt")).unwrap() == data,
            "bytes differ"
        );

        let mut flipped = data.clone();
        flipped[HASH_BESIDE as usize + 3] ^= 1;
        let err = unpack(&tar_of(&flipped), &manifest).unwrap_err();
        assert_eq!(err.exit_code(), 5);
        assert!(err.to_string().contains("checksum mismatch"), "{err}");
    }

    #[test]
    fn a_long_name_record_past_path_max_is_refused_unread() {
        let mut h = tar::Header::new_gnu();
        h.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
        h.set_entry_type(tar::EntryType::GNULongName);
        h.set_size(1 << 40);
        h.set_cksum();
        let mut plain = h.as_bytes().to_vec();
        plain.extend(vec![b'x'; 64 * 1024]);
        let package = zstd::encode_all(&plain[..], 3).unwrap();
        let err = unpack(&package, &one_file_manifest(b"hi")).unwrap_err();
        assert_eq!(err.exit_code(), 5);
        assert!(err.to_string().contains("PATH_MAX"), "{err}");
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
        let entries: Vec<ManifestEntry> = files
            .iter()
            .map(|(p, d)| ManifestEntry::file(p, d))
            .collect();
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
                sha256: None,
                ..Default::default()
            }],
            entries,
            record: None,
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
