//! The conformance suite against the CNCF distribution registry (htpasswd auth), started by
//! the harness. Then what is specific to a registry: a wrong password (exit 4, one line, no
//! secret), names no registry can hold (exit 2), oras (an independent OCI client) pulling the
//! artifact blockctl pushed, a frame damaged or lost in the registry's own storage (exit 5,
//! nothing written), a 40 MiB tree, and through a fault-injecting proxy: 503s and resets
//! retried, a put and a get cut by a partition failing cleanly (exit 1, one line) with the
//! previous version current and whole and nothing written. Last, the Bearer challenge path of
//! hosted registries, on the registry with token auth and the harness's token service:
//! username and password traded for tokens (put, versions, get, rm, gc), a wrong password
//! (exit 4, never shown), and a pre-issued `token`, refused (exit 4) for another repository.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use conformance::attacker::Attacker;
use conformance::checks::within_bound;
use conformance::harness::{Cut, Direction, OciRegistry, peers, shared};
use conformance::remote_checks::{
    FaultRig, a_get_cut_by_resets_fails_cleanly_with_nothing_written,
    a_put_cut_by_resets_fails_cleanly_and_keeps_head, refused_listing_too, uncached,
};
use conformance::tree::{Node, noise, small_tree, snapshot, write};
use conformance::{Subject, conformance_suite};
use storage_core::package::PackageStore;
use storage_core::signing::generate_key_pair;
use storage_core::{
    BlockPath, DeleteOptions, GcOptions, GetOptions, PackageFormat, PutOptions, Secret,
    StorageBlock, Trust, VersionPrecondition,
};
use storage_oci::{OciBlock, OciConfig, open};

const WRONG_PASSWORD: &str = "wrong-oci-pw-R8w2-must-never-be-echoed";

fn registry() -> Arc<OciRegistry> {
    shared::<OciRegistry>(OciRegistry::start)
}

fn config(registry: &OciRegistry, repository: &str, password: &str) -> OciConfig {
    OciConfig {
        registry: registry.host.clone(),
        repository: repository.into(),
        username: Some(registry.user.clone()),
        password: Some(Secret::new(password)),
        token: None,
        plain_http: None,
        timeout: None,
    }
}

async fn subject(case: &str) -> Subject {
    let registry = registry();
    let block = open(
        &config(&registry, "team/flows", &registry.password),
        "oci/conformance",
    )
    .expect("open oci block");
    let attacker = Arc::new(registry.attacker("team/flows"));
    Subject::new(Arc::new(block), case)
        .with_attacker(attacker)
        .with_guard(registry)
}

conformance_suite!(subject);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_exit_4_and_never_shown() {
    let registry = registry();
    let label = "oci/wrong-password";
    let block = open(&config(&registry, "team/refused", WRONG_PASSWORD), label).unwrap();
    refused_listing_too(&[&block], label, &[WRONG_PASSWORD, &registry.password]).await;
}

/// The registry with distribution's token auth: it answers with Bearer challenges, and the
/// harness's token service hands out the tokens.
struct TokenRegistry(OciRegistry);

fn token_registry() -> Arc<TokenRegistry> {
    shared(|| OciRegistry::start_with_tokens().map(TokenRegistry))
}

fn token_config(registry: &OciRegistry, repository: &str, token: &str) -> OciConfig {
    OciConfig {
        username: None,
        password: None,
        token: Some(Secret::new(token)),
        ..config(registry, repository, "")
    }
}

