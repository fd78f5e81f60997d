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
mod units;
mod values;

use std::fmt;

pub use values::{
    Bandwidth, Burst, CpuQuota, CpuSet, Device, IoLimit, IoMax, Max, Memory, Pids, Priority,
    Weight, cpu_max_line,
};

/// Every limit a user can set, named as the CLI flag (without `--`).
///
/// The same names are used by the API (`{"cpus": "1.5"}`) and, prefixed with `rein/`, by
/// OCI annotations (`rein/cpus`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Flag {
    Cpus,
    CpuWeight,
    Cpuset,
    Memory,
    MemoryHigh,
    MemoryLow,
    MemoryMin,
    Swap,
    OomGroup,
    Pids,
    IoWeight,
    IoMax,
    Priority,
    Egress,
    EgressBurst,
    Ingress,
}

impl Flag {
    /// All flags, in the order they are displayed.
    pub const ALL: [Self; 16] = [
        Self::Cpus,
        Self::CpuWeight,
        Self::Cpuset,
        Self::Memory,
        Self::MemoryHigh,
        Self::MemoryLow,
        Self::MemoryMin,
        Self::Swap,
        Self::OomGroup,
        Self::Pids,
        Self::IoWeight,
        Self::IoMax,
        Self::Priority,
        Self::Egress,
        Self::EgressBurst,
        Self::Ingress,
    ];

    /// The flag's name as typed after `--`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Cpus => "cpus",
            Self::CpuWeight => "cpu-weight",
            Self::Cpuset => "cpuset",
            Self::Memory => "memory",
            Self::MemoryHigh => "memory-high",
            Self::MemoryLow => "memory-low",
            Self::MemoryMin => "memory-min",
            Self::Swap => "swap",
            Self::OomGroup => "oom-group",
            Self::Pids => "pids",
            Self::IoWeight => "io-weight",
            Self::IoMax => "io-max",
            Self::Priority => "priority",
            Self::Egress => "egress",
            Self::EgressBurst => "egress-burst",
            Self::Ingress => "ingress",
        }
    }

    /// Looks a flag up by name (`"cpus"` or `"--cpus"`).
    pub fn from_name(name: &str) -> Option<Self> {
        let name = name.strip_prefix("--").unwrap_or(name);
        Self::ALL.into_iter().find(|f| f.name() == name)
    }

    /// What the flag accepts, for error messages and `--help`.
    pub const fn accepted(self) -> &'static str {
        match self {
            Self::Cpus => CpuQuota::ACCEPTED,
            Self::CpuWeight | Self::IoWeight => Weight::ACCEPTED,
            Self::Cpuset => CpuSet::ACCEPTED,
            Self::Memory | Self::MemoryHigh | Self::MemoryLow | Self::MemoryMin | Self::Swap => {
                Memory::ACCEPTED
            }
            Self::OomGroup => "true or false",
            Self::Pids => Pids::ACCEPTED,
            Self::IoMax => IoMax::ACCEPTED,
            Self::Priority => Priority::ACCEPTED,
            Self::Egress | Self::Ingress => Bandwidth::ACCEPTED,
            Self::EgressBurst => Burst::ACCEPTED,
        }
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

/// A validated set of limits. `None` means "not set by this request": leave the kernel's
/// current value alone (for `rein set`) or keep the kernel default (for a new container).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    pub cpus: Option<Max<CpuQuota>>,
    pub cpu_weight: Option<Weight>,
    pub cpuset: Option<CpuSet>,
    pub memory: Option<Memory>,
    pub memory_high: Option<Memory>,
    pub memory_low: Option<Memory>,
    pub memory_min: Option<Memory>,
    pub swap: Option<Memory>,
    pub oom_group: Option<bool>,
    pub pids: Option<Pids>,
    pub io_weight: Option<Weight>,
    /// At most one entry per device (checked by [`Limits::validate`]).
    pub io_max: Vec<IoMax>,
    pub priority: Option<Priority>,
    pub egress: Option<Bandwidth>,
    /// The shaper's burst for this container; `None` on a new container means the agent's
    /// default (`rein agent --egress-burst-ms`).
    pub egress_burst: Option<Burst>,
    pub ingress: Option<Bandwidth>,
}

