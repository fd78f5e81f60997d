//! The real container engines in the test VM: Podman, dockerd and containerd as Debian ships
//! them, from the read-only disk `cargo xtask setup` builds (xtask/src/vm/engines.rs), which
//! the guest's /init lays under /usr and /etc.

use std::{
    path::Path,
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use crate::*;

/// The test image's rootfs (static busybox with its applets, iperf3 and its libraries).
pub const ROOTFS_TAR: &str = "/usr/share/rein-tests/rootfs.tar";
/// The name the tests import it under.
pub const IMAGE: &str = "localhost/rein-test";
/// rein's hooks file as shipped, installed where Podman 4 reads hooks by default.
pub const HOOKS_FILE: &str = include_str!("../../deploy/hooks.d/rein.json");
pub const PODMAN_HOOKS_DIR: &str = "/usr/share/containers/oci/hooks.d";

/// Panics with the fix when the engines' disk is missing.
pub fn require_engines() {
    require_vm();
    assert!(
        Path::new(ROOTFS_TAR).exists(),
        "the container engines' disk is not in this VM: run `cargo xtask setup`, which builds it"
    );
}

/// Runs a command to its end with no stdin; returns its output.
pub fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"))
}

/// Like [`run`], asserting success; returns stdout.
pub fn run_ok(program: &str, args: &[&str]) -> String {
    succeeded(&format!("{program} {args:?}"), &run(program, args))
}

/// Asserts that the command `what` succeeded (its output otherwise), and returns its stdout.
pub fn succeeded(what: &str, out: &Output) -> String {
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Podman set up as its documentation says: rein's hooks file in the hooks directory, the
/// test image imported (once per boot).
pub fn podman_ready() {
    require_engines();
    std::fs::create_dir_all("/var/tmp").unwrap();
    std::fs::create_dir_all(PODMAN_HOOKS_DIR).unwrap();
    std::fs::write(Path::new(PODMAN_HOOKS_DIR).join("rein.json"), HOOKS_FILE).unwrap();
    if !run("podman", &["image", "exists", IMAGE]).status.success() {
        run_ok("podman", &["import", "--quiet", ROOTFS_TAR, IMAGE]);
    }
}

/// `rein-runtime`, the symlink to rein that makes it a runc wrapper (docs/runtimes.md);
/// returns its path.
pub fn rein_runtime() -> &'static str {
    const WRAPPER: &str = "/usr/local/bin/rein-runtime";
    if std::fs::symlink_metadata(WRAPPER).is_err() {
        std::os::unix::fs::symlink("/usr/local/bin/rein", WRAPPER).unwrap();
    }
    WRAPPER
}

/// The test image unpacked into a directory (for `ctr run --rootfs`), once per boot.
pub fn unpacked_rootfs() -> &'static str {
    const DIR: &str = "/var/lib/rein-test-rootfs";
    if !Path::new(DIR).join("bin/busybox").exists() {
        std::fs::create_dir_all(DIR).unwrap();
        run_ok("tar", &["-C", DIR, "-xf", ROOTFS_TAR]);
    }
    DIR
}

/// Podman containers removed (forcibly, missing ones ignored) when dropped, also when the
/// test fails half-way: the next tests share the guest.
pub struct PodmanContainers(pub &'static [&'static str]);

impl Drop for PodmanContainers {
    fn drop(&mut self) {
        let mut args = vec!["rm", "--force", "--ignore", "--time", "0"];
        args.extend(self.0);
        let _ = run("podman", &args);
    }
}

/// A child process (an engine's client running a container) killed and reaped when dropped,
/// so a failed assertion leaves no container running behind it.
pub struct KillOnDrop(pub Option<Child>);

impl KillOnDrop {
    /// Waits for the child to end; returns its output.
    pub fn wait(mut self) -> Output {
        self.0.take().unwrap().wait_with_output().unwrap()
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A daemon started for one test (dockerd, containerd), stopped with SIGTERM (then SIGKILL
/// after 20 s) and waited for when dropped.
pub struct Daemon {
    child: Child,
    name: String,
}

impl Daemon {
    /// Starts `program` with `args` and `env`, its output to `/tmp/<program>.log`, and waits
    /// (up to 60 s) until `ready` returns true.
    pub fn start(
        program: &str,
        args: &[&str],
        env: &[(&str, &str)],
        ready: impl Fn() -> bool,
    ) -> Self {
        require_engines();
        let log = std::fs::File::create(format!("/tmp/{program}.log")).unwrap();
        let child = Command::new(program)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("{program}: {e}"));
        let mut d = Self {
            child,
            name: program.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !ready() {
            if let Ok(Some(status)) = d.child.try_wait() {
                panic!("{program} exited ({status}): {}", d.log());
            }
            assert!(
                Instant::now() < deadline,
                "{program} not ready in 60 s: {}",
                d.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        d
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(format!("/tmp/{}.log", self.name)).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
