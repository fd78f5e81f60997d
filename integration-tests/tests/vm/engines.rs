//! The real container engines end to end, as Debian 12 ships them: Podman 4.3 with rein's
//! hooks file in its hooks directory, dockerd 20.10 with `rein-runtime` as an added runtime,
//! containerd 1.6's `ctr` with the runc shim pointed at `rein-runtime`. Each test starts the
//! daemon it needs once and drives it through its own CLI.

use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    time::Duration,
};

use integration_tests::{
    AgentGuard, ContainerNetns, Daemon, HOST_DEV, IMAGE, KillOnDrop, PodmanContainers, REMOTE_IP,
    ROOTFS_TAR, RemoteNetns, http_get, podman_ready, rein_runtime, run, run_ok, unpacked_rootfs,
};

use super::runtime::{Forgotten, assert_forgotten, read};

/// The agent the engines' hooks reach: named `rein`, it listens on the default socket
/// (/run/rein/rein.sock) that the shipped hooks file and `rein-runtime` use.
fn agent(extra: &[&str]) -> AgentGuard {
    AgentGuard::start_with("rein", extra)
}

/// The directory of a cgroup path as an engine reports it (`/libpod_parent/...`).
fn cgroup_dir(path: &str) -> PathBuf {
    Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/'))
}

/// The cgroup id (inode) of a cgroup path as an engine reports it.
fn cgroup_id(path: &str) -> u64 {
    let dir = cgroup_dir(path);
    std::fs::metadata(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .ino()
}

fn cgroup_read(path: &str, file: &str) -> String {
    read(&cgroup_dir(path), file)
}

/// Runs iperf3 towards the remote namespace for 10 s in a container that `program ARGS`
/// starts (ARGS end with the image; the engine asked for `rein/egress=20mbit`), waits until
/// rein lists `name` and, for a container in `netns`, until rein paces inside it; then
/// asserts that the steady rate, from 1.5 s after the first bytes on, is within 10% of
/// 20 Mbit/s.
fn assert_shaped_at_20mbit(
    agent: &AgentGuard,
    name: &str,
    netns: Option<&ContainerNetns>,
    (program, args): (&str, &[&str]),
) {
    let child = KillOnDrop(Some(
        std::process::Command::new(program)
            .args(args)
            .args(["iperf3", "-c", REMOTE_IP, "-t", "10"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    ));
    agent.wait_listed(name);
    if let Some(ns) = netns {
        assert!(
            ns.wait_paced(Duration::from_secs(4)),
            "{name}: rein did not pace inside its namespace"
        );
    }
    // The window starts from the traffic, not from the start (which is slow under TCG):
    // past TCP's ramp-up, then three seconds of rein's own counters.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while agent.stats(name)["usage"]["net_tx_bytes"].as_f64() == Some(0.0) {
        assert!(std::time::Instant::now() < deadline, "{name} sent nothing");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let rate = agent.tx_rate(name, Duration::from_secs(3));
    let out = child.wait();
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
    let _containers = PodmanContainers(&["pm-web"]);
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
    // Nothing registered (rein would list it under its id: it had no rein/name).
    assert_eq!(agent.rein_ok(&["ls", "--json"]).trim(), "[]");
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
    let _containers = PodmanContainers(&["pm-ns", "pm-host"]);
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
        );
    }
}

/// dockerd with `rein-runtime` as an added runtime, as docs/runtimes.md sets it up: the
/// environment's `rein/` entries on (`REIN_LIMITS_FROM_ENV=1`), the test image imported.
fn dockerd() -> Daemon {
    let wrapper = rein_runtime();
    let d = Daemon::start(
        "dockerd",
        &[
            "--iptables=false",
            "--ip6tables=false",
            "--bridge=none",
            "--storage-driver=vfs",
            "--add-runtime",
            &format!("rein={wrapper}"),
        ],
        &[("REIN_LIMITS_FROM_ENV", "1")],
        || run("docker", &["info"]).status.success(),
    );
    run_ok("docker", &["import", ROOTFS_TAR, "rein-test"]);
    d
}

/// `docker run MODE --runtime rein` (MODE `--rm` or `-d`) with more arguments.
fn docker_run(mode: &'static str, more: &[&'static str]) -> Vec<&'static str> {
    [&["run", mode, "--runtime", "rein"], more].concat()
}

