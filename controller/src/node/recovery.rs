//! What the agent does at start and every second so that the kernel stays the database:
//! creations and changes an earlier agent died in the middle of are undone, adopted
//! shaping entries follow this agent's mode, and what was removed behind the agent's back
//! (pinned links, `fq`, cgroups) is put back or forgotten. Each returns what it did, for
//! the log.

use std::collections::HashSet;

use super::{
    EgressMode, Node, NodeError, ShaperParams,
    egress::set_node_bits,
    journal::{Journal, PENDING_XATTR},
};
use crate::{
    cgroup::{ContainerName, PRIORITY_XATTR},
    net::programs::Attachment,
};

impl Node {
    /// Puts back what was removed behind the agent's back, and says what it did: the
    /// programs' links on the managed root (a removed pin detaches them: shaping and
    /// counting would stop) and map entries of cgroups that no longer exist. `fq` on the
    /// egress devices is [`Node::repair_fq`]'s.
    pub fn repair(&self) -> Vec<String> {
        let mut report = Vec::new();
        if let Some(pin_dir) = &self.pin_dir {
            let root = self.tree.root().to_owned();
            match self.with_datapath(|dp| {
                let skb = dp.ensure_attached(&root, pin_dir)?;
                Ok((skb, dp.repair_sock_ops(&root, pin_dir)?))
            }) {
                Ok(Some((skb, tcp))) => {
                    if skb == Attachment::Attached {
                        report.push("the programs' pinned links were removed: re-attached".into());
                    }
                    if tcp {
                        report.push(
                            "the sock_ops program's pinned link was removed: re-attached".into(),
                        );
                    }
                }
                Ok(None) => {}
                Err(e) => report.push(format!("cannot re-attach the programs: {e}")),
            }
        }
        report.extend(self.forget_orphans());
        report.extend(self.manage_missing());
        report
    }

    /// Makes managed again any live container, group or registration the programs do not
    /// manage (an agent that failed to, or a map someone emptied): their packets and tasks
    /// would go unlimited and uncounted.
    fn manage_missing(&self) -> Vec<String> {
        let Ok(Some(managed)) = self.with_datapath(|dp| dp.managed()) else {
            return Vec::new();
        };
        let mut report = Vec::new();
        match self.with_datapath(|dp| dp.settle_generation()) {
            Ok(Some(true)) => report.push(
                "the programs' cached chains were invalidated late (an earlier change could not)"
                    .to_owned(),
            ),
            Err(e) => report.push(format!("the programs' cached chains are stale: {e}")),
            _ => {}
        }
        report.extend(
            self.live_ids()
                .into_iter()
                .filter(|id| !managed.contains(id))
                .map(|id| match self.with_datapath(|dp| dp.manage(id)) {
                    Ok(_) => format!("cgroup {id} was not managed by the programs: managed again"),
                    Err(e) => {
                        format!("cgroup {id} is not managed by the programs, and cannot be: {e}")
                    }
                }),
        );
        report
    }

    /// Reinstalls `fq` on egress devices that lost it (edt mode): without it departure
    /// times are ignored. Async, for the agent's periodic task (netlink round trips).
    pub async fn repair_fq(&self) -> Vec<String> {
        let EgressMode::Edt { devices } = self.mode() else {
            return Vec::new();
        };
        let mut report = Vec::new();
        for d in &devices {
            if crate::net::qdisc::has_fq(d).await.is_ok_and(|has| !has) {
                report.push(match crate::net::qdisc::install_fq(d).await {
                    Ok(_) => format!("fq was removed from {d}: reinstalled (egress pacing)"),
                    Err(e) => format!("fq was removed from {d} and cannot be reinstalled: {e}"),
                });
            }
        }
        report
    }

    /// Forgets the map entries of cgroups that are neither managed (being created included)
    /// nor registered: a cgroup removed behind the agent's back.
    fn forget_orphans(&self) -> Vec<String> {
        // The entries first, the cgroups second: a member created in between has its
        // directory before its entries, so it is never taken for an orphan.
        let Ok(Some(mut keyed)) = self.with_datapath(|dp| dp.keyed_ids()) else {
            return Vec::new();
        };
        keyed.sort_unstable();
        keyed.dedup();
        // Staged before live: a creation that completes in between is in one or the other.
        let staged: Vec<u64> = self
            .tree
            .staged()
            .into_iter()
            .filter_map(|s| s.cgroup.map(|c| c.1))
            .collect();
        let mut live = self.live_ids();
        live.extend(staged);
        keyed
            .into_iter()
            .filter(|id| !live.contains(id))
            .map(|id| match self.with_datapath(|dp| dp.forget(id)) {
                Ok(_) => {
                    format!("cgroup {id} was removed behind the agent's back: forgot its limits")
                }
                Err(e) => format!(
                    "cgroup {id} was removed behind the agent's back; forgetting it failed: {e}"
                ),
            })
            .collect()
    }

