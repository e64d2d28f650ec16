//! The attacker of an OCI registry block: someone holding the registry account (or its
//! storage) who rewrites what blockctl pushed through the distribution HTTP API, as any OCI
//! client would. HEAD is the `dev.blockctl.head` annotation of the manifest tagged `current`,
//! a version's manifest is the config blob of the artifact tagged with its id, its signature
//! the one layer of the artifact tagged `<version>.sig`.

use async_trait::async_trait;
use serde_json::Value;
use sha2::{Digest, Sha256};
use storage_core::BlockPath;

use super::distribution::{OciRegistry, basic_header};
use super::http::{Response, request};
use crate::attacker::Attacker;

const HEAD: &str = "dev.blockctl.head";
const VERSION: &str = "dev.blockctl.version";
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// Rewrites the repositories below `prefix` of one registry.
pub struct RegistryAttacker {
    base: String,
    authorization: String,
    prefix: String,
}

impl OciRegistry {
    /// An attacker with this registry's account, for a block whose `repository` is `prefix`.
    pub fn attacker(&self, prefix: &str) -> RegistryAttacker {
        RegistryAttacker {
            base: format!("http://{}", self.host),
            authorization: basic_header(&self.user, &self.password),
            prefix: prefix.trim_matches('/').to_string(),
        }
    }
}

fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

impl RegistryAttacker {
    fn repo(&self, at: &BlockPath) -> String {
        match at.is_root() {
            true => self.prefix.clone(),
            false => format!("{}/{at}", self.prefix),
        }
    }

    fn call(&self, method: &str, url: &str, content_type: Option<&str>, body: &[u8]) -> Response {
        let mut headers = vec![
            ("Authorization", self.authorization.as_str()),
            ("Accept", OCI_MANIFEST),
        ];
        if let Some(t) = content_type {
            headers.push(("Content-Type", t));
        }
        let r = request(method, url, &headers, body).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            (200..300).contains(&r.status),
            "{method} {url}: {} {}",
            r.status,
            r.text()
        );
        r
    }

    fn image(&self, repo: &str, tag: &str) -> Value {
        let url = format!("{}/v2/{repo}/manifests/{tag}", self.base);
        serde_json::from_slice(&self.call("GET", &url, None, b"").body).expect("a manifest")
    }

    fn put_image(&self, repo: &str, tag: &str, manifest: &Value) {
        let url = format!("{}/v2/{repo}/manifests/{tag}", self.base);
        let body = serde_json::to_vec(manifest).unwrap();
        self.call("PUT", &url, Some(OCI_MANIFEST), &body);
    }

    fn blob(&self, repo: &str, digest: &str) -> Vec<u8> {
        let url = format!("{}/v2/{repo}/blobs/{digest}", self.base);
        self.call("GET", &url, None, b"").body
    }

    /// Uploads `data` (POST for a session, PUT of the whole blob); returns its digest.
    fn push_blob(&self, repo: &str, data: &[u8]) -> String {
        let digest = sha256(data);
        let url = format!("{}/v2/{repo}/blobs/uploads/", self.base);
        let started = self.call("POST", &url, None, b"");
        let location = started.header("location").expect("an upload location");
        let location = match location.starts_with('/') {
            true => format!("{}{location}", self.base),
            false => location.to_string(),
        };
        let sep = if location.contains('?') { '&' } else { '?' };
        let url = format!("{location}{sep}digest={digest}");
        self.call("PUT", &url, Some("application/octet-stream"), data);
        digest
    }

    /// Points the config (or the first layer) of the manifest tagged `tag` at `data`.
    fn replace_blob(&self, repo: &str, tag: &str, layer: bool, data: &[u8]) -> Value {
        let digest = self.push_blob(repo, data);
        let mut m = self.image(repo, tag);
        let d = match layer {
            true => &mut m["layers"][0],
            false => &mut m["config"],
        };
        d["digest"] = Value::String(digest);
        d["size"] = Value::from(data.len());
        self.put_image(repo, tag, &m);
        m
    }
}

fn annotation<'a>(m: &'a Value, key: &str) -> Option<&'a str> {
    m["annotations"][key].as_str()
}

#[async_trait]
impl Attacker for RegistryAttacker {
    async fn head(&self, at: &BlockPath) -> Vec<u8> {
        let current = self.image(&self.repo(at), "current");
        annotation(&current, HEAD)
            .expect("a signed `current`")
            .as_bytes()
            .to_vec()
    }

    /// `current` moved onto the artifact of the version the record names (when it is
    /// stored, else left on its own), carrying the record: what a put writes.
    async fn set_head(&self, at: &BlockPath, record: Vec<u8>) {
        let repo = self.repo(at);
        let named = serde_json::from_slice::<Value>(&record)
            .ok()
            .and_then(|r| r["version"].as_str().map(str::to_string));
        let mut current = self.image(&repo, "current");
        if let Some(v) = named
            && annotation(&current, VERSION) != Some(v.as_str())
        {
            current = self.image(&repo, &v);
            current["annotations"]["dev.blockctl.tag"] = Value::String("current".into());
        }
        current["annotations"][HEAD] = Value::String(String::from_utf8(record).unwrap());
        self.put_image(&repo, "current", &current);
    }

    async fn manifest(&self, at: &BlockPath, version: &str) -> Vec<u8> {
        let repo = self.repo(at);
        let m = self.image(&repo, version);
        self.blob(&repo, m["config"]["digest"].as_str().unwrap())
    }

    /// The version's artifact, and `current` when it is that version, take `bytes` as their
    /// config blob.
    async fn set_manifest(&self, at: &BlockPath, version: &str, bytes: Vec<u8>) {
        let repo = self.repo(at);
        self.replace_blob(&repo, version, false, &bytes);
        let current = self.image(&repo, "current");
        if annotation(&current, VERSION) == Some(version) {
            self.replace_blob(&repo, "current", false, &bytes);
        }
    }

    async fn signature(&self, at: &BlockPath, version: &str) -> Vec<u8> {
        let repo = self.repo(at);
        let m = self.image(&repo, &format!("{version}.sig"));
        self.blob(&repo, m["layers"][0]["digest"].as_str().unwrap())
    }

    async fn set_signature(&self, at: &BlockPath, version: &str, text: Vec<u8>) {
        let repo = self.repo(at);
        self.replace_blob(&repo, &format!("{version}.sig"), true, &text);
    }
}
