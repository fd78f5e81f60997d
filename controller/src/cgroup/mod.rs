//! rein's cgroup v2 tree: one directory per container under the managed root.
//!
//! The kernel is the database: limits are read back from the cgroup files (and the priority
//! class from an extended attribute on the directory), never from the agent's memory.
//!
//! rein writes the v2 interface files itself instead of going through cgroups-rs 0.5: that
//! crate hard-codes `/sys/fs/cgroup` as the hierarchy root (so it cannot be pointed at a
//! managed subtree, nor at a temporary directory in tests), picks cgroup v1 on hybrid hosts
//! (where v1 hierarchies are not rein's to touch), and maps v1 notions (shares, memsw) onto v2
//! files. Each controller is one small file here with its file names as constants; all writes
//! go through `files::write`.

mod cpu;
mod cpuset;
pub mod external;
pub mod files;
mod io;
mod memory;
mod pids;
mod tree;
mod usage;
mod xattr;

use std::{
    ffi::CString,
    fmt,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
    str::FromStr,
    time::{Duration, Instant},
};

use serde::Serialize;

pub use self::files::FileError;
use crate::limits::{LimitError, Limits};

pub use external::{External, Labels, Registry};
pub use tree::{Entry, MAX_DEPTH, PRIORITY_XATTR, Staged, Tree};
pub use usage::{DeviceIo, Pressure, Psi, Usage, read as read_usage};

/// Controllers rein enables for its containers.
pub const CONTROLLERS: [&str; 5] = ["cpu", "memory", "io", "pids", "cpuset"];
/// `statfs` magic of cgroup2 (include/uapi/linux/magic.h).
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// A container name: `[A-Za-z0-9][A-Za-z0-9_.-]{0,127}`. It is a single path component that
/// cannot be `.` or `..`, so joining it to the managed root never leaves the root.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct ContainerName(String);

impl ContainerName {
    pub const ACCEPTED: &'static str =
        "1 to 128 characters: letters, digits, '_', '.', '-', starting with a letter or digit";

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for ContainerName {
    type Err = CgroupError;
    fn from_str(s: &str) -> Result<Self, CgroupError> {
        let ok = s.len() <= 128
            && s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(CgroupError::BadName {
                name: s.chars().take(200).collect(),
            })
        }
    }
}

impl fmt::Display for ContainerName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a managed cgroup is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Processes run in it (and in any cgroup they make below it).
    #[default]
    Container,
    /// It holds containers and groups; its limits cap the sum of its members.
    Group,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Container => "container",
            Self::Group => "group",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("invalid container name {name:?}: {}", ContainerName::ACCEPTED)]
    BadName { name: String },
    #[error(transparent)]
    Limit(#[from] LimitError),
    #[error(transparent)]
    File(#[from] FileError),
    #[error("container {0} does not exist (see `rein ls`)")]
    NotFound(ContainerName),
    #[error(
        "{0} already exists (names are unique across containers and groups); change it with \
         `rein set {0}`"
    )]
    Exists(ContainerName),
    #[error("group {0} does not exist; create it with `rein group create {0}` (see `rein ls`)")]
    NoSuchGroup(ContainerName),
    #[error("{0} is a container, not a group; --group takes a group made with `rein group create`")]
    NotAGroup(ContainerName),
    #[error(
        "{0} is a pod's group; its members are its pod's containers, registered by the runtime's hook"
    )]
    PodGroup(ContainerName),
    #[error("{name} would be nested too deep: at most {most} levels (a container in {} groups)", most - 1)]
    TooDeep { name: ContainerName, most: usize },
    #[error(
        "group {name} still holds {members}; remove them first, or use --force to remove the \
         group with everything in it"
    )]
    GroupNotEmpty {
        name: ContainerName,
        members: String,
    },
    #[error("container {name} still runs {procs} processes; use --force to kill them")]
    Busy { name: ContainerName, procs: usize },
    #[error("{path} is not inside a cgroup2 filesystem: rein only manages cgroup v2{hint}")]
    NotCgroup2 { path: PathBuf, hint: &'static str },
    #[error(
        "{path} is {level} levels deep in the cgroup tree; rein's programs see managed cgroups \
         down to level {most}, and groups nest below the root: choose a root at most {} levels \
         deep (the default /sys/fs/cgroup/rein.slice is 1)", most - 1 - crate::cgroup::MAX_DEPTH
    )]
    RootTooDeep {
        path: PathBuf,
        level: usize,
        most: usize,
    },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{failed}; rolled back the earlier writes of this request{rollback_note}")]
    RolledBack {
        failed: FileError,
        rollback_note: String,
    },
    #[error("processes of {name} did not exit within {secs}s after cgroup.kill")]
    KillTimeout { name: ContainerName, secs: u64 },
}

/// What a change will write, computed (and validated) before anything is written.
#[derive(Debug, Default)]
pub struct Plan {
    steps: Vec<Step>,
}

#[derive(Debug)]
struct Step {
    file: &'static str,
    value: String,
    /// For `io.max`: the device whose previous line restores on rollback.
    device: Option<String>,
}

impl Plan {
    fn file(&mut self, file: &'static str, value: String) {
        self.steps.push(Step {
            file,
            value,
            device: None,
        });
    }

