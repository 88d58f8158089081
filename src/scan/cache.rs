//! Incremental scans: trusting a file's digest from an earlier manifest of the same tree.
//!
//! A regular file whose device, inode, size, mtime and ctime (to the nanosecond) all equal the
//! earlier manifest's record of it was not written since: every write, `truncate`, `touch -r`
//! and `chmod` sets the ctime to the current time, and no system call sets it back. Its digest,
//! chunk CVs and extended attributes are taken from the earlier manifest and its bytes are not
//! read. Everything else is read. Bit rot changes no metadata, so a scrub re-reads a slice of
//! the trusted files on every run (see [`Scrub`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::ScanOptions;
use crate::manifest::{Entry, Kind, Manifest};
use crate::path::RelPath;

/// Which trusted files are re-read anyway.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Scrub {
    /// None: a trusted file is not read.
    #[default]
    Off,
    /// The files whose [`scrub_slice`] of `of` is `slice`: with `slice` moving on by one each
    /// run, every file is re-read at least once every `of` runs.
    Slice { slice: u64, of: u64 },
    /// All of them: nothing is trusted (`--full`).
    Full,
}

impl Scrub {
    /// The scrub of `of` slices that follows the one recorded in `last` (a cache manifest's
    /// header): slice 0 when there was none.
    pub fn next(of: u64, last: Option<(u64, u64)>) -> Scrub {
        let of = of.max(1);
        let slice = last.map_or(0, |(slice, _)| (slice + 1) % of);
        Scrub::Slice { slice, of }
    }

    fn rereads(self, path: &RelPath) -> bool {
        match self {
            Scrub::Off => false,
            Scrub::Full => true,
            Scrub::Slice { slice, of } => scrub_slice(path, of) == slice,
        }
    }
}

/// Which of `of` scrub slices the file at `path` is in: from its path alone, so a file keeps
/// its slice from run to run.
pub fn scrub_slice(path: &RelPath, of: u64) -> u64 {
    let hash = blake3::hash(path.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash.as_bytes()[..8]);
    u64::from_le_bytes(first) % of.max(1)
}

/// An earlier manifest of the tree being scanned, and what trusting it saved.
#[derive(Debug)]
pub struct Cache {
    manifest: Arc<Manifest>,
    scrub: Scrub,
    /// `--changed-from`: only these paths (sorted), what is below them and the directories
    /// above them are looked at; everything else is taken from the cache as it is.
    changed: Option<Vec<RelPath>>,
    counts: Counts,
}

/// Files and bytes verified from data and trusted from metadata by a scan with a cache.
#[derive(Debug, Default)]
pub struct Counts {
    pub verified_files: AtomicU64,
    pub verified_bytes: AtomicU64,
    pub trusted_files: AtomicU64,
    pub trusted_bytes: AtomicU64,
}

/// The counts of a finished scan.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Verified {
    pub verified_files: u64,
    pub verified_bytes: u64,
    pub trusted_files: u64,
    pub trusted_bytes: u64,
}

impl Verified {
    /// The counts of a scan that read every file of `manifest`.
    pub fn all_read(manifest: &Manifest) -> Verified {
        let files = manifest.entries.iter().filter(|e| e.kind == Kind::File);
        let (verified_files, verified_bytes) = files.fold((0, 0), |(n, b), e| (n + 1, b + e.size));
        Verified { verified_files, verified_bytes, trusted_files: 0, trusted_bytes: 0 }
    }
}

impl Cache {
    /// `manifest` as the cache of a scan with `options`, or why it cannot be one: it was made
    /// with other settings, so its digests do not stand for what this scan would record.
    pub fn new(manifest: Arc<Manifest>, options: &ScanOptions, scrub: Scrub) -> Result<Cache, String> {
        let header = &manifest.header;
        let differs = if !header.stamps {
            Some("it records no inode numbers and change times (written by an earlier cutover)")
        } else if header.chunk_size != options.chunk_size {
            Some("its chunk size differs")
        } else if header.exclude != options.exclude {
            Some("its exclude patterns differ")
        } else if header.metadata.xattr != options.xattrs {
            Some("it was scanned with extended attributes set differently")
        } else if header.one_file_system != options.one_file_system {
            Some("its one-file-system setting differs")
        } else if header.shard.is_some() && header.shard != options.shard {
            // A part holds only its shard's files: entries taken from it as they are (with
            // --changed-from) would leave the others out of this scan.
            Some("it is a part of a sharded scan, which holds only the files of its own shard")
        } else {
            None
        };
        match differs {
            Some(why) => Err(format!("not used as a cache: {why}; every file is read")),
            None => Ok(Cache { manifest, scrub, changed: None, counts: Counts::default() }),
        }
    }

