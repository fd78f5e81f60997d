//! The value types of [`super::Limits`]. Each parses from text with [`FromStr`] (the error is
//! the problem in words; [`super::LimitError`] adds the flag and what is accepted) and
//! displays as text that parses back to the same value.

use std::{fmt, path::PathBuf, str::FromStr};

use super::{
    table::Value,
    units::{scale, split_unit},
};

const KI: u64 = 1 << 10;
const MI: u64 = 1 << 20;
const GI: u64 = 1 << 30;
const TI: u64 = 1 << 40;

/// A value that can also be the cgroup keyword `max` (no limit).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Max<T> {
    Max,
    Value(T),
}

impl<T: FromStr<Err = String>> FromStr for Max<T> {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.trim() == "max" {
            Ok(Self::Max)
        } else {
            s.parse().map(Self::Value)
        }
    }
}

impl<T: fmt::Display> fmt::Display for Max<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Max => f.write_str("max"),
            Self::Value(v) => v.fmt(f),
        }
    }
}

/// A CPU quota in thousandths of a CPU (`--cpus 1.5` = `1500m` = 1500).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CpuQuota(u32);

impl CpuQuota {
    pub const ACCEPTED: &'static str =
        "CPUs as a decimal (1.5, 0.25) or millicpus (1500m), from 0.01 (10m) to 4096, or max";
    /// The kernel refuses a quota under 1 ms per period; with the 100 ms period that is 10m.
    pub const MIN_MILLIS: u32 = 10;
    pub const MAX_MILLIS: u32 = 4096 * 1000;
    /// `cpu.max` period in microseconds: the kernel default (100 ms), as docker and systemd use.
    pub const PERIOD_US: u64 = 100_000;

    pub fn from_millis(millis: u32) -> Result<Self, String> {
        if !(Self::MIN_MILLIS..=Self::MAX_MILLIS).contains(&millis) {
            return Err(format!(
                "{millis}m is outside {}m..={}m",
                Self::MIN_MILLIS,
                Self::MAX_MILLIS
            ));
        }
        Ok(Self(millis))
    }

    pub const fn millis(self) -> u32 {
        self.0
    }

    /// Quota per [`Self::PERIOD_US`]: one CPU is a whole period, so 1m is 100 us.
    pub fn quota_us(self) -> u64 {
        u64::from(self.0) * Self::PERIOD_US / 1000
    }
}

impl FromStr for CpuQuota {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let millis = if let Some(m) = s.strip_suffix('m') {
            if !m.bytes().all(|b| b.is_ascii_digit()) || m.is_empty() {
                return Err("millicpus must be a whole number before 'm'".into());
            }
            scale(m, 1)?
        } else {
            scale(s, 1000)?
        };
        let millis = u32::try_from(millis).map_err(|_| "too large".to_owned())?;
        Self::from_millis(millis)
    }
}

/// Shortest decimal: 1500 -> "1.5", 250 -> "0.25", 2000 -> "2".
impl fmt::Display for CpuQuota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (int, frac) = (self.0 / 1000, self.0 % 1000);
        if frac == 0 {
            write!(f, "{int}")
        } else {
            let frac = format!("{frac:03}");
            write!(f, "{int}.{}", frac.trim_end_matches('0'))
        }
    }
}

/// The `cpu.max` line: `"150000 100000"` for 1.5 CPUs, `"max 100000"` for no quota.
pub fn cpu_max_line(q: Max<CpuQuota>) -> String {
    match q {
        Max::Max => format!("max {}", CpuQuota::PERIOD_US),
        Max::Value(q) => format!("{} {}", q.quota_us(), CpuQuota::PERIOD_US),
    }
}

/// A cgroup v2 weight (`cpu.weight`, `io.weight`): 1..=10000, kernel default 100.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Weight(u16);

impl Weight {
    pub const ACCEPTED: &'static str = "a whole number from 1 to 10000 (the default is 100)";
    pub const DEFAULT: Self = Self(100);

    pub fn new(w: u16) -> Result<Self, String> {
        if (1..=10_000).contains(&w) {
            Ok(Self(w))
        } else {
            Err(format!("{w} is outside 1..=10000"))
        }
    }

