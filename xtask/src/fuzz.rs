//! `cargo xtask fuzz --seconds N`: runs every cargo-fuzz target in `fuzz/` for N seconds
//! each, on the eBPF nightly (cargo-fuzz needs a nightly; that one is installed already),
//! starting from the committed seeds in `fuzz/seeds/<target>/`. New inputs go to
//! `fuzz/corpus/<target>/` and crashes to `fuzz/artifacts/<target>/` (both ignored by git):
//! a crash becomes a regression test in the crate it broke.

use std::process::Command;

use anyhow::{Context as _, bail};

use crate::{cmd::run_checked, paths::workspace_root, toolchain};

/// The targets, as `fuzz/Cargo.toml` names them.
pub const TARGETS: [&str; 4] = ["limits", "api_json", "hook_bundle", "api_handlers"];
/// The cargo-fuzz release installed on demand.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

fn ensure_cargo_fuzz() -> anyhow::Result<()> {
    let have = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have {
        eprintln!("installing cargo-fuzz {CARGO_FUZZ_VERSION} (a minute or two) ...");
        run_checked(Command::new("cargo").args([
            "install",
            "cargo-fuzz",
            "--locked",
            "--version",
            CARGO_FUZZ_VERSION,
        ]))?;
    }
    Ok(())
}

pub fn run(seconds: u32, only: Option<&str>) -> anyhow::Result<i32> {
    if let Some(t) = only
        && !TARGETS.contains(&t)
    {
        bail!(
            "no fuzz target {t:?}; the targets are {}",
            TARGETS.join(", ")
        );
    }
    ensure_cargo_fuzz()?;
    let nightly = toolchain::ebpf_nightly()?;
    let root = workspace_root();
    let mut failed = Vec::new();
    for target in TARGETS.iter().filter(|t| only.is_none_or(|o| o == **t)) {
        let corpus = root.join("fuzz").join("corpus").join(target);
        let seeds = root.join("fuzz").join("seeds").join(target);
        std::fs::create_dir_all(&corpus).with_context(|| corpus.display().to_string())?;
        eprintln!("== fuzz {target}: {seconds} s");
        let status = Command::new("cargo")
            .arg(format!("+{nightly}"))
            .args(["fuzz", "run", target])
            .arg(&corpus)
            .arg(&seeds)
            .args([
                "--",
                &format!("-max_total_time={seconds}"),
                "-rss_limit_mb=2048",
                "-print_final_stats=1",
            ])
            .current_dir(&root)
            .status()
            .with_context(|| format!("starting cargo fuzz run {target}"))?;
        if status.success() {
            eprintln!("== fuzz {target}: no crash in {seconds} s");
        } else {
            eprintln!(
                "== fuzz {target}: FAILED ({status}); the input is in fuzz/artifacts/{target}/"
            );
            failed.push(*target);
        }
    }
    if failed.is_empty() {
        println!("fuzz: {} target(s), no crash", TARGETS.len());
        Ok(0)
    } else {
        println!("fuzz: crashes in {}", failed.join(", "));
        Ok(1)
    }
}