    /// Looks only at `paths` (from a change log), the directories above them and what is
    /// below them; every other entry the cache has is taken from it unlooked-at, metadata
    /// and all. A name the cache does not have is always looked at.
    pub fn only_changed(mut self, mut paths: Vec<RelPath>) -> Cache {
        paths.sort();
        paths.dedup();
        self.changed = Some(paths);
        self
    }

    /// With a change log: the cached subtree at `path` (the entry and everything below it),
    /// when the log names nothing at, above or below it and the cache has it.
    pub(super) fn unchanged_subtree(&self, path: &RelPath) -> Option<Vec<Entry>> {
        let changed = self.changed.as_ref()?;
        let listed = |p: &RelPath| changed.binary_search(p).is_ok();
        // Listed itself, or something below it (the first listed path not before it).
        let at = changed.partition_point(|p| p < path);
        if changed.get(at).is_some_and(|p| p == path || p.is_inside(path)) {
            return None;
        }
        // Below a listed directory.
        let mut up = path.clone();
        while !up.is_root() {
            up = up.parent();
            if listed(&up) {
                return None;
            }
        }
        let index = self.manifest.entries.binary_search_by(|e| e.path.cmp(path)).ok()?;
        let subtree = self.manifest.entries[index..self.manifest.subtree_end(index)].to_vec();
        for entry in subtree.iter().filter(|e| e.kind == Kind::File) {
            self.counts.trusted_files.fetch_add(1, Relaxed);
            self.counts.trusted_bytes.fetch_add(entry.size, Relaxed);
        }
        Some(subtree)
    }

    /// The manifest this cache trusts (last run's).
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    pub fn scrub(&self) -> Scrub {
        self.scrub
    }

    /// What this cache saved so far.
    pub fn verified(&self) -> Verified {
        Verified {
            verified_files: self.counts.verified_files.load(Relaxed),
            verified_bytes: self.counts.verified_bytes.load(Relaxed),
            trusted_files: self.counts.trusted_files.load(Relaxed),
            trusted_bytes: self.counts.trusted_bytes.load(Relaxed),
        }
    }

    /// Fills in the digest, chunk CVs and extended attributes of the regular file `entry`
    /// (carrying its fresh stat) from the cache, if its record there can be trusted: then the
    /// file need not be read. Counts it as trusted, or as to be read.
    pub(super) fn trust(&self, entry: &mut Entry) -> bool {
        let trusted = entry.stamp.is_some() && !self.scrub.rereads(&entry.path) && {
            match self.manifest.find(&entry.path) {
                Some(old) if same_file(old, entry) => {
                    entry.digest = old.digest;
                    entry.chunks = old.chunks.clone();
                    entry.xattrs = old.xattrs.clone();
                    true
                }
                _ => false,
            }
        };
        if trusted {
            self.counts.trusted_files.fetch_add(1, Relaxed);
            self.counts.trusted_bytes.fetch_add(entry.size, Relaxed);
        }
        trusted
    }

    /// Counts the file `entry` as read from data.
    pub(super) fn count_read(&self, entry: &Entry) {
        self.counts.verified_files.fetch_add(1, Relaxed);
        self.counts.verified_bytes.fetch_add(entry.size, Relaxed);
    }
}

/// Whether `old`, an earlier record, is of the very file `new` describes, unwritten since.
fn same_file(old: &Entry, new: &Entry) -> bool {
    old.kind == Kind::File
        && new.kind == Kind::File
        && old.digest.is_some()
        && old.problem.is_none()
        && old.stamp.is_some()
        && old.stamp == new.stamp
        && old.size == new.size
        && old.mtime == new.mtime
}