    /// The ids of every managed cgroup that exists: the tree's and the registry's.
    fn live_ids(&self) -> HashSet<u64> {
        use std::os::unix::fs::MetadataExt as _;
        let mut live: HashSet<u64> = self
            .tree
            .entries()
            .iter()
            .filter_map(|e| std::fs::metadata(&e.dir).ok().map(|m| m.ino()))
            .collect();
        if let Some(r) = self.tree.registry() {
            live.extend(r.records().iter().filter(|e| e.is_live()).map(|e| e.id));
        }
        live
    }

    /// Rewrites adopted shaping entries whose mode bit differs from this agent's mode.
    /// Entries still on the other mode's default mark and horizon take this mode's (the
    /// pacing defaults collapse TCP when policing); timings an operator chose stay.
    pub(super) fn align_mode(&self) -> Result<(), NodeError> {
        let police = self.mode().polices();
        let other = if police {
            ShaperParams::EDT
        } else {
            ShaperParams::POLICE
        };
        let params = self.params;
        self.with_datapath(|dp| {
            for (id, mut cfg) in dp.shaped()? {
                let before = cfg;
                set_node_bits(&mut cfg, police, params.flows);
                if (cfg.flags ^ before.flags) & controller_common::POLICE != 0
                    && (cfg.mark_ns, cfg.horizon_ns) == (other.mark_ns, other.horizon_ns)
                {
                    cfg.mark_ns = params.mark_ns;
                    cfg.horizon_ns = params.horizon_ns;
                }
                if cfg != before {
                    dp.set_shaping(id, cfg)?;
                }
            }
            Ok(())
        })?;
        Ok(())
    }

    /// Removes what creations cut short by an agent's death left: their cgroups, map
    /// entries and intents. Call at start, before serving requests. Returns what it did, for
    /// the log.
    pub fn remove_staged(&self) -> Vec<String> {
        self.tree
            .staged()
            .into_iter()
            .map(|staged| {
                let outcome = self
                    .tree
                    .remove_staged(&staged)
                    .map_err(NodeError::from)
                    .and_then(|()| match &staged.cgroup {
                        Some((_, id)) => self.with_datapath(|dp| dp.forget(*id)).map(drop),
                        None => Ok(()),
                    });
                let name = &staged.name;
                match outcome {
                    Ok(()) => format!("{name}: removed, an earlier agent died creating it"),
                    Err(e) => format!(
                        "{name}: an earlier agent died creating it; removing it failed: {e}"
                    ),
                }
            })
            .collect()
    }

    /// Records the run-queue latency of every container in the tree (after a restart, or
    /// Undoes the changes an earlier agent died in the middle of (their journals): files,
    /// priority class and map entries go back to what they were before. Call at start,
    /// before serving requests.
    pub fn undo_interrupted(&self) -> Vec<String> {
        let mut report = Vec::new();
        for name in self.tree.list().unwrap_or_default() {
            let Some(text) = self.tree.mark(&name, PENDING_XATTR) else {
                continue;
            };
            let outcome = Journal::decode(&text)
                .map_err(|e| format!("unreadable journal: {e}"))
                .and_then(|j| self.apply_journal(&name, &j));
            let _ = self.tree.clear_mark(&name, PENDING_XATTR);
            report.push(match outcome {
                Ok(()) => format!("{name}: undid a change an earlier agent did not finish"),
                Err(e) => format!("{name}: undoing an unfinished change failed: {e}"),
            });
        }
        report
    }

    fn apply_journal(&self, name: &ContainerName, j: &Journal) -> Result<(), String> {
        let mut failures = self.tree.write_back(name, &j.files);
        let priority = match &j.priority {
            Some(p) => self.tree.set_mark(name, PRIORITY_XATTR, p),
            None => self.tree.clear_mark(name, PRIORITY_XATTR).or(Ok(())),
        };
        failures.extend(priority.err().map(|e| e.to_string()));
        // The journal holds the entries as an earlier agent wrote them: the bits that follow
        // the node's settings are this agent's.
        let mut net = j.net();
        if let Some(cfg) = net.shaper.as_mut() {
            set_node_bits(cfg, self.mode().polices(), self.params.flows);
        }
        let written = self.cgroup_id(name).and_then(|id| self.write_net(id, net));
        failures.extend(written.err().map(|e| e.to_string()));
        if failures.is_empty() {
            Ok(())
        } else {
            Err(failures.join("; "))
        }
    }

    /// Makes every container and group of the tree, and every registered cgroup, managed
    /// by the programs (after a restart, or for members made before the programs ran).
    pub fn manage_all(&self) -> Result<(), NodeError> {
        for id in self.live_ids() {
            self.with_datapath(|dp| dp.manage(id))?;
        }
        Ok(())
    }
}
