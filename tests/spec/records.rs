//! A record of every run: `--report FILE` (JSON, `cutover-run/1`) and `--metrics FILE`
//! (Prometheus text), written at the end of every run, failed ones included.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{Tree, cutover};

fn read_record(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: no run record: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: not JSON: {e}\n{text}", path.display()))
}

/// The fields every record has, whatever happened.
fn assert_well_formed(doc: &Value, command: &str, exit_code: i32) {
    assert_eq!(doc["format"], "cutover-run/1", "{doc:#}");
    assert_eq!(doc["command"], command);
    assert_eq!(doc["exit_code"], exit_code, "{doc:#}");
    assert_eq!(doc["version"], env!("CARGO_PKG_VERSION"));
    assert!(doc["host"].as_str().is_some_and(|h| !h.is_empty()));
    assert_eq!(doc["arguments"][0], command);
    for field in ["started", "ended"] {
        let time = doc[field].as_str().unwrap();
        assert!(time.len() == 24 && time.ends_with('Z') && &time[10..11] == "T", "{field}: {time}");
    }
    assert!(doc["started"].as_str() <= doc["ended"].as_str());
    assert!(doc["duration_seconds"].as_f64().is_some_and(|d| d >= 0.0));
}

fn promtool_check(path: &Path) {
    let Ok(out) =
        Command::new("promtool").arg("check").arg("metrics").stdin(std::fs::File::open(path).unwrap()).output()
    else {
        panic!("promtool is not installed (Debian package prometheus)");
    };
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.trim().is_empty(), "promtool check metrics: {said}");
}

