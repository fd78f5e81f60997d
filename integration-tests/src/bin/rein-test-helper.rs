//! Small workloads the VM tests run inside a cgroup, exact where busybox is not:
//!
//! - `alloc MIB`: allocate and touch MIB mebibytes, then exit 0 (an OOM kill ends it first).
//! - `write-direct DEVICE MIB`: write MIB mebibytes with O_DIRECT (bypassing the page cache,
//!   so io.max applies to every byte), print the seconds it took.
//! - `udp-echo PORT COUNT SIZE`: send COUNT datagrams of SIZE bytes to 127.0.0.1:PORT and
//!   wait for each echo.
//! - `bench-summary LABEL LIMIT_MBIT STREAMS IPERF3_JSON PING_OUTPUT [RR_OUTPUT]`: one line
//!   `BENCH {json}` with goodput, retransmits, Jain's fairness index of the streams, and
//!   ping (and rr-client) round trip p50/p99 of a shaping run.
//! - `bench-scrape SOCKET ADDR AGENT_PID CONTAINERS SCRAPES`: grows the agent's tree to
//!   CONTAINERS containers (with CPU and memory limits), then times SCRAPES scrapes of
//!   `http://ADDR/metrics` next to reading the files whose figures it exports directly;
//!   prints one `BENCH {json}` line with latencies, the agent's CPU per scrape, its RSS and
//!   its breakdown of the newest collection (`rein_metrics_collection_*`).
//! - `bench-sched LABEL N`: N pipe round trips between two threads pinned to CPU 0 (two
//!   context switches each) in ten batches, BPF statistics off; then N/4 with them on;
//!   prints one `BENCH {json}` line with the median batch's time per round trip (and the
//!   fastest and slowest) and the runs (per N round trips) and mean run time of rein's
//!   scheduler programs.
//! - `bench-hook SOCKET N`: for runc and crun, N starts (`RUNTIME run` of `true`, to exit and
//!   delete) of each of five bundles in turn: without hooks, with a createRuntime hook that
//!   runs `true` (what any hook costs the runtime), one that runs `rein --version` (rein's
//!   process start), rein's createRuntime hook with limit annotations (the recommended
//!   setup), and that with the poststop hook too; prints one `BENCH {json}` line per runtime
//!   with median and p99 of each.
//! - `churn SOCKET N THREADS`: creates and removes N containers (CPU, memory and egress
//!   limits) through the API from THREADS threads, each creating a batch and removing it;
//!   prints one `BENCH {json}` line with the rates and the count of failed calls.
//! - `api-load SOCKET CLIENTS SECS`: CLIENTS threads list the containers as fast as they can
//!   for SECS seconds, one connection per call; prints one `BENCH {json}` line with calls,
//!   errors and latency p50/p99.
//! - `hold-idle UID TARGET N SECS`: as UID (dropping root), opens N connections to TARGET
//!   (a Unix socket path, or HOST:PORT) and sends nothing; for SECS seconds notes when the
//!   other end closes each; prints one `BENCH {json}` line with the seconds after its
//!   connect at which each was closed (sorted) and how many stayed open.
//! - `scrape-flood ADDR CLIENTS SECS`: CLIENTS threads scrape `http://ADDR/metrics` as fast
//!   as they can for SECS seconds, one connection per scrape; prints one `BENCH {json}` line
//!   with answered and refused scrapes and the answer times.
//! - `private-mounts -- CMD...`: enters a mount namespace of its own (private propagation)
//!   without the bpffs at /sys/fs/bpf, as a pod without the node's bpffs has, and execs CMD.
//! - `map-keys BPF_DIR`: prints `shaper=N managed=N traffic=N`, the entries of the agent's
//!   pinned shaper, managed and traffic maps.
//! - `udp-txtime ADDR PORT SECS AHEAD_MS`: sends 1400-byte datagrams to ADDR:PORT as fast as
//!   it can for SECS seconds, each stamped with its own departure time `now + AHEAD_MS`
//!   (`SO_TXTIME` with CLOCK_MONOTONIC, which needs no privilege); prints `sent BYTES`.
//! - `udp-sink PORT SECS`: counts the bytes of the datagrams that arrive on PORT for SECS
//!   seconds from the first one; prints `received BYTES`.
//! - `rr-server PORT SECS`: for SECS seconds, echoes every 100-byte request on each TCP
//!   connection to PORT (a thread per connection).
//! - `rr-client ADDR PORT COUNT INTERVAL_MS`: over one TCP connection (no Nagle), COUNT
//!   times sends a 100-byte request and waits for its echo, INTERVAL_MS apart, for at most
//!   COUNT * INTERVAL_MS in all: a sparse request/response flow; prints `RR {json}` with the
//!   round trips' p50, p90, p99 and max in ms.
//! - `sparse-senders ADDR PORT SOCKETS SECS`: SOCKETS UDP sockets take turns sending one
//!   1000-byte datagram each to ADDR:PORT, 5000 datagrams a second in all (each socket a
//!   little, together 40 Mbit/s), for SECS seconds; prints `sent BYTES`.
//! - `nest DEPTH [--cgroupns] -- CMD...`: makes DEPTH nested child cgroups below its own,
//!   moves itself into the deepest (and into a new cgroup namespace with `--cgroupns`), then
//!   execs CMD: a process that escapes into cgroups of its own, as nested runtimes do.
//! - `datapath-cost REPEAT`: loads rein's programs on private maps and, from a process at
//!   depth 1 to 4 below a managed cgroup, times the egress programs per packet with
//!   BPF_PROG_TEST_RUN (REPEAT runs each), next to the flat program (the socket's own cgroup
//!   only, as egress was before chains); one `BENCH {json}` line per depth.
//! - `nested-churn DIR N`: N times, makes a cgroup under DIR, runs a process in it that sends
//!   one UDP datagram to 127.0.0.1:9, and removes the cgroup again.
//! - `bench-set SOCKET NAME N`: N `rein set`-equivalent API calls (PATCH of cpus, one
//!   connection each, as the CLI makes them), their pieces (a 404, a GET of the container
//!   and of the list), the same PATCH and 404 on one kept-alive connection, and N direct
//!   writes of the same value to the container's cpu.max; prints median and p99 of each in
//!   microseconds.
//! - `link-prog PIN`: prints the name of the program the link pinned at PIN runs;
//!   `link-cgroup PIN` the id of the cgroup it is attached to.
//! - `older-link PIN`: switches the egress link pinned at PIN to the flat program (egress
//!   as an older rein had it, on maps of its own), as an older agent would have left it.
//! - `pin-array PATH ENTRIES`: pins a new per-CPU array of ENTRIES u64 at PATH (a map of a
//!   layout an older rein might have pinned); `map-entries PATH` prints a pinned map's
//!   capacity.
#![allow(
    clippy::unwrap_used,
    reason = "a test workload: a panic is its failure report"
)]

