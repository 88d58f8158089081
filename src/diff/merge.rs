//! The comparison as one pass over two entry streams in path order.
//!
//! Memory: the current entry of each side, the differences found, and, for a subtree in the
//! target only, one summary per directory open in it (its children's when the target's
//! excludes or mount points may keep some of them). A subtree skipped (equal digests, or
//! reported as missing or extra in one piece) is read and dropped entry by entry.

use std::borrow::Borrow;
use std::cmp::Ordering;

use super::report::{self, Change, Difference, HardLinkChange, MetaChange};
use super::{Tally, divergent_ranges, same_mtime, xattr_names_differing};
use crate::digest::{ChunkSize, Digest};
use crate::manifest::{Entry, Header, Kind, MetaSet};
use crate::path::RelPath;

/// One side's stream, one entry looked ahead, noting the directories not entered as they pass.
struct Side<I, E> {
    entries: I,
    peeked: Option<E>,
    not_entered: Vec<RelPath>,
    root: Option<Digest>,
    started: bool,
}

impl<E: Borrow<Entry>, X, I: Iterator<Item = Result<E, X>>> Side<I, E> {
    fn new(entries: I) -> Self {
        Side { entries, peeked: None, not_entered: Vec::new(), root: None, started: false }
    }

    fn peek(&mut self) -> Result<Option<&Entry>, X> {
        if self.peeked.is_none()
            && let Some(next) = self.entries.next()
        {
            let next = next?;
            let entry = next.borrow();
            if !self.started {
                self.started = true;
                self.root = entry.digest;
            }
            if entry.not_entered {
                self.not_entered.push(entry.path.clone());
            }
            self.peeked = Some(next);
        }
        Ok(self.peeked.as_ref().map(Borrow::borrow))
    }

    fn take(&mut self) -> Result<Option<E>, X> {
        self.peek()?;
        Ok(self.peeked.take())
    }

    /// The next entry if it lies inside `dir`.
    fn next_inside(&mut self, dir: &RelPath) -> Result<Option<E>, X> {
        match self.peek()? {
            Some(next) if next.path.is_inside(dir) => self.take(),
            _ => Ok(None),
        }
    }
}

/// What a run found besides the differences.
pub(super) struct Outcome {
    /// The root digests of source and target.
    pub roots: [Option<Digest>; 2],
    /// Directories either side did not enter (`-x`), in path order, with which side.
    pub not_entered: Vec<(RelPath, &'static str)>,
}

pub(super) struct Merge<'a> {
    source: &'a Header,
    target: &'a Header,
    pub meta: MetaSet,
    /// Compare hard links and device numbers: both sides recorded them.
    pub hard_links: bool,
    pub rdev: bool,
    pub chunk: ChunkSize,
    pub differences: Vec<Difference>,
    pub tally: Tally,
    /// The source directory most recently named by a difference: nothing below it matched.
    unmatched: Option<RelPath>,
}

impl<'a> Merge<'a> {
    pub fn new(source: &'a Header, target: &'a Header, meta: MetaSet) -> Self {
        Merge {
            source,
            target,
            meta: meta.and(source.metadata).and(target.metadata),
            hard_links: source.hard_links && target.hard_links,
            rdev: source.rdev && target.rdev,
            chunk: source.chunk_size.max(target.chunk_size),
            differences: Vec::new(),
            tally: Tally::default(),
            unmatched: None,
        }
    }

    fn push(&mut self, path: &RelPath, change: Change) {
        self.differences.push(Difference { path: path.clone(), change, hint: None, hard_link: None });
    }

    /// Counts a source entry; `differs` when a difference names it.
    fn count_source(&mut self, entry: &Entry, differs: bool) {
        let t = &mut self.tally;
        t.entries += 1;
        match entry.kind {
            Kind::File => {
                t.files += 1;
                t.bytes += entry.size;
            }
            Kind::Dir => t.directories += 1,
            _ => {}
        }
        let below = self.unmatched.as_ref().is_some_and(|dir| entry.path.is_inside(dir));
        if !below {
            self.unmatched = differs.then(|| entry.path.clone());
        }
        if !below && !differs {
            t.matched_entries += 1;
            if entry.kind == Kind::File {
                t.matched_files += 1;
                t.matched_bytes += entry.size;
            }
        }
    }

