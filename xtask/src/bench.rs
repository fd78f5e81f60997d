//! `cargo xtask bench ...`: benchmarks that print figures next to the alternative measured in
//! the same run, as ratios. They report; they do not assert timings.

use std::path::PathBuf;

use crate::{
    guest::{bench_lines, guest_script, start_agent},
    paths::workspace_root,
    vm,
};

#[derive(clap::Subcommand, Clone, Debug)]
pub enum Bench {
    /// Latency of changing a limit through rein (API call, and the `rein set` CLI end to
    /// end) next to writing the same cgroup file directly, in the test VM.
    Api {
        #[command(flatten)]
        vm: vm::VmArgs,
        /// API calls and direct writes to time (the CLI is timed on a tenth as many).
        #[arg(long, default_value_t = 1000)]
        calls: u32,
    },
    /// rein's egress shaper beside TBF as the Kubernetes bandwidth plugin sets it, HTB with
    /// fq_codel, rein with one FIFO per container (`--egress-flows fifo`, as before flow
    /// isolation) and Cilium-like EDT (one FIFO, no burst, no congestion notification, 2 s
    /// horizon); rein's police fallback; and a forwarded sender (container netns) shaped by
    /// rein inside its namespace vs HTB on the host: achieved/limit at 10 and 100 Mbit/s
    /// with 1 and 8 TCP streams, their fairness (Jain's index), retransmissions, and the
    /// delay of two sparse flows of the same sender (ping, TCP request/response) through
    /// the saturated path; `--priority critical` vs `low` on a shared bottleneck;
    /// throughput with rein attached vs none, and the programs' per-packet cost. Raw results
    /// go to target/bench/shaping.json.
    Shaping {
        #[command(flatten)]
        vm: vm::VmArgs,
    },
    /// What watching costs: a context switch with the run-queue latency programs (a task
    /// outside rein, one in a container) next to no agent; the Prometheus endpoint with 1,
    /// 100 and 1000 containers: scrape latency (median, p99) next to one process reading
    /// exactly the files whose figures it exports, where the agent's time went, its CPU per
    /// scrape and its RSS. Each figure beside its target. Raw results go to
    /// target/bench/metrics.json.
    Metrics {
        #[command(flatten)]
        vm: vm::VmArgs,
        /// Scrapes timed at each size.
        #[arg(long, default_value_t = 50)]
        scrapes: u32,
    },
    /// Churn and load: 1000 containers (CPU, memory and egress limits) created and removed
    /// through the API from 8 threads, next to the same cgroups made with plain mkdir and
    /// writes, with what was left behind counted before and after (cgroups, pins, map
    /// entries, qdiscs); then 100 concurrent API clients for 30 s: calls, errors, p50/p99.
    Churn {
        #[command(flatten)]
        vm: vm::VmArgs,
        /// Containers to create and remove.
        #[arg(long, default_value_t = 1000)]
        containers: u32,
    },
    /// What following the hierarchy costs a packet: the egress programs (walk to the
    /// nearest managed cgroup, cached per cgroup; shape and count every managed level) timed
    /// with BPF_PROG_TEST_RUN from a process 1 to 4 cgroup levels below a managed cgroup,
    /// next to the flat program (the socket's own cgroup alone, as egress was before
    /// chains), in the same boot.
    Datapath {
        #[command(flatten)]
        vm: vm::VmArgs,
        /// Test runs per program and depth.
        #[arg(long, default_value_t = 200_000)]
        repeat: u32,
    },
    /// Container start time (`runc run` and `crun run` of `true`, to exit and deletion) of
    /// a bundle without hooks next to one with rein's createRuntime hook and limit
    /// annotations, and to the pieces (a hook running `true`, one running `rein --version`,
    /// rein's hook with poststop too), started in turn, as ratios: what registering with the
    /// agent costs a container start.
    Hook {
        #[command(flatten)]
        vm: vm::VmArgs,
        /// Starts of each bundle per runtime.
        #[arg(long, default_value_t = 40)]
        starts: u32,
    },
}

pub fn run(b: &Bench) -> anyhow::Result<i32> {
    match b {
        Bench::Api { vm, calls } => api(vm, *calls),
        Bench::Shaping { vm } => shaping(vm),
        Bench::Metrics { vm, scrapes } => metrics(vm, *scrapes),
        Bench::Hook { vm, starts } => hook(vm, *starts),
        Bench::Churn { vm, containers } => churn(vm, *containers),
        Bench::Datapath { vm, repeat } => datapath(vm, *repeat),
    }
}

