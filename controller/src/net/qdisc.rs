//! Traffic-control qdiscs over rtnetlink (no shelling out to `tc`).

use futures_util::StreamExt as _;
use rtnetlink::{
    packet_core::{
        NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST, NetlinkMessage,
        NetlinkPayload,
    },
    packet_route::{
        RouteNetlinkMessage,
        link::LinkAttribute,
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
    handle: rtnetlink::Handle,
    ifindex: u32,
    kind: &str,
    flags: u16,
) -> std::io::Result<()> {
    let (parent, own) = if kind == "clsact" {
        (
            TcHandle::CLSACT,
            TcHandle {
                major: 0xffff,
                minor: 0,
            },
        )
    } else {
        (TcHandle::ROOT, TcHandle::UNSPEC)
    };
    request_qdisc_at(handle, ifindex, kind, parent, own, flags).await
}

/// Sends one RTM_NEWQDISC for `kind` under `parent` with handle `own` and waits for the
/// kernel's answer.
async fn request_qdisc_at(
    mut handle: rtnetlink::Handle,
    ifindex: u32,
    kind: &str,
    parent: TcHandle,
    own: TcHandle,
    flags: u16,
) -> std::io::Result<()> {
    let index =
        i32::try_from(ifindex).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    let mut msg = TcMessage::with_index(index);
    msg.header.parent = parent;
    msg.header.handle = own;
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

/// The number of transmit queues of `ifindex` (1 when the kernel does not say).
async fn tx_queues(handle: &rtnetlink::Handle, ifindex: u32) -> std::io::Result<u32> {
    let mut links = handle.link().get().match_index(ifindex).execute();
    while let Some(link) = links.next().await {
        let link = link.map_err(std::io::Error::other)?;
        for a in link.attributes {
            if let LinkAttribute::NumTxQueues(n) = a {
                return Ok(n.max(1));
            }
        }
    }
    Ok(1)
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

/// Makes `fq` pace `device` (replacing what was there), so the departure times the shaper
/// writes into `skb->tstamp` are honoured. Through rtnetlink, not `tc`. On a device with one
/// transmit queue `fq` is the root qdisc; with several, the root becomes `mq` (handle 1:)
/// with one `fq` per queue, as the kernel's own default multiqueue setup, so queues do not
/// contend for one qdisc lock. Returns the number of `fq` instances.
pub async fn install_fq(device: &str) -> std::io::Result<u32> {
    install_fq_upto(device, u32::MAX).await
}

/// Like [`install_fq`], but refuses a device with more than `max_queues` transmit queues
/// (before changing anything): in a container's namespace the container made its devices,
/// and one `fq` per queue of a device with thousands of queues is the agent's memory.
pub async fn install_fq_upto(device: &str, max_queues: u32) -> std::io::Result<u32> {
    let index = ifindex(device)?;
    let (conn, handle, _) = rtnetlink::new_connection()?;
    let conn = tokio::spawn(conn);
    let result = async {
        let queues = tx_queues(&handle, index).await?;
        if queues > max_queues {
            return Err(std::io::Error::other(format!(
                "{queues} transmit queues; rein paces devices with at most {max_queues}"
            )));
        }
        if queues == 1 {
            request_qdisc(handle, index, "fq", NLM_F_CREATE | NLM_F_REPLACE).await?;
            return Ok(1);
        }
        let mq = TcHandle { major: 1, minor: 0 };
        request_qdisc_at(
            handle.clone(),
            index,
            "mq",
            TcHandle::ROOT,
            mq,
            NLM_F_CREATE | NLM_F_REPLACE,
        )
        .await?;
        for q in 1..=queues {
            let minor =
                u16::try_from(q).map_err(|_| std::io::Error::from_raw_os_error(libc::ERANGE))?;
            request_qdisc_at(
                handle.clone(),
                index,
                "fq",
                TcHandle { major: 1, minor },
                TcHandle::UNSPEC,
                NLM_F_CREATE | NLM_F_REPLACE,
            )
            .await?;
        }
        Ok(queues)
    }
    .await;
    conn.abort();
    result
}

/// Whether `device` has an `fq` qdisc (at the root, or per queue under `mq`): what
/// [`install_fq`] set up and the agent checks is still there.
pub async fn has_fq(device: &str) -> std::io::Result<bool> {
    let index = i32::try_from(ifindex(device)?)
        .map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    let (conn, handle, _) = rtnetlink::new_connection()?;
    let conn = tokio::spawn(conn);
    let result = async {
        let mut dump = handle.qdisc().get().index(index).execute();
        let mut found = false;
        while let Some(m) = dump.next().await {
            let m = m.map_err(std::io::Error::other)?;
            found |= m.header.index == index
                && m.attributes
                    .iter()
                    .any(|a| matches!(a, TcAttribute::Kind(k) if k == "fq"));
        }
        Ok(found)
    }
    .await;
    conn.abort();
    result
}
