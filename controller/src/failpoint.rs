//! Places where the VM tests make the agent die (to prove that what it does is all or
//! nothing across a crash) or stall (to prove that one slow operation holds up no other).

/// When the environment variable `REIN_FAILPOINT` names `name`, aborts the process, as a
/// SIGKILL would (no unwinding, no cleanup); when it is `name:sleep=SECS`, sleeps that long
/// there instead, as a slow kernel write would (a `memory.max` below the usage reclaims
/// before it returns). Unset in normal use: one `getenv` per call.
pub fn hit(name: &str) {
    let Ok(v) = std::env::var("REIN_FAILPOINT") else {
        return;
    };
    if v == name {
        tracing::error!("failpoint {name}: aborting (REIN_FAILPOINT)");
        std::process::abort();
    }
    let secs = v
        .strip_prefix(name)
        .and_then(|rest| rest.strip_prefix(":sleep="))
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| (0.0..=60.0).contains(s));
    if let Some(secs) = secs {
        tracing::warn!("failpoint {name}: sleeping {secs} s (REIN_FAILPOINT)");
        std::thread::sleep(std::time::Duration::from_secs_f64(secs));
    }
}
