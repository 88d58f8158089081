//! The Merkle tree of a scanned directory, as data, and its on-disk form.
//!
//! A [`Manifest`] is a header plus every entry of the tree in [`RelPath`] order (a pre-order
//! walk, root first). Files carry their BLAKE3 root and, when longer than one chunk, their chunk
//! CVs; directories carry a node hash over their children, so two equal directory digests mean
//! two equal subtrees. The byte format is in [`format`] and docs/manifest.md.

mod check;
mod format;
mod merge;
mod stream;
mod writer;

pub use check::{LinkTarget, TreeCheck, check_tree};
pub use format::{ManifestError, read_manifest, read_manifest_from, write_manifest};
pub use merge::{MergeError, merge_parts};
pub use stream::EntryStream;
pub use writer::{DirSlot, ManifestWriter, spool_file};

use std::fmt;

use blake3::hazmat::HasherExt;

use crate::digest::{ChunkSize, Digest};
use crate::path::RelPath;

/// What kind of filesystem object an entry is. Only regular files are ever opened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
}

impl Kind {
    pub(crate) const ALL: [Kind; 7] =
        [Kind::File, Kind::Dir, Kind::Symlink, Kind::Fifo, Kind::Socket, Kind::CharDevice, Kind::BlockDevice];

    pub fn code(self) -> u8 {
        self as u8
    }

    pub fn from_code(code: u8) -> Option<Kind> {
        Self::ALL.get(usize::from(code)).copied()
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Dir => "dir",
            Kind::Symlink => "symlink",
            Kind::Fifo => "fifo",
            Kind::Socket => "socket",
            Kind::CharDevice => "chardevice",
            Kind::BlockDevice => "blockdevice",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Modification time as seconds and nanoseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Mtime {
    pub sec: i64,
    pub nsec: u32,
}

/// Why an entry has no trustworthy digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// It could not be read (permission, I/O error); the message names the cause.
    Unreadable(String),
    /// It changed while it was being hashed.
    Unstable(String),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Unreadable(why) => write!(f, "unreadable: {why}"),
            Problem::Unstable(why) => write!(f, "changed while being read: {why}"),
        }
    }
}

/// One object in the tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub path: RelPath,
    pub kind: Kind,
    /// Bytes of a regular file; 0 for everything else.
    pub size: u64,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    pub mtime: Mtime,
    pub uid: u32,
    pub gid: u32,
    /// File root (what `b3sum` prints), symlink target hash or directory node hash; absent when
    /// the entry or something below it has a [`Problem`]. Special files have all-zero digests.
    pub digest: Option<Digest>,
    /// Chunk CVs of a file of at least one full chunk; empty for a shorter file.
    pub chunks: Box<[Digest]>,
    /// Symlink target, exactly as `readlink` returned it.
    pub link: Option<Box<[u8]>>,
    /// Extended attributes, sorted by name; `None` when there are none or they were not
    /// recorded (the header's `metadata` says which).
    pub xattrs: Option<Box<Xattrs>>,
    pub problem: Option<Box<Problem>>,
    /// A directory a `-x` scan did not enter: another filesystem is mounted there. It is
    /// recorded as empty, and `diff` compares nothing below it on either side.
    pub not_entered: bool,
    /// A directory some of whose entries the scan's excludes left out. A target directory
    /// like this is never removed whole, as rsync --delete keeps what it excluded.
    pub holds_excluded: bool,
    /// A device number or a hard link, which few entries have: boxed, so the others pay one
    /// pointer. Read them with [`Entry::rdev`] and [`Entry::hard_link`].
    pub inode: Option<Box<InodeInfo>>,
    /// Of a regular file, when the manifest records them (header metadata `"stamp"`): what a
    /// later scan compares to trust this entry's digest without reading the file again.
    pub stamp: Option<Stamp>,
}

/// The device, inode and status-change time of a regular file. Together with its size and
/// mtime, an unchanged stamp means the file was not written since (every write, `touch -r`
/// and `chmod` included, sets the ctime to the current time, and nobody can set it back).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Stamp {
    pub dev: u64,
    pub ino: u64,
    pub ctime: Mtime,
}

/// What only some entries have.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InodeInfo {
    /// The device number (major, minor) of a character or block device, when recorded.
    pub rdev: Option<(u32, u32)>,
    /// A name that shares its inode with an earlier name of the tree (a hard link): the first
    /// name of that inode in path order. `None` for that first name itself and for every name
    /// whose inode no earlier name in the tree shares.
    pub hard_link: Option<RelPath>,
    /// While scanning: the (device, inode) of a non-directory with more than one link, taken
    /// by [`link_hard_links`] once the whole tree is known. Never written to a manifest.
    pub(crate) key: Option<(u64, u64)>,
}

