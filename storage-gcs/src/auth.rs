//! Credentials. One description of where the block's credentials come from builds both the
//! chain opendal's GCS service signs with and the signer of the conditional writes this crate
//! sends itself, so both always use the same identity.

use std::path::Path;

use reqsign_core::{Context, OsEnv, ProvideCredentialChain, Signer, StaticEnv};
use reqsign_core::{Env as _, hash::base64_decode};
use reqsign_file_read_tokio::TokioFileRead;
use reqsign_google::{
    Credential, DefaultCredentialProvider, FileCredentialProvider, RequestSigner,
    StaticCredentialProvider,
};
use storage_core::{Error, Result};

/// The OAuth scope of every request: objects are read, written and deleted.
pub(crate) const SCOPE: &str = "https://www.googleapis.com/auth/devstorage.read_write";

/// Where the block's credentials come from.
#[derive(Clone)]
pub(crate) enum Source {
    /// No credentials are sent, and none are looked for (emulators, public buckets).
    Anonymous,
    /// A service account key, as JSON.
    Key(String),
    /// A service account key file.
    File(String),
    /// Application default credentials: `GOOGLE_APPLICATION_CREDENTIALS`, gcloud's
    /// well-known file, then the VM metadata server.
    Default,
}

impl Source {
    /// `key` is the resolved `service_account_key` (JSON, or base64 of the JSON).
    pub(crate) fn new(
        label: &str,
        anonymous: bool,
        key: Option<&str>,
        path: Option<&str>,
    ) -> Result<Source> {
        if anonymous {
            if key.is_some() || path.is_some() {
                return Err(Error::Usage(format!(
                    "{label}: anonymous=true sends no credentials; drop service_account_key \
                     and service_account_path, or anonymous"
                )));
            }
            return Ok(Source::Anonymous);
        }
        if key.is_some() && path.is_some() {
            return Err(Error::Usage(format!(
                "{label}: set service_account_key or service_account_path, not both"
            )));
        }
        if let Some(key) = key {
            return key_json(key).map(Source::Key).ok_or_else(|| {
                Error::Usage(format!(
                    "{label}: service_account_key is neither a JSON key nor base64 of one"
                ))
            });
        }
        if let Some(path) = path {
            if !Path::new(path).is_file() {
                return Err(Error::Usage(format!(
                    "{label}: service_account_path {path} is not a readable file"
                )));
            }
            return Ok(Source::File(path.to_string()));
        }
        Ok(Source::Default)
    }

    /// The credential providers, first match wins. `None` when anonymous.
    pub(crate) fn chain(&self) -> Option<ProvideCredentialChain<Credential>> {
        let chain = ProvideCredentialChain::new();
        Some(match self {
            Source::Anonymous => return None,
            Source::Key(json) => {
                chain.push(StaticCredentialProvider::new(json.clone()).with_scope(SCOPE))
            }
            Source::File(path) => {
                chain.push(FileCredentialProvider::new(path.clone()).with_scope(SCOPE))
            }
            Source::Default => chain.push(DefaultCredentialProvider::new()),
        })
    }

    /// A signer for requests this crate sends itself; `http` carries its token requests.
    pub(crate) fn signer(&self, http: opendal::HttpTransporter) -> Option<Signer<Credential>> {
        let chain = self.chain()?;
        let mut envs = OsEnv.vars();
        envs.insert("GOOGLE_SCOPE".to_string(), SCOPE.to_string());
        let ctx = Context::new()
            .with_file_read(TokioFileRead)
            .with_http_send(http)
            .with_env(StaticEnv {
                home_dir: OsEnv.home_dir(),
                envs,
            });
        Some(Signer::new(
            ctx,
            chain,
            RequestSigner::new("storage").with_scope(SCOPE),
        ))
    }
}

/// The key as JSON: as given when it is JSON, decoded when it is base64 of JSON.
fn key_json(key: &str) -> Option<String> {
    let key = key.trim();
    let is_json =
        |s: &str| serde_json::from_str::<serde_json::Value>(s).is_ok_and(|v| v.is_object());
    if is_json(key) {
        return Some(key.to_string());
    }
    let decoded = String::from_utf8(base64_decode(key).ok()?).ok()?;
    is_json(&decoded).then_some(decoded)
}

/// The values in a key that must never be shown: the key itself, and its private parts.
pub(crate) fn key_secrets(raw: &str, json: &str) -> Vec<String> {
    let mut out = vec![raw.to_string(), json.to_string()];
    if let Ok(serde_json::Value::Object(fields)) = serde_json::from_str(json) {
        for name in [
            "private_key",
            "private_key_id",
            "client_secret",
            "refresh_token",
        ] {
            if let Some(serde_json::Value::String(v)) = fields.get(name) {
                out.push(v.clone());
                // The PEM body as it may appear with escaped newlines in a message.
                out.push(v.replace('\n', "\\n"));
            }
        }
    }
    out.retain(|s| s.len() >= 8);
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = r#"{"type":"service_account","client_email":"a@b.iam.gserviceaccount.com","private_key":"-----BEGIN PRIVATE KEY-----\nMIIsecret\n-----END PRIVATE KEY-----\n","private_key_id":"0123456789abcdef"}"#;

    #[test]
    fn a_key_is_json_or_base64_of_json() {
        assert_eq!(key_json(KEY).as_deref(), Some(KEY));
        let b64 = reqsign_core::hash::base64_encode(KEY.as_bytes());
        assert_eq!(key_json(&b64).as_deref(), Some(KEY));
        assert_eq!(key_json("not a key"), None);
        assert_eq!(
            key_json("WzEsMl0="),
            None,
            "base64 of a JSON array is no key"
        );
    }

    #[test]
    fn secrets_of_a_key_include_its_private_parts() {
        let s = key_secrets(KEY, KEY);
        assert!(s.iter().any(|v| v.contains("MIIsecret")));
        assert!(s.iter().any(|v| v == "0123456789abcdef"));
    }

    #[test]
    fn conflicting_sources_are_usage_errors() {
        assert!(Source::new("gcs/x", true, Some(KEY), None).is_err());
        assert!(Source::new("gcs/x", false, Some(KEY), Some("/etc/hostname")).is_err());
        assert!(Source::new("gcs/x", false, Some("nope"), None).is_err());
        assert!(Source::new("gcs/x", false, None, Some("/no/such/key.json")).is_err());
        assert!(matches!(
            Source::new("gcs/x", true, None, None),
            Ok(Source::Anonymous)
        ));
        assert!(matches!(
            Source::new("gcs/x", false, Some(KEY), None),
            Ok(Source::Key(_))
        ));
    }
}
