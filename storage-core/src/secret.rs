//! Secret field values: `env:NAME` indirection, masking, and the secrets resolved so far,
//! which log lines are scrubbed of. Redaction of text is [`crate::redaction`]'s (re-exported
//! here).

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
pub use crate::redaction::{MASK, redact, scrub};
use crate::redaction::{mask_bearer, mask_userinfo};

/// A secret field as stored in the registry: either the value itself or `env:NAME`.
/// Its `Debug` never shows the value, so it cannot leak through a `{:?}` or a panic.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// A secret holding `raw` as written: a value, or `env:NAME` resolved only when used.
    pub fn new(raw: impl Into<String>) -> Self {
        Secret(raw.into())
    }

    /// The name of the environment variable this secret reads, if it is an `env:` reference.
    pub fn env_name(&self) -> Option<&str> {
        self.0.strip_prefix("env:")
    }

    /// The value to use: read from the environment for `env:NAME`, else the stored value.
    pub fn resolve(&self, field: &str) -> Result<String> {
        match self.env_name() {
            Some(name) => std::env::var(name).map_err(|_| {
                Error::Usage(format!(
                    "secret field `{field}` reads env:{name}, but {name} is not set"
                ))
            }),
            None => Ok(self.0.clone()),
        }
        .inspect(|value| remember(value))
    }
}

/// The value of the optional secret field `field`: [`Secret::resolve`] where it is set.
pub fn resolve_optional(secret: Option<&Secret>, field: &str) -> Result<Option<String>> {
    secret.map(|s| s.resolve(field)).transpose()
}

/// Every secret value this process has resolved: what [`scrub_known`] masks in log lines.
static KNOWN: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Adds `value` to the secrets [`scrub_known`] masks (values shorter than 4 are not masked:
/// they would mask ordinary text and protect nothing).
pub fn remember(value: &str) {
    if value.len() < 4 {
        return;
    }
    let mut known = KNOWN.lock().unwrap_or_else(|p| p.into_inner());
    if !known.iter().any(|k| k == value) {
        known.push(value.to_string());
    }
}

/// `text` with URL credentials, bearer tokens and every secret value resolved so far
/// masked: what a log line goes through before it is written.
pub fn scrub_known(text: &str) -> String {
    let known = KNOWN.lock().unwrap_or_else(|p| p.into_inner()).clone();
    mask_bearer(&mask_userinfo(&scrub(text, &known)))
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.env_name() {
            Some(name) => write!(f, "env:{name}"),
            None => f.write_str(MASK),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_lose_resolved_secrets_and_tokens() {
        Secret::new("resolved-secret-4821").resolve("key").unwrap();
        let line = r#"GET https://u:p@h/x?sig=abc auth "Bearer eyJhbGci.x" resolved-secret-4821 basic dXNlcg=="#;
        let got = scrub_known(line);
        for gone in [
            "u:p",
            "sig=abc",
            "eyJhbGci",
            "resolved-secret-4821",
            "dXNlcg",
        ] {
            assert!(!got.contains(gone), "{gone} in {got}");
        }
        assert!(got.contains("GET https://***@h/x?sig=***"), "{got}");
        assert_eq!(scrub_known("a basic rule"), "a basic rule");
        assert_eq!(
            scrub_known(r#"checkout for ("http", ak:p%2Bw@127.0.0.1:9) by me@host"#),
            r#"checkout for ("http", ***@127.0.0.1:9) by me@host"#
        );
    }

    #[test]
    fn debug_never_shows_the_value() {
        let s = Secret::new("hunter2-very-secret");
        assert_eq!(format!("{s:?}"), MASK);
        assert_eq!(format!("{:?}", Secret::new("env:MY_KEY")), "env:MY_KEY");
    }

    #[test]
    fn env_reference_is_resolved_at_use() {
        // SAFETY: tests in this module do not read this variable concurrently.
        unsafe { std::env::set_var("STORAGE_CORE_TEST_SECRET", "from-env") };
        let s = Secret::new("env:STORAGE_CORE_TEST_SECRET");
        assert_eq!(s.resolve("password").unwrap(), "from-env");
        let missing = Secret::new("env:STORAGE_CORE_TEST_UNSET_VAR");
        let err = missing.resolve("password").unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("STORAGE_CORE_TEST_UNSET_VAR"));
    }
}
