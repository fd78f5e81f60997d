//! A real systemd (the build machine's own, Debian 12's 252) as PID 1 of a container in the
//! test VM, the way systemd-nspawn runs one: new PID, mount and cgroup namespaces whose
//! cgroup root is a fresh cgroup of the guest's, cgroup2 mounted again inside, a private
//! `/run`, and `container=` set so systemd knows. Units come from one directory
//! (`SYSTEMD_UNIT_PATH`) with empty stand-ins for the boot targets; commands run inside
//! with `nsenter` (`systemctl` talks to PID 1 over `/run/systemd/private`).

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use crate::*;

/// Targets a unit's default dependencies name, empty here: nothing else boots.
const TARGETS: [&str; 11] = [
    "sysinit.target",
    "basic.target",
    "sockets.target",
    "paths.target",
    "timers.target",
    "slices.target",
    "shutdown.target",
    "local-fs.target",
    "network.target",
    "network-online.target",
    "multi-user.target",
];

pub struct Systemd {
    child: Child,
    /// Its PID 1, as the guest sees it.
    pub pid1: u32,
    /// The guest's cgroup that is the container's cgroup root.
    pub cgroup: PathBuf,
    /// The unit directory (`SYSTEMD_UNIT_PATH`).
    pub units: PathBuf,
}

impl Systemd {
    /// Boots systemd in a container named `name` with `units` ((file name, text)) next to
    /// the stand-in targets; returns once `systemctl` can reach it.
    pub fn boot(name: &str, units: &[(&str, &str)]) -> Self {
        require_vm();
        let units_dir = PathBuf::from(format!("/tmp/{name}-units"));
        let _ = std::fs::remove_dir_all(&units_dir);
        std::fs::create_dir_all(&units_dir).unwrap();
        for t in TARGETS {
            std::fs::write(units_dir.join(t), format!("[Unit]\nDescription={t}\n")).unwrap();
        }
        for (file, text) in units {
            let path = units_dir.join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        // PrivateTmp= makes its directories here.
        std::fs::create_dir_all("/var/tmp").unwrap();
        let cgroup = Path::new(CGROUP_ROOT).join(format!("{name}.container"));
        std::fs::create_dir_all(&cgroup).unwrap();
        let log = std::fs::File::create(format!("/tmp/{name}.log")).unwrap();
        // The shell moves itself into the container's cgroup first, so the new cgroup
        // namespace is rooted there; inside, cgroup2 is mounted again to show that root.
        let child = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "echo $$ > {cg}/cgroup.procs && exec /usr/local/bin/unshare --pid --fork \
                 --mount --cgroup --mount-proc sh -c 'umount -l /sys/fs/cgroup && \
                 mount -t cgroup2 none /sys/fs/cgroup && mount -t tmpfs tmpfs /run && \
                 exec env container=rein-test SYSTEMD_UNIT_PATH={units} \
                 /usr/local/lib/systemd/systemd --unit=multi-user.target \
                 --log-target=console --log-level=info'",
                cg = cgroup.display(),
                units = units_dir.display(),
            ))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let pid1 = loop {
            let pid = std::fs::read_to_string(cgroup.join("init.scope/cgroup.procs"))
                .ok()
                .and_then(|p| p.lines().next()?.parse::<u32>().ok());
            if let Some(pid) = pid
                && Path::new(&format!("/proc/{pid}/root/run/systemd/private")).exists()
            {
                break pid;
            }
            if Instant::now() > deadline {
                // No guard exists yet: end what was started before failing.
                let mut child = child;
                let _ = child.kill();
                let _ = child.wait();
                remove_tree(&cgroup);
                panic!(
                    "systemd did not come up: {}",
                    std::fs::read_to_string(format!("/tmp/{name}.log")).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        // The namespaces are made: unshare's own process, outside the container's PID
        // namespace, leaves its cgroup, which must hold none of its own for systemd to
        // enable controllers below it (cgroup v2's no-internal-processes rule), as nspawn
        // keeps itself outside its container's cgroup.
        std::fs::write(
            Path::new(CGROUP_ROOT).join("cgroup.procs"),
            child.id().to_string(),
        )
        .unwrap();
        Self {
            child,
            pid1,
            cgroup,
            units: units_dir,
        }
    }

    /// `PROGRAM ARGS` inside the container (its mount, PID and cgroup namespaces).
    pub fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut c = Command::new("/usr/local/bin/nsenter");
        c.args(["-t", &self.pid1.to_string(), "-m", "-p", "-C", "--"])
            .arg(program)
            .args(args);
        c
    }

    /// Runs `PROGRAM ARGS` inside and returns its output.
    pub fn run(&self, program: &str, args: &[&str]) -> Output {
        self.command(program, args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// `systemctl ARGS` inside; panics with its output unless it succeeds.
    pub fn systemctl(&self, args: &[&str]) -> String {
        let mut all = vec!["--no-ask-password"];
        all.extend_from_slice(args);
        succeeded(
            &format!("systemctl {args:?}"),
            &self.run("/usr/local/bin/systemctl", &all),
        )
    }

    /// A unit's property as `systemctl show -P` prints it.
    pub fn property(&self, unit: &str, property: &str) -> String {
        self.systemctl(&["show", "-P", property, unit])
            .trim()
            .to_owned()
    }

    /// The log systemd wrote so far (its console).
    pub fn log(&self, name: &str) -> String {
        std::fs::read_to_string(format!("/tmp/{name}.log")).unwrap_or_default()
    }
}

impl Drop for Systemd {
    fn drop(&mut self) {
        // Everything in the container's PID namespace dies with its PID 1.
        // SAFETY: kill(2) on a pid this test started (the container's init).
        unsafe { libc::kill(i32::try_from(self.pid1).unwrap_or(0), libc::SIGKILL) };
        let _ = self.child.wait();
        remove_tree(&self.cgroup);
        let _ = std::fs::remove_dir_all(&self.units);
    }
}

/// Removes a cgroup and everything below it, deepest first.
fn remove_tree(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path());
            }
        }
    }
    crate::cgroup::remove_cgroup(dir);
}
