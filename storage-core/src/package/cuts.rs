//! Package format 2: the deterministic tar stream cut into content-defined frames, each
//! compressed on its own and stored under the sha256 of its bytes, so that versions share
//! every frame an edit did not touch.
//!
//! Where the cuts fall depends only on the entries and their bytes:
//! - small entries are grouped; a frame ends before an entry whose path hash picks it
//!   (one in [`GROUP_ODDS`]) once the frame holds [`GROUP_MIN`] bytes, or at [`GROUP_MAX`];
//!   an edit moves at most the cuts around it, since the next picked path cuts again;
//! - a file of [`LARGE_FILE`] bytes or more starts a frame of its own and its entry (header,
//!   data and padding) is cut by FastCDC (the `fastcdc` crate), so an edit inside it changes
//!   only the chunks around it, and the frame after it starts with the next entry;
//! - the end-of-archive blocks are a frame of their own.

use std::io::{self, Write};

use sha2::{Digest, Sha256};

use crate::block::EntryKind;
use crate::package::known_frames::{KnownFrame, KnownFrames};
use crate::package::manifest::ManifestEntry;
use crate::package::tar_stream::{FrameCuts, Reused, file_entry_len};
use crate::source_tree::SourceEntry;

/// A frame of grouped entries may end once it holds this many bytes...
pub const GROUP_MIN: usize = 64 * 1024;
/// ...before one entry in this many (by path hash)...
pub const GROUP_ODDS: u64 = 16;
/// ...and always ends before it would pass this many.
pub const GROUP_MAX: usize = 1024 * 1024;
/// Files at least this large get frames of their own, cut inside by FastCDC.
pub const LARGE_FILE: u64 = 1024 * 1024;
const CDC_MIN: usize = 256 * 1024;
const CDC_AVG: usize = 1024 * 1024;
const CDC_MAX: usize = 4 * 1024 * 1024;
/// zstd level of every frame (frames are compressed one by one, so each is deterministic).
pub const FRAME_LEVEL: i32 = 3;

/// A frame as the cutter hands it on.
#[derive(Debug)]
pub enum Cut {
    /// Its uncompressed bytes, to seal.
    Raw(Vec<u8>),
    /// A frame of the previous version, the same bytes, named without reading them.
    Known(KnownFrame),
}

/// Cuts the tar stream into uncompressed frames and hands each to `emit`, in order.
pub struct ContentCuts<F: FnMut(Cut) -> io::Result<()>> {
    emit: F,
    buf: Vec<u8>,
    emitted: u32,
    written: u64,
    /// Bytes of a large file still to come, and where they began in `buf`.
    chunking: Option<(u64, usize)>,
    /// The previous version's frames that may be named instead of cut again.
    known: Option<std::sync::Arc<KnownFrames>>,
}

impl<F: FnMut(Cut) -> io::Result<()>> ContentCuts<F> {
    /// A cutter that hands each frame to `emit`; write the tar stream into it.
    pub fn new(emit: F) -> Self {
        ContentCuts {
            emit,
            buf: Vec::with_capacity(GROUP_MAX),
            emitted: 0,
            written: 0,
            chunking: None,
            known: None,
        }
    }

    /// A cutter that, where a frame would hold the same entries as one of `known`, hands on
    /// that frame ([`Cut::Known`]) and lets the packer skip reading its files.
    pub fn reusing(emit: F, known: Option<std::sync::Arc<KnownFrames>>) -> Self {
        ContentCuts {
            known,
            ..ContentCuts::new(emit)
        }
    }

    fn cut(&mut self, at: usize) -> io::Result<()> {
        if at == 0 {
            return Ok(());
        }
        let frame = if at == self.buf.len() {
            // A cut at the end (before an entry): the buffer is the frame, fitted to its
            // bytes (it waits in queues to be compressed), and the next frame starts anew.
            let mut frame = std::mem::take(&mut self.buf);
            frame.shrink_to_fit();
            frame
        } else {
            // A cut inside a large file's data: the frame gets a buffer of its own size and
            // the rest moves to the front of this one, whose pages stay mapped for the next
            // bytes (a buffer per cut cost a 512 MiB put 300,000 page faults).
            let frame = self.buf[..at].to_vec();
            self.buf.drain(..at);
            frame
        };
        self.emitted += 1;
        (self.emit)(Cut::Raw(frame))
    }

