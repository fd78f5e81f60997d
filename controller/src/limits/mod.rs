//! The one model of a container's limits, and the one parser for them.
//!
//! The CLI (`rein run`/`rein set` flags), the API (JSON bodies) and the OCI hook (annotations)
//! all hand `(Flag, "text")` pairs to [`Limits::from_pairs`], so a value means the same thing
//! wherever it comes from. Each value type parses itself ([`std::str::FromStr`]) into a
//! validated form and displays back into text that parses to the same value (the round trip
//! is property-tested). Cross-field rules (for example `--memory-low` not above `--memory`)
//! are checked once for the whole set in [`Limits::validate`], so nothing is half-applied.
//!
//! Conversions to the kernel's own formats (`cpu.max`, bytes per second for the shaper, ...)
//! live next to each type and say where the numbers come from.

pub mod ceiling;
mod table;
mod units;
mod values;

use std::fmt;

pub use table::{Slot, Value};
pub use values::{
    Bandwidth, Burst, CpuQuota, CpuSet, Device, IoLimit, IoMax, Max, Memory, Pids, Priority,
    Weight, cpu_max_line,
};

// The one table of limit flags: the `Flag` enum, the fields of `Limits`, their parsing and
// display, the CLI's arguments and the hook ceiling all come from it (see `table`). Each doc
// line is the flag's `--help`.
table::limit_table! {
    /// CPU quota in CPUs, e.g. 1.5 or 1500m (cpu.max), or max.
    Cpus cpus: Option<Max<CpuQuota>> = "cpus", "CPUS";
    /// CPU weight 1..10000, default 100, e.g. 300 (cpu.weight).
    CpuWeight cpu_weight: Option<Weight> = "cpu-weight", "W";
    /// CPUs to run on, e.g. 0-1,3 (cpuset.cpus).
    Cpuset cpuset: Option<CpuSet> = "cpuset", "LIST";
    /// Hard memory limit, e.g. 256M or 1.5G (memory.max); the OOM killer acts above it.
    Memory memory: Option<Memory> = "memory", "BYTES";
    /// Memory throttling threshold, e.g. 200M (memory.high).
    MemoryHigh memory_high: Option<Memory> = "memory-high", "BYTES";
    /// Best-effort memory protection, e.g. 64M (memory.low).
    MemoryLow memory_low: Option<Memory> = "memory-low", "BYTES";
    /// Hard memory protection, e.g. 32M (memory.min).
    MemoryMin memory_min: Option<Memory> = "memory-min", "BYTES";
    /// Swap limit itself (not memory+swap as in docker), e.g. 0 or 1G (memory.swap.max).
    Swap swap: Option<Memory> = "swap", "BYTES";
    /// On OOM, kill the whole container rather than one process (memory.oom.group).
    OomGroup oom_group: Option<bool> = "oom-group", "BOOL";
    /// Most processes and threads, e.g. 512 (pids.max), or max.
    Pids pids: Option<Pids> = "pids", "N";
    /// IO weight 1..10000, default 100 (io.weight).
    IoWeight io_weight: Option<Weight> = "io-weight", "W";
    /// Per-device IO limit, repeatable: 'DEV rbps=10M wbps=5M riops=1000 wiops=1000' with DEV as MAJ:MIN or a device path (io.max); at most one per device.
    IoMax io_max: Vec<IoMax> = "io-max", "'DEV KEY=VALUE..'";
    /// Priority class: critical, high, normal, low or idle (sets cpu.weight, io.weight, cpu.idle and the network priority; see docs/operations.md).
    Priority priority: Option<Priority> = "priority", "CLASS";
    /// Egress bandwidth, e.g. 10mbit or 10M (bits per second).
    Egress egress: Option<Bandwidth> = "egress", "RATE";
    /// Egress burst as time at the container's rate, e.g. 5ms (default: the agent's --egress-burst-ms, 2ms); larger bursts help bursty senders, smaller keep delay lower.
    EgressBurst egress_burst: Option<Burst> = "egress-burst", "TIME";
    /// Ingress bandwidth, e.g. 10mbit or 10M (bits per second).
    Ingress ingress: Option<Bandwidth> = "ingress", "RATE";
}

impl Flag {
    /// Looks a flag up by name (`"cpus"` or `"--cpus"`).
    pub fn from_name(name: &str) -> Option<Self> {
        let name = name.strip_prefix("--").unwrap_or(name);
        Self::ALL.into_iter().find(|f| f.name() == name)
    }
}

impl fmt::Display for Flag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "--{}", self.name())
    }
}

