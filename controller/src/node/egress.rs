//! How this node enforces network limits, and the eBPF map entries a set of limits becomes.
//! Pure: no kernel access, so every rule here is unit-tested.

use std::fmt;

use controller_common::{FIFO, POLICE, PolicerConfig, SET_PRIORITY, ShaperConfig};

use crate::limits::Limits;

/// Ingress policer bucket: 200 ms at the rate. Dropping is the only signal a receiver can
/// give, and TCP needs a deep bucket to average the rate right (shallow ones collapse it).
pub const INGRESS_BUCKET_NS: u64 = 200_000_000;

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

/// How the flows of one shaped cgroup share its limit (`rein agent --egress-flows`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Flows {
    /// A sparse flow (a ping, a DNS query, a request on an idle connection) departs at once;
    /// the bulk flows absorb its cost, and the cgroup's aggregate stays at its limit.
    #[default]
    Isolated,
    /// One FIFO per cgroup, as Cilium's bandwidth manager has it: every packet waits behind
    /// the cgroup's backlog (rein before flow isolation; for comparison).
    Fifo,
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
    /// Whether sparse flows depart ahead of their cgroup's bulk.
    pub flows: Flows,
}

impl ShaperParams {
    /// Pacing: 2 ms of burst is enough for TCP's bursts of a few segments and small against
    /// the 4 ms mark, so queueing delay stays in milliseconds; the 40 ms horizon (Cilium
    /// waits 2 s) only catches senders that ignore congestion notification, such as UDP.
    pub const EDT: Self = Self {
        burst_ns: 2_000_000,
        mark_ns: 4_000_000,
        horizon_ns: 40_000_000,
        flows: Flows::Isolated,
    };

    /// Policing: nothing holds packets back, so TCP's normal bursts show up as debt. Marking
    /// at 4 ms and dropping at 40 ms held TCP to 0.51 of 20 Mbit/s; 40 and 200 ms gave
    /// 0.996 (20 Mbit/s) and 1.03 (100 Mbit/s) in the test VM.
    pub const POLICE: Self = Self {
        burst_ns: 2_000_000,
        mark_ns: 40_000_000,
        horizon_ns: 200_000_000,
        flows: Flows::Isolated,
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
            flows: given.flows.unwrap_or(d.flows),
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
    pub flows: Option<Flows>,
}

/// A container's entries in the shaper and policer maps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetState {
    pub shaper: Option<ShaperConfig>,
    pub policer: Option<PolicerConfig>,
}

impl NetState {
    /// The entries after applying `l` over `self`, for a node in `mode` with `params`.
    pub fn planned(self, l: &Limits, params: ShaperParams, mode: &EgressMode) -> Self {
        Self {
            shaper: shaper_config(l, self.shaper, params, mode.polices()),
            policer: match l.ingress {
                Some(rate) => Some(PolicerConfig {
                    rate_bytes_per_sec: rate.bytes_per_second(),
                    bucket_ns: INGRESS_BUCKET_NS,
                }),
                None => self.policer,
            },
        }
    }
}

impl EgressMode {
    /// True when egress limits are policed (no `fq` to honour departure times).
    pub fn polices(&self) -> bool {
        matches!(self, Self::Police { .. })
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
    set_node_bits(&mut cfg, police, p.flows);
    Some(cfg)
}

/// Sets the bits of a shaping entry that follow the node's settings, not the container's
/// limits: police or pace, isolated flows or one FIFO.
pub fn set_node_bits(cfg: &mut ShaperConfig, police: bool, flows: Flows) {
    let mut set = |bit: u32, on: bool| {
        if on {
            cfg.flags |= bit;
        } else {
            cfg.flags &= !bit;
        }
    };
    set(POLICE, police);
    set(FIFO, flows == Flows::Fifo);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn egress(rate: &str) -> Limits {
        Limits {
            egress: Some(rate.parse().unwrap()),
            ..Limits::default()
        }
    }

    /// The node's flow order and mode reach every entry it writes, and a later write with
    /// other settings (an agent restarted with other flags) turns the bits over.
    #[test]
    fn the_node_settings_set_the_fifo_and_police_bits() {
        let pace = EgressMode::Edt {
            devices: vec!["eth0".into()],
        };
        let police = EgressMode::Police { why: "test".into() };
        let fifo = ShaperParams {
            flows: Flows::Fifo,
            ..ShaperParams::EDT
        };
        let a = NetState::default()
            .planned(&egress("10mbit"), ShaperParams::EDT, &pace)
            .shaper
            .unwrap();
        assert_eq!(a.flags & (FIFO | POLICE), 0, "isolated flows, paced");
        let b = NetState {
            shaper: Some(a),
            policer: None,
        }
        .planned(&egress("20mbit"), fifo, &police)
        .shaper
        .unwrap();
        assert_eq!(b.flags & (FIFO | POLICE), FIFO | POLICE);
        assert_eq!(b.rate_bytes_per_sec, 2_500_000);
        let mut c = b;
        set_node_bits(&mut c, false, Flows::Isolated);
        assert_eq!(c.flags & (FIFO | POLICE), 0);
    }
}
