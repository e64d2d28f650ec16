//! The `basepath` URL: which protocol, which server, which folder, and any credentials it
//! carries (taken out here so that they are never shown).

use storage_core::secret::redact;
use storage_core::{Error, Result};

/// The protocols a remote file system block speaks, picked by the URL's scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Sftp,
    /// Plain `http://` or `https://`: read-only.
    Http,
    /// `webdav+http://` or `webdav+https://`.
    WebDav,
    /// `ftp://` (plain FTP, passive mode).
    Ftp,
}

/// A parsed `basepath`.
#[derive(Clone, PartialEq, Eq)]
pub struct Target {
    pub protocol: Protocol,
    pub host: String,
    pub port: u16,
    /// The folder on the server: absolute (`/srv/flows`), or relative to the login folder
    /// (`flows`, from `/~/flows`; empty for the login folder itself).
    pub path: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// The folder's URL without credentials, ending in `/` (for HTTP).
    pub folder_url: url::Url,
}

/// Never shows the password.
impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("protocol", &self.protocol)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("path", &self.path)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl Target {
    pub fn parse(basepath: &str, label: &str) -> Result<Target> {
        let bad = |why: &str| {
            Error::Usage(format!(
                "{label}: basepath `{}` {why}",
                redact(basepath).escape_debug()
            ))
        };
        // `webdav+http(s)://` is parsed as the `http(s)://` URL it names, so that the folder
        // URL and the default port are HTTP's.
        let trimmed = basepath.trim();
        let (webdav, inner) = match trimmed.get(..7) {
            Some(s) if s.eq_ignore_ascii_case("webdav+") => (true, &trimmed[7..]),
            _ => (false, trimmed),
        };
        let url = url::Url::parse(inner)
            .map_err(|_| bad("is not a URL (sftp://[user@]host[:port]/path)"))?;
        let protocol = match (webdav, url.scheme()) {
            (false, "sftp") => Protocol::Sftp,
            (false, "http" | "https") => Protocol::Http,
            (true, "http" | "https") => Protocol::WebDav,
            (false, "ftp") => Protocol::Ftp,
            (false, "ftps") => {
                return Err(Error::Unsupported(format!(
                    "{label}: ftps:// (FTP over TLS) is not supported; use ftp://, sftp:// or webdav+https://"
                )));
            }
            _ => {
                return Err(bad(
                    "has a scheme no remote file system speaks (sftp://, webdav+http(s)://, ftp://, http(s)://)",
                ));
            }
        };
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| bad("names no host"))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = match url.port() {
            Some(0) => return Err(bad("has port 0")),
            Some(p) => p,
            None => url.port_or_known_default().unwrap_or(22),
        };
        let decode = |s: &str| {
            url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        let username = Some(decode(url.username())).filter(|u| !u.is_empty());
        let password = url.password().map(decode).filter(|p| !p.is_empty());
        // The URL crate has already resolved `.` and `..`; refuse them as written instead,
        // so that the folder is the one the user wrote.
        let raw_path = inner
            .split_once("://")
            .map(|(_, rest)| rest.split_once('/').map_or("", |(_, p)| p))
            .unwrap_or("");
        if raw_path
            .split('/')
            .any(|seg| seg == "." || seg == ".." || seg.starts_with("%2e"))
        {
            return Err(bad("has `.` or `..` in its path"));
        }
        let mut path = String::new();
        for seg in url.path_segments().into_iter().flatten() {
            if seg.is_empty() {
                continue;
            }
            let seg = decode(seg);
            if seg.contains('\0') || seg.contains('/') {
                return Err(bad("has a path segment that is not a folder name"));
            }
            path.push('/');
            path.push_str(&seg);
        }
        // `/~/x` is `x` below the login folder.
        let path = match path.strip_prefix("/~") {
            Some(rest) if rest.is_empty() || rest.starts_with('/') => {
                rest.trim_start_matches('/').to_string()
            }
            _ if path.is_empty() => String::new(),
            _ => path,
        };
        let mut folder_url = url.clone();
        let _ = folder_url.set_username("");
        let _ = folder_url.set_password(None);
        folder_url.set_query(None);
        folder_url.set_fragment(None);
        if !folder_url.path().ends_with('/') {
            let with_slash = format!("{}/", folder_url.path());
            folder_url.set_path(&with_slash);
        }
        Ok(Target {
            protocol,
            host,
            port,
            path,
            username,
            password,
            folder_url,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sftp_urls_give_host_port_folder_and_user() {
        let t = Target::parse("sftp://deploy@nas.local:2222/srv/flows/", "rfs/x").unwrap();
        assert_eq!(t.protocol, Protocol::Sftp);
        assert_eq!((t.host.as_str(), t.port), ("nas.local", 2222));
        assert_eq!(t.path, "/srv/flows");
        assert_eq!(t.username.as_deref(), Some("deploy"));
        let t = Target::parse("sftp://[::1]/~/flows", "rfs/x").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 22));
        assert_eq!(t.path, "flows");
        assert_eq!(Target::parse("sftp://nas", "rfs/x").unwrap().path, "");
        let t = Target::parse("sftp://me:p%40ss+w@nas/data", "rfs/x").unwrap();
        assert_eq!(t.password.as_deref(), Some("p@ss+w"));
        assert!(!format!("{t:?}").contains("p@ss"));
    }

    #[test]
    fn other_schemes_are_refused_without_showing_credentials() {
        let t = Target::parse("https://u:pw@files.example/flows", "rfs/x").unwrap();
        assert_eq!(t.protocol, Protocol::Http);
        assert_eq!(t.folder_url.as_str(), "https://files.example/flows/");
        assert_eq!(t.password.as_deref(), Some("pw"));
        let t = Target::parse("webdav+https://u:pw@files.example/dav/flows", "rfs/x").unwrap();
        assert_eq!(t.protocol, Protocol::WebDav);
        assert_eq!(t.folder_url.as_str(), "https://files.example/dav/flows/");
        assert_eq!((t.port, t.path.as_str()), (443, "/dav/flows"));
        let t = Target::parse("ftp://u:pw@nas/srv/flows", "rfs/x").unwrap();
        assert_eq!(
            (t.protocol, t.port, t.path.as_str()),
            (Protocol::Ftp, 21, "/srv/flows")
        );
        let e = Target::parse("ftps://u:pw-s3cr3t@nas/x", "rfs/x").unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(!e.to_string().contains("s3cr3t"), "{e}");
        let e = Target::parse("nfs://u:pw-s3cr3t@nas/x", "rfs/x").unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(!e.to_string().contains("s3cr3t"), "{e}");
    }
}
