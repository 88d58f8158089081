
#[test]
fn a_record_says_what_was_read_and_what_was_trusted_from_the_cache() {
    let tree = Tree::new();
    tree.file("a", "123").file("b", "4567");
    let work = Tree::new();
    let (cache, report) = (work.at("cache.manifest"), work.at("run.json"));
    cutover(["scan", "--cache"]).arg(&cache).arg(tree.path()).run().expect_code(0);
    cutover(["scan", "--cache"]).arg(&cache).arg("--report").arg(&report).arg(tree.path()).run().expect_code(0);
    let doc = read_record(&report);
    assert_eq!(doc["verified"]["dir"]["trusted_files"], 2, "{doc:#}");
    assert_eq!(doc["verified"]["dir"]["verified_files"], 0);
    let plain = work.at("plain.json");
    cutover(["scan", "--report"]).arg(&plain).arg(tree.path()).run().expect_code(0);
    assert_eq!(read_record(&plain)["verified"], Value::Null);
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
