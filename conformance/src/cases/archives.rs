//! Hostile archives: traversal, links out of the tree, zstd bombs, sizes the disk cannot hold; refused early, nothing written.

use super::*;

pub async fn hostile_archives_are_refused_with_nothing_written(s: &Subject) {
    if !tamperable(s) {
        // No archives to plant; a native tree's own hostile entries are its backend's tests.
        return assert_no_raw_objects(s, "hostile").await;
    }
    let outside = s.fresh_dir("outside");
    fs::create_dir_all(&outside).unwrap();
    let abs = outside.join("abs-evil.txt");
    let abs_name = abs.to_str().unwrap().to_string();
    let evil = b"evil".as_slice();
    let cases: Vec<(
        &str,
        Vec<RawEntry>,
        Vec<storage_core::package::manifest::ManifestEntry>,
    )> = vec![
        (
            "dotdot",
            vec![RawEntry::file("../../dotdot-evil.txt", evil)],
            vec![file_record("dotdot-evil.txt", evil)],
        ),
        (
            "dotdot-in-manifest",
            vec![RawEntry::file("../x.txt", evil)],
            vec![file_record("../x.txt", evil)],
        ),
        (
            "absolute",
            vec![RawEntry::file(&abs_name, evil)],
            vec![file_record("abs-evil.txt", evil)],
        ),
        (
            "escaping-link",
            vec![RawEntry::link(
                "esc",
                tar::EntryType::Symlink,
                "../../../outside",
            )],
            vec![symlink_record("esc", "inside")],
        ),
        (
            "escaping-link-in-manifest",
            vec![RawEntry::link(
                "esc",
                tar::EntryType::Symlink,
                "../../../outside",
            )],
            vec![symlink_record("esc", "../../../outside")],
        ),
        (
            "write-through-link",
            vec![
                RawEntry::link("l", tar::EntryType::Symlink, "."),
                RawEntry::file("l/x.txt", evil),
            ],
            vec![symlink_record("l", "."), file_record("l/x.txt", evil)],
        ),
        (
            "hard-link",
            vec![
                RawEntry::file("a.txt", evil),
                RawEntry::link("h.txt", tar::EntryType::Link, "a.txt"),
            ],
            vec![file_record("a.txt", evil), file_record("h.txt", evil)],
        ),
        (
            "fifo",
            vec![RawEntry::special("p", tar::EntryType::Fifo)],
            vec![file_record("p", b"")],
        ),
        (
            "device",
            vec![RawEntry::special("dev", tar::EntryType::Char)],
            vec![file_record("dev", b"")],
        ),
        (
            "not-in-manifest",
            vec![
                RawEntry::file("a.txt", evil),
                RawEntry::file("extra.sh", evil),
            ],
            vec![file_record("a.txt", evil)],
        ),
        (
            "same-path-twice",
            vec![
                RawEntry::file("a.txt", b"good"),
                RawEntry::file("a.txt", evil),
            ],
            vec![file_record("a.txt", b"good")],
        ),
        (
            "same-path-twice-in-manifest",
            vec![RawEntry::file("a.txt", evil), RawEntry::file("a.txt", evil)],
            vec![file_record("a.txt", evil), file_record("a.txt", evil)],
        ),
        (
            "file-then-folder-of-the-same-name",
            vec![RawEntry::file("a", evil), RawEntry::dir("a")],
            vec![file_record("a", evil)],
        ),
    ];
    for (name, entries, records) in cases {
        let at = format!("hostile/{name}");
        plant_entries(s, &at, &entries, records).await;
        let dest = outside.join(format!("dest-{name}"));
        let r = s
            .block
            .get_directory(&s.path(&at), &dest, &GetOptions::default())
            .await;
        let c = code(r);
        assert_eq!(c, 5, "{name}: exit code {c}");
        assert!(!dest.exists(), "{name}: destination was created");
        assert_no_leftovers_beside(&dest);
    }
    let left: Vec<String> = fs::read_dir(&outside)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        left.is_empty(),
        "files written outside their destination: {left:?}"
    );
    assert!(!abs.exists());
    assert!(
        !s.fresh_dir("x")
            .parent()
            .unwrap()
            .join("dotdot-evil.txt")
            .exists()
    );
}

const GIB: u64 = 1024 * 1024 * 1024;

/// A package that must be refused with exit 5 before it costs memory or disk: what it is,
/// its bytes, the uncompressed size its manifest claims, its records, and what the refusal
/// must say.
struct Bomb {
    name: &'static str,
    package: Vec<u8>,
    uncompressed: u64,
    records: Vec<storage_core::package::manifest::ManifestEntry>,
    says: &'static str,
}

/// A zstd package of one tar header claiming `size` bytes, followed by `zeros` of zeros.
fn header_bomb(name: &[u8], kind: tar::EntryType, size: u64, zeros: u64) -> Vec<u8> {
    let mut head = Vec::new();
    header(&mut head, name, kind, size, None);
    let mut package = zstd::encode_all(&head[..], 3).unwrap();
    package.extend(zstd_zeros(zeros));
    package
}

