//! Flow isolation inside a cgroup: a sparse flow departs at once instead of behind the
//! cgroup's bulk.
//!
//! One pacing clock per cgroup (see `shaper`) makes every flow of a saturated container wait
//! behind the others: its DNS lookups, pings and RPC replies queue behind its backup upload.
//! fq_codel avoids that by serving a flow that sent less than a quantum per round ahead of
//! the bulk. The same test here, without a queue to look at: each flow (a socket, by its
//! cookie) has an allowance that refills at `rate / SPARSE_SHARE` of its cgroup's rate and
//! holds the cgroup's burst (at least `SPARSE_MIN_BYTES`). A packet the allowance covers is
//! sparse: it leaves at once. Its cost is still charged to every level's clock, so the
//! aggregate holds at the limit and the bulk flows behind it absorb the difference; a flow
//! that turns bulk spends its allowance within one burst and queues like the rest; many
//! sockets each sending a little push their cgroup's clock to the horizon together, where
//! their packets are dropped like any other.

use aya_ebpf::{
    EbpfContext as _, helpers::bpf_get_socket_cookie, macros::map, maps::LruHashMap,
    programs::SkBuffContext,
};
use controller_common::{FLOW_MAP_MAX_ENTRIES, FlowState, SPARSE_MIN_BYTES, SPARSE_SHARE};

#[map]
static REIN_FLOWS: LruHashMap<u64, FlowState> =
    LruHashMap::with_max_entries(FLOW_MAP_MAX_ENTRIES, 0);

use crate::shaper::{NSEC_PER_SEC, max};

#[inline(always)]
const fn min(a: u64, b: u64) -> u64 {
    if a < b { a } else { b }
}

/// Charges the packet to its flow's allowance (for a cgroup of `rate` bytes/s and
/// `burst_ns` of burst) and says whether the allowance covered it. Packets without a socket
/// are never sparse.
#[inline(always)]
pub fn sparse(ctx: &SkBuffContext, now: u64, rate: u64, burst_ns: u64) -> bool {
    if rate == 0 {
        return false;
    }
    // SAFETY: the helper takes this invocation's skb; 0 when it has no socket.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    if cookie == 0 {
        return false;
    }
    // The allowance's clock runs SPARSE_SHARE times slower than the cgroup's: its depth is
    // the cgroup's burst (at least SPARSE_MIN_BYTES) at the refill rate.
    let depth = SPARSE_SHARE * max(burst_ns, SPARSE_MIN_BYTES * NSEC_PER_SEC / rate);
    let cost = u64::from(ctx.len()) * SPARSE_SHARE * NSEC_PER_SEC / rate;
    let floor = now.saturating_sub(depth);
    let slot = REIN_FLOWS.get_ptr_mut(&cookie);
    // SAFETY: the entry's value, read at once (a race with another CPU sending on the same
    // socket costs a packet's worth of allowance, as with the shaper's clocks).
    let t = slot.map_or(0, |s| unsafe { (*s).t_sparse_ns });
    let next = max(t, floor) + cost;
    // A bulk flow's debt is capped at one depth ahead, so that a connection that was bulk
    // counts as sparse again after a quiet spell of two depths, not after hours.
    let kept = FlowState {
        t_sparse_ns: min(next, now + depth),
    };
    match slot {
        // SAFETY: as above.
        Some(s) => unsafe { *s = kept },
        None => {
            let _ = REIN_FLOWS.insert(&cookie, &kept, 0);
        }
    }
    next <= now
}
