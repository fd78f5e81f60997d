//! Limits and labels from a container's OCI annotations.
//!
//! Keys: `rein/<flag>` for every flag of `rein run` (`rein/cpus`, `rein/memory`,
//! `rein/egress`, ...; `rein/egress-bandwidth` and `rein/ingress-bandwidth` are accepted as
//! the same as `rein/egress` and `rein/ingress`; `rein/io-max` takes several devices separated
//! by `;`), and Kubernetes' `kubernetes.io/egress-bandwidth` and
//! `kubernetes.io/ingress-bandwidth` (what the bandwidth CNI plugin reads). A `rein/` key rein
//! does not know is an error, not ignored: a typo must not start a container without its
//! limit. Both spellings of one limit with different values are an error too.

use std::collections::BTreeMap;

use crate::limits::{Flag, LimitError, Limits};

pub const PREFIX: &str = "rein/";
/// The name rein lists the container under (`rein run --name`); default its OCI id.
pub const NAME: &str = "rein/name";
pub const K8S_EGRESS: &str = "kubernetes.io/egress-bandwidth";
pub const K8S_INGRESS: &str = "kubernetes.io/ingress-bandwidth";

/// Metric labels a Kubernetes runtime leaves in the annotations: CRI-O's
/// `io.kubernetes.pod.*` / `io.kubernetes.container.name`, or containerd's
/// `io.kubernetes.cri.*`.
pub type KubeLabels = crate::cgroup::Labels;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AnnotationError {
    #[error("annotation {key}: {source}")]
    Limit {
        key: String,
        #[source]
        source: LimitError,
    },
    #[error("unknown annotation {key:?}; rein reads {PREFIX}<flag> with <flag> one of: {known}")]
    Unknown { key: String, known: String },
    #[error("annotations {a:?} ({va}) and {b:?} ({vb}) set the same limit differently; give one")]
    Conflict {
        a: String,
        va: String,
        b: String,
        vb: String,
    },
}

/// The flag a `rein/` key names.
fn flag_of(name: &str) -> Option<Flag> {
    match name {
        "egress-bandwidth" => Some(Flag::Egress),
        "ingress-bandwidth" => Some(Flag::Ingress),
        other => Flag::from_name(other),
    }
}

/// The limits the annotations ask for, for the container and for its pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requested {
    pub container: Limits,
    /// `kubernetes.io/egress-bandwidth` and `kubernetes.io/ingress-bandwidth` of a container
    /// that belongs to a pod: they limit the pod as a whole, as the bandwidth CNI plugin
    /// does on the pod's one interface.
    pub pod: Limits,
}

/// The limits the annotations ask for, each set validated as a whole (as `rein run` does).
/// In a pod (`in_pod`), Kubernetes' bandwidth annotations are the pod's; `rein/` ones are
/// always the container's.
pub fn requested(
    annotations: &BTreeMap<String, String>,
    in_pod: bool,
) -> Result<Requested, AnnotationError> {
    // (flag, value, the key it came from), for the container and for the pod.
    let mut pairs: Vec<(Flag, &str, &str)> = Vec::new();
    let mut pod_pairs: Vec<(Flag, &str, &str)> = Vec::new();
    for (key, value) in annotations {
        if key == NAME {
            continue;
        }
        if let Some(name) = key.strip_prefix(PREFIX) {
            let flag = flag_of(name).ok_or_else(|| AnnotationError::Unknown {
                key: key.clone(),
                known: format!("name, {}", Flag::ALL.map(Flag::name).join(", ")),
            })?;
            if flag == Flag::IoMax {
                pairs.extend(
                    value
                        .split(';')
                        .map(str::trim)
                        .filter(|v| !v.is_empty())
                        .map(|v| (flag, v, key.as_str())),
                );
            } else {
                pairs.push((flag, value.as_str(), key.as_str()));
            }
        } else if let Some(flag) = match key.as_str() {
            K8S_EGRESS => Some(Flag::Egress),
            K8S_INGRESS => Some(Flag::Ingress),
            _ => None,
        } {
            let to = if in_pod { &mut pod_pairs } else { &mut pairs };
            to.push((flag, value.as_str(), key.as_str()));
        }
    }
    Ok(Requested {
        container: parse(pairs)?,
        pod: parse(pod_pairs)?,
    })
}

