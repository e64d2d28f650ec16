//! A version as an OCI artifact: the image manifest that lists the version's blobs as titled
//! layers (format 3: its packs, in the order its frames first use them; format 2: its frames,
//! in order) with the blockctl manifest as config, and how one is read back and checked.

use std::collections::BTreeMap;

use bytes::Bytes;
use oci_client::manifest::{OCI_IMAGE_MEDIA_TYPE, OciDescriptor, OciImageManifest};
use storage_core::HeadRecord;
use storage_core::bounds::{HEAD_MAX, MANIFEST_COMPRESSED_MAX, SIGNATURE_MAX};
use storage_core::package::manifest::{
    FRAMES_FORMAT, PACKS_FORMAT, PackageManifest, is_version_id, short,
};
use storage_core::package::packs::PACK_MAX;
use storage_core::{Error, Result};

use crate::registry::{Registry, digest_of};

/// The artifact type of a blockctl version.
pub const ARTIFACT_TYPE: &str = "application/vnd.blockctl.package.v2";
/// The config blob: the blockctl manifest, zstd-compressed JSON.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.blockctl.manifest.v2+json+zstd";
/// Each layer of format 2: one zstd frame of the package's tar stream.
pub const FRAME_MEDIA_TYPE: &str = "application/vnd.blockctl.frame.v1.tar+zstd";
/// Each layer of format 3: a pack, zstd frames of tar streams one after another (those of
/// one put, in order; a version's frames are where its manifest says).
pub const PACK_MEDIA_TYPE: &str = "application/vnd.blockctl.pack.v1.tar+zstd";
/// The annotation oras and other artifact clients name pulled files by.
pub const TITLE: &str = "org.opencontainers.image.title";
const CREATED: &str = "org.opencontainers.image.created";
/// The annotation naming the version an artifact holds.
pub const VERSION: &str = "dev.blockctl.version";
/// The annotation that marks the manifest `current` is tagged with.
const TAG: &str = "dev.blockctl.tag";
/// The tag moved last, as HEAD.
pub const CURRENT: &str = "current";
/// The annotation of the manifest `current` is tagged with that carries a signing block's
/// HEAD record (sequence number, expiry, path, signature), as compact JSON.
const HEAD: &str = "dev.blockctl.head";
/// The annotation of the manifest `current` is tagged with that keeps the last
/// [`HISTORY_MAX`] HEAD swaps, oldest first, as compact JSON `[[unix ms, version], …]`: what
/// `rollback`, `versions` and `gc --keep-within` read, since a registry keeps no history of
/// where a tag pointed.
const HISTORY: &str = "dev.blockctl.history";
/// How many HEAD swaps `current` remembers.
pub const HISTORY_MAX: usize = 64;
/// The artifact type of a version's manifest signature, tagged `<version>.sig`.
pub const SIGNATURE_ARTIFACT_TYPE: &str = "application/vnd.blockctl.signature.v1";
/// Its one layer: the `.minisig` text over the version's config blob.
pub const MINISIG_MEDIA_TYPE: &str = "application/vnd.blockctl.minisig.v1";
/// The config of a signature artifact: the OCI empty descriptor's media type and bytes.
pub const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
pub const EMPTY_CONFIG: &[u8] = b"{}";
/// Frames checked, sent or fetched at once.
pub const IN_FLIGHT: usize = 8;

/// The title of layer `index` of format 2: names that sort in layer order, so that `cat` of
/// the pulled files in name order is the package.
pub fn frame_title(index: usize) -> String {
    format!("frame-{index:06}.tar.zst")
}

/// The title of layer `index` of format 3. Names sort in layer order; for a version whose
/// packs its own put wrote (a first put), `cat` of them in that order is the package.
pub fn pack_title(index: usize) -> String {
    format!("pack-{index:06}.zst")
}