use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _, time::Instant};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize| -> usize {
        args.get(i)
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| usage())
    };
    match args.first().map(String::as_str) {
        Some("alloc") => {
            let mut v: Vec<u8> = Vec::with_capacity(num(1) << 20);
            // Touch every page so the memory is really charged.
            v.resize(num(1) << 20, 1);
            println!("allocated {} MiB", v.len() >> 20);
        }
        Some("write-direct") => {
            let dev = args.get(1).unwrap_or_else(|| usage());
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_DIRECT)
                .open(dev)
                .unwrap_or_else(|e| panic!("open {dev}: {e}"));
            // O_DIRECT needs an aligned buffer: allocate with 4096-byte alignment.
            const CHUNK: usize = 64 << 10;
            let layout = std::alloc::Layout::from_size_align(CHUNK, 4096).unwrap();
            // SAFETY: the layout has a non-zero size; the buffer is freed below.
            let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
            assert!(!ptr.is_null());
            // SAFETY: ptr points to CHUNK initialised (zeroed) bytes owned by this function.
            let buf = unsafe { std::slice::from_raw_parts(ptr, CHUNK) };
            let t = Instant::now();
            for _ in 0..(num(2) << 20) / CHUNK {
                f.write_all(buf).unwrap();
            }
            println!("{:.3}", t.elapsed().as_secs_f64());
            // SAFETY: allocated above with the same layout, no longer borrowed.
            unsafe { std::alloc::dealloc(ptr, layout) };
        }
        Some("udp-echo") => {
            let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            sock.set_read_timeout(Some(std::time::Duration::from_secs(5)))
                .unwrap();
            let payload = vec![7u8; num(3)];
            let mut back = vec![0u8; num(3) + 1];
            for _ in 0..num(2) {
                sock.send_to(&payload, ("127.0.0.1", u16::try_from(num(1)).unwrap()))
                    .unwrap();
                let n = sock.recv(&mut back).unwrap();
                assert_eq!(n, payload.len());
            }
        }
        Some("bench-summary") => bench_summary(&args),
        Some("bench-scrape") => bench_scrape(&args),
        Some("bench-sched") => bench_sched(args.get(1).unwrap_or_else(|| usage()), num(2)),
        Some("map-keys") => {
            let dir = std::path::Path::new(args.get(1).unwrap_or_else(|| usage()));
            println!(
                "shaper={} managed={} traffic={}",
                integration_tests::shaper_keys(dir).len(),
                integration_tests::pinned_keys::<u8>(&dir.join("REIN_MANAGED")).len(),
                integration_tests::traffic_keys(dir).len()
            );
        }
        Some("churn") => churn(args.get(1).unwrap_or_else(|| usage()), num(2), num(3)),
        Some("private-mounts") => {
            use std::os::unix::process::CommandExt as _;
            let cmd = args
                .get(2..)
                .filter(|c| !c.is_empty())
                .unwrap_or_else(|| usage());
            let none = std::ffi::CString::new("none").unwrap();
            let root = std::ffi::CString::new("/").unwrap();
            let bpf = std::ffi::CString::new("/sys/fs/bpf").unwrap();
            // SAFETY: plain syscalls with valid NUL-terminated strings; the mount namespace
            // is this process's own once unshare returns, so nothing outside it changes.
            unsafe {
                assert_eq!(libc::unshare(libc::CLONE_NEWNS), 0, "unshare");
                let private = libc::MS_REC | libc::MS_PRIVATE;
                let rc = libc::mount(
                    none.as_ptr(),
                    root.as_ptr(),
                    std::ptr::null(),
                    private,
                    std::ptr::null(),
                );
                assert_eq!(rc, 0, "making mounts private");
                // Every bpffs stacked there, so none is left to find.
                while libc::umount2(bpf.as_ptr(), libc::MNT_DETACH) == 0 {}
            }
            let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
            assert!(
                !mounts
                    .lines()
                    .any(|l| l.split(' ').nth(4) == Some("/sys/fs/bpf")),
                "/sys/fs/bpf is still mounted here:\n{mounts}"
            );
            let err = std::process::Command::new(&cmd[0]).args(&cmd[1..]).exec();
            panic!("exec {cmd:?}: {err}");
        }
        Some("hold-idle") => hold_idle(
            u32::try_from(num(1)).unwrap(),
            args.get(2).unwrap_or_else(|| usage()),
            num(3),
            num(4),
        ),
        Some("scrape-flood") => {
            scrape_flood(args.get(1).unwrap_or_else(|| usage()), num(2), num(3));
        }
        Some("api-load") => api_load(args.get(1).unwrap_or_else(|| usage()), num(2), num(3)),
        Some("bench-hook") => bench_hook(args.get(1).unwrap_or_else(|| usage()), num(2)),
        Some("bench-set") => {
            let socket = args.get(1).unwrap_or_else(|| usage());
            let name = args.get(2).unwrap_or_else(|| usage());
            let n = num(3);
            let cpu_max = format!("/sys/fs/cgroup/rein.slice/{name}/cpu.max");
            let api = timed(n, |i| api_set(socket, name, i));
            // The pieces: a request the router answers 404 (connection, HTTP, routing), and
            // reading the container back (what the answer to a change costs).
            let floor = timed(n, |_| {
                api_call(socket, "GET", "/v1/nothing", "", "404");
            });
            let get = timed(n, |_| {
                api_call(socket, "GET", &format!("/v1/containers/{name}"), "", "200");
            });
            // Reading every container's limits back, on the runtime's own thread (what the
            // answer to a change reads, without the blocking pool's hand-off).
            let list = timed(n, |_| {
                api_call(socket, "GET", "/v1/containers", "", "200");
            });
            // The same on one kept-alive connection, as a long-running client would call.
            let mut conn = KeepAlive::connect(socket);
            let set_ka = timed(n, |i| {
                let body = format!("{{\"limits\":{{\"cpus\":\"{}m\"}}}}", quota(i) / 100);
                conn.call("PATCH", &format!("/v1/containers/{name}"), &body, 200);
            });
            let floor_ka = timed(n, |_| conn.call("GET", "/v1/nothing", "", 404));
            let file = timed(n, |i| {
                std::fs::write(&cpu_max, format!("{} 100000", quota(i))).unwrap();
            });
            // The CLI end to end (process start included), on a tenth as many calls.
            let cli = timed((n / 10).max(1), |i| {
                let ok = std::process::Command::new("rein")
                    .args(["--socket", socket, "set", name, "--cpus"])
                    .arg(format!("{}m", quota(i) / 100))
                    .stdout(std::process::Stdio::null())
                    .status()
                    .unwrap()
                    .success();
                assert!(ok);
            });
            // The same write from a shell loop, as an operator would script it.
            let t = Instant::now();
            let ok = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "i=0; while [ $i -lt {n} ]; do echo \"$((50000 + i % 2 * 10000)) 100000\" > \
                     {cpu_max}; i=$((i+1)); done"
                ))
                .status()
                .unwrap()
                .success();
            assert!(ok);
            let shell = t.elapsed().as_micros() / n as u128;
            println!("bench api_set_us median={} p99={}", api.0, api.1);
            println!("bench api_404_us median={} p99={}", floor.0, floor.1);
            println!("bench api_get_us median={} p99={}", get.0, get.1);
            println!("bench api_list_us median={} p99={}", list.0, list.1);
            println!("bench api_set_ka_us median={} p99={}", set_ka.0, set_ka.1);
            println!(
                "bench api_404_ka_us median={} p99={}",
                floor_ka.0, floor_ka.1
            );
            println!("bench cli_set_us median={} p99={}", cli.0, cli.1);
            println!("bench file_write_us median={} p99={}", file.0, file.1);
            println!("bench shell_write_us mean={shell}");
        }
        Some("udp-echo-once") => {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            s.send_to(b"x", "127.0.0.1:9").unwrap();
        }
        Some("udp-txtime") => udp_txtime(
            args.get(1).unwrap_or_else(|| usage()),
            num(2),
            num(3),
            num(4),
        ),
        Some("udp-sink") => udp_sink(num(1), num(2)),
        Some("rr-server") => rr_server(num(1), num(2)),
        Some("rr-client") => rr_client(
            args.get(1).unwrap_or_else(|| usage()),
            num(2),
            num(3),
            num(4),
        ),
        Some("sparse-senders") => sparse_senders(
            args.get(1).unwrap_or_else(|| usage()),
            num(2),
            num(3),
            num(4),
        ),
        Some("nest") => nest(num(1), &args[2..]),
        Some("datapath-cost") => datapath_cost(num(1)),
        Some("nested-churn") => nested_churn(args.get(1).unwrap_or_else(|| usage()), num(2)),
        Some("link-prog") => {
            let pin = args.get(1).unwrap_or_else(|| usage());
            let link = aya::programs::links::FdLink::from(
                aya::programs::links::PinnedLink::from_pin(pin).unwrap(),
            );
            let id = link.info().unwrap().program_id();
            let prog = aya::programs::loaded_programs()
                .flatten()
                .find(|p| p.id() == id)
                .unwrap();
            println!("{}", prog.name_as_str().unwrap_or("?"));
        }
        Some("link-cgroup") => {
            let pin = args.get(1).unwrap_or_else(|| usage());
            let id = controller::net::programs::linked_cgroup(std::path::Path::new(pin)).unwrap();
            println!("{}", id.expect("a cgroup link"));
        }
        Some("older-link") => {
            let pin = args.get(1).unwrap_or_else(|| usage());
            let mut dp = controller::net::programs::Datapath::load().unwrap();
            dp.switch_link(
                std::path::Path::new(pin),
                controller::net::programs::PROG_BENCH_FLAT,
            )
            .unwrap();
            // The link keeps the program; this process's maps live on through it.
        }
        Some("pin-array") => pin_array(args.get(1).unwrap_or_else(|| usage()), num(2)),
        Some("map-entries") => {
            let pin = args.get(1).unwrap_or_else(|| usage());
            let map = aya::maps::MapData::from_pin(pin).unwrap();
            println!("{}", map.info().unwrap().max_entries());
        }
        _ => usage(),
    }
}

