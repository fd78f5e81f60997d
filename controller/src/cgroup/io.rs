//! The io controller: `io.weight` and `io.max` (per device, by number or by device path).

use std::os::unix::fs::FileTypeExt as _;

use super::{Plan, files};
use crate::limits::{Device, Flag, IoMax, LimitError, Limits, Max, Priority, Weight};

pub const WEIGHT: &str = "io.weight";
pub const MAX: &str = "io.max";

/// Resolves a device to `MAJ:MIN`. A path must name a block device.
pub fn device_number(d: &Device) -> Result<(u32, u32), LimitError> {
    match d {
        Device::Number { major, minor } => Ok((*major, *minor)),
        Device::Path(p) => {
            let bad = |problem: String| LimitError::Value {
                flag: Flag::IoMax,
                value: p.display().to_string(),
                problem,
            };
            let meta = std::fs::metadata(p).map_err(|e| bad(format!("cannot stat: {e}")))?;
            if !meta.file_type().is_block_device() {
                return Err(bad("not a block device".into()));
            }
            use std::os::unix::fs::MetadataExt as _;
            let rdev = meta.rdev();
            Ok((libc::major(rdev), libc::minor(rdev)))
        }
    }
}

pub fn plan(l: &Limits, plan: &mut Plan) -> Result<(), LimitError> {
    if let Some(w) = l.io_weight.or(l.priority.map(Priority::io_weight)) {
        plan.file(WEIGHT, format!("default {w}"));
    }
    for io in &l.io_max {
        let (major, minor) = device_number(&io.device)?;
        let line = format!("{major}:{minor} {}", io.cgroup_keys());
        // Undo by restoring this device's previous line (or lifting all its limits).
        plan.device_file(MAX, line, format!("{major}:{minor}"));
    }
    Ok(())
}

/// `io.max` line for a device that has no limits.
pub fn unlimited_line(device: &str) -> String {
    format!("{device} rbps=max wbps=max riops=max wiops=max")
}

pub fn read(dir: &mut files::Dir, l: &mut Limits) -> Result<(), files::FileError> {
    // io.weight reads "default 100" (and per-device overrides, which rein does not set).
    let text = dir.read(WEIGHT)?;
    let weight = text
        .lines()
        .find_map(|line| line.strip_prefix("default "))
        .and_then(|w| w.trim().parse::<u16>().ok())
        .unwrap_or(100);
    let implied = l.priority.map_or(Weight::DEFAULT, Priority::io_weight);
    if weight != implied.get() {
        l.io_weight = Weight::new(weight).ok();
    }
    l.io_max = dir
        .read(MAX)?
        .lines()
        .filter_map(|line| {
            let io: IoMax = line.parse().ok()?;
            let all_max = [io.rbps, io.wbps, io.riops, io.wiops]
                .iter()
                .all(|v| matches!(v, None | Some(Max::Max)));
            (!all_max).then(|| IoMax {
                // Keys at `max` are the kernel's way of saying "not limited".
                rbps: io.rbps.filter(|v| *v != Max::Max),
                wbps: io.wbps.filter(|v| *v != Max::Max),
                riops: io.riops.filter(|v| *v != Max::Max),
                wiops: io.wiops.filter(|v| *v != Max::Max),
                ..io
            })
        })
        .collect();
    Ok(())
}
