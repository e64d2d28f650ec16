//! The OCI block: where a version of a slug path lives (its repository, the artifact at
//! `current` or at a version tag, or an ancestor's for a folder inside a package), versions,
//! rm and gc by manifest digest, and the `StorageBlock` interface; `package_store` is how
//! the package engine reads and writes a repository.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt, stream};
use oci_client::manifest::OciImageManifest;
use oci_client::manifest::OciImageManifest as Image;
use storage_core::block::{refuse_root_read, slug_of};
use storage_core::package::PackageEngine;
use storage_core::package::destination::check_destination;
use storage_core::package::manifest::{
    PACKS_FORMAT, PackageManifest, is_version_id, resolve_version, short,
};
use storage_core::package::store::{PackageStore, recently_current};
use storage_core::secret::resolve_optional;
use storage_core::{
    BlockPath, Capabilities, DeleteOptions, Error, GcOptions, GcReport, GetOptions, GetReport,
    ListedFile, PackageExport, PackageFormat, PutOptions, PutReport, Result, RollbackOptions,
    RollbackReport, StorageBlock, Trust, VersionInfo,
};

use crate::artifact::{self, CURRENT, IN_FLIGHT};
use crate::registry::{self, Registry, credentials};
use crate::repository_names::{check_repository, repository_name};
use crate::{CAPABILITIES, OciConfig};

mod package_store;

/// An OCI registry repository tree as a storage block.
#[derive(Clone)]
pub struct OciBlock {
    inner: Arc<Inner>,
}

struct Inner {
    label: String,
    registry: Registry,
    /// Repository names start with this (the block's `repository`).
    prefix: String,
    /// The artifact a put last pushed or found stored (repository, version, image manifest,
    /// whether it was there before), which the HEAD swap that follows moves `current` onto
    /// without reading it again: a gc racing the put may have untagged it meanwhile.
    pushed: Mutex<HashMap<(String, String), (Image, bool)>>,
    /// The size of each pack (repository, sha256) this block wrote or found as a layer of a
    /// version it read: a layer's descriptor needs it, and a read of a pack is capped by it.
    pack_sizes: Mutex<HashMap<(String, String), u64>>,
    /// The artifact a get located (repository, version), which the engine's read of its
    /// manifest takes instead of reading it again.
    located: Mutex<HashMap<(String, String), Image>>,
    /// Set once the registry answered a ranged read with the whole blob: packs are then read
    /// whole.
    no_ranges: AtomicBool,
    /// The block's signing key and trusted keys.
    trust: RwLock<Arc<Trust>>,
    /// The HEAD history `current` carried when a put read it (by repository), which the
    /// swap that follows extends without reading `current` again.
    history_read: Mutex<HashMap<String, Vec<(i64, String)>>>,
}

/// A version found in a repository: its image manifest (bytes and digest too, so a tag can
/// be moved onto it unchanged).
struct Artifact {
    repo: String,
    version: String,
    image: OciImageManifest,
    digest: String,
}

impl std::fmt::Debug for OciBlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OciBlock")
            .field("label", &self.inner.label)
            .field("prefix", &self.inner.prefix)
            .finish_non_exhaustive()
    }
}

fn is_loopback(host: &str) -> bool {
    let name = match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    matches!(name, "127.0.0.1" | "localhost" | "[::1]" | "::1")
}

impl OciBlock {
    pub(crate) fn new(config: &OciConfig, label: &str) -> Result<Self> {
        let bad = |e: Error| e.context(label);
        let host = config.registry.trim().trim_end_matches('/');
        if host.is_empty() || host.contains("://") || host.contains('/') {
            return Err(bad(Error::Usage(format!(
                "registry `{host}` must be a host with an optional :port, without a scheme"
            ))));
        }
        let prefix = config.repository.trim_matches('/').to_string();
        check_repository(&prefix).map_err(bad)?;
        let password = resolve_optional(config.password.as_ref(), "password").map_err(bad)?;
        let token = resolve_optional(config.token.as_ref(), "token").map_err(bad)?;
        let auth = credentials(host, config.username.as_deref(), password, token).map_err(bad)?;
        let plain_http = config.plain_http.unwrap_or_else(|| is_loopback(host));
        let timeout = crate::timeout_of(config, label)?;
        let registry = Registry::with_timeout(host, plain_http, auth, timeout).map_err(bad)?;
        Ok(OciBlock {
            inner: Arc::new(Inner {
                label: label.to_string(),
                registry,
                prefix,
                pushed: Mutex::new(HashMap::new()),
                pack_sizes: Mutex::new(HashMap::new()),
                located: Mutex::new(HashMap::new()),
                no_ranges: AtomicBool::new(false),
                trust: RwLock::new(Arc::new(Trust::default())),
                history_read: Mutex::default(),
            }),
        })
    }

