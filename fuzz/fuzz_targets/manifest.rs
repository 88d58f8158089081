//! `read_manifest_from` on arbitrary bytes never panics, and a manifest it accepts can be used:
//! it survives a write/read round trip, compares identical with itself, and plans into a plan
//! that `read_plan` accepts.
//!
//! The trailing BLAKE3 checksum stops nearly every mutation, so each input is also tried with
//! its last 32 bytes replaced by the right checksum.

#![no_main]

use std::path::Path;

use cutover::diff::{DiffOptions, diff};
use cutover::manifest::{Manifest, read_manifest_from, write_manifest};
use cutover::plan::{PlanOptions, build_plan, read_plan, write_plan};
use libfuzzer_sys::fuzz_target;

fn check(manifest: &Manifest) {
    let mut bytes = Vec::new();
    write_manifest(manifest, &mut bytes).expect("an accepted manifest can be written");
    let again = read_manifest_from(&bytes[..], Path::new("fuzz-again")).expect("a written manifest reads back");
    assert_eq!(again.entries, manifest.entries, "entries changed in a write/read round trip");

    let report = diff(manifest, manifest, &DiffOptions::default());
    assert!(report.differences.is_empty(), "a manifest differs from itself");

    // Everything in the manifest is missing from a target that holds only its root.
    let empty = Manifest { header: manifest.header.clone(), entries: manifest.entries[..1].to_vec() };
    for (source, target) in [(manifest, &empty), (&empty, manifest)] {
        let (plan, _) = build_plan(source, target, &PlanOptions { delete: true, ..PlanOptions::default() });
        let mut text = Vec::new();
        write_plan(&plan, &mut text).unwrap();
        read_plan(&text[..], Path::new("fuzz-plan")).expect("a plan built from accepted manifests is accepted");
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(manifest) = read_manifest_from(data, Path::new("fuzz")) {
        check(&manifest);
    }
    if data.len() > 32 {
        let mut fixed = data.to_vec();
        let body = data.len() - 32;
        let sum = blake3::hash(&data[..body]);
        fixed[body..].copy_from_slice(sum.as_bytes());
        if let Ok(manifest) = read_manifest_from(&fixed[..], Path::new("fuzz")) {
            check(&manifest);
        }
    }
});
