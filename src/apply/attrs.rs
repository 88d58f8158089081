//! Metadata: setting what an operation leaves behind (mode, owner, mtime, extended
//! attributes), the root directory's own included, and reading it back, since a filesystem
//! may accept a value and store another (a clamped year, a coarser clock): such a value is
//! reported as unrepairable, never as done.

use super::Outcome;
use super::ops::{Run, Step, Wanted, failed, is_root, node_kind};
use super::target::{NodeKind, NodeStat};
use crate::manifest::Kind;
use crate::path::RelPath;
use crate::plan::{Attrs, Xattr};

impl Run<'_, '_> {
    pub(super) fn meta(
        &mut self,
        path: &RelPath,
        kind: Kind,
        wanted: Wanted,
        xattrs: Option<&[Xattr]>,
    ) -> Step<Outcome> {
        let found = match self.stat_node(path)? {
            Some(found) if found.kind == node_kind(kind) => found,
            Some(found) => return Err(Outcome::Skipped(format!("expected a {kind}, found a {}", found.kind))),
            None => return Err(Outcome::Skipped("the entry is gone".into())),
        };
        let wanted = Wanted {
            owner: wanted.owner.filter(|_| is_root()),
            mode: wanted.mode.filter(|_| kind != Kind::Symlink),
            mtime: wanted.mtime,
        };
        let xattrs = match xattrs.filter(|_| matches!(kind, Kind::File | Kind::Dir)) {
            Some(list) => Some(Xattr::decode(list).map_err(Outcome::Failed)?),
            None => None,
        };
        if self.meta_held(path, &found, wanted, xattrs.as_ref())?.is_none() {
            return Ok(Outcome::AlreadyDone);
        }
        if kind != Kind::Dir {
            self.unshare(path)?;
        }
        let rel = path.as_bytes();
        let root = path.is_root();
        if let Some((uid, gid)) = wanted.owner {
            if root { self.root.set_root_owner(uid, gid) } else { self.root.set_owner(rel, uid, gid) }
                .map_err(failed)?;
        }
        if let Some(mode) = wanted.mode {
            if root { self.root.set_root_mode(mode) } else { self.root.set_mode(rel, mode) }.map_err(failed)?;
        }
        if let Some(desired) = &xattrs {
            if root { self.root.set_root_xattrs(desired) } else { self.root.set_xattrs(rel, desired) }
                .map_err(failed)?;
        }
        if let Some((sec, nsec)) = wanted.mtime {
            if root { self.root.set_root_mtime(sec, nsec) } else { self.root.set_mtime(rel, sec, nsec) }
                .map_err(failed)?;
        }
        // Read back: a filesystem may accept a value and store another (a clamped year, a
        // coarser clock, a mode it cannot hold). That difference cannot be repaired here.
        let now = self.stat_node(path)?.ok_or_else(|| Outcome::Failed("the entry vanished".into()))?;
        match self.meta_held(path, &now, wanted, xattrs.as_ref())? {
            None => Ok(Outcome::Done),
            Some(field) => {
                Err(Outcome::Failed(format!("{field}: the target filesystem cannot store it (unrepairable)")))
            }
        }
    }

    /// `lstat` of `path`, the root included.
    pub(super) fn stat_node(&self, path: &RelPath) -> Step<Option<NodeStat>> {
        if path.is_root() { self.root.root_stat().map(Some).map_err(failed) } else { self.stat(path) }
    }

    /// The first wanted field `found` does not have, described; `None` when all hold.
    fn meta_held(
        &self,
        path: &RelPath,
        found: &NodeStat,
        wanted: Wanted,
        xattrs: Option<&crate::manifest::Xattrs>,
    ) -> Step<Option<String>> {
        if let Some(owner) = wanted.owner.filter(|o| *o != (found.uid, found.gid)) {
            return Ok(Some(format!("owner {}:{} was set, {}:{} is stored", owner.0, owner.1, found.uid, found.gid)));
        }
        if let Some(mode) = wanted.mode.filter(|m| *m != found.mode) {
            return Ok(Some(format!("mode {mode:04o} was set, {:04o} is stored", found.mode)));
        }
        if let Some(mtime) = wanted.mtime.filter(|t| !same_mtime(*t, (found.mtime_sec, found.mtime_nsec), 0)) {
            return Ok(Some(format!(
                "mtime {} was set, {} is stored",
                time_text(mtime),
                time_text((found.mtime_sec, found.mtime_nsec))
            )));
        }
        if let Some(desired) = xattrs {
            let now = if path.is_root() { self.root.root_xattrs() } else { self.root.xattrs(path.as_bytes()) };
            if now.map_err(failed)?.map(|x| *x).unwrap_or_default() != *desired {
                return Ok(Some("the extended attributes were set and read back different".into()));
            }
        }
        Ok(None)
    }

    pub(super) fn set_attrs(&mut self, path: &RelPath, kind: NodeKind, attrs: &Attrs) -> Step<()> {
        if kind != NodeKind::Dir {
            self.unshare(path)?;
        }
        self.set_attrs_at(path.as_bytes(), kind, attrs)?;
        self.check_attrs(path, kind, attrs)
    }

