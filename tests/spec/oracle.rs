//! docs/manifest.md is enough to implement the format: `tests/oracle/manifest_reader.py` was
//! written from that document alone (not from the source) by another pair of hands, and it
//! must read and fully verify what cutover writes, down to the directory hashes, and refuse
//! what cutover refuses.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::{Run, Tree, cutover, noise, run_with_timeout};

/// `python3 tests/oracle/manifest_reader.py MANIFEST`.
pub(crate) fn oracle(manifest: &Path) -> Run {
    let mut command = Command::new("python3");
    command.arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/oracle/manifest_reader.py")).arg(manifest);
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
