//! Everything blockctl prints: human text, or JSON on stdout with `--json`; errors and
//! warnings on stderr; progress bars on stderr only when it is a terminal.

use std::io::IsTerminal;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use storage_blocks::diff::VersionDiff;
use storage_blocks::signing::GeneratedKey;
use storage_blocks::{
    BlockDocument, BlockId, Error, GcReport, GetReport, ListedFile, PackageManifest, ProgressEvent,
    ProgressObserver, PutReport, RollbackReport, TypeSpec, VersionInfo, VersionRecord, type_spec,
};

#[derive(Clone, Copy)]
pub struct Out {
    json: bool,
    quiet: bool,
    verbose: bool,
}

fn print_json(value: serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(&value).expect("JSON renders")
    );
}

fn short(v: &str) -> &str {
    &v[..v.len().min(12)]
}

/// A version record's fields for `--json`: always all four, `null` or `{}` when absent.
fn record_json(r: &VersionRecord) -> serde_json::Map<String, serde_json::Value> {
    let mut m = serde_json::Map::new();
    m.insert("message".into(), json!(r.message));
    m.insert("author".into(), json!(r.author));
    m.insert("labels".into(), json!(r.labels));
    m.insert(
        "source".into(),
        match &r.source {
            Some(s) => json!({"commit": s.commit, "branch": s.branch, "dirty": s.dirty, "origin": s.origin}),
            None => serde_json::Value::Null,
        },
    );
    m
}

/// Text from a stored record as one terminal-safe line: control characters escaped, so a
/// hostile manifest cannot move the cursor or fake other lines.
fn one_line_text(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if c.is_control() {
                c.escape_default().collect::<Vec<_>>()
            } else {
                vec![c]
            }
        })
        .collect()
}

fn opt_text(s: Option<&str>) -> String {
    s.map_or_else(|| "-".to_string(), one_line_text)
}

impl Out {
    pub fn new(json: bool, quiet: bool, verbose: bool) -> Self {
        Out {
            json,
            quiet,
            verbose,
        }
    }

    pub fn error(&self, e: &Error) {
        eprintln!(
            "blockctl: {}",
            storage_blocks::error::one_line(&e.to_string())
        );
    }

    pub fn warn(&self, msg: &str) {
        if !self.quiet {
            eprintln!("warning: {msg}");
        }
    }

    fn say(&self, text: impl AsRef<str>) {
        if !self.quiet {
            println!("{}", text.as_ref());
        }
    }

    pub fn types(&self, specs: &[TypeSpec]) {
        if self.json {
            let list: Vec<_> = specs
                .iter()
                .map(|s| json!({"type": s.block_type, "aliases": s.block_type.aliases(), "summary": s.summary, "fields": s.all_fields().collect::<Vec<_>>(), "capabilities": s.capabilities}))
                .collect();
            return print_json(json!(list));
        }
        for s in specs {
            let aliases = s.block_type.aliases();
            let aliases = if aliases.is_empty() {
                String::new()
            } else {
                format!(" (aliases: {})", aliases.join(", "))
            };
            println!("{}{aliases}: {}", s.block_type, s.summary);
            for f in s.all_fields() {
                let mut notes = vec![format!("{:?}", f.kind).to_lowercase()];
                if f.required {
                    notes.push("required".into());
                }
                if f.secret {
                    notes.push("secret, or env:NAME".into());
                }
                if let Some(d) = f.default {
                    notes.push(format!("default {d}"));
                }
                println!("  {:<22} {} [{}]", f.name, f.help, notes.join(", "));
            }
            let c = s.capabilities;
            let caps = [
                ("package-layout", c.package_layout),
                ("files-layout", c.files_layout),
                ("native-tree", c.native_tree),
                ("versions", c.versions),
                ("atomic", c.atomic_put),
                ("cas", c.compare_and_swap),
                ("gc", c.gc),
                ("read-only", c.read_only),
            ];
            let caps: Vec<&str> = caps.iter().filter(|(_, on)| *on).map(|(n, _)| *n).collect();
            println!("  capabilities: {}\n", caps.join(", "));
        }
    }

    pub fn created(&self, doc: &BlockDocument) {
        if self.json {
            return print_json(json!({"block": doc.id.to_string(), "created": true}));
        }
        self.say(format!("created {}", doc.id));
    }

