//! What signing adds to the engine. A block with a `signing_key` signs the manifest of every
//! version it makes current (a `.minisig` over its stored bytes, naming the path) and every
//! HEAD it writes (a sequence number that grows with each swap, an expiry). A block with
//! `trusted_keys` reads nothing it cannot trust: HEAD and manifest are checked before a byte
//! of the version is read, and a HEAD older than one this agent already accepted is refused.

use std::time::{Duration, SystemTime};

use bytes::Bytes;

use super::engine::PackageEngine;
use crate::block::VersionPrecondition;
use crate::error::{Error, Result};
use crate::package::manifest::{HeadRecord, PackageManifest, short};
use crate::package::store::{HeadPrecondition, HeadTag, Swap};
use crate::signing::{
    DEFAULT_VALID_FOR, SignedHead, Signer, TrustedKeys, check_manifest_comment, manifest_comment,
    next_seq,
};
use crate::slug::BlockPath;

/// How often a signed swap that lost to another writer reads HEAD again and retries.
const SWAP_TRIES: usize = 3;

impl PackageEngine {
    /// The current HEAD at `at`, `None` when there is none. With trusted keys it must be
    /// signed by one of them for this path, unexpired, and no older than the newest HEAD this
    /// agent accepted there (unless `allow_rollback`).
    pub async fn current(
        &self,
        at: &BlockPath,
        allow_rollback: bool,
    ) -> Result<Option<HeadRecord>> {
        let Some((head, _)) = self.store.read_head(at).await? else {
            return Ok(None);
        };
        self.check_head(at, &head, allow_rollback)?;
        Ok(Some(head))
    }

    /// The checks of [`current`](Self::current) on a HEAD already read.
    pub fn check_head(
        &self,
        at: &BlockPath,
        head: &HeadRecord,
        allow_rollback: bool,
    ) -> Result<()> {
        let Some(keys) = &self.trust.trusted_keys else {
            return Ok(());
        };
        let slug = self.slug(at);
        let signed = SignedHead::from_record(head).map_err(|e| e.context(&slug))?;
        signed
            .verify(keys, at.as_str(), SystemTime::now())
            .map_err(|e| e.context(&slug))?;
        self.seen
            .accept(
                &self.slug(&BlockPath::root()),
                at.as_str(),
                signed.seq,
                allow_rollback,
            )
            .map_err(|e| e.context(&slug))
    }

    /// The manifest of `version` at `at`. With trusted keys its signature is checked over the
    /// bytes as stored, before they are parsed, and must name this path and version.
    pub async fn manifest(&self, at: &BlockPath, version: &str) -> Result<PackageManifest> {
        let Some(keys) = &self.trust.trusted_keys else {
            return self.store.read_manifest(at, version).await;
        };
        let slug = self.slug(at);
        let stored = self.store.read_manifest_signed(at, version).await?;
        let Some(signature) = &stored.signature else {
            return Err(Error::Trust(format!(
                "{slug}: version {} is not signed",
                short(version)
            )));
        };
        let what = format!("{slug}: the manifest of version {}", short(version));
        let verified = keys
            .verify(&stored.bytes, signature)
            .map_err(|e| e.context(&what))?;
        check_manifest_comment(&verified, at.as_str(), version).map_err(|e| e.context(&slug))?;
        PackageManifest::parse_stored(&stored.bytes, stored.compressed, version)
            .map_err(|e| e.context(&slug))
    }

    /// The block's signer, loaded now (a password-protected key is decrypted: once per put).
    pub(super) fn signer(&self, at: &BlockPath) -> Result<Option<Signer>> {
        self.trust.signer().map_err(|e| e.context(self.slug(at)))
    }

    /// Signs the manifest of `version` unless `signer` already signed it for this path.
    /// `written` is the manifest this put just wrote (its stored bytes are known); otherwise
    /// the stored one is read.
    pub(super) async fn sign_manifest(
        &self,
        at: &BlockPath,
        version: &str,
        written: Option<&PackageManifest>,
        signer: &Signer,
    ) -> Result<()> {
        let comment = manifest_comment(at.as_str(), version);
        let (manifest, bytes) = match written {
            Some(m) => (m.clone(), Bytes::from(m.stored_bytes())),
            None => {
                let stored = self.store.read_manifest_signed(at, version).await?;
                let own = TrustedKeys::parse(&[signer.public_key()])?;
                if let Some(sig) = &stored.signature
                    && own
                        .verify(&stored.bytes, sig)
                        .is_ok_and(|v| v.trusted_comment == comment)
                {
                    return Ok(());
                }
                let m = PackageManifest::parse_stored(&stored.bytes, stored.compressed, version)
                    .map_err(|e| e.context(self.slug(at)))?;
                (m, stored.bytes)
            }
        };
        let signature = signer.sign(&bytes, &comment)?;
        self.store
            .write_manifest_signature(at, &manifest, &signature)
            .await
    }

