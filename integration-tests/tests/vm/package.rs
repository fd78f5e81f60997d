//! The Debian package (`cargo xtask package`; xtask packs the guest's own rein the same way
//! and puts it at /rein/rein.deb): installed into the guest's root with busybox's dpkg, the
//! agent started from the units' own lines, and purged: no file of the package is left, nor
//! /run/rein. rein's kernel state (pins, cgroups) stays after a purge as after any stop, so
//! the test removes it itself.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use integration_tests::{remove_agent_state, require_vm, run, run_ok};

const DEB: &str = "/rein/rein.deb";

/// Every file, symlink and directory below `dirs`.
fn tree(dirs: &[&str]) -> BTreeSet<PathBuf> {
    let mut all = BTreeSet::new();
    let mut todo: Vec<PathBuf> = dirs.iter().map(PathBuf::from).collect();
    while let Some(dir) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(path.clone());
            }
            all.insert(path);
        }
    }
    all
}

/// The value of `key=` in a unit file.
fn unit_value(unit: &str, key: &str) -> String {
    unit.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("the unit has no {key}="))
        .to_owned()
}

/// A command line of a unit split into arguments as systemd splits it: at spaces, except
/// inside single quotes (all the quoting rein's unit uses), with `$$` unescaped to `$`.
fn unit_argv(line: &str) -> Vec<String> {
    let (mut args, mut cur, mut quoted) = (Vec::new(), String::new(), false);
    for c in line.chars() {
        match c {
            '\'' => quoted = !quoted,
            ' ' if !quoted => {
                if !cur.is_empty() {
                    args.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        args.push(cur);
    }
    // systemd's unescaping: `$$` is a literal `$`.
    args.iter().map(|a| a.replace("$$", "$")).collect()
}

#[test]
fn the_debian_package_installs_runs_from_its_unit_and_purges_without_a_trace() {
    require_vm();
    const WATCHED: &[&str] = &["/usr", "/etc", "/lib", "/var/lib/dpkg/info"];
    // busybox's dpkg with an empty database, as on a machine without the package.
    std::fs::create_dir_all("/var/lib/dpkg/info").unwrap();
    if !Path::new("/var/lib/dpkg/status").exists() {
        std::fs::write("/var/lib/dpkg/status", "").unwrap();
    }
    let before = tree(WATCHED);
    run_ok("dpkg", &["-i", DEB]);

    // What the package installs.
    for path in [
        "/usr/bin/rein",
        "/usr/lib/systemd/system/rein.service",
        "/usr/lib/systemd/system/rein.socket",
        "/usr/lib/systemd/system/rein-containers.service",
        "/etc/rein/rein.toml",
        "/usr/share/rein/hooks.d/rein.json",
        "/usr/share/man/man1/rein.1.gz",
        "/usr/share/man/man1/rein-run.1.gz",
        "/usr/share/man/man1/rein-group-create.1.gz",
        "/usr/share/bash-completion/completions/rein",
        "/usr/share/zsh/vendor-completions/_rein",
        "/usr/share/fish/vendor_completions.d/rein.fish",
    ] {
        assert!(
            Path::new(path).is_file(),
            "the package did not install {path}"
        );
    }
    assert_eq!(
        std::fs::read_link("/usr/bin/rein-runtime").unwrap(),
        Path::new("rein")
    );
    let hooks = std::fs::read_to_string("/usr/share/rein/hooks.d/rein.json").unwrap();
    assert!(hooks.contains("\"/usr/bin/rein\""), "{hooks}");
    assert!(
        run_ok("/usr/bin/rein", &["--version"]).starts_with("rein "),
        "the installed binary does not run"
    );
    // The shipped config is valid as installed (every key commented out: the defaults).
    let check = run_ok(
        "/usr/bin/rein",
        &[
            "config",
            "check",
            "--config",
            "/etc/rein/rein.toml",
            "--json",
        ],
    );
    let settings: serde_json::Value = serde_json::from_str(&check).unwrap();
    assert_eq!(settings["socket"], "/run/rein/rein.sock");

    // The agent as systemd starts it: rein.socket's ListenStream= held by
    // systemd-socket-activate (systemd's own tool, which passes it as fd 3 and execs the
    // service), then rein.service's ExecStart=, split as systemd splits it, with
    // NOTIFY_SOCKET for Type=notify. (tests/vm/systemd.rs runs the units under systemd.)
    let socket_unit = std::fs::read_to_string("/usr/lib/systemd/system/rein.socket").unwrap();
    let service = std::fs::read_to_string("/usr/lib/systemd/system/rein.service").unwrap();
    let listen = unit_value(&socket_unit, "ListenStream");
    assert_eq!(unit_value(&service, "Type"), "notify");
    std::fs::create_dir_all(Path::new(&listen).parent().unwrap()).unwrap();
    // rein.service's --root is in rein-containers.service's cgroup, which systemd makes
    // (tests/vm/systemd.rs); without systemd here, the test makes it.
    let holder = Path::new("/sys/fs/cgroup/system.slice/rein-containers.service");
    std::fs::create_dir_all(holder).unwrap();
    let notify_path = "/run/rein-test-notify";
    let _ = std::fs::remove_file(notify_path);
    let systemd = std::os::unix::net::UnixDatagram::bind(notify_path).unwrap();
    systemd
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let log = std::fs::File::create("/tmp/rein-package-agent.log").unwrap();
    let mut agent = Command::new("systemd-socket-activate")
        .args(["-l", &listen])
        // It hands the service only TERM, PATH, USER and HOME of its own environment.
        .args(["-E", &format!("NOTIFY_SOCKET={notify_path}")])
        // Logs as a journal or log collector takes them: one JSON object per line.
        .args(["-E", "REIN_LOG_FORMAT=json"])
        .args(unit_argv(&unit_value(&service, "ExecStart")))
        .stderr(log)
        .spawn()
        .unwrap();
    // systemd-socket-activate starts the service at the first connection, as systemd does
    // for a socket-activated unit: once it listens, a connection starts the agent, and a
    // call waits in the socket's backlog until the agent answers.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::os::unix::net::UnixStream::connect(&listen).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "systemd-socket-activate never listened on {listen}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let first_call = Command::new("/usr/bin/rein")
        .args(["ls", "--json"])
        .output()
        .unwrap();
    let mut buf = [0u8; 64];
    let logged = || std::fs::read_to_string("/tmp/rein-package-agent.log").unwrap();
    let n = systemd.recv(&mut buf).unwrap_or_else(|e| {
        panic!(
            "the agent never said READY=1 on NOTIFY_SOCKET ({e}); it exited: {:?}; its log: {}",
            agent.try_wait(),
            logged()
        )
    });
    assert_eq!(&buf[..n], b"READY=1");
    let logged = logged();
    assert!(
        first_call.status.success() && String::from_utf8_lossy(&first_call.stdout).trim() == "[]",
        "the call that started the agent: {first_call:?}; the agent's log: {logged}"
    );
    // systemd-socket-activate's own lines are text; the agent's are JSON, at info.
    let messages: Vec<String> = logged
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
            v["fields"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert!(
        messages
            .iter()
            .any(|m| m.starts_with("starting with socket=/run/rein/rein.sock")),
        "the agent did not log its settings at info: {logged}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m == "API listening on the socket systemd passed"),
        "the agent did not take rein.socket's socket: {logged}"
    );
    assert!(
        agent.try_wait().unwrap().is_none(),
        "the agent exited: {logged}"
    );
    let ended = run_ok(
        "/usr/bin/rein",
        &[
            "run", "--json", "--name", "pkg", "--memory", "64M", "--", "true",
        ],
    );
    let ended: serde_json::Value = serde_json::from_str(ended.trim()).unwrap();
    assert_eq!(ended["exit_code"], 0, "{ended}");
    assert_eq!(ended["name"], "pkg");
    // SAFETY: kill(2) on our own child (systemd-socket-activate and the shell exec'd the
    // agent, so it has the child's pid).
    unsafe { libc::kill(agent.id() as libc::pid_t, libc::SIGTERM) };
    agent.wait().unwrap();
    let mut buf = [0u8; 64];
    let n = systemd
        .recv(&mut buf)
        .expect("no STOPPING=1 on NOTIFY_SOCKET");
    assert_eq!(&buf[..n], b"STOPPING=1");
    // The socket is systemd's: the agent leaves it for the next start.
    assert!(
        Path::new(&listen).exists(),
        "the agent removed rein.socket's socket"
    );
    let _ = std::fs::remove_file(notify_path);
    remove_agent_state(&holder.join("containers"), Path::new("/sys/fs/bpf/rein"));
    let _ = std::fs::remove_dir(holder);
    let _ = std::fs::remove_dir(holder.parent().unwrap());

    // Purged: not one file of it is left, the conffile included.
    let out = run("dpkg", &["-P", "rein"]);
    assert!(out.status.success(), "dpkg -P rein: {out:?}");
    let after = tree(WATCHED);
    let left: Vec<_> = after.difference(&before).collect();
    assert!(left.is_empty(), "left behind after dpkg -P: {left:?}");
    // The socket rein.socket held: its directory goes with the purge (postrm).
    assert!(!Path::new("/run/rein").exists(), "dpkg -P left /run/rein");
}
