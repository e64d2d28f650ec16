//! Writing a package: a deterministic tar (sorted, fixed mtime/uid/gid, normalized modes),
//! compressed as independent zstd frames that each start at a tar entry boundary.

use std::io::{self, Read, Write};

use sha2::{Digest, Sha256};

use crate::block::EntryKind;
use crate::error::{Error, Result};
use crate::hashcache::Stamp;
use crate::package::manifest::{Frame, ManifestEntry};
use crate::source_tree::SourceEntry;

/// A new frame starts at the first entry boundary after this much uncompressed input.
pub const FRAME_TARGET: u64 = 4 * 1024 * 1024;
/// The zstd level of format-1 packages: zstd's own default, fast with a fair ratio.
pub const DEFAULT_LEVEL: i32 = 3;
/// Bytes of input per zstd worker job.
const JOB_SIZE: u32 = 2 * 1024 * 1024;

/// Where each entry landed, and the frame table.
#[derive(Debug, Clone, Default)]
pub struct PackLayout {
    /// `(frame, uncompressed offset)` per entry, in entry order.
    pub placements: Vec<(u32, u64)>,
    /// The zstd frames of the package, in order.
    pub frames: Vec<Frame>,
    /// Bytes of the compressed package.
    pub package_bytes: u64,
}

/// Packs `entries` (sorted, hashed) into `out` in format 1: one stream of zstd frames, a new
/// one at the first entry boundary after [`FRAME_TARGET`]. A put of format 1 writes it;
/// formats 2 and 3 cut the tar of [`pack_entries`] into frames of their own instead.
pub fn write_package<W: Write>(
    entries: &[SourceEntry],
    level: i32,
    out: W,
    on_bytes: impl FnMut(u64),
) -> Result<PackLayout> {
    let io_err = |e: io::Error| Error::io("writing the package", e);
    let frames = FrameWriter::new(out, level).map_err(io_err)?;
    let (placements, frames) = pack_entries(entries, frames, on_bytes)?;
    let (frames, package_bytes) = frames.finish().map_err(io_err)?;
    Ok(PackLayout {
        placements,
        frames,
        package_bytes,
    })
}

/// The manifest records of `entries`, each with the frame and offset the packer put it at.
pub fn placed(entries: &[SourceEntry], placements: &[(u32, u64)]) -> Vec<ManifestEntry> {
    entries
        .iter()
        .zip(placements)
        .map(|(e, &(frame, offset))| ManifestEntry {
            frame,
            offset,
            ..e.record.clone()
        })
        .collect()
}

/// Where a packer cuts the tar stream into frames.
pub trait FrameCuts: Write {
    /// Called before each entry is written: may end the frame open so far.
    fn before_entry(&mut self, record: &ManifestEntry) -> io::Result<()>;
    /// Called before the end-of-archive blocks.
    fn before_trailer(&mut self) -> io::Result<()>;
    /// `(index of the open frame, uncompressed bytes written so far)`.
    fn position(&self) -> (u32, u64);
    /// Called after [`before_entry`](Self::before_entry) of `entries[at]`: a sink that knows
    /// the frame these entries make (a previous version's, the same bytes) hands it on
    /// unread and returns the index of the first entry after it, with the placements of
    /// those it holds; the packer then reads none of their files.
    fn reuse_at(&mut self, entries: &[SourceEntry], at: usize) -> io::Result<Option<Reused>> {
        let _ = (entries, at);
        Ok(None)
    }
}

/// Entries a sink handed on as a known frame, unread.
#[derive(Debug)]
pub struct Reused {
    /// The index of the first entry after them.
    pub next: usize,
    /// Their `(frame, uncompressed offset)`.
    pub placements: Vec<(u32, u64)>,
}

