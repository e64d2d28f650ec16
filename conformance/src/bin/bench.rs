//! Benchmark: blockctl beside its peers (rclone, tar + zstd, cp -a) on the same seeded
//! corpora and the same emulators, in one run. Not part of the test command.
//!
//!     cargo build --release -p blockctl
//!     cargo run --release -p conformance --bin bench -- \
//!         [--targets local,s3,azure,gcs,smb,sftp,webdav,ftp] [--corpora flow,many,big] [--runs N] \
//!         [--many-runs N] \
//!         [--big-mib N] [--json out.json]
//!
//! On `flow` it also measures the next deploy and the next run (package format 2): one small
//! file edited (300 bytes appended) and put again, beside `rclone copy` of the same edit and
//! beside a format-1 put; then a get of the new version over the previous one with the agent
//! cache holding the previous frames, and a get of a fully cached version. Bytes are counted
//! on the wire by a `FaultProxy` (injecting nothing) between the tools and the emulator, and
//! on `local` as the growth of the store folder.
//!
//! Each figure is the median wall time of `--runs` runs (`--many-runs` for the 20,000-file
//! corpus, whose peer and files-layout runs take minutes each on the emulators), with the peak resident memory of the
//! child process tree (from `wait4`). Every download is checked file by file (sha256)
//! against the source tree.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use conformance::harness::{
    Azurite, FakeGcs, FaultProxy, Moto, PyFtpd, Samba, Sshd, WsgiDav, hmac_sha256, peers,
};
use sha2::{Digest, Sha256};

const BUCKET: &str = "bench";

struct Args {
    targets: Vec<String>,
    corpora: Vec<String>,
    runs: usize,
    many_runs: Option<usize>,
    big_mib: usize,
    json: Option<PathBuf>,
}

fn usage() -> ! {
    eprintln!(
        "usage: bench [--targets local,s3,azure,gcs,smb,sftp,webdav,ftp] [--corpora flow,many,big] [--runs N] \
         [--many-runs N] [--big-mib N] [--json out.json]"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut args = Args {
        targets: ["local", "s3", "azure", "gcs", "smb", "sftp"]
            .map(String::from)
            .to_vec(),
        corpora: ["flow", "many", "big"].map(String::from).to_vec(),
        runs: 3,
        many_runs: None,
        big_mib: 512,
        json: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| usage());
        let list = |v: String| v.split(',').map(|s| s.trim().to_string()).collect();
        match flag.as_str() {
            "--targets" => args.targets = list(value()),
            "--corpora" => args.corpora = list(value()),
            "--runs" => args.runs = value().parse().unwrap_or_else(|_| usage()),
            "--many-runs" => args.many_runs = Some(value().parse().unwrap_or_else(|_| usage())),
            "--big-mib" => args.big_mib = value().parse().unwrap_or_else(|_| usage()),
            "--json" => args.json = Some(PathBuf::from(value())),
            _ => usage(),
        }
    }
    for t in &args.targets {
        if ![
            "local", "s3", "azure", "gcs", "smb", "sftp", "webdav", "ftp",
        ]
        .contains(&t.as_str())
        {
            eprintln!("unknown target {t}");
            usage();
        }
    }
    for c in &args.corpora {
        if !["flow", "many", "big"].contains(&c.as_str()) {
            eprintln!("unknown corpus {c}");
            usage();
        }
    }
    if args.runs == 0 || args.many_runs == Some(0) {
        usage();
    }
    args
}

// ---------------------------------------------------------------------------------------
// Seeded corpora

/// splitmix64: small, fast, and the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

const WORDS: &[&str] = &[
    "def", "return", "import", "from", "flow", "task", "self", "data", "frame", "select", "where",
    "group", "by", "order", "config", "value", "None", "True", "False", "for", "in", "if", "else",
    "with", "as", "print", "logger", "result", "table", "column", "join", "schema", "path", "open",
    "read", "write", "(", ")", ":", "=", "+", ",", "\n", "\n    ",
];

fn text(rng: &mut Rng, size: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(size + 16);
    while out.len() < size {
        out.extend_from_slice(WORDS[rng.range(0, WORDS.len() - 1)].as_bytes());
        out.push(b' ');
    }
    out.truncate(size);
    out
}

fn write(path: &Path, bytes: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, bytes).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

fn generate(corpus: &str, root: &Path, big_mib: usize) {
    let mut rng = Rng(match corpus {
        "flow" => 1,
        "many" => 2,
        _ => 3,
    });
    match corpus {
        "flow" => {
            for i in 0..3000 {
                let dir = format!(
                    "src/pkg{:02}/mod{:02}/sub{}",
                    i % 40,
                    (i / 40) % 8,
                    (i / 320) % 3
                );
                let ext = ["py", "sql", "toml", "yaml", "md"][i % 5];
                let size = rng.range(512, 16 * 1024);
                write(
                    &root.join(dir).join(format!("f{i:04}.{ext}")),
                    &text(&mut rng, size),
                );
            }
            let mut buf = vec![0u8; 1 << 20];
            for i in 0..30 {
                rng.fill(&mut buf);
                write(&root.join("data").join(format!("blob{i:02}.bin")), &buf);
            }
        }
        "many" => {
            for i in 0..20_000 {
                let dir = format!("d{:03}/e{:02}", i % 200, (i / 200) % 10);
                let size = rng.range(1024, 4096);
                write(
                    &root.join(dir).join(format!("f{i:05}.txt")),
                    &text(&mut rng, size),
                );
            }
        }
        _ => {
            fs::create_dir_all(root).unwrap();
            let mut f = fs::File::create(root.join("big.bin")).unwrap();
            let mut buf = vec![0u8; 1 << 20];
            for _ in 0..big_mib {
                rng.fill(&mut buf);
                f.write_all(&buf).unwrap();
            }
        }
    }
}

