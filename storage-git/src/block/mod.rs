//! The git block: every operation works in a private bare repository in a temp dir, fetching
//! only what it needs (the tip, shallow; the whole history for versions), and runs on a
//! blocking thread. A put builds the new tree from the old one with only its path replaced,
//! commits it and pushes it as a fast-forward from the commit it was built on; a plain put
//! that loses that race builds again on the new tip (`write.rs`, one loop for put and rm);
//! reads (get, cat, ls, versions) are here.

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use git2::{ObjectType, Oid, Repository, Signature, Sort};
use storage_core::block::emit;
use storage_core::package::destination::{check_destination, commit, staging_for};
use storage_core::secret::resolve_optional;
use storage_core::source_tree::{ScanOptions, SourceTree};
use storage_core::{
    BlockPath, Capabilities, DeleteOptions, Error, GetOptions, GetReport, Layout, ListedFile,
    ProgressEvent, ProgressObserver, PutOptions, PutReport, Result, RollbackOptions,
    RollbackReport, StorageBlock, Trust, VersionInfo, VersionPrecondition,
};
use tempfile::TempDir;

use crate::git_trees::{Local, entry_at, list, splice, totals, write_out, write_source};
use crate::remote::{GitRemote, PushOutcome, short};
use crate::{CAPABILITIES, GitConfig};

mod signed_commits;
mod write;

/// Where a fetched reference lands in the private repository.
const WANTED: &str = "refs/blockctl/wanted";

/// A git repository as a storage block.
#[derive(Clone)]
pub struct GitBlock {
    inner: Arc<Inner>,
}

struct Inner {
    label: String,
    remote: GitRemote,
    /// What get, cat, ls and versions read.
    reference: String,
    /// What put and rm commit to.
    branch: String,
    /// Fetch depth; 0 is the full history.
    depth: i32,
    author_name: String,
    author_email: String,
    /// Signing and trusted keys (`set_trust`).
    trust: RwLock<Arc<Trust>>,
}

/// A private bare repository, removed when dropped.
struct Workspace {
    repo: Repository,
    _dir: TempDir,
}

impl Workspace {
    fn new() -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("blockctl-git-")
            .tempdir()
            .map_err(|e| Error::io("creating a temp dir for git", e))?;
        let repo = Repository::init_bare(dir.path()).local("creating a private repository")?;
        Ok(Workspace { repo, _dir: dir })
    }
}

impl GitBlock {
    pub(crate) fn new(config: &GitConfig, label: &str) -> Result<Self> {
        let bad = |e: Error| e.context(label);
        let token = resolve_optional(config.token.as_ref(), "token").map_err(bad)?;
        let remote = GitRemote::new(&config.url, config.username.as_deref(), token).map_err(bad)?;
        let depth = match config.depth {
            None => 1,
            Some(d) if (0..=i32::MAX as i64).contains(&d) => d as i32,
            Some(d) => {
                return Err(Error::Usage(format!(
                    "{label}: depth {d} is not allowed; give 0 (full history) or more"
                )));
            }
        };
        let branch = config
            .branch
            .clone()
            .filter(|b| !b.is_empty())
            .unwrap_or_else(|| "main".into());
        if !git2::Reference::is_valid_name(&format!("refs/heads/{branch}")) {
            return Err(Error::Usage(format!(
                "{label}: branch {branch:?} is not a valid branch name"
            )));
        }
        Ok(GitBlock {
            inner: Arc::new(Inner {
                label: label.to_string(),
                remote,
                reference: config
                    .reference
                    .clone()
                    .filter(|r| !r.is_empty())
                    .unwrap_or_else(|| branch.clone()),
                branch,
                depth,
                author_name: config
                    .author_name
                    .clone()
                    .unwrap_or_else(|| "blockctl".into()),
                author_email: config
                    .author_email
                    .clone()
                    .unwrap_or_else(|| "blockctl@localhost".into()),
                trust: RwLock::default(),
            }),
        })
    }

    /// Runs `op` on a blocking thread, its errors naming `at`.
    async fn run<T: Send + 'static>(
        &self,
        at: &BlockPath,
        op: impl FnOnce(&Inner) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let inner = self.inner.clone();
        let slug = inner.slug(at);
        tokio::task::spawn_blocking(move || op(&inner))
            .await?
            .map_err(|e| e.context(slug))
    }
}

impl std::fmt::Debug for GitBlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitBlock")
            .field("label", &self.inner.label)
            .field("url", &self.inner.remote.url())
            .field("branch", &self.inner.branch)
            .finish_non_exhaustive()
    }
}

