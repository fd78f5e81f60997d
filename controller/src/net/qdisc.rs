//! Traffic-control qdiscs over rtnetlink (no shelling out to `tc`).

use futures_util::StreamExt as _;
use rtnetlink::{
    packet_core::{
        NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST, NetlinkMessage,
        NetlinkPayload,
    },
    packet_route::{
        RouteNetlinkMessage,
        tc::{TcAttribute, TcHandle, TcMessage},
    },
};

/// Whether the kernel can instantiate a qdisc kind.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "status", content = "detail", rename_all = "snake_case")]
pub enum Support {
    Available,
    /// The kernel answered that it does not know the kind (module missing or not built).
    Missing,
    /// The probe itself could not run (for example without CAP_SYS_ADMIN).
    Unknown(String),
}

/// Asks the kernel whether it can create a qdisc of `kind` (`"fq"`, `"clsact"`, `"htb"`...).
///
/// The probe adds the qdisc to the loopback device of a private, empty network namespace that
/// exists only for the duration of the call, so no device the host uses is touched. It runs
/// on its own thread because `unshare(CLONE_NEWNET)` moves only the calling thread.
pub fn probe(kind: &'static str) -> Support {
    let worker = std::thread::spawn(move || {
        // SAFETY: unshare only changes this thread's namespaces; the thread owns nothing that
        // depends on the old network namespace and ends when the probe is done.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Support::Unknown(format!(
                "cannot create a private network namespace to probe in: {}",
                std::io::Error::last_os_error()
            ));
        }
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => return Support::Unknown(format!("tokio runtime: {e}")),
        };
        rt.block_on(add_qdisc_on_lo(kind))
    });
    worker
        .join()
        .unwrap_or_else(|_| Support::Unknown("probe thread panicked".into()))
}

async fn add_qdisc_on_lo(kind: &str) -> Support {
    let (conn, handle, _) = match rtnetlink::new_connection() {
        Ok(c) => c,
        Err(e) => return Support::Unknown(format!("rtnetlink socket: {e}")),
    };
    let conn = tokio::spawn(conn);
    // In a fresh namespace, loopback is always ifindex 1.
    let result = match request_qdisc(handle, 1, kind, NLM_F_CREATE | NLM_F_EXCL).await {
        Ok(()) => Support::Available,
        // The kernel's answer for an unknown qdisc kind (after trying to load the
        // `sch_<kind>` module).
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Support::Missing,
        Err(e) => Support::Unknown(format!("kernel refused: {e}")),
    };
    conn.abort();
    result
}

/// Sends one RTM_NEWQDISC for `kind` at the root of `ifindex` (clsact at its own parent) and
/// waits for the kernel's answer.
async fn request_qdisc(
    mut handle: rtnetlink::Handle,
    ifindex: u32,
    kind: &str,
    flags: u16,
) -> std::io::Result<()> {
    let index =
        i32::try_from(ifindex).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    let mut msg = TcMessage::with_index(index);
    if kind == "clsact" {
        msg.header.parent = TcHandle::CLSACT;
        msg.header.handle = TcHandle {
            major: 0xffff,
            minor: 0,
        };
    } else {
        msg.header.parent = TcHandle::ROOT;
    }
    msg.attributes.push(TcAttribute::Kind(kind.to_owned()));
    let mut req = NetlinkMessage::from(RouteNetlinkMessage::NewQueueDiscipline(msg));
    req.header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
    let mut responses = handle.request(req).map_err(std::io::Error::other)?;
    // netlink-proto consumes the final ACK itself: a stream that ends without an error
    // message means the kernel did it.
    while let Some(m) = responses.next().await {
        if let NetlinkPayload::Error(e) = m.payload
            && let Some(code) = e.code
        {
            return Err(std::io::Error::from_raw_os_error(-code.get()));
        }
    }
    Ok(())
}

/// The interface index of a device name (`if_nametoindex`).
pub fn ifindex(name: &str) -> std::io::Result<u32> {
    let c = std::ffi::CString::new(name)
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: `c` is a valid NUL-terminated string for the duration of the call.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => Err(std::io::Error::last_os_error()),
        i => Ok(i),
    }
}

/// Makes `fq` the root qdisc of `device` (replacing what was there), so the departure times
/// the shaper writes into `skb->tstamp` are honoured. Through rtnetlink, not `tc`.
pub async fn install_fq(device: &str) -> std::io::Result<()> {
    let index = ifindex(device)?;
    let (conn, handle, _) = rtnetlink::new_connection()?;
    let conn = tokio::spawn(conn);
    let result = request_qdisc(handle, index, "fq", NLM_F_CREATE | NLM_F_REPLACE).await;
    conn.abort();
    result
}
