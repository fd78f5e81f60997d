//! `rein top` against a live agent: the one-shot table (stdout not a terminal) and `--json`
//! show each container's real rates and limits.

use integration_tests::AgentGuard;

#[test]
fn rein_top_prints_real_rates_and_limits_when_not_on_a_terminal() {
    let agent = AgentGuard::start("rein-top");
    let mut busy = agent.rein_spawn(&[
        "run",
        "--keep",
        "--name",
        "busy",
        "--cpus",
        "0.5",
        "--",
        "timeout",
        "30",
        "sh",
        "-c",
        "while :; do :; done",
    ]);
    let mut idle = agent.rein_spawn(&[
        "run", "--keep", "--name", "idle", "--memory", "64M", "--", "sleep", "30",
    ]);
    // Both containers exist and the loop has run for a moment.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !agent.rein_ok(&["ls"]).contains("idle") || !agent.rein_ok(&["ls"]).contains("busy") {
        assert!(
            std::time::Instant::now() < deadline,
            "containers did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));

    let table = agent.rein_ok(&["top", "--interval", "2"]);
    println!("{table}");
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("NAME"), "{table}");
    assert!(lines[1].starts_with("busy"), "sorted by CPU: {table}");
    let cpu: f64 = lines[1].split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!((40.0..=60.0).contains(&cpu), "--cpus 0.5 shows {cpu}%");
    let idle_line = lines.iter().find(|l| l.starts_with("idle")).unwrap();
    assert!(idle_line.contains("/ 64.0M"), "{idle_line}");

    let json: serde_json::Value = serde_json::from_str(&agent.rein_ok(&[
        "top",
        "--json",
        "--interval",
        "1",
        "--sort",
        "name",
    ]))
    .unwrap();
    assert_eq!(json[0]["name"], "busy");
    assert_eq!(json[1]["name"], "idle");
    assert_eq!(json[1]["memory_limit_bytes"], 64 << 20);
    let throttled = json[0]["throttled_percent"].as_f64().unwrap();
    assert!(
        throttled > 50.0,
        "a busy loop at half a CPU is throttled: {throttled}%"
    );

    agent.rein_ok(&["rm", "--force", "busy"]);
    agent.rein_ok(&["rm", "--force", "idle"]);
    let _ = busy.wait();
    let _ = idle.wait();
}
