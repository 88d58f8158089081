//! Hashing one open file into its BLAKE3 root and chunk CVs.
//!
//! Reads are positioned (`pread`) into a page-aligned buffer per thread: measured faster than
//! mmap here, and a file truncated under us gives a short read instead of a SIGBUS. Files longer
//! than one chunk are cut into stripes hashed in parallel; each stripe yields the CVs of the
//! chunks it covers, and the CVs are merged by BLAKE3's tree rule into the root.

use std::cell::RefCell;
use std::os::fd::AsFd;

use blake3::hazmat::HasherExt;
use rayon::prelude::*;

use crate::digest::{ByteRange, ChunkSize, Digest, root_from_chunks};

/// Bytes read per `pread`, and the unit of parallel work for files of small chunks.
const PIECE: u64 = 1 << 20;
const PAGE: usize = 4096;

/// A file's root hash and, when it has more than one chunk, its chunk CVs.
#[derive(Debug)]
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
}

impl From<rustix::io::Errno> for HashError {
    fn from(errno: rustix::io::Errno) -> Self {
        HashError::Io(errno.into())
    }
}

thread_local! {
    static BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
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

/// Fills `buf` from `offset`, or reports that the file ended first.
fn read_exact_at(fd: impl AsFd, buf: &mut [u8], offset: u64, len: u64) -> Result<(), HashError> {
    let mut done = 0;
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
    if len <= chunk.bytes() {
        let mut hasher = blake3::Hasher::new();
        hash_range(&fd, ByteRange { offset: 0, length: len }, len, |data| {
            hasher.update(data);
        })?;
        return Ok(FileHash { root: hasher.finalize().into(), chunks: Box::default() });
    }
    let stripe = chunk.bytes().max(PIECE);
    let stripes = len.div_ceil(stripe);
    let per_stripe: Vec<Vec<Digest>> = (0..stripes)
        .into_par_iter()
        .map(|i| {
            let range = ByteRange { offset: i * stripe, length: stripe.min(len - i * stripe) };
            chunk_cvs(&fd, range, len, chunk)
        })
        .collect::<Result<_, _>>()?;
    let chunks: Box<[Digest]> = per_stripe.into_iter().flatten().collect();
    Ok(FileHash { root: root_from_chunks(&chunks), chunks })
}

/// The CVs of the chunks inside `range`, which starts on a chunk boundary.
fn chunk_cvs(fd: impl AsFd, range: ByteRange, len: u64, chunk: ChunkSize) -> Result<Vec<Digest>, HashError> {
    let size = chunk.bytes();
    let mut cvs = Vec::with_capacity(range.length.div_ceil(size) as usize);
    let mut current: Option<blake3::Hasher> = None;
    let mut position = range.offset;
    hash_range(fd, range, len, |mut data| {
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
fn hash_range(fd: impl AsFd, range: ByteRange, len: u64, mut consume: impl FnMut(&[u8])) -> Result<(), HashError> {
    with_buffer(|buf| {
        let mut offset = range.offset;
        while offset < range.end() {
            let n = PIECE.min(range.end() - offset);
            let piece = &mut buf[..n as usize];
            read_exact_at(&fd, piece, offset, len)?;
            consume(piece);
            offset += n;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn file_roots_equal_blake3_for_sizes_around_chunk_multiples() {
        let data: Vec<u8> = (0..(5u32 << 20) + 3000).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        for chunk in [1024u64, 4096, 1 << 20, 2 << 20] {
            let c = chunk as usize;
            for len in [0, 1, 1023, 1024, 1025, c - 1, c, c + 1, 2 * c - 1, 2 * c + 1, 3 * c + 7, (5 << 20) + 3000] {
                let mut file = tempfile::tempfile().unwrap();
                file.write_all(&data[..len]).unwrap();
                let hash = hash_file(&file, len as u64, ChunkSize::new(chunk).unwrap()).unwrap();
                assert_eq!(hash.root, blake3::hash(&data[..len]).into(), "chunk {chunk} len {len}");
                let expected_chunks = if len as u64 > chunk { len.div_ceil(c) } else { 0 };
                assert_eq!(hash.chunks.len(), expected_chunks, "chunk {chunk} len {len}");
            }
        }
    }

    #[test]
    fn a_file_shorter_than_expected_is_reported_not_hashed() {
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&[7u8; 5000]).unwrap();
        let err = hash_file(&file, 9000, ChunkSize::new(1024).unwrap()).unwrap_err();
        assert!(matches!(err, HashError::Shrank { expected: 9000, .. }), "{err:?}");
    }
}
