//! One node's enforcement: a container's limits go to its cgroup files (`cgroup`) and its
//! network limits to the eBPF maps (`net`). This is the one place that applies a whole
//! [`Limits`] to the kernel and reads it back, so the API, the metrics and `rein top` see
//! both halves the same way. The cgroup tree stays inside this module.
//!
//! From the ground up (no file imports one above it):
//! - `egress`, `journal`, `error`: pure parts: how network limits become map entries, the
//!   journal of a live change, the error type;
//! - this file: [`Node`] and the primitives the rest share (map entries, cgroup ids);
//! - `changes`: create, set and remove, each all or nothing across the agent's death;
//! - `recovery`: what an agent does at start and every second (undo, repair, adopt);
//! - `pacing`: `fq` inside containers' network namespaces;
//! - `runtime`: containers whose cgroup a runtime made (`rein hook`);
//! - `snapshot`: the one reader, a container as the kernel holds it.

mod changes;
mod egress;
mod error;
mod journal;
mod pacing;
mod recovery;
mod runtime;
mod snapshot;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::Mutex,
};

pub use egress::{EgressMode, Flows, INGRESS_BUCKET_NS, ShaperOverrides, ShaperParams};
pub use error::NodeError;
pub use runtime::Pod;
pub use snapshot::{Network, Snapshot};

/// Who asks for a change: root, or a uid the agent's `allowed_uids` lists, which may change
/// only rein's own containers, not a runtime's (those follow their annotations).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    Root,
    AllowedUser,
}

use self::egress::NetState;
use crate::{
    cgroup::{CgroupError, ContainerName, Tree},
    limits::{Flag, LimitError, Limits},
    net::{
        netns::NetnsId,
        programs::{Datapath, ProgramError},
    },
};