    fn slug(&self, at: &BlockPath) -> String {
        slug_of(&self.inner.label, at)
    }

    fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// The package engine over this registry, with the block's trust settings.
    fn engine(&self) -> PackageEngine {
        let trust = self.inner.trust.read().expect("trust settings").clone();
        PackageEngine::new(Arc::new(self.clone())).with_trust(trust)
    }

    /// Whether the block requires signatures (`trusted_keys`).
    fn trusting(&self) -> bool {
        self.inner
            .trust
            .read()
            .expect("trust settings")
            .trusted_keys
            .is_some()
    }

    fn repo(&self, at: &BlockPath) -> Result<String> {
        repository_name(&self.inner.prefix, at)
    }

    /// The errors of `f`, naming the slug and scrubbed of secrets.
    fn named<'a>(&'a self, at: &'a BlockPath) -> impl Fn(Error) -> Error + 'a {
        move |e| e.scrubbed(self.registry().secrets()).context(self.slug(at))
    }

    /// The artifact `current` points at in `repo`, if any.
    async fn current(&self, repo: &str) -> Result<Option<Artifact>> {
        let Some((image, digest)) = self.registry().manifest(repo, CURRENT).await? else {
            return Ok(None);
        };
        let version = artifact::version_of(&image)
            .filter(|v| is_version_id(v))
            .ok_or_else(|| {
                Error::Integrity(format!(
                    "the `{CURRENT}` tag of {repo} is not a blockctl version"
                ))
            })?
            .to_string();
        Ok(Some(Artifact {
            repo: repo.to_string(),
            version,
            image,
            digest,
        }))
    }

    /// The artifact `current` points at for the path `at` (in `repo`), errors named. A block
    /// that requires signatures takes the signed HEAD record `current` carries, checked as
    /// the engine checks HEAD (trusted key, this path, unexpired, not older than one accepted
    /// unless `allow_rollback`), and reads the version that record names.
    async fn current_checked(
        &self,
        at: &BlockPath,
        repo: &str,
        allow_rollback: bool,
    ) -> Result<Option<Artifact>> {
        let named = self.named(at);
        let Some(found) = self.current(repo).await.map_err(&named)? else {
            return Ok(None);
        };
        if !self.trusting() {
            return Ok(Some(found));
        }
        let head = package_store::head_record(&found);
        self.engine().check_head(at, &head, allow_rollback)?;
        if head.version == found.version {
            return Ok(Some(found));
        }
        self.tagged(repo, &head.version)
            .await
            .map(Some)
            .map_err(&named)
    }

    /// The artifact of `version` in `repo`.
    async fn tagged(&self, repo: &str, version: &str) -> Result<Artifact> {
        let Some((image, digest)) = self.registry().manifest(repo, version).await? else {
            return Err(Error::NotFound(format!("no version {}", short(version))));
        };
        if artifact::version_of(&image) != Some(version) {
            return Err(Error::Integrity(format!(
                "the artifact tagged {} names another version",
                short(version)
            )));
        }
        Ok(Artifact {
            repo: repo.to_string(),
            version: version.to_string(),
            image,
            digest,
        })
    }

    /// The artifact of `version`: its tag's, else `current`'s when that is the version (a gc
    /// racing a put may have left the current version untagged).
    async fn version_artifact(&self, repo: &str, version: &str) -> Result<Artifact> {
        match self.tagged(repo, version).await {
            Err(Error::NotFound(why)) => match self.current(repo).await? {
                Some(c) if c.version == version => Ok(c),
                _ => Err(Error::NotFound(why)),
            },
            other => other,
        }
    }

    /// The version tags of `repo`.
    async fn version_tags(&self, repo: &str) -> Result<Vec<String>> {
        Ok(self
            .registry()
            .tags(repo)
            .await?
            .into_iter()
            .filter(|t| is_version_id(t))
            .collect())
    }

