//! Every kind of difference, named once, with the fields the report promises.

use std::time::Duration;

use serde_json::json;

use crate::support::{Tree, cutover, diff_json, running_as_root};

#[test]
fn identical_trees_exit_0_and_report_no_differences() {
    let source = Tree::new();
    source.file("a.txt", "alpha").file("d/e/f.bin", [0u8; 5000]).file("empty", "").dir("void").symlink("l", "a.txt");
    let target = source.copy();
    let report = diff_json(source.path(), target.path(), &[]).expect_code(0).report();
    assert_eq!(report.0["identical"], true);
    assert_eq!(report.differences(), &[] as &[serde_json::Value]);
    assert_eq!(report.0["format"], "cutover-diff/1");
    assert_eq!(report.0["source"]["hash"], report.0["target"]["hash"]);
}

#[test]
fn a_file_only_in_the_source_is_missing_with_its_size() {
    let source = Tree::new();
    source.file("keep", "k").file("gone.txt", "12345");
    let target = source.copy();
    target.remove("gone.txt");
    let report = diff_json(source.path(), target.path(), &[]).expect_code(1).report();
    assert_eq!(
        report.differences(),
        [json!({"path": "gone.txt", "kind": "missing", "type": "file", "files": 1, "bytes": 5})]
    );
    assert_eq!((report.summary("missing"), report.summary("missing_bytes")), (1, 5));
}

#[test]
fn a_file_only_in_the_target_is_extra_with_its_size() {
    let source = Tree::new();
    source.file("keep", "k");
    let target = source.copy();
    target.file("new.txt", "123");
    let report = diff_json(source.path(), target.path(), &[]).expect_code(1).report();
    assert_eq!(
        report.differences(),
        [json!({"path": "new.txt", "kind": "extra", "type": "file", "files": 1, "bytes": 3})]
    );
    assert_eq!((report.summary("extra"), report.summary("extra_bytes")), (1, 3));
}

#[test]
fn a_directory_missing_from_the_target_is_reported_once_for_its_whole_subtree() {
    let source = Tree::new();
    source.file("d/a", "aa").file("d/sub/b", "bbbb").file("d/sub/deeper/c", "c").dir("d/empty").symlink("d/l", "a");
    source.file("d2", "not inside d");
    let target = source.copy();
    target.remove("d");
    let report = diff_json(source.path(), target.path(), &[]).expect_code(1).report();
    assert_eq!(report.differences(), [json!({"path": "d", "kind": "missing", "type": "dir", "files": 3, "bytes": 7})]);
}

#[test]
fn a_directory_only_in_the_target_is_reported_once_as_extra() {
    let source = Tree::new();
    source.file("x", "x");
    let target = source.copy();
    target.file("new/a", "1").file("new/b/c", "22");
    let report = diff_json(source.path(), target.path(), &[]).expect_code(1).report();
    assert_eq!(report.differences(), [json!({"path": "new", "kind": "extra", "type": "dir", "files": 2, "bytes": 3})]);
}

#[test]
fn empty_directories_count_on_both_sides() {
    let source = Tree::new();
    source.dir("only-in-source").dir("both");
    let target = source.copy();
    target.remove("only-in-source").dir("only-in-target");
    let report = diff_json(source.path(), target.path(), &[]).expect_code(1).report();
    assert_eq!(
        report.differences(),
        [
            json!({"path": "only-in-source", "kind": "missing", "type": "dir", "files": 0, "bytes": 0}),
            json!({"path": "only-in-target", "kind": "extra", "type": "dir", "files": 0, "bytes": 0}),
        ]
    );
}

#[test]
fn empty_files_compare_equal_and_differ_from_one_byte() {
    let source = Tree::new();
    source.file("empty-both", "").file("grows", "").file("shrinks", "x").file("gone", "");
    let target = source.copy();
    target.file("grows", "y").file("shrinks", "").remove("gone");
    let report = diff_json(source.path(), target.path(), &[]).expect_code(1).report();
    assert_eq!(
        report.kinds(),
        [("gone".into(), "missing".into()), ("grows".into(), "content".into()), ("shrinks".into(), "content".into())]
    );
    assert_eq!(report.at("gone")["bytes"], 0);
    assert_eq!(
        report.at("grows"),
        &json!({"path": "grows", "kind": "content", "source_size": 0, "target_size": 1, "ranges": [{"offset": 0, "length": 1}]})
    );
    assert_eq!(report.ranges("shrinks"), [(0, 1)]);
}