fn datapath(args: &vm::VmArgs, repeat: u32) -> anyhow::Result<i32> {
    let args = &vm::VmArgs {
        release: true,
        ..args.clone()
    };
    let path = guest_script(
        "bench-datapath.sh",
        &format!("rein-test-helper datapath-cost {repeat}\n"),
    )?;
    let mut status = 0;
    for (series, outcome) in vm::run_script_outcomes(args, &path)? {
        status = status.max(outcome.status);
        println!(
            "\nbench datapath on {} ({repeat} runs each; TCG guest, ns per packet, cache warm):",
            series.name()
        );
        println!(
            "{:>6} {:>12} {:>12} {:>12} {:>8}",
            "depth", "egress", "flat", "ingress", "ratio"
        );
        for r in bench_lines(&outcome.lines) {
            // serde_json's Display ignores widths: format the numbers as text first.
            let cell = |key: &str| r[key].to_string();
            println!(
                "{:>6} {:>12} {:>12} {:>12} {:>7.2}x",
                cell("depth"),
                cell("egress_ns"),
                cell("flat_ns"),
                cell("ingress_ns"),
                r["ratio"].as_f64().unwrap_or(f64::NAN)
            );
        }
    }
    Ok(status)
}

fn api(args: &vm::VmArgs, calls: u32) -> anyhow::Result<i32> {
    // Benchmarks measure what users run: optimised binaries.
    let args = &vm::VmArgs {
        release: true,
        ..args.clone()
    };
    let script = format!(
        "{}rein run --keep --name bench --cpus 0.5 -- true\n\
         rein-test-helper bench-set /run/rein/rein.sock bench {calls}\n",
        start_agent("")
    );
    let path = guest_script("bench-api.sh", &script)?;
    let mut status = 0;
    for (series, outcome) in vm::run_script_outcomes(args, &path)? {
        status = status.max(outcome.status);
        let figure = |key: &str, stat: &str| -> Option<f64> {
            outcome.lines.iter().find_map(|l| {
                let rest = l.strip_prefix(&format!("bench {key} "))?;
                rest.split_whitespace()
                    .find_map(|kv| kv.strip_prefix(&format!("{stat}="))?.parse().ok())
            })
        };
        let shell = figure("shell_write_us", "mean").unwrap_or(f64::NAN);
        println!(
            "\nbench api on {} ({calls} calls; TCG guest, microseconds):",
            series.name()
        );
        println!(
            "{:<34} {:>9} {:>9} {:>16} {:>22}",
            "", "median", "p99", "median / shell", "p99 / direct p99"
        );
        let direct_p99 = figure("file_write_us", "p99");
        for (label, key) in [
            ("rein API set (PATCH, 1 conn each)", "api_set_us"),
            ("  of which: a 404 (conn, HTTP)", "api_404_us"),
            ("  and: GET of the container", "api_get_us"),
            ("  and: GET of every container", "api_list_us"),
            ("rein API set, 1 kept-alive conn", "api_set_ka_us"),
            ("  of which: a 404 on it", "api_404_ka_us"),
            ("rein set CLI (process + API)", "cli_set_us"),
            ("direct write(2) of cpu.max", "file_write_us"),
        ] {
            let (m, p) = (figure(key, "median"), figure(key, "p99"));
            let show = |v: Option<f64>| v.map_or_else(|| "?".to_owned(), |v| format!("{v:.0}"));
            let ratio = m.map_or_else(|| "?".to_owned(), |m| format!("{:.2}x", m / shell));
            let limit = if key.starts_with("api_set") {
                format!(" ({API_RATIO_LIMIT})")
            } else {
                String::new()
            };
            let tail = match (p, direct_p99) {
                (Some(p), Some(d)) if d > 0.0 => format!("{:.2}x{limit}", p / d),
                _ => "?".to_owned(),
            };
            println!(
                "{label:<34} {:>9} {:>9} {ratio:>16} {tail:>22}",
                show(m),
                show(p)
            );
        }
        println!(
            "{:<34} {:>9} {:>9} {:>16}",
            "shell loop: echo > cpu.max (mean)",
            format!("{shell:.0}"),
            "-",
            "1.00x"
        );
    }
    Ok(status)
}

