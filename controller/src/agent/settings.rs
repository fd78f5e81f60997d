//! The agent's settings, resolved in one place: a flag wins over the config file, which wins
//! over [`Defaults`]. `rein agent --help` shows the flags; the config file takes the same
//! settings under the keys of [`Config`].

use std::{
    net::{Ipv4Addr, SocketAddr, SocketAddrV4},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use serde::Deserialize;

use crate::{
    limits::Limits,
    metrics::NodeName,
    node::{Flows, ShaperOverrides},
};

/// Every default of the agent, in one block.
pub struct Defaults;

impl Defaults {
    /// The config file read when `--config` is not given (a missing one is no error).
    pub const CONFIG: &str = "/etc/rein/rein.toml";
    /// The API socket.
    pub const SOCKET: &str = crate::api::DEFAULT_SOCKET;
    /// The managed cgroup root.
    pub const ROOT: &str = "/sys/fs/cgroup/rein.slice";
    /// Where the agent pins its maps and links (bpffs).
    pub const BPF_DIR: &str = "/sys/fs/bpf/rein";
    /// The Prometheus endpoint: loopback only (see docs/operations.md, threat model).
    pub const METRICS_ADDR: SocketAddr =
        SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9798));
    /// What annotations may claim unless the config's `[hook_ceiling]` names the flag:
    /// anyone who may create a pod writes annotations, and a strict priority class above
    /// normal or a long burst takes the node's shared NIC from every other pod. An operator
    /// raises these on purpose (`priority = "critical"`).
    pub const HOOK_CEILING: [(&str, &str); 2] = [("priority", "normal"), ("egress-burst", "10ms")];
}

/// `rein agent`'s flags.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct AgentArgs {
    /// Configuration file (TOML; keys socket, root, allowed_uids, metrics_addr, node_name,
    /// egress_devs, bpf_dir, egress_mode, egress_flows, [hook_ceiling]). Default
    /// /etc/rein/rein.toml if it
    /// exists.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Managed cgroup root (default /sys/fs/cgroup/rein.slice).
    #[arg(long)]
    pub root: Option<PathBuf>,
    /// Allow this uid to use the API besides root (repeatable).
    #[arg(long = "allow-uid", value_name = "UID")]
    pub allow_uids: Vec<u32>,
    /// Prometheus endpoint, IP:PORT (default 127.0.0.1:9798: loopback only).
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// The `node` label on every series, so a fleet's Prometheus tells nodes apart whatever
    /// its relabeling does (default: the host name; the DaemonSet passes spec.nodeName).
    #[arg(long, env = "REIN_NODE_NAME", value_name = "NAME")]
    pub node_name: Option<NodeName>,
    /// Device whose root qdisc becomes fq for egress pacing (repeatable; default: the
    /// devices that carry a default route).
    #[arg(long = "egress-dev", value_name = "DEV")]
    pub egress_devs: Vec<String>,
    /// bpffs directory for rein's pinned maps and links, one per managed root (default
    /// /sys/fs/bpf/rein).
    #[arg(long, value_name = "DIR")]
    pub bpf_dir: Option<PathBuf>,
    /// How --egress limits are enforced: auto paces with departure times where fq can be
    /// installed and polices where not; edt refuses limits without fq; police always polices
    /// (TCP gets congestion notification, nothing is delayed).
    #[arg(long, value_enum, value_name = "MODE")]
    pub egress_mode: Option<ModeChoice>,
    /// Do not attach the scheduler programs behind rein_runqueue_latency_seconds: they run
    /// on every context switch of the node (see `cargo xtask bench metrics`).
    #[arg(long)]
    pub no_runqueue_latency: bool,
    /// Shaper: default credit a quiet container may spend at once, in ms at its rate
    /// (default 2; per container: --egress-burst).
    #[arg(long, value_name = "MS", value_parser = parse_ms)]
    pub egress_burst_ms: Option<u64>,
    /// Shaper: wait behind earlier packets (debt, when policing) above which TCP gets
    /// congestion notification (default 4 when pacing, 40 when policing).
    #[arg(long, value_name = "MS", value_parser = parse_ms)]
    pub egress_mark_ms: Option<u64>,
    /// Shaper: wait (debt) at which a packet is dropped instead of queued (default 40 when
    /// pacing, 200 when policing).
    #[arg(long, value_name = "MS", value_parser = parse_ms)]
    pub egress_horizon_ms: Option<u64>,
    /// Shaper: how a container's own flows share its limit. isolated: a sparse flow (ping,
    /// DNS, a request on an idle connection) departs at once while the bulk fills the
    /// limit; fifo: one queue per container, as Cilium's bandwidth manager (default
    /// isolated).
    #[arg(long, value_enum, value_name = "ORDER")]
    pub egress_flows: Option<Flows>,
}

