//! Sharded runs (docs/scale-out.md): the parts of a sharded scan, run by GNU parallel or under
//! a scheduler's variables, merge into exactly the manifest of one scan; parts that do not make
//! a whole are refused; the shards of one plan, run at once, leave the target as one apply.

#[allow(dead_code)]
mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::{Run, Tree, cutover, noise};

/// A tree with what a sharded scan must get right: one directory of many files (spread over
/// every shard), nested and empty directories, hard links within and across directories, a
/// symlink, a FIFO, a file of several chunks and an excluded name.
fn sample_tree() -> Tree {
    let tree = Tree::new();
    for i in 0..400 {
        tree.file(&format!("big/file-{i:04}"), format!("file {i}\n"));
    }
    for i in 0..30 {
        tree.file(&format!("nested/{}/deep/{i}", i % 7), noise(i, 100 + i as usize * 37));
    }
    tree.dir("empty/inner").file("multi-chunk.bin", noise(99, (3 << 20) + 5));
    tree.file("skip.tmp", "excluded").symlink("link", "big/file-0001").fifo("fifo");
    for (first, other) in
        [("big/file-0002", "linked/a"), ("big/file-0003", "big/zz-link"), ("nested/1/deep/1", "linked/b")]
    {
        std::fs::create_dir_all(tree.at(other).parent().unwrap()).unwrap();
        std::fs::hard_link(tree.at(first), tree.at(other)).unwrap();
    }
    tree.mode("nested/3", 0o750);
    // Files changed less than a second before a scan carry no stamp; let every scan see them
    // as settled, so that the single scan and the parts record the same stamps.
    std::thread::sleep(Duration::from_millis(1100));
    tree
}

fn shell(script: &str, env: &[(&str, &str)]) -> Run {
    let mut command = Command::new("bash");
    command.arg("-c").arg(script).env("CUTOVER", env!("CARGO_BIN_EXE_cutover"));
    for (name, value) in env {
        command.env(name, value);
    }
    support::run_with_timeout(command, Vec::new(), Duration::from_secs(120))
}

/// The bytes of a manifest after its header line and before its checksum: the entries and the
/// count, which must not depend on how the tree was scanned.
fn entry_bytes(manifest: &Path) -> Vec<u8> {
    let bytes = std::fs::read(manifest).unwrap();
    let header_end = bytes.iter().enumerate().filter(|(_, b)| **b == b'\n').nth(1).unwrap().0 + 1;
    bytes[header_end..bytes.len() - 32].to_vec()
}

/// What the independent reader (tests/oracle, written from docs/manifest.md) sees in a file.
fn oracle(manifest: &Path) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oracle/manifest_reader.py");
    let mut command = Command::new("python3");
    command.arg(script).arg(manifest);
    let run = support::run_with_timeout(command, Vec::new(), Duration::from_secs(120));
    assert_eq!(run.code(), 0, "the oracle refused {}: {}", manifest.display(), run.stderr);
    run.stdout_text()
}

fn root_line(run: &Run) -> String {
    run.stdout_text().lines().next().unwrap_or_default().split_whitespace().next().unwrap_or_default().to_string()
}

/// Scans `tree` whole, merges `parts`, and checks the merge is that scan.
fn assert_merge_is_single_scan(tree: &Tree, parts: &[PathBuf], work: &Path) {
    let full = work.join("full.m");
    let single = cutover(["scan", "--exclude", "*.tmp"]).arg(tree.path()).arg("-o").arg(&full).run().expect_code(0);
    let merged = work.join("merged.m");
    let merge = cutover(["merge"]).args(parts).arg("-o").arg(&merged).run().expect_code(0);
    assert_eq!(root_line(&merge), root_line(&single), "root hash of the merge vs a single scan");
    assert!(entry_bytes(&merged) == entry_bytes(&full), "the merged entries are not byte for byte the single scan's");
    assert_eq!(oracle(&merged), oracle(&full));
    // Every shard got a share of the big directory.
    for part in parts {
        let listing = oracle(part);
        assert!(listing.lines().filter(|l| l.contains("\tbig/file-")).count() > 40, "{}: unbalanced", part.display());
    }
    cutover(["diff"]).arg(&full).arg(&merged).run().expect_code(0);
}

