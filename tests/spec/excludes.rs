//! `--exclude`: what rsync was told to leave out of a copy, cutover leaves out of the proof,
//! with rsync's own reading of the patterns as the judge.

use std::collections::BTreeSet;

use crate::spec::oracle::oracle;
use crate::spec::properties::rsync_paths_with;
use crate::support::{Mounted, Tree, cutover, diff_json, noise};

/// A source with something for every kind of pattern, and a target that differs from it
/// both inside and outside what the patterns leave out.
fn trees() -> (Tree, Tree) {
    let source = Tree::new();
    source.file("a.txt", "a").file("x.tmp", "t").file("sub/y.tmp", "t").file("sub/keep", "k");
    source
        .file("cache/x.db", "db")
        .file("app/cache/y.db", "db")
        .file("appcache/z.db", "db")
        .file("cache/sub/deep.db", "d");
    source
        .file("build/out", "o")
        .file("src/build/keep", "k")
        .file("tmp/in-dir", "d")
        .file("docs/tmp", "file named tmp");
    source.file("logs/2026/a.log", "l").file("file7", "7").file("filex", "x").file("big", noise(1, 9000));
    source.file("node_modules/pkg/index.js", "n").file("app/node_modules/x", "n").file("kept/inside", "k");
    source.file("back\\slash", "b").file("x7", "7").file("xy", "y").file("docs/kept", "a file named kept");
    let target = source.copy();
    // Differences in excluded places: never reported, never touched.
    target.file("x.tmp", "changed").remove("sub/y.tmp").file("new.tmp", "extra").file("cache/x.db", "changed");
    // An extra directory holding an excluded file: rsync --delete empties it of the rest only.
    target.file("gone/deep/keep.tmp", "excluded").file("gone/x", "extra").file("gone/deep/y", "extra");
    target.file("build/out", "changed").file("tmp/in-dir", "changed").file("logs/2026/a.log", "changed");
    target.file("file7", "changed").file("node_modules/pkg/index.js", "changed").remove("app/node_modules");
    target.remove("kept").file("back\\slash", "changed").file("x7", "changed").file("docs/kept", "changed");
    // Differences outside them: always reported.
    target.file("a.txt", "A").file("appcache/z.db", "changed").file("src/build/keep", "changed");
    target.file("docs/tmp", "changed").patch("big", 5000, b"!").file("filex", "changed").file("cache/sub/deep.db", "D");
    (source, target)
}

const PATTERNS: [&str; 10] = [
    "*.tmp",
    "cache/*.db",
    "/build",
    "tmp/",
    "logs/**.log",
    "file[0-9]",
    "**/node_modules",
    "kept/***",
    "x[[:digit:]]",
    "back\\slash",
];

fn reported(run: &crate::support::Run) -> BTreeSet<String> {
    run.report().differences().iter().map(|d| d["path"].as_str().unwrap().to_string()).collect()
}

#[test]
fn excluded_paths_are_left_out_exactly_as_rsync_leaves_them_out() {
    let (source, target) = trees();
    let mut args = Vec::new();
    for pattern in PATTERNS {
        args.extend(["--exclude", pattern]);
    }
    let rsync_args: Vec<String> = PATTERNS.iter().map(|p| format!("--exclude={p}")).collect();
    let rsync_args: Vec<&str> = rsync_args.iter().map(String::as_str).collect();
    let expected = rsync_paths_with(source.path(), target.path(), &rsync_args);
    assert_eq!(
        expected,
        [
            "a.txt",
            "appcache/z.db",
            "big",
            "cache/sub/deep.db",
            "docs/kept",
            "docs/tmp",
            "filex",
            "gone/deep/y",
            "gone/x",
            "src/build/keep"
        ]
        .map(String::from)
        .into(),
        "the fixture: what rsync still sees"
    );
    let run = diff_json(source.path(), target.path(), &args).expect_code(1);
    assert_eq!(reported(&run), expected);
    // Each pattern on its own, too.
    for pattern in PATTERNS {
        let expected = rsync_paths_with(source.path(), target.path(), &[&format!("--exclude={pattern}")]);
        let run = diff_json(source.path(), target.path(), &["--exclude", pattern]);
        assert_eq!(reported(&run), expected, "--exclude {pattern}");
    }
}

