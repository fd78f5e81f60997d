//! The sock_ops program (TCP round-trip times, retransmissions and connections per
//! container): attached to the managed root through a pinned link, like the cgroup_skb pair.

use std::path::Path;

use aya::programs::{CgroupAttachMode, SockOps, links::FdLink};
use controller_common::{TCP_MAP, TcpStats};

use super::{Datapath, ProgramError};

const PROGRAM: &str = "rein_sock_ops";

impl Datapath {
    /// Loads the sock_ops program and attaches it to the cgroup `dir` through a link pinned
    /// in `pin_dir/links` (an earlier agent's pinned link is adopted).
    pub fn ensure_sock_ops(&mut self, dir: &Path, pin_dir: &Path) -> Result<(), ProgramError> {
        let pin = pin_dir.join("links").join(PROGRAM);
        if pin.exists() {
            return Ok(());
        }
        let pin_err = |path: &Path, e: &dyn std::fmt::Display| ProgramError::Pin {
            path: path.to_owned(),
            problem: e.to_string(),
        };
        let name = PROGRAM;
        let fail = |source| ProgramError::Program { name, source };
        let prog: &mut SockOps = self
            .ebpf
            .program_mut(name)
            .ok_or(ProgramError::Missing { name })?
            .try_into()
            .map_err(fail)?;
        prog.load().map_err(fail)?;
        let cgroup = std::fs::File::open(dir).map_err(|e| pin_err(dir, &e))?;
        let id = prog
            .attach(cgroup, CgroupAttachMode::Single)
            .map_err(fail)?;
        let link: FdLink = prog
            .take_link(id)
            .map_err(fail)?
            .try_into()
            .map_err(|e| pin_err(&pin, &e))?;
        if let Some(parent) = pin.parent() {
            std::fs::create_dir_all(parent).map_err(|e| pin_err(parent, &e))?;
        }
        link.pin(&pin).map_err(|e| pin_err(&pin, &e))?;
        Ok(())
    }

    /// The cgroup's TCP statistics, summed over CPUs.
    pub fn tcp_of(&self, cgroup_id: u64) -> Result<Option<TcpStats>, ProgramError> {
        self.per_cpu_sum(TCP_MAP, cgroup_id, TcpStats::merged)
    }
}
