//! `rein agent`: wires configuration, the cgroup tree and the API server together.
//!
//! The agent keeps no state of its own: on start it opens its managed cgroup root, adopts
//! every container directory it finds (their limits are in the kernel's files), and serves
//! the API. Stopping or crashing loses nothing; limits stay enforced while it is down.
//! `settings` resolves its flags, config file and defaults.

mod reload;
pub mod settings;
mod systemd;

pub use settings::{AgentArgs, Config, Defaults, ModeChoice, Settings};

use std::{os::fd::AsRawFd as _, path::Path, sync::Arc};

use anyhow::{Context as _, bail};

use crate::{
    api::{self, server::Access},
    cgroup::{Registry, Tree},
    net::{
        programs::{Attachment, Datapath},
        qdisc,
    },
    node::{EgressMode, Node},
};

/// Holds an exclusive flock on `<socket dir>/rein.lock` for the agent's lifetime, so a
/// second agent refuses to start instead of fighting over the socket and the tree.
struct InstanceLock {
    _file: std::fs::File,
}

impl InstanceLock {
    fn acquire(socket: &Path) -> anyhow::Result<Self> {
        let dir = socket.parent().unwrap_or(Path::new("/"));
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join("rein.lock");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        // SAFETY: flock on a file descriptor this function owns; no memory is involved.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let holder = std::fs::read_to_string(&path).unwrap_or_default();
            bail!(
                "another rein agent is already running (lock {} held{}); stop it first",
                path.display(),
                if holder.trim().is_empty() {
                    String::new()
                } else {
                    format!(" by pid {}", holder.trim())
                }
            );
        }
        std::fs::write(&path, format!("{}\n", std::process::id()))?;
        Ok(Self { _file: file })
    }
}

/// Whether bpffs is mounted at /sys/fs/bpf in our mount namespace.
fn bpffs_mounted() -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    crate::check::parse_mountinfo(&mounts)
        .iter()
        .any(|m| m.fstype == "bpf" && m.point == Path::new("/sys/fs/bpf"))
}

/// The inode of the initial PID namespace (`PROC_PID_INIT_INO` in the kernel).
const INITIAL_PID_NS: u64 = 0xEFFF_FFFC;

/// Refuses to run where rein would have to mount a bpffs of its own in a mount namespace
/// other than the node's (a pod without the node's /sys/fs/bpf, a service with private
/// mounts): the pins, and with them every limit, would die with the agent at its next
/// restart, silently. Where it cannot tell (not in the node's PID namespace, so /proc/1 is
/// not the node's init, or /proc/1 unreadable) it refuses too. Checked before anything is
/// changed.
fn refuse_a_private_bpffs() -> anyhow::Result<()> {
    if bpffs_mounted() {
        return Ok(());
    }
    let ino = |path: &str| {
        std::fs::metadata(path)
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .ok()
    };
    let nodes_own = ino("/proc/self/ns/pid") == Some(INITIAL_PID_NS)
        && ino("/proc/self/ns/mnt").is_some()
        && ino("/proc/self/ns/mnt") == ino("/proc/1/ns/mnt");
    if nodes_own {
        return Ok(());
    }
    bail!(
        "no bpffs at /sys/fs/bpf, and this agent does not run in the node's own mount \
         namespace: a bpffs it mounted here would die with it, and with the pins every limit \
         at the next restart. Mount bpffs on the node (`mount -t bpf bpf /sys/fs/bpf`; systemd \
         does at boot) and pass the node's /sys/fs/bpf in (Kubernetes: a hostPath volume with \
         mountPropagation: HostToContainer, as deploy/kubernetes/rein.yaml does)"
    )
}

/// Mounts bpffs at /sys/fs/bpf when nothing is mounted there (pins need it); only in the
/// node's own mount namespace (see [`refuse_a_private_bpffs`]).
fn ensure_bpffs() -> anyhow::Result<()> {
    if bpffs_mounted() {
        return Ok(());
    }
    let c = |s: &str| std::ffi::CString::new(s).map_err(anyhow::Error::from);
    let (src, target, fstype) = (c("bpf")?, c("/sys/fs/bpf")?, c("bpf")?);
    // SAFETY: all pointers are valid NUL-terminated strings for the duration of the call.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        bail!(
            "mounting bpffs at /sys/fs/bpf: {}",
            std::io::Error::last_os_error()
        );
    }
    tracing::info!("mounted bpffs at /sys/fs/bpf");
    Ok(())
}

