//! The sock_ops program (TCP round-trip times, retransmissions and connections per
//! container): attached to the managed root through a pinned link, like the cgroup_skb pair.

use std::path::Path;

use aya::programs::{CgroupAttachMode, SockOps};
use controller_common::{TCP_MAP, TcpStats};

use super::{Datapath, ProgramError, pin_err, pin_link};

pub(super) const PROGRAM: &str = "rein_sock_ops";

impl Datapath {
    /// Loads the sock_ops program and attaches it to the cgroup `dir` through a link pinned
    /// in `pin_dir/links` (an earlier agent's pinned link is taken over). Returns whether it
    /// attached (false: the pin was there).
    pub fn ensure_sock_ops(&mut self, dir: &Path, pin_dir: &Path) -> Result<bool, ProgramError> {
        let pin = pin_dir.join("links").join(PROGRAM);
        let name = PROGRAM;
        let fail = |source| ProgramError::Program { name, source };
        let prog = self.sock_ops()?;
        // Loaded already when its pin was removed behind the agent's back (repair).
        if prog.fd().is_err() {
            prog.load().map_err(fail)?;
        }
        if self.take_over(&pin, name, dir)? {
            return Ok(false);
        }
        let prog = self.sock_ops()?;
        let cgroup = std::fs::File::open(dir).map_err(|e| pin_err(dir, &e))?;
        let id = prog
            .attach(cgroup, CgroupAttachMode::Single)
            .map_err(fail)?;
        let link = prog.take_link(id).map_err(fail)?;
        if let Some(parent) = pin.parent() {
            std::fs::create_dir_all(parent).map_err(|e| pin_err(parent, &e))?;
        }
        pin_link(link, &pin)?;
        self.made(&pin);
        Ok(true)
    }

    /// Re-attaches the sock_ops program if TCP statistics run and its pin is gone (removed
    /// behind the agent's back); returns whether it did. Where they never started (an old
    /// kernel), nothing is tried.
    pub fn repair_sock_ops(&mut self, dir: &Path, pin_dir: &Path) -> Result<bool, ProgramError> {
        if self.sock_ops_if_loaded()?.is_none() {
            return Ok(false);
        }
        self.ensure_sock_ops(dir, pin_dir)
    }

    /// The sock_ops program when TCP statistics run (it is loaded by
    /// [`Datapath::ensure_sock_ops`]).
    pub(super) fn sock_ops_if_loaded(&mut self) -> Result<Option<&mut SockOps>, ProgramError> {
        let prog = self.sock_ops()?;
        Ok(prog.fd().is_ok().then_some(prog))
    }

    fn sock_ops(&mut self) -> Result<&mut SockOps, ProgramError> {
        let name = PROGRAM;
        self.ebpf
            .program_mut(name)
            .ok_or(ProgramError::Missing { name })?
            .try_into()
            .map_err(|source| ProgramError::Program { name, source })
    }

    /// The cgroup's TCP statistics, summed over CPUs.
    pub fn tcp_of(&self, cgroup_id: u64) -> Result<Option<TcpStats>, ProgramError> {
        self.per_cpu_sum(TCP_MAP, cgroup_id, TcpStats::merged)
    }
}
