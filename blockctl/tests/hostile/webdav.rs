//! A WebDAV server: PROPFIND answers that loop, nest, never end, trickle or name a path.

use super::*;

/// A WebDAV folder at `server`'s `/root`.
fn dav(server: &HostileHttp) -> Home {
    let url = server.url("/root").replacen("http://", "webdav+http://", 1);
    home_with(
        "remote-file-system",
        &[format!("basepath={url}"), format!("timeout={TIMEOUT}")],
    )
}

/// What a WebDAV server answers outside the case: nothing under `.blocks` and no locks.
fn no_dav_package(r: &Request) -> Option<Reply> {
    (r.path.contains("/.blocks") || r.path.contains(".~lock")).then(Reply::not_found)
}

fn propfind(entries: &[(&str, bool)]) -> Reply {
    Reply::Full {
        status: 207,
        headers: vec![("Content-Type".into(), "application/xml".into())],
        body: multistatus(entries),
    }
}

#[test]
fn get_ends_when_a_propfind_lists_a_parent_folder() {
    let server = start(|r| {
        no_dav_package(r).unwrap_or_else(|| match (r.method.as_str(), r.path.as_str()) {
            ("PROPFIND", "/root/app/" | "/root/app") => propfind(&[
                ("/root/app/", true),
                ("/root/", true),
                ("/root/app/f", false),
            ]),
            _ => Reply::not_found(),
        })
    });
    let run = get(&dav(&server), WEB);
    assert_refused(&run, "remote-file-system/hostile", 5, "not in that folder");
}

#[test]
fn get_ends_when_propfind_folders_nest_without_end() {
    let server = start(|r| {
        no_dav_package(r).unwrap_or_else(|| match r.method.as_str() {
            "PROPFIND" if r.path.starts_with("/root/app") => {
                let dir = format!("{}/", r.path.trim_end_matches('/'));
                let sub = format!("{dir}d/");
                propfind(&[(dir.as_str(), true), (sub.as_str(), true)])
            }
            _ => Reply::not_found(),
        })
    });
    let run = get(&dav(&server), WEB);
    assert_refused(&run, "remote-file-system/hostile", 5, "WALK_MAX_DEPTH");
}

#[test]
fn get_refuses_an_endless_propfind_answer_at_its_cap() {
    let server = start(|r| {
        no_dav_package(r).unwrap_or_else(|| match r.method.as_str() {
            "PROPFIND" => Reply::endless(207, "application/xml", &[b' '; 64 * 1024]),
            _ => Reply::not_found(),
        })
    });
    let run = get(&dav(&server), WEB);
    assert_refused(&run, "remote-file-system/hostile", 5, "PROPFIND_MAX");
}

#[test]
fn get_times_out_on_a_propfind_answer_sent_a_byte_a_second() {
    let server = start(|r| {
        no_dav_package(r).unwrap_or_else(|| match r.method.as_str() {
            "PROPFIND" => Reply::Trickle {
                status: 207,
                headers: vec![("Content-Type".into(), "application/xml".into())],
                body: multistatus(&[("/root/app/", true)]),
                every: Duration::from_secs(1),
            },
            _ => Reply::not_found(),
        })
    });
    let run = get(&dav(&server), WEB);
    assert_refused(&run, "remote-file-system/hostile", 1, "timed out");
}

#[test]
fn get_refuses_a_propfind_name_with_a_backslash() {
    let server = start(|r| {
        no_dav_package(r).unwrap_or_else(|| match r.method.as_str() {
            "PROPFIND" => propfind(&[("/root/app/", true), ("/root/app/..%5Cevil.txt", false)]),
            _ => Reply::not_found(),
        })
    });
    let run = get(&dav(&server), WEB);
    assert_refused(&run, "remote-file-system/hostile", 5, "backslash");
}
