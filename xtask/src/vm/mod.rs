//! `cargo xtask vm-test` and `cargo xtask vm-run`: boot rein and its tests in a throwaway
//! qemu VM on real Debian kernels.
//!
//! `kernel` fetches and caches the kernels, `initramfs` packs the guest, `qemu` boots it and
//! reads the verdict, `init.sh` is the guest's PID 1. See docs/testing.md, "Writing a VM test".

pub mod engines;
mod initramfs;
pub mod kernel;
pub mod qemu;

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::{Context as _, anyhow, bail};

use self::{initramfs::Initramfs, kernel::Series};
use crate::{cmd::cargo, paths::workspace_root, tally::Tally};

/// Target of the binaries that run in the guest: static, so they need no guest libc.
const GUEST_TARGET: &str = "x86_64-unknown-linux-musl";
/// Kernel modules the tests need (dependencies are added from modules.dep).
const MODULES: &[&str] = &[
    "veth",
    "sch_fq",
    "sch_ingress",
    "cls_bpf",
    "act_bpf",
    "sch_htb",
    "sch_tbf",
    "sch_netem",
    "sch_prio",
    // Podman's and Docker's image layers, and the engines' disk laid over /usr and /etc.
    "overlay",
    "virtio_pci",
    "virtio_blk",
    "virtio_net",
];
/// Host tools copied into the guest with their shared libraries: (guest path, host path).
/// iproute2's ip and tc go to /usr/local/sbin, ahead of busybox's weaker applets on PATH.
const TOOLS: &[(&str, &str)] = &[
    ("/usr/local/sbin/ip", "/sbin/ip"),
    ("/usr/local/sbin/tc", "/sbin/tc"),
    ("/usr/local/bin/iperf3", "/usr/bin/iperf3"),
    ("/usr/local/sbin/runc", "/usr/sbin/runc"),
    ("/usr/local/bin/crun", "/usr/bin/crun"),
    ("/usr/local/bin/promtool", "/usr/bin/promtool"),
    ("/usr/local/bin/prometheus", "/usr/bin/prometheus"),
    // Socket activation as systemd does it, for the package test's rein.socket.
    (
        "/usr/local/bin/systemd-socket-activate",
        "/usr/bin/systemd-socket-activate",
    ),
    // systemd as PID 1 of a container (integration-tests/src/systemd.rs), with util-linux's
    // unshare and nsenter: busybox's know no cgroup namespace.
    ("/usr/local/lib/systemd/systemd", "/lib/systemd/systemd"),
    ("/usr/local/bin/systemctl", "/usr/bin/systemctl"),
    ("/usr/local/bin/unshare", "/usr/bin/unshare"),
    ("/usr/local/bin/nsenter", "/usr/bin/nsenter"),
];
/// Size of each scratch disk (sparse files): /dev/vda and /dev/vdb in the guest.
const DISK_BYTES: u64 = 64 << 20;

#[derive(clap::Args, Clone, Debug)]
pub struct VmArgs {
    /// Kernel series to boot; `all` runs each in turn.
    #[arg(long, default_value = "6.12", value_parser = parse_kernels)]
    pub kernel: KernelChoice,
    /// Give up on a VM (and kill it) after this many seconds.
    #[arg(long, default_value_t = 900)]
    pub timeout: u64,
    /// Guest memory in MiB.
    #[arg(long, default_value_t = 1536)]
    pub memory: u32,
    /// Build the guest binaries with optimisations (as users run them; slower to build).
    #[arg(long)]
    pub release: bool,
    /// Forward this port from 127.0.0.1 on the host into the guest (set by `cargo xtask run`).
    #[arg(skip)]
    pub forward_port: Option<u16>,
}

#[derive(Clone, Debug)]
pub struct KernelChoice(pub Vec<Series>);

fn parse_kernels(s: &str) -> Result<KernelChoice, String> {
    if s == "all" {
        return Ok(KernelChoice(Series::ALL.to_vec()));
    }
    Series::ALL
        .into_iter()
        .find(|k| k.name() == s)
        .map(|k| KernelChoice(vec![k]))
        .ok_or_else(|| format!("unknown kernel {s:?}; accepted: 6.12, 6.1 or all"))
}

