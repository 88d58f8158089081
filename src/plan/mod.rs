//! Stage 4: the repair plan, a value.
//!
//! A [`Plan`] lists the operations that make the target equal to the source. Each operation
//! carries what it expects to find (its precondition) and what it must leave (its postcondition),
//! so `apply` can refuse to touch anything that changed since the plan was made and can tell a
//! finished operation from one still to do. The JSON form `cutover-plan/1` is in [`format`] and
//! docs/plan.md.
//!
//! Plans are streams: [`build_plan_into`] hands each operation to a [`PlanWriter`] as soon as
//! it is known, and [`CheckedPlan`] checks a plan file whole (checksum, order, totals) before
//! handing its operations out one at a time. Neither holds the operations; [`Plan`] (all of
//! them in memory) is kept for small plans and tests.

mod build;
mod format;
mod guard;
mod read;
mod shard;
mod write;

pub use build::{PlanOptions, PlanOutput, build_plan, build_plan_into};
pub use format::{PlanError, plan_checksum};
pub use guard::{DeleteLimits, Refusal, check_deletes, check_target};
pub use read::{CheckedPlan, Operations, read_plan};
pub use shard::{shard_checked, shard_plan};
pub use write::{PlanWriter, write_plan};

use serde::{Deserialize, Serialize};

use crate::digest::{ChunkSize, Digest};
use crate::manifest::Kind;
use crate::path::RelPath;

/// The format identifier; bump it when a field changes meaning.
pub const PLAN_FORMAT: &str = "cutover-plan/1";

/// One side of the plan, as it was when the plan was made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanSide {
    pub root: String,
    pub hash: Option<String>,
    /// Entries in the tree, the root included: 1 means an empty (or unmounted) directory.
    pub entries: u64,
    /// Which directory this was, when the plan was made from a directory (not a manifest):
    /// `apply` refuses another one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<TreeIdentity>,
}

/// A directory as the host that planned saw it: host name, device and inode of the root.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeIdentity {
    pub host: String,
    pub device: u64,
    pub inode: u64,
}

impl TreeIdentity {
    /// The identity of the directory `path` (symlinks leading to it followed, as when it is
    /// opened as a root); `None` when it cannot be read.
    pub fn of(path: &std::path::Path) -> Option<TreeIdentity> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path).ok().filter(std::fs::Metadata::is_dir)?;
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().to_string();
        Some(TreeIdentity { host, device: meta.dev(), inode: meta.ino() })
    }
}

impl std::fmt::Display for TreeIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "host {}, device {}, inode {}", self.host, self.device, self.inode)
    }
}

/// Sums over the operations, for review and for `--max-delete`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub operations: u64,
    /// Bytes of data `apply` will copy from the source into the target: holes of the source
    /// (each operation's `holes`) are not copied, they stay holes.
    pub copy_bytes: u64,
    /// Entries the removals delete (each removal counts its whole subtree).
    pub delete_entries: u64,
    pub delete_bytes: u64,
}

impl Totals {
    /// The totals of `operations` with chunks of `chunk`.
    pub fn of(operations: &[Operation], chunk: ChunkSize) -> Totals {
        let mut tally = Tally::default();
        operations.iter().for_each(|op| tally.add(op, chunk));
        tally.totals
    }
}

/// What a plan's operations add up to, counted from the operations themselves as they stream
/// by (the `totals` a file states are not trusted): what the delete guards and the summary need.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub totals: Totals,
    /// Entries deleted because the source does not have their path at all (a type change keeps
    /// the path: the source's entry takes its place).
    pub extra_deletes: u64,
}

impl Tally {
    pub fn add(&mut self, op: &Operation, chunk: ChunkSize) {
        self.totals.operations += 1;
        self.totals.copy_bytes += op.copy_bytes(chunk);
        if let Operation::Remove { entries, bytes, expect, .. } = op {
            self.totals.delete_entries += entries;
            self.totals.delete_bytes += bytes;
            if expect.then.is_none() {
                self.extra_deletes += entries;
            }
        }
    }

    /// Entries the plan's removals delete.
    pub fn deletes(&self) -> u64 {
        self.totals.delete_entries
    }
}

/// A difference the plan cannot repair, with the reason.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unrepairable {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_bytes: Option<String>,
    pub reason: String,
}

