//! Containers whose cgroup a runtime made (registered through `rein hook`), remembered in
//! bpffs beside the links that attach rein's programs to them:
//!
//! ```text
//! /sys/fs/bpf/rein/external/<name>/
//!     cgroup     -> /sys/fs/cgroup/<cgroupsPath>   (symlink: the cgroup directory)
//!     cgroup-id  -> 4242                           (symlink: its id, for cleanup once it is gone)
//!     pod, namespace, container -> <value>        (symlinks: Kubernetes names, when known)
//!     kind       -> group                          (symlink: only for a pod's group)
//!     group      -> <name>                         (symlink: the pod group it is in, if any)
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

use super::{CgroupError, ContainerName, Kind, io_err};

/// Metric labels a Kubernetes runtime leaves in the annotations (pod, namespace, container
/// name and image, as kubelet's cAdvisor labels its series).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Labels {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// The image as the pod spec names it (cAdvisor's `image` label).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
}

impl Labels {
    /// (label name, value) of the labels that are set.
    pub fn pairs(&self) -> Vec<(&'static str, &str)> {
        [
            ("pod", &self.pod),
            ("namespace", &self.namespace),
            ("container", &self.container),
            ("image", &self.image),
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
    /// A container, or a group (a Kubernetes pod whose cgroup holds its containers').
    pub kind: Kind,
    /// The registered group it is in (its pod), if any.
    pub group: Option<ContainerName>,
}

impl External {
    /// True while the cgroup directory is the one that was registered (not removed, nor
    /// removed and made again under the same path).
    pub fn is_live(&self) -> bool {
        std::fs::metadata(&self.cgroup).is_ok_and(|m| m.is_dir() && m.ino() == self.id)
    }
}

/// The registry directory (`<bpf dir>/external`).
///
/// Each record is read from bpffs once and kept in memory after (eight symlinks per record:
/// a registration checks the new cgroup against every registered one, and a scrape lists
/// them all). The directory listing still says which records exist, and a record's copy
/// stands for it only while its directory is the same one (by inode): a record removed and
/// written again (a container replacing a dead registration of its name) is read again,
/// whatever a reader racing the change kept.
#[derive(Debug, Clone)]
pub struct Registry {
    dir: PathBuf,
    read: std::sync::Arc<std::sync::Mutex<std::collections::HashMap<ContainerName, Read>>>,
}

/// A record as read, and the inode of the directory it was read from.
#[derive(Debug, Clone)]
struct Read {
    dir_ino: u64,
    record: External,
}

const CGROUP: &str = "cgroup";
/// Records being written or removed (".new-..." once decoded: not a valid container name, so
/// never listed; bpffs allows no dot).
const TMP_PREFIX: &str = "+new-";
const CGROUP_ID: &str = "cgroup-id";
const KIND: &str = "kind";
const GROUP: &str = "group";

impl Registry {
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
            read: std::sync::Arc::default(),
        }
    }

    /// A name of `name`'s record while it is written (`what` empty) or removed: never listed,
    /// unique in this agent, and cleared by [`Registry::remove_abandoned`] if left behind.
    fn temporary(&self, name: &ContainerName, what: &str) -> PathBuf {
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.dir.join(format!(
            "{TMP_PREFIX}{}-{what}{}-{seq}",
            name.as_str().replace('.', "+"),
            std::process::id()
        ))
    }

