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
        "linux.cgroupsPath {rel:?} is relative (runc puts it below the parent of its own \
         cgroup, crun below the cgroup2 mount), and the container's process is in {current:?}, \
         which does not end in it: give linux.cgroupsPath as an absolute path"
    )]
    Relative { rel: String, current: String },
    #[error(
        "linux.cgroupsPath {0:?} is relative, and the state names no process whose cgroup says \
         where the runtime put it: give linux.cgroupsPath as an absolute path"
    )]
    NoProcess(String),
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
    let spec = read_spec(&path).map_err(|problem| BundleError::Config {
        path: path.clone(),
        problem,
    })?;
    let notes = merged_annotations(&state, &spec);
    Ok(Loaded { state, spec, notes })
}

/// The largest config.json read (Kubernetes' are some kilobytes).
const MAX_CONFIG: u64 = 16 << 20;

/// The bundle's config.json. Read on the hook's only thread (a thread costs a container
/// start more than the read), which `--timeout` cannot cut short: so anything but a regular
/// file of at most [`MAX_CONFIG`] bytes is refused (a FIFO there would hold the start). The
/// runtime itself has just read the same file.
fn read_spec(path: &Path) -> Result<Spec, String> {
    use std::{io::Read as _, os::unix::fs::OpenOptionsExt as _};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| e.to_string())?;
    let meta = file.metadata().map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a regular file".into());
    }
    if meta.len() > MAX_CONFIG {
        return Err(format!("larger than {MAX_CONFIG} bytes"));
    }
    let mut text = String::new();
    file.take(MAX_CONFIG)
        .read_to_string(&mut text)
        .map_err(|e| e.to_string())?;
    serde_json::from_str(&text).map_err(|e| format!("not an OCI runtime spec: {e}"))
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

/// The name and placement of the container the state describes, without judging its
/// limits (poststop must clean up whatever createRuntime registered; by then the container's
/// process is gone, so a relative placement stays unresolved).
pub fn read_identity(
    state_json: &[u8],
    cgroup_root: &Path,
) -> Result<(ContainerName, Placement), BundleError> {
    let Loaded { state, spec, notes } = load(state_json)?;
    let placed = placement(cgroups_path(&spec), state.id(), cgroup_root)?;
    Ok((name_of(&state, &notes)?, placed))
}

fn cgroups_path(spec: &Spec) -> Option<&Path> {
    spec.linux()
        .as_ref()
        .and_then(|l| l.cgroups_path().as_deref())
}

/// The container's cgroup directory: where the spec puts it, or for a relative placement
/// where its process is (createRuntime runs once the runtime has put it there).
fn cgroup_of(spec: &Spec, state: &State, root: &Path) -> Result<PathBuf, BundleError> {
    match placement(cgroups_path(spec), state.id(), root)? {
        Placement::Dir(dir) => Ok(dir),
        Placement::Relative(rel) => {
            let shown = || rel.display().to_string();
            let pid = state
                .pid()
                .filter(|p| *p > 0)
                .ok_or_else(|| BundleError::NoProcess(shown()))?;
            let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
                .map_err(|_| BundleError::NoProcess(shown()))?;
            resolve_relative(&rel, &text, root)
        }
    }
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

/// True when the directory is named as kubelet names a pod's cgroup: `pod<uid>` (cgroupfs
/// driver) or `<parent>-pod<uid with _>.slice` (systemd driver).
fn names_pod(dir: &Path, uid: &str) -> bool {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    name == format!("pod{uid}") || name.ends_with(&format!("-pod{}.slice", uid.replace('-', "_")))
}

/// Where `linux.cgroupsPath` puts the container, as far as the spec alone can say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// This directory under the cgroup2 mount: an absolute path, or systemd's
    /// `slice:prefix:name` form (`system.slice:docker:ID` is `system.slice/docker-ID.scope`;
    /// a dashed slice nests, `a-b.slice` is `a.slice/a-b.slice`).
    Dir(PathBuf),
    /// A relative path, or none (then the container id): the runtimes disagree on where it
    /// goes (runc: below the parent of runc's own cgroup; crun: below the mount), so only
    /// the cgroup the container's process is in says ([`resolve_relative`]).
    Relative(PathBuf),
}

/// Where `linux.cgroupsPath` (or, unset, the id) puts the container's cgroup.
pub fn placement(path: Option<&Path>, id: &str, root: &Path) -> Result<Placement, BundleError> {
    let shown = || path.map_or_else(|| id.to_owned(), |p| p.display().to_string());
    let climbs = |p: &Path| {
        p.components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    };
    let text = path.map(|p| p.to_string_lossy().into_owned());
    match text.as_deref() {
        Some(t) if t.starts_with('/') => {
            let dir = root.join(t.trim_start_matches('/'));
            if climbs(Path::new(t)) || dir == root {
                return Err(BundleError::CgroupsPath(shown()));
            }
            Ok(Placement::Dir(dir))
        }
        Some(t) if t.split(':').count() == 3 => {
            let dir = systemd_dir(t, root).ok_or_else(|| BundleError::CgroupsPath(shown()))?;
            if climbs(&dir) || !dir.starts_with(root) || dir == root {
                return Err(BundleError::CgroupsPath(shown()));
            }
            Ok(Placement::Dir(dir))
        }
        relative => {
            let rel = PathBuf::from(relative.unwrap_or(id));
            let plain = rel
                .components()
                .all(|c| matches!(c, std::path::Component::Normal(_)));
            if rel.as_os_str().is_empty() || !plain {
                return Err(BundleError::CgroupsPath(shown()));
            }
            Ok(Placement::Relative(rel))
        }
    }
}

