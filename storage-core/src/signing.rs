//! Signed versions: Ed25519 keys and signatures in minisign's formats, so Debian's `minisign`
//! verifies what a block signs (`minisign -V`) and keys and signatures it makes are accepted.
//!
//! - [`Signer`] holds a block's secret key (`signing_key`, maybe password-protected with
//!   scrypt as minisign does) and signs bytes into `.minisig` text.
//! - [`TrustedKeys`] holds a block's `trusted_keys` and verifies such text, naming the key.
//! - [`SignedHead`] is HEAD as a signing block writes it: still JSON naming the version (older
//!   agents read it), plus a sequence number, an expiry, the path it was signed for and a
//!   signature over those fields.
//! - [`manifest_comment`] is the signed (trusted) comment of a manifest's signature: it binds
//!   the manifest to the path it was put at, so a signed manifest copied elsewhere is refused.
//! - [`SeenHeads`] remembers, per block and path, the newest HEAD sequence number this agent
//!   accepted, so an older signed HEAD put back (a rollback attack) is refused.
//!
//! Every refusal is [`Error::Trust`] (exit 7); callers add the slug.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A key's id as minisign prints it: 16 upper-case hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyId(pub u64);

impl KeyId {
    fn of(keynum: &[u8]) -> KeyId {
        let mut b = [0u8; 8];
        b.copy_from_slice(&keynum[..8]);
        KeyId(u64::from_le_bytes(b))
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016X}", self.0)
    }
}

impl Serialize for KeyId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A secret signing key, decrypted. Its Debug shows only the key id.
pub struct Signer {
    sk: minisign::SecretKey,
    pk: minisign::PublicKey,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signer({})", self.key_id())
    }
}

/// The minisign library's errors say what failed without echoing a key or a password.
fn said(e: minisign::PError) -> String {
    crate::error::one_line(&e.to_string())
}

impl Signer {
    /// Reads a minisign secret key file (`minisign -G` or `blockctl key generate`). An
    /// encrypted key needs `password`; a wrong one is exit 4. Never prompts.
    pub fn from_key_file(path: &Path, password: Option<&str>) -> Result<Signer> {
        let what = format!("signing key {}", path.display());
        let text = std::fs::read_to_string(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => Error::NotFound(format!("{what}: no such file")),
            _ => Error::io(format!("reading {what}"), e),
        })?;
        Self::from_key_text(&text, password, &what)
    }

    /// As [`Signer::from_key_file`], from the file's text; `what` names it in errors.
    pub fn from_key_text(text: &str, password: Option<&str>, what: &str) -> Result<Signer> {
        let encrypted = secret_key_is_encrypted(text)
            .ok_or_else(|| Error::Usage(format!("{what}: not a minisign secret key")))?;
        let sk_box = minisign::SecretKeyBox::from_string(text)
            .map_err(|e| Error::Usage(format!("{what}: {}", said(e))))?;
        let sk = if encrypted {
            let password = password.filter(|p| !p.is_empty()).ok_or_else(|| {
                Error::Usage(format!(
                    "{what} is encrypted: give its password (the block's signing_password, e.g. env:NAME)"
                ))
            })?;
            // Decrypting an encrypted key fails with a Verify error exactly when the key's
            // checksum does not match what the password decrypted: a wrong password.
            minisign::SecretKey::from_box(sk_box, Some(password.to_string())).map_err(
                |e| match e.kind() {
                    minisign::ErrorKind::Verify => Error::Auth(format!("{what}: wrong password")),
                    _ => Error::Usage(format!("{what}: {}", said(e))),
                },
            )?
        } else {
            // `minisign -G -W` leaves an unencrypted key's checksum zero, which the crate's
            // box reader refuses as corrupted; the key bytes are read as they are instead,
            // and a signature made with them is checked below.
            drop(sk_box);
            let line = text.lines().nth(1).unwrap_or_default().trim();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(line)
                .map_err(|_| Error::Usage(format!("{what}: not a minisign secret key")))?;
            minisign::SecretKey::from_bytes(&bytes)
                .map_err(|e| Error::Usage(format!("{what}: {}", said(e))))?
        };
        let pk = minisign::PublicKey::from_secret_key(&sk)
            .map_err(|e| Error::Usage(format!("{what}: {}", said(e))))?;
        // `sign` checks its signature against the public half: a damaged key fails here.
        minisign::sign(Some(&pk), &sk, Cursor::new(b"check"), None, None)
            .map_err(|_| Error::Usage(format!("{what}: the key is damaged")))?;
        Ok(Signer { sk, pk })
    }

    /// The id of the key that signs, as `trusted_keys` entries are matched by.
    pub fn key_id(&self) -> KeyId {
        KeyId::of(self.pk.keynum())
    }

    /// The public key's base64 string, as `trusted_keys` takes it.
    pub fn public_key(&self) -> String {
        self.pk.to_base64()
    }

    /// `bytes` signed (prehashed Ed25519, as `minisign -S` signs by default) into `.minisig`
    /// text; `trusted_comment` is signed too and is what `minisign -V` prints.
    pub fn sign(&self, bytes: &[u8], trusted_comment: &str) -> Result<String> {
        if trusted_comment.contains(['\n', '\r']) {
            return Err(Error::Usage("a trusted comment is one line".into()));
        }
        let sig = minisign::sign(
            Some(&self.pk),
            &self.sk,
            Cursor::new(bytes),
            Some(trusted_comment),
            Some(&format!("signature from blockctl key {}", self.key_id())),
        )
        .map_err(|e| Error::Backend(format!("signing: {}", said(e))))?;
        Ok(sig.into_string())
    }
}

