//! A `rein agent` per test, with its own root, socket and pins, and the CLI against it;
//! reading the agent's pinned maps and a cgroup's extended attributes.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command},
};

use crate::*;

/// A `rein agent` started for one test with its own managed root and socket; on drop it is
/// stopped and every container under its root is killed and removed.
pub struct AgentGuard {
    child: Option<std::process::Child>,
    /// Its managed root; a test may move it between restarts (the pins stay in
    /// [`AgentGuard::bpf_dir`]).
    pub root: PathBuf,
    pub socket: PathBuf,
    bpf_dir: PathBuf,
    extra: Vec<String>,
    /// `REIN_FAILPOINT` for the next start (see the agent's `failpoint`).
    pub failpoint: Option<String>,
}

impl AgentGuard {
    pub fn start(name: &str) -> Self {
        Self::start_with(name, &[])
    }

    /// Like [`AgentGuard::start`] with extra `rein agent` arguments.
    pub fn start_with(name: &str, extra: &[&str]) -> Self {
        require_vm();
        let root = Path::new(CGROUP_ROOT).join(format!("{name}.slice"));
        let socket = PathBuf::from(format!("/run/{name}/rein.sock"));
        let extra = extra.iter().map(|s| (*s).to_owned()).collect();
        // bpffs refuses names with a dot: "rein-x.slice" pins under "rein-x".
        let bpf_dir = Path::new("/sys/fs/bpf").join(name);
        let mut g = Self {
            child: None,
            root,
            socket,
            bpf_dir,
            extra,
            failpoint: None,
        };
        g.restart();
        g
    }

