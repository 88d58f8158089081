//! Digests, chunk sizes and byte ranges, and BLAKE3's tree rule over chunk chaining values.
//!
//! A file is cut into aligned chunks of a power-of-two size. Each chunk is a complete subtree of
//! BLAKE3's own tree, so merging the chunk chaining values (CVs) with BLAKE3's rule gives exactly
//! the standard hash of the file, and any aligned power-of-two group of chunks can be merged into
//! the CV of a coarser chunk. See docs/design.md for the edge cases.

use std::fmt;

use blake3::hazmat::{ChainingValue, Mode, merge_subtrees_non_root, merge_subtrees_root};

/// A 32-byte BLAKE3 output: a file root, a chunk CV, a symlink or directory node hash.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    pub fn to_hex(self) -> String {
        blake3::Hash::from_bytes(self.0).to_hex().to_string()
    }

    pub fn from_hex(hex: &str) -> Option<Self> {
        blake3::Hash::from_hex(hex).ok().map(|h| Self(*h.as_bytes()))
    }
}

impl From<blake3::Hash> for Digest {
    fn from(hash: blake3::Hash) -> Self {
        Self(*hash.as_bytes())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex()[..16])
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// The chunk size of a scan: a power of two of at least BLAKE3's 1 KiB chunk, at most 1 GiB.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChunkSize(u64);

impl ChunkSize {
    pub const DEFAULT: ChunkSize = ChunkSize(1 << 20);
    pub const MIN: u64 = 1024;
    pub const MAX: u64 = 1 << 30;

    pub fn new(bytes: u64) -> Result<Self, String> {
        if !bytes.is_power_of_two() || !(Self::MIN..=Self::MAX).contains(&bytes) {
            return Err(format!("chunk size {bytes} must be a power of two between {} and {}", Self::MIN, Self::MAX));
        }
        Ok(Self(bytes))
    }

    pub fn bytes(self) -> u64 {
        self.0
    }

    /// How many chunks a file of `len` bytes has (an empty file has one, empty, chunk).
    pub fn chunks_in(self, len: u64) -> u64 {
        len.div_ceil(self.0).max(1)
    }

    /// The byte range of chunk `index` in a file of `len` bytes.
    pub fn chunk_range(self, index: u64, len: u64) -> ByteRange {
        let offset = index * self.0;
        ByteRange { offset, length: self.0.min(len.saturating_sub(offset)) }
    }
}

impl fmt::Display for ChunkSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A half-open byte range `[offset, offset + length)` inside a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ByteRange {
    pub offset: u64,
    pub length: u64,
}

impl ByteRange {
    pub fn end(self) -> u64 {
        self.offset + self.length
    }
}

/// Appends `range` to sorted, merged `ranges`, joining it to the last one when they touch.
pub fn push_merged(ranges: &mut Vec<ByteRange>, range: ByteRange) {
    if range.length == 0 {
        return;
    }
    match ranges.last_mut() {
        Some(last) if last.end() >= range.offset => {
            last.length = last.length.max(range.end() - last.offset);
        }
        _ => ranges.push(range),
    }
}

/// The root hash of a file from its chunk CVs (at least two), by BLAKE3's tree rule: the left
/// subtree holds the largest power of two of chunks strictly less than the total.
pub fn root_from_chunks(cvs: &[Digest]) -> Digest {
    assert!(cvs.len() >= 2, "a single chunk is finalized as a root, not merged");
    let split = left_len(cvs.len());
    let left = subtree_cv(&cvs[..split]);
    let right = subtree_cv(&cvs[split..]);
    merge_subtrees_root(&left, &right, Mode::Hash).into()
}

/// The non-root CV of a run of chunk CVs that forms one subtree.
fn subtree_cv(cvs: &[Digest]) -> ChainingValue {
    if cvs.len() == 1 {
        return cvs[0].0;
    }
    let split = left_len(cvs.len());
    merge_subtrees_non_root(&subtree_cv(&cvs[..split]), &subtree_cv(&cvs[split..]), Mode::Hash)
}

fn left_len(n: usize) -> usize {
    debug_assert!(n >= 2);
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

/// Chunk CVs of a coarser chunk size, computed from finer ones: each aligned group of `factor`
/// (a power of two) fine chunks is one subtree. The last group may be short; it is still the
/// right-edge subtree BLAKE3 would build over those bytes.
pub fn coarsen(cvs: &[Digest], factor: usize) -> Vec<Digest> {
    debug_assert!(factor.is_power_of_two());
    if factor == 1 {
        return cvs.to_vec();
    }
    cvs.chunks(factor).map(|group| Digest(subtree_cv(group))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use blake3::hazmat::HasherExt;

    fn chunk_cvs(data: &[u8], chunk: usize) -> Vec<Digest> {
        data.chunks(chunk)
            .enumerate()
            .map(|(i, piece)| {
                let mut hasher = blake3::Hasher::new();
                hasher.set_input_offset((i * chunk) as u64);
                hasher.update(piece);
                Digest(hasher.finalize_non_root())
            })
            .collect()
    }

    #[test]
    fn merged_chunks_equal_blake3_hash() {
        let data: Vec<u8> = (0..60_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        for chunk in [1024usize, 2048, 4096, 8192] {
            for len in [chunk + 1, 2 * chunk - 1, 2 * chunk, 2 * chunk + 1, 7 * chunk + 5, 39_999] {
                let cvs = chunk_cvs(&data[..len], chunk);
                assert_eq!(root_from_chunks(&cvs), blake3::hash(&data[..len]).into(), "{chunk} {len}");
            }
        }
    }

    #[test]
    fn coarsened_cvs_equal_cvs_hashed_at_the_coarse_size() {
        let data: Vec<u8> = (0..50_000u32).map(|i| (i ^ (i >> 3)) as u8).collect();
        for len in [8193usize, 16_384, 20_000, 50_000] {
            let fine = chunk_cvs(&data[..len], 1024);
            for factor in [2usize, 4, 8] {
                assert_eq!(coarsen(&fine, factor), chunk_cvs(&data[..len], 1024 * factor), "{len} {factor}");
            }
        }
    }

    #[test]
    fn chunk_size_is_validated() {
        assert!(ChunkSize::new(1000).is_err());
        assert!(ChunkSize::new(512).is_err());
        assert!(ChunkSize::new(1 << 31).is_err());
        assert_eq!(ChunkSize::new(4096).unwrap().chunks_in(0), 1);
        assert_eq!(ChunkSize::new(4096).unwrap().chunks_in(8193), 3);
    }

    #[test]
    fn ranges_merge_when_touching() {
        let mut ranges = Vec::new();
        push_merged(&mut ranges, ByteRange { offset: 0, length: 10 });
        push_merged(&mut ranges, ByteRange { offset: 10, length: 5 });
        push_merged(&mut ranges, ByteRange { offset: 20, length: 5 });
        assert_eq!(ranges, [ByteRange { offset: 0, length: 15 }, ByteRange { offset: 20, length: 5 }]);
    }
}
