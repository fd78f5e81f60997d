//! Map layouts shared by rein's eBPF programs (`controller-ebpf`) and its agent (`controller`).
//!
//! This is the single definition of every structure that crosses the kernel/user boundary:
//! both sides compile these types, so there is nothing to keep in sync by hand. Every struct
//! is `#[repr(C)]` with explicit padding and a compile-time size check, because the kernel
//! copies map values as raw bytes.
#![no_std]

/// Name of the per-CPU hash map of [`Traffic`] counters, keyed by cgroup id (`u64`, the
/// inode number of the cgroup v2 directory, as returned by `bpf_skb_cgroup_id`).
pub const TRAFFIC_MAP: &str = "REIN_TRAFFIC";

/// Capacity of [`TRAFFIC_MAP`]: the most cgroups counted at once. A cgroup that does not fit
/// is not counted (and the programs log it once per packet burst); traffic still passes.
pub const TRAFFIC_MAP_MAX_ENTRIES: u32 = 16_384;

/// Names of the counting programs in the object file.
pub const PROG_COUNT_EGRESS: &str = "rein_count_egress";
/// See [`PROG_COUNT_EGRESS`].
pub const PROG_COUNT_INGRESS: &str = "rein_count_ingress";

/// Per-cgroup packet counters, one copy per CPU; userspace sums the copies.
///
/// Lengths are `skb->len` as seen by cgroup_skb programs: the network-layer packet (IP header
/// included, no link-layer header).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Bytes sent by sockets of the cgroup (egress).
    pub tx_bytes: u64,
    /// Packets sent by sockets of the cgroup (egress).
    pub tx_packets: u64,
    /// Bytes received by sockets of the cgroup (ingress).
    pub rx_bytes: u64,
    /// Packets received by sockets of the cgroup (ingress).
    pub rx_packets: u64,
}

const _: () = assert!(core::mem::size_of::<Traffic>() == 32);
const _: () = assert!(core::mem::align_of::<Traffic>() == 8);

impl Traffic {
    /// Adds another CPU's copy (saturating: a counter never wraps to a smaller value).
    #[must_use]
    pub const fn merged(self, other: Self) -> Self {
        Self {
            tx_bytes: self.tx_bytes.saturating_add(other.tx_bytes),
            tx_packets: self.tx_packets.saturating_add(other.tx_packets),
            rx_bytes: self.rx_bytes.saturating_add(other.rx_bytes),
            rx_packets: self.rx_packets.saturating_add(other.rx_packets),
        }
    }
}

// SAFETY: `Traffic` is `#[repr(C)]`, made only of `u64`s, has no padding (size asserted above),
// so every bit pattern is a valid value.
#[cfg(feature = "user")]
unsafe impl aya::Pod for Traffic {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_adds_fieldwise_and_saturates() {
        let a = Traffic {
            tx_bytes: 1,
            tx_packets: 2,
            rx_bytes: 3,
            rx_packets: u64::MAX,
        };
        let b = Traffic {
            tx_bytes: 10,
            tx_packets: 20,
            rx_bytes: 30,
            rx_packets: 1,
        };
        assert_eq!(
            a.merged(b),
            Traffic {
                tx_bytes: 11,
                tx_packets: 22,
                rx_bytes: 33,
                rx_packets: u64::MAX
            }
        );
    }
}