/// The guest binaries built for [`GUEST_TARGET`].
struct GuestBinaries {
    rein: PathBuf,
    helper: PathBuf,
    tests: PathBuf,
    /// The Debian package around `rein` (`crate::package`), which the VM suite installs.
    deb: PathBuf,
}

/// Builds rein, the test helper and the VM test binary for the guest, and finds them in
/// cargo's JSON messages (the test binary's name carries a hash).
fn build_guest_binaries(release: bool) -> anyhow::Result<GuestBinaries> {
    eprintln!(
        "== building guest binaries for {GUEST_TARGET} ({})",
        if release { "release" } else { "debug" }
    );
    let profile: &[&str] = if release { &["--release"] } else { &[] };
    // Two invocations: `cargo test` would build `rein` as a test harness, not the binary.
    // Neither selects a crate for testing whose dev-dependencies would change the feature
    // set of `controller`, so both share one build of it (and of its eBPF object).
    let mut artifacts = cargo_artifacts(
        &[
            "build",
            "-p",
            "controller",
            "-p",
            "integration-tests",
            "--bins",
        ]
        .iter()
        .chain(profile)
        .copied()
        .collect::<Vec<_>>(),
    )?;
    artifacts.extend(cargo_artifacts(
        &[
            "test",
            "--no-run",
            "-p",
            "integration-tests",
            "--test",
            "vm",
        ]
        .iter()
        .chain(profile)
        .copied()
        .collect::<Vec<_>>(),
    )?);
    let find = |name: &str, kind: &str| {
        artifacts
            .iter()
            .find(|(n, k, _)| n == name && k == kind)
            .map(|(_, _, p)| p.clone())
            .ok_or_else(|| anyhow!("cargo built no {kind} {name}"))
    };
    let rein = find("rein", "bin")?;
    let deb = crate::package::build(&rein, &workspace_root().join("target").join("vm"))?;
    Ok(GuestBinaries {
        rein,
        helper: find("rein-test-helper", "bin")?,
        tests: find("vm", "test")?,
        deb,
    })
}

/// Runs cargo for the guest target and returns (target name, target kind, executable) of
/// every executable it produced, read from its JSON messages (test binaries carry a hash).
fn cargo_artifacts(args: &[&str]) -> anyhow::Result<Vec<(String, String, PathBuf)>> {
    let out = cargo()
        .args(args)
        .args([
            "--target",
            GUEST_TARGET,
            "--message-format=json-render-diagnostics",
        ])
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo")?;
    if !out.status.success() {
        bail!("cargo {} for {GUEST_TARGET} failed", args.join(" "));
    }
    let mut found = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        if let (Some(exe), Some(name), Some(kind)) = (
            msg["executable"].as_str(),
            msg["target"]["name"].as_str(),
            msg["target"]["kind"][0].as_str(),
        ) {
            found.push((name.to_owned(), kind.to_owned(), PathBuf::from(exe)));
        }
    }
    Ok(found)
}

