//! rein's Grafana dashboards, generated: `cargo xtask dashboards` writes `dashboards/*.json`
//! from the panel lists below (one place for queries, units and layout), and a test keeps
//! the committed files equal to what this writes. The JSON is Grafana's classic dashboard
//! model (schemaVersion 42, as `@grafana/schema` 13 defines it); `cargo xtask test` checks it
//! against those types with tsc, and the VM suite runs every query against a real Prometheus.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::paths::workspace_root;

/// Grafana's dashboard schema version the JSON follows.
pub const SCHEMA_VERSION: u32 = 42;

/// One query of a panel.
struct Target {
    expr: &'static str,
    legend: &'static str,
}

/// How a panel draws.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    TimeSeries,
    Heatmap,
    Stat,
}

struct Panel {
    title: &'static str,
    description: &'static str,
    kind: Kind,
    unit: &'static str,
    /// Width in grid columns (24 per row); height is 8.
    width: u32,
    targets: Vec<Target>,
}

const fn t(expr: &'static str, legend: &'static str) -> Target {
    Target { expr, legend }
}

fn ts(
    title: &'static str,
    description: &'static str,
    unit: &'static str,
    targets: Vec<Target>,
) -> Panel {
    Panel {
        title,
        description,
        kind: Kind::TimeSeries,
        unit,
        width: 12,
        targets,
    }
}

/// The node overview: the ten heaviest containers by each resource.
fn node_panels() -> Vec<Panel> {
    vec![
        Panel {
            title: "Containers",
            description: "Containers rein manages or registered on the selected nodes.",
            kind: Kind::Stat,
            unit: "none",
            width: 6,
            targets: vec![t(
                r#"count(container_memory_usage_bytes{node=~"$node"})"#,
                "containers",
            )],
        },
        Panel {
            title: "CPU of all containers",
            description: "CPU time of all containers per second (1 = one CPU).",
            kind: Kind::Stat,
            unit: "none",
            width: 6,
            targets: vec![t(
                r#"sum(rate(container_cpu_usage_seconds_total{node=~"$node"}[$__rate_interval]))"#,
                "cpus",
            )],
        },
        Panel {
            title: "Memory of all containers",
            description: "Working set of all containers (usage minus inactive file pages).",
            kind: Kind::Stat,
            unit: "bytes",
            width: 6,
            targets: vec![t(
                r#"sum(container_memory_working_set_bytes{node=~"$node"})"#,
                "working set",
            )],
        },
        Panel {
            title: "Egress of all containers",
            description: "Bits per second all containers sent (counted by rein's eBPF program).",
            kind: Kind::Stat,
            unit: "bps",
            width: 6,
            targets: vec![t(
                r#"8 * sum(rate(container_network_transmit_bytes_total{node=~"$node"}[$__rate_interval]))"#,
                "egress",
            )],
        },
        ts(
            "Top containers by CPU",
            "CPU time per second (1 = one CPU), the ten busiest containers.",
            "none",
            vec![t(
                r#"topk(10, sum by (node, name) (rate(container_cpu_usage_seconds_total{node=~"$node"}[$__rate_interval])))"#,
                "{{name}} ({{node}})",
            )],
        ),
        ts(
            "Top containers by memory",
            "Working set, the ten largest containers.",
            "bytes",
            vec![t(
                r#"topk(10, sum by (node, name) (container_memory_working_set_bytes{node=~"$node"}))"#,
                "{{name}} ({{node}})",
            )],
        ),
        ts(
            "Top containers by egress",
            "Bits per second sent, the ten heaviest senders.",
            "bps",
            vec![t(
                r#"topk(10, 8 * sum by (node, name) (rate(container_network_transmit_bytes_total{node=~"$node"}[$__rate_interval])))"#,
                "{{name}} ({{node}})",
            )],
        ),
        ts(
            "Top containers by CPU throttling",
            "Share of CFS periods in which a container's quota ran out (containers with --cpus).",
            "percentunit",
            vec![t(
                r#"topk(10, sum by (node, name) (rate(container_cpu_cfs_throttled_periods_total{node=~"$node"}[$__rate_interval])) / sum by (node, name) (rate(container_cpu_cfs_periods_total{node=~"$node"}[$__rate_interval])))"#,
                "{{name}} ({{node}})",
            )],
        ),
        ts(
            "OOM kills",
            "Processes the kernel's OOM killer ended in each container, per interval.",
            "none",
            vec![t(
                r#"sum by (node, name) (increase(container_oom_events_total{node=~"$node"}[$__rate_interval]))"#,
                "{{name}} ({{node}})",
            )],
        ),
        ts(
            "Top containers by pressure",
            "Seconds per second some task of the container waited for CPU, memory or IO (PSI \"some\"), the ten most stalled.",
            "percentunit",
            vec![
                t(
                    r#"topk(10, sum by (node, name) (rate(container_pressure_cpu_waiting_seconds_total{node=~"$node"}[$__rate_interval])))"#,
                    "cpu {{name}} ({{node}})",
                ),
                t(
                    r#"topk(10, sum by (node, name) (rate(container_pressure_memory_waiting_seconds_total{node=~"$node"}[$__rate_interval])))"#,
                    "memory {{name}} ({{node}})",
                ),
                t(
                    r#"topk(10, sum by (node, name) (rate(container_pressure_io_waiting_seconds_total{node=~"$node"}[$__rate_interval])))"#,
                    "io {{name}} ({{node}})",
                ),
            ],
        ),
    ]
}

