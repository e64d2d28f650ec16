//! Credentials from the AWS shared files (`~/.aws/credentials`, `~/.aws/config`), for blocks
//! that leave their keys out and run where only a profile is configured. object_store reads
//! the environment variables itself; it does not read these files.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// What a profile provides.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Profile {
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    pub region: Option<String>,
}

/// Reads profile `$AWS_PROFILE` (else `default`) from `$AWS_SHARED_CREDENTIALS_FILE` (else
/// `~/.aws/credentials`) and `$AWS_CONFIG_FILE` (else `~/.aws/config`).
pub fn from_environment() -> Profile {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let file = |var: &str, default: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .unwrap_or_else(|| home.join(".aws").join(default))
    };
    let name = std::env::var("AWS_PROFILE").unwrap_or_else(|_| "default".into());
    load(
        &file("AWS_SHARED_CREDENTIALS_FILE", "credentials"),
        &file("AWS_CONFIG_FILE", "config"),
        &name,
    )
}

pub fn load(credentials: &Path, config: &Path, name: &str) -> Profile {
    let creds = read_section(credentials, name);
    // In the config file every profile but `default` is written `[profile NAME]`.
    let conf_section = if name == "default" {
        name.to_string()
    } else {
        format!("profile {name}")
    };
    let conf = read_section(config, &conf_section);
    let pick = |key: &str| creds.get(key).or_else(|| conf.get(key)).cloned();
    Profile {
        access_key_id: pick("aws_access_key_id"),
        secret_access_key: pick("aws_secret_access_key"),
        session_token: pick("aws_session_token"),
        region: conf.get("region").or_else(|| creds.get("region")).cloned(),
    }
}

/// The `key = value` lines of one `[section]` of an INI file; empty when absent.
fn read_section(path: &Path, section: &str) -> HashMap<String, String> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return HashMap::new();
    };
    let mut inside = false;
    let mut out = HashMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            inside = name.trim() == section;
        } else if inside && let Some((k, v)) = line.split_once('=') {
            out.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn named_profile_reads_keys_and_region() {
        let d = tempfile::tempdir().unwrap();
        let creds = d.path().join("credentials");
        let conf = d.path().join("config");
        std::fs::write(
            &creds,
            "[default]\naws_access_key_id = AKIDDEFAULT\naws_secret_access_key = s1\n\n[ci]\naws_access_key_id=AKIDCI\naws_secret_access_key=s2\naws_session_token = t2\n",
        )
        .unwrap();
        std::fs::write(
            &conf,
            "[default]\nregion = eu-west-1\n[profile ci]\nregion = us-west-2\n",
        )
        .unwrap();
        let ci = load(&creds, &conf, "ci");
        assert_eq!(ci.access_key_id.as_deref(), Some("AKIDCI"));
        assert_eq!(ci.secret_access_key.as_deref(), Some("s2"));
        assert_eq!(ci.session_token.as_deref(), Some("t2"));
        assert_eq!(ci.region.as_deref(), Some("us-west-2"));
        let default = load(&creds, &conf, "default");
        assert_eq!(default.access_key_id.as_deref(), Some("AKIDDEFAULT"));
        assert_eq!(default.region.as_deref(), Some("eu-west-1"));
        assert_eq!(load(&creds, &conf, "missing"), Profile::default());
    }
}