fn shaping(args: &vm::VmArgs) -> anyhow::Result<i32> {
    let args = &vm::VmArgs {
        release: true,
        timeout: args.timeout.max(1800),
        ..args.clone()
    };
    let path: PathBuf = workspace_root()
        .join("target")
        .join("vm")
        .join("bench-shaping.sh");
    std::fs::create_dir_all(path.parent().unwrap_or(&path))?;
    std::fs::write(&path, include_str!("vm/bench-shaping.sh"))?;
    let mut all = Vec::new();
    let mut status = 0;
    for (series, outcome) in vm::run_script_outcomes(args, &path)? {
        status = status.max(outcome.status);
        let runs: Vec<serde_json::Value> = outcome
            .lines
            .iter()
            .filter_map(|l| serde_json::from_str(l.strip_prefix("BENCH ")?).ok())
            .collect();
        let cost = outcome
            .lines
            .iter()
            .find_map(|l| l.strip_prefix("BPFCOST "))
            .and_then(|l| l.split(", ").nth(1))
            .unwrap_or("?")
            .to_owned();
        print_shaping_table(series.name(), &runs, &cost);
        all.push(serde_json::json!({ "kernel": series.name(), "runs": runs, "bpf_cost": cost }));
    }
    let out = workspace_root()
        .join("target")
        .join("bench")
        .join("shaping.json");
    std::fs::create_dir_all(out.parent().unwrap_or(&out))?;
    std::fs::write(&out, serde_json::to_string_pretty(&all)?)?;
    println!("\nraw results: {}", out.display());
    Ok(status)
}

fn metrics(args: &vm::VmArgs, scrapes: u32) -> anyhow::Result<i32> {
    let args = &vm::VmArgs {
        release: true,
        timeout: args.timeout.max(1800),
        ..args.clone()
    };
    // The scheduler programs' cost first: context switches with no agent, then with its
    // programs attached, for a task rein does not watch and for one in a container.
    let mut script = format!(
        "rein-test-helper bench-sched none 40000\n\
         {}\
         rein-test-helper bench-sched unwatched 40000\n\
         rein run -- rein-test-helper bench-sched watched 40000\n",
        start_agent("--metrics-addr 127.0.0.1:9798")
    );
    for n in [1, 100, 1000] {
        script.push_str(&format!(
            "rein-test-helper bench-scrape /run/rein/rein.sock 127.0.0.1:9798 $AGENT {n} {scrapes}\n"
        ));
    }
    let path = guest_script("bench-metrics.sh", &script)?;
    let mut all = Vec::new();
    let mut status = 0;
    for (series, outcome) in vm::run_script_outcomes(args, &path)? {
        status = status.max(outcome.status);
        let (runs, sched): (Vec<_>, Vec<_>) = bench_lines(&outcome.lines)
            .into_iter()
            .partition(|r| r.get("containers").is_some());
        print_sched_table(series.name(), &sched);
        print_scrape_tables(series.name(), scrapes, &runs);
        all.push(serde_json::json!({ "kernel": series.name(), "scrapes": runs, "sched": sched }));
    }
    let out = workspace_root()
        .join("target")
        .join("bench")
        .join("metrics.json");
    std::fs::create_dir_all(out.parent().unwrap_or(&out))?;
    std::fs::write(&out, serde_json::to_string_pretty(&all)?)?;
    println!("\nraw results: {}", out.display());
    Ok(status)
}

