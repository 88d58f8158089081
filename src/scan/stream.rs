//! A scan written to its manifest as it goes: each entry goes to a [`ManifestWriter`] once it
//! is complete, so memory holds the directories being walked (and the hard-linked inodes seen),
//! not the tree.

use std::collections::HashMap;

use super::walk::Sink;
use crate::digest::Digest;
use crate::manifest::{DirNode, DirSlot, Entry, InodeInfo, Kind, ManifestWriter, Problem};
use crate::path::RelPath;

/// What a streamed scan saw, for its summary: the manifest itself is on disk.
#[derive(Debug, Default, Clone)]
pub struct ScanTally {
    pub entries: u64,
    pub files: u64,
    pub bytes: u64,
    pub directories: u64,
    /// The root directory's digest; `None` when some entry could not be hashed.
    pub root: Option<Digest>,
    /// Entries that could not be hashed, in manifest order.
    pub problems: Vec<(RelPath, Problem)>,
}

impl ScanTally {
    fn count(&mut self, entry: &Entry) {
        self.entries += 1;
        match entry.kind {
            Kind::File => {
                self.files += 1;
                self.bytes += entry.size;
            }
            Kind::Dir => self.directories += 1,
            _ => {}
        }
        if let Some(problem) = entry.problem.as_deref() {
            self.problems.push((entry.path.clone(), problem.clone()));
        }
    }
}

/// The sink of a streamed scan (one side only).
pub(super) struct Streamed<'w> {
    writer: &'w mut ManifestWriter,
    /// The first name of each inode with more than one link seen so far: its index, path and
    /// kind (what [`crate::manifest::link_hard_links`] finds with the whole tree).
    inodes: HashMap<(u64, u64), (u64, RelPath, Kind)>,
    /// The index of every name a hard link may point at by path: the first names above, and
    /// every non-directory of a subtree taken from a cache (whose links are paths).
    by_path: HashMap<RelPath, u64>,
    tally: ScanTally,
    /// The first error writing the spool; nothing more is written after it.
    pub error: Option<std::io::Error>,
}

/// A directory being walked: its entry, its record's place and its node hash so far.
pub(super) struct OpenDir {
    entry: Entry,
    slot: Option<DirSlot>,
    node: DirNode,
}

impl<'w> Streamed<'w> {
    /// The tally once the walk is over, its problems in manifest order (a directory's is
    /// counted when it closes, after its children).
    pub fn into_tally(self) -> ScanTally {
        let mut tally = self.tally;
        tally.problems.sort_by(|a, b| a.0.cmp(&b.0));
        tally
    }

    pub fn new(writer: &'w mut ManifestWriter) -> Self {
        Streamed { writer, inodes: HashMap::new(), by_path: HashMap::new(), tally: ScanTally::default(), error: None }
    }

    fn keep<T>(&mut self, result: std::io::Result<T>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(e) => {
                self.error.get_or_insert(e);
                None
            }
        }
    }

    /// The index of the first name of `entry`'s inode, when it is a later name of one; marks
    /// it as a hard link then, as `link_hard_links` would.
    fn first_name(&mut self, entry: &mut Entry) -> Option<u64> {
        let key = entry.inode.as_mut().and_then(|info| info.key.take());
        if entry.inode.as_deref() == Some(&InodeInfo::default()) {
            entry.inode = None;
        }
        if let Some(key) = key {
            match self.inodes.get(&key) {
                Some((index, path, kind)) if *kind == entry.kind && entry.kind != Kind::Dir => {
                    let index = *index;
                    entry.set_hard_link(path.clone());
                    return Some(index);
                }
                Some(_) => {}
                None => {
                    let index = self.writer.next_index();
                    self.inodes.insert(key, (index, entry.path.clone(), entry.kind));
                    self.by_path.insert(entry.path.clone(), index);
                }
            }
            return None;
        }
        // A name taken from a cache carries its link as a path.
        let first = entry.hard_link().map(|first| self.by_path.get(first).copied());
        match first {
            Some(None) => {
                // Its first name is not in this scan any more: not a link within the tree.
                if let Some(info) = entry.inode.as_mut() {
                    info.hard_link = None;
                }
                None
            }
            Some(index) => index,
            None => None,
        }
    }

    fn write(&mut self, mut entry: Entry, parent: Option<&mut OpenDir>, from_cache: bool) {
        let first = self.first_name(&mut entry);
        if from_cache && entry.kind != Kind::Dir {
            self.by_path.insert(entry.path.clone(), self.writer.next_index());
        }
        if self.error.is_none() {
            let written = self.writer.write(&entry, first);
            self.keep(written);
        }
        if entry.path.is_root() {
            self.tally.root = entry.digest;
        }
        self.tally.count(&entry);
        if let Some(parent) = parent {
            parent.node.add(&entry);
        }
    }
}

impl Sink for Streamed<'_> {
    type Dir = OpenDir;

    fn open(&mut self, _side: usize, _parent: Option<&mut OpenDir>, entry: Entry) -> OpenDir {
        let slot = if self.error.is_none() {
            let opened = self.writer.open_dir(&entry);
            self.keep(opened)
        } else {
            None
        };
        OpenDir { entry, slot, node: DirNode::new() }
    }

    fn leaf(&mut self, _side: usize, parent: Option<&mut OpenDir>, entry: Entry) {
        self.write(entry, parent, false);
    }

    fn tree(&mut self, _side: usize, parent: &mut OpenDir, entries: Vec<Entry>) {
        let mut entries = entries.into_iter();
        if let Some(root) = entries.next() {
            self.write(root, Some(parent), true);
        }
        for entry in entries {
            self.write(entry, None, true);
        }
    }

    fn close(&mut self, _side: usize, dir: OpenDir, parent: Option<&mut OpenDir>) {
        let OpenDir { mut entry, slot, node } = dir;
        if entry.problem.is_none() {
            entry.digest = node.finish();
        }
        if let (Some(slot), None) = (slot, &self.error) {
            let closed = self.writer.close_dir(slot, &entry);
            self.keep(closed);
        }
        // Counted at its close: what it ends as (a problem may come late).
        if entry.path.is_root() {
            self.tally.root = entry.digest;
        }
        self.tally.count(&entry);
        if let Some(parent) = parent {
            parent.node.add(&entry);
        }
    }

    fn fail(&mut self, _side: usize, dir: &mut OpenDir, problem: Problem) {
        dir.entry.digest = None;
        dir.entry.problem = Some(Box::new(problem));
    }
}