    /// Cuts the large file's data held in `buf` into FastCDC chunks: all of it when the
    /// file has ended, else only while a whole maximum-size chunk is buffered.
    fn chunk(&mut self, ended: bool) -> io::Result<()> {
        let Some((_, mut start)) = self.chunking else {
            return Ok(());
        };
        while self.buf.len() > start && (ended || self.buf.len() - start >= CDC_MAX) {
            let data = &self.buf[start..];
            let (_, end) =
                fastcdc::v2020::FastCDC::new(data, CDC_MIN, CDC_AVG, CDC_MAX).cut(0, data.len());
            self.cut(start + end)?;
            start = 0;
        }
        if let Some((_, s)) = self.chunking.as_mut() {
            *s = start.min(self.buf.len());
        }
        Ok(())
    }

    /// Emits what is left; returns how many frames were emitted in all.
    pub fn finish(mut self) -> io::Result<u32> {
        let all = self.buf.len();
        self.cut(all)?;
        Ok(self.emitted)
    }
}

/// Whether a frame of grouped entries may end before `path`: a hash of the path alone, so
/// the same entries cut the same way in every version.
fn picks(path: &str) -> bool {
    let h = Sha256::digest(path.as_bytes());
    u64::from_le_bytes(h[..8].try_into().expect("8 bytes")) % GROUP_ODDS == 0
}

/// Whether `record` gets frames of its own, cut inside by FastCDC.
pub fn is_large(record: &ManifestEntry) -> bool {
    record.kind == EntryKind::File && record.size >= LARGE_FILE
}

/// Whether a frame of grouped entries holding `len` bytes ends before `record`: the whole
/// rule, so that a frame of the previous version can be known to end where it did.
pub fn cuts_before(len: usize, record: &ManifestEntry) -> bool {
    len > 0 && (is_large(record) || (len >= GROUP_MIN && picks(&record.path)) || len >= GROUP_MAX)
}

impl<F: FnMut(Cut) -> io::Result<()>> FrameCuts for ContentCuts<F> {
    fn before_entry(&mut self, record: &ManifestEntry) -> io::Result<()> {
        self.finish_large()?;
        let len = self.buf.len();
        if cuts_before(len, record) {
            self.cut(len)?;
        }
        if is_large(record) {
            // The region is the whole entry, from its first header byte to its padding, so
            // that its frames hold it alone.
            self.chunking = Some((file_entry_len(record), 0));
        }
        Ok(())
    }

    fn reuse_at(&mut self, entries: &[SourceEntry], at: usize) -> io::Result<Option<Reused>> {
        // Only where a frame starts: nothing buffered, and a large file not begun.
        let Some(known) = self.known.clone() else {
            return Ok(None);
        };
        if !self.buf.is_empty() {
            return Ok(None);
        }
        if self.chunking.is_some() {
            let Some(frames) = known.large_at(entries, at) else {
                return Ok(None);
            };
            let placements = vec![(self.emitted, self.written)];
            self.chunking = None;
            for frame in frames {
                self.written += frame.uncompressed;
                self.emitted += 1;
                (self.emit)(Cut::Known(frame))?;
            }
            return Ok(Some(Reused {
                next: at + 1,
                placements,
            }));
        }
        let Some((count, offsets, frame)) = known.frame_at(entries, at) else {
            return Ok(None);
        };
        let placements = offsets
            .iter()
            .map(|o| (self.emitted, self.written + o))
            .collect();
        self.written += frame.uncompressed;
        self.emitted += 1;
        (self.emit)(Cut::Known(frame))?;
        Ok(Some(Reused {
            next: at + count,
            placements,
        }))
    }

    fn before_trailer(&mut self) -> io::Result<()> {
        self.finish_large()?;
        let len = self.buf.len();
        self.cut(len)
    }

    fn position(&self) -> (u32, u64) {
        (self.emitted, self.written)
    }
}

impl<F: FnMut(Cut) -> io::Result<()>> ContentCuts<F> {
    fn finish_large(&mut self) -> io::Result<()> {
        if self.chunking.is_some() {
            self.chunk(true)?;
            self.chunking = None;
            let len = self.buf.len();
            self.cut(len)?;
        }
        Ok(())
    }
}