/// Devices that carry a default route (IPv4 or IPv6), from /proc/net.
pub fn default_route_devices() -> Vec<String> {
    let mut devs: Vec<String> = Vec::new();
    let v4 = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    for line in v4.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() > 7 && f[1] == "00000000" && f[7] == "00000000" {
            devs.push(f[0].to_owned());
        }
    }
    let v6 = std::fs::read_to_string("/proc/net/ipv6_route").unwrap_or_default();
    for line in v6.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() == 10 && f[0].bytes().all(|b| b == b'0') && f[1] == "00" && f[9] != "lo" {
            devs.push(f[9].to_owned());
        }
    }
    devs.sort();
    devs.dedup();
    devs
}

/// Loads the programs on pinned maps, attaches them to the managed root (or adopts the
/// attachment an earlier agent pinned) and chooses the egress mode: `fq` on the egress
/// devices for pacing, or policing where no device can have it (or `--egress-mode police`).
/// Failure leaves the agent running without network limits, and says why.
fn start_datapath(settings: &Settings, tree: &Tree) -> Result<(Datapath, EgressMode), String> {
    ensure_bpffs().map_err(|e| e.to_string())?;
    let pin_dir = settings.bpf_dir.as_path();
    let mut dp = Datapath::load_pinned(pin_dir).map_err(|e| e.to_string())?;
    match dp
        .ensure_attached(tree.root(), pin_dir)
        .map_err(|e| e.to_string())?
    {
        Attachment::Adopted => {
            tracing::info!("adopted the pinned eBPF programs of an earlier agent")
        }
        Attachment::Attached => {
            tracing::info!(root = %tree.root().display(), "attached eBPF programs")
        }
    }
    if settings.egress_mode == ModeChoice::Police {
        let why = "chosen with --egress-mode police".to_owned();
        tracing::info!("egress limits are policed: {why}");
        return Ok((dp, EgressMode::Police { why }));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let mut paced = Vec::new();
    let mut failures = Vec::new();
    for dev in &settings.egress_devs {
        match rt.block_on(qdisc::install_fq(dev)) {
            Ok(instances) => {
                tracing::info!(
                    device = %dev,
                    "fq paces the device ({instances} transmit queue(s)): egress pacing active"
                );
                paced.push(dev.clone());
            }
            Err(e) => {
                tracing::warn!(device = %dev, "cannot install fq: {e}");
                failures.push(format!("{dev}: {e}"));
            }
        }
    }
    if !paced.is_empty() {
        return Ok((dp, EgressMode::Edt { devices: paced }));
    }
    let why = if settings.egress_devs.is_empty() {
        "no egress device (no default route; name one with --egress-dev)".to_owned()
    } else {
        let fq = match qdisc::probe("fq") {
            qdisc::Support::Missing => "the kernel has no sch_fq; ",
            _ => "",
        };
        format!("{fq}fq could not be installed ({})", failures.join("; "))
    };
    let mode = if settings.egress_mode == ModeChoice::Edt {
        tracing::warn!("--egress is refused: {why}");
        EgressMode::Refused { why }
    } else {
        tracing::warn!("egress limits are policed, not paced: {why}");
        EgressMode::Police { why }
    };
    Ok((dp, mode))
}

/// On a host systemd runs, a managed root at the top of its tree (the default
/// `/sys/fs/cgroup/rein.slice`, as `rein agent` run by hand has it) is not delegated: systemd
/// owns the root's `cgroup.subtree_control` and does not know the directory. Says so, and
/// where the units put the root instead (rein-containers.service, delegated to rein).
fn warn_outside_systemds_delegation(root: &Path) {
    let systemd_runs = Path::new("/run/systemd/system").is_dir();
    if systemd_runs && root.parent() == Some(Path::new("/sys/fs/cgroup")) {
        tracing::warn!(
            root = %root.display(),
            "systemd runs this host, and this managed root is at the top of its tree, not \
             delegated to rein: run rein from its units (systemctl enable --now rein.socket \
             rein.service), whose root is in rein-containers.service's delegated cgroup"
        );
    }
}

/// The registry of runtimes' containers, under the bpffs directory (`cgroup::external`).
pub const EXTERNAL_DIR: &str = "external";

/// How often the agent looks for shaped containers' network namespaces without `fq` (a
/// container's processes enter their namespace after its cgroup exists), for runtimes'
/// containers whose cgroup is gone without the poststop hook, and for what was removed
/// behind its back (pins, `fq`, cgroups: see `Node::repair`).
const NETNS_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

async fn pace_netns_periodically(
    node: Arc<Node>,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(NETNS_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return Ok(()),
            _ = tick.tick() => {}
        }
        let blocking = node.clone();
        // Entering namespaces blocks (netlink round trips): keep it off the API's thread.
        let work = move || {
            blocking.flush_datapath_logs();
            let mut report = blocking.prune_external();
            report.extend(blocking.repair());
            report.extend(blocking.pace_container_netns());
            report
        };
        match tokio::task::spawn_blocking(work).await {
            Ok(report) => report.iter().for_each(|line| tracing::info!("{line}")),
            Err(e) => tracing::warn!("netns pacing task failed: {e}"),
        }
        for line in node.repair_fq().await {
            tracing::info!("{line}");
        }
    }
}