    fn device_file(&mut self, file: &'static str, value: String, device: String) {
        self.steps.push(Step {
            file,
            value,
            device: Some(device),
        });
    }

    /// The writes as `(file, value)`, in order (for display and tests).
    pub fn writes(&self) -> Vec<(&'static str, &str)> {
        self.steps
            .iter()
            .map(|s| (s.file, s.value.as_str()))
            .collect()
    }

    /// Builds the plan for the cgroup-file part of a validated set of limits (network limits
    /// go to the eBPF maps, see `node`). Fails, writing nothing, when a device path does not
    /// resolve.
    pub fn for_limits(l: &Limits) -> Result<Self, LimitError> {
        let mut plan = Self::default();
        cpuset::plan(l, &mut plan);
        cpu::plan(l, &mut plan);
        memory::plan(l, &mut plan);
        pids::plan(l, &mut plan);
        io::plan(l, &mut plan)?;
        Ok(plan)
    }
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> CgroupError {
    let path = path.to_owned();
    move |source| CgroupError::Io { op, path, source }
}

/// This process's cgroup v2 id: the inode of its directory under the cgroup2 mount
/// (`/proc/self/cgroup` names the path, `/proc/self/mountinfo` the mount). None without a
/// cgroup2 mount.
pub fn own_cgroup_id() -> Option<u64> {
    use std::os::unix::fs::MetadataExt as _;
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let rel = own.lines().find_map(|l| l.strip_prefix("0::"))?;
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    // "36 35 0:30 / /sys/fs/cgroup rw,... - cgroup2 cgroup2 rw,...": the mount point is the
    // fifth field, the type the first after " - ".
    let mount = mounts.lines().find_map(|l| {
        let (fields, rest) = l.split_once(" - ")?;
        (rest.split_whitespace().next()? == "cgroup2")
            .then(|| fields.split_whitespace().nth(4).map(PathBuf::from))?
    })?;
    let dir = mount.join(rel.trim_start_matches('/'));
    std::fs::metadata(dir).ok().map(|m| m.ino())
}

/// True when `path` is on a cgroup2 filesystem.
pub fn is_cgroup2(path: &Path) -> bool {
    let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated path; `st` is a plain-old-data out parameter.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the duration of the call.
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    #[allow(
        clippy::useless_conversion,
        reason = "f_type is i64 on glibc, c_ulong on musl"
    )]
    let fs_type = i64::try_from(st.f_type).unwrap_or(-1);
    rc == 0 && fs_type == CGROUP2_SUPER_MAGIC
}

/// What `step`'s file holds now, as the value that restores it (for `io.max`, the device's
/// line, or the line that lifts its limits).
fn previous_value(path: &Path, step: &Step) -> Option<String> {
    files::read(path).ok().map(|text| match &step.device {
        Some(dev) => text
            .lines()
            .find(|l| l.starts_with(&format!("{dev} ")))
            .map_or_else(|| io::unlimited_line(dev), str::to_owned),
        None => text,
    })
}

/// Processes in the cgroup and its descendants.
fn count_procs(dir: &Path) -> usize {
    let mut pids = Vec::new();
    collect_pids(dir, &mut pids);
    pids.len()
}

/// Appends the pids of the cgroup at `dir` and its descendants (unreadable ones are skipped:
/// a child may vanish while we walk).
fn collect_pids(dir: &Path, out: &mut Vec<u32>) {
    if let Ok(t) = files::read(&dir.join("cgroup.procs")) {
        out.extend(t.lines().filter_map(|l| l.trim().parse::<u32>().ok()));
    }
    collect_child_pids(dir, out);
}

/// The processes of the cgroups below `dir` (not of `dir` itself).
fn collect_child_pids(dir: &Path, out: &mut Vec<u32>) {
    if let Ok(it) = std::fs::read_dir(dir) {
        for e in it.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                collect_pids(&e.path(), out);
            }
        }
    }
}

fn populated(dir: &Path) -> bool {
    files::read(&dir.join("cgroup.events")).map_or(count_procs(dir) > 0, |t| {
        files::flat_key(&t, "populated") == Some(1)
    })
}

/// Removes a cgroup directory and any child cgroups (a runtime may have nested some),
/// deepest first; cgroupfs only allows rmdir, never unlinking its files.
fn remove_tree(dir: &Path) -> Result<(), CgroupError> {
    for e in std::fs::read_dir(dir)
        .map_err(io_err("listing", dir))?
        .flatten()
    {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            remove_tree(&e.path())?;
        }
    }
    // A killed task can take a moment to leave; retry EBUSY briefly.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(io_err("removing", dir)(e)),
        }
    }
}

/// Enables rein's controllers in `dir/cgroup.subtree_control` (those the kernel offers there).
fn enable_controllers(dir: &Path) -> Result<(), CgroupError> {
    let available = files::read(&dir.join("cgroup.controllers"))?;
    let enabled = files::read(&dir.join("cgroup.subtree_control"))?;
    let missing: Vec<String> = CONTROLLERS
        .iter()
        .filter(|c| available.split_whitespace().any(|a| a == **c))
        .filter(|c| !enabled.split_whitespace().any(|a| a == **c))
        .map(|c| format!("+{c}"))
        .collect();
    if !missing.is_empty() {
        files::write(&dir.join("cgroup.subtree_control"), &missing.join(" "))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
