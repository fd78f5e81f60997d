//! Helpers for rein's VM tests: guards that undo what a test did, and ways to run a process
//! inside a cgroup. Everything here assumes it runs as root inside the test VM, where
//! `/init` mounted cgroup2 at `/sys/fs/cgroup` with cpu, memory, io, pids and cpuset enabled.

#![allow(
    clippy::unwrap_used,
    reason = "test support: a panic is how a VM test reports what it saw"
)]

use std::{
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command},
};

/// Where the test VM mounts cgroup2.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// Set by the VM's /init; tests refuse to run without it so that they never touch a host.
pub const VM_MARKER_ENV: &str = "REIN_VM";
/// The helper binary of this crate (see `src/bin/rein-test-helper.rs`).
pub const HELPER: &str = "/usr/local/bin/rein-test-helper";

/// Panics unless running in the test VM: these tests write cgroup limits and attach programs.
pub fn require_vm() {
    assert!(
        std::env::var_os(VM_MARKER_ENV).is_some(),
        "VM tests change kernel state: run them with `cargo xtask vm-test`"
    );
}

/// A cgroup created for one test under `/sys/fs/cgroup/rein-test/`; on drop its processes are
/// killed (cgroup.kill) and the directory removed, so a failing test leaves nothing behind.
pub struct CgroupGuard {
    path: PathBuf,
}

impl CgroupGuard {
    pub fn new(name: &str) -> Self {
        require_vm();
        let parent = Path::new(CGROUP_ROOT).join("rein-test");
        if !parent.exists() {
            std::fs::create_dir(&parent).unwrap();
            std::fs::write(
                parent.join("cgroup.subtree_control"),
                "+cpu +memory +io +pids +cpuset",
            )
            .unwrap();
        }
        let path = parent.join(name);
        if path.exists() {
            remove_cgroup(&path);
        }
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The cgroup id the kernel reports for sockets in this cgroup (the directory's inode).
    pub fn id(&self) -> u64 {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata(&self.path).unwrap().ino()
    }

    pub fn write(&self, file: &str, value: &str) {
        let p = self.path.join(file);
        std::fs::write(&p, value)
            .unwrap_or_else(|e| panic!("write {value:?} to {}: {e}", p.display()));
    }

    pub fn read(&self, file: &str) -> String {
        let p = self.path.join(file);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
    }

    /// A `key value` field of a flat-keyed file such as cpu.stat or memory.events.
    pub fn stat(&self, file: &str, key: &str) -> u64 {
        let text = self.read(file);
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {key} in {file}:\n{text}"))
    }

    /// Starts `cmd` with the child moved into this cgroup before it execs, so everything it
    /// does (CPU, memory, IO, sockets) is accounted here from the first instruction.
    pub fn spawn(&self, cmd: &mut Command) -> Child {
        let procs = self.path.join("cgroup.procs");
        // SAFETY: the closure runs in the forked child before exec and only calls
        // async-signal-safe operations (open/write/close through std::fs::write, getpid).
        unsafe {
            cmd.pre_exec(move || std::fs::write(&procs, std::process::id().to_string()));
        }
        cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"))
    }
}

fn remove_cgroup(path: &Path) {
    let _ = std::fs::write(path.join("cgroup.kill"), "1");
    // Killed tasks leave the cgroup asynchronously; rmdir fails with EBUSY until they have.
    for _ in 0..200 {
        match std::fs::remove_dir(path) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
        }
    }
    eprintln!("warning: could not remove {}", path.display());
}

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        remove_cgroup(&self.path);
    }
}

/// `MAJ:MIN` of a block device node.
pub fn device_number(dev: &str) -> String {
    use std::os::unix::fs::MetadataExt as _;
    let rdev = std::fs::metadata(dev)
        .unwrap_or_else(|e| panic!("stat {dev}: {e}"))
        .rdev();
    format!("{}:{}", libc::major(rdev), libc::minor(rdev))
}

/// A `rein agent` started for one test with its own managed root and socket; on drop it is
/// stopped and every container under its root is killed and removed.
pub struct AgentGuard {
    child: Option<std::process::Child>,
    pub root: PathBuf,
    pub socket: PathBuf,
    extra: Vec<String>,
    /// `REIN_FAILPOINT` for the next start (see the agent's `failpoint`).
    pub failpoint: Option<String>,
}

