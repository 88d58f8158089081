//! Repair that can be left alone: it refuses what looks like a mistake (swapped arguments, a
//! plan for another tree, deleting most of the target), holds back removals beyond
//! `--max-delete`, never calls a run done that is not (a source that changed, metadata the
//! target cannot store, a bundle of changed bytes), repairs the root directory itself, and
//! keeps sparse files sparse. rsync, stat and the bytes on disk are the judges.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{Run, Tree, cutover, noise};

/// What `rsync -naHS --specials --devices -i --delete SRC/ DST/` would change: nothing when
/// the trees are equal as `rsync -a` keeps them.
fn rsync_changes(source: &Path, target: &Path) -> String {
    let slash = |p: &Path| format!("{}/", p.display());
    let out = Command::new("rsync")
        .args(["-naHS", "--specials", "--devices", "-i", "--delete"])
        .arg(slash(source))
        .arg(slash(target))
        .output()
        .expect("run rsync");
    assert!(out.status.success(), "rsync: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

fn repair(source: &Path, target: &Path, extra: &[&str]) -> Run {
    cutover(["repair"]).args(extra).arg(source).arg(target).run()
}

fn plan(source: &Path, target: &Path, plan: &Path, extra: &[&str]) -> Run {
    cutover(["plan"]).arg(source).arg(target).arg("-o").arg(plan).args(extra).run()
}

fn apply(plan: &Path, source: &Path, target: &Path, extra: &[&str]) -> Run {
    cutover(["apply", "--format", "json"])
        .arg(plan)
        .arg("--source")
        .arg(source)
        .arg("--target")
        .arg(target)
        .args(extra)
        .run()
}

/// Blocks of 512 bytes allocated to a file (`stat -c %b`).
fn allocated(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().blocks()
}

/// A filesystem mounted for the life of the value and unmounted when it is dropped, so a
/// failing test leaves no mount behind; `None` where mounting is not possible (not root).
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(at: PathBuf, size: &str) -> Option<Mount> {
        let ok = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(&at).status();
        ok.ok()?.success().then_some(Mount(at))
    }

    /// An ext4 image with 128-byte inodes, which hold no time after 2038 (nor before 1901).
    fn small_inode_ext4(image: &Path, at: PathBuf) -> Option<Mount> {
        std::fs::File::create(image).ok()?.set_len(32 << 20).ok()?;
        let made = Command::new("mkfs.ext4").args(["-q", "-F", "-I", "128"]).arg(image).output().ok()?;
        if !made.status.success() {
            return None;
        }
        let ok = Command::new("mount").args(["-o", "loop"]).arg(image).arg(&at).status();
        ok.ok()?.success().then_some(Mount(at))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

// ---------------------------------------------------------------------------------------------
// Delete guards
// ---------------------------------------------------------------------------------------------

#[test]
fn swapped_arguments_are_refused_and_nothing_is_deleted() {
    let (source, old_copy) = (Tree::new(), Tree::new());
    for i in 0..30 {
        source.file(&format!("data/f{i}"), format!("file {i}"));
    }
    old_copy.file("data/f0", "file 0").file("notes", "old");
    // The user meant `repair SOURCE OLD-COPY --delete`.
    let run = repair(old_copy.path(), source.path(), &["--delete"]).expect_code(2);
    assert!(run.stderr.contains("swapped"), "{}", run.stderr);
    assert_eq!(names(&source.at("data")).len(), 30, "nothing of the real source is deleted");
    // The plan is still shown whole, with the warning.
    let shown = repair(old_copy.path(), source.path(), &["--delete", "--dry-run"]).expect_code(1);
    assert_eq!(shown.stdout_text().lines().filter(|l| l.starts_with("remove")).count(), 29);
    assert!(shown.stderr.contains("swapped"), "{}", shown.stderr);
}

#[test]
fn a_plan_deleting_more_than_half_of_the_target_is_refused_unless_forced() {
    let (source, target) = (Tree::new(), Tree::new());
    for i in 0..10 {
        target.file(&format!("f{i}"), format!("{i}"));
    }
    for i in 0..4 {
        source.file(&format!("f{i}"), format!("{i}"));
    }
    let run = repair(source.path(), target.path(), &["--delete"]).expect_code(2);
    assert!(run.stderr.contains("more than half"), "{}", run.stderr);
    assert_eq!(names(target.path()).len(), 10, "nothing deleted");
    repair(source.path(), target.path(), &["--delete", "--force"]).expect_code(0);
    assert_eq!(rsync_changes(source.path(), target.path()), "");
}

#[test]
fn max_delete_does_the_rest_holds_back_the_removals_beyond_and_exits_25() {
    let (source, target) = (Tree::new(), Tree::new());
    for i in 0..10 {
        source.file(&format!("keep{i}"), "k");
        target.file(&format!("keep{i}"), "k").file(&format!("extra{i}"), "x");
    }
    source.file("new", "n").file("changed", "new bytes");
    target.file("changed", "old bytes");
    let work = Tree::new();
    let p = work.at("plan.json");
    // The plan shows all ten removals.
    let shown = plan(source.path(), target.path(), &p, &["--delete", "--max-delete", "3", "--dry-run"]).expect_code(1);
    assert_eq!(shown.stdout_text().lines().filter(|l| l.starts_with("remove")).count(), 10);
    let run = repair(source.path(), target.path(), &["--delete", "--max-delete", "3", "--format", "json"]);
    let report: serde_json::Value = serde_json::from_str(run.stdout_text().lines().next().unwrap()).unwrap();
    let held = report["held_deletes"].as_array().unwrap();
    assert_eq!(held.len(), 7, "{}", run.stdout_text());
    run.expect_code(25);
    let extras = names(target.path()).into_iter().filter(|n| n.starts_with("extra")).count();
    assert_eq!(extras, 7, "three removed, seven held back");
    assert_eq!(std::fs::read(target.at("new")).unwrap(), b"n", "everything else was done");
    assert_eq!(std::fs::read(target.at("changed")).unwrap(), b"new bytes");
    // Human form lists what was held.
    let human = repair(source.path(), target.path(), &["--delete", "--max-delete", "3"]).expect_code(25);
    assert_eq!(human.stdout_text().lines().filter(|l| l.starts_with("held")).count(), 4, "{}", human.stdout_text());
}

// ---------------------------------------------------------------------------------------------
// Honest verdicts
// ---------------------------------------------------------------------------------------------

#[test]
fn a_source_file_that_grew_since_the_plan_is_not_copied_as_its_old_prefix() {
    let (source, target, work) = (Tree::new(), Tree::new(), Tree::new());
    source.file("log", noise(1, 10_000));
    let p = work.at("plan.json");
    plan(source.path(), target.path(), &p, &[]).expect_code(1);
    std::fs::OpenOptions::new().append(true).open(source.at("log")).unwrap().set_len(12_000).unwrap();
    let run = apply(&p, source.path(), target.path(), &[]).expect_code(2);
    assert!(run.stdout_text().contains("changed since the plan"), "{}", run.stdout_text());
    assert!(!target.at("log").exists(), "no prefix of the grown file is left");
}

#[test]
fn a_patch_from_a_source_that_grew_since_the_plan_is_not_called_done() {
    let (source, target, work) = (Tree::new(), Tree::new(), Tree::new());
    let big = noise(2, 40 * 1024);
    let mut old = big.clone();
    old[5000] ^= 1;
    source.file("big", &big);
    target.file("big", &old);
    let p = work.at("plan.json");
    plan(source.path(), target.path(), &p, &["--chunk-size", "4K"]).expect_code(1);
    std::fs::OpenOptions::new().append(true).open(source.at("big")).unwrap().set_len(48 * 1024).unwrap();
    let run = apply(&p, source.path(), target.path(), &[]).expect_code(2);
    assert!(run.stdout_text().contains("changed since the plan"), "{}", run.stdout_text());
    assert_eq!(std::fs::read(target.at("big")).unwrap(), old, "nothing was written");
}

#[test]
fn a_plan_is_refused_on_another_target_unless_forced() {
    let (source, target, other, work) = (Tree::new(), Tree::new(), Tree::new(), Tree::new());
    source.file("a", "a").file("b", "b");
    target.file("a", "a");
    let p = work.at("plan.json");
    plan(source.path(), target.path(), &p, &[]).expect_code(1);
    let run = apply(&p, source.path(), other.path(), &[]).expect_code(2);
    assert!(run.stderr.contains("another tree"), "{}", run.stderr);
    assert!(names(other.path()).is_empty(), "nothing written to the other tree");
    // Forced, its operations succeed there, though `a` is still missing: why it is refused.
    apply(&p, source.path(), other.path(), &["--force"]).expect_code(0);
    assert!(!other.at("a").exists());
    apply(&p, source.path(), target.path(), &[]).expect_code(0);
    assert_eq!(rsync_changes(source.path(), target.path()), "");
    // A plan made from manifests names no directory: it applies anywhere, as before.
    let (s, t, p2) = (work.at("s.manifest"), work.at("t.manifest"), work.at("plan2.json"));
    cutover(["scan"]).arg(source.path()).arg("-o").arg(&s).run().expect_code(0);
    cutover(["scan"]).arg(other.path()).arg("-o").arg(&t).run().expect_code(0);
    plan(&s, &t, &p2, &[]).expect_code(1);
    assert!(!std::fs::read_to_string(&p2).unwrap().contains("identity"));
    apply(&p2, source.path(), other.path(), &[]).expect_code(0);
}

#[test]
fn an_mtime_the_target_filesystem_cannot_store_is_unrepairable_not_done() {
    let (source, work) = (Tree::new(), Tree::new());
    std::fs::create_dir(work.at("mnt")).unwrap();
    let Some(_mount) = Mount::small_inode_ext4(&work.at("ext4.img"), work.at("mnt")) else {
        eprintln!("note: cannot make and mount an ext4 image here (not root?); not checked");
        return;
    };
    let target = work.at("mnt/t");
    std::fs::create_dir(&target).unwrap();
    source.file("far", "from the future").file("near", "now");
    let status = Command::new("touch").args(["-d", "9999-01-01T00:00:00Z"]).arg(source.at("far")).status().unwrap();
    assert!(status.success());
    for _ in 0..2 {
        let run = repair(source.path(), &target, &["--meta", "mode,mtime"]).expect_code(2);
        let out = run.stdout_text();
        assert!(out.contains("far") && out.contains("cannot store"), "{out}");
        assert!(!out.contains("near"), "{out}");
    }
    assert_eq!(std::fs::read(target.join("far")).unwrap(), b"from the future", "the bytes are there");
}

#[test]
fn a_bundle_of_bytes_that_changed_since_the_plan_is_not_written() {
    let (source, target, work) = (Tree::new(), Tree::new(), Tree::new());
    source.file("a", "first").file("b", noise(3, 12 * 1024)).file("c", "last");
    let (s, t, p) = (work.at("s.manifest"), work.at("t.manifest"), work.at("plan.json"));
    cutover(["scan", "--chunk-size", "4K"]).arg(source.path()).arg("-o").arg(&s).run().expect_code(0);
    cutover(["scan", "--chunk-size", "4K"]).arg(target.path()).arg("-o").arg(&t).run().expect_code(0);
    plan(&s, &t, &p, &[]).expect_code(1);
    // The last chunk of b changes (same size): its first two chunks still match the plan.
    let mut b = std::fs::read(source.at("b")).unwrap();
    b[11_000] ^= 0xff;
    std::fs::write(source.at("b"), &b).unwrap();
    let bundle = work.at("bundle");
    let run = cutover(["bundle"]).arg(&p).arg("--source").arg(source.path()).arg("-o").arg(&bundle).run();
    run.expect_code(2);
    assert!(!bundle.exists(), "no bundle file is left");
    let streamed = cutover(["bundle"]).arg(&p).arg("--source").arg(source.path()).args(["-o", "-"]).run();
    assert!(streamed.stderr.contains("changed since the plan"), "{}", streamed.stderr);
    let streamed = streamed.expect_code(2);
    let plan_json: serde_json::Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    let b_op = plan_json["operations"].as_array().unwrap().iter().position(|op| op["path"] == "b").unwrap();
    let text = String::from_utf8_lossy(&streamed.stdout);
    assert!(!text.contains(&format!("{{\"op\":{b_op},")), "no record of b was streamed");
}

// ---------------------------------------------------------------------------------------------
// The root directory
// ---------------------------------------------------------------------------------------------

#[test]
fn the_root_directory_is_compared_and_repaired_like_any_directory() {
    let (source, target) = (Tree::new(), Tree::new());
    source.file("f", "same").mode("", 0o750).mtime("", 978_307_200, 0);
    target.file("f", "same").mtime("", 1_000_000_000, 0);
    assert!(rsync_changes(source.path(), target.path()).contains(".d..t"), "rsync sees the root differ");
    let diff =
        cutover(["diff", "--meta", "mode,mtime", "--format", "json"]).arg(source.path()).arg(target.path()).run();
    let diff = diff.expect_code(1).json();
    assert_eq!(diff["differences"][0]["path"], "", "{diff}");
    assert_eq!(diff["differences"][0]["fields"], serde_json::json!(["mode", "mtime"]), "{diff}");
    repair(source.path(), target.path(), &["--meta", "mode,mtime"]).expect_code(0);
    assert_eq!(rsync_changes(source.path(), target.path()), "");
    assert_eq!(std::fs::metadata(target.path()).unwrap().mode() & 0o7777, 0o750);
    // Adding a file to the root changes its mtime; the repair puts the source's back.
    source.file("new", "n").mtime("", 978_307_200, 0);
    repair(source.path(), target.path(), &["--meta", "mode,mtime"]).expect_code(0);
    assert_eq!(rsync_changes(source.path(), target.path()), "");
}

#[test]
fn the_root_directory_s_extended_attributes_are_repaired_with_archive_and_meta_xattr() {
    let (source, target) = (Tree::new(), Tree::new());
    source.file("f", "same");
    target.file("f", "same");
    let set = |path: &Path, value: &[u8]| {
        rustix::fs::lsetxattr(path, "user.team", value, rustix::fs::XattrFlags::empty()).is_ok()
    };
    if !set(source.path(), b"storage") {
        eprintln!("note: no user xattrs on this filesystem; nothing to check");
        return;
    }
    set(target.path(), b"other");
    repair(source.path(), target.path(), &["-a", "--meta", "xattr"]).expect_code(0);
    let mut value = [0u8; 64];
    let n = rustix::fs::lgetxattr(target.path(), "user.team", &mut value[..]).unwrap();
    assert_eq!(&value[..n], b"storage");
    let out = Command::new("rsync")
        .args(["-naHSAX", "--specials", "--devices", "-i", "--delete"])
        .arg(format!("{}/", source.path().display()))
        .arg(format!("{}/", target.path().display()))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "", "rsync -AX sees the root equal");
}

// ---------------------------------------------------------------------------------------------
// Sparse files
// ---------------------------------------------------------------------------------------------

/// A `size`-byte file that is a hole except for `data` at `offset`.
fn sparse_file(path: &Path, size: u64, offset: u64, data: &[u8]) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::create(path).unwrap();
    file.set_len(size).unwrap();
    file.write_all_at(data, offset).unwrap();
}

#[test]
fn copies_and_patches_keep_holes() {
    const MIB: u64 = 1 << 20;
    let (source, target) = (Tree::new(), Tree::new());
    sparse_file(&source.at("copied"), 64 * MIB, 10 * MIB, &noise(4, MIB as usize));
    sparse_file(&source.at("patched"), 64 * MIB, 10 * MIB, &noise(5, MIB as usize));
    sparse_file(&target.at("patched"), 64 * MIB, 30 * MIB, &noise(6, MIB as usize));
    // Grown: its new tail is a hole in the source, ending in a little data.
    sparse_file(&source.at("grown"), 64 * MIB, 0, &noise(7, MIB as usize));
    std::os::unix::fs::FileExt::write_all_at(
        &std::fs::OpenOptions::new().write(true).open(source.at("grown")).unwrap(),
        b"tail",
        63 * MIB,
    )
    .unwrap();
    sparse_file(&target.at("grown"), MIB, 0, &noise(7, MIB as usize));
    // The plan's bytes to copy count data: 1 MiB copied, 1 MiB patched (the other changed
    // chunk is a hole in the source), the grown file's 4 KiB tail block.
    let work = Tree::new();
    plan(source.path(), target.path(), &work.at("plan.json"), &[]).expect_code(1);
    let planned: serde_json::Value = serde_json::from_slice(&std::fs::read(work.at("plan.json")).unwrap()).unwrap();
    assert_eq!(planned["totals"]["copy_bytes"], 2 * MIB + 4096, "{}", planned["totals"]);
    repair(source.path(), target.path(), &[]).expect_code(0);
    for name in ["copied", "patched", "grown"] {
        let (s, t) = (allocated(&source.at(name)), allocated(&target.at(name)));
        // 1 MiB of data is 2048 blocks; allow a few for filesystem metadata.
        assert!(t <= s + 256, "{name}: {t} blocks in the target, {s} in the source");
        assert_eq!(std::fs::read(source.at(name)).unwrap(), std::fs::read(target.at(name)).unwrap());
    }
    assert_eq!(rsync_changes(source.path(), target.path()), "");
}

#[test]
fn a_sparse_image_larger_than_the_target_filesystem_fits_as_it_does_with_rsync() {
    const MIB: u64 = 1 << 20;
    let (source, work) = (Tree::new(), Tree::new());
    std::fs::create_dir(work.at("small")).unwrap();
    let Some(_mount) = Mount::tmpfs(work.at("small"), "300M") else {
        eprintln!("note: cannot mount a tmpfs here (not root?); not checked");
        return;
    };
    sparse_file(&source.at("disk.img"), 1024 * MIB, 0, &noise(8, 2 * MIB as usize));
    sparse_file(&source.at("disk2.img"), 1024 * MIB, 700 * MIB, &noise(9, 2 * MIB as usize));
    let target = work.at("small");
    repair(source.path(), &target, &[]).expect_code(0);
    assert_eq!(rsync_changes(source.path(), &target), "");
    for name in ["disk.img", "disk2.img"] {
        assert!(allocated(&target.join(name)) <= allocated(&source.at(name)) + 256);
    }
}

// ---------------------------------------------------------------------------------------------
// -a/--archive
// ---------------------------------------------------------------------------------------------

#[test]
fn archive_compares_and_repairs_what_rsync_a_keeps_and_identical_says_what_was_compared() {
    let (source, target) = (Tree::new(), Tree::new());
    source.file("f", "same").symlink("l", "f").dir("d").mtime("f", 978_307_200, 0).mtime("d", 978_307_200, 0);
    target.file("f", "same").symlink("l", "f").dir("d");
    let as_root = crate::support::running_as_root();
    if as_root {
        std::os::unix::fs::lchown(target.at("f"), Some(1234), Some(1234)).unwrap();
    }
    for tree in [&source, &target] {
        tree.mtime("", 978_307_200, 0);
    }
    assert_ne!(rsync_changes(source.path(), target.path()), "", "rsync -a sees differences");
    // The default compares modes only, and says so on the line that says identical.
    let plain = cutover(["diff"]).arg(source.path()).arg(target.path()).run().expect_code(0);
    let line = plain.stdout_text();
    assert!(line.starts_with("identical") && line.contains("not compared: mtime, owner, xattr"), "{line}");
    let json = cutover(["diff", "--format", "json"]).arg(source.path()).arg(target.path()).run().expect_code(0).json();
    assert_eq!(json["not_compared"], serde_json::json!(["mtime", "owner", "xattr"]));
    // -a compares what rsync -a keeps.
    let archive = cutover(["diff", "-a", "--format", "json"]).arg(source.path()).arg(target.path()).run();
    let archive = archive.expect_code(1).json();
    let compared: Vec<&str> = archive["compared"].as_array().unwrap().iter().filter_map(|v| v.as_str()).collect();
    let meta: Vec<&str> = compared.into_iter().filter(|f| ["mode", "mtime", "owner", "xattr"].contains(f)).collect();
    assert_eq!(meta, if as_root { vec!["mode", "mtime", "owner"] } else { vec!["mode", "mtime"] });
    repair(source.path(), target.path(), &["-a"]).expect_code(0);
    assert_eq!(rsync_changes(source.path(), target.path()), "");
    let done = cutover(["diff", "-a"]).arg(source.path()).arg(target.path()).run().expect_code(0);
    assert!(done.stdout_text().contains("not compared: xattr") || !as_root, "{}", done.stdout_text());
}
