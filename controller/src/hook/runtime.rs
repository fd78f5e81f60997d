//! `rein runtime` (also reached as `rein-runtime`, a symlink to rein): a runc wrapper in the
//! nvidia-container-runtime pattern. For `create` and `run` it adds rein's createRuntime hook
//! to the bundle's config.json, then it execs the real runtime with the same arguments, so
//! Docker can use rein without a hooks directory (no poststop: the agent forgets a deleted
//! container by itself within a second, and a container start then runs one hook process):
//! `dockerd --add-runtime rein=/usr/local/bin/rein-runtime`.
//!
//! Docker before 24 has no `docker run --annotation`, but the container's environment reaches
//! the spec: with `REIN_LIMITS_FROM_ENV=1` in the engine's environment, the wrapper copies
//! every `rein/` entry of `process.env` into the annotations (`docker run -e
//! rein/egress=20mbit -e rein/name=web`), the way nvidia-container-runtime reads
//! `NVIDIA_VISIBLE_DEVICES`. It is opt-in because an image's `ENV` reaches the spec the same
//! way (the operator's `[hook_ceiling]` bounds both, as it bounds annotations), and never
//! applies to Kubernetes' containers (see [`env_annotations`]).
//!
//! Environment: `REIN_RUNTIME` (the runtime to exec, default `runc` from PATH),
//! `REIN_LIMITS_FROM_ENV=1` (the environment's `rein/` entries count as annotations),
//! `REIN_SOCKET` (passed on to the hook), `REIN_HOOK_FAIL_OPEN=1` (the hook gets
//! `--fail-open`).
//!
//! config.json is edited as plain JSON, not through oci-spec's typed `Spec`: a round trip
//! through a typed model drops what the model does not know (fields of a newer spec, a
//! runtime's extensions), and the wrapper must hand the runtime everything it was given.

use std::{
    ffi::OsString,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use super::stage::Stage;

/// runc's and crun's global options that take a separate value.
const VALUE_OPTIONS: &[&str] = &[
    "--root",
    "--log",
    "--log-format",
    "--log-level",
    "--criu",
    "--rootless",
    "--cgroup-manager",
];

/// Seconds the runtime gives each hook before killing it (OCI `timeout`); the hook bounds
/// itself below that (`rein hook --timeout`, 5 s).
const HOOK_TIMEOUT_SECS: u64 = 10;

/// The subcommand (index and name) among runtime arguments: the first argument that is not
/// a global option or an option's value.
fn subcommand(args: &[OsString]) -> Option<(usize, &str)> {
    let mut i = 0;
    while let Some(arg) = args.get(i) {
        let a = arg.to_str()?;
        if VALUE_OPTIONS.contains(&a) {
            i += 2;
        } else if a.starts_with('-') {
            i += 1;
        } else {
            return Some((i, a));
        }
    }
    None
}

/// The bundle directory of a `create`/`run` invocation (`--bundle`, `-b`, default `.`).
fn bundle(args: &[OsString]) -> PathBuf {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let s = a.to_string_lossy();
        if s == "--bundle" || s == "-b" {
            if let Some(v) = it.next() {
                return PathBuf::from(v);
            }
        } else if let Some(v) = s
            .strip_prefix("--bundle=")
            .or_else(|| s.strip_prefix("-b="))
        {
            return PathBuf::from(v);
        }
    }
    PathBuf::from(".")
}

/// The hook entry for one stage: rein at `exe`, with the socket and failure policy given.
fn hook_entry(exe: &Path, stage: Stage, socket: Option<&str>, fail_open: bool) -> Value {
    let mut args = vec!["rein".to_owned()];
    if let Some(s) = socket {
        args.extend(["--socket".to_owned(), s.to_owned()]);
    }
    args.extend(["hook".to_owned(), stage.name().to_owned()]);
    if fail_open {
        args.push("--fail-open".to_owned());
    }
    json!({ "path": exe, "args": args, "timeout": HOOK_TIMEOUT_SECS })
}