/// One container, every metric, limits drawn as lines.
fn container_panels() -> Vec<Panel> {
    vec![
        ts(
            "CPU and its limit",
            "CPU time per second (1 = one CPU) and the --cpus quota.",
            "none",
            vec![
                t(
                    r#"sum(rate(container_cpu_usage_seconds_total{node=~"$node", name="$container"}[$__rate_interval]))"#,
                    "usage",
                ),
                t(
                    r#"sum(container_spec_cpu_quota{node=~"$node", name="$container"}) / sum(container_spec_cpu_period{node=~"$node", name="$container"})"#,
                    "limit",
                ),
            ],
        ),
        ts(
            "CPU throttling",
            "Share of CFS periods in which the quota ran out, and throttled time per second.",
            "percentunit",
            vec![
                t(
                    r#"sum(rate(container_cpu_cfs_throttled_periods_total{node=~"$node", name="$container"}[$__rate_interval])) / sum(rate(container_cpu_cfs_periods_total{node=~"$node", name="$container"}[$__rate_interval]))"#,
                    "throttled periods",
                ),
                t(
                    r#"sum(rate(container_cpu_cfs_throttled_seconds_total{node=~"$node", name="$container"}[$__rate_interval]))"#,
                    "throttled seconds per second",
                ),
            ],
        ),
        ts(
            "Memory and its limit",
            "Usage, working set and the --memory limit.",
            "bytes",
            vec![
                t(
                    r#"sum(container_memory_usage_bytes{node=~"$node", name="$container"})"#,
                    "usage",
                ),
                t(
                    r#"sum(container_memory_working_set_bytes{node=~"$node", name="$container"})"#,
                    "working set",
                ),
                t(
                    r#"sum(container_spec_memory_limit_bytes{node=~"$node", name="$container"} > 0)"#,
                    "limit",
                ),
            ],
        ),
        ts(
            "Processes and the pids limit",
            "Processes, threads and --pids.",
            "none",
            vec![
                t(
                    r#"sum(container_processes{node=~"$node", name="$container"})"#,
                    "processes",
                ),
                t(
                    r#"sum(container_threads{node=~"$node", name="$container"})"#,
                    "threads",
                ),
                t(
                    r#"sum(rein_pids_limit{node=~"$node", name="$container"})"#,
                    "limit",
                ),
            ],
        ),
        ts(
            "Block IO",
            "Bytes per second read and written, per device.",
            "Bps",
            vec![
                t(
                    r#"sum by (device) (rate(container_fs_reads_bytes_total{node=~"$node", name="$container"}[$__rate_interval]))"#,
                    "read {{device}}",
                ),
                t(
                    r#"sum by (device) (rate(container_fs_writes_bytes_total{node=~"$node", name="$container"}[$__rate_interval]))"#,
                    "write {{device}}",
                ),
            ],
        ),
        ts(
            "Pressure",
            "Seconds per second some task waited (PSI \"some\") for CPU, memory and IO.",
            "percentunit",
            vec![
                t(
                    r#"sum(rate(container_pressure_cpu_waiting_seconds_total{node=~"$node", name="$container"}[$__rate_interval]))"#,
                    "cpu",
                ),
                t(
                    r#"sum(rate(container_pressure_memory_waiting_seconds_total{node=~"$node", name="$container"}[$__rate_interval]))"#,
                    "memory",
                ),
                t(
                    r#"sum(rate(container_pressure_io_waiting_seconds_total{node=~"$node", name="$container"}[$__rate_interval]))"#,
                    "io",
                ),
            ],
        ),
        ts(
            "Network and its limits",
            "Bits per second sent and received, and the --egress and --ingress limits.",
            "bps",
            vec![
                t(
                    r#"8 * sum(rate(container_network_transmit_bytes_total{node=~"$node", name="$container"}[$__rate_interval]))"#,
                    "egress",
                ),
                t(
                    r#"8 * sum(rein_egress_limit_bytes_per_second{node=~"$node", name="$container"})"#,
                    "egress limit",
                ),
                t(
                    r#"8 * sum(rate(container_network_receive_bytes_total{node=~"$node", name="$container"}[$__rate_interval]))"#,
                    "ingress",
                ),
                t(
                    r#"8 * sum(rein_ingress_limit_bytes_per_second{node=~"$node", name="$container"})"#,
                    "ingress limit",
                ),
            ],
        ),
        Panel {
            title: "Shaper delay",
            description: "How long rein's egress shaper held the container's packets (each bucket's packets per second).",
            kind: Kind::Heatmap,
            unit: "s",
            width: 12,
            targets: vec![t(
                r#"sum by (le) (rate(rein_shaper_delay_seconds_bucket{node=~"$node", name="$container"}[$__rate_interval]))"#,
                "{{le}}",
            )],
        },
        ts(
            "TCP round-trip time",
            "Median and 99th percentile of the smoothed RTT of the container's TCP connections (sock_ops).",
            "s",
            vec![
                t(
                    r#"histogram_quantile(0.5, sum by (le) (rate(rein_tcp_rtt_seconds_bucket{node=~"$node", name="$container"}[$__rate_interval])))"#,
                    "p50",
                ),
                t(
                    r#"histogram_quantile(0.99, sum by (le) (rate(rein_tcp_rtt_seconds_bucket{node=~"$node", name="$container"}[$__rate_interval])))"#,
                    "p99",
                ),
            ],
        ),
        ts(
            "TCP retransmissions and connections",
            "Segments retransmitted and connections opened, per second.",
            "none",
            vec![
                t(
                    r#"sum(rate(rein_tcp_retransmitted_segments_total{node=~"$node", name="$container"}[$__rate_interval]))"#,
                    "retransmitted segments",
                ),
                t(
                    r#"sum(rate(rein_tcp_connections_total{node=~"$node", name="$container"}[$__rate_interval]))"#,
                    "connections",
                ),
            ],
        ),
        ts(
            "Run-queue latency",
            "Median and 99th percentile of the time the container's tasks waited runnable for a CPU.",
            "s",
            vec![
                t(
                    r#"histogram_quantile(0.5, sum by (le) (rate(rein_runqueue_latency_seconds_bucket{node=~"$node", name="$container"}[$__rate_interval])))"#,
                    "p50",
                ),
                t(
                    r#"histogram_quantile(0.99, sum by (le) (rate(rein_runqueue_latency_seconds_bucket{node=~"$node", name="$container"}[$__rate_interval])))"#,
                    "p99",
                ),
            ],
        ),
    ]
}

