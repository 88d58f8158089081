//! Hard links and special files: the `link`, `mknod` and `unshare` operations, and the rule
//! that decides when an inode with several names may be changed in place.

use super::{Run, Step, failed};
use crate::apply::Outcome;
use crate::apply::target::NodeKind;
use crate::manifest::Kind;
use crate::path::RelPath;
use crate::plan::{Attrs, Found};

impl Run<'_, '_> {
    /// Whether every name of the inode at `path` is `path` itself or a name the plan links to
    /// it, so that a change made through it reaches no name it must not (perhaps outside the
    /// target, or in the source).
    pub(in crate::apply) fn owns_inode(&self, path: &RelPath) -> Step<bool> {
        let Some(now) = self.root.identity(path.as_bytes()).map_err(failed)? else { return Ok(true) };
        if now.nlink <= 1 {
            return Ok(true);
        }
        let mut sharing = 0;
        for name in self.plan.followers(path) {
            if self.root.identity(name.as_bytes()).map_err(failed)?.is_some_and(|id| id.same_inode(&now)) {
                sharing += 1;
            }
        }
        Ok(now.nlink == 1 + sharing)
    }

    /// Makes `path` another name of the inode at `to`, replacing what the plan saw there.
    pub(super) fn link(
        &mut self,
        path: &RelPath,
        to: &RelPath,
        kind: Kind,
        size: Option<u64>,
        replaces: Option<&Found>,
    ) -> Step<Outcome> {
        if self.report.problems.iter().any(|(at, _, _)| at.rel().is_ok_and(|p| p == *to)) {
            return Err(Outcome::Skipped(format!("{} was not repaired, so nothing is linked to it", to.display())));
        }
        let first = match self.root.identity(to.as_bytes()).map_err(failed)? {
            Some(first) if first.kind == kind => first,
            Some(first) => {
                return Err(Outcome::Skipped(format!("expected a {kind} at {}, found a {}", to.display(), first.kind)));
            }
            None => return Err(Outcome::Skipped(format!("{} is not there to link to", to.display()))),
        };
        if let Some(size) = size
            && self.stat(to)?.is_some_and(|found| found.size != size)
        {
            return Err(Outcome::Skipped(format!("{} does not have the source's size", to.display())));
        }
        match self.root.identity(path.as_bytes()).map_err(failed)? {
            Some(now) if now.same_inode(&first) => return Ok(Outcome::AlreadyDone),
            None if replaces.is_none() => {}
            None => return Err(Outcome::Skipped("the entry to replace is gone".into())),
            Some(now) => {
                let Some(expect) = replaces.filter(|expect| expect.kind == now.kind && now.kind != Kind::Dir) else {
                    return Err(Outcome::Skipped(format!("a {} is in the way that the plan did not expect", now.kind)));
                };
                let found = self.stat(path)?.ok_or_else(|| Outcome::Skipped("the entry to replace is gone".into()))?;
                let changed_size = expect.size.is_some_and(|size| size != found.size);
                let changed_time = expect.mtime.is_some_and(|t| (t.sec, t.nsec) != (found.mtime_sec, found.mtime_nsec));
                if changed_size || changed_time {
                    return Err(Outcome::Skipped("the file to replace changed since the plan was made".into()));
                }
            }
        }
        self.journal.will_make_temps_in(path.parent().as_bytes()).map_err(Outcome::Failed)?;
        let tmp = self.root.link_temp(to.as_bytes(), path.as_bytes()).map_err(failed)?;
        self.place(&tmp, path)?;
        match self.root.identity(path.as_bytes()).map_err(failed)? {
            Some(now) if now.same_inode(&first) => Ok(Outcome::Done),
            _ => {
                Err(Outcome::Failed(format!("after linking, {} is not the inode of {}", path.display(), to.display())))
            }
        }
    }

