//! What a runtime hands `rein hook`: the OCI state and the bundle's config.json (input: the
//! two JSON documents separated by a NUL byte). Must never panic, and a container it accepts
//! has a valid name and a cgroup directory inside the cgroup2 mount.
#![no_main]

use std::path::{Component, Path};

use controller::hook::bundle;
use libfuzzer_sys::fuzz_target;
use oci_spec::runtime::{Spec, State};

fuzz_target!(|data: &[u8]| {
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
});
