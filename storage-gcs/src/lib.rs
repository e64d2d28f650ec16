//! GCS blocks: opendal's GCS service (the JSON API, which fake-gcs-server serves too) adapted
//! to `object_store` by `object_store_opendal`, under the generic adapter. `object_store`'s own
//! GCS client writes through the XML API, which the emulator does not serve.
//!
//! What that stack does not do by itself is done here (`store.rs`): the HEAD swap is a real
//! generation-match write that the server checks (`conditional_writes.rs`), and large packages stream
//! through a resumable upload.

mod auth;
mod capped_answers;
mod conditional_writes;
mod error;
mod store;

use std::sync::Arc;
use std::time::Duration;

use FieldKind::{Bool, String as Text};
use opendal::layers::{RetryLayer, TimeoutLayer};
use opendal::{HttpTransporter, OperationContext, Operator};
use opendal_http_transport_reqwest::ReqwestTransport;
use serde::Deserialize;
use storage_core::slug::BlockType;
use storage_core::{
    BlockConfig, Capabilities, Error, FieldKind, FieldSpec, ObjectStoreBlock, Result, RetryPolicy,
    Secret, TypeSpec,
};

/// The `object_store` crate whose trait [`open_store`] implements.
pub use object_store;

/// Where GCS's JSON API lives when no endpoint is set.
pub const DEFAULT_ENDPOINT: &str = "https://storage.googleapis.com";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcsConfig {
    pub bucket: String,
    pub prefix: Option<String>,
    pub endpoint: Option<String>,
    pub service_account_key: Option<Secret>,
    pub service_account_path: Option<String>,
    pub anonymous: Option<bool>,
    pub timeout: Option<i64>,
}

impl BlockConfig for GcsConfig {
    const SPEC: TypeSpec = TypeSpec {
        block_type: BlockType::Gcs,
        summary: "a Google Cloud Storage bucket",
        fields: &[
            FieldSpec::new("bucket", Text, "bucket name").required(),
            FieldSpec::new("prefix", Text, "object name prefix inside the bucket"),
            FieldSpec::new("endpoint", Text, "custom endpoint URL (emulators)"),
            FieldSpec::new(
                "service_account_key",
                Text,
                "service account key JSON (or its base64), or env:NAME",
            )
            .secret(),
            FieldSpec::new(
                "service_account_path",
                Text,
                "path to a service account key file",
            ),
            FieldSpec::new("anonymous", Bool, "send no credentials"),
            FieldSpec::timeout("seconds one request may take before it is retried (default 60)"),
        ],
        capabilities: CAPABILITIES,
    };
}

pub const CAPABILITIES: Capabilities = Capabilities::OBJECT_STORE;

/// How long one request (or one read or write of a transfer) may take when the block sets
/// no `timeout`.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Builds the block. Without `anonymous` or a key, credentials come from the standard Google
/// environment (`GOOGLE_APPLICATION_CREDENTIALS`, gcloud's file, the VM metadata server).
pub fn open(config: &GcsConfig, label: &str) -> Result<ObjectStoreBlock> {
    let (store, secrets) = build(config, label)?;
    let prefix = config.prefix.as_deref().unwrap_or("");
    Ok(ObjectStoreBlock::new(store, prefix, label, CAPABILITIES).with_secrets(secrets))
}

/// The object store under [`open`]'s block (keys are whole object names: the block's prefix
/// is not applied), for tools and tests that work on objects directly.
pub fn open_store(config: &GcsConfig, label: &str) -> Result<Arc<dyn object_store::ObjectStore>> {
    build(config, label).map(|(store, _)| store)
}

/// The endpoint with no trailing `/`, and without the JSON API's `/storage/v1` should the
/// user have copied that part of a URL too.
fn endpoint(config: &GcsConfig, label: &str) -> Result<String> {
    let raw = config
        .endpoint
        .as_deref()
        .unwrap_or(DEFAULT_ENDPOINT)
        .trim();
    let trimmed = raw.trim_end_matches('/');
    let trimmed = trimmed.strip_suffix("/storage/v1").unwrap_or(trimmed);
    let valid = ["http://", "https://"]
        .iter()
        .any(|s| trimmed.strip_prefix(s).is_some_and(|rest| !rest.is_empty()));
    if !valid {
        return Err(Error::Usage(format!(
            "{label}: endpoint `{}` is not an http:// or https:// URL",
            storage_core::secret::redact(raw)
        )));
    }
    Ok(trimmed.to_string())
}

