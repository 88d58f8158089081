//! Incremental verification (`scan --cache`, `--scrub`, `--full`): a cached scan must never
//! hide a change. Every cached manifest is compared with an uncached scan of the same tree.

#[allow(dead_code)]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use cutover::manifest::{Manifest, read_manifest};
use support::{Tree, cutover, noise};

fn scan_to(dir: &Path, out: &Path, extra: &[&str]) -> String {
    let run = cutover(["scan".as_ref(), dir.as_os_str(), "-o".as_ref(), out.as_os_str()]).args(extra).run();
    let run = run.expect_code(0);
    format!("{}{}", run.stdout_text(), run.stderr)
}

/// A cached scan (cache `cache`, replaced) and an uncached one of `dir` must record the same.
#[track_caller]
fn assert_cache_hides_nothing(dir: &Path, cache: &Path, work: &Path, why: &str) -> String {
    let fresh = work.join("fresh.manifest");
    let run = cutover(["scan".as_ref(), dir.as_os_str(), "--cache".as_ref(), cache.as_os_str()]).run().expect_code(0);
    scan_to(dir, &fresh, &[]);
    let (cached, fresh): (Manifest, Manifest) = (read_manifest(cache).unwrap(), read_manifest(&fresh).unwrap());
    let (cached, fresh) = (unstamped(cached), unstamped(fresh));
    assert_eq!(cached.root_digest(), fresh.root_digest(), "{why}: root hash");
    assert_eq!(cached.entries, fresh.entries, "{why}: entries");
    run.stdout_text()
}

/// The entries without their stamps: a file changed less than a second before a scan has
/// none, so two scans a moment apart may differ there and only there.
fn unstamped(mut manifest: Manifest) -> Manifest {
    for entry in &mut manifest.entries {
        entry.stamp = None;
    }
    manifest
}

/// Files changed less than a second before a scan are read again by the next one: wait that
/// out, so that the counts below are exact.
fn settle() {
    std::thread::sleep(std::time::Duration::from_millis(1100));
}

fn touch_ref(reference: &Path, path: &Path) {
    let ok = Command::new("touch").arg("-r").arg(reference).arg(path).status().unwrap().success();
    assert!(ok, "touch -r");
}

#[test]
fn a_cached_scan_hides_no_change_a_nightly_job_meets() {
    let tree = Tree::new();
    let big = noise(7, (3 << 20) + 5);
    tree.file("docs/a.txt", "alpha one")
        .file("docs/b.txt", "bravo two")
        .file("docs/c.txt", "charlie 3")
        .file("big.bin", &big)
        .file("gone.txt", "to be deleted")
        .file("becomes-dir", "a file for now")
        .file("swap/x", "xxxx")
        .file("swap/y", "yyyy")
        .file("reborn", "first life");
    settle();
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache.manifest");
    let first = assert_cache_hides_nothing(tree.path(), &cache, work.path(), "first run");
    assert!(first.contains("verified from data: 9 files"), "{first}");
    let again = assert_cache_hides_nothing(tree.path(), &cache, work.path(), "unchanged");
    assert!(again.contains("verified from data: 0 files, 0 B; trusted from metadata: 9 files"), "{again}");

    // Content edited in place, then the mtime put back as it was: only the ctime tells.
    let stamp = work.path().join("stamp");
    std::fs::write(&stamp, "").unwrap();
    touch_ref(&tree.at("docs/a.txt"), &stamp);
    tree.patch("docs/a.txt", 0, b"ALPHA");
    touch_ref(&stamp, &tree.at("docs/a.txt"));
    let out = assert_cache_hides_nothing(tree.path(), &cache, work.path(), "edit with mtime restored");
    assert!(out.contains("verified from data: 1 file, 9 B"), "{out}");

    // One byte of a big file, mtime restored: its chunk CVs must be re-read too.
    touch_ref(&tree.at("big.bin"), &stamp);
    tree.patch("big.bin", 2 << 20, b"!");
    touch_ref(&stamp, &tree.at("big.bin"));
    assert_cache_hides_nothing(tree.path(), &cache, work.path(), "big file byte");

    // A same-size rewrite, a new file, a deleted one, a file replaced by a directory.
    tree.file("docs/b.txt", "BRAVO TWO");
    tree.file("docs/new.txt", "brand new");
    tree.remove("gone.txt");
    tree.remove("becomes-dir");
    tree.file("becomes-dir/inside", "now a directory");
    assert_cache_hides_nothing(tree.path(), &cache, work.path(), "rewrite, new, deleted, file to dir");

    // Two files of one size swap names (renames), and a directory moves.
    std::fs::rename(tree.at("swap/x"), tree.at("swap/tmp")).unwrap();
    std::fs::rename(tree.at("swap/y"), tree.at("swap/x")).unwrap();
    std::fs::rename(tree.at("swap/tmp"), tree.at("swap/y")).unwrap();
    std::fs::rename(tree.at("docs"), tree.at("papers")).unwrap();
    assert_cache_hides_nothing(tree.path(), &cache, work.path(), "renames");

    // Deleted and written again at the same path with the same size and mtime: the inode may
    // well be reused, the ctime is new.
    touch_ref(&tree.at("reborn"), &stamp);
    tree.remove("reborn");
    tree.file("reborn", "other life");
    touch_ref(&stamp, &tree.at("reborn"));
    assert_cache_hides_nothing(tree.path(), &cache, work.path(), "recreated at the same path");

    // A directory replaced by a file of the name, and a mode change (ctime, no content).
    std::fs::remove_dir_all(tree.at("becomes-dir")).unwrap();
    tree.file("becomes-dir", "a file again");
    tree.mode("big.bin", 0o600);
    assert_cache_hides_nothing(tree.path(), &cache, work.path(), "dir to file, chmod");
}

