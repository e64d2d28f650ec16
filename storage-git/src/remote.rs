//! The remote side of a git block: the URL without its credentials, the credentials libgit2
//! asks for (a token or a password, with the user name each host expects), ls-remote, fetch,
//! and a push that only fast-forwards from the commit it was built on. Every error text is
//! scrubbed of the credentials before anyone sees it. All calls block: callers run them in
//! `spawn_blocking`.

use std::cell::{Cell, RefCell};

use git2::{
    AutotagOption, Cred, CredentialType, Direction, ErrorClass, ErrorCode, FetchOptions, Oid,
    ProxyOptions, PushOptions, Remote, RemoteCallbacks, Repository,
};
use storage_core::error::one_line;
use storage_core::secret::scrub;
use storage_core::{Error, Result, RetryPolicy};

/// Where a block's repository is and how to log in to it.
pub(crate) struct GitRemote {
    /// The URL without user info; safe to show.
    url: String,
    username: String,
    password: Option<String>,
    /// Values scrubbed from every message.
    secrets: Vec<String>,
    /// libgit2 refuses shallow fetches over `file://`.
    shallow: bool,
}

/// How a push ended when it did not fail outright.
pub(crate) enum PushOutcome {
    Pushed,
    /// The branch is no longer at the commit the push was built on: nothing was changed.
    Moved(String),
}

