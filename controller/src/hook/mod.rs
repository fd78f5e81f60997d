//! Runtime integration: `rein hook STAGE` (an OCI runtime hook) and `rein runtime` (a runc
//! wrapper that adds the hook to a bundle, for Docker).
//!
//! - `annotations`: limits and Kubernetes labels from a container's annotations.
//! - `bundle`: the OCI state and config.json (oci-spec): name, cgroup directory, limits, and
//!   the precedence of the spec over annotations.
//! - `stage`: what each stage does (createRuntime registers the container with the agent,
//!   poststop unregisters it), bounded in time, with the failure policy.
//! - `runtime`: the wrapper.

pub mod annotations;
pub mod bundle;
pub mod runtime;
pub mod stage;
