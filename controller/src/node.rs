//! One node's enforcement: a container's limits go to its cgroup files (`cgroup`) and its
//! network limits to the eBPF maps (`net`). This is the one place that applies a whole
//! [`Limits`] to the kernel and reads it back, so the API and the metrics see both halves.

use std::{
    collections::{HashMap, HashSet},
    fmt,
    sync::Mutex,
};

use controller_common::{POLICE, PolicerConfig, SET_PRIORITY, ShaperConfig};

/// Ingress policer bucket: 200 ms at the rate. Dropping is the only signal a receiver can
/// give, and TCP needs a deep bucket to average the rate right (shallow ones collapse it).
pub const INGRESS_BUCKET_NS: u64 = 200_000_000;

/// All of a container's eBPF map entries, read together (see [`Node::maps_of`]).
#[derive(Debug, Clone, Default)]
pub struct MapsView {
    pub shaper: Option<ShaperConfig>,
    pub policer: Option<PolicerConfig>,
    pub traffic: Option<controller_common::Traffic>,
    pub tcp: Option<controller_common::TcpStats>,
    pub delays: Option<controller_common::DelayHistogram>,
    pub runq: Option<controller_common::DelayHistogram>,
}

/// A container's entries in the eBPF maps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct NetState {
    shaper: Option<ShaperConfig>,
    policer: Option<PolicerConfig>,
}

use crate::{
    cgroup::{CgroupError, ContainerName, External, Labels, Tree},
    limits::{Bandwidth, Burst, Flag, LimitError, Limits},
    net::{
        netns::{self, NetnsId},
        programs::Datapath,
    },
};

/// How this node enforces egress limits, decided when the agent starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EgressMode {
    /// rein's program sets departure times and `fq` releases packets on time: on these host
    /// devices, and inside each shaped container's own network namespace.
    Edt { devices: Vec<String> },
    /// No `fq` to honour departure times: the program polices with congestion notification
    /// (less accurate for TCP, no delay histogram). Says why this mode was chosen.
    Police { why: String },
    /// `--egress` is refused, and why.
    Refused { why: String },
}

impl fmt::Display for EgressMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Edt { devices } => write!(f, "edt-fq on {}", devices.join(",")),
            Self::Police { why } => write!(f, "police-cn ({why})"),
            Self::Refused { why } => write!(f, "refused: {why}"),
        }
    }
}

/// The shaper's timing, the same for every container of a node (agent flags
/// `--egress-burst-ms`, `--egress-mark-ms`, `--egress-horizon-ms`; the burst also per
/// container with `--egress-burst`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShaperParams {
    /// Credit a quiet container may spend at once, in ns at its rate.
    pub burst_ns: u64,
    /// Wait behind earlier packets (debt, when policing) above which TCP gets congestion
    /// notification.
    pub mark_ns: u64,
    /// Wait (debt) at which a packet is dropped instead of queued.
    pub horizon_ns: u64,
}

impl ShaperParams {
    /// Pacing: 2 ms of burst is enough for TCP's bursts of a few segments and small against
    /// the 4 ms mark, so queueing delay stays in milliseconds; the 40 ms horizon (Cilium
    /// waits 2 s) only catches senders that ignore congestion notification, such as UDP.
    pub const EDT: Self = Self {
        burst_ns: 2_000_000,
        mark_ns: 4_000_000,
        horizon_ns: 40_000_000,
    };

    /// Policing: nothing holds packets back, so TCP's normal bursts show up as debt. Marking
    /// at 4 ms and dropping at 40 ms held TCP to 0.51 of 20 Mbit/s; 40 and 200 ms gave
    /// 0.996 (20 Mbit/s) and 1.03 (100 Mbit/s) in the test VM.
    pub const POLICE: Self = Self {
        burst_ns: 2_000_000,
        mark_ns: 40_000_000,
        horizon_ns: 200_000_000,
    };

    /// The defaults of `mode`, with what the operator gave instead.
    pub fn for_mode(mode: &EgressMode, given: ShaperOverrides) -> Self {
        let d = match mode {
            EgressMode::Police { .. } => Self::POLICE,
            _ => Self::EDT,
        };
        Self {
            burst_ns: given.burst_ns.unwrap_or(d.burst_ns),
            mark_ns: given.mark_ns.unwrap_or(d.mark_ns),
            horizon_ns: given.horizon_ns.unwrap_or(d.horizon_ns),
        }
    }
}