#[test]
fn same_size_and_same_mtime_with_different_bytes_is_still_a_content_difference() {
    let source = Tree::new();
    source.file("f", "aaaa").mtime("f", 1_600_000_000, 0);
    let target = source.copy();
    target.file("f", "bbbb").mtime("f", 1_600_000_000, 0);
    for meta in ["mode", "all"] {
        let report = diff_json(source.path(), target.path(), &["--meta", meta]).expect_code(1).report();
        assert_eq!(report.kinds(), [("f".into(), "content".into())], "--meta {meta}");
        assert_eq!(report.ranges("f"), [(0, 4)]);
    }
}

#[test]
fn swapping_file_dir_and_symlink_is_a_type_difference_reported_once() {
    let source = Tree::new();
    source.file("file-to-dir", "f").file("dir-to-file/inner", "i").file("file-to-link", "f");
    source.symlink("link-to-file", "x").file("dir-to-link/inner", "i").symlink("link-to-dir", "x");
    let target = source.copy();
    target.remove("file-to-dir").file("file-to-dir/child", "c");
    target.remove("dir-to-file").file("dir-to-file", "now a file");
    target.remove("file-to-link").symlink("file-to-link", "x");
    target.remove("link-to-file").file("link-to-file", "x");
    target.remove("dir-to-link").symlink("dir-to-link", "x");
    target.remove("link-to-dir").dir("link-to-dir");
    let report = diff_json(source.path(), target.path(), &[]).expect_code(1).report();
    let types: Vec<(String, String, String)> = report
        .differences()
        .iter()
        .map(|d| {
            assert_eq!(d["kind"], "type", "{d:#}");
            let text = |k: &str| d[k].as_str().unwrap().to_string();
            (text("path"), text("source_type"), text("target_type"))
        })
        .collect();
    let expected = [
        ("dir-to-file", "dir", "file"),
        ("dir-to-link", "dir", "symlink"),
        ("file-to-dir", "file", "dir"),
        ("file-to-link", "file", "symlink"),
        ("link-to-dir", "symlink", "dir"),
        ("link-to-file", "symlink", "file"),
    ];
    let expected: Vec<(String, String, String)> =
        expected.iter().map(|(p, s, t)| (p.to_string(), s.to_string(), t.to_string())).collect();
    assert_eq!(types, expected);
    assert_eq!(report.summary("type"), 6);
}

#[test]
fn a_changed_symlink_target_is_a_content_difference_naming_both_targets() {
    let source = Tree::new();
    source.file("a", "a").file("b", "b").symlink("rel", "a").symlink("abs", "/nonexistent/one");
    source.symlink("dangling", "no/such/file");
    let target = source.copy();
    target.remove("rel").symlink("rel", "b");
    let report = diff_json(source.path(), target.path(), &[]).expect_code(1).report();
    assert_eq!(
        report.differences(),
        [json!({"path": "rel", "kind": "content", "type": "symlink", "link": {"source": "a", "target": "b"}})]
    );
}

#[test]
fn symlinks_relative_absolute_and_dangling_compare_by_their_text() {
    let source = Tree::new();
    source
        .file("sub/x", "x")
        .symlink("rel", "sub/x")
        .symlink("abs", "/etc/passwd")
        .symlink("dangling", "../../nowhere");
    let target = source.copy();
    diff_json(source.path(), target.path(), &[]).expect_code(0);
    target.remove("abs").symlink("abs", "/etc/group").remove("dangling").symlink("dangling", "../../elsewhere");
    let report = diff_json(source.path(), target.path(), &[]).expect_code(1).report();
    assert_eq!(report.at("abs")["link"], json!({"source": "/etc/passwd", "target": "/etc/group"}));
    assert_eq!(report.at("dangling")["link"], json!({"source": "../../nowhere", "target": "../../elsewhere"}));
    assert_eq!(report.summary("content"), 2);
}

