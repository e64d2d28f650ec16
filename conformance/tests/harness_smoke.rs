//! Smoke tests of the emulator harness: each server starts, answers a real request, and is
//! stopped on drop. A server that cannot be installed or started fails here, never skips.

use conformance::harness::http::request;
use conformance::harness::{Azurite, FakeGcs, Moto};

/// moto checks no signature but treats a request without one as anonymous, which may not read
/// a private object: any SigV4-shaped header will do.
const FAKE_SIGV4: (&str, &str) = (
    "Authorization",
    "AWS4-HMAC-SHA256 Credential=test/20250101/us-east-1/s3/aws4_request, \
     SignedHeaders=host, Signature=0",
);

#[test]
fn moto_starts_and_serves_a_bucket() {
    let moto = Moto::start().unwrap_or_else(|e| panic!("{e}"));
    moto.create_bucket("smoke").unwrap();

    let object = format!("{}/smoke/hello.txt", moto.endpoint);
    let octets = ("Content-Type", "application/octet-stream");
    let put = request("PUT", &object, &[FAKE_SIGV4, octets], b"hi").unwrap();
    assert_eq!(put.status, 200, "{}", put.text());
    let get = request("GET", &object, &[FAKE_SIGV4], b"").unwrap();
    assert_eq!((get.status, get.text().as_str()), (200, "hi"));

    // reset wipes the bucket along with its objects.
    moto.reset();
    let gone = request("GET", &object, &[FAKE_SIGV4], b"").unwrap();
    assert_eq!(gone.status, 404, "{}", gone.text());
}

#[test]
fn azurite_starts() {
    let azurite = Azurite::start().unwrap_or_else(|e| panic!("{e}"));
    assert!(azurite.endpoint.starts_with("http://127.0.0.1:"));
    assert!(azurite.endpoint.ends_with("/devstoreaccount1"));

    // Unsigned, so refused; the reply shows that Azurite serves this account.
    let list = request("GET", &format!("{}?comp=list", azurite.endpoint), &[], b"").unwrap();
    assert_eq!(list.status, 403, "{}", list.text());
    assert_eq!(list.header("x-ms-error-code"), Some("AuthorizationFailure"));
    assert!(
        list.header("server")
            .unwrap_or("")
            .starts_with("Azurite-Blob/")
    );
}

#[test]
fn fake_gcs_starts_and_serves_a_bucket() {
    let gcs = FakeGcs::start().unwrap_or_else(|e| panic!("{e}"));
    gcs.create_bucket("smoke").unwrap();

    let upload = format!(
        "{}/upload/storage/v1/b/smoke/o?uploadType=media&name=hello.txt",
        gcs.endpoint
    );
    let put = request("POST", &upload, &[("Content-Type", "text/plain")], b"hi").unwrap();
    assert_eq!(put.status, 200, "{}", put.text());
    let object = format!("{}/storage/v1/b/smoke/o/hello.txt?alt=media", gcs.endpoint);
    let get = request("GET", &object, &[], b"").unwrap();
    assert_eq!((get.status, get.text().as_str()), (200, "hi"));
}