/// Relative path → sha256 of every regular file under `root` (symlinks and others are
/// listed by kind, so a missing or extra one is noticed too).
fn digest_tree(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    let mut buf = vec![0u8; 1 << 20];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let entry = entry.unwrap();
            let path = entry.path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() {
                let mut h = Sha256::new();
                let mut f = fs::File::open(&path).unwrap();
                loop {
                    let n = f.read(&mut buf).unwrap();
                    if n == 0 {
                        break;
                    }
                    h.update(&buf[..n]);
                }
                out.insert(rel, hex::encode(h.finalize()));
            } else {
                out.insert(rel, "not a regular file".into());
            }
        }
    }
    out
}

fn verify(what: &str, expected: &BTreeMap<String, String>, dir: &Path) -> Result<(), String> {
    let got = digest_tree(dir);
    if &got == expected {
        return Ok(());
    }
    let missing = expected.keys().filter(|k| !got.contains_key(*k)).count();
    let extra = got.keys().filter(|k| !expected.contains_key(*k)).count();
    let differ = expected
        .iter()
        .filter(|(k, v)| got.get(*k).is_some_and(|g| g != *v))
        .count();
    Err(format!(
        "{what}: download differs from the source ({missing} missing, {extra} extra, \
         {differ} with other bytes)"
    ))
}

// ---------------------------------------------------------------------------------------
// Timing a child

struct Sample {
    secs: f64,
    peak_kib: i64,
    /// What the child printed on stdout.
    out: String,
}

/// Runs `cmd` to completion; wall time from spawn to reap, and the peak RSS of the largest
/// process in its tree (`ru_maxrss` from `wait4`). Stdout is discarded; stderr is kept for
/// the error message.
fn run(cmd: &mut Command) -> Result<Sample, String> {
    let shown = format!("{cmd:?}");
    let err = tempfile::tempfile().map_err(|e| e.to_string())?;
    let mut out = tempfile::tempfile().map_err(|e| e.to_string())?;
    let start = Instant::now();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone().map_err(|e| e.to_string())?)
        .stderr(err.try_clone().map_err(|e| e.to_string())?)
        .spawn()
        .map_err(|e| format!("{shown}: {e}"))?;
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: plain syscall on our own child, with valid out-pointers.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let r = loop {
        // SAFETY: as above.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == -1 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        break r;
    };
    let secs = start.elapsed().as_secs_f64();
    // Already reaped: dropping `child` neither waits nor kills.
    drop(child);
    if r != pid {
        return Err(format!(
            "{shown}: wait4: {}",
            std::io::Error::last_os_error()
        ));
    }
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        let mut text = String::new();
        let mut err = err;
        let _ = err.seek(std::io::SeekFrom::Start(0));
        let _ = err.read_to_string(&mut text);
        let tail: String = text.lines().rev().take(5).collect::<Vec<_>>().join(" | ");
        return Err(format!("{shown} failed ({status:#x}): {tail}"));
    }
    let mut text = String::new();
    let _ = out.seek(std::io::SeekFrom::Start(0));
    let _ = out.read_to_string(&mut text);
    Ok(Sample {
        secs,
        peak_kib: usage.ru_maxrss,
        out: text,
    })
}

fn sh(script: &str, dir: &Path) -> Command {
    let mut c = Command::new("sh");
    c.arg("-c").arg(script).current_dir(dir);
    c
}

// ---------------------------------------------------------------------------------------
// Targets

struct Target {
    name: String,
    /// `blockctl block create` arguments after the slug.
    block: (String, Vec<String>),
    /// rclone remote env (`RCLONE_CONFIG_...`) and the remote root (`name:bucket`), when
    /// rclone can reach this target.
    rclone: Option<(Vec<(String, String)>, String)>,
    /// Why rclone is not run here, if not.
    rclone_skip: Option<String>,
    /// Prefect's basepath (a folder, or `s3://bucket/prefix`) and S3 endpoint, where
    /// Prefect's own storage blocks reach this target.
    prefect: Option<(String, Option<String>)>,
    /// The same store behind a byte-counting proxy, for the delta rows (none on local).
    wire: Option<Wire>,
    _guard: Box<dyn std::any::Any>,
}

/// A target reached through a [`FaultProxy`] that counts what crosses it.
struct Wire {
    proxy: FaultProxy,
    /// `blockctl block create` arguments, pointing at the proxy.
    block: (String, Vec<String>),
    /// rclone's remote env and root, pointing at the proxy.
    rclone: Option<(Vec<(String, String)>, String)>,
}

/// The runtime the proxies run on.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a tokio runtime")
    })
}

/// Puts a counting proxy in front of the target's server: the first `127.0.0.1:PORT` in its
/// block settings (or `port=` for SMB) is replaced by the proxy's, there and in rclone's.
fn wire_for(t: &Target) -> Result<Option<Wire>, String> {
    let (slug, sets) = &t.block;
    let port_set = sets.iter().find_map(|s| s.strip_prefix("port="));
    let authority = match port_set {
        Some(port) => format!("127.0.0.1:{port}"),
        None => {
            let Some(found) = sets.iter().find_map(|s| {
                let at = s.find("127.0.0.1:")?;
                let rest = &s[at..];
                let end = rest[10..]
                    .find(|c: char| !c.is_ascii_digit())
                    .map_or(rest.len(), |e| e + 10);
                Some(rest[..end].to_string())
            }) else {
                return Ok(None);
            };
            found
        }
    };
    let proxy = runtime().block_on(FaultProxy::start(&authority))?;
    let via = proxy.url().trim_start_matches("http://").to_string();
    let (old_port, new_port) = (
        authority.rsplit(':').next().unwrap_or_default().to_string(),
        via.rsplit(':').next().unwrap_or_default().to_string(),
    );
    let swap = |v: &str| -> String {
        if port_set.is_some() && v == old_port {
            new_port.clone()
        } else if v == format!("port={old_port}") {
            format!("port={new_port}")
        } else {
            v.replace(&authority, &via)
        }
    };
    let block = (
        format!("{}-wire", slug),
        sets.iter().map(|v| swap(v)).collect(),
    );
    let rclone = t.rclone.as_ref().map(|(env, root)| {
        let env = env
            .iter()
            .map(|(k, v)| {
                let v = if k.ends_with("_PORT") {
                    swap(v)
                } else {
                    v.replace(&authority, &via)
                };
                (k.clone(), v)
            })
            .collect();
        (env, root.clone())
    });
    Ok(Some(Wire {
        proxy,
        block,
        rclone,
    }))
}

