//! Map layouts shared by rein's eBPF programs (`controller-ebpf`) and its agent (`controller`).
//!
//! This is the single definition of every structure that crosses the kernel/user boundary:
//! both sides compile these types, so there is nothing to keep in sync by hand. Every struct
//! is `#[repr(C)]` with explicit padding and a compile-time size check, because the kernel
//! copies map values as raw bytes.
#![no_std]

/// Name of the per-CPU hash map of [`Traffic`] counters, keyed by cgroup id (`u64`, the
/// inode number of the cgroup v2 directory, as returned by `bpf_skb_cgroup_id`).
pub const TRAFFIC_MAP: &str = "REIN_TRAFFIC";

/// Capacity of [`TRAFFIC_MAP`]: the most cgroups counted at once. A cgroup that does not fit
/// is not counted (and the programs log it once per packet burst); traffic still passes.
pub const TRAFFIC_MAP_MAX_ENTRIES: u32 = 16_384;

/// Name of the cgroup_skb egress program in the object file: it counts, and paces cgroups
/// with a [`ShaperConfig`]. (The name predates shaping.)
pub const PROG_COUNT_EGRESS: &str = "rein_count_egress";
/// Name of the cgroup_skb ingress program: it counts, and polices cgroups with a
/// [`PolicerConfig`].
pub const PROG_COUNT_INGRESS: &str = "rein_count_ingress";
/// The egress stages the egress program tail-calls once it knows the packet's [`Chain`], in
/// order: shaping, then counting (and remembering the socket); last the egress program
/// itself, where a packet starts over when a softirq's packet on the same CPU took its
/// place in the per-CPU scratch between two stages. Three programs, so that the
/// verifier checks the walk up the hierarchy, the per-level shaping and the per-level
/// counting apart (together they exceed its limit of a million instructions explored).
pub const PROG_EGRESS_STAGES: [&str; 3] = [
    "rein_egress_shape",
    "rein_egress_count",
    "rein_count_egress",
];
/// Name of the per-CPU array of the programs' failure counters, by index: what they could not
/// do, without a log record per packet.
pub const HEALTH_MAP: &str = "REIN_HEALTH";
/// Name of the per-CPU one-`u64` array the programs pass a number through so that the
/// verifier sees it as unknown (see `controller-ebpf/src/percpu.rs`).
pub const OPAQUE_MAP: &str = "REIN_OPAQUE";
/// [`HEALTH_MAP`]: packets of a managed cgroup not counted because the traffic map was full.
pub const HEALTH_TRAFFIC_FULL: u32 = 0;
/// [`HEALTH_MAP`]: egress packets that passed unshaped and uncounted because a tail call
/// between the egress stages failed (a stage missing, or the kernel's limit of 33 calls
/// reached by packets starting over).
pub const HEALTH_TAIL_CALL_FAILED: u32 = 1;
/// Entries of [`HEALTH_MAP`].
pub const HEALTH_MAP_ENTRIES: u32 = 2;

/// Name of the per-CPU one-entry array through which the egress programs hand their work on
/// a packet to the next stage (a tail call keeps only the context).
pub const SCRATCH_MAP: &str = "REIN_SCRATCH";
/// Name of the LRU map of the watched tasks' `sched_info` as each last left a CPU
/// (scheduler program).
pub const RUN_DELAY_MAP: &str = "REIN_RUN_DELAY";
/// Name of the program array holding [`PROG_EGRESS_STAGES`] by index. Pinned: the kernel
/// empties a program array when its last user reference closes, which would stop shaping
/// once the agent exits.
pub const STAGES_MAP: &str = "REIN_STAGES";

/// Per-cgroup packet counters, one copy per CPU; userspace sums the copies.
///
/// Lengths are `skb->len` as seen by cgroup_skb programs: the network-layer packet (IP header
/// included, no link-layer header).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Bytes sent by sockets of the cgroup (egress), not counting packets rein dropped.
    pub tx_bytes: u64,
    /// Packets sent by sockets of the cgroup (egress), not counting packets rein dropped.
    pub tx_packets: u64,
    /// Bytes received by sockets of the cgroup (ingress), not counting policed packets.
    pub rx_bytes: u64,
    /// Packets received by sockets of the cgroup (ingress), not counting policed packets.
    pub rx_packets: u64,
    /// Egress packets the shaper gave a later departure time.
    pub delayed: u64,
    /// Egress packets sent with congestion notification to TCP (delay, or debt when
    /// policing, above the mark).
    pub marked: u64,
    /// Egress packets dropped because their departure time (debt) was beyond the horizon.
    pub dropped: u64,
    /// Ingress packets dropped by the policer (over the `--ingress` rate).
    pub rx_dropped: u64,
}

