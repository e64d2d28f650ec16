//! Signed commits. A git block with a `signing_key` adds a signed HEAD to every commit it
//! pushes, as a `Blockctl-Head:` trailer of the commit message: the same signed statement the
//! package engine keeps in HEAD, naming the commit's root tree (not the commit, whose id
//! depends on the message), the branch it was pushed to, a sequence number that grows along
//! the branch and an expiry. Git's own hashes carry the rest: the root tree fixes every path
//! and byte below it, so one statement covers whatever path a get reads.
//!
//! A block with `trusted_keys` refuses a commit (exit 7, nothing written) that has no such
//! trailer, is signed by another key, for another branch or for another tree, has expired,
//! or is older along its branch than one this agent already accepted (a rollback, e.g. a
//! force-push to an older commit) unless told to take it. A commit named by `--version` is
//! checked for its signature, branch and tree; its age and expiry are HEAD's business.

use std::time::SystemTime;

use git2::{Oid, Repository};
use storage_core::signing::{DEFAULT_VALID_FOR, SignedHead, Signer, next_seq};
use storage_core::{Error, Result};

use super::{Inner, commit_tree};
use crate::git_trees::Local;
use crate::remote::short;

/// The trailer holding a commit's signed HEAD, as one line of JSON.
pub(super) const HEAD_TRAILER: &str = "Blockctl-Head: ";

impl Inner {
    /// The block's signer, loaded now (an encrypted key is decrypted: once per write).
    pub(super) fn signer(&self) -> Result<Option<Signer>> {
        self.trust().signer()
    }

    /// `message` with a signed HEAD for `root` on this block's branch appended as a
    /// trailer; the sequence number follows the one `base` (the commit built on) carries.
    pub(super) fn signed_message(
        &self,
        repo: &Repository,
        message: &str,
        root: Oid,
        base: Option<Oid>,
        signer: &Signer,
        valid_for: Option<std::time::Duration>,
    ) -> Result<String> {
        let before = match base {
            Some(b) => head_of(&repo.find_commit(b).local("reading a commit")?),
            None => None,
        };
        let seq = next_seq(before.map(|h| h.seq));
        let head = SignedHead::sign(
            signer,
            &root.to_string(),
            &self.branch,
            seq,
            SystemTime::now(),
            valid_for.unwrap_or(DEFAULT_VALID_FOR),
        )?;
        let json = serde_json::to_string(&head).expect("a HEAD serializes");
        let body = if message.contains("\n\n") {
            message.trim_end().to_string()
        } else {
            format!("{}\n", message.trim_end())
        };
        Ok(format!("{body}\n{HEAD_TRAILER}{json}\n"))
    }

    /// Refuses commit `id` unless the block's trusted keys signed it (see the module); a
    /// block without trusted keys takes every commit. `named` is a commit `--version` named.
    pub(super) fn check_trusted(
        &self,
        repo: &Repository,
        id: Oid,
        named: bool,
        allow_rollback: bool,
    ) -> Result<()> {
        let trust = self.trust();
        let Some(keys) = &trust.trusted_keys else {
            return Ok(());
        };
        let commit = repo.find_commit(id).local("reading a commit")?;
        let Some(head) = head_of(&commit) else {
            return Err(Error::Trust(format!("commit {} is not signed", short(&id))));
        };
        let at = |m: String| Error::Trust(format!("commit {}: {m}", short(&id)));
        let unwrap = |e: Error| match e {
            Error::Trust(m) => at(m),
            other => other,
        };
        if named {
            keys.verify(&head.signed_bytes(), &head.signature)
                .map_err(unwrap)?;
            if head.path != self.branch {
                return Err(at(format!(
                    "HEAD was signed for branch {}, not {}",
                    head.path, self.branch
                )));
            }
        } else {
            head.verify_at(keys, "branch", &self.branch, SystemTime::now())
                .map_err(unwrap)?;
        }
        let tree = commit_tree(repo, id)?.id();
        if head.version != tree.to_string() {
            return Err(at(
                "its tree is not the one signed (changed after signing, or the signature was copied from another commit)".into(),
            ));
        }
        if !named {
            trust
                .seen()
                .accept(
                    &storage_core::block::slug_of(&self.label, &storage_core::BlockPath::root()),
                    &format!("git:{}", self.reference),
                    head.seq,
                    allow_rollback,
                )
                .map_err(unwrap)?;
        }
        Ok(())
    }
}

/// The signed HEAD in a commit's message, if it has one that parses.
fn head_of(commit: &git2::Commit<'_>) -> Option<SignedHead> {
    commit
        .message()
        .unwrap_or_default()
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix(HEAD_TRAILER))
        .and_then(|json| serde_json::from_str(json).ok())
}