pub struct Node {
    tree: Tree,
    /// rein's programs with their pinned maps; `None` when they could not be loaded.
    datapath: Option<Mutex<Datapath>>,
    /// Chosen at start; a config reload may change an edt mode's devices, never its kind
    /// (switching kinds rewrites every shaping entry: a restart's work).
    mode: std::sync::RwLock<EgressMode>,
    params: ShaperParams,
    /// Container network namespaces whose devices have `fq`, with those devices.
    paced_netns: Mutex<HashMap<NetnsId, Vec<String>>>,
    /// The most a runtime's registration may ask for (see `limits::ceiling`); a config
    /// reload replaces it.
    hook_ceiling: std::sync::RwLock<Limits>,
    /// Where the programs' links are pinned (for [`Node::repair`]).
    pin_dir: Option<PathBuf>,
    /// Held while the registry of runtimes' containers changes: a pod's group goes with its
    /// last container, which must not race a container joining it.
    registrations: Mutex<()>,
    /// One lock per name: a change, creation, registration or removal of one container
    /// runs alone (its journal is one at a time), while other containers' go on.
    names: Mutex<HashMap<ContainerName, std::sync::Arc<Mutex<()>>>>,
    /// Whether the sock_ops and scheduler programs run: then a container without an entry
    /// in their maps has zeros (see `snapshot::Network`), not no data.
    tcp_recorded: std::sync::atomic::AtomicBool,
    runq_recorded: std::sync::atomic::AtomicBool,
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
            mode: std::sync::RwLock::new(mode),
            params,
            paced_netns: Mutex::new(HashMap::new()),
            hook_ceiling: std::sync::RwLock::new(Limits::default()),
            pin_dir: None,
            registrations: Mutex::new(()),
            names: Mutex::new(HashMap::new()),
            tcp_recorded: false.into(),
            runq_recorded: false.into(),
        };
        if let Err(e) = node.align_mode() {
            tracing::warn!("cannot switch adopted shaping entries to this mode: {e}");
        }
        node
    }

    /// The lock of `name` (see `names`); a name nobody holds is forgotten on the way.
    /// Refuses a change of a runtime's container to anyone but root; under the name's lock,
    /// so a registration cannot slip in between the check and the change.
    fn check_reach(&self, name: &ContainerName, caller: Caller) -> Result<(), NodeError> {
        if caller != Caller::Root && self.tree.external(name).is_some() {
            return Err(NodeError::RootOnly(name.clone()));
        }
        Ok(())
    }

    fn name_lock(&self, name: &ContainerName) -> Result<std::sync::Arc<Mutex<()>>, NodeError> {
        let mut names = self.names.lock().map_err(|_| NodeError::Poisoned)?;
        names.retain(|n, l| n == name || std::sync::Arc::strong_count(l) > 1);
        Ok(names.entry(name.clone()).or_default().clone())
    }

    /// Bounds what registrations by a runtime's hook may ask for.
    pub fn with_hook_ceiling(self, ceiling: Limits) -> Self {
        self.set_hook_ceiling(ceiling);
        self
    }

    /// Replaces the hook ceiling (a config reload): registrations from now on are checked
    /// against it; containers registered before keep their limits.
    pub fn set_hook_ceiling(&self, ceiling: Limits) {
        *self
            .hook_ceiling
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = ceiling;
    }

    /// The hook ceiling now.
    fn hook_ceiling(&self) -> Limits {
        self.hook_ceiling
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The egress mode now.
    pub fn mode(&self) -> EgressMode {
        self.mode
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Where the links are pinned; [`Node::repair`] re-attaches programs whose pins are
    /// gone.
    pub fn with_pin_dir(mut self, dir: &Path) -> Self {
        self.pin_dir = Some(dir.to_owned());
        self
    }

    /// Every container, sorted (containers still being created are not among them).
    pub fn names(&self) -> Result<Vec<ContainerName>, NodeError> {
        Ok(self.tree.list()?)
    }

    /// The managed cgroup root.
    pub fn root(&self) -> &Path {
        self.tree.root()
    }

    /// Attaches the sock_ops program (TCP statistics) to the managed root.
    pub fn start_tcp_stats(&self, pin_dir: &Path) -> Result<(), NodeError> {
        let root = self.tree.root().to_owned();
        self.datapath(|dp| dp.ensure_sock_ops(&root, pin_dir).map(drop))?;
        self.tcp_recorded
            .store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Loads and attaches the scheduler programs with offsets from the kernel's BTF.
    pub fn start_sched_latency(&self, pin_dir: &Path) -> Result<(), NodeError> {
        let offsets = crate::net::programs::kernel_offsets()?;
        self.datapath(|dp| dp.start_sched_latency(offsets, pin_dir))?;
        self.runq_recorded
            .store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Refuses what this node cannot enforce, before anything is written.
    fn check_enforceable(&self, l: &Limits) -> Result<(), NodeError> {
        if let (Some(v), None) = (l.ingress, &self.datapath) {
            return Err(NodeError::Unenforceable(LimitError::Value {
                flag: Flag::Ingress,
                value: v.to_string(),
                problem: format!("ingress limits cannot be enforced here: {}", self.mode()),
            }));
        }
        if let (Some(v), EgressMode::Refused { why }) = (l.egress, &self.mode()) {
            return Err(NodeError::Unenforceable(LimitError::Value {
                flag: Flag::Egress,
                value: v.to_string(),
                problem: format!("egress limits cannot be enforced here: {why}"),
            }));
        }
        Ok(())
    }

    /// Runs `f` on the datapath when the programs are loaded; `None` when they are not
    /// (map entries then neither exist nor matter).
    fn with_datapath<T>(
        &self,
        f: impl FnOnce(&mut Datapath) -> Result<T, ProgramError>,
    ) -> Result<Option<T>, NodeError> {
        let Some(dp) = &self.datapath else {
            return Ok(None);
        };
        let mut dp = dp.lock().map_err(|_| NodeError::Poisoned)?;
        Ok(Some(f(&mut dp)?))
    }

    /// What the programs could not do (packets uncounted or unshaped); None without
    /// programs.
    pub fn datapath_health(&self) -> Option<crate::net::programs::Health> {
        self.with_datapath(|dp| dp.health()).ok().flatten()
    }

    /// How full the per-cgroup maps were at the last per-second walk (empty without
    /// programs).
    pub fn datapath_fill(&self) -> Vec<crate::net::programs::MapFill> {
        self.with_datapath(|dp| Ok(dp.fill().to_vec()))
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    /// Hands the programs' pending log records to the agent's log.
    pub fn flush_datapath_logs(&self) {
        let _ = self.with_datapath(|dp| {
            dp.flush_logs();
            Ok(())
        });
    }

    /// Like [`Node::with_datapath`], for what cannot be done without the programs.
    fn datapath<T>(
        &self,
        f: impl FnOnce(&mut Datapath) -> Result<T, ProgramError>,
    ) -> Result<T, NodeError> {
        self.with_datapath(f)?.ok_or_else(|| NodeError::NoDatapath {
            why: self.mode().to_string(),
        })
    }

    /// The container's cgroup id (the inode of its directory), which keys the maps.
    fn cgroup_id(&self, name: &ContainerName) -> Result<u64, NodeError> {
        Self::id_at(name, &self.tree.path(name))
    }

    /// The id of `name`'s cgroup at `dir` (found already).
    fn id_at(name: &ContainerName, dir: &Path) -> Result<u64, NodeError> {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata(dir)
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
        current.planned(l, self.params, &self.mode())
    }
}
