//! The test kernels: Debian's cloud kernels, fetched with `apt-get download`, unpacked once
//! and cached by package version under `<cache>/kernels/`.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, anyhow, bail};

use crate::{
    cmd::{output, run_checked},
    paths::cache_dir,
};

/// The kernels the suite runs on. One place lists them; `--kernel all` means all of these.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Series {
    /// Debian 12's newest LTS cloud kernel (bookworm-security), the default.
    #[value(name = "6.12")]
    V6_12,
    /// Debian 12's original cloud kernel, the older LTS users still run.
    #[value(name = "6.1")]
    V6_1,
}

impl Series {
    pub const ALL: [Self; 2] = [Self::V6_12, Self::V6_1];

    pub const fn name(self) -> &'static str {
        match self {
            Self::V6_12 => "6.12",
            Self::V6_1 => "6.1",
        }
    }

    /// The metapackage whose dependency names the current kernel package of the series.
    const fn meta_package(self) -> &'static str {
        match self {
            Self::V6_12 => "linux-image-6.12-cloud-amd64",
            Self::V6_1 => "linux-image-cloud-amd64",
        }
    }
}

/// An unpacked kernel package.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// The package name, e.g. `linux-image-6.12.57+deb12-cloud-amd64-unsigned`.
    pub package: String,
    /// The kernel release (`uname -r`), the directory name under lib/modules.
    pub release: String,
    pub vmlinuz: PathBuf,
    pub modules_dir: PathBuf,
}

/// The kernel package for a series: `<meta>` depends on `linux-image-X-cloud-amd64`; its
/// `-unsigned` twin holds the same kernel without the Secure Boot signature wrapper.
fn resolve_package(series: Series) -> anyhow::Result<String> {
    let deps = output(Command::new("apt-cache").args(["depends", series.meta_package()]))?;
    let signed = deps
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|d| d.starts_with("linux-image-"))
        .ok_or_else(|| {
            anyhow!(
                "apt-cache depends {} names no kernel",
                series.meta_package()
            )
        })?;
    Ok(format!("{}-unsigned", signed.trim()))
}

/// Returns the cached kernel of `series`, fetching and unpacking it first if needed.
pub fn fetch(series: Series) -> anyhow::Result<Kernel> {
    let root = cache_dir().join("kernels");
    let package = match resolve_package(series) {
        Ok(p) => p,
        Err(first) => {
            // Fresh machines have no package lists yet.
            eprintln!("      apt-cache had no answer ({first:#}); running apt-get update");
            run_checked(Command::new("apt-get").args(["-q", "update"]))?;
            resolve_package(series)?
        }
    };
    let dir = root.join(&package);
    let done = dir.join(".unpacked");
    if !done.exists() {
        eprintln!("      fetching {package}");
        let download = root.join("download");
        std::fs::create_dir_all(&download)?;
        let _ = std::fs::remove_dir_all(&dir);
        // apt-get download writes into the current directory.
        let fetched = run_checked(
            Command::new("apt-get")
                .current_dir(&download)
                .args(["-q", "download", &package]),
        );
        if fetched.is_err() {
            run_checked(Command::new("apt-get").args(["-q", "update"]))?;
            run_checked(
                Command::new("apt-get")
                    .current_dir(&download)
                    .args(["-q", "download", &package]),
            )?;
        }
        let deb = std::fs::read_dir(&download)?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("{package}_")) && n.ends_with(".deb"))
            })
            .ok_or_else(|| {
                anyhow!(
                    "apt-get download left no {package}_*.deb in {}",
                    download.display()
                )
            })?;
        std::fs::create_dir_all(&dir)?;
        run_checked(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&dir))?;
        std::fs::remove_file(&deb)?;
        std::fs::write(&done, "")?;
    }
    locate(&package, &dir)
}

fn locate(package: &str, dir: &Path) -> anyhow::Result<Kernel> {
    let boot = dir.join("boot");
    let vmlinuz = std::fs::read_dir(&boot)
        .with_context(|| format!("reading {}", boot.display()))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("vmlinuz-"))
        })
        .ok_or_else(|| anyhow!("no vmlinuz in {}", boot.display()))?;
    let release = vmlinuz
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("vmlinuz-"))
        .ok_or_else(|| anyhow!("odd kernel name {}", vmlinuz.display()))?
        .to_owned();
    let modules_dir = dir.join("lib/modules").join(&release);
    if !modules_dir.join("kernel").is_dir() {
        bail!("{} has no kernel/ modules", modules_dir.display());
    }
    Ok(Kernel {
        package: package.to_owned(),
        release,
        vmlinuz,
        modules_dir,
    })
}

