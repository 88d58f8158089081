//! Manifests: a tree scanned on one host and compared on another must compare exactly like the
//! tree itself, and a damaged manifest must be refused, never half-believed.

use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use cutover::digest::Digest;
use cutover::manifest::{Entry, Problem};

use crate::spec::oracle::oracle;
use crate::support::{Run, Tree, cutover, diff_json, noise};

/// A tree with one of everything a manifest has to carry.
fn zoo() -> Tree {
    let tree = Tree::new();
    tree.file("empty", "").file("small.txt", "hello\n").file("multi-chunk.bin", noise(1, 3 * 4096 + 7));
    tree.file(b"caf\xe9", "non-UTF-8 name").file("new\nline", "newline in name").file("d/e/f/deep", "deep");
    tree.dir("empty-dir").symlink("link-rel", "small.txt").symlink("link-abs", "/nonexistent").fifo("pipe");
    tree.file("exec", "#!/bin/sh\n").mode("exec", 0o750).mtime("exec", 1_500_000_000, 123_456_789);
    tree
}

fn scan_to(dir: &Path, manifest: &Path, chunk: &str) {
    cutover(["scan", "--chunk-size", chunk]).arg(dir).arg("-o").arg(manifest).run().expect_code(0);
}

/// The root hash `cutover scan DIR` prints on its first line.
fn printed_root(dir: &Path) -> String {
    let out = cutover(["scan"]).arg(dir).run().expect_code(0).stdout_text();
    let first = out.lines().next().unwrap().to_string();
    let (hash, shown) = first.split_once("  ").unwrap_or_else(|| panic!("'<hash>  <dir>' expected: {first}"));
    assert_eq!(shown, dir.display().to_string());
    assert_eq!(hash.len(), 64, "{first}");
    assert!(hash.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()), "{first}");
    hash.to_string()
}

#[test]
fn a_manifest_compares_identical_to_the_tree_it_was_scanned_from() {
    let tree = zoo();
    let work = Tree::new();
    let manifest = work.at("m1");
    scan_to(tree.path(), &manifest, "4K");
    let root = printed_root(tree.path());
    let meta_all = ["--meta", "all"];
    for (source, target) in
        [(manifest.as_path(), tree.path()), (tree.path(), manifest.as_path()), (&manifest, &manifest)]
    {
        let report = diff_json(source, target, &meta_all).expect_code(0).report();
        assert_eq!(report.0["source"]["hash"], root.as_str());
        assert_eq!(report.0["target"]["hash"], root.as_str());
    }
}

#[test]
fn a_manifest_file_starts_with_its_magic_line_and_a_json_header() {
    let tree = zoo();
    let work = Tree::new();
    let manifest = work.at("m");
    let run = cutover(["scan"]).arg(tree.path()).arg("-o").arg(&manifest).run().expect_code(0);
    let bytes = std::fs::read(&manifest).unwrap();
    assert!(bytes.starts_with(b"cutover-manifest/1\n"));
    let header_line = bytes[19..].split(|&b| b == b'\n').next().unwrap();
    let header: serde_json::Value = serde_json::from_slice(header_line).expect("the second line is JSON");
    assert_eq!(header["chunk_size"], 1 << 20);
    let root = printed_root(tree.path());
    assert_eq!(header["root_hash"], root.as_str());
    assert!(run.stdout_text().starts_with(&root), "the summary still goes to stdout: {}", run.stdout_text());
}

#[test]
fn a_manifest_written_to_stdout_pipes_into_diff_on_stdin() {
    let tree = zoo();
    let scan = cutover(["scan", "-o", "-"]).arg(tree.path()).run().expect_code(0);
    assert!(scan.stdout.starts_with(b"cutover-manifest/1\n"), "the manifest alone is on stdout");
    assert!(scan.stderr.contains(&printed_root(tree.path())), "the summary moves to stderr: {}", scan.stderr);
    cutover(["diff", "-"]).arg(tree.path()).stdin(scan.stdout.clone()).run().expect_code(0);
    cutover(["diff"]).arg(tree.path()).arg("-").stdin(scan.stdout.clone()).run().expect_code(0);

    let changed = tree.copy();
    changed.file("small.txt", "HELLO\n");
    let report = cutover(["diff", "--format", "json", "-"]).arg(changed.path()).stdin(scan.stdout).run();
    assert_eq!(report.expect_code(1).report().kinds(), [("small.txt".into(), "content".into())]);
}

