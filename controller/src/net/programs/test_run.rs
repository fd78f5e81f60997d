//! Running the programs on a synthetic packet (BPF_PROG_TEST_RUN): the agent's self-test at
//! start and the per-packet cost `cargo xtask bench datapath` reports.

use super::*;

/// Result of [`Datapath::self_test`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct SelfTest {
    pub packets: u64,
    /// Mean run time of one program invocation as measured by the kernel.
    pub ns_per_packet: u64,
}

impl Datapath {
    /// Mean run time in ns of the program `name` on the self-test packet over `repeat` runs
    /// (BPF_PROG_TEST_RUN, tail calls included), loading it first if needed: for `cargo
    /// xtask bench datapath`, on a datapath whose maps are not the agent's.
    pub fn run_cost(&mut self, name: &'static str, repeat: u32) -> Result<u64, ProgramError> {
        let frame = test_frame();
        let prog = self.program(name)?;
        if prog.fd().is_err() {
            prog.load()
                .map_err(|source| ProgramError::Program { name, source })?;
        }
        let run = prog
            .test_run(TestRunOptions {
                data_in: Some(&frame),
                repeat,
                ..TestRunOptions::new()
            })
            .map_err(|source| ProgramError::Program { name, source })?;
        Ok(u64::try_from(run.duration.as_nanos()).unwrap_or(u64::MAX))
    }

    /// Runs both programs on a synthetic packet with BPF_PROG_TEST_RUN and checks that they
    /// pass it and count it: proof that the object is valid for the running kernel. The
    /// kernel gives the test packet a socket in this process's cgroup, which becomes a
    /// managed cgroup of this datapath (so never call it on the agent's pinned maps).
    pub fn self_test(&mut self, repeat: u32) -> Result<SelfTest, ProgramError> {
        let own = crate::cgroup::own_cgroup_id().ok_or(ProgramError::SelfTest {
            name: PROG_COUNT_EGRESS,
            problem: "this process's cgroup v2 is unknown (no cgroup2 mount?)".into(),
        })?;
        self.manage(own)?;
        let frame = test_frame();
        let before = total(&self.traffic()?);
        let mut ns = Duration::ZERO;
        for name in [PROG_COUNT_EGRESS, PROG_COUNT_INGRESS] {
            let opts = TestRunOptions {
                data_in: Some(&frame),
                repeat,
                ..TestRunOptions::new()
            };
            let run = self
                .program(name)?
                .test_run(opts)
                .map_err(|source| ProgramError::Program { name, source })?;
            if run.return_value != 1 {
                return Err(ProgramError::SelfTest {
                    name,
                    problem: format!("verdict {} instead of 1 (pass)", run.return_value),
                });
            }
            ns += run.duration;
        }
        let after = total(&self.traffic()?);
        let (n, len) = (u64::from(repeat), (frame.len() - ETH_HLEN) as u64);
        let want = Traffic {
            tx_bytes: before.tx_bytes + n * len,
            tx_packets: before.tx_packets + n,
            rx_bytes: before.rx_bytes + n * len,
            rx_packets: before.rx_packets + n,
            ..before
        };
        if after != want {
            return Err(ProgramError::SelfTest {
                name: PROG_COUNT_EGRESS,
                problem: format!("counted {after:?}, expected {want:?}"),
            });
        }
        self.flush_logs();
        let nanos = u64::try_from(ns.as_nanos()).unwrap_or(u64::MAX);
        Ok(SelfTest {
            packets: n,
            ns_per_packet: nanos / 2,
        })
    }
}

const ETH_HLEN: usize = 14;

/// A 1514-byte Ethernet frame carrying an IPv4/UDP packet (the kernel's test runner strips
/// the Ethernet header, so the programs see a 1500-byte `skb->len`).
pub(super) fn test_frame() -> Vec<u8> {
    let mut f = vec![0u8; ETH_HLEN + 1500];
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes()); // ETH_P_IP
    f[14] = 0x45; // IPv4, 20-byte header
    f[16..18].copy_from_slice(&1500u16.to_be_bytes()); // total length
    f[22] = 64; // TTL
    f[23] = 17; // UDP
    f[26..30].copy_from_slice(&[127, 0, 0, 1]);
    f[30..34].copy_from_slice(&[127, 0, 0, 1]);
    f
}
