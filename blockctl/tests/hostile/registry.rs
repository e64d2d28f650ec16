//! An OCI registry: endless or trickled manifests, blobs, tag lists, error bodies and token
//! answers, on a get and on a put, and an upload location on another origin.

use super::*;

/// An `oci` block over `server` as a registry (plain HTTP on 127.0.0.1, anonymous).
fn registry(server: &HostileHttp) -> Home {
    home_with(
        "oci",
        &[
            format!("registry={}", server.host()),
            "repository=team".into(),
            format!("timeout={TIMEOUT}"),
        ],
    )
}

/// [`registry`] with a user name and the password `hostile-pw`.
fn registry_with_login(server: &HostileHttp) -> Home {
    home_with(
        "oci",
        &[
            format!("registry={}", server.host()),
            "repository=team".into(),
            "username=publisher".into(),
            "password=hostile-pw".into(),
            format!("timeout={TIMEOUT}"),
        ],
    )
}

const OCI: &str = "oci/hostile/app";

/// What the registry answers outside the case: `/v2/` open to all, the repository's tags.
fn registry_basics(r: &Request) -> Option<Reply> {
    match r.path.as_str() {
        "/v2/" => Some(Reply::ok("application/json", "{}")),
        p if p.starts_with("/v2/team/app/tags/list") => Some(Reply::ok(
            "application/json",
            r#"{"name":"team/app","tags":["current"]}"#,
        )),
        _ => None,
    }
}

#[test]
fn get_refuses_an_endless_registry_manifest_at_its_cap() {
    let server = start(|r| {
        registry_basics(r).unwrap_or_else(|| match r.path.contains("/manifests/") {
            // Sent 64 KiB at a time, so that the cap, not the deadline, is what ends it.
            true => Reply::endless(
                200,
                "application/vnd.oci.image.manifest.v1+json",
                &[b'{'; 64 * 1024],
            ),
            false => Reply::not_found(),
        })
    });
    let run = get(&registry(&server), OCI);
    assert_refused(&run, "oci/hostile", 5, "REGISTRY_MANIFEST_MAX");
}

#[test]
fn get_refuses_an_endless_config_blob_past_its_declared_size() {
    let config = format!("sha256:{}", "ab".repeat(32));
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.blockctl.package.v2",
        "config": {
            "mediaType": "application/vnd.blockctl.manifest.v2+json+zstd",
            "digest": config,
            "size": 100,
        },
        "layers": [],
        "annotations": {"dev.blockctl.version": "cd".repeat(32)},
    })
    .to_string();
    let server = start(move |r| {
        registry_basics(r).unwrap_or_else(|| match r.path.as_str() {
            p if p.contains("/manifests/") => Reply::ok(
                "application/vnd.oci.image.manifest.v1+json",
                manifest.clone(),
            ),
            p if p.contains("/blobs/") => {
                Reply::endless(200, "application/octet-stream", &[0; 64 * 1024])
            }
            _ => Reply::not_found(),
        })
    });
    let run = get(&registry(&server), OCI);
    assert_refused(&run, "oci/hostile", 5, "longer than the 100 bytes declared");
}

/// Needs the block to pass its `timeout` to the registry client (storage-oci's block.rs:
/// `Registry::with_timeout(.., timeout_of(config, label)?)`); until then a registry request
/// waits the default 60 s.
#[test]
fn get_times_out_on_a_registry_manifest_sent_a_byte_a_second() {
    let server = start(|r| {
        registry_basics(r).unwrap_or_else(|| match r.path.contains("/manifests/") {
            true => Reply::trickle(200, "application/json", vec![b'{'; 200]),
            false => Reply::not_found(),
        })
    });
    let h = home_with(
        "oci",
        &[
            format!("registry={}", server.host()),
            "repository=team".into(),
            format!("timeout={TIMEOUT}"),
        ],
    );
    let run = get(&h, OCI);
    assert_refused(&run, "oci/hostile", 1, "timed out");
}

#[test]
fn get_refuses_an_endless_registry_tag_list_at_its_cap() {
    let server = start(|r| match r.path.as_str() {
        "/v2/" => Reply::ok("application/json", "{}"),
        p if p.starts_with("/v2/team/app/tags/list") => {
            Reply::endless(200, "application/json", &[b' '; 64 * 1024])
        }
        _ => Reply::not_found(),
    });
    // A version prefix is resolved against the version tags.
    let run = get_with(&registry(&server), OCI, &["--version", "abcd"]);
    assert_refused(&run, "oci/hostile", 5, "REGISTRY_TAG_LIST_MAX");
}

#[test]
fn get_refuses_an_endless_registry_error_body_at_its_cap() {
    let server = start(|r| {
        registry_basics(r).unwrap_or_else(|| match r.path.contains("/manifests/") {
            true => Reply::endless(500, "application/json", &[b' '; 64 * 1024]),
            false => Reply::not_found(),
        })
    });
    let run = get(&registry(&server), OCI);
    assert_refused(&run, "oci/hostile", 5, "SMALL_ANSWER_MAX");
}