/// Whether a minisign secret key file's text holds an encrypted key; `None` when it is not one.
fn secret_key_is_encrypted(text: &str) -> Option<bool> {
    let line = text.lines().nth(1)?.trim();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(line)
        .ok()?;
    // sig_alg (2), kdf_alg (2): "Ed" then "Sc" (scrypt) or two zero bytes (none).
    match bytes.get(..4)? {
        [b'E', b'd', b'S', b'c'] => Some(true),
        [b'E', b'd', 0, 0] => Some(false),
        _ => None,
    }
}

/// A signature that verified: the key that made it and the comment it signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The trusted key that made the signature.
    pub key: KeyId,
    /// The signed comment, as `minisign -V` prints it.
    pub trusted_comment: String,
}

/// The public keys a block trusts (`trusted_keys`).
#[derive(Clone, Default)]
pub struct TrustedKeys {
    keys: Vec<(KeyId, minisign::PublicKey)>,
}

impl fmt::Debug for TrustedKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.keys.iter().map(|(id, _)| id.to_string()))
            .finish()
    }
}

impl TrustedKeys {
    /// Each entry is a public key's base64 string (`RWQ...`, 56 characters), the text of a
    /// `.pub` file, or the path of one (`~/` is the home folder).
    pub fn parse(list: &[String]) -> Result<TrustedKeys> {
        let mut keys = Vec::with_capacity(list.len());
        for entry in list {
            let pk = parse_public_key(entry.trim())?;
            let id = KeyId::of(pk.keynum());
            if !keys.iter().any(|(k, _)| *k == id) {
                keys.push((id, pk));
            }
        }
        Ok(TrustedKeys { keys })
    }

    /// Whether no key is trusted.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The ids of the trusted keys, in the order given.
    pub fn ids(&self) -> Vec<KeyId> {
        self.keys.iter().map(|(k, _)| *k).collect()
    }

    /// Checks `sig_text` (a `.minisig`) over `bytes`: made by a trusted key, over exactly
    /// these bytes, its trusted comment unchanged. Legacy (not prehashed) signatures are
    /// accepted as `minisign -V` accepts them.
    pub fn verify(&self, bytes: &[u8], sig_text: &str) -> Result<Verified> {
        let sig = minisign::SignatureBox::from_string(sig_text)
            .map_err(|_| Error::Trust("the signature is not a minisign signature".into()))?;
        let key = KeyId::of(sig.keynum());
        let pk = self
            .keys
            .iter()
            .find(|(id, _)| *id == key)
            .map(|(_, pk)| pk)
            .ok_or_else(|| Error::Trust(format!("signed by key {key}, which is not trusted")))?;
        minisign::verify(pk, &sig, Cursor::new(bytes), true, false, true).map_err(|_| {
            Error::Trust(format!(
                "the signature by key {key} does not match: changed after signing"
            ))
        })?;
        let trusted_comment = sig
            .trusted_comment()
            .map_err(|_| Error::Trust("the signature has no trusted comment".into()))?;
        Ok(Verified {
            key,
            trusted_comment,
        })
    }
}

