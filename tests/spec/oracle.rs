//! The docs are enough to implement the formats: the readers in `tests/oracle/` were written
//! from docs/manifest.md, docs/plan.md and docs/report.md alone (not from the source) by
//! another pair of hands. They must read and fully verify what cutover writes (manifests down
//! to the directory hashes, plans down to their checksum, bundles down to every chunk's
//! chaining value), and refuse what cutover refuses.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::{Run, Tree, cutover, noise, run_with_timeout};

/// `python3 tests/oracle/manifest_reader.py MANIFEST`.
pub(crate) fn oracle(manifest: &Path) -> Run {
    reader("manifest_reader.py", &[manifest.as_os_str()])
}

/// `python3 tests/oracle/plan_reader.py PLAN`.
pub(crate) fn plan_reader(plan: &Path) -> Run {
    reader("plan_reader.py", &[plan.as_os_str()])
}

/// `python3 tests/oracle/READER ARGS...`.
pub(crate) fn reader(name: &str, args: &[&std::ffi::OsStr]) -> Run {
    let mut command = Command::new("python3");
    command.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oracle").join(name)).args(args);
    run_with_timeout(command, Vec::new(), Duration::from_secs(120))
}

/// The reader's path column back to bytes: it writes `\xNN` for bytes that are not printable
/// UTF-8, and for the backslash.
fn unescape(shown: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = shown;
    while let Some(at) = rest.find("\\x") {
        out.extend_from_slice(&rest.as_bytes()[..at]);
        out.push(u8::from_str_radix(&rest[at + 2..at + 4], 16).unwrap());
        rest = &rest[at + 4..];
    }
    out.extend_from_slice(rest.as_bytes());
    out
}

#[test]
fn an_independent_reader_written_from_the_docs_verifies_cutovers_manifests() {
    let tree = Tree::new();
    tree.file("empty", "").file("small.txt", "hello\n").file("one-chunk", noise(1, 1024));
    tree.file("chunks/plus-one", noise(2, 4 * 1024 + 1)).file("chunks/many", noise(3, 37 * 1024 + 500));
    tree.file(b"caf\xe9", "latin-1").file("new\nline\\back", "odd").file("d/e/f/g/deep", "deep");
    tree.symlink("link", "small.txt").symlink("dangling", "/nowhere").fifo("pipe").dir("empty-dir");
    tree.file("exec", "#!/bin/sh\n").mode("exec", 0o4750).mode("d/e", 0o700);
    let work = Tree::new();
    let manifest = work.at("m");
    let scan = cutover(["scan", "--chunk-size", "1K", "-o"]).arg(&manifest).arg(tree.path()).run().expect_code(0);
    let root = scan.stdout_text().split_whitespace().next().unwrap().to_string();

    let read = oracle(&manifest);
    assert!(read.status.success(), "the reader refused cutover's manifest: {}", read.stderr);
    let text = String::from_utf8(read.stdout).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.pop(), Some(format!("root {root}").as_str()), "the reader's root is the one cutover printed");
    let mut seen = BTreeMap::new();
    for line in lines {
        let [kind, size, mode, digest, path] = line.splitn(5, '\t').collect::<Vec<_>>()[..] else {
            panic!("five columns expected: {line:?}")
        };
        seen.insert(
            unescape(path),
            (kind.to_string(), size.parse::<u64>().unwrap(), mode.to_string(), digest.to_string()),
        );
    }
    let expected_paths = 19;
    assert_eq!(seen.len(), expected_paths, "{seen:#?}");
    for (path, (kind, size, mode, digest)) in &seen {
        let on_disk = std::fs::symlink_metadata(tree.at(path)).unwrap();
        assert_eq!(*mode, format!("{:04o}", on_disk.mode() & 0o7777), "{path:?}");
        if kind == "file" {
            let bytes = std::fs::read(tree.at(path)).unwrap();
            assert_eq!(*size, bytes.len() as u64);
            assert_eq!(*digest, blake3::hash(&bytes).to_hex().as_str(), "{path:?}: the file's BLAKE3");
        }
        let expected_kind = match on_disk.file_type() {
            t if t.is_file() => "file",
            t if t.is_dir() => "dir",
            t if t.is_symlink() => "symlink",
            _ => "fifo",
        };
        assert_eq!(kind, expected_kind, "{path:?}");
    }

    // And it refuses what cutover refuses: a flipped byte, a cut.
    let bytes = std::fs::read(&manifest).unwrap();
    for (name, damaged) in [
        ("cut", bytes[..bytes.len() - 40].to_vec()),
        ("flip", {
            let mut b = bytes.clone();
            b[bytes.len() / 2] ^= 0x10;
            b
        }),
    ] {
        let path = work.at(name);
        std::fs::write(&path, damaged).unwrap();
        assert_eq!(oracle(&path).status.code(), Some(2), "{name}");
        cutover(["diff", "-q"]).arg(&path).arg(tree.path()).run().expect_code(2);
    }
}

