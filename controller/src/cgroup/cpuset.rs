//! The cpuset controller: `cpuset.cpus`. (`cpuset.mems` is left to inherit the parent's, so
//! tasks may start: an empty effective mems set would make every attach fail.)

use super::{Plan, files};
use crate::limits::Limits;

pub const CPUS: &str = "cpuset.cpus";

pub fn plan(l: &Limits, plan: &mut Plan) {
    if let Some(c) = &l.cpuset {
        plan.file(CPUS, c.to_string());
    }
}

pub fn read(dir: &mut files::Dir, l: &mut Limits) -> Result<(), files::FileError> {
    let text = dir.read(CPUS)?;
    l.cpuset = if text.is_empty() {
        None
    } else {
        text.parse().ok()
    };
    Ok(())
}
