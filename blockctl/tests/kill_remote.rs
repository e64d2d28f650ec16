//! blockctl killed with SIGKILL during a large put (while hashing, and while the package goes
//! up) and during a get (into a new DEST, and over an existing one with `--replace`), against
//! the remote backends' emulators: S3 (moto), Azure (Azurite), GCS (fake-gcs-server), SMB
//! (Samba), SFTP (OpenSSH's sshd), WebDAV (wsgidav), FTP (pyftpdlib) and an OCI registry
//! (distribution), and gets over read-only HTTP. The previous version stays current and
//! whole, DEST is untouched or absent, the next get leaves no staging folder, and after `gc`
//! the store holds only the live version (a registry keeps the killed put's blobs for its own
//! garbage collection: its tags and manifests are checked).
//!
//! The phase is read from the process itself: `rchar` in `/proc/PID/io` counts the bytes it
//! read from files. A put reads the tree once to hash it, then again to pack it while the
//! parts go up, so below one tree's size it is hashing, and well past it it is uploading.
//!
//! A killed put leaves the frames it sent and its intent record; what a listing does not
//! show is read from each emulator (moto's multipart uploads, Azurite's uncommitted blobs,
//! Samba's temp files on disk) and reported. `gc` removes nothing while the put's intent is
//! fresh (a put renews it every 15 s; one not renewed for 60 s is a killed put's), then the
//! frames no version uses and SMB, SFTP, WebDAV and FTP temp files (their `LeftoverSweeper`s) older than the 60 s
//! grace.
//!
//! S3, Azure and GCS date objects themselves, so their scenarios wait that minute out: the
//! three run side by side, and each runs its killed gets (at a path of their own) meanwhile,
//! while the other scenarios, which age what the kill left themselves, run beside them.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use conformance::harness::http::request;
use conformance::harness::{
    Azurite, FakeGcs, Moto, OciRegistry, PyFtpd, Samba, Sshd, StaticHttp, WsgiDav, hmac_sha256,
    shared,
};
use conformance::run_once::{RunOnce, panic_text};
use conformance::tree::{noise, small_tree, snapshot, write};

mod common;
use common::Home;

/// The big file of the large tree: random, so packing does not shrink it.
const BIG: u64 = 160 << 20;
/// The put is killed once it has read this much past one pass over the tree: with 8 MiB
/// parts, 4 in flight and the packer's buffers, some tens of MiB are then already stored.
const INTO_UPLOAD: u64 = 96 << 20;
const TIMEOUT: Duration = Duration::from_secs(180);
/// Every block keeps its data under this prefix of its bucket, container or share.
const PREFIX: &str = "team";
/// The path (beside `app`) of the version that gets are killed reading.
const GETS: &str = "gets";

/// The large tree, written once into the target's temp folder and reused by later runs: a
/// static `TempDir` is never dropped, so each run would leave its own copy behind.
fn big_tree() -> &'static Path {
    static TREE: OnceLock<PathBuf> = OnceLock::new();
    TREE.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("kill_remote-big-tree");
        if !dir.is_dir() {
            let partial = dir.with_extension("partial");
            let _ = fs::remove_dir_all(&partial);
            small_tree(&partial, "big");
            write(&partial, "data/big.bin", noise(BIG as usize, 17));
            fs::rename(&partial, &dir).unwrap();
        }
        dir
    })
}

/// One remote backend behind its emulator.
/// `read()` once two reads 300 ms apart agree (at most 10 s).
fn settled(read: &dyn Fn() -> Vec<String>) -> Vec<String> {
    let mut last = read();
    for _ in 0..33 {
        std::thread::sleep(Duration::from_millis(300));
        let now = read();
        if now == last {
            return now;
        }
        last = now;
    }
    last
}