const _: () = assert!(core::mem::size_of::<Traffic>() == 64);
const _: () = assert!(core::mem::align_of::<Traffic>() == 8);

impl Traffic {
    /// Adds another CPU's copy (saturating: a counter never wraps to a smaller value).
    #[must_use]
    pub const fn merged(self, other: Self) -> Self {
        Self {
            tx_bytes: self.tx_bytes.saturating_add(other.tx_bytes),
            tx_packets: self.tx_packets.saturating_add(other.tx_packets),
            rx_bytes: self.rx_bytes.saturating_add(other.rx_bytes),
            rx_packets: self.rx_packets.saturating_add(other.rx_packets),
            delayed: self.delayed.saturating_add(other.delayed),
            marked: self.marked.saturating_add(other.marked),
            dropped: self.dropped.saturating_add(other.dropped),
            rx_dropped: self.rx_dropped.saturating_add(other.rx_dropped),
        }
    }
}

/// Name of the hash map of [`ShaperConfig`] keyed by cgroup id: a cgroup with an entry is
/// shaped. Userspace writes it; the programs only read it.
pub const SHAPER_MAP: &str = "REIN_SHAPER";
/// Name of the hash map of [`ShaperState`] keyed by cgroup id (the programs' own state).
pub const SHAPER_STATE_MAP: &str = "REIN_SHAPER_STATE";
/// Capacity of the shaper maps: the most shaped cgroups.
pub const SHAPER_MAP_MAX_ENTRIES: u32 = 16_384;

/// One cgroup's egress limit, in the units the datapath computes with.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShaperConfig {
    /// Rate in bytes per second (of `skb->len`, the IP packet). Never 0.
    pub rate_bytes_per_sec: u64,
    /// Credit a silent cgroup may accumulate, in nanoseconds of sending at `rate`.
    pub burst_ns: u64,
    /// Delay above which a TCP sender gets congestion notification, in nanoseconds.
    pub mark_ns: u64,
    /// Delay at which a packet is dropped instead of queued, in nanoseconds.
    pub horizon_ns: u64,
    /// `skb->priority` for the cgroup's packets, used when `flags` has [`SET_PRIORITY`].
    pub skb_priority: u32,
    /// Bit set of [`SET_PRIORITY`] and [`POLICE`] (other bits reserved, zero).
    pub flags: u32,
}

/// [`ShaperConfig::flags`]: write `skb_priority` into each egress packet.
pub const SET_PRIORITY: u32 = 1;

/// [`ShaperConfig::flags`]: police instead of pacing, for nodes where no `fq` qdisc would
/// honour departure times. The same clock runs ahead of real time by the cgroup's debt;
/// packets leave at once, with congestion notification to TCP once the debt passes
/// `mark_ns` (at least 2 packet costs), and are dropped once it passes `horizon_ns` (at
/// least 8 packet costs, so a 64 KB GSO packet at a low rate does not collapse TCP).
pub const POLICE: u32 = 2;

/// [`ShaperConfig::flags`]: one FIFO per cgroup, as Cilium's bandwidth manager has it: every
/// packet departs behind the cgroup's backlog, sparse flows included. Without it a flow that
/// has sent little recently leaves at once (see [`FLOW_MAP`]). For comparison and for
/// operators who want the old order (`rein agent --egress-flows fifo`).
pub const FIFO: u32 = 4;

const _: () = assert!(core::mem::size_of::<ShaperConfig>() == 40);

/// Name of the LRU hash map of [`FlowState`] keyed by socket cookie: the shaper's view of
/// each flow, to tell a sparse flow (a ping, a DNS query, a request on an idle connection)
/// from the bulk of its cgroup.
pub const FLOW_MAP: &str = "REIN_FLOWS";
/// Name of the LRU hash map of [`FlowPeak`] keyed by cgroup id: what the shaper keeps per
/// cgroup about its flows together.
pub const FLOW_PEAK_MAP: &str = "REIN_FLOW_PEAK";
/// Capacity of [`FLOW_MAP`]: flows beyond it evict the least recently sending, which then
/// starts again with a full allowance (its bytes are still charged to its cgroup).
pub const FLOW_MAP_MAX_ENTRIES: u32 = 32_768;

