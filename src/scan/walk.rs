//! Parallel depth-first walk that hashes while it walks.
//!
//! Every directory is opened relative to its parent's descriptor with `O_NOFOLLOW`, and every
//! file with `O_NOFOLLOW | O_NONBLOCK`, so a symlink is never followed and a FIFO swapped in
//! mid-scan cannot hang us. Children are sorted by name bytes, which makes the output a
//! deterministic pre-order list whatever the thread timing. This file holds what is done to one
//! entry; `stack.rs` walks the directories, with no recursion as deep as the tree.

mod stack;

pub(super) use stack::Sink;

use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, OwnedFd};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};

use super::hash::{FileHash, HashError, hash_file, hash_pair};
use super::prefetch::{self, Prefetcher};
use super::xattr::read_xattrs;
use super::{Cache, Progress, ScanOptions};
use crate::digest::{ChunkSize, Digest};
use crate::exclude::Excludes;
use crate::manifest::{Entry, Kind, Mtime, Problem, Stamp, dir_digest, link_digest};
use crate::path::RelPath;

pub(super) struct Walker<'a> {
    chunk: ChunkSize,
    xattrs: bool,
    exclude: &'a Excludes,
    one_file_system: bool,
    cache: Option<&'a Cache>,
    shard: Option<crate::shard::Shard>,
    /// A file whose ctime is this late or later is recorded without a stamp: it was changed
    /// less than a second before the scan started, or during it, so a change in the same tick
    /// of the filesystem's clock, after it was read, could leave its stamp as it was.
    racy_from: Mtime,
    progress: &'a dyn Progress,
    /// Directories less deep than this have their subdirectories walked in parallel.
    parallel_depth: usize,
    /// Reads ahead of the hashing once the tree turns out not to be in the page cache; none with
    /// a cache, whose point is not to read most files.
    prefetch: Option<Prefetcher>,
}

pub(super) fn kind_of(stat: &Stat) -> Kind {
    match FileType::from_raw_mode(stat.st_mode) {
        FileType::RegularFile => Kind::File,
        FileType::Directory => Kind::Dir,
        FileType::Symlink => Kind::Symlink,
        FileType::Fifo => Kind::Fifo,
        FileType::Socket => Kind::Socket,
        FileType::CharacterDevice => Kind::CharDevice,
        FileType::BlockDevice => Kind::BlockDevice,
        FileType::Unknown => Kind::Fifo,
    }
}

/// An entry carrying the metadata of `stat`.
pub(super) fn entry_from_stat(path: RelPath, stat: &Stat) -> Entry {
    let kind = kind_of(stat);
    let mut entry = Entry::new(path, kind);
    entry.size = if kind == Kind::File { stat.st_size as u64 } else { 0 };
    if kind == Kind::File {
        #[allow(clippy::unnecessary_cast)] // st_dev and st_ino are not u64 everywhere
        let (dev, ino) = (stat.st_dev as u64, stat.st_ino as u64);
        entry.stamp = Some(Stamp { dev, ino, ctime: Mtime { sec: stat.st_ctime, nsec: stat.st_ctime_nsec as u32 } });
    }
    entry.mode = stat.st_mode & 0o7777;
    entry.mtime = mtime_of(stat);
    entry.uid = stat.st_uid;
    entry.gid = stat.st_gid;
    if matches!(kind, Kind::CharDevice | Kind::BlockDevice) {
        entry.set_rdev((rustix::fs::major(stat.st_rdev), rustix::fs::minor(stat.st_rdev)));
    }
    // Names sharing an inode are grouped once the whole tree is known (`link_hard_links`).
    #[allow(clippy::unnecessary_cast)] // st_nlink is u32 on some architectures
    if kind != Kind::Dir && stat.st_nlink as u64 > 1 {
        entry.inode_mut().key = Some((stat.st_dev, stat.st_ino));
    }
    entry
}

fn mtime_of(stat: &Stat) -> Mtime {
    Mtime { sec: stat.st_mtime, nsec: stat.st_mtime_nsec as u32 }
}

fn unreadable(entry: &mut Entry, why: impl std::fmt::Display) {
    entry.digest = None;
    entry.problem = Some(Box::new(Problem::Unreadable(why.to_string())));
}

