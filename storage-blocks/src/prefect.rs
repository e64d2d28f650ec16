//! Import of the storage blocks saved on a Prefect server into the registry: the block
//! documents are read through Prefect's REST API (secrets included), each is mapped to a
//! block of the same name and the type that reaches the same storage, and saved. A block
//! that cannot be mapped is reported with the reason, never dropped silently; no secret is
//! ever part of a report or an error.

use serde_json::{Map, Value};

use crate::{BlockId, BlockType, Error, Registry, Result};

/// One block document read from Prefect.
#[derive(Clone)]
pub struct PrefectBlock {
    /// The block type's slug, e.g. `s3-bucket`.
    pub type_slug: String,
    /// The block's name, which the imported block keeps.
    pub name: String,
    /// Its fields, secrets in clear and nested blocks (credentials) inlined.
    pub data: Value,
}

impl std::fmt::Debug for PrefectBlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `data` holds secrets.
        write!(f, "PrefectBlock({})", self.label())
    }
}

impl PrefectBlock {
    /// `type-slug/name`, as Prefect shows it.
    pub fn label(&self) -> String {
        format!("{}/{}", self.type_slug, self.name)
    }
}

/// What an import did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ImportReport {
    /// `(blockctl id, Prefect block)` of each block saved (or that would be, on a dry run).
    pub imported: Vec<(String, String)>,
    /// `(Prefect block, reason)` of each block left alone.
    pub skipped: Vec<(String, String)>,
}

/// The API URL and key of the active Prefect profile (`$PREFECT_HOME/profiles.toml`, default
/// `~/.prefect`), where `prefect config set` keeps them; the environment's
/// `PREFECT_API_URL` / `PREFECT_API_KEY` win over it, as in Prefect.
pub fn api_settings() -> (Option<String>, Option<String>) {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let home = env("PREFECT_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| env("HOME").map(|h| std::path::Path::new(&h).join(".prefect")));
    let profiles: Option<toml::Table> = home
        .and_then(|h| std::fs::read_to_string(h.join("profiles.toml")).ok())
        .and_then(|text| text.parse().ok());
    let profile = profiles.as_ref().and_then(|p| {
        let active =
            env("PREFECT_PROFILE").or_else(|| p.get("active")?.as_str().map(str::to_string))?;
        p.get("profiles")?.get(&active)?.as_table().cloned()
    });
    let from_profile = |key: &str| Some(profile.as_ref()?.get(key)?.as_str()?.to_string());
    (
        env("PREFECT_API_URL").or_else(|| from_profile("PREFECT_API_URL")),
        env("PREFECT_API_KEY").or_else(|| from_profile("PREFECT_API_KEY")),
    )
}

/// Reads every named block document of the server at `api_url` (`http://host:port/api`),
/// with `api_key` as a bearer token (Prefect Cloud) when given.
pub async fn fetch_blocks(api_url: &str, api_key: Option<&str>) -> Result<Vec<PrefectBlock>> {
    const PAGE: usize = 200;
    let url = format!("{}/block_documents/filter", api_url.trim_end_matches('/'));
    // A URL may carry `user:password@`; messages show it without.
    let shown = crate::secret::redact(&url);
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .map_err(|e| Error::Backend(format!("Prefect API client: {e}")))?;
    let mut blocks = Vec::new();
    for page in 0.. {
        let body = serde_json::json!({
            "include_secrets": true,
            "limit": PAGE,
            "offset": page * PAGE,
            "block_documents": {"is_anonymous": {"eq_": false}},
        });
        let mut req = client.post(&url).json(&body);
        if let Some(key) = api_key.filter(|k| !k.is_empty()) {
            req = req.bearer_auth(key);
        } else if let Ok(auth) = std::env::var("PREFECT_API_AUTH_STRING") {
            // A self-hosted server behind basic auth takes `user:password`.
            let (user, password) = auth.split_once(':').unwrap_or((&auth, ""));
            req = req.basic_auth(user, Some(password));
        }
        let failed = |what: String| Error::Backend(format!("Prefect API {shown}: {what}"));
        let resp = req
            .send()
            .await
            .map_err(|e| failed(crate::error::one_line(&e.without_url().to_string())))?;
        let status = resp.status();
        if status == 401 || status == 403 {
            return Err(Error::Auth(format!(
                "Prefect API {shown}: {status} (check PREFECT_API_KEY)"
            )));
        }
        if !status.is_success() {
            return Err(failed(format!("{status}")));
        }
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| failed(crate::error::one_line(&e.without_url().to_string())))?;
        let docs: Vec<Value> = serde_json::from_slice(&bytes)
            .map_err(|e| failed(format!("not a list of block documents: {e}")))?;
        let last = docs.len() < PAGE;
        blocks.extend(docs.into_iter().filter_map(|doc| {
            Some(PrefectBlock {
                type_slug: doc.pointer("/block_type/slug")?.as_str()?.to_string(),
                name: doc.get("name")?.as_str()?.to_string(),
                data: doc.get("data").cloned().unwrap_or(Value::Null),
            })
        }));
        if last {
            break;
        }
    }
    Ok(blocks)
}