/// Everything in a plan but its operations: what is known before the first operation is read
/// (and, for `totals` and `unrepairable`, after the last is written).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanHead {
    pub format: String,
    pub tool: String,
    pub created: String,
    pub source: PlanSide,
    pub target: PlanSide,
    pub chunk_size: u64,
    /// Whether extra target entries are removed.
    pub delete: bool,
    pub totals: Totals,
    #[serde(default)]
    pub unrepairable: Vec<Unrepairable>,
    /// The exclude patterns the trees were scanned with: a removal never deletes a match,
    /// even one that appeared after the plan was made. Left out when there are none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
}

/// A whole plan in memory: for small plans and tests. Large plans go through [`PlanWriter`]
/// and [`CheckedPlan`] without ever being whole.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub head: PlanHead,
    pub operations: Vec<Operation>,
}

/// Where an operation acts: a display path and, when not UTF-8, the exact bytes in base64.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpPath {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_bytes: Option<String>,
}

impl OpPath {
    pub fn new(path: &RelPath) -> Self {
        OpPath { path: path.display(), path_bytes: path.exact_bytes_b64() }
    }

    /// The exact, validated path (no absolute path, no `..`), never the root.
    pub fn rel(&self) -> Result<RelPath, String> {
        let rel = RelPath::from_report(&self.path, self.path_bytes.as_deref())?;
        if rel.is_root() {
            return Err("an operation on the root itself".into());
        }
        Ok(rel)
    }
}

/// Seconds and nanoseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawTime")]
pub struct Time {
    pub sec: i64,
    pub nsec: u32,
}

#[derive(Deserialize)]
struct RawTime {
    sec: i64,
    nsec: u32,
}

impl TryFrom<RawTime> for Time {
    type Error = String;

    fn try_from(raw: RawTime) -> Result<Time, String> {
        if raw.nsec > 999_999_999 {
            return Err(format!("nsec {} is not below 1000000000", raw.nsec));
        }
        Ok(Time { sec: raw.sec, nsec: raw.nsec })
    }
}

/// A hex BLAKE3 digest in JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hex(pub Digest);

impl Serialize for Hex {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.to_hex())
    }
}

impl<'de> Deserialize<'de> for Hex {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Digest::from_hex(&text)
            .map(Hex)
            .ok_or_else(|| serde::de::Error::custom(format!("'{text}' is not a BLAKE3 hex digest")))
    }
}

/// A regular file's identity: size and BLAKE3 root.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileState {
    pub size: u64,
    pub hash: Hex,
}

/// A source file's device, inode and status-change time when the plan's manifest was made:
/// a write (and `touch -r` putting an mtime back) moves the ctime, and nobody can set it back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceStamp {
    pub dev: u64,
    pub ino: u64,
    pub ctime: Time,
}

/// A target file a patch rewrites: size, root hash and mtime when the plan was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetFile {
    pub size: u64,
    pub hash: Hex,
    pub mtime: Time,
}

/// Text in a plan that stands for bytes: the bytes themselves when `b64` is absent.
pub fn text_bytes(text: &str, b64: Option<&str>) -> Result<Vec<u8>, String> {
    use base64::Engine as _;
    match b64 {
        Some(b64) => base64::engine::general_purpose::STANDARD.decode(b64).map_err(|e| format!("bad base64: {e}")),
        None => Ok(text.as_bytes().to_vec()),
    }
}

/// The plan form of bytes: lossy text, plus base64 when they are not UTF-8.
pub fn bytes_text(bytes: &[u8]) -> (String, Option<String>) {
    use base64::Engine as _;
    match std::str::from_utf8(bytes) {
        Ok(text) => (text.to_string(), None),
        Err(_) => {
            (String::from_utf8_lossy(bytes).into_owned(), Some(base64::engine::general_purpose::STANDARD.encode(bytes)))
        }
    }
}

/// What a removal expects to find.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Found {
    #[serde(rename = "type")]
    pub kind: Kind,
    /// For a type change, the kind a later operation puts at the same path: finding that
    /// instead means this removal already happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub then: Option<Kind>,
    /// For a regular file, its size and mtime at plan time: a file changed since is kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtime: Option<Time>,
}

