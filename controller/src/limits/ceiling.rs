//! The most a container runtime's annotations may ask for: the agent config's
//! `[hook_ceiling]` table, with the flags' names and texts (`cpus = "4"`, `memory = "8G"`,
//! `egress = "1gbit"`, `priority = "high"`, ...). Anyone who may create a pod can write
//! annotations; the operator decides how much they can claim. Unset keys are unbounded;
//! `rein run`/`set` by root or an allowed uid are not bound by it.

use super::{Flag, LimitError, Limits};

/// Refuses `asked` if any of its limits reaches above `ceiling`'s for the same flag (how far
/// a value reaches is its type's `Value::reach`: unlimited is the largest, a more urgent
/// priority is larger; flags without a reach, such as `--cpuset`, are not bounded).
pub fn check(ceiling: &Limits, asked: &Limits) -> Result<(), LimitError> {
    for flag in Flag::ALL {
        if let (Some(top), Some(want)) = (ceiling.reach(flag), asked.reach(flag))
            && want > top
        {
            return Err(LimitError::AboveCeiling {
                flag,
                value: asked.texts(flag).join(" "),
                ceiling: ceiling.texts(flag).join(" "),
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
