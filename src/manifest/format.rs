//! The manifest byte format (docs/manifest.md): a magic line, a JSON header line, one binary
//! record per entry with the path prefix-compressed against the previous one, and an end record
//! with the entry count and a BLAKE3 checksum of everything before it.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use super::{Entry, Header, Kind, Manifest, MetaSet, Mtime, Problem, Stamp};
use crate::digest::{ChunkSize, Digest};
use crate::path::RelPath;

/// First line of every manifest; the number is the format version.
pub const MAGIC: &[u8] = b"cutover-manifest/1\n";
pub(super) const TAG_ENTRY: u8 = 1;
const TAG_END: u8 = 0;
const FLAG_DIGEST: u8 = 1;
const FLAG_UNREADABLE: u8 = 2;
const FLAG_UNSTABLE: u8 = 4;
const FLAG_XATTRS: u8 = 8;
const FLAG_NOT_ENTERED: u8 = 16;
const FLAG_HOLDS_EXCLUDED: u8 = 32;
const FLAG_HARD_LINK: u8 = 64;
/// Header `metadata` names of what this version records besides the selectable fields.
const HARD_LINKS: &str = "hardlinks";
const RDEV: &str = "rdev";
const STAMP: &str = "stamp";
const MAX_HEADER: usize = 1 << 20;
/// More chunk CVs than a 1 EiB file at the minimum chunk size has is corruption.
const MAX_CHUNKS: u64 = 1 << 40;

/// A manifest that cannot be read, with the file and where it broke.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{file}: {cause}")]
    Io { file: String, cause: io::Error },
    #[error("{file}: not a cutover manifest (no '{}' line at the start)", String::from_utf8_lossy(&MAGIC[..MAGIC.len() - 1]))]
    NotAManifest { file: String },
    #[error("{file}: manifest format '{found}' is not supported by this cutover (it reads cutover-manifest/1)")]
    WrongVersion { file: String, found: String },
    #[error("{file}: corrupt manifest at byte {offset}: {what}")]
    Corrupt { file: String, offset: u64, what: String },
    #[error("{file}: truncated manifest: it ends at byte {offset} without its end record")]
    Truncated { file: String, offset: u64 },
    #[error("{file}: manifest checksum mismatch: the file was altered or damaged after it was written")]
    Checksum { file: String },
    #[error("{file}: inconsistent manifest at entry {}: {what}", crate::path::Quoted(.path))]
    Inconsistent { file: String, path: String, what: String },
}

#[derive(serde::Serialize, serde::Deserialize)]
struct HeaderJson {
    tool: String,
    chunk_size: u64,
    metadata: Vec<String>,
    root: String,
    started: String,
    finished: String,
    entries: u64,
    /// Exclude patterns the scan applied; left out when there were none, so such manifests are
    /// byte for byte what earlier versions wrote.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    exclude: Vec<String>,
    /// Written only when true, for the same reason.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    one_file_system: bool,
    /// Outer `None`: the field is left out (allowed); `Some(None)`: `null`, the root has no digest.
    #[serde(default, deserialize_with = "present")]
    root_hash: Option<Option<String>>,
    /// The scrub slice this scan re-read, as `[slice, of]`; left out when it did not scrub.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    scrub: Option<(u64, u64)>,
    /// On a part of a sharded scan only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    shard: Option<ShardJson>,
}

/// A part's place in a sharded scan: shard `index` (1-based) of `count`, owned by `owner`.
#[derive(serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ShardJson {
    index: u32,
    count: u32,
    owner: String,
}

/// Deserializes a field that is there, `null` or not, as `Some`; a missing one stays `None`.
fn present<'de, D: serde::Deserializer<'de>>(field: D) -> Result<Option<Option<String>>, D::Error> {
    serde::Deserialize::deserialize(field).map(Some)
}

