//! rein's eBPF programs, compiled to one object that the agent embeds.
//!
//! For now: a cgroup_skb egress/ingress pair that counts bytes and packets per cgroup id.
//! Attached to rein's managed cgroup root, the kernel runs them for every packet of every
//! socket in that subtree; `bpf_skb_cgroup_id` gives the socket's own (leaf) cgroup.
#![no_std]
#![no_main]

use aya_ebpf::{
    EbpfContext as _,
    bindings::{__sk_buff, BPF_NOEXIST},
    helpers::bpf_skb_cgroup_id,
    macros::{cgroup_skb, map},
    maps::PerCpuHashMap,
    programs::SkBuffContext,
};
use aya_log_ebpf::{debug, warn};
use controller_common::{TRAFFIC_MAP_MAX_ENTRIES, Traffic};

/// Counters per cgroup id; per-CPU because the BPF target has no atomic add-and-fetch on all
/// kernels and per-CPU copies avoid cache-line bouncing. Userspace sums the copies.
#[map]
static REIN_TRAFFIC: PerCpuHashMap<u64, Traffic> =
    PerCpuHashMap::with_max_entries(TRAFFIC_MAP_MAX_ENTRIES, 0);

/// cgroup_skb verdict: let the packet pass. Counting never drops anything.
const PASS: i32 = 1;

#[derive(Clone, Copy)]
enum Direction {
    Egress,
    Ingress,
}

#[cgroup_skb(egress)]
pub fn rein_count_egress(ctx: SkBuffContext) -> i32 {
    count(&ctx, Direction::Egress);
    PASS
}

#[cgroup_skb(ingress)]
pub fn rein_count_ingress(ctx: SkBuffContext) -> i32 {
    count(&ctx, Direction::Ingress);
    PASS
}

#[inline(always)]
fn add(t: &mut Traffic, dir: Direction, len: u64) {
    match dir {
        Direction::Egress => {
            t.tx_bytes += len;
            t.tx_packets += 1;
        }
        Direction::Ingress => {
            t.rx_bytes += len;
            t.rx_packets += 1;
        }
    }
}

#[inline(always)]
fn count(ctx: &SkBuffContext, dir: Direction) {
    // SAFETY: the context pointer is the kernel's `__sk_buff` for this program invocation.
    let id = unsafe { bpf_skb_cgroup_id(ctx.as_ptr().cast::<__sk_buff>()) };
    let len = u64::from(ctx.len());
    if let Some(t) = REIN_TRAFFIC.get_ptr_mut(&id) {
        // SAFETY: per-CPU value of an existing entry; only this CPU writes it, and programs
        // run with preemption (migration) disabled.
        add(unsafe { &mut *t }, dir, len);
        return;
    }
    let mut first = Traffic::default();
    add(&mut first, dir, len);
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
        add(unsafe { &mut *t }, dir, len);
    } else {
        warn!(ctx, "rein: traffic map full, cgroup {} is not counted", id);
    }
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
