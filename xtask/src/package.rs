//! `cargo xtask package`: rein as a Debian package (`dpkg-deb`, no other tool), from the
//! static musl binary, so one .deb serves every amd64 distribution release.
//!
//! What goes where, and why there:
//! - `/usr/bin/rein` and the symlink `/usr/bin/rein-runtime` (the runc wrapper for Docker);
//! - `/usr/lib/systemd/system/rein.service` and `rein.socket` (deploy/), not enabled: an
//!   operator starts rein on purpose (`systemctl enable --now rein.socket rein.service`);
//!   removing the package stops both (prerm), and purging removes `/run/rein` (postrm);
//! - `/usr/share/rein/hooks.d/rein.json`: a place no runtime reads, so installing the package
//!   changes no container start; copying it to `/usr/share/containers/oci/hooks.d/` enables
//!   the hook for Podman and CRI-O (docs/runtimes.md);
//! - `/etc/rein/rein.toml` (deploy/rein.toml, every key commented), a conffile;
//! - man pages from the CLI's definition (`rein man`, clap_mangen) and completions for
//!   bash, zsh and fish (`rein completions`).
//!
//! The VM suite packs its own (debug) binary with [`build`] and installs, runs and purges
//! the package in the guest (`integration-tests/tests/vm/package.rs`).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, ensure};

use crate::{
    cmd::{cargo, output, run_checked},
    paths::workspace_root,
};

/// The package's version: the workspace's.
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// `cargo xtask package`: builds the release binary and the .deb; prints its path.
pub fn run(out: Option<PathBuf>) -> anyhow::Result<()> {
    eprintln!("== building rein (release, x86_64-unknown-linux-musl)");
    run_checked(cargo().args([
        "build",
        "--release",
        "--target",
        "x86_64-unknown-linux-musl",
        "-p",
        "controller",
        "--bin",
        "rein",
    ]))?;
    let rein = workspace_root().join("target/x86_64-unknown-linux-musl/release/rein");
    let out = out.unwrap_or_else(|| workspace_root().join("target").join("debian"));
    let deb = build(&rein, &out)?;
    println!("{}", deb.display());
    eprintln!(
        "install it with: dpkg -i {}; then systemctl enable --now rein.socket rein.service",
        deb.display()
    );
    Ok(())
}

