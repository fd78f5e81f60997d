//! The agent's request bodies: JSON for `POST /v1/containers` and `PATCH`, then the shared
//! limits parser. Must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

// The check lives in the controller crate, so the unit tests replay the seeds through it.
fuzz_target!(|data: &[u8]| controller::fuzz_checks::api_json(data));
