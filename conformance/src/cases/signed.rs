//! Signed versions: a block with a signing key signs every version it makes current; an agent
//! with trusted keys refuses, with exit 7 and nothing written, every version it cannot trust
//! (tampered, unsigned, signed by another key, rolled back, expired, copied from another
//! path), and takes a signed rollback.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use storage_core::signing::{GeneratedKey, Signer, TrustedKeys, generate_key_pair};
use storage_core::{GetOptions, PutOptions, RollbackOptions, Trust};

use super::*;
use crate::attacker::{Attacker, RawObjects};

/// The trust settings of a publisher signing with `sign` and an agent trusting `trusted`.
fn trust(sign: Option<&GeneratedKey>, trusted: &[&GeneratedKey], seen: &Path) -> Trust {
    let keys: Vec<String> = trusted.iter().map(|k| k.public_key.clone()).collect();
    Trust {
        signing_key: sign.map(|k| k.secret_key.clone()),
        signing_password: None,
        trusted_keys: (!keys.is_empty()).then(|| TrustedKeys::parse(&keys).expect("keys")),
        seen_heads: Some(seen.to_path_buf()),
    }
}

/// A get of the current version (or `version`) that must be refused for trust, with one
/// line naming the block and nothing written; returns the message.
async fn refused(s: &Subject, at: &str, version: Option<&str>, why: &str) -> String {
    let dest = s.fresh_dir("refused");
    let opts = GetOptions {
        version: version.map(str::to_string),
        ..GetOptions::default()
    };
    let err = s
        .block
        .get_directory(&s.path(at), &dest, &opts)
        .await
        .expect_err(why);
    let text = err.to_string();
    assert_eq!(err.exit_code(), 7, "{why}: {text}");
    assert_eq!(text.lines().count(), 1, "{why}: {text}");
    assert!(text.contains(s.block.label()), "{why}: {text}");
    assert!(
        !dest.exists(),
        "{why}: a refused get wrote {}",
        dest.display()
    );
    assert_no_leftovers_beside(&dest);
    text
}

/// A get of the current version that must succeed with `src`'s files.
async fn accepted(s: &Subject, at: &str, src: &Path, opts: GetOptions) {
    let dest = s.fresh_dir("accepted");
    s.block
        .get_directory(&s.path(at), &dest, &opts)
        .await
        .unwrap_or_else(|e| panic!("a trusted get of {at}: {e}"));
    assert_eq!(files_only(&snapshot(&dest)), files_only(&snapshot(src)));
}

fn signed_put(valid_for: Option<Duration>) -> PutOptions {
    PutOptions {
        valid_for,
        ..PutOptions::default()
    }
}

