//! Findings of the adversarial review of session 4 (streamed diff, streamed plans, sharding,
//! source stamps), each a test that fails while the finding stands.

#[allow(dead_code)]
mod support;

use std::os::unix::fs::MetadataExt;

use cutover::shard::Shard;
use support::{Tree, cutover};

/// A file whose link count changes between the scans of two parts (a hard link made or removed
/// OUTSIDE the tree, as a backup tool that hard-links snapshots does; nothing in the tree, no
/// directory mtime, changes) is owned by its path in one part's view and by its inode in the
/// other's: it can fall in neither part. `merge` must not then write a whole manifest that
/// lacks it: compared with a target that lacks it too, that manifest says "identical".
#[test]
#[ignore = "known false identical of merge, not fixed yet: a file hard-linked from outside between the part scans is owned by neither part; needs each part to record per directory what every shard saw (format change)"]
fn a_file_whose_link_count_changed_between_part_scans_is_not_silently_dropped_by_merge() {
    let tree = Tree::new();
    let outside = Tree::new();
    let target = Tree::new();
    let mut chosen = None;
    for i in 0..64 {
        let name = format!("f{i}");
        tree.file(&name, format!("data {i}"));
        let ino = std::fs::metadata(tree.at(&name)).unwrap().ino();
        let by_path = Shard::owner_of_path(name.as_bytes(), 2);
        let by_inode = Shard::owner_of_inode(ino, 2);
        if by_path != by_inode {
            chosen = Some((name, by_path, by_inode));
            break;
        }
        target.file(&name, format!("data {i}"));
    }
    let (name, by_path, by_inode) = chosen.expect("some file's path and inode owners differ");
    let parts = Tree::new();
    let part = |i: u32| parts.at(&format!("p{i}.part"));
    // The inode's shard first, while the file has one link: it is its path's, not this shard's.
    cutover(["scan", "--shard", &format!("{by_inode}/2"), "-o"]).arg(part(by_inode)).arg(tree.path()).run();
    std::fs::hard_link(tree.at(&name), outside.at("backup")).unwrap();
    // The path's shard next, with two links: the file is now its inode's, not this shard's.
    cutover(["scan", "--shard", &format!("{by_path}/2"), "-o"]).arg(part(by_path)).arg(tree.path()).run();
    let merged = parts.at("merged.manifest");
    let merge = cutover(["merge", "-o"]).arg(&merged).arg(part(1)).arg(part(2)).run();
    if merge.code() == 0 {
        // Accepted: then it must hold the file, and must not call a target without it identical.
        let diff = cutover(["diff"]).arg(&merged).arg(target.path()).run();
        assert_eq!(
            diff.code(),
            1,
            "merge accepted parts that both lack {name:?} (it is in the tree), and the merged manifest \
             calls a target without it identical: {}",
            diff.stdout_text()
        );
    } else {
        assert_eq!(merge.code(), 2, "{}", merge.stderr);
    }
}

/// Parts scanned from two different trees found at the same path (the source, and an
/// `rsync -a`/`cp -a` copy of it mounted there on the host that ran the other shard: every
/// directory's mode, mtime and owner equal) are merged without a word, into a manifest that is
/// neither tree. Here the copy differs from the source only in a file the second part owns, so
/// the "source" manifest merged from them calls the copy identical to the source.
#[test]
#[ignore = "known false identical of merge, not fixed yet: parts are matched by root path and directory metadata only; needs directory identities (inode/file id) in parts (format change)"]
fn merge_refuses_parts_of_two_different_trees_at_the_same_path() {
    let base = Tree::new();
    let (x, y, data) = (base.at("x"), base.at("y"), base.at("data"));
    std::fs::create_dir(&x).unwrap();
    for i in 0..20 {
        std::fs::write(x.join(format!("f{i}")), format!("v{i}")).unwrap();
    }
    let cp = std::process::Command::new("cp").arg("-a").arg(&x).arg(&y).status().unwrap();
    assert!(cp.success());
    let changed = (0..20).map(|i| format!("f{i}")).find(|n| Shard::owner_of_path(n.as_bytes(), 2) == 2).unwrap();
    let y_file = y.join(&changed);
    let mtime = std::fs::metadata(&y_file).unwrap().modified().unwrap();
    std::fs::write(&y_file, "CORRUPT").unwrap();
    std::fs::File::options().write(true).open(&y_file).unwrap().set_modified(mtime).unwrap();
    let dir_mtime = std::fs::metadata(&x).unwrap().modified().unwrap();
    std::fs::File::open(&y).unwrap().set_modified(dir_mtime).unwrap();
    let truth = cutover(["diff", "-a"]).arg(&x).arg(&y).run();
    assert_eq!(truth.code(), 1, "the trees differ in {changed}");

    let (p1, p2, merged) = (base.at("p1"), base.at("p2"), base.at("merged"));
    std::fs::rename(&x, &data).unwrap();
    cutover(["scan", "--shard", "1/2", "-o"]).arg(&p1).arg(&data).run();
    std::fs::rename(&data, &x).unwrap();
    std::fs::rename(&y, &data).unwrap();
    cutover(["scan", "--shard", "2/2", "-o"]).arg(&p2).arg(&data).run();
    std::fs::rename(&data, &y).unwrap();
    let merge = cutover(["merge", "-o"]).arg(&merged).arg(&p1).arg(&p2).run();
    if merge.code() == 0 {
        let diff = cutover(["diff", "-a"]).arg(&merged).arg(&y).run();
        assert_eq!(diff.code(), 1, "parts of two trees merged into a source manifest that calls the copy identical");
    } else {
        assert_eq!(merge.code(), 2, "{}", merge.stderr);
    }
}

