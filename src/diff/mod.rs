//! Stage 3: compare two manifests and name every difference.
//!
//! Both entry lists are in [`crate::path::RelPath`] order, so one merge pass pairs them up
//! (`merge.rs`), reading each side as a stream. Where two
//! directories have equal node hashes (and no metadata outside the hash is being compared) the
//! whole subtree is skipped without looking inside. Changed files are narrowed to the chunks
//! whose CVs differ, merged into byte ranges.

mod hints;
mod merge;
mod report;

pub use hints::tree_hints;
pub use report::{
    Change, Difference, HardLinkChange, MetaChange, Report, SideInfo, Summary, TreeCounts, mtime_text, rdev_text,
};

use std::borrow::Borrow;

use crate::digest::{ByteRange, ChunkSize, push_merged};
use crate::manifest::{Entry, Header, Manifest, MetaSet};

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

/// Compares `target` against the reference `source`, both held in memory.
pub fn diff(source: &Manifest, target: &Manifest, options: &DiffOptions) -> Report {
    let (s, t) = (source.entries.iter().map(Ok), target.entries.iter().map(Ok));
    match diff_streams::<_, std::convert::Infallible>((&source.header, s), (&target.header, t), options) {
        Ok((report, _)) => report,
        Err(never) => match never {},
    }
}

/// Compares two streams of entries in manifest order (each side its header and its entries),
/// holding only the open directories, the entries of one directory being reported extra and
/// the differences found: see [`merge`]. Both streams are read to their end, so a manifest
/// whose end record is damaged gives its error, never a report.
pub fn diff_streams<E: Borrow<Entry>, X>(
    source: (&Header, impl Iterator<Item = Result<E, X>>),
    target: (&Header, impl Iterator<Item = Result<E, X>>),
    options: &DiffOptions,
) -> Result<(Report, Tally), X> {
    let ((source_header, source), (target_header, target)) = (source, target);
    let mut merge = merge::Merge::new(source_header, target_header, options.meta);
    let outcome = merge.run(source, target)?;
    let mut differences = merge.differences;
    hints::flag_lookalike_names(&mut differences);
    let side = |header: &Header, hash| SideInfo {
        root: header.root.clone(),
        hash,
        chunk_size: header.chunk_size,
        verified: None,
    };
    let t = &merge.tally;
    let report = Report {
        checked: TreeCounts { entries: t.entries, files: t.files, directories: t.directories, bytes: t.bytes },
        source: side(source_header, outcome.roots[0]),
        target: side(target_header, outcome.roots[1]),
        compared: merge.meta,
        hard_links: merge.hard_links,
        rdev: merge.rdev,
        chunk_size: merge.chunk,
        differences,
        not_entered: outcome.not_entered,
    };
    Ok((report, merge.tally))
}

/// The source's entries as a comparison met them: all of them, and those that matched (neither
/// they nor a directory above them named by a difference).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub entries: u64,
    pub files: u64,
    pub bytes: u64,
    pub directories: u64,
    pub matched_entries: u64,
    pub matched_files: u64,
    pub matched_bytes: u64,
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
