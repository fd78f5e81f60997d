//! Small workloads the VM tests run inside a cgroup, exact where busybox is not:
//!
//! - `alloc MIB`: allocate and touch MIB mebibytes, then exit 0 (an OOM kill ends it first).
//! - `write-direct DEVICE MIB`: write MIB mebibytes with O_DIRECT (bypassing the page cache,
//!   so io.max applies to every byte), print the seconds it took.
//! - `udp-echo PORT COUNT SIZE`: send COUNT datagrams of SIZE bytes to 127.0.0.1:PORT and
//!   wait for each echo.
//! - `bench-summary LABEL LIMIT_MBIT STREAMS IPERF3_JSON PING_OUTPUT`: one line
//!   `BENCH {json}` with goodput, retransmits and ping RTT p50/p99 of a shaping run.
//! - `bench-set SOCKET NAME N`: N `rein set`-equivalent API calls (PATCH of cpus, one
//!   connection each, as the CLI makes them) and N direct writes of the same value to the
//!   container's cpu.max; prints median and p99 of each in microseconds.
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
        Some("bench-set") => {
            let socket = args.get(1).unwrap_or_else(|| usage());
            let name = args.get(2).unwrap_or_else(|| usage());
            let n = num(3);
            let cpu_max = format!("/sys/fs/cgroup/rein.slice/{name}/cpu.max");
            let api = timed(n, |i| api_set(socket, name, i));
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
            println!("bench cli_set_us median={} p99={}", cli.0, cli.1);
            println!("bench file_write_us median={} p99={}", file.0, file.1);
            println!("bench shell_write_us mean={shell}");
        }
        _ => usage(),
    }
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
    let mut rtts: Vec<f64> = std::fs::read_to_string(arg(5))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            l.split("time=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .collect();
    rtts.sort_by(f64::total_cmp);
    let pct = |p: usize| {
        rtts.get((rtts.len() * p / 100).min(rtts.len().saturating_sub(1)))
            .copied()
    };
    let limit: f64 = arg(2).parse().unwrap_or(0.0);
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
        "iperf_error": iperf["error"],
    });
    println!("BENCH {out}");
}

/// Alternating quotas so every call really changes the file.
fn quota(i: usize) -> u32 {
    if i.is_multiple_of(2) { 50_000 } else { 60_000 }
}

/// Median and p99 in microseconds of `n` runs of `f`.
fn timed(n: usize, mut f: impl FnMut(usize)) -> (u128, u128) {
    let mut us: Vec<u128> = (0..n)
        .map(|i| {
            let t = Instant::now();
            f(i);
            t.elapsed().as_micros()
        })
        .collect();
    us.sort_unstable();
    (us[n / 2], us[(n * 99 / 100).min(n - 1)])
}

/// One PATCH /v1/containers/NAME over a fresh connection, checked for 200.
fn api_set(socket: &str, name: &str, i: usize) {
    use std::io::Read as _;
    let body = format!("{{\"limits\":{{\"cpus\":\"{}m\"}}}}", quota(i) / 100);
    let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap();
    write!(
        s,
        "PATCH /v1/containers/{name} HTTP/1.1\r\nhost: rein\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
}

fn usage() -> ! {
    eprintln!(
        "usage: rein-test-helper alloc MIB | write-direct DEVICE MIB | udp-echo PORT COUNT SIZE"
    );
    std::process::exit(2)
}
