//! Flow isolation inside a cgroup: a sparse flow departs at once instead of behind the
//! cgroup's bulk, and congestion notification goes to the flows that take the most.
//!
//! One pacing clock per cgroup (see `shaper`) makes every flow of a saturated container wait
//! behind the others: its DNS lookups, pings and RPC replies queue behind its backup upload.
//! fq_codel avoids that by serving a flow that sent less than a quantum per round ahead of
//! the bulk. The same test here, without a queue to look at: each flow (a socket, by its
//! cookie) has an allowance that refills at `rate / SPARSE_SHARE` of its cgroup's rate and
//! holds the cgroup's burst (at least `SPARSE_MIN_BYTES`). A packet is sparse when its
//! flow's allowance covers it, nothing of its flow is still queued (it would overtake it),
//! and the cgroup's sparse packets together stay within their joint allowance
//! (`rate / SPARSE_TOTAL_SHARE`, one burst deep). A sparse packet leaves at once. Its cost
//! is still charged to every level's clock, so the aggregate holds at the limit and the bulk
//! flows behind it absorb the difference; a flow that turns bulk spends its allowance within
//! one burst and queues like the rest; many sockets each sending a little exhaust the joint
//! allowance within one burst and are then paced like any bulk.
//!
//! Bulk flows share one clock, so whichever sends while the queue is past the mark gets
//! congestion notification. Measured at 100 Mbit/s with 8 TCP streams, that froze one stream
//! at 65 Mbit/s and seven at a congestion window of two segments (4.4-4.6 Mbit/s each:
//! marked on every round trip, they never grow). So each flow also keeps its share of its
//! cgroup's link time over the last `SHARE_WINDOW_NS`, the cgroup keeps the largest share any
//! of its flows has had lately, and only a flow within `HEAVY_PERCENT` of that largest share
//! is notified: the flows that take the most slow down, the others may grow.
//!
//! [`judge`] decides without writing; the caller [`Judgement::keep`]s the new state only for a
//! packet that is sent, so a dropped packet changes nothing.

use aya_ebpf::{
    EbpfContext as _, helpers::bpf_get_socket_cookie, macros::map, maps::LruHashMap,
    programs::SkBuffContext,
};
use controller_common::{
    FLOW_MAP_MAX_ENTRIES, FlowPeak, FlowState, SHAPER_MAP_MAX_ENTRIES, SPARSE_MIN_BYTES,
    SPARSE_SHARE, SPARSE_TOTAL_SHARE,
};

use crate::shaper::{NSEC_PER_SEC, max};

#[map]
static REIN_FLOWS: LruHashMap<u64, FlowState> =
    LruHashMap::with_max_entries(FLOW_MAP_MAX_ENTRIES, 0);

/// Per cgroup id. LRU: an entry of a removed cgroup also ages out by itself.
#[map]
static REIN_FLOW_PEAK: LruHashMap<u64, FlowPeak> =
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

/// What a packet's flow is, for its cgroup's shaper, and the state to keep if it is sent.
pub struct Judgement {
    /// It departs at once.
    pub sparse: bool,
    /// Its flow is among the heaviest of its cgroup: congestion notification, if any, is
    /// for it.
    pub heavy: bool,
    cookie: u64,
    flow: FlowState,
    cgroup: u64,
    peak: FlowPeak,
    /// The peak share was raised or started again.
    peak_moved: bool,
}

impl Judgement {
    /// Keeps the flow's and the cgroup's new state (the packet is sent).
    #[inline(always)]
    pub fn keep(&self) {
        if self.cookie == 0 {
            return;
        }
        match REIN_FLOWS.get_ptr_mut(&self.cookie) {
            // SAFETY: the entry's value; a race with another CPU sending on the same socket
            // costs a packet's worth of accuracy, as with the shaper's clocks.
            Some(s) => unsafe { *s = self.flow },
            None => {
                let _ = REIN_FLOWS.insert(&self.cookie, &self.flow, 0);
            }
        }
        // The cgroup's entry is shared by every CPU sending for it: write only the fields
        // this packet changed, so that a bulk packet does not put back an older joint
        // allowance over a sparse packet's charge.
        match REIN_FLOW_PEAK.get_ptr_mut(&self.cgroup) {
            Some(p) => {
                if self.sparse {
                    // SAFETY: the cgroup's entry, one field.
                    unsafe { (*p).t_sparse_ns = self.peak.t_sparse_ns };
                }
                if self.peak_moved {
                    // SAFETY: as above.
                    unsafe {
                        (*p).share = self.peak.share;
                        (*p).seen_ns = self.peak.seen_ns;
                    }
                }
            }
            None => {
                let _ = REIN_FLOW_PEAK.insert(&self.cgroup, &self.peak, 0);
            }
        }
    }
}

