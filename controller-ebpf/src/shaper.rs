//! Earliest-departure-time pacing per cgroup, the datapath half of `--egress`.
//!
//! Each shaped cgroup has a pacing clock `t_last` (the departure time given to its latest
//! packet). A packet of `len` bytes needs `len / rate` of the link; at one level it may leave
//! at `max(t_last, now - burst) + len / rate`. A packet is charged to every managed cgroup
//! above it that has a limit (its chain: the container, its groups, its pod), and leaves no
//! earlier than every one of those clocks allows: its departure is the latest of the levels'
//! departures, and each level's clock advances by its own cost. If that is not later than
//! when it would leave anyway, it goes untouched; otherwise `skb->tstamp` is set and
//! `sch_fq` on the egress device holds it until then (the kernel's EDT model, as Cilium's
//! bandwidth manager and the kernel's HBM sample use it). Unlike Cilium's 2 s horizon, delay
//! is bounded in milliseconds: when a packet waits more than `mark_ns` behind a level's
//! earlier packets the verdict carries congestion notification, which makes TCP reduce its
//! window (tcp_enter_cwr via the cgroup_skb CN bit) before a queue builds; beyond a level's
//! `horizon_ns` the packet is dropped, and no level is charged for it. A cgroup without
//! configuration is not touched (fail open).
//!
//! A departure time the sender put on its own packet (`SO_TXTIME`, which any unprivileged
//! process may use) never buys an earlier or cheaper departure: pacing keeps the later of the
//! two and charges the clocks as for any packet; policing ignores it.
//!
//! Where no `fq` can honour departure times (flag `POLICE`), the same clocks police: packets
//! leave at once, TCP gets congestion notification once a clock runs `mark_ns` ahead of real
//! time and packets are dropped beyond `horizon_ns` ahead.
//!
//! Inside a cgroup, a packet of a sparse flow (a ping, a DNS query, a request on an idle
//! connection; see `flows`) departs at once instead of behind the cgroup's backlog; the
//! clocks are charged for it as for any packet, so the bulk absorbs the difference. It is
//! dropped only beyond twice a level's horizon (a policed container's bulk runs its debt to
//! the horizon, and a request dropped there waits for TCP's 200 ms retransmission timer).
//! Congestion notification goes only to the heaviest of a cgroup's bulk flows.
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
    Chain, DelayHistogram, FIFO, MAX_CHAIN, POLICE, PolicerConfig, SET_PRIORITY,
    SHAPER_MAP_MAX_ENTRIES, ShaperConfig, ShaperState,
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

pub(crate) const NSEC_PER_SEC: u64 = 1_000_000_000;

#[inline(always)]
pub(crate) const fn max(a: u64, b: u64) -> u64 {
    if a > b { a } else { b }
}

/// Adds one imposed delay, already sorted into `bucket` (see `percpu::opaque`), to the
/// cgroup's histogram (this CPU's copy).
#[inline(always)]
fn record_delay(id: u64, bucket: u64, delay_ns: u64) {
    crate::percpu::update(&REIN_DELAY, id, |h| {
        crate::percpu::record(h, bucket, delay_ns)
    });
}

/// A level's clock: its latest departure time, or `None` before its first packet.
#[inline(always)]
fn t_last(map: &HashMap<u64, ShaperState>, id: u64) -> Option<u64> {
    // SAFETY: lookup; the value is copied out at once.
    unsafe { map.get(&id) }.map(|s| s.t_last_ns)
}

/// Advances the clocks of the levels that took part (`next[i] != 0`) to their new times.
/// Done after the decision, with one map update per level and no branch on whether the
/// clock existed, so that the verifier explores few paths.
#[inline(always)]
fn commit(map: &HashMap<u64, ShaperState>, chain: &Chain, next: &[u64; MAX_CHAIN]) {
    let mut i = 0;
    while i < MAX_CHAIN {
        if i < chain.len as usize && next[i] != 0 {
            let _ = map.insert(&chain.ids[i], &ShaperState { t_last_ns: next[i] }, 0);
        }
        i += 1;
    }
}

