//! The embedded eBPF object (built from `controller-ebpf` by `build.rs`) and its programs.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use aya::{
    Ebpf,
    maps::{HashMap, MapData, PerCpuHashMap},
    programs::{CgroupSkb, TestRun as _, TestRunOptions},
};
use aya_log::EbpfLogger;
use controller_common::{
    CHAIN_MAP, DELAY_MAP, DelayHistogram, FLOW_MAP, FLOW_PEAK_MAP, FlowPeak, GENERATION_MAP,
    HEALTH_MAP, HEALTH_TAIL_CALL_FAILED, HEALTH_TRAFFIC_FULL, MANAGED_MAP, OFFSETS_MAP, OPAQUE_MAP,
    POLICER_MAP, POLICER_STATE_MAP, PROG_COUNT_EGRESS, PROG_COUNT_INGRESS, PROG_EGRESS_STAGES,
    PolicerConfig, RUN_DELAY_MAP, RUNQ_MAP, SCRATCH_MAP, SHAPER_MAP, SHAPER_STATE_MAP, SOCK_MAP,
    STAGES_MAP, ShaperConfig, ShaperState, TCP_MAP, TRAFFIC_MAP, TcpStats, Traffic,
};

mod external;
mod links;
mod managed;
mod sched;
mod tcp;
mod test_run;

pub use links::linked_cgroup;
pub use sched::kernel_offsets;
pub use test_run::SelfTest;

/// A program of the object that is never attached: egress as it was before chains (the
/// socket's own cgroup, shaped and counted in one program), the yardstick of `cargo xtask
/// bench datapath`.
pub const PROG_BENCH_FLAT: &str = "rein_bench_flat";

/// The eBPF object file, aligned as aya's ELF parser needs.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/rein-ebpf"));

/// What went wrong with the programs, naming the program or map and the kernel's answer.
#[derive(Debug, thiserror::Error)]
pub enum ProgramError {
    #[error("loading rein's eBPF object into the kernel failed: {0}")]
    Load(#[source] aya::EbpfError),
    #[error("eBPF program {name} is missing from the embedded object")]
    Missing { name: &'static str },
    #[error("eBPF program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("eBPF map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("pinning under {path}: {problem}")]
    Pin { path: PathBuf, problem: String },
    #[error("self-test of {name}: {problem}")]
    SelfTest { name: &'static str, problem: String },
}

/// rein's loaded programs (cgroup_skb egress: count and shape; ingress: count) and their
/// maps. Loaded, not attached: attaching is the caller's decision (a cgroup, a mode).
pub struct Datapath {
    ebpf: Ebpf,
    /// Forwards the programs' aya-log records to `tracing` (target `rein::ebpf`).
    logger: Option<EbpfLogger<Box<dyn log::Log>>>,
    /// A change of the managed set whose generation bump failed: the programs may still use
    /// chains cached before it, so the bump is tried again (see `manage`).
    bump_pending: bool,
    /// Pinned links this agent made or switched to its programs (see `links`).
    taken_over: std::collections::HashSet<PathBuf>,
    /// How full the per-cgroup maps were when [`Datapath::keyed_ids`] last walked them.
    fill: Vec<MapFill>,
}

/// How full one of the maps with an entry per managed cgroup is: a full map means a new
/// cgroup goes unshaped or uncounted, so operators watch this before it happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapFill {
    pub map: &'static str,
    pub entries: usize,
    pub capacity: u32,
}

/// Maps the agent pins: all of the programs' maps, so that their contents outlive the agent
/// and so that the programs of two loads share them. An agent adopts the programs an earlier
/// one attached (pinned links) while loading its own egress stages, and the programs of both
/// loads must meet in the same maps (the chain an egress program hands to a stage through
/// `REIN_SCRATCH`, the socket chains `REIN_SOCK` keeps for sock_ops).
const PINNED_MAPS: [&str; 20] = [
    TRAFFIC_MAP,
    SHAPER_MAP,
    SHAPER_STATE_MAP,
    POLICER_MAP,
    POLICER_STATE_MAP,
    DELAY_MAP,
    RUNQ_MAP,
    MANAGED_MAP,
    GENERATION_MAP,
    CHAIN_MAP,
    STAGES_MAP,
    SCRATCH_MAP,
    SOCK_MAP,
    FLOW_MAP,
    FLOW_PEAK_MAP,
    RUN_DELAY_MAP,
    HEALTH_MAP,
    OPAQUE_MAP,
    OFFSETS_MAP,
    TCP_MAP,
];

/// Pins older versions made that this one does not use: the scheduler's map of runnable
/// tasks and its programs at wake-ups, from before it read the kernel's own `sched_info`,
/// and a program at task exit that the switch program's last run made needless.
const RETIRED_PINS: [&str; 4] = [
    "REIN_RUNNABLE",
    "links/rein_sched_wakeup",
    "links/rein_sched_wakeup_new",
    "links/rein_sched_exit",
];

fn pin_err(path: &Path, e: &dyn std::fmt::Display) -> ProgramError {
    ProgramError::Pin {
        path: path.to_owned(),
        problem: e.to_string(),
    }
}

/// Pins a program's new link at `path`, so the attachment outlives the agent. A link that
/// cannot be pinned is dropped here, which detaches it again.
fn pin_link<L>(link: L, path: &Path) -> Result<(), ProgramError>
where
    aya::programs::links::FdLink: TryFrom<L>,
    <aya::programs::links::FdLink as TryFrom<L>>::Error: std::fmt::Display,
{
    let fd = aya::programs::links::FdLink::try_from(link).map_err(|e| pin_err(path, &e))?;
    fd.pin(path).map(drop).map_err(|e| pin_err(path, &e))
}

/// Packets the programs could not handle in full, since the maps were made (see
/// `HEALTH_MAP` in controller-common).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Health {
    /// Of managed cgroups, not counted: the traffic map was full.
    pub traffic_map_full: u64,
    /// Egress packets passed unshaped and uncounted: a tail call between stages failed.
    pub tail_call_failed: u64,
}

/// Whether [`Datapath::ensure_attached`] found the programs already attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attachment {
    /// Pinned links of an earlier agent were found: its programs keep running.
    Adopted,
    /// This agent attached its programs and pinned the links.
    Attached,
}

