//! `rein why`: each workload is diagnosed as what really holds it back, and nothing else.

use integration_tests::{AgentGuard, HOST_DEV, REMOTE_IP, RemoteNetns, http_get, stop_run};

/// `rein why NAME --window 3s --json`: the factors it names, most costly first.
fn why(agent: &AgentGuard, name: &str) -> (Vec<String>, serde_json::Value) {
    let d: serde_json::Value =
        serde_json::from_str(&agent.rein_ok(&["why", name, "--window", "3s", "--json"])).unwrap();
    let factors = d["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["factor"].as_str().unwrap().to_owned())
        .collect();
    eprintln!("why {name}: {d}");
    (factors, d)
}

#[test]
fn a_busy_loop_under_a_small_quota_is_held_by_its_quota() {
    let agent = AgentGuard::start_with("rein-why-quota", &["--metrics-addr", "127.0.0.1:9795"]);
    let busy = agent.run_sh(
        "busy",
        &["--cpus", "0.2", "--cpuset", "1"],
        "while :; do :; done",
    );
    std::thread::sleep(std::time::Duration::from_secs(1));
    let (factors, d) = why(&agent, "busy");
    assert_eq!(factors, ["cpu_quota"], "{d}");
    let share = d["findings"][0]["share"].as_f64().unwrap();
    assert!((0.6..0.95).contains(&share), "throttled share {share}: {d}");
    assert!(
        d["findings"][0]["advice"]
            .as_str()
            .unwrap()
            .contains("--cpus"),
        "{d}"
    );
    // The same factor as a series, once two scrapes span the loop.
    http_get("127.0.0.1:9795", "/metrics");
    std::thread::sleep(std::time::Duration::from_secs(2));
    let text = http_get("127.0.0.1:9795", "/metrics");
    let line = text
        .lines()
        .find(|l| {
            l.starts_with("rein_limiting_factor{")
                && l.contains("name=\"busy\"")
                && l.contains("factor=\"cpu_quota\"")
        })
        .unwrap_or_else(|| panic!("no rein_limiting_factor for busy:\n{text}"));
    let v: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(v > 0.5, "{line}");
    stop_run(busy);
}

#[test]
fn two_loops_on_one_cpu_are_held_by_contention_not_a_limit() {
    let agent = AgentGuard::start("rein-why-contend");
    let a = agent.run_sh("a", &["--cpuset", "0"], "while :; do :; done");
    let b = agent.run_sh("b", &["--cpuset", "0"], "while :; do :; done");
    std::thread::sleep(std::time::Duration::from_secs(1));
    let (factors, d) = why(&agent, "a");
    assert_eq!(factors, ["cpu_contention"], "{d}");
    let share = d["findings"][0]["share"].as_f64().unwrap();
    assert!((0.25..0.8).contains(&share), "waiting share {share}: {d}");
    assert!(
        d["findings"][0]["advice"]
            .as_str()
            .unwrap()
            .contains("would not help"),
        "{d}"
    );
    stop_run(a);
    stop_run(b);
}

#[test]
fn touching_more_than_memory_high_is_memory_reclaim() {
    let agent = AgentGuard::start("rein-why-memory");
    let hog = agent.run_sh(
        "hog",
        &["--memory-high", "24M", "--memory", "512M"],
        "while :; do rein-test-helper alloc 64; done",
    );
    std::thread::sleep(std::time::Duration::from_secs(1));
    let (factors, d) = why(&agent, "hog");
    assert_eq!(
        factors.first().map(String::as_str),
        Some("memory_reclaim"),
        "{d}"
    );
    assert!(
        factors
            .iter()
            .all(|f| f == "memory_reclaim" || f == "cpu_contention" || f == "io"),
        "{d}"
    );
    stop_run(hog);
}

#[test]
fn a_sender_at_its_egress_limit_is_held_by_it() {
    let net = RemoteNetns::new("remote-why");
    let agent = AgentGuard::start_with("rein-why-egress", &["--egress-dev", HOST_DEV]);
    let _server = net.iperf3_server();
    let up = agent.rein_spawn_output(&[
        "run", "--keep", "--name", "up", "--egress", "8mbit", "--", "iperf3", "-c", REMOTE_IP,
        "-t", "6",
    ]);
    agent.wait_for_process("up");
    std::thread::sleep(std::time::Duration::from_secs(1));
    let (factors, d) = why(&agent, "up");
    assert_eq!(
        factors.first().map(String::as_str),
        Some("egress_limit"),
        "{d}"
    );
    assert!(
        factors.iter().all(|f| f == "egress_limit"),
        "only its egress limit holds it: {d}"
    );
    let _ = up.wait_with_output();
}

#[test]
fn an_idle_container_is_not_held_back() {
    let agent = AgentGuard::start("rein-why-idle");
    let idle = agent.run_sh("idle", &["--cpus", "0.5"], "sleep 30");
    let out = agent.rein_ok(&["why", "idle", "--window", "2s"]);
    assert!(out.starts_with("nothing limits idle now"), "{out}");
    let (factors, d) = why(&agent, "idle");
    assert!(factors.is_empty(), "{d}");
    stop_run(idle);
}
