//! The API server: axum on a Unix socket, with each connection's peer credentials checked.

use std::{path::Path, sync::Arc};

use axum::{
    Json, Router,
    extract::{ConnectInfo, DefaultBodyLimit, Path as UrlPath, Query, Request, State},
    http::StatusCode,
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
};
use serde::Deserialize;
use tokio::net::{UnixListener, UnixStream};

use super::{
    Container, CreateRequest, ErrorBody, LimitsBody, MAX_BODY, Stats, UsageJson, limits_from_map,
    limits_to_map,
};
use crate::{
    cgroup::{CgroupError, ContainerName},
    http::Admission,
    node::{Caller, Node, NodeError, Pod, Snapshot},
};

/// Who may talk to the agent: root always, plus these uids.
#[derive(Debug, Clone, Default)]
pub struct Access {
    pub allowed_uids: Vec<u32>,
}

impl Access {
    fn allows(&self, uid: u32) -> bool {
        uid == 0 || self.allowed_uids.contains(&uid)
    }
}

#[derive(Clone)]
struct AppState {
    node: Arc<Node>,
}

/// The connecting process's uid, from SO_PEERCRED at accept (None if the kernel would not say).
#[derive(Debug, Clone, Copy)]
struct Peer {
    uid: Option<u32>,
}

/// An API error: status and message.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(ErrorBody { error: self.1 })).into_response()
    }
}

impl From<NodeError> for ApiError {
    fn from(e: NodeError) -> Self {
        match e {
            NodeError::Cgroup(c) => c.into(),
            NodeError::Unenforceable(_) | NodeError::Foreign { .. } => {
                Self(StatusCode::BAD_REQUEST, e.to_string())
            }
            NodeError::RootOnly(_) => Self(StatusCode::FORBIDDEN, e.to_string()),
            NodeError::NoDatapath { .. } => Self(StatusCode::BAD_REQUEST, e.to_string()),
            NodeError::Datapath(_)
            | NodeError::Btf(_)
            | NodeError::Poisoned
            | NodeError::Journal(_) => Self(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    }
}

impl From<CgroupError> for ApiError {
    fn from(e: CgroupError) -> Self {
        let status = match &e {
            CgroupError::BadName { .. }
            | CgroupError::Limit(_)
            | CgroupError::NoSuchGroup(_)
            | CgroupError::NotAGroup(_)
            | CgroupError::PodGroup(_)
            | CgroupError::TooDeep { .. } => StatusCode::BAD_REQUEST,
            CgroupError::NotFound(_) => StatusCode::NOT_FOUND,
            CgroupError::Exists(_)
            | CgroupError::Busy { .. }
            | CgroupError::GroupNotEmpty { .. } => StatusCode::CONFLICT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self(status, e.to_string())
    }
}

/// Open API connections at once, all peers together.
const TOTAL_CONNECTIONS: usize = 2048;
/// Open API connections at once for root (the runtimes' hooks, the CLI run as root): as
/// many as a busy node's container starts may need, and never fewer for other uids' sake.
const ROOT_CONNECTIONS: usize = 1024;
/// Open API connections at once for each other allowed uid: enough for a user's tools, too
/// few to crowd out root's.
const USER_CONNECTIONS: usize = 32;
/// Open connections at once of all refused peers together: each gets a 403 that says why.
const REFUSED_CONNECTIONS: usize = 4;

/// The message a refused peer gets.
fn refusal_message(uid: Option<u32>) -> String {
    format!(
        "uid {} may not use the rein API: root only, unless the agent's allowed_uids lists it",
        uid.map_or_else(|| "unknown".to_owned(), |u| u.to_string())
    )
}

/// Decides once per connection, from its peer credentials, who is served and how many
/// connections the uid may hold.
fn admit(
    stream: &UnixStream,
    serving: &Routers,
    access: &Access,
    warned: &std::sync::Mutex<std::collections::HashSet<Option<u32>>>,
) -> Admission {
    let uid = stream.peer_cred().ok().map(|c| c.uid());
    match uid {
        Some(uid) if access.allows(uid) => Admission {
            key: u128::from(uid),
            cap: if uid == 0 {
                ROOT_CONNECTIONS
            } else {
                USER_CONNECTIONS
            },
            router: serving.of(uid),
        },
        uid => {
            // Once per uid: a refused user who keeps connecting must not flood the log.
            let first = warned
                .lock()
                .map(|mut w| w.len() < 1024 && w.insert(uid))
                .unwrap_or(false);
            if first {
                tracing::warn!(
                    ?uid,
                    "refused an API connection from a peer that is not allowed (said once per uid)"
                );
            }
            let message = refusal_message(uid);
            Admission {
                // One key for every refused peer: they can only be told no.
                key: u128::MAX,
                cap: REFUSED_CONNECTIONS,
                router: Router::new().fallback(move || {
                    let message = message.clone();
                    async move { ApiError(StatusCode::FORBIDDEN, message) }
                }),
            }
        }
    }
}

/// Runs a cgroup read on the runtime's own thread: a few small reads of kernel files
/// (microseconds), where handing them to a blocking pool would cost more than they do (a
/// cross-CPU wake-up per request).
async fn inline<T>(f: impl FnOnce() -> Result<T, NodeError>) -> Result<T, ApiError> {
    f().map_err(ApiError::from)
}

/// Runs a cgroup operation that may wait on a blocking thread: every write (a write of
/// `memory.max` below the usage reclaims, or OOM-kills, before it returns, which can take
/// seconds), and `rm --force`, which waits for killed processes. The node serialises the
/// operations of one container (`Node::name_lock`); other containers' calls and the
/// metrics go on meanwhile.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, NodeError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| {
            ApiError(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("worker failed: {e}"),
            )
        })?
        .map_err(ApiError::from)
}

