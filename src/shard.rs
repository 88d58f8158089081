//! One job split across processes: which of N workers this one is, and which worker owns a
//! path or an inode.
//!
//! A sharded scan (`scan --shard I/N`) walks every directory but reads only the files its shard
//! owns; `merge` puts the parts back together (`manifest::merge`). A sharded apply
//! (`apply --shard I/N`) carries out the operations its shard owns (`plan::shard`). Ownership
//! is a pure function of a path (or, for a name with several hard links, of its inode number),
//! so every worker computes it alone, on any host, with no coordination, and one huge directory
//! is spread over all workers. docs/manifest.md ("Sharded scans") specifies it.

use std::fmt;

/// Shard `index` of `count`, 1-based (`--shard 1/4` .. `--shard 4/4`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Shard {
    index: u32,
    count: u32,
}

/// The most shards a job may be split into.
pub const MAX_SHARDS: u32 = 65_536;

/// The rule by which shards own entries, recorded in a part's header so that parts written by
/// a future rule are never merged with these.
pub const OWNER_RULE: &str = "blake3-path-inode/1";

impl Shard {
    pub fn new(index: u32, count: u32) -> Result<Shard, String> {
        if count == 0 || count > MAX_SHARDS {
            return Err(format!("{count} shards: the count must be between 1 and {MAX_SHARDS}"));
        }
        if index == 0 || index > count {
            return Err(format!("shard {index} of {count}: the index must be between 1 and {count}"));
        }
        Ok(Shard { index, count })
    }

    /// Parses `I/N`.
    pub fn parse(text: &str) -> Result<Shard, String> {
        let bad = || format!("'{text}' is not a shard: expected I/N, e.g. 1/4 (I from 1 to N), or 'auto'");
        let (i, n) = text.split_once('/').ok_or_else(bad)?;
        let (i, n) = (i.trim().parse::<u32>().map_err(|_| bad())?, n.trim().parse::<u32>().map_err(|_| bad())?);
        Shard::new(i, n)
    }

    /// 1-based.
    pub fn index(self) -> u32 {
        self.index
    }

    pub fn count(self) -> u32 {
        self.count
    }

    /// The shard that owns the entry at `path` (its bytes relative to the root).
    pub fn owner_of_path(path: &[u8], count: u32) -> u32 {
        reduce(blake3::hash(path), count)
    }

    /// The shard that owns every name of inode `ino` (a name with more than one hard link), so
    /// that all names of one inode are in one part. Only the inode number counts: a network
    /// filesystem gives each client host its own device number.
    pub fn owner_of_inode(ino: u64, count: u32) -> u32 {
        let mut hasher = blake3::Hasher::new();
        hasher.update(b"inode ");
        hasher.update(&ino.to_le_bytes());
        reduce(hasher.finalize(), count)
    }

    pub fn owns_path(self, path: &[u8]) -> bool {
        Self::owner_of_path(path, self.count) == self.index
    }

    pub fn owns_inode(self, ino: u64) -> bool {
        Self::owner_of_inode(ino, self.count) == self.index
    }

    /// The shard from a scheduler's environment (`--shard auto`): a Kubernetes Indexed Job
    /// (`JOB_COMPLETION_INDEX`, 0-based; N from `shards`), a Slurm job array
    /// (`SLURM_ARRAY_TASK_ID` with `_COUNT`, `_MIN`, `_MAX` and, when set, `_STEP`), or GNU
    /// parallel (`PARALLEL_SEQ`, 1-based; N from `shards`). `var` reads a variable.
    pub fn from_env(var: impl Fn(&str) -> Option<String>, shards: Option<u32>) -> Result<Shard, String> {
        let found: Vec<&str> =
            [K8S, SLURM, PARALLEL].into_iter().filter(|name| var(name).is_some_and(|v| !v.is_empty())).collect();
        let shard = match found[..] {
            [] => {
                return Err(format!(
                    "--shard auto: none of {K8S} (Kubernetes Indexed Job), {SLURM} (Slurm job array) or {PARALLEL} (GNU parallel) is set; give --shard I/N"
                ));
            }
            [K8S] => {
                let n = need_count(shards, K8S)?;
                let index = number(&var, K8S)?;
                let count = u64::from(n);
                if index >= count {
                    return Err(format!("--shard auto: {K8S}={index} is not below --shards {n} (it counts from 0)"));
                }
                Shard::new(index as u32 + 1, n)?
            }
            [SLURM] => slurm(&var, shards)?,
            [PARALLEL] => {
                let n = need_count(shards, PARALLEL)?;
                let seq = number(&var, PARALLEL)?;
                if seq == 0 || seq > u64::from(n) {
                    return Err(format!("--shard auto: {PARALLEL}={seq} is not between 1 and --shards {n}"));
                }
                Shard::new(seq as u32, n)?
            }
            _ => {
                return Err(format!(
                    "--shard auto: several schedulers' variables are set ({}); give --shard I/N",
                    found.join(", ")
                ));
            }
        };
        Ok(shard)
    }
}

const K8S: &str = "JOB_COMPLETION_INDEX";
const SLURM: &str = "SLURM_ARRAY_TASK_ID";
const PARALLEL: &str = "PARALLEL_SEQ";

