//! State that outlives a run, kept outside the trees cutover works on.
//!
//! This module is the only one that knows where that state lives and how it is written. Layout
//! (docs/plan.md, "State directory"):
//!
//! ```text
//! STATE/trees/<key>/tree               the tree's canonical path, for people
//! STATE/trees/<key>/holder             who holds the tree's lock: pid, host, start time, command
//! STATE/trees/<key>/lock               locked only where the tree's directory cannot be
//! STATE/trees/<key>/journal.<plan id>  apply's journal for one plan (src/apply/journal.rs)
//! STATE/trees/<key>/manifest           the tree's manifest from the last `diff`/`repair --state`
//!                                      run: the next one's cache (with its scrub position)
//! ```
//!
//! `<key>` is the first 32 hex digits of the BLAKE3 hash of the tree's canonical path. Small
//! files are replaced whole (written beside, fsynced, renamed, directory fsynced); journals are
//! appended to and fsynced. Everything is written while the tree's [`lock::TreeLock`] is held,
//! so one run at a time writes a tree's state.

pub mod lock;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Environment variable naming the state directory.
pub const STATE_ENV: &str = "CUTOVER_STATE_DIR";

const JOURNAL_PREFIX: &str = "journal.";
/// The tree's manifest from the last incremental run: the cache of the next one.
const MANIFEST: &str = "manifest";

/// Why state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("no state directory: give --state DIR or set CUTOVER_STATE_DIR (HOME is not set)")]
    NoLocation,
    #[error("state directory: cannot {op} {path}: {cause}")]
    Io { op: &'static str, path: String, cause: std::io::Error },
    #[error(transparent)]
    Busy(#[from] lock::Busy),
    #[error(
        "shards of this plan were started on {tree} with --shard I/{was}; this one says I/{now}: run every shard with the same count (or the whole plan without --shard)"
    )]
    ShardCount { tree: String, was: u32, now: u32 },
    #[error(
        "the state directory {state} lies inside {tree}, where its files would be written into the tree: choose another with --state DIR"
    )]
    Inside { state: String, tree: String },
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StateError {
    let path = path.display().to_string();
    move |cause| StateError::Io { op, path, cause }
}

/// The state directory: `--state DIR`, else `$CUTOVER_STATE_DIR`, else
/// `$XDG_STATE_HOME/cutover`, else `$HOME/.local/state/cutover`.
#[derive(Clone, Debug)]
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    /// Where state lives for this process. `explicit` (from `--state`) wins over the
    /// environment; relative or empty environment values are ignored, as the XDG spec asks.
    pub fn locate(explicit: Option<&Path>) -> Result<StateDir, StateError> {
        if let Some(path) = explicit {
            return Ok(StateDir::at(path));
        }
        let var = |name: &str| std::env::var_os(name).map(PathBuf::from).filter(|p| p.is_absolute());
        if let Some(path) = var(STATE_ENV) {
            return Ok(StateDir::at(path));
        }
        if let Some(xdg) = var("XDG_STATE_HOME") {
            return Ok(StateDir::at(xdg.join("cutover")));
        }
        var("HOME").map(|home| StateDir::at(home.join(".local/state/cutover"))).ok_or(StateError::NoLocation)
    }

    pub fn at(path: impl Into<PathBuf>) -> StateDir {
        StateDir { root: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Refuses a state directory that is `tree` or lies inside it (also through a bind mount):
    /// its files would show as differences in a target and be writes into a source. Checked
    /// before anything is created, from the nearest part of the path that exists.
    pub fn check_outside(&self, tree: &Path) -> Result<(), StateError> {
        use std::os::unix::fs::MetadataExt;
        let Ok(tree_meta) = std::fs::metadata(tree) else { return Ok(()) };
        let absolute = std::path::absolute(&self.root).unwrap_or_else(|_| self.root.clone());
        let Some(existing) = absolute.ancestors().find_map(|dir| std::fs::canonicalize(dir).ok()) else {
            return Ok(());
        };
        let inside = existing
            .ancestors()
            .filter_map(|dir| std::fs::metadata(dir).ok())
            .any(|dir| (dir.dev(), dir.ino()) == (tree_meta.dev(), tree_meta.ino()));
        if inside {
            return Err(StateError::Inside {
                state: self.root.display().to_string(),
                tree: tree.display().to_string(),
            });
        }
        Ok(())
    }

    /// The state of the tree whose canonical path is `canonical`, its directory created
    /// (mode 0700) if needed.
    pub fn tree(&self, canonical: &Path) -> Result<TreeState, StateError> {
        let key = tree_key(canonical);
        let dir = self.root.join("trees").join(&key);
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir).map_err(io_err("create", &dir))?;
        Ok(TreeState { dir, tree: canonical.to_path_buf() })
    }
}

