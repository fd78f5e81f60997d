//! Usage counters read from a cgroup's files: what `rein stats` shows and `/metrics` exports.
//! Cumulative since the cgroup was created, in the kernel's units (microseconds, bytes).

use serde::{Deserialize, Serialize};

use super::files::{self, FileError};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Usage {
    pub processes: usize,
    pub cpu_usage_usec: u64,
    pub cpu_nr_periods: u64,
    pub cpu_nr_throttled: u64,
    pub cpu_throttled_usec: u64,
    pub memory_current_bytes: u64,
    pub memory_working_set_bytes: u64,
    /// Anonymous memory (memory.stat `anon`): cAdvisor's `rss`.
    #[serde(default)]
    pub memory_rss_bytes: u64,
    /// Page cache (memory.stat `file`): cAdvisor's `cache`.
    #[serde(default)]
    pub memory_cache_bytes: u64,
    /// Mapped file pages (memory.stat `file_mapped`): cAdvisor's `mapped_file`.
    #[serde(default)]
    pub memory_mapped_file_bytes: u64,
    pub memory_oom_kills: u64,
    /// Times usage went over `memory.high` and reclaim was forced (memory.events `high`).
    #[serde(default)]
    pub memory_high_events: u64,
    /// Times usage hit `memory.max` (memory.events `max`).
    #[serde(default)]
    pub memory_max_events: u64,
    pub pids_current: u64,
    pub io_read_bytes: u64,
    pub io_write_bytes: u64,
    /// Per block device (io.stat), in the kernel's order.
    #[serde(skip)]
    pub io: Vec<DeviceIo>,
    /// Pressure stall information (cpu/memory/io.pressure); absent without PSI
    /// (CONFIG_PSI or psi=0).
    #[serde(skip)]
    pub pressure: Pressure,
}

/// One line of io.stat.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceIo {
    /// `MAJ:MIN`.
    pub device: String,
    pub read_bytes: u64,
    pub write_bytes: u64,
    pub reads: u64,
    pub writes: u64,
}

/// Total stall time of one resource: `some` (at least one task waited) and `full` (all
/// non-idle tasks waited at once), in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Psi {
    pub some_usec: u64,
    /// The kernel reports `full` for cpu only since 5.13; it is 0 at the root.
    pub full_usec: Option<u64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pressure {
    pub cpu: Option<Psi>,
    pub memory: Option<Psi>,
    pub io: Option<Psi>,
}