/// One chunk of a patch: its index, the CV the target has now (absent beyond the target's
/// end), and the CV it must have after.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PatchChunk {
    pub index: u64,
    pub old: Option<Hex>,
    pub new: Hex,
}

/// Attributes set on whatever an operation creates or repairs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attrs {
    #[serde(with = "octal")]
    pub mode: u32,
    pub mtime: Time,
    pub uid: u32,
    pub gid: u32,
    /// The complete set of extended attributes, when the plan repairs them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xattrs: Option<Vec<Xattr>>,
}

/// One extended attribute: its name and its value in standard base64.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Xattr {
    pub name: String,
    pub value: String,
}

impl Xattr {
    /// The plan form of a recorded set (`None` in a manifest means none).
    pub fn list(xattrs: Option<&crate::manifest::Xattrs>) -> Vec<Xattr> {
        use base64::Engine as _;
        xattrs
            .into_iter()
            .flatten()
            .map(|(name, value)| Xattr {
                name: String::from_utf8_lossy(name).into_owned(),
                value: base64::engine::general_purpose::STANDARD.encode(value),
            })
            .collect()
    }

    /// Back to (name, value) bytes, sorted by name.
    pub fn decode(list: &[Xattr]) -> Result<crate::manifest::Xattrs, String> {
        use base64::Engine as _;
        let mut pairs = list
            .iter()
            .map(|x| {
                let value = base64::engine::general_purpose::STANDARD
                    .decode(&x.value)
                    .map_err(|e| format!("extended attribute {}: bad base64: {e}", x.name))?;
                if x.name.is_empty() || x.name.contains('\0') {
                    return Err(format!("extended attribute name {:?} is invalid", x.name));
                }
                Ok((x.name.as_bytes().into(), value.into_boxed_slice()))
            })
            .collect::<Result<crate::manifest::Xattrs, String>>()?;
        pairs.sort();
        Ok(pairs)
    }
}

/// One step of a plan. Steps run in order: removals, then creations and content repairs in
/// path order (parents first), then metadata fixes children first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Operation {
    /// Delete what is at `path` (a whole subtree for a directory).
    Remove {
        #[serde(flatten)]
        at: OpPath,
        expect: Found,
        entries: u64,
        bytes: u64,
    },
    /// Create a directory (its final mode and mtime come from a later `meta`).
    Mkdir {
        #[serde(flatten)]
        at: OpPath,
    },
    /// Copy the whole source file to a temporary name, then rename it over `path`.
    Copy {
        #[serde(flatten)]
        at: OpPath,
        /// The source file, which is also what the target must hold afterwards.
        source: FileState,
        /// The file it replaces; absent means nothing may be at `path`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        replaces: Option<FileState>,
        attrs: Attrs,
        /// Bytes of the source file that were holes when the plan was made (not copied).
        #[serde(default, skip_serializing_if = "is_zero")]
        holes: u64,
    },
    /// Rewrite only the divergent chunks of an existing file in place.
    Patch {
        #[serde(flatten)]
        at: OpPath,
        source: FileState,
        /// The target file as the plan saw it. Its mtime is the cheap check; when it differs the
        /// whole file is hashed and must still be `hash`.
        target: TargetFile,
        /// The chunks to write, in order; chunk `i` covers `[i * chunk_size, (i + 1) * chunk_size)`
        /// clipped to the source size.
        chunks: Vec<PatchChunk>,
        attrs: Attrs,
        /// Bytes of those chunks that were holes in the source when the plan was made.
        #[serde(default, skip_serializing_if = "is_zero")]
        holes: u64,
        /// Where the source file lived and its ctime when it was scanned. A patch reads only
        /// the listed chunks; when the file is not still this inode with this ctime (or the
        /// plan has no stamp), apply hashes the whole source file before writing, so an edit
        /// outside those chunks with its mtime put back is never taken for the planned file.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        source_stamp: Option<SourceStamp>,
    },
    /// Make `path` a symlink to `link`, replacing a symlink with another target if one is there.
    Symlink {
        #[serde(flatten)]
        at: OpPath,
        link: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        link_bytes: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        replaces: Option<String>,
        /// The replaced link's exact text in base64 when it is not UTF-8.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        replaces_bytes: Option<String>,
        attrs: Attrs,
    },
    /// Make `path` another name of the inode at `to` (a hard link, as `rsync -H` makes it),
    /// replacing what is there.
    Link {
        #[serde(flatten)]
        at: OpPath,
        /// The first name of the inode, which the plan has already made right.
        to: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        to_bytes: Option<String>,
        /// The kind of `to`, and for a regular file the size it must have.
        #[serde(rename = "type")]
        kind: Kind,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        size: Option<u64>,
        /// What is at `path` now (absent: nothing).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        replaces: Option<Found>,
    },
    /// Create a FIFO, socket or device node (under a temporary name, renamed over `path`).
    Mknod {
        #[serde(flatten)]
        at: OpPath,
        #[serde(rename = "type")]
        kind: Kind,
        /// `[major, minor]` of a character or block device.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rdev: Option<(u32, u32)>,
        /// The kind of node it replaces (a device with other numbers); absent: nothing.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        replaces: Option<Kind>,
        attrs: Attrs,
    },
    /// Give the entry at `path` an inode of its own: the source does not link it to any
    /// other name the target links it to.
    Unshare {
        #[serde(flatten)]
        at: OpPath,
        #[serde(rename = "type")]
        kind: Kind,
    },
    /// Set metadata on an entry whose content is already right.
    Meta {
        #[serde(flatten)]
        at: OpPath,
        #[serde(rename = "type")]
        kind: Kind,
        #[serde(default, skip_serializing_if = "Option::is_none", with = "octal_option")]
        mode: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mtime: Option<Time>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        owner: Option<(u32, u32)>,
        /// The complete set of extended attributes the entry must end with.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        xattrs: Option<Vec<Xattr>>,
    },
}