/// The stable name of a tree in the state directory.
pub fn tree_key(canonical: &Path) -> String {
    blake3::hash(canonical.as_os_str().as_bytes()).to_hex()[..32].to_string()
}

/// One tree's corner of the state directory.
#[derive(Debug)]
pub struct TreeState {
    dir: PathBuf,
    tree: PathBuf,
}

impl TreeState {
    /// The directory holding this tree's state.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The tree's canonical path.
    pub fn tree(&self) -> &Path {
        &self.tree
    }

    /// The plan ids that have a journal here.
    pub fn journal_ids(&self) -> Result<Vec<String>, StateError> {
        let mut ids = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(io_err("read", &self.dir))? {
            let entry = entry.map_err(io_err("read", &self.dir))?;
            let name = entry.file_name();
            if let Some(id) = name.to_str().and_then(|n| n.strip_prefix(JOURNAL_PREFIX)).filter(|id| valid_id(id)) {
                ids.push(id.to_string());
            }
        }
        ids.sort();
        Ok(ids)
    }

    fn journal_path(&self, id: &str) -> Result<PathBuf, StateError> {
        if !valid_id(id) {
            return Err(StateError::Io {
                op: "name a journal for",
                path: id.to_string(),
                cause: std::io::Error::other("a plan id is hex digits"),
            });
        }
        Ok(self.dir.join(format!("{JOURNAL_PREFIX}{id}")))
    }

