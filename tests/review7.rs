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
