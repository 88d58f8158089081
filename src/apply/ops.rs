//! One operation at a time: check, write, verify.

mod links;

use std::fs::File;

use blake3::hazmat::HasherExt;

use super::attrs::time_text;
use super::journal::Journal;
use super::source::{SourceData, SourceStamp};
use super::sparse;
use super::target::{NodeKind, NodeStat, RemoveStats, TargetRoot};
use super::{ApplyReport, Outcome};
use crate::digest::{ByteRange, ChunkSize, Digest};
use crate::manifest::Kind;
use crate::path::RelPath;
use crate::plan::{Attrs, FileState, Found, Operation, PatchChunk, TargetFile, text_bytes};

pub(super) struct Run<'a, 'j> {
    pub root: &'a TargetRoot,
    pub source: &'a mut dyn SourceData,
    pub chunk: ChunkSize,
    pub journal: &'a mut Journal<'j>,
    pub report: &'a mut ApplyReport,
    /// The plan's exclude patterns: what a removal must never delete.
    pub exclude: &'a crate::exclude::Excludes,
    /// For each first name of a hard-linked inode, the names the plan links to it: they may
    /// share its inode, and a write to it is meant to reach them.
    pub plan: &'a crate::plan::CheckedPlan,
}

/// Source bytes of one patch read from a bundle and held until its first write.
const STAGE_MAX: u64 = 256 << 20;

/// Metadata a `meta` operation sets.
#[derive(Clone, Copy)]
pub(super) struct Wanted {
    pub mode: Option<u32>,
    pub mtime: Option<(i64, u32)>,
    pub owner: Option<(u32, u32)>,
}

/// Early exit from an operation with its outcome.
pub(super) type Step<T> = Result<T, Outcome>;

pub(super) fn failed(e: impl std::fmt::Display) -> Outcome {
    Outcome::Failed(e.to_string())
}

/// A failure after a patch began writing in place (a full disk, a changed source chunk).
fn partly_patched(outcome: Outcome) -> Outcome {
    match outcome {
        Outcome::Failed(why) => Outcome::Failed(format!(
            "{why}: the file is partly patched; running the same plan again completes it (once the cause is fixed)"
        )),
        other => other,
    }
}

pub(super) fn node_kind(kind: Kind) -> NodeKind {
    match kind {
        Kind::File => NodeKind::File,
        Kind::Dir => NodeKind::Dir,
        Kind::Symlink => NodeKind::Symlink,
        _ => NodeKind::Other,
    }
}

pub(super) fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

impl Run<'_, '_> {
    pub fn operation(&mut self, index: usize, op: &Operation) -> Outcome {
        let path = match op.rel() {
            Ok(path) => path,
            Err(why) => return Outcome::Failed(why),
        };
        let result = match op {
            Operation::Remove { expect, entries, bytes, .. } => self.remove(index, &path, expect, (*entries, *bytes)),
            Operation::Mkdir { .. } => self.mkdir(&path),
            Operation::Copy { source, replaces, attrs, .. } => {
                self.copy(index, &path, source, replaces.as_ref(), attrs)
            }
            Operation::Patch { source, target, chunks, attrs, source_stamp, .. } => {
                self.patch(index, &path, (source, source_stamp.as_ref()), target, chunks, attrs)
            }
            Operation::Symlink { link, link_bytes, replaces, replaces_bytes, attrs, .. } => {
                let link = text_bytes(link, link_bytes.as_deref()).map_err(|e| failed(format!("link_bytes: {e}")));
                let replaces = replaces
                    .as_deref()
                    .map(|text| text_bytes(text, replaces_bytes.as_deref()))
                    .transpose()
                    .map_err(|e| failed(format!("replaces_bytes: {e}")));
                match (link, replaces) {
                    (Ok(link), Ok(replaces)) => self.symlink(index, &path, &link, replaces.as_deref(), attrs),
                    (Err(outcome), _) | (_, Err(outcome)) => Err(outcome),
                }
            }
            Operation::Link { to, to_bytes, kind, size, replaces, .. } => {
                match text_bytes(to, to_bytes.as_deref()).and_then(|b| RelPath::parse(&b).map_err(|e| e.to_string())) {
                    Ok(to) => self.link(&path, &to, *kind, *size, replaces.as_ref()),
                    Err(why) => Err(failed(format!("to: {why}"))),
                }
            }
            Operation::Mknod { kind, rdev, replaces, attrs, .. } => self.mknod(&path, *kind, *rdev, *replaces, attrs),
            Operation::Unshare { kind, .. } => self.unshare_op(&path, *kind),
            Operation::Meta { kind, mode, mtime, owner, xattrs, .. } => {
                let wanted = Wanted { mode: *mode, mtime: mtime.map(|t| (t.sec, t.nsec)), owner: *owner };
                self.meta(&path, *kind, wanted, xattrs.as_deref())
            }
        };
        result.unwrap_or_else(|outcome| outcome)
    }

