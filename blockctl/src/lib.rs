//! blockctl: a thin command-line layer over storage-blocks. It parses arguments, draws
//! progress on a terminal, formats output (`--json` on stdout) and maps errors to exit codes.
//!
//! The whole command is [`run`], a library function, so that the `blockctl` binary and the
//! `blockctl` console script of the Python wheel (through its extension module) are one
//! program with one behavior.

mod output;

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Parser, Subcommand, ValueEnum};
use storage_blocks::{
    BlockId, BlockPath, BlockSlug, BlockType, DeleteOptions, Error, GetMode, GetOptions, Layout,
    PutOptions, Registry, Result, VersionPrecondition, prefect, type_spec, type_specs,
};

use output::{Out, Progress};

#[derive(Parser)]
#[command(
    name = "blockctl",
    version,
    about = "Ship flow code to storage blocks and back"
)]
struct Cli {
    /// Machine-readable output on stdout.
    #[arg(long, global = true)]
    json: bool,
    /// Print only errors.
    #[arg(short, long, global = true)]
    quiet: bool,
    /// Print more detail (timings).
    #[arg(short, long, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Block types, their fields and capabilities.
    Types { r#type: Option<String> },
    /// Create, list, inspect, remove and check saved blocks.
    #[command(subcommand)]
    Block(BlockCommand),
    /// Upload DIR to SLUG.
    Put(PutArgs),
    /// Download SLUG into DIR, verified before anything appears there.
    Get(GetArgs),
    /// Versions stored at SLUG, newest first.
    Versions { slug: String },
    /// Files of the current version (or of the mirror) at SLUG.
    Ls { slug: String },
    /// One file's bytes to stdout: SLUG/FILE.
    Cat { slug: String },
    /// Delete one version, or everything at SLUG.
    Rm {
        slug: String,
        #[arg(long)]
        version: Option<String>,
    },
    /// Drop old versions (keeping the current one and the N newest) and leftovers.
    Gc {
        slug: String,
        #[arg(long)]
        keep: usize,
    },
}

#[derive(Subcommand)]
enum BlockCommand {
    /// Save a block: TYPE/NAME --set K=V...
    Create {
        id: String,
        #[arg(long = "set", value_name = "K=V")]
        set: Vec<String>,
        #[arg(long)]
        overwrite: bool,
    },
    /// List saved blocks.
    Ls,
    /// Show a block's fields, secrets masked.
    Inspect { id: String },
    /// Remove a saved block (its data stays).
    Rm { id: String },
    /// Reach the storage and check the credentials.
    Check { id: String },
    /// Import the storage blocks saved on a Prefect server, secrets included.
    ImportPrefect {
        /// The server's API (default: PREFECT_API_URL, else the active Prefect profile's).
        #[arg(long, value_name = "URL")]
        api_url: Option<String>,
        /// Replace blocks already in the registry.
        #[arg(long)]
        overwrite: bool,
        /// Show what would be imported, save nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum LayoutArg {
    Package,
    Files,
}

#[derive(Args)]
struct PutArgs {
    dir: PathBuf,
    slug: String,
    #[arg(long, value_enum, default_value = "package")]
    layout: LayoutArg,
    /// Use this ignore file instead of .blockignore / .prefectignore.
    #[arg(long)]
    ignore_file: Option<PathBuf>,
    /// Replace the current version only if it is V (`none`: only if there is none yet).
    #[arg(long, value_name = "V")]
    if_version: Option<String>,
    /// Store the targets of symlinks instead of the links.
    #[arg(long)]
    follow_symlinks: bool,
    /// Also upload .git/, .hg/ and .svn/.
    #[arg(long)]
    no_default_ignores: bool,
}

#[derive(Args)]
struct GetArgs {
    slug: String,
    dir: PathBuf,
    #[arg(long)]
    version: Option<String>,
    /// Make DIR exactly the version (stale files removed), swapped in atomically.
    #[arg(long, conflicts_with = "merge")]
    replace: bool,
    /// Overwrite files of the version, keep the others.
    #[arg(long)]
    merge: bool,
}

/// Runs blockctl with `args` (the program name first, as in `std::env::args_os`) and returns
/// its exit code. Usage errors, `--help` and `--version` are printed as clap prints them.
pub fn run<I, T>(args: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version go to stdout with exit 0; usage errors to stderr with exit 2.
            let _ = e.print();
            return e.exit_code();
        }
    };
    let out = Out::new(cli.json, cli.quiet, cli.verbose);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            out.error(&Error::io("starting the async runtime", e));
            return 1;
        }
    };
    match runtime.block_on(execute(cli.command, &out)) {
        Ok(()) => 0,
        Err(e) => {
            out.error(&e);
            e.exit_code()
        }
    }
}

