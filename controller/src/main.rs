//! The `rein` binary: parse the command line, set up logging, run, map errors to exit codes.

use std::process::ExitCode;

use clap::Parser as _;
use controller::cli::{self, Cli};

fn main() -> ExitCode {
    // Called as `rein-runtime` (the runc wrapper for Docker): every argument is the
    // runtime's, none is rein's.
    let mut args = std::env::args_os();
    let argv0 = args.next().unwrap_or_default();
    if std::path::Path::new(&argv0)
        .file_name()
        .is_some_and(|n| n == "rein-runtime")
    {
        let args: Vec<_> = args.collect();
        let e = controller::hook::runtime::check_args(&args)
            .err()
            .unwrap_or_else(|| controller::hook::runtime::exec(args));
        eprintln!("rein-runtime: error: {e:#}");
        return ExitCode::from(1);
    }
    let cli = Cli::parse();
    // Logs go to stderr so that stdout stays clean for `--json` and completions.
    // REIN_LOG takes a tracing filter such as `debug` or `rein::ebpf=debug`. The agent says
    // at `info` what it adopted, attached and enforces; the other commands only warn.
    let default = match cli.command {
        cli::Command::Agent(_) => "info",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("REIN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match cli.log_format {
        cli::LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        // One JSON object per line, for journald's and Kubernetes' log collectors.
        cli::LogFormat::Json => logs.json().with_current_span(false).init(),
    }
    match cli::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("rein: error: {e:#}");
            ExitCode::from(1)
        }
    }
}