fn parse_public_key(entry: &str) -> Result<minisign::PublicKey> {
    let bad = |why: &str| Error::Usage(format!("trusted key `{}`: {why}", shorten(entry)));
    if entry.is_empty() {
        return Err(bad("empty"));
    }
    // Every minisign public key is 56 characters of base64 starting `RW` (its "Ed" tag).
    let base64_key = entry.len() == 56
        && entry.starts_with("RW")
        && entry
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='));
    if base64_key {
        return minisign::PublicKey::from_base64(entry)
            .map_err(|_| bad("not a minisign public key"));
    }
    let text = if entry.starts_with("untrusted comment:") {
        entry.to_string()
    } else {
        let path = expand_home(entry);
        std::fs::read_to_string(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                Error::NotFound(format!("trusted key file {}: no such file", path.display()))
            }
            _ => Error::io(format!("reading trusted key file {}", path.display()), e),
        })?
    };
    minisign::PublicKey::from_box(
        minisign::PublicKeyBox::from_string(&text).map_err(|_| bad("not a minisign public key"))?,
    )
    .map_err(|_| bad("not a minisign public key"))
}

fn shorten(s: &str) -> String {
    let one = s.lines().next().unwrap_or_default();
    one.chars().take(64).collect()
}

fn expand_home(p: &str) -> PathBuf {
    match p.strip_prefix("~/") {
        Some(rest) => std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_default()
            .join(rest),
        None => PathBuf::from(p),
    }
}

/// A key pair `blockctl key generate` wrote.
#[derive(Debug, Clone, Serialize)]
pub struct GeneratedKey {
    /// The name the files are called by.
    pub name: String,
    /// The secret key file (`NAME.key`), the block's `signing_key`.
    pub secret_key: PathBuf,
    /// The public key file (`NAME.pub`).
    pub public_key_file: PathBuf,
    /// The base64 string `trusted_keys` takes.
    pub public_key: String,
    /// The key's id.
    pub key_id: KeyId,
    /// Whether the secret key is encrypted with a password.
    pub encrypted: bool,
}

/// Writes a new Ed25519 key pair in minisign's formats as `dir/NAME.key` (0600, encrypted
/// with `password` by scrypt, or not when `None`) and `dir/NAME.pub`. Existing files are
/// not replaced (exit 6).
pub fn generate_key_pair(dir: &Path, name: &str, password: Option<&str>) -> Result<GeneratedKey> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if !ok {
        return Err(Error::Usage(format!(
            "key name `{}` must be letters, digits, `_`, `-` and `.` (not first)",
            name.escape_debug()
        )));
    }
    if password.is_some_and(str::is_empty) {
        return Err(Error::Usage(
            "the key's password is empty (give one, or --unencrypted)".into(),
        ));
    }
    let pair = match password {
        Some(p) => minisign::KeyPair::generate_encrypted_keypair(Some(p.to_string())),
        None => minisign::KeyPair::generate_unencrypted_keypair(),
    }
    .map_err(|e| Error::Backend(format!("generating key {name}: {}", said(e))))?;
    let key_id = KeyId::of(pair.pk.keynum());
    let sk_text = pair
        .sk
        .to_box(Some(if password.is_some() {
            "minisign encrypted secret key"
        } else {
            "minisign secret key (not encrypted)"
        }))
        .map_err(|e| Error::Backend(format!("generating key {name}: {}", said(e))))?
        .into_string();
    let pk_text = pair
        .pk
        .to_box()
        .map_err(|e| Error::Backend(format!("generating key {name}: {}", said(e))))?
        .into_string();
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let secret_key = dir.join(format!("{name}.key"));
    let public_key_file = dir.join(format!("{name}.pub"));
    for p in [&secret_key, &public_key_file] {
        if p.exists() {
            return Err(Error::Conflict(format!(
                "key {name}: {} exists; remove it or choose another name",
                p.display()
            )));
        }
    }
    write_new(&secret_key, sk_text.as_bytes(), 0o600)?;
    if let Err(e) = write_new(&public_key_file, pk_text.as_bytes(), 0o644) {
        let _ = std::fs::remove_file(&secret_key);
        return Err(e);
    }
    Ok(GeneratedKey {
        name: name.to_string(),
        secret_key,
        public_key_file,
        public_key: pair.pk.to_base64(),
        key_id,
        encrypted: password.is_some(),
    })
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let ctx = || format!("writing {}", path.display());
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| Error::io(ctx(), e))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::io(ctx(), e))
}

