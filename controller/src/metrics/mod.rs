//! The Prometheus endpoint: per-container metrics read from the kernel at scrape time.
//!
//! Quantities cAdvisor also exports carry cAdvisor's names and its `id` (cgroup path) and
//! `name` labels, so existing dashboards and kubernetes-mixin queries work unchanged. Nothing
//! is cached: each scrape reads the cgroup files (the kernel is the database). Every series
//! also carries `node` (see [`identity`]), and `rein_node_info` names the node once.

use std::{net::SocketAddr, sync::Arc};

use axum::{Router, http::header, response::IntoResponse, routing::get};
pub mod identity;
mod openmetrics;

pub use identity::NodeName;

use prometheus::{
    Encoder as _, Registry, TextEncoder,
    core::{Collector, Desc},
    proto::{Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType},
};

use controller_common::{DELAY_BUCKETS, DelayHistogram, TcpStats, Traffic};

use crate::{
    cgroup::{ContainerName, DeviceIo, Usage},
    limits::{Limits, Max, Memory, Pids},
    node::Node,
};

/// Default metrics address: loopback only (see README, threat model).
pub const DEFAULT_ADDR: &str = "127.0.0.1:9798";

/// A metric family rein exports: name, help, type.
struct Family {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    value: Values,
}

/// How a family's samples come from one container.
enum Values {
    /// One sample, or none when it has no value (e.g. no CPU quota).
    One(fn(&Sample) -> Option<f64>),
    /// One sample per block device in io.stat, with a `device` label as cAdvisor has it.
    PerDevice(fn(&DeviceIo) -> u64),
}

/// What one container's samples are computed from.
struct Sample {
    usage: Usage,
    limits: Limits,
    /// None when the eBPF programs are not running.
    net: Option<Traffic>,
    /// None until one of the container's TCP sockets had an event.
    tcp: Option<TcpStats>,
    delays: Option<DelayHistogram>,
    runq: Option<DelayHistogram>,
}

/// Microseconds to seconds.
fn secs(us: u64) -> f64 {
    us as f64 / 1e6
}

const FAMILIES: &[Family] = &[
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
        name: "rein_pressure_cpu_waiting_seconds_total",
        help: "Time at least one task of the container waited for CPU (cpu.pressure some).",
        kind: MetricType::COUNTER,
        value: Values::One(|s| s.usage.pressure.cpu.map(|p| secs(p.some_usec))),
    },
    Family {
        name: "rein_pressure_cpu_stalled_seconds_total",
        help: "Time all non-idle tasks of the container waited for CPU at once (cpu.pressure full).",
        kind: MetricType::COUNTER,
        value: Values::One(|s| s.usage.pressure.cpu.and_then(|p| p.full_usec).map(secs)),
    },
    Family {
        name: "rein_pressure_memory_waiting_seconds_total",
        help: "Time at least one task of the container stalled on memory (memory.pressure some).",
        kind: MetricType::COUNTER,
        value: Values::One(|s| s.usage.pressure.memory.map(|p| secs(p.some_usec))),
    },
    Family {
        name: "rein_pressure_memory_stalled_seconds_total",
        help: "Time all non-idle tasks of the container stalled on memory at once (memory.pressure full).",
        kind: MetricType::COUNTER,
        value: Values::One(|s| s.usage.pressure.memory.and_then(|p| p.full_usec).map(secs)),
    },
    Family {
        name: "rein_pressure_io_waiting_seconds_total",
        help: "Time at least one task of the container stalled on IO (io.pressure some).",
        kind: MetricType::COUNTER,
        value: Values::One(|s| s.usage.pressure.io.map(|p| secs(p.some_usec))),
    },
    Family {
        name: "rein_pressure_io_stalled_seconds_total",
        help: "Time all non-idle tasks of the container stalled on IO at once (io.pressure full).",
        kind: MetricType::COUNTER,
        value: Values::One(|s| s.usage.pressure.io.and_then(|p| p.full_usec).map(secs)),
    },
    Family {
        name: "rein_tcp_retransmitted_segments_total",
        help: "TCP segments the container's sockets retransmitted (sock_ops RETRANS_CB).",
        kind: MetricType::COUNTER,
        value: Values::One(|s| s.tcp.map(|t| t.retransmitted_segments as f64)),
    },
    Family {
        name: "rein_tcp_connections_total",
        help: "TCP connections of the container that took a first round-trip time sample.",
        kind: MetricType::COUNTER,
        value: Values::One(|s| s.tcp.map(|t| t.connections as f64)),
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
        value: Values::One(|s| s.net.map(|t| t.tx_bytes as f64)),
    },
    Family {
        name: "container_network_receive_bytes_total",
        help: "Bytes received by the container's sockets (IP packets, counted by eBPF at cgroup ingress).",
        kind: MetricType::COUNTER,
        value: Values::One(|s| s.net.map(|t| t.rx_bytes as f64)),
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
        value: Values::One(|s| s.net.map(|t| t.delayed as f64)),
    },
    Family {
        name: "rein_shaper_marked_packets_total",
        help: "Egress packets sent with congestion notification to TCP.",
        kind: MetricType::COUNTER,
        value: Values::One(|s| s.net.map(|t| t.marked as f64)),
    },
    Family {
        name: "rein_shaper_dropped_packets_total",
        help: "Egress packets dropped beyond the shaper's horizon.",
        kind: MetricType::COUNTER,
        value: Values::One(|s| s.net.map(|t| t.dropped as f64)),
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
        value: Values::One(|s| s.net.map(|t| t.rx_dropped as f64)),
    },
];

