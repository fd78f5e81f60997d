//! rein's eBPF programs, compiled to one object that the agent embeds.
//!
//! A cgroup_skb egress/ingress pair attached to rein's managed cgroup root: the kernel runs
//! them for every packet of every socket in that subtree, and `bpf_skb_cgroup_id` gives the
//! socket's own (leaf) cgroup. Both count bytes and packets per cgroup; egress also paces the
//! cgroups that have a limit (see `shaper`) and ingress polices (`shaper::police`). A
//! sock_ops program on the same root records TCP round trips and retransmissions (`tcp`),
//! and raw tracepoints on the scheduler record run-queue latency of rein's cgroups (`sched`).
#![no_std]
#![no_main]

mod percpu;
mod sched;
mod shaper;
mod tcp;

use aya_ebpf::{
    EbpfContext as _,
    bindings::{__sk_buff, BPF_NOEXIST},
    helpers::bpf_skb_cgroup_id,
    macros::{cgroup_skb, map, raw_tracepoint, sock_ops},
    maps::PerCpuHashMap,
    programs::{RawTracePointContext, SkBuffContext, SockOpsContext},
};
use aya_log_ebpf::{debug, warn};
use controller_common::{TRAFFIC_MAP_MAX_ENTRIES, Traffic};

/// Counters per cgroup id; per-CPU because the BPF target has no atomic add-and-fetch on all
/// kernels and per-CPU copies avoid cache-line bouncing. Userspace sums the copies.
#[map]
static REIN_TRAFFIC: PerCpuHashMap<u64, Traffic> =
    PerCpuHashMap::with_max_entries(TRAFFIC_MAP_MAX_ENTRIES, 0);

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

#[cgroup_skb(egress)]
pub fn rein_count_egress(ctx: SkBuffContext) -> i32 {
    let id = cgroup_id(&ctx);
    let verdict = shaper::shape(&ctx, id);
    let outcome = if verdict == shaper::Verdict::Dropped {
        Outcome::SendDropped
    } else {
        Outcome::Sent
    };
    count(&ctx, id, outcome);
    if verdict != shaper::Verdict::Dropped {
        tcp::remember(&ctx, id);
    }
    if verdict != shaper::Verdict::Pass {
        record(id, verdict);
    }
    verdict.code()
}

/// Adds a shaper outcome other than a drop to the cgroup's counters (its entry exists:
/// `count` made it).
#[inline(always)]
fn record(id: u64, verdict: shaper::Verdict) {
    if let Some(t) = REIN_TRAFFIC.get_ptr_mut(&id) {
        // SAFETY: per-CPU value of an existing entry, written only by this CPU.
        let t = unsafe { &mut *t };
        match verdict {
            shaper::Verdict::Pass | shaper::Verdict::Dropped => {}
            shaper::Verdict::Delayed => t.delayed += 1,
            shaper::Verdict::Marked => {
                t.delayed += 1;
                t.marked += 1;
            }
            shaper::Verdict::Notified => t.marked += 1,
        }
    }
}

#[cgroup_skb(ingress)]
pub fn rein_count_ingress(ctx: SkBuffContext) -> i32 {
    let id = cgroup_id(&ctx);
    if shaper::police(&ctx, id) {
        count(&ctx, id, Outcome::Received);
        return PASS;
    }
    count(&ctx, id, Outcome::ReceiveDropped);
    DROP
}

#[inline(always)]
fn add(t: &mut Traffic, outcome: Outcome, len: u64) {
    match outcome {
        Outcome::Sent => {
            t.tx_bytes += len;
            t.tx_packets += 1;
        }
        Outcome::SendDropped => t.dropped += 1,
        Outcome::Received => {
            t.rx_bytes += len;
            t.rx_packets += 1;
        }
        Outcome::ReceiveDropped => t.rx_dropped += 1,
    }
}

/// The cgroup of the packet's socket.
#[inline(always)]
fn cgroup_id(ctx: &SkBuffContext) -> u64 {
    // SAFETY: the context pointer is the kernel's `__sk_buff` for this program invocation.
    unsafe { bpf_skb_cgroup_id(ctx.as_ptr().cast::<__sk_buff>()) }
}

/// Counts the packet for its cgroup, creating the cgroup's entry on its first packet.
#[inline(always)]
fn count(ctx: &SkBuffContext, id: u64, outcome: Outcome) {
    let len = u64::from(ctx.len());
    if let Some(t) = REIN_TRAFFIC.get_ptr_mut(&id) {
        // SAFETY: per-CPU value of an existing entry; only this CPU writes it, and programs
        // run with preemption (migration) disabled.
        add(unsafe { &mut *t }, outcome, len);
        return;
    }
    let mut first = Traffic::default();
    add(&mut first, outcome, len);
    if REIN_TRAFFIC
        .insert(&id, &first, u64::from(BPF_NOEXIST))
        .is_ok()
    {
        debug!(ctx, "rein: counting traffic of cgroup {}", id);
        return;
    }
    // Another CPU created the entry between our lookup and insert: count into it.
    if let Some(t) = REIN_TRAFFIC.get_ptr_mut(&id) {
        // SAFETY: as above.
        add(unsafe { &mut *t }, outcome, len);
    } else {
        warn!(ctx, "rein: traffic map full, cgroup {} is not counted", id);
    }
}

#[sock_ops]
pub fn rein_sock_ops(ctx: SockOpsContext) -> u32 {
    tcp::sock_ops(&ctx)
}

#[raw_tracepoint(tracepoint = "sched_wakeup")]
pub fn rein_sched_wakeup(ctx: RawTracePointContext) -> u32 {
    sched::wakeup(&ctx)
}

#[raw_tracepoint(tracepoint = "sched_wakeup_new")]
pub fn rein_sched_wakeup_new(ctx: RawTracePointContext) -> u32 {
    sched::wakeup(&ctx)
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