/// The trusted comment of a manifest's signature: it names the path the version was put at,
/// so a manifest signed for one path is refused at another.
pub fn manifest_comment(path: &str, version: &str) -> String {
    format!(
        "blocks manifest path={} version={version}",
        quote_path(path)
    )
}

/// Checks that a verified manifest signature was made for `version` at `path`.
pub fn check_manifest_comment(v: &Verified, path: &str, version: &str) -> Result<()> {
    if v.trusted_comment == manifest_comment(path, version) {
        return Ok(());
    }
    let signed_for = v
        .trusted_comment
        .strip_prefix("blocks manifest path=")
        .and_then(|r| r.rsplit_once(" version="));
    Err(Error::Trust(match signed_for {
        Some((p, v2)) if v2 == version => format!(
            "version {} was signed for path {p}, not this one",
            crate::package::manifest::short(version)
        ),
        Some(_) => format!(
            "the signature is of another version than {}",
            crate::package::manifest::short(version)
        ),
        None => "the signature is not a blocks manifest signature".into(),
    }))
}

/// A path as signed: `/` for the block's root, else the path; any control character
/// escaped so the comment stays one line.
fn quote_path(path: &str) -> String {
    if path.is_empty() {
        return "/".into();
    }
    path.escape_debug().to_string()
}

/// HEAD as a signing block writes it. The first two fields are those of
/// [`crate::HeadRecord`], so an agent that knows nothing of signing still reads it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedHead {
    /// The current version's id.
    pub version: String,
    /// When HEAD was swapped (RFC 3339, UTC).
    pub updated: String,
    /// Grows by one with every HEAD swap at this path (put or rollback).
    pub seq: u64,
    /// RFC 3339; a trusting agent refuses the HEAD after this (within a second).
    pub expires: String,
    /// The path inside the block this HEAD was signed for (`/` for the root).
    pub path: String,
    /// A `.minisig` over [`SignedHead::signed_bytes`].
    pub signature: String,
}

/// The sequence number of the next signed HEAD after one numbered `previous` (`None`: no
/// signed HEAD before): one more, and at least the time in milliseconds, so the number keeps
/// growing even after a writer without the key replaced HEAD (and its number) in between.
pub fn next_seq(previous: Option<u64>) -> u64 {
    let now = crate::package::store::unix_millis().max(0) as u64;
    (previous.unwrap_or(0) + 1).max(now)
}

/// How long a signed HEAD stays valid when `put --valid-for` is not given.
pub const DEFAULT_VALID_FOR: Duration = Duration::from_secs(30 * 24 * 3600);

/// Leeway past a HEAD's expiry, for clocks a little apart.
pub const EXPIRY_LEEWAY: Duration = Duration::from_secs(1);

impl SignedHead {
    /// A new HEAD naming `version` at `path`, with sequence number `seq`, valid for
    /// `valid_for` from `now`, signed by `signer`.
    pub fn sign(
        signer: &Signer,
        version: &str,
        path: &str,
        seq: u64,
        now: SystemTime,
        valid_for: Duration,
    ) -> Result<SignedHead> {
        let expires = now
            .checked_add(valid_for)
            .ok_or_else(|| Error::Usage("--valid-for is too long".into()))?;
        let mut head = SignedHead {
            version: version.to_string(),
            updated: humantime::format_rfc3339_millis(now).to_string(),
            seq,
            expires: humantime::format_rfc3339_seconds(expires).to_string(),
            path: quote_path(path),
            signature: String::new(),
        };
        let comment = format!(
            "blocks head path={} version={version} seq={seq} expires={}",
            head.path, head.expires
        );
        head.signature = signer.sign(&head.signed_bytes(), &comment)?;
        Ok(head)
    }

    /// What the signature covers: every field but the signature, one per line.
    pub fn signed_bytes(&self) -> Vec<u8> {
        format!(
            "blocks-head/1\nversion={}\nupdated={}\nseq={}\nexpires={}\npath={}\n",
            self.version, self.updated, self.seq, self.expires, self.path
        )
        .into_bytes()
    }