/// Collects [`FAMILIES`] for every container of the tree at scrape time.
pub struct ContainerCollector {
    node: Arc<Node>,
    /// The `node` label of every series.
    node_name: NodeName,
    /// Kernel release, for `rein_node_info` (read once: it cannot change while we run).
    kernel: String,
    descs: Vec<Desc>,
}

/// `rein_node_info`: one series per agent, so a fleet's nodes are listed (and the
/// dashboards' node variable filled) even where a node runs no container yet.
const NODE_INFO: &str = "rein_node_info";
const NODE_INFO_HELP: &str =
    "The node this agent runs on (always 1): its name, kernel release and rein version.";

/// A container's log2 histogram from an eBPF map.
type HistogramOf = fn(&Sample) -> Option<DelayHistogram>;

/// The histogram families: name, help, where the data comes from.
const HISTOGRAMS: &[(&str, &str, HistogramOf)] = &[
    (
        "rein_shaper_delay_seconds",
        "Delay the egress shaper imposed on delayed packets, in seconds.",
        |s| s.delays,
    ),
    (
        "rein_tcp_rtt_seconds",
        "Smoothed TCP round-trip time of the container's connections at each RTT sample, in \
         seconds (sock_ops RTT_CB).",
        |s| s.tcp.map(|t| t.rtt),
    ),
    (
        "rein_runqueue_latency_seconds",
        "Time the container's tasks waited runnable for a CPU (wake-up or preemption to \
         running), in seconds, from the scheduler tracepoints.",
        |s| s.runq,
    ),
];

/// The kernel-side histogram as a Prometheus one: bucket `i` holds delays below `2^i` us, so
/// the cumulative count at `le = 2^i us` sums buckets `0..=i`; the last bucket is `+Inf`.
fn delay_histogram(h: &DelayHistogram) -> Histogram {
    let mut out = Histogram::default();
    let mut cumulative = 0;
    let mut buckets = Vec::with_capacity(DELAY_BUCKETS);
    for (i, n) in h.buckets.iter().enumerate().take(DELAY_BUCKETS - 1) {
        cumulative += n;
        let mut b = Bucket::default();
        b.set_upper_bound(f64::from(1u32 << i) / 1e6);
        b.set_cumulative_count(cumulative);
        buckets.push(b);
    }
    out.set_bucket(buckets);
    out.set_sample_count(h.buckets.iter().sum());
    out.set_sample_sum(h.sum_ns as f64 / 1e9);
    out
}

fn label(name: &str, value: String) -> LabelPair {
    let mut l = LabelPair::default();
    l.set_name(name.into());
    l.set_value(value);
    l
}

fn metric(labels: Vec<LabelPair>, kind: MetricType, v: f64) -> Metric {
    let mut m = Metric::default();
    m.set_label(labels);
    if kind == MetricType::COUNTER {
        let mut c = Counter::default();
        c.set_value(v);
        m.set_counter(c);
    } else {
        let mut g = Gauge::default();
        g.set_value(v);
        m.set_gauge(g);
    }
    m
}