/// File descriptors the agent wants: the API's and the metrics endpoint's connection caps
/// (see `crate::http`) with room for pins, cgroup directories and namespaces.
const WANTED_FDS: u64 = 4096;

/// Raises the soft open-file limit towards [`WANTED_FDS`] (as far as the hard limit allows):
/// the default soft limit of 1024 is below what the endpoints' caps may hold at once.
fn raise_fd_limit() {
    let warn = |got: u64| {
        tracing::warn!(
            "the open-file limit is {got}, below the {WANTED_FDS} the endpoints' connection \
             caps may need; raise it (LimitNOFILE= in the unit) or a crowd of clients may \
             leave the agent without descriptors"
        );
    };
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut lim) } != 0 {
        return;
    }
    let want = WANTED_FDS.min(lim.rlim_max);
    if want < WANTED_FDS {
        warn(want);
    }
    if lim.rlim_cur < want {
        lim.rlim_cur = want;
        // SAFETY: setrlimit reads the struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const lim) } != 0 {
            tracing::warn!(
                "could not raise the open-file limit to {want}: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

/// Serves the metrics on `listener`, and on each listener a config reload sends after it
/// (the new address is bound before the old one closes), until the agent stops.
async fn serve_metrics(
    mut listener: std::net::TcpListener,
    mut moved: tokio::sync::mpsc::UnboundedReceiver<std::net::TcpListener>,
    node: Arc<Node>,
    node_name: crate::metrics::NodeName,
    stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    loop {
        let (replaced_tx, replaced_rx) = tokio::sync::oneshot::channel::<()>();
        let mut stop = stop.clone();
        let shutdown = async move {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => {}
                _ = replaced_rx => {}
            }
        };
        let server = crate::metrics::serve(listener, node.clone(), node_name.clone(), shutdown);
        tokio::pin!(server);
        tokio::select! {
            served = &mut server => return served,
            Some(next) = moved.recv() => {
                let _ = replaced_tx.send(());
                server.await?;
                listener = next;
            }
        }
    }
}

/// `RELOADING=1` with the monotonic time systemd's `Type=notify-reload` asks for.
fn reloading_state() -> String {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the struct we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    let usec = u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000
        + u64::try_from(ts.tv_nsec).unwrap_or(0) / 1_000;
    format!("RELOADING=1\nMONOTONIC_USEC={usec}")
}

/// Reads the config again at each SIGHUP and applies what can change live (see `reload`);
/// a reload that fails changes nothing and says why.
async fn reload_on_hangup(
    mut hangup: tokio::signal::unix::Signal,
    mut running: Settings,
    resolve: impl Fn() -> anyhow::Result<Settings>,
    node: Arc<Node>,
    rebind: tokio::sync::mpsc::UnboundedSender<std::net::TcpListener>,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return Ok(()),
            _ = hangup.recv() => {}
        }
        systemd::notify(&reloading_state());
        let planned = resolve().and_then(|next| reload::plan(&running, next));
        match planned {
            Ok(plan) => {
                let applied = plan.apply(&mut running, &node).await;
                applied
                    .done
                    .iter()
                    .for_each(|line| tracing::info!("{line}"));
                if !applied.left.is_empty() {
                    tracing::warn!(
                        "changed in the config but not applied now: {}",
                        applied.left.join("; ")
                    );
                }
                if let Some(l) = applied.listener {
                    let _ = rebind.send(l);
                }
                crate::metrics::config_applied(true);
                tracing::info!("config reloaded");
            }
            Err(e) => {
                crate::metrics::config_applied(false);
                tracing::error!("config reload refused, the running settings stay: {e:#}");
            }
        }
        systemd::notify("READY=1");
    }
}