#[test]
fn gnu_parallel_with_four_workers_scans_parts_that_merge_into_the_single_scan() {
    let tree = sample_tree();
    let work = tempfile::tempdir().unwrap();
    let script =
        r#"parallel -j4 "$CUTOVER" scan "$TREE" --exclude '*.tmp' --shard {}/4 -o "$WORK/part.{}" ::: 1 2 3 4"#;
    let run = shell(script, &[("TREE", tree.path().to_str().unwrap()), ("WORK", work.path().to_str().unwrap())]);
    assert_eq!(run.code(), 0, "parallel: {}\n{}", run.stdout_text(), run.stderr);
    let parts: Vec<PathBuf> = (1..=4).map(|i| work.path().join(format!("part.{i}"))).collect();
    assert_merge_is_single_scan(&tree, &parts, work.path());

    // The same with the shard taken from PARALLEL_SEQ.
    let auto = tempfile::tempdir().unwrap();
    let script = r#"parallel -j4 "$CUTOVER" scan "$TREE" --exclude '*.tmp' --shard auto --shards 4 -o "$WORK/auto.{#}" ::: a b c d"#;
    let run = shell(script, &[("TREE", tree.path().to_str().unwrap()), ("WORK", auto.path().to_str().unwrap())]);
    assert_eq!(run.code(), 0, "parallel: {}\n{}", run.stdout_text(), run.stderr);
    let parts: Vec<PathBuf> = (1..=4).map(|i| auto.path().join(format!("auto.{i}"))).collect();
    assert_merge_is_single_scan(&tree, &parts, auto.path());

    // diff and plan take the parts themselves: a list, or a pattern cutover expands.
    let full = auto.path().join("full.m");
    cutover(["diff"]).args(&parts).arg(&full).run().expect_code(0);
    let pattern = auto.path().join("auto.*");
    cutover(["diff"]).arg(&full).arg(&pattern).run().expect_code(0);
    let plan = cutover(["plan"]).arg(&pattern).arg(&full).run().expect_code(0);
    assert!(plan.stdout_text().contains("0 operations"), "{}", plan.stdout_text());
}

#[test]
fn slurm_and_kubernetes_variables_set_by_hand_number_the_shards() {
    let tree = sample_tree();
    let work = tempfile::tempdir().unwrap();
    let scan = |env: &[(&str, &str)], out: &Path, shards: Option<&str>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_cutover"));
        command.args(["scan", "--exclude", "*.tmp", "--shard", "auto"]).arg(tree.path()).arg("-o").arg(out);
        command.args(shards.map(|n| ["--shards", n]).iter().flatten());
        for name in ["JOB_COMPLETION_INDEX", "PARALLEL_SEQ", "SLURM_ARRAY_TASK_ID"] {
            command.env_remove(name);
        }
        command.envs(env.iter().copied());
        support::run_with_timeout(command, Vec::new(), Duration::from_secs(120))
    };
    // sbatch --array=1-7:2: tasks 1, 3, 5 and 7.
    let mut parts = Vec::new();
    for id in ["1", "3", "5", "7"] {
        let out = work.path().join(format!("slurm.{id}"));
        let env = [
            ("SLURM_ARRAY_TASK_ID", id),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
            ("SLURM_ARRAY_TASK_MIN", "1"),
            ("SLURM_ARRAY_TASK_MAX", "7"),
            ("SLURM_ARRAY_TASK_STEP", "2"),
        ];
        scan(&env, &out, None).expect_code(0);
        parts.push(out);
    }
    assert_merge_is_single_scan(&tree, &parts, work.path());
    // A task id that is not one of the array's.
    let env = [
        ("SLURM_ARRAY_TASK_ID", "4"),
        ("SLURM_ARRAY_TASK_COUNT", "4"),
        ("SLURM_ARRAY_TASK_MIN", "1"),
        ("SLURM_ARRAY_TASK_MAX", "7"),
    ];
    let refused = scan(&env, &work.path().join("x"), None).expect_code(2);
    assert!(refused.stderr.contains("--array=MIN-MAX[:STEP]"), "{}", refused.stderr);

    // A Kubernetes Indexed Job: JOB_COMPLETION_INDEX 0..3, N from --shards.
    let k8s = tempfile::tempdir().unwrap();
    let mut parts = Vec::new();
    for index in ["0", "1", "2", "3"] {
        let out = k8s.path().join(format!("k8s.{index}"));
        scan(&[("JOB_COMPLETION_INDEX", index)], &out, Some("4")).expect_code(0);
        parts.push(out);
    }
    assert_merge_is_single_scan(&tree, &parts, k8s.path());
    let refused = scan(&[("JOB_COMPLETION_INDEX", "0")], &k8s.path().join("x"), None).expect_code(2);
    assert!(refused.stderr.contains("--shards N"), "{}", refused.stderr);
    let refused = scan(&[("JOB_COMPLETION_INDEX", "0"), ("PARALLEL_SEQ", "1")], &k8s.path().join("x"), Some("4"));
    assert!(refused.expect_code(2).stderr.contains("several schedulers"));
    let refused = scan(&[], &k8s.path().join("x"), Some("4")).expect_code(2);
    assert!(refused.stderr.contains("JOB_COMPLETION_INDEX"), "{}", refused.stderr);
}