    /// A full version id from an id or a unique prefix of a version tag (or of `current`).
    async fn resolve_version(&self, repo: &str, wanted: &str) -> Result<String> {
        if is_version_id(wanted) || wanted.len() < 4 {
            return resolve_version(wanted, []);
        }
        let mut known = self.version_tags(repo).await?;
        if let Some(c) = self.current(repo).await?
            && !known.contains(&c.version)
        {
            known.push(c.version);
        }
        resolve_version(wanted, known)
    }

    /// The artifact a get of `from` reads, and the folder inside it: a version of `from`, its
    /// current one, or the current one of the nearest ancestor that holds a package.
    /// Its errors are named.
    async fn locate(
        &self,
        from: &BlockPath,
        version: Option<&str>,
        allow_rollback: bool,
    ) -> Result<(Artifact, BlockPath, String)> {
        let named = self.named(from);
        if let Some(v) = version {
            let repo = self.repo(from).map_err(&named)?;
            let version = self.resolve_version(&repo, v).await.map_err(&named)?;
            let found = self
                .version_artifact(&repo, &version)
                .await
                .map_err(&named)?;
            return Ok((found, from.clone(), String::new()));
        }
        let own = self.repo(from);
        if let Ok(repo) = &own
            && let Some(found) = self.current_checked(from, repo, allow_rollback).await?
        {
            return Ok((found, from.clone(), String::new()));
        }
        for anc in from.ancestors() {
            let Ok(repo) = repository_name(&self.inner.prefix, &anc) else {
                continue;
            };
            if let Some(found) = self.current_checked(&anc, &repo, allow_rollback).await? {
                let subtree = from.strip_prefix(&anc).unwrap_or_default().to_string();
                return Ok((found, anc, subtree));
            }
        }
        own.map_err(&named)?;
        Err(named(Error::NotFound("nothing is stored there".into())))
    }

    /// What `rollback` goes back to by default: the version `current` pointed at before the
    /// current one, from the history it carries, when that version is still listed; else
    /// (`current` written before the history was kept) the newest version created before
    /// the current one.
    async fn previous_version(&self, repo: &str, current: Option<&str>) -> Result<String> {
        let (versions, history) = self.versions_and_history(repo).await?;
        let listed = |v: &str| versions.iter().any(|l| l.version == v);
        if let Some((_, before)) = history
            .iter()
            .rev()
            .find(|(_, v)| Some(v.as_str()) != current && listed(v))
        {
            return Ok(before.clone());
        }
        let created = versions
            .iter()
            .find(|v| Some(v.version.as_str()) == current)
            .map(|v| v.created.clone());
        versions
            .into_iter()
            .filter(|v| Some(v.version.as_str()) != current)
            .find(|v| created.as_ref().is_none_or(|c| v.created < *c))
            .map(|v| v.version)
            .ok_or_else(|| {
                Error::NotFound("no version before the current one to roll back to".into())
            })
    }

    /// The manifest of `found` at `at`: through the engine (its signature checked) when the
    /// block requires signatures. Errors named.
    async fn manifest_at(&self, at: &BlockPath, found: &Artifact) -> Result<PackageManifest> {
        if self.trusting() {
            return self.engine().manifest(at, &found.version).await;
        }
        self.manifest_of(found).await.map_err(self.named(at))
    }

