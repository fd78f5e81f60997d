//! `rein hook STAGE`: what the runtime runs at each OCI lifecycle stage.
//!
//! - `createRuntime` (alias `prestart`, its deprecated predecessor): runs in the runtime's
//!   namespace after the runtime made the container's cgroup, applied the spec's resources
//!   and put the container's init process in it, before the user's program starts. The hook
//!   registers the container with the agent, which attaches rein's programs to the cgroup and
//!   applies the annotations' limits, so nothing of the program runs unshaped.
//! - `poststop` (optional): after the runtime deleted the container (and its cgroup); the
//!   agent forgets it (links, map entries, record) at once. Without it the agent forgets the
//!   container within a second (its walk of registrations whose cgroup is gone), and a new
//!   container under the same name replaces the dead registration: the recommended setup
//!   (`deploy/hooks.d/rein.json`) runs one hook process per container start.
//!
//! Neither startContainer nor poststart is needed: startContainer runs inside the container's
//! namespaces (rein's binary and socket would have to be in its rootfs), and by poststart the
//! program already runs, so a limit applied then would come late. The agent also forgets
//! containers whose cgroup vanished without poststop (every second, and at start).
//!
//! Failure policy: an agent that does not answer, or limits it refuses, fail the container
//! start with the reason on stderr (the runtime shows it); `--fail-open` starts the
//! container anyway without rein's limits, and says so. Every stage is bounded by
//! `--timeout` (reading the state included): a hook never hangs a container start. The
//! bundle's config.json, which the runtime has just read itself, is read whole at once and
//! refused unless a regular file of at most 16 MiB.

use std::{
    io::Read as _,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, anyhow};
use hyper::Method;

use super::bundle;
use crate::api::{self, Container, CreateRequest, client::Client};

/// The OCI stages rein acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Stage {
    /// Register the container and apply its limits (OCI createRuntime).
    #[value(name = "createRuntime", alias = "prestart")]
    CreateRuntime,
    /// Unregister the deleted container (OCI poststop).
    #[value(name = "poststop")]
    Poststop,
    /// Either, from the state's status (`creating`/`created`: createRuntime, `stopped`:
    /// poststop), for a hooks.d file that names both stages.
    #[value(name = "auto")]
    Auto,
}

impl Stage {
    pub const fn name(self) -> &'static str {
        match self {
            Self::CreateRuntime => "createRuntime",
            Self::Poststop => "poststop",
            Self::Auto => "auto",
        }
    }

    /// The stage `auto` stands for, from the state's `status`.
    fn resolve(self, state: &[u8]) -> anyhow::Result<Self> {
        if self != Self::Auto {
            return Ok(self);
        }
        let status = serde_json::from_slice::<serde_json::Value>(state)
            .ok()
            .and_then(|v| v["status"].as_str().map(str::to_owned))
            .unwrap_or_default();
        match status.as_str() {
            "creating" | "created" => Ok(Self::CreateRuntime),
            "stopped" => Ok(Self::Poststop),
            other => Err(anyhow!(
                "hook stage auto: the state's status is {other:?}; rein acts on creating \
                 (createRuntime) and stopped (poststop)"
            )),
        }
    }
}

/// How the hook behaves.
#[derive(Debug, Clone)]
pub struct Options {
    /// Exit 0 (container starts without rein) when the hook fails.
    pub fail_open: bool,
    /// Bound on the whole stage.
    pub timeout: Duration,
    /// The cgroup2 mount `linux.cgroupsPath` is relative to.
    pub cgroup_root: PathBuf,
}

/// The most state JSON read from stdin (the runtime sends a few hundred bytes).
const MAX_STATE: u64 = 1 << 20;

