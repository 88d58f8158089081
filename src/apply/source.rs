//! Where `apply` gets the bytes it writes: the source directory, or a bundle made from it on
//! another host. Either way every piece is checked against a hash from the plan before it is
//! written.

use std::io::{BufRead, Read, Write};

use crate::digest::{ByteRange, ChunkSize, Digest};
use crate::path::RelPath;

use super::target::TargetRoot;

/// A source of file bytes for the operations of a plan.
pub trait SourceData {
    /// Hands the bytes of `range` of the source file `path` (operation `op` of the plan) to
    /// `sink`, in one or more pieces.
    fn read(&mut self, op: usize, path: &RelPath, range: ByteRange, sink: &mut dyn FnMut(&[u8])) -> Result<(), String>;

    /// The source file as it is now, to check before and after reading it that it is still the
    /// file the plan saw; `None` when there is no file to look at (a bundle).
    fn stamp(&mut self, _path: &RelPath) -> Result<Option<SourceStamp>, String> {
        Ok(None)
    }

    /// True when the same bytes can be read again, so a patch can check every source chunk
    /// before it writes the first one (a bundle is a stream, read once).
    fn rereadable(&self) -> bool {
        false
    }

    /// True when the source is a directory that contains `target` or lies inside it: writing the
    /// target would then write the source.
    fn overlaps(&self, _target: &std::path::Path) -> bool {
        false
    }

    /// True when the source is a directory that holds nothing: a plan that deletes must not run
    /// against an empty or unmounted source.
    fn looks_empty(&self) -> bool {
        false
    }
}

/// What shows that a source file changed: a change of content moves its ctime, a replacement
/// its inode, a growth its size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourceStamp {
    pub size: u64,
    pub mtime: (i64, u32),
    pub ctime: (i64, u32),
    pub inode: (u64, u64),
}

/// The source tree itself, opened read-only; symlinks inside it are never followed.
#[derive(Debug)]
pub struct DirSource {
    root: TargetRoot,
    path: std::path::PathBuf,
    buffer: Vec<u8>,
    /// The file the last read was from (operation, path): a file is opened once per operation,
    /// not once per chunk.
    open: Option<(usize, RelPath, std::fs::File)>,
}

impl DirSource {
    pub fn open(root_path: &std::path::Path) -> Result<Self, String> {
        let root = TargetRoot::open_source(root_path).map_err(|e| format!("source {e}"))?;
        Ok(DirSource { root, path: root_path.to_path_buf(), buffer: vec![0; 1 << 20], open: None })
    }

    /// Opens the source file `path` for operation `op` (never through a symlink), unless the
    /// previous read already did.
    fn open_for(&mut self, op: usize, path: &RelPath) -> Result<(), String> {
        if !self.open.as_ref().is_some_and(|(o, p, _)| *o == op && p == path) {
            self.open = None;
            let file = self.root.open_read(path.as_bytes()).map_err(|e| format!("source {e}"))?;
            self.open = Some((op, path.clone(), file));
        }
        Ok(())
    }
}

impl SourceData for DirSource {
    fn read(&mut self, op: usize, path: &RelPath, range: ByteRange, sink: &mut dyn FnMut(&[u8])) -> Result<(), String> {
        self.open_for(op, path)?;
        let Some((_, _, file)) = &self.open else { return Err(format!("source {}: not open", path.display())) };
        let mut offset = range.offset;
        while offset < range.end() {
            let want = (range.end() - offset).min(self.buffer.len() as u64) as usize;
            let n = rustix::io::pread(file, &mut self.buffer[..want], offset)
                .map_err(|e| format!("source {}: read error: {e}", path.display()))?;
            if n == 0 {
                return Err(format!("source {} ended at byte {offset}: it changed since the plan", path.display()));
            }
            sink(&self.buffer[..n]);
            offset += n as u64;
        }
        Ok(())
    }

    // The `struct stat` field widths differ between architectures.
    #[allow(clippy::unnecessary_cast)]
    fn stamp(&mut self, path: &RelPath) -> Result<Option<SourceStamp>, String> {
        let file = self.root.open_read(path.as_bytes()).map_err(|e| format!("source {e}"))?;
        let st = rustix::fs::fstat(&file).map_err(|e| format!("source {}: {e}", path.display()))?;
        Ok(Some(SourceStamp {
            size: st.st_size as u64,
            mtime: (st.st_mtime as i64, st.st_mtime_nsec as u32),
            ctime: (st.st_ctime as i64, st.st_ctime_nsec as u32),
            inode: (st.st_dev as u64, st.st_ino as u64),
        }))
    }

    fn looks_empty(&self) -> bool {
        self.root.is_empty_dir().unwrap_or(false)
    }

    fn rereadable(&self) -> bool {
        true
    }

    fn overlaps(&self, target: &std::path::Path) -> bool {
        roots_overlap(&self.path, target)
    }
}

