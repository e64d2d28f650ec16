//! The files layout: a plain mirror of the tree, one object per file, re-put by uploading only
//! what changed and removing what is stale; read back whenever a path has no HEAD.

use super::*;

impl ObjectStoreBlock {
    /// Files of a files layout under `at`: every object except those of `.blocks` folders.
    pub(super) async fn mirror_objects(&self, at: &BlockPath) -> Result<Vec<ObjectMeta>> {
        let prefix = self.key(at, "")?;
        let prefix = (!prefix.as_ref().is_empty()).then_some(prefix);
        let metas: Vec<ObjectMeta> = self
            .store
            .list(prefix.as_ref())
            .try_collect()
            .await
            .map_err(self.fail(at))?;
        Ok(metas
            .into_iter()
            .filter(|m| !m.location.parts().any(|p| p.as_ref() == BLOCKS_DIR))
            .collect())
    }

    pub(super) fn relative(&self, at: &BlockPath, meta: &ObjectMeta) -> Result<String> {
        let base = self.key(at, "")?;
        let rel: Vec<String> = meta
            .location
            .prefix_match(&base)
            .ok_or_else(|| {
                Error::Backend(format!("listing returned {} outside {base}", meta.location))
            })?
            .map(|p| p.as_ref().to_string())
            .collect();
        Ok(rel.join("/"))
    }

    pub(super) async fn put_files(
        &self,
        tree: SourceTree,
        to: &BlockPath,
        opts: &PutOptions,
    ) -> Result<PutReport> {
        let slug = self.slug(to);
        if self.read_head(to).await?.is_some() {
            return Err(Error::Conflict(format!(
                "{slug} holds a package layout; rm it first or put to another path"
            )));
        }
        let mut warnings = tree.warnings.clone();
        if !self.caps.files_keep_metadata {
            let dropped = tree
                .entries
                .iter()
                .filter(|e| e.record.kind == EntryKind::Symlink)
                .count();
            if dropped > 0 {
                warnings.push(format!(
                    "{dropped} symlink(s) left out: the files layout stores only files"
                ));
            }
        }
        let existing = self.mirror_objects(to).await?;
        let files: Vec<_> = tree
            .entries
            .into_iter()
            .filter(|e| e.record.kind == EntryKind::File)
            .collect();
        let total: u64 = files.iter().map(|e| e.record.size).sum();
        emit(
            &opts.progress,
            ProgressEvent::Phase {
                name: "uploading",
                total: Some(total),
            },
        );
        // On a store that folds case (SMB), `README.md` and `Readme.md` are one object: a
        // tree holding both cannot be mirrored, and the stale check must compare folded
        // names, or it would delete the file just written under its old spelling.
        let fold = |p: &str| {
            if self.caps.files_case_sensitive {
                p.to_string()
            } else {
                p.to_lowercase()
            }
        };
        let mut keep = std::collections::HashMap::<String, &str>::new();
        for e in &files {
            if let Some(other) = keep.insert(fold(&e.record.path), &e.record.path) {
                return Err(Error::Usage(format!(
                    "{slug}: `{other}` and `{}` differ only by case, which this store folds \
                     into one file; put with --layout package to keep both",
                    e.record.path
                )));
            }
        }
        let keep: std::collections::HashSet<String> = keep.into_keys().collect();
        let count = files.len() as u64;
        // What an earlier put from here uploaded: a file whose content is what was uploaded
        // then, and whose object still carries the ETag that upload got back, is skipped.
        let ledger = UploadLedger::open(&slug);
        let remote: std::collections::HashMap<String, (u64, Option<&str>)> = existing
            .iter()
            .filter_map(|m| {
                let rel = self.relative(to, m).ok()?;
                Some((rel, (m.size, m.e_tag.as_deref())))
            })
            .collect();
        let (files, unchanged): (Vec<_>, Vec<_>) = files.into_iter().partition(|e| {
            let sha = e.record.sha256.as_deref();
            let uploaded = sha.and_then(|sha| ledger.get(&e.record.path, sha, e.record.size));
            let stored = remote.get(&e.record.path);
            !matches!((uploaded, stored), (Some(tag), Some((size, Some(now))))
                if *size == e.record.size && same_etag(tag, now))
        });
        let skipped_bytes: u64 = unchanged.iter().map(|e| e.record.size).sum();
        let mut recorded: Vec<(String, String, u64, String)> = unchanged
            .iter()
            .filter_map(|e| {
                let sha = e.record.sha256.clone()?;
                let tag = ledger.get(&e.record.path, &sha, e.record.size)?.to_string();
                Some((e.record.path.clone(), sha, e.record.size, tag))
            })
            .collect();
        emit(&opts.progress, ProgressEvent::Advance(skipped_bytes));
        let nothing_to_upload = files.is_empty();
        let uploaded: Vec<Option<(String, String, u64, String)>> = stream::iter(files)
            .map(|e| async move {
                let key = self.key(to, &e.record.path)?;
                let tag = self
                    .upload_file(to, &key, &e.fs_path, e.record.size)
                    .await?;
                emit(&opts.progress, ProgressEvent::Advance(e.record.size));
                let record = |sha, tag| (e.record.path, sha, e.record.size, tag);
                Ok::<_, Error>(e.record.sha256.zip(tag).map(|(sha, tag)| record(sha, tag)))
            })
            .buffer_unordered(self.concurrency * 2)
            .try_collect()
            .await?;
        recorded.extend(uploaded.into_iter().flatten());
        ledger.save(&recorded);
        let stale: Vec<ObjPath> = existing
            .iter()
            .filter(|m| {
                self.relative(to, m)
                    .is_ok_and(|r| !keep.contains(&fold(&r)))
            })
            .map(|m| m.location.clone())
            .collect();
        let removed = self.delete_all(to, stale).await?;
        emit(&opts.progress, ProgressEvent::Done);
        Ok(PutReport {
            version: None,
            layout: Layout::Files,
            files: count,
            bytes: total,
            skipped: nothing_to_upload && removed == 0,
            warnings,
            ..PutReport::default()
        })
    }