    pub fn blocks(&self, docs: &[BlockDocument]) {
        if self.json {
            let list: Vec<_> = docs
                .iter()
                .map(|d| {
                    let fields = type_spec(d.id.block_type)
                        .map(|s| d.masked(&s))
                        .unwrap_or_default();
                    json!({"block": d.id.to_string(), "type": d.id.block_type, "fields": fields})
                })
                .collect();
            return print_json(json!(list));
        }
        for d in docs {
            println!("{}", d.id);
        }
    }

    pub fn inspect(&self, doc: &BlockDocument, spec: &TypeSpec) {
        let fields = doc.masked(spec);
        if self.json {
            return print_json(
                json!({"block": doc.id.to_string(), "type": doc.id.block_type, "fields": fields}),
            );
        }
        println!("{}", doc.id);
        for (k, v) in fields {
            let shown = match v {
                toml::Value::String(s) => s,
                other => other.to_string(),
            };
            println!("  {k} = {shown}");
        }
    }

    pub fn block_removed(&self, id: &BlockId) {
        if self.json {
            return print_json(json!({"block": id.to_string(), "removed": true}));
        }
        self.say(format!("removed {id}"));
    }

    pub fn checked(&self, id: &BlockId) {
        if self.json {
            return print_json(json!({"block": id.to_string(), "ok": true}));
        }
        self.say(format!("{id}: reachable, credentials accepted"));
    }

    pub fn imported(&self, r: &storage_blocks::prefect::ImportReport, dry_run: bool) {
        if self.json {
            let imported: Vec<_> = r
                .imported
                .iter()
                .map(|(id, from)| json!({"block": id, "from": from}))
                .collect();
            let skipped: Vec<_> = r
                .skipped
                .iter()
                .map(|(from, why)| json!({"from": from, "reason": why}))
                .collect();
            return print_json(
                json!({"imported": imported, "skipped": skipped, "dry_run": dry_run}),
            );
        }
        let verb = if dry_run { "would import" } else { "imported" };
        for (id, from) in &r.imported {
            self.say(format!("{verb} {id} (from Prefect block {from})"));
        }
        for (from, why) in &r.skipped {
            self.warn(&format!("not imported: Prefect block {from}: {why}"));
        }
    }

    pub fn put(&self, slug: &str, r: &PutReport, record: &VersionRecord, took: Duration) {
        if self.json {
            let mut v = json!({"slug": slug, "version": r.version, "files": r.files, "bytes": r.bytes, "skipped": r.skipped,
                    "uploaded_bytes": r.uploaded_bytes, "frames_uploaded": r.frames_uploaded, "frames_reused": r.frames_reused});
            v.as_object_mut()
                .expect("an object")
                .extend(record_json(record));
            return print_json(v);
        }
        let what = match (&r.version, r.skipped) {
            (Some(v), true) => format!(
                "{slug}: version {} already stored, nothing uploaded",
                short(v)
            ),
            (Some(v), false) => format!(
                "{slug}: stored version {} ({} files, {} bytes; uploaded {} bytes, {} new frames, {} reused)",
                short(v),
                r.files,
                r.bytes,
                r.uploaded_bytes,
                r.frames_uploaded,
                r.frames_reused
            ),
            (None, _) => format!("{slug}: mirrored {} files ({} bytes)", r.files, r.bytes),
        };
        self.say(what);
        self.timing(took);
    }

    pub fn get(&self, slug: &str, dir: &Path, r: &GetReport, took: Duration) {
        if self.json {
            return print_json(
                json!({"slug": slug, "version": r.version, "files": r.files, "bytes": r.bytes,
                    "downloaded_bytes": r.downloaded_bytes, "frames_downloaded": r.frames_downloaded, "frames_cached": r.frames_cached,
                    "files_linked": r.files_linked, "files_copied": r.files_copied}),
            );
        }
        let version = r
            .version
            .as_deref()
            .map(|v| format!("version {} ", short(v)))
            .unwrap_or_default();
        self.say(format!(
            "{slug}: {version}({} files, {} bytes) in {}",
            r.files,
            r.bytes,
            dir.display()
        ));
        self.timing(took);
    }

    fn timing(&self, took: Duration) {
        if self.verbose && !self.quiet {
            eprintln!("took {:.3}s", took.as_secs_f64());
        }
    }

