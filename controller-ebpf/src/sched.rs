//! Run-queue latency per cgroup: how long a task of a rein container waited between becoming
//! runnable (woken, or preempted while still runnable) and running, recorded for every
//! managed cgroup above the task (its chain, see `chain`).
//!
//! Raw tracepoints on `sched_wakeup`, `sched_wakeup_new` and `sched_switch` run for every task
//! of the node, so they do as little as possible for tasks outside rein: one walk
//! task -> css_set -> cgroup -> kernfs_node for the cgroup id (four `bpf_probe_read_kernel`s
//! at offsets the agent resolved from BTF) and the chain cache's two lookups. Only a cgroup
//! not seen under this generation of the managed set walks `cgroup->ancestors[]`.

use aya_ebpf::{
    helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel},
    macros::map,
    maps::{Array, LruHashMap, PerCpuHashMap},
    programs::RawTracePointContext,
};
use controller_common::{
    Chain, DelayHistogram, KernelOffsets, MANAGED_MAP_MAX_ENTRIES, MAX_CHAIN, MAX_LEVEL,
};

#[map]
static REIN_OFFSETS: Array<KernelOffsets> = Array::with_max_entries(1, 0);

#[map]
static REIN_RUNQ: PerCpuHashMap<u64, DelayHistogram> =
    PerCpuHashMap::with_max_entries(MANAGED_MAP_MAX_ENTRIES, 0);

/// A runnable task of a managed cgroup: when it started waiting, and its chain (so the
/// switch does not walk the task's cgroup again).
#[derive(Clone, Copy)]
struct Waiting {
    since: u64,
    chain: Chain,
}

/// Waiting tasks by pid. LRU: a task that exits while runnable never has its entry consumed.
#[map]
static REIN_RUNNABLE: LruHashMap<u32, Waiting> = LruHashMap::with_max_entries(32_768, 0);

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

/// The id of the cgroup at `cgroup` (a `struct cgroup *`).
#[inline(always)]
fn cgroup_id(o: &KernelOffsets, cgroup: u64) -> Option<u64> {
    let kn: u64 = read(cgroup, o.cgroup_kn)?;
    read(kn, o.kernfs_node_id)
}

/// The managed cgroups above `task` (empty for a task outside rein).
#[inline(always)]
fn chain_of(o: &KernelOffsets, task: u64) -> Option<Chain> {
    let css_set: u64 = read(task, o.task_cgroups)?;
    let cgroup: u64 = read(css_set, o.css_set_dfl_cgrp)?;
    let id = cgroup_id(o, cgroup)?;
    Some(crate::chain::of_cgroup(id, |level| {
        // Read on a cache miss only: the walk below runs once per cgroup and generation. A
        // read that fails gives None, and the chain is then used once but not cached.
        let own: i32 = read(cgroup, o.cgroup_level)?;
        if level > own as u32 || level >= MAX_LEVEL {
            return Some(0);
        }
        let at = u64::from(o.cgroup_ancestors) + 8 * u64::from(level);
        read::<u64>(cgroup, at as u32).and_then(|a| cgroup_id(o, a))
    }))
}

#[inline(always)]
fn offsets() -> Option<&'static KernelOffsets> {
    REIN_OFFSETS.get(0).filter(|o| o.valid != 0)
}

/// Marks `task` runnable now, if it is below a managed cgroup.
#[inline(always)]
fn runnable(o: &KernelOffsets, task: u64) {
    let Some(chain) = chain_of(o, task).filter(|c| c.len > 0) else {
        return;
    };
    let Some(pid) = read::<i32>(task, o.task_pid) else {
        return;
    };
    // SAFETY: helper without arguments.
    let since = unsafe { bpf_ktime_get_ns() };
    let _ = REIN_RUNNABLE.insert(&(pid as u32), &Waiting { since, chain }, 0);
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
    let Some(w) = (unsafe { REIN_RUNNABLE.get(&pid) }).copied() else {
        return 0;
    };
    let _ = REIN_RUNNABLE.remove(&pid);
    // A chain from before the managed set changed may name a forgotten cgroup.
    if w.chain.generation != crate::chain::generation() {
        return 0;
    }
    // SAFETY: helper without arguments.
    let waited = unsafe { bpf_ktime_get_ns() }.saturating_sub(w.since);
    let bucket = crate::percpu::opaque(DelayHistogram::bucket(waited) as u64);
    let mut i = 0;
    while i < MAX_CHAIN {
        if i < w.chain.len as usize {
            crate::percpu::update(&REIN_RUNQ, w.chain.ids[i], |h| {
                crate::percpu::record(h, bucket, waited);
            });
        }
        i += 1;
    }
    0
}