impl AgentGuard {
    pub fn start(name: &str) -> Self {
        Self::start_with(name, &[])
    }

    /// Like [`AgentGuard::start`] with extra `rein agent` arguments.
    pub fn start_with(name: &str, extra: &[&str]) -> Self {
        require_vm();
        let root = Path::new(CGROUP_ROOT).join(format!("{name}.slice"));
        let socket = PathBuf::from(format!("/run/{name}/rein.sock"));
        let extra = extra.iter().map(|s| (*s).to_owned()).collect();
        let mut g = Self {
            child: None,
            root,
            socket,
            extra,
            failpoint: None,
        };
        g.restart();
        g
    }

    /// Starts the agent (again) and waits until its socket answers.
    pub fn restart(&mut self) {
        self.stop(libc::SIGTERM);
        let mut cmd = Command::new("rein");
        match &self.failpoint {
            Some(f) => cmd.env("REIN_FAILPOINT", f),
            None => cmd.env_remove("REIN_FAILPOINT"),
        };
        let child = cmd
            .arg("--socket")
            .arg(&self.socket)
            .args(["agent", "--root"])
            .arg(&self.root)
            .arg("--bpf-dir")
            .arg(self.bpf_dir())
            .args(&self.extra)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::os::unix::net::UnixStream::connect(&self.socket).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "the agent did not come up"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Restarts the agent with other extra arguments.
    pub fn restart_with(&mut self, extra: &[&str]) {
        self.extra = extra.iter().map(|s| (*s).to_owned()).collect();
        self.restart();
    }

    /// Stops the agent with `signal` (SIGKILL simulates a crash) and reaps it.
    pub fn stop(&mut self, signal: i32) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on our own unreaped child.
            unsafe { libc::kill(i32::try_from(c.id()).unwrap(), signal) };
            c.wait().unwrap();
        }
    }

    /// This agent's own bpffs directory (pins of one agent must not meet another's).
    pub fn bpf_dir(&self) -> PathBuf {
        // bpffs refuses names with a dot: "rein-x.slice" pins under "rein-x".
        let name = self
            .root
            .file_stem()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Path::new("/sys/fs/bpf").join(name)
    }

    /// Runs `rein --socket <ours> ARGS` to completion.
    pub fn rein(&self, args: &[&str]) -> std::process::Output {
        Command::new("rein")
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap()
    }

    /// Like [`AgentGuard::rein`] but panics unless it succeeds; returns stdout.
    pub fn rein_ok(&self, args: &[&str]) -> String {
        let out = self.rein(args);
        assert!(
            out.status.success(),
            "rein {args:?} failed with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Starts `rein --socket <ours> ARGS` without waiting.
    pub fn rein_spawn(&self, args: &[&str]) -> Child {
        Command::new("rein")
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .spawn()
            .unwrap()
    }

    /// Like `rein_spawn`, with stdout captured (read it with `wait_with_output`).
    pub fn rein_spawn_output(&self, args: &[&str]) -> Child {
        Command::new("rein")
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// A file of a container's cgroup.
    pub fn cgroup_file(&self, container: &str, file: &str) -> String {
        let p = self.root.join(container).join(file);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
    }
}

impl Drop for AgentGuard {
    fn drop(&mut self) {
        self.stop(libc::SIGTERM);
        // Unlinking the pins detaches the programs and frees the maps.
        let _ = std::fs::remove_dir_all(self.bpf_dir());
        if let Ok(entries) = std::fs::read_dir(&self.root) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    remove_cgroup(&e.path());
                }
            }
        }
        remove_cgroup(&self.root);
    }
}

/// Usage in microseconds from a cgroup directory's cpu.stat.
pub fn cpu_usage_usec(dir: &Path) -> u64 {
    let text = std::fs::read_to_string(dir.join("cpu.stat")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("usage_usec ")?.trim().parse().ok())
        .unwrap()
}

/// A "remote" network namespace reached from the root namespace over a veth pair:
/// `rein-h0` (10.200.0.1/24, root side) <-> `rein-r0` (10.200.0.2/24, in the namespace).
/// Dropping it deletes the namespace, which takes the veth pair with it.
pub struct RemoteNetns {
    pub name: String,
}

