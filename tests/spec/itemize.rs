//! What a repair changed, operation by operation: `-i` lines, `--log FILE` JSON Lines and
//! `--format jsonl` on `apply` and `repair` (docs/plan.md, "What apply did").

use std::path::Path;

use serde_json::Value;

use crate::support::{Tree, cutover};

/// A source and a target that differ in every way a plan has an operation for.
fn pair() -> (Tree, Tree) {
    let source = Tree::new();
    source
        .file("same.txt", "same")
        .file("changed.bin", vec![7u8; 3000])
        .file("new/one.txt", "1")
        .file("new/two.txt", "22");
    source.file("mode.sh", "#!/bin/sh\n").mode("mode.sh", 0o755).symlink("link", "same.txt");
    let target = Tree::new();
    target.file("same.txt", "same").file("changed.bin", vec![9u8; 3000]).file("old/gone.txt", "gone");
    target.file("mode.sh", "#!/bin/sh\n").mode("mode.sh", 0o644);
    (source, target)
}

/// A plan written to `dir/plan`, with `--delete`.
fn plan(source: &Tree, target: &Tree, dir: &Tree) -> std::path::PathBuf {
    let plan = dir.at("plan");
    cutover(["plan", "--delete", "-o"]).arg(&plan).arg(source.path()).arg(target.path()).run().expect_code(1);
    plan
}

fn plan_operations(plan: &Path) -> Vec<(String, String)> {
    let doc: Value = serde_json::from_slice(&std::fs::read(plan).unwrap()).unwrap();
    let ops = doc["operations"].as_array().unwrap();
    ops.iter().map(|op| (op["op"].as_str().unwrap().to_string(), op["path"].as_str().unwrap().to_string())).collect()
}

/// An `-i` line split as docs/plan.md says: result, operation, bytes, then the path after one
/// space.
fn parse_item(line: &str) -> (String, String, u64, String) {
    let mut rest = line;
    let mut fields = Vec::new();
    for _ in 0..3 {
        rest = rest.trim_start_matches(' ');
        let end = rest.find(' ').unwrap_or_else(|| panic!("not an item line: {line:?}"));
        fields.push(rest[..end].to_string());
        rest = &rest[end..];
    }
    let path = rest.strip_prefix(' ').unwrap_or_else(|| panic!("no path in {line:?}")).to_string();
    (fields[0].clone(), fields[1].clone(), fields[2].parse().unwrap(), path)
}

/// The item lines of a run's standard output (the summary lines after them are not items).
fn items(stdout: &str) -> Vec<(String, String, u64, String)> {
    let words = ["done ", "already ", "skipped ", "failed ", "held "];
    stdout.lines().filter(|l| words.iter().any(|w| l.starts_with(w)) && !l.contains(": ")).map(parse_item).collect()
}

/// The plan's path as an item shows it: `.` for the root, a `/` after a directory.
fn item_path(path: &str, dir: bool) -> String {
    match (path, dir) {
        ("", _) => ".".into(),
        (p, true) => format!("{p}/"),
        (p, false) => p.into(),
    }
}

#[test]
fn itemize_prints_one_line_per_operation_in_plan_order_and_a_rerun_finds_them_already_done() {
    let (source, target) = pair();
    let work = Tree::new();
    let plan = plan(&source, &target, &work);
    let planned = plan_operations(&plan);
    let run = cutover(["apply", "-i"]).arg(&plan).run().expect_code(0);
    let lines = items(&run.stdout_text());
    assert_eq!(lines.len(), planned.len(), "{}", run.stdout_text());
    for ((result, op, _, path), (planned_op, planned_path)) in lines.iter().zip(&planned) {
        assert_eq!(result, "done");
        assert_eq!(op, planned_op);
        let dir = path.ends_with('/') || path == ".";
        assert_eq!(path, &item_path(planned_path, dir), "{op}");
    }
    // Bytes: what each copy or patch wrote adds up to what the summary says was copied.
    let copied: u64 = lines.iter().filter(|l| l.1 == "copy" || l.1 == "patch").map(|l| l.2).sum();
    let summary = run.stdout_text().lines().last().unwrap().to_string();
    assert!(summary.starts_with("apply: "), "{summary}");
    let copy = lines.iter().find(|l| l.3 == "new/two.txt").unwrap();
    assert_eq!((copy.1.as_str(), copy.2), ("copy", 2));
    let removed = lines.iter().find(|l| l.3 == "old/").unwrap();
    assert_eq!((removed.1.as_str(), removed.2), ("remove", 4));
    assert!(copied >= 3000 + 3, "{copied}");
    // Run again: every postcondition holds, nothing written.
    let again = cutover(["apply", "--itemize"]).arg(&plan).run().expect_code(0);
    let lines = items(&again.stdout_text());
    assert_eq!(lines.len(), planned.len());
    assert!(lines.iter().all(|(result, _, bytes, _)| result == "already" && *bytes == 0), "{}", again.stdout_text());
}

