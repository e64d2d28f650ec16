//! How puts and `gc` share a path: small records under `.blocks/`. A put declares an intent
//! before it looks for objects to reuse, and `gc` removes nothing while an intent is live; a
//! `gc` marks itself while it runs, and a put re-checks what it reuses after every running
//! `gc` is done, before its manifest and HEAD are written (the engine calls `settle`).

use std::sync::atomic::AtomicU64;

use super::*;
use crate::package::store::unix_millis;

/// Where frames live, shared by every version at a path.
pub(super) const FRAMES: &str = ".blocks/frames";
/// Where packs live, shared by every version at a path.
pub(super) const PACKS: &str = ".blocks/packs";
/// One record per put under way that may reuse frames.
pub(super) const INTENTS: &str = ".blocks/intents";
/// One record per gc under way.
pub(super) const GC_MARKS: &str = ".blocks/gc";
/// An intent not renewed for this long is a killed put's, and no longer holds gc back.
pub(super) const INTENT_LIFETIME: Duration = Duration::from_secs(60);
/// How often a put renews its intent.
const INTENT_RENEWAL: Duration = Duration::from_secs(15);
/// A gc mark older than this is a killed gc's, and no longer holds puts back.
pub(super) const GC_LIFETIME: Duration = Duration::from_secs(600);

/// A put's intent record, and the task that renews it.
pub(super) struct Intent {
    key: ObjPath,
    renewal: tokio::task::JoinHandle<()>,
}

impl ObjectStoreBlock {
    /// Names of the frames stored at `at`, with their times.
    pub(super) async fn listed_frames(&self, at: &BlockPath) -> Result<Vec<(String, ObjectMeta)>> {
        self.listed_objects(at, FRAMES, ".zst").await
    }

    /// Names of the packs stored at `at`, with their times.
    pub(super) async fn listed_packs(&self, at: &BlockPath) -> Result<Vec<(String, ObjectMeta)>> {
        self.listed_objects(at, PACKS, ".pack").await
    }

    /// Every object under `folder` of the package path `at`.
    pub(super) async fn listed(&self, at: &BlockPath, folder: &str) -> Result<Vec<ObjectMeta>> {
        let prefix = self.key(at, folder)?;
        self.store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(self.fail(at))
    }

    /// The objects under `folder` named `<sha256><suffix>`, by sha256, with their times.
    async fn listed_objects(
        &self,
        at: &BlockPath,
        folder: &str,
        suffix: &str,
    ) -> Result<Vec<(String, ObjectMeta)>> {
        Ok(self
            .listed(at, folder)
            .await?
            .into_iter()
            .filter_map(|m| {
                let name = m.location.filename()?.strip_suffix(suffix)?.to_string();
                is_version_id(&name).then_some((name, m))
            })
            .collect())
    }

    /// Records of one kind (`INTENTS`, `GC_MARKS`) younger than `lifetime`; older ones are
    /// removed when `sweep` is set.
    pub(super) async fn live_records(
        &self,
        at: &BlockPath,
        kind: &str,
        lifetime: Duration,
        sweep: bool,
    ) -> Result<usize> {
        let metas = self.listed(at, kind).await?;
        let cutoff = unix_millis() - lifetime.as_millis() as i64;
        let (live, stale): (Vec<_>, Vec<_>) = metas
            .into_iter()
            .partition(|m| m.last_modified.timestamp_millis() >= cutoff);
        if sweep {
            self.delete_all(at, stale.into_iter().map(|m| m.location).collect())
                .await?;
        }
        Ok(live.len())
    }

    /// Writes a record of one kind; returns its key.
    pub(super) async fn write_record(&self, at: &BlockPath, kind: &str) -> Result<ObjPath> {
        let key = self.key(at, &format!("{kind}/{}.json", unique_name()))?;
        self.renew_record(at, &key).await?;
        Ok(key)
    }

    async fn renew_record(&self, at: &BlockPath, key: &ObjPath) -> Result<()> {
        let body = serde_json::json!({ "pid": std::process::id(), "written": now() });
        self.store
            .put(key, body.to_string().into())
            .await
            .map_err(self.fail(at))?;
        Ok(())
    }

    /// Records that a put is under way at `at`, renewed until it is withdrawn. Retried once:
    /// with `gc --grace 0` on a local store, a gc may sweep the record's staging file before
    /// it is renamed into place.
    pub(super) async fn declare_intent(&self, at: &BlockPath) -> Result<Intent> {
        let key = match self.write_record(at, INTENTS).await {
            Ok(key) => key,
            Err(_) => self.write_record(at, INTENTS).await?,
        };
        let (block, at2, key2) = (self.clone(), at.clone(), key.clone());
        let renewal = tokio::spawn(async move {
            loop {
                tokio::time::sleep(INTENT_RENEWAL).await;
                let _ = block.renew_record(&at2, &key2).await;
            }
        });
        Ok(Intent { key, renewal })
    }

    /// Removes an intent; a failure only leaves it to expire.
    pub(super) async fn withdraw_intent(&self, intent: Intent) {
        intent.renewal.abort();
        let _ = self.store.delete(&intent.key).await;
    }

    /// Waits until no gc is running at `at` (or the marks of those running have expired).
    pub(super) async fn wait_for_gc(&self, at: &BlockPath) -> Result<()> {
        let mut pause = Duration::from_millis(50);
        while self.live_records(at, GC_MARKS, GC_LIFETIME, false).await? > 0 {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
        Ok(())
    }
}

/// A name no other process picks: the process id, the time, and a counter, hashed.
fn unique_name() -> String {
    use sha2::Digest;
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let t = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    hex::encode(&sha2::Sha256::digest(format!("{}-{t}-{n}", std::process::id()))[..12])
}
