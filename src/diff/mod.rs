//! Stage 3: compare two manifests and name every difference.
//!
//! Both entry lists are in [`RelPath`] order, so one merge pass pairs them up. Where two
//! directories have equal node hashes (and no metadata outside the hash is being compared) the
//! whole subtree is skipped without looking inside. Changed files are narrowed to the chunks
//! whose CVs differ, merged into byte ranges.

mod hints;
mod report;

pub use report::{
    Change, Difference, HardLinkChange, MetaChange, Report, SideInfo, Summary, TreeCounts, mtime_text, rdev_text,
};

use crate::digest::{ByteRange, ChunkSize, push_merged};
use crate::manifest::{Entry, Kind, Manifest, MetaSet};
use crate::path::RelPath;

/// What to compare besides existence, type and content.
#[derive(Clone, Copy, Debug)]
pub struct DiffOptions {
    pub meta: MetaSet,
}

impl Default for DiffOptions {
    fn default() -> Self {
        DiffOptions { meta: MetaSet::DEFAULT }
    }
}

/// Compares `target` against the reference `source`.
pub fn diff(source: &Manifest, target: &Manifest, options: &DiffOptions) -> Report {
    let meta = options.meta.and(source.header.metadata).and(target.header.metadata);
    let mut merge = Merge {
        source,
        target,
        meta,
        hard_links: source.header.hard_links && target.header.hard_links,
        rdev: source.header.rdev && target.header.rdev,
        chunk: source.header.chunk_size.max(target.header.chunk_size),
        differences: Vec::new(),
    };
    merge.run();
    let mut differences = merge.differences;
    hints::flag_lookalike_names(&mut differences);
    Report {
        checked: report::TreeCounts::of(source),
        source: SideInfo::of(source),
        target: SideInfo::of(target),
        compared: meta,
        hard_links: merge.hard_links,
        rdev: merge.rdev,
        chunk_size: merge.chunk,
        differences,
        not_entered: not_entered(source, target),
    }
}

/// Directories either side did not enter (`-x`), in path order, with which side.
fn not_entered(source: &Manifest, target: &Manifest) -> Vec<(RelPath, &'static str)> {
    let marked = |m: &Manifest| m.entries.iter().filter(|e| e.not_entered).map(|e| e.path.clone()).collect::<Vec<_>>();
    let (s, t) = (marked(source), marked(target));
    let mut all: Vec<(RelPath, &'static str)> = s
        .iter()
        .map(|p| (p.clone(), if t.binary_search(p).is_ok() { "both" } else { "source" }))
        .chain(t.iter().filter(|p| s.binary_search(p).is_err()).map(|p| (p.clone(), "target")))
        .collect();
    all.sort();
    all
}

struct Merge<'a> {
    source: &'a Manifest,
    target: &'a Manifest,
    meta: MetaSet,
    /// Compare hard links and device numbers: both sides recorded them.
    hard_links: bool,
    rdev: bool,
    chunk: ChunkSize,
    differences: Vec<Difference>,
}

