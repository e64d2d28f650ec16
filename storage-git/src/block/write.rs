//! The write side of the git block: put and rm share one loop. Each fetches the branch's
//! tip, checks it, splices the new subtree (or none) in at the path, commits and pushes as a
//! fast-forward from that tip; a push that loses the race starts again on the new tip
//! (a conditional put instead fails as a conflict: its condition was about the old tip).

use storage_core::RetryPolicy;
use storage_core::signing::Signer;

use super::*;

/// How often, and after which pauses, a write builds again on a branch that moved under it.
const LOST_PUSH: RetryPolicy = RetryPolicy::LOST_PUSH;

/// How a signing block signs its commits: its key, and how long the signed HEAD stays valid.
pub(super) type Signing<'a> = Option<(&'a Signer, Option<Duration>)>;

/// How a write ended.
pub(super) enum Written {
    /// The branch already had that tree at the path (its tip, if any).
    Unchanged(Option<Oid>),
    /// This commit was pushed.
    Pushed(Oid),
    /// This commit of the tree the branch already had was pushed, to sign HEAD again.
    Resigned(Oid),
}

impl Inner {
    /// The one fetch-splice-commit-push loop. `decide` sees the tip and its tree and returns
    /// what goes at `at` (a tree, or `None` to remove the path), or refuses; `strict` makes a
    /// lost race a conflict instead of a new attempt. A signing block signs each commit's
    /// tree in its message (`signed_commits.rs`).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn write(
        &self,
        repo: &Repository,
        at: &BlockPath,
        message: &str,
        strict: bool,
        signing: Signing<'_>,
        progress: &Option<Arc<dyn ProgressObserver>>,
        mut decide: impl FnMut(Option<Oid>, Option<&git2::Tree<'_>>) -> Result<Option<Oid>>,
    ) -> Result<Written> {
        // The pauses between tries differ between racing writers (jitter).
        let mut pauses = LOST_PUSH.pauses();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let base = self.fetch_branch(repo)?;
            let base_tree = base.map(|id| commit_tree(repo, id)).transpose()?;
            let subtree = decide(base, base_tree.as_ref())?;
            let root = splice(repo, base_tree.as_ref(), &segments(at), subtree)?;
            // An unchanged tree makes no commit, unless the block signs: then a commit of the
            // same tree signs HEAD again (a new number, a new expiry), as a re-put of the
            // current version does on every backend, so CI can keep a version fresh.
            if signing.is_none() && base_tree.as_ref().is_some_and(|t| t.id() == root) {
                return Ok(Written::Unchanged(base));
            }
            let message = match signing {
                Some((signer, valid_for)) => {
                    self.signed_message(repo, message, root, base, signer, valid_for)?
                }
                None => message.to_string(),
            };
            let new = self.commit(repo, root, base, &message)?;
            emit(
                progress,
                ProgressEvent::Phase {
                    name: "uploading",
                    total: None,
                },
            );
            let unchanged = base_tree.as_ref().is_some_and(|t| t.id() == root);
            match self.remote.push(repo, &self.branch, new, base)? {
                PushOutcome::Pushed if unchanged => return Ok(Written::Resigned(new)),
                PushOutcome::Pushed => return Ok(Written::Pushed(new)),
                PushOutcome::Moved(why) if strict => {
                    return Err(Error::Conflict(format!(
                        "the push was rejected as non-fast-forward: {why} since this put read it; nothing was changed (get the new version, then put again)"
                    )));
                }
                PushOutcome::Moved(why) => match pauses.next() {
                    Some(pause) => std::thread::sleep(pause),
                    None => {
                        return Err(Error::Conflict(format!(
                            "the push was rejected as non-fast-forward {attempt} times ({why}): branch {} keeps moving; try again",
                            self.branch
                        )));
                    }
                },
            }
        }
    }

    pub(super) fn put(&self, src: &Path, to: &BlockPath, opts: &PutOptions) -> Result<PutReport> {
        let scan = ScanOptions {
            ignore_file: opts.ignore_file.clone(),
            no_default_ignores: opts.no_default_ignores,
            follow_symlinks: opts.follow_symlinks,
        };
        let tree = SourceTree::scan(src, &scan)?;
        let ws = Workspace::new()?;
        let repo = &ws.repo;
        let (subtree, mut warnings) = write_source(repo, &tree)?;
        let Some(subtree) = subtree else {
            return Err(Error::Usage(format!(
                "{} holds no file to commit (git stores no empty folders)",
                src.display()
            )));
        };
        warnings.splice(0..0, tree.warnings.iter().cloned());
        for w in &warnings {
            emit(&opts.progress, ProgressEvent::Warning(w.clone()));
        }
        let message = commit_message(&format!("blockctl put {}", shown(to)), opts.record.as_ref());
        let signer = self.signer()?;
        let written = self.write(
            repo,
            to,
            &message,
            opts.if_version.is_some(),
            signer.as_ref().map(|s| (s, opts.valid_for)),
            &opts.progress,
            |base, base_tree| {
                check_precondition(&opts.if_version, base, base_tree, to)?;
                Ok(Some(subtree))
            },
        )?;
        emit(&opts.progress, ProgressEvent::Done);
        let (version, skipped) = match written {
            Written::Unchanged(base) => (base, true),
            Written::Resigned(new) => (Some(new), true),
            Written::Pushed(new) => (Some(new), false),
        };
        Ok(PutReport {
            version: version.map(|v| v.to_string()),
            layout: Layout::Tree,
            files: tree.file_count(),
            bytes: tree.file_bytes(),
            skipped,
            warnings,
            ..PutReport::default()
        })
    }

    /// Commits the removal of `at` and pushes it, building again if the branch moves.
    pub(super) fn remove(&self, at: &BlockPath) -> Result<()> {
        let ws = Workspace::new()?;
        let message = format!("blockctl rm {}", shown(at));
        let signer = self.signer()?;
        let signing = signer.as_ref().map(|s| (s, None));
        self.write(
            &ws.repo,
            at,
            &message,
            false,
            signing,
            &None,
            |_, base_tree| {
                let present = match base_tree {
                    Some(t) if at.is_root() => !t.is_empty(),
                    Some(t) => entry_at(t, at.as_str())?.is_some(),
                    None => false,
                };
                if !present {
                    return Err(Error::NotFound(format!(
                        "nothing is stored there on branch {}",
                        self.branch
                    )));
                }
                Ok(None)
            },
        )?;
        Ok(())
    }

    /// Commits an older version's tree at `at` again (default: the version before the
    /// current one), through the same fast-forward push as a put: the branch moves forward
    /// to a new commit holding the old tree, so agents that follow the branch take it (a
    /// signing block signs it with the next sequence number).
    pub(super) fn rollback(
        &self,
        at: &BlockPath,
        opts: &RollbackOptions,
    ) -> Result<RollbackReport> {
        if self.reference != self.branch {
            return Err(Error::Usage(format!(
                "rollback commits to branch {}, but this block reads {}; roll back with a block that reads its branch",
                self.branch, self.reference
            )));
        }
        let ws = Workspace::new()?;
        let repo = &ws.repo;
        let versions = self.versions_in(repo, at)?;
        let current = versions
            .iter()
            .find(|v| v.current)
            .map(|v| v.version.clone());
        let target = match &opts.to {
            Some(want) => {
                if !is_commit_prefix(want) {
                    return Err(Error::Usage(format!(
                        "--to `{want}` is not a commit id; give at least 4 hex digits"
                    )));
                }
                let want = want.to_ascii_lowercase();
                let mut found = versions.iter().filter(|v| v.version.starts_with(&want));
                match (found.next(), found.next()) {
                    (Some(v), None) => v.version.clone(),
                    (Some(_), Some(_)) => {
                        return Err(Error::Usage(format!(
                            "--to {want} is ambiguous; give more hex digits"
                        )));
                    }
                    (None, _) => {
                        return Err(Error::NotFound(format!(
                            "no listed version {want} holds this path (see blockctl versions)"
                        )));
                    }
                }
            }
            None => {
                let after = versions.iter().position(|v| v.current).map_or(0, |i| i + 1);
                versions
                    .get(after)
                    .map(|v| v.version.clone())
                    .ok_or_else(|| {
                        Error::NotFound("there is no older version to roll back to".into())
                    })?
            }
        };
        let target_id = Oid::from_str(&target).local("reading a version id")?;
        let Some((subtree, _)) = entry_at(&commit_tree(repo, target_id)?, at.as_str())? else {
            return Err(Error::NotFound(format!(
                "commit {} does not hold this path",
                short(&target_id)
            )));
        };
        let message = format!("blockctl rollback {} to {}", shown(at), short(&target_id));
        let signer = self.signer()?;
        let written = self.write(
            repo,
            at,
            &message,
            opts.if_version.is_some(),
            signer.as_ref().map(|s| (s, opts.valid_for)),
            &None,
            |base, base_tree| {
                check_precondition(&opts.if_version, base, base_tree, at)?;
                Ok(Some(subtree))
            },
        )?;
        let to = match written {
            Written::Unchanged(base) => base.map_or(target, |b| b.to_string()),
            Written::Resigned(new) | Written::Pushed(new) => new.to_string(),
        };
        Ok(RollbackReport { from: current, to })
    }

    fn commit(
        &self,
        repo: &Repository,
        root: Oid,
        base: Option<Oid>,
        message: &str,
    ) -> Result<Oid> {
        let sig = Signature::now(&self.author_name, &self.author_email)
            .map_err(|e| Error::Usage(format!("commit author: {}", e.message())))?;
        let tree = repo.find_tree(root).local("reading a tree")?;
        let parent = base
            .map(|b| repo.find_commit(b))
            .transpose()
            .local("reading a commit")?;
        let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
        repo.commit(None, &sig, &sig, message, &tree, &parents)
            .local("writing a commit")
    }
}