struct Remote {
    kind: &'static str,
    settings: Vec<String>,
    /// Every stored key under `PREFIX/` (relative to it) that a listing shows.
    listed: Box<dyn Fn() -> BTreeSet<String>>,
    /// What unfinished uploads left that a listing does not show, as the emulator tells.
    unfinished: Box<dyn Fn() -> Vec<String>>,
    /// Makes those leftovers look old enough for gc (where gc can see them at all).
    age: Box<dyn Fn()>,
    /// Whether a listed key is a frame.
    is_frame: fn(&str) -> bool,
    /// Whether gc deletes frames no version uses (a registry leaves blobs to its own garbage
    /// collection).
    gc_drops_frames: bool,
    _server: Arc<dyn std::any::Any + Send + Sync>,
}

/// `<Tag>...</Tag>` contents, in order.
fn xml_values(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    xml.split(&open)
        .skip(1)
        .filter_map(|s| s.split_once(&close).map(|(v, _)| v.to_string()))
        .collect()
}

/// Frames go up in packs (format 3) or one by one (format 2).
fn in_frames_folder(key: &str) -> bool {
    key.contains("/.blocks/packs/") || key.contains("/.blocks/frames/")
}

fn under_prefix(keys: impl IntoIterator<Item = String>) -> BTreeSet<String> {
    let p = format!("{PREFIX}/");
    keys.into_iter()
        .filter_map(|k| k.strip_prefix(&p).map(str::to_string))
        .collect()
}

fn get_text(url: &str, headers: &[(&str, &str)]) -> String {
    let resp = request("GET", url, headers, b"").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(resp.status, 200, "GET {url}: {}", resp.text());
    resp.text()
}

fn s3() -> Remote {
    let moto = shared::<Moto>(Moto::start);
    let bucket = "kill-remote";
    moto.create_bucket(bucket).unwrap();
    let endpoint = moto.endpoint.clone();
    let settings = vec![
        format!("bucket={bucket}"),
        format!("prefix={PREFIX}"),
        format!("endpoint={endpoint}"),
        "region=us-east-1".into(),
        "access_key_id=testing".into(),
        "secret_access_key=testing".into(),
    ];
    // moto answers unsigned requests.
    let base = format!("{endpoint}/{bucket}");
    let list = base.clone();
    let uploads = base.clone();
    Remote {
        kind: "s3",
        settings,
        listed: Box::new(move || {
            let xml = get_text(&format!("{list}?list-type=2&prefix={PREFIX}/"), &[]);
            under_prefix(xml_values(&xml, "Key"))
        }),
        unfinished: Box::new(move || {
            let xml = get_text(&format!("{uploads}?uploads"), &[]);
            xml_values(&xml, "Upload")
                .iter()
                .flat_map(|u| xml_values(u, "Key"))
                .map(|k| format!("multipart upload of {k}"))
                .collect()
        }),
        // Objects are dated by the server: wait out the intent's life and gc's grace.
        age: Box::new(wait_out_grace),
        is_frame: in_frames_folder,
        gc_drops_frames: true,
        _server: moto,
    }
}

fn gcs() -> Remote {
    let gcs = shared::<FakeGcs>(FakeGcs::start);
    let bucket = "kill-remote";
    gcs.create_bucket(bucket).unwrap();
    let endpoint = gcs.endpoint.clone();
    let settings = vec![
        format!("bucket={bucket}"),
        format!("prefix={PREFIX}"),
        format!("endpoint={endpoint}"),
        "anonymous=true".into(),
    ];
    let list = format!("{endpoint}/storage/v1/b/{bucket}/o?prefix={PREFIX}/");
    Remote {
        kind: "gcs",
        settings,
        listed: Box::new(move || {
            let json: serde_json::Value = serde_json::from_str(&get_text(&list, &[])).unwrap();
            let items = json["items"].as_array().cloned().unwrap_or_default();
            under_prefix(
                items
                    .iter()
                    .filter_map(|i| i["name"].as_str().map(str::to_string)),
            )
        }),
        // fake-gcs-server lists no unfinished (resumable) uploads.
        age: Box::new(wait_out_grace),
        unfinished: Box::new(Vec::new),
        is_frame: in_frames_folder,
        gc_drops_frames: true,
        _server: gcs,
    }
}