/// One set of limits from annotation pairs: each value parsed alone first, so an error names
/// its annotation; the same limit given twice (rein/egress and kubernetes.io/egress-bandwidth,
/// or rein/egress and rein/egress-bandwidth) is fine when equal, an error when not.
fn parse(pairs: Vec<(Flag, &str, &str)>) -> Result<Limits, AnnotationError> {
    let mut seen: BTreeMap<Flag, (&str, &str)> = BTreeMap::new();
    let mut unique = Vec::new();
    for (flag, value, key) in pairs {
        if flag != Flag::IoMax
            && let Some((k0, v0)) = seen.get(&flag)
        {
            if v0.trim() != value.trim() {
                return Err(AnnotationError::Conflict {
                    a: (*k0).to_owned(),
                    va: (*v0).to_owned(),
                    b: key.to_owned(),
                    vb: value.to_owned(),
                });
            }
            continue;
        }
        seen.insert(flag, (key, value));
        Limits::from_pairs([(flag, value)]).map_err(|source| AnnotationError::Limit {
            key: key.to_owned(),
            source,
        })?;
        unique.push((flag, value));
    }
    Limits::from_pairs(unique).map_err(|source| AnnotationError::Limit {
        key: "(all rein/ annotations together)".into(),
        source,
    })
}

/// The limits a container outside any pod asks for (all of them are its own).
pub fn limits(annotations: &BTreeMap<String, String>) -> Result<Limits, AnnotationError> {
    Ok(requested(annotations, false)?.container)
}

/// The pod's UID, when the runtime left it (CRI-O's `io.kubernetes.pod.uid`, containerd's
/// `io.kubernetes.cri.sandbox-uid`).
/// Only a value shaped like a pod UID counts (a UUID, or 32 hex digits for a static pod):
/// the UID names the pod's cgroup, and a short one ("s") would match any slice.
pub fn pod_uid(annotations: &BTreeMap<String, String>) -> Option<String> {
    ["io.kubernetes.pod.uid", "io.kubernetes.cri.sandbox-uid"]
        .iter()
        .find_map(|k| annotations.get(*k))
        .filter(|v| is_pod_uid(v))
        .cloned()
}

/// 32 hex digits, with or without the four dashes of a UUID.
fn is_pod_uid(v: &str) -> bool {
    let digits = v.chars().filter(char::is_ascii_hexdigit).count();
    let dashes = v.chars().filter(|c| *c == '-').count();
    digits == 32 && (dashes == 0 || dashes == 4) && digits + dashes == v.len()
}

/// The name of a pod's group: `<namespace>_<pod>` (Kubernetes names have no `_`, so it names
/// no container), shortened with a hash when longer than a name may be.
pub fn pod_group_name(namespace: &str, pod: &str) -> Option<crate::cgroup::ContainerName> {
    let full = format!("{namespace}_{pod}");
    let name = if full.len() <= 128 {
        full
    } else {
        // FNV-1a: stable across builds, enough to tell two long pod names apart.
        let hash = full.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
        format!("{}_{hash:016x}", &full[..full.floor_char_boundary(110)])
    };
    name.parse().ok()
}

/// True for a Kubernetes pod's sandbox ("pause") container, as containerd
/// (`io.kubernetes.cri.container-type`) and CRI-O (`io.kubernetes.cri-o.ContainerType`) mark
/// it. Runtimes that pass pod annotations to the sandbox too would otherwise register it with
/// the pod's limits: it runs no workload, so the hook leaves it alone.
pub fn is_pod_sandbox(annotations: &BTreeMap<String, String>) -> bool {
    [
        "io.kubernetes.cri.container-type",
        "io.kubernetes.cri-o.ContainerType",
    ]
    .iter()
    .any(|k| annotations.get(*k).is_some_and(|v| v == "sandbox"))
}

/// The longest label value taken from an annotation; a longer one is left out.
const MAX_LABEL: usize = 1024;

