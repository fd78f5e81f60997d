//! The Grafana dashboards against a live node: a real Prometheus scrapes the agent while a
//! container with every limit works (CPU, IO, TCP through the shaper), and every query of
//! every panel, with the dashboard's variables substituted as Grafana would, must parse and
//! return at least one series; every variable's `label_values` must offer a value.

use integration_tests::{
    AgentGuard, HOST_DEV, Prometheus, REMOTE_IP, RemoteNetns, http_get, url_encode,
};

const DASHBOARDS: [(&str, &str); 3] = [
    (
        "rein-node.json",
        include_str!("../../../dashboards/rein-node.json"),
    ),
    (
        "rein-container.json",
        include_str!("../../../dashboards/rein-container.json"),
    ),
    (
        "rein-network.json",
        include_str!("../../../dashboards/rein-network.json"),
    ),
];

/// Grafana's substitutions for one node and container; `$__rate_interval` is at least four
/// scrape intervals (1 s here).
fn substitute(expr: &str, node: &str) -> String {
    expr.replace("$__rate_interval", "10s")
        .replace("$job", "rein")
        .replace("$node", &regex_escape(node))
        .replace("$container", "web")
}

/// The agent's `node` label: the VM's host name (set by its /init).
const NODE: &str = "rein-vm";

/// Grafana escapes regex metacharacters of a single value used with `=~`.
fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            if ".+*?()|[]{}^$\\".contains(c) {
                vec!['\\', '\\', c]
            } else {
                vec![c]
            }
        })
        .collect()
}

#[test]
fn every_panel_of_every_dashboard_shows_data_from_a_live_node() {
    let net = RemoteNetns::new("remote-dash");
    let addr = "127.0.0.1:9793";
    let agent = AgentGuard::start_with(
        "rein-dash",
        &["--egress-dev", HOST_DEV, "--metrics-addr", addr],
    );
    let _server = net.iperf3_server();
    let prom = Prometheus::start(addr);
    // One container with every limit a panel draws, doing CPU, disk and TCP work at once.
    let mut work = agent.rein_spawn(&[
        "run",
        "--keep",
        "--name",
        "web",
        "--cpus",
        "0.5",
        "--memory",
        "64M",
        "--pids",
        "100",
        "--egress",
        "20mbit",
        "--ingress",
        "50mbit",
        "--",
        "sh",
        "-c",
        &format!(
            "rein-test-helper write-direct /dev/vdb 4; iperf3 -c {REMOTE_IP} -t 14 >/dev/null & \
             timeout 14 sh -c 'while :; do :; done'; wait"
        ),
    ]);
    // Rates need two samples inside the 10 s window; the workload runs on meanwhile.
    prom.value(
        r#"count(rate(container_network_transmit_bytes_total{name="web"}[10s]) > 0)"#,
        std::time::Duration::from_secs(30),
    );
    std::thread::sleep(std::time::Duration::from_secs(3));

    let mut checked = 0;
    for (file, text) in DASHBOARDS {
        let d: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(d["schemaVersion"], 42, "{file}");
        for var in d["templating"]["list"].as_array().unwrap() {
            let Some(q) = var["query"]["query"].as_str() else {
                continue;
            };
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|r| r.strip_suffix(')'))
                .unwrap();
            let (selector, label) = inner.rsplit_once(", ").unwrap();
            let body = http_get(
                Prometheus::ADDR,
                &format!(
                    "/api/v1/label/{label}/values?match[]={}",
                    url_encode(&substitute(selector, NODE))
                ),
            );
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert!(
                !v["data"].as_array().unwrap().is_empty(),
                "{file}: variable {q} offers nothing"
            );
        }
        for panel in d["panels"].as_array().unwrap() {
            let mut finite = false;
            for target in panel["targets"].as_array().unwrap() {
                let expr = substitute(target["expr"].as_str().unwrap(), NODE);
                let series = prom.query(&expr);
                assert!(
                    !series.is_empty(),
                    "{file}: panel {:?} query {expr} returned no series",
                    panel["title"]
                );
                finite |= series.iter().any(|(_, v)| v.is_finite());
                checked += 1;
            }
            // A series of NaN (a quantile of an empty window) draws nothing.
            assert!(
                finite,
                "{file}: panel {:?} has no finite value",
                panel["title"]
            );
        }
    }
    println!("{checked} panel queries returned data");
    let _ = work.wait();
    agent.rein_ok(&["rm", "--force", "web"]);
}