    pub const fn get(self) -> u16 {
        self.0
    }
}

impl FromStr for Weight {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let n: u64 = s
            .trim()
            .parse()
            .map_err(|_| "not a whole number".to_owned())?;
        Self::new(u16::try_from(n).map_err(|_| format!("{n} is outside 1..=10000"))?)
    }
}

impl fmt::Display for Weight {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A set of CPU numbers (`cpuset.cpus`), kept as sorted, merged, inclusive ranges so that
/// equal sets compare equal however they were written (`0,1,2` = `0-2`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CpuSet(Vec<(u32, u32)>);

impl CpuSet {
    pub const ACCEPTED: &'static str =
        "CPU numbers and ranges separated by commas, such as 0-3,6 (CPU numbers 0..=8191)";
    /// The kernel's largest NR_CPUS.
    pub const MAX_CPU: u32 = 8191;

    pub fn from_ranges(mut ranges: Vec<(u32, u32)>) -> Result<Self, String> {
        if ranges.is_empty() {
            return Err("no CPUs given".into());
        }
        for &(a, b) in &ranges {
            if a > b {
                return Err(format!("range {a}-{b} runs backwards"));
            }
            if b > Self::MAX_CPU {
                return Err(format!("CPU {b} is above {}", Self::MAX_CPU));
            }
        }
        ranges.sort_unstable();
        let mut merged: Vec<(u32, u32)> = Vec::with_capacity(ranges.len());
        for (a, b) in ranges {
            match merged.last_mut() {
                Some(last) if a <= last.1.saturating_add(1) => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        Ok(Self(merged))
    }

    pub fn ranges(&self) -> &[(u32, u32)] {
        &self.0
    }
}

impl FromStr for CpuSet {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let num = |t: &str| -> Result<u32, String> {
            t.trim()
                .parse()
                .map_err(|_| format!("{:?} is not a CPU number", t.trim()))
        };
        let ranges = s
            .split(',')
            .map(|part| match part.split_once('-') {
                Some((a, b)) => Ok((num(a)?, num(b)?)),
                None => num(part).map(|n| (n, n)),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Self::from_ranges(ranges)
    }
}

impl fmt::Display for CpuSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (a, b)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            if a == b {
                write!(f, "{a}")?
            } else {
                write!(f, "{a}-{b}")?
            }
        }
        Ok(())
    }
}

/// An amount of memory, or `max`. `Bytes` orders below `Max`, so comparisons between limits
/// (low <= high <= max) work directly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Memory {
    Bytes(u64),
    Max,
}

impl Memory {
    pub const ACCEPTED: &'static str = "bytes with an optional binary unit K, M, G, T (also Ki, \
         KiB, k, ...; 1K = 1024 bytes, as docker counts), such as 256M or 1.5G, or max";

    /// The value as rein writes it to `memory.max` and friends: plain bytes or `max` (the
    /// kernel would take "256M" too, but plain numbers read back unambiguously).
    pub fn cgroup_value(self) -> String {
        match self {
            Self::Max => "max".into(),
            Self::Bytes(b) => b.to_string(),
        }
    }
}

/// Parses a byte amount with docker's units: K/M/G/T are powers of 1024, optionally followed
/// by `i` and/or `B`, case-insensitive; fractions round down to whole bytes.
pub(crate) fn parse_bytes(s: &str) -> Result<u64, String> {
    let (number, unit) = split_unit(s);
    if number.is_empty() {
        return Err("no number".into());
    }
    let mult = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "ki" | "kb" | "kib" => KI,
        "m" | "mi" | "mb" | "mib" => MI,
        "g" | "gi" | "gb" | "gib" => GI,
        "t" | "ti" | "tb" | "tib" => TI,
        _ => return Err(format!("unknown unit {unit:?}")),
    };
    let bytes = scale(number, mult)?;
    if bytes > i64::MAX as u64 {
        return Err("too large".into());
    }
    Ok(bytes)
}

