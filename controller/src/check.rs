//! `rein check`: what this kernel supports, and what will not work without each missing part.
//!
//! Every probe is read-only or self-contained: it reads mount tables and sysfs, loads (but
//! does not attach) rein's programs and test-runs them, queries (but does not change) the
//! cgroup root's attached programs, and tries qdiscs only inside a private throwaway network
//! namespace. It creates no cgroup, pin or mount.

use std::{fmt, os::fd::AsRawFd as _, path::PathBuf};

use aya::util::KernelVersion;
use serde::Serialize;

use crate::net::{programs::Datapath, qdisc};

/// Controllers rein writes limits through.
pub const NEEDED_CONTROLLERS: [&str; 5] = ["cpu", "memory", "io", "pids", "cpuset"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    Missing,
    /// The probe could not decide (for example it needs root).
    Unknown,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `pad` so that table widths such as `{:<8}` apply.
        f.pad(match self {
            Self::Ok => "ok",
            Self::Missing => "missing",
            Self::Unknown => "unknown",
        })
    }
}

/// One line of the report.
#[derive(Debug, Clone, Serialize)]
pub struct Capability {
    pub name: &'static str,
    pub status: Status,
    /// What was found (or the error that was seen).
    pub detail: String,
    /// What does not work while this is missing; empty when the status is ok.
    pub impact: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub capabilities: Vec<Capability>,
}

impl Report {
    pub fn all_ok(&self) -> bool {
        self.capabilities.iter().all(|c| c.status == Status::Ok)
    }

    pub fn get(&self, name: &str) -> Option<&Capability> {
        self.capabilities.iter().find(|c| c.name == name)
    }
}

fn cap(name: &'static str, ok: bool, detail: String, impact: &str) -> Capability {
    Capability {
        name,
        status: if ok { Status::Ok } else { Status::Missing },
        detail,
        impact: if ok { String::new() } else { impact.to_owned() },
    }
}

fn unknown(name: &'static str, detail: String, impact: &str) -> Capability {
    Capability {
        name,
        status: Status::Unknown,
        detail,
        impact: impact.to_owned(),
    }
}

/// A mount from /proc/self/mountinfo: where, and which filesystem type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub point: PathBuf,
    pub fstype: String,
}

/// Parses mountinfo(5) lines; malformed lines are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let point = left.split(' ').nth(4)?;
            let fstype = right.split(' ').next()?;
            // Octal escapes (\040 for space) are kept as written: rein's paths have none.
            Some(Mount {
                point: PathBuf::from(point),
                fstype: fstype.to_owned(),
            })
        })
        .collect()
}

