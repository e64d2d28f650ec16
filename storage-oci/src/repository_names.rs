//! Repository names and tags as the OCI distribution spec allows them: a slug path becomes
//! `<repository>/<path>`, and a path no registry can hold is a usage error (exit 2).

use storage_core::{BlockPath, Error, Result};

/// The longest repository name registries accept (distribution's limit).
const MAX_NAME: usize = 255;

/// `<prefix>/<path>` (just `prefix` at the root), checked.
pub fn repository_name(prefix: &str, at: &BlockPath) -> Result<String> {
    let name = if at.is_root() {
        prefix.to_string()
    } else if prefix.is_empty() {
        at.to_string()
    } else {
        format!("{prefix}/{at}")
    };
    check_repository(&name)?;
    Ok(name)
}

/// Components of `[a-z0-9]` runs joined by `.`, `_`, `__` or any number of `-`.
pub fn check_repository(name: &str) -> Result<()> {
    let bad = |why: &str| {
        Error::Usage(format!(
            "`{name}` cannot be an OCI repository name: {why} (use lowercase letters, digits and . _ - between them)"
        ))
    };
    if name.is_empty() {
        return Err(bad("it is empty"));
    }
    if name.len() > MAX_NAME {
        return Err(bad("it is longer than 255 characters"));
    }
    for component in name.split('/') {
        if !valid_component(component) {
            return Err(bad(&format!("component `{component}` is not allowed")));
        }
    }
    Ok(())
}

fn valid_component(c: &str) -> bool {
    let alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = c.as_bytes();
    let (Some(&first), Some(&last)) = (bytes.first(), bytes.last()) else {
        return false;
    };
    if !alnum(first) || !alnum(last) {
        return false;
    }
    // Between runs of letters and digits: `.`, `_`, `__`, or one or more `-`.
    let mut i = 0;
    while i < bytes.len() {
        if alnum(bytes[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len() && !alnum(bytes[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = matches!(sep, "." | "_" | "__") || sep.bytes().all(|b| b == b'-');
        if !ok {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slug_paths_map_below_the_prefix() {
        let at = BlockPath::parse("etl/daily").unwrap();
        assert_eq!(repository_name("team", &at).unwrap(), "team/etl/daily");
        assert_eq!(repository_name("team", &BlockPath::root()).unwrap(), "team");
    }

    #[test]
    fn names_a_registry_cannot_hold_are_usage_errors() {
        for bad in ["Upper", "a..b", "-a", "a-", "a___b", "a b", "a+b"] {
            let at = BlockPath::parse(bad).unwrap();
            let e = repository_name("team", &at).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{bad}");
        }
        for good in ["a.b", "a_b", "a__b", "a---b", "get_refuses_x", "v1.2"] {
            let at = BlockPath::parse(good).unwrap();
            assert!(repository_name("team", &at).is_ok(), "{good}");
        }
        let long = BlockPath::parse(&["a".repeat(200), "b".repeat(100)].join("/")).unwrap();
        assert_eq!(repository_name("t", &long).unwrap_err().exit_code(), 2);
    }
}