/// The `pread64`/`read` calls of a cached scan of an unchanged tree, counted by strace: the
/// manifest is read with `read`, files with `pread64` (or mapped).
#[test]
fn a_cached_rescan_of_an_unchanged_tree_reads_no_file() {
    let tree = Tree::new();
    for i in 0..50 {
        tree.file(&format!("d{}/f{i}", i % 5), noise(i, 1000 + i as usize * 37));
    }
    tree.file("big", noise(99, 4 << 20));
    settle();
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache.manifest");
    cutover(["scan".as_ref(), tree.path().as_os_str(), "--cache".as_ref(), cache.as_os_str()]).run().expect_code(0);
    let trace = work.path().join("trace");
    let status = Command::new("strace")
        .args(["-f", "-qq", "-y", "-e", "trace=read,pread64,preadv,preadv2,mmap", "-o"])
        .arg(&trace)
        .arg(env!("CARGO_BIN_EXE_cutover"))
        .arg("scan")
        .arg(tree.path())
        .arg("--cache")
        .arg(&cache)
        .env("CUTOVER_STATE_DIR", support::test_state_dir())
        .output()
        .unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    let stdout = String::from_utf8_lossy(&status.stdout);
    assert!(stdout.contains("verified from data: 0 files, 0 B; trusted from metadata: 51 files"), "{stdout}");
    let trace = std::fs::read_to_string(&trace).unwrap();
    // With -y, every descriptor is shown with its path: none may be a file of the tree.
    let inside = format!("<{}/", tree.path().canonicalize().unwrap().display());
    let reads: Vec<&str> = trace.lines().filter(|l| l.contains(&inside)).collect();
    assert!(trace.contains("cache.manifest>"), "the trace shows paths:\n{trace}");
    assert!(reads.is_empty(), "a cached scan of an unchanged tree read files:\n{}", reads.join("\n"));
}

