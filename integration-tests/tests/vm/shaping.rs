//! Egress shaping end to end: the agent's eBPF programs pace a container's traffic through
//! `fq` on the egress device to the configured rate.

use integration_tests::{
    AgentGuard, ContainerNetns, HOST_DEV, REMOTE_IP, RemoteNetns, http_get, promtool_accepts,
};

/// Runs iperf3 in a new container with `limits`; returns its JSON report.
fn iperf3(agent: &AgentGuard, name: &str, limits: &[&str], extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["run", "--keep", "--name", name];
    args.extend_from_slice(limits);
    args.extend_from_slice(&["--", "iperf3", "-c", REMOTE_IP, "-J"]);
    args.extend_from_slice(extra);
    let out = agent.rein_ok(&args);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("iperf3 JSON ({e}): {out}"))
}

#[test]
fn tcp_egress_lands_within_five_percent_of_the_limit() {
    integration_tests::measures_throughput();
    let net = RemoteNetns::new("remote-tcp");
    let agent = AgentGuard::start_with(
        "rein-shape",
        &["--egress-dev", HOST_DEV, "--metrics-addr", "127.0.0.1:9797"],
    );
    let _server = net.iperf3_server();
    let child = spawn_iperf3(&agent, "tcp", &["--egress", "20mbit"], "5");
    // The steady rate from rein's own counters (what left through the shaper), past TCP's
    // ramp-up; then the whole run as iperf3 saw it.
    std::thread::sleep(std::time::Duration::from_millis(1000));
    let steady = agent.tx_rate("tcp", std::time::Duration::from_millis(3000));
    let report = report_of(child);
    let goodput = report["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap();
    let sent = report["end"]["sum_sent"]["bytes"].as_f64().unwrap();
    let s = agent.stats("tcp");
    assert_eq!(
        s["egress_mode"], "edt-fq on rein-h0",
        "rein stats names the shaping mode"
    );
    let tx = s["usage"]["net_tx_bytes"].as_f64().unwrap();
    let secs = report["end"]["sum_sent"]["seconds"].as_f64().unwrap();
    // The shaper meters skb->len at the cgroup hook, where TCP hands over GSO packets of up
    // to 64 KB with one set of headers: what it limits is close to TCP payload, so goodput
    // lands on the limit (on the wire, per-segment headers add ~3.6%).
    let ratio = steady / 20e6;
    eprintln!(
        "tcp: steady {:.2} Mbit/s ({ratio:.3} of the limit), whole-run goodput {:.2} Mbit/s, \
         counted {tx} bytes for {sent} payload bytes in {secs:.1}s, delayed {} marked {} \
         dropped {}",
        steady / 1e6,
        goodput / 1e6,
        s["usage"]["net_tx_delayed_packets"],
        s["usage"]["net_tx_marked_packets"],
        s["usage"]["net_tx_dropped_packets"],
    );
    assert!(
        (0.95..1.05).contains(&ratio),
        "steady rate {ratio:.3} of the 20mbit limit"
    );
    // The whole run includes TCP's first second of ramp-up.
    assert!(
        goodput / 20e6 > 0.9,
        "whole-run goodput {:.3} of the limit",
        goodput / 20e6
    );
    // The counters saw what iperf3 sent, within 2%.
    let counted = tx / sent;
    assert!(
        (0.98..1.02).contains(&counted),
        "counted {counted:.3} bytes per payload byte"
    );
    // The shaper's view in Prometheus: limit, counters and the delay histogram, lint-clean.
    let text = http_get("127.0.0.1:9797", "/metrics");
    let labels = r#"{id="/rein-shape.slice/tcp",name="tcp",node="rein-vm"}"#;
    let delayed = s["usage"]["net_tx_delayed_packets"].as_u64().unwrap();
    for want in [
        format!("rein_egress_limit_bytes_per_second{labels} 2500000"),
        format!("rein_shaper_delay_seconds_count{labels} {delayed}"),
        format!("container_network_transmit_bytes_total{labels} {tx}"),
    ] {
        assert!(text.contains(&want), "expected {want:?} in:\n{text}");
    }
    promtool_accepts(&text);
    agent.rein_ok(&["rm", "tcp"]);
}

/// Mean received rate (bits/s) of the iperf3 intervals that start at or after `from` and end
/// at or before `to` seconds.
fn interval_rate(report: &serde_json::Value, from: f64, to: f64) -> f64 {
    let rates: Vec<f64> = report["intervals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| &i["sum"])
        .filter(|s| s["start"].as_f64().unwrap() >= from && s["end"].as_f64().unwrap() <= to)
        .map(|s| s["bits_per_second"].as_f64().unwrap())
        .collect();
    assert!(!rates.is_empty(), "no interval in {from}..{to}s");
    rates.iter().sum::<f64>() / rates.len() as f64
}

fn spawn_iperf3(
    agent: &AgentGuard,
    name: &str,
    limits: &[&str],
    secs: &str,
) -> std::process::Child {
    spawn_iperf3_in(agent, name, limits, secs, None, &[])
}

/// Like `spawn_iperf3`, with the client in network namespace `netns` (entered after it is in
/// the container's cgroup, as a runtime does).
fn spawn_iperf3_in(
    agent: &AgentGuard,
    name: &str,
    limits: &[&str],
    secs: &str,
    netns: Option<&str>,
    extra: &[&str],
) -> std::process::Child {
    let mut args = vec!["--socket".to_owned(), agent.socket.display().to_string()];
    args.extend(["run", "--keep", "--name", name].map(String::from));
    args.extend(limits.iter().map(|s| (*s).to_owned()));
    args.push("--".into());
    if let Some(ns) = netns {
        args.extend(["/usr/local/sbin/ip", "netns", "exec", ns].map(String::from));
    }
    args.extend(["iperf3", "-c", REMOTE_IP, "-J", "-i", "0.5", "-t", secs].map(String::from));
    args.extend(extra.iter().map(|s| (*s).to_owned()));
    std::process::Command::new("rein")
        .args(&args)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

fn report_of(child: std::process::Child) -> serde_json::Value {
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "rein run iperf3: {out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn a_live_rate_change_takes_effect_within_a_second() {
    integration_tests::measures_throughput();
    let net = RemoteNetns::new("remote-live");
    let agent = AgentGuard::start_with("rein-live", &["--egress-dev", HOST_DEV]);
    let _server = net.iperf3_server();
    let child = spawn_iperf3(&agent, "live", &["--egress", "20mbit"], "7");
    // Past TCP's ramp-up (and the first second's slow start on a loaded TCG guest).
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let before = agent.tx_rate("live", std::time::Duration::from_millis(1500));
    agent.rein_ok(&["set", "live", "--egress", "40mbit"]);
    // Measure from one second after the call returned.
    std::thread::sleep(std::time::Duration::from_secs(1));
    let after = agent.tx_rate("live", std::time::Duration::from_millis(2000));
    report_of(child);
    eprintln!(
        "live: {:.1} Mbit/s before, {:.1} Mbit/s from 1 s after the change (shaper counters)",
        before / 1e6,
        after / 1e6
    );
    assert!((0.9..1.1).contains(&(before / 20e6)), "before: {before}");
    assert!((0.9..1.1).contains(&(after / 40e6)), "after: {after}");
}

#[test]
fn shaping_survives_an_agent_crash_and_a_restart_adopts_it() {
    integration_tests::measures_throughput();
    let net = RemoteNetns::new("remote-crash");
    let mut agent = AgentGuard::start_with("rein-crash", &["--egress-dev", HOST_DEV]);
    let _server = net.iperf3_server();
    let child = spawn_iperf3(&agent, "steady", &["--egress", "20mbit"], "5");
    std::thread::sleep(std::time::Duration::from_millis(1500));
    agent.stop(libc::SIGKILL);
    let report = report_of(child);
    let while_down = interval_rate(&report, 2.0, 5.0);
    eprintln!(
        "crash: {:.1} Mbit/s while the agent was down",
        while_down / 1e6
    );
    assert!(
        (0.9..1.1).contains(&(while_down / 20e6)),
        "while down: {while_down}"
    );
    agent.restart();
    let ls = agent.rein_ok(&["ls", "--json"]);
    assert!(
        ls.contains("\"egress\": \"20mbit\""),
        "the restarted agent lost the limit: {ls}"
    );
    let counted = agent.stats("steady");
    let tx = counted["usage"]["net_tx_bytes"].as_f64().unwrap();
    let sent = report["end"]["sum_sent"]["bytes"].as_f64().unwrap();
    assert!(
        (0.98..1.02).contains(&(tx / sent)),
        "counters across the crash: {tx} for {sent}"
    );
    // The restarted agent runs its own egress stages behind the adopted programs: a new
    // container is shaped and counted through both.
    let report = report_of(spawn_iperf3(&agent, "after", &["--egress", "20mbit"], "4"));
    let after = interval_rate(&report, 1.0, 4.0);
    let tx = agent.stats("after")["usage"]["net_tx_bytes"]
        .as_f64()
        .unwrap_or(0.0);
    let sent = report["end"]["sum_sent"]["bytes"].as_f64().unwrap();
    eprintln!(
        "after the restart: {:.1} Mbit/s, counted {tx} of {sent} bytes",
        after / 1e6
    );
    assert!(
        (0.9..1.06).contains(&(after / 20e6)),
        "after the restart: {after}"
    );
    assert!(
        (0.98..1.03).contains(&(tx / sent)),
        "counted after the restart: {tx} for {sent}"
    );
}

#[test]
fn udp_egress_is_held_to_the_limit() {
    integration_tests::measures_throughput();
    let net = RemoteNetns::new("remote-udp");
    let agent = AgentGuard::start_with("rein-udp", &["--egress-dev", HOST_DEV]);
    let _server = net.iperf3_server();
    let report = iperf3(
        &agent,
        "udp",
        &["--egress", "20mbit"],
        &["-u", "-b", "60M", "-l", "1400", "-t", "4"],
    );
    let received = report["end"]["sum"]["bits_per_second"].as_f64().unwrap()
        * (1.0 - report["end"]["sum"]["lost_percent"].as_f64().unwrap() / 100.0);
    // Each 1400-byte datagram is a 1428-byte IP packet.
    let ip_rate = received * 1428.0 / 1400.0;
    let s = agent.stats("udp");
    eprintln!(
        "udp: received {:.2} Mbit/s of payload, {:.2} Mbit/s as IP ({:.3} of the limit); dropped {}",
        received / 1e6,
        ip_rate / 1e6,
        ip_rate / 20e6,
        s["usage"]["net_tx_dropped_packets"]
    );
    assert!(
        (0.95..1.05).contains(&(ip_rate / 20e6)),
        "udp at {:.3} of the limit",
        ip_rate / 20e6
    );
}

#[test]
fn removing_a_container_leaves_no_map_entry() {
    use std::os::unix::fs::MetadataExt as _;
    let agent = AgentGuard::start_with("rein-clean", &["--egress-dev", "lo"]);
    agent.rein_ok(&[
        "run",
        "--keep",
        "--name",
        "gone",
        "--egress",
        "5mbit",
        "--priority",
        "high",
        "--",
        "true",
    ]);
    let id = std::fs::metadata(agent.root.join("gone")).unwrap().ino();
    let shaper = agent.bpf_dir().join("REIN_SHAPER");
    let keys = |path: &std::path::Path| {
        integration_tests::pinned_keys::<controller_common::ShaperConfig>(path)
    };
    assert_eq!(
        keys(&shaper),
        vec![id],
        "the limit should be in the pinned map"
    );
    agent.rein_ok(&["rm", "gone"]);
    assert!(
        keys(&shaper).is_empty(),
        "a removed container left its shaping behind"
    );
}

#[test]
fn ingress_policing_holds_a_tcp_download_near_the_limit() {
    integration_tests::measures_throughput();
    let net = RemoteNetns::new("remote-in");
    let agent = AgentGuard::start_with("rein-ingress", &["--egress-dev", HOST_DEV]);
    let _server = net.iperf3_server();
    // -R: the remote end sends, the container receives.
    let report = iperf3(&agent, "down", &["--ingress", "20mbit"], &["-R", "-t", "5"]);
    let goodput = report["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap();
    let s = agent.stats("down");
    eprintln!(
        "ingress: goodput {:.2} Mbit/s ({:.3} of the limit), policer dropped {}, retransmits {}",
        goodput / 1e6,
        goodput / 20e6,
        s["usage"]["net_rx_dropped_packets"],
        report["end"]["sum_sent"]["retransmits"]
    );
    // Policing can only drop: TCP's average lands near the rate, less exactly than pacing.
    assert!(
        (0.8..1.1).contains(&(goodput / 20e6)),
        "ingress at {:.3} of the limit",
        goodput / 20e6
    );
    assert!(
        s["usage"]["net_rx_dropped_packets"].as_u64().unwrap() > 0,
        "nothing was policed"
    );
    let ls = agent.rein_ok(&["ls", "--json"]);
    assert!(ls.contains("\"ingress\": \"20mbit\""), "{ls}");
}

/// A container in its own network namespace: its packets cross a veth pair and are forwarded
/// by the root namespace. The agent puts `fq` on the container's `eth0` inside the namespace,
/// where the departure time is honoured before the crossing and TCP Small Queues still push
/// back on the sender.
#[test]
fn a_container_in_its_own_netns_is_paced_inside_it() {
    integration_tests::measures_throughput();
    let net = RemoteNetns::new("remote-ns");
    net.route_back(ContainerNetns::SUBNET);
    let ctr = ContainerNetns::new("ctr-ns");
    assert!(!ctr.paced_by_fq());
    let agent = AgentGuard::start_with("rein-netns", &["--egress-dev", HOST_DEV]);
    let _server = net.iperf3_server();
    let child = spawn_iperf3_in(
        &agent,
        "inns",
        &["--egress", "20mbit"],
        "7",
        Some(&ctr.name),
        &[],
    );
    // The agent looks for new namespaces every second; judge the rate once fq is in place
    // there (installing it replaces the qdisc under a running flow).
    ctr.wait_paced(std::time::Duration::from_secs(4));
    std::thread::sleep(std::time::Duration::from_millis(700));
    let steady = agent.tx_rate("inns", std::time::Duration::from_millis(3000));
    let s = agent.stats("inns");
    let report = report_of(child);
    let ratio = steady / 20e6;
    eprintln!(
        "netns: steady {:.2} Mbit/s ({ratio:.3} of the limit), retransmits {}, marked {}, \
         dropped {}, mode {}",
        steady / 1e6,
        report["end"]["sum_sent"]["retransmits"],
        s["usage"]["net_tx_marked_packets"],
        s["usage"]["net_tx_dropped_packets"],
        s["egress_mode"],
    );
    assert!(ctr.paced_by_fq(), "the agent did not pace inside the netns");
    assert_eq!(
        s["egress_mode"],
        "edt-fq on rein-h0 and eth0 in the container's network namespace"
    );
    // Alone this lands at 1.015-1.035; late in the full suite on 6.12 it has measured 0.945
    // (forwarded traffic costs the TCG guest more), so the bound is 10% here; the host-network
    // test holds the 5% one.
    assert!(
        (0.9..1.1).contains(&ratio),
        "steady rate {ratio:.3} of the 20mbit limit"
    );
    agent.rein_ok(&["rm", "inns"]);
}

/// `--egress-mode police` (what `auto` picks without sch_fq): nothing is delayed, TCP is
/// slowed by congestion notification and UDP by drops.
#[test]
fn police_mode_holds_tcp_and_udp_near_the_limit() {
    integration_tests::measures_throughput();
    let net = RemoteNetns::new("remote-police");
    let agent = AgentGuard::start_with(
        "rein-police",
        &["--egress-dev", HOST_DEV, "--egress-mode", "police"],
    );
    let _server = net.iperf3_server();
    let child = spawn_iperf3(&agent, "ptcp", &["--egress", "20mbit"], "5");
    std::thread::sleep(std::time::Duration::from_millis(1000));
    let steady = agent.tx_rate("ptcp", std::time::Duration::from_millis(3000));
    let report = report_of(child);
    let s = agent.stats("ptcp");
    let tcp = steady / 20e6;
    eprintln!(
        "police tcp: steady {:.2} Mbit/s ({tcp:.3} of the limit), retransmits {}, delayed {}, \
         marked {}, dropped {}",
        steady / 1e6,
        report["end"]["sum_sent"]["retransmits"],
        s["usage"]["net_tx_delayed_packets"],
        s["usage"]["net_tx_marked_packets"],
        s["usage"]["net_tx_dropped_packets"],
    );
    assert_eq!(
        s["egress_mode"],
        "police-cn (chosen with --egress-mode police)"
    );
    assert_eq!(
        s["usage"]["net_tx_delayed_packets"], 0,
        "police mode delays nothing"
    );
    assert!(
        s["usage"]["net_tx_marked_packets"].as_u64().unwrap() > 0,
        "TCP was never notified"
    );
    // Measured 0.957-1.035 on both kernels: policing is a few percent looser than pacing.
    assert!(
        (0.85..1.08).contains(&tcp),
        "police tcp at {tcp:.3} of the limit"
    );
    // Policing lets a sender run up to the horizon (200 ms) into debt once, so judge the
    // steady rate past the first second, from what rein let through.
    let child = spawn_iperf3_in(
        &agent,
        "pudp",
        &["--egress", "20mbit"],
        "5",
        None,
        &["-u", "-b", "60M", "-l", "1400"],
    );
    std::thread::sleep(std::time::Duration::from_millis(1000));
    let udp = agent.tx_rate("pudp", std::time::Duration::from_millis(3000)) / 20e6;
    report_of(child);
    eprintln!("police udp: steady {udp:.3} of the limit as IP");
    assert!(
        (0.95..1.05).contains(&udp),
        "police udp at {udp:.3} of the limit"
    );
}

/// `--egress-burst` per container: stored in the shaper map, shown by `rein ls`, changed live.
#[test]
fn egress_burst_is_per_container_and_live() {
    let agent = AgentGuard::start_with("rein-burst", &["--egress-dev", "lo"]);
    agent.rein_ok(&[
        "run",
        "--keep",
        "--name",
        "b",
        "--egress",
        "10mbit",
        "--egress-burst",
        "5ms",
        "--",
        "true",
    ]);
    let ls = agent.rein_ok(&["ls", "--json"]);
    assert!(ls.contains("\"egress-burst\": \"5ms\""), "{ls}");
    agent.rein_ok(&["set", "b", "--egress-burst", "500us"]);
    let ls = agent.rein_ok(&["ls", "--json"]);
    assert!(ls.contains("\"egress-burst\": \"500us\""), "{ls}");
    let bad = agent.rein(&["set", "b", "--egress-burst", "64K"]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("the burst is a time, not a size"),
        "{bad:?}"
    );
    agent.rein_ok(&["rm", "b"]);
}

/// A container's shaping entry as the pinned map holds it.
fn pinned_shaping(agent: &AgentGuard, name: &str) -> controller_common::ShaperConfig {
    use std::os::unix::fs::MetadataExt as _;
    let id = std::fs::metadata(agent.root.join(name)).unwrap().ino();
    let data = aya::maps::MapData::from_pin(agent.bpf_dir().join("REIN_SHAPER")).unwrap();
    let map: aya::maps::HashMap<_, u64, controller_common::ShaperConfig> =
        aya::maps::HashMap::try_from(aya::maps::Map::HashMap(data)).unwrap();
    map.get(&id, 0).unwrap()
}

/// An agent restarted in police mode switches adopted limits to policing, with police
/// timings where they were on the pacing defaults (those would collapse TCP), and back.
#[test]
fn a_mode_change_on_restart_switches_adopted_limits() {
    let mut agent = AgentGuard::start_with("rein-mode", &["--egress-dev", "lo"]);
    agent.rein_ok(&[
        "run", "--keep", "--name", "m", "--egress", "20mbit", "--", "true",
    ]);
    let ms = 1_000_000;
    let edt = pinned_shaping(&agent, "m");
    assert_eq!(edt.flags & controller_common::POLICE, 0);
    assert_eq!((edt.mark_ns, edt.horizon_ns), (4 * ms, 40 * ms));
    agent.restart_with(&["--egress-dev", "lo", "--egress-mode", "police"]);
    let police = pinned_shaping(&agent, "m");
    assert_ne!(police.flags & controller_common::POLICE, 0);
    assert_eq!((police.mark_ns, police.horizon_ns), (40 * ms, 200 * ms));
    assert_eq!(
        police.rate_bytes_per_sec, 2_500_000,
        "the limit itself is kept"
    );
    assert_eq!(
        agent.stats("m")["egress_mode"],
        "police-cn (chosen with --egress-mode police)"
    );
    agent.restart_with(&["--egress-dev", "lo"]);
    assert_eq!(pinned_shaping(&agent, "m"), edt, "back to pacing as it was");
    agent.rein_ok(&["rm", "m"]);
}

/// Bytes sent through each class of the prio qdisc on the host end (`1:1`, `1:2`, `1:3`).
fn prio_class_bytes() -> Vec<u64> {
    let out = std::process::Command::new("/usr/local/sbin/tc")
        .args(["-s", "class", "show", "dev", HOST_DEV])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut bytes = Vec::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.starts_with("class prio 1:") {
            let sent = lines
                .next()
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
                .unwrap_or(0);
            bytes.push(sent);
        }
    }
    bytes
}

/// `--priority` reaches the qdiscs: rein writes skb->priority (high 6, normal 0, low 2), and a
/// prio qdisc's default priomap sends those to bands 1:1, 1:2 and 1:3.
#[test]
fn priority_classes_reach_the_egress_qdisc() {
    let net = RemoteNetns::new("remote-prio");
    let agent = AgentGuard::start_with("rein-prio", &["--egress-dev", "lo"]);
    let ok = std::process::Command::new("/usr/local/sbin/tc")
        .args([
            "qdisc", "replace", "dev", HOST_DEV, "root", "handle", "1:", "prio",
        ])
        .status()
        .unwrap();
    assert!(ok.success(), "prio qdisc");
    let _server = net.iperf3_server();
    let mut sent = Vec::new();
    for class in ["high", "normal", "low"] {
        let before = prio_class_bytes();
        iperf3(
            &agent,
            &format!("p-{class}"),
            &["--priority", class],
            &["-n", "2M"],
        );
        let after = prio_class_bytes();
        let delta: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
        eprintln!("priority {class}: bytes per band {delta:?}");
        sent.push(delta);
    }
    // Each run's 2 MB went through its own band (a little control traffic aside).
    for (i, delta) in sent.iter().enumerate() {
        let total: u64 = delta.iter().sum();
        assert!(
            delta[i] * 10 > total * 9,
            "band 1:{} should carry run {i}: {sent:?}",
            i + 1
        );
    }
}

/// On a device with several transmit queues the agent installs `mq` with one `fq` per queue
/// (one root `fq` would make every queue contend for its lock), and shaping holds.
#[test]
fn a_multiqueue_device_gets_fq_per_queue_under_mq() {
    integration_tests::measures_throughput();
    let net = RemoteNetns::with_queues("remote-mq", 4);
    let agent = AgentGuard::start_with("rein-mq", &["--egress-dev", HOST_DEV]);
    let out = std::process::Command::new("/usr/local/sbin/tc")
        .args(["qdisc", "show", "dev", HOST_DEV])
        .output()
        .unwrap();
    let qdiscs = String::from_utf8_lossy(&out.stdout);
    assert!(qdiscs.contains("qdisc mq 1: root"), "{qdiscs}");
    assert_eq!(qdiscs.matches("qdisc fq ").count(), 4, "{qdiscs}");
    let _server = net.iperf3_server();
    let child = spawn_iperf3(&agent, "mq", &["--egress", "20mbit"], "5");
    std::thread::sleep(std::time::Duration::from_millis(1000));
    let steady = agent.tx_rate("mq", std::time::Duration::from_millis(3000));
    report_of(child);
    let ratio = steady / 20e6;
    eprintln!(
        "mq: steady {:.2} Mbit/s ({ratio:.3} of the limit)",
        steady / 1e6
    );
    assert!((0.95..1.05).contains(&ratio), "steady rate {ratio:.3}");
}
