//! Limits that hold for the whole subtree: processes that escape into cgroups of their own
//! below a container, groups whose limits cap their members, Kubernetes pods sharing their
//! bandwidth annotation, and senders that stamp their own departure times.

use std::time::Duration;

use integration_tests::{
    AgentGuard, HOST_DEV, OciBundle, REMOTE_IP, RemoteNetns, shaper_keys, traffic_keys,
};

fn tx_bytes(agent: &AgentGuard, name: &str) -> f64 {
    agent.stats(name)["usage"]["net_tx_bytes"]
        .as_f64()
        .unwrap_or(0.0)
}

fn rx_bytes(agent: &AgentGuard, name: &str) -> f64 {
    agent.stats(name)["usage"]["net_rx_bytes"]
        .as_f64()
        .unwrap_or(0.0)
}

/// iperf3 to `port` inside container `name` (made with `limits` first, unless `limits` is
/// `None`: then it exists already), run through `rein-test-helper nest` with `nest` (depth
/// and flags) so the process escapes into cgroups of its own first.
fn iperf3_nested(
    agent: &AgentGuard,
    name: &str,
    limits: Option<&[&str]>,
    nest: &[&str],
    port: u16,
    extra: &[&str],
) -> std::process::Child {
    let port = port.to_string();
    let mut cmd = vec!["rein-test-helper", "nest"];
    cmd.extend_from_slice(nest);
    cmd.extend_from_slice(&["--", "iperf3", "-c", REMOTE_IP, "-J", "-p", &port]);
    cmd.extend_from_slice(extra);
    match limits {
        Some(limits) => {
            let mut args = vec!["run", "--keep", "--name", name];
            args.extend_from_slice(limits);
            args.push("--");
            args.extend_from_slice(&cmd);
            let child = agent.rein_spawn_output(&args);
            agent.wait_listed(name);
            child
        }
        None => {
            let dir = agent.root.join(name);
            let mut c = std::process::Command::new(cmd[0]);
            c.args(&cmd[1..]).stdout(std::process::Stdio::piped());
            integration_tests::spawn_in_cgroup(&dir, &mut c)
        }
    }
}

