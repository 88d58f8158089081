//! Trees deeper than any stack: 10,000 directories, paths five times PATH_MAX. Nothing may
//! recurse as deep as the tree (a stack overflow aborts with exit 134), nor hold a descriptor
//! per level.

use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rustix::fs::{AtFlags, Mode, OFlags};

use crate::support::{Mounted, Run, Tree, cutover, run_with_timeout, running_as_root};

const DEPTH: usize = 10_000;

/// A tree of `DEPTH` directories `d/d/d/...` with a file `f` at the bottom holding `bottom`; with
/// `side_dirs`, every level also has an empty directory `e` after `d`, so every directory still
/// has one to enter when the walk goes down `d`. Built relative to the previous directory, as
/// the paths are longer than PATH_MAX.
struct Deep {
    /// A tmpfs of its own when we may mount one: building and removing 10,000 levels on disk
    /// takes seconds, unmounting a tmpfs none.
    mount: Option<Mounted>,
    tree: Tree,
}

impl Deep {
    fn new(bottom: Option<&[u8]>, side_dirs: bool) -> Deep {
        let tree = Tree::new();
        let mount = if running_as_root() { Mounted::tmpfs(tree.path().to_path_buf()) } else { None };
        let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let mut dir: OwnedFd = rustix::fs::open(tree.path(), dir_flags, Mode::empty()).unwrap();
        for _ in 0..DEPTH {
            rustix::fs::mkdirat(&dir, "d", Mode::from(0o755)).unwrap();
            if side_dirs {
                rustix::fs::mkdirat(&dir, "e", Mode::from(0o755)).unwrap();
            }
            dir = rustix::fs::openat(&dir, "d", dir_flags, Mode::empty()).unwrap();
        }
        if let Some(bottom) = bottom {
            let file_flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC;
            let file = rustix::fs::openat(&dir, "f", file_flags, Mode::from(0o644)).unwrap();
            rustix::io::write(&file, bottom).unwrap();
        }
        Deep { mount, tree }
    }

    fn path(&self) -> &Path {
        self.tree.path()
    }

    /// The bottom directory, reached relative to each directory in turn.
    fn bottom_dir(&self) -> OwnedFd {
        let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mut dir = rustix::fs::open(self.path(), dir_flags, Mode::empty()).unwrap();
        for _ in 0..DEPTH {
            dir = rustix::fs::openat(&dir, "d", dir_flags, Mode::empty()).unwrap();
        }
        dir
    }

    /// Replaces the bottom file's content, or removes it.
    fn set_bottom(&self, bottom: Option<&[u8]>) {
        let dir = self.bottom_dir();
        let _ = rustix::fs::unlinkat(&dir, "f", AtFlags::empty());
        if let Some(bottom) = bottom {
            let file_flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC;
            let file = rustix::fs::openat(&dir, "f", file_flags, Mode::from(0o644)).unwrap();
            rustix::io::write(&file, bottom).unwrap();
        }
    }

    /// The bottom file's content.
    fn bottom(&self) -> Option<Vec<u8>> {
        let dir = self.bottom_dir();
        let file = rustix::fs::openat(&dir, "f", OFlags::RDONLY | OFlags::NOFOLLOW, Mode::empty()).ok()?;
        let mut content = vec![0; 4096];
        let n = rustix::io::read(&file, &mut content).unwrap();
        content.truncate(n);
        Some(content)
    }
}

impl Drop for Deep {
    /// Empties the chain from the bottom up, climbing through `..` (linear in depth, one
    /// descriptor at a time; `rm -rf` takes tens of seconds), unless unmounting does it.
    fn drop(&mut self) {
        if self.mount.is_some() {
            return;
        }
        let dir_flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let Ok(mut dir) = rustix::fs::open(self.path(), dir_flags, Mode::empty()) else { return };
        let mut depth = 0;
        while let Ok(below) = rustix::fs::openat(&dir, "d", dir_flags, Mode::empty()) {
            dir = below;
            depth += 1;
        }
        for _ in 0..=depth {
            let names: Vec<std::ffi::CString> = rustix::fs::Dir::read_from(&dir)
                .unwrap()
                .filter_map(Result::ok)
                .map(|item| item.file_name().to_owned())
                .filter(|name| name.as_bytes() != b"." && name.as_bytes() != b"..")
                .collect();
            for name in names {
                if rustix::fs::unlinkat(&dir, &name, AtFlags::empty()).is_err() {
                    let _ = rustix::fs::unlinkat(&dir, &name, AtFlags::REMOVEDIR);
                }
            }
            match rustix::fs::openat(&dir, "..", dir_flags, Mode::empty()) {
                Ok(up) => dir = up,
                Err(_) => return,
            }
        }
    }
}