#[test]
fn full_reads_everything_and_scrub_every_file_within_n_runs() {
    let tree = Tree::new();
    for i in 0..40 {
        tree.file(&format!("f{i:02}"), format!("file number {i}"));
    }
    settle();
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache.manifest");
    let scan = |extra: &[&str]| {
        let args = ["scan".as_ref(), tree.path().as_os_str(), "--cache".as_ref(), cache.as_os_str()];
        cutover(args).args(extra).run().expect_code(0).stdout_text()
    };
    scan(&[]);
    assert!(scan(&["--full"]).contains("verified from data: 40 files"));
    // Over 4 runs of --scrub 4, the slices read add up to every file, each once.
    let mut read = 0;
    for run in 0..4 {
        let out = scan(&["--scrub", "4"]);
        assert!(out.contains(&format!("(scrub slice {} of 4)", run + 1)), "{out}");
        let n: u64 = out.split("verified from data: ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
        read += n;
    }
    assert_eq!(read, 40, "every file read exactly once in 4 runs of --scrub 4");
}

/// Unmounts and detaches on drop, so a failing test leaves no mount behind.
struct Loop {
    image: PathBuf,
    mount: PathBuf,
    device: String,
    mounted: bool,
}

impl Loop {
    fn new(dir: &Path) -> Option<Loop> {
        let image = dir.join("fs.img");
        let mount = dir.join("mnt");
        std::fs::create_dir(&mount).unwrap();
        std::fs::File::create(&image).unwrap().set_len(32 << 20).unwrap();
        let mkfs = Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&image).status().ok()?;
        if !mkfs.success() {
            return None;
        }
        let out = Command::new("losetup").args(["-f", "--show"]).arg(&image).output().ok()?;
        if !out.status.success() {
            return None;
        }
        let device = String::from_utf8(out.stdout).unwrap().trim().to_string();
        let mut this = Loop { image, mount, device, mounted: false };
        this.mount().then_some(this)
    }

    fn mount(&mut self) -> bool {
        self.mounted = Command::new("mount").arg(&self.device).arg(&self.mount).status().is_ok_and(|s| s.success());
        self.mounted
    }

    fn umount(&mut self) {
        assert!(Command::new("umount").arg(&self.mount).status().unwrap().success());
        self.mounted = false;
    }

    /// Flips one byte of the data of `file` (at its first physical block) with the
    /// filesystem unmounted, through the loop device: no metadata changes at all.
    fn rot(&mut self, file: &Path) {
        let out = Command::new("filefrag").args(["-v", "-b4096"]).arg(file).output().unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        // "   0:        0..       0:      34816..     34816:      1:             last,eof"
        let line = text.lines().find(|l| l.trim_start().starts_with("0:")).expect("an extent");
        let physical: u64 = line.split(':').nth(2).unwrap().trim().split("..").next().unwrap().trim().parse().unwrap();
        self.umount();
        use std::os::unix::fs::FileExt;
        let dev = std::fs::OpenOptions::new().read(true).write(true).open(&self.device).unwrap();
        let mut byte = [0u8];
        dev.read_exact_at(&mut byte, physical * 4096 + 3).unwrap();
        byte[0] ^= 0x20;
        dev.write_all_at(&byte, physical * 4096 + 3).unwrap();
        dev.sync_all().unwrap();
        drop(dev);
        let _ = Command::new("blockdev").arg("--flushbufs").arg(&self.device).status();
        assert!(self.mount(), "mount again");
        let _ = &self.image;
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg(&self.mount).status();
        }
        let _ = Command::new("losetup").arg("-d").arg(&self.device).status();
    }
}