#[test]
fn a_symlink_to_a_directory_outside_the_tree_is_never_followed() {
    let outside = Tree::new();
    outside.file("secret.txt", "outside the tree").file("more/deep.txt", "also outside");
    let source = Tree::new();
    source.file("inside.txt", "in").symlink("out", outside.path());
    let scan = cutover(["scan", "--b3sum"]).arg(source.path()).run().expect_code(0).stdout_text();
    assert_eq!(scan.lines().count(), 1, "only inside.txt is a file of the tree:\n{scan}");
    assert!(scan.ends_with("  inside.txt\n"), "{scan}");
    let summary = cutover(["scan"]).arg(source.path()).run().expect_code(0).stdout_text();
    assert!(summary.contains("3 entries, 1 file,"), "root, inside.txt and the link itself:\n{summary}");

    // A target holding a real directory with the same files is a different type, not equal.
    let target = Tree::new();
    target
        .file("inside.txt", "in")
        .file("out/secret.txt", "outside the tree")
        .file("out/more/deep.txt", "also outside");
    let report = diff_json(source.path(), target.path(), &[]).expect_code(1).report();
    assert_eq!(
        report.differences(),
        [json!({"path": "out", "kind": "type", "source_type": "symlink", "target_type": "dir"})]
    );
}

#[test]
fn a_fifo_is_compared_by_type_and_never_opened() {
    let source = Tree::new();
    source.file("before", "b").fifo("pipe").file("sub/after", "a").fifo("sub/pipe2");
    let target = source.copy();
    let quick = Duration::from_secs(20);
    cutover(["scan"]).arg(source.path()).timeout(quick).run().expect_code(0);
    let same = cutover(["diff", "--format", "json"]).arg(source.path()).arg(target.path()).timeout(quick).run();
    same.expect_code(0);
    target.remove("pipe").file("pipe", "now a file");
    let report = cutover(["diff", "--format", "json"]).arg(source.path()).arg(target.path()).timeout(quick).run();
    assert_eq!(
        report.expect_code(1).report().differences(),
        [json!({"path": "pipe", "kind": "type", "source_type": "fifo", "target_type": "file"})]
    );
}

#[test]
fn a_missing_fifo_or_socket_is_reported_with_its_type() {
    let source = Tree::new();
    source.fifo("pipe");
    let _listener = std::os::unix::net::UnixListener::bind(source.at("sock")).unwrap();
    let target = Tree::new();
    let report = diff_json(source.path(), target.path(), &[]).expect_code(1).report();
    assert_eq!(
        report.differences(),
        [
            json!({"path": "pipe", "kind": "missing", "type": "fifo", "files": 0, "bytes": 0}),
            json!({"path": "sock", "kind": "missing", "type": "socket", "files": 0, "bytes": 0}),
        ]
    );
}

#[test]
fn names_differing_only_by_unicode_normalization_carry_a_hint_on_both_sides() {
    let (nfc, nfd) = ("caf\u{e9}.txt", "cafe\u{301}.txt");
    let source = Tree::new();
    source.file(nfc, "same bytes").file(format!("dir/{nfc}").as_str(), "x");
    let target = Tree::new();
    target.file(nfd, "same bytes").file(format!("dir/{nfd}").as_str(), "x");
    let report = diff_json(source.path(), target.path(), &[]).expect_code(1).report();
    assert_eq!(report.differences().len(), 4, "{:#}", report.0);
    for (missing, extra) in [(nfc.to_string(), nfd.to_string()), (format!("dir/{nfc}"), format!("dir/{nfd}"))] {
        assert_eq!(report.at(&missing)["kind"], "missing");
        assert_eq!(report.at(&extra)["kind"], "extra");
        let hint = report.at(&missing)["hint"].as_str().expect("a hint on the missing name");
        assert!(hint.contains("normalization"), "{hint}");
        let hint = report.at(&extra)["hint"].as_str().expect("a hint on the extra name");
        assert!(hint.contains("normalization"), "{hint}");
    }
}

#[test]
fn names_differing_only_by_case_carry_a_hint() {
    let source = Tree::new();
    source.file("README.md", "r").file("unrelated", "u");
    let target = Tree::new();
    target.file("readme.md", "r").file("other", "u");
    let report = diff_json(source.path(), target.path(), &[]).expect_code(1).report();
    let hint = report.at("README.md")["hint"].as_str().expect("a hint on README.md");
    assert!(hint.contains("readme.md") && hint.contains("case"), "{hint}");
    assert!(report.at("readme.md")["hint"].as_str().is_some_and(|h| h.contains("README.md")));
    assert!(report.at("unrelated").get("hint").is_none(), "no hint for unrelated names");
    assert!(report.at("other").get("hint").is_none());
}

