//! Runtime integration (issue 7, in progress): what `rein hook STAGE` will read from a
//! container's OCI bundle. Today: limits and Kubernetes labels from annotations
//! (`annotations`), and the state plus config.json through oci-spec, with the container's
//! cgroup directory and the spec-over-annotation precedence (`bundle`). Not yet wired to a
//! command: the agent does not yet manage containers outside its own tree (a runtime's
//! `linux.cgroupsPath`), which the hook needs.

pub mod annotations;
pub mod bundle;
