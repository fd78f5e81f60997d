//! `rein agent` and the CLI against the real kernel: limits are applied and enforced, changed
//! live, survive an agent crash, and bad input changes nothing.

use std::{
    process::Stdio,
    time::{Duration, Instant},
};

use integration_tests::{
    AgentGuard, HOST_DEV, OciBundle, RemoteNetns, cpu_usage_usec, http_get, promtool_accepts,
    stop_run,
};

fn busy(agent: &AgentGuard, name: &str, limits: &[&str]) -> std::process::Child {
    let mut args = vec!["run", "--name", name];
    args.extend_from_slice(limits);
    args.extend_from_slice(&["--", "busybox", "sh", "-c", "while :; do :; done"]);
    let child = agent.rein_spawn(&args);
    agent.wait_for_process(name);
    child
}

#[test]
fn cpu_max_from_rein_run_throttles_near_the_quota() {
    let agent = AgentGuard::start("rein-cpu");
    let child = busy(&agent, "q", &["--cpus", "0.25"]);
    let dir = agent.root.join("q");
    let (u0, t0) = (cpu_usage_usec(&dir), Instant::now());
    std::thread::sleep(Duration::from_secs(3));
    let share = (cpu_usage_usec(&dir) - u0) as f64 / t0.elapsed().as_micros() as f64;
    let throttled = agent.cgroup_file("q", "cpu.stat");
    assert_eq!(agent.cgroup_file("q", "cpu.max").trim(), "25000 100000");
    assert!(
        (0.15..0.35).contains(&share),
        "expected ~0.25 CPU, used {share:.3}"
    );
    assert!(
        !throttled.contains("nr_throttled 0\n"),
        "no throttling seen:\n{throttled}"
    );
    assert_eq!(stop_run(child).code(), Some(128 + libc::SIGTERM));
}

#[test]
fn cpu_weights_share_one_cpu_near_one_to_three() {
    let agent = AgentGuard::start("rein-weight");
    let a = busy(&agent, "light", &["--cpuset", "0", "--cpu-weight", "100"]);
    let b = busy(&agent, "heavy", &["--cpuset", "0", "--cpu-weight", "300"]);
    let (la, ha) = (
        cpu_usage_usec(&agent.root.join("light")),
        cpu_usage_usec(&agent.root.join("heavy")),
    );
    std::thread::sleep(Duration::from_secs(4));
    let light = cpu_usage_usec(&agent.root.join("light")) - la;
    let heavy = cpu_usage_usec(&agent.root.join("heavy")) - ha;
    let ratio = heavy as f64 / light.max(1) as f64;
    assert!(
        (2.2..4.0).contains(&ratio),
        "expected ~3:1, got {heavy}us : {light}us = {ratio:.2}"
    );
    stop_run(a);
    stop_run(b);
}

#[test]
fn oom_group_kills_the_whole_container() {
    let agent = AgentGuard::start("rein-oom");
    let started = Instant::now();
    // A sleeper beside the allocation: with oom.group the OOM kill takes it too, so the
    // shell's `wait` returns at once instead of after 60 s.
    let out = agent.rein(&[
        "run",
        "--name",
        "oomg",
        "--memory",
        "32M",
        "--swap",
        "0",
        "--oom-group",
        "--",
        "busybox",
        "sh",
        "-c",
        "sleep 60 & rein-test-helper alloc 64; wait",
    ]);
    assert_eq!(out.status.code(), Some(128 + libc::SIGKILL), "{out:?}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the sleeper survived the OOM kill"
    );
    assert!(
        !agent.root.join("oomg").exists(),
        "rein run must remove its container"
    );
}

#[test]
fn pids_max_stops_a_fork_bomb() {
    let agent = AgentGuard::start("rein-pids");
    let out = agent.rein(&[
        "run",
        "--keep",
        "--name",
        "bomb",
        "--pids",
        "20",
        "--",
        "busybox",
        "sh",
        "-c",
        "i=0; while [ $i -lt 60 ]; do sleep 2 & i=$((i+1)); done; wait",
    ]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("fork"),
        "{out:?}"
    );
    let events = agent.cgroup_file("bomb", "pids.events");
    let refused: u64 = events
        .lines()
        .find_map(|l| l.strip_prefix("max ")?.trim().parse().ok())
        .unwrap();
    assert!(refused > 0, "pids.events shows no refused fork:\n{events}");
    agent.rein_ok(&["rm", "--force", "bomb"]);
}