    pub fn versions(&self, _slug: &str, versions: &[VersionInfo]) {
        if self.json {
            let list: Vec<serde_json::Value> = versions
                .iter()
                .map(|v| {
                    let mut o = json!({"version": v.version, "created": v.created, "files": v.files,
                        "bytes": v.bytes, "current": v.current});
                    if let Some(since) = &v.current_since {
                        o["current_since"] = json!(since);
                    }
                    o.as_object_mut()
                        .expect("an object")
                        .extend(record_json(&v.record));
                    o
                })
                .collect();
            return print_json(json!(list));
        }
        for v in versions {
            let mark = if v.current { "*" } else { " " };
            let mut line = format!(
                "{mark} {}  {}  {} files  {} bytes",
                v.version, v.created, v.files, v.bytes
            );
            if let Some(since) = &v.current_since {
                line.push_str(&format!("  current since {since}"));
            }
            let r = &v.record;
            if let Some(a) = &r.author {
                line.push_str(&format!("  {}", one_line_text(a)));
            }
            if let Some(s) = &r.source {
                let dirty = if s.dirty { "+dirty" } else { "" };
                line.push_str(&format!("  commit {}{dirty}", short(&s.commit)));
            }
            if let Some(m) = &r.message {
                line.push_str(&format!(
                    "  {}",
                    one_line_text(m.lines().next().unwrap_or(""))
                ));
            }
            println!("{line}");
        }
    }

    /// One version's whole record.
    pub fn show(&self, slug: &str, m: &PackageManifest) {
        let record = m.record.clone().unwrap_or_default();
        if self.json {
            let mut v = json!({"slug": slug, "version": m.version, "created": m.created,
                "format": m.format, "files": m.totals.files, "dirs": m.totals.dirs,
                "symlinks": m.totals.symlinks, "bytes": m.totals.bytes,
                "package_bytes": m.totals.package_bytes});
            v.as_object_mut()
                .expect("an object")
                .extend(record_json(&record));
            return print_json(v);
        }
        let row = |k: &str, v: &str| println!("{k:<9} {v}");
        row("slug", slug);
        row("version", &m.version);
        row("created", &m.created);
        row(
            "files",
            &format!(
                "{} ({} bytes; {} folders, {} symlinks; package {} bytes, format {})",
                m.totals.files,
                m.totals.bytes,
                m.totals.dirs,
                m.totals.symlinks,
                m.totals.package_bytes,
                m.format
            ),
        );
        row("author", &opt_text(record.author.as_deref()));
        match &record.message {
            Some(msg) => {
                let mut lines = msg.lines();
                row("message", &one_line_text(lines.next().unwrap_or("")));
                for l in lines {
                    row("", &one_line_text(l));
                }
            }
            None => row("message", "-"),
        }
        for (k, v) in &record.labels {
            row("label", &format!("{}={}", k, one_line_text(v)));
        }
        match &record.source {
            Some(s) => {
                row("commit", &s.commit);
                row("branch", &opt_text(s.branch.as_deref()));
                row("dirty", if s.dirty { "yes" } else { "no" });
                row("origin", &opt_text(s.origin.as_deref()));
            }
            None => row("source", "- (not put from a git work tree)"),
        }
    }

    pub fn key_generated(&self, k: &GeneratedKey) {
        if self.json {
            return print_json(json!({"name": k.name, "secret_key": k.secret_key,
                "public_key_file": k.public_key_file, "public_key": k.public_key,
                "key_id": k.key_id.to_string(), "encrypted": k.encrypted}));
        }
        println!("secret key  {}", k.secret_key.display());
        println!("public key  {}", k.public_key_file.display());
        println!("key id      {}", k.key_id);
        println!("{}", k.public_key);
    }

    pub fn files(&self, files: &[ListedFile]) {
        if self.json {
            return print_json(json!(files));
        }
        for f in files {
            match f.kind {
                storage_blocks::EntryKind::Dir => println!("{}/", f.path),
                storage_blocks::EntryKind::Symlink => println!("{}@", f.path),
                storage_blocks::EntryKind::File => println!("{}\t{}", f.path, f.size),
            }
        }
    }

    pub fn removed(&self, slug: &str, version: Option<&str>) {
        if self.json {
            return print_json(json!({"slug": slug, "version": version, "removed": true}));
        }
        match version {
            Some(v) => self.say(format!("{slug}: removed version {v}")),
            None => self.say(format!("{slug}: removed")),
        }
    }

