//! Stage 1: walk a directory tree in parallel and hash it into a [`Manifest`].
//!
//! See `walk.rs` for how the tree is traversed safely and `hash.rs` for how a file becomes its
//! BLAKE3 root and chunk CVs.

mod cache;
mod hash;
mod prefetch;
mod shard;
mod stream;
mod walk;
mod xattr;

pub use cache::{Cache, Scrub, Verified, scrub_slice};
pub use stream::ScanTally;
pub(crate) use xattr::read_xattrs;

use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};

use crate::digest::ChunkSize;
use crate::exclude::Excludes;
use std::os::fd::OwnedFd;

use crate::manifest::{Entry, Header, Kind, Manifest, ManifestWriter, MetaSet};
use crate::path::RelPath;

/// How to scan.
#[derive(Clone, Debug)]
pub struct ScanOptions {
    pub chunk_size: ChunkSize,
    /// Record extended attributes (one more system call per file; off by default).
    pub xattrs: bool,
    /// Paths left out of the scan, with everything below them.
    pub exclude: Excludes,
    /// Stay on the root's filesystem: a directory where another filesystem is mounted is
    /// recorded, but as if empty (rsync's `-x`).
    pub one_file_system: bool,
    /// An earlier manifest of the same tree: files it vouches for are not read (see
    /// [`Cache`]). Ignored by [`scan_pair`], which has two trees.
    pub cache: Option<std::sync::Arc<Cache>>,
    /// Read only the files this shard owns (every directory is still listed): the manifest is
    /// then a part, for `manifest::merge_parts`.
    pub shard: Option<crate::shard::Shard>,
}

impl Default for ScanOptions {
    fn default() -> Self {
        ScanOptions {
            chunk_size: ChunkSize::DEFAULT,
            xattrs: false,
            exclude: Excludes::default(),
            one_file_system: false,
            cache: None,
            shard: None,
        }
    }
}

/// Receives progress from a scan. Called from many threads at once, so implementations
/// should only bump counters; a terminal implementation renders them on its own schedule.
pub trait Progress: Sync {
    /// A regular file of `bytes` bytes has been hashed (or found unreadable).
    fn file_done(&self, _bytes: u64) {}
    /// A directory has been listed.
    fn dir_done(&self) {}
}

/// Progress that goes nowhere: for tests, cron and library callers.
#[derive(Debug, Clone, Copy, Default)]
pub struct Silent;

impl Progress for Silent {}

/// A root that cannot be scanned at all. Problems with single entries are recorded in the
/// manifest instead, so one unreadable file does not stop a scan of millions.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("{path}: cannot open: {cause}")]
    Open { path: PathBuf, cause: std::io::Error },
    #[error("{path}: not a directory")]
    NotADirectory { path: PathBuf },
    #[error("cannot write the manifest's spool file: {cause}")]
    Spool { cause: std::io::Error },
}

/// Scans the directory `root` (which may itself be reached through a symlink).
pub fn scan(root: &Path, options: &ScanOptions) -> Result<Manifest, ScanError> {
    scan_with_progress(root, options, &Silent)
}

/// [`scan`], reporting progress as it goes.
pub fn scan_with_progress(root: &Path, options: &ScanOptions, progress: &dyn Progress) -> Result<Manifest, ScanError> {
    let started = crate::time::now_rfc3339();
    let (fd, entry) = open_root(root)?;
    let walker = walk::Walker::new(options, progress);
    let mut entries = walker.walk_dir(fd, entry);
    crate::manifest::link_hard_links(&mut entries);
    Ok(Manifest { header: header(root, options, started), entries })
}

