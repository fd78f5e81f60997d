//! Runtime integration with the real runtimes: runc and crun run OCI bundles whose config.json
//! carries rein's hooks (as the snippet in docs/runtimes.md shows), and `rein-runtime` wraps runc the way
//! dockerd calls it.

use std::{os::unix::fs::MetadataExt as _, path::Path, time::Duration};

use integration_tests::{
    AgentGuard, HOST_DEV, OciBundle, REMOTE_IP, RemoteNetns, http_get, shaper_keys,
};

/// Waits (up to 10 s) until `rein stats NAME --json` answers; returns it.
fn wait_registered(agent: &AgentGuard, name: &str) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let out = agent.rein(&["stats", name, "--json"]);
        if out.status.success() {
            return serde_json::from_slice(&out.stdout).unwrap();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name} was not registered: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A cgroup file's contents, trimmed (a failure names the file).
pub(crate) fn read(dir: &Path, file: &str) -> String {
    let p = dir.join(file);
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
        .trim()
        .to_owned()
}

/// Asserts that nothing of a registered container is left: record, links, map entries.
/// `Promptly` right after a poststop hook ran; `Soon` (within 3 s) where the agent's
/// once-a-second walk forgets it (no poststop hook, or a cgroup deleted while it was down).
pub(crate) fn assert_forgotten(agent: &AgentGuard, name: &str, id: u64, when: Forgotten) {
    let record = agent
        .bpf_dir()
        .join("external")
        .join(name.replace('.', "+"));
    let left = || {
        let ls = agent.rein_ok(&["ls", "--json"]);
        let mut left = Vec::new();
        if record.exists() {
            left.push("the registry record and pinned links".to_owned());
        }
        if shaper_keys(&agent.bpf_dir()).contains(&id) {
            left.push("the shaping entry".to_owned());
        }
        if ls.contains(&format!("\"{name}\"")) {
            left.push(format!("its listing: {ls}"));
        }
        left
    };
    let within = match when {
        Forgotten::Promptly => Duration::ZERO,
        Forgotten::Soon => Duration::from_secs(3),
    };
    let deadline = std::time::Instant::now() + within;
    let mut now = left();
    while !now.is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        now = left();
    }
    assert!(
        now.is_empty(),
        "{name} not forgotten within {within:?}: {now:?}"
    );
}

#[derive(Clone, Copy)]
pub(crate) enum Forgotten {
    Promptly,
    Soon,
}

