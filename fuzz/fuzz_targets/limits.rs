//! The limits parser, as `rein run`/`set`, the API and annotations feed it: lines of
//! `name=value`. It must never panic, and whatever it accepts must print as flags that parse
//! back to the same limits.
#![no_main]

use libfuzzer_sys::fuzz_target;

// The check lives in the controller crate, so the unit tests replay the seeds through it.
fuzz_target!(|data: &[u8]| controller::fuzz_checks::limits(data));
