//! Writing a plan one operation at a time.
//!
//! The file is the compact JSON the checksum covers, members sorted, with two liberties JSON
//! allows: each operation starts on a line of its own (so the file reads and greps line by
//! line), and `checksum` comes last. Nothing is kept of an operation once it is written.

use std::io::Write;

use super::format::{HashWriter, OrderCheck, head_members, operation_json, write_members};
use super::{Operation, Plan, PlanHead, Tally};
use crate::digest::ChunkSize;

/// Writes a plan as its operations come: [`PlanWriter::new`] with the head, [`push`] each
/// operation in plan order, [`finish`] with the head as it ended (its totals are the
/// operations' own).
///
/// [`push`]: PlanWriter::push
/// [`finish`]: PlanWriter::finish
#[derive(Debug)]
pub struct PlanWriter<W: Write> {
    out: W,
    sum: HashWriter,
    chunk: ChunkSize,
    tally: Tally,
    order: OrderCheck,
}

impl std::fmt::Debug for HashWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HashWriter")
    }
}

fn invalid(why: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, why)
}

impl<W: Write> PlanWriter<W> {
    /// Starts the plan: the members that sort before `operations`.
    pub fn new(out: W, head: &PlanHead) -> std::io::Result<Self> {
        let chunk = ChunkSize::new(head.chunk_size).map_err(invalid)?;
        let mut writer = PlanWriter {
            out,
            sum: HashWriter(blake3::Hasher::new()),
            chunk,
            tally: Tally::default(),
            order: OrderCheck::new(chunk),
        };
        let mut text = b"{".to_vec();
        let mut first = true;
        write_members(&mut text, &head_members(head)?, true, &mut first)?;
        text.extend_from_slice(if first { b"\"operations\":[" } else { b",\"operations\":[" });
        writer.put(&text, &text)?;
        Ok(writer)
    }

    /// Writes `op`, the next operation. One that breaks the order of docs/plan.md (a bug of
    /// the planner) is an error: apply would refuse the plan.
    pub fn push(&mut self, op: &Operation) -> std::io::Result<()> {
        let index = self.tally.totals.operations;
        self.order.check(op).map_err(|why| invalid(format!("operation {index} ({}): {why}", op.name())))?;
        let json = operation_json(op)?;
        // The checksum covers the compact form; the file gets a line break before each operation.
        let separator: &[u8] = if index > 0 { b",\n" } else { b"\n" };
        self.put(separator, &separator[..separator.len() - 1])?;
        self.put(&json, &json)?;
        self.tally.add(op, self.chunk);
        Ok(())
    }

    /// Ends the plan with the members that sort after `operations` (its `totals` replaced by
    /// the operations' own) and the checksum; returns the tally and the checksum.
    pub fn finish(mut self, head: &PlanHead) -> std::io::Result<(Tally, String)> {
        let mut head = head.clone();
        head.totals = self.tally.totals;
        let mut text = b"\n]".to_vec();
        write_members(&mut text, &head_members(&head)?, false, &mut false)?;
        let hashed = text[1..].to_vec();
        self.put(&text, &hashed)?;
        self.sum.0.update(b"}");
        let checksum = self.sum.0.finalize().to_hex().to_string();
        writeln!(self.out, ",\"checksum\":\"{checksum}\"}}")?;
        self.out.flush()?;
        Ok((self.tally, checksum))
    }

    /// Writes `text`, of which `hashed` is what the checksum covers.
    fn put(&mut self, text: &[u8], hashed: &[u8]) -> std::io::Result<()> {
        self.sum.0.update(hashed);
        self.out.write_all(text)
    }
}

/// Writes a whole plan held in memory (its totals recomputed from its operations).
pub fn write_plan(plan: &Plan, out: impl Write) -> std::io::Result<()> {
    let mut writer = PlanWriter::new(out, &plan.head)?;
    for op in &plan.operations {
        writer.push(op)?;
    }
    writer.finish(&plan.head).map(drop)
}
