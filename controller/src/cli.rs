//! The command line (clap). Each subcommand's handler is small and calls into the modules
//! that own the work.

use std::io::Write as _;

use clap::{CommandFactory as _, Parser, Subcommand};
use clap_complete::Shell;

use crate::check;

/// rein puts containers on a leash: cgroup v2 limits, eBPF egress shaping and per-container
/// Prometheus metrics, on one node.
#[derive(Debug, Parser)]
#[command(name = "rein", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Probe this kernel: what rein can use here and what will not work without each
    /// missing part. Read-only: creates no cgroup, pin or mount.
    Check {
        /// Print the report as JSON (for scripts).
        #[arg(long)]
        json: bool,
        /// Exit with status 1 when any capability is missing or unknown.
        #[arg(long)]
        strict: bool,
    },
    /// Print a shell completion script, e.g. `rein completions bash > /etc/bash_completion.d/rein`.
    Completions {
        /// The shell to generate for.
        #[arg(value_enum)]
        shell: Shell,
    },
}

/// Runs the parsed command; the returned code becomes the process exit status.
pub fn run(cli: Cli) -> anyhow::Result<u8> {
    match cli.command {
        Command::Check { json, strict } => {
            let report = check::run();
            let mut out = std::io::stdout().lock();
            if json {
                serde_json::to_writer_pretty(&mut out, &report)?;
                writeln!(out)?;
            } else {
                write!(out, "{report}")?;
            }
            Ok(u8::from(strict && !report.all_ok()))
        }
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "rein", &mut std::io::stdout());
            Ok(0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn completions_name_the_subcommands() {
        let mut buf = Vec::new();
        clap_complete::generate(Shell::Bash, &mut Cli::command(), "rein", &mut buf);
        let script = String::from_utf8(buf).unwrap();
        assert!(script.contains("check") && script.contains("completions"));
    }
}