impl Datapath {
    /// Loads the object and both programs with the default log bridge to `tracing`.
    pub fn load() -> Result<Self, ProgramError> {
        Self::load_with_logger(Box::new(TracingBridge))
    }

    /// Loads the object and both programs; eBPF log records go to `logger`.
    pub fn load_with_logger(logger: Box<dyn log::Log>) -> Result<Self, ProgramError> {
        Self::load_from(aya::EbpfLoader::new(), logger)
    }

    /// Loads with the maps pinned under `pin_dir` (the agent's `/sys/fs/bpf/rein`): maps an
    /// earlier agent pinned there are reused, so counters and shaping configuration survive
    /// restarts; missing ones are created and pinned.
    pub fn load_pinned(pin_dir: &Path) -> Result<Self, ProgramError> {
        std::fs::create_dir_all(pin_dir).map_err(|e| ProgramError::Pin {
            path: pin_dir.to_owned(),
            problem: e.to_string(),
        })?;
        // Maps and links an older rein pinned that this one no longer has: nothing would
        // remove them, and a link's program would run on (unpinning detaches it).
        for retired in RETIRED_PINS {
            let _ = std::fs::remove_file(pin_dir.join(retired));
        }
        let paths: Vec<(&'static str, PathBuf)> =
            PINNED_MAPS.iter().map(|m| (*m, pin_dir.join(m))).collect();
        let mut loader = aya::EbpfLoader::new();
        for (name, path) in &paths {
            loader.map_pin_path(name, path.as_path());
        }
        // A map an earlier rein pinned with another layout (an upgrade changed its value,
        // size or type) cannot be shared: its pin goes, and this load makes it anew. The
        // earlier programs keep the old map until their links are switched to this agent's
        // programs (`ensure_attached` and the other adoptions).
        for _ in 0..=PINNED_MAPS.len() {
            match loader.load(OBJECT) {
                Err(aya::EbpfError::MapError(aya::maps::MapError::IncompatiblePinnedMap {
                    name,
                    property,
                    expected,
                    actual,
                })) if PINNED_MAPS.contains(&name.as_str()) => {
                    let pin = pin_dir.join(&name);
                    tracing::warn!(
                        "the pinned map {name} has another layout ({property} {actual}, this \
                         version needs {expected}): made anew, its contents are lost"
                    );
                    std::fs::remove_file(&pin).map_err(|e| pin_err(&pin, &e))?;
                }
                loaded => {
                    return Self::from_ebpf(
                        loaded.map_err(ProgramError::Load)?,
                        Box::new(TracingBridge),
                    );
                }
            }
        }
        Err(pin_err(pin_dir, &"pinned maps kept being incompatible"))
    }

    fn load_from(
        mut loader: aya::EbpfLoader<'_>,
        logger: Box<dyn log::Log>,
    ) -> Result<Self, ProgramError> {
        Self::from_ebpf(loader.load(OBJECT).map_err(ProgramError::Load)?, logger)
    }

    /// The loaded object: its log bridge, the egress stages and ingress loaded, the stages
    /// set.
    fn from_ebpf(mut ebpf: Ebpf, logger: Box<dyn log::Log>) -> Result<Self, ProgramError> {
        // A missing log map only costs the programs' messages; it does not stop counting.
        let logger = match EbpfLogger::init_with_logger(&mut ebpf, logger) {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::warn!("eBPF log forwarding unavailable: {e}");
                None
            }
        };
        let mut this = Self {
            ebpf,
            logger,
            bump_pending: false,
            taken_over: std::collections::HashSet::new(),
            fill: Vec::new(),
        };
        // The stages include the egress program itself (where a packet starts over).
        let names = PROG_EGRESS_STAGES.into_iter().chain([PROG_COUNT_INGRESS]);
        for name in names {
            this.program(name)?
                .load()
                .map_err(|source| ProgramError::Program { name, source })?;
        }
        this.set_stages()?;
        Ok(this)
    }