    /// Starts the agent (again) and waits until its socket answers.
    pub fn restart(&mut self) {
        self.stop(libc::SIGTERM);
        let mut cmd = Command::new("rein");
        // The agent logs at info by default; its lines go to the guest's serial console,
        // which costs the emulated guest time per line: warnings only, unless asked.
        if std::env::var_os("REIN_LOG").is_none() {
            cmd.env("REIN_LOG", "warn");
        }
        match &self.failpoint {
            Some(f) => cmd.env("REIN_FAILPOINT", f),
            None => cmd.env_remove("REIN_FAILPOINT"),
        };
        let child = cmd
            .arg("--socket")
            .arg(&self.socket)
            .args(["agent", "--root"])
            .arg(&self.root)
            .arg("--bpf-dir")
            .arg(self.bpf_dir())
            .args(&self.extra)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::os::unix::net::UnixStream::connect(&self.socket).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "the agent did not come up"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Restarts the agent with other extra arguments.
    pub fn restart_with(&mut self, extra: &[&str]) {
        self.extra = extra.iter().map(|s| (*s).to_owned()).collect();
        self.restart();
    }

    /// Stops the agent with `signal` (SIGKILL simulates a crash) and reaps it.
    pub fn stop(&mut self, signal: i32) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on our own unreaped child.
            unsafe { libc::kill(i32::try_from(c.id()).unwrap(), signal) };
            c.wait().unwrap();
        }
    }

    /// Sends `signal` to the running agent, which goes on running (SIGHUP: reload).
    pub fn signal(&self, signal: i32) {
        let c = self.child.as_ref().expect("the agent runs");
        // SAFETY: kill(2) on our own unreaped child.
        unsafe { libc::kill(i32::try_from(c.id()).unwrap(), signal) };
    }

    /// This agent's own bpffs directory (pins of one agent must not meet another's).
    pub fn bpf_dir(&self) -> PathBuf {
        self.bpf_dir.clone()
    }

    /// Runs `rein --socket <ours> ARGS` to completion.
    pub fn rein(&self, args: &[&str]) -> std::process::Output {
        Command::new("rein")
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap()
    }

    /// Like [`AgentGuard::rein`] but panics unless it succeeds; returns stdout.
    pub fn rein_ok(&self, args: &[&str]) -> String {
        let out = self.rein(args);
        assert!(
            out.status.success(),
            "rein {args:?} failed with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `rein stats NAME --json`, parsed.
    pub fn stats(&self, name: &str) -> serde_json::Value {
        serde_json::from_str(&self.rein_ok(&["stats", name, "--json"])).unwrap()
    }

    /// A container's transmitted bits per second over `window`, from rein's own counters
    /// (what left through the shaper).
    pub fn tx_rate(&self, name: &str, window: std::time::Duration) -> f64 {
        let tx = || self.stats(name)["usage"]["net_tx_bytes"].as_f64().unwrap();
        let (b0, t0) = (tx(), std::time::Instant::now());
        std::thread::sleep(window);
        (tx() - b0) * 8.0 / t0.elapsed().as_secs_f64()
    }

    /// Starts `rein --socket <ours> ARGS` without waiting.
    pub fn rein_spawn(&self, args: &[&str]) -> Child {
        Command::new("rein")
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .spawn()
            .unwrap()
    }

    /// Like `rein_spawn`, with stdout captured (read it with `wait_with_output`).
    pub fn rein_spawn_output(&self, args: &[&str]) -> Child {
        Command::new("rein")
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Runs `busybox sh -c script` in a new kept container with these limit flags; returns
    /// the `rein run` child once the script runs.
    pub fn run_sh(&self, name: &str, limits: &[&str], script: &str) -> Child {
        let mut args = vec!["run", "--keep", "--name", name];
        args.extend_from_slice(limits);
        args.extend_from_slice(&["--", "busybox", "sh", "-c", script]);
        let child = self.rein_spawn(&args);
        self.wait_for_process(name);
        child
    }

    /// Waits until the container has a process: `rein run` has created it and started the
    /// command inside (a spawned `rein run` returns before either has happened).
    pub fn wait_for_process(&self, name: &str) {
        let procs = self.root.join(name).join("cgroup.procs");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::fs::read_to_string(&procs).map_or(true, |p| p.trim().is_empty()) {
            assert!(
                std::time::Instant::now() < deadline,
                "{name} never got a process"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    /// Waits until the agent lists the container (a spawned `rein run` returns before it
    /// has asked for it); for members of groups, whose cgroups are not directly under the root.
    pub fn wait_listed(&self, name: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !self.rein(&["stats", name]).status.success() {
            assert!(
                std::time::Instant::now() < deadline,
                "{name} was never listed"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// A file of a container's cgroup.
    pub fn cgroup_file(&self, container: &str, file: &str) -> String {
        let p = self.root.join(container).join(file);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
    }
}

impl Drop for AgentGuard {
    fn drop(&mut self) {
        self.stop(libc::SIGTERM);
        remove_agent_state(&self.root, &self.bpf_dir());
    }
}

/// Removes what a stopped agent left in the kernel: its pins (unlinking them detaches the
/// programs and frees the maps) and its managed cgroups.
pub fn remove_agent_state(root: &Path, bpf_dir: &Path) {
    let _ = std::fs::remove_dir_all(bpf_dir);
    if let Ok(entries) = std::fs::read_dir(root) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup(&e.path());
            }
        }
    }
    remove_cgroup(root);
}

/// Stops a `rein run` child with SIGTERM (it forwards the signal to the workload) and reaps
/// it.
pub fn stop_run(mut child: Child) -> std::process::ExitStatus {
    // SAFETY: kill(2) on our own unreaped child.
    unsafe { libc::kill(i32::try_from(child.id()).unwrap(), libc::SIGTERM) };
    child.wait().unwrap()
}

/// The keys of a pinned per-cgroup hash map with values of type `V` (the agent's maps under
/// its bpffs directory, e.g. `REIN_SHAPER` with `ShaperConfig`).
pub fn pinned_keys<V: aya::Pod>(pin: &Path) -> Vec<u64> {
    let data = aya::maps::MapData::from_pin(pin).unwrap();
    let map: aya::maps::HashMap<_, u64, V> =
        aya::maps::HashMap::try_from(aya::maps::Map::HashMap(data)).unwrap();
    map.keys().map(Result::unwrap).collect()
}

/// The keys of the agent's pinned traffic map: the cgroups whose packets were counted.
pub fn traffic_keys(bpf_dir: &Path) -> Vec<u64> {
    let data = aya::maps::MapData::from_pin(bpf_dir.join("REIN_TRAFFIC")).unwrap();
    let map: aya::maps::PerCpuHashMap<_, u64, controller_common::Traffic> =
        aya::maps::PerCpuHashMap::try_from(aya::maps::Map::PerCpuHashMap(data)).unwrap();
    map.keys().map(Result::unwrap).collect()
}

/// The keys of the agent's pinned shaper map: the cgroups that have egress limits.
pub fn shaper_keys(bpf_dir: &Path) -> Vec<u64> {
    pinned_keys::<controller_common::ShaperConfig>(&bpf_dir.join("REIN_SHAPER"))
}

/// The names of the extended attributes on `path` (`listxattr(2)`).
pub fn xattr_names(path: &Path) -> Vec<String> {
    use std::os::unix::ffi::OsStrExt as _;
    let p = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let mut buf = vec![0u8; 64 << 10];
    // SAFETY: p is NUL-terminated; buf is writable for buf.len() bytes.
    let n = unsafe { libc::listxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    let n = usize::try_from(n).unwrap_or_else(|_| panic!("listxattr {}", path.display()));
    buf[..n]
        .split(|b| *b == 0)
        .filter(|k| !k.is_empty())
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect()
}
