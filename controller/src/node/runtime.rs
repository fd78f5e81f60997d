//! Containers whose cgroup a container runtime made (`rein hook`): registered in the
//! kernel (pinned records under bpffs, see `cgroup::external`), with rein's programs
//! attached to their cgroup and their limits applied; unregistered by the poststop hook or
//! when their cgroup is gone.

use std::path::{Path, PathBuf};

use super::{Node, NodeError, egress::NetState};
use crate::{
    cgroup::{CgroupError, ContainerName, External, Kind, Labels},
    limits::Limits,
};

/// A Kubernetes pod that a registered container belongs to: the pod's cgroup (the parent
/// of its containers' cgroups, as kubelet lays them out) becomes a group with the pod-level
/// limits (`kubernetes.io/*-bandwidth`), shared by all of the pod's containers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pod {
    pub name: ContainerName,
    pub cgroup: PathBuf,
    pub limits: Limits,
}

impl Node {
    /// The cgroup a runtime asks rein to take over, checked: inside the cgroup2 mount, a
    /// cgroup v2 directory, neither in rein's managed root nor above it (rein's programs
    /// would run twice on its packets), not registered already. Returns its id.
    fn takeover_id(&self, cgroup: &Path, pod_cgroup: Option<&Path>) -> Result<u64, NodeError> {
        use std::os::unix::fs::MetadataExt as _;
        let foreign = |problem: String| NodeError::Foreign {
            path: cgroup.to_owned(),
            problem,
        };
        let inside_mount = cgroup.starts_with(self.tree.mount())
            && cgroup != self.tree.mount()
            && !cgroup
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir));
        if !inside_mount {
            return Err(foreign(format!(
                "is not a path below the cgroup2 mount {}",
                self.tree.mount().display()
            )));
        }
        if cgroup.starts_with(self.tree.root()) {
            return Err(foreign(
                "is inside rein's managed root; containers there are made with `rein run`, and \
                 rein's programs already run on them"
                    .into(),
            ));
        }
        let level = cgroup
            .strip_prefix(self.tree.mount())
            .map_or(0, |r| r.components().count());
        if level >= controller_common::MAX_LEVEL as usize {
            return Err(foreign(format!(
                "is {level} levels deep; rein's programs see managed cgroups down to level {}",
                controller_common::MAX_LEVEL - 1
            )));
        }
        if self.tree.root().starts_with(cgroup) {
            return Err(foreign(format!(
                "holds rein's managed root {}; rein's programs would run twice on its packets",
                self.tree.root().display()
            )));
        }
        let meta = std::fs::metadata(cgroup)
            .map_err(|e| foreign(format!("{e}; the runtime has not made it (yet)")))?;
        if !meta.is_dir() || !crate::cgroup::is_cgroup2(cgroup) {
            return Err(foreign("is not a cgroup v2 directory".into()));
        }
        // One cgroup under one name, and no registered cgroup inside another: rein's
        // programs, attached to each, would run twice on their packets. The one exception
        // is a container inside its own pod's group, which carries no programs of its own.
        let registered = self
            .tree
            .registry()
            .map_or_else(Vec::new, crate::cgroup::Registry::records);
        for other in registered {
            if other.id == meta.ino() || other.cgroup == cgroup {
                return Err(foreign(format!("is registered already, as {}", other.name)));
            }
            let nested = cgroup.starts_with(&other.cgroup) || other.cgroup.starts_with(cgroup);
            if nested && Some(other.cgroup.as_path()) != pod_cgroup {
                return Err(foreign(format!(
                    "is inside or above {} (registered as {}); rein's programs would run \
                     twice on its packets",
                    other.cgroup.display(),
                    other.name
                )));
            }
        }
        Ok(meta.ino())
    }

    /// Takes over a container whose cgroup its runtime made (`rein hook createRuntime`):
    /// records it in the registry, attaches rein's programs to its cgroup (or to its pod's,
    /// once for all of the pod's containers), and applies `l` (maps, then cgroup files).
    /// With a `pod`, the pod's cgroup is registered as a group with the pod's limits first,
    /// if it is not yet. On failure nothing of this request stays recorded or attached; the
    /// cgroups themselves are the runtime's and are never removed.
    pub fn register(
        &self,
        name: &ContainerName,
        cgroup: &Path,
        labels: Labels,
        l: &Limits,
        pod: Option<&Pod>,
    ) -> Result<(), NodeError> {
        let ceiling = self.hook_ceiling();
        crate::limits::ceiling::check(&ceiling, l)?;
        self.check_enforceable(l)?;
        crate::cgroup::Plan::for_limits(l)?;
        if let Some(p) = pod {
            crate::limits::ceiling::check(&ceiling, &p.limits)?;
            self.check_enforceable(&p.limits)?;
            if cgroup.parent() != Some(p.cgroup.as_path()) {
                return Err(NodeError::Foreign {
                    path: cgroup.to_owned(),
                    problem: format!("is not a child of its pod's cgroup {}", p.cgroup.display()),
                });
            }
        }
        let registry = self.registry_for(cgroup)?;
        let lock = self.name_lock(name)?;
        let _one_at_a_time = lock.lock().map_err(|_| NodeError::Poisoned)?;
        // Checked under the lock: two registrations of one name (two replicas with the same
        // `rein/name`) must not both pass, or the loser's cleanup would remove the winner's.
        let _registering = self.registrations.lock().map_err(|_| NodeError::Poisoned)?;
        if let Some(ext) = self.tree.external(name) {
            if self.same_registration(&ext, cgroup, pod) {
                return self.register_again(&ext, l, pod, &labels);
            }
            // Its runtime deleted its cgroup: the name is free again. Without a poststop hook
            // (one hook process per container start is the recommended setup) the
            // agent's second-by-second walk would forget it soon; a container made again
            // under the same name must not wait for that.
            if !ext.is_live() {
                tracing::info!(container = %name, "replacing the registration of a deleted cgroup");
                if ext.group.is_some() && ext.group.as_ref() == pod.map(|p| &p.name) {
                    // Into the same pod: the pod's group (its limits and counters) stays.
                    registry.remove(name)?;
                    self.with_datapath(|dp| dp.forget(ext.id))?;
                } else {
                    self.unregister(&ext)?;
                }
            }
        }
        if self.tree.find(name).is_some() {
            return Err(CgroupError::Exists(name.clone()).into());
        }
        let new_pod = match pod {
            Some(p) => self.ensure_pod(p, &labels)?,
            None => false,
        };
        let id = match self.takeover_id(cgroup, pod.map(|p| p.cgroup.as_path())) {
            Ok(id) => id,
            Err(e) => {
                if let (true, Some(p)) = (new_pod, pod) {
                    let _ = self.unregister_pod(&p.name);
                }
                return Err(e);
            }
        };
        let ext = External {
            name: name.clone(),
            cgroup: cgroup.to_owned(),
            id,
            labels,
            kind: Kind::Container,
            group: pod.map(|p| p.name.clone()),
        };
        // A record that is not ours (it appeared since the check) is never removed below.
        if let Err(e) = registry.add(&ext) {
            if let (true, Some(p)) = (new_pod, pod) {
                let _ = self.unregister_pod(&p.name);
            }
            return Err(e.into());
        }
        if let Err(e) = self.apply_registered(&ext, l, NetState::default()) {
            let _ = registry.remove(name);
            let _ = self.with_datapath(|dp| dp.forget(id));
            if let (true, Some(p)) = (new_pod, pod) {
                let _ = self.unregister_pod(&p.name);
            }
            return Err(e);
        }
        Ok(())
    }

    /// True when `ext` is this very registration: the same cgroup (path and inode, so not a
    /// new container that reuses the path) in the same pod.
    fn same_registration(&self, ext: &External, cgroup: &Path, pod: Option<&Pod>) -> bool {
        use std::os::unix::fs::MetadataExt as _;
        ext.kind == Kind::Container
            && ext.cgroup == cgroup
            && std::fs::metadata(cgroup).is_ok_and(|m| m.ino() == ext.id)
            && ext.group.as_ref() == pod.map(|p| &p.name)
    }

    /// The same container registered again: a hook whose first call was cut (the agent
    /// killed mid-request) sends it again, and must not fail the start for it. Everything
    /// is made again where missing and the limits applied again.
    fn register_again(
        &self,
        ext: &External,
        l: &Limits,
        pod: Option<&Pod>,
        labels: &Labels,
    ) -> Result<(), NodeError> {
        if let Some(p) = pod {
            self.ensure_pod(p, labels)?;
        }
        self.apply_registered(ext, l, self.net_state(ext.id)?)
    }

    /// Applies `l` to a registered container, every step idempotent (a registration sent
    /// again runs them again): rein's programs on its cgroup, unless it is in a pod (the
    /// programs on the pod's cgroup already see its packets; attached here too they would
    /// run, and count, twice), its map entries planned from `before`, the managed entry,
    /// then its cgroup files.
    fn apply_registered(
        &self,
        ext: &External,
        l: &Limits,
        before: NetState,
    ) -> Result<(), NodeError> {
        if ext.group.is_none() {
            let dir = self.registry_for(&ext.cgroup)?.dir_of(&ext.name);
            self.with_datapath(|dp| dp.attach_external(&ext.cgroup, &dir))?;
        }
        let net = self.planned(l, before);
        if net != before {
            self.write_net(ext.id, net)?;
        }
        self.with_datapath(|dp| dp.manage(ext.id))?;
        // Its cgroup is known: no lookup of the name again.
        self.tree.set_at(&ext.cgroup, l)?;
        Ok(())
    }

    /// The registry of runtimes' containers, or why `path` cannot be taken over without one.
    fn registry_for(&self, path: &Path) -> Result<&crate::cgroup::Registry, NodeError> {
        self.tree.registry().ok_or_else(|| NodeError::Foreign {
            path: path.to_owned(),
            problem: "this agent keeps no registry of runtimes' containers".into(),
        })
    }

    /// Registers the pod's cgroup as a group with the pod's limits, or updates the limits
    /// of the one registered. True when it registered it now.
    fn ensure_pod(&self, pod: &Pod, labels: &Labels) -> Result<bool, NodeError> {
        let registry = self.registry_for(&pod.cgroup)?;
        if let Some(e) = registry.get(&pod.name) {
            if e.cgroup != pod.cgroup || e.kind != Kind::Group {
                return Err(CgroupError::Exists(pod.name.clone()).into());
            }
            // An agent that died half way through registering the pod left the record: the
            // attachment and the managed entry are made again (both are idempotent).
            self.with_datapath(|dp| dp.attach_external(&pod.cgroup, &registry.dir_of(&pod.name)))?;
            self.with_datapath(|dp| dp.manage(e.id))?;
            // The pod's annotations reach every container of it; the latest one's stand.
            let before = self.net_state(e.id)?;
            let after = self.planned(&pod.limits, before);
            if after != before {
                self.write_net(e.id, after)?;
            }
            return Ok(false);
        }
        if self.tree.find(&pod.name).is_some() {
            return Err(CgroupError::Exists(pod.name.clone()).into());
        }
        let id = self.takeover_id(&pod.cgroup, None)?;
        let ext = External {
            name: pod.name.clone(),
            cgroup: pod.cgroup.clone(),
            id,
            // A pod's own series have no container or image, as cAdvisor's.
            labels: Labels {
                container: None,
                image: None,
                ..labels.clone()
            },
            kind: Kind::Group,
            group: None,
        };
        registry.add(&ext)?;
        let applied = (|| {
            self.with_datapath(|dp| dp.attach_external(&pod.cgroup, &registry.dir_of(&pod.name)))?;
            let net = self.planned(&pod.limits, NetState::default());
            if net != NetState::default() {
                self.write_net(id, net)?;
            }
            self.with_datapath(|dp| dp.manage(id))?;
            Ok::<(), NodeError>(())
        })();
        if let Err(e) = applied {
            let _ = registry.remove(&pod.name);
            let _ = self.with_datapath(|dp| dp.forget(id));
            return Err(e);
        }
        Ok(true)
    }

    /// Unregisters a pod's group (its record, which detaches the programs on its cgroup,
    /// and its map entries).
    fn unregister_pod(&self, name: &ContainerName) -> Result<(), NodeError> {
        let Some(r) = self.tree.registry() else {
            return Ok(());
        };
        if let Some(e) = r.get(name) {
            r.remove(name)?;
            self.with_datapath(|dp| dp.forget(e.id))?;
        }
        Ok(())
    }

    /// True when a registered container other than `except` is in the pod group `pod`.
    pub(super) fn pod_has_members(&self, pod: &ContainerName, except: &ContainerName) -> bool {
        self.tree.registry().is_some_and(|r| {
            r.records()
                .iter()
                .any(|e| &e.name != except && e.group.as_ref() == Some(pod))
        })
    }

    /// Forgets a runtime's container: its record and links (detaching rein's programs) and
    /// its map entries. Its cgroup, if it still exists, stays with the runtime, with the
    /// cgroup limits rein wrote.
    pub(super) fn unregister(&self, ext: &External) -> Result<(), NodeError> {
        if let Some(r) = self.tree.registry() {
            r.remove(&ext.name)?;
        }
        self.with_datapath(|dp| dp.forget(ext.id))?;
        // A pod's group goes with its last container.
        if let Some(pod) = &ext.group
            && !self.pod_has_members(pod, &ext.name)
        {
            self.unregister_pod(pod)?;
        }
        Ok(())
    }

    /// Unregisters `name` if it is a runtime's container registered with `cgroup` (the
    /// poststop hook); anything else is [`CgroupError::NotFound`].
    pub fn unregister_if(&self, name: &ContainerName, cgroup: &Path) -> Result<(), NodeError> {
        let lock = self.name_lock(name)?;
        let _one_at_a_time = lock.lock().map_err(|_| NodeError::Poisoned)?;
        let _registering = self.registrations.lock().map_err(|_| NodeError::Poisoned)?;
        match self.tree.external(name) {
            Some(ext) if ext.cgroup == cgroup => self.unregister(&ext),
            _ => Err(CgroupError::NotFound(name.clone()).into()),
        }
    }

    /// Takes over the links an earlier agent pinned on runtimes' cgroups (switched to this
    /// agent's programs; see `net::programs::links`), and re-makes any that are missing.
    /// At start, after [`Node::prune_external`]. Returns what failed, for the log.
    pub fn take_over_external(&self) -> Vec<String> {
        let Some(registry) = self.tree.registry() else {
            return Vec::new();
        };
        let mut report = Vec::new();
        // A pod's containers carry no programs of their own: the pod's cgroup has them.
        for ext in registry.records().into_iter().filter(|e| e.group.is_none()) {
            let (name, dir) = (&ext.name, registry.dir_of(&ext.name));
            if let Err(e) = self.with_datapath(|dp| dp.attach_external(&ext.cgroup, &dir)) {
                report.push(format!(
                    "{name}: its pinned programs could not be taken over: {e}"
                ));
            }
        }
        report
    }

    /// Unregisters runtimes' containers whose cgroup is gone (deleted while the agent was
    /// down, or without the poststop hook). Returns what it did, for the log.
    pub fn prune_external(&self) -> Vec<String> {
        let Some(registry) = self.tree.registry() else {
            return Vec::new();
        };
        let poisoned = || vec!["cannot prune registrations: a lock was poisoned".into()];
        let mut report = Vec::new();
        let abandoned = match self.registrations.lock() {
            Ok(_registering) => registry.remove_abandoned(),
            Err(_) => return poisoned(),
        };
        if abandoned > 0 {
            report.push(format!(
                "removed {abandoned} record(s) an agent left half-written"
            ));
        }
        for name in registry.list() {
            // The name's lock first, as every change takes them: a `set` of this container
            // must not write map entries for it after it was forgotten here.
            let Ok(lock) = self.name_lock(&name) else {
                return poisoned();
            };
            let Ok(_one_at_a_time) = lock.lock() else {
                return poisoned();
            };
            let Ok(_registering) = self.registrations.lock() else {
                return poisoned();
            };
            let outcome = match registry.get(&name) {
                // A pod's group whose containers are all gone (an agent died between its
                // last container's unregistration and the group's).
                Some(ext)
                    if ext.kind == Kind::Group
                        && !self.pod_has_members(&ext.name, &ext.name)
                        && registry.age(&name).is_some_and(|a| a.as_secs() > 60) =>
                {
                    self.unregister_pod(&ext.name)
                }
                Some(ext) if ext.is_live() => continue,
                Some(ext) => self.unregister(&ext),
                // Not a complete record (records are renamed into place whole, so someone
                // else's directory): nothing to forget in the maps without its id.
                None => registry.remove(&name).map_err(NodeError::from),
            };
            report.push(match outcome {
                Ok(()) => format!("{name}: its cgroup is gone; unregistered"),
                Err(e) => format!("{name}: its cgroup is gone, but unregistering failed: {e}"),
            });
        }
        report
    }
}