fn bombs() -> Vec<Bomb> {
    let small = b"ok\n".as_slice();
    let one = || vec![file_record("a.txt", small)];
    // A valid tar followed by 4 GiB of zeros: unpacks to far more than its entries take up.
    let mut trailing = tar_entries(&[RawEntry::file("a.txt", small)]);
    trailing.extend_from_slice(&[0u8; 1024]);
    let mut trailing = zstd::encode_all(&trailing[..], 3).unwrap();
    trailing.extend(zstd_zeros(4 * GIB));
    // A manifest declaring a 1 TiB file in a package of a few KiB.
    let mut absurd = file_record("a.txt", small);
    absurd.size = 1024 * GIB;
    // Sizes that add up past u64.
    let (mut a, mut b) = (file_record("a.txt", small), file_record("b.txt", small));
    (a.size, b.size) = (1 << 63, 1 << 63);
    // A pax header: `tar -x` would take its size and path, so a package never holds one.
    let mut pax = vec![RawEntry::file("pax", b"17 path=evil.txt\n")];
    pax[0].kind = tar::EntryType::XHeader;
    pax.push(RawEntry::file("a.txt", small));
    let pax = tar_bytes(&pax);
    vec![
        Bomb {
            name: "trailing",
            package: trailing,
            uncompressed: 4 * GIB,
            records: one(),
            says: "unpacks to more than",
        },
        Bomb {
            name: "long-name",
            // A GNU long-name record claiming 16 GiB: tar would read it into memory.
            package: header_bomb(
                b"././@LongLink",
                tar::EntryType::GNULongName,
                16 * GIB,
                16 * GIB,
            ),
            uncompressed: 16 * GIB,
            records: one(),
            says: "PATH_MAX",
        },
        Bomb {
            name: "huge-header",
            // A file header claiming 1 TiB where the manifest lists 3 bytes.
            package: header_bomb(b"a.txt", tar::EntryType::Regular, 1024 * GIB, GIB),
            uncompressed: GIB,
            records: one(),
            says: "",
        },
        Bomb {
            name: "absurd",
            package: header_bomb(b"a.txt", tar::EntryType::Regular, absurd.size, 64 << 20),
            uncompressed: 1024 * GIB,
            records: vec![absurd],
            says: "more than zstd can expand to",
        },
        Bomb {
            name: "overflow",
            package: zstd::encode_all(&tar_bytes(&[RawEntry::file("a.txt", small)])[..], 3)
                .unwrap(),
            uncompressed: 0,
            records: vec![a, b],
            says: "",
        },
        Bomb {
            name: "pax",
            package: zstd::encode_all(&pax[..], 3).unwrap(),
            uncompressed: pax.len() as u64,
            records: one(),
            says: "pax",
        },
    ]
}

pub async fn zstd_bombs_and_huge_sizes_are_refused_early_with_nothing_written(s: &Subject) {
    if !tamperable(s) {
        return assert_no_raw_objects(s, "bomb").await;
    }
    for bomb in bombs() {
        let at = format!("bomb/{}", bomb.name);
        plant_package(
            s.block.as_ref(),
            &s.path(&at),
            bomb.package,
            bomb.uncompressed,
            bomb.records,
        )
        .await;
        let msg = refused_cleanly(s, &at, 5).await;
        assert!(
            msg.contains(&at),
            "{}: the message names no slug: {msg}",
            bomb.name
        );
        assert!(msg.contains(bomb.says), "{}: {msg}", bomb.name);
    }
}

/// Bytes free on the filesystem that holds `dir`.
fn free_bytes(dir: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).unwrap();
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid NUL-terminated path and a struct statvfs to fill.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    assert_eq!(rc, 0, "statvfs {}", dir.display());
    st.f_bavail as u64 * st.f_frsize as u64
}

pub async fn versions_larger_than_the_free_space_are_refused_before_unpacking(s: &Subject) {
    if !tamperable(s) {
        return assert_no_raw_objects(s, "full").await;
    }
    let probe = s.fresh_dir("probe");
    fs::create_dir_all(&probe).unwrap();
    let declared = free_bytes(&probe) + 64 * GIB;
    let small = b"ok\n".as_slice();
    let mut record = file_record("big.bin", small);
    record.size = declared;
    // The header claims the declared size; the stream then ends. A skippable frame makes the
    // package big enough that zstd could expand it that far.
    let mut head = Vec::new();
    header(
        &mut head,
        b"big.bin",
        tar::EntryType::Regular,
        declared,
        None,
    );
    let mut package = zstd::encode_all(&head[..], 3).unwrap();
    let padding = declared / storage_core::package::manifest::MAX_EXPANSION + 4096;
    package.extend(zstd_skippable(padding as u32));
    plant_package(
        s.block.as_ref(),
        &s.path("full"),
        package,
        declared,
        vec![record],
    )
    .await;
    let msg = refused_cleanly(s, "full", 1).await;
    assert!(msg.contains("not enough space"), "{msg}");
}