pub const HOST_DEV: &str = "rein-h0";
pub const REMOTE_IP: &str = "10.200.0.2";

fn ip(args: &[&str]) {
    let out = Command::new("/usr/local/sbin/ip")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl RemoteNetns {
    pub fn new(name: &str) -> Self {
        Self::with_queues(name, 1)
    }

    /// Like [`RemoteNetns::new`] with `queues` transmit queues on the root end (a multiqueue
    /// device, as most physical NICs are).
    pub fn with_queues(name: &str, queues: u32) -> Self {
        require_vm();
        delete_netns(name);
        clear_dev(HOST_DEV);
        ip(&["netns", "add", name]);
        let queues = queues.to_string();
        ip(&[
            "link",
            "add",
            HOST_DEV,
            "numtxqueues",
            &queues,
            "type",
            "veth",
            "peer",
            "name",
            "rein-r0",
            "netns",
            name,
        ]);
        ip(&["addr", "add", "10.200.0.1/24", "dev", HOST_DEV]);
        ip(&["link", "set", HOST_DEV, "up"]);
        ip(&["-n", name, "addr", "add", "10.200.0.2/24", "dev", "rein-r0"]);
        ip(&["-n", name, "link", "set", "rein-r0", "up"]);
        ip(&["-n", name, "link", "set", "lo", "up"]);
        Self {
            name: name.to_owned(),
        }
    }

    /// Starts an iperf3 server in the namespace (`ip netns exec` execs it), stopped when
    /// the returned guard is dropped.
    pub fn iperf3_server(&self) -> Server {
        let child = Command::new("/usr/local/sbin/ip")
            .args(["netns", "exec", &self.name, "iperf3", "-s"])
            .stdout(std::process::Stdio::null())
            // The readiness probe below looks like a broken client to iperf3; hush it.
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Wait until it listens.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect((REMOTE_IP, 5201)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "iperf3 server did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Server(child)
    }
}

/// An iperf3 server in a remote namespace, killed when the test ends, also by a panic: a
/// server left running keeps the namespace, and its veth pair, alive for the next test.
pub struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl RemoteNetns {
    /// Routes `subnet` from the remote namespace back through the root namespace.
    pub fn route_back(&self, subnet: &str) {
        ip(&[
            "-n",
            &self.name,
            "route",
            "add",
            subnet,
            "via",
            "10.200.0.1",
        ]);
    }
}

/// A container's own network namespace, as runtimes build it: `eth0` (10.201.0.2/24) inside,
/// its veth peer `rein-c1` (10.201.0.1/24) in the root namespace, a default route through
/// the root namespace, which forwards. Dropping it deletes the namespace and the pair.
pub struct ContainerNetns {
    pub name: String,
}

impl ContainerNetns {
    pub const SUBNET: &str = "10.201.0.0/24";

    pub fn new(name: &str) -> Self {
        require_vm();
        delete_netns(name);
        clear_dev("rein-c1");
        ip(&["netns", "add", name]);
        ip(&[
            "link", "add", "rein-c1", "type", "veth", "peer", "name", "eth0", "netns", name,
        ]);
        ip(&["addr", "add", "10.201.0.1/24", "dev", "rein-c1"]);
        ip(&["link", "set", "rein-c1", "up"]);
        ip(&["-n", name, "addr", "add", "10.201.0.2/24", "dev", "eth0"]);
        ip(&["-n", name, "link", "set", "eth0", "up"]);
        ip(&["-n", name, "link", "set", "lo", "up"]);
        ip(&["-n", name, "route", "add", "default", "via", "10.201.0.1"]);
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").unwrap();
        Self {
            name: name.to_owned(),
        }
    }

    /// Whether `eth0` inside the namespace is paced by `fq` (at the root, or per queue under
    /// `mq` on a multiqueue veth).
    pub fn paced_by_fq(&self) -> bool {
        let out = Command::new("/usr/local/sbin/ip")
            .args([
                "netns",
                "exec",
                &self.name,
                "/usr/local/sbin/tc",
                "qdisc",
                "show",
                "dev",
                "eth0",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).contains("qdisc fq ")
    }
}

impl Drop for ContainerNetns {
    fn drop(&mut self) {
        delete_netns(&self.name);
        wait_gone("rein-c1");
        let _ = std::fs::write("/proc/sys/net/ipv4/ip_forward", "0");
    }
}

/// Waits (up to 10 s) until the root namespace's device `dev` is gone. Deleting a namespace
/// destroys its devices, and the veth peers in the root namespace, later, in a kernel work
/// queue: the next test would otherwise find the name taken, or share the CPU with the
/// teardown.
fn wait_gone(dev: &str) {
    let path = Path::new("/sys/class/net").join(dev);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while path.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Deletes network namespace `name` after killing every process still in it: a namespace
/// lives on while a process is inside it (an iperf3 server left by a test that panicked
/// before stopping it would keep the veth pair, and its name, taken for every later test).
fn delete_netns(name: &str) {
    if let Ok(out) = Command::new("/usr/local/sbin/ip")
        .args(["netns", "pids", name])
        .output()
    {
        for pid in String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
        {
            // SAFETY: kill(2) takes no pointers; these pids are the test's own servers.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    let _ = Command::new("/usr/local/sbin/ip")
        .args(["netns", "del", name])
        .output();
}

/// Makes sure root-namespace device `dev` is gone before a test creates it again: waits for
/// the teardown of a deleted namespace, then deletes the device itself if a namespace
/// nobody owns any more still holds its peer.
fn clear_dev(dev: &str) {
    wait_gone(dev);
    if Path::new("/sys/class/net").join(dev).exists() {
        let _ = Command::new("/usr/local/sbin/ip")
            .args(["link", "del", dev])
            .output();
        wait_gone(dev);
    }
}

impl Drop for RemoteNetns {
    fn drop(&mut self) {
        delete_netns(&self.name);
        wait_gone(HOST_DEV);
    }
}

/// GET over plain HTTP/1.1 (loopback only), returning the body of a 200 answer.
pub fn http_get(addr: &str, path: &str) -> String {
    let (head, body) = http_request(addr, path, "");
    assert!(head.starts_with("HTTP/1."), "{head}");
    assert!(head.split_whitespace().nth(1) == Some("200"), "{head}");
    body
}

/// One HTTP/1.0 GET (so no chunked answer) with `headers` (`"name: value\r\n"` lines);
/// returns the response head and body.
pub fn http_request(addr: &str, path: &str, headers: &str) -> (String, String) {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nhost: {addr}\r\n{headers}\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    (head.to_owned(), body.to_owned())
}

/// A real Prometheus server (Debian's) scraping `target` every second into a scratch
/// directory, on 127.0.0.1:9090; killed (and its directory removed) when dropped.
pub struct Prometheus {
    child: Child,
    dir: PathBuf,
}

impl Prometheus {
    pub const ADDR: &str = "127.0.0.1:9090";

    pub fn start(target: &str) -> Self {
        require_vm();
        let dir = PathBuf::from("/tmp/prometheus-test");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 scrape_configs:\n  - job_name: rein\n    static_configs:\n      \
                 - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={}", Self::ADDR))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join("log")).unwrap())
            .spawn()
            .unwrap();
        let p = Self { child, dir };
        // Ready is not enough: Prometheus hands new targets to its scrape loop at most every
        // 5 s (its discovery manager's update throttle), so the first scrape comes up to 5 s
        // after /-/ready. A series that starts inside a rate() window is extrapolated by
        // only half an interval at its start, which read a steady 20 Mbit/s as 14-16.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let ready = std::net::TcpStream::connect(Self::ADDR).is_ok()
                && http_request(Self::ADDR, "/-/ready", "").0.contains(" 200")
                && p.query(r#"up{job="rein"}"#)
                    .first()
                    .is_some_and(|(_, v)| *v == 1.0);
            if ready {
                return p;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "prometheus did not become ready and scrape {target}: {}",
                std::fs::read_to_string(p.dir.join("log")).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }

    /// An instant PromQL query: each result series' labels and value.
    pub fn query(&self, promql: &str) -> Vec<(serde_json::Value, f64)> {
        self.result(promql, None)
            .iter()
            .map(|r| (r["metric"].clone(), sample_value(&r["value"])))
            .collect()
    }

    /// The `data.result` array of an instant query, evaluated at `time` (Unix seconds) when
    /// given, else now.
    fn result(&self, promql: &str, time: Option<f64>) -> Vec<serde_json::Value> {
        let at = time.map(|t| format!("&time={t:.3}")).unwrap_or_default();
        let body = http_get(
            Self::ADDR,
            &format!("/api/v1/query?query={}{at}", url_encode(promql)),
        );
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], "success", "{promql}: {body}");
        v["data"]["result"].as_array().unwrap().clone()
    }

    /// The single value of `promql` evaluated at `time` (Unix seconds), if there is one.
    pub fn value_at(&self, promql: &str, time: f64) -> Option<f64> {
        match self.result(promql, Some(time)).as_slice() {
            [r] => Some(sample_value(&r["value"])),
            _ => None,
        }
    }

    /// The raw samples `(Unix seconds, value)` of the single series a range selector such
    /// as `x{name="a"}[5s]` selects when evaluated at `time`: what Prometheus scraped, with
    /// its own timestamps.
    pub fn samples_at(&self, selector: &str, time: f64) -> Vec<(f64, f64)> {
        match self.result(selector, Some(time)).as_slice() {
            [r] => r["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| (p[0].as_f64().unwrap(), sample_value(p)))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The single value of `promql`, waiting (up to `timeout`) until there is exactly one.
    pub fn value(&self, promql: &str, timeout: std::time::Duration) -> f64 {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let r = self.query(promql);
            if let [(_, v)] = r.as_slice() {
                return *v;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{promql}: {r:?} after {timeout:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
    }
}

/// The value of a `[time, "value"]` pair of Prometheus's API.
fn sample_value(pair: &serde_json::Value) -> f64 {
    pair[1].as_str().unwrap().parse().unwrap()
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Encodes `s` for a query string (application/x-www-form-urlencoded, as Prometheus
/// parses it).
pub fn url_encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Panics unless `promtool check metrics` finds no problem in `text`.
pub fn promtool_accepts(text: &str) {
    use std::io::Write as _;
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics: {out:?}\n{text}"
    );
}

/// Where the OCI test containers' cgroups go (`linux.cgroupsPath` = `/rein-oci/<id>`).
pub const OCI_CGROUPS: &str = "/sys/fs/cgroup/rein-oci";

/// An OCI bundle for runc or crun under /tmp: its rootfs is the VM's own /bin, /sbin, /usr,
/// /lib and /lib64 bound read-only (busybox, iperf3 and their libraries), with fresh /proc,
/// /dev and /tmp; it shares the host's network namespace (so the agent's egress device paces
/// it) and has its own pid, mount, ipc and uts namespaces. On drop the container is deleted
/// (forcibly) and the bundle and cgroup removed.
pub struct OciBundle {
    pub dir: PathBuf,
    pub id: String,
    /// `runc` or `crun`.
    pub runtime: String,
}

impl OciBundle {
    pub fn new(runtime: &str, id: &str, args: &[&str]) -> Self {
        require_vm();
        let dir = PathBuf::from(format!("/tmp/oci-{id}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("rootfs")).unwrap();
        let mut mounts = vec![
            serde_json::json!({"destination": "/proc", "type": "proc", "source": "proc"}),
            serde_json::json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
            serde_json::json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                "options": ["nosuid", "nodev", "mode=1777"]}),
        ];
        for d in ["/bin", "/sbin", "/usr", "/lib", "/lib64"] {
            if Path::new(d).exists() {
                mounts.push(
                    serde_json::json!({"destination": d, "type": "bind", "source": d,
                    "options": ["rbind", "ro"]}),
                );
            }
        }
        let config = serde_json::json!({
            "ociVersion": "1.0.2",
            "process": {
                "terminal": false,
                "user": {"uid": 0, "gid": 0},
                "args": args,
                "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                "cwd": "/",
                "noNewPrivileges": true
            },
            "root": {"path": "rootfs", "readonly": false},
            "hostname": id,
            "mounts": mounts,
            "annotations": {},
            "linux": {
                "cgroupsPath": format!("/rein-oci/{id}"),
                "namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "ipc"}, {"type": "uts"}],
                "resources": {}
            }
        });
        let b = Self {
            dir,
            id: id.to_owned(),
            runtime: runtime.to_owned(),
        };
        b.write(&config);
        b
    }

    fn write(&self, config: &serde_json::Value) {
        std::fs::write(
            self.dir.join("config.json"),
            serde_json::to_vec_pretty(config).unwrap(),
        )
        .unwrap();
    }

    /// The bundle's config.json.
    pub fn config(&self) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.dir.join("config.json")).unwrap()).unwrap()
    }

    /// Edits config.json.
    pub fn edit(&self, f: impl FnOnce(&mut serde_json::Value)) {
        let mut c = self.config();
        f(&mut c);
        self.write(&c);
    }

    pub fn annotate(&self, pairs: &[(&str, &str)]) {
        self.edit(|c| {
            for (k, v) in pairs {
                c["annotations"][*k] = serde_json::Value::from(*v);
            }
        });
    }

    /// Adds `rein --socket SOCKET hook createRuntime|poststop EXTRA..` as runc's config.json
    /// snippet in the README does.
    pub fn add_rein_hooks(&self, socket: &Path, extra: &[&str]) {
        let hook = |stage: &str| {
            let mut args = vec![
                "rein".to_owned(),
                "--socket".to_owned(),
                socket.display().to_string(),
                "hook".to_owned(),
                stage.to_owned(),
            ];
            args.extend(extra.iter().map(|s| (*s).to_owned()));
            serde_json::json!([{"path": "/usr/local/bin/rein", "args": args, "timeout": 10}])
        };
        self.edit(|c| {
            c["hooks"] = serde_json::json!({
                "createRuntime": hook("createRuntime"),
                "poststop": hook("poststop"),
            });
        });
    }

    /// The container's cgroup directory.
    pub fn cgroup(&self) -> PathBuf {
        Path::new(OCI_CGROUPS).join(&self.id)
    }

    /// The runtime's state directory for these tests.
    pub fn state_root(&self) -> String {
        format!("/run/rein-oci-{}", self.runtime)
    }

    /// A runtime command with this test's `--root`.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.runtime);
        c.arg("--root").arg(self.state_root()).args(args);
        c
    }

    /// `RUNTIME run --bundle DIR ID`, started (foreground: it returns when the process exits
    /// and the container is deleted), with stdout and stderr captured.
    pub fn spawn_run(&self) -> Child {
        self.command(&["run", "--bundle"])
            .arg(&self.dir)
            .arg(&self.id)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }
}

impl Drop for OciBundle {
    fn drop(&mut self) {
        let _ = self
            .command(&["delete", "--force", &self.id])
            .stderr(std::process::Stdio::null())
            .status();
        remove_cgroup(&self.cgroup());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The keys of a pinned per-cgroup hash map with values of type `V` (the agent's maps under
/// its bpffs directory, e.g. `REIN_SHAPER` with `ShaperConfig`).
pub fn pinned_keys<V: aya::Pod>(pin: &Path) -> Vec<u64> {
    let data = aya::maps::MapData::from_pin(pin).unwrap();
    let map: aya::maps::HashMap<_, u64, V> =
        aya::maps::HashMap::try_from(aya::maps::Map::HashMap(data)).unwrap();
    map.keys().map(Result::unwrap).collect()
}

/// The keys of the agent's pinned shaper map: the cgroups that have egress limits.
pub fn shaper_keys(bpf_dir: &Path) -> Vec<u64> {
    pinned_keys::<controller_common::ShaperConfig>(&bpf_dir.join("REIN_SHAPER"))
}

/// The names of the extended attributes on `path` (`listxattr(2)`).
pub fn xattr_names(path: &Path) -> Vec<String> {
    use std::os::unix::ffi::OsStrExt as _;
    let p = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let mut buf = vec![0u8; 64 << 10];
    // SAFETY: p is NUL-terminated; buf is writable for buf.len() bytes.
    let n = unsafe { libc::listxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    let n = usize::try_from(n).unwrap_or_else(|_| panic!("listxattr {}", path.display()));
    buf[..n]
        .split(|b| *b == 0)
        .filter(|k| !k.is_empty())
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect()
}
