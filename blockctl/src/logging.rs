//! `RUST_LOG=debug blockctl ...` shows requests, retries and phases on stderr. Every line is
//! scrubbed before it is written: URL credentials, bearer tokens and every secret value the
//! process has resolved are masked, whatever library logged it.

use std::io::Write;

use tracing_subscriber::EnvFilter;

/// Installs the subscriber when `RUST_LOG` is set; without it nothing is logged.
pub fn init() {
    let Ok(filter) = EnvFilter::try_from_default_env() else {
        return;
    };
    // A second call (the Python module runs blockctl more than once) keeps the first.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(|| Scrubbed(std::io::stderr()))
        .try_init();
}

/// stderr, with each formatted event scrubbed (the formatter writes an event in one call).
struct Scrubbed(std::io::Stderr);

impl Write for Scrubbed {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let line = storage_blocks::secret::scrub_known(&String::from_utf8_lossy(buf));
        self.0.write_all(line.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}
