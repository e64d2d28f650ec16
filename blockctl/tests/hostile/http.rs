//! A web folder (`remote-file-system` over http://): its listings, and a package's own
//! objects (HEAD, manifest, packs) sent endless, oversized or forged.

use super::*;

/// A read-only web folder at `server`'s `/root`.
fn web(server: &HostileHttp, extra: &[&str]) -> Home {
    let mut settings = vec![
        format!("basepath={}", server.url("/root")),
        format!("timeout={TIMEOUT}"),
    ];
    settings.extend(extra.iter().map(|s| s.to_string()));
    home_with("remote-file-system", &settings)
}

/// What a web folder answers outside the case: no package anywhere, so a get reads the
/// folder's listing (a files layout).
fn no_package(r: &Request) -> Option<Reply> {
    r.path.contains("/.blocks").then(Reply::not_found)
}

fn page(names: &[&str]) -> Reply {
    Reply::ok("text/html", autoindex(names))
}

#[test]
fn get_ends_when_an_http_listing_redirects_to_a_folder_already_listed() {
    let server = start(|r| {
        no_package(r).unwrap_or_else(|| match r.path.as_str() {
            "/root/app/" => page(&["f.txt", "sub/"]),
            "/root/app/sub/" => Reply::redirect("/root/app/"),
            _ => Reply::ok("text/plain", "hello"),
        })
    });
    let run = get(&web(&server, &[]), WEB);
    assert_refused(&run, "remote-file-system/hostile", 5, "cycle");
}

#[test]
fn get_ends_when_http_folders_nest_without_end() {
    let server = start(|r| {
        no_package(r).unwrap_or_else(|| match r.path.ends_with('/') {
            true => page(&["d/"]),
            false => Reply::not_found(),
        })
    });
    let run = get(&web(&server, &[]), WEB);
    assert_refused(&run, "remote-file-system/hostile", 5, "WALK_MAX_DEPTH");
    assert!(server.requests().len() < 300, "{}", server.requests().len());
}

#[test]
fn get_refuses_an_endless_http_listing_page_at_its_cap() {
    let server = start(|r| {
        no_package(r).unwrap_or_else(|| Reply::endless(200, "text/html", &[b'x'; 64 * 1024]))
    });
    let run = get(&web(&server, &[]), WEB);
    assert_refused(&run, "remote-file-system/hostile", 5, "LISTING_PAGE_MAX");
}

#[test]
fn get_times_out_on_an_http_listing_sent_a_byte_a_second() {
    let server = start(|r| {
        no_package(r).unwrap_or_else(|| Reply::trickle(200, "text/html", autoindex(&["f.txt"])))
    });
    let run = get(&web(&server, &[]), WEB);
    assert_refused(&run, "remote-file-system/hostile", 1, "timed out");
}

#[test]
fn get_times_out_on_a_package_head_sent_a_byte_a_second() {
    let server = start(|r| match r.path.as_str() {
        p if p.ends_with("/.blocks/HEAD") => {
            Reply::trickle(200, "application/octet-stream", vec![b'{'; 300])
        }
        _ => Reply::not_found(),
    });
    let run = get(&web(&server, &[]), WEB);
    assert_refused(&run, "remote-file-system/hostile", 1, "timed out");
}

#[test]
fn get_refuses_listed_names_that_a_windows_agent_reads_as_paths() {
    for name in ["..%5C..%5Cevil.txt", "C%3Aevil.txt", "a%5Cb.txt"] {
        let server = start(move |r| {
            no_package(r).unwrap_or_else(|| match r.path.as_str() {
                "/root/app/" => page(&[name]),
                _ => Reply::ok("text/plain", "evil"),
            })
        });
        let run = get(&web(&server, &[]), WEB);
        assert_refused(&run, "remote-file-system/hostile", 5, "listing");
    }
}

#[test]
fn a_redirect_to_another_origin_carries_no_credentials() {
    let elsewhere = start(|_| page(&[]));
    let target = elsewhere.url("/elsewhere/");
    let server = start(move |r| {
        no_package(r).unwrap_or_else(|| match r.path.as_str() {
            "/root/app/" => Reply::redirect(&target),
            _ => Reply::not_found(),
        })
    });
    let h = web(&server, &["username=me", "password=s3cret-of-the-origin"]);
    let run = get(&h, WEB);
    assert_ne!(run.code, 0, "{}", run.stderr);
    assert!(!run.stderr.contains("s3cret"), "{}", run.stderr);
    assert!(
        server
            .requests()
            .iter()
            .all(|r| r.header("authorization").is_some()),
        "the origin got requests without the block's credentials"
    );
    let there = elsewhere.requests();
    assert!(!there.is_empty(), "the redirect was not followed");
    assert!(
        there.iter().all(|r| r.header("authorization").is_none()),
        "credentials went to another origin: {there:?}"
    );
}

/// A version id no put made: a package's objects below are the server's inventions.
fn forged_id() -> String {
    "ab".repeat(32)
}

/// What a web folder holding a package answers outside the case: HEAD names
/// [`forged_id`]; nothing else is there.
fn forged_package(r: &Request) -> Reply {
    match r.path.as_str() {
        p if p.ends_with("/.blocks/HEAD") => Reply::ok(
            "application/json",
            format!(
                r#"{{"version":"{}","updated":"2026-12-07T00:00:00Z"}}"#,
                forged_id()
            ),
        ),
        _ => Reply::not_found(),
    }
}

fn is_manifest(r: &Request) -> bool {
    r.path
        .ends_with(&format!("/.blocks/manifests/{}.json.zst", forged_id()))
}

#[test]
fn get_refuses_an_endless_package_head_at_its_cap() {
    let server = start(|r| match r.path.ends_with("/.blocks/HEAD") {
        true => Reply::endless(200, "application/json", &[b' '; 64 * 1024]),
        false => Reply::not_found(),
    });
    let run = get(&web(&server, &[]), WEB);
    assert_refused(&run, "remote-file-system/hostile", 5, "HEAD_MAX");
}

#[test]
fn get_refuses_an_endless_manifest_at_its_cap() {
    let server = start(|r| match is_manifest(r) {
        true => Reply::endless(200, "application/zstd", &[b'x'; 64 * 1024]),
        false => forged_package(r),
    });
    let run = get(&web(&server, &[]), WEB);
    assert_refused(
        &run,
        "remote-file-system/hostile",
        5,
        "MANIFEST_COMPRESSED_MAX",
    );
}

/// A few KiB that unpack to a GiB of spaces: refused long before, without the GiB.
#[test]
fn get_refuses_a_manifest_that_unpacks_far_past_its_size() {
    let bomb = zstd::stream::encode_all(std::io::repeat(b' ').take(1 << 30), 19).unwrap();
    assert!(bomb.len() < 1 << 20, "{} bytes", bomb.len());
    let server = start(move |r| match is_manifest(r) {
        true => Reply::ok("application/zstd", bomb.clone()),
        false => forged_package(r),
    });
    let run = get(&web(&server, &[]), WEB);
    assert_refused(&run, "remote-file-system/hostile", 5, "MANIFEST_RATIO_MAX");
}

/// The hostile server itself: a case that passes must be because blockctl refused, so the
/// server must really send what it claims.
#[test]
fn the_hostile_server_sends_what_it_claims() {
    let server = start(|r| match r.path.as_str() {
        "/page" => page(&["a/", "b.txt"]),
        _ => Reply::not_found(),
    });
    let got = conformance::harness::http::request("GET", &server.url("/page"), &[], b"").unwrap();
    assert_eq!(got.status, 200);
    assert!(got.text().contains("href=\"a/\""), "{}", got.text());
}
