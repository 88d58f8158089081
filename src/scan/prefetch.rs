//! Reading ahead of the hashers when the tree is not in the page cache.
//!
//! Hashing threads (`-j`, one per CPU by default) wait on every cold read, so on their own they
//! keep only as many requests in flight as there are CPUs, while local SSDs and virtual disks
//! want dozens. A [`Prefetcher`] decouples the two: a pool of I/O threads that only open, list
//! and announce (`posix_fadvise(POSIX_FADV_WILLNEED)`), never hash, works one directory level
//! ahead of the walk:
//!
//! - when the walk lists a directory it [`announce`](Prefetcher::announce)s it; the pool then
//!   lists each of its subdirectories (so the walk finds them listed) and asks the kernel for the
//!   first [`FILE_AHEAD`] bytes of the files in them (opening a file reads its inode, so that is
//!   fetched too);
//! - the pool stays at most [`FILES_AHEAD`] files and [`BYTES_AHEAD`] bytes ahead of what the
//!   hashers have finished, so a tree larger than memory does not push its own pages out before
//!   they are hashed;
//! - large files are read ahead in windows by the thread hashing them ([`Ahead`]).
//!
//! It costs nothing on a warm tree: the first read of each file takes only what the page cache
//! holds ([`read_cached`], a `preadv2(RWF_NOWAIT)` in place of the first `pread`), and the pool
//! starts once [`MISSES`] of the last [`MISS_RUN`] files hashed on one thread missed
//! ([`cold_here`]); it stops again after [`WARM_RUN`] files in a row that it found cached.
//!
//! Nothing here changes the source: files are opened read-only (`O_NOFOLLOW | O_NONBLOCK`, as the
//! walk opens them) and `WILLNEED` only fills the page cache. See docs/design.md, "Reading files".

use std::collections::{HashSet, VecDeque};
use std::ffi::CString;
use std::num::NonZeroU64;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Condvar, Mutex, Once};
use std::time::Duration;

use rustix::fs::{Advice, FileType, Mode, OFlags};

mod cold;
use cold::cached;
pub(super) use cold::{Ahead, WINDOW, cold_here, looks_cached, read_cached};

use super::walk::{FILE_FLAGS, Names, list_names};
use crate::exclude::Excludes;
use crate::path::RelPath;
use crate::shard::Shard;

/// I/O threads: requests the pool can have waiting on the storage at once (each thread blocks on
/// one open or listing; the data itself is announced and read by the kernel asynchronously).
const THREADS: usize = 32;
/// Files announced but not hashed yet, at most.
const FILES_AHEAD: i64 = 8192;
/// Bytes announced but not hashed yet, at most.
const BYTES_AHEAD: i64 = 256 << 20;
/// Bytes of each file announced by the pool; the rest of a larger file is read ahead by the
/// thread hashing it ([`Ahead`]).
pub(super) const FILE_AHEAD: u64 = 4 << 20;
/// Files found cached in a row after which the pool stops until a hashing read misses again.
const WARM_RUN: u32 = 4096;
/// Names of one directory handed to one I/O thread at a time.
const BATCH: usize = 16;

