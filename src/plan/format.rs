//! The `cutover-plan/1` JSON form: its checksum, its errors, and the rules every operation of
//! a plan must keep whatever its checksum says.
//!
//! The checksum is the BLAKE3 of the compact JSON of the plan without its `checksum` field,
//! keys sorted at every level (serde_json's default map). Sorted, `operations` comes after
//! `chunk_size`, `created`, `delete`, `exclude` and `format` and before `source`, `target`,
//! `tool`, `totals` and `unrepairable`, so the checksum can be taken as the operations stream
//! by: the writer ([`super::write`]) and the reader ([`super::read`]) both hash the members
//! before `operations`, then each operation, then the members after. It catches damage and
//! careless edits; it is not a signature, so `apply` still validates every path and re-checks
//! every hash itself.

use std::io::Write;

use serde_json::{Map, Value};

use super::{Operation, PLAN_FORMAT, Plan, PlanHead};
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

/// The key the operations are stored under; the checksum is taken with the other members
/// sorted around it.
pub(super) const OPERATIONS: &str = "operations";

/// The members of a plan head as a JSON object with sorted keys.
pub(super) fn head_members(head: &PlanHead) -> std::io::Result<Map<String, Value>> {
    match serde_json::to_value(head)? {
        Value::Object(map) => Ok(map),
        _ => Err(std::io::Error::other("a plan head is not an object")),
    }
}

/// Writes `"key":value` members of `map` whose keys sort before `operations` (`before`) or
/// after it, each preceded by a comma unless it is the very first member of the object.
pub(super) fn write_members(
    out: &mut dyn Write,
    map: &Map<String, Value>,
    before: bool,
    first: &mut bool,
) -> std::io::Result<()> {
    for (key, value) in map.iter().filter(|(key, _)| (key.as_str() < OPERATIONS) == before) {
        if !std::mem::take(first) {
            out.write_all(b",")?;
        }
        serde_json::to_writer(&mut *out, key)?;
        out.write_all(b":")?;
        serde_json::to_writer(&mut *out, value)?;
    }
    Ok(())
}

/// The compact, sorted JSON of one operation: what the checksum covers of it.
pub(super) fn operation_json(op: &Operation) -> std::io::Result<Vec<u8>> {
    Ok(serde_json::to_vec(&serde_json::to_value(op)?)?)
}

/// A writer into a BLAKE3 hasher.
pub(super) struct HashWriter(pub blake3::Hasher);

impl Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The checksum of a plan: what `write_plan` stores in its `checksum` field.
pub fn plan_checksum(plan: &Plan) -> String {
    let mut sum = HashWriter(blake3::Hasher::new());
    let hashed = (|| -> std::io::Result<()> {
        let members = head_members(&plan.head)?;
        let mut first = true;
        sum.write_all(b"{")?;
        write_members(&mut sum, &members, true, &mut first)?;
        sum.write_all(if first { b"\"operations\":[" } else { b",\"operations\":[" })?;
        for (index, op) in plan.operations.iter().enumerate() {
            if index > 0 {
                sum.write_all(b",")?;
            }
            sum.write_all(&operation_json(op)?)?;
        }
        sum.write_all(b"]")?;
        write_members(&mut sum, &members, false, &mut false)?;
        sum.write_all(b"}")
    })();
    match hashed {
        Ok(()) => sum.0.finalize().to_hex().to_string(),
        Err(_) => String::new(),
    }
}

/// The rules each operation must keep, checked one operation at a time in plan order:
/// removals, then creations in path order, then metadata in reverse path order (docs/plan.md);
/// run in another order, a creation could land where a removal had yet to clear the way.
#[derive(Debug)]
pub(super) struct OrderCheck {
    chunk: ChunkSize,
    previous: Option<(u8, RelPath)>,
}

impl OrderCheck {
    pub(super) fn new(chunk: ChunkSize) -> Self {
        OrderCheck { chunk, previous: None }
    }

    /// Checks `op`, the next operation; the reason when it breaks a rule.
    pub(super) fn check(&mut self, op: &Operation) -> Result<(), String> {
        let chunk = self.chunk;
        let rel = op.rel()?;
        let phase = match op {
            Operation::Remove { .. } => 0,
            Operation::Meta { .. } => 2,
            _ => 1,
        };
        if let Some((last_phase, last)) = &self.previous {
            let in_order = match phase.cmp(last_phase) {
                std::cmp::Ordering::Less => false,
                std::cmp::Ordering::Greater => true,
                std::cmp::Ordering::Equal if phase == 2 => rel < *last,
                std::cmp::Ordering::Equal => rel > *last,
            };
            if !in_order {
                return Err(
                    "out of order: removals, then creations in path order, then metadata in reverse path order".into(),
                );
            }
        }
        if let Operation::Link { to, to_bytes, .. } = op {
            // The first name of the inode: inside the target and made before this name.
            let to = RelPath::from_report(to, to_bytes.as_deref()).map_err(|why| format!("to: {why}"))?;
            if to.is_root() || to >= rel {
                return Err("to: a hard link must name an earlier path of the target".into());
            }
        }
        self.previous = Some((phase, rel));
        if let Operation::Copy { holes, .. } | Operation::Patch { holes, .. } = op
            && *holes > op.read_bytes(chunk)
        {
            return Err(format!("holes {holes} exceed the {} bytes it reads", op.read_bytes(chunk)));
        }
        if let Operation::Patch { source, chunks, .. } = op {
            let count = chunk.chunks_in(source.size);
            if let Some(c) = chunks.iter().find(|c| c.index >= count) {
                return Err(format!("chunk {} is beyond the source's {count} chunks", c.index));
            }
            if chunks.windows(2).any(|w| w[0].index >= w[1].index) {
                return Err("chunks are not in increasing order".into());
            }
        }
        Ok(())
    }
}
