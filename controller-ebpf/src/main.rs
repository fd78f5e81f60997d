//! rein's eBPF programs, compiled to one object that the agent embeds.
//!
//! A cgroup_skb egress/ingress pair attached to rein's managed cgroup root (and to the
//! cgroups runtimes registered): the kernel runs them for every packet of every socket in
//! that subtree. Each packet belongs to the managed cgroups above its socket's cgroup, its
//! `chain` (nearest first), whatever the process did to its own cgroup below them. Both
//! programs count bytes and packets for every managed cgroup of the chain; egress also paces
//! (see `shaper`: no earlier than every level's clock allows) and ingress polices
//! (`shaper::police`). A sock_ops program on the same root records TCP round trips and
//! retransmissions (`tcp`), and raw tracepoints on the scheduler record run-queue latency
//! (`sched`), both for the same chains. Packets and tasks outside every managed cgroup pass
//! untouched and uncounted: map entries exist only for managed cgroups.
#![no_std]
#![no_main]

mod chain;
mod flows;
mod percpu;
mod sched;
mod shaper;
mod tcp;

use aya_ebpf::{
    EbpfContext as _,
    bindings::BPF_NOEXIST,
    macros::{cgroup_skb, map, raw_tracepoint, sock_ops},
    maps::{PerCpuArray, PerCpuHashMap, ProgramArray},
    programs::{RawTracePointContext, SkBuffContext, SockOpsContext},
};
use controller_common::{
    Chain, HEALTH_MAP_ENTRIES, HEALTH_TAIL_CALL_FAILED, HEALTH_TRAFFIC_FULL, MAX_CHAIN,
    TRAFFIC_MAP_MAX_ENTRIES, Traffic,
};

/// Counters per cgroup id; per-CPU because the BPF target has no atomic add-and-fetch on all
/// kernels and per-CPU copies avoid cache-line bouncing. Userspace sums the copies.
#[map]
static REIN_TRAFFIC: PerCpuHashMap<u64, Traffic> =
    PerCpuHashMap::with_max_entries(TRAFFIC_MAP_MAX_ENTRIES, 0);

/// What the programs could not do, per CPU, by [`controller_common::HEALTH_MAP`] index: the
/// agent exports the sums as metrics.
#[map]
static REIN_HEALTH: PerCpuArray<u64> = PerCpuArray::with_max_entries(HEALTH_MAP_ENTRIES, 0);

/// The egress stages the agent sets: shaping at [`SHAPE`], counting at [`COUNT`], and the
/// egress program itself at [`START`] (to start a packet over).
#[map]
static REIN_STAGES: ProgramArray = ProgramArray::with_max_entries(3, 0);
const SHAPE: u32 = 0;
const COUNT: u32 = 1;
const START: u32 = 2;

/// The token the egress program gave this packet (`skb->cb[0]`, which the kernel saves and
/// restores around cgroup programs, so it is this packet's alone).
#[inline(always)]
fn token(ctx: &SkBuffContext) -> u32 {
    // SAFETY: reading this invocation's context.
    unsafe { (*ctx.as_ptr().cast::<aya_ebpf::bindings::__sk_buff>()).cb[0] }
}

/// Counts one event in this CPU's [`REIN_HEALTH`] slot `index` (exported as a metric; no
/// log record per packet).
#[inline(always)]
fn health(index: u32) {
    if let Some(n) = REIN_HEALTH.get_ptr_mut(index) {
        // SAFETY: this CPU's copy of the counter.
        unsafe { *n += 1 };
    }
}

/// A tail call between the egress stages failed: the packet passes, unshaped and
/// uncounted, and the failure is counted.
#[inline(always)]
fn tail_call_failed() -> i32 {
    health(HEALTH_TAIL_CALL_FAILED);
    PASS
}

/// The CPU's progress, if it is this packet's; otherwise (a softirq on this CPU sent a
/// packet in between, and its progress replaced this one's) the packet starts over at the
/// egress program, and the caller passes it if even that fails.
#[inline(always)]
fn progress(ctx: &SkBuffContext) -> Option<*mut shaper::Progress> {
    let p = REIN_SCRATCH.get_ptr_mut(0)?;
    // SAFETY: this CPU's scratch entry; only the token is read.
    if unsafe { (*p).token } == token(ctx) {
        return Some(p);
    }
    // SAFETY: the egress program takes the same context.
    unsafe { REIN_STAGES.tail_call(ctx, START) };
    health(HEALTH_TAIL_CALL_FAILED);
    None
}

/// What one egress stage hands to the next on this CPU (a tail call keeps only the
/// context; programs run with migration disabled, so the CPU's copy is the packet's).
#[map]
static REIN_SCRATCH: PerCpuArray<shaper::Progress> = PerCpuArray::with_max_entries(1, 0);