/// Milliseconds from 0 to 60000 (fractions allowed), as nanoseconds.
fn parse_ms(s: &str) -> Result<u64, String> {
    match s.trim().parse::<f64>() {
        Ok(ms) if (0.0..=60_000.0).contains(&ms) => Ok((ms * 1e6) as u64),
        _ => Err(format!(
            "{s:?}: give milliseconds from 0 to 60000, e.g. 2 or 0.5"
        )),
    }
}

/// `rein agent --egress-mode`: how egress limits are enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModeChoice {
    /// Pace with departure times where `fq` can be installed, else police.
    #[default]
    Auto,
    /// Pace with departure times released by `fq`; refuse `--egress` without it.
    Edt,
    /// Police with congestion notification, even where `fq` exists.
    Police,
}

/// The agent's configuration file (TOML). Every key is optional; flags override it.
#[derive(Debug, Default, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// API socket path.
    pub socket: Option<PathBuf>,
    /// Managed cgroup root.
    pub root: Option<PathBuf>,
    /// Uids besides root that may use the API.
    #[serde(default)]
    pub allowed_uids: Vec<u32>,
    /// Prometheus endpoint address.
    pub metrics_addr: Option<SocketAddr>,
    /// The `node` label of every series (default: the host name).
    pub node_name: Option<NodeName>,
    /// Devices to pace egress on (default: those with a default route).
    pub egress_devs: Option<Vec<String>>,
    /// bpffs directory for rein's pinned maps and links.
    pub bpf_dir: Option<PathBuf>,
    /// auto, edt or police (default auto).
    pub egress_mode: Option<ModeChoice>,
    /// isolated or fifo (default isolated).
    pub egress_flows: Option<Flows>,
    /// The most a runtime's annotations may ask for, by flag name (`cpus = "4"`).
    #[serde(default)]
    pub hook_ceiling: crate::api::LimitMap,
}

impl Config {
    /// Reads `path`; a missing default config file is not an error, a missing explicit one is.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Self> {
        let (path, explicit) = match path {
            Some(p) => (p.to_owned(), true),
            None => (PathBuf::from(Defaults::CONFIG), false),
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                return Ok(Self::default());
            }
            Err(e) => return Err(e).with_context(|| format!("reading config {}", path.display())),
        };
        toml::from_str(&text).with_context(|| {
            format!(
                "config {} is not valid; accepted keys: socket (path), root (path), \
                 allowed_uids (list of numbers), metrics_addr (\"IP:PORT\"), node_name \
                 (\"name\"), egress_devs (list of device names), bpf_dir (path), egress_mode \
                 (\"auto\", \"edt\" or \"police\"), egress_flows (\"isolated\" or \"fifo\"), [hook_ceiling] (flag = \"value\", e.g. \
                 cpus = \"4\")",
                path.display()
            )
        })
    }
}

/// Settled settings after flags, config and defaults.
#[derive(Debug, Clone)]
pub struct Settings {
    pub socket: PathBuf,
    pub root: PathBuf,
    pub allowed_uids: Vec<u32>,
    pub metrics_addr: SocketAddr,
    /// The `node` label of every series.
    pub node_name: NodeName,
    /// Devices whose root qdisc becomes `fq`, so paced packets leave on time.
    pub egress_devs: Vec<String>,
    /// bpffs directory for pinned maps and links; one per managed root.
    pub bpf_dir: PathBuf,
    /// The shaper's burst, mark and horizon for new limits, where given (the rest are the
    /// egress mode's defaults).
    pub shaper: ShaperOverrides,
    /// Which egress mode to use (`--egress-mode`).
    pub egress_mode: ModeChoice,
    /// Attach the scheduler programs (run-queue latency histograms).
    pub runqueue_latency: bool,
    /// The most a runtime's annotations may ask for (config `[hook_ceiling]`).
    pub hook_ceiling: Limits,
}

