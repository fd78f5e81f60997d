//! Builds the guest's initramfs: an uncompressed newc cpio archive (the `cpio` crate) holding
//! busybox, host tools with their shared libraries, kernel modules, rein and the tests.

use std::{
    collections::BTreeMap,
    io::{BufWriter, Write as _},
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, anyhow, bail};

use crate::cmd::output;

enum Node {
    Dir,
    File { data: Vec<u8>, mode: u32 },
}

/// An in-memory tree, written out in one go. Parent directories are added automatically.
#[derive(Default)]
pub struct Initramfs {
    nodes: BTreeMap<String, Node>,
}

impl Initramfs {
    fn add_parents(&mut self, path: &str) {
        let mut p = String::new();
        let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        for part in &parts[..parts.len().saturating_sub(1)] {
            if !p.is_empty() {
                p.push('/');
            }
            p.push_str(part);
            self.nodes.entry(p.clone()).or_insert(Node::Dir);
        }
    }

    pub fn dir(&mut self, path: &str) {
        self.add_parents(path);
        self.nodes
            .insert(path.trim_start_matches('/').to_owned(), Node::Dir);
    }

    pub fn bytes(&mut self, path: &str, data: Vec<u8>, mode: u32) {
        self.add_parents(path);
        self.nodes.insert(
            path.trim_start_matches('/').to_owned(),
            Node::File { data, mode },
        );
    }

    /// Copies a host file (following symlinks) to `path` in the image.
    pub fn file(&mut self, path: &str, host: &Path, mode: u32) -> anyhow::Result<()> {
        let data = std::fs::read(host).with_context(|| format!("reading {}", host.display()))?;
        self.bytes(path, data, mode);
        Ok(())
    }

    /// Copies an executable without its debug sections (`strip --strip-debug`; symbols stay,
    /// so panics still name their functions).
    pub fn stripped(&mut self, path: &str, host: &Path) -> anyhow::Result<()> {
        // strip cannot write to a pipe: go through a file next to the input, named apart for
        // each call (`cargo xtask vm-fleet` packs two images at once).
        static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = host.with_extension(format!("{}-{n}.stripped", std::process::id()));
        let out = Command::new("strip")
            .arg("--strip-debug")
            .arg("-o")
            .arg(&tmp)
            .arg(host)
            .output()
            .context("running strip (binutils)")?;
        if !out.status.success() {
            bail!(
                "strip {} failed: {}",
                host.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        self.file(path, &tmp, 0o755)?;
        std::fs::remove_file(&tmp).with_context(|| format!("removing {}", tmp.display()))
    }

    /// Copies a dynamically linked host executable to `path` together with every shared
    /// library `ldd` names, each at its host path (so the host's loader paths work as-is).
    pub fn executable_with_libs(&mut self, path: &str, host: &Path) -> anyhow::Result<()> {
        self.file(path, host, 0o755)?;
        for lib in shared_libs(host, None)? {
            let guest = lib
                .to_str()
                .ok_or_else(|| anyhow!("non-UTF-8 path {}", lib.display()))?;
            if !self.nodes.contains_key(guest.trim_start_matches('/')) {
                self.file(guest, &lib, 0o755)?;
            }
        }
        Ok(())
    }

    /// Writes the archive; returns its size in bytes.
    pub fn write(&self, out: &Path) -> anyhow::Result<u64> {
        let file =
            std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
        let mut w = BufWriter::new(file);
        for (ino, (name, node)) in self.nodes.iter().enumerate() {
            let b = cpio::newc::Builder::new(name)
                .ino(u32::try_from(ino + 1)?)
                .uid(0)
                .gid(0);
            let (b, data): (_, &[u8]) = match node {
                Node::Dir => (b.mode(0o040_755).nlink(2), &[]),
                Node::File { data, mode } => (b.mode(0o100_000 | mode).nlink(1), data),
            };
            let mut entry = b.write(&mut w, u32::try_from(data.len())?);
            entry.write_all(data)?;
            entry.finish()?;
        }
        cpio::newc::trailer(&mut w)?;
        let file = w
            .into_inner()
            .map_err(|e| anyhow!("flushing {}: {e}", out.display()))?;
        Ok(file.metadata()?.len())
    }
}

/// The shared libraries (and the dynamic loader) a host executable needs, from `ldd`;
/// `search_first` is searched before the machine's own directories (`LD_LIBRARY_PATH`).
pub(super) fn shared_libs(exe: &Path, search_first: Option<&Path>) -> anyhow::Result<Vec<PathBuf>> {
    let mut ldd = Command::new("ldd");
    ldd.arg(exe);
    if let Some(dir) = search_first {
        ldd.env("LD_LIBRARY_PATH", dir);
    }
    let text = match output(&mut ldd) {
        Ok(t) => t,
        // ldd fails on static executables ("not a dynamic executable").
        Err(_) => return Ok(Vec::new()),
    };
    let mut libs = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.contains("not found") {
            bail!("{}: {line}", exe.display());
        }
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
        let path = match line.split_once("=>") {
            Some((_, right)) => right.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(p));
        }
    }
    Ok(libs)
}