/// The blobs a version's layers are, by sha256, in order: format 3's packs in the order its
/// frames first use them (each once), format 2's frames.
pub fn layer_blobs(manifest: &PackageManifest) -> Vec<String> {
    let sha = |s: &Option<String>| s.clone().unwrap_or_default();
    if manifest.format != PACKS_FORMAT {
        return manifest.frames.iter().map(|f| sha(&f.sha256)).collect();
    }
    let mut seen = std::collections::HashSet::new();
    manifest
        .frames
        .iter()
        .map(|f| sha(&f.pack))
        .filter(|p| seen.insert(p.clone()))
        .collect()
}

/// The image manifest of a version whose blockctl manifest is `config` (its stored bytes);
/// `sizes` are the sizes of its [`layer_blobs`], in order.
pub fn image_manifest(
    manifest: &PackageManifest,
    config: &[u8],
    sizes: &[u64],
) -> OciImageManifest {
    let packs = manifest.format == PACKS_FORMAT;
    let layers = layer_blobs(manifest)
        .into_iter()
        .zip(sizes)
        .enumerate()
        .map(|(i, (sha, size))| OciDescriptor {
            media_type: if packs {
                PACK_MEDIA_TYPE
            } else {
                FRAME_MEDIA_TYPE
            }
            .into(),
            digest: format!("sha256:{sha}"),
            size: *size as i64,
            urls: None,
            artifact_type: None,
            annotations: Some(BTreeMap::from([(
                TITLE.to_string(),
                if packs { pack_title(i) } else { frame_title(i) },
            )])),
        })
        .collect();
    OciImageManifest {
        schema_version: 2,
        media_type: Some(OCI_IMAGE_MEDIA_TYPE.into()),
        config: descriptor_of(CONFIG_MEDIA_TYPE, config),
        layers,
        subject: None,
        artifact_type: Some(ARTIFACT_TYPE.into()),
        annotations: Some(BTreeMap::from([
            (VERSION.to_string(), manifest.version.clone()),
            (CREATED.to_string(), manifest.created.clone()),
        ])),
    }
}

/// The manifest `current` is tagged with: the version's own, marked as the current one,
/// carrying `head` when it is signed (HEAD and the tag move in one manifest write) and the
/// HEAD `history` (its last [`HISTORY_MAX`] swaps, this one included, oldest first).
pub fn as_current(
    image: &OciImageManifest,
    head: Option<&HeadRecord>,
    history: &[(i64, String)],
) -> OciImageManifest {
    let mut current = image.clone();
    let annotations = current.annotations.get_or_insert_with(BTreeMap::new);
    annotations.insert(TAG.to_string(), CURRENT.to_string());
    let kept = &history[history.len().saturating_sub(HISTORY_MAX)..];
    if kept.is_empty() {
        annotations.remove(HISTORY);
    } else {
        let json = serde_json::to_string(kept).expect("a history serializes");
        annotations.insert(HISTORY.to_string(), json);
    }
    match head.filter(|h| h.signature.is_some()) {
        Some(h) => {
            let json = serde_json::to_string(h).expect("HEAD serializes");
            annotations.insert(HEAD.to_string(), json)
        }
        None => annotations.remove(HEAD),
    };
    current
}

/// The HEAD record the manifest tagged `current` carries; `None` when it carries none (a
/// block that does not sign wrote it). A record larger than [`HEAD_MAX`] or not a HEAD
/// record is refused.
pub fn head_of(image: &OciImageManifest) -> Result<Option<HeadRecord>> {
    let Some(json) = image.annotations.as_ref().and_then(|a| a.get(HEAD)) else {
        return Ok(None);
    };
    if json.len() as u64 > HEAD_MAX.bytes {
        return Err(HEAD_MAX.exceeded(&format!("the `{HEAD}` annotation of `{CURRENT}`")));
    }
    HeadRecord::parse(json.as_bytes(), CURRENT).map(Some)
}

