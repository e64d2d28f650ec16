//! The version record: who published a version, why, and from which source. It lives inside
//! the manifest and describes the content; it never changes the version id, which stays a
//! function of the tree alone.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A label key may be at most this long, a value or message at most [`MAX_TEXT`].
pub const MAX_LABEL_KEY: usize = 128;
/// Bytes of a message, an author or a label value.
pub const MAX_TEXT: usize = 4096;
/// Labels one version may carry.
pub const MAX_LABELS: usize = 64;

/// What a put records about a version besides its files.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionRecord {
    /// Why the version was published (`put --message`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// `user@host` unless given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// Free `key=value` labels (`put --label`), for people and tools to search by.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Where the tree came from, when it was inside a git work tree.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceInfo>,
}

/// The git provenance of a put tree.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceInfo {
    /// The commit id `HEAD` pointed at.
    pub commit: String,
    /// The branch checked out; `None` on a detached HEAD.
    #[serde(default)]
    pub branch: Option<String>,
    /// The work tree had changes not committed (ignored files do not count).
    #[serde(default)]
    pub dirty: bool,
    /// The `origin` remote's URL, credentials removed.
    #[serde(default)]
    pub origin: Option<String>,
}

impl VersionRecord {
    /// Whether nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self == &VersionRecord::default()
    }

    /// Checks the sizes and characters of what a user typed, so a record stays small and
    /// prints on one line per field.
    pub fn validate(&self) -> Result<()> {
        let text = |what: &str, s: &str| -> Result<()> {
            if s.len() > MAX_TEXT {
                return Err(Error::Usage(format!(
                    "{what} is longer than {MAX_TEXT} bytes"
                )));
            }
            if s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
                return Err(Error::Usage(format!("{what} holds control characters")));
            }
            Ok(())
        };
        if let Some(m) = &self.message {
            text("the message", m)?;
        }
        if let Some(a) = &self.author {
            text("the author", a)?;
            if a.contains('\n') {
                return Err(Error::Usage("the author must be one line".into()));
            }
        }
        if self.labels.len() > MAX_LABELS {
            return Err(Error::Usage(format!(
                "at most {MAX_LABELS} labels may be given"
            )));
        }
        for (k, v) in &self.labels {
            parse_label_key(k)?;
            text(&format!("label {k}"), v)?;
        }
        Ok(())
    }
}

fn parse_label_key(key: &str) -> Result<()> {
    let ok = !key.is_empty()
        && key.len() <= MAX_LABEL_KEY
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b'/'));
    if ok {
        Ok(())
    } else {
        Err(Error::Usage(format!(
            "label key `{}` must be 1 to {MAX_LABEL_KEY} characters of letters, digits, `_`, `-`, `.` and `/`",
            key.escape_debug()
        )))
    }
}

/// `KEY=VALUE` as `--label` takes it.
pub fn parse_label(s: &str) -> Result<(String, String)> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| Error::Usage(format!("label `{s}` is not KEY=VALUE")))?;
    parse_label_key(k)?;
    Ok((k.to_string(), v.to_string()))
}

/// `user@host` of this process, the author a put records unless told otherwise.
pub fn default_author() -> String {
    let user = ["USER", "LOGNAME", "USERNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "unknown".into());
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    if host.is_empty() {
        user
    } else {
        format!("{user}@{host}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_record_serializes_to_nothing_and_old_json_parses() {
        let r = VersionRecord::default();
        assert_eq!(serde_json::to_string(&r).unwrap(), "{}");
        let r: VersionRecord = serde_json::from_str("{}").unwrap();
        assert!(r.is_empty());
        let r: VersionRecord =
            serde_json::from_str(r#"{"message":"m","source":{"commit":"abc"}}"#).unwrap();
        assert_eq!(r.source.unwrap().branch, None);
    }

    #[test]
    fn labels_are_checked() {
        assert_eq!(
            parse_label("team=data=eng").unwrap(),
            ("team".into(), "data=eng".into())
        );
        for bad in ["novalue", "=x", "a b=c", "k\n=v"] {
            assert_eq!(parse_label(bad).unwrap_err().exit_code(), 2, "{bad}");
        }
        let mut r = VersionRecord::default();
        r.labels.insert("k".into(), "a\u{1b}[31m".into());
        assert!(r.validate().is_err());
        r.labels.clear();
        r.message = Some("two\nlines".into());
        r.validate().unwrap();
        r.author = Some("a\nb".into());
        assert!(r.validate().is_err());
    }

    #[test]
    fn the_default_author_names_the_user() {
        let a = default_author();
        assert!(!a.is_empty() && !a.contains('\n'), "{a:?}");
    }
}

#[cfg(test)]
mod manifest_tests {
    use super::*;
    use crate::block::EntryKind;
    use crate::package::manifest::{Frame, ManifestEntry, PackageManifest, Totals, version_id};

    #[test]
    fn a_record_does_not_change_the_version_id() {
        let entries = vec![ManifestEntry {
            path: "a".into(),
            kind: EntryKind::Dir,
            mode: 0o755,
            size: 0,
            sha256: None,
            target: None,
            frame: 0,
            offset: 0,
        }];
        let version = version_id(&entries);
        let mut m = PackageManifest {
            format: 1,
            version: version.clone(),
            created: "2026-01-01T00:00:00Z".into(),
            compression: "zstd".into(),
            totals: Totals::count(&entries, 10),
            frames: vec![Frame {
                offset: 0,
                length: 10,
                uncompressed_offset: 0,
                uncompressed_length: 512,
                sha256: None,
                pack: None,
                pack_offset: None,
            }],
            entries,
            record: None,
        };
        let plain = m.to_json();
        assert!(!String::from_utf8_lossy(&plain).contains("record"));
        m.record = Some(VersionRecord {
            message: Some("fix the schedule".into()),
            author: Some("ana@ci".into()),
            labels: [("ticket".to_string(), "OPS-1".to_string())].into(),
            source: Some(SourceInfo {
                commit: "0".repeat(40),
                branch: Some("main".into()),
                dirty: false,
                origin: None,
            }),
        });
        let parsed = PackageManifest::parse(&m.to_json(), &version).unwrap();
        assert_eq!(parsed.record, m.record);
        assert_eq!(version_id(&parsed.entries), version);
        // A manifest written before records existed still parses.
        assert_eq!(
            PackageManifest::parse(&plain, &version).unwrap().record,
            None
        );
    }
}
