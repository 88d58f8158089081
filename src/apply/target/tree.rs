//! Whole subtrees of the target: counting, searching and removing them.
//!
//! Every walk is a loop over an explicit stack, never a recursion, and keeps one path buffer
//! and the names of the directories still to visit: memory grows with the depth only by a name
//! per level, and descriptors stay bounded (the listing open now plus the kept handles of
//! [`super::handles`]). A mount point below the directory is never entered.

use std::os::fd::{AsFd, BorrowedFd};

use rustix::fs::{self as rfs, AtFlags};
use rustix::io::Errno;

use super::{Entry, NodeKind, TargetError, TargetRoot, ctx, in_writable_dir, is_root_user, mount_point, os};

/// What [`TargetRoot::remove_tree`] deleted: every entry (directories
/// included) and the total size of the regular files among them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RemoveStats {
    pub entries: u64,
    pub bytes: u64,
}

impl RemoveStats {
    fn add(&mut self, node: &super::NodeStat) {
        self.entries += 1;
        if node.kind == NodeKind::File {
            self.bytes += node.size;
        }
    }
}

/// A depth-first walk's position: the path of the directory being looked at, and for it and
/// each directory above it the names of its subdirectories still to visit.
struct Walk {
    path: Vec<u8>,
    /// Per level: where its path ends in `path`, and the subdirectories it has left.
    stack: Vec<(usize, Vec<Vec<u8>>)>,
}

/// What the walk does next.
enum Step {
    /// Descend into `path`, now the directory named.
    Enter,
    /// Everything below `path` is done: leave it (it is the directory at the current level).
    Leave,
}

impl Walk {
    fn new(top: &[u8]) -> Self {
        Walk { path: top.to_vec(), stack: Vec::new() }
    }

    /// Records the subdirectories found in the directory just entered.
    fn entered(&mut self, subdirs: Vec<Vec<u8>>) {
        self.stack.push((self.path.len(), subdirs));
    }

    /// Moves `path` to the next directory to enter, or back to the one to leave; `None` when
    /// the walk is over.
    fn next(&mut self) -> Option<Step> {
        let (end, pending) = self.stack.last_mut()?;
        self.path.truncate(*end);
        match pending.pop() {
            Some(name) => {
                self.path.push(b'/');
                self.path.extend_from_slice(&name);
                Some(Step::Enter)
            }
            None => {
                self.stack.pop();
                Some(Step::Leave)
            }
        }
    }
}