/// The HEAD swaps the manifest tagged `current` remembers, oldest first; empty when it
/// carries none (written before the history was kept) or one that does not parse, or whose
/// entries name no version.
pub fn history_of(image: &OciImageManifest) -> Vec<(i64, String)> {
    let Some(json) = image.annotations.as_ref().and_then(|a| a.get(HISTORY)) else {
        return Vec::new();
    };
    let mut history: Vec<(i64, String)> = serde_json::from_str(json).unwrap_or_default();
    history.retain(|(_, v)| is_version_id(v));
    let extra = history.len().saturating_sub(HISTORY_MAX);
    history.drain(..extra);
    history
}

/// The tag of the signature of `version`'s manifest.
pub fn signature_tag(version: &str) -> String {
    format!("{version}.sig")
}

/// The descriptor of blob `bytes` of `media_type`, with no annotations.
fn descriptor_of(media_type: &str, bytes: &[u8]) -> OciDescriptor {
    OciDescriptor {
        media_type: media_type.into(),
        digest: digest_of(bytes),
        size: bytes.len() as i64,
        urls: None,
        artifact_type: None,
        annotations: None,
    }
}

/// The version whose signature a tag holds, if it is a signature's tag.
pub fn signed_version(tag: &str) -> Option<&str> {
    tag.strip_suffix(".sig").filter(|v| is_version_id(v))
}

/// The artifact that holds `signature` (its bytes) of the manifest of `version`: the OCI
/// empty config, and the `.minisig` as its one layer, titled so that oras pulls it as a file
/// named after the object-store signature (`<version>.json.zst.minisig`).
pub fn signature_manifest(version: &str, signature: &[u8]) -> OciImageManifest {
    OciImageManifest {
        schema_version: 2,
        media_type: Some(OCI_IMAGE_MEDIA_TYPE.into()),
        config: descriptor_of(EMPTY_MEDIA_TYPE, EMPTY_CONFIG),
        layers: vec![OciDescriptor {
            annotations: Some(BTreeMap::from([(
                TITLE.to_string(),
                format!("{version}.json.zst.minisig"),
            )])),
            ..descriptor_of(MINISIG_MEDIA_TYPE, signature)
        }],
        subject: None,
        artifact_type: Some(SIGNATURE_ARTIFACT_TYPE.into()),
        annotations: Some(BTreeMap::from([(VERSION.to_string(), version.to_string())])),
    }
}

/// The signature text a signature artifact holds, read within [`SIGNATURE_MAX`]; an
/// artifact that is not one is a trust failure (the version is then not signed by anyone
/// this agent trusts).
pub async fn read_signature(
    registry: &Registry,
    repo: &str,
    image: &OciImageManifest,
    version: &str,
) -> Result<String> {
    let what = format!("the signature of version {}", short(version));
    let layer = match image.layers.as_slice() {
        [l] if image.artifact_type.as_deref() == Some(SIGNATURE_ARTIFACT_TYPE)
            && l.media_type == MINISIG_MEDIA_TYPE =>
        {
            l
        }
        _ => return Err(Error::Trust(format!("{what} is not a blockctl signature"))),
    };
    let size = u64::try_from(layer.size).unwrap_or(u64::MAX);
    if size > SIGNATURE_MAX.bytes {
        return Err(SIGNATURE_MAX.exceeded(&what));
    }
    let bytes = match registry.blob_sized(repo, &layer.digest, size).await {
        Err(Error::NotFound(_)) => {
            return Err(Error::Trust(format!("{what} is missing from the registry")));
        }
        other => other?,
    };
    String::from_utf8(bytes.to_vec()).map_err(|_| Error::Trust(format!("{what} is not text")))
}

/// When the version an image manifest holds was made.
pub fn created_of(image: &OciImageManifest) -> Option<String> {
    image.annotations.as_ref()?.get(CREATED).cloned()
}

/// The version an image manifest says it holds.
pub fn version_of(image: &OciImageManifest) -> Option<&str> {
    image.annotations.as_ref()?.get(VERSION).map(String::as_str)
}