/// Maps and saves `blocks` (all of them, or none on a `dry_run`). A block already in the
/// registry is left alone unless `overwrite`.
pub fn import_blocks(
    registry: &mut Registry,
    blocks: &[PrefectBlock],
    overwrite: bool,
    dry_run: bool,
) -> Result<ImportReport> {
    let mut report = ImportReport::default();
    let mut taken = std::collections::BTreeSet::new();
    for block in blocks {
        let label = block.label();
        let (id, settings) = match map_block(block) {
            Ok(mapped) => mapped,
            Err(why) => {
                report.skipped.push((label, why));
                continue;
            }
        };
        if !taken.insert(id.clone()) {
            report.skipped.push((
                label,
                format!("another Prefect block of this import already maps to {id}"),
            ));
            continue;
        }
        if !overwrite && registry.file().get(&id).is_ok() {
            report
                .skipped
                .push((label, format!("{id} is already in the registry")));
            continue;
        }
        let saved = if dry_run {
            crate::type_spec(id.block_type).and_then(|spec| {
                crate::BlockDocument::from_settings(id.clone(), &spec, &settings).map(drop)
            })
        } else {
            registry.create(id.clone(), &settings, overwrite).map(drop)
        };
        // Validation messages name fields, never the values of secret ones.
        if let Err(e) = saved {
            report.skipped.push((label, e.to_string()));
            continue;
        }
        report.imported.push((id.to_string(), label));
    }
    Ok(report)
}

type Settings = Vec<(String, String)>;

/// The blockctl block for a Prefect block: its id (the type that reaches the same storage,
/// the same name) and its settings, or why it cannot be mapped.
pub fn map_block(block: &PrefectBlock) -> std::result::Result<(BlockId, Settings), String> {
    let empty = Map::new();
    let data = block.data.as_object().unwrap_or(&empty);
    let (block_type, settings) = match block.type_slug.as_str() {
        "local-file-system" => (BlockType::Local, local(data)?),
        "remote-file-system" => remote_file_system(data)?,
        "smb" => (BlockType::Smb, smb(data)?),
        "s3-bucket" => (BlockType::S3, s3_bucket(data)?),
        "s3" => (BlockType::S3, legacy_s3(data)?),
        "gcs-bucket" => (BlockType::Gcs, gcs_bucket(data)?),
        "gcs" => (BlockType::Gcs, legacy_gcs(data)?),
        "azure-blob-storage-container" => (BlockType::Azure, azure_container(data)?),
        "azure" => (BlockType::Azure, legacy_azure(data)?),
        "github-repository" | "github" | "gitlab-repository" | "bitbucket-repository" => {
            (BlockType::Git, git_repository(data)?)
        }
        other => {
            return Err(format!(
                "block type `{other}` has no storage blocks mapping"
            ));
        }
    };
    let id = BlockId::new(block_type, &block.name).map_err(|e| e.to_string())?;
    let settings = settings
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    Ok((id, settings))
}

type Fields = Vec<(&'static str, String)>;

/// A string field (numbers as their text); empty when missing or null.
fn text(data: &Map<String, Value>, key: &str) -> String {
    match data.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        _ => String::new(),
    }
}

/// A nested block (credentials) or dict field.
fn nested<'a>(data: &'a Map<String, Value>, key: &str) -> Option<&'a Map<String, Value>> {
    data.get(key).and_then(Value::as_object)
}

/// Splits `bucket/some/prefix` into the bucket and the prefix.
fn bucket_and_prefix(path: &str) -> (String, String) {
    let path = path.trim_matches('/');
    match path.split_once('/') {
        Some((bucket, prefix)) => (bucket.to_string(), prefix.trim_matches('/').to_string()),
        None => (path.to_string(), String::new()),
    }
}

