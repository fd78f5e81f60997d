//! `cargo xtask vm-fleet`: two test VMs as two nodes, one real Prometheus over both.
//!
//! Each guest runs the agent with its own `--node-name` and two containers with limits that
//! differ between the nodes (`web`: CPU, memory and pids limits, a busy loop and disk
//! writes; `net`: an egress limit and iperf3 to a namespace inside the guest). Its metrics
//! port is forwarded to a loopback port of the host, where Debian's Prometheus scrapes both.
//! The checks ask PromQL what a fleet operator asks: which nodes are there, which containers
//! each has, their limits, their CPU and egress rates, each answer per node against what that
//! node was given; and every query of every dashboard, for each node and for all nodes.

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{Read as _, Write as _},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Mutex,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail};
use serde_json::Value;

use crate::{
    paths::workspace_root,
    tally::Tally,
    vm::{self, kernel::Series},
};

/// What one node runs, and so what PromQL must answer for it.
struct Node {
    name: &'static str,
    series: Series,
    /// Host loopback port forwarded to the guest's metrics port.
    port: u16,
    /// `web`'s CPU quota, in CPUs, and memory limit, in MiB.
    cpus: f64,
    memory_mib: u64,
    /// `net`'s egress limit, in Mbit/s.
    egress_mbit: u64,
}

const NODES: [Node; 2] = [
    Node {
        name: "node-a",
        series: Series::V6_12,
        port: 19811,
        cpus: 0.5,
        memory_mib: 96,
        egress_mbit: 16,
    },
    Node {
        name: "node-b",
        series: Series::V6_1,
        port: 19812,
        cpus: 0.25,
        memory_mib: 64,
        egress_mbit: 6,
    },
];

/// Where the host's Prometheus listens.
const PROMETHEUS: &str = "127.0.0.1:19890";
/// How long the workloads run (and so the longest the checks may take).
const WORK_SECS: u64 = 150;
/// Printed by a guest when its agent and workloads are up.
const UP: &str = "REIN-FLEET-UP";
/// Printed by a guest every few seconds: the agent's peak RSS in kB.
const RSS: &str = "REIN-FLEET-RSS ";

fn guest_script(n: &Node) -> String {
    let cpus = n.cpus;
    let memory = n.memory_mib;
    let egress = n.egress_mbit;
    let port = n.port;
    let name = n.name;
    let start = crate::guest::start_agent(&format!(
        "--node-name {name} --metrics-addr 0.0.0.0:{port} --egress-dev rein-h0"
    ));
    format!(
        r#"set -e
# iproute2's ip (busybox's applet, which sh prefers, knows no netns).
IP=/usr/local/sbin/ip
# qemu's user network, for the forwarded metrics port.
$IP link set eth0 up
$IP addr add 10.0.2.15/24 dev eth0
# A peer for the traffic: a namespace behind a veth pair, as in the VM tests.
$IP netns add remote
$IP link add rein-h0 type veth peer name rein-r0 netns remote
$IP addr add 10.200.0.1/24 dev rein-h0
$IP link set rein-h0 up
$IP -n remote addr add 10.200.0.2/24 dev rein-r0
$IP -n remote link set rein-r0 up
$IP -n remote link set lo up
$IP netns exec remote iperf3 -s -D
{start}[ -S /run/rein/rein.sock ] || {{ cat /tmp/agent.log; exit 1; }}
rein run --keep --name web --cpus {cpus} --memory {memory}M --pids 64 -- \
  sh -c 'rein-test-helper write-direct /dev/vdb 4; timeout {WORK_SECS} sh -c "while :; do :; done"' >/dev/null &
rein run --keep --name net --egress {egress}mbit -- \
  iperf3 -c 10.200.0.2 -t {WORK_SECS} >/dev/null &
i=0; until rein stats web >/dev/null 2>&1 && rein stats net >/dev/null 2>&1; do
  [ $i -lt 100 ] || {{ echo "the containers did not start"; exit 1; }}
  sleep 0.1; i=$((i+1))
done
rein ls
echo {UP}
i=0
while [ $i -lt {loops} ]; do
  echo "{RSS}$(awk '/^VmHWM/ {{print $2}}' /proc/$AGENT/status)"
  sleep 5
  i=$((i+1))
done
"#,
        loops = WORK_SECS / 5 + 12,
    )
}

/// The host's Prometheus, killed (by its own handle) when dropped.
struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn prometheus_config() -> String {
    let targets: Vec<String> = NODES
        .iter()
        .map(|n| format!("\"127.0.0.1:{}\"", n.port))
        .collect();
    format!(
        "# Written by cargo xtask vm-fleet: both nodes' forwarded metrics ports.\n\
         global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
         scrape_configs:\n  - job_name: rein\n    honor_labels: true\n    static_configs:\n      \
         - targets: [{}]\n",
        targets.join(", ")
    )
}

