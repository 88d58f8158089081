//! Hashing one open file into its BLAKE3 root and chunk CVs.
//!
//! Dense files of at least [`MAP_MIN`] bytes on disk-backed filesystems are mapped and hashed in
//! place: with the data in the page cache this skips the kernel's copy, which costs about as much
//! as hashing does with AVX-512. A file truncated while mapped is reported as
//! [`HashError::Faulted`] instead of killing the process with SIGBUS (see [`mapped`]). Smaller
//! files, and any file that cannot be mapped, are read with `pread` into a page-aligned buffer
//! per thread; sparse files and files on tmpfs are never mapped, and the holes of a sparse file
//! are hashed as zeros without being read (see [`layout`]: reading must not change the source). Files longer than one chunk are cut
//! into stripes hashed in parallel; each stripe yields the CVs of the chunks it covers, and the
//! CVs are merged by BLAKE3's tree rule into the root.

mod layout;
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
mod mapped;

use std::cell::RefCell;
use std::os::fd::{AsFd, BorrowedFd};

use blake3::hazmat::HasherExt;
use rayon::prelude::*;

use super::prefetch;
use crate::digest::{ByteRange, ChunkSize, Digest, root_from_chunks};
use layout::{DataMap, Layout, Run};

/// Bytes read per `pread`, and the unit of parallel work for files of small chunks.
const PIECE: u64 = 1 << 18;
const PAGE: usize = 4096;
/// The least bytes of mapped data per parallel task.
const STRIPE: u64 = 1 << 20;
/// Files at least this long are mapped rather than read. Measured on files of one size in page
/// cache: mapping loses below 1 MiB (mmap, munmap and a page-table entry per page cost more than
/// the copy they save), ties at 1 MiB and wins by 20-25% from 2 MiB up.
const MAP_MIN: u64 = 2 << 20;

/// A file's root hash and, when it has more than one chunk, its chunk CVs.
#[derive(Debug, Clone)]
pub(crate) struct FileHash {
    pub root: Digest,
    pub chunks: Box<[Digest]>,
}

/// Why a file could not be hashed.
#[derive(Debug)]
pub(crate) enum HashError {
    Io(std::io::Error),
    /// The file ended before its expected length.
    Shrank {
        expected: u64,
        at: u64,
    },
    /// Reading the mapped file raised SIGBUS: it shrank after it was mapped (`expected` is its
    /// length then), or the kernel could not read a page of it.
    Faulted {
        expected: u64,
    },
}

impl std::fmt::Display for HashError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HashError::Io(e) => write!(f, "read error: {e}"),
            HashError::Shrank { expected, at } => write!(f, "the file ended at byte {at}, before its {expected} bytes"),
            HashError::Faulted { expected } => {
                write!(
                    f,
                    "read error: SIGBUS reading the mapped file of {expected} bytes (it shrank, or a page could not be read)"
                )
            }
        }
    }
}

impl From<rustix::io::Errno> for HashError {
    fn from(errno: rustix::io::Errno) -> Self {
        HashError::Io(errno.into())
    }
}

thread_local! {
    static BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// Whole small files of a pair, for [`hash_pair`].
    static PAIR_BUFFERS: std::cell::Cell<(Vec<u8>, Vec<u8>)> = const { std::cell::Cell::new((Vec::new(), Vec::new())) };
}

/// Runs `f` on this thread's page-aligned buffer of `PIECE` bytes. `f` must not re-enter rayon
/// (another task on this thread would find the buffer borrowed).
fn with_buffer<R>(f: impl FnOnce(&mut [u8]) -> R) -> R {
    BUFFER.with(|cell| {
        let mut storage = cell.borrow_mut();
        if storage.is_empty() {
            storage.resize(PIECE as usize + PAGE, 0);
        }
        let start = storage.as_ptr().align_offset(PAGE);
        f(&mut storage[start..start + PIECE as usize])
    })
}

