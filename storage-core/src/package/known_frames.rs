//! The frames of the previous version that a put can name without reading a file.
//!
//! Where a grouped frame ends depends only on the entries' records (paths, kinds, sizes,
//! modes, link targets: [`cuts_before`]), and its bytes on those records and the files'
//! contents. So when a put's entries from one frame start to the next cut have the same
//! records, sha256 included, as the entries of a frame of the previous version, that frame
//! holds exactly the bytes the put would cut: the put names it and reads none of those
//! files. The sha256 comes from hashing (or the stat cache), so the version stored is the
//! tree as hashed, as it always was. A large file's frames are cut by content, but they hold
//! its entry alone: the same record, sha256 included, makes the same frames, named too.

use std::collections::HashMap;
use std::sync::Arc;

use crate::block::EntryKind;
use crate::package::cuts::{cuts_before, is_large};
use crate::package::manifest::{Frame, ManifestEntry, PackageManifest};
use crate::package::tar_stream::file_entry_len;
use crate::source_tree::SourceEntry;

/// A frame of the previous version, named without reading its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownFrame {
    /// The sha256 of its compressed bytes.
    pub sha256: String,
    /// Bytes of the compressed frame.
    pub length: u64,
    /// Bytes of the frame once decompressed.
    pub uncompressed: u64,
}

/// The previous version's entries and the frames a put may name.
pub struct KnownFrames {
    previous: Arc<PackageManifest>,
    by_path: HashMap<String, usize>,
    usable: Vec<bool>,
}

impl KnownFrames {
    /// The frames of `previous` (a format-2 or format-3 manifest) for which `usable` says
    /// the put may name them (a pack it keeps, a frame the store holds).
    pub fn new(
        previous: &Arc<PackageManifest>,
        usable: impl Fn(&str) -> bool,
    ) -> Option<KnownFrames> {
        if !Frame::named_in(previous.format) {
            return None;
        }
        let usable = previous
            .frames
            .iter()
            .map(|f| f.sha256.as_deref().is_some_and(&usable))
            .collect();
        let by_path = previous
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.path.clone(), i))
            .collect();
        Some(KnownFrames {
            previous: previous.clone(),
            by_path,
            usable,
        })
    }

    /// The frame that `entries[at..]` would make if a frame starts at `entries[at]`, when the
    /// previous version has it: how many entries it holds, their offsets in it, and the
    /// frame.
    pub fn frame_at(
        &self,
        entries: &[SourceEntry],
        at: usize,
    ) -> Option<(usize, Vec<u64>, KnownFrame)> {
        let first = &entries.get(at)?.record;
        let &p = self.by_path.get(&first.path)?;
        let k = self.previous.entries[p].frame as usize;
        let frame = self.previous.frames.get(k)?;
        // The previous frame must start with this entry's first header byte...
        if !self.usable[k] || self.previous.entries[p].offset != frame.uncompressed_offset {
            return None;
        }
        let mut offsets = Vec::new();
        for (q, old) in self.previous.entries.iter().enumerate().skip(p) {
            if old.frame as usize != k {
                break;
            }
            let new = &entries.get(at + (q - p))?.record;
            if !same_bytes(old, new) || is_large(new) {
                return None;
            }
            offsets.push(old.offset - frame.uncompressed_offset);
        }
        let count = offsets.len();
        let end = frame.uncompressed_offset + frame.uncompressed_length;
        // ...and end where the next entry starts (or the end-of-archive frame does)...
        let ends_whole = match self.previous.entries.get(p + count) {
            Some(next) => next.offset == end,
            None => self
                .previous
                .frames
                .get(k + 1)
                .is_some_and(|t| t.uncompressed_offset == end),
        };
        // ...and this put must cut there too.
        let cut_here = entries
            .get(at + count)
            .is_none_or(|next| cuts_before(frame.uncompressed_length as usize, &next.record));
        (ends_whole && cut_here).then(|| {
            let known = KnownFrame {
                sha256: frame.sha256.clone().expect("a named frame"),
                length: frame.length,
                uncompressed: frame.uncompressed_length,
            };
            (count, offsets, known)
        })
    }
}

impl KnownFrames {
    /// The frames of the large file `entries[at]` when the previous version has the same
    /// record and its frames hold that entry alone, from its first header byte to its
    /// padding (a version cut before they did holds a few of its bytes in the next frame:
    /// none then).
    pub fn large_at(&self, entries: &[SourceEntry], at: usize) -> Option<Vec<KnownFrame>> {
        let record = &entries.get(at)?.record;
        let &p = self.by_path.get(&record.path)?;
        let old = &self.previous.entries[p];
        if !is_large(record) || !same_bytes(old, record) {
            return None;
        }
        let end = old.offset + file_entry_len(record);
        let mut frames = Vec::new();
        let mut at_byte = old.offset;
        for (k, f) in self
            .previous
            .frames
            .iter()
            .enumerate()
            .skip(old.frame as usize)
        {
            if at_byte >= end {
                break;
            }
            if f.uncompressed_offset != at_byte || !self.usable[k] {
                return None;
            }
            at_byte += f.uncompressed_length;
            frames.push(KnownFrame {
                sha256: f.sha256.clone()?,
                length: f.length,
                uncompressed: f.uncompressed_length,
            });
        }
        (at_byte == end && !frames.is_empty()).then_some(frames)
    }
}

/// Whether two records make the same tar bytes: everything the header and data come from.
fn same_bytes(old: &ManifestEntry, new: &ManifestEntry) -> bool {
    old.path == new.path
        && (new.kind != EntryKind::File || new.sha256.is_some())
        && old.kind == new.kind
        && old.mode == new.mode
        && old.size == new.size
        && old.target == new.target
        && old.sha256 == new.sha256
}
