//! Helpers for the specification tests: fixture trees built in code, a runner for the
//! `cutover` binary that never hangs and never tolerates a panic, and a view of JSON reports.

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

/// A relative path inside a tree, as the exact bytes of its name (so non-UTF-8 names work).
pub fn rel(path: &(impl AsRef<[u8]> + ?Sized)) -> &Path {
    Path::new(OsStr::from_bytes(path.as_ref()))
}

/// Deterministic pseudo-random bytes: the same `(seed, len)` always gives the same content.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

/// A directory tree in a fresh temporary directory, removed when dropped.
///
/// Every builder method takes the path relative to the tree's root, creates missing parent
/// directories, and returns `&Self` so a fixture reads as a list:
/// `tree.file("a/b.txt", b"hi").symlink("l", "a").fifo("p")`.
#[derive(Debug)]
pub struct Tree {
    dir: tempfile::TempDir,
}

impl Default for Tree {
    fn default() -> Self {
        Self::new()
    }
}

impl Tree {
    pub fn new() -> Tree {
        let dir = tempfile::Builder::new().prefix("cutover-spec-").tempdir().expect("create a temporary directory");
        // World-readable, so a run as an unprivileged user can read what it is meant to.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        Tree { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The absolute path of `relative` inside the tree.
    pub fn at(&self, relative: &(impl AsRef<[u8]> + ?Sized)) -> PathBuf {
        self.path().join(rel(relative))
    }

    fn parent_of(&self, relative: &(impl AsRef<[u8]> + ?Sized)) -> PathBuf {
        let path = self.at(relative);
        let parent = path.parent().expect("a path inside the tree").to_path_buf();
        std::fs::create_dir_all(&parent).unwrap_or_else(|e| panic!("create {}: {e}", parent.display()));
        path
    }

    /// A regular file holding `bytes` (replacing any file already there), mode 0644.
    pub fn file(&self, relative: &(impl AsRef<[u8]> + ?Sized), bytes: impl AsRef<[u8]>) -> &Self {
        let path = self.parent_of(relative);
        std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        self
    }

    /// A directory (and its parents), mode 0755.
    pub fn dir(&self, relative: &(impl AsRef<[u8]> + ?Sized)) -> &Self {
        let path = self.at(relative);
        std::fs::create_dir_all(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        self
    }

    /// A symlink whose text is `target`, exactly (relative, absolute or dangling).
    pub fn symlink(&self, relative: &(impl AsRef<[u8]> + ?Sized), target: impl AsRef<Path>) -> &Self {
        let path = self.parent_of(relative);
        std::os::unix::fs::symlink(target, &path).unwrap_or_else(|e| panic!("symlink {}: {e}", path.display()));
        self
    }

    /// A named pipe nobody writes to: opening it for reading would block forever.
    pub fn fifo(&self, relative: &(impl AsRef<[u8]> + ?Sized)) -> &Self {
        let path = self.parent_of(relative);
        let mode = rustix::fs::Mode::from_raw_mode(0o644);
        rustix::fs::mknodat(rustix::fs::CWD, &path, rustix::fs::FileType::Fifo, mode, 0)
            .unwrap_or_else(|e| panic!("mkfifo {}: {e}", path.display()));
        self
    }

    /// Permission bits of an existing entry.
    pub fn mode(&self, relative: &(impl AsRef<[u8]> + ?Sized), mode: u32) -> &Self {
        let path = self.at(relative);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
        self
    }

    /// Modification time of an existing file or directory.
    pub fn mtime(&self, relative: &(impl AsRef<[u8]> + ?Sized), sec: u64, nsec: u32) -> &Self {
        let path = self.at(relative);
        let time = SystemTime::UNIX_EPOCH + Duration::new(sec, nsec);
        let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
        file.set_modified(time).unwrap_or_else(|e| panic!("set mtime of {}: {e}", path.display()));
        self
    }

    /// Overwrites bytes of an existing file at `offset`, keeping its size and mode.
    pub fn patch(&self, relative: &(impl AsRef<[u8]> + ?Sized), offset: u64, bytes: &[u8]) -> &Self {
        use std::os::unix::fs::FileExt;
        let file = std::fs::OpenOptions::new().write(true).open(self.at(relative)).unwrap();
        file.write_all_at(bytes, offset).unwrap();
        self
    }

    /// Truncates or extends (with a hole) an existing file.
    pub fn set_len(&self, relative: &(impl AsRef<[u8]> + ?Sized), len: u64) -> &Self {
        let file = std::fs::OpenOptions::new().write(true).open(self.at(relative)).unwrap();
        file.set_len(len).unwrap();
        self
    }

    /// Removes a file, symlink or whole directory.
    pub fn remove(&self, relative: &(impl AsRef<[u8]> + ?Sized)) -> &Self {
        let path = self.at(relative);
        let meta = std::fs::symlink_metadata(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if meta.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) }
            .unwrap_or_else(|e| panic!("remove {}: {e}", path.display()));
        self
    }

    /// An exact copy (`cp -a`: modes, times, symlinks and FIFOs preserved) in a new tree.
    pub fn copy(&self) -> Tree {
        let copy = Tree::new();
        let status =
            Command::new("cp").arg("-a").arg(self.path().join(".")).arg(copy.path()).status().expect("run cp -a");
        assert!(status.success(), "cp -a failed");
        copy
    }
}

/// What a finished `cutover` run left behind.
#[derive(Debug)]
pub struct Run {
    pub status: std::process::ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Run {
    /// The exit code; a death by signal is a failure in its own right.
    #[track_caller]
    pub fn code(&self) -> i32 {
        self.status.code().unwrap_or_else(|| panic!("killed by a signal: {:?}\nstderr: {}", self.status, self.stderr))
    }

    pub fn stdout_text(&self) -> String {
        String::from_utf8(self.stdout.clone()).expect("stdout is UTF-8")
    }

    #[track_caller]
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}\nstderr: {}", self.stdout_text(), self.stderr))
    }