/// What the guest runs after setup.
enum Payload<'a> {
    /// Those whose names contain one of these (all when empty).
    Tests {
        filters: &'a [String],
    },
    /// These tests (full names) only, once more.
    Rerun(&'a [String]),
    Script(&'a Path),
}

/// Assembles the guest for one kernel and boots it.
fn boot(
    series: Series,
    bins: &GuestBinaries,
    payload: &Payload<'_>,
    args: &VmArgs,
) -> anyhow::Result<qemu::Outcome> {
    boot_with(series, bins, payload, args, qemu::Control::default())
}

/// [`boot`] with a caller watching the serial lines and able to stop the guest.
fn boot_with(
    series: Series,
    bins: &GuestBinaries,
    payload: &Payload<'_>,
    args: &VmArgs,
    control: qemu::Control<'_>,
) -> anyhow::Result<qemu::Outcome> {
    let kernel = kernel::fetch(series)?;
    let label = format!("vm-{}", series.name());
    eprintln!("[{label}] kernel {} ({})", kernel.release, kernel.package);
    let work = workspace_root()
        .join("target")
        .join("vm")
        .join(series.name());
    std::fs::create_dir_all(&work)?;

    let mut img = Initramfs::default();
    img.bytes("/init", include_bytes!("init.sh").to_vec(), 0o755);
    img.file("/bin/busybox", Path::new("/bin/busybox"), 0o755)?;
    // busybox --install needs its applet directories to exist.
    for dir in [
        "/proc",
        "/sys",
        "/dev",
        "/tmp",
        "/run",
        "/root",
        "/etc",
        "/rein",
        "/bin",
        "/sbin",
        "/usr/bin",
        "/usr/sbin",
    ] {
        img.dir(dir);
    }
    img.bytes(
        "/etc/passwd",
        b"root:x:0:0:root:/root:/bin/sh\n".to_vec(),
        0o644,
    );
    img.bytes("/etc/group", b"root:x:0:\n".to_vec(), 0o644);
    for (guest, host) in TOOLS {
        img.executable_with_libs(guest, Path::new(host))?;
    }
    // Debug builds carry ~150 MB of debug info the guest never reads: strip it when packing.
    img.stripped("/usr/local/bin/rein", &bins.rein)?;
    img.stripped(integration_tests_helper_path(), &bins.helper)?;
    img.stripped("/usr/local/bin/rein-vm-tests", &bins.tests)?;
    // The package test installs it (integration-tests/tests/vm/package.rs).
    img.file(integration_tests_deb_path(), &bins.deb, 0o644)?;

    let order = kernel::module_load_order(&kernel, MODULES)?;
    let mut load_order = String::new();
    for m in order.iter() {
        img.bytes(
            &format!("/lib/modules/rein/{}", m.file_name),
            m.data.clone(),
            0o644,
        );
        load_order.push_str(&m.file_name);
        load_order.push('\n');
    }
    img.bytes(
        "/lib/modules/rein/load-order",
        load_order.into_bytes(),
        0o644,
    );

    let cmd = match payload {
        // One thread: tests share the cgroup root and the CPU; the harness prints its summary.
        Payload::Tests { filters } => format!(
            "/usr/local/bin/rein-vm-tests --test-threads=1 --show-output {}\n",
            filters
                .iter()
                .map(|f| shell_quote(f))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        Payload::Rerun(names) => format!(
            "/usr/local/bin/rein-vm-tests --test-threads=1 --show-output --exact {}\n",
            names
                .iter()
                .map(|n| shell_quote(n))
                .collect::<Vec<_>>()
                .join(" ")
        ),
        Payload::Script(path) => {
            img.file("/rein/script.sh", path, 0o755)?;
            "sh /rein/script.sh\n".to_owned()
        }
    };
    img.bytes("/rein/cmd", cmd.into_bytes(), 0o755);
    let initrd = work.join("initramfs.cpio");
    let size = img.write(&initrd)?;
    eprintln!(
        "[{label}] initramfs {} MiB, modules: {}",
        size >> 20,
        order.len()
    );

    let disks = [work.join("vda.img"), work.join("vdb.img")];
    for d in &disks {
        // Fresh, sparse scratch disks for every boot.
        let f = std::fs::File::create(d)?;
        f.set_len(DISK_BYTES)?;
    }
    // The container engines' disk (/dev/vdc); without it only their tests fail, saying why.
    let engines = engines::image();
    if engines.is_none() {
        eprintln!(
            "[{label}] no container engines image: the Podman, Docker and containerd tests \
             will fail (`cargo xtask setup` builds it)"
        );
    }
    let record = work.join("kernel.txt");
    std::fs::write(&record, format!("{}\n{}\n", kernel.package, kernel.release))?;
    qemu::boot(&qemu::Boot {
        label,
        kernel: &kernel.vmlinuz,
        initrd: &initrd,
        disks: disks.iter().map(PathBuf::as_path).collect(),
        readonly_disks: engines.iter().map(PathBuf::as_path).collect(),
        timeout: Duration::from_secs(args.timeout),
        memory_mib: args.memory,
        forward_port: args.forward_port,
        control,
    })
}

fn integration_tests_deb_path() -> &'static str {
    // Must match the path in integration-tests/tests/vm/package.rs.
    "/rein/rein.deb"
}

fn integration_tests_helper_path() -> &'static str {
    // Must match integration_tests::HELPER.
    "/usr/local/bin/rein-test-helper"
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// What a VM test prints (`integration_tests::measures_throughput`) to say that its verdict
/// is a throughput measured in the emulated guest. Two host cores run the whole guest, and
/// now and then a busy host starves it for some seconds. A failed test so marked runs once
/// more in a fresh guest, both verdicts are printed, and it counts as passed only if that
/// run passes: a limit that is really missed fails twice. No other test is retried.
const THROUGHPUT_MARK: &str = "REIN-THROUGHPUT-TEST ";

/// The tests that marked themselves with [`THROUGHPUT_MARK`] in a guest's output.
fn throughput_tests(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .filter_map(|l| Some(l[l.find(THROUGHPUT_MARK)? + THROUGHPUT_MARK.len()..].trim()))
        .map(str::to_owned)
        .collect()
}

/// The failed tests libtest lists at the end of its output (`failures:` then indented names).
fn failed_tests(lines: &[String]) -> Vec<String> {
    let Some(start) = lines.iter().rposition(|l| l.trim() == "failures:") else {
        return Vec::new();
    };
    lines[start + 1..]
        .iter()
        .take_while(|l| !l.starts_with("test result"))
        .filter(|l| l.starts_with("    ") && l.contains("::"))
        .map(|l| l.trim().to_owned())
        .collect()
}

/// Runs the VM suite on each chosen kernel; returns the summed pass/fail counts.
pub fn test(args: &VmArgs, filters: &[String]) -> anyhow::Result<Tally> {
    let bins = build_guest_binaries(args.release)?;
    let mut total = Tally::default();
    let mut failed_kernels = Vec::new();
    for series in &args.kernel.0 {
        let outcome = boot(*series, &bins, &Payload::Tests { filters }, args)?;
        let mut tally = Tally::of_lines(&outcome.lines);
        println!(
            "vm {}: {} passed, {} failed (boot {:.1}s, total {:.1}s)",
            series.name(),
            tally.passed,
            tally.failed,
            outcome.boot_time.as_secs_f64(),
            outcome.total_time.as_secs_f64()
        );
        let failed = failed_tests(&outcome.lines);
        let marked = throughput_tests(&outcome.lines);
        let rerun: Vec<String> = failed
            .iter()
            .filter(|t| marked.contains(t))
            .cloned()
            .collect();
        let mut status_ok = outcome.status == 0;
        if !rerun.is_empty() {
            println!(
                "vm {}: once more in a fresh guest, throughput under emulation: {}",
                series.name(),
                rerun.join(", ")
            );
            let again = boot(*series, &bins, &Payload::Rerun(&rerun), args)?;
            let second = Tally::of_lines(&again.lines);
            println!(
                "vm {}: rerun {} passed, {} failed",
                series.name(),
                second.passed,
                second.failed
            );
            // A rerun test that did not report (it never ran) stays failed.
            let n = rerun.len() as u64;
            let passed = second.passed.min(n);
            tally.failed = tally.failed.saturating_sub(n) + (n - passed);
            tally.passed += passed;
            status_ok |= rerun.len() == failed.len() && again.status == 0 && passed == n;
        }
        if !status_ok || tally.failed > 0 {
            failed_kernels.push(series.name());
        }
        if tally.passed + tally.failed == 0 && outcome.status == 0 {
            bail!(
                "the VM suite on {} ran no test (filters {filters:?})",
                series.name()
            );
        }
        total.passed += tally.passed;
        total.failed += tally.failed;
    }
    if !failed_kernels.is_empty() {
        println!("{} passed, {} failed", total.passed, total.failed);
        bail!("VM tests failed on kernel {}", failed_kernels.join(", "));
    }
    Ok(total)
}

/// Boots the VM once per chosen kernel and runs `script` as root; returns its exit status.
pub fn run_script(args: &VmArgs, script: &Path) -> anyhow::Result<i32> {
    let mut status = 0;
    for (_, outcome) in run_script_outcomes(args, script)? {
        if outcome.status != 0 {
            status = outcome.status;
        }
    }
    Ok(status)
}

/// Like [`run_script`], returning each kernel's full outcome (serial lines included).
pub fn run_script_outcomes(
    args: &VmArgs,
    script: &Path,
) -> anyhow::Result<Vec<(Series, qemu::Outcome)>> {
    if !script.is_file() {
        bail!("script {} not found", script.display());
    }
    let bins = build_guest_binaries(args.release)?;
    args.kernel
        .0
        .iter()
        .map(|series| {
            Ok((
                *series,
                boot(*series, &bins, &Payload::Script(script), args)?,
            ))
        })
        .collect()
}

/// One guest of [`together`]: its kernel, its script and the port forwarded to it.
pub struct Guest<'a> {
    pub series: Series,
    pub script: &'a Path,
    pub forward_port: u16,
}