impl DirSource {
    /// Bytes of `ranges` of the source file `path` that are holes (`SEEK_DATA`/`SEEK_HOLE`);
    /// 0 where the filesystem cannot tell.
    pub fn holes(&self, path: &RelPath, ranges: impl Iterator<Item = ByteRange>) -> Result<u64, String> {
        use rustix::fs::{SeekFrom, seek};
        let file = self.root.open_read(path.as_bytes()).map_err(|e| format!("source {e}"))?;
        let mut holes = 0;
        for range in ranges {
            let mut at = range.offset;
            while at < range.end() {
                let data = match seek(&file, SeekFrom::Data(at)) {
                    Ok(data) => data.min(range.end()),
                    // No data from here to the end of the file.
                    Err(rustix::io::Errno::NXIO) => range.end(),
                    Err(_) => return Ok(0),
                };
                holes += data - at;
                if data >= range.end() {
                    break;
                }
                at = seek(&file, SeekFrom::Hole(data)).map_err(|e| format!("source {}: {e}", path.display()))?;
            }
        }
        Ok(holes)
    }
}

/// Records in a copy or patch how much of what it reads is holes in the source now, so
/// `totals.copy_bytes` counts data only. Holes are not written (see `sparse`); apply never
/// relies on this count. A file that cannot be opened now counts none. Called on each
/// operation as the plan is written.
pub fn record_holes(op: &mut crate::plan::Operation, chunk: ChunkSize, source: &DirSource) {
    use crate::plan::Operation;
    let Ok(path) = op.rel() else { return };
    let counted = match op {
        Operation::Copy { source: state, holes, .. } => {
            (holes, source.holes(&path, std::iter::once(ByteRange { offset: 0, length: state.size })))
        }
        Operation::Patch { source: state, chunks, holes, .. } => {
            let size = state.size;
            (holes, source.holes(&path, chunks.iter().map(|c| chunk.chunk_range(c.index, size))))
        }
        _ => return,
    };
    *counted.0 = counted.1.unwrap_or(0);
}

/// True when one directory is the other or lies inside it, or either shows the other (or a
/// directory above it) through a mount point inside it. Compared by device and inode of each
/// directory and its ancestors, so a second view of the same tree (a bind mount of the source
/// at the target, or anywhere inside it, or the reverse) counts, not only paths that resolve to
/// one another.
pub fn roots_overlap(a: &std::path::Path, b: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let lineage = |path: &std::path::Path| -> Option<(std::path::PathBuf, Vec<super::mounts::Identity>)> {
        let path = std::fs::canonicalize(path).ok()?;
        let ids = path.ancestors().filter_map(|dir| std::fs::metadata(dir).ok()).map(|m| (m.dev(), m.ino())).collect();
        Some((path, ids))
    };
    let (Some((path_a, a)), Some((path_b, b))) = (lineage(a), lineage(b)) else { return false };
    match (a.first(), b.first()) {
        (Some(root_a), Some(root_b)) if b.contains(root_a) || a.contains(root_b) => true,
        (Some(_), Some(_)) => {
            super::mounts::shows_inside(&path_a, &b)
                || super::mounts::shows_inside(&path_b, &a)
                || super::mounts::shows_part_of(&path_a, &path_b)
                || super::mounts::shows_part_of(&path_b, &path_a)
        }
        _ => false,
    }
}

/// The format identifier of bundles.
pub const BUNDLE_FORMAT: &str = "cutover-bundle/1";

/// The header line of a bundle.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct BundleHeader {
    pub format: String,
    /// The id of the plan the bundle was made for (see `plan_id`).
    pub plan: String,
    pub chunk_size: u64,
}

/// The line before each piece of data in a bundle.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct RecordHeader {
    pub op: usize,
    pub offset: u64,
    pub length: u64,
    /// BLAKE3 of the `length` bytes that follow the line.
    pub hash: String,
}

/// The longest header line a bundle may have; anything longer is corruption.
const MAX_LINE: u64 = 4096;

/// One `\n`-terminated line of at most [`MAX_LINE`] bytes.
fn read_line(input: &mut impl BufRead) -> Result<Vec<u8>, String> {
    let mut line = Vec::new();
    input.take(MAX_LINE).read_until(b'\n', &mut line).map_err(|e| e.to_string())?;
    match line.last() {
        Some(b'\n') => Ok(line),
        _ if line.len() as u64 >= MAX_LINE => {
            Err(format!("corrupt bundle: a header line longer than {MAX_LINE} bytes"))
        }
        _ => Err("truncated bundle (it ends before its end line)".into()),
    }
}

/// A bundle read as a stream, in plan order; pieces `apply` does not ask for are skipped.
#[derive(Debug)]
pub struct BundleSource<R> {
    input: R,
    name: String,
    max_piece: u64,
    pending: Option<RecordHeader>,
    ended: bool,
}