/// Runs the agent until SIGINT or SIGTERM; at SIGHUP `resolve` gives the settings again
/// (flags over the config file) and the agent applies what can change live (see `reload`).
pub fn run(
    settings: Settings,
    resolve: impl Fn() -> anyhow::Result<Settings>,
) -> anyhow::Result<()> {
    // First: it changes the environment, which only a process without threads may.
    let activated = systemd::activated_listener()?;
    refuse_a_private_bpffs()?;
    let _lock = InstanceLock::acquire(&settings.socket)?;
    let described: Vec<String> = settings
        .describe()
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    tracing::info!("starting with {}", described.join(" "));
    raise_fd_limit();
    warn_outside_systemds_delegation(&settings.root);
    let tree = Tree::open(&settings.root)
        .with_context(|| {
            format!(
                "opening the managed cgroup root {}",
                settings.root.display()
            )
        })?
        .with_registry(Registry::new(&settings.bpf_dir.join(EXTERNAL_DIR)));
    let datapath = start_datapath(&settings, &tree);
    let node = Node::new(tree, datapath, settings.shaper)
        .with_hook_ceiling(settings.hook_ceiling.clone())
        .with_pin_dir(&settings.bpf_dir);
    if settings.runqueue_latency {
        match node.start_sched_latency(&settings.bpf_dir) {
            Ok(()) => tracing::info!("run-queue latency recorded per container"),
            Err(e) => tracing::warn!("no run-queue latency histograms: {e}"),
        }
    }
    match node.start_tcp_stats(&settings.bpf_dir) {
        Ok(()) => tracing::info!("TCP round-trip times and retransmissions recorded per container"),
        Err(e) => tracing::warn!("no TCP statistics: {e}"),
    }
    node.prune_external()
        .iter()
        .chain(node.take_over_external().iter())
        .chain(node.remove_staged().iter())
        .chain(node.undo_interrupted().iter())
        .for_each(|line| tracing::info!("{line}"));
    if let Err(e) = node.manage_all() {
        tracing::error!(
            "cannot make every adopted container managed by the eBPF programs (they go \
             unlimited on the network and uncounted until the repair every second succeeds): {e}"
        );
    }
    let adopted = node.names()?;
    for name in &adopted {
        match node.limits(name) {
            Ok(l) => tracing::info!(container = %name, limits = %l, "adopted"),
            Err(e) => {
                tracing::warn!(container = %name, "adopted, but its limits are unreadable: {e}")
            }
        }
    }
    tracing::info!(root = %settings.root.display(), containers = adopted.len(), "agent started");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let node = Arc::new(node);
    let access = Access {
        allowed_uids: settings.allowed_uids.clone(),
    };
    // The listeners exist before the agent says it is ready; a socket systemd holds
    // (rein.socket) is systemd's to keep, mode and file alike.
    let from_systemd = activated.is_some();
    let api_listener = match activated {
        Some(l) => {
            systemd::check_passed_socket(&l, &settings.socket, !settings.allowed_uids.is_empty())?;
            tracing::info!(socket = %settings.socket.display(), "API listening on the socket systemd passed");
            l
        }
        None => api::server::listen(&settings.socket, &access)
            .with_context(|| format!("listening on {}", settings.socket.display()))?,
    };
    let metrics_listener = crate::metrics::bind(settings.metrics_addr)?;
    crate::metrics::config_applied(true);
    // Before READY=1: a `systemctl reload` or stop right after must find the handlers, not
    // the signals' default actions (which would end the agent without its goodbye).
    let (hangup, mut terminate, mut interrupt) = {
        use tokio::signal::unix::{SignalKind, signal};
        let _runtime = rt.enter();
        (
            signal(SignalKind::hangup()).context("handling SIGHUP (config reload)")?,
            signal(SignalKind::terminate()).context("handling SIGTERM")?,
            signal(SignalKind::interrupt()).context("handling SIGINT")?,
        )
    };
    systemd::notify("READY=1");
    rt.block_on(async {
        // One stop signal for both servers.
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
            tracing::info!("stopping; limits stay in the kernel");
            systemd::notify("STOPPING=1");
            let _ = stop_tx.send(true);
        });
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let api = async {
            api::server::serve(api_listener, node.clone(), access, stopped(stop_rx.clone()))
                .await
                .with_context(|| format!("serving the API on {}", settings.socket.display()))
        };
        let netns = pace_netns_periodically(node.clone(), stopped(stop_rx.clone()));
        let (rebind, moved) = tokio::sync::mpsc::unbounded_channel();
        let metrics = serve_metrics(
            metrics_listener,
            moved,
            node.clone(),
            settings.node_name.clone(),
            stop_rx.clone(),
        );
        // What runs: in edt mode the devices fq went on (one that refused it at start is
        // tried again at the next reload).
        let mut running = settings.clone();
        if let EgressMode::Edt { devices } = node.mode() {
            running.egress_devs = devices;
        }
        let reloads = reload_on_hangup(
            hangup,
            running,
            resolve,
            node.clone(),
            rebind,
            stopped(stop_rx.clone()),
        );
        tokio::try_join!(api, metrics, netns, reloads).map(|_| ())
    })?;
    if !from_systemd {
        let _ = std::fs::remove_file(&settings.socket);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_instance_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("rein.sock");
        let first = InstanceLock::acquire(&socket).unwrap();
        let err = InstanceLock::acquire(&socket).err().unwrap().to_string();
        assert!(
            err.contains("already running") && err.contains(&std::process::id().to_string()),
            "{err}"
        );
        drop(first);
        InstanceLock::acquire(&socket).unwrap();
    }
}
