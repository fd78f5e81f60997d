//! Pieces of the guest scripts that several commands run in the test VM (benches, the demo,
//! the screenshot, the fleet): starting the agent, writing a script, reading its results.

use std::path::PathBuf;

use crate::paths::workspace_root;

/// Guest shell lines that start `rein agent ARGS` in the background (its pid in `$AGENT`, its
/// log in /tmp/agent.log) and wait up to 30 s for its socket.
pub fn start_agent(args: &str) -> String {
    format!(
        "rein agent {args} 2>/tmp/agent.log &\n\
         AGENT=$!\n\
         i=0; while [ ! -S /run/rein/rein.sock ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done\n"
    )
}

/// Writes a guest script under target/vm and returns its path.
pub fn guest_script(name: &str, text: &str) -> anyhow::Result<PathBuf> {
    let path: PathBuf = workspace_root().join("target").join("vm").join(name);
    std::fs::create_dir_all(path.parent().unwrap_or(&path))?;
    std::fs::write(&path, text)?;
    Ok(path)
}

/// The `BENCH {json}` lines of a guest's output.
pub fn bench_lines(lines: &[String]) -> Vec<serde_json::Value> {
    lines
        .iter()
        .filter_map(|l| serde_json::from_str(l.strip_prefix("BENCH ")?).ok())
        .collect()
}
