//! rein: a node agent that puts containers on a leash.
//!
//! One module per concern (see DESIGN.md): `limits` is the model and parser, `cgroup` the v2
//! tree, `net` loads and feeds the eBPF programs, `api` the agent socket's server and client,
//! `agent` wires them, `check` probes the kernel, `cli` is the command line.

pub mod agent;
pub mod api;
pub mod btf;
pub mod cgroup;
pub mod check;
pub mod cli;
pub mod limits;
pub mod metrics;
pub mod net;
pub mod node;
