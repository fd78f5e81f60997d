//! The real container engines end to end, as Debian 12 ships them: Podman 4.3 with rein's
//! hooks file in its hooks directory, dockerd 20.10 with `rein-runtime` as an added runtime,
//! containerd 1.6's `ctr` with the runc shim pointed at `rein-runtime`. Each test starts the
//! daemon it needs once and drives it through its own CLI.

use std::{os::unix::fs::MetadataExt as _, path::Path, time::Duration};

use integration_tests::{
    AgentGuard, ContainerNetns, Daemon, HOST_DEV, IMAGE, REMOTE_IP, ROOTFS_TAR, RemoteNetns,
    http_get, podman_ready, rein_runtime, run, run_ok, unpacked_rootfs,
};

use super::runtime::{Forgotten, assert_forgotten};

/// The agent the engines' hooks reach: named `rein`, it listens on the default socket
/// (/run/rein/rein.sock) that the shipped hooks file and `rein-runtime` use.
fn agent(extra: &[&str]) -> AgentGuard {
    AgentGuard::start_with("rein", extra)
}

/// The cgroup id (inode) of a cgroup path as an engine reports it (`/libpod_parent/...`).
fn cgroup_id(path: &str) -> u64 {
    let dir = Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/'));
    std::fs::metadata(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .ino()
}

fn cgroup_read(path: &str, file: &str) -> String {
    let p = Path::new("/sys/fs/cgroup")
        .join(path.trim_start_matches('/'))
        .join(file);
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .to_owned()
}

/// The container's transmitted bits per second over `window`, from rein's counters.
fn tx_rate(agent: &AgentGuard, name: &str, window: Duration) -> f64 {
    let tx = || agent.stats(name)["usage"]["net_tx_bytes"].as_f64().unwrap();
    let (b0, t0) = (tx(), std::time::Instant::now());
    std::thread::sleep(window);
    (tx() - b0) * 8.0 / t0.elapsed().as_secs_f64()
}

/// Runs iperf3 towards the remote namespace for 7 s in a container that `program ARGS`
/// starts (ARGS end with the image; the engine asked for `rein/egress=20mbit`), waits until
/// rein lists `name`, calls `while_running` and, for a container in `netns`, waits until rein
/// paces inside it; then asserts that the steady rate is within 10% of 20 Mbit/s.
fn assert_shaped_at_20mbit(
    agent: &AgentGuard,
    name: &str,
    netns: Option<&ContainerNetns>,
    (program, args): (&str, &[&str]),
    while_running: impl FnOnce(),
) {
    let child = std::process::Command::new(program)
        .args(args)
        .args(["iperf3", "-c", REMOTE_IP, "-t", "7"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    agent.wait_listed(name);
    while_running();
    if let Some(ns) = netns {
        // The agent looks for new namespaces every second.
        let deadline = std::time::Instant::now() + Duration::from_secs(4);
        while !ns.paced_by_fq() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(
            ns.paced_by_fq(),
            "{name}: rein did not pace inside its namespace"
        );
    }
    // Past TCP's ramp-up, then three seconds of rein's own counters.
    std::thread::sleep(Duration::from_millis(1500));
    let rate = tx_rate(agent, name, Duration::from_secs(3));
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ratio = rate / 20e6;
    eprintln!(
        "{program} {name}: steady {:.2} Mbit/s, {ratio:.3} of the limit",
        rate / 1e6
    );
    assert!((0.9..1.1).contains(&ratio), "{name}: {ratio:.3} of 20mbit");
}

/// `podman run --annotation rein/...` with the shipped hooks file: the container gets its
/// limits, its metrics carry its name, and after `podman rm` nothing of it is left.
#[test]
fn podman_run_with_annotations_is_limited_labelled_and_forgotten_after_rm() {
    podman_ready();
    let addr = "127.0.0.1:9797";
    let agent = agent(&["--metrics-addr", addr]);
    run_ok(
        "podman",
        &[
            "run",
            "-d",
            "--name",
            "pm-web",
            "--network",
            "none",
            "--annotation",
            "rein/name=pm-web",
            "--annotation",
            "rein/memory=64M",
            "--annotation",
            "rein/priority=low",
            IMAGE,
            "sleep",
            "120",
        ],
    );
    agent.wait_listed("pm-web");
    let cgroup = run_ok(
        "podman",
        &["inspect", "--format", "{{.State.CgroupPath}}", "pm-web"],
    );
    let cgroup = cgroup.trim();
    assert_eq!(cgroup_read(cgroup, "memory.max"), "67108864");
    // rein's own limit on top of what Podman set (its pids limit, 2048).
    let ls = agent.rein_ok(&["ls"]);
    let line = ls.lines().find(|l| l.starts_with("pm-web ")).unwrap();
    assert!(
        line.contains("memory=64M") && line.contains("priority=low"),
        "{ls}"
    );
    let metrics = http_get(addr, "/metrics");
    assert!(
        metrics.lines().any(
            |l| l.starts_with("container_memory_usage_bytes{") && l.contains("name=\"pm-web\"")
        ),
        "no memory usage series named pm-web"
    );
    let id = cgroup_id(cgroup);
    run_ok("podman", &["rm", "--force", "--time", "0", "pm-web"]);
    assert!(!Path::new("/sys/fs/cgroup").join(&cgroup[1..]).exists());
    assert_forgotten(&agent, "pm-web", id, Forgotten::Soon);
}

/// A bad annotation refuses the start, and Podman's output carries rein's message.
#[test]
fn podman_refuses_a_bad_annotation_with_reins_message() {
    podman_ready();
    let agent = agent(&[]);
    let out = run(
        "podman",
        &[
            "run",
            "--rm",
            "--name",
            "pm-bad",
            "--network",
            "none",
            "--annotation",
            "rein/memory=lots",
            IMAGE,
            "true",
        ],
    );
    let _ = run("podman", &["rm", "--force", "pm-bad"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the container started: {stderr}");
    assert!(
        stderr.contains(
            "rein hook createRuntime: error: annotation rein/memory: invalid value \"lots\""
        ),
        "Podman's output lacks rein's message: {stderr}"
    );
    assert!(!agent.rein_ok(&["ls"]).contains("pm-bad"));
}

/// iperf3 in Podman containers is held to `rein/egress`, in a network namespace of the
/// container's own (Podman joins one made as a runtime's network plugin makes it) and on
/// the host's network.
#[test]
fn podman_containers_are_shaped_in_their_own_namespace_and_on_the_host_network() {
    integration_tests::measures_throughput();
    podman_ready();
    let net = RemoteNetns::new("remote-pm");
    net.route_back(ContainerNetns::SUBNET);
    let ns = ContainerNetns::new("pm-ns");
    let agent = agent(&["--egress-dev", HOST_DEV]);
    let _server = net.iperf3_server();
    for (name, network, netns) in [
        ("pm-ns", "ns:/run/netns/pm-ns", Some(&ns)),
        ("pm-host", "host", None),
    ] {
        assert_shaped_at_20mbit(
            &agent,
            name,
            netns,
            (
                "podman",
                &[
                    "run",
                    "--rm",
                    "--name",
                    name,
                    "--network",
                    network,
                    "--annotation",
                    &format!("rein/name={name}"),
                    "--annotation",
                    "rein/egress=20mbit",
                    IMAGE,
                ],
            ),
            || {},
        );
    }
}

/// dockerd with `rein-runtime` as an added runtime: every `docker run --runtime rein` is
/// registered, with the limits Docker's own flags set; the limits Docker 20.10 has no flag
/// for come as `-e rein/...` (it has no `--annotation`), and shape; `docker rm` forgets.
#[test]
fn docker_with_the_rein_runtime_registers_limits_and_shapes() {
    integration_tests::measures_throughput();
    let net = RemoteNetns::new("remote-dk");
    let agent = agent(&["--egress-dev", HOST_DEV]);
    let wrapper = rein_runtime();
    let dockerd = Daemon::start(
        "dockerd",
        &[
            "--iptables=false",
            "--ip6tables=false",
            "--bridge=none",
            "--storage-driver=vfs",
            "--add-runtime",
            &format!("rein={wrapper}"),
        ],
        || run("docker", &["info"]).status.success(),
    );
    run_ok("docker", &["import", ROOTFS_TAR, "rein-test"]);

    // Docker's flags: the container is listed under its id, with those limits.
    let id = run_ok(
        "docker",
        &[
            "run",
            "-d",
            "--runtime",
            "rein",
            "--network",
            "none",
            "--cpus",
            "0.5",
            "--memory",
            "64m",
            "rein-test",
            "sleep",
            "120",
        ],
    );
    let id = id.trim();
    agent.wait_listed(id);
    let ls = agent.rein_ok(&["ls"]);
    let line = ls.lines().find(|l| l.starts_with(id)).unwrap();
    assert!(
        line.contains("cpus=0.5") && line.contains("memory=64M"),
        "{ls}"
    );
    let cgroup = format!("/docker/{id}");
    let cg_id = cgroup_id(&cgroup);

    // `docker run --rm --runtime rein` with more arguments.
    let run_rm = |more: &[&'static str]| [&["run", "--rm", "--runtime", "rein"], more].concat();
    // A bad value refuses the start with rein's message in Docker's output.
    let bad = run(
        "docker",
        &run_rm(&[
            "--network",
            "none",
            "-e",
            "rein/egress=fast",
            "rein-test",
            "true",
        ]),
    );
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success(), "started with rein/egress=fast");
    assert!(
        stderr.contains("annotation rein/egress: invalid value \"fast\""),
        "Docker's output lacks rein's message: {stderr}"
    );

    // What Docker has no flag for, through the environment.
    let _server = net.iperf3_server();
    let args = run_rm(&[
        "--network",
        "host",
        "-e",
        "rein/name=dk-net",
        "-e",
        "rein/egress=20mbit",
        "-e",
        "rein/priority=low",
        "rein-test",
    ]);
    assert_shaped_at_20mbit(&agent, "dk-net", None, ("docker", &args), || {
        let ls = agent.rein_ok(&["ls"]);
        assert!(
            ls.lines()
                .any(|l| l.starts_with("dk-net ") && l.contains("priority=low")),
            "{ls}"
        );
    });

    run_ok("docker", &["rm", "--force", id]);
    assert_forgotten(&agent, id, cg_id, Forgotten::Soon);
    drop(dockerd);
}

/// containerd's `ctr run` with the runc shim's binary set to `rein-runtime`: annotations reach
/// the spec, the limits apply and iperf3 in the container's own namespace is shaped.
#[test]
fn containerd_ctr_with_the_rein_runtime_is_limited_and_shaped() {
    integration_tests::measures_throughput();
    let net = RemoteNetns::new("remote-cd");
    net.route_back(ContainerNetns::SUBNET);
    let ns = ContainerNetns::new("cd-ns");
    let agent = agent(&["--egress-dev", HOST_DEV]);
    let wrapper = rein_runtime();
    const SOCK: &str = "/run/rein-containerd/containerd.sock";
    let containerd = Daemon::start(
        "containerd",
        &[
            "--address",
            SOCK,
            "--root",
            "/var/lib/rein-containerd",
            "--state",
            "/run/rein-containerd",
        ],
        || run("ctr", &["--address", SOCK, "version"]).status.success(),
    );
    let rootfs = unpacked_rootfs();
    let _server = net.iperf3_server();
    let ctr_args = [
        "--address",
        SOCK,
        "run",
        "--rm",
        "--runc-binary",
        wrapper,
        "--env",
        "PATH=/bin:/usr/bin",
        "--annotation",
        "rein/name=cd-net",
        "--annotation",
        "rein/egress=20mbit",
        "--annotation",
        "rein/memory=64M",
        "--with-ns",
        "network:/run/netns/cd-ns",
        "--rootfs",
        rootfs,
        "cd-net",
    ];
    // ctr puts a container's cgroup at /<namespace>/<id>.
    let mut memory = String::new();
    assert_shaped_at_20mbit(&agent, "cd-net", Some(&ns), ("ctr", &ctr_args), || {
        memory = cgroup_read("/default/cd-net", "memory.max");
    });
    assert_eq!(memory, "67108864");
    drop(containerd);
}

/// The lines of the folded block (`- >-`) that follows `marker` in `yaml`, joined: the shell
/// command of a container in deploy/kubernetes/rein.yaml.
fn folded_command_after(yaml: &str, marker: &str) -> String {
    let rest = &yaml[yaml.find(marker).unwrap()..];
    let mut lines = rest.lines().skip_while(|l| l.trim() != "- >-").skip(1);
    let first = lines.next().unwrap();
    let indent = first.len() - first.trim_start().len();
    std::iter::once(first)
        .chain(
            lines.take_while(|l| l.len() - l.trim_start().len() >= indent && !l.trim().is_empty()),
        )
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The capabilities the DaemonSet's agent container adds (the `- NAME` lines after `add:`).
fn agent_capabilities(yaml: &str) -> Vec<String> {
    let rest = &yaml[yaml.find("- name: agent").unwrap()..];
    rest.lines()
        .skip_while(|l| l.trim() != "add:")
        .skip(1)
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .take_while(|l| l.starts_with("- "))
        .map(|l| l[2..].to_owned())
        .collect()
}

/// deploy/kubernetes/Containerfile built for real with Podman (on the busybox test image as
/// BASE: the VM has no registry), then run as deploy/kubernetes/rein.yaml runs it: its
/// install-hook command puts the binary and the hooks file on the "node" (here into Podman's
/// hooks directory), the agent runs in a container with the DaemonSet's capabilities, host
/// namespaces and mounts, and a second container's annotations reach it through the
/// installed hook.
#[test]
fn the_image_built_from_the_containerfile_runs_the_agent_for_a_second_container() {
    const YAML: &str = include_str!("../../../deploy/kubernetes/rein.yaml");
    podman_ready();
    let _cleanup = ImageTestCleanup;
    let ctx = Path::new("/tmp/rein-image-context");
    let _ = std::fs::remove_dir_all(ctx);
    for (path, data) in [
        (
            "deploy/kubernetes/Containerfile",
            include_bytes!("../../../deploy/kubernetes/Containerfile").as_slice(),
        ),
        (
            "deploy/hooks.d/rein.json",
            integration_tests::HOOKS_FILE.as_bytes(),
        ),
        (
            "target/x86_64-unknown-linux-musl/release/rein",
            &std::fs::read("/usr/local/bin/rein").unwrap(),
        ),
    ] {
        std::fs::create_dir_all(ctx.join(path).parent().unwrap()).unwrap();
        std::fs::write(ctx.join(path), data).unwrap();
    }
    // As cargo leaves it: COPY keeps the mode.
    std::fs::set_permissions(
        ctx.join("target/x86_64-unknown-linux-musl/release/rein"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let ctx = ctx.to_str().unwrap();
    run_ok(
        "podman",
        &[
            "build",
            "--quiet",
            "--build-arg",
            "BASE=localhost/rein-test",
            "-f",
            "deploy/kubernetes/Containerfile",
            "-t",
            "localhost/rein:test",
            ctx,
        ],
    );

    // The init container: the node's /opt/rein and hooks directory mounted as in rein.yaml.
    let install = folded_command_after(YAML, "- name: install-hook");
    std::fs::create_dir_all("/opt/rein").unwrap();
    run_ok(
        "podman",
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "--cap-drop",
            "ALL",
            "--read-only",
            "-v",
            "/opt/rein:/host/opt/rein",
            "-v",
            &format!(
                "{}:/host/etc/containers/oci/hooks.d",
                integration_tests::PODMAN_HOOKS_DIR
            ),
            // The DaemonSet's `command:` replaces the image's ENTRYPOINT.
            "--entrypoint",
            "/bin/sh",
            "localhost/rein:test",
            "-c",
            &install,
        ],
    );
    let hooks =
        std::fs::read_to_string(Path::new(integration_tests::PODMAN_HOOKS_DIR).join("rein.json"))
            .unwrap();
    assert!(hooks.contains("\"/opt/rein/bin/rein\""), "{hooks}");

    // The agent container: hostNetwork, hostPID, the DaemonSet's capabilities and mounts.
    let caps = agent_capabilities(YAML);
    assert!(caps.contains(&"BPF".to_owned()), "{caps:?}");
    std::fs::create_dir_all("/run/rein").unwrap();
    std::fs::create_dir_all("/etc/rein").unwrap();
    run_ok(
        "podman",
        &[
            "run",
            "-d",
            "--name",
            "rein-agent",
            "--network",
            "host",
            "--pid",
            "host",
            "--cap-drop",
            "ALL",
            "--cap-add",
            &caps.join(","),
            "--security-opt",
            "seccomp=unconfined",
            "--read-only",
            "-v",
            "/sys/fs/cgroup:/sys/fs/cgroup",
            "-v",
            "/sys/fs/bpf:/sys/fs/bpf:rslave",
            "-v",
            "/run/rein:/run/rein",
            "-v",
            "/etc/rein:/etc/rein:ro",
            "localhost/rein:test",
            "agent",
            "--metrics-addr",
            "127.0.0.1:9798",
        ],
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !http_get_ok("127.0.0.1:9798") {
        assert!(
            std::time::Instant::now() < deadline,
            "the agent's container did not serve metrics: {}",
            String::from_utf8_lossy(&run("podman", &["logs", "rein-agent"]).stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    run_ok(
        "podman",
        &[
            "run",
            "-d",
            "--name",
            "pm-second",
            "--network",
            "none",
            "--annotation",
            "rein/name=pm-second",
            "--annotation",
            "rein/memory=48M",
            IMAGE,
            "sleep",
            "120",
        ],
    );
    let cgroup = run_ok(
        "podman",
        &["inspect", "--format", "{{.State.CgroupPath}}", "pm-second"],
    );
    assert_eq!(cgroup_read(cgroup.trim(), "memory.max"), "50331648");
    let ls = run_ok("rein", &["ls"]);
    assert!(
        ls.lines()
            .any(|l| l.starts_with("pm-second ") && l.contains("memory=48M")),
        "{ls}"
    );
    let metrics = http_get("127.0.0.1:9798", "/metrics");
    assert!(
        metrics.contains("name=\"pm-second\""),
        "no series named pm-second"
    );

    run_ok("podman", &["rm", "--force", "--time", "0", "pm-second"]);
    run_ok("podman", &["rm", "--force", "--time", "5", "rein-agent"]);
}

/// Undoes what the image test did to the guest, also when it fails half-way: the agent's
/// container must not keep the default socket from the next test's agent.
struct ImageTestCleanup;

impl Drop for ImageTestCleanup {
    fn drop(&mut self) {
        let _ = run(
            "podman",
            &["rm", "--force", "--time", "0", "pm-second", "rein-agent"],
        );
        let _ = std::fs::remove_dir_all("/opt/rein");
        let _ = std::fs::write(
            Path::new(integration_tests::PODMAN_HOOKS_DIR).join("rein.json"),
            integration_tests::HOOKS_FILE,
        );
        integration_tests::remove_agent_state(
            Path::new("/sys/fs/cgroup/rein.slice"),
            Path::new("/sys/fs/bpf/rein"),
        );
    }
}

/// Whether something listens at `addr` (connections are refused while the agent starts).
fn http_get_ok(addr: &str) -> bool {
    std::net::TcpStream::connect(addr).is_ok()
}
