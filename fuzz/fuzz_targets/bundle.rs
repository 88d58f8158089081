//! The bundle reader on arbitrary bytes never panics, never hands out more or fewer bytes than
//! were asked for, and never hands out bytes that do not match their record's hash.
//!
//! Input layout: byte 0 picks the chunk size (1 KiB to 64 KiB) and, in its top bit, whether a
//! valid header line is prepended; byte 1 is the number of reads (0 to 7), each then described
//! by 4 bytes (operation, chunk index, length); the rest is the bundle.

#![no_main]

use std::io::Cursor;

use cutover::apply::source::{BundleSource, SourceData};
use cutover::digest::{ByteRange, ChunkSize};
use cutover::path::RelPath;
use libfuzzer_sys::fuzz_target;

const PLAN_ID: &str = "0123456789abcdef0123456789abcdef";

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let chunk = ChunkSize::new(1 << (10 + u64::from(data[0] & 0x0f) % 7)).unwrap();
    let reads = usize::from(data[1] % 8);
    let Some(specs) = data.get(2..2 + 4 * reads) else { return };
    let mut body = Vec::new();
    if data[0] & 0x80 != 0 {
        body.extend_from_slice(
            format!("{{\"format\":\"cutover-bundle/1\",\"plan\":\"{PLAN_ID}\",\"chunk_size\":{chunk}}}\n").as_bytes(),
        );
    }
    body.extend_from_slice(&data[2 + 4 * reads..]);

    let Ok(mut source) = BundleSource::open(Cursor::new(body), "fuzz", PLAN_ID, chunk) else { return };
    let path = RelPath::parse(b"f").unwrap();
    for spec in specs.chunks(4) {
        let op = usize::from(spec[0]);
        let length = 1 + u64::from(u16::from_le_bytes([spec[2], spec[3]])) % chunk.bytes();
        let range = ByteRange { offset: u64::from(spec[1] % 8) * chunk.bytes(), length };
        let mut got = Vec::new();
        if source.read(op, &path, range, &mut |piece| got.extend_from_slice(piece)).is_ok() {
            assert_eq!(got.len() as u64, range.length, "a successful read delivers exactly the range");
        }
    }
});
