//! Pacing inside a container's own network namespace.
//!
//! A departure time set by rein's cgroup program must meet an `fq` qdisc before the packet
//! leaves the container's namespace: the crossing into the host orphans the packet from its
//! socket, so TCP Small Queues no longer push back on the sender, and protocols other than
//! TCP lose the time altogether (`skb->tstamp` survives forwarding only when marked as a
//! mono delivery time). So for a shaped container with its own namespace, the agent makes
//! `fq` the root qdisc of every device in that namespace (normally its one veth end), through
//! netlink from a thread that has entered the namespace.

use std::{io, os::unix::fs::MetadataExt as _, path::PathBuf};

/// A network namespace, named by the inode of its `/proc/<pid>/ns/net` file.
pub type NetnsId = u64;

fn ns_file(pid: Option<u32>) -> PathBuf {
    match pid {
        Some(pid) => PathBuf::from(format!("/proc/{pid}/ns/net")),
        None => PathBuf::from("/proc/self/ns/net"),
    }
}

/// The network namespace of `pid`, or of this process for `None`.
pub fn of(pid: Option<u32>) -> io::Result<NetnsId> {
    std::fs::metadata(ns_file(pid)).map(|m| m.ino())
}

/// The most devices (besides loopback) rein paces in one container's namespace, and the
/// most transmit queues per device: the container made them, and each queue costs the
/// agent an `fq`.
pub const MAX_DEVICES: usize = 16;
pub const MAX_QUEUES: u32 = 64;

/// Makes `fq` the root qdisc of every device but loopback in the network namespace `ns`,
/// entered through the process `pid`, and returns their names. The namespace is opened once
/// and checked by the inode of the open file, so a pid that exited and was reused by a
/// process of the host's namespace never gets the host's devices paced. Runs on a thread of
/// its own: `setns` moves only the calling thread, and the thread ends with the work.
pub fn install_fq_in(pid: u32, ns: NetnsId) -> io::Result<Vec<String>> {
    let file = std::fs::File::open(ns_file(Some(pid)))?;
    let opened = file.metadata()?.ino();
    if opened != ns || Some(opened) == of(None).ok() {
        return Err(io::Error::other(format!(
            "pid {pid} left the namespace it was found in"
        )));
    }
    let worker = std::thread::spawn(move || -> io::Result<Vec<String>> {
        use std::os::fd::AsRawFd as _;
        // SAFETY: `file` is an open namespace file; setns changes only this thread's network
        // namespace, and this thread does nothing else before it ends.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let devices: Vec<String> = device_names()?.into_iter().filter(|d| d != "lo").collect();
        if devices.len() > MAX_DEVICES {
            return Err(io::Error::other(format!(
                "{} devices; rein paces namespaces with at most {MAX_DEVICES}",
                devices.len()
            )));
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()?;
        for dev in &devices {
            rt.block_on(super::qdisc::install_fq_upto(dev, MAX_QUEUES))
                .map_err(|e| io::Error::new(e.kind(), format!("fq on {dev}: {e}")))?;
        }
        Ok(devices)
    });
    worker
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("netns thread panicked")))
}

/// The names of the network devices of the calling thread's namespace (`if_nameindex`).
fn device_names() -> io::Result<Vec<String>> {
    // SAFETY: if_nameindex returns an array terminated by a zero entry, or NULL on error;
    // it is freed below with if_freenameindex and not used after.
    let list = unsafe { libc::if_nameindex() };
    if list.is_null() {
        return Err(io::Error::last_os_error());
    }
    let mut names = Vec::new();
    let mut i = 0;
    loop {
        // SAFETY: within the array, up to and including the terminating entry.
        let entry = unsafe { &*list.add(i) };
        if entry.if_index == 0 || entry.if_name.is_null() {
            break;
        }
        // SAFETY: if_name is a NUL-terminated string owned by the array.
        let name = unsafe { std::ffi::CStr::from_ptr(entry.if_name) };
        names.push(name.to_string_lossy().into_owned());
        i += 1;
    }
    // SAFETY: `list` came from if_nameindex and is freed once.
    unsafe { libc::if_freenameindex(list) };
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_namespace_has_loopback_and_an_id() {
        assert!(device_names().unwrap().iter().any(|d| d == "lo"));
        assert_eq!(of(None).unwrap(), of(Some(std::process::id())).unwrap());
    }

    /// A pid whose namespace is not the one it was found in (its process exited and the pid
    /// went to another), or is the agent's own, never gets its devices paced.
    #[test]
    fn a_pid_that_left_its_namespace_or_is_in_ours_is_refused() {
        let pid = std::process::id();
        let own = of(None).unwrap();
        for ns in [own, own.wrapping_add(1)] {
            let e = install_fq_in(pid, ns).unwrap_err().to_string();
            assert!(e.contains("left the namespace"), "{e}");
        }
    }
}
