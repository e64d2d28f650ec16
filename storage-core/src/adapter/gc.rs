//! `gc`: old versions and leftovers of interrupted uploads.

use super::*;

impl ObjectStoreBlock {
    /// `gc`: drops versions beyond the `keep` newest (never the current one), then what
    /// interrupted puts left once it is older than the grace.
    pub(super) async fn collect(&self, at: &BlockPath, keep: usize) -> Result<GcReport> {
        let versions = self.list_versions(at).await?;
        let mut report = GcReport::default();
        let mut doomed = Vec::new();
        for (i, v) in versions.iter().enumerate() {
            // The `keep` newest stay, and the current version always does.
            if v.current || i < keep {
                report.kept.push(v.version.clone());
            } else {
                doomed.push(self.manifest_key(at, &v.version)?);
                doomed.push(self.package_key(at, &v.version)?);
                report.removed_versions.push(v.version.clone());
            }
        }
        self.delete_all(at, doomed).await?;

        let known: std::collections::HashSet<&str> =
            report.kept.iter().map(String::as_str).collect();
        let prefix = self.key(at, ".blocks/packages")?;
        let packages: Vec<ObjectMeta> = self
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(self.fail(at))?;
        let cutoff = chrono_cutoff();
        let leftovers: Vec<ObjPath> = packages
            .into_iter()
            .filter(|m| {
                let v = m
                    .location
                    .filename()
                    .and_then(|f| f.strip_suffix(".tar.zst"))
                    .unwrap_or("");
                !known.contains(v) && m.last_modified.timestamp() < cutoff
            })
            .map(|m| m.location)
            .collect();
        report.removed_leftovers = self.delete_all(at, leftovers).await? as u64;
        report.removed_leftovers += self.abort_abandoned_uploads(at, cutoff).await?;
        if let Some(sweeper) = self.sweeper.clone() {
            let prefix = self.key(at, BLOCKS_DIR)?;
            let older_than = SystemTime::now() - LEFTOVER_GRACE;
            report.removed_leftovers +=
                tokio::task::spawn_blocking(move || sweeper.sweep(&prefix, older_than)).await??;
        }
        Ok(report)
    }
}

/// Unix seconds before which a package without a manifest is a leftover.
fn chrono_cutoff() -> i64 {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    (now.saturating_sub(LEFTOVER_GRACE)).as_secs() as i64
}
