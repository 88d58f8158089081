//! The walk over directories: an explicit stack, never recursion as deep as the tree.
//!
//! A tree can be deeper than any thread's stack (a chain of 10,000 directories), so below
//! [`PARALLEL_DEPTH`] directories are walked by a loop over a stack of frames. Above it the
//! subdirectories of a directory are walked in parallel, each by a call of its own: that
//! recursion is bounded by `PARALLEL_DEPTH`, not by the tree. In every directory the names that
//! are not directories are visited (files hashed) in parallel before its subdirectories are
//! entered, in name order, so the output is a pre-order list.
//!
//! Descriptors are bounded too. A directory's descriptor is closed as soon as neither it nor an
//! ancestor has a subdirectory left to enter (a chain holds one at a time), and of the others
//! only the top [`OPEN_FRAMES`] frames keep theirs. A frame whose descriptor was closed gets it
//! back when the walk returns to it, by opening `..` of the child it returns from, checked to be
//! the same directory (device and inode) as before; if it is not (the tree was moved while being
//! read), the directory is reported as changed and its remaining subdirectories are not walked.

use std::ffi::CString;
use std::os::fd::OwnedFd;

use rayon::prelude::*;
use rustix::fs::{FileType, Mode, OFlags};

use super::{Entered, Listed, Visited, Walker, list_names, merge_names, unreadable};
use crate::manifest::{Entry, Problem, dir_digest};
use crate::path::RelPath;

/// Directories less deep than this have their subdirectories walked in parallel: deep enough for
/// nearly every real tree to be walked wholly in parallel, shallow enough that the descriptors
/// held along one parallel branch (one per level and side) stay few. A walk that streams its
/// entries (see [`Sink`]) walks every directory in order instead ([`Walker::in_order`]).
pub(in crate::scan) const PARALLEL_DEPTH: usize = 24;
/// Frames at the top of the stack that keep their descriptors.
const OPEN_FRAMES: usize = 32;

/// A directory open for walking, with its entry.
pub(in crate::scan) type Root = (OwnedFd, Entry);

/// What one name of a directory is, on one side.
enum Found {
    Absent,
    Leaf(Entry),
    /// A directory still to be entered.
    Dir,
    /// A subdirectory walked already (in parallel): its entry, then its subtree.
    Tree(Vec<Entry>),
}

/// Where a walk puts its entries, in pre-order: each side's directories are opened before their
/// children and closed after them, when their node hash can be taken.
pub(in crate::scan) trait Sink {
    /// What a directory being walked holds until it is closed.
    type Dir;
    /// The entry of a directory whose children come next; `parent` is `None` for the root.
    fn open(&mut self, side: usize, parent: Option<&mut Self::Dir>, entry: Entry) -> Self::Dir;
    /// An entry with nothing below it to come (a directory that could not be listed included).
    fn leaf(&mut self, side: usize, parent: Option<&mut Self::Dir>, entry: Entry);
    /// A whole subtree, finished, in pre-order.
    fn tree(&mut self, side: usize, parent: &mut Self::Dir, entries: Vec<Entry>);
    /// The directory's last child has been given; `parent` is `None` for the root.
    fn close(&mut self, side: usize, dir: Self::Dir, parent: Option<&mut Self::Dir>);
    /// The directory cannot be walked further: it ends with `problem` and no digest.
    fn fail(&mut self, side: usize, dir: &mut Self::Dir, problem: Problem);
}

/// The entries of each side in a list, in pre-order.
#[derive(Debug, Default)]
pub(in crate::scan) struct Collect {
    pub out: [Vec<Entry>; 2],
}

/// A directory of a [`Collect`]: where its entry and its direct children are in the list.
#[derive(Debug)]
pub(in crate::scan) struct Placed {
    at: usize,
    children: Vec<usize>,
}

impl Collect {
    fn push(&mut self, k: usize, parent: Option<&mut Placed>, entry: Entry) -> usize {
        let at = self.out[k].len();
        if let Some(parent) = parent {
            parent.children.push(at);
        }
        self.out[k].push(entry);
        at
    }
}

impl Sink for Collect {
    type Dir = Placed;

    fn open(&mut self, k: usize, parent: Option<&mut Placed>, entry: Entry) -> Placed {
        Placed { at: self.push(k, parent, entry), children: Vec::new() }
    }

    fn leaf(&mut self, k: usize, parent: Option<&mut Placed>, entry: Entry) {
        self.push(k, parent, entry);
    }

    fn tree(&mut self, k: usize, parent: &mut Placed, entries: Vec<Entry>) {
        parent.children.push(self.out[k].len());
        self.out[k].extend(entries);
    }