    /// The records read so far (a copy of what is in bpffs, so a poisoned lock is harmless).
    fn read(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<ContainerName, Read>> {
        self.read
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The directory of one container's record (where its links are pinned too). bpffs
    /// refuses names with a dot, which container names may have: '.' is stored as '+', which
    /// they may not.
    pub fn dir_of(&self, name: &ContainerName) -> PathBuf {
        self.dir.join(name.as_str().replace('.', "+"))
    }

    /// Records a container. Refuses a name already recorded. The record is written under a
    /// temporary name and renamed into place, so a reader (the agent's pruning) never sees
    /// half of one; a record that cannot be completed is removed again.
    pub fn add(&self, e: &External) -> Result<(), CgroupError> {
        std::fs::create_dir_all(&self.dir).map_err(io_err("creating", &self.dir))?;
        if self.dir_of(&e.name).exists() {
            return Err(CgroupError::Exists(e.name.clone()));
        }
        let dir = self.temporary(&e.name, "");
        std::fs::create_dir(&dir).map_err(io_err("creating", &dir))?;
        // rename(2) keeps the inode: this is the record's directory once in place.
        let dir_ino = std::fs::metadata(&dir).map_or(0, |m| m.ino());
        let id = e.id.to_string();
        let mut facts = vec![(CGROUP, e.cgroup.as_os_str()), (CGROUP_ID, id.as_ref())];
        if e.kind == Kind::Group {
            facts.push((KIND, "group".as_ref()));
        }
        if let Some(g) = &e.group {
            facts.push((GROUP, g.as_str().as_ref()));
        }
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
        // rename(2) onto an existing record fails (it is not empty): the name is taken.
        let target = self.dir_of(&e.name);
        if let Err(err) = std::fs::rename(&dir, &target) {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(if target.exists() {
                CgroupError::Exists(e.name.clone())
            } else {
                io_err("recording", &target)(err)
            });
        }
        self.read().insert(
            e.name.clone(),
            Read {
                dir_ino,
                record: e.clone(),
            },
        );
        Ok(())
    }

    /// Removes records an agent killed while writing them left under their temporary name
    /// (older than a minute, so none being written now). Returns how many.
    pub fn remove_abandoned(&self) -> usize {
        let old = |e: &std::fs::DirEntry| {
            e.metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t.elapsed().is_ok_and(|a| a.as_secs() > 60))
        };
        std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(TMP_PREFIX) && old(e))
            .filter(|e| std::fs::remove_dir_all(e.path()).is_ok())
            .count()
    }

    /// The record of `name`, if there is a complete one.
    pub fn get(&self, name: &ContainerName) -> Option<External> {
        match std::fs::metadata(self.dir_of(name)) {
            Ok(m) if m.is_dir() => self.listed(name, m.ino()),
            _ => {
                self.read().remove(name);
                None
            }
        }
    }

    /// The record of `name`, whose directory has the inode `dir_ino`: the copy read from
    /// that directory, or what bpffs holds now.
    fn listed(&self, name: &ContainerName, dir_ino: u64) -> Option<External> {
        if let Some(r) = self.read().get(name).filter(|r| r.dir_ino == dir_ino) {
            return Some(r.record.clone());
        }
        let mut dir_ino = dir_ino;
        // A record is renamed into place whole and renamed away before it is deleted: one
        // read through a directory still in place after it is the whole of one record.
        // Replaced meanwhile, the new one is read (twice at most: replacements are rare).
        for _ in 0..3 {
            let record = self.read_record(name);
            let now = std::fs::metadata(self.dir_of(name)).ok().map(|m| m.ino());
            match (record, now) {
                (Some(record), Some(ino)) if ino == dir_ino => {
                    self.read().insert(
                        name.clone(),
                        Read {
                            dir_ino,
                            record: record.clone(),
                        },
                    );
                    return Some(record);
                }
                // Not a complete record, and not being replaced: someone else's directory.
                (None, Some(ino)) if ino == dir_ino => break,
                (_, Some(ino)) => dir_ino = ino,
                (_, None) => break,
            }
        }
        self.read().remove(name);
        None
    }

    /// Every complete record, in name order.
    pub fn records(&self) -> Vec<External> {
        self.listing()
            .into_iter()
            .filter_map(|(name, ino)| self.listed(&name, ino))
            .collect()
    }

