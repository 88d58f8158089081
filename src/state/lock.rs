//! One run at a time per tree.
//!
//! The lock is `flock(2)` on the tree's own directory: it is invisible (nothing is created in
//! the tree), covers every path and every user that reaches the same directory, and the kernel
//! drops it when the holder dies, however it dies. Where the filesystem refuses `flock` on a
//! directory, a lock file in the state directory is locked instead. Who holds the lock (pid,
//! host, start time, command) is written to the state directory, so a second run can say.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

use rustix::fs::{FlockOperation, flock};
use rustix::io::Errno;

use super::{StateError, TreeState};

mod shared;

const HOLDER: &str = "holder";
const LOCK_FILE: &str = "lock";

/// Another run holds the lock.
#[derive(Debug, thiserror::Error)]
#[error("{tree}: another cutover run is working on it ({holder}); try again when it has finished")]
pub struct Busy {
    pub tree: String,
    /// Who holds it, as far as the state directory says.
    pub holder: String,
}

/// An exclusive lock on a tree, held until dropped.
#[derive(Debug)]
pub struct TreeLock {
    // Closing the descriptor releases the lock.
    _locked: OwnedFd,
    /// A shard's group and own locks (see `shared.rs`); empty for a whole run.
    _shard: Vec<OwnedFd>,
    state: TreeState,
}

impl TreeLock {
    /// Locks `dir`, an open descriptor of the tree's directory, for `command`; fails at once
    /// with [`Busy`] when another run holds it.
    pub fn acquire(dir: OwnedFd, state: TreeState, command: &str) -> Result<TreeLock, StateError> {
        let locked = match flock(&dir, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => dir,
            Err(Errno::WOULDBLOCK) => return Err(busy(&state).into()),
            // NFS without lock support, some FUSE filesystems: lock a file of our own instead.
            Err(_) => lock_file(&state)?,
        };
        let lock = TreeLock { _locked: locked, _shard: Vec::new(), state };
        lock.write_holder(command)?;
        Ok(lock)
    }

    /// The state of the locked tree.
    pub fn state(&self) -> &TreeState {
        &self.state
    }

    fn write_holder(&self, command: &str) -> Result<(), StateError> {
        let host = rustix::system::uname().nodename().to_string_lossy().into_owned();
        let text = format!(
            "pid {}\nhost {host}\nstarted {}\ncommand {command}\n",
            std::process::id(),
            crate::time::now_rfc3339()
        );
        self.state.replace(HOLDER, text.as_bytes())?;
        self.state.replace("tree", self.state.tree().as_os_str().as_encoded_bytes())
    }
}

impl Drop for TreeLock {
    fn drop(&mut self) {
        // Still held here: the descriptor closes after this. The shards of a sharded run leave
        // it: the others may still be running.
        if !self.is_shared() {
            let _ = self.state.remove_file(HOLDER);
        }
    }
}

/// The fallback: `flock` on `STATE/trees/<key>/lock`.
fn lock_file(state: &TreeState) -> Result<OwnedFd, StateError> {
    let path = state.dir().join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(super::io_err("open", &path))?;
    match flock(file.as_fd(), FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(file.into()),
        Err(Errno::WOULDBLOCK) => Err(busy(state).into()),
        Err(e) => Err(super::io_err("lock", &path)(e.into())),
    }
}

/// What the state directory says about the holder.
fn busy(state: &TreeState) -> Busy {
    let fields = state.read(HOLDER).map(|bytes| String::from_utf8_lossy(&bytes).into_owned()).unwrap_or_default();
    let field =
        |name: &str| fields.lines().find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')).map(str::to_string);
    let holder = match (field("pid"), field("host"), field("started"), field("command")) {
        (Some(pid), Some(host), Some(started), command) => {
            format!("cutover {} as pid {pid} on {host}, started {started}", command.as_deref().unwrap_or("run"))
        }
        _ => format!(
            "its details are not in {}: it may use another state directory, or be just starting",
            state.dir().display()
        ),
    };
    Busy { tree: state.tree().display().to_string(), holder }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::StateDir;

    pub(super) fn open_dir(path: &std::path::Path) -> OwnedFd {
        std::fs::File::open(path).unwrap().into()
    }

    #[test]
    fn a_second_lock_is_refused_naming_the_first_holder_and_freed_on_drop() {
        let (tree, dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let state = StateDir::at(dir.path());
        let first = TreeLock::acquire(open_dir(tree.path()), state.tree(tree.path()).unwrap(), "repair").unwrap();
        let Err(StateError::Busy(busy)) =
            TreeLock::acquire(open_dir(tree.path()), state.tree(tree.path()).unwrap(), "apply")
        else {
            panic!("a second lock was granted")
        };
        let pid = format!("pid {}", std::process::id());
        assert!(busy.holder.contains(&pid) && busy.holder.contains("cutover repair"), "{}", busy.holder);
        drop(first);
        assert!(state.tree(tree.path()).unwrap().read(HOLDER).is_none(), "the holder info goes with the lock");
        TreeLock::acquire(open_dir(tree.path()), state.tree(tree.path()).unwrap(), "apply").unwrap();
    }

    #[test]
    fn the_fallback_lock_file_excludes_a_second_run_too() {
        let (tree, dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let state = StateDir::at(dir.path());
        let first = lock_file(&state.tree(tree.path()).unwrap()).unwrap();
        assert!(matches!(lock_file(&state.tree(tree.path()).unwrap()), Err(StateError::Busy(_))));
        drop(first);
        lock_file(&state.tree(tree.path()).unwrap()).unwrap();
    }
}
