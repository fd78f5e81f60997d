//! What `rein top` shows: rates from two samples of every container's stats, and a short
//! history per container for the sparklines. Pure data, so it is tested without a terminal.

use std::{
    collections::{BTreeMap, VecDeque},
    time::Duration,
};

use crate::{
    api::{Stats, UsageJson, limits_from_map},
    limits::Memory,
};

/// Points of CPU history kept per container (one per refresh).
pub const HISTORY: usize = 60;

/// The column `rein top` sorts by (descending; `name` ascending).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum SortKey {
    #[default]
    Cpu,
    Throttled,
    Memory,
    Io,
    Egress,
    Drops,
    Name,
}

impl SortKey {
    /// The key that selects this column in the live view.
    pub const fn key(self) -> char {
        match self {
            Self::Cpu => 'c',
            Self::Throttled => 't',
            Self::Memory => 'm',
            Self::Io => 'i',
            Self::Egress => 'e',
            Self::Drops => 'd',
            Self::Name => 'n',
        }
    }

    pub const ALL: [Self; 7] = [
        Self::Cpu,
        Self::Throttled,
        Self::Memory,
        Self::Io,
        Self::Egress,
        Self::Drops,
        Self::Name,
    ];

    pub fn from_key(c: char) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.key() == c)
    }
}

/// One container's line.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Row {
    pub name: String,
    /// CPU time per wall time, in percent of one CPU.
    pub cpu_percent: f64,
    /// Share of CFS periods in which the quota ran out, in percent.
    pub throttled_percent: f64,
    pub memory_bytes: u64,
    pub memory_limit_bytes: Option<u64>,
    pub io_read_bytes_per_sec: f64,
    pub io_write_bytes_per_sec: f64,
    pub egress_bytes_per_sec: f64,
    pub egress_limit_bytes_per_sec: Option<u64>,
    /// Packets dropped by the shaper and the ingress policer in the interval.
    pub drops: u64,
    /// CPU percent at each refresh, oldest first.
    #[serde(skip)]
    pub history: Vec<f64>,
}

/// Successive samples and the rows they give.
#[derive(Debug, Default)]
pub struct Model {
    previous: BTreeMap<String, Stats>,
    history: BTreeMap<String, VecDeque<f64>>,
    pub rows: Vec<Row>,
    pub sort: SortKey,
}

/// A counter of the usage, by field.
type Counter = fn(&UsageJson) -> u64;

impl Model {
    pub fn new(sort: SortKey) -> Self {
        Self {
            sort,
            ..Self::default()
        }
    }

    /// Takes a new sample, `elapsed` after the previous one. A container seen for the first
    /// time has no rates yet (zero); one that is gone is dropped.
    pub fn update(&mut self, sample: Vec<Stats>, elapsed: Duration) {
        let secs = elapsed.as_secs_f64().max(1e-3);
        let mut rows = Vec::with_capacity(sample.len());
        let mut next = BTreeMap::new();
        for s in sample {
            let name = s.container.name.clone();
            let delta = |counter: Counter| {
                self.previous
                    .get(&name)
                    .map_or(0, |p| counter(&s.usage).saturating_sub(counter(&p.usage)))
            };
            let rate = |counter: Counter| delta(counter) as f64 / secs;
            let periods = delta(|u| u.cgroup.cpu_nr_periods);
            let limits = limits_from_map(&s.container.limits).unwrap_or_default();
            let cpu_percent = rate(|u| u.cgroup.cpu_usage_usec) / 1e4;
            let history = self.history.entry(name.clone()).or_default();
            if self.previous.contains_key(&name) {
                history.push_back(cpu_percent);
                while history.len() > HISTORY {
                    history.pop_front();
                }
            }
            rows.push(Row {
                cpu_percent,
                throttled_percent: if periods == 0 {
                    0.0
                } else {
                    delta(|u| u.cgroup.cpu_nr_throttled) as f64 * 100.0 / periods as f64
                },
                memory_bytes: s.usage.cgroup.memory_current_bytes,
                memory_limit_bytes: match limits.memory {
                    Some(Memory::Bytes(b)) => Some(b),
                    _ => None,
                },
                io_read_bytes_per_sec: rate(|u| u.cgroup.io_read_bytes),
                io_write_bytes_per_sec: rate(|u| u.cgroup.io_write_bytes),
                egress_bytes_per_sec: rate(|u| u.net_tx_bytes.unwrap_or(0)),
                egress_limit_bytes_per_sec: limits.egress.map(|b| b.bytes_per_second()),
                drops: delta(|u| u.net_tx_dropped_packets.unwrap_or(0))
                    + delta(|u| u.net_rx_dropped_packets.unwrap_or(0)),
                history: history.iter().copied().collect(),
                name: name.clone(),
            });
            next.insert(name, s);
        }
        self.history.retain(|n, _| next.contains_key(n));
        self.previous = next;
        self.rows = rows;
        self.sort_rows();
    }

