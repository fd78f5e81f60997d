//! TCP per container from a sock_ops program on rein's root cgroup: round-trip time samples,
//! retransmitted segments and connections.
//!
//! sock_ops programs run in softirq context too and have no helper for the socket's cgroup,
//! so the egress program remembers each socket's chain of managed cgroups by its cookie
//! (`REIN_SOCK`) when the socket sends, and the callbacks here count for every cgroup of it.

use aya_ebpf::{
    EbpfContext as _,
    bindings::{
        BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB, BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB,
        BPF_SOCK_OPS_RETRANS_CB, BPF_SOCK_OPS_RETRANS_CB_FLAG, BPF_SOCK_OPS_RTT_CB,
        BPF_SOCK_OPS_RTT_CB_FLAG, bpf_sock_ops,
    },
    helpers::bpf_get_socket_cookie,
    macros::map,
    maps::{LruHashMap, PerCpuHashMap},
    programs::{SkBuffContext, SockOpsContext},
};
use controller_common::{
    Chain, MANAGED_MAP_MAX_ENTRIES, MAX_CHAIN, SOCK_MAP_MAX_ENTRIES, SockInfo, TcpStats,
};

#[map]
static REIN_SOCK: LruHashMap<u64, SockInfo> = LruHashMap::with_max_entries(SOCK_MAP_MAX_ENTRIES, 0);

#[map]
static REIN_TCP: PerCpuHashMap<u64, TcpStats> =
    PerCpuHashMap::with_max_entries(MANAGED_MAP_MAX_ENTRIES, 0);

/// Called by the egress program for every packet it lets out: remembers the socket's chain
/// (one lookup when known already under this generation of the managed set).
#[inline(always)]
pub fn remember(ctx: &SkBuffContext, chain: &Chain) {
    // SAFETY: the helper reads the socket of this program's skb (0 without one).
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    if cookie == 0 {
        return;
    }
    if let Some(info) = REIN_SOCK.get_ptr_mut(&cookie) {
        // SAFETY: valid pointer into the map value for this program run.
        let info = unsafe { &mut *info };
        if info.chain.generation != chain.generation {
            info.chain = *chain;
        }
        return;
    }
    let info = SockInfo {
        chain: *chain,
        counted: 0,
    };
    let _ = REIN_SOCK.insert(&cookie, &info, 0);
}

/// Applies `f` to the TCP statistics of every cgroup of `chain`.
#[inline(always)]
fn for_chain(chain: &Chain, f: impl Fn(&mut TcpStats)) {
    let mut i = 0;
    while i < MAX_CHAIN {
        if i < chain.len as usize {
            crate::percpu::update(&REIN_TCP, chain.ids[i], &f);
        }
        i += 1;
    }
}

pub fn sock_ops(ctx: &SockOpsContext) -> u32 {
    let op = ctx.op();
    if op == BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB || op == BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB {
        // Ask for the callbacks below on this connection.
        let flags = ctx.cb_flags() | BPF_SOCK_OPS_RTT_CB_FLAG | BPF_SOCK_OPS_RETRANS_CB_FLAG;
        let _ = ctx.set_cb_flags(flags as i32);
        return 1;
    }
    if op != BPF_SOCK_OPS_RTT_CB && op != BPF_SOCK_OPS_RETRANS_CB {
        return 1;
    }
    // SAFETY: the helper reads this callback's socket.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let Some(info) = REIN_SOCK.get_ptr_mut(&cookie) else {
        return 1;
    };
    // SAFETY: valid pointer into the map value for this program run.
    let info = unsafe { &mut *info };
    let chain = info.chain;
    // A chain from before the managed set changed may name a cgroup rein has forgotten:
    // counting into it would make its entries again. The socket's next packet renews it.
    if chain.generation != crate::chain::generation() {
        return 1;
    }
    if op == BPF_SOCK_OPS_RETRANS_CB {
        // args: first sequence number, segments, tcp_transmit_skb's result (0: sent).
        if ctx.arg(2) == 0 {
            let segs = u64::from(ctx.arg(1));
            for_chain(&chain, |s| s.retransmitted_segments += segs);
        }
        return 1;
    }
    // SAFETY: reading this callback's context; srtt_us holds 8 times the smoothed RTT.
    let srtt_us = u64::from(unsafe { (*ctx.as_ptr().cast::<bpf_sock_ops>()).srtt_us }) >> 3;
    let rtt_ns = srtt_us * 1000;
    let first = info.counted == 0;
    info.counted = 1;
    let bucket = crate::percpu::opaque(controller_common::DelayHistogram::bucket(rtt_ns) as u64);
    for_chain(&chain, |s| {
        crate::percpu::record(&mut s.rtt, bucket, rtt_ns);
        if first {
            s.connections += 1;
        }
    });
    1
}
