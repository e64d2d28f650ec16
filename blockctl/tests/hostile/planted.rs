//! What the cases over real servers share: trees planted in a server's own folder, and a
//! proxy that trickles every answer once the servers have sent a first MiB.

use std::fs;
use std::path::{Path, PathBuf};

use conformance::harness::{Cut, Direction, FaultProxy};

/// Folder `case/app` below a server's folder `root`, made by `plant` (a block's path `app`
/// at folder `case`).
pub fn app_in(root: &Path, case: &str, plant: impl FnOnce(&Path)) {
    let app = root.join(case).join("app");
    fs::create_dir_all(&app).unwrap();
    plant(&app);
}

/// Folders below `at` `levels` deep, `d/d/…/d`, with a file at the bottom: past the walk's
/// depth limit (`WALK_MAX_DEPTH`, 128) when `levels` is.
pub fn nest(at: &Path, levels: usize) {
    let mut deepest = PathBuf::from(at);
    for _ in 0..levels {
        deepest.push("d");
    }
    fs::create_dir_all(&deepest).unwrap();
    fs::write(deepest.join("f.txt"), "deep").unwrap();
}

/// A proxy in front of `port` on 127.0.0.1 that, once a first MiB has come down through it,
/// sends every connection's answers one byte a second: the server answers, and never ends.
/// Dropped with the runtime that carries it.
pub struct Trickler {
    pub proxy: FaultProxy,
    _runtime: tokio::runtime::Runtime,
}

impl Trickler {
    pub fn start(port: u16) -> Trickler {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let proxy = runtime
            .block_on(FaultProxy::start(&format!("127.0.0.1:{port}")))
            .expect("the proxy starts");
        proxy.partition_after(Cut::Trickle, 1 << 20, Direction::Downstream);
        Trickler {
            proxy,
            _runtime: runtime,
        }
    }

    /// The proxy really trickled a connection.
    pub fn assert_trickled(&self) {
        assert!(
            self.proxy.injected().trickled > 0,
            "no connection was trickled: {:?}",
            self.proxy.injected()
        );
    }
}
