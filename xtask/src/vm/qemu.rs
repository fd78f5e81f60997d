//! Boots qemu (TCG: this machine has no usable hardware virtualisation) under a hard timeout,
//! streams the serial console, and reads the guest's verdict from its markers.

use std::{
    collections::VecDeque,
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

/// Printed by /init when the guest is set up, before the payload runs.
pub const READY: &str = "REIN-VM-READY";
/// Printed by /init with the payload's exit status.
pub const EXIT: &str = "REIN-VM-EXIT ";
/// Lines that mean the guest kernel is dead; qemu is stopped at once.
const FATAL: [&str; 3] = [
    "Kernel panic",
    "BUG: kernel NULL pointer",
    "Attempted to kill init",
];
/// Serial lines kept to show when the guest fails.
const TAIL: usize = 40;

pub struct Boot<'a> {
    pub label: String,
    pub kernel: &'a Path,
    pub initrd: &'a Path,
    pub disks: Vec<&'a Path>,
    /// Read-only disks after those (the container engines' image).
    pub readonly_disks: Vec<&'a Path>,
    pub timeout: Duration,
    pub memory_mib: u32,
    /// Forward this TCP port from 127.0.0.1 on the host to the guest (qemu user networking,
    /// `restrict=on`: the guest reaches nothing outside, only the forwarded port comes in).
    pub forward_port: Option<u16>,
    pub control: Control<'a>,
}

/// How a caller steers a guest that runs beside it (`cargo xtask vm-fleet`): it sees each
/// serial line as it comes, and may stop the guest, which then counts as a clean exit.
#[derive(Default, Clone, Copy)]
pub struct Control<'a> {
    pub on_line: Option<&'a (dyn Fn(&str) + Sync)>,
    pub stop: Option<&'a AtomicBool>,
}

/// What the guest reported.
pub struct Outcome {
    /// The payload's exit status.
    pub status: i32,
    /// Every serial line (for the caller's own parsing, e.g. test summaries).
    pub lines: Vec<String>,
    pub boot_time: Duration,
    pub total_time: Duration,
}

/// Kills qemu (the process this module started, by its handle) when dropped, so that no
/// error path leaves a VM behind.
struct Vm(Child);

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// qemu itself crashed before the guest was ready (its TCG has an assertion,
/// `iotlb_to_section`, that fails now and then while the guest maps its devices at boot):
/// nothing of the payload ran.
#[derive(Debug, thiserror::Error)]
#[error("[{label}] qemu crashed before the guest was ready: {line}")]
struct EarlyCrash {
    label: String,
    line: String,
}

/// Boots the guest and reads its verdict. A qemu that crashes before the guest is ready is
/// started once more (and says so): no test ran, so nothing is retried but the emulator.
pub fn boot(b: &Boot<'_>) -> anyhow::Result<Outcome> {
    match boot_once(b) {
        Err(e) if e.downcast_ref::<EarlyCrash>().is_some() => {
            eprintln!("[{}] warning: {e}; booting once more", b.label);
            boot_once(b)
        }
        other => other,
    }
}