    /// Gives an entry whose inode has other names (besides those the plan links to it) an inode
    /// of its own: a private copy renamed over it, so setting its metadata cannot change its
    /// other names, which may be outside the target or even in the source.
    pub(super) fn unshare(&mut self, path: &RelPath) -> Step<()> {
        let rel = path.as_bytes();
        let kind = match self.root.stat(rel).map_err(failed)? {
            Some(found) if found.kind != NodeKind::Dir && found.nlink > 1 => found.kind,
            _ => return Ok(()),
        };
        if self.owns_inode(path)? {
            return Ok(());
        }
        if kind != NodeKind::File {
            return self.recreate(path);
        }
        let Some(before) = self.root.stat(rel).map_err(failed)? else { return Ok(()) };
        // The rename changes the directory's mtime, which nothing in the plan puts back.
        let parent = path.parent();
        let parent_before = self.stat_node(&parent)?;
        let xattrs = self.root.xattrs(rel).map_err(failed)?;
        let mut original = self.root.open_read(rel).map_err(failed)?;
        let (mut copy, tmp) = self.create_temp(rel)?;
        // The copy keeps everything the original had, so fields the plan leaves alone stay.
        let done = std::io::copy(&mut original, &mut copy)
            .and_then(|_| copy.sync_all())
            .map_err(failed)
            .and_then(|()| {
                if is_root() { self.root.set_owner(&tmp, before.uid, before.gid).map_err(failed) } else { Ok(()) }
            })
            .and_then(|()| self.root.set_mode(&tmp, before.mode).map_err(failed))
            .and_then(|()| match &xattrs {
                Some(xattrs) => self.root.set_xattrs(&tmp, xattrs).map_err(failed),
                None => Ok(()),
            })
            .and_then(|()| self.root.set_mtime(&tmp, before.mtime_sec, before.mtime_nsec).map_err(failed))
            // The copy's data was synced above (its bytes are checked by nothing later); the
            // rename is durable with the batch.
            .and_then(|()| self.root.rename(&tmp, rel).map_err(failed));
        if done.is_err() {
            let _ = self.root.remove_file(&tmp);
            return done;
        }
        match parent_before {
            Some(dir) if parent.is_root() => self.root.set_root_mtime(dir.mtime_sec, dir.mtime_nsec),
            Some(dir) => self.root.set_mtime(parent.as_bytes(), dir.mtime_sec, dir.mtime_nsec),
            None => Ok(()),
        }
        .map_err(failed)
    }

    /// Reads back what [`set_attrs_at`](Self::set_attrs_at) set on `path`: a value the target
    /// filesystem did not keep fails the operation (its content is in place), so a repair
    /// never reports it done. Times within two seconds pass here (a FAT clock); a `meta`
    /// operation, which runs only where times are compared, asks for them exactly.
    pub(super) fn check_attrs(&self, path: &RelPath, kind: NodeKind, attrs: &Attrs) -> Step<()> {
        let found = self.stat(path)?.ok_or_else(|| Outcome::Failed("the entry vanished".into()))?;
        let asked = (attrs.mtime.sec, attrs.mtime.nsec);
        let problem = if is_root() && (attrs.uid, attrs.gid) != (found.uid, found.gid) {
            Some(format!("owner {}:{} was set, {}:{} is stored", attrs.uid, attrs.gid, found.uid, found.gid))
        } else if kind != NodeKind::Symlink && attrs.mode != found.mode {
            Some(format!("mode {:04o} was set, {:04o} is stored", attrs.mode, found.mode))
        } else if !same_mtime(asked, (found.mtime_sec, found.mtime_nsec), 2) {
            Some(format!(
                "mtime {} was set, {} is stored",
                time_text(asked),
                time_text((found.mtime_sec, found.mtime_nsec))
            ))
        } else {
            None
        };
        match problem {
            Some(field) => Err(Outcome::Failed(format!(
                "written, but {field}: the target filesystem cannot store it (unrepairable)"
            ))),
            None => Ok(()),
        }
    }

    /// Owner first: chown clears the setuid and setgid bits the mode then restores.
    pub(super) fn set_attrs_at(&self, rel: &[u8], kind: NodeKind, attrs: &Attrs) -> Step<()> {
        if is_root() {
            self.root.set_owner(rel, attrs.uid, attrs.gid).map_err(failed)?;
        }
        if kind != NodeKind::Symlink {
            self.root.set_mode(rel, attrs.mode).map_err(failed)?;
        }
        if let (Some(list), NodeKind::File | NodeKind::Dir) = (&attrs.xattrs, kind) {
            let desired = Xattr::decode(list).map_err(Outcome::Failed)?;
            self.root.set_xattrs(rel, &desired).map_err(failed)?;
        }
        self.root.set_mtime(rel, attrs.mtime.sec, attrs.mtime.nsec).map_err(failed)
    }
}

/// Two mtimes as a later scan and diff would compare them: to the nanosecond, or to the second
/// when either has no sub-second part; `slack` seconds apart at most.
fn same_mtime(a: (i64, u32), b: (i64, u32), slack: i64) -> bool {
    if slack > 0 {
        a.0.abs_diff(b.0) <= slack.unsigned_abs()
    } else if a.1 == 0 || b.1 == 0 {
        a.0 == b.0
    } else {
        a == b
    }
}

pub(super) fn time_text((sec, nsec): (i64, u32)) -> String {
    crate::diff::mtime_text(crate::manifest::Mtime { sec, nsec })
}