    pub fn run<E: Borrow<Entry>, X>(
        &mut self,
        source: impl Iterator<Item = Result<E, X>>,
        target: impl Iterator<Item = Result<E, X>>,
    ) -> Result<Outcome, X> {
        let (mut s, mut t) = (Side::new(source), Side::new(target));
        // Both streams start with the root directory, which always pairs with the other root.
        loop {
            let order = match (s.peek()?, t.peek()?) {
                (Some(a), Some(b)) => a.path.cmp(&b.path),
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (None, None) => break,
            };
            match order {
                Ordering::Less => {
                    let Some(root) = s.take()? else { break };
                    self.push_missing(root.borrow(), &mut s)?;
                }
                Ordering::Greater => {
                    let Some(root) = t.take()? else { break };
                    self.push_extra(root.borrow(), &mut t)?;
                }
                Ordering::Equal => {
                    let (Some(a), Some(b)) = (s.take()?, t.take()?) else { break };
                    let (a, b) = (a.borrow(), b.borrow());
                    let before = self.differences.len();
                    let descend = self.compare(a, b);
                    self.count_source(a, self.differences.len() > before);
                    if !descend {
                        while let Some(inside) = s.next_inside(&a.path)? {
                            self.count_source(inside.borrow(), false);
                        }
                        while t.next_inside(&b.path)?.is_some() {}
                    }
                }
            }
        }
        let not_entered = both_sides(&s.not_entered, &t.not_entered);
        Ok(Outcome { roots: [s.root, t.root], not_entered })
    }

    /// The source-only subtree at `root`, reported as missing in one piece, then whatever in
    /// it could not be read (its counts are incomplete).
    fn push_missing<E: Borrow<Entry>, X, I>(&mut self, root: &Entry, s: &mut Side<I, E>) -> Result<(), X>
    where
        I: Iterator<Item = Result<E, X>>,
    {
        self.count_source(root, true);
        let mut subtree = Subtree::of(root, report::Side::Source, false);
        while let Some(inside) = s.next_inside(&root.path)? {
            let inside = inside.borrow();
            self.count_source(inside, true);
            subtree.absorb(Subtree::of(inside, report::Side::Source, false), false);
        }
        self.differences.extend(subtree.output());
        Ok(())
    }

    /// The target-only subtree at `root`, reported as extra in one piece, unless it holds
    /// directories not entered (`-x`) or holding excluded entries: those, and the directories
    /// leading to them, are kept, as rsync -x --delete keeps them, and only the rest is extra.
    /// Whether a directory is kept is known when its last descendant has passed, so each open
    /// directory holds its children's outcome until then.
    fn push_extra<E: Borrow<Entry>, X, I>(&mut self, root: &Entry, t: &mut Side<I, E>) -> Result<(), X>
    where
        I: Iterator<Item = Result<E, X>>,
    {
        let marks = self.target.one_file_system || !self.target.exclude.is_empty();
        let mut open = vec![Subtree::of(root, report::Side::Target, marks)];
        loop {
            let next = t.next_inside(&root.path)?;
            while open.len() > 1 && next.as_ref().is_none_or(|n| !n.borrow().path.is_inside(&open[open.len() - 1].path))
            {
                let done = open.pop().expect("more than one open");
                open.last_mut().expect("the root stays open").absorb(done, marks);
            }
            let Some(next) = next else { break };
            let next = Subtree::of(next.borrow(), report::Side::Target, marks);
            if next.kind == Kind::Dir {
                open.push(next);
            } else {
                open.last_mut().expect("the root stays open").absorb(next, marks);
            }
        }
        let root = open.pop().expect("the root stays open");
        self.differences.extend(root.output());
        Ok(())
    }

    /// Compares one pair at the same path; returns whether to look inside (both directories
    /// whose subtrees may differ).
    fn compare(&mut self, s: &Entry, t: &Entry) -> bool {
        for (side, entry) in [(report::Side::Source, s), (report::Side::Target, t)] {
            if let Some(problem) = entry.problem.as_deref() {
                self.push(&s.path, Change::Trouble { side, problem: problem.clone() });
                return false;
            }
        }
        if s.kind != t.kind {
            self.push(&s.path, Change::Type { source: s.kind, target: t.kind });
            return false;
        }
        // A target directory not entered is another filesystem's root: never a thing to change.
        // The root's own metadata is compared like any directory's, as rsync's `./` line.
        let metadata = if t.not_entered { Vec::new() } else { self.meta_changes(s, t) };
        let content_equal = s.digest == t.digest;
        let hard_link = (self.hard_links && s.hard_link() != t.hard_link())
            .then(|| HardLinkChange { source: s.hard_link().cloned(), target: t.hard_link().cloned() });
        let change = match s.kind {
            Kind::File if !content_equal => {
                let ranges = divergent_ranges(s, self.source.chunk_size, t, self.target.chunk_size, self.chunk);
                Some(Change::Content { source_size: s.size, target_size: t.size, ranges, metadata })
            }
            Kind::Symlink if !content_equal => {
                let link = |e: &Entry| e.link.clone().unwrap_or_default();
                Some(Change::LinkTarget { source: link(s), target: link(t), metadata })
            }
            Kind::CharDevice | Kind::BlockDevice if self.rdev && s.rdev() != t.rdev() => {
                let (source, target) = (s.rdev().unwrap_or_default(), t.rdev().unwrap_or_default());
                Some(Change::Device { kind: s.kind, source, target, metadata })
            }
            _ if hard_link.is_some() => Some(Change::HardLink { metadata }),
            _ if !metadata.is_empty() => Some(Change::Metadata { changes: metadata }),
            _ => None,
        };
        if let Some(change) = change {
            let content_differs = !matches!(change, Change::Metadata { .. } | Change::HardLink { .. });
            self.push(&s.path, change);
            if let Some(last) = self.differences.last_mut() {
                last.hard_link = hard_link;
            }
            if content_differs {
                return false;
            }
        }
        // A directory one side did not enter (another filesystem is mounted there): nothing
        // below it is compared on either side, as rsync -x neither copies nor deletes there.
        if s.not_entered || t.not_entered {
            return false;
        }
        // Equal node hashes prove the subtrees equal in names, kinds, content, permission bits,
        // device numbers and hard links, which is all the hash covers.
        let covered = MetaSet { mode: self.meta.mode, ..MetaSet::NONE };
        s.kind == Kind::Dir && !(content_equal && s.digest.is_some() && self.meta.within(covered))
    }

