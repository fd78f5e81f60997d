//! These load real programs into the running kernel, so they need root (or CAP_BPF and
//! CAP_NET_ADMIN). They attach nothing.
use std::sync::{Arc, Mutex};

use super::{test_run::test_frame, *};

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<String>>>);

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }
    fn log(&self, record: &log::Record<'_>) {
        self.0.lock().unwrap().push(record.args().to_string());
    }
    fn flush(&self) {}
}

/// The agent pins maps by name: a map renamed in the eBPF crate and not here would be
/// created unpinned at load, its contents lost at every restart, and the programs of an
/// adopted load and of a new one would no longer meet in it.
#[test]
fn every_map_of_the_programs_is_pinned_by_its_name() {
    let object = aya_obj::Object::parse(OBJECT).unwrap();
    for name in PINNED_MAPS {
        assert!(
            object.maps.contains_key(name),
            "{name} is not a map of the eBPF object (it has {:?})",
            object.maps.keys().collect::<Vec<_>>()
        );
    }
    // aya-log's ring and the programs' read-only data are per load, by design.
    let unpinned: Vec<&String> = object
        .maps
        .keys()
        .filter(|m| !PINNED_MAPS.contains(&m.as_str()))
        .filter(|m| !m.starts_with("AYA_") && !m.starts_with('.'))
        .collect();
    assert!(
        unpinned.is_empty(),
        "maps the agent does not pin: {unpinned:?}"
    );
}

#[test]
fn programs_load_count_and_log_on_this_kernel() {
    let capture = Capture::default();
    let mut counting = Datapath::load_with_logger(Box::new(capture.clone())).unwrap();
    let result = counting.self_test(1000).unwrap();
    assert_eq!(result.packets, 1000);
    // A second run adds to the same entry instead of creating a new one.
    counting.self_test(10).unwrap();
    let traffic = counting.traffic().unwrap();
    assert_eq!(traffic.len(), 1, "one cgroup id expected, got {traffic:?}");
    assert_eq!(traffic[0].1.tx_packets, 1010);
    assert_eq!(traffic[0].1.rx_bytes, 1010 * 1500);
    let logs = capture.0.lock().unwrap();
    assert!(
        logs.iter().any(|l| l.starts_with("rein: cgroup ")),
        "a cgroup's first packet is logged through aya-log; got {logs:?}"
    );
    assert_eq!(counting.health().unwrap(), Health::default());
}

/// Programs loaded on private maps after one self-test packet, and the cgroup id the
/// packets of this process are counted for (the one a test shapes).
fn counted_datapath() -> (Datapath, u64) {
    let mut dp = Datapath::load_with_logger(Box::new(Capture::default())).unwrap();
    dp.self_test(1).unwrap();
    let id = dp.traffic().unwrap()[0].0;
    (dp, id)
}

/// A limit of 150 kB/s without burst (a 1500-byte packet costs 10 ms) with this mark and
/// horizon in ms, `skb->priority` and flags.
fn slow(mark_ms: u64, horizon_ms: u64, skb_priority: u32, flags: u32) -> ShaperConfig {
    ShaperConfig {
        rate_bytes_per_sec: 150_000,
        burst_ns: 0,
        mark_ns: mark_ms * 1_000_000,
        horizon_ns: horizon_ms * 1_000_000,
        skb_priority,
        flags,
    }
}

/// Offsets in `struct __sk_buff` (include/uapi/linux/bpf.h), stable UAPI.
const SKB_PRIORITY: usize = 32;
const SKB_TSTAMP: usize = 152;
const SKB_SIZE: usize = 192;

/// Runs the egress program once; returns (verdict, skb->tstamp, skb->priority) after it.
fn run_egress(dp: &mut Datapath) -> (u32, u64, u32) {
    let frame = test_frame();
    let mut ctx = [0u8; SKB_SIZE];
    let opts = TestRunOptions {
        data_in: Some(&frame),
        ctx_out: Some(&mut ctx),
        ..TestRunOptions::new()
    };
    let r = dp
        .program(PROG_COUNT_EGRESS)
        .unwrap()
        .test_run(opts)
        .unwrap();
    let u64_at = |o: usize| u64::from_ne_bytes(ctx[o..o + 8].try_into().unwrap());
    let u32_at = |o: usize| u32::from_ne_bytes(ctx[o..o + 4].try_into().unwrap());
    (r.return_value, u64_at(SKB_TSTAMP), u32_at(SKB_PRIORITY))
}

