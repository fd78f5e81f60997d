//! cgroups made for one test, removed with what runs in them, and reading their files.

use std::{
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command},
};

use crate::*;

/// A cgroup created for one test under `/sys/fs/cgroup/rein-test/`; on drop its processes are
/// killed (cgroup.kill) and the directory removed, so a failing test leaves nothing behind.
pub struct CgroupGuard {
    path: PathBuf,
}

impl CgroupGuard {
    pub fn new(name: &str) -> Self {
        require_vm();
        let parent = Path::new(CGROUP_ROOT).join("rein-test");
        if !parent.exists() {
            std::fs::create_dir(&parent).unwrap();
            std::fs::write(
                parent.join("cgroup.subtree_control"),
                "+cpu +memory +io +pids +cpuset",
            )
            .unwrap();
        }
        let path = parent.join(name);
        if path.exists() {
            remove_cgroup(&path);
        }
        std::fs::create_dir(&path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        Self { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The cgroup id the kernel reports for sockets in this cgroup (the directory's inode).
    pub fn id(&self) -> u64 {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata(&self.path).unwrap().ino()
    }

    pub fn write(&self, file: &str, value: &str) {
        let p = self.path.join(file);
        std::fs::write(&p, value)
            .unwrap_or_else(|e| panic!("write {value:?} to {}: {e}", p.display()));
    }

    pub fn read(&self, file: &str) -> String {
        let p = self.path.join(file);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
    }

    /// A `key value` field of a flat-keyed file such as cpu.stat or memory.events.
    pub fn stat(&self, file: &str, key: &str) -> u64 {
        let text = self.read(file);
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {key} in {file}:\n{text}"))
    }

    /// Starts `cmd` with the child moved into this cgroup before it execs, so everything it
    /// does (CPU, memory, IO, sockets) is accounted here from the first instruction.
    pub fn spawn(&self, cmd: &mut Command) -> Child {
        spawn_in_cgroup(&self.path, cmd)
    }
}

/// Starts `cmd` with the child moved into the cgroup at `dir` before it execs.
pub fn spawn_in_cgroup(dir: &Path, cmd: &mut Command) -> Child {
    let procs = dir.join("cgroup.procs");
    // SAFETY: the closure runs in the forked child before exec and only calls
    // async-signal-safe operations (open/write/close through std::fs::write).
    unsafe {
        cmd.pre_exec(move || std::fs::write(&procs, "0"));
    }
    cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"))
}

pub(crate) fn remove_cgroup(path: &Path) {
    let _ = std::fs::write(path.join("cgroup.kill"), "1");
    // Killed tasks leave the cgroup asynchronously; rmdir fails with EBUSY until they have.
    for _ in 0..200 {
        match std::fs::remove_dir(path) {
            Ok(()) => return,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
        }
    }
    eprintln!("warning: could not remove {}", path.display());
}

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        remove_cgroup(&self.path);
    }
}

/// `MAJ:MIN` of a block device node.
pub fn device_number(dev: &str) -> String {
    use std::os::unix::fs::MetadataExt as _;
    let rdev = std::fs::metadata(dev)
        .unwrap_or_else(|e| panic!("stat {dev}: {e}"))
        .rdev();
    format!("{}:{}", libc::major(rdev), libc::minor(rdev))
}

/// Usage in microseconds from a cgroup directory's cpu.stat.
pub fn cpu_usage_usec(dir: &Path) -> u64 {
    let text = std::fs::read_to_string(dir.join("cpu.stat")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("usage_usec ")?.trim().parse().ok())
        .unwrap()
}