impl<'a> Walker<'a> {
    pub(super) fn new(options: &'a ScanOptions, progress: &'a dyn Progress) -> Walker<'a> {
        Walker {
            chunk: options.chunk_size,
            xattrs: options.xattrs,
            exclude: &options.exclude,
            one_file_system: options.one_file_system,
            cache: options.cache.as_deref(),
            shard: options.shard,
            racy_from: {
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
                Mtime { sec: now.as_secs() as i64 - RACY_SECONDS, nsec: now.subsec_nanos() }
            },
            progress,
            parallel_depth: stack::PARALLEL_DEPTH,
            prefetch: options
                .cache
                .is_none()
                .then(|| Prefetcher::new(&options.exclude, options.one_file_system, options.shard)),
        }
    }

    /// The walk has listed the directory open as `dir` (whose entry is `entry`), keeping `names`.
    pub(super) fn listed(&self, dir: &OwnedFd, entry: &Entry, names: &Names) {
        if let Some(prefetch) = &self.prefetch {
            prefetch.announce(dir, &entry.path, names);
        }
    }

    /// Starts the read-ahead pool whether or not the tree is cold (for tests: every scan result
    /// must be the same with it as without).
    #[cfg(test)]
    pub(super) fn prefetch_now(&self) {
        if let Some(prefetch) = &self.prefetch {
            prefetch.saw_miss();
        }
    }

    /// A file of `size` bytes has been read and hashed on this thread.
    fn hashed(&self, size: u64) {
        if let Some(prefetch) = &self.prefetch {
            if prefetch::cold_here() {
                prefetch.saw_miss();
            }
            prefetch.hashed(size);
        }
        self.progress.file_done(size);
    }

    pub(super) fn shard(&self) -> Option<crate::shard::Shard> {
        self.shard
    }

    /// Whether, staying on one filesystem, the directory `name` (of device `dev`) inside
    /// `parent` is not entered: something else is mounted there. Known by its mount root flag
    /// (`STATX_ATTR_MOUNT_ROOT`), so that a bind mount of the same filesystem counts too, as
    /// it does for apply; by the device number on kernels that do not report the flag (before
    /// 5.8), as rsync's `-x` does.
    fn stops_at(&self, parent: &OwnedFd, name: &CStr, dev: u64) -> bool {
        use rustix::fs::{StatxAttributes, StatxFlags};
        if !self.one_file_system {
            return false;
        }
        if let Ok(st) = rustix::fs::statx(parent, name, AtFlags::SYMLINK_NOFOLLOW, StatxFlags::BASIC_STATS)
            && st.stx_attributes_mask.contains(StatxAttributes::MOUNT_ROOT)
        {
            return st.stx_attributes.contains(StatxAttributes::MOUNT_ROOT);
        }
        rustix::fs::fstat(parent).is_ok_and(|stat| stat.st_dev != dev)
    }

    /// The names listed in `dir` (whose entry is `entry`) that are not excluded; `entry` is
    /// marked when some were. A name whose listed type is unknown is looked up when only its
    /// type decides.
    fn included(&self, dir: &OwnedFd, entry: &mut Entry, names: Names) -> Names {
        if self.exclude.is_empty() {
            return self.owned(dir, &entry.path, names);
        }
        let path = &entry.path;
        let kept = |(name, listed): &(CString, FileType)| {
            let path = path.join(name.to_bytes());
            let is_dir = match listed {
                FileType::Unknown if self.exclude.depends_on_kind(&path) => {
                    rustix::fs::statat(dir, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW)
                        .is_ok_and(|stat| kind_of(&stat) == Kind::Dir)
                }
                listed => *listed == FileType::Directory,
            };
            !self.exclude.excludes(&path, is_dir)
        };
        let listed = names.len();
        let names: Names = names.into_iter().filter(kept).collect();
        entry.holds_excluded = names.len() < listed;
        self.owned(dir, &entry.path, names)
    }
}

/// What one name in a directory turned out to be.
pub(super) enum Visited {
    /// Everything there is to know about it (a file hashed, a link read, or why it could not be).
    Leaf(Entry),
    /// A directory, its entry taken from the stat, on device `dev`: to be entered.
    Dir(Entry, u64),
}

