//! Helpers for rein's VM tests, one module per subject: `cgroup` (guards that undo what a
//! test did), `agent` (an agent per test and the CLI against it), `net` (namespaces and veth
//! pairs), `prometheus` (HTTP, Prometheus, promtool), `oci` (bundles for runc and crun),
//! `engines` (Podman, dockerd and containerd from the engines' disk) and `systemd` (a real
//! systemd as PID 1 of a container).
//! Everything here assumes it runs as root inside the test VM, where `/init` mounted cgroup2
//! at `/sys/fs/cgroup` with cpu, memory, io, pids and cpuset enabled.

#![allow(
    clippy::unwrap_used,
    reason = "test support: a panic is how a VM test reports what it saw"
)]

mod agent;
mod cgroup;
mod engines;
mod net;
mod oci;
mod prometheus;
mod systemd;

pub use agent::*;
pub use cgroup::*;
pub use engines::*;
pub use net::*;
pub use oci::*;
pub use prometheus::*;
pub use systemd::*;

/// Where the test VM mounts cgroup2.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";
/// Set by the VM's /init; tests refuse to run without it so that they never touch a host.
pub const VM_MARKER_ENV: &str = "REIN_VM";
/// The helper binary of this crate (see `src/bin/rein-test-helper.rs`).
pub const HELPER: &str = "/usr/local/bin/rein-test-helper";

/// The line [`measures_throughput`] prints, followed by the test's name; `cargo xtask
/// vm-test` looks for it.
pub const THROUGHPUT_MARK: &str = "REIN-THROUGHPUT-TEST ";

/// Marks the calling test as one whose verdict is a throughput measured in the emulated
/// guest. Two host cores run the whole guest, and a busy host can starve it for seconds: a
/// failed test so marked runs once more in a fresh guest, and counts as passed only if that
/// run passes (docs/testing.md, "The test VM"). No other test is retried.
pub fn measures_throughput() {
    let name = std::thread::current().name().unwrap_or("?").to_owned();
    println!("{THROUGHPUT_MARK}{name}");
}

/// Panics unless running in the test VM: these tests write cgroup limits and attach programs.
pub fn require_vm() {
    assert!(
        std::env::var_os(VM_MARKER_ENV).is_some(),
        "VM tests change kernel state: run them with `cargo xtask vm-test`"
    );
}