/// Bytes of every file under `dir`.
fn tree_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    for e in entries.flatten() {
        let Ok(meta) = e.metadata() else { continue };
        if meta.is_dir() {
            total += tree_bytes(&e.path());
        } else {
            total += meta.len();
        }
    }
    total
}

/// Appends 300 bytes to the first `.py` file of the tree (in path order): the one-line edit.
fn edit_one_file(root: &Path) -> Result<PathBuf, String> {
    let mut files: Vec<PathBuf> = Vec::new();
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in fs::read_dir(dir).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "py") {
                out.push(p);
            }
        }
    }
    walk(root, &mut files);
    files.sort();
    let file = files.into_iter().next().ok_or("no .py file to edit")?;
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(&file)
        .map_err(|e| e.to_string())?;
    f.write_all(&[b'#'; 300]).map_err(|e| e.to_string())?;
    Ok(file)
}

fn set(pairs: &[(&str, &str)]) -> Vec<String> {
    pairs
        .iter()
        .flat_map(|(k, v)| ["--set".to_string(), format!("{k}={v}")])
        .collect()
}

/// `rclone obscure PASSWORD`, as rclone's config wants passwords.
fn obscure(password: &str) -> Result<String, String> {
    let out = Command::new("rclone")
        .args(["obscure", password])
        .output()
        .map_err(|e| format!("rclone obscure: {e}"))?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn rclone_env(remote: &str, pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| {
            (
                format!(
                    "RCLONE_CONFIG_{}_{}",
                    remote.to_uppercase(),
                    k.to_uppercase()
                ),
                v.to_string(),
            )
        })
        .collect()
}

fn start_target(name: &str, work: &Path) -> Result<Target, String> {
    let mut rclone_skip = peers::rclone()
        .err()
        .map(|e| format!("rclone could not be installed: {e}"));
    let t = match name {
        "local" => {
            let base = work.join("local-store");
            fs::create_dir_all(&base).map_err(|e| e.to_string())?;
            let rdir = work.join("rclone-local");
            Target {
                name: name.into(),
                block: (
                    "local/bench".into(),
                    set(&[("basepath", &base.to_string_lossy())]),
                ),
                rclone: Some((vec![], rdir.to_string_lossy().into_owned())),
                rclone_skip: None,
                prefect: Some((
                    work.join("prefect-local").to_string_lossy().into_owned(),
                    None,
                )),
                wire: None,
                _guard: Box::new(()),
            }
        }
        "s3" => {
            let moto = Moto::start()?;
            moto.create_bucket(BUCKET)?;
            let ep = moto.endpoint.clone();
            let env = rclone_env(
                "bs3",
                &[
                    ("type", "s3"),
                    ("provider", "Other"),
                    ("endpoint", &ep),
                    ("access_key_id", "test"),
                    ("secret_access_key", "test"),
                    ("region", "us-east-1"),
                    ("force_path_style", "true"),
                    ("no_head", "true"),
                ],
            );
            Target {
                name: name.into(),
                block: (
                    "s3/bench".into(),
                    set(&[
                        ("bucket", BUCKET),
                        ("endpoint", &ep),
                        ("access_key_id", "test"),
                        ("secret_access_key", "test"),
                        ("allow_http", "true"),
                    ]),
                ),
                rclone: Some((env, format!("bs3:{BUCKET}"))),
                rclone_skip: None,
                prefect: Some((format!("s3://{BUCKET}/prefect"), Some(ep.clone()))),
                wire: None,
                _guard: Box::new(moto),
            }
        }
        "azure" => {
            let az = Azurite::start()?;
            az.create_container(BUCKET)?;
            let sas = account_sas(az.account, az.key)?;
            let env = rclone_env(
                "baz",
                &[
                    ("type", "azureblob"),
                    ("sas_url", &format!("{}?{sas}", az.endpoint)),
                ],
            );
            Target {
                name: name.into(),
                block: (
                    "azure/bench".into(),
                    set(&[
                        ("container", BUCKET),
                        ("account", az.account),
                        ("access_key", az.key),
                        ("endpoint", &az.endpoint),
                    ]),
                ),
                rclone: Some((env, format!("baz:{BUCKET}"))),
                rclone_skip: None,
                prefect: None,
                wire: None,
                _guard: Box::new(az),
            }
        }
        "gcs" => {
            let gcs = FakeGcs::start()?;
            gcs.create_bucket(BUCKET)?;
            let env = rclone_env(
                "bgcs",
                &[
                    ("type", "google cloud storage"),
                    ("anonymous", "true"),
                    ("endpoint", &format!("{}/storage/v1/", gcs.endpoint)),
                ],
            );
            Target {
                name: name.into(),
                block: (
                    "gcs/bench".into(),
                    set(&[
                        ("bucket", BUCKET),
                        ("endpoint", &gcs.endpoint),
                        ("anonymous", "true"),
                    ]),
                ),
                rclone: Some((env, format!("bgcs:{BUCKET}"))),
                rclone_skip: None,
                prefect: None,
                wire: None,
                _guard: Box::new(gcs),
            }
        }
        "sftp" => {
            let sshd = Sshd::start()?;
            let port = sshd.port.to_string();
            let key = sshd.client_key.to_string_lossy().into_owned();
            let known = sshd.known_hosts.to_string_lossy().into_owned();
            let env = rclone_env(
                "bsftp",
                &[
                    ("type", "sftp"),
                    ("host", &sshd.host),
                    ("port", &port),
                    ("user", &sshd.user),
                    ("key_file", &key),
                    ("known_hosts_file", &known),
                ],
            );
            let rroot = format!("bsftp:{}/rclone", sshd.data_dir.display());
            Target {
                name: name.into(),
                block: (
                    "remote-file-system/bench".into(),
                    set(&[
                        ("basepath", &sshd.url("blockctl")),
                        ("username", &sshd.user),
                        ("private_key_path", &key),
                        ("known_hosts", &known),
                    ]),
                ),
                rclone: Some((env, rroot)),
                rclone_skip: None,
                prefect: None,
                // Its known_hosts names the server's port: no proxy in between.
                wire: None,
                _guard: Box::new(sshd),
            }
        }
        "webdav" => {
            let dav = WsgiDav::start()?;
            let env = rclone_env(
                "bdav",
                &[
                    ("type", "webdav"),
                    ("url", &format!("http://127.0.0.1:{}/", dav.port)),
                    ("vendor", "other"),
                    ("user", &dav.user),
                    ("pass", &obscure(&dav.password)?),
                ],
            );
            Target {
                name: name.into(),
                block: (
                    "remote-file-system/bench".into(),
                    set(&[
                        ("basepath", &dav.url("blockctl")),
                        ("username", &dav.user),
                        ("password", &dav.password),
                    ]),
                ),
                rclone: Some((env, "bdav:rclone".into())),
                rclone_skip: None,
                prefect: None,
                wire: None,
                _guard: Box::new(dav),
            }
        }
        "ftp" => {
            let ftpd = PyFtpd::start()?;
            let port = ftpd.port.to_string();
            let env = rclone_env(
                "bftp",
                &[
                    ("type", "ftp"),
                    ("host", "127.0.0.1"),
                    ("port", &port),
                    ("user", &ftpd.user),
                    ("pass", &obscure(&ftpd.password)?),
                ],
            );
            Target {
                name: name.into(),
                block: (
                    "remote-file-system/bench".into(),
                    set(&[
                        ("basepath", &ftpd.url("blockctl")),
                        ("username", &ftpd.user),
                        ("password", &ftpd.password),
                    ]),
                ),
                rclone: Some((env, "bftp:rclone".into())),
                rclone_skip: None,
                prefect: None,
                // Passive data connections go straight to the server, past any proxy.
                wire: None,
                _guard: Box::new(ftpd),
            }
        }
        _ => {
            let smb = Samba::start()?;
            let port = smb.port.to_string();
            let rclone = if rclone_skip.is_none() {
                let out = Command::new("rclone")
                    .args(["obscure", &smb.password])
                    .output()
                    .map_err(|e| e.to_string())?;
                let obscured = String::from_utf8_lossy(&out.stdout).trim().to_string();
                let env = rclone_env(
                    "bsmb",
                    &[
                        ("type", "smb"),
                        ("host", &smb.host),
                        ("port", &port),
                        ("user", &smb.user),
                        ("pass", &obscured),
                    ],
                );
                Some((env, format!("bsmb:{}", smb.share)))
            } else {
                None
            };
            Target {
                name: name.into(),
                block: (
                    "smb/bench".into(),
                    set(&[
                        ("host", &smb.host),
                        ("share", &smb.share),
                        ("port", &port),
                        ("username", &smb.user),
                        ("password", &smb.password),
                    ]),
                ),
                rclone,
                rclone_skip: None,
                prefect: None,
                wire: None,
                _guard: Box::new(smb),
            }
        }
    };
    if rclone_skip.is_none() {
        rclone_skip = t.rclone_skip.clone();
    }
    let wire = if ["sftp", "ftp"].contains(&name) {
        None
    } else {
        wire_for(&t)?
    };
    Ok(Target {
        rclone_skip,
        wire,
        ..t
    })
}