fn report(child: std::process::Child) -> serde_json::Value {
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "rein run iperf3: {out:?}");
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Mean rate (bit/s) of an iperf3 report's intervals after the first second.
fn steady(report: &serde_json::Value) -> f64 {
    let rates: Vec<f64> = report["intervals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| &i["sum"])
        .filter(|s| s["start"].as_f64().unwrap() >= 1.0)
        .map(|s| s["bits_per_second"].as_f64().unwrap())
        .collect();
    rates.iter().sum::<f64>() / rates.len().max(1) as f64
}

/// A process that moves itself into a child, a grandchild, or a child in its own cgroup
/// namespace of its container is still held to the container's egress and ingress limits,
/// and its bytes are counted as the container's.
#[test]
fn processes_in_cgroups_below_a_container_are_held_and_counted() {
    integration_tests::measures_throughput();
    let net = RemoteNetns::new("remote-nest");
    let agent = AgentGuard::start_with("rein-nest", &["--egress-dev", HOST_DEV]);
    let _server = net.iperf3_server();
    agent.rein_ok(&[
        "run",
        "--keep",
        "--name",
        "box",
        "--egress",
        "10mbit",
        "--ingress",
        "10mbit",
        "--",
        "true",
    ]);
    for (what, nest) in [
        ("child", &["1"][..]),
        ("grandchild", &["2"][..]),
        ("cgroup namespace", &["1", "--cgroupns"][..]),
    ] {
        let before = tx_bytes(&agent, "box");
        let r = report(iperf3_nested(
            &agent,
            "box",
            None,
            nest,
            5201,
            &["-t", "4", "-i", "1"],
        ));
        let rate = steady(&r);
        let sent = r["end"]["sum_sent"]["bytes"].as_f64().unwrap();
        let counted = tx_bytes(&agent, "box") - before;
        eprintln!(
            "nested {what}: {:.2} Mbit/s under 10mbit, counted {counted} of {sent} bytes",
            rate / 1e6
        );
        assert!(
            (0.85..1.06).contains(&(rate / 10e6)),
            "{what}: {:.2} Mbit/s under a 10mbit limit",
            rate / 1e6
        );
        assert!(
            (0.98..1.05).contains(&(counted / sent)),
            "{what}: counted {counted} bytes as the container's for {sent} sent"
        );
    }
    // Ingress: a download into a grandchild is policed at the container's limit.
    let before = rx_bytes(&agent, "box");
    let r = report(iperf3_nested(
        &agent,
        "box",
        None,
        &["2"],
        5201,
        &["-R", "-t", "4", "-i", "1"],
    ));
    let rate = steady(&r);
    let counted = rx_bytes(&agent, "box") - before;
    eprintln!(
        "nested grandchild download: {:.2} Mbit/s under 10mbit ingress, counted {counted}",
        rate / 1e6
    );
    assert!(
        (0.6..1.15).contains(&(rate / 10e6)),
        "download at {:.2} Mbit/s under a 10mbit ingress limit",
        rate / 1e6
    );
    assert!(counted > 0.5 * rate / 8.0 * 3.0, "received bytes counted");
    agent.rein_ok(&["rm", "--force", "box"]);
}

/// A group's egress limit caps the sum of its members, each member stays within its own,
/// and the group's figures cover both. Groups nest, show as a tree, refuse to go while they
/// hold members, and a member of a group that does not exist is refused.
#[test]
fn a_two_level_group_caps_its_members_sum_and_each_keeps_its_own_limit() {
    integration_tests::measures_throughput();
    let net = RemoteNetns::new("remote-group");
    let agent = AgentGuard::start_with("rein-group", &["--egress-dev", HOST_DEV]);
    let _s1 = net.iperf3_server_on(5201);
    let _s2 = net.iperf3_server_on(5202);
    let refused = agent.rein(&["run", "--group", "nope", "--", "true"]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && err.contains("group nope does not exist"),
        "{err}"
    );
    agent.rein_ok(&[
        "group", "create", "team", "--egress", "16mbit", "--cpus", "1.5",
    ]);
    agent.rein_ok(&["group", "create", "sub", "--group", "team"]);
    assert!(
        agent.root.join("team/sub").is_dir(),
        "sub is a cgroup inside team"
    );
    assert_eq!(agent.cgroup_file("team", "cpu.max").trim(), "150000 100000");
    let a = iperf3_nested(
        &agent,
        "a",
        Some(&["--group", "sub", "--egress", "12mbit"]),
        &["0"],
        5201,
        &["-t", "5", "-i", "1"],
    );
    let b = iperf3_nested(
        &agent,
        "b",
        Some(&["--group", "sub", "--egress", "12mbit"]),
        &["0"],
        5202,
        &["-t", "5", "-i", "1"],
    );
    let ls = agent.rein_ok(&["ls"]);
    assert!(
        ls.contains("team") && ls.contains("  sub") && ls.contains("    a"),
        "rein ls shows the tree:\n{ls}"
    );
    let (ra, rb) = (report(a), report(b));
    let (rate_a, rate_b) = (steady(&ra), steady(&rb));
    let sent = ra["end"]["sum_sent"]["bytes"].as_f64().unwrap()
        + rb["end"]["sum_sent"]["bytes"].as_f64().unwrap();
    let team_tx = tx_bytes(&agent, "team");
    eprintln!(
        "group: a {:.2} + b {:.2} = {:.2} Mbit/s under team's 16mbit (each 12mbit); team \
         counted {team_tx} of {sent} bytes",
        rate_a / 1e6,
        rate_b / 1e6,
        (rate_a + rate_b) / 1e6
    );
    assert!(
        rate_a + rate_b < 16e6 * 1.06,
        "the members' sum exceeds the group's limit"
    );
    assert!(
        rate_a + rate_b > 16e6 * 0.85,
        "the members' sum is far under the group's limit"
    );
    assert!(rate_a < 12e6 * 1.06 && rate_b < 12e6 * 1.06);
    assert!(
        (0.98..1.05).contains(&(team_tx / sent)),
        "the group's counter covers its members: {team_tx} for {sent}"
    );
    let json: serde_json::Value = serde_json::from_str(&agent.rein_ok(&["ls", "--json"])).unwrap();
    let a = json
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "a")
        .unwrap();
    assert_eq!(
        (a["kind"].as_str(), a["group"].as_str()),
        (Some("container"), Some("sub"))
    );
    // Live change at the group level.
    agent.rein_ok(&["set", "team", "--egress", "30mbit"]);
    assert_eq!(agent.stats("team")["limits"]["egress"], "30mbit");
    let busy = agent.rein(&["rm", "team"]);
    assert!(
        String::from_utf8_lossy(&busy.stderr).contains("still holds"),
        "a group with members is not removed without --force"
    );
    agent.rein_ok(&["rm", "--force", "team"]);
    assert!(!agent.root.join("team").exists());
    assert_eq!(agent.rein_ok(&["ls", "--json"]).trim(), "[]");
    assert!(
        shaper_keys(&agent.bpf_dir()).is_empty(),
        "removing a group forgets its members' map entries"
    );
}