/// Every `docker run --runtime rein` is registered with the limits Docker's own flags set;
/// the limits Docker 20.10 has no flag for come as `-e rein/...` (it has no `--annotation`);
/// a bad value refuses the start with rein's message; `docker rm` forgets the container.
#[test]
fn docker_with_the_rein_runtime_registers_its_flags_and_environment_limits() {
    let agent = agent(&[]);
    let dockerd = dockerd();
    // Docker's flags: the container is listed under its id, with those limits.
    let id = run_ok(
        "docker",
        &docker_run(
            "-d",
            &[
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
        ),
    );
    let id = id.trim();
    agent.wait_listed(id);
    let ls = agent.rein_ok(&["ls"]);
    let line = ls.lines().find(|l| l.starts_with(id)).unwrap();
    assert!(
        line.contains("cpus=0.5") && line.contains("memory=64M"),
        "{ls}"
    );
    let cg_id = cgroup_id(&format!("/docker/{id}"));

    let bad = run(
        "docker",
        &docker_run(
            "--rm",
            &[
                "--network",
                "none",
                "-e",
                "rein/egress=fast",
                "rein-test",
                "true",
            ],
        ),
    );
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(!bad.status.success(), "started with rein/egress=fast");
    assert!(
        stderr.contains("annotation rein/egress: invalid value \"fast\""),
        "Docker's output lacks rein's message: {stderr}"
    );

    // What Docker has no flag for, and the name, through the environment.
    let env_id = run_ok(
        "docker",
        &docker_run(
            "-d",
            &[
                "--network",
                "none",
                "-e",
                "rein/name=dk-env",
                "-e",
                "rein/egress=20mbit",
                "-e",
                "rein/priority=low",
                "rein-test",
                "sleep",
                "120",
            ],
        ),
    );
    agent.wait_listed("dk-env");
    let ls = agent.rein_ok(&["ls"]);
    let line = ls.lines().find(|l| l.starts_with("dk-env ")).unwrap();
    assert!(
        line.contains("egress=20mbit") && line.contains("priority=low"),
        "{ls}"
    );

    run_ok("docker", &["rm", "--force", id, env_id.trim()]);
    assert_forgotten(&agent, id, cg_id, Forgotten::Soon);
    drop(dockerd);
}

/// iperf3 in a `docker run --runtime rein -e rein/egress=20mbit` container on the host's
/// network is held to the limit.
#[test]
fn docker_egress_asked_for_through_the_environment_is_shaped() {
    integration_tests::measures_throughput();
    let net = RemoteNetns::new("remote-dk");
    let agent = agent(&["--egress-dev", HOST_DEV]);
    let dockerd = dockerd();
    let _server = net.iperf3_server();
    let args = docker_run(
        "--rm",
        &[
            "--network",
            "host",
            "-e",
            "rein/name=dk-net",
            "-e",
            "rein/egress=20mbit",
            "rein-test",
        ],
    );
    assert_shaped_at_20mbit(&agent, "dk-net", None, ("docker", &args));
    drop(dockerd);
}

/// containerd on a socket of its own, for one test.
const CONTAINERD_SOCK: &str = "/run/rein-containerd/containerd.sock";

fn containerd() -> Daemon {
    Daemon::start(
        "containerd",
        &[
            "--address",
            CONTAINERD_SOCK,
            "--root",
            "/var/lib/rein-containerd",
            "--state",
            "/run/rein-containerd",
        ],
        &[],
        || {
            run("ctr", &["--address", CONTAINERD_SOCK, "version"])
                .status
                .success()
        },
    )
}

/// `ctr run` with the runc shim's binary set to `rein-runtime` and `--annotation`s: ARGS
/// (network, id, command) follow.
fn ctr_run(name: &str, annotations: &[&str], more: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "--address",
        CONTAINERD_SOCK,
        "run",
        "--runc-binary",
        rein_runtime(),
        "--env",
        "PATH=/bin:/usr/bin",
        "--annotation",
    ]
    .map(String::from)
    .to_vec();
    args.push(format!("rein/name={name}"));
    for a in annotations {
        args.extend(["--annotation".to_owned(), (*a).to_owned()]);
    }
    args.extend(more.iter().map(|s| (*s).to_owned()));
    args
}

