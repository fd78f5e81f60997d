//! The pids controller: `pids.max`.

use super::{Plan, files};
use crate::limits::{Limits, Pids};

pub const MAX: &str = "pids.max";

pub fn plan(l: &Limits, plan: &mut Plan) {
    if let Some(p) = l.pids {
        plan.file(MAX, p.to_string());
    }
}

pub fn read(dir: &mut files::Dir, l: &mut Limits) -> Result<(), files::FileError> {
    l.pids = dir.read(MAX)?.parse().ok().filter(|p| *p != Pids::Max);
    Ok(())
}