fn sample(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(name_and_labels)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn a_diff_record_says_what_was_checked_and_what_differed() {
    let source = Tree::new();
    source.file("same", "12345").file("changed", "aaaa").file("gone", "xyz").dir("d");
    let target = source.copy();
    target.file("changed", "abaa").remove("gone");
    let work = Tree::new();
    let report = work.at("run.json");
    cutover(["diff", "--report"]).arg(&report).arg(source.path()).arg(target.path()).run().expect_code(1);
    let doc = read_record(&report);
    assert_well_formed(&doc, "diff", 1);
    assert_eq!(doc["outcome"], "different");
    assert_eq!(doc["error"], Value::Null);
    assert_eq!(doc["roots"]["source"], source.path().display().to_string());
    assert_eq!(doc["roots"]["target"], target.path().display().to_string());
    assert_eq!(doc["compared"], json!(["names", "kinds", "content", "mode", "hardlinks", "rdev"]));
    // Root, d and three files; 12 bytes; `same`, the root and d matched.
    assert_eq!(
        doc["checked"],
        json!({"entries": 5, "files": 3, "directories": 2, "bytes": 12,
               "matched": {"entries": 3, "files": 1, "bytes": 5}})
    );
    assert_eq!(doc["differences"]["missing"], 1);
    assert_eq!(doc["differences"]["content"], 1);
    assert_eq!(doc["differences"]["total"], 2);
    assert_eq!(doc["operations"], Value::Null);
}

#[test]
fn a_run_that_fails_still_leaves_a_record_with_its_error_and_exit_code() {
    let source = Tree::new();
    source.file("f", "x");
    let work = Tree::new();
    let missing = work.at("not-there");
    for command in ["diff", "plan", "repair"] {
        let report = work.at(&format!("{command}.json"));
        // repair creates a missing target whose parent exists: give it one that cannot be.
        let target = if command == "repair" { missing.join("below") } else { missing.clone() };
        cutover([command, "--report"]).arg(&report).arg(source.path()).arg(&target).run().expect_code(2);
        let doc = read_record(&report);
        assert_well_formed(&doc, command, 2);
        assert_eq!(doc["outcome"], "trouble");
        assert_eq!(doc["success"], false);
        assert!(doc["error"].as_str().is_some_and(|e| e.contains("not-there")), "{doc:#}");
    }
    let report = work.at("scan.json");
    cutover(["scan", "--report"]).arg(&report).arg(&missing).run().expect_code(2);
    assert_well_formed(&read_record(&report), "scan", 2);
    let report = work.at("apply.json");
    cutover(["apply", "--report"]).arg(&report).arg(work.at("no-plan")).run().expect_code(2);
    let doc = read_record(&report);
    assert_well_formed(&doc, "apply", 2);
    assert!(doc["error"].as_str().is_some_and(|e| e.contains("no-plan")), "{doc:#}");
}

#[test]
fn a_guard_refusing_is_recorded() {
    let (source, target) = (Tree::new(), Tree::new());
    target.file("a", "1").file("b", "2").file("c", "3");
    let work = Tree::new();
    let report = work.at("run.json");
    let state = work.at("state");
    let run = cutover(["repair", "--delete", "--state"]).arg(&state).arg("--report").arg(&report);
    run.arg(source.path()).arg(target.path()).run().expect_code(2);
    let doc = read_record(&report);
    assert_well_formed(&doc, "repair", 2);
    assert!(doc["error"].as_str().is_some_and(|e| !e.is_empty()));
    assert!(target.at("a").exists());
}

#[test]
fn a_lock_held_elsewhere_is_recorded_with_exit_3() {
    let (source, target) = (Tree::new(), Tree::new());
    source.file("f", "x");
    let work = Tree::new();
    let report = work.at("run.json");
    let mut holder = Command::new("flock").arg(target.path()).args(["sleep", "60"]).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Command::new("flock").arg("-n").arg(target.path()).arg("true").status().unwrap().success() {
        assert!(Instant::now() < deadline, "flock(1) never took the lock");
        std::thread::sleep(Duration::from_millis(1));
    }
    let run = cutover(["repair", "--report"]).arg(&report).arg(source.path()).arg(target.path()).run();
    holder.kill().unwrap();
    holder.wait().unwrap();
    run.expect_code(3);
    let doc = read_record(&report);
    assert_well_formed(&doc, "repair", 3);
    assert_eq!(doc["outcome"], "locked");
}

#[test]
fn a_repair_record_holds_the_operations_and_the_verify_result() {
    let source = Tree::new();
    source.file("a", "hello").file("b", "world");
    let target = Tree::new();
    target.file("a", "hellO");
    let work = Tree::new();
    let report = work.at("run.json");
    let state = work.at("state");
    let run = cutover(["repair", "--state"]).arg(&state).arg("--report").arg(&report);
    run.arg(source.path()).arg(target.path()).run().expect_code(0);
    let doc = read_record(&report);
    assert_well_formed(&doc, "repair", 0);
    assert_eq!(doc["success"], true);
    let ops = &doc["operations"];
    assert!(ops["planned"].as_u64().is_some_and(|n| n >= 2), "{doc:#}");
    assert_eq!(ops["applied"]["done"], ops["planned"]);
    assert_eq!(ops["applied"]["failed"], json!([]));
    assert_eq!(ops["verify"]["identical"], true);
    assert_eq!(ops["verify"]["remaining"], 0);
    assert_eq!(doc["differences"]["total"], 2);
}

#[test]
fn a_scan_record_counts_the_tree() {
    let tree = Tree::new();
    tree.file("a", "123").file("d/b", "4567").symlink("l", "a");
    let work = Tree::new();
    let report = work.at("run.json");
    cutover(["scan", "--report"]).arg(&report).arg(tree.path()).run().expect_code(0);
    let doc = read_record(&report);
    assert_well_formed(&doc, "scan", 0);
    assert_eq!(doc["roots"]["dir"], tree.path().display().to_string());
    assert_eq!(doc["checked"], json!({"entries": 5, "files": 2, "directories": 2, "bytes": 7, "matched": null}));
}

#[test]
fn metrics_pass_promtool_and_carry_the_last_success_through_a_failed_run() {
    let source = Tree::new();
    source.file("f", "x").file("g", "y");
    let target = source.copy();
    target.file("g", "z");
    let work = Tree::new();
    let metrics = work.at("cutover.prom");
    cutover(["diff", "--job", "nightly", "--metrics"]).arg(&metrics).arg(source.path()).arg(target.path()).run();
    promtool_check(&metrics);
    let first = std::fs::read_to_string(&metrics).unwrap();
    let success = sample(&first, "cutover_last_success_timestamp_seconds{job=\"nightly\"}").expect(&first);
    assert_eq!(sample(&first, "cutover_differences{job=\"nightly\",kind=\"content\"}"), Some(1.0), "{first}");
    assert_eq!(sample(&first, "cutover_last_run_exit_code{job=\"nightly\"}"), Some(1.0));
    assert_eq!(sample(&first, "cutover_checked_files{job=\"nightly\"}"), Some(2.0));
    assert_eq!(sample(&first, "cutover_matched_files{job=\"nightly\"}"), Some(1.0));
    // The target went away: a failed run keeps the time of the last good one.
    std::thread::sleep(Duration::from_millis(20));
    let gone = work.at("gone");
    cutover(["diff", "--job", "nightly", "--metrics"]).arg(&metrics).arg(source.path()).arg(&gone).run().expect_code(2);
    promtool_check(&metrics);
    let second = std::fs::read_to_string(&metrics).unwrap();
    assert_eq!(sample(&second, "cutover_last_success_timestamp_seconds{job=\"nightly\"}"), Some(success), "{second}");
    assert_eq!(sample(&second, "cutover_last_run_success{job=\"nightly\"}"), Some(0.0));
    assert_eq!(sample(&second, "cutover_last_run_exit_code{job=\"nightly\"}"), Some(2.0));
    assert!(sample(&second, "cutover_last_run_timestamp_seconds{job=\"nightly\"}").unwrap() > success);
    assert_eq!(sample(&second, "cutover_runs_total{job=\"nightly\",outcome=\"different\"}"), Some(1.0));
    assert_eq!(sample(&second, "cutover_runs_total{job=\"nightly\",outcome=\"trouble\"}"), Some(1.0));
    // Every name follows the rules: the prefix, and a HELP and TYPE line for it.
    for line in second.lines().filter(|l| !l.starts_with('#')) {
        let name = line.split(['{', ' ']).next().unwrap();
        assert!(name.starts_with("cutover_"), "{line}");
        assert!(second.contains(&format!("# TYPE {name} ")), "{name}");
        assert!(second.contains(&format!("# HELP {name} ")), "{name}");
    }
}

#[test]
fn metrics_of_a_repair_name_its_operations_and_pass_promtool() {
    let source = Tree::new();
    source.file("a", "hello");
    let target = Tree::new();
    let work = Tree::new();
    let metrics = work.at("repair.prom");
    let run = cutover(["repair", "--state"]).arg(work.at("state")).arg("--metrics").arg(&metrics);
    run.arg(source.path()).arg(target.path()).run().expect_code(0);
    promtool_check(&metrics);
    let text = std::fs::read_to_string(&metrics).unwrap();
    let done = sample(&text, "cutover_applied_operations{job=\"repair\",result=\"done\"}");
    assert_eq!(done, sample(&text, "cutover_planned_operations{job=\"repair\"}"), "{text}");
    assert!(done.is_some_and(|n| n >= 1.0), "{text}");
    assert_eq!(sample(&text, "cutover_copied_bytes{job=\"repair\"}"), Some(5.0));
    assert_eq!(sample(&text, "cutover_verify_remaining_differences{job=\"repair\"}"), Some(0.0));
}

#[test]
fn the_alert_rules_in_docs_cron_md_pass_promtool() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/cron.md")).unwrap();
    let rules = doc.split("```yaml\n").nth(1).and_then(|rest| rest.split("```").next()).expect("a yaml block");
    assert!(rules.contains("cutover_last_success_timestamp_seconds"));
    let work = Tree::new();
    work.file("rules.yml", rules);
    let out = Command::new("promtool").arg("check").arg("rules").arg(work.at("rules.yml")).output();
    let out = out.expect("promtool is not installed (Debian package prometheus)");
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && said.contains("SUCCESS: 5 rules found"), "{said}");
}

