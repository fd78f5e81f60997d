//! The agent's HTTP/JSON API on a Unix socket: `server` (axum) and `client` (hyper).
//!
//! | method and path                 | body            | answer                    |
//! |---------------------------------|-----------------|---------------------------|
//! | `GET /v1/containers`            |                 | `[Container]`             |
//! | `POST /v1/containers`           | `CreateRequest` | 201 `Container` (with `Prefer: return=minimal`: 201 alone) |

//! | `GET /v1/containers/{name}`     |                 | `Stats`                   |
//! | `GET /v1/stats`                 |                 | `[Stats]` (every container) |
//! | `GET /v1/containers/{name}/why?window=10` |       | `why::Diagnosis` (after the window) |
//! | `PATCH /v1/containers/{name}`   | `LimitsBody`    | `Container`               |
//! | `DELETE /v1/containers/{name}?force=true` |       | 204                       |
//!
//! A `CreateRequest` with `cgroup` registers a runtime's container (`rein hook`) instead of
//! making one; `DELETE` of such a container unregisters it and leaves its cgroup alone, and
//! `DELETE ...?cgroup=PATH` acts only on a registered container with that cgroup (404
//! otherwise), which is what the poststop hook sends.
//!
//! Errors are `{"error": "..."}` with 400 (bad input), 403 (peer not allowed), 404, 409
//! (exists / busy) or 500. Limits travel as `{"cpus": "1.5", "io-max": ["8:0 wbps=1M"]}`:
//! the same names and texts as the CLI flags, parsed by the same parser.

pub mod client;
pub mod server;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{
    cgroup::{Kind, Labels, Usage},
    limits::{Flag, LimitError, Limits},
    node::Snapshot,
};

/// Default socket path.
pub const DEFAULT_SOCKET: &str = "/run/rein/rein.sock";
/// The preference (RFC 7240 `Prefer`) for an answer without a body: `POST /v1/containers`
/// then answers 201 alone, without reading every limit back.
pub const PREFER_MINIMAL: &str = "return=minimal";
/// Largest request body accepted (limits are a few hundred bytes).
pub const MAX_BODY: usize = 64 * 1024;

/// One limit's text, or several for the repeatable `io-max`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum LimitText {
    One(String),
    Many(Vec<String>),
}

/// Limits as JSON: flag name -> text.
pub type LimitMap = BTreeMap<String, LimitText>;

/// Parses a JSON limit map with the shared parser (unknown names are errors).
pub fn limits_from_map(map: &LimitMap) -> Result<Limits, LimitError> {
    let pairs: Vec<(&str, &str)> = map
        .iter()
        .flat_map(|(k, v)| match v {
            LimitText::One(s) => vec![(k.as_str(), s.as_str())],
            LimitText::Many(list) => list.iter().map(|s| (k.as_str(), s.as_str())).collect(),
        })
        .collect();
    Limits::from_named_pairs(pairs)
}

/// The JSON form of a set of limits.
pub fn limits_to_map(l: &Limits) -> LimitMap {
    let mut map = LimitMap::new();
    for (flag, value) in l.to_pairs() {
        match (flag, map.get_mut(flag.name())) {
            (Flag::IoMax, Some(LimitText::Many(list))) => list.push(value),
            (Flag::IoMax, _) => {
                map.insert(flag.name().into(), LimitText::Many(vec![value]));
            }
            _ => {
                map.insert(flag.name().into(), LimitText::One(value));
            }
        }
    }
    map
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    pub name: String,
    #[serde(default)]
    pub limits: LimitMap,
    /// A container (the default) or a group.
    #[serde(default)]
    pub kind: Kind,
    /// The group to create it in (default: the top of the managed root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Register a cgroup a container runtime made (absolute path) instead of making one
    /// under the managed root (`rein hook`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    /// Metric labels of a registered container.
    #[serde(default)]
    pub labels: Labels,
    /// The Kubernetes pod of a registered container, with the pod's own limits (its
    /// cgroup becomes a group shared by the pod's containers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<PodRequest>,
}

/// A pod as the hook registers it with its container (see [`CreateRequest::pod`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PodRequest {
    /// The name rein lists the pod's group under (`<namespace>_<pod>`).
    pub name: String,
    /// The pod's cgroup: the parent of the container's.
    pub cgroup: String,
    #[serde(default)]
    pub limits: LimitMap,
}