/// systemd's `slice:prefix:name` as a directory, or None if the slice is not one.
fn systemd_dir(text: &str, root: &Path) -> Option<PathBuf> {
    let [slice, prefix, name] = text.split(':').collect::<Vec<_>>()[..] else {
        return None;
    };
    let mut dir = root.to_owned();
    if !slice.is_empty() && slice != "-.slice" {
        let stem = slice.strip_suffix(".slice")?;
        let parts: Vec<&str> = stem.split('-').collect();
        for i in 1..=parts.len() {
            dir.push(format!("{}.slice", parts[..i].join("-")));
        }
    }
    dir.push(if prefix.is_empty() {
        format!("{name}.scope")
    } else {
        format!("{prefix}-{name}.scope")
    });
    Some(dir)
}

/// A relative placement resolved as the runtime resolved it: the cgroup the container's
/// process is in (`proc_cgroup`, the text of `/proc/PID/cgroup`), which must end in `rel`.
pub fn resolve_relative(
    rel: &Path,
    proc_cgroup: &str,
    root: &Path,
) -> Result<PathBuf, BundleError> {
    let current = proc_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::trim)
        .unwrap_or_default();
    let dir = root.join(current.trim_start_matches('/'));
    let inside = Path::new(current).components().all(|c| {
        matches!(
            c,
            std::path::Component::Normal(_) | std::path::Component::RootDir
        )
    });
    if !current.starts_with('/') || !inside || !Path::new(current).ends_with(rel) || dir == root {
        return Err(BundleError::Relative {
            rel: rel.display().to_string(),
            current: current.chars().take(4096).collect(),
        });
    }
    Ok(dir)
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

    /// Only a directory kubelet would have made for the pod is taken for the pod's cgroup.
    #[test]
    fn a_pods_cgroup_is_named_as_kubelet_names_it() {
        let uid = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
        for yes in [
            "/sys/fs/cgroup/kubepods/burstable/pod0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d",
            "/sys/fs/cgroup/kubepods.slice/kubepods-burstable.slice/\
             kubepods-burstable-pod0a1b2c3d_4e5f_4a6b_8c7d_9e0f1a2b3c4d.slice",
        ] {
            assert!(names_pod(Path::new(yes), uid), "{yes}");
        }
        for no in [
            "/sys/fs/cgroup/system.slice",
            "/sys/fs/cgroup/x-pod0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d-y",
            "/sys/fs/cgroup/pod0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d.scope",
        ] {
            assert!(!names_pod(Path::new(no), uid), "{no}");
        }
    }

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
        // A FIFO (no writer ever comes) is refused at once instead of read.
        let (dir, state) = bundle("");
        let config = dir.path().join("config.json");
        std::fs::remove_file(&config).unwrap();
        let made = std::process::Command::new("mkfifo").arg(&config).status();
        assert!(made.unwrap().success());
        let e = read(state.as_bytes(), root).unwrap_err();
        assert!(e.to_string().ends_with("not a regular file"), "{e}");
        let (_dir, state) = bundle(
            r#"{"ociVersion":"1.0.2","linux":{"cgroupsPath":"/x"},"annotations":{"rein/egress":"fast"}}"#,
        );
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
        let dir = |p: Option<&str>| placement(p.map(Path::new), "abc", root);
        let at = |d: &str| Placement::Dir(root.join(d));
        assert_eq!(dir(Some("/a/b")).unwrap(), at("a/b"));
        assert_eq!(
            dir(Some("system.slice:docker:abc")).unwrap(),
            at("system.slice/docker-abc.scope")
        );
        assert_eq!(
            dir(Some("machine-pod1.slice:libpod:abc")).unwrap(),
            at("machine.slice/machine-pod1.slice/libpod-abc.scope")
        );
        // Unset or relative: the runtime decides, the process's cgroup tells.
        assert_eq!(dir(None).unwrap(), Placement::Relative("abc".into()));
        assert_eq!(dir(Some("a/b")).unwrap(), Placement::Relative("a/b".into()));
        assert!(dir(Some("/a/../../etc")).is_err());
        assert!(dir(Some("a/../../etc")).is_err());
        assert!(dir(Some("notaslice:x:y")).is_err());
        // Neither the id nor a systemd name may lead out of the mount.
        assert!(dir(Some("system.slice:docker:../../../x")).is_err());
        assert!(placement(None, "../../etc", root).is_err());
        assert!(placement(None, "", root).is_err());
        assert!(dir(Some("/")).is_err());
    }

    #[test]
    fn a_relative_path_resolves_where_the_process_is() {
        let root = Path::new("/sys/fs/cgroup");
        let rel = Path::new("rein-rel/x");
        // runc run from /outer/runner puts it at /outer/rein-rel/x; crun at /rein-rel/x.
        for current in ["/outer/rein-rel/x", "/rein-rel/x"] {
            let text = format!("0::{current}\n");
            assert_eq!(
                resolve_relative(rel, &text, root).unwrap(),
                root.join(current.trim_start_matches('/'))
            );
        }
        for wrong in [
            "0::/other/y\n",
            "0::/\n",
            "",
            "1:name=systemd:/rein-rel/x\n",
        ] {
            let e = resolve_relative(rel, wrong, root).unwrap_err().to_string();
            assert!(e.contains("absolute path"), "{wrong:?}: {e}");
        }
    }
}