/// Reads ahead of a scan's hashers once the tree turns out to be cold; see the module docs.
#[derive(Debug)]
pub(super) struct Prefetcher {
    shared: Arc<Shared>,
    start: Once,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl Prefetcher {
    pub(super) fn new(exclude: &Excludes, one_file_system: bool, shard: Option<Shard>) -> Prefetcher {
        let (threads, dirs_max) = descriptor_share();
        Prefetcher {
            shared: Arc::new(Shared {
                active: AtomicBool::new(false),
                stop: AtomicBool::new(false),
                bytes_ahead: AtomicI64::new(0),
                files_ahead: AtomicI64::new(0),
                dirs_open: Arc::new(AtomicI64::new(0)),
                dirs_max,
                threads,
                queue: Mutex::new(Queue::default()),
                work: Condvar::new(),
                room: Condvar::new(),
                exclude: exclude.clone(),
                one_file_system,
                shard,
            }),
            start: Once::new(),
            threads: Mutex::new(Vec::new()),
        }
    }

    /// A hashing read found bytes missing from the page cache: start (or restart) the pool.
    pub(super) fn saw_miss(&self) {
        if self.shared.threads == 0 || self.shared.active.swap(true, Ordering::Relaxed) {
            return;
        }
        // Counted afresh: while stopped, the hashers did not count what they read.
        self.shared.bytes_ahead.store(0, Ordering::Relaxed);
        self.shared.files_ahead.store(0, Ordering::Relaxed);
        self.start.call_once(|| {
            let mut threads = self.threads.lock().unwrap_or_else(|e| e.into_inner());
            for _ in 0..self.shared.threads {
                let shared = Arc::clone(&self.shared);
                let spawned = std::thread::Builder::new()
                    .name("cutover-prefetch".into())
                    .stack_size(256 << 10)
                    .spawn(move || shared.serve());
                // Without threads the scan is as it was: slower on cold storage, never wrong.
                threads.extend(spawned.ok());
            }
        });
    }

    /// The walk has listed the directory open as `dir` at `path`, keeping `names`.
    pub(super) fn announce(&self, dir: &OwnedFd, path: &RelPath, names: &Names) {
        if !self.shared.active.load(Ordering::Relaxed) {
            return;
        }
        let Some(dir) = self.shared.hold(|| rustix::io::fcntl_dupfd_cloexec(dir, 0)) else { return };
        let job = Job::Listed { dir, path: path.clone(), names: names.clone() };
        self.shared.push(vec![job]);
    }

    /// A hashing thread finished a file of `size` bytes.
    pub(super) fn hashed(&self, size: u64) {
        if self.shared.active.load(Ordering::Relaxed) {
            // Never below zero: the hashers also read files the pool never announced, and those
            // must not make room for more than the limits.
            let less = |n: i64| move |ahead: i64| Some((ahead - n).max(0));
            let bytes = size.min(FILE_AHEAD) as i64;
            let before = self.shared.bytes_ahead.fetch_update(Ordering::Relaxed, Ordering::Relaxed, less(bytes));
            let files = self.shared.files_ahead.fetch_update(Ordering::Relaxed, Ordering::Relaxed, less(1));
            // Woken once, when the hashers have caught up to the low mark (see `wait_for_room`).
            let crossed = |before: Result<i64, i64>, n: i64, limit: i64| {
                before.is_ok_and(|before| before > limit / 2 && before - n <= limit / 2)
            };
            if crossed(before, bytes, BYTES_AHEAD) || crossed(files, 1, FILES_AHEAD) {
                self.shared.room.notify_all();
            }
        }
    }
}

impl Drop for Prefetcher {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        {
            let _queue = self.shared.queue.lock().unwrap_or_else(|e| e.into_inner());
            self.shared.work.notify_all();
            self.shared.room.notify_all();
        }
        for thread in self.threads.get_mut().unwrap_or_else(|e| e.into_inner()).drain(..) {
            let _ = thread.join();
        }
    }
}

#[derive(Debug)]
struct Shared {
    active: AtomicBool,
    stop: AtomicBool,
    /// Bytes and files announced or queued minus those hashed since (may go below zero: the
    /// hashers also read files the pool never saw).
    bytes_ahead: AtomicI64,
    files_ahead: AtomicI64,
    /// Directories the pool holds open, and at most.
    dirs_open: Arc<AtomicI64>,
    dirs_max: i64,
    threads: usize,
    queue: Mutex<Queue>,
    work: Condvar,
    room: Condvar,
    exclude: Excludes,
    one_file_system: bool,
    /// A sharded scan hashes only its shard's files: the others are not read ahead. (A file
    /// with several links goes by its inode, which the listing does not tell: such a file may
    /// be read ahead in vain or not at all, which changes no result.)
    shard: Option<Shard>,
}

#[derive(Debug, Default)]
struct Queue {
    jobs: VecDeque<Job>,
    /// Directories (device, inode) whose files the pool announced before the walk listed them.
    expanded: HashSet<(u64, u64)>,
    /// Files found cached in a row.
    warm: u32,
}

/// A directory the pool holds open, counted so that it never holds more than `Shared::dirs_max`.
#[derive(Debug)]
struct Dir {
    fd: OwnedFd,
    open: Arc<AtomicI64>,
}