    /// The HEAD as stored: pretty-printed JSON.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("a HEAD always serializes")
    }

    /// Parses HEAD's bytes as a signed HEAD; a HEAD without the signed fields (written by a
    /// block that does not sign, or stripped) is [`Error::Trust`] "unsigned".
    pub fn parse(bytes: &[u8]) -> Result<SignedHead> {
        Self::from_record(&crate::HeadRecord::parse(bytes, "HEAD")?)
    }

    /// The signed fields of a HEAD read; [`Error::Trust`] "not signed" when any is missing.
    pub fn from_record(head: &crate::HeadRecord) -> Result<SignedHead> {
        match (&head.seq, &head.expires, &head.path, &head.signature) {
            (Some(seq), Some(expires), Some(path), Some(signature)) => Ok(SignedHead {
                version: head.version.clone(),
                updated: head.updated.clone(),
                seq: *seq,
                expires: expires.clone(),
                path: path.clone(),
                signature: signature.clone(),
            }),
            _ => Err(Error::Trust("HEAD is not signed".into())),
        }
    }

    /// HEAD as stored.
    pub fn into_record(self) -> crate::HeadRecord {
        crate::HeadRecord {
            version: self.version,
            updated: self.updated,
            seq: Some(self.seq),
            expires: Some(self.expires),
            path: Some(self.path),
            signature: Some(self.signature),
        }
    }

    /// Everything a trusting agent checks of a HEAD read at `path`: signed by a trusted key
    /// over these very fields, for this path, not expired at `now`. Freshness against the
    /// HEADs already accepted is [`SeenHeads::accept`].
    pub fn verify(&self, keys: &TrustedKeys, path: &str, now: SystemTime) -> Result<Verified> {
        self.verify_at(keys, "path", path, now)
    }

    /// [`Self::verify`] where the place a HEAD is signed for is called `place` in messages
    /// (git calls it a branch).
    pub fn verify_at(
        &self,
        keys: &TrustedKeys,
        place: &str,
        path: &str,
        now: SystemTime,
    ) -> Result<Verified> {
        let v = keys
            .verify(&self.signed_bytes(), &self.signature)
            .map_err(|e| match e {
                Error::Trust(m) => Error::Trust(format!("HEAD: {m}")),
                other => other,
            })?;
        if self.path != quote_path(path) {
            return Err(Error::Trust(format!(
                "HEAD was signed for {place} {}, not this one",
                self.path
            )));
        }
        let expires = humantime::parse_rfc3339_weak(&self.expires)
            .map_err(|_| Error::Trust("HEAD has no valid expiry".into()))?;
        if now > expires + EXPIRY_LEEWAY {
            return Err(Error::Trust(format!(
                "HEAD expired at {} (the block's publisher must put or roll back again)",
                self.expires
            )));
        }
        Ok(v)
    }
}

/// The newest HEAD sequence number this agent accepted, per block and path, in
/// `$BLOCKCTL_HOME/trust/heads.json`.
#[derive(Debug)]
pub struct SeenHeads {
    file: PathBuf,
}

impl SeenHeads {
    /// The record kept under `dir` (the blockctl home); nothing is read until it is used.
    pub fn open(dir: &Path) -> SeenHeads {
        SeenHeads {
            file: dir.join("trust").join("heads.json"),
        }
    }

    /// Where [`crate::registry::blockctl_home`] keeps it.
    pub fn default_location() -> SeenHeads {
        Self::open(&crate::registry::blockctl_home())
    }

