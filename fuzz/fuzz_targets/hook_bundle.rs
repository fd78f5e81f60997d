//! What a runtime hands `rein hook`: the OCI state and the bundle's config.json (input: the
//! two JSON documents separated by a NUL byte). Must never panic, and a container it accepts
//! has a valid name and a cgroup directory inside the cgroup2 mount.
#![no_main]

use libfuzzer_sys::fuzz_target;

// The check lives in the controller crate, so the unit tests replay the seeds through it.
fuzz_target!(|data: &[u8]| controller::fuzz_checks::hook_bundle(data));
