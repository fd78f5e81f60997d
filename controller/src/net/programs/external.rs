//! rein's programs on a cgroup a container runtime made (`rein hook`): the same cgroup_skb
//! pair and sock_ops program that run on the managed root, attached to the container's own
//! cgroup through links pinned in its registry directory (`cgroup::external`). The maps are
//! the node's, keyed by cgroup id as for every other container.
//!
//! Links attach in the kernel's multi-program mode (a link always does), so a runtime's own
//! programs on the same cgroup (runc's device filter is another type; a CNI's cgroup_skb
//! programs) keep running next to rein's.

use std::path::Path;

use aya::programs::{CgroupAttachMode, CgroupSkbAttachType};
use controller_common::{PROG_COUNT_EGRESS, PROG_COUNT_INGRESS};

use super::{Datapath, ProgramError, pin_err, pin_link};

/// Pin names inside the container's registry directory.
const EGRESS: &str = "egress";
const INGRESS: &str = "ingress";
const SOCK_OPS: &str = "sock_ops";

impl Datapath {
    /// Attaches the cgroup_skb pair and (when TCP statistics run) the sock_ops program to
    /// `cgroup`, pinning the links in `dir`. Links already pinned there are taken over
    /// (switched to this agent's programs).
    pub fn attach_external(&mut self, cgroup: &Path, dir: &Path) -> Result<(), ProgramError> {
        for (name, kind, file) in [
            (PROG_COUNT_EGRESS, CgroupSkbAttachType::Egress, EGRESS),
            (PROG_COUNT_INGRESS, CgroupSkbAttachType::Ingress, INGRESS),
        ] {
            let path = dir.join(file);
            if self.take_over(&path, name, cgroup)? {
                continue;
            }
            let fd = std::fs::File::open(cgroup).map_err(|e| pin_err(cgroup, &e))?;
            let fail = |source| ProgramError::Program { name, source };
            let prog = self.program(name)?;
            let id = prog
                .attach(fd, kind, CgroupAttachMode::Single)
                .map_err(fail)?;
            pin_link(prog.take_link(id).map_err(fail)?, &path)?;
            self.made(&path);
        }
        let path = dir.join(SOCK_OPS);
        let name = super::tcp::PROGRAM;
        if self.sock_ops_if_loaded()?.is_none() || self.take_over(&path, name, cgroup)? {
            return Ok(());
        }
        if let Some(prog) = self.sock_ops_if_loaded()? {
            let fail = |source| ProgramError::Program { name, source };
            let fd = std::fs::File::open(cgroup).map_err(|e| pin_err(cgroup, &e))?;
            let id = prog.attach(fd, CgroupAttachMode::Single).map_err(fail)?;
            pin_link(prog.take_link(id).map_err(fail)?, &path)?;
            self.made(&path);
        }
        Ok(())
    }
}
