//! A manifest written entry by entry, in manifest order, without holding the tree.
//!
//! A directory's record (with its node hash) comes before its children, but its hash is known
//! only after them. So records go to a spool file first: a directory's record is written when
//! it is opened, with its digest bytes zero, and the digest is written into that place when the
//! directory is closed. A directory that ends with no digest (something below it could not be
//! read) or with a problem of its own has a record of another length: it is kept aside, few as
//! such directories are, and put in place when the spool is copied out. The copy is where the
//! magic line and header (which give the entry count and root hash) are written first, and
//! where the end record's checksum is taken, so the output is byte for byte what
//! [`super::write_manifest`] writes for the same entries.

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::format::{HashingWriter, encode_record, write_end, write_head};
use super::stream::At;
use super::{Entry, Header};
use crate::digest::Digest;

/// Bytes of spooled records kept in memory before they are written out (few in tests, so a
/// digest is also patched in the file).
const BUFFER: usize = if cfg!(test) { 4096 } else { 1 << 20 };

/// Writes one manifest through a spool file (see the module docs).
#[derive(Debug)]
pub struct ManifestWriter {
    header: Header,
    spool: File,
    /// Records not written to the spool yet; they start at `flushed`.
    buffer: Vec<u8>,
    flushed: u64,
    /// Entries written so far: the index of the next one.
    count: u64,
    previous: Vec<u8>,
    record: Vec<u8>,
    /// Directory records to put in place of their first form, by spool offset.
    replaced: Vec<Replaced>,
    root: Option<Digest>,
}

/// A directory's record written before its children, to be finished by
/// [`ManifestWriter::close_dir`].
#[derive(Debug)]
pub struct DirSlot {
    index: u64,
    /// Where the record starts in the spool, its length, and where its digest bytes are.
    offset: u64,
    len: u64,
    digest_at: u64,
    /// The path before it, which its prefix compression was taken against.
    previous: Box<[u8]>,
    /// The record as opened, but for the digest: whether a close can simply fill it in.
    opened: Entry,
}

#[derive(Debug)]
struct Replaced {
    offset: u64,
    len: u64,
    record: Vec<u8>,
}

