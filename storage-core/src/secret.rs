//! Secret field values: `env:NAME` indirection, masking, and redaction of credentials in text.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// What `block inspect` and every other display shows instead of a secret.
pub const MASK: &str = "********";

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

/// `user:password@host` outside a URL (as an HTTP client's connection pool prints its key:
/// `("http", ak:secret@127.0.0.1:9000)`) becomes `***@host`.
fn mask_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('@') {
        let (before, after) = rest.split_at(at);
        let start = before
            .rfind(|c: char| c.is_whitespace() || "(\"',[{=".contains(c))
            .map_or(0, |i| i + 1);
        let userinfo = &before[start..];
        out.push_str(&before[..start]);
        if userinfo.contains(':') && !userinfo.contains("://") && !userinfo.ends_with("***") {
            out.push_str("***");
        } else {
            out.push_str(userinfo);
        }
        out.push('@');
        rest = &after[1..];
    }
    out.push_str(rest);
    out
}

/// `Bearer <token>` and `Basic <credentials>` (as an `Authorization` header prints) masked.
fn mask_bearer(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut words = text.split_inclusive(char::is_whitespace).peekable();
    while let Some(word) = words.next() {
        out.push_str(word);
        let scheme = word.trim_end().trim_start_matches(['"', '\'']);
        let is_scheme =
            scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("basic");
        if let Some(token) = words.next_if(|_| is_scheme) {
            let end = token
                .find(|c: char| c.is_whitespace() || c == '"' || c == '\'')
                .unwrap_or(token.len());
            // Credentials are long; a short word after "basic" is prose.
            if end >= 8 {
                out.push_str(MASK);
                out.push_str(&token[end..]);
            } else {
                out.push_str(token);
            }
        }
    }
    out
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.env_name() {
            Some(name) => write!(f, "env:{name}"),
            None => f.write_str(MASK),
        }
    }
}

/// Query parameters that carry credentials in the URLs of S3, Azure and GCS.
const SECRET_PARAMS: [&str; 8] = [
    "sig",
    "x-amz-signature",
    "x-amz-credential",
    "x-amz-security-token",
    "token",
    "access_token",
    "password",
    "key",
];

/// Removes credentials from text before it is shown: the user info of URLs
/// (`https://user:pass@host` → `https://***@host`) and the values of secret query parameters.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("://") {
        let (head, tail) = rest.split_at(pos + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == '>' || c == ')')
            .unwrap_or(tail.len());
        out.push_str(&redact_url(&tail[..end]));
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

fn redact_url(after_scheme: &str) -> String {
    let authority_end = after_scheme.find('/').unwrap_or(after_scheme.len());
    let (authority, path) = after_scheme.split_at(authority_end);
    let authority = match authority.rfind('@') {
        Some(at) => format!("***@{}", &authority[at + 1..]),
        None => authority.to_string(),
    };
    let path = match path.split_once('?') {
        Some((p, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((k, _)) if SECRET_PARAMS.contains(&k.to_ascii_lowercase().as_str()) => {
                        format!("{k}=***")
                    }
                    _ => pair.to_string(),
                })
                .collect();
            format!("{p}?{}", query.join("&"))
        }
        None => path.to_string(),
    };
    format!("{authority}{path}")
}

/// Replaces every occurrence of the given secret values in `text` with the mask; used on
/// error texts of clients that may echo what they were given.
pub fn scrub(text: &str, secrets: &[String]) -> String {
    let mut out = redact(text);
    for s in secrets.iter().filter(|s| s.len() >= 4) {
        out = out.replace(s.as_str(), MASK);
    }
    out
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

    #[test]
    fn redact_strips_user_info_and_signed_query_values() {
        let t = "failed: https://bob:s3cr3t@example.test/repo.git and \
                 http://h/c/b?sv=1&sig=abcdef&se=2 done";
        let r = redact(t);
        assert!(!r.contains("s3cr3t"), "{r}");
        assert!(!r.contains("abcdef"), "{r}");
        assert!(r.contains("https://***@example.test/repo.git"), "{r}");
        assert!(r.contains("sv=1&sig=***&se=2"), "{r}");
    }

    #[test]
    fn scrub_removes_known_values() {
        let r = scrub("auth with tok-12345 failed", &["tok-12345".into()]);
        assert_eq!(r, "auth with ******** failed");
    }
}