#[test]
fn the_log_holds_the_same_operations_as_json_lines_between_a_start_and_an_end_line_and_runs_append() {
    let (source, target) = pair();
    let work = Tree::new();
    let plan = plan(&source, &target, &work);
    let log = work.at("apply.log");
    let run = cutover(["apply", "-i", "--log"]).arg(&log).arg(&plan).run().expect_code(0);
    let shown = items(&run.stdout_text());
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), shown.len() + 2, "{text}");
    let (start, end) = (&lines[0], &lines[lines.len() - 1]);
    assert_eq!((start["type"].as_str(), start["format"].as_str()), (Some("start"), Some("cutover-log/1")));
    assert_eq!(start["command"], "apply");
    assert_eq!(start["operations"], shown.len());
    assert_eq!(end["type"], "end");
    assert_eq!(end["complete"], true);
    assert_eq!(end["done"], shown.len());
    for (index, (line, (result, op, bytes, path))) in lines[1..lines.len() - 1].iter().zip(&shown).enumerate() {
        assert_eq!(line["index"], index);
        assert_eq!(line["result"].as_str(), Some(result.as_str()));
        assert_eq!(line["op"].as_str(), Some(op.as_str()));
        assert_eq!(line["bytes"].as_u64(), Some(*bytes));
        assert_eq!(item_path(line["path"].as_str().unwrap(), path.ends_with('/')), *path);
        assert!(line.get("type").is_none() && line.get("reason").is_none(), "{line}");
    }
    assert_eq!(end["bytes_copied"].as_u64(), Some(shown.iter().filter(|l| l.1 != "remove").map(|l| l.2).sum()));
    // A second run appends its own start, operations and end.
    cutover(["apply", "--log"]).arg(&log).arg(&plan).run().expect_code(0);
    let text = std::fs::read_to_string(&log).unwrap();
    let starts = text.lines().filter(|l| l.contains(r#""type":"start""#)).count();
    assert_eq!((starts, text.lines().count()), (2, 2 * (shown.len() + 2)), "{text}");
    let last: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!((last["done"].as_u64(), last["already_done"].as_u64()), (Some(0), Some(shown.len() as u64)));
}

#[test]
fn a_skipped_operation_and_a_held_removal_are_lines_with_their_result_and_reason() {
    let (source, target) = pair();
    let work = Tree::new();
    let plan = plan(&source, &target, &work);
    // The target changes after the plan: the copy's precondition no longer holds.
    target.file("changed.bin", vec![1u8; 3000]);
    let log = work.at("log");
    let run = cutover(["apply", "-i", "--max-delete", "0", "--log"]).arg(&log).arg(&plan).run().expect_code(2);
    let lines = items(&run.stdout_text());
    let skipped = lines.iter().find(|l| l.3 == "changed.bin").unwrap();
    assert_eq!((skipped.0.as_str(), skipped.1.as_str(), skipped.2), ("skipped", "copy", 0));
    let held = lines.iter().find(|l| l.3 == "old/").unwrap();
    assert_eq!((held.0.as_str(), held.1.as_str()), ("held", "remove"));
    let logged: Vec<Value> =
        std::fs::read_to_string(&log).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let skipped = logged.iter().find(|l| l["path"] == "changed.bin").unwrap();
    assert!(skipped["reason"].as_str().is_some_and(|r| !r.is_empty()), "{skipped}");
    let held = logged.iter().find(|l| l["result"] == "held").unwrap();
    assert_eq!(held["path"], "old");
    assert_eq!(logged.last().unwrap()["complete"], false);
}

#[test]
fn format_jsonl_streams_the_operations_then_one_summary_line_on_apply_and_repair() {
    let (source, target) = pair();
    let work = Tree::new();
    let plan = plan(&source, &target, &work);
    let planned = plan_operations(&plan);
    let run = cutover(["apply", "--format", "jsonl"]).arg(&plan).run().expect_code(0);
    let lines: Vec<Value> = run.stdout_text().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), planned.len() + 1);
    for (line, (op, path)) in lines.iter().zip(&planned) {
        assert_eq!((line["op"].as_str(), line["path"].as_str()), (Some(op.as_str()), Some(path.as_str())));
        assert!(line.get("format").is_none());
    }
    let summary = lines.last().unwrap();
    assert_eq!((summary["type"].as_str(), summary["format"].as_str()), (Some("summary"), Some("cutover-apply/1")));
    assert_eq!(summary["done"], planned.len());

    let (source, target) = pair();
    let run = cutover(["repair", "--delete", "--format", "jsonl"]).arg(source.path()).arg(target.path()).run();
    let run = run.expect_code(0);
    let lines: Vec<Value> = run.stdout_text().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let (summary, operations) = lines.split_last().unwrap();
    assert_eq!(operations.len(), planned.len());
    assert!(operations.iter().all(|l| l["result"] == "done"));
    assert_eq!(summary["type"], "summary");
    assert_eq!(summary["verify"]["identical"], true);
    assert_eq!(summary["done"], planned.len());
}