/// A UDP sender that stamps every datagram with its own departure time far in the future
/// (`SO_TXTIME`, which any process may use) gets no more than its container's limit, when
/// pacing and when policing.
#[test]
fn a_self_stamping_udp_sender_is_held_in_both_modes() {
    integration_tests::measures_throughput();
    let net = RemoteNetns::new("remote-txtime");
    let mut agent = AgentGuard::start_with(
        "rein-txtime",
        &["--egress-dev", HOST_DEV, "--egress-mode", "police"],
    );
    // Policing first, while the device has no fq: nothing but rein stands between the
    // stamped datagrams and the wire (fq, once pacing installs it, drops what is stamped
    // beyond its horizon by itself).
    for mode in ["police", "edt"] {
        agent.restart_with(&["--egress-dev", HOST_DEV, "--egress-mode", mode]);
        let name = format!("stamp-{mode}");
        let sink = net.spawn(&["rein-test-helper", "udp-sink", "9000", "3"]);
        std::thread::sleep(Duration::from_millis(300));
        let out = agent.rein_ok(&[
            "run",
            "--keep",
            "--name",
            &name,
            "--egress",
            "10mbit",
            "--",
            "rein-test-helper",
            "udp-txtime",
            REMOTE_IP,
            "9000",
            "4",
            // now + 10^8 ms, as a sender trying to jump the queue would stamp.
            "100000000",
        ]);
        let sink = sink.wait_with_output().unwrap();
        let received = integration_tests::received_bytes(&sink.stdout).unwrap_or(0.0);
        let counted = tx_bytes(&agent, &name);
        eprintln!(
            "{mode}: sender {}, received {:.2} Mbit/s over 3 s, rein passed {:.2} Mbit/s \
             over 4 s (limit 10mbit)",
            out.trim(),
            received * 8.0 / 3e6,
            counted * 8.0 / 4e6
        );
        assert!(
            received * 8.0 / 3.0 < 10e6 * 1.15,
            "{mode}: {:.2} Mbit/s arrived under a 10mbit limit",
            received * 8.0 / 3e6
        );
        assert!(
            counted * 8.0 / 4.0 < 10e6 * 1.3,
            "{mode}: rein let {:.2} Mbit/s pass under a 10mbit limit",
            counted * 8.0 / 4e6
        );
        agent.rein_ok(&["rm", &name]);
    }
}

/// A thousand cgroups made, used and removed below a container leave no map entry: entries
/// exist only for managed cgroups.
#[test]
fn a_thousand_nested_cgroups_leave_no_map_entry() {
    let agent = AgentGuard::start_with("rein-nested", &["--egress-dev", "lo"]);
    agent.rein_ok(&[
        "run", "--keep", "--name", "host", "--egress", "50mbit", "--", "true",
    ]);
    let dir = agent.root.join("host");
    let out = std::process::Command::new("rein-test-helper")
        .arg("nested-churn")
        .arg(&dir)
        .arg("1000")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let id = {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata(&dir).unwrap().ino()
    };
    let traffic = traffic_keys(&agent.bpf_dir());
    let managed = integration_tests::pinned_keys::<u8>(&agent.bpf_dir().join("REIN_MANAGED"));
    eprintln!(
        "after 1000 nested cgroups: traffic entries {traffic:?}, managed {managed:?}, \
         container {id}, its packets {}",
        agent.stats("host")["usage"]["net_tx_packets"]
    );
    assert_eq!(traffic, vec![id], "only the container is counted");
    assert_eq!(managed, vec![id], "only the container is managed");
    assert!(
        agent.stats("host")["usage"]["net_tx_packets"]
            .as_u64()
            .unwrap_or(0)
            >= 1000,
        "the nested cgroups' packets are the container's"
    );
    agent.rein_ok(&["rm", "host"]);
    assert!(traffic_keys(&agent.bpf_dir()).is_empty());
}

