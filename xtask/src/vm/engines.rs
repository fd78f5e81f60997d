//! The container engines the VM tests drive (Podman, Docker, containerd, buildah), as this
//! Debian release ships them, on a read-only disk of their own.
//!
//! They are ~300 MB: packed into the initramfs (which the guest copies into RAM) they would
//! double its memory use, so `cargo xtask setup` downloads the packages (never installing them
//! on the build machine, whose cgroups are not ours), unpacks them and writes an ext4 image
//! (`mke2fs -d`, no mount needed). The guest's /init mounts it as /dev/vdc and lays its /usr and
//! /etc under the guest's own with overlayfs (see init.sh). Shared libraries the packages'
//! binaries need that the machine already has are copied in from the machine, as the
//! initramfs does for its tools.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::{
    cmd::{output, run_checked},
    paths::cache_dir,
};

/// Debian packages unpacked into the image. Named one by one (not resolved by apt) so that
/// the image does not depend on what the build machine happens to have installed; libraries
/// are added from the machine by `ldd`.
const PACKAGES: &[&str] = &[
    "podman",
    "conmon",
    "buildah",
    "golang-github-containers-common",
    "golang-github-containers-image",
    "docker.io",
    "tini",
    "containerd",
    "libgpgme11",
    "libsubid4",
];

/// Executables whose shared libraries must be in the image.
const EXECUTABLES: &[&str] = &[
    "usr/bin/podman",
    "usr/bin/conmon",
    "usr/bin/buildah",
    "usr/sbin/dockerd",
    "usr/bin/docker",
    "usr/bin/containerd",
    "usr/bin/containerd-shim-runc-v2",
    "usr/bin/ctr",
];

/// Files of the packages the tests never use, left out to keep the image small: docker.io's
/// overlay-network tools, containerd's v1 shims, documentation.
const LEFT_OUT: &[&str] = &[
    "usr/bin/dnet",
    "usr/sbin/ovrouter",
    "usr/bin/containerd-shim",
    "usr/bin/containerd-shim-runc-v1",
    "usr/share/doc",
    "usr/share/man",
    "usr/share/bash-completion",
    "usr/share/zsh",
    "usr/share/fish",
];

/// Files the tests need that no package ships (engines' configuration for a guest without
/// systemd, and the image the tests import).
const CONTAINERS_CONF: &str = "\
# Written by xtask/src/vm/engines.rs: the test VM has no systemd and no journald.
[engine]
cgroup_manager = \"cgroupfs\"
events_logger = \"file\"
runtime = \"runc\"
";
const STORAGE_CONF: &str = "\
# Written by xtask/src/vm/engines.rs: the guest's root is a tmpfs.
[storage]
driver = \"vfs\"
runroot = \"/run/containers/storage\"
graphroot = \"/var/lib/containers/storage\"
";

/// Size of the image: the unpacked packages take ~300 MB.
const IMAGE_BYTES: u64 = 512 << 20;

/// Bumped when what goes into the image changes, so cached images are rebuilt.
const FORMAT: u32 = 3;

fn dir() -> PathBuf {
    cache_dir().join("engines")
}

/// The image the VM boots with as /dev/vdc, when `cargo xtask setup` made it.
pub fn image() -> Option<PathBuf> {
    let img = dir().join("engines.img");
    let stamp = std::fs::read_to_string(dir().join("engines.stamp")).ok()?;
    (img.is_file() && stamp == expected_stamp(&debs().ok()?)).then_some(img)
}

fn debs() -> anyhow::Result<Vec<PathBuf>> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir().join("debs"))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    found.sort();
    Ok(found)
}

fn expected_stamp(debs: &[PathBuf]) -> String {
    let mut s = format!("format {FORMAT}\n");
    for d in debs {
        s.push_str(&d.file_name().unwrap_or_default().to_string_lossy());
        s.push('\n');
    }
    s
}

/// `cargo xtask setup`'s step: downloads the packages' current versions (when the cache
/// holds other ones) and builds the image (no-op if built from them).
pub fn setup() -> anyhow::Result<String> {
    let have: Vec<String> = debs()
        .unwrap_or_default()
        .iter()
        .filter_map(|d| Some(d.file_name()?.to_str()?.to_owned()))
        .collect();
    if have != current_files()? {
        download()?;
    }
    if let Some(img) = image() {
        return Ok(format!("cached: {}", img.display()));
    }
    build()
}

/// The .deb file names of the packages' current versions, as apt would download them
/// (`--print-uris` downloads nothing), sorted.
fn current_files() -> anyhow::Result<Vec<String>> {
    let ask = || {
        output(
            Command::new("apt-get")
                .args(["-q", "download", "--print-uris"])
                .args(PACKAGES),
        )
    };
    let text = match ask() {
        Ok(t) => t,
        Err(_) => {
            // A machine whose package lists are missing or stale: refresh them once.
            run_checked(Command::new("apt-get").args(["-q", "update"]))?;
            ask()?
        }
    };
    // 'URI' FILE SIZE HASH
    let mut files: Vec<String> = text
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_owned))
        .collect();
    files.sort();
    if files.len() != PACKAGES.len() {
        bail!(
            "apt knows {} of the {} engine packages ({}): this needs Debian 12 (bookworm) apt \
             sources",
            files.len(),
            PACKAGES.len(),
            PACKAGES.join(" ")
        );
    }
    Ok(files)
}