/// A directory [`Walker::enter`]ed: open to walk, or finished without being walked.
pub(super) enum Entered {
    Open(OwnedFd, Entry),
    Done(Entry),
}

impl Walker<'_> {
    /// The entry `name` in `dir`, which its directory listed as `listed`; `None` if it vanished
    /// before we got to it. Directories are stat-ed, not entered.
    fn visit(&self, dir: &OwnedFd, path: RelPath, name: &CStr, listed: FileType) -> Option<Visited> {
        let path = match listed {
            FileType::RegularFile => match self.visit_file(dir, path, name) {
                Ok(entry) => return entry.map(Visited::Leaf),
                Err(path) => path,
            },
            _ => path,
        };
        let stat = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => stat,
            Err(rustix::io::Errno::NOENT) => return None,
            Err(e) => {
                let mut entry = Entry::new(path, Kind::File);
                unreadable(&mut entry, format_args!("cannot stat: {}", std::io::Error::from(e)));
                return Some(Visited::Leaf(entry));
            }
        };
        let mut entry = entry_from_stat(path, &stat);
        if !self.owns(&entry) {
            return None;
        }
        match entry.kind {
            Kind::File => self.hash_into(dir, name, &stat, &mut entry),
            Kind::Dir => return Some(Visited::Dir(entry, stat.st_dev)),
            Kind::Symlink => match rustix::fs::readlinkat(dir, name, Vec::new()) {
                Ok(target) => {
                    let target = target.into_bytes();
                    entry.digest = Some(link_digest(&target));
                    entry.link = Some(target.into());
                }
                Err(e) => unreadable(&mut entry, format_args!("cannot read link: {}", std::io::Error::from(e))),
            },
            _ => entry.digest = Some(Digest::default()),
        }
        Some(Visited::Leaf(entry))
    }

    /// Opens the directory `name` in `dir` (whose entry, on device `dev`, is `entry`) to walk it,
    /// or gives its finished entry: not entered (another filesystem, under `-x`) or unreadable.
    fn enter(&self, dir: &OwnedFd, name: &CStr, mut entry: Entry, dev: u64) -> Entered {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        if self.stops_at(dir, name, dev) {
            // Known from the stat: opened only for extended attributes, so a mount point the
            // user cannot read is still recorded, as rsync -x copies it.
            if self.xattrs {
                match rustix::fs::openat(dir, name, flags, Mode::empty()) {
                    Ok(fd) => self.record_xattrs(&fd, &mut entry),
                    Err(e) => {
                        unreadable(&mut entry, format_args!("cannot open directory: {}", std::io::Error::from(e)))
                    }
                }
            }
            entry.not_entered = true;
            if entry.problem.is_none() {
                entry.digest = dir_digest([]);
            }
            return Entered::Done(entry);
        }
        match rustix::fs::openat(dir, name, flags, Mode::empty()) {
            Ok(fd) => Entered::Open(fd, entry),
            Err(e) => {
                unreadable(&mut entry, format_args!("cannot open directory: {}", std::io::Error::from(e)));
                Entered::Done(entry)
            }
        }
    }

    /// The entry of `name`, listed as a regular file, hashed. Opening it first and taking the
    /// stat from the open file saves a path lookup per file (measured 1-2% on many small files).
    /// Gives `path` back if it cannot be opened or is no longer a regular file, for the general
    /// path to report.
    fn visit_file(&self, dir: &OwnedFd, path: RelPath, name: &CStr) -> Result<Option<Entry>, RelPath> {
        // With a cache, a file it vouches for is not even opened: its stat decides.
        if let Some(cache) = self.cache
            && let Ok(stat) = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
            && kind_of(&stat) == Kind::File
        {
            let mut entry = entry_from_stat(path.clone(), &stat);
            if !self.owns(&entry) {
                return Ok(None);
            }
            if cache.trust(&mut entry) {
                self.drop_racy_stamp(&mut entry);
                self.progress.file_done(entry.size);
                return Ok(Some(entry));
            }
        }
        let Ok(fd) = rustix::fs::openat(dir, name, FILE_FLAGS, Mode::empty()) else { return Err(path) };
        match rustix::fs::fstat(&fd) {
            Ok(stat) if kind_of(&stat) == Kind::File => {
                let mut entry = entry_from_stat(path, &stat);
                if !self.owns(&entry) {
                    return Ok(None);
                }
                self.hash_open(fd, &stat, &mut entry);
                Ok(Some(entry))
            }
            _ => Err(path),
        }
    }

    /// Hashes the regular file `name`, checking that it did not change while we read it.
    fn hash_into(&self, dir: &OwnedFd, name: &CStr, before: &Stat, entry: &mut Entry) {
        match rustix::fs::openat(dir, name, FILE_FLAGS, Mode::empty()) {
            Ok(fd) => self.hash_open(fd, before, entry),
            Err(e) => unreadable(entry, format_args!("cannot open: {}", std::io::Error::from(e))),
        }
    }

    /// Hashes the open regular file `fd`, whose stat before reading was `before`.
    fn hash_open(&self, fd: OwnedFd, before: &Stat, entry: &mut Entry) {
        self.hash_checked(fd, before, entry);
        self.drop_racy_stamp(entry);
        self.hashed(entry.size);
    }

    fn drop_racy_stamp(&self, entry: &mut Entry) {
        if entry.stamp.is_some_and(|stamp| stamp.ctime >= self.racy_from) {
            entry.stamp = None;
        }
    }

    fn hash_checked(&self, fd: OwnedFd, before: &Stat, entry: &mut Entry) {
        // An incremental scan takes the digest of a file not written since from its cache.
        if let Some(cache) = self.cache {
            if cache.trust(entry) {
                return;
            }
            cache.count_read(entry);
        }
        self.record_xattrs(&fd, entry);
        if entry.problem.is_some() {
            return;
        }
        let result = hash_file(fd.as_fd(), entry.size, self.chunk);
        self.settle(&fd, before, entry, result);
    }

    /// Records the hash of the open file `fd`, or why there is none: it failed, or the file
    /// changed between `before` and now.
    fn settle(&self, fd: &OwnedFd, before: &Stat, entry: &mut Entry, result: Result<FileHash, HashError>) {
        let after = match rustix::fs::fstat(fd) {
            Ok(after) => after,
            Err(e) => return unreadable(entry, format_args!("cannot stat: {}", std::io::Error::from(e))),
        };
        let changed = after.st_ino != before.st_ino
            || after.st_size != before.st_size
            || mtime_of(&after) != mtime_of(before)
            || FileType::from_raw_mode(after.st_mode) != FileType::RegularFile;
        match result {
            Err(HashError::Shrank { expected, at }) => {
                let why = format!("expected {expected} bytes, file ended at {at}");
                entry.problem = Some(Box::new(Problem::Unstable(why)));
            }
            // SIGBUS on a mapped file: it shrank under us, or (unchanged) a page could not be read.
            Err(HashError::Faulted { expected }) if changed => {
                let why = format!("expected {expected} bytes, file was truncated while being read");
                entry.problem = Some(Box::new(Problem::Unstable(why)));
            }
            Err(HashError::Faulted { .. }) => unreadable(entry, "read error: SIGBUS reading the mapped file"),
            Err(HashError::Io(e)) => unreadable(entry, format_args!("read error: {e}")),
            Ok(_) if changed => {
                let why = format!(
                    "size {} -> {}, mtime {}.{:09} -> {}.{:09} during the read",
                    before.st_size,
                    after.st_size,
                    before.st_mtime,
                    before.st_mtime_nsec,
                    after.st_mtime,
                    after.st_mtime_nsec
                );
                entry.problem = Some(Box::new(Problem::Unstable(why)));
            }
            Ok(hash) => {
                entry.digest = Some(hash.root);
                entry.chunks = hash.chunks;
            }
        }
    }
}

