//! Findings of the adversarial review of issue 7, each a test that failed before its fix.
//!
//! Mount tests need root (as in CI) and say so when they cannot run; every mount is undone by a
//! guard, so a failing test leaves none behind.

#[allow(dead_code)]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::{Tree, cutover};

/// A bind mount of `from` at `at`, undone when dropped. `None` (after a note) where mounting
/// is not allowed.
struct Bind(PathBuf);

impl Bind {
    fn new(from: &Path, at: &Path) -> Option<Bind> {
        let done = Command::new("mount").arg("--bind").arg(from).arg(at).output().ok()?.status.success();
        if !done {
            eprintln!("note: cannot bind-mount here (not root?); not checked");
        }
        done.then(|| Bind(at.to_path_buf()))
    }
}

impl Drop for Bind {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn slash(path: &Path) -> std::ffi::OsString {
    let mut s = path.as_os_str().to_owned();
    s.push("/");
    s
}

/// `rsync -naHSc --specials --devices -i --delete A/ B/`: empty when the trees are equal.
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

fn common(trees: &[&Tree]) {
    for tree in trees {
        for i in 0..10 {
            tree.file(&format!("common/{i}"), format!("{i}"));
        }
    }
}

/// A directory of the target (not its root) bind-mounted inside the source: writing the target
/// there writes the source. Before the fix only mounts of the other tree's root or of a
/// directory above it were seen, so repair rewrote `d/f` and the source's `view/f` with it,
/// then verified "identical" against a source it had changed.
#[test]
fn a_target_subdirectory_bind_mounted_inside_the_source_is_refused() {
    let (source, target) = (Tree::new(), Tree::new());
    source.file("d/f", "new!").dir("view");
    target.file("d/f", "old!").file("view/f", "old!");
    common(&[&source, &target]);
    let Some(_mount) = Bind::new(&target.at("d"), &source.at("view")) else { return };
    let source_before = Tree::new();
    let copied = Command::new("cp").arg("-a").arg(source.path().join(".")).arg(source_before.path()).status().unwrap();
    assert!(copied.success());
    let run = cutover(["repair", "--delete"]).arg(source.path()).arg(target.path()).run();
    assert_eq!(run.code(), 2, "stdout: {}\nstderr: {}", run.stdout_text(), run.stderr);
    assert!(run.stderr.contains("overlap"), "{}", run.stderr);
    let changes = rsync_changes(source_before.path(), source.path());
    assert!(changes.is_empty(), "the source changed:\n{changes}");
}

/// The same for a single file of the target bind-mounted inside the source: a file patched in
/// place (it has one link, so no private copy) writes the source's `view` through the mount.
#[test]
fn a_target_file_bind_mounted_inside_the_source_is_refused() {
    let (source, target) = (Tree::new(), Tree::new());
    let data = support::noise(7, 3 << 20);
    let mut changed = data.clone();
    changed[10] ^= 1;
    source.file("f", &changed).file("view", "");
    target.file("f", &data);
    common(&[&source, &target]);
    let Some(_mount) = Bind::new(&target.at("f"), &source.at("view")) else { return };
    let run = cutover(["repair"]).arg(source.path()).arg(target.path()).run();
    assert_eq!(run.code(), 2, "stdout: {}\nstderr: {}", run.stdout_text(), run.stderr);
    assert!(run.stderr.contains("overlap"), "{}", run.stderr);
    assert!(std::fs::read(source.at("view")).unwrap() == data, "the source's view of the target file changed");
}

/// A source file rewritten in place between plan and apply, same size, outside the chunks the
/// plan patches, its mtime then put back (`touch -r`): apply reads only the listed chunks of the
/// source, so it writes them, finds the target's whole hash equal to the plan's `source.hash`
/// and exits 0, while `cmp` says the source and target differ. docs/plan.md promises exit 0
/// only when "the source it copied from is still what the plan saw".
#[test]
#[ignore = "not a small fix: apply would have to hash the whole source file of every patch (or the plan record the source's ctime) to see a change outside the listed chunks with the mtime restored"]
fn a_source_rewritten_outside_the_patched_chunks_with_its_mtime_restored_is_not_verified() {
    let (source, target) = (Tree::new(), Tree::new());
    let data = support::noise(9, 3 << 20);
    let mut planned = data.clone();
    planned[(2 << 20) + 5] ^= 1;
    source.file("f", &planned);
    target.file("f", &data);
    let plan = target.path().with_extension("plan.json");
    cutover(["plan", "-o"]).arg(&plan).arg(source.path()).arg(target.path()).run().expect_code(1);
    let mtime = std::fs::metadata(source.at("f")).unwrap().modified().unwrap();
    let mut rewritten = planned.clone();
    rewritten[10] ^= 1; // chunk 0: not in the plan
    std::fs::write(source.at("f"), &rewritten).unwrap();
    std::fs::File::options().write(true).open(source.at("f")).unwrap().set_modified(mtime).unwrap();
    let run = cutover(["apply"]).arg(&plan).run();
    let _ = std::fs::remove_file(&plan);
    let same = std::fs::read(source.at("f")).unwrap() == std::fs::read(target.at("f")).unwrap();
    assert!(same || run.code() != 0, "apply exited 0 but the trees differ: {}", run.stdout_text());
}