/// Adds rein's createRuntime hook to a config.json document unless a rein hook for that stage
/// is there.
/// Returns whether it changed anything.
pub fn add_hooks(config: &mut Value, exe: &Path, socket: Option<&str>, fail_open: bool) -> bool {
    let Some(obj) = config.as_object_mut() else {
        return false;
    };
    let hooks = obj.entry("hooks").or_insert_with(|| json!({}));
    if !hooks.is_object() {
        *hooks = json!({});
    }
    let mut changed = false;
    for stage in [Stage::CreateRuntime] {
        let Some(list) = hooks
            .as_object_mut()
            .map(|h| h.entry(stage.name()).or_insert_with(|| json!([])))
        else {
            continue;
        };
        if !list.is_array() {
            *list = json!([]);
        }
        let Some(list) = list.as_array_mut() else {
            continue;
        };
        let present = list.iter().any(|h| {
            h["args"].as_array().is_some_and(|a| {
                a.iter().any(|x| x == "hook") && a.iter().any(|x| x == stage.name())
            }) && h["path"].as_str().is_some_and(|p| p.ends_with("rein"))
        });
        if !present {
            list.push(hook_entry(exe, stage, socket, fail_open));
            changed = true;
        }
    }
    changed
}

/// Copies the `rein/KEY=VALUE` entries of the spec's `process.env` into its annotations (see
/// the module doc), unless the container is Kubernetes' (its annotations name a pod: there
/// the orchestrator's annotations are the only source, and pod authors must not reach rein
/// around containerd's `pod_annotations` list). An annotation already there with another
/// value, or one key twice in the environment with two values, is an error: the limit must
/// be given once. Returns whether it changed anything.
pub fn env_annotations(config: &mut Value) -> anyhow::Result<bool> {
    let in_kubernetes = config["annotations"].as_object().is_some_and(|a| {
        a.keys()
            .any(|k| k.starts_with("io.kubernetes.cri.") || k.starts_with("io.kubernetes.cri-o."))
    });
    if in_kubernetes {
        return Ok(false);
    }
    let mut pairs: Vec<(String, String)> = Vec::new();
    for (k, v) in config["process"]["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter(|e| e.starts_with(super::annotations::PREFIX))
        .filter_map(|e| e.split_once('='))
    {
        match pairs.iter().find(|(key, _)| key == k) {
            Some((_, was)) if was != v => {
                bail!("the environment gives {k} twice, {k}={was} and {k}={v}: give the limit once")
            }
            Some(_) => {}
            None => pairs.push((k.to_owned(), v.to_owned())),
        }
    }
    if pairs.is_empty() {
        return Ok(false);
    }
    let Some(obj) = config.as_object_mut() else {
        return Ok(false);
    };
    let annotations = obj.entry("annotations").or_insert_with(|| json!({}));
    if !annotations.is_object() {
        *annotations = json!({});
    }
    let mut changed = false;
    for (key, value) in pairs {
        match annotations.get(&key).and_then(Value::as_str) {
            Some(v) if v == value => {}
            Some(v) => bail!(
                "the environment's {key}={value} and the annotation {key}={v} differ: give the \
                 limit once, with `-e` or with `--annotation`"
            ),
            None => {
                annotations[key.as_str()] = Value::from(value);
                changed = true;
            }
        }
    }
    Ok(changed)
}

/// Edits the bundle's config.json in place (through a temporary file and a rename, so the
/// runtime never reads half a file).
fn prepare_bundle(dir: &Path) -> anyhow::Result<()> {
    let path = dir.join("config.json");
    let text = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut config: Value =
        serde_json::from_slice(&text).with_context(|| format!("{} is not JSON", path.display()))?;
    let exe = std::env::current_exe().context("finding rein's own binary")?;
    let socket = std::env::var("REIN_SOCKET").ok();
    let fail_open = std::env::var("REIN_HOOK_FAIL_OPEN").is_ok_and(|v| v == "1");
    // Opt-in (REIN_LIMITS_FROM_ENV=1 in the engine's environment): an image's ENV reaches
    // the spec as the container's creator's `-e` does.
    let from_env = std::env::var("REIN_LIMITS_FROM_ENV").is_ok_and(|v| v == "1")
        && match env_annotations(&mut config) {
            Ok(changed) => changed,
            // The hook would start the container without rein's limits: so does this.
            Err(e) if fail_open => {
                eprintln!(
                    "rein runtime: warning: {e:#}; starting without the environment's limits"
                );
                false
            }
            Err(e) => return Err(e),
        };
    if !add_hooks(&mut config, &exe, socket.as_deref(), fail_open) && !from_env {
        return Ok(());
    }
    replace_file(&path, &serde_json::to_vec_pretty(&config)?)
}

/// Replaces `path` with `bytes` through a new file beside it, then a rename, so the runtime
/// never reads half a file. The new file is created exclusively (a file or symlink someone
/// placed under its name is never written through) with the original's mode.
fn replace_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::{
        io::Write as _,
        os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _},
    };
    let mode = std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .permissions()
        .mode()
        & 0o7777;
    let tmp = path.with_file_name(format!(".config.json.rein.{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        // The umask may have taken bits of the mode away.
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.write_all(bytes)
    };
    if let Err(e) = write() {
        if e.kind() != std::io::ErrorKind::AlreadyExists {
            let _ = std::fs::remove_file(&tmp);
        }
        return Err(e).with_context(|| format!("writing {}", tmp.display()));
    }
    std::fs::rename(&tmp, path).with_context(|| {
        let _ = std::fs::remove_file(&tmp);
        format!("replacing {}", path.display())
    })
}