    /// A temp file beside `rel`, once the journal says where this run makes temps.
    pub(super) fn create_temp(&mut self, rel: &[u8]) -> Step<(File, Vec<u8>)> {
        let dir = rel.iter().rposition(|&b| b == b'/').map_or(&[][..], |slash| &rel[..slash]);
        self.journal.will_make_temps_in(dir).map_err(Outcome::Failed)?;
        self.root.create_temp(rel, 0o600).map_err(failed)
    }

    pub(super) fn stat(&self, path: &RelPath) -> Step<Option<NodeStat>> {
        self.root.stat(path.as_bytes()).map_err(failed)
    }

    /// Removes what is at `path` if it is still what the plan saw: a directory must still hold
    /// exactly the `planned` (entries, bytes), or something was added or changed in it since.
    /// A removal interrupted half way (journal) is simply continued.
    fn remove(&mut self, index: usize, path: &RelPath, expect: &Found, planned: (u64, u64)) -> Step<Outcome> {
        let Some(found) = self.stat(path)? else {
            return Ok(Outcome::AlreadyDone);
        };
        if found.kind != node_kind(expect.kind) {
            // A type change whose removal and creation both ran already.
            if expect.then.is_some_and(|then| found.kind == node_kind(then)) {
                return Ok(Outcome::AlreadyDone);
            }
            return Err(Outcome::Skipped(format!("expected a {} to remove, found a {}", expect.kind, found.kind)));
        }
        let changed_size = expect.size.is_some_and(|size| size != found.size);
        let changed_time = expect.mtime.is_some_and(|t| (t.sec, t.nsec) != (found.mtime_sec, found.mtime_nsec));
        if changed_size || changed_time {
            return Err(Outcome::Skipped("the file changed since the plan was made; kept".into()));
        }
        if found.kind == NodeKind::Dir {
            if let Some(protected) = self.root.find_in_tree(path.as_bytes(), self.exclude).map_err(failed)? {
                return Err(Outcome::Skipped(format!(
                    "it holds {}, which the plan's exclude patterns protect; kept",
                    String::from_utf8_lossy(&protected)
                )));
            }
            let now = self.root.count_tree(path.as_bytes()).map_err(failed)?;
            // After an interrupted run of this removal the directory may only have shrunk.
            let fits = if self.journal.was_started(index) {
                now.entries <= planned.0 && now.bytes <= planned.1
            } else {
                (now.entries, now.bytes) == planned
            };
            if !fits {
                return Err(Outcome::Skipped(format!(
                    "the directory changed since the plan was made ({} entries, {} bytes now; {} entries, {} bytes planned); kept",
                    now.entries, now.bytes, planned.0, planned.1
                )));
            }
        }
        if found.kind == NodeKind::Dir {
            self.journal.start(index).map_err(Outcome::Failed)?;
        }
        // Counted also when the removal stops part way: what it deleted is gone.
        let mut stats = RemoveStats::default();
        let removed = self.root.remove_tree_into(path.as_bytes(), &mut stats);
        self.report.entries_deleted += stats.entries;
        self.report.bytes_deleted += stats.bytes;
        removed.map_err(failed)?;
        self.journal.finish_op(index).map_err(Outcome::Failed)?;
        Ok(Outcome::Done)
    }

