//! The one reader: a container as the kernel holds it now (its cgroup files and its eBPF
//! map entries), assembled in one place for everything that shows a container: the
//! metrics, the API's answers and through them `rein ls`, `rein stats` and `rein top`.
//! Nothing here reads the agent's own memory as truth.

use std::path::PathBuf;

use controller_common::{DelayHistogram, PolicerConfig, ShaperConfig, TcpStats, Traffic};

use super::{Node, NodeError, egress::NetState};
use crate::{
    cgroup::{ContainerName, Labels, Usage},
    limits::{Bandwidth, Burst, Limits},
};

/// A container now: limits, usage and what the eBPF programs saw.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub name: ContainerName,
    /// Its cgroup directory.
    pub dir: PathBuf,
    /// Its cgroup as the kernel names it (`/rein.slice/web`): cAdvisor's `id` label.
    pub cgroup: String,
    /// Kubernetes labels its runtime's hook gave (empty for rein's own containers).
    pub labels: Labels,
    pub limits: Limits,
    pub usage: Usage,
    pub network: Network,
}

/// What the eBPF programs recorded for one container; each part is `None` until its first
/// event (or when the programs do not run).
#[derive(Debug, Clone, Default)]
pub struct Network {
    /// Bytes and packets in and out, and the shaper's and policer's outcomes.
    pub traffic: Option<Traffic>,
    /// TCP round-trip times and retransmissions (sock_ops).
    pub tcp: Option<TcpStats>,
    /// Delays the egress shaper imposed.
    pub delays: Option<DelayHistogram>,
    /// Run-queue latency of the container's tasks.
    pub runq: Option<DelayHistogram>,
}

impl Node {
    /// A container as the kernel holds it now: files and map entries, the maps read under
    /// one lock with one lookup of its cgroup id (a scrape of 1000 containers makes
    /// thousands of these reads).
    pub fn snapshot(&self, name: &ContainerName) -> Result<Snapshot, NodeError> {
        let id = self.cgroup_id(name)?;
        let (net, network) = self
            .with_datapath(|dp| {
                Ok((
                    NetState {
                        shaper: dp.shaping(id)?,
                        policer: dp.policing(id)?,
                    },
                    Network {
                        traffic: dp.traffic_of(id)?,
                        tcp: dp.tcp_of(id)?,
                        delays: dp.delays_of(id)?,
                        runq: dp.runq_of(id)?,
                    },
                ))
            })?
            .unwrap_or_default();
        Ok(Snapshot {
            dir: self.tree.path(name),
            cgroup: self.tree.cgroup_path(name),
            labels: self
                .tree
                .external(name)
                .map(|e| e.labels)
                .unwrap_or_default(),
            limits: self.limits_with(name, net.shaper, net.policer)?,
            usage: self.tree.usage(name)?,
            network,
            name: name.clone(),
        })
    }

    /// Every container now; one removed while it is read is left out.
    pub fn snapshots(&self) -> Result<Vec<Snapshot>, NodeError> {
        Ok(self
            .names()?
            .iter()
            .filter_map(|n| self.snapshot(n).ok())
            .collect())
    }

    /// The container's limits as the kernel holds them: cgroup files and the maps.
    pub fn limits(&self, name: &ContainerName) -> Result<Limits, NodeError> {
        let id = self.cgroup_id(name)?;
        let net = self.net_state(id)?;
        self.limits_with(name, net.shaper, net.policer)
    }

    /// The container's cgroup directory.
    pub fn dir(&self, name: &ContainerName) -> PathBuf {
        self.tree.path(name)
    }

    /// The cgroup files' limits completed with the network limits of the map entries.
    fn limits_with(
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
}