/// Egress shaping across containers: limit against actual, and what the shaper did.
fn network_panels() -> Vec<Panel> {
    vec![
        ts(
            "Egress: limit and actual",
            "Bits per second each container sent, and its --egress limit.",
            "bps",
            vec![
                t(
                    r#"8 * sum by (node, name) (rate(container_network_transmit_bytes_total{node=~"$node", name=~"$container"}[$__rate_interval]))"#,
                    "{{name}}",
                ),
                t(
                    r#"8 * sum by (node, name) (rein_egress_limit_bytes_per_second{node=~"$node", name=~"$container"})"#,
                    "{{name}} limit",
                ),
            ],
        ),
        ts(
            "Egress use of the limit",
            "Sent bits per second over the --egress limit (1 = at the limit).",
            "percentunit",
            vec![t(
                r#"sum by (node, name) (rate(container_network_transmit_bytes_total{node=~"$node", name=~"$container"}[$__rate_interval])) / sum by (node, name) (rein_egress_limit_bytes_per_second{node=~"$node", name=~"$container"})"#,
                "{{name}}",
            )],
        ),
        ts(
            "Ingress: limit and actual",
            "Bits per second each container received, and its --ingress limit.",
            "bps",
            vec![
                t(
                    r#"8 * sum by (node, name) (rate(container_network_receive_bytes_total{node=~"$node", name=~"$container"}[$__rate_interval]))"#,
                    "{{name}}",
                ),
                t(
                    r#"8 * sum by (node, name) (rein_ingress_limit_bytes_per_second{node=~"$node", name=~"$container"})"#,
                    "{{name}} limit",
                ),
            ],
        ),
        ts(
            "Shaper: delayed, marked and dropped packets",
            "Packets per second the egress shaper delayed, marked with congestion notification, and dropped beyond its horizon; and the ingress policer's drops.",
            "pps",
            vec![
                t(
                    r#"sum by (node, name) (rate(rein_shaper_delayed_packets_total{node=~"$node", name=~"$container"}[$__rate_interval]))"#,
                    "delayed {{name}}",
                ),
                t(
                    r#"sum by (node, name) (rate(rein_shaper_marked_packets_total{node=~"$node", name=~"$container"}[$__rate_interval]))"#,
                    "marked {{name}}",
                ),
                t(
                    r#"sum by (node, name) (rate(rein_shaper_dropped_packets_total{node=~"$node", name=~"$container"}[$__rate_interval]))"#,
                    "dropped {{name}}",
                ),
                t(
                    r#"sum by (node, name) (rate(rein_policer_dropped_packets_total{node=~"$node", name=~"$container"}[$__rate_interval]))"#,
                    "policed {{name}}",
                ),
            ],
        ),
        ts(
            "Shaper delay, 99th percentile",
            "How long the shaper held the slowest 1% of each container's delayed packets.",
            "s",
            vec![t(
                r#"histogram_quantile(0.99, sum by (node, name, le) (rate(rein_shaper_delay_seconds_bucket{node=~"$node", name=~"$container"}[$__rate_interval])))"#,
                "{{name}}",
            )],
        ),
        ts(
            "TCP retransmissions",
            "Segments each container's TCP connections retransmitted per second.",
            "none",
            vec![t(
                r#"sum by (node, name) (rate(rein_tcp_retransmitted_segments_total{node=~"$node", name=~"$container"}[$__rate_interval]))"#,
                "{{name}}",
            )],
        ),
    ]
}