fn required(value: String, what: &str) -> std::result::Result<String, String> {
    if value.is_empty() {
        Err(format!("it has no {what}"))
    } else {
        Ok(value)
    }
}

fn local(data: &Map<String, Value>) -> std::result::Result<Fields, String> {
    let basepath = required(text(data, "basepath"), "basepath")?;
    let basepath = basepath.strip_prefix("file://").unwrap_or(&basepath);
    if !basepath.starts_with('/') {
        return Err(
            "its basepath is relative to where Prefect ran; only absolute paths map".into(),
        );
    }
    Ok(vec![("basepath", basepath.to_string())])
}

fn smb(data: &Map<String, Value>) -> std::result::Result<Fields, String> {
    let (share, prefix) = bucket_and_prefix(&text(data, "share_path"));
    Ok(vec![
        ("host", required(text(data, "smb_host"), "smb_host")?),
        ("share", required(share, "share in share_path")?),
        ("prefix", prefix),
        ("port", text(data, "smb_port")),
        ("username", text(data, "smb_username")),
        ("password", text(data, "smb_password")),
    ])
}

/// S3 settings from boto-style credentials (`AwsCredentials` or `MinIOCredentials`).
fn s3_credentials(creds: &Map<String, Value>) -> Fields {
    let client = nested(creds, "aws_client_parameters");
    let endpoint = client.map(|c| text(c, "endpoint_url")).unwrap_or_default();
    let mut fields = vec![
        ("access_key_id", text(creds, "aws_access_key_id")),
        ("secret_access_key", text(creds, "aws_secret_access_key")),
        ("session_token", text(creds, "aws_session_token")),
        ("region", text(creds, "region_name")),
    ];
    if fields[0].1.is_empty() {
        fields[0].1 = text(creds, "minio_root_user");
        fields[1].1 = text(creds, "minio_root_password");
    }
    if endpoint.starts_with("http://") {
        fields.push(("allow_http", "true".into()));
    }
    fields.push(("endpoint", endpoint));
    fields
}

fn s3_bucket(data: &Map<String, Value>) -> std::result::Result<Fields, String> {
    let mut fields = vec![
        (
            "bucket",
            required(text(data, "bucket_name"), "bucket_name")?,
        ),
        (
            "prefix",
            text(data, "bucket_folder").trim_matches('/').to_string(),
        ),
    ];
    if let Some(creds) = nested(data, "credentials") {
        if !text(creds, "profile_name").is_empty() && text(creds, "aws_access_key_id").is_empty() {
            return Err(
                "its credentials name an AWS profile; set keys or AWS_PROFILE instead".into(),
            );
        }
        fields.extend(s3_credentials(creds));
    }
    Ok(fields)
}

fn legacy_s3(data: &Map<String, Value>) -> std::result::Result<Fields, String> {
    let (bucket, prefix) = bucket_and_prefix(&text(data, "bucket_path"));
    Ok(vec![
        ("bucket", required(bucket, "bucket in bucket_path")?),
        ("prefix", prefix),
        ("access_key_id", text(data, "aws_access_key_id")),
        ("secret_access_key", text(data, "aws_secret_access_key")),
    ])
}

/// A service account key as JSON text, from a dict or a string field.
fn service_account_key(data: &Map<String, Value>) -> String {
    match data.get("service_account_info") {
        Some(Value::Object(info)) => Value::Object(info.clone()).to_string(),
        Some(Value::String(s)) => s.clone(),
        _ => String::new(),
    }
}

fn gcs_bucket(data: &Map<String, Value>) -> std::result::Result<Fields, String> {
    let mut fields = vec![
        ("bucket", required(text(data, "bucket"), "bucket")?),
        (
            "prefix",
            text(data, "bucket_folder").trim_matches('/').to_string(),
        ),
    ];
    if let Some(creds) = nested(data, "gcp_credentials") {
        fields.push(("service_account_key", service_account_key(creds)));
        fields.push(("service_account_path", text(creds, "service_account_file")));
    }
    Ok(fields)
}

fn legacy_gcs(data: &Map<String, Value>) -> std::result::Result<Fields, String> {
    let (bucket, prefix) = bucket_and_prefix(&text(data, "bucket_path"));
    Ok(vec![
        ("bucket", required(bucket, "bucket in bucket_path")?),
        ("prefix", prefix),
        ("service_account_key", service_account_key(data)),
    ])
}