    fn mkdir(&mut self, path: &RelPath) -> Step<Outcome> {
        match self.stat(path)? {
            Some(found) if found.kind == NodeKind::Dir => Ok(Outcome::AlreadyDone),
            Some(found) => Err(Outcome::Skipped(format!("a {} is in the way", found.kind))),
            // Owner-only until the final `meta` sets the source's mode: a read-only mode now
            // would stop us writing the children.
            None => self.root.create_dir(path.as_bytes(), 0o700).map(|()| Outcome::Done).map_err(failed),
        }
    }

    /// Size and root hash of the target file at `path`.
    fn target_file(&self, path: &RelPath) -> Step<FileState> {
        let file = self.root.open_read(path.as_bytes()).map_err(failed)?;
        let size = file.metadata().map_err(failed)?.len();
        let hash = crate::scan::hash_file(&file, size, self.chunk).map_err(failed)?;
        Ok(FileState { size, hash: crate::plan::Hex(hash) })
    }

    fn copy(
        &mut self,
        index: usize,
        path: &RelPath,
        source: &FileState,
        replaces: Option<&FileState>,
        attrs: &Attrs,
    ) -> Step<Outcome> {
        // An operation of a batch an earlier run did not see synced may have been torn by a
        // crash (a power loss can leave the new name with the wrong size or bytes): it is
        // redone from the source, where it would otherwise be refused as changed.
        let torn_ok = self.journal.was_started(index);
        match self.stat(path)? {
            None if replaces.is_some() && !torn_ok => {
                return Err(Outcome::Skipped("the file to replace is gone".into()));
            }
            None => {}
            Some(found) if found.kind != NodeKind::File => {
                return Err(Outcome::Skipped(format!("a {} is in the way that the plan did not expect", found.kind)));
            }
            Some(found) => {
                // Hash the file only if its size leaves it a candidate for either state.
                let candidate = found.size == source.size || replaces.is_some_and(|old| old.size == found.size);
                let now = if candidate { Some(self.target_file(path)?) } else { None };
                if now.as_ref() == Some(source) {
                    self.set_attrs(path, NodeKind::File, attrs)?;
                    return Ok(Outcome::AlreadyDone);
                }
                if (now.is_none() || now.as_ref() != replaces) && !torn_ok {
                    return Err(Outcome::Skipped("the target file changed since the plan was made".into()));
                }
            }
        }
        let (mut file, tmp) = self.create_temp(path.as_bytes())?;
        let written = self.fill_temp(index, path, &mut file, source, attrs.mtime);
        let finished = written.and_then(|written| {
            self.set_attrs_at(&tmp, NodeKind::File, attrs)?;
            // Durable with its batch (one `syncfs`); until then the journal says it may be torn.
            self.root.rename(&tmp, path.as_bytes()).map_err(failed)?;
            Ok(written)
        });
        match finished {
            Ok(written) => self.report.bytes_copied += written,
            Err(outcome) => {
                let _ = self.root.remove_file(&tmp);
                return Err(outcome);
            }
        }
        let outcome = self.verify(path, source)?;
        self.check_attrs(path, NodeKind::File, attrs)?;
        Ok(outcome)
    }

    /// Streams the source file into the new file `file`, holes kept, checking that the source
    /// is the file the plan saw before, while (its root hash) and after reading it; returns
    /// the bytes written as data.
    fn fill_temp(
        &mut self,
        index: usize,
        path: &RelPath,
        file: &mut File,
        source: &FileState,
        mtime: crate::plan::Time,
    ) -> Step<u64> {
        let before = self.source_unchanged(path, source.size, mtime)?;
        let mut hasher = blake3::Hasher::new();
        let mut write_error = None;
        let (mut offset, mut written) = (0, 0);
        for i in 0..self.chunk.chunks_in(source.size) {
            crate::interrupt::stop_point().map_err(failed)?;
            let range = self.chunk.chunk_range(i, source.size);
            self.source
                .read(index, path, range, &mut |piece| {
                    hasher.update(piece);
                    if write_error.is_none() {
                        match sparse::write_at(file, piece, offset, sparse::Dest::Fresh) {
                            Ok(n) => written += n,
                            Err(e) => write_error = Some(e),
                        }
                    }
                    offset += piece.len() as u64;
                })
                .map_err(Outcome::Skipped)?;
        }
        if let Some(e) = write_error.or_else(|| file.set_len(source.size).err()) {
            return Err(failed(format!("writing {}: {e}", path.display())));
        }
        self.source_still(path, before)?;
        if Digest::from(hasher.finalize()) != source.hash.0 {
            return Err(Outcome::Skipped("the source file changed since the plan was made".into()));
        }
        Ok(written)
    }