impl Walker<'_> {
    fn record_xattrs(&self, fd: &OwnedFd, entry: &mut Entry) {
        if self.xattrs {
            match read_xattrs(fd) {
                Ok(xattrs) => entry.xattrs = xattrs,
                Err(e) => unreadable(entry, format_args!("cannot read extended attributes: {e}")),
            }
        }
    }
}

/// How long before a scan a change must be for the file's stamp to be recorded (see
/// `Walker::racy_from`): more than the coarsest clock tick of a local filesystem.
const RACY_SECONDS: i64 = 1;

/// How regular files are opened: never through a symlink, and a FIFO swapped in cannot block us.
pub(super) const FILE_FLAGS: OFlags =
    OFlags::RDONLY.union(OFlags::NOFOLLOW).union(OFlags::NONBLOCK).union(OFlags::CLOEXEC).union(OFlags::NOCTTY);

/// A name listed in the source directory, the target directory or both, with each side's type.
type Listed = (CString, [Option<FileType>; 2]);

/// Merges the sorted listings of the sides walked (one or two).
fn merge_names(sides: [Option<Names>; 2]) -> Vec<Listed> {
    let [source, target] = sides.map(Option::unwrap_or_default);
    let mut merged = Vec::with_capacity(source.len().max(target.len()));
    let (mut s, mut t) = (source.into_iter().peekable(), target.into_iter().peekable());
    loop {
        let order = match (s.peek(), t.peek()) {
            (Some(a), Some(b)) => a.0.to_bytes().cmp(b.0.to_bytes()),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => return merged,
        };
        match order {
            std::cmp::Ordering::Less => merged.extend(s.next().map(|(n, ft)| (n, [Some(ft), None]))),
            std::cmp::Ordering::Greater => merged.extend(t.next().map(|(n, ft)| (n, [None, Some(ft)]))),
            std::cmp::Ordering::Equal => {
                if let (Some((name, a)), Some((_, b))) = (s.next(), t.next()) {
                    merged.push((name, [Some(a), Some(b)]));
                }
            }
        }
    }
}

