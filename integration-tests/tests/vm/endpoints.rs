//! The endpoints under crowds: idle connections and a flood of scrapers from clients rein
//! does not control must not stop the API (root's `rein set`, a runtime's hook) or
//! Prometheus's own scrape from answering.

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use integration_tests::{AgentGuard, HELPER, OciBundle, RemoteNetns, stop_run};

/// The metrics port of this test, on every address (the crowd comes from a namespace).
const METRICS_PORT: u16 = 9798;

/// The longest a call may take while the crowds are on: typical answers take tens of
/// milliseconds, a stall would take the crowds' whole duration.
const BOUND: Duration = Duration::from_secs(2);

fn bench_line(child: Child) -> serde_json::Value {
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "helper failed: {text}");
    text.lines()
        .find_map(|l| serde_json::from_str(l.strip_prefix("BENCH ")?).ok())
        .unwrap_or_else(|| panic!("no BENCH line: {text}"))
}

/// One scrape from 127.0.0.1 (as the node's Prometheus would make it); its answer time.
fn local_scrape() -> Duration {
    let t = Instant::now();
    let body = integration_tests::http_get(&format!("127.0.0.1:{METRICS_PORT}"), "/metrics");
    assert!(body.contains("rein_node_info"), "{body}");
    t.elapsed()
}

#[test]
fn crowds_on_the_endpoints_leave_the_api_and_prometheus_answering() {
    let remote = RemoteNetns::new("rein-crowd");
    let metrics = format!("0.0.0.0:{METRICS_PORT}");
    let agent = AgentGuard::start_with(
        "rein-crowd",
        &["--allow-uid", "1000", "--metrics-addr", &metrics],
    );
    let steady = agent.run_sh("steady", &["--cpus", "1"], "sleep 120");
    let socket = agent.socket.display().to_string();
    let node_metrics = format!("10.200.0.1:{METRICS_PORT}");
    // The crowd runs in a container with half a CPU, as a pod would: an unlimited local
    // process that spins on connect() takes the node's CPU from everything, which no
    // endpoint design can answer (and in the emulated guest it starves the agent outright).
    let crowd = agent.run_sh("crowd", &["--cpus", "0.5"], "sleep 120");
    let in_crowd = |cmd: &mut Command| {
        integration_tests::spawn_in_cgroup(&agent.root.join("crowd"), cmd.stdout(Stdio::piped()))
    };
    // An allowed uid holding 500 idle API connections, a pod (10.200.0.2) holding 500 idle
    // metrics connections, and 500 scrapers from a third address (the node's 10.200.0.1)
    // scraping as fast as they can. Each address has its own cap, and 127.0.0.1 (the
    // node's Prometheus here) its own too.
    let idle_api = in_crowd(Command::new(HELPER).args(["hold-idle", "1000", &socket, "500", "20"]));
    let idle_metrics = in_crowd(Command::new("/usr/local/sbin/ip").args([
        "netns",
        "exec",
        &remote.name,
        HELPER,
        "hold-idle",
        "1000",
        &node_metrics,
        "500",
        "20",
    ]));
    let flood = in_crowd(Command::new(HELPER).args(["scrape-flood", &node_metrics, "500", "15"]));
    std::thread::sleep(Duration::from_secs(2));

    let (mut worst_set, mut worst_scrape, mut worst_hook) =
        (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    for i in 0..10 {
        let t = Instant::now();
        agent.rein_ok(&[
            "set",
            "steady",
            "--cpus",
            if i % 2 == 0 { "500m" } else { "1" },
        ]);
        worst_set = worst_set.max(t.elapsed());
        worst_scrape = worst_scrape.max(local_scrape());
        if i % 3 == 0 {
            let b = OciBundle::new("runc", &format!("crowd{i}"), &["true"]);
            b.annotate(&[("rein/pids", "50")]);
            b.add_rein_hooks(&agent.socket, &[]);
            let t = Instant::now();
            let out = b.spawn_run().wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "a hooked start failed under the crowds: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            worst_hook = worst_hook.max(t.elapsed());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    eprintln!(
        "crowds: worst rein set {:?}, worst local scrape {:?}, worst hooked runc start {:?}",
        worst_set, worst_scrape, worst_hook
    );

    let flood = bench_line(flood);
    let idle_api = bench_line(idle_api);
    let idle_metrics = bench_line(idle_metrics);
    eprintln!("crowds: scrape flood {flood}");
    stop_run(steady);
    stop_run(crowd);

    assert!(
        worst_set < BOUND,
        "rein set took {worst_set:?} under the crowds"
    );
    assert!(worst_scrape < BOUND, "a local scrape took {worst_scrape:?}");
    // A hooked start is runc's own work (1 to 1.5 s in the emulated guest) plus two calls
    // to the agent.
    assert!(worst_hook < 3 * BOUND, "a hooked start took {worst_hook:?}");
    // The allowed uid, and the pod's address, hold at most their cap: the rest are closed
    // at accept (however busy the agent, well before the 10 s idle timeout), and the ones
    // they hold are closed once idle for it, counted from their accept, so not before.
    let n = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap();
    for (what, idle, cap) in [("API", &idle_api, 32), ("metrics", &idle_metrics, 64)] {
        let closed: Vec<f64> = idle["closed_after_s"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_f64().unwrap())
            .collect();
        let held = closed.iter().filter(|t| **t >= 9.9).count();
        let refused_within = closed
            .iter()
            .copied()
            .filter(|t| *t < 9.9)
            .fold(0.0, f64::max);
        let last = closed.last().copied().unwrap_or_default();
        eprintln!(
            "crowds: {what}: {} connected, {held} held until the idle timeout (the last closed \
             after {last:.2} s), the rest closed at accept within {refused_within:.2} s",
            n(idle, "connected")
        );
        assert!(
            held <= cap,
            "{what}: {held} idle connections held, cap {cap}: {idle}"
        );
        assert_eq!(
            n(idle, "still_open"),
            0,
            "{what}: idle connections kept: {idle}"
        );
        assert!(
            last < 14.0,
            "{what}: idle connections held {last} s: {idle}"
        );
    }
    // The flood keeps being answered, 64 connections at a time (that scrapes share
    // collections is a unit test of `metrics::Scrapes`).
    assert!(
        n(&flood, "answered") >= 500,
        "the flood was hardly answered: {flood}"
    );
}