    /// Checks, before reading a source file, that it still has the size and mtime the plan
    /// recorded (a file that grew would otherwise give its planned prefix, which hashes right).
    fn source_unchanged(&mut self, path: &RelPath, size: u64, mtime: crate::plan::Time) -> Step<Option<SourceStamp>> {
        let stamp = self.source.stamp(path).map_err(Outcome::Skipped)?;
        if let Some(now) = stamp
            && (now.size != size || now.mtime != (mtime.sec, mtime.nsec))
        {
            return Err(Outcome::Skipped(format!(
                "the source file changed since the plan was made ({} bytes, mtime {} now; {size} bytes, mtime {} planned)",
                now.size,
                time_text(now.mtime),
                time_text((mtime.sec, mtime.nsec))
            )));
        }
        Ok(stamp)
    }

    /// Checks, after reading a source file, that it did not change while it was read.
    fn source_still(&mut self, path: &RelPath, before: Option<SourceStamp>) -> Step<()> {
        let Some(before) = before else { return Ok(()) };
        match self.source.stamp(path).map_err(Outcome::Skipped)? {
            Some(now) if now == before => Ok(()),
            _ => Err(Outcome::Skipped("the source file changed while it was being read".into())),
        }
    }

    fn verify(&self, path: &RelPath, expected: &FileState) -> Step<Outcome> {
        let found = self.target_file(path)?;
        if found != *expected {
            return Err(Outcome::Failed(format!(
                "after writing, the file has {} bytes and hash {}, expected {} bytes and {}",
                found.size, found.hash.0, expected.size, expected.hash.0
            )));
        }
        Ok(Outcome::Done)
    }

