//! Reading a plan as a stream, checked whole before any operation is handed out.
//!
//! [`CheckedPlan::open`] reads the file once: it parses it without building it (each
//! operation is copied, as the compact JSON the checksum covers, one per line into a private
//! temporary file), then goes over that copy to take the checksum, check every operation's
//! rules and count the totals. Only a plan that passes all of it is returned, so `apply` can
//! refuse a damaged plan before it writes anything. [`CheckedPlan::operations`] then reads the
//! private copy again, one operation at a time: nobody else can change it between the check
//! and the use, and stdin needs no second read.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::format::{HashWriter, OPERATIONS, OrderCheck, head_members, operation_json, write_members};
use super::{Operation, PLAN_FORMAT, Plan, PlanError, PlanHead, PlanOptions, PlanOutput, Tally};
use crate::diff::Report;
use crate::digest::ChunkSize;
use crate::manifest::Manifest;
use crate::path::RelPath;

/// A plan file that passed every check, with its operations kept aside to be read in order.
#[derive(Debug)]
pub struct CheckedPlan {
    pub head: PlanHead,
    /// Counted from the operations (and equal to the totals the file states).
    pub tally: Tally,
    /// The id that ties bundles and journals to the plan: the first 32 hex digits of the
    /// checksum of the plan as read (fields this version does not know left out).
    pub id: String,
    /// For each first name of an inode, the names `link` operations make other names of it.
    followers: HashMap<RelPath, Vec<RelPath>>,
    /// The operations, one compact JSON per line.
    spill: std::fs::File,
    file: String,
    /// The spill is a whole plan as [`super::PlanWriter`] writes it: a first line before the
    /// operations, each operation on a line of its own ending in `,` but the last, then a line
    /// starting with `]`.
    written: bool,
}

impl CheckedPlan {
    /// Reads and checks the plan in `input`; `name` is used in messages.
    pub fn open(input: impl Read, name: &Path) -> Result<CheckedPlan, PlanError> {
        let file = name.display().to_string();
        let io = |cause: std::io::Error| PlanError::Io { file: file.clone(), cause };
        let malformed = |why: String| PlanError::Malformed { file: file.clone(), why };
        let spilling = |e: std::io::Error| {
            let dir = std::env::temp_dir();
            io(std::io::Error::new(e.kind(), format!("a temporary copy of its operations in {}: {e}", dir.display())))
        };
        let spill = tempfile::tempfile().map_err(spilling)?;
        let copy = spill.try_clone().map_err(spilling)?;
        let mut parsed =
            Parsed { rest: Map::new(), spill: std::io::BufWriter::new(copy), operations: None, spill_error: None };
        let mut de = serde_json::Deserializer::from_reader(BufReader::with_capacity(1 << 16, input));
        let json = parsed.deserialize(&mut de).and_then(|()| de.end());
        if let Some(e) = parsed.spill_error.take() {
            return Err(spilling(e));
        }
        if let Err(e) = json {
            return Err(match e.is_io() {
                true => io(e.into()),
                false => malformed(format!("invalid JSON: {e}")),
            });
        }
        parsed.spill.flush().map_err(spilling)?;
        let Parsed { mut rest, operations, spill: written, .. } = parsed;
        drop(written);
        match rest.get("format").and_then(Value::as_str) {
            Some(PLAN_FORMAT) => {}
            Some(other) => return Err(PlanError::WrongVersion { file, found: other.to_string() }),
            None => return Err(malformed("no \"format\" field".into())),
        }
        let stored = match rest.remove("checksum") {
            Some(Value::String(sum)) => sum,
            _ => return Err(malformed("no \"checksum\" field".into())),
        };
        // A head that does not parse still gets its checksum checked first: damage is named as such.
        let head = serde_json::from_value::<PlanHead>(Value::Object(rest.clone()));
        let mut check = Check::new(&rest, head.as_ref().ok(), operations.is_some()).map_err(io)?;
        {
            let mut lines = BufReader::new(AtReader { file: &spill, at: 0 });
            let mut line = Vec::new();
            loop {
                line.clear();
                if lines.read_until(b'\n', &mut line).map_err(io)? == 0 {
                    break;
                }
                check.operation(line.strip_suffix(b"\n").unwrap_or(&line)).map_err(io)?;
            }
        }
        let Check { raw, typed, problem, tally, followers, .. } = check;
        if raw.finish() != stored {
            return Err(PlanError::Checksum { file });
        }
        let head = head.map_err(|e| malformed(e.to_string()))?;
        if operations.is_none() {
            return Err(malformed("missing field `operations`".into()));
        }
        ChunkSize::new(head.chunk_size).map_err(|why| malformed(format!("chunk_size: {why}")))?;
        crate::exclude::Excludes::new(&head.exclude).map_err(|why| malformed(format!("exclude: {why}")))?;
        match problem {
            Some(Problem::Malformed(why)) => return Err(malformed(why)),
            Some(Problem::Unsafe { index, op, why }) => return Err(PlanError::Unsafe { file, index, op, why }),
            None => {}
        }
        if tally.totals != head.totals {
            let t = &head.totals;
            return Err(malformed(format!(
                "its totals ({} operations, {} bytes to copy, {} entries and {} bytes to delete) are not those of its operations",
                t.operations, t.copy_bytes, t.delete_entries, t.delete_bytes
            )));
        }
        let id = typed.map(|typed| typed.finish()[..32].to_string()).unwrap_or_default();
        Ok(CheckedPlan { head, tally, id, followers, spill, file, written: false })
    }

