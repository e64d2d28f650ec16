//! Read-only HTTP(S): a folder served by any web server as an `object_store::ObjectStore`
//! that only reads. A package is read with plain GETs (HEAD, manifest, package; a ranged read
//! is sliced locally when the server ignores `Range`); a files layout is found through the
//! server's directory listing (the links of an autoindex page, as python's http.server,
//! nginx and Apache write them), each file's size from a HEAD request. Every write is refused
//! as unsupported.
//!
//! What the server sends is bounded (storage_core::bounds): a listing page is read up to
//! `LISTING_PAGE_MAX`, a body without a length up to `UNSIZED_BODY_MAX`, a body with one
//! never past it; the walk lists each folder once (by the URL that answered, after
//! redirects) within the depth and entry limits. `timeout` bounds a whole request: HEAD
//! and listings first byte to last, a download within `transfer_deadline` of its length.

use std::fmt;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{self, BoxStream};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use reqwest::StatusCode;
use storage_core::Error;
use storage_core::bounds::{
    Budget, Cap, LISTING_PAGE_MAX, UNSIZED_BODY_MAX, WALK_MAX_ENTRIES, joined, read_capped,
};
use storage_folders::walk::{WalkBounds, check_listed};
use storage_folders::{get_result, wanted_range};

use crate::body::Download;
use crate::http_folder::HttpFolder;

const STORE: &str = "HTTP";
/// Folders listed, or files sized, at once.
const FAN_OUT: usize = 8;

pub(crate) struct HttpStore {
    /// The folder, its login, and how long one request may take, first byte to last
    /// (downloads: see `transfer_deadline`).
    folder: HttpFolder,
}

impl HttpStore {
    pub(crate) fn new(
        base: url::Url,
        username: Option<String>,
        password: Option<String>,
        timeout: std::time::Duration,
    ) -> object_store::Result<Self> {
        let folder = HttpFolder::new(base, username, password, timeout, STORE)?;
        Ok(HttpStore { folder })
    }

    fn url(&self, key: &str, folder: bool) -> url::Url {
        self.folder.url(key, folder)
    }

    fn request(&self, method: reqwest::Method, url: url::Url) -> reqwest::RequestBuilder {
        self.folder.request(method, url)
    }

    /// Sends `req` and checks its status; the answer's head must come within `timeout`.
    async fn send(
        &self,
        req: reqwest::RequestBuilder,
        key: &str,
    ) -> object_store::Result<reqwest::Response> {
        let resp = match tokio::time::timeout(self.folder.timeout, req.send()).await {
            Ok(sent) => sent.map_err(|e| self.failed(key, e))?,
            Err(_) => return Err(self.timed_out(key)),
        };
        match resp.status() {
            s if s.is_success() => Ok(resp),
            StatusCode::NOT_FOUND | StatusCode::GONE => Err(object_store::Error::NotFound {
                path: key.to_string(),
                source: format!("{}: 404 Not Found", self.shown(key)).into(),
            }),
            StatusCode::UNAUTHORIZED => Err(object_store::Error::Unauthenticated {
                path: key.to_string(),
                source: format!("{}: 401 Unauthorized", self.shown(key)).into(),
            }),
            StatusCode::FORBIDDEN => Err(object_store::Error::PermissionDenied {
                path: key.to_string(),
                source: format!("{}: 403 Forbidden", self.shown(key)).into(),
            }),
            s => Err(generic(format!("{}: HTTP {s}", self.shown(key)))),
        }
    }

    /// A failed request or body read of `key`, saying "timed out" when it did.
    fn failed(&self, key: &str, e: reqwest::Error) -> object_store::Error {
        self.read_failed(key, e).into_store(STORE)
    }

    fn read_failed(&self, key: &str, e: reqwest::Error) -> Error {
        if e.is_timeout() {
            return storage_core::bounds::timed_out(
                &format!("reading {}", self.shown(key)),
                self.folder.timeout,
            );
        }
        Error::Backend(format!(
            "{}: {}",
            self.shown(key),
            storage_core::error::with_causes(&e.without_url())
        ))
    }

    fn timed_out(&self, key: &str) -> object_store::Error {
        storage_core::bounds::timed_out(
            &format!("reading {}", self.shown(key)),
            self.folder.timeout,
        )
        .into_store(STORE)
    }

    /// The URL of `key` as messages show it (without credentials).
    fn shown(&self, key: &str) -> String {
        let mut url = self.url(key, false);
        let _ = url.set_password(None);
        let _ = url.set_username("");
        url.to_string()
    }

    /// Size and dates of `key` from a HEAD request.
    async fn head_meta(&self, key: &str) -> object_store::Result<ObjectMeta> {
        let req = self
            .request(reqwest::Method::HEAD, self.url(key, false))
            .timeout(self.folder.timeout);
        let resp = self.send(req, key).await?;
        Ok(meta_of(key, &resp, None))
    }

