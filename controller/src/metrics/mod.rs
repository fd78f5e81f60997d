//! The Prometheus endpoint: per-container metrics read from the kernel at scrape time.
//!
//! Quantities cAdvisor also exports carry cAdvisor's names and its `id` (cgroup path) and
//! `name` labels, so existing dashboards and kubernetes-mixin queries work unchanged. Nothing
//! is cached: each scrape reads the cgroup files (the kernel is the database). Every series
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
