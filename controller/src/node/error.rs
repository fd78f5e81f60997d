//! Why a node operation failed: the cgroup half, the eBPF half, or a request this node
//! cannot honour. The API maps each variant to an HTTP status (`api::server`).

use crate::{cgroup::CgroupError, limits::LimitError, net::programs::ProgramError};

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    /// A network limit was asked for but cannot be enforced here.
    #[error("{0}")]
    Unenforceable(LimitError),
    /// A map or program operation failed (the error names which, and the kernel's answer).
    #[error(transparent)]
    Datapath(#[from] ProgramError),
    /// The kernel's BTF does not describe what the scheduler programs need.
    #[error(transparent)]
    Btf(#[from] crate::btf::BtfError),
    /// rein's programs are not loaded, so what needs them cannot be done.
    #[error("rein's eBPF programs are not loaded: {why}")]
    NoDatapath { why: String },
    /// A thread panicked while it held the datapath's lock.
    #[error("the eBPF datapath's lock was poisoned by a panic; restart the agent")]
    Poisoned,
    /// A change's journal could not be written or read back.
    #[error("the journal of a change: {0}")]
    Journal(#[from] serde_json::Error),
    /// A runtime's container, which only root may change or remove.
    #[error(
        "{0} is a runtime's container: only root may change or remove it (its limits come from \
         its annotations)"
    )]
    RootOnly(crate::cgroup::ContainerName),
    /// A runtime's cgroup that rein cannot take over.
    #[error("cgroup {path}: {problem}")]
    Foreign {
        path: std::path::PathBuf,
        problem: String,
    },
}

impl From<LimitError> for NodeError {
    fn from(e: LimitError) -> Self {
        Self::Cgroup(CgroupError::Limit(e))
    }
}
