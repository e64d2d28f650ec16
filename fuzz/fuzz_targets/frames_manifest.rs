//! Format-2 and format-3 manifests (zstd-compressed JSON) from a hostile store: parsing
//! never panics or unpacks past its bound, and an accepted manifest names every frame by a
//! valid sha256 (format 3: and a valid pack, at an offset that cannot overflow), has a
//! contiguous frame table and entries a reader can locate without overflow; the ranged
//! reads planned for its frames stay within their limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use storage_core::package::manifest::{FRAMES_FORMAT, PACKS_FORMAT, PackageManifest, is_version_id};
use storage_core::package::packs::{RANGE_MAX, plan_reads};

fuzz_target!(|data: &[u8]| {
    // Raw bytes as the stored (compressed) manifest, and the same bytes compressed, so the
    // JSON parser behind the decompression is reached too.
    let claimed = zstd::decode_all(data)
        .ok()
        .and_then(|json| claimed_version(&json))
        .or_else(|| claimed_version(data))
        .unwrap_or_else(|| "0".repeat(64));
    let packed = zstd::encode_all(data, 1).expect("compressing to memory");
    for bytes in [data, &packed[..]] {
        let Ok(m) = PackageManifest::parse_stored(bytes, true, &claimed) else {
            continue;
        };
        assert!(m.format == FRAMES_FORMAT || m.format == PACKS_FORMAT);
        let mut next = 0u64;
        for f in &m.frames {
            assert!(f.sha256.as_deref().is_some_and(is_version_id));
            assert_eq!(f.offset, next);
            next = f.offset + f.length;
            if m.format == PACKS_FORMAT {
                assert!(f.pack.as_deref().is_some_and(is_version_id));
                assert!(f.pack_offset.unwrap().checked_add(f.length).is_some());
            }
        }
        if m.format == PACKS_FORMAT {
            let frames: Vec<_> = m.frames.iter().enumerate().collect();
            for r in plan_reads(&frames) {
                // One frame longer than the limit is read alone; more never pass it.
                assert!(r.end - r.start <= RANGE_MAX || r.frames.len() == 1);
            }
        }
        for i in 0..m.entries.len() {
            let _ = m.entry_end(i);
            assert!((m.entries[i].frame as usize) < m.frames.len());
        }
    }
});

fn claimed_version(json: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(json).ok()?;
    let at = text.find("\"version\":\"")? + 11;
    Some(text[at..].split('"').next()?.to_string())
}
