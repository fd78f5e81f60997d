//! Run-queue latency per cgroup: how long a task of a rein container waited runnable (woken,
//! or preempted while still runnable) before it ran, recorded for every managed cgroup above
//! the task (its chain, see `chain`).
//!
//! The kernel keeps this account itself (`task->sched_info`, CONFIG_SCHED_INFO): `run_delay`
//! sums every wait of the task and `pcount` counts its runs, both updated as the task is
//! switched in. So one program on `sched_switch` suffices: the task switched out is the
//! current one, its cgroup comes from `bpf_get_current_cgroup_id()` (no walk of kernel
//! structs) and the chain cache, and the growth of its `run_delay` since it last left a CPU
//! is the wait before the run now ending. A task outside rein pays one program run with one
//! helper and the chain cache's lookups per switch, and nothing at wake-ups (no programs
//! there); a watched task adds one read of its `sched_info` and one map update.
//!
//! A wait is recorded when the run it preceded ends, not when it starts: the histogram's
//! counts are the same, a run later. A task's first wait after the agent starts is not
//! recorded (there is no earlier `run_delay` to subtract), except a new task's first run, nor
//! one whose entry the LRU evicted (the map holds 32768 tasks).

use aya_ebpf::{
    helpers::{
        bpf_get_current_ancestor_cgroup_id, bpf_get_current_cgroup_id, bpf_get_current_pid_tgid,
        bpf_get_current_task, bpf_probe_read_kernel,
    },
    macros::map,
    maps::{Array, LruHashMap, PerCpuHashMap},
    programs::RawTracePointContext,
};
use controller_common::{DelayHistogram, KernelOffsets, MANAGED_MAP_MAX_ENTRIES, MAX_CHAIN};

#[map]
static REIN_OFFSETS: Array<KernelOffsets> = Array::with_max_entries(1, 0);

#[map]
static REIN_RUNQ: PerCpuHashMap<u64, DelayHistogram> =
    PerCpuHashMap::with_max_entries(MANAGED_MAP_MAX_ENTRIES, 0);

/// `sched_info.pcount` and `run_delay`, adjacent in the kernel's struct (the agent checks).
#[repr(C)]
#[derive(Clone, Copy)]
struct Seen {
    /// Runs so far.
    pcount: u64,
    /// Nanoseconds waited runnable so far.
    run_delay: u64,
}

/// Each watched task's `sched_info` as it last left a CPU, by pid; removed at the task's last
/// switch. LRU all the same: an entry evicted costs that task one recorded wait.
#[map]
static REIN_RUN_DELAY: LruHashMap<u32, Seen> = LruHashMap::with_max_entries(32_768, 0);

#[inline(always)]
fn offsets() -> Option<&'static KernelOffsets> {
    REIN_OFFSETS.get(0).filter(|o| o.valid != 0)
}

/// `task_struct.__state` of a task leaving the CPU for the last time (include/linux/sched.h).
const TASK_DEAD: u32 = 0x80;

/// `sched_switch(preempt, prev, next, prev_state)`: `prev`, the current task, leaves the CPU
/// (`prev_state`, the fourth argument since 5.18, says whether for good).
#[inline(always)]
pub fn switch(ctx: &RawTracePointContext) -> u32 {
    // SAFETY: helper without arguments; at sched_switch the current task is `prev`.
    let cgroup = unsafe { bpf_get_current_cgroup_id() };
    let chain = crate::chain::of_cgroup(cgroup, |level| {
        // SAFETY: helper with a plain integer argument; 0 past the task's own level.
        Some(unsafe { bpf_get_current_ancestor_cgroup_id(level as i32) })
    });
    if chain.len == 0 {
        return 0;
    }
    let Some(o) = offsets() else {
        return 0;
    };
    // SAFETY: helper without arguments.
    let task = unsafe { bpf_get_current_task() };
    // SAFETY: bpf_probe_read_kernel copies safely from any address (faulting reads fail).
    let Ok(now) =
        (unsafe { bpf_probe_read_kernel((task + u64::from(o.task_sched_pcount)) as *const Seen) })
    else {
        return 0;
    };
    // The low half is the task's pid.
    let pid = bpf_get_current_pid_tgid() as u32;
    // A new task's first run: its whole run_delay is the wait after its fork (whatever an
    // entry of an earlier task with this pid says).
    let first = (now.pcount == 1).then_some(now.run_delay);
    // An exiting task's last switch: its wait is recorded and its entry goes.
    let dead = ctx.arg::<u64>(3) as u32 & TASK_DEAD != 0;
    let waited = match REIN_RUN_DELAY.get_ptr_mut(&pid) {
        Some(p) => {
            // SAFETY: a valid map value; this task is on this CPU, so nothing else updates
            // its entry now.
            let before = unsafe { &mut *p };
            // One run since the last switch-out: else the task ran while its cgroup was
            // not watched, or its entry was evicted in between.
            let one_run = now.pcount == before.pcount + 1 && now.run_delay >= before.run_delay;
            let waited = first.or(one_run.then(|| now.run_delay - before.run_delay));
            *before = now;
            waited
        }
        None => {
            if !dead {
                let _ = REIN_RUN_DELAY.insert(&pid, &now, 0);
            }
            first
        }
    };
    if dead {
        let _ = REIN_RUN_DELAY.remove(&pid);
    }
    let Some(waited) = waited else {
        return 0;
    };
    let bucket = crate::percpu::opaque(DelayHistogram::bucket(waited) as u64);
    let mut i = 0;
    while i < MAX_CHAIN {
        if i < chain.len as usize {
            crate::percpu::update(&REIN_RUNQ, chain.ids[i], |h| {
                crate::percpu::record(h, bucket, waited);
            });
        }
        i += 1;
    }
    0
}