impl Walker<'_> {
    /// Two regular files of the same size hashed together; `None` when they are not that (the
    /// caller then visits each on its own, which also reports any problem).
    fn visit_file_pair(&self, dirs: [&OwnedFd; 2], path: &RelPath, name: &CStr) -> Option<[Entry; 2]> {
        let open = |dir: &OwnedFd| {
            let fd = rustix::fs::openat(dir, name, FILE_FLAGS, Mode::empty()).ok()?;
            let stat = rustix::fs::fstat(&fd).ok().filter(|stat| kind_of(stat) == Kind::File)?;
            Some((fd, stat))
        };
        let ((fd_a, stat_a), (fd_b, stat_b)) = (open(dirs[0])?, open(dirs[1])?);
        if stat_a.st_size != stat_b.st_size {
            return None;
        }
        let mut entries = [entry_from_stat(path.clone(), &stat_a), entry_from_stat(path.clone(), &stat_b)];
        self.record_xattrs(&fd_a, &mut entries[0]);
        self.record_xattrs(&fd_b, &mut entries[1]);
        if entries.iter().any(|e| e.problem.is_some()) {
            return None;
        }
        let [hash_a, hash_b] = hash_pair(fd_a.as_fd(), fd_b.as_fd(), entries[0].size, self.chunk);
        let [entry_a, entry_b] = &mut entries;
        self.settle(&fd_a, &stat_a, entry_a, hash_a);
        // A chunk CV taken from the source side stands for the target's bytes only if the
        // source held still; if it did not (changed, faulted), hash the target on its own.
        let hash_b = if entry_a.problem.is_some() { hash_file(fd_b.as_fd(), entry_b.size, self.chunk) } else { hash_b };
        self.settle(&fd_b, &stat_b, entry_b, hash_b);
        for entry in &mut entries {
            self.drop_racy_stamp(entry);
            self.hashed(entry.size);
        }
        Some(entries)
    }
}

/// Names in a directory with the type its listing gives.
pub(super) type Names = Vec<(CString, FileType)>;

/// The names in `dir` other than `.` and `..` with the type the listing gives (`Unknown` on
/// file systems that do not say), sorted by bytes.
pub(super) fn list_names(dir: &OwnedFd) -> std::io::Result<Names> {
    let fd = rustix::io::dup(dir)?;
    let mut reader = rustix::fs::Dir::new(fd)?;
    let mut names = Vec::new();
    while let Some(item) = reader.read() {
        let item = item?;
        let name = item.file_name();
        if name != c"." && name != c".." {
            names.push((name.to_owned(), item.file_type()));
        }
    }
    names.sort_unstable_by(|a, b| a.0.to_bytes().cmp(b.0.to_bytes()));
    Ok(names)
}