    fn patch(
        &mut self,
        index: usize,
        path: &RelPath,
        (source, source_stamp): (&FileState, Option<&crate::plan::SourceStamp>),
        target: &TargetFile,
        chunks: &[PatchChunk],
        attrs: &Attrs,
    ) -> Step<Outcome> {
        match self.stat(path)? {
            None => return Err(Outcome::Skipped("the file to patch is gone".into())),
            Some(found) if found.kind != NodeKind::File => {
                return Err(Outcome::Skipped(format!("expected a file to patch, found a {}", found.kind)));
            }
            Some(_) => {}
        }
        let file = self.root.open_read(path.as_bytes()).map_err(failed)?;
        let found = rustix::fs::fstat(&file).map_err(failed)?;
        let size = found.st_size as u64;
        let resumed = self.journal.was_started(index);
        let mut todo = Vec::new();
        let mut all_old = true;
        for chunk in chunks {
            let now_range = self.chunk.chunk_range(chunk.index, size);
            let now = (now_range.length > 0).then(|| range_cv(&file, now_range)).transpose().map_err(failed)?;
            if now_range == self.chunk.chunk_range(chunk.index, source.size) && now == Some(chunk.new.0) {
                continue;
            }
            all_old &= now_range == self.chunk.chunk_range(chunk.index, target.size) && now == chunk.old.map(|h| h.0);
            todo.push(*chunk);
        }
        if todo.is_empty() && size == source.size {
            let outcome = self.verify(path, source)?;
            self.journal.finish_op(index).map_err(Outcome::Failed)?;
            self.set_attrs(path, NodeKind::File, attrs)?;
            return Ok(if outcome == Outcome::Done { Outcome::AlreadyDone } else { outcome });
        }
        // Unless an earlier run of this plan was interrupted in the middle of this file, it must
        // still be exactly what the plan saw, outside the planned chunks too.
        if !resumed {
            if size != target.size || !all_old {
                return Err(Outcome::Skipped("the file changed since the plan was made".into()));
            }
            let unchanged_mtime = (found.st_mtime, found.st_mtime_nsec as u32) == (target.mtime.sec, target.mtime.nsec);
            if !unchanged_mtime && crate::scan::hash_file(&file, size, self.chunk).map_err(failed)? != target.hash.0 {
                return Err(Outcome::Skipped("the file changed since the plan was made".into()));
            }
        }
        let source_before = self.source_unchanged(path, source.size, attrs.mtime)?;
        if !super::source::still_whole(&mut *self.source, index, path, source, source_stamp, source_before)
            .map_err(Outcome::Skipped)?
        {
            return Err(Outcome::Skipped(
                "the source file changed since the plan was made (outside the chunks to patch)".into(),
            ));
        }
        let staged = self.stage(index, path, &todo, source.size)?;
        if found.st_nlink > 1 && !self.owns_inode(path)? {
            // Other names of this inode (perhaps outside the target) must not see the writes:
            // patch a private copy and rename it over this name.
            let (mut copy, tmp) = self.create_temp(path.as_bytes())?;
            let written = std::io::copy(&mut &file, &mut copy)
                .map_err(failed)
                .and_then(|_| self.write_chunks(index, path, &copy, &todo, source.size, size, staged))
                // Synced before the rename: a resumed patch rewrites only the planned chunks, so
                // the rest of the copy must never be torn.
                .and_then(|()| copy.sync_all().map_err(failed))
                .and_then(|()| self.set_attrs_at(&tmp, NodeKind::File, attrs))
                .and_then(|()| self.root.rename(&tmp, path.as_bytes()).map_err(failed));
            if let Err(outcome) = written {
                let _ = self.root.remove_file(&tmp);
                return Err(outcome);
            }
        } else {
            // Opened for writing only now that there is work, and only if it is still the file
            // that was checked.
            let writer = self.root.open_read_write(path.as_bytes()).map_err(failed)?;
            let same = rustix::fs::fstat(&writer).map_err(failed)?;
            if (same.st_dev, same.st_ino) != (found.st_dev, found.st_ino) {
                return Err(Outcome::Skipped("the file was replaced while it was being checked".into()));
            }
            // Recorded only now that the first byte is about to be written in place.
            self.journal.start(index).map_err(Outcome::Failed)?;
            self.write_chunks(index, path, &writer, &todo, source.size, size, staged).map_err(partly_patched)?;
        }
        // What was written was checked chunk by chunk against the plan; a source changed
        // meanwhile still makes this no honest success.
        self.source_still(path, source_before).map_err(|_| {
            Outcome::Failed(
                "the source file changed while the patch read it; the target holds the source as planned".into(),
            )
        })?;
        let outcome = self.verify(path, source)?;
        self.journal.finish_op(index).map_err(Outcome::Failed)?;
        self.set_attrs(path, NodeKind::File, attrs)?;
        Ok(outcome)
    }

    /// Checks every source chunk of a patch before its first write, so a changed source or a
    /// corrupt bundle writes nothing. A source directory is simply read again while writing; a
    /// bundle is a stream read once, so its chunks are kept (up to [`STAGE_MAX`] bytes).
    fn stage(&mut self, index: usize, path: &RelPath, todo: &[PatchChunk], size: u64) -> Step<Option<Vec<Vec<u8>>>> {
        let total: u64 = todo.iter().map(|c| self.chunk.chunk_range(c.index, size).length).sum();
        if self.source.rereadable() {
            for chunk in todo {
                self.source_chunk(index, path, chunk, size)?;
            }
            return Ok(None);
        }
        if total > STAGE_MAX {
            return Ok(None);
        }
        todo.iter().map(|chunk| self.source_chunk(index, path, chunk, size)).collect::<Step<Vec<_>>>().map(Some)
    }

