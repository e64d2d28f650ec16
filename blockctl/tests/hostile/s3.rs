//! An S3 endpoint (an `s3` block with a custom endpoint): a listing page and an error answer
//! sent without end, which object_store's client would read whole before parsing.

use super::*;

/// An `s3` block on `server` as its endpoint, bucket `flows`.
fn s3(server: &HostileHttp) -> Home {
    home_with(
        "s3",
        &[
            "bucket=flows".into(),
            format!("endpoint={}", server.url("")),
            "access_key_id=hostile".into(),
            "secret_access_key=hostile-secret-key".into(),
            format!("timeout={TIMEOUT}"),
        ],
    )
}

const S3: &str = "s3/hostile/app";

/// S3's answer for a key that is not there.
fn no_such_key() -> Reply {
    Reply::Full {
        status: 404,
        headers: vec![("Content-Type".into(), "application/xml".into())],
        body: b"<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>NoSuchKey</Code>\
<Message>The specified key does not exist.</Message></Error>"
            .to_vec(),
    }
}

#[test]
fn get_refuses_an_endless_s3_listing_page_at_its_cap() {
    let server = start(|r| match r.path.contains("list-type=") {
        true => Reply::endless(200, "application/xml", &[b' '; 64 * 1024]),
        false => no_such_key(),
    });
    let run = get(&s3(&server), S3);
    assert_refused(&run, "s3/hostile", 5, "LISTING_PAGE_MAX");
    assert!(
        server
            .requests()
            .iter()
            .any(|r| r.path.contains("list-type=")),
        "no listing reached the server"
    );
}

#[test]
fn get_refuses_an_endless_s3_error_answer_at_its_cap() {
    let server = start(|_| Reply::endless(403, "application/xml", &[b' '; 64 * 1024]));
    let run = get(&s3(&server), S3);
    assert_refused(&run, "s3/hostile", 5, "SMALL_ANSWER_MAX");
    assert!(!run.stderr.contains("hostile-secret-key"), "{}", run.stderr);
}