/// `SO_TXTIME` (include/uapi/asm-generic/socket.h); libc has the constant on glibc only.
const SO_TXTIME: libc::c_int = 61;

/// `struct sock_txtime` (include/uapi/linux/net_tstamp.h).
#[repr(C)]
struct SockTxtime {
    clockid: libc::clockid_t,
    flags: u32,
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid out parameter.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn udp_txtime(addr: &str, port: usize, secs: usize, ahead_ms: usize) {
    use std::os::fd::AsRawFd as _;
    let sock = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    sock.connect((addr, u16::try_from(port).unwrap())).unwrap();
    let fd = sock.as_raw_fd();
    let opt = SockTxtime {
        clockid: libc::CLOCK_MONOTONIC,
        flags: 0,
    };
    // SAFETY: a valid socket and a pointer to a live struct of the given size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            SO_TXTIME,
            (&opt as *const SockTxtime).cast(),
            std::mem::size_of::<SockTxtime>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_TXTIME: {}", std::io::Error::last_os_error());
    let payload = [0x5au8; 1400];
    let mut sent = 0u64;
    let end = Instant::now() + std::time::Duration::from_secs(secs as u64);
    while Instant::now() < end {
        let when = monotonic_ns() + ahead_ms as u64 * 1_000_000;
        let mut iov = libc::iovec {
            iov_base: payload.as_ptr() as *mut libc::c_void,
            iov_len: payload.len(),
        };
        // One cmsg carrying the u64 departure time.
        // SAFETY: CMSG_SPACE only computes a size.
        let space = unsafe { libc::CMSG_SPACE(8) } as usize;
        let mut control = vec![0u8; space];
        // SAFETY: zeroed msghdr is valid; its pointers are set below to live buffers.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: msg_control points to `space` bytes, enough for one 8-byte cmsg.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = SO_TXTIME;
            (*c).cmsg_len = libc::CMSG_LEN(8) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u64>(), when);
        }
        // SAFETY: msg and everything it points to live across the call.
        let n = unsafe { libc::sendmsg(fd, &msg, 0) };
        if n > 0 {
            sent += n as u64;
        }
    }
    println!("sent {sent}");
}

fn udp_sink(port: usize, secs: usize) {
    let sock = std::net::UdpSocket::bind(("0.0.0.0", u16::try_from(port).unwrap())).unwrap();
    // Nothing may arrive at all (a qdisc dropping what is stamped too far ahead).
    sock.set_read_timeout(Some(std::time::Duration::from_secs(8)))
        .unwrap();
    let mut buf = [0u8; 65536];
    let mut received = 0u64;
    let mut end = None;
    loop {
        if let Some(end) = end
            && Instant::now() >= end
        {
            break;
        }
        match sock.recv(&mut buf) {
            Ok(n) => {
                received += n as u64;
                end.get_or_insert(Instant::now() + std::time::Duration::from_secs(secs as u64));
                if let Some(e) = end {
                    let left = e.saturating_duration_since(Instant::now());
                    let _ =
                        sock.set_read_timeout(Some(left.max(std::time::Duration::from_millis(1))));
                }
            }
            Err(_) if end.is_some() => continue,
            Err(_) => break,
        }
    }
    println!("received {received}");
}

fn rr_server(port: usize, secs: usize) {
    use std::io::Read as _;
    let listener = std::net::TcpListener::bind(("0.0.0.0", u16::try_from(port).unwrap())).unwrap();
    listener.set_nonblocking(true).unwrap();
    let end = Instant::now() + std::time::Duration::from_secs(secs as u64);
    while Instant::now() < end {
        match listener.accept() {
            Ok((mut conn, _)) => {
                conn.set_nonblocking(false).unwrap();
                conn.set_nodelay(true).unwrap();
                conn.set_read_timeout(Some(std::time::Duration::from_secs(secs as u64)))
                    .unwrap();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 100];
                    while conn.read_exact(&mut buf).is_ok() && conn.write_all(&buf).is_ok() {}
                });
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
        }
    }
}