#[test]
fn scrub_finds_bit_rot_within_n_runs_and_a_plain_cached_run_does_not() {
    let work = tempfile::tempdir().unwrap();
    let Some(mut fs) = Loop::new(work.path()) else {
        eprintln!("skipped: cannot make and mount an ext4 image here (needs root and loop devices)");
        return;
    };
    let root = fs.mount.join("tree");
    for i in 0..12 {
        let path = root.join(format!("f{i:02}"));
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(&path, format!("the contents of file {i}, long enough to be worth it")).unwrap();
    }
    // Allocated on disk now (no delayed allocation), so filefrag can say where.
    assert!(Command::new("sync").status().unwrap().success());
    settle();
    let cache = work.path().join("cache.manifest");
    let scan = |extra: &[&str]| {
        let args = ["scan".as_ref(), root.as_os_str(), "--cache".as_ref(), cache.as_os_str()];
        cutover(args).args(extra).run().expect_code(0).stdout_text()
    };
    scan(&[]);
    let good = read_manifest(&cache).unwrap().root_digest();
    fs.rot(&root.join("f05"));
    // The byte did change under the filesystem (an uncached scan sees it)...
    let fresh = work.path().join("fresh.manifest");
    scan_to(&root, &fresh, &[]);
    assert_ne!(read_manifest(&fresh).unwrap().root_digest(), good, "the flipped byte is visible to a full read");
    // ...but no metadata did, so a plain cached run trusts the file: the reason for --scrub.
    let out = scan(&[]);
    assert!(out.contains("verified from data: 0 files"), "{out}");
    assert_eq!(read_manifest(&cache).unwrap().root_digest(), good, "an unscrubbed cached run does not find bit rot");
    // Within 3 runs of --scrub 3, the rotten file is read and its new digest recorded.
    let mut found = None;
    for run in 1..=3 {
        scan(&["--scrub", "3"]);
        if read_manifest(&cache).unwrap().root_digest() != good {
            found = Some(run);
            break;
        }
    }
    assert!(found.is_some(), "--scrub 3 did not find the flipped byte within 3 runs");
    assert_eq!(unstamped(read_manifest(&cache).unwrap()).entries, unstamped(read_manifest(&fresh).unwrap()).entries);
}

/// `diff --state DIR` twice, then after edits that keep size and mtime: the JSON says what was
/// read, and no edit is hidden.
#[test]
fn diff_with_state_trusts_unchanged_files_and_catches_restored_mtime_edits() {
    let (source, target) = (Tree::new(), Tree::new());
    for i in 0..10 {
        source.file(&format!("d/f{i}"), format!("content number {i}"));
        target.file(&format!("d/f{i}"), format!("content number {i}"));
    }
    settle();
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("state");
    let diff = |extra: &[&str]| {
        let args = ["diff".as_ref(), source.path().as_os_str(), target.path().as_os_str(), "--state".as_ref()];
        cutover(args).arg(&state).args(["--format", "json"]).args(extra).run()
    };
    let first = diff(&[]).expect_code(0).json();
    assert_eq!(first["target"]["verified"]["verified_files"], 10, "{first}");
    let second = diff(&[]).expect_code(0).json();
    for side in ["source", "target"] {
        assert_eq!(second[side]["verified"]["verified_files"], 0, "{second}");
        assert_eq!(second[side]["verified"]["trusted_files"], 10, "{second}");
    }
    // The target's file edited, mtime put back: found, though size and mtime say nothing.
    let stamp = work.path().join("stamp");
    std::fs::write(&stamp, "").unwrap();
    touch_ref(&target.at("d/f3"), &stamp);
    target.patch("d/f3", 0, b"C");
    touch_ref(&stamp, &target.at("d/f3"));
    let third = diff(&[]).expect_code(1).json();
    assert_eq!(third["differences"][0]["path"], "d/f3", "{third}");
    assert_eq!(third["target"]["verified"]["verified_files"], 1, "{third}");
    // Still found on the next run (the stored manifest holds the edited file's digest).
    diff(&[]).expect_code(1);
    // A cache of other settings is not used, and says so.
    let other = diff(&["--chunk-size", "64K"]).expect_code(1);
    assert!(other.stderr.contains("not used as a cache: its chunk size differs"), "{}", other.stderr);
}

/// `repair --state DIR` as a nightly job: an edit that keeps size and mtime, on either side,
/// is repaired, judged by `diff -r`.
#[test]
fn repair_with_state_repairs_edits_with_restored_mtimes() {
    let source = Tree::new();
    for i in 0..10 {
        source.file(&format!("d/f{i}"), format!("content number {i}"));
    }
    let target = source.copy();
    settle();
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("state");
    let repair = || {
        let args = ["repair".as_ref(), source.path().as_os_str(), target.path().as_os_str(), "--state".as_ref()];
        cutover(args).arg(&state).run().expect_code(0)
    };
    repair();
    repair();
    let stamp = work.path().join("stamp");
    std::fs::write(&stamp, "").unwrap();
    for (tree, path) in [(&target, "d/f2"), (&source, "d/f7")] {
        touch_ref(&tree.at(path), &stamp);
        tree.patch(path, 0, b"X");
        touch_ref(&stamp, &tree.at(path));
        repair();
        let same = Command::new("diff").arg("-r").arg(source.path()).arg(target.path()).status().unwrap();
        assert!(same.success(), "{path} edited with its mtime restored was not repaired");
    }
}

