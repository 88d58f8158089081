//! `read_plan` on arbitrary bytes never panics, and a plan it accepts is safe to apply: every
//! operation names a relative path inside the target, patch chunks are in range and in order,
//! and the plan survives a write/read round trip unchanged.
//!
//! Nearly every mutation breaks the checksum, so each input is also tried with its checksum
//! recomputed, which lets the fuzzer reach the schema and the path validation behind it.

#![no_main]

use std::path::Path;

use cutover::plan::{Operation, Plan, read_plan, write_plan};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fn check(plan: &Plan) {
    let chunk = cutover::digest::ChunkSize::new(plan.head.chunk_size).expect("an accepted plan has a valid chunk size");
    for op in &plan.operations {
        let path = op.at().rel().expect("an accepted plan has only valid paths");
        assert!(!path.is_root());
        assert!(path.as_bytes()[0] != b'/');
        assert!(path.as_bytes().split(|&b| b == b'/').all(|c| !c.is_empty() && c != b"." && c != b".."));
        if let Operation::Patch { source, chunks, .. } = op {
            let count = chunk.chunks_in(source.size);
            assert!(chunks.iter().all(|c| c.index < count));
            assert!(chunks.windows(2).all(|w| w[0].index < w[1].index));
            let _ = op.copy_bytes(chunk);
        }
    }
    let _ = cutover::apply::plan_id(plan);
    let mut text = Vec::new();
    write_plan(plan, &mut text).expect("an accepted plan can be written");
    let again = read_plan(&text[..], Path::new("fuzz-again")).expect("a written plan reads back");
    assert_eq!(&again, plan, "the plan changed in a write/read round trip");
}

fuzz_target!(|data: &[u8]| {
    if let Ok(plan) = read_plan(data, Path::new("fuzz")) {
        check(&plan);
    }
    let Ok(mut doc) = serde_json::from_slice::<Value>(data) else { return };
    let Some(object) = doc.as_object_mut() else { return };
    object.remove("checksum");
    let sum = blake3::hash(&serde_json::to_vec(&doc).unwrap()).to_hex().to_string();
    doc["checksum"] = Value::String(sum);
    let text = serde_json::to_vec(&doc).unwrap();
    if let Ok(plan) = read_plan(&text[..], Path::new("fuzz")) {
        check(&plan);
    }
});
