//! What outlives a run, and stopping safely: the lock per target, the journal and temps kept
//! track of in the state directory (never in the target), signals, a full disk, a new target.
//!
//! Judged from outside: `rsync -naHS --specials --devices -i --delete` lists nothing once the
//! trees are equal, and no name of cutover's is left in the target.

use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{Run, Tree, cutover, noise};

/// `cutover plan SOURCE TARGET -o PLAN EXTRA...`
fn plan(source: &Path, target: &Path, plan: &Path, extra: &[&str]) -> Run {
    cutover(["plan"]).arg(source).arg(target).arg("-o").arg(plan).args(extra).run()
}

/// `cutover apply PLAN --source SOURCE --target TARGET --state STATE --format json`
fn apply(plan: &Path, source: &Path, target: &Path, state: &Path) -> Run {
    cutover(["apply"])
        .arg(plan)
        .arg("--source")
        .arg(source)
        .arg("--target")
        .arg(target)
        .arg("--state")
        .arg(state)
        .args(["--format", "json"])
        .run()
}

/// The running binary, for signals: stdin piped when `stdin`, stdout piped.
fn spawn(args: &[&std::ffi::OsStr], state: &Path, stdin: bool) -> Child {
    Command::new(env!("CARGO_BIN_EXE_cutover"))
        .args(args)
        .arg("--state")
        .arg(state)
        .stdin(if stdin { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn send(signal: &str, child: &Child) {
    let status = Command::new("kill").args(["-s", signal]).arg(child.id().to_string()).status().unwrap();
    assert!(status.success(), "kill -s {signal}");
}

/// Waits (up to 60 s) until `ready` holds or the child has exited; true when `ready` held first.
fn wait_for(child: &mut Child, ready: impl Fn() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if ready() {
            return true;
        }
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    panic!("the run neither got there nor exited in 60 s");
}

/// Exit code, stdout and stderr of a finished child.
fn finish(child: Child) -> (i32, String, String) {
    let out = child.wait_with_output().unwrap();
    let code = out.status.code().unwrap_or_else(|| panic!("killed by a signal: {:?}", out.status));
    (code, String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Every entry below `root` whose name cutover could have made (a temp or a journal).
fn ours(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().as_bytes();
            if name.windows(13).any(|w| w == b".cutover-tmp.") || name.starts_with(b".cutover-journal") {
                found.push(path.clone());
            }
            if std::fs::symlink_metadata(&path).unwrap().is_dir() {
                stack.push(path);
            }
        }
    }
    found
}

/// The journals in `state` (any target).
fn journals(state: &Path) -> Vec<PathBuf> {
    let trees = std::fs::read_dir(state.join("trees")).into_iter().flatten();
    let files = trees.flat_map(|tree| std::fs::read_dir(tree.unwrap().path()).unwrap());
    files.map(|f| f.unwrap().path()).filter(|p| p.file_name().unwrap().as_bytes().starts_with(b"journal.")).collect()
}

/// `rsync -naHS --specials --devices -i --delete SRC/ DST/` lists nothing. The root directory's
/// own line (`./`) is left out: its attributes are another part of the promise.
#[track_caller]
fn assert_rsync_equal(source: &Path, target: &Path) {
    let slash = |p: &Path| format!("{}/", p.display());
    let out = Command::new("rsync")
        .args(["-naHS", "--specials", "--devices", "-i", "--delete"])
        .arg(slash(source))
        .arg(slash(target))
        .output()
        .expect("rsync must be installed to judge the result");
    let listed: Vec<_> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|line| !line.ends_with(" ./"))
        .map(str::to_string)
        .collect();
    assert!(out.status.success() && listed.is_empty(), "rsync would still change: {listed:?}");
}

/// A plan copying a 12 MiB file and a few small ones into an empty target, and its bundle.
fn copy_fixture() -> (Tree, Tree, Tree, PathBuf, PathBuf) {
    let (source, target, work) = (Tree::new(), Tree::new(), Tree::new());
    source.file("big.bin", noise(1, 12 << 20));
    for i in 0..5 {
        source.file(&format!("small/s{i}"), noise(10 + i, 3000));
    }
    let (p, b) = (work.at("plan.json"), work.at("plan.bundle"));
    plan(source.path(), target.path(), &p, &[]).expect_code(1);
    cutover(["bundle"]).arg(&p).arg("--source").arg(source.path()).arg("-o").arg(&b).run().expect_code(0);
    (source, target, work, p, b)
}

/// The bundle's bytes up to the end of its `records`-th record.
fn bundle_prefix(bundle: &[u8], records: usize) -> &[u8] {
    let line_end = |from: usize| from + bundle[from..].iter().position(|&b| b == b'\n').unwrap() + 1;
    let mut at = line_end(0);
    for _ in 0..records {
        let end = line_end(at);
        let header: serde_json::Value = serde_json::from_slice(&bundle[at..end]).unwrap();
        at = end + header["length"].as_u64().unwrap() as usize;
    }
    &bundle[..at]
}

// ---------------------------------------------------------------------------------------------
// Temporary files: only what this tool provably made
// ---------------------------------------------------------------------------------------------

#[test]
fn a_user_file_named_like_a_temp_survives_repair_and_goes_only_as_an_extra() {
    let (source, target) = (Tree::new(), Tree::new());
    source.file("data", "the new data");
    target.file("data", "the old data").file(".data.cutover-tmp.999.1", "mine");
    target.file(".data.cutover-tmp.0123456789abcdef.1", "mine too");
    cutover(["repair"]).arg(source.path()).arg(target.path()).run().expect_code(1);
    assert_eq!(std::fs::read(target.at(".data.cutover-tmp.999.1")).unwrap(), b"mine");
    assert_eq!(std::fs::read(target.at(".data.cutover-tmp.0123456789abcdef.1")).unwrap(), b"mine too");
    assert_eq!(std::fs::read(target.at("data")).unwrap(), b"the new data", "the repair itself ran");
    // With --delete they go, as the extras the plan lists, and nothing else does (--force:
    // they are two of the target's three entries, which the delete guard would refuse).
    let run =
        cutover(["repair", "--delete", "--force", "--format", "json"]).arg(source.path()).arg(target.path()).run();
    assert_eq!(run.expect_code(0).json()["entries_deleted"], 2);
    assert_rsync_equal(source.path(), target.path());
}

#[test]
fn temps_a_journal_lists_are_removed_and_an_older_plans_journal_is_retired() {
    let (source, target, work, state) = (Tree::new(), Tree::new(), Tree::new(), Tree::new());
    source.file("sub/f", "new");
    target.file("sub/f", "old");
    let p = work.at("plan.json");
    plan(source.path(), target.path(), &p, &[]).expect_code(1);
    // What a run of an older plan killed with SIGKILL leaves: a journal naming its nonce and
    // the directory, and a temp there; beside it a user's file with another nonce.
    let (old_run, other) = ("00112233445566aa", "99887766554433bb");
    target.file(&format!("sub/.f.cutover-tmp.{old_run}.0"), "half a copy");
    target.file(&format!("sub/.f.cutover-tmp.{other}.0"), "a user's");
    let tree = state.at("trees").join(cutover::state::tree_key(&std::fs::canonicalize(target.path()).unwrap()));
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("journal.0123abcd0123abcd0123abcd0123abcd"), format!("temps {old_run} c3Vi\nstart 0\n"))
        .unwrap();

    let run = apply(&p, source.path(), target.path(), state.path()).expect_code(0);
    assert_eq!(run.json()["stale_temps_removed"], 1);
    assert!(!target.at(&format!("sub/.f.cutover-tmp.{old_run}.0")).exists(), "the recorded temp is removed");
    assert!(target.at(&format!("sub/.f.cutover-tmp.{other}.0")).exists(), "an unrecorded one is not");
    assert_eq!(journals(state.path()), Vec::<PathBuf>::new(), "the older plan's journal is retired");
}

#[test]
fn repair_removes_stale_temps_before_it_scans() {
    let (source, target, state) = (Tree::new(), Tree::new(), Tree::new());
    source.file("f", "same");
    target.file("f", "same").file(".f.cutover-tmp.00112233445566aa.3", "left by a killed run");
    let tree = state.at("trees").join(cutover::state::tree_key(&std::fs::canonicalize(target.path()).unwrap()));
    std::fs::create_dir_all(&tree).unwrap();
    std::fs::write(tree.join("journal.ffff"), "temps 00112233445566aa \n").unwrap();
    let run = cutover(["repair", "--delete", "--format", "json", "--state"])
        .arg(state.path())
        .arg(source.path())
        .arg(target.path())
        .run()
        .expect_code(0);
    let report = run.json();
    // Removed as a leftover, not planned and deleted as an extra.
    assert_eq!((report["stale_temps_removed"].as_u64(), report["entries_deleted"].as_u64()), (Some(1), Some(0)));
    assert_eq!((report["done"].as_u64(), report["already_done"].as_u64()), (Some(0), Some(0)), "{report}");
    assert_eq!(ours(target.path()), Vec::<PathBuf>::new());
}

#[test]
fn a_state_directory_inside_the_source_or_the_target_is_refused_before_anything_is_written() {
    let (source, target) = (Tree::new(), Tree::new());
    source.file("f", "x");
    for inside in [source.at("state"), target.at("deeper/state"), target.path().to_path_buf()] {
        let run = cutover(["repair", "--state"]).arg(&inside).arg(source.path()).arg(target.path()).run();
        let run = run.expect_code(2);
        assert!(run.stderr.contains("lies inside"), "{}", run.stderr);
    }
    assert_eq!(std::fs::read_dir(source.path()).unwrap().count(), 1, "nothing was made in the source");
    assert_eq!(std::fs::read_dir(target.path()).unwrap().count(), 0, "nor in the target");
}

// ---------------------------------------------------------------------------------------------
// One run at a time per target
// ---------------------------------------------------------------------------------------------

#[test]
fn a_second_run_on_a_target_in_use_exits_3_naming_the_holder_and_the_first_completes() {
    let (source, target, work, p, b) = copy_fixture();
    let state = work.at("state");
    let args = [&b"apply"[..], p.as_os_str().as_bytes(), b"--bundle", b"-", b"--target"];
    let mut args: Vec<&std::ffi::OsStr> = args.iter().map(|a| std::ffi::OsStr::from_bytes(a)).collect();
    args.push(target.path().as_os_str());
    // Holds the lock, then waits for its bundle on stdin.
    let mut first = spawn(&args, &state, true);
    let holder = || {
        std::fs::read_dir(state.join("trees")).into_iter().flatten().any(|t| t.unwrap().path().join("holder").exists())
    };
    assert!(wait_for(&mut first, holder), "the first run never took the lock");

    let second = cutover(["repair", "--state"]).arg(&state).arg(source.path()).arg(target.path()).run();
    let second = second.expect_code(3);
    assert!(
        second.stderr.contains(&format!("pid {}", first.id())) && second.stderr.contains("cutover apply"),
        "the message names the holder: {}",
        second.stderr
    );
    // The lock is on the directory itself: a run with another state directory is refused too.
    let elsewhere = work.at("other-state");
    let third = cutover(["repair", "--state"]).arg(&elsewhere).arg(source.path()).arg(target.path()).run();
    let third = third.expect_code(3);
    assert!(third.stderr.contains("another cutover run"), "{}", third.stderr);
    assert_eq!(std::fs::read_dir(target.path()).unwrap().count(), 0, "the refused runs wrote nothing");

    let mut stdin = first.stdin.take().unwrap();
    stdin.write_all(&std::fs::read(&b).unwrap()).unwrap();
    drop(stdin);
    let (code, stdout, stderr) = finish(first);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert_rsync_equal(source.path(), target.path());
    // Free again.
    cutover(["repair", "--state"]).arg(&state).arg(source.path()).arg(target.path()).run().expect_code(0);
}

#[test]
fn a_directory_locked_by_another_process_is_refused_with_exit_3() {
    let (source, target) = (Tree::new(), Tree::new());
    source.file("f", "x");
    // flock(1) on the directory, as another tool (or cutover with another state directory) holds it.
    let mut holder = Command::new("flock").arg(target.path()).args(["sleep", "60"]).spawn().unwrap();
    let busy = || !Command::new("flock").arg("-n").arg(target.path()).arg("true").status().unwrap().success();
    assert!(wait_for(&mut holder, busy), "flock(1) never took the lock");
    let run = cutover(["repair"]).arg(source.path()).arg(target.path()).run();
    holder.kill().unwrap();
    holder.wait().unwrap();
    let run = run.expect_code(3);
    assert!(run.stderr.contains("its details are not in"), "{}", run.stderr);
    assert!(!target.at("f").exists());
}

// ---------------------------------------------------------------------------------------------
// Signals: stop at a safe point, leave nothing in the target, resume with the same plan
// ---------------------------------------------------------------------------------------------

#[test]
fn a_signal_during_a_copy_stops_it_cleanly_and_the_same_plan_then_completes() {
    for (signal, code) in [("INT", 130), ("TERM", 143), ("HUP", 129)] {
        let (source, target, work, p, b) = copy_fixture();
        let state = work.at("state");
        let bundle = std::fs::read(&b).unwrap();
        let mut args: Vec<&std::ffi::OsStr> =
            ["apply".as_ref(), p.as_os_str(), "--bundle".as_ref(), "-".as_ref(), "--format".as_ref()].into();
        args.extend(["json".as_ref(), "--target".as_ref(), target.path().as_os_str()]);
        let mut run = spawn(&args, &state, true);
        // Three of big.bin's twelve chunks: the copy is under way, its temp file open.
        let mut stdin = run.stdin.take().unwrap();
        stdin.write_all(bundle_prefix(&bundle, 3)).unwrap();
        assert!(wait_for(&mut run, || !ours(target.path()).is_empty()), "the copy never started");
        send(signal, &run);
        // The next chunk arrives; the copy stops before writing another.
        let _ = stdin.write_all(&bundle[bundle_prefix(&bundle, 3).len()..]);
        drop(stdin);
        let (exit, stdout, stderr) = finish(run);
        assert_eq!(exit, code, "SIG{signal}: {stdout}{stderr}");
        let report: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(report["interrupted"], format!("SIG{signal}"));
        assert_eq!(ours(target.path()), Vec::<PathBuf>::new(), "SIG{signal} left a temp");
        assert!(!target.at("big.bin").exists(), "a copy cut short never reaches its name");

        if signal == "HUP" {
            // What stopped it leaves nothing for a later repair to trip over: it plans anew,
            // retires the journal and ends identical.
            cutover(["repair", "--state"]).arg(&state).arg(source.path()).arg(target.path()).run().expect_code(0);
        } else {
            apply(&p, source.path(), target.path(), &state).expect_code(0);
        }
        assert_rsync_equal(source.path(), target.path());
        assert_eq!(journals(&state), Vec::<PathBuf>::new());
    }
}

#[test]
fn a_signal_during_an_in_place_patch_keeps_the_journal_and_the_same_plan_finishes_the_file() {
    const CHUNK: usize = 64 * 1024;
    let big = noise(7, 48 << 20);
    let mut old = big.clone();
    for c in (0..big.len() / CHUNK).step_by(2) {
        old[c * CHUNK + 7] ^= 0xff;
    }
    let (source, target, work) = (Tree::new(), Tree::new(), Tree::new());
    source.file("big.bin", &big);
    target.file("big.bin", &old);
    let (p, state) = (work.at("plan.json"), work.at("state"));
    plan(source.path(), target.path(), &p, &["--chunk-size", "64K"]).expect_code(1);
    let args: Vec<&std::ffi::OsStr> = ["apply".as_ref(), p.as_os_str(), "--format".as_ref(), "json".as_ref()].into();
    let mut run = spawn(&args, &state, false);
    // The journal appears with `start 0`, right before the first write in place.
    if !wait_for(&mut run, || !journals(&state).is_empty()) {
        panic!("the patch finished before it could be interrupted: {:?}", finish(run));
    }
    // Frozen there, so the signal lands mid-patch however fast the machine is.
    send("STOP", &run);
    send("TERM", &run);
    send("CONT", &run);
    let (code, stdout, stderr) = finish(run);
    assert_eq!(code, 143, "{stdout}{stderr}");
    assert_eq!(ours(target.path()), Vec::<PathBuf>::new());
    assert_eq!(journals(&state).len(), 1, "the journal stays for the next run");
    assert_ne!(std::fs::read(target.at("big.bin")).unwrap(), big, "stopped part way");

    let again = apply(&p, source.path(), target.path(), &state).expect_code(0);
    assert_eq!(again.json()["failed"], serde_json::json!([]));
    assert_rsync_equal(source.path(), target.path());
    assert_eq!(journals(&state), Vec::<PathBuf>::new());
}

#[test]
fn a_signal_while_writing_an_output_file_removes_its_temp() {
    let (source, work) = (Tree::new(), Tree::new());
    source.file("big.bin", noise(3, 96 << 20));
    let p = work.at("plan.json");
    work.dir("empty");
    plan(source.path(), &work.at("empty"), &p, &[]).expect_code(1);
    let out = work.at("out.bundle");
    let args: Vec<&std::ffi::OsStr> =
        ["bundle".as_ref(), p.as_os_str(), "-o".as_ref(), out.as_os_str(), "--source".as_ref()].into();
    let mut args = args;
    args.push(source.path().as_os_str());
    let mut run = Command::new(env!("CARGO_BIN_EXE_cutover")).args(&args).stderr(Stdio::piped()).spawn().unwrap();
    let temp = || {
        std::fs::read_dir(work.path())
            .unwrap()
            .any(|e| e.unwrap().file_name().as_bytes().starts_with(b"out.bundle.tmp-"))
    };
    assert!(wait_for(&mut run, temp), "the bundle was written before it could be interrupted");
    send("STOP", &run);
    send("INT", &run);
    send("CONT", &run);
    let (code, _, stderr) = finish(run);
    assert_eq!(code, 130, "{stderr}");
    let left: Vec<_> = std::fs::read_dir(work.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left.len(), 2, "only the plan and the empty target are left: {left:?}");
    assert!(!out.exists());
}

// ---------------------------------------------------------------------------------------------
// A full disk, a target that does not exist yet
// ---------------------------------------------------------------------------------------------

/// A tmpfs of `size` mounted at `at`, unmounted on drop; `None` where mounting is not allowed.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(at: PathBuf, size: &str) -> Option<SmallDisk> {
        std::fs::create_dir_all(&at).unwrap();
        let out = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(&at).output();
        out.ok()?.status.success().then_some(SmallDisk(at))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_patch_cut_short_by_a_full_disk_says_so_and_the_same_plan_completes_it() {
    const CHUNK: usize = 64 * 1024;
    let (source, work) = (Tree::new(), Tree::new());
    let Some(disk) = SmallDisk::mount(work.at("disk"), "4m") else {
        eprintln!("note: cannot mount a tmpfs here (not root?); not checked");
        return;
    };
    let target = disk.0.join("target");
    // 1 MiB in the target grows to 3 MiB: chunks inside it are rewritten, then new ones added.
    let big = noise(9, 3 << 20);
    let mut old = big[..1 << 20].to_vec();
    old[7] ^= 0xff;
    old[5 * CHUNK] ^= 0xff;
    source.file("big.bin", &big);
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("big.bin"), &old).unwrap();
    let (p, state) = (work.at("plan.json"), work.at("state"));
    plan(source.path(), &target, &p, &["--chunk-size", "64K"]).expect_code(1);
    // Fill the disk to about 1.5 MiB short, so the patch starts and runs out of space.
    let mut filler = std::fs::File::create(disk.0.join("filler")).unwrap();
    let free = rustix::fs::statvfs(&disk.0).unwrap();
    let room = free.f_bavail * free.f_frsize;
    filler.write_all(&vec![1; room as usize - (3 << 19)]).unwrap();
    drop(filler);

    let run = apply(&p, source.path(), &target, &state).expect_code(2);
    let reason = run.json()["failed"][0]["reason"].as_str().unwrap_or_default().to_string();
    assert!(
        reason.contains("No space left") || reason.contains("os error 28"),
        "the cause is named: {}",
        run.stdout_text()
    );
    assert!(
        reason.contains("partly patched") && reason.contains("running the same plan again completes it"),
        "{reason}"
    );
    std::fs::remove_file(disk.0.join("filler")).unwrap();
    apply(&p, source.path(), &target, &state).expect_code(0);
    assert_rsync_equal(source.path(), &target);
    assert_eq!(ours(&target), Vec::<PathBuf>::new());
}

#[test]
fn repair_into_a_directory_that_does_not_exist_yet_creates_it() {
    let (source, work) = (Tree::new(), Tree::new());
    source.file("a/b", "bee").file("c", "sea").symlink("l", "c");
    let target = work.at("new");
    cutover(["repair"]).arg(source.path()).arg(&target).run().expect_code(0);
    assert_rsync_equal(source.path(), &target);
    // Never inside the source.
    let run = cutover(["repair"]).arg(source.path()).arg(source.at("a/new")).run().expect_code(2);
    assert!(run.stderr.contains("inside the source"), "{}", run.stderr);
    assert!(!source.at("a/new").exists());
    // Its parent must exist, as with rsync.
    let deeper = work.at("no/such/dir");
    cutover(["repair"]).arg(source.path()).arg(&deeper).run().expect_code(2);
    assert!(!work.at("no").exists());
}