fn build(
    config: &GcsConfig,
    label: &str,
) -> Result<(Arc<dyn object_store::ObjectStore>, Vec<String>)> {
    if config.bucket.trim().is_empty() {
        return Err(Error::Usage(format!("{label}: bucket is empty")));
    }
    let raw_key = config
        .service_account_key
        .as_ref()
        .map(|k| k.resolve("service_account_key"))
        .transpose()?;
    let source = auth::Source::new(
        label,
        config.anonymous.unwrap_or(false),
        raw_key.as_deref(),
        config.service_account_path.as_deref(),
    )?;
    let secrets = match (&raw_key, &source) {
        (Some(raw), auth::Source::Key(json)) => auth::key_secrets(raw, json),
        _ => Vec::new(),
    };
    let endpoint = endpoint(config, label)?;
    let timeout = storage_core::adapter::request_timeout(label, config.timeout, DEFAULT_TIMEOUT)?;

    // The block's prefix is the adapter's root, so opendal works from the bucket's root.
    let mut builder = opendal::services::Gcs::default()
        .bucket(&config.bucket)
        .endpoint(&endpoint)
        .root("/")
        // Credentials come only from `source`: no environment, no metadata server unless
        // `source` asks for them.
        .disable_config_load()
        .disable_vm_metadata();
    builder = match source.chain() {
        None => builder.skip_signature(),
        Some(chain) => builder.credential_provider_chain(chain),
    };
    let fail = |e: opendal::Error| {
        Error::Usage(format!(
            "{label}: {}",
            storage_core::secret::scrub(&e.to_string(), &secrets)
        ))
    };
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| Error::Backend(format!("{label}: cannot set up HTTP: {e}")))?;
    // Every request of the block, opendal's and ours, goes through the caps on what is read whole.
    let http = HttpTransporter::new(capped_answers::CappedTransport(ReqwestTransport::new(
        client,
    )));
    let op = Operator::new(builder)
        .map_err(fail)?
        .with_context(OperationContext::new().with_http_transport(http.clone()))
        // Each attempt is timed out on its own, so the timeout goes below the retries.
        .layer(
            TimeoutLayer::new()
                .with_timeout(timeout)
                .with_io_timeout(timeout),
        )
        // Timeouts, 5xx, 429 and connection resets.
        .layer(retry_layer(RetryPolicy::CLOUD_REQUEST));
    let json = conditional_writes::JsonApi::new(
        &endpoint,
        &config.bucket,
        http.clone(),
        source.signer(http),
        op.clone(),
        timeout,
    );
    let store = store::GcsStore::new(op, json, &config.bucket);
    Ok((Arc::new(store), secrets))
}

/// `policy` as opendal's retry layer.
fn retry_layer(policy: RetryPolicy) -> RetryLayer {
    let layer = RetryLayer::new()
        .with_min_delay(policy.first_pause)
        .with_factor(policy.growth)
        .with_max_delay(policy.max_pause)
        .with_max_times(policy.tries - 1);
    if policy.jitter {
        layer.with_jitter()
    } else {
        layer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(endpoint: Option<&str>) -> GcsConfig {
        GcsConfig {
            bucket: "b".into(),
            prefix: None,
            endpoint: endpoint.map(str::to_string),
            service_account_key: None,
            service_account_path: None,
            anonymous: Some(true),
            timeout: None,
        }
    }

    #[test]
    fn endpoints_are_normalized() {
        let e = |s| endpoint(&config(s), "gcs/x");
        assert_eq!(e(None).unwrap(), DEFAULT_ENDPOINT);
        assert_eq!(
            e(Some("http://127.0.0.1:4443/")).unwrap(),
            "http://127.0.0.1:4443"
        );
        assert_eq!(
            e(Some("http://127.0.0.1:4443/storage/v1/")).unwrap(),
            "http://127.0.0.1:4443"
        );
        assert!(e(Some("127.0.0.1:4443")).is_err());
        assert!(e(Some("http://")).is_err());
    }

    #[test]
    fn a_bad_key_is_a_usage_error_that_shows_no_key() {
        let mut c = config(None);
        c.anonymous = None;
        c.service_account_key = Some(Secret::new("s3cr3t-not-a-key"));
        let err = open(&c, "gcs/x").unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(!err.to_string().contains("s3cr3t"), "{err}");
    }

    #[test]
    fn timeout_must_be_a_positive_number_of_seconds() {
        let mut c = config(None);
        c.timeout = Some(0);
        let err = open(&c, "gcs/x").unwrap_err();
        assert_eq!(err.exit_code(), 2, "{err}");
        assert!(err.to_string().contains("timeout"), "{err}");
        c.timeout = Some(5);
        assert!(open(&c, "gcs/x").is_ok());
    }

    #[test]
    fn anonymous_blocks_open_without_touching_the_network() {
        let block = open(&config(Some("http://127.0.0.1:9")), "gcs/x").unwrap();
        assert!(storage_core::StorageBlock::capabilities(&block).compare_and_swap);
    }
}
