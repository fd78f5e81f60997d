//! `cargo xtask bench ...`: benchmarks that print figures next to the alternative measured in
//! the same run, as ratios. They report; they do not assert timings.

use std::path::PathBuf;

use crate::{paths::workspace_root, vm};

#[derive(clap::Subcommand, Clone, Debug)]
pub enum Bench {
    /// Latency of changing a limit through rein (API call, and the `rein set` CLI end to
    /// end) next to writing the same cgroup file directly, in the test VM.
    Api {
        #[command(flatten)]
        vm: vm::VmArgs,
        /// API calls and direct writes to time (the CLI is timed on a tenth as many).
        #[arg(long, default_value_t = 1000)]
        calls: u32,
    },
}

pub fn run(b: &Bench) -> anyhow::Result<i32> {
    match b {
        Bench::Api { vm, calls } => api(vm, *calls),
    }
}

fn api(args: &vm::VmArgs, calls: u32) -> anyhow::Result<i32> {
    // Benchmarks measure what users run: optimised binaries.
    let args = &vm::VmArgs {
        release: true,
        ..args.clone()
    };
    let script = format!(
        "rein agent 2>/tmp/agent.log &\n\
         i=0; while [ ! -S /run/rein/rein.sock ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i+1)); done\n\
         rein run --keep --name bench --cpus 0.5 -- true\n\
         rein-test-helper bench-set /run/rein/rein.sock bench {calls}\n"
    );
    let path: PathBuf = workspace_root()
        .join("target")
        .join("vm")
        .join("bench-api.sh");
    std::fs::create_dir_all(path.parent().unwrap_or(&path))?;
    std::fs::write(&path, script)?;
    let mut status = 0;
    for (series, outcome) in vm::run_script_outcomes(args, &path)? {
        status = status.max(outcome.status);
        let figure = |key: &str, stat: &str| -> Option<f64> {
            outcome.lines.iter().find_map(|l| {
                let rest = l.strip_prefix(&format!("bench {key} "))?;
                rest.split_whitespace()
                    .find_map(|kv| kv.strip_prefix(&format!("{stat}="))?.parse().ok())
            })
        };
        let shell = figure("shell_write_us", "mean").unwrap_or(f64::NAN);
        println!(
            "\nbench api on {} ({calls} calls; TCG guest, microseconds):",
            series.name()
        );
        println!(
            "{:<34} {:>9} {:>9} {:>16}",
            "", "median", "p99", "median / shell"
        );
        for (label, key) in [
            ("rein API set (PATCH, 1 conn each)", "api_set_us"),
            ("rein set CLI (process + API)", "cli_set_us"),
            ("direct write(2) of cpu.max", "file_write_us"),
        ] {
            let (m, p) = (figure(key, "median"), figure(key, "p99"));
            let show = |v: Option<f64>| v.map_or_else(|| "?".to_owned(), |v| format!("{v:.0}"));
            let ratio = m.map_or_else(|| "?".to_owned(), |m| format!("{:.2}x", m / shell));
            println!("{label:<34} {:>9} {:>9} {ratio:>16}", show(m), show(p));
        }
        println!(
            "{:<34} {:>9} {:>9} {:>16}",
            "shell loop: echo > cpu.max (mean)",
            format!("{shell:.0}"),
            "-",
            "1.00x"
        );
    }
    Ok(status)
}