/// Boots every guest at once (each kernel at most once: they share its work directory),
/// runs `body` on this thread while they run, then stops them. `on_line(i, line)` sees the
/// serial lines of guest `i`. Returns what `body` returned and each guest's outcome.
pub fn together<R>(
    args: &VmArgs,
    guests: &[Guest<'_>],
    on_line: &(dyn Fn(usize, &str) + Sync),
    body: impl FnOnce() -> R,
) -> anyhow::Result<(R, Vec<anyhow::Result<qemu::Outcome>>)> {
    for (i, g) in guests.iter().enumerate() {
        if guests[..i].iter().any(|o| o.series == g.series) {
            bail!(
                "two guests on kernel {}: they would share its work directory",
                g.series.name()
            );
        }
        if !g.script.is_file() {
            bail!("script {} not found", g.script.display());
        }
    }
    let bins = build_guest_binaries(args.release)?;
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (result, outcomes) = std::thread::scope(|scope| {
        let handles: Vec<_> = guests
            .iter()
            .enumerate()
            .map(|(i, g)| {
                let (bins, stop) = (&bins, &stop);
                let args = VmArgs {
                    forward_port: Some(g.forward_port),
                    ..args.clone()
                };
                scope.spawn(move || {
                    let line = move |l: &str| on_line(i, l);
                    boot_with(
                        g.series,
                        bins,
                        &Payload::Script(g.script),
                        &args,
                        qemu::Control {
                            on_line: Some(&line),
                            stop: Some(stop),
                        },
                    )
                })
            })
            .collect();
        let result = body();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let outcomes = handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow!("the thread running a guest panicked")))
            })
            .collect::<Vec<_>>();
        (result, outcomes)
    });
    Ok((result, outcomes))
}