/// containerd's `ctr run` with the runc shim's binary set to `rein-runtime`: annotations
/// reach the spec and the limits apply; deleting the container forgets it.
#[test]
fn containerd_ctr_with_the_rein_runtime_gets_its_annotations_limits() {
    let agent = agent(&[]);
    let containerd = containerd();
    let rootfs = unpacked_rootfs();
    let args = ctr_run(
        "cd-mem",
        &["rein/memory=64M", "rein/priority=low"],
        &["-d", "--rootfs", rootfs, "cd-mem", "sleep", "120"],
    );
    run_ok("ctr", &args.iter().map(String::as_str).collect::<Vec<_>>());
    agent.wait_listed("cd-mem");
    // ctr puts a container's cgroup at /<namespace>/<id>.
    assert_eq!(cgroup_read("/default/cd-mem", "memory.max"), "67108864");
    let ls = agent.rein_ok(&["ls"]);
    assert!(
        ls.lines()
            .any(|l| l.starts_with("cd-mem ") && l.contains("priority=low")),
        "{ls}"
    );
    let id = cgroup_id("/default/cd-mem");
    let ctr = |more: &[&str]| run("ctr", &[&["--address", CONTAINERD_SOCK][..], more].concat());
    ctr(&["task", "kill", "--signal", "SIGKILL", "cd-mem"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !ctr(&["task", "delete", "cd-mem"]).status.success() {
        assert!(std::time::Instant::now() < deadline, "the task did not end");
        std::thread::sleep(Duration::from_millis(200));
    }
    run_ok(
        "ctr",
        &[
            "--address",
            CONTAINERD_SOCK,
            "container",
            "delete",
            "cd-mem",
        ],
    );
    assert_forgotten(&agent, "cd-mem", id, Forgotten::Soon);
    drop(containerd);
}

/// iperf3 in a `ctr run` container in a network namespace of its own (`--with-ns`) is held
/// to its `rein/egress` annotation.
#[test]
fn containerd_ctr_egress_annotation_is_shaped_in_the_containers_namespace() {
    integration_tests::measures_throughput();
    let net = RemoteNetns::new("remote-cd");
    net.route_back(ContainerNetns::SUBNET);
    let ns = ContainerNetns::new("cd-ns");
    let agent = agent(&["--egress-dev", HOST_DEV]);
    let containerd = containerd();
    let rootfs = unpacked_rootfs();
    let _server = net.iperf3_server();
    let args = ctr_run(
        "cd-net",
        &["rein/egress=20mbit"],
        &[
            "--rm",
            "--with-ns",
            "network:/run/netns/cd-ns",
            "--rootfs",
            rootfs,
            "cd-net",
        ],
    );
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    assert_shaped_at_20mbit(&agent, "cd-net", Some(&ns), ("ctr", &args));
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
    let ctx = Path::new(IMAGE_CONTEXT);
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
    std::fs::create_dir_all(NODE_HOOKS_DIR).unwrap();
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
            &format!("{NODE_HOOKS_DIR}:/host/etc/containers/oci/hooks.d"),
            // The DaemonSet's `command:` replaces the image's ENTRYPOINT.
            "--entrypoint",
            "/bin/sh",
            "localhost/rein:test",
            "-c",
            &install,
        ],
    );
    let hooks = std::fs::read_to_string(Path::new(NODE_HOOKS_DIR).join("rein.json")).unwrap();
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
    while !listening("127.0.0.1:9798") {
        assert!(
            std::time::Instant::now() < deadline,
            "the agent's container did not serve metrics: {}",
            String::from_utf8_lossy(&run("podman", &["logs", "rein-agent"]).stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The DaemonSet's probes.
    assert_eq!(http_get("127.0.0.1:9798", "/healthz"), "ok\n");

    // The node's runtime reads the directory the DaemonSet installs into only where its
    // hooks_dir lists it (CRI-O's and Podman's default is /usr/share/...; see
    // deploy/kubernetes/README.md): here Podman's --hooks-dir says so.
    run_ok(
        "podman",
        &[
            "--hooks-dir",
            NODE_HOOKS_DIR,
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

/// Where the image test builds, and the node's hooks directory the DaemonSet installs into.
const IMAGE_CONTEXT: &str = "/tmp/rein-image-context";
const NODE_HOOKS_DIR: &str = "/etc/containers/oci/hooks.d";

/// Undoes what the image test did to the guest, also when it fails half-way: the agent's
/// container must not keep the default socket from the next test's agent.
struct ImageTestCleanup;

impl Drop for ImageTestCleanup {
    fn drop(&mut self) {
        drop(PodmanContainers(&["pm-second", "rein-agent"]));
        let _ = run("podman", &["rmi", "--force", "localhost/rein:test"]);
        let _ = std::fs::remove_dir_all(IMAGE_CONTEXT);
        let _ = std::fs::remove_dir_all("/opt/rein");
        let _ = std::fs::remove_dir_all(NODE_HOOKS_DIR);
        let _ = std::fs::remove_dir("/etc/rein");
        integration_tests::remove_agent_state(
            Path::new("/sys/fs/cgroup/rein.slice"),
            Path::new("/sys/fs/bpf/rein"),
        );
    }
}

/// Whether something listens at `addr` (connections are refused while the agent starts).
fn listening(addr: &str) -> bool {
    std::net::TcpStream::connect(addr).is_ok()
}