/// Extended attributes as (name, value) pairs sorted by name.
pub type Xattrs = Vec<(Box<[u8]>, Box<[u8]>)>;

impl Entry {
    /// The chunk CVs of this file at the chunk size `level` (a multiple of the `own` size it
    /// was scanned with), or `None` when it holds no full chunk at that size: then it can only
    /// be compared whole.
    pub fn chunks_at(&self, own: ChunkSize, level: ChunkSize) -> Option<Vec<Digest>> {
        if self.size < level.bytes() || self.chunks.is_empty() {
            return None;
        }
        Some(crate::digest::coarsen(&self.chunks, (level.bytes() / own.bytes()) as usize))
    }

    /// A bare entry of `kind` at `path`, with no metadata yet.
    pub fn new(path: RelPath, kind: Kind) -> Self {
        Entry {
            path,
            kind,
            size: 0,
            mode: 0,
            mtime: Mtime::default(),
            uid: 0,
            gid: 0,
            digest: None,
            chunks: Box::default(),
            link: None,
            xattrs: None,
            problem: None,
            not_entered: false,
            holds_excluded: false,
            inode: None,
            stamp: None,
        }
    }

    /// The device number (major, minor) of a character or block device, when recorded.
    pub fn rdev(&self) -> Option<(u32, u32)> {
        self.inode.as_ref().and_then(|info| info.rdev)
    }

    /// The first name of this name's inode, when that is an earlier name of the tree.
    pub fn hard_link(&self) -> Option<&RelPath> {
        self.inode.as_ref().and_then(|info| info.hard_link.as_ref())
    }

    pub fn set_rdev(&mut self, rdev: (u32, u32)) {
        self.inode_mut().rdev = Some(rdev);
    }

    pub fn set_hard_link(&mut self, first: RelPath) {
        self.inode_mut().hard_link = Some(first);
    }

    pub(crate) fn inode_mut(&mut self) -> &mut InodeInfo {
        self.inode.get_or_insert_with(Box::default)
    }
}

/// The metadata a comparison looks at, besides existence, type and content.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MetaSet {
    pub mode: bool,
    pub mtime: bool,
    pub owner: bool,
    /// Extended attributes (of files and directories; symlinks' are not read).
    pub xattr: bool,
}

impl MetaSet {
    pub const NONE: MetaSet = MetaSet { mode: false, mtime: false, owner: false, xattr: false };
    pub const ALL: MetaSet = MetaSet { mode: true, mtime: true, owner: true, xattr: true };
    /// The default, as rsync's `-rlpc`: permission bits only.
    pub const DEFAULT: MetaSet = MetaSet { mode: true, mtime: false, owner: false, xattr: false };

    /// Parses `none`, `all`, or a comma list of `mode`, `mtime`, `owner`, `xattr`.
    pub fn parse(list: &str) -> Result<MetaSet, String> {
        match list {
            "none" => return Ok(Self::NONE),
            "all" => return Ok(Self::ALL),
            _ => {}
        }
        let mut set = Self::NONE;
        for field in list.split(',') {
            match field.trim() {
                "mode" | "perms" => set.mode = true,
                "mtime" | "times" => set.mtime = true,
                "owner" => set.owner = true,
                "xattr" | "xattrs" => set.xattr = true,
                other => {
                    return Err(format!(
                        "unknown metadata field '{other}' (expected mode, mtime, owner, xattr, none or all)"
                    ));
                }
            }
        }
        Ok(set)
    }

    /// What `rsync -a` keeps: permission bits and times, and owners when run as root (rsync
    /// cannot set them otherwise, so comparing them would never converge).
    pub fn archive(as_root: bool) -> MetaSet {
        MetaSet { mode: true, mtime: true, owner: as_root, xattr: false }
    }

    /// Fields in either set.
    pub fn or(self, other: MetaSet) -> MetaSet {
        MetaSet {
            mode: self.mode || other.mode,
            mtime: self.mtime || other.mtime,
            owner: self.owner || other.owner,
            xattr: self.xattr || other.xattr,
        }
    }

    /// The fields not in this set.
    pub fn missing(self) -> MetaSet {
        MetaSet { mode: !self.mode, mtime: !self.mtime, owner: !self.owner, xattr: !self.xattr }
    }

