//! OCI bundles run by real runc and crun.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command},
};

use crate::*;

/// Where the OCI test containers' cgroups go (`linux.cgroupsPath` = `/rein-oci/<id>`).
pub const OCI_CGROUPS: &str = "/sys/fs/cgroup/rein-oci";

/// An OCI bundle for runc or crun under /tmp: its rootfs is the VM's own /bin, /sbin, /usr,
/// /lib and /lib64 bound read-only (busybox, iperf3 and their libraries), with fresh /proc,
/// /dev and /tmp; it shares the host's network namespace (so the agent's egress device paces
/// it) and has its own pid, mount, ipc and uts namespaces. On drop the container is deleted
/// (forcibly) and the bundle and cgroup removed.
pub struct OciBundle {
    pub dir: PathBuf,
    pub id: String,
    /// `runc` or `crun`.
    pub runtime: String,
}

impl OciBundle {
    pub fn new(runtime: &str, id: &str, args: &[&str]) -> Self {
        require_vm();
        let dir = PathBuf::from(format!("/tmp/oci-{id}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("rootfs")).unwrap();
        let mut mounts = vec![
            serde_json::json!({"destination": "/proc", "type": "proc", "source": "proc"}),
            serde_json::json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
                "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
            serde_json::json!({"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                "options": ["nosuid", "nodev", "mode=1777"]}),
        ];
        for d in ["/bin", "/sbin", "/usr", "/lib", "/lib64"] {
            if Path::new(d).exists() {
                mounts.push(
                    serde_json::json!({"destination": d, "type": "bind", "source": d,
                    "options": ["rbind", "ro"]}),
                );
            }
        }
        let config = serde_json::json!({
            "ociVersion": "1.0.2",
            "process": {
                "terminal": false,
                "user": {"uid": 0, "gid": 0},
                "args": args,
                "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
                "cwd": "/",
                "noNewPrivileges": true
            },
            "root": {"path": "rootfs", "readonly": false},
            "hostname": id,
            "mounts": mounts,
            "annotations": {},
            "linux": {
                "cgroupsPath": format!("/rein-oci/{id}"),
                "namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "ipc"}, {"type": "uts"}],
                "resources": {}
            }
        });
        let b = Self {
            dir,
            id: id.to_owned(),
            runtime: runtime.to_owned(),
        };
        b.write(&config);
        b
    }

    fn write(&self, config: &serde_json::Value) {
        std::fs::write(
            self.dir.join("config.json"),
            serde_json::to_vec_pretty(config).unwrap(),
        )
        .unwrap();
    }

    /// The bundle's config.json.
    pub fn config(&self) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.dir.join("config.json")).unwrap()).unwrap()
    }

    /// Edits config.json.
    pub fn edit(&self, f: impl FnOnce(&mut serde_json::Value)) {
        let mut c = self.config();
        f(&mut c);
        self.write(&c);
    }

    pub fn annotate(&self, pairs: &[(&str, &str)]) {
        self.edit(|c| {
            for (k, v) in pairs {
                c["annotations"][*k] = serde_json::Value::from(*v);
            }
        });
    }

    /// Adds `rein --socket SOCKET hook createRuntime|poststop EXTRA..` as runc's config.json
    /// snippet in docs/runtimes.md does with the optional poststop hook (the registration is
    /// then forgotten as the runtime deletes the container).
    pub fn add_rein_hooks(&self, socket: &Path, extra: &[&str]) {
        self.add_hooks_for(socket, extra, &["createRuntime", "poststop"]);
    }

    /// Adds only `rein --socket SOCKET hook createRuntime EXTRA..`, the recommended setup
    /// (deploy/hooks.d/rein.json): one hook process per container start; the agent forgets
    /// the container within a second of its cgroup's removal.
    pub fn add_rein_create_hook(&self, socket: &Path, extra: &[&str]) {
        self.add_hooks_for(socket, extra, &["createRuntime"]);
    }

    fn add_hooks_for(&self, socket: &Path, extra: &[&str], stages: &[&str]) {
        let hook = |stage: &str| {
            let mut args = vec![
                "rein".to_owned(),
                "--socket".to_owned(),
                socket.display().to_string(),
                "hook".to_owned(),
                stage.to_owned(),
            ];
            args.extend(extra.iter().map(|s| (*s).to_owned()));
            serde_json::json!([{"path": "/usr/local/bin/rein", "args": args, "timeout": 10}])
        };
        self.edit(|c| {
            c["hooks"] = stages.iter().map(|s| ((*s).to_owned(), hook(s))).collect();
        });
    }

    /// The container's cgroup directory: its config's `linux.cgroupsPath` under the mount.
    pub fn cgroup(&self) -> PathBuf {
        let path = self.config()["linux"]["cgroupsPath"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| format!("/rein-oci/{}", self.id));
        Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/'))
    }

    /// The runtime's state directory for these tests.
    pub fn state_root(&self) -> String {
        format!("/run/rein-oci-{}", self.runtime)
    }

    /// A runtime command with this test's `--root`.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.runtime);
        c.arg("--root").arg(self.state_root()).args(args);
        c
    }

    /// `RUNTIME run [--detach] --bundle DIR ID` with no stdin and stdout to /dev/null
    /// (stderr inherited): foreground, it returns when the process exits and the container
    /// is deleted.
    pub fn run_command(&self, detach: bool) -> Command {
        let mut c = self.command(&["run"]);
        if detach {
            c.arg("--detach");
        }
        c.arg("--bundle")
            .arg(&self.dir)
            .arg(&self.id)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null());
        c
    }

    /// [`OciBundle::run_command`] in the foreground, started, with stdout and stderr captured.
    pub fn spawn_run(&self) -> Child {
        self.run_command(false)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Runs the bundle to completion; returns (success, the runtime's stderr).
    pub fn run_to_end(&self) -> (bool, String) {
        let out = self.spawn_run().wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for OciBundle {
    fn drop(&mut self) {
        let _ = self
            .command(&["delete", "--force", &self.id])
            .stderr(std::process::Stdio::null())
            .status();
        remove_cgroup(&self.cgroup());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