    /// Names linked from the listing page of folder `dir` (a key): `(key, is_folder)`, and
    /// the URL that answered (after redirects); no names when there is no such folder.
    async fn list_dir(&self, dir: &str) -> object_store::Result<(Vec<(String, bool)>, String)> {
        let url = self.url(dir, true);
        let req = self
            .request(reqwest::Method::GET, url.clone())
            .timeout(self.folder.timeout);
        let resp = match self.send(req, dir).await {
            Ok(resp) => resp,
            Err(object_store::Error::NotFound { .. }) => return Ok((Vec::new(), url.into())),
            Err(e) => return Err(e),
        };
        let answered = resp.url().as_str().to_string();
        let what = format!("the listing page {}", self.shown(dir));
        let body = crate::body::chunks(resp).map_err(|e| self.read_failed(dir, e));
        let page = read_capped(body, LISTING_PAGE_MAX, &what)
            .await
            .map_err(|e| e.into_store(STORE))?;
        let page = String::from_utf8_lossy(&page);
        let mut names = Vec::new();
        for (name, folder) in listed_links(&page, WALK_MAX_ENTRIES + 1) {
            let key = match dir {
                "" => name,
                d => format!("{d}/{name}"),
            };
            check_listed(dir, &key).map_err(|e| e.into_store(STORE))?;
            names.push((key, folder));
        }
        names.sort();
        names.dedup();
        Ok((names, answered))
    }

    /// Every file below folder `dir`, sized by HEAD requests. Each folder is listed once
    /// (by the URL that answered), within the depth and entry limits.
    async fn walk(&self, dir: String) -> object_store::Result<Vec<ObjectMeta>> {
        let refused = |e: Error| e.into_store(STORE);
        let mut bounds = WalkBounds::default();
        let mut files = Vec::new();
        let mut level = vec![dir];
        let mut depth = 0;
        while !level.is_empty() {
            for d in &level {
                // Before the request: how deep, and whether this key was listed already.
                bounds
                    .enter(d, &format!("key {d}"), depth)
                    .map_err(refused)?;
            }
            let listed: Vec<_> = stream::iter(level)
                .map(|d| async move {
                    let (names, answered) = self.list_dir(&d).await?;
                    Ok::<_, object_store::Error>((d, names, answered))
                })
                .buffer_unordered(FAN_OUT)
                .try_collect()
                .await?;
            level = Vec::new();
            depth += 1;
            for (d, names, answered) in listed {
                if !names.is_empty() {
                    // The server may answer for a folder from another one (a redirect).
                    bounds.enter(&d, &answered, depth).map_err(refused)?;
                }
                bounds.count(&d, names.len()).map_err(refused)?;
                for (key, folder) in names {
                    if folder {
                        level.push(key);
                    } else {
                        files.push(key);
                    }
                }
            }
        }
        let mut metas: Vec<ObjectMeta> = stream::iter(files)
            .map(|key| async move { self.head_meta(&key).await })
            .buffer_unordered(FAN_OUT)
            .try_collect()
            .await?;
        metas.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(metas)
    }
}

/// Relative links of an autoindex page: `(name, is_folder)`, at most `max`. Links that leave
/// the folder, carry a query or a fragment, or name another host are not entries.
fn listed_links(page: &str, max: usize) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    for part in page.split("href=").skip(1) {
        if out.len() >= max {
            break;
        }
        let Some(quote) = part.chars().next().filter(|c| *c == '"' || *c == '\'') else {
            continue;
        };
        let Some(raw) = part[1..].split(quote).next() else {
            continue;
        };
        let raw = raw.replace("&amp;", "&");
        if raw.is_empty()
            || raw.starts_with('/')
            || raw.starts_with('.') && (raw.starts_with("./") || raw.starts_with("../"))
            || raw.contains(['?', '#', ':'])
        {
            continue;
        }
        let folder = raw.ends_with('/');
        let trimmed = raw.trim_end_matches('/');
        if trimmed.contains('/') {
            continue;
        }
        let name: String =
            url::form_urlencoded::parse(format!("x={}", trimmed.replace('+', "%2B")).as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
        if !name.is_empty() && name != "." && name != ".." {
            out.push((name, folder));
        }
    }
    out
}

fn meta_of(key: &str, resp: &reqwest::Response, size: Option<u64>) -> ObjectMeta {
    let headers = resp.headers();
    let header = |name: reqwest::header::HeaderName| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let last_modified = header(reqwest::header::LAST_MODIFIED)
        .and_then(|d| chrono::DateTime::parse_from_rfc2822(&d).ok())
        .map(|d| d.with_timezone(&chrono::Utc))
        .unwrap_or_default();
    let size = size
        .or_else(|| header(reqwest::header::CONTENT_LENGTH).and_then(|l| l.parse().ok()))
        .unwrap_or(0);
    ObjectMeta {
        location: Path::parse(key).unwrap_or_else(|_| Path::from_iter(key.split('/'))),
        last_modified,
        size,
        e_tag: header(reqwest::header::ETAG),
        version: None,
    }
}

fn generic(message: String) -> object_store::Error {
    object_store::Error::Generic {
        store: STORE,
        source: message.into(),
    }
}

fn read_only(key: &str) -> object_store::Error {
    object_store::Error::NotSupported {
        source: format!("{key}: an http(s):// remote file system is read-only").into(),
    }
}

