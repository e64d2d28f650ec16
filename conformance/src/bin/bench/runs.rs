//! The measurements: blockctl and its peers on each target and corpus.

use super::*;

pub(crate) struct Bench {
    pub(crate) blockctl: PathBuf,
    /// The python that has Prefect, when it could be installed.
    pub(crate) prefect: Option<PathBuf>,
    /// Agents pulling `flow` at once (`--fleet`); 0 for none.
    pub(crate) fleet: usize,
    pub(crate) rows: Vec<Row>,
    /// Bytes moved by the delta rows: (target, tool, what, bytes), one per run.
    pub(crate) bytes: Vec<(String, String, String, u64)>,
    pub(crate) notes: Vec<String>,
}

impl Bench {
    pub(crate) fn record(&mut self, t: &str, c: &str, tool: &str, op: &str, s: Sample) {
        eprintln!(
            "   {t} / {c} / {tool} / {op}: {:.3} s, {:.1} MiB",
            s.secs,
            s.peak_kib as f64 / 1024.0
        );
        if let Some(r) = self
            .rows
            .iter_mut()
            .find(|r| r.target == t && r.corpus == c && r.tool == tool && r.op == op)
        {
            r.secs.push(s.secs);
            r.peak_kib.push(s.peak_kib);
            return;
        }
        self.rows.push(Row {
            target: t.into(),
            corpus: c.into(),
            tool: tool.into(),
            op: op.into(),
            secs: vec![s.secs],
            peak_kib: vec![s.peak_kib],
        });
    }

    pub(crate) fn bytes(&mut self, t: &str, tool: &str, what: &str, n: u64) {
        if t == "sftp" || t == "ftp" {
            // Neither a proxy nor a store folder of ours counts its bytes.
            return;
        }
        eprintln!("   {t} / flow / {tool} / {what}: {n} bytes");
        self.bytes.push((t.into(), tool.into(), what.into(), n));
    }

    /// Median of the byte counts recorded for `(target, tool, what)`.
    pub(crate) fn bytes_of(&self, t: &str, tool: &str, what: &str) -> Option<f64> {
        let v: Vec<f64> = self
            .bytes
            .iter()
            .filter(|b| b.0 == t && b.1 == tool && b.2 == what)
            .map(|b| b.3 as f64)
            .collect();
        (!v.is_empty()).then(|| median(&v))
    }

