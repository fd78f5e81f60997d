//! rein: a node agent that puts containers on a leash.
//!
//! One module per concern (see DESIGN.md): `limits` is the model and parser, `net` loads and
//! feeds the eBPF programs, `check` probes the kernel, `cli` is the command line.

pub mod check;
pub mod cli;
pub mod limits;
pub mod net;
