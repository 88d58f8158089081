//! For the person watching: progress lines with `--progress` off a terminal, nothing but
//! errors with `-q`, a summary that says what was checked, and messages in plain words.

use std::path::Path;

use crate::support::{Run, Tree, cutover};

/// A progress line as docs/report.md gives it: `cutover: PHASE: [done in S s: ]N ITEMS, ...`.
fn progress_lines<'a>(stderr: &'a str, phase: &str) -> Vec<&'a str> {
    stderr.lines().filter(|l| l.starts_with(&format!("cutover: {phase}: "))).collect()
}

fn pair() -> (Tree, Tree) {
    let source = Tree::new();
    source.file("a.txt", "alpha").file("d/b.bin", vec![3u8; 5000]).file("d/e/c", "c");
    let target = source.copy();
    target.file("d/b.bin", vec![4u8; 5000]).file("extra", "x");
    (source, target)
}

#[test]
fn progress_off_a_terminal_is_plain_lines_on_stderr_only_when_asked() {
    let (source, target) = pair();
    let work = Tree::new();
    // Not asked, not a terminal: nothing on stderr.
    let quiet = cutover(["diff"]).arg(source.path()).arg(target.path()).run().expect_code(1);
    assert_eq!(quiet.stderr, "");
    let plan = work.at("plan");
    let runs: [(&str, Run); 4] = [
        ("scanning", cutover(["scan", "--progress"]).arg(source.path()).run().expect_code(0)),
        ("scanning", cutover(["diff", "--progress"]).arg(source.path()).arg(target.path()).run().expect_code(1)),
        (
            "scanning",
            cutover(["plan", "--progress", "--delete", "-o"]).arg(&plan).arg(source.path()).arg(target.path()).run(),
        ),
        ("applying", cutover(["--progress", "apply"]).arg(&plan).run().expect_code(0)),
    ];
    for (phase, run) in &runs {
        let lines = progress_lines(&run.stderr, phase);
        assert!(!lines.is_empty(), "no {phase} line: {}", run.stderr);
        // The last line of a phase says it is done, with counts, size and rate.
        let last = lines.last().unwrap();
        assert!(last.contains(": done in ") && last.contains("/s"), "{last}");
        // Plain lines: no carriage return, no terminal escape.
        assert!(!run.stderr.contains('\r') && !run.stderr.contains('\x1b'), "{:?}", run.stderr);
    }
    // Both trees were scanned: 3 files on each side, 3 directories on each.
    let diff_line = progress_lines(&runs[1].1.stderr, "scanning").last().unwrap().to_string();
    assert!(diff_line.contains(": 7 files, 6 directories, "), "{diff_line}");
    // Applying counts operations.
    let applied = progress_lines(&runs[3].1.stderr, "applying").last().unwrap().to_string();
    assert!(applied.contains(" operations, "), "{applied}");
}

#[test]
fn quiet_silences_everything_but_errors_on_every_command() {
    let (source, target) = pair();
    let work = Tree::new();
    let plan = work.at("plan");
    let bundle = work.at("bundle");
    let runs = [
        cutover(["scan", "-q"]).arg(source.path()).run().expect_code(0),
        cutover(["diff", "-q"]).arg(source.path()).arg(target.path()).run().expect_code(1),
        // --max-delete 0 would warn that removals will be held.
        cutover(["plan", "-q", "--delete", "--max-delete", "0", "-o"])
            .arg(&plan)
            .arg(source.path())
            .arg(target.path())
            .run()
            .expect_code(1),
        cutover(["plan", "-q", "--delete"]).arg(source.path()).arg(target.path()).run().expect_code(1),
        cutover(["bundle", "-q", "-o"]).arg(&bundle).arg(&plan).run().expect_code(0),
        cutover(["apply", "-q", "--dry-run"]).arg(&plan).run().expect_code(1),
        cutover(["-q", "apply"]).arg(&plan).run().expect_code(0),
        cutover(["repair", "--quiet"]).arg(source.path()).arg(target.path()).run().expect_code(0),
    ];
    for run in &runs {
        assert!(run.stdout.is_empty() && run.stderr.is_empty(), "{}\n{}", run.stdout_text(), run.stderr);
    }
    assert!(std::fs::metadata(&bundle).is_ok(), "files asked for are still written");
    // An error is still said.
    let failed = cutover(["apply", "-q"]).arg(work.at("no-such-plan")).run().expect_code(2);
    assert!(failed.stderr.contains("no-such-plan"), "{}", failed.stderr);
    // -q and --progress contradict each other.
    cutover(["scan", "-q", "--progress"]).arg(source.path()).run().expect_code(2);
}

