//! Creating, changing and removing a container, each all or nothing, also across the
//! agent's death: a creation's intent and a change's journal are kept in the kernel until
//! the operation is complete (see `recovery` for what the next agent does with them).

use super::{Caller, Node, NodeError, egress::NetState, journal::Journal, journal::PENDING_XATTR};
use crate::{
    cgroup::{ContainerName, Entry, Kind, PRIORITY_XATTR, Tree},
    limits::Limits,
};

impl Node {
    /// Creates a container or a group in `group` (or at the top): cgroup files and map
    /// entries are all in place, and the cgroup is managed by the programs, before it
    /// appears under its name (see [`crate::cgroup::Tree::create`]).
    pub fn create(
        &self,
        name: &ContainerName,
        kind: Kind,
        group: Option<&ContainerName>,
        l: &Limits,
    ) -> Result<(), NodeError> {
        self.check_enforceable(l)?;
        let lock = self.name_lock(name)?;
        let _one_at_a_time = lock.lock().map_err(|_| NodeError::Poisoned)?;
        let net = self.planned(l, NetState::default());
        let mut written = None;
        let created = self.tree.create(name, kind, group, l, |_, id| {
            written = Some(id);
            if net != NetState::default() {
                self.write_net(id, net)?;
            }
            self.with_datapath(|dp| dp.manage(id))?;
            Ok::<(), NodeError>(())
        });
        if let (Err(_), Some(id)) = (&created, written) {
            let _ = self.with_datapath(|dp| dp.forget(id));
        }
        created.map(drop)
    }

    /// Changes limits live: the maps first (one update each, undone if the files fail), then
    /// the files (all or nothing by themselves).
    ///
    /// An agent that dies half way must not leave half a change: what the change would
    /// overwrite (file values, the priority class, both map entries) is first written to the
    /// container's cgroup as a journal (xattr `trusted.rein.pending`), and removed once the
    /// change is complete. The next agent finds a journal left behind and puts it back
    /// ([`Node::undo_interrupted`]), so the container has its last acknowledged limits.
    ///
    /// The container is looked up once; its entry is returned for the answer.
    pub fn set(
        &self,
        name: &ContainerName,
        l: &Limits,
        caller: Caller,
    ) -> Result<Entry, NodeError> {
        self.check_enforceable(l)?;
        let lock = self.name_lock(name)?;
        let _one_at_a_time = lock.lock().map_err(|_| NodeError::Poisoned)?;
        self.set_alone(name, l, caller)
    }

    /// [`Node::set`] unless another operation on `name` runs (then `None`, and nothing
    /// changed): for a caller that must not wait, such as the API's runtime thread.
    pub fn try_set(
        &self,
        name: &ContainerName,
        l: &Limits,
        caller: Caller,
    ) -> Result<Option<Entry>, NodeError> {
        self.check_enforceable(l)?;
        let lock = self.name_lock(name)?;
        let _one_at_a_time = match lock.try_lock() {
            Ok(guard) => guard,
            Err(std::sync::TryLockError::WouldBlock) => return Ok(None),
            Err(std::sync::TryLockError::Poisoned(_)) => return Err(NodeError::Poisoned),
        };
        self.set_alone(name, l, caller).map(Some)
    }

    /// The change itself, with `name`'s lock held.
    fn set_alone(
        &self,
        name: &ContainerName,
        l: &Limits,
        caller: Caller,
    ) -> Result<Entry, NodeError> {
        self.check_reach(name, caller)?;
        let entry = self.entry(name)?;
        let dir = entry.dir.as_path();
        let id = Self::id_at(name, dir)?;
        let before = self.net_state(id)?;
        let after = self.planned(l, before);
        let journal = Journal::new(
            Tree::undo_for_at(dir, l)?,
            Tree::mark_at(dir, PRIORITY_XATTR),
            before,
        );
        Tree::set_mark_at(dir, PENDING_XATTR, &journal.encode()?)?;
        if after != before
            && let Err(e) = self.write_net(id, after)
        {
            let _ = Tree::clear_mark_at(dir, PENDING_XATTR);
            return Err(e);
        }
        crate::failpoint::hit("set:after-maps");
        if let Err(e) = self.tree.set_at(dir, l) {
            if after != before {
                let _ = self.write_net(id, before);
            }
            let _ = Tree::clear_mark_at(dir, PENDING_XATTR);
            return Err(e.into());
        }
        crate::failpoint::hit("set:after-files");
        Tree::clear_mark_at(dir, PENDING_XATTR)?;
        Ok(entry)
    }

    /// Removes a container or a group (a runtime's container: unregisters it, see
    /// `runtime`). With processes inside, or members in a group, refuses unless `force`,
    /// which kills and removes everything below it first.
    pub fn remove(
        &self,
        name: &ContainerName,
        force: bool,
        caller: Caller,
    ) -> Result<(), NodeError> {
        let lock = self.name_lock(name)?;
        let _one_at_a_time = lock.lock().map_err(|_| NodeError::Poisoned)?;
        self.check_reach(name, caller)?;
        if let Some(ext) = self.tree.external(name) {
            let _registering = self.registrations.lock().map_err(|_| NodeError::Poisoned)?;
            if ext.kind == crate::cgroup::Kind::Group && self.pod_has_members(name, name) {
                return Err(NodeError::Foreign {
                    path: ext.cgroup,
                    problem: format!(
                        "is the group of a pod whose containers are registered; {name} goes \
                         with its last container"
                    ),
                });
            }
            return self.unregister(&ext);
        }
        let below = self.tree.subtree(name)?;
        self.tree.remove(name, force)?;
        // The cgroups are gone: leave no map entry behind for any of them.
        for (_, id) in below {
            self.with_datapath(|dp| dp.forget(id))?;
        }
        Ok(())
    }
}
