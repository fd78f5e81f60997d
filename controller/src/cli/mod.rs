//! The command line (clap). Each subcommand's handler is small and calls into the modules
//! that own the work: `agent`, `api::client`, `check`.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::{CommandFactory as _, Parser, Subcommand};
use clap_complete::Shell;
use hyper::Method;

mod limit_args;
mod output;
mod run_cmd;

pub use limit_args::LimitArgs;
use output::{limits_line, ls_table, print_json};

use crate::{
    agent,
    api::{self, Container, LimitsBody, Stats, client::Client},
    cgroup::Kind,
    check,
    why::Thresholds,
};

/// rein puts containers on a leash: cgroup v2 limits, eBPF egress shaping and per-container
/// Prometheus metrics, on one node.
#[derive(Debug, Parser)]
#[command(name = "rein", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// The agent's API socket.
    #[arg(long, global = true, env = "REIN_SOCKET", default_value = api::DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// How log lines on stderr look: `text`, or `json` (one object per line, for log
    /// collectors). The level comes from REIN_LOG (default: info for the agent, warn else).
    #[arg(
        long,
        global = true,
        env = "REIN_LOG_FORMAT",
        value_enum,
        default_value_t
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, Default, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
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
        /// Make the container in this group (see `rein group create`): the group's limits
        /// cap the sum of its members.
        #[arg(long, value_name = "GROUP")]
        group: Option<String>,
        /// Print one JSON object on stdout after the command exits: the container's name,
        /// the command's exit code (or signal) and whether the container was kept.
        #[arg(long)]
        json: bool,
        /// Keep the container (and its limits) after the command exits.
        #[arg(long)]
        keep: bool,
        /// The command and its arguments.
        #[arg(last = true, required = true, value_name = "CMD")]
        command: Vec<String>,
    },
    /// Groups: managed cgroups that hold containers and other groups, whose limits cap the
    /// sum of their members (`rein group create team-a --cpus 4 --egress 100mbit`, then
    /// `rein run --group team-a ...`). `rein set`, `rein rm`, `rein stats` and `rein ls`
    /// work on groups by name.
    Group {
        #[command(subcommand)]
        command: GroupCommand,
    },
    /// Change a container's limits while it runs: `rein set web --memory 512M`.
    Set {
        name: String,
        #[command(flatten)]
        limits: LimitArgs,
        /// Print the container's description (as `rein stats --json` without usage) as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove a container. Refuses while processes run in it, unless --force.
    Rm {
        name: String,
        /// Kill every process in the container (cgroup.kill), then remove it.
        #[arg(long, short = 'f')]
        force: bool,
        /// Print `{"removed": NAME}` as JSON.
        #[arg(long)]
        json: bool,
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
    /// What holds a container (or group) back now: samples it over --window and names, most
    /// costly first, each limit or contention slowing it (CPU quota, CPU contention from
    /// others, memory reclaim, OOM kills, IO, egress and ingress limits, loss beyond the
    /// node) with the numbers and the flag that would relieve it. A factor is named when it
    /// costs at least 5% of the window (limits: when the rate is at least 80% of the limit;
    /// network: at least 1% of packets resent); see docs/operations.md.
    Why {
        name: String,
        /// How long to sample, e.g. 10s, 2500ms or 2m (1s to 300s).
        #[arg(long, default_value = "10s", value_parser = parse_window)]
        window: f64,
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
    /// `rein/<flag>` and `kubernetes.io/*-bandwidth` annotations); the optional poststop
    /// unregisters it at once (without it the agent forgets a deleted container within a
    /// second). See deploy/hooks.d/rein.json and docs/runtimes.md.
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
    /// A runc wrapper for Docker: adds rein's createRuntime hook to the bundle of `create`/`run`, then
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
    /// The agent's config file.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Write man pages (rein.1 and rein-SUBCOMMAND.1) into DIR, from this command line's
    /// definition (`cargo xtask package` puts them in the Debian package).
    #[command(hide = true)]
    Man {
        /// The directory to write into (created if missing).
        dir: PathBuf,
    },
    /// Print a shell completion script, e.g. `rein completions bash > /etc/bash_completion.d/rein`.
    Completions {
        /// The shell to generate for.
        #[arg(value_enum)]
        shell: Shell,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Check the agent's config file without starting anything: print the settings the
    /// agent would run with (flags aside), or what is wrong and which keys and values are
    /// accepted, and exit 1. A missing default file is no error: the defaults apply.
    Check {
        /// The file to check (default: /etc/rein/rein.toml).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Print the settings as one JSON object.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// Create a group: `rein group create team-a --cpus 4 --memory 8G --egress 100mbit`.
    Create {
        /// The group's name (unique across containers and groups).
        name: String,
        #[command(flatten)]
        limits: LimitArgs,
        /// Nest the new group in this group.
        #[arg(long, value_name = "GROUP")]
        group: Option<String>,
    },
}

/// A window such as `10s`, `2500ms`, `2m` or `10` (seconds), in seconds.
fn parse_window(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let (number, scale) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else {
        (t, 1.0)
    };
    let (min, max) = (Thresholds::MIN_WINDOW_SECS, Thresholds::MAX_WINDOW_SECS);
    match number.trim().parse::<f64>().ok().map(|n| n * scale) {
        Some(v) if (min..=max).contains(&v) => Ok(v),
        _ => Err(format!(
            "{s:?}: give a window from {min}s to {max}s, e.g. 10s or 2m"
        )),
    }
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

/// Runs the parsed command; the returned code becomes the process exit status.
pub fn run(cli: Cli) -> anyhow::Result<u8> {
    let client = Client::new(&cli.socket);
    match cli.command {
        Command::Agent(args) => {
            let settings = agent::Settings::resolve(args.clone(), cli.socket.clone())?;
            // SIGHUP resolves the same flags over the config file again.
            agent::run(settings, move || {
                agent::Settings::resolve(args.clone(), cli.socket.clone())
            })?;
            Ok(0)
        }
        Command::Config {
            command: ConfigCommand::Check { config, json },
        } => {
            let args = agent::AgentArgs {
                config,
                ..Default::default()
            };
            let settings = agent::Settings::resolve(args, cli.socket)?;
            let pairs = settings.describe();
            if json {
                let map: serde_json::Map<String, serde_json::Value> = pairs
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v.into()))
                    .collect();
                print_json(&map)?;
            } else {
                for (k, v) in pairs {
                    println!("{k} = {v}");
                }
            }
            Ok(0)
        }
        Command::Run {
            limits,
            name,
            group,
            json,
            keep,
            command,
        } => {
            let name = name.unwrap_or_else(|| format!("run-{}", std::process::id()));
            let ended = runtime()?.block_on(run_cmd::run_command(
                &client,
                name,
                group,
                limits.to_map(),
                keep,
                command,
            ))?;
            if json {
                print_json(&ended)?;
            }
            Ok(ended.exit_code)
        }
        Command::Group {
            command:
                GroupCommand::Create {
                    name,
                    limits,
                    group,
                },
        } => {
            let c: Option<Container> = runtime()?.block_on(client.call(
                Method::POST,
                "/v1/containers",
                Some(&api::CreateRequest {
                    name,
                    limits: limits.to_map(),
                    kind: Kind::Group,
                    group,
                    cgroup: None,
                    labels: Default::default(),
                    pod: None,
                }),
            ))?;
            if let Some(c) = c {
                println!("{}: {}", c.name, limits_line(&c.limits));
            }
            Ok(0)
        }
        Command::Set { name, limits, json } => {
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
            match c {
                Some(c) if json => print_json(&c)?,
                Some(c) => println!("{}: {}", c.name, limits_line(&c.limits)),
                None => {}
            }
            Ok(0)
        }
        Command::Rm { name, force, json } => {
            let path = format!("/v1/containers/{name}?force={force}");
            runtime()?.block_on(client.call::<serde_json::Value>(
                Method::DELETE,
                &path,
                None::<&()>,
            ))?;
            if json {
                print_json(&serde_json::json!({ "removed": name }))?;
            }
            Ok(0)
        }
        Command::Ls { json } => {
            let all: Vec<Container> = runtime()?
                .block_on(client.call(Method::GET, "/v1/containers", None::<&()>))?
                .unwrap_or_default();
            if json {
                print_json(&all)?;
            } else {
                print!("{}", ls_table(&all));
            }
            Ok(0)
        }
        Command::Why { name, window, json } => {
            let path = format!("/v1/containers/{name}/why?window={window}");
            let d: Option<crate::why::Diagnosis> =
                runtime()?.block_on(client.call(Method::GET, &path, None::<&()>))?;
            let Some(d) = d else {
                bail!("the agent sent no diagnosis")
            };
            if json {
                print_json(&d)?;
            } else {
                print!("{d}");
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
                print!("{}", output::stats_text(&s)?);
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
        Command::Man { dir } => {
            write_man_pages(&dir)?;
            Ok(0)
        }
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "rein", &mut std::io::stdout());
            Ok(0)
        }
    }
}

/// rein.1 and one page per subcommand (rein-run.1, rein-group-create.1, ...), as
/// clap_mangen renders them; hidden subcommands get none.
fn write_man_pages(dir: &std::path::Path) -> anyhow::Result<()> {
    fn pages(cmd: &clap::Command, name: &str, dir: &std::path::Path) -> anyhow::Result<()> {
        let cmd = cmd.clone().name(name.to_owned());
        let path = dir.join(format!("{name}.1"));
        let mut out = Vec::new();
        clap_mangen::Man::new(cmd.clone()).render(&mut out)?;
        std::fs::write(&path, out).with_context(|| format!("writing {}", path.display()))?;
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            if sub.get_name() != "help" {
                pages(sub, &format!("{name}-{}", sub.get_name()), dir)?;
            }
        }
        Ok(())
    }
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut cli = Cli::command();
    cli.build();
    pages(&cli, "rein", dir)
}

#[cfg(test)]
mod tests;
