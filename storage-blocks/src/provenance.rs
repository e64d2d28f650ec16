//! Where a tree comes from: when the folder a put reads lies inside a git work tree, the
//! commit its HEAD names, the branch, whether the folder has changes not committed, and the
//! `origin` URL with any credentials removed. Read with git2, so no `git` program is needed.

use std::collections::BTreeMap;
use std::path::Path;

use git2::{Repository, StatusOptions};
use storage_core::{Error, Result, SourceInfo, VersionRecord};

/// The record a put of `dir` stores: the message, author (default `user@host`) and labels
/// given, and `dir`'s git provenance. A git repository git2 cannot read costs only the
/// provenance: the second value is then a warning to show.
pub fn version_record(
    dir: &Path,
    message: Option<String>,
    author: Option<String>,
    labels: BTreeMap<String, String>,
) -> Result<(VersionRecord, Option<String>)> {
    let (source, warning) = match git_source(dir) {
        Ok(s) => (s, None),
        Err(e) => (None, Some(format!("no git provenance recorded: {e}"))),
    };
    let record = VersionRecord {
        message,
        author: Some(author.unwrap_or_else(storage_core::record::default_author)),
        labels,
        source,
    };
    record.validate()?;
    Ok((record, warning))
}

/// The provenance of `dir`, or `None` when it is not inside a git work tree (or the
/// repository has no commit yet).
pub fn git_source(dir: &Path) -> Result<Option<SourceInfo>> {
    let dir = dir
        .canonicalize()
        .map_err(|e| Error::io(format!("reading {}", dir.display()), e))?;
    let repo = match Repository::discover(&dir) {
        Ok(r) => r,
        Err(e) if e.code() == git2::ErrorCode::NotFound => return Ok(None),
        Err(e) => return Err(failed(&dir, e)),
    };
    let Some(workdir) = repo.workdir() else {
        return Ok(None);
    };
    let head = match repo.head() {
        Ok(h) => h,
        Err(e)
            if matches!(
                e.code(),
                git2::ErrorCode::UnbornBranch | git2::ErrorCode::NotFound
            ) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(failed(&dir, e)),
    };
    let commit = head.peel_to_commit().map_err(|e| failed(&dir, e))?;
    let branch = head
        .is_branch()
        .then(|| String::from_utf8_lossy(head.shorthand_bytes()).into_owned());
    let workdir = workdir
        .canonicalize()
        .unwrap_or_else(|_| workdir.to_path_buf());
    let below = dir.strip_prefix(&workdir).unwrap_or(Path::new(""));
    let mut opts = StatusOptions::new();
    opts.include_untracked(true)
        .recurse_untracked_dirs(true)
        .include_ignored(false)
        .exclude_submodules(true);
    if !below.as_os_str().is_empty() {
        // Only changes in the folder put count (a pathspec naming a folder matches below it).
        opts.pathspec(below);
    }
    let dirty = !repo
        .statuses(Some(&mut opts))
        .map_err(|e| failed(&dir, e))?
        .is_empty();
    let origin = match repo.find_remote("origin") {
        Ok(r) => Some(scrub_url(&String::from_utf8_lossy(r.url_bytes()))),
        Err(_) => None,
    };
    Ok(Some(SourceInfo {
        commit: commit.id().to_string(),
        branch,
        dirty,
        origin,
    }))
}

fn failed(dir: &Path, e: git2::Error) -> Error {
    Error::Backend(format!(
        "reading the git provenance of {}: {}",
        dir.display(),
        e.message()
    ))
}

