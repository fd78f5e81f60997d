//! Loads every program into the running kernel (root needed) and checks how much work
//! its verification took: the agent loads them at every start, and under emulation a
//! program that explores half a million instructions took seconds (a histogram bucket
//! computed with branches, in a loop over the chain, once did).

/// Instructions the verifier may explore per program, a fifth of its own limit.
const BUDGET: u32 = 200_000;

#[test]
fn every_program_verifies_well_within_the_kernels_limit() {
    let mut ebpf = aya::EbpfLoader::new().load(super::OBJECT).unwrap();
    let mut report = Vec::new();
    let names: Vec<String> = ebpf.programs().map(|(n, _)| n.to_owned()).collect();
    for name in names {
        let prog = ebpf.program_mut(&name).unwrap();
        let loaded = match prog {
            aya::programs::Program::CgroupSkb(p) => p.load().and_then(|()| p.info()),
            aya::programs::Program::RawTracePoint(p) => p.load().and_then(|()| p.info()),
            aya::programs::Program::SockOps(p) => p.load().and_then(|()| p.info()),
            _ => continue,
        };
        let info = loaded.unwrap_or_else(|e| panic!("{name}: {e}"));
        let insns = info.verified_instruction_count().unwrap_or(0);
        report.push(format!("{name} {insns}"));
        assert!(insns < BUDGET, "{name}: {insns} instructions explored");
    }
    eprintln!("verified instructions: {}", report.join(", "));
}