pub async fn signed_versions_refuse_every_attack_and_roll_back(s: &Subject) {
    let keys = s.fresh_dir("keys");
    let own = generate_key_pair(&keys, "own", None).expect("a key");
    let other = generate_key_pair(&keys, "other", None).expect("a key");
    let seen = s.fresh_dir("seen");
    let publisher = trust(Some(&own), &[&own], &seen);
    // A block that requires signatures reads no plain objects: the attacker reads the store
    // as the same block without trusted keys would. A registry's tests bring their own.
    let evil: Arc<dyn Attacker> = match &s.attacker {
        Some(a) => a.clone(),
        None if tamperable(s) => Arc::new(RawObjects {
            block: s.block.clone(),
            reading: trust(Some(&own), &[], &seen),
            after: publisher.clone(),
        }),
        None => {
            // Git signs its commits, which no raw-object attacker can reach: its attacks
            // (force-pushes, commits by other tools, trees changed after signing) run in
            // its own suite, `tests/git.rs`. Here: the settings are taken.
            s.block.set_trust(publisher).expect("trust settings");
            return;
        }
    };
    s.block.set_trust(publisher).expect("trust settings");
    let at = "signed";
    let p = s.path(at);
    let (src1, src2) = (s.fresh_dir("src1"), s.fresh_dir("src2"));
    small_tree(&src1, "one");
    small_tree(&src2, "two");
    let put_signed = |src: PathBuf, valid_for| async move {
        s.block
            .put_directory(&src, &s.path(at), &signed_put(valid_for))
            .await
            .unwrap_or_else(|e| panic!("a signed put: {e}"))
            .version
            .unwrap()
    };

    // Accepted: signed puts, read by an agent that trusts the key.
    let v1 = put_signed(src1.clone(), None).await;
    let sig1 = evil.signature(&p, &v1).await;
    let head1 = evil.head(&p).await;
    accepted(s, at, &src1, GetOptions::default()).await;
    let v2 = put_signed(src2.clone(), None).await;
    let head2 = evil.head(&p).await;
    let manifest2 = evil.manifest(&p, &v2).await;
    let sig2 = evil.signature(&p, &v2).await;
    accepted(s, at, &src2, GetOptions::default()).await;

    // HEAD put back to the older signed one, after the agent saw the newer.
    evil.set_head(&p, head1.clone()).await;
    let why = refused(s, at, None, "a rolled-back HEAD").await;
    assert!(why.contains("older"), "{why}");
    // Unless the agent is told to take it.
    let told = GetOptions {
        allow_rollback: true,
        ..GetOptions::default()
    };
    accepted(s, at, &src1, told).await;
    evil.set_head(&p, head2.clone()).await;
    accepted(s, at, &src2, GetOptions::default()).await;

    // HEAD changed after signing, and HEAD stripped of its signature.
    let mut moved: serde_json::Value = serde_json::from_slice(&head2).unwrap();
    moved["version"] = serde_json::Value::String(v1.clone());
    evil.set_head(&p, serde_json::to_vec(&moved).unwrap()).await;
    let why = refused(s, at, None, "a tampered HEAD").await;
    assert!(why.contains("changed after signing"), "{why}");
    let mut stripped: serde_json::Value = serde_json::from_slice(&head2).unwrap();
    for field in ["seq", "expires", "path", "signature"] {
        stripped.as_object_mut().unwrap().remove(field);
    }
    evil.set_head(&p, serde_json::to_vec(&stripped).unwrap())
        .await;
    let why = refused(s, at, None, "a stripped HEAD").await;
    assert!(why.contains("not signed"), "{why}");
    evil.set_head(&p, head2.clone()).await;

    // The manifest changed after signing (its record only: the version id still holds).
    let mut m: serde_json::Value =
        serde_json::from_slice(&zstd::decode_all(&manifest2[..]).unwrap()).unwrap();
    m["record"] = serde_json::json!({"message": "nothing to see here"});
    let forged = zstd::encode_all(&serde_json::to_vec(&m).unwrap()[..], 3).unwrap();
    evil.set_manifest(&p, &v2, forged).await;
    let why = refused(s, at, None, "a tampered manifest").await;
    assert!(why.contains("changed after signing"), "{why}");
    evil.set_manifest(&p, &v2, manifest2.clone()).await;

    // Another version's signature; a signature by a key the agent does not trust.
    evil.set_signature(&p, &v2, sig1.clone()).await;
    refused(s, at, None, "a swapped signature").await;
    let foreign = Signer::from_key_file(&other.secret_key, None).unwrap();
    let text = foreign
        .sign(
            &manifest2,
            &storage_core::signing::manifest_comment(s.path(at).as_str(), &v2),
        )
        .unwrap();
    evil.set_signature(&p, &v2, text.into_bytes()).await;
    let why = refused(s, at, None, "a signature by an untrusted key").await;
    assert!(why.contains("not trusted"), "{why}");
    evil.set_signature(&p, &v2, sig2.clone()).await;
    accepted(s, at, &src2, GetOptions::default()).await;

    // A signed manifest and its signature copied to another path.
    let copy = "copied";
    s.block
        .put_directory(&src2, &s.path(copy), &signed_put(None))
        .await
        .expect("a signed put");
    evil.set_manifest(&s.path(copy), &v2, manifest2.clone())
        .await;
    evil.set_signature(&s.path(copy), &v2, sig2.clone()).await;
    let why = refused(s, copy, None, "a manifest signed for another path").await;
    assert!(why.contains("signed for path"), "{why}");

    // An unsigned version (a writer without the key), current or named.
    s.block
        .set_trust(trust(None, &[], &seen))
        .expect("trust settings");
    let src3 = s.fresh_dir("src3");
    small_tree(&src3, "three");
    let v3 = put(s, &src3, at).await.version.unwrap();
    s.block
        .set_trust(trust(Some(&own), &[&own], &seen))
        .expect("trust settings");
    let why = refused(s, at, None, "an unsigned HEAD").await;
    assert!(why.contains("not signed"), "{why}");
    let why = refused(s, at, Some(&v3), "an unsigned version").await;
    assert!(why.contains("not signed"), "{why}");

    // A signed rollback is taken: a new sequence number.
    let report = s
        .block
        .rollback(
            &s.path(at),
            &RollbackOptions {
                to: Some(v2.clone()),
                ..RollbackOptions::default()
            },
        )
        .await
        .expect("a signed rollback");
    assert_eq!(report.to, v2);
    assert_eq!(report.from.as_deref(), Some(v3.as_str()));
    accepted(s, at, &src2, GetOptions::default()).await;

    // An expired HEAD: no leeway past a second.
    put_signed(src1.clone(), Some(Duration::from_secs(2))).await;
    accepted(s, at, &src1, GetOptions::default()).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let why = refused(s, at, None, "an expired HEAD").await;
    assert!(why.contains("expired"), "{why}");
}
