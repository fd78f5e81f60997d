//! The memory controller: `memory.max/high/low/min`, `memory.swap.max`, `memory.oom.group`.

use super::{Plan, files};
use crate::limits::{Limits, Memory};

pub const MAX: &str = "memory.max";
pub const HIGH: &str = "memory.high";
pub const LOW: &str = "memory.low";
pub const MIN: &str = "memory.min";
pub const SWAP_MAX: &str = "memory.swap.max";
pub const OOM_GROUP: &str = "memory.oom.group";

pub fn plan(l: &Limits, plan: &mut Plan) {
    // Protections before limits: lowering memory.max below current usage triggers reclaim,
    // which should already see the new protections.
    for (file, v) in [
        (MIN, l.memory_min),
        (LOW, l.memory_low),
        (HIGH, l.memory_high),
        (MAX, l.memory),
        (SWAP_MAX, l.swap),
    ] {
        if let Some(v) = v {
            plan.file(file, v.cgroup_value());
        }
    }
    if let Some(g) = l.oom_group {
        plan.file(OOM_GROUP, u8::from(g).to_string());
    }
}

fn parse(text: &str) -> Option<Memory> {
    text.parse().ok()
}

/// Reads the memory limits back; kernel defaults (`max` for limits, 0 for protections, 0 for
/// oom.group) read as "not set".
pub fn read(dir: &mut files::Dir, l: &mut Limits) -> Result<(), files::FileError> {
    read_limits(dir, l)?;
    l.memory_low = parse(dir.read(LOW)?).filter(|m| *m != Memory::Bytes(0));
    l.memory_min = parse(dir.read(MIN)?).filter(|m| *m != Memory::Bytes(0));
    // memory.swap.max is absent when the kernel has no swap accounting.
    l.swap = match dir.read(SWAP_MAX) {
        Ok(t) => parse(t).filter(|m| *m != Memory::Max),
        Err(_) => None,
    };
    l.oom_group = (dir.read(OOM_GROUP)? == "1").then_some(true);
    Ok(())
}

/// `memory.max` and `memory.high` alone (the limits the metrics export).
pub fn read_limits(dir: &mut files::Dir, l: &mut Limits) -> Result<(), files::FileError> {
    l.memory = parse(dir.read(MAX)?).filter(|m| *m != Memory::Max);
    l.memory_high = parse(dir.read(HIGH)?).filter(|m| *m != Memory::Max);
    Ok(())
}