/// Percent-encodes a query parameter's value.
pub fn query_escape(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsBody {
    #[serde(default)]
    pub limits: LimitMap,
}

/// A container or a group as `rein ls` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Container {
    pub name: String,
    /// `container` or `group`.
    #[serde(default)]
    pub kind: Kind,
    /// The group it is in, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Its cgroup directory.
    pub path: String,
    pub limits: LimitMap,
}

/// `rein stats`: limits and current usage.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stats {
    #[serde(flatten)]
    pub container: Container,
    pub usage: UsageJson,
    /// How this node enforces egress limits: `edt-fq on DEV,...`, or why it cannot.
    pub egress_mode: String,
}

/// A container's usage on the wire, flat (`jq .usage.cpu_usage_usec`): the cgroup's
/// counters in the kernel's units, and what the eBPF programs counted (absent until their
/// first event, or when they do not run).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageJson {
    /// The cgroup's own counters (cpu.stat, memory.current, ...).
    #[serde(flatten)]
    pub cgroup: Usage,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net_tx_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net_tx_packets: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net_rx_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net_rx_packets: Option<u64>,
    /// Egress packets the shaper gave a later departure time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net_tx_delayed_packets: Option<u64>,
    /// Egress packets sent with congestion notification to TCP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net_tx_marked_packets: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net_tx_dropped_packets: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net_rx_dropped_packets: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_connections: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_retransmitted_segments: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_rtt_samples: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_rtt_mean_us: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runqueue_waits: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runqueue_wait_mean_us: Option<u64>,
}

/// Samples and mean in microseconds of one of the eBPF histograms.
fn histogram_mean_us(h: &controller_common::DelayHistogram) -> (u64, u64) {
    let n: u64 = h.buckets.iter().sum();
    (n, h.sum_ns.checked_div(n).unwrap_or(0) / 1000)
}

impl From<&Snapshot> for UsageJson {
    fn from(s: &Snapshot) -> Self {
        let t = s.network.traffic;
        let tcp = s.network.tcp;
        let rtt = tcp.map(|t| histogram_mean_us(&t.rtt));
        let runq = s.network.runq.map(|h| histogram_mean_us(&h));
        Self {
            cgroup: s.usage.clone(),
            net_tx_bytes: t.map(|t| t.tx_bytes),
            net_tx_packets: t.map(|t| t.tx_packets),
            net_rx_bytes: t.map(|t| t.rx_bytes),
            net_rx_packets: t.map(|t| t.rx_packets),
            net_tx_delayed_packets: t.map(|t| t.delayed),
            net_tx_marked_packets: t.map(|t| t.marked),
            net_tx_dropped_packets: t.map(|t| t.dropped),
            net_rx_dropped_packets: t.map(|t| t.rx_dropped),
            tcp_connections: tcp.map(|t| t.connections),
            tcp_retransmitted_segments: tcp.map(|t| t.retransmitted_segments),
            tcp_rtt_samples: rtt.map(|r| r.0),
            // No mean without samples.
            tcp_rtt_mean_us: rtt.filter(|r| r.0 > 0).map(|r| r.1),
            runqueue_waits: runq.map(|r| r.0),
            runqueue_wait_mean_us: runq.filter(|r| r.0 > 0).map(|r| r.1),
        }
    }
}

impl Container {
    /// A container's name, directory and limits from its snapshot.
    pub fn of(s: &Snapshot) -> Self {
        Self {
            name: s.name.to_string(),
            kind: s.kind,
            group: s.group.as_ref().map(ToString::to_string),
            path: s.dir.display().to_string(),
            limits: limits_to_map(&s.limits),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_maps_round_trip_through_the_shared_parser() {
        let json =
            r#"{"cpus": "1.5", "io-max": ["8:0 wbps=1M", "8:16 riops=10"], "memory": "256M"}"#;
        let map: LimitMap = serde_json::from_str(json).unwrap();
        let l = limits_from_map(&map).unwrap();
        assert_eq!(l.io_max.len(), 2);
        assert_eq!(limits_from_map(&limits_to_map(&l)).unwrap(), l);
        let bad: LimitMap = serde_json::from_str(r#"{"cpu": "1"}"#).unwrap();
        assert!(
            limits_from_map(&bad)
                .unwrap_err()
                .to_string()
                .starts_with("unknown limit \"cpu\"")
        );
    }
}