/// Largest binary unit that divides the value exactly: 268435456 -> "256M".
pub(crate) fn format_bytes(b: u64, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    for (mult, unit) in [(TI, "T"), (GI, "G"), (MI, "M"), (KI, "K")] {
        if b != 0 && b.is_multiple_of(mult) {
            return write!(f, "{}{unit}", b / mult);
        }
    }
    write!(f, "{b}")
}

impl FromStr for Memory {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.trim() == "max" {
            Ok(Self::Max)
        } else {
            parse_bytes(s).map(Self::Bytes)
        }
    }
}

impl fmt::Display for Memory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Max => f.write_str("max"),
            Self::Bytes(b) => format_bytes(*b, f),
        }
    }
}

/// `pids.max`: a number of tasks or `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Pids {
    Limit(u32),
    Max,
}

impl Pids {
    pub const ACCEPTED: &'static str =
        "a whole number of processes and threads from 1 to 4194304, or max";
    /// PID_MAX_LIMIT on 64-bit kernels.
    pub const LIMIT: u32 = 4_194_304;
}

impl FromStr for Pids {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s == "max" {
            return Ok(Self::Max);
        }
        let n: u64 = s.parse().map_err(|_| "not a whole number".to_owned())?;
        match u32::try_from(n) {
            Ok(n) if (1..=Self::LIMIT).contains(&n) => Ok(Self::Limit(n)),
            _ => Err(format!("{n} is outside 1..={}", Self::LIMIT)),
        }
    }
}

impl fmt::Display for Pids {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Limit(n) => n.fmt(f),
            Self::Max => f.write_str("max"),
        }
    }
}

/// A block device for `io.max`: its number, or a path resolved to a number when applied.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Device {
    Number {
        major: u32,
        minor: u32,
    },
    /// An absolute path under `/dev` (no `..`, no spaces), resolved with stat(2) when applied.
    Path(PathBuf),
}

impl FromStr for Device {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some((maj, min)) = s.split_once(':') {
            let n = |t: &str| {
                t.parse::<u32>()
                    .map_err(|_| format!("{s:?} is not MAJ:MIN"))
            };
            return Ok(Self::Number {
                major: n(maj)?,
                minor: n(min)?,
            });
        }
        if s.starts_with("/dev/")
            && s.len() > 5
            && !s.split('/').any(|c| c == "..")
            && !s.contains(|c: char| c.is_whitespace() || c.is_control() || c == '=')
        {
            return Ok(Self::Path(PathBuf::from(s)));
        }
        Err(format!(
            "device {s:?} is neither MAJ:MIN (such as 8:0) nor a path under /dev/"
        ))
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Number { major, minor } => write!(f, "{major}:{minor}"),
            Self::Path(p) => write!(f, "{}", p.display()),
        }
    }
}

/// One `io.max` key's value: a number (bytes/s for bps keys, operations/s for iops keys) or
/// `max`.
pub type IoLimit = Max<u64>;

/// One device's `io.max` line: `--io-max '8:0 rbps=10M wbps=5M riops=1000 wiops=max'`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IoMax {
    pub device: Device,
    /// Read bytes per second.
    pub rbps: Option<IoLimit>,
    /// Write bytes per second.
    pub wbps: Option<IoLimit>,
    /// Read operations per second.
    pub riops: Option<IoLimit>,
    /// Write operations per second.
    pub wiops: Option<IoLimit>,
}

impl IoMax {
    pub const ACCEPTED: &'static str = "'DEV KEY=VALUE...' where DEV is MAJ:MIN (8:0) or a device \
         path (/dev/vdb) and KEY is rbps or wbps (bytes/s, units as for memory: 10M) or riops or \
         wiops (operations/s), each value also max; e.g. '8:0 rbps=10M wiops=1000'";