    pub(super) async fn upload_file(
        &self,
        at: &BlockPath,
        key: &ObjPath,
        path: &Path,
        size: u64,
    ) -> Result<Option<String>> {
        let read_err = |e| Error::io(format!("reading {}", path.display()), e);
        if size < self.part_size as u64 {
            let data = tokio::fs::read(path).await.map_err(read_err)?;
            let put = self
                .store
                .put(key, data.into())
                .await
                .map_err(self.fail(at))?;
            return Ok(put.e_tag);
        }
        let (tx, rx) = mpsc::channel::<Bytes>(8);
        let path = path.to_path_buf();
        let reader = tokio::task::spawn_blocking(move || {
            let mut f = std::fs::File::open(&path)
                .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
            let mut out = ChunkWriter::new(tx);
            std::io::copy(&mut f, &mut out)
                .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
            std::io::Write::flush(&mut out).map_err(|e| Error::io("uploading", e))?;
            Ok(())
        });
        let ((), e_tag) = self.upload(at, key, rx, reader, true).await?;
        Ok(e_tag)
    }

    pub(super) async fn get_files(
        &self,
        at: &BlockPath,
        objects: Vec<ObjectMeta>,
        staging: &Path,
        opts: &GetOptions,
    ) -> Result<GetReport> {
        let total: u64 = objects.iter().map(|m| m.size).sum();
        emit(
            &opts.progress,
            ProgressEvent::Phase {
                name: "downloading",
                total: Some(total),
            },
        );
        let files = objects.len() as u64;
        stream::iter(objects)
            .map(|meta| async move {
                let rel = self.relative(at, &meta)?;
                if !is_safe_relative_path(&rel) {
                    return Err(Error::Integrity(format!(
                        "{}: object `{}` would leave the destination",
                        self.slug(at),
                        rel.escape_debug()
                    )));
                }
                let dest = staging.join(&rel);
                if let Some(parent) = dest.parent() {
                    tokio::fs::create_dir_all(parent)
                        .await
                        .map_err(|e| Error::io(format!("creating the folder of {rel}"), e))?;
                }
                let got = self
                    .store
                    .get(&meta.location)
                    .await
                    .map_err(self.fail(at))?;
                let written = if let GetResultPayload::File(mut from, _) = got.payload {
                    // A local file: one kernel copy instead of a stream of 8 KiB chunks.
                    let (to, rel) = (dest.clone(), rel.clone());
                    tokio::task::spawn_blocking(move || {
                        let mut out = std::fs::File::create(&to)
                            .map_err(|e| Error::io(format!("creating {rel}"), e))?;
                        std::io::copy(&mut from, &mut out)
                            .map_err(|e| Error::io(format!("writing {rel}"), e))
                    })
                    .await??
                } else {
                    self.write_stream(at, &rel, &dest, got.into_stream())
                        .await?
                };
                if written != meta.size {
                    return Err(Error::Integrity(format!(
                        "{}: `{rel}` arrived with {written} of {} bytes",
                        self.slug(at),
                        meta.size
                    )));
                }
                emit(&opts.progress, ProgressEvent::Advance(written));
                Ok(())
            })
            .buffer_unordered(self.concurrency * 2)
            .try_collect::<Vec<()>>()
            .await?;
        emit(&opts.progress, ProgressEvent::Done);
        Ok(GetReport {
            version: None,
            layout: Layout::Files,
            files,
            bytes: total,
            ..GetReport::default()
        })
    }

    /// Writes a download stream to a new file at `dest`; returns the bytes written.
    pub(super) async fn write_stream(
        &self,
        at: &BlockPath,
        rel: &str,
        dest: &Path,
        mut body: futures::stream::BoxStream<'static, object_store::Result<Bytes>>,
    ) -> Result<u64> {
        let mut file = tokio::fs::File::create(dest)
            .await
            .map_err(|e| Error::io(format!("creating {rel}"), e))?;
        let mut written = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(self.fail(at))?;
            written += chunk.len() as u64;
            tokio::io::AsyncWriteExt::write_all(&mut file, &chunk)
                .await
                .map_err(|e| Error::io(format!("writing {rel}"), e))?;
        }
        tokio::io::AsyncWriteExt::flush(&mut file)
            .await
            .map_err(|e| Error::io(format!("writing {rel}"), e))?;
        Ok(written)
    }
}