#[test]
fn io_max_by_device_path_limits_direct_writes() {
    let agent = AgentGuard::start("rein-io");
    let out = agent.rein_ok(&[
        "run",
        "--io-max",
        "/dev/vdb wbps=1M",
        "--",
        "rein-test-helper",
        "write-direct",
        "/dev/vdb",
        "3",
    ]);
    let secs: f64 = out.trim().parse().unwrap();
    assert!(
        (2.0..6.0).contains(&secs),
        "3 MiB at 1 MiB/s took {secs:.2}s"
    );
}

#[test]
fn rein_set_changes_a_running_container() {
    let agent = AgentGuard::start("rein-set");
    let child = busy(&agent, "live", &["--cpus", "0.1", "--memory", "64M"]);
    let dir = agent.root.join("live");
    let window = |d: Duration| {
        let (u, t) = (cpu_usage_usec(&dir), Instant::now());
        std::thread::sleep(d);
        (cpu_usage_usec(&dir) - u) as f64 / t.elapsed().as_micros() as f64
    };
    let before = window(Duration::from_secs(2));
    agent.rein_ok(&[
        "set", "live", "--cpus", "0.5", "--memory", "128M", "--pids", "100",
    ]);
    assert_eq!(agent.cgroup_file("live", "cpu.max").trim(), "50000 100000");
    assert_eq!(agent.cgroup_file("live", "memory.max").trim(), "134217728");
    assert_eq!(agent.cgroup_file("live", "pids.max").trim(), "100");
    let after = window(Duration::from_secs(2));
    assert!(
        after > before * 2.5,
        "usage {before:.3} -> {after:.3} CPU after raising the quota 5x"
    );
    // A bad change is refused whole: nothing of it is written.
    let out = agent.rein(&[
        "set",
        "live",
        "--cpus",
        "0.3",
        "--io-max",
        "/dev/null wbps=1M",
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a block device"),
        "{out:?}"
    );
    assert_eq!(agent.cgroup_file("live", "cpu.max").trim(), "50000 100000");
    stop_run(child);
}

#[test]
fn rein_run_reports_exit_codes_and_forwards_signals() {
    let agent = AgentGuard::start("rein-run");
    let code = |args: &[&str]| agent.rein(args).status.code();
    assert_eq!(
        code(&["run", "--", "busybox", "sh", "-c", "exit 7"]),
        Some(7)
    );
    assert_eq!(
        code(&["run", "--", "busybox", "sh", "-c", "kill -TERM $$"]),
        Some(143)
    );
    assert_eq!(code(&["run", "--", "/nonexistent"]), Some(1));
    // The command runs inside its container from its first instruction.
    let cg = agent.rein_ok(&["run", "--name", "me", "--", "cat", "/proc/self/cgroup"]);
    assert_eq!(cg.trim(), "0::/rein-run.slice/me");
    // SIGINT to rein reaches the command; the container is removed afterwards.
    let child = agent.rein_spawn(&["run", "--name", "sleeper", "--", "sleep", "30"]);
    agent.wait_for_process("sleeper");
    // SAFETY: kill(2) on our own unreaped child.
    unsafe { libc::kill(i32::try_from(child.id()).unwrap(), libc::SIGINT) };
    let status = child.wait_with_output().unwrap().status;
    assert_eq!(status.code(), Some(128 + libc::SIGINT));
    assert!(!agent.root.join("sleeper").exists());
    assert_eq!(agent.rein_ok(&["ls", "--json"]).trim(), "[]");
}

#[test]
fn agent_restart_adopts_every_container_with_unchanged_limits() {
    let mut agent = AgentGuard::start("rein-adopt");
    agent.rein_ok(&[
        "run", "--keep", "--name", "a", "--cpus", "1.5", "--memory", "256M", "--", "true",
    ]);
    agent.rein_ok(&[
        "run",
        "--keep",
        "--name",
        "b",
        "--priority",
        "idle",
        "--pids",
        "99",
        "--io-max",
        "/dev/vdb rbps=2M wiops=100",
        "--",
        "true",
    ]);
    agent.rein_ok(&[
        "run",
        "--keep",
        "--name",
        "c",
        "--memory-low",
        "16M",
        "--oom-group",
        "--cpuset",
        "1",
        "--",
        "true",
    ]);
    let before = agent.rein_ok(&["ls", "--json"]);
    let files_before = agent.cgroup_file("b", "io.max");
    agent.stop(libc::SIGKILL);
    // The limits are enforced by the kernel while the agent is down.
    assert_eq!(agent.cgroup_file("a", "cpu.max").trim(), "150000 100000");
    agent.restart();
    let after = agent.rein_ok(&["ls", "--json"]);
    assert_eq!(after, before);
    assert_eq!(agent.cgroup_file("b", "io.max"), files_before);
    assert!(
        after.contains("\"priority\": \"idle\"") && after.contains("\"cpus\": \"1.5\""),
        "{after}"
    );
    // A second agent on the same socket refuses to start.
    let second = agent.rein(&["agent", "--root", agent.root.to_str().unwrap()]);
    assert!(!second.status.success());
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("already running"),
        "{second:?}"
    );
}

