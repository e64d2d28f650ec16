//! The WebDAV requests the store's primitives (`protocol.rs`) are built from (RFC 4918 over reqwest): PROPFIND for stat and
//! listings, PUT, MKCOL for folders and locks, MOVE, DELETE; and what their statuses mean as
//! `object_store` errors.
//!
//! Every request has a deadline: the answer's head within `timeout`, and the whole request
//! (a PROPFIND's answer read, a PUT's body sent) within `timeout`, or for a PUT within
//! `transfer_deadline` of its size; a GET's body is bounded in `crate::body`. A PROPFIND
//! answer is read up to `PROPFIND_MAX`.

use std::time::Duration;

use bytes::Bytes;
use object_store::ObjectMeta;
use quick_xml::events::Event;
use reqwest::{Method, StatusCode};

use futures::TryStreamExt;
use storage_core::RetryPolicy;
use storage_core::bounds::{PROPFIND_MAX, transfer_deadline};
use storage_folders::Listed;
use storage_folders::key_names::{lock_for, parent};

use crate::http_folder::HttpFolder;

pub(crate) const STORE: &str = "WebDAV";
/// How a request the server answered with a 5xx or whose connection failed is tried again:
/// 3 tries, pauses of 100 and 200 ms (timeouts are not tried again).
const RETRIES: RetryPolicy = RetryPolicy::FILE_REQUEST;

/// How one try of a request failed.
#[derive(Debug)]
enum Sent {
    Status(reqwest::Response),
    Failed(reqwest::Error),
    /// No answer within `timeout`.
    TimedOut,
}

const PROPFIND_BODY: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<D:propfind xmlns:D="DAV:"><D:prop><D:resourcetype/><D:getcontentlength/><D:getlastmodified/><D:getetag/></D:prop></D:propfind>"#;

/// One file or folder a PROPFIND reported.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// The key below the store's folder (`""` for the folder itself).
    pub key: String,
    pub folder: bool,
    pub size: u64,
    pub modified: Option<chrono::DateTime<chrono::Utc>>,
    pub e_tag: Option<String>,
}

impl Entry {
    pub(crate) fn meta(&self) -> ObjectMeta {
        ObjectMeta {
            location: object_path(&self.key),
            last_modified: self.modified.unwrap_or_default(),
            size: self.size,
            e_tag: self.e_tag.clone(),
            version: None,
        }
    }

    pub(super) fn listed(self) -> Listed {
        if self.folder {
            return Listed::folder(self.key);
        }
        Listed::File {
            modified: self.modified.map(Into::into),
            meta: self.meta(),
        }
    }
}

pub(crate) use storage_folders::location_of as object_path;

/// A folder on a WebDAV server and a login to it. Debug shows no password.
pub(crate) struct Dav {
    /// The folder (its URL without credentials), its login, and how long one request may
    /// take (see the module's notes).
    pub(crate) folder: HttpFolder,
}

impl std::fmt::Debug for Dav {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dav")
            .field("base", &self.shown(""))
            .field("username", &self.folder.username)
            .finish_non_exhaustive()
    }
}

impl Dav {
    pub(crate) fn new(
        base: url::Url,
        username: Option<String>,
        password: Option<String>,
        timeout: Duration,
    ) -> object_store::Result<Self> {
        let folder = HttpFolder::new(base, username, password, timeout, STORE)?;
        Ok(Dav { folder })
    }

    pub(crate) fn url(&self, key: &str, folder: bool) -> url::Url {
        self.folder.url(key, folder)
    }

    /// The folder's URL as messages show it.
    pub(crate) fn shown(&self, key: &str) -> String {
        self.url(key, false).to_string()
    }

    /// A request that must end, first byte to last, within `timeout` (a GET's body is
    /// bounded where it is read; a PUT's by its size).
    fn request(&self, method: Method, url: url::Url) -> reqwest::RequestBuilder {
        self.folder
            .request(method, url)
            .timeout(self.folder.timeout)
    }

    /// Sends `req`, again after a 5xx or a failed connection (a server busy with racing
    /// writers may answer 500, as wsgidav does to a MKCOL that lost a race); a status
    /// outside `ok` is an error of the matching kind.
    async fn send(
        &self,
        req: reqwest::RequestBuilder,
        key: &str,
        what: &str,
        ok: &[StatusCode],
    ) -> object_store::Result<reqwest::Response> {
        self.send_to(req, key, &self.shown(key), what, ok, self.folder.timeout)
            .await
    }

