//! A manifest read as a stream of entries in manifest order, in memory bounded by the depth of
//! the tree rather than its size, and held to every rule a whole read checks.
//!
//! The end record's count and checksum can only be checked at the end, so a consumer must read
//! the stream to its end before it trusts anything it concluded: the last item is an error when
//! the file is damaged. An inconsistency found on the way (a directory hash that does not match
//! its entries, say) is held back until the end record has been checked, so a damaged file is
//! reported as damaged, exactly as [`super::read_manifest`] reports it.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::check::{LinkTarget, TreeCheck};
use super::format::{ROOT_HASH_MISMATCH, Reader, TAG_ENTRY};
use super::{Entry, Header, ManifestError};
use crate::digest::Digest;
use crate::path::RelPath;

/// A hard link's record holds the index of its first name. To find that name again without
/// keeping every path, the stream remembers where every so many records one starts (and the
/// path before it, which its prefix compression needs) and reads forward from there: every
/// `CHECKPOINT_EVERY`th record at first; when `CHECKPOINTS_KEPT` are held, every other one is
/// dropped and the spacing doubled, so their memory does not grow with the manifest.
const CHECKPOINT_EVERY: u64 = if cfg!(test) { 2 } else { 256 };
const CHECKPOINTS_KEPT: usize = if cfg!(test) { 8 } else { 1 << 14 };
/// First names found again, kept for the next names of the same inode; emptied when full.
const RESOLVED_KEPT: usize = 1 << 16;

/// The entries of a manifest file, one at a time (see the module docs).
pub struct EntryStream {
    reader: Reader<File>,
    header: Header,
    /// The entry count the header announces.
    expected: u64,
    root_hash: Option<Option<String>>,
    last: Option<RelPath>,
    held: u64,
    check: TreeCheck,
    links: LinkIndex,
    /// An inconsistency found before the end record was checked.
    deferred: Option<ManifestError>,
    done: bool,
}

impl EntryStream {
    /// Opens the manifest at `path` and reads its header.
    pub fn open(path: &Path) -> Result<Self, ManifestError> {
        let io = |cause| ManifestError::Io { file: path.display().to_string(), cause };
        let file = File::open(path).map_err(io)?;
        let again = file.try_clone().map_err(io)?;
        let mut reader = Reader {
            input: BufReader::with_capacity(1 << 16, file),
            hasher: blake3::Hasher::new(),
            offset: 0,
            file: path.to_path_buf(),
        };
        let (header, expected, root_hash) = reader.start()?;
        Ok(EntryStream {
            reader,
            header,
            expected,
            root_hash,
            last: None,
            held: 0,
            check: TreeCheck::new(),
            links: LinkIndex {
                file: again,
                every: CHECKPOINT_EVERY,
                checkpoints: Vec::new(),
                resolved: HashMap::new(),
            },
            deferred: None,
            done: false,
        })
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The next entry, or `None` after the end record was read and found sound.
    fn step(&mut self) -> Result<Option<Entry>, ManifestError> {
        loop {
            let record_start = self.reader.offset;
            let Some((mut entry, first)) = self.reader.next_record(self.last.as_ref(), &self.header)? else {
                self.reader.finish(self.held, self.expected)?;
                if let Some(deferred) = self.deferred.take() {
                    return Err(deferred);
                }
                self.check.finish().map_err(|(path, what)| self.reader.inconsistent(path.display(), what))?;
                return Ok(None);
            };
            let index = self.held;
            if self.header.hard_links && index.is_multiple_of(self.links.every) {
                let previous = self.last.as_ref().map_or_else(Box::default, |p| p.as_bytes().into());
                self.links.add(Checkpoint { offset: record_start, previous });
            }
            self.held += 1;
            self.last = Some(entry.path.clone());
            let link = match first {
                Some(first) if first >= index => {
                    return Err(self.reader.corrupt(format!("a hard link to entry {first}, not an earlier one")));
                }
                Some(first) if self.deferred.is_none() => {
                    Some(self.links.resolve(first, &self.reader, &self.header)?)
                }
                _ => None,
            };
            // Past an inconsistency, the rest is only read for the end record's verdict.
            if self.deferred.is_some() {
                continue;
            }
            if let Some(to) = &link {
                entry.set_hard_link(to.path.clone());
            }
            if index == 0 && self.root_hash.as_ref().is_some_and(|hash| *hash != entry.digest.map(Digest::to_hex)) {
                self.deferred = Some(self.reader.inconsistent(String::new(), ROOT_HASH_MISMATCH.into()));
                continue;
            }
            if let Err((path, what)) = self.check.add(&entry, link.as_ref()) {
                self.deferred = Some(self.reader.inconsistent(path.display(), what));
                continue;
            }
            return Ok(Some(entry));
        }
    }
}

impl std::fmt::Debug for EntryStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EntryStream").field("file", &self.reader.file).field("read", &self.held).finish()
    }
}