    pub fn set_sort(&mut self, sort: SortKey) {
        self.sort = sort;
        self.sort_rows();
    }

    fn sort_rows(&mut self) {
        let key = |r: &Row| -> f64 {
            match self.sort {
                SortKey::Cpu => r.cpu_percent,
                SortKey::Throttled => r.throttled_percent,
                SortKey::Memory => r.memory_bytes as f64,
                SortKey::Io => r.io_read_bytes_per_sec + r.io_write_bytes_per_sec,
                SortKey::Egress => r.egress_bytes_per_sec,
                SortKey::Drops => r.drops as f64,
                SortKey::Name => 0.0,
            }
        };
        self.rows
            .sort_by(|a, b| key(b).total_cmp(&key(a)).then_with(|| a.name.cmp(&b.name)));
    }

    /// CPU percent of all containers together at each refresh (the header's sparkline).
    pub fn total_history(&self) -> Vec<f64> {
        let len = self.history.values().map(VecDeque::len).max().unwrap_or(0);
        // Aligned at the newest point: a container that came later has a shorter history.
        (0..len)
            .map(|i| {
                let back = len - i;
                self.history
                    .values()
                    .filter_map(|h| h.len().checked_sub(back).and_then(|j| h.get(j)))
                    .sum()
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        api::{Container, LimitText},
        cgroup::Usage,
    };

    fn stats(name: &str, usage: UsageJson, limits: &[(&str, &str)]) -> Stats {
        Stats {
            container: Container {
                name: name.into(),
                kind: crate::cgroup::Kind::Container,
                group: None,
                path: format!("/sys/fs/cgroup/rein.slice/{name}"),
                limits: limits
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), LimitText::One((*v).to_owned())))
                    .collect(),
            },
            usage,
            egress_mode: String::new(),
        }
    }

    #[test]
    fn rates_come_from_two_samples_and_rows_sort_by_the_chosen_column() {
        let mut m = Model::new(SortKey::Cpu);
        let first = vec![
            stats("web", UsageJson::default(), &[]),
            stats(
                "db",
                UsageJson {
                    cgroup: Usage {
                        memory_current_bytes: 100 << 20,
                        ..Usage::default()
                    },
                    net_tx_bytes: Some(0),
                    ..UsageJson::default()
                },
                &[("memory", "256M"), ("egress", "10mbit")],
            ),
        ];
        m.update(first, Duration::from_secs(1));
        assert!(m.rows.iter().all(|r| r.cpu_percent == 0.0));
        let second = vec![
            stats(
                "web",
                UsageJson {
                    cgroup: Usage {
                        cpu_usage_usec: 1_000_000,
                        cpu_nr_periods: 20,
                        cpu_nr_throttled: 5,
                        ..Usage::default()
                    },
                    ..UsageJson::default()
                },
                &[],
            ),
            stats(
                "db",
                UsageJson {
                    cgroup: Usage {
                        memory_current_bytes: 100 << 20,
                        ..Usage::default()
                    },
                    net_tx_bytes: Some(2_500_000),
                    net_tx_dropped_packets: Some(3),
                    ..UsageJson::default()
                },
                &[("memory", "256M"), ("egress", "10mbit")],
            ),
        ];
        m.update(second, Duration::from_secs(2));
        let web = &m.rows[0];
        assert_eq!(web.name, "web");
        assert!((web.cpu_percent - 50.0).abs() < 1e-9);
        assert!((web.throttled_percent - 25.0).abs() < 1e-9);
        assert_eq!(web.history, vec![50.0]);
        let db = &m.rows[1];
        assert_eq!(db.memory_limit_bytes, Some(256 << 20));
        assert_eq!(db.egress_limit_bytes_per_sec, Some(1_250_000));
        assert!((db.egress_bytes_per_sec - 1_250_000.0).abs() < 1e-6);
        assert_eq!(db.drops, 3);
        m.set_sort(SortKey::Egress);
        assert_eq!(m.rows[0].name, "db");
        m.set_sort(SortKey::Name);
        assert_eq!(m.rows[0].name, "db");
        assert_eq!(m.total_history(), vec![50.0]);
        m.update(vec![], Duration::from_secs(1));
        assert!(m.rows.is_empty() && m.total_history().is_empty());
    }
}