fn rr_client(addr: &str, port: usize, count: usize, interval_ms: usize) {
    use std::io::Read as _;
    let target = (addr, u16::try_from(port).unwrap());
    // The server may still be starting: try for a few seconds.
    let mut conn = (0..50)
        .find_map(|_| {
            std::net::TcpStream::connect(target)
                .inspect_err(|_| std::thread::sleep(std::time::Duration::from_millis(100)))
                .ok()
        })
        .unwrap_or_else(|| panic!("connect {addr}:{port}"));
    conn.set_nodelay(true).unwrap();
    conn.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let mut rtts = Vec::with_capacity(count);
    let mut buf = [7u8; 100];
    // At most as long as COUNT requests take on an idle path: behind a queue of seconds, the
    // rest of the samples would come from an idle link after the load ended.
    let deadline = Instant::now() + std::time::Duration::from_millis((count * interval_ms) as u64);
    for _ in 0..count {
        if Instant::now() >= deadline && !rtts.is_empty() {
            break;
        }
        let t = Instant::now();
        conn.write_all(&buf).unwrap();
        conn.read_exact(&mut buf).unwrap();
        rtts.push(t.elapsed().as_secs_f64() * 1e3);
        std::thread::sleep(std::time::Duration::from_millis(interval_ms as u64));
    }
    rtts.sort_by(f64::total_cmp);
    let pct = |p: usize| integration_tests::percentile(&rtts, p);
    let out = serde_json::json!({
        "samples": rtts.len(),
        "p50_ms": pct(50),
        "p90_ms": pct(90),
        "p99_ms": pct(99),
        "max_ms": rtts.last(),
    });
    println!("RR {out}");
}

fn sparse_senders(addr: &str, port: usize, sockets: usize, secs: usize) {
    let target = (addr, u16::try_from(port).unwrap());
    let socks: Vec<std::net::UdpSocket> = (0..sockets)
        .map(|_| std::net::UdpSocket::bind("0.0.0.0:0").unwrap())
        .collect();
    let payload = [1u8; 1000];
    let start = Instant::now();
    let gap = std::time::Duration::from_micros(200);
    let mut sent = 0u64;
    let mut i = 0u32;
    while start.elapsed() < std::time::Duration::from_secs(secs as u64) {
        let due = start + gap * i;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        // A datagram the shaper drops beyond its horizon is an error for none but itself.
        if let Ok(n) = socks[i as usize % sockets].send_to(&payload, target) {
            sent += n as u64;
        }
        i += 1;
    }
    println!("sent {sent}");
}

/// This process's cgroup directory (cgroup2 mounted at /sys/fs/cgroup in the VM).
fn own_cgroup() -> std::path::PathBuf {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let rel = own.lines().find_map(|l| l.strip_prefix("0::")).unwrap();
    std::path::Path::new("/sys/fs/cgroup").join(rel.trim_start_matches('/'))
}

fn nest(depth: usize, rest: &[String]) {
    use std::os::unix::process::CommandExt as _;
    let (cgroupns, cmd) = match rest {
        [flag, dashes, cmd @ ..] if flag == "--cgroupns" && dashes == "--" => (true, cmd),
        [dashes, cmd @ ..] if dashes == "--" => (false, cmd),
        _ => usage(),
    };
    let mut dir = own_cgroup();
    for i in 0..depth {
        dir = dir.join(format!("nest{i}"));
        std::fs::create_dir_all(&dir).unwrap();
    }
    std::fs::write(dir.join("cgroup.procs"), std::process::id().to_string()).unwrap();
    if cgroupns {
        // SAFETY: unshare(2) with a flag only.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWCGROUP) };
        assert_eq!(rc, 0, "unshare: {}", std::io::Error::last_os_error());
    }
    let err = std::process::Command::new(&cmd[0]).args(&cmd[1..]).exec();
    panic!("exec {cmd:?}: {err}");
}

fn datapath_cost(repeat: usize) {
    use controller::net::programs::{Datapath, PROG_BENCH_FLAT};
    use std::os::unix::fs::MetadataExt as _;
    let repeat = u32::try_from(repeat).unwrap();
    let top = std::path::Path::new("/sys/fs/cgroup/rein-cost");
    let _ = std::fs::create_dir(top);
    let mut dirs = vec![top.join("c")];
    for i in 1..4 {
        dirs.push(dirs[i - 1].join(format!("d{i}")));
    }
    for d in &dirs {
        let _ = std::fs::create_dir(d);
    }
    let mut dp = Datapath::load().unwrap();
    let managed = std::fs::metadata(&dirs[0]).unwrap().ino();
    dp.manage(managed).unwrap();
    // A rate no test packet waits for: the shaping path runs in full, nothing is delayed.
    let cfg = controller_common::ShaperConfig {
        rate_bytes_per_sec: 100_000_000_000,
        burst_ns: 2_000_000,
        mark_ns: 4_000_000,
        horizon_ns: 40_000_000,
        skb_priority: 0,
        flags: 0,
    };
    let shaped = |dp: &mut Datapath, id: u64| dp.set_shaping(id, cfg).unwrap();
    shaped(&mut dp, managed);
    for (depth, dir) in (1..).zip(&dirs) {
        std::fs::write(dir.join("cgroup.procs"), std::process::id().to_string()).unwrap();
        // The flat program keys on the packet's own cgroup: shape that one for it.
        let own = std::fs::metadata(dir).unwrap().ino();
        shaped(&mut dp, own);
        // Warm the chain cache, then measure.
        dp.run_cost(controller_common::PROG_COUNT_EGRESS, 10)
            .unwrap();
        let chain = dp
            .run_cost(controller_common::PROG_COUNT_EGRESS, repeat)
            .unwrap();
        let flat = dp.run_cost(PROG_BENCH_FLAT, repeat).unwrap();
        let ingress = dp
            .run_cost(controller_common::PROG_COUNT_INGRESS, repeat)
            .unwrap();
        println!(
            "BENCH {}",
            serde_json::json!({
                "bench": "datapath", "depth": depth, "egress_ns": chain, "flat_ns": flat,
                "ingress_ns": ingress, "ratio": chain as f64 / flat.max(1) as f64,
            })
        );
        if depth > 1 {
            dp.forget(own).unwrap();
        }
    }
    std::fs::write(
        "/sys/fs/cgroup/cgroup.procs",
        std::process::id().to_string(),
    )
    .unwrap();
    for d in dirs.iter().rev().chain([&top.to_path_buf()]) {
        let _ = std::fs::remove_dir(d);
    }
}

