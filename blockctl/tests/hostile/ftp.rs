//! An FTP server: MLSD listings that never end, trickle or name a path.

use super::*;

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
