//! Containers whose cgroup a container runtime made (`rein hook`): registered in the
//! kernel (pinned records under bpffs, see `cgroup::external`), with rein's programs
//! attached to their cgroup and their limits applied; unregistered by the poststop hook or
//! when their cgroup is gone.

use std::path::Path;

use super::{Node, NodeError, egress::NetState};
use crate::{
    cgroup::{CgroupError, ContainerName, External, Labels},
    limits::Limits,
};

impl Node {
    /// Takes over a container whose cgroup its runtime made (`rein hook createRuntime`):
    /// records it in the registry, attaches rein's programs to its cgroup, and applies `l`
    /// (maps, then cgroup files). On failure nothing of it stays recorded or attached; the
    /// cgroup itself is the runtime's and is never removed.
    pub fn register(
        &self,
        name: &ContainerName,
        cgroup: &Path,
        labels: Labels,
        l: &Limits,
    ) -> Result<(), NodeError> {
        use std::os::unix::fs::MetadataExt as _;
        crate::limits::ceiling::check(&self.hook_ceiling, l)?;
        self.check_enforceable(l)?;
        crate::cgroup::Plan::for_limits(l)?;
        let foreign = |problem: &str| NodeError::Foreign {
            path: cgroup.to_owned(),
            problem: problem.to_owned(),
        };
        let registry = self
            .tree
            .registry()
            .ok_or_else(|| foreign("this agent keeps no registry of runtimes' containers"))?;
        if self.tree.root().join(name.as_str()).exists() || self.tree.external(name).is_some() {
            return Err(CgroupError::Exists(name.clone()).into());
        }
        let inside_mount = cgroup.starts_with(self.tree.mount())
            && !cgroup
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir));
        if !inside_mount {
            return Err(foreign(&format!(
                "is not a path inside the cgroup2 mount {}",
                self.tree.mount().display()
            )));
        }
        if cgroup.starts_with(self.tree.root()) {
            return Err(foreign(
                "is inside rein's managed root; containers there are made with `rein run`, and \
                 rein's programs already run on them",
            ));
        }
        let meta = std::fs::metadata(cgroup)
            .map_err(|e| foreign(&format!("{e}; the runtime has not made it (yet)")))?;
        if !meta.is_dir() || !crate::cgroup::is_cgroup2(cgroup) {
            return Err(foreign("is not a cgroup v2 directory"));
        }
        let ext = External {
            name: name.clone(),
            cgroup: cgroup.to_owned(),
            id: meta.ino(),
            labels,
        };
        registry.add(&ext)?;
        let applied = (|| {
            self.with_datapath(|dp| dp.attach_external(cgroup, &registry.dir_of(name)))?;
            let net = self.planned(l, NetState::default());
            if net != NetState::default() {
                self.write_net(ext.id, net)?;
            }
            self.with_datapath(|dp| dp.watch(ext.id))?;
            self.tree.set(name, l)?;
            Ok(())
        })();
        if let Err(e) = applied {
            let _ = registry.remove(name);
            let _ = self.with_datapath(|dp| dp.forget(ext.id));
            return Err(e);
        }
        Ok(())
    }

    /// Forgets a runtime's container: its record and links (detaching rein's programs) and
    /// its map entries. Its cgroup, if it still exists, stays with the runtime, with the
    /// cgroup limits rein wrote.
    pub(super) fn unregister(&self, ext: &External) -> Result<(), NodeError> {
        if let Some(r) = self.tree.registry() {
            r.remove(&ext.name)?;
        }
        self.with_datapath(|dp| dp.forget(ext.id))?;
        Ok(())
    }

    /// Unregisters `name` if it is a runtime's container registered with `cgroup` (the
    /// poststop hook); anything else is [`CgroupError::NotFound`].
    pub fn unregister_if(&self, name: &ContainerName, cgroup: &Path) -> Result<(), NodeError> {
        match self.tree.external(name) {
            Some(ext) if ext.cgroup == cgroup => self.unregister(&ext),
            _ => Err(CgroupError::NotFound(name.clone()).into()),
        }
    }

    /// Unregisters runtimes' containers whose cgroup is gone (deleted while the agent was
    /// down, or without the poststop hook). Returns what it did, for the log.
    pub fn prune_external(&self) -> Vec<String> {
        let Some(registry) = self.tree.registry() else {
            return Vec::new();
        };
        let mut report = Vec::new();
        let abandoned = registry.remove_abandoned();
        if abandoned > 0 {
            report.push(format!(
                "removed {abandoned} record(s) an agent left half-written"
            ));
        }
        for name in registry.list() {
            let outcome = match registry.get(&name) {
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