/// Writes `manifest` to `out`, returning the number of bytes written.
pub fn write_manifest(manifest: &Manifest, out: impl Write) -> io::Result<u64> {
    let mut out = HashingWriter::new(out);
    let count = manifest.entries.len() as u64;
    write_head(&mut out, &manifest.header, count, manifest.root_digest())?;
    let mut previous: &[u8] = &[];
    let mut record = Vec::with_capacity(256);
    for entry in &manifest.entries {
        record.clear();
        let first = entry
            .hard_link()
            .and_then(|first| manifest.entries.binary_search_by(|e| e.path.cmp(first)).ok().map(|index| index as u64));
        encode_record(&mut record, &manifest.header, entry, previous, first);
        out.write_all(&record)?;
        previous = entry.path.as_bytes();
    }
    write_end(out, count)
}

/// The magic line and the header line of a manifest of `entries` entries whose root directory
/// has the digest `root`.
pub(super) fn write_head<W: Write>(
    out: &mut HashingWriter<W>,
    header: &Header,
    entries: u64,
    root: Option<Digest>,
) -> io::Result<()> {
    out.write_all(MAGIC)?;
    let json = HeaderJson {
        tool: header.tool.clone(),
        chunk_size: header.chunk_size.bytes(),
        metadata: metadata_names(header),
        root: header.root.clone(),
        started: header.started.clone(),
        finished: header.finished.clone(),
        entries,
        exclude: header.exclude.texts(),
        one_file_system: header.one_file_system,
        root_hash: Some(root.map(Digest::to_hex)),
        scrub: header.scrub,
        shard: header.shard.map(|shard| ShardJson {
            index: shard.index(),
            count: shard.count(),
            owner: crate::shard::OWNER_RULE.into(),
        }),
    };
    serde_json::to_writer(&mut *out, &json)?;
    out.write_all(b"\n")
}

/// The entry record of `entry` in a manifest with `header`, after the path `previous`; `first`
/// is the index of the first name of its inode when it is a hard link.
pub(super) fn encode_record(buf: &mut Vec<u8>, header: &Header, entry: &Entry, previous: &[u8], first: Option<u64>) {
    let first = first.filter(|_| header.hard_links);
    let rdev = matches!(entry.kind, Kind::CharDevice | Kind::BlockDevice)
        .then_some(entry.rdev().unwrap_or_default())
        .filter(|_| header.rdev);
    let stamp = (entry.kind == Kind::File && header.stamps).then(|| entry.stamp.unwrap_or_default());
    encode_entry(buf, entry, previous, first, rdev, stamp);
}

/// The end record after `count` entries; gives the number of bytes written in all.
pub(super) fn write_end<W: Write>(mut out: HashingWriter<W>, count: u64) -> io::Result<u64> {
    out.write_all(&[TAG_END])?;
    out.write_all(&count.to_le_bytes())?;
    let checksum = *out.hasher.finalize().as_bytes();
    out.inner.write_all(&checksum)?;
    out.inner.flush()?;
    Ok(out.written + 32)
}

/// The header's `metadata` list: the selectable fields recorded, then `hardlinks` and `rdev`
/// when those were recorded.
fn metadata_names(header: &Header) -> Vec<String> {
    let mut names: Vec<String> = header.metadata.names().into_iter().map(String::from).collect();
    if header.hard_links {
        names.push(HARD_LINKS.into());
    }
    if header.rdev {
        names.push(RDEV.into());
    }
    if header.stamps {
        names.push(STAMP.into());
    }
    names
}