/// put, put, versions, get of either version, rm of the older one, put, gc: each reads back
/// as it should.
async fn round_trip(block: &dyn StorageBlock) {
    let scratch = tempfile::tempdir().unwrap();
    let trees: Vec<_> = ["v1", "v2", "v3"]
        .iter()
        .map(|v| {
            let root = scratch.path().join(v);
            small_tree(&root, v);
            root
        })
        .collect();
    let at = BlockPath::parse("etl").unwrap();
    let mut versions = Vec::new();
    for tree in &trees[..2] {
        let put = block.put_directory(tree, &at, &PutOptions::default()).await;
        versions.push(put.expect("put").version.unwrap());
    }
    let listed = block.list_versions(&at).await.expect("versions");
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(listed.iter().any(|v| v.current && v.version == versions[1]));
    let got = get(block, &at, None, &scratch.path().join("got-current")).await;
    assert_eq!(got, snapshot(&trees[1]));
    let first = Some(versions[0].clone());
    let got = get(block, &at, first, &scratch.path().join("got-v1")).await;
    assert_eq!(got, snapshot(&trees[0]));
    let rm = DeleteOptions {
        version: Some(versions[0].clone()),
    };
    block.delete(&at, &rm).await.expect("rm --version");
    assert_eq!(block.list_versions(&at).await.unwrap().len(), 1);
    block
        .put_directory(&trees[2], &at, &PutOptions::default())
        .await
        .expect("put");
    let report = block.gc(&at, &GcOptions::keep(0)).await.expect("gc");
    assert_eq!(report.removed_versions, [versions[1].clone()], "{report:?}");
    assert_eq!(block.list_versions(&at).await.unwrap().len(), 1);
    let got = get(block, &at, None, &scratch.path().join("got-v3")).await;
    assert_eq!(got, snapshot(&trees[2]));
}

/// What a get of `version` (the current one when `None`) writes into `dest`.
async fn get(
    block: &dyn StorageBlock,
    at: &BlockPath,
    version: Option<String>,
    dest: &Path,
) -> std::collections::BTreeMap<String, Node> {
    let opts = GetOptions {
        version,
        ..uncached()
    };
    block.get_directory(at, dest, &opts).await.expect("get");
    snapshot(dest)
}

