//! `cargo xtask test`: every test the project has, in the order that fails fastest, ending
//! with one summary line `N passed, N failed` over all suites.

use anyhow::bail;

use crate::{
    cmd::{cargo, run_checked},
    tally::run_counting,
};

pub fn run(lint: bool, vm: bool) -> anyhow::Result<()> {
    if lint {
        eprintln!("== lint: cargo fmt --check, cargo clippy -D warnings");
        run_checked(cargo().args(["fmt", "--all", "--check"]))?;
        run_checked(cargo().args(["clippy", "--all-targets", "--", "-D", "warnings"]))?;
        // The VM tests are not a default member (they only run in the guest): lint them for
        // the guest target explicitly.
        run_checked(cargo().args([
            "clippy",
            "--target",
            "x86_64-unknown-linux-musl",
            "-p",
            "integration-tests",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))?;
    }
    // Grafana loads what its published dashboard types accept.
    eprintln!("== dashboards: type-check against @grafana/schema (tsc)");
    crate::dashboards::check_schema(&crate::setup::node_dir())?;
    // Kubernetes and Prometheus load what their published schemas accept.
    eprintln!("== deploy/kubernetes: manifests against the API schemas, promtool check config");
    crate::manifests::check(&crate::setup::node_dir(), &crate::setup::promtool_path())?;
    // Host tests: unit tests, property tests, and the tests that load rein's programs into
    // this kernel (they need root; they attach nothing and change no limit).
    eprintln!("== host tests: cargo test");
    let (host, ok) = run_counting(cargo().args([
        "test",
        "--workspace",
        "--exclude",
        "controller-ebpf",
        "--exclude",
        "integration-tests",
    ]))?;
    println!("host tests: {} passed, {} failed", host.passed, host.failed);
    if !ok || host.failed > 0 {
        println!("{} passed, {} failed", host.passed, host.failed.max(1));
        bail!("host tests failed");
    }
    let mut total = host;
    if vm {
        eprintln!("== VM suite on every test kernel");
        let args = crate::vm::VmArgs {
            kernel: crate::vm::KernelChoice(crate::vm::kernel::Series::ALL.to_vec()),
            timeout: 900,
            memory: 1536,
            release: false,
            forward_port: None,
        };
        let guest = crate::vm::test(&args, &[])?;
        total.passed += guest.passed;
        total.failed += guest.failed;
        eprintln!(
            "== VM harness self-test: a panicking and a hanging guest must fail the run; a \
             SIGTERM to xtask alone must stop its guest"
        );
        let harness = crate::vm::self_test(crate::vm::kernel::Series::V6_12)?;
        total.passed += harness.passed;
        total.failed += harness.failed;
        eprintln!("== the demo: `cargo xtask run --vm`, its tour and its forwarded metrics");
        let demo = crate::run::self_test()?;
        total.passed += demo.passed;
        total.failed += demo.failed;
        eprintln!("== fleet: two VMs as two nodes, one Prometheus over both");
        let fleet = crate::fleet::run(&args)?;
        total.passed += fleet.passed;
        total.failed += fleet.failed;
    }
    println!("{} passed, {} failed", total.passed, total.failed);
    if total.failed > 0 {
        bail!("tests failed");
    }
    Ok(())
}
