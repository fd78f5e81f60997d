//! The command line (clap). Each subcommand's handler is small and calls into the modules
//! that own the work: `agent`, `api::client`, `check`.

use std::{io::Write as _, path::PathBuf};

use anyhow::{Context as _, bail};
use clap::{CommandFactory as _, Parser, Subcommand};
use clap_complete::Shell;
use hyper::Method;

mod limit_args;
mod run_cmd;

pub use limit_args::LimitArgs;

use crate::{
    agent,
    api::{self, Container, LimitMap, LimitText, LimitsBody, Stats, client::Client},
    check,
};

/// rein puts containers on a leash: cgroup v2 limits, eBPF egress shaping and per-container
/// Prometheus metrics, on one node.
#[derive(Debug, Parser)]
#[command(name = "rein", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// The agent's API socket.
    #[arg(long, global = true, env = "REIN_SOCKET", default_value = api::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent: own the managed cgroup root, adopt the containers found there, and
    /// serve the API on the socket.
    Agent(agent::AgentArgs),
    /// Run a command in a new limited container and wait for it, like `systemd-run --scope`:
    /// `rein run --cpus 0.5 --memory 256M -- make -j4`. Exits with the command's status.
    Run {
        #[command(flatten)]
        limits: LimitArgs,
        /// Container name (default run-<pid>).
        #[arg(long)]
        name: Option<String>,
        /// Keep the container (and its limits) after the command exits.
        #[arg(long)]
        keep: bool,
        /// The command and its arguments.
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// Change a container's limits while it runs: `rein set web --memory 512M`.
    Set {
        name: String,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Remove a container. Refuses while processes run in it, unless --force.
    Rm {
        name: String,
        /// Kill every process in the container (cgroup.kill), then remove it.
        #[arg(long)]
        force: bool,
    },
    /// List containers and their limits.
    Ls {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show a container's limits and current usage.
    Stats {
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Live view of the containers, like systemd-cgtop with the network: CPU %, throttled
    /// periods, memory / limit, IO rates, egress rate / limit, drops, with CPU sparklines.
    /// Keys c t m i e d n sort, q quits. When stdout is not a terminal it prints one table
    /// after one interval and exits (like `top -b -n 1`).
    Top {
        /// Seconds between refreshes.
        #[arg(long, short = 'd', value_name = "SECS", default_value_t = 1.0)]
        interval: f64,
        /// Column to sort by.
        #[arg(long, value_enum, default_value_t)]
        sort: crate::top::model::SortKey,
        /// Print one table and exit, also on a terminal.
        #[arg(long)]
        once: bool,
        /// Print the rows as JSON (one interval) and exit.
        #[arg(long)]
        json: bool,
        /// COLSxROWS: print the live view's cells as JSON after a few refreshes (for
        /// `cargo xtask screenshot`).
        #[arg(long, hide = true, value_parser = parse_size)]
        snapshot: Option<(u16, u16)>,
    },
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
    /// OCI runtime hook, run by runc, crun, Podman or CRI-O with the container's state on
    /// stdin: createRuntime registers the container with the agent (limits from its
    /// `rein/<flag>` and `kubernetes.io/*-bandwidth` annotations), poststop unregisters it.
    /// See deploy/hooks.d/rein.json and docs/runtimes.md.
    Hook {
        /// The OCI lifecycle stage: createRuntime (or prestart) or poststop.
        #[arg(value_enum)]
        stage: crate::hook::stage::Stage,
        /// When the agent is unreachable or refuses the limits, start the container anyway
        /// (without rein's limits) instead of failing its start.
        #[arg(long)]
        fail_open: bool,
        /// Give up after this many seconds (reading the state included).
        #[arg(long, value_name = "SECS", default_value_t = 5.0)]
        timeout: f64,
        /// The cgroup2 mount that linux.cgroupsPath is relative to.
        #[arg(long, value_name = "DIR", default_value = "/sys/fs/cgroup")]
        cgroup_root: PathBuf,
    },
    /// A runc wrapper for Docker: adds rein's hooks to the bundle of `create`/`run`, then
    /// execs the runtime (REIN_RUNTIME, default runc) with the same arguments. Installed as
    /// the symlink rein-runtime: `dockerd --add-runtime rein=/usr/local/bin/rein-runtime`.
    Runtime {
        /// The runtime's arguments, as dockerd or containerd pass them.
        #[arg(
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "ARGS"
        )]
        args: Vec<std::ffi::OsString>,
    },
    /// Print a shell completion script, e.g. `rein completions bash > /etc/bash_completion.d/rein`.
    Completions {
        /// The shell to generate for.
        #[arg(value_enum)]
        shell: Shell,
    },
}

/// `COLSxROWS`, each 10..=500.
fn parse_size(s: &str) -> Result<(u16, u16), String> {
    let bad = || format!("{s:?}: give COLSxROWS, e.g. 120x30 (10 to 500 each)");
    let (c, r) = s.split_once('x').ok_or_else(bad)?;
    let n = |t: &str| t.parse::<u16>().ok().filter(|v| (10..=500).contains(v));
    Ok((n(c).ok_or_else(bad)?, n(r).ok_or_else(bad)?))
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")
}

fn print_json(v: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v)?;
    writeln!(out)?;
    Ok(())
}

