//! `rein why NAME`: what holds a container back now, how much, and which limit to change.
//!
//! A diagnosis compares two snapshots of the container (and of the groups above it) taken a
//! window apart. Each factor's share is the part of the window's time or work it cost:
//! throttled time for the CPU quota, the time tasks waited for a CPU without being throttled
//! for contention from others, the time tasks stalled on memory or IO (pressure stall
//! information), the share of packets the shaper delayed or dropped, the share of segments
//! TCP resent when rein dropped nothing. Every threshold is in [`Thresholds`]; the README
//! and `rein why --help` explain them. The same shares are exported as
//! `rein_limiting_factor{factor}` (see `metrics`).

use serde::{Deserialize, Serialize};

use crate::{
    limits::{Bandwidth, Max, Memory},
    node::Snapshot,
};

/// The thresholds of the diagnosis, in one place.
pub struct Thresholds;

impl Thresholds {
    /// A factor is named when it costs at least this share of the window (or of the
    /// packets, for the network factors).
    pub const SHOWN: f64 = 0.05;
    /// An egress or ingress limit counts as reached when the rate over the window is at
    /// least this share of it (below, delays are the burst of a mostly idle sender).
    pub const AT_LIMIT: f64 = 0.8;
    /// TCP retransmissions are the network's (not rein's) when rein dropped nothing and at
    /// least this share of the packets sent were resent segments.
    pub const RETRANSMITTED: f64 = 0.01;
    /// The shortest and longest windows `rein why` samples.
    pub const MIN_WINDOW_SECS: f64 = 1.0;
    pub const MAX_WINDOW_SECS: f64 = 300.0;
}

/// What can hold a container back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Factor {
    /// Its CPU quota (or a group's above it) throttles it.
    CpuQuota,
    /// Its tasks wait for a CPU others use (no quota involved).
    CpuContention,
    /// Its tasks stall in memory reclaim (over `memory.high`, or near `memory.max`).
    MemoryReclaim,
    /// The OOM killer killed some of its processes.
    OomKill,
    /// Its tasks stall on IO (`io.max` throttling, or a busy device).
    Io,
    /// Its egress limit (or a group's or pod's) delays or drops its packets.
    EgressLimit,
    /// Its ingress limit drops packets sent to it.
    IngressLimit,
    /// TCP resends segments that rein did not drop: loss beyond the node.
    Network,
}

impl Factor {
    pub const ALL: [Self; 8] = [
        Self::CpuQuota,
        Self::CpuContention,
        Self::MemoryReclaim,
        Self::OomKill,
        Self::Io,
        Self::EgressLimit,
        Self::IngressLimit,
        Self::Network,
    ];

    /// The name in JSON and in the `factor` label.
    pub const fn name(self) -> &'static str {
        match self {
            Self::CpuQuota => "cpu_quota",
            Self::CpuContention => "cpu_contention",
            Self::MemoryReclaim => "memory_reclaim",
            Self::OomKill => "oom_kill",
            Self::Io => "io",
            Self::EgressLimit => "egress_limit",
            Self::IngressLimit => "ingress_limit",
            Self::Network => "network",
        }
    }
}

/// One factor that holds the container back, with its evidence and what would help.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub factor: Factor,
    /// The share of the window's time (or of the packets) it cost, 0 to 1.
    pub share: f64,
    /// The numbers from the window.
    pub evidence: String,
    /// The flag that would relieve it, or why raising a limit would not help.
    pub advice: String,
}

/// `rein why`'s answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Diagnosis {
    pub name: String,
    pub window_secs: f64,
    /// Most costly first; empty when nothing holds the container back.
    pub findings: Vec<Finding>,
    /// What it used over the window.
    pub usage: String,
}

impl std::fmt::Display for Diagnosis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.findings.is_empty() {
            return writeln!(
                f,
                "nothing limits {} now ({:.0}s: {})",
                self.name, self.window_secs, self.usage
            );
        }
        writeln!(
            f,
            "{} over {:.0}s ({}):",
            self.name, self.window_secs, self.usage
        )?;
        for x in &self.findings {
            writeln!(
                f,
                "  {:>3.0}%  {:<15} {}\n        {:<15} -> {}",
                x.share * 100.0,
                x.factor.name(),
                x.evidence,
                "",
                x.advice
            )?;
        }
        Ok(())
    }
}

/// A snapshot taken at the start of the window and one at its end.
#[derive(Clone, Copy)]
pub struct Pair<'a> {
    pub before: &'a Snapshot,
    pub after: &'a Snapshot,
}

