//! The one reader: a container as the kernel holds it now (its cgroup files and its eBPF
//! map entries), assembled in one place for everything that shows a container: the
//! metrics, the API's answers and through them `rein ls`, `rein stats` and `rein top`.
//! Nothing here reads the agent's own memory as truth.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use controller_common::{DelayHistogram, TcpStats, Traffic};

use super::{Node, NodeError, egress::NetState};
use crate::{
    cgroup::{CgroupError, ContainerName, Entry, Kind, Labels, Tree, Usage, files::Dir},
    limits::{Bandwidth, Burst, Limits},
};

/// How much of a container's limits a snapshot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    /// Every limit (what the API answers, `rein ls` and `rein why` show).
    All,
    /// Only the limits the metrics export: CPU quota, memory limit and threshold, pids, and
    /// the network limits (the others are left unset). A scrape reads these four files
    /// instead of twelve and an attribute per container.
    Exported,
}

/// What reading a set of snapshots cost: the breakdown of a scrape.
#[derive(Debug, Default, Clone, Copy)]
pub struct ReadCost {
    /// Cgroup files read, and their bytes.
    pub files: u64,
    pub bytes: u64,
    /// Time spent looking up the eBPF maps.
    pub maps: Duration,
}

/// A container now: limits, usage and what the eBPF programs saw.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub name: ContainerName,
    /// Its cgroup's id (the inode of its directory): what the eBPF maps are keyed by.
    pub id: u64,
    /// A container or a group (whose figures cover all its members).
    pub kind: Kind,
    /// The group it is in, if any.
    pub group: Option<ContainerName>,
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

