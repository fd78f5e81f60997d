//! The agent's request bodies: JSON for `POST /v1/containers` and `PATCH`, then the shared
//! limits parser. Must never panic.
#![no_main]

use controller::api::{CreateRequest, LimitsBody, limits_from_map};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = serde_json::from_slice::<CreateRequest>(data) {
        let _ = req.name.parse::<controller::cgroup::ContainerName>();
        let _ = limits_from_map(&req.limits);
    }
    if let Ok(body) = serde_json::from_slice::<LimitsBody>(data) {
        let _ = limits_from_map(&body.limits);
    }
});
