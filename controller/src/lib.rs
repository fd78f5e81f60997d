//! rein: a node agent that puts containers on a leash.
//!
//! One module per concern (see DESIGN.md): `limits` is the model and parser, `cgroup` the v2
//! tree, `net` loads and feeds the eBPF programs (`btf` resolves the kernel offsets the
//! tracing ones need), `node` applies a container's limits to both, `api` the agent socket's
//! server and client, `metrics` the Prometheus endpoint, `agent` wires them, `check` probes
//! the kernel, `hook` is the OCI runtime hook and runc wrapper, `top` the live terminal view,
//! `cli` is the command line.

pub mod agent;
pub mod api;
pub mod btf;
pub mod cgroup;
pub mod check;
pub mod cli;
pub mod failpoint;
pub mod hook;
pub mod limits;
pub mod metrics;
pub mod net;
pub mod node;
pub mod top;