fn start_prometheus(dir: &Path) -> anyhow::Result<Prometheus> {
    let data = dir.join("data");
    let _ = std::fs::remove_dir_all(&data);
    let config = dir.join("prometheus.yml");
    std::fs::write(&config, prometheus_config())?;
    let checked = Command::new(crate::setup::promtool_path())
        .args(["check", "config"])
        .arg(&config)
        .stdout(Stdio::null())
        .status()
        .context("promtool: run `cargo xtask setup`")?;
    if !checked.success() {
        bail!(
            "promtool refuses the fleet's own config {}",
            config.display()
        );
    }
    let log = std::fs::File::create(dir.join("prometheus.log"))?;
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", data.display()))
        .arg(format!("--web.listen-address={PROMETHEUS}"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("cannot start prometheus (Debian's package): run `cargo xtask setup`")?;
    Ok(Prometheus(child))
}

/// GET on the host's Prometheus (plain HTTP/1.0 on loopback): the answer's `data`.
fn api(path: &str) -> anyhow::Result<Value> {
    let mut s = TcpStream::connect(PROMETHEUS)?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {PROMETHEUS}\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .ok_or_else(|| anyhow!("no HTTP body from Prometheus"))?;
    let v: Value = serde_json::from_str(body).with_context(|| format!("{path}: {body}"))?;
    if v["status"] != "success" {
        bail!("{path}: {body}");
    }
    Ok(v["data"].clone())
}

/// An instant query's series: their labels and values.
fn query(expr: &str) -> anyhow::Result<Vec<(BTreeMap<String, String>, f64)>> {
    let data = api(&format!(
        "/api/v1/query?query={}",
        form_urlencoded::byte_serialize(expr.as_bytes()).collect::<String>()
    ))?;
    let mut out = Vec::new();
    for r in data["result"].as_array().into_iter().flatten() {
        let labels = r["metric"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
            .collect();
        let v = r["value"][1]
            .as_str()
            .and_then(|v| v.parse().ok())
            .unwrap_or(f64::NAN);
        out.push((labels, v));
    }
    Ok(out)
}

/// `expr`'s value per `node` label.
fn per_node(expr: &str) -> anyhow::Result<BTreeMap<String, f64>> {
    Ok(query(expr)?
        .into_iter()
        .filter_map(|(l, v)| Some((l.get("node")?.clone(), v)))
        .collect())
}

/// Waits until `expr` has a value for every node.
fn wait_for_all(expr: &str, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let got = per_node(expr).unwrap_or_default();
        if NODES.iter().all(|n| got.contains_key(n.name)) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{expr}: after {timeout:?} only nodes {:?}", got.keys());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Waits until Prometheus has scraped every node's target successfully.
fn wait_for_targets(timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let up = query("up == 1").map(|s| s.len()).unwrap_or(0);
        if up == NODES.len() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "after {timeout:?} {up} of {} targets are up (Prometheus's log: \
                 target/fleet/prometheus.log)",
                NODES.len()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// The checks' verdicts, printed as libtest prints them.
struct Verdicts(Tally);

impl Verdicts {
    fn check(&mut self, name: &str, result: Result<String, String>) {
        match result {
            Ok(detail) => {
                println!("test fleet::{name} ... ok ({detail})");
                self.0.passed += 1;
            }
            Err(why) => {
                println!("test fleet::{name} ... FAILED: {why}");
                self.0.failed += 1;
            }
        }
    }
}

/// `expr` per node against `want(node)` within `lo..=hi` times it.
fn per_node_close(
    expr: &str,
    want: impl Fn(&Node) -> f64,
    (lo, hi): (f64, f64),
) -> Result<String, String> {
    let got = per_node(expr).map_err(|e| format!("{e:#}"))?;
    let mut detail = Vec::new();
    let mut bad = Vec::new();
    for n in &NODES {
        let w = want(n);
        match got.get(n.name) {
            Some(v) if (lo * w..=hi * w).contains(v) => {
                detail.push(format!("{}: {v:.4} (want {w:.4})", n.name));
            }
            Some(v) => bad.push(format!("{}: {v} (want {w} x {lo}..{hi})", n.name)),
            None => bad.push(format!("{}: no series", n.name)),
        }
    }
    if got.len() != NODES.len() {
        bad.push(format!("series from nodes {:?}", got.keys()));
    }
    if bad.is_empty() {
        Ok(detail.join(", "))
    } else {
        Err(bad.join("; "))
    }
}

/// Grafana's substitutions: `job` rein's, `node` one node's name or the All value,
/// `container` one name.
fn substitute(expr: &str, node: &str, container: &str) -> String {
    expr.replace("$__rate_interval", "10s")
        .replace("$job", "rein")
        .replace("$node", node)
        .replace("$container", container)
}

/// Every query of every dashboard, for each node alone and for all, with the container
/// variable on `web` and on `net`: for each node selection every panel shows a finite value
/// for one of the two (CPU and disk panels from `web`, TCP and shaper panels from `net`);
/// with All, a query that keeps `node` shows both nodes.
fn dashboards_check() -> Result<String, String> {
    let all_nodes: BTreeSet<&str> = NODES.iter().map(|n| n.name).collect();
    let mut queries = 0;
    let mut bad = Vec::new();
    for (file, _) in crate::dashboards::all() {
        let path = crate::dashboards::dir().join(file);
        let d: Value = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .ok_or_else(|| format!("cannot read {}", path.display()))?;
        for panel in d["panels"].as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or("?");
            for node in NODES.iter().map(|n| n.name).chain(["All"]) {
                let mut finite = false;
                let mut seen = BTreeSet::new();
                let targets = panel["targets"].as_array().into_iter().flatten();
                for (t, container) in targets.flat_map(|t| [(t, "web"), (t, "net")]) {
                    let raw = t["expr"].as_str().unwrap_or_default();
                    let value = if node == "All" { ".*" } else { node };
                    let expr = substitute(raw, value, container);
                    queries += 1;
                    match query(&expr) {
                        Ok(series) => {
                            finite |= series.iter().any(|(_, v)| v.is_finite());
                            seen.extend(series.iter().filter_map(|(l, _)| l.get("node").cloned()));
                        }
                        Err(e) => bad.push(format!("{file} {title:?} ({node}): {e:#}")),
                    }
                }
                if !finite {
                    bad.push(format!("{file}: panel {title:?} has no data for {node}"));
                }
                let seen: BTreeSet<&str> = seen.iter().map(String::as_str).collect();
                if node == "All" && !seen.is_empty() && seen != all_nodes {
                    bad.push(format!(
                        "{file}: panel {title:?} with All shows nodes {seen:?}"
                    ));
                }
            }
        }
    }
    if bad.is_empty() {
        Ok(format!(
            "{queries} queries, every panel has data per node and for all"
        ))
    } else {
        Err(bad.join("\n    "))
    }
}

fn checks() -> Tally {
    let mut v = Verdicts(Tally::default());
    // Everything needs both targets up and both workloads' rates in the window. `up` has
    // only the target's labels, and the targets carry no node on purpose: every `node`
    // below comes from the agents themselves.
    let ready = wait_for_targets(Duration::from_secs(120)).and_then(|()| {
        wait_for_all(
            r#"rate(container_network_transmit_bytes_total{name="net"}[10s]) > 0"#,
            Duration::from_secs(120),
        )
    });
    if let Err(e) = ready {
        v.check("both_nodes_are_scraped", Err(format!("{e:#}")));
        return v.0;
    }
    // Rates settle over a full window of steady work.
    std::thread::sleep(Duration::from_secs(12));
    v.check(
        "each_node_names_itself_and_its_kernel",
        (|| {
            let series = query("rein_node_info").map_err(|e| format!("{e:#}"))?;
            let got: BTreeMap<String, String> = series
                .iter()
                .filter_map(|(l, _)| Some((l.get("node")?.clone(), l.get("kernel")?.clone())))
                .collect();
            let want: BTreeSet<&str> = NODES.iter().map(|n| n.name).collect();
            let names: BTreeSet<&str> = got.keys().map(String::as_str).collect();
            if names != want {
                return Err(format!("nodes {names:?}, want {want:?}"));
            }
            for n in &NODES {
                let k = &got[n.name];
                if !k.starts_with(n.series.name()) {
                    return Err(format!(
                        "{} reports kernel {k}, booted {}",
                        n.name,
                        n.series.name()
                    ));
                }
            }
            Ok(format!("{got:?}"))
        })(),
    );
    v.check(
        "each_node_lists_its_own_containers",
        (|| {
            let series = query("count by (node, name) (container_memory_usage_bytes)")
                .map_err(|e| format!("{e:#}"))?;
            let mut got: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            for (l, _) in series {
                if let (Some(node), Some(name)) = (l.get("node"), l.get("name")) {
                    got.entry(node.clone()).or_default().insert(name.clone());
                }
            }
            let want: BTreeSet<String> = ["net", "web"].map(String::from).into();
            for n in &NODES {
                if got.get(n.name) != Some(&want) {
                    return Err(format!("{}: {:?}", n.name, got.get(n.name)));
                }
            }
            Ok(format!("{got:?}"))
        })(),
    );
    let exact = (0.999, 1.001);
    v.check(
        "cpu_quota_per_node",
        per_node_close(
            r#"container_spec_cpu_quota{name="web"}"#,
            |n| n.cpus * 100_000.0,
            exact,
        ),
    );
    v.check(
        "memory_limit_per_node",
        per_node_close(
            r#"container_spec_memory_limit_bytes{name="web"}"#,
            |n| (n.memory_mib << 20) as f64,
            exact,
        ),
    );
    v.check(
        "egress_limit_per_node",
        per_node_close(
            r#"rein_egress_limit_bytes_per_second{name="net"}"#,
            |n| n.egress_mbit as f64 * 1e6 / 8.0,
            exact,
        ),
    );
    // A busy loop under a quota runs at the quota; the shaper holds TCP near its limit (two
    // emulated guests share two host cores here, hence the wider low end for TCP).
    v.check(
        "cpu_rate_per_node_is_its_quota",
        per_node_close(
            r#"rate(container_cpu_usage_seconds_total{name="web"}[10s])"#,
            |n| n.cpus,
            (0.8, 1.1),
        ),
    );
    v.check(
        "egress_rate_per_node_is_near_its_limit",
        per_node_close(
            r#"rate(container_network_transmit_bytes_total{name="net"}[10s])"#,
            |n| n.egress_mbit as f64 * 1e6 / 8.0,
            (0.6, 1.05),
        ),
    );
    v.check(
        "dashboard_node_variable_offers_both_nodes",
        (|| {
            let data = api("/api/v1/label/node/values?match[]=rein_node_info")
                .map_err(|e| format!("{e:#}"))?;
            let got: BTreeSet<&str> = data
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let want: BTreeSet<&str> = NODES.iter().map(|n| n.name).collect();
            if got == want {
                Ok(format!("{got:?}"))
            } else {
                Err(format!("{got:?}, want {want:?}"))
            }
        })(),
    );
    v.check(
        "every_dashboard_query_per_node_and_for_all",
        dashboards_check(),
    );
    v.0
}

pub fn run(args: &vm::VmArgs) -> anyhow::Result<Tally> {
    let dir: PathBuf = workspace_root().join("target").join("fleet");
    std::fs::create_dir_all(&dir)?;
    let scripts: Vec<PathBuf> = NODES
        .iter()
        .map(|n| {
            let path = dir.join(format!("{}.sh", n.name));
            std::fs::write(&path, guest_script(n)).map(|()| path)
        })
        .collect::<Result<_, _>>()?;
    let guests: Vec<vm::Guest<'_>> = NODES
        .iter()
        .zip(&scripts)
        .map(|(n, s)| vm::Guest {
            series: n.series,
            script: s,
            forward_port: n.port,
        })
        .collect();
    // Which guests are up, and each agent's last reported peak RSS.
    let up = Mutex::new(BTreeSet::new());
    let rss = Mutex::new(BTreeMap::new());
    let on_line = |i: usize, line: &str| {
        if line == UP {
            up.lock().unwrap_or_else(|e| e.into_inner()).insert(i);
        } else if let Some(kb) = line
            .strip_prefix(RSS)
            .and_then(|k| k.trim().parse::<u64>().ok())
        {
            rss.lock().unwrap_or_else(|e| e.into_inner()).insert(i, kb);
        }
    };
    let args = vm::VmArgs {
        timeout: args.timeout.min(WORK_SECS + 600),
        ..args.clone()
    };
    eprintln!(
        "== fleet: {} nodes, one Prometheus on {PROMETHEUS}",
        NODES.len()
    );
    let (tally, outcomes) = vm::together(&args, &guests, &on_line, || -> anyhow::Result<Tally> {
        // Both guests boot in emulation on two host cores: allow them time.
        let deadline = Instant::now() + Duration::from_secs(480);
        while up.lock().unwrap_or_else(|e| e.into_inner()).len() < NODES.len() {
            if Instant::now() > deadline {
                bail!("the nodes did not come up within 480 s (see their serial lines above)");
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        eprintln!("== fleet: both nodes up; Prometheus scrapes them");
        let _prometheus = start_prometheus(&dir)?;
        Ok(checks())
    })?;
    for (n, o) in NODES.iter().zip(&outcomes) {
        if let Err(e) = o {
            eprintln!("== fleet: {} failed: {e:#}", n.name);
        }
    }
    let mut tally = tally?;
    for (i, n) in NODES.iter().enumerate() {
        match rss.lock().unwrap_or_else(|e| e.into_inner()).get(&i) {
            Some(kb) => println!(
                "fleet: {} agent peak RSS {:.1} MiB",
                n.name,
                *kb as f64 / 1024.0
            ),
            None => println!("fleet: {} reported no agent RSS", n.name),
        }
    }
    if outcomes.iter().any(Result::is_err) {
        tally.failed += 1;
    }
    Ok(tally)
}
