//! `blockctl get` (and, for a registry, `blockctl put`) against hostile servers (conformance's `HostileHttp` and `HostileFtp` on
//! 127.0.0.1, and a silent TCP server) standing in for a web folder (`remote-file-system`
//! over http://), a WebDAV server (webdav+http://), an FTP server (ftp://), an SMB server and
//! an OCI registry: folder listings that
//! loop or nest without end, endless and trickled answers, names that escape their folder or
//! read as Windows paths, a redirect to another origin, an endless registry manifest, config
//! blob, tag list, error body and token answer. Every case checks the exit code, one
//! line on stderr naming the block, an end well under a minute (the blocks' timeout is 3 s),
//! the peak memory of the blockctl process (its maximum resident set, from `wait4`) below
//! 64 MiB, and that DEST was not created and nothing was written beside it.

use std::fs;
use std::process::Stdio;
use std::time::{Duration, Instant};

use conformance::harness::hostile_ftp::Listing;
use conformance::harness::hostile_http::{Request, autoindex, multistatus};
use conformance::harness::{HostileFtp, HostileHttp, Reply};

mod common;
use common::Home;

/// The blocks' `timeout`, in seconds.
const TIMEOUT: u64 = 3;
/// How long a get may take: twice the timeout, the retry pauses, and room for a slow machine.
const TIME_BOUND: Duration = Duration::from_secs(2 * TIMEOUT + 2 + 12);
/// Peak resident memory of one get.
const MEMORY_BOUND_KIB: i64 = 64 * 1024;
/// A get still running after this is killed and the test fails.
const KILL_AFTER: Duration = Duration::from_secs(60);

/// How one `blockctl get` ended.
struct Run {
    code: i32,
    stderr: String,
    took: Duration,
    peak_kib: i64,
}

/// Starts blockctl and reports its own peak memory. `ru_maxrss` of a child spawned by this
/// test process would count this (large, many-threaded) process's memory as well: a child's
/// high-water mark includes its parent's pages until it execs. A small Python process
/// spawns blockctl instead and reports `wait4`'s figure for it, as `/usr/bin/time` would.
const MEASURE: &str = r#"
import os, sys
pid = os.posix_spawn(sys.argv[1], sys.argv[1:], os.environ,
                     file_actions=[(os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)])
_, status, usage = os.wait4(pid, 0)
print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)
"#;

/// Runs `blockctl get slug DEST` in `h`, with DEST in an empty scratch folder; checks that
/// DEST is not there afterwards and nothing else was written beside it.
fn get(h: &Home, slug: &str) -> Run {
    get_with(h, slug, &[])
}

/// [`get`] with `extra` arguments after DEST.
fn get_with(h: &Home, slug: &str, extra: &[&str]) -> Run {
    let scratch = tempfile::tempdir().unwrap();
    let dest = scratch.path().join("dest");
    let mut args = vec!["get", slug, dest.to_str().unwrap()];
    args.extend_from_slice(extra);
    let run = measured(h, slug, &args);
    assert!(!dest.exists(), "{slug}: DEST was created: {}", run.stderr);
    let beside: Vec<_> = fs::read_dir(scratch.path()).unwrap().collect();
    assert!(beside.is_empty(), "{slug}: written beside DEST: {beside:?}");
    run
}

/// Runs `blockctl put SRC slug` in `h`, SRC a small tree.
fn put(h: &Home, slug: &str) -> Run {
    let src = tempfile::tempdir().unwrap();
    fs::write(src.path().join("flow.py"), "print('hello')\n").unwrap();
    measured(h, slug, &["put", src.path().to_str().unwrap(), slug])
}