/// Reads the usage of the cgroup at `dir`. cpu.stat, memory.events, memory.current,
/// cgroup.procs and pids.current must exist (rein enables their controllers); io.stat,
/// memory.stat, cgroup.stat and the pressure files are optional. Each file is parsed as it is
/// read (one buffer serves them all).
pub fn read(dir: &mut files::Dir) -> Result<Usage, FileError> {
    let mut u = Usage::default();
    let [usage, periods, throttled, throttled_usec] = files::flat_keys(
        dir.read("cpu.stat")?,
        ["usage_usec", "nr_periods", "nr_throttled", "throttled_usec"],
    );
    u.cpu_usage_usec = usage.unwrap_or(0);
    u.cpu_nr_periods = periods.unwrap_or(0);
    u.cpu_nr_throttled = throttled.unwrap_or(0);
    u.cpu_throttled_usec = throttled_usec.unwrap_or(0);
    let [oom_kill, high, max] =
        files::flat_keys(dir.read("memory.events")?, ["oom_kill", "high", "max"]);
    u.memory_oom_kills = oom_kill.unwrap_or(0);
    u.memory_high_events = high.unwrap_or(0);
    u.memory_max_events = max.unwrap_or(0);
    u.io = dir.read("io.stat").map(parse_io_stat).unwrap_or_default();
    u.io_read_bytes = u.io.iter().map(|d| d.read_bytes).sum();
    u.io_write_bytes = u.io.iter().map(|d| d.write_bytes).sum();
    u.memory_current_bytes = dir.read("memory.current")?.parse().unwrap_or(0);
    // cAdvisor's figures from memory.stat: the working set is usage minus inactive file
    // pages (reclaimable first).
    let [inactive, anon, file, mapped] = dir.read("memory.stat").map_or([None; 4], |t| {
        files::flat_keys(t, ["inactive_file", "anon", "file", "file_mapped"])
    });
    u.memory_working_set_bytes = u.memory_current_bytes.saturating_sub(inactive.unwrap_or(0));
    u.memory_rss_bytes = anon.unwrap_or(0);
    u.memory_cache_bytes = file.unwrap_or(0);
    u.memory_mapped_file_bytes = mapped.unwrap_or(0);
    u.pids_current = dir.read("pids.current")?.parse().unwrap_or(0);
    // Every process of the subtree: a container's processes may live in cgroups of their
    // own below it, which cgroup.stat counts (a missing one is looked for).
    u.processes = dir.read("cgroup.procs")?.lines().count();
    let descendants = dir
        .read("cgroup.stat")
        .ok()
        .and_then(|t| files::flat_key(t, "nr_descendants"));
    if descendants != Some(0) {
        let mut pids = Vec::new();
        super::collect_child_pids(dir.path(), &mut pids);
        u.processes += pids.len();
    }
    let mut psi = |f: &str| dir.read(f).ok().and_then(parse_pressure);
    u.pressure = Pressure {
        cpu: psi("cpu.pressure"),
        memory: psi("memory.pressure"),
        io: psi("io.pressure"),
    };
    Ok(u)
}

/// `8:0 rbytes=1 wbytes=2 rios=3 wios=4 dbytes=0 dios=0` per line.
fn parse_io_stat(text: &str) -> Vec<DeviceIo> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let mut d = DeviceIo {
                device: words.next()?.to_owned(),
                ..DeviceIo::default()
            };
            for kv in words {
                let (k, v) = kv.split_once('=')?;
                let v = v.parse().unwrap_or(0);
                match k {
                    "rbytes" => d.read_bytes = v,
                    "wbytes" => d.write_bytes = v,
                    "rios" => d.reads = v,
                    "wios" => d.writes = v,
                    _ => {}
                }
            }
            Some(d)
        })
        .collect()
}

/// `some avg10=0.00 avg60=0.00 avg300=0.00 total=123` and the same for `full`.
fn parse_pressure(text: &str) -> Option<Psi> {
    let total = |kind: &str| {
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(kind))?
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix("total="))?
            .parse()
            .ok()
    };
    Some(Psi {
        some_usec: total("some")?,
        full_usec: total("full"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_stat_lines_become_devices() {
        let d = parse_io_stat(
            "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n\
             253:1 rbytes=1 wbytes=0 rios=1 wios=0 dbytes=0 dios=0\n",
        );
        assert_eq!(d.len(), 2);
        assert_eq!(
            d[0],
            DeviceIo {
                device: "8:0".into(),
                read_bytes: 4096,
                write_bytes: 8192,
                reads: 1,
                writes: 2,
            }
        );
        assert_eq!(d[1].device, "253:1");
        assert!(parse_io_stat("").is_empty());
    }

    #[test]
    fn pressure_totals_are_read_and_full_is_optional() {
        let p = parse_pressure(
            "some avg10=1.00 avg60=0.50 avg300=0.10 total=12345\n\
             full avg10=0.00 avg60=0.00 avg300=0.00 total=678\n",
        );
        assert_eq!(
            p,
            Some(Psi {
                some_usec: 12345,
                full_usec: Some(678)
            })
        );
        let cpu_5_10 = parse_pressure("some avg10=0.00 avg60=0.00 avg300=0.00 total=9\n");
        assert_eq!(cpu_5_10.map(|p| p.full_usec), Some(None));
        assert_eq!(parse_pressure("garbage"), None);
    }
}