fn parse_name(name: &str) -> Result<ContainerName, ApiError> {
    name.parse().map_err(ApiError::from)
}

fn info(node: &Node, name: &ContainerName) -> Result<Container, NodeError> {
    info_of(node, node.entry(name)?)
}

/// The answer about an entry found already.
fn info_of(node: &Node, entry: crate::cgroup::Entry) -> Result<Container, NodeError> {
    Ok(Container {
        limits: limits_to_map(&node.limits_of(&entry)?),
        name: entry.name.to_string(),
        kind: entry.kind,
        group: entry.group.as_ref().map(ToString::to_string),
        path: entry.dir.display().to_string(),
    })
}

async fn list(State(st): State<AppState>) -> Result<Json<Vec<Container>>, ApiError> {
    let node = st.node.clone();
    let all = inline(move || {
        // One whose cgroup went meanwhile (a runtime's, deleted before the agent's walk
        // forgot it) is left out, as the metrics leave it out.
        node.entries()
            .into_iter()
            .map(|e| info_of(&node, e))
            .filter(|c| !matches!(c, Err(NodeError::Cgroup(CgroupError::NotFound(_)))))
            .collect::<Result<Vec<_>, _>>()
    })
    .await?;
    Ok(Json(all))
}

/// True when the request asks for an answer without a body (`Prefer: return=minimal`,
/// RFC 7240): the agent then skips reading every limit back for it.
fn prefers_minimal(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|pref| {
            // `return=minimal`, `return="minimal"`, `return = minimal; a=b`.
            let (name, value) = pref
                .split(';')
                .next()
                .unwrap_or("")
                .split_once('=')
                .unwrap_or(("", ""));
            name.trim().eq_ignore_ascii_case("return")
                && value
                    .trim()
                    .trim_matches('"')
                    .eq_ignore_ascii_case("minimal")
        })
}

