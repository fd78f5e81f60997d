//! Network namespaces and veth pairs for traffic tests, removed with their processes.

use std::{
    path::Path,
    process::{Child, Command},
};

use crate::*;

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
        self.iperf3_server_on(5201)
    }

    /// Like [`RemoteNetns::iperf3_server`] on another port (one server per concurrent
    /// client: iperf3 serves one test at a time).
    pub fn iperf3_server_on(&self, port: u16) -> Server {
        let child = Command::new("/usr/local/sbin/ip")
            .args(["netns", "exec", &self.name, "iperf3", "-s", "-p"])
            .arg(port.to_string())
            .stdout(std::process::Stdio::null())
            // The readiness probe below looks like a broken client to iperf3; hush it.
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Wait until it listens.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::net::TcpStream::connect((REMOTE_IP, port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "iperf3 server did not start"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Server(child)
    }
}

/// The round trips in ping's output (`time=0.123 ms`), in ms, sorted.
pub fn ping_rtts(text: &str) -> Vec<f64> {
    let mut rtts: Vec<f64> = text
        .lines()
        .filter_map(|l| {
            l.split("time=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect();
    rtts.sort_by(f64::total_cmp);
    rtts
}

/// The `p`th percentile of `sorted` (nearest rank); `None` when it is empty.
pub fn percentile(sorted: &[f64], p: usize) -> Option<f64> {
    sorted
        .get((sorted.len() * p / 100).min(sorted.len().saturating_sub(1)))
        .copied()
}

/// The received rate (bits/s) of each stream of an iperf3 JSON report.
pub fn stream_rates(report: &serde_json::Value) -> Vec<f64> {
    report["end"]["streams"]
        .as_array()
        .map(|s| {
            s.iter()
                .filter_map(|s| s["receiver"]["bits_per_second"].as_f64())
                .collect()
        })
        .unwrap_or_default()
}

/// Jain's fairness index of `rates`: 1 when all are equal, 1/n when one takes all; `None`
/// when nothing moved.
pub fn jain(rates: &[f64]) -> Option<f64> {
    let sum: f64 = rates.iter().sum();
    let squares: f64 = rates.iter().map(|x| x * x).sum();
    (squares > 0.0).then(|| sum * sum / (rates.len() as f64 * squares))
}

/// The byte count in `rein-test-helper udp-sink`'s output (`received BYTES`).
pub fn received_bytes(stdout: &[u8]) -> Option<f64> {
    String::from_utf8_lossy(stdout)
        .trim()
        .strip_prefix("received ")?
        .parse()
        .ok()
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
    /// Runs `CMD ARGS` inside the namespace (`ip netns exec`), started and not waited for,
    /// with stdout captured.
    pub fn spawn(&self, cmd: &[&str]) -> Child {
        Command::new("/usr/local/sbin/ip")
            .args(["netns", "exec", &self.name])
            .args(cmd)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Like [`RemoteNetns::spawn`], stopped when the returned guard is dropped.
    pub fn serve(&self, cmd: &[&str]) -> Server {
        Server(self.spawn(cmd))
    }

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

    /// Waits up to `within` until `eth0` is paced by `fq` (the agent looks for new
    /// namespaces every second); returns whether it is.
    pub fn wait_paced(&self, within: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + within;
        while !self.paced_by_fq() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        self.paced_by_fq()
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
