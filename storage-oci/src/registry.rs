//! The registry client: plain requests of the distribution API for manifests, blobs, tags,
//! uploads and deletes (oci-client gives the manifest types), answering Basic and
//! Bearer-token challenges for the pull, push and delete scopes itself; credentials from the
//! block or `~/.docker/config.json`, and registry errors mapped to ours, scrubbed of secrets.
//!
//! What a registry sends is bounded: a manifest is read (by a plain GET with the client's
//! credentials) up to `REGISTRY_MANIFEST_MAX`, a blob never past its descriptor's size
//! ([`Registry::blob_sized`]) or, without one, `REGISTRY_BLOB_MAX`; a token answer up to
//! `REGISTRY_TOKEN_MAX`, any other answer (an upload's, an error's) up to `SMALL_ANSWER_MAX`.
//! An upload location on another origin gets no credentials. Every try of a request
//! ends within the block's `timeout` (a blob's within `transfer_deadline` of its size), and
//! a request with its retries within [`Registry::total_bound`]: twice its deadline plus the
//! pauses between tries ([`RETRIES`]' `most_paused`).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use futures::TryStreamExt;
use http_auth::parser::ChallengeParser;
use oci_client::Reference;
use oci_client::errors::{OciEnvelope, OciErrorCode};
use oci_client::manifest::{OCI_IMAGE_MEDIA_TYPE, OciImageManifest};
use oci_client::secrets::RegistryAuth;
use sha2::{Digest, Sha256};
use storage_core::bounds::{
    Cap, REGISTRY_BLOB_MAX, REGISTRY_MANIFEST_MAX, REGISTRY_TAG_LIST_MAX, REGISTRY_TOKEN_MAX,
    SMALL_ANSWER_MAX, read_capped, read_exact_len, timed_out, transfer_deadline,
};
use storage_core::secret::scrub;
use storage_core::{Error, Result, RetryPolicy};

/// How a request that fails transiently is tried again: 4 tries, pauses of 100, 300 and
/// 900 ms.
pub const RETRIES: RetryPolicy = RetryPolicy::REGISTRY_REQUEST;
/// Tries of a request that may time out: one more after the first timeout.
const TIMED_OUT_TRIES: u32 = 2;

/// Tags asked for per page of a tag list.
const TAG_PAGE: usize = 1000;

/// How long the credentials of a pull or a push (a token from the realm) are reused: well within the
/// lifetime registries give their tokens (five minutes for the distribution registry's token
/// services and Docker Hub's).
const AUTHZ_REUSE: Duration = Duration::from_secs(60);

/// The credentials one request sends (see [`Registry::authz`]).
#[derive(Clone)]
enum Authz {
    /// The block's Basic credentials, if it has any (none for an anonymous block).
    Basic,
    Bearer(String),
}

/// The credentials had for each repository and scope, and when.
type AuthzCache = HashMap<(String, Scope), (Instant, Authz)>;

/// What a request of a repository needs the right to do.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum Scope {
    Pull,
    Push,
}

impl Scope {
    /// The actions of a token's `repository:NAME:ACTIONS` scope.
    fn actions(self) -> &'static str {
        match self {
            Scope::Pull => "pull",
            Scope::Push => "pull,push",
        }
    }
}

/// One blob to read ([`Registry::blob_bounded`]).
struct Blob<'a> {
    url: &'a str,
    /// The hex of its `sha256:` digest.
    hex: &'a str,
    /// Its descriptor's size, when known.
    size: Option<u64>,
    deadline: Duration,
    what: &'a str,
}

/// A registry, with the credentials every request uses.
#[derive(Clone)]
pub struct Registry {
    http: reqwest::Client,
    host: String,
    scheme: &'static str,
    auth: RegistryAuth,
    secrets: Vec<String>,
    /// How long one try of a request may take, first byte to last.
    timeout: Duration,
    /// The credentials of each repository and scope (pull, or pull and push), and when they
    /// were had.
    pulls: Arc<Mutex<AuthzCache>>,
}

/// What a ranged read of a blob got.
#[derive(Debug)]
pub enum Ranged {
    /// The part asked for: the registry honoured the Range header.
    Part(Bytes),
    /// The whole blob, checked against its digest: the registry ignored the Range header.
    Whole(Bytes),
}