impl Merge<'_> {
    fn push(&mut self, path: &RelPath, change: Change) {
        self.differences.push(Difference { path: path.clone(), change, hint: None, hard_link: None });
    }

    /// Entries of a one-sided subtree that could not be read: its counts are incomplete.
    fn push_problems(&mut self, subtree: &[Entry], side: report::Side) {
        for entry in subtree {
            if let Some(problem) = entry.problem.as_deref() {
                self.push(&entry.path, Change::Trouble { side, problem: problem.clone() });
            }
        }
    }

    fn run(&mut self) {
        let (src, tgt) = (&self.source.entries, &self.target.entries);
        // Both lists start with the root directory, which always pairs with the other root.
        let (mut i, mut j) = (0, 0);
        while i < src.len() || j < tgt.len() {
            let order = match (src.get(i), tgt.get(j)) {
                (Some(s), Some(t)) => s.path.cmp(&t.path),
                (Some(_), None) => std::cmp::Ordering::Less,
                _ => std::cmp::Ordering::Greater,
            };
            match order {
                std::cmp::Ordering::Less => {
                    let end = self.source.subtree_end(i);
                    let (files, bytes) = count(&src[i..end]);
                    self.push(&src[i].path, Change::Missing { kind: src[i].kind, files, bytes });
                    self.push_problems(&src[i..end], report::Side::Source);
                    i = end;
                }
                std::cmp::Ordering::Greater => {
                    let end = self.target.subtree_end(j);
                    self.push_extra(j..end);
                    j = end;
                }
                std::cmp::Ordering::Equal => {
                    let descend = self.compare(&src[i], &tgt[j]);
                    if descend {
                        i += 1;
                        j += 1;
                    } else {
                        i = self.source.subtree_end(i);
                        j = self.target.subtree_end(j);
                    }
                }
            }
        }
    }

    /// The target-only subtree `range`, reported as extra in one piece, unless it holds
    /// directories not entered (`-x`) or holding excluded entries: those, and the directories
    /// leading to them, are kept, as rsync -x --delete keeps them, and only the rest is extra.
    fn push_extra(&mut self, range: std::ops::Range<usize>) {
        let target = self.target;
        let entries = &target.entries[range.clone()];
        // The marked directories and every directory above them, found in one pass up from
        // each mark (stopping where an earlier mark's walk already went).
        let mut kept: std::collections::HashSet<RelPath> = std::collections::HashSet::new();
        for marked in entries.iter().filter(|e| e.not_entered || e.holds_excluded) {
            let mut path = marked.path.clone();
            while kept.insert(path.clone()) && !path.is_root() {
                path = path.parent();
            }
        }
        let mut k = range.start;
        while k < range.end {
            let entry = &target.entries[k];
            if kept.contains(&entry.path) {
                k += 1;
                continue;
            }
            let end = target.subtree_end(k);
            let (files, bytes) = count(&target.entries[k..end]);
            self.push(&entry.path, Change::Extra { kind: entry.kind, files, bytes });
            self.push_problems(&target.entries[k..end], report::Side::Target);
            k = end;
        }
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
                let ranges =
                    divergent_ranges(s, self.source.header.chunk_size, t, self.target.header.chunk_size, self.chunk);
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

/// Equal to the second when either side has no sub-second part (a filesystem that keeps whole
/// seconds only), to the nanosecond otherwise.
fn same_mtime(s: &Entry, t: &Entry) -> bool {
    if s.mtime.nsec == 0 || t.mtime.nsec == 0 { s.mtime.sec == t.mtime.sec } else { s.mtime == t.mtime }
}

/// Names of the extended attributes that are added, removed or changed between two entries.
fn xattr_names_differing(s: &Entry, t: &Entry) -> Vec<String> {
    let empty = Vec::new();
    let (a, b) = (s.xattrs.as_deref().unwrap_or(&empty), t.xattrs.as_deref().unwrap_or(&empty));
    let mut names: Vec<String> = a
        .iter()
        .filter(|pair| !b.contains(pair))
        .chain(b.iter().filter(|pair| !a.contains(pair)))
        .map(|(name, _)| String::from_utf8_lossy(name).into_owned())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// Regular files and their bytes in a subtree.
fn count(entries: &[Entry]) -> (u64, u64) {
    entries.iter().filter(|e| e.kind == Kind::File).fold((0, 0), |(n, b), e| (n + 1, b + e.size))
}

/// The byte ranges where two files may differ, at the granularity of `chunk` (the coarser of
/// the two scans' chunk sizes). Chunk `i` is compared only where it has the same length on both
/// sides; from the first chunk that does not, everything to the longer end differs.
pub fn divergent_ranges(
    s: &Entry,
    s_chunk: ChunkSize,
    t: &Entry,
    t_chunk: ChunkSize,
    chunk: ChunkSize,
) -> Vec<ByteRange> {
    let longer = s.size.max(t.size);
    let mut ranges = Vec::new();
    let mut first_unmatched = 0;
    if let (Some(s_cvs), Some(t_cvs)) = (s.chunks_at(s_chunk, chunk), t.chunks_at(t_chunk, chunk)) {
        for (index, (a, b)) in s_cvs.iter().zip(&t_cvs).enumerate() {
            let index = index as u64;
            let range = chunk.chunk_range(index, s.size);
            if range != chunk.chunk_range(index, t.size) {
                break;
            }
            if a != b {
                push_merged(&mut ranges, range);
            }
            first_unmatched = range.end();
        }
    }
    push_merged(&mut ranges, ByteRange { offset: first_unmatched, length: longer - first_unmatched });
    if ranges.is_empty() {
        // Equal chunks but unequal roots cannot happen for honest manifests; never claim equal.
        ranges.push(ByteRange { offset: 0, length: longer });
    }
    ranges
}