#[test]
fn itemize_on_repair_and_the_options_that_contradict_it() {
    let (source, target) = pair();
    let run = cutover(["repair", "--delete", "-i"]).arg(source.path()).arg(target.path()).run().expect_code(0);
    let lines = items(&run.stdout_text());
    assert!(
        lines.iter().any(|l| l == &("done".into(), "copy".into(), 3000, "changed.bin".into())),
        "{}",
        run.stdout_text()
    );
    assert!(run.stdout_text().contains("verified: the target is identical"));
    let (source, target) = pair();
    for contradiction in [["-i", "--format=json"], ["-i", "-q"]] {
        let run = cutover(["repair"]).args(contradiction).arg(source.path()).arg(target.path()).run().expect_code(2);
        assert!(run.stderr.contains("-i prints a line per operation"), "{}", run.stderr);
    }
    // Refused before anything was written.
    assert!(target.at("old/gone.txt").exists());
}

/// An outside judge: the files `rsync -rlcn -i --delete` would transfer are exactly those `-i`
/// says were copied or patched, and the subtrees it would delete those removed.
#[test]
fn itemized_copies_and_removals_are_what_rsync_would_transfer_and_delete() {
    let (source, target) = pair();
    let mut from = source.path().as_os_str().to_owned();
    from.push("/");
    let rsync = std::process::Command::new("rsync")
        .args(["-rlcn", "-i", "--delete"])
        .arg(&from)
        .arg(target.path())
        .output()
        .expect("rsync is installed");
    assert!(rsync.status.success(), "{}", String::from_utf8_lossy(&rsync.stderr));
    let said = String::from_utf8(rsync.stdout).unwrap();
    let mut transferred: Vec<String> =
        said.lines().filter(|l| l.starts_with(">f")).map(|l| l[12..].to_string()).collect();
    let deleted: Vec<String> =
        said.lines().filter_map(|l| l.strip_prefix("*deleting ")).map(|p| p.trim().to_string()).collect();
    // rsync lists every deleted name; cutover removes each subtree once, at its top.
    let mut tops: Vec<String> = deleted
        .iter()
        .filter(|p| !deleted.iter().any(|q| q != *p && q.ends_with('/') && p.starts_with(q.as_str())))
        .cloned()
        .collect();
    let run = cutover(["repair", "--delete", "-i"]).arg(source.path()).arg(target.path()).run().expect_code(0);
    let lines = items(&run.stdout_text());
    let mut copied: Vec<String> =
        lines.iter().filter(|l| l.0 == "done" && (l.1 == "copy" || l.1 == "patch")).map(|l| l.3.clone()).collect();
    let mut removed: Vec<String> = lines.iter().filter(|l| l.1 == "remove").map(|l| l.3.clone()).collect();
    for list in [&mut transferred, &mut copied, &mut tops, &mut removed] {
        list.sort();
    }
    assert_eq!(copied.len(), 3, "{}", run.stdout_text());
    assert_eq!(copied, transferred, "rsync said:\n{said}");
    assert_eq!(removed, tops, "rsync said:\n{said}");
}
