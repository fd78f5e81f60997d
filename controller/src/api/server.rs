//! The API server: axum on a Unix socket, with each connection's peer credentials checked.

use std::{path::Path, sync::Arc};

use axum::{
    Json, Router,
    extract::{
        ConnectInfo, DefaultBodyLimit, Path as UrlPath, Query, Request, State, connect_info,
    },
    http::StatusCode,
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::get,
    serve::IncomingStream,
};
use serde::Deserialize;
use tokio::net::UnixListener;

use super::{
    Container, CreateRequest, ErrorBody, LimitsBody, MAX_BODY, Stats, UsageJson, limits_from_map,
    limits_to_map,
};
use crate::{
    cgroup::{CgroupError, ContainerName},
    node::{Node, NodeError, Pod, Snapshot},
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
    access: Arc<Access>,
}

/// The connecting process's uid, from SO_PEERCRED (None if the kernel would not say).
#[derive(Debug, Clone, Copy)]
struct Peer {
    uid: Option<u32>,
}

impl connect_info::Connected<IncomingStream<'_, UnixListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, UnixListener>) -> Self {
        Self {
            uid: stream.io().peer_cred().ok().map(|c| c.uid()),
        }
    }
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

async fn check_peer(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    req: Request,
    next: Next,
) -> Response {
    match peer.uid {
        Some(uid) if st.access.allows(uid) => next.run(req).await,
        uid => {
            tracing::warn!(
                ?uid,
                "refused an API request from a peer that is not allowed"
            );
            ApiError(
                StatusCode::FORBIDDEN,
                format!(
                    "uid {} may not use the rein API: root only, unless the agent's \
                     allowed_uids lists it",
                    uid.map_or_else(|| "unknown".to_owned(), |u| u.to_string())
                ),
            )
            .into_response()
        }
    }
}

/// Runs a cgroup operation on the runtime's own thread. These are a few small reads and
/// writes of kernel files (microseconds); handing them to a blocking pool costs more than
/// they do (a cross-CPU wake-up per request), so only `rm --force`, which may wait for
/// killed processes, uses [`blocking`].
async fn inline<T>(f: impl FnOnce() -> Result<T, NodeError>) -> Result<T, ApiError> {
    f().map_err(ApiError::from)
}

/// Runs a cgroup operation that may wait on a blocking thread.
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
    let entry = node.entry(name)?;
    Ok(Container {
        name: name.to_string(),
        kind: entry.kind,
        group: entry.group.as_ref().map(ToString::to_string),
        path: entry.dir.display().to_string(),
        limits: limits_to_map(&node.limits(name)?),
    })
}

async fn list(State(st): State<AppState>) -> Result<Json<Vec<Container>>, ApiError> {
    let node = st.node.clone();
    let all = inline(move || {
        node.entries()
            .iter()
            .map(|e| info(&node, &e.name))
            .collect::<Result<Vec<_>, _>>()
    })
    .await?;
    Ok(Json(all))
}

async fn create(
    State(st): State<AppState>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Json(req): Json<CreateRequest>,
) -> Result<(StatusCode, Json<Container>), ApiError> {
    // Taking over any cgroup of the machine is for the runtimes' hooks, which run as root;
    // an allowed uid may only make containers under rein's own root.
    if req.cgroup.is_some() && peer.uid != Some(0) {
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
    let c = inline(move || {
        match &req.cgroup {
            Some(cgroup) => {
                node.register(&name, Path::new(cgroup), req.labels, &limits, pod.as_ref())?;
                tracing::info!(container = %name, %cgroup, limits = %limits, "registered");
            }
            None => {
                node.create(&name, req.kind, group.as_ref(), &limits)?;
                tracing::info!(
                    container = %name, kind = %req.kind, group = ?group, limits = %limits,
                    "created"
                );
            }
        }
        info(&node, &name)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(c)))
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

async fn set(
    State(st): State<AppState>,
    UrlPath(name): UrlPath<String>,
    Json(body): Json<LimitsBody>,
) -> Result<Json<Container>, ApiError> {
    let name = parse_name(&name)?;
    let limits = limits_from_map(&body.limits)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.to_string()))?;
    let node = st.node.clone();
    let c = inline(move || {
        node.set(&name, &limits)?;
        tracing::info!(container = %name, limits = %limits, "changed");
        info(&node, &name)
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
    let Some((container, groups)) = pairs.split_first() else {
        return Err(ApiError::from(NodeError::from(CgroupError::NotFound(name))));
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
    UrlPath(name): UrlPath<String>,
    Query(q): Query<RemoveQuery>,
) -> Result<StatusCode, ApiError> {
    let name = parse_name(&name)?;
    let node = st.node.clone();
    blocking(move || {
        match &q.cgroup {
            Some(cgroup) => node.unregister_if(&name, Path::new(cgroup))?,
            None => node.remove(&name, q.force)?,
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

pub fn router(node: Arc<Node>, access: Access) -> Router {
    let st = AppState {
        node,
        access: Arc::new(access),
    };
    Router::new()
        .route("/v1/containers", get(list).post(create))
        .route("/v1/stats", get(all_stats))
        .route(
            "/v1/containers/{name}",
            get(stats).patch(set).delete(remove),
        )
        .route("/v1/containers/{name}/why", get(why))
        .layer(middleware::from_fn(json_errors))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn_with_state(st.clone(), check_peer))
        .with_state(st)
}

/// Binds the socket (mode 0600, parent directory created) and serves until `shutdown`.
pub async fn serve(
    socket: &Path,
    node: Arc<Node>,
    access: Access,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // The caller holds the agent lock, so a socket file here is a stale one.
    let _ = std::fs::remove_file(socket);
    let listener = UnixListener::bind(socket)?;
    // Root only by default. When other uids are allowed, anyone may connect and the peer
    // credentials of each connection decide (see check_peer).
    let mode = if access.allowed_uids.is_empty() {
        0o600
    } else {
        0o666
    };
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(mode))?;
    tracing::info!(socket = %socket.display(), "API listening");
    axum::serve(
        listener,
        router(node, access).into_make_service_with_connect_info::<Peer>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}
