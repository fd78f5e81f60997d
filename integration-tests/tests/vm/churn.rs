//! Churn and load: 1000 containers created and removed in parallel batches leave the node
//! as they found it (cgroups, map entries, pins, qdiscs), and 100 concurrent API clients for
//! 30 s get no errors.

use std::{path::Path, process::Command};

use integration_tests::{AgentGuard, HELPER, pinned_keys, shaper_keys};

/// What a container could leak: cgroup directories under the root, entries of the
/// per-cgroup maps, pinned files, and qdiscs.
#[derive(Debug, PartialEq, Eq)]
struct Footprint {
    cgroups: usize,
    shaper_entries: usize,
    managed_entries: usize,
    traffic_entries: usize,
    pins: usize,
    qdiscs: usize,
}

fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        1 + count_files(&e.path())
                    } else {
                        1
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

fn footprint(agent: &AgentGuard) -> Footprint {
    let qdiscs = Command::new("/usr/local/sbin/tc")
        .args(["qdisc", "show"])
        .output()
        .unwrap();
    Footprint {
        cgroups: std::fs::read_dir(&agent.root)
            .unwrap()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .count(),
        shaper_entries: shaper_keys(&agent.bpf_dir()).len(),
        managed_entries: pinned_keys::<u8>(&agent.bpf_dir().join("REIN_MANAGED")).len(),
        traffic_entries: integration_tests::traffic_keys(&agent.bpf_dir()).len(),
        pins: count_files(&agent.bpf_dir()),
        qdiscs: String::from_utf8_lossy(&qdiscs.stdout).lines().count(),
    }
}

/// Runs a helper subcommand and returns its `BENCH` JSON.
fn helper(args: &[&str]) -> serde_json::Value {
    let out = Command::new(HELPER).args(args).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .find_map(|l| serde_json::from_str(l.strip_prefix("BENCH ")?).ok())
        .unwrap_or_else(|| panic!("{args:?} printed no BENCH line: {text}"))
}

#[test]
fn churn_of_1000_containers_leaks_nothing_and_100_clients_get_no_errors() {
    let agent = AgentGuard::start_with("rein-churn", &["--egress-dev", "lo"]);
    let socket = agent.socket.display().to_string();
    let before = footprint(&agent);
    let churn = helper(&["churn", &socket, "1000", "8"]);
    println!("churn: {churn}");
    assert_eq!(churn["failed_calls"], 0, "{churn}");
    let after = footprint(&agent);
    assert_eq!(
        before, after,
        "1000 containers created and removed left something behind"
    );

    agent.rein_ok(&[
        "run", "--keep", "--name", "steady", "--cpus", "0.5", "--", "true",
    ]);
    let load = helper(&["api-load", &socket, "100", "30"]);
    println!("api load: {load}");
    assert_eq!(load["errors"], 0, "{load}");
    assert!(load["calls"].as_u64().unwrap() > 100, "{load}");
    agent.rein_ok(&["rm", "steady"]);
}
