//! Faults and hostile clients: the agent killed in the middle of creations, bpffs missing at
//! start, and malformed, oversized and slow API clients next to well-behaved ones.

use std::{
    io::{Read as _, Write as _},
    os::unix::net::UnixStream,
    time::Duration,
};

use integration_tests::{AgentGuard, shaper_keys};

/// A small deterministic generator (xorshift64*), so a failure replays the same kills.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

fn read(path: &std::path::Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .trim()
        .to_owned()
}

/// 100 containers created one after another while the agent is SIGKILLed at pseudo-random
/// moments (about one creation in three) and restarted: afterwards every container the
/// agent lists has exactly the limits its creation asked for, every acknowledged creation
/// is there, and no half-created cgroup is left.
#[test]
fn sigkill_during_100_creations_loses_no_acknowledged_limit() {
    let mut agent = AgentGuard::start_with("rein-fault", &["--egress-dev", "lo"]);
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut acked = Vec::new();
    let mut kills = 0;
    let limits = |i: usize| (format!("{}m", 100 + 10 * i), (32 + i) << 20, 1 + i % 50);
    for i in 0..100 {
        let name = format!("f{i}");
        let (cpus, memory, mbit) = limits(i);
        let child = agent.rein_spawn_output(&[
            "run",
            "--keep",
            "--name",
            &name,
            "--cpus",
            &cpus,
            "--memory",
            &memory.to_string(),
            "--egress",
            &format!("{mbit}mbit"),
            "--",
            "true",
        ]);
        if rng.next().is_multiple_of(3) {
            std::thread::sleep(Duration::from_micros(rng.next() % 40_000));
            agent.stop(libc::SIGKILL);
            kills += 1;
            agent.restart();
        }
        let out = child.wait_with_output().unwrap();
        if out.status.success() {
            acked.push(i);
        }
    }
    // One more restart: it must adopt exactly what is there.
    agent.stop(libc::SIGKILL);
    agent.restart();
    let listed: Vec<serde_json::Value> =
        serde_json::from_str(&agent.rein_ok(&["ls", "--json"])).unwrap();
    println!(
        "{kills} kills, {} creations acknowledged, {} containers listed",
        acked.len(),
        listed.len()
    );
    assert!(kills >= 20, "the fault schedule should kill often: {kills}");
    for c in &listed {
        let name = c["name"].as_str().unwrap();
        let i: usize = name.trim_start_matches('f').parse().unwrap();
        let (_, memory, mbit) = limits(i);
        let dir = agent.root.join(name);
        assert_eq!(
            read(&dir.join("cpu.max")),
            format!("{} 100000", (100 + 10 * i) * 100),
            "{name}"
        );
        assert_eq!(read(&dir.join("memory.max")), memory.to_string(), "{name}");
        assert_eq!(c["limits"]["egress"], format!("{mbit}mbit"), "{name}: {c}");
    }
    for i in &acked {
        assert!(
            listed.iter().any(|c| c["name"] == format!("f{i}")),
            "acknowledged f{i} is missing"
        );
    }
    // Nothing half-created stays behind: every directory under the root is listed.
    let dirs = std::fs::read_dir(&agent.root)
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .count();
    assert_eq!(
        dirs,
        listed.len(),
        "cgroups under the root vs listed containers"
    );
}

/// The agent mounts bpffs itself when /sys/fs/bpf is not one.
#[test]
fn bpffs_missing_at_start_is_mounted() {
    let bpffs_mounted = || {
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .any(|l| l.contains(" /sys/fs/bpf ") && l.contains(" - bpf "))
    };
    let rc = std::process::Command::new("umount")
        .arg("/sys/fs/bpf")
        .status()
        .unwrap();
    assert!(rc.success() && !bpffs_mounted());
    let agent = AgentGuard::start_with("rein-nobpffs", &["--egress-dev", "lo"]);
    assert!(bpffs_mounted(), "the agent mounts bpffs");
    agent.rein_ok(&[
        "run", "--keep", "--name", "x", "--egress", "5mbit", "--", "true",
    ]);
    assert!(agent.bpf_dir().join("REIN_SHAPER").exists());
    agent.rein_ok(&["rm", "x"]);
}

