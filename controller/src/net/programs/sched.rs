//! The scheduler program (run-queue latency per container): an offset from BTF, attached
//! through a pinned link like the cgroup programs.

use std::path::Path;

use aya::{maps::Array, programs::RawTracePoint};
use controller_common::{DelayHistogram, KernelOffsets, OFFSETS_MAP, RUNQ_MAP};

use super::{Datapath, ProgramError, pin_err, pin_link};
use crate::btf::Offsets;

/// The programs and the tracepoints they attach to.
const PROGRAMS: [(&str, &str); 1] = [("rein_sched_switch", "sched_switch")];

/// The members the switch program reads, resolved for the running kernel. A kernel without
/// `sched_info` (CONFIG_SCHED_INFO off) has no run-queue latency.
pub fn kernel_offsets() -> Result<KernelOffsets, crate::btf::BtfError> {
    let o = Offsets::from_kernel(&["task_struct", "sched_info"])?;
    let info = o.of("task_struct", "sched_info")?;
    let pcount = o.of("sched_info", "pcount")?;
    // The program reads both in one 16-byte copy.
    if o.of("sched_info", "run_delay")? != pcount + 8 {
        return Err(crate::btf::BtfError::Layout(
            "sched_info.run_delay does not follow pcount".into(),
        ));
    }
    Ok(KernelOffsets {
        task_sched_pcount: info + pcount,
        valid: 1,
    })
}

impl Datapath {
    /// Writes the kernel offsets, loads the scheduler programs and attaches them through
    /// links pinned in `pin_dir/links` (an earlier agent's pinned links are replaced).
    pub fn start_sched_latency(
        &mut self,
        offsets: KernelOffsets,
        pin_dir: &Path,
    ) -> Result<(), ProgramError> {
        let err = |source| ProgramError::Map {
            name: OFFSETS_MAP,
            source,
        };
        Array::<_, KernelOffsets>::try_from(self.map_mut(OFFSETS_MAP)?)
            .and_then(|mut m| m.set(0, &offsets, 0))
            .map_err(err)?;
        let links = pin_dir.join("links");
        std::fs::create_dir_all(&links).map_err(|e| pin_err(&links, &e))?;
        for (name, tracepoint) in PROGRAMS {
            let pin = links.join(name);
            if self.taken_over.contains(&pin) {
                continue;
            }
            // An earlier agent's: a tracepoint link cannot be switched to another program,
            // so it is replaced (the histograms miss the moment in between).
            if pin.exists() {
                std::fs::remove_file(&pin).map_err(|e| pin_err(&pin, &e))?;
            }
            let prog: &mut RawTracePoint = self
                .ebpf
                .program_mut(name)
                .ok_or(ProgramError::Missing { name })?
                .try_into()
                .map_err(|source| ProgramError::Program { name, source })?;
            let fail = |source| ProgramError::Program { name, source };
            if prog.fd().is_err() {
                prog.load().map_err(fail)?;
            }
            let id = prog.attach(tracepoint).map_err(fail)?;
            pin_link(prog.take_link(id).map_err(fail)?, &pin)?;
            self.made(&pin);
        }
        Ok(())
    }

    /// The cgroup's run-queue latency histogram, summed over CPUs.
    pub fn runq_of(&self, cgroup_id: u64) -> Result<Option<DelayHistogram>, ProgramError> {
        self.per_cpu_sum(RUNQ_MAP, cgroup_id, DelayHistogram::merged)
    }
}