/// Adds the hooks where the command creates a container, then becomes the real runtime.
/// Returns only on failure.
pub fn exec(args: Vec<OsString>) -> anyhow::Error {
    let runtime = std::env::var_os("REIN_RUNTIME").unwrap_or_else(|| "runc".into());
    if let Some((i, "create" | "run")) = subcommand(&args) {
        let dir = bundle(&args[i + 1..]);
        if let Err(e) = prepare_bundle(&dir) {
            return e.context(format!(
                "rein runtime: adding rein's hooks to the bundle {}",
                dir.display()
            ));
        }
    }
    let err = std::process::Command::new(&runtime).args(&args).exec();
    let e: anyhow::Error = err.into();
    e.context(format!(
        "rein runtime: executing {} (set REIN_RUNTIME to the runtime's path)",
        runtime.to_string_lossy()
    ))
}

/// Fails when the wrapper was called without runtime arguments.
pub fn check_args(args: &[OsString]) -> anyhow::Result<()> {
    if args.is_empty() {
        bail!(
            "rein runtime takes the runtime's arguments, e.g. `rein runtime run -b BUNDLE ID`; \
             for Docker: dockerd --add-runtime rein=/usr/local/bin/rein-runtime"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn finds_the_subcommand_and_bundle_the_way_dockerd_calls_runc() {
        let args = os(&[
            "--root",
            "/run/docker/runtime-runc/moby",
            "--log",
            "/run/x/log.json",
            "--log-format",
            "json",
            "--systemd-cgroup",
            "create",
            "--bundle",
            "/run/x/bundle",
            "--pid-file",
            "/run/x/init.pid",
            "abc",
        ]);
        let (i, cmd) = subcommand(&args).unwrap();
        assert_eq!(cmd, "create");
        assert_eq!(bundle(&args[i + 1..]), PathBuf::from("/run/x/bundle"));
        assert_eq!(bundle(&os(&["-b=/b", "x"])), PathBuf::from("/b"));
        assert_eq!(bundle(&os(&["x"])), PathBuf::from("."));
        assert_eq!(
            subcommand(&os(&["--debug", "start", "x"])).unwrap().1,
            "start"
        );
        assert_eq!(subcommand(&os(&["--root", "/r"])), None);
    }

    #[test]
    fn the_config_is_replaced_whole_with_its_mode_and_never_through_a_planted_file() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.json");
        std::fs::write(&config, "{}").unwrap();
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o640)).unwrap();
        replace_file(&config, b"{\"new\": 1}").unwrap();
        assert_eq!(std::fs::read_to_string(&config).unwrap(), "{\"new\": 1}");
        let mode = std::fs::metadata(&config).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o640);
        // A symlink planted under the temporary name is refused, its target untouched.
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        let tmp = dir
            .path()
            .join(format!(".config.json.rein.{}", std::process::id()));
        std::os::unix::fs::symlink(&victim, &tmp).unwrap();
        let err = replace_file(&config, b"{}").unwrap_err();
        assert!(format!("{err:#}").contains(".config.json.rein"), "{err:#}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        assert_eq!(std::fs::read_to_string(&config).unwrap(), "{\"new\": 1}");
    }

    #[test]
    fn adds_each_hook_once_and_keeps_the_rest_of_the_config() {
        let mut c = json!({
            "ociVersion": "1.0.2",
            "future-field": {"kept": true},
            "hooks": {"poststop": [{"path": "/bin/other"}]}
        });
        let exe = Path::new("/usr/local/bin/rein");
        assert!(add_hooks(&mut c, exe, Some("/run/r.sock"), true));
        assert!(!add_hooks(&mut c, exe, None, false));
        assert_eq!(c["future-field"]["kept"], true);
        // Others' hooks are kept; rein adds no poststop (the agent forgets deleted cgroups).
        assert_eq!(c["hooks"]["poststop"].as_array().unwrap().len(), 1);
        let create = &c["hooks"]["createRuntime"][0];
        assert_eq!(create["path"], "/usr/local/bin/rein");
        assert_eq!(
            create["args"],
            json!([
                "rein",
                "--socket",
                "/run/r.sock",
                "hook",
                "createRuntime",
                "--fail-open"
            ])
        );
        let mut not_object = json!([1]);
        assert!(!add_hooks(&mut not_object, exe, None, false));
    }
}

