//! Earliest-departure-time pacing per cgroup, the datapath half of `--egress`.
//!
//! Each shaped cgroup has a pacing clock `t_last` (the departure time given to its latest
//! packet). A packet of `len` bytes needs `len / rate` of the link; it may leave at
//! `max(t_last, now - burst) + len / rate`. If that is not later than when it would leave
//! anyway, it goes untouched; otherwise `skb->tstamp` is set and `sch_fq` on the egress device
//! holds it until then (the kernel's EDT model, as Cilium's bandwidth manager and the kernel's
//! HBM sample use it). Unlike Cilium's 2 s horizon, delay is bounded in milliseconds: when a
//! packet waits more than `mark_ns` behind the cgroup's earlier packets the verdict carries
//! congestion notification, which makes TCP reduce its window (tcp_enter_cwr via the
//! cgroup_skb CN bit) before a queue builds; beyond `horizon_ns` the packet is dropped. A
//! cgroup without configuration is not touched (fail open).
//!
//! Where no `fq` can honour departure times (flag `POLICE`), the same clock polices: packets
//! leave at once, TCP gets congestion notification once the clock runs `mark_ns` ahead of
//! real time and packets are dropped beyond `horizon_ns` ahead.
//!
//! `t_last` is updated without a lock, as in Cilium's edt.h: two CPUs sending for one cgroup
//! at the same instant may both claim one slot, which costs a packet's worth of accuracy, not
//! correctness.

use aya_ebpf::{
    EbpfContext as _,
    bindings::__sk_buff,
    helpers::bpf_ktime_get_ns,
    macros::map,
    maps::{HashMap, PerCpuHashMap},
    programs::SkBuffContext,
};
use controller_common::{
    DelayHistogram, POLICE, PolicerConfig, SET_PRIORITY, SHAPER_MAP_MAX_ENTRIES, ShaperConfig,
    ShaperState,
};

#[map]
static REIN_SHAPER: HashMap<u64, ShaperConfig> =
    HashMap::with_max_entries(SHAPER_MAP_MAX_ENTRIES, 0);

#[map]
static REIN_SHAPER_STATE: HashMap<u64, ShaperState> =
    HashMap::with_max_entries(SHAPER_MAP_MAX_ENTRIES, 0);

#[map]
static REIN_POLICER: HashMap<u64, PolicerConfig> =
    HashMap::with_max_entries(SHAPER_MAP_MAX_ENTRIES, 0);

#[map]
static REIN_POLICER_STATE: HashMap<u64, ShaperState> =
    HashMap::with_max_entries(SHAPER_MAP_MAX_ENTRIES, 0);

#[map]
static REIN_DELAY: PerCpuHashMap<u64, DelayHistogram> =
    PerCpuHashMap::with_max_entries(SHAPER_MAP_MAX_ENTRIES, 0);

const NSEC_PER_SEC: u64 = 1_000_000_000;

#[inline(always)]
const fn max(a: u64, b: u64) -> u64 {
    if a > b { a } else { b }
}

/// Adds one imposed delay to the cgroup's histogram (this CPU's copy).
#[inline(always)]
fn record_delay(id: u64, delay_ns: u64) {
    crate::percpu::update(&REIN_DELAY, id, |h| h.record(delay_ns));
}

/// Ingress policing (`--ingress`): a token bucket in the same virtual-clock form as the
/// shaper. A packet is admitted when the cgroup's clock, floored at `now - bucket`, plus the
/// packet's cost is not in the future; otherwise it is dropped. Received packets cannot be
/// delayed at this hook, only dropped, so TCP senders learn the rate from losses: a deep
/// bucket (hundreds of ms) keeps the average right. Returns true to admit.
#[inline(always)]
pub fn police(ctx: &SkBuffContext, id: u64) -> bool {
    // SAFETY: lookups return pointers into the map values, valid for this program run.
    let Some(cfg) = (unsafe { REIN_POLICER.get(&id) }) else {
        return true;
    };
    if cfg.rate_bytes_per_sec == 0 {
        return true;
    }
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let cost = u64::from(ctx.len()) * NSEC_PER_SEC / cfg.rate_bytes_per_sec;
    let floor = now.saturating_sub(cfg.bucket_ns);
    let Some(state) = REIN_POLICER_STATE.get_ptr_mut(&id) else {
        let _ = REIN_POLICER_STATE.insert(
            &id,
            &ShaperState {
                t_last_ns: floor + cost,
            },
            0,
        );
        return true;
    };
    // SAFETY: valid pointer into the map value for this program run (unlocked, as the
    // shaper's clock).
    let state = unsafe { &mut *state };
    let start = if state.t_last_ns > floor {
        state.t_last_ns
    } else {
        floor
    };
    if start + cost > now {
        return false;
    }
    state.t_last_ns = start + cost;
    true
}