/// How much of its cgroup's rate a flow may use and still count as sparse: a flow's
/// allowance refills at `rate / SPARSE_SHARE`. fq_codel's sparse flows are those sending
/// less than a quantum per round; here a bulk TCP stream among fewer than this many of its
/// container gets a share above the refill rate, so it never looks sparse.
pub const SPARSE_SHARE: u64 = 32;
/// How much of its rate a cgroup's sparse packets may use together: their joint allowance
/// refills at `rate / SPARSE_TOTAL_SHARE` and holds one burst, so many sockets each sending
/// a little cannot leave at once beyond the cgroup's burst; past it they are paced as bulk.
pub const SPARSE_TOTAL_SHARE: u64 = 4;
/// Smallest allowance a sparse flow gets at once, in bytes (two full Ethernet frames): at a
/// low rate or with no burst, a request of a few segments still departs at once.
pub const SPARSE_MIN_BYTES: u64 = 3028;

/// One flow's clocks ([`FLOW_MAP`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowState {
    /// The time, in ns of the flow's own allowance at `rate / SPARSE_SHARE`, up to which its
    /// earlier packets used it.
    pub t_sparse_ns: u64,
    /// The time up to which the flow's packets used its cgroup's link at the cgroup's rate,
    /// floored at the start of a recent window: its share of that window.
    pub t_share_ns: u64,
    /// The departure time of the flow's latest packet: a packet whose flow still has one
    /// queued is never sparse (it would overtake it, and TCP would see reordering).
    pub t_depart_ns: u64,
}

/// What the shaper keeps about the flows of one cgroup together ([`FLOW_PEAK_MAP`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowPeak {
    /// The largest share of the cgroup's link time (of 1024) any of its flows had lately...
    pub share: u64,
    /// ...seen at this time.
    pub seen_ns: u64,
    /// The joint allowance of its sparse packets (see [`SPARSE_TOTAL_SHARE`]), as a clock.
    pub t_sparse_ns: u64,
}

/// Name of the hash map of [`PolicerConfig`] keyed by cgroup id: a cgroup with an entry has
/// its ingress policed.
pub const POLICER_MAP: &str = "REIN_POLICER";
/// Name of the hash map of [`ShaperState`] keyed by cgroup id for the ingress policer.
pub const POLICER_STATE_MAP: &str = "REIN_POLICER_STATE";

/// One cgroup's ingress limit. Received packets that arrive faster than `rate` once the
/// bucket is spent are dropped (TCP senders slow down on the loss).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PolicerConfig {
    /// Rate in bytes per second (of `skb->len`). Never 0.
    pub rate_bytes_per_sec: u64,
    /// Bucket depth in nanoseconds at `rate`.
    pub bucket_ns: u64,
}

const _: () = assert!(core::mem::size_of::<PolicerConfig>() == 16);

/// Name of the per-CPU hash map of [`DelayHistogram`] keyed by cgroup id.
pub const DELAY_MAP: &str = "REIN_DELAY";
/// Buckets of [`DelayHistogram`].
pub const DELAY_BUCKETS: usize = 16;

/// The delay the shaper imposed on a cgroup's egress packets (time from now to the departure
/// time it set), one copy per CPU. Bucket `i` counts delays below `2^i` microseconds (and at
/// least `2^(i-1)`); the last bucket also takes everything longer. Packets the shaper did not
/// delay are not counted.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DelayHistogram {
    pub buckets: [u64; DELAY_BUCKETS],
    /// Sum of the delays, in nanoseconds.
    pub sum_ns: u64,
}

const _: () = assert!(core::mem::size_of::<DelayHistogram>() == 8 * (DELAY_BUCKETS + 1));

impl DelayHistogram {
    /// The bucket of a delay: the number of bits of `delay_ns / 1000`, capped at the last.
    /// Written as a fixed sequence of comparisons (the BPF target has no count-leading-zeros).
    #[inline(always)]
    pub fn bucket(delay_ns: u64) -> usize {
        let us = delay_ns / 1000;
        let mut b = 0;
        let mut step = 32;
        // Binary search for the bit length of `us` (0..=64), five fixed steps.
        while step > 0 {
            if us >> (b + step) != 0 {
                b += step;
            }
            step /= 2;
        }
        let bits = if us == 0 { 0 } else { b + 1 };
        if bits >= DELAY_BUCKETS {
            DELAY_BUCKETS - 1
        } else {
            bits
        }
    }

    /// Counts one sample of `ns` nanoseconds.
    #[inline(always)]
    pub fn record(&mut self, ns: u64) {
        if let Some(slot) = self.buckets.get_mut(Self::bucket(ns)) {
            *slot += 1;
        }
        self.sum_ns += ns;
    }