impl<R: BufRead> BundleSource<R> {
    /// Reads the header and checks the bundle belongs to the plan with id `plan_id`.
    pub fn open(mut input: R, name: &str, plan_id: &str, chunk: ChunkSize) -> Result<Self, String> {
        let line = read_line(&mut input).map_err(|e| format!("{name}: {e}"))?;
        let header: BundleHeader =
            serde_json::from_slice(&line).map_err(|e| format!("{name}: not a cutover bundle: {e}"))?;
        if header.format != BUNDLE_FORMAT {
            return Err(format!("{name}: bundle format '{}' is not supported ({BUNDLE_FORMAT})", header.format));
        }
        if header.plan != plan_id {
            return Err(format!(
                "{name}: this bundle was made for another plan ({}), not this one ({plan_id})",
                header.plan
            ));
        }
        if header.chunk_size != chunk.bytes() {
            return Err(format!(
                "{name}: the bundle's chunk size {} is not the plan's {}",
                header.chunk_size,
                chunk.bytes()
            ));
        }
        Ok(BundleSource { input, name: name.to_string(), max_piece: chunk.bytes(), pending: None, ended: false })
    }

    fn next_header(&mut self) -> Result<Option<RecordHeader>, String> {
        if let Some(header) = self.pending.take() {
            return Ok(Some(header));
        }
        if self.ended {
            return Ok(None);
        }
        let line = read_line(&mut self.input).map_err(|e| format!("{}: {e}", self.name))?;
        if let Ok(end) = serde_json::from_slice::<serde_json::Value>(&line)
            && end.get("end").is_some()
        {
            if end != serde_json::json!({"end": true}) {
                return Err(format!("{}: corrupt bundle: a bad end line", self.name));
            }
            self.ended = true;
            return Ok(None);
        }
        let header: RecordHeader =
            serde_json::from_slice(&line).map_err(|e| format!("{}: corrupt record header: {e}", self.name))?;
        if header.length > self.max_piece {
            return Err(format!("{}: record of {} bytes exceeds the chunk size", self.name, header.length));
        }
        Ok(Some(header))
    }

    fn payload(&mut self, length: u64) -> Result<Vec<u8>, String> {
        let mut data = vec![0; length as usize];
        self.input.read_exact(&mut data).map_err(|e| format!("{}: truncated bundle: {e}", self.name))?;
        Ok(data)
    }
}

impl<R: BufRead + std::fmt::Debug> SourceData for BundleSource<R> {
    fn read(&mut self, op: usize, path: &RelPath, range: ByteRange, sink: &mut dyn FnMut(&[u8])) -> Result<(), String> {
        let mut offset = range.offset;
        while offset < range.end() {
            let Some(header) = self.next_header()? else {
                return Err(format!("{}: no data for {} at byte {offset}", self.name, path.display()));
            };
            if (header.op, header.offset) < (op, offset) {
                self.payload(header.length)?;
                continue;
            }
            if (header.op, header.offset) != (op, offset) || header.offset + header.length > range.end() {
                let found = (header.op, header.offset);
                self.pending = Some(header);
                return Err(format!(
                    "{}: no data for {} at byte {offset} (next record: op {} byte {})",
                    self.name,
                    path.display(),
                    found.0,
                    found.1
                ));
            }
            let data = self.payload(header.length)?;
            if blake3::hash(&data).to_hex().as_str() != header.hash {
                return Err(format!(
                    "{}: bytes {}..{} of {} do not match their hash: corrupt bundle",
                    self.name,
                    offset,
                    offset + header.length,
                    path.display()
                ));
            }
            sink(&data);
            offset += header.length;
        }
        Ok(())
    }
}