/// Ingress policing (`--ingress`): a token bucket per level in the same virtual-clock form
/// as the shaper. A packet is admitted when, at every level of its chain with a limit, the
/// clock floored at `now - bucket` plus the packet's cost is not in the future; then every
/// such level is charged. Otherwise it is dropped and no level is charged. A level's first
/// packet is admitted and starts its clock with a full bucket. Received packets cannot be
/// delayed at this hook, only dropped, so TCP senders learn the rate from losses: a deep
/// bucket (hundreds of ms) keeps the average right. Returns true to admit.
#[inline(always)]
pub fn police(ctx: &SkBuffContext, chain: &Chain) -> bool {
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let len = u64::from(ctx.len());
    let mut next = [0u64; MAX_CHAIN];
    let mut i = 0;
    while i < MAX_CHAIN {
        if i < chain.len as usize {
            let id = chain.ids[i];
            // SAFETY: lookup; the fields are copied out at once.
            if let Some(cfg) = unsafe { REIN_POLICER.get(&id) }
                && cfg.rate_bytes_per_sec != 0
            {
                let cost = (len * NSEC_PER_SEC).div_ceil(cfg.rate_bytes_per_sec);
                let floor = now.saturating_sub(cfg.bucket_ns);
                match t_last(&REIN_POLICER_STATE, id) {
                    None => next[i] = floor + cost,
                    Some(t) => {
                        let start = max(t, floor);
                        if start + cost > now {
                            return false;
                        }
                        next[i] = start + cost;
                    }
                }
            }
        }
        i += 1;
    }
    commit(&REIN_POLICER_STATE, chain, &next);
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

/// The shaper's work on one packet, carried from level to level (see [`level`]).
#[derive(Clone, Copy)]
pub struct Progress {
    /// Which packet this is (also in its `skb->cb[0]`): a packet sent from a softirq that
    /// interrupts this one on the same CPU overwrites the CPU's progress, and the stages
    /// then start this packet over.
    pub token: u32,
    pub chain: Chain,
    /// The next level to look at.
    pub level: u32,
    /// Set once a level's priority class was written (the nearest one decides).
    pub priority_set: bool,
    /// Some level polices (no `fq` on the node).
    pub police: bool,
    /// Some level waits beyond its mark.
    pub marked: bool,
    /// Some level waits beyond its horizon (but not twice it): dropped unless sparse.
    pub beyond_horizon: bool,
    /// The latest departure any level allows (0: none limits the packet).
    pub depart: u64,
    /// Each level's clock after this packet (0: the level does not limit it).
    pub next: [u64; MAX_CHAIN],
    /// The level with the smallest rate, its rate and burst: what the packet's flow is
    /// judged against (see `flows`); 0 while no level limits it.
    pub flow_level: u64,
    pub flow_rate: u64,
    pub flow_burst_ns: u64,
    /// That level keeps one FIFO (flag `FIFO`): no flow departs ahead of its backlog.
    pub fifo: bool,
    pub verdict: Verdict,
}

impl Progress {
    pub fn new(chain: Chain, token: u32) -> Self {
        Self {
            token,
            chain,
            level: 0,
            priority_set: false,
            police: false,
            marked: false,
            beyond_horizon: false,
            depart: 0,
            next: [0; MAX_CHAIN],
            flow_level: 0,
            flow_rate: 0,
            flow_burst_ns: 0,
            fifo: false,
            verdict: Verdict::Pass,
        }
    }

    /// True once every level of the chain was looked at.
    pub fn done(&self) -> bool {
        self.level as usize >= MAX_CHAIN || self.level >= self.chain.len
    }
}

/// Looks at one level of the packet's chain (`p.level`) and moves on to the next: the
/// level's departure for this packet, whether it waits beyond its mark, or a drop beyond its
/// horizon (then `p.verdict` is `Dropped` and the remaining levels do not matter). One level
/// per call, so that the verifier checks one level's branches, not their product.
#[inline(always)]
pub fn level(ctx: &SkBuffContext, p: &mut Progress) {
    let i = p.level as usize;
    p.level += 1;
    if i >= MAX_CHAIN || i >= p.chain.len as usize {
        return;
    }
    let id = p.chain.ids[i];
    // SAFETY: lookup; the fields are copied out at once.
    let Some(cfg) = (unsafe { REIN_SHAPER.get(&id) }).copied() else {
        return;
    };
    // The nearest level with a priority class decides the packet's priority.
    if cfg.flags & SET_PRIORITY != 0 && !p.priority_set {
        let skb = ctx.as_ptr().cast::<__sk_buff>();
        // SAFETY: `skb` is this invocation's context; cgroup_skb may write `priority`.
        unsafe { (*skb).priority = cfg.skb_priority };
        p.priority_set = true;
    }
    p.police |= cfg.flags & POLICE != 0;
    if cfg.rate_bytes_per_sec == 0 {
        return;
    }
    // Flows are judged against the level with the smallest rate: the one whose backlog a
    // sparse packet would skip.
    if p.flow_rate == 0 || cfg.rate_bytes_per_sec < p.flow_rate {
        p.flow_level = id;
        p.flow_rate = cfg.rate_bytes_per_sec;
        p.flow_burst_ns = cfg.burst_ns;
        p.fifo = cfg.flags & FIFO != 0;
    }
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    // Rounded up: a small packet at a high rate still costs something.
    let cost = (u64::from(ctx.len()) * NSEC_PER_SEC).div_ceil(cfg.rate_bytes_per_sec);
    let floor = now.saturating_sub(cfg.burst_ns);
    let Some(t) = t_last(&REIN_SHAPER_STATE, id) else {
        // The level's first packet: it goes at once, and its clock starts with a full
        // burst of credit.
        p.next[i] = floor + cost;
        return;
    };
    let start = max(t, floor);
    // Mark and horizon judge the wait behind earlier packets, not the packet's own cost: a
    // 64 KB GSO packet at a low rate costs more than the horizon by itself and must still go.
    let wait = start.saturating_sub(now);
    // Policing: a debt of a few GSO packets is normal TCP burstiness, not congestion, and
    // one 64 KB packet costs 52 ms at 10 Mbit/s; below that scale the thresholds would
    // collapse TCP (measured: 0.5 of the rate with 4/40 ms at 20 Mbit/s).
    let (mark, horizon) = if cfg.flags & POLICE != 0 {
        (max(cfg.mark_ns, 2 * cost), max(cfg.horizon_ns, 8 * cost))
    } else {
        (cfg.mark_ns, cfg.horizon_ns)
    };
    if wait >= horizon {
        // Beyond the horizon only a sparse flow's packet may still go (see `finish`), and
        // not beyond twice it: so many small senders together still meet a drop.
        if p.fifo || wait >= 2 * horizon {
            p.verdict = Verdict::Dropped;
            return;
        }
        p.beyond_horizon = true;
    }
    p.marked |= wait >= mark;
    p.next[i] = start + cost;
    p.depart = max(p.depart, start + cost);
}

/// Once every level was looked at: advances the clocks of the levels that took part, and
/// gives the packet the latest departure they allow (pacing) or lets it go now (policing).
/// A packet of a sparse flow (see `flows`) leaves now in either mode, without congestion
/// notification: the clocks are charged for it all the same. Of the bulk flows, only the
/// heaviest get congestion notification. A departure time the sender put on the packet
/// itself is kept only when it is later.
#[inline(always)]
pub fn finish(ctx: &SkBuffContext, p: &mut Progress) -> Verdict {
    if p.verdict == Verdict::Dropped {
        return Verdict::Dropped;
    }
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let mut sparse = false;
    if !p.fifo {
        // Where the packet would stay queued until if it is not sparse (policed packets
        // leave now whatever the clocks say).
        let depart = if p.police { now } else { max(p.depart, now) };
        let flow =
            crate::flows::judge(ctx, now, p.flow_level, p.flow_rate, p.flow_burst_ns, depart);
        if p.beyond_horizon && !flow.sparse {
            return Verdict::Dropped;
        }
        flow.keep();
        sparse = flow.sparse;
        // Congestion notification only for the flows that take the most of the cgroup.
        p.marked &= flow.heavy;
    }
    // (Also when the level judged against keeps one FIFO while another level let the
    // packet past its horizon: the FIFO bits of a node differ only while an agent restarted
    // with another --egress-flows rewrites them.)
    if p.beyond_horizon && !sparse {
        return Verdict::Dropped;
    }
    commit(&REIN_SHAPER_STATE, &p.chain, &p.next);
    if sparse || p.depart <= now {
        return Verdict::Pass;
    }
    let notified = if p.marked {
        Verdict::Notified
    } else {
        Verdict::Pass
    };
    if p.police {
        // No fq would honour a departure time: the packet goes now, and the debt the clocks
        // carry is the signal (HBM's policing mode). Its own timestamp changes nothing.
        return notified;
    }
    let skb = ctx.as_ptr().cast::<__sk_buff>();
    // SAFETY: reading this invocation's context.
    if p.depart <= unsafe { (*skb).tstamp } {
        // It leaves at its own, later, time: no earlier than the clocks allow.
        return notified;
    }
    // SAFETY: cgroup_skb programs may write `tstamp` (with CAP_BPF, which loading needs).
    unsafe { (*skb).tstamp = p.depart };
    let delay = p.depart - now;
    let bucket = crate::percpu::opaque(DelayHistogram::bucket(delay) as u64);
    let mut i = 0;
    while i < MAX_CHAIN {
        if i < p.chain.len as usize && p.next[i] != 0 {
            record_delay(p.chain.ids[i], bucket, delay);
        }
        i += 1;
    }
    if p.marked {
        Verdict::Marked
    } else {
        Verdict::Delayed
    }
}