    fn keys(&self) -> [(&'static str, Option<IoLimit>); 4] {
        [
            ("rbps", self.rbps),
            ("wbps", self.wbps),
            ("riops", self.riops),
            ("wiops", self.wiops),
        ]
    }

    /// The part after the device number in an `io.max` write: `"rbps=10485760 wiops=max"`.
    /// The kernel wants plain numbers, so units are expanded here.
    pub fn cgroup_keys(&self) -> String {
        self.keys()
            .iter()
            .filter_map(|(k, v)| v.map(|v| format!("{k}={v}")))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl FromStr for IoMax {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut words = s.split_whitespace();
        let device: Device = words.next().ok_or("no device given")?.parse()?;
        let mut io = Self {
            device,
            rbps: None,
            wbps: None,
            riops: None,
            wiops: None,
        };
        for word in words {
            let (key, value) = word
                .split_once('=')
                .ok_or_else(|| format!("{word:?} is not KEY=VALUE"))?;
            let (slot, bytes) = match key {
                "rbps" => (&mut io.rbps, true),
                "wbps" => (&mut io.wbps, true),
                "riops" => (&mut io.riops, false),
                "wiops" => (&mut io.wiops, false),
                _ => {
                    return Err(format!(
                        "unknown key {key:?} (keys: rbps, wbps, riops, wiops)"
                    ));
                }
            };
            let parsed = if value == "max" {
                Max::Max
            } else if bytes {
                Max::Value(parse_bytes(value).map_err(|e| format!("{key}={value}: {e}"))?)
            } else {
                Max::Value(
                    value
                        .parse()
                        .map_err(|_| format!("{key}={value}: not a whole number"))?,
                )
            };
            if slot.replace(parsed).is_some() {
                return Err(format!("key {key} given twice"));
            }
        }
        if io.keys().iter().all(|(_, v)| v.is_none()) {
            return Err("no limit given for the device".into());
        }
        Ok(io)
    }
}

impl fmt::Display for IoMax {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.device)?;
        for (k, v) in self.keys() {
            match v {
                None => {}
                Some(Max::Max) => write!(f, " {k}=max")?,
                Some(Max::Value(n)) if k.ends_with("bps") => {
                    write!(f, " {k}=")?;
                    format_bytes(n, f)?;
                }
                Some(Max::Value(n)) => write!(f, " {k}={n}")?,
            }
        }
        Ok(())
    }
}

/// A priority class: one word that sets CPU, IO and network priority together.
///
/// | class    | cpu.weight | cpu.idle | io.weight | skb->priority (fq band) |
/// |----------|-----------:|---------:|----------:|-------------------------|
/// | critical | 1000       | 0        | 1000      | 6 TC_PRIO_INTERACTIVE (band 0) |
/// | high     | 300        | 0        | 300       | 6 TC_PRIO_INTERACTIVE (band 0) |
/// | normal   | 100        | 0        | 100       | 0 TC_PRIO_BESTEFFORT (band 1)  |
/// | low      | 30         | 0        | 30        | 2 TC_PRIO_BULK (band 2)        |
/// | idle     | not written| 1        | 1         | 2 TC_PRIO_BULK (band 2)        |
///
/// Bands are those of `sch_fq`'s default priomap (kernel >= 6.7). An explicit `--cpu-weight`
/// or `--io-weight` overrides the class's value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Priority {
    Critical,
    High,
    Normal,
    Low,
    Idle,
}

impl Priority {
    pub const ACCEPTED: &'static str = "critical, high, normal, low or idle";
    pub const ALL: [Self; 5] = [
        Self::Critical,
        Self::High,
        Self::Normal,
        Self::Low,
        Self::Idle,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Self::Critical => "critical",
            Self::High => "high",
            Self::Normal => "normal",
            Self::Low => "low",
            Self::Idle => "idle",
        }
    }

    /// `cpu.weight` for the class. For idle it is never written (the kernel refuses a weight
    /// while `cpu.idle` is set); the value only orders the classes.
    pub const fn cpu_weight(self) -> Weight {
        Weight(match self {
            Self::Critical => 1000,
            Self::High => 300,
            Self::Normal => 100,
            Self::Low => 30,
            Self::Idle => 1,
        })
    }

    pub const fn io_weight(self) -> Weight {
        self.cpu_weight()
    }

    /// `cpu.idle` (kernel >= 5.15): the cgroup runs only when nothing else wants the CPU.
    pub const fn cpu_idle(self) -> bool {
        matches!(self, Self::Idle)
    }

    /// `skb->priority` for egress packets (TC_PRIO_* values from `linux/pkt_sched.h`).
    pub const fn skb_priority(self) -> u32 {
        match self {
            Self::Critical | Self::High => 6,
            Self::Normal => 0,
            Self::Low | Self::Idle => 2,
        }
    }
}

