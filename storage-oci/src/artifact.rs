//! A version as an OCI artifact: the image manifest that lists the frames as titled layers
//! with the blockctl manifest as config, and how one is read back and checked.

use std::collections::BTreeMap;

use oci_client::manifest::{OCI_IMAGE_MEDIA_TYPE, OciDescriptor, OciImageManifest};
use storage_core::bounds::MANIFEST_COMPRESSED_MAX;
use storage_core::package::manifest::{PackageManifest, short};
use storage_core::{Error, Result};

use crate::registry::{Registry, digest_of};

/// The artifact type of a blockctl version.
pub const ARTIFACT_TYPE: &str = "application/vnd.blockctl.package.v2";
/// The config blob: the blockctl manifest, zstd-compressed JSON.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.blockctl.manifest.v2+json+zstd";
/// Each layer: one zstd frame of the package's tar stream.
pub const FRAME_MEDIA_TYPE: &str = "application/vnd.blockctl.frame.v1.tar+zstd";
/// The annotation oras and other artifact clients name pulled files by.
pub const TITLE: &str = "org.opencontainers.image.title";
const CREATED: &str = "org.opencontainers.image.created";
/// The annotation naming the version an artifact holds.
pub const VERSION: &str = "dev.blockctl.version";
/// The annotation that marks the manifest `current` is tagged with.
const TAG: &str = "dev.blockctl.tag";
/// The tag moved last, as HEAD.
pub const CURRENT: &str = "current";
/// Frames checked, sent or fetched at once.
pub const IN_FLIGHT: usize = 8;

/// The title of layer `index`: names that sort in layer order, so that `cat` of the pulled
/// files in name order is the package.
pub fn frame_title(index: usize) -> String {
    format!("frame-{index:06}.tar.zst")
}

/// The image manifest of a version whose blockctl manifest is `config` (its stored bytes).
pub fn image_manifest(manifest: &PackageManifest, config: &[u8]) -> OciImageManifest {
    let layers = manifest
        .frames
        .iter()
        .enumerate()
        .map(|(i, f)| OciDescriptor {
            media_type: FRAME_MEDIA_TYPE.into(),
            digest: format!("sha256:{}", f.sha256.as_deref().unwrap_or_default()),
            size: f.length as i64,
            urls: None,
            artifact_type: None,
            annotations: Some(BTreeMap::from([(TITLE.to_string(), frame_title(i))])),
        })
        .collect();
    OciImageManifest {
        schema_version: 2,
        media_type: Some(OCI_IMAGE_MEDIA_TYPE.into()),
        config: OciDescriptor {
            media_type: CONFIG_MEDIA_TYPE.into(),
            digest: digest_of(config),
            size: config.len() as i64,
            urls: None,
            artifact_type: None,
            annotations: None,
        },
        layers,
        subject: None,
        artifact_type: Some(ARTIFACT_TYPE.into()),
        annotations: Some(BTreeMap::from([
            (VERSION.to_string(), manifest.version.clone()),
            (CREATED.to_string(), manifest.created.clone()),
        ])),
    }
}

/// The manifest `current` is tagged with: the version's own, marked as the current one.
pub fn as_current(image: &OciImageManifest) -> OciImageManifest {
    let mut current = image.clone();
    current
        .annotations
        .get_or_insert_with(BTreeMap::new)
        .insert(TAG.to_string(), CURRENT.to_string());
    current
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
    let manifest = PackageManifest::parse_stored(&config, true, version)?;
    let matches = manifest.frames.len() == image.layers.len()
        && manifest.frames.iter().zip(&image.layers).all(|(f, l)| {
            l.digest == format!("sha256:{}", f.sha256.as_deref().unwrap_or_default())
                && l.size == f.length as i64
        });
    if !matches {
        return Err(Error::Integrity(format!(
            "the layers of version {} are not the frames its manifest lists",
            short(version)
        )));
    }
    Ok(manifest)
}
