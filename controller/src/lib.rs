//! rein: a node agent that puts containers on a leash.
//!
//! One module per concern (docs/architecture.md draws the map and follows a limit from a
//! flag to the kernel): `limits` is the model and its one parser, with the table of limit
//! flags; `cgroup` the v2 tree; `net` loads and feeds the eBPF programs (`btf` resolves the
//! kernel offsets the tracing ones need); `node` applies a container's limits to both and
//! is the one reader of a container as the kernel holds it; `api` the agent socket's server
//! and client; `metrics` the Prometheus endpoint; `agent` wires them, with its settings;
//! `check` probes the kernel; `hook` is the OCI runtime hook and runc wrapper; `top` the
//! live terminal view; `why` the diagnosis of what holds a container back; `cli` the command
//! line; `failpoint` where tests make the agent die.

pub mod agent;
pub mod api;
pub mod btf;
pub mod cgroup;
pub mod check;
pub mod cli;
pub mod failpoint;
#[doc(hidden)]
pub mod fuzz_checks;
pub mod hook;
pub mod http;
pub mod limits;
pub mod metrics;
pub mod net;
pub mod node;
pub mod top;
pub mod why;