#[test]
fn missing_duplicated_and_mismatched_parts_are_refused_naming_the_part() {
    let tree = sample_tree();
    let work = tempfile::tempdir().unwrap();
    let part = |i: u32, extra: &[&str]| {
        let out = work.path().join(format!("p{i}{}", extra.join("")));
        cutover(["scan", "--shard", &format!("{i}/3")])
            .args(extra)
            .arg(tree.path())
            .arg("-o")
            .arg(&out)
            .run()
            .expect_code(0);
        out
    };
    let (p1, p2, p3) = (part(1, &[]), part(2, &[]), part(3, &[]));
    let merged = work.path().join("m");
    let merge = |parts: &[&PathBuf]| cutover(["merge"]).args(parts).arg("-o").arg(&merged).run();
    let missing = merge(&[&p1, &p3]).expect_code(2);
    assert!(missing.stderr.contains("part 2 of 3 is missing"), "{}", missing.stderr);
    let twice = merge(&[&p1, &p2, &p2, &p3]).expect_code(2);
    assert!(twice.stderr.contains("p2 are both part 2/3"), "{}", twice.stderr);
    let other_chunks = part(2, &["--chunk-size", "64K"]);
    let mismatched = merge(&[&p1, &other_chunks, &p3]).expect_code(2);
    assert!(mismatched.stderr.contains("p2--chunk-size64K: its chunk size (65536)"), "{}", mismatched.stderr);
    let excluding = part(2, &["--exclude", "*.bin"]);
    let mismatched = merge(&[&p1, &excluding, &p3]).expect_code(2);
    assert!(mismatched.stderr.contains("its exclude patterns ([*.bin])"), "{}", mismatched.stderr);
    let of_four = work.path().join("of-four");
    cutover(["scan", "--shard", "2/4"]).arg(tree.path()).arg("-o").arg(&of_four).run().expect_code(0);
    let other_n = merge(&[&p1, &of_four, &p3]).expect_code(2);
    assert!(other_n.stderr.contains("parts of different sharded scans"), "{}", other_n.stderr);
    let elsewhere = Tree::new();
    elsewhere.file("x", "another tree");
    let foreign = work.path().join("foreign");
    cutover(["scan", "--shard", "2/3"]).arg(elsewhere.path()).arg("-o").arg(&foreign).run().expect_code(0);
    let mismatched = merge(&[&p1, &foreign, &p3]).expect_code(2);
    assert!(mismatched.stderr.contains("foreign: its tree root"), "{}", mismatched.stderr);
    let whole = work.path().join("whole");
    cutover(["scan"]).arg(tree.path()).arg("-o").arg(&whole).run().expect_code(0);
    let not_a_part = merge(&[&p1, &whole, &p3]).expect_code(2);
    assert!(not_a_part.stderr.contains("whole: not a part of a sharded scan"), "{}", not_a_part.stderr);
    assert!(!merged.exists(), "a refused merge wrote its output");
    // One part alone is no manifest of the tree, and too few parts for a side are refused.
    let alone = cutover(["diff"]).arg(&p1).arg(&whole).run().expect_code(2);
    assert!(alone.stderr.contains("part 1/3 of a sharded scan"), "{}", alone.stderr);
    let short = cutover(["diff"]).arg(&p1).arg(&p2).arg(&whole).run().expect_code(2);
    assert!(short.stderr.contains("whole: not a part"), "{}", short.stderr);
    // A tree changed between the parts' scans: a directory one part has and another lacks.
    tree.dir("appeared");
    let late = work.path().join("late");
    cutover(["scan", "--shard", "3/3"]).arg(tree.path()).arg("-o").arg(&late).run().expect_code(0);
    let changed = merge(&[&p1, &p2, &late]).expect_code(2);
    assert!(changed.stderr.contains("the tree changed between the scans of the parts"), "{}", changed.stderr);
}

