//! `rein run`: like `systemd-run --scope`, a command in a new limited container.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use hyper::Method;

use crate::{
    api::{Container, CreateRequest, LimitMap, client::Client},
    cgroup::Kind,
};

/// `rein run`: create the container, start the command inside it, forward SIGINT/SIGTERM,
/// wait, remove the container (unless `keep`), and return the command's exit status
/// (128 + signal number when a signal ended it, as shells report).
pub async fn run_command(
    client: &Client,
    name: String,
    group: Option<String>,
    limits: LimitMap,
    keep: bool,
    command: Vec<String>,
) -> anyhow::Result<Ended> {
    use std::os::unix::process::ExitStatusExt as _;

    // Checked before anything is made: the command joins its cgroup by writing
    // cgroup.procs, which only root may (the cgroups are root's, also for allowed uids).
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "rein run needs root: the command must join the container's cgroup, which only \
             root may write; run it with sudo (an allowed uid may still create groups and \
             change limits)"
        );
    }
    let created: Container = client
        .call(
            Method::POST,
            "/v1/containers",
            Some(&CreateRequest {
                name: name.clone(),
                limits,
                kind: Kind::Container,
                group,
                cgroup: None,
                labels: Default::default(),
                pod: None,
            }),
        )
        .await?
        .context("the agent created the container but sent no description")?;
    let procs = PathBuf::from(&created.path).join("cgroup.procs");
    let mut cmd = tokio::process::Command::new(&command[0]);
    cmd.args(&command[1..]);
    // SAFETY: runs in the forked child before exec; it only opens, writes and closes a file
    // (async-signal-safe system calls) to move itself into the container's cgroup, so every
    // socket and page the command ever has belongs to the container.
    unsafe {
        cmd.pre_exec(move || std::fs::write(&procs, "0"));
    }
    let cleanup = |client: &Client, name: &str| {
        let path = format!("/v1/containers/{name}?force=true");
        let client = Client::new(client.socket());
        async move {
            client
                .call::<serde_json::Value>(Method::DELETE, &path, None::<&()>)
                .await
        }
    };
    // Handlers first: a signal that arrives once the command runs must be forwarded to it,
    // not end rein and orphan the container.
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let _ = cleanup(client, &name).await;
            bail!("cannot start {:?}: {e}", command[0]);
        }
    };
    let pid = child.id().and_then(|p| i32::try_from(p).ok());
    let status = loop {
        let sig = tokio::select! {
            s = child.wait() => break s?,
            _ = int.recv() => libc::SIGINT,
            _ = term.recv() => libc::SIGTERM,
        };
        if let Some(pid) = pid {
            // SAFETY: kill(2) on the pid of our own child, which we have not reaped yet.
            unsafe { libc::kill(pid, sig) };
        }
    };
    if !keep && let Err(e) = cleanup(client, &name).await {
        eprintln!("rein: warning: could not remove container {name}: {e}");
    }
    let code = status
        .code()
        .or(status.signal().map(|s| 128 + s))
        .unwrap_or(1);
    Ok(Ended {
        name,
        exit_code: u8::try_from(code).unwrap_or(1),
        signal: status.signal(),
        kept: keep,
    })
}

/// How `rein run` ended (`rein run --json` prints it).
#[derive(Debug, serde::Serialize)]
pub struct Ended {
    pub name: String,
    /// The command's exit status, or 128 + the signal that ended it (as a shell reports it);
    /// `rein run` exits with it.
    pub exit_code: u8,
    /// The signal that ended the command, if one did.
    pub signal: Option<i32>,
    /// Whether the container (and its limits) was kept (`--keep`).
    pub kept: bool,
}