fn cgroup_entries() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn bad_names_and_values_are_refused_and_change_nothing() {
    let agent = AgentGuard::start("rein-bad");
    let top_before = cgroup_entries();
    let long = "x".repeat(200);
    for name in ["../x", "a/b", "", long.as_str(), "..", ".x"] {
        let out = agent.rein(&["run", "--name", name, "--", "true"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "name {name:?}: {out:?}");
        assert!(
            err.contains("invalid container name"),
            "name {name:?}: {err}"
        );
    }
    for (args, expect) in [
        (
            vec!["run", "--memory", "12Q", "--", "true"],
            "unknown unit \"Q\"",
        ),
        (vec!["run", "--cpus", "0", "--", "true"], "outside 10m"),
        (
            vec![
                "run",
                "--memory",
                "256M",
                "--memory-low",
                "1G",
                "--",
                "true",
            ],
            "is larger than",
        ),
        (
            vec!["run", "--io-max", "/dev/nope wbps=1M", "--", "true"],
            "cannot stat",
        ),
        (vec!["set", "ghost", "--pids", "5"], "does not exist"),
    ] {
        let out = agent.rein(&args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(expect),
            "{args:?}: expected {expect:?} in {err}"
        );
    }
    assert_eq!(
        cgroup_entries(),
        top_before,
        "something was created outside the managed root"
    );
    let inside: Vec<_> = std::fs::read_dir(&agent.root)
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name())
        .collect();
    assert!(
        inside.is_empty(),
        "refused requests left containers behind: {inside:?}"
    );
    // The agent is not running on the default socket: the CLI says how to start it.
    let out = std::process::Command::new("rein")
        .args(["--socket", "/run/nowhere/rein.sock", "ls"])
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Start it with `rein agent`"),
        "{out:?}"
    );
}