impl GitRemote {
    /// Checks the URL and sets the credentials apart: user info in the URL is used like the
    /// `username` and `token` fields, which win over it.
    pub(crate) fn new(url: &str, username: Option<&str>, token: Option<String>) -> Result<Self> {
        set_timeouts();
        let parsed = url::Url::parse(url).map_err(|_| {
            Error::Usage(format!(
                "url `{}` is not a URL; give https://, http://, git:// or file://",
                scrub(url, &[])
            ))
        })?;
        let scheme = parsed.scheme();
        if !matches!(scheme, "https" | "http" | "git" | "file") {
            return Err(Error::Usage(format!(
                "url scheme {scheme}:// is not supported; give https:// (with a token), http://, git:// or file://"
            )));
        }
        let url_user = (!parsed.username().is_empty()).then(|| decode(parsed.username()));
        let url_password = parsed.password().map(decode);
        let mut clean = parsed.clone();
        // Cannot fail for these schemes: they all have a host or are file URLs.
        let _ = clean.set_username("");
        let _ = clean.set_password(None);
        let password = token.or(url_password.clone());
        let username = username
            .map(str::to_string)
            .or(url_user)
            .unwrap_or_else(|| token_user(parsed.host_str().unwrap_or("")).to_string());
        let mut secrets: Vec<String> = password
            .iter()
            .chain(url_password.iter())
            .cloned()
            .collect();
        secrets.dedup();
        Ok(GitRemote {
            url: clean.to_string(),
            username,
            password,
            secrets,
            shallow: scheme != "file",
        })
    }

    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// The callbacks every connection uses: credentials once (a second request means they
    /// were refused), and no prompt.
    fn callbacks(&self) -> RemoteCallbacks<'_> {
        let mut cb = RemoteCallbacks::new();
        let asked = Cell::new(false);
        cb.credentials(move |_url, _user_from_url, allowed| {
            if asked.replace(true) {
                return Err(auth_error(format!(
                    "authentication failed: the server refused the credentials of user {}",
                    self.username
                )));
            }
            let Some(password) = &self.password else {
                return Err(auth_error(
                    "the server asks for credentials: set the block's token (and username)".into(),
                ));
            };
            if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) {
                Cred::userpass_plaintext(&self.username, password)
            } else if allowed.contains(CredentialType::USERNAME) {
                Cred::username(&self.username)
            } else {
                Err(auth_error(format!(
                    "the server wants credentials of a kind this build does not have ({allowed:?})"
                )))
            }
        });
        cb
    }

    fn proxy() -> ProxyOptions<'static> {
        let mut p = ProxyOptions::new();
        p.auto();
        p
    }

    /// The refs the server advertises (ls-remote), with what they point at.
    pub(crate) fn list(&self) -> Result<Vec<(String, Oid)>> {
        retrying(|| {
            let mut remote = Remote::create_detached(self.url.as_str())
                .map_err(|e| self.error("reading the repository URL", e))?;
            let conn = remote
                .connect_auth(
                    Direction::Fetch,
                    Some(self.callbacks()),
                    Some(Self::proxy()),
                )
                .map_err(|e| self.error("connecting", e))?;
            let heads = conn.list().map_err(|e| self.error("listing refs", e))?;
            Ok(heads
                .iter()
                .map(|h| (h.name().to_string(), h.oid()))
                .collect())
        })
    }

    /// Fetches `refspecs` into `repo`; `depth` 0 is the full history.
    pub(crate) fn fetch(&self, repo: &Repository, refspecs: &[String], depth: i32) -> Result<()> {
        retrying(|| {
            let mut remote = repo
                .remote_anonymous(&self.url)
                .map_err(|e| self.error("reading the repository URL", e))?;
            let mut opts = FetchOptions::new();
            opts.remote_callbacks(self.callbacks())
                .proxy_options(Self::proxy())
                .download_tags(AutotagOption::None)
                .update_fetchhead(false);
            if depth > 0 && self.shallow {
                opts.depth(depth);
            }
            remote
                .fetch(refspecs, Some(&mut opts), None)
                .map_err(|e| self.error("fetching", e))
        })
    }

    /// Pushes `new` to `branch`, only as a fast-forward from `expected` (`None`: the branch
    /// must not exist). The server checks the old value too, so two pushes built on the same
    /// commit cannot both win.
    pub(crate) fn push(
        &self,
        repo: &Repository,
        branch: &str,
        new: Oid,
        expected: Option<Oid>,
    ) -> Result<PushOutcome> {
        let target = format!("refs/heads/{branch}");
        repo.reference(&target, new, true, "blockctl")
            .map_err(|e| Error::Backend(format!("git: {}", e.message())))?;
        let mut remote = repo
            .remote_anonymous(&self.url)
            .map_err(|e| self.error("reading the repository URL", e))?;
        let moved: RefCell<Option<Oid>> = RefCell::new(None);
        let refused: RefCell<Option<String>> = RefCell::new(None);
        let expected_old = expected.unwrap_or(Oid::ZERO_SHA1);
        let mut cb = self.callbacks();
        cb.push_negotiation(|updates| {
            for u in updates {
                if u.dst_refname().is_ok_and(|n| n == target) && u.src() != expected_old {
                    *moved.borrow_mut() = Some(u.src());
                    return Err(git2::Error::new(
                        ErrorCode::NotFastForward,
                        ErrorClass::Reference,
                        "the branch moved",
                    ));
                }
            }
            Ok(())
        });
        cb.push_update_reference(|_name, status| {
            if let Some(s) = status {
                *refused.borrow_mut() = Some(s.to_string());
            }
            Ok(())
        });
        let mut opts = PushOptions::new();
        opts.remote_callbacks(cb).proxy_options(Self::proxy());
        let pushed = remote.push(&[format!("{target}:{target}")], Some(&mut opts));
        drop(opts);
        if let Some(now) = moved.take() {
            let now = if now.is_zero() {
                "was deleted".to_string()
            } else {
                format!("is now at {}", short(&now))
            };
            return Ok(PushOutcome::Moved(format!("branch {branch} {now}")));
        }
        match pushed {
            Ok(()) => {}
            Err(e) if e.code() == ErrorCode::NotFastForward => {
                return Ok(PushOutcome::Moved(self.scrubbed(e.message())));
            }
            Err(e) => return Err(self.error("pushing", e)),
        }
        match refused.take() {
            None => Ok(PushOutcome::Pushed),
            Some(why) => {
                let why = self.scrubbed(&why);
                match refusal(&why) {
                    Refusal::Moved => Ok(PushOutcome::Moved(format!(
                        "the server refused the push: {why}"
                    ))),
                    Refusal::Denied => {
                        Err(Error::Auth(format!("the server refused the push: {why}")))
                    }
                    Refusal::Other => Err(Error::Conflict(format!(
                        "the server refused the push: {why}"
                    ))),
                }
            }
        }
    }

    fn scrubbed(&self, text: &str) -> String {
        one_line(&scrub(text, &self.secrets))
    }

    /// One of our errors for a libgit2 error, its kind from the error's code and class (see
    /// [`failure`]), its text scrubbed of the credentials.
    pub(crate) fn error(&self, what: &str, e: git2::Error) -> Error {
        let msg = format!("{what} {}: {}", self.url, self.scrubbed(e.message()));
        match failure(&e) {
            Failure::Auth => Error::Auth(msg),
            Failure::Certificate => {
                Error::Auth(format!("{msg} (the server's certificate was not trusted)"))
            }
            Failure::Moved => Error::Conflict(msg),
            Failure::NotFound => Error::NotFound(msg),
            Failure::Temporary(kind) => Error::temporary(msg, kind),
            Failure::Other => Error::Backend(msg),
        }
    }
}

