//! The two pieces of systemd's service protocol the agent speaks, without libsystemd:
//! socket activation (sd_listen_fds(3): the API socket handed over as fd 3, so that
//! `rein.socket` holds it, and container starts through the hook queue there while the agent
//! restarts) and readiness (sd_notify(3): `READY=1` once the agent serves, for
//! `Type=notify`). Outside systemd neither environment variable is set and both do nothing.

use std::os::{
    fd::{FromRawFd as _, RawFd},
    unix::net::{UnixDatagram, UnixListener},
};

use anyhow::bail;

/// The first file descriptor systemd passes (SD_LISTEN_FDS_START).
const FIRST_FD: RawFd = 3;

/// The API socket systemd passed, if it passed one to this process: fd 3, which must be a
/// listening Unix stream socket. The variables are removed, so no child inherits them.
/// Call before any thread starts (it changes the environment).
pub fn activated_listener() -> anyhow::Result<Option<UnixListener>> {
    let (pid, fds) = (
        std::env::var("LISTEN_PID").ok(),
        std::env::var("LISTEN_FDS").ok(),
    );
    // SAFETY: called at the agent's start, before it starts any thread.
    unsafe {
        std::env::remove_var("LISTEN_PID");
        std::env::remove_var("LISTEN_FDS");
        std::env::remove_var("LISTEN_FDNAMES");
    }
    listener_for(pid.as_deref(), fds.as_deref(), std::process::id())
}

/// The listener passed to `me`, given the values of LISTEN_PID and LISTEN_FDS.
fn listener_for(
    pid: Option<&str>,
    fds: Option<&str>,
    me: u32,
) -> anyhow::Result<Option<UnixListener>> {
    let for_us = pid.and_then(|p| p.parse::<u32>().ok()) == Some(me);
    let count = fds.and_then(|n| n.parse::<u32>().ok()).unwrap_or(0);
    if !for_us || count == 0 {
        return Ok(None);
    }
    if count > 1 {
        bail!(
            "systemd passed {count} sockets; rein takes one, the API socket (rein.socket's \
             ListenStream=)"
        );
    }
    if !is_unix_stream_listener(FIRST_FD) {
        bail!(
            "the socket systemd passed (fd 3) is not a listening Unix stream socket: set \
             ListenStream=/run/rein/rein.sock in rein.socket"
        );
    }
    // SAFETY: fd 3 is ours (systemd passed it to this pid), open, and owned by nothing else.
    let listener = unsafe { UnixListener::from_raw_fd(FIRST_FD) };
    listener.set_nonblocking(true)?;
    // SAFETY: fcntl(2) on an fd we own; FD_CLOEXEC keeps it from processes we start.
    unsafe { libc::fcntl(FIRST_FD, libc::F_SETFD, libc::FD_CLOEXEC) };
    Ok(Some(listener))
}

/// Refuses a passed socket at another path than rein's own (the CLI, the hook and the
/// instance lock use `socket`), and warns when other uids are allowed but the socket's
/// mode (rein.socket's `SocketMode=`) keeps them out.
pub fn check_passed_socket(
    listener: &UnixListener,
    socket: &std::path::Path,
    others_allowed: bool,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    if addr.as_pathname() != Some(socket) {
        bail!(
            "systemd passed the socket {:?}, but rein's socket is {}: set ListenStream= in \
             rein.socket and `socket` in rein.toml (or --socket) to the same path",
            addr.as_pathname(),
            socket.display()
        );
    }
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(socket)?.permissions().mode();
    if others_allowed && mode & 0o006 != 0o006 {
        tracing::warn!(
            "allowed_uids are set, but the socket systemd passed has mode {:o}, which keeps \
             them out: set SocketMode=0666 in rein.socket (rein checks each connection's uid)",
            mode & 0o777
        );
    }
    Ok(())
}

/// Whether `fd` is an AF_UNIX SOCK_STREAM socket that listens.
fn is_unix_stream_listener(fd: RawFd) -> bool {
    let get = |opt: libc::c_int| {
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt(2) writes one c_int into `v`, whose size `len` gives.
        let r = unsafe {
            libc::getsockopt(fd, libc::SOL_SOCKET, opt, (&raw mut v).cast(), &raw mut len)
        };
        (r == 0).then_some(v)
    };
    get(libc::SO_DOMAIN) == Some(libc::AF_UNIX)
        && get(libc::SO_TYPE) == Some(libc::SOCK_STREAM)
        && get(libc::SO_ACCEPTCONN) == Some(1)
}

/// Tells systemd the service's state (`READY=1`, `STOPPING=1`) when it asked to be told
/// (`NOTIFY_SOCKET`, set for `Type=notify`); a failure is logged, never fatal.
pub fn notify(state: &str) {
    if let Some(path) = std::env::var_os("NOTIFY_SOCKET") {
        notify_to(&path, state);
    }
}

/// [`notify`] to the socket `path` (a path, or `@name` for an abstract one).
fn notify_to(path: &std::ffi::OsStr, state: &str) {
    let sent = UnixDatagram::unbound().and_then(|sock| {
        let bytes = path.as_encoded_bytes();
        match bytes.strip_prefix(b"@") {
            // An abstract socket name.
            Some(name) => {
                use std::os::linux::net::SocketAddrExt as _;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                sock.send_to_addr(state.as_bytes(), &addr)
            }
            None => sock.send_to(state.as_bytes(), path),
        }
    });
    if let Err(e) = sent {
        tracing::warn!("cannot tell systemd {state:?} through NOTIFY_SOCKET: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_sends_the_state_to_the_socket_systemd_names() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let systemd = UnixDatagram::bind(&path).unwrap();
        notify_to(path.as_os_str(), "READY=1");
        let mut buf = [0u8; 64];
        let n = systemd.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }

    #[test]
    fn a_passed_socket_at_another_path_than_reins_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rein.sock");
        let listener = UnixListener::bind(&path).unwrap();
        check_passed_socket(&listener, &path, false).unwrap();
        let e = check_passed_socket(&listener, &dir.path().join("other.sock"), true)
            .unwrap_err()
            .to_string();
        assert!(e.contains("ListenStream="), "{e}");
    }

    #[test]
    fn fds_passed_to_another_process_or_none_are_not_taken() {
        // LISTEN_PID names another process (as after a fork), or nothing was passed.
        assert!(listener_for(Some("1"), Some("1"), 42).unwrap().is_none());
        assert!(listener_for(None, None, 42).unwrap().is_none());
        assert!(listener_for(Some("42"), Some("0"), 42).unwrap().is_none());
        // Two sockets for us: refused, naming what rein takes.
        let e = listener_for(Some("42"), Some("2"), 42)
            .unwrap_err()
            .to_string();
        assert!(e.contains("takes one"), "{e}");
    }
}