/// `url` without credentials: the user and password of an http(s), ftp or git URL, its query
/// (where access tokens ride) and fragment are removed; an ssh URL keeps its user (`git@`),
/// never a password; a scp-like `user@host:path` stays as it is (it holds no secret).
pub fn scrub_url(raw: &str) -> String {
    let parsed = url::Url::parse(raw)
        .ok()
        .filter(|u| !u.cannot_be_a_base() && raw.contains("://"));
    let Some(mut url) = parsed else {
        // Not a URL: a local path or the scp-like form. A `user:password@` in front of a
        // host is still removed.
        return match raw.split_once('@') {
            Some((user, rest)) if user.contains(':') && !user.contains('/') => rest.to_string(),
            _ => raw.to_string(),
        };
    };
    if url.scheme() == "file" {
        return url.to_string();
    }
    let keep_user = url.scheme() == "ssh" || url.scheme().starts_with("git+ssh");
    let _ = url.set_password(None);
    if !keep_user {
        let _ = url.set_username("");
    }
    url.set_query(None);
    url.set_fragment(None);
    url.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use git2::{IndexAddOption, Signature};

    fn commit_all(repo: &Repository, msg: &str) -> git2::Oid {
        let mut index = repo.index().unwrap();
        index.add_all(["*"], IndexAddOption::DEFAULT, None).unwrap();
        index.write().unwrap();
        let tree = repo.find_tree(index.write_tree().unwrap()).unwrap();
        let sig = Signature::now("t", "t@example.invalid").unwrap();
        let parents: Vec<git2::Commit> = repo
            .head()
            .ok()
            .and_then(|h| h.peel_to_commit().ok())
            .into_iter()
            .collect();
        let parents: Vec<&git2::Commit> = parents.iter().collect();
        repo.commit(Some("HEAD"), &sig, &sig, msg, &tree, &parents)
            .unwrap()
    }

    #[test]
    fn a_folder_outside_git_has_no_source() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(git_source(dir.path()).unwrap(), None);
    }

    #[test]
    fn an_empty_repository_has_no_source() {
        let dir = tempfile::tempdir().unwrap();
        Repository::init(dir.path()).unwrap();
        assert_eq!(git_source(dir.path()).unwrap(), None);
    }

    #[test]
    fn commit_branch_dirty_and_a_scrubbed_origin_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init(dir.path()).unwrap();
        repo.remote(
            "origin",
            "https://deploy:s3cr3t-t0ken@git.example.invalid/team/flows.git?private_token=abc",
        )
        .unwrap();
        std::fs::create_dir(dir.path().join("flows")).unwrap();
        std::fs::write(dir.path().join("flows/a.py"), "print(1)\n").unwrap();
        std::fs::write(dir.path().join(".gitignore"), "*.log\n").unwrap();
        let id = commit_all(&repo, "first");
        let branch = repo.head().unwrap().shorthand().unwrap().to_string();
        assert!(!branch.is_empty());

        let src = git_source(&dir.path().join("flows")).unwrap().unwrap();
        assert_eq!(src.commit, id.to_string());
        assert_eq!(src.branch.as_deref(), Some(branch.as_str()));
        assert!(!src.dirty);
        let origin = src.origin.unwrap();
        assert_eq!(origin, "https://git.example.invalid/team/flows.git");
        assert!(
            !origin.contains("s3cr3t") && !origin.contains("abc"),
            "{origin}"
        );

        // An ignored file is not a change.
        std::fs::write(dir.path().join("flows/run.log"), "x").unwrap();
        assert!(
            !git_source(&dir.path().join("flows"))
                .unwrap()
                .unwrap()
                .dirty
        );
        // A change outside the folder put does not make it dirty; one inside does.
        std::fs::write(dir.path().join("other.txt"), "x").unwrap();
        assert!(
            !git_source(&dir.path().join("flows"))
                .unwrap()
                .unwrap()
                .dirty
        );
        assert!(git_source(dir.path()).unwrap().unwrap().dirty);
        std::fs::write(dir.path().join("flows/a.py"), "print(2)\n").unwrap();
        assert!(
            git_source(&dir.path().join("flows"))
                .unwrap()
                .unwrap()
                .dirty
        );
        // An untracked file inside counts too.
        commit_all(&repo, "second");
        assert!(
            !git_source(&dir.path().join("flows"))
                .unwrap()
                .unwrap()
                .dirty
        );
        std::fs::write(dir.path().join("flows/new.py"), "x").unwrap();
        assert!(
            git_source(&dir.path().join("flows"))
                .unwrap()
                .unwrap()
                .dirty
        );

        // A detached HEAD has no branch.
        repo.set_head_detached(id).unwrap();
        let src = git_source(dir.path()).unwrap().unwrap();
        assert_eq!(src.branch, None);
        assert_eq!(src.commit, id.to_string());
    }

    #[test]
    fn credentials_are_removed_from_urls() {
        for (raw, want) in [
            (
                "https://user:pass@github.example/o/r.git",
                "https://github.example/o/r.git",
            ),
            (
                "https://ghp_abcdefTOKEN@github.example/o/r",
                "https://github.example/o/r",
            ),
            (
                "http://x-access-token:tok@h.example:8080/r?token=t#frag",
                "http://h.example:8080/r",
            ),
            ("ssh://git:pw@h.example/r.git", "ssh://git@h.example/r.git"),
            ("git@h.example:o/r.git", "git@h.example:o/r.git"),
            ("user:pw@h.example:o/r.git", "h.example:o/r.git"),
            ("/srv/git/r.git", "/srv/git/r.git"),
        ] {
            assert_eq!(scrub_url(raw), want, "{raw}");
        }
    }
}