fn download() -> anyhow::Result<()> {
    let debs = dir().join("debs");
    let _ = std::fs::remove_dir_all(&debs);
    std::fs::create_dir_all(&debs)?;
    eprintln!("      apt-get download {}", PACKAGES.join(" "));
    let fetch = || {
        run_checked(
            Command::new("apt-get")
                .args(["-q", "download", "-oAPT::Sandbox::User=root"])
                .args(PACKAGES)
                .current_dir(&debs),
        )
    };
    if fetch().is_err() {
        // A machine whose package lists are missing or stale: refresh them once.
        run_checked(Command::new("apt-get").args(["-q", "update"]))?;
        fetch()?;
    }
    Ok(())
}

fn build() -> anyhow::Result<String> {
    let debs = debs()?;
    let root = dir().join("root");
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root)?;
    for d in &debs {
        run_checked(Command::new("dpkg-deb").arg("-x").arg(d).arg(&root))?;
    }
    for p in LEFT_OUT {
        let path = root.join(p);
        if path.is_dir() {
            std::fs::remove_dir_all(&path)?;
        } else if path.exists() {
            std::fs::remove_file(&path)?;
        }
    }
    let libdir = root.join("usr/lib/x86_64-linux-gnu");
    for exe in EXECUTABLES {
        for lib in host_libs(&root.join(exe), &libdir)? {
            // The machine's /lib is /usr/lib (merged /usr): the canonical directory, under
            // the name the loader asks for (the file itself may be a versioned one).
            let (Some(parent), Some(name)) = (lib.parent(), lib.file_name()) else {
                bail!("odd library path {}", lib.display());
            };
            let to = root
                .join(std::fs::canonicalize(parent)?.strip_prefix("/")?)
                .join(name);
            if !to.exists() {
                std::fs::create_dir_all(to.parent().unwrap_or(&root))?;
                std::fs::copy(&lib, &to).with_context(|| format!("copying {}", lib.display()))?;
            }
        }
    }
    write(&root, "etc/containers/containers.conf", CONTAINERS_CONF)?;
    write(&root, "etc/containers/storage.conf", STORAGE_CONF)?;
    test_image(&root)?;

    let img = dir().join("engines.img");
    let _ = std::fs::remove_file(&img);
    std::fs::File::create(&img)?.set_len(IMAGE_BYTES)?;
    run_checked(
        Command::new("mke2fs")
            .args(["-q", "-t", "ext4", "-L", "rein-engines", "-d"])
            .arg(&root)
            .arg(&img),
    )
    .context("mke2fs (e2fsprogs) writing the engines image")?;
    std::fs::remove_dir_all(&root)?;
    std::fs::write(dir().join("engines.stamp"), expected_stamp(&debs))?;
    Ok(format!(
        "built {} from {} packages",
        img.display(),
        debs.len()
    ))
}

fn write(root: &Path, rel: &str, text: &str) -> anyhow::Result<()> {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap_or(root))?;
    std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))
}

/// The rootfs the tests import as an image (`podman import`, `docker import`, or `ctr run
/// --rootfs` unpacked): static busybox with its applets, iperf3 and install with their
/// libraries, at
/// /usr/share/rein-tests/rootfs.tar.
fn test_image(root: &Path) -> anyhow::Result<()> {
    let fs = dir().join("rootfs");
    let _ = std::fs::remove_dir_all(&fs);
    for d in [
        "bin", "usr/bin", "lib64", "tmp", "proc", "sys", "dev", "etc",
    ] {
        std::fs::create_dir_all(fs.join(d))?;
    }
    std::fs::copy("/bin/busybox", fs.join("bin/busybox"))
        .context("copying /bin/busybox (busybox-static)")?;
    let applets = output(Command::new("/bin/busybox").arg("--list"))?;
    for a in applets.lines().filter(|a| !a.is_empty() && *a != "busybox") {
        std::os::unix::fs::symlink("busybox", fs.join("bin").join(a))?;
    }
    // coreutils' install: the DaemonSet's init container runs `install -D`, which Debian's
    // busybox lacks.
    for exe in ["/usr/bin/iperf3", "/usr/bin/install"] {
        let exe = Path::new(exe);
        let rel = exe.strip_prefix("/")?;
        std::fs::copy(exe, fs.join(rel)).with_context(|| format!("copying {}", exe.display()))?;
        for lib in super::initramfs::shared_libs(exe, None)? {
            // Under the name the loader asks for (a symlink's target may be versioned).
            let to = fs.join(lib.strip_prefix("/")?);
            std::fs::create_dir_all(to.parent().unwrap_or(&fs))?;
            std::fs::copy(&lib, &to)?;
        }
    }
    std::fs::write(fs.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")?;
    std::fs::write(fs.join("etc/group"), "root:x:0:\n")?;
    let tar = root.join("usr/share/rein-tests/rootfs.tar");
    std::fs::create_dir_all(tar.parent().unwrap_or(root))?;
    run_checked(
        Command::new("tar")
            .arg("-C")
            .arg(&fs)
            .args(["--owner=0", "--group=0", "-cf"])
            .arg(&tar)
            .arg("."),
    )?;
    std::fs::remove_dir_all(&fs)?;
    Ok(())
}

/// The shared libraries of `exe` (and its loader) that `ldd` finds outside `packaged`, the
/// unpacked packages' library directory, which it searches first.
fn host_libs(exe: &Path, packaged: &Path) -> anyhow::Result<Vec<PathBuf>> {
    if !exe.exists() {
        bail!("{} is not in the unpacked packages", exe.display());
    }
    let mut libs = super::initramfs::shared_libs(exe, Some(packaged))?;
    libs.retain(|p| !p.starts_with(packaged));
    Ok(libs)
}