    /// [`Dav::send`] of a request whose URL messages show as `shown`, its answer's head due
    /// within `limit` (a PUT's body goes up before it).
    async fn send_to(
        &self,
        req: reqwest::RequestBuilder,
        key: &str,
        shown: &str,
        what: &str,
        ok: &[StatusCode],
        limit: Duration,
    ) -> object_store::Result<reqwest::Response> {
        let once = |r: reqwest::RequestBuilder| async move {
            match tokio::time::timeout(limit, r.send()).await {
                Ok(Ok(r)) if r.status().is_server_error() => Err(Sent::Status(r)),
                Ok(Ok(r)) => Ok(r),
                Ok(Err(e)) => Err(Sent::Failed(e)),
                Err(_) => Err(Sent::TimedOut),
            }
        };
        // Bodies are in memory, so a request clones; one that would not is sent once.
        let sent = match req.try_clone() {
            None => once(req).await,
            Some(_) => {
                RETRIES
                    .run(
                        |_| once(req.try_clone().expect("a request that cloned before")),
                        |s| match s {
                            Sent::Failed(e) => !e.is_timeout(),
                            Sent::TimedOut => false,
                            Sent::Status(_) => true,
                        },
                    )
                    .await
            }
        };
        let resp = match sent {
            Ok(r) | Err(Sent::Status(r)) => Ok(r),
            Err(Sent::Failed(e)) => Err(Some(e)),
            Err(Sent::TimedOut) => Err(None),
        };
        let resp = resp.map_err(|e| {
            let Some(e) = e else {
                return self.timed_out(what, shown, limit);
            };
            if e.is_timeout() {
                return self.timed_out(what, shown, limit);
            }
            let why = {
                let mut causes = String::new();
                let mut source = std::error::Error::source(&e);
                while let Some(s) = source {
                    causes = format!("{causes}: {s}");
                    source = s.source();
                }
                format!("{}{causes}", e.without_url())
            };
            generic(format!("{what} {shown}: {why}"))
        })?;
        let status = resp.status();
        if ok.contains(&status) || (ok.is_empty() && status.is_success()) {
            return Ok(resp);
        }
        let source = format!("{what} {shown}: HTTP {status}").into();
        let path = key.to_string();
        Err(match status {
            StatusCode::NOT_FOUND | StatusCode::GONE => {
                object_store::Error::NotFound { path, source }
            }
            StatusCode::UNAUTHORIZED => object_store::Error::Unauthenticated { path, source },
            StatusCode::FORBIDDEN => object_store::Error::PermissionDenied { path, source },
            StatusCode::PRECONDITION_FAILED => object_store::Error::Precondition { path, source },
            _ => object_store::Error::Generic {
                store: STORE,
                source,
            },
        })
    }

    fn timed_out(&self, what: &str, shown: &str, limit: Duration) -> object_store::Error {
        storage_core::bounds::timed_out(&format!("{what} {shown}"), limit).into_store(STORE)
    }

    /// PROPFIND of `key` at `depth` (0 or 1); `None` when nothing is there.
    pub(crate) async fn propfind(
        &self,
        key: &str,
        folder: bool,
        depth: u8,
    ) -> object_store::Result<Option<Vec<Entry>>> {
        let method = Method::from_bytes(b"PROPFIND").expect("a valid method");
        let req = self
            .request(method, self.url(key, folder))
            .header("Depth", depth.to_string())
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/xml; charset=utf-8",
            )
            .body(PROPFIND_BODY);
        let resp = match self
            .send(req, key, "listing", &[StatusCode::MULTI_STATUS])
            .await
        {
            Ok(r) => r,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let body = crate::body::chunks(resp).map_err(|e| {
            if e.is_timeout() {
                storage_core::bounds::timed_out(
                    &format!("listing {}", self.shown(key)),
                    self.folder.timeout,
                )
            } else {
                storage_core::Error::Backend(format!(
                    "listing {}: {}",
                    self.shown(key),
                    storage_core::error::with_causes(&e.without_url())
                ))
            }
        });
        let what = format!("the PROPFIND answer for {}", self.shown(key));
        let text = storage_core::bounds::read_capped(body, PROPFIND_MAX, &what)
            .await
            .map_err(|e| e.into_store(STORE))?;
        let text = String::from_utf8_lossy(&text);
        let entries = parse_multistatus(&text)
            .map_err(|e| generic(format!("listing {}: {e}", self.shown(key))))?;
        let base = percent_decode(self.folder.base.path());
        Ok(Some(
            entries
                .into_iter()
                .filter_map(|(href, mut e)| {
                    let path = href_path(&href);
                    let rel = path.strip_prefix(base.as_str())?.trim_matches('/');
                    e.key = rel.to_string();
                    Some(e)
                })
                .collect(),
        ))
    }

