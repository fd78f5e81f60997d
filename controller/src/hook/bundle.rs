//! What a runtime hands `rein hook`: the OCI state on stdin and the bundle's config.json,
//! read with the `oci-spec` crate, turned into the container's cgroup directory, its labels
//! and the limits rein applies.
//!
//! Precedence: the runtime writes the resources its spec sets (`linux.resources`, including
//! `unified` keys) itself, and the spec is what the user's orchestrator asked for, so an
//! annotation for a knob the spec already sets is dropped (and reported), never applied over
//! it. Network limits, `--priority` and `--egress-burst` have no spec equivalent: annotations
//! are their only source.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
};

use oci_spec::runtime::{LinuxResources, Spec, State};

use super::annotations::{self, AnnotationError, KubeLabels};
use crate::{
    cgroup::ContainerName,
    limits::{Flag, Limits},
};

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("the OCI state on stdin is not valid: {0}")]
    State(String),
    #[error("reading the bundle's config.json ({path}): {problem}")]
    Config { path: PathBuf, problem: String },
    #[error(transparent)]
    Annotation(#[from] AnnotationError),
    #[error("linux.cgroupsPath {0:?} is not a path rein can place under the cgroup2 mount")]
    CgroupsPath(String),
    #[error(
        "{from} {name:?} is not a valid rein container name ({}); set the annotation {} to one",
        ContainerName::ACCEPTED,
        annotations::NAME
    )]
    Name { from: &'static str, name: String },
}

/// A container as the hook sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    /// The name rein lists it under: `rein/name`, else the OCI id.
    pub name: ContainerName,
    pub id: String,
    pub pid: Option<i32>,
    /// The container's cgroup directory (under `cgroup_root`).
    pub cgroup: PathBuf,
    pub labels: KubeLabels,
    /// The limits rein applies: the annotations' minus what the spec sets.
    pub limits: Limits,
    /// Knobs an annotation asked for that the spec already sets (the spec wins).
    pub overridden: Vec<Flag>,
    /// A Kubernetes pod's sandbox ("pause") container: not registered.
    pub pod_sandbox: bool,
    /// The pod's group, when the container is in a Kubernetes pod whose annotations limit
    /// the pod as a whole (`kubernetes.io/*-bandwidth`).
    pub pod: Option<PodGroup>,
}

/// A Kubernetes pod as a group: its cgroup is the parent of its containers' (kubelet's
/// layout, with either cgroup driver), and its limits are the pod-level annotations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodGroup {
    pub name: ContainerName,
    pub cgroup: PathBuf,
    pub limits: Limits,
}

/// The state, the spec and their annotations merged (the state's win).
struct Loaded {
    state: State,
    spec: Spec,
    notes: BTreeMap<String, String>,
}

fn load(state_json: &[u8]) -> Result<Loaded, BundleError> {
    let state: State =
        serde_json::from_slice(state_json).map_err(|e| BundleError::State(e.to_string()))?;
    if state.id().is_empty() {
        return Err(BundleError::State("no container id".into()));
    }
    let path = state.bundle().join("config.json");
    let spec = Spec::load(&path).map_err(|e| BundleError::Config {
        path: path.clone(),
        problem: e.to_string(),
    })?;
    let notes = merged_annotations(&state, &spec);
    Ok(Loaded { state, spec, notes })
}

