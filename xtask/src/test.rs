//! `cargo xtask test`: every test the project has, in the order that fails fastest, ending
//! with one summary line `N passed, N failed` over all suites.

use std::{
    io::{BufRead as _, BufReader},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

use crate::setup::{cargo, run_checked};

/// Pass/fail counts summed over test binaries.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    pub passed: u64,
    pub failed: u64,
}

impl Tally {
    /// Adds the counts of a libtest summary line
    /// (`test result: ok. 14 passed; 0 failed; 0 ignored; ...`); other lines are ignored.
    pub fn add_line(&mut self, line: &str) {
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(';') {
            let words: Vec<&str> = part.split_whitespace().collect();
            if let [.., n, what] = words.as_slice()
                && let Ok(n) = n.parse::<u64>()
            {
                match *what {
                    "passed" => self.passed += n,
                    "failed" => self.failed += n,
                    _ => {}
                }
            }
        }
    }

    /// The summed summary lines among `lines` (a guest's serial output).
    pub fn of_lines(lines: &[String]) -> Self {
        let mut t = Self::default();
        for l in lines {
            t.add_line(l);
        }
        t
    }
}

/// Runs a test command, echoing its output, and returns the tally of its summary lines.
pub fn run_counting(cmd: &mut Command) -> anyhow::Result<(Tally, bool)> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    let mut tally = Tally::default();
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines() {
            let line = line?;
            println!("{line}");
            tally.add_line(&line);
        }
    }
    let ok = child.wait()?.success();
    Ok((tally, ok))
}

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
        let guest = crate::vm::test(&args, None)?;
        total.passed += guest.passed;
        total.failed += guest.failed;
        eprintln!("== VM harness self-test: a panicking and a hanging guest must fail the run");
        let harness = crate::vm::self_test(crate::vm::kernel::Series::V6_12)?;
        total.passed += harness.passed;
        total.failed += harness.failed;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tally_reads_libtest_summaries() {
        let mut t = Tally::default();
        t.add_line("test result: ok. 14 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.17s");
        t.add_line("test result: FAILED. 3 passed; 2 failed; 0 ignored");
        t.add_line("running 3 tests");
        assert_eq!(
            t,
            Tally {
                passed: 17,
                failed: 2
            }
        );
    }
}