/// The shaper timings an operator gave on the command line; the rest are the mode's
/// defaults.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShaperOverrides {
    pub burst_ns: Option<u64>,
    pub mark_ns: Option<u64>,
    pub horizon_ns: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    /// A network limit was asked for but cannot be enforced here.
    #[error("{0}")]
    Unenforceable(LimitError),
    #[error("eBPF maps: {0}")]
    Datapath(String),
    /// A runtime's cgroup that rein cannot take over.
    #[error("cgroup {path}: {problem}")]
    Foreign {
        path: std::path::PathBuf,
        problem: String,
    },
}

impl From<LimitError> for NodeError {
    fn from(e: LimitError) -> Self {
        Self::Cgroup(CgroupError::Limit(e))
    }
}

pub struct Node {
    tree: Tree,
    /// rein's programs with their pinned maps; `None` when they could not be loaded.
    datapath: Option<Mutex<Datapath>>,
    mode: EgressMode,
    params: ShaperParams,
    /// Container network namespaces whose devices have `fq`, with those devices.
    paced_netns: Mutex<HashMap<NetnsId, Vec<String>>>,
    /// The most a runtime's registration may ask for (see `limits::ceiling`).
    hook_ceiling: Limits,
    /// Where the programs' links are pinned (for [`Node::repair`]).
    pin_dir: Option<std::path::PathBuf>,
}

/// Extended attribute holding the journal of a change in progress (see [`Node::set`]).
const PENDING_XATTR: &str = "trusted.rein.pending";

/// What a change overwrites, as it was before (see [`Node::set`]).
#[derive(serde::Serialize, serde::Deserialize)]
struct Journal {
    /// (file, value that restores it).
    files: Vec<(String, String)>,
    /// The priority class xattr, if it was set.
    priority: Option<String>,
    /// The shaper entry as [`shaper_words`], if there was one.
    shaper: Option<[u64; 6]>,
    /// The policer entry (rate, bucket), if there was one.
    policer: Option<[u64; 2]>,
}

fn shaper_words(c: ShaperConfig) -> [u64; 6] {
    [
        c.rate_bytes_per_sec,
        c.burst_ns,
        c.mark_ns,
        c.horizon_ns,
        u64::from(c.skb_priority),
        u64::from(c.flags),
    ]
}

fn shaper_from_words(w: [u64; 6]) -> ShaperConfig {
    ShaperConfig {
        rate_bytes_per_sec: w[0],
        burst_ns: w[1],
        mark_ns: w[2],
        horizon_ns: w[3],
        skb_priority: u32::try_from(w[4]).unwrap_or(0),
        flags: u32::try_from(w[5]).unwrap_or(0),
    }
}

/// The eBPF half of a set of limits, merged over what the map already holds.
fn shaper_config(
    l: &Limits,
    current: Option<ShaperConfig>,
    p: ShaperParams,
    police: bool,
) -> Option<ShaperConfig> {
    if l.egress.is_none() && l.priority.is_none() && l.egress_burst.is_none() {
        return current;
    }
    let mut cfg = current.unwrap_or(ShaperConfig {
        burst_ns: p.burst_ns,
        mark_ns: p.mark_ns,
        horizon_ns: p.horizon_ns,
        ..ShaperConfig::default()
    });
    if let Some(rate) = l.egress {
        cfg.rate_bytes_per_sec = rate.bytes_per_second();
    }
    if let Some(b) = l.egress_burst {
        cfg.burst_ns = b.ns();
    }
    if let Some(p) = l.priority {
        cfg.skb_priority = p.skb_priority();
        cfg.flags |= SET_PRIORITY;
    }
    set_police(&mut cfg, police);
    Some(cfg)
}

fn set_police(cfg: &mut ShaperConfig, police: bool) {
    if police {
        cfg.flags |= POLICE;
    } else {
        cfg.flags &= !POLICE;
    }
}