#[test]
fn independent_readers_accept_cutovers_plans_bundles_and_reports_and_refuse_tampering() {
    let source = Tree::new();
    source.file("same", "s").file("changed.bin", noise(4, 20 * 1024 + 3)).file("gone/deep/file", "g");
    source.file(b"caf\xe9", "latin-1").symlink("link", "same").dir("empty").file("swap", "file here");
    let target = source.copy();
    target.patch("changed.bin", 9000, b"!").remove("gone").file("extra/x", "x").mode("same", 0o600);
    target.remove("swap").dir("swap").file(b"caf\xe9", "other").remove("link").symlink("link", "elsewhere");
    let work = Tree::new();
    let (plan, bundle) = (work.at("plan.json"), work.at("bundle"));
    let base = ["--chunk-size", "4K"];
    cutover(["plan", "--delete"])
        .args(base)
        .arg(source.path())
        .arg(target.path())
        .arg("-o")
        .arg(&plan)
        .run()
        .expect_code(1);
    cutover(["bundle"]).arg(&plan).arg("-o").arg(&bundle).run().expect_code(0);
    let read = reader("plan_reader.py", &[plan.as_os_str(), bundle.as_os_str()]);
    assert!(read.status.success(), "the plan reader refused: {}", read.stderr);
    let text = read.stdout_text();
    let operations: serde_json::Value = serde_json::from_slice(&std::fs::read(&plan).unwrap()).unwrap();
    let count = operations["operations"].as_array().unwrap().len();
    assert_eq!(text.lines().count(), count + 1, "one line per operation, then ok:\n{text}");
    assert_eq!(text.lines().last(), Some("ok"));

    for (format, flag) in [("json", None), ("jsonl", Some("--jsonl"))] {
        let run = cutover(["diff", "--meta", "all", "--format", format])
            .args(base)
            .arg(source.path())
            .arg(target.path())
            .run();
        let report = work.at(&format!("report.{format}"));
        std::fs::write(&report, &run.expect_code(1).stdout).unwrap();
        let mut args = vec![report.as_os_str()];
        args.extend(flag.map(std::ffi::OsStr::new));
        let read = reader("report_reader.py", &args);
        assert!(read.status.success(), "the report reader refused the {format} report: {}", read.stderr);
        assert!(read.stdout_text().starts_with("ok "), "{}", read.stdout_text());
    }

    // Tampering: a plan edited without its checksum, a bundle with a flipped byte.
    let mut doc = operations.clone();
    doc["operations"][0]["path"] = "elsewhere".into();
    let edited = work.at("edited.json");
    std::fs::write(&edited, serde_json::to_vec(&doc).unwrap()).unwrap();
    assert_eq!(reader("plan_reader.py", &[edited.as_os_str()]).status.code(), Some(2));
    cutover(["apply", "--dry-run"]).arg(&edited).run().expect_code(2);
    let mut bytes = std::fs::read(&bundle).unwrap();
    let last_data = bytes.len() - 20;
    bytes[last_data] ^= 1;
    let flipped = work.at("flipped");
    std::fs::write(&flipped, bytes).unwrap();
    assert_eq!(reader("plan_reader.py", &[plan.as_os_str(), flipped.as_os_str()]).status.code(), Some(2));
}

/// `python3 tests/oracle/run_record_reader.py RECORD...`.
pub(crate) fn run_record_reader(records: &[std::path::PathBuf]) -> Run {
    let args: Vec<&std::ffi::OsStr> = records.iter().map(|p| p.as_os_str()).collect();
    reader("run_record_reader.py", &args)
}

