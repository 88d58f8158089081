//! Entries that cannot be hashed are never guessed at: they are named, with the side and the
//! reason, and the run exits 2.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::support::{Tree, Unprivileged, cutover, noise};

#[test]
fn an_unreadable_file_or_directory_is_trouble_naming_its_path_and_side() {
    let Some(user) = Unprivileged::new() else { return };
    let source = Tree::new();
    source.file("ok", "fine").file("secret", "hidden").file("locked/inner", "x").file("z-after", "still compared");
    let target = source.copy();
    target.file("z-after", "changed");
    source.mode("secret", 0o000).mode("locked", 0o000);

    let run = user.cutover(["diff", "--format", "json"]).arg(source.path()).arg(target.path()).run();
    let report = run.expect_code(2).report();
    let trouble: Vec<(String, String, String)> = report
        .differences()
        .iter()
        .filter(|d| d["kind"] == "unreadable")
        .map(|d| {
            let error = d["error"].as_str().expect("an error message").to_string();
            assert!(error.to_lowercase().contains("permission denied"), "{d:#}");
            (d["path"].as_str().unwrap().into(), d["side"].as_str().unwrap().into(), d["kind"].as_str().unwrap().into())
        })
        .collect();
    assert_eq!(
        trouble,
        [
            ("locked".into(), "source".into(), "unreadable".into()),
            ("secret".into(), "source".into(), "unreadable".into())
        ]
    );
    assert_eq!(report.summary("trouble"), 2);
    assert_eq!(report.at("z-after")["kind"], "content", "the rest of the tree is still compared");
    assert_eq!(report.0["identical"], false);

    let scan = user.cutover(["scan"]).arg(source.path()).run().expect_code(2);
    assert!(scan.stderr.contains("secret") && scan.stderr.contains("locked"), "{}", scan.stderr);
}

/// Whether the other side has the path or not, what could not be read is trouble: a directory
/// that could not be listed must not pass for an empty one that is merely missing.
#[test]
fn an_unreadable_entry_absent_from_the_other_side_is_still_trouble() {
    let Some(user) = Unprivileged::new() else { return };
    let source = Tree::new();
    source.file("locked/inner", "x").file("secret", "hidden").file("ok", "fine");
    let target = Tree::new();
    target.file("ok", "fine");
    source.mode("secret", 0o000).mode("locked", 0o000);
    let run = user.cutover(["diff", "--format", "json"]).arg(source.path()).arg(target.path()).run();
    let report = run.expect_code(2).report();
    assert_eq!(report.summary("trouble"), 2, "{:#}", report.0);
}

#[test]
fn an_unreadable_entry_stays_trouble_through_a_manifest() {
    let Some(user) = Unprivileged::new() else { return };
    let source = Tree::new();
    source.file("ok", "fine").file("secret", "hidden");
    let target = source.copy();
    source.mode("secret", 0o000);
    let scan = user.cutover(["scan", "-o", "-"]).arg(source.path()).run().expect_code(2);
    assert!(scan.stderr.contains("secret"), "{}", scan.stderr);
    let run = cutover(["diff", "--format", "json", "-"]).arg(target.path()).stdin(scan.stdout).run();
    let report = run.expect_code(2).report();
    assert_eq!(report.0["source"]["hash"], serde_json::Value::Null, "no root hash for an incomplete scan");
    let d = report.at("secret");
    assert_eq!((d["kind"].as_str(), d["side"].as_str()), (Some("unreadable"), Some("source")), "{d:#}");
    assert_eq!(report.differences().len(), 1, "{:#}", report.0);
}

#[test]
fn scanning_something_that_is_not_a_directory_is_trouble_and_does_not_block() {
    let tree = Tree::new();
    tree.file("file", "x").fifo("pipe");
    for name in ["file", "pipe"] {
        let run = cutover(["scan"]).arg(tree.at(name)).timeout(Duration::from_secs(20)).run().expect_code(2);
        assert!(run.stderr.contains(&tree.at(name).display().to_string()), "{}", run.stderr);
    }
}

/// Rewrites `path` until `stop`: alternately truncates it to nothing, to half, and writes one of
/// two full contents back.
fn churn(path: std::path::PathBuf, contents: [Arc<Vec<u8>>; 2], stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        use std::io::Write;
        let mut round = 0usize;
        while !stop.load(Ordering::Relaxed) {
            let mut file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            let content = &contents[round % 2];
            file.set_len(if round.is_multiple_of(3) { 0 } else { content.len() as u64 / 2 }).unwrap();
            file.write_all(content).unwrap();
            round += 1;
        }
    })
}

/// The sizes and root hashes a successful scan may report for a file that only ever held a
/// prefix of `first` or of `second`: its manifest must hold the root of one of those states.
fn held_a_real_state(manifest: &[u8], size: usize, first: &[u8], second: &[u8]) -> bool {
    let contains = |bytes: &[u8]| {
        let root = blake3::hash(bytes);
        manifest.windows(32).any(|w| w == root.as_bytes())
    };
    contains(&first[..size]) || contains(&second[..size])
}

#[test]
fn a_file_rewritten_while_it_is_scanned_is_reported_unstable_never_hashed_wrong() {
    const SIZE: usize = 64 << 20;
    let first = Arc::new(noise(21, SIZE));
    let mut second = first.as_ref().clone();
    second[SIZE - 1] ^= 0xff;
    let second = Arc::new(second);
    let tree = Tree::new();
    tree.file("big", first.as_ref()).file("quiet", "unchanging");
    let reference = tree.copy();

    let stop = Arc::new(AtomicBool::new(false));
    let writer = churn(tree.at("big"), [first.clone(), second.clone()], stop.clone());
    let (mut unstable, mut runs) = (0, 0);
    let started = Instant::now();
    while runs < 3 || (unstable == 0 && started.elapsed() < Duration::from_secs(10)) {
        runs += 1;
        let run = cutover(["scan", "-o", "-"]).arg(tree.path()).run();
        match run.code() {
            0 => {
                let compared =
                    cutover(["diff", "--format", "json", "-"]).arg(reference.path()).stdin(run.stdout.clone());
                let report = compared.run().report();
                if let Some(d) = report.differences().iter().find(|d| d["path"] == "big") {
                    let size = d["source_size"].as_u64().unwrap() as usize;
                    assert!(
                        held_a_real_state(&run.stdout, size, &first, &second),
                        "scan exited 0 with a root for big ({size} bytes) that no state of the file had"
                    );
                }
            }
            2 => {
                unstable += 1;
                assert!(run.stderr.contains("big"), "names the file: {}", run.stderr);
                assert!(run.stderr.contains("changed while being read"), "says why: {}", run.stderr);
                assert!(!run.stderr.contains("quiet"), "{}", run.stderr);
            }
            code => panic!("exit {code}: {}", run.stderr),
        }
    }
    let report = cutover(["diff", "--format", "json"]).arg(tree.path()).arg(reference.path()).run();
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    assert!(unstable > 0, "{runs} scans of a file rewritten in a loop never noticed it changing");
    let code = report.code();
    assert!([0, 1, 2].contains(&code), "exit {code}: {}", report.stderr);
    if code == 2 {
        let report = report.report();
        let d = report.at("big");
        assert_eq!((d["kind"].as_str(), d["side"].as_str()), (Some("unstable"), Some("source")), "{d:#}");
        assert!(d["error"].as_str().is_some_and(|e| !e.is_empty()));
        assert_eq!(report.summary("trouble"), 1);
    }
}
