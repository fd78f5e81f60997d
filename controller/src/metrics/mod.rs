//! The Prometheus endpoint: per-container metrics read from the kernel at scrape time.
//!
//! Quantities cAdvisor also exports carry cAdvisor's names and its `id` (cgroup path) and
//! `name` labels, so existing dashboards and kubernetes-mixin queries work unchanged. Nothing
//! is cached: each scrape reads the cgroup files (the kernel is the database); scrapes that
//! arrive while a collection runs share the next one, which starts after they arrived (see
//! [`Scrapes`]), so a crowd of scrapers costs one collection at a time. Every series
//! also carries `node` (see [`identity`]), and `rein_node_info` names the node once.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{Router, http::header, response::IntoResponse, routing::get};
mod exposition;
mod families;
pub mod identity;

pub use identity::NodeName;

use prometheus::{
    Registry,
    core::{Collector, Desc},
    proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType},
};

use self::{
    exposition::{Body, LabelSet},
    families::{FAMILIES, HISTOGRAMS, Sample, Values},
};

use crate::node::{Node, Snapshot};

/// Writes [`FAMILIES`] of every container of the tree at scrape time (see [`exposition`]).
pub struct ContainerCollector {
    node: Arc<Node>,
    /// The `node` label of every series.
    node_name: NodeName,
    /// The previous scrape's snapshots, for `rein_limiting_factor` over the interval
    /// between scrapes (derived figures only: the truth stays in the kernel).
    previous: std::sync::Mutex<(std::time::Instant, HashMap<u64, Sample>)>,
    /// What the newest collection took, for the node's families.
    last: Arc<std::sync::Mutex<Breakdown>>,
    /// The newest body's size: the next one is written into a buffer of about that size
    /// (growing one by doubling would hold up to twice the body at the end).
    last_size: std::sync::atomic::AtomicUsize,
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

/// `rein_metrics_collection_seconds{phase}` and `rein_metrics_collection_read{unit}`: where
/// the newest scrape's time went (see [`Breakdown`]).
const COLLECTION_SECONDS: &str = "rein_metrics_collection_seconds";
const COLLECTION_SECONDS_HELP: &str = "Time the newest collection of the metrics took, by \
     phase: files (walking the tree and reading the cgroup files), maps (the eBPF map \
     lookups), derive (rein_limiting_factor), encode (writing the containers' series).";
const COLLECTION_READ: &str = "rein_metrics_collection_read";
const COLLECTION_READ_HELP: &str = "What the newest collection of the metrics read: \
     containers, files (cgroup files) and bytes (of those files).";

/// `rein_datapath_map_entries{map}` and `_capacity`: how full the maps with an entry per
/// managed cgroup are (counted by the agent's per-second walk of them).
const MAP_ENTRIES: &str = "rein_datapath_map_entries";
const MAP_ENTRIES_HELP: &str = "Entries in each eBPF map that holds one per managed cgroup \
     (REIN_MANAGED, REIN_SHAPER, REIN_TRAFFIC), counted every second. A full map means new \
     cgroups go unshaped or uncounted: alert well before rein_datapath_map_capacity.";
const MAP_CAPACITY: &str = "rein_datapath_map_capacity";
const MAP_CAPACITY_HELP: &str = "The most entries each map of rein_datapath_map_entries holds.";

/// `rein_config_last_reload_successful` and `_success_timestamp_seconds`, named as
/// Prometheus names its own: whether the newest SIGHUP reload of the agent's config applied,
/// and when the config last did (the start counts).
const RELOAD_OK: &str = "rein_config_last_reload_successful";
const RELOAD_OK_HELP: &str = "Whether the newest config reload (SIGHUP) was applied (1) or      refused, leaving the running settings (0); 1 until the first reload.";
const RELOAD_TIME: &str = "rein_config_last_reload_success_timestamp_seconds";
const RELOAD_TIME_HELP: &str =
    "Unix time the agent's config was last applied: its start, or a successful reload.";

/// The newest reload's outcome: process-wide (one agent, one config), set by the agent.
static RELOAD_SUCCEEDED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);
static RELOAD_SUCCESS_SECS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Records that the agent's config was applied (at start, `ok` true) or that a reload was
/// refused (`ok` false), for the `rein_config_last_reload_*` gauges.
pub fn config_applied(ok: bool) {
    use std::sync::atomic::Ordering::Relaxed;
    RELOAD_SUCCEEDED.store(ok, Relaxed);
    if ok {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        RELOAD_SUCCESS_SECS.store(now, Relaxed);
    }
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
    pub fn new(node: Arc<Node>, node_name: NodeName) -> Self {
        Self {
            node,
            node_name,
            previous: std::sync::Mutex::new((std::time::Instant::now(), HashMap::new())),
            last: Arc::default(),
            last_size: std::sync::atomic::AtomicUsize::new(64 * 1024),
        }
    }

    /// A buffer size for the next body: the newest one's and an eighth.
    fn size_hint(&self) -> usize {
        let last = self.last_size.load(std::sync::atomic::Ordering::Relaxed);
        last + last / 8
    }

    fn note_size(&self, bytes: usize) {
        self.last_size
            .store(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    /// cAdvisor's `id` and `name`, and for a runtime's container the Kubernetes `pod`,
    /// `namespace` and `container` its annotations named (kubelet's cAdvisor labels).
    fn labels(&self, s: &Snapshot, node: &str) -> LabelSet {
        LabelSet::new(
            [
                ("id", s.cgroup.as_str()),
                ("name", s.name.as_str()),
                ("node", node),
            ]
            .into_iter()
            .chain(s.labels.pairs()),
        )
    }
}

impl NodeCollector {
    fn new(
        node: Arc<Node>,
        node_name: NodeName,
        last: Arc<std::sync::Mutex<Breakdown>>,
    ) -> prometheus::Result<Self> {
        let mut descs = Vec::new();
        for (name, help, labels) in [
            (
                NODE_INFO,
                NODE_INFO_HELP,
                &["node", "kernel", "version"][..],
            ),
            (FAILED, FAILED_HELP, &["node", "reason"]),
            (MAP_ENTRIES, MAP_ENTRIES_HELP, &["node", "map"]),
            (MAP_CAPACITY, MAP_CAPACITY_HELP, &["node", "map"]),
            (
                COLLECTION_SECONDS,
                COLLECTION_SECONDS_HELP,
                &["node", "phase"],
            ),
            (COLLECTION_READ, COLLECTION_READ_HELP, &["node", "unit"]),
            (RELOAD_OK, RELOAD_OK_HELP, &["node"]),
            (RELOAD_TIME, RELOAD_TIME_HELP, &["node"]),
        ] {
            descs.push(Desc::new(
                name.into(),
                help.into(),
                labels.iter().map(|l| (*l).to_owned()).collect(),
                HashMap::new(),
            )?);
        }
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|k| k.trim().to_owned())
            .unwrap_or_default();
        Ok(Self {
            node,
            node_name,
            kernel,
            last,
            descs,
        })
    }

    /// The newest collection's breakdown: seconds by phase, files and bytes read.
    fn collection(&self) -> [MetricFamily; 2] {
        let b = self.last.lock().map(|b| *b).unwrap_or_default();
        let family = |name: &str, help: &str, values: &[(&str, &str, f64)]| {
            let mut mf = MetricFamily::default();
            mf.set_name(name.into());
            mf.set_help(help.into());
            mf.set_field_type(MetricType::GAUGE);
            for (key, value, v) in values {
                let labels = vec![
                    label("node", self.node_name.to_string()),
                    label(key, (*value).to_owned()),
                ];
                mf.mut_metric().push(metric(labels, MetricType::GAUGE, *v));
            }
            mf
        };
        [
            family(
                COLLECTION_SECONDS,
                COLLECTION_SECONDS_HELP,
                &[
                    ("phase", "files", b.files_time.as_secs_f64()),
                    ("phase", "maps", b.maps_time.as_secs_f64()),
                    ("phase", "derive", b.derive_time.as_secs_f64()),
                    ("phase", "encode", b.encode_time.as_secs_f64()),
                ],
            ),
            family(
                COLLECTION_READ,
                COLLECTION_READ_HELP,
                &[
                    ("unit", "containers", b.containers as f64),
                    ("unit", "files", b.files as f64),
                    ("unit", "bytes", b.bytes as f64),
                ],
            ),
        ]
    }

    /// The `rein_config_last_reload_*` gauges (see [`config_applied`]).
    fn config_reload(&self) -> [MetricFamily; 2] {
        use std::sync::atomic::Ordering::Relaxed;
        let ok = f64::from(u8::from(RELOAD_SUCCEEDED.load(Relaxed)));
        let secs = RELOAD_SUCCESS_SECS.load(Relaxed) as f64;
        [
            (RELOAD_OK, RELOAD_OK_HELP, ok),
            (RELOAD_TIME, RELOAD_TIME_HELP, secs),
        ]
        .map(|(name, help, v)| {
            let mut mf = MetricFamily::default();
            mf.set_name(name.into());
            mf.set_help(help.into());
            mf.set_field_type(MetricType::GAUGE);
            let labels = vec![label("node", self.node_name.to_string())];
            mf.mut_metric().push(metric(labels, MetricType::GAUGE, v));
            mf
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
}

impl ContainerCollector {
    /// Writes every container's families into `body` and notes what each phase took.
    fn write(&self, body: &mut Body) {
        let t = Instant::now();
        let (samples, read) = self.node.exported_snapshots();
        let read_time = t.elapsed();
        let t = Instant::now();
        let shares = self.limiting(&samples);
        let derive = t.elapsed();
        let t = Instant::now();
        let node = self.node_name.to_string();
        let labels: Vec<LabelSet> = samples.iter().map(|s| self.labels(s, &node)).collect();
        // Device names are looked up once per device and scrape.
        let mut devices: HashMap<&str, String> = HashMap::new();
        for s in &samples {
            for d in &s.usage.io {
                devices
                    .entry(d.device.as_str())
                    .or_insert_with(|| device_name(&d.device));
            }
        }
        for f in FAMILIES {
            let mut opened = false;
            let mut open = |body: &mut Body| {
                if !std::mem::replace(&mut opened, true) {
                    body.family(f.name, f.help, f.kind);
                }
            };
            for (s, l) in samples.iter().zip(&labels) {
                match f.value {
                    Values::One(value) => {
                        if let Some(v) = value(s) {
                            open(body);
                            body.sample(f.name, l, None, v);
                        }
                    }
                    Values::PerDevice(value) => {
                        for d in &s.usage.io {
                            open(body);
                            let dev = devices.get(d.device.as_str()).map_or("", String::as_str);
                            body.sample(f.name, l, Some(("device", dev)), value(d) as f64);
                        }
                    }
                }
            }
        }
        for (name, help, histogram) in HISTOGRAMS {
            let mut opened = false;
            for (s, l) in samples.iter().zip(&labels) {
                if let Some(h) = histogram(s) {
                    if !std::mem::replace(&mut opened, true) {
                        body.family(name, help, MetricType::HISTOGRAM);
                    }
                    body.histogram(name, l, &h);
                }
            }
        }
        if !samples.is_empty() {
            body.family(LIMITING, LIMITING_HELP, MetricType::GAUGE);
        }
        for (share, l) in shares.iter().zip(&labels) {
            for (i, factor) in crate::why::Factor::ALL.into_iter().enumerate() {
                let v = share.map_or(0.0, |s| s[i]);
                body.sample(LIMITING, l, Some(("factor", factor.name())), v);
            }
        }
        if let Ok(mut last) = self.last.lock() {
            *last = Breakdown {
                containers: samples.len(),
                files: read.files,
                bytes: read.bytes,
                files_time: read_time.saturating_sub(read.maps),
                maps_time: read.maps,
                derive_time: derive,
                encode_time: t.elapsed(),
            };
        }
    }

    /// `rein_limiting_factor` of every container over the interval since the previous
    /// scrape (none at a container's first scrape: every factor is then 0).
    fn limiting(&self, samples: &[Sample]) -> Vec<Option<Shares>> {
        let Ok(mut previous) = self.previous.lock() else {
            return vec![None; samples.len()];
        };
        let secs = previous.0.elapsed().as_secs_f64();
        // By cgroup id: a container made again under its old name is a new one.
        let now_by_name: HashMap<&crate::cgroup::ContainerName, &Sample> =
            samples.iter().map(|s| (&s.name, s)).collect();
        let before = |s: &Sample| previous.1.get(&s.id);
        let now_of = |name: &crate::cgroup::ContainerName| now_by_name.get(name).copied();
        let shares = samples
            .iter()
            .map(|now| {
                before(now).filter(|_| secs > 0.5).map(|b| {
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
                    let assessed = crate::why::assess(&crate::why::Window {
                        container: crate::why::Pair {
                            before: b,
                            after: now,
                        },
                        groups,
                        secs,
                    });
                    // In the order of Factor::ALL (`assess` keeps it).
                    let mut shares = [0.0; crate::why::Factor::ALL.len()];
                    for (share, (_, s, _)) in shares.iter_mut().zip(assessed) {
                        *share = s;
                    }
                    shares
                })
            })
            .collect();
        *previous = (
            std::time::Instant::now(),
            samples.iter().map(|s| (s.id, s.clone())).collect(),
        );
        shares
    }
}

/// Each factor's share of `rein_limiting_factor`, in the order of `why::Factor::ALL`.
type Shares = [f64; crate::why::Factor::ALL.len()];

/// What the newest collection took, by phase: `rein_metrics_collection_*`, so operators
/// (and `cargo xtask bench metrics`) see where a scrape's time goes.
#[derive(Debug, Default, Clone, Copy)]
struct Breakdown {
    containers: usize,
    /// Cgroup files read, and their bytes.
    files: u64,
    bytes: u64,
    /// Opening and reading the files (the tree walk included).
    files_time: Duration,
    /// Looking up each container's entries in the eBPF maps.
    maps_time: Duration,
    /// `rein_limiting_factor` from this and the previous collection.
    derive_time: Duration,
    /// Writing the containers' families into the body.
    encode_time: Duration,
}

/// The node's own families, through the `prometheus` crate's registry: a handful of series.
struct NodeCollector {
    node: Arc<Node>,
    node_name: NodeName,
    /// Kernel release, for `rein_node_info` (read once: it cannot change while we run).
    kernel: String,
    /// The breakdown the container writer left.
    last: Arc<std::sync::Mutex<Breakdown>>,
    descs: Vec<Desc>,
}

impl Collector for NodeCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut out = vec![self.node_info(), self.datapath_failures()];
        out.extend(self.config_reload());
        out.extend(self.datapath_fill());
        out.extend(self.collection());
        out.retain(|mf| !mf.get_metric().is_empty());
        out
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

/// A collection: every container's families, then the node's, in `format`.
type Collect = dyn Fn(Format) -> Result<(&'static str, Vec<u8>), String> + Send + Sync;

/// One scrape: the containers' families written straight into the body, then the node's
/// through the registry. Runs on a blocking thread so that reading the cgroup files of many
/// containers never stalls the API served by the same runtime.
fn scrape(
    containers: &ContainerCollector,
    registry: &Registry,
    format: Format,
) -> Result<(&'static str, Vec<u8>), String> {
    let mut body = Body::new(format, containers.size_hint());
    containers.write(&mut body);
    body.families(&registry.gather());
    let content_type = match format {
        Format::Text => exposition::TEXT,
        Format::OpenMetrics => exposition::OPENMETRICS,
    };
    let body = body.finish();
    containers.note_size(body.len());
    Ok((content_type, body))
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
    collect: Box<Collect>,
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
        // No scraper can use an older body any more: each one queued behind this one (the
        // lock is fair) arrived after that body's collection started. Dropped now, it is not
        // held beside the new one while that is written (at 1000 containers, megabytes).
        *newest = [None, None];
        // A task of its own holds the lock until the collection is stored: a scraper that
        // hangs up meanwhile (its handler is dropped) must not let a second collection
        // start beside this one.
        let me = self.clone();
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let (content_type, body) = tokio::task::spawn_blocking(move || (me.collect)(format))
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

/// Binds the metrics address (before the agent says it is ready).
pub fn bind(addr: SocketAddr) -> anyhow::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr)
        .map_err(|e| anyhow::anyhow!("binding the metrics address {addr}: {e}"))?;
    listener.set_nonblocking(true)?;
    tracing::info!(%addr, "metrics listening on http://{addr}/metrics (probes: /healthz)");
    Ok(listener)
}

/// Serves `/metrics` on `listener` (from [`bind`]) until `shutdown`, and `/healthz`: a probe for liveness and
/// readiness that costs no collection (the server starts once the agent has adopted the
/// node's containers and loaded its programs, so an answer means both are done).
pub async fn serve(
    listener: std::net::TcpListener,
    node: Arc<Node>,
    node_name: NodeName,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let containers = ContainerCollector::new(node.clone(), node_name.clone());
    let registry = Registry::new();
    registry.register(Box::new(NodeCollector::new(
        node,
        node_name,
        containers.last.clone(),
    )?))?;
    let scrapes = Arc::new(Scrapes {
        collect: Box::new(move |format| scrape(&containers, &registry, format)),
        newest: Arc::new(tokio::sync::Mutex::new([None, None])),
    });
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route(
            "/metrics",
            get(move |headers: axum::http::HeaderMap| {
                let scrapes = scrapes.clone();
                async move {
                    let format = Format::negotiate(
                        headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()),
                    );
                    match scrapes.answer(format).await {
                        Ok((content_type, body)) => {
                            ([(header::CONTENT_TYPE, content_type)], body).into_response()
                        }
                        Err(e) => {
                            (axum::http::StatusCode::INTERNAL_SERVER_ERROR, e).into_response()
                        }
                    }
                }
            }),
        );
    let listener = tokio::net::TcpListener::from_std(listener)?;
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_scrapes_share_collections_and_none_gets_an_older_one() {
        let count = Arc::new(AtomicUsize::new(0));
        // A collection that counts itself and takes 50 ms.
        let counted = count.clone();
        let scrapes = Arc::new(Scrapes {
            collect: Box::new(move |_| {
                counted.fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(std::time::Duration::from_millis(50));
                Ok(("text/plain", Vec::new()))
            }),
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