fn churn(args: &vm::VmArgs, containers: u32) -> anyhow::Result<i32> {
    let args = &vm::VmArgs {
        release: true,
        ..args.clone()
    };
    let script = format!(
        "{}\
         foot() {{ echo \"FOOT $1 cgroups=$(find /sys/fs/cgroup/rein.slice -mindepth 1 -type d | wc -l) \
         pins=$(find /sys/fs/bpf/rein | wc -l) qdiscs=$(tc qdisc show | wc -l) \
         $(rein-test-helper map-keys /sys/fs/bpf/rein)\"; }}\n\
         foot before\n\
         rein-test-helper churn /run/rein/rein.sock {containers} 8\n\
         foot after\n\
         rein-test-helper api-load /run/rein/rein.sock 100 30\n",
        start_agent("--egress-dev lo")
    );
    let path = guest_script("bench-churn.sh", &script)?;
    let mut status = 0;
    for (series, outcome) in vm::run_script_outcomes(args, &path)? {
        status = status.max(outcome.status);
        let runs = bench_lines(&outcome.lines);
        let f = |k: &str| runs.iter().find_map(|r| r[k].as_f64()).unwrap_or(f64::NAN);
        println!(
            "\nbench churn on {} (TCG guest, {containers} containers, 8 threads):",
            series.name()
        );
        println!("{:<34} {:>12} {:>12}", "", "creates/s", "removes/s");
        println!(
            "{:<34} {:>12.0} {:>12.0}",
            "rein API (limits, maps, xattrs)",
            f("creates_per_sec"),
            f("removes_per_sec")
        );
        println!(
            "{:<34} {:>12.0} {:>12.0}",
            "plain mkdir + 2 writes / rmdir",
            f("direct_creates_per_sec"),
            f("direct_removes_per_sec")
        );
        println!(
            "{:<34} {:>11.2}x {:>11.2}x",
            "rein / plain",
            f("creates_per_sec") / f("direct_creates_per_sec"),
            f("removes_per_sec") / f("direct_removes_per_sec")
        );
        println!("failed API calls: {}", f("failed_calls"));
        for l in outcome.lines.iter().filter(|l| l.starts_with("FOOT ")) {
            println!("footprint {}", &l[5..]);
        }
        println!(
            "100 clients x 30 s of GET /v1/containers: {} calls, {} errors, p50 {:.1} ms, p99 {:.1} ms",
            f("calls"),
            f("errors"),
            f("latency_us_p50") / 1e3,
            f("latency_us_p99") / 1e3
        );
    }
    Ok(status)
}

fn hook(args: &vm::VmArgs, starts: u32) -> anyhow::Result<i32> {
    let args = &vm::VmArgs {
        release: true,
        ..args.clone()
    };
    let script = format!(
        "{}\
         rein-test-helper bench-hook /run/rein/rein.sock {starts}\n",
        start_agent("")
    );
    let path = guest_script("bench-hook.sh", &script)?;
    let mut status = 0;
    for (series, outcome) in vm::run_script_outcomes(args, &path)? {
        status = status.max(outcome.status);
        println!(
            "\nbench hook on {} (TCG guest, {starts} starts of each bundle in turn; `RUNTIME \
             run` of `true` to exit and deletion, ms):",
            series.name()
        );
        println!(
            "{:<8} {:<48} {:>9} {:>9} {:>18} {:>14}",
            "runtime", "bundle", "p50", "p99", "p50 / plain", "/ null hook"
        );
        let lines = bench_lines(&outcome.lines);
        for r in lines.iter().filter(|r| r.get("runtime").is_some()) {
            let f = |v: &str, k: &str| r[v][k].as_f64().unwrap_or(f64::NAN) / 1e3;
            let plain = f("plain", "median_us");
            let null = f("null_hook", "median_us");
            for (key, label) in [
                ("plain", "no hooks"),
                ("null_hook", "createRuntime hook running `true`"),
                ("rein_exec", "createRuntime hook running `rein --version`"),
                ("hook", "rein's createRuntime hook + annotations"),
                (
                    "hook_and_poststop",
                    "rein's createRuntime and poststop hooks",
                ),
            ] {
                let limit = if key == "hook" {
                    format!(" ({HOOK_RATIO_LIMIT})")
                } else {
                    String::new()
                };
                println!(
                    "{:<8} {label:<48} {:>9.1} {:>9.1} {:>11.2}x{limit:<6} {:>13.2}x",
                    r["runtime"].as_str().unwrap_or("?"),
                    f(key, "median_us"),
                    f(key, "p99_us"),
                    f(key, "median_us") / plain,
                    f(key, "median_us") / null,
                );
            }
        }
        for r in lines.iter().filter_map(|r| r.get("registration")) {
            let f = |v: &str, k: &str| r[v][k].as_f64().unwrap_or(f64::NAN) / 1e3;
            println!(
                "the agent's share: the hook's registration call alone (a fresh connection, \
                 p50 | p99 ms): {:.1} | {:.1} with no other registration, {:.1} | {:.1} with {} \
                 others",
                f("alone", "median_us"),
                f("alone", "p99_us"),
                f("with_others", "median_us"),
                f("with_others", "p99_us"),
                r["others"],
            );
        }
    }
    Ok(status)
}

