//! `cargo xtask run`: build rein and start the agent, the project's main job.
//!
//! On a host whose cgroup v2 tree offers the cpu, memory and io controllers, the agent runs
//! right here. On a hybrid host like the build machines (cgroup v1 owns those controllers and
//! belongs to the machine's supervisor), nothing on the host is touched: the agent starts in
//! the test VM with a small demo workload under limits, and its metrics port is forwarded to
//! 127.0.0.1 on the host.

use std::{os::unix::process::CommandExt as _, path::Path};

use anyhow::{Context as _, bail};

use crate::{
    cmd::{cargo, run_checked},
    paths::workspace_root,
    vm,
};

const METRICS_PORT: u16 = 9798;

/// True when `/sys/fs/cgroup` is a cgroup2 mount offering cpu, memory and io.
fn host_has_cgroup2_controllers() -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let unified_at_root = mounts.lines().any(|l| {
        l.split_once(" - ").is_some_and(|(left, right)| {
            left.split(' ').nth(4) == Some("/sys/fs/cgroup") && right.starts_with("cgroup2 ")
        })
    });
    let controllers =
        std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers").unwrap_or_default();
    unified_at_root
        && ["cpu", "memory", "io"]
            .iter()
            .all(|c| controllers.split_whitespace().any(|x| x == *c))
}

pub fn run(minutes: u64, in_vm: bool) -> anyhow::Result<i32> {
    if !in_vm && host_has_cgroup2_controllers() {
        eprintln!("== this host has cgroup v2 with cpu, memory and io: running the agent here");
        run_checked(cargo().args(["build", "--release", "-p", "controller"]))?;
        let rein = workspace_root().join("target/release/rein");
        eprintln!(
            "== rein agent: API /run/rein/rein.sock, metrics http://127.0.0.1:{METRICS_PORT}/metrics"
        );
        let err = std::process::Command::new(rein).arg("agent").exec();
        bail!("cannot start the agent: {err}");
    }
    eprintln!(
        "== this host's cgroup v2 tree lacks the cpu/memory/io controllers (a hybrid host), and \
         its cgroup v1 hierarchies are not rein's to touch: starting the agent in the test VM \
         instead, with a demo workload"
    );
    let script = workspace_root().join("target/vm/demo.sh");
    std::fs::create_dir_all(script.parent().unwrap_or(Path::new(".")))?;
    std::fs::write(&script, demo_script(minutes)).context("writing the demo script")?;
    let args = vm::VmArgs {
        kernel: vm::KernelChoice(vec![vm::kernel::Series::V6_12]),
        timeout: minutes * 60 + 300,
        memory: 1536,
        release: false,
        forward_port: Some(METRICS_PORT),
    };
    vm::run_script(&args, &script)
}

/// The demo in the VM: a peer network namespace reached over a veth pair (the "network"
/// rein shapes towards, paced by fq), four containers that show what rein is for, and a
/// tour printed from inside, then refreshed every minute.
fn demo_script(minutes: u64) -> String {
    format!(
        r#"set -e
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
# The peer: 10.200.0.2 in its own namespace, behind rein-h0 (10.200.0.1), with an iperf3
# server. rein paces egress on rein-h0 with fq. iproute2's ip by path: busybox's applet
# knows no namespaces.
IP=/usr/local/sbin/ip
$IP netns add peer
$IP link add rein-h0 type veth peer name rein-r0 netns peer
$IP addr add 10.200.0.1/24 dev rein-h0 && $IP link set rein-h0 up
$IP -n peer addr add 10.200.0.2/24 dev rein-r0 && $IP -n peer link set rein-r0 up
$IP -n peer link set lo up
$IP netns exec peer iperf3 -s -D
{start}rein run --keep --name upload --egress 20mbit -- busybox sh -c 'while :; do iperf3 -c 10.200.0.2 -t 60 >/dev/null 2>&1; done' &
rein run --keep --name web --cpus 0.5 --memory 128M --pids 64 -- busybox sh -c 'while :; do :; done' &
rein run --keep --name batch --priority low --cpus 1 -- busybox sh -c 'while :; do :; done' &
rein run --keep --name cache --memory 64M --memory-high 48M -- busybox sh -c 'while :; do rein-test-helper alloc 56 >/dev/null; done' &
sleep 4
# From here on a failing command must not end the demo.
set +e
tour() {{
echo
echo "================ rein demo: four containers on a leash ================"
echo "== rein ls: each container and its limits"
rein ls
echo
echo "== rein top --once: CPU (web held to half a CPU), memory, egress (upload at 20 Mbit/s)"
rein top --once
echo
echo "== rein stats upload: paced by fq on rein-h0, at its limit"
rein stats upload
echo
echo "== rein why web --window 3s: what holds it back, and the flag that would help"
rein why web --window 3s
echo
echo "== On this host, while the demo runs:"
echo "   curl -s http://127.0.0.1:{METRICS_PORT}/metrics | grep 'name=\"upload\"' | grep network_transmit"
echo "   curl -s http://127.0.0.1:{METRICS_PORT}/healthz"
echo "   Grafana: point a Prometheus at 127.0.0.1:{METRICS_PORT} (deploy/kubernetes/prometheus.yml,"
echo "   job rein) and import dashboards/*.json (dashboards/README.md)."
echo "== The demo stops after {minutes} min, or press Ctrl-C. Inside the VM it ran:"
echo "   rein ls; rein top --once; rein stats upload; rein why web --window 3s"
echo "======================================================================"
}}
tour
end=$(( $(date +%s) + {secs} ))
while [ "$(date +%s)" -lt "$end" ]; do
    sleep 60
    echo "== rein top --once ($(( (end - $(date +%s)) / 60 )) minutes left)"
    rein top --once
done
for c in upload web batch cache; do rein rm --force $c; done
"#,
        secs = minutes * 60,
        start = crate::guest::start_agent(&format!(
            "--metrics-addr 0.0.0.0:{METRICS_PORT} --egress-dev rein-h0"
        )),
    )
}