/// Sends raw bytes on a fresh connection and returns what the agent answers.
fn raw(socket: &std::path::Path, bytes: &[u8]) -> String {
    let mut s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let _ = s.write_all(bytes);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// Garbage, a body over the limit and clients that stall half way through a request get
/// errors or wait alone: the CLI keeps working next to them, and nothing changes.
#[test]
fn malformed_oversized_and_slow_clients_do_not_block_others() {
    let agent = AgentGuard::start("rein-hostile");
    agent.rein_ok(&[
        "run", "--keep", "--name", "calm", "--memory", "64M", "--", "true",
    ]);
    // Fifty clients that send half a request and then nothing.
    let stalled: Vec<UnixStream> = (0..50)
        .map(|_| {
            let mut s = UnixStream::connect(&agent.socket).unwrap();
            s.write_all(b"POST /v1/containers HTTP/1.1\r\nhost: rein\r\ncontent-le")
                .unwrap();
            s
        })
        .collect();
    let garbage = raw(&agent.socket, b"\x00\xffNOT HTTP AT ALL\r\n\r\n");
    assert!(
        garbage.is_empty() || garbage.starts_with("HTTP/1.1 4"),
        "garbage gets a 4xx or a closed connection: {garbage:?}"
    );
    let big = vec![b'x'; 1 << 20];
    let mut req = format!(
        "POST /v1/containers HTTP/1.1\r\nhost: rein\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n",
        big.len()
    )
    .into_bytes();
    req.extend_from_slice(&big);
    let answer = raw(&agent.socket, &req);
    assert!(
        answer.starts_with("HTTP/1.1 413"),
        "an oversized body: {answer:.200}"
    );
    let bad_json = raw(
        &agent.socket,
        b"POST /v1/containers HTTP/1.1\r\nhost: rein\r\ncontent-type: application/json\r\n\
          content-length: 9\r\n\r\n{\"name\":1",
    );
    assert!(bad_json.starts_with("HTTP/1.1 400"), "{bad_json}");
    assert!(
        bad_json.contains("\"error\""),
        "errors are JSON: {bad_json}"
    );
    // With the stalled clients still connected, the CLI works as always.
    let ls = agent.rein_ok(&["ls"]);
    assert!(ls.contains("calm"), "{ls}");
    agent.rein_ok(&["set", "calm", "--memory", "128M"]);
    assert_eq!(
        agent.cgroup_file("calm", "memory.max").trim(),
        (128u64 << 20).to_string()
    );
    drop(stalled);
    let listed: Vec<serde_json::Value> =
        serde_json::from_str(&agent.rein_ok(&["ls", "--json"])).unwrap();
    assert_eq!(listed.len(), 1, "nothing but calm was created: {listed:?}");
    agent.rein_ok(&["rm", "calm"]);
}

/// Waits up to 10 s for `cond`.
fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(std::time::Instant::now() < deadline, "not repaired: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What an operator (or a stray script) removes behind the agent's back is put back within
/// seconds: the pinned links (their removal detaches the programs), `fq` on the egress
/// device, and the map entries of a cgroup removed by hand are forgotten.
#[test]
fn what_is_removed_behind_the_agents_back_is_repaired() {
    use std::os::unix::fs::MetadataExt as _;
    let agent = AgentGuard::start_with("rein-repair", &["--egress-dev", "lo"]);
    agent.rein_ok(&[
        "run", "--keep", "--name", "x", "--egress", "10mbit", "--", "true",
    ]);
    let tc_lo = || {
        let out = std::process::Command::new("/usr/local/sbin/tc")
            .args(["qdisc", "show", "dev", "lo"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(tc_lo().contains("qdisc fq "), "{}", tc_lo());
    let status = std::process::Command::new("/usr/local/sbin/tc")
        .args(["qdisc", "del", "dev", "lo", "root"])
        .status()
        .unwrap();
    assert!(status.success() && !tc_lo().contains("qdisc fq "));
    eventually("fq on lo", || tc_lo().contains("qdisc fq "));

    let links = agent.bpf_dir().join("links");
    for pin in ["egress", "ingress", "rein_sock_ops"] {
        std::fs::remove_file(links.join(pin)).unwrap();
    }
    eventually("the pinned links", || {
        ["egress", "ingress", "rein_sock_ops"]
            .iter()
            .all(|p| links.join(p).exists())
    });
    // The re-attached programs count again: a new container's packets reach the map.
    agent.rein_ok(&[
        "run",
        "--keep",
        "--name",
        "y",
        "--",
        "sh",
        "-c",
        "ping -c 2 -W 1 127.0.0.1 >/dev/null",
    ]);
    let stats = agent.stats("y");
    assert!(
        stats["usage"]["net_tx_packets"].as_u64().unwrap_or(0) >= 2,
        "packets of a container after the repair are counted: {stats}"
    );

    let dir = agent.root.join("x");
    let id = std::fs::metadata(&dir).unwrap().ino();
    std::fs::remove_dir(&dir).unwrap();
    eventually("the removed cgroup's map entries", || {
        !shaper_keys(&agent.bpf_dir()).contains(&id)
    });
    agent.rein_ok(&["rm", "y"]);
}

/// The limits of container `s` as the kernel holds them: (cpu quota us, memory bytes, pids,
/// egress text).
fn state_of(agent: &AgentGuard) -> (String, String, String, String) {
    let dir = agent.root.join("s");
    let ls: Vec<serde_json::Value> =
        serde_json::from_str(&agent.rein_ok(&["ls", "--json"])).unwrap();
    let egress = ls
        .iter()
        .find(|c| c["name"] == "s")
        .map(|c| c["limits"]["egress"].as_str().unwrap_or("").to_owned())
        .unwrap();
    (
        read(&dir.join("cpu.max")),
        read(&dir.join("memory.max")),
        read(&dir.join("pids.max")),
        egress,
    )
}

/// The limits the `i`th change sets, in the form `state_of` reads them.
fn change(i: usize) -> (String, String, String, String) {
    (
        format!("{} 100000", (100 + 10 * i) * 100),
        ((64 + i) << 20).to_string(),
        (100 + i).to_string(),
        format!("{}mbit", 1 + i),
    )
}

/// 60 live changes of four limits at once (cgroup files and the shaper map), with the agent
/// SIGKILLed at pseudo-random moments during about half of them: after every restart the
/// container holds exactly one change, the last acknowledged or the one in flight, never a
/// mix (an interrupted change is undone from its journal).
#[test]
fn sigkill_during_live_changes_never_leaves_half_a_change() {
    let mut agent = AgentGuard::start_with("rein-fault-set", &["--egress-dev", "lo"]);
    let (c0, m0, p0, e0) = change(0);
    let cpus0 = format!("{}m", 100);
    agent.rein_ok(&[
        "run", "--keep", "--name", "s", "--cpus", &cpus0, "--memory", &m0, "--pids", &p0,
        "--egress", &e0, "--", "true",
    ]);
    assert_eq!(state_of(&agent), (c0, m0.clone(), p0.clone(), e0.clone()));
    let mut rng = Rng(0xD1B5_4A32_D192_ED03);
    let (mut acked, mut kills, mut undone) = (0, 0, 0);
    for i in 1..=60 {
        let (_, m, p, e) = change(i);
        let cpus = format!("{}m", 100 + 10 * i);
        let child = agent.rein_spawn_output(&[
            "set", "s", "--cpus", &cpus, "--memory", &m, "--pids", &p, "--egress", &e,
        ]);
        let killed = rng.next().is_multiple_of(2);
        if killed {
            std::thread::sleep(Duration::from_micros(rng.next() % 30_000));
            agent.stop(libc::SIGKILL);
            kills += 1;
            agent.restart();
        }
        let ok = child.wait_with_output().unwrap().status.success();
        let now = state_of(&agent);
        assert!(
            now == change(acked) || now == change(i),
            "after change {i} (last acknowledged {acked}): {now:?} is neither {:?} nor {:?}",
            change(acked),
            change(i)
        );
        assert!(
            !ok || now == change(i),
            "change {i} was acknowledged but the container holds {now:?}"
        );
        if now == change(i) {
            acked = i;
        } else {
            undone += 1;
        }
    }
    println!("{kills} kills, {undone} changes undone or never applied, last applied {acked}");
    assert!(kills >= 20, "the fault schedule should kill often: {kills}");
}

/// The agent dies at the two points where a live change is half made (map entries written
/// but no file; files written but the journal not yet cleared): the next agent undoes it
/// from the journal, so the container holds the last acknowledged limits, whole.
#[test]
fn a_change_cut_short_at_either_failpoint_is_undone_whole() {
    let mut agent = AgentGuard::start_with("rein-failpoint", &["--egress-dev", "lo"]);
    let (_, m0, p0, e0) = change(0);
    agent.rein_ok(&[
        "run", "--keep", "--name", "s", "--cpus", "100m", "--memory", &m0, "--pids", &p0,
        "--egress", &e0, "--", "true",
    ]);
    for point in ["set:after-maps", "set:after-files"] {
        agent.failpoint = Some(point.to_owned());
        agent.restart();
        let (_, m, p, e) = change(1);
        let out = agent.rein(&[
            "set", "s", "--cpus", "110m", "--memory", &m, "--pids", &p, "--egress", &e,
        ]);
        assert!(!out.status.success(), "{point}: the agent should have died");
        agent.failpoint = None;
        agent.stop(libc::SIGKILL);
        agent.restart();
        assert_eq!(
            state_of(&agent),
            change(0),
            "{point}: the change is undone whole"
        );
    }
}

/// The agent dies at each step of a creation (intent written, cgroup made, files written,
/// map entries written): the next agent lists nothing of it, leaves no cgroup, map entry or
/// intent behind, and the same name can then be created whole.
#[test]
fn a_creation_cut_short_at_any_step_leaves_nothing() {
    let mut agent = AgentGuard::start_with("rein-create-fp", &["--egress-dev", "lo"]);
    let before = shaper_keys(&agent.bpf_dir());
    for point in [
        "create:after-intent",
        "create:after-mkdir",
        "create:after-files",
        "create:after-maps",
    ] {
        agent.failpoint = Some(point.to_owned());
        agent.restart();
        let args = [
            "run", "--keep", "--name", "c", "--cpus", "300m", "--memory", "48M", "--egress",
            "3mbit", "--", "true",
        ];
        let out = agent.rein(&args);
        assert!(!out.status.success(), "{point}: the agent should have died");
        agent.failpoint = None;
        agent.stop(libc::SIGKILL);
        agent.restart();
        let listed = agent.rein_ok(&["ls", "--json"]);
        assert_eq!(listed.trim(), "[]", "{point}: nothing half-made is listed");
        assert!(
            !agent.root.join("c").exists(),
            "{point}: the cgroup is gone"
        );
        assert_eq!(
            shaper_keys(&agent.bpf_dir()),
            before,
            "{point}: no map entry is left"
        );
        let intents = integration_tests::xattr_names(&agent.root);
        assert!(
            !intents.iter().any(|k| k.contains("creating")),
            "{point}: intent left on the root: {intents:?}"
        );
        agent.rein_ok(&args);
        assert_eq!(
            read(&agent.root.join("c/cpu.max")),
            "30000 100000",
            "{point}"
        );
        assert_eq!(
            read(&agent.root.join("c/memory.max")),
            "50331648",
            "{point}"
        );
        agent.rein_ok(&["rm", "c"]);
    }
}
