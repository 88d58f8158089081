//! Reading never changes the source: hashing a sparse file allocates none of its holes, on
//! tmpfs too, and a full tmpfs is scanned without SIGBUS.

use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::process::Command;

use crate::support::{Mounted, Tree, cutover, running_as_root};

/// A tmpfs of `size` mounted on a fresh directory; unmounted (then the directory removed) on drop.
struct SmallTmpfs {
    _mount: Mounted,
    dir: Tree,
}

fn small_tmpfs(size: &str) -> Option<SmallTmpfs> {
    if !running_as_root() {
        eprintln!("note: not root: cannot mount a tmpfs, tmpfs reading is not checked");
        return None;
    }
    let dir = Tree::new();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(dir.path())
        .status()
        .is_ok_and(|s| s.success());
    assert!(mounted, "root but cannot mount a tmpfs");
    Some(SmallTmpfs { _mount: Mounted(dir.path().to_path_buf()), dir })
}

const SPARSE_LEN: u64 = 256 << 20;
/// Off every page and chunk boundary.
const DATA_AT: u64 = (100 << 20) + 4093;

/// A 256 MiB file holding 4 bytes.
fn sparse_file(path: &Path, data: &[u8; 4]) {
    let file = std::fs::File::create(path).unwrap();
    file.set_len(SPARSE_LEN).unwrap();
    file.write_all_at(data, DATA_AT).unwrap();
}

/// Blocks used on the filesystem holding `path` (as `df` counts them).
fn used_blocks(path: &Path) -> u64 {
    let fs = rustix::fs::statvfs(path).unwrap();
    fs.f_blocks - fs.f_bfree
}

fn blocks(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().blocks()
}

#[test]
fn scanning_and_diffing_a_sparse_file_on_tmpfs_allocates_nothing() {
    let (Some(a), Some(b)) = (small_tmpfs("64m"), small_tmpfs("64m")) else { return };
    sparse_file(&a.dir.at("sparse.img"), b"data");
    sparse_file(&b.dir.at("sparse.img"), b"data");
    a.dir.file("small", "small");
    b.dir.file("small", "small");
    let before = [blocks(&a.dir.at("sparse.img")), used_blocks(a.dir.path()), used_blocks(b.dir.path())];
    assert!(before[0] * 512 < 1 << 20, "the test file is not sparse: {} blocks", before[0]);

    let mut dense = blake3::Hasher::new();
    dense.update(&vec![0; DATA_AT as usize]).update(b"data").update(&vec![0; (SPARSE_LEN - DATA_AT - 4) as usize]);
    let sums = cutover(["scan", "--b3sum"]).arg(a.dir.path()).run().expect_code(0).stdout_text();
    assert!(sums.contains(&format!("{}  sparse.img\n", dense.finalize().to_hex())), "{sums}");
    cutover(["scan", "--chunk-size", "64K"]).arg(a.dir.path()).run().expect_code(0);
    cutover(["diff"]).arg(a.dir.path()).arg(b.dir.path()).run().expect_code(0);
    b.dir.patch("sparse.img", DATA_AT + 2, b"T");
    let changed = cutover(["diff"]).arg(a.dir.path()).arg(b.dir.path()).run().expect_code(1).stdout_text();
    assert!(changed.starts_with("content    sparse.img"), "{changed}");
    b.dir.patch("sparse.img", DATA_AT + 2, b"t");

    let after = [blocks(&a.dir.at("sparse.img")), used_blocks(a.dir.path()), used_blocks(b.dir.path())];
    assert_eq!(after, before, "reading changed the source: [file blocks, tmpfs used, other tmpfs used]");
}

#[test]
fn a_full_tmpfs_with_a_sparse_file_scans_without_sigbus() {
    let (Some(a), Some(b)) = (small_tmpfs("16m"), small_tmpfs("16m")) else { return };
    for fs in [&a, &b] {
        sparse_file(&fs.dir.at("sparse.img"), b"data");
        // Fill the rest, to the last block.
        let filler = std::fs::File::create(fs.dir.at("filler")).unwrap();
        let block = vec![0x5a; 4096];
        let mut at = 0;
        while filler.write_all_at(&block, at).is_ok() {
            at += block.len() as u64;
        }
        filler.set_len(at).unwrap();
        assert_eq!(rustix::fs::statvfs(fs.dir.path()).unwrap().f_bavail, 0, "the tmpfs is not full");
    }
    let before = [used_blocks(a.dir.path()), used_blocks(b.dir.path())];
    // Run::code fails the test on a death by signal.
    cutover(["scan"]).arg(a.dir.path()).run().expect_code(0);
    let diff = cutover(["diff", "--format", "json"]).arg(a.dir.path()).arg(b.dir.path()).run();
    assert!([0, 1].contains(&diff.code()), "{}", diff.stderr);
    assert!(diff.report().differences().iter().all(|d| d["path"] != "sparse.img"), "{}", diff.stdout_text());
    assert_eq!([used_blocks(a.dir.path()), used_blocks(b.dir.path())], before);
}

#[test]
fn a_sparse_file_hashes_as_b3sum_and_blake3_of_its_dense_bytes_say() {
    let tree = Tree::new();
    let len: u64 = (13 << 20) + 12_345;
    let file = std::fs::File::create(tree.at("sparse.img")).unwrap();
    file.set_len(len).unwrap();
    let mut dense = vec![0u8; len as usize];
    // Data and holes starting and ending off every page and chunk boundary, data at both ends.
    for (i, (offset, n)) in
        [(0, 777), ((1 << 20) + 65_000, 300_001), ((5 << 20) - 3, 5), ((9 << 20) + 4097, 1 << 20), (len - 10, 10)]
            .into_iter()
            .enumerate()
    {
        let bytes = crate::support::noise(i as u64, n);
        file.write_all_at(&bytes, offset).unwrap();
        dense[offset as usize..offset as usize + n].copy_from_slice(&bytes);
    }
    drop(file);
    let allocated = blocks(&tree.at("sparse.img"));
    assert!(allocated * 512 < len / 2, "no holes on this filesystem: {allocated} blocks");
    let expected = format!("{}  sparse.img\n", blake3::hash(&dense).to_hex());
    for chunk in ["1K", "64K", "1M", "4M"] {
        let sums = cutover(["scan", "--b3sum", "--chunk-size", chunk]).arg(tree.path()).run().expect_code(0);
        assert_eq!(sums.stdout_text(), expected, "chunk {chunk}");
    }
    if let Some(b3sum) = crate::support::b3sum() {
        let out = Command::new(b3sum).arg("sparse.img").current_dir(tree.path()).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), expected);
    }
    assert_eq!(blocks(&tree.at("sparse.img")), allocated);
}