/// A registry's answer to a request without credentials: a challenge for a token from the
/// realm at `/token` on this same server.
fn token_challenge(r: &Request) -> Reply {
    Reply::Full {
        status: 401,
        headers: vec![(
            "WWW-Authenticate".into(),
            format!(
                r#"Bearer realm="http://{}/token",service="hostile""#,
                r.header("host").unwrap_or("127.0.0.1")
            ),
        )],
        body: Vec::new(),
    }
}

#[test]
fn get_refuses_an_endless_token_answer_at_its_cap() {
    let server = start(move |r| match r.path.as_str() {
        // Every registry request is challenged for a token from the realm below.
        p if p.starts_with("/v2/") && r.header("authorization").is_none() => token_challenge(r),
        p if p.starts_with("/token") => Reply::endless(200, "application/json", &[b' '; 64 * 1024]),
        _ => Reply::not_found(),
    });
    let run = get(&registry(&server), OCI);
    assert_refused(&run, "oci/hostile", 5, "REGISTRY_TOKEN_MAX");
    assert!(
        server
            .requests()
            .iter()
            .any(|r| r.path.starts_with("/token")),
        "the token service was never asked"
    );
}

/// What a registry answers a put that finds nothing stored: no `current`, no blob.
fn empty_registry(r: &Request) -> Option<Reply> {
    match (r.method.as_str(), r.path.as_str()) {
        (_, "/v2/") => Some(Reply::ok("application/json", "{}")),
        (_, p) if p.starts_with("/v2/team/app/tags/list") => Some(Reply::not_found()),
        ("GET" | "HEAD", p) if p.contains("/manifests/") || p.contains("/blobs/sha256:") => {
            Some(Reply::not_found())
        }
        _ => None,
    }
}

#[test]
fn put_refuses_an_endless_upload_error_body_at_its_cap() {
    let server = start(|r| {
        empty_registry(r).unwrap_or_else(|| match r.path.contains("/blobs/uploads/") {
            true => Reply::endless(500, "application/json", &[b' '; 64 * 1024]),
            false => Reply::not_found(),
        })
    });
    let run = put(&registry(&server), OCI);
    assert_refused(&run, "oci/hostile", 5, "SMALL_ANSWER_MAX");
}

#[test]
fn put_refuses_an_endless_push_token_answer_at_its_cap() {
    let server = start(move |r| match r.path.as_str() {
        p if p.starts_with("/v2/") && r.header("authorization").is_none() => token_challenge(r),
        // A pull token is handed out; the token answer for the push scope never ends.
        p if p.starts_with("/token") && p.contains("push") => {
            Reply::endless(200, "application/json", &[b' '; 64 * 1024])
        }
        p if p.starts_with("/token") => Reply::ok("application/json", r#"{"token":"pull-only"}"#),
        _ => empty_registry(r).unwrap_or_else(Reply::not_found),
    });
    let run = put(&registry_with_login(&server), OCI);
    assert_refused(&run, "oci/hostile", 5, "REGISTRY_TOKEN_MAX");
    assert!(
        server.requests().iter().any(|r| r.path.contains("push")),
        "the push scope was never asked for"
    );
}

#[test]
fn a_put_sends_no_credentials_to_an_upload_location_on_another_origin() {
    let server = start(move |r| {
        empty_registry(r).unwrap_or_else(|| match (r.method.as_str(), r.path.as_str()) {
            // The upload goes to `localhost`: the same server, another origin.
            ("POST", p) if p.contains("/blobs/uploads/") => {
                let port = r.header("host").and_then(|h| h.rsplit(':').next()).unwrap();
                Reply::Full {
                    status: 202,
                    headers: vec![(
                        "Location".into(),
                        format!("http://localhost:{port}/elsewhere/upload"),
                    )],
                    body: Vec::new(),
                }
            }
            ("PUT", p) if p.starts_with("/elsewhere/") || p.contains("/manifests/") => {
                Reply::Full {
                    status: 201,
                    headers: Vec::new(),
                    body: Vec::new(),
                }
            }
            _ => Reply::not_found(),
        })
    });
    let run = put(&registry_with_login(&server), OCI);
    assert!(!run.stderr.contains("hostile-pw"), "{}", run.stderr);
    let requests = server.requests();
    let elsewhere: Vec<_> = requests
        .iter()
        .filter(|r| r.path.starts_with("/elsewhere/"))
        .collect();
    assert!(
        !elsewhere.is_empty(),
        "no upload reached the other origin: {}",
        run.stderr
    );
    assert!(
        elsewhere
            .iter()
            .all(|r| r.header("authorization").is_none()),
        "credentials went to another origin"
    );
    assert!(
        requests
            .iter()
            .any(|r| r.path.contains("/blobs/uploads/") && r.header("authorization").is_some()),
        "the registry's own origin got no credentials"
    );
}