    /// Makes the plan that turns `target` into `source` and keeps it checked, without a plan
    /// file to read back: each operation is copied aside as the plan writer takes it, and the
    /// writer checks what reading would (paths, order, links, chunks; the totals are its own
    /// count). For `repair`, which plans and applies at once.
    pub fn build(
        source: &Manifest,
        target: &Manifest,
        options: &PlanOptions,
        output: PlanOutput<'_>,
    ) -> Result<(CheckedPlan, Report), PlanError> {
        let file = "<plan>".to_string();
        let io = |cause: std::io::Error| PlanError::Io { file: file.clone(), cause };
        let spill = tempfile::tempfile().map_err(io)?;
        let copy = std::io::BufWriter::new(spill.try_clone().map_err(io)?);
        let mut followers: HashMap<RelPath, Vec<RelPath>> = HashMap::new();
        let outer = output.prepare;
        let mut prepare = |op: &mut Operation, chunk: ChunkSize| {
            outer(op, chunk);
            if let Operation::Link { to, to_bytes, .. } = &*op
                && let (Ok(path), Ok(to)) = (op.at().rel(), RelPath::from_report(to, to_bytes.as_deref()))
            {
                followers.entry(to).or_default().push(path);
            }
        };
        let output = PlanOutput { identity: output.identity, prepare: &mut prepare };
        // The plan as the writer lays it out (one operation per line) is the spill itself.
        let (head, tally, checksum, report) =
            super::build::build_plan_summed(source, target, options, output, copy).map_err(io)?;
        let id = checksum[..32].to_string();
        Ok((CheckedPlan { head, tally, id, followers, spill, file, written: true }, report))
    }

    /// The operations in plan order, read one at a time from the checked copy.
    pub fn operations(&self) -> Operations<'_> {
        Operations {
            lines: BufReader::new(AtReader { file: &self.spill, at: 0 }),
            line: Vec::new(),
            plan: self,
            started: !self.written,
        }
    }

    /// The names `link` operations make other names of the inode whose first name is `first`.
    pub fn followers(&self, first: &RelPath) -> &[RelPath] {
        self.followers.get(first).map_or(&[], Vec::as_slice)
    }

    /// The whole plan in memory (for small plans).
    pub fn into_plan(self) -> Result<Plan, PlanError> {
        let operations = self.operations().collect::<Result<Vec<_>, _>>()?;
        Ok(Plan { head: self.head, operations })
    }
}

