//! `cargo xtask setup`: installs what building and testing rein need, idempotently.
//!
//! Each step first checks whether its result is already in place and only then does the work,
//! so a second run takes seconds. Every step prints one progress line with its outcome.

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, anyhow, bail};

use crate::{
    cmd::{cargo, output, run_checked},
    paths::{cache_dir, cargo_bin_dir, workspace_root},
    toolchain::{self, BPF_LINKER_VERSION},
};

/// Debian packages the tests use, and why.
const PACKAGES: &[(&str, &str)] = &[
    ("iproute2", "ip and tc, copied into the test VM"),
    ("iperf3", "traffic for the shaping tests"),
    ("busybox-static", "the test VM's userland"),
    ("runc", "OCI runtime for the hook tests"),
    ("crun", "second OCI runtime for the hook tests"),
    (
        "prometheus",
        "promtool and the Prometheus server for the metrics tests",
    ),
    (
        "xz-utils",
        "decompresses the 6.12 kernel's modules for the test VM",
    ),
    (
        "binutils",
        "strip: drops debug info from the binaries packed into the test VM",
    ),
    (
        "systemd",
        "systemd, systemctl and systemd-socket-activate, copied into the test VM: rein's units \
         under a real systemd (PID 1 of a container there)",
    ),
];
/// qemu comes from bookworm-backports: bookworm's own qemu-system-x86 conflicts with the
/// qemu-utils from backports that machines of this kind have preinstalled.
const QEMU_PACKAGE: &str = "qemu-system-x86";
const BACKPORTS: &str = "bookworm-backports";
const BACKPORTS_SOURCE: &str = "/etc/apt/sources.list.d/rein-backports.sources";

/// A setup step: checks, does what is missing, and says what it found or did.
type Step = fn() -> anyhow::Result<String>;

pub fn run() -> anyhow::Result<()> {
    let started = Instant::now();
    let steps: [(&str, Step); 9] = [
        ("userspace toolchain", stable_toolchain),
        ("eBPF nightly toolchain", ebpf_toolchain),
        ("bpf-linker", bpf_linker),
        ("apt source for bookworm-backports", backports_source),
        ("Debian packages", debian_packages),
        ("test VM kernels", vm_kernels),
        (
            "container engines for the VM tests (Podman, Docker, containerd)",
            crate::vm::engines::setup,
        ),
        (
            "npm packages for the dashboard and manifest checks",
            npm_packages,
        ),
        (
            "promtool with Kubernetes service discovery",
            trixie_promtool,
        ),
    ];
    let total = steps.len();
    for (i, (name, step)) in steps.into_iter().enumerate() {
        eprintln!("[{}/{total}] {name} ...", i + 1);
        let t = Instant::now();
        let outcome = step().with_context(|| format!("setup step {name:?} failed"))?;
        eprintln!(
            "[{}/{total}] {name}: {outcome} ({:.1}s)",
            i + 1,
            t.elapsed().as_secs_f64()
        );
    }
    eprintln!("setup complete in {:.1}s", started.elapsed().as_secs_f64());
    Ok(())
}

fn rustup() -> Command {
    let mut c = Command::new("rustup");
    c.current_dir(workspace_root());
    c
}

fn installed_components(toolchain: &str) -> Vec<String> {
    output(rustup().args(["component", "list", "--installed", "--toolchain", toolchain]))
        .map(|s| s.lines().map(str::to_owned).collect())
        .unwrap_or_default()
}

fn has_components(toolchain: &str, wanted: &[&str]) -> bool {
    let have = installed_components(toolchain);
    wanted.iter().all(|w| have.iter().any(|h| h.starts_with(w)))
}

fn stable_toolchain() -> anyhow::Result<String> {
    let tc = toolchain::stable()?;
    let wanted = ["rustfmt", "clippy", "rust-std-x86_64-unknown-linux-musl"];
    if has_components(&tc, &wanted) {
        return Ok(format!("{tc} with {} already installed", wanted.join(", ")));
    }
    // Without arguments rustup installs what rust-toolchain.toml names, components included.
    run_checked(rustup().args(["toolchain", "install", "--no-self-update"]))?;
    Ok(format!("installed {tc}"))
}

fn ebpf_toolchain() -> anyhow::Result<String> {
    let tc = toolchain::ebpf_nightly()?;
    if has_components(&tc, &["rust-src"]) {
        return Ok(format!("{tc} with rust-src already installed"));
    }
    run_checked(rustup().args([
        "toolchain",
        "install",
        &tc,
        "--profile",
        "minimal",
        "--component",
        "rust-src",
        "--no-self-update",
    ]))?;
    Ok(format!("installed {tc} with rust-src"))
}