/// What a libgit2 failure means for a block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// The credentials were missing or refused, or access was denied.
    Auth,
    /// The server's certificate was not trusted.
    Certificate,
    /// A ref was not where the operation expected it.
    Moved,
    /// The repository or a ref is not there.
    NotFound,
    /// Another try may not meet it: a timeout, a connection that dropped, a 5xx.
    Temporary(Option<std::io::ErrorKind>),
    Other,
}

/// The kind of a libgit2 failure, from its code and class, and for an HTTP answer from its
/// status ([`http_status`]).
fn failure(e: &git2::Error) -> Failure {
    use std::io::ErrorKind as K;
    match (e.code(), e.class()) {
        (ErrorCode::Auth, _) => Failure::Auth,
        (ErrorCode::Certificate, _) => Failure::Certificate,
        (ErrorCode::NotFastForward, _) => Failure::Moved,
        (ErrorCode::NotFound, _) => Failure::NotFound,
        (ErrorCode::Timeout, _) => Failure::Temporary(Some(K::TimedOut)),
        (ErrorCode::Eof, _) => Failure::Temporary(Some(K::UnexpectedEof)),
        // Sockets: a connection reset, a broken pipe, a failed read or write.
        (_, ErrorClass::Net) => Failure::Temporary(None),
        (_, ErrorClass::Http) => match http_status(e) {
            Some(401 | 403) => Failure::Auth,
            Some(404) => Failure::NotFound,
            Some(408 | 429 | 500..=599) => Failure::Temporary(None),
            _ => Failure::Other,
        },
        _ => Failure::Other,
    }
}

/// The status of an HTTP answer libgit2 did not expect. libgit2 keeps no status field: it
/// reports the status only in its message (`unexpected http status code: 404`, class Http,
/// code GenericError), so this is the one place the git backend reads a message to decide a
/// kind, and it reads only that number.
fn http_status(e: &git2::Error) -> Option<u16> {
    if e.class() != ErrorClass::Http {
        return None;
    }
    e.message()
        .strip_prefix("unexpected http status code: ")?
        .trim()
        .parse()
        .ok()
}

/// What the server meant by refusing a ref in its push report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// The branch moved or was locked by another push: build on the new tip and try again.
    Moved,
    /// A hook or a rule of the server forbids the push.
    Denied,
    Other,
}

/// The server's reason for refusing a ref. The git protocol's report (`ng <ref> <reason>`)
/// carries the reason as free text and nothing else, and libgit2 hands it on as it is; so
/// this, with [`http_status`], is where the git backend reads text for a kind. The words are
/// those of git's receive-pack and of the hosts' hooks.
fn refusal(why: &str) -> Refusal {
    let lower = why.to_ascii_lowercase();
    let moved = [
        "non-fast-forward",
        "fetch first",
        "stale",
        "lock",
        "failed to update",
    ];
    let denied = [
        "denied",
        "declined",
        "protected",
        "permission",
        "not allowed",
    ];
    if moved.iter().any(|m| lower.contains(m)) {
        Refusal::Moved
    } else if denied.iter().any(|m| lower.contains(m)) {
        Refusal::Denied
    } else {
        Refusal::Other
    }
}

/// Gives every connection of the process a connect timeout and a read timeout (libgit2 has
/// none by default), so a dead server is an error that can be retried, not a hang.
fn set_timeouts() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: these write libgit2 globals without a lock; this runs once, when the first
        // git block is built and before it has made any connection.
        unsafe {
            let _ = git2::opts::set_server_connect_timeout_in_milliseconds(10_000);
            let _ = git2::opts::set_server_timeout_in_milliseconds(300_000);
        }
    });
}

/// The user name a host expects beside an access token.
fn token_user(host: &str) -> &'static str {
    let host = host.to_ascii_lowercase();
    if host == "github.com" || host.ends_with(".github.com") {
        "x-access-token"
    } else if host.contains("gitlab") {
        "oauth2"
    } else if host.contains("bitbucket") {
        "x-token-auth"
    } else {
        "git"
    }
}

/// Percent-decodes URL user info (`+` is itself there, not a space).
fn decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| s.to_string())
}

fn auth_error(message: String) -> git2::Error {
    git2::Error::new(ErrorCode::Auth, ErrorClass::Http, message)
}

/// The first 12 hex digits of a commit id, for messages.
pub(crate) fn short(oid: &Oid) -> String {
    oid.to_string().chars().take(12).collect()
}

