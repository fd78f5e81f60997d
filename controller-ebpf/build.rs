//! The BPF target links with `bpf-linker`, an undeclared dependency cargo cannot see: rerun
//! when the binary changes (for example after `cargo xtask setup` rebuilt it for a new nightly).
fn main() {
    if let Ok(linker) = which::which("bpf-linker") {
        println!("cargo::rerun-if-changed={}", linker.display());
    } else {
        println!("cargo::warning=bpf-linker not found on PATH: run `cargo xtask setup`");
    }
}
