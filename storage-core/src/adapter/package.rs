//! The package layout: a manifest per version (format 2: compressed, listing content-addressed
//! frames; format 1: plain JSON beside one archive), HEAD naming the current one; upload with
//! HEAD swapped last (conditionally where the store can), verified download, and one file
//! read from the frames that hold it.

use std::sync::atomic::Ordering;

use crate::framecache::{FrameCache, FrameCounts};
use crate::manifest::{FRAMES_FORMAT, Frame, MANIFEST_FORMAT};
use crate::pack::{DEFAULT_LEVEL, placed, write_package};

use super::*;

impl ObjectStoreBlock {
    pub(super) fn package_key(&self, at: &BlockPath, version: &str) -> Result<ObjPath> {
        self.key(at, &format!(".blocks/packages/{version}.tar.zst"))
    }

    /// Format 1's manifest (plain JSON).
    pub(super) fn manifest_key(&self, at: &BlockPath, version: &str) -> Result<ObjPath> {
        self.key(at, &format!(".blocks/manifests/{version}.json"))
    }

    /// Format 2's manifest (zstd-compressed JSON).
    pub(super) fn manifest_zst_key(&self, at: &BlockPath, version: &str) -> Result<ObjPath> {
        self.key(at, &format!(".blocks/manifests/{version}.json.zst"))
    }