/// cAdvisor labels block devices by name (`/dev/vda`); io.stat has `MAJ:MIN`, which sysfs
/// resolves. A device sysfs does not know keeps its number.
fn device_name(number: &str) -> String {
    std::fs::read_to_string(format!("/sys/dev/block/{number}/uevent"))
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("DEVNAME="))
                .map(|n| format!("/dev/{n}"))
        })
        .unwrap_or_else(|| number.to_owned())
}

impl ContainerCollector {
    pub fn new(node: Arc<Node>, node_name: NodeName) -> prometheus::Result<Self> {
        let labels = || vec!["id".into(), "name".into(), "node".into()];
        let mut descs = FAMILIES
            .iter()
            .map(|f| {
                let mut l = labels();
                if matches!(f.value, Values::PerDevice(_)) {
                    l.push("device".into());
                }
                Desc::new(f.name.into(), f.help.into(), l, Default::default())
            })
            .collect::<Result<Vec<_>, _>>()?;
        for (name, help, _) in HISTOGRAMS {
            descs.push(Desc::new(
                (*name).into(),
                (*help).into(),
                labels(),
                Default::default(),
            )?);
        }
        descs.push(Desc::new(
            NODE_INFO.into(),
            NODE_INFO_HELP.into(),
            vec!["node".into(), "kernel".into(), "version".into()],
            Default::default(),
        )?);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|k| k.trim().to_owned())
            .unwrap_or_default();
        Ok(Self {
            node,
            node_name,
            kernel,
            descs,
        })
    }

    fn node_info(&self) -> MetricFamily {
        let mut mf = MetricFamily::default();
        mf.set_name(NODE_INFO.into());
        mf.set_help(NODE_INFO_HELP.into());
        mf.set_field_type(MetricType::GAUGE);
        let labels = vec![
            label("kernel", self.kernel.clone()),
            label("node", self.node_name.to_string()),
            label("version", env!("CARGO_PKG_VERSION").to_owned()),
        ];
        mf.mut_metric().push(metric(labels, MetricType::GAUGE, 1.0));
        mf
    }

    /// cAdvisor's `id` and `name`, and for a runtime's container the Kubernetes `pod`,
    /// `namespace` and `container` its annotations named (kubelet's cAdvisor labels).
    fn labels(&self, name: &ContainerName) -> Vec<LabelPair> {
        let mut l = vec![
            label("id", self.node.tree().cgroup_path(name)),
            label("name", name.to_string()),
            label("node", self.node_name.to_string()),
        ];
        if let Some(ext) = self.node.tree().external(name) {
            l.extend(
                ext.labels
                    .pairs()
                    .into_iter()
                    .map(|(k, v)| label(k, v.to_owned())),
            );
        }
        l
    }
}

impl Collector for ContainerCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut out: Vec<MetricFamily> = FAMILIES
            .iter()
            .map(|f| {
                let mut mf = MetricFamily::default();
                mf.set_name(f.name.into());
                mf.set_help(f.help.into());
                mf.set_field_type(f.kind);
                mf
            })
            .collect();
        let names = self.node.tree().list().unwrap_or_default();
        let mut samples = Vec::with_capacity(names.len());
        for name in &names {
            // A container removed between list and read simply has no samples this scrape.
            let (Ok(usage), Ok(view)) = (self.node.tree().usage(name), self.node.maps_of(name))
            else {
                continue;
            };
            let Ok(limits) = self.node.limits_with(name, view.shaper, view.policer) else {
                continue;
            };
            let sample = Sample {
                usage,
                limits,
                net: view.traffic,
                tcp: view.tcp,
                delays: view.delays,
                runq: view.runq,
            };
            samples.push((self.labels(name), sample));
        }
        for (labels, sample) in &samples {
            // Device names are looked up once per container and scrape, not per family.
            let devices: Vec<Vec<LabelPair>> = sample
                .usage
                .io
                .iter()
                .map(|d| {
                    let mut l = labels.clone();
                    l.push(label("device", device_name(&d.device)));
                    l
                })
                .collect();
            for (f, mf) in FAMILIES.iter().zip(out.iter_mut()) {
                match f.value {
                    Values::One(value) => {
                        if let Some(v) = value(sample) {
                            mf.mut_metric().push(metric(labels.clone(), f.kind, v));
                        }
                    }
                    Values::PerDevice(value) => {
                        for (d, l) in sample.usage.io.iter().zip(&devices) {
                            mf.mut_metric()
                                .push(metric(l.clone(), f.kind, value(d) as f64));
                        }
                    }
                }
            }
        }
        for (name, help, histogram) in HISTOGRAMS {
            let mut mf = MetricFamily::default();
            mf.set_name((*name).into());
            mf.set_help((*help).into());
            mf.set_field_type(MetricType::HISTOGRAM);
            for (labels, sample) in &samples {
                if let Some(h) = histogram(sample) {
                    let mut m = Metric::default();
                    m.set_label(labels.clone());
                    m.set_histogram(delay_histogram(&h));
                    mf.mut_metric().push(m);
                }
            }
            out.push(mf);
        }
        out.push(self.node_info());
        out.retain(|mf| !mf.get_metric().is_empty());
        out
    }
}

