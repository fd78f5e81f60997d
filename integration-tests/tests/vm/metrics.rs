//! The Prometheus endpoint against ground truth: a real Prometheus server (Debian's) scrapes
//! the agent every second, and PromQL answers are compared with what the workloads did.

use std::time::{Duration, Instant};

use integration_tests::{
    AgentGuard, HOST_DEV, Prometheus, REMOTE_IP, RemoteNetns, http_get, http_request,
    promtool_accepts, stop_run,
};

const METRICS: &str = "127.0.0.1:9796";

/// The guest's wall clock in Unix seconds: the clock Prometheus stamps samples with.
fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// One of iperf3's one-second report lines, with the moment the test read it.
struct Second {
    read_at: f64,
    kbits: f64,
}

/// iperf3's text report (`--forceflush -f k -i 1`), read as it is printed.
struct Iperf3Text {
    /// The per-second lines (`[  5]   2.00-3.00   sec  2.38 MBytes  19987 Kbits/sec ...`),
    /// each stamped with the time it arrived.
    seconds: Vec<Second>,
    /// Bytes sent in all, from the sender's summary (its rate over its whole duration).
    sent_bytes: f64,
}

fn iperf3_text(out: std::process::ChildStdout) -> Iperf3Text {
    use std::io::BufRead as _;
    let mut report = Iperf3Text {
        seconds: Vec::new(),
        sent_bytes: 0.0,
    };
    for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
        let read_at = unix_now();
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some(rate) = words.iter().position(|w| *w == "Kbits/sec") else {
            continue;
        };
        let kbits: f64 = words[rate - 1].parse().unwrap();
        // "0.00-8.00": the interval's bounds in seconds.
        let span = words
            .iter()
            .find_map(|w| {
                let (a, b) = w.split_once('-')?;
                Some(b.parse::<f64>().ok()? - a.parse::<f64>().ok()?)
            })
            .unwrap();
        if line.contains("sender") {
            report.sent_bytes = kbits * 1e3 / 8.0 * span;
        } else if !line.contains("receiver") {
            report.seconds.push(Second { read_at, kbits });
        }
    }
    report
}