/// Proves the harness's own guarantees on one kernel: a guest that panics, and one that
/// hangs, each make the boot fail (with the last serial lines) within the timeout, and leave
/// no qemu process behind. Returns the pass/fail tally of these two checks.
pub fn self_test(series: Series) -> anyhow::Result<Tally> {
    let bins = build_guest_binaries(false)?;
    let dir = workspace_root().join("target").join("vm");
    std::fs::create_dir_all(&dir)?;
    let cases = [
        (
            "panic",
            "echo c > /proc/sysrq-trigger\nsleep 600\n",
            "the guest kernel died",
            120,
        ),
        ("hang", "sleep 600\n", "timed out", 40),
    ];
    let mut tally = Tally::default();
    for (name, script, expected, timeout) in cases {
        let path = dir.join(format!("self-test-{name}.sh"));
        std::fs::write(&path, script)?;
        let args = VmArgs {
            kernel: KernelChoice(vec![series]),
            timeout,
            memory: 1024,
            release: false,
            forward_port: None,
        };
        let started = std::time::Instant::now();
        let result = boot(series, &bins, &Payload::Script(&path), &args);
        let left = qemu_processes_using(&dir)?;
        let verdict = match &result {
            Ok(o) => Err(format!(
                "the guest exited with status {} instead of failing",
                o.status
            )),
            Err(e) if !format!("{e:#}").contains(expected) => {
                Err(format!("expected an error saying {expected:?}, got: {e:#}"))
            }
            Err(_) if started.elapsed() > Duration::from_secs(timeout + 30) => Err(format!(
                "failing took {:.0}s",
                started.elapsed().as_secs_f64()
            )),
            Err(_) if !left.is_empty() => Err(format!("qemu processes left behind: {left:?}")),
            Err(e) => Ok(format!("{e:#}").lines().count()),
        };
        match verdict {
            Ok(lines) => {
                println!(
                    "test harness::{name}_guest_fails_the_run ... ok ({lines} lines of report)"
                );
                tally.passed += 1;
            }
            Err(why) => {
                println!("test harness::{name}_guest_fails_the_run ... FAILED: {why}");
                tally.failed += 1;
            }
        }
    }
    match guest_stops_with_xtask(series, &dir) {
        Ok(()) => {
            println!("test harness::a_sigterm_to_xtask_alone_stops_its_guest ... ok");
            tally.passed += 1;
        }
        Err(why) => {
            println!("test harness::a_sigterm_to_xtask_alone_stops_its_guest ... FAILED: {why:#}");
            tally.failed += 1;
        }
    }
    Ok(tally)
}