const DATASOURCE: &str = "${datasource}";

/// Every selector also matches the dashboard's `job` variable (rein's job by default): where
/// kubelet's cAdvisor is scraped into the same Prometheus, its `container_*` series have
/// rein's names and a `node` label too, and would otherwise be summed with rein's.
fn scoped(expr: &str) -> String {
    expr.replace(r#"{node=~"$node""#, r#"{job=~"$job", node=~"$node""#)
}

fn panel_json(id: u32, x: u32, y: u32, p: &Panel) -> Value {
    let ds = json!({"type": "prometheus", "uid": DATASOURCE});
    let targets: Vec<Value> = p
        .targets
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let ref_id = char::from(b'A' + u8::try_from(i).unwrap_or(0)).to_string();
            let mut target = json!({
                "datasource": ds,
                "refId": ref_id,
                "expr": scoped(t.expr),
                "legendFormat": t.legend,
                "range": true,
            });
            if p.kind == Kind::Heatmap {
                target["format"] = json!("heatmap");
            }
            target
        })
        .collect();
    let (kind, options, custom) = match p.kind {
        Kind::TimeSeries => (
            "timeseries",
            json!({
                "legend": {"displayMode": "list", "placement": "bottom", "showLegend": true},
                "tooltip": {"mode": "multi", "sort": "desc"}
            }),
            json!({"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never"}),
        ),
        Kind::Heatmap => (
            "heatmap",
            json!({
                "calculate": false,
                "yAxis": {"unit": p.unit},
                "cellGap": 1,
                "color": {"mode": "scheme", "scheme": "Oranges", "steps": 64}
            }),
            json!({}),
        ),
        Kind::Stat => (
            "stat",
            json!({
                "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": false},
                "colorMode": "value",
                "graphMode": "area"
            }),
            json!({}),
        ),
    };
    json!({
        "id": id,
        "type": kind,
        "title": p.title,
        "description": p.description,
        "datasource": ds,
        "gridPos": {"x": x, "y": y, "w": p.width, "h": if p.kind == Kind::Stat { 4 } else { 8 }},
        "targets": targets,
        "fieldConfig": {"defaults": {"unit": p.unit, "custom": custom}, "overrides": []},
        "options": options,
    })
}

