//! The conformance suite against wsgidav, started by the harness, with a basic-auth login.
//! Then what is specific to WebDAV: a wrong password (exit 4, one line, no secret), the
//! files layout as `curl` sees it (PROPFIND) and reads it, a compare-and-swap that holds
//! between two clients, and puts and gets through resets and stalls.

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::Arc;

use conformance::harness::{WsgiDav, shared};
use conformance::remote_checks::{
    FaultRig, another_client_reads_a_package, compare_and_swap_between, put_a_mirror, refused,
};
use conformance::{Subject, conformance_suite};
use password_login::config;
use storage_core::StorageBlock;
use storage_rfs::{RfsConfig, open, open_store};

mod password_login;

const WRONG_PASSWORD: &str = "wrong-dav-pw-J3k9-must-never-be-echoed";

fn dav() -> Arc<WsgiDav> {
    shared::<WsgiDav>(WsgiDav::start)
}

fn login(dav: &WsgiDav, sub: &str) -> RfsConfig {
    config(dav.url(sub), &dav.user, &dav.password)
}

mod suite {
    use super::*;

    async fn subject(case: &str) -> Subject {
        let dav = dav();
        let block = open(&login(&dav, "suite"), "remote-file-system/conformance")
            .expect("open webdav block");
        Subject::new(Arc::new(block), case).with_guard(dav)
    }

    conformance_suite!(subject);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_exit_4_and_never_shown() {
    let dav = dav();
    let label = "remote-file-system/wrong-password";
    let block = open(&config(dav.url("wrong"), &dav.user, WRONG_PASSWORD), label).unwrap();
    // The password in the URL instead of the field.
    let in_url = dav
        .url("wrong")
        .replace("://", &format!("://{}:{WRONG_PASSWORD}@", dav.user));
    let url_block = open(
        &RfsConfig {
            password: None,
            ..config(in_url, &dav.user, "")
        },
        label,
    )
    .unwrap();
    refused(
        &[&block, &url_block],
        label,
        &[WRONG_PASSWORD, &dav.password],
    )
    .await;
    assert!(!dav.root.join("wrong").exists());
}

/// `curl` with the server's login: PROPFIND (Depth 1) of folder `url`, its hrefs as
/// `(path, is_folder)`.
fn curl_propfind(dav: &WsgiDav, url: &str) -> Vec<(String, bool)> {
    let out = Command::new("curl")
        .args(["-sS", "--fail", "-X", "PROPFIND", "-H", "Depth: 1"])
        .arg("-H")
        .arg(format!("Authorization: {}", dav.authorization()))
        .arg(url)
        .output()
        .expect("run curl");
    assert!(
        out.status.success(),
        "curl PROPFIND {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let xml = String::from_utf8_lossy(&out.stdout).into_owned();
    // Each <response> holds one href; a collection's resourcetype holds <collection/>.
    xml.split("response>")
        .filter_map(|r| {
            let href = r
                .split("href>")
                .nth(1)?
                .trim_end_matches("</")
                .trim_end_matches('<');
            let href = href.split('<').next()?.to_string();
            Some((href, r.contains("collection")))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let mut out = Vec::new();
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 3 <= bytes.len()
            && let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

/// Files `curl` finds below `dir` (a folder path on the server), walking folders.
fn files_seen_by_curl(dav: &WsgiDav, dir: &str) -> BTreeSet<String> {
    let mut files = BTreeSet::new();
    let mut folders = vec![format!("/{dir}/")];
    while let Some(folder) = folders.pop() {
        let url = format!("http://127.0.0.1:{}{folder}", dav.port);
        for (href, is_folder) in curl_propfind(dav, &url) {
            let href = href.replace("&amp;", "&");
            if href.trim_end_matches('/') == folder.trim_end_matches('/') {
                continue;
            }
            if is_folder {
                folders.push(format!("{}/", href.trim_end_matches('/')));
            } else {
                let rel = href.strip_prefix(&format!("/{dir}/")).unwrap();
                files.insert(decode(rel));
            }
        }
    }
    files
}

fn curl_get(dav: &WsgiDav, path: &str) -> Vec<u8> {
    let out = Command::new("curl")
        .args(["-sS", "--fail", "-u"])
        .arg(format!("{}:{}", dav.user, dav.password))
        .arg(format!("http://127.0.0.1:{}/{path}", dav.port))
        .output()
        .expect("run curl");
    assert!(
        out.status.success(),
        "curl GET {path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_sees_exactly_the_files_layout_and_reads_a_package() {
    let dav = dav();
    let block = open(&login(&dav, "curl"), "rfs/files").unwrap();
    let (src, at, opts) = put_a_mirror(&block, &[("odd/sp ace & amp.txt", "amp\n")]).await;
    let expected = |names: &[&str]| names.iter().map(|n| n.to_string()).collect();
    assert_eq!(
        files_seen_by_curl(&dav, "curl/mirror-seen"),
        expected(&[
            "conf/settings.toml",
            "deep/er/data.csv",
            "flow.py",
            "odd/plus+percent%hash#.cfg",
            "odd/sp ace & amp.txt",
        ])
    );
    assert_eq!(
        curl_get(&dav, "curl/mirror-seen/deep/er/data.csv"),
        b"a,b\n1,2\n"
    );
    assert_eq!(
        curl_get(&dav, "curl/mirror-seen/odd/plus%2Bpercent%25hash%23.cfg"),
        b"odd\n"
    );

    // A second put mirrors the deletion.
    std::fs::remove_file(src.path().join("deep/er/data.csv")).unwrap();
    block.put_directory(src.path(), &at, &opts).await.unwrap();
    assert_eq!(
        files_seen_by_curl(&dav, "curl/mirror-seen"),
        expected(&[
            "conf/settings.toml",
            "flow.py",
            "odd/plus+percent%hash#.cfg",
            "odd/sp ace & amp.txt",
        ])
    );

    // A package put over WebDAV is packs of frames that curl fetches and, frames in order,
    // tar reads.
    let fetch = |object: &str| curl_get(&dav, &format!("curl/package-seen/{object}"));
    let blocks = dav.root.join("curl/package-seen/.blocks");
    another_client_reads_a_package(&block, src.path(), fetch, Some(&blocks)).await;
}

/// Two stores (two clients): the lock and the ETag check hold between them, as they would
/// between two machines. wsgidav's ETag holds the inode, and every put is a new file, so a
/// replacement within the same second with the same size still changes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_and_swap_holds_between_two_clients() {
    let dav = dav();
    let one = open_store(&login(&dav, "cas"), "rfs/one").unwrap();
    let two = open_store(&login(&dav, "cas"), "rfs/two").unwrap();
    compare_and_swap_between(one, two, &dav.root.join("cas")).await;
}

const LABEL: &str = "remote-file-system/faults";

/// A block through a [`FaultProxy`] in front of wsgidav, and one straight on it.
async fn fault_rig(sub: &str) -> FaultRig {
    let dav = dav();
    let sub = sub.to_string();
    let login = (dav.user.as_str(), dav.password.as_str());
    password_login::fault_rig(dav.clone(), dav.port, LABEL, login, move |port| {
        format!("webdav+http://127.0.0.1:{port}/{sub}")
    })
    .await
}

// Reset 2 MiB into an upload or a download; stalled 1 MiB up.
conformance::remote_fault_tests!(fault_rig);
