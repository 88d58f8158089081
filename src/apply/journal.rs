//! A small intent log in the target root, so an in-place patch interrupted halfway can be
//! finished by the next run: chunks that are neither the old nor the new bytes are only
//! accepted when the journal says this plan had started writing that file.

use std::collections::HashSet;

use super::target::TargetRoot;

/// Name prefix of journal files; the plan id follows.
pub const JOURNAL_PREFIX: &str = ".cutover-journal.";

#[derive(Debug)]
pub(super) struct Journal<'a> {
    root: &'a TargetRoot,
    name: Vec<u8>,
    started: HashSet<usize>,
    file: Option<std::fs::File>,
}

impl<'a> Journal<'a> {
    /// Reads the journal of plan `id` if an earlier run left one.
    pub fn open(root: &'a TargetRoot, id: &str) -> Result<Self, String> {
        let name = format!("{JOURNAL_PREFIX}{id}").into_bytes();
        let mut started = HashSet::new();
        if root.stat(&name).map_err(|e| e.to_string())?.is_some() {
            let mut text = String::new();
            let mut file = root.open_read(&name).map_err(|e| e.to_string())?;
            std::io::Read::read_to_string(&mut file, &mut text).map_err(|e| format!("journal: {e}"))?;
            // `start N` (`patch N` in the first builds) opens an operation that writes in place,
            // `done N` closes it again.
            for line in text.lines() {
                let number = |prefix| line.strip_prefix(prefix)?.parse::<usize>().ok();
                if let Some(op) = number("start ").or_else(|| number("patch ")) {
                    started.insert(op);
                } else if let Some(op) = number("done ") {
                    started.remove(&op);
                }
            }
        }
        Ok(Journal { root, name, started, file: None })
    }

    /// The journal's file name in the target root.
    pub fn name(&self) -> &[u8] {
        &self.name
    }

    /// Whether an earlier run began writing operation `op` and did not see it verified.
    pub fn was_started(&self, op: usize) -> bool {
        self.started.contains(&op)
    }

    /// Records, durably, that operation `op` is about to write.
    pub fn start(&mut self, op: usize) -> Result<(), String> {
        if self.started.contains(&op) {
            return Ok(());
        }
        self.append(&format!("start {op}\n"))?;
        self.started.insert(op);
        Ok(())
    }

    /// Records that operation `op` verified: from now on the file is the user's again, and a
    /// later run must find it exactly as its plan expects before touching it.
    pub fn finish_op(&mut self, op: usize) -> Result<(), String> {
        if !self.started.remove(&op) {
            return Ok(());
        }
        self.append(&format!("done {op}\n"))
    }

    fn append(&mut self, line: &str) -> Result<(), String> {
        if self.file.is_none() {
            let file = match self.root.open_write(&self.name) {
                Ok(file) => file,
                Err(e) if e.is_not_found() => {
                    let (file, tmp) = self.root.create_temp(&self.name, 0o600).map_err(|e| e.to_string())?;
                    self.root.rename(&tmp, &self.name).map_err(|e| e.to_string())?;
                    file
                }
                Err(e) => return Err(e.to_string()),
            };
            self.file = Some(file);
        }
        let file = self.file.as_mut().ok_or("journal not open")?;
        let end = file.metadata().map_err(|e| format!("journal: {e}"))?.len();
        rustix::io::pwrite(&*file, line.as_bytes(), end).map_err(|e| format!("journal: {e}"))?;
        file.sync_data().map_err(|e| format!("journal: {e}"))?;
        self.root.sync_parent(&self.name).map_err(|e| e.to_string())
    }

    /// Removes the journal after a complete run.
    pub fn finish(self) -> Result<(), String> {
        if self.file.is_some() || self.root.stat(&self.name).ok().flatten().is_some() {
            self.root
                .remove_file(&self.name)
                .or_else(|e| if e.is_not_found() { Ok(()) } else { Err(e.to_string()) })?;
        }
        Ok(())
    }
}