    /// Puts the egress stages into the program array the egress program tail-calls. The
    /// array is pinned, so an earlier agent's still attached egress program reaches this
    /// agent's stages from now on (both share the pinned maps).
    fn set_stages(&mut self) -> Result<(), ProgramError> {
        for (index, name) in (0u32..).zip(PROG_EGRESS_STAGES) {
            let fd = self
                .program(name)?
                .fd()
                .map_err(|source| ProgramError::Program { name, source })?
                .try_clone()
                .map_err(|e| ProgramError::Program {
                    name,
                    source: aya::programs::ProgramError::IOError(e),
                })?;
            let err = |source| ProgramError::Map {
                name: STAGES_MAP,
                source,
            };
            let mut stages =
                aya::maps::ProgramArray::try_from(self.map_mut(STAGES_MAP)?).map_err(err)?;
            stages.set(index, &fd, 0).map_err(err)?;
        }
        Ok(())
    }

    /// A program by name: [`PROG_COUNT_EGRESS`] and [`PROG_COUNT_INGRESS`] (the two the
    /// agent attaches), the egress stages they tail-call, or [`PROG_BENCH_FLAT`].
    pub fn program(&mut self, name: &'static str) -> Result<&mut CgroupSkb, ProgramError> {
        self.ebpf
            .program_mut(name)
            .ok_or(ProgramError::Missing { name })?
            .try_into()
            .map_err(|source| ProgramError::Program { name, source })
    }

    fn map_mut(&mut self, name: &'static str) -> Result<&mut aya::maps::Map, ProgramError> {
        self.ebpf.map_mut(name).ok_or(ProgramError::Map {
            name,
            source: aya::maps::MapError::InvalidName { name: name.into() },
        })
    }

    /// The value of `id` in the hash map `name`, if any.
    fn entry<V: aya::Pod>(
        &mut self,
        name: &'static str,
        id: u64,
    ) -> Result<Option<V>, ProgramError> {
        let err = |source| ProgramError::Map { name, source };
        let map = HashMap::<_, u64, V>::try_from(self.map_mut(name)?).map_err(err)?;
        match map.get(&id, 0) {
            Ok(v) => Ok(Some(v)),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(source) => Err(err(source)),
        }
    }

    fn set_entry<V: aya::Pod>(
        &mut self,
        name: &'static str,
        id: u64,
        v: V,
    ) -> Result<(), ProgramError> {
        let err = |source| ProgramError::Map { name, source };
        HashMap::<_, u64, V>::try_from(self.map_mut(name)?)
            .and_then(|mut m| m.insert(&id, &v, 0))
            .map_err(err)
    }

    /// Deletes `id` from the hash map `name`; an absent entry is not an error.
    fn remove_entry<V: aya::Pod>(
        &mut self,
        name: &'static str,
        id: u64,
    ) -> Result<(), ProgramError> {
        let removed =
            HashMap::<_, u64, V>::try_from(self.map_mut(name)?).and_then(|mut m| m.remove(&id));
        absent_ok(removed, name)
    }