    /// Accepts a verified HEAD with `seq` for `block` at `path`: refused when older than one
    /// already accepted there, unless `allow_older` (the agent was told to take it);
    /// remembered otherwise. Concurrent agents on one machine serialize on a lock file.
    pub fn accept(&self, block: &str, path: &str, seq: u64, allow_older: bool) -> Result<()> {
        let dir = self.file.parent().expect("a file in a folder");
        crate::machine_lock::while_locked(dir, "heads.lock", || {
            let mut seen = self.load()?;
            let key = format!("{block}\t{}", quote_path(path));
            let newest = seen.get(&key).copied();
            if let Some(newest) = newest
                && seq < newest
                && !allow_older
            {
                return Err(Error::Trust(format!(
                    "HEAD has sequence number {seq}, older than {newest} already accepted here: a rollback (take it with --allow-rollback if it is meant)"
                )));
            }
            if newest != Some(seq) {
                seen.insert(key, seq);
                let tmp = dir.join(format!("heads.json.{}", std::process::id()));
                let body = serde_json::to_vec_pretty(&seen).expect("a map serializes");
                std::fs::write(&tmp, body)
                    .and_then(|_| std::fs::rename(&tmp, &self.file))
                    .map_err(|e| Error::io(format!("writing {}", self.file.display()), e))?;
            }
            Ok(())
        })
    }

    /// The newest sequence number accepted for `block` at `path`.
    pub fn newest(&self, block: &str, path: &str) -> Result<Option<u64>> {
        Ok(self
            .load()?
            .get(&format!("{block}\t{}", quote_path(path)))
            .copied())
    }

