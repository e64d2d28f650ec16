//! cargo-fuzz, built by `cargo install` into `<cache>/cargo-fuzz` the first time the fuzz
//! test needs it (about 1 to 2 minutes), so the test command never depends on what happens to
//! be installed in `~/.cargo/bin`.

use std::fs;
use std::path::PathBuf;
use std::process::Command;

use super::{cache_dir, install};

/// Pinned, so every machine fuzzes with the same libFuzzer driver.
pub const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// The `cargo-fuzz` binary, installed under the harness's install lock when missing. Run it
/// as `cargo-fuzz fuzz run ...` (cargo passes the subcommand name first).
pub fn cargo_fuzz() -> Result<PathBuf, String> {
    let root = cache_dir().join("cargo-fuzz");
    let bin = root.join("bin").join("cargo-fuzz");
    let marker = root.join(".installed");
    let spec = format!("cargo-fuzz {CARGO_FUZZ_VERSION}");
    if !bin.exists() {
        // A marker without its binary (deleted by hand) must not stop the install.
        let _ = fs::remove_file(&marker);
    }
    install::once("cargo-fuzz", &marker, &spec, || {
        // A temp target dir (cargo install's default), not the workspace's, whose lock the
        // running `cargo test` may hold.
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        install::run(
            Command::new(cargo)
                .args(["install", "cargo-fuzz", "--version", CARGO_FUZZ_VERSION])
                .args(["--locked", "--root"])
                .arg(&root)
                .env_remove("CARGO_TARGET_DIR")
                .env_remove("CARGO_BUILD_TARGET_DIR")
                .current_dir(cache_dir()),
        )
    })?;
    if bin.exists() {
        Ok(bin)
    } else {
        Err(format!(
            "cargo-fuzz: {} missing after install",
            bin.display()
        ))
    }
}
