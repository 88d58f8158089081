//! `diff A.manifest B.manifest` reads both files as streams: the report, the run record and the
//! refusals are those of a comparison of the trees themselves (which holds them in memory).

use std::path::{Path, PathBuf};

use crate::support::{Tree, cutover, noise};

/// `DIR` scanned to `WORK/NAME` with `args`.
fn manifest_of(dir: &Path, work: &Tree, name: &str, args: &[&str]) -> PathBuf {
    let path = work.at(name);
    cutover(["scan"]).args(args).arg("-o").arg(&path).arg(dir).run().expect_code(0);
    path
}

/// The JSON report and the run record's `checked` of `diff A B ARGS`.
fn diffed(a: &Path, b: &Path, args: &[&str], work: &Tree) -> (i32, String, serde_json::Value) {
    let record = work.at("record.json");
    let run = cutover(["diff", "--format", "json", "--report"]).arg(&record).args(args).arg(a).arg(b).run();
    let record: serde_json::Value = serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
    (run.code(), run.stdout_text(), record["checked"].clone())
}

/// The streamed comparison of two manifests against the comparison of the two trees.
fn same_as_trees(source: &Tree, target: &Tree, args: &[&str]) -> serde_json::Value {
    let work = Tree::new();
    let (a, b) = (manifest_of(source.path(), &work, "a.m", args), manifest_of(target.path(), &work, "b.m", args));
    let trees = diffed(source.path(), target.path(), args, &work);
    let streamed = diffed(&a, &b, args, &work);
    assert_eq!(streamed.0, trees.0, "exit code");
    assert_eq!(streamed.1, trees.1, "the report");
    assert_eq!(streamed.2, trees.2, "the run record's checked counts");
    serde_json::from_str(&streamed.1).unwrap()
}

#[test]
fn hard_links_to_names_far_back_in_the_manifest_are_found_again() {
    // Hundreds of entries between a first name and its later names: the reader finds the first
    // name again through its checkpoints, not a table of every path.
    let source = Tree::new();
    for i in 0..700 {
        source.file(&format!("a/f{i:03}"), format!("{i}"));
    }
    let target = source.copy();
    for (tree, links) in [
        (&source, [("a/f000", "z/l1"), ("a/f005", "z/l2"), ("a/f300", "zz")]),
        (&target, [("a/f001", "z/l1"), ("a/f300", "zz"), ("a/f650", "z/l3")]),
    ] {
        for (first, name) in links {
            std::fs::create_dir_all(tree.at(name).parent().unwrap()).unwrap();
            std::fs::hard_link(tree.at(first), tree.at(name)).unwrap();
        }
    }
    // z/l2 is a plain copy on the target side; z/l3 a link on the target side only.
    target.file("z/l2", "5");
    source.file("z/l3", "650");
    let report = same_as_trees(&source, &target, &[]);
    let kinds: Vec<(&str, &str)> = report["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["path"].as_str().unwrap(), d["kind"].as_str().unwrap()))
        .collect();
    assert!(kinds.contains(&("z/l2", "hardlink")), "{kinds:?}");
    assert!(kinds.contains(&("z/l3", "hardlink")), "{kinds:?}");
    assert!(kinds.iter().any(|(path, _)| *path == "z/l1"), "{kinds:?}");
    assert!(!kinds.iter().any(|(path, _)| *path == "zz"), "{kinds:?}");
}

#[test]
fn nested_differences_missing_extra_and_trouble_subtrees_stream_as_they_compare() {
    let source = Tree::new();
    source.file("keep/a", "a").file("keep/deep/b", noise(3, 5000)).file("gone/x/y", "y").file("gone/z", "z");
    source.file("meta/inner/f", "f").file("types/t", "file").symlink("link", "keep/a").file("same/s", "s");
    let target = source.copy();
    target.patch("keep/deep/b", 4100, b"!").remove("gone").file("new/p/q", "q").file("new/r", noise(4, 3000));
    target.mode("meta", 0o700).mode("meta/inner/f", 0o600).remove("types/t").file("types/t/inside", "now a dir");
    target.remove("link").symlink("link", "keep/deep/b");
    let report = same_as_trees(&source, &target, &["--chunk-size", "1K"]);
    assert_eq!(report["identical"], false);
}

#[test]
fn a_manifest_against_itself_is_identical_and_excluded_extra_directories_are_kept() {
    let source = Tree::new();
    source.file("a.txt", "a").file("sub/keep", "k").file("sub/y.tmp", "t");
    let target = source.copy();
    target.file("gone/deep/keep.tmp", "excluded").file("gone/x", "extra").file("gone/deep/y", "extra");
    target.file("new/n.tmp", "only excluded").file("plain/extra", "e");
    same_as_trees(&source, &target, &["--exclude", "*.tmp"]);
    let work = Tree::new();
    let a = manifest_of(source.path(), &work, "a.m", &[]);
    cutover(["diff"]).arg(&a).arg(&a).run().expect_code(0);
}
