//! The API's handlers, driven with one request each against a node over a temporary
//! directory: must never panic, and every error is a JSON error.
#![no_main]

use libfuzzer_sys::fuzz_target;

// The check lives in the controller crate, so the unit tests replay the seeds through it.
fuzz_target!(|data: &[u8]| controller::fuzz_checks::api_handlers(data));
