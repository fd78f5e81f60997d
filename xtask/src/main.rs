//! `cargo xtask`: rein's development tasks. Each subcommand lives in its own module.

mod paths;
mod setup;
mod test;
mod toolchain;

use std::process::ExitCode;

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
    /// Run every test: formatting and clippy, the workspace's unit and host tests.
    Test {
        /// Skip `cargo fmt --check` and `cargo clippy` (for a quick local loop).
        #[arg(long)]
        no_lint: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup => setup::run(),
        Command::Test { no_lint } => test::run(!no_lint),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