fn boot_once(b: &Boot<'_>) -> anyhow::Result<Outcome> {
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args(["-accel", "tcg", "-cpu", "max", "-smp", "2", "-m"])
        .arg(b.memory_mib.to_string())
        .args([
            "-display",
            "none",
            "-no-reboot",
            "-nodefaults",
            "-serial",
            "stdio",
            "-kernel",
        ])
        .arg(b.kernel)
        .arg("-initrd")
        .arg(b.initrd)
        .arg("-append")
        .arg("console=ttyS0 rdinit=/init panic=-1 oops=panic loglevel=4 mitigations=off");
    if let Some(port) = b.forward_port {
        cmd.arg("-netdev")
            .arg(format!(
                "user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{port}-:{port}"
            ))
            .args(["-device", "virtio-net-pci,netdev=n0"]);
    }
    for disk in &b.disks {
        cmd.arg("-drive").arg(format!(
            "file={},format=raw,if=virtio,cache=unsafe",
            disk.display()
        ));
    }
    for disk in &b.readonly_disks {
        cmd.arg("-drive").arg(format!(
            "file={},format=raw,if=virtio,readonly=on",
            disk.display()
        ));
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // The guest dies with xtask, however xtask ends: a SIGTERM from a service manager or
    // `timeout` sent to xtask alone must not leave a VM running. The kernel sends qemu
    // SIGKILL when the thread that started it exits; that thread waits here for qemu.
    let parent = std::process::id();
    // SAFETY: prctl(2) with PR_SET_PDEATHSIG and getppid(2) take no pointers and are
    // async-signal-safe, as code between fork and exec must be; nothing allocates.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            // xtask died between fork and prctl: no signal will come, so do not start (an
            // OS error, which needs no allocation here).
            if u32::try_from(libc::getppid()).ok() != Some(parent) {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    eprintln!(
        "[{}] booting qemu (timeout {}s)",
        b.label,
        b.timeout.as_secs()
    );
    let start = Instant::now();
    let mut vm = Vm(cmd
        .spawn()
        .context("cannot start qemu-system-x86_64: run `cargo xtask setup`")?);

    // Both pipes feed one channel so the watchdog below sees every line as it comes.
    let (tx, rx) = mpsc::channel::<String>();
    for pipe in [
        vm.0.stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        vm.0.stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).split(b'\n').map_while(Result::ok) {
                let line = String::from_utf8_lossy(&line)
                    .trim_end_matches('\r')
                    .to_owned();
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    drop(tx);

    let mut lines = Vec::new();
    let mut tail = VecDeque::with_capacity(TAIL);
    let mut status = None;
    let mut boot_time = None;
    let deadline = start + b.timeout;
    let stopped = || b.control.stop.is_some_and(|s| s.load(Ordering::Relaxed));
    let failure = loop {
        if stopped() {
            status = Some(0);
            eprintln!("[{}] stopped by the host", b.label);
            break None;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        // Short waits when someone may stop the guest, so that it stops promptly.
        let wait = if b.control.stop.is_some() {
            left.min(Duration::from_millis(200))
        } else {
            left
        };
        match rx.recv_timeout(wait) {
            Ok(line) => {
                println!("  {}| {line}", b.label);
                if let Some(f) = b.control.on_line {
                    f(&line);
                }
                if line.starts_with(READY) && boot_time.is_none() {
                    boot_time = Some(start.elapsed());
                    eprintln!(
                        "[{}] guest ready after {:.1}s",
                        b.label,
                        start.elapsed().as_secs_f64()
                    );
                }
                if let Some(code) = line.strip_prefix(EXIT) {
                    status = code.trim().parse().ok();
                }
                if FATAL.iter().any(|f| line.contains(f)) {
                    tail.push_back(line);
                    break Some("the guest kernel died");
                }
                if tail.len() == TAIL {
                    tail.pop_front();
                }
                tail.push_back(line.clone());
                lines.push(line);
            }
            Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {}
            Err(mpsc::RecvTimeoutError::Timeout) => break Some("timed out"),
            // Both pipes closed: qemu has exited.
            Err(mpsc::RecvTimeoutError::Disconnected) => break None,
        }
    };
    drop(vm);
    let total_time = start.elapsed();
    let show_tail = || tail.iter().cloned().collect::<Vec<_>>().join("\n");
    if let Some(why) = failure {
        bail!(
            "[{}] {why} after {:.0}s; last serial lines:\n{}",
            b.label,
            total_time.as_secs_f64(),
            show_tail()
        );
    }
    if status.is_none()
        && boot_time.is_none()
        && let Some(line) = tail.iter().find(|l| l.starts_with("qemu-system"))
    {
        return Err(EarlyCrash {
            label: b.label.clone(),
            line: line.clone(),
        }
        .into());
    }
    let Some(status) = status else {
        bail!(
            "[{}] qemu exited without the guest's {EXIT:?} marker; last serial lines:\n{}",
            b.label,
            show_tail()
        );
    };
    eprintln!(
        "[{}] guest exited with status {status} after {:.1}s",
        b.label,
        total_time.as_secs_f64()
    );
    Ok(Outcome {
        status,
        lines,
        boot_time: boot_time.unwrap_or(total_time),
        total_time,
    })
}