    /// Fields in both sets.
    pub fn and(self, other: MetaSet) -> MetaSet {
        MetaSet {
            mode: self.mode && other.mode,
            mtime: self.mtime && other.mtime,
            owner: self.owner && other.owner,
            xattr: self.xattr && other.xattr,
        }
    }

    pub fn names(self) -> Vec<&'static str> {
        let mut names = Vec::new();
        for (on, name) in [(self.mode, "mode"), (self.mtime, "mtime"), (self.owner, "owner"), (self.xattr, "xattr")] {
            if on {
                names.push(name);
            }
        }
        names
    }

    /// True when every field in `self` is also in `other`.
    pub fn within(self, other: MetaSet) -> bool {
        (!self.mode || other.mode)
            && (!self.mtime || other.mtime)
            && (!self.owner || other.owner)
            && (!self.xattr || other.xattr)
    }
}

/// Where and how a tree was scanned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// `cutover <version>` of the writer.
    pub tool: String,
    pub chunk_size: ChunkSize,
    /// Metadata recorded for every entry.
    pub metadata: MetaSet,
    /// The scanned root as given on the scanning host (display form).
    pub root: String,
    /// What the scan left out.
    pub exclude: crate::exclude::Excludes,
    /// Whether the scan stayed on the root's filesystem (mount points recorded as empty).
    pub one_file_system: bool,
    /// Whether hard links were recorded (`Entry::hard_link`); manifests of earlier versions
    /// did not, so their names are not known to be separate inodes.
    pub hard_links: bool,
    /// Whether device numbers were recorded (`Entry::rdev`).
    pub rdev: bool,
    /// Whether regular files carry their [`Stamp`] (what a cached re-scan needs).
    pub stamps: bool,
    /// The scrub slice this scan re-read from data, as (slice, of): see [`crate::scan::Cache`].
    pub scrub: Option<(u64, u64)>,
    /// Set on a part of a sharded scan: it holds every directory but only the other entries
    /// its shard owns, and its directory hashes cover only those. [`merge_parts`] makes the
    /// whole manifest from all parts.
    pub shard: Option<crate::shard::Shard>,
    /// RFC 3339 UTC times of the scan.
    pub started: String,
    pub finished: String,
}

/// A whole scanned tree: entries in [`RelPath`] order, the root directory first.
#[derive(Clone, Debug)]
pub struct Manifest {
    pub header: Header,
    pub entries: Vec<Entry>,
}

impl Manifest {
    /// The root directory's node hash; `None` when some entry could not be hashed.
    pub fn root_digest(&self) -> Option<Digest> {
        self.entries.first().and_then(|e| e.digest)
    }

    /// The entry at `path`, by binary search.
    pub fn find(&self, path: &RelPath) -> Option<&Entry> {
        self.entries.binary_search_by(|e| e.path.cmp(path)).ok().map(|i| &self.entries[i])
    }

    /// Index one past the last descendant of the entry at `index`.
    pub fn subtree_end(&self, index: usize) -> usize {
        subtree_end(&self.entries, index)
    }

    /// Entries that could not be hashed.
    pub fn problems(&self) -> impl Iterator<Item = (&Entry, &Problem)> {
        self.entries.iter().filter_map(|e| e.problem.as_deref().map(|p| (e, p)))
    }
}

/// Index one past the last descendant of `entries[index]` in a pre-order list.
pub fn subtree_end(entries: &[Entry], index: usize) -> usize {
    let dir = &entries[index].path;
    let mut end = index + 1;
    if entries[index].kind == Kind::Dir {
        while end < entries.len() && entries[end].path.is_inside(dir) {
            end += 1;
        }
    }
    end
}

/// Domain separation for directory nodes; bump the version if the encoding below changes.
const DIR_NODE_CONTEXT: &str = "cutover 2026-11-24 directory node v1";
/// Kind-byte mark in a node hash: the child's device number follows its mode.
const NODE_RDEV: u8 = 0x40;
/// Kind-byte mark in a node hash: the child is a hard link; the first name of its inode follows.
const NODE_HARD_LINK: u8 = 0x80;

/// The node hash of a directory from its direct children in name order: for each child its
/// name, kind, digest and permission bits. `None` when a child has no digest, so a directory
/// that holds an unreadable file never compares equal by hash alone.
pub fn dir_digest<'a>(children: impl IntoIterator<Item = &'a Entry>) -> Option<Digest> {
    let mut node = DirNode::new();
    for child in children {
        node.add(child);
    }
    node.finish()
}

