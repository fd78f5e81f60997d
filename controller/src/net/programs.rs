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
    DELAY_MAP, DelayHistogram, OFFSETS_MAP, POLICER_MAP, POLICER_STATE_MAP, PROG_COUNT_EGRESS,
    PROG_COUNT_INGRESS, PolicerConfig, RUNQ_MAP, SHAPER_MAP, SHAPER_STATE_MAP, ShaperConfig,
    ShaperState, TCP_MAP, TRAFFIC_MAP, TcpStats, Traffic, WATCH_MAP,
};

mod external;
mod sched;
mod tcp;

pub use sched::kernel_offsets;

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
}

/// Maps the agent pins so their contents outlive it.
const PINNED_MAPS: [&str; 10] = [
    TRAFFIC_MAP,
    SHAPER_MAP,
    SHAPER_STATE_MAP,
    POLICER_MAP,
    POLICER_STATE_MAP,
    DELAY_MAP,
    RUNQ_MAP,
    WATCH_MAP,
    OFFSETS_MAP,
    TCP_MAP,
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

/// Whether [`Datapath::ensure_attached`] found the programs already attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attachment {
    /// Pinned links of an earlier agent were found: its programs keep running.
    Adopted,
    /// This agent attached its programs and pinned the links.
    Attached,
}

