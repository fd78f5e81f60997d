//! Builds the eBPF programs (crate `controller-ebpf`) with the pinned nightly and copies the
//! object to OUT_DIR, where `net::programs` embeds it. `AYA_BUILD_SKIP=1` skips this (then the
//! embed fails to compile: there is no useful rein without its programs).
use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
    let ebpf_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../controller-ebpf");
    let toolchain_file = format!("{ebpf_dir}/rust-toolchain.toml");
    println!("cargo::rerun-if-changed={toolchain_file}");
    let text = std::fs::read_to_string(&toolchain_file)
        .with_context(|| format!("reading {toolchain_file}"))?;
    let channel = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("channel"))
        .filter_map(|rest| rest.trim().strip_prefix('='))
        .map(|v| v.trim().trim_matches('"').to_owned())
        .next()
        .ok_or_else(|| anyhow!("no `channel = \"...\"` line in {toolchain_file}"))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "controller-ebpf",
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(&channel),
    )
}
