//! Capability-style access to the migration *target* tree.
//!
//! Every write of the `apply` stage goes through a [`TargetRoot`]. The target
//! may contain symlinks planted by the migration itself, by the old system or
//! by someone hostile; following one while writing could modify files outside
//! the target (or outside the intended subtree). So paths are never handed to
//! the kernel whole: each parent component is opened with
//! `O_DIRECTORY|O_NOFOLLOW` relative to the previous one, and the final
//! component is only ever touched through `*at()` calls that do not follow
//! symlinks. No `..` is accepted, so nothing can climb out of the root.
//!
//! Nor does anything pass a mount point inside the target (another filesystem, or a bind
//! mount of a directory or file of the same one, which `st_dev` cannot tell apart): each
//! directory opened on the way must be on the root's mount (`statx` mount id), and the final
//! component is never written, removed or entered when it is a mount point. Directory handles
//! are kept between calls ([`handles`]), so a path costs an `openat` only for directories not
//! already open.

mod handles;
mod tree;

use crate::manifest::Xattrs;
use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rustix::fs::{
    self as rfs, AtFlags, FileType, Mode, OFlags, Statx, StatxAttributes, StatxFlags, Timespec, Timestamps,
};
use rustix::io::Errno;

pub use tree::RemoveStats;

/// Marker that every temporary file created by [`TargetRoot::create_temp`] carries.
pub const TEMP_MARKER: &str = ".cutover-tmp.";

/// Longest single file name Linux filesystems accept (`NAME_MAX`).
const NAME_MAX: usize = 255;

/// Makes temp names unique within this process; a collision with anything already there is
/// handled by retrying on `EEXIST`.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

use crate::path::Quoted;

/// Why a target operation was refused or failed. Every variant names the
/// relative path (lossily, for messages) so a report can point at the entry.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("invalid target path {}: {why}", Quoted(.path))]
    BadPath { path: String, why: &'static str },
    #[error("refusing to resolve {}: a parent component is a symlink or not a directory", Quoted(.path))]
    SymlinkInPath { path: String },
    #[error(
        "cannot {op} {}: {} is a mount point inside the tree (another filesystem or a bind mount), which is never written, removed or entered",
        Quoted(.path),
        Quoted(.mount)
    )]
    MountPoint { path: String, op: &'static str, mount: String },
    #[error("cannot {op} {}: expected a {expected}, found a {found}", Quoted(.path))]
    WrongType { path: String, op: &'static str, expected: &'static str, found: NodeKind },
    // The source is in the message, as elsewhere in this crate's errors.
    #[error("cannot {op} {}: {cause}", Quoted(.path))]
    Io { path: String, op: &'static str, cause: std::io::Error },
}

impl TargetError {
    /// True when the path (or one of its parents) does not exist, so callers
    /// can treat "already gone" as success where that is what they want.
    pub fn is_not_found(&self) -> bool {
        matches!(self, TargetError::Io { cause, .. } if cause.kind() == std::io::ErrorKind::NotFound)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    File,
    Dir,
    Symlink,
    Other,
}

impl std::fmt::Display for NodeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NodeKind::File => "regular file",
            NodeKind::Dir => "directory",
            NodeKind::Symlink => "symlink",
            NodeKind::Other => "special file (FIFO, socket or device)",
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeStat {
    pub kind: NodeKind,
    pub size: u64,
    /// Permission bits including setuid/setgid/sticky (`st_mode & 0o7777`).
    pub mode: u32,
    pub mtime_sec: i64,
    pub mtime_nsec: u32,
    pub uid: u32,
    pub gid: u32,
    /// Hard links to the inode: more than one means a write in place would show elsewhere.
    pub nlink: u64,
}

/// An entry as `statx` saw it, and whether it is a mount point (not on the root's mount).
#[derive(Debug, Clone, Copy)]
struct Entry {
    node: NodeStat,
    foreign: bool,
}

/// Which mount the root is on, to tell a mount point inside it from an ordinary entry.
#[derive(Debug, Clone, Copy)]
struct RootMount {
    /// `None` on kernels before 5.8, which do not report mount ids.
    mnt_id: Option<u64>,
    dev: (u32, u32),
}

impl RootMount {
    fn of(st: &Statx) -> Self {
        let mnt_id = StatxFlags::from_bits_retain(st.stx_mask).contains(StatxFlags::MNT_ID).then_some(st.stx_mnt_id);
        RootMount { mnt_id, dev: (st.stx_dev_major, st.stx_dev_minor) }
    }

    /// True when `st` (taken without following the final component's symlink, but, as every
    /// lookup does, into what is mounted there) is on another mount than the root.
    fn is_foreign(&self, st: &Statx) -> bool {
        let has_id = StatxFlags::from_bits_retain(st.stx_mask).contains(StatxFlags::MNT_ID);
        match self.mnt_id {
            Some(id) if has_id => st.stx_mnt_id != id,
            _ => {
                let root_flag = st.stx_attributes_mask.contains(StatxAttributes::MOUNT_ROOT)
                    && st.stx_attributes.contains(StatxAttributes::MOUNT_ROOT);
                root_flag || (st.stx_dev_major, st.stx_dev_minor) != self.dev
            }
        }
    }
}

/// An open handle on the target root. Holding the directory fd (not a path)
/// means a rename or symlink swap of the root's *ancestors* after `open`
/// cannot redirect later writes.
#[derive(Debug)]
pub struct TargetRoot {
    fd: OwnedFd,
    path: PathBuf,
    mount: RootMount,
    /// A source tree is read across the mount points inside it, as a scan does; a target is
    /// never written through one.
    cross_mounts: bool,
    chain: Mutex<handles::Chain>,
}

/// The root directory itself (an `O_PATH` descriptor), e.g. to lock it.
impl AsFd for TargetRoot {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// The directory that holds a path's final component: the root itself, or a
/// directory handle reached by the no-follow walk.
struct Parent<'a> {
    root: BorrowedFd<'a>,
    owned: Option<Arc<OwnedFd>>,
}

impl AsFd for Parent<'_> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.owned.as_deref().map_or(self.root, AsFd::as_fd)
    }
}

fn lossy(rel: &[u8]) -> String {
    String::from_utf8_lossy(rel).into_owned()
}

fn io_err(rel: &[u8], op: &'static str, e: Errno) -> TargetError {
    TargetError::Io { path: lossy(rel), op, cause: e.into() }
}

/// `map_err` adapter: attach the path and operation to a raw errno.
fn ctx<'a>(rel: &'a [u8], op: &'static str) -> impl FnOnce(Errno) -> TargetError + 'a {
    move |e| io_err(rel, op, e)
}

fn wrong(rel: &[u8], op: &'static str, expected: &'static str, found: NodeKind) -> TargetError {
    TargetError::WrongType { path: lossy(rel), op, expected, found }
}

fn mount_point(rel: &[u8], op: &'static str, mount: &[u8]) -> TargetError {
    TargetError::MountPoint { path: lossy(rel), op, mount: lossy(mount) }
}

fn os(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}

fn kind_of_mode(mode: u32) -> NodeKind {
    match FileType::from_raw_mode(mode as rfs::RawMode) {
        FileType::RegularFile => NodeKind::File,
        FileType::Directory => NodeKind::Dir,
        FileType::Symlink => NodeKind::Symlink,
        _ => NodeKind::Other,
    }
}

fn node_stat(st: &Statx) -> NodeStat {
    NodeStat {
        nlink: st.stx_nlink.into(),
        kind: kind_of_mode(st.stx_mode.into()),
        size: st.stx_size,
        mode: u32::from(st.stx_mode) & 0o7777,
        mtime_sec: st.stx_mtime.tv_sec,
        mtime_nsec: st.stx_mtime.tv_nsec,
        uid: st.stx_uid,
        gid: st.stx_gid,
    }
}