/// A container started by `runtime` with annotations gets its limits (the spec's CPU quota
/// winning over the annotation's), egress shaping and labelled metrics; its pod's
/// `kubernetes.io/egress-bandwidth` limits the pod, whose cgroup becomes a group; once the
/// runtime deletes it nothing of it, nor of its pod's group, remains.
fn annotated_container_is_limited_shaped_and_labelled(runtime: &str, port: u16) {
    integration_tests::measures_throughput();
    let net = RemoteNetns::new(&format!("remote-{runtime}"));
    let addr = format!("127.0.0.1:{port}");
    let agent = AgentGuard::start_with(
        &format!("rein-{runtime}"),
        &["--egress-dev", HOST_DEV, "--metrics-addr", &addr],
    );
    let _server = net.iperf3_server();
    // A pod UID as the API server makes them (a UUID), one per runtime's test.
    let uid = match runtime {
        "runc" => "3f0b6a52-6d1e-4c3a-9b7e-2f1d0c9a8b71",
        _ => "3f0b6a52-6d1e-4c3a-9b7e-2f1d0c9a8b72",
    };
    let b = OciBundle::new(
        runtime,
        &format!("{runtime}-web"),
        &["iperf3", "-c", REMOTE_IP, "-J", "-t", "5"],
    );
    b.annotate(&[
        ("rein/name", "web.v1"),
        ("rein/memory", "96M"),
        ("rein/pids", "64"),
        ("rein/cpus", "0.5"),
        ("kubernetes.io/egress-bandwidth", "20M"),
        ("io.kubernetes.pod.name", "web-0"),
        ("io.kubernetes.pod.namespace", "shop"),
        ("io.kubernetes.pod.uid", uid),
        ("io.kubernetes.container.name", "server"),
        (
            "io.kubernetes.cri.image-name",
            "docker.io/library/iperf3:3.12",
        ),
    ]);
    b.edit(|c| {
        c["linux"]["resources"]["cpu"] = serde_json::json!({"quota": 150000, "period": 100000});
        // As kubelet lays out a pod: its containers' cgroups inside the pod's, named after
        // the pod's UID.
        c["linux"]["cgroupsPath"] = format!("/rein-oci/pod{uid}/{runtime}-web").into();
    });
    b.add_rein_hooks(&agent.socket, &[]);
    let child = b.spawn_run();

    let stats = wait_registered(&agent, "web.v1");
    let cgroup = b.cgroup();
    assert_eq!(stats["path"], cgroup.display().to_string());
    let id = std::fs::metadata(&cgroup).unwrap().ino();
    assert_eq!(read(&cgroup, "memory.max"), (96u64 << 20).to_string());
    assert_eq!(read(&cgroup, "pids.max"), "64");
    assert_eq!(
        read(&cgroup, "cpu.max"),
        "150000 100000",
        "the spec's CPU quota wins over rein/cpus"
    );
    // The pod's bandwidth annotation is the pod's: its group carries it.
    assert!(stats["limits"].get("egress").is_none(), "{stats}");
    let pod = wait_registered(&agent, "shop_web-0");
    assert_eq!(pod["kind"], "group", "{pod}");
    assert_eq!(pod["limits"]["egress"], "20mbit", "{pod}");
    let pod_dir = cgroup.parent().unwrap().to_owned();
    let pod_id = std::fs::metadata(&pod_dir).unwrap().ino();
    assert!(shaper_keys(&agent.bpf_dir()).contains(&pod_id));

    let metrics = http_get(&addr, "/metrics");
    let line = metrics
        .lines()
        .find(|l| l.starts_with("container_memory_usage_bytes{") && l.contains("name=\"web.v1\""))
        .unwrap_or_else(|| panic!("no memory series for web:\n{metrics}"));
    for label in [
        format!("id=\"/rein-oci/pod{uid}/{runtime}-web\""),
        "pod=\"web-0\"".to_owned(),
        "namespace=\"shop\"".to_owned(),
        "container=\"server\"".to_owned(),
        "image=\"docker.io/library/iperf3:3.12\"".to_owned(),
    ] {
        assert!(line.contains(&label), "{label} missing from {line}");
    }
    // The pod's own series carry neither container nor image, as cAdvisor's.
    let pod_line = metrics
        .lines()
        .find(|l| {
            l.starts_with("container_memory_usage_bytes{") && l.contains("name=\"shop_web-0\"")
        })
        .unwrap_or_else(|| panic!("no memory series for the pod:\n{metrics}"));
    assert!(
        pod_line.contains("pod=\"web-0\"")
            && !pod_line.contains("image=")
            && !pod_line.contains("container="),
        "{pod_line}"
    );

    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{runtime} run failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("iperf3 JSON ({e}): {stdout}"));
    let goodput = report["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap();
    let ratio = goodput / 20e6;
    println!(
        "{runtime}: goodput {:.2} Mbit/s = {ratio:.3} of 20M",
        goodput / 1e6
    );
    assert!(
        (0.9..=1.05).contains(&ratio),
        "goodput {goodput} is not within -10%/+5% of 20 Mbit/s"
    );

    // `run` deleted the container: the runtime removed the cgroup, poststop unregistered it,
    // and the pod's group went with its last container.
    assert!(!cgroup.exists());
    assert_forgotten(&agent, "web.v1", id, Forgotten::Promptly);
    assert_forgotten(&agent, "shop_web-0", pod_id, Forgotten::Promptly);
    let _ = std::fs::remove_dir(&pod_dir);
}

#[test]
fn runc_container_is_limited_shaped_and_labelled() {
    annotated_container_is_limited_shaped_and_labelled("runc", 9795);
}

#[test]
fn crun_container_is_limited_shaped_and_labelled() {
    annotated_container_is_limited_shaped_and_labelled("crun", 9794);
}