/// Builds bpf-linker against the eBPF nightly's own libLLVM. `cargo install bpf-linker` looks
/// for a system LLVM; instead we point LLVM_PREFIX at a persistent directory of symlinks into
/// the nightly's sysroot. The built linker keeps an rpath into that directory, so it lives
/// in the cache (not /tmp), and a stamp records which nightly it was built for.
fn bpf_linker() -> anyhow::Result<String> {
    let nightly = toolchain::ebpf_nightly()?;
    let stamp_file = cache_dir().join("bpf-linker.stamp");
    let stamp = format!("bpf-linker {BPF_LINKER_VERSION} for {nightly}\n");
    let linker = cargo_bin_dir().join("bpf-linker");
    let runs = Command::new(&linker)
        .arg("--version")
        .output()
        .is_ok_and(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION)
        });
    if runs && std::fs::read_to_string(&stamp_file).is_ok_and(|s| s == stamp) {
        return Ok(format!("{} already built for {nightly}", linker.display()));
    }

    let sysroot = output(rustup().args(["run", &nightly, "rustc", "--print", "sysroot"]))?;
    let sysroot_lib = PathBuf::from(sysroot.trim()).join("lib");
    let prefix = cache_dir().join("llvm").join(&nightly);
    let (llvm_major, libs) = llvm_libs(&sysroot_lib)?;
    let prefix_lib = prefix.join("lib");
    std::fs::create_dir_all(&prefix_lib)
        .with_context(|| format!("creating {}", prefix_lib.display()))?;
    for lib in &libs {
        let name = lib
            .file_name()
            .ok_or_else(|| anyhow!("bad path {}", lib.display()))?;
        symlink_fresh(lib, &prefix_lib.join(name))?;
    }
    // bpf-linker's build links `-lLLVM`, which needs the unversioned name.
    let main_lib = libs
        .iter()
        .find(|l| l.extension().is_some_and(|e| e == "so"))
        .ok_or_else(|| anyhow!("no libLLVM-*.so in {}", sysroot_lib.display()))?;
    symlink_fresh(main_lib, &prefix_lib.join("libLLVM.so"))?;

    eprintln!(
        "      building bpf-linker {BPF_LINKER_VERSION} against LLVM {llvm_major} (about 2 minutes)"
    );
    run_checked(
        cargo()
            .env("LLVM_PREFIX", &prefix)
            .args([
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--force",
            ])
            .args([
                "--no-default-features",
                "--features",
                &format!("llvm-{llvm_major}"),
            ]),
    )?;
    std::fs::write(&stamp_file, stamp)
        .with_context(|| format!("writing {}", stamp_file.display()))?;
    Ok(format!(
        "built {} against LLVM {llvm_major} of {nightly}",
        linker.display()
    ))
}

/// The libLLVM files of a sysroot and the LLVM major version in their names
/// (`libLLVM-23-rust-1.101.0-nightly.so` -> 23).
fn llvm_libs(sysroot_lib: &Path) -> anyhow::Result<(u32, Vec<PathBuf>)> {
    let mut libs = Vec::new();
    let mut major = None;
    for entry in std::fs::read_dir(sysroot_lib)
        .with_context(|| format!("reading {}", sysroot_lib.display()))?
    {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if !name.starts_with("libLLVM") {
            continue;
        }
        if let Some(rest) = name.strip_prefix("libLLVM-") {
            major = rest
                .split('-')
                .next()
                .and_then(|m| m.parse().ok())
                .or(major);
        }
        libs.push(path);
    }
    let major = major.ok_or_else(|| {
        anyhow!(
            "no libLLVM-<major>-*.so in {}: is rust-src's nightly complete?",
            sysroot_lib.display()
        )
    })?;
    Ok((major, libs))
}

fn symlink_fresh(target: &Path, link: &Path) -> anyhow::Result<()> {
    if link.symlink_metadata().is_ok() {
        std::fs::remove_file(link).with_context(|| format!("removing {}", link.display()))?;
    }
    std::os::unix::fs::symlink(target, link)
        .with_context(|| format!("linking {} -> {}", link.display(), target.display()))
}

fn apt_available() -> anyhow::Result<()> {
    if Command::new("apt-get").arg("--version").output().is_err() {
        let names: Vec<&str> = PACKAGES.iter().map(|(p, _)| *p).collect();
        bail!(
            "apt-get not found: this setup targets Debian 12; install {QEMU_PACKAGE} and {} \
             with your package manager",
            names.join(" ")
        );
    }
    Ok(())
}