impl FromStr for Priority {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        Self::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown class {s:?}"))
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A bandwidth in bits per second, as users and both tc and Kubernetes write it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bandwidth(u64);

impl Bandwidth {
    pub const ACCEPTED: &'static str = "bits per second as tc writes them (500kbit, 10mbit, \
         1gbit; kibit, mibit, gibit for powers of 1024) or as a Kubernetes quantity (10M, 1G, \
         500k, 10Mi, or a plain number of bits per second), from 1kbit to 1tbit";
    pub const MIN_BITS: u64 = 1_000;
    pub const MAX_BITS: u64 = 1_000_000_000_000;

    pub fn from_bits_per_second(bits: u64) -> Result<Self, String> {
        if (Self::MIN_BITS..=Self::MAX_BITS).contains(&bits) {
            Ok(Self(bits))
        } else {
            Err(format!("{bits} bit/s is outside 1kbit..=1tbit"))
        }
    }

    pub const fn bits_per_second(self) -> u64 {
        self.0
    }

    /// Bytes per second, the unit of the shaper's maps and of the exported metrics
    /// (rounded down: at >= 1 kbit/s the lost fraction is under 0.1%).
    pub const fn bytes_per_second(self) -> u64 {
        self.0 / 8
    }
}

impl FromStr for Bandwidth {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (number, unit) = split_unit(s);
        if number.is_empty() {
            return Err("no number".into());
        }
        let lower = unit.to_ascii_lowercase();
        let mult: u64 = match (unit, lower.as_str()) {
            // tc style, case-insensitive like tc itself.
            (_, "bit") => 1,
            (_, "kbit") => 1_000,
            (_, "mbit") => 1_000_000,
            (_, "gbit") => 1_000_000_000,
            (_, "tbit") => 1_000_000_000_000,
            (_, "kibit") => 1 << 10,
            (_, "mibit") => 1 << 20,
            (_, "gibit") => 1 << 30,
            (_, "tibit") => 1 << 40,
            // tc's byte units: refuse rather than guess.
            (_, "bps" | "kbps" | "mbps" | "gbps" | "tbps") => {
                return Err(format!(
                    "{unit:?} is bytes per second in tc but bits per second elsewhere; write \
                     bits instead, e.g. 80mbit for 10mbps"
                ));
            }
            // Kubernetes quantities, case-sensitive as in Kubernetes (k8s "m" is milli).
            ("", _) => 1,
            ("k", _) => 1_000,
            ("M", _) => 1_000_000,
            ("G", _) => 1_000_000_000,
            ("T", _) => 1_000_000_000_000,
            ("Ki", _) => 1 << 10,
            ("Mi", _) => 1 << 20,
            ("Gi", _) => 1 << 30,
            ("Ti", _) => 1 << 40,
            ("m", _) => {
                return Err("Kubernetes' m means thousandths of a bit per second; for \
                            megabits write M or mbit"
                    .into());
            }
            _ => return Err(format!("unknown unit {unit:?}")),
        };
        Self::from_bits_per_second(scale(number, mult)?)
    }
}

/// tc style with the largest decimal unit that divides exactly: 10000000 -> "10mbit".
impl fmt::Display for Bandwidth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (mult, unit) in [
            (1_000_000_000_000, "tbit"),
            (1_000_000_000, "gbit"),
            (1_000_000, "mbit"),
            (1_000, "kbit"),
        ] {
            if self.0.is_multiple_of(mult) {
                return write!(f, "{}{unit}", self.0 / mult);
            }
        }
        write!(f, "{}bit", self.0)
    }
}

/// How far ahead of its rate a quiet container may send at once (`--egress-burst`), as time
/// at the container's rate: 5ms at 100mbit is 62.5 KB. Time rather than bytes so the burst
/// keeps its meaning when the rate changes live, and because the shaper's other knobs (mark,
/// horizon) are times too.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Burst(u64);