/// An account SAS (blob service, every resource type, read/write/delete/list/add/create),
/// valid until 2099: rclone 1.60 reaches Azurite only through `sas_url`.
fn account_sas(account: &str, key: &str) -> Result<String, String> {
    let key = STANDARD.decode(key).map_err(|e| e.to_string())?;
    let (sv, ss, srt, sp, se, spr) = (
        "2019-12-12",
        "b",
        "sco",
        "rwdlac",
        "2099-01-01T00:00:00Z",
        "https,http",
    );
    let to_sign = format!("{account}\n{sp}\n{ss}\n{srt}\n\n{se}\n\n{spr}\n{sv}\n");
    let sig = STANDARD.encode(hmac_sha256(&key, to_sign.as_bytes()));
    let sig = sig
        .replace('+', "%2B")
        .replace('/', "%2F")
        .replace('=', "%3D");
    Ok(format!(
        "sv={sv}&ss={ss}&srt={srt}&sp={sp}&se={se}&spr={}&sig={sig}",
        spr.replace(',', "%2C")
    ))
}

// ---------------------------------------------------------------------------------------
// The measurements

#[derive(Clone)]
struct Row {
    target: String,
    corpus: String,
    tool: String,
    op: String,
    secs: Vec<f64>,
    peak_kib: Vec<i64>,
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

struct Bench {
    blockctl: PathBuf,
    /// The python that has Prefect, when it could be installed.
    prefect: Option<PathBuf>,
    rows: Vec<Row>,
    /// Bytes moved by the delta rows: (target, tool, what, bytes), one per run.
    bytes: Vec<(String, String, String, u64)>,
    notes: Vec<String>,
}

impl Bench {
    fn record(&mut self, t: &str, c: &str, tool: &str, op: &str, s: Sample) {
        eprintln!(
            "   {t} / {c} / {tool} / {op}: {:.3} s, {:.1} MiB",
            s.secs,
            s.peak_kib as f64 / 1024.0
        );
        if let Some(r) = self
            .rows
            .iter_mut()
            .find(|r| r.target == t && r.corpus == c && r.tool == tool && r.op == op)
        {
            r.secs.push(s.secs);
            r.peak_kib.push(s.peak_kib);
            return;
        }
        self.rows.push(Row {
            target: t.into(),
            corpus: c.into(),
            tool: tool.into(),
            op: op.into(),
            secs: vec![s.secs],
            peak_kib: vec![s.peak_kib],
        });
    }

    fn bytes(&mut self, t: &str, tool: &str, what: &str, n: u64) {
        if t == "sftp" || t == "ftp" {
            // Neither a proxy nor a store folder of ours counts its bytes.
            return;
        }
        eprintln!("   {t} / flow / {tool} / {what}: {n} bytes");
        self.bytes.push((t.into(), tool.into(), what.into(), n));
    }

