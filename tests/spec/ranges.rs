//! Divergent byte ranges: exactly the chunks whose bytes differ, merged when adjacent, and from
//! the first chunk whose length differs between the sides, everything to the longer end.

use crate::support::{Tree, diff_json, noise};

const K4: u64 = 4096;

/// One file of a fixture pair: how long it is on each side, which target bytes are flipped,
/// and the ranges a diff with `--chunk-size 4K` must report.
struct Case {
    name: &'static str,
    source_len: u64,
    target_len: u64,
    flips: &'static [u64],
    ranges: &'static [(u64, u64)],
}

const CASES: &[Case] = &[
    Case {
        name: "one-byte-in-second-chunk",
        source_len: 10_000,
        target_len: 10_000,
        flips: &[5000],
        ranges: &[(K4, K4)],
    },
    Case { name: "first-byte", source_len: 4097, target_len: 4097, flips: &[0], ranges: &[(0, K4)] },
    Case { name: "last-byte-of-full-chunks", source_len: 8192, target_len: 8192, flips: &[8191], ranges: &[(K4, K4)] },
    Case { name: "one-byte-tail-chunk", source_len: 8193, target_len: 8193, flips: &[8192], ranges: &[(8192, 1)] },
    Case { name: "chunk-minus-one", source_len: 4095, target_len: 4095, flips: &[17], ranges: &[(0, 4095)] },
    Case { name: "exactly-one-chunk", source_len: 4096, target_len: 4096, flips: &[4095], ranges: &[(0, K4)] },
    Case {
        name: "adjacent-chunks-merge",
        source_len: 16_384,
        target_len: 16_384,
        flips: &[5000, 9000],
        ranges: &[(K4, 8192)],
    },
    Case {
        name: "separate-chunks-stay-apart",
        source_len: 16_384,
        target_len: 16_384,
        flips: &[100, 9000],
        ranges: &[(0, K4), (8192, K4)],
    },
    Case {
        name: "two-flips-one-chunk",
        source_len: 12_288,
        target_len: 12_288,
        flips: &[4096, 8191],
        ranges: &[(K4, K4)],
    },
    Case {
        name: "grow-by-one-after-full-chunks",
        source_len: 8192,
        target_len: 8193,
        flips: &[],
        ranges: &[(8192, 1)],
    },
    Case { name: "shrink-by-one-to-full-chunks", source_len: 8193, target_len: 8192, flips: &[], ranges: &[(8192, 1)] },
    Case { name: "grow-to-fill-last-chunk", source_len: 8191, target_len: 8192, flips: &[], ranges: &[(K4, K4)] },
    Case { name: "truncate-mid-chunk", source_len: 12_288, target_len: 5000, flips: &[], ranges: &[(K4, 8192)] },
    Case {
        name: "grow-and-flip-first-chunk",
        source_len: 8192,
        target_len: 12_288,
        flips: &[0],
        ranges: &[(0, K4), (8192, K4)],
    },
    Case {
        name: "flip-next-to-growth-merges",
        source_len: 8192,
        target_len: 9000,
        flips: &[5000],
        ranges: &[(K4, 4904)],
    },
    Case { name: "empty-to-two-chunks", source_len: 0, target_len: 8193, flips: &[], ranges: &[(0, 8193)] },
    Case { name: "two-chunks-to-empty", source_len: 8193, target_len: 0, flips: &[], ranges: &[(0, 8193)] },
];

/// Source and target trees holding every case's file.
fn fixture(cases: &[Case]) -> (Tree, Tree) {
    let (source, target) = (Tree::new(), Tree::new());
    for (seed, case) in cases.iter().enumerate() {
        let original = noise(seed as u64, case.source_len as usize);
        let mut changed = original.clone();
        changed.resize(case.target_len as usize, 0);
        if case.target_len > case.source_len {
            let tail = noise(1000 + seed as u64, (case.target_len - case.source_len) as usize);
            changed[case.source_len as usize..].copy_from_slice(&tail);
        }
        for &at in case.flips {
            changed[at as usize] ^= 0xa5;
        }
        source.file(case.name, &original);
        target.file(case.name, &changed);
    }
    (source, target)
}