impl Node {
    /// `datapath` is the loaded programs and the egress mode they run in, or why the
    /// programs could not be loaded. Shaping entries left by an earlier agent are switched to
    /// this mode.
    pub fn new(
        tree: Tree,
        datapath: Result<(Datapath, EgressMode), String>,
        given: ShaperOverrides,
    ) -> Self {
        let (datapath, mode) = match datapath {
            Ok((d, mode)) => (Some(Mutex::new(d)), mode),
            Err(why) => (
                None,
                EgressMode::Refused {
                    why: format!("rein's eBPF programs are not loaded: {why}"),
                },
            ),
        };
        let params = ShaperParams::for_mode(&mode, given);
        let node = Self {
            tree,
            datapath,
            mode,
            params,
            paced_netns: Mutex::new(HashMap::new()),
            hook_ceiling: Limits::default(),
            pin_dir: None,
        };
        if let Err(e) = node.align_mode() {
            tracing::warn!("cannot switch adopted shaping entries to this mode: {e}");
        }
        node
    }

    /// Bounds what registrations by a runtime's hook may ask for.
    pub fn with_hook_ceiling(mut self, ceiling: Limits) -> Self {
        self.hook_ceiling = ceiling;
        self
    }

    /// Where the links are pinned; [`Node::repair`] re-attaches programs whose pins are
    /// gone.
    pub fn with_pin_dir(mut self, dir: &std::path::Path) -> Self {
        self.pin_dir = Some(dir.to_owned());
        self
    }

    /// Puts back what was removed behind the agent's back, and says what it did: the
    /// programs' links on the managed root (a removed pin detaches them: shaping and
    /// counting would stop) and map entries of cgroups that no longer exist. `fq` on the
    /// egress devices is [`Node::repair_fq`]'s.
    pub fn repair(&self) -> Vec<String> {
        let mut report = Vec::new();
        if let Some(pin_dir) = &self.pin_dir {
            let root = self.tree.root().to_owned();
            match self.with_datapath(|dp| {
                let skb = dp.ensure_attached(&root, pin_dir)?;
                Ok((skb, dp.repair_sock_ops(&root, pin_dir)?))
            }) {
                Ok(Some((skb, tcp))) => {
                    if skb == crate::net::programs::Attachment::Attached {
                        report.push("the programs' pinned links were removed: re-attached".into());
                    }
                    if tcp {
                        report.push(
                            "the sock_ops program's pinned link was removed: re-attached".into(),
                        );
                    }
                }
                Ok(None) => {}
                Err(e) => report.push(format!("cannot re-attach the programs: {e}")),
            }
        }
        report.extend(self.forget_orphans());
        report
    }

    /// Reinstalls `fq` on egress devices that lost it (edt mode): without it departure
    /// times are ignored. Async, for the agent's periodic task (netlink round trips).
    pub async fn repair_fq(&self) -> Vec<String> {
        let EgressMode::Edt { devices } = &self.mode else {
            return Vec::new();
        };
        let mut report = Vec::new();
        for d in devices {
            if crate::net::qdisc::has_fq(d).await.is_ok_and(|has| !has) {
                report.push(match crate::net::qdisc::install_fq(d).await {
                    Ok(_) => format!("fq was removed from {d}: reinstalled (egress pacing)"),
                    Err(e) => format!("fq was removed from {d} and cannot be reinstalled: {e}"),
                });
            }
        }
        report
    }