    /// The record of `name` as bpffs holds it.
    fn read_record(&self, name: &ContainerName) -> Option<External> {
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
                image: fact("image"),
            },
            kind: match fact(KIND).as_deref() {
                Some("group") => Kind::Group,
                _ => Kind::Container,
            },
            group: fact(GROUP).and_then(|g| g.parse().ok()),
        })
    }

    /// How long ago the record of `name` was written.
    pub fn age(&self, name: &ContainerName) -> Option<std::time::Duration> {
        std::fs::metadata(self.dir_of(name))
            .and_then(|m| m.modified())
            .ok()?
            .elapsed()
            .ok()
    }

    /// Every recorded name, sorted (none when the directory does not exist yet).
    pub fn list(&self) -> Vec<ContainerName> {
        self.listing().into_iter().map(|(name, _)| name).collect()
    }

    /// Every recorded name with its directory's inode (from the listing itself), sorted.
    fn listing(&self) -> Vec<(ContainerName, u64)> {
        use std::os::unix::fs::DirEntryExt as _;
        let mut names: Vec<(ContainerName, u64)> = std::fs::read_dir(&self.dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_str()?.replace('+', ".").parse().ok()?;
                Some((name, e.ino()))
            })
            .collect();
        names.sort();
        names
    }

    /// Forgets a container: its record and pinned links (which detaches rein's programs
    /// from its cgroup). An absent record is not an error.
    pub fn remove(&self, name: &ContainerName) -> Result<(), CgroupError> {
        let dir = self.dir_of(name);
        // Renamed away first, so that no reader sees a record half deleted (an agent killed
        // here leaves it to `remove_abandoned`).
        let away = self.temporary(name, "removed-");
        let dir = match std::fs::rename(&dir, &away) {
            Ok(()) => away,
            Err(_) => dir,
        };
        let removed = std::fs::remove_dir_all(&dir);
        self.read().remove(name);
        match removed {
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
            name: "web.1".parse().unwrap(),
            cgroup: cgroup.clone(),
            id: std::fs::metadata(&cgroup).unwrap().ino(),
            labels: Labels {
                pod: Some("web-0".into()),
                namespace: Some("shop".into()),
                container: None,
                image: Some("docker.io/library/nginx:1.27".into()),
            },
            kind: Kind::Container,
            group: Some("shop_web-0".parse().unwrap()),
        };
        reg.add(&e).unwrap();
        let stored = reg.dir_of(&e.name);
        assert_eq!(stored.file_name().unwrap(), "web+1", "bpffs allows no dot");
        assert_eq!(reg.get(&e.name), Some(e.clone()));
        assert_eq!(reg.records(), vec![e.clone()]);
        // What another agent (a restarted one) reads back from bpffs is the same record.
        let restarted = Registry::new(&tmp.path().join("external"));
        assert_eq!(restarted.get(&e.name), Some(e.clone()));
        assert!(e.is_live());
        assert!(matches!(reg.add(&e), Err(CgroupError::Exists(_))));
        assert_eq!(reg.list(), vec![e.name.clone()]);
        // A record being written is not listed, nor removed while fresh.
        std::fs::create_dir(tmp.path().join("external").join("+new-web-1-0")).unwrap();
        assert_eq!(reg.list(), vec![e.name.clone()]);
        assert_eq!(reg.remove_abandoned(), 0);
        std::fs::remove_dir(&cgroup).unwrap();
        assert!(!e.is_live());
        reg.remove(&e.name).unwrap();
        reg.remove(&e.name).unwrap();
        assert_eq!(reg.get(&e.name), None);
        // Gone from bpffs, it is gone for a handle that had read it too.
        assert_eq!(restarted.get(&e.name), None);
        assert!(restarted.records().is_empty());
        // Written again under the name through one handle (another container taking the
        // name), it is the new record for a handle that had read the old one.
        reg.add(&e).unwrap();
        assert_eq!(restarted.records(), vec![e.clone()]);
        // Held open, the old directory's inode number cannot be reused by the new one (a
        // disk filesystem reuses them at once; bpffs does not).
        let _held = std::fs::File::open(reg.dir_of(&e.name)).unwrap();
        reg.remove(&e.name).unwrap();
        let group = External {
            kind: Kind::Group,
            group: None,
            ..e.clone()
        };
        reg.add(&group).unwrap();
        assert_eq!(restarted.get(&e.name), Some(group.clone()));
        assert_eq!(restarted.records(), vec![group.clone()]);
        reg.remove(&group.name).unwrap();
        assert!(reg.list().is_empty());
        assert!(
            std::fs::read_dir(tmp.path().join("external"))
                .unwrap()
                .flatten()
                .all(|d| d.file_name().to_string_lossy().starts_with(TMP_PREFIX))
        );
    }
}
