//! apply makes its writes durable a batch at a time (one `syncfs` per batch, not an `fsync` of
//! each file and its directory): a crash in the middle of a batch must still be finished by
//! the next run of the same plan, and a file a crash tore (wrong size or bytes at its final
//! name) is redone, not refused as changed. See docs/plan.md, "Resumable".

#[allow(dead_code)]
mod support;

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::{Run, Tree, cutover, noise};

fn plan(source: &Path, target: &Path, plan: &Path) -> Run {
    cutover(["plan", "-a", "--delete"]).arg(source).arg(target).arg("-o").arg(plan).run()
}

fn apply(plan: &Path, source: &Path, target: &Path) -> Run {
    cutover(["apply"]).arg(plan).arg("--source").arg(source).arg("--target").arg(target).run()
}

/// The journals apply keeps for the target `root` in the tests' state directory.
fn journals_of(root: &Path) -> Vec<PathBuf> {
    let key = cutover::state::tree_key(&std::fs::canonicalize(root).unwrap());
    let dir = support::test_state_dir().join("trees").join(key);
    let names = std::fs::read_dir(dir).into_iter().flatten().map(|entry| entry.unwrap().path());
    names.filter(|path| path.file_name().unwrap().as_bytes().starts_with(b"journal.")).collect()
}