impl Inner {
    fn slug(&self, at: &BlockPath) -> String {
        storage_core::block::slug_of(&self.label, at)
    }

    fn trust(&self) -> Arc<Trust> {
        self.trust.read().expect("trust settings").clone()
    }

    /// Fetches what get reads (`reference`: a branch, a tag or a commit id) and returns its
    /// commit; `full` fetches the whole history.
    fn fetch_reference(&self, repo: &Repository, full: bool) -> Result<Oid> {
        let depth = if full { 0 } else { self.depth };
        let wanted = self.reference.as_str();
        let refs = self.remote.list()?;
        let advertised = [
            format!("refs/heads/{wanted}"),
            format!("refs/tags/{wanted}"),
            wanted.to_string(),
        ]
        .into_iter()
        .find(|name| name.starts_with("refs/") && refs.iter().any(|(r, _)| r == name));
        if let Some(name) = advertised {
            self.remote
                .fetch(repo, &[format!("+{name}:{WANTED}")], depth)?;
            let id = repo.refname_to_id(WANTED).local("reading a fetched ref")?;
            return peel_commit(repo, id);
        }
        if is_commit_prefix(wanted) {
            // A commit id: asked for directly where the server allows it, else looked up in
            // the history of every branch and tag.
            if wanted.len() == 40
                && self
                    .remote
                    .fetch(repo, &[format!("{wanted}:{WANTED}")], depth)
                    .is_ok()
                && let Ok(id) = repo.refname_to_id(WANTED)
            {
                return peel_commit(repo, id);
            }
            self.remote.fetch(
                repo,
                &[
                    "+refs/heads/*:refs/remotes/origin/*".to_string(),
                    "+refs/tags/*:refs/tags/*".to_string(),
                ],
                0,
            )?;
            return find_commit(repo, wanted, &format!("reference {wanted}"));
        }
        if wanted == self.branch && !refs.iter().any(|(r, _)| r.starts_with("refs/heads/")) {
            return Err(Error::NotFound(format!(
                "nothing is stored there: the repository has no branch yet ({wanted} is made by the first put)"
            )));
        }
        Err(Error::NotFound(format!(
            "the repository has no branch, tag or commit {wanted}"
        )))
    }

    /// The commit get reads: `--version` (a commit id or a unique prefix, searched in the
    /// reference's history), else the reference.
    fn wanted_commit(&self, repo: &Repository, version: Option<&str>) -> Result<Oid> {
        match version {
            None => self.fetch_reference(repo, false),
            Some(v) => {
                if !is_commit_prefix(v) {
                    return Err(Error::Usage(format!(
                        "version `{v}` is not a commit id; give at least 4 hex digits"
                    )));
                }
                self.fetch_reference(repo, true)?;
                find_commit(repo, v, &format!("version {v}"))
            }
        }
    }

    /// The tip of `branch` fetched shallow, or `None` when the branch does not exist yet.
    fn fetch_branch(&self, repo: &Repository) -> Result<Option<Oid>> {
        let name = format!("refs/heads/{}", self.branch);
        let refs = self.remote.list()?;
        if !refs.iter().any(|(r, _)| *r == name) {
            return Ok(None);
        }
        self.remote.fetch(repo, &[format!("+{name}:{WANTED}")], 1)?;
        Ok(Some(
            repo.refname_to_id(WANTED).local("reading a fetched ref")?,
        ))
    }

    fn get(&self, from: &BlockPath, dest: &Path, opts: &GetOptions) -> Result<GetReport> {
        check_destination(dest, opts.mode)?;
        let ws = Workspace::new()?;
        let repo = &ws.repo;
        let id = self.wanted_commit(repo, opts.version.as_deref())?;
        self.check_trusted(repo, id, opts.version.is_some(), opts.allow_rollback)?;
        let root = commit_tree(repo, id)?;
        let tree = match entry_at(&root, from.as_str())? {
            Some((tree_id, true)) => repo.find_tree(tree_id).local("reading a tree")?,
            Some((_, false)) => {
                return Err(Error::Usage(format!(
                    "this is a file in commit {}, not a folder; read it with cat",
                    short(&id)
                )));
            }
            None => {
                return Err(Error::NotFound(format!(
                    "no such path in commit {}",
                    short(&id)
                )));
            }
        };
        emit(
            &opts.progress,
            ProgressEvent::Phase {
                name: "writing",
                total: None,
            },
        );
        let staging = staging_for(dest)?;
        let written = write_out(repo, &tree, staging.path())?;
        commit(staging, dest, opts.mode)?;
        emit(&opts.progress, ProgressEvent::Done);
        Ok(GetReport {
            version: Some(id.to_string()),
            layout: Layout::Tree,
            files: written.files,
            bytes: written.bytes,
            ..GetReport::default()
        })
    }

