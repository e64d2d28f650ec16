//! Authentication failures against servers that check signatures: s3s-fs (SigV4) and Azurite
//! (SharedKey). The right keys must work, and wrong ones must fail every operation with exit
//! code 4, with neither the wrong secret nor the right one anywhere in the error.

use std::fmt::Debug;
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use conformance::harness::{Azurite, S3sFs, shared};
use conformance::tree::{small_tree, snapshot};
use storage_azure::AzureConfig;
use storage_core::{BlockPath, GetOptions, PutOptions, Result, Secret, StorageBlock};
use storage_s3::S3Config;

/// Distinctive, so any echo of it in an error is found.
const WRONG_S3_SECRET: &str = "wrong-s3-secret-QX7v-must-never-be-echoed";

fn s3_config(server: &S3sFs, bucket: &str, secret: &str) -> S3Config {
    S3Config {
        bucket: bucket.into(),
        prefix: Some("team/flows".into()),
        region: Some("us-east-1".into()),
        endpoint: Some(server.endpoint.clone()),
        access_key_id: Some(server.access_key.into()),
        secret_access_key: Some(Secret::new(secret)),
        session_token: None,
        allow_http: Some(true),
        virtual_hosted_style: None,
        timeout: None,
    }
}

fn azure_config(azurite: &Azurite, container: &str, key: &str) -> AzureConfig {
    AzureConfig {
        container: container.into(),
        prefix: Some("team/flows".into()),
        account: Some(azurite.account.into()),
        access_key: Some(Secret::new(key)),
        connection_string: None,
        sas_token: None,
        endpoint: Some(azurite.endpoint.clone()),
        use_emulator: None,
        timeout: None,
    }
}

/// A different key of the same shape as Azurite's (64 bytes, base64), so it is used for
/// signing rather than refused as malformed.
fn wrong_azure_key() -> String {
    STANDARD.encode(b"wrong-azure-key-must-never-be-echoed-0123456789-abcdefghijklmnop")
}

/// Puts a small tree at `at` with the right keys, so that the refused operations below would
/// have something to read if the server let them through.
async fn seed(block: &dyn StorageBlock, at: &BlockPath, scratch: &Path) {
    let src = scratch.join("seed");
    small_tree(&src, "seed");
    block
        .put_directory(&src, at, &PutOptions::default())
        .await
        .expect("put with the right keys");
}

/// `result` must be an authentication failure (exit 4) whose text, shown or debugged, holds
/// none of `secrets`.
fn assert_auth_failure<T: Debug>(what: &str, result: Result<T>, secrets: &[&str]) {
    let err = match result {
        Ok(v) => panic!("{what}: expected an authentication failure, got {v:?}"),
        Err(e) => e,
    };
    let (shown, debugged) = (err.to_string(), format!("{err:?}"));
    eprintln!("{what}: exit {}: {shown}", err.exit_code());
    assert_eq!(err.exit_code(), 4, "{what}: wrong exit code for: {shown}");
    for secret in secrets {
        assert!(
            !shown.contains(secret) && !debugged.contains(secret),
            "{what}: a secret appears in the error: {debugged}"
        );
    }
}

/// Runs check, put, get and list_versions with `block` (whose keys are wrong) and asserts each
/// is refused as an authentication failure, with nothing written to the destination.
async fn assert_every_operation_refused(
    block: &dyn StorageBlock,
    at: &BlockPath,
    scratch: &Path,
    secrets: &[&str],
) {
    assert_auth_failure("check", block.check().await, secrets);

    let src = scratch.join("src");
    small_tree(&src, "refused");
    let put = block.put_directory(&src, at, &PutOptions::default()).await;
    assert_auth_failure("put_directory", put, secrets);

    let dest = scratch.join("dest");
    let get = block.get_directory(at, &dest, &GetOptions::default()).await;
    assert_auth_failure("get_directory", get, secrets);
    assert!(!dest.exists(), "a refused get created {}", dest.display());

    assert_auth_failure("list_versions", block.list_versions(at).await, secrets);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_signed_requests_are_accepted_by_a_signature_checking_server() {
    let server = shared::<S3sFs>(S3sFs::start);
    server
        .create_bucket("auth-accepted")
        .expect("create bucket");
    let config = s3_config(&server, "auth-accepted", server.secret_key);
    let block = storage_s3::open(&config, "s3/auth").expect("open s3 block");

    block.check().await.expect("check with the right keys");

    let scratch = tempfile::tempdir().unwrap();
    let src = scratch.path().join("src");
    small_tree(&src, "signed");
    let at = BlockPath::parse("etl").unwrap();
    let put = block
        .put_directory(&src, &at, &PutOptions::default())
        .await
        .expect("put with the right keys");
    assert!(!put.skipped);

    let dest = scratch.path().join("dest");
    let got = block
        .get_directory(&at, &dest, &GetOptions::default())
        .await
        .expect("get with the right keys");
    assert_eq!(got.version, put.version);
    assert_eq!(snapshot(&dest), snapshot(&src));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_wrong_secret_is_exit_4_and_never_echoed() {
    let server = shared::<S3sFs>(S3sFs::start);
    server.create_bucket("auth-refused").expect("create bucket");
    let scratch = tempfile::tempdir().unwrap();
    let at = BlockPath::parse("etl").unwrap();
    let right = s3_config(&server, "auth-refused", server.secret_key);
    let right = storage_s3::open(&right, "s3/auth").expect("open s3 block");
    seed(&right, &at, scratch.path()).await;

    let wrong = s3_config(&server, "auth-refused", WRONG_S3_SECRET);
    let wrong = storage_s3::open(&wrong, "s3/auth").expect("open s3 block");
    let secrets = [WRONG_S3_SECRET, server.secret_key];
    assert_every_operation_refused(&wrong, &at, scratch.path(), &secrets).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_wrong_key_is_exit_4_and_never_echoed() {
    let azurite = shared::<Azurite>(Azurite::start);
    azurite
        .create_container("auth-refused")
        .expect("create container");
    let scratch = tempfile::tempdir().unwrap();
    let at = BlockPath::parse("etl").unwrap();
    let right = azure_config(&azurite, "auth-refused", azurite.key);
    let right = storage_azure::open(&right, "azure/auth").expect("open azure block");
    seed(&right, &at, scratch.path()).await;

    let wrong_key = wrong_azure_key();
    assert_ne!(wrong_key, azurite.key);
    let wrong = azure_config(&azurite, "auth-refused", &wrong_key);
    let wrong = storage_azure::open(&wrong, "azure/auth").expect("open azure block");
    let secrets = [wrong_key.as_str(), azurite.key];
    assert_every_operation_refused(&wrong, &at, scratch.path(), &secrets).await;
}
