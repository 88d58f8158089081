//! Writing source bytes so that holes stay holes, as `rsync -S` does: an all-zero block is
//! never written. In a new file it is skipped (never-written ranges read as zeros); in a file
//! that may hold data there it is punched out (`FALLOC_FL_PUNCH_HOLE`), or written as zeros
//! only where the filesystem cannot punch. A hole of the source reads as zeros, so it becomes
//! a hole of the target; so does a run of zeros the source stored as data.

use std::fs::File;

use rustix::fs::FallocateFlags;
use rustix::io::Errno;

/// Holes are found in blocks of this size, aligned to the file (the usual filesystem block).
const BLOCK: u64 = 4096;

/// Whether the file written to is new (every unwritten range already a hole) or may hold data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Dest {
    Fresh,
    Existing,
}

/// Writes `data` at `offset`, leaving holes where it is zero (see the module docs), and
/// returns the bytes written as data. The file's length is not changed past what the data
/// written reaches: the caller sets it.
pub(super) fn write_at(file: &File, data: &[u8], offset: u64, into: Dest) -> std::io::Result<u64> {
    let mut written = 0;
    let mut done = 0;
    while done < data.len() {
        // One run of blocks that are all zero, or all not.
        let zero = block_is_zero(data, offset, done);
        let mut end = done;
        while end < data.len() && block_is_zero(data, offset, end) == zero {
            end = block_end(offset, end, data.len());
        }
        let at = offset + done as u64;
        match (zero, into) {
            (true, Dest::Fresh) => {}
            (true, Dest::Existing) => punch(file, at, &data[done..end])?,
            (false, _) => {
                write_all_at(file, &data[done..end], at)?;
                written += (end - done) as u64;
            }
        }
        done = end;
    }
    Ok(written)
}

/// The end (index into `data`) of the block that holds `data[at]`.
fn block_end(offset: u64, at: usize, len: usize) -> usize {
    let absolute = offset + at as u64;
    let next = (absolute / BLOCK + 1) * BLOCK;
    ((next - offset) as usize).min(len)
}

fn block_is_zero(data: &[u8], offset: u64, at: usize) -> bool {
    data[at..block_end(offset, at, data.len())].iter().all(|&b| b == 0)
}

fn write_all_at(file: &File, data: &[u8], offset: u64) -> std::io::Result<()> {
    let mut done = 0;
    while done < data.len() {
        done += rustix::io::pwrite(file, &data[done..], offset + done as u64)?;
    }
    Ok(())
}

/// Makes `zeros.len()` bytes at `offset` read as zero without allocating them.
fn punch(file: &File, offset: u64, zeros: &[u8]) -> std::io::Result<()> {
    let flags = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
    match rustix::fs::fallocate(file, flags, offset, zeros.len() as u64) {
        Ok(()) => Ok(()),
        Err(Errno::OPNOTSUPP | Errno::NOSYS) => write_all_at(file, zeros, offset),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn blocks(file: &File) -> u64 {
        file.metadata().unwrap().blocks()
    }

    #[test]
    fn zero_blocks_are_holes_and_the_bytes_are_right() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = File::options().read(true).write(true).create(true).truncate(true).open(&path).unwrap();
        let mut data = vec![0u8; 4 << 20];
        data[5000] = 1;
        data[(3 << 20) + 7] = 2;
        assert_eq!(write_at(&file, &data, 0, Dest::Fresh).unwrap(), 2 * BLOCK);
        file.set_len(data.len() as u64).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), data);
        assert!(blocks(&file) <= 64, "{} blocks of 512 bytes for 2 data blocks", blocks(&file));
        // Rewriting over data with zeros punches it out.
        let dense = vec![7u8; 1 << 20];
        write_at(&file, &dense, 0, Dest::Existing).unwrap();
        write_at(&file, &vec![0u8; 1 << 20], 0, Dest::Existing).unwrap();
        assert!(std::fs::read(&path).unwrap()[..1 << 20].iter().all(|&b| b == 0));
        assert!(blocks(&file) <= 64, "{} blocks after punching", blocks(&file));
    }

    #[test]
    fn unaligned_pieces_are_written_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = File::options().read(true).write(true).create(true).truncate(true).open(&path).unwrap();
        let data: Vec<u8> = (0..10_000u32).map(|i| if (3000..9000).contains(&i) { 0 } else { i as u8 | 1 }).collect();
        for (k, piece) in data.chunks(777).enumerate() {
            write_at(&file, piece, (k * 777) as u64, Dest::Fresh).unwrap();
        }
        file.set_len(data.len() as u64).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), data);
    }
}
