//! Paths are bytes: any name a filesystem allows is reported so that it can be found again.

use base64::Engine as _;
use serde_json::json;

use crate::support::{Tree, cutover, diff_json};

fn decode(b64: &serde_json::Value) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(b64.as_str().expect("path_bytes is a string")).unwrap()
}

#[test]
fn non_utf8_symlink_targets_come_with_their_exact_bytes() {
    use std::os::unix::ffi::OsStrExt;
    let source = Tree::new();
    source.symlink("bad", std::ffi::OsStr::from_bytes(b"t\xff")).symlink("good", "plain");
    let target = Tree::new();
    target.symlink("bad", std::ffi::OsStr::from_bytes(b"u\xff")).symlink("good", "other");
    let report = diff_json(source.path(), target.path(), &[]).expect_code(1).report();
    let bad = &report.at("bad")["link"];
    assert_eq!((decode(&bad["source_bytes"]), decode(&bad["target_bytes"])), (b"t\xff".to_vec(), b"u\xff".to_vec()));
    assert_eq!(bad["source"], "t\u{fffd}");
    let good = &report.at("good")["link"];
    assert_eq!(*good, json!({"source": "plain", "target": "other"}), "no _bytes for UTF-8 targets");
}

#[test]
fn non_utf8_names_round_trip_exactly_through_path_bytes() {
    let source = Tree::new();
    source.file(b"caf\xe9.txt", "latin-1 name").file(b"dir-\xff\xfe/inner", "in a non-UTF-8 dir");
    source.file(b"ok/bad-\x80", "x").file("plain.txt", "p");
    let target = source.copy();
    target.file(b"caf\xe9.txt", "changed!").remove(b"dir-\xff\xfe").remove(b"ok/bad-\x80").file("plain.txt", "q");
    let report = diff_json(source.path(), target.path(), &[]).expect_code(1).report();
    let mut found: Vec<(Vec<u8>, String)> = Vec::new();
    for d in report.differences() {
        let path = d["path"].as_str().unwrap();
        let exact = match d.get("path_bytes") {
            Some(b64) => {
                let exact = decode(b64);
                assert!(std::str::from_utf8(&exact).is_err(), "path_bytes only for non-UTF-8 names: {d:#}");
                assert_eq!(path, String::from_utf8_lossy(&exact), "path is the lossy form of path_bytes");
                exact
            }
            None => path.as_bytes().to_vec(),
        };
        assert!(std::fs::symlink_metadata(source.at(&exact)).is_ok(), "{path:?} must name a real source entry");
        found.push((exact, d["kind"].as_str().unwrap().to_string()));
    }
    found.sort();
    let expected: Vec<(Vec<u8>, String)> = vec![
        (b"caf\xe9.txt".to_vec(), "content".into()),
        (b"dir-\xff\xfe".to_vec(), "missing".into()),
        (b"ok/bad-\x80".to_vec(), "missing".into()),
        (b"plain.txt".to_vec(), "content".into()),
    ];
    assert_eq!(found, expected);
}

#[test]
fn names_with_newlines_spaces_tabs_backslashes_and_leading_dashes_are_reported_verbatim() {
    let names =
        ["new\nline", " leading space", "trailing space ", "-rf", "--help", "tab\there", "back\\slash", "*?[glob]"];
    let source = Tree::new();
    for (i, name) in names.iter().enumerate() {
        source.file(name, format!("content {i}"));
        source.file(format!("sub dir/{name}").as_str(), "nested");
    }
    let target = source.copy();
    for (i, name) in names.iter().enumerate() {
        target.file(name, format!("CONTENT {i}"));
    }
    target.remove("sub dir/-rf");
    let report = diff_json(source.path(), target.path(), &[]).expect_code(1).report();
    let mut expected: Vec<(String, String)> = names.iter().map(|n| (n.to_string(), "content".to_string())).collect();
    expected.push(("sub dir/-rf".into(), "missing".into()));
    expected.sort();
    let mut found = report.kinds();
    found.sort();
    assert_eq!(found, expected);
    assert!(report.differences().iter().all(|d| d.get("path_bytes").is_none()), "all names are UTF-8");
}