/// Runs every probe against the running kernel.
pub fn run() -> Report {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo")
        .map(|t| parse_mountinfo(&t))
        .unwrap_or_default();
    let mut caps = Vec::new();

    let version = KernelVersion::current();
    caps.push(match &version {
        Ok(v) => cap("kernel", true, format!("Linux {v}"), ""),
        Err(e) => unknown("kernel", format!("cannot read the kernel version: {e}"), ""),
    });
    let at_least = |major, minor| {
        version
            .as_ref()
            .is_ok_and(|v| *v >= KernelVersion::new(major, minor, 0))
    };

    let cgroup2 = mounts
        .iter()
        .find(|m| m.fstype == "cgroup2")
        .map(|m| m.point.clone());
    let hybrid = mounts.iter().any(|m| m.fstype == "cgroup");
    caps.push(match &cgroup2 {
        Some(p) => cap(
            "cgroup v2",
            true,
            format!(
                "mounted at {}{}",
                p.display(),
                if hybrid {
                    " (hybrid: cgroup v1 hierarchies are mounted too)"
                } else {
                    ""
                }
            ),
            "",
        ),
        None => cap(
            "cgroup v2",
            false,
            "no cgroup2 filesystem is mounted".into(),
            "rein cannot create containers or set any limit; mount cgroup2 (unified hierarchy)",
        ),
    });
    caps.push(controllers(cgroup2.as_deref()));

    let btf = std::path::Path::new("/sys/kernel/btf/vmlinux");
    caps.push(match aya::Btf::from_sys_fs() {
        Ok(_) => cap("btf", true, format!("{} parsed", btf.display()), ""),
        Err(e) => cap(
            "btf",
            false,
            format!("{}: {e}", btf.display()),
            "per-container run-queue latency needs kernel struct offsets from BTF",
        ),
    });

    let bpffs = mounts
        .iter()
        .find(|m| m.fstype == "bpf")
        .map(|m| m.point.clone());
    caps.push(match bpffs {
        Some(p) => cap("bpffs", true, format!("mounted at {}", p.display()), ""),
        None => cap(
            "bpffs",
            false,
            "no bpf filesystem is mounted".into(),
            "nothing can be pinned, so shaping would stop when the agent exits; fix with \
             `mount -t bpf bpf /sys/fs/bpf`",
        ),
    });

    let (load, test) = programs();
    caps.push(load);
    caps.push(test);
    caps.push(cgroup_skb_attach(cgroup2.as_deref()));

    caps.push(tc_attach(at_least(6, 6)));
    caps.push(qdisc_cap(
        "sch_fq",
        "fq",
        "no earliest-departure-time pacing: egress limits are policed instead (see the egress \
         shaping line); load the sch_fq module (modprobe sch_fq) to fix",
    ));
    caps.push(egress_mode(&caps));
    caps.push(match crate::net::programs::kernel_offsets() {
        Ok(o) => cap(
            "kernel BTF",
            true,
            format!(
                "/sys/kernel/btf/vmlinux resolves the members the scheduler program reads \
                 (task_struct.sched_info.pcount at {})",
                o.task_sched_pcount
            ),
            "",
        ),
        Err(e) => cap(
            "kernel BTF",
            false,
            e.to_string(),
            "no run-queue latency histograms (the scheduler program reads the kernel's own \
             account of each task's waits, task_struct.sched_info: it needs the kernel's BTF \
             and CONFIG_SCHED_INFO, which CONFIG_SCHEDSTATS or CONFIG_TASK_DELAY_ACCT select); \
             everything else works",
        ),
    });
    caps.push(cap(
        "mono delivery time",
        at_least(5, 18),
        "kernel >= 5.18 keeps skb->tstamp as a delivery time across a netns crossing".into(),
        "departure times set in a container's namespace are cleared when packets cross to the \
         host: pacing happens only on the container's own interface",
    ));
    Report { capabilities: caps }
}

fn controllers(root: Option<&std::path::Path>) -> Capability {
    const NAME: &str = "cgroup controllers";
    let Some(root) = root else {
        return cap(
            NAME,
            false,
            "no cgroup2 mount".into(),
            "no limits can be set",
        );
    };
    let file = root.join("cgroup.controllers");
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) => return unknown(NAME, format!("{}: {e}", file.display()), ""),
    };
    let available: Vec<&str> = text.split_whitespace().collect();
    let missing: Vec<&str> = NEEDED_CONTROLLERS
        .iter()
        .copied()
        .filter(|c| !available.contains(c))
        .collect();
    let detail = format!(
        "available at {}: {}{}",
        root.display(),
        if available.is_empty() {
            "none".to_owned()
        } else {
            available.join(" ")
        },
        if missing.is_empty() {
            String::new()
        } else {
            format!("; missing: {}", missing.join(" "))
        }
    );
    let impact = missing
        .iter()
        .map(|c| match *c {
            "cpu" => "--cpus, --cpu-weight and the CPU part of --priority",
            "memory" => "--memory* and --swap and --oom-group",
            "io" => "--io-weight and --io-max",
            "pids" => "--pids",
            _ => "--cpuset",
        })
        .collect::<Vec<_>>()
        .join("; ");
    cap(
        NAME,
        missing.is_empty(),
        detail,
        &format!(
            "cannot be set here: {impact} (the controllers belong to cgroup v1 on a hybrid \
             host; boot with systemd.unified_cgroup_hierarchy=1)"
        ),
    )
}