/// Judges a packet of cgroup `id` (`rate` bytes/s, `burst_ns` of burst) that would leave at
/// `depart` (now, or the clocks' later time) if it is not sparse. Packets without a socket
/// are bulk, and heavy.
#[inline(always)]
pub fn judge(
    ctx: &SkBuffContext,
    now: u64,
    id: u64,
    rate: u64,
    burst_ns: u64,
    depart: u64,
) -> Judgement {
    let mut j = Judgement {
        sparse: false,
        heavy: true,
        cookie: 0,
        flow: FlowState::default(),
        cgroup: id,
        peak: FlowPeak::default(),
        peak_moved: false,
    };
    if rate == 0 {
        return j;
    }
    // SAFETY: the helper takes this invocation's skb; 0 when it has no socket.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    if cookie == 0 {
        return j;
    }
    j.cookie = cookie;
    // SAFETY: lookups; the values are copied out at once.
    let before = unsafe { REIN_FLOWS.get(&cookie) }
        .copied()
        .unwrap_or_default();
    // SAFETY: as above.
    let peak = unsafe { REIN_FLOW_PEAK.get(&id) }
        .copied()
        .unwrap_or_default();

    // The allowances' clocks run SPARSE_SHARE (the flow's) and SPARSE_TOTAL_SHARE (the
    // cgroup's) times slower than the cgroup's own: each holds the cgroup's burst (at least
    // SPARSE_MIN_BYTES) at its refill rate.
    let burst = max(burst_ns, SPARSE_MIN_BYTES * NSEC_PER_SEC / rate);
    let cost = (u64::from(ctx.len()) * NSEC_PER_SEC).div_ceil(rate);
    let flow_depth = SPARSE_SHARE * burst;
    let flow_next = max(before.t_sparse_ns, now.saturating_sub(flow_depth)) + cost * SPARSE_SHARE;
    let total_depth = SPARSE_TOTAL_SHARE * burst;
    let total_next =
        max(peak.t_sparse_ns, now.saturating_sub(total_depth)) + cost * SPARSE_TOTAL_SHARE;
    j.sparse = flow_next <= now && before.t_depart_ns <= now && total_next <= now;

    // The share: link time used since the window's start, on a clock floored there.
    let window_start = now.saturating_sub(SHARE_WINDOW_NS);
    let used = max(before.t_share_ns, window_start) + cost;
    let share = min(used - window_start, SHARE_WINDOW_NS) * SHARE_SCALE / SHARE_WINDOW_NS;

    j.flow = FlowState {
        // A bulk flow's debt is capped at one depth ahead, so that a connection that was
        // bulk counts as sparse again after a quiet spell of two depths, not after hours.
        t_sparse_ns: min(flow_next, now + flow_depth),
        t_share_ns: min(used, now),
        t_depart_ns: if j.sparse {
            now
        } else {
            max(before.t_depart_ns, depart)
        },
    };
    j.peak = peak;
    if j.sparse {
        j.peak.t_sparse_ns = total_next;
    }
    // The peak share: raised by a heavier flow, started again once a window old.
    if share >= peak.share || now.saturating_sub(peak.seen_ns) > SHARE_WINDOW_NS {
        j.peak.share = share;
        j.peak.seen_ns = now;
        j.peak_moved = true;
    } else {
        j.heavy = share * 100 >= peak.share * HEAVY_PERCENT;
    }
    j
}
