//! blockctl: a thin command-line layer over storage-blocks. It parses arguments, draws
//! progress on a terminal, formats output (`--json` on stdout) and maps errors to exit codes.
//!
//! The whole command is [`run`], a library function, so that the `blockctl` binary and the
//! `blockctl` console script of the Python wheel (through its extension module) are one
//! program with one behavior.

mod logging;
mod output;

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use storage_blocks::{
    BlockId, BlockPath, BlockSlug, BlockType, DeleteOptions, Error, GcOptions, GetMode, GetOptions,
    Layout, PackageFormat, PutOptions, Registry, Result, RollbackOptions, VersionPrecondition,
    prefect, type_spec, type_specs,
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
    /// Print how long each phase took (scan, upload, download...) on stderr.
    #[arg(short, long, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Block types, their fields and capabilities.
    Types {
        /// Only this type (or alias): s3, gcs, azure, git, smb, remote-file-system, local...
        r#type: Option<String>,
    },
    /// Create, list, inspect, remove and check saved blocks.
    #[command(subcommand)]
    Block(BlockCommand),
    /// Upload DIR to SLUG.
    Put(PutArgs),
    /// Download SLUG into DIR, verified before anything appears there.
    Get(GetArgs),
    /// Versions stored at SLUG, newest first (`*` marks the current one), with who put each,
    /// from which commit and why.
    Versions {
        /// Where the versions are: TYPE/NAME[/PATH], e.g. s3/prod-flows/etl.
        slug: String,
    },
    /// One version's whole record: message, author, labels, git source, files.
    Show {
        /// Where the version is: TYPE/NAME[/PATH].
        slug: String,
        /// A version id or unique prefix (default: the current one).
        #[arg(long, value_name = "V")]
        version: Option<String>,
    },
    /// Signing keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Files of the current version (or of the mirror) at SLUG.
    Ls {
        /// Where the tree is: TYPE/NAME[/PATH].
        slug: String,
    },
    /// One file's bytes to stdout: SLUG/FILE.
    Cat {
        /// A file of the current version: TYPE/NAME[/PATH]/FILE.
        slug: String,
    },
    /// Delete one version, or everything at SLUG.
    Rm {
        /// What to delete: TYPE/NAME[/PATH].
        slug: String,
        /// Delete only this version (an id or unique prefix; never the current one).
        #[arg(long, value_name = "V")]
        version: Option<String>,
    },
    /// Drop old versions (keeping the N newest, plus the current one when it is not among
    /// them), the frames no kept version uses, and leftovers of interrupted puts.
    Gc {
        /// Where the versions are: TYPE/NAME[/PATH].
        slug: String,
        /// How many of the newest versions to keep, the current one counted when it is among
        /// them; an older current version is kept as well. `0` keeps only the current one.
        #[arg(long, value_name = "N")]
        keep: usize,
        /// Leave unreferenced objects younger than this (a put may still be writing them):
        /// `60s`, `10m`, `0` for none when nothing else writes there.
        #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = parse_duration)]
        grace: std::time::Duration,
        /// Also keep every version made current (by a put or a rollback) within this long,
        /// and the one current when that began: `30d`, `12h`.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        keep_within: Option<std::time::Duration>,
    },
    /// Make an older version current again (default: the one current before the current
    /// one); signed like a put when the block signs.
    Rollback {
        /// Where the versions are: TYPE/NAME[/PATH].
        slug: String,
        /// The version to make current (an id or unique prefix; it must be listed).
        #[arg(long, value_name = "V")]
        to: Option<String>,
        /// Roll back only if the current version is V.
        #[arg(long, value_name = "V")]
        if_version: Option<String>,
        /// How long the signed HEAD stays valid (signing blocks): `30d`, `12h`.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        valid_for: Option<std::time::Duration>,
    },
    /// Files added, removed and changed between two versions, and the bytes a pull of the
    /// newer one moves when the older one is cached.
    Diff {
        /// Where the versions are: TYPE/NAME[/PATH].
        slug: String,
        /// The older version (default: the newest one before the current one).
        #[arg(long, value_name = "V")]
        from: Option<String>,
        /// The newer version (default: the current one).
        #[arg(long, value_name = "V")]
        to: Option<String>,
    },
    /// Print a completion script for SHELL to stdout, e.g.
    /// `blockctl completions bash > ~/.local/share/bash-completion/completions/blockctl`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Write a version as one ordinary .tar.zst to stdout (`| zstd -dc | tar -x`).
    Export {
        /// Where the version is: TYPE/NAME[/PATH].
        slug: String,
        /// A version id or unique prefix (default: the current one).
        #[arg(long, value_name = "V")]
        version: Option<String>,
    },
}