#[test]
fn a_manifest_keeps_its_patterns_and_a_directory_compared_with_it_is_scanned_with_them() {
    let (source, target) = trees();
    let work = Tree::new();
    let list = work.at("excludes");
    std::fs::write(&list, format!("# what the copy left out\n\n{}\n", PATTERNS.join("\n"))).unwrap();
    let manifest = work.at("source.manifest");
    cutover(["scan", "--exclude-from"]).arg(&list).arg(source.path()).arg("-o").arg(&manifest).run().expect_code(0);
    let independent = oracle(&manifest);
    assert!(independent.status.success(), "the reader from the docs: {}", independent.stderr);
    let with_dir = diff_json(&manifest, target.path(), &[]).expect_code(1);
    let both_dirs = diff_json(source.path(), target.path(), &["--exclude-from", list.to_str().unwrap()]);
    assert_eq!(reported(&with_dir), reported(&both_dirs.expect_code(1)));
    assert!(!reported(&with_dir).contains("x.tmp"));

    // Two scans with different patterns would call everything one left out missing: refused.
    let other = work.at("target.manifest");
    cutover(["scan", "--exclude", "*.tmp"]).arg(target.path()).arg("-o").arg(&other).run().expect_code(0);
    let run = cutover(["diff"]).arg(&manifest).arg(&other).run().expect_code(2);
    assert!(run.stderr.contains("different excludes"), "{}", run.stderr);
    let run = cutover(["diff", "--exclude", "*.log"]).arg(&manifest).arg(target.path()).run().expect_code(2);
    assert!(run.stderr.contains("different excludes"), "{}", run.stderr);
    // From standard input, read once (a pipe cannot be read twice), with rsync's comments.
    let piped = format!("; rsync's other comment\n{}\n", PATTERNS.join("\n")).into_bytes();
    let run = cutover(["diff", "--format", "json", "--exclude-from", "-"]).arg(source.path()).arg(target.path());
    assert_eq!(reported(&run.stdin(piped).run().expect_code(1)), reported(&with_dir));
    for bad in ["", "/", "//", "+ include"] {
        cutover(["diff", "--exclude", bad]).arg(source.path()).arg(target.path()).run().expect_code(2);
    }
}

#[test]
fn repair_with_excludes_leaves_excluded_target_files_alone() {
    let (source, target) = trees();
    let before: Vec<(String, Vec<u8>)> = [
        "gone/deep/keep.tmp",
        "x.tmp",
        "new.tmp",
        "cache/x.db",
        "build/out",
        "tmp/in-dir",
        "file7",
        "node_modules/pkg/index.js",
        "back\\slash",
        "x7",
    ]
    .iter()
    .map(|p| (p.to_string(), std::fs::read(target.at(*p)).unwrap()))
    .collect();
    let mut args = vec!["repair", "--delete"];
    for pattern in PATTERNS {
        args.extend(["--exclude", pattern]);
    }
    cutover(&args).arg(source.path()).arg(target.path()).run().expect_code(0);
    for (path, bytes) in before {
        assert_eq!(std::fs::read(target.at(&path)).unwrap(), bytes, "{path} was touched");
    }
    let rsync_args: Vec<String> = PATTERNS.iter().map(|p| format!("--exclude={p}")).collect();
    let rsync_args: Vec<&str> = rsync_args.iter().map(String::as_str).collect();
    assert!(rsync_paths_with(source.path(), target.path(), &rsync_args).is_empty(), "rsync agrees it is done");
}

