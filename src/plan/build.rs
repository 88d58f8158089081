//! Turning two manifests and their diff into a plan, one operation at a time.
//!
//! The operations go out as they are found, in plan order, so nothing of them is kept: two
//! passes over the differences (in path order), the first for the removals and the second for
//! the creations and content repairs. Only the `meta` operations wait for the end, since they
//! run in reverse path order: one per directory the plan writes in or creates and one per
//! metadata fix, kept in a compact form.

use std::collections::HashSet;
use std::io::Write;

use super::{
    Attrs, FileState, Found, Hex, OpPath, Operation, PLAN_FORMAT, PatchChunk, Plan, PlanHead, PlanSide, PlanWriter,
    SourceStamp, Tally, TargetFile, Time, Totals, TreeIdentity, Unrepairable, Xattr, bytes_text,
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

/// What the caller adds to a plan that the manifests do not say.
pub struct PlanOutput<'a> {
    /// Which directory the target is, when it is one (not a manifest).
    pub identity: Option<TreeIdentity>,
    /// Called on each operation before it is written, with the plan's chunk size: to count
    /// the holes of the source files it copies, say.
    pub prepare: &'a mut dyn FnMut(&mut Operation, ChunkSize),
}

impl std::fmt::Debug for PlanOutput<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlanOutput").field("identity", &self.identity).finish_non_exhaustive()
    }
}

/// Writes the plan that makes `target` equal to `source` to `out` as it is found; returns its
/// head (totals and unrepairable entries included), the tally of its operations, and the diff
/// it was made from.
pub fn build_plan_into(
    source: &Manifest,
    target: &Manifest,
    options: &PlanOptions,
    output: PlanOutput<'_>,
    out: impl Write,
) -> std::io::Result<(PlanHead, Tally, Report)> {
    build_plan_summed(source, target, options, output, out).map(|(head, tally, _, report)| (head, tally, report))
}

/// [`build_plan_into`], also returning the plan's checksum.
pub(super) fn build_plan_summed(
    source: &Manifest,
    target: &Manifest,
    options: &PlanOptions,
    output: PlanOutput<'_>,
    out: impl Write,
) -> std::io::Result<(PlanHead, Tally, String, Report)> {
    let report = diff(source, target, &DiffOptions { meta: options.meta });
    let side = |info: &crate::diff::SideInfo, m: &Manifest| PlanSide {
        root: info.root.clone(),
        hash: info.hash.map(Digest::to_hex),
        entries: m.entries.len() as u64,
        identity: None,
    };
    let mut head = PlanHead {
        format: PLAN_FORMAT.into(),
        tool: format!("cutover {}", env!("CARGO_PKG_VERSION")),
        created: crate::time::now_rfc3339(),
        source: side(&report.source, source),
        target: PlanSide { identity: output.identity, ..side(&report.target, target) },
        chunk_size: report.chunk_size.bytes(),
        delete: options.delete,
        totals: Totals::default(),
        unrepairable: Vec::new(),
        exclude: target.header.exclude.texts(),
    };
    let mut writer = PlanWriter::new(out, &head)?;
    let prepare = output.prepare;
    let chunk = report.chunk_size;
    let mut emit = |mut op: Operation| {
        prepare(&mut op, chunk);
        writer.push(&op)
    };
    let mut builder = Builder::new(source, target, &report, options, &mut emit);
    for phase in [Phase::Removals, Phase::Creations] {
        builder.phase = phase;
        for difference in &report.differences {
            builder.add(&difference.path, &difference.change, options)?;
        }
    }
    head.unrepairable = builder.finish()?;
    let (tally, checksum) = writer.finish(&head)?;
    head.totals = tally.totals;
    Ok((head, tally, checksum, report))
}

/// The operations that make `target` equal to `source`, all in memory, and the diff they were
/// made from (for small trees and tests).
pub fn build_plan(source: &Manifest, target: &Manifest, options: &PlanOptions) -> (Plan, Report) {
    let mut text = Vec::new();
    let output = PlanOutput { identity: None, prepare: &mut |_, _| {} };
    let (head, _, report) =
        build_plan_into(source, target, options, output, &mut text).expect("a plan is written to memory");
    let plan = super::read_plan(&text[..], std::path::Path::new("<memory>")).expect("a written plan reads back");
    debug_assert_eq!(plan.head.totals, head.totals);
    (plan, report)
}

/// Which operations the current pass over the differences writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Removals,
    Creations,
}

