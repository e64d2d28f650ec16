//! SMB: a server that never answers, and a real Samba server (the harness's `Samba`) serving
//! trees planted in its share (folders nested past the walk's depth limit, a folder linked to
//! itself), its answers trickled a byte a second by a proxy.

use super::*;
use std::path::Path;

use conformance::harness::{Samba, shared};
use planted::{Trickler, nest};

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

/// An `smb` block at folder `case` of `samba`'s share, reached at `port` (the server's own or
/// a proxy's).
fn smb_at(samba: &Samba, case: &str, port: u16) -> Home {
    home_with(
        "smb",
        &[
            "host=127.0.0.1".into(),
            format!("share={}", samba.share),
            format!("port={port}"),
            format!("prefix={case}"),
            format!("username={}", samba.user),
            format!("password={}", samba.password),
            format!("timeout={TIMEOUT}"),
        ],
    )
}

/// The server, with folder `case/app` of its share made by `plant`.
fn planted(case: &str, plant: impl FnOnce(&Path)) -> std::sync::Arc<Samba> {
    let samba = shared::<Samba>(Samba::start);
    planted::app_in(&samba.share_dir, case, plant);
    samba
}

const SMB: &str = "smb/hostile/app";

#[test]
fn get_ends_when_smb_folders_nest_past_the_depth_limit() {
    let samba = planted("deep", |app| nest(app, 130));
    let run = get(&smb_at(&samba, "deep", samba.port), SMB);
    assert_refused(&run, "smb/hostile", 5, "WALK_MAX_DEPTH");
}

/// Samba follows a link to a folder: the share shows `loop/loop/…` without end, each with
/// the file id of the folder it leads to.
#[test]
fn get_ends_when_an_smb_folder_links_to_itself() {
    let samba = planted("loop", |app| {
        fs::write(app.join("f.txt"), "hello").unwrap();
        std::os::unix::fs::symlink(".", app.join("loop")).unwrap();
    });
    let run = get(&smb_at(&samba, "loop", samba.port), SMB);
    assert_refused(&run, "smb/hostile", 5, "cycle");
}

#[test]
fn get_times_out_on_an_smb_server_sending_a_byte_a_second() {
    let samba = planted("trickle", |app| {
        fs::write(app.join("data.bin"), vec![7u8; 4 << 20]).unwrap();
    });
    let trickler = Trickler::start(samba.port);
    let run = get(&smb_at(&samba, "trickle", trickler.proxy.port()), SMB);
    assert_refused(&run, "smb/hostile", 1, "timed out");
    trickler.assert_trickled();
}
