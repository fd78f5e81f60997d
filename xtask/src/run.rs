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

pub fn run(minutes: u64) -> anyhow::Result<i32> {
    if host_has_cgroup2_controllers() {
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

fn demo_script(minutes: u64) -> String {
    format!(
        r#"set -e
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
{start}rein run --keep --name demo-web --cpus 0.5 --memory 128M --pids 64 -- busybox sh -c 'while :; do :; done' &
rein run --keep --name demo-batch --priority low --cpus 1 --memory 256M -- busybox sh -c 'while :; do :; done' &
sleep 2
echo "== rein ls (inside the VM)"
rein ls
echo "== rein stats demo-web"
rein stats demo-web
echo
echo "== rein agent is running in the test VM."
echo "== metrics on the host: http://127.0.0.1:{METRICS_PORT}/metrics  (curl -s http://127.0.0.1:{METRICS_PORT}/metrics | grep container_)"
echo "== the demo stops after {minutes} minutes, or press Ctrl-C."
sleep {secs}
rein rm --force demo-web
rein rm --force demo-batch
"#,
        secs = minutes * 60,
        start = crate::guest::start_agent(&format!("--metrics-addr 0.0.0.0:{METRICS_PORT}")),
    )
}
