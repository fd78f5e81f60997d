//! Where things are: the workspace root and rein's persistent cache.

use std::path::PathBuf;

/// The workspace root (xtask's manifest is one level below it).
pub fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// Persistent cache for things that outlive a checkout (bpf-linker's LLVM prefix, VM
/// kernels): `$REIN_CACHE`, else `$XDG_CACHE_HOME/rein`, else `~/.cache/rein`. Never /tmp:
/// bpf-linker keeps an rpath into it.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("REIN_CACHE") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("rein");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    home.join(".cache").join("rein")
}

/// Where `cargo install` puts binaries (and where bpf-linker must be found on PATH).
pub fn cargo_bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CARGO_HOME") {
        return PathBuf::from(d).join("bin");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from);
    home.join(".cargo").join("bin")
}