    fn read_path(&self, path: &BlockPath) -> Result<Bytes> {
        if path.is_root() {
            return Err(Error::Usage("name a file to read".into()));
        }
        let ws = Workspace::new()?;
        let repo = &ws.repo;
        let id = self.fetch_reference(repo, false)?;
        self.check_trusted(repo, id, false, false)?;
        let root = commit_tree(repo, id)?;
        let entry = root
            .get_path(Path::new(path.as_str()))
            .map_err(|_| Error::NotFound(format!("no such file in commit {}", short(&id))))?;
        match (entry.kind(), entry.filemode()) {
            (Some(ObjectType::Blob), 0o120000) => {
                Err(Error::Usage("this is a symlink, not a file".into()))
            }
            (Some(ObjectType::Blob), _) => {
                let blob = repo.find_blob(entry.id()).local("reading a file")?;
                Ok(Bytes::copy_from_slice(blob.content()))
            }
            _ => Err(Error::Usage("this is a folder, not a file".into())),
        }
    }

    fn list_files(&self, at: &BlockPath) -> Result<Vec<ListedFile>> {
        let ws = Workspace::new()?;
        let repo = &ws.repo;
        let id = self.fetch_reference(repo, false)?;
        self.check_trusted(repo, id, false, false)?;
        let root = commit_tree(repo, id)?;
        match entry_at(&root, at.as_str())? {
            Some((tree, true)) => list(repo, &repo.find_tree(tree).local("reading a tree")?),
            Some((_, false)) => Err(Error::Usage("this is a file, not a folder".into())),
            None => Err(Error::NotFound(format!(
                "nothing is stored there in commit {}",
                short(&id)
            ))),
        }
    }

    /// Commits that changed what `at` holds, newest first; a commit that removed it is not a
    /// version (nothing could be got from it).
    fn list_versions(&self, at: &BlockPath) -> Result<Vec<VersionInfo>> {
        let ws = Workspace::new()?;
        self.versions_in(&ws.repo, at)
    }

    /// [`list_versions`](Self::list_versions) in a workspace the caller keeps.
    fn versions_in(&self, repo: &Repository, at: &BlockPath) -> Result<Vec<VersionInfo>> {
        let tip = self.fetch_reference(repo, true)?;
        let mut walk = repo.revwalk().local("walking the history")?;
        walk.set_sorting(Sort::TOPOLOGICAL | Sort::TIME)
            .local("walking the history")?;
        walk.push(tip).local("walking the history")?;
        let mut out = Vec::new();
        for id in walk {
            let id = id.local("walking the history")?;
            let c = repo.find_commit(id).local("reading a commit")?;
            let here = entry_at(&c.tree().local("reading a tree")?, at.as_str())?;
            let Some((entry, is_tree)) = here else {
                continue;
            };
            if c.parent_count() > 0 {
                let parent = c.parent(0).local("reading a commit")?;
                let before = entry_at(&parent.tree().local("reading a tree")?, at.as_str())?;
                if before.is_some_and(|(b, _)| b == entry) {
                    continue;
                }
            }
            let (files, bytes) = totals(repo, entry, is_tree)?;
            out.push(VersionInfo {
                version: id.to_string(),
                created: commit_time(&c),
                files,
                bytes,
                current: false,
                record: record_of(c.message().unwrap_or_default()),
                current_since: None,
            });
        }
        if out.is_empty() {
            return Err(Error::NotFound(format!(
                "no commit of {} holds this path",
                self.reference
            )));
        }
        // The newest version is what the tip holds, unless the tip no longer has the path.
        // It is current since the commit that put it there (a rollback is a commit too).
        if entry_at(&commit_tree(repo, tip)?, at.as_str())?.is_some() {
            out[0].current = true;
            out[0].current_since = Some(out[0].created.clone());
        }
        Ok(out)
    }
}