/// One entry record; `first` is the index of the first name of a hard-linked entry's inode,
/// `rdev` the device number of a device and `stamp` that of a file when the manifest records them.
fn encode_entry(
    buf: &mut Vec<u8>,
    entry: &Entry,
    previous: &[u8],
    first: Option<u64>,
    rdev: Option<(u32, u32)>,
    stamp: Option<Stamp>,
) {
    let path = entry.path.as_bytes();
    let shared = path.iter().zip(previous).take_while(|(a, b)| a == b).count();
    buf.push(TAG_ENTRY);
    put_varint(buf, shared as u64);
    put_varint(buf, (path.len() - shared) as u64);
    buf.extend_from_slice(&path[shared..]);
    buf.push(entry.kind.code());
    let mut flags = 0;
    if entry.digest.is_some() {
        flags |= FLAG_DIGEST;
    }
    match entry.problem.as_deref() {
        Some(Problem::Unreadable(_)) => flags |= FLAG_UNREADABLE,
        Some(Problem::Unstable(_)) => flags |= FLAG_UNSTABLE,
        None => {}
    }
    if entry.xattrs.is_some() {
        flags |= FLAG_XATTRS;
    }
    if entry.not_entered {
        flags |= FLAG_NOT_ENTERED;
    }
    if entry.holds_excluded {
        flags |= FLAG_HOLDS_EXCLUDED;
    }
    if first.is_some() {
        flags |= FLAG_HARD_LINK;
    }
    buf.push(flags);
    put_varint(buf, entry.size);
    put_varint(buf, u64::from(entry.mode));
    put_varint(buf, ((entry.mtime.sec << 1) ^ (entry.mtime.sec >> 63)) as u64);
    put_varint(buf, u64::from(entry.mtime.nsec));
    put_varint(buf, u64::from(entry.uid));
    put_varint(buf, u64::from(entry.gid));
    if let Some(digest) = entry.digest {
        buf.extend_from_slice(&digest.0);
    }
    match entry.kind {
        Kind::Symlink => {
            let link = entry.link.as_deref().unwrap_or_default();
            put_varint(buf, link.len() as u64);
            buf.extend_from_slice(link);
        }
        Kind::File => {
            put_varint(buf, entry.chunks.len() as u64);
            for cv in &entry.chunks {
                buf.extend_from_slice(&cv.0);
            }
        }
        _ => {}
    }
    if let Some((major, minor)) = rdev {
        put_varint(buf, u64::from(major));
        put_varint(buf, u64::from(minor));
    }
    if let Some(stamp) = stamp {
        put_varint(buf, stamp.dev);
        put_varint(buf, stamp.ino);
        put_varint(buf, ((stamp.ctime.sec << 1) ^ (stamp.ctime.sec >> 63)) as u64);
        put_varint(buf, u64::from(stamp.ctime.nsec));
    }
    if let Some(first) = first {
        put_varint(buf, first);
    }
    if let Some(xattrs) = entry.xattrs.as_deref() {
        put_varint(buf, xattrs.len() as u64);
        for (name, value) in xattrs {
            put_varint(buf, name.len() as u64);
            buf.extend_from_slice(name);
            put_varint(buf, value.len() as u64);
            buf.extend_from_slice(value);
        }
    }
    if let Some(problem) = entry.problem.as_deref() {
        let (Problem::Unreadable(why) | Problem::Unstable(why)) = problem;
        put_varint(buf, why.len() as u64);
        buf.extend_from_slice(why.as_bytes());
    }
}

fn put_varint(buf: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        buf.push((value as u8) | 0x80);
        value >>= 7;
    }
    buf.push(value as u8);
}

/// Reads and verifies the manifest at `path`.
pub fn read_manifest(path: &Path) -> Result<Manifest, ManifestError> {
    let file =
        std::fs::File::open(path).map_err(|cause| ManifestError::Io { file: path.display().to_string(), cause })?;
    read_manifest_from(file, path)
}

/// Reads and verifies a manifest from `input`; `name` is used in error messages only.
pub fn read_manifest_from(input: impl Read, name: &Path) -> Result<Manifest, ManifestError> {
    let mut reader = Reader {
        input: BufReader::with_capacity(1 << 16, input),
        hasher: blake3::Hasher::new(),
        offset: 0,
        file: name.to_path_buf(),
    };
    reader.read_all()
}

/// Writes through a buffer, hashing what passes for the end record's checksum.
pub(super) struct HashingWriter<W: Write> {
    inner: io::BufWriter<W>,
    hasher: blake3::Hasher,
    written: u64,
}