/// Patterns built from a small grammar over the names in `trees()`, each judged by rsync.
fn generated_patterns() -> Vec<String> {
    let atoms = ["a", "b", "tmp", "cache", "logs", "node_modules", "file7", "x7", "kept", "build", "sub", "deep.db"];
    let globs = ["*", "?", "**", "[a-c]", "[!a]", "*.tmp", "*.db", "f*7", "[[:digit:]]", "x?", "*/"];
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    (0..80)
        .map(|_| {
            let parts = 1 + next(3);
            let mut pattern = String::new();
            if next(4) == 0 {
                pattern.push('/');
            }
            for i in 0..parts {
                if i > 0 {
                    pattern.push('/');
                }
                let part = if next(2) == 0 { atoms[next(atoms.len())] } else { globs[next(globs.len())] };
                pattern.push_str(part.trim_end_matches('/'));
            }
            if next(5) == 0 {
                pattern.push('/');
            }
            pattern
        })
        .filter(|p| !p.trim_matches('/').is_empty())
        .collect()
}

#[test]
fn generated_patterns_leave_out_what_rsync_leaves_out() {
    let (source, target) = trees();
    let everything = rsync_paths_with(source.path(), target.path(), &[]);
    let (mut disagreements, mut effective) = (Vec::new(), 0);
    for pattern in generated_patterns() {
        let expected = rsync_paths_with(source.path(), target.path(), &[&format!("--exclude={pattern}")]);
        effective += usize::from(expected != everything);
        let run = diff_json(source.path(), target.path(), &["--exclude", &pattern]);
        if run.code() > 1 {
            disagreements.push(format!("{pattern}: cutover failed: {}", run.stderr));
        } else if reported(&run) != expected {
            disagreements.push(format!("{pattern}: rsync {expected:?}, cutover {:?}", reported(&run)));
        }
    }
    assert!(disagreements.is_empty(), "{disagreements:#?}");
    assert!(effective >= 20, "only {effective} generated patterns left anything out");
}

#[test]
fn one_file_system_stops_at_mount_points_as_rsync_x_does() {
    let source = Tree::new();
    source.file("a", "a").dir("mnt").file("d/b", "b");
    let Some(_mount) = Mounted::tmpfs(source.at("mnt")) else {
        eprintln!("note: cannot mount a tmpfs here (not root?); -x is not checked");
        return;
    };
    source.file("mnt/inner/deep", "on the other filesystem");
    let target = Tree::new();
    let mut rsync = std::process::Command::new("rsync");
    rsync.args(["-a", "-x"]).arg(source.path().join("")).arg(target.path().join(""));
    assert!(crate::support::run_with_timeout(rsync, Vec::new(), std::time::Duration::from_secs(60)).status.success());
    assert!(target.at("mnt").is_dir() && !target.at("mnt/inner").exists(), "rsync -x copies the mount point empty");

    let crossing = diff_json(source.path(), target.path(), &[]).expect_code(1);
    assert_eq!(reported(&crossing), BTreeSet::from(["mnt/inner".to_string()]));
    diff_json(source.path(), target.path(), &["-x"]).expect_code(0);
    diff_json(source.path(), target.path(), &["--one-file-system", "--meta", "mode,owner"]).expect_code(0);

    // The manifest remembers; a directory compared with it is scanned the same way.
    let work = Tree::new();
    let manifest = work.at("source.manifest");
    cutover(["scan", "-x"]).arg(source.path()).arg("-o").arg(&manifest).run().expect_code(0);
    diff_json(&manifest, target.path(), &[]).expect_code(0);
    assert!(oracle(&manifest).status.success());
    let crossing = work.at("crossing.manifest");
    cutover(["scan"]).arg(target.path()).arg("-o").arg(&crossing).run().expect_code(0);
    let run = cutover(["diff"]).arg(&manifest).arg(&crossing).run().expect_code(2);
    assert!(run.stderr.contains("scan both the same way"), "{}", run.stderr);
    let report = diff_json(source.path(), target.path(), &["-x"]).expect_code(0).json();
    assert_eq!(report["not_entered"], serde_json::json!([{"path": "mnt", "side": "source"}]));
}

