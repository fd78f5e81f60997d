//! One node's enforcement: a container's limits go to its cgroup files (`cgroup`) and its
//! network limits to the eBPF maps (`net`). This is the one place that applies a whole
//! [`Limits`] to the kernel and reads it back, so the API and the metrics see both halves.

use std::sync::Mutex;

use controller_common::{PolicerConfig, SET_PRIORITY, ShaperConfig};

/// Ingress policer bucket: 200 ms at the rate. Dropping is the only signal a receiver can
/// give, and TCP needs a deep bucket to average the rate right (shallow ones collapse it).
pub const INGRESS_BUCKET_NS: u64 = 200_000_000;

/// A container's entries in the eBPF maps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct NetState {
    shaper: Option<ShaperConfig>,
    policer: Option<PolicerConfig>,
}

use crate::{
    cgroup::{CgroupError, ContainerName, Tree},
    limits::{Bandwidth, Flag, LimitError, Limits},
    net::programs::Datapath,
};

/// The shaper's timing, the same for every container of a node (agent flags
/// `--egress-burst-ms`, `--egress-mark-ms`, `--egress-horizon-ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShaperParams {
    /// Credit a quiet container may spend at once, in ns at its rate.
    pub burst_ns: u64,
    /// Wait behind earlier packets above which TCP gets congestion notification.
    pub mark_ns: u64,
    /// Wait at which a packet is dropped instead of queued.
    pub horizon_ns: u64,
}

impl Default for ShaperParams {
    /// 2 ms of burst is enough for TCP's bursts of a few segments and small against the 4 ms
    /// mark, so queueing delay stays in milliseconds; the 40 ms horizon (Cilium waits 2 s)
    /// only catches senders that ignore congestion notification, such as UDP floods.
    fn default() -> Self {
        Self {
            burst_ns: 2_000_000,
            mark_ns: 4_000_000,
            horizon_ns: 40_000_000,
        }
    }
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
}

impl From<LimitError> for NodeError {
    fn from(e: LimitError) -> Self {
        Self::Cgroup(CgroupError::Limit(e))
    }
}

pub struct Node {
    tree: Tree,
    /// rein's programs with their pinned maps; `None` when they could not be loaded (or no
    /// egress device has `fq` to honour departure times), with the reason in `no_datapath`.
    datapath: Option<Mutex<Datapath>>,
    no_datapath: String,
    params: ShaperParams,
    /// Egress devices whose root qdisc is fq.
    paced: Vec<String>,
}

