//! Package format 2: the deterministic tar stream cut into content-defined frames, each
//! compressed on its own and stored under the sha256 of its bytes, so that versions share
//! every frame an edit did not touch.
//!
//! Where the cuts fall depends only on the entries and their bytes:
//! - small entries are grouped; a frame ends before an entry whose path hash picks it
//!   (one in [`GROUP_ODDS`]) once the frame holds [`GROUP_MIN`] bytes, or at [`GROUP_MAX`];
//!   an edit moves at most the cuts around it, since the next picked path cuts again;
//! - a file of [`LARGE_FILE`] bytes or more starts a frame of its own and its data is cut by
//!   FastCDC (the `fastcdc` crate), so an edit inside it changes only the chunks around it;
//! - the end-of-archive blocks are a frame of their own.

use std::io::{self, Write};

use sha2::{Digest, Sha256};

use crate::block::EntryKind;
use crate::package::manifest::ManifestEntry;
use crate::package::tar_stream::FrameCuts;

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

/// Cuts the tar stream into uncompressed frames and hands each to `emit`, in order.
pub struct ContentCuts<F: FnMut(Vec<u8>) -> io::Result<()>> {
    emit: F,
    buf: Vec<u8>,
    emitted: u32,
    written: u64,
    /// Bytes of a large file still to come, and where they began in `buf`.
    chunking: Option<(u64, usize)>,
}

impl<F: FnMut(Vec<u8>) -> io::Result<()>> ContentCuts<F> {
    /// A cutter that hands each frame to `emit`; write the tar stream into it.
    pub fn new(emit: F) -> Self {
        ContentCuts {
            emit,
            buf: Vec::with_capacity(GROUP_MAX),
            emitted: 0,
            written: 0,
            chunking: None,
        }
    }

    fn cut(&mut self, at: usize) -> io::Result<()> {
        if at == 0 {
            return Ok(());
        }
        let rest = self.buf.split_off(at);
        let mut frame = std::mem::replace(&mut self.buf, rest);
        // The buffer may have held a whole large chunk's worth before this cut: the frame
        // waits in queues to be compressed, and should hold only its own bytes meanwhile
        // (for a buffer this size the allocator gives the tail back without a copy).
        frame.shrink_to_fit();
        self.emitted += 1;
        (self.emit)(frame)
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

impl<F: FnMut(Vec<u8>) -> io::Result<()>> FrameCuts for ContentCuts<F> {
    fn before_entry(&mut self, record: &ManifestEntry) -> io::Result<()> {
        self.finish_large()?;
        let len = self.buf.len();
        if record.kind == EntryKind::File && record.size >= LARGE_FILE {
            self.cut(len)?;
            // The region is counted from the entry's first header byte: a few bytes of a
            // long file's data (its header's worth) may fall into the next frame, which is
            // as deterministic as any other cut.
            self.chunking = Some((record.size, 0));
        } else if (len >= GROUP_MIN && picks(&record.path)) || len >= GROUP_MAX {
            self.cut(len)?;
        }
        Ok(())
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

impl<F: FnMut(Vec<u8>) -> io::Result<()>> ContentCuts<F> {
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

impl<F: FnMut(Vec<u8>) -> io::Result<()>> Write for ContentCuts<F> {
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
        let cuts = ContentCuts::new(|f: Vec<u8>| {
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
}