/// A kernel module ready to be packed: its file name (`sch_fq.ko`) and uncompressed bytes.
pub struct Module {
    pub file_name: String,
    pub data: Vec<u8>,
}

/// The modules to load, dependencies first. Debian's package ships no modules.dep (depmod
/// makes it at install time), so dependencies come from each module's own `depends=` entry
/// in its .modinfo section. Modules built into the kernel (modules.builtin) are skipped.
pub fn module_load_order(kernel: &Kernel, wanted: &[&str]) -> anyhow::Result<Vec<Module>> {
    let mut index = std::collections::HashMap::new();
    index_modules(&kernel.modules_dir.join("kernel"), &mut index)?;
    let builtin =
        std::fs::read_to_string(kernel.modules_dir.join("modules.builtin")).unwrap_or_default();
    let is_builtin = |name: &str| {
        builtin
            .lines()
            .any(|l| l.rsplit('/').next().map(normalise) == Some(format!("{name}.ko")))
    };
    let mut order: Vec<Module> = Vec::new();
    let mut stack: Vec<(String, bool)> = wanted.iter().map(|w| (normalise(w), false)).collect();
    stack.reverse();
    // Depth-first: a module is pushed back (expanded = true) above its dependencies, so it
    // is emitted after them.
    let mut seen = std::collections::HashSet::new();
    while let Some((name, expanded)) = stack.pop() {
        if order.iter().any(|m| m.file_name == format!("{name}.ko")) {
            continue;
        }
        let Some(path) = index.get(&name) else {
            if is_builtin(&name) {
                continue;
            }
            bail!(
                "module {name} is neither in {} nor built in",
                kernel.modules_dir.display()
            );
        };
        let data = read_module(path)?;
        if expanded {
            order.push(Module {
                file_name: format!("{name}.ko"),
                data,
            });
            continue;
        }
        if !seen.insert(name.clone()) {
            bail!("module dependency cycle through {name}");
        }
        stack.push((name.clone(), true));
        for dep in modinfo_depends(&data) {
            stack.push((normalise(&dep), false));
        }
    }
    Ok(order)
}

/// Module names use `-` and `_` interchangeably; compare them with `_`.
fn normalise(name: &str) -> String {
    name.replace('-', "_")
}

fn index_modules(
    dir: &Path,
    index: &mut std::collections::HashMap<String, PathBuf>,
) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            index_modules(&path, index)?;
        } else if let Some(stem) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.split(".ko").next())
        {
            index.insert(normalise(stem), path.clone());
        }
    }
    Ok(())
}

fn read_module(path: &Path) -> anyhow::Result<Vec<u8>> {
    if path.extension().is_some_and(|e| e == "xz") {
        let out = Command::new("xz")
            .arg("-dc")
            .arg(path)
            .output()
            .context("running xz")?;
        if !out.status.success() {
            bail!("xz -dc {} failed", path.display());
        }
        Ok(out.stdout)
    } else {
        std::fs::read(path).with_context(|| format!("reading {}", path.display()))
    }
}

/// The `depends=a,b` string of a module's .modinfo section (NUL-separated `key=value`).
fn modinfo_depends(data: &[u8]) -> Vec<String> {
    const KEY: &[u8] = b"\0depends=";
    data.windows(KEY.len())
        .position(|w| w == KEY)
        .map(|at| {
            let rest = &data[at + KEY.len()..];
            let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
            String::from_utf8_lossy(&rest[..end])
                .split(',')
                .filter(|d| !d.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modinfo_depends_reads_the_list() {
        let data = b"\x7fELF...\0license=GPL\0depends=virtio,virtio_ring\0intree=Y\0";
        assert_eq!(modinfo_depends(data), vec!["virtio", "virtio_ring"]);
        assert!(modinfo_depends(b"\0depends=\0name=x").is_empty());
        assert!(modinfo_depends(b"no modinfo here").is_empty());
    }
}