impl TargetRoot {
    /// Calls `visit` for every entry of the directory `dir_rel` (not `.` and `..`) with the open
    /// directory, the entry's name, its path and what `statx` says of it; entries that vanish
    /// meanwhile are skipped.
    fn for_each_child(
        &self,
        dir_rel: &[u8],
        mut visit: impl FnMut(BorrowedFd<'_>, &[u8], &[u8], &Entry) -> Result<(), TargetError>,
    ) -> Result<(), TargetError> {
        let mut dir = self.open_listing(dir_rel)?;
        let mut child = dir_rel.to_vec();
        child.push(b'/');
        let base = child.len();
        while let Some(entry) = dir.read() {
            let entry = entry.map_err(ctx(dir_rel, "read directory"))?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let dfd = dir.fd().map_err(ctx(dir_rel, "read directory"))?;
            child.truncate(base);
            child.extend_from_slice(name);
            if let Some(found) = self.entry_at(dfd, name, &child)? {
                visit(dfd, name, &child, &found)?;
            }
        }
        Ok(())
    }

    /// What is at `rel`, or `None` when nothing (or no parent) is.
    fn lookup(&self, rel: &[u8]) -> Result<Option<Entry>, TargetError> {
        match self.resolve(rel) {
            Ok((parent, name)) => self.entry_at(parent.as_fd(), name, rel),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Visits every entry below the directory `rel` with its path and what `statx` says of it,
    /// until `visit` returns false. A mount point is visited but never entered.
    fn walk_below(&self, rel: &[u8], mut visit: impl FnMut(&[u8], &Entry) -> bool) -> Result<(), TargetError> {
        let mut walk = Walk::new(rel);
        let mut step = Some(Step::Enter);
        let mut going = true;
        while going && let Some(next) = step {
            if let Step::Enter = next {
                let mut subdirs = Vec::new();
                self.for_each_child(&walk.path, |_, name, child, found| {
                    going = going && visit(child, found);
                    if going && found.node.kind == NodeKind::Dir && !found.foreign {
                        subdirs.push(name.to_vec());
                    }
                    Ok(())
                })?;
                walk.entered(subdirs);
            }
            step = walk.next();
        }
        Ok(())
    }

    /// What [`remove_tree`](Self::remove_tree) would delete at `rel` now, without deleting. A
    /// mount point below `rel` counts as one entry: it is never entered. `rel` itself being a
    /// mount point is an error.
    pub fn count_tree(&self, rel: &[u8]) -> Result<RemoveStats, TargetError> {
        let Some(top) = self.lookup(rel)? else {
            return Ok(RemoveStats::default());
        };
        if top.foreign {
            return Err(mount_point(rel, "remove", rel));
        }
        let mut stats = RemoveStats::default();
        stats.add(&top.node);
        if top.node.kind == NodeKind::Dir {
            self.walk_below(rel, |_, found| {
                stats.add(&found.node);
                true
            })?;
        }
        Ok(stats)
    }

    /// The first entry below the directory `rel` that `excludes` matches, if any; a mount
    /// point is not entered.
    pub fn find_in_tree(
        &self,
        rel: &[u8],
        excludes: &crate::exclude::Excludes,
    ) -> Result<Option<Vec<u8>>, TargetError> {
        let Some(top) = self.lookup(rel)?.filter(|_| !excludes.is_empty()) else { return Ok(None) };
        if top.foreign {
            return Err(mount_point(rel, "look into", rel));
        }
        let mut found = None;
        self.walk_below(rel, |child, entry| {
            let is_dir = entry.node.kind == NodeKind::Dir;
            if crate::path::RelPath::parse(child).is_ok_and(|path| excludes.excludes(&path, is_dir)) {
                found = Some(child.to_vec());
            }
            found.is_none()
        })?;
        Ok(found)
    }

    /// Removes what is at `rel`, a directory with its whole subtree (`rm -rf` that never leaves
    /// the subtree: a symlink, even to a directory, is unlinked, not entered). An absent `rel`
    /// removes nothing. Never enters, nor removes, a mount point: `rel` being one, or finding
    /// one below it, is an error (after what was removed before it), so nothing on another
    /// filesystem or bind mount is deleted, whatever a plan says.
    pub fn remove_tree(&self, rel: &[u8]) -> Result<RemoveStats, TargetError> {
        let mut stats = RemoveStats::default();
        self.remove_tree_into(rel, &mut stats)?;
        Ok(stats)
    }

    /// [`remove_tree`](Self::remove_tree), adding to `stats` what it deleted, also when it
    /// stops part way with an error.
    pub fn remove_tree_into(&self, rel: &[u8], stats: &mut RemoveStats) -> Result<(), TargetError> {
        let (parent, name) = match self.resolve(rel) {
            Err(e) if e.is_not_found() => return Ok(()),
            r => r?,
        };
        let Some(top) = self.entry_at(parent.as_fd(), name, rel)? else {
            return Ok(());
        };
        if top.foreign {
            return Err(mount_point(rel, "remove", rel));
        }
        if top.node.kind != NodeKind::Dir {
            in_writable_dir(parent.as_fd(), || rfs::unlinkat(&parent, os(name), AtFlags::empty()))
                .map_err(ctx(rel, "remove"))?;
            stats.add(&top.node);
            return Ok(());
        }
        drop(parent);
        let mut walk = Walk::new(rel);
        let mut step = Some(Step::Enter);
        while let Some(next) = step {
            match next {
                Step::Enter => {
                    let subdirs = self.clear_dir(&walk.path, stats)?;
                    walk.entered(subdirs);
                }
                Step::Leave => {
                    let (parent, name) = self.resolve(&walk.path)?;
                    in_writable_dir(parent.as_fd(), || rfs::unlinkat(&parent, os(name), AtFlags::REMOVEDIR))
                        .map_err(ctx(&walk.path, "remove directory"))?;
                    stats.entries += 1;
                }
            }
            step = walk.next();
        }
        Ok(())
    }

    /// Unlinks everything in the directory `dir` but its subdirectories, whose names it returns.
    /// A directory this (unprivileged) user owns without the write bit gets it, as rsync
    /// `--delete` does: it is about to be removed.
    fn clear_dir(&self, dir: &[u8], stats: &mut RemoveStats) -> Result<Vec<Vec<u8>>, TargetError> {
        let mut subdirs = Vec::new();
        let mut made_writable = false;
        self.for_each_child(dir, |dfd, name, child, found| {
            if found.foreign {
                return Err(mount_point(child, "remove", child));
            }
            if found.node.kind == NodeKind::Dir {
                subdirs.push(name.to_vec());
                return Ok(());
            }
            let unlink = || rfs::unlinkat(dfd, os(name), AtFlags::empty());
            match unlink() {
                Err(Errno::ACCESS) if !made_writable && !is_root_user() => {
                    made_writable = true;
                    make_writable(dfd).map_err(ctx(dir, "make writable"))?;
                    unlink()
                }
                r => r,
            }
            .map_err(ctx(child, "remove"))?;
            stats.add(&found.node);
            Ok(())
        })?;
        Ok(subdirs)
    }
}

/// Adds the owner write bit to a directory this user owns (an open descriptor of it).
fn make_writable(dir: BorrowedFd<'_>) -> Result<(), Errno> {
    let st = rfs::fstat(dir)?;
    if st.st_uid != rustix::process::geteuid().as_raw() || st.st_mode & 0o200 != 0 {
        return Err(Errno::ACCESS);
    }
    rfs::fchmod(dir.as_fd(), rfs::Mode::from_bits_truncate((st.st_mode | 0o200) & 0o7777))
}
