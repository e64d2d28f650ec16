//! S3 blocks: object_store's S3 client under the generic adapter. Custom endpoints use
//! path-style requests; HEAD swaps are conditional (If-Match / If-None-Match).

mod profile;

use std::sync::Arc;
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::client::ReqwestConnector;
use storage_core::adapter::{CappedConnector, client_options};
use storage_core::{Error, ObjectStoreBlock, Result};

use FieldKind::{Bool, String as Text};
use serde::Deserialize;
use storage_core::slug::BlockType;
use storage_core::{BlockConfig, Capabilities, FieldKind, FieldSpec, Secret, TypeSpec};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    pub bucket: String,
    pub prefix: Option<String>,
    pub region: Option<String>,
    pub endpoint: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<Secret>,
    pub session_token: Option<Secret>,
    pub allow_http: Option<bool>,
    pub virtual_hosted_style: Option<bool>,
    pub timeout: Option<i64>,
}

impl BlockConfig for S3Config {
    const SPEC: TypeSpec = TypeSpec {
        block_type: BlockType::S3,
        summary: "an S3 bucket (AWS or any S3-compatible server)",
        fields: &[
            FieldSpec::new("bucket", Text, "bucket name").required(),
            FieldSpec::new("prefix", Text, "key prefix inside the bucket"),
            FieldSpec::new("region", Text, "region (default us-east-1)"),
            FieldSpec::new(
                "endpoint",
                Text,
                "custom endpoint URL; path-style addressing by default",
            ),
            FieldSpec::new(
                "access_key_id",
                Text,
                "access key id (else from the AWS environment)",
            ),
            FieldSpec::new("secret_access_key", Text, "secret access key, or env:NAME").secret(),
            FieldSpec::new("session_token", Text, "session token, or env:NAME").secret(),
            FieldSpec::new("allow_http", Bool, "allow plain http endpoints"),
            FieldSpec::new(
                "virtual_hosted_style",
                Bool,
                "use virtual-hosted-style requests",
            ),
            FieldSpec::timeout("seconds one request may take before it is retried (default 300)"),
        ],
        capabilities: CAPABILITIES,
    };
}

pub const CAPABILITIES: Capabilities = Capabilities::OBJECT_STORE;

/// How long one request may take when the block sets no `timeout`.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// Builds the block; credentials the block leaves out come from the standard AWS
/// environment variables.
pub fn open(config: &S3Config, label: &str) -> Result<ObjectStoreBlock> {
    let bad = |e: object_store::Error| {
        Error::Usage(format!(
            "{label}: {}",
            storage_core::secret::redact(&e.to_string())
        ))
    };
    let mut b = AmazonS3Builder::from_env()
        .with_bucket_name(&config.bucket)
        .with_retry(storage_core::retry_config())
        .with_http_connector(CappedConnector(ReqwestConnector::default()));
    let mut secrets = Vec::new();
    let env_has = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
    // Keys and region the block leaves out come from the AWS environment variables (read by
    // from_env above), else from the shared credentials/config files.
    let profile = profile::from_environment();
    let region = config.region.clone().or_else(|| {
        (!env_has("AWS_REGION") && !env_has("AWS_DEFAULT_REGION"))
            .then(|| profile.region.clone().unwrap_or_else(|| "us-east-1".into()))
    });
    if let Some(region) = region {
        b = b.with_region(region);
    }
    if config.access_key_id.is_none()
        && !env_has("AWS_ACCESS_KEY_ID")
        && let (Some(id), Some(key)) = (&profile.access_key_id, &profile.secret_access_key)
    {
        secrets.push(key.clone());
        b = b.with_access_key_id(id).with_secret_access_key(key);
        if let Some(token) = &profile.session_token {
            secrets.push(token.clone());
            b = b.with_token(token);
        }
    }
    if let Some(endpoint) = &config.endpoint {
        b = b
            .with_endpoint(endpoint)
            .with_virtual_hosted_style_request(config.virtual_hosted_style.unwrap_or(false));
    } else if let Some(v) = config.virtual_hosted_style {
        b = b.with_virtual_hosted_style_request(v);
    }
    let plain_http = config
        .endpoint
        .as_deref()
        .is_some_and(|e| e.starts_with("http://"));
    let allow_http = config.allow_http.unwrap_or(plain_http);
    let options = client_options(label, config.timeout, DEFAULT_TIMEOUT, allow_http)?;
    b = b.with_allow_http(allow_http).with_client_options(options);
    if let Some(id) = &config.access_key_id {
        b = b.with_access_key_id(id);
    }
    if let Some(key) = &config.secret_access_key {
        let key = key.resolve("secret_access_key")?;
        secrets.push(key.clone());
        b = b.with_secret_access_key(key);
    }
    if let Some(token) = &config.session_token {
        let token = token.resolve("session_token")?;
        secrets.push(token.clone());
        b = b.with_token(token);
    }
    let store = Arc::new(b.build().map_err(bad)?);
    let prefix = config.prefix.as_deref().unwrap_or("");
    // Package uploads go through the multipart API with their ids recorded, so gc can
    // abort what a killed put left.
    Ok(
        ObjectStoreBlock::new(store.clone(), prefix, label, CAPABILITIES)
            .with_multipart(store)
            .with_secrets(secrets),
    )
}