    #[track_caller]
    pub fn report(&self) -> Report {
        Report(self.json())
    }

    /// Asserts the exit code, showing everything the run printed when it is wrong.
    #[track_caller]
    pub fn expect_code(self, code: i32) -> Self {
        assert_eq!(
            self.code(),
            code,
            "unexpected exit code\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&self.stdout),
            self.stderr
        );
        self
    }
}

/// One invocation of the `cutover` binary under test.
#[derive(Debug)]
pub struct Cutover {
    command: Command,
    stdin: Vec<u8>,
    timeout: Duration,
}

/// The state directory every test run of cutover uses (not the user's own): trees are fresh
/// temporary directories, so their state never mixes.
pub fn test_state_dir() -> PathBuf {
    std::env::temp_dir().join("cutover-spec-state")
}

/// `cutover ARGS...`; add more with `.arg()`, then `.run()`.
pub fn cutover<S: AsRef<OsStr>>(args: impl IntoIterator<Item = S>) -> Cutover {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cutover"));
    command.env("CUTOVER_STATE_DIR", test_state_dir()).args(args);
    Cutover { command, stdin: Vec::new(), timeout: Duration::from_secs(120) }
}

impl Cutover {
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.command.arg(arg);
        self
    }

    pub fn args<S: AsRef<OsStr>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.command.args(args);
        self
    }

    pub fn stdin(mut self, bytes: Vec<u8>) -> Self {
        self.stdin = bytes;
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Runs to completion (killing it and failing the test after the timeout). Whatever the
    /// input, cutover must never panic.
    #[track_caller]
    pub fn run(self) -> Run {
        let description = format!("{:?}", self.command);
        let run = run_with_timeout(self.command, self.stdin, self.timeout);
        assert!(!run.stderr.contains("panicked"), "cutover panicked: {description}\nstderr: {}", run.stderr);
        run
    }
}

/// Runs any command with piped stdio; fails the test if it outlives `timeout`.
#[track_caller]
pub fn run_with_timeout(mut command: Command, stdin: Vec<u8>, timeout: Duration) -> Run {
    let description = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {description}: {e}"));
    let mut input = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        // The command may exit without reading everything; that is its business.
        let _ = input.write_all(&stdin);
    });
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        out.read_to_end(&mut buf).map(|_| buf)
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        err.read_to_end(&mut buf).map(|_| buf)
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{description} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    feeder.join().unwrap();
    let stdout = out_reader.join().unwrap().unwrap();
    let stderr = String::from_utf8_lossy(&err_reader.join().unwrap().unwrap()).into_owned();
    Run { status, stdout, stderr }
}

/// `cutover diff SOURCE TARGET --format json EXTRA...`
#[track_caller]
pub fn diff_json(source: &Path, target: &Path, extra: &[&str]) -> Run {
    cutover(["diff"]).arg(source).arg(target).args(["--format", "json"]).args(extra).run()
}

/// A parsed `cutover-diff/1` report.
#[derive(Debug, Clone)]
pub struct Report(pub Value);

impl Report {
    pub fn differences(&self) -> &[Value] {
        self.0["differences"].as_array().expect("differences is an array")
    }

    /// `(path, kind)` of every difference, in report order.
    pub fn kinds(&self) -> Vec<(String, String)> {
        self.differences().iter().map(|d| (d["path"].as_str().unwrap().to_string(), kind(d).to_string())).collect()
    }

    /// The only difference at `path`.
    #[track_caller]
    pub fn at(&self, path: &str) -> &Value {
        let found: Vec<&Value> = self.differences().iter().filter(|d| d["path"] == path).collect();
        assert_eq!(found.len(), 1, "expected exactly one difference at {path:?} in {:#}", self.0);
        found[0]
    }