/// Repair's verify scan reads again only what apply wrote: the target's preads, counted by
/// strace, are one per file for the first scan plus one for the file repaired. (A file's first
/// read is a `preadv2` that does not wait for the storage; on these just-written files it reads
/// them whole.)
#[test]
fn repair_verify_reads_only_what_apply_wrote() {
    let source = Tree::new();
    for i in 0..20 {
        source.file(&format!("f{i:02}"), format!("content number {i:02}"));
    }
    let target = source.copy();
    target.file("f05", "CONTENT NUMBER 05");
    settle();
    let work = tempfile::tempdir().unwrap();
    let trace = work.path().join("trace");
    let out = Command::new("strace")
        .args(["-f", "-qq", "-y", "-e", "trace=pread64,preadv2", "-o"])
        .arg(&trace)
        .arg(env!("CARGO_BIN_EXE_cutover"))
        .arg("repair")
        .arg(source.path())
        .arg(target.path())
        .env("CUTOVER_STATE_DIR", work.path().join("state"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let inside = format!("<{}/", target.path().canonicalize().unwrap().display());
    let trace = std::fs::read_to_string(&trace).unwrap();
    let reads = trace.lines().filter(|l| l.contains(&inside)).count();
    // 20 in the first scan, 1 for the repaired f05 at verify (not 20 more).
    assert!((21..=23).contains(&reads), "{reads} preads of target files:\n{trace}");
    let same = Command::new("diff").arg("-r").arg(source.path()).arg(target.path()).status().unwrap();
    assert!(same.success());
}

/// `--changed-from`: the listed paths (and the directories above them) are looked at again,
/// everything else comes from the cache. With every change listed, the manifest equals an
/// uncached scan's; what is not listed is trusted, as documented.
#[test]
fn changed_from_rereads_the_listed_paths_and_trusts_the_rest() {
    let tree = Tree::new();
    for dir in ["a", "b", "c/d"] {
        for i in 0..3 {
            tree.file(&format!("{dir}/f{i}"), format!("{dir} number {i}"));
        }
    }
    settle();
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache.manifest");
    let scan = |list: &[u8], extra: &[&str]| {
        let args = ["scan".as_ref(), tree.path().as_os_str(), "--cache".as_ref(), cache.as_os_str()];
        cutover(args).args(["--changed-from", "-"]).args(extra).stdin(list.to_vec()).run().expect_code(0).stdout_text()
    };
    scan(b"", &[]);
    // A same-size edit, a new file in a new directory, a removal: all listed (NUL-separated).
    tree.file("a/f1", "A NUMBER 1");
    tree.file("c/d/e/new", "brand new");
    tree.remove("b/f2");
    let out = scan(b"a/f1\0./c/d/e/\0b/f2\0", &["-0"]);
    assert!(out.contains("verified from data: 2 files"), "{out}");
    let fresh = work.path().join("fresh.manifest");
    scan_to(tree.path(), &fresh, &[]);
    let (cached, fresh) = (unstamped(read_manifest(&cache).unwrap()), unstamped(read_manifest(&fresh).unwrap()));
    assert_eq!(cached.entries, fresh.entries);
    // What the list does not name is trusted without a look: documented, and tested so.
    tree.file("c/d/f0", "C/D NUMBER 9");
    scan(b"a/f0\n", &[]);
    assert_eq!(unstamped(read_manifest(&cache).unwrap()).root_digest(), cached.root_digest());
    // A path that cannot be in a tree is refused, with the entry named.
    let args = ["scan".as_ref(), tree.path().as_os_str(), "--cache".as_ref(), cache.as_os_str()];
    let bad = cutover(args).args(["--changed-from", "-"]).stdin(b"a/../b\n".to_vec()).run().expect_code(2);
    assert!(bad.stderr.contains("entry 1"), "{}", bad.stderr);
}
