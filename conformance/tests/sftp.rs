//! The conformance suite against a private OpenSSH sshd, started by the harness, once with a
//! key login and once with a password login. Then what is specific to SFTP: a wrong password,
//! a wrong key, an unknown and a changed host key (exit 4, one line, no secret), the files
//! layout as the OpenSSH `sftp` client sees it, a compare-and-swap that holds between two
//! connections, and a large package.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use conformance::harness::{Sshd, shared};
use conformance::remote_checks::{
    FaultRig, a_large_package_round_trips, another_client_reads_a_package,
    compare_and_swap_between, put_a_mirror, refused,
};
use conformance::tree::{small_tree, write};
use conformance::{Subject, conformance_suite};
use storage_core::{BlockPath, GetOptions, Layout, PutOptions, Secret, StorageBlock};
use storage_rfs::{RfsConfig, open, open_store};

const WRONG_PASSWORD: &str = "wrong-sftp-pw-T5m1-must-never-be-echoed";

fn sshd() -> Arc<Sshd> {
    shared::<Sshd>(Sshd::start)
}

fn key_config(sshd: &Sshd, sub: &str) -> RfsConfig {
    RfsConfig {
        basepath: sshd.url(sub),
        username: Some(sshd.user.clone()),
        password: None,
        private_key_path: Some(sshd.client_key.display().to_string()),
        private_key: None,
        known_hosts: Some(sshd.known_hosts.display().to_string()),
        insecure_accept_host_key: None,
        timeout: None,
    }
}

fn password_config(sshd: &Sshd, sub: &str, password: &str) -> RfsConfig {
    RfsConfig {
        password: Some(Secret::new(password)),
        private_key_path: None,
        ..key_config(sshd, sub)
    }
}

mod key_login {
    use super::*;

    async fn subject(case: &str) -> Subject {
        let sshd = sshd();
        let block = open(&key_config(&sshd, "key"), "remote-file-system/conformance")
            .expect("open sftp block");
        Subject::new(Arc::new(block), case).with_guard(sshd)
    }

    conformance_suite!(subject);
}

mod password_login {
    use super::*;

    async fn subject(case: &str) -> Subject {
        let sshd = sshd();
        let config = password_config(&sshd, "password", &sshd.password);
        let block = open(&config, "rfs/conformance").expect("open sftp block");
        Subject::new(Arc::new(block), case).with_guard(sshd)
    }