/// Builds `rein_<version>_amd64.deb` in `out` around the binary `rein`; returns its path.
pub fn build(rein: &Path, out: &Path) -> anyhow::Result<PathBuf> {
    let repo = workspace_root();
    let root = out.join("root");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root)?;
    let put = |rel: &str, data: &[u8], mode: u32| -> anyhow::Result<()> {
        use std::os::unix::fs::PermissionsExt as _;
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap_or(&root))?;
        std::fs::write(&path, data).with_context(|| format!("writing {}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))?;
        Ok(())
    };
    let read = |rel: &str| {
        std::fs::read_to_string(repo.join(rel)).with_context(|| format!("reading {rel}"))
    };
    // The docs and files show the manual install's path; the package's binary is in /usr/bin.
    let packaged = |text: String| text.replace("/usr/local/bin/rein", "/usr/bin/rein");

    let bin = root.join("usr/bin/rein");
    std::fs::create_dir_all(bin.parent().unwrap_or(&root))?;
    run_checked(
        Command::new("strip")
            .arg("--strip-debug")
            .arg("-o")
            .arg(&bin)
            .arg(rein),
    )
    .context("strip (binutils) copying the binary")?;
    std::os::unix::fs::symlink("rein", root.join("usr/bin/rein-runtime"))?;
    for unit in ["rein.service", "rein.socket", "rein-containers.service"] {
        put(
            &format!("usr/lib/systemd/system/{unit}"),
            packaged(read(&format!("deploy/{unit}"))?).as_bytes(),
            0o644,
        )?;
    }
    put(
        "usr/share/rein/hooks.d/rein.json",
        packaged(read("deploy/hooks.d/rein.json")?).as_bytes(),
        0o644,
    )?;
    put(
        "etc/rein/rein.toml",
        read("deploy/rein.toml")?.as_bytes(),
        0o644,
    )?;
    put(
        "usr/share/doc/rein/README.md",
        read("README.md")?.as_bytes(),
        0o644,
    )?;
    put(
        "usr/share/doc/rein/copyright",
        format!(
            "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\
             Upstream-Name: rein\n\nFiles: *\nCopyright: rein developers\nLicense: {}\n \
             The license texts are those of the MIT license and the Apache License 2.0\n \
             (/usr/share/common-licenses/Apache-2.0 on Debian).\n",
            env!("CARGO_PKG_LICENSE")
        )
        .as_bytes(),
        0o644,
    )?;

    let man = root.join("usr/share/man/man1");
    run_checked(Command::new(&bin).arg("man").arg(&man))?;
    for page in std::fs::read_dir(&man)?.flatten() {
        // -n: no name or time stamp in the header, so that two builds give the same bytes.
        run_checked(Command::new("gzip").args(["-9", "-n"]).arg(page.path()))?;
    }
    for (shell, rel) in [
        ("bash", "usr/share/bash-completion/completions/rein"),
        ("zsh", "usr/share/zsh/vendor-completions/_rein"),
        ("fish", "usr/share/fish/vendor_completions.d/rein.fish"),
    ] {
        let script = output(Command::new(&bin).args(["completions", shell]))?;
        put(rel, script.as_bytes(), 0o644)?;
    }

    let installed_kib = du_kib(&root)?;
    put(
        "DEBIAN/control",
        format!(
            "Package: rein\n\
             Version: {VERSION}\n\
             Architecture: amd64\n\
             Maintainer: rein developers <rein@example.org>\n\
             Installed-Size: {installed_kib}\n\
             Section: admin\n\
             Priority: optional\n\
             Suggests: podman | docker.io | containerd\n\
             Description: puts containers on a leash: cgroup v2 limits, eBPF shaping, metrics\n \
             rein creates a cgroup v2 subtree per container with CPU, memory, IO, pid and\n \
             priority limits, shapes each container's network egress with eBPF, and exports\n \
             per-container metrics to Prometheus. Container runtimes reach it through an OCI\n \
             hook (/usr/share/rein/hooks.d/rein.json, not enabled by installing) or the runc\n \
             wrapper rein-runtime. Start the agent with:\n \
             systemctl enable --now rein.socket rein.service\n"
        )
        .as_bytes(),
        0o644,
    )?;
    put("DEBIAN/conffiles", b"/etc/rein/rein.toml\n", 0o644)?;
    // Maintainer scripts, where systemd runs: removing the package stops the agent and its
    // socket (a running agent of a deleted binary would not come back after its next
    // restart) and removes /run/rein; an upgrade restarts a running agent on the new binary.
    // Limits stay in the kernel (pins, cgroup files) as after any stop. An empty $1 is
    // busybox's dpkg, which runs the scripts without arguments.
    put(
        "DEBIAN/prerm",
        b"#!/bin/sh\nset -e\ncase \"$1\" in remove|deconfigure|\"\")\n    \
          if [ -d /run/systemd/system ]; then\n        \
          systemctl stop rein.service rein.socket || true\n    fi\n    ;;\nesac\n",
        0o755,
    )?;
    put(
        "DEBIAN/postrm",
        b"#!/bin/sh\nset -e\ncase \"$1\" in remove|purge|\"\")\n    rm -rf /run/rein\n    \
          if [ -d /run/systemd/system ]; then\n        systemctl daemon-reload || true\n    fi\n    \
          ;;\nesac\n",
        0o755,
    )?;
    put(
        "DEBIAN/postinst",
        b"#!/bin/sh\nset -e\ncase \"$1\" in configure)\n    \
          if [ -d /run/systemd/system ]; then\n        systemctl daemon-reload || true\n        \
          systemctl try-restart rein.service || true\n    fi\n    ;;\nesac\n",
        0o755,
    )?;
    // Directories as dpkg-deb wants them, whatever the build's umask.
    set_dir_modes(&root)?;

    let deb = out.join(format!("rein_{VERSION}_amd64.deb"));
    let _ = std::fs::remove_file(&deb);
    // gzip members: busybox's dpkg, which the VM test installs with, reads them.
    run_checked(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zgzip", "--build"])
            .arg(&root)
            .arg(&deb),
    )
    .context("dpkg-deb building the package")?;
    ensure!(deb.is_file(), "dpkg-deb wrote no {}", deb.display());
    std::fs::remove_dir_all(&root)?;
    Ok(deb)
}

/// Mode 0755 on every directory below `dir` (and `dir`).
fn set_dir_modes(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    for e in std::fs::read_dir(dir)?.flatten() {
        if e.file_type()?.is_dir() {
            set_dir_modes(&e.path())?;
        }
    }
    Ok(())
}

/// Disk use of a tree in KiB, for the control file's Installed-Size.
fn du_kib(dir: &Path) -> anyhow::Result<u64> {
    let text = output(Command::new("du").args(["-sk"]).arg(dir))?;
    text.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("du -sk {}: {text:?}", dir.display()))
}