fn parse_duration(text: &str) -> std::result::Result<std::time::Duration, String> {
    if text.trim() == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    humantime::parse_duration(text).map_err(|e| format!("{text}: {e} (e.g. 60s, 10m, 0)"))
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Write a new Ed25519 key pair in minisign's formats: $BLOCKCTL_HOME/keys/NAME.key (the
    /// secret, 0600; a block's signing_key) and NAME.pub (its trusted_keys).
    Generate {
        /// The key's name: letters, digits, `_`, `-` and `.`.
        name: String,
        /// Encrypt the secret key with the password in this environment variable: env:VAR.
        #[arg(long, value_name = "env:VAR", conflicts_with = "unencrypted")]
        password: Option<String>,
        /// Leave the secret key unencrypted (for CI, where the file itself is the secret).
        #[arg(long)]
        unencrypted: bool,
    },
}

#[derive(Subcommand)]
enum BlockCommand {
    /// Save a block: TYPE/NAME --set K=V...
    Create {
        /// The block's name: TYPE/NAME, e.g. s3/prod-flows (`blockctl types` lists types).
        id: String,
        /// A field of the type (repeat for each); a secret can be `env:VAR` to read VAR at use.
        #[arg(long = "set", value_name = "K=V")]
        set: Vec<String>,
        /// Replace a block saved under the same name.
        #[arg(long)]
        overwrite: bool,
    },
    /// List saved blocks.
    Ls,
    /// Show a block's fields, secrets masked.
    Inspect {
        /// The block's name: TYPE/NAME.
        id: String,
    },
    /// Remove a saved block (its data stays).
    Rm {
        /// The block's name: TYPE/NAME.
        id: String,
    },
    /// Reach the storage and check the credentials.
    Check {
        /// The block's name: TYPE/NAME.
        id: String,
    },
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
    /// Versioned, verified packages under .blocks/ (git: the block's own commits).
    Package,
    /// A plain mirror of the files, no versions.
    Files,
}

#[derive(Args)]
struct PutArgs {
    /// The folder to upload (ignore rules from .blockignore or .prefectignore apply).
    dir: PathBuf,
    /// Where to store it: TYPE/NAME[/PATH], e.g. s3/prod-flows/etl.
    slug: String,
    /// How the tree is stored.
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
    /// Package format: 3 (frames shared between versions, stored in packs read by range),
    /// 2 (each frame an object of its own, for agents on a release before format 3) or 1
    /// (one archive per version, for agents on a release before format 2).
    #[arg(long, value_name = "N", default_value = "3", value_parser = ["1", "2", "3"])]
    format: String,
    /// Why this version exists, recorded in its manifest (`versions` and `show` print it).
    #[arg(short, long, value_name = "TEXT")]
    message: Option<String>,
    /// Who puts it (default: user@host).
    #[arg(long, value_name = "NAME")]
    author: Option<String>,
    /// A label recorded with the version, KEY=VALUE (repeat for each).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    /// How long the signed HEAD stays valid, for blocks with a signing_key (default 30d):
    /// agents that trust the key refuse it afterwards until the next put or rollback.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    valid_for: Option<std::time::Duration>,
}