fn parse_value<T: std::str::FromStr<Err = String>>(
    flag: Flag,
    value: &str,
) -> Result<T, LimitError> {
    value.parse().map_err(|problem| LimitError::Value {
        flag,
        value: value.to_owned(),
        problem,
    })
}

fn parse_bool(flag: Flag, value: &str) -> Result<bool, LimitError> {
    match value.trim() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(LimitError::Value {
            flag,
            value: value.to_owned(),
            problem: "not a boolean".into(),
        }),
    }
}

/// Stores `v` in `slot`, refusing a second value for the same flag.
fn set_once<T: fmt::Display>(slot: &mut Option<T>, flag: Flag, v: T) -> Result<(), LimitError> {
    if let Some(first) = slot {
        return Err(LimitError::Repeated {
            flag,
            first: first.to_string(),
            second: v.to_string(),
        });
    }
    *slot = Some(v);
    Ok(())
}

impl Limits {
    /// Smallest `--memory` accepted.
    pub const MIN_MEMORY: u64 = 1 << 20;

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

    /// Parses one value into its field. Does not run the cross-field checks.
    fn set(&mut self, flag: Flag, value: &str) -> Result<(), LimitError> {
        match flag {
            Flag::Cpus => set_once(&mut self.cpus, flag, parse_value(flag, value)?),
            Flag::CpuWeight => set_once(&mut self.cpu_weight, flag, parse_value(flag, value)?),
            Flag::Cpuset => set_once(&mut self.cpuset, flag, parse_value(flag, value)?),
            Flag::Memory => set_once(&mut self.memory, flag, parse_value(flag, value)?),
            Flag::MemoryHigh => set_once(&mut self.memory_high, flag, parse_value(flag, value)?),
            Flag::MemoryLow => set_once(&mut self.memory_low, flag, parse_value(flag, value)?),
            Flag::MemoryMin => set_once(&mut self.memory_min, flag, parse_value(flag, value)?),
            Flag::Swap => set_once(&mut self.swap, flag, parse_value(flag, value)?),
            Flag::OomGroup => set_once(&mut self.oom_group, flag, parse_bool(flag, value)?),
            Flag::Pids => set_once(&mut self.pids, flag, parse_value(flag, value)?),
            Flag::IoWeight => set_once(&mut self.io_weight, flag, parse_value(flag, value)?),
            Flag::IoMax => {
                self.io_max.push(parse_value(flag, value)?);
                Ok(())
            }
            Flag::Priority => set_once(&mut self.priority, flag, parse_value(flag, value)?),
            Flag::Egress => set_once(&mut self.egress, flag, parse_value(flag, value)?),
            Flag::EgressBurst => set_once(&mut self.egress_burst, flag, parse_value(flag, value)?),
            Flag::Ingress => set_once(&mut self.ingress, flag, parse_value(flag, value)?),
        }
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
        fn push<T: fmt::Display>(out: &mut Vec<(Flag, String)>, f: Flag, v: Option<&T>) {
            if let Some(v) = v {
                out.push((f, v.to_string()));
            }
        }
        let mut out = Vec::new();
        push(&mut out, Flag::Cpus, self.cpus.as_ref());
        push(&mut out, Flag::CpuWeight, self.cpu_weight.as_ref());
        push(&mut out, Flag::Cpuset, self.cpuset.as_ref());
        push(&mut out, Flag::Memory, self.memory.as_ref());
        push(&mut out, Flag::MemoryHigh, self.memory_high.as_ref());
        push(&mut out, Flag::MemoryLow, self.memory_low.as_ref());
        push(&mut out, Flag::MemoryMin, self.memory_min.as_ref());
        push(&mut out, Flag::Swap, self.swap.as_ref());
        push(&mut out, Flag::OomGroup, self.oom_group.as_ref());
        push(&mut out, Flag::Pids, self.pids.as_ref());
        push(&mut out, Flag::IoWeight, self.io_weight.as_ref());
        for io in &self.io_max {
            out.push((Flag::IoMax, io.to_string()));
        }
        push(&mut out, Flag::Priority, self.priority.as_ref());
        push(&mut out, Flag::Egress, self.egress.as_ref());
        push(&mut out, Flag::EgressBurst, self.egress_burst.as_ref());
        push(&mut out, Flag::Ingress, self.ingress.as_ref());
        out
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
