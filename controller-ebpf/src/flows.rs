//! Flow isolation inside a cgroup: a sparse flow departs at once instead of behind the
//! cgroup's bulk, and congestion notification goes to the flows that take the most.
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
//!
//! Bulk flows share one clock, so whichever sends while the queue is past the mark gets
//! congestion notification. Measured at 100 Mbit/s with 8 TCP streams, that froze one stream
//! at 65 Mbit/s and seven at a congestion window of two segments (4.7 Mbit/s each: marked on
//! every round trip, they never grow). So each flow also keeps its share of its cgroup's
//! link time over the last `SHARE_WINDOW_NS`, the cgroup keeps the largest share any of its
//! flows has had lately, and only a flow within `HEAVY_PERCENT` of that largest share is
//! notified: the flows that take the most slow down, the others may grow.

use aya_ebpf::{
    EbpfContext as _, helpers::bpf_get_socket_cookie, macros::map, maps::LruHashMap,
    programs::SkBuffContext,
};
use controller_common::{
    FLOW_MAP_MAX_ENTRIES, FlowState, SHAPER_MAP_MAX_ENTRIES, SPARSE_MIN_BYTES, SPARSE_SHARE,
};

use crate::shaper::{NSEC_PER_SEC, max};

#[map]
static REIN_FLOWS: LruHashMap<u64, FlowState> =
    LruHashMap::with_max_entries(FLOW_MAP_MAX_ENTRIES, 0);

/// The largest share (of [`SHARE_SCALE`]) any flow of a cgroup had, and when it was seen,
/// by cgroup id. LRU: an entry of a removed cgroup ages out by itself.
#[map]
static REIN_FLOW_PEAK: LruHashMap<u64, [u64; 2]> =
    LruHashMap::with_max_entries(SHAPER_MAP_MAX_ENTRIES, 0);

/// How far back a flow's share of its cgroup's link time reaches: long against one GSO
/// packet's cost (5 ms for 64 KB at 100 Mbit/s), short against a TCP stream's life.
const SHARE_WINDOW_NS: u64 = 100_000_000;
/// A share of 1 (the whole window).
const SHARE_SCALE: u64 = 1024;
/// A flow whose share is at least this percentage of the cgroup's peak share counts as one
/// of the heaviest.
const HEAVY_PERCENT: u64 = 75;

#[inline(always)]
const fn min(a: u64, b: u64) -> u64 {
    if a < b { a } else { b }
}

/// What a packet's flow is, for its cgroup's shaper.
pub struct Judgement {
    /// Its allowance covered it: it departs at once.
    pub sparse: bool,
    /// Its flow is among the heaviest of its cgroup: congestion notification, if any, is
    /// for it.
    pub heavy: bool,
}

/// Charges the packet to its flow (for the cgroup `id` of `rate` bytes/s and `burst_ns` of
/// burst) and judges it. Packets without a socket are bulk, and heavy.
#[inline(always)]
pub fn judge(ctx: &SkBuffContext, now: u64, id: u64, rate: u64, burst_ns: u64) -> Judgement {
    let bulk = Judgement {
        sparse: false,
        heavy: true,
    };
    if rate == 0 {
        return bulk;
    }
    // SAFETY: the helper takes this invocation's skb; 0 when it has no socket.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    if cookie == 0 {
        return bulk;
    }
    let len = u64::from(ctx.len());
    let slot = REIN_FLOWS.get_ptr_mut(&cookie);
    // SAFETY: the entry's value, copied at once (a race with another CPU sending on the
    // same socket costs a packet's worth of accuracy, as with the shaper's clocks).
    let before = slot.map_or(FlowState::default(), |s| unsafe { *s });

    // The allowance's clock runs SPARSE_SHARE times slower than the cgroup's: its depth is
    // the cgroup's burst (at least SPARSE_MIN_BYTES) at the refill rate.
    let depth = SPARSE_SHARE * max(burst_ns, SPARSE_MIN_BYTES * NSEC_PER_SEC / rate);
    let cost = len * NSEC_PER_SEC / rate;
    let next = max(before.t_sparse_ns, now.saturating_sub(depth)) + cost * SPARSE_SHARE;

    // The share: link time used since the window's start, on a clock floored there.
    let window_start = now.saturating_sub(SHARE_WINDOW_NS);
    let used = max(before.t_share_ns, window_start) + cost;
    let share = min(used - window_start, SHARE_WINDOW_NS) * SHARE_SCALE / SHARE_WINDOW_NS;

    let after = FlowState {
        // A bulk flow's debt is capped at one depth ahead, so that a connection that was
        // bulk counts as sparse again after a quiet spell of two depths, not after hours.
        t_sparse_ns: min(next, now + depth),
        t_share_ns: min(used, now),
    };
    match slot {
        // SAFETY: as above.
        Some(s) => unsafe { *s = after },
        None => {
            let _ = REIN_FLOWS.insert(&cookie, &after, 0);
        }
    }
    Judgement {
        sparse: next <= now,
        heavy: heavy(id, now, share),
    }
}

/// Whether `share` is within [`HEAVY_PERCENT`] of the largest share a flow of cgroup `id`
/// had in the last window; raises that peak, or starts it again once it is a window old.
#[inline(always)]
fn heavy(id: u64, now: u64, share: u64) -> bool {
    let peak = REIN_FLOW_PEAK.get_ptr_mut(&id);
    // SAFETY: the entry's value, copied at once.
    let [top, seen] = peak.map_or([0, 0], |p| unsafe { *p });
    if share >= top || now.saturating_sub(seen) > SHARE_WINDOW_NS {
        let new = [share, now];
        match peak {
            // SAFETY: as above.
            Some(p) => unsafe { *p = new },
            None => {
                let _ = REIN_FLOW_PEAK.insert(&id, &new, 0);
            }
        }
        return true;
    }
    share * 100 >= top * HEAVY_PERCENT
}