/// The exposition formats `/metrics` speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// Prometheus text 0.0.4, the default.
    Text,
    /// OpenMetrics 1.0 text, when the scraper's Accept header asks for it (Prometheus does).
    OpenMetrics,
}

impl Format {
    fn negotiate(accept: Option<&str>) -> Self {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Self::OpenMetrics,
            _ => Self::Text,
        }
    }
}

/// One scrape: gathers and encodes. Runs on a blocking thread so that reading the cgroup
/// files of many containers never stalls the API served by the same runtime.
fn scrape(registry: &Registry, format: Format) -> Result<(&'static str, Vec<u8>), String> {
    let families = registry.gather();
    let mut buf = Vec::with_capacity(64 * 1024);
    match format {
        Format::Text => {
            TextEncoder::new()
                .encode(&families, &mut buf)
                .map_err(|e| e.to_string())?;
            Ok(("text/plain; version=0.0.4; charset=utf-8", buf))
        }
        Format::OpenMetrics => {
            openmetrics::encode(&families, &mut buf);
            Ok((openmetrics::CONTENT_TYPE, buf))
        }
    }
}

/// Serves `/metrics` on `addr` until `shutdown`.
pub async fn serve(
    addr: SocketAddr,
    node: Arc<Node>,
    node_name: NodeName,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let registry = Registry::new();
    registry.register(Box::new(ContainerCollector::new(node, node_name)?))?;
    let registry = Arc::new(registry);
    let app = Router::new().route(
        "/metrics",
        get(move |headers: axum::http::HeaderMap| {
            let registry = registry.clone();
            async move {
                let format =
                    Format::negotiate(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
                let done = tokio::task::spawn_blocking(move || scrape(&registry, format)).await;
                match done {
                    Ok(Ok((content_type, body))) => {
                        ([(header::CONTENT_TYPE, content_type)], body).into_response()
                    }
                    Ok(Err(e)) => {
                        (axum::http::StatusCode::INTERNAL_SERVER_ERROR, e).into_response()
                    }
                    Err(e) => (axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
                        .into_response(),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("binding the metrics address {addr}: {e}"))?;
    tracing::info!(%addr, "metrics listening on http://{addr}/metrics");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_buckets_become_cumulative_prometheus_buckets() {
        let mut h = DelayHistogram {
            sum_ns: 3_000_000,
            ..DelayHistogram::default()
        };
        h.buckets[0] = 1; // < 1 us
        h.buckets[11] = 2; // 1.024-2.048 ms
        h.buckets[15] = 4; // >= 16.384 ms: only in +Inf
        let p = delay_histogram(&h);
        assert_eq!(p.get_sample_count(), 7);
        assert!((p.get_sample_sum() - 0.003).abs() < 1e-12);
        let b = p.get_bucket();
        assert_eq!(b.len(), 15);
        assert_eq!((b[0].upper_bound(), b[0].cumulative_count()), (1e-6, 1));
        assert_eq!(
            (b[10].upper_bound(), b[10].cumulative_count()),
            (1.024e-3, 1)
        );
        assert_eq!(
            (b[11].upper_bound(), b[11].cumulative_count()),
            (2.048e-3, 3)
        );
        assert_eq!(
            b[14].cumulative_count(),
            3,
            "the last bucket is counted only in +Inf"
        );
    }
}
