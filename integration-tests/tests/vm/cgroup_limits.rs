//! The kernel enforces the cgroup v2 files rein writes: cpu.max throttles, memory.max
//! OOM-kills, io.max slows direct writes. These prove the VM's kernel and cgroup setup are
//! what rein's own limit tests rely on.

use std::{
    os::unix::process::ExitStatusExt as _,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use integration_tests::{CgroupGuard, HELPER, device_number};

#[test]
fn cpu_max_throttles_a_busy_loop() {
    let cg = CgroupGuard::new("cpu-max");
    // 0.2 CPU: 20 ms of every 100 ms period.
    cg.write("cpu.max", "20000 100000");
    let wall = Instant::now();
    let mut busy = cg.spawn(Command::new("busybox").args(["sh", "-c", "while :; do :; done"]));
    std::thread::sleep(Duration::from_secs(3));
    busy.kill().unwrap();
    busy.wait().unwrap();
    let wall_us = wall.elapsed().as_micros() as f64;
    let usage = cg.stat("cpu.stat", "usage_usec") as f64;
    let throttled = cg.stat("cpu.stat", "nr_throttled");
    let share = usage / wall_us;
    assert!(
        throttled > 0,
        "expected throttled periods, cpu.stat:\n{}",
        cg.read("cpu.stat")
    );
    assert!(
        share < 0.35,
        "expected about 0.2 CPU, used {share:.2} CPU ({usage} us in {wall_us} us)"
    );
}

/// Runs the helper's 64 MiB allocation inside `cg` and returns how it ended.
fn alloc_64m(cg: &CgroupGuard) -> std::process::ExitStatus {
    let mut cmd = Command::new(HELPER);
    cmd.args(["alloc", "64"]).stdout(Stdio::null());
    cg.spawn(&mut cmd).wait().unwrap()
}

#[test]
fn memory_max_oom_kills_an_allocation_above_it() {
    let cg = CgroupGuard::new("memory-max");
    cg.write("memory.max", "32M");
    cg.write("memory.swap.max", "0");
    let status = alloc_64m(&cg);
    assert_eq!(
        status.signal(),
        Some(libc::SIGKILL),
        "expected an OOM kill, got {status}"
    );
    let kills = cg.stat("memory.events", "oom_kill");
    assert_eq!(kills, 1, "memory.events:\n{}", cg.read("memory.events"));

    // The same allocation under the limit succeeds: the kill was the limit's doing.
    let ok = CgroupGuard::new("memory-max-ok");
    ok.write("memory.max", "128M");
    let status = alloc_64m(&ok);
    assert!(
        status.success(),
        "64 MiB under a 128M limit failed: {status}"
    );
}

fn timed_write(cg: &CgroupGuard, dev: &str, mib: u32) -> f64 {
    let out = cg
        .spawn(
            Command::new(HELPER)
                .args(["write-direct", dev, &mib.to_string()])
                .stdout(Stdio::piped()),
        )
        .wait_with_output()
        .unwrap();
    assert!(out.status.success(), "write-direct failed: {out:?}");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

#[test]
fn io_max_slows_a_direct_write_to_the_configured_rate() {
    const DEV: &str = "/dev/vdb";
    const MIB: u32 = 4;
    const RATE: u64 = 1 << 20; // bytes per second
    let cg = CgroupGuard::new("io-max");
    let free = timed_write(&cg, DEV, MIB);
    cg.write("io.max", &format!("{} wbps={RATE}", device_number(DEV)));
    let limited = timed_write(&cg, DEV, MIB);
    let expected = f64::from(MIB) * f64::from(1 << 20) / RATE as f64;
    // blk-throttle lets the first slice through early, so allow some slack below.
    assert!(
        limited > expected * 0.7 && limited < expected * 2.0,
        "expected about {expected:.1}s at {RATE} B/s, took {limited:.2}s (unlimited: {free:.2}s)"
    );
    assert!(
        free < expected / 4.0,
        "the unlimited write took {free:.2}s: the disk is too slow"
    );
}