/// Runs blockctl with `args` in `h`, killed (and the test failed) past [`KILL_AFTER`]; its
/// exit code, stderr, time and peak memory.
fn measured(h: &Home, slug: &str, args: &[&str]) -> Run {
    let stderr_path = h.path("stderr");
    let blockctl = h.cmd(args);
    let mut measured = std::process::Command::new("python3");
    measured.args(["-c", MEASURE]).arg(blockctl.get_program());
    measured.args(blockctl.get_args());
    for (k, v) in blockctl.get_envs() {
        if let Some(v) = v {
            measured.env(k, v);
        }
    }
    let mut child = measured
        .stdout(Stdio::piped())
        .stderr(fs::File::create(&stderr_path).unwrap())
        .spawn()
        .expect("python3 runs");
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > KILL_AFTER {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{slug}: {} did not end within {KILL_AFTER:?}", args[0]);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = started.elapsed();
    let out = child.wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    let mut fields = report.split_whitespace().map(|f| f.parse::<i64>());
    let (Some(Ok(code)), Some(Ok(peak_kib))) = (fields.next(), fields.next()) else {
        panic!("{slug}: the measuring wrapper reported {report:?}");
    };
    let code = code as i32;
    let stderr = fs::read_to_string(&stderr_path).unwrap();
    eprintln!("{slug}: exit {code} in {took:?}, peak {peak_kib} KiB: {stderr}");
    Run {
        code,
        stderr,
        took,
        peak_kib,
    }
}

/// The contract of every case: `code`, one stderr line naming `block` and containing `says`,
/// in bounded time and memory.
fn assert_refused(run: &Run, block: &str, code: i32, says: &str) {
    let lines: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    assert_eq!(run.code, code, "wrong exit code: {}", run.stderr);
    assert_eq!(lines.len(), 1, "not one line: {:?}", run.stderr);
    assert!(
        lines[0].contains(block),
        "does not name {block}: {}",
        lines[0]
    );
    assert!(
        lines[0].contains(says),
        "does not say {says:?}: {}",
        lines[0]
    );
    assert!(
        run.took < TIME_BOUND,
        "took {:?} (bound {TIME_BOUND:?})",
        run.took
    );
    assert!(
        run.peak_kib < MEMORY_BOUND_KIB,
        "peak memory {} KiB (bound {MEMORY_BOUND_KIB} KiB)",
        run.peak_kib
    );
}

/// A home with one block of `kind` named `hostile`, over `settings`.
fn home_with(kind: &str, settings: &[String]) -> Home {
    let h = Home::new();
    let slug = format!("{kind}/hostile");
    let mut create = vec!["block", "create", slug.as_str()];
    for s in settings {
        create.extend(["--set", s.as_str()]);
    }
    h.ok(&create);
    h
}

/// A read-only web folder at `server`'s `/root`.
fn web(server: &HostileHttp, extra: &[&str]) -> Home {
    let mut settings = vec![
        format!("basepath={}", server.url("/root")),
        format!("timeout={TIMEOUT}"),
    ];
    settings.extend(extra.iter().map(|s| s.to_string()));
    home_with("remote-file-system", &settings)
}

/// A WebDAV folder at `server`'s `/root`.
fn dav(server: &HostileHttp) -> Home {
    let url = server.url("/root").replacen("http://", "webdav+http://", 1);
    home_with(
        "remote-file-system",
        &[format!("basepath={url}"), format!("timeout={TIMEOUT}")],
    )
}

const WEB: &str = "remote-file-system/hostile/app";

/// What a web folder answers outside the case: no package anywhere, so a get reads the
/// folder's listing (a files layout).
fn no_package(r: &Request) -> Option<Reply> {
    r.path.contains("/.blocks").then(Reply::not_found)
}

fn page(names: &[&str]) -> Reply {
    Reply::ok("text/html", autoindex(names))
}

fn start(handler: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> HostileHttp {
    HostileHttp::start(handler).expect("the hostile server starts")
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

/// An FTP folder at `server`'s `/root`, logged in as anyone.
fn ftp(server: &HostileFtp) -> Home {
    home_with(
        "remote-file-system",
        &[
            format!("basepath={}", server.url("/root")),
            "username=u".into(),
            "password=p".into(),
            format!("timeout={TIMEOUT}"),
        ],
    )
}

fn start_ftp(listing: Listing) -> HostileFtp {
    HostileFtp::start(listing).expect("the hostile FTP server starts")
}

/// The folder was listed: a case passes because the listing was refused, not for want of one.
fn assert_listed(server: &HostileFtp) {
    let commands = server.commands();
    assert!(
        commands.iter().any(|c| c.starts_with("MLSD")),
        "no MLSD reached the server: {commands:?}"
    );
}

#[test]
fn get_refuses_an_endless_ftp_listing_at_its_cap() {
    let server = start_ftp(Listing::endless());
    let run = get(&ftp(&server), WEB);
    assert_refused(&run, "remote-file-system/hostile", 5, "FTP_LISTING_MAX");
    assert_listed(&server);
}

#[test]
fn get_times_out_on_an_ftp_listing_sent_a_byte_a_second() {
    let server = start_ftp(Listing::trickle(&[("f.txt", false)]));
    let run = get(&ftp(&server), WEB);
    assert_refused(&run, "remote-file-system/hostile", 1, "timed out");
    assert_listed(&server);
}

#[test]
fn get_refuses_an_ftp_listed_name_with_a_backslash() {
    let server = start_ftp(Listing::of(&[("..\\evil.txt", false)]));
    let run = get(&ftp(&server), WEB);
    assert_refused(&run, "remote-file-system/hostile", 5, "backslash");
    assert_listed(&server);
}

/// A TCP server on 127.0.0.1 that accepts connections (at most 64) and never says a word;
/// stopped when dropped.
struct Silent {
    port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Silent {
    fn start() -> Silent {
        use std::sync::atomic::Ordering;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let port = listener.local_addr().unwrap().port();
        listener.set_nonblocking(true).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            // Polls for at most KILL_AFTER; the connections stay open, silent, until then.
            let started = Instant::now();
            while !flag.load(Ordering::Relaxed) && started.elapsed() < KILL_AFTER {
                match listener.accept() {
                    Ok((conn, _)) if held.len() < 64 => held.push(conn),
                    Ok(_) => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Silent {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Silent {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn get_times_out_on_an_smb_server_that_never_answers() {
    let server = Silent::start();
    let h = home_with(
        "smb",
        &[
            "host=127.0.0.1".into(),
            "share=flows".into(),
            format!("port={}", server.port),
            format!("timeout={TIMEOUT}"),
        ],
    );
    let run = get(&h, "smb/hostile/app");
    assert_refused(&run, "smb/hostile", 1, "timed out");
}

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