/// The most a 1000-container scrape may cost over reading the files it exports, and the
/// agent's most resident memory (issue targets, printed beside the figures).
const SCRAPE_RATIO_LIMIT: f64 = 1.5;
const RSS_LIMIT_MIB: f64 = 25.0;
/// The most a container start with rein's hook may cost over one without.
const HOOK_RATIO_LIMIT: f64 = 1.10;
/// The most a limit change through rein may take at p99 over writing the file directly.
const API_RATIO_LIMIT: f64 = 3.0;
/// The most a context switch of a watched task may cost over no agent.
const SCHED_RATIO_LIMIT: f64 = 1.05;

fn print_scrape_tables(kernel: &str, scrapes: u32, runs: &[serde_json::Value]) {
    println!(
        "\nbench metrics on {kernel} (TCG guest, {scrapes} scrapes per size; each container has \
         CPU and memory limits)"
    );
    println!(
        "{:>10} {:>11} {:>11} {:>11} {:>14} {:>11} {:>11} {:>9} {:>15} {:>9}",
        "containers",
        "scrape p50",
        "scrape p99",
        "bare reads",
        "ratio (limit)",
        "per cont.",
        "cpu/scrape",
        "rss",
        "peak rss (lim)",
        "body"
    );
    for r in runs {
        let f = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
        let n = f("containers");
        println!(
            "{:>10} {:>9.1}ms {:>9.1}ms {:>9.1}ms {:>7.2}x ({SCRAPE_RATIO_LIMIT}) {:>9.0}us {:>9.1}ms \
             {:>6.1}MiB {:>6.1}MiB ({RSS_LIMIT_MIB}) {:>6.0}KiB",
            r["containers"],
            f("scrape_us_median") / 1e3,
            f("scrape_us_p99") / 1e3,
            f("bare_reads_us_median") / 1e3,
            f("scrape_us_median") / f("bare_reads_us_median"),
            f("scrape_us_median") / n,
            f("agent_cpu_ms_per_scrape"),
            f("agent_rss_kib") / 1024.0,
            f("agent_peak_rss_kib") / 1024.0,
            f("body_bytes") / 1024.0,
        );
    }
    println!(
        "ratio: a scrape's median over one process reading exactly the files whose figures it \
         exports ({} per container), without parsing or encoding; the limit applies at 1000",
        runs.first()
            .and_then(|r| r["bare_files_per_container"].as_u64())
            .unwrap_or(0)
    );
    println!(
        "where the newest collection's time went (the agent's rein_metrics_collection_*), ms:"
    );
    println!(
        "{:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>12} {:>14}",
        "containers", "files", "maps", "derive", "encode", "http+", "files read", "bytes read"
    );
    for r in runs {
        let c = |k: &str| r["collection"][k].as_f64().unwrap_or(f64::NAN);
        let phases =
            ["files", "maps", "derive", "encode"].map(|p| c(&format!("seconds_{p}")) * 1e3);
        // What the scrape's median took beyond the collection: HTTP, the node's families,
        // the blocking-thread hop.
        let rest =
            r["scrape_us_median"].as_f64().unwrap_or(f64::NAN) / 1e3 - phases.iter().sum::<f64>();
        println!(
            "{:>10} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>9.1} {:>12} {:>14}",
            r["containers"],
            phases[0],
            phases[1],
            phases[2],
            phases[3],
            rest,
            c("read_files"),
            c("read_bytes"),
        );
    }
    let per = |n: u64| {
        runs.iter()
            .find(|r| r["containers"].as_u64() == Some(n))
            .and_then(|r| Some(r["scrape_us_median"].as_f64()? / n as f64))
    };
    if let (Some(a), Some(b)) = (per(100), per(1000)) {
        println!(
            "linearity: cost per container at 1000 / at 100: {:.2} (1.00 is linear)",
            b / a
        );
    }
}