async fn create(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    headers: axum::http::HeaderMap,
    Json(req): Json<CreateRequest>,
) -> Result<Response, ApiError> {
    let minimal = prefers_minimal(&headers);
    // Taking over any cgroup of the machine is for the runtimes' hooks, which run as root;
    // an allowed uid may only make containers under rein's own root.
    if req.cgroup.is_some() && caller(&peer) != Caller::Root {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            "only root may register a runtime's cgroup (rein hook runs as root)".into(),
        ));
    }
    let name = parse_name(&req.name)?;
    let group = req.group.as_deref().map(parse_name).transpose()?;
    let ignored = match (&req.cgroup, &req.pod) {
        (Some(_), _) if req.kind != crate::cgroup::Kind::Container || group.is_some() => {
            Some("a registration (cgroup) takes no kind or group: its pod is its group")
        }
        (None, Some(_)) => Some("pod goes with a registration (cgroup) only"),
        _ => None,
    };
    if let Some(why) = ignored {
        return Err(ApiError(StatusCode::BAD_REQUEST, why.into()));
    }
    let limits = limits_from_map(&req.limits)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.to_string()))?;
    let pod = req
        .pod
        .as_ref()
        .map(|p| -> Result<Pod, ApiError> {
            Ok(Pod {
                name: parse_name(&p.name)?,
                cgroup: Path::new(&p.cgroup).to_owned(),
                limits: limits_from_map(&p.limits)
                    .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("the pod's {e}")))?,
            })
        })
        .transpose()?;
    let node = st.node.clone();
    let c = blocking(move || {
        match &req.cgroup {
            Some(cgroup) => {
                node.register(&name, Path::new(cgroup), req.labels, &limits, pod.as_ref())?;
                tracing::info!(container = %name, %cgroup, limits = %limits, "registered");
                if minimal {
                    return Ok(None);
                }
                // Where it is is known: answered without looking the name up again.
                info_of(
                    &node,
                    crate::cgroup::Entry {
                        group: pod.map(|p| p.name),
                        kind: crate::cgroup::Kind::Container,
                        dir: Path::new(cgroup).to_owned(),
                        name,
                    },
                )
                .map(Some)
            }
            None => {
                node.create(&name, req.kind, group.as_ref(), &limits)?;
                tracing::info!(
                    container = %name, kind = %req.kind, group = ?group, limits = %limits,
                    "created"
                );
                if minimal {
                    return Ok(None);
                }
                info(&node, &name).map(Some)
            }
        }
    })
    .await?;
    Ok(match c {
        Some(c) => (StatusCode::CREATED, Json(c)).into_response(),
        None => (
            StatusCode::CREATED,
            [("preference-applied", super::PREFER_MINIMAL)],
        )
            .into_response(),
    })
}

/// A container's limits and usage, from its snapshot.
fn stats_of(node: &Node, s: &Snapshot) -> Stats {
    Stats {
        container: Container::of(s),
        usage: UsageJson::from(s),
        egress_mode: node.egress_mode_of(&s.name),
    }
}

async fn stats(
    State(st): State<AppState>,
    UrlPath(name): UrlPath<String>,
) -> Result<Json<Stats>, ApiError> {
    let name = parse_name(&name)?;
    let node = st.node.clone();
    Ok(Json(
        inline(move || Ok(stats_of(&node, &node.snapshot(&name)?))).await?,
    ))
}

/// Every container's stats in one answer (`rein top`); a container removed while it is
/// read is left out.
async fn all_stats(State(st): State<AppState>) -> Result<Json<Vec<Stats>>, ApiError> {
    let node = st.node.clone();
    let all = blocking(move || {
        Ok(node
            .snapshots()?
            .iter()
            .map(|s| stats_of(&node, s))
            .collect())
    })
    .await?;
    Ok(Json(all))
}

/// A runtime's container (registered by `rein hook`) takes its limits from its annotations,
/// under the operator's hook ceiling, and goes with its runtime's poststop hook: only root
/// (the hook, or the operator) may change or remove it, not an allowed uid.
/// What the peer may reach: root anything, an allowed uid only rein's own containers.
fn caller(peer: &Peer) -> Caller {
    if peer.uid == Some(0) {
        Caller::Root
    } else {
        Caller::AllowedUser
    }
}

async fn set(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    UrlPath(name): UrlPath<String>,
    Json(body): Json<LimitsBody>,
) -> Result<Json<Container>, ApiError> {
    let name = parse_name(&name)?;
    let limits = limits_from_map(&body.limits)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.to_string()))?;
    let node = st.node.clone();
    let who = caller(&peer);
    // Writes that return at once are made on the runtime's thread when nothing else holds
    // the container (the blocking pool's hand-off would cost more than they do); a write
    // that may wait in the kernel, or one behind another operation, goes to the pool.
    if !limits.may_wait()
        && let Some(entry) = node.try_set(&name, &limits, who)?
    {
        tracing::info!(container = %name, limits = %limits, "changed");
        return Ok(Json(info_of(&node, entry)?));
    }
    let c = blocking(move || {
        let entry = node.set(&name, &limits, who)?;
        tracing::info!(container = %name, limits = %limits, "changed");
        info_of(&node, entry)
    })
    .await?;
    Ok(Json(c))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WhyQuery {
    /// Seconds between the two samples (default 10).
    window: Option<f64>,
}