/// A bind mount of a directory of the same filesystem has the same device number: `-x` stops
/// there too, by the mount root flag (issue: mount points by mount id, everywhere), as apply
/// already does. (rsync's `-x`, comparing devices only, would enter it.)
#[test]
fn one_file_system_stops_at_a_bind_mount_of_the_same_filesystem() {
    let source = Tree::new();
    source.file("a", "a").dir("view").file("elsewhere/inner", "seen twice");
    let Some(_bind) = crate::support::Bind::new(&source.at("elsewhere"), &source.at("view")) else { return };
    assert!(source.at("view/inner").exists());
    let report = diff_json(source.path(), source.path(), &["-x"]).expect_code(0).json();
    assert_eq!(report["not_entered"], serde_json::json!([{"path": "view", "side": "both"}]), "{report:#}");
    let work = Tree::new();
    let manifest = work.at("source.manifest");
    cutover(["scan", "-x"]).arg(source.path()).arg("-o").arg(&manifest).run().expect_code(0);
    let plain = work.at("plain.manifest");
    cutover(["scan"]).arg(source.path()).arg("-o").arg(&plain).run().expect_code(0);
    let entries = |m: &std::path::Path| oracle(m).stdout_text().lines().filter(|l| l.contains("view/inner")).count();
    assert_eq!((entries(&manifest), entries(&plain)), (0, 1), "-x leaves the bind mount's content out");
}

#[test]
fn one_file_system_neither_deletes_below_a_source_mount_point_nor_writes_into_a_target_one() {
    // The source has a filesystem mounted at `m`: rsync -x --delete leaves the target's m alone.
    let source = Tree::new();
    source.file("f", "1").dir("m");
    let Some(_source_mount) = Mounted::tmpfs(source.at("m")) else { return };
    source.file("m/a", "on the source's other filesystem");
    let target = Tree::new();
    target.file("f", "1").file("m/b", "kept").file("m/sub/c", "kept");
    cutover(["repair", "-x", "--delete"]).arg(source.path()).arg(target.path()).run().expect_code(0);
    assert_eq!(std::fs::read(target.at("m/b")).unwrap(), b"kept");
    assert_eq!(std::fs::read(target.at("m/sub/c")).unwrap(), b"kept");

    // The target has a filesystem mounted at `n`: nothing is written into it, not even its mode.
    let source = Tree::new();
    source.file("n/x", "x").file("n/sub/y", "y").mode("n", 0o700);
    let target = Tree::new();
    target.dir("n");
    let Some(_target_mount) = Mounted::tmpfs(target.at("n")) else { return };
    let before = std::fs::metadata(target.at("n")).unwrap();
    cutover(["repair", "-x", "--delete"]).arg(source.path()).arg(target.path()).run().expect_code(0);
    assert_eq!(std::fs::read_dir(target.at("n")).unwrap().count(), 0, "nothing written into the mounted filesystem");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(target.at("n")).unwrap().mode(), before.mode());
}