/// A manifest given to `diff` through a pipe (`diff <(ssh host cat src.manifest) dst.manifest`,
/// a FIFO) is read as a stream, but a hard link's first name is found again with `pread`, which
/// a pipe refuses: the diff fails with "Illegal seek (os error 29)", a message that names no
/// problem a user can act on, where the whole read of earlier versions compared it.
#[test]
fn a_manifest_with_hard_links_read_from_a_pipe_is_compared() {
    let tree = Tree::new();
    tree.file("a/f", "one").file("b/g", "two");
    std::fs::hard_link(tree.at("a/f"), tree.at("b/h")).unwrap();
    let work = Tree::new();
    let manifest = work.at("m");
    cutover(["scan", "-o"]).arg(&manifest).arg(tree.path()).run().expect_code(0);
    let fifo = work.at("pipe");
    let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    let bytes = std::fs::read(&manifest).unwrap();
    let writer = {
        let fifo = fifo.clone();
        std::thread::spawn(move || {
            // Ignore EPIPE: the reader may give up early.
            let _ = std::fs::write(&fifo, bytes);
        })
    };
    let diff = cutover(["diff"]).arg(&fifo).arg(&manifest).run();
    let _ = writer.join();
    assert_eq!(diff.code(), 0, "a manifest read from a pipe: {}", diff.stderr);
}

/// The shards of one plan run with different shard counts (`--shard 1/2` and `--shard 2/3`,
/// as a resubmitted array of another size, or `--shards` given wrong to one host) share the
/// run's lock as shards of one run; together they leave operations undone, yet every one exits
/// 0 and the one that finds itself last sets the directories' metadata as if the plan were done.
/// (Run at once, the same happens: both exit 0 with entries still missing.) Another count of
/// the same plan must be refused, as the shards of another plan are.
#[test]
fn shards_of_one_plan_with_different_counts_do_not_all_succeed_leaving_work_undone() {
    let source = Tree::new();
    for d in 0..4 {
        for i in 0..15 {
            source.file(&format!("d{d}/f{i}"), format!("{d}/{i}"));
        }
    }
    let target = Tree::new();
    let work = Tree::new();
    let plan = work.at("plan.json");
    cutover(["plan", "-o"]).arg(&plan).arg(source.path()).arg(target.path()).run();
    let codes: Vec<i32> = ["1/2", "2/3", "3/3"]
        .iter()
        .map(|shard| cutover(["apply", "--shard", shard]).arg(&plan).run().code())
        .collect();
    let diff = cutover(["diff", "-a"]).arg(source.path()).arg(target.path()).run();
    assert!(
        codes.iter().any(|&c| c != 0) || diff.code() == 0,
        "shards 1/2, 2/3, 3/3 of one plan all exited {codes:?} and the target still differs: {}",
        diff.stdout_text()
    );
}

/// A part given on standard input (`ssh host cat src.1.part | cutover plan --delete - tgt`)
/// was taken as a whole manifest, where the same part named as a file is refused: the plan
/// then removed every target file the other parts hold, and apply deleted them (exit 0).
#[test]
fn a_part_on_standard_input_is_refused_as_a_part_named_as_a_file_is() {
    let source = Tree::new();
    for i in 0..20 {
        source.file(&format!("d{i}/f"), format!("file {i}"));
    }
    let target = source.copy();
    let work = Tree::new();
    let part = work.at("src.1.part");
    cutover(["scan", "--shard", "1/2", "-o"]).arg(&part).arg(source.path()).run().expect_code(0);
    let bytes = std::fs::read(&part).unwrap();
    let diff = cutover(["diff", "-"]).arg(target.path()).stdin(bytes.clone()).run();
    assert_eq!(diff.code(), 2, "a single part on stdin gave a verdict: {}", diff.stdout_text());
    assert!(diff.stderr.contains("part 1/2 of a sharded scan"), "{}", diff.stderr);
    let plan = work.at("plan.json");
    let made = cutover(["plan", "--delete", "-o"]).arg(&plan).arg("-").arg(target.path()).stdin(bytes).run();
    assert_eq!(made.code(), 2, "a plan made from a single part on stdin: {}", made.stdout_text());
    assert!(!plan.exists());
}

/// `scan --cache PART --changed-from LIST` took every entry of an unlisted directory from the
/// cache as it is: from a part, that is only the files its shard owns. The new manifest, a whole
/// one by its header, lacked the rest, and a diff against the very tree it scanned called them
/// extra (a `plan --delete` removes them). A cache must be a scan of the same shard (or none).
#[test]
fn a_part_is_not_used_as_the_cache_of_a_scan_of_another_shard() {
    let tree = Tree::new();
    for i in 0..10 {
        for j in 0..4 {
            tree.file(&format!("d{i}/f{j}"), format!("{i}{j}"));
        }
    }
    let work = Tree::new();
    let part = work.at("p1");
    cutover(["scan", "--shard", "1/2", "-o"]).arg(&part).arg(tree.path()).run().expect_code(0);
    std::fs::write(work.at("list"), "d1/f1\n").unwrap();
    let manifest = work.at("new.manifest");
    cutover(["scan", "--cache"])
        .arg(&part)
        .arg("--changed-from")
        .arg(work.at("list"))
        .arg("-o")
        .arg(&manifest)
        .arg(tree.path())
        .run()
        .expect_code(0);
    let diff = cutover(["diff"]).arg(&manifest).arg(tree.path()).run();
    assert_eq!(diff.code(), 0, "a scan of a tree differs from the tree: {}", diff.stdout_text());
}
