//! Reading and writing `cutover-plan/1` JSON with its checksum.
//!
//! The checksum is the BLAKE3 of the compact JSON of the plan without its `checksum` field,
//! keys sorted (serde_json's default map). It catches damage and careless edits; it is not a
//! signature, so `apply` still validates every path and re-checks every hash itself.

use std::io::{Read, Write};
use std::path::Path;

use serde_json::Value;

use super::{Operation, PLAN_FORMAT, Plan, Totals};
use crate::digest::ChunkSize;
use crate::path::RelPath;

/// A plan that cannot be used, with the file and the reason.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("{file}: {cause}")]
    Io { file: String, cause: std::io::Error },
    #[error("{file}: not a cutover plan: {why}")]
    Malformed { file: String, why: String },
    #[error("{file}: plan format '{found}' is not supported (this cutover reads {PLAN_FORMAT})")]
    WrongVersion { file: String, found: String },
    #[error("{file}: plan checksum mismatch: the plan was edited or damaged after it was made")]
    Checksum { file: String },
    #[error("{file}: operation {index} ({op}): {why}")]
    Unsafe { file: String, index: usize, op: &'static str, why: String },
}

fn checksum(doc: &Value) -> String {
    let bytes = serde_json::to_vec(doc).unwrap_or_default();
    blake3::hash(&bytes).to_hex().to_string()
}

/// The checksum of a plan: what `write_plan` stores in its `checksum` field.
pub fn plan_checksum(plan: &Plan) -> String {
    serde_json::to_value(plan).map(|doc| checksum(&doc)).unwrap_or_default()
}

/// Writes `plan` as pretty JSON with its checksum.
pub fn write_plan(plan: &Plan, mut out: impl Write) -> std::io::Result<()> {
    let mut doc = serde_json::to_value(plan)?;
    let sum = checksum(&doc);
    doc["checksum"] = Value::String(sum);
    serde_json::to_writer_pretty(&mut out, &doc)?;
    out.write_all(b"\n")?;
    out.flush()
}

/// Reads, checks and validates a plan. `name` is used in messages.
pub fn read_plan(mut input: impl Read, name: &Path) -> Result<Plan, PlanError> {
    let file = name.display().to_string();
    let mut text = Vec::new();
    input.read_to_end(&mut text).map_err(|cause| PlanError::Io { file: file.clone(), cause })?;
    let malformed = |why: String| PlanError::Malformed { file: file.clone(), why };
    let mut doc: Value = serde_json::from_slice(&text).map_err(|e| malformed(format!("invalid JSON: {e}")))?;
    let object = doc.as_object_mut().ok_or_else(|| malformed("not a JSON object".into()))?;
    match object.get("format").and_then(Value::as_str) {
        Some(PLAN_FORMAT) => {}
        Some(other) => return Err(PlanError::WrongVersion { file, found: other.to_string() }),
        None => return Err(malformed("no \"format\" field".into())),
    }
    let stored = match object.remove("checksum") {
        Some(Value::String(sum)) => sum,
        _ => return Err(malformed("no \"checksum\" field".into())),
    };
    if checksum(&doc) != stored {
        return Err(PlanError::Checksum { file });
    }
    let plan: Plan = serde_json::from_value(doc).map_err(|e| malformed(e.to_string()))?;
    validate(&plan, &file)?;
    Ok(plan)
}

/// Refuses anything `apply` must never do, whatever the checksum says.
fn validate(plan: &Plan, file: &str) -> Result<(), PlanError> {
    let chunk = ChunkSize::new(plan.chunk_size)
        .map_err(|why| PlanError::Malformed { file: file.to_string(), why: format!("chunk_size: {why}") })?;
    crate::exclude::Excludes::new(&plan.exclude)
        .map_err(|why| PlanError::Malformed { file: file.to_string(), why: format!("exclude: {why}") })?;
    if Totals::of(&plan.operations, chunk) != plan.totals {
        let t = &plan.totals;
        let why = format!(
            "its totals ({} operations, {} bytes to copy, {} entries and {} bytes to delete) are not those of its operations",
            t.operations, t.copy_bytes, t.delete_entries, t.delete_bytes
        );
        return Err(PlanError::Malformed { file: file.to_string(), why });
    }
    // Removals, then creations in path order, then metadata in reverse path order (docs/plan.md):
    // run in another order, a creation could land where a removal had yet to clear the way.
    let mut previous: Option<(u8, RelPath)> = None;
    for (index, op) in plan.operations.iter().enumerate() {
        let bad = |why: String| PlanError::Unsafe { file: file.to_string(), index, op: op.name(), why };
        let rel = op.rel().map_err(bad)?;
        let phase = match op {
            Operation::Remove { .. } => 0,
            Operation::Meta { .. } => 2,
            _ => 1,
        };
        if let Some((last_phase, last)) = &previous {
            let in_order = match phase.cmp(last_phase) {
                std::cmp::Ordering::Less => false,
                std::cmp::Ordering::Greater => true,
                std::cmp::Ordering::Equal if phase == 2 => rel < *last,
                std::cmp::Ordering::Equal => rel > *last,
            };
            if !in_order {
                return Err(bad(
                    "out of order: removals, then creations in path order, then metadata in reverse path order".into(),
                ));
            }
        }
        if let Operation::Link { to, to_bytes, .. } = op {
            // The first name of the inode: inside the target and made before this name.
            let to = RelPath::from_report(to, to_bytes.as_deref()).map_err(|why| bad(format!("to: {why}")))?;
            if to.is_root() || to >= rel {
                return Err(bad("to: a hard link must name an earlier path of the target".into()));
            }
        }
        previous = Some((phase, rel));
        if let Operation::Copy { holes, .. } | Operation::Patch { holes, .. } = op
            && *holes > op.read_bytes(chunk)
        {
            return Err(bad(format!("holes {holes} exceed the {} bytes it reads", op.read_bytes(chunk))));
        }
        if let Operation::Patch { source, chunks, .. } = op {
            let count = chunk.chunks_in(source.size);
            if let Some(c) = chunks.iter().find(|c| c.index >= count) {
                return Err(bad(format!("chunk {} is beyond the source's {count} chunks", c.index)));
            }
            if chunks.windows(2).any(|w| w[0].index >= w[1].index) {
                return Err(bad("chunks are not in increasing order".into()));
            }
        }
    }
    Ok(())
}