fn nested_churn(dir: &str, n: usize) {
    let dir = std::path::Path::new(dir);
    for i in 0..n {
        let child = dir.join(format!("churn{i}"));
        std::fs::create_dir(&child).unwrap();
        let procs = child.join("cgroup.procs");
        let mut cmd = std::process::Command::new("/proc/self/exe");
        cmd.args(["udp-echo-once"]);
        {
            use std::os::unix::process::CommandExt as _;
            // SAFETY: only open/write/close (async-signal-safe) between fork and exec.
            unsafe {
                cmd.pre_exec(move || std::fs::write(&procs, "0"));
            }
        }
        let status = cmd.status().unwrap();
        assert!(status.success());
        for _ in 0..200 {
            if std::fs::remove_dir(&child).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
    println!("churned {n}");
}

fn bench_summary(args: &[String]) {
    let arg = |i: usize| args.get(i).unwrap_or_else(|| usage()).as_str();
    let iperf: serde_json::Value = std::fs::read_to_string(arg(4))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    let end = &iperf["end"];
    let goodput = end["sum_received"]["bits_per_second"]
        .as_f64()
        .unwrap_or(0.0);
    let retrans = end["sum_sent"]["retransmits"].as_u64().unwrap_or(0);
    let rtts = integration_tests::ping_rtts(&std::fs::read_to_string(arg(5)).unwrap_or_default());
    let pct = |p: usize| integration_tests::percentile(&rtts, p);
    let limit: f64 = arg(2).parse().unwrap_or(0.0);
    let streams = integration_tests::stream_rates(&iperf);
    let jain = integration_tests::jain(&streams);
    // The request/response flow's round trips (`RR {json}` of rr-client), when one ran.
    let rr: serde_json::Value = args
        .get(6)
        .and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|t| {
            t.lines()
                .find_map(|l| serde_json::from_str(l.strip_prefix("RR ")?).ok())
        })
        .unwrap_or_default();
    let out = serde_json::json!({
        "shaper": arg(1),
        "limit_mbit": limit,
        "streams": arg(3).parse::<u32>().unwrap_or(0),
        "goodput_mbit": goodput / 1e6,
        "ratio": if limit > 0.0 { goodput / 1e6 / limit } else { 0.0 },
        "retransmits": retrans,
        "ping_samples": rtts.len(),
        "rtt_p50_ms": pct(50),
        "rtt_p99_ms": pct(99),
        "rr_p50_ms": rr["p50_ms"],
        "rr_p99_ms": rr["p99_ms"],
        "jain": jain,
        "streams_mbit": streams.iter().map(|b| (b / 1e4).round() / 100.0).collect::<Vec<_>>(),
        "iperf_error": iperf["error"],
    });
    println!("BENCH {out}");
}

/// See the module docs.
fn bench_scrape(args: &[String]) {
    let arg = |i: usize| args.get(i).unwrap_or_else(|| usage()).as_str();
    let n = |i: usize| -> usize { arg(i).parse().unwrap_or_else(|_| usage()) };
    let (socket, addr, pid, containers, scrapes) = (arg(1), arg(2), arg(3), n(4), n(5));
    let root = std::path::Path::new("/sys/fs/cgroup/rein.slice");
    for i in 0..containers {
        let name = format!("m{i}");
        if !root.join(&name).exists() {
            api_call(
                socket,
                "POST",
                "/v1/containers",
                &format!(r#"{{"name":"{name}","limits":{{"cpus":"0.5","memory":"64M"}}}}"#),
                "201",
            );
        }
    }
    let cpu_ticks = || -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        // Fields after the command name (which may hold spaces): utime is the 14th field
        // overall, stime the 15th.
        let rest = stat.rsplit_once(") ").unwrap().1;
        let f: Vec<u64> = rest
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        f[11] + f[12]
    };
    let status_kib = |key: &str| -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    let mut body = scrape(addr);
    let ticks0 = cpu_ticks();
    let scrape_us = timed(scrapes, |_| body = scrape(addr));
    let ticks = cpu_ticks() - ticks0;
    // The agent's own account of the newest collection: seconds by phase, files and bytes.
    let collection: serde_json::Map<String, serde_json::Value> = body
        .lines()
        .filter_map(|l| {
            // `seconds_files` (a phase) and `read_files` (a count) apart.
            let (family, rest) = l
                .strip_prefix("rein_metrics_collection_seconds{")
                .map(|r| ("seconds", r))
                .or_else(|| Some(("read", l.strip_prefix("rein_metrics_collection_read{")?)))?;
            let (labels, value) = rest.split_once("} ")?;
            let key = labels.split(',').find_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                matches!(k, "phase" | "unit").then(|| format!("{family}_{}", v.trim_matches('"')))
            })?;
            Some((key, serde_json::json!(value.parse::<f64>().ok()?)))
        })
        .collect();
    // The floor: one process reading exactly the files whose figures the scrape exports
    // (cgroup.procs for container_processes, memory.stat for the working set, ...), directly,
    // without parsing or encoding.
    let files = [
        "cpu.stat",
        "memory.events",
        "io.stat",
        "memory.stat",
        "memory.current",
        "cgroup.procs",
        "pids.current",
        "pids.max",
        "cpu.pressure",
        "memory.pressure",
        "io.pressure",
        "cpu.max",
        "memory.max",
        "memory.high",
    ];
    let read_us = timed(scrapes, |_| {
        for i in 0..containers {
            let dir = root.join(format!("m{i}"));
            for f in files {
                let _ = std::fs::read_to_string(dir.join(f));
            }
        }
    });
    let out = serde_json::json!({
        "containers": containers,
        "scrapes": scrapes,
        "scrape_us_median": scrape_us.0,
        "scrape_us_p99": scrape_us.1,
        "bare_reads_us_median": read_us.0,
        "bare_files_per_container": files.len(),
        "body_bytes": body.len(),
        "collection": collection,
        // USER_HZ is 100 on every Linux architecture rein supports.
        "agent_cpu_ms_per_scrape": ticks as f64 * 10.0 / scrapes as f64,
        "agent_rss_kib": status_kib("VmRSS:"),
        "agent_peak_rss_kib": status_kib("VmHWM:"),
    });
    println!("BENCH {out}");
}

/// See the module docs.
fn bench_sched(label: &str, n: usize) {
    // (runs, run time) of rein's scheduler programs, summed.
    let stats = || -> (u64, u128) {
        aya::programs::loaded_programs()
            .flatten()
            .filter(|p| p.name_as_str().is_some_and(|n| n.starts_with("rein_sched")))
            .fold((0, 0), |(c, t), p| {
                (c + p.run_count(), t + p.run_time().as_nanos())
            })
    };
    // Timed with BPF statistics off, as on a node (they add two clock reads to every program
    // run): ten batches, the median batch.
    let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "0");
    let mut batches: Vec<f64> = (0..10)
        .map(|_| {
            let per = (n / 10).max(1);
            ping_pong_cpu0(per).as_nanos() as f64 / per as f64
        })
        .collect();
    batches.sort_by(f64::total_cmp);
    // Then a quarter as many with statistics on, to count the programs' runs and time them.
    let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "1");
    let (runs0, time0) = stats();
    let counted = (n / 4).max(1);
    ping_pong_cpu0(counted);
    let (runs1, time1) = stats();
    let _ = std::fs::write("/proc/sys/kernel/bpf_stats_enabled", "0");
    let runs = runs1 - runs0;
    let out = serde_json::json!({
        "label": label,
        "roundtrips": n,
        "ns_per_roundtrip": batches[batches.len() / 2],
        "ns_per_roundtrip_min": batches[0],
        "ns_per_roundtrip_max": batches[batches.len() - 1],
        "sched_program_runs": runs as f64 / counted as f64 * n as f64,
        "sched_ns_per_run": if runs > 0 { (time1 - time0) as f64 / runs as f64 } else { 0.0 },
    });
    println!("BENCH {out}");
}