/// The account name of `https://ACCOUNT.blob.core.windows.net`.
fn account_of(url: &str) -> String {
    let host = url.split("://").nth(1).unwrap_or(url);
    host.split('.').next().unwrap_or_default().to_string()
}

fn azure_container(data: &Map<String, Value>) -> std::result::Result<Fields, String> {
    let mut fields = vec![
        (
            "container",
            required(text(data, "container_name"), "container_name")?,
        ),
        (
            "prefix",
            text(data, "base_folder").trim_matches('/').to_string(),
        ),
    ];
    let creds = nested(data, "credentials");
    let connection_string = creds
        .map(|c| text(c, "connection_string"))
        .unwrap_or_default();
    if connection_string.is_empty() {
        let account_url = creds.map(|c| text(c, "account_url")).unwrap_or_default();
        return Err(if account_url.is_empty() {
            "it has no credentials".into()
        } else {
            // Account URL credentials mean Azure AD (DefaultAzureCredential or a service
            // principal), which the azure block does not speak.
            format!(
                "its credentials are Azure AD for account {}; the azure block needs a \
                 connection string, an access key or a SAS token",
                account_of(&account_url)
            )
        });
    }
    fields.push(("connection_string", connection_string));
    Ok(fields)
}

fn legacy_azure(data: &Map<String, Value>) -> std::result::Result<Fields, String> {
    let (container, prefix) = bucket_and_prefix(&text(data, "bucket_path"));
    Ok(vec![
        (
            "container",
            required(container, "container in bucket_path")?,
        ),
        ("prefix", prefix),
        (
            "connection_string",
            text(data, "azure_storage_connection_string"),
        ),
        ("account", text(data, "azure_storage_account_name")),
        ("access_key", text(data, "azure_storage_account_key")),
    ])
}

fn git_repository(data: &Map<String, Value>) -> std::result::Result<Fields, String> {
    let mut url = text(data, "repository_url");
    if url.is_empty() {
        url = text(data, "repository");
    }
    let url = required(url, "repository URL")?;
    let creds = nested(data, "credentials").or_else(|| nested(data, "bitbucket_credentials"));
    let mut token = creds.map(|c| text(c, "token")).unwrap_or_default();
    if token.is_empty() {
        token = text(data, "access_token");
    }
    let username = creds.map(|c| text(c, "username")).unwrap_or_default();
    Ok(vec![
        ("url", url),
        ("reference", text(data, "reference")),
        ("token", token),
        ("username", username),
    ])
}

