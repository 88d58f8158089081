//! The lock of a sharded run (`apply --shard I/N`): the shards of one plan work on a tree at
//! once, and nothing else does.
//!
//! Each shard holds the tree's lock shared (a whole run holds it exclusive, so neither starts
//! while the other works), the plan's group lock `sharded.<plan id>` shared (so that shards of
//! another plan are refused), and its own `shard.<part id>` exclusive (so that one shard does not
//! run twice at once). The files are in the tree's state directory; a shard takes them while
//! it holds `gate` exclusive, which is where a lock file no one holds any more is removed.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

use rustix::fs::{FlockOperation, flock};
use rustix::io::Errno;

use super::{Busy, LOCK_FILE, TreeLock, busy};
use crate::state::{StateError, TreeState};

const GATE: &str = "gate";
const GROUP_PREFIX: &str = "sharded.";
const MEMBER_PREFIX: &str = "shard.";
const COUNT_PREFIX: &str = "shards.";

impl TreeLock {
    /// Locks `dir` for shard `member` (the id of its part of the plan) of the sharded run of
    /// plan `group`; fails at once with [`Busy`] when a whole run, a run of another plan's
    /// shards, or this same shard holds the tree.
    pub fn acquire_shared(
        dir: OwnedFd,
        state: TreeState,
        command: &str,
        (group, count): (&str, u32),
        member: &str,
    ) -> Result<TreeLock, StateError> {
        let gate = open(&state, GATE)?;
        flock(gate.as_fd(), FlockOperation::LockExclusive).map_err(lock_err(&state, GATE))?;
        check_count(&state, group, count)?;
        let locked = match flock(&dir, FlockOperation::NonBlockingLockShared) {
            Ok(()) => dir,
            Err(Errno::WOULDBLOCK) => return Err(busy(&state).into()),
            Err(_) => try_lock(&state, LOCK_FILE, FlockOperation::NonBlockingLockShared)?,
        };
        for name in lock_names(&state, GROUP_PREFIX)? {
            if name == format!("{GROUP_PREFIX}{group}") {
                continue;
            }
            // Held by no one: left by shards that have all finished.
            drop(try_lock(&state, &name, FlockOperation::NonBlockingLockExclusive)?);
            let _ = std::fs::remove_file(state.dir().join(&name));
        }
        for name in lock_names(&state, MEMBER_PREFIX)? {
            // A shard's own lock that no one holds is left by a finished shard.
            if let Ok(free) = try_lock(&state, &name, FlockOperation::NonBlockingLockExclusive) {
                let _ = std::fs::remove_file(state.dir().join(&name));
                drop(free);
            }
        }
        let group_lock = try_lock(&state, &format!("{GROUP_PREFIX}{group}"), FlockOperation::NonBlockingLockShared)?;
        let member_lock =
            try_lock(&state, &format!("{MEMBER_PREFIX}{member}"), FlockOperation::NonBlockingLockExclusive)?;
        let lock = TreeLock { _locked: locked, _shard: vec![group_lock, member_lock], state };
        lock.write_holder(command)?;
        drop(gate);
        Ok(lock)
    }

    /// Called by a shard whose own operations are done: `true` when it is the last shard of its
    /// run still working, and then it holds the run's locks exclusive (no shard of the plan
    /// starts until it is dropped); `false` when others still work, and then it has let go of
    /// its share of the run, so that the last of them finds itself alone.
    pub fn finish_shard(&mut self) -> Result<bool, StateError> {
        let gate = open(&self.state, GATE)?;
        flock(gate.as_fd(), FlockOperation::LockExclusive).map_err(lock_err(&self.state, GATE))?;
        let Some(group) = self._shard.first() else { return Ok(true) };
        match flock(group.as_fd(), FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {
                self._shard.push(gate.into());
                Ok(true)
            }
            Err(Errno::WOULDBLOCK) => {
                let _ = flock(group.as_fd(), FlockOperation::Unlock);
                Ok(false)
            }
            Err(e) => Err(lock_err(&self.state, GATE)(e)),
        }
    }

    /// Whether this is one shard's lock of a sharded run.
    pub fn is_shared(&self) -> bool {
        !self._shard.is_empty()
    }
}