impl ManifestWriter {
    /// A writer of a manifest with `header` (its times may still change: see
    /// [`ManifestWriter::header_mut`]) spooling its records to `spool`, an empty file.
    pub fn new(header: Header, spool: File) -> Self {
        ManifestWriter {
            header,
            spool,
            buffer: Vec::with_capacity(BUFFER),
            flushed: 0,
            count: 0,
            previous: Vec::new(),
            record: Vec::with_capacity(256),
            replaced: Vec::new(),
            root: None,
        }
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// For the times and scrub slice, known only at the end of a scan.
    pub fn header_mut(&mut self) -> &mut Header {
        &mut self.header
    }

    /// The index the next entry gets (what a later hard link to it records).
    pub fn next_index(&self) -> u64 {
        self.count
    }

    /// A finished entry; `first` is the index of the first name of its inode when it is a hard
    /// link. Gives its index.
    pub fn write(&mut self, entry: &Entry, first: Option<u64>) -> io::Result<u64> {
        self.record.clear();
        encode_record(&mut self.record, &self.header, entry, &self.previous, first);
        if self.count == 0 {
            self.root = entry.digest;
        }
        self.append(entry)
    }

    /// A directory whose children come next; its digest and any problem found later are given
    /// to [`ManifestWriter::close_dir`].
    pub fn open_dir(&mut self, entry: &Entry) -> io::Result<DirSlot> {
        let mut opened = entry.clone();
        opened.digest = None;
        self.record.clear();
        encode_record(
            &mut self.record,
            &self.header,
            &Entry { xattrs: None, problem: None, ..opened.clone() },
            &self.previous,
            None,
        );
        let digest_at = self.record.len() as u64;
        opened.digest = Some(Digest::default());
        self.record.clear();
        encode_record(&mut self.record, &self.header, &opened, &self.previous, None);
        let previous = self.previous.as_slice().into();
        let (offset, len) = (self.flushed + self.buffer.len() as u64, self.record.len() as u64);
        let index = self.append(entry)?;
        Ok(DirSlot { index, offset, len, digest_at: offset + digest_at, previous, opened })
    }

    /// The directory of `slot` as it ended: `entry` with its node hash, or none.
    pub fn close_dir(&mut self, slot: DirSlot, entry: &Entry) -> io::Result<()> {
        if slot.index == 0 {
            self.root = entry.digest;
        }
        let same = |a: &Entry| Entry { digest: None, ..a.clone() };
        match entry.digest {
            Some(digest) if entry.problem.is_none() && same(entry) == same(&slot.opened) => {
                self.patch(slot.digest_at, &digest.0)
            }
            _ => {
                let mut record = Vec::new();
                encode_record(&mut record, &self.header, entry, &slot.previous, None);
                self.replaced.push(Replaced { offset: slot.offset, len: slot.len, record });
                Ok(())
            }
        }
    }

    /// Writes the manifest to `out`: magic line, header, every record, end record. Gives the
    /// number of bytes written.
    pub fn finish(mut self, out: impl Write) -> io::Result<u64> {
        self.spool.write_all(&self.buffer)?;
        self.replaced.sort_by_key(|r| r.offset);
        let mut out = HashingWriter::new(out);
        write_head(&mut out, &self.header, self.count, self.root)?;
        let mut spool = BufReader::with_capacity(1 << 16, At { file: &self.spool, position: 0 });
        let mut at = 0;
        for replaced in &self.replaced {
            io::copy(&mut (&mut spool).take(replaced.offset - at), &mut out)?;
            io::copy(&mut (&mut spool).take(replaced.len), &mut io::sink())?;
            out.write_all(&replaced.record)?;
            at = replaced.offset + replaced.len;
        }
        io::copy(&mut spool, &mut out)?;
        write_end(out, self.count)
    }

    fn append(&mut self, entry: &Entry) -> io::Result<u64> {
        self.buffer.extend_from_slice(&self.record);
        if self.buffer.len() >= BUFFER {
            self.spool.write_all(&self.buffer)?;
            self.flushed += self.buffer.len() as u64;
            self.buffer.clear();
        }
        self.previous.clear();
        self.previous.extend_from_slice(entry.path.as_bytes());
        self.count += 1;
        Ok(self.count - 1)
    }

    /// Overwrites spooled bytes at `offset`, in the buffer or in the file.
    fn patch(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let in_file = self.flushed.saturating_sub(offset).min(bytes.len() as u64) as usize;
        if in_file > 0 {
            self.spool.write_all_at(&bytes[..in_file], offset)?;
        }
        let rest = &bytes[in_file..];
        if !rest.is_empty() {
            let start = (offset + in_file as u64 - self.flushed) as usize;
            self.buffer[start..start + rest.len()].copy_from_slice(rest);
        }
        Ok(())
    }
}

/// An empty file for a [`ManifestWriter`]'s spool, in `dir` (beside the output, so on its
/// filesystem): unnamed where the filesystem allows, else named and removed at once.
pub fn spool_file(dir: &Path) -> io::Result<File> {
    use rustix::fs::{Mode, OFlags};
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    if let Ok(fd) = rustix::fs::open(dir, OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC, Mode::from_raw_mode(0o600))
    {
        return Ok(File::from(fd));
    }
    for attempt in 0..100 {
        let path = dir.join(format!(".cutover-spool-{}-{attempt}", std::process::id()));
        match std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(&path) {
            Ok(file) => {
                std::fs::remove_file(&path)?;
                return Ok(file);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(io::ErrorKind::AlreadyExists, "no free name for a spool file"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{Manifest, Problem, write_manifest};

    /// Writes `manifest` through a [`ManifestWriter`] as a scan would: directories opened
    /// before their children and closed after them.
    fn streamed(manifest: &Manifest) -> Vec<u8> {
        let spool = spool_file(&std::env::temp_dir()).unwrap();
        let mut writer = ManifestWriter::new(manifest.header.clone(), spool);
        let mut open: Vec<(DirSlot, &Entry)> = Vec::new();
        for entry in &manifest.entries {
            while open.last().is_some_and(|(_, dir)| !entry.path.is_inside(&dir.path)) {
                let (slot, dir) = open.pop().unwrap();
                writer.close_dir(slot, dir).unwrap();
            }
            let first =
                entry.hard_link().map(|first| manifest.entries.binary_search_by(|e| e.path.cmp(first)).unwrap() as u64);
            if entry.kind == crate::manifest::Kind::Dir && entry.problem.is_none() {
                open.push((writer.open_dir(entry).unwrap(), entry));
            } else {
                writer.write(entry, first).unwrap();
            }
        }
        while let Some((slot, dir)) = open.pop() {
            writer.close_dir(slot, dir).unwrap();
        }
        let mut out = Vec::new();
        writer.finish(&mut out).unwrap();
        out
    }

    #[test]
    fn a_manifest_written_entry_by_entry_is_byte_for_byte_the_one_written_whole() {
        let tree = tempfile::tempdir().unwrap();
        for i in 0..3000 {
            let path = tree.path().join(format!("d{}/e{}/f{i}", i % 7, i % 3));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, vec![i as u8; i % 3000]).unwrap();
        }
        std::fs::hard_link(tree.path().join("d0/e0/f0"), tree.path().join("link")).unwrap();
        let mut manifest = crate::scan::scan(tree.path(), &crate::scan::ScanOptions::default()).unwrap();
        assert_eq!(streamed(&manifest), write_to_vec(&manifest));
        // A directory that could not be read, and the directories above it without a digest:
        // records of another length than their first form.
        let broken = manifest.entries.iter().position(|e| e.path.as_bytes() == b"d3/e1").unwrap();
        manifest.entries[broken].problem = Some(Box::new(Problem::Unreadable("gone".into())));
        manifest.entries[broken].digest = None;
        for dir in [&b"d3"[..], b""] {
            manifest.entries.iter_mut().find(|e| e.path.as_bytes() == dir).unwrap().digest = None;
        }
        assert_eq!(streamed(&manifest), write_to_vec(&manifest));
    }

    fn write_to_vec(manifest: &Manifest) -> Vec<u8> {
        let mut out = Vec::new();
        write_manifest(manifest, &mut out).unwrap();
        out
    }
}