/// `RemoteFileSystem`: the scheme of its basepath picks the type; fsspec settings give the
/// endpoint and keys.
fn remote_file_system(
    data: &Map<String, Value>,
) -> std::result::Result<(BlockType, Fields), String> {
    let basepath = required(text(data, "basepath"), "basepath")?;
    let (scheme, rest) = basepath
        .split_once("://")
        .ok_or_else(|| format!("its basepath `{basepath}` has no scheme"))?;
    let empty = Map::new();
    let settings = nested(data, "settings").unwrap_or(&empty);
    let client = nested(settings, "client_kwargs").unwrap_or(&empty);
    match scheme {
        "s3" | "s3a" => {
            let (bucket, prefix) = bucket_and_prefix(rest);
            let mut endpoint = text(client, "endpoint_url");
            if endpoint.is_empty() {
                endpoint = text(settings, "endpoint_url");
            }
            let mut fields = vec![
                ("bucket", required(bucket, "bucket")?),
                ("prefix", prefix),
                ("access_key_id", text(settings, "key")),
                ("secret_access_key", text(settings, "secret")),
                ("session_token", text(settings, "token")),
                ("region", text(client, "region_name")),
            ];
            if endpoint.starts_with("http://") {
                fields.push(("allow_http", "true".into()));
            }
            fields.push(("endpoint", endpoint));
            Ok((BlockType::S3, fields))
        }
        "gs" | "gcs" => {
            let (bucket, prefix) = bucket_and_prefix(rest);
            let token = match settings.get("token") {
                Some(Value::Object(info)) => Value::Object(info.clone()).to_string(),
                _ => String::new(),
            };
            Ok((
                BlockType::Gcs,
                vec![
                    ("bucket", required(bucket, "bucket")?),
                    ("prefix", prefix),
                    ("endpoint", text(settings, "endpoint_url")),
                    ("service_account_key", token),
                ],
            ))
        }
        "az" | "abfs" | "abfss" => {
            let (container, prefix) = bucket_and_prefix(rest.split('@').next().unwrap_or(rest));
            Ok((
                BlockType::Azure,
                vec![
                    ("container", required(container, "container")?),
                    ("prefix", prefix),
                    ("connection_string", text(settings, "connection_string")),
                    ("account", text(settings, "account_name")),
                    ("access_key", text(settings, "account_key")),
                    ("sas_token", text(settings, "sas_token")),
                ],
            ))
        }
        "smb" => {
            let (host_port, path) = rest.split_once('/').unwrap_or((rest, ""));
            let (host, port) = match host_port.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), p.to_string()),
                None => (host_port.to_string(), text(settings, "port")),
            };
            let (share, prefix) = bucket_and_prefix(path);
            Ok((
                BlockType::Smb,
                vec![
                    ("host", required(host, "host")?),
                    ("share", required(share, "share")?),
                    ("prefix", prefix),
                    ("port", port),
                    ("username", text(settings, "username")),
                    ("password", text(settings, "password")),
                ],
            ))
        }
        "file" => Ok((BlockType::Local, local(data)?)),
        other => Err(format!(
            "RemoteFileSystem over `{other}://` has no storage blocks type"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn block(type_slug: &str, name: &str, data: Value) -> PrefectBlock {
        PrefectBlock {
            type_slug: type_slug.into(),
            name: name.into(),
            data,
        }
    }

    fn mapped(type_slug: &str, data: Value) -> (String, Vec<(String, String)>) {
        let (id, settings) = map_block(&block(type_slug, "prod", data)).unwrap();
        (id.to_string(), settings)
    }

    fn kv(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn s3_bucket_takes_its_keys_and_endpoint_from_its_credentials() {
        let data = json!({"bucket_name": "flows", "bucket_folder": "team/",
            "credentials": {"aws_access_key_id": "AK", "aws_secret_access_key": "SK",
                "region_name": "eu-west-1",
                "aws_client_parameters": {"endpoint_url": "http://127.0.0.1:9000"}}});
        let expected = kv(&[
            ("bucket", "flows"),
            ("prefix", "team"),
            ("access_key_id", "AK"),
            ("secret_access_key", "SK"),
            ("region", "eu-west-1"),
            ("allow_http", "true"),
            ("endpoint", "http://127.0.0.1:9000"),
        ]);
        assert_eq!(mapped("s3-bucket", data), ("s3/prod".into(), expected));
    }

    #[test]
    fn minio_credentials_map_to_s3_keys() {
        let data = json!({"bucket_name": "b", "credentials": {"minio_root_user": "u",
            "minio_root_password": "p"}});
        let (_, settings) = mapped("s3-bucket", data);
        assert!(settings.contains(&("access_key_id".into(), "u".into())));
        assert!(settings.contains(&("secret_access_key".into(), "p".into())));
    }

    #[test]
    fn remote_file_system_picks_the_type_from_the_scheme() {
        let s3 = json!({"basepath": "s3://flows/team/etl", "settings": {"key": "K",
            "secret": "S", "client_kwargs": {"endpoint_url": "http://127.0.0.1:5000"}}});
        let (id, settings) = mapped("remote-file-system", s3);
        assert_eq!(id, "s3/prod");
        assert!(settings.contains(&("prefix".into(), "team/etl".into())));
        assert!(settings.contains(&("secret_access_key".into(), "S".into())));
        assert!(settings.contains(&("endpoint".into(), "http://127.0.0.1:5000".into())));
        let gcs = json!({"basepath": "gs://b/p"});
        assert_eq!(mapped("remote-file-system", gcs).0, "gcs/prod");
        let smb = json!({"basepath": "smb://nas:1445/share/team", "settings": {
            "username": "u", "password": "pw"}});
        let (id, settings) = mapped("remote-file-system", smb);
        assert_eq!(id, "smb/prod");
        assert!(settings.contains(&("port".into(), "1445".into())));
        let err = map_block(&block(
            "remote-file-system",
            "x",
            json!({"basepath": "sftp://h/p"}),
        ))
        .unwrap_err();
        assert!(err.contains("sftp"), "{err}");
    }

    #[test]
    fn smb_splits_its_share_path() {
        let data = json!({"share_path": "/flows/team", "smb_host": "nas", "smb_port": 445,
            "smb_username": "u", "smb_password": "pw"});
        let expected = kv(&[
            ("host", "nas"),
            ("share", "flows"),
            ("prefix", "team"),
            ("port", "445"),
            ("username", "u"),
            ("password", "pw"),
        ]);
        assert_eq!(mapped("smb", data), ("smb/prod".into(), expected));
    }

    #[test]
    fn gcs_and_azure_and_git_blocks_map() {
        let gcs = json!({"bucket": "b", "gcp_credentials": {"service_account_info":
            {"type": "service_account"}}});
        let (id, settings) = mapped("gcs-bucket", gcs);
        assert_eq!(id, "gcs/prod");
        assert!(settings.contains(&(
            "service_account_key".into(),
            r#"{"type":"service_account"}"#.into()
        )));
        let azure = json!({"container_name": "c", "credentials": {"connection_string": "CS"}});
        assert_eq!(
            mapped("azure-blob-storage-container", azure),
            (
                "azure/prod".into(),
                kv(&[("container", "c"), ("connection_string", "CS")])
            )
        );
        let github = json!({"repository_url": "https://github.com/o/r.git", "reference": "main",
            "credentials": {"token": "T"}});
        assert_eq!(
            mapped("github-repository", github),
            (
                "git/prod".into(),
                kv(&[
                    ("url", "https://github.com/o/r.git"),
                    ("reference", "main"),
                    ("token", "T")
                ])
            )
        );
        let bitbucket = json!({"repository": "https://bitbucket.org/o/r.git",
            "bitbucket_credentials": {"token": "T", "username": "me"}});
        let (_, settings) = mapped("bitbucket-repository", bitbucket);
        assert!(settings.contains(&("username".into(), "me".into())));
    }

    #[test]
    fn an_unmappable_block_says_why_without_its_secrets() {
        let azure_ad = json!({"container_name": "c", "credentials": {
            "account_url": "https://acct.blob.core.windows.net", "client_secret": "SECRET"}});
        let err = map_block(&block("azure-blob-storage-container", "x", azure_ad)).unwrap_err();
        assert!(err.contains("acct") && !err.contains("SECRET"), "{err}");
        let err = map_block(&block("slack-webhook", "x", json!({"url": "SECRET"}))).unwrap_err();
        assert!(
            err.contains("slack-webhook") && !err.contains("SECRET"),
            "{err}"
        );
        let err = map_block(&block(
            "local-file-system",
            "Bad_Name",
            json!({"basepath": "/srv"}),
        ))
        .unwrap_err();
        assert!(err.contains("Bad_Name"), "{err}");
        let relative = json!({"basepath": "flows"});
        assert!(map_block(&block("local-file-system", "x", relative)).is_err());
    }

    #[tokio::test]
    async fn an_unreachable_server_is_reported_without_the_credentials_of_its_url() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://admin:SECRET-PW@127.0.0.1:{port}/api");
        let err = fetch_blocks(&url, Some("SECRET-KEY")).await.unwrap_err();
        let text = err.to_string();
        assert_eq!(err.exit_code(), 1);
        assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
        assert!(!text.contains("SECRET"), "{text}");
    }

    #[test]
    fn import_saves_mapped_blocks_and_reports_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let file = crate::RegistryFile::load_from(dir.path().join("blocks.toml")).unwrap();
        let mut registry = Registry::from_file(file);
        let blocks = [
            block(
                "local-file-system",
                "team",
                json!({"basepath": "/srv/flows"}),
            ),
            block("smb", "team", json!({"share_path": "/s", "smb_host": "h"})),
            block(
                "remote-file-system",
                "team",
                json!({"basepath": "s3://b/p"}),
            ),
            block("s3-bucket", "team", json!({"bucket_name": "b"})),
            block("json", "settings", json!({"value": 1})),
        ];
        let report = import_blocks(&mut registry, &blocks, false, false).unwrap();
        let imported: Vec<&str> = report.imported.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(imported, ["local/team", "smb/team", "s3/team"]);
        let skipped: Vec<&str> = report.skipped.iter().map(|(b, _)| b.as_str()).collect();
        assert_eq!(skipped, ["s3-bucket/team", "json/settings"]);
        let again = import_blocks(&mut registry, &blocks[..1], false, false).unwrap();
        assert!(again.skipped[0].1.contains("already in the registry"));
        let forced = import_blocks(&mut registry, &blocks[..1], true, false).unwrap();
        assert_eq!(forced.imported.len(), 1);
    }
}