/// A change whose later write fails puts back what the earlier writes changed, also a
/// cpuset that was empty (an empty write is no write: it must be written as a newline).
#[test]
fn a_failed_change_restores_an_empty_cpuset() {
    let agent = AgentGuard::start("rein-undo");
    agent.rein_ok(&["run", "--keep", "--name", "c", "--", "true"]);
    assert_eq!(agent.cgroup_file("c", "cpuset.cpus").trim(), "");
    // 1:3 is /dev/null, a character device: io.max refuses it after cpuset.cpus is written.
    let out = agent.rein(&["set", "c", "--cpuset", "0", "--io-max", "1:3 wbps=1M"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the change succeeded: {out:?}");
    assert!(
        err.contains("io.max") && err.contains("rolled back"),
        "{err}"
    );
    assert_eq!(
        agent.cgroup_file("c", "cpuset.cpus").trim(),
        "",
        "the rollback left the new cpuset: {err}"
    );
    assert!(
        !agent.rein_ok(&["ls"]).contains("cpuset"),
        "the failed change shows as a limit"
    );
    agent.rein_ok(&["rm", "c"]);
}

/// One container's slow operation (a creation stalled 3 s at a failpoint, as a write of
/// `memory.max` far below the usage stalls in reclaim) holds up no other: another
/// container's change, the listing and its stats answer meanwhile.
#[test]
fn a_slow_operation_holds_up_no_other_container() {
    let mut agent = AgentGuard::start("rein-slow");
    agent.rein_ok(&["run", "--keep", "--name", "b", "--", "true"]);
    agent.failpoint = Some("create:after-files:sleep=3".into());
    agent.restart();
    let mut slow = agent.rein_spawn(&["run", "--keep", "--name", "slow", "--", "true"]);
    std::thread::sleep(Duration::from_millis(500));
    let mut slowest = Duration::ZERO;
    for args in [
        &["set", "b", "--pids", "60"][..],
        &["ls"][..],
        &["stats", "b"][..],
    ] {
        let t = Instant::now();
        agent.rein_ok(args);
        slowest = slowest.max(t.elapsed());
    }
    eprintln!(
        "slow: other calls answered within {:.3} s",
        slowest.as_secs_f64()
    );
    assert!(
        slow.try_wait().unwrap().is_none(),
        "the slow creation had ended: nothing overlapped it"
    );
    assert!(
        slowest < Duration::from_secs(1),
        "a call waited {slowest:?} behind another container's slow creation"
    );
    assert_eq!(agent.cgroup_file("b", "pids.max").trim(), "60");
    assert!(slow.wait().unwrap().success());
    agent.failpoint = None;
}

/// `rein ls` as another user: (exit success, stderr).
fn ls_as(agent: &AgentGuard, uid: u32) -> (bool, String) {
    use std::os::unix::process::CommandExt as _;
    let out = std::process::Command::new("rein")
        .arg("--socket")
        .arg(&agent.socket)
        .arg("ls")
        .uid(uid)
        .gid(uid)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn only_root_and_allowed_uids_may_use_the_api() {
    let agent = AgentGuard::start("rein-peer");
    let (ok, err) = ls_as(&agent, 1000);
    assert!(
        !ok && err.contains("not allowed to use"),
        "uid 1000 on a root-only socket: {err}"
    );
    drop(agent);
    let agent = AgentGuard::start_with("rein-peer2", &["--allow-uid", "1000"]);
    let (ok, err) = ls_as(&agent, 1000);
    assert!(ok, "allowed uid 1000 was refused: {err}");
    let (ok, err) = ls_as(&agent, 1001);
    assert!(
        !ok && err.contains("uid 1001 may not use the rein API"),
        "uid 1001: {err}"
    );
}

#[test]
fn metrics_endpoint_serves_cadvisor_names_that_promtool_accepts() {
    let agent = AgentGuard::start_with(
        "rein-metrics",
        &["--metrics-addr", "127.0.0.1:9799", "--node-name", "node-7"],
    );
    let child = busy(&agent, "m", &["--cpus", "0.5", "--memory", "64M"]);
    std::thread::sleep(Duration::from_secs(1));
    let text = http_get("127.0.0.1:9799", "/metrics");
    let labels = r#"{id="/rein-metrics.slice/m",name="m",node="node-7"}"#;
    // Every series names the node, whatever a scrape config later does to `instance`.
    let unlabelled: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.contains(r#"node="node-7""#))
        .collect();
    assert!(unlabelled.is_empty(), "series without node: {unlabelled:?}");
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let info = format!(
        r#"rein_node_info{{kernel="{}",node="node-7",version="{}"}} 1"#,
        kernel.trim(),
        env!("CARGO_PKG_VERSION")
    );
    assert!(text.contains(&info), "expected {info:?} in:\n{text}");
    for want in [
        r#"rein_datapath_failed_packets_total{node="node-7",reason="tail_call_failed"} 0"#
            .to_owned(),
        r#"rein_datapath_failed_packets_total{node="node-7",reason="traffic_map_full"} 0"#
            .to_owned(),
        format!("container_spec_memory_limit_bytes{labels} 67108864"),
        format!("container_spec_cpu_quota{labels} 50000"),
        r#"rein_datapath_map_capacity{map="REIN_MANAGED",node="node-7"} 16384"#.to_owned(),
    ] {
        assert!(text.contains(&want), "expected {want:?} in:\n{text}");
    }
    // The per-second walk has counted the container's managed entry (and the root's).
    let managed: f64 = text
        .lines()
        .find_map(|l| {
            l.strip_prefix(r#"rein_datapath_map_entries{map="REIN_MANAGED",node="node-7"} "#)
        })
        .unwrap_or_else(|| panic!("no map fill in:\n{text}"))
        .parse()
        .unwrap();
    assert!(managed >= 1.0, "managed entries {managed}");
    let usage: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix(&format!("container_cpu_usage_seconds_total{labels} ")))
        .unwrap_or_else(|| panic!("no CPU usage in:\n{text}"))
        .parse()
        .unwrap();
    assert!(usage > 0.1, "a busy loop for 1s used {usage}s of CPU");
    promtool_accepts(&text);
    stop_run(child);
    // A removed container's series disappear.
    let after = http_get("127.0.0.1:9799", "/metrics");
    assert!(
        !after.contains(labels),
        "series of a removed container remain:\n{after}"
    );
}

/// An agent in a mount namespace of its own without the node's bpffs (a pod that forgot the
/// hostPath volume) would mount a bpffs that dies with it, and every limit with it at the
/// next restart: it refuses to start, says what to mount, and changes nothing.
#[test]
fn an_agent_whose_bpffs_would_die_with_it_refuses_to_start() {
    integration_tests::require_vm();
    let root = std::path::Path::new("/sys/fs/cgroup/rein-nobpf.slice");
    let mut agent = std::process::Command::new(integration_tests::HELPER)
        .args([
            "private-mounts",
            "--",
            "rein",
            "--socket",
            "/run/rein-nobpf/rein.sock",
        ])
        .args(["agent", "--root", "/sys/fs/cgroup/rein-nobpf.slice"])
        .args(["--bpf-dir", "/sys/fs/bpf/rein-nobpf"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // An agent that does not refuse runs on: stop it, and fail below.
    let deadline = Instant::now() + Duration::from_secs(20);
    while agent.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = agent.kill();
    let out = agent.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the agent ran: {stderr}");
    assert!(
        stderr.contains("no bpffs at /sys/fs/bpf")
            && stderr.contains("mount -t bpf bpf /sys/fs/bpf")
            && stderr.contains("mountPropagation: HostToContainer"),
        "{stderr}"
    );
    assert!(!root.exists(), "the refused agent made its root");
    assert!(
        !std::path::Path::new("/run/rein-nobpf").exists(),
        "the refused agent made its socket directory"
    );
}

/// The value of the node-wide gauge `name` in the agent's metrics at `addr` (None while the
/// address does not answer).
fn node_gauge(addr: &str, name: &str) -> Option<f64> {
    std::net::TcpStream::connect(addr).ok()?;
    http_get(addr, "/metrics")
        .lines()
        .find(|l| l.starts_with(&format!("{name}{{")))?
        .rsplit(' ')
        .next()?
        .parse()
        .ok()
}

/// Starts a runc container asking for `memory` through its annotation with rein's hook;
/// returns (started, the runtime's stderr).
fn hooked_start(agent: &AgentGuard, id: &str, memory: &str) -> (bool, String) {
    let b = OciBundle::new("runc", id, &["true"]);
    b.annotate(&[("rein/memory", memory)]);
    b.add_rein_hooks(&agent.socket, &[]);
    b.run_to_end()
}

#[test]
fn sighup_reloads_ceiling_devices_and_metrics_address_and_a_bad_config_changes_nothing() {
    let _peer = RemoteNetns::new("rein-reload");
    let config = "/tmp/rein-reload.toml";
    let (first_addr, second_addr) = ("127.0.0.1:9811", "127.0.0.1:9812");
    std::fs::write(
        config,
        format!(
            "metrics_addr = \"{first_addr}\"\negress_devs = [\"lo\"]\n[hook_ceiling]\n\
             memory = \"256M\"\n"
        ),
    )
    .unwrap();
    let agent = AgentGuard::start_with("rein-reload", &["--config", config]);
    agent.rein_ok(&[
        "run", "--keep", "--name", "kept", "--memory", "64M", "--egress", "10mbit", "--", "true",
    ]);
    let limits_before = agent.rein_ok(&["ls", "--json"]);
    assert_eq!(
        node_gauge(first_addr, "rein_config_last_reload_successful"),
        Some(1.0)
    );
    let started_at = node_gauge(
        first_addr,
        "rein_config_last_reload_success_timestamp_seconds",
    )
    .expect("the start counts as the config's first application");
    let (ok, stderr) = hooked_start(&agent, "reload-a", "200M");
    assert!(ok, "200M is under the ceiling of 256M: {stderr}");

    // The live keys change, a key read at start only (node_name) is left as it runs.
    std::fs::write(
        config,
        format!(
            "metrics_addr = \"{second_addr}\"\negress_devs = [\"lo\", \"{HOST_DEV}\"]\n\
             node_name = \"elsewhere\"\n[hook_ceiling]\nmemory = \"128M\"\n"
        ),
    )
    .unwrap();
    // A second apart, so the success timestamp (seconds) must move.
    std::thread::sleep(Duration::from_millis(1100));
    agent.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while node_gauge(second_addr, "rein_config_last_reload_successful").is_none() {
        assert!(
            Instant::now() < deadline,
            "the metrics did not move to {second_addr} after SIGHUP"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        std::net::TcpStream::connect(first_addr).is_err(),
        "the old metrics address still answers"
    );
    let metrics = http_get(second_addr, "/metrics");
    assert!(
        !metrics.contains("node=\"elsewhere\""),
        "node_name is read at start only"
    );
    assert!(
        node_gauge(
            second_addr,
            "rein_config_last_reload_success_timestamp_seconds"
        )
        .is_some_and(|t| t > started_at),
        "the reload's time is not recorded"
    );
    let qdiscs = std::process::Command::new("/usr/local/sbin/tc")
        .args(["qdisc", "show", "dev", HOST_DEV])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&qdiscs.stdout).contains("qdisc fq "),
        "the newly named egress device has no fq: {}",
        String::from_utf8_lossy(&qdiscs.stdout)
    );
    let stats: serde_json::Value =
        serde_json::from_str(&agent.rein_ok(&["stats", "kept", "--json"])).unwrap();
    assert!(
        stats["egress_mode"]
            .as_str()
            .is_some_and(|m| m.contains(HOST_DEV)),
        "{stats}"
    );
    assert_eq!(
        agent.rein_ok(&["ls", "--json"]),
        limits_before,
        "a reload touched enforcement"
    );
    let (ok, stderr) = hooked_start(&agent, "reload-b", "200M");
    assert!(!ok, "200M is above the reloaded ceiling of 128M");
    assert!(stderr.contains("ceiling 128"), "{stderr}");

    // A config that does not parse changes nothing, and says so in the metrics.
    std::fs::write(config, "metrics_addr = 12\n").unwrap();
    agent.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(10);
    while node_gauge(second_addr, "rein_config_last_reload_successful") != Some(0.0) {
        assert!(
            Instant::now() < deadline,
            "a bad config's reload is not reported as refused"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (ok, stderr) = hooked_start(&agent, "reload-c", "200M");
    assert!(
        !ok && stderr.contains("ceiling 128"),
        "the ceiling must stay: {stderr}"
    );
    assert_eq!(agent.rein_ok(&["ls", "--json"]), limits_before);
    let _ = std::fs::remove_file(config);
}