/// Writes the deterministic tar of `entries` into `sink`; returns each entry's `(frame,
/// uncompressed offset)` and the sink. A file that changed since it was hashed fails the
/// put instead of being stored wrong: a settled file (unchanged for a while before the put
/// began) must still have its scan-time stamp after it is read, since any write moves its
/// ctime; any other file is hashed again while it is read.
pub fn pack_entries<S: FrameCuts>(
    entries: &[SourceEntry],
    sink: S,
    mut on_bytes: impl FnMut(u64),
) -> Result<(Vec<(u32, u64)>, S)> {
    let io_err = |e: io::Error| Error::io("writing the package", e);
    let mut tar = tar::Builder::new(sink);
    let mut placements = Vec::with_capacity(entries.len());
    let mut at = 0;
    while let Some(e) = entries.get(at) {
        let r = &e.record;
        let w = tar.get_mut();
        w.before_entry(r).map_err(io_err)?;
        if let Some(reused) = w.reuse_at(entries, at).map_err(io_err)? {
            placements.extend(reused.placements);
            on_bytes(entries[at..reused.next].iter().map(|e| e.record.size).sum());
            at = reused.next;
            continue;
        }
        at += 1;
        placements.push(w.position());

        let mut h = header_of(r);
        match r.kind {
            EntryKind::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                tar.append_data(&mut h, format!("{}/", r.path), io::empty())
                    .map_err(io_err)?;
            }
            EntryKind::Symlink => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                let target = r.target.as_deref().unwrap_or_default();
                tar.append_link(&mut h, &r.path, target).map_err(io_err)?;
            }
            EntryKind::File => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(r.size);
                let file = std::fs::File::open(&e.fs_path)
                    .map_err(|err| Error::io(format!("reading {}", r.path), err))?;
                let unchanged = if let (true, Some(stamp)) = (e.settled, e.stamp.as_ref()) {
                    let mut reader = CountingReader {
                        inner: (&file).take(r.size),
                        count: 0,
                    };
                    tar.append_data(&mut h, &r.path, &mut reader)
                        .map_err(|err| Error::io(format!("packing {}", r.path), err))?;
                    let after = file
                        .metadata()
                        .map_err(|err| Error::io(format!("reading {}", r.path), err))?;
                    reader.count == r.size && Stamp::of(&after) == *stamp
                } else {
                    let mut reader = HashingReader::new(file.take(r.size));
                    tar.append_data(&mut h, &r.path, &mut reader)
                        .map_err(|err| Error::io(format!("packing {}", r.path), err))?;
                    let (read, sha) = reader.finish();
                    read == r.size && Some(sha) == r.sha256
                };
                if !unchanged {
                    return Err(Error::Backend(format!(
                        "{} changed while it was being packed; put again",
                        r.path
                    )));
                }
                on_bytes(r.size);
            }
        }
    }
    tar.get_mut().before_trailer().map_err(io_err)?;
    let sink = tar.into_inner().map_err(io_err)?;
    Ok((placements, sink))
}

/// The tar header the packer starts `record`'s entry with (its type and size set after).
fn header_of(record: &ManifestEntry) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mode(record.mode);
    h
}

/// Bytes the packer writes for the file `record`: its header (after a GNU long-name record
/// when its path needs one), its data, and the zeros up to the next 512-byte block.
pub fn file_entry_len(record: &ManifestEntry) -> u64 {
    let mut h = header_of(record);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(record.size);
    let mut tar = tar::Builder::new(Counting {
        inner: io::sink(),
        count: 0,
    });
    // The header alone: the data is counted, not written.
    let headers = match tar.append_data(&mut h, &record.path, io::empty()) {
        Ok(()) => tar.get_ref().count,
        // A path tar cannot hold fails the put where the packer writes it.
        Err(_) => 512,
    };
    headers + record.size.div_ceil(512) * 512
}

/// A reader that hashes and counts what passes through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    /// A reader of `inner` that hashes and counts from its first byte.
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// The bytes read and their sha256 (hex).
    pub fn finish(self) -> (u64, String) {
        (self.count, hex::encode(self.hasher.finalize()))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

struct CountingReader<R> {
    inner: R,
    count: u64,
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        Ok(n)
    }
}

struct Counting<W> {
    inner: W,
    count: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A zstd writer that can end the current frame and begin another, recording the table.
struct FrameWriter<W: Write> {
    encoder: Option<zstd::stream::write::Encoder<'static, Counting<W>>>,
    level: i32,
    frames: Vec<Frame>,
    frame_start: (u64, u64),
    uncompressed: u64,
}

impl<W: Write> FrameWriter<W> {
    fn new(out: W, level: i32) -> io::Result<Self> {
        let encoder = new_encoder(
            Counting {
                inner: out,
                count: 0,
            },
            level,
        )?;
        Ok(FrameWriter {
            encoder: Some(encoder),
            level,
            frames: Vec::new(),
            frame_start: (0, 0),
            uncompressed: 0,
        })
    }