    /// The next deploy and the next run of `flow`: a one-file edit put again (format 2,
    /// format 1, rclone), pulled by an agent that holds the previous version and its frames,
    /// and a pull of a version whose frames are all cached.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn delta_run(
        &mut self,
        t: &Target,
        home: &Path,
        src: &Path,
        i: usize,
        work: &Path,
    ) -> Result<(), String> {
        let tn = t.name.as_str();
        let (base, proxy) = match &t.wire {
            Some(w) => (w.block.0.clone(), Some(&w.proxy)),
            None => (t.block.0.clone(), None),
        };
        let store = match tn {
            "local" => Some(work.join("local-store")),
            _ => None,
        };
        // Bytes sent up (wire or store growth) and down (wire) while `f` runs.
        let measure = |f: &mut dyn FnMut() -> Result<Sample, String>| {
            let (up0, down0) = proxy.map_or((0, 0), |p| p.carried());
            let grown0 = store.as_deref().map_or(0, tree_bytes);
            let s = f()?;
            let (up1, down1) = proxy.map_or((0, 0), |p| p.carried());
            let grown1 = store.as_deref().map_or(0, tree_bytes);
            let up = if proxy.is_some() {
                up1 - up0
            } else {
                grown1.saturating_sub(grown0)
            };
            Ok::<_, String>((s, up, down1 - down0))
        };
        let copy = |tag: &str| -> Result<PathBuf, String> {
            let dir = work.join(format!("edit-{tn}-{tag}-{i}"));
            let _ = fs::remove_dir_all(&dir);
            run(Command::new("cp").arg("-a").arg(src).arg(&dir))?;
            Ok(dir)
        };

        // Format 2.
        let tree = copy("v2")?;
        let slug = format!("{base}/flow-delta-{i}");
        let cache = work.join(format!("agent-cache-{tn}-{i}"));
        let agent = |c: &mut Command| {
            c.env("BLOCKCTL_CACHE_DIR", &cache);
        };
        let (_, cold_up, _) =
            measure(&mut || run(self.blockctl(home).arg("put").arg(&tree).arg(&slug)))?;
        let run_dir = work.join(format!("agent-run-{tn}-{i}"));
        let (_, _, cold_down) = measure(&mut || {
            let mut c = self.blockctl(home);
            agent(&mut c);
            run(c.arg("get").arg(&slug).arg(&run_dir))
        })?;
        edit_one_file(&tree)?;
        let (s, up, _) =
            measure(&mut || run(self.blockctl(home).arg("put").arg(&tree).arg(&slug)))?;
        self.record(tn, "flow", "blockctl package", "edit re-put", s);
        self.bytes(tn, "blockctl package", "cold put up", cold_up);
        self.bytes(tn, "blockctl package", "edit re-put up", up);
        let (s, _, down) = measure(&mut || {
            let mut c = self.blockctl(home);
            agent(&mut c);
            run(c.arg("get").arg(&slug).arg(&run_dir).arg("--replace"))
        })?;
        verify("get --replace of the edit", &digest_tree(&tree), &run_dir)?;
        self.record(tn, "flow", "blockctl package", "edit get (cached)", s);
        self.bytes(tn, "blockctl package", "cold get down", cold_down);
        self.bytes(tn, "blockctl package", "edit get down", down);
        let again = work.join(format!("agent-again-{tn}-{i}"));
        let (s, _, down) = measure(&mut || {
            let mut c = self.blockctl(home);
            agent(&mut c);
            run(c.arg("get").arg(&slug).arg(&again))
        })?;
        verify("get of a cached version", &digest_tree(&tree), &again)?;
        self.record(tn, "flow", "blockctl package", "cached get", s);
        self.bytes(tn, "blockctl package", "cached get down", down);
        // A --replace of the version the folder holds: at once (its stamps too young to be
        // trusted alone, so the folder is compared with the manifest), again 2 s later (the
        // record was taken too soon after the writes: compared again, and recorded anew),
        // then by the stamps alone.
        let rows = [
            ("replace held (young)", 0),
            ("replace held (checked)", 2100),
            ("replace held", 0),
        ];
        for (row, pause) in rows {
            std::thread::sleep(std::time::Duration::from_millis(pause));
            let (s, _, down) = measure(&mut || {
                let mut c = self.blockctl(home);
                agent(&mut c);
                run(c.arg("get").arg(&slug).arg(&again).arg("--replace"))
            })?;
            verify(row, &digest_tree(&tree), &again)?;
            self.record(tn, "flow", "blockctl package", row, s);
            self.bytes(tn, "blockctl package", &format!("{row} down"), down);
        }
        for d in [&run_dir, &again, &cache, &tree] {
            let _ = fs::remove_dir_all(d);
        }
        let _ = run(self.blockctl(home).arg("rm").arg(&slug));

        // Format 1, as the previous release wrote it.
        let tree = copy("v1")?;
        let slug = format!("{base}/flow-delta1-{i}");
        run(self
            .blockctl(home)
            .args(["put", "--format", "1"])
            .arg(&tree)
            .arg(&slug))?;
        edit_one_file(&tree)?;
        let (s, up, _) = measure(&mut || {
            run(self
                .blockctl(home)
                .args(["put", "--format", "1"])
                .arg(&tree)
                .arg(&slug))
        })?;
        self.record(tn, "flow", "blockctl format 1", "edit re-put", s);
        self.bytes(tn, "blockctl format 1", "edit re-put up", up);
        let _ = fs::remove_dir_all(&tree);
        let _ = run(self.blockctl(home).arg("rm").arg(&slug));

        // rclone copy of the same edit onto a copy of the previous tree.
        let rclone = match &t.wire {
            Some(w) => w.rclone.clone(),
            None => t.rclone.clone(),
        };
        if let (Some((env, root)), None) = (rclone, &t.rclone_skip) {
            let tree = copy("rclone")?;
            let remote = format!("{root}/flow-delta-rclone-{i}");
            make_folders(t, &tree, &format!("flow-delta-rclone-{i}"))?;
            let rclone = |args: &[&str]| {
                let mut c = Command::new("rclone");
                c.env_remove("AWS_CA_BUNDLE")
                    .envs(env.iter().map(|(k, v)| (k, v)))
                    .args(args);
                c
            };
            let to = tree.to_string_lossy().into_owned();
            run(&mut rclone(&[
                "copy",
                "--transfers",
                "8",
                "-q",
                &to,
                &remote,
            ]))?;
            edit_one_file(&tree)?;
            let (s, up, _) = measure(&mut || {
                run(&mut rclone(&[
                    "copy",
                    "--transfers",
                    "8",
                    "-q",
                    &to,
                    &remote,
                ]))
            })?;
            self.record(tn, "flow", "rclone", "edit re-put", s);
            self.bytes(tn, "rclone", "edit re-put up", up);
            let _ = run(&mut rclone(&["purge", "-q", &remote]));
            let _ = fs::remove_dir_all(&tree);
        }
        Ok(())
    }

    /// `self.fleet` cold gets of `slug` started together, each into its own folder and
    /// checked: the wall time until the last is done, and the largest peak memory.
    fn fleet_get(
        &self,
        home: &Path,
        slug: &str,
        expected: &BTreeMap<String, String>,
        dl: &dyn Fn(&str) -> PathBuf,
    ) -> Result<Sample, String> {
        let outs: Vec<PathBuf> = (0..self.fleet).map(|a| dl(&format!("agent{a}"))).collect();
        let start = Instant::now();
        let done: Vec<Result<Sample, String>> = std::thread::scope(|scope| {
            let agents: Vec<_> = outs
                .iter()
                .map(|out| {
                    let mut cmd = self.blockctl(home);
                    cmd.arg("get").arg(slug).arg(out).arg("--no-cache");
                    scope.spawn(move || run(&mut cmd))
                })
                .collect();
            agents
                .into_iter()
                .map(|a| a.join().unwrap_or_else(|_| Err("an agent panicked".into())))
                .collect()
        });
        let secs = start.elapsed().as_secs_f64();
        let mut peak_kib = 0;
        for (s, out) in done.into_iter().zip(&outs) {
            peak_kib = peak_kib.max(s?.peak_kib);
            verify("blockctl get (one of a fleet)", expected, out)?;
            let _ = fs::remove_dir_all(out);
        }
        Ok(Sample {
            secs,
            peak_kib,
            out: String::new(),
        })
    }

    pub(crate) fn blockctl(&self, home: &Path) -> Command {
        let mut c = Command::new(&self.blockctl);
        c.env("BLOCKCTL_HOME", home).arg("-q");
        c
    }

    pub(crate) fn target(
        &mut self,
        t: &Target,
        corpora: &[(String, PathBuf)],
        args: &Args,
        work: &Path,
    ) {
        let home = work.join(format!("home-{}", t.name));
        let (slug, sets) = &t.block;
        let mut create = self.blockctl(&home);
        create.args(["block", "create", slug]).args(sets);
        if let Err(e) = run(&mut create) {
            self.notes
                .push(format!("{}: block create failed: {e}", t.name));
            return;
        }
        if let Some(w) = &t.wire {
            let mut create = self.blockctl(&home);
            create
                .args(["block", "create", &w.block.0])
                .args(&w.block.1);
            if let Err(e) = run(&mut create) {
                self.notes
                    .push(format!("{}: block create (wire) failed: {e}", t.name));
                return;
            }
        }
        if let Some(why) = &t.rclone_skip {
            self.notes
                .push(format!("{}: rclone skipped: {why}", t.name));
        }
        if let Some(root) = &t.served {
            let mut create = self.blockctl(&home);
            create
                .args(["block", "create", "local/served"])
                .args(set(&[("basepath", &root.to_string_lossy())]));
            if let Err(e) = run(&mut create) {
                self.notes
                    .push(format!("{}: block create (served) failed: {e}", t.name));
                return;
            }
        }
        for (corpus, src) in corpora {
            eprintln!("== {} / {corpus}: hashing the source", t.name);
            let expected = digest_tree(src);
            let runs = match corpus.as_str() {
                "many" => args.many_runs.unwrap_or(args.runs),
                _ => args.runs,
            };
            for i in 0..runs {
                eprintln!("== {} / {corpus}: run {}/{runs}", t.name, i + 1);
                let done = match &t.served {
                    Some(root) => {
                        self.read_only_run(t, &home, corpus, src, &expected, i, work, root)
                    }
                    // A registry keeps packages only, in formats 2 and 3.
                    None if t.name == "oci" => match corpus.as_str() {
                        "flow" => self.formats_run(t, &home, src, i, work, &["2", "3"]),
                        _ => Ok(()),
                    },
                    None => self.one_run(t, &home, corpus, src, &expected, i, work),
                };
                if let Err(e) = done {
                    self.notes.push(format!("{} / {corpus}: {e}", t.name));
                    eprintln!("!! {e}");
                }
            }
        }
    }

    /// A read-only target: each layout written into the served folder through `local/served`
    /// (untimed), then got over HTTP; rclone copies a plain copy of the tree down.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn read_only_run(
        &mut self,
        t: &Target,
        home: &Path,
        corpus: &str,
        src: &Path,
        expected: &BTreeMap<String, String>,
        i: usize,
        work: &Path,
        served: &Path,
    ) -> Result<(), String> {
        let tn = t.name.as_str();
        let dl = |tag: &str| work.join(format!("dl-{tn}-{corpus}-{tag}-{i}"));
        for (layout, tool) in [("package", "blockctl package"), ("files", "blockctl files")] {
            let name = format!("{corpus}-{layout}-{i}");
            run(self
                .blockctl(home)
                .arg("put")
                .arg(src)
                .arg(format!("local/served/{name}"))
                .args(["--layout", layout]))?;
            let out = dl(layout);
            let s = run(self
                .blockctl(home)
                .arg("get")
                .arg(format!("{}/{name}", t.block.0))
                .arg(&out))?;
            verify(
                &format!("blockctl get ({layout}) over http"),
                expected,
                &out,
            )?;
            self.record(tn, corpus, tool, "get", s);
            let _ = fs::remove_dir_all(&out);
        }
        if let (Some((env, root)), None) = (&t.rclone, &t.rclone_skip) {
            let name = format!("{corpus}-rclone-{i}");
            run(Command::new("cp")
                .arg("-a")
                .arg(src)
                .arg(served.join(&name)))?;
            let out = dl("rclone");
            let s = run(Command::new("rclone")
                .envs(env.iter().map(|(k, v)| (k, v)))
                .args(["copy", "--transfers", "8", "-q"])
                .arg(format!("{root}{name}"))
                .arg(&out))?;
            verify("rclone copy down over http", expected, &out)?;
            self.record(tn, corpus, "rclone", "get", s);
            let _ = fs::remove_dir_all(&out);
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn one_run(
        &mut self,
        t: &Target,
        home: &Path,
        corpus: &str,
        src: &Path,
        expected: &BTreeMap<String, String>,
        i: usize,
        work: &Path,
    ) -> Result<(), String> {
        let base = &t.block.0;
        let tn = t.name.as_str();
        let dl = |tag: &str| work.join(format!("dl-{tn}-{corpus}-{tag}-{i}"));

        // blockctl, package layout: cold put, unchanged re-put, get.
        let slug = format!("{base}/{corpus}-pkg-{i}");
        let s = run(self.blockctl(home).arg("put").arg(src).arg(&slug))?;
        self.record(tn, corpus, "blockctl package", "put", s);
        let s = run(self.blockctl(home).arg("put").arg(src).arg(&slug))?;
        self.record(tn, corpus, "blockctl package", "re-put", s);
        let out = dl("pkg");
        // A first pull on a fresh agent: its cache empty (a later run would find the frames
        // of an earlier one), filled as a default get fills it.
        let fresh = work.join(format!("agent-fresh-{tn}-{corpus}-{i}"));
        let s = run(self
            .blockctl(home)
            .env("BLOCKCTL_CACHE_DIR", &fresh)
            .arg("get")
            .arg(&slug)
            .arg(&out))?;
        let _ = fs::remove_dir_all(&fresh);
        verify("blockctl get (package)", expected, &out)?;
        self.record(tn, corpus, "blockctl package", "get", s);
        let _ = fs::remove_dir_all(&out);
        if self.fleet > 0 && corpus == "flow" {
            let s = self.fleet_get(home, &slug, expected, &dl)?;
            let op = format!("get, {} agents at once", self.fleet);
            self.record(tn, corpus, "blockctl package", &op, s);
        }
        let _ = run(self.blockctl(home).arg("rm").arg(&slug));

        // blockctl, files layout.
        let slug = format!("{base}/{corpus}-files-{i}");
        let s = run(self
            .blockctl(home)
            .arg("put")
            .arg(src)
            .arg(&slug)
            .args(["--layout", "files"]))?;
        self.record(tn, corpus, "blockctl files", "put", s);
        let s = run(self
            .blockctl(home)
            .arg("put")
            .arg(src)
            .arg(&slug)
            .args(["--layout", "files"]))?;
        self.record(tn, corpus, "blockctl files", "re-put", s);
        let out = dl("files");
        let s = run(self.blockctl(home).arg("get").arg(&slug).arg(&out))?;
        verify("blockctl get (files)", expected, &out)?;
        self.record(tn, corpus, "blockctl files", "get", s);
        let _ = fs::remove_dir_all(&out);
        let _ = run(self.blockctl(home).arg("rm").arg(&slug));

        // rclone copy, both ways.
        if let (Some((env, root)), None) = (&t.rclone, &t.rclone_skip) {
            let remote = format!("{root}/{corpus}-rclone-{i}");
            make_folders(t, src, &format!("{corpus}-rclone-{i}"))?;
            let rclone = |from: &OsStr, to: &OsStr| {
                let mut c = Command::new("rclone");
                c.env_remove("AWS_CA_BUNDLE")
                    .envs(env.iter().map(|(k, v)| (k, v)))
                    .args(["copy", "--transfers", "8", "-q"])
                    .arg(from)
                    .arg(to);
                c
            };
            let s = run(&mut rclone(src.as_os_str(), OsStr::new(&remote)))?;
            self.record(tn, corpus, "rclone", "put", s);
            let out = dl("rclone");
            let s = run(&mut rclone(OsStr::new(&remote), out.as_os_str()))?;
            verify("rclone copy down", expected, &out)?;
            self.record(tn, corpus, "rclone", "get", s);
            let _ = fs::remove_dir_all(&out);
            let mut purge = Command::new("rclone");
            purge
                .env_remove("AWS_CA_BUNDLE")
                .envs(env.iter().map(|(k, v)| (k, v)))
                .args(["purge", "-q", &remote]);
            let _ = run(&mut purge);
        }

        // Prefect's own put_directory / get_directory, timed inside Python around the call.
        if let (Some(python), Some((basepath, endpoint))) = (self.prefect.clone(), &t.prefect)
            && corpus != "big"
        {
            let remote = format!("{corpus}-prefect-{i}");
            let prefect = |op: &str, local: &Path| {
                let mut c = Command::new(&python);
                c.arg(prefect_script())
                    .arg(op)
                    .arg(local)
                    .arg(basepath)
                    .arg(&remote)
                    .args(endpoint.iter())
                    .env("PREFECT_HOME", work.join("prefect-home"))
                    .env("PREFECT_LOGGING_LEVEL", "WARNING");
                c
            };
            let inside = |s: Sample| -> Result<Sample, String> {
                let secs = s
                    .out
                    .trim()
                    .parse::<f64>()
                    .map_err(|_| format!("prefect printed no timing: {:?}", s.out.trim()))?;
                Ok(Sample { secs, ..s })
            };
            let s = inside(run(&mut prefect("put", src))?)?;
            self.record(tn, corpus, "prefect", "put", s);
            let out = dl("prefect");
            let s = inside(run(&mut prefect("get", &out))?)?;
            verify("prefect get_directory", expected, &out)?;
            self.record(tn, corpus, "prefect", "get", s);
            let _ = fs::remove_dir_all(&out);
        }

        // The local limit: tar + zstd, and cp -a.
        if tn == "local" {
            let archive = work.join(format!("{corpus}-{i}.tar.zst"));
            let a = archive.to_string_lossy();
            let s = run(&mut sh(
                &format!("tar -cf - . | zstd -q -3 -T0 > '{a}'"),
                src,
            ))?;
            self.record(tn, corpus, "tar+zstd", "put", s);
            let out = dl("tar");
            fs::create_dir_all(&out).map_err(|e| e.to_string())?;
            let s = run(&mut sh(&format!("zstd -q -dc '{a}' | tar -xf -"), &out))?;
            verify("zstd -dc | tar -x", expected, &out)?;
            self.record(tn, corpus, "tar+zstd", "get", s);
            let _ = fs::remove_dir_all(&out);
            let _ = fs::remove_file(&archive);

            let out = dl("cp");
            let s = run(Command::new("cp").arg("-a").arg(src).arg(&out))?;
            verify("cp -a", expected, &out)?;
            self.record(tn, corpus, "cp -a", "copy", s);
            let _ = fs::remove_dir_all(&out);
        }
        if corpus == "flow" {
            self.formats_run(t, home, src, i, work, &["1", "2", "3"])?;
            self.delta_run(t, home, src, i, work)?;
        }
        Ok(())
    }

    /// Cold put and cold get (no agent cache) of `flow` in each package format, one after
    /// another in the same run, with the requests and bytes each moved on the wire.
    pub(crate) fn formats_run(
        &mut self,
        t: &Target,
        home: &Path,
        src: &Path,
        i: usize,
        work: &Path,
        formats: &[&str],
    ) -> Result<(), String> {
        let tn = t.name.as_str();
        let (base, proxy) = match &t.wire {
            Some(w) => (w.block.0.clone(), Some(&w.proxy)),
            None => (t.block.0.clone(), None),
        };
        let expected = digest_tree(src);
        for &format in formats {
            let tool = format!("blockctl format {format}");
            let slug = format!("{base}/flow-format{format}-{i}");
            let wire = || proxy.map_or((0, 0, 0), |p| (p.requests(), p.carried().0, p.carried().1));
            let (r0, up0, _) = wire();
            let s = run(self
                .blockctl(home)
                .args(["put", "--format", format])
                .arg(src)
                .arg(&slug))?;
            let (r1, up1, down1) = wire();
            self.record(tn, "flow", &tool, "cold put", s);
            let out = work.join(format!("format{format}-{tn}-{i}"));
            let _ = fs::remove_dir_all(&out);
            let s = run(self
                .blockctl(home)
                .args(["get", "--no-cache"])
                .arg(&slug)
                .arg(&out))?;
            let (r2, _, down2) = wire();
            verify(&format!("get of format {format}"), &expected, &out)?;
            self.record(tn, "flow", &tool, "cold get", s);
            if proxy.is_some() {
                self.bytes(tn, &tool, "cold put requests", r1 - r0);
                self.bytes(tn, &tool, "cold put up", up1 - up0);
                self.bytes(tn, &tool, "cold get requests", r2 - r1);
                self.bytes(tn, &tool, "cold get down", down2 - down1);
            }
            let _ = fs::remove_dir_all(&out);
            let _ = run(self.blockctl(home).arg("rm").arg(&slug));
        }
        Ok(())
    }

    /// Peer time / blockctl (package layout) time for the same target, corpus and op.
    pub(crate) fn ratio(&self, r: &Row) -> Option<f64> {
        if r.tool == "blockctl package" {
            return None;
        }
        let op = if r.op == "copy" { "get" } else { r.op.as_str() };
        let base = self.rows.iter().find(|b| {
            b.tool == "blockctl package"
                && b.target == r.target
                && b.corpus == r.corpus
                && b.op == op
        })?;
        Some(median(&r.secs) / median(&base.secs))
    }
}

/// Makes `src`'s folder tree under the target's `rclone_folders`, as `name`, where rclone needs
/// it made for it.
fn make_folders(t: &Target, src: &Path, name: &str) -> Result<(), String> {
    fn mirror(from: &Path, to: &Path) -> std::io::Result<()> {
        fs::create_dir_all(to)?;
        for entry in fs::read_dir(from)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                mirror(&entry.path(), &to.join(entry.file_name()))?;
            }
        }
        Ok(())
    }
    match &t.rclone_folders {
        Some(base) => mirror(src, &base.join(name))
            .map_err(|e| format!("making rclone's folders for {name}: {e}")),
        None => Ok(()),
    }
}