impl fmt::Debug for HttpStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpStore")
            .field("base", &self.shown(""))
            .field("username", &self.folder.username)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for HttpStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HTTP({})", self.shown(""))
    }
}

#[async_trait]
impl ObjectStore for HttpStore {
    async fn put_opts(
        &self,
        location: &Path,
        _payload: PutPayload,
        _opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        Err(read_only(location.as_ref()))
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        _opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        Err(read_only(location.as_ref()))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let key = location.as_ref().to_string();
        if options.head {
            let meta = self.head_meta(&key).await?;
            options.check_preconditions(&meta)?;
            return Ok(get_result(stream::empty().boxed(), 0..meta.size, meta));
        }
        let mut req = self.request(reqwest::Method::GET, self.url(&key, false));
        if let Some(object_store::GetRange::Bounded(r)) = &options.range {
            req = req.header(
                reqwest::header::RANGE,
                format!("bytes={}-{}", r.start, r.end.saturating_sub(1)),
            );
        }
        let download = Download::new(self.send(req, &key).await?);
        let started = download.started;
        let Some(total) = download.total else {
            let resp = download.into_response();
            // No length: read it all to know the size, up to a cap, within `timeout`.
            let what = format!("the body of {} (sent without a length)", self.shown(&key));
            let deadline = started + self.folder.timeout;
            let mut budget = Budget::new(Cap::carried(&options, UNSIZED_BODY_MAX));
            let mut resp = resp;
            let mut parts = Vec::new();
            loop {
                let chunk = match tokio::time::timeout_at(deadline, resp.chunk()).await {
                    Ok(c) => c.map_err(|e| self.failed(&key, e))?,
                    Err(_) => return Err(self.timed_out(&key)),
                };
                let Some(chunk) = chunk else { break };
                budget
                    .take(chunk.len(), &what)
                    .map_err(|e| e.into_store(STORE))?;
                parts.push(chunk);
            }
            return whole_body(&key, joined(parts), options);
        };
        let meta = meta_of(&key, download.response(), Some(total));
        options.check_preconditions(&meta)?;
        let range = wanted_range(&options, total, STORE)?;
        let body = download.range(range.clone(), self.shown(&key), self.folder.timeout, STORE);
        Ok(get_result(body, range, meta))
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        locations
            .map(|l| l.and_then(|l| Err(read_only(l.as_ref()))))
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let dir = prefix.map_or(String::new(), |p| p.as_ref().to_string());
        let me = HttpStore {
            folder: self.folder.clone(),
        };
        stream::once(async move { me.walk(dir).await })
            .map_ok(|files| stream::iter(files.into_iter().map(Ok)))
            .try_flatten()
            .boxed()
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let dir = prefix.map_or(String::new(), |p| p.as_ref().to_string());
        let mut out = ListResult {
            common_prefixes: Vec::new(),
            objects: Vec::new(),
            extensions: Default::default(),
        };
        let mut files = Vec::new();
        let (names, _) = self.list_dir(&dir).await?;
        WalkBounds::default()
            .count(&dir, names.len())
            .map_err(|e| e.into_store(STORE))?;
        for (key, folder) in names {
            if folder {
                out.common_prefixes.push(Path::from_iter(key.split('/')));
            } else {
                files.push(key);
            }
        }
        out.objects = stream::iter(files)
            .map(|key| async move { self.head_meta(&key).await })
            .buffered(FAN_OUT)
            .try_collect()
            .await?;
        Ok(out)
    }

    async fn copy_opts(
        &self,
        _from: &Path,
        to: &Path,
        _options: CopyOptions,
    ) -> object_store::Result<()> {
        Err(read_only(to.as_ref()))
    }
}

/// A result from a body read whole (a server that sent no length).
fn whole_body(key: &str, body: Bytes, options: GetOptions) -> object_store::Result<GetResult> {
    let meta = ObjectMeta {
        location: Path::parse(key).unwrap_or_else(|_| Path::from_iter(key.split('/'))),
        last_modified: Default::default(),
        size: body.len() as u64,
        e_tag: None,
        version: None,
    };
    let range = wanted_range(&options, meta.size, STORE)?;
    let data = body.slice(range.start as usize..range.end as usize);
    let body = stream::once(async move { Ok(data) }).boxed();
    Ok(get_result(body, range, meta))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn autoindex_links_are_entries_and_the_rest_is_not() {
        let page = r#"<ul>
<li><a href=".blocks/">.blocks/</a></li>
<li><a href="flow.py">flow.py</a></li>
<li><a href="odd%20name%2B.txt">odd name+.txt</a></li>
<li><a href="../">up</a></li>
<li><a href="/abs">abs</a></li>
<li><a href="?C=N;O=D">sort</a></li>
<li><a href="http://elsewhere/x">x</a></li>
</ul>"#;
        assert_eq!(
            listed_links(page, 100),
            [
                (".blocks".to_string(), true),
                ("flow.py".to_string(), false),
                ("odd name+.txt".to_string(), false),
            ]
        );
    }
}