/// Writes a bundle holding every piece of source data `plan` needs, each with its hash;
/// returns the number of data bytes. Every byte is checked against the plan before it is
/// shipped, as `apply` will check it: a patch chunk against its `new` CV, a whole file against
/// its root hash (read once to check, then again to write, each chunk matching the first
/// read), and the source file's size and mtime against the plan. A changed source stops the
/// bundle with an error before the first record of that file, so nothing `apply` would
/// refuse is written.
pub fn write_bundle(
    plan: &crate::plan::CheckedPlan,
    source: &mut dyn SourceData,
    mut out: impl Write,
) -> Result<u64, String> {
    use crate::plan::Operation;
    let chunk = ChunkSize::new(plan.head.chunk_size)?;
    let io = |e: std::io::Error| format!("writing the bundle: {e}");
    let header = BundleHeader { format: BUNDLE_FORMAT.into(), plan: plan.id.clone(), chunk_size: chunk.bytes() };
    serde_json::to_writer(&mut out, &header).map_err(|e| e.to_string())?;
    out.write_all(b"\n").map_err(io)?;
    let mut total = 0;
    let mut data = Vec::new();
    for (op, operation) in plan.operations().enumerate() {
        let operation = &operation.map_err(|e| e.to_string())?;
        // Each piece with what it must hash to: a CV for a patch chunk, a plain hash for a
        // chunk of a checked whole file.
        let (size, mtime, expected): (u64, _, Vec<(ByteRange, Expected)>) = match operation {
            Operation::Copy { source: state, attrs, .. } => {
                let path = operation.rel()?;
                let cvs = whole_file_cvs(source, op, &path, state, chunk)?;
                (state.size, attrs.mtime, cvs)
            }
            Operation::Patch { source: state, chunks, attrs, source_stamp, .. } => {
                let path = operation.rel()?;
                let now = source.stamp(&path)?;
                if !still_whole(source, op, &path, state, source_stamp.as_ref(), now)? {
                    return Err(changed(&path));
                }
                let cvs =
                    chunks.iter().map(|c| (chunk.chunk_range(c.index, state.size), Expected::Cv(c.new.0))).collect();
                (state.size, attrs.mtime, cvs)
            }
            _ => continue,
        };
        let path = operation.rel()?;
        let before = source.stamp(&path)?;
        if let Some(now) = before
            && (now.size != size || now.mtime != (mtime.sec, mtime.nsec))
        {
            return Err(changed(&path));
        }
        for (range, expected) in expected {
            data.clear();
            source.read(op, &path, range, &mut |piece| data.extend_from_slice(piece))?;
            let right = match expected {
                Expected::Cv(cv) => super::ops::chunk_cv(&data, range.offset) == cv,
                Expected::Hash(hash) => Digest::from(blake3::hash(&data)) == hash,
            };
            if !right {
                return Err(changed(&path));
            }
            let record = RecordHeader {
                op,
                offset: range.offset,
                length: range.length,
                hash: blake3::hash(&data).to_hex().to_string(),
            };
            serde_json::to_writer(&mut out, &record).map_err(|e| e.to_string())?;
            out.write_all(b"\n").map_err(io)?;
            out.write_all(&data).map_err(io)?;
            total += range.length;
        }
        if before.is_some() && source.stamp(&path)? != before {
            return Err(changed(&path));
        }
    }
    out.write_all(b"{\"end\":true}\n").map_err(io)?;
    out.flush().map_err(io)?;
    Ok(total)
}

/// Whether a patch's source file is still, whole, the file the plan hashed. A patch reads only
/// its listed chunks, so an edit elsewhere in the file with its mtime put back would pass every
/// chunk check. The same device, inode and ctime as at the scan show that it was not written
/// since; otherwise (or when the plan has no stamp) the whole file is read and hashed. `now`
/// is `None` for a bundle: its writer checked the source when it read it.
pub fn still_whole(
    source: &mut dyn SourceData,
    op: usize,
    path: &RelPath,
    state: &crate::plan::FileState,
    planned: Option<&crate::plan::SourceStamp>,
    now: Option<SourceStamp>,
) -> Result<bool, String> {
    let Some(now) = now else { return Ok(true) };
    if planned.is_some_and(|p| (p.dev, p.ino) == now.inode && (p.ctime.sec, p.ctime.nsec) == now.ctime) {
        return Ok(true);
    }
    let mut hasher = blake3::Hasher::new();
    source.read(op, path, ByteRange { offset: 0, length: state.size }, &mut |piece| {
        hasher.update(piece);
    })?;
    Ok(Digest::from(hasher.finalize()) == state.hash.0)
}

fn changed(path: &RelPath) -> String {
    format!(
        "source {}: changed since the plan was made, so apply would refuse its bytes; no bundle written past it (make a new plan)",
        path.display()
    )
}

/// What a bundle piece must hash to.
enum Expected {
    Cv(Digest),
    Hash(Digest),
}

/// The chunk ranges of a whole-file copy with the hashes of their bytes now, after checking
/// that together they are the file the plan names (its root hash).
fn whole_file_cvs(
    source: &mut dyn SourceData,
    op: usize,
    path: &RelPath,
    state: &crate::plan::FileState,
    chunk: ChunkSize,
) -> Result<Vec<(ByteRange, Expected)>, String> {
    let mut hasher = blake3::Hasher::new();
    let mut cvs = Vec::new();
    let mut data = Vec::new();
    for i in 0..chunk.chunks_in(state.size) {
        let range = chunk.chunk_range(i, state.size);
        data.clear();
        source.read(op, path, range, &mut |piece| data.extend_from_slice(piece))?;
        hasher.update(&data);
        cvs.push((range, Expected::Hash(Digest::from(blake3::hash(&data)))));
    }
    if Digest::from(hasher.finalize()) != state.hash.0 {
        return Err(changed(path));
    }
    Ok(cvs)
}
