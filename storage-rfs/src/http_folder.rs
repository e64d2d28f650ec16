//! A folder at an http(s) URL and a basic-auth login to it: what the read-only HTTP store and
//! the WebDAV client both reach their files through (one client, a key's URL below the
//! folder, the login on every request).

use std::time::Duration;

/// A folder at a URL, a client for it and the login it takes.
#[derive(Clone)]
pub(crate) struct HttpFolder {
    pub(crate) client: reqwest::Client,
    /// The folder's URL, ending in `/`.
    pub(crate) base: url::Url,
    pub(crate) username: Option<String>,
    password: Option<String>,
    /// How long one request may take (see each store's notes).
    pub(crate) timeout: Duration,
}

impl HttpFolder {
    /// A client that gives up connecting, or waiting for the next bytes, after `timeout`;
    /// `store` names the store in the error when none can be built.
    pub(crate) fn new(
        base: url::Url,
        username: Option<String>,
        password: Option<String>,
        timeout: Duration,
        store: &'static str,
    ) -> object_store::Result<Self> {
        let client = reqwest::Client::builder()
            .connect_timeout(timeout)
            .read_timeout(timeout)
            .build()
            .map_err(|e| object_store::Error::Generic {
                store,
                source: format!("cannot build the HTTP client: {e}").into(),
            })?;
        Ok(HttpFolder {
            client,
            base,
            username,
            password,
            timeout,
        })
    }

    /// The URL of `key` below the folder; of a folder (ending in `/`) when `folder`.
    pub(crate) fn url(&self, key: &str, folder: bool) -> url::Url {
        let mut url = self.base.clone();
        if let Ok(mut segs) = url.path_segments_mut() {
            segs.pop_if_empty();
            segs.extend(key.split('/').filter(|s| !s.is_empty()));
            if folder {
                segs.push("");
            }
        }
        url
    }

    /// A request to `url` with the login.
    pub(crate) fn request(
        &self,
        method: reqwest::Method,
        url: url::Url,
    ) -> reqwest::RequestBuilder {
        self.with_login(self.client.request(method, url))
    }

    /// `req` with the login (basic auth), if there is one.
    pub(crate) fn with_login(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.username {
            Some(user) => req.basic_auth(user, self.password.as_deref()),
            None => req,
        }
    }
}
