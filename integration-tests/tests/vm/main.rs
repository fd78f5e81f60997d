//! rein's VM suite: one module per feature. Run with `cargo xtask vm-test`; each test makes
//! its own cgroups through `CgroupGuard`, which cleans up even when the test fails.
#![allow(clippy::unwrap_used, reason = "tests: a panic is the failure report")]

mod agent;
mod cgroup_limits;
mod check;
mod churn;
mod dashboards;
mod ebpf;
mod endpoints;
mod engines;
mod faults;
mod flows;
mod hierarchy;
mod metrics;
mod mixin;
mod package;
mod runtime;
mod shaping;
mod systemd;
mod top;
mod upgrade;
mod why;
