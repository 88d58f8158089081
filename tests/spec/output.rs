//! The three report formats, quiet mode, exit codes and argument validation.

use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::support::{Tree, cutover, noise};

/// A pair of trees with one difference of each common kind.
fn several_differences() -> (Tree, Tree) {
    let source = Tree::new();
    source.file("changed", "aaaa").file("gone", "12345").file("mode", "m").file("swap", "s").dir("gone-dir/sub");
    let target = source.copy();
    target.file("changed", "abaa").remove("gone").mode("mode", 0o600).file("added", "123");
    target.remove("swap").dir("swap").remove("gone-dir");
    (source, target)
}

#[test]
fn json_reports_carry_both_sides_the_summary_and_every_difference() {
    let (source, target) = several_differences();
    let run = cutover(["diff", "--format", "json"]).arg(source.path()).arg(target.path()).run().expect_code(1);
    let doc = run.json();
    assert_eq!(doc["format"], "cutover-diff/1");
    assert_eq!(doc["identical"], false);
    assert_eq!(doc["source"]["root"], source.path().display().to_string());
    assert_eq!(doc["target"]["root"], target.path().display().to_string());
    assert_eq!(doc["source"]["chunk_size"], 1 << 20);
    assert!(doc["source"]["hash"].as_str().is_some_and(|h| h.len() == 64));
    assert_ne!(doc["source"]["hash"], doc["target"]["hash"]);
    assert_eq!(doc["compared"], json!(["mode", "hardlinks", "rdev"]));
    assert_eq!(
        doc["summary"],
        json!({"missing": 2, "extra": 1, "content": 1, "type": 1, "metadata": 1, "hardlink": 0, "trouble": 0,
               "divergent_bytes": 4, "missing_bytes": 5, "extra_bytes": 3})
    );
    let kinds: Vec<(&str, &str)> = doc["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["path"].as_str().unwrap(), d["kind"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("added", "extra"),
            ("changed", "content"),
            ("gone", "missing"),
            ("gone-dir", "missing"),
            ("mode", "metadata"),
            ("swap", "type")
        ]
    );
}

#[test]
fn jsonl_prints_one_difference_per_line_then_a_summary_line() {
    let (source, target) = several_differences();
    let whole = cutover(["diff", "--format", "json"]).arg(source.path()).arg(target.path()).run().json();
    let run = cutover(["diff", "--format", "jsonl"]).arg(source.path()).arg(target.path()).run().expect_code(1);
    let lines: Vec<Value> =
        run.stdout_text().lines().map(|l| serde_json::from_str(l).expect("each line is JSON")).collect();
    let (last, differences) = lines.split_last().unwrap();
    assert_eq!(differences, whole["differences"].as_array().unwrap().as_slice());
    assert_eq!(last["type"], "summary");
    assert!(last.get("differences").is_none());
    for field in ["format", "identical", "source", "target", "compared", "chunk_size", "summary"] {
        assert_eq!(last[field], whole[field], "{field}");
    }
}

#[test]
fn human_output_names_each_difference_on_its_own_line_and_ends_with_a_summary() {
    let (source, target) = several_differences();
    let run = cutover(["diff"]).arg(source.path()).arg(target.path()).run().expect_code(1);
    let text = run.stdout_text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 7, "{text}");
    for (line, (kind, path)) in lines.iter().zip([
        ("extra", "added"),
        ("content", "changed"),
        ("missing", "gone"),
        ("missing", "gone-dir"),
        ("metadata", "mode"),
        ("type", "swap"),
    ]) {
        assert!(line.starts_with(kind) && line.contains(path), "expected {kind} {path}: {line}");
    }
    assert!(lines[6].starts_with("6 differences"), "{text}");

    let same = source.copy();
    let run = cutover(["diff"]).arg(source.path()).arg(same.path()).run().expect_code(0);
    assert!(run.stdout_text().starts_with("identical"), "{}", run.stdout_text());
}

#[test]
fn quiet_prints_nothing_and_the_exit_code_tells() {
    let (source, target) = several_differences();
    let run = cutover(["diff", "-q"]).arg(source.path()).arg(target.path()).run().expect_code(1);
    assert!(run.stdout.is_empty() && run.stderr.is_empty(), "{run:?}");
    let run = cutover(["diff", "--quiet"]).arg(source.path()).arg(source.path()).run().expect_code(0);
    assert!(run.stdout.is_empty(), "{run:?}");
}

#[test]
fn scan_prints_the_root_hash_and_a_summary() {
    let tree = Tree::new();
    tree.file("a", "12345").file("d/b", "678").symlink("l", "a");
    let text = cutover(["scan"]).arg(tree.path()).run().expect_code(0).stdout_text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].ends_with(&format!("  {}", tree.path().display())), "{text}");
    assert!(lines[1].contains("5 entries") && lines[1].contains("2 files"), "{text}");
    let same = tree.copy();
    let again = cutover(["scan"]).arg(same.path()).run().stdout_text();
    assert_eq!(again.split("  ").next(), text.split("  ").next(), "equal trees have equal root hashes anywhere");
}