/// A directory node hash computed child by child (see [`dir_digest`]).
#[derive(Debug, Clone)]
pub struct DirNode {
    hasher: blake3::Hasher,
    complete: bool,
}

impl DirNode {
    pub fn new() -> Self {
        let key = blake3::hazmat::hash_derive_key_context(DIR_NODE_CONTEXT);
        DirNode { hasher: blake3::Hasher::new_from_context_key(&key), complete: true }
    }

    /// Adds the next child, in name order. A device number and a hard link are marked in the
    /// kind byte and follow the mode, so a tree without either hashes as it always did.
    pub fn add(&mut self, child: &Entry) {
        let Some(digest) = child.digest else {
            self.complete = false;
            return;
        };
        let name = child.path.name();
        let mut kind = child.kind.code();
        if child.rdev().is_some() {
            kind |= NODE_RDEV;
        }
        if child.hard_link().is_some() {
            kind |= NODE_HARD_LINK;
        }
        self.hasher.update(&(name.len() as u64).to_le_bytes());
        self.hasher.update(name);
        self.hasher.update(&[kind]);
        self.hasher.update(&digest.0);
        self.hasher.update(&child.mode.to_le_bytes());
        if let Some((major, minor)) = child.rdev() {
            self.hasher.update(&major.to_le_bytes());
            self.hasher.update(&minor.to_le_bytes());
        }
        if let Some(first) = child.hard_link() {
            self.hasher.update(&(first.as_bytes().len() as u64).to_le_bytes());
            self.hasher.update(first.as_bytes());
        }
    }

    pub fn finish(&self) -> Option<Digest> {
        self.complete.then(|| self.hasher.finalize().into())
    }
}

impl Default for DirNode {
    fn default() -> Self {
        Self::new()
    }
}

/// Groups the names a scan found sharing an inode: every name after the first of its inode
/// (in path order) gets [`Entry::hard_link`], and the directory hashes are taken again to
/// cover that. Only names in `entries` count: an inode's other names outside the tree do not.
pub fn link_hard_links(entries: &mut [Entry]) {
    let mut first: std::collections::HashMap<(u64, u64), usize> = std::collections::HashMap::new();
    let mut linked = false;
    for index in 0..entries.len() {
        let Some(key) = entries[index].inode.as_mut().and_then(|info| info.key.take()) else { continue };
        if entries[index].inode.as_deref() == Some(&InodeInfo::default()) {
            entries[index].inode = None;
        }
        match first.entry(key) {
            std::collections::hash_map::Entry::Vacant(slot) => {
                slot.insert(index);
            }
            std::collections::hash_map::Entry::Occupied(slot) => {
                let leader = &entries[*slot.get()];
                // Same inode means same kind, unless the tree changed while it was scanned.
                if leader.kind == entries[index].kind && leader.kind != Kind::Dir {
                    let first = leader.path.clone();
                    entries[index].set_hard_link(first);
                    linked = true;
                }
            }
        }
    }
    if linked {
        rehash_dirs(entries);
    }
}

/// Takes every directory's node hash again from its children, deepest first, in one pass and
/// without recursion. A directory with a problem keeps no digest.
pub(crate) fn rehash_dirs(entries: &mut [Entry]) {
    fn close(entries: &mut [Entry], open: &mut Vec<(usize, DirNode)>) {
        let (dir, node) = open.pop().expect("called with an open directory");
        if entries[dir].problem.is_none() {
            entries[dir].digest = node.finish();
        }
        if let Some((_, parent)) = open.last_mut() {
            parent.add(&entries[dir]);
        }
    }
    let mut open: Vec<(usize, DirNode)> = Vec::new();
    for index in 0..entries.len() {
        while let Some((dir, _)) = open.last() {
            if entries[index].path.is_inside(&entries[*dir].path) {
                break;
            }
            close(entries, &mut open);
        }
        if entries[index].kind == Kind::Dir {
            open.push((index, DirNode::new()));
        } else if let Some((_, node)) = open.last_mut() {
            node.add(&entries[index]);
        }
    }
    while !open.is_empty() {
        close(entries, &mut open);
    }
}

/// The digest a symlink is compared by: the BLAKE3 hash of its target bytes.
pub fn link_digest(target: &[u8]) -> Digest {
    blake3::hash(target).into()
}