fn bottom_path() -> String {
    "d/".repeat(DEPTH) + "f"
}

/// `cutover ARGS...` allowed only `limit` open descriptors (`ulimit -n`).
fn cutover_with_fds<S: AsRef<OsStr>>(limit: u32, args: impl IntoIterator<Item = S>) -> Run {
    let mut command = Command::new("sh");
    command.arg("-c").arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\"")).arg(env!("CARGO_BIN_EXE_cutover"));
    command.args(args);
    let run = run_with_timeout(command, Vec::new(), Duration::from_secs(300));
    assert!(!run.stderr.contains("panicked"), "cutover panicked: {}", run.stderr);
    run
}

#[test]
fn a_chain_10000_directories_deep_scans_diffs_and_plans() {
    let source = Deep::new(Some(b"bottom\n"), false);
    let other = Deep::new(Some(b"bottom\n"), false);
    let scanned = cutover_with_fds(64, [OsStr::new("scan"), source.path().as_os_str()]).expect_code(0);
    assert!(String::from_utf8_lossy(&scanned.stdout).contains("10002 entries, 1 file"), "{scanned:?}");

    cutover(["diff"]).arg(source.path()).arg(other.path()).run().expect_code(0);
    let manifests = Tree::new();
    cutover(["scan", "-o"]).arg(manifests.at("source.manifest")).arg(source.path()).run().expect_code(0);
    cutover(["diff"]).arg(manifests.at("source.manifest")).arg(other.path()).run().expect_code(0);

    other.set_bottom(Some(b"bottom, changed\n"));
    let diff = cutover(["diff", "--format", "json"]).arg(source.path()).arg(other.path()).run().expect_code(1);
    assert_eq!(diff.report().kinds(), [(bottom_path(), "content".to_string())]);

    cutover(["plan", "-o"]).arg(manifests.at("plan.json")).arg(source.path()).arg(other.path()).run().expect_code(1);
    let plan: serde_json::Value = serde_json::from_slice(&std::fs::read(manifests.at("plan.json")).unwrap()).unwrap();
    let operations = plan["operations"].as_array().unwrap();
    let copies: Vec<&str> =
        operations.iter().filter(|op| op["op"] == "copy").map(|op| op["path"].as_str().unwrap()).collect();
    assert_eq!(copies, [bottom_path()], "{operations:?}");
}

#[test]
fn a_tree_10000_deep_with_a_subdirectory_left_at_every_level_walks_with_256_descriptors() {
    let source = Deep::new(Some(b"bottom\n"), true);
    let other = Deep::new(Some(b"bottom\n"), true);
    let scanned = cutover_with_fds(256, [OsStr::new("scan"), source.path().as_os_str()]).expect_code(0);
    assert!(String::from_utf8_lossy(&scanned.stdout).contains("20002 entries, 1 file"), "{scanned:?}");
    let diff = [OsStr::new("diff"), source.path().as_os_str(), other.path().as_os_str()];
    cutover_with_fds(256, diff).expect_code(0);
    other.set_bottom(Some(b"bottom, changed\n"));
    let changed = cutover_with_fds(256, diff).expect_code(1);
    let shown = String::from_utf8_lossy(&changed.stdout);
    assert!(shown.starts_with(&format!("content    {}  ", bottom_path())), "{shown}");
}

#[test]
fn repair_of_a_chain_10000_deep_copies_the_missing_bottom_file() {
    let source = Deep::new(Some(b"bottom\n"), false);
    let target = Deep::new(None, false);
    cutover(["repair"]).arg(source.path()).arg(target.path()).timeout(Duration::from_secs(300)).run().expect_code(0);
    assert_eq!(target.bottom().as_deref(), Some(&b"bottom\n"[..]));
    cutover(["diff"]).arg(source.path()).arg(target.path()).run().expect_code(0);
}