const STATX_WANTED: StatxFlags = StatxFlags::BASIC_STATS.union(StatxFlags::MNT_ID);

/// `statx` of an open descriptor.
fn statx_fd(fd: impl AsFd) -> Result<Statx, Errno> {
    rfs::statx(fd, c"", AtFlags::EMPTY_PATH, STATX_WANTED)
}

fn is_root_user() -> bool {
    rustix::process::geteuid().is_root()
}

/// `chmod` of exactly the inode `fd` refers to, `O_PATH` descriptors included: through its
/// `/proc/self/fd` magic link (glibc's own `fchmodat` emulation).
fn chmod_fd(fd: BorrowedFd<'_>, mode: u32) -> Result<(), Errno> {
    let magic = format!("/proc/self/fd/{}", fd.as_raw_fd());
    rfs::chmodat(rfs::CWD, magic.as_str(), Mode::from_bits_truncate(mode & 0o7777), AtFlags::empty())
}

/// Runs `act`, a write in the directory `dir`; when that is refused for want of the write bit
/// on a directory this (unprivileged) user owns, adds the owner write bit for the write and
/// puts the mode back after it, as rsync does.
fn in_writable_dir<T>(dir: BorrowedFd<'_>, mut act: impl FnMut() -> Result<T, Errno>) -> Result<T, Errno> {
    match act() {
        Err(Errno::ACCESS) if !is_root_user() => {
            let st = rfs::fstat(dir)?;
            let mode = st.st_mode & 0o7777;
            if st.st_uid != rustix::process::geteuid().as_raw() || mode & 0o200 != 0 {
                return Err(Errno::ACCESS);
            }
            chmod_fd(dir, mode | 0o200)?;
            let done = act();
            let restored = chmod_fd(dir, mode);
            done.and_then(|value| restored.map(|()| value))
        }
        other => other,
    }
}

/// Check the shape of a relative path before any syscall sees it: anything
/// that could name the root itself, climb out of it, or be reinterpreted by
/// the kernel (`.`, `..`, empty components, NUL) is refused up front.
fn validate(rel: &[u8]) -> Result<(), TargetError> {
    let why = if rel.is_empty() {
        "empty path"
    } else if rel[0] == b'/' {
        "absolute path"
    } else if rel.contains(&0) {
        "contains a NUL byte"
    } else if rel.split(|&b| b == b'/').any(|c| c.is_empty()) {
        "empty component"
    } else if rel.split(|&b| b == b'/').any(|c| c == b"." || c == b"..") {
        "'.' or '..' component"
    } else {
        return Ok(());
    };
    Err(TargetError::BadPath { path: lossy(rel), why })
}

/// Hex digits of a temp name's run nonce.
const NONCE_DIGITS: usize = 16;

/// This process's run nonce: random, 16 hex digits, in the name of every temp file it makes.
/// apply records it in its journal before the first temp is made, so a later run removes only
/// temps whose nonce its journals list: a user's file that merely looks like a temp never has
/// one of them.
pub fn temp_nonce() -> &'static str {
    static NONCE: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    NONCE.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        // `RandomState` is seeded from the operating system's random source.
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u32(std::process::id());
        let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        hasher.write_u128(since.as_nanos());
        format!("{:016x}", hasher.finish())
    })
}

/// The run nonce in `name` (one component) when it has the shape of a
/// [`TargetRoot::create_temp`] name, `.<name>.cutover-tmp.<nonce>.<counter>`.
pub fn temp_name_nonce(name: &[u8]) -> Option<&[u8]> {
    let marker = TEMP_MARKER.as_bytes();
    if name.first() != Some(&b'.') {
        return None;
    }
    let pos = name.windows(marker.len()).rposition(|w| w == marker)?;
    let (nonce, counter) = name[pos + marker.len()..].split_at_checked(NONCE_DIGITS)?;
    let counter = counter.strip_prefix(b".")?;
    let hex = nonce.iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b));
    (hex && !counter.is_empty() && counter.iter().all(u8::is_ascii_digit)).then_some(nonce)
}

/// Whether `name` has the shape of a temp name. Only the nonce, checked against a journal,
/// says whether cutover made it.
pub fn is_temp_name(name: &[u8]) -> bool {
    temp_name_nonce(name).is_some()
}

/// A fresh `.<name>.cutover-tmp.<nonce>.<counter>` name, the real name cut to fit `NAME_MAX`.
fn temp_name(name: &[u8]) -> Vec<u8> {
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let suffix = format!("{TEMP_MARKER}{}.{n}", temp_nonce());
    let keep = name.len().min(NAME_MAX - 1 - suffix.len());
    let mut tmp = Vec::with_capacity(NAME_MAX);
    tmp.push(b'.');
    tmp.extend_from_slice(&name[..keep]);
    tmp.extend_from_slice(suffix.as_bytes());
    tmp
}

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    if dir.is_empty() {
        return name.to_vec();
    }
    let mut v = Vec::with_capacity(dir.len() + 1 + name.len());
    v.extend_from_slice(dir);
    v.push(b'/');
    v.extend_from_slice(name);
    v
}

/// Split into (parent directory part, final name); the parent part is empty
/// for a single-component path.
fn split_last(rel: &[u8]) -> (&[u8], &[u8]) {
    match rel.iter().rposition(|&b| b == b'/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => (&[], rel),
    }
}

impl TargetRoot {
    /// Open the root. Symlinks *leading to* the root are followed on purpose
    /// (the operator chose that path); only paths inside it are guarded.
    pub fn open(root: &Path) -> Result<Self, TargetError> {
        Self::open_with(root, false)
    }

    /// Open a source tree for reading: as with [`open`](Self::open), but mount points inside
    /// it are crossed, as a scan without `-x` does, since the plan was made from what is there.
    pub fn open_source(root: &Path) -> Result<Self, TargetError> {
        Self::open_with(root, true)
    }

    fn open_with(root: &Path, cross_mounts: bool) -> Result<Self, TargetError> {
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let op = "open target root";
        let error = |e: Errno| TargetError::Io { path: root.display().to_string(), op, cause: e.into() };
        let fd = rfs::open(root, flags, Mode::empty()).map_err(error)?;
        let mount = RootMount::of(&statx_fd(&fd).map_err(error)?);
        Ok(Self { fd, path: root.to_path_buf(), mount, cross_mounts, chain: Mutex::default() })
    }