#[cfg(test)]
mod env_tests {
    use serde_json::json;

    use super::env_annotations;

    #[test]
    fn rein_entries_of_the_environment_become_annotations_once() {
        let mut c = json!({
            "process": {"env": ["PATH=/bin", "rein/egress=20mbit", "rein/name=web", "REIN_X=1"]},
            "annotations": {"rein/name": "web", "other": "kept"}
        });
        assert!(env_annotations(&mut c).unwrap());
        assert_eq!(
            c["annotations"],
            json!({"rein/name": "web", "rein/egress": "20mbit", "other": "kept"})
        );
        // Idempotent: a second pass (a runtime retried) changes nothing.
        assert!(!env_annotations(&mut c).unwrap());
        // A Kubernetes container's environment is never read: pod authors set it.
        let mut pod = json!({
            "process": {"env": ["rein/egress=1gbit"]},
            "annotations": {"io.kubernetes.cri.sandbox-name": "p"}
        });
        assert!(!env_annotations(&mut pod).unwrap());
        assert!(pod["annotations"].get("rein/egress").is_none());
        // One key twice with two values: refused; twice alike: fine.
        let mut twice = json!({"process": {"env": ["rein/egress=1M", "rein/egress=2M"]}});
        let e = env_annotations(&mut twice).unwrap_err().to_string();
        assert!(e.contains("twice"), "{e}");
        let mut alike = json!({"process": {"env": ["rein/egress=1M", "rein/egress=1M"]}});
        assert!(env_annotations(&mut alike).unwrap());
        // No rein/ entry: nothing to do, no annotations object made.
        let mut plain = json!({"process": {"env": ["PATH=/bin"]}});
        assert!(!env_annotations(&mut plain).unwrap());
        assert!(plain.get("annotations").is_none());
    }

    #[test]
    fn an_environment_entry_that_contradicts_an_annotation_is_refused() {
        let mut c = json!({
            "process": {"env": ["rein/egress=20mbit"]},
            "annotations": {"rein/egress": "10mbit"}
        });
        let e = env_annotations(&mut c).unwrap_err().to_string();
        assert!(
            e.contains("rein/egress=20mbit") && e.contains("rein/egress=10mbit"),
            "{e}"
        );
        assert_eq!(c["annotations"]["rein/egress"], "10mbit");
    }
}