/// Reads, checks and validates a whole plan into memory. `name` is used in messages.
pub fn read_plan(input: impl Read, name: &Path) -> Result<Plan, PlanError> {
    CheckedPlan::open(input, name)?.into_plan()
}

/// The operations of a [`CheckedPlan`], in order.
#[derive(Debug)]
pub struct Operations<'a> {
    lines: BufReader<AtReader<'a>>,
    line: Vec<u8>,
    plan: &'a CheckedPlan,
    /// The line before the first operation (of a written plan) was passed.
    started: bool,
}

impl Iterator for Operations<'_> {
    type Item = Result<Operation, PlanError>;

    fn next(&mut self) -> Option<Self::Item> {
        let file = || self.plan.file.clone();
        loop {
            self.line.clear();
            match self.lines.read_until(b'\n', &mut self.line) {
                Ok(0) => return None,
                Ok(_) if !std::mem::replace(&mut self.started, true) => continue,
                Ok(_) if self.plan.written && self.line.starts_with(b"]") => return None,
                Ok(_) => break,
                Err(cause) => return Some(Err(PlanError::Io { file: file(), cause })),
            }
        }
        let line = self.line.strip_suffix(b"\n").unwrap_or(&self.line);
        let line = line.strip_suffix(b",").unwrap_or(line);
        Some(
            serde_json::from_slice(line)
                .map_err(|e| PlanError::Malformed { file: file(), why: format!("re-reading its operations: {e}") }),
        )
    }
}

/// Reads a file from its own position, whatever else reads the same file.
#[derive(Debug)]
struct AtReader<'a> {
    file: &'a std::fs::File,
    at: u64,
}

impl Read for AtReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.file.read_at(buf, self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}

/// The first thing wrong with the operations, reported once the checksum is known good.
enum Problem {
    Malformed(String),
    Unsafe { index: usize, op: &'static str, why: String },
}

/// The running checks over the operations' copy: two checksums (of the plan as written, which
/// must match the stored one, and of the plan as read, for the id), the order rules, the tally
/// and the hard-link followers.
struct Check {
    raw: Sum,
    typed: Option<Sum>,
    order: Option<OrderCheck>,
    chunk: ChunkSize,
    problem: Option<Problem>,
    tally: Tally,
    followers: HashMap<RelPath, Vec<RelPath>>,
    index: usize,
}

/// A checksum of a plan taken member by member.
struct Sum {
    hasher: HashWriter,
    after: Map<String, Value>,
    /// Whether the object has an `operations` member.
    operations: bool,
    /// No member written yet.
    first: bool,
    first_op: bool,
}

impl Sum {
    fn new(members: &Map<String, Value>, operations: bool) -> std::io::Result<Sum> {
        let mut hasher = HashWriter(blake3::Hasher::new());
        let mut first = true;
        hasher.write_all(b"{")?;
        write_members(&mut hasher, members, true, &mut first)?;
        if operations {
            hasher.write_all(if first { b"\"operations\":[" } else { b",\"operations\":[" })?;
            first = false;
        }
        let after =
            members.iter().filter(|(k, _)| k.as_str() > OPERATIONS).map(|(k, v)| (k.clone(), v.clone())).collect();
        Ok(Sum { hasher, after, operations, first, first_op: true })
    }

    fn operation(&mut self, json: &[u8]) {
        if !std::mem::take(&mut self.first_op) {
            self.hasher.0.update(b",");
        }
        self.hasher.0.update(json);
    }

