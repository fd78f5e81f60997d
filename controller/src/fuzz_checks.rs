//! What the fuzz targets in `fuzz/` check on each input, kept here so that one definition
//! serves both: `cargo xtask fuzz` runs them under libFuzzer, and the unit test below replays
//! the committed seeds (`fuzz/seeds/<target>/`) on every `cargo test`. A crash that fuzzing
//! finds is added there as a seed and stays a test. Each function panics on a violation.

use std::path::{Component, Path};

use oci_spec::runtime::{Spec, State};

use crate::{
    api::{CreateRequest, LimitsBody, limits_from_map},
    cgroup::ContainerName,
    hook::bundle,
    limits::Limits,
};

/// The agent's request bodies: JSON for `POST /v1/containers` and `PATCH`, then the shared
/// limits parser. Must never panic.
pub fn api_json(data: &[u8]) {
    if let Ok(req) = serde_json::from_slice::<CreateRequest>(data) {
        let _ = req.name.parse::<ContainerName>();
        let _ = limits_from_map(&req.limits);
    }
    if let Ok(body) = serde_json::from_slice::<LimitsBody>(data) {
        let _ = limits_from_map(&body.limits);
    }
}

/// What a runtime hands `rein hook`: the OCI state and the bundle's config.json (the two
/// JSON documents separated by a NUL byte). Must never panic, and a container it accepts
/// has a valid name and a cgroup directory inside the cgroup2 mount.
pub fn hook_bundle(data: &[u8]) {
    let mut parts = data.splitn(2, |b| *b == 0);
    let (Some(state), Some(config)) = (parts.next(), parts.next()) else {
        return;
    };
    let (Ok(state), Ok(spec)) = (
        serde_json::from_slice::<State>(state),
        serde_json::from_slice::<Spec>(config),
    ) else {
        return;
    };
    let root = Path::new("/sys/fs/cgroup");
    if let Ok(c) = bundle::from_parts(&state, &spec, root) {
        assert!(
            c.cgroup.starts_with(root) && c.cgroup != root,
            "{:?}",
            c.cgroup
        );
        assert!(
            !c.cgroup
                .components()
                .any(|x| matches!(x, Component::ParentDir)),
            "{:?}",
            c.cgroup
        );
        assert!(c.limits.validate().is_ok(), "{:?}", c.limits);
    }
}

/// The limits parser, as `rein run`/`set`, the API and annotations feed it: lines of
/// `name=value`. It must never panic, and whatever it accepts must print as flags that
/// parse back to the same limits.
pub fn limits(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let pairs: Vec<(&str, &str)> = text.lines().filter_map(|l| l.split_once('=')).collect();
    if let Ok(limits) = Limits::from_named_pairs(pairs) {
        let shown = limits.to_pairs();
        let again = Limits::from_pairs(shown.iter().map(|(f, v)| (*f, v.as_str())))
            .unwrap_or_else(|e| panic!("{limits:?} printed as {shown:?}, which fails: {e}"));
        assert_eq!(again, limits, "round trip through {shown:?}");
    }
}

/// One request to the API's handlers, against a node over a temporary directory (fake
/// cgroup files, no eBPF programs): the first line is `METHOD PATH`, the rest the body; the
/// first byte's low bit picks the peer (root or an allowed uid). Must never panic, and every
/// answer is a success or a JSON error that says what was wrong.
pub fn api_handlers(data: &[u8]) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static RUN: AtomicUsize = AtomicUsize::new(0);
    let uid = if data.first().is_some_and(|b| b & 1 == 1) {
        1000
    } else {
        0
    };
    let text = String::from_utf8_lossy(data.get(1..).unwrap_or_default()).into_owned();
    let (head, body) = text.split_once('\n').unwrap_or((&text, ""));
    let (method, path) = head.split_once(' ').unwrap_or((head, "/"));
    let (Ok(method), Ok(uri)) = (
        axum::http::Method::from_bytes(method.as_bytes()),
        path.parse::<axum::http::Uri>(),
    ) else {
        return;
    };
    let Ok(request) = axum::http::Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body.to_owned()))
    else {
        return;
    };
    let scratch = std::env::temp_dir().join(format!(
        "rein-fuzz-{}-{}",
        std::process::id(),
        RUN.fetch_add(1, Ordering::Relaxed)
    ));
    let root = scratch.join("rein.slice");
    std::fs::create_dir_all(&root).expect("a scratch directory");
    let node = std::sync::Arc::new(crate::node::Node::new(
        crate::cgroup::Tree::unchecked(&root),
        Err("no eBPF programs in the fuzz checks".into()),
        crate::node::ShaperOverrides::default(),
    ));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let (status, bytes) = rt.block_on(async {
        let app = crate::api::server::router_as(node, uid);
        let resp = tower::ServiceExt::oneshot(app, request)
            .await
            .expect("the router always answers");
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .expect("a whole answer");
        (status, bytes)
    });
    let _ = std::fs::remove_dir_all(&scratch);
    if !status.is_success() {
        let error = serde_json::from_slice::<crate::api::ErrorBody>(&bytes);
        assert!(
            error.is_ok_and(|e| !e.error.is_empty()),
            "{status} without a JSON error: {:?}",
            String::from_utf8_lossy(&bytes)
        );
    }
}

/// One target's check of one input (panics on a violation).
pub type Check = fn(&[u8]);

/// The targets by the names `fuzz/Cargo.toml` gives them.
pub const TARGETS: [(&str, Check); 4] = [
    ("limits", limits),
    ("api_json", api_json),
    ("hook_bundle", hook_bundle),
    ("api_handlers", api_handlers),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_committed_seed_passes_its_targets_checks() {
        let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds");
        for (target, check) in TARGETS {
            let dir = seeds.join(target);
            let mut files: Vec<_> = std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
                .flatten()
                .map(|e| e.path())
                .collect();
            files.sort();
            assert!(!files.is_empty(), "no seeds for {target}");
            for f in files {
                let data = std::fs::read(&f).unwrap();
                eprintln!("{target}: {}", f.display());
                check(&data);
            }
        }
    }
}