    #[must_use]
    pub fn merged(mut self, other: &Self) -> Self {
        for (a, b) in self.buckets.iter_mut().zip(other.buckets.iter()) {
            *a = a.saturating_add(*b);
        }
        self.sum_ns = self.sum_ns.saturating_add(other.sum_ns);
        self
    }
}

/// Name of the per-CPU hash map of run-queue latency histograms ([`DelayHistogram`] layout:
/// time from wake-up, or preemption, to running) keyed by cgroup id.
pub const RUNQ_MAP: &str = "REIN_RUNQ";
/// Name of the one-entry array map of [`KernelOffsets`].
pub const OFFSETS_MAP: &str = "REIN_OFFSETS";

/// Name of the hash map of the cgroups rein manages (its containers and groups, and the
/// cgroups runtimes registered), keyed by cgroup id; the value is unused. Every decision and
/// counter of the programs applies to a packet's or task's managed ancestors (its
/// [`Chain`]), and map entries exist only for these cgroups.
pub const MANAGED_MAP: &str = "REIN_MANAGED";
/// Most managed cgroups.
pub const MANAGED_MAP_MAX_ENTRIES: u32 = 16_384;

/// Name of the one-entry array map holding the generation of [`MANAGED_MAP`]: the agent
/// adds one after every change of the managed set, which invalidates every cached [`Chain`].
pub const GENERATION_MAP: &str = "REIN_GENERATION";

/// Name of the LRU hash map from a cgroup id (a packet's or task's own cgroup, managed or
/// not) to its [`Chain`], so that the walk up the hierarchy happens once per cgroup and
/// generation, not once per packet. LRU: cgroups come and go unmanaged.
pub const CHAIN_MAP: &str = "REIN_CHAIN";
/// Cgroups whose chain is cached at once.
pub const CHAIN_MAP_MAX_ENTRIES: u32 = 16_384;

/// Most managed cgroups above one packet or task that the programs charge: a container in
/// up to three nested groups (or a pod). The agent refuses deeper nesting.
pub const MAX_CHAIN: usize = 4;
/// Levels the programs walk from the cgroup2 root (level 0) down: every managed cgroup must
/// sit above this level (the agent refuses a managed root or a registered cgroup deeper);
/// cgroups below a container may go deeper, they are not looked at.
pub const MAX_LEVEL: u32 = 16;

/// The managed cgroups a cgroup belongs to, nearest first: `ids[0]` is the nearest managed
/// ancestor (or the cgroup itself), `ids[len - 1]` the topmost. Empty (`len == 0`) for a
/// cgroup outside every managed one.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Chain {
    /// The [`GENERATION_MAP`] value this chain was computed under.
    pub generation: u64,
    pub ids: [u64; MAX_CHAIN],
    pub len: u32,
    pub _pad: u32,
}

const _: () = assert!(core::mem::size_of::<Chain>() == 8 + 8 * MAX_CHAIN + 8);

/// Byte offsets of the kernel struct members the scheduler program reads with
/// `bpf_probe_read_kernel`, resolved by the agent from the running kernel's BTF (Rust eBPF
/// has no CO-RE relocations). `valid == 0` until the agent wrote them: the program does
/// nothing before.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelOffsets {
    /// `task_struct.sched_info.pcount` (unsigned long, runs so far), from the task; the
    /// agent checks that `sched_info.run_delay` (u64, nanoseconds waited runnable) follows
    /// it, so the program reads both at once.
    pub task_sched_pcount: u32,
    pub valid: u32,
}

const _: () = assert!(core::mem::size_of::<KernelOffsets>() == 8);

/// Name of the LRU hash map from socket cookie to [`SockInfo`]: the egress program learns
/// each socket's cgroup from its packets, so the sock_ops program (which has no cgroup
/// helper) can attribute TCP events.
pub const SOCK_MAP: &str = "REIN_SOCK";
/// Sockets remembered at once (least recently used are forgotten first).
pub const SOCK_MAP_MAX_ENTRIES: u32 = 65_536;
/// Name of the per-CPU hash map of [`TcpStats`] keyed by cgroup id.
pub const TCP_MAP: &str = "REIN_TCP";

/// What rein knows of one socket.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockInfo {
    /// The managed cgroups its TCP events count for.
    pub chain: Chain,
    /// 1 once the socket was counted as a connection.
    pub counted: u64,
}

const _: () = assert!(core::mem::size_of::<SockInfo>() == core::mem::size_of::<Chain>() + 8);