/// `rein hook` asks for no answer body (`Prefer: return=minimal`, so a container start does
/// not wait for every limit to be read back): the registration is made all the same, and
/// the answer is a bare 201. A caller that does not ask gets the container, as before.
#[test]
fn a_registration_asking_for_a_minimal_answer_is_made_and_answered_without_a_body() {
    let agent = AgentGuard::start("rein-oci-minimal");
    // Made as a runtime makes it, outside rein's root, with the controllers enabled.
    let guard = integration_tests::CgroupGuard::new("minimal");
    let cgroup = guard.path().to_owned();
    // The whole answer, read to the close its `connection: close` asks for.
    let post = |prefer: &str| {
        use std::io::{Read as _, Write as _};
        let body = serde_json::json!({
            "name": "minimal",
            "cgroup": cgroup,
            "limits": {"memory": "64M"},
        })
        .to_string();
        let mut s = std::os::unix::net::UnixStream::connect(&agent.socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        write!(
            s,
            "POST /v1/containers HTTP/1.1\r\nhost: rein\r\ncontent-type: application/json\r\n\
             {prefer}content-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).unwrap();
        answer
    };
    let answer = post("prefer: wait=5, return=minimal\r\n");
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"));
    assert!(head.starts_with("HTTP/1.1 201"), "{answer}");
    assert!(
        head.contains("preference-applied: return=minimal"),
        "{answer}"
    );
    assert_eq!(body, "", "{answer}");
    assert_eq!(read(&cgroup, "memory.max"), (64u64 << 20).to_string());
    let stats = wait_registered(&agent, "minimal");
    assert_eq!(stats["path"], cgroup.display().to_string());

    agent.rein_ok(&["rm", "minimal"]);
    let answer = post("");
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP answer: {answer:?}"));
    assert!(head.starts_with("HTTP/1.1 201"), "{answer}");
    assert!(!head.contains("preference-applied"), "{answer}");
    let c: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(c["name"], "minimal", "{answer}");
    assert_eq!(c["path"], cgroup.display().to_string(), "{answer}");
    assert_eq!(c["limits"]["memory"], "64M", "{answer}");
    agent.rein_ok(&["rm", "minimal"]);
}

#[test]
fn a_bad_annotation_or_a_missing_agent_refuses_the_start_unless_fail_open() {
    let config = Path::new("/tmp/rein-oci-bad.toml");
    std::fs::write(
        config,
        "[hook_ceiling]\negress = \"50mbit\"\ncpus = \"1\"\n",
    )
    .unwrap();
    let agent = AgentGuard::start_with("rein-oci-bad", &["--config", "/tmp/rein-oci-bad.toml"]);
    let b = OciBundle::new("runc", "bad", &["true"]);
    b.annotate(&[("rein/memory", "lots")]);
    b.add_rein_hooks(&agent.socket, &[]);
    let (ok, stderr) = b.run_to_end();
    assert!(!ok, "a container with a bad annotation must not start");
    assert!(
        stderr.contains("rein/memory") && stderr.contains("lots"),
        "the runtime's error should name the annotation and value: {stderr}"
    );
    assert!(
        !b.cgroup().exists(),
        "the refused container's cgroup is gone"
    );
    assert!(agent.rein_ok(&["ls", "--json"]).trim() == "[]");

    b.add_rein_hooks(&agent.socket, &["--fail-open"]);
    let (ok, stderr) = b.run_to_end();
    assert!(ok, "--fail-open starts it anyway: {stderr}");

    // Annotations may not claim more than the operator's ceiling.
    let greedy = OciBundle::new("runc", "greedy", &["true"]);
    greedy.annotate(&[("kubernetes.io/egress-bandwidth", "100M")]);
    greedy.add_rein_hooks(&agent.socket, &[]);
    let (ok, stderr) = greedy.run_to_end();
    assert!(!ok, "an egress annotation above the ceiling must not start");
    assert!(
        stderr.contains("ceiling 50mbit"),
        "the error should name the ceiling: {stderr}"
    );
    greedy.annotate(&[("kubernetes.io/egress-bandwidth", "20M")]);
    let (ok, stderr) = greedy.run_to_end();
    assert!(ok, "below the ceiling it starts: {stderr}");
    // Flags the config does not name keep the default ceiling: no strict priority for pods.
    greedy.annotate(&[("rein/priority", "critical")]);
    let (ok, stderr) = greedy.run_to_end();
    assert!(
        !ok,
        "a critical priority annotation must not start by default"
    );
    assert!(
        stderr.contains("--priority critical") && stderr.contains("ceiling normal"),
        "the error should name the default ceiling: {stderr}"
    );

    // A pod's sandbox (pause) container may carry the pod's annotations (containerd's
    // pod_annotations): the hook leaves it alone while it runs, and its start succeeds.
    let pause = OciBundle::new("runc", "pause", &["sleep", "3"]);
    pause.annotate(&[
        ("io.kubernetes.cri.container-type", "sandbox"),
        ("rein/memory", "64M"),
    ]);
    pause.add_rein_hooks(&agent.socket, &[]);
    let child = pause.spawn_run();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    // Once its program runs, createRuntime (before the start) has been called.
    let running = || {
        std::fs::read_to_string(pause.cgroup().join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .any(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|c| c.trim() == "sleep")
            })
    };
    while !running() {
        assert!(
            std::time::Instant::now() < deadline,
            "the sandbox did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(agent.rein_ok(&["ls", "--json"]).trim(), "[]");
    assert_eq!(read(&pause.cgroup(), "memory.max"), "max");
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the sandbox runs: {out:?}");

    let nowhere = Path::new("/run/rein-nowhere/rein.sock");
    let b = OciBundle::new("runc", "orphan", &["true"]);
    b.annotate(&[("rein/memory", "64M")]);
    b.add_rein_hooks(nowhere, &["--timeout", "2"]);
    let started = std::time::Instant::now();
    let (ok, stderr) = b.run_to_end();
    assert!(!ok, "without the agent the start fails by default");
    assert!(
        stderr.contains("cannot reach the rein agent"),
        "the error should say the agent is down: {stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the hook is bounded"
    );
    b.add_rein_hooks(nowhere, &["--fail-open"]);
    let (ok, stderr) = b.run_to_end();
    assert!(ok, "--fail-open starts it without the agent: {stderr}");
}

/// `rein-runtime` called as dockerd calls runc: global options before `create`, then
/// `start`, `kill` and `delete` as separate calls.
#[test]
fn the_wrapper_works_when_called_the_way_dockerd_calls_runc() {
    let agent = AgentGuard::start("rein-oci-wrap");
    let b = OciBundle::new("runc", "wrapped", &["sleep", "60"]);
    b.annotate(&[("rein/memory", "64M"), ("rein/egress", "10mbit")]);
    let work = Path::new("/tmp/rein-wrap");
    let _ = std::fs::remove_dir_all(work);
    std::fs::create_dir_all(work).unwrap();
    let wrapper = work.join("rein-runtime");
    std::os::unix::fs::symlink("/usr/local/bin/rein", &wrapper).unwrap();
    let root = b.state_root();
    let log = work.join("log.json").display().to_string();
    let call = |args: &[&str]| {
        let mut c = std::process::Command::new(&wrapper);
        c.env("REIN_SOCKET", &agent.socket)
            .env("REIN_RUNTIME", "runc")
            .args(["--root", &root, "--log", &log, "--log-format", "json"])
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(work.join("stderr")).unwrap());
        let status = c.status().unwrap();
        assert!(
            status.success(),
            "rein-runtime {args:?}: {status}: {}",
            std::fs::read_to_string(work.join("stderr")).unwrap_or_default()
        );
    };
    let bundle = b.dir.display().to_string();
    let pid_file = work.join("init.pid").display().to_string();
    call(&[
        "create",
        "--bundle",
        &bundle,
        "--pid-file",
        &pid_file,
        "wrapped",
    ]);
    let hooks = &b.config()["hooks"];
    let args = hooks["createRuntime"][0]["args"].as_array().unwrap();
    assert_eq!(args.last().unwrap(), "createRuntime", "{hooks}");
    let stats = wait_registered(&agent, "wrapped");
    assert_eq!(stats["limits"]["memory"], "64M", "{stats}");
    assert_eq!(read(&b.cgroup(), "memory.max"), (64u64 << 20).to_string());
    let id = std::fs::metadata(b.cgroup()).unwrap().ino();
    call(&["start", "wrapped"]);
    call(&["kill", "wrapped", "KILL"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !read(&b.cgroup(), "cgroup.procs").is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the container did not stop"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    call(&["delete", "wrapped"]);
    assert!(!b.cgroup().exists());
    assert_forgotten(&agent, "wrapped", id, Forgotten::Soon);
    let _ = std::fs::remove_dir_all(work);
}

/// The recommended setup runs one hook process per container start (createRuntime, no
/// poststop): a deleted container is forgotten by the agent within seconds, and one made
/// again under the same name at once is registered anew, with its limits: the registration
/// replaces the dead one (unless the agent's once-a-second walk forgot it first; without
/// the replacement the start would fail with the name taken most of the time).
#[test]
fn with_the_create_hook_alone_a_deleted_name_is_forgotten_and_free_at_once() {
    let agent = AgentGuard::start("rein-oci-one");
    for runtime in ["runc", "crun"] {
        let name = format!("once-{runtime}");
        let b = OciBundle::new(runtime, &name, &["sleep", "60"]);
        b.annotate(&[("rein/memory", "64M"), ("rein/egress", "10mbit")]);
        b.add_rein_create_hook(&agent.socket, &[]);
        let hooks = &b.config()["hooks"];
        assert!(hooks.get("poststop").is_none(), "{hooks}");
        let start = || {
            let status = b.run_command(true).status().unwrap();
            assert!(status.success(), "{runtime} run {name}: {status}");
            wait_registered(&agent, &name);
            std::fs::metadata(b.cgroup()).unwrap().ino()
        };
        let delete = || {
            let status = b
                .command(&["delete", "--force"])
                .arg(&b.id)
                .status()
                .unwrap();
            assert!(status.success());
            assert!(!b.cgroup().exists());
        };
        let first = start();
        delete();
        // At once, before the agent's walk: the same name in a new cgroup.
        let second = start();
        assert_ne!(first, second);
        assert_eq!(read(&b.cgroup(), "memory.max"), (64u64 << 20).to_string());
        let shaped = shaper_keys(&agent.bpf_dir());
        assert!(
            shaped.contains(&second) && !shaped.contains(&first),
            "the new cgroup shaped, the deleted one's entry gone: {shaped:?}"
        );
        delete();
        assert_forgotten(&agent, &name, second, Forgotten::Soon);
    }
}

/// A registered container outlives an agent crash (its links and limits are in the kernel);
/// one deleted while the agent is down is forgotten when the agent comes back.
#[test]
fn registrations_survive_the_agent_and_are_pruned_when_the_cgroup_went() {
    let mut agent = AgentGuard::start("rein-oci-crash");
    let b = OciBundle::new("runc", "crashy", &["sleep", "60"]);
    b.annotate(&[("rein/memory", "64M"), ("rein/egress", "10mbit")]);
    b.add_rein_hooks(&agent.socket, &["--fail-open"]);
    let status = b
        .run_command(true)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    wait_registered(&agent, "crashy");
    let id = std::fs::metadata(b.cgroup()).unwrap().ino();
    agent.stop(libc::SIGKILL);
    agent.restart();
    let stats = wait_registered(&agent, "crashy");
    assert_eq!(stats["limits"]["egress"], "10mbit", "adopted: {stats}");
    agent.stop(libc::SIGKILL);
    // Deleted while the agent is down: poststop cannot reach it (and fails open).
    let status = b
        .command(&["delete", "--force", "crashy"])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(!b.cgroup().exists());
    assert!(agent.bpf_dir().join("external/crashy").exists());
    agent.restart();
    assert_forgotten(&agent, "crashy", id, Forgotten::Soon);
}

/// A uid the agent allows may make, change and remove rein's own containers and groups, not
/// a runtime's: those follow their annotations under the operator's ceiling, and only root
/// (the runtime's hook) changes or removes them.
#[test]
fn an_allowed_uid_may_not_change_or_remove_a_runtimes_container() {
    use std::os::unix::process::CommandExt as _;
    let agent = AgentGuard::start_with("rein-oci-uid", &["--allow-uid", "1000"]);
    let b = OciBundle::new("runc", "owned", &["sleep", "30"]);
    b.annotate(&[("rein/pids", "64")]);
    b.add_rein_hooks(&agent.socket, &[]);
    let child = b.spawn_run();
    wait_registered(&agent, "owned");
    let as_user = |args: &[&str]| {
        std::process::Command::new("rein")
            .arg("--socket")
            .arg(&agent.socket)
            .args(args)
            .uid(1000)
            .gid(1000)
            .output()
            .unwrap()
    };
    for args in [
        &["set", "owned", "--pids", "5000"][..],
        &["rm", "--force", "owned"][..],
    ] {
        let out = as_user(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("only root may change or remove"),
            "uid 1000 {args:?}: {out:?}"
        );
    }
    assert_eq!(read(&b.cgroup(), "pids.max"), "64", "uid 1000 changed it");
    let out = as_user(&["run", "--name", "try", "--", "true"]);
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("needs root"),
        "uid 1000 rein run: {out:?}"
    );
    assert!(
        !agent.rein_ok(&["ls"]).contains("try"),
        "a refused run made a container"
    );
    for args in [
        &["group", "create", "mine", "--pids", "10"][..],
        &["set", "mine", "--pids", "20"][..],
        &["rm", "mine"][..],
    ] {
        let out = as_user(args);
        assert!(out.status.success(), "uid 1000 {args:?}: {out:?}");
    }
    agent.rein_ok(&["set", "owned", "--pids", "128"]);
    assert_eq!(read(&b.cgroup(), "pids.max"), "128", "root may");
    let killed = b.command(&["kill", "owned", "KILL"]).status().unwrap();
    assert!(killed.success());
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "sleep 30 ended early: {out:?}");
}

/// Containers that start while the agent restarts wait for it (within the hook's
/// `--timeout`) instead of failing: 20 runc containers with fail-closed hooks, started one
/// after another while the agent is killed and started again 1.5 s later, all start.
#[test]
fn containers_started_during_an_agent_restart_all_start() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let mut agent = AgentGuard::start("rein-oci-restart");
    let socket = agent.socket.clone();
    let done = std::sync::Arc::new(AtomicUsize::new(0));
    let progress = done.clone();
    let starts = std::thread::spawn(move || {
        (0..20)
            .map(|i| {
                let b = OciBundle::new("runc", &format!("restart{i}"), &["true"]);
                b.annotate(&[("rein/pids", "77")]);
                b.add_rein_hooks(&socket, &["--timeout", "10"]);
                let started = std::time::Instant::now();
                let (ok, stderr) = b.run_to_end();
                progress.fetch_add(1, Ordering::SeqCst);
                (b.id.clone(), ok, stderr, started.elapsed())
            })
            .collect::<Vec<_>>()
    });
    while done.load(Ordering::SeqCst) < 3 {
        std::thread::sleep(Duration::from_millis(10));
    }
    agent.stop(libc::SIGKILL);
    let down = std::time::Instant::now();
    std::thread::sleep(Duration::from_millis(1500));
    agent.restart();
    eprintln!(
        "restart: agent down for {:.2} s, back after {} containers",
        down.elapsed().as_secs_f64(),
        done.load(Ordering::SeqCst)
    );
    let results = starts.join().unwrap();
    let slowest = results.iter().map(|r| r.3).max().unwrap_or_default();
    eprintln!(
        "restart: slowest container start {:.2} s",
        slowest.as_secs_f64()
    );
    let failed: Vec<_> = results.iter().filter(|r| !r.1).collect();
    assert!(
        failed.is_empty(),
        "failed to start during the restart: {failed:?}"
    );
    assert!(
        slowest > Duration::from_millis(1000),
        "no start waited for the agent: the restart did not overlap the starts"
    );
}

/// A relative `linux.cgroupsPath` goes where each runtime puts it (runc: below the parent of
/// runc's own cgroup; crun: below the mount): rein registers the cgroup the container's
/// process is really in, applies its limits there, and poststop unregisters it.
#[test]
fn a_relative_cgroups_path_is_registered_where_the_runtime_put_it() {
    let agent = AgentGuard::start("rein-oci-rel");
    for (runtime, expected) in [
        ("runc", "/sys/fs/cgroup/rein-test/rein-rel/runc-rel"),
        ("crun", "/sys/fs/cgroup/rein-rel/crun-rel"),
    ] {
        let runner = integration_tests::CgroupGuard::new(&format!("relrunner-{runtime}"));
        let id = format!("{runtime}-rel");
        let b = OciBundle::new(runtime, &id, &["sleep", "60"]);
        b.edit(|c| c["linux"]["cgroupsPath"] = format!("rein-rel/{id}").into());
        b.annotate(&[("rein/pids", "77")]);
        b.add_rein_hooks(&agent.socket, &[]);
        let mut cmd = b.run_command(false);
        cmd.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        // From a cgroup of its own, where runc's and crun's placements differ.
        let run = runner.spawn(&mut cmd);
        let stats = wait_registered(&agent, &id);
        assert_eq!(stats["path"].as_str(), Some(expected), "{runtime}: {stats}");
        assert_eq!(read(Path::new(expected), "pids.max"), "77", "{runtime}");
        assert!(
            b.command(&["kill", &id, "KILL"])
                .status()
                .unwrap()
                .success()
        );
        // Killed: its status says so; what matters is what poststop did.
        let _ = run.wait_with_output().unwrap();
        // poststop found the registration by name and its cgroup's ending.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while agent.rein(&["stats", &id]).status.success() {
            assert!(
                std::time::Instant::now() < deadline,
                "{runtime}: {id} still registered after poststop"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // The runtime removed the container's cgroup; the parent it made is ours to remove.
        let _ = std::fs::remove_dir(Path::new(expected).parent().unwrap());
    }
}
