//! Blocking HTTP requests (through ureq) for readiness checks, bucket setup and smoke tests
//! against the emulators: whole responses, any status.

use std::time::Duration;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// A whole response, its body already de-chunked.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first header called `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as text, invalid UTF-8 replaced.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one request to `url` (`http://host:port/path?query`) and reads the whole response,
/// whatever its status.
pub fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Response, String> {
    let fail = |e: &dyn std::fmt::Display| format!("{method} {url}: {e}");
    let mut req = ureq::http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req.body(body.to_vec()).map_err(|e| fail(&e))?;
    let resp = agent().run(req).map_err(|e| fail(&e))?;
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(n, v)| {
            let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
            (n.as_str().to_string(), v)
        })
        .collect();
    let body = resp
        .into_body()
        .with_config()
        .limit(u64::MAX)
        .read_to_vec()
        .map_err(|e| fail(&e))?;
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// One agent for every request: statuses are answers, not errors; any method goes.
fn agent() -> &'static ureq::Agent {
    static AGENT: std::sync::OnceLock<ureq::Agent> = std::sync::OnceLock::new();
    AGENT.get_or_init(|| {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .allow_non_standard_methods(true)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_global(Some(IO_TIMEOUT))
            .build()
            .into()
    })
}

/// Like [`request`], but a status other than `expected` is an error showing the body.
pub(super) fn expect(
    expected: u16,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Response, String> {
    let response = request(method, url, headers, body)?;
    if response.status != expected {
        return Err(format!(
            "{method} {url}: expected {expected}, got {}: {}",
            response.status,
            response.text()
        ));
    }
    Ok(response)
}

/// The status of a GET, or `None` if there is no answer (yet).
pub(super) fn status_of(url: &str) -> Option<u16> {
    request("GET", url, &[], b"").ok().map(|r| r.status)
}