/// Result of [`Datapath::self_test`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct SelfTest {
    pub packets: u64,
    /// Mean run time of one program invocation as measured by the kernel.
    pub ns_per_packet: u64,
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
        let paths: Vec<(&'static str, PathBuf)> =
            PINNED_MAPS.iter().map(|m| (*m, pin_dir.join(m))).collect();
        let mut loader = aya::EbpfLoader::new();
        for (name, path) in &paths {
            loader.map_pin_path(name, path.as_path());
        }
        Self::load_from(loader, Box::new(TracingBridge))
    }

    fn load_from(
        mut loader: aya::EbpfLoader<'_>,
        logger: Box<dyn log::Log>,
    ) -> Result<Self, ProgramError> {
        let mut ebpf = loader.load(OBJECT).map_err(ProgramError::Load)?;
        // A missing log map only costs the programs' messages; it does not stop counting.
        let logger = match EbpfLogger::init_with_logger(&mut ebpf, logger) {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::warn!("eBPF log forwarding unavailable: {e}");
                None
            }
        };
        let mut this = Self { ebpf, logger };
        for name in [PROG_COUNT_EGRESS, PROG_COUNT_INGRESS] {
            this.program(name)?
                .load()
                .map_err(|source| ProgramError::Program { name, source })?;
        }
        Ok(this)
    }

    /// A loaded program by name ([`PROG_COUNT_EGRESS`] or [`PROG_COUNT_INGRESS`]).
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

    /// Stops shaping a cgroup and forgets its pacing clock.
    pub fn clear_shaping(&mut self, cgroup_id: u64) -> Result<(), ProgramError> {
        self.remove_entry::<ShaperConfig>(SHAPER_MAP, cgroup_id)?;
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
    /// an earlier agent's programs are running on the same pinned maps: they are left alone.
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
            if pin.exists() {
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
            outcome = Attachment::Attached;
        }
        Ok(outcome)
    }

    /// Forgets a removed cgroup: its shaping, pacing clock, counters and histograms.
    pub fn forget(&mut self, cgroup_id: u64) -> Result<(), ProgramError> {
        self.clear_shaping(cgroup_id)?;
        self.clear_policing(cgroup_id)?;
        self.unwatch(cgroup_id)?;
        self.remove_per_cpu_entry::<TcpStats>(TCP_MAP, cgroup_id)?;
        self.remove_per_cpu_entry::<Traffic>(TRAFFIC_MAP, cgroup_id)?;
        self.remove_per_cpu_entry::<DelayHistogram>(DELAY_MAP, cgroup_id)
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

    /// Delivers pending eBPF log records to the logger.
    pub fn flush_logs(&mut self) {
        if let Some(l) = &mut self.logger {
            l.flush();
        }
    }

    /// Runs both programs on a synthetic packet with BPF_PROG_TEST_RUN and checks that they
    /// pass it and count it: proof that the object is valid for the running kernel.
    pub fn self_test(&mut self, repeat: u32) -> Result<SelfTest, ProgramError> {
        let frame = test_frame();
        let before = total(&self.traffic()?);
        let mut ns = Duration::ZERO;
        for name in [PROG_COUNT_EGRESS, PROG_COUNT_INGRESS] {
            let opts = TestRunOptions {
                data_in: Some(&frame),
                repeat,
                ..TestRunOptions::new()
            };
            let run = self
                .program(name)?
                .test_run(opts)
                .map_err(|source| ProgramError::Program { name, source })?;
            if run.return_value != 1 {
                return Err(ProgramError::SelfTest {
                    name,
                    problem: format!("verdict {} instead of 1 (pass)", run.return_value),
                });
            }
            ns += run.duration;
        }
        let after = total(&self.traffic()?);
        let (n, len) = (u64::from(repeat), (frame.len() - ETH_HLEN) as u64);
        let want = Traffic {
            tx_bytes: before.tx_bytes + n * len,
            tx_packets: before.tx_packets + n,
            rx_bytes: before.rx_bytes + n * len,
            rx_packets: before.rx_packets + n,
            ..before
        };
        if after != want {
            return Err(ProgramError::SelfTest {
                name: PROG_COUNT_EGRESS,
                problem: format!("counted {after:?}, expected {want:?}"),
            });
        }
        self.flush_logs();
        let nanos = u64::try_from(ns.as_nanos()).unwrap_or(u64::MAX);
        Ok(SelfTest {
            packets: n,
            ns_per_packet: nanos / 2,
        })
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

const ETH_HLEN: usize = 14;

/// A 1514-byte Ethernet frame carrying an IPv4/UDP packet (the kernel's test runner strips
/// the Ethernet header, so the programs see a 1500-byte `skb->len`).
fn test_frame() -> Vec<u8> {
    let mut f = vec![0u8; ETH_HLEN + 1500];
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes()); // ETH_P_IP
    f[14] = 0x45; // IPv4, 20-byte header
    f[16..18].copy_from_slice(&1500u16.to_be_bytes()); // total length
    f[22] = 64; // TTL
    f[23] = 17; // UDP
    f[26..30].copy_from_slice(&[127, 0, 0, 1]);
    f[30..34].copy_from_slice(&[127, 0, 0, 1]);
    f
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
mod tests {
    //! These load real programs into the running kernel, so they need root (or CAP_BPF and
    //! CAP_NET_ADMIN). They attach nothing.
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<String>>>);

    impl log::Log for Capture {
        fn enabled(&self, _: &log::Metadata<'_>) -> bool {
            true
        }
        fn log(&self, record: &log::Record<'_>) {
            self.0.lock().unwrap().push(record.args().to_string());
        }
        fn flush(&self) {}
    }

    /// The agent pins maps by name: a map renamed in the eBPF crate and not here would be
    /// created unpinned at load, and its contents lost at every restart.
    #[test]
    fn every_map_the_agent_pins_is_in_the_object() {
        let object = aya_obj::Object::parse(OBJECT).unwrap();
        for name in PINNED_MAPS {
            assert!(
                object.maps.contains_key(name),
                "{name} is not a map of the eBPF object (it has {:?})",
                object.maps.keys().collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn programs_load_count_and_log_on_this_kernel() {
        let capture = Capture::default();
        let mut counting = Datapath::load_with_logger(Box::new(capture.clone())).unwrap();
        let result = counting.self_test(1000).unwrap();
        assert_eq!(result.packets, 1000);
        // A second run adds to the same entry instead of creating a new one.
        counting.self_test(10).unwrap();
        let traffic = counting.traffic().unwrap();
        assert_eq!(traffic.len(), 1, "one cgroup id expected, got {traffic:?}");
        assert_eq!(traffic[0].1.tx_packets, 1010);
        assert_eq!(traffic[0].1.rx_bytes, 1010 * 1500);
        let logs = capture.0.lock().unwrap();
        assert!(
            logs.iter()
                .any(|l| l.starts_with("rein: counting traffic of cgroup")),
            "the first packet of a cgroup is logged through aya-log; got {logs:?}"
        );
    }

    /// Offsets in `struct __sk_buff` (include/uapi/linux/bpf.h), stable UAPI.
    const SKB_PRIORITY: usize = 32;
    const SKB_TSTAMP: usize = 152;
    const SKB_SIZE: usize = 192;

    /// Runs the egress program once; returns (verdict, skb->tstamp, skb->priority) after it.
    fn run_egress(dp: &mut Datapath) -> (u32, u64, u32) {
        let frame = test_frame();
        let mut ctx = [0u8; SKB_SIZE];
        let opts = TestRunOptions {
            data_in: Some(&frame),
            ctx_out: Some(&mut ctx),
            ..TestRunOptions::new()
        };
        let r = dp
            .program(PROG_COUNT_EGRESS)
            .unwrap()
            .test_run(opts)
            .unwrap();
        let u64_at = |o: usize| u64::from_ne_bytes(ctx[o..o + 8].try_into().unwrap());
        let u32_at = |o: usize| u32::from_ne_bytes(ctx[o..o + 4].try_into().unwrap());
        (r.return_value, u64_at(SKB_TSTAMP), u32_at(SKB_PRIORITY))
    }

    /// The shaper's decisions on this kernel, packet by packet. At 150 kB/s a 1500-byte
    /// packet costs 10 ms, so back-to-back packets wait 10, 20, 30... ms behind the first
    /// (a hair less, as time passes between runs): delayed below the 20 ms mark, marked up to
    /// the 50 ms horizon, dropped beyond it.
    #[test]
    fn shaper_delays_then_marks_then_drops_by_departure_time() {
        let mut dp = Datapath::load_with_logger(Box::new(Capture::default())).unwrap();
        dp.self_test(1).unwrap();
        let id = dp.traffic().unwrap()[0].0;
        let ms = 1_000_000;
        let cfg = ShaperConfig {
            rate_bytes_per_sec: 150_000,
            burst_ns: 0,
            mark_ns: 20 * ms,
            horizon_ns: 50 * ms,
            skb_priority: 6,
            flags: controller_common::SET_PRIORITY,
        };
        dp.set_shaping(id, cfg).unwrap();
        assert_eq!(dp.shaping(id).unwrap(), Some(cfg));
        let runs: Vec<(u32, u64, u32)> = (0..8).map(|_| run_egress(&mut dp)).collect();
        let verdicts: Vec<u32> = runs.iter().map(|r| r.0).collect();
        // pass (clock starts); waits of ~10 and ~20 ms delayed; ~30, 40, 50 marked; then dropped.
        assert_eq!(verdicts, vec![1, 1, 1, 3, 3, 3, 2, 2], "{runs:?}");
        assert_eq!(
            runs[0].1, 0,
            "the first packet keeps its own departure time"
        );
        let gaps: Vec<u64> = runs[1..5].windows(2).map(|w| w[1].1 - w[0].1).collect();
        assert_eq!(
            gaps,
            vec![10 * ms; 3],
            "departures are one packet cost apart: {runs:?}"
        );
        assert!(
            runs.iter().all(|r| r.2 == 6),
            "skb->priority not set: {runs:?}"
        );
        let t = dp.traffic().unwrap()[0].1;
        assert_eq!((t.delayed, t.marked, t.dropped), (5, 3, 2), "{t:?}");
        // Every delayed packet is in the histogram: waits of ~10-50 ms plus its own 10 ms cost
        // make delays of 20-60 ms, all in the last bucket (>= 16.4 ms).
        let h = dp.delays_of(id).unwrap().unwrap();
        assert_eq!(h.buckets.iter().sum::<u64>(), t.delayed, "{h:?}");
        assert_eq!(
            h.buckets[15], 5,
            "delays of 20-60 ms belong in the last bucket: {h:?}"
        );
        assert!(
            (100_000_000..200_000_000).contains(&h.sum_ns),
            "sum {} ns",
            h.sum_ns
        );
        // Removing the limit returns the cgroup to untouched packets at once.
        dp.clear_shaping(id).unwrap();
        assert_eq!(dp.shaping(id).unwrap(), None);
        assert_eq!(run_egress(&mut dp), (1, 0, 0));
    }

    /// Police mode on this kernel: the same clock, but nothing is delayed. Packets leave at
    /// once; once the debt passes the mark TCP is notified, beyond the horizon packets are
    /// dropped. Both thresholds are at least 2 and 8 packet costs (here 20 and 80 ms, so the
    /// configured 50 ms horizon is raised). No departure time is written, nothing recorded.
    #[test]
    fn police_mode_notifies_then_drops_without_delaying() {
        let mut dp = Datapath::load_with_logger(Box::new(Capture::default())).unwrap();
        dp.self_test(1).unwrap();
        let id = dp.traffic().unwrap()[0].0;
        let ms = 1_000_000;
        dp.set_shaping(
            id,
            ShaperConfig {
                rate_bytes_per_sec: 150_000,
                burst_ns: 0,
                mark_ns: 20 * ms,
                horizon_ns: 50 * ms,
                skb_priority: 0,
                flags: controller_common::POLICE,
            },
        )
        .unwrap();
        let runs: Vec<(u32, u64, u32)> = (0..12).map(|_| run_egress(&mut dp)).collect();
        let verdicts: Vec<u32> = runs.iter().map(|r| r.0).collect();
        // Debts of ~10 and ~20 ms pass; ~30 to ~80 ms are notified; beyond 80 ms dropped.
        assert_eq!(
            verdicts,
            vec![1, 1, 1, 3, 3, 3, 3, 3, 3, 2, 2, 2],
            "{runs:?}"
        );
        assert!(runs.iter().all(|r| r.1 == 0), "no departure time: {runs:?}");
        let t = dp.traffic().unwrap()[0].1;
        assert_eq!((t.delayed, t.marked, t.dropped), (0, 6, 3), "{t:?}");
        assert_eq!(dp.delays_of(id).unwrap(), None, "nothing was delayed");
    }
}