    fn close(&mut self, k: usize, dir: Placed, _parent: Option<&mut Placed>) {
        let out = &mut self.out[k];
        if out[dir.at].problem.is_none() {
            out[dir.at].digest = dir_digest(dir.children.iter().map(|&i| &out[i]));
        }
    }

    fn fail(&mut self, k: usize, dir: &mut Placed, problem: Problem) {
        let entry = &mut self.out[k][dir.at];
        entry.digest = None;
        entry.problem = Some(Box::new(problem));
    }
}

/// One side (source or target) of a directory on the stack.
struct Side<D> {
    /// `None` once closed (see the module docs).
    fd: Option<OwnedFd>,
    dev: u64,
    ino: u64,
    /// What the sink keeps for it.
    dir: D,
    /// Subdirectories listed here that are still to be entered.
    dirs_left: usize,
    /// An ancestor had subdirectories left when this directory was entered: this directory's
    /// descriptor is the way back to it.
    ancestor_needs: bool,
}

impl<D> Side<D> {
    fn needs_fd(&self) -> bool {
        self.dirs_left > 0 || self.ancestor_needs
    }
}

struct Frame<D> {
    depth: usize,
    path: RelPath,
    sides: [Option<Side<D>>; 2],
    /// Names not placed in the output yet, in order, with what they are on each side.
    pending: std::vec::IntoIter<(CString, [Found; 2])>,
}