fn programs() -> (Capability, Capability) {
    let impact_load = "no eBPF program can run: no egress shaping, no network metrics";
    match Datapath::load() {
        Err(e) => (
            cap(
                "bpf programs",
                false,
                format!("{e}"),
                &format!("{impact_load}; run as root"),
            ),
            unknown(
                "bpf test run",
                "not run: the programs did not load".into(),
                impact_load,
            ),
        ),
        Ok(mut c) => {
            let load = cap(
                "bpf programs",
                true,
                "bpf() syscall works; rein's cgroup_skb programs and maps loaded".into(),
                "",
            );
            let test = match c.self_test(1000) {
                Ok(t) => cap(
                    "bpf test run",
                    true,
                    format!(
                        "BPF_PROG_TEST_RUN: {} packets counted, {} ns per packet",
                        t.packets, t.ns_per_packet
                    ),
                    "",
                ),
                Err(e) => cap(
                    "bpf test run",
                    false,
                    format!("{e}"),
                    "the embedded programs do not behave on this kernel",
                ),
            };
            (load, test)
        }
    }
}

/// Asks the kernel which programs are attached to the cgroup root for inet egress
/// (BPF_PROG_QUERY): a read-only proof that cgroup BPF is enabled (CONFIG_CGROUP_BPF).
fn cgroup_skb_attach(root: Option<&std::path::Path>) -> Capability {
    const NAME: &str = "cgroup_skb attach";
    let impact = "no per-container network accounting, shaping or TCP metrics";
    let Some(root) = root else {
        return cap(NAME, false, "no cgroup2 mount".into(), impact);
    };
    let dir = match std::fs::File::open(root) {
        Ok(f) => f,
        Err(e) => return unknown(NAME, format!("{}: {e}", root.display()), impact),
    };
    /// The prefix of `union bpf_attr` that BPF_PROG_QUERY reads (include/uapi/linux/bpf.h).
    #[repr(C)]
    #[derive(Default)]
    struct QueryAttr {
        target_fd: u32,
        attach_type: u32,
        query_flags: u32,
        attach_flags: u32,
        prog_ids: u64,
        prog_cnt: u32,
        _pad: u32,
    }
    const BPF_PROG_QUERY: libc::c_long = 16;
    const BPF_CGROUP_INET_EGRESS: u32 = 1;
    let mut attr = QueryAttr {
        target_fd: u32::try_from(dir.as_raw_fd()).unwrap_or(u32::MAX),
        attach_type: BPF_CGROUP_INET_EGRESS,
        ..QueryAttr::default()
    };
    // SAFETY: `attr` is a valid, zero-padded prefix of `union bpf_attr` that lives across the
    // call; with prog_ids = 0 the kernel only writes prog_cnt and attach_flags into it.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_QUERY,
            &mut attr as *mut QueryAttr,
            std::mem::size_of::<QueryAttr>(),
        )
    };
    if rc == 0 {
        cap(
            NAME,
            true,
            format!(
                "BPF_PROG_QUERY on {} answered ({} egress programs attached)",
                root.display(),
                attr.prog_cnt
            ),
            "",
        )
    } else {
        let e = std::io::Error::last_os_error();
        cap(
            NAME,
            false,
            format!("BPF_PROG_QUERY on {}: {e}", root.display()),
            impact,
        )
    }
}

/// Which egress shaping mode the agent would use here (with `--egress-mode auto`), from the
/// probes above: rein's programs set departure times and `sch_fq` releases packets on time;
/// without `sch_fq` the same programs police with congestion notification; without the
/// programs `--egress` is refused.
fn egress_mode(caps: &[Capability]) -> Capability {
    let ok = |n: &str| caps.iter().any(|c| c.name == n && c.status == Status::Ok);
    let (progs, fq) = (ok("bpf test run"), ok("sch_fq"));
    match (progs, fq) {
        (true, true) => cap(
            "egress shaping",
            true,
            "edt-fq: rein's cgroup program sets departure times, sch_fq releases them".into(),
            "",
        ),
        (true, false) => cap(
            "egress shaping",
            false,
            "police-cn: no sch_fq to honour departure times, so rein's program polices: \
             packets leave at once, TCP gets congestion notification, excess is dropped"
                .into(),
            "`--egress` holds the average rate, but TCP lands a few percent further from \
             it and ping times through a saturated container are not bounded by pacing; \
             build or load sch_fq (CONFIG_NET_SCH_FQ) for pacing",
        ),
        (false, _) => cap(
            "egress shaping",
            false,
            "refused: rein's eBPF programs do not run here".into(),
            "`--egress` limits are refused by the agent; fix what the lines above report",
        ),
    }
}

