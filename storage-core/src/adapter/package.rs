//! The package layout: one archive and one manifest per version, HEAD naming the current
//! one; upload with HEAD swapped last (conditionally where the store can), verified download,
//! and one file read by a ranged read of its frame.

use super::*;

impl ObjectStoreBlock {
    pub(super) fn package_key(&self, at: &BlockPath, version: &str) -> Result<ObjPath> {
        self.key(at, &format!(".blocks/packages/{version}.tar.zst"))
    }

    pub(super) fn manifest_key(&self, at: &BlockPath, version: &str) -> Result<ObjPath> {
        self.key(at, &format!(".blocks/manifests/{version}.json"))
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

    pub(super) async fn read_manifest(
        &self,
        at: &BlockPath,
        version: &str,
    ) -> Result<PackageManifest> {
        let key = self.manifest_key(at, version)?;
        let bytes = match self.store.get(&key).await {
            Ok(g) => g.bytes().await.map_err(self.fail(at))?,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(Error::NotFound(format!(
                    "{}: version {} has no manifest (is it deleted or incomplete?)",
                    self.slug(at),
                    short(version)
                )));
            }
            Err(e) => return Err(self.fail(at)(e)),
        };
        PackageManifest::parse(&bytes, version).map_err(|e| e.context(self.slug(at)))
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
                let name = m.location.filename()?.strip_suffix(".json")?.to_string();
                is_version_id(&name).then_some((name, m))
            })
            .collect())
    }

    /// A full version id from an id or a unique prefix of at least 4 characters.
    pub(super) async fn resolve_version(&self, at: &BlockPath, wanted: &str) -> Result<String> {
        if is_version_id(wanted) {
            return Ok(wanted.to_string());
        }
        if wanted.len() < 4 {
            return Err(Error::Usage(format!(
                "version `{wanted}` is too short; give at least 4 characters"
            )));
        }
        let matches: Vec<String> = self
            .stored_versions(at)
            .await?
            .into_iter()
            .map(|(v, _)| v)
            .filter(|v| v.starts_with(wanted))
            .collect();
        match matches.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(Error::NotFound(format!(
                "{}: no version {wanted}",
                self.slug(at)
            ))),
            _ => Err(Error::Usage(format!(
                "{}: version prefix {wanted} is ambiguous",
                self.slug(at)
            ))),
        }
    }

    pub(super) async fn put_package(
        &self,
        tree: SourceTree,
        to: &BlockPath,
        opts: &PutOptions,
    ) -> Result<PutReport> {
        let slug = self.slug(to);
        let version = tree.version_id();
        let mut report = PutReport {
            version: Some(version.clone()),
            layout: Layout::Package,
            files: tree.file_count(),
            bytes: tree.file_bytes(),
            skipped: true,
            warnings: tree.warnings.clone(),
        };
        if opts.if_version.is_some() && !self.caps.compare_and_swap {
            return Err(Error::Unsupported(format!(
                "{slug}: this backend cannot swap versions conditionally"
            )));
        }
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

        let manifest_key = self.manifest_key(to, &version)?;
        let package_key = self.package_key(to, &version)?;
        if !(self.exists(to, &manifest_key).await? && self.exists(to, &package_key).await?) {
            report.skipped = false;
            emit(
                &opts.progress,
                ProgressEvent::Phase {
                    name: "uploading",
                    total: Some(report.bytes),
                },
            );
            let (tx, rx) = mpsc::channel::<Bytes>(8);
            let entries = Arc::new(tree.entries);
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
            let (layout, _) = self.upload(to, &package_key, rx, packer, true).await?;

            let records: Vec<_> = entries
                .iter()
                .zip(&layout.placements)
                .map(|(e, &(frame, offset))| ManifestEntry {
                    frame,
                    offset,
                    ..e.record.clone()
                })
                .collect();
            let totals = Totals::count(&records, layout.package_bytes);
            let manifest = PackageManifest {
                format: MANIFEST_FORMAT,
                version: version.clone(),
                created: now(),
                compression: "zstd".into(),
                totals,
                frames: layout.frames,
                entries: records,
            };
            self.store
                .put(&manifest_key, manifest.to_json().into())
                .await
                .map_err(self.fail(to))?;
        }

        let head = HeadRecord {
            version: version.clone(),
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
            Err(
                object_store::Error::Precondition { .. }
                | object_store::Error::AlreadyExists { .. },
            ) => {
                return Err(Error::Conflict(format!(
                    "{slug}: another put changed the current version first; version {} is stored but not current",
                    short(&version)
                )));
            }
            Err(e) => return Err(self.fail(to)(e)),
        }
        emit(&opts.progress, ProgressEvent::Done);
        Ok(report)
    }

    pub(super) async fn get_package(
        &self,
        at: &BlockPath,
        version: &str,
        subtree: &str,
        staging: &Path,
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
        let key = self.package_key(at, version)?;
        let got = self.store.get(&key).await.map_err(|e| match e {
            object_store::Error::NotFound { .. } => Error::Integrity(format!(
                "{}: the package of version {} is missing",
                self.slug(at),
                short(version)
            )),
            e => self.fail(at)(e),
        })?;
        emit(
            &opts.progress,
            ProgressEvent::Phase {
                name: "downloading",
                total: Some(manifest.totals.package_bytes),
            },
        );
        let progress = opts.progress.clone();
        let on_bytes = Box::new(move |n| emit(&progress, ProgressEvent::Advance(n)));
        let range = got.range.clone();
        let (reader, failure): (Box<dyn Read + Send>, _) = match got.payload {
            // A local file is read directly: its stream form hands over 8 KiB at a time
            // through a blocking task each, which took longer than unpacking.
            GetResultPayload::File(file, _) => (
                Box::new(FileRange::new(file, range, on_bytes)),
                Arc::new(std::sync::Mutex::new(None)),
            ),
            GetResultPayload::Stream(stream) => {
                let (r, f) = StreamReader::new(tokio::runtime::Handle::current(), stream, on_bytes);
                (Box::new(r), f)
            }
        };
        let staging = staging.to_path_buf();
        let subtree = subtree.to_string();
        let slug = self.slug(at);
        let secrets = self.secrets.clone();
        let done = tokio::task::spawn_blocking(move || {
            let result = unpack_verified(reader, &manifest, &staging, &subtree, |_| {});
            match (result, failure.lock().expect("failure slot").take()) {
                (Err(_), Some(transfer)) => Err(scrub_error(transfer, &secrets).context(&slug)),
                (r, _) => r.map_err(|e| e.context(&slug)),
            }
        })
        .await??;
        emit(&opts.progress, ProgressEvent::Done);
        Ok(GetReport {
            version: Some(version.to_string()),
            layout: Layout::Package,
            files: done.files,
            bytes: done.bytes,
        })
    }

    /// One file of a package: a ranged read of the frame that holds it, checked by sha256.
    pub(super) async fn read_package_file(
        &self,
        at: &BlockPath,
        version: &str,
        rel: &str,
    ) -> Result<Bytes> {
        let manifest = self.read_manifest(at, version).await?;
        let slug = self.slug(at);
        let entry = manifest
            .entries
            .iter()
            .find(|e| e.path == rel)
            .ok_or_else(|| {
                Error::NotFound(format!(
                    "{slug}: no file {rel} in version {}",
                    short(version)
                ))
            })?
            .clone();
        if entry.kind != EntryKind::File {
            return Err(Error::Usage(
                format!("{slug}: {rel} is a {:?}, not a file", entry.kind).to_lowercase(),
            ));
        }
        let frame = manifest.frames[entry.frame as usize];
        let rel = rel.to_string();
        let key = self.package_key(at, version)?;
        let compressed = self
            .store
            .get_range(&key, frame.offset..frame.offset + frame.length)
            .await
            .map_err(self.fail(at))?;
        tokio::task::spawn_blocking(move || {
            let corrupt = |why: String| Error::Integrity(format!("{slug}: {rel}: {why}"));
            let data = zstd::stream::decode_all(&compressed[..])
                .map_err(|e| corrupt(format!("frame is corrupt: {e}")))?;
            let start = (entry.offset - frame.uncompressed_offset) as usize;
            let tail = data
                .get(start..)
                .ok_or_else(|| corrupt("offset outside its frame".into()))?;
            let mut archive = tar::Archive::new(tail);
            let mut first = archive
                .entries()
                .and_then(|mut it| it.next().transpose())
                .map_err(|e| corrupt(e.to_string()))?
                .ok_or_else(|| corrupt("no entry at its offset".into()))?;
            let mut out = Vec::with_capacity(entry.size as usize);
            first
                .read_to_end(&mut out)
                .map_err(|e| corrupt(e.to_string()))?;
            let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&out));
            if Some(&sha) != entry.sha256.as_ref() || out.len() as u64 != entry.size {
                return Err(corrupt("checksum mismatch: the package is corrupt".into()));
            }
            Ok(Bytes::from(out))
        })
        .await?
    }
}
