//! File roots are what `b3sum` prints, whatever the chunk size: checked against `b3sum` itself
//! and against BLAKE3's published test vectors.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::{Run, Tree, b3sum, cutover, noise, run_with_timeout};

/// `b3sum ARGS...` run inside `dir`.
fn run_b3sum<S: AsRef<OsStr>>(b3sum: &Path, dir: &Path, args: &[S]) -> Run {
    let mut command = Command::new(b3sum);
    command.current_dir(dir).args(args);
    run_with_timeout(command, Vec::new(), Duration::from_secs(60))
}

fn b3sum_lines_of(dir: &Path, chunk: &str) -> String {
    cutover(["scan", "--b3sum", "--chunk-size", chunk]).arg(dir).run().expect_code(0).stdout_text()
}

/// Checks `cutover scan DIR --b3sum` with `b3sum --check` run inside DIR.
fn assert_b3sum_check_accepts(tree: &Tree, b3sum: &Path) {
    let sums = cutover(["scan", "--b3sum"]).arg(tree.path()).run().expect_code(0).stdout;
    let outside = Tree::new();
    std::fs::write(outside.at("sums"), &sums).unwrap();
    let check = run_b3sum(b3sum, tree.path(), &["--check", outside.at("sums").to_str().unwrap()]);
    let shown = String::from_utf8_lossy(&check.stdout);
    assert!(check.status.success(), "b3sum --check rejected cutover's lines:\n{shown}\n{}", check.stderr);
    assert!(!shown.contains("FAILED"), "{shown}");
}

#[test]
fn b3sum_check_accepts_the_b3sum_lines_of_a_tree() {
    let Some(b3sum) = b3sum() else { return };
    let tree = Tree::new();
    tree.file("plain.txt", "plain").file("empty", "").file("sub/dir/nested.bin", noise(1, 70_000));
    tree.file("back\\slash", "backslash").file("new\nline", "newline").file("both\\and\nboth", "both");
    tree.file("sub/back\\slash\\\\twice", "x").file("with space", "s").file("-dash", "d").file("ünïcödé", "u");
    tree.file("chunk-exact", noise(2, 1 << 20)).file("chunk-plus-one", noise(3, (1 << 20) + 1));
    tree.symlink("link", "plain.txt").fifo("pipe").dir("empty-dir");
    let lines = cutover(["scan", "--b3sum"]).arg(tree.path()).run().expect_code(0).stdout;
    let count = lines.iter().filter(|&&b| b == b'\n').count();
    assert_eq!(count, 12, "one line per regular file, none for the link, the pipe or directories");
    assert_b3sum_check_accepts(&tree, &b3sum);
}

#[test]
fn a_name_b3sum_cannot_check_is_warned_about_and_exits_2() {
    let Some(b3sum) = b3sum() else { return };
    let tree = Tree::new();
    tree.file(b"bad-\xff", "not UTF-8").file("good", "fine");
    let run = cutover(["scan", "--b3sum"]).arg(tree.path()).run().expect_code(2);
    assert!(run.stderr.contains("bad-\\xff: the name is not valid UTF-8"), "{}", run.stderr);
    assert_eq!(run.stdout.iter().filter(|&&b| b == b'\n').count(), 2, "both lines still printed, as b3sum does");
    // The warning is true: b3sum itself cannot check that line.
    let outside = Tree::new();
    std::fs::write(outside.at("sums"), &run.stdout).unwrap();
    let check = run_b3sum(&b3sum, tree.path(), &["--check", outside.at("sums").to_str().unwrap()]);
    assert!(!check.status.success(), "b3sum --check accepted a U+FFFD name");
}

#[test]
fn b3sum_check_accepts_a_name_holding_a_carriage_return() {
    let Some(b3sum) = b3sum() else { return };
    let tree = Tree::new();
    tree.file("ends-with-cr\r", "b3sum escapes \\r as \\\\r").file("mid\rdle", "and here");
    assert_b3sum_check_accepts(&tree, &b3sum);
}

#[test]
fn file_roots_equal_b3sum_for_sizes_around_every_chunk_boundary() {
    let Some(b3sum) = b3sum() else { return };
    let tree = Tree::new();
    let mut names = Vec::new();
    for base in [0u64, 1024, 2048, 4096, 65_536, 1 << 20, 2 << 20] {
        for len in [base.saturating_sub(1), base, base + 1, base * 3 + 7] {
            let name = format!("len-{len:08}");
            if !names.contains(&name) {
                tree.file(name.as_str(), noise(len, len as usize));
                names.push(name);
            }
        }
    }
    let args: Vec<&str> = names.iter().map(String::as_str).collect();
    let reference = run_b3sum(&b3sum, tree.path(), &args);
    assert!(reference.status.success(), "{}", reference.stderr);
    let mut expected: Vec<String> = String::from_utf8(reference.stdout).unwrap().lines().map(String::from).collect();
    expected.sort();
    for chunk in ["1K", "4K", "64K", "1M", "1G"] {
        let mut found: Vec<String> = b3sum_lines_of(tree.path(), chunk).lines().map(String::from).collect();
        found.sort();
        assert_eq!(found, expected, "--chunk-size {chunk}");
    }
}

#[test]
fn a_name_that_is_not_utf8_is_written_as_b3sum_writes_it() {
    let Some(b3sum) = b3sum() else { return };
    let tree = Tree::new();
    tree.file(b"caf\xe9", "latin-1").file(b"back\\sl\xff", "both");
    let names = [OsStr::from_bytes(b"back\\sl\xff"), OsStr::from_bytes(b"caf\xe9")];
    let reference = run_b3sum(&b3sum, tree.path(), &names);
    assert!(reference.status.success(), "{}", reference.stderr);
    // Exit 2: b3sum writes these lines too, but cannot check them (see the test above).
    let lines = cutover(["scan", "--b3sum"]).arg(tree.path()).run().expect_code(2).stdout_text();
    assert_eq!(lines, reference.stdout_text());
}

/// BLAKE3's test-vector input: byte `i` is `i % 251`.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

#[test]
fn file_roots_match_blake3_golden_vectors() {
    // From BLAKE3's test_vectors.json (and `b3sum`), for the i % 251 input pattern.
    const GOLDEN: &[(usize, &str)] = &[
        (0, "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"),
        (1, "2d3adedff11b61f14c886e35afa036736dcd87a74d27b5c1510225d0f592e213"),
        (1023, "10108970eeda3eb932baac1428c7a2163b0e924c9a9e25b35bba72b28f70bd11"),
        (1024, "42214739f095a406f3fc83deb889744ac00df831c10daa55189b5d121c855af7"),
        (1025, "d00278ae47eb27b34faecf67b4fe263f82d5412916c1ffd97c8cb7fb814b8444"),
        (2048, "e776b6028c7cd22a4d0ba182a8bf62205d2ef576467e838ed6f2529b85fba24a"),
        (2049, "5f4d72f40d7a5f82b15ca2b2e44b1de3c2ef86c426c95c1af0b6879522563030"),
        (3 << 20, "c9e03344ea01f416e5fd2c4aa87b32f2b13e731d034be31898de3ce251926b1c"),
    ];
    let tree = Tree::new();
    for (len, _) in GOLDEN {
        tree.file(format!("v{len:08}").as_str(), pattern(*len));
    }
    let expected: String = GOLDEN.iter().map(|(len, hash)| format!("{hash}  v{len:08}\n")).collect();
    for chunk in ["1K", "1M"] {
        assert_eq!(b3sum_lines_of(tree.path(), chunk), expected, "--chunk-size {chunk}");
    }
}