/// What the eBPF programs recorded for one container. A part whose programs run is zero
/// until the container's first event, so every series exists from the container's creation
/// on (Prometheus's guidelines: a network panel shows a container that sent nothing yet);
/// it is `None` only when its programs do not run.
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
        let entry = self
            .tree
            .find(name)
            .ok_or_else(|| CgroupError::NotFound(name.clone()))?;
        self.snapshot_of(entry)
    }

    /// The snapshot of an entry found already: everything is read at its directory.
    fn snapshot_of(&self, entry: Entry) -> Result<Snapshot, NodeError> {
        let mut dir =
            Dir::open(&entry.dir).map_err(|_| CgroupError::NotFound(entry.name.clone()))?;
        let mut maps_time = Duration::ZERO;
        self.read_snapshot(entry, &mut dir, Detail::All, &mut maps_time)
    }

    /// The snapshot of `entry` read through `dir` (opened at its directory).
    fn read_snapshot(
        &self,
        entry: Entry,
        dir: &mut Dir,
        detail: Detail,
        maps_time: &mut Duration,
    ) -> Result<Snapshot, NodeError> {
        let name = &entry.name;
        let id = dir.ino().map_err(|_| CgroupError::NotFound(name.clone()))?;
        let maps_start = Instant::now();
        let relaxed = std::sync::atomic::Ordering::Relaxed;
        let (tcp_on, runq_on) = (
            self.tcp_recorded.load(relaxed),
            self.runq_recorded.load(relaxed),
        );
        let (net, network) = self
            .with_datapath(|dp| {
                let shaper = dp.shaping(id)?;
                Ok((
                    NetState {
                        shaper,
                        policer: dp.policing(id)?,
                    },
                    // The cgroup_skb programs count every container the datapath runs for;
                    // the shaper's delays exist where the container has a shaper entry.
                    Network {
                        traffic: Some(dp.traffic_of(id)?.unwrap_or_default()),
                        tcp: dp.tcp_of(id)?.or_else(|| tcp_on.then(TcpStats::default)),
                        delays: dp
                            .delays_of(id)?
                            .or_else(|| shaper.is_some().then(DelayHistogram::default)),
                        runq: dp
                            .runq_of(id)?
                            .or_else(|| runq_on.then(DelayHistogram::default)),
                    },
                ))
            })?
            .unwrap_or_default();
        *maps_time += maps_start.elapsed();
        let labels = if entry.dir.starts_with(self.tree.root()) {
            Labels::default()
        } else {
            self.tree
                .external(name)
                .map(|e| e.labels)
                .unwrap_or_default()
        };
        Ok(Snapshot {
            id,
            cgroup: self.tree.kernel_path(&entry.dir),
            labels,
            limits: self.with_network_limits(
                match detail {
                    Detail::All => Tree::limits_at(dir)?,
                    Detail::Exported => Tree::exported_limits_at(dir)?,
                },
                net,
            )?,
            usage: crate::cgroup::read_usage(dir).map_err(CgroupError::from)?,
            network,
            kind: entry.kind,
            group: entry.group,
            name: name.clone(),
            dir: entry.dir,
        })
    }

    /// `name`'s snapshot and those of the groups above it, nearest first (what `rein why`
    /// compares over a window).
    pub fn snapshot_chain(&self, name: &ContainerName) -> Result<Vec<Snapshot>, NodeError> {
        let mut chain = vec![self.snapshot(name)?];
        while let Some(group) = chain.last().and_then(|s| s.group.clone())
            && chain.len() <= crate::cgroup::MAX_DEPTH
        {
            chain.push(self.snapshot(&group)?);
        }
        Ok(chain)
    }

    /// Every container and group now, in one walk of the tree; one removed while it is read
    /// is left out.
    pub fn snapshots(&self) -> Result<Vec<Snapshot>, NodeError> {
        Ok(self.all_snapshots(Detail::All).0)
    }

    /// Every container and group now, with only the limits the metrics export (see
    /// [`Detail::Exported`]): what a scrape reads.
    pub fn exported_snapshots(&self) -> (Vec<Snapshot>, ReadCost) {
        self.all_snapshots(Detail::Exported)
    }

    fn all_snapshots(&self, detail: Detail) -> (Vec<Snapshot>, ReadCost) {
        // One reader, so one buffer, for every file of every container.
        let mut dir: Option<Dir> = None;
        let mut cost = ReadCost::default();
        let mut snapshots = Vec::new();
        for e in self.tree.entries() {
            let d = match &mut dir {
                Some(d) => match d.reopen(&e.dir) {
                    Ok(()) => d,
                    Err(_) => continue,
                },
                None => match Dir::open(&e.dir) {
                    Ok(d) => dir.insert(d),
                    Err(_) => continue,
                },
            };
            if let Ok(s) = self.read_snapshot(e, d, detail, &mut cost.maps) {
                snapshots.push(s);
            }
        }
        (cost.files, cost.bytes) = dir.as_ref().map_or((0, 0), Dir::counted);
        (snapshots, cost)
    }

    /// The container's limits as the kernel holds them: cgroup files and the maps.
    pub fn limits(&self, name: &ContainerName) -> Result<Limits, NodeError> {
        self.limits_of(&self.entry(name)?)
    }

    /// [`Node::limits`] of an entry found already: its files read through one directory.
    pub fn limits_of(&self, entry: &Entry) -> Result<Limits, NodeError> {
        let not_found = || CgroupError::NotFound(entry.name.clone());
        let mut dir = Dir::open(&entry.dir).map_err(|_| not_found())?;
        let id = dir.ino().map_err(|_| not_found())?;
        let net = self.net_state(id)?;
        self.with_network_limits(Tree::limits_at(&mut dir)?, net)
    }

    /// Where `name` is: its kind, group and cgroup directory.
    pub fn entry(&self, name: &ContainerName) -> Result<Entry, NodeError> {
        Ok(self
            .tree
            .find(name)
            .ok_or_else(|| CgroupError::NotFound(name.clone()))?)
    }

    /// Every container and group, groups before their members (`rein ls` draws the tree).
    pub fn entries(&self) -> Vec<Entry> {
        self.tree.entries()
    }

    /// The cgroup files' limits completed with the network limits of the map entries.
    fn with_network_limits(&self, mut l: Limits, net: NetState) -> Result<Limits, NodeError> {
        if let Some(cfg) = net.shaper
            && cfg.rate_bytes_per_sec > 0
        {
            l.egress =
                Bandwidth::from_bits_per_second(cfg.rate_bytes_per_sec.saturating_mul(8)).ok();
            // Shown only when it differs from the node's default, as it was set.
            if cfg.burst_ns != self.params.burst_ns {
                l.egress_burst = Burst::from_ns(cfg.burst_ns).ok();
            }
        }
        if let Some(cfg) = net.policer
            && cfg.rate_bytes_per_sec > 0
        {
            l.ingress =
                Bandwidth::from_bits_per_second(cfg.rate_bytes_per_sec.saturating_mul(8)).ok();
        }
        Ok(l)
    }
}