    /// Median of the byte counts recorded for `(target, tool, what)`.
    fn bytes_of(&self, t: &str, tool: &str, what: &str) -> Option<f64> {
        let v: Vec<f64> = self
            .bytes
            .iter()
            .filter(|b| b.0 == t && b.1 == tool && b.2 == what)
            .map(|b| b.3 as f64)
            .collect();
        (!v.is_empty()).then(|| median(&v))
    }

    /// The next deploy and the next run of `flow`: a one-file edit put again (format 2,
    /// format 1, rclone), pulled by an agent that holds the previous version and its frames,
    /// and a pull of a version whose frames are all cached.
    #[allow(clippy::too_many_arguments)]
    fn delta_run(
        &mut self,
        t: &Target,
        home: &Path,
        src: &Path,
        i: usize,
        work: &Path,
    ) -> Result<(), String> {
        let tn = t.name.as_str();
        let (base, proxy) = match &t.wire {
            Some(w) => (w.block.0.clone(), Some(&w.proxy)),
            None => (t.block.0.clone(), None),
        };
        let store = match tn {
            "local" => Some(work.join("local-store")),
            _ => None,
        };
        // Bytes sent up (wire or store growth) and down (wire) while `f` runs.
        let measure = |f: &mut dyn FnMut() -> Result<Sample, String>| {
            let (up0, down0) = proxy.map_or((0, 0), |p| p.carried());
            let grown0 = store.as_deref().map_or(0, tree_bytes);
            let s = f()?;
            let (up1, down1) = proxy.map_or((0, 0), |p| p.carried());
            let grown1 = store.as_deref().map_or(0, tree_bytes);
            let up = if proxy.is_some() {
                up1 - up0
            } else {
                grown1.saturating_sub(grown0)
            };
            Ok::<_, String>((s, up, down1 - down0))
        };
        let copy = |tag: &str| -> Result<PathBuf, String> {
            let dir = work.join(format!("edit-{tn}-{tag}-{i}"));
            let _ = fs::remove_dir_all(&dir);
            run(Command::new("cp").arg("-a").arg(src).arg(&dir))?;
            Ok(dir)
        };

        // Format 2.
        let tree = copy("v2")?;
        let slug = format!("{base}/flow-delta-{i}");
        let cache = work.join(format!("agent-cache-{tn}-{i}"));
        let agent = |c: &mut Command| {
            c.env("BLOCKCTL_CACHE_DIR", &cache);
        };
        let (_, cold_up, _) =
            measure(&mut || run(self.blockctl(home).arg("put").arg(&tree).arg(&slug)))?;
        let run_dir = work.join(format!("agent-run-{tn}-{i}"));
        let (_, _, cold_down) = measure(&mut || {
            let mut c = self.blockctl(home);
            agent(&mut c);
            run(c.arg("get").arg(&slug).arg(&run_dir))
        })?;
        edit_one_file(&tree)?;
        let (s, up, _) =
            measure(&mut || run(self.blockctl(home).arg("put").arg(&tree).arg(&slug)))?;
        self.record(tn, "flow", "blockctl package", "edit re-put", s);
        self.bytes(tn, "blockctl package", "cold put up", cold_up);
        self.bytes(tn, "blockctl package", "edit re-put up", up);
        let (s, _, down) = measure(&mut || {
            let mut c = self.blockctl(home);
            agent(&mut c);
            run(c.arg("get").arg(&slug).arg(&run_dir).arg("--replace"))
        })?;
        verify("get --replace of the edit", &digest_tree(&tree), &run_dir)?;
        self.record(tn, "flow", "blockctl package", "edit get (cached)", s);
        self.bytes(tn, "blockctl package", "cold get down", cold_down);
        self.bytes(tn, "blockctl package", "edit get down", down);
        let again = work.join(format!("agent-again-{tn}-{i}"));
        let (s, _, down) = measure(&mut || {
            let mut c = self.blockctl(home);
            agent(&mut c);
            run(c.arg("get").arg(&slug).arg(&again))
        })?;
        verify("get of a cached version", &digest_tree(&tree), &again)?;
        self.record(tn, "flow", "blockctl package", "cached get", s);
        self.bytes(tn, "blockctl package", "cached get down", down);
        for d in [&run_dir, &again, &cache, &tree] {
            let _ = fs::remove_dir_all(d);
        }
        let _ = run(self.blockctl(home).arg("rm").arg(&slug));

        // Format 1, as the previous release wrote it.
        let tree = copy("v1")?;
        let slug = format!("{base}/flow-delta1-{i}");
        run(self
            .blockctl(home)
            .args(["put", "--format", "1"])
            .arg(&tree)
            .arg(&slug))?;
        edit_one_file(&tree)?;
        let (s, up, _) = measure(&mut || {
            run(self
                .blockctl(home)
                .args(["put", "--format", "1"])
                .arg(&tree)
                .arg(&slug))
        })?;
        self.record(tn, "flow", "blockctl format 1", "edit re-put", s);
        self.bytes(tn, "blockctl format 1", "edit re-put up", up);
        let _ = fs::remove_dir_all(&tree);
        let _ = run(self.blockctl(home).arg("rm").arg(&slug));

        // rclone copy of the same edit onto a copy of the previous tree.
        let rclone = match &t.wire {
            Some(w) => w.rclone.clone(),
            None => t.rclone.clone(),
        };
        if let (Some((env, root)), None) = (rclone, &t.rclone_skip) {
            let tree = copy("rclone")?;
            let remote = format!("{root}/flow-delta-rclone-{i}");
            let rclone = |args: &[&str]| {
                let mut c = Command::new("rclone");
                c.env_remove("AWS_CA_BUNDLE")
                    .envs(env.iter().map(|(k, v)| (k, v)))
                    .args(args);
                c
            };
            let to = tree.to_string_lossy().into_owned();
            run(&mut rclone(&[
                "copy",
                "--transfers",
                "8",
                "-q",
                &to,
                &remote,
            ]))?;
            edit_one_file(&tree)?;
            let (s, up, _) = measure(&mut || {
                run(&mut rclone(&[
                    "copy",
                    "--transfers",
                    "8",
                    "-q",
                    &to,
                    &remote,
                ]))
            })?;
            self.record(tn, "flow", "rclone", "edit re-put", s);
            self.bytes(tn, "rclone", "edit re-put up", up);
            let _ = run(&mut rclone(&["purge", "-q", &remote]));
            let _ = fs::remove_dir_all(&tree);
        }
        Ok(())
    }