    /// Renames the temporary `tmp` over `path` (durable with its batch); the temporary is removed
    /// if that fails, or if it was already another name of the same inode (then `rename` does
    /// nothing).
    fn place(&mut self, tmp: &[u8], path: &RelPath) -> Step<()> {
        let placed = self.root.rename(tmp, path.as_bytes()).map_err(failed);
        if placed.is_err() || self.root.stat(tmp).is_ok_and(|left| left.is_some()) {
            let _ = self.root.remove_file(tmp);
        }
        placed
    }

    /// Creates the FIFO, socket or device node `path`, replacing a node of kind `replaces`.
    pub(super) fn mknod(
        &mut self,
        path: &RelPath,
        kind: Kind,
        rdev: Option<(u32, u32)>,
        replaces: Option<Kind>,
        attrs: &Attrs,
    ) -> Step<Outcome> {
        let rdev = rdev.unwrap_or_default();
        let device = matches!(kind, Kind::CharDevice | Kind::BlockDevice);
        match self.root.identity(path.as_bytes()).map_err(failed)? {
            Some(now) if now.kind == kind && (!device || now.rdev == rdev) => {
                self.set_attrs(path, NodeKind::Other, attrs)?;
                return Ok(Outcome::AlreadyDone);
            }
            None if replaces.is_none() => {}
            None => return Err(Outcome::Skipped(format!("the {kind} to replace is gone"))),
            Some(now) if Some(now.kind) == replaces => {}
            Some(now) => return Err(Outcome::Skipped(format!("a {} is in the way", now.kind))),
        }
        self.journal.will_make_temps_in(path.parent().as_bytes()).map_err(Outcome::Failed)?;
        let tmp = self.root.mknod_temp(path.as_bytes(), kind, attrs.mode, rdev).map_err(failed)?;
        if let Err(outcome) = self.set_attrs_at(&tmp, NodeKind::Other, attrs) {
            let _ = self.root.remove_file(&tmp);
            return Err(outcome);
        }
        self.place(&tmp, path)?;
        Ok(Outcome::Done)
    }

    /// Gives `path` an inode no name outside the plan's links shares.
    pub(super) fn unshare_op(&mut self, path: &RelPath, kind: Kind) -> Step<Outcome> {
        match self.root.identity(path.as_bytes()).map_err(failed)? {
            Some(now) if now.kind == kind => {}
            Some(now) => return Err(Outcome::Skipped(format!("expected a {kind}, found a {}", now.kind))),
            None => return Err(Outcome::Skipped("the entry is gone".into())),
        }
        if self.owns_inode(path)? {
            return Ok(Outcome::AlreadyDone);
        }
        self.unshare(path)?;
        if !self.owns_inode(path)? {
            return Err(Outcome::Failed("it still shares its inode with another name".into()));
        }
        Ok(Outcome::Done)
    }

    /// A new symlink or special file just like the one at `path` (text or device number, mode,
    /// owner, mtime), renamed over it: the same entry on an inode of its own.
    pub(in crate::apply) fn recreate(&mut self, path: &RelPath) -> Step<()> {
        let rel = path.as_bytes();
        let (Some(before), Some(id)) = (self.stat(path)?, self.root.identity(rel).map_err(failed)?) else {
            return Ok(());
        };
        self.journal.will_make_temps_in(path.parent().as_bytes()).map_err(Outcome::Failed)?;
        let tmp = if id.kind == Kind::Symlink {
            let text = self.root.read_link(rel).map_err(failed)?;
            self.root.symlink_temp(&text, rel).map_err(failed)?
        } else {
            self.root.mknod_temp(rel, id.kind, before.mode, id.rdev).map_err(failed)?
        };
        let attrs = Attrs {
            mode: before.mode,
            mtime: crate::plan::Time { sec: before.mtime_sec, nsec: before.mtime_nsec },
            uid: before.uid,
            gid: before.gid,
            xattrs: None,
        };
        let kind = if id.kind == Kind::Symlink { NodeKind::Symlink } else { NodeKind::Other };
        if let Err(outcome) = self.set_attrs_at(&tmp, kind, &attrs) {
            let _ = self.root.remove_file(&tmp);
            return Err(outcome);
        }
        self.place(&tmp, path)
    }
}