    /// Writes the planned chunks into `file` (from `staged`, or read now) and sets its length to
    /// the source's (made durable with the batch). A chunk that cannot be had now fails the operation: earlier
    /// chunks may be written, and the journal lets the next run of the plan finish the file.
    #[allow(clippy::too_many_arguments)]
    fn write_chunks(
        &mut self,
        index: usize,
        path: &RelPath,
        file: &File,
        todo: &[PatchChunk],
        size: u64,
        current: u64,
        mut staged: Option<Vec<Vec<u8>>>,
    ) -> Step<()> {
        for (k, chunk) in todo.iter().enumerate() {
            crate::interrupt::stop_point().map_err(failed)?;
            let data = match staged.as_mut() {
                Some(chunks) => std::mem::take(&mut chunks[k]),
                None => self.source_chunk(index, path, chunk, size).map_err(|outcome| match outcome {
                    Outcome::Skipped(why) => Outcome::Failed(why),
                    other => other,
                })?,
            };
            let offset = self.chunk.chunk_range(chunk.index, size).offset;
            self.report.bytes_copied +=
                sparse::write_at(file, &data, offset, sparse::Dest::Existing).map_err(failed)?;
        }
        if current != size {
            file.set_len(size).map_err(failed)?;
        }
        Ok(())
    }

    /// One chunk of source bytes, checked against the CV the plan expects.
    fn source_chunk(&mut self, index: usize, path: &RelPath, chunk: &PatchChunk, size: u64) -> Step<Vec<u8>> {
        let range = self.chunk.chunk_range(chunk.index, size);
        let mut data = Vec::with_capacity(range.length as usize);
        self.source.read(index, path, range, &mut |piece| data.extend_from_slice(piece)).map_err(Outcome::Skipped)?;
        if chunk_cv(&data, range.offset) != chunk.new.0 {
            return Err(Outcome::Skipped(format!("source chunk {} changed since the plan was made", chunk.index)));
        }
        Ok(data)
    }

    fn symlink(
        &mut self,
        index: usize,
        path: &RelPath,
        link: &[u8],
        replaces: Option<&[u8]>,
        attrs: &Attrs,
    ) -> Step<Outcome> {
        match self.stat(path)? {
            Some(found) if found.kind == NodeKind::Symlink => {
                let now = self.root.read_link(path.as_bytes()).map_err(failed)?;
                if now == link {
                    self.set_attrs(path, NodeKind::Symlink, attrs)?;
                    return Ok(Outcome::AlreadyDone);
                }
                // A symlink of a batch not seen synced may be torn (see `copy`).
                if replaces != Some(&now[..]) && !self.journal.was_started(index) {
                    return Err(Outcome::Skipped("the symlink changed since the plan was made".into()));
                }
            }
            None if replaces.is_none() => {}
            None => return Err(Outcome::Skipped("the symlink to replace is gone".into())),
            Some(found) => return Err(Outcome::Skipped(format!("a {} is in the way", found.kind))),
        }
        self.journal.will_make_temps_in(path.parent().as_bytes()).map_err(Outcome::Failed)?;
        let tmp = self.root.symlink_temp(link, path.as_bytes()).map_err(failed)?;
        let placed = self
            .set_attrs_at(&tmp, NodeKind::Symlink, attrs)
            .and_then(|()| self.root.rename(&tmp, path.as_bytes()).map_err(failed));
        if let Err(outcome) = placed {
            let _ = self.root.remove_file(&tmp);
            return Err(outcome);
        }
        self.check_attrs(path, NodeKind::Symlink, attrs)?;
        Ok(Outcome::Done)
    }
}

/// The CV of the chunk of `file` at `range`, as the scan computed it.
fn range_cv(file: &File, range: ByteRange) -> std::io::Result<Digest> {
    let mut data = vec![0; range.length as usize];
    let mut done = 0;
    while done < data.len() {
        match rustix::io::pread(file, &mut data[done..], range.offset + done as u64)? {
            0 => return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "file shrank")),
            n => done += n,
        }
    }
    Ok(chunk_cv(&data, range.offset))
}

pub(super) fn chunk_cv(data: &[u8], offset: u64) -> Digest {
    let mut hasher = blake3::Hasher::new();
    hasher.set_input_offset(offset);
    hasher.update(data);
    Digest(hasher.finalize_non_root())
}