#[test]
fn invalid_arguments_are_refused_with_exit_2() {
    let tree = Tree::new();
    let dir = tree.path();
    for bad in ["1000", "512", "3K", "2G", "0", "-4K", "abc", "4T"] {
        let run = cutover(["scan", "--chunk-size", bad]).arg(dir).run();
        assert_eq!(run.code(), 2, "--chunk-size {bad} must be refused");
        let run = cutover(["diff", "--chunk-size", bad]).arg(dir).arg(dir).run();
        assert_eq!(run.code(), 2, "--chunk-size {bad} must be refused");
    }
    for good in ["1K", "1k", "4096", "64K", "1M", "1G"] {
        cutover(["diff", "-q", "--chunk-size", good]).arg(dir).arg(dir).run().expect_code(0);
    }
    cutover(["diff", "--meta", "colour"]).arg(dir).arg(dir).run().expect_code(2);
    cutover(["diff", "--format", "xml"]).arg(dir).arg(dir).run().expect_code(2);
    cutover(["diff"]).arg(dir).run().expect_code(2);
    cutover(["scan", "--b3sum", "-o", "x"]).arg(dir).run().expect_code(2);
}

#[test]
fn human_output_shows_mtimes_as_the_json_does_even_before_1970() {
    let source = Tree::new();
    source.file("old", "x");
    let target = source.copy();
    // 1960-01-01T00:00:00.5Z and .7Z: seconds -315619200 plus a positive fraction.
    for (tree, nsec) in [(&source, 500_000_000), (&target, 700_000_000)] {
        let time = rustix::fs::Timespec { tv_sec: -315_619_200, tv_nsec: nsec };
        let times = rustix::fs::Timestamps { last_access: time, last_modification: time };
        rustix::fs::utimensat(rustix::fs::CWD, tree.at("old"), &times, rustix::fs::AtFlags::empty()).unwrap();
    }
    let args = ["--meta", "mtime"];
    let report = cutover(["diff", "--format", "json"]).args(args).arg(source.path()).arg(target.path()).run();
    let mtime = &report.expect_code(1).json()["differences"][0]["metadata"]["mtime"];
    assert_eq!(mtime["source"], "1960-01-01T00:00:00.500000000Z");
    let text = cutover(["diff"]).args(args).arg(source.path()).arg(target.path()).run().expect_code(1).stdout_text();
    assert!(text.contains("mtime 1960-01-01T00:00:00.500000000Z→1960-01-01T00:00:00.700000000Z"), "{text}");
}

#[test]
fn the_number_of_jobs_changes_nothing_but_the_speed() {
    let (source, target) = several_differences();
    source.file("big/many-chunks", noise(9, 9 * 4096 + 5)).file("big/2", noise(10, 3 * 4096));
    target.file("big/many-chunks", noise(9, 9 * 4096 + 5)).patch("big/many-chunks", 5 * 4096, b"!");
    let scan = |jobs: &str| {
        cutover(["-j", jobs, "scan", "--b3sum", "--chunk-size", "4K"]).arg(source.path()).run().expect_code(0).stdout
    };
    let diff = |jobs: &str| {
        let run = cutover(["diff", "--format", "json", "--chunk-size", "4K", "--jobs", jobs]);
        run.arg(source.path()).arg(target.path()).run().expect_code(1).json()
    };
    let (one_scan, one_diff) = (scan("1"), diff("1"));
    assert!(one_diff["differences"].as_array().unwrap().len() >= 5, "{one_diff}");
    for jobs in ["2", "7", "64"] {
        assert_eq!(scan(jobs), one_scan, "scan -j {jobs}");
        assert_eq!(diff(jobs), one_diff, "diff --jobs {jobs}");
    }
    for bad in ["0", "-1", "many", "1025"] {
        let run = cutover([format!("--jobs={bad}").as_str(), "scan"]).arg(source.path()).run().expect_code(2);
        assert!(run.stderr.contains("--jobs"), "{}", run.stderr);
    }
}

#[test]
fn a_reader_that_goes_away_ends_the_output_quietly() {
    let tree = Tree::new();
    for i in 0..2000 {
        tree.file(format!("d{}/file-{i:04}", i % 10).as_str(), format!("{i}"));
    }
    for args in [&["scan", "--b3sum"][..], &["scan", "-o", "-"][..]] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_cutover"))
            .args(args)
            .arg(tree.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let output = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.code().is_some(), "{args:?}: killed by {:?}", output.status);
        assert!(!stderr.contains("panicked") && !stderr.contains("error"), "{args:?}: {stderr}");
    }
}
