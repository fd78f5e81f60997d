//! The command line parses what the docs show and refuses the rest at parse time.

use super::*;
use crate::api::LimitText;

#[test]
fn cli_definition_is_consistent() {
    Cli::command().debug_assert();
}

#[test]
fn completions_name_the_subcommands() {
    let mut buf = Vec::new();
    clap_complete::generate(Shell::Bash, &mut Cli::command(), "rein", &mut buf);
    let script = String::from_utf8(buf).unwrap();
    for sub in [
        "agent",
        "run",
        "set",
        "rm",
        "ls",
        "stats",
        "check",
        "completions",
    ] {
        assert!(script.contains(sub), "{sub}");
    }
}

#[test]
fn a_node_name_that_would_garble_the_label_is_refused_at_parse_time() {
    let err = Cli::try_parse_from(["rein", "agent", "--node-name", "a b"]).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("--node-name") && msg.contains("letters, digits"),
        "{msg}"
    );
    let cli = Cli::try_parse_from(["rein", "agent", "--node-name", "node-a"]).unwrap();
    let Command::Agent(args) = cli.command else {
        panic!("not agent")
    };
    assert_eq!(
        args.node_name.map(|n| n.to_string()).as_deref(),
        Some("node-a")
    );
}

#[test]
fn limit_flags_are_checked_by_the_shared_parser() {
    let err = Cli::try_parse_from(["rein", "set", "web", "--memory", "12Q"]).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("--memory") && msg.contains("unknown unit \"Q\""),
        "{msg}"
    );
    let cli = Cli::try_parse_from([
        "rein",
        "run",
        "--cpus",
        "1500m",
        "--io-max",
        "8:0 wbps=1M",
        "--oom-group",
        "--",
        "true",
    ])
    .unwrap();
    let Command::Run {
        limits, command, ..
    } = cli.command
    else {
        panic!("not run")
    };
    let map = limits.to_map();
    assert_eq!(map["cpus"], LimitText::One("1.5".into()));
    assert_eq!(map["oom-group"], LimitText::One("true".into()));
    assert_eq!(command, vec!["true"]);
    let err = Cli::try_parse_from([
        "rein",
        "set",
        "web",
        "--memory",
        "256M",
        "--memory-low",
        "1G",
    ])
    .unwrap_err()
    .to_string();
    assert!(err.contains("--memory-low 1G is larger"), "{err}");
    let err = Cli::try_parse_from(["rein", "set", "web", "--cpus", "1", "--cpus", "2"])
        .unwrap_err()
        .to_string();
    assert!(err.contains("--cpus"), "{err}");
}

#[test]
fn why_help_states_the_thresholds_the_diagnosis_uses() {
    let help = Cli::command()
        .find_subcommand_mut("why")
        .unwrap()
        .render_long_help()
        .to_string();
    let pct = |share: f64| format!("{}%", (share * 100.0).round());
    for (what, share) in [
        ("shown", Thresholds::SHOWN),
        ("at limit", Thresholds::AT_LIMIT),
        ("resent", Thresholds::RETRANSMITTED),
    ] {
        assert!(
            help.contains(&pct(share)),
            "{what}: {} not in\n{help}",
            pct(share)
        );
    }
    assert!(parse_window("500ms").is_err());
    assert_eq!(parse_window("2m"), Ok(120.0));
    let err = parse_window("301s").unwrap_err();
    assert!(err.contains("1s to 300s"), "{err}");
}

#[test]
fn dockers_names_for_the_same_limits_are_accepted() {
    let cli = Cli::try_parse_from([
        "rein",
        "run",
        "-m",
        "256M",
        "--cpuset-cpus",
        "0-1",
        "--pids-limit",
        "100",
        "--memory-reservation",
        "64M",
        "--",
        "true",
    ])
    .unwrap();
    let Command::Run { limits, .. } = cli.command else {
        panic!("not run")
    };
    let map = limits.to_map();
    let get = |k: &str| match map.get(k) {
        Some(LimitText::One(s)) => s.clone(),
        other => panic!("{k}: {other:?}"),
    };
    assert_eq!(get("memory"), "256M");
    assert_eq!(get("cpuset"), "0-1");
    assert_eq!(get("pids"), "100");
    assert_eq!(get("memory-low"), "64M");
    // The same limit under both names is one flag given twice: refused.
    assert!(Cli::try_parse_from(["rein", "set", "w", "-m", "1G", "--memory", "2G"]).is_err());
    // Docker's --memory-swap means memory plus swap, not rein's --swap: not an alias.
    assert!(Cli::try_parse_from(["rein", "set", "w", "--memory-swap", "1G"]).is_err());
    let help = Cli::command()
        .find_subcommand_mut("set")
        .unwrap()
        .render_long_help()
        .to_string();
    assert!(
        help.contains("cpuset-cpus") && help.contains("-m,"),
        "{help}"
    );
}

#[test]
fn rm_takes_dockers_short_force_and_json_answers_are_flags() {
    let cli = Cli::try_parse_from(["rein", "rm", "-f", "web", "--json"]).unwrap();
    let Command::Rm { force, json, .. } = cli.command else {
        panic!("not rm")
    };
    assert!(force && json);
    for args in [
        &["rein", "set", "web", "--cpus", "1", "--json"][..],
        &["rein", "run", "--json", "--", "true"][..],
    ] {
        Cli::try_parse_from(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
    }
}