impl Drop for Dir {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Directories the pool holds open at most (each queued job keeps its directory open).
const DIRS_OPEN: i64 = 256;

/// I/O threads and directories held open: [`THREADS`] and [`DIRS_OPEN`], or fewer, so that the
/// pool never takes more than a quarter of the descriptors the process may open (each thread
/// holds one file at a time) and the walk (which needs about 64 per tree) is never refused one.
/// (0, 0), the pool off, under a limit of 1024 descriptors.
fn descriptor_share() -> (usize, i64) {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current.unwrap_or(u64::MAX);
    if limit < 1024 {
        return (0, 0);
    }
    let share = (limit / 4).min(THREADS as u64 + DIRS_OPEN as u64);
    let threads = (share / 3).min(THREADS as u64);
    (threads as usize, (share - threads) as i64)
}

#[derive(Debug)]
enum Job {
    /// A directory the walk has just listed: announce its files unless done already, and
    /// expand its subdirectories.
    Listed { dir: Arc<Dir>, path: RelPath, names: Names },
    /// A subdirectory of a listed directory: list it and announce its files.
    Expand { parent: Arc<Dir>, dev: u64, path: RelPath, name: CString },
    /// Files of one directory to announce.
    Files { dir: Arc<Dir>, names: Vec<CString> },
}

impl Shared {
    /// Puts `jobs` at the front of the queue, in order: the newest work is nearest to where the
    /// walk is (it walks depth first), and what it has passed sinks to the back.
    fn push(&self, jobs: Vec<Job>) {
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let n = jobs.len();
        for job in jobs.into_iter().rev() {
            queue.jobs.push_front(job);
        }
        match n {
            0 => {}
            1 => self.work.notify_one(),
            _ => self.work.notify_all(),
        }
    }

