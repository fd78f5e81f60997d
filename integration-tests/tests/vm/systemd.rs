//! rein's own units (`deploy/rein.service`, `deploy/rein.socket`) under a real systemd, PID 1
//! of a container in the guest (`integration_tests::Systemd`): socket activation, the
//! delegated subtree, the hardening the agent must tolerate, `systemctl reload`, and calls
//! that arrive while the agent is stopped or restarting.

use std::time::{Duration, Instant};

use integration_tests::{Systemd, http_get};

const SERVICE: &str = include_str!("../../../deploy/rein.service");
const SOCKET: &str = include_str!("../../../deploy/rein.socket");
const CONTAINERS: &str = include_str!("../../../deploy/rein-containers.service");
const REIN: &str = "/usr/local/bin/rein";
/// The config file the unit's agent reads (the default one: the unit passes no --config).
const CONFIG: &str = "/etc/rein/rein.toml";

/// Waits up to 20 s for `ok`.
fn wait_for(what: &str, ok: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ok() {
        assert!(Instant::now() < deadline, "{what}: not within 20 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Writes the config the unit's agent reads: its own pins and metrics address.
fn write_config(metrics: &str) {
    std::fs::create_dir_all("/etc/rein").unwrap();
    std::fs::write(
        CONFIG,
        format!("bpf_dir = \"/sys/fs/bpf/rein-systemd\"\nmetrics_addr = \"{metrics}\"\n"),
    )
    .unwrap();
}

/// The default config file is the unit's: what was there before is put back on drop (its
/// directory goes if the test made it), and the agent's pins (its config's bpf_dir) go.
struct KeptConfig {
    text: Option<Vec<u8>>,
    made_dir: bool,
}

impl Drop for KeptConfig {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all("/sys/fs/bpf/rein-systemd");
        match &self.text {
            Some(text) => {
                let _ = std::fs::write(CONFIG, text);
            }
            None => {
                let _ = std::fs::remove_file(CONFIG);
            }
        }
        if self.made_dir {
            let _ = std::fs::remove_dir("/etc/rein");
        }
    }
}

#[test]
fn reins_units_run_under_systemd_delegated_hardened_reloadable_and_calls_survive_restarts() {
    let _config = KeptConfig {
        text: std::fs::read(CONFIG).ok(),
        made_dir: !std::path::Path::new("/etc/rein").exists(),
    };
    write_config("127.0.0.1:9821");
    let sd = Systemd::boot(
        "rein-sd",
        &[
            ("rein.service", SERVICE),
            ("rein.socket", SOCKET),
            ("rein-containers.service", CONTAINERS),
            // No journald in the guest: the agent's log goes to the console.
            (
                "rein.service.d/log.conf",
                "[Service]\nStandardOutput=file:/dev/console\nStandardError=file:/dev/console\n",
            ),
        ],
    );
    let rein = |args: &[&str]| {
        let out = sd.run(REIN, args);
        assert!(
            out.status.success(),
            "rein {args:?}: {}\nsystemd's log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            sd.log("rein-sd")
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    sd.systemctl(&["start", "rein.socket"]);
    assert_eq!(sd.property("rein.service", "ActiveState"), "inactive");

    // The first call on the socket starts the agent, which answers it, at its first try.
    assert_eq!(rein(&["ls", "--json"]).trim(), "[]");
    assert_eq!(sd.property("rein.service", "ActiveState"), "active");
    assert_eq!(
        sd.property("rein.service", "NRestarts"),
        "0",
        "the agent failed before it ran:\n{}",
        sd.log("rein-sd")
    );

    // The agent runs in rein.service's cgroup, hardened as the unit says; the containers'
    // root is in rein-containers.service's delegated cgroup, which its process keeps.
    let agent: u32 =
        std::fs::read_to_string(sd.cgroup.join("system.slice/rein.service/cgroup.procs"))
            .unwrap()
            .trim()
            .parse()
            .expect("one agent process in rein.service");
    let holder = sd.cgroup.join("system.slice/rein-containers.service");
    let root = holder.join("containers");
    assert_eq!(sd.property("rein-containers.service", "Delegate"), "yes");
    assert_eq!(
        sd.property("rein-containers.service", "ControlGroup"),
        "/system.slice/rein-containers.service",
        "systemd does not hold the containers' cgroup"
    );
    assert!(
        !std::fs::read_to_string(holder.join("hold/cgroup.procs"))
            .unwrap()
            .trim()
            .is_empty(),
        "rein-containers.service's process is not in its hold leaf"
    );
    assert_eq!(
        std::fs::read_to_string(holder.join("cgroup.procs"))
            .unwrap()
            .trim(),
        "",
        "a process in the delegated cgroup itself: no controllers below it"
    );
    let status = std::fs::read_to_string(format!("/proc/{agent}/status")).unwrap();
    assert!(status.contains("NoNewPrivs:\t1"), "{status}");
    let mounts = std::fs::read_to_string(format!("/proc/{agent}/mountinfo")).unwrap();
    let usr_ro = mounts
        .lines()
        .rfind(|l| l.split(' ').nth(4) == Some("/usr"))
        .is_some_and(|l| {
            l.split(' ')
                .nth(5)
                .is_some_and(|o| o.split(',').any(|x| x == "ro"))
        });
    assert!(
        usr_ro,
        "ProtectSystem=full: /usr is not read-only for the agent:\n{mounts}"
    );

    // A container below the delegated root, limited.
    let mut web = sd
        .command(
            REIN,
            &[
                "run", "--keep", "--name", "web", "--cpus", "0.5", "--", "sleep", "600",
            ],
        )
        .spawn()
        .unwrap();
    let web_dir = root.join("web");
    wait_for("web's process in its cgroup", || {
        std::fs::read_to_string(web_dir.join("cgroup.procs")).is_ok_and(|p| !p.trim().is_empty())
    });
    assert_eq!(
        std::fs::read_to_string(web_dir.join("cpu.max"))
            .unwrap()
            .trim(),
        "50000 100000"
    );

    // systemd leaves the delegated subtree alone when it reloads its units.
    let controllers = std::fs::read_to_string(holder.join("cgroup.subtree_control")).unwrap();
    sd.systemctl(&["daemon-reload"]);
    assert_eq!(
        std::fs::read_to_string(holder.join("cgroup.subtree_control")).unwrap(),
        controllers
    );
    assert_eq!(
        std::fs::read_to_string(web_dir.join("cpu.max"))
            .unwrap()
            .trim(),
        "50000 100000"
    );

    // systemctl reload: the unit's ExecReload= sends SIGHUP, the new address is taken.
    write_config("127.0.0.1:9822");
    sd.systemctl(&["reload", "rein.service"]);
    wait_for("the metrics on the reloaded address", || {
        std::net::TcpStream::connect("127.0.0.1:9822").is_ok()
    });
    assert_eq!(http_get("127.0.0.1:9822", "/healthz").trim(), "ok");
    assert!(std::net::TcpStream::connect("127.0.0.1:9821").is_err());

    // Stopped: the container and its limit stay (KillMode=process, limits in the kernel),
    // the socket stays with systemd, and the next call starts the agent again.
    sd.systemctl(&["stop", "rein.service"]);
    assert_eq!(sd.property("rein.service", "ActiveState"), "inactive");
    assert!(
        !std::fs::read_to_string(web_dir.join("cgroup.procs"))
            .unwrap()
            .trim()
            .is_empty(),
        "stopping the agent killed the container"
    );
    assert_eq!(
        std::fs::read_to_string(web_dir.join("cpu.max"))
            .unwrap()
            .trim(),
        "50000 100000"
    );
    assert!(rein(&["ls"]).contains("web"));
    assert_eq!(sd.property("rein.service", "ActiveState"), "active");

    // Calls made while the agent restarts queue on the socket and are all answered.
    sd.systemctl(&["restart", "--no-block", "rein.service"]);
    let calls: Vec<_> = (0..5)
        .map(|_| {
            sd.command(REIN, &["ls", "--json"])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in calls {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains("web"),
            "a call during the restart failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // A crashed agent is restarted by systemd (Restart=on-failure) while the container
    // lives: nothing of the containers' is in the agent's cgroup to refuse the new process.
    let agent_pid = || -> u32 {
        std::fs::read_to_string(sd.cgroup.join("system.slice/rein.service/cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0)
    };
    let crashed = agent_pid();
    assert_ne!(crashed, 0);
    // SAFETY: kill(2) on the agent this test's systemd started.
    unsafe { libc::kill(i32::try_from(crashed).unwrap(), libc::SIGKILL) };
    wait_for("systemd restarting the crashed agent", || {
        let now = agent_pid();
        now != 0 && now != crashed && sd.property("rein.service", "ActiveState") == "active"
    });
    assert!(rein(&["ls"]).contains("web"));
    // The containers' cgroup is not stopped by hand (that would kill them).
    let stop = sd.run(
        "/usr/local/bin/systemctl",
        &["--no-ask-password", "stop", "rein-containers.service"],
    );
    assert!(
        !stop.status.success(),
        "rein-containers.service stopped by hand"
    );
    assert!(web_dir.exists());

    rein(&["rm", "--force", "web"]);
    let _ = web.wait();
    sd.systemctl(&["stop", "rein.service", "rein.socket"]);
    drop(sd);
}
