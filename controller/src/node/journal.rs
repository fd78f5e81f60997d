//! The journal of a live change: what it overwrites, as it was before, kept in the kernel
//! (an extended attribute on the container's cgroup) while the change is made, so that an
//! agent that dies half way leaves something the next one can undo (see `changes`). Pure:
//! encoding and decoding only.

use controller_common::{PolicerConfig, ShaperConfig};
use serde::{Deserialize, Serialize};

use super::egress::NetState;

/// Extended attribute holding the journal of a change in progress.
pub const PENDING_XATTR: &str = "trusted.rein.pending";

/// What a change overwrites, as it was before.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    /// (file, value that restores it).
    pub files: Vec<(String, String)>,
    /// The priority class xattr, if it was set.
    pub priority: Option<String>,
    /// The shaper entry as [`shaper_words`], if there was one.
    shaper: Option<[u64; 6]>,
    /// The policer entry (rate, bucket), if there was one.
    policer: Option<[u64; 2]>,
}

impl Journal {
    pub fn new(files: Vec<(String, String)>, priority: Option<String>, net: NetState) -> Self {
        Self {
            files,
            priority,
            shaper: net.shaper.map(shaper_words),
            policer: net.policer.map(|p| [p.rate_bytes_per_sec, p.bucket_ns]),
        }
    }

    /// The map entries as they were before the change.
    pub fn net(&self) -> NetState {
        NetState {
            shaper: self.shaper.map(shaper_from_words),
            policer: self.policer.map(|[rate, bucket]| PolicerConfig {
                rate_bytes_per_sec: rate,
                bucket_ns: bucket,
            }),
        }
    }

    pub fn encode(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string(self)
    }

    pub fn decode(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}

fn shaper_words(c: ShaperConfig) -> [u64; 6] {
    [
        c.rate_bytes_per_sec,
        c.burst_ns,
        c.mark_ns,
        c.horizon_ns,
        u64::from(c.skb_priority),
        u64::from(c.flags),
    ]
}

fn shaper_from_words(w: [u64; 6]) -> ShaperConfig {
    ShaperConfig {
        rate_bytes_per_sec: w[0],
        burst_ns: w[1],
        mark_ns: w[2],
        horizon_ns: w[3],
        skb_priority: u32::try_from(w[4]).unwrap_or(0),
        flags: u32::try_from(w[5]).unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_journal_round_trips_with_both_map_entries() {
        let net = NetState {
            shaper: Some(ShaperConfig {
                rate_bytes_per_sec: 1_250_000,
                burst_ns: 2_000_000,
                mark_ns: 4_000_000,
                horizon_ns: 40_000_000,
                skb_priority: 6,
                flags: 3,
            }),
            policer: Some(PolicerConfig {
                rate_bytes_per_sec: 9,
                bucket_ns: 7,
            }),
        };
        let j = Journal::new(
            vec![("cpu.max".into(), "max 100000".into())],
            Some("high".into()),
            net,
        );
        let back = Journal::decode(&j.encode().unwrap()).unwrap();
        assert_eq!(back, j);
        assert_eq!(back.net(), net);
        assert!(Journal::decode("{").is_err());
    }
}