/// TCP as the container's sockets saw it, from the sock_ops program.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpStats {
    /// Smoothed round-trip time at each RTT sample (log2 microsecond buckets, sum in ns).
    pub rtt: DelayHistogram,
    /// Segments retransmitted (successfully handed to the IP layer).
    pub retransmitted_segments: u64,
    /// Connections that took their first RTT sample (carried data both ways).
    pub connections: u64,
}

const _: () = assert!(core::mem::size_of::<TcpStats>() == 8 * (DELAY_BUCKETS + 3));

impl TcpStats {
    #[must_use]
    pub fn merged(self, other: &Self) -> Self {
        Self {
            rtt: self.rtt.merged(&other.rtt),
            retransmitted_segments: self
                .retransmitted_segments
                .saturating_add(other.retransmitted_segments),
            connections: self.connections.saturating_add(other.connections),
        }
    }
}

/// The pacing clock of one cgroup.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShaperState {
    /// Departure time (CLOCK_MONOTONIC ns) given to the cgroup's latest packet.
    pub t_last_ns: u64,
}

const _: () = assert!(core::mem::size_of::<ShaperState>() == 8);

// SAFETY: `Traffic` is `#[repr(C)]`, made only of `u64`s, has no padding (size asserted above),
// so every bit pattern is a valid value.
#[cfg(feature = "user")]
unsafe impl aya::Pod for Traffic {}
// SAFETY: `#[repr(C)]` integers with the padding spelled out as a field: any bits are valid.
#[cfg(feature = "user")]
unsafe impl aya::Pod for ShaperConfig {}
// SAFETY: one `u64`.
#[cfg(feature = "user")]
unsafe impl aya::Pod for ShaperState {}
// SAFETY: `#[repr(C)]`, three `u64`s, no padding: any bits are valid.
#[cfg(feature = "user")]
unsafe impl aya::Pod for FlowPeak {}
// SAFETY: `#[repr(C)]`, a `Chain` and a `u64`, no padding (size asserted).
#[cfg(feature = "user")]
unsafe impl aya::Pod for SockInfo {}
// SAFETY: `#[repr(C)]`, only `u64`s (size asserted), so any bits are valid.
#[cfg(feature = "user")]
unsafe impl aya::Pod for TcpStats {}
// SAFETY: `#[repr(C)]`, ten `u32`s (padding spelled out), so any bits are valid.
#[cfg(feature = "user")]
unsafe impl aya::Pod for KernelOffsets {}
// SAFETY: `#[repr(C)]`, `u64`s and two `u32`s (padding spelled out), so any bits are valid.
#[cfg(feature = "user")]
unsafe impl aya::Pod for Chain {}
// SAFETY: `#[repr(C)]`, two `u64`s, no padding.
#[cfg(feature = "user")]
unsafe impl aya::Pod for PolicerConfig {}
// SAFETY: `#[repr(C)]`, only `u64`s, no padding (size asserted).
#[cfg(feature = "user")]
unsafe impl aya::Pod for DelayHistogram {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_adds_fieldwise_and_saturates() {
        let a = Traffic {
            tx_bytes: 1,
            rx_packets: u64::MAX,
            delayed: 2,
            ..Traffic::default()
        };
        let b = Traffic {
            tx_bytes: 10,
            rx_packets: 1,
            marked: 3,
            dropped: 4,
            ..Traffic::default()
        };
        let want = Traffic {
            tx_bytes: 11,
            rx_packets: u64::MAX,
            delayed: 2,
            marked: 3,
            dropped: 4,
            ..Traffic::default()
        };
        assert_eq!(a.merged(b), want);
    }

    #[test]
    fn delay_buckets_are_bit_lengths_of_microseconds() {
        let b = DelayHistogram::bucket;
        assert_eq!(b(0), 0);
        assert_eq!(b(999), 0);
        assert_eq!(b(1_000), 1);
        assert_eq!(b(1_999), 1);
        assert_eq!(b(2_000), 2);
        assert_eq!(b(3_999), 2);
        assert_eq!(b(4_000), 3);
        assert_eq!(b(1_000_000), 10); // 1 ms: 1000 us has 10 bits
        assert_eq!(b(16_383_000), 14);
        assert_eq!(b(16_384_000), 15);
        assert_eq!(b(u64::MAX), 15);
        for us in [1u64, 7, 100, 4095, 20_000] {
            let i = b(us * 1000);
            assert!(
                us < 1 << i && (i == 0 || us >= 1 << (i - 1)),
                "{us} us in bucket {i}"
            );
        }
    }
}