    /// `(offset, length)` of each range of the content difference at `path`.
    #[track_caller]
    pub fn ranges(&self, path: &str) -> Vec<(u64, u64)> {
        ranges(self.at(path))
    }

    #[track_caller]
    pub fn summary(&self, field: &str) -> u64 {
        self.0["summary"][field].as_u64().unwrap_or_else(|| panic!("summary.{field} in {:#}", self.0))
    }
}

pub fn kind(difference: &Value) -> &str {
    difference["kind"].as_str().expect("a difference has a kind")
}

pub fn ranges(difference: &Value) -> Vec<(u64, u64)> {
    difference["ranges"]
        .as_array()
        .unwrap_or_else(|| panic!("no ranges in {difference:#}"))
        .iter()
        .map(|r| (r["offset"].as_u64().unwrap(), r["length"].as_u64().unwrap()))
        .collect()
}

/// True when this process runs as root (as CI does), where permission bits do not stop reads.
pub fn running_as_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// The `b3sum` to judge cutover by: on PATH or in ~/.cargo/bin. Its absence fails the test
/// unless CUTOVER_SKIP_B3SUM is set, so a CI without it cannot pass silently.
pub fn b3sum() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).map(|dir| dir.join("b3sum")).collect::<Vec<_>>())
        .unwrap_or_default();
    let in_cargo = std::env::var_os("HOME").map(|home| Path::new(&home).join(".cargo/bin/b3sum"));
    let found = on_path.into_iter().chain(in_cargo).find(|candidate| candidate.is_file());
    if found.is_none() {
        assert!(
            std::env::var_os("CUTOVER_SKIP_B3SUM").is_some(),
            "b3sum is not installed (cargo install b3sum); set CUTOVER_SKIP_B3SUM=1 to skip the b3sum oracle"
        );
        eprintln!("note: b3sum not found and CUTOVER_SKIP_B3SUM is set: skipping the b3sum oracle");
    }
    found
}

/// The binary under test, copied where an unprivileged user can run it, and a command prefix
/// that drops to user `nobody` (via `setpriv`), or runs directly when we are not root.
/// `None` (after a printed note) when neither is possible.
#[derive(Debug)]
pub struct Unprivileged {
    home: Tree,
    binary: PathBuf,
    as_root: bool,
}

impl Unprivileged {
    pub fn new() -> Option<Unprivileged> {
        let home = Tree::new();
        let binary = home.at("cutover");
        std::fs::copy(env!("CARGO_BIN_EXE_cutover"), &binary).unwrap();
        std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).unwrap();
        let as_root = running_as_root();
        if as_root && !Command::new("setpriv").arg("--version").output().is_ok_and(|o| o.status.success()) {
            eprintln!("note: running as root without setpriv: permission-denied cases cannot be staged, skipped");
            return None;
        }
        // A state directory the unprivileged user can write.
        home.dir("state");
        if as_root {
            std::os::unix::fs::chown(home.at("state"), Some(65534), Some(65534)).unwrap();
        }
        Some(Unprivileged { home, binary, as_root })
    }

    /// `cutover ARGS...` as the unprivileged user.
    pub fn cutover<S: AsRef<OsStr>>(&self, args: impl IntoIterator<Item = S>) -> Cutover {
        let mut command = if self.as_root {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups"]).arg(&self.binary);
            c
        } else {
            Command::new(&self.binary)
        };
        command.env("CUTOVER_STATE_DIR", self.home.at("state")).args(args);
        Cutover { command, stdin: Vec::new(), timeout: Duration::from_secs(60) }
    }
}

/// A tmpfs mounted at a directory for the life of the value; `None` where mounting is not
/// allowed (not root).
pub struct Mounted(pub PathBuf);

impl Mounted {
    pub fn tmpfs(at: PathBuf) -> Option<Mounted> {
        let out = Command::new("mount").args(["-t", "tmpfs", "tmpfs"]).arg(&at).output().ok()?;
        out.status.success().then_some(Mounted(at))
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// A bind mount of `from` at `at`, undone when dropped. `None` (after a note) where mounting
/// is not allowed. (Used by the repair test binaries, not by `cli`.)
#[allow(dead_code)]
pub struct Bind(PathBuf);

#[allow(dead_code)]
impl Bind {
    pub fn new(from: &Path, at: &Path) -> Option<Bind> {
        let done = Command::new("mount").arg("--bind").arg(from).arg(at).output().ok()?.status.success();
        if !done {
            eprintln!("note: cannot bind-mount here (not root?); not checked");
        }
        done.then(|| Bind(at.to_path_buf()))
    }
}

impl Drop for Bind {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}