/// The container's blobs under `PREFIX/`, with the ones that only have uncommitted blocks
/// when `uncommitted`: a SharedKey-signed List Blobs.
fn azure_list(az: &Azurite, container: &str, uncommitted: bool) -> BTreeSet<String> {
    const VERSION: &str = "2021-08-06";
    let date = httpdate::fmt_http_date(SystemTime::now());
    let mut params = vec![
        ("comp", "list".to_string()),
        ("prefix", format!("{PREFIX}/")),
        ("restype", "container".to_string()),
    ];
    if uncommitted {
        params.push(("include", "uncommittedblobs".to_string()));
    }
    params.sort();
    let canonical: String = params.iter().map(|(k, v)| format!("\n{k}:{v}")).collect();
    let query: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let acct = az.account;
    let to_sign = format!(
        "GET\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{VERSION}\n/{acct}/{acct}/{container}{canonical}"
    );
    let key = STANDARD.decode(az.key).unwrap();
    let auth = format!(
        "SharedKey {acct}:{}",
        STANDARD.encode(hmac_sha256(&key, to_sign.as_bytes()))
    );
    let url = format!("{}/{container}?{}", az.endpoint, query.join("&"));
    let headers = [
        ("x-ms-date", date.as_str()),
        ("x-ms-version", VERSION),
        ("Authorization", auth.as_str()),
    ];
    let xml = get_text(&url, &headers);
    under_prefix(xml_values(&xml, "Name"))
}

fn azure() -> Remote {
    let az = shared::<Azurite>(Azurite::start);
    let container = "kill-remote";
    az.create_container(container).unwrap();
    let settings = vec![
        format!("container={container}"),
        format!("prefix={PREFIX}"),
        "use_emulator=true".into(),
        format!("endpoint={}", az.endpoint),
    ];
    let (a1, a2) = (az.clone(), az.clone());
    Remote {
        kind: "azure",
        settings,
        listed: Box::new(move || azure_list(&a1, container, false)),
        unfinished: Box::new(move || {
            let all = azure_list(&a2, container, true);
            let committed = azure_list(&a2, container, false);
            all.difference(&committed)
                .map(|b| format!("uncommitted blocks of {b}"))
                .collect()
        }),
        age: Box::new(wait_out_grace),
        is_frame: in_frames_folder,
        gc_drops_frames: true,
        _server: az,
    }
}

/// Every file under `dir`, relative to `base`.
fn files_under(base: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            files_under(base, &p, out);
        } else {
            let rel = p.strip_prefix(base).unwrap().to_string_lossy().into_owned();
            out.push((rel, p));
        }
    }
}

fn smb() -> Remote {
    let samba = shared::<Samba>(Samba::start);
    let settings = vec![
        format!("host={}", samba.host),
        format!("port={}", samba.port),
        format!("share={}", samba.share),
        format!("prefix={PREFIX}"),
        format!("username={}", samba.user),
        format!("password={}", samba.password),
    ];
    let root = samba.share_dir.join(PREFIX);
    temp_file_remote("smb", settings, root, samba)
}

fn sftp() -> Remote {
    let sshd = shared::<Sshd>(Sshd::start);
    let settings = vec![
        format!("basepath={}", sshd.url(PREFIX)),
        format!("username={}", sshd.user),
        format!("private_key_path={}", sshd.client_key.display()),
        format!("known_hosts={}", sshd.known_hosts.display()),
    ];
    let root = sshd.data_dir.join(PREFIX);
    temp_file_remote("remote-file-system", settings, root, sshd)
}

