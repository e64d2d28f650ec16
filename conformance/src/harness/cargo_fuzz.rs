//! cargo-fuzz, built by `cargo install` into `<cache>/cargo-fuzz` the first time the fuzz
//! test needs it (about 1 to 2 minutes), so the test command never depends on what happens to
//! be installed in `~/.cargo/bin`.

use std::path::PathBuf;

use super::install;

/// Pinned, so every machine fuzzes with the same libFuzzer driver.
pub const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// The `cargo-fuzz` binary, installed under the harness's install lock when missing. Run it
/// as `cargo-fuzz fuzz run ...` (cargo passes the subcommand name first).
pub fn cargo_fuzz() -> Result<PathBuf, String> {
    install::cargo_install(
        "cargo-fuzz",
        "cargo-fuzz",
        CARGO_FUZZ_VERSION,
        &[],
        "cargo-fuzz",
    )
}
