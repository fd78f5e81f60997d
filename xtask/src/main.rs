//! `cargo xtask`: rein's development tasks. Each subcommand lives in its own module.

mod bench;
mod cmd;
mod dashboards;
mod fleet;
mod fuzz;
mod guest;
mod manifests;
mod package;
mod paths;
mod run;
mod screenshot;
mod setup;
mod tally;
mod test;
mod toolchain;
mod vm;

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "rein's development tasks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what building and testing need on a Debian 12 machine: the pinned toolchains,
    /// the musl target, bpf-linker built against the eBPF nightly's LLVM, and the Debian
    /// packages the tests use. Idempotent: a second run only checks.
    Setup,
    /// Build and start the rein agent: here on a cgroup v2 host; on a hybrid host (like the
    /// build machines) in the test VM with a demo workload, its metrics port forwarded to
    /// 127.0.0.1:9798.
    Run {
        /// How long the VM demo runs before it stops by itself.
        #[arg(long, default_value_t = 60)]
        minutes: u64,
        /// Start the VM demo even on a cgroup v2 host (what `cargo xtask test` checks).
        #[arg(long)]
        vm: bool,
        /// Check the VM demo instead of running it for the user: its tour, its forwarded
        /// metrics and upload's rate; then stop it (part of `cargo xtask test`).
        #[arg(long)]
        check: bool,
    },
    /// Run every test: formatting and clippy, the host tests, then the VM suite on every
    /// test kernel. Ends with one `N passed, N failed` line.
    Test {
        /// Skip `cargo fmt --check` and `cargo clippy` (for a quick local loop).
        #[arg(long)]
        no_lint: bool,
        /// Skip the VM suite.
        #[arg(long)]
        no_vm: bool,
    },
    /// Run the VM suite: build rein and the tests for musl, boot each kernel in qemu (TCG)
    /// and run the tests inside as root.
    VmTest {
        #[command(flatten)]
        vm: vm::VmArgs,
        /// Run only tests whose name contains this (libtest filter); repeat for several.
        #[arg(long)]
        filter: Vec<String>,
    },
    /// Boot two test VMs (kernels 6.12 and 6.1) as two nodes, each running the agent and
    /// containers with different limits, and check per node with one Prometheus on this host
    /// what PromQL and every dashboard query answer. Part of `cargo xtask test`.
    VmFleet {
        #[command(flatten)]
        vm: vm::VmArgs,
    },
    /// Build the Debian package (target/debian/rein_VERSION_amd64.deb) from the static
    /// release binary: rein, rein-runtime, the systemd unit, the hooks file (not enabled),
    /// the default config, man pages and completions. Prints the .deb's path.
    Package {
        /// Write the .deb into this directory instead.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Write dashboards/*.json from the panel definitions in xtask/src/dashboards.rs, and
    /// type-check them against Grafana's published dashboard types.
    Dashboards,
    /// Run every cargo-fuzz target (limits parser, API bodies, API handlers, hook state and
    /// config.json) for N seconds each from the committed seeds; exits non-zero on a crash.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u32,
        /// Run only this target.
        #[arg(long)]
        target: Option<String>,
    },
    /// Make docs/rein-top.png (the README's picture of `rein top`) from a real run in the
    /// test VM.
    Screenshot {
        #[command(flatten)]
        vm: vm::VmArgs,
    },
    /// Benchmarks that print figures beside the alternative (see `cargo xtask bench --help`).
    #[command(subcommand)]
    Bench(bench::Bench),
    /// Boot the test VM and run a shell script in it as root, with rein, busybox, ip, tc,
    /// iperf3, runc, crun and promtool on PATH, the agent not started, and /dev/vdb as a
    /// scratch disk. Exits with the script's status.
    VmRun {
        #[command(flatten)]
        vm: vm::VmArgs,
        /// The script to run.
        #[arg(long)]
        script: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup => setup::run().map(|()| 0),
        Command::Test { no_lint, no_vm } => test::run(!no_lint, !no_vm).map(|()| 0),
        Command::VmTest { vm, filter } => vm::test(&vm, &filter).map(|t| {
            println!("{} passed, {} failed", t.passed, t.failed);
            0
        }),
        Command::VmRun { vm, script } => vm::run_script(&vm, &script),
        Command::VmFleet { vm } => fleet::run(&vm).map(|t| {
            println!("{} passed, {} failed", t.passed, t.failed);
            i32::from(t.failed > 0)
        }),
        Command::Bench(b) => bench::run(&b),
        Command::Screenshot { vm } => screenshot::run(&vm),
        Command::Fuzz { seconds, target } => fuzz::run(seconds, target.as_deref()),
        Command::Package { out } => package::run(out).map(|()| 0),
        Command::Dashboards => dashboards::write()
            .and_then(|()| dashboards::check_schema(&setup::node_dir()))
            .map(|()| 0),
        Command::Run { check: true, .. } => run::self_test().map(|t| i32::from(t.failed > 0)),
        Command::Run { minutes, vm, .. } => run::run(minutes, vm),
    };
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
