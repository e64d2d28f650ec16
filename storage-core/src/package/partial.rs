//! `get --only GLOB`: which entries the globs keep, the frames that hold them, and a reader
//! that keeps, of those frames' unpacked bytes, only the tar records of the kept entries. What
//! comes out is a tar of just those entries, unpacked and verified like a whole version
//! against a manifest of just those entries.

use std::io::{self, Read};
use std::ops::Range;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::error::{Error, Result};
use crate::package::manifest::{Frame, PackageManifest};

/// The globs of `--only`: `*` stays inside one folder, `**` crosses folders.
pub fn globs(patterns: &[String]) -> Result<GlobSet> {
    let mut set = GlobSetBuilder::new();
    for p in patterns {
        let glob = GlobBuilder::new(p.trim_start_matches("./"))
            .literal_separator(true)
            .build()
            .map_err(|e| Error::Usage(format!("--only {p:?} is not a valid glob: {e}")))?;
        set.add(glob);
    }
    set.build()
        .map_err(|e| Error::Usage(format!("--only: {e}")))
}

/// What a partial get reads and unpacks.
#[derive(Debug)]
pub struct Selection {
    /// The version's manifest with only the kept entries: what the unpacking checks.
    pub manifest: PackageManifest,
    /// The frames that hold the kept entries, in order.
    pub frames: Vec<Frame>,
    /// Where the kept entries' tar records lie in the unpacked package, in order.
    pub keep: Vec<Range<u64>>,
}

/// The entries of `manifest` below `subtree` whose path there matches `set`, and the frames
/// that hold them; `None` when no entry matches.
pub fn select(manifest: &PackageManifest, subtree: &str, set: &GlobSet) -> Option<Selection> {
    let end = manifest
        .frames
        .last()
        .map_or(u64::MAX, |f| f.uncompressed_offset + f.uncompressed_length);
    // An entry's record runs from its offset to the next entry's.
    let mut offsets: Vec<u64> = manifest.entries.iter().map(|e| e.offset).collect();
    offsets.sort_unstable();
    offsets.dedup();
    let record_end = |offset: u64| {
        let next = offsets.partition_point(|&o| o <= offset);
        offsets.get(next).copied().unwrap_or(end)
    };
    let mut entries = Vec::new();
    let mut keep: Vec<Range<u64>> = Vec::new();
    for e in &manifest.entries {
        let rel = match subtree {
            "" => Some(e.path.as_str()),
            s => e.path.strip_prefix(s).and_then(|r| r.strip_prefix('/')),
        };
        if rel.is_some_and(|r| set.is_match(r)) {
            entries.push(e.clone());
            keep.push(e.offset..record_end(e.offset));
        }
    }
    if entries.is_empty() {
        return None;
    }
    keep.sort_by_key(|r| r.start);
    let mut needed = vec![false; manifest.frames.len()];
    for r in &keep {
        let first = manifest
            .frames
            .partition_point(|f| f.uncompressed_offset + f.uncompressed_length <= r.start);
        for (i, f) in manifest.frames.iter().enumerate().skip(first) {
            if f.uncompressed_offset >= r.end {
                break;
            }
            needed[i] = true;
        }
    }
    let frames = manifest
        .frames
        .iter()
        .zip(needed)
        .filter(|(_, n)| *n)
        .map(|(f, _)| f.clone())
        .collect();
    Some(Selection {
        manifest: PackageManifest {
            entries,
            ..manifest.clone()
        },
        frames,
        keep,
    })
}

/// Of `inner` (the unpacked bytes of `frames`, one after another), only the bytes inside
/// `keep`: the kept entries' records, a tar of them alone.
pub struct Kept<R> {
    inner: R,
    /// Where each frame's bytes lie in the whole unpacked package.
    segments: Vec<(u64, u64)>,
    segment: usize,
    /// The position in the whole package of the next byte of `inner`...
    at: u64,
    /// ...and how many bytes of its frame follow it.
    left: u64,
    keep: Vec<Range<u64>>,
    next_keep: usize,
    skip: Vec<u8>,
}

impl<R: Read> Kept<R> {
    /// `frames` are what `inner` unpacks (format 1 passes `None`: the whole package).
    pub fn new(inner: R, frames: Option<&[Frame]>, keep: Vec<Range<u64>>) -> Self {
        let segments: Vec<(u64, u64)> = match frames {
            Some(frames) => frames
                .iter()
                .map(|f| (f.uncompressed_offset, f.uncompressed_length))
                .collect(),
            None => vec![(0, u64::MAX)],
        };
        let (at, left) = segments.first().copied().unwrap_or((0, 0));
        Kept {
            inner,
            segments,
            segment: 0,
            at,
            left,
            keep,
            next_keep: 0,
            skip: Vec::new(),
        }
    }

    fn pull(&mut self, into: Option<&mut [u8]>, n: u64) -> io::Result<usize> {
        let n = n.min(self.left) as usize;
        let got = match into {
            Some(buf) => {
                let n = n.min(buf.len());
                self.inner.read(&mut buf[..n])?
            }
            None => {
                self.skip.resize(n.min(256 * 1024), 0);
                let len = self.skip.len();
                self.inner.read(&mut self.skip[..len])?
            }
        };
        if got == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "a frame unpacks to fewer bytes than the manifest says",
            ));
        }
        self.at += got as u64;
        self.left -= got as u64;
        Ok(got)
    }
}

impl<R: Read> Read for Kept<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            let Some(range) = self.keep.get(self.next_keep).cloned() else {
                return Ok(0);
            };
            if self.at >= range.end {
                self.next_keep += 1;
                continue;
            }
            if self.left == 0 {
                self.segment += 1;
                let Some(&(at, left)) = self.segments.get(self.segment) else {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the frames end before the entries they hold",
                    ));
                };
                (self.at, self.left) = (at, left);
                continue;
            }
            if self.at < range.start {
                self.pull(None, range.start - self.at)?;
                continue;
            }
            return self.pull(Some(buf), range.end - self.at);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_keep_folders_apart_unless_double_starred() {
        let set = globs(&["flows/etl/**".into(), "*.toml".into()]).unwrap();
        assert!(set.is_match("flows/etl/a.py"));
        assert!(set.is_match("flows/etl/x/b.py"));
        assert!(!set.is_match("flows/etl2/a.py"));
        assert!(set.is_match("pyproject.toml"));
        assert!(!set.is_match("config/settings.toml"));
        assert!(globs(&["a/[".into()]).is_err());
    }

    #[test]
    fn only_the_kept_ranges_of_the_read_frames_come_through() {
        // Frames of 10 bytes; frames 0 and 2 were read, frame 1 was not.
        let whole: Vec<u8> = (0u8..30).collect();
        let frames: Vec<Frame> = (0..3)
            .map(|i| Frame {
                uncompressed_offset: i * 10,
                uncompressed_length: 10,
                ..Frame::default()
            })
            .collect();
        let read: Vec<u8> = whole[0..10].iter().chain(&whole[20..30]).copied().collect();
        let read_frames = [frames[0].clone(), frames[2].clone()];
        let mut out = Vec::new();
        Kept::new(&read[..], Some(&read_frames[..]), vec![2..5, 8..10, 24..27])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, vec![2, 3, 4, 8, 9, 24, 25, 26]);
        let mut short = Kept::new(&read[..15], Some(&read_frames[..]), vec![24..27, 28..29]);
        assert!(short.read_to_end(&mut Vec::new()).is_err());
    }
}
