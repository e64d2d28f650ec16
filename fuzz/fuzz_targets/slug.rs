//! Slugs from anywhere: parsing never panics, and what parses is normalized and safe.
#![no_main]

use libfuzzer_sys::fuzz_target;
use storage_core::BlockSlug;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(slug) = BlockSlug::parse(text) {
        let path = slug.path.as_str();
        assert!(!path.starts_with('/') && !path.ends_with('/'), "{path:?}");
        assert!(path.split('/').all(|s| s != ".." && s != "."), "{path:?}");
        assert!(!path.contains('\0') && !path.contains("//"), "{path:?}");
        let again = BlockSlug::parse(&slug.to_string()).expect("a parsed slug re-parses");
        assert_eq!(again, slug);
    }
});