#[test]
fn a_name_with_a_newline_cannot_forge_a_line_of_human_output() {
    let source = Tree::new();
    source.file("evil\nidentical", "a").file("fine", "b");
    let target = source.copy();
    target.file("evil\nidentical", "A").file("fine", "B");
    let run = cutover(["diff"]).arg(source.path()).arg(target.path()).run().expect_code(1);
    let text = run.stdout_text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "two differences and a summary:\n{text}");
    assert!(lines.iter().all(|l| !l.starts_with("identical")), "{text}");
    assert!(lines[0].contains("evil\\nidentical"), "the newline is escaped: {text}");
}

#[test]
fn a_lookalike_hint_or_an_xattr_name_cannot_forge_a_line_of_human_output_either() {
    let source = Tree::new();
    source.file("X\nidentical Caf\u{e9}", "1").file("f", "x");
    let target = Tree::new();
    target.file("x\nidentical Cafe\u{301}", "1").file("f", "x");
    let forged = "user.x\nidentical";
    let with_xattr = rustix::fs::lsetxattr(target.at("f"), forged, b"1", rustix::fs::XattrFlags::empty()).is_ok();
    let run = cutover(["diff", "--meta", "mode,xattr"]).arg(source.path()).arg(target.path()).run().expect_code(1);
    let text = run.stdout_text();
    let lines: Vec<&str> = text.lines().collect();
    let differences = if with_xattr { 3 } else { 2 };
    assert_eq!(lines.len(), differences + 1, "{differences} differences and a summary:\n{text}");
    assert!(lines.iter().all(|l| !l.starts_with("identical")), "{text}");
    assert!(lines[0].contains("hint: differs from extra 'x\\nidentical"), "{text}");
}

#[test]
fn a_24_level_deep_path_is_named_in_full() {
    let deep: String = (0..24).map(|i| format!("level{i:02}")).collect::<Vec<_>>().join("/");
    let file = format!("{deep}/leaf.txt");
    let source = Tree::new();
    source.file(file.as_str(), "deep").file(format!("{deep}/gone").as_str(), "gone");
    let target = source.copy();
    target.file(file.as_str(), "DEEP").remove(format!("{deep}/gone").as_str());
    target.file(format!("{deep}/new").as_str(), "new");
    let report = diff_json(source.path(), target.path(), &[]).expect_code(1).report();
    assert_eq!(
        report.kinds(),
        [
            (format!("{deep}/gone"), "missing".into()),
            (file.clone(), "content".into()),
            (format!("{deep}/new"), "extra".into())
        ]
    );
    assert_eq!(report.at(&file)["ranges"], json!([{"offset": 0, "length": 4}]));
}

#[test]
fn names_sorting_around_the_path_separator_pair_up_correctly() {
    let source = Tree::new();
    for name in ["a", "a!", "a-b", "a.b", "a0", "a b", "a\u{1}"] {
        source.file(format!("{name}/inner").as_str(), name).file(format!("{name}.file").as_str(), name);
    }
    source.file("a/z/deep", "deep");
    let target = source.copy();
    target.file("a/z/deep", "DEEP").remove("a.b/inner").file("a-b/new", "new");
    let expected = [
        ("a-b/new".to_string(), "extra".to_string()),
        ("a.b/inner".into(), "missing".into()),
        ("a/z/deep".into(), "content".into()),
    ];
    let work = Tree::new();
    let manifest = work.at("m");
    cutover(["scan", "-o"]).arg(&manifest).arg(source.path()).run().expect_code(0);
    for side in [source.path(), manifest.as_path()] {
        let mut found = diff_json(side, target.path(), &[]).expect_code(1).report().kinds();
        found.sort();
        assert_eq!(found, expected);
    }
}

#[test]
fn a_tree_reached_through_a_symlink_is_scanned_as_the_directory() {
    let real = Tree::new();
    real.file("f", "x").symlink("inner-link", "f");
    let links = Tree::new();
    links.symlink("to-real", real.path());
    let copy = real.copy();
    diff_json(&links.at("to-real"), copy.path(), &[]).expect_code(0);
}