impl Operation {
    pub fn at(&self) -> &OpPath {
        match self {
            Operation::Remove { at, .. }
            | Operation::Mkdir { at }
            | Operation::Copy { at, .. }
            | Operation::Patch { at, .. }
            | Operation::Symlink { at, .. }
            | Operation::Link { at, .. }
            | Operation::Mknod { at, .. }
            | Operation::Unshare { at, .. }
            | Operation::Meta { at, .. } => at,
        }
    }

    /// The validated path acted on: only a `meta` operation may name the root itself (`""`).
    pub fn rel(&self) -> Result<RelPath, String> {
        match self {
            Operation::Meta { at, .. } => RelPath::from_report(&at.path, at.path_bytes.as_deref()),
            other => other.at().rel(),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Operation::Remove { .. } => "remove",
            Operation::Mkdir { .. } => "mkdir",
            Operation::Copy { .. } => "copy",
            Operation::Patch { .. } => "patch",
            Operation::Symlink { .. } => "symlink",
            Operation::Link { .. } => "link",
            Operation::Mknod { .. } => "mknod",
            Operation::Unshare { .. } => "unshare",
            Operation::Meta { .. } => "meta",
        }
    }

    /// Bytes of the source this operation reads: the whole file, or its chunks.
    pub fn read_bytes(&self, chunk: ChunkSize) -> u64 {
        match self {
            Operation::Copy { source, .. } => source.size,
            Operation::Patch { source, chunks, .. } => {
                chunks.iter().map(|c| chunk.chunk_range(c.index, source.size).length).sum()
            }
            _ => 0,
        }
    }

    /// Bytes of data this operation copies: what it reads, less the source's holes.
    pub fn copy_bytes(&self, chunk: ChunkSize) -> u64 {
        match self {
            Operation::Copy { holes, .. } | Operation::Patch { holes, .. } => {
                self.read_bytes(chunk).saturating_sub(*holes)
            }
            _ => 0,
        }
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Permission bits as an octal string (`"0644"`), the way people read them.
mod octal {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(mode: &u32, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{mode:04o}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
        let text = String::deserialize(d)?;
        u32::from_str_radix(&text, 8)
            .ok()
            .filter(|mode| *mode <= 0o7777)
            .ok_or_else(|| serde::de::Error::custom(format!("'{text}' is not an octal permission mode")))
    }
}

mod octal_option {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(mode: &Option<u32>, s: S) -> Result<S::Ok, S::Error> {
        match mode {
            Some(mode) => super::octal::serialize(mode, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
        #[derive(Deserialize)]
        struct Wrapped(#[serde(with = "super::octal")] u32);
        Ok(Option::<Wrapped>::deserialize(d)?.map(|Wrapped(mode)| mode))
    }
}
