//! The conformance suite against a private Samba, started by the harness. One server is
//! shared by the cases that overlap in time; each case works under a folder of its own. Then
//! what is specific to SMB: a wrong password, the files layout as `smbclient` sees it, a
//! compare-and-swap that holds between two clients, and a 256 MiB package.

use std::collections::BTreeSet;
use std::sync::Arc;

use conformance::harness::{Samba, shared};
use conformance::remote_checks::{
    a_large_package_round_trips, compare_and_swap_between, put_a_mirror, refused,
};
use conformance::{Subject, conformance_suite};
use storage_core::{Secret, StorageBlock};
use storage_smb::{SmbConfig, open, open_store};

const PREFIX: &str = "team/flows";
const WRONG_PASSWORD: &str = "wrong-smb-pw-K8r2-must-never-be-echoed";

fn config(samba: &Samba, prefix: &str, password: &str) -> SmbConfig {
    SmbConfig {
        host: samba.host.clone(),
        share: samba.share.clone(),
        port: Some(samba.port.into()),
        prefix: Some(prefix.into()),
        username: Some(samba.user.clone()),
        password: Some(Secret::new(password)),
        domain: None,
        timeout: None,
    }
}

fn samba() -> Arc<Samba> {
    shared::<Samba>(Samba::start)
}

async fn smb_subject(case: &str) -> Subject {
    let samba = samba();
    let block =
        open(&config(&samba, PREFIX, &samba.password), "smb/conformance").expect("open smb block");
    Subject::new(Arc::new(block), case).with_guard(samba)
}

conformance_suite!(smb_subject);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_exit_4_and_never_shown() {
    let samba = samba();
    let block = open(&config(&samba, PREFIX, WRONG_PASSWORD), "smb/wrong").unwrap();
    refused(&[&block], "smb/wrong", &[WRONG_PASSWORD, &samba.password]).await;
}

/// Files (not folders) that `smbclient -c 'recurse; ls'` lists under `dir`, `/`-separated and
/// relative to it.
fn files_seen_by_smbclient(samba: &Samba, dir: &str) -> BTreeSet<String> {
    let listing = samba
        .smbclient(&format!("cd {dir}; recurse; ls"))
        .expect("smbclient ls");
    let base = format!("\\{}", dir.replace('/', "\\"));
    let mut folder = String::new();
    let mut files = BTreeSet::new();
    for line in listing.lines() {
        if let Some(header) = line.strip_prefix(&base) {
            folder = header.trim_start_matches('\\').replace('\\', "/");
            continue;
        }
        // `  NAME   ATTRS   SIZE  Www Mmm dd hh:mm:ss yyyy`: the name is what is left once
        // the seven last fields are gone.
        let Some(entry) = line.strip_prefix("  ") else {
            continue;
        };
        let fields: Vec<&str> = entry.split_whitespace().collect();
        if fields.len() < 8 {
            continue;
        }
        let attrs = fields[fields.len() - 7];
        let mut name = entry.trim_end();
        for _ in 0..7 {
            name = name
                .trim_end()
                .rsplit_once(' ')
                .map_or("", |(rest, _)| rest);
        }
        let name = name.trim_end();
        if attrs.contains('D') {
            continue;
        }
        files.insert(match folder.as_str() {
            "" => name.to_string(),
            f => format!("{f}/{name}"),
        });
    }
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smbclient_sees_exactly_the_files_layout() {
    let samba = samba();
    let block = open(&config(&samba, PREFIX, &samba.password), "smb/files").unwrap();
    let (src, at, opts) = put_a_mirror(&block, &[]).await;
    let dir = format!("{PREFIX}/mirror-seen");
    let expected = |names: &[&str]| names.iter().map(|n| n.to_string()).collect();
    assert_eq!(
        files_seen_by_smbclient(&samba, &dir),
        expected(&[
            "conf/settings.toml",
            "deep/er/data.csv",
            "flow.py",
            "odd/plus+percent%hash#.cfg",
        ])
    );
    let content = samba
        .smbclient(&format!("cd {dir}/deep/er; get data.csv -"))
        .unwrap();
    assert!(content.starts_with("a,b\n1,2\n"), "{content}");

    // A second put mirrors the deletion, and the folder it emptied goes too.
    std::fs::remove_file(src.path().join("deep/er/data.csv")).unwrap();
    block.put_directory(src.path(), &at, &opts).await.unwrap();
    assert_eq!(
        files_seen_by_smbclient(&samba, &dir),
        expected(&[
            "conf/settings.toml",
            "flow.py",
            "odd/plus+percent%hash#.cfg"
        ])
    );
    assert!(!samba.share_dir.join(&dir).join("deep").exists());
}

/// Two clients on two connections: the lock and the ETag check hold between them, as they
/// would between two machines.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_and_swap_holds_between_two_clients() {
    let samba = samba();
    // A store is the whole share, whatever the block's prefix.
    let one = open_store(&config(&samba, "", &samba.password), "smb/one").unwrap();
    let two = open_store(&config(&samba, "", &samba.password), "smb/two").unwrap();
    compare_and_swap_between(one, two, &samba.share_dir).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_256_mib_package_round_trips() {
    let samba = samba();
    let block = open(&config(&samba, PREFIX, &samba.password), "smb/big").unwrap();
    a_large_package_round_trips(&block, 256, "SMB").await;
}