/// Runs `op` again under [`RetryPolicy::GIT_REMOTE`] while it fails temporarily (a
/// network failure, a timeout, a 5xx).
fn retrying<T>(mut op: impl FnMut() -> Result<T>) -> Result<T> {
    RetryPolicy::GIT_REMOTE.run_blocking(|_| op(), Error::is_temporary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_decides_the_user_beside_a_token() {
        assert_eq!(token_user("github.com"), "x-access-token");
        assert_eq!(token_user("gitlab.example.com"), "oauth2");
        assert_eq!(token_user("bitbucket.org"), "x-token-auth");
        assert_eq!(token_user("git.example.com"), "git");
        let r = GitRemote::new("https://github.com/o/r.git", None, Some("tok-1234".into()));
        assert_eq!(r.unwrap().username, "x-access-token");
        let r = GitRemote::new("https://github.com/o/r.git", Some("me"), Some("tok".into()));
        assert_eq!(r.unwrap().username, "me");
    }

    #[test]
    fn credentials_in_the_url_are_split_off_and_never_shown() {
        let r = GitRemote::new("https://bob:s3cr%2B+t@example.test/r.git", None, None).unwrap();
        assert_eq!(r.url(), "https://example.test/r.git");
        assert_eq!(r.username, "bob");
        assert_eq!(r.password.as_deref(), Some("s3cr++t"));
        let e = r.error(
            "fetching",
            git2::Error::new(
                ErrorCode::Auth,
                ErrorClass::Http,
                "refused https://bob:s3cr++t@example.test (s3cr++t)",
            ),
        );
        assert_eq!(e.exit_code(), 4);
        assert!(!e.to_string().contains("s3cr"), "{e}");
    }

    #[test]
    fn only_http_git_and_file_urls_are_taken() {
        for bad in [
            "ssh://git@example.test/r.git",
            "git@example.test:r.git",
            "r.git",
        ] {
            let e = GitRemote::new(bad, None, None).err().expect(bad);
            assert_eq!(e.exit_code(), 2, "{bad}");
        }
        assert!(
            !GitRemote::new("file:///srv/r.git", None, None)
                .unwrap()
                .shallow
        );
    }

    fn http(status: u16) -> git2::Error {
        let message = format!("unexpected http status code: {status}");
        git2::Error::new(ErrorCode::GenericError, ErrorClass::Http, message)
    }

    #[test]
    fn an_http_status_decides_the_kind_of_a_failure() {
        assert_eq!(http_status(&http(404)), Some(404));
        assert_eq!(failure(&http(401)), Failure::Auth);
        assert_eq!(failure(&http(403)), Failure::Auth);
        assert_eq!(failure(&http(404)), Failure::NotFound);
        assert_eq!(failure(&http(502)), Failure::Temporary(None));
        assert_eq!(failure(&http(400)), Failure::Other);
        // The same words outside an HTTP failure decide nothing.
        let os = git2::Error::new(
            ErrorCode::GenericError,
            ErrorClass::Os,
            "unexpected http status code: 401",
        );
        assert_eq!(http_status(&os), None);
        assert_eq!(failure(&os), Failure::Other);
    }

    #[test]
    fn timeouts_and_dropped_connections_are_temporary_and_retried() {
        let timeout = git2::Error::new(ErrorCode::Timeout, ErrorClass::Net, "timed out");
        assert_eq!(
            failure(&timeout),
            Failure::Temporary(Some(std::io::ErrorKind::TimedOut))
        );
        let reset = git2::Error::new(ErrorCode::GenericError, ErrorClass::Net, "reset");
        let r = GitRemote::new("https://example.test/r.git", None, None).unwrap();
        assert!(r.error("fetching", reset).is_temporary());
        let mut calls = 0;
        let out: Result<()> = retrying(|| {
            calls += 1;
            Err(r.error("fetching", http(503)))
        });
        assert!(out.unwrap_err().is_temporary());
        assert_eq!(calls, RetryPolicy::GIT_REMOTE.tries);
        let mut calls = 0;
        let out: Result<()> = retrying(|| {
            calls += 1;
            Err(r.error("fetching", http(404)))
        });
        assert_eq!(out.unwrap_err().exit_code(), 3);
        assert_eq!(calls, 1);
    }

    #[test]
    fn a_push_refusal_says_whether_the_branch_moved_or_the_push_is_denied() {
        assert_eq!(refusal("failed to lock"), Refusal::Moved);
        assert_eq!(refusal("non-fast-forward"), Refusal::Moved);
        assert_eq!(refusal("pre-receive hook declined"), Refusal::Denied);
        assert_eq!(refusal("protected branch hook declined"), Refusal::Denied);
        assert_eq!(refusal("funny refname"), Refusal::Other);
    }
}