    fn blockctl(&self, home: &Path) -> Command {
        let mut c = Command::new(&self.blockctl);
        c.env("BLOCKCTL_HOME", home).arg("-q");
        c
    }

    fn target(&mut self, t: &Target, corpora: &[(String, PathBuf)], args: &Args, work: &Path) {
        let home = work.join(format!("home-{}", t.name));
        let (slug, sets) = &t.block;
        let mut create = self.blockctl(&home);
        create.args(["block", "create", slug]).args(sets);
        if let Err(e) = run(&mut create) {
            self.notes
                .push(format!("{}: block create failed: {e}", t.name));
            return;
        }
        if let Some(w) = &t.wire {
            let mut create = self.blockctl(&home);
            create
                .args(["block", "create", &w.block.0])
                .args(&w.block.1);
            if let Err(e) = run(&mut create) {
                self.notes
                    .push(format!("{}: block create (wire) failed: {e}", t.name));
                return;
            }
        }
        if let Some(why) = &t.rclone_skip {
            self.notes
                .push(format!("{}: rclone skipped: {why}", t.name));
        }
        for (corpus, src) in corpora {
            eprintln!("== {} / {corpus}: hashing the source", t.name);
            let expected = digest_tree(src);
            let runs = match corpus.as_str() {
                "many" => args.many_runs.unwrap_or(args.runs),
                _ => args.runs,
            };
            for i in 0..runs {
                eprintln!("== {} / {corpus}: run {}/{runs}", t.name, i + 1);
                if let Err(e) = self.one_run(t, &home, corpus, src, &expected, i, work) {
                    self.notes.push(format!("{} / {corpus}: {e}", t.name));
                    eprintln!("!! {e}");
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn one_run(
        &mut self,
        t: &Target,
        home: &Path,
        corpus: &str,
        src: &Path,
        expected: &BTreeMap<String, String>,
        i: usize,
        work: &Path,
    ) -> Result<(), String> {
        let base = &t.block.0;
        let tn = t.name.as_str();
        let dl = |tag: &str| work.join(format!("dl-{tn}-{corpus}-{tag}-{i}"));

        // blockctl, package layout: cold put, unchanged re-put, get.
        let slug = format!("{base}/{corpus}-pkg-{i}");
        let s = run(self.blockctl(home).arg("put").arg(src).arg(&slug))?;
        self.record(tn, corpus, "blockctl package", "put", s);
        let s = run(self.blockctl(home).arg("put").arg(src).arg(&slug))?;
        self.record(tn, corpus, "blockctl package", "re-put", s);
        let out = dl("pkg");
        let s = run(self.blockctl(home).arg("get").arg(&slug).arg(&out))?;
        verify("blockctl get (package)", expected, &out)?;
        self.record(tn, corpus, "blockctl package", "get", s);
        let _ = fs::remove_dir_all(&out);
        let _ = run(self.blockctl(home).arg("rm").arg(&slug));

        // blockctl, files layout.
        let slug = format!("{base}/{corpus}-files-{i}");
        let s = run(self
            .blockctl(home)
            .arg("put")
            .arg(src)
            .arg(&slug)
            .args(["--layout", "files"]))?;
        self.record(tn, corpus, "blockctl files", "put", s);
        let s = run(self
            .blockctl(home)
            .arg("put")
            .arg(src)
            .arg(&slug)
            .args(["--layout", "files"]))?;
        self.record(tn, corpus, "blockctl files", "re-put", s);
        let out = dl("files");
        let s = run(self.blockctl(home).arg("get").arg(&slug).arg(&out))?;
        verify("blockctl get (files)", expected, &out)?;
        self.record(tn, corpus, "blockctl files", "get", s);
        let _ = fs::remove_dir_all(&out);
        let _ = run(self.blockctl(home).arg("rm").arg(&slug));

        // rclone copy, both ways.
        if let (Some((env, root)), None) = (&t.rclone, &t.rclone_skip) {
            let remote = format!("{root}/{corpus}-rclone-{i}");
            let rclone = |from: &OsStr, to: &OsStr| {
                let mut c = Command::new("rclone");
                c.env_remove("AWS_CA_BUNDLE")
                    .envs(env.iter().map(|(k, v)| (k, v)))
                    .args(["copy", "--transfers", "8", "-q"])
                    .arg(from)
                    .arg(to);
                c
            };
            let s = run(&mut rclone(src.as_os_str(), OsStr::new(&remote)))?;
            self.record(tn, corpus, "rclone", "put", s);
            let out = dl("rclone");
            let s = run(&mut rclone(OsStr::new(&remote), out.as_os_str()))?;
            verify("rclone copy down", expected, &out)?;
            self.record(tn, corpus, "rclone", "get", s);
            let _ = fs::remove_dir_all(&out);
            let mut purge = Command::new("rclone");
            purge
                .env_remove("AWS_CA_BUNDLE")
                .envs(env.iter().map(|(k, v)| (k, v)))
                .args(["purge", "-q", &remote]);
            let _ = run(&mut purge);
        }

        // Prefect's own put_directory / get_directory, timed inside Python around the call.
        if let (Some(python), Some((basepath, endpoint))) = (self.prefect.clone(), &t.prefect)
            && corpus != "big"
        {
            let remote = format!("{corpus}-prefect-{i}");
            let prefect = |op: &str, local: &Path| {
                let mut c = Command::new(&python);
                c.arg(prefect_script())
                    .arg(op)
                    .arg(local)
                    .arg(basepath)
                    .arg(&remote)
                    .args(endpoint.iter())
                    .env("PREFECT_HOME", work.join("prefect-home"))
                    .env("PREFECT_LOGGING_LEVEL", "WARNING");
                c
            };
            let inside = |s: Sample| -> Result<Sample, String> {
                let secs = s
                    .out
                    .trim()
                    .parse::<f64>()
                    .map_err(|_| format!("prefect printed no timing: {:?}", s.out.trim()))?;
                Ok(Sample { secs, ..s })
            };
            let s = inside(run(&mut prefect("put", src))?)?;
            self.record(tn, corpus, "prefect", "put", s);
            let out = dl("prefect");
            let s = inside(run(&mut prefect("get", &out))?)?;
            verify("prefect get_directory", expected, &out)?;
            self.record(tn, corpus, "prefect", "get", s);
            let _ = fs::remove_dir_all(&out);
        }

        // The local limit: tar + zstd, and cp -a.
        if tn == "local" {
            let archive = work.join(format!("{corpus}-{i}.tar.zst"));
            let a = archive.to_string_lossy();
            let s = run(&mut sh(
                &format!("tar -cf - . | zstd -q -3 -T0 > '{a}'"),
                src,
            ))?;
            self.record(tn, corpus, "tar+zstd", "put", s);
            let out = dl("tar");
            fs::create_dir_all(&out).map_err(|e| e.to_string())?;
            let s = run(&mut sh(&format!("zstd -q -dc '{a}' | tar -xf -"), &out))?;
            verify("zstd -dc | tar -x", expected, &out)?;
            self.record(tn, corpus, "tar+zstd", "get", s);
            let _ = fs::remove_dir_all(&out);
            let _ = fs::remove_file(&archive);

            let out = dl("cp");
            let s = run(Command::new("cp").arg("-a").arg(src).arg(&out))?;
            verify("cp -a", expected, &out)?;
            self.record(tn, corpus, "cp -a", "copy", s);
            let _ = fs::remove_dir_all(&out);
        }
        if corpus == "flow" {
            self.delta_run(t, home, src, i, work)?;
        }
        Ok(())
    }

    /// Peer time / blockctl (package layout) time for the same target, corpus and op.
    fn ratio(&self, r: &Row) -> Option<f64> {
        if r.tool == "blockctl package" {
            return None;
        }
        let op = if r.op == "copy" { "get" } else { r.op.as_str() };
        let base = self.rows.iter().find(|b| {
            b.tool == "blockctl package"
                && b.target == r.target
                && b.corpus == r.corpus
                && b.op == op
        })?;
        Some(median(&r.secs) / median(&base.secs))
    }
}

/// One of the speed goals, checked on this run's medians.
struct Goal {
    goal: &'static str,
    target: String,
    corpus: String,
    op: String,
    measured: f64,
    limit: f64,
    /// `measured >= limit` (a speed-up), else `measured < limit` (a cost).
    at_least: bool,
    met: bool,
}

impl Bench {
    fn median_of(&self, t: &str, c: &str, tool: &str, op: &str) -> Option<f64> {
        self.rows
            .iter()
            .find(|r| r.target == t && r.corpus == c && r.tool == tool && r.op == op)
            .map(|r| median(&r.secs))
    }

    /// The goals of the benchmark issue that this run measured.
    fn goals(&self) -> Vec<Goal> {
        let mut out = Vec::new();
        let mut seen: Vec<(String, String)> = Vec::new();
        for r in &self.rows {
            let key = (r.target.clone(), r.corpus.clone());
            if !seen.contains(&key) {
                seen.push(key);
            }
        }
        let mut check = |goal, t: &str, c: &str, op: &str, m: Option<f64>, limit, at_least| {
            if let Some(measured) = m {
                out.push(Goal {
                    goal,
                    target: t.into(),
                    corpus: c.into(),
                    op: op.into(),
                    measured,
                    limit,
                    at_least,
                    met: if at_least {
                        measured >= limit
                    } else {
                        measured < limit
                    },
                });
            }
        };
        let ratio = |a: Option<f64>, b: Option<f64>| Some(a? / b?);
        for (t, c) in &seen {
            let (t, c) = (t.as_str(), c.as_str());
            let m = |tool, op| self.median_of(t, c, tool, op);
            for op in ["put", "get"] {
                let pkg = m("blockctl package", op);
                if c != "big" {
                    let r = ratio(m("rclone", op), pkg);
                    check("package vs rclone", t, c, op, r, 5.0, true);
                    let r = ratio(m("prefect", op), pkg);
                    check("package vs Prefect", t, c, op, r, 20.0, true);
                }
                let r = ratio(m("rclone", op), m("blockctl files", op));
                check("files vs rclone", t, c, op, r, 1.0, true);
                if t == "local" {
                    let r = ratio(pkg, m("tar+zstd", op));
                    check("package / tar+zstd", t, c, op, r, 1.3, false);
                }
                if c == "big" && (t == "s3" || t == "azure") {
                    // A cold get at least as fast as rclone; a put within 1.2x.
                    let limit = if op == "get" { 1.0001 } else { 1.2 };
                    let r = ratio(pkg, m("rclone", op));
                    check("package / rclone (big)", t, c, op, r, limit, false);
                }
            }
            if c == "many" {
                let r = ratio(
                    m("blockctl package", "re-put"),
                    m("blockctl package", "put"),
                );
                check("re-put / cold put", t, c, "re-put", r, 0.05, false);
            }
            if c == "flow" {
                let b = |tool, what| self.bytes_of(t, tool, what);
                let pkg = "blockctl package";
                let r = ratio(b(pkg, "edit re-put up"), b(pkg, "cold put up"));
                check(
                    "edit re-put bytes / cold put bytes",
                    t,
                    c,
                    "edit re-put",
                    r,
                    0.02,
                    false,
                );
                let r = ratio(m("rclone", "edit re-put"), m(pkg, "edit re-put"));
                check(
                    "edit re-put: rclone / blockctl",
                    t,
                    c,
                    "edit re-put",
                    r,
                    1.0,
                    true,
                );
                let r = ratio(b(pkg, "edit get down"), b(pkg, "cold get down"));
                if t != "local" {
                    check(
                        "edit get bytes / package bytes",
                        t,
                        c,
                        "edit get",
                        r,
                        0.02,
                        false,
                    );
                }
                let cp = self.median_of("local", "flow", "cp -a", "copy");
                let r = ratio(m(pkg, "cached get"), cp);
                check(
                    "cached get / cp -a (local)",
                    t,
                    c,
                    "cached get",
                    r,
                    1.5,
                    false,
                );
            }
        }
        for r in &self.rows {
            if r.corpus == "big" && r.tool.starts_with("blockctl") {
                let peak = *r.peak_kib.iter().max().unwrap_or(&0) as f64 / 1024.0;
                let op = format!("{} {}", r.tool.trim_start_matches("blockctl "), r.op);
                check(
                    "peak MiB (big)",
                    &r.target,
                    "big",
                    &op,
                    Some(peak),
                    100.0,
                    false,
                );
            }
        }
        out
    }
}

fn prefect_script() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    workspace.join("bench").join("prefect_put_get.py")
}

fn find_blockctl() -> Result<PathBuf, String> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    let bin = target.join("release").join("blockctl");
    // Always (a no-op when up to date), so a stale binary is never measured.
    eprintln!("cargo build --release -p blockctl");
    let ok = Command::new(env!("CARGO"))
        .args(["build", "--release", "-q", "-p", "blockctl"])
        .current_dir(workspace)
        .status()
        .map_err(|e| e.to_string())?
        .success();
    if !ok || !bin.exists() {
        return Err(format!(
            "{} is missing: `cargo build --release -p blockctl` failed",
            bin.display()
        ));
    }
    Ok(bin)
}

fn main() {
    let args = parse_args();
    let blockctl = find_blockctl().unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(1)
    });
    let work = tempfile::Builder::new()
        .prefix("blockctl-bench-")
        .tempdir()
        .expect("temp dir");
    let mut corpora = Vec::new();
    for c in &args.corpora {
        eprintln!("generating corpus {c}");
        let root = work.path().join("corpus").join(c);
        generate(c, &root, args.big_mib);
        corpora.push((c.clone(), root));
    }
    let mut notes = Vec::new();
    let prefect = if args.targets.iter().any(|t| t == "local" || t == "s3") {
        eprintln!("installing Prefect if missing");
        peers::prefect_python()
            .map_err(|e| notes.push(format!("prefect could not be installed: {e}")))
            .ok()
    } else {
        None
    };
    if args.targets.iter().any(|t| t == "local")
        && let Err(e) = peers::zstd()
    {
        notes.push(format!("zstd could not be installed: {e}"));
    }
    let mut bench = Bench {
        blockctl,
        prefect,
        rows: Vec::new(),
        bytes: Vec::new(),
        notes,
    };
    for name in &args.targets {
        eprintln!("== starting {name}");
        match start_target(name, work.path()) {
            Ok(t) => bench.target(&t, &corpora, &args, work.path()),
            Err(e) => bench
                .notes
                .push(format!("{name}: emulator did not start: {e}")),
        }
    }