/// [`scan_with_progress`] writing each entry to a manifest as soon as it is complete, through a
/// [`ManifestWriter`] spooling to `spool` (an empty file, see [`crate::manifest::spool_file`]),
/// so memory holds the directories being walked, not the tree. Directories are walked one at a
/// time, in order; the files of each are hashed in parallel. Gives the writer, ready for
/// [`ManifestWriter::finish`], and what the scan saw.
pub fn scan_streaming(
    root: &Path,
    options: &ScanOptions,
    progress: &dyn Progress,
    spool: std::fs::File,
) -> Result<(ManifestWriter, ScanTally), ScanError> {
    let started = crate::time::now_rfc3339();
    let (fd, entry) = open_root(root)?;
    let mut writer = ManifestWriter::new(header(root, options, started), spool);
    let walker = walk::Walker::new(options, progress).in_order();
    let mut sink = stream::Streamed::new(&mut writer);
    walker.walk_into(fd, entry, &mut sink);
    if let Some(cause) = sink.error.take() {
        return Err(ScanError::Spool { cause });
    }
    let tally = sink.into_tally();
    writer.header_mut().finished = crate::time::now_rfc3339();
    Ok((writer, tally))
}

/// Scans a source and a target directory together: the same two manifests as two scans, but
/// a file present on both sides with the same size is read in one pass and each chunk whose
/// bytes agree is hashed once, which is what most of a migrated tree is.
pub fn scan_pair(
    source: &Path,
    target: &Path,
    options: &ScanOptions,
    progress: &dyn Progress,
) -> Result<(Manifest, Manifest), ScanError> {
    let started = crate::time::now_rfc3339();
    let (source_fd, source_entry) = open_root(source)?;
    let (target_fd, target_entry) = open_root(target)?;
    let options = &ScanOptions { cache: None, shard: None, ..options.clone() };
    let walker = walk::Walker::new(options, progress);
    let [mut source_entries, mut target_entries] =
        walker.walk_pair([source_fd, target_fd], [source_entry, target_entry]);
    crate::manifest::link_hard_links(&mut source_entries);
    crate::manifest::link_hard_links(&mut target_entries);
    Ok((
        Manifest { header: header(source, options, started.clone()), entries: source_entries },
        Manifest { header: header(target, options, started), entries: target_entries },
    ))
}

/// [`scan_pair`] with a cache for each side (`[source, target]`): each tree is then walked on
/// its own, with its own cache, both at once. Without caches this is [`scan_pair`].
pub fn scan_pair_cached(
    source: &Path,
    target: &Path,
    options: &ScanOptions,
    caches: [Option<std::sync::Arc<Cache>>; 2],
    progress: &dyn Progress,
) -> Result<(Manifest, Manifest), ScanError> {
    if caches.iter().all(Option::is_none) {
        return scan_pair(source, target, options, progress);
    }
    let [source_cache, target_cache] = caches;
    let source_options = ScanOptions { cache: source_cache, ..options.clone() };
    let target_options = ScanOptions { cache: target_cache, ..options.clone() };
    let (source, target) = rayon::join(
        || scan_with_progress(source, &source_options, progress),
        || scan_with_progress(target, &target_options, progress),
    );
    Ok((source?, target?))
}

/// The root directory opened for a walk, with its entry. The root itself may be reached through
/// symlinks: the operator named it.
fn open_root(root: &Path) -> Result<(OwnedFd, Entry), ScanError> {
    let open_error = |e: rustix::io::Errno| ScanError::Open { path: root.to_path_buf(), cause: e.into() };
    let fd = rustix::fs::open(root, OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK, Mode::empty())
        .map_err(open_error)?;
    let stat = rustix::fs::fstat(&fd).map_err(open_error)?;
    let entry = walk::entry_from_stat(RelPath::root(), &stat);
    if entry.kind != Kind::Dir {
        return Err(ScanError::NotADirectory { path: root.to_path_buf() });
    }
    Ok((fd, entry))
}