/// A source and a target that differ in every way a plan repairs.
fn pair() -> (Tree, Tree) {
    let source = sample_tree();
    std::fs::remove_file(source.at("fifo")).unwrap();
    let target = Tree::new();
    for i in 0..400 {
        let text = if i % 3 == 0 { format!("changed {i}\n") } else { format!("file {i}\n") };
        target.file(&format!("big/file-{i:04}"), text);
    }
    target.file("extra/gone", "x").file("nested", "a file where the source has a directory");
    target.dir("multi-chunk.bin").file("multi-chunk.bin/inside", "a directory where the source has a file");
    target.file("only-target", "removed");
    source.mode("big", 0o555);
    (source, target)
}

#[test]
fn four_shards_of_a_plan_applied_at_once_leave_the_target_equal() {
    for with_bundles in [false, true] {
        let (source, target) = pair();
        let work = tempfile::tempdir().unwrap();
        let plan = work.path().join("plan.json");
        cutover(["plan", "-a", "--delete"])
            .arg(source.path())
            .arg(target.path())
            .arg("-o")
            .arg(&plan)
            .run()
            .expect_code(1);
        let mut children = Vec::new();
        for i in 1..=4 {
            let shard = format!("{i}/4");
            let mut command = Command::new(env!("CARGO_BIN_EXE_cutover"));
            command.env("CUTOVER_STATE_DIR", support::test_state_dir()).arg("apply").arg(&plan);
            command.args(["--shard", &shard, "--target"]).arg(target.path());
            if with_bundles {
                let bundle = work.path().join(format!("bundle.{i}"));
                cutover(["bundle", "--shard", &shard]).arg(&plan).arg("-o").arg(&bundle).run().expect_code(0);
                command.arg("--bundle").arg(bundle);
            }
            children.push(
                command.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap(),
            );
        }
        for child in children {
            let out = child.wait_with_output().unwrap();
            let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
            assert!(out.status.success(), "a shard failed ({with_bundles}): {stdout}\n{stderr}");
        }
        let rsync = Command::new("rsync")
            .args(["-rlpcn", "--delete", "-i"])
            .arg(format!("{}/", source.path().display()))
            .arg(format!("{}/", target.path().display()))
            .output()
            .unwrap();
        assert!(rsync.status.success());
        assert_eq!(
            String::from_utf8_lossy(&rsync.stdout),
            "",
            "rsync still finds differences (bundles: {with_bundles})"
        );
        // Directory modes and mtimes too: the last shard set them after every write.
        cutover(["diff", "--meta", "mode,mtime"]).arg(source.path()).arg(target.path()).run().expect_code(0);
    }
}