/// The eBPF half of a set of limits, merged over what the map already holds.
fn shaper_config(
    l: &Limits,
    current: Option<ShaperConfig>,
    p: ShaperParams,
) -> Option<ShaperConfig> {
    if l.egress.is_none() && l.priority.is_none() {
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
    if let Some(p) = l.priority {
        cfg.skb_priority = p.skb_priority();
        cfg.flags |= SET_PRIORITY;
    }
    Some(cfg)
}

impl Node {
    /// `datapath` is the loaded programs and the egress devices paced by `fq`, or why the
    /// programs could not be loaded.
    pub fn new(
        tree: Tree,
        datapath: Result<(Datapath, Vec<String>), String>,
        params: ShaperParams,
    ) -> Self {
        match datapath {
            Ok((d, paced)) => {
                let no_datapath = if paced.is_empty() {
                    "no egress device has the fq qdisc (give one with --egress-dev; `rein check` \
                     says whether sch_fq exists), so departure times would be ignored"
                        .to_owned()
                } else {
                    String::new()
                };
                Self {
                    tree,
                    datapath: Some(Mutex::new(d)),
                    no_datapath,
                    params,
                    paced,
                }
            }
            Err(why) => Self {
                tree,
                datapath: None,
                no_datapath: format!("rein's eBPF programs are not loaded: {why}"),
                params,
                paced: Vec::new(),
            },
        }
    }

    /// How egress limits are enforced here: `edt-fq on eth0` (earliest departure time set by
    /// rein's program, released by sch_fq on those devices), or `refused: <why>`.
    pub fn egress_mode(&self) -> String {
        if self.no_datapath.is_empty() {
            format!("edt-fq on {}", self.paced.join(","))
        } else {
            format!("refused: {}", self.no_datapath)
        }
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
                problem: format!(
                    "ingress limits cannot be enforced here: {}",
                    self.no_datapath
                ),
            }));
        }
        if let (Some(v), false) = (l.egress, self.no_datapath.is_empty()) {
            return Err(NodeError::Unenforceable(LimitError::Value {
                flag: Flag::Egress,
                value: v.to_string(),
                problem: format!(
                    "egress limits cannot be enforced here: {}",
                    self.no_datapath
                ),
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
            shaper: shaper_config(l, current.shaper, self.params),
            policer: match l.ingress {
                Some(rate) => Some(PolicerConfig {
                    rate_bytes_per_sec: rate.bytes_per_second(),
                    bucket_ns: INGRESS_BUCKET_NS,
                }),
                None => current.policer,
            },
        }
    }

    pub fn create(&self, name: &ContainerName, l: &Limits) -> Result<(), NodeError> {
        self.check_enforceable(l)?;
        self.tree.create(name, l)?;
        let net = self.planned(l, NetState::default());
        if net != NetState::default() {
            let written = self.cgroup_id(name).and_then(|id| self.write_net(id, net));
            if let Err(e) = written {
                let _ = self.tree.remove(name, true);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Changes limits live: the maps first (one update each, undone if the files fail), then
    /// the files (all or nothing by themselves).
    pub fn set(&self, name: &ContainerName, l: &Limits) -> Result<(), NodeError> {
        self.check_enforceable(l)?;
        let id = self.cgroup_id(name)?;
        let before = self.net_state(id)?;
        let after = self.planned(l, before);
        if after != before {
            self.write_net(id, after)?;
        }
        if let Err(e) = self.tree.set(name, l) {
            if after != before {
                let _ = self.write_net(id, before);
            }
            return Err(e.into());
        }
        Ok(())
    }

    /// The container's limits as the kernel holds them: cgroup files and the shaper map.
    pub fn limits(&self, name: &ContainerName) -> Result<Limits, NodeError> {
        let mut l = self.tree.limits(name)?;
        let id = self.cgroup_id(name)?;
        if let Some(cfg) = self.with_datapath(|dp| dp.shaping(id))?.flatten()
            && cfg.rate_bytes_per_sec > 0
        {
            l.egress =
                Bandwidth::from_bits_per_second(cfg.rate_bytes_per_sec.saturating_mul(8)).ok();
        }
        if let Some(cfg) = self.with_datapath(|dp| dp.policing(id))?.flatten()
            && cfg.rate_bytes_per_sec > 0
        {
            l.ingress =
                Bandwidth::from_bits_per_second(cfg.rate_bytes_per_sec.saturating_mul(8)).ok();
        }
        Ok(l)
    }

    pub fn remove(&self, name: &ContainerName, force: bool) -> Result<(), NodeError> {
        let id = self.cgroup_id(name)?;
        self.tree.remove(name, force)?;
        // The cgroup is gone: leave no map entry behind for it.
        self.with_datapath(|dp| dp.forget(id))?;
        Ok(())
    }

    /// The shaper's delay histogram of one container (summed over CPUs), if any.
    pub fn delays(
        &self,
        name: &ContainerName,
    ) -> Result<Option<controller_common::DelayHistogram>, NodeError> {
        let id = self.cgroup_id(name)?;
        Ok(self.with_datapath(|dp| dp.delays_of(id))?.flatten())
    }

    /// Network counters of one container (summed over CPUs), if the programs run.
    pub fn traffic(
        &self,
        name: &ContainerName,
    ) -> Result<Option<controller_common::Traffic>, NodeError> {
        let id = self.cgroup_id(name)?;
        Ok(self.with_datapath(|dp| dp.traffic_of(id))?.flatten())
    }
}