async fn execute(command: Command, out: &Out) -> Result<()> {
    match command {
        Command::Types { r#type } => {
            let specs = match r#type {
                Some(t) => vec![type_spec(BlockType::parse(&t)?)?],
                None => type_specs(),
            };
            out.types(&specs);
            Ok(())
        }
        Command::Block(cmd) => block_command(cmd, out).await,
        Command::Put(args) => put(args, out).await,
        Command::Get(args) => get(args, out).await,
        Command::Versions { slug } => {
            let (block, path, slug) = open(&slug)?;
            let versions = block.list_versions(&path).await?;
            out.versions(&slug, &versions);
            Ok(())
        }
        Command::Ls { slug } => {
            let (block, path, _) = open(&slug)?;
            out.files(&block.list_files(&path).await?);
            Ok(())
        }
        Command::Cat { slug } => {
            let parsed = BlockSlug::parse(&slug)?;
            if parsed.path.is_root() {
                return Err(Error::Usage(format!("{slug}: cat needs SLUG/FILE")));
            }
            let (block, path, _) = open(&slug)?;
            let bytes = block.read_path(&path).await?;
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(&bytes)
                .and_then(|_| stdout.flush())
                .map_err(|e| Error::io("writing to stdout", e))
        }
        Command::Rm { slug, version } => {
            let (block, path, slug) = open(&slug)?;
            block
                .delete(
                    &path,
                    &DeleteOptions {
                        version: version.clone(),
                    },
                )
                .await?;
            out.removed(&slug, version.as_deref());
            Ok(())
        }
        Command::Gc { slug, keep } => {
            let (block, path, slug) = open(&slug)?;
            let report = block.gc(&path, keep).await?;
            out.gc(&slug, &report);
            Ok(())
        }
    }
}

fn open(slug: &str) -> Result<(Arc<dyn storage_blocks::StorageBlock>, BlockPath, String)> {
    let parsed = BlockSlug::parse(slug)?;
    let registry = Registry::load()?;
    let block = registry.open_block(&parsed.block)?;
    Ok((block, parsed.path.clone(), parsed.to_string()))
}

async fn block_command(cmd: BlockCommand, out: &Out) -> Result<()> {
    let mut registry = Registry::load()?;
    match cmd {
        BlockCommand::Create { id, set, overwrite } => {
            let id = BlockId::parse(&id)?;
            let settings = set
                .iter()
                .map(|kv| {
                    kv.split_once('=')
                        .map(|(k, v)| (k.trim().to_string(), v.to_string()))
                        .ok_or_else(|| Error::Usage(format!("--set {kv}: expected K=V")))
                })
                .collect::<Result<Vec<_>>>()?;
            let doc = registry.create(id, &settings, overwrite)?;
            out.created(&doc);
        }
        BlockCommand::Ls => out.blocks(&registry.documents()),
        BlockCommand::Inspect { id } => {
            let doc = registry.document(&BlockId::parse(&id)?)?;
            out.inspect(&doc, &type_spec(doc.id.block_type)?);
        }
        BlockCommand::Rm { id } => {
            let id = BlockId::parse(&id)?;
            registry.remove(&id)?;
            out.block_removed(&id);
        }
        BlockCommand::Check { id } => {
            let id = BlockId::parse(&id)?;
            let block = registry.open_block(&id)?;
            block.check().await?;
            out.checked(&id);
        }
        BlockCommand::ImportPrefect {
            api_url,
            overwrite,
            dry_run,
        } => {
            let (env_url, api_key) = prefect::api_settings();
            let api_url = api_url.or(env_url).ok_or_else(|| {
                Error::Usage("no Prefect API URL: pass --api-url or set PREFECT_API_URL".into())
            })?;
            let blocks = prefect::fetch_blocks(&api_url, api_key.as_deref()).await?;
            let report = prefect::import_blocks(&mut registry, &blocks, overwrite, dry_run)?;
            out.imported(&report, dry_run);
        }
    }
    Ok(())
}

async fn put(args: PutArgs, out: &Out) -> Result<()> {
    let (block, path, slug) = open(&args.slug)?;
    let if_version = args.if_version.map(|v| match v.as_str() {
        "none" => VersionPrecondition::NoVersion,
        _ => VersionPrecondition::Current(v),
    });
    let opts = PutOptions {
        layout: match args.layout {
            LayoutArg::Package => Layout::Package,
            LayoutArg::Files => Layout::Files,
        },
        ignore_file: args.ignore_file,
        no_default_ignores: args.no_default_ignores,
        if_version,
        follow_symlinks: args.follow_symlinks,
        progress: Some(Arc::new(Progress::new(out))),
    };
    let started = std::time::Instant::now();
    let report = block.put_directory(&args.dir, &path, &opts).await?;
    out.put(&slug, &report, started.elapsed());
    Ok(())
}

async fn get(args: GetArgs, out: &Out) -> Result<()> {
    let (block, path, slug) = open(&args.slug)?;
    let mode = match (args.replace, args.merge) {
        (true, _) => GetMode::Replace,
        (_, true) => GetMode::Merge,
        _ => GetMode::EmptyOnly,
    };
    let opts = GetOptions {
        version: args.version,
        mode,
        progress: Some(Arc::new(Progress::new(out))),
    };
    let started = std::time::Instant::now();
    let report = block.get_directory(&path, &args.dir, &opts).await?;
    out.get(&slug, &args.dir, &report, started.elapsed());
    Ok(())
}