/// Reads the blockctl manifest of `image` (its config blob), checks it is the manifest of
/// `version`, and that the layers are exactly its frames.
pub async fn read_manifest(
    registry: &Registry,
    repo: &str,
    image: &OciImageManifest,
    version: &str,
) -> Result<PackageManifest> {
    let config = read_config(registry, repo, image, version).await?;
    let manifest = PackageManifest::parse_stored(&config, true, version)?;
    if !layers_match(&manifest, image) {
        return Err(Error::Integrity(format!(
            "the layers of version {} are not the frames its manifest lists",
            short(version)
        )));
    }
    Ok(manifest)
}

/// The config blob of `image` as stored (the compressed blockctl manifest, what its
/// signature covers), unparsed, within [`MANIFEST_COMPRESSED_MAX`].
pub async fn read_config(
    registry: &Registry,
    repo: &str,
    image: &OciImageManifest,
    version: &str,
) -> Result<Bytes> {
    if image.artifact_type.as_deref() != Some(ARTIFACT_TYPE)
        || image.config.media_type != CONFIG_MEDIA_TYPE
    {
        return Err(Error::Integrity(format!(
            "the artifact of version {} is not a blockctl package",
            short(version)
        )));
    }
    // The config blob is the compressed manifest: its descriptor's size, within the cap.
    let size = u64::try_from(image.config.size).unwrap_or(u64::MAX);
    if size > MANIFEST_COMPRESSED_MAX.bytes {
        return Err(MANIFEST_COMPRESSED_MAX
            .exceeded(&format!("the manifest blob of version {}", short(version))));
    }
    let config = match registry.blob_sized(repo, &image.config.digest, size).await {
        Err(Error::NotFound(_)) => {
            return Err(Error::Integrity(format!(
                "the manifest blob of version {} is missing from the registry",
                short(version)
            )));
        }
        other => other?,
    };
    Ok(config)
}

