//! TCP per container from a sock_ops program on rein's root cgroup: round-trip time samples,
//! retransmitted segments and connections.
//!
//! sock_ops programs run in softirq context too and have no helper for the socket's cgroup,
//! so the egress program remembers each socket's cgroup by its cookie (`REIN_SOCK`) when the
//! socket sends, and the callbacks here look it up.

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
use controller_common::{SOCK_MAP_MAX_ENTRIES, SockInfo, TcpStats, WATCH_MAP_MAX_ENTRIES};

#[map]
static REIN_SOCK: LruHashMap<u64, SockInfo> = LruHashMap::with_max_entries(SOCK_MAP_MAX_ENTRIES, 0);

#[map]
static REIN_TCP: PerCpuHashMap<u64, TcpStats> =
    PerCpuHashMap::with_max_entries(WATCH_MAP_MAX_ENTRIES, 0);

/// Called by the egress program for every packet it lets out: remembers the socket's cgroup
/// (one lookup when known already).
#[inline(always)]
pub fn remember(ctx: &SkBuffContext, cgroup_id: u64) {
    // SAFETY: the helper reads the socket of this program's skb (0 without one).
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    // SAFETY: a lookup; the value is not used.
    if cookie == 0 || unsafe { REIN_SOCK.get(&cookie) }.is_some() {
        return;
    }
    let info = SockInfo {
        cgroup_id,
        counted: 0,
    };
    let _ = REIN_SOCK.insert(&cookie, &info, 0);
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
    let id = info.cgroup_id;
    if op == BPF_SOCK_OPS_RETRANS_CB {
        // args: first sequence number, segments, tcp_transmit_skb's result (0: sent).
        if ctx.arg(2) == 0 {
            let segs = u64::from(ctx.arg(1));
            crate::percpu::update(&REIN_TCP, id, |s| s.retransmitted_segments += segs);
        }
        return 1;
    }
    // SAFETY: reading this callback's context; srtt_us holds 8 times the smoothed RTT.
    let srtt_us = u64::from(unsafe { (*ctx.as_ptr().cast::<bpf_sock_ops>()).srtt_us }) >> 3;
    let rtt_ns = srtt_us * 1000;
    let first = info.counted == 0;
    info.counted = 1;
    crate::percpu::update(&REIN_TCP, id, |s| {
        s.rtt.record(rtt_ns);
        if first {
            s.connections += 1;
        }
    });
    1
}
