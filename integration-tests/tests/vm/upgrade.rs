//! An agent started over what an older rein left in bpffs takes over: the links attached to
//! the cgroups run this agent's programs, and a pinned map whose layout changed is made anew.

use integration_tests::{AgentGuard, HELPER, HOST_DEV};

/// `rein-test-helper ARGS`, which must succeed; its stdout, trimmed.
fn helper(args: &[&str]) -> String {
    let out = std::process::Command::new(HELPER)
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "rein-test-helper {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn an_agent_over_an_older_agents_pins_runs_its_own_programs_and_maps() {
    let mut agent = AgentGuard::start_with("rein-upgrade", &["--egress-dev", HOST_DEV]);
    agent.rein_ok(&[
        "run", "--keep", "--name", "box", "--egress", "10mbit", "--", "true",
    ]);
    agent.stop(libc::SIGTERM);
    let bpf = agent.bpf_dir();
    let egress = bpf.join("links/egress");
    let egress = egress.to_str().unwrap();
    assert_eq!(helper(&["link-prog", egress]), "rein_count_egre");
    // What an older rein would have left: its egress program (the flat one, which knows
    // nothing of chains) on the root's link, and a map this version lays out differently.
    helper(&["older-link", egress]);
    assert_eq!(helper(&["link-prog", egress]), "rein_bench_flat");
    let health = bpf.join("REIN_HEALTH");
    let health = health.to_str().unwrap();
    std::fs::remove_file(health).unwrap();
    helper(&["pin-array", health, "1"]);
    assert_eq!(helper(&["map-entries", health]), "1");

    agent.restart();
    assert_eq!(
        helper(&["link-prog", egress]),
        "rein_count_egre",
        "the older program still runs on the managed root"
    );
    assert_eq!(
        helper(&["map-entries", health]),
        controller_common::HEALTH_MAP_ENTRIES.to_string(),
        "the map of the older layout was not made anew"
    );
    let stats = agent.stats("box");
    assert_eq!(stats["limits"]["egress"], "10mbit", "{stats}");
    agent.rein_ok(&["rm", "box"]);
}

/// An agent whose root moved under the same bpf_dir (a changed `root`; the layout before
/// rein-containers.service) does not take over the links pinned there for the old root: it
/// attaches its programs to its own root, so its containers are counted (and shaped).
#[test]
fn an_agent_whose_root_moved_attaches_to_the_new_root() {
    use std::os::unix::fs::MetadataExt as _;
    let mut agent = AgentGuard::start("rein-moved");
    agent.stop(libc::SIGTERM);
    let bpf = agent.bpf_dir();
    let linked = |file: &str| helper(&["link-cgroup", bpf.join(file).to_str().unwrap()]);
    let id = |dir: &std::path::Path| std::fs::metadata(dir).unwrap().ino().to_string();
    let old_root = agent.root.clone();
    // The guard cleans up the root it runs on; the old one goes with this.
    struct Removed(std::path::PathBuf);
    impl Drop for Removed {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir(&self.0);
        }
    }
    let _old = Removed(old_root.clone());
    assert_eq!(linked("links/egress"), id(&old_root));

    agent.root = old_root.with_file_name("rein-moved-b.slice");
    agent.restart();
    for file in ["links/egress", "links/ingress", "links/rein_sock_ops"] {
        assert_eq!(linked(file), id(&agent.root), "{file}");
    }
    // And the datapath sees the new root's containers: a few packets over loopback.
    agent.rein_ok(&[
        "run",
        "--keep",
        "--name",
        "probe",
        "--",
        "busybox",
        "ping",
        "-c",
        "2",
        "-W",
        "1",
        "127.0.0.1",
    ]);
    let tx = agent.stats("probe")["usage"]["net_tx_bytes"].as_f64();
    assert!(tx.is_some_and(|b| b > 0.0), "no bytes counted: {tx:?}");
    agent.rein_ok(&["rm", "probe"]);
}
