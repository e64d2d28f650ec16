//! The transfers of a version: a put packs and pushes the frames the repository lacks, then
//! tags the artifact with its version and moves `current`; a get fetches the frames (from
//! the agent cache where it can) many in flight, each checked, into the verified extraction;
//! `cat` reads the frames that hold one file.

use super::*;
use storage_core::block::emit;

impl OciBlock {
    /// One frame's verified bytes: from the cache, else fetched (its digest checked as it
    /// arrives and its sha256 again before use) and cached.
    async fn fetch_frame(
        &self,
        repo: &str,
        frame: &Frame,
        cache: &FrameCache,
        counts: &FrameCounts,
    ) -> Result<Bytes> {
        let sha = frame.sha256.clone().unwrap_or_default();
        let download = async {
            match self.registry().blob(repo, &format!("sha256:{sha}")).await {
                Err(Error::NotFound(_)) => Ok(None),
                other => other.map(Some),
            }
        };
        fetch_verified(cache, counts, &sha, "registry", download).await
    }

    /// The frames of a version, in order, verified, `IN_FLIGHT` at a time.
    pub(super) fn frame_stream(
        &self,
        repo: &str,
        frames: Vec<Frame>,
        cache: FrameCache,
        counts: Arc<FrameCounts>,
    ) -> futures::stream::BoxStream<'static, Result<Bytes>> {
        let (block, repo) = (self.clone(), repo.to_string());
        stream::iter(frames)
            .map(move |f| {
                let (block, repo, cache, counts) =
                    (block.clone(), repo.clone(), cache.clone(), counts.clone());
                async move { block.fetch_frame(&repo, &f, &cache, &counts).await }
            })
            .buffered(IN_FLIGHT)
            .boxed()
    }

    pub(super) async fn put_package(
        &self,
        src: &Path,
        to: &BlockPath,
        opts: &PutOptions,
    ) -> Result<PutReport> {
        let repo = self.repo(to)?;
        let scan = ScanOptions {
            ignore_file: opts.ignore_file.clone(),
            no_default_ignores: opts.no_default_ignores,
            follow_symlinks: opts.follow_symlinks,
        };
        emit(
            &opts.progress,
            ProgressEvent::Phase {
                name: "scanning",
                total: None,
            },
        );
        let src = src.to_path_buf();
        let tree = tokio::task::spawn_blocking(move || {
            let mut tree = SourceTree::scan(&src, &scan)?;
            tree.hash_files_cached(&storage_core::hashcache::HashCache::open(&src))?;
            Ok::<_, Error>(tree)
        })
        .await??;
        for w in &tree.warnings {
            emit(&opts.progress, ProgressEvent::Warning(w.clone()));
        }
        let version = tree.version_id();
        let mut report = PutReport {
            version: Some(version.clone()),
            layout: Layout::Package,
            files: tree.file_count(),
            bytes: tree.file_bytes(),
            skipped: true,
            warnings: tree.warnings.clone(),
            ..PutReport::default()
        };
        if self
            .current(&repo)
            .await?
            .is_some_and(|c| c.version == version)
        {
            return Ok(report);
        }
        // A version already stored is made current again without sending anything.
        let (image, existed) = match self.registry().manifest(&repo, &version).await? {
            Some((image, _)) if artifact::version_of(&image) == Some(version.as_str()) => {
                (image, true)
            }
            _ => {
                report.skipped = false;
                emit(
                    &opts.progress,
                    ProgressEvent::Phase {
                        name: "uploading",
                        total: Some(report.bytes),
                    },
                );
                let sent = artifact::push_frames(
                    self.registry(),
                    &repo,
                    &version,
                    now(),
                    tree.entries,
                    opts.progress.clone(),
                )
                .await?;
                let manifest = sent.manifest.expect("a pushed version has a manifest");
                let image = artifact::image_manifest(&manifest, &sent.config);
                let body = serde_json::to_vec(&image).expect("a manifest serializes");
                report.uploaded_bytes = sent.bytes + body.len() as u64;
                report.frames_uploaded = sent.frames_uploaded;
                report.frames_reused = sent.frames_reused;
                self.registry()
                    .push_manifest_bytes(&repo, &version, body)
                    .await?;
                (image, false)
            }
        };
        // Last, as HEAD: readers see the new version only once all of it is there. Its
        // manifest differs from the version tag's by one annotation, so that deleting an old
        // version by digest can never take `current` with it.
        let current = artifact::as_current(&image);
        self.registry()
            .push_manifest_bytes(
                &repo,
                CURRENT,
                serde_json::to_vec(&current).expect("a manifest serializes"),
            )
            .await?;
        if existed {
            // A gc that dropped this old version meanwhile deleted its manifest, and with it
            // the version tag: tag it again, now that it is current.
            let body = serde_json::to_vec(&image).expect("a manifest serializes");
            self.registry()
                .push_manifest_bytes(&repo, &version, body)
                .await?;
        }
        emit(&opts.progress, ProgressEvent::Done);
        Ok(report)
    }

    pub(super) async fn get_package(
        &self,
        found: Artifact,
        subtree: &str,
        staging: &Path,
        dest: &Path,
        opts: &GetOptions,
    ) -> Result<GetReport> {
        let manifest = self.manifest_of(&found).await?;
        if !subtree.is_empty()
            && !manifest
                .entries
                .iter()
                .any(|e| e.path == subtree || e.path.starts_with(&format!("{subtree}/")))
        {
            return Err(Error::NotFound(format!(
                "no such path in version {}",
                short(&found.version)
            )));
        }
        emit(
            &opts.progress,
            ProgressEvent::Phase {
                name: "downloading",
                total: Some(manifest.totals.package_bytes),
            },
        );
        let progress = opts.progress.clone();
        let on_bytes = Box::new(move |n| {
            if let Some(p) = &progress {
                p.event(ProgressEvent::Advance(n));
            }
        });
        let counts = Arc::new(FrameCounts::default());
        let cache = FrameCache::for_get(opts.no_cache, opts.cache_dir.as_deref());
        let stream = self.frame_stream(
            &found.repo,
            manifest.frames.clone(),
            cache.clone(),
            counts.clone(),
        );
        let (reader, failure) =
            StreamReader::new(tokio::runtime::Handle::current(), stream, on_bytes);
        let (staging, subtree) = (staging.to_path_buf(), subtree.to_string());
        let previous = (opts.mode == GetMode::Replace && dest.is_dir()).then(|| dest.to_path_buf());
        let done = tokio::task::spawn_blocking(move || {
            let reader: Box<dyn Read + Send> = Box::new(reader);
            let result = unpack_verified_over(
                reader,
                &manifest,
                &staging,
                &subtree,
                previous.as_deref(),
                |_| {},
            );
            match (result, failure.lock().expect("failure slot").take()) {
                (Err(_), Some(transfer)) => Err(transfer),
                (r, _) => r,
            }
        })
        .await??;
        tokio::task::spawn_blocking(move || cache.trim()).await?;
        emit(&opts.progress, ProgressEvent::Done);
        Ok(GetReport {
            version: Some(found.version),
            layout: Layout::Package,
            files: done.files,
            bytes: done.bytes,
            downloaded_bytes: counts.downloaded_bytes.load(Ordering::Relaxed),
            frames_downloaded: counts.downloaded.load(Ordering::Relaxed),
            frames_cached: counts.cached.load(Ordering::Relaxed),
            files_linked: done.linked,
        })
    }

    /// One file of the current version of `found`.
    pub(super) async fn read_file(&self, found: &Artifact, rel: &str) -> Result<Bytes> {
        let manifest = self.manifest_of(found).await?;
        let index = manifest
            .entries
            .iter()
            .position(|e| e.path == rel)
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "no file {rel} in version {}",
                    short(&found.version)
                ))
            })?;
        let entry = manifest.entries[index].clone();
        if entry.kind != EntryKind::File {
            return Err(Error::Usage(
                format!("{rel} is a {:?}, not a file", entry.kind).to_lowercase(),
            ));
        }
        let needed = manifest.frames_of_entry(index);
        let Some(first) = needed.first().cloned() else {
            return Err(Error::Integrity(format!("{rel}: no frame holds it")));
        };
        let (cache, counts) = (FrameCache::open(true), FrameCounts::default());
        let mut compressed = Vec::new();
        for f in &needed {
            compressed.extend_from_slice(&self.fetch_frame(&found.repo, f, &cache, &counts).await?);
        }
        let rel = rel.to_string();
        tokio::task::spawn_blocking(move || {
            file_in_frames(&entry, &first, &compressed)
                .map_err(|why| Error::Integrity(format!("{rel}: {why}")))
        })
        .await?
    }
}

fn now() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}