#[test]
fn prometheus_scrapes_the_agent_and_promql_matches_ground_truth() {
    integration_tests::measures_throughput();
    let net = RemoteNetns::new("remote-prom");
    let agent = AgentGuard::start_with(
        "rein-prom",
        &["--egress-dev", HOST_DEV, "--metrics-addr", METRICS],
    );
    let prom = Prometheus::start(METRICS);
    let server = net.iperf3_server();

    // A direct write to a block device and an OOM kill, then a shaped upload alone (CPU
    // hogs beside it would starve the TCG guest's network), then the CPU workloads.
    agent.rein_ok(&[
        "run",
        "--keep",
        "--name",
        "io",
        "--",
        "rein-test-helper",
        "write-direct",
        "/dev/vdb",
        "4",
    ]);
    let oom = agent.rein(&[
        "run",
        "--keep",
        "--name",
        "oom",
        "--memory",
        "32M",
        "--",
        "rein-test-helper",
        "alloc",
        "64",
    ]);
    assert!(
        !oom.status.success(),
        "the 64 MiB allocation was not OOM-killed"
    );
    let wait = Duration::from_secs(10);
    let spawned = unix_now();
    let mut iperf = agent.rein_spawn_output(&[
        "run",
        "--keep",
        "--name",
        "net",
        "--egress",
        "20mbit",
        "--",
        "iperf3",
        "-c",
        REMOTE_IP,
        "--forceflush",
        "-f",
        "k",
        "-i",
        "1",
        "-t",
        "8",
    ]);
    let report = iperf3_text(iperf.stdout.take().unwrap());
    let seconds = &report.seconds;
    let status = iperf.wait().unwrap();
    assert!(status.success(), "iperf3: {status}");
    // The pinned window: iperf3's seconds 2 to 7 (its first second fills the socket's
    // buffers, its last one drains them), from the moment the test read the line of second 2
    // to that of second 7, on the guest's clock that Prometheus stamps its samples with.
    let steady = &seconds[2..7];
    let (from, to) = (seconds[1].read_at, seconds[6].read_at);
    let iperf_rate = steady.iter().map(|s| s.kbits * 1e3).sum::<f64>() / steady.len() as f64;
    let sent = report.sent_bytes;
    // Wait until Prometheus has scraped past the window, then evaluate inside it.
    let deadline = Instant::now() + Duration::from_secs(10);
    while prom.value(
        r#"timestamp(container_network_transmit_bytes_total{name="net"})"#,
        wait,
    ) < to + 1.0
    {
        assert!(Instant::now() < deadline, "no scrape after iperf3's window");
        std::thread::sleep(Duration::from_millis(250));
    }
    let window_ms = ((to - from) * 1e3).round();
    let selector =
        format!(r#"container_network_transmit_bytes_total{{name="net"}}[{window_ms}ms]"#);
    let scraped = prom.samples_at(&selector, to);
    let net_rate = prom
        .value_at(&format!("rate({selector}) * 8"), to)
        .unwrap_or_else(|| panic!("no rate in the window {from:.3}..{to:.3}: {scraped:?}"));
    eprintln!(
        "promql: window {:.2}..{:.2} s after iperf3's spawn (its seconds 2-7), scrapes at {:?}",
        from - spawned,
        to - spawned,
        scraped
            .iter()
            .map(|(t, _)| format!("{:.2}", t - spawned))
            .collect::<Vec<_>>(),
    );
    // A scrape every second from before the window to its end: rate() then extrapolates
    // less than an interval at either edge (a series that began inside the window would be
    // extrapolated by half an interval only, and read low).
    let covered = scraped.len() + 1 >= (window_ms / 1e3) as usize
        && scraped.first().is_some_and(|(t, _)| t - from <= 1.1)
        && scraped.last().is_some_and(|(t, _)| to - t <= 1.1)
        && prom
            .samples_at(&selector, from)
            .last()
            .is_some_and(|(t, _)| from - t <= 1.1);
    assert!(
        covered,
        "Prometheus's samples do not cover {from:.3}..{to:.3}: {scraped:?}"
    );

    // The VM has two CPUs: the busy loop gets CPU 1 to itself so that only its quota bounds
    // it (sharing CPU 0 with the two pressure loops held it to ~0.42 once).
    let busy = agent.run_sh(
        "busy",
        &["--cpus", "0.5", "--cpuset", "1"],
        "while :; do :; done",
    );
    let psi = agent.run_sh(
        "psi",
        &["--cpuset", "0"],
        "while :; do :; done & while :; do :; done",
    );
    std::thread::sleep(Duration::from_secs(6));
    let cpu = prom.value(
        r#"rate(container_cpu_usage_seconds_total{name="busy"}[4s])"#,
        wait,
    );
    let pressure = prom.value(
        r#"rate(container_pressure_cpu_waiting_seconds_total{name="psi"}[4s])"#,
        wait,
    );
    eprintln!(
        "promql: cpu {cpu:.3} of a CPU (quota 0.5), transmit {:.2} Mbit/s (iperf3 {:.2}), \
         cpu pressure {pressure:.2} s/s",
        net_rate / 1e6,
        iperf_rate / 1e6
    );
    assert!((0.45..0.55).contains(&cpu), "busy loop at {cpu} CPUs");
    // The counter sees IP packets, iperf3 its payload: headers add 0-4% (one set per GSO
    // packet of up to 45 segments, one per 1448 bytes for single segments).
    assert!(
        (0.97..1.06).contains(&(net_rate / iperf_rate)),
        "PromQL transmit rate {net_rate} vs iperf3 {iperf_rate} over the same seconds"
    );
    assert!(pressure > 0.3, "two loops on one CPU: pressure {pressure}");

    // Counters against exact ground truth, once the last scrape has them.
    let deadline = Instant::now() + wait;
    let transmitted = loop {
        let v = prom.value(
            r#"container_network_transmit_bytes_total{name="net"}"#,
            wait,
        );
        if v >= sent || Instant::now() > deadline {
            break v;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        (0.98..1.03).contains(&(transmitted / sent)),
        "transmitted {transmitted} bytes for iperf3's {sent}"
    );
    assert_eq!(
        prom.value(r#"container_oom_events_total{name="oom"}"#, wait),
        1.0,
        "one OOM kill, counted once"
    );
    let written = prom.value(
        r#"container_fs_writes_bytes_total{name="io",device="/dev/vdb"}"#,
        wait,
    );
    assert!(
        written >= 4.0 * 1048576.0,
        "wrote 4 MiB to /dev/vdb, counted {written}"
    );

    // The scrape Prometheus got was OpenMetrics, and healthy.
    let targets = http_get(Prometheus::ADDR, "/api/v1/targets");
    assert!(targets.contains(r#""health":"up""#), "{targets}");
    let (head, body) = http_request(
        METRICS,
        "/metrics",
        "accept: application/openmetrics-text;version=1.0.0\r\n",
    );
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text; version=1.0.0"),
        "{head}"
    );
    assert!(body.ends_with("# EOF\n"), "{body}");
    assert!(body.contains("# TYPE container_cpu_usage_seconds counter\n"));
    // The classic text format of the same moment is lint-clean.
    promtool_accepts(&http_get(METRICS, "/metrics"));

    // A removed container's series go stale in Prometheus.
    stop_run(busy);
    agent.rein_ok(&["rm", "busy"]);
    let deadline = Instant::now() + wait;
    while !prom
        .query(r#"container_cpu_usage_seconds_total{name="busy"}"#)
        .is_empty()
    {
        assert!(Instant::now() < deadline, "busy's series outlived it");
        std::thread::sleep(Duration::from_millis(500));
    }
    stop_run(psi);
    drop(server);
}

/// `rein_runqueue_latency_seconds_{count,sum}` of container `name` in a scrape.
fn runq(text: &str, name: &str) -> (f64, f64) {
    let get = |suffix: &str| -> f64 {
        text.lines()
            .find(|l| {
                l.starts_with(&format!("rein_runqueue_latency_seconds_{suffix}{{"))
                    && l.contains(&format!("name=\"{name}\""))
            })
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0)
    };
    (get("count"), get("sum"))
}

/// The scheduler program (an offset from the kernel's BTF) records how long each container's
/// tasks wait for a CPU: three loops crowded on one CPU wait a time slice at a time, a
/// sleeper alone on the other CPU hardly waits; and the crowd's recorded waits add up to the
/// kernel's own account of them (`/proc/PID/schedstat`).
#[test]
fn runqueue_latency_is_recorded_per_container() {
    let agent = AgentGuard::start_with("rein-runq", &["--metrics-addr", METRICS]);
    let crowd = agent.run_sh(
        "crowd",
        &["--cpuset", "0"],
        "while :; do :; done & while :; do :; done & while :; do :; done",
    );
    let alone = agent.run_sh("alone", &["--cpuset", "1"], "while :; do usleep 5000; done");
    std::thread::sleep(Duration::from_secs(4));
    // The kernel's total wait of the crowd's tasks (the second field of schedstat, ns), read
    // just before the scrape: the recorded sum lags it by each task's current wait (recorded
    // as that run ends) and leads it by what the moment between the reads adds.
    let kernel_wait: f64 = agent
        .cgroup_file("crowd", "cgroup.procs")
        .lines()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/schedstat")).ok())
        .filter_map(|s| s.split_whitespace().nth(1)?.parse::<f64>().ok())
        .sum::<f64>()
        / 1e9;
    let text = http_get(METRICS, "/metrics");
    let (crowd_n, crowd_sum) = runq(&text, "crowd");
    eprintln!("runq: crowd recorded {crowd_sum:.3} s of waits, the kernel {kernel_wait:.3} s");
    assert!(
        (0.9..=1.1).contains(&(crowd_sum / kernel_wait)),
        "recorded {crowd_sum} s vs the kernel's {kernel_wait} s"
    );
    let (alone_n, alone_sum) = runq(&text, "alone");
    let mean = |n: f64, sum: f64| if n > 0.0 { sum / n } else { f64::NAN };
    eprintln!(
        "runq: crowd {crowd_n} waits, mean {:.3} ms; alone {alone_n} waits, mean {:.3} ms",
        mean(crowd_n, crowd_sum) * 1e3,
        mean(alone_n, alone_sum) * 1e3
    );
    assert!(crowd_n > 20.0 && alone_n > 20.0, "too few samples:\n{text}");
    assert!(
        mean(crowd_n, crowd_sum) > 5.0 * mean(alone_n, alone_sum),
        "crowded tasks should wait far longer"
    );
    promtool_accepts(&text);
    let stats = agent.stats("crowd");
    assert!(
        stats["usage"]["runqueue_waits"].as_u64().unwrap() > 0,
        "{stats}"
    );
    stop_run(crowd);
    stop_run(alone);
    agent.rein_ok(&["rm", "--force", "crowd"]);
    let after = http_get(METRICS, "/metrics");
    assert_eq!(
        runq(&after, "crowd"),
        (0.0, 0.0),
        "a removed container's histogram remains"
    );
}

/// The value of `family{...name="NAME"...}` in a scrape (0 when absent).
fn sample(text: &str, family: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(&format!("{family}{{")) && l.contains(&format!("name=\"{name}\"")))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

/// The sock_ops program sees what TCP sees: over a path with 10 ms of delay and 1% loss
/// (netem on the host end), the container's RTT histogram sits above 10 ms and its
/// retransmitted segments match iperf3's own count.
#[test]
fn tcp_round_trips_and_retransmissions_match_iperf3() {
    let net = RemoteNetns::new("remote-tcpstats");
    // fq goes on lo, so netem can own the veth.
    let agent = AgentGuard::start_with(
        "rein-tcpstats",
        &["--egress-dev", "lo", "--metrics-addr", METRICS],
    );
    let tc = std::process::Command::new("/usr/local/sbin/tc")
        .args([
            "qdisc", "replace", "dev", HOST_DEV, "root", "netem", "delay", "10ms", "loss", "1%",
        ])
        .status()
        .unwrap();
    assert!(tc.success(), "netem");
    let server = net.iperf3_server();
    let out = agent.rein_ok(&[
        "run", "--keep", "--name", "tcp", "--", "iperf3", "-c", REMOTE_IP, "-J", "-t", "4",
    ]);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    let iperf_retrans = report["end"]["sum_sent"]["retransmits"].as_f64().unwrap();
    let text = http_get(METRICS, "/metrics");
    let retrans = sample(&text, "rein_tcp_retransmitted_segments_total", "tcp");
    let connections = sample(&text, "rein_tcp_connections_total", "tcp");
    let n = sample(&text, "rein_tcp_rtt_seconds_count", "tcp");
    let mean_rtt = sample(&text, "rein_tcp_rtt_seconds_sum", "tcp") / n;
    eprintln!(
        "tcp: {retrans} segments retransmitted (iperf3: {iperf_retrans}), {connections} \
         connections, {n} RTT samples, mean {:.1} ms",
        mean_rtt * 1e3
    );
    assert!(iperf_retrans > 0.0, "1% loss caused no retransmission");
    assert!(
        (retrans - iperf_retrans).abs() <= 2.0 + 0.1 * iperf_retrans,
        "retransmitted {retrans} vs iperf3 {iperf_retrans}"
    );
    // iperf3 opens a control and a data connection.
    assert!(connections >= 2.0, "{connections} connections");
    assert!(n > 100.0, "{n} RTT samples");
    assert!((0.010..0.2).contains(&mean_rtt), "mean RTT {mean_rtt}");
    // `rein stats` shows the same counters.
    let stats = agent.stats("tcp");
    assert_eq!(
        stats["usage"]["tcp_retransmitted_segments"].as_f64(),
        Some(retrans),
        "{stats}"
    );
    assert!(
        stats["usage"]["tcp_rtt_mean_us"].as_u64().unwrap() >= 10_000,
        "{stats}"
    );
    promtool_accepts(&text);
    drop(server);
}

/// Every series of a container exists from its creation on, counters at zero (Prometheus's
/// guidelines): a container that has sent nothing has `container_network_transmit_bytes_total
/// 0`, so a network panel shows it. `rein set --json` and `rein rm -f --json` answer JSON.
#[test]
fn a_new_container_has_every_series_at_zero_and_set_and_rm_answer_json() {
    let agent = AgentGuard::start_with("rein-zero", &["--metrics-addr", METRICS]);
    let child = agent.run_sh("idle", &["--memory", "64M"], "sleep 60");
    agent.wait_for_process("idle");
    let text = http_get(METRICS, "/metrics");
    for family in [
        "container_network_transmit_bytes_total",
        "container_network_receive_bytes_total",
        "rein_shaper_dropped_packets_total",
        "rein_policer_dropped_packets_total",
        "rein_tcp_retransmitted_segments_total",
        "rein_tcp_connections_total",
        "rein_tcp_rtt_seconds_count",
    ] {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{family}{{")) && l.contains("name=\"idle\""))
            .unwrap_or_else(|| panic!("no {family} series for the idle container"));
        assert!(line.ends_with(" 0"), "{line}");
    }
    // The shaper's delays only where there is a shaper: no egress limit, no series.
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("rein_shaper_delay_seconds") && l.contains("name=\"idle\"")),
        "a delay histogram for a container without an egress limit"
    );
    let set: serde_json::Value =
        serde_json::from_str(&agent.rein_ok(&["set", "idle", "-m", "128M", "--json"])).unwrap();
    assert_eq!(set["name"], "idle");
    assert_eq!(set["limits"]["memory"], "128M", "{set}");
    let rm: serde_json::Value =
        serde_json::from_str(&agent.rein_ok(&["rm", "-f", "idle", "--json"])).unwrap();
    assert_eq!(rm, serde_json::json!({"removed": "idle"}));
    let _ = stop_run(child);
}