    /// The file or folder at `key`, or `None`.
    pub(crate) async fn stat(&self, key: &str) -> object_store::Result<Option<Entry>> {
        Ok(self
            .propfind(key, false, 0)
            .await?
            .and_then(|list| list.into_iter().next()))
    }

    /// The entries of folder `dir` (not itself); `None` when it does not exist.
    pub(crate) async fn list_dir(&self, dir: &str) -> object_store::Result<Option<Vec<Entry>>> {
        Ok(self.propfind(dir, true, 1).await?.map(|list| {
            list.into_iter()
                .filter(|e| e.key != dir.trim_matches('/'))
                .collect()
        }))
    }

    /// GET of `key`, with a `Range` header when given.
    pub(crate) async fn get(
        &self,
        key: &str,
        range: Option<String>,
    ) -> object_store::Result<reqwest::Response> {
        // No deadline for the whole request here: the body's is set once its length is known.
        let mut req = self.folder.request(Method::GET, self.url(key, false));
        if let Some(r) = range {
            req = req.header(reqwest::header::RANGE, r);
        }
        self.send(req, key, "reading", &[]).await
    }

    /// PUT of a whole body; a missing folder is made and the PUT sent again.
    pub(crate) async fn put(&self, key: &str, body: Bytes) -> object_store::Result<()> {
        let limit = transfer_deadline(self.folder.timeout, body.len() as u64);
        let shown = self.shown(key);
        let send = || {
            let req = self
                .request(Method::PUT, self.url(key, false))
                .timeout(limit)
                .body(body.clone());
            self.send_to(req, key, &shown, "writing", &[], limit)
        };
        match send().await {
            Err(object_store::Error::Generic { .. })
            | Err(object_store::Error::NotFound { .. })
                if !parent(key).is_empty() =>
            {
                self.make_dirs(parent(key)).await?;
                send().await.map(drop)
            }
            other => other.map(drop),
        }
    }

    /// MKCOL of folder URL `url` (`shown` as `dir`); true when made, false when something
    /// is already there.
    async fn mkcol_at(&self, url: url::Url, dir: &str) -> object_store::Result<bool> {
        let method = Method::from_bytes(b"MKCOL").expect("a valid method");
        let ok = [StatusCode::CREATED, StatusCode::METHOD_NOT_ALLOWED];
        let shown = url.to_string();
        let resp = self
            .send_to(
                self.request(method, url),
                dir,
                &shown,
                "making folder",
                &ok,
                self.folder.timeout,
            )
            .await?;
        Ok(resp.status() == StatusCode::CREATED)
    }

    pub(super) async fn mkcol(&self, dir: &str) -> object_store::Result<bool> {
        self.mkcol_at(self.url(dir, true), dir).await
    }

    /// Makes the folders of `dir` (a key) that are missing, the block's own folder
    /// included, from the top down. The folders above the block's may be the server's and
    /// refuse MKCOL: only a refusal below them is an error.
    pub(crate) async fn make_dirs(&self, dir: &str) -> object_store::Result<()> {
        let base: Vec<String> = self
            .folder
            .base
            .path_segments()
            .into_iter()
            .flatten()
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        let mut url = self.folder.base.clone();
        for (i, seg) in base.iter().enumerate() {
            url.set_path(&format!("/{}/", base[..=i].join("/")));
            if let Err(e) = self.mkcol_at(url.clone(), seg).await
                && i + 1 == base.len()
            {
                return Err(e);
            }
        }
        let mut at = String::new();
        for seg in dir.split('/').filter(|s| !s.is_empty()) {
            if !at.is_empty() {
                at.push('/');
            }
            at.push_str(seg);
            self.mkcol(&at).await?;
        }
        Ok(())
    }

    /// MOVE of `from` over `to`.
    pub(crate) async fn move_over(&self, from: &str, to: &str) -> object_store::Result<()> {
        let method = Method::from_bytes(b"MOVE").expect("a valid method");
        let req = self
            .request(method, self.url(from, false))
            .header("Destination", self.url(to, false).as_str())
            .header("Overwrite", "T");
        self.send(req, to, "moving into place", &[]).await.map(drop)
    }

