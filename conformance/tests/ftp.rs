//! The conformance suite against pyftpdlib, started by the harness, with a password login.
//! Then what is specific to FTP: a wrong password (exit 4, one line, no secret), the files
//! layout as Python's `ftplib` sees it (MLSD) and reads it, a compare-and-swap that holds
//! between two clients, and puts and gets through resets and stalls of the control
//! connection (passive data connections go straight to the server, past the fault proxy).

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;

use conformance::harness::{PyFtpd, shared};
use conformance::remote_checks::{
    FaultRig, another_client_reads_a_package, compare_and_swap_between, put_a_mirror, refused,
};
use conformance::{Subject, conformance_suite};
use password_login::config;
use storage_core::StorageBlock;
use storage_rfs::{RfsConfig, open, open_store};

mod password_login;

const WRONG_PASSWORD: &str = "wrong-ftp-pw-M2x8-must-never-be-echoed";

fn ftpd() -> Arc<PyFtpd> {
    shared::<PyFtpd>(PyFtpd::start)
}

fn login(ftpd: &PyFtpd, sub: &str) -> RfsConfig {
    config(ftpd.url(sub), &ftpd.user, &ftpd.password)
}

mod suite {
    use super::*;

    async fn subject(case: &str) -> Subject {
        let ftpd = ftpd();
        let block =
            open(&login(&ftpd, "suite"), "remote-file-system/conformance").expect("open ftp block");
        Subject::new(Arc::new(block), case).with_guard(ftpd)
    }

    conformance_suite!(subject);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_exit_4_and_never_shown() {
    let ftpd = ftpd();
    let label = "remote-file-system/wrong-password";
    let block = open(
        &config(ftpd.url("wrong"), &ftpd.user, WRONG_PASSWORD),
        label,
    )
    .unwrap();
    // The password in the URL instead of the field.
    let in_url = ftpd
        .url("wrong")
        .replace("://", &format!("://{}:{WRONG_PASSWORD}@", ftpd.user));
    let url_block = open(
        &RfsConfig {
            password: None,
            ..config(in_url, &ftpd.user, "")
        },
        label,
    )
    .unwrap();
    refused(
        &[&block, &url_block],
        label,
        &[WRONG_PASSWORD, &ftpd.password],
    )
    .await;
    assert!(!ftpd.root.join("wrong").exists());
}

/// Python's ftplib, logged in as the server's user: every file below `dir` (MLSD, walking
/// folders) with its bytes, as `path\tHEX` lines.
const FTPLIB_WALK: &str = r#"
import ftplib, io, sys
port, user, password, top = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
ftp = ftplib.FTP()
ftp.encoding = "utf-8"
ftp.connect("127.0.0.1", int(port))
ftp.login(user, password)
todo = [top]
while todo:
    d = todo.pop()
    for name, facts in ftp.mlsd(d):
        path = d + "/" + name
        if facts["type"] == "dir":
            todo.append(path)
        elif facts["type"] == "file":
            buf = io.BytesIO()
            ftp.retrbinary("RETR " + path, buf.write)
            print(path[len(top) + 1:] + "\t" + buf.getvalue().hex())
ftp.quit()
"#;

/// Files `ftplib` finds below `dir` (a folder path on the server) and their bytes.
fn files_seen_by_ftplib(ftpd: &PyFtpd, dir: &str) -> BTreeMap<String, Vec<u8>> {
    let out = Command::new(&ftpd.python)
        .args(["-c", FTPLIB_WALK])
        .arg(ftpd.port.to_string())
        .args([&ftpd.user, &ftpd.password])
        .arg(format!("/{dir}"))
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "ftplib walk of {dir}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let (path, data) = l.split_once('\t').unwrap();
            (path.to_string(), hex::decode(data).unwrap())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ftplib_sees_exactly_the_files_layout_and_reads_a_package() {
    let ftpd = ftpd();
    let block = open(&login(&ftpd, "ftplib"), "rfs/files").unwrap();
    let (src, at, opts) = put_a_mirror(&block, &[("odd/sp ace & amp.txt", "amp\n")]).await;
    let seen = files_seen_by_ftplib(&ftpd, "ftplib/mirror-seen");
    let names: Vec<&str> = seen.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "conf/settings.toml",
            "deep/er/data.csv",
            "flow.py",
            "odd/plus+percent%hash#.cfg",
            "odd/sp ace & amp.txt",
        ]
    );
    for (name, data) in &seen {
        assert_eq!(
            data,
            &std::fs::read(src.path().join(name)).unwrap(),
            "{name}"
        );
    }

    // A second put mirrors the deletion.
    std::fs::remove_file(src.path().join("deep/er/data.csv")).unwrap();
    block.put_directory(src.path(), &at, &opts).await.unwrap();
    let seen = files_seen_by_ftplib(&ftpd, "ftplib/mirror-seen");
    assert!(!seen.contains_key("deep/er/data.csv"), "{:?}", seen.keys());
    assert_eq!(seen.len(), 4);

    // A package put over FTP is packs of frames that ftplib fetches and, frames in order,
    // tar reads.
    let packs = std::cell::OnceCell::new();
    let fetch = |object: &str| {
        let packs =
            packs.get_or_init(|| files_seen_by_ftplib(&ftpd, "ftplib/package-seen/.blocks/packs"));
        packs[object.rsplit('/').next().unwrap()].clone()
    };
    let blocks = ftpd.root.join("ftplib/package-seen/.blocks");
    another_client_reads_a_package(&block, src.path(), fetch, Some(&blocks)).await;
}

/// Two stores (two clients): the lock and the ETag check hold between them, as they would
/// between two machines. Each commit stamps the file one second past the old one (MFMT)
/// and the ETag holds the inode (MLST `unique`), so a replacement within the same second
/// with the same size still changes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_and_swap_holds_between_two_clients() {
    let ftpd = ftpd();
    let one = open_store(&login(&ftpd, "cas"), "rfs/one").unwrap();
    let two = open_store(&login(&ftpd, "cas"), "rfs/two").unwrap();
    compare_and_swap_between(one, two, &ftpd.root.join("cas")).await;
}

const LABEL: &str = "remote-file-system/faults";

/// A block through a [`FaultProxy`] in front of pyftpdlib's control connections (passive
/// data connections go straight to the server), and one straight on it.
async fn fault_rig(sub: &str) -> FaultRig {
    let ftpd = ftpd();
    let sub = sub.to_string();
    let login = (ftpd.user.as_str(), ftpd.password.as_str());
    password_login::fault_rig(ftpd.clone(), ftpd.port, LABEL, login, move |port| {
        format!("ftp://127.0.0.1:{port}/{sub}")
    })
    .await
}

// Control connections only (data connections go straight to the server): reset once 1 KiB
// of commands went up, reset once 512 bytes of replies came down (a get of packs asks for
// three files, about 1 KiB of replies with the login: the cut must come before its end), and
// stalled after 512 bytes of commands.
conformance::remote_fault_tests!(
    fault_rig,
    put_reset_after: 1 << 10,
    get_reset_after: 512,
    stall_after: 512,
);