/// Refuses the put when `--if-version` does not hold for the branch as fetched. The push
/// then only fast-forwards from that same commit, which makes the check a compare-and-swap.
fn check_precondition(
    wanted: &Option<VersionPrecondition>,
    base: Option<Oid>,
    base_tree: Option<&git2::Tree<'_>>,
    to: &BlockPath,
) -> Result<()> {
    match wanted {
        None => Ok(()),
        Some(VersionPrecondition::NoVersion) => {
            let exists = match base_tree {
                Some(t) => entry_at(t, to.as_str())?.is_some(),
                None => false,
            };
            if exists {
                let at = base.map(|b| short(&b)).unwrap_or_default();
                return Err(Error::Conflict(format!(
                    "--if-version none, but the branch already holds this path (at commit {at})"
                )));
            }
            Ok(())
        }
        Some(VersionPrecondition::Current(v)) => {
            if !is_commit_prefix(v) {
                return Err(Error::Usage(format!(
                    "--if-version `{v}` is not a commit id; give at least 4 hex digits"
                )));
            }
            match base {
                Some(b) if b.to_string().starts_with(&v.to_ascii_lowercase()) => Ok(()),
                Some(b) => Err(Error::Conflict(format!(
                    "--if-version {v}, but the branch is at {}",
                    short(&b)
                ))),
                None => Err(Error::Conflict(format!(
                    "--if-version {v}, but the branch does not exist yet"
                ))),
            }
        }
    }
}