/// Whether the layers of `image` are exactly the blobs of `manifest`, in order: format 2's
/// frames with their lengths; format 3's packs, each no larger than a pack can be and long
/// enough for every frame the manifest places in it.
fn layers_match(manifest: &PackageManifest, image: &OciImageManifest) -> bool {
    let blobs = layer_blobs(manifest);
    let same_blobs = blobs.len() == image.layers.len()
        && blobs
            .iter()
            .zip(&image.layers)
            .all(|(sha, l)| l.digest == format!("sha256:{sha}"));
    if !same_blobs {
        return false;
    }
    match manifest.format {
        FRAMES_FORMAT => manifest
            .frames
            .iter()
            .zip(&image.layers)
            .all(|(f, l)| l.size == f.length as i64),
        PACKS_FORMAT => {
            let sizes: std::collections::HashMap<&str, u64> = image
                .layers
                .iter()
                .map(|l| (l.digest.as_str(), u64::try_from(l.size).unwrap_or(u64::MAX)))
                .collect();
            sizes.values().all(|s| *s <= PACK_MAX) && manifest.frames.iter().all(|f| {
                let digest = format!("sha256:{}", f.pack.as_deref().unwrap_or_default());
                let end = f.pack_offset.and_then(|o| o.checked_add(f.length));
                matches!((sizes.get(digest.as_str()), end), (Some(size), Some(end)) if end <= *size)
            })
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use storage_core::package::manifest::Frame;

    fn manifest(frames: &[(&str, u64, u64)]) -> PackageManifest {
        let frames = frames
            .iter()
            .enumerate()
            .map(|(i, (pack, at, length))| Frame {
                length: *length,
                sha256: Some(format!("{i:064}")),
                pack: Some(pack.repeat(64)),
                pack_offset: Some(*at),
                ..Frame::default()
            })
            .collect();
        PackageManifest {
            format: PACKS_FORMAT,
            version: "v".into(),
            compression: "zstd".into(),
            frames,
            ..PackageManifest::default()
        }
    }

    #[test]
    fn current_keeps_the_last_swaps_and_ignores_what_names_no_version() {
        let image = image_manifest(&manifest(&[("a", 0, 5)]), b"config", &[5]);
        assert!(history_of(&as_current(&image, None, &[])).is_empty());
        let history: Vec<(i64, String)> = (0..HISTORY_MAX as i64 + 3)
            .map(|i| (i, format!("{i:064x}")))
            .collect();
        let kept = history_of(&as_current(&image, None, &history));
        assert_eq!(kept.len(), HISTORY_MAX);
        assert_eq!(kept[0].0, 3, "the oldest swaps go first");
        assert_eq!(kept.last(), history.last());
        let mut forged = as_current(&image, None, &[]);
        forged
            .annotations
            .as_mut()
            .unwrap()
            .insert(HISTORY.into(), r#"[[1, "../../etc"], [2, "not json"#.into());
        assert!(history_of(&forged).is_empty());
        forged.annotations.as_mut().unwrap().insert(
            HISTORY.into(),
            format!(r#"[[1, "x"], [2, "{}"]]"#, "b".repeat(64)),
        );
        assert_eq!(history_of(&forged), vec![(2, "b".repeat(64))]);
    }

    #[test]
    fn current_carries_a_signed_head_only_and_signature_tags_are_never_versions() {
        let m = manifest(&[("a", 0, 5)]);
        let image = image_manifest(&m, b"config", &[5]);
        let v = "a".repeat(64);
        let mut head = HeadRecord {
            version: v.clone(),
            updated: "2026-01-01T00:00:00Z".into(),
            ..HeadRecord::default()
        };
        // An unsigned HEAD leaves no record (and drops one a signed put left).
        assert_eq!(
            head_of(&as_current(&image, Some(&head), &[])).unwrap(),
            None
        );
        head.seq = Some(7);
        head.signature = Some("untrusted comment: x".into());
        let current = as_current(&image, Some(&head), &[]);
        assert_eq!(head_of(&current).unwrap(), Some(head.clone()));
        let unsigned = HeadRecord {
            signature: None,
            ..head
        };
        assert_eq!(
            head_of(&as_current(&current, Some(&unsigned), &[])).unwrap(),
            None
        );
        // A record larger than HEAD_MAX is refused before it is parsed.
        let mut huge = current.clone();
        huge.annotations
            .as_mut()
            .unwrap()
            .insert(HEAD.into(), " ".repeat(HEAD_MAX.bytes as usize + 1));
        assert_eq!(head_of(&huge).unwrap_err().exit_code(), 5);
        assert_eq!(signed_version(&signature_tag(&v)), Some(v.as_str()));
        assert!(!is_version_id(&signature_tag(&v)));
        assert_eq!(signed_version("current"), None);
    }

    #[test]
    fn the_layers_of_format_3_are_its_packs_in_first_use_order_and_must_hold_its_frames() {
        let m = manifest(&[("b", 0, 10), ("a", 0, 5), ("b", 10, 10), ("a", 5, 5)]);
        let blobs = layer_blobs(&m);
        assert_eq!(blobs, vec!["b".repeat(64), "a".repeat(64)]);
        let image = image_manifest(&m, b"config", &[20, 10]);
        let titles: Vec<_> = image
            .layers
            .iter()
            .map(|l| l.annotations.as_ref().unwrap()[TITLE].clone())
            .collect();
        assert_eq!(titles, ["pack-000000.zst", "pack-000001.zst"]);
        assert!(image.layers.iter().all(|l| l.media_type == PACK_MEDIA_TYPE));
        assert!(layers_match(&m, &image));
        // A pack shorter than the frames placed in it, or larger than any pack, is refused.
        let short = image_manifest(&m, b"config", &[19, 10]);
        assert!(!layers_match(&m, &short));
        let huge = image_manifest(&m, b"config", &[PACK_MAX + 1, 10]);
        assert!(!layers_match(&m, &huge));
        // So are layers in another order, or one missing.
        let mut swapped = image.clone();
        swapped.layers.reverse();
        assert!(!layers_match(&m, &swapped));
        let mut missing = image;
        missing.layers.pop();
        assert!(!layers_match(&m, &missing));
    }
}