#[test]
fn one_file_system_keeps_target_only_mount_points_and_reads_no_mount_point_it_need_not() {
    // Only the target has filesystems mounted, at `em` and inside the extra `extra/m`: rsync
    // -x --delete removes extra/x and extra/y and keeps em, extra and extra/m.
    let source = Tree::new();
    source.file("f", "1");
    let target = Tree::new();
    target.file("f", "1").dir("em").file("extra/x", "x").file("extra/y", "y").dir("extra/m");
    let Some(_em) = Mounted::tmpfs(target.at("em")) else { return };
    let Some(_m) = Mounted::tmpfs(target.at("extra/m")) else { return };
    std::fs::write(target.at("extra/m/k"), "on the mounted filesystem").unwrap();
    let report = diff_json(source.path(), target.path(), &["-x"]).expect_code(1);
    assert_eq!(reported(&report), BTreeSet::from(["extra/x".to_string(), "extra/y".to_string()]));
    cutover(["repair", "-x", "--delete"]).arg(source.path()).arg(target.path()).run().expect_code(0);
    assert!(!target.at("extra/x").exists() && !target.at("extra/y").exists());
    assert_eq!(std::fs::read(target.at("extra/m/k")).unwrap(), b"on the mounted filesystem");
    assert!(target.at("em").is_dir());

    // A mount point nobody may open is still recorded as one, as rsync -x copies it.
    let Some(user) = crate::support::Unprivileged::new() else { return };
    let source = Tree::new();
    source.mode(".", 0o755).file("a", "a").dir("locked");
    let Some(_locked) = Mounted::tmpfs(source.at("locked")) else { return };
    std::fs::set_permissions(source.at("locked"), std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let copy = Tree::new();
    copy.mode(".", 0o755).file("a", "a").dir("locked").mode("locked", 0o700);
    // What the user's own rsync -x copy would hold: an empty directory of their own.
    std::os::unix::fs::chown(copy.at("locked"), Some(65534), Some(65534)).unwrap();
    let run = user.cutover(["diff", "-x"]).arg(source.path()).arg(copy.path()).run();
    assert_eq!(run.code(), 0, "{}{}", run.stdout_text(), run.stderr);
}

#[test]
fn a_file_bind_mounted_into_the_target_is_never_written() {
    let source = Tree::new();
    source.file("f", noise(7, 64 * 1024));
    let other = Tree::new();
    let Some(_tmpfs) = Mounted::tmpfs(other.path().to_path_buf()) else { return };
    let mut changed = noise(7, 64 * 1024);
    changed[100] ^= 0xff;
    std::fs::write(other.at("f"), &changed).unwrap();
    let target = Tree::new();
    target.file("f", "");
    let bound = std::process::Command::new("mount").arg("--bind").arg(other.at("f")).arg(target.at("f")).status();
    if !bound.is_ok_and(|s| s.success()) {
        return;
    }
    let _bind = Mounted(target.at("f"));
    let run = cutover(["repair", "--chunk-size", "4K"]).arg(source.path()).arg(target.path()).run();
    assert_ne!(run.code(), 0, "{}", run.stdout_text());
    assert_eq!(std::fs::read(other.at("f")).unwrap(), changed, "the other filesystem was written");
}

#[test]
fn a_removal_never_deletes_what_the_excludes_protect_even_if_it_appeared_after_the_plan() {
    let source = Tree::new();
    source.file("k", "k");
    let target = Tree::new();
    target.file("k", "k").file("e/d/a", "ab");
    let work = Tree::new();
    let (s, t, plan) = (work.at("s.manifest"), work.at("t.manifest"), work.at("plan.json"));
    cutover(["scan", "--exclude", "*.tmp"]).arg(source.path()).arg("-o").arg(&s).run().expect_code(0);
    cutover(["scan", "--exclude", "*.tmp"]).arg(target.path()).arg("-o").arg(&t).run().expect_code(0);
    cutover(["plan", "--delete"]).arg(&s).arg(&t).arg("-o").arg(&plan).run().expect_code(1);
    // Same entries, same bytes: only the name now matches the excludes.
    std::fs::rename(target.at("e/d/a"), target.at("e/d/a.tmp")).unwrap();
    // --force: the removal is most of this small target.
    let run = cutover(["apply", "--force"]).arg(&plan).arg("--target").arg(target.path()).run().expect_code(2);
    assert!(run.stdout_text().contains("exclude patterns protect"), "{}", run.stdout_text());
    assert_eq!(std::fs::read(target.at("e/d/a.tmp")).unwrap(), b"ab");
    let independent = crate::spec::oracle::plan_reader(&plan);
    assert!(independent.status.success(), "{}", independent.stderr);
}
