//! `gc`: old versions, the frames no kept version uses, and leftovers of interrupted uploads.
//!
//! Frames are shared, so a frame no manifest names may be one a put is about to reuse, and an
//! old version may be the one a put is about to make current again. The protocol (with
//! `frames.rs` and `package.rs`): gc marks itself running before it lists anything, and
//! removes nothing while any put's intent is live; once it removes frames it lists the
//! manifests again and spares the frames of any that appeared meanwhile. A put declares its
//! intent before it looks at the store, waits for every gc that was already running to end
//! before it trusts what it finds there, and after sending its frames checks that all of
//! them are still there before it writes its manifest.

use std::collections::HashSet;

use super::coordination::{GC_MARKS, INTENT_LIFETIME, INTENTS};
use super::*;
use crate::package::store::{recently_current, unix_millis};

impl ObjectStoreBlock {
    /// Drops versions beyond the `keep` newest (never the current one), then the frames and
    /// leftovers older than the grace that nothing kept refers to.
    pub(super) async fn collect(&self, at: &BlockPath, opts: &GcOptions) -> Result<GcReport> {
        let mark = self.write_record(at, GC_MARKS).await?;
        let report = self.collect_marked(at, opts).await;
        let _ = self.store.delete(&mark).await;
        report
    }

    async fn collect_marked(&self, at: &BlockPath, opts: &GcOptions) -> Result<GcReport> {
        let versions = self.list_versions(at).await?;
        let heads = self.listed_heads(at).await?;
        let history: Vec<(i64, String)> = heads.iter().map(|(w, v, _)| (*w, v.clone())).collect();
        let recent = recently_current(&history, opts.keep_within);
        let mut report = GcReport::default();
        let mut doomed = Vec::new();
        for (i, v) in versions.iter().enumerate() {
            // The `keep` newest stay, the current version always does, and so does every
            // version HEAD named within `--keep-within`.
            if v.current || i < opts.keep || recent.contains(&v.version) {
                report.kept.push(v.version.clone());
            } else {
                doomed.extend(self.version_keys(at, &v.version)?);
                report.removed_versions.push(v.version.clone());
            }
        }
        // The HEAD history forgets the versions removed (rollback could not go back to them).
        let removed: HashSet<&str> = report.removed_versions.iter().map(String::as_str).collect();
        let forgotten: Vec<ObjPath> = heads
            .iter()
            .filter(|(_, v, _)| removed.contains(v.as_str()))
            .map(|(_, _, key)| key.clone())
            .collect();
        if self
            .live_records(at, INTENTS, INTENT_LIFETIME, true)
            .await?
            > 0
        {
            // A put under way may make any of them current again, or reuse any frame.
            report.kept.append(&mut report.removed_versions);
            report.held_by_puts = true;
            return Ok(report);
        }
        self.delete_all(at, doomed).await?;
        self.delete_all(at, forgotten).await?;
        let cutoff = unix_millis() - opts.grace.as_millis() as i64;
        report.removed_frames = self.collect_frames(at, &report.kept, cutoff).await?;

        let known: HashSet<&str> = report.kept.iter().map(String::as_str).collect();
        let packages = self.listed(at, ".blocks/packages").await?;
        let leftovers: Vec<ObjPath> = packages
            .into_iter()
            .filter(|m| {
                let v = m
                    .location
                    .filename()
                    .and_then(|f| f.strip_suffix(".tar.zst"))
                    .unwrap_or("");
                !known.contains(v) && m.last_modified.timestamp_millis() < cutoff
            })
            .map(|m| m.location)
            .collect();
        report.removed_leftovers = self.delete_all(at, leftovers).await? as u64;
        report.removed_leftovers += self.abort_abandoned_uploads(at, cutoff).await?;
        if let Some(sweeper) = self.sweeper.clone() {
            let prefix = self.key(at, BLOCKS_DIR)?;
            let older_than = SystemTime::now() - opts.grace;
            report.removed_leftovers += sweeper.sweep(&prefix, older_than).await?;
        }
        Ok(report)
    }

    /// Removes the frames and packs older than `cutoff` that no kept version names.
    async fn collect_frames(&self, at: &BlockPath, kept: &[String], cutoff: i64) -> Result<u64> {
        let mut referenced = HashSet::new();
        let mut read: HashSet<String> = HashSet::new();
        for v in kept {
            self.add_frames_of(at, v, &mut referenced).await?;
            read.insert(v.clone());
        }
        let mut stored = self.listed_frames(at).await?;
        stored.extend(self.listed_packs(at).await?);
        let mut doomed: Vec<(String, ObjPath)> = stored
            .into_iter()
            .filter(|(name, m)| {
                !referenced.contains(name) && m.last_modified.timestamp_millis() < cutoff
            })
            .map(|(name, m)| (name, m.location))
            .collect();
        if doomed.is_empty() {
            return Ok(0);
        }
        // A put that finished after the first listing has its manifest by now.
        for (v, _) in self.stored_versions(at).await? {
            if !read.contains(&v) {
                self.add_frames_of(at, &v, &mut referenced).await?;
            }
        }
        doomed.retain(|(name, _)| !referenced.contains(name));
        let n = self
            .delete_all(at, doomed.into_iter().map(|(_, k)| k).collect())
            .await?;
        Ok(n as u64)
    }

    async fn add_frames_of(
        &self,
        at: &BlockPath,
        version: &str,
        into: &mut HashSet<String>,
    ) -> Result<()> {
        match self.read_manifest(at, version).await {
            Ok(m) => {
                // Frames and packs are both named by sha256: one set holds both.
                for f in m.frames {
                    into.extend(f.sha256);
                    into.extend(f.pack);
                }
                Ok(())
            }
            // Removed since it was listed (an rm, another gc): it holds nothing.
            Err(Error::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