#[derive(Args)]
struct GetArgs {
    /// What to download: TYPE/NAME[/PATH].
    slug: String,
    /// The folder to fill; it must be empty or missing unless --replace or --merge.
    dir: PathBuf,
    /// This version (an id or unique prefix) instead of the current one.
    #[arg(long, value_name = "V")]
    version: Option<String>,
    /// Make DIR exactly the version (stale files removed), swapped in atomically.
    #[arg(long, conflicts_with = "merge")]
    replace: bool,
    /// Overwrite files of the version, keep the others.
    #[arg(long)]
    merge: bool,
    /// Neither read nor fill the local frame and manifest caches.
    #[arg(long)]
    no_cache: bool,
    /// Only the files matching GLOB (a path below DIR; `*` stays in one folder, `**` crosses
    /// folders), fetching only the frames that hold them; repeat for more.
    #[arg(long, value_name = "GLOB")]
    only: Vec<String>,
    /// Accept a signed HEAD older than one this agent already accepted (a rollback you
    /// know about); only blocks with trusted_keys refuse one at all.
    #[arg(long)]
    allow_rollback: bool,
}

/// Runs blockctl with `args` (the program name first, as in `std::env::args_os`) and returns
/// its exit code. Usage errors, `--help` and `--version` are printed as clap prints them.
pub fn run<I, T>(args: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    logging::init();
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
        Command::Show { slug, version } => {
            let (block, path, slug) = open(&slug)?;
            let manifest = block.manifest(&path, version.as_deref()).await?;
            out.show(&slug, &manifest);
            Ok(())
        }
        Command::Key(KeyCommand::Generate {
            name,
            password,
            unencrypted,
        }) => {
            let password = match (password, unencrypted) {
                (_, true) => None,
                (Some(p), false) => Some(env_password(&p)?),
                (None, false) => Some(prompt_password()?),
            };
            let dir = storage_blocks::registry::blockctl_home().join("keys");
            let key = storage_blocks::signing::generate_key_pair(&dir, &name, password.as_deref())?;
            out.key_generated(&key);
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
        Command::Gc {
            slug,
            keep,
            grace,
            keep_within,
        } => {
            let (block, path, slug) = open(&slug)?;
            let opts = GcOptions {
                keep,
                grace,
                keep_within,
            };
            let report = block.gc(&path, &opts).await?;
            out.gc(&slug, &report);
            Ok(())
        }
        Command::Rollback {
            slug,
            to,
            if_version,
            valid_for,
        } => {
            let (block, path, slug) = open(&slug)?;
            let opts = RollbackOptions {
                to,
                if_version: if_version.map(precondition),
                valid_for,
            };
            let report = block.rollback(&path, &opts).await?;
            out.rolled_back(&slug, &report);
            Ok(())
        }
        Command::Diff { slug, from, to } => {
            let (block, path, slug) = open(&slug)?;
            let (from, to) = match (from, to) {
                (Some(f), Some(t)) => (f, t),
                (from, to) => {
                    let versions = block.list_versions(&path).await?;
                    let current = versions.iter().find(|v| v.current).or(versions.first());
                    let to = match (to, current) {
                        (Some(t), _) => t,
                        (None, Some(c)) => c.version.clone(),
                        (None, None) => {
                            return Err(Error::NotFound(format!("{slug}: no versions")));
                        }
                    };
                    let from = match from {
                        Some(f) => f,
                        None => versions
                            .iter()
                            .map(|v| &v.version)
                            .find(|v| !v.starts_with(&to))
                            .cloned()
                            .ok_or_else(|| {
                                Error::Usage(format!(
                                    "{slug}: only one version is stored; nothing to diff"
                                ))
                            })?,
                    };
                    (from, to)
                }
            };
            let old = block.manifest(&path, Some(&from)).await?;
            let new = block.manifest(&path, Some(&to)).await?;
            out.diff(&slug, &storage_blocks::diff::diff(&old, &new));
            Ok(())
        }
        Command::Completions { shell } => {
            let mut command = Cli::command();
            clap_complete::generate(shell, &mut command, "blockctl", &mut std::io::stdout());
            Ok(())
        }
        Command::Export { slug, version } => {
            use futures::StreamExt;
            use std::io::IsTerminal;
            let (block, path, slug) = open(&slug)?;
            if std::io::stdout().is_terminal() {
                return Err(Error::Usage(format!(
                    "{slug}: export writes a .tar.zst to stdout; redirect it to a file or a pipe"
                )));
            }
            let mut export = block.export(&path, version.as_deref()).await?;
            let mut stdout = std::io::stdout().lock();
            while let Some(chunk) = export.stream.next().await {
                stdout
                    .write_all(&chunk?)
                    .map_err(|e| Error::io("writing to stdout", e))?;
            }
            stdout
                .flush()
                .map_err(|e| Error::io("writing to stdout", e))
        }
    }
}