    /// Starts (or changes) shaping of a cgroup's egress. The datapath reads the new values
    /// from the next packet on: a live change is one map update.
    pub fn set_shaping(&mut self, cgroup_id: u64, cfg: ShaperConfig) -> Result<(), ProgramError> {
        self.set_entry(SHAPER_MAP, cgroup_id, cfg)
    }

    /// The cgroup's egress shaping, if any.
    pub fn shaping(&mut self, cgroup_id: u64) -> Result<Option<ShaperConfig>, ProgramError> {
        self.entry(SHAPER_MAP, cgroup_id)
    }

    /// Every cgroup's egress shaping.
    pub fn shaped(&mut self) -> Result<Vec<(u64, ShaperConfig)>, ProgramError> {
        let err = |source| ProgramError::Map {
            name: SHAPER_MAP,
            source,
        };
        let map =
            HashMap::<_, u64, ShaperConfig>::try_from(self.map_mut(SHAPER_MAP)?).map_err(err)?;
        map.iter().map(|e| e.map_err(err)).collect()
    }

    /// Stops shaping a cgroup and forgets its pacing clock and its flows' peak share.
    pub fn clear_shaping(&mut self, cgroup_id: u64) -> Result<(), ProgramError> {
        self.remove_entry::<ShaperConfig>(SHAPER_MAP, cgroup_id)?;
        self.remove_entry::<FlowPeak>(FLOW_PEAK_MAP, cgroup_id)?;
        self.remove_entry::<ShaperState>(SHAPER_STATE_MAP, cgroup_id)
    }

    /// Starts (or changes) policing of a cgroup's ingress.
    pub fn set_policing(&mut self, cgroup_id: u64, cfg: PolicerConfig) -> Result<(), ProgramError> {
        self.set_entry(POLICER_MAP, cgroup_id, cfg)
    }

    /// The cgroup's ingress policing, if any.
    pub fn policing(&mut self, cgroup_id: u64) -> Result<Option<PolicerConfig>, ProgramError> {
        self.entry(POLICER_MAP, cgroup_id)
    }

    /// Stops policing a cgroup and forgets its bucket.
    pub fn clear_policing(&mut self, cgroup_id: u64) -> Result<(), ProgramError> {
        self.remove_entry::<PolicerConfig>(POLICER_MAP, cgroup_id)?;
        self.remove_entry::<ShaperState>(POLICER_STATE_MAP, cgroup_id)
    }

    /// Attaches both programs to the cgroup `dir` through links pinned in `pin_dir/links`,
    /// so they stay attached (shaping and counting) when the agent exits. If the pins exist,
    /// an earlier agent's links are taken over: switched to this agent's programs.
    pub fn ensure_attached(
        &mut self,
        dir: &Path,
        pin_dir: &Path,
    ) -> Result<Attachment, ProgramError> {
        use aya::programs::{CgroupAttachMode, CgroupSkbAttachType};
        let links = pin_dir.join("links");
        std::fs::create_dir_all(&links).map_err(|e| pin_err(&links, &e))?;
        let mut outcome = Attachment::Adopted;
        for (name, kind, file) in [
            (PROG_COUNT_EGRESS, CgroupSkbAttachType::Egress, "egress"),
            (PROG_COUNT_INGRESS, CgroupSkbAttachType::Ingress, "ingress"),
        ] {
            let pin = links.join(file);
            if self.take_over(&pin, name, dir)? {
                continue;
            }
            let cgroup = std::fs::File::open(dir).map_err(|e| pin_err(dir, &e))?;
            let prog = self.program(name)?;
            let id = prog
                .attach(cgroup, kind, CgroupAttachMode::Single)
                .map_err(|source| ProgramError::Program { name, source })?;
            let link = prog
                .take_link(id)
                .map_err(|source| ProgramError::Program { name, source })?;
            pin_link(link, &pin)?;
            self.made(&pin);
            outcome = Attachment::Attached;
        }
        Ok(outcome)
    }

    fn per_cpu_map<V: aya::Pod>(
        &self,
        name: &'static str,
    ) -> Result<PerCpuHashMap<&MapData, u64, V>, ProgramError> {
        let err = |source| ProgramError::Map { name, source };
        let map = self
            .ebpf
            .map(name)
            .ok_or_else(|| err(aya::maps::MapError::InvalidName { name: name.into() }))?;
        PerCpuHashMap::try_from(map).map_err(err)
    }