impl Iterator for EntryStream {
    type Item = Result<Entry, ManifestError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let item = self.step();
        if !matches!(item, Ok(Some(_))) {
            self.done = true;
        }
        item.transpose()
    }
}

#[derive(Debug)]
struct Checkpoint {
    /// Where the record starts (its tag byte).
    offset: u64,
    /// The path of the record before it.
    previous: Box<[u8]>,
}

/// Finds the first name of a hard link again by its record index (see [`CHECKPOINT_EVERY`]).
#[derive(Debug)]
struct LinkIndex {
    /// The manifest opened a second time, read by position.
    file: File,
    /// Checkpoint `i` is at record `i * every`.
    every: u64,
    checkpoints: Vec<Checkpoint>,
    resolved: HashMap<u64, LinkTarget>,
}

impl LinkIndex {
    fn add(&mut self, checkpoint: Checkpoint) {
        self.checkpoints.push(checkpoint);
        if self.checkpoints.len() >= CHECKPOINTS_KEPT {
            let mut i = 0;
            self.checkpoints.retain(|_| {
                i += 1;
                i % 2 == 1
            });
            self.every *= 2;
        }
    }

    /// The entry at record `index`, an earlier record than the one being read by `main`.
    fn resolve(&mut self, index: u64, main: &Reader<File>, header: &Header) -> Result<LinkTarget, ManifestError> {
        if let Some(known) = self.resolved.get(&index) {
            return Ok(known.clone());
        }
        let checkpoint = &self.checkpoints[(index / self.every) as usize];
        let at = At { file: &self.file, position: checkpoint.offset };
        let mut reader = Reader {
            input: BufReader::with_capacity(1 << 14, at),
            hasher: blake3::Hasher::new(),
            offset: checkpoint.offset,
            file: main.file.clone(),
        };
        let mut previous = checkpoint.previous.to_vec();
        let mut record = index - index % self.every;
        let target = loop {
            if reader.byte()? != TAG_ENTRY {
                return Err(main.corrupt(format!("entry {index} changed while the manifest was being read")));
            }
            let (entry, first) = reader.read_entry(&previous, header)?;
            if record == index {
                break LinkTarget { path: entry.path, kind: entry.kind, is_link: first.is_some() };
            }
            previous = entry.path.as_bytes().to_vec();
            record += 1;
        };
        if self.resolved.len() >= RESOLVED_KEPT {
            self.resolved.clear();
        }
        self.resolved.insert(index, target.clone());
        Ok(target)
    }
}

/// Reads a file from a position of its own, leaving the file's offset alone.
pub(super) struct At<'a> {
    pub(super) file: &'a File,
    pub(super) position: u64,
}

impl Read for At<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.position)?;
        self.position += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hard_links_are_found_again_however_far_back_after_the_checkpoints_thinned() {
        let tree = tempfile::tempdir().unwrap();
        for i in 0..400 {
            let path = tree.path().join(format!("d{}/f{i:03}", i % 5));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, format!("{i}")).unwrap();
        }
        for (i, first) in ["d0/f000", "d1/f001", "d2/f202", "d4/f399"].iter().enumerate() {
            std::fs::hard_link(tree.path().join(first), tree.path().join(format!("z{i}"))).unwrap();
            std::fs::hard_link(tree.path().join(first), tree.path().join(format!("d4/z{i}"))).unwrap();
        }
        let manifest = crate::scan::scan(tree.path(), &crate::scan::ScanOptions::default()).unwrap();
        let file = tempfile::NamedTempFile::new().unwrap();
        crate::manifest::write_manifest(&manifest, file.as_file()).unwrap();
        let streamed: Vec<Entry> = EntryStream::open(file.path()).unwrap().collect::<Result<_, _>>().unwrap();
        assert_eq!(streamed, crate::manifest::read_manifest(file.path()).unwrap().entries);
        assert_eq!(streamed.iter().filter(|e| e.hard_link().is_some()).count(), 8);
    }
}
