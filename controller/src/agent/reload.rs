//! SIGHUP: the agent reads its flags' config file again and applies what can change while it
//! runs, without touching enforcement (no limit, map entry or program is rewritten):
//! - `[hook_ceiling]`: registrations from now on are checked against the new ceiling;
//! - `egress_devs`: in edt mode `fq` goes on newly named devices (see
//!   [`Node::set_egress_devices`]);
//! - `metrics_addr`: the endpoint moves (the new address is bound before the old one closes).
//!
//! Every other setting is read at start only: a reload that changes one says so in the log
//! and leaves it as it runs, as it leaves egress devices it cannot pace on (police mode, no
//! device that takes `fq`). A config that does not parse, or a metrics address that cannot be
//! bound, refuses the whole reload: the agent logs why and goes on with the settings it had.
//! `rein_config_last_reload_successful` tells alerts.

use std::net::TcpListener;

use super::Settings;
use crate::node::Node;

/// The keys a reload applies; [`Settings::describe`]'s other keys need a restart.
const LIVE_KEYS: [&str; 3] = ["hook_ceiling", "egress_devs", "metrics_addr"];

/// What a reload found: the settings it applies, the new metrics listener if the address
/// changed, and the keys that changed but are read at start only.
pub struct Plan {
    next: Settings,
    listener: Option<TcpListener>,
    egress_devs: Option<Vec<String>>,
    pub restart_only: Vec<String>,
}

/// Compares the running settings with the file's new ones. Binding a new metrics address is
/// the one step that can fail here and it changes nothing: the listener is dropped if a later
/// step fails.
pub fn plan(running: &Settings, next: Settings) -> anyhow::Result<Plan> {
    let before = running.describe();
    let after = next.describe();
    let restart_only = before
        .iter()
        .zip(&after)
        .filter(|((key, old), (_, new))| old != new && !LIVE_KEYS.contains(key))
        .map(|((key, old), (_, new))| format!("{key} ({old} -> {new})"))
        .collect();
    let listener = if next.metrics_addr == running.metrics_addr {
        None
    } else {
        Some(crate::metrics::bind(next.metrics_addr)?)
    };
    let egress_devs = (next.egress_devs != running.egress_devs).then(|| next.egress_devs.clone());
    Ok(Plan {
        next,
        listener,
        egress_devs,
        restart_only,
    })
}

/// What applying a plan did: the new metrics listener to serve (if the address changed),
/// what was done, and what was left as it runs (with why), for the log.
pub struct Applied {
    pub listener: Option<TcpListener>,
    pub done: Vec<String>,
    pub left: Vec<String>,
}

impl Plan {
    /// Applies the plan to `node`; it cannot fail (the plan bound the listener already).
    pub async fn apply(self, running: &mut Settings, node: &Node) -> Applied {
        let mut report = Vec::new();
        let mut left = self.restart_only;
        if let Some(devs) = &self.egress_devs {
            match node.set_egress_devices(devs).await {
                Ok((paced, done)) => {
                    report.extend(done);
                    // What is paced now: a device that took no fq is tried again next time.
                    running.egress_devs = paced;
                }
                Err(why) => left.push(format!(
                    "egress_devs: {why}; tried again at the next reload"
                )),
            }
        }
        if self.next.hook_ceiling != running.hook_ceiling {
            node.set_hook_ceiling(self.next.hook_ceiling.clone());
            report.push(format!("hook ceiling now {}", self.next.hook_ceiling));
            running.hook_ceiling = self.next.hook_ceiling;
        }
        if self.listener.is_some() {
            report.push(format!(
                "metrics move from {} to {}",
                running.metrics_addr, self.next.metrics_addr
            ));
            running.metrics_addr = self.next.metrics_addr;
        }
        Applied {
            listener: self.listener,
            done: report,
            left,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(toml: &str) -> Settings {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rein.toml");
        std::fs::write(&path, toml).unwrap();
        Settings::resolve(
            super::super::AgentArgs {
                config: Some(path),
                node_name: Some("n".parse().unwrap()),
                ..Default::default()
            },
            crate::api::DEFAULT_SOCKET.into(),
        )
        .unwrap()
    }

    #[test]
    fn keys_read_at_start_only_are_named_and_live_ones_are_not() {
        let running = settings("egress_devs = [\"eth0\"]\nmetrics_addr = \"127.0.0.1:0\"\n");
        let next = settings(
            "egress_devs = [\"eth1\"]\nmetrics_addr = \"127.0.0.1:0\"\nroot = \"/sys/fs/cgroup/x\"\n\
             egress_mode = \"police\"\n[hook_ceiling]\ncpus = \"2\"\n",
        );
        let plan = plan(&running, next).unwrap();
        assert_eq!(
            plan.restart_only,
            [
                "root (/sys/fs/cgroup/rein.slice -> /sys/fs/cgroup/x)",
                "egress_mode (auto -> police)"
            ]
        );
        assert_eq!(plan.egress_devs.as_deref(), Some(&["eth1".to_owned()][..]));
        assert!(
            plan.listener.is_none(),
            "the same address is not bound again"
        );
    }

    #[test]
    fn an_address_in_use_fails_the_plan() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let running = settings("metrics_addr = \"127.0.0.1:1\"\n");
        let next = settings(&format!("metrics_addr = \"{addr}\"\n"));
        let e = plan(&running, next).err().unwrap().to_string();
        assert!(e.contains(&addr.to_string()), "{e}");
    }
}