    fn cut_if_due(&mut self) -> io::Result<()> {
        if self.uncompressed - self.frame_start.1 < FRAME_TARGET {
            return Ok(());
        }
        let out = self.end_frame()?;
        self.encoder = Some(new_encoder(out, self.level)?);
        Ok(())
    }

    fn end_frame(&mut self) -> io::Result<Counting<W>> {
        let out = self.encoder.take().expect("an open frame").finish()?;
        let frame = Frame {
            offset: self.frame_start.0,
            length: out.count - self.frame_start.0,
            uncompressed_offset: self.frame_start.1,
            uncompressed_length: self.uncompressed - self.frame_start.1,
            sha256: None,
            ..Default::default()
        };
        self.frames.push(frame);
        self.frame_start = (out.count, self.uncompressed);
        Ok(out)
    }

    fn finish(mut self) -> io::Result<(Vec<Frame>, u64)> {
        let mut out = self.end_frame()?;
        out.flush()?;
        Ok((self.frames, out.count))
    }
}

fn new_encoder<W: Write>(
    out: W,
    level: i32,
) -> io::Result<zstd::stream::write::Encoder<'static, W>> {
    let mut enc = zstd::stream::write::Encoder::new(out, level)?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    if threads > 1 {
        enc.multithread(threads)?;
        // Small jobs keep zstd's in-flight buffers (about 3 jobs per worker) to a few MiB.
        enc.set_parameter(zstd::stream::raw::CParameter::JobSize(JOB_SIZE))?;
    }
    Ok(enc)
}

impl<W: Write> FrameCuts for FrameWriter<W> {
    fn before_entry(&mut self, _: &ManifestEntry) -> io::Result<()> {
        self.cut_if_due()
    }
    fn before_trailer(&mut self) -> io::Result<()> {
        Ok(())
    }
    fn position(&self) -> (u32, u64) {
        (self.frames.len() as u32, self.uncompressed)
    }
}

impl<W: Write> Write for FrameWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.encoder.as_mut().expect("an open frame").write(buf)?;
        self.uncompressed += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hashcache::{HashCache, RACY_MARGIN};
    use crate::source_tree::{ScanOptions, SourceTree};

    fn scanned(root: &std::path::Path) -> SourceTree {
        let mut tree = SourceTree::scan(root, &ScanOptions::default()).unwrap();
        tree.hash_files_cached(&HashCache::disabled()).unwrap();
        tree
    }

    #[test]
    fn a_file_changed_after_hashing_fails_the_put_whether_settled_or_not() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("old.txt"), b"settled content").unwrap();
        std::thread::sleep(RACY_MARGIN + std::time::Duration::from_millis(100));
        std::fs::write(dir.path().join("new.txt"), b"fresh content").unwrap();

        let tree = scanned(dir.path());
        let settled: Vec<bool> = tree.entries.iter().map(|e| e.settled).collect();
        assert_eq!(settled, [false, true], "new.txt is racy, old.txt settled");
        write_package(&tree.entries, DEFAULT_LEVEL, io::sink(), |_| {}).expect("unchanged");

        // Same sizes, other bytes: only the stamp (settled) or the hash (racy) can tell.
        for (name, other) in [
            ("old.txt", b"SETTLED CONTENT"),
            ("new.txt", b"FRESH CONTENTS!"),
        ] {
            let tree = scanned(dir.path());
            std::fs::write(dir.path().join(name), &other[..tree_size(&tree, name)]).unwrap();
            let err = write_package(&tree.entries, DEFAULT_LEVEL, io::sink(), |_| {})
                .expect_err("a file changed between hashing and packing");
            assert!(err.to_string().contains("changed while"), "{name}: {err}");
        }
    }

    fn tree_size(tree: &SourceTree, name: &str) -> usize {
        tree.entries
            .iter()
            .find(|e| e.record.path == name)
            .map(|e| e.record.size as usize)
            .unwrap()
    }
}
