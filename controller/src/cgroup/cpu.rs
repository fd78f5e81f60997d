//! The cpu controller: `cpu.max` (quota), `cpu.weight`, `cpu.idle` (priority class idle).

use super::{Plan, files};
use crate::limits::{CpuQuota, Limits, Max, Priority, Weight, cpu_max_line};

pub const MAX: &str = "cpu.max";
pub const WEIGHT: &str = "cpu.weight";
pub const IDLE: &str = "cpu.idle";

pub fn plan(l: &Limits, plan: &mut Plan) {
    if let Some(q) = l.cpus {
        plan.file(MAX, cpu_max_line(q));
    }
    // cpu.idle before cpu.weight: the kernel refuses a weight while the group is idle
    // (sched_group_set_shares returns EINVAL), so leaving idle must come first, and an idle
    // class writes no weight at all (validation refuses an explicit one with it).
    if let Some(p) = l.priority {
        plan.file(IDLE, u8::from(p.cpu_idle()).to_string());
    }
    let weight = l.cpu_weight.or(l
        .priority
        .filter(|p| !p.cpu_idle())
        .map(Priority::cpu_weight));
    if let Some(w) = weight {
        plan.file(WEIGHT, w.to_string());
    }
}

/// Reads the cpu limits back; kernel defaults read as "not set".
pub fn read(dir: &mut files::Dir, l: &mut Limits) -> Result<(), files::FileError> {
    read_quota(dir, l)?;
    // An idle group's weight is meaningless (the kernel reports its own value for it).
    if l.priority.is_some_and(Priority::cpu_idle) {
        return Ok(());
    }
    let weight: u16 = dir.read(WEIGHT)?.parse().unwrap_or(100);
    let implied = l.priority.map_or(Weight::DEFAULT, Priority::cpu_weight);
    if weight != implied.get() {
        l.cpu_weight = Weight::new(weight).ok();
    }
    Ok(())
}

/// `cpu.max` alone (the limit the metrics export).
pub fn read_quota(dir: &mut files::Dir, l: &mut Limits) -> Result<(), files::FileError> {
    let max = dir.read(MAX)?;
    let mut words = max.split_whitespace();
    if let (Some(q), Some(p)) = (words.next(), words.next())
        && let (Ok(q), Ok(p)) = (q.parse::<u64>(), p.parse::<u64>())
        && p > 0
    {
        // cpu.max is "quota period" in microseconds; rein writes a 100 ms period but reads any.
        let millis = u32::try_from(q.saturating_mul(1000) / p).unwrap_or(u32::MAX);
        l.cpus = CpuQuota::from_millis(millis).ok().map(Max::Value);
    }
    Ok(())
}
