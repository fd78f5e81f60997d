//! HTTP/1 serving with bounds, for the API socket and the metrics endpoint.
//!
//! Both face clients the agent does not control: in the DaemonSet any pod can reach the
//! metrics port on the node IP, and with `allowed_uids` any local user can connect to the
//! API socket (mode 0666). axum's own `serve` has no header or idle timeout and no
//! connection cap, so a few hundred idle connections would hold the agent's file descriptors
//! and a slow client its handlers. Here each connection is admitted once, at accept (so the
//! API checks peer credentials per connection, not per request): it counts against a cap
//! for its key (the peer's uid, or its IP address for the metrics) and against the server's
//! total, and is closed at once when either is full; its request head must arrive within [`HEADER_TIMEOUT`], which
//! also closes a keep-alive connection left idle that long; a request body must arrive
//! within [`BODY_TIMEOUT`] ([`body_deadline`]).

use std::{
    collections::HashMap,
    future::Future,
    io,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    Router,
    body::Body,
    extract::Request,
    http::StatusCode,
    middleware::Next,
    response::{IntoResponse, Response},
    serve::Listener,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The request head must arrive within this; a keep-alive connection idle this long is closed.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// A request body must arrive within this.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// A write that makes no progress for this long fails, and ends its connection: a client
/// that sends requests but never reads the answers cannot hold its connection forever.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a stopping server lets its open connections finish their requests.
const DRAIN: Duration = Duration::from_secs(5);

/// What [`serve`] does with one new connection, decided once at accept.
pub struct Admission {
    /// The cap counts connections per key (a uid, or an IP address).
    pub key: u128,
    /// Connections of this key open at once; one more is closed at accept.
    pub cap: usize,
    /// Serves the connection's requests.
    pub router: Router,
}

/// Open connections per key; a [`Slot`] gives its place back when its connection ends.
#[derive(Default, Clone)]
struct Slots(Arc<Mutex<HashMap<u128, usize>>>);

struct Slot {
    slots: Slots,
    key: u128,
}

impl Slots {
    /// A place for one more connection of `key`, if it has fewer than `cap` and all keys
    /// together fewer than `total`.
    fn take(&self, key: u128, cap: usize, total: usize) -> Option<Slot> {
        let mut open = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if open.values().sum::<usize>() >= total {
            return None;
        }
        let n = open.entry(key).or_default();
        if *n >= cap {
            return None;
        }
        *n += 1;
        Some(Slot {
            slots: self.clone(),
            key,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self
            .slots
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// Serves `listener` until `shutdown`, each connection as `admit` decides from its stream,
/// with at most `total` connections open at once.
pub async fn serve<L: Listener>(
    mut listener: L,
    total: usize,
    admit: impl Fn(&L::Io) -> Admission,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Slots::default();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut conns = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (io, _addr) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
            // Reap finished connection tasks as they end, so the set stays small.
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let Admission { key, cap, router } = admit(&io);
        let Some(slot) = slots.take(key, cap, total) else {
            tracing::debug!(
                key,
                cap,
                total,
                "closed a connection over its cap at accept"
            );
            continue;
        };
        let mut stop = stop_rx.clone();
        conns.spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                tower::ServiceExt::oneshot(router.clone(), req.map(Body::new))
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(Stalling::new(io)), service);
            tokio::pin!(conn);
            tokio::select! {
                res = conn.as_mut() => {
                    if let Err(e) = res {
                        tracing::debug!("connection ended: {e}");
                    }
                }
                () = async { let _ = stop.wait_for(|s| *s).await; } => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    // Closed before the drain: a client that connects now is refused at once (and the
    // hook's client waits for the next agent) instead of waiting in the backlog.
    drop(listener);
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(DRAIN, async { while conns.join_next().await.is_some() {} }).await;
}

/// A connection whose writes fail once they have made no progress for [`WRITE_TIMEOUT`].
struct Stalling<T> {
    io: T,
    /// Armed when a write or flush first returns `Pending`, disarmed by progress.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<T> Stalling<T> {
    const fn new(io: T) -> Self {
        Self { io, stalled: None }
    }

    /// Maps a write's poll: progress disarms the timer, `Pending` arms it, and a timer
    /// that ran out turns `Pending` into an error.
    fn watch<R>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        match poll {
            Poll::Ready(r) => {
                self.stalled = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                let timer = self
                    .stalled
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(WRITE_TIMEOUT)));
                if timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the client read nothing for the write timeout",
                    )));
                }
                Poll::Pending
            }
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Stalling<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Stalling<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.io).poll_write(cx, buf);
        self.watch(cx, poll)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.io).poll_flush(cx);
        self.watch(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Middleware: reads the whole request body within [`BODY_TIMEOUT`] (and at most `limit`
/// bytes), so a client that sends its body slowly cannot hold a handler.
pub async fn body_deadline(limit: usize, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Ok(Err(e)) => {
            let too_long = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if too_long {
                (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the request body is longer than {limit} bytes"),
                )
                    .into_response()
            } else {
                (
                    StatusCode::BAD_REQUEST,
                    format!("the request body could not be read: {e}"),
                )
                    .into_response()
            }
        }
        Err(_) => (
            StatusCode::REQUEST_TIMEOUT,
            format!(
                "the request body did not arrive within {} s",
                BODY_TIMEOUT.as_secs()
            ),
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_holds_at_most_its_cap_and_all_at_most_the_total() {
        let slots = Slots::default();
        let a = slots.take(7, 2, 4).unwrap();
        let _b = slots.take(7, 2, 4).unwrap();
        assert!(slots.take(7, 2, 4).is_none(), "a third connection of key 7");
        let _c = slots.take(8, 2, 4).unwrap();
        drop(a);
        let _a = slots
            .take(7, 2, 4)
            .expect("a closed connection frees its place");
        let _d = slots.take(9, 2, 4).unwrap();
        assert!(
            slots.take(10, 2, 4).is_none(),
            "four open: the total is full"
        );
    }

    /// A connection over its key's cap is closed at accept; those within it are served.
    #[tokio::test]
    async fn a_connection_over_the_cap_is_closed_at_accept() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.sock");
        let listener = tokio::net::UnixListener::bind(&path).unwrap();
        let router = Router::new().route("/", axum::routing::get(|| async { "hi" }));
        let server = tokio::spawn(serve(
            listener,
            8,
            move |_: &tokio::net::UnixStream| Admission {
                key: 0,
                cap: 1,
                router: router.clone(),
            },
            std::future::pending(),
        ));
        let mut first = tokio::net::UnixStream::connect(&path).await.unwrap();
        first
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 256];
        let n = first.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
        // The first is open (keep-alive): a second has no place.
        let mut surplus = tokio::net::UnixStream::connect(&path).await.unwrap();
        let _ = surplus
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await;
        let n = surplus.read(&mut buf).await.unwrap_or(0);
        assert_eq!(n, 0, "over the cap: closed without an answer");
        drop(first);
        // Its place comes back once the server has seen the first close.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let mut again = tokio::net::UnixStream::connect(&path).await.unwrap();
            let _ = again.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
            if again.read(&mut buf).await.unwrap_or(0) > 0 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the place never came back"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        server.abort();
    }

    /// A peer that never reads: the write fails after the write timeout instead of
    /// waiting forever; one that reads lets it go on.
    #[tokio::test(start_paused = true)]
    async fn a_write_nobody_reads_fails_after_the_write_timeout() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let (ours, mut theirs) = tokio::io::duplex(64);
        let mut ours = Stalling::new(ours);
        let started = tokio::time::Instant::now();
        let err = ours.write_all(&[7u8; 4096]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= WRITE_TIMEOUT);
        // Progress disarms the timer: with a reader, a long write completes.
        let reader = tokio::spawn(async move {
            let mut sink = Vec::new();
            theirs.read_to_end(&mut sink).await.map(|_| sink.len())
        });
        let (fresh, mut other) = tokio::io::duplex(64);
        let mut fresh = Stalling::new(fresh);
        let drain = tokio::spawn(async move {
            let mut sink = Vec::new();
            other.read_to_end(&mut sink).await.map(|_| sink.len())
        });
        fresh.write_all(&[7u8; 4096]).await.unwrap();
        fresh.shutdown().await.unwrap();
        drop(fresh);
        assert_eq!(drain.await.unwrap().unwrap(), 4096);
        drop(ours);
        reader.await.unwrap().unwrap();
    }
}