#[test]
fn every_lookalike_gets_a_hint_naming_all_of_its_lookalikes() {
    let source = Tree::new();
    source.file("sub/README", "r").file("X Caf\u{e9}", "c");
    let target = Tree::new();
    target.file("sub/readme", "r").file("sub/Readme", "r").file("x Cafe\u{301}", "c");
    let report = diff_json(source.path(), target.path(), &[]).expect_code(1).report();
    let hint = |path: &str| report.at(path)["hint"].as_str().unwrap_or_else(|| panic!("no hint on {path}")).to_string();
    let both = hint("sub/README");
    assert!(
        both.contains("'sub/readme'") && both.contains("'sub/Readme'") && both.ends_with("only by letter case"),
        "{both}"
    );
    for extra in ["sub/readme", "sub/Readme"] {
        assert_eq!(hint(extra), "differs from missing 'sub/README' only by letter case");
    }
    assert!(hint("X Caf\u{e9}").ends_with("only by letter case and Unicode normalization"));
    assert!(hint("x Cafe\u{301}").starts_with("differs from missing 'X Caf\u{e9}'"));
}

#[test]
fn a_permission_change_is_a_metadata_difference_by_default_and_hidden_by_meta_none() {
    let source = Tree::new();
    source.file("script", "#!/bin/sh\n").mode("script", 0o755).dir("d").mode("d", 0o755);
    let target = source.copy();
    target.mode("script", 0o644).mode("d", 0o700);
    let report = diff_json(source.path(), target.path(), &[]).expect_code(1).report();
    assert_eq!(report.0["compared"], json!(["mode", "hardlinks", "rdev"]));
    assert_eq!(
        report.differences(),
        [
            json!({"path": "d", "kind": "metadata", "fields": ["mode"], "metadata": {"mode": {"source": "0755", "target": "0700"}}}),
            json!({"path": "script", "kind": "metadata", "fields": ["mode"], "metadata": {"mode": {"source": "0755", "target": "0644"}}}),
        ]
    );
    let hidden = diff_json(source.path(), target.path(), &["--meta", "none"]).expect_code(0).report();
    assert_eq!(hidden.0["compared"], json!(["hardlinks", "rdev"]), "not metadata: always compared");
    assert_eq!(hidden.0["identical"], true);
}

#[test]
fn a_content_change_carries_the_metadata_that_also_changed() {
    let source = Tree::new();
    source.file("f", "old").mode("f", 0o600);
    let target = source.copy();
    target.file("f", "new").mode("f", 0o640);
    let report = diff_json(source.path(), target.path(), &[]).expect_code(1).report();
    let d = report.at("f");
    assert_eq!(d["kind"], "content");
    assert_eq!(d["metadata"], json!({"mode": {"source": "0600", "target": "0640"}}));
    assert_eq!(report.summary("metadata"), 0, "counted once, as content");
}

#[test]
fn meta_mtime_finds_a_changed_modification_time_that_the_default_ignores() {
    let source = Tree::new();
    source.file("f", "same").mtime("f", 1_600_000_000, 250_000_000);
    let target = source.copy();
    target.mtime("f", 1_700_000_000, 250_000_000);
    diff_json(source.path(), target.path(), &[]).expect_code(0);
    let report = diff_json(source.path(), target.path(), &["--meta", "mtime"]).expect_code(1).report();
    assert_eq!(report.0["compared"], json!(["mtime", "hardlinks", "rdev"]));
    let d = report.at("f");
    assert_eq!(d["kind"], "metadata");
    assert_eq!(d["fields"], json!(["mtime"]));
    assert_eq!(d["metadata"]["mtime"]["source"], "2020-09-13T12:26:40.250000000Z");
    assert_eq!(d["metadata"]["mtime"]["target"], "2023-11-14T22:13:20.250000000Z");
    assert_eq!(report.differences().len(), 1, "{:#}", report.0);
}

#[test]
fn mtime_ignores_the_sub_second_part_when_one_side_has_none() {
    let source = Tree::new();
    source.file("whole-vs-fraction", "x").file("two-fractions", "y").file("next-second", "z");
    source.mtime("whole-vs-fraction", 1_600_000_000, 987_654_321).mtime("two-fractions", 1_600_000_000, 1);
    source.mtime("next-second", 1_600_000_000, 0);
    let target = source.copy();
    target.mtime("whole-vs-fraction", 1_600_000_000, 0).mtime("two-fractions", 1_600_000_000, 2);
    target.mtime("next-second", 1_600_000_001, 0);
    let report = diff_json(source.path(), target.path(), &["--meta", "mtime"]).expect_code(1).report();
    assert_eq!(
        report.kinds(),
        [("next-second".into(), "metadata".into()), ("two-fractions".into(), "metadata".into())]
    );
}