/// The shard count of plan `group` is kept in `shards.<plan id>`, by the first shard to start:
/// shards cut with another count would leave operations that no shard owns, and every shard
/// would still finish with nothing left to do. (Left in place: small, and a plan is applied
/// once.)
fn check_count(state: &TreeState, group: &str, count: u32) -> Result<(), StateError> {
    use std::io::{Read, Write};
    let name = format!("{COUNT_PREFIX}{group}");
    let mut file = open(state, &name)?;
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(crate::state::io_err("read", &state.dir().join(&name)))?;
    match text.trim().parse::<u32>() {
        Ok(was) if was != count => {
            Err(StateError::ShardCount { tree: state.tree().display().to_string(), was, now: count })
        }
        Ok(_) => Ok(()),
        Err(_) => {
            let write = |file: &mut std::fs::File| writeln!(file, "{count}").and_then(|()| file.sync_all());
            write(&mut file).map_err(crate::state::io_err("write", &state.dir().join(&name)))
        }
    }
}

fn open(state: &TreeState, name: &str) -> Result<std::fs::File, StateError> {
    let path = state.dir().join(name);
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(crate::state::io_err("open", &path))
}

fn lock_err(state: &TreeState, name: &str) -> impl FnOnce(Errno) -> StateError {
    let path = state.dir().join(name);
    move |e| crate::state::io_err("lock", &path)(e.into())
}

/// `flock(op)` on the state file `name`, or [`Busy`] when someone holds it.
fn try_lock(state: &TreeState, name: &str, op: FlockOperation) -> Result<OwnedFd, StateError> {
    let file = open(state, name)?;
    match flock(file.as_fd(), op) {
        Ok(()) => Ok(file.into()),
        Err(Errno::WOULDBLOCK) => {
            Err(StateError::Busy(Busy { tree: state.tree().display().to_string(), holder: holder(state, name) }))
        }
        Err(e) => Err(lock_err(state, name)(e)),
    }
}

fn holder(state: &TreeState, name: &str) -> String {
    let whose = if name.starts_with(MEMBER_PREFIX) {
        "this shard of the plan is running already"
    } else {
        "the shards of another plan are running"
    };
    format!("{whose}; {}", busy(state).holder)
}

fn lock_names(state: &TreeState, prefix: &str) -> Result<Vec<String>, StateError> {
    let dir = state.dir();
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(crate::state::io_err("read", dir))? {
        let entry = entry.map_err(crate::state::io_err("read", dir))?;
        if let Some(name) = entry.file_name().to_str().filter(|n| n.starts_with(prefix)) {
            names.push(name.to_string());
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::StateDir;
    use crate::state::lock::tests::open_dir;

    #[test]
    fn the_shards_of_one_plan_share_a_tree_and_nothing_else_does() {
        let (tree, dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let state = StateDir::at(dir.path());
        let tree_state = || state.tree(tree.path()).unwrap();
        let shard = |group: &str, member: &str| {
            TreeLock::acquire_shared(open_dir(tree.path()), tree_state(), "apply --shard", (group, 2), member)
        };
        let busy = |result: Result<TreeLock, StateError>| matches!(result, Err(StateError::Busy(_)));
        let mut one = shard("aa", "a1").unwrap();
        let two = shard("aa", "a2").unwrap();
        assert!(busy(shard("aa", "a1")), "the same shard twice");
        assert!(busy(shard("bb", "b1")), "a shard of another plan");
        assert!(busy(TreeLock::acquire(open_dir(tree.path()), tree_state(), "apply")), "a whole run");
        assert!(!one.finish_shard().unwrap(), "shard 2 still works");
        let mut two = two;
        assert!(two.finish_shard().unwrap(), "shard 2 is the last");
        drop((one, two));
        // All gone: another plan's shards and whole runs may start; the old lock files go.
        drop(shard("bb", "b1").unwrap());
        assert!(!dir.path().join("trees").read_dir().unwrap().any(|key| {
            std::fs::read_dir(key.unwrap().path()).unwrap().any(|f| f.unwrap().file_name() == "sharded.aa")
        }));
        drop(TreeLock::acquire(open_dir(tree.path()), tree_state(), "apply").unwrap());
    }
}