impl<F: FnMut(Cut) -> io::Result<()>> Write for ContentCuts<F> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = match self.chunking {
            Some((left, _)) if left > 0 => {
                let n = data.len().min(left as usize);
                self.buf.extend_from_slice(&data[..n]);
                if let Some((l, _)) = self.chunking.as_mut() {
                    *l -= n as u64;
                }
                self.chunk(false)?;
                n
            }
            Some(_) => {
                // The file's region is over: chunk it, then go on grouping.
                self.finish_large()?;
                self.buf.extend_from_slice(data);
                data.len()
            }
            None => {
                self.buf.extend_from_slice(data);
                data.len()
            }
        };
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A frame ready to store: its compressed bytes (empty when the store holds them already),
/// their sha256 and length, its uncompressed size and the sha256 of its uncompressed bytes.
#[derive(Debug, Clone)]
pub struct SealedFrame {
    /// The sha256 of the compressed bytes: the frame's object name.
    pub sha256: String,
    /// The compressed bytes.
    pub data: bytes::Bytes,
    /// Bytes of the compressed frame.
    pub length: u64,
    /// Bytes of the frame before compression.
    pub uncompressed: u64,
    /// The sha256 of the uncompressed bytes, the key of the frame ledger.
    pub raw_sha256: String,
}

/// Compresses one frame (deterministically: one zstd frame at [`FRAME_LEVEL`], one thread).
pub fn seal(frame: &[u8]) -> io::Result<SealedFrame> {
    let data = zstd::bulk::compress(frame, FRAME_LEVEL)?;
    Ok(SealedFrame {
        sha256: frame_hash(&data),
        length: data.len() as u64,
        data: data.into(),
        uncompressed: frame.len() as u64,
        raw_sha256: frame_hash(frame),
    })
}