/// `n` pipe round trips between this thread and another, both pinned to CPU 0 (two context
/// switches each); returns the time they took.
fn ping_pong_cpu0(n: usize) -> std::time::Duration {
    let pin_cpu0 = || {
        // SAFETY: a zeroed cpu_set_t is valid; CPU_SET writes within it.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        unsafe { libc::CPU_SET(0, &mut set) };
        // SAFETY: `set` is a valid cpu_set_t of the size passed; 0 is the calling thread.
        unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) };
    };
    let (mut a_rx, mut a_tx) = std::io::pipe().unwrap();
    let (mut b_rx, mut b_tx) = std::io::pipe().unwrap();
    pin_cpu0();
    let echo = std::thread::spawn(move || {
        use std::io::Read as _;
        pin_cpu0();
        let mut byte = [0u8; 1];
        for _ in 0..n {
            a_rx.read_exact(&mut byte).unwrap();
            b_tx.write_all(&byte).unwrap();
        }
    });
    let t = Instant::now();
    let mut byte = [0u8; 1];
    for _ in 0..n {
        use std::io::Read as _;
        a_tx.write_all(&byte).unwrap();
        b_rx.read_exact(&mut byte).unwrap();
    }
    let elapsed = t.elapsed();
    echo.join().unwrap();
    elapsed
}