#[test]
fn output_through_a_symlink_or_into_a_fifo_writes_through_and_leaves_the_node_alone() {
    let tree = zoo();
    let work = Tree::new();
    work.dir("real").symlink("link", "real/m").fifo("pipe");
    cutover(["scan"]).arg(tree.path()).arg("-o").arg(work.at("link")).run().expect_code(0);
    assert!(std::fs::symlink_metadata(work.at("link")).unwrap().file_type().is_symlink(), "the link stays a link");
    diff_json(&work.at("real/m"), tree.path(), &[]).expect_code(0);

    // A FIFO, like `-o /dev/stdout` or `-o >(ssh host ...)`: renaming over it would replace the
    // node (as root, /dev/stdout itself) and the reader would get nothing.
    let source = tree.path().to_str().unwrap();
    for (args, starts) in [(vec!["scan", source], "cutover-manifest/1\n"), (vec!["plan", source, source], "{")] {
        let pipe = work.at("pipe");
        let reader = std::thread::spawn(move || std::fs::read(pipe).unwrap());
        cutover(&args).arg("-o").arg(work.at("pipe")).run().expect_code(0);
        // Checked before joining: had the FIFO been replaced, the reader would wait forever.
        assert!(std::fs::symlink_metadata(work.at("pipe")).unwrap().file_type().is_fifo(), "still a FIFO");
        let bytes = reader.join().unwrap();
        assert!(bytes.starts_with(starts.as_bytes()), "{args:?}: {}", String::from_utf8_lossy(&bytes));
    }
}

#[test]
fn a_manifest_written_to_the_standard_output_by_name_is_followed_by_no_summary() {
    // `/proc/self/fd/1` rather than `/dev/stdout`: were the output renamed over, this fails
    // instead of replacing the machine's /dev/stdout.
    let tree = zoo();
    let run = cutover(["scan"]).arg(tree.path()).args(["-o", "/proc/self/fd/1"]).run().expect_code(0);
    assert!(run.stderr.contains("entries"), "the summary goes to stderr: {}", run.stderr);
    cutover(["diff", "-", tree.path().to_str().unwrap()]).stdin(run.stdout).run().expect_code(0);
}

#[test]
fn the_temp_file_of_an_output_is_never_opened_through_something_planted_under_its_name() {
    let tree = zoo();
    let work = Tree::new();
    work.file("victim", "precious");
    // The temp is NAME.tmp-PID-N (NAME.tmp-PID before); `exec` keeps the shell's PID, so the
    // links sit where the first temps would go.
    let plant = "for n in '' -0 -1; do ln -s victim out.tmp-$$$n || exit 1; done";
    let binary = env!("CARGO_BIN_EXE_cutover");
    let script = format!("{plant}; exec '{binary}' scan '{}' -o out", tree.path().display());
    let mut command = std::process::Command::new("sh");
    command.current_dir(work.path()).args(["-c", &script]);
    let run = crate::support::run_with_timeout(command, Vec::new(), std::time::Duration::from_secs(60));
    assert!(run.status.success(), "{}", run.stderr);
    assert_eq!(std::fs::read(work.at("victim")).unwrap(), b"precious", "written through the planted link");
    diff_json(&work.at("out"), tree.path(), &[]).expect_code(0);
}

