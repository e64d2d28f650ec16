//! Azure Blob blocks: object_store's Azure client under the generic adapter. Account key,
//! connection string, SAS token or the Azurite emulator; a chosen endpoint works without any
//! process-wide environment variable.

use std::sync::Arc;
use std::time::Duration;

use object_store::azure::MicrosoftAzureBuilder;
use object_store::client::ReqwestConnector;
use storage_core::adapter::{CappedConnector, client_options};
use storage_core::secret::resolve_optional;
use storage_core::{Error, ObjectStoreBlock, Result};

/// Azurite's well-known development account.
pub const EMULATOR_ACCOUNT: &str = "devstoreaccount1";
pub const EMULATOR_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

use FieldKind::{Bool, String as Text};
use serde::Deserialize;
use storage_core::slug::BlockType;
use storage_core::{BlockConfig, Capabilities, FieldKind, FieldSpec, Secret, TypeSpec};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AzureConfig {
    pub container: String,
    pub prefix: Option<String>,
    pub account: Option<String>,
    pub access_key: Option<Secret>,
    pub connection_string: Option<Secret>,
    pub sas_token: Option<Secret>,
    pub endpoint: Option<String>,
    pub use_emulator: Option<bool>,
    pub timeout: Option<i64>,
}

impl BlockConfig for AzureConfig {
    const SPEC: TypeSpec = TypeSpec {
        block_type: BlockType::Azure,
        summary: "an Azure Blob Storage container",
        fields: &[
            FieldSpec::new("container", Text, "container name").required(),
            FieldSpec::new("prefix", Text, "blob name prefix inside the container"),
            FieldSpec::new("account", Text, "storage account name"),
            FieldSpec::new("access_key", Text, "account key, or env:NAME").secret(),
            FieldSpec::new("connection_string", Text, "connection string, or env:NAME").secret(),
            FieldSpec::new("sas_token", Text, "SAS token, or env:NAME").secret(),
            FieldSpec::new("endpoint", Text, "blob endpoint URL"),
            FieldSpec::new(
                "use_emulator",
                Bool,
                "talk to Azurite with its well-known account",
            ),
            FieldSpec::timeout("seconds one request may take before it is retried (default 300)"),
        ],
        capabilities: CAPABILITIES,
    };
}

pub const CAPABILITIES: Capabilities = Capabilities::OBJECT_STORE;

/// How long one request may take when the block sets no `timeout`.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// The parts of a connection string this block uses.
fn parse_connection_string(cs: &str) -> (Option<String>, Option<String>, Option<String>) {
    let mut account = None;
    let mut key = None;
    let mut endpoint = None;
    for part in cs.split(';').filter(|p| !p.is_empty()) {
        if let Some((k, v)) = part.split_once('=') {
            match k.trim() {
                "AccountName" => account = Some(v.to_string()),
                "AccountKey" => key = Some(v.to_string()),
                "BlobEndpoint" => endpoint = Some(v.trim_end_matches('/').to_string()),
                _ => {}
            }
        }
    }
    (account, key, endpoint)
}

pub fn open(config: &AzureConfig, label: &str) -> Result<ObjectStoreBlock> {
    let mut account = config.account.clone();
    let mut key = resolve_optional(config.access_key.as_ref(), "access_key")?;
    let mut endpoint = config.endpoint.clone();
    let mut secrets = Vec::new();
    if let Some(cs) = &config.connection_string {
        let cs = cs.resolve("connection_string")?;
        let (a, k, e) = parse_connection_string(&cs);
        account = account.or(a);
        key = key.or(k);
        endpoint = endpoint.or(e);
        secrets.push(cs);
    }
    if config.use_emulator.unwrap_or(false) {
        account = account.or(Some(EMULATOR_ACCOUNT.into()));
        key = key.or(Some(EMULATOR_KEY.into()));
        endpoint = endpoint.or(Some(format!("http://127.0.0.1:10000/{EMULATOR_ACCOUNT}")));
    }
    let account = account.ok_or_else(|| {
        Error::Usage(format!(
            "{label}: set `account` (or a connection_string, or use_emulator=true)"
        ))
    })?;
    let mut b = MicrosoftAzureBuilder::new()
        .with_container_name(&config.container)
        .with_account(&account)
        .with_retry(storage_core::retry_config())
        .with_http_connector(CappedConnector(ReqwestConnector::default()));
    if let Some(k) = key {
        secrets.push(k.clone());
        b = b.with_access_key(k);
    }
    if let Some(sas) = &config.sas_token {
        let sas = sas.resolve("sas_token")?;
        let pairs: Vec<(String, String)> =
            url::form_urlencoded::parse(sas.trim_start_matches('?').as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
        secrets.extend(
            pairs
                .iter()
                .filter(|(k, _)| k == "sig")
                .map(|(_, v)| v.clone()),
        );
        secrets.push(sas);
        b = b.with_sas_authorization(pairs);
    }
    let allow_http = endpoint
        .as_deref()
        .is_some_and(|e| e.starts_with("http://"));
    if let Some(e) = endpoint {
        b = b.with_endpoint(e);
    }
    let options = client_options(label, config.timeout, DEFAULT_TIMEOUT, allow_http)?;
    b = b.with_allow_http(allow_http).with_client_options(options);
    let store = b.build().map_err(|e| {
        Error::Usage(format!(
            "{label}: {}",
            storage_core::secret::scrub(&e.to_string(), &secrets)
        ))
    })?;
    let prefix = config.prefix.as_deref().unwrap_or("");
    Ok(ObjectStoreBlock::new(Arc::new(store), prefix, label, CAPABILITIES).with_secrets(secrets))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_string_parts_are_read() {
        let (a, k, e) = parse_connection_string(
            "DefaultEndpointsProtocol=http;AccountName=acct;AccountKey=a2V5;BlobEndpoint=http://127.0.0.1:1/acct/;",
        );
        assert_eq!(a.as_deref(), Some("acct"));
        assert_eq!(k.as_deref(), Some("a2V5"));
        assert_eq!(e.as_deref(), Some("http://127.0.0.1:1/acct"));
    }
}