/// What the shaper decided for one packet.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Leaves as it is.
    Pass,
    /// Leaves later (`skb->tstamp` set).
    Delayed,
    /// Leaves later, with congestion notification to TCP.
    Marked,
    /// Leaves now, with congestion notification to TCP (police mode: nothing can hold it).
    Notified,
    /// Dropped (beyond the horizon), with congestion notification.
    Dropped,
}

impl Verdict {
    /// The cgroup_skb return code: bit 0 = pass, bit 1 = congestion notification.
    pub const fn code(self) -> i32 {
        match self {
            Self::Pass | Self::Delayed => 1,
            Self::Marked | Self::Notified => 3,
            Self::Dropped => 2,
        }
    }
}

#[inline(always)]
pub fn shape(ctx: &SkBuffContext, id: u64) -> Verdict {
    // SAFETY: lookups return pointers into the map values, valid for this program run.
    let Some(cfg) = (unsafe { REIN_SHAPER.get(&id) }) else {
        return Verdict::Pass;
    };
    let skb = ctx.as_ptr().cast::<__sk_buff>();
    if cfg.flags & SET_PRIORITY != 0 {
        // SAFETY: `skb` is this invocation's context; cgroup_skb may write `priority`.
        unsafe { (*skb).priority = cfg.skb_priority };
    }
    if cfg.rate_bytes_per_sec == 0 {
        return Verdict::Pass;
    }
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let len = u64::from(ctx.len());
    let cost = len * NSEC_PER_SEC / cfg.rate_bytes_per_sec;
    // SAFETY: reading this invocation's context.
    let own = unsafe { (*skb).tstamp };
    let earliest = if own > now { own } else { now };

    let Some(state) = REIN_SHAPER_STATE.get_ptr_mut(&id) else {
        // First packet of this cgroup: start its clock with a full burst of credit.
        let start = ShaperState {
            t_last_ns: now.saturating_sub(cfg.burst_ns) + cost,
        };
        let _ = REIN_SHAPER_STATE.insert(&id, &start, 0);
        return Verdict::Pass;
    };
    // SAFETY: valid pointer into the map value for this program run (see module docs on
    // the unlocked update).
    let state = unsafe { &mut *state };
    let floor = now.saturating_sub(cfg.burst_ns);
    let start = if state.t_last_ns > floor {
        state.t_last_ns
    } else {
        floor
    };
    let depart = start + cost;
    if depart <= earliest {
        state.t_last_ns = depart;
        return Verdict::Pass;
    }
    // Mark and horizon judge the wait behind earlier packets, not the packet's own cost: a
    // 64 KB GSO packet at a low rate costs more than the horizon by itself and must still go.
    let wait = start.saturating_sub(now);
    let police = cfg.flags & POLICE != 0;
    // Policing: a debt of a few GSO packets is normal TCP burstiness, not congestion, and
    // one 64 KB packet costs 52 ms at 10 Mbit/s; below that scale the thresholds would
    // collapse TCP (measured: 0.5 of the rate with 4/40 ms at 20 Mbit/s).
    let (mark, horizon) = if police {
        (max(cfg.mark_ns, 2 * cost), max(cfg.horizon_ns, 8 * cost))
    } else {
        (cfg.mark_ns, cfg.horizon_ns)
    };
    if wait >= horizon {
        return Verdict::Dropped;
    }
    state.t_last_ns = depart;
    if police {
        // No fq would honour a departure time: the packet goes now, and the debt the clock
        // carries is the signal (HBM's policing mode).
        return if wait >= mark {
            Verdict::Notified
        } else {
            Verdict::Pass
        };
    }
    // SAFETY: cgroup_skb programs may write `tstamp` (with CAP_BPF, which loading needs).
    unsafe { (*skb).tstamp = depart };
    record_delay(id, depart - now);
    if wait >= mark {
        Verdict::Marked
    } else {
        Verdict::Delayed
    }
}