/// Two runc containers of one Kubernetes pod (CRI annotations naming it) share the pod's
/// `kubernetes.io/egress-bandwidth`: the pod's cgroup is registered as a group with that
/// limit, and goes with the pod's last container.
#[test]
fn a_pod_of_two_runc_containers_shares_its_bandwidth_annotation() {
    integration_tests::measures_throughput();
    let net = RemoteNetns::new("remote-pod");
    let agent = AgentGuard::start_with("rein-pod", &["--egress-dev", HOST_DEV]);
    let _s1 = net.iperf3_server_on(5201);
    let _s2 = net.iperf3_server_on(5202);
    // kubelet names a pod's cgroup after its UID (here with the cgroupfs driver's `pod<uid>`).
    let uid = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
    let pod_dir = std::path::Path::new(integration_tests::OCI_CGROUPS).join(format!("pod{uid}"));
    let bundle = |id: &str, port: &str| {
        let b = OciBundle::new(
            "runc",
            id,
            &[
                "iperf3", "-c", REMOTE_IP, "-p", port, "-J", "-t", "5", "-i", "1",
            ],
        );
        b.edit(|c| c["linux"]["cgroupsPath"] = format!("/rein-oci/pod{uid}/{id}").into());
        b.annotate(&[
            ("io.kubernetes.cri.sandbox-uid", uid),
            ("io.kubernetes.cri.sandbox-name", "web"),
            ("io.kubernetes.cri.sandbox-namespace", "shop"),
            ("io.kubernetes.cri.container-name", id),
            ("io.kubernetes.cri.container-type", "container"),
            ("kubernetes.io/egress-bandwidth", "16M"),
        ]);
        b.add_rein_hooks(&agent.socket, &[]);
        b
    };
    let (b1, b2) = (bundle("pod-c1", "5201"), bundle("pod-c2", "5202"));
    let (r1, r2) = (b1.spawn_run(), b2.spawn_run());
    // Both registered under the pod's group.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let listed = loop {
        let json: serde_json::Value =
            serde_json::from_str(&agent.rein_ok(&["ls", "--json"])).unwrap();
        let names: Vec<String> = json
            .as_array()
            .unwrap()
            .iter()
            .map(|c| format!("{}/{}", c["group"].as_str().unwrap_or("-"), c["name"]))
            .collect();
        if names.len() >= 3 || std::time::Instant::now() > deadline {
            break json;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let pod = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "shop_web")
        .unwrap_or_else(|| panic!("the pod's group is not listed: {listed}"));
    assert_eq!(pod["kind"], "group", "{pod}");
    assert_eq!(pod["limits"]["egress"], "16mbit", "{pod}");
    let reports: Vec<serde_json::Value> = [r1, r2]
        .into_iter()
        .map(|r| {
            let out = r.wait_with_output().unwrap();
            assert!(out.status.success(), "runc run: {out:?}");
            serde_json::from_slice(&out.stdout).unwrap()
        })
        .collect();
    let (a, b) = (steady(&reports[0]), steady(&reports[1]));
    eprintln!(
        "pod: {:.2} + {:.2} = {:.2} Mbit/s under the pod's 16M",
        a / 1e6,
        b / 1e6,
        (a + b) / 1e6
    );
    assert!(
        a + b < 16e6 * 1.06 && a + b > 16e6 * 0.8,
        "the pod's containers together at {:.2} Mbit/s under its 16M",
        (a + b) / 1e6
    );
    // The poststop hooks unregistered both, and the group went with the last.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while agent.rein_ok(&["ls", "--json"]).trim() != "[]" {
        assert!(
            std::time::Instant::now() < deadline,
            "left registered: {}",
            agent.rein_ok(&["ls"])
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop((b1, b2));
    let _ = std::fs::remove_dir(&pod_dir);
}
