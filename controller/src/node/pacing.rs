//! Pacing inside containers' network namespaces: in edt mode rein gives `fq` to the devices
//! of each shaped container's own namespace (the earliest point a departure time can be
//! honoured, before any crossing clears it, and with the socket still attached so TCP Small
//! Queues push back on the sender).

use std::collections::{HashMap, HashSet};

use super::{EgressMode, Node};
use crate::{
    cgroup::{ContainerName, Kind},
    net::netns::{self, NetnsId},
};

impl Node {
    /// The egress mode as it applies to one container: in edt mode, also the devices of
    /// the container's own network namespace that rein gave `fq`.
    pub fn egress_mode_of(&self, name: &ContainerName) -> String {
        let inside = self.netns_devices(name);
        let mode = self.mode();
        match (&mode, inside.is_empty()) {
            (EgressMode::Edt { .. }, false) => format!(
                "{mode} and {} in the container's network namespace",
                inside.join(",")
            ),
            _ => mode.to_string(),
        }
    }

    /// Devices that got `fq` in the network namespaces of the container's processes.
    fn netns_devices(&self, name: &ContainerName) -> Vec<String> {
        let Ok(paced) = self.paced_netns.lock() else {
            return Vec::new();
        };
        let mut out: Vec<String> = self
            .container_netns(name)
            .into_keys()
            .filter_map(|ns| paced.get(&ns))
            .flatten()
            .cloned()
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// The network namespaces of a container's processes other than the agent's own, each
    /// with one process in it.
    fn container_netns(&self, name: &ContainerName) -> HashMap<NetnsId, u32> {
        let own = netns::of(None).ok();
        let mut found = HashMap::new();
        for pid in self.tree.pids(name).unwrap_or_default() {
            if let Ok(ns) = netns::of(Some(pid))
                && Some(ns) != own
            {
                found.entry(ns).or_insert(pid);
            }
        }
        found
    }

    /// Containers with an egress limit of their own or in a group above them.
    fn shaped_containers(&self) -> Vec<ContainerName> {
        use std::os::unix::fs::MetadataExt as _;
        let entries = self.tree.entries();
        let shaped: HashSet<ContainerName> = entries
            .iter()
            .filter(|e| {
                let id = std::fs::metadata(&e.dir).map(|m| m.ino()).unwrap_or(0);
                self.with_datapath(|dp| dp.shaping(id))
                    .ok()
                    .flatten()
                    .flatten()
                    .is_some_and(|c| c.rate_bytes_per_sec > 0)
            })
            .map(|e| e.name.clone())
            .collect();
        let group_of = |n: &ContainerName| {
            entries
                .iter()
                .find(|e| &e.name == n)
                .and_then(|e| e.group.clone())
        };
        entries
            .iter()
            .filter(|e| e.kind == Kind::Container)
            .filter(|e| {
                let mut at = Some(e.name.clone());
                for _ in 0..=crate::cgroup::MAX_DEPTH {
                    match at {
                        Some(n) if shaped.contains(&n) => return true,
                        Some(n) => at = group_of(&n),
                        None => return false,
                    }
                }
                false
            })
            .map(|e| e.name.clone())
            .collect()
    }

    /// Gives `fq` to the network namespaces of shaped containers that do not have it yet
    /// (edt mode only), and forgets namespaces no shaped container uses any more. Called on
    /// every limit change and periodically, because a container's processes enter their
    /// namespace after its cgroup is made. Returns what it did, for the log.
    pub fn pace_container_netns(&self) -> Vec<String> {
        if !matches!(self.mode(), EgressMode::Edt { .. }) {
            return Vec::new();
        }
        let mut report = Vec::new();
        let mut seen = HashSet::new();
        for name in self.shaped_containers() {
            for (ns, pid) in self.container_netns(&name) {
                seen.insert(ns);
                let known = self.paced_netns.lock().is_ok_and(|p| p.contains_key(&ns));
                if known {
                    continue;
                }
                match netns::install_fq_in(pid, ns) {
                    Ok(devices) => {
                        report.push(format!(
                            "{name}: fq on {} in its network namespace",
                            devices.join(",")
                        ));
                        if let Ok(mut p) = self.paced_netns.lock() {
                            p.insert(ns, devices);
                        }
                    }
                    Err(e) => report.push(format!(
                        "{name}: cannot install fq in its network namespace (pid {pid}): {e}; \
                         its departure times are honoured only on the host's devices"
                    )),
                }
            }
        }
        // A namespace that is gone may have its inode reused by a new one.
        if let Ok(mut p) = self.paced_netns.lock() {
            p.retain(|ns, _| seen.contains(ns));
        }
        report
    }
}

impl Node {
    /// A config reload's egress devices. In edt mode, `fq` goes on each newly named device
    /// and the devices named no more are left as they are (their `fq` stays, harmless, and is
    /// no longer repaired); the mode's kind never changes here, because switching between
    /// pacing and policing rewrites every shaping entry (a restart does it). Returns the
    /// devices now paced and what it did, for the log; an error (nothing changed) outside
    /// edt mode, or when no named device can have `fq`.
    pub async fn set_egress_devices(
        &self,
        wanted: &[String],
    ) -> Result<(Vec<String>, Vec<String>), String> {
        let EgressMode::Edt { devices } = self.mode() else {
            return Err(format!(
                "egress is {} here: a new egress_devs takes effect at the next restart, which \
                 chooses the egress mode again",
                self.mode()
            ));
        };
        let mut report = Vec::new();
        let mut paced = Vec::new();
        for dev in wanted {
            if devices.contains(dev) {
                paced.push(dev.clone());
                continue;
            }
            match crate::net::qdisc::install_fq(dev).await {
                Ok(queues) => {
                    report.push(format!(
                        "fq paces {dev} ({queues} transmit queue(s)): egress pacing active"
                    ));
                    paced.push(dev.clone());
                }
                Err(e) => report.push(format!("cannot install fq on {dev}: {e}")),
            }
        }
        if paced.is_empty() {
            return Err(if wanted.is_empty() {
                format!(
                    "no egress device named or found (no default route); still pacing on {}",
                    devices.join(",")
                )
            } else {
                format!(
                    "no device of [{}] can have fq ({}); still pacing on {}",
                    wanted.join(","),
                    report.join("; "),
                    devices.join(",")
                )
            });
        }
        for dev in devices.iter().filter(|d| !paced.contains(d)) {
            report.push(format!(
                "{dev} is no longer an egress device: its fq stays, and is no longer repaired"
            ));
        }
        *self
            .mode
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = EgressMode::Edt {
            devices: paced.clone(),
        };
        Ok((paced, report))
    }
}