/// The sha256 of a frame's bytes, as its name.
pub fn frame_hash(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hashcache::HashCache;
    use crate::package::tar_stream::pack_entries;
    use crate::source_tree::{ScanOptions, SourceTree};

    fn frames_of(root: &std::path::Path) -> Vec<String> {
        let mut tree = SourceTree::scan(root, &ScanOptions::default()).unwrap();
        tree.hash_files_cached(&HashCache::disabled()).unwrap();
        let mut out = Vec::new();
        let cuts = ContentCuts::new(|f: Cut| {
            let Cut::Raw(f) = f else {
                unreachable!("nothing known")
            };
            out.push(frame_hash(&f));
            Ok(())
        });
        let (_, cuts) = pack_entries(&tree.entries, cuts, |_| {}).unwrap();
        cuts.finish().unwrap();
        out
    }

    fn seeded(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn an_edit_to_one_small_file_changes_about_one_frame() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..600 {
            let p = dir.path().join(format!("d{}/f{i:04}.py", i % 7));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, format!("print({i})\n").repeat(200 + i % 50)).unwrap();
        }
        let before = frames_of(dir.path());
        assert!(before.len() > 5, "{} frames", before.len());
        let edited = dir.path().join("d6/f0300.py");
        let mut text = std::fs::read(&edited).unwrap();
        text.extend_from_slice(&[b'#'; 300]);
        std::fs::write(&edited, text).unwrap();
        let after = frames_of(dir.path());
        let new = after.iter().filter(|f| !before.contains(f)).count();
        assert!(new <= 2, "{new} of {} frames changed", after.len());
    }

    #[test]
    fn an_edit_inside_a_large_file_changes_only_the_chunks_around_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut data = seeded(24 * 1024 * 1024, 7);
        std::fs::write(dir.path().join("big.bin"), &data).unwrap();
        let before = frames_of(dir.path());
        assert!(before.len() >= 8, "{} frames", before.len());
        data[12 * 1024 * 1024] ^= 0xff;
        std::fs::write(dir.path().join("big.bin"), &data).unwrap();
        let after = frames_of(dir.path());
        let new = after.iter().filter(|f| !before.contains(f)).count();
        assert!(new <= 2, "{new} of {} frames changed", after.len());
    }

    /// The manifest a format-3 put of `entries` would write (packs left out), and how many
    /// of its frames were named from `known` rather than cut and sealed.
    fn packed(
        entries: &[SourceEntry],
        known: Option<std::sync::Arc<KnownFrames>>,
    ) -> crate::Result<(crate::package::manifest::PackageManifest, usize)> {
        use crate::package::manifest::{Frame, PACKS_FORMAT, PackageManifest};
        let mut cut = Vec::new();
        let cuts = ContentCuts::reusing(
            |c| {
                cut.push(c);
                Ok(())
            },
            known,
        );
        let (placements, cuts) = pack_entries(entries, cuts, |_| {})?;
        cuts.finish().unwrap();
        let (mut frames, mut named) = (Vec::new(), 0);
        let (mut offset, mut uncompressed_offset) = (0, 0);
        for c in cut {
            let (sha256, length, uncompressed) = match c {
                Cut::Raw(raw) => {
                    let s = seal(&raw).unwrap();
                    (s.sha256, s.length, s.uncompressed)
                }
                Cut::Known(k) => {
                    named += 1;
                    (k.sha256, k.length, k.uncompressed)
                }
            };
            frames.push(Frame {
                offset,
                length,
                uncompressed_offset,
                uncompressed_length: uncompressed,
                sha256: Some(sha256),
                ..Frame::default()
            });
            offset += length;
            uncompressed_offset += uncompressed;
        }
        let manifest = PackageManifest {
            format: PACKS_FORMAT,
            entries: crate::package::tar_stream::placed(entries, &placements),
            frames,
            ..PackageManifest::default()
        };
        Ok((manifest, named))
    }

    fn hashed(root: &std::path::Path) -> Vec<SourceEntry> {
        let mut tree = SourceTree::scan(root, &ScanOptions::default()).unwrap();
        tree.hash_files_cached(&HashCache::disabled()).unwrap();
        tree.entries
    }

    /// Small files in folders, a large file in the middle of them, a link.
    fn project(root: &std::path::Path) {
        for i in 0..600 {
            let p = root.join(format!("d{}/f{i:04}.py", i % 7));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, format!("print({i})\n").repeat(200 + i % 50)).unwrap();
        }
        std::fs::write(root.join("d3/data.bin"), seeded(3 << 20, 7)).unwrap();
        std::os::unix::fs::symlink("f0003.py", root.join("d3/link.py")).unwrap();
    }

    #[test]
    fn a_put_names_the_unchanged_frames_of_the_previous_version_as_cutting_would() {
        let dir = tempfile::tempdir().unwrap();
        project(dir.path());
        let previous = std::sync::Arc::new(packed(&hashed(dir.path()), None).unwrap().0);
        // One small file edited, one added, one removed.
        let edited = dir.path().join("d6/f0300.py");
        let mut text = std::fs::read(&edited).unwrap();
        text.extend_from_slice(&[b'#'; 300]);
        std::fs::write(&edited, text).unwrap();
        std::fs::write(dir.path().join("d2/new.py"), "print('new')\n").unwrap();
        std::fs::remove_file(dir.path().join("d5/f0005.py")).unwrap();
        let entries = hashed(dir.path());

        let (cut, none) = packed(&entries, None).unwrap();
        let known = KnownFrames::new(&previous, |_| true).map(std::sync::Arc::new);
        let (named, count) = packed(&entries, known).unwrap();
        assert_eq!(none, 0);
        assert_eq!(
            named.frames, cut.frames,
            "the same frames, whether named or cut"
        );
        assert_eq!(named.entries, cut.entries, "the same placements");
        // All but the frames around the three changes and the end-of-archive frame: the
        // large file's frames too.
        let frames = cut.frames.len();
        assert!(
            frames > 20 && count + 5 >= frames,
            "{count} of {frames} named"
        );

        // Frames the put may not use (a retired pack) are cut again.
        let known = KnownFrames::new(&previous, |_| false).map(std::sync::Arc::new);
        let (again, count) = packed(&entries, known).unwrap();
        assert_eq!((again.frames, count), (cut.frames, 0));
    }

    #[test]
    fn a_named_frame_reads_none_of_its_files() {
        let dir = tempfile::tempdir().unwrap();
        project(dir.path());
        let entries = hashed(dir.path());
        let previous = std::sync::Arc::new(packed(&entries, None).unwrap().0);
        // Bytes changed after hashing, same size: reading the file would fail the put.
        let file = dir.path().join("d1/f0001.py");
        let len = std::fs::metadata(&file).unwrap().len() as usize;
        std::fs::write(&file, vec![b'x'; len]).unwrap();
        let err = packed(&entries, None).unwrap_err();
        assert!(err.to_string().contains("changed while"), "{err}");
        let known = KnownFrames::new(&previous, |_| true).map(std::sync::Arc::new);
        let (named, _) = packed(&entries, known).unwrap();
        assert_eq!(named.frames, previous.frames, "the version as hashed");
    }
}