/// cgroup_skb verdict: let the packet pass.
const PASS: i32 = 1;
/// cgroup_skb verdict: drop the packet.
const DROP: i32 = 0;

/// What happened to a packet, as far as the counters care.
#[derive(Clone, Copy)]
enum Outcome {
    Sent,
    /// Dropped by the shaper: counted as dropped, not as transmitted (cAdvisor's transmit
    /// bytes are what left), so TCP's retransmission is not counted twice.
    SendDropped,
    Received,
    /// Dropped by the ingress policer; not counted as received.
    ReceiveDropped,
}

/// Egress, first of three programs (the verifier checks each apart: together they exceed
/// its limit of a million instructions explored): the packet's chain.
#[cgroup_skb(egress)]
pub fn rein_count_egress(ctx: SkBuffContext) -> i32 {
    let chain = chain::of_skb(&ctx);
    if chain.len == 0 {
        return PASS;
    }
    let Some(slot) = REIN_SCRATCH.get_ptr_mut(0) else {
        return PASS;
    };
    // SAFETY: helper without arguments.
    let token = unsafe { aya_ebpf::helpers::bpf_get_prandom_u32() } | 1;
    // SAFETY: cgroup_skb programs may write cb[]; the kernel restores it after them.
    unsafe { (*ctx.as_ptr().cast::<aya_ebpf::bindings::__sk_buff>()).cb[0] = token };
    // SAFETY: this CPU's scratch entry.
    unsafe { *slot = shaper::Progress::new(chain, token) };
    // SAFETY: the stage is a cgroup_skb program taking the same context.
    unsafe { REIN_STAGES.tail_call(&ctx, SHAPE) };
    // Only reached when the stage is missing (an agent that never set it): fail open.
    tail_call_failed()
}

/// Egress, second: shapes one level of the chain per run and tail-calls itself for the
/// next (so the verifier checks one level's branches, not the product of four), then
/// decides and hands over to counting.
#[cgroup_skb(egress)]
pub fn rein_egress_shape(ctx: SkBuffContext) -> i32 {
    let Some(slot) = progress(&ctx) else {
        return PASS;
    };
    // SAFETY: this CPU's scratch entry, written by the programs before on this packet.
    let p = unsafe { &mut *slot };
    if !p.done() && p.verdict != shaper::Verdict::Dropped {
        shaper::level(&ctx, p);
        // SAFETY: this program again, for the next level.
        unsafe { REIN_STAGES.tail_call(&ctx, SHAPE) };
        return tail_call_failed();
    }
    p.verdict = shaper::finish(&ctx, p);
    let verdict = p.verdict;
    // SAFETY: the stage is a cgroup_skb program taking the same context.
    unsafe { REIN_STAGES.tail_call(&ctx, COUNT) };
    // Shaped but not counted.
    health(HEALTH_TAIL_CALL_FAILED);
    verdict.code()
}

/// Egress, third: count for every level of the chain and remember the socket's chain for
/// the TCP statistics; returns the shaper's verdict.
#[cgroup_skb(egress)]
pub fn rein_egress_count(ctx: SkBuffContext) -> i32 {
    let Some(slot) = progress(&ctx) else {
        return PASS;
    };
    // SAFETY: this CPU's scratch entry, this packet's (checked above).
    let p = unsafe { *slot };
    let (chain, verdict) = (p.chain, p.verdict);
    let outcome = if verdict == shaper::Verdict::Dropped {
        Outcome::SendDropped
    } else {
        Outcome::Sent
    };
    count(&ctx, &chain, outcome, verdict);
    if verdict != shaper::Verdict::Dropped {
        tcp::remember(&ctx, &chain);
    }
    verdict.code()
}

/// Not attached anywhere: `cargo xtask bench datapath` runs it next to the programs above,
/// as the yardstick of what the hierarchy costs. It does what egress did before chains: the
/// socket's own cgroup alone, shaped and counted in one program.
#[cgroup_skb(egress)]
pub fn rein_bench_flat(ctx: SkBuffContext) -> i32 {
    // SAFETY: the context pointer is the kernel's `__sk_buff` for this program invocation.
    let leaf = unsafe {
        aya_ebpf::helpers::bpf_skb_cgroup_id(ctx.as_ptr().cast::<aya_ebpf::bindings::__sk_buff>())
    };
    let mut chain = Chain {
        len: 1,
        ..Chain::default()
    };
    chain.ids[0] = leaf;
    // In the CPU's scratch entry, as the stages keep it: on the stack, the progress and the
    // flow's judgement together pass the BPF stack's 512 bytes.
    let Some(slot) = REIN_SCRATCH.get_ptr_mut(0) else {
        return PASS;
    };
    // SAFETY: this CPU's scratch entry, used within this program run only.
    let p = unsafe { &mut *slot };
    *p = shaper::Progress::new(chain, 0);
    shaper::level(&ctx, p);
    let verdict = shaper::finish(&ctx, p);
    let outcome = if verdict == shaper::Verdict::Dropped {
        Outcome::SendDropped
    } else {
        Outcome::Sent
    };
    count(&ctx, &chain, outcome, verdict);
    verdict.code()
}