/// The Kubernetes names for metric labels, when the runtime left them.
pub fn kube_labels(annotations: &BTreeMap<String, String>) -> KubeLabels {
    let get = |keys: &[&str]| {
        keys.iter()
            .find_map(|k| annotations.get(*k))
            // Each is kept as a symlink's target in the registry (at most 4095 bytes);
            // Kubernetes' names and image references are far shorter.
            .filter(|v| !v.is_empty() && v.len() <= MAX_LABEL)
            .cloned()
    };
    KubeLabels {
        pod: get(&["io.kubernetes.pod.name", "io.kubernetes.cri.sandbox-name"]),
        namespace: get(&[
            "io.kubernetes.pod.namespace",
            "io.kubernetes.cri.sandbox-namespace",
        ]),
        container: get(&[
            "io.kubernetes.container.name",
            "io.kubernetes.cri.container-name",
        ]),
        // containerd's CRI plugin, then CRI-O: the image as the pod spec names it.
        image: get(&[
            "io.kubernetes.cri.image-name",
            "io.kubernetes.cri-o.ImageName",
        ]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_uid_shaped_value_is_a_pod_uid() {
        let uid = |v: &str| pod_uid(&map(&[("io.kubernetes.pod.uid", v)]));
        for yes in [
            "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d",
            "6b8f4c0a1e2d3c4b5a6978877665544a",
        ] {
            assert_eq!(uid(yes).as_deref(), Some(yes));
        }
        for no in [
            "",
            "s",
            "system",
            "0a1b2c3d-4e5f",
            "../../0a1b2c3d4e5f4a6b8c7d9e0f1a2b3c4d",
        ] {
            assert_eq!(uid(no), None, "{no:?}");
        }
    }

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn pod_sandboxes_are_recognised_for_both_runtimes() {
        assert!(is_pod_sandbox(&map(&[(
            "io.kubernetes.cri.container-type",
            "sandbox"
        )])));
        assert!(is_pod_sandbox(&map(&[(
            "io.kubernetes.cri-o.ContainerType",
            "sandbox"
        )])));
        assert!(!is_pod_sandbox(&map(&[(
            "io.kubernetes.cri.container-type",
            "container"
        )])));
        assert!(!is_pod_sandbox(&map(&[("rein/cpus", "1")])));
    }

    #[test]
    fn rein_and_kubernetes_keys_become_limits() {
        let l = limits(&map(&[
            ("rein/cpus", "0.5"),
            ("rein/memory", "256M"),
            ("rein/priority", "high"),
            ("rein/io-max", "8:0 rbps=1M; 8:16 wbps=2M"),
            ("kubernetes.io/egress-bandwidth", "10M"),
            ("rein/ingress-bandwidth", "5mbit"),
            ("io.kubernetes.pod.name", "web-0"),
            ("org.opencontainers.image.title", "ignored"),
        ]))
        .unwrap();
        assert_eq!(
            l.to_string(),
            "--cpus 0.5 --memory 256M --io-max '8:0 rbps=1M' --io-max '8:16 wbps=2M' \
             --priority high --egress 10mbit --ingress 5mbit"
        );
    }

    #[test]
    fn typos_conflicts_and_bad_values_are_refused_with_the_key() {
        let e = limits(&map(&[("rein/cpu", "1")])).unwrap_err();
        assert!(
            e.to_string().starts_with("unknown annotation \"rein/cpu\""),
            "{e}"
        );
        let e = limits(&map(&[
            ("rein/egress", "10mbit"),
            ("kubernetes.io/egress-bandwidth", "20M"),
        ]))
        .unwrap_err();
        assert!(matches!(e, AnnotationError::Conflict { .. }), "{e}");
        // The same value twice is fine.
        limits(&map(&[
            ("rein/egress", "10M"),
            ("kubernetes.io/egress-bandwidth", "10M"),
        ]))
        .unwrap();
        let e = limits(&map(&[("rein/memory", "lots")])).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("annotation rein/memory: invalid value \"lots\" for --memory:"),
            "{e}"
        );
        let e = limits(&map(&[("rein/memory", "64M"), ("rein/memory-low", "128M")])).unwrap_err();
        assert!(
            e.to_string()
                .contains("--memory-low 128M is larger than --memory 64M"),
            "{e}"
        );
    }

    #[test]
    fn in_a_pod_the_kubernetes_bandwidth_is_the_pods() {
        let notes = map(&[
            ("kubernetes.io/egress-bandwidth", "20M"),
            ("kubernetes.io/ingress-bandwidth", "5M"),
            ("rein/egress", "10mbit"),
            ("rein/cpus", "1"),
        ]);
        let r = requested(&notes, true).unwrap();
        assert_eq!(r.container.to_string(), "--cpus 1 --egress 10mbit");
        assert_eq!(r.pod.to_string(), "--egress 20mbit --ingress 5mbit");
        // Outside a pod both egress values are the container's, and they differ.
        assert!(matches!(
            requested(&notes, false),
            Err(AnnotationError::Conflict { .. })
        ));
        assert_eq!(
            pod_group_name("shop", "web-0").unwrap().as_str(),
            "shop_web-0"
        );
        let long = pod_group_name("ns", &"p".repeat(253)).unwrap();
        assert!(long.as_str().len() <= 128, "{long}");
    }

    #[test]
    fn kubernetes_names_come_from_cri_o_or_containerd_keys() {
        assert_eq!(
            kube_labels(&map(&[
                ("io.kubernetes.cri.sandbox-name", "web-0"),
                ("io.kubernetes.cri.sandbox-namespace", "shop"),
                ("io.kubernetes.cri.container-name", "nginx"),
                (
                    "io.kubernetes.cri.image-name",
                    "docker.io/library/nginx:1.27"
                ),
            ])),
            KubeLabels {
                pod: Some("web-0".into()),
                namespace: Some("shop".into()),
                container: Some("nginx".into()),
                image: Some("docker.io/library/nginx:1.27".into()),
            }
        );
        assert_eq!(
            kube_labels(&map(&[("io.kubernetes.cri-o.ImageName", "quay.io/x/y:2")])).image,
            Some("quay.io/x/y:2".into())
        );
        assert_eq!(kube_labels(&map(&[])), KubeLabels::default());
    }
}