struct Builder<'a, 'e> {
    source: &'a Manifest,
    target: &'a Manifest,
    /// The metadata being repaired: what both sides recorded of what was asked.
    meta: MetaSet,
    /// Hard links are repaired: both sides recorded them.
    hard_links: bool,
    devices: bool,
    chunk: ChunkSize,
    phase: Phase,
    emit: &'e mut dyn FnMut(Operation) -> std::io::Result<()>,
    /// Written at the end, in reverse path order.
    metas: Vec<MetaOp>,
    unrepairable: Vec<Unrepairable>,
    /// Directories whose entries the plan changes, so their mtime must be restored afterwards.
    touched_dirs: Vec<RelPath>,
    /// Hard links: the first names of the source's inodes with several names, those of them
    /// some operation acts on, and the other names some operation acts on.
    firsts: HashSet<RelPath>,
    acted_firsts: HashSet<RelPath>,
    acted_followers: HashSet<RelPath>,
    /// The next source entry to consider as a name to link again (see `relink_followers`).
    follower_cursor: usize,
    /// The first write error: the plan is abandoned.
    error: Option<std::io::Error>,
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

impl<'a, 'e> Builder<'a, 'e> {
    fn new(
        source: &'a Manifest,
        target: &'a Manifest,
        report: &Report,
        options: &PlanOptions,
        emit: &'e mut dyn FnMut(Operation) -> std::io::Result<()>,
    ) -> Self {
        let hard_links = report.hard_links;
        let firsts = match hard_links {
            true => source.entries.iter().filter_map(|e| e.hard_link().cloned()).collect(),
            false => HashSet::new(),
        };
        Builder {
            source,
            target,
            meta: report.compared,
            hard_links,
            devices: options.devices,
            chunk: report.chunk_size,
            phase: Phase::Removals,
            emit,
            metas: Vec::new(),
            unrepairable: Vec::new(),
            touched_dirs: Vec::new(),
            firsts,
            acted_firsts: HashSet::new(),
            acted_followers: HashSet::new(),
            follower_cursor: 0,
            error: None,
        }
    }

    fn creating(&self) -> bool {
        self.phase == Phase::Creations
    }

    /// Writes a creation or content repair (second pass only).
    fn create(&mut self, op: Operation) {
        if !self.creating() || self.error.is_some() {
            return;
        }
        if let Ok(path) = op.at().rel() {
            self.acted(&path);
        }
        if let Err(e) = (self.emit)(op) {
            self.error = Some(e);
        }
    }

    /// Notes that an operation acts on `path`, for the names linked to it.
    fn acted(&mut self, path: &RelPath) {
        if self.firsts.contains(path) {
            self.acted_firsts.insert(path.clone());
        }
        if self.hard_links && self.source.find(path).is_some_and(|s| s.hard_link().is_some()) {
            self.acted_followers.insert(path.clone());
        }
    }

    fn meta_op(&mut self, op: MetaOp) {
        if self.creating() {
            if let Ok(path) = RelPath::from_report(&op.at.path, op.at.path_bytes.as_deref()) {
                self.acted(&path);
            }
            self.metas.push(op);
        }
    }

    fn touch(&mut self, dir: RelPath) {
        if self.creating() && self.touched_dirs.last() != Some(&dir) {
            self.touched_dirs.push(dir);
        }
    }

    fn skip(&mut self, path: &RelPath, reason: impl Into<String>) {
        if self.creating() {
            let at = OpPath::new(path);
            self.unrepairable.push(Unrepairable { path: at.path, path_bytes: at.path_bytes, reason: reason.into() });
        }
    }

    fn add(&mut self, path: &RelPath, change: &Change, options: &PlanOptions) -> std::io::Result<()> {
        if self.creating() {
            self.relink_followers(Some(path));
        }
        self.add_one(path, change, options);
        self.error.take().map_or(Ok(()), Err)
    }