impl Walker<'_> {
    /// The subtree of the directory open as `dir`, whose own entry is `entry`, in pre-order.
    pub(in crate::scan) fn walk_dir(&self, dir: OwnedFd, entry: Entry) -> Vec<Entry> {
        let [source, _] = self.walk_sides([Some((dir, entry)), None], 0);
        source
    }

    /// The subtree of the directory open as `dir`, whose own entry is `entry`, given to `sink`
    /// as it is walked.
    pub(in crate::scan) fn walk_into<S: Sink>(&self, dir: OwnedFd, entry: Entry, sink: &mut S) {
        self.walk_to([Some((dir, entry)), None], 0, sink);
    }

    /// This walker, walking every directory in order (its files still hashed in parallel), so
    /// that a [`Sink`] gets each entry once it is complete and nothing waits for a subtree.
    pub(in crate::scan) fn in_order(mut self) -> Self {
        self.parallel_depth = 0;
        self
    }

    /// The subtrees of a source and a target directory at the same path, walked together so
    /// that a file on both sides with the same size is read in one pass and every chunk whose
    /// bytes agree is hashed once. Gives exactly what two `walk_dir`s would.
    pub(in crate::scan) fn walk_pair(&self, dirs: [OwnedFd; 2], entries: [Entry; 2]) -> [Vec<Entry>; 2] {
        let [sd, td] = dirs;
        let [se, te] = entries;
        self.walk_sides([Some((sd, se)), Some((td, te))], 0)
    }

    /// The subtrees of one or two directories at the same path, `depth` below the scan's root,
    /// one pre-order list per side.
    fn walk_sides(&self, roots: [Option<Root>; 2], depth: usize) -> [Vec<Entry>; 2] {
        let mut collect = Collect::default();
        self.walk_to(roots, depth, &mut collect);
        collect.out
    }

    /// [`Walker::walk_sides`] into any sink.
    fn walk_to<S: Sink>(&self, roots: [Option<Root>; 2], depth: usize, sink: &mut S) {
        let mut stack: Vec<Frame<S::Dir>> = Vec::new();
        self.push_frame(&mut stack, roots, depth, sink);
        while let Some(top) = stack.last_mut() {
            match top.pending.next() {
                Some((name, found)) => {
                    let roots = self.place(top, &name, found, sink);
                    if roots.iter().any(Option::is_some) {
                        let depth = top.depth + 1;
                        self.push_frame(&mut stack, roots, depth, sink);
                    }
                }
                None => {
                    let done = stack.pop().expect("the stack has a top");
                    close(done, stack.last_mut(), sink);
                }
            }
        }
    }

    /// Lists the directories `roots` (their entries go to the output) and, unless none could be
    /// listed, pushes their frame with every name visited but the subdirectories.
    fn push_frame<S: Sink>(
        &self,
        stack: &mut Vec<Frame<S::Dir>>,
        roots: [Option<Root>; 2],
        depth: usize,
        sink: &mut S,
    ) {
        let mut sides: [Option<Side<S::Dir>>; 2] = [None, None];
        let mut names = [None, None];
        let mut path = None;
        for (k, root) in roots.into_iter().enumerate() {
            let Some((fd, mut entry)) = root else { continue };
            self.record_xattrs(&fd, &mut entry);
            match list_names(&fd) {
                Ok(listed) => {
                    let kept = self.included(&fd, &mut entry, listed);
                    self.listed(&fd, &entry, &kept);
                    names[k] = Some(kept);
                    self.progress.dir_done();
                    // Only a directory on the stack of the sequential walk can lose its descriptor
                    // and have to be recognised again.
                    let (dev, ino) = if depth < self.parallel_depth {
                        (0, 0)
                    } else {
                        rustix::fs::fstat(&fd).map_or((0, 0), |stat| (stat.st_dev, stat.st_ino))
                    };
                    let ancestor_needs =
                        stack.last().and_then(|frame| frame.sides[k].as_ref()).is_some_and(Side::needs_fd);
                    path = Some(entry.path.clone());
                    let parent = stack.last_mut().and_then(|frame| frame.sides[k].as_mut()).map(|side| &mut side.dir);
                    let dir = sink.open(k, parent, entry);
                    sides[k] = Some(Side { fd: Some(fd), dev, ino, dir, dirs_left: 0, ancestor_needs });
                }
                Err(e) => {
                    unreadable(&mut entry, format_args!("cannot list directory: {e}"));
                    let parent = stack.last_mut().and_then(|frame| frame.sides[k].as_mut()).map(|side| &mut side.dir);
                    sink.leaf(k, parent, entry);
                }
            }
        }
        let Some(path) = path else { return };
        let fds = [0, 1].map(|k| sides[k].as_ref().and_then(|side| side.fd.as_ref()));
        let items = merge_names(names);
        let find = |(name, listed): Listed| {
            let found = self.find(fds, &path, &name, listed, depth);
            (name, found)
        };
        // Handing one name to the pool and waiting for it costs more than visiting it here (a
        // chain of directories is mostly that).
        let busy = |(_, listed): &&Listed| {
            depth < self.parallel_depth || listed.iter().flatten().any(|&t| t != FileType::Directory)
        };
        let found: Vec<(CString, [Found; 2])> = if items.iter().filter(busy).nth(1).is_some() {
            items.into_par_iter().map(find).collect()
        } else {
            items.into_iter().map(find).collect()
        };
        for (k, side) in sides.iter_mut().enumerate() {
            if let Some(side) = side {
                side.dirs_left = found.iter().filter(|(_, found)| matches!(found[k], Found::Dir)).count();
            }
        }
        // The parent keeps its descriptor only while it, or an ancestor, has a subdirectory left.
        if let Some(parent) = stack.last_mut() {
            for side in parent.sides.iter_mut().flatten() {
                if !side.needs_fd() {
                    side.fd = None;
                }
            }
        }
        stack.push(Frame { depth, path, sides, pending: found.into_iter() });
        // Only the top OPEN_FRAMES frames keep descriptors: the frame falling out of that window
        // closes its own when the child above it keeps one to come back through.
        if stack.len() > OPEN_FRAMES {
            let split = stack.len() - OPEN_FRAMES;
            let (below, above) = stack.split_at_mut(split);
            let (frame, child) = (below.last_mut().expect("not empty"), &above[0]);
            for (side, child_side) in frame.sides.iter_mut().zip(&child.sides) {
                if let (Some(side), Some(child_side)) = (side, child_side)
                    && child_side.fd.is_some()
                {
                    side.fd = None;
                }
            }
        }
    }

    /// What the name `name` (listed as `listed` on each side) of the directories open as `fds`
    /// at `path` is. A subdirectory is left to enter later, unless this directory is shallow
    /// enough for its subdirectories to be walked now, in parallel.
    fn find(
        &self,
        fds: [Option<&OwnedFd>; 2],
        path: &RelPath,
        name: &CString,
        listed: [Option<FileType>; 2],
        depth: usize,
    ) -> [Found; 2] {
        let path = path.join(name.to_bytes());
        // With a change log, what it does not name is taken from the cache as it is (only a
        // walk of one tree has a cache: side 0).
        if let (Some(cache), [Some(_), None], [Some(_), None]) = (self.cache, fds, listed)
            && let Some(subtree) = cache.unchanged_subtree(&path)
        {
            return [Found::Tree(subtree), Found::Absent];
        }
        if let ([Some(a), Some(b)], [Some(FileType::RegularFile), Some(FileType::RegularFile)]) = (fds, listed)
            && let Some([x, y]) = self.visit_file_pair([a, b], &path, name)
        {
            return [Found::Leaf(x), Found::Leaf(y)];
        }
        let parallel = depth < self.parallel_depth;
        let mut found = [Found::Absent, Found::Absent];
        let mut roots: [Option<Root>; 2] = [None, None];
        for k in 0..2 {
            let (Some(fd), Some(listed)) = (fds[k], listed[k]) else { continue };
            if listed == FileType::Directory && !parallel {
                found[k] = Found::Dir;
                continue;
            }
            found[k] = match self.visit(fd, path.clone(), name, listed) {
                None => Found::Absent,
                Some(Visited::Leaf(entry)) => Found::Leaf(entry),
                Some(Visited::Dir(..)) if !parallel => Found::Dir,
                Some(Visited::Dir(entry, dev)) => match self.enter(fd, name, entry, dev) {
                    Entered::Open(fd, entry) => {
                        roots[k] = Some((fd, entry));
                        Found::Absent
                    }
                    Entered::Done(entry) => Found::Leaf(entry),
                },
            };
        }
        if roots.iter().any(Option::is_some) {
            let walked = [roots[0].is_some(), roots[1].is_some()];
            let trees = self.walk_sides(roots, depth + 1);
            for ((found, tree), walked) in found.iter_mut().zip(trees).zip(walked) {
                if walked {
                    *found = Found::Tree(tree);
                }
            }
        }
        found
    }

    /// Puts what `name` is on each side of the top frame into the output; gives the
    /// subdirectories to walk next.
    fn place<S: Sink>(
        &self,
        top: &mut Frame<S::Dir>,
        name: &CString,
        found: [Found; 2],
        sink: &mut S,
    ) -> [Option<Root>; 2] {
        let mut roots = [None, None];
        for (k, found) in found.into_iter().enumerate() {
            let Some(side) = top.sides[k].as_mut() else { continue };
            let leaf = match found {
                Found::Absent => None,
                Found::Leaf(entry) => Some(entry),
                Found::Tree(subtree) => {
                    sink.tree(k, &mut side.dir, subtree);
                    None
                }
                Found::Dir => {
                    side.dirs_left -= 1;
                    // No descriptor: the way back to this directory was lost, which its entry says.
                    let Some(fd) = side.fd.as_ref() else { continue };
                    match self.visit(fd, top.path.join(name.to_bytes()), name, FileType::Directory) {
                        None => None,
                        Some(Visited::Leaf(entry)) => Some(entry),
                        Some(Visited::Dir(entry, dev)) => match self.enter(fd, name, entry, dev) {
                            Entered::Open(fd, entry) => {
                                roots[k] = Some((fd, entry));
                                None
                            }
                            Entered::Done(entry) => Some(entry),
                        },
                    }
                }
            };
            if let Some(entry) = leaf {
                sink.leaf(k, Some(&mut side.dir), entry);
            }
        }
        roots
    }
}