/// `sha256:<hex>` of `data`.
pub fn digest_of(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

impl Registry {
    /// A registry client whose every try of a request ends within `timeout` (the block's
    /// `timeout` field, [`crate::timeout_of`]).
    pub fn with_timeout(
        host: &str,
        plain_http: bool,
        auth: RegistryAuth,
        timeout: Duration,
    ) -> Result<Self> {
        let secrets = match &auth {
            RegistryAuth::Basic(_, p) => vec![p.clone()],
            RegistryAuth::Bearer(t) => vec![t.clone()],
            RegistryAuth::Anonymous => Vec::new(),
        };
        let http = reqwest::Client::builder()
            .connect_timeout(timeout)
            .timeout(timeout)
            .build()
            .map_err(|e| Error::Backend(format!("building the registry client: {e}")))?;
        Ok(Registry {
            http,
            host: host.to_string(),
            scheme: if plain_http { "http" } else { "https" },
            auth,
            secrets,
            timeout,
            pulls: Arc::default(),
        })
    }

    /// The longest a request may take with its retries: two tries that time out and the
    /// pauses between tries.
    pub fn total_bound(&self, deadline: Duration) -> Duration {
        deadline * TIMED_OUT_TRIES + RETRIES.most_paused()
    }

    fn anonymous(&self) -> bool {
        matches!(self.auth, RegistryAuth::Anonymous)
    }

    pub fn secrets(&self) -> &[String] {
        &self.secrets
    }

    fn tagged(&self, repo: &str, tag: &str) -> Reference {
        Reference::with_tag(self.host.clone(), repo.to_string(), tag.to_string())
    }

    fn by_digest(&self, repo: &str, digest: &str) -> Reference {
        Reference::with_digest(self.host.clone(), repo.to_string(), digest.to_string())
    }

    /// [`Registry::retried_within`] with every try bounded by the block's `timeout`.
    async fn retried<T, F, Fut>(&self, what: &str, op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        self.retried_within(what, self.timeout, op).await
    }

    /// Runs `op` again under [`RETRIES`] (100 ms, 300 ms, 900 ms) when it failed in a way another
    /// try may not repeat: 5xx answers, resets, timeouts, a registry's 500 or 400 while a
    /// manifest is being deleted, a refusal that may follow a failed auth challenge. Not
    /// found and corrupt answers are final. Every request retried here is idempotent.
    ///
    /// Each try ends within `deadline`; one that times out is tried once more at most, and
    /// all tries together end within [`Registry::total_bound`]`(deadline)`. `what` names the
    /// request in a timeout's message.
    async fn retried_within<T, F, Fut>(
        &self,
        what: &str,
        deadline: Duration,
        mut op: F,
    ) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        let timeouts = AtomicU32::new(0);
        let one_try = |_| {
            let attempt = op();
            let timeouts = &timeouts;
            async move {
                match tokio::time::timeout(deadline, attempt).await {
                    Ok(result) => result,
                    Err(_) => {
                        timeouts.fetch_add(1, Ordering::Relaxed);
                        Err(timed_out(what, deadline))
                    }
                }
            }
        };
        let tries = RETRIES.run(one_try, |e| match e {
            _ if timeouts.load(Ordering::Relaxed) >= TIMED_OUT_TRIES => false,
            Error::Backend(_) | Error::Temporary { .. } => true,
            // A token had for an earlier try may have expired, or the challenge was
            // answered while the registry failed: ask again, with new credentials. (A
            // wrong password is reported about a second later than it could be.)
            Error::Auth(_) => !self.anonymous(),
            _ => false,
        });
        // Tries that fail at once and ones that time out together still end in time.
        let total = self.total_bound(deadline);
        match tokio::time::timeout(total, tries).await {
            Ok(result) => result,
            Err(_) => Err(timed_out(&format!("{what} (with its retries)"), total)),
        }
    }

    /// Every tag of `repo`; none when the repository does not exist. Each page is read up to
    /// [`REGISTRY_TAG_LIST_MAX`].
    pub async fn tags(&self, repo: &str) -> Result<Vec<String>> {
        let mut all = Vec::new();
        let mut last: Option<String> = None;
        loop {
            let listed = self
                .retried(&format!("listing the tags of {repo}"), || async {
                    self.refused(repo, self.tags_once(repo, last.as_deref()).await)
                })
                .await;
            let page = match listed {
                Ok(p) => p,
                Err(Error::NotFound(_)) => return Ok(all),
                Err(e) => return Err(e),
            };
            let n = page.len();
            all.extend(page);
            // The registry pages by name; a short page is the last.
            if n < TAG_PAGE {
                return Ok(all);
            }
            last = all.last().cloned();
        }
    }

    /// One page of `repo`'s tags, after `last`.
    async fn tags_once(&self, repo: &str, last: Option<&str>) -> Result<Vec<String>> {
        let what = format!("the tag list of {repo}");
        let authz = self.pull_authz(repo).await?;
        let url = format!("{}://{}/v2/{repo}/tags/list", self.scheme, self.host);
        let mut request = self.http.get(&url).query(&[("n", TAG_PAGE)]);
        if let Some(last) = last {
            request = request.query(&[("last", last)]);
        }
        let response = self
            .authorized(request, &authz)
            .send()
            .await
            .map_err(|e| self.request_failed(e))?;
        let body = self.answer(response, REGISTRY_TAG_LIST_MAX, &what).await?;
        let page: serde_json::Value = serde_json::from_slice(&body)
            .map_err(|e| Error::Backend(format!("{what} is not JSON: {e}")))?;
        // A repository without tags may answer `"tags": null`.
        Ok(page["tags"]
            .as_array()
            .map(|tags| {
                tags.iter()
                    .filter_map(|t| t.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// The body of a `2xx` answer, read up to `cap`; any other answer is our error for it,
    /// its body read up to [`SMALL_ANSWER_MAX`]: 404 (or a registry's `*_UNKNOWN`) is not
    /// found, 401 and 403 are refused credentials, the rest a backend error.
    async fn answer(&self, response: reqwest::Response, cap: Cap, what: &str) -> Result<Bytes> {
        let status = response.status().as_u16();
        let ok = (200..300).contains(&status);
        let body = body_of(response).map_err(|e| self.request_failed(e));
        let body = match ok {
            true => read_capped(body, cap, what).await?,
            false => {
                let error = format!("the HTTP {status} answer to reading {what}");
                read_capped(body, SMALL_ANSWER_MAX, &error).await?
            }
        };
        if ok {
            return Ok(body);
        }
        let unknown = error_codes(&body).iter().any(|code| {
            matches!(
                code,
                OciErrorCode::ManifestUnknown
                    | OciErrorCode::NameUnknown
                    | OciErrorCode::BlobUnknown
            )
        });
        let text = String::from_utf8_lossy(&body);
        Err(match status {
            404 => Error::NotFound(format!("{what} is missing (HTTP 404)")),
            _ if unknown => Error::NotFound(format!("{what} is missing (HTTP {status})")),
            401 | 403 => Error::Auth(format!(
                "the registry denied access to {what} (HTTP {status})"
            )),
            _ => Error::Backend(format!(
                "the registry answered HTTP {status} to reading {what}: {}",
                scrub(text.trim(), &self.secrets).replace('\n', " ")
            )),
        })
    }

    /// How a pull of `repo` proves who asks: the block's token; else, when the registry
    /// challenges `GET /v2/` for a Bearer token, one from its realm for the pull scope (its
    /// answer read up to [`REGISTRY_TOKEN_MAX`]); else the block's Basic credentials, if any.
    /// oci-client would read the token service's answer whole.
    /// Reused for [`AUTHZ_REUSE`], forgotten when refused ([`Registry::refused`]).
    async fn pull_authz(&self, repo: &str) -> Result<Authz> {
        self.authz(repo, Scope::Pull).await
    }

    /// The credentials of a request of `repo` that needs `scope`, as
    /// [`pull_authz`](Self::pull_authz) has them for a pull.
    async fn authz(&self, repo: &str, scope: Scope) -> Result<Authz> {
        if let RegistryAuth::Bearer(token) = &self.auth {
            return Ok(Authz::Bearer(token.clone()));
        }
        let key = (repo.to_string(), scope);
        let known = self.pulls.lock().ok().and_then(|pulls| {
            let (at, authz) = pulls.get(&key)?;
            (at.elapsed() < AUTHZ_REUSE).then(|| authz.clone())
        });
        if let Some(authz) = known {
            return Ok(authz);
        }
        let authz = self.new_authz(repo, scope).await?;
        if let Ok(mut pulls) = self.pulls.lock() {
            pulls.insert(key, (Instant::now(), authz.clone()));
        }
        Ok(authz)
    }

    /// `result`, having forgotten `repo`'s pull credentials if they were refused: the next
    /// try asks for new ones.
    fn refused<T>(&self, repo: &str, result: Result<T>) -> Result<T> {
        if matches!(result, Err(Error::Auth(_)))
            && let Ok(mut pulls) = self.pulls.lock()
        {
            pulls.retain(|(r, _), _| r != repo);
        }
        result
    }

    async fn new_authz(&self, repo: &str, scope: Scope) -> Result<Authz> {
        let url = format!("{}://{}/v2/", self.scheme, self.host);
        // Only the status and the challenge count: the body is never read.
        let response = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| self.request_failed(e))?;
        let status = response.status();
        if status.is_server_error() {
            return Err(Error::Backend(format!(
                "the registry answered HTTP {} to GET /v2/",
                status.as_u16()
            )));
        }
        match bearer_challenge(response.headers()) {
            Some(mut challenge) => {
                challenge.retain(|(name, _)| name != "scope");
                challenge.push((
                    "scope".into(),
                    format!("repository:{repo}:{}", scope.actions()),
                ));
                Ok(Authz::Bearer(self.token_for(&challenge).await?))
            }
            None => Ok(Authz::Basic),
        }
    }

    /// `request` with the credentials `authz` says to send.
    fn authorized(
        &self,
        request: reqwest::RequestBuilder,
        authz: &Authz,
    ) -> reqwest::RequestBuilder {
        match (authz, &self.auth) {
            (Authz::Bearer(token), _) => request.bearer_auth(token),
            (Authz::Basic, RegistryAuth::Basic(user, pass)) => request.basic_auth(user, Some(pass)),
            _ => request,
        }
    }

    /// The image manifest tagged `tag` (or at a `sha256:` digest) and its digest, checked
    /// against its bytes; `None` when there is none.
    pub async fn manifest(
        &self,
        repo: &str,
        tag_or_digest: &str,
    ) -> Result<Option<(OciImageManifest, String)>> {
        let image = if tag_or_digest.starts_with("sha256:") {
            self.by_digest(repo, tag_or_digest)
        } else {
            self.tagged(repo, tag_or_digest)
        };
        let what = format!("the manifest {repo}:{tag_or_digest}");
        let pulled = self
            .retried(&format!("reading {what}"), || async {
                self.refused(repo, self.manifest_once(&image, &what).await)
            })
            .await;
        let (body, digest) = match pulled {
            Ok(Some(got)) => got,
            Ok(None) | Err(Error::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let actual = digest_of(&body);
        let expected = match tag_or_digest.starts_with("sha256:") {
            true => Some(tag_or_digest.to_string()),
            false => digest,
        };
        if expected.is_some_and(|d| d != actual) {
            return Err(Error::Integrity(format!(
                "the manifest at {tag_or_digest} does not match its digest"
            )));
        }
        let manifest: OciImageManifest = serde_json::from_slice(&body).map_err(|e| {
            Error::Integrity(format!(
                "the manifest at {tag_or_digest} is not an OCI image manifest: {e}"
            ))
        })?;
        Ok(Some((manifest, actual)))
    }

    /// One GET of a manifest with the client's credentials (a token for the pull scope
    /// where the registry asks for one), its body read up to [`REGISTRY_MANIFEST_MAX`]:
    /// the bytes and the digest the registry says they have; `None` when there is none.
    async fn manifest_once(
        &self,
        image: &Reference,
        what: &str,
    ) -> Result<Option<(Bytes, Option<String>)>> {
        let authz = self.pull_authz(image.repository()).await?;
        let url = format!(
            "{}://{}/v2/{}/manifests/{}",
            self.scheme,
            self.host,
            image.repository(),
            image.digest().or(image.tag()).unwrap_or("latest")
        );
        let request = self
            .http
            .get(&url)
            .header(reqwest::header::ACCEPT, OCI_IMAGE_MEDIA_TYPE);
        let response = self
            .authorized(request, &authz)
            .send()
            .await
            .map_err(|e| self.request_failed(e))?;
        let digest = response
            .headers()
            .get("Docker-Content-Digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        match self.answer(response, REGISTRY_MANIFEST_MAX, what).await {
            Ok(body) => Ok(Some((body, digest))),
            Err(Error::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A blob's bytes, checked against its digest as they arrive, read up to
    /// [`REGISTRY_BLOB_MAX`]. Prefer [`Registry::blob_sized`] where the size is known.
    pub async fn blob(&self, repo: &str, digest: &str) -> Result<Bytes> {
        self.blob_bounded(repo, digest, None).await
    }

    /// A blob's bytes, exactly `size` of them (its descriptor's): a registry that sends more
    /// is refused at the first byte too many, one that sends fewer at the end; checked against
    /// `digest` as they arrive. The whole download ends within `transfer_deadline` of `size`.
    pub async fn blob_sized(&self, repo: &str, digest: &str, size: u64) -> Result<Bytes> {
        self.blob_bounded(repo, digest, Some(size)).await
    }

    /// A blob read to exactly `size` bytes or up to [`REGISTRY_BLOB_MAX`], then checked
    /// against `digest`; the whole download within `transfer_deadline` of its size.
    async fn blob_bounded(&self, repo: &str, digest: &str, size: Option<u64>) -> Result<Bytes> {
        let what = format!("the blob {digest} of {repo}");
        let Some(hex) = digest.strip_prefix("sha256:") else {
            return Err(Error::Unsupported(format!(
                "{what}: only sha256 digests are read"
            )));
        };
        let deadline = transfer_deadline(self.timeout, size.unwrap_or(REGISTRY_BLOB_MAX.bytes));
        let url = format!("{}://{}/v2/{repo}/blobs/{digest}", self.scheme, self.host);
        let blob = Blob {
            url: &url,
            hex,
            size,
            deadline,
            what: &what,
        };
        self.retried_within(&format!("reading {what}"), deadline, || async {
            self.refused(repo, self.blob_once(repo, &blob).await)
        })
        .await
    }

    /// `range` of a blob of `size` bytes (its descriptor's) by an HTTP Range request. A
    /// registry that honours it answers 206 with exactly that `Content-Range`, and no more
    /// than the range is read; one that ignores it answers 200 with the whole blob, which is
    /// read up to `size` and checked against `digest` ([`Ranged::Whole`]). The read ends
    /// within `transfer_deadline` of what it moves.
    pub async fn blob_range(
        &self,
        repo: &str,
        digest: &str,
        range: std::ops::Range<u64>,
        size: u64,
    ) -> Result<Ranged> {
        if range.start >= range.end || range.end > size {
            return Err(Error::Integrity(format!(
                "the blob {digest} of {repo} holds {size} bytes, not {}..{}",
                range.start, range.end
            )));
        }
        let what = format!("the blob {digest} of {repo}");
        let url = format!("{}://{}/v2/{repo}/blobs/{digest}", self.scheme, self.host);
        let wanted = range.end - range.start;
        let deadline = transfer_deadline(self.timeout, size);
        self.retried_within(&format!("reading {what}"), deadline, || async {
            let result = async {
                let authz = self.pull_authz(repo).await?;
                let request = self.http.get(&url).header(
                    reqwest::header::RANGE,
                    format!("bytes={}-{}", range.start, range.end - 1),
                );
                let response = self
                    .authorized(request, &authz)
                    .timeout(deadline)
                    .send()
                    .await
                    .map_err(|e| self.request_failed(e))?;
                let status = response.status().as_u16();
                let content_range = response
                    .headers()
                    .get(reqwest::header::CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let declared = content_length(&response);
                match status {
                    206 => {
                        let expected = format!("bytes {}-{}/", range.start, range.end - 1);
                        let total_ok = |total: &str| total == "*" || total == size.to_string();
                        let honest = content_range
                            .as_deref()
                            .is_some_and(|r| r.strip_prefix(&expected).is_some_and(total_ok));
                        if !honest || declared.is_some_and(|n| n != wanted) {
                            return Err(Error::Integrity(format!(
                                "{what}: the registry answered bytes {}..{} with Content-Range {} ({} bytes)",
                                range.start,
                                range.end,
                                content_range.as_deref().unwrap_or("none"),
                                declared.map_or("unsized".into(), |n| n.to_string()),
                            )));
                        }
                        let body = body_of(response).map_err(|e| self.request_failed(e));
                        Ok(Ranged::Part(read_exact_len(body, wanted, &what).await?))
                    }
                    200 => {
                        if declared.is_some_and(|n| n != size) {
                            return Err(Error::Integrity(format!(
                                "{what}: the registry sends {} bytes, its descriptor says {size}",
                                declared.unwrap_or_default()
                            )));
                        }
                        let body = body_of(response).map_err(|e| self.request_failed(e));
                        let whole = read_exact_len(body, size, &what).await?;
                        if digest_of(&whole) != digest {
                            return Err(Error::Integrity(format!(
                                "{what} does not match its digest: the registry holds a corrupt copy"
                            )));
                        }
                        Ok(Ranged::Whole(whole))
                    }
                    416 => Err(Error::Integrity(format!(
                        "{what} is shorter than the part asked of it (HTTP 416)"
                    ))),
                    _ => self
                        .answer(response, SMALL_ANSWER_MAX, &what)
                        .await
                        .map(Ranged::Part),
                }
            }
            .await;
            self.refused(repo, result)
        })
        .await
    }

    /// The size of a blob, from the registry's answer to a HEAD of it; `None` when the
    /// registry does not hold it.
    pub async fn blob_size(&self, repo: &str, digest: &str) -> Result<Option<u64>> {
        match self.head_blob(repo, digest).await? {
            None => Ok(None),
            Some(Some(size)) => Ok(Some(size)),
            Some(None) => Err(Error::Integrity(format!(
                "the blob {digest} of {repo}: the registry gives no size"
            ))),
        }
    }

    /// Whether `repo` holds the blob `digest`.
    pub async fn has_blob(&self, repo: &str, digest: &str) -> Result<bool> {
        Ok(self.head_blob(repo, digest).await?.is_some())
    }

    /// A HEAD of the blob `digest`: `None` when the registry does not hold it, else the
    /// size its `Content-Length` gives, if any (the answer to a HEAD has no body to read).
    async fn head_blob(&self, repo: &str, digest: &str) -> Result<Option<Option<u64>>> {
        let what = format!("the blob {digest} of {repo}");
        let url = format!("{}://{}/v2/{repo}/blobs/{digest}", self.scheme, self.host);
        self.retried(&format!("looking for {what}"), || async {
            let result = async {
                let authz = self.pull_authz(repo).await?;
                let response = self
                    .authorized(self.http.head(&url), &authz)
                    .send()
                    .await
                    .map_err(|e| self.request_failed(e))?;
                match response.status().as_u16() {
                    200 => Ok(Some(content_length(&response))),
                    404 => Ok(None),
                    status => Err(self.status_error(status, &what)),
                }
            }
            .await;
            self.refused(repo, result)
        })
        .await
    }

    /// One GET of a blob (redirects followed; reqwest keeps credentials on the registry's
    /// origin).
    async fn blob_once(&self, repo: &str, blob: &Blob<'_>) -> Result<Bytes> {
        let what = blob.what;
        let authz = self.pull_authz(repo).await?;
        let response = self
            .authorized(self.http.get(blob.url), &authz)
            // The client's own timeout is the block's; a large blob may take longer.
            .timeout(blob.deadline)
            .send()
            .await
            .map_err(|e| self.request_failed(e))?;
        if !response.status().is_success() {
            return self.answer(response, SMALL_ANSWER_MAX, what).await;
        }
        if let (Some(declared), Some(sent)) = (blob.size, response.content_length())
            && sent != declared
        {
            return Err(Error::Integrity(format!(
                "{what}: the registry sends {sent} bytes, its descriptor says {declared}"
            )));
        }
        let body = body_of(response).map_err(|e| self.request_failed(e));
        let body = match blob.size {
            Some(declared) => read_exact_len(body, declared, what).await?,
            None => read_capped(body, REGISTRY_BLOB_MAX, what).await?,
        };
        if hex::encode(Sha256::digest(&body)) != blob.hex {
            return Err(Error::Integrity(format!(
                "{what} does not match its digest: the registry holds a corrupt copy"
            )));
        }
        Ok(body)
    }

    /// Uploads `data` as the blob `digest` of `repo`, monolithically: a POST opens the upload
    /// and a PUT of the whole body to the location it names closes it (packs are at most
    /// `PACK_MAX`: one PUT each beats a chunked session). The whole upload ends within
    /// `transfer_deadline` of its size.
    pub async fn push_blob(&self, repo: &str, data: Bytes, digest: &str) -> Result<()> {
        let what = format!("the blob {digest} of {repo}");
        let deadline = transfer_deadline(self.timeout, data.len() as u64);
        self.retried_within(&format!("writing {what}"), deadline, || async {
            self.refused(repo, self.push_blob_once(repo, &data, digest, &what).await)
        })
        .await
    }

    async fn push_blob_once(
        &self,
        repo: &str,
        data: &Bytes,
        digest: &str,
        what: &str,
    ) -> Result<()> {
        let authz = self.authz(repo, Scope::Push).await?;
        let start = format!("{}://{}/v2/{repo}/blobs/uploads/", self.scheme, self.host);
        let request = self
            .http
            .post(&start)
            .header(reqwest::header::CONTENT_LENGTH, 0);
        let response = self
            .authorized(request, &authz)
            .send()
            .await
            .map_err(|e| self.request_failed(e))?;
        let opening = format!("opening the upload of {what}");
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        self.expect_status(response, 202, &opening).await?;
        let location = location.ok_or_else(|| {
            Error::Backend(format!("{opening}: the registry named no upload location"))
        })?;
        let base = reqwest::Url::parse(&start).map_err(|e| Error::Backend(e.to_string()))?;
        let mut url = base.join(&location).map_err(|e| {
            Error::Backend(format!("{opening}: the upload location is no URL ({e})"))
        })?;
        url.query_pairs_mut().append_pair("digest", digest);
        let request = self
            .http
            .put(url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(data.clone());
        // Credentials go to the registry's own origin only.
        let request = match url.origin() == base.origin() {
            true => self.authorized(request, &authz),
            false => request,
        };
        let response = request.send().await.map_err(|e| self.request_failed(e))?;
        self.expect_status(response, 201, &format!("writing {what}"))
            .await
    }

    /// Stores a manifest's exact bytes under `tag` (moving a tag keeps the digest).
    pub async fn push_manifest_bytes(
        &self,
        repo: &str,
        tag: &str,
        body: Vec<u8>,
    ) -> Result<String> {
        let digest = digest_of(&body);
        let what = format!("writing the manifest {repo}:{tag}");
        let url = format!("{}://{}/v2/{repo}/manifests/{tag}", self.scheme, self.host);
        let body = Bytes::from(body);
        self.retried(&what, || async {
            let once = async {
                let authz = self.authz(repo, Scope::Push).await?;
                let request = self
                    .http
                    .put(&url)
                    .header(reqwest::header::CONTENT_TYPE, OCI_IMAGE_MEDIA_TYPE)
                    .body(body.clone());
                let response = self
                    .authorized(request, &authz)
                    .send()
                    .await
                    .map_err(|e| self.request_failed(e))?;
                self.expect_status(response, 201, &what).await
            };
            self.refused(repo, once.await)
        })
        .await?;
        Ok(digest)
    }

    /// Checks that `response` is a success (`expected`, or another 2xx), its body left
    /// unread; any other answer is our error for it (401 and 403 refused credentials, the
    /// rest a backend error, tried again), its body read up to [`SMALL_ANSWER_MAX`].
    async fn expect_status(
        &self,
        response: reqwest::Response,
        expected: u16,
        what: &str,
    ) -> Result<()> {
        let status = response.status().as_u16();
        if status == expected || (200..300).contains(&status) {
            return Ok(());
        }
        let body = read_capped(
            body_of(response).map_err(|e| self.request_failed(e)),
            SMALL_ANSWER_MAX,
            &format!("the HTTP {status} answer to {what}"),
        )
        .await?;
        let text = String::from_utf8_lossy(&body);
        Err(match status {
            401 | 403 => Error::Auth(format!("the registry denied access {what} (HTTP {status})")),
            _ => Error::Backend(format!(
                "the registry answered HTTP {status} to {what}: {}",
                scrub(text.trim(), &self.secrets).replace('\n', " ")
            )),
        })
    }

    /// Our error for an answer of `status`, without a body, to a HEAD of `what`.
    fn status_error(&self, status: u16, what: &str) -> Error {
        match status {
            401 | 403 => Error::Auth(format!(
                "the registry denied access to {what} (HTTP {status})"
            )),
            _ => Error::Backend(format!(
                "the registry answered HTTP {status} to looking for {what}"
            )),
        }
    }

    /// Deletes the manifest at `digest` (and every tag on it). Registries that do not allow
    /// deletes answer 405: unsupported.
    pub async fn delete_manifest(&self, repo: &str, digest: &str) -> Result<()> {
        // The distribution registry answers 400 to a delete that races a push of the same
        // manifest; tried again, it settles.
        self.retried(&format!("deleting the manifest {digest}"), || {
            self.delete_manifest_once(repo, digest)
        })
        .await
    }

    async fn delete_manifest_once(&self, repo: &str, digest: &str) -> Result<()> {
        let url = format!(
            "{}://{}/v2/{repo}/manifests/{digest}",
            self.scheme, self.host
        );
        let request = match &self.auth {
            RegistryAuth::Bearer(token) => self.http.delete(&url).bearer_auth(token),
            RegistryAuth::Basic(user, pass) => self.http.delete(&url).basic_auth(user, Some(pass)),
            RegistryAuth::Anonymous => self.http.delete(&url),
        };
        let mut response = request.send().await.map_err(|e| self.request_failed(e))?;
        // A token registry challenges the delete for its own scope (`repository:REPO:delete`,
        // which the pull and push tokens oci-client holds lack): answer that challenge.
        if response.status() == reqwest::StatusCode::UNAUTHORIZED
            && !matches!(self.auth, RegistryAuth::Bearer(_))
            && let Some(challenge) = bearer_challenge(response.headers())
        {
            let token = self.token_for(&challenge).await?;
            let request = self.http.delete(&url).bearer_auth(token);
            response = request.send().await.map_err(|e| self.request_failed(e))?;
        }
        let status = response.status().as_u16();
        let what = format!("the answer to deleting {digest}");
        let body = read_capped(
            body_of(response).map_err(|e| self.request_failed(e)),
            SMALL_ANSWER_MAX,
            &what,
        )
        .await?;
        let unknown = error_codes(&body).iter().any(|code| {
            matches!(
                code,
                OciErrorCode::ManifestUnknown | OciErrorCode::NameUnknown
            )
        });
        let body = String::from_utf8_lossy(&body);
        match status {
            200..=299 => Ok(()),
            _ if unknown => Err(Error::NotFound(format!("no manifest {digest}"))),
            401 | 403 => Err(Error::Auth(format!(
                "the registry refused to delete {digest} (HTTP {status})"
            ))),
            404 => Err(Error::NotFound(format!("no manifest {digest}"))),
            405 => Err(Error::Unsupported(
                "this registry does not allow deleting manifests (enable deletes in its configuration)"
                    .into(),
            )),
            _ => Err(Error::Backend(format!(
                "the registry answered HTTP {status} to deleting {digest}: {}",
                scrub(body.trim(), &self.secrets).replace('\n', " ")
            ))),
        }
    }

    /// A token from the realm of a Bearer `challenge` (its parameters, names lowercased) for
    /// the service and scope it names, asked for with the block's Basic credentials.
    async fn token_for(&self, challenge: &[(String, String)]) -> Result<String> {
        let param = |name: &str| challenge.iter().find(|(n, _)| n == name).map(|(_, v)| v);
        let realm = param("realm").ok_or_else(|| {
            Error::Backend("the registry's Bearer challenge names no realm".into())
        })?;
        let query = challenge
            .iter()
            .filter(|(n, _)| n == "service" || n == "scope");
        let url = reqwest::Url::parse_with_params(realm, query).map_err(|e| {
            Error::Backend(format!(
                "the registry's token realm is no URL ({e}): {realm}"
            ))
        })?;
        let request = self.http.get(url);
        let request = match &self.auth {
            RegistryAuth::Basic(user, pass) => request.basic_auth(user, Some(pass)),
            _ => request,
        };
        let response = request.send().await.map_err(|e| self.request_failed(e))?;
        let status = response.status().as_u16();
        if status == 401 || status == 403 {
            return Err(Error::Auth(format!(
                "the registry's token service refused the credentials (HTTP {status})"
            )));
        }
        let body = read_capped(
            body_of(response).map_err(|e| self.request_failed(e)),
            REGISTRY_TOKEN_MAX,
            "the token service's answer",
        )
        .await?;
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let token = body["token"].as_str().or(body["access_token"].as_str());
        match token {
            Some(token) if status == 200 => Ok(token.to_string()),
            _ => Err(Error::Backend(format!(
                "the registry's token service answered HTTP {status} without a token"
            ))),
        }
    }

    fn request_failed(&self, e: reqwest::Error) -> Error {
        Error::Backend(format!(
            "registry request failed: {}",
            scrub(&e.to_string(), &self.secrets)
        ))
    }

    /// Reaches the registry and checks the credentials by listing the tags of `repo` (a
    /// repository that does not exist yet is fine).
    pub async fn check(&self, repo: &str) -> Result<()> {
        self.tags(repo).await.map(drop)
    }
}

/// The `Content-Length` header of `response`.
fn content_length(response: &reqwest::Response) -> Option<u64> {
    response
        .headers()
        .get(reqwest::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The body of `response`, chunk by chunk.
fn body_of(
    response: reqwest::Response,
) -> impl futures::Stream<Item = std::result::Result<Bytes, reqwest::Error>> {
    futures::stream::try_unfold(response, |mut response| async move {
        Ok(response.chunk().await?.map(|chunk| (chunk, response)))
    })
}

/// The credentials for `host`: the block's own, else `auths` of the Docker config
/// (`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`), else none.
pub fn credentials(
    host: &str,
    username: Option<&str>,
    password: Option<String>,
    token: Option<String>,
) -> Result<RegistryAuth> {
    if let Some(token) = token {
        return Ok(RegistryAuth::Bearer(token));
    }
    match (username, password) {
        (Some(u), Some(p)) => return Ok(RegistryAuth::Basic(u.to_string(), p)),
        (None, Some(_)) => {
            return Err(Error::Usage(
                "a password needs a username; set the username field".into(),
            ));
        }
        _ => {}
    }
    let from_docker = docker_config_path().and_then(|p| docker_config_auth(&p, host));
    Ok(from_docker.unwrap_or(RegistryAuth::Anonymous))
}

fn docker_config_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker/config.json"))
}

/// Basic credentials from the Docker config's `auths`, keyed by host (or by a URL of it).
fn docker_config_auth(path: &std::path::Path, host: &str) -> Option<RegistryAuth> {
    let text = std::fs::read(path).ok()?;
    let config: serde_json::Value = serde_json::from_slice(&text).ok()?;
    let auths = config.get("auths")?.as_object()?;
    let entry = auths.iter().find_map(|(key, value)| {
        let key = key
            .trim_start_matches("https://")
            .trim_start_matches("http://");
        let key = key.split('/').next().unwrap_or(key);
        (key == host).then_some(value)
    })?;
    if let Some(encoded) = entry.get("auth").and_then(|a| a.as_str()) {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .ok()?;
        let (user, pass) = String::from_utf8(decoded)
            .ok()?
            .split_once(':')
            .map(|(u, p)| (u.to_string(), p.to_string()))?;
        return Some(RegistryAuth::Basic(user, pass));
    }
    let user = entry.get("username")?.as_str()?;
    let pass = entry.get("password")?.as_str()?;
    Some(RegistryAuth::Basic(user.to_string(), pass.to_string()))
}

/// The parameters of the `Bearer` challenge in `WWW-Authenticate`, names lowercased.
fn bearer_challenge(headers: &reqwest::header::HeaderMap) -> Option<Vec<(String, String)>> {
    let value = headers
        .get(reqwest::header::WWW_AUTHENTICATE)?
        .to_str()
        .ok()?;
    let challenge = ChallengeParser::new(value)
        .filter_map(std::result::Result::ok)
        .find(|c| c.scheme.eq_ignore_ascii_case("Bearer"))?;
    let params = challenge.params.iter();
    Some(
        params
            .map(|(name, value)| (name.to_ascii_lowercase(), value.to_unescaped()))
            .collect(),
    )
}

/// The error codes of a registry's error answer (the distribution spec's JSON envelope,
/// `{"errors": [{"code": "MANIFEST_UNKNOWN", ...}]}`); none when the answer is no envelope.
fn error_codes(body: &[u8]) -> Vec<OciErrorCode> {
    serde_json::from_slice::<OciEnvelope>(body)
        .map(|envelope| envelope.errors.into_iter().map(|e| e.code).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_config_auths_give_basic_credentials_for_the_host() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        let encoded = base64::engine::general_purpose::STANDARD.encode("me:s3cret");
        let config = serde_json::json!({"auths": {
            "https://ghcr.io": {"auth": encoded},
            "127.0.0.1:5000": {"username": "u", "password": "p"},
        }});
        std::fs::write(&path, config.to_string()).unwrap();
        let got = |host| match docker_config_auth(&path, host) {
            Some(RegistryAuth::Basic(u, p)) => Some((u, p)),
            _ => None,
        };
        assert_eq!(got("ghcr.io"), Some(("me".into(), "s3cret".into())));
        assert_eq!(got("127.0.0.1:5000"), Some(("u".into(), "p".into())));
        assert_eq!(got("quay.io"), None);
    }

    #[test]
    fn a_bearer_challenge_gives_its_realm_service_and_scope() {
        let mut headers = reqwest::header::HeaderMap::new();
        let challenge = r#"Bearer realm="http://127.0.0.1:1/token",service="reg",scope="repository:a/b:delete",error="insufficient_scope""#;
        headers.insert(
            reqwest::header::WWW_AUTHENTICATE,
            challenge.parse().unwrap(),
        );
        let params = bearer_challenge(&headers).unwrap();
        let get = |n: &str| params.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
        assert_eq!(get("realm"), Some("http://127.0.0.1:1/token"));
        assert_eq!(get("service"), Some("reg"));
        assert_eq!(get("scope"), Some("repository:a/b:delete"));
        headers.insert(
            reqwest::header::WWW_AUTHENTICATE,
            r#"Basic realm="test""#.parse().unwrap(),
        );
        assert!(bearer_challenge(&headers).is_none());
    }

    #[test]
    fn block_credentials_come_first_and_a_token_is_bearer() {
        let auth = credentials("h", Some("u"), Some("p".into()), None).unwrap();
        assert!(matches!(auth, RegistryAuth::Basic(u, p) if u == "u" && p == "p"));
        let auth = credentials("h", None, None, Some("t".into())).unwrap();
        assert!(matches!(auth, RegistryAuth::Bearer(t) if t == "t"));
        let lone = credentials("h", None, Some("p".into()), None).unwrap_err();
        assert_eq!(lone.exit_code(), 2);
    }

    #[test]
    fn error_codes_come_from_the_answers_envelope() {
        let body = br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#;
        assert_eq!(error_codes(body), [OciErrorCode::ManifestUnknown]);
        let custom = br#"{"errors":[{"code":"QUOTA","message":"a MANIFEST_UNKNOWN in words"}]}"#;
        assert_eq!(error_codes(custom), [OciErrorCode::Other("QUOTA".into())]);
        assert!(error_codes(b"MANIFEST_UNKNOWN, said as plain text").is_empty());
    }
}