/// What a diagnosis looks at: the container over the window, and the groups above it
/// (nearest first), each over the same window.
pub struct Window<'a> {
    pub container: Pair<'a>,
    pub groups: Vec<Pair<'a>>,
    pub secs: f64,
}

fn delta(a: u64, b: u64) -> f64 {
    b.saturating_sub(a) as f64
}

fn mbit(bytes_per_sec: f64) -> String {
    format!("{:.2} Mbit/s", bytes_per_sec * 8.0 / 1e6)
}

fn bandwidth(b: Bandwidth) -> String {
    mbit(b.bytes_per_second() as f64)
}

impl Pair<'_> {
    fn d(&self, f: impl Fn(&Snapshot) -> u64) -> f64 {
        delta(f(self.before), f(self.after))
    }

    fn psi(&self, f: impl Fn(&Snapshot) -> Option<u64>) -> f64 {
        match (f(self.before), f(self.after)) {
            (Some(a), Some(b)) => delta(a, b),
            _ => 0.0,
        }
    }

    fn traffic(&self, f: impl Fn(&controller_common::Traffic) -> u64) -> f64 {
        self.d(|s| s.network.traffic.as_ref().map_or(0, &f))
    }

    /// Share of the window this cgroup's quota throttled it.
    fn throttled(&self, secs: f64) -> f64 {
        (self.d(|s| s.usage.cpu_throttled_usec) / (secs * 1e6)).min(1.0)
    }

    /// Egress rate over the window, bytes per second.
    fn tx_rate(&self, secs: f64) -> f64 {
        self.traffic(|t| t.tx_bytes) / secs
    }
}