    conformance_suite!(subject);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_exit_4_and_never_shown() {
    let sshd = sshd();
    let label = "remote-file-system/wrong-password";
    let block = open(&password_config(&sshd, "wrong", WRONG_PASSWORD), label).unwrap();
    refused(&[&block], label, &[WRONG_PASSWORD, &sshd.password]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_the_server_does_not_know_is_exit_4() {
    let sshd = sshd();
    let label = "remote-file-system/wrong-key";
    let config = RfsConfig {
        private_key_path: Some(sshd.stranger_key.display().to_string()),
        ..key_config(&sshd, "wrong")
    };
    let key = std::fs::read_to_string(&sshd.stranger_key).unwrap();
    let body = key.lines().nth(1).unwrap().to_string();
    refused(&[&open(&config, label).unwrap()], label, &[&body]).await;
    // The same key given inline as a secret.
    let config = RfsConfig {
        private_key_path: None,
        private_key: Some(Secret::new(key)),
        ..key_config(&sshd, "wrong")
    };
    refused(&[&open(&config, label).unwrap()], label, &[&body]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_host_key_is_exit_4_unless_explicitly_accepted() {
    let sshd = sshd();
    let label = "remote-file-system/unknown-host";
    let empty = tempfile::NamedTempFile::new().unwrap();
    let config = RfsConfig {
        known_hosts: Some(empty.path().display().to_string()),
        ..password_config(&sshd, "unknown-host", &sshd.password)
    };
    refused(&[&open(&config, label).unwrap()], label, &[&sshd.password]).await;
    let err = open(&config, label).unwrap().check().await.unwrap_err();
    assert!(err.to_string().contains("not in known_hosts"), "{err}");

    let accepting = RfsConfig {
        insecure_accept_host_key: Some(true),
        ..config
    };
    open(&accepting, label).unwrap().check().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_host_key_is_exit_4_even_when_unknown_keys_are_accepted() {
    let sshd = sshd();
    let label = "remote-file-system/changed-host";
    let config = RfsConfig {
        known_hosts: Some(sshd.wrong_known_hosts.display().to_string()),
        insecure_accept_host_key: Some(true),
        ..key_config(&sshd, "changed-host")
    };
    refused(&[&open(&config, label).unwrap()], label, &[]).await;
}

/// Files that `sftp`'s `ls -1` finds below `dir`, walking folders, relative to it.
fn files_seen_by_sftp(sshd: &Sshd, dir: &Path) -> BTreeSet<String> {
    let mut files = BTreeSet::new();
    let mut folders = vec![String::new()];
    while let Some(rel) = folders.pop() {
        let at = dir.join(&rel);
        // `ls -l` marks folders with a leading `d`; the name is the last field.
        let listing = sshd
            .sftp(&format!("ls -la \"{}\"\n", at.display()))
            .expect("sftp ls");
        for line in listing.lines().filter(|l| !l.starts_with("sftp>")) {
            let Some(name) = line.split_whitespace().nth(8) else {
                continue;
            };
            let name = line[line.find(name).unwrap()..].trim_end();
            let name = name.rsplit('/').next().unwrap_or(name);
            if name == "." || name == ".." {
                continue;
            }
            let path = if rel.is_empty() {
                name.to_string()
            } else {
                format!("{rel}/{name}")
            };
            if line.starts_with('d') {
                folders.push(path);
            } else {
                files.insert(path);
            }
        }
    }
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sftp_cli_sees_exactly_the_files_layout_and_reads_a_package() {
    let sshd = sshd();
    let block = open(&key_config(&sshd, "cli"), "rfs/files").unwrap();
    let (src, at, opts) = put_a_mirror(&block, &[]).await;
    let dir = sshd.data_dir.join("cli/mirror-seen");
    let expected = |names: &[&str]| names.iter().map(|n| n.to_string()).collect();
    assert_eq!(
        files_seen_by_sftp(&sshd, &dir),
        expected(&[
            "conf/settings.toml",
            "deep/er/data.csv",
            "flow.py",
            "odd/plus+percent%hash#.cfg",
        ])
    );
    let copy = tempfile::tempdir().unwrap();
    let local = copy.path().join("data.csv");
    sshd.sftp(&format!(
        "get \"{}\" \"{}\"\n",
        dir.join("deep/er/data.csv").display(),
        local.display()
    ))
    .unwrap();
    assert_eq!(std::fs::read_to_string(&local).unwrap(), "a,b\n1,2\n");

    // A second put mirrors the deletion, and the folders it emptied go too.
    std::fs::remove_file(src.path().join("deep/er/data.csv")).unwrap();
    block.put_directory(src.path(), &at, &opts).await.unwrap();
    assert_eq!(
        files_seen_by_sftp(&sshd, &dir),
        expected(&[
            "conf/settings.toml",
            "flow.py",
            "odd/plus+percent%hash#.cfg"
        ])
    );
    assert!(!dir.join("deep").exists());

    // A package put over SFTP is packs of frames that sftp fetches and, in order, tar reads.
    let mut fetched = 0;
    let fetch = |object: &str| {
        fetched += 1;
        let local = copy.path().join(format!("object-{fetched}"));
        let remote = sshd.data_dir.join(format!("cli/package-seen/{object}"));
        let get = format!("get \"{}\" \"{}\"\n", remote.display(), local.display());
        sshd.sftp(&get).unwrap();
        std::fs::read(&local).unwrap()
    };
    another_client_reads_a_package(&block, src.path(), fetch, None).await;
}

/// Two stores on two connections: the lock and the ETag check hold between them, as they
/// would between two machines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_and_swap_holds_between_two_connections() {
    let sshd = sshd();
    let one = open_store(&key_config(&sshd, "cas"), "rfs/one").unwrap();
    let two = open_store(&password_config(&sshd, "cas", &sshd.password), "rfs/two").unwrap();
    compare_and_swap_between(one, two, &sshd.data_dir.join("cas")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_64_mib_package_round_trips() {
    let sshd = sshd();
    let block = open(&key_config(&sshd, "big"), "rfs/big").unwrap();
    a_large_package_round_trips(&block, 64, "SFTP").await;
}

/// Prefect's own RemoteFileSystem (fsspec's SFTP driver, over paramiko): `put|get LOCAL
/// BASEPATH REMOTE`, logging in to `$SFTP_HOST:$SFTP_PORT` as `$SFTP_USER` with
/// `$SFTP_PASSWORD`, as Prefect users configure it (fsspec takes the host from the settings,
/// not from the basepath).
const PREFECT_SFTP: &str = r#"
import asyncio, inspect, os, sys
from prefect.filesystems import RemoteFileSystem

# Prefect 3.8.8's put_directory hands fsspec's SFTP put_file the full sftp:// URL, which
# put_file passes on to paramiko unstripped (ENOENT): strip it as fsspec's own put does.
from fsspec.implementations.sftp import SFTPFileSystem
_put_file = SFTPFileSystem.put_file
SFTPFileSystem.put_file = lambda self, lpath, rpath, **kw: _put_file(
    self, lpath, self._strip_protocol(rpath), **kw
)

op, local, basepath, remote = sys.argv[1:5]
fs = RemoteFileSystem(
    basepath=basepath,
    settings={
        "host": os.environ["SFTP_HOST"],
        "port": int(os.environ["SFTP_PORT"]),
        "username": os.environ["SFTP_USER"],
        "password": os.environ["SFTP_PASSWORD"],
    },
)
call = fs.put_directory(local_path=local, to_path=remote) if op == "put" else fs.get_directory(
    from_path=remote, local_path=local
)
if inspect.isawaitable(call):
    asyncio.run(call)
"#;

fn prefect(sshd: &Sshd, op: &str, local: &Path, basepath: &str, remote: &str) {
    let python = conformance::harness::peers::prefect_python().expect("install prefect");
    let home = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(python)
        .args(["-c", PREFECT_SFTP, op])
        .arg(local)
        .args([basepath, remote])
        .env("SFTP_HOST", &sshd.host)
        .env("SFTP_PORT", sshd.port.to_string())
        .env("SFTP_USER", &sshd.user)
        .env("SFTP_PASSWORD", &sshd.password)
        .env("PREFECT_HOME", home.path())
        .output()
        .expect("run prefect");
    assert!(
        out.status.success(),
        "prefect {op} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefect_remote_file_system_and_blockctl_read_each_others_folders() {
    let sshd = sshd();
    let block = open(
        &password_config(&sshd, "prefect", &sshd.password),
        "rfs/prefect",
    )
    .unwrap();
    let src = tempfile::tempdir().unwrap();
    small_tree(src.path(), "prefect");
    write(src.path(), "deep/er/data.csv", "a,b\n1,2\n");
    let basepath = sshd.url("prefect");

    // blockctl puts a files layout; Prefect's get_directory pulls it.
    let files = PutOptions {
        layout: Layout::Files,
        ..PutOptions::default()
    };
    let at = BlockPath::parse("from-blockctl").unwrap();
    block.put_directory(src.path(), &at, &files).await.unwrap();
    let pulled = tempfile::tempdir().unwrap();
    prefect(&sshd, "get", pulled.path(), &basepath, "from-blockctl");
    assert_eq!(
        conformance::tree::snapshot(pulled.path()),
        conformance::tree::snapshot(src.path())
    );

    // Prefect's put_directory writes a folder; blockctl gets it as a files layout.
    prefect(&sshd, "put", src.path(), &basepath, "from-prefect");
    let scratch_dest = tempfile::tempdir().unwrap();
    let dest = scratch_dest.path().join("dest");
    let at = BlockPath::parse("from-prefect").unwrap();
    block
        .get_directory(&at, &dest, &GetOptions::default())
        .await
        .unwrap();
    assert_eq!(
        conformance::tree::snapshot(&dest),
        conformance::tree::snapshot(src.path())
    );
}

const LABEL: &str = "remote-file-system/faults";

/// A block through a [`FaultProxy`] in front of sshd (the proxy's port in a known_hosts of
/// its own), and one straight on sshd.
async fn fault_rig(sub: &str) -> FaultRig {
    let sshd = sshd();
    let direct = open(&key_config(&sshd, sub), LABEL).unwrap();
    let (server, sub, hosts) = (sshd.clone(), sub.to_string(), tempfile::tempdir().unwrap());
    FaultRig::new(
        sshd.clone(),
        sshd.port,
        LABEL,
        direct,
        move |port, timeout| {
            let config = RfsConfig {
                timeout: Some(timeout),
                basepath: format!("sftp://127.0.0.1:{port}{}/{sub}", server.data_dir.display()),
                known_hosts: Some(
                    server
                        .known_hosts_for(port, hosts.path())
                        .display()
                        .to_string(),
                ),
                ..key_config(&server, &sub)
            };
            open(&config, LABEL).unwrap()
        },
    )
    .await
}

// Reset 2 MiB into an upload or a download; stalled 1 MiB up.
conformance::remote_fault_tests!(fault_rig);
