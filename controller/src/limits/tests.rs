use proptest::prelude::*;

use super::*;

fn parse(pairs: &[(&str, &str)]) -> Result<Limits, LimitError> {
    Limits::from_named_pairs(pairs.iter().copied())
}

#[test]
fn parses_every_flag_of_the_design_table() {
    let l = parse(&[
        ("cpus", "1.5"),
        ("cpu-weight", "200"),
        ("cpuset", "0-1"),
        ("memory", "256M"),
        ("memory-high", "200Mi"),
        ("memory-low", "64MiB"),
        ("memory-min", "32m"),
        ("swap", "max"),
        ("oom-group", "true"),
        ("pids", "512"),
        ("io-weight", "50"),
        ("io-max", "8:0 rbps=10M wbps=5M riops=1000 wiops=1000"),
        ("io-max", "/dev/vdb wbps=max"),
        ("priority", "high"),
        ("egress", "10mbit"),
        ("egress-burst", "0.5ms"),
        ("ingress", "10M"),
    ])
    .unwrap();
    assert_eq!(values::cpu_max_line(l.cpus.unwrap()), "150000 100000");
    assert_eq!(l.memory, Some(Memory::Bytes(256 << 20)));
    assert_eq!(l.memory_min, Some(Memory::Bytes(32 << 20)));
    assert_eq!(
        l.io_max[0].cgroup_keys(),
        "rbps=10485760 wbps=5242880 riops=1000 wiops=1000"
    );
    assert_eq!(l.io_max[1].cgroup_keys(), "wbps=max");
    assert_eq!(l.egress.unwrap().bytes_per_second(), 1_250_000);
    assert_eq!(l.egress, l.ingress);
    assert_eq!(l.egress_burst.unwrap().ns(), 500_000);
    assert_eq!(
        l.to_string(),
        "--cpus 1.5 --cpu-weight 200 --cpuset 0-1 --memory 256M --memory-high 200M \
         --memory-low 64M --memory-min 32M --swap max --oom-group true --pids 512 \
         --io-weight 50 --io-max '8:0 rbps=10M wbps=5M riops=1000 wiops=1000' \
         --io-max '/dev/vdb wbps=max' --priority high --egress 10mbit --egress-burst 500us --ingress 10mbit"
    );
}

#[test]
fn unit_conversions_match_the_design() {
    let q = |s: &str| s.parse::<Max<CpuQuota>>().map(values::cpu_max_line);
    assert_eq!(q("1500m").unwrap(), "150000 100000");
    assert_eq!(q("0.25").unwrap(), "25000 100000");
    assert_eq!(q("max").unwrap(), "max 100000");
    let m = |s: &str| s.parse::<Memory>().unwrap();
    assert_eq!(m("1K"), Memory::Bytes(1024));
    assert_eq!(m("1Ki"), Memory::Bytes(1024));
    assert_eq!(m("1.5G"), Memory::Bytes(3 << 29));
    assert_eq!(m("2T"), Memory::Bytes(2 << 40));
    assert_eq!(m("1000"), Memory::Bytes(1000));
    let b = |s: &str| s.parse::<Bandwidth>().unwrap().bits_per_second();
    assert_eq!(b("10mbit"), 10_000_000);
    assert_eq!(b("10M"), 10_000_000);
    assert_eq!(b("10Mi"), 10 << 20);
    assert_eq!(b("1.5gbit"), 1_500_000_000);
    assert_eq!(b("500k"), 500_000);
    assert_eq!(b("64000"), 64_000);
    assert_eq!(b("1GBIT"), 1_000_000_000);
    let c = |s: &str| s.parse::<CpuSet>().unwrap().to_string();
    assert_eq!(c("3,0,1,2,7-9,8"), "0-3,7-9");
    assert!(Priority::Idle.cpu_idle());
    assert_eq!(Priority::Critical.skb_priority(), 6);
}