#[test]
fn ranges_are_exactly_the_changed_chunks_at_chunk_boundaries() {
    let (source, target) = fixture(CASES);
    let report = diff_json(source.path(), target.path(), &["--chunk-size", "4K"]).expect_code(1).report();
    assert_eq!(report.0["chunk_size"], K4);
    assert_eq!(report.differences().len(), CASES.len(), "{:#}", report.0);
    let mut wrong = Vec::new();
    for case in CASES {
        let d = report.at(case.name);
        assert_eq!(d["kind"], "content");
        assert_eq!(
            (d["source_size"].as_u64(), d["target_size"].as_u64()),
            (Some(case.source_len), Some(case.target_len))
        );
        let found = report.ranges(case.name);
        if found != case.ranges {
            wrong.push(format!("{}: expected {:?}, got {found:?}", case.name, case.ranges));
        }
    }
    assert!(wrong.is_empty(), "wrong ranges:\n{}", wrong.join("\n"));
    let total: u64 = CASES.iter().flat_map(|c| c.ranges).map(|r| r.1).sum();
    assert_eq!(report.summary("divergent_bytes"), total);
}

/// A file of exactly one chunk that grows keeps its first chunk: only the growth differs.
#[test]
fn a_file_of_exactly_one_chunk_that_grows_reports_only_the_growth() {
    const GROWN: &[Case] = &[
        Case { name: "one-chunk-grows-by-one", source_len: 4096, target_len: 4097, flips: &[], ranges: &[(K4, 1)] },
        Case {
            name: "one-chunk-grows-by-two-chunks",
            source_len: 4096,
            target_len: 12_288,
            flips: &[],
            ranges: &[(K4, 8192)],
        },
        Case { name: "two-chunks-shrink-to-one", source_len: 8192, target_len: 4096, flips: &[], ranges: &[(K4, K4)] },
    ];
    let (source, target) = fixture(GROWN);
    let report = diff_json(source.path(), target.path(), &["--chunk-size", "4K"]).expect_code(1).report();
    let found: Vec<_> = GROWN.iter().map(|c| (c.name, report.ranges(c.name))).collect();
    let expected: Vec<_> = GROWN.iter().map(|c| (c.name, c.ranges.to_vec())).collect();
    assert_eq!(found, expected, "the unchanged first chunk must not be reported");
}

#[test]
fn the_default_chunk_size_is_one_mebibyte() {
    const MIB: u64 = 1 << 20;
    let source = Tree::new();
    source.file("f", noise(7, 3 * MIB as usize + 5));
    let target = source.copy();
    target.patch("f", MIB + MIB / 2, b"!");
    let report = diff_json(source.path(), target.path(), &[]).expect_code(1).report();
    assert_eq!(report.0["chunk_size"], MIB);
    assert_eq!(report.0["source"]["chunk_size"], MIB);
    assert_eq!(report.ranges("f"), [(MIB, MIB)]);
}

#[test]
fn a_byte_written_into_a_large_sparse_file_is_narrowed_to_its_chunk() {
    const GIB: u64 = 1 << 30;
    let source = Tree::new();
    source.file("sparse", "").set_len("sparse", 3 * GIB);
    let target = Tree::new();
    target.file("sparse", "").set_len("sparse", 3 * GIB).patch("sparse", 2 * GIB, b"x");
    let report = diff_json(source.path(), target.path(), &[]).expect_code(1).report();
    let d = report.at("sparse");
    assert_eq!((d["source_size"].as_u64(), d["target_size"].as_u64()), (Some(3 * GIB), Some(3 * GIB)));
    assert_eq!(report.ranges("sparse"), [(2 * GIB, 1 << 20)]);
}