/// Adds bookworm-backports with the same mirror and key as the machine's bookworm source,
/// unless some source already provides it.
fn backports_source() -> anyhow::Result<String> {
    apt_available()?;
    let sources = apt_source_texts();
    if sources.iter().any(|(_, text)| {
        text.lines()
            .any(|l| !l.trim_start().starts_with('#') && l.contains(BACKPORTS))
    }) {
        return Ok(format!("{BACKPORTS} already configured"));
    }
    let (uri, signed_by) = sources
        .iter()
        .find_map(|(_, text)| bookworm_mirror(text))
        .ok_or_else(|| {
            anyhow!("no apt source for bookworm found in /etc/apt to copy the mirror from")
        })?;
    let mut stanza = format!("Types: deb\nURIs: {uri}\nSuites: {BACKPORTS}\nComponents: main\n");
    if let Some(key) = signed_by {
        stanza.push_str(&format!("Signed-By: {key}\n"));
    }
    std::fs::write(BACKPORTS_SOURCE, stanza)
        .with_context(|| format!("writing {BACKPORTS_SOURCE}"))?;
    Ok(format!("wrote {BACKPORTS_SOURCE} (mirror {uri})"))
}

fn apt_source_texts() -> Vec<(PathBuf, String)> {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        files.extend(
            dir.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "list" || e == "sources")),
        );
    }
    files
        .into_iter()
        .filter_map(|p| std::fs::read_to_string(&p).ok().map(|t| (p, t)))
        .collect()
}

/// Finds the mirror URI (and key) that serves `bookworm` itself, in deb822 or one-line form.
fn bookworm_mirror(text: &str) -> Option<(String, Option<String>)> {
    for stanza in text.split("\n\n") {
        let field = |name: &str| {
            stanza
                .lines()
                .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
        };
        if let (Some(uris), Some(suites)) = (field("URIs:"), field("Suites:"))
            && suites.split_whitespace().any(|s| s == "bookworm")
            && let Some(uri) = uris.split_whitespace().next()
        {
            return Some((uri.to_owned(), field("Signed-By:")));
        }
    }
    text.lines().find_map(|l| {
        let words: Vec<&str> = l
            .split_whitespace()
            .filter(|w| !w.starts_with('['))
            .collect();
        (words.first() == Some(&"deb") && words.get(2) == Some(&"bookworm"))
            .then(|| (words[1].to_owned(), None))
    })
}

fn is_installed(pkg: &str) -> bool {
    output(Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg]))
        .is_ok_and(|s| s.contains("install ok installed"))
}

fn apt_get() -> Command {
    let mut c = Command::new("apt-get");
    c.env("DEBIAN_FRONTEND", "noninteractive")
        .args(["-q", "-y", "--no-install-recommends"]);
    c
}

fn debian_packages() -> anyhow::Result<String> {
    apt_available()?;
    let missing: Vec<&str> = PACKAGES
        .iter()
        .map(|(p, _)| *p)
        .filter(|p| !is_installed(p))
        .collect();
    let qemu_missing = !is_installed(QEMU_PACKAGE);
    if missing.is_empty() && !qemu_missing {
        return Ok(format!(
            "{QEMU_PACKAGE} and {} packages already installed",
            PACKAGES.len()
        ));
    }
    eprintln!("      apt-get update");
    run_checked(Command::new("apt-get").args(["-q", "update"]))?;
    if qemu_missing {
        eprintln!("      installing {QEMU_PACKAGE} from {BACKPORTS}");
        run_checked(apt_get().args(["install", "-t", BACKPORTS, QEMU_PACKAGE]))?;
    }
    if !missing.is_empty() {
        eprintln!("      installing {}", missing.join(" "));
        run_checked(apt_get().arg("install").args(&missing))?;
    }
    let mut done = missing.clone();
    if qemu_missing {
        done.push(QEMU_PACKAGE);
    }
    Ok(format!("installed {}", done.join(" ")))
}

/// npm packages the offline checks use, pinned: Grafana's published dashboard types
/// (Apache-2.0; Grafana itself is AGPL and not used), the TypeScript compiler, and for
/// `deploy/kubernetes/` the Kubernetes API models (types and JSON-schema validators generated
/// from Kubernetes' OpenAPI), the Prometheus Operator's, and a YAML parser.
pub const NPM_PACKAGES: [&str; 5] = [
    "@grafana/schema@13.2.3",
    "typescript@5.9.3",
    "kubernetes-models@5.1.0",
    "@kubernetes-models/prometheus-operator@6.0.0",
    "yaml@2.9.1",
];

/// Where those packages live (`$REIN_CACHE/node`).
pub fn node_dir() -> PathBuf {
    cache_dir().join("node")
}