#[cgroup_skb(ingress)]
pub fn rein_count_ingress(ctx: SkBuffContext) -> i32 {
    let chain = chain::of_skb(&ctx);
    if chain.len == 0 {
        return PASS;
    }
    if shaper::police(&ctx, &chain) {
        count(&ctx, &chain, Outcome::Received, shaper::Verdict::Pass);
        return PASS;
    }
    count(&ctx, &chain, Outcome::ReceiveDropped, shaper::Verdict::Pass);
    DROP
}

/// What one packet adds to each of its cgroups' counters. Worked out once per packet, so
/// that the counting loop over the levels adds without a branch on the outcome.
#[inline(always)]
fn delta(outcome: Outcome, verdict: shaper::Verdict, len: u64) -> Traffic {
    let mut d = Traffic::default();
    match outcome {
        Outcome::Sent => {
            d.tx_bytes = len;
            d.tx_packets = 1;
        }
        Outcome::SendDropped => d.dropped = 1,
        Outcome::Received => {
            d.rx_bytes = len;
            d.rx_packets = 1;
        }
        Outcome::ReceiveDropped => d.rx_dropped = 1,
    }
    match verdict {
        shaper::Verdict::Pass | shaper::Verdict::Dropped => {}
        shaper::Verdict::Delayed => d.delayed = 1,
        shaper::Verdict::Marked => {
            d.delayed = 1;
            d.marked = 1;
        }
        shaper::Verdict::Notified => d.marked = 1,
    }
    d
}

/// Adds `d` field by field (wrapping: a counter of u64 bytes does not wrap in practice, and
/// a saturating add would branch per field).
#[inline(always)]
fn add(t: &mut Traffic, d: &Traffic) {
    t.tx_bytes = t.tx_bytes.wrapping_add(d.tx_bytes);
    t.tx_packets = t.tx_packets.wrapping_add(d.tx_packets);
    t.rx_bytes = t.rx_bytes.wrapping_add(d.rx_bytes);
    t.rx_packets = t.rx_packets.wrapping_add(d.rx_packets);
    t.delayed = t.delayed.wrapping_add(d.delayed);
    t.marked = t.marked.wrapping_add(d.marked);
    t.dropped = t.dropped.wrapping_add(d.dropped);
    t.rx_dropped = t.rx_dropped.wrapping_add(d.rx_dropped);
}

/// Counts the packet for every managed cgroup of its chain, creating a cgroup's entry on
/// its first packet.
#[inline(always)]
fn count(ctx: &SkBuffContext, chain: &Chain, outcome: Outcome, verdict: shaper::Verdict) {
    let d = delta(outcome, verdict, u64::from(ctx.len()));
    let mut i = 0;
    while i < MAX_CHAIN {
        if i < chain.len as usize {
            count_one(chain.ids[i], &d);
        }
        i += 1;
    }
}

#[inline(always)]
fn count_one(id: u64, d: &Traffic) {
    if let Some(t) = REIN_TRAFFIC.get_ptr_mut(&id) {
        // SAFETY: per-CPU value of an existing entry; only this CPU writes it, and programs
        // run with preemption (migration) disabled.
        add(unsafe { &mut *t }, d);
        return;
    }
    if REIN_TRAFFIC.insert(&id, d, u64::from(BPF_NOEXIST)).is_ok() {
        return;
    }
    // Another CPU created the entry between our lookup and insert: count into it.
    if let Some(t) = REIN_TRAFFIC.get_ptr_mut(&id) {
        // SAFETY: as above.
        add(unsafe { &mut *t }, d);
    } else {
        // The map is full: counted as such (exported as a metric), not logged per packet.
        health(HEALTH_TRAFFIC_FULL);
    }
}

#[sock_ops]
pub fn rein_sock_ops(ctx: SockOpsContext) -> u32 {
    tcp::sock_ops(&ctx)
}

#[raw_tracepoint(tracepoint = "sched_switch")]
pub fn rein_sched_switch(ctx: RawTracePointContext) -> u32 {
    sched::switch(&ctx)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    // The verifier rejects any path that could reach here; a loop satisfies the `!` type.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