    /// The path the root was opened with, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The handle of the directory `dir` (empty for the root), opened component by component
    /// without following anything, reusing the handles kept from earlier calls. `O_PATH` is
    /// used so that directories with search but no read permission can still be traversed,
    /// exactly as path lookup would. `rel` is the path the caller works on, for messages.
    fn dir<'a>(&'a self, dir: &[u8], rel: &[u8]) -> Result<Parent<'a>, TargetError> {
        let root = self.fd.as_fd();
        if dir.is_empty() {
            return Ok(Parent { root, owned: None });
        }
        let mut chain = self.chain.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let open = |at: BorrowedFd<'_>, comp: &[u8], prefix: &[u8]| {
            let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            let fd = rfs::openat(at, os(comp), flags, Mode::empty()).map_err(|e| match e {
                Errno::LOOP | Errno::NOTDIR => TargetError::SymlinkInPath { path: lossy(rel) },
                e => io_err(rel, "resolve parent of", e),
            })?;
            if !self.cross_mounts && self.mount.is_foreign(&statx_fd(&fd).map_err(ctx(rel, "resolve parent of"))?) {
                return Err(mount_point(rel, "resolve parent of", prefix));
            }
            Ok(fd)
        };
        let mut fd = chain.resolve(root, dir, open)?;
        // A kept directory removed meanwhile (link count 0) would swallow what is written in it.
        if rfs::fstat(&*fd).map_err(ctx(rel, "resolve parent of"))?.st_nlink == 0 {
            chain.clear();
            fd = chain.resolve(root, dir, open)?;
        }
        Ok(Parent { root, owned: Some(fd) })
    }

    /// Validates `rel` and resolves its parent directory.
    fn resolve<'a>(&'a self, rel: &'a [u8]) -> Result<(Parent<'a>, &'a [u8]), TargetError> {
        validate(rel)?;
        let (dir, name) = split_last(rel);
        Ok((self.dir(dir, rel)?, name))
    }

    /// What is at `name` in `parent`, without following a symlink; `None` when nothing is.
    fn entry_at(&self, parent: BorrowedFd<'_>, name: &[u8], rel: &[u8]) -> Result<Option<Entry>, TargetError> {
        let flags = AtFlags::SYMLINK_NOFOLLOW | AtFlags::NO_AUTOMOUNT;
        match rfs::statx(parent, os(name), flags, STATX_WANTED) {
            Ok(st) => {
                Ok(Some(Entry { node: node_stat(&st), foreign: !self.cross_mounts && self.mount.is_foreign(&st) }))
            }
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(io_err(rel, "stat", e)),
        }
    }

    /// The entry at `name`, refused when it is a mount point: for everything that writes to it.
    fn own_entry(
        &self,
        parent: &Parent<'_>,
        name: &[u8],
        rel: &[u8],
        op: &'static str,
    ) -> Result<Option<NodeStat>, TargetError> {
        match self.entry_at(parent.as_fd(), name, rel)? {
            Some(entry) if entry.foreign => Err(mount_point(rel, op, rel)),
            entry => Ok(entry.map(|entry| entry.node)),
        }
    }

    /// `lstat`. A missing parent is just "absent", but a symlink standing in
    /// for a parent directory is reported as [`TargetError::SymlinkInPath`]:
    /// silently answering `None` would hide a target that cannot be repaired
    /// by writing beneath it. A mount point is reported as what is mounted there.
    pub fn stat(&self, rel: &[u8]) -> Result<Option<NodeStat>, TargetError> {
        let (parent, name) = match self.resolve(rel) {
            Ok(r) => r,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(self.entry_at(parent.as_fd(), name, rel)?.map(|entry| entry.node))
    }

    /// A freshly created directory gets exactly `mode` (umask ignored, since
    /// apply reproduces source permissions); an existing one is left as is.
    pub fn create_dir(&self, rel: &[u8], mode: u32) -> Result<(), TargetError> {
        let (parent, name) = self.resolve(rel)?;
        let mkdir = || rfs::mkdirat(&parent, os(name), Mode::from_bits_truncate(mode & 0o7777));
        match in_writable_dir(parent.as_fd(), mkdir) {
            Ok(()) => self.chmod_at(&parent, name, rel, mode),
            Err(Errno::EXIST) => match self.entry_at(parent.as_fd(), name, rel)?.map(|e| e.node.kind) {
                Some(NodeKind::Dir) => Ok(()),
                Some(k) => Err(wrong(rel, "create directory", "directory", k)),
                None => Err(io_err(rel, "create directory", Errno::NOENT)),
            },
            Err(e) => Err(io_err(rel, "create directory", e)),
        }
    }

    /// Open an existing regular file. The `lstat` first avoids ever opening
    /// a FIFO (would block) or device (open can have side effects); the
    /// `statx` after covers a swap in between, and `O_NOFOLLOW` covers a
    /// symlink swapped in. A file that is a mount point (bind-mounted into the tree) is
    /// never opened for writing.
    fn open_regular(&self, rel: &[u8], access: OFlags, op: &'static str) -> Result<File, TargetError> {
        let (parent, name) = self.resolve(rel)?;
        let writes = access != OFlags::RDONLY;
        let found = match self.entry_at(parent.as_fd(), name, rel)? {
            None => return Err(io_err(rel, op, Errno::NOENT)),
            Some(entry) if entry.node.kind != NodeKind::File => {
                return Err(wrong(rel, op, "regular file", entry.node.kind));
            }
            Some(entry) if writes && entry.foreign => return Err(mount_point(rel, op, rel)),
            Some(entry) => entry.node,
        };
        let flags = access | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
        let open = || rfs::openat(&parent, os(name), flags, Mode::empty());
        let fd = match open() {
            // A read-only file this (unprivileged) user owns gets the owner write bit for the
            // open only: the descriptor keeps its write access after the mode is put back.
            Err(Errno::ACCESS) if writes && !is_root_user() && owned_without_write(&found) => {
                let pin = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
                let pinned = rfs::openat(&parent, os(name), pin, Mode::empty()).map_err(ctx(rel, op))?;
                let st = statx_fd(&pinned).map_err(ctx(rel, op))?;
                if kind_of_mode(st.stx_mode.into()) != NodeKind::File || self.mount.is_foreign(&st) {
                    return Err(io_err(rel, op, Errno::ACCESS));
                }
                chmod_fd(pinned.as_fd(), found.mode | 0o200).map_err(ctx(rel, op))?;
                let opened = open();
                let restored = chmod_fd(pinned.as_fd(), found.mode);
                let fd = opened.map_err(ctx(rel, op))?;
                restored.map_err(ctx(rel, op))?;
                fd
            }
            r => r.map_err(|e| match e {
                Errno::LOOP => wrong(rel, op, "regular file", NodeKind::Symlink),
                e => io_err(rel, op, e),
            })?,
        };
        let st = statx_fd(&fd).map_err(ctx(rel, op))?;
        let kind = kind_of_mode(st.stx_mode.into());
        if kind != NodeKind::File {
            return Err(wrong(rel, op, "regular file", kind));
        }
        if writes && !self.cross_mounts && self.mount.is_foreign(&st) {
            return Err(mount_point(rel, op, rel));
        }
        rfs::fcntl_setfl(&fd, access).map_err(ctx(rel, op))?;
        Ok(File::from(fd))
    }

    /// A regular file or directory opened read-only, never through a symlink, for its extended
    /// attributes; `writes` refuses a mount point.
    fn open_node(&self, rel: &[u8], op: &'static str, writes: bool) -> Result<OwnedFd, TargetError> {
        let (parent, name) = self.resolve(rel)?;
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
        match self.entry_at(parent.as_fd(), name, rel)? {
            None => return Err(io_err(rel, op, Errno::NOENT)),
            Some(Entry { foreign: true, .. }) if writes => return Err(mount_point(rel, op, rel)),
            Some(Entry { node, .. }) if !matches!(node.kind, NodeKind::File | NodeKind::Dir) => {
                return Err(wrong(rel, op, "file or directory", node.kind));
            }
            Some(_) => {}
        }
        let fd = rfs::openat(&parent, os(name), flags, Mode::empty()).map_err(ctx(rel, op))?;
        let st = statx_fd(&fd).map_err(ctx(rel, op))?;
        if writes && !self.cross_mounts && self.mount.is_foreign(&st) {
            return Err(mount_point(rel, op, rel));
        }
        match kind_of_mode(st.stx_mode.into()) {
            NodeKind::File | NodeKind::Dir => Ok(fd),
            k => Err(wrong(rel, op, "file or directory", k)),
        }
    }

    /// The extended attributes of a file or directory, sorted by name.
    pub fn xattrs(&self, rel: &[u8]) -> Result<Option<Box<Xattrs>>, TargetError> {
        let fd = self.open_node(rel, "read extended attributes of", false)?;
        crate::scan::read_xattrs(&fd).map_err(|cause| TargetError::Io {
            path: lossy(rel),
            op: "read extended attributes of",
            cause,
        })
    }

    /// Makes the extended attributes of a file or directory exactly `desired`.
    pub fn set_xattrs(&self, rel: &[u8], desired: &Xattrs) -> Result<(), TargetError> {
        let op = "set extended attributes of";
        let fd = self.open_node(rel, op, true)?;
        let current = crate::scan::read_xattrs(&fd)
            .map_err(|cause| TargetError::Io { path: lossy(rel), op, cause })?
            .unwrap_or_default();
        for (name, _) in current.iter().filter(|(name, _)| !desired.iter().any(|(n, _)| n == name)) {
            rfs::fremovexattr(&fd, os(name)).map_err(ctx(rel, op))?;
        }
        for (name, value) in desired.iter().filter(|pair| !current.contains(pair)) {
            rfs::fsetxattr(&fd, os(name), value, rfs::XattrFlags::empty()).map_err(ctx(rel, op))?;
        }
        Ok(())
    }

    pub fn open_read(&self, rel: &[u8]) -> Result<File, TargetError> {
        self.open_regular(rel, OFlags::RDONLY, "open for reading")
    }

    /// Read and write on one descriptor, so what a patch checks is what it writes.
    pub fn open_read_write(&self, rel: &[u8]) -> Result<File, TargetError> {
        self.open_regular(rel, OFlags::RDWR, "open for reading and writing")
    }

    /// No `O_TRUNC`: the apply stage patches files in place block by block.
    pub fn open_write(&self, rel: &[u8]) -> Result<File, TargetError> {
        self.open_regular(rel, OFlags::WRONLY, "open for writing")
    }

    /// Create a scratch file beside `rel` so it can be renamed over `rel`
    /// atomically. The name keeps the real name (truncated to fit
    /// `NAME_MAX`) so leftovers are recognisable, and `mode` is applied
    /// exactly with `fchmod`, ignoring the umask.
    pub fn create_temp(&self, rel: &[u8], mode: u32) -> Result<(File, Vec<u8>), TargetError> {
        let (parent, name) = self.resolve(rel)?;
        let flags = OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        for _ in 0..64 {
            let tmp = temp_name(name);
            let create = || rfs::openat(&parent, os(&tmp), flags, Mode::RUSR | Mode::WUSR);
            match in_writable_dir(parent.as_fd(), create) {
                Ok(fd) => {
                    let tmp_rel = join(split_last(rel).0, &tmp);
                    let mode = Mode::from_bits_truncate(mode & 0o7777);
                    rfs::fchmod(&fd, mode).map_err(ctx(&tmp_rel, "set mode of temp file"))?;
                    return Ok((File::from(fd), tmp_rel));
                }
                Err(Errno::EXIST) => continue,
                Err(e) => return Err(io_err(rel, "create temp file for", e)),
            }
        }
        Err(io_err(rel, "create temp file for", Errno::EXIST))
    }

    /// Creates a symlink to `target` under a temporary name next to `rel`, for an atomic
    /// rename over `rel`; returns the temporary path.
    pub fn symlink_temp(&self, target: &[u8], rel: &[u8]) -> Result<Vec<u8>, TargetError> {
        let name = split_last(rel).1;
        for _ in 0..64 {
            let tmp_rel = join(split_last(rel).0, &temp_name(name));
            match self.symlink(target, &tmp_rel) {
                Err(TargetError::Io { cause, .. }) if cause.kind() == std::io::ErrorKind::AlreadyExists => continue,
                other => return other.map(|()| tmp_rel),
            }
        }
        Err(io_err(rel, "create temp symlink for", Errno::EXIST))
    }

    /// Removes leftover temporary files, symlinks and special files in the directory `dir` (empty for the
    /// root) whose names carry one of `nonces` (runs recorded in a journal, whose writer is
    /// gone); returns how many. Anything else, including a directory with such a name, is left
    /// alone. A missing directory has none.
    pub fn remove_temps_in(&self, dir: &[u8], nonces: &[&str]) -> Result<u64, TargetError> {
        let mut listing = match self.open_listing(dir) {
            Ok(listing) => listing,
            Err(e) if e.is_not_found() => return Ok(0),
            Err(e) => return Err(e),
        };
        let mut leftovers = Vec::new();
        while let Some(entry) = listing.read() {
            let entry = entry.map_err(ctx(dir, "read directory"))?;
            let name = entry.file_name().to_bytes();
            if temp_name_nonce(name).is_some_and(|nonce| nonces.iter().any(|n| n.as_bytes() == nonce)) {
                leftovers.push(join(dir, name));
            }
        }
        let mut removed = 0;
        for path in &leftovers {
            // Made for a copy, a symlink, a hard link or a special file: never a directory.
            if matches!(self.stat(path)?.map(|st| st.kind), Some(NodeKind::File | NodeKind::Symlink | NodeKind::Other))
            {
                self.remove_file(path)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// True when the root directory holds no entries at all.
    pub fn is_empty_dir(&self) -> Result<bool, TargetError> {
        let mut listing = self.open_listing(b"")?;
        while let Some(entry) = listing.read() {
            let entry = entry.map_err(ctx(b"", "read directory"))?;
            if !matches!(entry.file_name().to_bytes(), b"." | b"..") {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// A mount point error for whichever of `names` is one, when a call failed with `EBUSY`
    /// (which is how the kernel refuses to rename or unlink a mount point).
    fn busy(&self, rel: &[u8], op: &'static str, names: &[(&Parent<'_>, &[u8], &[u8])]) -> TargetError {
        for (parent, name, path) in names {
            if self.entry_at(parent.as_fd(), name, path).is_ok_and(|e| e.is_some_and(|e| e.foreign)) {
                return mount_point(rel, op, path);
            }
        }
        io_err(rel, op, Errno::BUSY)
    }

    /// `renameat(2)`: it never follows a symlink at either end, so a link at
    /// `to` is replaced, not written through. The kernel refuses a mount point at either end.
    pub fn rename(&self, from: &[u8], to: &[u8]) -> Result<(), TargetError> {
        let (fp, fname) = self.resolve(from)?;
        let (tp, tname) = self.resolve(to)?;
        let same_dir = split_last(from).0 == split_last(to).0;
        let rename = || rfs::renameat(&fp, os(fname), &tp, os(tname));
        let renamed =
            in_writable_dir(tp.as_fd(), || if same_dir { rename() } else { in_writable_dir(fp.as_fd(), rename) });
        match renamed {
            Err(Errno::BUSY) => Err(self.busy(to, "rename onto", &[(&tp, tname, to), (&fp, fname, from)])),
            r => r.map_err(ctx(to, "rename onto")),
        }
    }

    /// `fsync` the directory holding `rel`, making a preceding create or
    /// rename durable (the file's own `fsync` does not cover its name).
    pub fn sync_parent(&self, rel: &[u8]) -> Result<(), TargetError> {
        let (parent, _) = self.resolve(rel)?;
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let fd = rfs::openat(&parent, c".", flags, Mode::empty()).map_err(ctx(rel, "sync parent of"))?;
        rfs::fsync(&fd).map_err(ctx(rel, "sync parent of"))
    }

    /// `syncfs` the target's filesystem: every write made so far under the root (data, names,
    /// metadata) is durable when this returns. One call ends each batch of operations.
    pub fn sync_filesystem(&self) -> Result<(), TargetError> {
        // The root is held as an `O_PATH` descriptor, which `syncfs` refuses.
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let path = self.path().as_os_str().as_bytes();
        let dir = rfs::openat(&self.fd, c".", flags, Mode::empty()).map_err(ctx(path, "open for syncing"))?;
        rfs::syncfs(&dir).map_err(ctx(path, "sync the filesystem of"))
    }

    /// Missing entries are an error here (see [`TargetError::is_not_found`]).
    pub fn remove_file(&self, rel: &[u8]) -> Result<(), TargetError> {
        let (parent, name) = self.resolve(rel)?;
        match in_writable_dir(parent.as_fd(), || rfs::unlinkat(&parent, os(name), AtFlags::empty())) {
            Err(Errno::BUSY) => Err(self.busy(rel, "remove", &[(&parent, name, rel)])),
            r => r.map_err(ctx(rel, "remove")),
        }
    }

    /// A readable directory stream for `rel` (empty = the root). The root fd
    /// is `O_PATH`, which `getdents` rejects, hence the explicit reopen. A mount point is
    /// never opened.
    fn open_listing(&self, rel: &[u8]) -> Result<rfs::Dir, TargetError> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let fd = if rel.is_empty() {
            rfs::openat(&self.fd, c".", flags, Mode::empty())
        } else {
            let (parent, name) = self.resolve(rel)?;
            rfs::openat(&parent, os(name), flags, Mode::empty())
        };
        let fd = fd.map_err(|e| match e {
            Errno::LOOP | Errno::NOTDIR => TargetError::SymlinkInPath { path: lossy(rel) },
            e => io_err(rel, "open directory", e),
        })?;
        if !rel.is_empty()
            && !self.cross_mounts
            && self.mount.is_foreign(&statx_fd(&fd).map_err(ctx(rel, "open directory"))?)
        {
            return Err(mount_point(rel, "open directory", rel));
        }
        rfs::Dir::new(fd).map_err(ctx(rel, "read directory"))
    }

    /// The link text is stored verbatim; it is never resolved by this type.
    pub fn symlink(&self, target: &[u8], rel: &[u8]) -> Result<(), TargetError> {
        if target.is_empty() || target.contains(&0) {
            let why = "symlink target is empty or contains NUL";
            return Err(TargetError::BadPath { path: lossy(rel), why });
        }
        let (parent, name) = self.resolve(rel)?;
        in_writable_dir(parent.as_fd(), || rfs::symlinkat(os(target), &parent, os(name)))
            .map_err(ctx(rel, "create symlink"))
    }

    pub fn read_link(&self, rel: &[u8]) -> Result<Vec<u8>, TargetError> {
        let (parent, name) = self.resolve(rel)?;
        match rfs::readlinkat(&parent, os(name), Vec::new()) {
            Ok(target) => Ok(target.into_bytes()),
            Err(Errno::INVAL) => match self.entry_at(parent.as_fd(), name, rel)? {
                Some(entry) => Err(wrong(rel, "read link", "symlink", entry.node.kind)),
                None => Err(io_err(rel, "read link", Errno::NOENT)),
            },
            Err(e) => Err(io_err(rel, "read link", e)),
        }
    }

    /// Refuses symlinks: Linux has no `lchmod`, and `chmodat` would follow
    /// the link (rustix even rejects `AT_SYMLINK_NOFOLLOW` with `EOPNOTSUPP`).
    /// Note that a later `set_owner` clears setuid/setgid, so chown first.
    pub fn set_mode(&self, rel: &[u8], mode: u32) -> Result<(), TargetError> {
        let (parent, name) = self.resolve(rel)?;
        self.chmod_at(&parent, name, rel, mode)
    }

    /// chmod without following the final component: pin the inode with an
    /// `O_PATH|O_NOFOLLOW` fd (no open side effects, no read permission
    /// needed), refuse if it is a symlink or a mount point, then chmod it through its
    /// `/proc/self/fd` magic link, which names exactly that inode (glibc's
    /// own `fchmodat` emulation). Without /proc, fall back to a real open +
    /// `fchmod` for files and directories.
    fn chmod_at(&self, parent: &Parent<'_>, name: &[u8], rel: &[u8], mode: u32) -> Result<(), TargetError> {
        let op = "set mode of";
        let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let pinned = rfs::openat(parent, os(name), flags, Mode::empty()).map_err(ctx(rel, op))?;
        let st = statx_fd(&pinned).map_err(ctx(rel, op))?;
        let kind = kind_of_mode(st.stx_mode.into());
        if kind == NodeKind::Symlink {
            return Err(wrong(rel, op, "non-symlink", kind));
        }
        if !self.cross_mounts && self.mount.is_foreign(&st) {
            return Err(mount_point(rel, op, rel));
        }
        match chmod_fd(pinned.as_fd(), mode) {
            Err(Errno::NOENT) if matches!(kind, NodeKind::File | NodeKind::Dir) => {
                let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
                let fd = rfs::openat(parent, os(name), flags, Mode::empty()).map_err(ctx(rel, op))?;
                rfs::fchmod(&fd, Mode::from_bits_truncate(mode & 0o7777)).map_err(ctx(rel, op))
            }
            r => r.map_err(ctx(rel, op)),
        }
    }

    /// Works on symlinks too (`AT_SYMLINK_NOFOLLOW`); atime is left alone.
    pub fn set_mtime(&self, rel: &[u8], sec: i64, nsec: u32) -> Result<(), TargetError> {
        let (parent, name) = self.resolve(rel)?;
        let op = "set mtime of";
        self.own_entry(&parent, name, rel, op)?;
        let times = Timestamps {
            last_access: Timespec { tv_sec: 0, tv_nsec: rfs::UTIME_OMIT },
            last_modification: Timespec { tv_sec: sec, tv_nsec: nsec.into() },
        };
        rfs::utimensat(&parent, os(name), &times, AtFlags::SYMLINK_NOFOLLOW).map_err(ctx(rel, op))
    }

    pub fn set_owner(&self, rel: &[u8], uid: u32, gid: u32) -> Result<(), TargetError> {
        let (parent, name) = self.resolve(rel)?;
        let op = "set owner of";
        self.own_entry(&parent, name, rel, op)?;
        let (uid, gid) = (rfs::Uid::from_raw(uid), rfs::Gid::from_raw(gid));
        rfs::chownat(&parent, os(name), Some(uid), Some(gid), AtFlags::SYMLINK_NOFOLLOW).map_err(ctx(rel, op))
    }
}

/// True when this user owns the file and its owner write bit is off.
fn owned_without_write(node: &NodeStat) -> bool {
    node.uid == rustix::process::geteuid().as_raw() && node.mode & 0o200 == 0
}

/// Which inode a name is, for hard links and special files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub dev: u64,
    pub ino: u64,
    pub nlink: u64,
    pub kind: crate::manifest::Kind,
    /// (major, minor) of a device; (0, 0) for everything else.
    pub rdev: (u32, u32),
}

impl Identity {
    /// Both names are the same inode.
    pub fn same_inode(&self, other: &Identity) -> bool {
        (self.dev, self.ino) == (other.dev, other.ino)
    }
}

impl TargetRoot {
    /// The inode at `rel` (never followed), or `None` when nothing is there.
    pub fn identity(&self, rel: &[u8]) -> Result<Option<Identity>, TargetError> {
        use crate::manifest::Kind;
        let (parent, name) = match self.resolve(rel) {
            Ok(r) => r,
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        let flags = AtFlags::SYMLINK_NOFOLLOW | AtFlags::NO_AUTOMOUNT;
        let st = match rfs::statx(&parent, os(name), flags, STATX_WANTED) {
            Ok(st) => st,
            Err(Errno::NOENT) => return Ok(None),
            Err(e) => return Err(io_err(rel, "stat", e)),
        };
        let kind = match FileType::from_raw_mode(u32::from(st.stx_mode)) {
            FileType::RegularFile => Kind::File,
            FileType::Directory => Kind::Dir,
            FileType::Symlink => Kind::Symlink,
            FileType::Socket => Kind::Socket,
            FileType::CharacterDevice => Kind::CharDevice,
            FileType::BlockDevice => Kind::BlockDevice,
            _ => Kind::Fifo,
        };
        let device = matches!(kind, Kind::CharDevice | Kind::BlockDevice);
        Ok(Some(Identity {
            dev: rfs::makedev(st.stx_dev_major, st.stx_dev_minor),
            ino: st.stx_ino,
            nlink: u64::from(st.stx_nlink),
            kind,
            rdev: if device { (st.stx_rdev_major, st.stx_rdev_minor) } else { (0, 0) },
        }))
    }

    /// Makes a new name for the inode at `to` (`linkat` without following a symlink there)
    /// under a temporary name next to `rel`, for an atomic rename over `rel`; returns the
    /// temporary path. Both ends are reached by the no-follow walk, so neither leaves the root.
    pub fn link_temp(&self, to: &[u8], rel: &[u8]) -> Result<Vec<u8>, TargetError> {
        let (to_parent, to_name) = self.resolve(to)?;
        let (parent, name) = self.resolve(rel)?;
        for _ in 0..64 {
            let tmp = temp_name(name);
            let link = || rfs::linkat(&to_parent, os(to_name), &parent, os(&tmp), AtFlags::empty());
            match in_writable_dir(parent.as_fd(), link) {
                Ok(()) => return Ok(join(split_last(rel).0, &tmp)),
                Err(Errno::EXIST) => continue,
                Err(e) => return Err(io_err(rel, "create hard link for", e)),
            }
        }
        Err(io_err(rel, "create hard link for", Errno::EXIST))
    }

    /// Creates a FIFO, socket or device node of `kind` under a temporary name next to `rel`,
    /// with exactly `mode` (umask ignored), for an atomic rename over `rel`; returns the
    /// temporary path.
    pub fn mknod_temp(
        &self,
        rel: &[u8],
        kind: crate::manifest::Kind,
        mode: u32,
        rdev: (u32, u32),
    ) -> Result<Vec<u8>, TargetError> {
        use crate::manifest::Kind;
        let file_type = match kind {
            Kind::Fifo => FileType::Fifo,
            Kind::Socket => FileType::Socket,
            Kind::CharDevice => FileType::CharacterDevice,
            Kind::BlockDevice => FileType::BlockDevice,
            _ => return Err(TargetError::BadPath { path: lossy(rel), why: "not a special file kind" }),
        };
        let (parent, name) = self.resolve(rel)?;
        let dev = rfs::makedev(rdev.0, rdev.1);
        for _ in 0..64 {
            let tmp = temp_name(name);
            let make = || rfs::mknodat(&parent, os(&tmp), file_type, Mode::RUSR | Mode::WUSR, dev);
            match in_writable_dir(parent.as_fd(), make) {
                Ok(()) => {
                    let tmp_rel = join(split_last(rel).0, &tmp);
                    self.chmod_at(&parent, &tmp, &tmp_rel, mode)?;
                    return Ok(tmp_rel);
                }
                Err(Errno::EXIST) => continue,
                Err(Errno::PERM) if matches!(kind, Kind::CharDevice | Kind::BlockDevice) => {
                    return Err(TargetError::Io {
                        path: lossy(rel),
                        op: "create device",
                        cause: std::io::Error::other("creating a device node needs root (CAP_MKNOD)"),
                    });
                }
                Err(e) => return Err(io_err(rel, "create node for", e)),
            }
        }
        Err(io_err(rel, "create node for", Errno::EXIST))
    }
}

/// The root directory's own metadata. Every other method acts on a path below the root; these
/// act on the root through a descriptor opened from the held one, so nothing is looked up by
/// name.
impl TargetRoot {
    fn root_dir(&self, op: &'static str) -> Result<OwnedFd, TargetError> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        rfs::openat(&self.fd, c".", flags, Mode::empty()).map_err(ctx(b".", op))
    }

    pub fn root_stat(&self) -> Result<NodeStat, TargetError> {
        statx_fd(&self.fd).map(|st| node_stat(&st)).map_err(ctx(b".", "stat"))
    }

    pub fn set_root_mode(&self, mode: u32) -> Result<(), TargetError> {
        let fd = self.root_dir("set mode of")?;
        rfs::fchmod(&fd, Mode::from_bits_truncate(mode & 0o7777)).map_err(ctx(b".", "set mode of"))
    }

    pub fn set_root_owner(&self, uid: u32, gid: u32) -> Result<(), TargetError> {
        let fd = self.root_dir("set owner of")?;
        rfs::fchown(&fd, Some(rfs::Uid::from_raw(uid)), Some(rfs::Gid::from_raw(gid)))
            .map_err(ctx(b".", "set owner of"))
    }

    pub fn set_root_mtime(&self, sec: i64, nsec: u32) -> Result<(), TargetError> {
        let fd = self.root_dir("set mtime of")?;
        let times = Timestamps {
            last_access: Timespec { tv_sec: 0, tv_nsec: rfs::UTIME_OMIT },
            last_modification: Timespec { tv_sec: sec, tv_nsec: nsec.into() },
        };
        rfs::futimens(&fd, &times).map_err(ctx(b".", "set mtime of"))
    }

    pub fn root_xattrs(&self) -> Result<Option<Box<Xattrs>>, TargetError> {
        let op = "read extended attributes of";
        let fd = self.root_dir(op)?;
        crate::scan::read_xattrs(&fd).map_err(|cause| TargetError::Io { path: ".".into(), op, cause })
    }

    pub fn set_root_xattrs(&self, desired: &Xattrs) -> Result<(), TargetError> {
        let op = "set extended attributes of";
        let fd = self.root_dir(op)?;
        let current = crate::scan::read_xattrs(&fd)
            .map_err(|cause| TargetError::Io { path: ".".into(), op, cause })?
            .unwrap_or_default();
        for (name, _) in current.iter().filter(|(name, _)| !desired.iter().any(|(n, _)| n == name)) {
            rfs::fremovexattr(&fd, os(name)).map_err(ctx(b".", op))?;
        }
        for (name, value) in desired.iter().filter(|pair| !current.contains(pair)) {
            rfs::fsetxattr(&fd, os(name), value, rfs::XattrFlags::empty()).map_err(ctx(b".", op))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod link_tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, symlink};

    #[test]
    fn link_temp_never_follows_a_symlink_at_either_end() {
        let (d, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let root = TargetRoot::open(d.path()).unwrap();
        std::fs::write(out.path().join("victim"), b"outside").unwrap();
        symlink(out.path(), d.path().join("dir")).unwrap();
        symlink(out.path().join("victim"), d.path().join("sym")).unwrap();
        // Through a symlinked parent: refused, nothing outside gains a name.
        assert!(matches!(root.link_temp(b"dir/victim", b"x"), Err(TargetError::SymlinkInPath { .. })));
        assert!(matches!(root.link_temp(b"sym", b"dir/x"), Err(TargetError::SymlinkInPath { .. })));
        // A symlink as the first name: the new name is the symlink itself, not its target.
        let tmp = root.link_temp(b"sym", b"y").unwrap();
        let linked = std::fs::symlink_metadata(d.path().join(OsStr::from_bytes(&tmp))).unwrap();
        assert!(linked.file_type().is_symlink());
        assert_eq!(linked.ino(), std::fs::symlink_metadata(d.path().join("sym")).unwrap().ino());
        assert_eq!(std::fs::metadata(out.path().join("victim")).unwrap().nlink(), 1);
        assert!(root.identity(&tmp).unwrap().unwrap().same_inode(&root.identity(b"sym").unwrap().unwrap()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};

    fn setup() -> (tempfile::TempDir, TargetRoot) {
        let dir = tempfile::tempdir().unwrap();
        let root = TargetRoot::open(dir.path()).unwrap();
        (dir, root)
    }

    /// An outside directory holding one file, plus a snapshot to compare with.
    fn outside() -> (tempfile::TempDir, Vec<(std::ffi::OsString, Vec<u8>, u32)>) {
        let out = tempfile::tempdir().unwrap();
        std::fs::write(out.path().join("victim"), b"orig").unwrap();
        std::fs::set_permissions(out.path().join("victim"), std::fs::Permissions::from_mode(0o600)).unwrap();
        let snap = snapshot(out.path());
        (out, snap)
    }

    fn snapshot(p: &Path) -> Vec<(std::ffi::OsString, Vec<u8>, u32)> {
        let mut v: Vec<_> = std::fs::read_dir(p)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let md = std::fs::symlink_metadata(e.path()).unwrap();
                let body = if md.is_file() { std::fs::read(e.path()).unwrap() } else { Vec::new() };
                (e.file_name(), body, md.mode())
            })
            .collect();
        v.sort();
        v
    }

    fn read_all(mut f: File) -> Vec<u8> {
        let mut v = Vec::new();
        f.read_to_end(&mut v).unwrap();
        v
    }

    #[test]
    fn bad_paths_rejected() {
        let (_d, root) = setup();
        let bad: &[&[u8]] =
            &[b"", b"/etc/passwd", b"/", b"..", b"a/../b", b".", b"./a", b"a/.", b"a//b", b"a/", b"a\0b"];
        for &p in bad {
            let is_bad = |r: Result<(), TargetError>| matches!(r, Err(TargetError::BadPath { .. }));
            assert!(matches!(root.stat(p), Err(TargetError::BadPath { .. })), "stat {p:?}");
            assert!(is_bad(root.create_dir(p, 0o755)), "create_dir {p:?}");
            assert!(is_bad(root.create_temp(p, 0o644).map(drop)), "create_temp {p:?}");
            assert!(is_bad(root.remove_tree(p).map(drop)), "remove_tree {p:?}");
            assert!(is_bad(root.rename(b"ok", p)), "rename to {p:?}");
            assert!(is_bad(root.symlink(b"x", p)), "symlink {p:?}");
        }
        assert!(matches!(root.symlink(b"a\0b", b"l"), Err(TargetError::BadPath { .. })));
        assert!(root.stat(b"..a/b.c/...").unwrap().is_none(), "dotted names are ordinary names");
    }

    #[test]
    fn symlinked_parent_is_never_traversed() {
        let (d, root) = setup();
        let (out, before) = outside();
        symlink(out.path(), d.path().join("link")).unwrap();
        std::fs::create_dir(d.path().join("real")).unwrap();
        symlink(out.path(), d.path().join("real/deeper")).unwrap();
        std::fs::write(d.path().join("plain"), b"p").unwrap();
        std::fs::write(d.path().join("f"), b"f").unwrap();
        let through: &[&[u8]] = &[b"link/victim", b"real/deeper/victim", b"link/nested/x", b"plain/x"];
        for &p in through {
            let sym = |r: Result<(), TargetError>| matches!(r, Err(TargetError::SymlinkInPath { .. }));
            assert!(sym(root.create_temp(p, 0o644).map(drop)), "create_temp {p:?}");
            assert!(sym(root.open_write(p).map(drop)), "open_write {p:?}");
            assert!(sym(root.open_read(p).map(drop)), "open_read {p:?}");
            assert!(sym(root.create_dir(p, 0o777)), "create_dir {p:?}");
            assert!(sym(root.rename(b"f", p)), "rename into {p:?}");
            assert!(sym(root.rename(p, b"stolen")), "rename out of {p:?}");
            assert!(sym(root.remove_tree(p).map(drop)), "remove_tree {p:?}");
            assert!(sym(root.remove_file(p)), "remove_file {p:?}");
            assert!(sym(root.set_mode(p, 0o777)), "set_mode {p:?}");
            assert!(sym(root.set_mtime(p, 1, 0)), "set_mtime {p:?}");
            assert!(sym(root.symlink(b"/x", p)), "symlink {p:?}");
            assert!(sym(root.stat(p).map(drop)), "stat {p:?}");
        }
        assert_eq!(snapshot(out.path()), before, "outside dir was modified");
        assert_eq!(std::fs::read(d.path().join("f")).unwrap(), b"f");
        assert!(!d.path().join("stolen").exists());
    }

    #[test]
    fn final_symlink_and_specials_are_not_opened() {
        let (d, root) = setup();
        let (out, before) = outside();
        symlink(out.path().join("victim"), d.path().join("ln")).unwrap();
        symlink("/nonexistent/dangling", d.path().join("dangling")).unwrap();
        for p in [&b"ln"[..], b"dangling"] {
            let found_link = |r: Result<File, TargetError>| {
                matches!(r, Err(TargetError::WrongType { found: NodeKind::Symlink, .. }))
            };
            assert!(found_link(root.open_write(p)), "open_write {p:?}");
            assert!(found_link(root.open_read(p)), "open_read {p:?}");
            assert!(matches!(root.set_mode(p, 0o777), Err(TargetError::WrongType { .. })));
            assert!(matches!(root.create_dir(p, 0o755), Err(TargetError::WrongType { .. })));
        }
        assert!(!Path::new("/nonexistent/dangling").exists());
        // A FIFO would block an O_WRONLY open forever; it must be refused up front.
        rfs::mknodat(rfs::CWD, d.path().join("fifo"), FileType::Fifo, Mode::from_bits_truncate(0o644), 0).unwrap();
        let r = root.open_write(b"fifo");
        assert!(matches!(r, Err(TargetError::WrongType { found: NodeKind::Other, .. })), "{r:?}");
        // chmod must reach the FIFO itself without opening it.
        root.set_mode(b"fifo", 0o600).unwrap();
        assert_eq!(root.stat(b"fifo").unwrap().map(|s| s.mode), Some(0o600));
        assert!(matches!(root.open_read(b"."), Err(TargetError::BadPath { .. })));
        std::fs::create_dir(d.path().join("dir")).unwrap();
        assert!(matches!(root.open_write(b"dir"), Err(TargetError::WrongType { found: NodeKind::Dir, .. })));
        assert!(root.open_write(b"missing").unwrap_err().is_not_found());
        assert_eq!(snapshot(out.path()), before);
    }

    #[test]
    fn open_write_patches_in_place() {
        let (d, root) = setup();
        std::fs::write(d.path().join("f"), b"abcdef").unwrap();
        let f = root.open_write(b"f").unwrap();
        assert_eq!(rustix::io::pwrite(&f, b"XY", 2).unwrap(), 2);
        drop(f);
        assert_eq!(std::fs::read(d.path().join("f")).unwrap(), b"abXYef");
        assert_eq!(read_all(root.open_read(b"f").unwrap()), b"abXYef");
    }

    #[test]
    fn remove_tree_unlinks_symlinks_without_entering() {
        let (d, root) = setup();
        let (out, before) = outside();
        symlink(out.path(), d.path().join("link")).unwrap();
        assert_eq!(root.remove_tree(b"link").unwrap(), RemoveStats { entries: 1, bytes: 0 });
        assert!(std::fs::symlink_metadata(d.path().join("link")).is_err());
        // Now a real tree with a symlinked directory deep inside.
        let t = d.path().join("t");
        std::fs::create_dir_all(t.join("a/b/c")).unwrap();
        std::fs::write(t.join("top"), b"12345").unwrap();
        std::fs::write(t.join("a/b/c/leaf"), b"123").unwrap();
        symlink(out.path(), t.join("a/escape")).unwrap();
        symlink(out.path().join("victim"), t.join("a/b/vlink")).unwrap();
        // t, top, a, b, c, leaf, escape, vlink
        assert_eq!(root.remove_tree(b"t").unwrap(), RemoveStats { entries: 8, bytes: 8 });
        assert!(!t.exists());
        assert_eq!(snapshot(out.path()), before, "outside dir was modified");
        assert_eq!(root.remove_tree(b"t").unwrap(), RemoveStats::default());
        std::fs::write(d.path().join("single"), b"xy").unwrap();
        assert_eq!(root.remove_tree(b"single").unwrap(), RemoveStats { entries: 1, bytes: 2 });
    }

    #[test]
    fn temp_write_fsync_rename_round_trip() {
        let (d, root) = setup();
        root.create_dir(b"d", 0o777).unwrap();
        assert_eq!(root.stat(b"d").unwrap().map(|s| (s.kind, s.mode)), Some((NodeKind::Dir, 0o777)));
        std::fs::write(d.path().join("d/f"), b"old").unwrap();
        let (mut f, tmp) = root.create_temp(b"d/f", 0o666).unwrap();
        assert!(tmp.starts_with(b"d/.f.cutover-tmp."), "{}", lossy(&tmp));
        assert!(is_temp_name(split_last(&tmp).1));
        f.write_all(b"new content").unwrap();
        f.sync_all().unwrap();
        drop(f);
        root.rename(&tmp, b"d/f").unwrap();
        root.sync_parent(b"d/f").unwrap();
        assert_eq!(read_all(root.open_read(b"d/f").unwrap()), b"new content");
        let st = root.stat(b"d/f").unwrap().unwrap();
        assert_eq!((st.kind, st.size, st.mode), (NodeKind::File, 11, 0o666), "mode must ignore umask");
        assert!(root.stat(&tmp).unwrap().is_none());
        // Two temps for the same name never collide, and both are found as leftovers of this
        // run, and only of this run.
        let (_a, ta) = root.create_temp(b"d/f", 0o600).unwrap();
        let (_b, tb) = root.create_temp(b"d/f", 0o600).unwrap();
        assert_ne!(ta, tb);
        std::fs::write(d.path().join("d/.g.cutover-tmp.0123456789abcdef.1"), b"a user's").unwrap();
        std::fs::write(d.path().join("d/.h.cutover-tmp.999.1"), b"a user's").unwrap();
        assert_eq!(root.remove_temps_in(b"d", &["fedcba9876543210"]).unwrap(), 0, "another run's nonce");
        assert_eq!(root.remove_temps_in(b"d", &[temp_nonce()]).unwrap(), 2);
        assert!(d.path().join("d/.g.cutover-tmp.0123456789abcdef.1").exists());
        assert!(d.path().join("d/.h.cutover-tmp.999.1").exists());
        assert!(root.stat(&ta).unwrap().is_none() && root.stat(&tb).unwrap().is_none());
        assert_eq!(read_all(root.open_read(b"d/f").unwrap()), b"new content", "the real file stays");
        // A name at NAME_MAX still yields a valid temp name.
        let long = vec![b'n'; 255];
        let (_c, tl) = root.create_temp(&long, 0o600).unwrap();
        assert!(tl.len() <= NAME_MAX && is_temp_name(&tl), "{}", tl.len());
    }

    #[test]
    fn rename_replaces_symlink_instead_of_following_it() {
        let (d, root) = setup();
        let (out, before) = outside();
        symlink(out.path().join("victim"), d.path().join("f")).unwrap();
        let (mut t, tmp) = root.create_temp(b"f", 0o644).unwrap();
        t.write_all(b"mine").unwrap();
        root.rename(&tmp, b"f").unwrap();
        assert_eq!(root.stat(b"f").unwrap().map(|s| s.kind), Some(NodeKind::File));
        assert_eq!(std::fs::read(d.path().join("f")).unwrap(), b"mine");
        assert_eq!(snapshot(out.path()), before);
    }

    #[test]
    fn stat_absent_is_none() {
        let (_d, root) = setup();
        assert!(root.stat(b"nope").unwrap().is_none());
        assert!(root.stat(b"no/such/parent").unwrap().is_none());
        assert!(root.remove_file(b"nope").unwrap_err().is_not_found());
    }

    #[test]
    fn metadata_and_link_round_trip() {
        let (d, root) = setup();
        std::fs::write(d.path().join("f"), b"x").unwrap();
        root.set_mode(b"f", 0o4751).unwrap();
        assert_eq!(root.stat(b"f").unwrap().unwrap().mode, 0o4751);
        root.set_mtime(b"f", 1_234_567_890, 123_456_789).unwrap();
        let st = root.stat(b"f").unwrap().unwrap();
        assert_eq!((st.mtime_sec, st.mtime_nsec), (1_234_567_890, 123_456_789));

        root.symlink(b"/etc/passwd", b"abs").unwrap();
        assert_eq!(root.read_link(b"abs").unwrap(), b"/etc/passwd");
        assert_eq!(root.stat(b"abs").unwrap().map(|s| s.kind), Some(NodeKind::Symlink));
        root.symlink(b"f", b"rel").unwrap();
        root.set_mtime(b"rel", 1_000_000_000, 5).unwrap();
        let link = root.stat(b"rel").unwrap().unwrap();
        assert_eq!((link.mtime_sec, link.mtime_nsec), (1_000_000_000, 5));
        assert_eq!(root.stat(b"f").unwrap().unwrap().mtime_sec, 1_234_567_890, "target untouched");
        assert!(matches!(root.set_mode(b"rel", 0o600), Err(TargetError::WrongType { .. })));
        assert_eq!(root.stat(b"f").unwrap().unwrap().mode, 0o4751, "link target untouched");
        assert!(matches!(root.read_link(b"f"), Err(TargetError::WrongType { found: NodeKind::File, .. })));

        let me = std::fs::metadata(d.path()).unwrap();
        root.set_owner(b"rel", me.uid(), me.gid()).unwrap();
        if rustix::process::geteuid().is_root() {
            root.set_owner(b"rel", 4321, 8765).unwrap();
            let l = root.stat(b"rel").unwrap().unwrap();
            assert_eq!((l.uid, l.gid), (4321, 8765));
            let f = root.stat(b"f").unwrap().unwrap();
            assert_eq!((f.uid, f.gid), (me.uid(), me.gid()), "chown followed the link");
        }
    }

    #[test]
    fn non_utf8_names_round_trip() {
        let (d, root) = setup();
        root.create_dir(b"dir\xff", 0o755).unwrap();
        let (mut f, tmp) = root.create_temp(b"dir\xff/na\xfeme", 0o644).unwrap();
        f.write_all(b"bytes").unwrap();
        root.rename(&tmp, b"dir\xff/na\xfeme").unwrap();
        let on_disk = d.path().join(OsStr::from_bytes(b"dir\xff")).join(OsStr::from_bytes(b"na\xfeme"));
        assert_eq!(std::fs::read(on_disk).unwrap(), b"bytes");
        assert_eq!(read_all(root.open_read(b"dir\xff/na\xfeme").unwrap()), b"bytes");
        root.symlink(b"t\xfd", b"dir\xff/l\xfc").unwrap();
        assert_eq!(root.read_link(b"dir\xff/l\xfc").unwrap(), b"t\xfd");
        assert_eq!(root.remove_tree(b"dir\xff").unwrap(), RemoveStats { entries: 3, bytes: 5 });
    }

    #[test]
    fn root_may_be_reached_through_a_symlink_but_must_be_a_dir() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("real")).unwrap();
        symlink(d.path().join("real"), d.path().join("via")).unwrap();
        let root = TargetRoot::open(&d.path().join("via")).unwrap();
        root.create_dir(b"x", 0o755).unwrap();
        assert!(d.path().join("real/x").is_dir());
        std::fs::write(d.path().join("file"), b"").unwrap();
        assert!(matches!(TargetRoot::open(&d.path().join("file")), Err(TargetError::Io { .. })));
    }

    #[test]
    fn temp_name_recognition() {
        assert_eq!(temp_name_nonce(b".f.cutover-tmp.0123456789abcdef.3"), Some(&b"0123456789abcdef"[..]));
        assert!(is_temp_name(&temp_name(b"f")));
        assert_eq!(temp_name_nonce(&temp_name(b"f")), Some(temp_nonce().as_bytes()));
        assert!(!is_temp_name(b".f.cutover-tmp.12.3"), "the names of earlier versions carry no nonce");
        assert!(!is_temp_name(b"f.cutover-tmp.0123456789abcdef.3"));
        assert!(!is_temp_name(b".f.cutover-tmp.0123456789abcdef"));
        assert!(!is_temp_name(b".f.cutover-tmp.0123456789ABCDEF.3"));
        assert!(!is_temp_name(b".f.cutover-tmp.0123456789abcdef.3x"));
        assert!(!is_temp_name(b".cutover-tmp."));
    }
}