impl Settings {
    /// Resolves `args` over the config file (theirs or the default one) over [`Defaults`].
    /// `socket` is the global `--socket`, which counts as given when it is not the default.
    pub fn resolve(args: AgentArgs, socket: PathBuf) -> anyhow::Result<Self> {
        let cfg = Config::load(args.config.as_deref())?;
        let socket = if socket == Path::new(Defaults::SOCKET) {
            cfg.socket.unwrap_or(socket)
        } else {
            socket
        };
        let mut ceiling = cfg.hook_ceiling;
        for (flag, value) in Defaults::HOOK_CEILING {
            ceiling
                .entry(flag.to_owned())
                .or_insert_with(|| crate::api::LimitText::One(value.to_owned()));
        }
        let hook_ceiling =
            crate::api::limits_from_map(&ceiling).context("the agent config's [hook_ceiling]")?;
        let node_name = match args.node_name.or(cfg.node_name) {
            Some(n) => n,
            None => NodeName::from_host()?,
        };
        let egress_devs = if !args.egress_devs.is_empty() {
            args.egress_devs
        } else {
            cfg.egress_devs.unwrap_or_else(super::default_route_devices)
        };
        if let Some(dev) = egress_devs.iter().find(|d| !valid_device_name(d)) {
            bail!(
                "--egress-dev {dev:?} is not a network device name (1 to 15 characters, no '/' or spaces)"
            );
        }
        let mut allowed_uids = cfg.allowed_uids;
        allowed_uids.extend(args.allow_uids);
        Ok(Self {
            socket,
            root: args
                .root
                .or(cfg.root)
                .unwrap_or_else(|| PathBuf::from(Defaults::ROOT)),
            allowed_uids,
            metrics_addr: args
                .metrics_addr
                .or(cfg.metrics_addr)
                .unwrap_or(Defaults::METRICS_ADDR),
            node_name,
            egress_devs,
            bpf_dir: args
                .bpf_dir
                .or(cfg.bpf_dir)
                .unwrap_or_else(|| PathBuf::from(Defaults::BPF_DIR)),
            shaper: ShaperOverrides {
                burst_ns: args.egress_burst_ms,
                mark_ns: args.egress_mark_ms,
                horizon_ns: args.egress_horizon_ms,
                flows: args.egress_flows.or(cfg.egress_flows),
            },
            egress_mode: args.egress_mode.or(cfg.egress_mode).unwrap_or_default(),
            runqueue_latency: !args.no_runqueue_latency,
            hook_ceiling,
        })
    }
}

impl Settings {
    /// The settings as (key, value) text, in the config file's keys: what `rein config
    /// check` prints and the agent logs at start.
    pub fn describe(&self) -> Vec<(&'static str, String)> {
        let path = |p: &Path| p.display().to_string();
        let list = |v: &[String]| v.join(",");
        vec![
            ("socket", path(&self.socket)),
            ("root", path(&self.root)),
            ("bpf_dir", path(&self.bpf_dir)),
            (
                "allowed_uids",
                list(
                    &self
                        .allowed_uids
                        .iter()
                        .map(u32::to_string)
                        .collect::<Vec<_>>(),
                ),
            ),
            ("metrics_addr", self.metrics_addr.to_string()),
            ("node_name", self.node_name.to_string()),
            ("egress_devs", list(&self.egress_devs)),
            (
                "egress_mode",
                format!("{:?}", self.egress_mode).to_lowercase(),
            ),
            ("runqueue_latency", self.runqueue_latency.to_string()),
            ("hook_ceiling", self.hook_ceiling.to_string()),
        ]
    }
}