#[test]
fn meta_owner_finds_a_changed_owner() {
    if !running_as_root() {
        eprintln!("note: not root, cannot chown a fixture: owner comparison not exercised");
        return;
    }
    let source = Tree::new();
    source.file("f", "x");
    std::os::unix::fs::lchown(source.at("f"), Some(0), Some(0)).unwrap();
    let target = source.copy();
    std::os::unix::fs::lchown(target.at("f"), Some(65534), Some(65534)).unwrap();
    diff_json(source.path(), target.path(), &[]).expect_code(0);
    let report = diff_json(source.path(), target.path(), &["--meta", "owner"]).expect_code(1).report();
    assert_eq!(
        report.differences(),
        [
            json!({"path": "f", "kind": "metadata", "fields": ["owner"], "metadata": {"owner": {"source": "0:0", "target": "65534:65534"}}})
        ]
    );
    let all = diff_json(source.path(), target.path(), &["--meta", "all"]).expect_code(1).report();
    let compared = all.0["compared"].as_array().unwrap();
    for field in ["mode", "mtime", "owner"] {
        assert!(compared.contains(&json!(field)), "--meta all compares {field}: {compared:?}");
    }
}

#[test]
fn a_source_that_does_not_exist_is_trouble_naming_the_path() {
    let target = Tree::new();
    let missing = target.at("no-such-dir");
    let run = cutover(["diff"]).arg(&missing).arg(target.path()).run().expect_code(2);
    assert!(run.stderr.contains(&missing.display().to_string()), "{}", run.stderr);
    let run = cutover(["diff"]).arg(target.path()).arg(&missing).run().expect_code(2);
    assert!(run.stderr.contains(&missing.display().to_string()), "{}", run.stderr);
    let run = cutover(["scan"]).arg(&missing).run().expect_code(2);
    assert!(run.stderr.contains(&missing.display().to_string()), "{}", run.stderr);
}

/// A tired operator's two whole-tree mistakes get a hint, on standard error and in the JSON,
/// without changing the verdict: an empty side (an unmounted target looks like this), and a
/// copy made one level down (`rsync -a src dst` without the trailing slash makes `dst/src`).
#[test]
fn an_empty_side_and_a_copy_one_level_down_get_hints() {
    let source = Tree::new();
    source.file("a/x", "1").file("y", "22");
    let empty = Tree::new();
    let run = diff_json(source.path(), empty.path(), &[]).expect_code(1);
    let hints = run.json()["hints"].clone();
    assert_eq!(hints.as_array().map(Vec::len), Some(1), "{hints}");
    assert!(hints[0].as_str().unwrap().contains("empty directory"), "{hints}");
    let human = cutover(["diff"]).arg(source.path()).arg(empty.path()).run().expect_code(1);
    assert!(human.stderr.contains("cutover: hint: the target") && human.stderr.contains("mounted"), "{}", human.stderr);

    let nested = Tree::new();
    nested.file("src/a/x", "1").file("src/y", "22");
    let run = diff_json(source.path(), nested.path(), &[]).expect_code(1);
    let hints = run.json()["hints"].clone();
    assert_eq!(hints.as_array().map(Vec::len), Some(1), "{hints}");
    let text = hints[0].as_str().unwrap();
    assert!(text.contains("'src'") && text.contains("one level down"), "{text}");
    assert!(text.contains(&format!("{}/src", nested.path().display())), "{text}");
    // The independent report reader, written from docs/report.md, accepts the field.
    let saved = nested.path().with_extension("report.json");
    std::fs::write(&saved, &run.stdout).unwrap();
    let read = crate::spec::oracle::reader("report_reader.py", &[saved.as_os_str()]);
    let _ = std::fs::remove_file(&saved);
    assert!(read.status.success(), "the report reader refused hints: {}", read.stderr);

    // Not a hint: a partial copy one level down, identical trees, two empty trees.
    nested.remove("src/y");
    assert_eq!(diff_json(source.path(), nested.path(), &[]).expect_code(1).json()["hints"], json!([]));
    assert_eq!(diff_json(source.path(), source.copy().path(), &[]).expect_code(0).json()["hints"], json!([]));
    assert_eq!(diff_json(empty.path(), Tree::new().path(), &[]).expect_code(0).json()["hints"], json!([]));
    let quiet = cutover(["diff", "-q"]).arg(source.path()).arg(empty.path()).run().expect_code(1);
    assert!(!quiet.stderr.contains("hint"), "{}", quiet.stderr);
}
