//! Containers whose cgroup a runtime made (registered through `rein hook`), remembered in
//! bpffs beside the links that attach rein's programs to them:
//!
//! ```text
//! /sys/fs/bpf/rein/external/<name>/
//!     cgroup     -> /sys/fs/cgroup/<cgroupsPath>   (symlink: the cgroup directory)
//!     cgroup-id  -> 4242                           (symlink: its id, for cleanup once it is gone)
//!     pod, namespace, container -> <value>        (symlinks: Kubernetes names, when known)
//!     egress, ingress, sock_ops                    (pinned links, see net::programs)
//! ```
//!
//! The facts are symlink targets because bpffs holds directories, symlinks and pins but no
//! regular files. Like the pins next to them the record lives in kernel memory: it survives
//! the agent, not a reboot (nor does the container), and removing the directory unpins the
//! links, which detaches the programs.

use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use super::{CgroupError, ContainerName, io_err};

/// Metric labels a Kubernetes runtime leaves in the annotations (pod, namespace and
/// container name, as kubelet's cAdvisor labels its series).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Labels {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
}

impl Labels {
    /// (label name, value) of the labels that are set.
    pub fn pairs(&self) -> Vec<(&'static str, &str)> {
        [
            ("pod", &self.pod),
            ("namespace", &self.namespace),
            ("container", &self.container),
        ]
        .into_iter()
        .filter_map(|(k, v)| Some((k, v.as_deref()?)))
        .collect()
    }
}

/// One registered container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct External {
    pub name: ContainerName,
    /// Its cgroup directory, where the runtime made it.
    pub cgroup: PathBuf,
    /// The cgroup's id (inode) when it was registered.
    pub id: u64,
    pub labels: Labels,
}

impl External {
    /// True while the cgroup directory is the one that was registered (not removed, nor
    /// removed and made again under the same path).
    pub fn is_live(&self) -> bool {
        std::fs::metadata(&self.cgroup).is_ok_and(|m| m.is_dir() && m.ino() == self.id)
    }
}

/// The registry directory (`<bpf dir>/external`).
#[derive(Debug, Clone)]
pub struct Registry {
    dir: PathBuf,
}

const CGROUP: &str = "cgroup";
const CGROUP_ID: &str = "cgroup-id";

impl Registry {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
        }
    }

    /// The directory of one container's record (where its links are pinned too).
    pub fn dir_of(&self, name: &ContainerName) -> PathBuf {
        self.dir.join(name.as_str())
    }

    /// Records a container. Refuses a name already recorded; a half-written record is
    /// removed again.
    pub fn add(&self, e: &External) -> Result<(), CgroupError> {
        std::fs::create_dir_all(&self.dir).map_err(io_err("creating", &self.dir))?;
        let dir = self.dir_of(&e.name);
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(CgroupError::Exists(e.name.clone()));
            }
            Err(err) => return Err(io_err("creating", &dir)(err)),
        }
        let id = e.id.to_string();
        let mut facts = vec![(CGROUP, e.cgroup.as_os_str()), (CGROUP_ID, id.as_ref())];
        facts.extend(
            e.labels
                .pairs()
                .into_iter()
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, v)| (k, v.as_ref())),
        );
        for (key, value) in facts {
            let link = dir.join(key);
            if let Err(err) = std::os::unix::fs::symlink(value, &link) {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(io_err("recording", &link)(err));
            }
        }
        Ok(())
    }

    /// The record of `name`, if there is a complete one.
    pub fn get(&self, name: &ContainerName) -> Option<External> {
        let dir = self.dir_of(name);
        let fact = |key: &str| {
            std::fs::read_link(dir.join(key))
                .ok()
                .and_then(|t| t.to_str().map(str::to_owned))
        };
        Some(External {
            name: name.clone(),
            cgroup: PathBuf::from(fact(CGROUP)?),
            id: fact(CGROUP_ID)?.parse().ok()?,
            labels: Labels {
                pod: fact("pod"),
                namespace: fact("namespace"),
                container: fact("container"),
            },
        })
    }

    /// Every recorded name, sorted (none when the directory does not exist yet).
    pub fn list(&self) -> Vec<ContainerName> {
        let mut names: Vec<ContainerName> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect();
        names.sort();
        names
    }

    /// Forgets a container: its record and pinned links (which detaches rein's programs
    /// from its cgroup). An absent record is not an error.
    pub fn remove(&self, name: &ContainerName) -> Result<(), CgroupError> {
        let dir = self.dir_of(name);
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err("removing", &dir)(e)),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_refuse_a_second_registration() {
        let tmp = tempfile::tempdir().unwrap();
        let reg = Registry::new(&tmp.path().join("external"));
        assert!(reg.list().is_empty());
        let cgroup = tmp.path().join("cg");
        std::fs::create_dir(&cgroup).unwrap();
        let e = External {
            name: "web".parse().unwrap(),
            cgroup: cgroup.clone(),
            id: std::fs::metadata(&cgroup).unwrap().ino(),
            labels: Labels {
                pod: Some("web-0".into()),
                namespace: Some("shop".into()),
                container: None,
            },
        };
        reg.add(&e).unwrap();
        assert_eq!(reg.get(&e.name), Some(e.clone()));
        assert!(e.is_live());
        assert!(matches!(reg.add(&e), Err(CgroupError::Exists(_))));
        assert_eq!(reg.list(), vec![e.name.clone()]);
        std::fs::remove_dir(&cgroup).unwrap();
        assert!(!e.is_live());
        reg.remove(&e.name).unwrap();
        reg.remove(&e.name).unwrap();
        assert_eq!(reg.get(&e.name), None);
        assert!(reg.list().is_empty());
    }
}