/// rsync, the outside judge: it would change nothing, by checksum and metadata.
fn assert_rsync_equal(source: &Path, target: &Path) {
    let out = Command::new("rsync")
        .args(["-naHSc", "--specials", "--devices", "-i", "--delete"])
        .arg(format!("{}/", source.display()))
        .arg(format!("{}/", target.display()))
        .output()
        .expect("rsync runs");
    assert!(
        out.status.success() && out.stdout.is_empty(),
        "rsync would still change:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A plan of a few thousand small operations (more than one batch), some replacements, a
/// patch and removals.
fn fixture() -> (Tree, Tree) {
    let (s, t) = (Tree::new(), Tree::new());
    for i in 0..2600u64 {
        s.file(&format!("d{:02}/f{i:04}", i % 40), noise(i, 200 + (i as usize * 13) % 3000));
    }
    for i in 0..50u64 {
        s.file(&format!("r/r{i:02}"), noise(5000 + i, 4000));
        t.file(&format!("r/r{i:02}"), noise(6000 + i, 3000));
    }
    for i in 0..80u64 {
        t.file(&format!("old/o{:02}/x{i:03}", i % 8), noise(7000 + i, 300));
    }
    let big = noise(9000, 8 << 20);
    let mut changed = big.clone();
    for at in (0..changed.len()).step_by(300_000) {
        changed[at] ^= 0x5a;
    }
    s.file("big.bin", &big);
    t.file("big.bin", &changed);
    (s, t)
}

/// Starts `apply`, kills it with SIGKILL after `delay`; true when it was still running.
fn apply_killed_after(plan: &Path, source: &Path, target: &Path, delay: Duration) -> bool {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cutover"))
        .env("CUTOVER_STATE_DIR", support::test_state_dir())
        .arg("apply")
        .arg(plan)
        .arg("--source")
        .arg(source)
        .arg("--target")
        .arg(target)
        .arg("--force")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(delay);
    let running = child.try_wait().unwrap().is_none();
    child.kill().unwrap();
    child.wait().unwrap();
    running
}

/// What the journal of `target` says: whether a batch was begun and not synced.
fn batch_open(target: &Path) -> bool {
    journals_of(target).iter().any(|journal| {
        let text = std::fs::read_to_string(journal).unwrap();
        let begun = text.lines().filter(|l| l.starts_with("batch ")).count();
        let synced = text.lines().filter(|l| l.starts_with("synced ")).count();
        begun > synced
    })
}

#[test]
fn sigkill_in_the_middle_of_a_batch_then_the_same_plan_completes() {
    let (source, original) = fixture();
    let work = Tree::new();
    let p = work.at("plan.json");
    plan(source.path(), original.path(), &p).expect_code(1);

    let calibration = original.copy();
    let started = Instant::now();
    // The plan deletes most of the tree it was made for, hence --force.
    cutover(["apply", "--force"])
        .arg(&p)
        .arg("--source")
        .arg(source.path())
        .arg("--target")
        .arg(calibration.path())
        .run()
        .expect_code(0);
    let full = started.elapsed();
    assert_rsync_equal(source.path(), calibration.path());
    drop(calibration);

    let (mut killed, mut mid_batch) = (0, 0);
    for fraction in [0.05, 0.2, 0.4, 0.6, 0.85] {
        let target = original.copy();
        let delay = Duration::from_millis(1).max(full.mul_f64(fraction));
        killed += usize::from(apply_killed_after(&p, source.path(), target.path(), delay));
        mid_batch += usize::from(batch_open(target.path()));
        let run = cutover(["apply", "--force"])
            .arg(&p)
            .arg("--source")
            .arg(source.path())
            .arg("--target")
            .arg(target.path())
            .run();
        assert_eq!(
            run.code(),
            0,
            "resuming after a kill at {fraction} of {full:?}: {}{}",
            run.stdout_text(),
            run.stderr
        );
        assert_rsync_equal(source.path(), target.path());
        assert!(journals_of(target.path()).is_empty(), "a complete run retires its journal");
    }
    assert!(killed >= 3, "only {killed} of 5 kills landed while apply was running ({full:?})");
    assert!(mid_batch >= 1, "no kill landed inside a batch ({full:?})");
}

/// A run whose plan cannot be finished (one file changed after planning), so its journal stays:
/// the batch it ran is recorded begun and synced. Returns the trees, the plan and the journal.
fn finished_batch_with_a_journal() -> (Tree, Tree, Tree, PathBuf, PathBuf) {
    let (source, target, work) = (Tree::new(), Tree::new(), Tree::new());
    source.file("a", noise(1, 20_000)).file("other", "one");
    target.file("a", noise(2, 10_000)).file("other", "two");
    let p = work.at("plan.json");
    plan(source.path(), target.path(), &p).expect_code(1);
    target.file("other", "changed");
    apply(&p, source.path(), target.path()).expect_code(2);
    assert_eq!(std::fs::read(target.at("a")).unwrap(), noise(1, 20_000));
    let journals = journals_of(target.path());
    assert_eq!(journals.len(), 1, "the incomplete run kept its journal");
    let journal = journals[0].clone();
    let text = std::fs::read_to_string(&journal).unwrap();
    assert!(text.lines().any(|l| l.starts_with("batch ")) && text.lines().any(|l| l.starts_with("synced ")), "{text}");
    // `a` is now torn as a power loss may leave a copy whose rename was durable and its data
    // not: the right name, the wrong size.
    target.set_len("a", 4096);
    target.file("other", "two");
    (source, target, work, p, journal)
}

#[test]
fn a_copy_torn_in_a_batch_never_synced_is_redone() {
    let (source, target, _work, p, journal) = finished_batch_with_a_journal();
    // What a crash before the batch's syncfs leaves: the batch begun, not synced.
    let text = std::fs::read_to_string(&journal).unwrap();
    let unsynced: String = text.lines().filter(|l| !l.starts_with("synced ")).map(|l| format!("{l}\n")).collect();
    std::fs::write(&journal, unsynced).unwrap();
    let run = apply(&p, source.path(), target.path());
    assert_eq!(run.code(), 0, "{}{}", run.stdout_text(), run.stderr);
    assert_eq!(std::fs::read(target.at("a")).unwrap(), noise(1, 20_000), "the torn copy is redone");
    assert_rsync_equal(source.path(), target.path());
}

#[test]
fn the_same_file_after_its_batch_synced_is_refused_as_changed() {
    let (source, target, _work, p, _journal) = finished_batch_with_a_journal();
    let run = apply(&p, source.path(), target.path());
    assert_eq!(run.code(), 2, "{}{}", run.stdout_text(), run.stderr);
    assert!(run.stdout_text().contains("changed since the plan"), "{}", run.stdout_text());
    assert_eq!(std::fs::metadata(target.at("a")).unwrap().len(), 4096, "a file the user changed is not written");
}
