//! Redaction of credentials in text before it is shown or logged: URL user info, secret
//! query parameters, bearer tokens and given secret values. Pure text functions, so errors
//! can use them without depending on secret values.

/// What `block inspect` and every other display shows instead of a secret.
pub const MASK: &str = "********";

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

/// `user:password@host` outside a URL (as an HTTP client's connection pool prints its key:
/// `("http", ak:secret@127.0.0.1:9000)`) becomes `***@host`.
pub(crate) fn mask_userinfo(text: &str) -> String {
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
pub(crate) fn mask_bearer(text: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

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