    fn load(&self) -> Result<BTreeMap<String, u64>> {
        match std::fs::read(&self.file) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| {
                Error::Trust(format!(
                    "{} is damaged ({e}); remove it to trust the HEADs read next",
                    self.file.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(Error::io(format!("reading {}", self.file.display()), e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(dir: &Path, name: &str, password: Option<&str>) -> (Signer, TrustedKeys) {
        let g = generate_key_pair(dir, name, password).unwrap();
        let signer = Signer::from_key_file(&g.secret_key, password).unwrap();
        assert_eq!(signer.key_id(), g.key_id);
        let keys = TrustedKeys::parse(std::slice::from_ref(&g.public_key)).unwrap();
        (signer, keys)
    }

    #[test]
    fn generated_keys_sign_and_verify_and_the_secret_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let g = generate_key_pair(dir.path(), "ci", None).unwrap();
        let mode = std::fs::metadata(&g.secret_key)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let signer = Signer::from_key_file(&g.secret_key, None).unwrap();
        assert!(!format!("{signer:?}").contains(&g.public_key));
        let sig = signer.sign(b"hello", "blocks test").unwrap();
        // By base64, by `.pub` file path and by its text.
        for entry in [
            g.public_key.clone(),
            g.public_key_file.display().to_string(),
            std::fs::read_to_string(&g.public_key_file).unwrap(),
        ] {
            let keys = TrustedKeys::parse(&[entry]).unwrap();
            let v = keys.verify(b"hello", &sig).unwrap();
            assert_eq!(v.key, g.key_id);
            assert_eq!(v.trusted_comment, "blocks test");
            let err = keys.verify(b"hellO", &sig).unwrap_err();
            assert_eq!(err.exit_code(), 7, "{err}");
        }
        // Not replaced.
        let err = generate_key_pair(dir.path(), "ci", None).unwrap_err();
        assert_eq!(err.exit_code(), 6);
        assert_eq!(
            generate_key_pair(dir.path(), "../x", None)
                .unwrap_err()
                .exit_code(),
            2
        );
    }

    #[test]
    fn an_encrypted_key_needs_its_password() {
        let dir = tempfile::tempdir().unwrap();
        let g = generate_key_pair(dir.path(), "k", Some("correct horse")).unwrap();
        let text = std::fs::read_to_string(&g.secret_key).unwrap();
        assert_eq!(secret_key_is_encrypted(&text), Some(true));
        let err = Signer::from_key_file(&g.secret_key, None).unwrap_err();
        assert_eq!(err.exit_code(), 2, "{err}");
        let err = Signer::from_key_file(&g.secret_key, Some("wrong")).unwrap_err();
        assert_eq!(err.exit_code(), 4, "{err}");
        assert!(!err.to_string().contains("wrong\""), "{err}");
        let s = Signer::from_key_file(&g.secret_key, Some("correct horse")).unwrap();
        assert_eq!(s.key_id(), g.key_id);
    }

    #[test]
    fn another_key_and_garbage_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (a, _) = pair(dir.path(), "a", None);
        let (_, keys_b) = pair(dir.path(), "b", None);
        let sig = a.sign(b"x", "c").unwrap();
        let err = keys_b.verify(b"x", &sig).unwrap_err();
        assert!(err.to_string().contains("not trusted"), "{err}");
        assert_eq!(err.exit_code(), 7);
        assert_eq!(keys_b.verify(b"x", "nonsense").unwrap_err().exit_code(), 7);
        assert_eq!(
            TrustedKeys::parse(&["RWQnot-a-key".into()])
                .unwrap_err()
                .exit_code(),
            3
        );
        assert_eq!(
            TrustedKeys::parse(&["untrusted comment: x\nAAAA\n".into()])
                .unwrap_err()
                .exit_code(),
            2
        );
    }

    #[test]
    fn manifest_signatures_name_their_path() {
        let dir = tempfile::tempdir().unwrap();
        let (s, keys) = pair(dir.path(), "k", None);
        let v = "a".repeat(64);
        let sig = s.sign(b"m", &manifest_comment("etl", &v)).unwrap();
        let ok = keys.verify(b"m", &sig).unwrap();
        check_manifest_comment(&ok, "etl", &v).unwrap();
        let err = check_manifest_comment(&ok, "other", &v).unwrap_err();
        assert!(err.to_string().contains("signed for path etl"), "{err}");
        assert_eq!(
            check_manifest_comment(&ok, "etl", &"b".repeat(64))
                .unwrap_err()
                .exit_code(),
            7
        );
    }

    #[test]
    fn signed_heads_are_checked_for_key_path_expiry_and_tampering() {
        let dir = tempfile::tempdir().unwrap();
        let (s, keys) = pair(dir.path(), "k", None);
        let (other, _) = pair(dir.path(), "o", None);
        let v = "c".repeat(64);
        let now = SystemTime::now();
        let day = Duration::from_secs(86400);
        let head = SignedHead::sign(&s, &v, "etl", 3, now, day).unwrap();
        let back = SignedHead::parse(&head.to_json()).unwrap();
        assert_eq!(back, head);
        // An old agent still reads it.
        crate::HeadRecord::parse(&head.to_json(), "x").unwrap();
        back.verify(&keys, "etl", now).unwrap();
        let refused = |h: &SignedHead, path: &str, at: SystemTime| {
            let e = h.verify(&keys, path, at).unwrap_err();
            assert_eq!(e.exit_code(), 7, "{e}");
            e.to_string()
        };
        assert!(refused(&head, "prod", now).contains("signed for path etl"));
        assert!(refused(&head, "etl", now + day + Duration::from_secs(2)).contains("expired"));
        let mut bumped = head.clone();
        bumped.seq = 99;
        assert!(refused(&bumped, "etl", now).contains("changed after signing"));
        let mut moved = head.clone();
        moved.version = "d".repeat(64);
        assert!(refused(&moved, "etl", now).contains("changed after signing"));
        let foreign = SignedHead::sign(&other, &v, "etl", 3, now, day).unwrap();
        assert!(refused(&foreign, "etl", now).contains("not trusted"));
        // Unsigned and stripped HEADs.
        let plain = format!(r#"{{"version":"{v}","updated":"2026-01-01T00:00:00Z"}}"#);
        let e = SignedHead::parse(plain.as_bytes()).unwrap_err();
        assert_eq!(e.exit_code(), 7);
        let mut stripped: serde_json::Value = serde_json::from_slice(&head.to_json()).unwrap();
        stripped.as_object_mut().unwrap().remove("signature");
        let e = SignedHead::parse(&serde_json::to_vec(&stripped).unwrap()).unwrap_err();
        assert_eq!(e.exit_code(), 7);
    }

    #[test]
    fn seen_heads_refuse_a_rollback_unless_told() {
        let dir = tempfile::tempdir().unwrap();
        let seen = SeenHeads::open(dir.path());
        seen.accept("s3/prod", "etl", 5, false).unwrap();
        seen.accept("s3/prod", "etl", 5, false).unwrap();
        seen.accept("s3/prod", "etl", 6, false).unwrap();
        let e = seen.accept("s3/prod", "etl", 5, false).unwrap_err();
        assert_eq!(e.exit_code(), 7, "{e}");
        // Another path or block has its own counter.
        seen.accept("s3/prod", "other", 1, false).unwrap();
        seen.accept("s3/test", "etl", 1, false).unwrap();
        seen.accept("s3/prod", "etl", 2, true).unwrap();
        assert_eq!(seen.newest("s3/prod", "etl").unwrap(), Some(2));
    }
}