fn webdav() -> Remote {
    let dav = shared::<WsgiDav>(WsgiDav::start);
    let settings = vec![
        format!("basepath={}", dav.url(PREFIX)),
        format!("username={}", dav.user),
        format!("password={}", dav.password),
    ];
    let root = dav.root.join(PREFIX);
    temp_file_remote("remote-file-system", settings, root, dav)
}

fn ftp() -> Remote {
    let ftpd = shared::<PyFtpd>(PyFtpd::start);
    let settings = vec![
        format!("basepath={}", ftpd.url(PREFIX)),
        format!("username={}", ftpd.user),
        format!("password={}", ftpd.password),
    ];
    let root = ftpd.root.join(PREFIX);
    temp_file_remote("remote-file-system", settings, root, ftpd)
}

/// The registry's own storage, read from disk: tags, manifest revisions and layer links of
/// the repository `PREFIX/app` are what a listing shows; `_uploads` holds unfinished blob
/// uploads.
fn oci() -> Remote {
    let registry = shared::<OciRegistry>(OciRegistry::start);
    let settings = vec![
        format!("registry={}", registry.host),
        format!("repository={PREFIX}"),
        format!("username={}", registry.user),
        format!("password={}", registry.password),
    ];
    let repo = registry
        .storage
        .join("docker/registry/v2/repositories")
        .join(PREFIX)
        .join("app");
    let files = move || {
        let mut out = Vec::new();
        files_under(&repo, &repo, &mut out);
        out.into_iter().map(|(rel, _)| rel).collect::<Vec<_>>()
    };
    let listing = files.clone();
    Remote {
        kind: "oci",
        settings,
        listed: Box::new(move || {
            listing()
                .iter()
                .filter_map(|rel| {
                    let parts: Vec<&str> = rel.split('/').collect();
                    match parts.as_slice() {
                        ["_manifests", "tags", tag, "current", "link"] => {
                            Some(format!("tag {tag}"))
                        }
                        ["_manifests", "revisions", "sha256", hex, "link"] => {
                            Some(format!("manifest {hex}"))
                        }
                        ["_layers", "sha256", hex, "link"] => Some(format!("layer {hex}")),
                        _ => None,
                    }
                })
                .collect()
        }),
        unfinished: Box::new(move || {
            let sessions: BTreeSet<String> = files()
                .iter()
                .filter_map(|rel| rel.strip_prefix("_uploads/"))
                .filter_map(|rest| rest.split('/').next().map(str::to_string))
                .collect();
            sessions
                .into_iter()
                .map(|s| format!("upload session {s}"))
                .collect()
        }),
        // gc of a registry goes by versions, not by age.
        age: Box::new(|| {}),
        is_frame: |key| key.starts_with("layer "),
        gc_drops_frames: false,
        _server: registry,
    }
}

/// A backend that writes `.~tmp-*` files renamed into place, whose folder `root` the test
/// reads directly.
fn temp_file_remote(
    kind: &'static str,
    settings: Vec<String>,
    root: PathBuf,
    server: Arc<dyn std::any::Any + Send + Sync>,
) -> Remote {
    let files = move || {
        let mut out = Vec::new();
        files_under(&root, &root, &mut out);
        out
    };
    let is_temp = |rel: &str| rel.contains(".~tmp-");
    let (f1, f2, f3) = (files.clone(), files.clone(), files);
    Remote {
        kind,
        settings,
        // The store's own bookkeeping (`.~tmp-*` temp files, `.~lock-*` locks) is hidden
        // from a listing.
        listed: Box::new(move || {
            f1().into_iter()
                .map(|(rel, _)| rel)
                .filter(|rel| !rel.rsplit('/').next().unwrap().starts_with(".~"))
                .collect()
        }),
        unfinished: Box::new(move || {
            f2().into_iter()
                .filter(|(rel, _)| is_temp(rel))
                .map(|(rel, p)| {
                    let len = p.metadata().map_or(0, |m| m.len());
                    format!("temp file {rel} ({len} bytes)")
                })
                .collect()
        }),
        // Everything the killed put left (frames, its intent, temp files) dated an hour back.
        age: Box::new(move || {
            let hour_ago = SystemTime::now() - Duration::from_secs(3600);
            for (rel, p) in f3() {
                if rel.starts_with("app/") && rel.contains("/.blocks/") && !rel.ends_with("HEAD") {
                    let f = fs::File::options().write(true).open(&p).unwrap();
                    f.set_modified(hour_ago).unwrap();
                }
            }
        }),
        is_frame: in_frames_folder,
        gc_drops_frames: true,
        _server: server,
    }
}