    /// Makes `version` current at `at` through one conditional swap of HEAD. `read` is the
    /// HEAD found before (with its tag), `precondition` what the caller requires. A signing
    /// block signs HEAD with the next sequence number; when another writer swapped first and
    /// the caller required nothing, it reads HEAD again and signs the next number again.
    pub(super) async fn swap_to(
        &self,
        at: &BlockPath,
        version: &str,
        mut read: Option<(HeadRecord, HeadTag)>,
        precondition: HeadPrecondition,
        signer: Option<&Signer>,
        valid_for: Option<Duration>,
    ) -> Result<Swap> {
        let Some(signer) = signer else {
            let head = HeadRecord {
                version: version.to_string(),
                updated: super::engine::now(),
                ..HeadRecord::default()
            };
            let swap = self.store.swap_head(at, &head, precondition).await?;
            self.log_head(at, &head, swap).await;
            return Ok(swap);
        };
        let free = precondition == HeadPrecondition::Any;
        let mut precondition = precondition;
        for _ in 0..SWAP_TRIES {
            if free {
                // The sequence number is the one after the HEAD read: swap only over it.
                precondition = match &read {
                    Some((_, tag)) => HeadPrecondition::Unchanged(tag.clone()),
                    None => HeadPrecondition::Absent,
                };
            }
            let seq = next_seq(read.as_ref().and_then(|(h, _)| h.seq));
            let head = SignedHead::sign(
                signer,
                version,
                at.as_str(),
                seq,
                SystemTime::now(),
                valid_for.unwrap_or(DEFAULT_VALID_FOR),
            )
            .map_err(|e| e.context(self.slug(at)))?
            .into_record();
            let swap = self
                .store
                .swap_head(at, &head, precondition.clone())
                .await?;
            self.log_head(at, &head, swap).await;
            if swap == Swap::Done || !free {
                return Ok(swap);
            }
            read = self.store.read_head(at).await?;
        }
        Ok(Swap::Lost)
    }

    /// Notes a swap that landed in the store's HEAD history (what `rollback` and
    /// `gc --keep-within` read). A failure only loses the note: HEAD has moved already.
    async fn log_head(&self, at: &BlockPath, head: &HeadRecord, swap: Swap) {
        if swap == Swap::Done
            && let Err(e) = self.store.record_head(at, head).await
        {
            tracing::warn!(slug = self.slug(at), error = %e, "HEAD history not written");
        }
    }

    /// Makes an older stored version current again: the HEAD swap of a put, without the
    /// upload. `target` is a full version id the store holds.
    pub async fn rollback(
        &self,
        at: &BlockPath,
        target: &str,
        if_version: Option<&VersionPrecondition>,
        valid_for: Option<Duration>,
    ) -> Result<()> {
        let slug = self.slug(at);
        let signer = self.signer(at)?;
        if !self.store.has_version(at, target).await? {
            return Err(Error::NotFound(format!(
                "{slug}: no version {} is stored there",
                short(target)
            )));
        }
        let read = self.store.read_head(at).await?;
        let precondition = precondition_for(if_version, read.as_ref(), &slug)?;
        // Rolling back never overwrites a HEAD it did not read.
        let precondition = match (precondition, &read) {
            (HeadPrecondition::Any, Some((_, tag))) => HeadPrecondition::Unchanged(tag.clone()),
            (HeadPrecondition::Any, None) => HeadPrecondition::Absent,
            (p, _) => p,
        };
        if let Some(signer) = &signer {
            self.sign_manifest(at, target, None, signer).await?;
        }
        match self
            .swap_to(at, target, read, precondition, signer.as_ref(), valid_for)
            .await?
        {
            Swap::Done => Ok(()),
            Swap::Lost => Err(Error::Conflict(format!(
                "{slug}: another put or rollback changed the current version first; nothing changed"
            ))),
        }
    }
}

/// The swap precondition `--if-version` asks for, given the HEAD read; a precondition that
/// does not hold is [`Error::Conflict`].
pub(super) fn precondition_for(
    if_version: Option<&VersionPrecondition>,
    head: Option<&(HeadRecord, HeadTag)>,
    slug: &str,
) -> Result<HeadPrecondition> {
    match (if_version, head) {
        (None, _) => Ok(HeadPrecondition::Any),
        (Some(VersionPrecondition::NoVersion), None) => Ok(HeadPrecondition::Absent),
        (Some(VersionPrecondition::Current(want)), Some((h, tag)))
            if h.version.starts_with(want.as_str()) && want.len() >= 4 =>
        {
            Ok(HeadPrecondition::Unchanged(tag.clone()))
        }
        (Some(_), current) => {
            let current =
                current.map_or("none".to_string(), |(h, _)| short(&h.version).to_string());
            Err(Error::Conflict(format!(
                "{slug}: --if-version does not hold: the current version is {current}"
            )))
        }
    }
}