/// The shaper's decisions on this kernel, packet by packet. At 150 kB/s a 1500-byte
/// packet costs 10 ms, so back-to-back packets wait 10, 20, 30... ms behind the first
/// (a hair less, as time passes between runs): delayed below the 20 ms mark, marked up to
/// the 50 ms horizon, dropped beyond it. One FIFO (each test run's packet comes from a new
/// socket, which flow isolation would let go at once: see the test after this one).
#[test]
fn shaper_delays_then_marks_then_drops_by_departure_time() {
    let (mut dp, id) = counted_datapath();
    let ms = 1_000_000;
    let cfg = slow(
        20,
        50,
        6,
        controller_common::SET_PRIORITY | controller_common::FIFO,
    );
    dp.set_shaping(id, cfg).unwrap();
    assert_eq!(dp.shaping(id).unwrap(), Some(cfg));
    let runs: Vec<(u32, u64, u32)> = (0..8).map(|_| run_egress(&mut dp)).collect();
    let verdicts: Vec<u32> = runs.iter().map(|r| r.0).collect();
    // pass (clock starts); waits of ~10 and ~20 ms delayed; ~30, 40, 50 marked; then dropped.
    assert_eq!(verdicts, vec![1, 1, 1, 3, 3, 3, 2, 2], "{runs:?}");
    assert_eq!(
        runs[0].1, 0,
        "the first packet keeps its own departure time"
    );
    let gaps: Vec<u64> = runs[1..5].windows(2).map(|w| w[1].1 - w[0].1).collect();
    assert_eq!(
        gaps,
        vec![10 * ms; 3],
        "departures are one packet cost apart: {runs:?}"
    );
    assert!(
        runs.iter().all(|r| r.2 == 6),
        "skb->priority not set: {runs:?}"
    );
    let t = dp.traffic().unwrap()[0].1;
    assert_eq!((t.delayed, t.marked, t.dropped), (5, 3, 2), "{t:?}");
    // Every delayed packet is in the histogram: waits of ~10-50 ms plus its own 10 ms cost
    // make delays of 20-60 ms, all in the last bucket (>= 16.4 ms).
    let h = dp.delays_of(id).unwrap().unwrap();
    assert_eq!(h.buckets.iter().sum::<u64>(), t.delayed, "{h:?}");
    assert_eq!(
        h.buckets[15], 5,
        "delays of 20-60 ms belong in the last bucket: {h:?}"
    );
    assert!(
        (100_000_000..200_000_000).contains(&h.sum_ns),
        "sum {} ns",
        h.sum_ns
    );
    // Removing the limit returns the cgroup to untouched packets at once.
    dp.clear_shaping(id).unwrap();
    assert_eq!(dp.shaping(id).unwrap(), None);
    assert_eq!(run_egress(&mut dp), (1, 0, 0));
}

/// Police mode on this kernel: the same clock, but nothing is delayed. Packets leave at
/// once; once the debt passes the mark TCP is notified, beyond the horizon packets are
/// dropped. Both thresholds are at least 2 and 8 packet costs (here 20 and 80 ms, so the
/// configured 50 ms horizon is raised). No departure time is written, nothing recorded.
#[test]
fn police_mode_notifies_then_drops_without_delaying() {
    let (mut dp, id) = counted_datapath();
    dp.set_shaping(
        id,
        slow(
            20,
            50,
            0,
            controller_common::POLICE | controller_common::FIFO,
        ),
    )
    .unwrap();
    let runs: Vec<(u32, u64, u32)> = (0..12).map(|_| run_egress(&mut dp)).collect();
    let verdicts: Vec<u32> = runs.iter().map(|r| r.0).collect();
    // Debts of ~10 and ~20 ms pass; ~30 to ~80 ms are notified; beyond 80 ms dropped.
    assert_eq!(
        verdicts,
        vec![1, 1, 1, 3, 3, 3, 3, 3, 3, 2, 2, 2],
        "{runs:?}"
    );
    assert!(runs.iter().all(|r| r.1 == 0), "no departure time: {runs:?}");
    let t = dp.traffic().unwrap()[0].1;
    assert_eq!((t.delayed, t.marked, t.dropped), (0, 6, 3), "{t:?}");
    assert_eq!(dp.delays_of(id).unwrap(), None, "nothing was delayed");
}