/// A password given as `env:VAR`: never on the command line, where `ps` shows it.
fn env_password(given: &str) -> Result<String> {
    let name = given.strip_prefix("env:").ok_or_else(|| {
        Error::Usage("--password takes env:VAR (a password on the command line leaks)".into())
    })?;
    let value = std::env::var(name).map_err(|_| {
        Error::Usage(format!(
            "--password reads env:{name}, but {name} is not set"
        ))
    })?;
    if value.is_empty() {
        return Err(Error::Usage(format!("--password: {name} is empty")));
    }
    storage_blocks::secret::remember(&value);
    Ok(value)
}

/// Asks for a new key's password twice on the terminal.
fn prompt_password() -> Result<String> {
    use std::io::IsTerminal;
    if !std::io::stdin().is_terminal() {
        return Err(Error::Usage(
            "no terminal to ask for the key's password: give --password env:VAR or --unencrypted"
                .into(),
        ));
    }
    let ask =
        |p: &str| rpassword::prompt_password(p).map_err(|e| Error::io("reading the password", e));
    let first = ask("Password for the new key: ")?;
    if first.is_empty() {
        return Err(Error::Usage(
            "the password is empty (or use --unencrypted)".into(),
        ));
    }
    if ask("Password again: ")? != first {
        return Err(Error::Usage("the passwords differ".into()));
    }
    Ok(first)
}

/// What `put` records: the message, author and labels given, and the git provenance of DIR.
fn version_record(args: &PutArgs, out: &Out) -> Result<storage_blocks::VersionRecord> {
    let mut labels = std::collections::BTreeMap::new();
    for l in &args.labels {
        let (k, v) = storage_blocks::record::parse_label(l)?;
        if labels.insert(k.clone(), v).is_some() {
            return Err(Error::Usage(format!("label {k} is given twice")));
        }
    }
    let (record, warning) = storage_blocks::provenance::version_record(
        &args.dir,
        args.message.clone(),
        args.author.clone(),
        labels,
    )?;
    if let Some(w) = warning {
        out.warn(&w);
    }
    Ok(record)
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
    let record = version_record(&args, out)?;
    let if_version = args.if_version.map(precondition);
    let opts = PutOptions {
        layout: match args.layout {
            LayoutArg::Package => Layout::Package,
            LayoutArg::Files => Layout::Files,
        },
        format: match args.format.as_str() {
            "1" => PackageFormat::Archive,
            "2" => PackageFormat::Frames,
            _ => PackageFormat::Packs,
        },
        ignore_file: args.ignore_file,
        no_default_ignores: args.no_default_ignores,
        if_version,
        follow_symlinks: args.follow_symlinks,
        record: Some(record.clone()),
        valid_for: args.valid_for,
        progress: Some(Arc::new(Progress::new(out))),
    };
    let started = std::time::Instant::now();
    let report = block.put_directory(&args.dir, &path, &opts).await?;
    out.put(&slug, &report, &record, started.elapsed());
    Ok(())
}

/// `--if-version V`: `none` for no version yet, else the version that must be current.
fn precondition(v: String) -> VersionPrecondition {
    match v.as_str() {
        "none" => VersionPrecondition::NoVersion,
        _ => VersionPrecondition::Current(v),
    }
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
        no_cache: args.no_cache,
        cache_dir: None,
        only: args.only,
        allow_rollback: args.allow_rollback,
        progress: Some(Arc::new(Progress::new(out))),
    };
    let started = std::time::Instant::now();
    let report = block.get_directory(&path, &args.dir, &opts).await?;
    out.get(&slug, &args.dir, &report, started.elapsed());
    Ok(())
}
