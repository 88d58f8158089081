//! Findings of the adversarial review of issue 7, each a test that failed before its fix.
//!
//! Mount tests need root (as in CI) and say so when they cannot run; every mount is undone by a
//! guard, so a failing test leaves none behind.

#[allow(dead_code)]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::{Bind, Tree, cutover};

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

/// A source file patched into a 3-chunk target, after settling (`settle`: files written in
/// the last second before a scan get no stamp, so the plan then has none) and planning. The
/// plan file is returned.
fn planned_patch(settle: bool) -> (Tree, Tree, PathBuf, Vec<u8>) {
    let (source, target) = (Tree::new(), Tree::new());
    let data = support::noise(9, 3 << 20);
    let mut planned = data.clone();
    planned[(2 << 20) + 5] ^= 1;
    source.file("f", &planned);
    target.file("f", &data);
    if settle {
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    let plan = target.path().with_extension("plan.json");
    cutover(["plan", "-o"]).arg(&plan).arg(source.path()).arg(target.path()).run().expect_code(1);
    let text = std::fs::read_to_string(&plan).unwrap();
    assert_eq!(text.contains("\"source_stamp\""), settle, "a stamp in the plan only for a settled file: {text}");
    (source, target, plan, planned)
}

/// Rewrites chunk 0 of the source file (not in the plan), then puts its mtime back (`touch -r`).
fn rewrite_outside_the_plan(source: &Tree, planned: &[u8]) {
    let mtime = std::fs::metadata(source.at("f")).unwrap().modified().unwrap();
    let mut rewritten = planned.to_vec();
    rewritten[10] ^= 1;
    std::fs::write(source.at("f"), &rewritten).unwrap();
    std::fs::File::options().write(true).open(source.at("f")).unwrap().set_modified(mtime).unwrap();
}

/// A source file rewritten in place between plan and apply, same size, outside the chunks the
/// plan patches, its mtime then put back (`touch -r`): apply read only the listed chunks of the
/// source, wrote them, found the target's whole hash equal to the plan's `source.hash` and
/// exited 0, while `cmp` said source and target differ. Now a source whose inode or ctime is not
/// the plan's stamp (or that has none) is hashed whole before the first write.
#[test]
fn a_source_rewritten_outside_the_patched_chunks_with_its_mtime_restored_is_refused() {
    for settle in [false, true] {
        let (source, target, plan, planned) = planned_patch(settle);
        let before = std::fs::read(target.at("f")).unwrap();
        rewrite_outside_the_plan(&source, &planned);
        let run = cutover(["apply"]).arg(&plan).run();
        let _ = std::fs::remove_file(&plan);
        assert_eq!(run.code(), 2, "settle {settle}: {}{}", run.stdout_text(), run.stderr);
        assert!(run.stdout_text().contains("changed since the plan"), "{}", run.stdout_text());
        assert!(std::fs::read(target.at("f")).unwrap() == before, "the target was written from a changed source");
    }
}

/// The same edit between plan and bundle: the bundle would carry the planned chunks, which
/// still hash right, and the far host's apply would exit 0. The bundle is refused.
#[test]
fn a_bundle_of_a_source_rewritten_outside_the_patched_chunks_is_refused() {
    let (source, target, plan, planned) = planned_patch(true);
    rewrite_outside_the_plan(&source, &planned);
    let bundle = target.path().with_extension("bundle");
    let run = cutover(["bundle", "-o"]).arg(&bundle).arg(&plan).run();
    let _ = (std::fs::remove_file(&plan), std::fs::remove_file(&bundle));
    assert_eq!(run.code(), 2, "{}{}", run.stdout_text(), run.stderr);
    assert!(run.stderr.contains("changed since the plan"), "{}", run.stderr);
}

/// A source whose ctime moved without a change of content (`chmod` to the same mode) is hashed
/// whole, found unchanged, and patched as planned.
#[test]
fn a_source_touched_but_unchanged_is_hashed_whole_and_patched() {
    let (source, target, plan, planned) = planned_patch(true);
    let mode = std::fs::metadata(source.at("f")).unwrap().permissions();
    std::fs::set_permissions(source.at("f"), mode).unwrap();
    let run = cutover(["apply"]).arg(&plan).run();
    let _ = std::fs::remove_file(&plan);
    assert_eq!(run.code(), 0, "{}{}", run.stdout_text(), run.stderr);
    assert!(std::fs::read(target.at("f")).unwrap() == planned);
}