/// Each bad input with the exact error a user sees. Nothing here may panic.
#[test]
fn bad_inputs_are_refused_with_the_flag_value_and_what_is_accepted() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[("cpus", "0")],
            "invalid value \"0\" for --cpus: 0m is outside 10m..=4096000m; accepted: CPUs as a \
             decimal (1.5, 0.25) or millicpus (1500m), from 0.01 (10m) to 4096, or max",
        ),
        (
            &[("cpus", "-1")],
            "invalid value \"-1\" for --cpus: \"-1\" is not a decimal number",
        ),
        (
            &[("cpus", "1.5.1")],
            "invalid value \"1.5.1\" for --cpus: \"1.5.1\" is not a decimal number",
        ),
        (
            &[("cpus", "1.5m")],
            "invalid value \"1.5m\" for --cpus: millicpus must be a whole number before 'm'",
        ),
        (
            &[("cpus", "5000")],
            "invalid value \"5000\" for --cpus: 5000000m is outside 10m..=4096000m",
        ),
        (
            &[("cpu-weight", "0")],
            "invalid value \"0\" for --cpu-weight: 0 is outside 1..=10000",
        ),
        (
            &[("cpu-weight", "10001")],
            "invalid value \"10001\" for --cpu-weight: 10001 is outside 1..=10000",
        ),
        (
            &[("io-weight", "heavy")],
            "invalid value \"heavy\" for --io-weight: not a whole number",
        ),
        (
            &[("cpuset", "")],
            "invalid value \"\" for --cpuset: \"\" is not a CPU number",
        ),
        (
            &[("cpuset", "3-1")],
            "invalid value \"3-1\" for --cpuset: range 3-1 runs backwards",
        ),
        (
            &[("cpuset", "0-9000")],
            "invalid value \"0-9000\" for --cpuset: CPU 9000 is above 8191",
        ),
        (
            &[("memory", "256X")],
            "invalid value \"256X\" for --memory: unknown unit \"X\"",
        ),
        (
            &[("memory", "lots")],
            "invalid value \"lots\" for --memory: no number",
        ),
        (
            &[("memory", "-5M")],
            "invalid value \"-5M\" for --memory: no number",
        ),
        (
            &[("memory-high", "99999999T")],
            "invalid value \"99999999T\" for --memory-high: too large",
        ),
        (
            &[("memory", "100K")],
            "invalid value \"100K\" for --memory: below the smallest memory limit, 1M",
        ),
        (
            &[("memory", "256M"), ("memory-low", "512M")],
            "--memory-low 512M is larger than --memory 256M; --memory-low must not exceed --memory",
        ),
        (
            &[("memory-min", "1G"), ("memory-high", "512M")],
            "--memory-min 1G is larger than --memory-high 512M; --memory-min must not exceed --memory-high",
        ),
        (
            &[("memory", "1G"), ("memory", "2G")],
            "--memory given twice (\"1G\" and \"2G\"); give it once",
        ),
        (
            &[("swap", "1.5Q")],
            "invalid value \"1.5Q\" for --swap: unknown unit \"Q\"",
        ),
        (
            &[("oom-group", "maybe")],
            "invalid value \"maybe\" for --oom-group: not a boolean; accepted: true or false",
        ),
        (
            &[("pids", "0")],
            "invalid value \"0\" for --pids: 0 is outside 1..=4194304",
        ),
        (
            &[("pids", "5000000")],
            "invalid value \"5000000\" for --pids: 5000000 is outside 1..=4194304",
        ),
        (
            &[("io-max", "")],
            "invalid value \"\" for --io-max: no device given",
        ),
        (
            &[("io-max", "8:0")],
            "invalid value \"8:0\" for --io-max: no limit given for the device",
        ),
        (
            &[("io-max", "sda rbps=1M")],
            "invalid value \"sda rbps=1M\" for --io-max: device \"sda\" is neither MAJ:MIN (such as 8:0) nor a path under /dev/",
        ),
        (
            &[("io-max", "/dev/../etc/passwd rbps=1M")],
            "invalid value \"/dev/../etc/passwd rbps=1M\" for --io-max: device \"/dev/../etc/passwd\" is neither MAJ:MIN (such as 8:0) nor a path under /dev/",
        ),
        (
            &[("io-max", "8:0 rbps")],
            "invalid value \"8:0 rbps\" for --io-max: \"rbps\" is not KEY=VALUE",
        ),
        (
            &[("io-max", "8:0 speed=1M")],
            "invalid value \"8:0 speed=1M\" for --io-max: unknown key \"speed\" (keys: rbps, wbps, riops, wiops)",
        ),
        (
            &[("io-max", "8:0 riops=1k")],
            "invalid value \"8:0 riops=1k\" for --io-max: riops=1k: not a whole number",
        ),
        (
            &[("io-max", "8:0 rbps=1M rbps=2M")],
            "invalid value \"8:0 rbps=1M rbps=2M\" for --io-max: key rbps given twice",
        ),
        (
            &[("io-max", "8:0 rbps=1M"), ("io-max", "8:0 wbps=1M")],
            "--io-max names device 8:0 twice; give each device once with all its keys",
        ),
        (
            &[("priority", "urgent")],
            "invalid value \"urgent\" for --priority: unknown class \"urgent\"; accepted: critical, high, normal, low or idle",
        ),
        (
            &[("egress", "10mbps")],
            "invalid value \"10mbps\" for --egress: \"mbps\" is bytes per second in tc but bits per second elsewhere; write bits instead, e.g. 80mbit for 10mbps",
        ),
        (
            &[("egress", "10m")],
            "invalid value \"10m\" for --egress: Kubernetes' m means thousandths of a bit per second; for megabits write M or mbit",
        ),
        (
            &[("egress", "10")],
            "invalid value \"10\" for --egress: 10 bit/s is outside 1kbit..=1tbit",
        ),
        (
            &[("ingress", "fast")],
            "invalid value \"fast\" for --ingress: no number",
        ),
        (
            &[("ingress", "2tbit")],
            "invalid value \"2tbit\" for --ingress: 2000000000000 bit/s is outside 1kbit..=1tbit",
        ),
        (
            &[("bandwidth", "1M")],
            "unknown limit \"bandwidth\"; known limits: cpus, cpu-weight, cpuset, memory, memory-high, memory-low, memory-min, swap, oom-group, pids, io-weight, io-max, priority, egress, egress-burst, ingress",
        ),
        (
            &[("egress-burst", "64K")],
            "invalid value \"64K\" for --egress-burst: unknown unit \"K\" (the burst is a time, not a size); accepted: a duration at the container's rate: 500us, 2ms, 0.5s (from 100us to 1s)",
        ),
        (
            &[("egress-burst", "2")],
            "invalid value \"2\" for --egress-burst: no unit; write us, ms or s; accepted: a duration at the container's rate: 500us, 2ms, 0.5s (from 100us to 1s)",
        ),
        (
            &[("egress-burst", "5s")],
            "invalid value \"5s\" for --egress-burst: 5000000000 ns is outside 100us..=1s; accepted: a duration at the container's rate: 500us, 2ms, 0.5s (from 100us to 1s)",
        ),
    ];
    let mut wrong = Vec::new();
    for (input, expected) in cases {
        let msg = match parse(input) {
            Ok(l) => format!("accepted as {l}"),
            Err(err) => {
                if let LimitError::Value { flag, .. } = &err {
                    assert!(
                        err.to_string().ends_with(flag.accepted()),
                        "{err} lacks what is accepted"
                    );
                }
                err.to_string()
            }
        };
        if !msg.starts_with(expected) {
            wrong.push(format!(
                "input {input:?}\n expected: {expected}\n      got: {msg}"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

fn arb_memory() -> impl Strategy<Value = Memory> {
    prop_oneof![
        Just(Memory::Max),
        (1u64 << 20..1u64 << 45).prop_map(Memory::Bytes)
    ]
}

fn arb_io() -> impl Strategy<Value = IoLimit> {
    prop_oneof![Just(Max::Max), (0u64..1 << 40).prop_map(Max::Value)]
}

fn arb_io_max() -> impl Strategy<Value = IoMax> {
    (
        prop_oneof![
            (0u32..4096, 0u32..1 << 20).prop_map(|(major, minor)| Device::Number { major, minor }),
            "[a-z][a-z0-9]{0,8}".prop_map(|n| Device::Path(format!("/dev/{n}").into())),
        ],
        proptest::option::of(arb_io()),
        proptest::option::of(arb_io()),
        proptest::option::of(arb_io()),
        proptest::option::of(arb_io()),
    )
        .prop_filter("at least one key", |(_, a, b, c, d)| {
            a.is_some() || b.is_some() || c.is_some() || d.is_some()
        })
        .prop_map(|(device, rbps, wbps, riops, wiops)| IoMax {
            device,
            rbps,
            wbps,
            riops,
            wiops,
        })
}

prop_compose! {
    fn arb_limits()(
        cpus in proptest::option::of(prop_oneof![
            Just(Max::Max),
            (CpuQuota::MIN_MILLIS..=CpuQuota::MAX_MILLIS)
                .prop_map(|m| Max::Value(CpuQuota::from_millis(m).unwrap())),
        ]),
        cpu_weight in proptest::option::of((1u16..=10_000).prop_map(|w| Weight::new(w).unwrap())),
        cpuset in proptest::option::of(
            proptest::collection::vec((0u32..64, 0u32..8), 1..5)
                .prop_map(|v| CpuSet::from_ranges(v.into_iter().map(|(a, n)| (a, a + n)).collect()).unwrap())),
        mut mems in proptest::collection::vec(proptest::option::of(arb_memory()), 4),
        swap in proptest::option::of(arb_memory()),
        oom_group in proptest::option::of(any::<bool>()),
        pids in proptest::option::of(prop_oneof![Just(Pids::Max), (1u32..=Pids::LIMIT).prop_map(Pids::Limit)]),
        io_weight in proptest::option::of((1u16..=10_000).prop_map(|w| Weight::new(w).unwrap())),
        io_max in proptest::collection::vec(arb_io_max(), 0..3),
        priority in proptest::option::of(proptest::sample::select(Priority::ALL.to_vec())),
        egress in proptest::option::of((Bandwidth::MIN_BITS..=Bandwidth::MAX_BITS)
            .prop_map(|b| Bandwidth::from_bits_per_second(b).unwrap())),
        ingress in proptest::option::of((Bandwidth::MIN_BITS..=Bandwidth::MAX_BITS)
            .prop_map(|b| Bandwidth::from_bits_per_second(b).unwrap())),
        egress_burst in proptest::option::of((Burst::MIN_NS..=Burst::MAX_NS)
            .prop_map(|b| Burst::from_ns(b).unwrap())),
    ) -> Limits {
        // Sorting makes the memory knobs obey min <= low <= high <= max.
        let mut set: Vec<Memory> = mems.iter().flatten().copied().collect();
        set.sort();
        let mut it = set.into_iter();
        for m in &mut mems { if m.is_some() { *m = it.next(); } }
        let mut io_max = io_max;
        io_max.dedup_by(|a, b| a.device == b.device);
        Limits {
            cpus, cpu_weight, cpuset,
            memory_min: mems[0], memory_low: mems[1], memory_high: mems[2], memory: mems[3],
            swap, oom_group, pids, io_weight, io_max, priority, egress, egress_burst, ingress,
        }
    }
}

proptest! {
    #[test]
    fn display_round_trips(l in arb_limits()) {
        prop_assume!(l.validate().is_ok());
        let pairs = l.to_pairs();
        let back = Limits::from_pairs(pairs.iter().map(|(f, v)| (*f, v.as_str()))).unwrap();
        prop_assert_eq!(&back, &l);
    }

    #[test]
    fn parsing_never_panics(flag in proptest::sample::select(Flag::ALL.to_vec()), s in "\\PC{0,40}") {
        let _ = Limits::from_pairs([(flag, s.as_str())]);
    }

    #[test]
    fn fractional_cpus_are_exact(millis in CpuQuota::MIN_MILLIS..=CpuQuota::MAX_MILLIS) {
        let q = CpuQuota::from_millis(millis).unwrap();
        prop_assert_eq!(q.to_string().parse::<CpuQuota>().unwrap(), q);
        prop_assert_eq!(format!("{millis}m").parse::<CpuQuota>().unwrap(), q);
        prop_assert_eq!(q.quota_us(), u64::from(millis) * 100);
    }
}
