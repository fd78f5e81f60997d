//! Tests against a temporary directory that holds fake cgroup files with the kernel's
//! defaults (a real cgroupfs creates them on mkdir; tmpfs does not). Real enforcement is
//! tested in the VM.

use super::*;
use crate::limits::Limits;

const DEFAULTS: &[(&str, &str)] = &[
    ("cpu.max", "max 100000"),
    ("cpu.weight", "100"),
    ("cpu.idle", "0"),
    ("cpuset.cpus", ""),
    ("memory.max", "max"),
    ("memory.high", "max"),
    ("memory.low", "0"),
    ("memory.min", "0"),
    ("memory.swap.max", "max"),
    ("memory.oom.group", "0"),
    ("pids.max", "max"),
    ("io.weight", "default 100"),
    ("io.max", ""),
    ("cgroup.procs", ""),
];

fn fake_container(tree: &Tree, name: &str) -> ContainerName {
    let name: ContainerName = name.parse().unwrap();
    let dir = tree.path(&name);
    std::fs::create_dir(&dir).unwrap();
    for (f, v) in DEFAULTS {
        std::fs::write(dir.join(f), v).unwrap();
    }
    name
}

fn limits(pairs: &[(&str, &str)]) -> Limits {
    Limits::from_named_pairs(pairs.iter().copied()).unwrap()
}

#[test]
fn names_are_single_safe_path_components() {
    for good in ["web", "a", "db-1.replica_2", &"x".repeat(128)] {
        assert!(good.parse::<ContainerName>().is_ok(), "{good}");
    }
    for bad in [
        "",
        "../x",
        "a/b",
        ".",
        "..",
        ".hidden",
        "-x",
        "a b",
        "é",
        &"x".repeat(129),
    ] {
        let err = bad.parse::<ContainerName>().unwrap_err().to_string();
        assert!(err.starts_with("invalid container name"), "{bad}: {err}");
        assert!(err.contains("1 to 128 characters"), "{err}");
    }
}

#[test]
fn plan_lists_files_in_order_with_kernel_values() {
    let l = limits(&[
        ("cpus", "1.5"),
        ("memory", "256M"),
        ("memory-low", "64M"),
        ("pids", "512"),
        ("cpuset", "0-1"),
        ("priority", "idle"),
        ("io-weight", "50"),
        ("io-max", "8:16 wbps=1M"),
    ]);
    let plan = Plan::for_limits(&l).unwrap();
    assert_eq!(
        plan.writes(),
        vec![
            ("cpuset.cpus", "0-1"),
            ("cpu.max", "150000 100000"),
            ("cpu.idle", "1"),
            ("memory.low", "67108864"),
            ("memory.max", "268435456"),
            ("pids.max", "512"),
            ("io.weight", "default 50"),
            ("io.max", "8:16 wbps=1048576"),
        ]
    );
}

#[test]
fn explicit_weight_wins_over_the_priority_class() {
    let plan = Plan::for_limits(&limits(&[("priority", "critical"), ("cpu-weight", "7")])).unwrap();
    assert!(plan.writes().contains(&("cpu.weight", "7")));
    assert!(plan.writes().contains(&("io.weight", "default 1000")));
}

#[test]
fn network_limits_write_no_cgroup_file() {
    let plan = Plan::for_limits(&limits(&[("egress", "10mbit")])).unwrap();
    assert!(plan.writes().is_empty(), "{:?}", plan.writes());
}

#[test]
fn io_max_device_path_must_be_a_block_device() {
    let err = Plan::for_limits(&limits(&[("io-max", "/dev/null wbps=1M")])).unwrap_err();
    assert!(err.to_string().contains("not a block device"), "{err}");
    let err = Plan::for_limits(&limits(&[("io-max", "/dev/nonexistent wbps=1M")])).unwrap_err();
    assert!(err.to_string().contains("cannot stat"), "{err}");
}

#[test]
fn set_then_read_back_gives_the_same_limits() {
    let dir = tempfile::tempdir().unwrap();
    let tree = Tree::unchecked(dir.path());
    let name = fake_container(&tree, "web");
    let want = limits(&[
        ("cpus", "0.5"),
        ("cpu-weight", "300"),
        ("cpuset", "0"),
        ("memory", "256M"),
        ("memory-high", "200M"),
        ("memory-low", "16M"),
        ("memory-min", "8M"),
        ("swap", "0"),
        ("oom-group", "true"),
        ("pids", "64"),
        ("io-weight", "20"),
        ("priority", "low"),
    ]);
    tree.set(&name, &want).unwrap();
    assert_eq!(
        std::fs::read_to_string(tree.path(&name).join("cpu.max")).unwrap(),
        "50000 100000"
    );
    assert_eq!(tree.limits(&name).unwrap(), want);
}

#[test]
fn a_failed_write_rolls_back_the_request_and_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let tree = Tree::unchecked(dir.path());
    let name = fake_container(&tree, "db");
    // pids.max missing, as when the pids controller is not enabled.
    std::fs::remove_file(tree.path(&name).join("pids.max")).unwrap();
    let err = tree
        .set(
            &name,
            &limits(&[("cpus", "2"), ("memory", "1G"), ("pids", "10")]),
        )
        .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("pids.max") && msg.contains("\"10\""), "{msg}");
    assert!(msg.contains("rolled back"), "{msg}");
    let read = |f: &str| std::fs::read_to_string(tree.path(&name).join(f)).unwrap();
    assert_eq!(read("cpu.max"), "max 100000");
    assert_eq!(read("memory.max"), "max");
    assert!(
        !tree.path(&name).join("pids.max").exists(),
        "the writer must never create files"
    );
}

#[test]
fn missing_containers_and_busy_removal_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let tree = Tree::unchecked(dir.path());
    let ghost: ContainerName = "ghost".parse().unwrap();
    assert!(matches!(
        tree.set(&ghost, &Limits::default()),
        Err(CgroupError::NotFound(_))
    ));
    let name = fake_container(&tree, "busy");
    std::fs::write(tree.path(&name).join("cgroup.procs"), "42\n43\n").unwrap();
    let err = tree.remove(&name, false).unwrap_err();
    assert!(
        err.to_string()
            .contains("still runs 2 processes; use --force"),
        "{err}"
    );
    assert!(tree.path(&name).exists());
    assert_eq!(tree.list().unwrap(), vec![name]);
}