/// Counts of the tree from outside cutover: regular files, their bytes, directories.
fn counted_by_walking(root: &Path) -> (u64, u64, u64) {
    let (mut files, mut bytes, mut dirs) = (0, 0, 1);
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let meta = std::fs::symlink_metadata(entry.path()).unwrap();
            if meta.is_dir() {
                dirs += 1;
                stack.push(entry.path());
            } else if meta.is_file() {
                files += 1;
                bytes += meta.len();
            }
        }
    }
    (files, bytes, dirs)
}

#[test]
fn the_identical_line_says_how_many_files_bytes_and_directories_were_compared_and_json_agrees() {
    let source = Tree::new();
    for i in 0..1001 {
        source.file(&format!("d{}/f{i}", i % 7), vec![1u8; i % 2]);
    }
    source.symlink("d0/link", "f0");
    let target = source.copy();
    let (files, bytes, dirs) = counted_by_walking(source.path());
    assert_eq!((files, dirs), (1001, 8));
    let run = cutover(["diff"]).arg(source.path()).arg(target.path()).run().expect_code(0);
    let line = run.stdout_text();
    let expected = format!(
        "identical: 1,001 files, {bytes} B in 8 directories compared (names, kinds, content, mode, hardlinks, rdev; not compared: mtime, owner, xattr); root "
    );
    assert!(line.starts_with(&expected), "{line}\nexpected: {expected}");
    let json = cutover(["diff", "--format", "json"]).arg(source.path()).arg(target.path()).run().expect_code(0).json();
    assert_eq!(json["checked"]["files"], files);
    assert_eq!(json["checked"]["bytes"], bytes);
    assert_eq!(json["checked"]["directories"], dirs);
    assert_eq!(json["checked"]["entries"], files + dirs + 1);
    // One file and one directory: singular words.
    let small = Tree::new();
    small.file("only", "1");
    let run = cutover(["diff"]).arg(small.path()).arg(small.path()).run().expect_code(0);
    assert!(run.stdout_text().starts_with("identical: 1 file, 1 B in 1 directory compared ("), "{}", run.stdout_text());
}

/// A file given where another is wanted is named as what it is.
#[test]
fn a_file_given_in_another_s_place_is_named() {
    let (source, target) = pair();
    let work = Tree::new();
    let (plan, manifest, bundle, record) =
        (work.at("plan"), work.at("manifest"), work.at("bundle"), work.at("run.json"));
    cutover(["plan", "-o"]).arg(&plan).arg(source.path()).arg(target.path()).run().expect_code(1);
    cutover(["scan", "-o"]).arg(&manifest).arg(source.path()).run().expect_code(0);
    cutover(["bundle", "-o"]).arg(&bundle).arg(&plan).run().expect_code(0);
    cutover(["scan", "--report"]).arg(&record).arg(source.path()).run().expect_code(0);
    let said = |run: Run| run.expect_code(2).stderr;
    let cases: Vec<(String, &[&str])> = vec![
        (said(cutover(["apply"]).arg(&manifest).run()), &["this is a manifest", "apply wants a plan"]),
        (said(cutover(["apply"]).arg(source.path()).run()), &["this is a directory", "apply wants a plan"]),
        (said(cutover(["apply"]).arg(&bundle).run()), &["this is a bundle", "apply wants a plan", "--bundle"]),
        (said(cutover(["apply"]).arg(&record).run()), &["this is a run record", "apply wants a plan"]),
        (
            said(cutover(["apply", "--bundle"]).arg(&plan).arg(&plan).run()),
            &["this is a repair plan", "--bundle wants a bundle"],
        ),
        (
            said(cutover(["apply", "--bundle"]).arg(source.path()).arg(&plan).run()),
            &["this is a directory", "--bundle wants a bundle", "--source DIR"],
        ),
        (
            said(cutover(["diff"]).arg(&plan).arg(target.path()).run()),
            &["this is a repair plan", "diff wants a directory or a manifest"],
        ),
        (
            said(cutover(["diff"]).arg(source.path()).arg(&bundle).run()),
            &["this is a bundle", "diff wants a directory or a manifest"],
        ),
        (
            said(cutover(["plan"]).arg(&record).arg(target.path()).run()),
            &["this is a run record", "plan wants a directory or a manifest"],
        ),
        (said(cutover(["bundle", "-o", "-"]).arg(&manifest).run()), &["this is a manifest", "bundle wants a plan"]),
    ];
    for (stderr, words) in cases {
        for word in words {
            assert!(stderr.contains(word), "{word:?} not in {stderr}");
        }
        assert!(!stderr.contains("Is a directory") && !stderr.contains("trailing characters"), "{stderr}");
    }
}

