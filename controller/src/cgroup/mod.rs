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
mod usage;

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
use crate::limits::{LimitError, Limits, Priority};

pub use external::{External, Labels, Registry};
pub use usage::{DeviceIo, Pressure, Psi, Usage};

/// Controllers rein enables for its containers.
pub const CONTROLLERS: [&str; 5] = ["cpu", "memory", "io", "pids", "cpuset"];
/// Extended attribute holding the priority class (cgroupfs supports `trusted.*`).
pub const PRIORITY_XATTR: &str = "trusted.rein.priority";
/// Prefix of the extended attributes on the managed root that name a container being
/// created (`trusted.rein.creating.web`): the intent, written before its mkdir (see
/// [`Tree::create`]).
const INTENT_PREFIX: &str = "trusted.rein.creating.";
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
    #[error("container {0} already exists; change it with `rein set {0}`")]
    Exists(ContainerName),
    #[error("container {name} still runs {procs} processes; use --force to kill them")]
    Busy { name: ContainerName, procs: usize },
    #[error("{path} is not inside a cgroup2 filesystem: rein only manages cgroup v2{hint}")]
    NotCgroup2 { path: PathBuf, hint: &'static str },
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

/// A creation an agent died in the middle of (see [`Tree::staged`]).
#[derive(Debug)]
pub struct Staged {
    pub name: ContainerName,
    /// The cgroup's directory and id, when it had been made.
    pub cgroup: Option<(PathBuf, u64)>,
}

/// The managed subtree. All paths rein touches are `root/<ContainerName>/<file>`.
#[derive(Debug, Clone)]
pub struct Tree {
    root: PathBuf,
    /// The cgroup2 mount the root lives in (for cgroup paths as the kernel names them).
    mount: PathBuf,
    /// Containers whose cgroup a runtime made elsewhere (`rein hook`); they share the name
    /// space of the managed root's containers.
    registry: Option<Registry>,
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> CgroupError {
    let path = path.to_owned();
    move |source| CgroupError::Io { op, path, source }
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

impl Tree {
    /// Opens (creating it if needed) the managed root, which must be inside a cgroup2 mount,
    /// and enables rein's controllers from the mount root down to it.
    pub fn open(root: &Path) -> Result<Self, CgroupError> {
        let parent = root.parent().unwrap_or(root);
        if !is_cgroup2(parent) {
            return Err(CgroupError::NotCgroup2 {
                path: parent.to_owned(),
                hint: "; on a hybrid host, run rein in the test VM (see README)",
            });
        }
        // Enable controllers on every ancestor inside the mount, then create the root.
        let mut chain: Vec<&Path> = root
            .ancestors()
            .skip(1)
            .take_while(|p| is_cgroup2(p))
            .collect();
        chain.reverse();
        let mount = chain
            .first()
            .map_or_else(|| parent.to_owned(), |m| m.to_path_buf());
        for dir in chain {
            enable_controllers(dir)?;
        }
        if !root.exists() {
            std::fs::create_dir(root).map_err(io_err("creating", root))?;
        }
        enable_controllers(root)?;
        Ok(Self {
            root: root.to_owned(),
            mount,
            registry: None,
        })
    }

    /// A tree over any directory, without the cgroup2 checks: for tests with fake files.
    #[cfg(test)]
    pub fn unchecked(root: &Path) -> Self {
        Self {
            root: root.to_owned(),
            mount: root.parent().unwrap_or(root).to_owned(),
            registry: None,
        }
    }

    /// Also manages the containers recorded in `registry`.
    pub fn with_registry(mut self, registry: Registry) -> Self {
        self.registry = Some(registry);
        self
    }

    pub fn registry(&self) -> Option<&Registry> {
        self.registry.as_ref()
    }

    /// The registry's record of `name`, when it is a runtime's container.
    pub fn external(&self, name: &ContainerName) -> Option<External> {
        self.registry.as_ref()?.get(name)
    }

    /// The cgroup2 mount the tree lives in.
    pub fn mount(&self) -> &Path {
        &self.mount
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The container's cgroup directory: under the managed root, or where its runtime made
    /// it.
    pub fn path(&self, name: &ContainerName) -> PathBuf {
        let own = self.root.join(name.as_str());
        if own.is_dir() {
            return own;
        }
        self.external(name).map_or(own, |e| e.cgroup)
    }

    /// The container's cgroup as the kernel names it (`/rein.slice/web`), which is what
    /// cAdvisor exports as the `id` label.
    pub fn cgroup_path(&self, name: &ContainerName) -> String {
        let rel = self.path(name);
        let rel = rel.strip_prefix(&self.mount).unwrap_or(&rel);
        format!("/{}", rel.display())
    }

    /// The container's directory, if it exists and is not still being created.
    fn existing(&self, name: &ContainerName) -> Result<PathBuf, CgroupError> {
        let p = self.path(name);
        if p.is_dir() && !self.being_created(name) {
            Ok(p)
        } else {
            Err(CgroupError::NotFound(name.clone()))
        }
    }

    fn intent_key(name: &ContainerName) -> String {
        format!("{INTENT_PREFIX}{name}")
    }

    fn being_created(&self, name: &ContainerName) -> bool {
        get_xattr(&self.root, &Self::intent_key(name)).is_some()
    }

    /// Names whose creation intent is on the managed root (see [`Tree::create`]).
    fn intents(&self) -> Vec<ContainerName> {
        list_xattrs(&self.root)
            .iter()
            .filter_map(|k| k.strip_prefix(INTENT_PREFIX)?.parse().ok())
            .collect()
    }

    /// Every container (directory with a valid name) under the root, sorted; containers
    /// still being created are not listed.
    pub fn list(&self) -> Result<Vec<ContainerName>, CgroupError> {
        let creating = self.intents();
        let mut names: Vec<ContainerName> = std::fs::read_dir(&self.root)
            .map_err(io_err("listing", &self.root))?
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .filter(|n| !creating.contains(n))
            .collect();
        if let Some(r) = &self.registry {
            names.extend(r.list());
        }
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// Creates a container with `limits`, all or nothing across the agent's death.
    ///
    /// cgroup v2 cannot rename a cgroup, so a container cannot be made under a temporary
    /// name and moved into place. Instead the intent to create it is written first, as an
    /// extended attribute on the managed root (`trusted.rein.creating.NAME`, set with
    /// `XATTR_CREATE` so two creations of one name cannot both claim it); then the cgroup is
    /// made and limited, `prepare` runs with its path and id (the caller's map entries), and
    /// only then is the intent removed. While the intent stands the container is neither
    /// listed nor adopted, and an agent that died at any step before its removal leaves
    /// something the next agent removes at start ([`Tree::staged`]). On any failure the
    /// cgroup and the intent are removed again.
    pub fn create<E: From<CgroupError>>(
        &self,
        name: &ContainerName,
        limits: &Limits,
        prepare: impl FnOnce(&Path, u64) -> Result<(), E>,
    ) -> Result<PathBuf, E> {
        use std::os::unix::fs::MetadataExt as _;
        let plan = Plan::for_limits(limits).map_err(CgroupError::from)?;
        let path = self.root.join(name.as_str());
        // Checked before the intent, never after: an intent next to a complete container
        // would make the next agent remove that container.
        if self.external(name).is_some() || path.exists() {
            return Err(CgroupError::Exists(name.clone()).into());
        }
        let key = Self::intent_key(name);
        match set_xattr_flags(&self.root, &key, "1", libc::XATTR_CREATE) {
            Ok(()) => {}
            Err(CgroupError::Io { source, .. }) if source.raw_os_error() == Some(libc::EEXIST) => {
                return Err(CgroupError::Exists(name.clone()).into());
            }
            Err(e) => return Err(e.into()),
        }
        crate::failpoint::hit("create:after-intent");
        let made = match std::fs::create_dir(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(CgroupError::Exists(name.clone()))
            }
            Err(e) => Err(io_err("creating", &path)(e)),
        };
        if let Err(e) = made {
            let _ = remove_xattr(&self.root, &key);
            return Err(e.into());
        }
        crate::failpoint::hit("create:after-mkdir");
        let done = (|| {
            self.apply_plan(&path, &plan, limits.priority)?;
            crate::failpoint::hit("create:after-files");
            let id = std::fs::metadata(&path)
                .map_err(io_err("reading", &path))?
                .ino();
            prepare(&path, id)?;
            crate::failpoint::hit("create:after-maps");
            remove_xattr(&self.root, &key)?;
            Ok(())
        })();
        if let Err(e) = done {
            let _ = std::fs::remove_dir(&path);
            let _ = remove_xattr(&self.root, &key);
            return Err(e);
        }
        Ok(path)
    }

    /// Creations an agent died in the middle of: each name whose intent is still on the
    /// root, with its cgroup's path and id if the mkdir happened. Only for the agent's
    /// start, when no create is in flight.
    pub fn staged(&self) -> Vec<Staged> {
        use std::os::unix::fs::MetadataExt as _;
        self.intents()
            .into_iter()
            .map(|name| {
                let dir = self.root.join(name.as_str());
                let cgroup = std::fs::metadata(&dir).ok().map(|m| (dir, m.ino()));
                Staged { name, cgroup }
            })
            .collect()
    }

    /// Removes what a creation cut short left: its cgroup (killing anything that got into
    /// it), then its intent.
    pub fn remove_staged(&self, staged: &Staged) -> Result<(), CgroupError> {
        if let Some((dir, _)) = &staged.cgroup {
            if count_procs(dir) > 0 {
                files::write(&dir.join("cgroup.kill"), "1")?;
            }
            remove_tree(dir)?;
        }
        remove_xattr(&self.root, &Self::intent_key(&staged.name))
    }

    /// Changes a running container's limits (only the ones given). All or nothing.
    pub fn set(&self, name: &ContainerName, limits: &Limits) -> Result<(), CgroupError> {
        let plan = Plan::for_limits(limits)?;
        let path = self.existing(name)?;
        self.apply_plan(&path, &plan, limits.priority)
    }

    /// Writes the plan in order; if a write fails, restores the files already written (in
    /// reverse) and reports the failed file with the kernel's error.
    fn apply_plan(
        &self,
        dir: &Path,
        plan: &Plan,
        priority: Option<Priority>,
    ) -> Result<(), CgroupError> {
        let mut undo: Vec<(PathBuf, String)> = Vec::new();
        let mut result = Ok(());
        for step in &plan.steps {
            let path = dir.join(step.file);
            // What to restore if a later write fails. A file that cannot be read is not
            // skipped: its write below fails too and reports the file and the value.
            let previous = previous_value(&path, step);
            if let Err(e) = files::write(&path, &step.value) {
                result = Err(e);
                break;
            }
            if let Some(previous) = previous {
                undo.push((path, previous));
            }
        }
        if let Err(failed) = result {
            let mut notes = Vec::new();
            for (path, previous) in undo.iter().rev() {
                if let Err(e) = files::write(path, previous) {
                    notes.push(e.to_string());
                }
            }
            let rollback_note = if notes.is_empty() {
                String::new()
            } else {
                format!(" (rollback failed too: {})", notes.join("; "))
            };
            return Err(CgroupError::RolledBack {
                failed,
                rollback_note,
            });
        }
        if let Some(p) = priority {
            set_xattr(dir, PRIORITY_XATTR, p.name())?;
        }
        Ok(())
    }

    /// What the files `limits` would change hold now, as (file, value to write back): the
    /// undo of a change, computed before it (see `Node::set`'s journal).
    pub fn undo_for(
        &self,
        name: &ContainerName,
        limits: &Limits,
    ) -> Result<Vec<(String, String)>, CgroupError> {
        let plan = Plan::for_limits(limits)?;
        let dir = self.existing(name)?;
        Ok(plan
            .steps
            .iter()
            .filter_map(|step| {
                Some((
                    step.file.to_owned(),
                    previous_value(&dir.join(step.file), step)?,
                ))
            })
            .collect())
    }

    /// Writes (file, value) pairs back into a container's cgroup (an undo), all of them even
    /// if one fails; returns the failures.
    pub fn write_back(&self, name: &ContainerName, undo: &[(String, String)]) -> Vec<String> {
        let Ok(dir) = self.existing(name) else {
            return vec![format!("container {name} is gone")];
        };
        undo.iter()
            .rev()
            .filter(|(file, _)| !file.contains('/'))
            .filter_map(|(file, value)| files::write(&dir.join(file), value).err())
            .map(|e| e.to_string())
            .collect()
    }

    /// An xattr on a container's cgroup (rein's journal), if set.
    pub fn mark(&self, name: &ContainerName, key: &str) -> Option<String> {
        get_xattr(&self.existing(name).ok()?, key)
    }

    pub fn set_mark(
        &self,
        name: &ContainerName,
        key: &str,
        value: &str,
    ) -> Result<(), CgroupError> {
        set_xattr(&self.existing(name)?, key, value)
    }

    pub fn clear_mark(&self, name: &ContainerName, key: &str) -> Result<(), CgroupError> {
        remove_xattr(&self.existing(name)?, key)
    }

    /// The container's limits as the kernel holds them; kernel defaults read as "not set".
    pub fn limits(&self, name: &ContainerName) -> Result<Limits, CgroupError> {
        let dir = self.existing(name)?;
        let mut l = Limits {
            priority: get_xattr(&dir, PRIORITY_XATTR).and_then(|p| p.parse().ok()),
            ..Limits::default()
        };
        cpu::read(&dir, &mut l)?;
        cpuset::read(&dir, &mut l)?;
        memory::read(&dir, &mut l)?;
        pids::read(&dir, &mut l)?;
        io::read(&dir, &mut l)?;
        Ok(l)
    }

    /// Current usage from the cgroup files.
    pub fn usage(&self, name: &ContainerName) -> Result<Usage, CgroupError> {
        Ok(usage::read(&self.existing(name)?)?)
    }

    /// The processes of a container, its child cgroups included.
    pub fn pids(&self, name: &ContainerName) -> Result<Vec<u32>, CgroupError> {
        let dir = self.existing(name)?;
        let mut pids = Vec::new();
        collect_pids(&dir, &mut pids);
        Ok(pids)
    }

    /// Removes a container. With processes still inside, refuses unless `force`, which kills
    /// the whole tree through `cgroup.kill` (kernel >= 5.14) and waits for it to empty.
    pub fn remove(&self, name: &ContainerName, force: bool) -> Result<(), CgroupError> {
        let dir = self.existing(name)?;
        if !dir.starts_with(&self.root) {
            // A runtime's cgroup: the runtime removes it (see `Node::remove`).
            return Err(CgroupError::NotFound(name.clone()));
        }
        let procs = count_procs(&dir);
        if procs > 0 {
            if !force {
                return Err(CgroupError::Busy {
                    name: name.clone(),
                    procs,
                });
            }
            files::write(&dir.join("cgroup.kill"), "1")?;
            let deadline = Instant::now() + Duration::from_secs(10);
            while populated(&dir) {
                if Instant::now() > deadline {
                    return Err(CgroupError::KillTimeout {
                        name: name.clone(),
                        secs: 10,
                    });
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        remove_tree(&dir)
    }
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

/// Runs one xattr system call on `dir` with `key`; a non-zero return is the `op` error.
fn xattr_call(
    dir: &Path,
    key: &str,
    op: &'static str,
    call: impl FnOnce(&std::ffi::CStr, &std::ffi::CStr) -> libc::c_int,
) -> Result<(), CgroupError> {
    let err = |source| CgroupError::Io {
        op,
        path: dir.to_owned(),
        source,
    };
    let invalid = || err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
    let p = CString::new(dir.as_os_str().as_bytes()).map_err(|_| invalid())?;
    let k = CString::new(key).map_err(|_| invalid())?;
    if call(&p, &k) != 0 {
        return Err(err(std::io::Error::last_os_error()));
    }
    Ok(())
}

fn set_xattr(dir: &Path, key: &str, value: &str) -> Result<(), CgroupError> {
    set_xattr_flags(dir, key, value, 0)
}

/// `setxattr(2)` with `flags` (`XATTR_CREATE`: fail with EEXIST if the key is set).
fn set_xattr_flags(dir: &Path, key: &str, value: &str, flags: i32) -> Result<(), CgroupError> {
    xattr_call(dir, key, "setting xattr on", |p, k| {
        // SAFETY: p and k are NUL-terminated; value points to value.len() readable bytes.
        unsafe {
            libc::setxattr(
                p.as_ptr(),
                k.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                flags,
            )
        }
    })
}

/// The names of the extended attributes on `dir` (empty when they cannot be read).
fn list_xattrs(dir: &Path) -> Vec<String> {
    let Ok(p) = CString::new(dir.as_os_str().as_bytes()) else {
        return Vec::new();
    };
    // Names are NUL-separated; 64 KiB is the kernel's limit for the whole list.
    let mut buf = vec![0u8; 64 << 10];
    // SAFETY: p is NUL-terminated; buf is writable for buf.len() bytes.
    let n = unsafe { libc::listxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    let Ok(n) = usize::try_from(n) else {
        return Vec::new();
    };
    buf[..n]
        .split(|b| *b == 0)
        .filter(|k| !k.is_empty())
        .filter_map(|k| String::from_utf8(k.to_vec()).ok())
        .collect()
}

fn remove_xattr(dir: &Path, key: &str) -> Result<(), CgroupError> {
    xattr_call(dir, key, "removing xattr from", |p, k| {
        // SAFETY: p and k are NUL-terminated strings that outlive the call.
        unsafe { libc::removexattr(p.as_ptr(), k.as_ptr()) }
    })
}

fn get_xattr(dir: &Path, key: &str) -> Option<String> {
    let p = CString::new(dir.as_os_str().as_bytes()).ok()?;
    let k = CString::new(key).ok()?;
    // rein's values are short (a priority class, a change's journal): 16 KiB is plenty.
    let mut buf = vec![0u8; 16 << 10];
    // SAFETY: p and k are NUL-terminated; buf is writable for buf.len() bytes.
    let n = unsafe { libc::getxattr(p.as_ptr(), k.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    let n = usize::try_from(n).ok()?;
    buf.truncate(n);
    String::from_utf8(buf).ok()
}

#[cfg(test)]
mod tests;