    fn finish(mut self) -> String {
        if self.operations {
            self.hasher.0.update(b"]");
        }
        let _ = write_members(&mut self.hasher, &self.after, false, &mut self.first);
        self.hasher.0.update(b"}");
        self.hasher.0.finalize().to_hex().to_string()
    }
}

impl Check {
    fn new(rest: &Map<String, Value>, head: Option<&PlanHead>, operations: bool) -> std::io::Result<Check> {
        let chunk = head.and_then(|h| ChunkSize::new(h.chunk_size).ok());
        let typed = match head {
            Some(head) => Some(Sum::new(&head_members(head)?, true)?),
            None => None,
        };
        Ok(Check {
            raw: Sum::new(rest, operations)?,
            typed,
            order: chunk.map(OrderCheck::new),
            chunk: chunk.unwrap_or(ChunkSize::DEFAULT),
            problem: None,
            tally: Tally::default(),
            followers: HashMap::new(),
            index: 0,
        })
    }

    /// One operation, as the compact JSON the checksum covers.
    fn operation(&mut self, json: &[u8]) -> std::io::Result<()> {
        let index = self.index;
        self.index += 1;
        self.raw.operation(json);
        let op = match serde_json::from_slice::<Operation>(json) {
            Ok(op) => op,
            Err(e) => {
                self.typed = None;
                self.problem.get_or_insert(Problem::Malformed(format!("operation {index}: {e}")));
                return Ok(());
            }
        };
        if let Some(typed) = self.typed.as_mut() {
            typed.operation(&operation_json(&op)?);
        }
        self.tally.add(&op, self.chunk);
        if let Some(order) = self.order.as_mut()
            && self.problem.is_none()
            && let Err(why) = order.check(&op)
        {
            self.problem = Some(Problem::Unsafe { index, op: op.name(), why });
        }
        if let Operation::Link { to, to_bytes, .. } = &op
            && let (Ok(path), Ok(to)) = (op.at().rel(), RelPath::from_report(to, to_bytes.as_deref()))
        {
            self.followers.entry(to).or_default().push(path);
        }
        Ok(())
    }
}

/// The top level of a plan as it is parsed: every member but the operations, which go to the
/// spill file as they are read.
struct Parsed {
    rest: Map<String, Value>,
    spill: std::io::BufWriter<std::fs::File>,
    /// How many operations were read; `None` when there is no `operations` member.
    operations: Option<u64>,
    /// Why the spill file could not be written (a full `$TMPDIR`, say): not the plan's fault.
    spill_error: Option<std::io::Error>,
}

impl<'de> DeserializeSeed<'de> for &mut Parsed {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for &mut Parsed {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        use serde::de::Error;
        while let Some(key) = map.next_key::<String>()? {
            if key == OPERATIONS {
                if self.operations.is_some() {
                    return Err(A::Error::custom("duplicate field `operations`"));
                }
                let spill =
                    Spill { spill: &mut self.spill, count: self.operations.insert(0), error: &mut self.spill_error };
                map.next_value_seed(spill)?;
            } else {
                let value = map.next_value::<Value>()?;
                if self.rest.insert(key.clone(), value).is_some() {
                    return Err(A::Error::custom(format!("duplicate field `{key}`")));
                }
            }
        }
        Ok(())
    }
}

/// The `operations` array, each element written to the spill file as one compact line.
struct Spill<'s> {
    spill: &'s mut std::io::BufWriter<std::fs::File>,
    count: &'s mut u64,
    error: &'s mut Option<std::io::Error>,
}

impl<'de> DeserializeSeed<'de> for Spill<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Spill<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an array of operations")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        use serde::de::Error;
        while let Some(op) = seq.next_element::<Value>()? {
            let written = serde_json::to_writer(&mut *self.spill, &op)
                .map_err(std::io::Error::from)
                .and_then(|()| self.spill.write_all(b"\n"));
            if let Err(e) = written {
                *self.error = Some(e);
                return Err(A::Error::custom("the spill file could not be written"));
            }
            *self.count += 1;
        }
        Ok(())
    }
}
