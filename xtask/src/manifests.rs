//! `deploy/kubernetes/` checked offline, no cluster needed: every Kubernetes manifest against
//! the API's JSON schemas and TypeScript types (kubernetes-models, and the Prometheus
//! Operator's for the PodMonitor), and the Prometheus scrape config with promtool (Debian
//! trixie's, which knows Kubernetes service discovery). Each check also runs on a copy with a
//! deliberate mistake that it must refuse: a checker that accepts anything fails the suite.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail, ensure};

use crate::paths::workspace_root;

/// The manifests and the scrape config.
fn dir() -> PathBuf {
    workspace_root().join("deploy").join("kubernetes")
}

pub fn check(node_dir: &Path, promtool: &Path) -> anyhow::Result<()> {
    let mut manifests: Vec<PathBuf> = std::fs::read_dir(dir())
        .with_context(|| format!("reading {}", dir().display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    manifests.sort();
    ensure!(!manifests.is_empty(), "no manifests in {}", dir().display());
    let work = node_dir.join("check");
    std::fs::create_dir_all(&work)?;
    std::fs::write(work.join("manifests.mjs"), include_str!("manifests.mjs"))?;

    if !kubernetes_ok(node_dir, &manifests, true)? {
        bail!("deploy/kubernetes: the manifests do not validate (see the errors above)");
    }
    // A misspelt field must be refused (the schemas alone let unknown fields through).
    let broken = with_typo(
        &dir().join("rein.yaml"),
        &work,
        "readinessProbe:",
        "readinesProbe:",
    )?;
    ensure!(
        !kubernetes_ok(node_dir, &[broken], false)?,
        "the manifest check accepted a DaemonSet with a misspelt field (readinesProbe)"
    );
    eprintln!("   manifests valid; a misspelt field is refused");

    let config = dir().join("prometheus.yml");
    ensure!(
        promtool_run(promtool, &["check", "config"], &config, true)?,
        "promtool check config refuses {}",
        config.display()
    );
    let broken = with_typo(&config, &work, "honor_labels:", "honour_labels:")?;
    ensure!(
        !promtool_run(promtool, &["check", "config"], &broken, false)?,
        "promtool accepted a scrape config with a misspelt key (honour_labels)"
    );
    eprintln!("   prometheus.yml valid (promtool); a misspelt key is refused");

    // The alerts: rules.yaml's spec (written out by the manifest check) through promtool,
    // then rules.test.yml's synthetic series; a copy with a threshold moved must fail them.
    let rules = work.join("rein-rules.json");
    ensure!(
        rules.is_file(),
        "the manifest check wrote no {}",
        rules.display()
    );
    let tests = dir().join("rules.test.yml");
    std::fs::copy(&tests, work.join("rules.test.yml"))?;
    ensure!(
        promtool_run(promtool, &["check", "rules"], &rules, true)?
            && promtool_run(
                promtool,
                &["test", "rules"],
                &work.join("rules.test.yml"),
                true
            )?,
        "promtool refuses deploy/kubernetes/rules.yaml or its tests (see above)"
    );
    let broken = work.join("broken-rules");
    std::fs::create_dir_all(&broken)?;
    let text = std::fs::read_to_string(&rules)?;
    ensure!(
        text.contains("> 0.25"),
        "rules.yaml lost its 25% throttling threshold"
    );
    std::fs::write(
        broken.join("rein-rules.json"),
        text.replace("> 0.25", "> 0.95"),
    )?;
    std::fs::copy(&tests, broken.join("rules.test.yml"))?;
    ensure!(
        !promtool_run(
            promtool,
            &["test", "rules"],
            &broken.join("rules.test.yml"),
            false
        )?,
        "promtool test rules passed with the throttling alert's threshold moved to 95%"
    );
    eprintln!("   rules.yaml valid and its tests pass (promtool); a moved threshold fails them");
    Ok(())
}

/// `promtool ARGS FILE`; false when it refuses. Quiet unless `loud`.
fn promtool_run(promtool: &Path, args: &[&str], file: &Path, loud: bool) -> anyhow::Result<bool> {
    let mut cmd = Command::new(promtool);
    cmd.args(args).arg(file);
    if !loud {
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
    }
    Ok(cmd
        .status()
        .with_context(|| format!("running {}", promtool.display()))?
        .success())
}

/// A copy of `file` in `work` with `from` misspelt as `to`, for a check that must refuse it.
fn with_typo(file: &Path, work: &Path, from: &str, to: &str) -> anyhow::Result<PathBuf> {
    let text = std::fs::read_to_string(file)?;
    ensure!(text.contains(from), "{} lost its {from:?}", file.display());
    let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let broken = work.join(format!("broken-{name}"));
    std::fs::write(&broken, text.replace(from, to))?;
    Ok(broken)
}

/// Schema validation and `tsc --strict` over `files` (the script is in `node_dir/check`); false when either refuses them.
fn kubernetes_ok(node_dir: &Path, files: &[PathBuf], loud: bool) -> anyhow::Result<bool> {
    let work = node_dir.join("check");
    let script = work.join("manifests.mjs");
    let ts = work.join("manifests.ts");
    let quiet = |c: &mut Command| {
        if !loud {
            c.stdout(Stdio::null()).stderr(Stdio::null());
        }
    };
    let mut node = Command::new("node");
    node.arg(&script).arg(&ts).args(files).current_dir(node_dir);
    quiet(&mut node);
    if !node
        .status()
        .context("node (Node.js) is needed for the manifest check: apt-get install nodejs")?
        .success()
    {
        return Ok(false);
    }
    let mut tsc = crate::dashboards::tsc(node_dir, &[ts]);
    quiet(&mut tsc);
    Ok(tsc.status()?.success())
}
