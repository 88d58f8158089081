//! One operation at a time: check, write, verify.

use std::fs::File;
use std::io::Write;

use blake3::hazmat::HasherExt;

use super::journal::Journal;
use super::source::SourceData;
use super::target::{NodeKind, NodeStat, TargetRoot};
use super::{ApplyReport, Outcome};
use crate::digest::{ByteRange, ChunkSize, Digest};
use crate::manifest::Kind;
use crate::path::RelPath;
use crate::plan::{Attrs, FileState, Found, Operation, PatchChunk, Xattr};

pub(super) struct Run<'a, 'j> {
    pub root: &'a TargetRoot,
    pub source: &'a mut dyn SourceData,
    pub chunk: ChunkSize,
    pub journal: &'a mut Journal<'j>,
    pub report: &'a mut ApplyReport,
}

/// Metadata a `meta` operation sets.
#[derive(Clone, Copy)]
struct Wanted {
    mode: Option<u32>,
    mtime: Option<(i64, u32)>,
    owner: Option<(u32, u32)>,
}

/// Early exit from an operation with its outcome.
type Step<T> = Result<T, Outcome>;

fn failed(e: impl std::fmt::Display) -> Outcome {
    Outcome::Failed(e.to_string())
}

fn node_kind(kind: Kind) -> NodeKind {
    match kind {
        Kind::File => NodeKind::File,
        Kind::Dir => NodeKind::Dir,
        Kind::Symlink => NodeKind::Symlink,
        _ => NodeKind::Other,
    }
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

impl Run<'_, '_> {
    pub fn operation(&mut self, index: usize, op: &Operation) -> Outcome {
        let path = match op.at().rel() {
            Ok(path) => path,
            Err(why) => return Outcome::Failed(why),
        };
        let result = match op {
            Operation::Remove { expect, .. } => self.remove(&path, expect),
            Operation::Mkdir { .. } => self.mkdir(&path),
            Operation::Copy { source, replaces, attrs, .. } => {
                self.copy(index, &path, source, replaces.as_ref(), attrs)
            }
            Operation::Patch { source, target_size, chunks, attrs, .. } => {
                self.patch(index, &path, source, *target_size, chunks, attrs)
            }
            Operation::Symlink { link, link_bytes, replaces, attrs, .. } => {
                self.symlink(&path, link, link_bytes.as_deref(), replaces.as_deref(), attrs)
            }
            Operation::Meta { kind, mode, mtime, owner, xattrs, .. } => {
                let wanted = Wanted { mode: *mode, mtime: mtime.map(|t| (t.sec, t.nsec)), owner: *owner };
                self.meta(&path, *kind, wanted, xattrs.as_deref())
            }
        };
        result.unwrap_or_else(|outcome| outcome)
    }

    fn stat(&self, path: &RelPath) -> Step<Option<NodeStat>> {
        self.root.stat(path.as_bytes()).map_err(failed)
    }

    fn remove(&mut self, path: &RelPath, expect: &Found) -> Step<Outcome> {
        let Some(found) = self.stat(path)? else {
            return Ok(Outcome::AlreadyDone);
        };
        if found.kind != node_kind(expect.kind) {
            return Err(Outcome::Skipped(format!("expected a {} to remove, found a {:?}", expect.kind, found.kind)));
        }
        let changed_size = expect.size.is_some_and(|size| size != found.size);
        let changed_time = expect.mtime.is_some_and(|t| (t.sec, t.nsec) != (found.mtime_sec, found.mtime_nsec));
        if changed_size || changed_time {
            return Err(Outcome::Skipped("the file changed since the plan was made; kept".into()));
        }
        let stats = self.root.remove_tree(path.as_bytes()).map_err(failed)?;
        self.report.entries_deleted += stats.entries;
        self.report.bytes_deleted += stats.bytes;
        Ok(Outcome::Done)
    }

    fn mkdir(&mut self, path: &RelPath) -> Step<Outcome> {
        match self.stat(path)? {
            Some(found) if found.kind == NodeKind::Dir => Ok(Outcome::AlreadyDone),
            Some(found) => Err(Outcome::Skipped(format!("a {:?} is in the way", found.kind))),
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
        match (self.stat(path)?, replaces) {
            (Some(found), _) if found.kind == NodeKind::File && found.size == source.size => {
                if self.target_file(path)? == *source {
                    self.set_attrs(path, NodeKind::File, attrs)?;
                    return Ok(Outcome::AlreadyDone);
                }
                if replaces.is_none_or(|r| r.size != found.size || self.target_file(path).ok().as_ref() != Some(r)) {
                    return Err(Outcome::Skipped("the target file changed since the plan was made".into()));
                }
            }
            (None, None) => {}
            (Some(found), Some(old)) if found.kind == NodeKind::File && found.size == old.size => {
                if self.target_file(path)? != *old {
                    return Err(Outcome::Skipped("the target file changed since the plan was made".into()));
                }
            }
            (None, Some(_)) => return Err(Outcome::Skipped("the file to replace is gone".into())),
            (Some(found), _) => {
                return Err(Outcome::Skipped(format!("a {:?} is in the way that the plan did not expect", found.kind)));
            }
        }
        let (mut file, tmp) = self.root.create_temp(path.as_bytes(), 0o600).map_err(failed)?;
        let written = self.fill_temp(index, path, &mut file, source);
        let finished = written.and_then(|()| {
            self.set_attrs_at(&tmp, NodeKind::File, attrs)?;
            self.root.rename(&tmp, path.as_bytes()).map_err(failed)?;
            self.root.sync_parent(path.as_bytes()).map_err(failed)
        });
        if let Err(outcome) = finished {
            let _ = self.root.remove_file(&tmp);
            return Err(outcome);
        }
        self.report.bytes_copied += source.size;
        self.verify(path, source)
    }

    /// Streams the source file into `file`, checking its root against the plan.
    fn fill_temp(&mut self, index: usize, path: &RelPath, file: &mut File, source: &FileState) -> Step<()> {
        let mut hasher = blake3::Hasher::new();
        let mut write_error = None;
        for i in 0..self.chunk.chunks_in(source.size) {
            let range = self.chunk.chunk_range(i, source.size);
            self.source
                .read(index, path, range, &mut |piece| {
                    hasher.update(piece);
                    if write_error.is_none() {
                        write_error = file.write_all(piece).err();
                    }
                })
                .map_err(Outcome::Skipped)?;
        }
        if let Some(e) = write_error {
            return Err(failed(format!("writing {}: {e}", path.display())));
        }
        if Digest::from(hasher.finalize()) != source.hash.0 {
            return Err(Outcome::Skipped("the source file changed since the plan was made".into()));
        }
        file.sync_all().map_err(failed)
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
        source: &FileState,
        target_size: u64,
        chunks: &[PatchChunk],
        attrs: &Attrs,
    ) -> Step<Outcome> {
        let Some(found) = self.stat(path)? else {
            return Err(Outcome::Skipped("the file to patch is gone".into()));
        };
        if found.kind != NodeKind::File {
            return Err(Outcome::Skipped(format!("expected a file to patch, found a {:?}", found.kind)));
        }
        let resumed = self.journal.was_started(index);
        if !resumed && found.size != target_size && found.size != source.size {
            return Err(Outcome::Skipped(format!("the file is {} bytes, the plan expected {target_size}", found.size)));
        }
        let reader = self.root.open_read(path.as_bytes()).map_err(failed)?;
        let mut todo = Vec::new();
        for chunk in chunks {
            let new_range = self.chunk.chunk_range(chunk.index, source.size);
            let now_range = self.chunk.chunk_range(chunk.index, found.size);
            let now = (now_range.length > 0).then(|| range_cv(&reader, now_range)).transpose().map_err(failed)?;
            let old_range = self.chunk.chunk_range(chunk.index, target_size);
            let is_new = now_range == new_range && now == Some(chunk.new.0);
            let is_old = now_range == old_range && now == chunk.old.map(|h| h.0);
            if is_new {
                continue;
            }
            if !(is_old || resumed) {
                return Err(Outcome::Skipped(format!(
                    "chunk {} ({}+{}) changed since the plan was made",
                    chunk.index, now_range.offset, now_range.length
                )));
            }
            todo.push(*chunk);
        }
        let complete = todo.is_empty() && found.size == source.size;
        if !complete {
            self.journal.start(index).map_err(Outcome::Failed)?;
            let writer = self.root.open_write(path.as_bytes()).map_err(failed)?;
            for chunk in &todo {
                self.patch_chunk(index, path, &writer, chunk, source.size)?;
            }
            if found.size != source.size {
                writer.set_len(source.size).map_err(failed)?;
            }
            writer.sync_all().map_err(failed)?;
        }
        let outcome = self.verify(path, source)?;
        self.set_attrs(path, NodeKind::File, attrs)?;
        Ok(if complete { Outcome::AlreadyDone } else { outcome })
    }

    /// Reads one source chunk, checks it against the plan, and writes it in place.
    fn patch_chunk(&mut self, index: usize, path: &RelPath, writer: &File, chunk: &PatchChunk, size: u64) -> Step<()> {
        let range = self.chunk.chunk_range(chunk.index, size);
        let mut data = Vec::with_capacity(range.length as usize);
        self.source.read(index, path, range, &mut |piece| data.extend_from_slice(piece)).map_err(Outcome::Skipped)?;
        if chunk_cv(&data, range.offset) != chunk.new.0 {
            return Err(Outcome::Skipped(format!(
                "source chunk {} changed since the plan was made (file partly patched; re-plan)",
                chunk.index
            )));
        }
        let mut done = 0;
        while done < data.len() {
            done += rustix::io::pwrite(writer, &data[done..], range.offset + done as u64).map_err(failed)?;
        }
        self.report.bytes_copied += range.length;
        Ok(())
    }

    fn symlink(
        &mut self,
        path: &RelPath,
        link: &str,
        link_bytes: Option<&str>,
        replaces: Option<&str>,
        attrs: &Attrs,
    ) -> Step<Outcome> {
        let link = match link_bytes {
            Some(b64) => {
                use base64::Engine as _;
                base64::engine::general_purpose::STANDARD.decode(b64).map_err(|e| failed(format!("link_bytes: {e}")))?
            }
            None => link.as_bytes().to_vec(),
        };
        match self.stat(path)? {
            Some(found) if found.kind == NodeKind::Symlink => {
                let now = self.root.read_link(path.as_bytes()).map_err(failed)?;
                if now == link {
                    self.set_attrs(path, NodeKind::Symlink, attrs)?;
                    return Ok(Outcome::AlreadyDone);
                }
                if replaces.map(str::as_bytes) != Some(&now[..]) {
                    return Err(Outcome::Skipped("the symlink changed since the plan was made".into()));
                }
            }
            None if replaces.is_none() => {}
            None => return Err(Outcome::Skipped("the symlink to replace is gone".into())),
            Some(found) => return Err(Outcome::Skipped(format!("a {:?} is in the way", found.kind))),
        }
        let tmp = self.root.symlink_temp(&link, path.as_bytes()).map_err(failed)?;
        let placed = self.set_attrs_at(&tmp, NodeKind::Symlink, attrs).and_then(|()| {
            self.root.rename(&tmp, path.as_bytes()).map_err(failed)?;
            self.root.sync_parent(path.as_bytes()).map_err(failed)
        });
        if let Err(outcome) = placed {
            let _ = self.root.remove_file(&tmp);
            return Err(outcome);
        }
        Ok(Outcome::Done)
    }

    fn meta(&mut self, path: &RelPath, kind: Kind, wanted: Wanted, xattrs: Option<&[Xattr]>) -> Step<Outcome> {
        let found = match self.stat(path)? {
            Some(found) if found.kind == node_kind(kind) => found,
            Some(found) => return Err(Outcome::Skipped(format!("expected a {kind}, found a {:?}", found.kind))),
            None => return Err(Outcome::Skipped("the entry is gone".into())),
        };
        let rel = path.as_bytes();
        let owner = wanted.owner.filter(|_| is_root());
        let mode = wanted.mode.filter(|_| kind != Kind::Symlink);
        let xattrs = match xattrs.filter(|_| matches!(kind, Kind::File | Kind::Dir)) {
            Some(list) => Some(Xattr::decode(list).map_err(Outcome::Failed)?),
            None => None,
        };
        let xattrs_hold = match &xattrs {
            Some(desired) => self.root.xattrs(rel).map_err(failed)?.map(|x| *x).unwrap_or_default() == *desired,
            None => true,
        };
        let holds = owner.is_none_or(|o| o == (found.uid, found.gid))
            && mode.is_none_or(|m| m == found.mode)
            && wanted.mtime.is_none_or(|t| t == (found.mtime_sec, found.mtime_nsec))
            && xattrs_hold;
        if holds {
            return Ok(Outcome::AlreadyDone);
        }
        if let Some((uid, gid)) = owner {
            self.root.set_owner(rel, uid, gid).map_err(failed)?;
        }
        if let Some(mode) = mode {
            self.root.set_mode(rel, mode).map_err(failed)?;
        }
        if let Some(desired) = &xattrs {
            self.root.set_xattrs(rel, desired).map_err(failed)?;
        }
        if let Some((sec, nsec)) = wanted.mtime {
            self.root.set_mtime(rel, sec, nsec).map_err(failed)?;
        }
        Ok(Outcome::Done)
    }

    fn set_attrs(&mut self, path: &RelPath, kind: NodeKind, attrs: &Attrs) -> Step<()> {
        self.set_attrs_at(path.as_bytes(), kind, attrs)
    }

    /// Owner first: chown clears the setuid and setgid bits the mode then restores.
    fn set_attrs_at(&self, rel: &[u8], kind: NodeKind, attrs: &Attrs) -> Step<()> {
        if is_root() {
            self.root.set_owner(rel, attrs.uid, attrs.gid).map_err(failed)?;
        }
        if kind != NodeKind::Symlink {
            self.root.set_mode(rel, attrs.mode).map_err(failed)?;
        }
        if let (Some(list), NodeKind::File | NodeKind::Dir) = (&attrs.xattrs, kind) {
            let desired = Xattr::decode(list).map_err(Outcome::Failed)?;
            self.root.set_xattrs(rel, &desired).map_err(failed)?;
        }
        self.root.set_mtime(rel, attrs.mtime.sec, attrs.mtime.nsec).map_err(failed)
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

fn chunk_cv(data: &[u8], offset: u64) -> Digest {
    let mut hasher = blake3::Hasher::new();
    hasher.set_input_offset(offset);
    hasher.update(data);
    Digest(hasher.finalize_non_root())
}