/// Flow isolation on this kernel: a packet of a flow that sent nothing yet (every test run
/// comes from a new socket) departs at once behind a backlog, without a departure time or
/// a mark, and is charged to the clock all the same: the next packet queued behind the
/// backlog waits its cost longer.
#[test]
fn a_sparse_flow_departs_at_once_and_is_charged() {
    let (mut dp, id) = counted_datapath();
    let ms = 1_000_000;
    let fifo = slow(100, 500, 0, controller_common::FIFO);
    let isolated = ShaperConfig { flags: 0, ..fifo };
    dp.set_shaping(id, fifo).unwrap();
    let first = run_egress(&mut dp);
    let queued = run_egress(&mut dp);
    dp.set_shaping(id, isolated).unwrap();
    let sparse = run_egress(&mut dp);
    dp.set_shaping(id, fifo).unwrap();
    let behind = run_egress(&mut dp);
    assert_eq!(
        (first.0, first.1),
        (1, 0),
        "the clock's first packet passes"
    );
    assert!(queued.1 > 0, "a backlog: {queued:?}");
    assert_eq!(
        (sparse.0, sparse.1),
        (1, 0),
        "the sparse packet leaves now, unmarked"
    );
    assert_eq!(
        behind.1 - queued.1,
        20 * ms,
        "the next queued packet waits for the sparse one's 10 ms too"
    );
    let t = dp.traffic().unwrap()[0].1;
    // Five sent: the self-test's packet and these four.
    assert_eq!((t.tx_packets, t.delayed, t.marked), (5, 2, 0), "{t:?}");
}

/// Beyond a container's horizon its bulk is dropped, but a sparse flow's packet still goes
/// up to twice the horizon (and is charged); beyond that it is dropped too. At 150 kB/s each
/// packet costs 10 ms; the horizon is 11 ms.
#[test]
fn a_sparse_flow_passes_up_to_twice_the_horizon() {
    let (mut dp, id) = counted_datapath();
    let fifo = slow(500, 11, 0, controller_common::FIFO);
    dp.set_shaping(id, fifo).unwrap();
    // Waits of 0 and ~10 ms queue; ~20 ms is beyond the horizon.
    let bulk: Vec<u32> = (0..3).map(|_| run_egress(&mut dp).0).collect();
    assert_eq!(bulk, vec![1, 1, 2]);
    dp.set_shaping(id, ShaperConfig { flags: 0, ..fifo })
        .unwrap();
    // Sparse (each run is a new socket): a wait of ~20 ms passes, now, and is charged; then
    // ~30 ms is beyond twice the horizon.
    let sparse: Vec<(u32, u64, u32)> = (0..2).map(|_| run_egress(&mut dp)).collect();
    assert_eq!((sparse[0].0, sparse[0].1), (1, 0), "{sparse:?}");
    assert_eq!(sparse[1].0, 2, "{sparse:?}");
    let t = dp.traffic().unwrap()[0].1;
    assert_eq!(t.dropped, 2, "{t:?}");
}

/// Sparse packets of one container together leave at once only within a joint allowance
/// (a quarter of the rate, one burst deep): beyond it, new sockets each sending a little are
/// paced like bulk. At 150 kB/s with no burst the allowance holds two frames' worth (20 ms)
/// at four times the cost: two 1500-byte packets of new sockets go now, the third is paced
/// (a wait of ~20 ms, under the 25 ms horizon), and the fourth, no longer sparse and beyond
/// the horizon, is dropped without being charged: the next packet queued waits one cost
/// behind the third, not two.
#[test]
fn many_small_senders_share_one_sparse_allowance() {
    let (mut dp, id) = counted_datapath();
    dp.set_shaping(id, slow(500, 25, 0, 0)).unwrap();
    let runs: Vec<(u32, u64, u32)> = (0..4).map(|_| run_egress(&mut dp)).collect();
    assert_eq!((runs[0].1, runs[1].1), (0, 0), "two leave now: {runs:?}");
    assert!(
        runs[2].0 == 1 && runs[2].1 > 0,
        "the third is paced: {runs:?}"
    );
    assert_eq!(runs[3].0, 2, "the fourth is dropped: {runs:?}");
    dp.set_shaping(id, slow(500, 900, 0, controller_common::FIFO))
        .unwrap();
    let behind = run_egress(&mut dp);
    assert_eq!(
        behind.1 - runs[2].1,
        10_000_000,
        "the dropped packet was not charged: {runs:?} {behind:?}"
    );
}

/// A packet whose tail call to the next egress stage fails passes (rein fails open rather
/// than cut a node off) and is counted as such, so the metric shows it.
#[test]
fn a_failed_tail_call_passes_the_packet_and_counts_the_failure() {
    let mut dp = Datapath::load_with_logger(Box::new(Capture::default())).unwrap();
    dp.self_test(1).unwrap();
    let before = dp.traffic().unwrap()[0].1.tx_packets;
    let mut stages = aya::maps::ProgramArray::try_from(dp.map_mut(STAGES_MAP).unwrap()).unwrap();
    stages.clear_index(&0).unwrap();
    let (verdict, _, _) = run_egress(&mut dp);
    assert_eq!(verdict, 1, "the packet passes");
    assert_eq!(
        dp.health().unwrap().tail_call_failed,
        1,
        "the failure is counted"
    );
    assert_eq!(
        dp.traffic().unwrap()[0].1.tx_packets,
        before,
        "nothing counted it as sent"
    );
}