fn variable(name: &str, label: &str, query: &str, multi: bool) -> Value {
    let mut v = json!({
        "name": name,
        "label": label,
        "type": "query",
        "datasource": {"type": "prometheus", "uid": DATASOURCE},
        "query": {"query": query, "refId": format!("{name}-variable")},
        "refresh": 2,
        "sort": 1,
        "multi": multi,
        "includeAll": multi,
    });
    if multi {
        // "All" as a regex, so `=~"$var"` matches every value.
        v["allValue"] = json!(".*");
    }
    v
}

fn dashboard(
    uid: &str,
    title: &str,
    description: &str,
    container: Option<bool>,
    panels: &[Panel],
) -> Value {
    let mut vars = vec![
        json!({
            "name": "datasource",
            "label": "Data source",
            "type": "datasource",
            "query": "prometheus",
        }),
        // The job rein's agents are scraped as (`rein` in prometheus.yml and the
        // PodMonitor): kubelet's cAdvisor series with the same names stay out.
        variable("job", "Job", "label_values(rein_node_info, job)", false),
        // `node` is set by the agent on every series (not `instance`, which is whatever the
        // scrape address was): one node or all of a fleet.
        variable(
            "node",
            "Node",
            r#"label_values(rein_node_info{job=~"$job"}, node)"#,
            true,
        ),
    ];
    if let Some(multi) = container {
        vars.push(variable(
            "container",
            "Container",
            r#"label_values(container_memory_usage_bytes{job=~"$job", node=~"$node"}, name)"#,
            multi,
        ));
    }
    // Flow layout: panels fill rows of 24 columns left to right.
    let (mut x, mut y, mut row_h) = (0, 0, 0);
    let mut out = Vec::new();
    for (i, p) in panels.iter().enumerate() {
        if x + p.width > 24 {
            x = 0;
            y += row_h;
            row_h = 0;
        }
        let id = u32::try_from(i).unwrap_or(0) + 1;
        out.push(panel_json(id, x, y, p));
        x += p.width;
        row_h = row_h.max(if p.kind == Kind::Stat { 4 } else { 8 });
    }
    json!({
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["rein"],
        "editable": true,
        "graphTooltip": 1,
        "schemaVersion": SCHEMA_VERSION,
        "time": {"from": "now-1h", "to": "now"},
        "refresh": "30s",
        "timezone": "browser",
        "templating": {"list": vars},
        "annotations": {"list": []},
        "links": [{
            "title": "rein dashboards",
            "type": "dashboards",
            "tags": ["rein"],
            "asDropdown": true,
            "icon": "external link",
            "includeVars": true,
            "keepTime": true,
            "targetBlank": false,
            "tooltip": ""
        }],
        "panels": out,
    })
}

/// The dashboards: file name and content.
pub fn all() -> Vec<(&'static str, Value)> {
    vec![
        (
            "rein-node.json",
            dashboard(
                "rein-node",
                "rein / Node overview",
                "The heaviest containers of the selected nodes by CPU, memory, egress, throttling, OOM kills and pressure.",
                None,
                &node_panels(),
            ),
        ),
        (
            "rein-container.json",
            dashboard(
                "rein-container",
                "rein / Container",
                "Every metric of one container, with its limits drawn as lines.",
                Some(false),
                &container_panels(),
            ),
        ),
        (
            "rein-network.json",
            dashboard(
                "rein-network",
                "rein / Network shaping",
                "Egress and ingress limits against actual rates, and what rein's shaper did.",
                Some(true),
                &network_panels(),
            ),
        ),
    ]
}

pub fn dir() -> PathBuf {
    workspace_root().join("dashboards")
}

fn text(v: &Value) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(v)? + "\n")
}

/// Where the dashboards go as ConfigMaps for Grafana's sidecar.
fn configmaps_path() -> PathBuf {
    workspace_root()
        .join("deploy")
        .join("kubernetes")
        .join("dashboards.yaml")
}