impl<W: Write> HashingWriter<W> {
    pub(super) fn new(out: W) -> Self {
        HashingWriter { inner: io::BufWriter::with_capacity(1 << 16, out), hasher: blake3::Hasher::new(), written: 0 }
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// What the start of a manifest says: its header, the entry count the header announces and the
/// header's `root_hash` as written (outer `None`: left out).
pub(super) type Start = (Header, u64, Option<Option<String>>);

pub(super) const ROOT_HASH_MISMATCH: &str = "the header's root_hash is not the root directory's hash";

pub(super) struct Reader<R: Read> {
    pub(super) input: BufReader<R>,
    pub(super) hasher: blake3::Hasher,
    pub(super) offset: u64,
    pub(super) file: PathBuf,
}

impl<R: Read> Reader<R> {
    fn name(&self) -> String {
        self.file.display().to_string()
    }

    pub(super) fn corrupt(&self, what: impl Into<String>) -> ManifestError {
        ManifestError::Corrupt { file: self.name(), offset: self.offset, what: what.into() }
    }

    fn io(&self, source: io::Error) -> ManifestError {
        ManifestError::Io { file: self.name(), cause: source }
    }

    /// Reads exactly `buf.len()` bytes, or reports truncation at the byte where the input ended.
    fn read_raw(&mut self, buf: &mut [u8]) -> Result<(), ManifestError> {
        let mut done = 0;
        while done < buf.len() {
            match self.input.read(&mut buf[done..]) {
                Ok(0) => {
                    return Err(ManifestError::Truncated { file: self.name(), offset: self.offset + done as u64 });
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.io(e)),
            }
        }
        self.offset += buf.len() as u64;
        Ok(())
    }

    /// [`Reader::read_raw`], adding the bytes to the checksum.
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), ManifestError> {
        self.read_raw(buf)?;
        self.hasher.update(buf);
        Ok(())
    }

    pub(super) fn byte(&mut self) -> Result<u8, ManifestError> {
        let mut b = [0u8];
        self.fill(&mut b)?;
        Ok(b[0])
    }

    fn bytes(&mut self, len: u64, limit: u64, what: &str) -> Result<Vec<u8>, ManifestError> {
        if len > limit {
            return Err(self.corrupt(format!("{what} of {len} bytes is implausibly long")));
        }
        let mut buf = vec![0u8; len as usize];
        self.fill(&mut buf)?;
        Ok(buf)
    }

    fn varint(&mut self) -> Result<u64, ManifestError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            if shift == 63 && b > 1 {
                return Err(self.corrupt("varint overflows 64 bits"));
            }
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                if b == 0 && shift > 0 {
                    return Err(self.corrupt("varint with a redundant trailing zero byte"));
                }
                return Ok(value);
            }
        }
        Err(self.corrupt("varint longer than 10 bytes"))
    }

    fn u32(&mut self, what: &str) -> Result<u32, ManifestError> {
        let v = self.varint()?;
        u32::try_from(v).map_err(|_| self.corrupt(format!("{what} {v} does not fit in 32 bits")))
    }

    fn digest(&mut self) -> Result<Digest, ManifestError> {
        let mut d = [0u8; 32];
        self.fill(&mut d)?;
        Ok(Digest(d))
    }

    /// The magic line and the header: the header, the entry count it announces and its
    /// `root_hash` field as written.
    pub(super) fn start(&mut self) -> Result<Start, ManifestError> {
        let mut line = Vec::new();
        let n = (&mut self.input).take(MAGIC.len() as u64).read_until(b'\n', &mut line).map_err(|e| self.io(e))?;
        if n == 0 || !line.starts_with(b"cutover-manifest/") {
            return Err(ManifestError::NotAManifest { file: self.name() });
        }
        if line.last() != Some(&b'\n') && MAGIC.starts_with(&line) {
            return Err(ManifestError::Truncated { file: self.name(), offset: line.len() as u64 });
        }
        if line.strip_prefix(&MAGIC[..MAGIC.len() - 1]) == Some(b"\r") {
            self.offset = MAGIC.len() as u64 - 1;
            return Err(self.corrupt("the magic line ends in \\r\\n: DOS line endings were put into this binary file"));
        }
        if line != MAGIC {
            let found = String::from_utf8_lossy(line.strip_suffix(b"\n").unwrap_or(&line)).into_owned();
            return Err(ManifestError::WrongVersion { file: self.name(), found });
        }
        self.hasher.update(&line);
        self.offset = line.len() as u64;
        self.read_header()
    }

    /// The next entry record, with the index of the entry it is a hard link to, or `None` at
    /// the end record. `last` is the previous entry's path (`None` before the first), which
    /// this one must sort after.
    pub(super) fn next_record(
        &mut self,
        last: Option<&RelPath>,
        header: &Header,
    ) -> Result<Option<(Entry, Option<u64>)>, ManifestError> {
        let record_start = self.offset;
        match self.byte()? {
            TAG_ENTRY => {
                let previous = last.map_or(&[][..], RelPath::as_bytes);
                let (entry, first) = self.read_entry(previous, header)?;
                if let Some(last) = last {
                    if entry.path <= *last {
                        self.offset = record_start;
                        return Err(self
                            .corrupt(format!("entry {} is out of order", crate::path::Quoted(&entry.path.display()))));
                    }
                } else if !entry.path.is_root() || entry.kind != Kind::Dir {
                    return Err(self.corrupt("the first entry must be the root directory"));
                }
                Ok(Some((entry, first)))
            }
            TAG_END => Ok(None),
            tag => {
                self.offset = record_start;
                Err(self.corrupt(format!("unknown record tag {tag}")))
            }
        }
    }

    /// The rest of the end record once its tag was read: the count and the checksum, then
    /// nothing. `held` entries were read; the header announced `expected`.
    pub(super) fn finish(&mut self, held: u64, expected: u64) -> Result<(), ManifestError> {
        let mut count = [0u8; 8];
        self.fill(&mut count)?;
        let count = u64::from_le_bytes(count);
        let computed = *self.hasher.finalize().as_bytes();
        let mut stored = [0u8; 32];
        self.read_raw(&mut stored)?;
        if computed != stored {
            return Err(ManifestError::Checksum { file: self.name() });
        }
        if count != held || count != expected {
            return Err(
                self.corrupt(format!("holds {held} entries; its end record says {count}, its header {expected}"))
            );
        }
        let mut rest = [0u8; 1];
        if self.input.read(&mut rest).map_err(|e| self.io(e))? != 0 {
            return Err(self.corrupt("bytes after the end record"));
        }
        if held == 0 {
            return Err(self.corrupt("no entries (not even the root directory)"));
        }
        Ok(())
    }

    pub(super) fn inconsistent(&self, path: String, what: String) -> ManifestError {
        ManifestError::Inconsistent { file: self.name(), path, what }
    }

    fn read_all(&mut self) -> Result<Manifest, ManifestError> {
        let (header, expected, root_hash) = self.start()?;
        // The header's count is not trusted with an allocation; the vector grows as records arrive.
        let mut entries: Vec<Entry> = Vec::with_capacity(expected.min(1 << 16) as usize);
        while let Some((mut entry, first)) = self.next_record(entries.last().map(|e| &e.path), &header)? {
            if let Some(first) = first {
                // The rest (kind, order) is checked with the whole tree, after the checksum.
                let Some(to) = entries.get(first as usize) else {
                    return Err(self.corrupt(format!("a hard link to entry {first}, not an earlier one")));
                };
                entry.set_hard_link(to.path.clone());
            }
            entries.push(entry);
        }
        self.finish(entries.len() as u64, expected)?;
        if root_hash.as_ref().is_some_and(|hash| *hash != entries[0].digest.map(Digest::to_hex)) {
            return Err(self.inconsistent(String::new(), ROOT_HASH_MISMATCH.into()));
        }
        super::check_tree(&entries).map_err(|(path, what)| self.inconsistent(path.display(), what))?;
        Ok(Manifest { header, entries })
    }

    fn read_header(&mut self) -> Result<Start, ManifestError> {
        let mut line = Vec::new();
        (&mut self.input).take(MAX_HEADER as u64).read_until(b'\n', &mut line).map_err(|e| self.io(e))?;
        if line.last() != Some(&b'\n') {
            return Err(if line.len() >= MAX_HEADER {
                self.corrupt("header line longer than 1 MiB")
            } else {
                ManifestError::Truncated { file: self.name(), offset: self.offset + line.len() as u64 }
            });
        }
        let json: HeaderJson = serde_json::from_slice(&line).map_err(|e| self.corrupt(format!("bad header: {e}")))?;
        self.hasher.update(&line);
        self.offset += line.len() as u64;
        let chunk_size = ChunkSize::new(json.chunk_size).map_err(|e| self.corrupt(e))?;
        let mut metadata = MetaSet::NONE;
        let (mut hard_links, mut rdev, mut stamps) = (false, false, false);
        for name in &json.metadata {
            let field = match name.as_str() {
                "mode" => &mut metadata.mode,
                "mtime" => &mut metadata.mtime,
                "owner" => &mut metadata.owner,
                "xattr" => &mut metadata.xattr,
                HARD_LINKS => &mut hard_links,
                RDEV => &mut rdev,
                STAMP => &mut stamps,
                _ => {
                    return Err(
                        self.corrupt(format!("bad header: unknown metadata field {}", crate::path::Quoted(name)))
                    );
                }
            };
            *field = true;
        }
        let exclude =
            crate::exclude::Excludes::new(&json.exclude).map_err(|e| self.corrupt(format!("bad header: {e}")))?;
        let shard = match &json.shard {
            None => None,
            Some(shard) if shard.owner != crate::shard::OWNER_RULE => {
                return Err(self.corrupt(format!(
                    "bad header: a part of a sharded scan whose entries are owned by rule {:?}; this cutover knows {:?}",
                    shard.owner,
                    crate::shard::OWNER_RULE
                )));
            }
            Some(shard) => Some(
                crate::shard::Shard::new(shard.index, shard.count)
                    .map_err(|e| self.corrupt(format!("bad header: {e}")))?,
            ),
        };
        let header = Header {
            shard,
            tool: json.tool,
            exclude,
            one_file_system: json.one_file_system,
            hard_links,
            rdev,
            stamps,
            scrub: json.scrub,
            chunk_size,
            metadata,
            root: json.root,
            started: json.started,
            finished: json.finished,
        };
        Ok((header, json.entries, json.root_hash))
    }

    /// One entry record, and the index of the entry it is a hard link to, if it is one.
    pub(super) fn read_entry(
        &mut self,
        previous: &[u8],
        header: &Header,
    ) -> Result<(Entry, Option<u64>), ManifestError> {
        let chunk_size = header.chunk_size;
        let shared = self.varint()?;
        if shared > previous.len() as u64 {
            return Err(self.corrupt("path shares more bytes than the previous path has"));
        }
        let suffix_len = self.varint()?;
        let suffix = self.bytes(suffix_len, 1 << 16, "path")?;
        let mut path = previous[..shared as usize].to_vec();
        path.extend_from_slice(&suffix);
        let path = RelPath::parse(&path).map_err(|e| {
            self.corrupt(format!("unsafe path {}: {e}", crate::path::Quoted(&String::from_utf8_lossy(&path))))
        })?;
        let kind_code = self.byte()?;
        let kind = Kind::from_code(kind_code).ok_or_else(|| self.corrupt(format!("unknown entry kind {kind_code}")))?;
        let flags = self.byte()?;
        let mut entry = Entry::new(path, kind);
        entry.size = self.varint()?;
        if kind != Kind::File && entry.size != 0 {
            return Err(self.corrupt(format!(
                "a {} of size {} (only regular files have a size)",
                kind.name(),
                entry.size
            )));
        }
        entry.mode = self.u32("mode")?;
        if entry.mode > 0o7777 {
            return Err(self.corrupt(format!("mode {:o} has bits above 0o7777", entry.mode)));
        }
        let zigzag = self.varint()?;
        entry.mtime =
            Mtime { sec: ((zigzag >> 1) as i64) ^ -((zigzag & 1) as i64), nsec: self.u32("mtime nanoseconds")? };
        if entry.mtime.nsec > 999_999_999 {
            return Err(self.corrupt(format!("mtime nanoseconds {} above 999999999", entry.mtime.nsec)));
        }
        entry.uid = self.u32("uid")?;
        entry.gid = self.u32("gid")?;
        if flags & FLAG_NOT_ENTERED != 0 {
            if kind != Kind::Dir || !header.one_file_system {
                return Err(self.corrupt("a not-entered mark on anything but a directory of a one-file-system scan"));
            }
            entry.not_entered = true;
        }
        if flags & FLAG_HOLDS_EXCLUDED != 0 {
            if kind != Kind::Dir || header.exclude.is_empty() {
                return Err(
                    self.corrupt("an excluded-entries mark on anything but a directory of a scan with excludes")
                );
            }
            entry.holds_excluded = true;
        }
        if flags & FLAG_HARD_LINK != 0 && (kind == Kind::Dir || !header.hard_links) {
            return Err(
                self.corrupt("a hard-link mark on a directory, or in a manifest whose header does not list hardlinks")
            );
        }
        if flags & FLAG_DIGEST != 0 {
            entry.digest = Some(self.digest()?);
        }
        match kind {
            Kind::Symlink => {
                let len = self.varint()?;
                entry.link = Some(self.bytes(len, 1 << 16, "symlink target")?.into());
            }
            Kind::File => {
                let n = self.varint()?;
                // A file of exactly one chunk may leave out its one CV; it is then compared whole.
                let legacy_single = n == 0 && entry.size == chunk_size.bytes();
                let expected = if legacy_single {
                    0
                } else if entry.digest.is_some() && entry.size >= chunk_size.bytes() {
                    chunk_size.chunks_in(entry.size)
                } else {
                    0
                };
                if n > MAX_CHUNKS || n != expected {
                    return Err(self.corrupt(format!("{n} chunk hashes for a file of {} bytes", entry.size)));
                }
                entry.chunks = (0..n).map(|_| self.digest()).collect::<Result<_, _>>()?;
                if header.stamps {
                    let (dev, ino, zigzag) = (self.varint()?, self.varint()?, self.varint()?);
                    let ctime = Mtime {
                        sec: ((zigzag >> 1) as i64) ^ -((zigzag & 1) as i64),
                        nsec: self.u32("ctime nanoseconds")?,
                    };
                    if ctime.nsec > 999_999_999 {
                        return Err(self.corrupt(format!("ctime nanoseconds {} above 999999999", ctime.nsec)));
                    }
                    // All zeros: the file could not even be stat'ed.
                    entry.stamp = Some(Stamp { dev, ino, ctime }).filter(|stamp| *stamp != Stamp::default());
                }
            }
            Kind::CharDevice | Kind::BlockDevice if header.rdev => {
                let rdev = (self.u32("device major")?, self.u32("device minor")?);
                entry.set_rdev(rdev);
            }
            _ => {}
        }
        let first = if flags & FLAG_HARD_LINK != 0 { Some(self.varint()?) } else { None };
        if flags & FLAG_XATTRS != 0 {
            if !header.metadata.xattr {
                return Err(self.corrupt("extended attributes, but the header's metadata does not list xattr"));
            }
            if !matches!(kind, Kind::File | Kind::Dir) {
                return Err(self.corrupt(format!("extended attributes on a {}", kind.name())));
            }
            let count = self.varint()?;
            if count == 0 || count > 1 << 16 {
                return Err(self.corrupt(format!("implausible extended attribute count {count}")));
            }
            let mut xattrs = Vec::with_capacity(count as usize);
            for _ in 0..count {
                let name_len = self.varint()?;
                let name = self.bytes(name_len, 255, "extended attribute name")?;
                let value_len = self.varint()?;
                let value = self.bytes(value_len, 1 << 16, "extended attribute value")?;
                xattrs.push((name.into_boxed_slice(), value.into_boxed_slice()));
            }
            if xattrs.iter().any(|(name, _)| name.is_empty()) {
                return Err(self.corrupt("an extended attribute with an empty name"));
            }
            if xattrs.windows(2).any(|w| w[0].0 >= w[1].0) {
                return Err(self.corrupt("extended attributes not sorted by name"));
            }
            entry.xattrs = Some(Box::new(xattrs));
        }
        if flags & (FLAG_UNREADABLE | FLAG_UNSTABLE) != 0 {
            let len = self.varint()?;
            let why = String::from_utf8_lossy(&self.bytes(len, 1 << 16, "problem message")?).into_owned();
            entry.problem = Some(Box::new(if flags & FLAG_UNREADABLE != 0 {
                Problem::Unreadable(why)
            } else {
                Problem::Unstable(why)
            }));
        }
        Ok((entry, first))
    }
}