/// The spec's annotations with the state's over them.
fn merged_annotations(state: &State, spec: &Spec) -> BTreeMap<String, String> {
    let mut notes: BTreeMap<String, String> = BTreeMap::new();
    for map in [spec.annotations(), state.annotations()]
        .into_iter()
        .flatten()
    {
        notes.extend(map.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    notes
}

/// `rein/name`, else the OCI id.
fn name_of(state: &State, notes: &BTreeMap<String, String>) -> Result<ContainerName, BundleError> {
    let (from, text) = match notes.get(annotations::NAME) {
        Some(n) => (annotations::NAME, n.as_str()),
        None => ("the OCI container id", state.id().as_str()),
    };
    text.parse().map_err(|_| BundleError::Name {
        from,
        name: text.chars().take(200).collect(),
    })
}

/// The name and cgroup directory of the container the state describes, without judging its
/// limits (poststop must clean up whatever createRuntime registered).
pub fn read_identity(
    state_json: &[u8],
    cgroup_root: &Path,
) -> Result<(ContainerName, PathBuf), BundleError> {
    let Loaded { state, spec, notes } = load(state_json)?;
    let cgroup = cgroup_of(&spec, &state, cgroup_root)?;
    Ok((name_of(&state, &notes)?, cgroup))
}

fn cgroup_of(spec: &Spec, state: &State, root: &Path) -> Result<PathBuf, BundleError> {
    let path = spec
        .linux()
        .as_ref()
        .and_then(|l| l.cgroups_path().as_deref());
    cgroup_dir(path, state.id(), root)
}

/// Reads the state JSON and the config.json of its bundle.
pub fn read(state_json: &[u8], cgroup_root: &Path) -> Result<Container, BundleError> {
    let Loaded { state, spec, .. } = load(state_json)?;
    from_parts(&state, &spec, cgroup_root)
}

/// The container a parsed state and spec describe (what `read` does once both are loaded;
/// the fuzz target `hook_bundle` drives it directly).
pub fn from_parts(
    state: &State,
    spec: &Spec,
    cgroup_root: &Path,
) -> Result<Container, BundleError> {
    let notes = merged_annotations(state, spec);
    let name = name_of(state, &notes)?;
    let linux = spec.linux().as_ref();
    let cgroup = cgroup_of(spec, state, cgroup_root)?;
    let labels = annotations::kube_labels(&notes);
    // A pod's cgroup is the parent of its containers', and kubelet names it after the pod's
    // UID (`pod<uid>`, or `kubepods-...-pod<uid with _>.slice` under systemd): a parent
    // without the UID in its name is not taken for the pod's (it could be any slice).
    let uid = annotations::pod_uid(&notes);
    let pod_of = match (&labels.namespace, &labels.pod, &uid, cgroup.parent()) {
        (Some(ns), Some(pod), Some(uid), Some(parent))
            if parent != cgroup_root && names_pod(parent, uid) =>
        {
            annotations::pod_group_name(ns, pod).map(|name| (name, parent.to_owned()))
        }
        _ => None,
    };
    let requested = annotations::requested(&notes, pod_of.is_some())?;
    let mut limits = requested.container;
    let pod = pod_of
        .filter(|_| requested.pod != Limits::default())
        .map(|(name, cgroup)| PodGroup {
            name,
            cgroup,
            limits: requested.pod,
        });
    let set = linux
        .and_then(|l| l.resources().as_ref())
        .map(spec_sets)
        .unwrap_or_default();
    let overridden = drop_flags(&mut limits, &set);
    Ok(Container {
        name,
        id: state.id().clone(),
        pid: *state.pid(),
        cgroup,
        labels,
        limits,
        overridden,
        pod_sandbox: annotations::is_pod_sandbox(&notes),
        pod,
    })
}

/// True when the directory's name carries the pod's UID, as kubelet names a pod's cgroup.
fn names_pod(dir: &Path, uid: &str) -> bool {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    !uid.is_empty() && (name.contains(uid) || name.contains(&uid.replace('-', "_")))
}

/// Where the runtime puts the container's cgroup: `linux.cgroupsPath` as an absolute path
/// under the cgroup2 mount, or systemd's `slice:prefix:name` form (`system.slice:docker:ID`
/// is `system.slice/docker-ID.scope`; a dashed slice nests, `a-b.slice` is
/// `a.slice/a-b.slice`), or unset: `/<id>`, runc's and crun's default.
pub fn cgroup_dir(path: Option<&Path>, id: &str, root: &Path) -> Result<PathBuf, BundleError> {
    let dir = cgroup_dir_unchecked(path, id, root)?;
    // Whatever the spec or the id say, the result stays below the mount.
    let escapes = dir
        .components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
        || !dir.starts_with(root)
        || dir == root;
    if escapes {
        let shown = path.map_or_else(|| id.to_owned(), |p| p.display().to_string());
        return Err(BundleError::CgroupsPath(shown));
    }
    Ok(dir)
}

fn cgroup_dir_unchecked(
    path: Option<&Path>,
    id: &str,
    root: &Path,
) -> Result<PathBuf, BundleError> {
    let Some(path) = path else {
        return Ok(root.join(id));
    };
    let text = path.to_string_lossy();
    let bad = || BundleError::CgroupsPath(text.to_string());
    if !text.starts_with('/')
        && let [slice, prefix, name] = text.split(':').collect::<Vec<_>>()[..]
    {
        let mut dir = root.to_owned();
        if !slice.is_empty() && slice != "-.slice" {
            let stem = slice.strip_suffix(".slice").ok_or_else(bad)?;
            let parts: Vec<&str> = stem.split('-').collect();
            for i in 1..=parts.len() {
                dir.push(format!("{}.slice", parts[..i].join("-")));
            }
        }
        let scope = if prefix.is_empty() {
            format!("{name}.scope")
        } else {
            format!("{prefix}-{name}.scope")
        };
        dir.push(scope);
        return Ok(dir);
    }
    // Absolute (or, rarely, relative) paths are below the cgroup2 mount; `..` would escape.
    if path
        .components()
        .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(bad());
    }
    Ok(root.join(text.trim_start_matches('/')))
}

/// The flags whose knob the spec's resources already set.
fn spec_sets(r: &LinuxResources) -> BTreeSet<Flag> {
    let mut set = BTreeSet::new();
    if let Some(cpu) = r.cpu() {
        if cpu.quota().is_some_and(|q| q > 0) {
            set.insert(Flag::Cpus);
        }
        if cpu.shares().is_some() {
            set.insert(Flag::CpuWeight);
        }
        if cpu.cpus().as_ref().is_some_and(|c| !c.is_empty()) {
            set.insert(Flag::Cpuset);
        }
    }
    if let Some(m) = r.memory() {
        if m.limit().is_some_and(|l| l > 0) {
            set.insert(Flag::Memory);
        }
        if m.reservation().is_some_and(|l| l > 0) {
            set.insert(Flag::MemoryLow);
        }
        if m.swap().is_some_and(|l| l > 0) {
            set.insert(Flag::Swap);
        }
    }
    if r.pids().as_ref().is_some_and(|p| p.limit() > 0) {
        set.insert(Flag::Pids);
    }
    if let Some(io) = r.block_io() {
        if io.weight().is_some() {
            set.insert(Flag::IoWeight);
        }
        let throttled = [
            io.throttle_read_bps_device(),
            io.throttle_write_bps_device(),
            io.throttle_read_iops_device(),
            io.throttle_write_iops_device(),
        ]
        .iter()
        .any(|d| d.as_ref().is_some_and(|d| !d.is_empty()));
        if throttled {
            set.insert(Flag::IoMax);
        }
    }
    for key in r.unified().iter().flat_map(|u| u.keys()) {
        let flag = match key.as_str() {
            "cpu.max" => Flag::Cpus,
            "cpu.weight" => Flag::CpuWeight,
            "cpuset.cpus" => Flag::Cpuset,
            "memory.max" => Flag::Memory,
            "memory.high" => Flag::MemoryHigh,
            "memory.low" => Flag::MemoryLow,
            "memory.min" => Flag::MemoryMin,
            "memory.swap.max" => Flag::Swap,
            "memory.oom.group" => Flag::OomGroup,
            "pids.max" => Flag::Pids,
            "io.weight" => Flag::IoWeight,
            "io.max" => Flag::IoMax,
            _ => continue,
        };
        set.insert(flag);
    }
    set
}

/// Clears the flags in `set` from `l`; returns the ones that were set.
fn drop_flags(l: &mut Limits, set: &BTreeSet<Flag>) -> Vec<Flag> {
    let mut dropped = Vec::new();
    macro_rules! drop_if_set {
        ($($field:ident => $flag:expr),* $(,)?) => {$(
            if l.$field.is_some() && set.contains(&$flag) {
                l.$field = None;
                dropped.push($flag);
            }
        )*};
    }
    drop_if_set!(
        cpus => Flag::Cpus,
        cpu_weight => Flag::CpuWeight,
        cpuset => Flag::Cpuset,
        memory => Flag::Memory,
        memory_high => Flag::MemoryHigh,
        memory_low => Flag::MemoryLow,
        memory_min => Flag::MemoryMin,
        swap => Flag::Swap,
        oom_group => Flag::OomGroup,
        pids => Flag::Pids,
        io_weight => Flag::IoWeight,
    );
    if !l.io_max.is_empty() && set.contains(&Flag::IoMax) {
        l.io_max.clear();
        dropped.push(Flag::IoMax);
    }
    dropped
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundle(config: &str) -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), config).unwrap();
        let state = format!(
            r#"{{"ociVersion":"1.0.2","id":"web","status":"creating","pid":4242,
                "bundle":"{}"}}"#,
            dir.path().display()
        );
        (dir, state)
    }

    #[test]
    fn annotations_apply_where_the_spec_is_silent() {
        let (_dir, state) = bundle(
            r#"{"ociVersion":"1.0.2",
                "annotations":{"rein/cpus":"0.5","rein/memory":"64M","rein/egress":"10mbit",
                               "io.kubernetes.pod.name":"web-0"},
                "linux":{"cgroupsPath":"/k8s/web",
                         "resources":{"memory":{"limit":134217728},
                                      "unified":{"memory.high":"100000000"}}}}"#,
        );
        let c = read(state.as_bytes(), Path::new("/sys/fs/cgroup")).unwrap();
        assert_eq!(c.id, "web");
        assert_eq!(c.pid, Some(4242));
        assert_eq!(c.cgroup, Path::new("/sys/fs/cgroup/k8s/web"));
        assert_eq!(c.labels.pod.as_deref(), Some("web-0"));
        // The spec's 128M memory limit wins over the annotation's 64M.
        assert_eq!(c.limits.to_string(), "--cpus 0.5 --egress 10mbit");
        assert_eq!(c.overridden, vec![Flag::Memory]);
    }

    #[test]
    fn bad_input_is_an_error_naming_it() {
        let root = Path::new("/sys/fs/cgroup");
        assert!(matches!(
            read(b"not json", root),
            Err(BundleError::State(_))
        ));
        let (_dir, state) = bundle("{ not json");
        let e = read(state.as_bytes(), root).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("reading the bundle's config.json"),
            "{e}"
        );
        let (_dir, state) =
            bundle(r#"{"ociVersion":"1.0.2","annotations":{"rein/egress":"fast"}}"#);
        let e = read(state.as_bytes(), root).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("annotation rein/egress: invalid value"),
            "{e}"
        );
    }

    #[test]
    fn cgroups_paths_resolve_as_runc_and_systemd_place_them() {
        let root = Path::new("/sys/fs/cgroup");
        let dir = |p: Option<&str>| cgroup_dir(p.map(Path::new), "abc", root);
        assert_eq!(dir(None).unwrap(), root.join("abc"));
        assert_eq!(dir(Some("/a/b")).unwrap(), root.join("a/b"));
        assert_eq!(
            dir(Some("system.slice:docker:abc")).unwrap(),
            root.join("system.slice/docker-abc.scope")
        );
        assert_eq!(
            dir(Some("machine-pod1.slice:libpod:abc")).unwrap(),
            root.join("machine.slice/machine-pod1.slice/libpod-abc.scope")
        );
        assert!(dir(Some("/a/../../etc")).is_err());
        assert!(dir(Some("notaslice:x:y")).is_err());
        // Neither the id nor a systemd name may lead out of the mount.
        assert!(dir(Some("system.slice:docker:../../../x")).is_err());
        assert!(cgroup_dir(None, "../../etc", root).is_err());
        assert!(cgroup_dir(None, "", root).is_err());
        assert!(dir(Some("/")).is_err());
    }
}