fn limits_line(map: &LimitMap) -> String {
    let parts: Vec<String> = map
        .iter()
        .flat_map(|(k, v)| match v {
            LimitText::One(s) => vec![format!("{k}={s}")],
            LimitText::Many(l) => l.iter().map(|s| format!("{k}='{s}'")).collect(),
        })
        .collect();
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(" ")
    }
}

/// Runs the parsed command; the returned code becomes the process exit status.
pub fn run(cli: Cli) -> anyhow::Result<u8> {
    let client = Client::new(&cli.socket);
    match cli.command {
        Command::Agent(args) => {
            agent::run(agent::Settings::resolve(args, cli.socket)?)?;
            Ok(0)
        }
        Command::Run {
            limits,
            name,
            keep,
            command,
        } => {
            let name = name.unwrap_or_else(|| format!("run-{}", std::process::id()));
            runtime()?.block_on(run_cmd::run_command(
                &client,
                name,
                limits.to_map(),
                keep,
                command,
            ))
        }
        Command::Set { name, limits } => {
            let map = limits.to_map();
            if map.is_empty() {
                bail!("no limit given; e.g. `rein set {name} --memory 512M` (see rein set --help)");
            }
            let path = format!("/v1/containers/{name}");
            let c: Option<Container> = runtime()?.block_on(client.call(
                Method::PATCH,
                &path,
                Some(&LimitsBody { limits: map }),
            ))?;
            if let Some(c) = c {
                println!("{}: {}", c.name, limits_line(&c.limits));
            }
            Ok(0)
        }
        Command::Rm { name, force } => {
            let path = format!("/v1/containers/{name}?force={force}");
            runtime()?.block_on(client.call::<serde_json::Value>(
                Method::DELETE,
                &path,
                None::<&()>,
            ))?;
            Ok(0)
        }
        Command::Ls { json } => {
            let all: Vec<Container> = runtime()?
                .block_on(client.call(Method::GET, "/v1/containers", None::<&()>))?
                .unwrap_or_default();
            if json {
                print_json(&all)?;
            } else {
                println!("{:<24} LIMITS", "NAME");
                for c in &all {
                    println!("{:<24} {}", c.name, limits_line(&c.limits));
                }
            }
            Ok(0)
        }
        Command::Stats { name, json } => {
            let path = format!("/v1/containers/{name}");
            let s: Option<Stats> =
                runtime()?.block_on(client.call(Method::GET, &path, None::<&()>))?;
            let Some(s) = s else {
                bail!("the agent sent no stats")
            };
            if json {
                print_json(&s)?;
            } else {
                println!("name    {}", s.container.name);
                println!("cgroup  {}", s.container.path);
                println!("limits  {}", limits_line(&s.container.limits));
                println!("egress  {}", s.egress_mode);
                if let serde_json::Value::Object(usage) = serde_json::to_value(&s.usage)? {
                    for (k, v) in usage {
                        println!("{k:<26} {v}");
                    }
                }
            }
            Ok(0)
        }
        Command::Top {
            interval,
            sort,
            once,
            json,
            snapshot,
        } => {
            if !(0.1..=3600.0).contains(&interval) {
                bail!("--interval {interval}: give seconds from 0.1 to 3600");
            }
            crate::top::run(
                &client,
                &crate::top::Options {
                    interval: std::time::Duration::from_secs_f64(interval),
                    sort,
                    json,
                    once,
                    snapshot,
                },
            )
        }
        Command::Check { json, strict } => {
            let report = check::run();
            if json {
                print_json(&report)?;
            } else {
                print!("{report}");
            }
            Ok(u8::from(strict && !report.all_ok()))
        }
        Command::Hook {
            stage,
            fail_open,
            timeout,
            cgroup_root,
        } => {
            if !(0.1..=300.0).contains(&timeout) {
                bail!("--timeout {timeout}: give seconds from 0.1 to 300");
            }
            let opts = crate::hook::stage::Options {
                fail_open,
                timeout: std::time::Duration::from_secs_f64(timeout),
                cgroup_root,
            };
            Ok(crate::hook::stage::run(&client, stage, &opts))
        }
        Command::Runtime { args } => {
            crate::hook::runtime::check_args(&args)?;
            Err(crate::hook::runtime::exec(args))
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
        for sub in [
            "agent",
            "run",
            "set",
            "rm",
            "ls",
            "stats",
            "check",
            "completions",
        ] {
            assert!(script.contains(sub), "{sub}");
        }
    }

    #[test]
    fn a_node_name_that_would_garble_the_label_is_refused_at_parse_time() {
        let err = Cli::try_parse_from(["rein", "agent", "--node-name", "a b"]).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("--node-name") && msg.contains("letters, digits"),
            "{msg}"
        );
        let cli = Cli::try_parse_from(["rein", "agent", "--node-name", "node-a"]).unwrap();
        let Command::Agent(args) = cli.command else {
            panic!("not agent")
        };
        assert_eq!(
            args.node_name.map(|n| n.to_string()).as_deref(),
            Some("node-a")
        );
    }

    #[test]
    fn limit_flags_are_checked_by_the_shared_parser() {
        let err = Cli::try_parse_from(["rein", "set", "web", "--memory", "12Q"]).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("--memory") && msg.contains("unknown unit \"Q\""),
            "{msg}"
        );
        let cli = Cli::try_parse_from([
            "rein",
            "run",
            "--cpus",
            "1500m",
            "--io-max",
            "8:0 wbps=1M",
            "--oom-group",
            "--",
            "true",
        ])
        .unwrap();
        let Command::Run {
            limits, command, ..
        } = cli.command
        else {
            panic!("not run")
        };
        let map = limits.to_map();
        assert_eq!(map["cpus"], LimitText::One("1.5".into()));
        assert_eq!(map["oom-group"], LimitText::One("true".into()));
        assert_eq!(command, vec!["true"]);
        let err = Cli::try_parse_from([
            "rein",
            "set",
            "web",
            "--memory",
            "256M",
            "--memory-low",
            "1G",
        ])
        .unwrap_err()
        .to_string();
        assert!(err.contains("--memory-low 1G is larger"), "{err}");
        let err = Cli::try_parse_from(["rein", "set", "web", "--cpus", "1", "--cpus", "2"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--cpus"), "{err}");
    }
}