    fn add_one(&mut self, path: &RelPath, change: &Change, options: &PlanOptions) {
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
                self.touch(path.parent());
            }
            Change::Device { .. } => {
                if let Some(why) = self.not_creatable(s) {
                    return self.skip(path, why);
                }
                self.mknod(s, Some(s.kind));
            }
            Change::HardLink { metadata } => {
                // Linked in the target only: the name gets an inode of its own.
                self.create(Operation::Unshare { at: OpPath::new(path), kind: s.kind });
                self.touch(path.parent());
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
        self.meta_op(op);
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

    /// Writes a removal (first pass only); its parent's mtime is restored at the end.
    fn remove(&mut self, t: &Entry, then: Option<Kind>) {
        if self.phase != Phase::Removals || self.error.is_some() {
            return;
        }
        let index = self.target.entries.binary_search_by(|e| e.path.cmp(&t.path)).unwrap_or(0);
        let subtree = &self.target.entries[index..self.target.subtree_end(index)];
        let bytes = subtree.iter().filter(|e| e.kind == Kind::File).map(|e| e.size).sum();
        let file = t.kind == Kind::File;
        let op = Operation::Remove {
            at: OpPath::new(&t.path),
            expect: Found { kind: t.kind, then, size: file.then_some(t.size), mtime: file.then(|| time(t)) },
            entries: subtree.len() as u64,
            bytes,
        };
        if let Err(e) = (self.emit)(op) {
            self.error = Some(e);
        }
        let parent = t.path.parent();
        if self.touched_dirs.last() != Some(&parent) {
            self.touched_dirs.push(parent);
        }
    }

    /// Creates the source entry at `path` and everything below it.
    fn create_subtree(&mut self, path: &RelPath) {
        if !self.creating() {
            return;
        }
        let Ok(start) = self.source.entries.binary_search_by(|e| e.path.cmp(path)) else {
            return;
        };
        let end = self.source.subtree_end(start);
        self.touch(path.parent());
        let source = self.source;
        for e in &source.entries[start..end] {
            if let Some(problem) = e.problem.as_deref() {
                self.skip(&e.path, format!("source {problem}"));
                continue;
            }
            match e.kind {
                Kind::Dir => {
                    self.create(Operation::Mkdir { at: OpPath::new(&e.path) });
                    let mut op = MetaOp::new(e);
                    op.mode = Some(e.mode);
                    op.mtime = Some(time(e));
                    op.owner = Some((e.uid, e.gid));
                    op.xattrs = self.meta.xattr.then(|| Xattr::list(e.xattrs.as_deref()));
                    self.meta_op(op);
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
            self.create(Operation::Copy {
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
        self.create(Operation::Link {
            at: OpPath::new(&s.path),
            to,
            to_bytes,
            kind: s.kind,
            size: (s.kind == Kind::File).then_some(s.size),
            replaces,
        });
        self.touch(s.path.parent());
    }

    /// Creates the FIFO, socket or device `s`, replacing a node of kind `replaces`.
    fn mknod(&mut self, s: &Entry, replaces: Option<Kind>) {
        self.create(Operation::Mknod {
            at: OpPath::new(&s.path),
            kind: s.kind,
            rdev: s.rdev(),
            replaces,
            attrs: attrs(s, self.meta),
        });
        self.touch(s.path.parent());
    }

    /// Every name the source links to a first name that some operation changes gets a `link`
    /// too, even where it is linked right now: the first name may get a new inode (a copy, or
    /// an inode of its own before a write it must not share with names outside the plan).
    /// Called before each difference at `before` (and at the end with `None`): the names that
    /// sort before it are settled by then, since a first name sorts before its other names.
    fn relink_followers(&mut self, before: Option<&RelPath>) {
        if !self.hard_links {
            return;
        }
        let source = self.source;
        while let Some(s) = source.entries.get(self.follower_cursor) {
            if before.is_some_and(|before| s.path >= *before) {
                break;
            }
            self.follower_cursor += 1;
            let Some(first) = s.hard_link().filter(|_| s.problem.is_none()) else { continue };
            if !self.acted_firsts.contains(first) || self.acted_followers.contains(&s.path) {
                continue;
            }
            if let Some(t) = self.target.find(&s.path).filter(|t| t.kind == s.kind && t.problem.is_none()) {
                self.link(s, Some(t));
            }
        }
    }

    fn symlink(&mut self, s: &Entry, replaces: Option<&[u8]>) {
        let (link, link_bytes) = bytes_text(s.link.as_deref().unwrap_or_default());
        let (replaces, replaces_bytes) = match replaces.map(bytes_text) {
            Some((text, b64)) => (Some(text), b64),
            None => (None, None),
        };
        self.create(Operation::Symlink {
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
            self.touch(s.path.parent());
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
        self.create(Operation::Patch {
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

    /// Writes the rest: the names still to link again, then the `meta` operations, children
    /// first. Returns the differences the plan does not repair.
    fn finish(mut self) -> std::io::Result<Vec<Unrepairable>> {
        self.relink_followers(None);
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        // Writing into a directory changes its mtime: restore the source's, children first.
        self.touched_dirs.sort();
        self.touched_dirs.dedup();
        for dir in std::mem::take(&mut self.touched_dirs) {
            if let Some(s) = self.source.find(&dir).filter(|e| e.kind == Kind::Dir) {
                let mut op = MetaOp::new(s);
                op.mtime = Some(time(s));
                self.metas.push(op);
            }
        }
        let mut metas = std::mem::take(&mut self.metas);
        metas.sort_by_cached_key(|op| std::cmp::Reverse(op.rel()));
        metas.dedup_by(|later, earlier| {
            if later.at != earlier.at {
                return false;
            }
            earlier.merge(later);
            true
        });
        for op in metas {
            (self.emit)(op.into_operation())?;
        }
        // A path can be unrepairable for two reasons at once (missing and unreadable, say).
        let mut unrepairable = self.unrepairable;
        unrepairable.sort_by(|a, b| (&a.path, &a.path_bytes).cmp(&(&b.path, &b.path_bytes)));
        unrepairable.dedup_by(|a, b| (&a.path, &a.path_bytes) == (&b.path, &b.path_bytes));
        Ok(unrepairable)
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

    fn rel(&self) -> Option<RelPath> {
        RelPath::from_report(&self.at.path, self.at.path_bytes.as_deref()).ok()
    }

    /// Folds the fields of `from` into these (two `meta` operations on one path).
    fn merge(&mut self, from: &MetaOp) {
        self.mode = self.mode.or(from.mode);
        self.mtime = self.mtime.or(from.mtime);
        self.owner = self.owner.or(from.owner);
        if self.xattrs.is_none() {
            self.xattrs.clone_from(&from.xattrs);
        }
    }

    fn into_operation(self) -> Operation {
        let MetaOp { at, kind, mode, mtime, owner, xattrs } = self;
        Operation::Meta { at, kind, mode, mtime, owner, xattrs }
    }
}
