//! The managed subtree: containers and groups under the managed root, found by name.
//!
//! A group is a directory marked `trusted.rein.kind = group`; it holds containers and
//! groups, and its cgroup files cap the sum of its members. Any other directory rein made is
//! a container; directories a container's processes make inside it are the container's own
//! business and never managed. Names are unique across the whole tree, so one name finds a
//! container wherever it is (`root/web`, `root/team-a/web`), or where its runtime made it
//! (the registry).

use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use super::{
    CgroupError, ContainerName, External, Kind, Plan, Registry, Usage, collect_pids, count_procs,
    cpu, cpuset, enable_controllers, files, io, io_err, is_cgroup2, memory, pids, populated,
    previous_value, remove_tree, usage, xattr,
};
use crate::limits::{Limits, Priority};

/// Extended attribute holding the priority class (cgroupfs supports `trusted.*`).
pub const PRIORITY_XATTR: &str = "trusted.rein.priority";
/// Extended attribute marking a group (`group`); containers have none.
const KIND_XATTR: &str = "trusted.rein.kind";
/// Prefix of the extended attributes on a parent (the managed root or a group) that name a
/// member being created (`trusted.rein.creating.web`): the intent, written before its mkdir
/// (see [`Tree::create`]).
const INTENT_PREFIX: &str = "trusted.rein.creating.";
/// Most managed levels above a packet or task that the eBPF programs charge: a container in
/// up to three nested groups. Deeper nesting is refused.
pub const MAX_DEPTH: usize = controller_common::MAX_CHAIN;

/// The managed subtree. All paths rein touches are below `root` (or a registered cgroup).
#[derive(Debug, Clone)]
pub struct Tree {
    root: PathBuf,
    /// The cgroup2 mount the root lives in (for cgroup paths as the kernel names them).
    mount: PathBuf,
    /// Containers whose cgroup a runtime made elsewhere (`rein hook`); they share the name
    /// space of the managed root's containers.
    registry: Option<Registry>,
}

/// One managed cgroup of the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: ContainerName,
    pub kind: Kind,
    /// The group it is in (none at the top, or for a runtime's container outside a pod).
    pub group: Option<ContainerName>,
    pub dir: PathBuf,
}

/// A creation an agent died in the middle of (see [`Tree::staged`]).
#[derive(Debug)]
pub struct Staged {
    pub name: ContainerName,
    /// The directory the intent is on (the managed root or a group).
    pub parent: PathBuf,
    /// The cgroup's directory and id, when it had been made.
    pub cgroup: Option<(PathBuf, u64)>,
}

fn intent_key(name: &ContainerName) -> String {
    format!("{INTENT_PREFIX}{name}")
}

/// Names whose creation intent is on `dir`.
fn intents(dir: &Path) -> Vec<ContainerName> {
    xattr::list(dir)
        .iter()
        .filter_map(|k| k.strip_prefix(INTENT_PREFIX)?.parse().ok())
        .collect()
}

fn kind_of(dir: &Path) -> Kind {
    match xattr::get(dir, KIND_XATTR).as_deref() {
        Some("group") => Kind::Group,
        _ => Kind::Container,
    }
}