    /// The journal of plan `id`, or `None` when there is none.
    pub fn read_journal(&self, id: &str) -> Result<Option<Vec<u8>>, StateError> {
        let path = self.journal_path(id)?;
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("read", &path)(e)),
        }
    }

    /// The journal of plan `id` opened for appending, created if needed (and its name made
    /// durable before it is used).
    pub fn append_journal(&self, id: &str) -> Result<Appender, StateError> {
        let path = self.journal_path(id)?;
        let existed = path.exists();
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_err("open for appending", &path))?;
        if !existed {
            self.sync_dir()?;
        }
        Ok(Appender { file, path })
    }

    /// Removes the journal of plan `id`, durably; a missing one is fine.
    pub fn remove_journal(&self, id: &str) -> Result<(), StateError> {
        let path = self.journal_path(id)?;
        self.remove(&path)
    }

    /// The manifest of this tree the last incremental run stored (`diff`/`repair --state`), to
    /// be used as a cache; `None` when there is none. A damaged one is an error for the caller
    /// to report and go on without.
    pub fn last_manifest(&self) -> Option<Result<crate::manifest::Manifest, crate::manifest::ManifestError>> {
        let path = self.dir.join(MANIFEST);
        if !path.exists() {
            return None;
        }
        Some(crate::manifest::read_manifest(&path))
    }

    /// Stores `manifest` as this tree's last manifest, replacing the one there atomically:
    /// written beside under a name of this process, fsynced, renamed, directory fsynced.
    pub fn store_manifest(&self, manifest: &crate::manifest::Manifest) -> Result<(), StateError> {
        let path = self.dir.join(MANIFEST);
        let tmp = self.dir.join(format!(".{MANIFEST}.{}.new", std::process::id()));
        let written = (|| {
            let file = OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
            let mut out = std::io::BufWriter::new(file);
            crate::manifest::write_manifest(manifest, &mut out)?;
            out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
            std::fs::rename(&tmp, &path)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written.map_err(io_err("write", &path))?;
        self.sync_dir()
    }

    /// Replaces the file `name` with `bytes`: written beside it, fsynced, renamed, directory
    /// fsynced, so a crash leaves the old or the new content, never a mix.
    pub(crate) fn replace(&self, name: &str, bytes: &[u8]) -> Result<(), StateError> {
        let path = self.dir.join(name);
        // Only the lock holder writes here, so a fixed temp name cannot collide; one left by a
        // killed run is simply truncated.
        let tmp = self.dir.join(format!(".{name}.new"));
        let written = (|| {
            let mut file = OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
            file.write_all(bytes)?;
            file.sync_all()?;
            std::fs::rename(&tmp, &path)
        })();
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written.map_err(io_err("write", &path))?;
        self.sync_dir()
    }

    /// The content of the file `name`, or `None` when it cannot be read.
    pub(crate) fn read(&self, name: &str) -> Option<Vec<u8>> {
        std::fs::read(self.dir.join(name)).ok()
    }

    fn remove(&self, path: &Path) -> Result<(), StateError> {
        match std::fs::remove_file(path) {
            Ok(()) => self.sync_dir(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("remove", path)(e)),
        }
    }

    pub(crate) fn remove_file(&self, name: &str) -> Result<(), StateError> {
        self.remove(&self.dir.join(name))
    }

    fn sync_dir(&self) -> Result<(), StateError> {
        File::open(&self.dir).and_then(|dir| dir.sync_all()).map_err(io_err("sync", &self.dir))
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

/// An append-only state file.
#[derive(Debug)]
pub struct Appender {
    file: File,
    path: PathBuf,
}

impl Appender {
    /// Appends `line` and waits until it is on stable storage.
    pub fn append_durably(&mut self, line: &[u8]) -> Result<(), StateError> {
        self.file.write_all(line).and_then(|()| self.file.sync_data()).map_err(io_err("append to", &self.path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journals_are_listed_read_appended_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::at(dir.path().join("nested/state"));
        let tree = state.tree(Path::new("/srv/data")).unwrap();
        assert!(tree.dir().starts_with(dir.path().join("nested/state/trees")));
        assert_eq!(tree.journal_ids().unwrap(), Vec::<String>::new());
        assert_eq!(tree.read_journal("ab12").unwrap(), None);
        let mut log = tree.append_journal("ab12").unwrap();
        log.append_durably(b"start 1\n").unwrap();
        log.append_durably(b"done 1\n").unwrap();
        assert_eq!(tree.read_journal("ab12").unwrap().unwrap(), b"start 1\ndone 1\n");
        std::fs::write(tree.dir().join("journal.not-hex"), "").unwrap();
        assert_eq!(tree.journal_ids().unwrap(), ["ab12"]);
        assert!(tree.append_journal("../escape").is_err(), "a plan id never names another path");
        tree.remove_journal("ab12").unwrap();
        tree.remove_journal("ab12").unwrap();
        assert_eq!(tree.journal_ids().unwrap(), Vec::<String>::new());
    }

    #[test]
    fn a_tree_is_keyed_by_its_path_and_replace_is_whole() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::at(dir.path());
        let a = state.tree(Path::new("/srv/a")).unwrap();
        let b = state.tree(Path::new("/srv/b")).unwrap();
        assert_ne!(a.dir(), b.dir());
        assert_eq!(state.tree(Path::new("/srv/a")).unwrap().dir(), a.dir());
        a.replace("holder", b"one").unwrap();
        a.replace("holder", b"two").unwrap();
        assert_eq!(a.read("holder").unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(a.dir()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["holder"], "no temp is left beside it");
    }
}
