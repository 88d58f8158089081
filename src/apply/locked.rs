//! A target held for one run: its root opened, its lock taken, and what earlier runs left
//! resolved before anything else happens.

use std::os::fd::AsFd;
use std::path::Path;

use rustix::fs::{Mode, OFlags};

use super::ApplyError;
use super::journal::Recorded;
use super::target::{TargetError, TargetRoot};
use crate::state::lock::TreeLock;
use crate::state::{StateDir, TreeState};

/// A target root that this run alone may write: the lock is held until the value is dropped.
#[derive(Debug)]
pub struct LockedTarget {
    root: TargetRoot,
    lock: TreeLock,
}

impl LockedTarget {
    /// Opens the target and takes its lock for `command` ("apply", "repair"), failing at once
    /// when another run holds it ([`crate::state::StateError::Busy`]). Its state lives in
    /// `state`.
    pub fn open(target: &Path, state: &StateDir, command: &str) -> Result<LockedTarget, ApplyError> {
        Self::open_as(target, state, command, None)
    }

    /// [`LockedTarget::open`] for one shard of a sharded run: the shards of plan `group` share
    /// the target, each shard (`member`, the id of its part) once (see `state::lock`).
    pub fn open_shard(
        target: &Path,
        state: &StateDir,
        command: &str,
        group: &str,
        member: &str,
    ) -> Result<LockedTarget, ApplyError> {
        Self::open_as(target, state, command, Some((group, member)))
    }

    fn open_as(
        target: &Path,
        state: &StateDir,
        command: &str,
        shard: Option<(&str, &str)>,
    ) -> Result<LockedTarget, ApplyError> {
        let root = TargetRoot::open(target)?;
        state.check_outside(target)?;
        // `flock` needs a descriptor opened for reading; this one names exactly the directory
        // the root was opened on.
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let dir = rustix::fs::openat(root.as_fd(), c".", flags, Mode::empty()).map_err(|e| TargetError::Io {
            path: target.display().to_string(),
            op: "open target root",
            cause: e.into(),
        })?;
        let canonical = std::fs::canonicalize(target).map_err(|cause| TargetError::Io {
            path: target.display().to_string(),
            op: "resolve target root",
            cause,
        })?;
        let tree = state.tree(&canonical)?;
        let lock = match shard {
            None => TreeLock::acquire(dir, tree, command)?,
            Some((group, member)) => TreeLock::acquire_shared(dir, tree, command, group, member)?,
        };
        Ok(LockedTarget { root, lock })
    }

    /// For a shard whose own operations are done: whether it is the last of its run still
    /// working, and so the one to set the directories' metadata (see `state::lock`).
    pub fn finish_shard(&mut self) -> Result<bool, ApplyError> {
        Ok(self.lock.finish_shard()?)
    }

    /// The target as given.
    pub fn path(&self) -> &Path {
        self.root.path()
    }

    pub(super) fn root(&self) -> &TargetRoot {
        &self.root
    }

    pub(super) fn state(&self) -> &TreeState {
        self.lock.state()
    }

    /// Resolves what earlier runs left: the temporary files their journals list are removed
    /// (their writers are gone: we hold the lock), and every journal but that of plan `keep`
    /// is retired. `keep`'s journal stays, for this run to resume. Returns how many temps were
    /// removed. `repair` calls this before it scans, so that leftovers never show as extras.
    /// A shard of a sharded run resolves only its own journal (`keep`): the other shards' may
    /// be in use; a whole run resolves theirs.
    pub fn clean_stale(&self, keep: Option<&str>) -> Result<u64, ApplyError> {
        let state = self.state();
        let mut removed = 0;
        for id in state.journal_ids()? {
            if self.lock.is_shared() && keep != Some(id.as_str()) {
                continue;
            }
            let Some(bytes) = state.read_journal(&id)? else { continue };
            let recorded = Recorded::parse(&bytes);
            for (dir, nonces) in recorded.temps_by_dir() {
                match self.root.remove_temps_in(dir, &nonces) {
                    Ok(n) => removed += n,
                    // The directory was replaced by a symlink or a file, or something is mounted
                    // over it: our temps went with it, or are out of reach and never written.
                    Err(TargetError::SymlinkInPath { .. } | TargetError::MountPoint { .. }) => {}
                    Err(e) if e.is_not_found() => {}
                    Err(e) => return Err(e.into()),
                }
            }
            if keep != Some(id.as_str()) {
                state.remove_journal(&id)?;
            }
        }
        Ok(removed)
    }
}