fn need_count(shards: Option<u32>, var: &str) -> Result<u32, String> {
    shards.ok_or_else(|| format!("--shard auto: {var} is set but the number of shards is not: give --shards N"))
}

fn number(var: &impl Fn(&str) -> Option<String>, name: &str) -> Result<u64, String> {
    let text = var(name).ok_or_else(|| format!("--shard auto: {name} is not set"))?;
    text.trim().parse::<u64>().map_err(|_| format!("--shard auto: {name}={text:?} is not a whole number"))
}

/// A Slurm array `--array=MIN-MAX[:STEP]`: task ids MIN, MIN+STEP, .. MAX are shards 1..COUNT.
/// A list that is no such range (`--array=0,3,4`) cannot be numbered from one task's variables.
fn slurm(var: &impl Fn(&str) -> Option<String>, shards: Option<u32>) -> Result<Shard, String> {
    let id = number(var, SLURM)?;
    let count = number(var, "SLURM_ARRAY_TASK_COUNT")?;
    let min = number(var, "SLURM_ARRAY_TASK_MIN")?;
    let max = number(var, "SLURM_ARRAY_TASK_MAX")?;
    let irregular =
        || format!("--shard auto: the Slurm array (ids {min} to {max}, {count} tasks) is not --array=MIN-MAX[:STEP]");
    if count == 0 || count > u64::from(MAX_SHARDS) || min > max || id < min || id > max {
        return Err(format!(
            "--shard auto: contradictory Slurm variables: task {id}, {count} tasks, ids {min} to {max}"
        ));
    }
    let step = if count == 1 {
        if min != max {
            return Err(irregular());
        }
        1
    } else {
        if (max - min) % (count - 1) != 0 {
            return Err(irregular());
        }
        (max - min) / (count - 1)
    };
    if let Some(given) = var("SLURM_ARRAY_TASK_STEP").filter(|s| !s.is_empty()) {
        let given: u64 = given
            .trim()
            .parse()
            .map_err(|_| format!("--shard auto: SLURM_ARRAY_TASK_STEP={given:?} is not a whole number"))?;
        if count > 1 && given != step {
            return Err(irregular());
        }
    }
    if step == 0 || (id - min) % step != 0 {
        return Err(irregular());
    }
    if let Some(n) = shards
        && u64::from(n) != count
    {
        return Err(format!("--shard auto: --shards {n} contradicts SLURM_ARRAY_TASK_COUNT={count}"));
    }
    Shard::new(((id - min) / step + 1) as u32, count as u32)
}

/// A digest's first 8 bytes, little-endian, modulo `count`, plus one.
fn reduce(hash: blake3::Hash, count: u32) -> u32 {
    let bytes: [u8; 8] = hash.as_bytes()[..8].try_into().expect("32 bytes");
    (u64::from_le_bytes(bytes) % u64::from(count)) as u32 + 1
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
    }

    #[test]
    fn shards_parse_as_one_based_i_of_n() {
        assert_eq!(Shard::parse("2/4").unwrap(), Shard::new(2, 4).unwrap());
        for bad in ["0/4", "5/4", "1/0", "x/4", "3", "-1/4"] {
            assert!(Shard::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn schedulers_variables_number_the_shards_from_one() {
        let k8s = Shard::from_env(env(&[("JOB_COMPLETION_INDEX", "0")]), Some(3)).unwrap();
        assert_eq!(k8s, Shard::new(1, 3).unwrap());
        assert!(Shard::from_env(env(&[("JOB_COMPLETION_INDEX", "3")]), Some(3)).is_err());
        assert!(Shard::from_env(env(&[("JOB_COMPLETION_INDEX", "0")]), None).is_err());
        let seq = Shard::from_env(env(&[("PARALLEL_SEQ", "4")]), Some(4)).unwrap();
        assert_eq!(seq, Shard::new(4, 4).unwrap());
        assert!(Shard::from_env(env(&[("PARALLEL_SEQ", "0")]), Some(4)).is_err());
        // --array=1-7:2 is tasks 1, 3, 5, 7.
        let slurm = |id: &str| {
            Shard::from_env(
                env(&[
                    ("SLURM_ARRAY_TASK_ID", id),
                    ("SLURM_ARRAY_TASK_COUNT", "4"),
                    ("SLURM_ARRAY_TASK_MIN", "1"),
                    ("SLURM_ARRAY_TASK_MAX", "7"),
                    ("SLURM_ARRAY_TASK_STEP", "2"),
                ]),
                None,
            )
        };
        assert_eq!(slurm("1").unwrap(), Shard::new(1, 4).unwrap());
        assert_eq!(slurm("7").unwrap(), Shard::new(4, 4).unwrap());
        assert!(slurm("4").is_err(), "not one of the array's ids");
        assert!(Shard::from_env(env(&[]), Some(4)).is_err());
        assert!(Shard::from_env(env(&[("PARALLEL_SEQ", "1"), ("SLURM_ARRAY_TASK_ID", "1")]), Some(4)).is_err());
    }

    #[test]
    fn owners_spread_the_names_of_one_directory() {
        let mut per = [0u32; 4];
        for i in 0..4000 {
            per[Shard::owner_of_path(format!("big/file-{i}").as_bytes(), 4) as usize - 1] += 1;
        }
        assert!(per.iter().all(|&n| n > 800), "{per:?}");
    }
}
