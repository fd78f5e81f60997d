//! The Prometheus endpoint: per-container metrics read from the kernel at scrape time.
//!
//! Quantities cAdvisor also exports carry cAdvisor's names and its `id` (cgroup path) and
//! `name` labels, so existing dashboards and kubernetes-mixin queries work unchanged. Nothing
//! is cached: each scrape reads the cgroup files (the kernel is the database); scrapes that
//! arrive while a collection runs share the next one, which starts after they arrived (see
//! [`Scrapes`]), so a crowd of scrapers costs one collection at a time. Every series
//! also carries `node` (see [`identity`]), and `rein_node_info` names the node once.

use std::{collections::HashMap, net::SocketAddr, sync::Arc};

use axum::{Router, http::header, response::IntoResponse, routing::get};
mod families;
pub mod identity;
mod openmetrics;

pub use identity::NodeName;

use prometheus::{
    Encoder as _, Registry, TextEncoder,
    core::{Collector, Desc},
    proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType},
};

use self::families::{FAMILIES, HISTOGRAMS, Sample, Values, delay_histogram};

use crate::node::{Node, Snapshot};

/// Collects [`FAMILIES`] for every container of the tree at scrape time.
pub struct ContainerCollector {
    node: Arc<Node>,
    /// The `node` label of every series.
    node_name: NodeName,
    /// Kernel release, for `rein_node_info` (read once: it cannot change while we run).
    kernel: String,
    descs: Vec<Desc>,
    /// The previous scrape's snapshots, for `rein_limiting_factor` over the interval
    /// between scrapes (derived figures only: the truth stays in the kernel).
    previous: std::sync::Mutex<(std::time::Instant, HashMap<u64, Sample>)>,
}

/// `rein_limiting_factor`: `rein why`'s shares as a gauge per factor.
const LIMITING: &str = "rein_limiting_factor";
const LIMITING_HELP: &str = "Share (0 to 1) of the time (or of the packets) each factor cost the \
     container since the previous scrape, as `rein why` computes it: cpu_quota, \
     cpu_contention, memory_reclaim, oom_kill, io, egress_limit, ingress_limit, network.";

/// `rein_node_info`: one series per agent, so a fleet's nodes are listed (and the
/// dashboards' node variable filled) even where a node runs no container yet.
const NODE_INFO: &str = "rein_node_info";
const NODE_INFO_HELP: &str =
    "The node this agent runs on (always 1): its name, kernel release and rein version.";

/// `rein_datapath_failed_packets_total{reason}`: what the eBPF programs could not do.
const FAILED: &str = "rein_datapath_failed_packets_total";
const FAILED_HELP: &str = "Packets the eBPF programs could not handle in full, node-wide, by \
     reason: traffic_map_full (not counted: the traffic map, one entry per managed cgroup, \
     was full), tail_call_failed (egress passed unshaped and uncounted). Alert on any increase.";

/// `rein_datapath_map_entries{map}` and `_capacity`: how full the maps with an entry per
/// managed cgroup are (counted by the agent's per-second walk of them).
const MAP_ENTRIES: &str = "rein_datapath_map_entries";
const MAP_ENTRIES_HELP: &str = "Entries in each eBPF map that holds one per managed cgroup \
     (REIN_MANAGED, REIN_SHAPER, REIN_TRAFFIC), counted every second. A full map means new \
     cgroups go unshaped or uncounted: alert well before rein_datapath_map_capacity.";