/// `rein why`: two snapshots of the container and its groups a window apart, compared.
async fn why(
    State(st): State<AppState>,
    UrlPath(name): UrlPath<String>,
    Query(q): Query<WhyQuery>,
) -> Result<Json<crate::why::Diagnosis>, ApiError> {
    use crate::why::Thresholds;
    let name = parse_name(&name)?;
    let window = q.window.unwrap_or(10.0);
    if !(Thresholds::MIN_WINDOW_SECS..=Thresholds::MAX_WINDOW_SECS).contains(&window) {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!(
                "window {window}: give seconds from {} to {}",
                Thresholds::MIN_WINDOW_SECS,
                Thresholds::MAX_WINDOW_SECS
            ),
        ));
    }
    let sample = |node: Arc<Node>, name: ContainerName| {
        blocking(move || Ok((std::time::Instant::now(), node.snapshot_chain(&name)?)))
    };
    let (t0, before) = sample(st.node.clone(), name.clone()).await?;
    tokio::time::sleep(std::time::Duration::from_secs_f64(window)).await;
    let (t1, after) = sample(st.node.clone(), name.clone()).await?;
    // Paired by name: a group that appeared or went during the window is left out.
    let pairs: Vec<crate::why::Pair<'_>> = after
        .iter()
        .filter_map(|after| {
            let before = before
                .iter()
                .find(|b| b.name == after.name && b.dir == after.dir)?;
            Some(crate::why::Pair { before, after })
        })
        .collect();
    // The container itself must be in both (it is first in each chain): one made again
    // elsewhere during the window is not the one sampled first.
    let Some((container, groups)) = pairs.split_first().filter(|(c, _)| c.after.name == name)
    else {
        return Err(ApiError(
            StatusCode::CONFLICT,
            format!("{name} was removed or made again during the window; ask again"),
        ));
    };
    Ok(Json(crate::why::diagnose(&crate::why::Window {
        container: *container,
        groups: groups.to_vec(),
        secs: (t1 - t0).as_secs_f64(),
    })))
}

#[derive(Deserialize)]
struct RemoveQuery {
    #[serde(default)]
    force: bool,
    /// Only a runtime's container registered with this cgroup directory.
    cgroup: Option<String>,
}

