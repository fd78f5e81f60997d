//! Which node a series comes from. Every series carries a `node` label set by the agent
//! itself, so the node survives whatever a scrape config does to `instance` (a forwarded port,
//! a pod IP, a relabeling rule) and a fleet's Prometheus can group and filter by node.

use std::fmt;

/// A node's name as it appears in the `node` label: Kubernetes passes `spec.nodeName`
/// (a DNS subdomain); elsewhere it is the host name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeName(String);

/// What a node name may be made of, for error messages.
const ACCEPTED: &str = "1 to 253 letters, digits, '.', '-' or '_'";

impl NodeName {
    /// The kernel's host name (`/proc/sys/kernel/hostname`, what `hostname` prints).
    pub fn from_host() -> anyhow::Result<Self> {
        let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map_err(|e| anyhow::anyhow!("reading the host name: {e}; give --node-name"))?;
        raw.trim().parse().map_err(|e| {
            anyhow::anyhow!("the host name cannot name this node in metrics: {e}; give --node-name")
        })
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for NodeName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok = (1..=253).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(format!("node name {s:?} is not accepted; use {ACCEPTED}"))
        }
    }
}

impl fmt::Display for NodeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for NodeName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_node_names_and_host_names_are_accepted() {
        for ok in ["node-a", "ip-10-0-0-1.ec2.internal", "Worker_7", "a"] {
            assert_eq!(ok.parse::<NodeName>().unwrap().as_str(), ok);
        }
    }

    #[test]
    fn names_that_would_garble_a_label_are_refused_with_what_is_accepted() {
        for bad in ["", "a b", "node\"a", "nöde", &"x".repeat(254)] {
            let err = bad.parse::<NodeName>().unwrap_err();
            assert!(err.contains(ACCEPTED), "{err}");
        }
    }

    #[test]
    fn this_host_has_a_usable_name() {
        NodeName::from_host().unwrap();
    }
}