const MAP_CAPACITY: &str = "rein_datapath_map_capacity";
const MAP_CAPACITY_HELP: &str = "The most entries each map of rein_datapath_map_entries holds.";

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
        let mut factor = labels();
        factor.push("factor".into());
        descs.push(Desc::new(
            LIMITING.into(),
            LIMITING_HELP.into(),
            factor,
            Default::default(),
        )?);
        descs.push(Desc::new(
            NODE_INFO.into(),
            NODE_INFO_HELP.into(),
            vec!["node".into(), "kernel".into(), "version".into()],
            Default::default(),
        )?);
        descs.push(Desc::new(
            FAILED.into(),
            FAILED_HELP.into(),
            vec!["node".into(), "reason".into()],
            Default::default(),
        )?);
        for (name, help) in [
            (MAP_ENTRIES, MAP_ENTRIES_HELP),
            (MAP_CAPACITY, MAP_CAPACITY_HELP),
        ] {
            descs.push(Desc::new(
                name.into(),
                help.into(),
                vec!["node".into(), "map".into()],
                Default::default(),
            )?);
        }
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|k| k.trim().to_owned())
            .unwrap_or_default();
        Ok(Self {
            node,
            node_name,
            kernel,
            descs,
            previous: std::sync::Mutex::new((std::time::Instant::now(), HashMap::new())),
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

    /// The datapath's own counters of packets it could not handle (none without programs).
    fn datapath_failures(&self) -> MetricFamily {
        let mut mf = MetricFamily::default();
        mf.set_name(FAILED.into());
        mf.set_help(FAILED_HELP.into());
        mf.set_field_type(MetricType::COUNTER);
        if let Some(h) = self.node.datapath_health() {
            for (reason, n) in [
                ("traffic_map_full", h.traffic_map_full),
                ("tail_call_failed", h.tail_call_failed),
            ] {
                let labels = vec![
                    label("node", self.node_name.to_string()),
                    label("reason", reason.to_owned()),
                ];
                mf.mut_metric()
                    .push(metric(labels, MetricType::COUNTER, n as f64));
            }
        }
        mf
    }

    /// How full the per-cgroup maps are: two gauge families (none without programs).
    fn datapath_fill(&self) -> [MetricFamily; 2] {
        let fill = self.node.datapath_fill();
        [
            (MAP_ENTRIES, MAP_ENTRIES_HELP),
            (MAP_CAPACITY, MAP_CAPACITY_HELP),
        ]
        .map(|(name, help)| {
            let mut mf = MetricFamily::default();
            mf.set_name(name.into());
            mf.set_help(help.into());
            mf.set_field_type(MetricType::GAUGE);
            for f in &fill {
                let labels = vec![
                    label("map", f.map.to_owned()),
                    label("node", self.node_name.to_string()),
                ];
                let v = if name == MAP_ENTRIES {
                    f.entries as f64
                } else {
                    f64::from(f.capacity)
                };
                mf.mut_metric().push(metric(labels, MetricType::GAUGE, v));
            }
            mf
        })
    }

    /// cAdvisor's `id` and `name`, and for a runtime's container the Kubernetes `pod`,
    /// `namespace` and `container` its annotations named (kubelet's cAdvisor labels).
    fn labels(&self, s: &Snapshot) -> Vec<LabelPair> {
        let mut l = vec![
            label("id", s.cgroup.clone()),
            label("name", s.name.to_string()),
            label("node", self.node_name.to_string()),
        ];
        l.extend(
            s.labels
                .pairs()
                .into_iter()
                .map(|(k, v)| label(k, v.to_owned())),
        );
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
        let samples: Vec<(Vec<LabelPair>, Sample)> = self
            .node
            .snapshots()
            .unwrap_or_default()
            .into_iter()
            .map(|s| (self.labels(&s), s))
            .collect();
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
        out.push(self.limiting(&samples));
        out.push(self.node_info());
        out.push(self.datapath_failures());
        out.extend(self.datapath_fill());
        out.retain(|mf| !mf.get_metric().is_empty());
        out
    }
}

impl ContainerCollector {
    /// `rein_limiting_factor` of every container over the interval since the previous
    /// scrape (0 for every factor at a container's first scrape).
    fn limiting(&self, samples: &[(Vec<LabelPair>, Sample)]) -> MetricFamily {
        let mut mf = MetricFamily::default();
        mf.set_name(LIMITING.into());
        mf.set_help(LIMITING_HELP.into());
        mf.set_field_type(MetricType::GAUGE);
        let Ok(mut previous) = self.previous.lock() else {
            return mf;
        };
        let secs = previous.0.elapsed().as_secs_f64();
        // By cgroup id: a container made again under its old name is a new one.
        let now_by_name: HashMap<&crate::cgroup::ContainerName, &Sample> =
            samples.iter().map(|(_, s)| (&s.name, s)).collect();
        let before = |s: &Sample| previous.1.get(&s.id);
        let now_of = |name: &crate::cgroup::ContainerName| now_by_name.get(name).copied();
        for (labels, now) in samples {
            let shares = before(now).filter(|_| secs > 0.5).map(|b| {
                // The groups above, each over the same interval.
                let mut groups = Vec::new();
                let mut at = now.group.clone();
                while let Some(g) = at.filter(|_| groups.len() < crate::cgroup::MAX_DEPTH) {
                    match now_of(&g).and_then(|after| Some((before(after)?, after))) {
                        Some((before, after)) => {
                            groups.push(crate::why::Pair { before, after });
                            at = after.group.clone();
                        }
                        None => break,
                    }
                }
                crate::why::assess(&crate::why::Window {
                    container: crate::why::Pair {
                        before: b,
                        after: now,
                    },
                    groups,
                    secs,
                })
            });
            for (i, factor) in crate::why::Factor::ALL.into_iter().enumerate() {
                let share = shares.as_ref().map_or(0.0, |s| s[i].1);
                let mut l = labels.clone();
                l.push(label("factor", factor.name().to_owned()));
                mf.mut_metric().push(metric(l, MetricType::GAUGE, share));
            }
        }
        *previous = (
            std::time::Instant::now(),
            samples.iter().map(|(_, s)| (s.id, s.clone())).collect(),
        );
        mf
    }
}

/// The exposition formats `/metrics` speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    /// Prometheus text 0.0.4, the default.
    Text = 0,
    /// OpenMetrics 1.0 text, when the scraper's Accept header asks for it (Prometheus does).
    OpenMetrics = 1,
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

/// Connections to the metrics endpoint open at once, all clients together; one more is
/// closed at accept.
const TOTAL_CONNECTIONS: usize = 1024;
/// Connections open at once from one IP address: any pod can reach the endpoint on the node
/// IP, and one that opens many must not crowd out Prometheus (which holds one or two).
const CONNECTIONS_PER_ADDRESS: usize = 64;

/// The newest collection of one format, and when it started.
struct Collected {
    started: tokio::time::Instant,
    content_type: &'static str,
    body: axum::body::Bytes,
}

/// Scrapes share collections: one runs at a time, and a scrape takes the newest collection
/// that started after the scrape arrived (so its figures are never older than its request)
/// or runs one itself. A thousand scrapers cost the agent as much as one scraping
/// back-to-back.
struct Scrapes {
    registry: Registry,
    /// The newest collection per format; the lock is held while a collection runs.
    newest: Arc<tokio::sync::Mutex<[Option<Collected>; 2]>>,
}

impl Scrapes {
    async fn answer(
        self: &Arc<Self>,
        format: Format,
    ) -> Result<(&'static str, axum::body::Bytes), String> {
        let arrived = tokio::time::Instant::now();
        let mut newest = self.newest.clone().lock_owned().await;
        if let Some(c) = newest[format as usize]
            .as_ref()
            .filter(|c| c.started >= arrived)
        {
            return Ok((c.content_type, c.body.clone()));
        }
        // A task of its own holds the lock until the collection is stored: a scraper that
        // hangs up meanwhile (its handler is dropped) must not let a second collection
        // start beside this one.
        let me = self.clone();
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let (content_type, body) =
                tokio::task::spawn_blocking(move || scrape(&me.registry, format))
                    .await
                    .map_err(|e| e.to_string())??;
            let body = axum::body::Bytes::from(body);
            newest[format as usize] = Some(Collected {
                started,
                content_type,
                body: body.clone(),
            });
            Ok((content_type, body))
        })
        .await
        .map_err(|e| e.to_string())?
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
    let scrapes = Arc::new(Scrapes {
        registry,
        newest: Arc::new(tokio::sync::Mutex::new([None, None])),
    });
    let app = Router::new().route(
        "/metrics",
        get(move |headers: axum::http::HeaderMap| {
            let scrapes = scrapes.clone();
            async move {
                let format =
                    Format::negotiate(headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()));
                match scrapes.answer(format).await {
                    Ok((content_type, body)) => {
                        ([(header::CONTENT_TYPE, content_type)], body).into_response()
                    }
                    Err(e) => (axum::http::StatusCode::INTERNAL_SERVER_ERROR, e).into_response(),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("binding the metrics address {addr}: {e}"))?;
    tracing::info!(%addr, "metrics listening on http://{addr}/metrics");
    crate::http::serve(
        listener,
        TOTAL_CONNECTIONS,
        move |stream: &tokio::net::TcpStream| crate::http::Admission {
            key: stream.peer_addr().map_or(0, |a| {
                match a.ip() {
                    std::net::IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                    std::net::IpAddr::V6(v6) => v6,
                }
                .to_bits()
            }),
            cap: CONNECTIONS_PER_ADDRESS,
            router: app.clone(),
        },
        shutdown,
    )
    .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A collector that counts its collections, each taking 50 ms.
    struct Slow(Arc<AtomicUsize>, Desc);

    impl Collector for Slow {
        fn desc(&self) -> Vec<&Desc> {
            vec![&self.1]
        }

        fn collect(&self) -> Vec<MetricFamily> {
            self.0.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(std::time::Duration::from_millis(50));
            Vec::new()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_scrapes_share_collections_and_none_gets_an_older_one() {
        let count = Arc::new(AtomicUsize::new(0));
        let registry = Registry::new();
        let desc = Desc::new("slow".into(), "h".into(), vec![], HashMap::new()).unwrap();
        registry
            .register(Box::new(Slow(count.clone(), desc)))
            .unwrap();
        let scrapes = Arc::new(Scrapes {
            registry,
            newest: Arc::new(tokio::sync::Mutex::new([None, None])),
        });
        let answers: Vec<_> = (0..50)
            .map(|_| {
                let s = scrapes.clone();
                tokio::spawn(async move { s.answer(Format::Text).await })
            })
            .collect();
        for a in answers {
            a.await.unwrap().unwrap();
        }
        let collections = count.load(Ordering::SeqCst);
        assert!(
            (1..=3).contains(&collections),
            "50 concurrent scrapes made {collections} collections"
        );
        // A scrape after they all ended gets a collection of its own, not the old one.
        scrapes.answer(Format::Text).await.unwrap();
        assert_eq!(count.load(Ordering::SeqCst), collections + 1);
    }
}