/// TC programs attach through TCX links (kernel >= 6.6) or, before that, a clsact qdisc.
fn tc_attach(tcx: bool) -> Capability {
    const NAME: &str = "tc attach";
    if tcx {
        return cap(NAME, true, "TCX links (kernel >= 6.6)".into(), "");
    }
    let mut c = qdisc_cap(
        NAME,
        "clsact",
        "no tc classifier can run here (rein needs none today: its programs attach to cgroups)",
    );
    if c.status == Status::Ok {
        c.detail = format!("clsact qdisc (no TCX before kernel 6.6): {}", c.detail);
    }
    c
}

fn qdisc_cap(name: &'static str, kind: &'static str, impact: &str) -> Capability {
    match qdisc::probe(kind) {
        qdisc::Support::Available => cap(
            name,
            true,
            format!("a {kind} qdisc was created in a private network namespace"),
            "",
        ),
        qdisc::Support::Missing => cap(
            name,
            false,
            format!("the kernel does not know the {kind} qdisc (module not built or not loadable)"),
            impact,
        ),
        qdisc::Support::Unknown(why) => unknown(name, why, impact),
    }
}

impl fmt::Display for Report {
    /// A table: capability, status, then what was found and, if missing, what will not work.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{:<20} {:<8} DETAIL", "CAPABILITY", "STATUS")?;
        for c in &self.capabilities {
            writeln!(f, "{:<20} {:<8} {}", c.name, c.status, c.detail)?;
            if !c.impact.is_empty() {
                writeln!(f, "{:<20} {:<8} -> {}", "", "", c.impact)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_is_parsed() {
        let text = "\
36 25 0:31 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw
37 25 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
garbage line
40 22 0:40 / /sys/fs/bpf rw - bpf bpf rw";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 3);
        assert_eq!(
            m[0],
            Mount {
                point: "/sys/fs/cgroup/unified".into(),
                fstype: "cgroup2".into()
            }
        );
        assert_eq!(m[2].fstype, "bpf");
    }

    #[test]
    fn controllers_names_what_is_missing_and_why_it_matters() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cgroup.controllers"), "hugetlb\n").unwrap();
        let c = controllers(Some(dir.path()));
        assert_eq!(c.status, Status::Missing);
        assert!(
            c.detail
                .ends_with("hugetlb; missing: cpu memory io pids cpuset"),
            "{}",
            c.detail
        );
        assert!(c.impact.contains("--memory*"), "{}", c.impact);
        std::fs::write(
            dir.path().join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        )
        .unwrap();
        assert_eq!(controllers(Some(dir.path())).status, Status::Ok);
    }

    /// The real probes on the machine running the tests (needs root for the BPF parts).
    #[test]
    fn report_on_this_machine_is_complete_and_serialises() {
        let r = run();
        for name in [
            "kernel",
            "cgroup v2",
            "cgroup controllers",
            "btf",
            "bpffs",
            "bpf programs",
            "bpf test run",
            "cgroup_skb attach",
            "tc attach",
            "sch_fq",
            "egress shaping",
            "mono delivery time",
        ] {
            assert!(r.get(name).is_some(), "{name} missing from\n{r}");
        }
        assert_eq!(r.get("bpf test run").unwrap().status, Status::Ok, "\n{r}");
        for c in &r.capabilities {
            assert_eq!(c.status == Status::Ok, c.impact.is_empty(), "{c:?}");
        }
        let json: serde_json::Value = serde_json::to_value(&r).unwrap();
        assert_eq!(
            json["capabilities"].as_array().unwrap().len(),
            r.capabilities.len()
        );
    }
}
