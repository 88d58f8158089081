//! Turning two manifests and their diff into a [`Plan`].

use super::{
    Attrs, FileState, Found, Hex, OpPath, Operation, PLAN_FORMAT, PatchChunk, Plan, PlanSide, SourceStamp, TargetFile,
    Time, Totals, Unrepairable, Xattr, bytes_text,
};
use crate::diff::{Change, DiffOptions, Report, diff};
use crate::digest::{ChunkSize, Digest};
use crate::manifest::{Entry, Kind, Manifest, MetaSet};
use crate::path::RelPath;

/// What the plan should repair.
#[derive(Clone, Copy, Debug)]
pub struct PlanOptions {
    /// Remove entries that exist only in the target.
    pub delete: bool,
    /// Metadata to repair where content is already equal (mtime is always set on what the plan
    /// writes, so later scans see equal files).
    pub meta: MetaSet,
    /// Recreate character and block devices (only root can; the default is whether this
    /// process runs as root). Otherwise they are listed as unrepairable.
    pub devices: bool,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions { delete: false, meta: MetaSet::DEFAULT, devices: rustix::process::geteuid().is_root() }
    }
}

/// The operations that make `target` equal to `source`, and the diff they were made from.
pub fn build_plan(source: &Manifest, target: &Manifest, options: &PlanOptions) -> (Plan, Report) {
    let report = diff(source, target, &DiffOptions { meta: options.meta });
    let mut builder = Builder {
        source,
        target,
        meta: report.compared,
        hard_links: report.hard_links,
        devices: options.devices,
        chunk: report.chunk_size,
        removals: Vec::new(),
        creations: Vec::new(),
        metas: Vec::new(),
        unrepairable: Vec::new(),
        touched_dirs: Vec::new(),
    };
    for difference in &report.differences {
        builder.add(&difference.path, &difference.change, options);
    }
    let plan = builder.finish(&report, options);
    (plan, report)
}

struct Builder<'a> {
    source: &'a Manifest,
    target: &'a Manifest,
    /// The metadata being repaired: what both sides recorded of what was asked.
    meta: MetaSet,
    /// Hard links are repaired: both sides recorded them.
    hard_links: bool,
    devices: bool,
    chunk: ChunkSize,
    removals: Vec<Operation>,
    creations: Vec<Operation>,
    metas: Vec<Operation>,
    unrepairable: Vec<Unrepairable>,
    /// Directories whose entries the plan changes, so their mtime must be restored afterwards.
    touched_dirs: Vec<RelPath>,
}

fn attrs(e: &Entry, meta: MetaSet) -> Attrs {
    let xattrs = meta.xattr.then(|| Xattr::list(e.xattrs.as_deref()));
    Attrs { mode: e.mode, mtime: time(e), uid: e.uid, gid: e.gid, xattrs }
}

fn time(e: &Entry) -> Time {
    Time { sec: e.mtime.sec, nsec: e.mtime.nsec }
}

fn file_state(e: &Entry) -> Option<FileState> {
    Some(FileState { size: e.size, hash: Hex(e.digest?) })
}