    /// `id`'s value in the per-CPU map `name`, its CPUs' copies folded with `merge`, if any.
    fn per_cpu_sum<V: aya::Pod + Default>(
        &self,
        name: &'static str,
        id: u64,
        merge: impl Fn(V, &V) -> V,
    ) -> Result<Option<V>, ProgramError> {
        match self.per_cpu_map::<V>(name)?.get(&id, 0) {
            Ok(per_cpu) => Ok(Some(per_cpu.iter().fold(V::default(), merge))),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(source) => Err(ProgramError::Map { name, source }),
        }
    }

    fn remove_per_cpu_entry<V: aya::Pod>(
        &mut self,
        name: &'static str,
        id: u64,
    ) -> Result<(), ProgramError> {
        let removed = PerCpuHashMap::<_, u64, V>::try_from(self.map_mut(name)?)
            .and_then(|mut m| m.remove(&id));
        absent_ok(removed, name)
    }

    /// One cgroup's counters, summed over CPUs (None before its first packet).
    pub fn traffic_of(&self, cgroup_id: u64) -> Result<Option<Traffic>, ProgramError> {
        self.per_cpu_sum(TRAFFIC_MAP, cgroup_id, |a: Traffic, t| a.merged(*t))
    }

    /// The delays the shaper imposed on one cgroup's packets, summed over CPUs.
    pub fn delays_of(&self, cgroup_id: u64) -> Result<Option<DelayHistogram>, ProgramError> {
        self.per_cpu_sum(DELAY_MAP, cgroup_id, DelayHistogram::merged)
    }

    /// Counters of every cgroup seen so far, summed over CPUs.
    pub fn traffic(&self) -> Result<Vec<(u64, Traffic)>, ProgramError> {
        let map_err = |source| ProgramError::Map {
            name: TRAFFIC_MAP,
            source,
        };
        let map = self.per_cpu_map::<Traffic>(TRAFFIC_MAP)?;
        map.iter()
            .map(|entry| {
                let (id, per_cpu) = entry.map_err(map_err)?;
                let sum = per_cpu.iter().fold(Traffic::default(), |a, t| a.merged(*t));
                Ok((id, sum))
            })
            .collect()
    }

    /// What the programs could not do, summed over CPUs.
    pub fn health(&self) -> Result<Health, ProgramError> {
        let err = |source| ProgramError::Map {
            name: HEALTH_MAP,
            source,
        };
        let map = self.ebpf.map(HEALTH_MAP).ok_or_else(|| {
            err(aya::maps::MapError::InvalidName {
                name: HEALTH_MAP.into(),
            })
        })?;
        let counters = aya::maps::PerCpuArray::<_, u64>::try_from(map).map_err(err)?;
        let sum = |index| -> Result<u64, ProgramError> {
            Ok(counters.get(&index, 0).map_err(err)?.iter().sum())
        };
        Ok(Health {
            traffic_map_full: sum(HEALTH_TRAFFIC_FULL)?,
            tail_call_failed: sum(HEALTH_TAIL_CALL_FAILED)?,
        })
    }

    /// Delivers pending eBPF log records to the logger.
    pub fn flush_logs(&mut self) {
        if let Some(l) = &mut self.logger {
            l.flush();
        }
    }
}

/// A map deletion that found no entry is success: aya reports it as KeyNotFound or as the
/// syscall's ENOENT depending on the map type.
fn absent_ok(r: Result<(), aya::maps::MapError>, name: &'static str) -> Result<(), ProgramError> {
    match r {
        Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        Err(aya::maps::MapError::SyscallError(e))
            if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
        {
            Ok(())
        }
        Err(source) => Err(ProgramError::Map { name, source }),
    }
}

fn total(all: &[(u64, Traffic)]) -> Traffic {
    all.iter()
        .fold(Traffic::default(), |a, (_, t)| a.merged(*t))
}

/// Sends aya-log records (which use the `log` crate) into `tracing`, so the programs'
/// messages appear in the agent's own log with its filters and format.
struct TracingBridge;

impl log::Log for TracingBridge {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let msg = record.args();
        match record.level() {
            log::Level::Error => tracing::error!(target: "rein::ebpf", "{msg}"),
            log::Level::Warn => tracing::warn!(target: "rein::ebpf", "{msg}"),
            log::Level::Info => tracing::info!(target: "rein::ebpf", "{msg}"),
            log::Level::Debug => tracing::debug!(target: "rein::ebpf", "{msg}"),
            log::Level::Trace => tracing::trace!(target: "rein::ebpf", "{msg}"),
        }
    }

    fn flush(&self) {}
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod verifier_budget;
