//! kubernetes-mixin's cAdvisor queries against rein's series in a real Prometheus. A platform
//! team that runs the mixin (kube-prometheus) points its `cadvisorSelector` at `job="rein"`;
//! the recording rules, the CPU throttling alert and the dashboards' pod queries must then
//! find a pod's container that a runtime's hook registered, under the mixin's own label
//! filters (`image!=""`, `container!=""`) and `without`/`on` label lists. The mixin's joins
//! with kube-state-metrics (`kube_pod_info`) need a cluster and are not checked here.

use std::time::Duration;

use integration_tests::{AgentGuard, OciBundle, Prometheus};

/// The labels of the pod's container.
const CONTAINER: &[(&str, &str)] = &[
    ("namespace", "shop"),
    ("pod", "web-0"),
    ("container", "server"),
];
/// The labels of a query summed by pod.
const POD: &[(&str, &str)] = &[("pod", "web-0")];

/// The mixin's expressions with `job="rein"` and windows shortened from minutes to seconds
/// (the test scrapes every second for a few seconds); each must return a series with the
/// given labels whose value satisfies the check.
type Query = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
    fn(f64) -> bool,
);

const QUERIES: [Query; 7] = [
    (
        "k8s.rules: node_namespace_pod_container:container_cpu_usage_seconds_total:sum_irate",
        r#"sum by (cluster, namespace, pod, container) (irate(container_cpu_usage_seconds_total{job="rein", image!=""}[5s]))"#,
        CONTAINER,
        |v| v > 0.0,
    ),
    (
        "k8s.rules: container_memory_working_set_bytes",
        r#"container_memory_working_set_bytes{job="rein", image!=""}"#,
        CONTAINER,
        |v| v > 0.0,
    ),
    (
        "k8s.rules: container_memory_rss",
        r#"container_memory_rss{job="rein", image!=""}"#,
        CONTAINER,
        |v| v > 0.0,
    ),
    (
        "k8s.rules: container_memory_cache",
        r#"container_memory_cache{job="rein", image!=""}"#,
        CONTAINER,
        |v| v >= 0.0,
    ),
    (
        "alert CPUThrottlingHigh",
        r#"sum(increase(container_cpu_cfs_throttled_periods_total{container!="", job="rein"}[10s])) without (id, metrics_path, name, image, endpoint, job, node) / on (cluster, namespace, pod, container, instance) group_left sum(increase(container_cpu_cfs_periods_total{job="rein"}[10s])) without (id, metrics_path, name, image, endpoint, job, node) > (25 / 100)"#,
        CONTAINER,
        |v| v > 0.25,
    ),
    (
        "dashboard k8s-resources-namespace: memory by pod",
        r#"sum(container_memory_working_set_bytes{job="rein", namespace="shop", container!="", image!=""}) by (pod)"#,
        POD,
        |v| v > 0.0,
    ),
    (
        "dashboard k8s-resources-pod: network transmit",
        r#"sum(irate(container_network_transmit_bytes_total{job="rein", namespace="shop", pod="web-0"}[5s])) by (pod)"#,
        POD,
        |v| v >= 0.0,
    ),
];

#[test]
fn kubernetes_mixin_queries_find_a_pods_container_under_job_rein() {
    let addr = "127.0.0.1:9813";
    let agent = AgentGuard::start_with("rein-mixin", &["--metrics-addr", addr]);
    let uid = "3f0b6a52-6d1e-4c3a-9b7e-2f1d0c9a8b73";
    // A CPU-bound container for 15 s under a fifth of a CPU: throttled in most periods.
    let b = OciBundle::new(
        "runc",
        "mixin-web",
        &[
            "sh",
            "-c",
            "sleep 15 & while kill -0 $! 2>/dev/null; do :; done",
        ],
    );
    b.annotate(&[
        ("rein/name", "mixin.web"),
        ("rein/cpus", "0.2"),
        ("io.kubernetes.pod.name", "web-0"),
        ("io.kubernetes.pod.namespace", "shop"),
        ("io.kubernetes.pod.uid", uid),
        ("io.kubernetes.container.name", "server"),
        (
            "io.kubernetes.cri.image-name",
            "docker.io/library/busybox:1.36",
        ),
    ]);
    b.edit(|c| {
        c["linux"]["cgroupsPath"] = format!("/rein-oci/pod{uid}/mixin-web").into();
    });
    b.add_rein_hooks(&agent.socket, &[]);
    let prom = Prometheus::start(addr);
    let child = b.spawn_run();
    // Enough scrapes of the running container for the 10 s windows.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while prom
        .query(r#"count_over_time(container_cpu_usage_seconds_total{job="rein", name="mixin.web"}[15s])"#)
        .first()
        .is_none_or(|(_, n)| *n < 10.0)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "Prometheus did not scrape the container ten times"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let mut failures = Vec::new();
    for (what, promql, wanted, check) in QUERIES {
        let found = prom.query(promql);
        let ours = found
            .iter()
            .find(|(labels, _)| wanted.iter().all(|(k, v)| labels[*k] == *v));
        match ours {
            Some((_, v)) if check(*v) => println!("mixin: {what}: {v}"),
            Some((_, v)) => failures.push(format!("{what}: value {v} fails its check")),
            None => failures.push(format!(
                "{what}: no series of the pod's container in {found:?}"
            )),
        }
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the container failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let _ = std::fs::remove_dir(b.cgroup().parent().unwrap());
}
