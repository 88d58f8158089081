
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