#[test]
fn repair_json_holds_the_verify_result_and_the_unrepairable_entries() {
    let source = Tree::new();
    source.file("a", "hello").file("b", "world");
    let target = Tree::new();
    target.file("extra", "x");
    let work = Tree::new();
    // Without --delete, the extra entry remains: verify says so.
    let run = cutover(["repair", "--format", "json", "--state"]).arg(work.at("state"));
    let run = run.arg(source.path()).arg(target.path()).run().expect_code(1);
    let doc = run.json();
    assert_eq!(doc["format"], "cutover-apply/1");
    assert_eq!(doc["unrepairable"], json!([]));
    assert_eq!(doc["verify"]["identical"], false, "{doc:#}");
    assert_eq!(doc["verify"]["remaining"], 1);
    assert_eq!(doc["verify"]["summary"]["extra"], 1);
    assert_eq!(doc["verify"]["differences"][0]["path"], "extra");
}

#[test]
fn a_dry_run_in_json_prints_the_plan_itself() {
    let source = Tree::new();
    source.file("a", "hello");
    let target = Tree::new();
    let work = Tree::new();
    let plan = work.at("plan.json");
    cutover(["plan", "-o"]).arg(&plan).arg(source.path()).arg(target.path()).run().expect_code(1);
    let written: Value = serde_json::from_str(&std::fs::read_to_string(&plan).unwrap()).unwrap();
    let dry = cutover(["repair", "--dry-run", "--format", "json"]).arg(source.path()).arg(target.path()).run();
    let shown = dry.expect_code(1).json();
    assert_eq!(shown["format"], "cutover-plan/1");
    assert_eq!(shown["operations"], written["operations"]);
    let dry = cutover(["apply", "--dry-run", "--format", "json"]).arg(&plan).run().expect_code(1);
    assert_eq!(dry.json(), written);
}