/// One GET of /metrics over loopback; returns the body.
fn scrape(addr: &str) -> String {
    use std::io::Read as _;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(s, "GET /metrics HTTP/1.0\r\nhost: {addr}\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    assert!(head.contains(" 200 "), "{head}");
    body.to_owned()
}

/// One API request over a fresh connection, checked for `status`.
fn api_call(socket: &str, method: &str, path: &str, body: &str, status: &str) {
    api_call_with(socket, method, path, "", body, status);
}

/// [`api_call`] with more header lines (each ending in CRLF).
fn api_call_with(socket: &str, method: &str, path: &str, headers: &str, body: &str, status: &str) {
    use std::io::Read as _;
    let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nhost: rein\r\ncontent-type: application/json\r\n\
         {headers}content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(
        resp.starts_with(&format!("HTTP/1.1 {status}")),
        "{method} {path}: {resp}"
    );
}

/// One connection kept alive for many calls (HTTP/1.1 keep-alive), as a long-running client
/// holds it.
struct KeepAlive {
    stream: std::io::BufReader<std::os::unix::net::UnixStream>,
}

impl KeepAlive {
    fn connect(socket: &str) -> Self {
        Self {
            stream: std::io::BufReader::new(
                std::os::unix::net::UnixStream::connect(socket).unwrap(),
            ),
        }
    }

    /// One request; reads the whole answer (by its content-length) and checks its status.
    fn call(&mut self, method: &str, path: &str, body: &str, status: u16) {
        use std::io::{BufRead as _, Read as _};
        write!(
            self.stream.get_mut(),
            "{method} {path} HTTP/1.1\r\nhost: rein\r\ncontent-type: application/json\r\n\
             content-length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut line = String::new();
        self.stream.read_line(&mut line).unwrap();
        assert!(
            line.starts_with(&format!("HTTP/1.1 {status}")),
            "{method} {path}: {line}"
        );
        let mut length = 0;
        loop {
            line.clear();
            self.stream.read_line(&mut line).unwrap();
            if line.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().unwrap();
            }
        }
        let mut answer = vec![0; length];
        self.stream.read_exact(&mut answer).unwrap();
    }
}

/// One API call on a fresh connection; returns the status code (0 when the connection
/// failed).
fn call(socket: &str, method: &str, path: &str, body: &str) -> u16 {
    use std::io::Read as _;
    let Ok(mut s) = std::os::unix::net::UnixStream::connect(socket) else {
        return 0;
    };
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: rein\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut resp = String::new();
    if s.write_all(req.as_bytes()).is_err() || s.read_to_string(&mut resp).is_err() {
        return 0;
    }
    resp.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// See the module docs.
fn churn(socket: &str, n: usize, threads: usize) {
    let per = n.div_ceil(threads);
    let t = Instant::now();
    let results: Vec<(usize, std::time::Duration, std::time::Duration)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|k| {
                s.spawn(move || {
                    let names: Vec<String> = (k * per..((k + 1) * per).min(n))
                        .map(|i| format!("churn-{i}"))
                        .collect();
                    let mut failed = 0;
                    let t0 = Instant::now();
                    for name in &names {
                        let body = format!(
                            "{{\"name\":\"{name}\",\"limits\":{{\"cpus\":\"0.5\",                             \"memory\":\"64M\",\"egress\":\"10mbit\"}}}}"
                        );
                        failed += usize::from(call(socket, "POST", "/v1/containers", &body) != 201);
                    }
                    let created = t0.elapsed();
                    let t1 = Instant::now();
                    for name in &names {
                        let path = format!("/v1/containers/{name}");
                        failed += usize::from(call(socket, "DELETE", &path, "") != 204);
                    }
                    (failed, created, t1.elapsed())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let failed: usize = results.iter().map(|r| r.0).sum();
    let create_s = results
        .iter()
        .map(|r| r.1)
        .max()
        .unwrap_or_default()
        .as_secs_f64();
    let remove_s = results
        .iter()
        .map(|r| r.2)
        .max()
        .unwrap_or_default()
        .as_secs_f64();
    let total = t.elapsed().as_secs_f64();
    let (direct_create_s, direct_remove_s) = direct_churn(n, threads);
    println!(
        "BENCH {}",
        serde_json::json!({
            "containers": n,
            "threads": threads,
            "failed_calls": failed,
            "creates_per_sec": n as f64 / create_s,
            "removes_per_sec": n as f64 / remove_s,
            "direct_creates_per_sec": n as f64 / direct_create_s,
            "direct_removes_per_sec": n as f64 / direct_remove_s,
            "total_secs": total,
        })
    );
}

/// The floor for [`churn`]: the same cgroups made and removed with plain mkdir, two file
/// writes (cpu.max, memory.max) and rmdir, from as many threads; returns the seconds the
/// slowest thread took for each half.
fn direct_churn(n: usize, threads: usize) -> (f64, f64) {
    let parent = std::path::Path::new("/sys/fs/cgroup/rein-direct-churn");
    let _ = std::fs::create_dir(parent);
    std::fs::write(parent.join("cgroup.subtree_control"), "+cpu +memory").unwrap();
    let per = n.div_ceil(threads);
    let times: Vec<(f64, f64)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|k| {
                s.spawn(move || {
                    let dirs: Vec<_> = (k * per..((k + 1) * per).min(n))
                        .map(|i| parent.join(format!("d{i}")))
                        .collect();
                    let t0 = Instant::now();
                    for d in &dirs {
                        std::fs::create_dir(d).unwrap();
                        std::fs::write(d.join("cpu.max"), "50000 100000").unwrap();
                        std::fs::write(d.join("memory.max"), "67108864").unwrap();
                    }
                    let created = t0.elapsed().as_secs_f64();
                    let t1 = Instant::now();
                    for d in &dirs {
                        std::fs::remove_dir(d).unwrap();
                    }
                    (created, t1.elapsed().as_secs_f64())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let _ = std::fs::remove_dir(parent);
    (
        times.iter().map(|t| t.0).fold(0.0, f64::max),
        times.iter().map(|t| t.1).fold(0.0, f64::max),
    )
}

/// See the module docs.
fn api_load(socket: &str, clients: usize, secs: usize) {
    let load = Load::run(clients, secs, std::time::Duration::ZERO, || {
        call(socket, "GET", "/v1/containers", "") == 200
    });
    println!(
        "BENCH {}",
        serde_json::json!({
            "clients": clients,
            "secs": secs,
            "calls": load.answered.len() + load.failed,
            "errors": load.failed,
            "latency_us_p50": load.quantile(0.5).as_micros(),
            "latency_us_p99": load.quantile(0.99).as_micros(),
        })
    );
}

/// CLIENTS threads each making calls back to back for SECS seconds.
struct Load {
    /// The time each successful call took, sorted.
    answered: Vec<std::time::Duration>,
    failed: usize,
}

impl Load {
    /// Runs `call` (true when it succeeded) from `clients` threads for `secs` seconds; a
    /// client whose call failed waits `backoff` before the next.
    fn run(
        clients: usize,
        secs: usize,
        backoff: std::time::Duration,
        call: impl Fn() -> bool + Sync,
    ) -> Self {
        let deadline = Instant::now() + std::time::Duration::from_secs(secs as u64);
        let call = &call;
        let per_client: Vec<(Vec<std::time::Duration>, usize)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..clients)
                .map(|_| {
                    s.spawn(move || {
                        let (mut took, mut failed) = (Vec::new(), 0);
                        while Instant::now() < deadline {
                            let t = Instant::now();
                            if call() {
                                took.push(t.elapsed());
                            } else {
                                failed += 1;
                                std::thread::sleep(backoff);
                            }
                        }
                        (took, failed)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut answered: Vec<_> = per_client
            .iter()
            .flat_map(|c| c.0.iter().copied())
            .collect();
        answered.sort_unstable();
        Self {
            answered,
            failed: per_client.iter().map(|c| c.1).sum(),
        }
    }

    fn quantile(&self, f: f64) -> std::time::Duration {
        let i =
            ((self.answered.len() as f64 * f) as usize).min(self.answered.len().saturating_sub(1));
        self.answered.get(i).copied().unwrap_or_default()
    }
}

/// See the module docs.
fn hold_idle(uid: u32, target: &str, n: usize, secs: usize) {
    use std::io::Read;
    if uid != 0 {
        // SAFETY: plain syscalls on our own credentials, before any thread starts.
        unsafe {
            assert_eq!(libc::setgroups(0, std::ptr::null()), 0);
            assert_eq!(libc::setgid(uid), 0);
            assert_eq!(libc::setuid(uid), 0);
        }
    }
    // Each connection with the moment it was made.
    let mut conns: Vec<(Box<dyn Read + Send>, Instant)> = Vec::new();
    let started = Instant::now();
    let mut failed = 0;
    for _ in 0..n {
        let conn: std::io::Result<Box<dyn Read + Send>> = if target.starts_with('/') {
            std::os::unix::net::UnixStream::connect(target).and_then(|c| {
                c.set_nonblocking(true)?;
                Ok(Box::new(c) as Box<dyn Read + Send>)
            })
        } else {
            std::net::TcpStream::connect(target).and_then(|c| {
                c.set_nonblocking(true)?;
                Ok(Box::new(c) as Box<dyn Read + Send>)
            })
        };
        match conn {
            Ok(c) => conns.push((c, Instant::now())),
            Err(_) => failed += 1,
        }
    }
    let connected = conns.len();
    // How long after its own connect each connection was closed by the other end.
    let mut closed_after: Vec<Option<f64>> = vec![None; connected];
    let deadline = started + std::time::Duration::from_secs(secs as u64);
    let mut buf = [0u8; 512];
    while Instant::now() < deadline && closed_after.iter().any(Option::is_none) {
        for ((c, made), after) in conns.iter_mut().zip(closed_after.iter_mut()) {
            if after.is_some() {
                continue;
            }
            match c.read(&mut buf) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                // An answer (a 408, say) is followed by the close; keep reading to it.
                Ok(n) if n > 0 => {}
                _ => *after = Some(made.elapsed().as_secs_f64()),
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let mut closed: Vec<f64> = closed_after
        .iter()
        .flatten()
        .map(|t| (t * 100.0).round() / 100.0)
        .collect();
    closed.sort_by(f64::total_cmp);
    println!(
        "BENCH {}",
        serde_json::json!({
            "connected": connected,
            "failed_to_connect": failed,
            "closed_after_s": closed,
            "still_open": closed_after.iter().filter(|t| t.is_none()).count(),
        })
    );
}

/// See the module docs.
fn scrape_flood(addr: &str, clients: usize, secs: usize) {
    use std::io::{Read as _, Write as _};
    let scrape = || -> std::io::Result<bool> {
        let mut c = std::net::TcpStream::connect(addr)?;
        c.set_read_timeout(Some(std::time::Duration::from_secs(20)))?;
        c.write_all(b"GET /metrics HTTP/1.1\r\nHost: rein\r\nConnection: close\r\n\r\n")?;
        let mut answer = Vec::new();
        c.read_to_end(&mut answer)?;
        Ok(answer.starts_with(b"HTTP/1.1 200") && answer.ends_with(b"\n"))
    };
    // A refused client backs off a little, as Prometheus would.
    let backoff = std::time::Duration::from_millis(100);
    let load = Load::run(clients, secs, backoff, || scrape().unwrap_or(false));
    println!(
        "BENCH {}",
        serde_json::json!({
            "clients": clients,
            "answered": load.answered.len(),
            "refused": load.failed,
            "answer_ms_p50": load.quantile(0.5).as_millis(),
            "answer_ms_p99": load.quantile(0.99).as_millis(),
            "answer_ms_max": load.quantile(1.0).as_millis(),
        })
    );
}

/// Alternating quotas so every call really changes the file.
fn quota(i: usize) -> u32 {
    if i.is_multiple_of(2) { 50_000 } else { 60_000 }
}

/// See the module docs.
fn bench_hook(socket: &str, n: usize) {
    use integration_tests::OciBundle;
    let socket = std::path::Path::new(socket);
    let true_bin = ["/usr/bin/true", "/bin/true"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap();
    // One createRuntime hook that is not rein's: `path` with `args`.
    let one_hook = |b: &OciBundle, path: &str, args: &[&str]| {
        b.edit(|c| {
            c["hooks"] = serde_json::json!({
                "createRuntime": [{"path": path, "args": args, "timeout": 10}]
            });
        });
    };
    for runtime in ["runc", "crun"] {
        let bundle =
            |variant: &str| OciBundle::new(runtime, &format!("{runtime}-{variant}"), &["true"]);
        let limits = [("rein/memory", "64M"), ("rein/egress", "10mbit")];
        // The pieces of a hooked start, each a bundle of its own, started in turn.
        let plain = bundle("plain");
        let null = bundle("null");
        one_hook(&null, true_bin, &["true"]);
        let exec = bundle("exec");
        one_hook(&exec, "/usr/local/bin/rein", &["rein", "--version"]);
        let hook = bundle("hook");
        hook.annotate(&limits);
        hook.add_rein_create_hook(socket, &[]);
        let both = bundle("both");
        both.annotate(&limits);
        both.add_rein_hooks(socket, &[]);
        let variants = [
            ("plain", &plain),
            ("null_hook", &null),
            ("rein_exec", &exec),
            ("hook", &hook),
            ("hook_and_poststop", &both),
        ];
        let start = |b: &OciBundle| {
            let t = Instant::now();
            let status = b.run_command(false).status().unwrap();
            assert!(status.success(), "{runtime} run {}: {status}", b.id);
            t.elapsed().as_micros()
        };
        // One of each first, untimed: page cache and the agent's first connection.
        for (_, b) in variants {
            start(b);
        }
        let mut times: Vec<Vec<u128>> = vec![Vec::new(); variants.len()];
        for _ in 0..n {
            for (i, (_, b)) in variants.iter().enumerate() {
                times[i].push(start(b));
            }
        }
        let mut out = serde_json::json!({ "runtime": runtime, "starts": n });
        for ((name, _), v) in variants.iter().zip(times) {
            let (median, p99) = median_p99(v);
            out[*name] = serde_json::json!({"median_us": median, "p99_us": p99});
        }
        println!("BENCH {out}");
    }
    bench_registration(socket, n);
}

/// The agent's share of a hooked start: the hook's registration call alone (its request,
/// asking for no answer body as the hook does, on a fresh connection, for a cgroup made
/// with mkdir), timed with no other runtime container registered and with `others`
/// registered, since a registration checks the new cgroup against every registered one.
/// Unregistered (untimed) between calls.
fn bench_registration(socket: &std::path::Path, n: usize) {
    use integration_tests::CgroupGuard;
    const OTHERS: usize = 100;
    let socket = socket.to_str().unwrap();
    let cgroup = |name: &str| CgroupGuard::new(name);
    let register = |g: &CgroupGuard| {
        let name = g.path().file_name().unwrap().to_str().unwrap();
        let body = serde_json::json!({
            "name": name,
            "cgroup": g.path(),
            "limits": {"memory": "64M", "egress": "10mbit"},
        });
        api_call_with(
            socket,
            "POST",
            "/v1/containers",
            "prefer: return=minimal\r\n",
            &body.to_string(),
            "201",
        );
    };
    let unregister = |g: &CgroupGuard| {
        let name = g.path().file_name().unwrap().to_str().unwrap();
        let q = form_urlencoded::Serializer::new(String::new())
            .append_pair("cgroup", &g.path().display().to_string())
            .finish();
        api_call(
            socket,
            "DELETE",
            &format!("/v1/containers/{name}?{q}"),
            "",
            "204",
        );
    };
    let timed_registration = || {
        let g = cgroup("bench-reg");
        let (median, p99) = median_p99(
            (0..n)
                .map(|_| {
                    let t = Instant::now();
                    register(&g);
                    let took = t.elapsed().as_micros();
                    unregister(&g);
                    took
                })
                .collect(),
        );
        serde_json::json!({"median_us": median, "p99_us": p99})
    };
    let alone = timed_registration();
    let others: Vec<CgroupGuard> = (0..OTHERS)
        .map(|i| cgroup(&format!("bench-other-{i}")))
        .collect();
    for o in &others {
        register(o);
    }
    let crowded = timed_registration();
    for o in &others {
        unregister(o);
    }
    println!(
        "BENCH {}",
        serde_json::json!({"registration": {"alone": alone, "others": OTHERS, "with_others": crowded}})
    );
}

/// Median and p99 in microseconds of `n` runs of `f`.
fn timed(n: usize, mut f: impl FnMut(usize)) -> (u128, u128) {
    median_p99(
        (0..n)
            .map(|i| {
                let t = Instant::now();
                f(i);
                t.elapsed().as_micros()
            })
            .collect(),
    )
}

/// The median and p99 of `us` (not empty).
fn median_p99(mut us: Vec<u128>) -> (u128, u128) {
    us.sort_unstable();
    let n = us.len();
    (us[n / 2], us[(n * 99 / 100).min(n - 1)])
}

/// One PATCH /v1/containers/NAME over a fresh connection, checked for 200.
fn api_set(socket: &str, name: &str, i: usize) {
    let body = format!("{{\"limits\":{{\"cpus\":\"{}m\"}}}}", quota(i) / 100);
    api_call(
        socket,
        "PATCH",
        &format!("/v1/containers/{name}"),
        &body,
        "200",
    );
}

fn usage() -> ! {
    eprintln!(
        "usage: rein-test-helper alloc MIB | write-direct DEVICE MIB | udp-echo PORT COUNT SIZE"
    );
    std::process::exit(2)
}

/// Pins a new per-CPU array of `entries` u64 at `path` (BPF_MAP_CREATE, BPF_OBJ_PIN).
fn pin_array(path: &str, entries: usize) {
    #[repr(C)]
    struct Create {
        map_type: u32,
        key_size: u32,
        value_size: u32,
        max_entries: u32,
    }
    #[repr(C)]
    struct Pin {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
    }
    const BPF_MAP_CREATE: libc::c_long = 0;
    const BPF_OBJ_PIN: libc::c_long = 6;
    const BPF_MAP_TYPE_PERCPU_ARRAY: u32 = 6;
    let mut create = Create {
        map_type: BPF_MAP_TYPE_PERCPU_ARRAY,
        key_size: 4,
        value_size: 8,
        max_entries: u32::try_from(entries).unwrap(),
    };
    // SAFETY: a valid prefix of `union bpf_attr` for BPF_MAP_CREATE, alive across the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_CREATE,
            &mut create as *mut Create,
            std::mem::size_of::<Create>(),
        )
    };
    assert!(
        fd >= 0,
        "BPF_MAP_CREATE: {}",
        std::io::Error::last_os_error()
    );
    let c = std::ffi::CString::new(path).unwrap();
    let mut pin = Pin {
        pathname: c.as_ptr() as u64,
        bpf_fd: u32::try_from(fd).unwrap(),
        file_flags: 0,
    };
    // SAFETY: as above, for BPF_OBJ_PIN; `c` outlives the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_PIN,
            &mut pin as *mut Pin,
            std::mem::size_of::<Pin>(),
        )
    };
    assert_eq!(
        rc,
        0,
        "BPF_OBJ_PIN {path}: {}",
        std::io::Error::last_os_error()
    );
}