/// Every factor's share over the window (0 for those absent), in [`Factor::ALL`] order,
/// with its finding when it is shown.
pub fn assess(w: &Window<'_>) -> Vec<(Factor, f64, Option<Finding>)> {
    let c = w.container;
    let secs = w.secs.max(1e-3);
    let now = c.after;
    let mut out = Vec::new();

    // CPU quota: the container's own, or the nearest group's that throttles.
    let quota = std::iter::once((c, None))
        .chain(
            w.groups
                .iter()
                .map(|g| (*g, Some(g.after.name.to_string()))),
        )
        .map(|(p, group)| (p.throttled(secs), p, group))
        .fold(
            (0.0, c, None),
            |best, x| if x.0 > best.0 { x } else { best },
        );
    let (quota_share, quota_at, quota_group) = quota;
    let used = c.d(|s| s.usage.cpu_usage_usec) / (secs * 1e6);
    let periods = c.d(|s| s.usage.cpu_nr_periods).max(1.0);
    let quota_text = |p: &Snapshot| match p.limits.cpus {
        Some(Max::Value(q)) => format!("--cpus {q}"),
        _ => "no --cpus".into(),
    };
    out.push((
        Factor::CpuQuota,
        quota_share,
        Some(Finding {
            factor: Factor::CpuQuota,
            share: quota_share,
            evidence: format!(
                "throttled {:.0}% of the time ({:.0}% of periods), using {used:.2} CPUs under {}{}",
                quota_share * 100.0,
                c.d(|s| s.usage.cpu_nr_throttled) / periods * 100.0,
                quota_text(quota_at.after),
                quota_group
                    .as_ref()
                    .map(|g| format!(" of its group {g}"))
                    .unwrap_or_default()
            ),
            advice: match &quota_group {
                None => format!("raise --cpus (rein set {} --cpus ...)", now.name),
                Some(g) => format!("raise the group's --cpus (rein set {g} --cpus ...)"),
            },
        }),
    ));

    // CPU contention: waiting for a CPU beyond the throttled time.
    let cpu_some = c.psi(|s| s.usage.pressure.cpu.map(|p| p.some_usec)) / (secs * 1e6);
    let contention = (cpu_some - quota_share).clamp(0.0, 1.0);
    let runq = now.network.runq.and_then(|after| {
        let before = c.before.network.runq.unwrap_or_default();
        let n = after
            .buckets
            .iter()
            .sum::<u64>()
            .saturating_sub(before.buckets.iter().sum::<u64>());
        (n > 0).then(|| after.sum_ns.saturating_sub(before.sum_ns) as f64 / n as f64 / 1e6)
    });
    out.push((
        Factor::CpuContention,
        contention,
        Some(Finding {
            factor: Factor::CpuContention,
            share: contention,
            evidence: format!(
                "its tasks waited for a CPU {:.0}% of the time without being throttled{}",
                contention * 100.0,
                runq.map(|ms| format!(", {ms:.2} ms per wait on average"))
                    .unwrap_or_default()
            ),
            advice: "not its limit: others use the CPUs it runs on; raising --cpus would not \
                     help; a higher --cpu-weight or --priority, or another --cpuset would"
                .into(),
        }),
    ));

    // Memory reclaim.
    let mem = c.psi(|s| s.usage.pressure.memory.map(|p| p.some_usec)) / (secs * 1e6);
    let high_events = c.d(|s| s.usage.memory_high_events);
    let mem_limit = |m: Option<Memory>| m.map(|m| m.to_string()).unwrap_or_else(|| "max".into());
    out.push((
        Factor::MemoryReclaim,
        mem.min(1.0),
        Some(Finding {
            factor: Factor::MemoryReclaim,
            share: mem.min(1.0),
            evidence: format!(
                "stalled in memory reclaim {:.0}% of the time, over --memory-high {} {high_events:.0} \
                 times, using {} of --memory {}",
                mem * 100.0,
                mem_limit(now.limits.memory_high),
                Memory::Bytes(now.usage.memory_current_bytes),
                mem_limit(now.limits.memory)
            ),
            advice: format!(
                "raise --memory-high (or --memory): rein set {} --memory-high ...",
                now.name
            ),
        }),
    ));

    // OOM kills: any kill is shown.
    let kills = c.d(|s| s.usage.memory_oom_kills);
    let kill_share = if kills > 0.0 { 1.0 } else { 0.0 };
    out.push((
        Factor::OomKill,
        kill_share,
        Some(Finding {
            factor: Factor::OomKill,
            share: kill_share,
            evidence: format!(
                "the OOM killer killed {kills:.0} of its processes at --memory {}",
                mem_limit(now.limits.memory)
            ),
            advice: format!("raise --memory: rein set {} --memory ...", now.name),
        }),
    ));

    // IO.
    let io = (c.psi(|s| s.usage.pressure.io.map(|p| p.some_usec)) / (secs * 1e6)).min(1.0);
    out.push((
        Factor::Io,
        io,
        Some(Finding {
            factor: Factor::Io,
            share: io,
            evidence: format!(
                "stalled on IO {:.0}% of the time, reading {} and writing {} per second",
                io * 100.0,
                Memory::Bytes((c.d(|s| s.usage.io_read_bytes) / secs) as u64),
                Memory::Bytes((c.d(|s| s.usage.io_write_bytes) / secs) as u64)
            ),
            advice: if now.limits.io_max.is_empty() {
                "no --io-max of its own: the device is busy; a higher --io-weight would help".into()
            } else {
                format!("raise --io-max: rein set {} --io-max ...", now.name)
            },
        }),
    ));

    // Egress: the share of its packets the shaper delayed or dropped, when some level's
    // limit is (nearly) reached; the level closest to its limit is named.
    let sent = c.traffic(|t| t.tx_packets);
    let held = c.traffic(|t| t.delayed) + c.traffic(|t| t.dropped);
    let dropped = c.traffic(|t| t.dropped);
    let levels = std::iter::once((c, None))
        .chain(
            w.groups
                .iter()
                .map(|g| (*g, Some(g.after.name.to_string()))),
        )
        .filter_map(|(p, group)| {
            let limit = p.after.limits.egress?;
            Some((
                p.tx_rate(secs) / limit.bytes_per_second() as f64,
                limit,
                p,
                group,
            ))
        })
        .fold(
            None,
            |best: Option<(f64, Bandwidth, Pair<'_>, Option<String>)>, x| match best {
                Some(b) if b.0 >= x.0 => Some(b),
                _ => Some(x),
            },
        );
    let egress = match &levels {
        Some((ratio, ..)) if *ratio >= Thresholds::AT_LIMIT && sent + dropped > 0.0 => {
            (held / (sent + dropped)).min(1.0)
        }
        _ => 0.0,
    };
    // No mean without samples (the histograms exist at zero from a container's creation).
    let delay_ms = now.network.delays.and_then(|after| {
        let before = c.before.network.delays.unwrap_or_default();
        let n = after
            .buckets
            .iter()
            .sum::<u64>()
            .saturating_sub(before.buckets.iter().sum::<u64>());
        (n > 0).then(|| after.sum_ns.saturating_sub(before.sum_ns) as f64 / n as f64 / 1e6)
    });
    out.push((
        Factor::EgressLimit,
        egress,
        levels.map(|(ratio, limit, p, group)| Finding {
            factor: Factor::EgressLimit,
            share: egress,
            evidence: format!(
                "{:.0}% of its packets delayed or dropped ({dropped:.0} dropped{}); {} sent {} \
                 under --egress {} ({:.0}% of it)",
                egress * 100.0,
                delay_ms
                    .map(|ms| format!(", {ms:.2} ms delay on average"))
                    .unwrap_or_default(),
                group.as_deref().map_or("it", |_| "its group"),
                mbit(p.tx_rate(secs)),
                bandwidth(limit),
                ratio * 100.0
            ),
            advice: match group {
                None => format!("raise --egress: rein set {} --egress ...", now.name),
                Some(g) => format!("raise its group's --egress: rein set {g} --egress ..."),
            },
        }),
    ));

    // Ingress: dropped by a policer, its own or a group's or pod's above it (the packet is
    // counted as dropped for the container whichever level dropped it).
    let rx = c.traffic(|t| t.rx_packets);
    let rx_dropped = c.traffic(|t| t.rx_dropped);
    let ingress = if rx + rx_dropped > 0.0 {
        rx_dropped / (rx + rx_dropped)
    } else {
        0.0
    };
    let policer = std::iter::once((c, None))
        .chain(
            w.groups
                .iter()
                .map(|g| (*g, Some(g.after.name.to_string()))),
        )
        .filter_map(|(p, group)| Some((p.after.limits.ingress?, group)))
        .next();
    out.push((
        Factor::IngressLimit,
        ingress,
        policer.map(|(limit, group)| Finding {
            factor: Factor::IngressLimit,
            share: ingress,
            evidence: format!(
                "{:.0}% of the packets sent to it dropped at {}--ingress {} (received {})",
                ingress * 100.0,
                group
                    .as_deref()
                    .map(|g| format!("its group {g}'s "))
                    .unwrap_or_default(),
                bandwidth(limit),
                mbit(c.traffic(|t| t.rx_bytes) / secs)
            ),
            advice: format!(
                "raise --ingress: rein set {} --ingress ...",
                group.as_deref().unwrap_or(now.name.as_str())
            ),
        }),
    ));

    // The network beyond rein: TCP resends what rein did not drop.
    let retrans = c.d(|s| s.network.tcp.map_or(0, |t| t.retransmitted_segments));
    let network = if dropped == 0.0 && sent > 0.0 {
        (retrans / sent).min(1.0)
    } else {
        0.0
    };
    let rtt_ms = now.network.tcp.and_then(|after| {
        let before = c.before.network.tcp.unwrap_or_default();
        let n = after
            .rtt
            .buckets
            .iter()
            .sum::<u64>()
            .saturating_sub(before.rtt.buckets.iter().sum::<u64>());
        (n > 0).then(|| after.rtt.sum_ns.saturating_sub(before.rtt.sum_ns) as f64 / n as f64 / 1e6)
    });
    out.push((
        Factor::Network,
        network,
        Some(Finding {
            factor: Factor::Network,
            share: network,
            evidence: format!(
                "TCP resent {retrans:.0} segments ({:.1}% of its packets) that rein did not drop{}",
                network * 100.0,
                rtt_ms
                    .map(|ms| format!(", round trips {ms:.1} ms on average"))
                    .unwrap_or_default()
            ),
            advice: "not a rein limit: loss or queues beyond this node; raising a limit would \
                     not help"
                .into(),
        }),
    ));
    out
}