    /// A directory opened by `open`, unless the pool holds too many already.
    fn hold(&self, open: impl FnOnce() -> rustix::io::Result<OwnedFd>) -> Option<Arc<Dir>> {
        if self.dirs_open.fetch_add(1, Ordering::Relaxed) >= self.dirs_max {
            self.dirs_open.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        match open() {
            Ok(fd) => Some(Arc::new(Dir { fd, open: Arc::clone(&self.dirs_open) })),
            Err(_) => {
                self.dirs_open.fetch_sub(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// One I/O thread: takes jobs until the scan is over.
    fn serve(&self) {
        loop {
            let job = {
                let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
                loop {
                    if self.stop.load(Ordering::Relaxed) {
                        queue.jobs.clear();
                        return;
                    }
                    if !self.active.load(Ordering::Relaxed) {
                        queue.jobs.clear();
                    }
                    if let Some(job) = queue.jobs.pop_front() {
                        break job;
                    }
                    queue = self.work.wait(queue).unwrap_or_else(|e| e.into_inner());
                }
            };
            match job {
                Job::Listed { dir, path, names } => self.listed(dir, &path, names),
                Job::Expand { parent, dev, path, name } => {
                    if !self.wait_for_room() {
                        continue;
                    }
                    if let Err(job) = self.expand(parent, dev, path, name) {
                        // Too many directories open: later, once queued files have closed some.
                        std::thread::sleep(Duration::from_millis(1));
                        self.queue.lock().unwrap_or_else(|e| e.into_inner()).jobs.push_back(job);
                    }
                }
                Job::Files { dir, names } => self.files(&dir.fd, names),
            }
        }
    }

    fn listed(&self, dir: Arc<Dir>, path: &RelPath, names: Names) {
        let Ok(stat) = rustix::fs::fstat(&dir.fd) else { return };
        #[allow(clippy::unnecessary_cast)] // st_dev and st_ino are not u64 everywhere
        let (dev, ino) = (stat.st_dev as u64, stat.st_ino as u64);
        let done = self.queue.lock().unwrap_or_else(|e| e.into_inner()).expanded.remove(&(dev, ino));
        let mut jobs = Vec::new();
        if !done {
            jobs.extend(self.files_of(&dir, path, &names));
        }
        for (name, listed) in names {
            if listed == FileType::Directory {
                let path = path.join(name.to_bytes());
                jobs.push(Job::Expand { parent: Arc::clone(&dir), dev, path, name });
            }
        }
        self.push(jobs);
    }

    /// Lists the subdirectory `name` of `parent` (on device `parent_dev`) and announces its
    /// files; gives the job back when the pool holds too many directories to open another.
    fn expand(&self, parent: Arc<Dir>, parent_dev: u64, path: RelPath, name: CString) -> Result<(), Job> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        if self.dirs_open.load(Ordering::Relaxed) >= self.dirs_max {
            return Err(Job::Expand { parent, dev: parent_dev, path, name });
        }
        let Some(dir) = self.hold(|| rustix::fs::openat(&parent.fd, name.as_c_str(), flags, Mode::empty())) else {
            return Ok(());
        };
        drop(parent);
        let Ok(stat) = rustix::fs::fstat(&dir.fd) else { return Ok(()) };
        #[allow(clippy::unnecessary_cast)] // st_dev and st_ino are not u64 everywhere
        let (dev, ino) = (stat.st_dev as u64, stat.st_ino as u64);
        if self.one_file_system && dev != parent_dev {
            return Ok(());
        }
        if !self.queue.lock().unwrap_or_else(|e| e.into_inner()).expanded.insert((dev, ino)) {
            return Ok(());
        }
        let Ok(names) = list_names(&dir.fd) else { return Ok(()) };
        let kept = |(name, listed): &(CString, FileType)| {
            self.exclude.is_empty()
                || !self.exclude.excludes(&path.join(name.to_bytes()), *listed == FileType::Directory)
        };
        let names: Names = names.into_iter().filter(kept).collect();
        let jobs: Vec<Job> = self.files_of(&dir, &path, &names).collect();
        self.push(jobs);
        Ok(())
    }

    /// Jobs announcing the regular files among `names`, a batch each; they count as ahead from now.
    fn files_of<'a>(&self, dir: &'a Arc<Dir>, path: &RelPath, names: &'a Names) -> impl Iterator<Item = Job> + 'a {
        let owned =
            |name: &CString| self.shard.is_none_or(|shard| shard.owns_path(path.join(name.to_bytes()).as_bytes()));
        let files: Vec<CString> =
            names.iter().filter(|(n, t)| *t == FileType::RegularFile && owned(n)).map(|(n, _)| n.clone()).collect();
        let batches: Vec<Vec<CString>> = files.chunks(BATCH).map(<[CString]>::to_vec).collect();
        batches.into_iter().map(|names| Job::Files { dir: Arc::clone(dir), names })
    }

    /// Announces the first bytes of each of `names` in `dir`, staying within the budget.
    fn files(&self, dir: &OwnedFd, names: Vec<CString>) {
        for name in names {
            if !self.wait_for_room() {
                return;
            }
            let Ok(fd) = rustix::fs::openat(dir, name.as_c_str(), FILE_FLAGS, Mode::empty()) else { continue };
            let Ok(stat) = rustix::fs::fstat(&fd) else { continue };
            if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile || stat.st_size <= 0 {
                continue;
            }
            let len = (stat.st_size as u64).min(FILE_AHEAD);
            if cached(fd.as_fd(), 0) {
                let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
                queue.warm += 1;
                if queue.warm >= WARM_RUN {
                    queue.warm = 0;
                    self.active.store(false, Ordering::Relaxed);
                }
                continue;
            }
            self.queue.lock().unwrap_or_else(|e| e.into_inner()).warm = 0;
            self.bytes_ahead.fetch_add(len as i64, Ordering::Relaxed);
            self.files_ahead.fetch_add(1, Ordering::Relaxed);
            let _ = rustix::fs::fadvise(&fd, 0, NonZeroU64::new(len), Advice::WillNeed);
        }
    }

    /// Waits while the pool is too far ahead of the hashers; false when it should stop instead.
    /// Once at a limit it waits until the hashers are down to half of it, so that the hashers
    /// wake the pool once per half-limit, not once per file.
    fn wait_for_room(&self) -> bool {
        let over = |factor: i64| {
            self.bytes_ahead.load(Ordering::Relaxed) > BYTES_AHEAD / factor
                || self.files_ahead.load(Ordering::Relaxed) > FILES_AHEAD / factor
        };
        if !over(1) {
            return !self.stop.load(Ordering::Relaxed) && self.active.load(Ordering::Relaxed);
        }
        loop {
            if self.stop.load(Ordering::Relaxed) || !self.active.load(Ordering::Relaxed) {
                return false;
            }
            if !over(2) {
                return true;
            }
            let queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            // Timed: the hashers notify without taking the lock, so a wake-up can be missed.
            let _ = self.room.wait_timeout(queue, Duration::from_millis(50));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::manifest::Entry;
    use crate::scan::walk::Walker;
    use crate::scan::{ScanOptions, Silent, open_root};

    fn write(root: &Path, rel: &str, len: usize, seed: u32) {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let bytes: Vec<u8> =
            (0..len as u32).map(|i| (i.wrapping_add(seed).wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        std::fs::write(path, bytes).unwrap();
    }

    /// Directories three levels deep with files of many sizes (one larger than FILE_AHEAD), an
    /// excluded directory, a symlink, a FIFO and an empty file.
    fn tree(root: &Path, seed: u32) {
        for d in 0..6 {
            for e in 0..4 {
                for f in 0..9 {
                    write(root, &format!("d{d}/e{e}/f{f}"), 37 * f * f + d * 1000 + e, seed + f as u32);
                }
                write(root, &format!("d{d}/e{e}/deeper/g"), 5000 + d, seed);
            }
            write(root, &format!("d{d}/top"), 70_000 + d, seed);
        }
        write(root, "big", (FILE_AHEAD as usize) + (3 << 20) + 11, seed);
        write(root, "skip/inside/x", 10, seed);
        write(root, "empty", 0, seed);
        std::os::unix::fs::symlink("d0/top", root.join("link")).unwrap();
        rustix::fs::mknodat(rustix::fs::CWD, root.join("fifo"), rustix::fs::FileType::Fifo, Mode::from(0o644), 0)
            .unwrap();
    }

    fn without_stamps(mut entries: Vec<Entry>) -> Vec<Entry> {
        entries.iter_mut().for_each(|entry| entry.stamp = None);
        entries
    }

    /// (path, ctime, mtime, size) of everything below `root`: a write or a change of metadata
    /// anywhere would show in a ctime.
    fn states(root: &Path) -> Vec<(PathBuf, i64, i64, i64, u64)> {
        let mut out = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for item in std::fs::read_dir(&dir).unwrap() {
                let path = item.unwrap().path();
                let meta = path.symlink_metadata().unwrap();
                out.push((path.clone(), meta.ctime(), meta.ctime_nsec(), meta.mtime_nsec(), meta.size()));
                if meta.is_dir() {
                    stack.push(path);
                }
            }
        }
        out.sort();
        out
    }

    fn walk(roots: &[&Path], options: &ScanOptions, pool: bool) -> Vec<Vec<Entry>> {
        let walker = Walker::new(options, &Silent);
        if pool {
            walker.prefetch_now();
        }
        let opened: Vec<_> = roots.iter().map(|root| open_root(root).unwrap()).collect();
        let mut opened = opened.into_iter();
        let sides = match roots.len() {
            1 => {
                let (fd, entry) = opened.next().unwrap();
                vec![walker.walk_dir(fd, entry)]
            }
            _ => {
                let ((a, ea), (b, eb)) = (opened.next().unwrap(), opened.next().unwrap());
                walker.walk_pair([a, b], [ea, eb]).into()
            }
        };
        sides.into_iter().map(without_stamps).collect()
    }

    #[test]
    fn scans_with_the_read_ahead_pool_running_give_the_same_entries_and_leave_the_trees_as_they_were() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        tree(a.path(), 1);
        tree(b.path(), 1);
        write(b.path(), "d2/e1/f4", 999, 7);
        write(b.path(), "big", (FILE_AHEAD as usize) + (3 << 20) + 11, 2);
        std::fs::remove_dir_all(b.path().join("d4/e0")).unwrap();
        let before = [states(a.path()), states(b.path())];
        let options = ScanOptions { exclude: Excludes::new(["skip"]).unwrap(), ..ScanOptions::default() };
        for roots in [&[a.path()][..], &[b.path()][..], &[a.path(), b.path()][..]] {
            let plain = walk(roots, &options, false);
            let ahead = walk(roots, &options, true);
            assert_eq!(plain, ahead, "{roots:?}");
            assert!(!plain[0].iter().any(|e| e.path.as_bytes().starts_with(b"skip/")));
        }
        assert_eq!([states(a.path()), states(b.path())], before);
    }

    /// A sharded scan reads ahead only the files its shard hashes, by the same rule.
    #[test]
    fn a_sharded_scan_reads_ahead_only_its_own_files() {
        let root = tempfile::tempdir().unwrap();
        let names: Names = (0..64).map(|i| (CString::new(format!("f{i}")).unwrap(), FileType::RegularFile)).collect();
        let path = RelPath::root().join(b"sub");
        let shard = Shard::new(2, 3).unwrap();
        let prefetcher = Prefetcher::new(&Excludes::new(Vec::<String>::new()).unwrap(), false, Some(shard));
        let dir =
            prefetcher.shared.hold(|| rustix::io::fcntl_dupfd_cloexec(std::fs::File::open(root.path()).unwrap(), 0));
        let dir = dir.unwrap();
        let announced: Vec<Vec<u8>> = prefetcher
            .shared
            .files_of(&dir, &path, &names)
            .flat_map(|job| match job {
                Job::Files { names, .. } => names.into_iter().map(CString::into_bytes).collect(),
                _ => Vec::new(),
            })
            .collect();
        let owned: Vec<Vec<u8>> = names
            .iter()
            .map(|(n, _)| n.as_bytes().to_vec())
            .filter(|n| shard.owns_path(path.join(n).as_bytes()))
            .collect();
        assert_eq!(announced, owned);
        assert!(!owned.is_empty() && owned.len() < names.len(), "{} of {}", owned.len(), names.len());
    }
}