/// Right plurals and no Rust names, in the runs that say "1" of something.
#[test]
fn one_of_something_is_said_in_the_singular_and_no_rust_name_shows() {
    let source = Tree::new();
    source.file("keep", "k").file("new", "n");
    let target = Tree::new();
    target.file("keep", "k").file("old", "o");
    let work = Tree::new();
    let plan = work.at("plan");
    let mut said = String::new();
    let mut add = |run: Run| said.push_str(&format!("{}{}", run.stdout_text(), run.stderr));
    add(cutover(["scan"]).arg(Tree::new().path()).run().expect_code(0));
    add(cutover(["diff"]).arg(source.path()).arg(Tree::new().file("keep", "k").path()).run().expect_code(1));
    add(cutover(["plan", "--delete", "--max-delete", "0", "-o"])
        .arg(&plan)
        .arg(source.path())
        .arg(target.path())
        .run());
    add(cutover(["apply", "--dry-run"]).arg(&plan).run().expect_code(1));
    add(cutover(["bundle", "-o"]).arg(work.at("b")).arg(&plan).run().expect_code(0));
    add(cutover(["apply"]).arg(&plan).run().expect_code(0));
    // Extras stay without --delete: one difference remains.
    let extra = Tree::new();
    extra.file("keep", "k").file("old", "o");
    add(cutover(["repair"]).arg(source.path()).arg(extra.path()).run().expect_code(1));
    for needed in ["1 entry,", "1 difference:", "1 difference remains", ", 1 entry, ", "1 entry (1 B) deleted"] {
        assert!(said.contains(needed), "{needed:?} not in:\n{said}");
    }
    let wrong = ["1 entries", "1 differences", "1 files", "1 operations", "1 directories", "1 ranges"];
    for bad in wrong {
        assert!(!said.contains(bad), "{bad:?} in:\n{said}");
    }
    for rust in ["Some(", "None", "Os {", "File {", " { ", "Kind::", "Dir)", "[\""] {
        assert!(!said.contains(rust), "{rust:?} in:\n{said}");
    }
}

/// On a terminal (a pty made by `script`), progress is the line that redraws itself and is
/// cleared at the end, never the plain lines meant for logs; `-q` leaves the terminal empty.
#[test]
fn on_a_terminal_progress_clears_itself_and_quiet_prints_nothing() {
    let (source, _) = pair();
    let on_a_pty = |args: &str| {
        let command = format!("{} {args} {}", env!("CARGO_BIN_EXE_cutover"), source.path().display());
        let out = std::process::Command::new("script")
            .args(["-qec", &command, "/dev/null"])
            .env("CUTOVER_STATE_DIR", crate::support::test_state_dir())
            .stdin(std::process::Stdio::null())
            .output()
            .expect("script (util-linux) runs");
        (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let (code, shown) = on_a_pty("scan --progress");
    assert_eq!(code, Some(0), "{shown}");
    assert!(!shown.contains("done in"), "plain progress lines on a terminal: {shown:?}");
    assert!(shown.contains("3 files"), "{shown:?}");
    let (code, quiet) = on_a_pty("scan -q");
    assert_eq!((code, quiet.as_str()), (Some(0), ""));
}