async fn remove(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    UrlPath(name): UrlPath<String>,
    Query(q): Query<RemoveQuery>,
) -> Result<StatusCode, ApiError> {
    let name = parse_name(&name)?;
    if q.cgroup.is_some() && caller(&peer) != Caller::Root {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            "only root may unregister a runtime's cgroup (rein hook runs as root)".into(),
        ));
    }
    let node = st.node.clone();
    blocking(move || {
        match &q.cgroup {
            Some(cgroup) => node.unregister_if(&name, Path::new(cgroup))?,
            None => node.remove(&name, q.force, caller(&peer))?,
        }
        tracing::info!(container = %name, force = q.force, "removed");
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// JSON extraction failures (bad JSON, wrong content type) as our JSON error bodies.
async fn json_errors(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    if (status.is_client_error())
        && resp
            .headers()
            .get("content-type")
            .is_some_and(|c| c.as_bytes().starts_with(b"text/plain"))
    {
        let bytes = axum::body::to_bytes(resp.into_body(), MAX_BODY)
            .await
            .unwrap_or_default();
        // axum answers JSON it cannot read with 422; the API's one code for bad input is 400.
        let status = if status == StatusCode::UNPROCESSABLE_ENTITY {
            StatusCode::BAD_REQUEST
        } else {
            status
        };
        return ApiError(status, String::from_utf8_lossy(&bytes).into_owned()).into_response();
    }
    resp
}

/// The API's routes; each request needs the connection's [`Peer`] as `ConnectInfo`, which
/// [`admit`] adds.
pub fn router(node: Arc<Node>) -> Router {
    let st = AppState { node };
    Router::new()
        .route("/v1/containers", get(list).post(create))
        .route("/v1/stats", get(all_stats))
        .route(
            "/v1/containers/{name}",
            get(stats).patch(set).delete(remove),
        )
        .route("/v1/containers/{name}/why", get(why))
        .fallback(|| async {
            ApiError(
                StatusCode::NOT_FOUND,
                "no such endpoint; the API has /v1/containers, /v1/containers/NAME, \
                 /v1/containers/NAME/why and /v1/stats (docs/operations.md)"
                    .into(),
            )
        })
        .method_not_allowed_fallback(|| async {
            ApiError(
                StatusCode::METHOD_NOT_ALLOWED,
                "this endpoint does not take that method (docs/operations.md lists them)".into(),
            )
        })
        // Inside json_errors, so its 408 and 413 are JSON like every other error.
        .layer(middleware::from_fn(|req, next| {
            crate::http::body_deadline(MAX_BODY, req, next)
        }))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn(json_errors))
        .with_state(st)
}

/// The API's routes as a connection of `uid` sees them (what [`admit`] serves an allowed
/// peer); for the fuzz checks, which drive the handlers without a socket.
#[doc(hidden)]
pub fn router_as(node: Arc<Node>, uid: u32) -> Router {
    with_peer(&router(node), uid)
}

/// The API's router, and per allowed uid a copy that knows the caller: made once per uid
/// (layering a router builds every route's service anew), not per connection.
struct Routers {
    serving: Router,
    /// Root and the allowed uids only: refused peers get no router of their own.
    by_uid: std::sync::Mutex<std::collections::HashMap<u32, Router>>,
}

impl Routers {
    fn of(&self, uid: u32) -> Router {
        match self.by_uid.lock() {
            Ok(mut m) => m
                .entry(uid)
                .or_insert_with(|| with_peer(&self.serving, uid))
                .clone(),
            Err(_) => with_peer(&self.serving, uid),
        }
    }
}

fn with_peer(serving: &Router, uid: u32) -> Router {
    serving
        .clone()
        .layer(axum::Extension(ConnectInfo(Peer { uid: Some(uid) })))
}

/// Binds the socket (mode 0600, parent directory created).
pub fn listen(socket: &Path, access: &Access) -> std::io::Result<std::os::unix::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt as _;
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // The caller holds the agent lock, so a socket file here is a stale one.
    let _ = std::fs::remove_file(socket);
    let listener = std::os::unix::net::UnixListener::bind(socket)?;
    // Root only by default. When other uids are allowed, anyone may connect and the peer
    // credentials of each connection decide (see admit).
    let mode = if access.allowed_uids.is_empty() {
        0o600
    } else {
        0o666
    };
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(mode))?;
    tracing::info!(socket = %socket.display(), "API listening");
    Ok(listener)
}

/// Serves the API on `listener` (from [`listen`], or the socket systemd passed) until
/// `shutdown`.
pub async fn serve(
    listener: std::os::unix::net::UnixListener,
    node: Arc<Node>,
    access: Access,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let listener = UnixListener::from_std(listener)?;
    let serving = Routers {
        serving: router(node),
        by_uid: std::sync::Mutex::default(),
    };
    let warned = std::sync::Mutex::default();
    crate::http::serve(
        listener,
        TOTAL_CONNECTIONS,
        move |stream: &UnixStream| admit(stream, &serving, &access, &warned),
        shutdown,
    )
    .await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_answer_is_asked_for_as_rfc_7240_writes_it() {
        let asks = |values: &[&str]| {
            let mut h = axum::http::HeaderMap::new();
            for v in values {
                h.append("prefer", v.parse().unwrap());
            }
            prefers_minimal(&h)
        };
        for yes in [
            &["return=minimal"][..],
            &["Return=Minimal"],
            &["wait=5, return=minimal"],
            &["wait=5", "return = \"minimal\"; x=y"],
        ] {
            assert!(asks(yes), "{yes:?}");
        }
        for no in [
            &[][..],
            &["return=representation"],
            &["respond-async"],
            &["return"],
            &["x=return=minimal"],
        ] {
            assert!(!asks(no), "{no:?}");
        }
    }
}