/// Waits until a killed put's intent has expired and its objects are past gc's grace.
fn wait_out_grace() {
    std::thread::sleep(Duration::from_secs(62));
}

/// Bytes the process has read so far (`rchar` of `/proc/PID/io`), or None once it is gone.
fn read_bytes(pid: u32) -> Option<u64> {
    let io = fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .and_then(|n| n.trim().parse().ok())
}

/// A blockctl run in the background, its stderr kept for when it ends too early.
struct Running {
    child: Child,
    stderr: PathBuf,
    what: String,
}

fn spawn(h: &Home, args: &[&str]) -> Running {
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    let n = RUNS.fetch_add(1, Ordering::Relaxed);
    let stderr = h.path(&format!("stderr-{n}"));
    // A fresh hash cache: every put hashes the tree, so the phases below are where
    // `read_bytes` says they are.
    let cache = h.path(&format!("cache-{n}"));
    let child = h
        .cmd(args)
        .env("BLOCKCTL_CACHE_DIR", &cache)
        .stdout(Stdio::null())
        .stderr(fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    Running {
        child,
        stderr,
        what: args.join(" "),
    }
}

impl Running {
    /// Polls `cond` every 2 ms; fails if blockctl ends first or it takes too long.
    fn wait_until(&mut self, phase: &str, mut cond: impl FnMut(&mut Self) -> bool) {
        let start = Instant::now();
        while !cond(self) {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "`blockctl {}` ended ({status}) before {phase}: {}",
                    self.what,
                    fs::read_to_string(&self.stderr).unwrap_or_default()
                );
            }
            assert!(
                start.elapsed() < TIMEOUT,
                "`blockctl {}`: timed out waiting for {phase}",
                self.what
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

/// Folders beside `dest` that a get stages into.
fn staging(dest: &Path) -> Vec<PathBuf> {
    let prefix = format!(".{}.blockctl-", dest.file_name().unwrap().to_string_lossy());
    fs::read_dir(dest.parent().unwrap())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect()
}

/// True once a staging folder beside `dest` holds at least `min` bytes of the big file.
fn big_file_staged(dest: &Path, min: u64) -> bool {
    let mut found = Vec::new();
    for s in staging(dest) {
        files_under(&s, &s, &mut found);
    }
    found
        .iter()
        .any(|(rel, p)| rel.ends_with("big.bin") && p.metadata().is_ok_and(|m| m.len() >= min))
}

fn scenario(remote: Remote) {
    let t0 = Instant::now();
    let kind = remote.kind;
    let h = Home::new();
    let block = format!("{kind}/emu");
    let mut create = vec!["block", "create", block.as_str()];
    for s in &remote.settings {
        create.extend(["--set", s.as_str()]);
    }
    h.ok(&create);
    let slug = format!("{block}/app");
    let slug = slug.as_str();

    let v1_src = h.path("v1");
    small_tree(&v1_src, "v1");
    let v1 = h.json(&["--json", "put", v1_src.to_str().unwrap(), slug])["version"]
        .as_str()
        .unwrap()
        .to_string();
    let v1_listed = (remote.listed)();
    let v1_is_current_and_whole = |when: &str| {
        let versions = h.json(&["--json", "versions", slug]);
        let listed: Vec<&str> = versions
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["version"].as_str().unwrap())
            .collect();
        assert_eq!(listed, [v1.as_str()], "{kind}: {when}: versions changed");
        let dest = h.path(&format!("check-{}", when.replace(' ', "-")));
        h.ok(&["get", slug, dest.to_str().unwrap()]);
        assert_eq!(
            snapshot(&dest),
            snapshot(&v1_src),
            "{kind}: {when}: v1 is not whole"
        );
    };
    let big = big_tree().to_str().unwrap();

    // While hashing: part of the tree read, not all of it.
    let mut put = spawn(&h, &["put", big, slug]);
    let pid = put.child.id();
    put.wait_until("hashing", |_| {
        read_bytes(pid).is_some_and(|n| n >= 16 << 20)
    });
    let read = read_bytes(pid).unwrap_or(0);
    put.kill();
    eprintln!(
        "{kind}: put killed while hashing, {} MiB of {} read",
        read >> 20,
        BIG >> 20
    );
    assert!(
        read < BIG,
        "{kind}: the put was past hashing ({read} bytes read)"
    );
    v1_is_current_and_whole("after a kill while hashing");

    // While uploading: the tree read once, and well into a second pass.
    let mut put = spawn(&h, &["put", big, slug]);
    let pid = put.child.id();
    put.wait_until("the upload", |_| {
        read_bytes(pid).is_some_and(|n| n >= BIG + INTO_UPLOAD)
    });
    put.kill();
    // A server may still be writing bytes the killed client had already sent (wsgidav keeps
    // appending to the temp file from its socket buffer): wait until what it holds settles.
    let after_kill = settled(&remote.unfinished);
    let listed_after_kill = (remote.listed)();
    v1_is_current_and_whole("after a kill while uploading");
    // Proof that the kill hit the upload: frames no version names.
    let sent: Vec<&String> = listed_after_kill
        .difference(&v1_listed)
        .filter(|k| (remote.is_frame)(k))
        .collect();
    assert!(!sent.is_empty(), "{kind}: the killed put had sent no frame");

    // gc spares what a put may still be using (its intent is fresh), then removes what is
    // old: only v1 is stored afterwards.
    let early = h.json(&["--json", "gc", slug, "--keep", "5"]);
    assert_eq!(
        (early["frames"].as_u64(), early["leftovers"].as_u64()),
        (Some(0), Some(0)),
        "{kind}: gc removed fresh leftovers: {early}"
    );
    assert_eq!(
        (remote.unfinished)(),
        after_kill,
        "{kind}: fresh leftovers gone"
    );
    // Gets of a big version, killed mid-download, at a path of their own: where aging means
    // waiting (a store that dates objects itself), they run meanwhile. They end before the
    // gc below, so it meets no put of theirs under way.
    let gets_slug = format!("{block}/{GETS}");
    std::thread::scope(|s| {
        let gets = s.spawn(|| {
            h.ok(&["put", big, &gets_slug]);
            kill_gets(&h, &gets_slug, kind);
        });
        (remote.age)();
        if let Err(panic) = gets.join() {
            std::panic::resume_unwind(panic);
        }
    });
    // What the listing shows at the scenario's own path (the gets' path left out).
    let listed = || -> BTreeSet<String> {
        (remote.listed)()
            .into_iter()
            .filter(|k| !k.starts_with(&format!("{GETS}/")))
            .collect()
    };
    let gc = h.json(&["--json", "gc", slug, "--keep", "5"]);
    let without_frames = |keys: BTreeSet<String>| -> BTreeSet<String> {
        keys.into_iter().filter(|k| !(remote.is_frame)(k)).collect()
    };
    if remote.gc_drops_frames {
        assert_eq!(
            listed(),
            v1_listed,
            "{kind}: the store holds more than v1 after gc"
        );
    } else {
        assert_eq!(
            without_frames(listed()),
            without_frames(v1_listed.clone()),
            "{kind}: the store holds more than v1 after gc"
        );
    }
    let after_gc = (remote.unfinished)();
    eprintln!(
        "{kind}: {} frame(s) sent before the kill; unfinished uploads: {after_kill:?}; gc \
         removed {} frame(s) and {} leftover(s); after gc: {after_gc:?}",
        sent.len(),
        gc["frames"],
        gc["leftovers"]
    );
    if remote.gc_drops_frames {
        assert!(
            gc["frames"].as_u64() >= Some(sent.len() as u64),
            "{kind}: gc removed fewer frames than the kill left: {gc}"
        );
    }
    // gc removes SMB, SFTP, WebDAV and FTP temp files (through its LeftoverSweeper); S3 frames go up in single
    // requests, so no multipart upload is left. Azure cannot abort uncommitted blocks (it
    // discards them after 7 days), and fake-gcs-server shows none.
    if kind == "smb" || kind == "s3" || kind == "remote-file-system" {
        assert!(after_gc.is_empty(), "{kind}: gc left {after_gc:?}");
    }

    eprintln!("{kind}: done in {:.1} s", t0.elapsed().as_secs_f64());
}

/// Gets of the big version at `slug`, killed mid-download into a new DEST (early) and over an
/// old one with `--replace` (late): DEST absent or untouched; the next gets complete and
/// remove what the killed ones left.
fn kill_gets(h: &Home, slug: &str, kind: &str) {
    let fresh = h.path("fresh");
    let mut get = spawn(h, &["get", slug, fresh.to_str().unwrap()]);
    // Early in the download into a new DEST, late (most of the file there) over an old one.
    get.wait_until("a staging folder with data", |_| big_file_staged(&fresh, 1));
    get.kill();
    assert!(!fresh.exists(), "{kind}: a killed get created DEST");

    let dest = h.path("run");
    small_tree(&dest, "old");
    let before = snapshot(&dest);
    let mut get = spawn(h, &["get", slug, dest.to_str().unwrap(), "--replace"]);
    get.wait_until("most of the big file staged", |_| {
        big_file_staged(&dest, BIG * 3 / 4)
    });
    get.kill();
    assert_eq!(snapshot(&dest), before, "{kind}: a killed get changed DEST");
    assert!(
        !staging(&dest).is_empty(),
        "{kind}: expected the killed get's staging folder"
    );

    // The next gets complete and remove what the killed ones left.
    h.ok(&["get", slug, dest.to_str().unwrap(), "--replace"]);
    assert_eq!(snapshot(&dest), snapshot(big_tree()));
    assert!(
        staging(&dest).is_empty(),
        "{kind}: staging folder left behind"
    );
    h.ok(&["get", slug, fresh.to_str().unwrap()]);
    assert_eq!(snapshot(&fresh), snapshot(big_tree()));
    assert!(
        staging(&fresh).is_empty(),
        "{kind}: staging folder left behind"
    );
}

/// How a scenario ended: `Err` holds its panic message.
type Outcome = Result<(), String>;
/// How each scenario on a server-dated store ended.
type Outcomes = BTreeMap<&'static str, Outcome>;
/// A remote by its kind, and how to set it up.
type Setup = (&'static str, fn() -> Remote);

/// The scenarios that age what a killed put left themselves (files dated back, a registry
/// collected by version), by test name, in the order the dated scenarios' wait takes them
/// up: from the last test libtest starts to the first.
const SELF_AGED: [(&str, fn()); 6] = [
    ("kill_on_webdav", || scenario(webdav())),
    ("kill_on_smb", || scenario(smb())),
    ("kill_on_sftp", || scenario(sftp())),
    ("kill_on_oci", || scenario(oci())),
    ("kill_on_http_get", http_get),
    ("kill_on_ftp", || scenario(ftp())),
];

/// How many of those run at once while the dated scenarios wait.
const SIDE_LANES: usize = 2;

/// Runs the scenario of test `name` once in this binary: the first caller runs it (its
/// test, or the dated scenarios' wait), any other waits for it and gets how it ended.
fn once(name: &'static str, run: fn()) -> Outcome {
    static RUNS: RunOnce<Outcome> = RunOnce::new();
    RUNS.get_or_run(name, || std::panic::catch_unwind(run).map_err(panic_text))
}

/// The test of a scenario that ages its leftovers itself.
fn self_aged(name: &'static str) {
    let (_, run) = SELF_AGED
        .iter()
        .find(|(n, _)| *n == name)
        .expect("a scenario of that name");
    if let Err(e) = once(name, *run) {
        panic!("{e}");
    }
}

/// The scenarios on S3, Azure and GCS, all at once. Each waits over a minute for the killed
/// put's intent to expire (those stores date objects themselves, so nothing can be aged), so
/// they run side by side rather than each holding a test thread for its wait. The first of
/// their tests to run starts all three and waits for every one (scoped threads: nothing
/// outlives it); each test then fails with its own scenario's panic only. Meanwhile
/// [`SIDE_LANES`] more threads take up, one after another, the scenarios that age their
/// leftovers themselves and that no test has started yet, so that the machine works while the
/// three wait (libtest runs only a few tests at a time, and the dated scenarios' other tests
/// only wait); they start none once the three are done, and those tests get what they ran.
fn dated_by_server(kind: &'static str) {
    static OUTCOMES: OnceLock<Outcomes> = OnceLock::new();
    let outcomes = OUTCOMES.get_or_init(|| {
        let remotes: [Setup; 3] = [("s3", s3), ("azure", azure), ("gcs", gcs)];
        let dated_done = AtomicBool::new(false);
        let next = AtomicUsize::new(0);
        std::thread::scope(|s| {
            let runs: Vec<_> = remotes
                .iter()
                .map(|&(kind, remote)| (kind, s.spawn(move || scenario(remote()))))
                .collect();
            for _ in 0..SIDE_LANES {
                s.spawn(|| {
                    while !dated_done.load(Ordering::SeqCst)
                        && let Some(&(name, run)) =
                            SELF_AGED.get(next.fetch_add(1, Ordering::SeqCst))
                    {
                        // Its test reports how it ended.
                        let _ = once(name, run);
                    }
                });
            }
            let outcomes = runs
                .into_iter()
                .map(|(kind, run)| (kind, run.join().map_err(panic_text)))
                .collect();
            dated_done.store(true, Ordering::SeqCst);
            outcomes
        })
    });
    if let Err(e) = &outcomes[kind] {
        panic!("{e}");
    }
}

#[test]
fn kill_on_s3() {
    dated_by_server("s3");
}

#[test]
fn kill_on_azure() {
    dated_by_server("azure");
}

#[test]
fn kill_on_gcs() {
    dated_by_server("gcs");
}

#[test]
fn kill_on_smb() {
    self_aged("kill_on_smb");
}

#[test]
fn kill_on_sftp() {
    self_aged("kill_on_sftp");
}

#[test]
fn kill_on_webdav() {
    self_aged("kill_on_webdav");
}

#[test]
fn kill_on_ftp() {
    self_aged("kill_on_ftp");
}

#[test]
fn kill_on_oci() {
    self_aged("kill_on_oci");
}

#[test]
fn kill_on_http_get() {
    self_aged("kill_on_http_get");
}

/// Read-only HTTP (python's http.server) serving what a local block wrote: only gets, so only
/// the get kills.
fn http_get() {
    let web = shared::<StaticHttp>(StaticHttp::start);
    let h = Home::new();
    let served = format!("basepath={}", web.root.join("kill").display());
    h.ok(&["block", "create", "local/served", "--set", &served]);
    let url = format!("basepath={}", web.url("kill"));
    h.ok(&["block", "create", "remote-file-system/web", "--set", &url]);
    h.ok(&["put", big_tree().to_str().unwrap(), "local/served/app"]);
    kill_gets(&h, "remote-file-system/web/app", "http");
}