/// Username and password on a token registry: the client trades them at the realm for
/// tokens, pull, push and (for rm and gc) delete, and everything works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_registry_round_trips_with_username_and_password() {
    let registry = token_registry();
    let r = &registry.0;
    let block = open(&config(r, "team/tokens", &r.password), "oci/tokens").unwrap();
    round_trip(&block).await;
    let granted = r.scopes_granted();
    for actions in ["pull", "pull,push", "delete"] {
        let scope = format!("repository:team/tokens/etl:{actions}");
        assert!(
            granted.contains(&scope),
            "no token for {scope}: {granted:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_on_a_token_registry_is_exit_4_and_never_shown() {
    let registry = token_registry();
    let r = &registry.0;
    let label = "oci/token-wrong-password";
    let block = open(&config(r, "team/refused", WRONG_PASSWORD), label).unwrap();
    refused_listing_too(&[&block], label, &[WRONG_PASSWORD, &r.password]).await;
}

/// The `token` field: a token the service issued beforehand for the repository works for
/// everything it grants; one for another repository is exit 4 and never shown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pre_issued_token_works_and_a_token_for_another_repository_is_exit_4() {
    let registry = token_registry();
    let r = &registry.0;
    let token = r
        .fetch_token("repository:team/issued/etl:pull,push,delete")
        .unwrap();
    let block = open(&token_config(r, "team/issued", &token), "oci/issued").unwrap();
    round_trip(&block).await;
    let elsewhere = r
        .fetch_token("repository:team/elsewhere/refused:pull,push")
        .unwrap();
    let label = "oci/token-elsewhere";
    let block = open(&token_config(r, "team/issued", &elsewhere), label).unwrap();
    refused_listing_too(&[&block], label, &[&elsewhere, &token, &r.password]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_a_registry_cannot_hold_are_exit_2() {
    let registry = registry();
    // As the facade opens it: capabilities (no compare-and-swap) enforced by Checked.
    let block = storage_core::Checked::wrap(Arc::new(
        open(
            &config(&registry, "team/names", &registry.password),
            "oci/n",
        )
        .unwrap(),
    ));
    let src = tempfile::tempdir().unwrap();
    small_tree(src.path(), "x");
    for bad in ["Upper/case", "a..b", "trailing-", "plus+sign"] {
        let at = BlockPath::parse(bad).unwrap();
        let err = block
            .put_directory(src.path(), &at, &PutOptions::default())
            .await
            .expect_err(bad);
        assert_eq!(err.exit_code(), 2, "{bad}: {err}");
    }
    let bad_prefix = config(&registry, "Team", &registry.password);
    assert_eq!(open(&bad_prefix, "oci/x").unwrap_err().exit_code(), 2);
    // --if-version is refused up front: registries move tags unconditionally.
    let opts = PutOptions {
        if_version: Some(VersionPrecondition::NoVersion),
        ..PutOptions::default()
    };
    let at = BlockPath::parse("cas").unwrap();
    let err = block
        .put_directory(src.path(), &at, &opts)
        .await
        .unwrap_err();
    assert_eq!(err.exit_code(), 2, "{err}");
}

/// A signing block's manifest signature, pulled by oras from the `<version>.sig` artifact,
/// is what Debian's `minisign -V` verifies over the version's config blob as the registry
/// serves it; the signature of another version is refused by minisign too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minisign_verifies_the_signature_oras_pulls_over_the_stored_manifest() {
    let registry = registry();
    let block = open(
        &config(&registry, "team/minisign", &registry.password),
        "oci/minisign",
    )
    .unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let key = generate_key_pair(&scratch.path().join("keys"), "ci", None).unwrap();
    block
        .set_trust(Trust {
            signing_key: Some(key.secret_key.clone()),
            seen_heads: Some(scratch.path().join("seen")),
            ..Trust::default()
        })
        .unwrap();
    let at = BlockPath::parse("etl").unwrap();
    let mut versions = Vec::new();
    for tree in ["one", "two"] {
        let src = scratch.path().join(tree);
        small_tree(&src, tree);
        let put = block.put_directory(&src, &at, &PutOptions::default()).await;
        versions.push(put.expect("a signed put").version.unwrap());
    }
    let attacker = registry.attacker("team/minisign");
    let minisign = peers::minisign().expect("Debian's minisign");
    let verify = |manifest: &Path, sig: &Path| {
        Command::new(&minisign)
            .arg("-V")
            .arg("-p")
            .arg(&key.public_key_file)
            .arg("-m")
            .arg(manifest)
            .arg("-x")
            .arg(sig)
            .output()
            .unwrap()
    };
    let mut sigs = Vec::new();
    for v in &versions {
        let manifest = scratch.path().join(format!("{v}.json.zst"));
        std::fs::write(&manifest, attacker.manifest(&at, v).await).unwrap();
        let pulled = scratch.path().join(format!("sig-{v}"));
        std::fs::create_dir_all(&pulled).unwrap();
        let reference = format!("{}/team/minisign/etl:{v}.sig", registry.host);
        oras_pull(&registry, &reference, &pulled);
        let sig = pulled.join(format!("{v}.json.zst.minisig"));
        let out = verify(&manifest, &sig);
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{said}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(said.contains(&format!("path=etl version={v}")), "{said}");
        sigs.push((manifest, sig));
    }
    let out = verify(&sigs[1].0, &sigs[0].1);
    assert!(
        !out.status.success(),
        "minisign took another version's signature"
    );
}

/// Runs python with the oras client: logs in with basic auth and pulls `reference` into
/// `outdir`.
fn oras_pull(registry: &OciRegistry, reference: &str, outdir: &Path) {
    let python = peers::oras_python().expect("oras installed");
    let script = r#"
import os, sys
import oras.client
host = os.environ["ORAS_HOST"]
client = oras.client.OrasClient(hostname=host, insecure=True, auth_backend="basic")
client.login(username=os.environ["ORAS_USER"], password=os.environ["ORAS_PASSWORD"],
             hostname=host)
files = client.pull(target=sys.argv[1], outdir=sys.argv[2])
print("\n".join(str(f) for f in files))
"#;
    // oras logs in by writing ~/.docker/config.json: each pull gets a home of its own, so
    // that pulls side by side never read each other's half-written file (nor the user's).
    let home = tempfile::tempdir().expect("a home for oras");
    let out = Command::new(python)
        .arg("-c")
        .arg(script)
        .arg(reference)
        .arg(outdir)
        .env("HOME", home.path())
        .env("DOCKER_CONFIG", home.path().join(".docker"))
        .env("ORAS_HOST", &registry.host)
        .env("ORAS_USER", &registry.user)
        .env("ORAS_PASSWORD", &registry.password)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "oras pull failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A tree of 200 small modules and a 3 MiB random file, in many frames.
fn oras_tree(src: &Path) {
    small_tree(src, "oras");
    for i in 0..200 {
        write(
            src,
            &format!("flows/m{i:03}.py"),
            format!("X = {i}\n").repeat(50 + i),
        );
    }
    write(src, "data/blob.bin", noise(3 << 20, 77));
    std::fs::create_dir_all(src.join("empty")).unwrap();
}

/// What oras pulled of `tag`, in layer order (the titles sort that way).
fn oras_parts(registry: &OciRegistry, repo: &str, tag: &str, scratch: &Path) -> Vec<Vec<u8>> {
    let pulled = scratch.join(format!("pulled-{tag}"));
    std::fs::create_dir_all(&pulled).unwrap();
    oras_pull(
        registry,
        &format!("{}/{repo}:{tag}", registry.host),
        &pulled,
    );
    let mut parts: Vec<_> = std::fs::read_dir(&pulled)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    parts.sort();
    parts.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

/// `zstd -dc | tar -x` of `package` into a new folder, which must be `src`.
fn untars_to(package: &[u8], scratch: &Path, name: &str, src: &Path) {
    let file = scratch.join(format!("{name}.tar.zst"));
    std::fs::write(&file, package).unwrap();
    let untarred = scratch.join(format!("untarred-{name}"));
    std::fs::create_dir_all(&untarred).unwrap();
    let zstd = peers::zstd().expect("zstd installed");
    let status = Command::new("sh")
        .arg("-c")
        .arg("\"$0\" -dc \"$1\" | tar -x -C \"$2\"")
        .arg(&zstd)
        .arg(&file)
        .arg(&untarred)
        .status()
        .unwrap();
    assert!(status.success(), "zstd -dc | tar -x failed");
    assert_eq!(snapshot(&untarred), snapshot(src), "{name}");
}

fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

/// The packs of a format-3 version, each once, in the order its frames first use them: its
/// layers.
fn packs_of(manifest: &storage_core::package::manifest::PackageManifest) -> Vec<String> {
    let mut packs: Vec<String> = Vec::new();
    for f in &manifest.frames {
        let p = f.pack.clone().expect("a format-3 frame names its pack");
        if !packs.contains(&p) {
            packs.push(p);
        }
    }
    packs
}

/// Format 2 (still written on request): oras pulls the frames, and in layer order they are
/// the version's .tar.zst.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oras_pulls_format_2_and_its_layers_are_the_tar_zst() {
    let registry = registry();
    let block = open(&config(&registry, "team/oras", &registry.password), "oci/o").unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let src = scratch.path().join("src");
    oras_tree(&src);
    let at = BlockPath::parse("etl/daily").unwrap();
    let opts = PutOptions {
        format: PackageFormat::Frames,
        ..PutOptions::default()
    };
    let report = block.put_directory(&src, &at, &opts).await.unwrap();
    assert!(report.frames_uploaded >= 3, "{report:?}");
    let version = report.version.unwrap();
    let manifest = block.manifest(&at, Some(&version)).await.unwrap();
    assert_eq!(manifest.format, 2);

    for tag in [version.as_str(), "current"] {
        let parts = oras_parts(&registry, "team/oras/etl/daily", tag, scratch.path());
        assert_eq!(parts.len(), manifest.frames.len());
        untars_to(&parts.concat(), scratch.path(), tag, &src);
    }
    // And blockctl still reads it.
    let dest = scratch.path().join("dest");
    block.get_directory(&at, &dest, &uncached()).await.unwrap();
    assert_eq!(snapshot(&dest), snapshot(&src));
}

/// Format 3 (the default): the layers are the packs. oras pulls them, each one the blob its
/// digest names; a first put's packs, in layer order, are the version's .tar.zst; after an
/// edit, the pulled packs and the blockctl manifest (the config blob) still make the version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oras_pulls_the_packs_of_format_3_and_they_hold_the_version() {
    let registry = registry();
    let block = open(
        &config(&registry, "team/oras-packs", &registry.password),
        "oci/o",
    )
    .unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let src = scratch.path().join("src");
    oras_tree(&src);
    let at = BlockPath::parse("etl/daily").unwrap();
    let repo = "team/oras-packs/etl/daily";
    let v1 = block
        .put_directory(&src, &at, &PutOptions::default())
        .await
        .unwrap()
        .version
        .unwrap();
    let manifest = block.manifest(&at, Some(&v1)).await.unwrap();
    assert_eq!(manifest.format, 3, "a default put writes format 3");
    let packs = packs_of(&manifest);
    assert!(
        manifest.frames.len() >= 5 && packs.len() == 1,
        "{} frames in {} packs",
        manifest.frames.len(),
        packs.len()
    );
    for tag in [v1.as_str(), "current"] {
        let parts = oras_parts(&registry, repo, tag, scratch.path());
        let digests: Vec<String> = parts.iter().map(|p| sha256_hex(p)).collect();
        assert_eq!(digests, packs, "the layers are the packs, in order");
        untars_to(&parts.concat(), scratch.path(), tag, &src);
    }

    // An edit: the new version reuses the first pack and adds one.
    write(&src, "flows/m100.py", "X = 'edited'\n");
    let v2 = block
        .put_directory(&src, &at, &PutOptions::default())
        .await
        .unwrap()
        .version
        .unwrap();
    let manifest = block.manifest(&at, Some(&v2)).await.unwrap();
    let packs = packs_of(&manifest);
    assert_eq!(packs.len(), 2, "the old pack and the edit's");
    let parts = oras_parts(&registry, repo, &v2, scratch.path());
    let by_sha: std::collections::HashMap<String, &Vec<u8>> =
        parts.iter().map(|p| (sha256_hex(p), p)).collect();
    assert_eq!(by_sha.len(), packs.len());
    let mut package = Vec::new();
    for f in &manifest.frames {
        let pack = by_sha[f.pack.as_deref().unwrap()];
        let at = f.pack_offset.unwrap() as usize;
        package.extend_from_slice(&pack[at..at + f.length as usize]);
    }
    untars_to(&package, scratch.path(), &v2, &src);
}

/// Puts a tree with a large random file and returns the block, the version's blobs (its
/// packs; sha256) and the tree.
async fn stored(
    registry: &OciRegistry,
    repository: &str,
    scratch: &Path,
) -> (storage_oci::OciBlock, Vec<String>, std::path::PathBuf) {
    let block = open(&config(registry, repository, &registry.password), "oci/d").unwrap();
    let src = scratch.join("src");
    small_tree(&src, "damaged");
    write(&src, "data/blob.bin", noise(2 << 20, 5));
    let at = BlockPath::parse("etl").unwrap();
    block
        .put_directory(&src, &at, &PutOptions::default())
        .await
        .unwrap();
    let manifest = block.manifest(&at, None).await.unwrap();
    assert_eq!(manifest.format, 3);
    (block, packs_of(&manifest), src)
}

/// A get that fails with `code`, naming `word`, and leaves nothing behind.
async fn refused_cleanly(block: &dyn StorageBlock, scratch: &Path, code: i32, word: &str) {
    let parent = scratch.join("out");
    std::fs::create_dir_all(&parent).unwrap();
    let at = BlockPath::parse("etl").unwrap();
    let err = block
        .get_directory(&at, &parent.join("dest"), &uncached())
        .await
        .expect_err("a get of a damaged version");
    eprintln!("exit {}: {err}", err.exit_code());
    assert_eq!(err.exit_code(), code, "{err}");
    assert!(err.to_string().contains(word), "{err}");
    assert!(!err.to_string().contains('\n'), "{err}");
    assert_eq!(std::fs::read_dir(&parent).unwrap().count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pack_corrupted_in_the_registry_storage_is_exit_5() {
    let registry = registry();
    let scratch = tempfile::tempdir().unwrap();
    let (block, frames, _) = stored(&registry, "team/corrupt", scratch.path()).await;
    let file = registry.blob_file(&frames[frames.len() / 2]);
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x5a;
    std::fs::write(&file, bytes).unwrap();
    refused_cleanly(&block, scratch.path(), 5, "does not match").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pack_lost_from_the_registry_storage_is_exit_5() {
    let registry = registry();
    let scratch = tempfile::tempdir().unwrap();
    let (block, frames, _) = stored(&registry, "team/lost", scratch.path()).await;
    let file = registry.blob_file(&frames[0]);
    std::fs::remove_dir_all(file.parent().unwrap()).unwrap();
    refused_cleanly(&block, scratch.path(), 5, "missing").await;
}

const BIG: usize = 40 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_40_mib_tree_round_trips() {
    let registry = registry();
    let block = open(
        &config(&registry, "team/big", &registry.password),
        "oci/big",
    )
    .unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let src = scratch.path().join("src");
    for i in 0..400 {
        write(
            &src,
            &format!("flows/pkg{}/mod_{i:03}.py", i % 9),
            format!("# module {i}\nVALUE_{i} = {i}\n").repeat(40 + i % 60),
        );
    }
    for i in 0..(BIG / (4 << 20)) {
        write(
            &src,
            &format!("data/blob{i}.bin"),
            noise(4 << 20, 900 + i as u64),
        );
    }
    let at = BlockPath::parse("big").unwrap();
    let started = Instant::now();
    block
        .put_directory(&src, &at, &PutOptions::default())
        .await
        .expect("put 40 MiB");
    let put_secs = started.elapsed().as_secs_f64();
    let dest = scratch.path().join("dest");
    let started = Instant::now();
    block
        .get_directory(&at, &dest, &uncached())
        .await
        .expect("get 40 MiB");
    let get_secs = started.elapsed().as_secs_f64();
    eprintln!(
        "40 MiB tree over the registry: put {put_secs:.2} s ({:.0} MiB/s), get {get_secs:.2} s ({:.0} MiB/s)",
        40.0 / put_secs,
        40.0 / get_secs
    );
    assert_eq!(snapshot(&dest), snapshot(&src));
}

const FAULT_LABEL: &str = "oci/faults";

/// A block through a fault-injecting proxy in front of the registry, and one straight on it,
/// both at `repository`.
async fn fault_rig(repository: &str) -> FaultRig<OciBlock> {
    let registry = registry();
    let direct = open(
        &config(&registry, repository, &registry.password),
        FAULT_LABEL,
    )
    .unwrap();
    let (server, repository) = (registry.clone(), repository.to_string());
    FaultRig::new(
        registry.clone(),
        registry.port(),
        FAULT_LABEL,
        direct,
        move |port, timeout| {
            let c = OciConfig {
                registry: format!("127.0.0.1:{port}"),
                timeout: Some(timeout),
                ..config(&server, &repository, &server.password)
            };
            open(&c, FAULT_LABEL).unwrap()
        },
    )
    .await
}

/// What [`storage_oci::timeout_of`] takes when a block sets none: the proxied blocks here
/// time out as a block with no `timeout` does.
const DEFAULT_TIMEOUT: i64 = 60;

/// 503s and connections reset mid-upload are retried: the put succeeds and reads back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_through_503s_and_resets_succeeds_by_retrying() {
    let rig = fault_rig("team/faults-retry").await;
    let v1 = rig.tree("v1", 6);
    rig.proxy.answer_503(3);
    rig.proxy.cut(Cut::Reset, 2, 256 << 10, Direction::Upstream);
    let at = BlockPath::parse("etl").unwrap();
    within_bound(
        "put",
        rig.proxied(DEFAULT_TIMEOUT)
            .put_directory(&v1, &at, &PutOptions::default()),
    )
    .await
    .0
    .expect("a put through transient faults");
    let injected = rig.proxy.injected();
    assert!(
        injected.unavailable >= 1 && injected.reset >= 1,
        "{injected:?}"
    );
    rig.assert_sound(&[&v1], &v1).await;
}

/// Every connection is reset 2 MiB into the upload: the put fails cleanly and the previous
/// version stays current and whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_cut_by_a_partition_fails_cleanly_and_keeps_current() {
    let rig = fault_rig("team/faults-put").await;
    a_put_cut_by_resets_fails_cleanly_and_keeps_head(&rig, 2 << 20).await;
}

/// A get cut 2 MiB into the download fails cleanly and writes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_get_cut_by_a_partition_fails_cleanly_with_nothing_written() {
    let rig = fault_rig("team/faults-get").await;
    a_get_cut_by_resets_fails_cleanly_with_nothing_written(&rig, 2 << 20).await;
}

/// A tree of about 3.5 MiB in many frames: 600 small modules and a 2 MiB random file.
fn many_frames(root: &Path, marker: &str) {
    small_tree(root, marker);
    for i in 0..600 {
        write(
            root,
            &format!("flows/pkg{}/mod_{i:03}.py", i % 7),
            format!("# {marker} {i}\nVALUE_{i} = {i}\n").repeat(20 + i % 50),
        );
    }
    write(root, "data/blob.bin", noise(2 << 20, 4242));
}

/// A default put writes format 3: a version of many frames is one pack, one layer. A cold
/// get reads it in a few requests, the pack by HTTP Range requests the registry answers
/// 206, where format 2 reads a blob per frame. A registry that ignores ranges (the proxy
/// hides them) is answered whole blobs, which are read, checked and sliced: same tree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_default_put_writes_packs_and_a_cold_get_reads_them_by_range() {
    let rig = fault_rig("team/packs").await;
    let src = rig.scratch().join("src");
    many_frames(&src, "packs");
    // A file no earlier run stored, so that no agent cache holds its frame.
    let rel = "flows/pkg3/this_run.py";
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    write(&src, rel, format!("RUN = {stamp}\n").repeat(30));
    let (f2, f3) = (
        BlockPath::parse("frames").unwrap(),
        BlockPath::parse("etl").unwrap(),
    );
    let block = rig.proxied(DEFAULT_TIMEOUT);
    let opts = PutOptions {
        format: PackageFormat::Frames,
        ..PutOptions::default()
    };
    block.put_directory(&src, &f2, &opts).await.unwrap();
    block
        .put_directory(&src, &f3, &PutOptions::default())
        .await
        .unwrap();
    let manifest = block.manifest(&f3, None).await.unwrap();
    assert_eq!(manifest.format, 3);
    let frames = manifest.frames.len();
    let packs = packs_of(&manifest).len();
    assert!(
        frames >= 10 && packs == 1,
        "{frames} frames in {packs} packs"
    );

    // A cold get of each, by a new block (nothing remembered), counted on the wire.
    let cold_get = |at: BlockPath, name: &'static str| {
        let (rig, src) = (&rig, &src);
        async move {
            let block = rig.proxied(DEFAULT_TIMEOUT);
            let dest = rig.scratch().join(name);
            let (r0, g0) = (rig.proxy.requests(), rig.proxy.ranged_requests());
            let started = Instant::now();
            let report = block.get_directory(&at, &dest, &uncached()).await.unwrap();
            let secs = started.elapsed().as_secs_f64();
            let (r1, g1) = (rig.proxy.requests(), rig.proxy.ranged_requests());
            assert_eq!(snapshot(&dest), snapshot(src), "{name}");
            eprintln!(
                "{name}: {} requests ({} ranged), {} frames, {secs:.3} s",
                r1 - r0,
                g1 - g0,
                report.frames_downloaded
            );
            (block, r1 - r0, g1 - g0)
        }
    };
    let (_, format2, _) = cold_get(f2.clone(), "cold-format-2").await;
    let (ranged_block, format3, ranged) = cold_get(f3.clone(), "cold-format-3").await;
    assert!(
        format2 >= frames as u64,
        "format 2 reads a blob per frame: {format2} requests for {frames} frames"
    );
    assert!(
        format3 <= 5 && (1..=2).contains(&ranged),
        "format 3: {format3} requests, {ranged} ranged, for {frames} frames in one pack"
    );
    assert!(
        ranged_block.ranged_reads(),
        "the registry answered a Range request with a whole blob"
    );

    // One file of the version: one ranged read of the frames that hold it.
    let g0 = rig.proxy.ranged_requests();
    let bytes = rig
        .proxied(DEFAULT_TIMEOUT)
        .read_path(&BlockPath::parse(&format!("etl/{rel}")).unwrap())
        .await
        .unwrap();
    assert_eq!(&bytes[..], &std::fs::read(src.join(rel)).unwrap()[..]);
    assert_eq!(rig.proxy.ranged_requests() - g0, 1);

    // A registry that ignores ranges: whole packs, read once each, the same tree.
    rig.proxy.hide_ranges(true);
    let (whole_block, whole, _) = cold_get(f3.clone(), "cold-format-3-whole").await;
    rig.proxy.hide_ranges(false);
    assert!(
        !whole_block.ranged_reads(),
        "the block did not notice the registry ignores ranges"
    );
    assert!(whole <= 5, "{whole} requests");
}

