//! The command line (clap). Each subcommand's handler is small and calls into the modules
//! that own the work: `agent`, `api::client`, `check`.

use std::{io::Write as _, path::PathBuf};

use anyhow::{Context as _, bail};
use clap::{Args, CommandFactory as _, Parser, Subcommand};
use clap_complete::Shell;
use hyper::Method;

use crate::{
    agent,
    api::{self, Container, CreateRequest, LimitMap, LimitText, LimitsBody, Stats, client::Client},
    check,
    limits::{self, Flag, Limits},
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

/// Validates with the shared parser at parse time (so clap names the flag), keeps the text.
fn checked<T: std::str::FromStr<Err = String>>(s: &str) -> Result<String, String> {
    s.parse::<T>().map(|_| s.to_owned())
}

/// Resource limits, shared by `rein run` and `rein set`. Units: memory and IO bytes take
/// K/M/G/T (powers of 1024); bandwidth takes bits per second (10mbit or 10M).
#[derive(Debug, Args, Default, Clone)]
pub struct LimitArgs {
    /// CPU quota in CPUs, e.g. 1.5 or 1500m (cpu.max), or max.
    #[arg(long, value_name = "CPUS", value_parser = checked::<limits::Max<limits::CpuQuota>>)]
    pub cpus: Option<String>,
    /// CPU weight 1..10000, default 100, e.g. 300 (cpu.weight).
    #[arg(long, value_name = "W", value_parser = checked::<limits::Weight>)]
    pub cpu_weight: Option<String>,
    /// CPUs to run on, e.g. 0-1,3 (cpuset.cpus).
    #[arg(long, value_name = "LIST", value_parser = checked::<limits::CpuSet>)]
    pub cpuset: Option<String>,
    /// Hard memory limit, e.g. 256M or 1.5G (memory.max); the OOM killer acts above it.
    #[arg(long, value_name = "BYTES", value_parser = checked::<limits::Memory>)]
    pub memory: Option<String>,
    /// Memory throttling threshold, e.g. 200M (memory.high).
    #[arg(long, value_name = "BYTES", value_parser = checked::<limits::Memory>)]
    pub memory_high: Option<String>,
    /// Best-effort memory protection, e.g. 64M (memory.low).
    #[arg(long, value_name = "BYTES", value_parser = checked::<limits::Memory>)]
    pub memory_low: Option<String>,
    /// Hard memory protection, e.g. 32M (memory.min).
    #[arg(long, value_name = "BYTES", value_parser = checked::<limits::Memory>)]
    pub memory_min: Option<String>,
    /// Swap limit itself (not memory+swap as in docker), e.g. 0 or 1G (memory.swap.max).
    #[arg(long, value_name = "BYTES", value_parser = checked::<limits::Memory>)]
    pub swap: Option<String>,
    /// On OOM, kill the whole container rather than one process (memory.oom.group).
    #[arg(long)]
    pub oom_group: bool,
    /// Most processes and threads, e.g. 512 (pids.max), or max.
    #[arg(long, value_name = "N", value_parser = checked::<limits::Pids>)]
    pub pids: Option<String>,
    /// IO weight 1..10000, default 100 (io.weight).
    #[arg(long, value_name = "W", value_parser = checked::<limits::Weight>)]
    pub io_weight: Option<String>,
    /// Per-device IO limit, repeatable: 'DEV rbps=10M wbps=5M riops=1000 wiops=1000' with DEV
    /// as MAJ:MIN or a device path (io.max).
    #[arg(long, value_name = "'DEV KEY=VALUE..'", value_parser = checked::<limits::IoMax>)]
    pub io_max: Vec<String>,
    /// Priority class: critical, high, normal, low or idle (sets cpu.weight, io.weight,
    /// cpu.idle; see README for the mapping).
    #[arg(long, value_name = "CLASS", value_parser = checked::<limits::Priority>)]
    pub priority: Option<String>,
    /// Egress bandwidth, e.g. 10mbit or 10M (bits per second).
    #[arg(long, value_name = "RATE", value_parser = checked::<limits::Bandwidth>)]
    pub egress: Option<String>,
    /// Egress burst as time at the container's rate, e.g. 5ms (default: the agent's
    /// --egress-burst-ms, 2ms). Larger bursts help bursty senders, smaller keep delay lower.
    #[arg(long, value_name = "TIME", value_parser = checked::<limits::Burst>)]
    pub egress_burst: Option<String>,
    /// Ingress bandwidth, e.g. 10mbit or 10M (bits per second).
    #[arg(long, value_name = "RATE", value_parser = checked::<limits::Bandwidth>)]
    pub ingress: Option<String>,
}

impl LimitArgs {
    /// The flags as the API's JSON map, after the cross-field checks (so a contradiction is
    /// reported before the agent is even asked).
    pub fn to_map(&self) -> anyhow::Result<LimitMap> {
        let mut pairs: Vec<(Flag, &str)> = Vec::new();
        let one = [
            (Flag::Cpus, &self.cpus),
            (Flag::CpuWeight, &self.cpu_weight),
            (Flag::Cpuset, &self.cpuset),
            (Flag::Memory, &self.memory),
            (Flag::MemoryHigh, &self.memory_high),
            (Flag::MemoryLow, &self.memory_low),
            (Flag::MemoryMin, &self.memory_min),
            (Flag::Swap, &self.swap),
            (Flag::Pids, &self.pids),
            (Flag::IoWeight, &self.io_weight),
            (Flag::Priority, &self.priority),
            (Flag::Egress, &self.egress),
            (Flag::EgressBurst, &self.egress_burst),
            (Flag::Ingress, &self.ingress),
        ];
        for (flag, v) in one {
            if let Some(v) = v {
                pairs.push((flag, v));
            }
        }
        if self.oom_group {
            pairs.push((Flag::OomGroup, "true"));
        }
        pairs.extend(self.io_max.iter().map(|v| (Flag::IoMax, v.as_str())));
        let l = Limits::from_pairs(pairs)?;
        Ok(api::limits_to_map(&l))
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent: own the managed cgroup root, adopt the containers found there, and
    /// serve the API on the socket.
    Agent {
        /// Configuration file (TOML: socket, root, allowed_uids). Default /etc/rein/rein.toml
        /// if it exists.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Managed cgroup root (default /sys/fs/cgroup/rein.slice).
        #[arg(long)]
        root: Option<PathBuf>,
        /// Allow this uid to use the API besides root (repeatable).
        #[arg(long = "allow-uid", value_name = "UID")]
        allow_uids: Vec<u32>,
        /// Prometheus endpoint, IP:PORT (default 127.0.0.1:9798: loopback only).
        #[arg(long, value_name = "ADDR")]
        metrics_addr: Option<std::net::SocketAddr>,
        /// The `node` label on every series, so a fleet's Prometheus tells nodes apart
        /// whatever its relabeling does (default: the host name; the DaemonSet passes
        /// spec.nodeName).
        #[arg(long, env = "REIN_NODE_NAME", value_name = "NAME")]
        node_name: Option<crate::metrics::NodeName>,
        /// Device whose root qdisc becomes fq for egress pacing (repeatable; default: the
        /// devices that carry a default route).
        #[arg(long = "egress-dev", value_name = "DEV")]
        egress_devs: Vec<String>,
        /// bpffs directory for rein's pinned maps and links, one per managed root (default
        /// /sys/fs/bpf/rein).
        #[arg(long, value_name = "DIR")]
        bpf_dir: Option<PathBuf>,
        /// How --egress limits are enforced: auto paces with departure times where fq can be
        /// installed and polices where not; edt refuses limits without fq; police always
        /// polices (TCP gets congestion notification, nothing is delayed).
        #[arg(long, value_enum, value_name = "MODE")]
        egress_mode: Option<agent::ModeChoice>,
        /// Do not attach the scheduler programs behind rein_runqueue_latency_seconds: they
        /// run on every context switch of the node (see `cargo xtask bench metrics`).
        #[arg(long)]
        no_runqueue_latency: bool,
        /// Shaper: default credit a quiet container may spend at once, in ms at its rate
        /// (default 2; per container: --egress-burst).
        #[arg(long, value_name = "MS")]
        egress_burst_ms: Option<f64>,
        /// Shaper: wait behind earlier packets (debt, when policing) above which TCP gets
        /// congestion notification (default 4 when pacing, 40 when policing).
        #[arg(long, value_name = "MS")]
        egress_mark_ms: Option<f64>,
        /// Shaper: wait (debt) at which a packet is dropped instead of queued (default 40
        /// when pacing, 200 when policing).
        #[arg(long, value_name = "MS")]
        egress_horizon_ms: Option<f64>,
    },
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
    /// See deploy/hooks.d/rein.json and the README's runtime guide.
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
        Command::Agent {
            config,
            root,
            allow_uids,
            metrics_addr,
            node_name,
            egress_devs,
            bpf_dir,
            egress_mode,
            no_runqueue_latency,
            egress_burst_ms,
            egress_mark_ms,
            egress_horizon_ms,
        } => {
            let ns = |flag: &str, ms: Option<f64>| -> anyhow::Result<Option<u64>> {
                match ms {
                    Some(ms) if !(0.0..=60_000.0).contains(&ms) => {
                        bail!("--{flag} {ms}: give milliseconds from 0 to 60000")
                    }
                    Some(ms) => Ok(Some((ms * 1e6) as u64)),
                    None => Ok(None),
                }
            };
            let shaper = crate::node::ShaperOverrides {
                burst_ns: ns("egress-burst-ms", egress_burst_ms)?,
                mark_ns: ns("egress-mark-ms", egress_mark_ms)?,
                horizon_ns: ns("egress-horizon-ms", egress_horizon_ms)?,
            };
            let cfg = agent::Config::load(config.as_deref())?;
            let mut allowed_uids = cfg.allowed_uids;
            allowed_uids.extend(allow_uids);
            let socket = if cli.socket.as_path() == std::path::Path::new(api::DEFAULT_SOCKET) {
                cfg.socket.unwrap_or(cli.socket)
            } else {
                cli.socket
            };
            let hook_ceiling = api::limits_from_map(&cfg.hook_ceiling)
                .context("the agent config's [hook_ceiling]")?;
            let node_name = match node_name.or(cfg.node_name) {
                Some(n) => n,
                None => crate::metrics::NodeName::from_host()?,
            };
            agent::run(agent::Settings {
                node_name,
                hook_ceiling,
                shaper,
                egress_mode: egress_mode.or(cfg.egress_mode).unwrap_or_default(),
                runqueue_latency: !no_runqueue_latency,
                socket,
                root: root
                    .or(cfg.root)
                    .unwrap_or_else(|| PathBuf::from(agent::DEFAULT_ROOT)),
                allowed_uids,
                bpf_dir: bpf_dir
                    .or(cfg.bpf_dir)
                    .unwrap_or_else(|| PathBuf::from(agent::PIN_DIR)),
                egress_devs: if egress_devs.is_empty() {
                    cfg.egress_devs.unwrap_or_else(agent::default_route_devices)
                } else {
                    egress_devs
                },
                metrics_addr: metrics_addr
                    .or(cfg.metrics_addr)
                    .unwrap_or_else(|| std::net::SocketAddr::from(([127, 0, 0, 1], 9798))),
            })?;
            Ok(0)
        }
        Command::Run {
            limits,
            name,
            keep,
            command,
        } => {
            let name = name.unwrap_or_else(|| format!("run-{}", std::process::id()));
            runtime()?.block_on(run_command(&client, name, limits.to_map()?, keep, command))
        }
        Command::Set { name, limits } => {
            let map = limits.to_map()?;
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
                for (k, v) in &s.usage {
                    println!("{k:<26} {v}");
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

/// `rein run`: create the container, start the command inside it, forward SIGINT/SIGTERM,
/// wait, remove the container (unless `keep`), and return the command's exit status
/// (128 + signal number when a signal ended it, as shells report).
async fn run_command(
    client: &Client,
    name: String,
    limits: LimitMap,
    keep: bool,
    command: Vec<String>,
) -> anyhow::Result<u8> {
    use std::os::unix::process::ExitStatusExt as _;

    let created: Container = client
        .call(
            Method::POST,
            "/v1/containers",
            Some(&CreateRequest {
                name: name.clone(),
                limits,
                cgroup: None,
                labels: Default::default(),
            }),
        )
        .await?
        .context("the agent created the container but sent no description")?;
    let procs = PathBuf::from(&created.path).join("cgroup.procs");
    let mut cmd = tokio::process::Command::new(&command[0]);
    cmd.args(&command[1..]);
    // SAFETY: runs in the forked child before exec; it only opens, writes and closes a file
    // (async-signal-safe system calls) to move itself into the container's cgroup, so every
    // socket and page the command ever has belongs to the container.
    unsafe {
        cmd.pre_exec(move || std::fs::write(&procs, "0"));
    }
    let cleanup = |client: &Client, name: &str| {
        let path = format!("/v1/containers/{name}?force=true");
        let client = Client::new(client.socket());
        async move {
            client
                .call::<serde_json::Value>(Method::DELETE, &path, None::<&()>)
                .await
        }
    };
    // Handlers first: a signal that arrives once the command runs must be forwarded to it,
    // not end rein and orphan the container.
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let _ = cleanup(client, &name).await;
            bail!("cannot start {:?}: {e}", command[0]);
        }
    };
    let pid = child.id().and_then(|p| i32::try_from(p).ok());
    let status = loop {
        let sig = tokio::select! {
            s = child.wait() => break s?,
            _ = int.recv() => libc::SIGINT,
            _ = term.recv() => libc::SIGTERM,
        };
        if let Some(pid) = pid {
            // SAFETY: kill(2) on the pid of our own child, which we have not reaped yet.
            unsafe { libc::kill(pid, sig) };
        }
    };
    if !keep && let Err(e) = cleanup(client, &name).await {
        eprintln!("rein: warning: could not remove container {name}: {e}");
    }
    let code = status
        .code()
        .or(status.signal().map(|s| 128 + s))
        .unwrap_or(1);
    Ok(u8::try_from(code).unwrap_or(1))
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
        let Command::Agent { node_name, .. } = cli.command else {
            panic!("not agent")
        };
        assert_eq!(node_name.map(|n| n.to_string()).as_deref(), Some("node-a"));
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
        let map = limits.to_map().unwrap();
        assert_eq!(map["cpus"], LimitText::One("1.5".into()));
        assert_eq!(map["oom-group"], LimitText::One("true".into()));
        assert_eq!(command, vec!["true"]);
        let contradiction = LimitArgs {
            memory: Some("256M".into()),
            memory_low: Some("1G".into()),
            ..LimitArgs::default()
        };
        assert!(
            contradiction
                .to_map()
                .unwrap_err()
                .to_string()
                .contains("--memory-low 1G is larger")
        );
    }
}
