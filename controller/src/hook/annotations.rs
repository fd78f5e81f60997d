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

/// The limits the annotations ask for (validated as a whole, as `rein run` does).
pub fn limits(annotations: &BTreeMap<String, String>) -> Result<Limits, AnnotationError> {
    // (flag, value, the key it came from)
    let mut pairs: Vec<(Flag, &str, &str)> = Vec::new();
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
        } else if key == K8S_EGRESS {
            pairs.push((Flag::Egress, value.as_str(), key.as_str()));
        } else if key == K8S_INGRESS {
            pairs.push((Flag::Ingress, value.as_str(), key.as_str()));
        }
    }
    // The same limit twice (rein/egress and kubernetes.io/egress-bandwidth, or rein/egress
    // and rein/egress-bandwidth): fine when equal, an error when not.
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
        unique.push((flag, value, key));
    }
    let mut l = Limits::default();
    for (flag, value, key) in &unique {
        let one =
            Limits::from_pairs([(*flag, *value)]).map_err(|source| AnnotationError::Limit {
                key: (*key).to_owned(),
                source,
            })?;
        merge(&mut l, one);
    }
    l.validate().map_err(|source| AnnotationError::Limit {
        key: "(all rein/ annotations together)".into(),
        source,
    })?;
    Ok(l)
}

/// Moves what `one` sets into `l` (each flag is set once by construction).
fn merge(l: &mut Limits, one: Limits) {
    let Limits {
        cpus,
        cpu_weight,
        cpuset,
        memory,
        memory_high,
        memory_low,
        memory_min,
        swap,
        oom_group,
        pids,
        io_weight,
        io_max,
        priority,
        egress,
        egress_burst,
        ingress,
    } = one;
    l.cpus = l.cpus.take().or(cpus);
    l.cpu_weight = l.cpu_weight.take().or(cpu_weight);
    l.cpuset = l.cpuset.take().or(cpuset);
    l.memory = l.memory.take().or(memory);
    l.memory_high = l.memory_high.take().or(memory_high);
    l.memory_low = l.memory_low.take().or(memory_low);
    l.memory_min = l.memory_min.take().or(memory_min);
    l.swap = l.swap.take().or(swap);
    l.oom_group = l.oom_group.take().or(oom_group);
    l.pids = l.pids.take().or(pids);
    l.io_weight = l.io_weight.take().or(io_weight);
    l.io_max.extend(io_max);
    l.priority = l.priority.take().or(priority);
    l.egress = l.egress.take().or(egress);
    l.egress_burst = l.egress_burst.take().or(egress_burst);
    l.ingress = l.ingress.take().or(ingress);
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

/// The Kubernetes names for metric labels, when the runtime left them.
pub fn kube_labels(annotations: &BTreeMap<String, String>) -> KubeLabels {
    let get = |keys: &[&str]| {
        keys.iter()
            .find_map(|k| annotations.get(*k))
            .filter(|v| !v.is_empty())
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn kubernetes_names_come_from_cri_o_or_containerd_keys() {
        assert_eq!(
            kube_labels(&map(&[
                ("io.kubernetes.cri.sandbox-name", "web-0"),
                ("io.kubernetes.cri.sandbox-namespace", "shop"),
                ("io.kubernetes.cri.container-name", "nginx"),
            ])),
            KubeLabels {
                pod: Some("web-0".into()),
                namespace: Some("shop".into()),
                container: Some("nginx".into()),
            }
        );
        assert_eq!(kube_labels(&map(&[])), KubeLabels::default());
    }
}
