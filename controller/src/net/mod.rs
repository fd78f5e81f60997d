//! Loading, pinning and feeding the eBPF programs, and the network-side kernel probes.
//!
//! `programs` owns the embedded object; `qdisc` talks rtnetlink to the traffic-control layer;
//! `netns` puts `fq` inside containers' own network namespaces.

pub mod netns;
pub mod programs;
pub mod qdisc;