/// A SIGTERM sent to xtask alone (as `timeout` or a service manager sends it, not to the
/// process group) while its guest runs: the guest must stop with it (`qemu.rs` asks the
/// kernel to kill qemu when xtask dies).
fn guest_stops_with_xtask(series: Series, dir: &Path) -> anyhow::Result<()> {
    use std::io::BufRead as _;
    let script = dir.join("self-test-sigterm.sh");
    std::fs::write(&script, "sleep 600\n")?;
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .args([
            "vm-run",
            "--kernel",
            series.name(),
            "--memory",
            "512",
            "--timeout",
            "300",
        ])
        .arg("--script")
        .arg(&script)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting xtask vm-run")?;
    let pid = libc::pid_t::try_from(child.id())?;
    // Its guest's serial lines: SIGTERM once the guest is up (its qemu is then the one this
    // xtask started, found by its parent pid, not any qemu on the machine).
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().context("vm-run's stdout")?;
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let ready = std::time::Instant::now() + Duration::from_secs(300);
    let qemu = loop {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(line) if line.contains("REIN-VM-READY") => {
                if let Some(q) = children_named(pid, "qemu-system")?.first() {
                    break *q;
                }
            }
            Ok(_) | Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                let _ = child.wait();
                bail!("xtask vm-run ended before its guest was ready");
            }
        }
        if std::time::Instant::now() > ready {
            let _ = child.kill();
            let _ = child.wait();
            bail!("xtask vm-run's guest was not ready within 300 s");
        }
    };
    // SAFETY: kill(2) on our own child, not yet reaped.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    child.wait()?;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while process_alive(qemu) {
        if std::time::Instant::now() > deadline {
            bail!("qemu (pid {qemu}) still runs 10 s after its xtask ended");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

/// Pids of the processes whose parent is `parent` and whose command line starts with `name`.
fn children_named(parent: libc::pid_t, name: &str) -> anyhow::Result<Vec<u32>> {
    processes_where(|stat, cmdline| {
        // "pid (comm) state ppid ...": the fields after the last ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<libc::pid_t>().ok());
        ppid == Some(parent) && cmdline.starts_with(name)
    })
}

/// Pids of the processes whose `/proc/PID/stat` and command line `keep` accepts.
fn processes_where(keep: impl Fn(&str, &str) -> bool) -> anyhow::Result<Vec<u32>> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if keep(&stat, &String::from_utf8_lossy(&cmdline)) {
            pids.push(pid);
        }
    }
    Ok(pids)
}

/// Whether `pid` runs (exists and is not a zombie waiting to be reaped).
fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X")
    })
}

/// Pids of running qemu processes whose command line mentions `dir`.
fn qemu_processes_using(dir: &Path) -> anyhow::Result<Vec<u32>> {
    let needle = dir.to_string_lossy().into_owned();
    processes_where(|_, cmdline| cmdline.starts_with("qemu-system") && cmdline.contains(&needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_tests_are_read_from_libtest_final_list() {
        let out: Vec<String> = [
            "failures:",
            "",
            "---- shaping::a stdout ----",
            "a: 0.86",
            "",
            "failures:",
            "    shaping::a",
            "    faults::b",
            "",
            "test result: FAILED. 3 passed; 2 failed; 0 ignored",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(failed_tests(&out), ["shaping::a", "faults::b"]);
        assert!(failed_tests(&["test result: ok. 3 passed".to_owned()]).is_empty());
    }

    #[test]
    fn throughput_tests_are_the_ones_that_marked_themselves() {
        let out: Vec<String> = [
            "  vm-6.12| REIN-THROUGHPUT-TEST shaping::a",
            "REIN-THROUGHPUT-TEST metrics::b",
            "test faults::c ... ok",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(throughput_tests(&out), ["shaping::a", "metrics::b"]);
    }
}
