//! How apply reaches paths in the target, specified from the outside: never through a mount
//! point (bind mounts of directories and of single files on the same filesystem included),
//! never refused a write a careful rsync user would expect to work (read-only entries the user
//! owns), and at a cost linear in depth (trees deeper than PATH_MAX).
//!
//! Mount tests need root (as in CI) and say so when they cannot run; every mount is undone by a
//! guard, so a failing test leaves none behind. The source is judged by an outside tool:
//! `rsync -nac` against a copy taken before the run prints nothing when it is unchanged.

#[allow(dead_code)]
mod support;

use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use cutover::apply::target::{RemoveStats, TargetRoot};
use rustix::fs::{self as rfs, Mode, OFlags};
use support::{Bind, Tree, cutover, noise};

fn slash(path: &Path) -> std::ffi::OsString {
    let mut s = path.as_os_str().to_owned();
    s.push("/");
    s
}

/// `rsync -naHSc --specials --devices -i --delete A/ B/`: what rsync would change, one line
/// each; empty when the trees are equal in content, links, modes, times and names.
fn rsync_changes(a: &Path, b: &Path) -> String {
    let out = Command::new("rsync")
        .args(["-naHSc", "--specials", "--devices", "-i", "--delete"])
        .arg(slash(a))
        .arg(slash(b))
        .output()
        .expect("rsync must be installed to judge the result");
    assert!(out.status.success(), "rsync: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn assert_same(before: &Tree, now: &Path, what: &str) {
    let changes = rsync_changes(before.path(), now);
    assert!(changes.is_empty(), "{what} changed:\n{changes}");
}

/// The same ten files in each tree, so that what a test removes is never most of the target.
fn common(trees: &[&Tree]) {
    for tree in trees {
        for i in 0..10 {
            tree.file(&format!("common/{i}"), format!("{i}"));
        }
    }
}

fn repair(source: &Path, target: &Path, extra: &[&str]) -> support::Run {
    cutover(["repair", "--format", "json"]).args(extra).arg(source).arg(target).run()
}

#[test]
fn a_source_directory_bind_mounted_into_the_target_is_never_written_nor_deleted() {
    let (source, target) = (Tree::new(), Tree::new());
    source.file("keep", "k").file("sub/a", "aaaa").file("sub/b", "bbbb").file("shown/f", "new");
    target.file("keep", "k").dir("backup").dir("shown");
    common(&[&source, &target]);
    let before = source.copy();
    // backup: only in the target, so --delete plans its removal; shown: in both, so the plan
    // writes into it. Both show source directories.
    let Some(_backup) = Bind::new(&source.at("sub"), &target.at("backup")) else { return };
    let Some(_shown) = Bind::new(&source.at("sub"), &target.at("shown")) else { return };
    let run = repair(source.path(), target.path(), &["--delete"]).expect_code(2);
    assert_same(&before, source.path(), "the source, bind-mounted into the target");
    let out = format!("{}{}", run.stdout_text(), run.stderr);
    // Refused up front as an overlap (a source directory is shown inside the target), or else
    // each mount point named as never written.
    let named = out.contains("mount point") && out.contains("backup") && out.contains("shown");
    assert!(named || run.stderr.contains("overlap"), "{out}");
}

#[test]
fn the_source_bind_mounted_inside_the_target_is_refused_before_anything_is_written() {
    let (source, target) = (Tree::new(), Tree::new());
    source.file("a", "1").file("d/b", "2");
    target.file("extra", "x").dir("backup");
    common(&[&source, &target]);
    let (before, target_before) = (source.copy(), target.copy());
    let Some(_mount) = Bind::new(source.path(), &target.at("backup")) else { return };
    let run = repair(source.path(), target.path(), &["--delete"]).expect_code(2);
    assert!(run.stderr.contains("overlap"), "{}", run.stderr);
    drop(_mount);
    assert_same(&before, source.path(), "the source");
    assert_same(&target_before, target.path(), "the target");
    // And the reverse: the target shown inside the source.
    source.dir("view");
    let before = source.copy();
    let Some(_mount) = Bind::new(target.path(), &source.at("view")) else { return };
    let run = repair(source.path(), target.path(), &["--delete"]).expect_code(2);
    assert!(run.stderr.contains("overlap"), "{}", run.stderr);
    drop(_mount);
    assert_same(&before, source.path(), "the source");
    assert_same(&target_before, target.path(), "the target");
}

#[test]
fn a_source_file_bind_mounted_over_a_target_file_is_never_patched_nor_changed() {
    let (source, target) = (Tree::new(), Tree::new());
    let body = noise(7, 64 * 1024);
    let mut changed = body.clone();
    changed[40_000] ^= 0xff;
    // `victim` is what is mounted over the target's `big` and `small`; the plan patches `big`
    // (it differs in one chunk) and sets the mode of `small` (same bytes, other mode).
    source.file("big", &body).file("small", &changed).mode("small", 0o600).file("victim", &changed);
    target.file("big", "").file("small", "");
    let before = source.copy();
    let Some(_big) = Bind::new(&source.at("victim"), &target.at("big")) else { return };
    let Some(_small) = Bind::new(&source.at("victim"), &target.at("small")) else { return };
    let run = repair(source.path(), target.path(), &["--chunk-size", "4K", "--meta", "all"]).expect_code(2);
    assert_same(&before, source.path(), "the source file mounted into the target");
    let out = format!("{}{}", run.stdout_text(), run.stderr);
    // Refused up front as an overlap (a source file is shown inside the target), or else each
    // mount point named as never written.
    let named = out.contains("mount point") && out.contains("big") && out.contains("small");
    assert!(named || run.stderr.contains("overlap"), "{out}");
}

/// A chain `d/d/d/...` of `depth` directories below `top` (created if missing), each made
/// relative to the one above it, so the paths may exceed PATH_MAX; a file at the bottom.
fn chain(top: &Path, depth: usize) {
    std::fs::create_dir_all(top).unwrap();
    let mut dir: OwnedFd = rfs::open(top, OFlags::DIRECTORY | OFlags::RDONLY, Mode::empty()).unwrap();
    for _ in 0..depth {
        rfs::mkdirat(&dir, "d", Mode::from_raw_mode(0o755)).unwrap();
        dir = rfs::openat(&dir, "d", OFlags::DIRECTORY | OFlags::RDONLY, Mode::empty()).unwrap();
    }
    let file = rfs::openat(&dir, "bottom", OFlags::CREATE | OFlags::WRONLY, Mode::from_raw_mode(0o644)).unwrap();
    rustix::io::write(&file, b"deep").unwrap();
}

const DEEP: usize = 10_000;

#[test]
fn a_tree_deeper_than_path_max_is_counted_removed_and_built_through_target_root() {
    let target = Tree::new();
    chain(&target.at("gone"), DEEP);
    let root = TargetRoot::open(target.path()).unwrap();
    let expected = RemoveStats { entries: DEEP as u64 + 2, bytes: 4 };
    assert_eq!(root.count_tree(b"gone").unwrap(), expected);
    assert_eq!(root.remove_tree(b"gone").unwrap(), expected);
    assert!(!target.at("gone").exists());
    // Built one level at a time, as a plan's mkdirs do, then given modes from the bottom up,
    // as its metas do.
    let mut path = b"new".to_vec();
    root.create_dir(&path, 0o700).unwrap();
    for _ in 0..DEEP {
        path.extend_from_slice(b"/d");
        root.create_dir(&path, 0o700).unwrap();
    }
    while let Some(cut) = path.iter().rposition(|&b| b == b'/') {
        root.set_mode(&path, 0o755).unwrap();
        path.truncate(cut);
    }
    let mut depth = 0;
    let mut dir: OwnedFd = rfs::open(target.at("new"), OFlags::DIRECTORY | OFlags::RDONLY, Mode::empty()).unwrap();
    while let Ok(next) = rfs::openat(&dir, "d", OFlags::DIRECTORY | OFlags::RDONLY, Mode::empty()) {
        assert_eq!(rfs::fstat(&next).unwrap().st_mode & 0o7777, 0o755);
        dir = next;
        depth += 1;
    }
    assert_eq!(depth, DEEP);
    assert_eq!(root.remove_tree(b"new").unwrap().entries, DEEP as u64 + 1);
}

#[test]
fn repair_removes_and_builds_a_chain_ten_thousand_directories_deep() {
    let (source, target) = (Tree::new(), Tree::new());
    source.file("keep", "k");
    target.file("keep", "k");
    common(&[&source, &target]);
    chain(&target.at("extra"), DEEP);
    // The chain is nearly all of the target: the delete guard rightly wants --force.
    repair(source.path(), target.path(), &["--delete"]).expect_code(2);
    assert!(target.at("extra").exists());
    repair(source.path(), target.path(), &["--delete", "--force"]).expect_code(0);
    assert!(!target.at("extra").exists());
    chain(&source.at("built"), DEEP);
    repair(source.path(), target.path(), &["--delete"]).expect_code(0);
    // rsync itself cannot open paths this long (ENOMEM), so the chain is walked here.
    let mut dir: OwnedFd = rfs::open(target.at("built"), OFlags::DIRECTORY | OFlags::RDONLY, Mode::empty()).unwrap();
    for _ in 0..DEEP {
        dir = rfs::openat(&dir, "d", OFlags::DIRECTORY | OFlags::RDONLY | OFlags::NOFOLLOW, Mode::empty()).unwrap();
    }
    let bottom = rfs::openat(&dir, "bottom", OFlags::RDONLY | OFlags::NOFOLLOW, Mode::empty()).unwrap();
    let mut bytes = [0; 8];
    let n = rustix::io::read(&bottom, &mut bytes).unwrap();
    assert_eq!(&bytes[..n], b"deep");
}

#[test]
fn read_only_entries_the_user_owns_are_repaired_as_rsync_does() {
    let Some(nobody) = support::Unprivileged::new() else { return };
    let (source, target) = (Tree::new(), Tree::new());
    let big = noise(3, 64 * 1024);
    let mut old = big.clone();
    old[10_000] ^= 1;
    source.file("ro/f", "new").file("ro/added", "a").file("big", &big).dir("ro/sub");
    target.file("ro/f", "old").file("big", &old).file("gone/x/y", "y").file("gone/z", "z").file("ro/extra", "e");
    source.mode("ro/sub", 0o555).mode("ro", 0o555).mode("big", 0o444);
    target.mode("big", 0o444).mode("gone/x", 0o555).mode("gone", 0o555).mode("ro", 0o555);
    for tree in [&source, &target] {
        let out = Command::new("chown").arg("-R").arg("65534:65534").arg(tree.path()).output().unwrap();
        assert!(out.status.success());
    }
    // --force: the removals are most of this small target, which the delete guard refuses.
    let run = nobody
        .cutover(["repair", "--delete", "--force", "--chunk-size", "4K"])
        .arg(source.path())
        .arg(target.path())
        .run()
        .expect_code(0);
    let changes = rsync_changes(source.path(), target.path());
    assert!(changes.is_empty(), "{changes}\n{}{}", run.stdout_text(), run.stderr);
    assert_eq!(std::fs::metadata(target.at("ro")).unwrap().mode() & 0o7777, 0o555);
    assert_eq!(std::fs::metadata(target.at("big")).unwrap().mode() & 0o7777, 0o444);
    assert!(!target.at("gone").exists());
}
