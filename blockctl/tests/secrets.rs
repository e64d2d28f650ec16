//! Secrets never leave blockctl: blocks of every type, with distinctive secrets, pointed at
//! endpoints that fail (a closed port, and a port that accepts and closes at once). Every
//! command, with and without `--json`, under `RUST_BACKTRACE=1` and `RUST_LOG=trace`, must
//! fail in bounded time with the documented exit code and one line naming the slug, never
//! panic, and never show a secret: as written, URL-encoded, or base64 (as basic auth and
//! account keys carry it). The registry stays 0600 and keeps `env:NAME` unresolved.

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::Home;

/// Longest a failing command may take (connect refused is retried a few times with
/// backoff); anything slower is reported as unbounded.
const LIMIT: Duration = Duration::from_secs(60);

/// What `common::Home` puts in the environment as `BLOCKCTL_TEST_SECRET`.
const ENV_SECRET: &str = "s3cret-from-env-71842";

/// A port on 127.0.0.1 nothing listens on: bound, then closed.
fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A port on 127.0.0.1 that accepts every connection and closes it at once. The thread ends
/// with the test process.
fn slamming_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            drop(conn);
        }
    });
    port
}

fn base64(data: &[u8], url_safe: bool) -> String {
    let table: &[u8; 64] = if url_safe {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    } else {
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    };
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(table[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else if !url_safe {
                out.push('=');
            }
        }
    }
    out
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The forms in which `secret` could leak: as written, URL-encoded (upper and lower case
/// hex), base64 (standard and URL-safe), and as the base64 of basic auth for the users a
/// backend sends.
fn leak_forms(secret: &str) -> Vec<String> {
    let mut forms = vec![
        secret.to_string(),
        url_encode(secret),
        url_encode(secret).to_lowercase(),
        base64(secret.as_bytes(), false),
        base64(secret.as_bytes(), true),
    ];
    for user in ["deploy", "x-access-token", "oauth2", ""] {
        forms.push(base64(format!("{user}:{secret}").as_bytes(), false));
    }
    forms.retain(|f| f.len() >= 8);
    forms
}

/// One saved block under test and the secrets in it.
struct Case {
    id: String,
    settings: Vec<String>,
    secrets: Vec<String>,
}

/// Blocks of every type pointed at `port`, each with secrets of its own. `tag` tells the
/// endpoints apart.
fn cases(tag: &str, port: u16) -> Vec<Case> {
    let secret = |what: &str| format!("S3CR3T-{tag}-{what}-q+/=Z~%&x");
    let endpoint = format!("http://127.0.0.1:{port}");
    let az_key = base64(secret("azure-key").as_bytes(), false);
    let az_conn_key = base64(secret("azure-conn-key").as_bytes(), false);
    let sas = format!(
        "sv=2022-11-02&ss=b&srt=co&sp=rl&sig={}",
        url_encode(&secret("sas"))
    );
    let gcs_key = format!(
        r#"{{"type":"service_account","client_email":"flows@example.invalid","private_key_id":"{}","private_key":"-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n","token_uri":"{endpoint}/token"}}"#,
        secret("gcs-kid"),
        secret("gcs-pem"),
    );
    vec![
        Case {
            id: format!("s3/{tag}-s3"),
            settings: vec![
                "bucket=flows".into(),
                format!("endpoint={endpoint}"),
                "region=us-east-1".into(),
                "access_key_id=AKIDBLOCKCTLTEST".into(),
                format!("secret_access_key={}", secret("s3-key")),
                format!("session_token={}", secret("s3-token")),
            ],
            secrets: vec![secret("s3-key"), secret("s3-token")],
        },
        Case {
            id: format!("s3/{tag}-env"),
            settings: vec![
                "bucket=flows".into(),
                format!("endpoint={endpoint}"),
                "region=us-east-1".into(),
                "access_key_id=AKIDBLOCKCTLTEST".into(),
                "secret_access_key=env:BLOCKCTL_TEST_SECRET".into(),
            ],
            secrets: vec![ENV_SECRET.into()],
        },
        Case {
            id: format!("azure/{tag}-key"),
            settings: vec![
                "container=flows".into(),
                "account=devstoreaccount1".into(),
                format!("access_key={az_key}"),
                format!("endpoint={endpoint}/devstoreaccount1"),
            ],
            secrets: vec![az_key.clone(), secret("azure-key")],
        },
        Case {
            id: format!("azure/{tag}-sas"),
            settings: vec![
                "container=flows".into(),
                "account=devstoreaccount1".into(),
                format!("sas_token={sas}"),
                format!("endpoint={endpoint}/devstoreaccount1"),
            ],
            secrets: vec![secret("sas")],
        },
        Case {
            id: format!("azure/{tag}-conn"),
            settings: vec![
                "container=flows".into(),
                format!(
                    "connection_string=DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;\
                     AccountKey={az_conn_key};BlobEndpoint={endpoint}/devstoreaccount1;"
                ),
            ],
            secrets: vec![az_conn_key.clone(), secret("azure-conn-key")],
        },
        Case {
            id: format!("gcs/{tag}-gcs"),
            settings: vec![
                "bucket=flows".into(),
                format!("endpoint={endpoint}"),
                format!("service_account_key={gcs_key}"),
            ],
            secrets: vec![secret("gcs-kid"), secret("gcs-pem")],
        },
        Case {
            id: format!("git/{tag}-git"),
            settings: vec![
                format!("url={endpoint}/flows.git"),
                "username=deploy".into(),
                format!("token={}", secret("git-token")),
            ],
            secrets: vec![secret("git-token")],
        },
        Case {
            id: format!("github/{tag}-gh"),
            settings: vec![
                format!("url={endpoint}/acme/flows.git"),
                format!("token={}", secret("github-token")),
            ],
            secrets: vec![secret("github-token")],
        },
        Case {
            // Credentials in a URL field are no secret field, yet never shown either.
            id: format!("git/{tag}-inurl"),
            settings: vec![format!(
                "url=http://deploy:{}@127.0.0.1:{port}/flows.git",
                url_encode(&secret("url-password"))
            )],
            secrets: vec![secret("url-password")],
        },
        Case {
            id: format!("s3/{tag}-inurl"),
            settings: vec![
                "bucket=flows".into(),
                format!(
                    "endpoint=http://ak:{}@127.0.0.1:{port}",
                    url_encode(&secret("endpoint-password"))
                ),
                "region=us-east-1".into(),
                "access_key_id=AKIDBLOCKCTLTEST".into(),
                format!("secret_access_key={}", secret("s3-key-2")),
            ],
            secrets: vec![secret("endpoint-password"), secret("s3-key-2")],
        },
        Case {
            id: format!("smb/{tag}-smb"),
            settings: vec![
                "host=127.0.0.1".into(),
                format!("port={port}"),
                "share=flows".into(),
                "username=deploy".into(),
                format!("password={}", secret("smb-password")),
            ],
            secrets: vec![secret("smb-password")],
        },
        Case {
            id: format!("rfs/{tag}-sftp"),
            settings: vec![
                format!(
                    "basepath=sftp://deploy:{}@127.0.0.1:{port}/srv/flows",
                    url_encode(&secret("sftp-url-password"))
                ),
                format!("password={}", secret("sftp-password")),
                "insecure_accept_host_key=true".into(),
            ],
            secrets: vec![secret("sftp-url-password"), secret("sftp-password")],
        },
        Case {
            id: format!("rfs/{tag}-web"),
            settings: vec![
                format!(
                    "basepath=http://deploy:{}@127.0.0.1:{port}/flows",
                    url_encode(&secret("web-url-password"))
                ),
                format!("password={}", secret("web-password")),
                "username=deploy".into(),
            ],
            secrets: vec![secret("web-url-password"), secret("web-password")],
        },
        Case {
            id: format!("oci/{tag}-oci"),
            settings: vec![
                format!("registry=127.0.0.1:{port}"),
                "repository=team/flows".into(),
                "username=deploy".into(),
                format!("password={}", secret("oci-password")),
            ],
            secrets: vec![secret("oci-password")],
        },
        Case {
            id: format!("docker-registry/{tag}-token"),
            settings: vec![
                format!("registry=127.0.0.1:{port}"),
                "repository=team/flows".into(),
                format!("token={}", secret("oci-token")),
            ],
            secrets: vec![secret("oci-token")],
        },
        Case {
            id: format!("rfs/{tag}-webdav"),
            settings: vec![
                format!(
                    "basepath=webdav+http://deploy:{}@127.0.0.1:{port}/flows",
                    url_encode(&secret("dav-url-password"))
                ),
                format!("password={}", secret("dav-password")),
            ],
            secrets: vec![secret("dav-url-password"), secret("dav-password")],
        },
        Case {
            id: format!("rfs/{tag}-ftp"),
            settings: vec![
                format!(
                    "basepath=ftp://deploy:{}@127.0.0.1:{port}/flows",
                    url_encode(&secret("ftp-url-password"))
                ),
                format!("password={}", secret("ftp-password")),
            ],
            secrets: vec![secret("ftp-url-password"), secret("ftp-password")],
        },
    ]
}

/// Runs blockctl to the end (or kills it after [`LIMIT`]), with backtraces and every log on.
fn run(h: &Home, args: &[&str]) -> (Output, Duration) {
    let started = Instant::now();
    let mut child = h
        .cmd(args)
        .env("RUST_BACKTRACE", "1")
        .env("RUST_LOG", "trace")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("blockctl runs");
    loop {
        if child.try_wait().unwrap().is_some() || started.elapsed() > LIMIT {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if started.elapsed() > LIMIT {
        let _ = child.kill();
    }
    (child.wait_with_output().unwrap(), started.elapsed())
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Every secret form found in `out` (stdout and stderr together).
fn leaks(case: &Case, out: &str) -> Vec<String> {
    case.secrets
        .iter()
        .flat_map(|s| leak_forms(s))
        .filter(|f| out.contains(f.as_str()))
        .collect()
}

/// A slug with its type alias replaced by the canonical type, as messages show it.
fn canonical(slug: &str) -> String {
    if let Some(rest) = slug.strip_prefix("github/") {
        format!("git/{rest}")
    } else if let Some(rest) = slug.strip_prefix("rfs/") {
        format!("remote-file-system/{rest}")
    } else if let Some(rest) = slug.strip_prefix("docker-registry/") {
        format!("oci/{rest}")
    } else {
        slug.to_string()
    }
}

/// Runs every command against `case`'s block, with `--json` or without, and returns what
/// went wrong, one line each.
fn exercise(h: &Home, case: &Case, src: &Path, json: bool) -> Vec<String> {
    let mut problems = Vec::new();
    let slug = format!("{}/etl", case.id);
    let dest = h.path(&format!("dest-{}-{json}", case.id.replace('/', "-")));
    let dest_s = dest.to_str().unwrap().to_string();
    let cat = format!("{slug}/flow.py");
    let failing: Vec<(Vec<&str>, &str)> = vec![
        (vec!["block", "check", &case.id], &case.id),
        (vec!["put", src.to_str().unwrap(), &slug], &slug),
        (
            vec!["put", src.to_str().unwrap(), &slug, "--layout", "files"],
            &slug,
        ),
        (
            vec!["put", src.to_str().unwrap(), &slug, "--if-version", "none"],
            &slug,
        ),
        (vec!["get", &slug, &dest_s], &slug),
        (vec!["ls", &slug], &slug),
        (vec!["versions", &slug], &slug),
        (vec!["cat", &cat], &slug),
        (vec!["rm", &slug], &slug),
        (vec!["rm", &slug, "--version", "0123456789ab"], &slug),
        (vec!["gc", &slug, "--keep", "1"], &slug),
    ];
    for (args, names) in &failing {
        let mut args = args.clone();
        if json {
            args.insert(0, "--json");
        }
        let (o, took) = run(h, &args);
        let (out, err) = text(&o);
        let what = format!("{args:?}");
        if took > LIMIT {
            problems.push(format!("{what}: still running after {LIMIT:?}; killed"));
            continue;
        }
        let found = leaks(case, &format!("{out}{err}"));
        if !found.is_empty() {
            problems.push(format!("{what}: secret shown as {found:?}: {err}{out}"));
        }
        if o.status.code() == Some(101) || err.contains("panicked at") {
            problems.push(format!("{what}: panicked: {err}"));
            continue;
        }
        // Unreachable storage is "other failure"; what git declares it cannot do (a
        // files layout, dropping versions) is refused before connecting, as
        // unsupported; a key the client cannot even sign with (the fake GCS key) is
        // refused before sending, as bad config or failure.
        let git = case.id.starts_with("git/") || case.id.starts_with("github/");
        let unsupported_by_git =
            args.contains(&"files") || args.contains(&"gc") || args.contains(&"--version");
        // A read-only http(s):// block refuses every put, rm and gc before connecting.
        let read_only =
            case.id.ends_with("-web") && ["put", "rm", "gc"].iter().any(|op| args.contains(op));
        // A registry has no files layout and no compare-and-swap: refused before connecting.
        let oci = (case.id.starts_with("oci/") || case.id.starts_with("docker-registry/"))
            && (args.contains(&"files") || args.contains(&"--if-version"));
        let allowed: &[i32] = if (git && unsupported_by_git) || read_only || oci {
            &[2]
        } else if case.id.starts_with("gcs/") {
            &[1, 2]
        } else {
            &[1]
        };
        if !o.status.code().is_some_and(|c| allowed.contains(&c)) {
            problems.push(format!(
                "{what}: exit {:?}, expected one of {allowed:?}: {err}",
                o.status.code()
            ));
        }
        // RUST_LOG=trace logs to stderr too; the error is one line, the last one that is
        // not a log record (an HTTP client's background task may still log after it).
        let errors: Vec<&str> = err
            .lines()
            .filter(|l| l.starts_with("blockctl: "))
            .collect();
        let last = err
            .trim_end()
            .lines()
            .rfind(|l| !is_log_record(l))
            .unwrap_or_default();
        if errors.len() != 1 || errors[0] != last {
            problems.push(format!(
                "{what}: stderr does not end in one error line: {err:?}"
            ));
        } else if !last.contains(names) && !last.contains(&canonical(names)) {
            problems.push(format!("{what}: the error does not name {names}: {err}"));
        }
        // The log must really be on: a put that is not refused up front logs its phases
        // (git's first phase comes after its fetch, which fails here).
        if args.contains(&"put") && !git && allowed != [2] && !err.contains("phase begins") {
            problems.push(format!("{what}: RUST_LOG=trace logged no phase: {err}"));
        }
        if !out.is_empty() {
            problems.push(format!("{what}: a failure printed to stdout: {out}"));
        }
        if dest.exists() {
            problems.push(format!("{what}: a failed get created {dest_s}"));
        }
        eprintln!("{what}: exit {:?} in {took:.1?}", o.status.code());
    }
    for args in [
        vec!["block", "inspect", case.id.as_str()],
        vec!["block", "ls"],
    ] {
        let mut args = args.clone();
        if json {
            args.insert(0, "--json");
        }
        let (o, _) = run(h, &args);
        let (out, err) = text(&o);
        if o.status.code() != Some(0) {
            problems.push(format!("{args:?}: exit {:?}: {err}", o.status.code()));
        }
        let found = leaks(case, &format!("{out}{err}"));
        if !found.is_empty() {
            problems.push(format!("{args:?}: secret shown as {found:?}: {out}"));
        }
    }
    problems
}

fn create_all(h: &Home, cases: &[Case]) {
    for c in cases {
        let mut args = vec!["block", "create", c.id.as_str()];
        for s in &c.settings {
            args.push("--set");
            args.push(s);
        }
        let o = h.run(&args);
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}: {}",
            c.id,
            String::from_utf8_lossy(&o.stderr)
        );
        let (out, err) = text(&o);
        let found = leaks(c, &format!("{out}{err}"));
        assert!(found.is_empty(), "block create showed {found:?}");
    }
}

/// Runs every case in threads of its own, with and without `--json` side by side (each
/// command waits out its retries), and fails with every problem found.
fn exercise_all(h: &Home, cases: &[Case]) {
    let src = h.path("src");
    std::fs::create_dir_all(src.join("conf")).unwrap();
    std::fs::write(src.join("flow.py"), "print('flow')\n").unwrap();
    std::fs::write(src.join("conf/settings.toml"), "level = 1\n").unwrap();
    let src = src.as_path();
    let problems: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = cases
            .iter()
            .flat_map(|c| [false, true].map(|json| (c, json)))
            .map(|(c, json)| scope.spawn(move || exercise(h, c, src, json)))
            .collect();
        handles
            .into_iter()
            .flat_map(|t| t.join().expect("a case thread"))
            .collect()
    });
    assert!(
        problems.is_empty(),
        "{} problem(s):\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn a_refused_connection_fails_every_command_cleanly_without_showing_a_secret() {
    let h = Home::new();
    let cases = cases("refused", closed_port());
    create_all(&h, &cases);
    exercise_all(&h, &cases);
}

#[test]
fn a_connection_closed_at_once_fails_every_command_cleanly_without_showing_a_secret() {
    let h = Home::new();
    let port = slamming_port();
    // The listener really accepts (and closes), unlike the refused port.
    TcpStream::connect(("127.0.0.1", port)).expect("the slamming port accepts");
    let cases = cases("slammed", port);
    create_all(&h, &cases);
    exercise_all(&h, &cases);
}

#[test]
fn the_registry_is_0600_and_keeps_env_secrets_unresolved() {
    use std::os::unix::fs::PermissionsExt;
    let h = Home::new();
    let cases = cases("stored", closed_port());
    create_all(&h, &cases);
    // Rewrites after removals and overwrites keep both properties too.
    let o = h.run(&["block", "rm", "gcs/stored-gcs"]);
    assert_eq!(o.status.code(), Some(0));
    let o = h.run(&[
        "block",
        "create",
        "s3/stored-env",
        "--overwrite",
        "--set",
        "bucket=flows",
        "--set",
        "secret_access_key=env:BLOCKCTL_TEST_SECRET",
        "--set",
        "session_token=env:BLOCKCTL_TEST_SECRET",
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // Using the block resolves the secret; that must not write it back.
    let _ = run(&h, &["block", "check", "s3/stored-env"]);
    let file = h.path("home/blocks.toml");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "blocks.toml has mode {mode:o}");
    let stored = std::fs::read_to_string(&file).unwrap();
    assert!(
        stored.contains("env:BLOCKCTL_TEST_SECRET"),
        "the env: reference is gone: {stored}"
    );
    assert!(
        !stored.contains(ENV_SECRET),
        "an env: secret was written back resolved"
    );
    let parsed: toml::Value = toml::from_str(&stored).expect("blocks.toml parses");
    assert!(parsed.as_table().is_some_and(|t| !t.is_empty()));
}

/// A tracing record as blockctl's subscriber writes it: `2026-11-30T17:24:51.757325Z LEVEL ...`.
fn is_log_record(line: &str) -> bool {
    let b = line.as_bytes();
    b.len() > 20
        && b[..4].iter().all(u8::is_ascii_digit)
        && b[4] == b'-'
        && b[10] == b'T'
        && line
            .split_once(' ')
            .is_some_and(|(stamp, _)| stamp.ends_with('Z'))
}
