//! The API client used by the CLI: HTTP/1.1 over the agent's Unix socket (hyper).

use std::path::{Path, PathBuf};

use http_body_util::{BodyExt as _, Full};
use hyper::{Method, Request, StatusCode, body::Bytes};
use hyper_util::rt::TokioIo;
use serde::{Serialize, de::DeserializeOwned};

use super::ErrorBody;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot reach the rein agent at {socket}: {source}. Start it with `rein agent` (or \
         `systemctl start rein`), or point --socket at its socket"
    )]
    AgentDown {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "not allowed to use the rein agent's socket {socket}: {source}. The API is root-only \
         unless the agent's allowed_uids (or --allow-uid) lists your uid"
    )]
    Denied {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The agent answered with an error.
    #[error("{message}")]
    Api { status: u16, message: String },
    #[error("talking to the agent: {0}")]
    Protocol(String),
    /// The connection ended before a whole answer came (the agent died or restarted, or
    /// closed a connection over its cap): whether the request was carried out is unknown.
    #[error(
        "the agent closed the connection before answering ({0}); it may be restarting: \
         check it and run the command again"
    )]
    Cut(String),
}

pub struct Client {
    socket: PathBuf,
    minimal: bool,
}

impl Client {
    pub fn new(socket: &Path) -> Self {
        Self {
            socket: socket.to_owned(),
            minimal: false,
        }
    }

    /// The same agent, asked for answers without a body where it can skip work for them
    /// (`Prefer: return=minimal`): `rein hook` needs only the status of its registration,
    /// and a container start waits for it.
    pub fn minimal(&self) -> Self {
        Self {
            socket: self.socket.clone(),
            minimal: true,
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends one request; `Ok(None)` for an answer without a body (204, or a minimal 201).
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<Option<T>, ClientError> {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|source| {
                let socket = self.socket.clone();
                if source.kind() == std::io::ErrorKind::PermissionDenied {
                    ClientError::Denied { socket, source }
                } else {
                    ClientError::AgentDown { socket, source }
                }
            })?;
        let proto = |e: &dyn std::fmt::Display| ClientError::Protocol(e.to_string());
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| proto(&e))?;
        let conn = tokio::spawn(conn);
        let payload = match body {
            Some(b) => Bytes::from(serde_json::to_vec(b).map_err(|e| proto(&e))?),
            None => Bytes::new(),
        };
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "rein")
            .header("content-type", "application/json");
        if self.minimal {
            req = req.header("prefer", super::PREFER_MINIMAL);
        }
        let req = req.body(Full::new(payload)).map_err(|e| proto(&e))?;
        let cut = |e: hyper::Error| ClientError::Cut(e.to_string());
        let resp = sender.send_request(req).await.map_err(cut)?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await.map_err(cut)?.to_bytes();
        conn.abort();
        if !status.is_success() {
            let message = serde_json::from_slice::<ErrorBody>(&bytes)
                .map(|e| e.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned());
            return Err(ClientError::Api {
                status: status.as_u16(),
                message,
            });
        }
        if status == StatusCode::NO_CONTENT || bytes.is_empty() {
            return Ok(None);
        }
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| proto(&e))
    }
}
