//! What the tests of the remote file systems that log in with a password (FTP, WebDAV)
//! share: the block's settings, and a fault rig whose blocks differ only in their URL.

use std::any::Any;
use std::sync::Arc;

use conformance::remote_checks::FaultRig;
use storage_core::Secret;
use storage_rfs::{RfsConfig, open};

/// A block at `basepath` (a URL) that logs in as `user` with `password`.
pub fn config(basepath: String, user: &str, password: &str) -> RfsConfig {
    RfsConfig {
        basepath,
        username: Some(user.to_string()),
        password: Some(Secret::new(password)),
        private_key_path: None,
        private_key: None,
        known_hosts: None,
        insecure_accept_host_key: None,
        timeout: None,
    }
}

/// A block through a [`FaultProxy`](conformance::harness::FaultProxy) in front of `server`
/// (listening at `port`), and one straight on it, both logging in as `user` with `password`:
/// `url(port)` is the block's URL at a port, the server's or the proxy's.
pub async fn fault_rig(
    server: Arc<dyn Any + Send + Sync>,
    port: u16,
    label: &'static str,
    (user, password): (&str, &str),
    url: impl Fn(u16) -> String + Send + Sync + 'static,
) -> FaultRig {
    let direct = open(&config(url(port), user, password), label).unwrap();
    let (user, password) = (user.to_string(), password.to_string());
    FaultRig::new(server, port, label, direct, move |port, timeout| {
        let config = RfsConfig {
            timeout: Some(timeout),
            ..config(url(port), &user, &password)
        };
        open(&config, label).unwrap()
    })
    .await
}
