//! `rein hook` reading the OCI state from stdin, as a runtime hands it over: a state that
//! never comes, one too large and an empty one each end the hook with a message naming
//! what was wrong (no agent needed: the state is read first).
#![allow(clippy::unwrap_used, reason = "a test: a panic is its failure report")]

use std::{
    io::Write as _,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// `rein hook createRuntime --timeout SECS`, against a socket that does not exist.
fn hook(timeout: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rein"));
    c.args([
        "--socket",
        "/nonexistent/rein.sock",
        "hook",
        "createRuntime",
        "--timeout",
        timeout,
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    c
}

/// The hook's exit code and stderr; a hook still running after 30 s fails the test (the
/// bounds under test are 0.5 and 5 s).
fn finish(mut child: Child) -> (Option<i32>, String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the hook did not end within 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_state_that_never_comes_ends_the_hook_at_its_timeout() {
    // The pipe's write end stays open in this process: no state, and no end of it.
    let mut child = hook("0.5").stdin(Stdio::piped()).spawn().unwrap();
    let open_stdin = child.stdin.take();
    let (code, err) = finish(child);
    drop(open_stdin);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("no OCI state on stdin within 500ms"), "{err}");
}

#[test]
fn a_state_over_1_mib_is_refused() {
    // 5 s for the 2 MiB to pass through the pipe on a loaded machine.
    let mut child = hook("5").stdin(Stdio::piped()).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // The hook stops reading at the limit: the rest of the write may find the pipe closed.
    let _ = stdin.write_all(&vec![b' '; 2 << 20]);
    drop(stdin);
    let (code, err) = finish(child);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("the OCI state on stdin is larger than 1048576 bytes"),
        "{err}"
    );
}

#[test]
fn an_empty_state_is_refused_as_invalid() {
    let child = hook("5").stdin(Stdio::null()).spawn().unwrap();
    let (code, err) = finish(child);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("the OCI state on stdin is not valid"), "{err}");
}