    /// Deletes the signature artifact of `version`, if any.
    async fn delete_signature(&self, repo: &str, version: &str) -> Result<()> {
        let tag = artifact::signature_tag(version);
        let Some((_, digest)) = self.registry().manifest(repo, &tag).await? else {
            return Ok(());
        };
        match self.registry().delete_manifest(repo, &digest).await {
            Ok(()) | Err(Error::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The blockctl manifest of `found`, checked against its layers; the sizes of its packs
    /// are remembered for reads and for a put that reuses them.
    async fn manifest_of(&self, found: &Artifact) -> Result<PackageManifest> {
        let manifest =
            artifact::read_manifest(self.registry(), &found.repo, &found.image, &found.version)
                .await?;
        if manifest.format == PACKS_FORMAT {
            for layer in &found.image.layers {
                if let Some(sha) = layer.digest.strip_prefix("sha256:") {
                    self.remember_pack(&found.repo, sha, layer.size as u64);
                }
            }
        }
        Ok(manifest)
    }

    fn remember_pack(&self, repo: &str, sha: &str, size: u64) {
        let mut sizes = self.inner.pack_sizes.lock().expect("pack sizes");
        // A process reads few versions; should one read thousands, it forgets and asks again.
        if sizes.len() >= 100_000 {
            sizes.clear();
        }
        sizes.insert((repo.to_string(), sha.to_string()), size);
    }

    /// The size of pack `sha` in `repo`: remembered, else asked of the registry; `None`
    /// when the registry does not hold it.
    async fn pack_size(&self, repo: &str, sha: &str) -> Result<Option<u64>> {
        let known = self
            .inner
            .pack_sizes
            .lock()
            .expect("pack sizes")
            .get(&(repo.to_string(), sha.to_string()))
            .copied();
        if known.is_some() {
            return Ok(known);
        }
        let size = self
            .registry()
            .blob_size(repo, &format!("sha256:{sha}"))
            .await?;
        if let Some(size) = size {
            self.remember_pack(repo, sha, size);
        }
        Ok(size)
    }

    /// Whether packs are read by range (until the registry shows it ignores ranges).
    fn ranges_honoured(&self) -> bool {
        !self.inner.no_ranges.load(Ordering::Relaxed)
    }

    fn ranges_ignored(&self) {
        if !self.inner.no_ranges.swap(true, Ordering::Relaxed) {
            tracing::debug!(label = %self.inner.label, "the registry ignores ranges: packs are read whole");
        }
    }

    /// Every version of `repo` with its manifest's facts, newest first.
    async fn versions(&self, repo: &str) -> Result<Vec<VersionInfo>> {
        Ok(self.versions_and_history(repo).await?.0)
    }

    /// [`versions`](Self::versions), and the HEAD swaps `current` remembers (oldest first),
    /// from the one read of `current`.
    async fn versions_and_history(
        &self,
        repo: &str,
    ) -> Result<(Vec<VersionInfo>, Vec<(i64, String)>)> {
        let found = self.current(repo).await?;
        let history = found
            .as_ref()
            .map(|c| artifact::history_of(&c.image))
            .unwrap_or_default();
        // Since when the current version is: its last swap in that history.
        let since = found.as_ref().and_then(|c| {
            history
                .iter()
                .rev()
                .find(|(_, v)| *v == c.version)
                .map(|(when, _)| rfc3339_millis(*when))
        });
        let current = found.map(|c| c.version);
        let tags = self.version_tags(repo).await?;
        let current = current.as_deref();
        let since = since.as_deref();
        let listed: Vec<Option<VersionInfo>> = stream::iter(tags)
            .map(|v| async move {
                // A version deleted since the tags were listed is not one any more.
                let found = match self.tagged(repo, &v).await {
                    Err(Error::NotFound(_)) => return Ok(None),
                    other => other?,
                };
                let m = self.manifest_of(&found).await?;
                let is_current = current == Some(v.as_str());
                Ok::<_, Error>(Some(VersionInfo::of_package(v, m, is_current, since)))
            })
            .buffer_unordered(IN_FLIGHT)
            .try_collect()
            .await?;
        let mut out: Vec<VersionInfo> = listed.into_iter().flatten().collect();
        // The current version is always listed, even while a racing gc has left it untagged.
        if let Some(c) = current.filter(|c| !out.iter().any(|v| v.version == *c))
            && let Some(found) = self.current(repo).await?
            && found.version == c
        {
            let m = self.manifest_of(&found).await?;
            out.push(VersionInfo::of_package(found.version, m, true, since));
        }
        VersionInfo::newest_first(&mut out);
        Ok((out, history))
    }
}

#[async_trait]
impl StorageBlock for OciBlock {
    fn capabilities(&self) -> Capabilities {
        CAPABILITIES
    }

    fn label(&self) -> &str {
        &self.inner.label
    }

    async fn put_directory(
        &self,
        src: &Path,
        to: &BlockPath,
        opts: &PutOptions,
    ) -> Result<PutReport> {
        if opts.format == PackageFormat::Archive {
            return Err(Error::Unsupported(format!(
                "{}: a registry stores package formats 2 and 3 only",
                self.slug(to)
            )));
        }
        self.engine().put_directory(src, to, opts).await
    }

    async fn get_directory(
        &self,
        from: &BlockPath,
        dest: &Path,
        opts: &GetOptions,
    ) -> Result<GetReport> {
        let named = self.named(from);
        check_destination(dest, opts.mode).map_err(&named)?;
        let (found, at, subtree) = self
            .locate(from, opts.version.as_deref(), opts.allow_rollback)
            .await?;
        {
            let mut located = self.inner.located.lock().expect("located slot");
            // Gets that failed before reading their manifest leave theirs: few, and dropped.
            if located.len() >= 64 {
                located.clear();
            }
            located.insert(
                (found.repo.clone(), found.version.clone()),
                found.image.clone(),
            );
        }
        self.engine()
            .get_into(&at, &found.version, &subtree, dest, opts, named)
            .await
    }

    async fn read_path(&self, path: &BlockPath) -> Result<Bytes> {
        refuse_root_read(&self.inner.label, path)?;
        let named = self.named(path);
        for anc in path.ancestors() {
            let Ok(repo) = repository_name(&self.inner.prefix, &anc) else {
                continue;
            };
            if let Some(found) = self.current_checked(&anc, &repo, false).await? {
                let rel = path.strip_prefix(&anc).unwrap_or_default();
                return self.engine().read_file(&anc, &found.version, rel).await;
            }
        }
        Err(named(Error::NotFound("no such file".into())))
    }

    async fn list_versions(&self, at: &BlockPath) -> Result<Vec<VersionInfo>> {
        let named = self.named(at);
        let repo = self.repo(at).map_err(&named)?;
        let out = self.versions(&repo).await.map_err(&named)?;
        if out.is_empty() {
            return Err(named(Error::NotFound(
                "no versions are stored there".into(),
            )));
        }
        Ok(out)
    }

    async fn list_files(&self, at: &BlockPath) -> Result<Vec<ListedFile>> {
        let named = self.named(at);
        let repo = self.repo(at).map_err(&named)?;
        let Some(found) = self.current_checked(at, &repo, false).await? else {
            return Err(named(Error::NotFound("nothing is stored there".into())));
        };
        let m = self.manifest_at(at, &found).await?;
        Ok(m.entries
            .into_iter()
            .map(|e| ListedFile {
                path: e.path,
                kind: e.kind,
                size: e.size,
            })
            .collect())
    }

    async fn delete(&self, at: &BlockPath, opts: &DeleteOptions) -> Result<()> {
        let named = self.named(at);
        let repo = self.repo(at).map_err(&named)?;
        let registry = self.registry();
        let current = self.current(&repo).await.map_err(&named)?;
        if let Some(v) = &opts.version {
            let version = self.resolve_version(&repo, v).await.map_err(&named)?;
            if current.as_ref().is_some_and(|c| c.version == version) {
                return Err(named(Error::Conflict(format!(
                    "version {} is current; put another version first or rm the whole path",
                    short(&version)
                ))));
            }
            let found = self.tagged(&repo, &version).await.map_err(&named)?;
            registry
                .delete_manifest(&repo, &found.digest)
                .await
                .map_err(&named)?;
            return self.delete_signature(&repo, &version).await.map_err(&named);
        }
        let tags = self.version_tags(&repo).await.map_err(&named)?;
        if tags.is_empty() && current.is_none() {
            return Err(named(Error::NotFound("nothing is stored there".into())));
        }
        // `current` first, so readers stop seeing a version before its artifact goes.
        if let Some(c) = current {
            match registry.delete_manifest(&repo, &c.digest).await {
                Ok(()) | Err(Error::NotFound(_)) => {}
                Err(e) => return Err(named(e)),
            }
        }
        // Then the versions, and the signatures of any version.
        let signatures: Vec<String> = registry
            .tags(&repo)
            .await
            .map_err(&named)?
            .into_iter()
            .filter(|t| artifact::signed_version(t).is_some())
            .collect();
        for tag in tags.into_iter().chain(signatures) {
            let Some((_, digest)) = registry.manifest(&repo, &tag).await.map_err(&named)? else {
                continue;
            };
            match registry.delete_manifest(&repo, &digest).await {
                Ok(()) | Err(Error::NotFound(_)) => {}
                Err(e) => return Err(named(e)),
            }
        }
        Ok(())
    }

    /// Drops the manifests of versions beyond the `keep` newest (never the current one).
    /// Packs and frames are blobs the registry shares between manifests and reclaims with its
    /// own garbage collection; gc never deletes one, so no put can lose a pack it reuses.
    async fn gc(&self, at: &BlockPath, opts: &GcOptions) -> Result<GcReport> {
        let named = self.named(at);
        let repo = self.repo(at).map_err(&named)?;
        let (versions, history) = self.versions_and_history(&repo).await.map_err(&named)?;
        if versions.is_empty() {
            return Err(named(Error::NotFound(
                "no versions are stored there".into(),
            )));
        }
        // Every version `current` pointed at within `--keep-within`, by the history it keeps.
        let recent = recently_current(&history, opts.keep_within);
        let mut report = GcReport::default();
        for (i, v) in versions.into_iter().enumerate() {
            if v.current || i < opts.keep || recent.contains(&v.version) {
                report.kept.push(v.version);
                continue;
            }
            let found = match self.tagged(&repo, &v.version).await {
                Err(Error::NotFound(_)) => continue,
                other => other.map_err(&named)?,
            };
            // A put may have made it current since the listing: deleting its manifest would
            // take `current` with it.
            let now_current = self.current(&repo).await.map_err(&named)?;
            if now_current.is_some_and(|c| c.digest == found.digest) {
                report.kept.push(v.version);
                continue;
            }
            match self.registry().delete_manifest(&repo, &found.digest).await {
                Ok(()) | Err(Error::NotFound(_)) => {
                    self.delete_signature(&repo, &v.version)
                        .await
                        .map_err(&named)?;
                    report.removed_versions.push(v.version)
                }
                // A put racing this gc is re-tagging it: it stays, for a later gc.
                Err(why @ (Error::Backend(_) | Error::Temporary { .. })) => {
                    tracing::warn!(%why, version = %v.version, "gc kept a version it could not delete");
                    report.kept.push(v.version);
                }
                Err(e) => return Err(named(e)),
            }
        }
        Ok(report)
    }

    async fn manifest(&self, at: &BlockPath, version: Option<&str>) -> Result<PackageManifest> {
        let named = self.named(at);
        let repo = self.repo(at).map_err(&named)?;
        let found = match version {
            Some(v) => {
                let v = self.resolve_version(&repo, v).await.map_err(&named)?;
                self.version_artifact(&repo, &v).await.map_err(&named)?
            }
            None => self
                .current_checked(at, &repo, false)
                .await?
                .ok_or_else(|| named(Error::NotFound("no version is stored there".into())))?,
        };
        self.manifest_at(at, &found).await
    }

    /// Makes an older version current through the engine's HEAD swap (signed by a signing
    /// block, its manifest signed first if it is not yet).
    async fn rollback(&self, at: &BlockPath, opts: &RollbackOptions) -> Result<RollbackReport> {
        let named = self.named(at);
        let repo = self.repo(at).map_err(&named)?;
        let from = PackageStore::read_head(self, at)
            .await?
            .map(|(h, _)| h.version);
        let to = match &opts.to {
            Some(v) => self.resolve_version(&repo, v).await.map_err(&named)?,
            None => self
                .previous_version(&repo, from.as_deref())
                .await
                .map_err(&named)?,
        };
        self.engine()
            .rollback(at, &to, opts.if_version.as_ref(), opts.valid_for)
            .await?;
        Ok(RollbackReport { from, to })
    }

    fn set_trust(&self, trust: Trust) -> Result<()> {
        *self.inner.trust.write().expect("trust settings") = Arc::new(trust);
        Ok(())
    }

    async fn export(&self, at: &BlockPath, version: Option<&str>) -> Result<PackageExport> {
        let named = self.named(at);
        let repo = self.repo(at).map_err(&named)?;
        let version = match version {
            Some(v) => self.resolve_version(&repo, v).await.map_err(&named)?,
            None => {
                self.current_checked(at, &repo, false)
                    .await?
                    .ok_or_else(|| named(Error::NotFound("no version is stored there".into())))?
                    .version
            }
        };
        self.engine().export(at, &version).await
    }

    async fn check(&self) -> Result<()> {
        let root = BlockPath::root();
        self.registry()
            .check(&self.inner.prefix)
            .await
            .map_err(self.named(&root))
    }
}

/// Unix milliseconds as RFC 3339, as `versions` shows since when a version is current.
fn rfc3339_millis(ms: i64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(at).to_string()
}