    pub(super) async fn read_head(
        &self,
        at: &BlockPath,
    ) -> Result<Option<(HeadRecord, UpdateVersion)>> {
        let got = match self.store.get(&self.key(at, HEAD)?).await {
            Ok(g) => g,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.fail(at)(e)),
        };
        let tag = UpdateVersion {
            e_tag: got.meta.e_tag.clone(),
            version: got.meta.version.clone(),
        };
        let bytes = got.bytes().await.map_err(self.fail(at))?;
        let head = HeadRecord::parse(&bytes, &self.slug(at))?;
        Ok(Some((head, tag)))
    }

    /// HEAD is exactly `head` (same version, same timestamp): the record this put wrote.
    async fn head_is(&self, at: &BlockPath, head: &HeadRecord) -> bool {
        matches!(self.read_head(at).await, Ok(Some((h, _))) if h == *head)
    }

    /// The manifest of `version`, format 2 or 1, checked against its id.
    pub(super) async fn read_manifest(
        &self,
        at: &BlockPath,
        version: &str,
    ) -> Result<PackageManifest> {
        Ok(self.read_manifest_sized(at, version).await?.0)
    }

    /// The manifest and its stored size in bytes.
    pub(super) async fn read_manifest_sized(
        &self,
        at: &BlockPath,
        version: &str,
    ) -> Result<(PackageManifest, u64)> {
        for (key, compressed) in [
            (self.manifest_zst_key(at, version)?, true),
            (self.manifest_key(at, version)?, false),
        ] {
            let bytes = match self.store.get(&key).await {
                Ok(g) => g.bytes().await.map_err(self.fail(at))?,
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(self.fail(at)(e)),
            };
            let manifest = PackageManifest::parse_stored(&bytes, compressed, version)
                .map_err(|e| e.context(self.slug(at)))?;
            return Ok((manifest, bytes.len() as u64));
        }
        Err(Error::NotFound(format!(
            "{}: version {} has no manifest (is it deleted or incomplete?)",
            self.slug(at),
            short(version)
        )))
    }

    /// Every version id that has a manifest at `at`.
    pub(super) async fn stored_versions(
        &self,
        at: &BlockPath,
    ) -> Result<Vec<(String, ObjectMeta)>> {
        let prefix = self.key(at, ".blocks/manifests")?;
        let metas: Vec<ObjectMeta> = self
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(self.fail(at))?;
        Ok(metas
            .into_iter()
            .filter_map(|m| {
                let file = m.location.filename()?;
                let name = file
                    .strip_suffix(".json.zst")
                    .or_else(|| file.strip_suffix(".json"))?
                    .to_string();
                is_version_id(&name).then_some((name, m))
            })
            .collect())
    }

    /// A full version id from an id or a unique prefix of one stored at `at`.
    pub(super) async fn resolve_version(&self, at: &BlockPath, wanted: &str) -> Result<String> {
        let known = if is_version_id(wanted) || wanted.len() < 4 {
            Vec::new()
        } else {
            self.stored_versions(at).await?
        };
        crate::manifest::resolve_version(wanted, known.into_iter().map(|(v, _)| v))
            .map_err(|e| e.context(self.slug(at)))
    }

    pub(super) async fn put_package(
        &self,
        tree: SourceTree,
        to: &BlockPath,
        opts: &PutOptions,
    ) -> Result<PutReport> {
        let slug = self.slug(to);
        let version = tree.version_id();
        let report = PutReport {
            version: Some(version.clone()),
            layout: Layout::Package,
            files: tree.file_count(),
            bytes: tree.file_bytes(),
            skipped: true,
            warnings: tree.warnings.clone(),
            ..PutReport::default()
        };
        let head = self.read_head(to).await?;
        let precondition = match (&opts.if_version, &head) {
            (None, _) => PutMode::Overwrite,
            (Some(VersionPrecondition::NoVersion), None) => PutMode::Create,
            (Some(VersionPrecondition::Current(want)), Some((h, tag)))
                if h.version.starts_with(want.as_str()) && want.len() >= 4 =>
            {
                PutMode::Update(tag.clone())
            }
            (Some(_), current) => {
                let current = current
                    .as_ref()
                    .map_or("none".to_string(), |(h, _)| short(&h.version).to_string());
                return Err(Error::Conflict(format!(
                    "{slug}: --if-version does not hold: the current version is {current}"
                )));
            }
        };
        if head.as_ref().is_some_and(|(h, _)| h.version == version) {
            return Ok(report);
        }

        // Declared before anything is looked up or written, so that no gc removes what
        // this put reuses or writes (see `gc.rs`).
        let intent = self.declare_intent(to).await?;
        let result = self
            .store_version(to, &version, tree, precondition, report, opts)
            .await;
        self.withdraw_intent(intent).await;
        result
    }

    /// The part of a put that runs under its intent: frames and manifest unless the
    /// version is stored already, then the HEAD swap.
    async fn store_version(
        &self,
        to: &BlockPath,
        version: &str,
        tree: SourceTree,
        precondition: PutMode,
        mut report: PutReport,
        opts: &PutOptions,
    ) -> Result<PutReport> {
        let slug = self.slug(to);
        // A gc that began before the intent may be removing this version: let it finish.
        self.wait_for_gc(to).await?;
        let stored = self
            .exists(to, &self.manifest_zst_key(to, version)?)
            .await?
            || (self.exists(to, &self.manifest_key(to, version)?).await?
                && self.exists(to, &self.package_key(to, version)?).await?);
        if !stored {
            report.skipped = false;
            emit(
                &opts.progress,
                ProgressEvent::Phase {
                    name: "uploading",
                    total: Some(report.bytes),
                },
            );
            if opts.format == PackageFormat::Archive {
                report.uploaded_bytes = self.put_archive(to, version, tree.entries, opts).await?;
            } else {
                let sent = self.put_frames(to, version, tree.entries, opts).await?;
                report.uploaded_bytes = sent.bytes;
                report.frames_uploaded = sent.frames_uploaded;
                report.frames_reused = sent.frames_reused;
            }
        }

        emit(
            &opts.progress,
            ProgressEvent::Phase {
                name: "committing",
                total: None,
            },
        );
        let head = HeadRecord {
            version: version.to_string(),
            updated: now(),
        };
        let body = serde_json::to_vec(&head).expect("HEAD serializes");
        let opts_head = StorePutOptions {
            mode: precondition,
            ..Default::default()
        };
        match self
            .store
            .put_opts(&self.key(to, HEAD)?, body.into(), opts_head)
            .await
        {
            Ok(_) => {}
            // The swap landed but its response was lost: the client's retry then met the
            // precondition our own write had changed, or it gave up. HEAD holding exactly
            // the record this put wrote is our success either way.
            Err(e) if self.head_is(to, &head).await => {
                tracing::debug!(slug, error = %e, "HEAD swap answered with an error, but HEAD is ours");
            }
            Err(
                object_store::Error::Precondition { .. }
                | object_store::Error::AlreadyExists { .. },
            ) => {
                return Err(Error::Conflict(format!(
                    "{slug}: another put changed the current version first; version {} is stored but not current",
                    short(version)
                )));
            }
            Err(e) => return Err(self.fail(to)(e)),
        }
        emit(&opts.progress, ProgressEvent::Done);
        Ok(report)
    }

    /// Format 1: the whole tree as one archive (a tracked multipart upload when large), then
    /// its JSON manifest. Returns the bytes written.
    async fn put_archive(
        &self,
        to: &BlockPath,
        version: &str,
        entries: Vec<crate::tree::SourceEntry>,
        opts: &PutOptions,
    ) -> Result<u64> {
        let (tx, rx) = mpsc::channel::<Bytes>(8);
        let entries = Arc::new(entries);
        let packer_entries = entries.clone();
        let progress = opts.progress.clone();
        let packer = tokio::task::spawn_blocking(move || {
            let mut out = ChunkWriter::new(tx);
            let layout = write_package(&packer_entries, DEFAULT_LEVEL, &mut out, |n| {
                emit(&progress, ProgressEvent::Advance(n))
            })?;
            std::io::Write::flush(&mut out).map_err(|e| Error::io("writing the package", e))?;
            Ok(layout)
        });
        let key = self.package_key(to, version)?;
        let (layout, _) = self.upload(to, &key, rx, packer, true).await?;
        let records = placed(&entries, &layout.placements);
        let manifest = PackageManifest {
            format: MANIFEST_FORMAT,
            version: version.to_string(),
            created: now(),
            compression: "zstd".into(),
            totals: Totals::count(&records, layout.package_bytes),
            frames: layout.frames,
            entries: records,
            record: opts.record.clone(),
        };
        let body = manifest.to_json();
        let len = body.len() as u64;
        self.store
            .put(&self.manifest_key(to, version)?, body.into())
            .await
            .map_err(self.fail(to))?;
        Ok(layout.package_bytes + len)
    }

    /// Unpacks `version` (its `subtree`) into `staging`; `dest` is where it will go, whose
    /// unchanged files a `--replace` takes over.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn get_package(
        &self,
        at: &BlockPath,
        version: &str,
        subtree: &str,
        staging: &Path,
        dest: &Path,
        opts: &GetOptions,
    ) -> Result<GetReport> {
        let manifest = self.read_manifest(at, version).await?;
        if !subtree.is_empty()
            && !manifest
                .entries
                .iter()
                .any(|e| e.path == subtree || e.path.starts_with(&format!("{subtree}/")))
        {
            return Err(Error::NotFound(format!(
                "{}: no such path in version {}",
                self.slug(&BlockPath::parse(&at.join(subtree))?),
                short(version)
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
        let on_bytes = Box::new(move |n| emit(&progress, ProgressEvent::Advance(n)));
        let counts = Arc::new(FrameCounts::default());
        let cache = FrameCache::for_get(opts.no_cache, opts.cache_dir.as_deref());
        let (reader, failure): (Box<dyn Read + Send>, _) = if manifest.format == FRAMES_FORMAT {
            let stream =
                self.frame_stream(at, manifest.frames.clone(), cache.clone(), counts.clone());
            let (r, f) = StreamReader::new(tokio::runtime::Handle::current(), stream, on_bytes);
            (Box::new(r), f)
        } else {
            let key = self.package_key(at, version)?;
            let got = self.store.get(&key).await.map_err(|e| match e {
                object_store::Error::NotFound { .. } => Error::Integrity(format!(
                    "{}: the package of version {} is missing",
                    self.slug(at),
                    short(version)
                )),
                e => self.fail(at)(e),
            })?;
            let range = got.range.clone();
            match got.payload {
                // A local file is read directly: its stream form hands over 8 KiB at a time
                // through a blocking task each, which took longer than unpacking.
                GetResultPayload::File(file, _) => (
                    Box::new(FileRange::new(file, range, on_bytes)),
                    Arc::new(std::sync::Mutex::new(None)),
                ),
                GetResultPayload::Stream(stream) => {
                    let stream = stream.map_err(Error::from_store).boxed();
                    let (r, f) =
                        StreamReader::new(tokio::runtime::Handle::current(), stream, on_bytes);
                    (Box::new(r), f)
                }
            }
        };
        let staging = staging.to_path_buf();
        let subtree = subtree.to_string();
        let slug = self.slug(at);
        let secrets = self.secrets.clone();
        let previous = (opts.mode == GetMode::Replace && dest.is_dir()).then(|| dest.to_path_buf());
        let done = tokio::task::spawn_blocking(move || {
            let result = unpack_verified_over(
                reader,
                &manifest,
                &staging,
                &subtree,
                previous.as_deref(),
                |_| {},
            );
            match (result, failure.lock().expect("failure slot").take()) {
                (Err(_), Some(transfer)) => Err(scrub_error(transfer, &secrets).context(&slug)),
                (r, _) => r.map_err(|e| e.context(&slug)),
            }
        })
        .await??;
        tokio::task::spawn_blocking(move || cache.trim()).await?;
        emit(&opts.progress, ProgressEvent::Done);
        Ok(GetReport {
            version: Some(version.to_string()),
            layout: Layout::Package,
            files: done.files,
            bytes: done.bytes,
            downloaded_bytes: counts.downloaded_bytes.load(Ordering::Relaxed),
            frames_downloaded: counts.downloaded.load(Ordering::Relaxed),
            frames_cached: counts.cached.load(Ordering::Relaxed),
            files_linked: done.linked,
        })
    }

    /// One file of a package: the frames that hold it (format 2: fetched by name, through
    /// the cache; format 1: one ranged read of the package), checked by sha256.
    pub(super) async fn read_package_file(
        &self,
        at: &BlockPath,
        version: &str,
        rel: &str,
    ) -> Result<Bytes> {
        let manifest = self.read_manifest(at, version).await?;
        let slug = self.slug(at);
        let index = manifest
            .entries
            .iter()
            .position(|e| e.path == rel)
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "{slug}: no file {rel} in version {}",
                    short(version)
                ))
            })?;
        let entry = manifest.entries[index].clone();
        if entry.kind != EntryKind::File {
            return Err(Error::Usage(
                format!("{slug}: {rel} is a {:?}, not a file", entry.kind).to_lowercase(),
            ));
        }
        let needed = manifest.frames_of_entry(index);
        let Some(start_frame) = needed.first().cloned() else {
            return Err(Error::Integrity(format!(
                "{slug}: {rel}: no frame holds it"
            )));
        };
        let compressed: Bytes = if manifest.format == FRAMES_FORMAT {
            let counts = FrameCounts::default();
            let cache = FrameCache::open(true);
            let mut all = Vec::new();
            for f in &needed {
                let data = self
                    .fetch_frame(at, f, &cache, &counts)
                    .await
                    .map_err(|e| e.context(&slug))?;
                all.extend_from_slice(&data);
            }
            all.into()
        } else {
            let last = needed.last().expect("one frame at least");
            self.store
                .get_range(
                    &self.package_key(at, version)?,
                    start_frame.offset..last.offset + last.length,
                )
                .await
                .map_err(self.fail(at))?
        };
        let rel = rel.to_string();
        tokio::task::spawn_blocking(move || {
            crate::extract::file_in_frames(&entry, &start_frame, &compressed)
                .map_err(|why| Error::Integrity(format!("{slug}: {rel}: {why}")))
        })
        .await?
    }

    /// The frames of a format-2 version, in order, verified, `IN_FLIGHT` at a time.
    pub(super) fn frame_stream(
        &self,
        at: &BlockPath,
        frames: Vec<Frame>,
        cache: FrameCache,
        counts: Arc<FrameCounts>,
    ) -> futures::stream::BoxStream<'static, Result<Bytes>> {
        let (block, at) = (self.clone(), at.clone());
        stream::iter(frames)
            .map(move |f| {
                let (block, at, cache, counts) =
                    (block.clone(), at.clone(), cache.clone(), counts.clone());
                async move { block.fetch_frame(&at, &f, &cache, &counts).await }
            })
            .buffered(super::frames::IN_FLIGHT)
            .boxed()
    }
}