    /// Forgets the map entries of cgroups that are neither a container (being created
    /// included) nor registered: a cgroup removed behind the agent's back.
    fn forget_orphans(&self) -> Vec<String> {
        use std::os::unix::fs::MetadataExt as _;
        // The entries first, the cgroups second: a container created in between has its
        // directory before its entries, so it is never taken for an orphan.
        let Ok(Some(shaped)) = self.with_datapath(|dp| dp.shaped()) else {
            return Vec::new();
        };
        let mut live: HashSet<u64> = std::fs::read_dir(self.tree.root())
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.metadata().ok().filter(|m| m.is_dir()).map(|m| m.ino()))
            .collect();
        if let Some(r) = self.tree.registry() {
            live.extend(r.list().iter().filter_map(|n| r.get(n)).map(|e| e.id));
        }
        shaped
            .into_iter()
            .filter(|(id, _)| !live.contains(id))
            .map(|(id, _)| match self.with_datapath(|dp| dp.forget(id)) {
                Ok(_) => {
                    format!("cgroup {id} was removed behind the agent's back: forgot its limits")
                }
                Err(e) => format!(
                    "cgroup {id} was removed behind the agent's back; forgetting it failed: {e}"
                ),
            })
            .collect()
    }

    fn police(&self) -> bool {
        matches!(self.mode, EgressMode::Police { .. })
    }

    /// Rewrites adopted shaping entries whose mode bit differs from this agent's mode.
    /// Entries still on the other mode's default mark and horizon take this mode's (the
    /// pacing defaults collapse TCP when policing); timings an operator chose stay.
    fn align_mode(&self) -> Result<(), NodeError> {
        let police = self.police();
        let other = if police {
            ShaperParams::EDT
        } else {
            ShaperParams::POLICE
        };
        let params = self.params;
        self.with_datapath(|dp| {
            for (id, mut cfg) in dp.shaped()? {
                let before = cfg;
                set_police(&mut cfg, police);
                if cfg.flags != before.flags
                    && (cfg.mark_ns, cfg.horizon_ns) == (other.mark_ns, other.horizon_ns)
                {
                    cfg.mark_ns = params.mark_ns;
                    cfg.horizon_ns = params.horizon_ns;
                }
                if cfg != before {
                    dp.set_shaping(id, cfg)?;
                }
            }
            Ok(())
        })?;
        Ok(())
    }

    /// The egress mode as it applies to one container: in edt mode, also the devices of
    /// the container's own network namespace that rein gave `fq`.
    pub fn egress_mode_of(&self, name: &ContainerName) -> String {
        let inside = self.netns_devices(name);
        match (&self.mode, inside.is_empty()) {
            (EgressMode::Edt { .. }, false) => format!(
                "{} and {} in the container's network namespace",
                self.mode,
                inside.join(",")
            ),
            _ => self.mode.to_string(),
        }
    }

    /// Devices that got `fq` in the network namespaces of the container's processes.
    fn netns_devices(&self, name: &ContainerName) -> Vec<String> {
        let Ok(paced) = self.paced_netns.lock() else {
            return Vec::new();
        };
        let mut out: Vec<String> = self
            .container_netns(name)
            .into_keys()
            .filter_map(|ns| paced.get(&ns))
            .flatten()
            .cloned()
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// The network namespaces of a container's processes other than the agent's own, each
    /// with one process in it.
    fn container_netns(&self, name: &ContainerName) -> HashMap<NetnsId, u32> {
        let own = netns::of(None).ok();
        let mut found = HashMap::new();
        for pid in self.tree.pids(name).unwrap_or_default() {
            if let Ok(ns) = netns::of(Some(pid))
                && Some(ns) != own
            {
                found.entry(ns).or_insert(pid);
            }
        }
        found
    }

    /// Gives `fq` to the network namespaces of shaped containers that do not have it yet
    /// (edt mode only), and forgets namespaces no shaped container uses any more. Called on
    /// every limit change and periodically, because a container's processes enter their
    /// namespace after its cgroup is made. Returns what it did, for the log.
    pub fn pace_container_netns(&self) -> Vec<String> {
        if !matches!(self.mode, EgressMode::Edt { .. }) {
            return Vec::new();
        }
        let mut report = Vec::new();
        let mut seen = HashSet::new();
        for name in self.tree.list().unwrap_or_default() {
            let shaped = self
                .cgroup_id(&name)
                .and_then(|id| Ok(self.with_datapath(|dp| dp.shaping(id))?.flatten()))
                .is_ok_and(|c| c.is_some_and(|c| c.rate_bytes_per_sec > 0));
            if !shaped {
                continue;
            }
            for (ns, pid) in self.container_netns(&name) {
                seen.insert(ns);
                let known = self.paced_netns.lock().is_ok_and(|p| p.contains_key(&ns));
                if known {
                    continue;
                }
                match netns::install_fq_in(pid) {
                    Ok(devices) => {
                        report.push(format!(
                            "{name}: fq on {} in its network namespace",
                            devices.join(",")
                        ));
                        if let Ok(mut p) = self.paced_netns.lock() {
                            p.insert(ns, devices);
                        }
                    }
                    Err(e) => report.push(format!(
                        "{name}: cannot install fq in its network namespace (pid {pid}): {e}; \
                         its departure times are honoured only on the host's devices"
                    )),
                }
            }
        }
        // A namespace that is gone may have its inode reused by a new one.
        if let Ok(mut p) = self.paced_netns.lock() {
            p.retain(|ns, _| seen.contains(ns));
        }
        report
    }

    pub fn tree(&self) -> &Tree {
        &self.tree
    }

    /// Refuses what this node cannot enforce, before anything is written.
    fn check_enforceable(&self, l: &Limits) -> Result<(), NodeError> {
        if let (Some(v), None) = (l.ingress, &self.datapath) {
            return Err(NodeError::Unenforceable(LimitError::Value {
                flag: Flag::Ingress,
                value: v.to_string(),
                problem: format!("ingress limits cannot be enforced here: {}", self.mode),
            }));
        }
        if let (Some(v), EgressMode::Refused { why }) = (l.egress, &self.mode) {
            return Err(NodeError::Unenforceable(LimitError::Value {
                flag: Flag::Egress,
                value: v.to_string(),
                problem: format!("egress limits cannot be enforced here: {why}"),
            }));
        }
        Ok(())
    }

    fn with_datapath<T>(
        &self,
        f: impl FnOnce(&mut Datapath) -> Result<T, crate::net::programs::ProgramError>,
    ) -> Result<Option<T>, NodeError> {
        let Some(dp) = &self.datapath else {
            return Ok(None);
        };
        let mut dp = dp
            .lock()
            .map_err(|_| NodeError::Datapath("lock poisoned".into()))?;
        f(&mut dp)
            .map(Some)
            .map_err(|e| NodeError::Datapath(e.to_string()))
    }

    fn cgroup_id(&self, name: &ContainerName) -> Result<u64, NodeError> {
        use std::os::unix::fs::MetadataExt as _;
        let path = self.tree.path(name);
        std::fs::metadata(&path)
            .map(|m| m.ino())
            .map_err(|_| NodeError::Cgroup(CgroupError::NotFound(name.clone())))
    }

    /// The container's entries in the shaper and policer maps.
    fn net_state(&self, id: u64) -> Result<NetState, NodeError> {
        Ok(self
            .with_datapath(|dp| {
                Ok(NetState {
                    shaper: dp.shaping(id)?,
                    policer: dp.policing(id)?,
                })
            })?
            .unwrap_or_default())
    }

    /// Writes (or clears) both map entries of a container.
    fn write_net(&self, id: u64, net: NetState) -> Result<(), NodeError> {
        self.with_datapath(|dp| {
            match net.shaper {
                Some(cfg) => dp.set_shaping(id, cfg)?,
                None => dp.clear_shaping(id)?,
            }
            match net.policer {
                Some(cfg) => dp.set_policing(id, cfg),
                None => dp.clear_policing(id),
            }
        })?;
        Ok(())
    }

    /// The map entries after applying `l` over `current`.
    fn planned(&self, l: &Limits, current: NetState) -> NetState {
        NetState {
            shaper: shaper_config(l, current.shaper, self.params, self.police()),
            policer: match l.ingress {
                Some(rate) => Some(PolicerConfig {
                    rate_bytes_per_sec: rate.bytes_per_second(),
                    bucket_ns: INGRESS_BUCKET_NS,
                }),
                None => current.policer,
            },
        }
    }

    /// Creates a container: cgroup files and map entries are all in place before the
    /// container appears under its name (see [`Tree::create`]).
    pub fn create(&self, name: &ContainerName, l: &Limits) -> Result<(), NodeError> {
        self.check_enforceable(l)?;
        let net = self.planned(l, NetState::default());
        let mut written = None;
        let created = self.tree.create(name, l, |_, id| {
            written = Some(id);
            if net != NetState::default() {
                self.write_net(id, net)?;
            }
            self.with_datapath(|dp| dp.watch(id))?;
            Ok::<(), NodeError>(())
        });
        if let (Err(_), Some(id)) = (&created, written) {
            let _ = self.with_datapath(|dp| dp.forget(id));
        }
        created.map(drop)
    }

    /// Removes what creations cut short by an agent's death left: their cgroups, map
    /// entries and intents. Call at start, before serving requests. Returns what it did, for
    /// the log.
    pub fn remove_staged(&self) -> Vec<String> {
        self.tree
            .staged()
            .into_iter()
            .map(|staged| {
                let outcome = self
                    .tree
                    .remove_staged(&staged)
                    .map_err(NodeError::from)
                    .and_then(|()| match &staged.cgroup {
                        Some((_, id)) => self.with_datapath(|dp| dp.forget(*id)).map(drop),
                        None => Ok(()),
                    });
                let name = &staged.name;
                match outcome {
                    Ok(()) => format!("{name}: removed, an earlier agent died creating it"),
                    Err(e) => format!(
                        "{name}: an earlier agent died creating it; removing it failed: {e}"
                    ),
                }
            })
            .collect()
    }

    /// Records the run-queue latency of every container in the tree (after a restart, or
    /// for containers made before the scheduler programs ran).
    pub fn watch_all(&self) -> Result<(), NodeError> {
        for name in self.tree.list()? {
            let id = self.cgroup_id(&name)?;
            self.with_datapath(|dp| dp.watch(id))?;
        }
        Ok(())
    }

    /// Attaches the sock_ops program (TCP statistics) to the managed root.
    pub fn start_tcp_stats(&self, pin_dir: &std::path::Path) -> Result<(), String> {
        let root = self.tree.root().to_owned();
        self.with_datapath(|dp| dp.ensure_sock_ops(&root, pin_dir).map(drop))
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "rein's eBPF programs are not loaded".to_owned())
    }

    /// Loads and attaches the scheduler programs with offsets from the kernel's BTF.
    pub fn start_sched_latency(&self, pin_dir: &std::path::Path) -> Result<(), String> {
        let offsets = crate::net::programs::kernel_offsets().map_err(|e| e.to_string())?;
        self.with_datapath(|dp| dp.start_sched_latency(offsets, pin_dir))
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "rein's eBPF programs are not loaded".to_owned())
    }

    /// Changes limits live: the maps first (one update each, undone if the files fail), then
    /// the files (all or nothing by themselves).
    ///
    /// An agent that dies half way must not leave half a change: what the change would
    /// overwrite (file values, the priority class, both map entries) is first written to the
    /// container's cgroup as a journal (xattr `trusted.rein.pending`), and removed once the
    /// change is complete. The next agent finds a journal left behind and puts it back
    /// ([`Node::undo_interrupted`]), so the container has its last acknowledged limits.
    pub fn set(&self, name: &ContainerName, l: &Limits) -> Result<(), NodeError> {
        self.check_enforceable(l)?;
        let id = self.cgroup_id(name)?;
        let before = self.net_state(id)?;
        let after = self.planned(l, before);
        let journal = Journal {
            files: self.tree.undo_for(name, l)?,
            priority: self.tree.mark(name, crate::cgroup::PRIORITY_XATTR),
            shaper: before.shaper.map(shaper_words),
            policer: before.policer.map(|p| [p.rate_bytes_per_sec, p.bucket_ns]),
        };
        let text = serde_json::to_string(&journal)
            .map_err(|e| NodeError::Datapath(format!("journal: {e}")))?;
        self.tree.set_mark(name, PENDING_XATTR, &text)?;
        if after != before
            && let Err(e) = self.write_net(id, after)
        {
            let _ = self.tree.clear_mark(name, PENDING_XATTR);
            return Err(e);
        }
        crate::failpoint::hit("set:after-maps");
        if let Err(e) = self.tree.set(name, l) {
            if after != before {
                let _ = self.write_net(id, before);
            }
            let _ = self.tree.clear_mark(name, PENDING_XATTR);
            return Err(e.into());
        }
        crate::failpoint::hit("set:after-files");
        self.tree.clear_mark(name, PENDING_XATTR)?;
        Ok(())
    }

    /// Undoes the changes an earlier agent died in the middle of (their journals): files,
    /// priority class and map entries go back to what they were before. Call at start,
    /// before serving requests. Returns what it did, for the log.
    pub fn undo_interrupted(&self) -> Vec<String> {
        let mut report = Vec::new();
        for name in self.tree.list().unwrap_or_default() {
            let Some(text) = self.tree.mark(&name, PENDING_XATTR) else {
                continue;
            };
            let outcome = serde_json::from_str::<Journal>(&text)
                .map_err(|e| format!("unreadable journal: {e}"))
                .and_then(|j| self.apply_journal(&name, &j));
            let _ = self.tree.clear_mark(&name, PENDING_XATTR);
            report.push(match outcome {
                Ok(()) => format!("{name}: undid a change an earlier agent did not finish"),
                Err(e) => format!("{name}: undoing an unfinished change failed: {e}"),
            });
        }
        report
    }

    fn apply_journal(&self, name: &ContainerName, j: &Journal) -> Result<(), String> {
        let mut failures = self.tree.write_back(name, &j.files);
        let priority = match &j.priority {
            Some(p) => self.tree.set_mark(name, crate::cgroup::PRIORITY_XATTR, p),
            None => self
                .tree
                .clear_mark(name, crate::cgroup::PRIORITY_XATTR)
                .or(Ok(())),
        };
        failures.extend(priority.err().map(|e| e.to_string()));
        let net = NetState {
            shaper: j.shaper.map(shaper_from_words),
            policer: j.policer.map(|[rate, bucket]| PolicerConfig {
                rate_bytes_per_sec: rate,
                bucket_ns: bucket,
            }),
        };
        let written = self.cgroup_id(name).and_then(|id| self.write_net(id, net));
        failures.extend(written.err().map(|e| e.to_string()));
        if failures.is_empty() {
            Ok(())
        } else {
            Err(failures.join("; "))
        }
    }

    /// The container's limits as the kernel holds them: cgroup files and the shaper map.
    pub fn limits(&self, name: &ContainerName) -> Result<Limits, NodeError> {
        let id = self.cgroup_id(name)?;
        let net = self.net_state(id)?;
        self.limits_with(name, net.shaper, net.policer)
    }

    /// The cgroup files' limits completed with the network limits of the given map entries
    /// (as [`Node::maps_of`] read them).
    pub fn limits_with(
        &self,
        name: &ContainerName,
        shaper: Option<ShaperConfig>,
        policer: Option<PolicerConfig>,
    ) -> Result<Limits, NodeError> {
        let mut l = self.tree.limits(name)?;
        if let Some(cfg) = shaper
            && cfg.rate_bytes_per_sec > 0
        {
            l.egress =
                Bandwidth::from_bits_per_second(cfg.rate_bytes_per_sec.saturating_mul(8)).ok();
            // Shown only when it differs from the node's default, as it was set.
            if cfg.burst_ns != self.params.burst_ns {
                l.egress_burst = Burst::from_ns(cfg.burst_ns).ok();
            }
        }
        if let Some(cfg) = policer
            && cfg.rate_bytes_per_sec > 0
        {
            l.ingress =
                Bandwidth::from_bits_per_second(cfg.rate_bytes_per_sec.saturating_mul(8)).ok();
        }
        Ok(l)
    }

    /// All of a container's eBPF map entries, read under one lock with one lookup of its
    /// cgroup id (a scrape of 1000 containers makes thousands of these reads). Empty when
    /// the programs are not loaded.
    pub fn maps_of(&self, name: &ContainerName) -> Result<MapsView, NodeError> {
        let id = self.cgroup_id(name)?;
        Ok(self
            .with_datapath(|dp| {
                Ok(MapsView {
                    shaper: dp.shaping(id)?,
                    policer: dp.policing(id)?,
                    traffic: dp.traffic_of(id)?,
                    tcp: dp.tcp_of(id)?,
                    delays: dp.delays_of(id)?,
                    runq: dp.runq_of(id)?,
                })
            })?
            .unwrap_or_default())
    }

    /// Takes over a container whose cgroup its runtime made (`rein hook createRuntime`):
    /// records it in the registry, attaches rein's programs to its cgroup, and applies `l`
    /// (maps, then cgroup files). On failure nothing of it stays recorded or attached; the
    /// cgroup itself is the runtime's and is never removed.
    pub fn register(
        &self,
        name: &ContainerName,
        cgroup: &std::path::Path,
        labels: Labels,
        l: &Limits,
    ) -> Result<(), NodeError> {
        use std::os::unix::fs::MetadataExt as _;
        crate::limits::ceiling::check(&self.hook_ceiling, l)?;
        self.check_enforceable(l)?;
        crate::cgroup::Plan::for_limits(l)?;
        let foreign = |problem: &str| NodeError::Foreign {
            path: cgroup.to_owned(),
            problem: problem.to_owned(),
        };
        let registry = self
            .tree
            .registry()
            .ok_or_else(|| foreign("this agent keeps no registry of runtimes' containers"))?;
        if self.tree.root().join(name.as_str()).exists() || self.tree.external(name).is_some() {
            return Err(CgroupError::Exists(name.clone()).into());
        }
        let inside_mount = cgroup.starts_with(self.tree.mount())
            && !cgroup
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir));
        if !inside_mount {
            return Err(foreign(&format!(
                "is not a path inside the cgroup2 mount {}",
                self.tree.mount().display()
            )));
        }
        if cgroup.starts_with(self.tree.root()) {
            return Err(foreign(
                "is inside rein's managed root; containers there are made with `rein run`, and \
                 rein's programs already run on them",
            ));
        }
        let meta = std::fs::metadata(cgroup)
            .map_err(|e| foreign(&format!("{e}; the runtime has not made it (yet)")))?;
        if !meta.is_dir() || !crate::cgroup::is_cgroup2(cgroup) {
            return Err(foreign("is not a cgroup v2 directory"));
        }
        let ext = External {
            name: name.clone(),
            cgroup: cgroup.to_owned(),
            id: meta.ino(),
            labels,
        };
        registry.add(&ext)?;
        let applied = (|| {
            self.with_datapath(|dp| dp.attach_external(cgroup, &registry.dir_of(name)))?;
            let net = self.planned(l, NetState::default());
            if net != NetState::default() {
                self.write_net(ext.id, net)?;
            }
            self.with_datapath(|dp| dp.watch(ext.id))?;
            self.tree.set(name, l)?;
            Ok(())
        })();
        if let Err(e) = applied {
            let _ = registry.remove(name);
            let _ = self.with_datapath(|dp| dp.forget(ext.id));
            return Err(e);
        }
        Ok(())
    }

    /// Forgets a runtime's container: its record and links (detaching rein's programs) and
    /// its map entries. Its cgroup, if it still exists, stays with the runtime, with the
    /// cgroup limits rein wrote.
    fn unregister(&self, ext: &External) -> Result<(), NodeError> {
        if let Some(r) = self.tree.registry() {
            r.remove(&ext.name)?;
        }
        self.with_datapath(|dp| dp.forget(ext.id))?;
        Ok(())
    }

    /// Unregisters `name` if it is a runtime's container registered with `cgroup` (the
    /// poststop hook); anything else is [`CgroupError::NotFound`].
    pub fn unregister_if(
        &self,
        name: &ContainerName,
        cgroup: &std::path::Path,
    ) -> Result<(), NodeError> {
        match self.tree.external(name) {
            Some(ext) if ext.cgroup == cgroup => self.unregister(&ext),
            _ => Err(CgroupError::NotFound(name.clone()).into()),
        }
    }

    /// Unregisters runtimes' containers whose cgroup is gone (deleted while the agent was
    /// down, or without the poststop hook). Returns what it did, for the log.
    pub fn prune_external(&self) -> Vec<String> {
        let Some(registry) = self.tree.registry() else {
            return Vec::new();
        };
        let mut report = Vec::new();
        let abandoned = registry.remove_abandoned();
        if abandoned > 0 {
            report.push(format!(
                "removed {abandoned} record(s) an agent left half-written"
            ));
        }
        for name in registry.list() {
            let outcome = match registry.get(&name) {
                Some(ext) if ext.is_live() => continue,
                Some(ext) => self.unregister(&ext),
                // Not a complete record (records are renamed into place whole, so someone
                // else's directory): nothing to forget in the maps without its id.
                None => registry.remove(&name).map_err(NodeError::from),
            };
            report.push(match outcome {
                Ok(()) => format!("{name}: its cgroup is gone; unregistered"),
                Err(e) => format!("{name}: its cgroup is gone, but unregistering failed: {e}"),
            });
        }
        report
    }

    pub fn remove(&self, name: &ContainerName, force: bool) -> Result<(), NodeError> {
        if !self.tree.root().join(name.as_str()).is_dir()
            && let Some(ext) = self.tree.external(name)
        {
            return self.unregister(&ext);
        }
        let id = self.cgroup_id(name)?;
        self.tree.remove(name, force)?;
        // The cgroup is gone: leave no map entry behind for it.
        self.with_datapath(|dp| dp.forget(id))?;
        Ok(())
    }
}