#[test]
fn an_output_keeps_the_mode_of_the_file_it_replaces_and_is_written_in_place_in_a_read_only_directory() {
    use std::os::unix::fs::PermissionsExt;
    let tree = zoo();
    let work = Tree::new();
    work.file("m", "old").mode("m", 0o640);
    cutover(["scan"]).arg(tree.path()).arg("-o").arg(work.at("m")).run().expect_code(0);
    assert_eq!(std::fs::metadata(work.at("m")).unwrap().permissions().mode() & 0o7777, 0o640);

    let Some(user) = crate::support::Unprivileged::new() else { return };
    let open = Tree::new();
    open.mode(".", 0o755).file("ro/m", "old").mode("ro/m", 0o666).mode("ro", 0o555);
    let readable = Tree::new();
    readable.file("f", "x");
    std::fs::set_permissions(readable.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    user.cutover(["scan"]).arg(readable.path()).arg("-o").arg(open.at("ro/m")).run().expect_code(0);
    assert!(std::fs::read(open.at("ro/m")).unwrap().starts_with(b"cutover-manifest/1\n"), "written in place");
    // In a sticky directory a file of someone else's can be written but not replaced.
    let shared = Tree::new();
    shared.mode(".", 0o1777).file("m", "old").mode("m", 0o666);
    user.cutover(["scan"]).arg(readable.path()).arg("-o").arg(shared.at("m")).run().expect_code(0);
    assert!(std::fs::read(shared.at("m")).unwrap().starts_with(b"cutover-manifest/1\n"), "written in place");
    // Root replacing a user's file keeps its owner, and never hands on a setuid bit.
    if crate::support::running_as_root() {
        use std::os::unix::fs::MetadataExt;
        work.file("users", "old").mode("users", 0o4750);
        std::os::unix::fs::chown(work.at("users"), Some(65534), Some(65534)).unwrap();
        cutover(["scan"]).arg(tree.path()).arg("-o").arg(work.at("users")).run().expect_code(0);
        let meta = std::fs::metadata(work.at("users")).unwrap();
        assert_eq!((meta.uid(), meta.gid(), meta.mode() & 0o7777), (65534, 65534, 0o750));
    }
    // A file `>` could not write is not replaced either.
    open.file("ro/locked", "keep").mode("ro/locked", 0o444).mode("ro", 0o777);
    let run = user.cutover(["scan"]).arg(readable.path()).arg("-o").arg(open.at("ro/locked")).run().expect_code(2);
    assert!(run.stderr.contains("Permission denied"), "{}", run.stderr);
    assert_eq!(std::fs::read(open.at("ro/locked")).unwrap(), b"keep");
}

#[test]
fn an_output_that_cannot_be_written_fails_naming_it_and_leaves_no_temp_behind() {
    let tree = zoo();
    let work = Tree::new();
    work.dir("taken");
    let run = cutover(["scan"]).arg(tree.path()).arg("-o").arg(work.at("taken")).run().expect_code(2);
    assert!(run.stderr.contains(&work.at("taken").display().to_string()), "{}", run.stderr);
    let run = cutover(["plan"]).arg(tree.path()).arg(tree.path()).arg("-o").arg(work.at("taken")).run().expect_code(2);
    assert!(run.stderr.contains("taken"), "{}", run.stderr);
    let left: Vec<_> = std::fs::read_dir(work.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, ["taken"], "only the directory that was there");
    assert!(std::fs::read_dir(work.at("taken")).unwrap().next().is_none());
}

#[test]
fn only_one_side_can_come_from_stdin() {
    let run = cutover(["diff", "-", "-"]).run().expect_code(2);
    assert!(run.stderr.contains("standard input"), "{}", run.stderr);
}

/// A file of 10 000 bytes, and a copy with byte 5000 changed: with 4K chunks exactly one range.
fn one_changed_chunk() -> (Tree, Tree) {
    let source = Tree::new();
    source.file("f", noise(3, 10_000));
    let target = source.copy();
    target.patch("f", 5000, b"#");
    (source, target)
}

#[test]
fn a_directory_compared_with_a_manifest_is_scanned_at_the_manifest_chunk_size() {
    let (source, target) = one_changed_chunk();
    let work = Tree::new();
    let (m_source, m_target) = (work.at("source.m"), work.at("target.m"));
    scan_to(source.path(), &m_source, "4K");
    scan_to(target.path(), &m_target, "4K");
    let mut wrong = Vec::new();
    let pairs =
        [("manifest DIR", m_source.as_path(), target.path()), ("DIR manifest", source.path(), m_target.as_path())];
    for (label, a, b) in pairs {
        let report = diff_json(a, b, &[]).expect_code(1).report();
        if (report.0["chunk_size"].as_u64(), report.ranges("f")) != (Some(4096), vec![(4096, 4096)]) {
            wrong.push(format!("{label}: chunk_size {} ranges {:?}", report.0["chunk_size"], report.ranges("f")));
        }
    }
    let piped = cutover(["diff", "--format", "json", "-"]).arg(target.path()).stdin(std::fs::read(&m_source).unwrap());
    let report = piped.run().expect_code(1).report();
    if (report.0["chunk_size"].as_u64(), report.ranges("f")) != (Some(4096), vec![(4096, 4096)]) {
        wrong.push(format!("- DIR: chunk_size {} ranges {:?}", report.0["chunk_size"], report.ranges("f")));
    }
    assert!(wrong.is_empty(), "expected chunk_size 4096 and range 4096+4096:\n{}", wrong.join("\n"));
}

#[test]
fn manifests_of_different_chunk_sizes_compare_at_the_coarser_one() {
    let source = Tree::new();
    source.file("f", noise(4, 300_000)).file("small", noise(5, 5000));
    let target = source.copy();
    target.patch("f", 70_000, b"#").patch("small", 4500, b"#");
    let work = Tree::new();
    let (fine, coarse) = (work.at("fine.m"), work.at("coarse.m"));
    scan_to(source.path(), &fine, "4K");
    scan_to(target.path(), &coarse, "64K");
    for (a, b) in [(&fine, &coarse), (&coarse, &fine)] {
        let report = diff_json(a, b, &[]).expect_code(1).report();
        assert_eq!(report.0["chunk_size"], 65_536);
        assert_eq!(report.ranges("f"), [(65_536, 65_536)], "the 64K chunk holding byte 70000");
        assert_eq!(report.ranges("small"), [(0, 5000)], "a file within one coarse chunk differs as a whole");
    }
    let same_fine = work.at("target-fine.m");
    scan_to(target.path(), &same_fine, "4K");
    let report = diff_json(&fine, &same_fine, &[]).expect_code(1).report();
    assert_eq!(report.ranges("f"), [(69_632, 4096)]);
    assert_eq!(report.ranges("small"), [(4096, 904)]);
}

#[test]
fn the_root_hash_does_not_depend_on_the_chunk_size() {
    let tree = zoo();
    let work = Tree::new();
    let (a, b) = (work.at("1k.m"), work.at("1m.m"));
    scan_to(tree.path(), &a, "1K");
    scan_to(tree.path(), &b, "1M");
    let report = diff_json(&a, &b, &[]).expect_code(0).report();
    assert_eq!(report.0["source"]["hash"], report.0["target"]["hash"]);
    assert_eq!(report.0["source"]["hash"], printed_root(tree.path()).as_str());
}

/// Runs `cutover diff MANIFEST DIR` on a damaged manifest: trouble, named, never a panic. The
/// same manifest compared with itself (both sides streamed, not read whole) is refused with the
/// same message.
fn refused(manifest: &Path, dir: &Path) -> Run {
    let run = cutover(["diff"]).arg(manifest).arg(dir).run();
    assert_eq!(run.code(), 2, "a damaged manifest must be refused\nstdout: {}", String::from_utf8_lossy(&run.stdout));
    assert!(run.stderr.contains(&manifest.display().to_string()), "the message names the file: {}", run.stderr);
    let streamed = cutover(["diff"]).arg(manifest).arg(manifest).run();
    assert_eq!(streamed.code(), 2, "streamed: {}", String::from_utf8_lossy(&streamed.stdout));
    assert_eq!(streamed.stderr, run.stderr, "streamed and whole reads refuse it alike");
    run
}

fn damaged(work: &Tree, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = work.at(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn a_manifest_altered_after_it_was_written_fails_its_checksum() {
    let tree = Tree::new();
    let content = noise(9, 3000);
    tree.file("f", &content);
    let work = Tree::new();
    let manifest = work.at("m");
    scan_to(tree.path(), &manifest, "1K");
    let mut bytes = std::fs::read(&manifest).unwrap();
    let digest = blake3::hash(&content);
    let at = bytes.windows(32).position(|w| w == digest.as_bytes()).expect("the file's root is in the manifest");
    bytes[at + 7] ^= 0x10;
    let run = refused(&damaged(&work, "flipped", &bytes), tree.path());
    assert!(run.stderr.contains("checksum"), "{}", run.stderr);
}

#[test]
fn truncated_empty_garbage_and_future_manifests_are_refused_with_the_file_named() {
    let tree = zoo();
    let work = Tree::new();
    let manifest = work.at("m");
    scan_to(tree.path(), &manifest, "4K");
    let bytes = std::fs::read(&manifest).unwrap();

    let run = refused(&damaged(&work, "truncated", &bytes[..bytes.len() / 2]), tree.path());
    assert!(run.stderr.contains("truncated"), "{}", run.stderr);
    refused(&damaged(&work, "no-checksum", &bytes[..bytes.len() - 32]), tree.path());
    refused(&damaged(&work, "empty", b""), tree.path());
    refused(&damaged(&work, "garbage", &noise(11, 5000)), tree.path());
    refused(&damaged(&work, "text", b"this is not a manifest\n"), tree.path());
    let mut appended = bytes.clone();
    appended.push(b'\n');
    let run = refused(&damaged(&work, "appended", &appended), tree.path());
    assert!(run.stderr.contains(&format!("at byte {}: bytes after the end record", bytes.len())), "{}", run.stderr);
    let run = refused(&damaged(&work, "magic-only", &bytes[..18]), tree.path());
    assert!(run.stderr.contains("truncated manifest: it ends at byte 18"), "{}", run.stderr);
    let mut dos = bytes[..18].to_vec();
    dos.extend_from_slice(b"\r");
    dos.extend_from_slice(&bytes[18..]);
    let run = refused(&damaged(&work, "dos", &dos), tree.path());
    assert!(run.stderr.contains("DOS line endings"), "{}", run.stderr);

    let mut future = b"cutover-manifest/9\n".to_vec();
    future.extend_from_slice(&bytes[19..]);
    let run = refused(&damaged(&work, "future", &future), tree.path());
    assert!(run.stderr.contains("cutover-manifest/9"), "names the version it found: {}", run.stderr);

    let run = cutover(["diff", "-"]).arg(tree.path()).stdin(bytes[..100].to_vec()).run().expect_code(2);
    assert!(run.stderr.contains("<stdin>"), "{}", run.stderr);
}

/// `bytes` (a manifest) with its header line passed through `edit`, and its checksum recomputed
/// as docs/manifest.md describes: BLAKE3 of every byte before it.
fn with_header(bytes: &[u8], edit: impl FnOnce(&mut serde_json::Map<String, serde_json::Value>)) -> Vec<u8> {
    let header_end = 19 + bytes[19..].iter().position(|&b| b == b'\n').unwrap();
    let mut header: serde_json::Value = serde_json::from_slice(&bytes[19..header_end]).unwrap();
    edit(header.as_object_mut().unwrap());
    let mut out = bytes[..19].to_vec();
    out.extend_from_slice(serde_json::to_string(&header).unwrap().as_bytes());
    out.extend_from_slice(&bytes[header_end..bytes.len() - 32]);
    let checksum = blake3::hash(&out);
    out.extend_from_slice(checksum.as_bytes());
    out
}

#[test]
fn the_header_root_hash_may_be_left_out_but_never_disagree() {
    let tree = zoo();
    let work = Tree::new();
    scan_to(tree.path(), &work.at("m"), "4K");
    let bytes = std::fs::read(work.at("m")).unwrap();
    let rewritten = damaged(&work, "same", &with_header(&bytes, |_| {}));
    diff_json(&rewritten, tree.path(), &[]).expect_code(0);
    let without = damaged(&work, "without", &with_header(&bytes, |h| drop(h.remove("root_hash"))));
    diff_json(&without, tree.path(), &[]).expect_code(0);
    for (name, value) in [("null", serde_json::Value::Null), ("other", "0".repeat(64).into())] {
        let edited = damaged(&work, name, &with_header(&bytes, |h| drop(h.insert("root_hash".into(), value))));
        let run = refused(&edited, tree.path());
        assert!(run.stderr.contains("root_hash is not the root directory's hash"), "{name}: {}", run.stderr);
    }
}

/// A manifest of `zoo()` scanned by the library, with its entries edited, written with a right
/// checksum: what a buggy or hand-made writer could produce.
fn edited_manifest(work: &Tree, name: &str, edit: impl FnOnce(&mut Vec<Entry>)) -> std::path::PathBuf {
    let tree = zoo();
    let mut manifest = cutover::scan::scan(tree.path(), &cutover::scan::ScanOptions::default()).unwrap();
    edit(&mut manifest.entries);
    let path = work.at(name);
    cutover::manifest::write_manifest(&manifest, std::fs::File::create(&path).unwrap()).unwrap();
    path
}

#[test]
fn entries_a_writer_could_get_wrong_are_refused_even_with_a_right_checksum() {
    type Edit = fn(&mut Entry);
    let cases: [(&str, Edit, &str); 7] = [
        ("link-rel", |e| e.digest = Some(Digest([7; 32])), "its digest is not the BLAKE3 of its target"),
        ("pipe", |e| e.digest = Some(Digest([1; 32])), "its digest is not 32 zero bytes"),
        ("d", |e| e.problem = Some(Box::new(Problem::Unreadable("x".into()))), "has both a digest and a problem"),
        ("exec", |e| e.mode = 0o100750, "has bits above 0o7777"),
        ("exec", |e| e.mtime.nsec = 1_000_000_000, "mtime nanoseconds 1000000000"),
        ("d", |e| e.size = 5, "only regular files have a size"),
        (
            "small.txt",
            |e| e.xattrs = Some(Box::new(vec![(b"user.a"[..].into(), b"1"[..].into())])),
            "does not list xattr",
        ),
    ];
    let work = Tree::new();
    for (i, (path, edit, expected)) in cases.into_iter().enumerate() {
        let manifest = edited_manifest(&work, &format!("m{i}"), |entries| {
            edit(entries.iter_mut().find(|e| e.path.as_bytes() == path.as_bytes()).unwrap())
        });
        let run = refused(&manifest, zoo().path());
        assert!(run.stderr.contains(expected), "{path}: {}", run.stderr);
        let independent = oracle(&manifest);
        assert_eq!(independent.status.code(), Some(2), "the reader from the docs refuses it too: {expected}");
    }
    let unedited = edited_manifest(&work, "unedited", |_| {});
    diff_json(&unedited, zoo().path(), &[]).expect_code(0);
    assert!(oracle(&unedited).status.success());
}

#[test]
fn every_single_byte_flip_or_cut_of_a_manifest_is_refused() {
    let tree = Tree::new();
    tree.file("a", noise(12, 2100)).file("b/c", "c").symlink("l", "a");
    let work = Tree::new();
    let manifest = work.at("m");
    scan_to(tree.path(), &manifest, "1K");
    let bytes = std::fs::read(&manifest).unwrap();
    let damaged_path = work.at("damaged");
    let mut accepted = Vec::new();
    for at in 0..bytes.len() {
        let mut flipped = bytes.clone();
        flipped[at] ^= 0x01;
        std::fs::write(&damaged_path, &flipped).unwrap();
        let whole = cutover(["diff", "-q"]).arg(&damaged_path).arg(tree.path()).run();
        if whole.code() != 2 {
            accepted.push(format!("flip at {at}"));
        }
        // Streamed (manifest against manifest), the damage is found before any verdict.
        let streamed = cutover(["diff", "-q"]).arg(&manifest).arg(&damaged_path).run();
        if streamed.code() != 2 || streamed.stderr != whole.stderr {
            accepted.push(format!("flip at {at}, streamed: {} {}", streamed.code(), streamed.stderr.trim()));
        }
    }
    let mut misplaced = Vec::new();
    for len in (0..bytes.len()).step_by(5).chain(bytes.len() - 45..bytes.len()) {
        std::fs::write(&damaged_path, &bytes[..len]).unwrap();
        let run = cutover(["diff", "-q"]).arg(&damaged_path).arg(tree.path()).run();
        if run.code() != 2 {
            accepted.push(format!("cut at {len}"));
        }
        let streamed = cutover(["diff", "-q"]).arg(&manifest).arg(&damaged_path).run();
        if streamed.code() != 2 || streamed.stderr != run.stderr {
            accepted.push(format!("cut at {len}, streamed: {} {}", streamed.code(), streamed.stderr.trim()));
        }
        // Past the magic line, a cut is named where it is: the file's length.
        if len > 17 && !run.stderr.contains(&format!("truncated manifest: it ends at byte {len} ")) {
            misplaced.push(format!("cut at {len}: {}", run.stderr.trim()));
        }
    }
    assert!(accepted.is_empty(), "damaged manifests accepted: {accepted:?}");
    assert!(misplaced.is_empty(), "truncations reported at the wrong byte: {misplaced:#?}");
}