#[test]
fn the_run_record_reader_written_from_the_docs_accepts_every_kind_of_run_and_refuses_a_forged_one() {
    let source = Tree::new();
    source.file("a", "alpha").file("d/b", noise(1, 5000)).file("d/c", "c").symlink("l", "a");
    let target = Tree::new();
    target.file("a", "alpha").file("d/b", noise(2, 5000)).file("old/x", "x").file("old/y", "y");
    let work = Tree::new();
    let record = |name: &str| work.at(&format!("{name}.json"));
    let plan = work.at("plan");
    let state = work.at("state");
    let mut records = Vec::new();
    let mut keep = |name: &str, run: Run, code: i32| {
        run.expect_code(code);
        records.push(record(name));
    };
    let report = |name: &str| vec!["--report".to_string(), record(name).display().to_string()];
    keep("scan", cutover(["scan"]).args(report("scan")).arg(source.path()).run(), 0);
    let cache = work.at("cache");
    keep("scan-cache", cutover(["scan", "--cache"]).arg(&cache).args(report("scan-cache")).arg(source.path()).run(), 0);
    keep(
        "scan-cached",
        cutover(["scan", "--cache"]).arg(&cache).args(report("scan-cached")).arg(source.path()).run(),
        0,
    );
    keep("diff", cutover(["diff"]).args(report("diff")).arg(source.path()).arg(target.path()).run(), 1);
    keep("diff-same", cutover(["diff"]).args(report("diff-same")).arg(source.path()).arg(source.path()).run(), 0);
    let stated = cutover(["diff", "--state"]).arg(&state).args(report("diff-state"));
    keep("diff-state", stated.arg(source.path()).arg(target.path()).run(), 1);
    let planned = cutover(["plan", "--delete", "-o"]).arg(&plan).args(report("plan"));
    keep("plan", planned.arg(source.path()).arg(target.path()).run(), 1);
    keep("apply-dry", cutover(["apply", "--dry-run"]).args(report("apply-dry")).arg(&plan).run(), 1);
    keep("apply-held", cutover(["apply", "--max-delete", "1"]).args(report("apply-held")).arg(&plan).run(), 25);
    keep("apply", cutover(["apply"]).args(report("apply")).arg(&plan).run(), 0);
    target.file("d/b", "changed again").file("extra", "e");
    keep("repair", cutover(["repair"]).args(report("repair")).arg(source.path()).arg(target.path()).run(), 1);
    keep(
        "repair-delete",
        cutover(["repair", "--delete"]).args(report("repair-delete")).arg(source.path()).arg(target.path()).run(),
        0,
    );
    keep("failed", cutover(["diff"]).args(report("failed")).arg(work.at("nowhere")).arg(source.path()).run(), 2);
    keep("apply-failed", cutover(["apply"]).args(report("apply-failed")).arg(work.at("no-plan")).run(), 2);
    let read = run_record_reader(&records);
    assert!(read.status.success(), "{}{}", read.stdout_text(), read.stderr);
    assert_eq!(read.stdout_text().lines().count(), records.len(), "{}", read.stdout_text());
    assert!(read.stdout_text().contains("ok apply 25\n") && read.stdout_text().contains("ok repair 1\n"));

    // The reader is no rubber stamp: each forgery is refused.
    let original: serde_json::Value = serde_json::from_slice(&std::fs::read(record("diff")).unwrap()).unwrap();
    type Forgery = fn(&mut serde_json::Value);
    let forgeries: [(&str, Forgery); 5] = [
        ("outcome", |doc| doc["outcome"] = "ok".into()),
        ("total", |doc| doc["differences"]["total"] = 0.into()),
        ("matched", |doc| doc["checked"]["matched"]["files"] = 1_000_000.into()),
        ("success", |doc| doc["success"] = false.into()),
        ("compared", |doc| doc["compared"] = serde_json::json!(["mode", "names"])),
    ];
    for (what, forge) in forgeries {
        let mut doc = original.clone();
        forge(&mut doc);
        let forged = work.at(&format!("forged-{what}.json"));
        std::fs::write(&forged, doc.to_string()).unwrap();
        let read = run_record_reader(&[forged]);
        assert_eq!(read.status.code(), Some(2), "{what}: {}", read.stdout_text());
    }
}