/// A Linux interface name: 1 to 15 bytes (IFNAMSIZ - 1), no '/', ':' or whitespace.
fn valid_device_name(name: &str) -> bool {
    (1..16).contains(&name.len())
        && !name
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// deploy/rein.toml (installed as /etc/rein/rein.toml) names every key, commented out:
    /// uncommented, it parses, and every key has its value.
    #[test]
    fn the_shipped_config_names_every_key_and_parses_uncommented() {
        let shipped = include_str!("../../../deploy/rein.toml");
        let c: Config = toml::from_str(shipped).unwrap();
        assert_eq!(c, Config::default(), "every line is commented out");
        let uncommented: String = shipped
            .lines()
            .map(|l| match l.strip_prefix('#') {
                Some(rest) if rest.starts_with(|ch: char| ch.is_ascii_lowercase() || ch == '[') => {
                    rest
                }
                _ => l,
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let c: Config = toml::from_str(&uncommented).unwrap();
        assert!(
            c.socket.is_some()
                && c.root.is_some()
                && c.metrics_addr.is_some()
                && c.node_name.is_some()
                && c.egress_devs.is_some()
                && c.bpf_dir.is_some()
                && c.egress_mode.is_some()
                && c.egress_flows.is_some()
                && !c.hook_ceiling.is_empty(),
            "a key is missing from deploy/rein.toml: {c:?}"
        );
        // allowed_uids defaults to empty: it must be present as a key.
        assert!(uncommented.contains("\nallowed_uids = "));
        // The defaults it shows are the agent's.
        assert_eq!(c.socket.as_deref(), Some(Path::new(Defaults::SOCKET)));
        assert_eq!(c.root.as_deref(), Some(Path::new(Defaults::ROOT)));
        assert_eq!(c.bpf_dir.as_deref(), Some(Path::new(Defaults::BPF_DIR)));
        assert_eq!(c.metrics_addr, Some(Defaults::METRICS_ADDR));
    }

    #[test]
    fn config_parses_and_rejects_unknown_keys() {
        let c: Config =
            toml::from_str("socket = \"/tmp/r.sock\"\nallowed_uids = [1000]\n").unwrap();
        assert_eq!(c.socket, Some(PathBuf::from("/tmp/r.sock")));
        assert_eq!(c.allowed_uids, vec![1000]);
        assert!(toml::from_str::<Config>("sokcet = \"x\"").is_err());
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("rein.toml");
        std::fs::write(&bad, "root = 5").unwrap();
        let err = format!("{:#}", Config::load(Some(&bad)).unwrap_err());
        assert!(err.contains("accepted keys"), "{err}");
        assert!(Config::load(Some(&dir.path().join("missing.toml"))).is_err());
    }

    #[test]
    fn annotations_are_bounded_by_default_and_the_config_raises_the_bound() {
        let asked = |pairs: &[(&str, &str)]| Limits::from_named_pairs(pairs.iter().copied());
        let ceiling_of = |text: &str| {
            let dir = tempfile::tempdir().unwrap();
            let cfg = dir.path().join("rein.toml");
            std::fs::write(&cfg, text).unwrap();
            let args = AgentArgs {
                config: Some(cfg),
                node_name: Some("n".parse().unwrap()),
                egress_devs: vec!["eth0".into()],
                ..AgentArgs::default()
            };
            Settings::resolve(args, PathBuf::from(Defaults::SOCKET))
                .unwrap()
                .hook_ceiling
        };
        let default = ceiling_of("");
        let check = crate::limits::ceiling::check;
        for pairs in [
            &[("priority", "critical")][..],
            &[("egress-burst", "1s")][..],
        ] {
            let e = check(&default, &asked(pairs).unwrap()).unwrap_err();
            assert!(e.to_string().contains("ceiling"), "{e}");
        }
        check(
            &default,
            &asked(&[("priority", "low"), ("egress-burst", "5ms")]).unwrap(),
        )
        .unwrap();
        let raised = ceiling_of("[hook_ceiling]\npriority = \"critical\"\ncpus = \"4\"\n");
        check(&raised, &asked(&[("priority", "critical")]).unwrap()).unwrap();
        assert!(check(&raised, &asked(&[("egress-burst", "1s")]).unwrap()).is_err());
        assert!(check(&raised, &asked(&[("cpus", "8")]).unwrap()).is_err());
    }

    #[test]
    fn a_flag_wins_over_the_config_which_wins_over_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("rein.toml");
        std::fs::write(
            &cfg,
            "root = \"/sys/fs/cgroup/cfg.slice\"\nmetrics_addr = \"127.0.0.1:1\"\n\
             egress_devs = [\"eth9\"]\nnode_name = \"n1\"\negress_flows = \"fifo\"\n",
        )
        .unwrap();
        let args = AgentArgs {
            config: Some(cfg),
            metrics_addr: Some("127.0.0.1:2".parse().unwrap()),
            egress_burst_ms: Some(3_000_000),
            ..AgentArgs::default()
        };
        let s = Settings::resolve(args, PathBuf::from(Defaults::SOCKET)).unwrap();
        assert_eq!(s.metrics_addr, "127.0.0.1:2".parse().unwrap(), "flag");
        assert_eq!(s.root, PathBuf::from("/sys/fs/cgroup/cfg.slice"), "config");
        assert_eq!(s.egress_devs, vec!["eth9"]);
        assert_eq!(s.bpf_dir, PathBuf::from(Defaults::BPF_DIR), "default");
        assert_eq!(s.socket, PathBuf::from(Defaults::SOCKET));
        assert_eq!(s.shaper.burst_ns, Some(3_000_000));
        assert_eq!(s.egress_mode, ModeChoice::Auto);
        assert_eq!(s.shaper.flows, Some(Flows::Fifo), "config");
        assert!(toml::from_str::<Config>("egress_flows = \"fair\"").is_err());
    }

    #[test]
    fn shaper_milliseconds_are_checked() {
        assert_eq!(parse_ms("0.5"), Ok(500_000));
        assert!(parse_ms("-1").unwrap_err().contains("0 to 60000"));
        assert!(parse_ms("x").is_err());
    }
}