/// Finishes the directories of a frame popped from the stack (their node hashes), and gives its
/// parent, now the top, its descriptors back where it needs them.
fn close<S: Sink>(done: Frame<S::Dir>, parent: Option<&mut Frame<S::Dir>>, sink: &mut S) {
    let mut parent = parent;
    for (k, side) in done.sides.into_iter().enumerate() {
        let Some(side) = side else { continue };
        let fd = side.fd;
        sink.close(k, side.dir, parent.as_deref_mut().and_then(|frame| frame.sides[k].as_mut()).map(|up| &mut up.dir));
        let Some(up) = parent.as_deref_mut().and_then(|frame| frame.sides[k].as_mut()) else { continue };
        if up.fd.is_some() || !up.needs_fd() {
            continue;
        }
        match reopen_parent(fd.as_ref(), up) {
            Ok(fd) => up.fd = Some(fd),
            Err(problem) => {
                sink.fail(k, &mut up.dir, problem);
                up.dirs_left = 0;
            }
        }
    }
}

/// The directory `up` opened again as `..` of its child open as `child`, if it is still the
/// same directory.
fn reopen_parent<D>(child: Option<&OwnedFd>, up: &Side<D>) -> Result<OwnedFd, Problem> {
    let lost = || Problem::Unstable("moved while being read: the walk could not get back to it".into());
    let child = child.ok_or_else(lost)?;
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(child, c"..", flags, Mode::empty())
        .map_err(|e| Problem::Unreadable(format!("cannot open directory again: {}", std::io::Error::from(e))))?;
    match rustix::fs::fstat(&fd) {
        Ok(stat) if (stat.st_dev, stat.st_ino) == (up.dev, up.ino) => Ok(fd),
        _ => Err(lost()),
    }
}