/// Why a set of limits was refused. Every variant names the flag(s) and value(s) involved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// One value did not parse or is out of range.
    #[error("invalid value {value:?} for {flag}: {problem}; accepted: {}", flag.accepted())]
    Value {
        flag: Flag,
        value: String,
        problem: String,
    },
    /// Two memory limits contradict each other (for example `--memory-low` above `--memory`).
    #[error(
        "{lower_flag} {lower} is larger than {upper_flag} {upper}; {lower_flag} must not exceed {upper_flag}"
    )]
    Order {
        lower_flag: Flag,
        lower: Memory,
        upper_flag: Flag,
        upper: Memory,
    },
    /// `--io-max` named the same device twice.
    #[error("--io-max names device {device} twice; give each device once with all its keys")]
    DuplicateDevice { device: Device },
    /// The same flag was given twice (only `--io-max` may repeat, once per device).
    #[error("{flag} given twice ({first:?} and {second:?}); give it once")]
    Repeated {
        flag: Flag,
        first: String,
        second: String,
    },
    /// A runtime's annotation asked for more than the operator allows (`[hook_ceiling]`).
    #[error(
        "{flag} {value} is above the operator's ceiling {ceiling} for containers registered by a \
         runtime (agent config [hook_ceiling])"
    )]
    AboveCeiling {
        flag: Flag,
        value: String,
        ceiling: String,
    },
    /// Two flags that cannot be combined.
    #[error("{a} and {b} cannot be combined: {why}")]
    Conflict { a: Flag, b: Flag, why: &'static str },
    /// A name that is not a limit (API field or annotation key).
    #[error("unknown limit {name:?}; known limits: {}", known_names())]
    UnknownFlag { name: String },
}

fn known_names() -> String {
    Flag::ALL
        .iter()
        .map(|f| f.name())
        .collect::<Vec<_>>()
        .join(", ")
}

impl Limits {
    /// Smallest `--memory` accepted.
    pub const MIN_MEMORY: u64 = 1 << 20;

    /// Whether applying these limits may wait in the kernel: lowering `memory.max`,
    /// `memory.high` or `memory.swap.max` reclaims (or OOM-kills) before the write returns,
    /// and a `cpuset.cpus` write rebuilds scheduler domains. Every other write returns at
    /// once.
    pub fn may_wait(&self) -> bool {
        self.memory.is_some()
            || self.memory_high.is_some()
            || self.swap.is_some()
            || self.cpuset.is_some()
    }

    /// Parses `(flag, value)` pairs from any front end, then validates the whole set.
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (Flag, &'a str)>,
    ) -> Result<Self, LimitError> {
        let mut l = Self::default();
        for (flag, value) in pairs {
            l.set(flag, value)?;
        }
        l.validate()?;
        Ok(l)
    }

    /// Like [`Limits::from_pairs`] with flag names (API fields, annotation keys without
    /// their prefix); an unknown name is an error, not silently ignored.
    pub fn from_named_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Self, LimitError> {
        let pairs = pairs
            .into_iter()
            .map(|(name, v)| {
                Flag::from_name(name)
                    .map(|f| (f, v))
                    .ok_or_else(|| LimitError::UnknownFlag {
                        name: name.to_owned(),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Self::from_pairs(pairs)
    }

    /// Cross-field rules. The kernel would accept most of these combinations and then behave
    /// surprisingly (a `memory.low` above `memory.max` protects nothing), so refuse them.
    pub fn validate(&self) -> Result<(), LimitError> {
        // A smaller hard limit kills the container's first process before it can start
        // (docker's own floor is 6M).
        if let Some(Memory::Bytes(b)) = self.memory
            && b < Self::MIN_MEMORY
        {
            return Err(LimitError::Value {
                flag: Flag::Memory,
                value: Memory::Bytes(b).to_string(),
                problem: "below the smallest memory limit, 1M".into(),
            });
        }
        // Ordered pairs (lower, upper) of the memory knobs: min <= low <= high <= max.
        let mem = [
            (Flag::MemoryMin, self.memory_min),
            (Flag::MemoryLow, self.memory_low),
            (Flag::MemoryHigh, self.memory_high),
            (Flag::Memory, self.memory),
        ];
        for (i, (lower_flag, lower)) in mem.iter().enumerate() {
            for (upper_flag, upper) in &mem[i + 1..] {
                if let (Some(lower), Some(upper)) = (lower, upper)
                    && lower > upper
                {
                    return Err(LimitError::Order {
                        lower_flag: *lower_flag,
                        lower: *lower,
                        upper_flag: *upper_flag,
                        upper: *upper,
                    });
                }
            }
        }
        if self.priority == Some(Priority::Idle) && self.cpu_weight.is_some() {
            return Err(LimitError::Conflict {
                a: Flag::Priority,
                b: Flag::CpuWeight,
                why: "an idle cgroup runs only when no other wants the CPU, so it has no weight",
            });
        }
        for (i, a) in self.io_max.iter().enumerate() {
            if self.io_max[..i].iter().any(|b| b.device == a.device) {
                return Err(LimitError::DuplicateDevice {
                    device: a.device.clone(),
                });
            }
        }
        Ok(())
    }

    /// The set as `(flag, value)` pairs, in [`Flag::ALL`] order; parsing them back with
    /// [`Limits::from_pairs`] gives an equal `Limits`.
    pub fn to_pairs(&self) -> Vec<(Flag, String)> {
        Flag::ALL
            .into_iter()
            .flat_map(|flag| self.texts(flag).into_iter().map(move |t| (flag, t)))
            .collect()
    }
}

/// Displays as command-line flags, e.g. `--cpus 1.5 --memory 256M --io-max '8:0 rbps=10M'`.
impl fmt::Display for Limits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (flag, value)) in self.to_pairs().into_iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            if value.contains(' ') {
                write!(f, "{flag} '{value}'")?;
            } else {
                write!(f, "{flag} {value}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