    println!("| target | corpus | tool | op | median s | peak MiB | ratio peer/blockctl |");
    println!("|---|---|---|---|---:|---:|---:|");
    let mut json = Vec::new();
    for r in &bench.rows {
        let med = median(&r.secs);
        let peak = *r.peak_kib.iter().max().unwrap_or(&0) as f64 / 1024.0;
        let ratio = bench.ratio(r);
        println!(
            "| {} | {} | {} | {} | {:.3} | {:.1} | {} |",
            r.target,
            r.corpus,
            r.tool,
            r.op,
            med,
            peak,
            ratio.map_or("—".to_string(), |x| format!("{x:.2}"))
        );
        json.push(serde_json::json!({
            "target": r.target, "corpus": r.corpus, "tool": r.tool, "op": r.op,
            "median_s": med, "runs_s": r.secs, "peak_mib": peak, "ratio_vs_blockctl": ratio,
        }));
    }
    if !bench.bytes.is_empty() {
        println!("\n| target | tool | bytes (median over runs) | what |");
        println!("|---|---|---:|---|");
        let mut seen = Vec::new();
        for (t, tool, what, _) in &bench.bytes {
            if seen.contains(&(t, tool, what)) {
                continue;
            }
            seen.push((t, tool, what));
            let n = bench.bytes_of(t, tool, what).unwrap_or(0.0);
            println!("| {t} | {tool} | {n:.0} | {what} |");
        }
    }
    let goals = bench.goals();
    println!("\n| goal | target | corpus | op | measured | limit | met |");
    println!("|---|---|---|---|---:|---:|---|");
    for g in &goals {
        println!(
            "| {} | {} | {} | {} | {:.3} | {} {} | {} |",
            g.goal,
            g.target,
            g.corpus,
            g.op,
            g.measured,
            if g.at_least { "≥" } else { "<" },
            g.limit,
            if g.met { "yes" } else { "**no**" }
        );
    }
    for n in &bench.notes {
        println!("\n- {n}");
    }
    if let Some(path) = &args.json {
        let bytes: Vec<_> = bench
            .bytes
            .iter()
            .map(|(t, tool, what, n)| serde_json::json!({"target": t, "tool": tool, "what": what, "bytes": n}))
            .collect();
        let doc = serde_json::json!({
            "bytes": bytes,
            "runs": args.runs, "many_runs": args.many_runs.unwrap_or(args.runs), "big_mib": args.big_mib, "rows": json, "notes": bench.notes,
            "goals": goals.iter().map(|g| serde_json::json!({
                "goal": g.goal, "target": g.target, "corpus": g.corpus, "op": g.op,
                "measured": g.measured, "limit": g.limit, "at_least": g.at_least, "met": g.met,
            })).collect::<Vec<_>>(),
        });
        fs::write(path, serde_json::to_vec_pretty(&doc).unwrap())
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }
    if !bench.notes.is_empty() {
        std::process::exit(1);
    }
}