/// Reads the state from stdin, giving up after `timeout` (a runtime that never closes stdin
/// must not hang the hook). Waits with poll(2) on this thread: a thread of its own cost a
/// container start more than the read.
fn read_state(timeout: Duration) -> anyhow::Result<Vec<u8>> {
    let deadline = std::time::Instant::now() + timeout;
    let mut stdin = std::io::stdin().lock();
    let mut buf = Vec::new();
    // Larger than stdin's own buffer, so every read bypasses it and poll(2) sees all that
    // is left.
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        if !readable_by(deadline).context("waiting for the OCI state on stdin")? {
            return Err(anyhow!("no OCI state on stdin within {timeout:?}"));
        }
        let n = match stdin.read(&mut chunk) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => r.context("reading the OCI state from stdin")?,
        };
        if n == 0 {
            return Ok(buf);
        }
        if (buf.len() + n) as u64 > MAX_STATE {
            return Err(anyhow!(
                "the OCI state on stdin is larger than {MAX_STATE} bytes"
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// True when stdin has something to read (data or its end) by `deadline`.
fn readable_by(deadline: std::time::Instant) -> std::io::Result<bool> {
    let mut fd = libc::pollfd {
        fd: libc::STDIN_FILENO,
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        // Rounded up: a wait of less than a millisecond is still one.
        let ms = i32::try_from(left.as_micros().div_ceil(1000)).unwrap_or(i32::MAX);
        // SAFETY: one valid pollfd, alive across the call, and its count.
        let rc = unsafe { libc::poll(&mut fd, 1, ms) };
        match rc {
            0 => return Ok(false),
            1.. => return Ok(true),
            _ => {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
}

/// Runs one stage; returns the exit status (0 also when failing open).
pub fn run(client: &Client, stage: Stage, opts: &Options) -> u8 {
    let started = std::time::Instant::now();
    // The stage `auto` stands for, once the state says (for the messages below too).
    let mut stage = stage;
    let result = (|| {
        let state = read_state(opts.timeout)?;
        stage = stage.resolve(&state)?;
        let left = opts.timeout.saturating_sub(started.elapsed());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("tokio runtime")?;
        // The agent's own "cannot reach" error is reported if it stays down: the retries
        // stop a little before the outer bound.
        let patience = left.saturating_sub(Duration::from_millis(100));
        // The registration's answer is not read: the agent need not read the limits back.
        let minimal = client.minimal();
        let client = Patient {
            client: if stage == Stage::CreateRuntime {
                &minimal
            } else {
                client
            },
            until: tokio::time::Instant::now() + patience,
        };
        rt.block_on(async {
            tokio::time::timeout(left, act(&client, stage, &state, &opts.cgroup_root))
                .await
                .map_err(|_| {
                    anyhow!(
                        "no answer within {:?} from the agent at {}",
                        opts.timeout,
                        client.client.socket().display(),
                    )
                })?
        })
    })();
    match result {
        Ok(()) => 0,
        Err(e) if opts.fail_open => {
            eprintln!(
                "rein hook {}: warning: {e:#}; the container goes on without rein (--fail-open)",
                stage.name()
            );
            0
        }
        Err(e) => {
            let what = match stage {
                Stage::CreateRuntime => {
                    "the container is not started (add --fail-open to the hook's args to start \
                     containers without rein's limits when this fails)"
                }
                Stage::Poststop => "the agent forgets the container once it sees its cgroup gone",
                Stage::Auto => "nothing was done",
            };
            eprintln!("rein hook {}: error: {e:#}; {what}", stage.name());
            1
        }
    }
}

async fn act(client: &Patient<'_>, stage: Stage, state: &[u8], root: &Path) -> anyhow::Result<()> {
    match stage {
        Stage::Auto => Err(anyhow!("hook stage auto was not resolved")),
        Stage::CreateRuntime => {
            // A regular file's read, bounded by its size (see `bundle::read_spec`).
            let c = bundle::read(state, root)?;
            if c.pod_sandbox {
                // Its poststop finds no registration (404), which is fine too.
                return Ok(());
            }
            for flag in &c.overridden {
                eprintln!(
                    "rein hook: note: {}: the spec's linux.resources sets {}; its annotation is \
                     ignored (the spec wins)",
                    c.name,
                    flag.name()
                );
            }
            let req = CreateRequest {
                name: c.name.to_string(),
                limits: api::limits_to_map(&c.limits),
                kind: crate::cgroup::Kind::Container,
                group: None,
                cgroup: Some(c.cgroup.display().to_string()),
                labels: c.labels,
                pod: c.pod.map(|p| api::PodRequest {
                    name: p.name.to_string(),
                    cgroup: p.cgroup.display().to_string(),
                    limits: api::limits_to_map(&p.limits),
                }),
            };
            client
                .call::<Container>(Method::POST, "/v1/containers", Some(&req))
                .await
                .with_context(|| format!("registering container {}", c.name))?;
            Ok(())
        }
        Stage::Poststop => {
            // Only the registration of this very cgroup: a container refused for a name
            // another one holds must not unregister that one.
            let (name, placed) = bundle::read_identity(state, root)?;
            let cgroup = match placed {
                bundle::Placement::Dir(dir) => dir,
                // The process that said where a relative path went is gone: the container
                // registered under this name is this one if its cgroup ends in the path.
                bundle::Placement::Relative(rel) => {
                    let listed = client
                        .call::<Container>(
                            Method::GET,
                            &format!("/v1/containers/{name}"),
                            None::<&()>,
                        )
                        .await;
                    match listed {
                        Ok(Some(c)) if Path::new(&c.path).ends_with(&rel) => PathBuf::from(c.path),
                        Ok(_) | Err(api::client::ClientError::Api { status: 404, .. }) => {
                            return Ok(());
                        }
                        Err(e) => {
                            return Err(e).with_context(|| format!("looking up container {name}"));
                        }
                    }
                }
            };
            let path = format!(
                "/v1/containers/{name}?cgroup={}",
                api::query_escape(&cgroup.display().to_string())
            );
            match client
                .call::<serde_json::Value>(Method::DELETE, &path, None::<&()>)
                .await
            {
                Ok(_) | Err(api::client::ClientError::Api { status: 404, .. }) => Ok(()),
                Err(e) => Err(e).with_context(|| format!("unregistering container {name}")),
            }
        }
    }
}

/// The agent's client, waiting for an agent that is down: while its socket is missing or
/// refuses connections the request was never sent, so it is sent again until `until`; a
/// connection cut before the answer (the agent killed mid-request) is sent again too, which
/// is safe because both of the hook's calls are idempotent (registering the same cgroup under
/// the same name again applies its limits again; unregistering one that is gone is a 404).
/// An agent restart (a DaemonSet rollout, `systemctl restart rein`) then delays container
/// starts instead of failing them.
struct Patient<'a> {
    client: &'a Client,
    until: tokio::time::Instant,
}

impl Patient<'_> {
    async fn call<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl serde::Serialize>,
    ) -> Result<Option<T>, api::client::ClientError> {
        let mut pause = Duration::from_millis(20);
        loop {
            match self.client.call(method.clone(), path, body).await {
                Err(
                    api::client::ClientError::AgentDown { .. } | api::client::ClientError::Cut(_),
                ) if tokio::time::Instant::now() + pause < self.until => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(250));
                }
                other => return other,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_follows_the_state_status() {
        let st = |s: &str| format!(r#"{{"ociVersion":"1.0.2","id":"x","status":"{s}"}}"#);
        let auto = Stage::Auto;
        assert_eq!(
            auto.resolve(st("creating").as_bytes()).unwrap(),
            Stage::CreateRuntime
        );
        assert_eq!(
            auto.resolve(st("stopped").as_bytes()).unwrap(),
            Stage::Poststop
        );
        let e = auto
            .resolve(st("running").as_bytes())
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"running\""), "{e}");
        assert_eq!(
            Stage::Poststop.resolve(b"not json").unwrap(),
            Stage::Poststop
        );
    }
}