/// The diagnosis over a window: the factors over their thresholds, most costly first.
pub fn diagnose(w: &Window<'_>) -> Diagnosis {
    let secs = w.secs.max(1e-3);
    let c = w.container;
    let mut findings: Vec<Finding> = assess(w)
        .into_iter()
        .filter(|(factor, share, _)| {
            let min = match factor {
                Factor::Network => Thresholds::RETRANSMITTED,
                Factor::OomKill => 0.5,
                _ => Thresholds::SHOWN,
            };
            *share >= min
        })
        .filter_map(|(_, _, finding)| finding)
        .collect();
    findings.sort_by(|a, b| b.share.total_cmp(&a.share));
    let usage = format!(
        "CPU {:.2} of a CPU, memory {}, egress {}, {} process{}",
        c.d(|s| s.usage.cpu_usage_usec) / (secs * 1e6),
        Memory::Bytes(c.after.usage.memory_current_bytes),
        mbit(c.traffic(|t| t.tx_bytes) / secs),
        c.after.usage.processes,
        if c.after.usage.processes == 1 {
            ""
        } else {
            "es"
        }
    );
    Diagnosis {
        name: c.after.name.to_string(),
        window_secs: secs,
        findings,
        usage,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        cgroup::{Kind, Labels, Psi, Usage},
        limits::Limits,
        node::Network,
    };

    fn snap(name: &str, usage: Usage, limits: &[(&str, &str)], network: Network) -> Snapshot {
        Snapshot {
            name: name.parse().unwrap(),
            id: 1,
            kind: Kind::Container,
            group: None,
            dir: std::path::PathBuf::from("/x"),
            cgroup: "/x".into(),
            labels: Labels::default(),
            limits: Limits::from_named_pairs(limits.iter().copied()).unwrap(),
            usage,
            network,
        }
    }

    fn psi(usec: u64) -> Option<Psi> {
        Some(Psi {
            some_usec: usec,
            full_usec: None,
        })
    }

    #[test]
    fn a_throttled_container_is_held_by_its_quota_and_nothing_else() {
        let before = snap(
            "busy",
            Usage::default(),
            &[("cpus", "0.2")],
            Network::default(),
        );
        let mut u = Usage {
            cpu_usage_usec: 2_000_000,
            cpu_nr_periods: 100,
            cpu_nr_throttled: 100,
            cpu_throttled_usec: 8_000_000,
            ..Usage::default()
        };
        u.pressure.cpu = psi(8_000_000);
        let after = snap("busy", u, &[("cpus", "0.2")], Network::default());
        let d = diagnose(&Window {
            container: Pair {
                before: &before,
                after: &after,
            },
            groups: Vec::new(),
            secs: 10.0,
        });
        let factors: Vec<Factor> = d.findings.iter().map(|f| f.factor).collect();
        assert_eq!(factors, [Factor::CpuQuota], "{d:?}");
        assert!((d.findings[0].share - 0.8).abs() < 1e-9);
        assert!(d.findings[0].evidence.contains("--cpus 0.2"), "{d}");
        assert!(d.to_string().starts_with("busy over 10s"), "{d}");
    }

    #[test]
    fn waiting_without_a_quota_is_contention_and_an_idle_one_is_not_held() {
        let mut u0 = Usage::default();
        u0.pressure.cpu = psi(0);
        let before = snap("a", u0, &[], Network::default());
        let mut u = Usage {
            cpu_usage_usec: 5_000_000,
            ..Usage::default()
        };
        u.pressure.cpu = psi(5_000_000);
        let after = snap("a", u, &[], Network::default());
        let w = Window {
            container: Pair {
                before: &before,
                after: &after,
            },
            groups: Vec::new(),
            secs: 10.0,
        };
        let d = diagnose(&w);
        assert_eq!(d.findings.len(), 1, "{d:?}");
        assert_eq!(d.findings[0].factor, Factor::CpuContention);
        assert!(d.findings[0].advice.contains("would not help"));
        let idle = diagnose(&Window {
            container: Pair {
                before: &before,
                after: &before,
            },
            groups: Vec::new(),
            secs: 10.0,
        });
        assert!(idle.findings.is_empty());
        assert!(
            idle.to_string().starts_with("nothing limits a now"),
            "{idle}"
        );
        // Every factor has a share, in the order of Factor::ALL (the metric relies on it).
        let shares = assess(&w);
        assert_eq!(
            shares.iter().map(|s| s.0).collect::<Vec<_>>(),
            Factor::ALL.to_vec()
        );
    }

    #[test]
    fn the_egress_level_closest_to_its_limit_is_named() {
        use controller_common::Traffic;
        let t = |tx_bytes: u64, packets: u64, delayed: u64| Network {
            traffic: Some(Traffic {
                tx_bytes,
                tx_packets: packets,
                delayed,
                ..Traffic::default()
            }),
            ..Network::default()
        };
        // The member sends 1 MB/s under its own 10mbit (80%), the group 2 MB/s under its
        // 16mbit (100%): the group's limit holds it.
        let m0 = snap("m", Usage::default(), &[("egress", "10mbit")], t(0, 0, 0));
        let m1 = snap(
            "m",
            Usage::default(),
            &[("egress", "10mbit")],
            t(10_000_000, 10_000, 9_000),
        );
        let g0 = snap(
            "team",
            Usage::default(),
            &[("egress", "16mbit")],
            t(0, 0, 0),
        );
        let g1 = snap(
            "team",
            Usage::default(),
            &[("egress", "16mbit")],
            t(20_000_000, 20_000, 18_000),
        );
        let d = diagnose(&Window {
            container: Pair {
                before: &m0,
                after: &m1,
            },
            groups: vec![Pair {
                before: &g0,
                after: &g1,
            }],
            secs: 10.0,
        });
        assert_eq!(d.findings.len(), 1, "{d:?}");
        assert_eq!(d.findings[0].factor, Factor::EgressLimit);
        assert!((d.findings[0].share - 0.9).abs() < 1e-9);
        assert!(
            d.findings[0].advice.contains("rein set team --egress"),
            "{d}"
        );
    }
}
