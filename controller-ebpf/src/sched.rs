//! Run-queue latency per cgroup: how long a task of a rein container waited between becoming
//! runnable (woken, or preempted while still runnable) and running.
//!
//! Raw tracepoints on `sched_wakeup`, `sched_wakeup_new` and `sched_switch` run for every task
//! of the node, so they do as little as possible for tasks rein does not watch: one walk
//! task -> css_set -> cgroup -> kernfs_node for the cgroup id (four `bpf_probe_read_kernel`s
//! at offsets the agent resolved from BTF) and one lookup in `REIN_WATCH`.

use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel},
    macros::map,
    maps::{Array, HashMap, LruHashMap, PerCpuHashMap},
    programs::RawTracePointContext,
};
use controller_common::{DelayHistogram, KernelOffsets, WATCH_MAP_MAX_ENTRIES};

#[map]
static REIN_OFFSETS: Array<KernelOffsets> = Array::with_max_entries(1, 0);

#[map]
static REIN_WATCH: HashMap<u64, u8> = HashMap::with_max_entries(WATCH_MAP_MAX_ENTRIES, 0);

#[map]
static REIN_RUNQ: PerCpuHashMap<u64, DelayHistogram> =
    PerCpuHashMap::with_max_entries(WATCH_MAP_MAX_ENTRIES, 0);

/// When each watched runnable task (by pid) started waiting, and its cgroup (so the switch
/// does not walk the task's cgroup again). LRU: a task that exits while runnable never has
/// its entry consumed.
#[map]
static REIN_RUNNABLE: LruHashMap<u32, [u64; 2]> = LruHashMap::with_max_entries(32_768, 0);

/// The `n`th raw tracepoint argument (a `task_struct` address for the ones used here).
#[inline(always)]
fn arg(ctx: &RawTracePointContext, n: usize) -> u64 {
    ctx.arg::<u64>(n)
}

/// Reads a `T` at `base + off` in kernel memory.
#[inline(always)]
fn read<T>(base: u64, off: u32) -> Option<T> {
    if base == 0 {
        return None;
    }
    // SAFETY: bpf_probe_read_kernel copies safely from any address (faulting reads fail).
    unsafe { bpf_probe_read_kernel((base + u64::from(off)) as *const T).ok() }
}

/// The cgroup v2 id of `task` if rein watches it.
#[inline(always)]
fn watched_cgroup(o: &KernelOffsets, task: u64) -> Option<u64> {
    let css_set: u64 = read(task, o.task_cgroups)?;
    let cgroup: u64 = read(css_set, o.css_set_dfl_cgrp)?;
    let kn: u64 = read(cgroup, o.cgroup_kn)?;
    let id: u64 = read(kn, o.kernfs_node_id)?;
    // SAFETY: a lookup; the value is not used.
    unsafe { REIN_WATCH.get(&id) }.map(|_| id)
}

#[inline(always)]
fn offsets() -> Option<&'static KernelOffsets> {
    REIN_OFFSETS.get(0).filter(|o| o.valid != 0)
}

/// Marks `task` runnable now, if watched.
#[inline(always)]
fn runnable(o: &KernelOffsets, task: u64) {
    let Some(id) = watched_cgroup(o, task) else {
        return;
    };
    let Some(pid) = read::<i32>(task, o.task_pid) else {
        return;
    };
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let _ = REIN_RUNNABLE.insert(&(pid as u32), &[now, id], 0);
}

/// `sched_wakeup(p)` and `sched_wakeup_new(p)`.
#[inline(always)]
pub fn wakeup(ctx: &RawTracePointContext) -> u32 {
    if let Some(o) = offsets() {
        runnable(o, arg(ctx, 0));
    }
    0
}

/// `sched_switch(preempt, prev, next, ...)`: a preempted `prev` starts waiting again; `next`
/// stops waiting, and its wait goes into its cgroup's histogram.
#[inline(always)]
pub fn switch(ctx: &RawTracePointContext) -> u32 {
    let Some(o) = offsets() else {
        return 0;
    };
    let (prev, next) = (arg(ctx, 1), arg(ctx, 2));
    if read::<u32>(prev, o.task_state) == Some(0) {
        runnable(o, prev);
    }
    let Some(pid) = read::<i32>(next, o.task_pid) else {
        return 0;
    };
    let pid = pid as u32;
    // SAFETY: lookup; the value is copied out at once.
    let Some([since, id]) = (unsafe { REIN_RUNNABLE.get(&pid) }).copied() else {
        return 0;
    };
    let _ = REIN_RUNNABLE.remove(&pid);
    // SAFETY: helper without arguments.
    let waited = unsafe { bpf_ktime_get_ns() }.saturating_sub(since);
    crate::percpu::update(&REIN_RUNQ, id, |h| h.record(waited));
    0
}