#[test]
fn a_record_says_what_was_read_and_what_was_trusted_from_the_cache() {
    let tree = Tree::new();
    tree.file("a", "123").file("b", "4567");
    let work = Tree::new();
    let (cache, report) = (work.at("cache.manifest"), work.at("run.json"));
    cutover(["scan", "--cache"]).arg(&cache).arg(tree.path()).run().expect_code(0);
    cutover(["scan", "--cache"]).arg(&cache).arg("--report").arg(&report).arg(tree.path()).run().expect_code(0);
    let doc = read_record(&report);
    // A file written just now may be read again (its stamps are too recent to trust): the
    // record says which, and every file is one or the other.
    let counts = &doc["verified"]["dir"];
    let files = counts["trusted_files"].as_u64().zip(counts["verified_files"].as_u64()).map(|(t, v)| t + v);
    assert_eq!(files, Some(2), "{doc:#}");
    // The same counts as metrics, by side, which promtool accepts.
    let metrics = work.at("scan.prom");
    cutover(["scan", "--cache"])
        .arg(&cache)
        .arg("--report")
        .arg(&report)
        .arg("--metrics")
        .arg(&metrics)
        .arg(tree.path())
        .run()
        .expect_code(0);
    promtool_check(&metrics);
    let (text, doc) = (std::fs::read_to_string(&metrics).unwrap(), read_record(&report));
    for field in ["files", "bytes"] {
        for (how, counted) in [("read", "verified"), ("trusted", "trusted")] {
            let name = format!("cutover_{how}_{field}{{job=\"scan\",side=\"dir\"}}");
            let expected = doc["verified"]["dir"][format!("{counted}_{field}")].as_u64().map(|n| n as f64);
            assert_eq!(sample(&text, &name), expected, "{name} in {text}");
        }
    }
    let plain = work.at("plain.json");
    cutover(["scan", "--report"]).arg(&plain).arg(tree.path()).run().expect_code(0);
    assert_eq!(read_record(&plain)["verified"], Value::Null);
}
