//! A real OpenSSH server (the harness's `Sshd`) serving trees planted in its folder: folders
//! nested past the walk's depth limit, a name a Windows agent reads as a path; and its
//! answers trickled a byte a second by a proxy.

use super::*;
use std::path::Path;

use conformance::harness::{Sshd, shared};
use planted::{Trickler, nest};

/// A `remote-file-system` block over SFTP at folder `case` of `sshd`, reached at `port` (the
/// server's own or a proxy's) whose host key `known_hosts` lists.
fn sftp_at(sshd: &Sshd, case: &str, port: u16, known_hosts: &Path) -> Home {
    let url = sshd
        .url(case)
        .replacen(&format!(":{}/", sshd.port), &format!(":{port}/"), 1);
    home_with(
        "remote-file-system",
        &[
            format!("basepath={url}"),
            format!("username={}", sshd.user),
            format!("private_key_path={}", sshd.client_key.display()),
            format!("known_hosts={}", known_hosts.display()),
            format!("timeout={TIMEOUT}"),
        ],
    )
}

/// The server, with folder `case/app` made by `plant` among its files.
fn planted(case: &str, plant: impl FnOnce(&Path)) -> std::sync::Arc<Sshd> {
    let sshd = shared::<Sshd>(Sshd::start);
    planted::app_in(&sshd.data_dir, case, plant);
    sshd
}

#[test]
fn get_ends_when_sftp_folders_nest_past_the_depth_limit() {
    let sshd = planted("deep", |app| nest(app, 130));
    let run = get(&sftp_at(&sshd, "deep", sshd.port, &sshd.known_hosts), WEB);
    assert_refused(&run, "remote-file-system/hostile", 5, "WALK_MAX_DEPTH");
}

#[test]
fn get_refuses_an_sftp_listed_name_with_a_backslash() {
    let sshd = planted("backslash", |app| {
        fs::write(app.join("..\\evil.txt"), "evil").unwrap();
    });
    let run = get(
        &sftp_at(&sshd, "backslash", sshd.port, &sshd.known_hosts),
        WEB,
    );
    assert_refused(&run, "remote-file-system/hostile", 5, "backslash");
}

#[test]
fn get_times_out_on_an_sftp_server_sending_a_byte_a_second() {
    let sshd = planted("trickle", |app| {
        fs::write(app.join("data.bin"), vec![7u8; 4 << 20]).unwrap();
    });
    let trickler = Trickler::start(sshd.port);
    let port = trickler.proxy.port();
    let known_hosts = sshd.known_hosts_for(port, &sshd.data_dir);
    let run = get(&sftp_at(&sshd, "trickle", port, &known_hosts), WEB);
    assert_refused(&run, "remote-file-system/hostile", 1, "timed out");
    trickler.assert_trickled();
}
