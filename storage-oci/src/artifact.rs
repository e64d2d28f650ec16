//! A version as an OCI artifact: the image manifest that lists the frames as titled layers
//! with the blockctl manifest as config, how one is read back and checked, and how a put
//! packs, seals and pushes the frames the repository lacks.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt, stream};
use oci_client::manifest::{OCI_IMAGE_MEDIA_TYPE, OciDescriptor, OciImageManifest};
use storage_core::frames::{ContentCuts, SealedFrame, seal};
use storage_core::manifest::{FRAMES_FORMAT, Frame, PackageManifest, Totals, short};
use storage_core::pack::{pack_entries, placed};
use storage_core::tree::SourceEntry;
use storage_core::{Error, ProgressEvent, ProgressObserver, Result};
use tokio::sync::mpsc;

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
    let config = match registry.blob(repo, &image.config.digest).await {
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

/// What a put sent.
#[derive(Debug, Default)]
pub struct Sent {
    pub bytes: u64,
    pub frames_uploaded: u64,
    pub frames_reused: u64,
    pub manifest: Option<PackageManifest>,
    pub config: Bytes,
}

const UPLOAD_STOPPED: &str = "the upload stopped";

/// Packs `entries` into content-defined frames on a blocking thread, seals them in parallel,
/// and pushes those the repository lacks, `IN_FLIGHT` at a time; then the config blob.
pub async fn push_frames(
    registry: &Registry,
    repo: &str,
    version: &str,
    created: String,
    entries: Vec<SourceEntry>,
    progress: Option<Arc<dyn ProgressObserver>>,
) -> Result<Sent> {
    let entries = Arc::new(entries);
    let (tx, rx) = mpsc::channel::<Vec<u8>>(4);
    let packer_entries = entries.clone();
    let packer = tokio::task::spawn_blocking(move || {
        let cuts = ContentCuts::new(|frame| {
            tx.blocking_send(frame)
                .map_err(|_| std::io::Error::other(UPLOAD_STOPPED))
        });
        let (placements, cuts) = pack_entries(&packer_entries, cuts, |n| {
            if let Some(p) = &progress {
                p.event(ProgressEvent::Advance(n));
            }
        })?;
        cuts.finish()
            .map_err(|e| Error::io("writing the package", e))?;
        Ok::<_, Error>(placements)
    });
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let uploaded = AtomicU64::new(0);
    let uploaded_bytes = AtomicU64::new(0);
    let sealed = stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|v| (v, rx)) })
        .map(|raw| async move {
            tokio::task::spawn_blocking(move || seal(&raw))
                .await?
                .map_err(|e| Error::io("compressing a frame", e))
        })
        .buffered(workers)
        .map_ok(|frame: SealedFrame| {
            let (uploaded, uploaded_bytes) = (&uploaded, &uploaded_bytes);
            async move {
                let digest = format!("sha256:{}", frame.sha256);
                if !registry.has_blob(repo, &digest).await? {
                    registry
                        .push_blob(repo, frame.data.clone(), &digest)
                        .await?;
                    uploaded.fetch_add(1, Ordering::Relaxed);
                    uploaded_bytes.fetch_add(frame.length, Ordering::Relaxed);
                }
                Ok::<_, Error>((frame.sha256, frame.length, frame.uncompressed))
            }
        })
        .try_buffered(IN_FLIGHT)
        .try_collect::<Vec<_>>()
        .await;
    let packed = packer.await.map_err(Error::from).and_then(|r| r);
    let (sealed, placements) = match (sealed, packed) {
        (Ok(s), Ok(p)) => (s, p),
        // The packer only saw its channel close: the upload's error is the cause.
        (Err(up), Err(pack)) if pack.to_string().contains(UPLOAD_STOPPED) => return Err(up),
        (_, Err(e)) | (Err(e), _) => return Err(e),
    };
    let mut frames = Vec::with_capacity(sealed.len());
    let (mut offset, mut uncompressed_offset) = (0u64, 0u64);
    for (sha256, length, uncompressed_length) in sealed {
        frames.push(Frame {
            offset,
            length,
            uncompressed_offset,
            uncompressed_length,
            sha256: Some(sha256),
        });
        offset += length;
        uncompressed_offset += uncompressed_length;
    }
    let records = placed(&entries, &placements);
    let manifest = PackageManifest {
        format: FRAMES_FORMAT,
        version: version.to_string(),
        created,
        compression: "zstd".into(),
        totals: Totals::count(&records, offset),
        frames,
        entries: records,
        record: None,
    };
    let config = Bytes::from(manifest.to_compressed());
    registry
        .push_blob(repo, config.clone(), &digest_of(&config))
        .await?;
    let frames_uploaded = uploaded.into_inner();
    Ok(Sent {
        bytes: uploaded_bytes.into_inner() + config.len() as u64,
        frames_uploaded,
        frames_reused: manifest.frames.len() as u64
            - frames_uploaded.min(manifest.frames.len() as u64),
        manifest: Some(manifest),
        config,
    })
}
