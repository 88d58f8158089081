//! cutover proves a data migration is complete, shows exactly where it is not, and repairs only
//! what differs.
//!
//! The pipeline is the architecture, and each stage is a module:
//!
//! 1. [`scan`] walks a directory in parallel and hashes every file with BLAKE3's own tree,
//!    producing a [`manifest::Manifest`]: every entry in [`path::RelPath`] order with its file
//!    root (what `b3sum` prints), chunk chaining values, and directory node hashes. Two local
//!    directories are walked together ([`scan::scan_pair`]) so equal bytes are hashed once.
//! 2. [`manifest`] writes and reads that tree, so each side can be scanned on its own host.
//! 3. [`diff`] merges two manifests in one pass, skipping subtrees whose directory hashes agree,
//!    and produces a [`diff::Report`] naming every difference with its divergent byte ranges.
//! 4. [`plan`] turns two manifests into a plan: plain, versioned, checksummed data saying which
//!    operations make the target equal to the source, each with the preconditions it must
//!    still find and the result it must leave. It is written as a stream
//!    ([`plan::build_plan_into`], [`plan::PlanWriter`]) and read back checked whole before
//!    use ([`plan::CheckedPlan`]), so neither side holds the operations.
//! 5. [`apply`] carries out a checked plan one batch at a time, re-checking before and
//!    verifying after every write, never writing outside the target root nor through a
//!    symlink.
//!
//! Digests, chunk sizes and ranges are newtypes in [`digest`]; the CLI in `src/cli` is the only
//! place that knows about arguments, terminals and exit codes. What outlives a run (locks,
//! journals) lives outside the trees, in [`state`]; [`interrupt`] lets a run stop at a safe
//! point on SIGINT, SIGTERM or SIGHUP.

pub mod apply;
pub mod diff;
pub mod digest;
pub mod exclude;
pub mod interrupt;
pub mod manifest;
pub mod path;
pub mod plan;
pub mod scan;
pub mod shard;
pub mod state;
pub mod time;