/// Installs [`NPM_PACKAGES`] into the cache with the machine's node and npm (a no-op when
/// the pinned versions are there).
fn npm_packages() -> anyhow::Result<String> {
    let dir = node_dir();
    let stamp = dir.join(".rein-stamp");
    let want = NPM_PACKAGES.join(" ");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == want) {
        return Ok(format!("cached in {}", dir.display()));
    }
    std::fs::create_dir_all(&dir)?;
    run_checked(
        Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--prefix"])
            .arg(&dir)
            .args(NPM_PACKAGES),
    )
    .context(
        "npm (Node.js) is needed for the dashboard and manifest checks: apt-get install npm",
    )?;
    std::fs::write(&stamp, &want)?;
    Ok(format!("installed {want} in {}", dir.display()))
}

/// Where [`trixie_promtool`] puts promtool.
pub fn promtool_path() -> PathBuf {
    cache_dir().join("promtool/usr/bin/promtool")
}

/// Debian trixie's promtool, unpacked into the cache: bookworm's (2.42) is built without
/// Kubernetes service discovery and refuses `kubernetes_sd_configs`, so it cannot check
/// `deploy/kubernetes/prometheus.yml`. apt-get downloads the package with lists of its own
/// in the cache (the machine's apt state and sources are not touched) from the machine's
/// Debian mirror; the binary needs only libc.
fn trixie_promtool() -> anyhow::Result<String> {
    let bin = promtool_path();
    let version = |bin: &Path| {
        output(Command::new(bin).arg("--version"))
            .ok()
            .and_then(|v| v.lines().next().map(str::to_owned))
    };
    if let Some(v) = version(&bin) {
        return Ok(format!("cached: {v}"));
    }
    apt_available()?;
    let (uri, signed_by) = apt_source_texts()
        .iter()
        .find_map(|(_, text)| bookworm_mirror(text))
        .ok_or_else(|| {
            anyhow!("no apt source for bookworm found in /etc/apt to copy the mirror from")
        })?;
    let dir = cache_dir().join("promtool");
    let apt = dir.join("apt");
    for sub in ["lists/partial", "archives/partial"] {
        std::fs::create_dir_all(apt.join(sub))?;
    }
    let list = apt.join("trixie.list");
    let options = signed_by
        .map(|k| format!("[signed-by={k}] "))
        .unwrap_or_default();
    std::fs::write(&list, format!("deb {options}{uri} trixie main\n"))?;
    let opt = |k: &str, v: &Path| format!("-o{k}={}", v.display());
    let isolated = [
        opt("Dir::Etc::SourceList", &list),
        opt("Dir::Etc::SourceParts", Path::new("/dev/null")),
        opt("Dir::State::Lists", &apt.join("lists")),
        opt("Dir::Cache::Archives", &apt.join("archives")),
        opt("Dir::State::Status", Path::new("/dev/null")),
        // The download goes into root's cache directory.
        "-oAPT::Sandbox::User=root".to_owned(),
    ];
    run_checked(
        Command::new("apt-get")
            .args(["-q", "update"])
            .args(&isolated),
    )?;
    run_checked(
        Command::new("apt-get")
            .args(["-q", "download", "promtool"])
            .args(&isolated)
            .current_dir(&apt),
    )?;
    let deb = std::fs::read_dir(&apt)?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("promtool_") && n.ends_with(".deb"))
        })
        .ok_or_else(|| {
            anyhow!(
                "apt-get download promtool left no .deb in {}",
                apt.display()
            )
        })?;
    run_checked(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&dir))?;
    let v = version(&bin).ok_or_else(|| {
        anyhow!(
            "{} does not run after unpacking {}",
            bin.display(),
            deb.display()
        )
    })?;
    Ok(format!("unpacked {v}"))
}

/// Fetches and unpacks every test kernel into the cache (a no-op when cached).
fn vm_kernels() -> anyhow::Result<String> {
    let mut got = Vec::new();
    for series in crate::vm::kernel::Series::ALL {
        got.push(crate::vm::kernel::fetch(series)?.release);
    }
    Ok(format!("cached: {}", got.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_bookworm_mirror_in_both_source_formats() {
        let deb822 = "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n\
                      Components: main\nSigned-By: /usr/share/keyrings/k.gpg\n\n\
                      Types: deb\nURIs: http://sec.example/debian-security\nSuites: bookworm-security\n";
        assert_eq!(
            bookworm_mirror(deb822),
            Some((
                "http://mirror.example/debian".into(),
                Some("/usr/share/keyrings/k.gpg".into())
            ))
        );
        let one_line = "# comment\ndeb [arch=amd64] http://m.example/debian bookworm main\n";
        assert_eq!(
            bookworm_mirror(one_line),
            Some(("http://m.example/debian".into(), None))
        );
        assert_eq!(
            bookworm_mirror("deb http://m.example/debian bookworm-security main"),
            None
        );
    }
}
