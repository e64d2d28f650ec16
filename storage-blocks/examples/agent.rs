//! What an agent does before a flow run: pull the current version of a slug into a fresh run
//! directory, verified, and print what it got.
//!
//!     cargo run -p storage-blocks --example agent -- local/default/etl /tmp/run-1

use storage_blocks::{GetOptions, Registry};

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(slug), Some(dir)) = (args.next(), args.next()) else {
        eprintln!("usage: agent SLUG RUN_DIR");
        std::process::exit(2);
    };
    let result = async {
        let registry = Registry::load()?;
        let (block, path) = registry.open(&slug)?;
        block
            .get_directory(&path, dir.as_ref(), &GetOptions::default())
            .await
    }
    .await;
    match result {
        Ok(r) => println!(
            "{slug}: version {} ({} files, {} bytes) in {dir}",
            r.version.as_deref().unwrap_or("-"),
            r.files,
            r.bytes
        ),
        Err(e) => {
            eprintln!("agent: {e}");
            std::process::exit(e.exit_code());
        }
    }
}
