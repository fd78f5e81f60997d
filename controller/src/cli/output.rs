//! What the CLI prints: tables for people, pretty JSON for scripts.

use std::io::Write as _;

use crate::api::{Container, LimitMap, LimitText, Stats};

pub(super) fn print_json(v: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v)?;
    writeln!(out)?;
    Ok(())
}

pub(super) fn limits_line(map: &LimitMap) -> String {
    let parts: Vec<String> = map
        .iter()
        .flat_map(|(k, v)| match v {
            LimitText::One(s) => vec![format!("{k}={s}")],
            LimitText::Many(l) => l.iter().map(|s| format!("{k}='{s}'")).collect(),
        })
        .collect();
    if parts.is_empty() {
        "-".into()
    } else {
        parts.join(" ")
    }
}

/// `rein ls`: one line per container and group, members indented below their group (a
/// member whose group is not listed, such as a runtime's, at the top).
pub(super) fn ls_table(all: &[Container]) -> String {
    let mut out = format!("{:<28} {:<10} LIMITS\n", "NAME", "KIND");
    let listed = |g: &str| all.iter().any(|c| c.name == g);
    let tops: Vec<&Container> = all
        .iter()
        .filter(|c| c.group.as_deref().is_none_or(|g| !listed(g)))
        .collect();
    let mut stack: Vec<(&Container, usize)> = tops.into_iter().rev().map(|c| (c, 0)).collect();
    while let Some((c, depth)) = stack.pop() {
        let name = format!("{}{}", "  ".repeat(depth), c.name);
        out.push_str(&format!(
            "{name:<28} {:<10} {}\n",
            c.kind.to_string(),
            limits_line(&c.limits)
        ));
        stack.extend(
            all.iter()
                .filter(|m| m.group.as_deref() == Some(c.name.as_str()))
                .rev()
                .map(|m| (m, depth + 1)),
        );
    }
    out
}

/// `rein stats NAME`: the container, its limits and mode, then one usage figure per line.
pub(super) fn stats_text(s: &Stats) -> anyhow::Result<String> {
    let mut out = format!(
        "name    {}\ncgroup  {}\nlimits  {}\negress  {}\n",
        s.container.name,
        s.container.path,
        limits_line(&s.container.limits),
        s.egress_mode
    );
    if let serde_json::Value::Object(usage) = serde_json::to_value(&s.usage)? {
        for (k, v) in usage {
            out.push_str(&format!("{k:<26} {v}\n"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::Kind;

    fn entry(name: &str, kind: Kind, group: Option<&str>) -> Container {
        Container {
            name: name.into(),
            kind,
            group: group.map(Into::into),
            path: format!("/sys/fs/cgroup/rein/{name}"),
            limits: LimitMap::from([("cpus".into(), LimitText::One("1".into()))]),
        }
    }

    #[test]
    fn ls_indents_members_below_their_group_and_lists_orphans_at_the_top() {
        let all = [
            entry("web", Kind::Container, Some("team")),
            entry("team", Kind::Group, None),
            entry("sub", Kind::Group, Some("team")),
            entry("db", Kind::Container, Some("sub")),
            entry("lone", Kind::Container, Some("runtime-pod")),
        ];
        let lines: Vec<String> = ls_table(&all)
            .lines()
            .map(|l| l.split_whitespace().take(2).collect::<Vec<_>>().join(" "))
            .collect();
        assert_eq!(
            lines,
            [
                "NAME KIND",
                "team group",
                "web container",
                "sub group",
                "db container",
                "lone container"
            ]
        );
        let text = ls_table(&all);
        assert!(text.contains("\n  web "), "{text}");
        assert!(text.contains("\n    db "), "{text}");
    }
}
