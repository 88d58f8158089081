//! Writes a synthetic manifest of FILES small files in the documented format
//! (docs/manifest.md), in bounded memory, for measuring `cutover diff` of big manifests without
//! scanning big trees.
//!
//! usage: cargo run --release --example synth-manifest -- OUT FILES [CHANGED]
//!
//! The tree is `NNN/NNN/fNN`: 100 files per directory, 100 directories per top directory.
//! File contents are not real (a file's digest is the BLAKE3 of its index and the seed), but
//! every directory hash is computed as a scan computes it, so the manifest passes every check.
//! With CHANGED, that many files spread over the tree get other digests and sizes: two
//! manifests written with and without it differ in exactly those files.

use std::io::Write;
use std::path::Path;

use cutover::digest::{ChunkSize, Digest};
use cutover::exclude::Excludes;
use cutover::manifest::{DirNode, Entry, Header, Kind, ManifestWriter, MetaSet, Mtime, spool_file};
use cutover::path::RelPath;

const PER_DIR: u64 = 100;
const MTIME: Mtime = Mtime { sec: 1_767_225_600, nsec: 0 };

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(out), Some(files)) = (args.first(), args.get(1).and_then(|n| n.parse::<u64>().ok())) else {
        eprintln!("usage: synth-manifest OUT FILES [CHANGED]");
        std::process::exit(2);
    };
    let changed = args.get(2).map_or(0, |n| n.parse::<u64>().expect("CHANGED is a number"));
    if let Err(e) = write(Path::new(out), files, changed) {
        eprintln!("synth-manifest: {out}: {e}");
        std::process::exit(2);
    }
}

fn entry(path: RelPath, kind: Kind) -> Entry {
    let mut entry = Entry::new(path, kind);
    entry.mode = if kind == Kind::Dir { 0o755 } else { 0o644 };
    entry.mtime = MTIME;
    entry
}

/// A directory open for writing: its entry, its record's slot and its node hash so far.
struct Open {
    entry: Entry,
    slot: cutover::manifest::DirSlot,
    node: DirNode,
}

fn open(writer: &mut ManifestWriter, path: RelPath) -> std::io::Result<Open> {
    let entry = entry(path, Kind::Dir);
    let slot = writer.open_dir(&entry)?;
    Ok(Open { entry, slot, node: DirNode::new() })
}

fn close(writer: &mut ManifestWriter, mut dir: Open, parent: Option<&mut Open>) -> std::io::Result<()> {
    dir.entry.digest = dir.node.finish();
    writer.close_dir(dir.slot, &dir.entry)?;
    if let Some(parent) = parent {
        parent.node.add(&dir.entry);
    }
    Ok(())
}

fn write(out: &Path, files: u64, changed: u64) -> std::io::Result<()> {
    let header = Header {
        tool: "synth-manifest".into(),
        chunk_size: ChunkSize::DEFAULT,
        metadata: MetaSet { xattr: false, ..MetaSet::ALL },
        root: "/synthetic".into(),
        exclude: Excludes::default(),
        one_file_system: false,
        hard_links: true,
        rdev: true,
        stamps: false,
        scrub: None,
        shard: None,
        started: "2026-12-02T00:00:00.000Z".into(),
        finished: "2026-12-02T00:00:00.000Z".into(),
    };
    let spool = spool_file(out.parent().unwrap_or(Path::new(".")))?;
    let mut writer = ManifestWriter::new(header, spool);
    let every = files.checked_div(changed).map_or(u64::MAX, |every| every.max(1));
    let mut root = open(&mut writer, RelPath::root())?;
    let dirs = files.div_ceil(PER_DIR);
    let mut file = 0;
    for top in 0..dirs.div_ceil(PER_DIR) {
        let top_path = RelPath::root().join(format!("{top:04}").as_bytes());
        let mut top_dir = open(&mut writer, top_path.clone())?;
        for mid in 0..PER_DIR.min(dirs - top * PER_DIR) {
            let mid_path = top_path.join(format!("{mid:03}").as_bytes());
            let mut mid_dir = open(&mut writer, mid_path.clone())?;
            for _ in 0..PER_DIR.min(files - file) {
                let mut f = entry(mid_path.join(format!("f{:02}", file % PER_DIR).as_bytes()), Kind::File);
                let change = file % every == every / 2 && file / every < changed;
                let mut seed = blake3::Hasher::new();
                seed.update(&file.to_le_bytes());
                seed.update(if change { b"changed" } else { b"original" });
                f.size = file % 101 + u64::from(change);
                f.digest = Some(Digest(*seed.finalize().as_bytes()));
                writer.write(&f, None)?;
                mid_dir.node.add(&f);
                file += 1;
            }
            close(&mut writer, mid_dir, Some(&mut top_dir))?;
        }
        close(&mut writer, top_dir, Some(&mut root))?;
    }
    close(&mut writer, root, None)?;
    let mut output = std::io::BufWriter::new(std::fs::File::create(out)?);
    writer.finish(&mut output)?;
    output.flush()
}
