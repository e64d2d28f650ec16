//! Manifests from a hostile store: parsing never panics, and an accepted manifest only has
//! safe, sorted paths and links that stay inside.
#![no_main]

use libfuzzer_sys::fuzz_target;
use storage_core::package::manifest::{PackageManifest, is_safe_relative_path, link_stays_inside};

fuzz_target!(|data: &[u8]| {
    // The version the caller expects is the one the manifest claims, when it claims one.
    let claimed = serde_json_version(data).unwrap_or_else(|| "0".repeat(64));
    if let Ok(m) = PackageManifest::parse(data, &claimed) {
        for pair in m.entries.windows(2) {
            assert!(pair[0].path < pair[1].path);
        }
        for e in &m.entries {
            assert!(is_safe_relative_path(&e.path));
            if let Some(t) = &e.target {
                assert!(link_stays_inside(&e.path, t));
            }
        }
    }
});

fn serde_json_version(data: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(data).ok()?;
    let at = text.find("\"version\":\"")? + 11;
    Some(text[at..].split('"').next()?.to_string())
}
