//! Extended attributes: compared only when asked (`--meta xattr`), recorded in manifests only
//! with `scan --xattrs`, and repaired by `repair --meta ...,xattr`.

use crate::support::*;

fn set_xattr(path: &std::path::Path, name: &str, value: &[u8]) -> bool {
    rustix::fs::lsetxattr(path, name, value, rustix::fs::XattrFlags::empty()).is_ok()
}

fn xattr(path: &std::path::Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 4096];
    let len = rustix::fs::lgetxattr(path, name, &mut buf[..]).ok()?;
    buf.truncate(len);
    Some(buf)
}

/// Two trees with the same bytes, where the source has extended attributes on a file and a
/// directory; `None` when this filesystem does not take user xattrs.
fn fixture() -> Option<(Tree, Tree)> {
    let source = Tree::new();
    source.file("dir/file.txt", "same bytes");
    let target = source.copy();
    if !set_xattr(&source.at("dir/file.txt"), "user.checksum", b"abc") {
        eprintln!("note: no user xattrs on this filesystem; nothing to check");
        return None;
    }
    assert!(set_xattr(&source.at("dir"), "user.owner-team", b"storage"));
    Some((source, target))
}

#[test]
fn xattrs_are_compared_only_when_asked() {
    let Some((source, target)) = fixture() else { return };
    diff_json(source.path(), target.path(), &[]).expect_code(0);
    let report = diff_json(source.path(), target.path(), &["--meta", "xattr"]).expect_code(1).report();
    assert_eq!(
        report.kinds(),
        [("dir".to_string(), "metadata".to_string()), ("dir/file.txt".to_string(), "metadata".to_string())]
    );
    assert_eq!(report.at("dir/file.txt")["metadata"]["xattr"]["names"], serde_json::json!(["user.checksum"]));
    assert_eq!(report.at("dir")["fields"], serde_json::json!(["xattr"]));
}

#[test]
fn a_manifest_without_xattrs_says_they_were_not_compared() {
    let Some((source, target)) = fixture() else { return };
    let work = Tree::new();
    let plain = work.at("plain.manifest");
    let with = work.at("with.manifest");
    cutover(["scan", "-o"]).arg(&plain).arg(source.path()).run().expect_code(0);
    cutover(["scan", "--xattrs", "-o"]).arg(&with).arg(source.path()).run().expect_code(0);

    let run = cutover(["diff", "--meta", "xattr"]).arg(&plain).arg(target.path()).run().expect_code(0);
    assert!(run.stderr.contains("not compared"), "the user is told: {}", run.stderr);
    cutover(["diff", "--meta", "xattr"]).arg(&with).arg(target.path()).run().expect_code(1);
}

#[test]
fn repair_sets_and_removes_xattrs_exactly() {
    let Some((source, target)) = fixture() else { return };
    assert!(set_xattr(&target.at("dir/file.txt"), "user.stale", b"old"));
    cutover(["repair", "--meta", "mode,xattr"]).arg(source.path()).arg(target.path()).run().expect_code(0);
    assert_eq!(xattr(&target.at("dir/file.txt"), "user.checksum").as_deref(), Some(&b"abc"[..]));
    assert_eq!(xattr(&target.at("dir"), "user.owner-team").as_deref(), Some(&b"storage"[..]));
    assert_eq!(xattr(&target.at("dir/file.txt"), "user.stale"), None, "what the source lacks is removed");
    diff_json(source.path(), target.path(), &["--meta", "all"]).expect_code(0);
}
