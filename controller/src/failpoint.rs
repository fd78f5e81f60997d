//! Places where the VM tests make the agent die, to prove that what it does is all or
//! nothing across a crash.

/// Aborts the process, as a SIGKILL would (no unwinding, no cleanup), when the environment
/// variable `REIN_FAILPOINT` names `name`. Unset in normal use: one `getenv` per call.
pub fn hit(name: &str) {
    if std::env::var("REIN_FAILPOINT").is_ok_and(|v| v == name) {
        tracing::error!("failpoint {name}: aborting (REIN_FAILPOINT)");
        std::process::abort();
    }
}
