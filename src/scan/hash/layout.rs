//! Where a file's bytes lie, and so how to read them without changing anything.
//!
//! Reading must leave the source as it was. A read fault on a mapped hole of a tmpfs file
//! allocates a page (a 256 MiB sparse file holding 4 bytes took 256 MiB of RAM, and a full
//! tmpfs answered with SIGBUS), while `pread` of a hole returns zeros and allocates nothing. So a
//! file is mapped only when it is dense and not held in memory by its filesystem; a sparse file
//! is read data segment by data segment (`SEEK_DATA`/`SEEK_HOLE`), its holes hashed as the zeros
//! they read as, without reading them.

use std::os::fd::BorrowedFd;

use rustix::fs::SeekFrom;

/// Filesystems whose files live in memory, where a read fault on a hole allocates (statfs magic).
const IN_MEMORY: [u32; 3] = [
    0x0102_1994, // tmpfs and shmem (memfd, /dev/shm)
    0x8584_58f6, // ramfs
    0x9584_58f6, // hugetlbfs
];

/// How one file is to be read, decided from its `fstat` and `fstatfs` before reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Layout {
    /// Fewer blocks are allocated than the file is long: it has holes (or is compressed or
    /// inline, which the data-segment reader handles just as well).
    pub sparse: bool,
    /// On a filesystem that keeps files in memory.
    pub in_memory: bool,
}

impl Layout {
    /// The layout of the open file `fd`, believed `len` bytes long. When the file cannot be
    /// asked, it is taken as sparse and in memory: the careful reader works for every file.
    pub(crate) fn of(fd: BorrowedFd<'_>, len: u64) -> Layout {
        let sparse = rustix::fs::fstat(fd).map_or(true, |stat| (stat.st_blocks as u64).saturating_mul(512) < len);
        let in_memory = rustix::fs::fstatfs(fd).map_or(true, |fs| IN_MEMORY.contains(&(fs.f_type as u32)));
        Layout { sparse, in_memory }
    }

    /// Whether mapping the file cannot allocate anything: it is dense and on a disk-backed
    /// filesystem.
    pub(crate) fn mappable(self) -> bool {
        !self.sparse && !self.in_memory
    }
}

/// A cursor over a file's data segments, for reading a range of it in order.
#[derive(Debug)]
pub(crate) struct DataMap<'a> {
    fd: BorrowedFd<'a>,
    /// The last segment found: bytes before `data` (from where it was asked) are a hole,
    /// `data..data_end` are data.
    data: u64,
    data_end: u64,
}

/// A run of bytes of one kind, as found by [`DataMap::next`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Run {
    /// Read these bytes.
    Data(u64),
    /// These bytes are a hole: zeros, not to be read.
    Hole(u64),
}

impl<'a> DataMap<'a> {
    pub(crate) fn new(fd: BorrowedFd<'a>) -> DataMap<'a> {
        DataMap { fd, data: 0, data_end: 0 }
    }

    /// The kind of the bytes from `at` and how far they go (at least one byte, at most to
    /// `end`; `at < end`). Asked for increasing offsets.
    pub(crate) fn next(&mut self, at: u64, end: u64) -> Run {
        if at >= self.data_end {
            self.data = match rustix::fs::seek(self.fd, SeekFrom::Data(at)) {
                // Never before `at`, whatever a filesystem answers.
                Ok(data) => data.max(at),
                // No data from `at` to the end of the file (which may have shrunk: the caller's
                // check of the file's size and mtime after the read reports that).
                Err(rustix::io::Errno::NXIO) => u64::MAX,
                // A filesystem that cannot say: read everything.
                Err(_) => at,
            };
            self.data_end = if self.data == u64::MAX {
                u64::MAX
            } else {
                match rustix::fs::seek(self.fd, SeekFrom::Hole(self.data)) {
                    Ok(hole) if hole > self.data => hole,
                    _ => u64::MAX,
                }
            };
        }
        if at < self.data { Run::Hole(self.data.min(end) - at) } else { Run::Data(self.data_end.min(end) - at) }
    }
}