/// The line that closes the demo's printed tour.
const TOUR_END: &str = "======================================================================";

/// Checks the README's first command as a newcomer meets it: `cargo xtask run --vm` boots the
/// demo, its tour shows the four containers, `upload` paced by fq at its limit and `web` held
/// by its CPU quota, and from this host the forwarded metrics and `/healthz` answer, with
/// `upload` sending near its 20 Mbit/s. Then xtask gets a SIGTERM, as Ctrl-C would end it.
pub fn self_test() -> anyhow::Result<crate::tally::Tally> {
    let mut tally = crate::tally::Tally::default();
    match demo_works() {
        Ok(rate) => {
            println!(
                "test demo::cargo_xtask_run_shows_the_product_as_its_tour_says ... ok (upload at \
                 {:.1} of its 20 Mbit/s)",
                rate / 1e6
            );
            tally.passed += 1;
        }
        Err(why) => {
            println!(
                "test demo::cargo_xtask_run_shows_the_product_as_its_tour_says ... FAILED: {why:#}"
            );
            tally.failed += 1;
        }
    }
    Ok(tally)
}

/// The bytes `upload` has sent, from the forwarded metrics.
fn upload_sent(metrics: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| {
            l.starts_with("container_network_transmit_bytes_total{")
                && l.contains("name=\"upload\"")
        })?
        .rsplit(' ')
        .next()?
        .parse()
        .ok()
}

/// One GET to the forwarded metrics port; the body of a 200 answer.
fn get(path: &str) -> anyhow::Result<String> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", METRICS_PORT))?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(20)))?;
    write!(s, "GET {path} HTTP/1.0\r\nhost: 127.0.0.1\r\n\r\n")?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)?;
    let (head, body) = answer.split_once("\r\n\r\n").context("no HTTP answer")?;
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        bail!("GET {path}: {head}");
    }
    Ok(body.to_owned())
}

/// Runs the demo until its tour is printed, checks it, and returns upload's rate (bit/s).
fn demo_works() -> anyhow::Result<f64> {
    use std::io::BufRead as _;
    // Its progress and errors (build, boot) go to a file the failure names.
    let errors = workspace_root().join("target/vm/demo-check.stderr");
    std::fs::create_dir_all(errors.parent().unwrap_or(Path::new(".")))?;
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args(["run", "--vm", "--minutes", "2"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&errors)?)
        .spawn()
        .context("starting xtask run")?;
    let stdout = child.stdout.take().context("xtask run's stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let checked = (|| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
        let mut tour = Vec::new();
        let mut started = false;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = rx.recv_timeout(left).with_context(|| {
                format!(
                    "the demo printed no tour within 300 s; its errors: {}",
                    errors.display()
                )
            })?;
            if line.contains("rein demo: four containers on a leash") {
                started = true;
            } else if started && line.contains(TOUR_END) {
                break;
            } else if started {
                tour.push(line);
            }
        }
        // Each command's output: the lines after its `== rein ...` heading, up to the next.
        let section = |heading: &str| -> String {
            tour.iter()
                .skip_while(|l| !l.contains(heading))
                .skip(1)
                .take_while(|l| !l.contains("== "))
                .cloned()
                .collect::<Vec<_>>()
                .join("\n")
        };
        let tour_text = tour.join("\n");
        for (heading, needle) in [
            ("== rein ls", "upload"),
            ("== rein ls", "web"),
            ("== rein ls", "batch"),
            ("== rein ls", "cache"),
            ("== rein stats upload", "edt-fq on rein-h0"),
            ("== rein why web", "cpu_quota"),
        ] {
            if !section(heading).contains(needle) {
                bail!("{needle:?} is not in the output of {heading:?} in the tour:\n{tour_text}");
            }
        }
        if get("/healthz")?.trim() != "ok" {
            bail!("/healthz does not answer ok on the forwarded port");
        }
        let (a, t0) = (upload_sent(&get("/metrics")?), std::time::Instant::now());
        std::thread::sleep(std::time::Duration::from_secs(10));
        let b = upload_sent(&get("/metrics")?);
        let (Some(a), Some(b)) = (a, b) else {
            bail!("no container_network_transmit_bytes_total for upload in the forwarded metrics");
        };
        let rate = (b - a) * 8.0 / t0.elapsed().as_secs_f64();
        // Shaping accuracy is the VM suite's to measure; here: shaped, and near its limit.
        if !(0.6e6 * 20.0..=1.1e6 * 20.0).contains(&rate) {
            bail!(
                "upload sends {:.1} Mbit/s, not near its 20 Mbit/s",
                rate / 1e6
            );
        }
        Ok(rate)
    })();
    // As Ctrl-C or a service manager ends it: the guest stops with xtask.
    // SAFETY: kill(2) on our own child, not yet reaped.
    unsafe { libc::kill(libc::pid_t::try_from(child.id())?, libc::SIGTERM) };
    child.wait()?;
    checked
}
