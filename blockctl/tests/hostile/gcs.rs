//! A GCS endpoint (a `gcs` block with a custom endpoint): a listing page, an upload's answer
//! and an error answer sent without end, which opendal's GCS client would read whole before
//! parsing.

use super::*;

/// An anonymous `gcs` block on `server` as its endpoint, bucket `flows`.
fn gcs(server: &HostileHttp) -> Home {
    home_with(
        "gcs",
        &[
            "bucket=flows".into(),
            format!("endpoint={}", server.url("")),
            "anonymous=true".into(),
            format!("timeout={TIMEOUT}"),
        ],
    )
}

const GCS: &str = "gcs/hostile/app";

/// The JSON API's answer for an object that is not there.
fn no_such_object() -> Reply {
    Reply::Full {
        status: 404,
        headers: vec![("Content-Type".into(), "application/json".into())],
        body: br#"{"error":{"code":404,"message":"No such object: flows/app"}}"#.to_vec(),
    }
}

/// Whether `r` asks for a page of the bucket's listing.
fn is_listing(r: &Request) -> bool {
    r.path.split('?').next().unwrap_or_default().ends_with("/o")
        && r.path.starts_with("/storage/v1/")
}

#[test]
fn get_refuses_an_endless_gcs_listing_page_at_its_cap() {
    let server = start(|r| match is_listing(r) {
        true => Reply::endless(200, "application/json", &[b' '; 64 * 1024]),
        false => no_such_object(),
    });
    let run = get(&gcs(&server), GCS);
    assert_refused(&run, "gcs/hostile", 5, "LISTING_PAGE_MAX");
    assert!(
        server.requests().iter().any(is_listing),
        "no listing reached the server"
    );
}

#[test]
fn get_refuses_an_endless_gcs_error_answer_at_its_cap() {
    let server = start(|_| Reply::endless(403, "application/json", &[b' '; 64 * 1024]));
    let run = get(&gcs(&server), GCS);
    assert_refused(&run, "gcs/hostile", 5, "SMALL_ANSWER_MAX");
}

#[test]
fn put_refuses_an_endless_gcs_upload_answer_at_its_cap() {
    let server = start(|r| match r.path.starts_with("/upload/") {
        true => Reply::endless(200, "application/json", &[b' '; 64 * 1024]),
        false if is_listing(r) => Reply::ok("application/json", r#"{"kind":"storage#objects"}"#),
        false => no_such_object(),
    });
    let run = put(&gcs(&server), GCS);
    assert_refused(&run, "gcs/hostile", 5, "SMALL_ANSWER_MAX");
    assert!(
        server
            .requests()
            .iter()
            .any(|r| r.path.starts_with("/upload/")),
        "no upload reached the server"
    );
}
