//! The most a container runtime's annotations may ask for: the agent config's
//! `[hook_ceiling]` table, with the flags' names and texts (`cpus = "4"`, `memory = "8G"`,
//! `egress = "1gbit"`, `priority = "high"`, ...). Anyone who may create a pod can write
//! annotations; the operator decides how much they can claim. Unset keys are unbounded;
//! `rein run`/`set` by root or an allowed uid are not bound by it.

use super::{Flag, LimitError, Limits, Max, Memory, Pids};

/// How far one limit reaches, comparable across values of one flag: larger claims more
/// (unlimited is the largest; a more urgent priority is larger).
fn reach(l: &Limits, flag: Flag) -> Option<u128> {
    let max = u128::MAX;
    let mem = |m: Option<Memory>| {
        m.map(|m| match m {
            Memory::Bytes(b) => u128::from(b),
            Memory::Max => max,
        })
    };
    match flag {
        Flag::Cpus => l.cpus.map(|c| match c {
            Max::Max => max,
            Max::Value(q) => u128::from(q.millis()),
        }),
        Flag::CpuWeight => l.cpu_weight.map(|w| u128::from(w.get())),
        Flag::IoWeight => l.io_weight.map(|w| u128::from(w.get())),
        Flag::Memory => mem(l.memory),
        Flag::MemoryHigh => mem(l.memory_high),
        Flag::MemoryLow => mem(l.memory_low),
        Flag::MemoryMin => mem(l.memory_min),
        Flag::Swap => mem(l.swap),
        Flag::Pids => l.pids.map(|p| match p {
            Pids::Limit(n) => u128::from(n),
            Pids::Max => max,
        }),
        Flag::Egress => l.egress.map(|b| u128::from(b.bits_per_second())),
        Flag::Ingress => l.ingress.map(|b| u128::from(b.bits_per_second())),
        // Idle is the least claim, critical the most.
        Flag::Priority => l.priority.map(|p| 4 - p as u128),
        _ => None,
    }
}

/// The flags a ceiling can bound.
pub const BOUNDED: [Flag; 12] = [
    Flag::Cpus,
    Flag::CpuWeight,
    Flag::IoWeight,
    Flag::Memory,
    Flag::MemoryHigh,
    Flag::MemoryLow,
    Flag::MemoryMin,
    Flag::Swap,
    Flag::Pids,
    Flag::Egress,
    Flag::Ingress,
    Flag::Priority,
];

/// Refuses `asked` if any of its limits reaches above `ceiling`'s for the same flag.
pub fn check(ceiling: &Limits, asked: &Limits) -> Result<(), LimitError> {
    let pairs = |l: &Limits| l.to_pairs();
    for flag in BOUNDED {
        if let (Some(top), Some(want)) = (reach(ceiling, flag), reach(asked, flag))
            && want > top
        {
            let text = |l: &Limits| {
                pairs(l)
                    .into_iter()
                    .find(|(f, _)| *f == flag)
                    .map(|(_, v)| v)
                    .unwrap_or_default()
            };
            return Err(LimitError::AboveCeiling {
                flag,
                value: text(asked),
                ceiling: text(ceiling),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(pairs: &[(&str, &str)]) -> Limits {
        Limits::from_named_pairs(pairs.iter().copied()).unwrap()
    }

    #[test]
    fn annotations_above_the_ceiling_are_refused_naming_both() {
        let top = limits(&[
            ("cpus", "2"),
            ("memory", "1G"),
            ("egress", "100mbit"),
            ("priority", "normal"),
            ("pids", "1000"),
        ]);
        check(
            &top,
            &limits(&[("cpus", "1.5"), ("memory", "512M"), ("priority", "low")]),
        )
        .unwrap();
        check(&top, &limits(&[("io-weight", "500")])).unwrap();
        let e = check(&top, &limits(&[("cpus", "max")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--cpus max") && e.contains("ceiling 2"), "{e}");
        let e = check(&top, &limits(&[("egress", "1gbit")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--egress"), "{e}");
        assert!(check(&top, &limits(&[("priority", "critical")])).is_err());
        assert!(check(&top, &limits(&[("memory", "max")])).is_err());
        assert!(check(&top, &limits(&[("pids", "max")])).is_err());
        check(&Limits::default(), &limits(&[("cpus", "max")])).unwrap();
    }
}