#[async_trait]
impl StorageBlock for GitBlock {
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
        let (src, to2, opts) = (src.to_path_buf(), to.clone(), opts.clone());
        self.run(to, move |b| b.put(&src, &to2, &opts)).await
    }

    async fn get_directory(
        &self,
        from: &BlockPath,
        dest: &Path,
        opts: &GetOptions,
    ) -> Result<GetReport> {
        if !opts.only.is_empty() {
            return Err(storage_core::block::unsupported(
                &self.inner.label,
                from,
                "get --only",
            ));
        }
        let (from2, dest, opts) = (from.clone(), dest.to_path_buf(), opts.clone());
        self.run(from, move |b| b.get(&from2, &dest, &opts)).await
    }

    async fn read_path(&self, path: &BlockPath) -> Result<Bytes> {
        let p = path.clone();
        self.run(path, move |b| b.read_path(&p)).await
    }

    async fn list_versions(&self, at: &BlockPath) -> Result<Vec<VersionInfo>> {
        let p = at.clone();
        self.run(at, move |b| b.list_versions(&p)).await
    }

    async fn list_files(&self, at: &BlockPath) -> Result<Vec<ListedFile>> {
        let p = at.clone();
        self.run(at, move |b| b.list_files(&p)).await
    }

    async fn delete(&self, at: &BlockPath, opts: &DeleteOptions) -> Result<()> {
        // Checked refuses this first; a direct caller must never get the path removed.
        if opts.version.is_some() {
            return Err(storage_core::block::unsupported(
                &self.inner.label,
                at,
                "rm --version",
            ));
        }
        let p = at.clone();
        self.run(at, move |b| b.remove(&p)).await
    }

    async fn rollback(&self, at: &BlockPath, opts: &RollbackOptions) -> Result<RollbackReport> {
        let (p, opts) = (at.clone(), opts.clone());
        self.run(at, move |b| b.rollback(&p, &opts)).await
    }

    fn set_trust(&self, trust: Trust) -> Result<()> {
        *self.inner.trust.write().expect("trust settings") = Arc::new(trust);
        Ok(())
    }

    async fn check(&self) -> Result<()> {
        self.run(&BlockPath::root(), |b| b.remote.list().map(drop))
            .await
    }
}

fn segments(at: &BlockPath) -> Vec<&str> {
    at.as_str().split('/').filter(|s| !s.is_empty()).collect()
}

fn shown(at: &BlockPath) -> &str {
    if at.is_root() { "/" } else { at.as_str() }
}

/// The trailer of a put's commit message that holds its version record, as one line of JSON.
const RECORD_TRAILER: &str = "Blockctl-Record: ";

/// A put's commit message: the record's message (else `default`) as the subject, and the
/// whole record as a trailer, so `versions` shows what the other backends keep in the
/// manifest. A commit is the version, so the record rides in it; it never changes which
/// tree the version holds.
fn commit_message(default: &str, record: Option<&storage_core::VersionRecord>) -> String {
    let Some(record) = record.filter(|r| !r.is_empty()) else {
        return default.to_string();
    };
    let subject = record.message.as_deref().unwrap_or(default);
    let json = serde_json::to_string(record).expect("a record serializes");
    format!("{subject}\n\n{RECORD_TRAILER}{json}\n")
}

/// The record in a commit message's trailer; empty for commits without one (written by
/// other tools, or by puts without a record) or whose trailer does not parse.
fn record_of(message: &str) -> storage_core::VersionRecord {
    message
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix(RECORD_TRAILER))
        .and_then(|json| serde_json::from_str(json).ok())
        .unwrap_or_default()
}

fn is_commit_prefix(s: &str) -> bool {
    (4..=40).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn find_commit(repo: &Repository, prefix: &str, what: &str) -> Result<Oid> {
    match repo.find_commit_by_prefix(&prefix.to_ascii_lowercase()) {
        Ok(c) => Ok(c.id()),
        Err(e) if e.code() == git2::ErrorCode::Ambiguous => Err(Error::Usage(format!(
            "{what} is ambiguous; give more hex digits"
        ))),
        Err(_) => Err(Error::NotFound(format!("no commit {prefix} ({what})"))),
    }
}

/// The commit an id names: itself, or what an annotated tag points at.
fn peel_commit(repo: &Repository, id: Oid) -> Result<Oid> {
    let obj = repo
        .find_object(id, None)
        .local("reading a fetched object")?;
    obj.peel_to_commit()
        .map(|c| c.id())
        .map_err(|_| Error::Usage(format!("{} is not a commit", short(&id))))
}

fn commit_tree(repo: &Repository, id: Oid) -> Result<git2::Tree<'_>> {
    repo.find_commit(id)
        .and_then(|c| c.tree())
        .local("reading a commit")
}

fn commit_time(c: &git2::Commit<'_>) -> String {
    let secs = c.time().seconds().max(0) as u64;
    humantime::format_rfc3339_seconds(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
        .to_string()
}