    pub fn rolled_back(&self, slug: &str, r: &RollbackReport) {
        if self.json {
            return print_json(json!({"slug": slug, "from": r.from, "version": r.to}));
        }
        match &r.from {
            Some(from) if *from == r.to => self.say(format!(
                "{slug}: {} is current (HEAD written again)",
                short(&r.to)
            )),
            Some(from) => self.say(format!(
                "{slug}: rolled back from {} to {}",
                short(from),
                short(&r.to)
            )),
            None => self.say(format!("{slug}: {} is current", short(&r.to))),
        }
    }

    pub fn gc(&self, slug: &str, r: &GcReport) {
        if self.json {
            return print_json(
                json!({"slug": slug, "kept": r.kept, "removed": r.removed_versions, "leftovers": r.removed_leftovers,
                    "frames": r.removed_frames, "held_by_puts": r.held_by_puts}),
            );
        }
        self.say(format!(
            "{slug}: kept {} version(s), removed {} version(s), {} frame(s) and {} leftover(s)",
            r.kept.len(),
            r.removed_versions.len(),
            r.removed_frames,
            r.removed_leftovers
        ));
        if r.held_by_puts {
            self.say(format!(
                "{slug}: a put is under way there, so nothing was removed; gc again later"
            ));
        }
    }

    pub fn diff(&self, slug: &str, d: &VersionDiff) {
        if self.json {
            return print_json(json!(d));
        }
        for (sign, paths) in [("+", &d.added), ("-", &d.removed), ("~", &d.changed)] {
            for p in paths.iter() {
                self.say(format!("{sign} {p}"));
            }
        }
        self.say(format!(
            "{slug}: {} → {}: {} added, {} removed, {} changed; a pull with {} cached moves {} of {} bytes ({} frames)",
            short(&d.from),
            short(&d.to),
            d.added.len(),
            d.removed.len(),
            d.changed.len(),
            short(&d.from),
            d.pull_bytes,
            d.package_bytes,
            d.pull_frames
        ));
    }
}

/// Draws a bar per phase on a terminal; prints warnings always (unless quiet), and with
/// `-v` how long each phase took.
pub struct Progress {
    out: Out,
    bar: Mutex<Option<ProgressBar>>,
    draw: bool,
    /// The phase under way and when it began (with `-v`).
    phase: Mutex<Option<(&'static str, std::time::Instant)>>,
}

impl Progress {
    pub fn new(out: &Out) -> Self {
        Progress {
            out: *out,
            bar: Mutex::new(None),
            draw: !out.quiet && std::io::stderr().is_terminal(),
            phase: Mutex::new(None),
        }
    }

    /// With `-v`: ends the phase under way (printing its time) and begins `next`.
    fn time_phase(&self, next: Option<&'static str>) {
        if !self.out.verbose || self.out.quiet {
            return;
        }
        let mut phase = self.phase.lock().expect("phase lock");
        if let Some((name, began)) = phase.take() {
            eprintln!("{name:>12} {:.3}s", began.elapsed().as_secs_f64());
        }
        *phase = next.map(|n| (n, std::time::Instant::now()));
    }
}

impl ProgressObserver for Progress {
    fn event(&self, event: ProgressEvent) {
        match &event {
            ProgressEvent::Phase { name, .. } => self.time_phase(Some(name)),
            ProgressEvent::Done => self.time_phase(None),
            _ => {}
        }
        let mut bar = self.bar.lock().expect("progress lock");
        match event {
            ProgressEvent::Warning(w) => match bar.as_ref() {
                Some(b) => b.suspend(|| self.out.warn(&w)),
                None => self.out.warn(&w),
            },
            ProgressEvent::Phase { name, total } if self.draw => {
                if let Some(b) = bar.take() {
                    b.finish_and_clear();
                }
                let b = ProgressBar::new(total.unwrap_or(0));
                b.set_style(
                    ProgressStyle::with_template(
                        "{msg:>12} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
                    )
                    .expect("valid template")
                    .progress_chars("=> "),
                );
                b.set_message(name);
                *bar = Some(b);
            }
            ProgressEvent::Advance(n) => {
                if let Some(b) = bar.as_ref() {
                    b.inc(n);
                }
            }
            ProgressEvent::Done => {
                if let Some(b) = bar.take() {
                    b.finish_and_clear();
                }
            }
            ProgressEvent::Phase { .. } => {}
        }
    }
}