/// Fills `buf` from `offset`, or reports that the file ended first. The first read of a file takes
/// what the page cache holds without waiting, which tells a cold tree from a warm one for free.
fn read_exact_at(fd: impl AsFd, buf: &mut [u8], offset: u64, len: u64) -> Result<(), HashError> {
    let mut done = if offset == 0 && !buf.is_empty() { prefetch::read_cached(&fd, buf, 0) } else { 0 };
    while done < buf.len() {
        match rustix::io::pread(&fd, &mut buf[done..], offset + done as u64) {
            Ok(0) => return Err(HashError::Shrank { expected: len, at: offset + done as u64 }),
            Ok(n) => done += n,
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Hashes the first `len` bytes of `fd`, which the caller believes is the whole file.
pub(crate) fn hash_file(fd: impl AsFd + Sync, len: u64, chunk: ChunkSize) -> Result<FileHash, HashError> {
    // Below MAP_MIN a file is read whole with `pread`, which never allocates a hole; the layout
    // costs two system calls, only worth paying where it can save reading megabytes of holes.
    let layout = if len >= MAP_MIN { Layout::of(fd.as_fd(), len) } else { Layout { sparse: false, in_memory: true } };
    #[cfg(target_os = "linux")]
    if layout.mappable()
        && let Some(mapping) = mapped::Mapping::new(fd.as_fd(), len)
    {
        if !prefetch::looks_cached(fd.as_fd(), len) {
            return hash_mapped_ahead(fd.as_fd(), &mapping, chunk);
        }
        return hash_mapped(&mapping, chunk);
    }
    hash_read(fd, len, chunk, layout.sparse)
}

/// Hashes two open files of `len` bytes each (a source file and its copy), hashing only once
/// every chunk whose bytes are the same in both: comparing costs a fraction of hashing, and
/// each side's digests still come from its own bytes.
pub(crate) fn hash_pair(
    a: impl AsFd + Sync,
    b: impl AsFd + Sync,
    len: u64,
    chunk: ChunkSize,
) -> [Result<FileHash, HashError>; 2] {
    #[cfg(target_os = "linux")]
    if len >= MAP_MIN
        && Layout::of(a.as_fd(), len).mappable()
        && Layout::of(b.as_fd(), len).mappable()
        && let Some(map_a) = mapped::Mapping::new(a.as_fd(), len)
        && let Some(map_b) = mapped::Mapping::new(b.as_fd(), len)
    {
        // Both probed, so that both are read ahead when either is cold.
        let cached = [prefetch::looks_cached(a.as_fd(), len), prefetch::looks_cached(b.as_fd(), len)];
        let [hash_a, hash_b] = if cached == [true, true] {
            hash_bytes_pair(map_a.bytes(), map_b.bytes(), chunk)
        } else {
            hash_bytes_pair_ahead([a.as_fd(), b.as_fd()], [map_a.bytes(), map_b.bytes()], chunk)
        };
        let settle = |mapping: &mapped::Mapping, hash| {
            if mapping.faulted() { Err(HashError::Faulted { expected: len }) } else { Ok(hash) }
        };
        return [settle(&map_a, hash_a), settle(&map_b, hash_b)];
    }
    if len >= MAP_MIN {
        return [hash_file(a, len, chunk), hash_file(b, len, chunk)];
    }
    // Taken out of the thread's slot, not borrowed: hashing may run another rayon task here.
    let (mut buf_a, mut buf_b) = PAIR_BUFFERS.with(|cell| cell.take());
    buf_a.resize(len as usize, 0);
    buf_b.resize(len as usize, 0);
    let hashes = match (read_exact_at(&a, &mut buf_a, 0, len), read_exact_at(&b, &mut buf_b, 0, len)) {
        (Ok(()), Ok(())) => hash_bytes_pair(&buf_a, &buf_b, chunk).map(Ok),
        (read_a, read_b) => [read_a.map(|()| hash_bytes(&buf_a, chunk)), read_b.map(|()| hash_bytes(&buf_b, chunk))],
    };
    PAIR_BUFFERS.with(|cell| cell.replace((buf_a, buf_b)));
    hashes
}

/// [`hash_bytes`] of two equally long byte strings, each equal chunk hashed once.
fn hash_bytes_pair(a: &[u8], b: &[u8], chunk: ChunkSize) -> [FileHash; 2] {
    debug_assert_eq!(a.len(), b.len());
    if a.len() as u64 <= chunk.bytes() {
        let hash_a = hash_bytes(a, chunk);
        let hash_b = if a == b { hash_a.clone() } else { hash_bytes(b, chunk) };
        return [hash_a, hash_b];
    }
    let (cvs_a, cvs_b) = chunk_cvs_pair_in(a, b, chunk, 0);
    pair_from_chunks(cvs_a, cvs_b)
}

/// The CVs of the chunks of `a` and of `b`, equally long byte strings starting at byte `base`
/// (a chunk boundary) of their files; each equal chunk hashed once.
fn chunk_cvs_pair_in(a: &[u8], b: &[u8], chunk: ChunkSize, base: usize) -> (Vec<Digest>, Vec<Digest>) {
    let size = chunk.bytes() as usize;
    let per_task = (STRIPE as usize / size).max(1);
    a.par_chunks(size)
        .zip(b.par_chunks(size))
        .with_min_len(per_task)
        .enumerate()
        .map(|(i, (x, y))| {
            let offset = (base + i * size) as u64;
            let cv = chunk_cv(x, offset);
            (cv, if x == y { cv } else { chunk_cv(y, offset) })
        })
        .unzip()
}

fn pair_from_chunks(cvs_a: Vec<Digest>, cvs_b: Vec<Digest>) -> [FileHash; 2] {
    let root_a = root_from_chunks(&cvs_a);
    let root_b = if cvs_a == cvs_b { root_a } else { root_from_chunks(&cvs_b) };
    [FileHash { root: root_a, chunks: cvs_a.into() }, FileHash { root: root_b, chunks: cvs_b.into() }]
}

/// Hashes a mapped file in place, unless a read of it faulted (see [`mapped::Mapping::faulted`]).
#[cfg(target_os = "linux")]
fn hash_mapped(mapping: &mapped::Mapping, chunk: ChunkSize) -> Result<FileHash, HashError> {
    let hash = hash_bytes(mapping.bytes(), chunk);
    if mapping.faulted() {
        return Err(HashError::Faulted { expected: mapping.bytes().len() as u64 });
    }
    Ok(hash)
}

/// Hashes bytes held in memory into what `hash_file` gives for a file holding them.
fn hash_bytes(data: &[u8], chunk: ChunkSize) -> FileHash {
    if data.len() as u64 <= chunk.bytes() {
        let mut hasher = blake3::Hasher::new();
        hasher.update(data);
        return single_chunk(&hasher, data.len() as u64 == chunk.bytes());
    }
    let chunks: Box<[Digest]> = chunk_cvs_in(data, chunk, 0).into();
    FileHash { root: root_from_chunks(&chunks), chunks }
}

/// The CVs of the chunks of `data`, which starts at byte `base` (a chunk boundary) of its file.
fn chunk_cvs_in(data: &[u8], chunk: ChunkSize, base: usize) -> Vec<Digest> {
    let size = chunk.bytes() as usize;
    let per_task = (STRIPE as usize / size).max(1);
    data.par_chunks(size)
        .with_min_len(per_task)
        .enumerate()
        .map(|(i, c)| chunk_cv(c, (base + i * size) as u64))
        .collect()
}

/// Windows of a file of `len` bytes hashed one after the other when it is read from the storage:
/// a whole number of chunks each, so the chunks of one window are hashed in parallel while the
/// kernel reads the next ones ahead ([`prefetch::Ahead`]).
#[cfg(target_os = "linux")]
fn windows(len: usize, chunk: ChunkSize) -> impl Iterator<Item = std::ops::Range<usize>> {
    let window = (prefetch::WINDOW as usize).next_multiple_of(chunk.bytes() as usize);
    (0..len).step_by(window).map(move |start| start..len.min(start + window))
}

/// [`hash_mapped`] for a file not in the page cache: window by window, in order, with the windows
/// ahead announced to the kernel, so the storage streams instead of serving scattered faults.
#[cfg(target_os = "linux")]
fn hash_mapped_ahead(fd: BorrowedFd<'_>, mapping: &mapped::Mapping, chunk: ChunkSize) -> Result<FileHash, HashError> {
    let data = mapping.bytes();
    let mut ahead = prefetch::Ahead::new(fd, data.len() as u64);
    if data.len() as u64 <= chunk.bytes() {
        ahead.reached(0);
        return hash_mapped(mapping, chunk);
    }
    let mut chunks = Vec::with_capacity(data.len().div_ceil(chunk.bytes() as usize));
    for range in windows(data.len(), chunk) {
        ahead.reached(range.start as u64);
        chunks.extend(chunk_cvs_in(&data[range.clone()], chunk, range.start));
    }
    if mapping.faulted() {
        return Err(HashError::Faulted { expected: data.len() as u64 });
    }
    Ok(FileHash { root: root_from_chunks(&chunks), chunks: chunks.into() })
}

/// [`hash_bytes_pair`] of two mapped files, one of them at least not in the page cache, window by
/// window as [`hash_mapped_ahead`] does.
#[cfg(target_os = "linux")]
fn hash_bytes_pair_ahead(fds: [BorrowedFd<'_>; 2], data: [&[u8]; 2], chunk: ChunkSize) -> [FileHash; 2] {
    let len = data[0].len();
    let mut ahead = fds.map(|fd| prefetch::Ahead::new(fd, len as u64));
    if len as u64 <= chunk.bytes() {
        ahead.iter_mut().for_each(|ahead| ahead.reached(0));
        return hash_bytes_pair(data[0], data[1], chunk);
    }
    let (mut cvs_a, mut cvs_b) = (Vec::new(), Vec::new());
    for range in windows(len, chunk) {
        ahead.iter_mut().for_each(|ahead| ahead.reached(range.start as u64));
        let (a, b) = chunk_cvs_pair_in(&data[0][range.clone()], &data[1][range.clone()], chunk, range.start);
        cvs_a.extend(a);
        cvs_b.extend(b);
    }
    pair_from_chunks(cvs_a, cvs_b)
}

/// A file of at most one chunk: its root, and for a file of exactly one full chunk also that
/// chunk's CV, so it compares chunk by chunk with a longer file whose first chunk is the same.
fn single_chunk(hasher: &blake3::Hasher, full: bool) -> FileHash {
    let chunks = if full { Box::new([Digest(hasher.finalize_non_root())]) as Box<[Digest]> } else { Box::default() };
    FileHash { root: hasher.finalize().into(), chunks }
}

/// The CV of the chunk `data`, which starts at byte `offset` of its file.
fn chunk_cv(data: &[u8], offset: u64) -> Digest {
    let mut hasher = blake3::Hasher::new();
    hasher.set_input_offset(offset);
    hasher.update(data);
    Digest(hasher.finalize_non_root())
}

/// Hashes the first `len` bytes of `fd` by reading them; only the data segments when `sparse`.
fn hash_read(fd: impl AsFd + Sync, len: u64, chunk: ChunkSize, sparse: bool) -> Result<FileHash, HashError> {
    if len <= chunk.bytes() {
        let mut hasher = blake3::Hasher::new();
        hash_range(&fd, ByteRange { offset: 0, length: len }, len, sparse, |data| {
            hasher.update(data);
        })?;
        return Ok(single_chunk(&hasher, len == chunk.bytes()));
    }
    let stripe = chunk.bytes().max(PIECE);
    let stripes = len.div_ceil(stripe);
    let per_stripe: Vec<Vec<Digest>> = (0..stripes)
        .into_par_iter()
        .map(|i| {
            let range = ByteRange { offset: i * stripe, length: stripe.min(len - i * stripe) };
            chunk_cvs(&fd, range, len, chunk, sparse)
        })
        .collect::<Result<_, _>>()?;
    let chunks: Box<[Digest]> = per_stripe.into_iter().flatten().collect();
    Ok(FileHash { root: root_from_chunks(&chunks), chunks })
}

/// The CVs of the chunks inside `range`, which starts on a chunk boundary.
fn chunk_cvs(
    fd: impl AsFd,
    range: ByteRange,
    len: u64,
    chunk: ChunkSize,
    sparse: bool,
) -> Result<Vec<Digest>, HashError> {
    let size = chunk.bytes();
    let mut cvs = Vec::with_capacity(range.length.div_ceil(size) as usize);
    let mut current: Option<blake3::Hasher> = None;
    let mut position = range.offset;
    hash_range(fd, range, len, sparse, |mut data| {
        while !data.is_empty() {
            let chunk_end = (position / size + 1) * size;
            let take = data.len().min((chunk_end - position) as usize);
            let hasher = current.get_or_insert_with(|| {
                let mut hasher = blake3::Hasher::new();
                hasher.set_input_offset(position);
                hasher
            });
            hasher.update(&data[..take]);
            position += take as u64;
            data = &data[take..];
            if position == chunk_end {
                cvs.extend(current.take().map(|h| Digest(h.finalize_non_root())));
            }
        }
    })?;
    cvs.extend(current.take().map(|h| Digest(h.finalize_non_root())));
    Ok(cvs)
}

/// Reads `range` piece by piece into the thread's buffer and hands each piece to `consume`.
/// When `sparse`, only data segments are read and holes are zeros in the buffer.
fn hash_range(
    fd: impl AsFd,
    range: ByteRange,
    len: u64,
    sparse: bool,
    mut consume: impl FnMut(&[u8]),
) -> Result<(), HashError> {
    let mut map = sparse.then(|| DataMap::new(fd.as_fd()));
    with_buffer(|buf| {
        let mut offset = range.offset;
        while offset < range.end() {
            let n = PIECE.min(range.end() - offset);
            let piece = &mut buf[..n as usize];
            match map.as_mut() {
                Some(map) => read_data_at(&fd, map, piece, offset, len)?,
                None => read_exact_at(&fd, piece, offset, len)?,
            }
            consume(piece);
            offset += n;
        }
        Ok(())
    })
}

/// Fills `buf` from `offset` as [`read_exact_at`] does, reading only the data segments and
/// zeroing the holes.
fn read_data_at(fd: impl AsFd, map: &mut DataMap<'_>, buf: &mut [u8], offset: u64, len: u64) -> Result<(), HashError> {
    let end = offset + buf.len() as u64;
    let mut at = offset;
    while at < end {
        let (from, to) = ((at - offset) as usize, |n: u64| (at - offset + n) as usize);
        match map.next(at, end) {
            Run::Hole(n) => {
                buf[from..to(n)].fill(0);
                at += n;
            }
            Run::Data(n) => {
                read_exact_at(&fd, &mut buf[from..to(n)], at, len)?;
                at += n;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn pattern(len: usize) -> Vec<u8> {
        (0..len as u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect()
    }

    fn file_with(data: &[u8]) -> std::fs::File {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(data).unwrap();
        file
    }

    #[test]
    fn file_roots_equal_blake3_for_sizes_around_chunk_multiples() {
        let data = pattern((7 << 20) + 3000);
        for chunk in [1024u64, 4096, 1 << 20, 2 << 20] {
            let c = chunk as usize;
            for len in [0, 1, 1023, 1024, 1025, c - 1, c, c + 1, 2 * c - 1, 2 * c + 1, 3 * c + 7, (7 << 20) + 3000] {
                let file = file_with(&data[..len]);
                let hash = hash_file(&file, len as u64, ChunkSize::new(chunk).unwrap()).unwrap();
                assert_eq!(hash.root, blake3::hash(&data[..len]).into(), "chunk {chunk} len {len}");
                let expected_chunks = if len as u64 >= chunk { len.div_ceil(c) } else { 0 };
                assert_eq!(hash.chunks.len(), expected_chunks, "chunk {chunk} len {len}");
            }
        }
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn reading_and_mapping_give_the_same_hash_around_the_threshold_and_chunk_multiples() {
        let data = pattern((7 << 20) + 5000);
        let m = MAP_MIN as usize;
        for chunk in [1024u64, 64 << 10, 1 << 20, 2 << 20] {
            let c = chunk as usize;
            for len in [1, 4095, 4097, m - 1, m, m + 1, c - 1, c, c + 1, 2 * c + 1, 3 * c - 1, (7 << 20) + 5000] {
                let file = file_with(&data[..len]);
                let chunk = ChunkSize::new(chunk).unwrap();
                let read = hash_read(&file, len as u64, chunk, false).unwrap();
                let mapping = mapped::Mapping::new(std::os::fd::AsFd::as_fd(&file), len as u64).unwrap();
                let mapped = hash_mapped(&mapping, chunk).unwrap();
                assert_eq!(read.root, blake3::hash(&data[..len]).into(), "chunk {c} len {len}");
                assert_eq!(mapped.root, read.root, "chunk {c} len {len}");
                assert_eq!(mapped.chunks, read.chunks, "chunk {c} len {len}");
            }
        }
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn hashing_window_by_window_with_read_ahead_gives_the_hashes_of_hashing_at_once() {
        use std::os::fd::AsFd;
        let window = prefetch::WINDOW as usize;
        let data = pattern(2 * window + (5 << 20) + 333);
        let mut other = data.clone();
        other[window + 17] ^= 1;
        for chunk in [1024u64, 1 << 20, 32 << 20, 64 << 20] {
            let chunk = ChunkSize::new(chunk).unwrap();
            for len in [MAP_MIN as usize, window - 1, window, window + 1, data.len()] {
                let (file, copy) = (file_with(&data[..len]), file_with(&other[..len]));
                let (map, map_copy) = (
                    mapped::Mapping::new(file.as_fd(), len as u64).unwrap(),
                    mapped::Mapping::new(copy.as_fd(), len as u64).unwrap(),
                );
                let at_once = hash_mapped(&map, chunk).unwrap();
                let ahead = hash_mapped_ahead(file.as_fd(), &map, chunk).unwrap();
                assert_eq!(ahead.root, blake3::hash(&data[..len]).into(), "{chunk:?} len {len}");
                assert_eq!((ahead.root, &ahead.chunks), (at_once.root, &at_once.chunks), "{chunk:?} len {len}");
                let pair = hash_bytes_pair(map.bytes(), map_copy.bytes(), chunk);
                let pair_ahead =
                    hash_bytes_pair_ahead([file.as_fd(), copy.as_fd()], [map.bytes(), map_copy.bytes()], chunk);
                for (x, y) in pair.iter().zip(&pair_ahead) {
                    assert_eq!((x.root, &x.chunks), (y.root, &y.chunks), "{chunk:?} len {len}");
                }
                assert_eq!(pair_ahead[1].root, blake3::hash(&other[..len]).into(), "{chunk:?} len {len}");
            }
        }
    }

    /// A sparse file and its dense bytes: data segments that start and end off every chunk
    /// and page boundary, a hole at the start of a chunk, and a hole to the end of the file.
    fn sparse_file(len: u64, data: &[(u64, usize)]) -> (std::fs::File, Vec<u8>) {
        use std::os::unix::fs::FileExt;
        let file = tempfile::tempfile().unwrap();
        file.set_len(len).unwrap();
        let mut dense = vec![0u8; len as usize];
        for (i, &(offset, n)) in data.iter().enumerate() {
            let bytes: Vec<u8> = pattern(n + i).split_off(i);
            file.write_all_at(&bytes, offset).unwrap();
            dense[offset as usize..offset as usize + n].copy_from_slice(&bytes);
        }
        (file, dense)
    }

    #[test]
    fn sparse_files_hash_as_their_dense_bytes_without_reading_the_holes() {
        use std::os::unix::fs::MetadataExt;
        let len = (9 << 20) + 777;
        let data = [(0, 1000), ((1 << 20) + (1 << 19) + 123, (1 << 19) + 5000), ((4 << 20) + 1, 70_001), (len - 3, 3)];
        let (file, dense) = sparse_file(len, &data);
        let blocks = file.metadata().unwrap().blocks();
        assert!(blocks * 512 < len / 2, "the test file is not sparse here ({blocks} blocks)");
        assert!(Layout::of(std::os::fd::AsFd::as_fd(&file), len).sparse);
        for chunk in [1024u64, 4096, 64 << 10, 1 << 20, 2 << 20, 16 << 20] {
            let chunk = ChunkSize::new(chunk).unwrap();
            let expected = hash_bytes(&dense, chunk);
            assert_eq!(expected.root, blake3::hash(&dense).into());
            for hash in [hash_file(&file, len, chunk).unwrap(), hash_read(&file, len, chunk, true).unwrap()] {
                assert_eq!(hash.root, expected.root, "chunk {chunk:?}");
                assert_eq!(hash.chunks, expected.chunks, "chunk {chunk:?}");
            }
            let (copy, _) = sparse_file(len, &data);
            for hash in hash_pair(&file, &copy, len, chunk) {
                assert_eq!(hash.unwrap().chunks, expected.chunks, "chunk {chunk:?}");
            }
        }
        assert_eq!(file.metadata().unwrap().blocks(), blocks, "reading allocated blocks");
    }

    #[test]
    fn a_file_shorter_than_expected_is_reported_not_hashed() {
        let file = file_with(&[7u8; 5000]);
        let err = hash_file(&file, 9000, ChunkSize::new(1024).unwrap()).unwrap_err();
        assert!(matches!(err, HashError::Shrank { expected: 9000, .. }), "{err:?}");
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn a_file_truncated_after_it_was_mapped_is_reported_not_hashed() {
        let file = file_with(&pattern(4 << 20));
        let mapping = mapped::Mapping::new(std::os::fd::AsFd::as_fd(&file), 4 << 20).unwrap();
        file.set_len(1000).unwrap();
        // Without the SIGBUS guard the process dies here.
        let err = hash_mapped(&mapping, ChunkSize::DEFAULT).unwrap_err();
        assert!(matches!(err, HashError::Faulted { expected: 0x40_0000 }), "{err:?}");
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn a_file_truncated_while_being_hashed_is_reported_and_the_process_survives() {
        const LEN: u64 = 64 << 20;
        let file = tempfile::tempfile().unwrap();
        file.set_len(LEN).unwrap();
        let zeros = Digest::from(blake3::hash(&vec![0; LEN as usize]));
        let stop = std::sync::atomic::AtomicBool::new(false);
        let (mut truncated, mut whole) = (0, 0);
        std::thread::scope(|s| {
            s.spawn(|| {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    file.set_len(4096).unwrap();
                    std::thread::sleep(std::time::Duration::from_millis(1));
                    file.set_len(LEN).unwrap();
                    std::thread::sleep(std::time::Duration::from_millis(4));
                }
            });
            let started = std::time::Instant::now();
            while truncated < 5 && started.elapsed().as_secs() < 20 {
                // Mapped whatever its layout (a sparse file is read, not mapped, by hash_file):
                // this is about surviving SIGBUS.
                let mapping = mapped::Mapping::new(std::os::fd::AsFd::as_fd(&file), LEN).unwrap();
                match hash_mapped(&mapping, ChunkSize::DEFAULT) {
                    // The file holds only zeros whatever its length, so a hash that saw no
                    // truncation is the hash of LEN zeros.
                    Ok(hash) => {
                        assert_eq!(hash.root, zeros);
                        whole += 1;
                    }
                    Err(HashError::Faulted { expected: LEN }) => truncated += 1,
                    Err(e) => panic!("{e:?}"),
                }
            }
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        });
        assert!(truncated >= 5, "only {truncated} of {} hashes saw the file truncated", truncated + whole);
    }
}
