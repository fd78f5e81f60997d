//! The pinned toolchains, read from the files that pin them (never written twice).

use anyhow::{Context as _, anyhow};

use crate::paths::workspace_root;

/// The `channel = "..."` of a rust-toolchain.toml relative to the workspace root.
fn channel(file: &str) -> anyhow::Result<String> {
    let path = workspace_root().join(file);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("channel"))
        .filter_map(|r| r.trim().strip_prefix('='))
        .map(|v| v.trim().trim_matches('"').to_owned())
        .next()
        .ok_or_else(|| anyhow!("no channel in {}", path.display()))
}

/// Userspace toolchain (root rust-toolchain.toml).
pub fn stable() -> anyhow::Result<String> {
    channel("rust-toolchain.toml")
}

/// The eBPF nightly (controller-ebpf/rust-toolchain.toml).
pub fn ebpf_nightly() -> anyhow::Result<String> {
    channel("controller-ebpf/rust-toolchain.toml")
}

/// bpf-linker release to build; its LLVM feature must match the nightly's LLVM major.
pub const BPF_LINKER_VERSION: &str = "0.13.0";