impl Burst {
    pub const ACCEPTED: &'static str =
        "a duration at the container's rate: 500us, 2ms, 0.5s (from 100us to 1s)";
    pub const MIN_NS: u64 = 100_000;
    pub const MAX_NS: u64 = 1_000_000_000;

    pub fn from_ns(ns: u64) -> Result<Self, String> {
        if (Self::MIN_NS..=Self::MAX_NS).contains(&ns) {
            Ok(Self(ns))
        } else {
            Err(format!("{ns} ns is outside 100us..=1s"))
        }
    }

    pub const fn ns(self) -> u64 {
        self.0
    }
}

impl FromStr for Burst {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (number, unit) = split_unit(s);
        if number.is_empty() {
            return Err("no number".into());
        }
        let mult = match unit {
            "us" | "µs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "" => return Err("no unit; write us, ms or s".into()),
            _ => {
                return Err(format!(
                    "unknown unit {unit:?} (the burst is a time, not a size)"
                ));
            }
        };
        Self::from_ns(scale(number, mult)?)
    }
}

/// The largest unit that divides exactly: 2000000 ns -> "2ms".
impl fmt::Display for Burst {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (mult, unit) in [(1_000_000_000, "s"), (1_000_000, "ms"), (1_000, "us")] {
            if self.0.is_multiple_of(mult) {
                return write!(f, "{}{unit}", self.0 / mult);
            }
        }
        let frac = format!("{:03}", self.0 % 1_000);
        write!(f, "{}.{}us", self.0 / 1_000, frac.trim_end_matches('0'))
    }
}

/// [`Value`] through the type's own [`FromStr`] and [`fmt::Display`], with its reach for
/// the hook ceiling (see `ceiling`).
macro_rules! value_via_text {
    ($ty:ty, $accepted:expr, $reach:expr) => {
        impl Value for $ty {
            const ACCEPTED: &'static str = $accepted;
            fn parse_text(text: &str) -> Result<Self, String> {
                text.parse()
            }
            fn text(&self) -> String {
                self.to_string()
            }
            fn reach(&self) -> Option<u128> {
                let reach: fn(&Self) -> Option<u128> = $reach;
                reach(self)
            }
        }
    };
}

const UNLIMITED: u128 = u128::MAX;

value_via_text!(Max<CpuQuota>, CpuQuota::ACCEPTED, |c| Some(match c {
    Max::Max => UNLIMITED,
    Max::Value(q) => u128::from(q.millis()),
}));
value_via_text!(Weight, Weight::ACCEPTED, |w| Some(u128::from(w.get())));
value_via_text!(CpuSet, CpuSet::ACCEPTED, |_| None);
value_via_text!(Memory, Memory::ACCEPTED, |m| Some(match m {
    Memory::Bytes(b) => u128::from(*b),
    Memory::Max => UNLIMITED,
}));
value_via_text!(Pids, Pids::ACCEPTED, |p| Some(match p {
    Pids::Limit(n) => u128::from(*n),
    Pids::Max => UNLIMITED,
}));
value_via_text!(IoMax, IoMax::ACCEPTED, |_| None);
// Idle is the least claim, critical the most.
value_via_text!(Priority, Priority::ACCEPTED, |p| Some(4 - *p as u128));
value_via_text!(Bandwidth, Bandwidth::ACCEPTED, |b| Some(u128::from(
    b.bits_per_second()
)));
// A longer burst claims more of the link at once.
value_via_text!(Burst, Burst::ACCEPTED, |b| Some(u128::from(b.ns())));

/// `--oom-group`: a switch on the command line, `true`/`false` (also 1/0, yes/no, on/off) in
/// the API and annotations.
impl Value for bool {
    const ACCEPTED: &'static str = "true or false";
    const SWITCH: bool = true;
    fn parse_text(text: &str) -> Result<Self, String> {
        match text.trim() {
            "true" | "1" | "yes" | "on" => Ok(true),
            "false" | "0" | "no" | "off" => Ok(false),
            _ => Err("not a boolean".into()),
        }
    }
    fn text(&self) -> String {
        self.to_string()
    }
}