    /// DELETE of a file or a (whole) folder; a missing one is fine.
    pub(crate) async fn delete(&self, key: &str, folder: bool) -> object_store::Result<()> {
        let req = self.request(Method::DELETE, self.url(key, folder));
        match self.send(req, key, "deleting", &[]).await {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Whether a writer holds `key`'s lock now (it may be moving a new file over it).
    pub(crate) async fn locked(&self, key: &str) -> object_store::Result<bool> {
        Ok(self.stat(&lock_for(key)).await?.is_some())
    }
}

pub(crate) fn generic(message: String) -> object_store::Error {
    object_store::Error::Generic {
        store: STORE,
        source: message.into(),
    }
}

/// `"abc"` and `W/"abc"` as `abc`, so PROPFIND's and GET's tags compare equal.
pub(crate) fn bare_tag(tag: &str) -> String {
    tag.trim()
        .trim_start_matches("W/")
        .trim_matches('"')
        .to_string()
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// The decoded path of an `href` (servers send absolute paths or full URLs).
fn href_path(href: &str) -> String {
    let path = match url::Url::parse(href) {
        Ok(u) => u.path().to_string(),
        Err(_) => href.to_string(),
    };
    percent_decode(&path)
}

/// `(href, entry)` for each `response` of a multistatus body; the entry's key is empty.
fn parse_multistatus(text: &str) -> Result<Vec<(String, Entry)>, String> {
    let mut reader = quick_xml::Reader::from_str(text);
    let mut out = Vec::new();
    let mut href = String::new();
    let mut entry = blank();
    let mut ok_props = true;
    let mut path: Vec<String> = Vec::new();
    let mut text_now = String::new();
    loop {
        match reader.read_event().map_err(|e| format!("bad XML: {e}"))? {
            Event::Start(e) => {
                let name = AsRef::<str>::as_ref(&e.local_name()).to_string();
                if name == "response" {
                    href.clear();
                    entry = blank();
                }
                if name == "propstat" {
                    ok_props = true;
                }
                path.push(name);
                text_now.clear();
            }
            Event::Empty(e) => {
                let name = e.local_name();
                if AsRef::<str>::as_ref(&name) == "collection"
                    && path.iter().any(|p| p == "resourcetype")
                {
                    entry.folder = true;
                }
            }
            Event::Text(t) => text_now.push_str(&t.xml10_content()),
            Event::CData(t) => text_now.push_str(&t),
            Event::GeneralRef(r) => match r.resolve_char_ref() {
                Ok(Some(c)) => text_now.push(c),
                _ => text_now.push_str(match &*r {
                    "amp" => "&",
                    "lt" => "<",
                    "gt" => ">",
                    "quot" => "\"",
                    "apos" => "'",
                    _ => "",
                }),
            },
            Event::End(_) => {
                let name = path.pop().unwrap_or_default();
                let value = text_now.trim().to_string();
                match name.as_str() {
                    "href" if path.last().is_some_and(|p| p == "response") => href = value,
                    "status" if path.last().is_some_and(|p| p == "propstat") => {
                        ok_props = value.contains(" 200 ");
                    }
                    "getcontentlength" => entry.size = value.parse().unwrap_or(0),
                    "getlastmodified" => {
                        entry.modified = chrono::DateTime::parse_from_rfc2822(&value)
                            .ok()
                            .map(|d| d.with_timezone(&chrono::Utc));
                    }
                    "getetag" if !value.is_empty() => entry.e_tag = Some(bare_tag(&value)),
                    "propstat" if !ok_props => {}
                    "response" => out.push((href.clone(), entry.clone())),
                    _ => {}
                }
                text_now.clear();
            }
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(out)
}

fn blank() -> Entry {
    Entry {
        key: String::new(),
        folder: false,
        size: 0,
        modified: None,
        e_tag: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multistatus_gives_files_and_folders() {
        let body = r#"<?xml version="1.0" encoding="utf-8" ?>
<ns0:multistatus xmlns:ns0="DAV:"><ns0:response><ns0:href>/a/</ns0:href><ns0:propstat><ns0:prop><ns0:resourcetype><ns0:collection /></ns0:resourcetype><ns0:getlastmodified>Mon, 30 Nov 2026 12:13:42 GMT</ns0:getlastmodified></ns0:prop><ns0:status>HTTP/1.1 200 OK</ns0:status></ns0:propstat></ns0:response>
<ns0:response><ns0:href>/a/odd%20name%2B%26.txt</ns0:href><ns0:propstat><ns0:prop><ns0:resourcetype /><ns0:getcontentlength>5</ns0:getcontentlength><ns0:getetag>10-17-5</ns0:getetag></ns0:prop><ns0:status>HTTP/1.1 200 OK</ns0:status></ns0:propstat></ns0:response></ns0:multistatus>"#;
        let got = parse_multistatus(body).unwrap();
        assert_eq!(got.len(), 2);
        assert!(got[0].1.folder && got[0].1.modified.is_some());
        assert_eq!(href_path(&got[1].0), "/a/odd name+&.txt");
        assert_eq!(
            (got[1].1.size, got[1].1.e_tag.as_deref()),
            (5, Some("10-17-5"))
        );
        assert!(!got[1].1.folder);
    }
}