fn header(root: &Path, options: &ScanOptions, started: String) -> Header {
    Header {
        tool: format!("cutover {}", env!("CARGO_PKG_VERSION")),
        chunk_size: options.chunk_size,
        metadata: MetaSet { xattr: options.xattrs, ..MetaSet::ALL },
        root: std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf()).display().to_string(),
        exclude: options.exclude.clone(),
        one_file_system: options.one_file_system,
        hard_links: true,
        rdev: true,
        stamps: true,
        shard: options.shard,
        scrub: options.cache.as_ref().and_then(|cache| match cache.scrub() {
            Scrub::Slice { slice, of } => Some((slice, of)),
            _ => None,
        }),
        started,
        finished: crate::time::now_rfc3339(),
    }
}

/// The BLAKE3 root of the first `len` bytes of an open file, hashed as a scan would (used by
/// `apply` to verify what it wrote).
pub(crate) fn hash_file(file: &std::fs::File, len: u64, chunk: ChunkSize) -> Result<crate::digest::Digest, String> {
    hash::hash_file(file, len, chunk).map(|h| h.root).map_err(|e| e.to_string())
}

/// `b3sum`-compatible lines (`HASH  path`) for every regular file, in manifest order, so
/// `b3sum --check` run inside the root accepts them. Names are written as b3sum writes them: a
/// name holding `\`, a newline or a carriage return is escaped (`\\`, `\n`, `\r`) and its
/// line starts with `\`; a name that is not UTF-8 is written lossily, as b3sum does, and
/// cannot be checked by b3sum.
pub fn b3sum_lines(manifest: &Manifest) -> impl Iterator<Item = String> + '_ {
    manifest.entries.iter().filter(|e| e.kind == Kind::File).filter_map(|entry| {
        let digest = entry.digest?;
        let name = String::from_utf8_lossy(entry.path.as_bytes());
        Some(if name.contains(['\\', '\n', '\r']) {
            let escaped = name.replace('\\', "\\\\").replace('\n', "\\n").replace('\r', "\\r");
            format!("\\{digest}  {escaped}\n")
        } else {
            format!("{digest}  {name}\n")
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Problem;

    fn write(root: &Path, rel: &str, bytes: &[u8]) {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    /// The manifest a streamed scan writes, read back; its tally checked against it.
    fn streamed(root: &Path, options: &ScanOptions) -> Manifest {
        let spool = crate::manifest::spool_file(&std::env::temp_dir()).unwrap();
        let (writer, tally) = scan_streaming(root, options, &Silent, spool).unwrap();
        let mut bytes = Vec::new();
        writer.finish(&mut bytes).unwrap();
        let manifest = crate::manifest::read_manifest_from(&bytes[..], Path::new("streamed")).unwrap();
        assert_eq!(tally.entries, manifest.entries.len() as u64);
        assert_eq!(tally.root, manifest.root_digest());
        let files = manifest.entries.iter().filter(|e| e.kind == Kind::File);
        assert_eq!((tally.files, tally.bytes), files.fold((0, 0), |(n, b), e| (n + 1, b + e.size)));
        manifest
    }

    /// Entries without their stamps: a file changed less than a second before a scan has
    /// none, so two scans of one tree a moment apart may differ there and only there.
    fn unstamped(mut entries: Vec<Entry>) -> Vec<Entry> {
        entries.iter_mut().for_each(|entry| entry.stamp = None);
        entries
    }

    #[test]
    fn a_pair_scan_gives_exactly_the_manifests_of_two_scans() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let big: Vec<u8> = (0..(3u32 << 20) + 777).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
        let mut big_changed = big.clone();
        big_changed[(2 << 20) + 5] ^= 1;
        let small: Vec<u8> = (0..70_000u32).map(|i| (i % 251) as u8).collect();
        let mut small_changed = small.clone();
        small_changed[69_999] ^= 0x80;
        for (rel, left, right) in [
            ("same/big.bin", &big[..], &big[..]),
            ("same/small.bin", &small[..], &small[..]),
            ("changed/big.bin", &big[..], &big_changed[..]),
            ("changed/small.bin", &small[..], &small_changed[..]),
            ("sizes/grown.bin", &small[..1000], &small[..1001]),
            ("empty", b"", b""),
            ("one/chunk.bin", &big[..4096], &big[..4096]),
        ] {
            write(a.path(), rel, left);
            write(b.path(), rel, right);
        }
        write(a.path(), "only-source/x", b"x");
        write(b.path(), "only-target/y", b"y");
        write(a.path(), "swap", b"file here");
        write(b.path(), "swap/inside", b"dir there");
        std::os::unix::fs::symlink("same/big.bin", a.path().join("link")).unwrap();
        std::os::unix::fs::symlink("same/small.bin", b.path().join("link")).unwrap();
        // Hard links are grouped per tree, the same way in a pair scan.
        std::fs::hard_link(a.path().join("same/small.bin"), a.path().join("sizes/small-link")).unwrap();
        std::fs::hard_link(b.path().join("empty"), b.path().join("one/empty-link")).unwrap();
        for chunk in [4096u64, 1 << 20] {
            let options = ScanOptions { chunk_size: ChunkSize::new(chunk).unwrap(), ..ScanOptions::default() };
            let (pa, pb) = scan_pair(a.path(), b.path(), &options, &Silent).unwrap();
            let single = |root: &Path| unstamped(scan(root, &options).unwrap().entries);
            assert_eq!(unstamped(pa.entries.clone()), single(a.path()), "source side, chunk {chunk}");
            assert_eq!(unstamped(pb.entries.clone()), single(b.path()), "target side, chunk {chunk}");
            for root in [a.path(), b.path()] {
                assert_eq!(unstamped(streamed(root, &options).entries), single(root), "streamed, chunk {chunk}");
            }
            assert_ne!(pa.root_digest(), pb.root_digest());
            let first =
                |m: &Manifest, path: &[u8]| m.find(&RelPath::parse(path).unwrap()).unwrap().hard_link().cloned();
            assert_eq!(first(&pa, b"sizes/small-link"), Some(RelPath::parse(b"same/small.bin").unwrap()));
            assert_eq!(first(&pb, b"one/empty-link"), Some(RelPath::parse(b"empty").unwrap()));
            assert_eq!(first(&pa, b"same/small.bin"), None, "the first name is not marked");
        }
    }

    /// Every path below `dir`, relative to `root`, by an independent walk.
    fn paths_below(root: &Path, dir: &Path, out: &mut Vec<Vec<u8>>) {
        use std::os::unix::ffi::OsStrExt;
        for item in std::fs::read_dir(dir).unwrap() {
            let path = item.unwrap().path();
            out.push(path.strip_prefix(root).unwrap().as_os_str().as_bytes().to_vec());
            if path.symlink_metadata().unwrap().is_dir() {
                paths_below(root, &path, out);
            }
        }
    }

    #[test]
    fn trees_deeper_than_the_parallel_levels_and_the_open_frames_walk_as_shallow_ones_do() {
        // At every level: the chain goes on in `d`, a side directory `e` holding a file, and a
        // file `f`; so below the parallel levels every frame has a subdirectory left when it
        // enters `d`, and frames past the open window close their descriptors and reopen them.
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let mut level_dir = PathBuf::new();
        for level in 0..110 {
            for root in [a.path(), b.path()] {
                write(root, level_dir.join("e/x").to_str().unwrap(), format!("x{level}").as_bytes());
                write(root, level_dir.join("f").to_str().unwrap(), format!("f{level}").as_bytes());
            }
            match level {
                50 => write(b.path(), level_dir.join("f").to_str().unwrap(), b"changed"),
                60 => {
                    std::fs::remove_dir_all(b.path().join(&level_dir).join("e")).unwrap();
                    write(b.path(), level_dir.join("e").to_str().unwrap(), b"a file now");
                }
                70 => write(b.path(), level_dir.join("g/only-target").to_str().unwrap(), b"g"),
                75 => std::fs::remove_dir_all(b.path().join(&level_dir).join("e")).unwrap(),
                _ => {}
            }
            level_dir.push("d");
        }
        write(a.path(), level_dir.join("bottom").to_str().unwrap(), b"bottom");
        write(b.path(), level_dir.join("bottom").to_str().unwrap(), b"bottom");
        for chunk in [1024u64, 1 << 20] {
            let options = ScanOptions { chunk_size: ChunkSize::new(chunk).unwrap(), ..ScanOptions::default() };
            let (pa, pb) = scan_pair(a.path(), b.path(), &options, &Silent).unwrap();
            for (root, paired) in [(a.path(), &pa), (b.path(), &pb)] {
                let single = scan(root, &options).unwrap();
                assert_eq!(unstamped(paired.entries.clone()), unstamped(single.entries.clone()), "{}", root.display());
                let streamed = streamed(root, &options);
                assert_eq!(
                    unstamped(streamed.entries),
                    unstamped(single.entries.clone()),
                    "streamed {}",
                    root.display()
                );
                crate::manifest::check_tree(&single.entries).unwrap();
                assert!(single.entries.iter().all(|e| e.problem.is_none() && e.digest.is_some()));
                let mut expected = vec![Vec::new()];
                paths_below(root, root, &mut expected);
                let mut walked: Vec<Vec<u8>> = single.entries.iter().map(|e| e.path.as_bytes().to_vec()).collect();
                walked.sort();
                expected.sort();
                assert_eq!(walked, expected);
            }
            let changed: Vec<String> = crate::diff::diff(&pa, &pb, &crate::diff::DiffOptions::default())
                .differences
                .iter()
                .map(|d| format!("{} {}", d.path.depth(), d.path.name().escape_ascii()))
                .collect();
            // In path order: deeper first, as `d` sorts before `e`, `f` and `g`.
            assert_eq!(changed, ["76 e", "71 g", "61 e", "51 f"]);
        }
    }

    /// Moves a directory of the tree away once the walk has listed `after` directories.
    struct MoveAway {
        listed: std::sync::atomic::AtomicUsize,
        after: usize,
        from: PathBuf,
        to: PathBuf,
    }

    impl Progress for MoveAway {
        fn dir_done(&self) {
            if self.listed.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == self.after {
                std::fs::rename(&self.from, &self.to).unwrap();
            }
        }
    }

    #[test]
    fn a_directory_moved_away_while_the_walk_is_below_it_is_reported_not_walked_elsewhere() {
        // 110 levels of `d`, each with a side directory `e` left to enter after `d`. Deep in the
        // walk, level 31 is moved under `elsewhere`: coming back up, level 31's `..` is no longer
        // level 30, whose descriptor was closed long before.
        let root = tempfile::tempdir().unwrap();
        let level = |n: usize| root.path().join("d/".repeat(n));
        for n in 0..110 {
            write(&level(n), "e/x", b"x");
        }
        write(root.path(), "elsewhere/e/decoy", b"not level 30's");
        let mover = MoveAway { listed: 0.into(), after: 95, from: level(31), to: root.path().join("elsewhere/moved") };
        let manifest = scan_with_progress(root.path(), &ScanOptions::default(), &mover).unwrap();
        assert!(mover.listed.load(std::sync::atomic::Ordering::SeqCst) >= 95, "the move never happened");
        let level_30 = RelPath::parse("d/".repeat(30).trim_end_matches('/').as_bytes()).unwrap();
        let entry = manifest.find(&level_30).unwrap();
        assert!(matches!(entry.problem.as_deref(), Some(Problem::Unstable(_))), "{entry:?}");
        // Without the check, `elsewhere` (holding an `e` with a decoy) was walked as level 30.
        assert!(manifest.find(&level_30.join(b"e")).is_none(), "level 30's e was looked for elsewhere");
        assert_eq!(manifest.root_digest(), None);
        crate::manifest::check_tree(&manifest.entries).unwrap();
    }
}