    fn meta_changes(&self, s: &Entry, t: &Entry) -> Vec<MetaChange> {
        let mut changes = Vec::new();
        if self.meta.mode && s.kind != Kind::Symlink && s.mode != t.mode {
            changes.push(MetaChange::Mode { source: s.mode, target: t.mode });
        }
        if self.meta.mtime && !same_mtime(s, t) {
            changes.push(MetaChange::Mtime { source: s.mtime, target: t.mtime });
        }
        if self.meta.owner && (s.uid, s.gid) != (t.uid, t.gid) {
            changes.push(MetaChange::Owner { source: (s.uid, s.gid), target: (t.uid, t.gid) });
        }
        if self.meta.xattr && s.kind != Kind::Symlink && s.xattrs != t.xattrs {
            changes.push(MetaChange::Xattr { names: xattr_names_differing(s, t) });
        }
        changes
    }
}

/// A one-sided subtree being read: its counts, the entries in it that could not be read, and
/// (for a directory that may be kept) its children's outcome.
struct Subtree {
    path: RelPath,
    kind: Kind,
    side: report::Side,
    files: u64,
    bytes: u64,
    /// It, or a directory in it, is not entered or holds excluded entries.
    kept: bool,
    /// Trouble reports for it and everything in it, in path order.
    problems: Vec<Difference>,
    /// What its children report when it is kept.
    inner: Vec<Difference>,
}

impl Subtree {
    /// `marks`: the side may keep directories (a target with excludes or mount points).
    fn of(entry: &Entry, side: report::Side, marks: bool) -> Self {
        let is_file = entry.kind == Kind::File;
        let problems = entry.problem.as_deref().map(|problem| Difference {
            path: entry.path.clone(),
            change: Change::Trouble { side, problem: problem.clone() },
            hint: None,
            hard_link: None,
        });
        Subtree {
            path: entry.path.clone(),
            kind: entry.kind,
            side,
            files: u64::from(is_file),
            bytes: if is_file { entry.size } else { 0 },
            kept: marks && (entry.not_entered || entry.holds_excluded),
            problems: problems.into_iter().collect(),
            inner: Vec::new(),
        }
    }

    /// Adds a finished child; `marks` when the side may keep directories (then the child's
    /// own outcome is held for the case that this one is kept).
    fn absorb(&mut self, child: Subtree, marks: bool) {
        self.files += child.files;
        self.bytes += child.bytes;
        self.kept |= child.kept;
        self.problems.extend(child.problems.iter().cloned());
        if marks {
            self.inner.extend(child.output());
        }
    }

    /// What the subtree reports: itself as missing or extra in one piece, then its trouble;
    /// or, when kept, what its children report.
    fn output(self) -> Vec<Difference> {
        if self.kept {
            return self.inner;
        }
        let (kind, files, bytes) = (self.kind, self.files, self.bytes);
        let change = match self.side {
            report::Side::Source => Change::Missing { kind, files, bytes },
            report::Side::Target => Change::Extra { kind, files, bytes },
        };
        let mut out = vec![Difference { path: self.path, change, hint: None, hard_link: None }];
        out.extend(self.problems);
        out
    }
}

/// The directories not entered on each side, merged in path order with which side.
fn both_sides(source: &[RelPath], target: &[RelPath]) -> Vec<(RelPath, &'static str)> {
    let mut all: Vec<(RelPath, &'static str)> = source
        .iter()
        .map(|p| (p.clone(), if target.binary_search(p).is_ok() { "both" } else { "source" }))
        .chain(target.iter().filter(|p| source.binary_search(p).is_err()).map(|p| (p.clone(), "target")))
        .collect();
    all.sort();
    all
}