/// The dashboards as ConfigMaps, one each, labelled `grafana_dashboard: "1"`: the label
/// Grafana's dashboard sidecar (kube-prometheus-stack's default) loads dashboards from.
fn configmaps() -> anyhow::Result<String> {
    let mut out = String::from(
        "# Generated by `cargo xtask dashboards` from xtask/src/dashboards.rs (do not edit):\n\
         # rein's Grafana dashboards as ConfigMaps for Grafana's dashboard sidecar, which loads\n\
         # every ConfigMap labelled grafana_dashboard=\"1\" (set its searchNamespace to\n\
         # rein-system, or ALL, if Grafana runs elsewhere).\n",
    );
    for (file, v) in all() {
        let name = file.trim_end_matches(".json");
        out.push_str(&format!(
            "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}-dashboard\n  \
             namespace: rein-system\n  labels:\n    app.kubernetes.io/name: rein\n    \
             grafana_dashboard: \"1\"\ndata:\n  {file}: |\n"
        ));
        for line in text(&v)?.lines() {
            out.push_str("    ");
            out.push_str(line);
            out.push('\n');
        }
    }
    Ok(out)
}

/// Writes the dashboards into `dashboards/`, and as ConfigMaps into
/// `deploy/kubernetes/dashboards.yaml`.
pub fn write() -> anyhow::Result<()> {
    for (file, v) in all() {
        let path = dir().join(file);
        std::fs::write(&path, text(&v)?)?;
        println!("wrote {}", path.display());
    }
    std::fs::write(configmaps_path(), configmaps()?)?;
    println!("wrote {}", configmaps_path().display());
    Ok(())
}

/// `tsc --strict --noEmit` over `files` with the compiler from the cache (they must sit
/// below `node_dir`, so that their imports resolve in its node_modules).
pub fn tsc(node_dir: &Path, files: &[PathBuf]) -> std::process::Command {
    let mut c = std::process::Command::new(node_dir.join("node_modules/.bin/tsc"));
    c.args([
        "--noEmit",
        "--strict",
        "--skipLibCheck",
        "--target",
        "es2022",
        "--module",
        "esnext",
        "--moduleResolution",
        "bundler",
    ])
    .args(files)
    .current_dir(node_dir);
    c
}

/// Type-checks every dashboard against `@grafana/schema`'s `Dashboard` with tsc (both from
/// the cache `cargo xtask setup` fills): Grafana loads what these types accept.
pub fn check_schema(node_dir: &Path) -> anyhow::Result<()> {
    // Next to node_modules, so that the import resolves.
    let work = node_dir.join("check");
    std::fs::create_dir_all(&work)?;
    let mut files = Vec::new();
    for (file, _) in all() {
        let json = std::fs::read_to_string(dir().join(file))?;
        let ts = work.join(file.replace(".json", ".ts"));
        std::fs::write(
            &ts,
            format!(
                "import type {{ Dashboard }} from '@grafana/schema';\n\
                 export const dashboard: Dashboard = {json};\n"
            ),
        )?;
        files.push(ts);
    }
    let status = tsc(node_dir, &files).status()?;
    anyhow::ensure!(
        status.success(),
        "the dashboards do not type-check against @grafana/schema (see tsc's errors above)"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn committed_dashboards_are_what_the_generator_writes() {
        for (file, v) in all() {
            let committed = std::fs::read_to_string(dir().join(file)).unwrap_or_default();
            assert!(
                committed == text(&v).unwrap(),
                "dashboards/{file} differs from the generator: run `cargo xtask dashboards`"
            );
        }
        let committed = std::fs::read_to_string(configmaps_path()).unwrap_or_default();
        assert!(
            committed == configmaps().unwrap(),
            "deploy/kubernetes/dashboards.yaml differs from the generator: run `cargo xtask \
             dashboards`"
        );
    }

    #[test]
    fn every_panel_has_a_unit_and_a_query_and_ids_are_unique() {
        for (file, v) in all() {
            let panels = v["panels"].as_array().unwrap();
            let mut ids: Vec<u64> = panels.iter().map(|p| p["id"].as_u64().unwrap()).collect();
            ids.dedup();
            assert_eq!(ids.len(), panels.len(), "{file}");
            for p in panels {
                assert!(
                    p["fieldConfig"]["defaults"]["unit"].is_string(),
                    "{file}: {}",
                    p["title"]
                );
                assert!(
                    !p["targets"].as_array().unwrap().is_empty(),
                    "{file}: {}",
                    p["title"]
                );
                // Every selector keeps to the job: kubelet's cAdvisor shares the names.
                for t in p["targets"].as_array().unwrap() {
                    let expr = t["expr"].as_str().unwrap();
                    assert_eq!(
                        expr.matches('{').count(),
                        expr.matches(r#"{job=~"$job", "#).count(),
                        "{file}: {expr}"
                    );
                }
            }
        }
    }
}
