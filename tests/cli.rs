//! The specification of the `cutover` command, by example.
//!
//! Every test builds its fixture trees in code (see `support::Tree`), runs the real binary and
//! reads its JSON report. Where an outside tool can judge the answer it does: `b3sum --check`
//! for file hashes, `rsync -c` for which paths differ, BLAKE3's published vectors for roots.

mod spec;
mod support;