impl Builder<'_> {
    fn skip(&mut self, path: &RelPath, reason: impl Into<String>) {
        let at = OpPath::new(path);
        self.unrepairable.push(Unrepairable { path: at.path, path_bytes: at.path_bytes, reason: reason.into() });
    }

    fn add(&mut self, path: &RelPath, change: &Change, options: &PlanOptions) {
        let (Some(s), t) = (self.source.find(path), self.target.find(path)) else {
            // Only in the target.
            if let (Change::Extra { .. }, Some(t)) = (change, self.target.find(path))
                && options.delete
            {
                self.remove(t, None);
            }
            return;
        };
        // A name the source links to an earlier one becomes another name of that inode,
        // whatever it holds now (its content and metadata are the first name's).
        let linked = s.hard_link().is_some() && self.hard_links;
        match change {
            Change::Missing { .. } => self.create_subtree(path),
            // Removing the target's entry only makes sense if the source's can be created.
            Change::Type { .. } if self.not_creatable(s).is_some() => {
                let why = self.not_creatable(s).unwrap_or_default();
                self.skip(path, format!("{why}; the target's is left alone"));
            }
            Change::Type { .. } => {
                if let Some(t) = t {
                    self.remove(t, Some(s.kind));
                }
                self.create_subtree(path);
            }
            Change::Trouble { side, problem } => self.skip(path, format!("{} {problem}", side.name())),
            Change::Extra { .. } => {}
            _ if linked => match t {
                Some(t) => self.link(s, Some(t)),
                None => self.skip(path, "target entry vanished while planning"),
            },
            Change::Content { .. } => match t {
                Some(t) => self.repair_file(s, t),
                None => self.skip(path, "target entry vanished while planning"),
            },
            Change::LinkTarget { target, .. } => {
                self.symlink(s, Some(target));
                self.touched_dirs.push(path.parent());
            }
            Change::Device { .. } => {
                if let Some(why) = self.not_creatable(s) {
                    return self.skip(path, why);
                }
                self.mknod(s, Some(s.kind));
            }
            Change::HardLink { metadata } => {
                // Linked in the target only: the name gets an inode of its own.
                self.creations.push(Operation::Unshare { at: OpPath::new(path), kind: s.kind });
                self.touched_dirs.push(path.parent());
                self.meta_fix(s, metadata);
            }
            Change::Metadata { changes } => self.meta_fix(s, changes),
        }
    }

    /// A `meta` operation setting the source's value of every field in `changes`.
    fn meta_fix(&mut self, s: &Entry, changes: &[crate::diff::MetaChange]) {
        if changes.is_empty() {
            return;
        }
        let mut op = MetaOp::new(s);
        for change in changes {
            match change.field() {
                "mode" => op.mode = Some(s.mode),
                "mtime" => op.mtime = Some(time(s)),
                "xattr" => op.xattrs = Some(Xattr::list(s.xattrs.as_deref())),
                _ => op.owner = Some((s.uid, s.gid)),
            }
        }
        self.metas.push(op.into_operation());
    }

    /// Why the source entry `s` cannot be created in the target, if it cannot.
    fn not_creatable(&self, s: &Entry) -> Option<String> {
        match s.kind {
            Kind::CharDevice | Kind::BlockDevice if !self.devices => {
                Some(format!("{} entries are only created when running as root (as rsync --devices)", s.kind))
            }
            Kind::CharDevice | Kind::BlockDevice if s.rdev().is_none() => {
                Some(format!("the {}'s device number was not recorded (a manifest of an earlier cutover)", s.kind))
            }
            _ => None,
        }
    }

    fn remove(&mut self, t: &Entry, then: Option<Kind>) {
        let index = self.target.entries.binary_search_by(|e| e.path.cmp(&t.path)).unwrap_or(0);
        let subtree = &self.target.entries[index..self.target.subtree_end(index)];
        let bytes = subtree.iter().filter(|e| e.kind == Kind::File).map(|e| e.size).sum();
        let file = t.kind == Kind::File;
        self.removals.push(Operation::Remove {
            at: OpPath::new(&t.path),
            expect: Found { kind: t.kind, then, size: file.then_some(t.size), mtime: file.then(|| time(t)) },
            entries: subtree.len() as u64,
            bytes,
        });
        self.touched_dirs.push(t.path.parent());
    }

    /// Creates the source entry at `path` and everything below it.
    fn create_subtree(&mut self, path: &RelPath) {
        let Ok(start) = self.source.entries.binary_search_by(|e| e.path.cmp(path)) else {
            return;
        };
        let end = self.source.subtree_end(start);
        self.touched_dirs.push(path.parent());
        for e in &self.source.entries[start..end] {
            if let Some(problem) = e.problem.as_deref() {
                self.skip(&e.path, format!("source {problem}"));
                continue;
            }
            match e.kind {
                Kind::Dir => {
                    self.creations.push(Operation::Mkdir { at: OpPath::new(&e.path) });
                    let mut op = MetaOp::new(e);
                    op.mode = Some(e.mode);
                    op.mtime = Some(time(e));
                    op.owner = Some((e.uid, e.gid));
                    op.xattrs = self.meta.xattr.then(|| Xattr::list(e.xattrs.as_deref()));
                    self.metas.push(op.into_operation());
                }
                _ if e.hard_link().is_some() && self.hard_links => self.link(e, None),
                Kind::File => self.copy(e, None),
                Kind::Symlink => self.symlink(e, None),
                _ => match self.not_creatable(e) {
                    Some(why) => self.skip(&e.path, why),
                    None => self.mknod(e, None),
                },
            }
        }
    }

    fn copy(&mut self, s: &Entry, replaces: Option<FileState>) {
        if let Some(source) = file_state(s) {
            self.creations.push(Operation::Copy {
                at: OpPath::new(&s.path),
                source,
                replaces,
                attrs: attrs(s, self.meta),
                holes: 0,
            });
        }
    }

    /// Makes the source's hard link `s` (to an earlier name) in the target, replacing `t`.
    fn link(&mut self, s: &Entry, t: Option<&Entry>) {
        let Some(first) = s.hard_link() else { return };
        match self.source.find(first) {
            Some(to) if to.problem.is_none() => {
                if let Some(why) = self.not_creatable(to) {
                    return self.skip(&s.path, format!("it is a hard link to {}: {why}", first.display()));
                }
            }
            _ => {
                return self
                    .skip(&s.path, format!("it is a hard link to {}, which could not be read", first.display()));
            }
        }
        let (to, to_bytes) = bytes_text(first.as_bytes());
        let replaces = t.map(|t| {
            let file = t.kind == Kind::File;
            Found { kind: t.kind, then: None, size: file.then_some(t.size), mtime: file.then(|| time(t)) }
        });
        self.creations.push(Operation::Link {
            at: OpPath::new(&s.path),
            to,
            to_bytes,
            kind: s.kind,
            size: (s.kind == Kind::File).then_some(s.size),
            replaces,
        });
        self.touched_dirs.push(s.path.parent());
    }

    /// Creates the FIFO, socket or device `s`, replacing a node of kind `replaces`.
    fn mknod(&mut self, s: &Entry, replaces: Option<Kind>) {
        self.creations.push(Operation::Mknod {
            at: OpPath::new(&s.path),
            kind: s.kind,
            rdev: s.rdev(),
            replaces,
            attrs: attrs(s, self.meta),
        });
        self.touched_dirs.push(s.path.parent());
    }

    /// Every name the source links to a first name that some operation changes gets a `link`
    /// too, even where it is linked right now: the first name may get a new inode (a copy, or
    /// an inode of its own before a write it must not share with names outside the plan).
    fn relink_followers(&mut self) {
        if !self.hard_links {
            return;
        }
        let mut acted: std::collections::HashSet<RelPath> =
            self.creations.iter().chain(&self.metas).filter_map(|op| op.at().rel().ok()).collect();
        let source = self.source;
        for s in source.entries.iter().filter(|e| e.problem.is_none()) {
            let Some(first) = s.hard_link() else { continue };
            if !acted.contains(first) || acted.contains(&s.path) {
                continue;
            }
            if let Some(t) = self.target.find(&s.path).filter(|t| t.kind == s.kind && t.problem.is_none()) {
                self.link(s, Some(t));
                acted.insert(s.path.clone());
            }
        }
        // Added out of order: creations run in path order.
        self.creations.sort_by_cached_key(|op| op.at().rel().ok());
    }

    fn symlink(&mut self, s: &Entry, replaces: Option<&[u8]>) {
        let (link, link_bytes) = bytes_text(s.link.as_deref().unwrap_or_default());
        let (replaces, replaces_bytes) = match replaces.map(bytes_text) {
            Some((text, b64)) => (Some(text), b64),
            None => (None, None),
        };
        self.creations.push(Operation::Symlink {
            at: OpPath::new(&s.path),
            link,
            link_bytes,
            replaces,
            replaces_bytes,
            attrs: attrs(s, self.meta),
        });
    }

    /// A changed regular file: patch the divergent chunks in place when both sides have chunk
    /// hashes at the plan's chunk size, else copy the whole (at most one chunk) file.
    fn repair_file(&mut self, s: &Entry, t: &Entry) {
        let (Some(source), Some(replaced)) = (file_state(s), file_state(t)) else {
            return self.skip(&s.path, "no hash on one side");
        };
        let source_cvs = s.chunks_at(self.source.header.chunk_size, self.chunk);
        let target_cvs = t.chunks_at(self.target.header.chunk_size, self.chunk);
        let (Some(source_cvs), Some(target_cvs)) = (source_cvs, target_cvs) else {
            // The rename replaces a directory entry: the parent's mtime must be put back.
            self.touched_dirs.push(s.path.parent());
            return self.copy(s, Some(replaced));
        };
        let mut chunks = Vec::new();
        for (index, new) in source_cvs.iter().enumerate() {
            let index = index as u64;
            let old = target_cvs.get(index as usize).copied();
            let same_length = self.chunk.chunk_range(index, s.size) == self.chunk.chunk_range(index, t.size);
            if !(same_length && old == Some(*new)) {
                chunks.push(PatchChunk { index, old: old.map(Hex), new: Hex(*new) });
            }
        }
        self.creations.push(Operation::Patch {
            at: OpPath::new(&s.path),
            source,
            target: TargetFile { size: t.size, hash: replaced.hash, mtime: time(t) },
            chunks,
            attrs: attrs(s, self.meta),
            holes: 0,
            source_stamp: s.stamp.map(|stamp| SourceStamp {
                dev: stamp.dev,
                ino: stamp.ino,
                ctime: Time { sec: stamp.ctime.sec, nsec: stamp.ctime.nsec },
            }),
        });
    }

    fn finish(mut self, report: &Report, options: &PlanOptions) -> Plan {
        self.relink_followers();
        // Writing into a directory changes its mtime: restore the source's, children first.
        self.touched_dirs.sort();
        self.touched_dirs.dedup();
        for dir in std::mem::take(&mut self.touched_dirs) {
            if let Some(s) = self.source.find(&dir).filter(|e| e.kind == Kind::Dir) {
                let mut op = MetaOp::new(s);
                op.mtime = Some(time(s));
                self.metas.push(op.into_operation());
            }
        }
        self.metas.sort_by_key(|op| std::cmp::Reverse(op.rel().ok()));
        self.metas.dedup_by(|later, earlier| {
            if later.at() != earlier.at() {
                return false;
            }
            merge_meta(earlier, later);
            true
        });
        // A path can be unrepairable for two reasons at once (missing and unreadable, say).
        self.unrepairable.sort_by(|a, b| (&a.path, &a.path_bytes).cmp(&(&b.path, &b.path_bytes)));
        self.unrepairable.dedup_by(|a, b| (&a.path, &a.path_bytes) == (&b.path, &b.path_bytes));
        let mut operations = self.removals;
        operations.extend(self.creations);
        operations.extend(self.metas);
        let totals = Totals::of(&operations, self.chunk);
        let side = |info: &crate::diff::SideInfo, m: &Manifest| PlanSide {
            root: info.root.clone(),
            hash: info.hash.map(Digest::to_hex),
            entries: m.entries.len() as u64,
            identity: None,
        };
        Plan {
            format: PLAN_FORMAT.into(),
            tool: format!("cutover {}", env!("CARGO_PKG_VERSION")),
            created: crate::time::now_rfc3339(),
            source: side(&report.source, self.source),
            target: side(&report.target, self.target),
            chunk_size: self.chunk.bytes(),
            delete: options.delete,
            totals,
            operations,
            unrepairable: self.unrepairable,
            exclude: self.target.header.exclude.texts(),
        }
    }
}

/// Fields of a pending `meta` operation.
struct MetaOp {
    at: OpPath,
    kind: Kind,
    mode: Option<u32>,
    mtime: Option<Time>,
    owner: Option<(u32, u32)>,
    xattrs: Option<Vec<Xattr>>,
}

impl MetaOp {
    fn new(e: &Entry) -> Self {
        MetaOp { at: OpPath::new(&e.path), kind: e.kind, mode: None, mtime: None, owner: None, xattrs: None }
    }

    fn into_operation(self) -> Operation {
        let MetaOp { at, kind, mode, mtime, owner, xattrs } = self;
        Operation::Meta { at, kind, mode, mtime, owner, xattrs }
    }
}

/// Folds the fields of `from` into `into` (two `meta` operations on one path).
fn merge_meta(into: &mut Operation, from: &Operation) {
    if let (
        Operation::Meta { mode, mtime, owner, xattrs, .. },
        Operation::Meta { mode: m2, mtime: t2, owner: o2, xattrs: x2, .. },
    ) = (into, from)
    {
        *mode = mode.or(*m2);
        *mtime = mtime.or(*t2);
        *owner = owner.or(*o2);
        if xattrs.is_none() {
            xattrs.clone_from(x2);
        }
    }
}
