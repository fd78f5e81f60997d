//! The metric families rein exports, one entry each: name, help, type and how a container's
//! samples come from its snapshot. cAdvisor's names where cAdvisor exports the quantity,
//! `rein_` otherwise (base units, `_total` on counters).

use controller_common::DelayHistogram;
use prometheus::proto::MetricType;

use crate::{
    cgroup::DeviceIo,
    limits::{Max, Memory, Pids},
    node::Snapshot,
};

/// A metric family rein exports: name, help, type.
pub struct Family {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: MetricType,
    pub value: Values,
}

/// How a family's samples come from one container.
pub enum Values {
    /// One sample, or none when it has no value (e.g. no CPU quota).
    One(fn(&Sample) -> Option<f64>),
    /// One sample per block device in io.stat, with a `device` label as cAdvisor has it.
    PerDevice(fn(&DeviceIo) -> u64),
}

/// What one container's samples are computed from: the node's one reader.
pub type Sample = Snapshot;

/// Microseconds to seconds.
fn secs(us: u64) -> f64 {
    us as f64 / 1e6
}

pub const FAMILIES: &[Family] = &[
    Family {
        name: "container_cpu_usage_seconds_total",
        help: "Cumulative CPU time consumed, in seconds (cpu.stat usage_usec).",
        kind: MetricType::COUNTER,
        value: Values::One(|s| Some(secs(s.usage.cpu_usage_usec))),
    },
    Family {
        name: "container_cpu_cfs_periods_total",
        help: "Number of elapsed enforcement periods (cpu.stat nr_periods).",
        kind: MetricType::COUNTER,
        value: Values::One(|s| Some(s.usage.cpu_nr_periods as f64)),
    },
    Family {
        name: "container_cpu_cfs_throttled_periods_total",
        help: "Number of throttled periods (cpu.stat nr_throttled).",
        kind: MetricType::COUNTER,
        value: Values::One(|s| Some(s.usage.cpu_nr_throttled as f64)),
    },
    Family {
        name: "container_cpu_cfs_throttled_seconds_total",
        help: "Total time duration the container has been throttled, in seconds.",
        kind: MetricType::COUNTER,
        value: Values::One(|s| Some(secs(s.usage.cpu_throttled_usec))),
    },
    Family {
        name: "container_memory_usage_bytes",
        help: "Current memory usage in bytes, including all memory regardless of when it was accessed (memory.current).",
        kind: MetricType::GAUGE,
        value: Values::One(|s| Some(s.usage.memory_current_bytes as f64)),
    },
    Family {
        name: "container_memory_working_set_bytes",
        help: "Current working set in bytes: usage minus inactive file pages.",
        kind: MetricType::GAUGE,
        value: Values::One(|s| Some(s.usage.memory_working_set_bytes as f64)),
    },
    Family {
        name: "container_memory_rss",
        help: "Size of RSS in bytes: anonymous memory (memory.stat anon).",
        kind: MetricType::GAUGE,
        value: Values::One(|s| Some(s.usage.memory_rss_bytes as f64)),
    },
    Family {
        name: "container_memory_cache",
        help: "Number of bytes of page cache memory (memory.stat file).",
        kind: MetricType::GAUGE,
        value: Values::One(|s| Some(s.usage.memory_cache_bytes as f64)),
    },
    Family {
        name: "container_memory_mapped_file",
        help: "Size of memory mapped files in bytes (memory.stat file_mapped).",
        kind: MetricType::GAUGE,
        value: Values::One(|s| Some(s.usage.memory_mapped_file_bytes as f64)),
    },
    Family {
        name: "container_oom_events_total",
        help: "Count of out of memory kills in the container (memory.events oom_kill).",
        kind: MetricType::COUNTER,
        value: Values::One(|s| Some(s.usage.memory_oom_kills as f64)),
    },
    Family {
        name: "container_fs_reads_bytes_total",
        help: "Cumulative count of bytes read from the block device (io.stat rbytes).",
        kind: MetricType::COUNTER,
        value: Values::PerDevice(|d| d.read_bytes),
    },
    Family {
        name: "container_fs_writes_bytes_total",
        help: "Cumulative count of bytes written to the block device (io.stat wbytes).",
        kind: MetricType::COUNTER,
        value: Values::PerDevice(|d| d.write_bytes),
    },
    Family {
        name: "container_fs_reads_total",
        help: "Cumulative count of reads completed on the block device (io.stat rios).",
        kind: MetricType::COUNTER,
        value: Values::PerDevice(|d| d.reads),
    },
    Family {
        name: "container_fs_writes_total",
        help: "Cumulative count of writes completed on the block device (io.stat wios).",
        kind: MetricType::COUNTER,
        value: Values::PerDevice(|d| d.writes),
    },
    Family {
        name: "container_pressure_cpu_waiting_seconds_total",
        help: "Time at least one task of the container waited for CPU (cpu.pressure some).",
        kind: MetricType::COUNTER,
        value: Values::One(|s| s.usage.pressure.cpu.map(|p| secs(p.some_usec))),
    },
    Family {
        name: "container_pressure_cpu_stalled_seconds_total",
        help: "Time all non-idle tasks of the container waited for CPU at once (cpu.pressure full).",
        kind: MetricType::COUNTER,
        value: Values::One(|s| s.usage.pressure.cpu.and_then(|p| p.full_usec).map(secs)),
    },
    Family {
        name: "container_pressure_memory_waiting_seconds_total",
        help: "Time at least one task of the container stalled on memory (memory.pressure some).",
        kind: MetricType::COUNTER,
        value: Values::One(|s| s.usage.pressure.memory.map(|p| secs(p.some_usec))),
    },
    Family {
        name: "container_pressure_memory_stalled_seconds_total",
        help: "Time all non-idle tasks of the container stalled on memory at once (memory.pressure full).",
        kind: MetricType::COUNTER,
        value: Values::One(|s| s.usage.pressure.memory.and_then(|p| p.full_usec).map(secs)),
    },
    Family {
        name: "container_pressure_io_waiting_seconds_total",
        help: "Time at least one task of the container stalled on IO (io.pressure some).",
        kind: MetricType::COUNTER,
        value: Values::One(|s| s.usage.pressure.io.map(|p| secs(p.some_usec))),
    },
    Family {
        name: "container_pressure_io_stalled_seconds_total",
        help: "Time all non-idle tasks of the container stalled on IO at once (io.pressure full).",
        kind: MetricType::COUNTER,
        value: Values::One(|s| s.usage.pressure.io.and_then(|p| p.full_usec).map(secs)),
    },
    Family {
        name: "rein_tcp_retransmitted_segments_total",
        help: "TCP segments the container's sockets retransmitted (sock_ops RETRANS_CB).",
        kind: MetricType::COUNTER,
        value: Values::One(|s| s.network.tcp.map(|t| t.retransmitted_segments as f64)),
    },
    Family {
        name: "rein_tcp_connections_total",
        help: "TCP connections of the container that took a first round-trip time sample.",
        kind: MetricType::COUNTER,
        value: Values::One(|s| s.network.tcp.map(|t| t.connections as f64)),
    },
    Family {
        name: "container_processes",
        help: "Number of processes running inside the container (cgroup.procs).",
        kind: MetricType::GAUGE,
        value: Values::One(|s| Some(s.usage.processes as f64)),
    },
    Family {
        name: "container_threads",
        help: "Number of threads running inside the container (pids.current).",
        kind: MetricType::GAUGE,
        value: Values::One(|s| Some(s.usage.pids_current as f64)),
    },
    Family {
        name: "rein_pids_limit",
        help: "Most tasks the container may have (pids.max; absent when unlimited).",
        kind: MetricType::GAUGE,
        value: Values::One(|s| match s.limits.pids {
            Some(Pids::Limit(n)) => Some(f64::from(n)),
            _ => None,
        }),
    },
    Family {
        name: "container_spec_cpu_period",
        help: "CPU period of the container's quota, in microseconds (absent when unlimited).",
        kind: MetricType::GAUGE,
        value: Values::One(|s| match s.limits.cpus {
            Some(Max::Value(_)) => Some(100_000.0),
            _ => None,
        }),
    },
    Family {
        name: "rein_memory_high_limit_bytes",
        help: "Memory throttling threshold in bytes (memory.high; absent when unlimited).",
        kind: MetricType::GAUGE,
        value: Values::One(|s| match s.limits.memory_high {
            Some(Memory::Bytes(b)) => Some(b as f64),
            _ => None,
        }),
    },
    Family {
        name: "container_spec_cpu_quota",
        help: "CPU quota of the container, in microseconds per 100 ms period (absent when unlimited).",
        kind: MetricType::GAUGE,
        value: Values::One(|s| match s.limits.cpus {
            Some(Max::Value(q)) => Some(q.quota_us() as f64),
            _ => None,
        }),
    },
    Family {
        name: "container_spec_memory_limit_bytes",
        help: "Memory limit for the container in bytes (memory.max; 0 when unlimited, as cAdvisor).",
        kind: MetricType::GAUGE,
        value: Values::One(|s| match s.limits.memory {
            Some(Memory::Bytes(b)) => Some(b as f64),
            _ => Some(0.0),
        }),
    },
    Family {
        name: "container_network_transmit_bytes_total",
        help: "Bytes sent by the container's sockets (IP packets, counted by eBPF at cgroup egress).",
        kind: MetricType::COUNTER,
        value: Values::One(|s| s.network.traffic.map(|t| t.tx_bytes as f64)),
    },
    Family {
        name: "container_network_receive_bytes_total",
        help: "Bytes received by the container's sockets (IP packets, counted by eBPF at cgroup ingress).",
        kind: MetricType::COUNTER,
        value: Values::One(|s| s.network.traffic.map(|t| t.rx_bytes as f64)),
    },
    Family {
        name: "rein_egress_limit_bytes_per_second",
        help: "Egress bandwidth limit in bytes per second (absent when unlimited).",
        kind: MetricType::GAUGE,
        value: Values::One(|s| s.limits.egress.map(|b| b.bytes_per_second() as f64)),
    },
    Family {
        name: "rein_shaper_delayed_packets_total",
        help: "Egress packets the shaper gave a later departure time.",
        kind: MetricType::COUNTER,
        value: Values::One(|s| s.network.traffic.map(|t| t.delayed as f64)),
    },
    Family {
        name: "rein_shaper_marked_packets_total",
        help: "Egress packets sent with congestion notification to TCP.",
        kind: MetricType::COUNTER,
        value: Values::One(|s| s.network.traffic.map(|t| t.marked as f64)),
    },
    Family {
        name: "rein_shaper_dropped_packets_total",
        help: "Egress packets dropped beyond the shaper's horizon.",
        kind: MetricType::COUNTER,
        value: Values::One(|s| s.network.traffic.map(|t| t.dropped as f64)),
    },
    Family {
        name: "rein_ingress_limit_bytes_per_second",
        help: "Ingress bandwidth limit in bytes per second (absent when unlimited).",
        kind: MetricType::GAUGE,
        value: Values::One(|s| s.limits.ingress.map(|b| b.bytes_per_second() as f64)),
    },
    Family {
        name: "rein_policer_dropped_packets_total",
        help: "Ingress packets dropped by the policer (over the ingress limit).",
        kind: MetricType::COUNTER,
        value: Values::One(|s| s.network.traffic.map(|t| t.rx_dropped as f64)),
    },
];

/// A container's log2 histogram from an eBPF map.
pub type HistogramOf = fn(&Sample) -> Option<DelayHistogram>;

/// The histogram families: name, help, where the data comes from.
pub const HISTOGRAMS: &[(&str, &str, HistogramOf)] = &[
    (
        "rein_shaper_delay_seconds",
        "Delay the egress shaper imposed on delayed packets, in seconds.",
        |s| s.network.delays,
    ),
    (
        "rein_tcp_rtt_seconds",
        "Smoothed TCP round-trip time of the container's connections at each RTT sample, in \
         seconds (sock_ops RTT_CB).",
        |s| s.network.tcp.map(|t| t.rtt),
    ),
    (
        "rein_runqueue_latency_seconds",
        "Time the container's tasks waited runnable for a CPU (wake-up or preemption to \
         running), in seconds, from the scheduler tracepoints.",
        |s| s.network.runq,
    ),
];
