//! Telling a cold file from a warm one without waiting, and reading a large cold file ahead of
//! the thread hashing it.

use std::num::NonZeroU64;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::Advice;

/// Whether the page at `offset` of `fd` is in the page cache (a one-byte read that does not wait).
pub(super) fn cached(fd: impl AsFd, offset: u64) -> bool {
    let mut byte = [0u8];
    matches!(
        rustix::io::preadv2(fd, &mut [std::io::IoSliceMut::new(&mut byte)], offset, rustix::io::ReadWriteFlags::NOWAIT),
        Ok(_) | Err(rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS)
    )
}

thread_local! {
    /// A read on this thread found bytes missing from the page cache since [`cold_here`].
    static MISSED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Files hashed on this thread in the current run of [`MISS_RUN`], and those that missed.
    static RECENT: std::cell::Cell<(u32, u32)> = const { std::cell::Cell::new((0, 0)) };
}

/// Files of which [`MISSES`] must have missed the page cache for a tree to count as cold: a warm
/// tree loses a page here and there (0.2% of the files of a kernel tree, on a busy machine).
const MISS_RUN: u32 = 256;
const MISSES: u32 = 8;

/// Called once per file hashed on this thread: whether the files hashed here lately missed the
/// page cache often enough to call the tree cold.
pub(in crate::scan) fn cold_here() -> bool {
    let missed = MISSED.with(|missed| missed.replace(false));
    RECENT.with(|recent| {
        let (files, misses) = recent.get();
        let (files, misses) = (files + 1, misses + u32::from(missed));
        let cold = misses >= MISSES;
        recent.set(if cold || files >= MISS_RUN { (0, 0) } else { (files, misses) });
        cold
    })
}

/// Reads into `buf` from `offset` what the page cache holds, without waiting for the storage, and
/// notes a miss if it holds less (the caller reads the rest as usual); gives the bytes read.
pub(in crate::scan) fn read_cached(fd: impl AsFd, buf: &mut [u8], offset: u64) -> usize {
    static UNSUPPORTED: AtomicBool = AtomicBool::new(false);
    if UNSUPPORTED.load(Ordering::Relaxed) {
        return 0;
    }
    let flags = rustix::io::ReadWriteFlags::NOWAIT;
    match rustix::io::preadv2(fd, &mut [std::io::IoSliceMut::new(buf)], offset, flags) {
        Ok(n) => {
            if n < buf.len() {
                MISSED.with(|missed| missed.set(true));
            }
            n
        }
        Err(rustix::io::Errno::AGAIN) => {
            MISSED.with(|missed| missed.set(true));
            0
        }
        Err(rustix::io::Errno::OPNOTSUPP | rustix::io::Errno::INVAL | rustix::io::Errno::NOSYS) => {
            UNSUPPORTED.store(true, Ordering::Relaxed);
            0
        }
        Err(_) => 0,
    }
}

/// Whether the first, middle and last pages of a file of `len` bytes are in the page cache; notes
/// a miss if not.
pub(in crate::scan) fn looks_cached(fd: impl AsFd, len: u64) -> bool {
    let cached = len == 0 || [0, len / 2, len - 1].into_iter().all(|offset| cached(fd.as_fd(), offset));
    if !cached {
        MISSED.with(|missed| missed.set(true));
    }
    cached
}

/// Reads a large file ahead of the thread hashing it, window by window.
#[derive(Debug)]
pub(in crate::scan) struct Ahead<'a> {
    fd: std::os::fd::BorrowedFd<'a>,
    len: u64,
    /// Announced up to here.
    until: u64,
}

/// Bytes announced in one `WILLNEED`.
pub(in crate::scan) const WINDOW: u64 = 16 << 20;
/// How far ahead of the hashing position a large file is announced.
const LEAD: u64 = 128 << 20;

impl<'a> Ahead<'a> {
    pub(in crate::scan) fn new(fd: std::os::fd::BorrowedFd<'a>, len: u64) -> Ahead<'a> {
        Ahead { fd, len, until: 0 }
    }

    /// Hashing has reached `at`: announce up to `LEAD` bytes beyond it.
    pub(in crate::scan) fn reached(&mut self, at: u64) {
        let goal = (at + LEAD).min(self.len);
        while self.until < goal {
            let n = WINDOW.min(self.len - self.until);
            let _ = rustix::fs::fadvise(self.fd, self.until, NonZeroU64::new(n), Advice::WillNeed);
            self.until += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tree_is_called_cold_after_enough_misses_among_recent_files_not_after_one() {
        let miss = || MISSED.with(|missed| missed.set(true));
        RECENT.with(|recent| recent.set((0, 0)));
        // One miss now and then, as pages of a warm tree are reclaimed: never cold.
        for i in 0..10 * MISS_RUN {
            if i % (MISS_RUN / 4) == 0 {
                miss();
            }
            assert!(!cold_here(), "file {i}");
        }
        // Misses in a row: cold at the MISSES-th.
        for i in 1..=MISSES {
            miss();
            assert_eq!(cold_here(), i == MISSES, "miss {i}");
        }
    }
}
