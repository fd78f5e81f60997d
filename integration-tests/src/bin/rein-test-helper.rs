//! Small workloads the VM tests run inside a cgroup, exact where busybox is not:
//!
//! - `alloc MIB`: allocate and touch MIB mebibytes, then exit 0 (an OOM kill ends it first).
//! - `write-direct DEVICE MIB`: write MIB mebibytes with O_DIRECT (bypassing the page cache,
//!   so io.max applies to every byte), print the seconds it took.
//! - `udp-echo PORT COUNT SIZE`: send COUNT datagrams of SIZE bytes to 127.0.0.1:PORT and
//!   wait for each echo.
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
        _ => usage(),
    }
}

fn usage() -> ! {
    eprintln!(
        "usage: rein-test-helper alloc MIB | write-direct DEVICE MIB | udp-echo PORT COUNT SIZE"
    );
    std::process::exit(2)
}