impl Tree {
    /// Opens (creating it if needed) the managed root, which must be inside a cgroup2 mount,
    /// and enables rein's controllers from the mount root down to it.
    pub fn open(root: &Path) -> Result<Self, CgroupError> {
        let parent = root.parent().unwrap_or(root);
        if !is_cgroup2(parent) {
            return Err(CgroupError::NotCgroup2 {
                path: parent.to_owned(),
                hint: if parent.exists() {
                    "; on a hybrid host, run rein in the test VM (see README)"
                } else {
                    " (it does not exist: rein makes only the root's last directory; under \
                     systemd, rein-containers.service makes its cgroup)"
                },
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
        // The eBPF programs walk cgroups down to a fixed level: the deepest member must be
        // above it.
        let level = root
            .strip_prefix(&mount)
            .map_or(0, |r| r.components().count());
        let deepest = level + MAX_DEPTH;
        if deepest >= controller_common::MAX_LEVEL as usize {
            return Err(CgroupError::RootTooDeep {
                path: root.to_owned(),
                level,
                most: controller_common::MAX_LEVEL as usize,
            });
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

    /// A tree over any directory, without the cgroup2 checks: for tests and fuzz checks
    /// with fake files.
    #[doc(hidden)]
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

    /// The members of the group (or root) at `dir`, complete ones only, in directory order.
    fn members(&self, dir: &Path, group: Option<&ContainerName>) -> Vec<Entry> {
        let creating = intents(dir);
        let Ok(it) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        it.flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| {
                let name: ContainerName = e.file_name().to_str()?.parse().ok()?;
                (!creating.contains(&name)).then(|| Entry {
                    kind: kind_of(&e.path()),
                    group: group.cloned(),
                    dir: e.path(),
                    name,
                })
            })
            .collect()
    }

    /// Every managed cgroup under the root, groups before their members, then the
    /// runtimes' containers. Members still being created are not among them.
    pub fn entries(&self) -> Vec<Entry> {
        let mut out = Vec::new();
        let mut stack = vec![(self.root.clone(), None::<ContainerName>, 0usize)];
        while let Some((dir, group, depth)) = stack.pop() {
            for e in self.members(&dir, group.as_ref()) {
                if e.kind == Kind::Group && depth < MAX_DEPTH {
                    stack.push((e.dir.clone(), Some(e.name.clone()), depth + 1));
                }
                out.push(e);
            }
        }
        if let Some(r) = &self.registry {
            out.extend(r.records().into_iter().map(|ext| Entry {
                kind: ext.kind,
                group: ext.group,
                dir: ext.cgroup,
                name: ext.name,
            }));
        }
        out
    }

    /// Every managed cgroup's name, sorted.
    pub fn list(&self) -> Result<Vec<ContainerName>, CgroupError> {
        std::fs::metadata(&self.root).map_err(io_err("listing", &self.root))?;
        let mut names: Vec<ContainerName> = self.entries().into_iter().map(|e| e.name).collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// The entry of `name`, wherever it is in the tree: at the top (one stat), else by a
    /// walk through the groups, else in the registry.
    pub fn find(&self, name: &ContainerName) -> Option<Entry> {
        let top = self.root.join(name.as_str());
        // One attribute asked for, not the whole list: this runs on every call naming a
        // container.
        if top.is_dir() && xattr::get(&self.root, &intent_key(name)).is_none() {
            return Some(Entry {
                kind: kind_of(&top),
                group: None,
                dir: top,
                name: name.clone(),
            });
        }
        // A registered name is one record away; only members of groups need the walk.
        if let Some(ext) = self.external(name) {
            return Some(Entry {
                kind: ext.kind,
                group: ext.group,
                dir: ext.cgroup,
                name: name.clone(),
            });
        }
        let mut stack = vec![(self.root.clone(), None::<ContainerName>, 0usize)];
        while let Some((dir, group, depth)) = stack.pop() {
            for e in self.members(&dir, group.as_ref()) {
                if &e.name == name {
                    return Some(e);
                }
                if e.kind == Kind::Group && depth < MAX_DEPTH {
                    stack.push((e.dir.clone(), Some(e.name.clone()), depth + 1));
                }
            }
        }
        None
    }

    /// The cgroup directory of `name`: where it is, or where it would be made at the top.
    pub fn path(&self, name: &ContainerName) -> PathBuf {
        self.find(name)
            .map_or_else(|| self.root.join(name.as_str()), |e| e.dir)
    }

    /// The container's cgroup as the kernel names it (`/rein.slice/web`), which is what
    /// cAdvisor exports as the `id` label.
    pub fn cgroup_path(&self, name: &ContainerName) -> String {
        self.kernel_path(&self.path(name))
    }

    /// The cgroup at `dir` as the kernel names it (its path below the mount).
    pub fn kernel_path(&self, dir: &Path) -> String {
        let rel = dir.strip_prefix(&self.mount).unwrap_or(dir);
        format!("/{}", rel.display())
    }

    /// The directory of `name`, if it exists and is complete.
    fn existing(&self, name: &ContainerName) -> Result<PathBuf, CgroupError> {
        self.find(name)
            .map(|e| e.dir)
            .ok_or_else(|| CgroupError::NotFound(name.clone()))
    }

    /// The directory new members of `group` are made in, and how many managed levels it
    /// has above (0 for the root).
    fn parent_dir(&self, group: Option<&ContainerName>) -> Result<(PathBuf, usize), CgroupError> {
        let Some(g) = group else {
            return Ok((self.root.clone(), 0));
        };
        let e = self
            .find(g)
            .ok_or_else(|| CgroupError::NoSuchGroup(g.clone()))?;
        if !e.dir.starts_with(&self.root) {
            return Err(CgroupError::PodGroup(g.clone()));
        }
        if e.kind != Kind::Group {
            return Err(CgroupError::NotAGroup(g.clone()));
        }
        let depth = e
            .dir
            .strip_prefix(&self.root)
            .map_or(1, |rel| rel.components().count());
        Ok((e.dir, depth))
    }

    /// Creates a container or a group with `limits` in `group` (or at the top), all or
    /// nothing across the agent's death.
    ///
    /// cgroup v2 cannot rename a cgroup, so a member cannot be made under a temporary name
    /// and moved into place. Instead the intent to create it is written first, as an
    /// extended attribute on its parent directory (`trusted.rein.creating.NAME`, set with
    /// `XATTR_CREATE`, so two creations of one name in one parent cannot both claim it; names
    /// are unique across parents because the agent serialises creations); then the cgroup is
    /// made, marked with its kind and limited, `prepare` runs with its path and id (the
    /// caller's map entries), and only then is the intent removed. While the intent stands
    /// the member is neither listed nor adopted, and an agent that died at any step before
    /// its removal leaves something the next agent removes at start ([`Tree::staged`]). On
    /// any failure the cgroup and the intent are removed again.
    pub fn create<E: From<CgroupError>>(
        &self,
        name: &ContainerName,
        kind: Kind,
        group: Option<&ContainerName>,
        limits: &Limits,
        prepare: impl FnOnce(&Path, u64) -> Result<(), E>,
    ) -> Result<PathBuf, E> {
        let plan = Plan::for_limits(limits).map_err(CgroupError::from)?;
        let (parent, depth) = self.parent_dir(group)?;
        // A group at the last level could never hold a member.
        let levels = if kind == Kind::Group { 2 } else { 1 };
        if depth + levels > MAX_DEPTH {
            return Err(CgroupError::TooDeep {
                name: name.clone(),
                most: MAX_DEPTH,
            }
            .into());
        }
        // Checked before the intent, never after: an intent next to a complete member
        // would make the next agent remove that member.
        if self.find(name).is_some() {
            return Err(CgroupError::Exists(name.clone()).into());
        }
        let path = parent.join(name.as_str());
        let key = intent_key(name);
        match xattr::set_flags(&parent, &key, "1", libc::XATTR_CREATE) {
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
            let _ = xattr::remove(&parent, &key);
            return Err(e.into());
        }
        crate::failpoint::hit("create:after-mkdir");
        let done = (|| {
            if kind == Kind::Group {
                xattr::set(&path, KIND_XATTR, "group")?;
                // Its members get the same controllers as the top's containers.
                enable_controllers(&path)?;
            }
            self.apply_plan(&path, &plan, limits.priority)?;
            crate::failpoint::hit("create:after-files");
            let id = std::fs::metadata(&path)
                .map_err(io_err("reading", &path))?
                .ino();
            prepare(&path, id)?;
            crate::failpoint::hit("create:after-maps");
            xattr::remove(&parent, &key)?;
            Ok(())
        })();
        if let Err(e) = done {
            let _ = std::fs::remove_dir(&path);
            let _ = xattr::remove(&parent, &key);
            return Err(e);
        }
        Ok(path)
    }

    /// Creations in progress, or that an agent died in the middle of: each name whose intent
    /// is still on the root or a group, with its cgroup's path and id if the mkdir happened.
    /// Removing them is for the agent's start only, when no create is in flight.
    pub fn staged(&self) -> Vec<Staged> {
        let mut parents = vec![self.root.clone()];
        parents.extend(
            self.entries()
                .into_iter()
                .filter(|e| e.kind == Kind::Group && e.dir.starts_with(&self.root))
                .map(|e| e.dir),
        );
        parents
            .into_iter()
            .flat_map(|parent| {
                intents(&parent)
                    .into_iter()
                    .map(|name| {
                        let dir = parent.join(name.as_str());
                        let cgroup = std::fs::metadata(&dir).ok().map(|m| (dir, m.ino()));
                        Staged {
                            name,
                            parent: parent.clone(),
                            cgroup,
                        }
                    })
                    .collect::<Vec<_>>()
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
        xattr::remove(&staged.parent, &intent_key(&staged.name))
    }

    /// Changes a running member's limits (only the ones given). All or nothing.
    pub fn set(&self, name: &ContainerName, limits: &Limits) -> Result<(), CgroupError> {
        self.set_at(&self.existing(name)?, limits)
    }

    /// [`Tree::set`] of the member at `dir` (found already).
    pub fn set_at(&self, dir: &Path, limits: &Limits) -> Result<(), CgroupError> {
        let plan = Plan::for_limits(limits)?;
        self.apply_plan(dir, &plan, limits.priority)
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
            xattr::set(dir, PRIORITY_XATTR, p.name())?;
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
        Self::undo_for_at(&self.existing(name)?, limits)
    }

    /// [`Tree::undo_for`] of the member at `dir` (found already).
    pub fn undo_for_at(dir: &Path, limits: &Limits) -> Result<Vec<(String, String)>, CgroupError> {
        let plan = Plan::for_limits(limits)?;
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

    /// Writes (file, value) pairs back into a member's cgroup (an undo), all of them even if
    /// one fails; returns the failures.
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

    /// An xattr on a member's cgroup (rein's journal), if set.
    pub fn mark(&self, name: &ContainerName, key: &str) -> Option<String> {
        Self::mark_at(&self.existing(name).ok()?, key)
    }

    pub fn set_mark(
        &self,
        name: &ContainerName,
        key: &str,
        value: &str,
    ) -> Result<(), CgroupError> {
        Self::set_mark_at(&self.existing(name)?, key, value)
    }

    pub fn clear_mark(&self, name: &ContainerName, key: &str) -> Result<(), CgroupError> {
        Self::clear_mark_at(&self.existing(name)?, key)
    }

    /// The marks of a member found already, at its directory.
    pub fn mark_at(dir: &Path, key: &str) -> Option<String> {
        xattr::get(dir, key)
    }

    pub fn set_mark_at(dir: &Path, key: &str, value: &str) -> Result<(), CgroupError> {
        xattr::set(dir, key, value)
    }

    pub fn clear_mark_at(dir: &Path, key: &str) -> Result<(), CgroupError> {
        xattr::remove(dir, key)
    }

    /// The member's limits as the kernel holds them; kernel defaults read as "not set".
    pub fn limits(&self, name: &ContainerName) -> Result<Limits, CgroupError> {
        Self::limits_at(&mut files::Dir::open(&self.existing(name)?)?)
    }

    /// The limits of the cgroup at `dir` (a member's, found already).
    pub fn limits_at(dir: &mut files::Dir) -> Result<Limits, CgroupError> {
        let mut l = Limits {
            priority: xattr::get(dir.path(), PRIORITY_XATTR).and_then(|p| p.parse().ok()),
            ..Limits::default()
        };
        cpu::read(dir, &mut l)?;
        cpuset::read(dir, &mut l)?;
        memory::read(dir, &mut l)?;
        pids::read(dir, &mut l)?;
        io::read(dir, &mut l)?;
        Ok(l)
    }

    /// The limits the metrics export, alone: CPU quota, memory limit and threshold, pids
    /// (four files instead of the twelve and an attribute of [`Tree::limits_at`]).
    pub fn exported_limits_at(dir: &mut files::Dir) -> Result<Limits, CgroupError> {
        let mut l = Limits::default();
        cpu::read_quota(dir, &mut l)?;
        memory::read_limits(dir, &mut l)?;
        pids::read(dir, &mut l)?;
        Ok(l)
    }

    /// Current usage from the cgroup files (hierarchical: a group's covers its members).
    pub fn usage(&self, name: &ContainerName) -> Result<Usage, CgroupError> {
        Ok(usage::read(&mut files::Dir::open(&self.existing(name)?)?)?)
    }

    /// The processes of a member, its child cgroups included.
    pub fn pids(&self, name: &ContainerName) -> Result<Vec<u32>, CgroupError> {
        let dir = self.existing(name)?;
        let mut pids = Vec::new();
        collect_pids(&dir, &mut pids);
        Ok(pids)
    }

    /// The managed cgroups at or below `name` (a group's members, theirs, ...), deepest
    /// first, with their ids: what removing `name` removes.
    pub fn subtree(&self, name: &ContainerName) -> Result<Vec<(Entry, u64)>, CgroupError> {
        let top = self
            .find(name)
            .ok_or_else(|| CgroupError::NotFound(name.clone()))?;
        let mut out = Vec::new();
        let mut stack = vec![top];
        while let Some(e) = stack.pop() {
            if e.kind == Kind::Group {
                stack.extend(self.members(&e.dir, Some(&e.name)));
            }
            if let Ok(m) = std::fs::metadata(&e.dir) {
                out.push((e, m.ino()));
            }
        }
        out.reverse();
        Ok(out)
    }

    /// Removes a container or a group. A group with members, or a container with processes
    /// still inside, is refused unless `force`, which kills the whole subtree through
    /// `cgroup.kill` (kernel >= 5.14), waits for it to empty and removes every member.
    pub fn remove(&self, name: &ContainerName, force: bool) -> Result<(), CgroupError> {
        let entry = self
            .find(name)
            .ok_or_else(|| CgroupError::NotFound(name.clone()))?;
        let dir = entry.dir;
        if !dir.starts_with(&self.root) {
            // A runtime's cgroup: the runtime removes it (see `Node::remove`).
            return Err(CgroupError::NotFound(name.clone()));
        }
        if entry.kind == Kind::Group && !force {
            let members: Vec<String> = self
                .members(&dir, Some(name))
                .into_iter()
                .map(|e| e.name.to_string())
                .collect();
            if !members.is_empty() {
                return Err(CgroupError::GroupNotEmpty {
                    name: name.clone(),
                    members: members.join(", "),
                });
            }
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
