//! The embedded eBPF object on the VM's kernel: it loads, attaches to a cgroup, and counts
//! exactly the traffic of that cgroup's sockets.

use std::{net::UdpSocket, process::Command, thread};

use aya::programs::{CgroupAttachMode, CgroupSkbAttachType};
use controller::net::programs::Datapath;
use controller_common::{PROG_COUNT_EGRESS, PROG_COUNT_INGRESS};
use integration_tests::{CgroupGuard, HELPER};

#[test]
fn counting_programs_attach_to_a_cgroup_and_count_its_sockets_exactly() {
    let cg = CgroupGuard::new("ebpf-count");
    let mut counting = Datapath::load().unwrap();
    // The programs count for managed cgroups only (and everything below them).
    counting.manage(cg.id()).unwrap();
    let dir = std::fs::File::open(cg.path()).unwrap();
    counting
        .program(PROG_COUNT_EGRESS)
        .unwrap()
        .attach(&dir, CgroupSkbAttachType::Egress, CgroupAttachMode::Single)
        .unwrap();
    counting
        .program(PROG_COUNT_INGRESS)
        .unwrap()
        .attach(&dir, CgroupSkbAttachType::Ingress, CgroupAttachMode::Single)
        .unwrap();

    // An echo server outside the cgroup; the client inside sends COUNT datagrams.
    const COUNT: usize = 50;
    const SIZE: usize = 1000;
    let server = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port();
    let echo = thread::spawn(move || {
        let mut buf = [0u8; 2048];
        for _ in 0..COUNT {
            let (n, from) = server.recv_from(&mut buf).unwrap();
            server.send_to(&buf[..n], from).unwrap();
        }
    });
    let status = cg
        .spawn(Command::new(HELPER).args([
            "udp-echo",
            &port.to_string(),
            &COUNT.to_string(),
            &SIZE.to_string(),
        ]))
        .wait()
        .unwrap();
    assert!(status.success(), "udp-echo helper failed: {status}");
    echo.join().unwrap();

    let traffic = counting.traffic().unwrap();
    let (_, t) = traffic
        .iter()
        .find(|(id, _)| *id == cg.id())
        .unwrap_or_else(|| panic!("no entry for cgroup id {} in {traffic:?}", cg.id()));
    // skb->len at cgroup_skb is the IP packet: 20 bytes IPv4 + 8 bytes UDP + payload.
    let len = (20 + 8 + SIZE) as u64;
    let n = COUNT as u64;
    assert_eq!(
        (t.tx_packets, t.tx_bytes, t.rx_packets, t.rx_bytes),
        (n, n * len, n, n * len),
        "expected exactly {COUNT} datagrams of {len} bytes each way"
    );
    // The test's own socket is outside the cgroup: its traffic must not be counted at all.
    assert!(
        traffic.iter().all(|(id, _)| *id == cg.id()),
        "foreign cgroups counted: {traffic:?}"
    );
}
