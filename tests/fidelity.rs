//! Hard links and special files, kept as `rsync -aHS --specials --devices` keeps them: from
//! the scan through the manifest, the diff and the plan to the repaired target.
//!
//! The judges are outside tools: `rsync -naHS --specials --devices -i --delete` prints nothing
//! for trees it considers equal, `stat` gives inode numbers and link counts, and the
//! independent readers in tests/oracle read the manifests and plans from the docs alone.

#[allow(dead_code)]
mod support;

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use support::{Tree, Unprivileged, cutover, diff_json, running_as_root};

/// `rsync -naHS --specials --devices -i --delete SRC/ DST/` has nothing to do. The root's own
/// line (`./`) is left out: the root directory's own metadata is repaired by another part of
/// the tool, and every test here writes into the root.
#[track_caller]
fn assert_rsync_equal(source: &Path, target: &Path) {
    let slash = |p: &Path| {
        let mut s = p.as_os_str().to_owned();
        s.push("/");
        s
    };
    let out = Command::new("rsync")
        .args(["-naHS", "--specials", "--devices", "-i", "--delete"])
        .arg(slash(source))
        .arg(slash(target))
        .output()
        .expect("rsync must be installed to judge the result");
    let text = String::from_utf8_lossy(&out.stdout);
    let left: Vec<&str> = text.lines().filter(|line| !line.ends_with(" ./")).collect();
    assert!(
        out.status.success() && left.is_empty(),
        "rsync -aHS would still change:\n{}{}",
        left.join("\n"),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn meta(path: &Path) -> std::fs::Metadata {
    std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// (device, inode) of a name, never followed.
fn inode(path: &Path) -> (u64, u64) {
    let m = meta(path);
    (m.dev(), m.ino())
}

/// `stat -c %h`: the link count, as an outside tool reports it.
fn links(path: &Path) -> u64 {
    let out = Command::new("stat").args(["-c", "%h"]).arg(path).output().expect("stat");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or_else(|e| panic!("stat -c %h {}: {e}", path.display()))
}

fn hard_link(tree: &Tree, from: &str, to: &str) {
    std::fs::hard_link(tree.at(from), tree.at(to)).unwrap_or_else(|e| panic!("ln {from} {to}: {e}"));
}

fn mknod(tree: &Tree, rel: &str, kind: rustix::fs::FileType, major: u32, minor: u32) {
    let path = tree.at(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mode = rustix::fs::Mode::from_raw_mode(0o640);
    rustix::fs::mknodat(rustix::fs::CWD, &path, kind, mode, rustix::fs::makedev(major, minor))
        .unwrap_or_else(|e| panic!("mknod {}: {e}", path.display()));
}

/// Every entry of a tree with one mtime, symlinks included, so that only what a test changes
/// differs (rsync -a compares mtimes).
fn same_times(tree: &Tree) {
    let status = Command::new("find")
        .arg(tree.path())
        .args(["-mindepth", "1", "-exec", "touch", "-h", "-d", "@1000000000", "{}", "+"])
        .status()
        .expect("find");
    assert!(status.success());
}

fn repair(source: &Path, target: &Path, extra: &[&str]) -> support::Run {
    cutover(["repair", "--meta", "mode,mtime,owner"]).arg(source).arg(target).args(extra).run()
}

fn plan_ops(plan: &Path) -> Vec<Value> {
    let doc: Value = serde_json::from_slice(&std::fs::read(plan).unwrap()).unwrap();
    doc["operations"].as_array().unwrap().clone()
}

fn oracle(reader: &str, file: &Path) -> support::Run {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oracle").join(reader);
    support::run_with_timeout(
        {
            let mut c = Command::new("python3");
            c.arg(script).arg(file);
            c
        },
        Vec::new(),
        std::time::Duration::from_secs(120),
    )
}

// ---------------------------------------------------------------------------------------------
// The verdict: hard links are part of what "identical" means
// ---------------------------------------------------------------------------------------------

#[test]
fn a_hard_link_pair_is_not_identical_to_two_separate_copies() {
    let (linked, separate) = (Tree::new(), Tree::new());
    linked.file("a", "same bytes").file("d/x", "x");
    hard_link(&linked, "a", "d/b");
    separate.file("a", "same bytes").file("d/b", "same bytes").file("d/x", "x");
    same_times(&linked);
    same_times(&separate);

    let report = diff_json(linked.path(), separate.path(), &[]).expect_code(1).report();
    assert_eq!(report.kinds(), [("d/b".to_string(), "hardlink".to_string())]);
    assert_eq!(report.at("d/b")["hardlink"], json!({"source": "a", "target": null}));
    assert_eq!(report.summary("hardlink"), 1);
    assert!(report.0["compared"].as_array().unwrap().contains(&json!("hardlinks")));
    assert_ne!(report.0["source"]["hash"], report.0["target"]["hash"], "the root hash covers hard links");

    // The other way round, and in plain words.
    let run = cutover(["diff"]).arg(separate.path()).arg(linked.path()).run().expect_code(1);
    assert!(
        run.stdout_text().contains(
            "hardlink   d/b  (not a hard link to an earlier name in the source, a hard link to a in the target)"
        ),
        "{}",
        run.stdout_text()
    );

    // Through manifests too, and the independent reader agrees with cutover's root hashes.
    let work = Tree::new();
    for (tree, name) in [(&linked, "linked.m"), (&separate, "separate.m")] {
        cutover(["scan", "-o"]).arg(work.at(name)).arg(tree.path()).run().expect_code(0);
    }
    cutover(["diff"]).arg(work.at("linked.m")).arg(work.at("separate.m")).run().expect_code(1);
    cutover(["diff"]).arg(work.at("linked.m")).arg(linked.path()).run().expect_code(0);
    let read = oracle("manifest_reader.py", &work.at("linked.m"));
    assert_eq!(read.code(), 0, "{}", read.stderr);
    let text = read.stdout_text();
    assert!(text.lines().any(|l| l.ends_with("\td/b\tlink=a")), "{text}");
    let root = text.lines().last().unwrap().trim_start_matches("root ");
    assert_eq!(json!(root), report.0["source"]["hash"], "the reader from the docs computes the same root");
}

#[test]
fn a_name_linked_to_a_different_first_name_differs() {
    let (source, target) = (Tree::new(), Tree::new());
    source.file("a", "1").file("b", "1").file("c", "1");
    hard_link(&source, "a", "c2");
    target.file("a", "1").file("b", "1").file("c", "1");
    hard_link(&target, "b", "c2");
    same_times(&source);
    same_times(&target);
    let report = diff_json(source.path(), target.path(), &[]).expect_code(1).report();
    assert_eq!(report.at("c2")["hardlink"], json!({"source": "a", "target": "b"}));
    // A file linked to a name outside the tree is not linked as far as the tree goes.
    let outside = Tree::new();
    std::fs::hard_link(source.at("b"), outside.at("elsewhere")).unwrap();
    let report = diff_json(source.path(), target.path(), &[]).expect_code(1).report();
    assert_eq!(report.kinds().len(), 1, "{:#}", report.0);
}

#[test]
fn an_old_manifest_without_hard_links_is_read_and_compares_without_them() {
    let (tree, linked, work) = (Tree::new(), Tree::new(), Tree::new());
    tree.file("a", "same").file("b", "same");
    linked.file("a", "same");
    hard_link(&linked, "a", "b");
    same_times(&tree);
    same_times(&linked);
    let new = work.at("new.m");
    cutover(["scan", "-o"]).arg(&new).arg(tree.path()).run().expect_code(0);
    // What an earlier cutover wrote: a header without hard links, device numbers and stamps,
    // and records without stamps (the library writes exactly that when told they were not
    // recorded).
    let text = String::from_utf8_lossy(&std::fs::read(&new).unwrap()).into_owned();
    assert!(text.contains(r#""metadata":["mode","mtime","owner","hardlinks","rdev","stamp"]"#), "{text}");
    let mut manifest = cutover::manifest::read_manifest(&new).unwrap();
    (manifest.header.hard_links, manifest.header.rdev, manifest.header.stamps) = (false, false, false);
    let mut old = Vec::new();
    cutover::manifest::write_manifest(&manifest, &mut old).unwrap();
    assert!(String::from_utf8_lossy(&old).contains(r#""metadata":["mode","mtime","owner"]"#));
    std::fs::write(work.at("old.m"), &old).unwrap();
    // Readable; equal to a tree whose names are linked, since it cannot say otherwise.
    let report = diff_json(&work.at("old.m"), linked.path(), &[]).expect_code(0).report();
    assert_eq!(report.0["compared"], json!(["mode"]), "links were not compared");
    assert_eq!(oracle("manifest_reader.py", &work.at("old.m")).code(), 0);
    // The same tree scanned now has the hash it always had: no links, no devices.
    let report = diff_json(&work.at("old.m"), tree.path(), &[]).expect_code(0).report();
    assert_eq!(report.0["source"]["hash"], report.0["target"]["hash"]);
}

// ---------------------------------------------------------------------------------------------
// Repair makes the links rsync -H makes, and breaks the ones the source does not have
// ---------------------------------------------------------------------------------------------

#[test]
fn repair_recreates_hard_links_as_rsync_h_does() {
    let (source, target) = (Tree::new(), Tree::new());
    source.file("a", "shared content").file("d/e/x", "x").symlink("l1", "a").fifo("p1");
    hard_link(&source, "a", "d/b");
    hard_link(&source, "a", "d/e/c");
    hard_link(&source, "l1", "l2");
    hard_link(&source, "p1", "p2");
    source.file("big", support::noise(7, 3 << 20));
    hard_link(&source, "big", "d/big2");
    source.mode("a", 0o600);
    same_times(&source);
    // The target has separate copies of some names, and misses others.
    target.file("a", "shared content").file("d/b", "shared content").file("d/e/x", "x");
    target.file("big", support::noise(7, 3 << 20)).patch("big", 2 << 20, b"changed");
    same_times(&target);

    let run = repair(source.path(), target.path(), &[]).expect_code(0);
    assert!(run.stdout_text().contains("verified: the target is identical"), "{}", run.stdout_text());
    assert_rsync_equal(source.path(), target.path());
    for group in [&["a", "d/b", "d/e/c"][..], &["l1", "l2"], &["p1", "p2"], &["big", "d/big2"]] {
        for name in group {
            assert_eq!(inode(&target.at(name)), inode(&target.at(group[0])), "{name} is {}", group[0]);
            assert_eq!(links(&target.at(name)), group.len() as u64, "stat -c %h {name}");
        }
    }
    assert!(meta(&target.at("p2")).file_type().is_fifo());
    assert_eq!(meta(&target.at("d/e/c")).mode() & 0o7777, 0o600);
    repair(source.path(), target.path(), &[]).expect_code(0);
}

#[test]
fn repair_breaks_links_the_source_does_not_have() {
    let (source, target, outside) = (Tree::new(), Tree::new(), Tree::new());
    source.file("a", "same").file("b", "same").file("c", "other").symlink("l1", "a").symlink("l2", "a");
    target.file("a", "same").file("c", "stale");
    hard_link(&target, "a", "b");
    hard_link(&target, "a", "c2");
    source.file("c2", "same");
    target.symlink("l1", "a");
    hard_link(&target, "l1", "l2");
    // One name of the target's group is also linked from outside the target.
    std::fs::hard_link(target.at("a"), outside.at("keep")).unwrap();
    same_times(&source);
    same_times(&target);
    let report = diff_json(source.path(), target.path(), &[]).expect_code(1).report();
    assert_eq!(report.at("b")["kind"], "hardlink");

    repair(source.path(), target.path(), &[]).expect_code(0);
    assert_rsync_equal(source.path(), target.path());
    let names = ["a", "b", "c2"];
    for (i, x) in names.iter().enumerate() {
        for y in &names[i + 1..] {
            assert_ne!(inode(&target.at(x)), inode(&target.at(y)), "{x} and {y} each have their own inode");
        }
    }
    assert_ne!(inode(&target.at("l1")), inode(&target.at("l2")));
    assert_eq!(std::fs::read(target.at("b")).unwrap(), b"same");
    assert_eq!(std::fs::read(outside.at("keep")).unwrap(), b"same", "the name outside is untouched");
    assert_eq!(links(&outside.at("keep")), 2, "it still shares its inode with one target name");
    cutover(["diff"]).arg(source.path()).arg(target.path()).run().expect_code(0);
}

#[test]
fn a_first_name_whose_content_or_mode_changes_keeps_its_links() {
    let (source, target) = (Tree::new(), Tree::new());
    let big = support::noise(3, 5 << 20);
    source.file("g1", &big).file("m1", "m");
    hard_link(&source, "g1", "g2");
    hard_link(&source, "g1", "g3");
    hard_link(&source, "m1", "m2");
    source.mode("m1", 0o600);
    same_times(&source);
    // Patched in place (the plan links every name), a mode changed in place.
    target.file("g1", &big).patch("g1", 3 << 20, b"old bytes").file("g3", &big).file("m1", "m");
    hard_link(&target, "g1", "g2");
    hard_link(&target, "m1", "m2");
    same_times(&target);
    let work = Tree::new();
    let p = work.at("plan.json");
    cutover(["plan", "--meta", "mode,mtime,owner", "-o"]).arg(&p).arg(source.path()).arg(target.path()).run();
    let ops: Vec<(String, String)> = plan_ops(&p)
        .iter()
        .map(|op| (op["op"].as_str().unwrap().into(), op["path"].as_str().unwrap().into()))
        .collect();
    let pairs = |list: &[(&str, &str)]| list.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect::<Vec<_>>();
    // The links are made in the root, whose mtime the plan then puts back (`meta ""`).
    let expected = [("patch", "g1"), ("link", "g2"), ("link", "g3"), ("link", "m2"), ("meta", "m1"), ("meta", "")];
    assert_eq!(ops, pairs(&expected));
    let read = oracle("plan_reader.py", &p);
    assert_eq!(read.code(), 0, "{}{}", read.stdout_text(), read.stderr);
    cutover(["apply", "--format", "json"]).arg(&p).run().expect_code(0);
    assert_rsync_equal(source.path(), target.path());
    assert_eq!(links(&target.at("g1")), 3);
    assert_eq!(links(&target.at("m2")), 2);
    assert_eq!(meta(&target.at("m2")).mode() & 0o7777, 0o600);
}

#[test]
fn a_link_is_never_made_through_a_symlink_or_to_anything_outside_the_target() {
    let (source, target, outside) = (Tree::new(), Tree::new(), Tree::new());
    source.file("d/a", "inside");
    hard_link(&source, "d/a", "e");
    target.file("d/a", "inside");
    outside.file("a", "outside, never to be linked into the target");
    same_times(&source);
    same_times(&target);
    let work = Tree::new();
    let p = work.at("plan.json");
    cutover(["plan", "-o"]).arg(&p).arg(source.path()).arg(target.path()).run().expect_code(1);
    // After planning, the directory holding the first name becomes a symlink out of the target.
    std::fs::remove_dir_all(target.at("d")).unwrap();
    std::os::unix::fs::symlink(outside.path(), target.at("d")).unwrap();
    let run = cutover(["apply", "--format", "json"]).arg(&p).run().expect_code(2);
    let report = run.json();
    let refused = ["skipped", "failed"].iter().flat_map(|k| report[k].as_array().cloned().unwrap_or_default());
    assert!(refused.into_iter().any(|p| p["path"] == "e" && p["op"] == "link"), "{report:#}");
    assert!(std::fs::symlink_metadata(target.at("e")).is_err(), "nothing was linked");
    assert_eq!(links(&outside.at("a")), 1, "the outside file gained no name");
}

// ---------------------------------------------------------------------------------------------
// Special files
// ---------------------------------------------------------------------------------------------

fn socket(tree: &Tree, rel: &str) {
    let path = tree.at(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::os::unix::net::UnixListener::bind(&path).unwrap_or_else(|e| panic!("bind {}: {e}", path.display()));
}

#[test]
fn a_tree_holding_a_fifo_and_a_socket_repairs_to_exit_0() {
    let (source, target) = (Tree::new(), Tree::new());
    source.file("data", "d").fifo("pipe").fifo("sub/pipe2").fifo("was-a-dir").file("was-a-fifo", "file now");
    socket(&source, "sub/sock");
    source.mode("pipe", 0o600);
    target.file("data", "d").file("was-a-dir/inside", "x").fifo("was-a-fifo");
    same_times(&source);
    same_times(&target);
    let run = repair(source.path(), target.path(), &[]).expect_code(0);
    assert!(!run.stdout_text().contains("cannot repair"), "{}", run.stdout_text());
    assert_rsync_equal(source.path(), target.path());
    assert!(meta(&target.at("pipe")).file_type().is_fifo());
    assert_eq!(meta(&target.at("pipe")).mode() & 0o7777, 0o600);
    assert!(meta(&target.at("sub/sock")).file_type().is_socket(), "a socket node, as rsync --specials");
    assert!(meta(&target.at("was-a-dir")).file_type().is_fifo());
    assert_eq!(std::fs::read(target.at("was-a-fifo")).unwrap(), b"file now");
    // The nightly run after that has nothing to do.
    let run = repair(source.path(), target.path(), &[]).expect_code(0);
    assert!(run.stdout_text().contains("0 done"), "{}", run.stdout_text());
}

#[test]
fn devices_keep_their_numbers_when_run_as_root_and_are_unrepairable_otherwise() {
    if !running_as_root() {
        eprintln!("note: not root: device nodes cannot be made for the fixture; not checked");
        return;
    }
    use rustix::fs::FileType::{BlockDevice, CharacterDevice};
    let (source, target) = (Tree::new(), Tree::new());
    mknod(&source, "dev/null-ish", CharacterDevice, 1, 3);
    mknod(&source, "dev/loop-ish", BlockDevice, 7, 200);
    mknod(&source, "dev/moved", CharacterDevice, 4, 64);
    mknod(&target, "dev/moved", CharacterDevice, 4, 65);
    source.file("f", "f").fifo("pipe");
    same_times(&source);
    same_times(&target);
    let report = diff_json(source.path(), target.path(), &[]).expect_code(1).report();
    let moved = report.at("dev/moved");
    assert_eq!(moved["kind"], "content");
    assert_eq!(moved["type"], "chardevice");
    assert_eq!(moved["rdev"], json!({"source": "4:64", "target": "4:65"}));

    // Not root: devices cannot be made, and the plan says so; FIFOs and files are repaired.
    if let Some(nobody) = Unprivileged::new() {
        let copy = Tree::new();
        let status = Command::new("chown").arg("-R").arg("65534:65534").arg(copy.path()).status().unwrap();
        assert!(status.success());
        let run = nobody.cutover(["repair"]).arg(source.path()).arg(copy.path()).run().expect_code(2);
        let text = run.stdout_text();
        assert!(text.contains("only created when running as root"), "{text}");
        assert_eq!(std::fs::read(copy.at("f")).unwrap(), b"f", "the rest is repaired");
        assert!(meta(&copy.at("pipe")).file_type().is_fifo(), "a FIFO needs no root");
    }

    repair(source.path(), target.path(), &[]).expect_code(0);
    assert_rsync_equal(source.path(), target.path());
    let rdev = |rel: &str| {
        let r = meta(&target.at(rel)).rdev();
        (rustix::fs::major(r), rustix::fs::minor(r))
    };
    assert_eq!((rdev("dev/null-ish"), rdev("dev/loop-ish"), rdev("dev/moved")), ((1, 3), (7, 200), (4, 64)));
    assert!(meta(&target.at("dev/loop-ish")).file_type().is_block_device());
}

#[test]
fn manifests_and_plans_with_devices_and_links_read_back_and_pass_the_independent_readers() {
    let (source, target, work) = (Tree::new(), Tree::new(), Tree::new());
    source.file("a", "x").fifo("p");
    hard_link(&source, "a", "b");
    socket(&source, "s");
    if running_as_root() {
        mknod(&source, "c", rustix::fs::FileType::CharacterDevice, 1, 7);
    }
    same_times(&source);
    let m: PathBuf = work.at("source.m");
    cutover(["scan", "-o"]).arg(&m).arg(source.path()).run().expect_code(0);
    let read = oracle("manifest_reader.py", &m);
    assert_eq!(read.code(), 0, "{}", read.stderr);
    if running_as_root() {
        assert!(read.stdout_text().lines().any(|l| l.ends_with("\tc\trdev=1:7")), "{}", read.stdout_text());
    }
    cutover(["diff"]).arg(&m).arg(source.path()).run().expect_code(0);
    // Reports of hard-link and device differences, read by the report reader from the docs.
    let other = Tree::new();
    other.file("a", "x").file("b", "y").fifo("p");
    if running_as_root() {
        mknod(&other, "c", rustix::fs::FileType::CharacterDevice, 1, 8);
    }
    for (format, flag) in [("json", None), ("jsonl", Some("--jsonl"))] {
        let run = cutover(["diff", "--format", format]).arg(&m).arg(other.path()).run().expect_code(1);
        let file = work.at(&format!("report.{format}"));
        std::fs::write(&file, &run.stdout).unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oracle/report_reader.py");
        let mut command = Command::new("python3");
        command.arg(script).args(flag).arg(&file);
        let read = support::run_with_timeout(command, Vec::new(), std::time::Duration::from_secs(60));
        assert_eq!(read.code(), 0, "{}{}", read.stdout_text(), read.stderr);
    }
    let p = work.at("plan.json");
    cutover(["plan", "-o"]).arg(&p).arg(&m).arg(target.path()).run().expect_code(1);
    let read = oracle("plan_reader.py", &p);
    assert_eq!(read.code(), 0, "{}{}", read.stdout_text(), read.stderr);
    let names: Vec<String> = plan_ops(&p).iter().map(|op| op["op"].as_str().unwrap().to_string()).collect();
    assert!(names.contains(&"link".into()) && names.contains(&"mknod".into()), "{names:?}");
    cutover(["apply"]).arg(&p).arg("--source").arg(source.path()).run().expect_code(0);
    assert_rsync_equal(source.path(), target.path());
}

#[test]
fn a_hand_made_hard_link_to_a_later_or_linked_name_is_refused() {
    let (tree, work) = (Tree::new(), Tree::new());
    tree.file("a", "x");
    hard_link(&tree, "a", "b");
    hard_link(&tree, "a", "c");
    let m = work.at("m");
    cutover(["scan", "-o"]).arg(&m).arg(tree.path()).run().expect_code(0);
    let bytes = std::fs::read(&m).unwrap();
    // The last record is `c`; its last byte is the index of its first name, `a` (entry 1),
    // followed by the end record: tag, count (8 bytes) and checksum (32).
    let at = bytes.len() - 42;
    assert_eq!(bytes[at], 1, "c names entry 1, a");
    for (index, refusal) in [(3u8, "not an earlier one"), (2, "itself a hard link to an earlier name")] {
        let mut edited = bytes.clone();
        edited[at] = index;
        let body = edited.len() - 32;
        let sum = *blake3::hash(&edited[..body]).as_bytes();
        edited[body..].copy_from_slice(&sum);
        let file = work.at(&format!("bad-{index}"));
        std::fs::write(&file, &edited).unwrap();
        let run = cutover(["diff"]).arg(&file).arg(tree.path()).run().expect_code(2);
        assert!(run.stderr.contains(refusal), "{}", run.stderr);
        let read = oracle("manifest_reader.py", &file);
        assert_eq!(read.code(), 2, "the reader from the docs refuses it too: {}", read.stdout_text());
        assert!(read.stderr.contains(refusal), "{}", read.stderr);
    }
}
