//! Writes the parts of a synthetic sharded scan, for timing `cutover merge` on many entries
//! without generating millions of files: `cargo bench --bench shard_parts -- OUT ENTRIES N`
//! writes OUT/part.1 .. OUT/part.N (a root, ENTRIES/100 directories of 100 files each, every
//! file owned by the shard its path hashes to, as `scan --shard I/N` would record them).

use std::path::PathBuf;

use cutover::digest::{ChunkSize, Digest};
use cutover::manifest::{Entry, Header, Kind, Manifest, MetaSet, Mtime, dir_digest, write_manifest};
use cutover::path::RelPath;
use cutover::shard::Shard;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let out = PathBuf::from(args.first().map_or("/tmp/shard-parts", String::as_str));
    let entries: u64 = args.get(1).and_then(|n| n.parse().ok()).unwrap_or(1_000_000);
    let count: u32 = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(4);
    std::fs::create_dir_all(&out).unwrap();
    let dirs = entries.div_ceil(100);
    for index in 1..=count {
        let shard = Shard::new(index, count).unwrap();
        let mut list = Vec::with_capacity((entries / u64::from(count) + dirs + 1) as usize);
        let mut root = Entry::new(RelPath::root(), Kind::Dir);
        root.mode = 0o755;
        list.push(root);
        let mut dir_entries = Vec::new();
        for d in 0..dirs {
            let mut dir = Entry::new(RelPath::root().join(format!("d{d:07}").as_bytes()), Kind::Dir);
            dir.mode = 0o755;
            dir.mtime = Mtime { sec: 1_767_225_600, nsec: 0 };
            let files: Vec<Entry> = (0..100)
                .map(|f| {
                    let mut file = Entry::new(dir.path.join(format!("f{f:03}").as_bytes()), Kind::File);
                    file.size = f;
                    file.mode = 0o644;
                    file.mtime = Mtime { sec: 1_767_225_600, nsec: 0 };
                    file.digest = Some(Digest(*blake3::hash(file.path.as_bytes()).as_bytes()));
                    file
                })
                .filter(|file| shard.owns_path(file.path.as_bytes()))
                .collect();
            dir.digest = dir_digest(&files);
            dir_entries.push(dir.clone());
            list.push(dir);
            list.extend(files);
        }
        list[0].digest = dir_digest(&dir_entries);
        let header = Header {
            tool: "shard_parts bench".into(),
            chunk_size: ChunkSize::DEFAULT,
            metadata: MetaSet { xattr: false, ..MetaSet::ALL },
            root: "/synthetic".into(),
            exclude: Default::default(),
            one_file_system: false,
            hard_links: true,
            rdev: true,
            stamps: false,
            scrub: None,
            shard: Some(shard),
            started: "2026-12-02T00:00:00.000Z".into(),
            finished: "2026-12-02T00:00:01.000Z".into(),
        };
        let manifest = Manifest { header, entries: list };
        let file = std::fs::File::create(out.join(format!("part.{index}"))).unwrap();
        write_manifest(&manifest, file).unwrap();
    }
}