fn print_sched_table(kernel: &str, runs: &[serde_json::Value]) {
    println!(
        "\nbench metrics on {kernel}: the run-queue latency program (pipe ping-pong of two \
         threads on one CPU; median of ten batches, BPF statistics off; runs and ns per run \
         from a pass with them on)"
    );
    println!(
        "{:<34} {:>14} {:>16} {:>16} {:>16} {:>14}",
        "", "ns/roundtrip", "batches min-max", "vs none (limit)", "program runs", "ns per run"
    );
    let none = runs
        .iter()
        .find(|r| r["label"] == "none")
        .and_then(|r| r["ns_per_roundtrip"].as_f64());
    for r in runs {
        let rt = r["ns_per_roundtrip"].as_f64().unwrap_or(f64::NAN);
        let label = match r["label"].as_str() {
            Some("none") => "no agent",
            Some("unwatched") => "agent, task outside rein",
            Some("watched") => "agent, task in a rein container",
            _ => "?",
        };
        let spread = format!(
            "{:.0}-{:.0}",
            r["ns_per_roundtrip_min"].as_f64().unwrap_or(f64::NAN),
            r["ns_per_roundtrip_max"].as_f64().unwrap_or(f64::NAN)
        );
        println!(
            "{label:<34} {rt:>14.0} {spread:>16} {:>9.2}x ({SCHED_RATIO_LIMIT}) {:>16.0} {:>14.0}",
            none.map_or(f64::NAN, |n| rt / n),
            r["sched_program_runs"].as_f64().unwrap_or(f64::NAN),
            r["sched_ns_per_run"].as_f64().unwrap_or(f64::NAN),
        );
    }
}

fn print_shaping_table(kernel: &str, runs: &[serde_json::Value], cost: &str) {
    let f = |v: &serde_json::Value, k: &str| v[k].as_f64();
    let show =
        |x: Option<f64>, prec: usize| x.map_or_else(|| "-".to_owned(), |x| format!("{x:.prec$}"));
    println!(
        "\nbench shaping on {kernel} (TCG guest; sender in the root netns, or for htb-fwd and \
         rein-netns in a container netns the root netns forwards; shaper toward the receiver)"
    );
    println!(
        "(ping and rr: a ping and a 100-byte request/response TCP flow from the same sender as \
         the bulk streams, in ms; jain: fairness among the bulk streams; prio-* rows: two \
         containers with no egress limit through one 100 Mbit/s HTB class with fq under it, \
         ratio = share of it)"
    );
    println!(
        "{:<14} {:>6} {:>7} {:>9} {:>7} {:>8} {:>9} {:>9} {:>8} {:>8} {:>6}",
        "shaper",
        "limit",
        "streams",
        "Mbit/s",
        "ratio",
        "retrans",
        "ping p50",
        "ping p99",
        "rr p50",
        "rr p99",
        "jain"
    );
    for r in runs {
        println!(
            "{:<14} {:>6} {:>7} {:>9} {:>7} {:>8} {:>9} {:>9} {:>8} {:>8} {:>6}",
            r["shaper"].as_str().unwrap_or("?"),
            show(f(r, "limit_mbit"), 0),
            r["streams"],
            show(f(r, "goodput_mbit"), 2),
            show(f(r, "ratio"), 3),
            r["retransmits"],
            show(f(r, "rtt_p50_ms"), 2),
            show(f(r, "rtt_p99_ms"), 2),
            show(f(r, "rr_p50_ms"), 2),
            show(f(r, "rr_p99_ms"), 2),
            show(f(r, "jain"), 3),
        );
    }
    // The row users asked about: a sparse flow inside a container whose 8 bulk streams fill
    // 10 Mbit/s, rein beside HTB + fq_codel.
    let row = |name: &str| {
        runs.iter()
            .find(|r| r["shaper"] == name && f(r, "limit_mbit") == Some(10.0) && r["streams"] == 8)
    };
    if let (Some(rein), Some(htb)) = (row("rein"), row("htb")) {
        let ratio = |k: &str| match (f(rein, k), f(htb, k)) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
            _ => "-".to_owned(),
        };
        println!(
            "10 Mbit/s, 8 streams, rein / htb+fq_codel: ping p99 {}, rr p99 {}, goodput {}, \
             retransmissions {} vs {}",
            ratio("rtt_p99_ms"),
            ratio("rr_p99_ms"),
            ratio("goodput_mbit"),
            rein["retransmits"],
            htb["retransmits"],
        );
    }
    let rate = |name: &str| {
        runs.iter()
            .find(|r| r["shaper"] == name)
            .and_then(|r| f(r, "goodput_mbit"))
    };
    if let (Some(none), Some(attached)) = (rate("none"), rate("rein-attached")) {
        println!(
            "unlimited throughput with rein's programs attached / none: {:.3} ({attached:.0} vs {none:.0} Mbit/s)",
            attached / none
        );
    }
    println!("rein's programs per packet (BPF_PROG_TEST_RUN, egress and ingress mean): {cost}");
}