/// `current` keeps the HEAD history a registry lacks: a default rollback goes back to the
/// version current before (which no order of creation gives after a rollback), `versions`
/// says since when the current one is, and `gc --keep-within` keeps every version current
/// within the window while `gc --keep 1` without it drops them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn current_remembers_its_swaps_for_rollback_versions_and_gc() {
    use std::time::Duration;
    use storage_core::RollbackOptions;

    let s = subject("head-history").await;
    let at = s.path("etl");
    let src = s.fresh_dir("src");
    let mut ids = Vec::new();
    for marker in ["one", "two", "three"] {
        small_tree(&src, marker);
        let opts = PutOptions::default();
        let put = s.block.put_directory(&src, &at, &opts).await.expect("put");
        ids.push(put.version.unwrap());
    }
    let back = |to: Option<&String>| RollbackOptions {
        to: to.cloned(),
        ..RollbackOptions::default()
    };
    let r = s.block.rollback(&at, &back(Some(&ids[0]))).await.unwrap();
    assert_eq!((r.from.as_ref(), &r.to), (Some(&ids[2]), &ids[0]));
    let r = s.block.rollback(&at, &back(None)).await.unwrap();
    assert_eq!(r.to, ids[2], "the version current before, by the history");

    let listed = s.block.list_versions(&at).await.unwrap();
    let current: Vec<_> = listed.iter().filter(|v| v.current).collect();
    assert_eq!(current.len(), 1);
    assert_eq!(current[0].version, ids[2]);
    let since = current[0].current_since.as_deref().expect("since when");
    assert!(since.starts_with("20") && since.ends_with('Z'), "{since}");
    assert!(
        listed
            .iter()
            .all(|v| v.current || v.current_since.is_none())
    );

    let gc = |keep_within| GcOptions {
        keep_within,
        ..GcOptions::keep(1)
    };
    let hour = Some(Duration::from_secs(3600));
    let kept = s.block.gc(&at, &gc(hour)).await.unwrap();
    assert!(kept.removed_versions.is_empty(), "{kept:?}");
    let mut removed = s.block.gc(&at, &gc(None)).await.unwrap().removed_versions;
    removed.sort();
    let mut older = vec![ids[0].clone(), ids[1].clone()];
    older.sort();
    assert_eq!(removed, older);
}
