//! A git smart-HTTP server for tests: the real `git http-backend`, run as a
//! CGI program behind an HTTP server that demands a token the way forges do
//! (HTTP Basic, any user name, the token as password; 401 with a Basic
//! challenge otherwise). It also serves plain files under `/files/`, without
//! a token, for https artifact URLs, and redirects `/elsewhere/<path>` to
//! `<path>` on `localhost` (another host name for the same server), the way a
//! moved repository would. Every request is recorded
//! with the size of its answer, so tests can tell an ls-remote from a fetch
//! and see how much a fetch transferred.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;

use super::git_cgi::{self, Answer, Backend};
use super::serve::{Server, TestCa, axum_service};

/// One request the server answered.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    /// Path and query, e.g. `/config.git/info/refs?service=git-upload-pack`.
    pub target: String,
    pub status: u16,
    /// Bytes in the answer's body.
    pub bytes: usize,
    /// The Host header, e.g. `127.0.0.1:PORT` or `localhost:PORT`.
    pub host: String,
    /// Whether the request carried an Authorization header.
    pub authorization: bool,
}

pub struct GitHttp {
    pub server: Server,
    pub requests: Arc<Mutex<Vec<Request>>>,
}

struct Setup {
    root: PathBuf,
    token: Option<String>,
    backend: Backend,
    tls: bool,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl GitHttp {
    /// Serves the repositories under `root` (`/config.git` is
    /// `root/config.git`) and files under `root/<path>` as `/files/<path>`.
    /// `token`: None serves anyone (a public repository).
    pub fn start(root: &Path, token: Option<&str>, ca: Option<&TestCa>) -> GitHttp {
        let program = git_cgi::program();
        assert!(
            program.exists(),
            "git-http-backend not found at {}: install git",
            program.display()
        );
        let requests = Arc::new(Mutex::new(Vec::new()));
        let setup = Arc::new(Setup {
            root: root.to_path_buf(),
            token: token.map(str::to_string),
            backend: Backend {
                program,
                root: root.to_path_buf(),
                user: Some("hoist".into()),
            },
            tls: ca.is_some(),
            requests: Arc::clone(&requests),
        });
        let router = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let setup = Arc::clone(&setup);
                async move {
                    let target = uri
                        .path_and_query()
                        .map(|p| p.to_string())
                        .unwrap_or_default();
                    let (status, resp_headers, body) =
                        handle(&setup, &method, &uri, &headers, body).await;
                    setup.requests.lock().unwrap().push(Request {
                        method: method.to_string(),
                        target,
                        status,
                        bytes: body.len(),
                        host: headers
                            .get("host")
                            .and_then(|h| h.to_str().ok())
                            .unwrap_or("")
                            .to_string(),
                        authorization: headers.contains_key("authorization"),
                    });
                    let mut resp = Response::builder().status(status);
                    for (k, v) in resp_headers {
                        resp = resp.header(k, v);
                    }
                    resp.body(Body::from(body)).unwrap()
                }
            },
        );
        GitHttp {
            server: Server::start(ca, axum_service(router)),
            requests,
        }
    }

    /// The URL of a repository under the root, e.g. `url("config.git")`.
    pub fn url(&self, repo: &str) -> String {
        format!("{}/{repo}", self.server.base_url())
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    pub fn clear(&self) {
        self.requests.lock().unwrap().clear();
    }
}

fn deny() -> Answer {
    (
        401,
        vec![(
            "WWW-Authenticate".into(),
            "Basic realm=\"hoist test git\"".into(),
        )],
        b"Unauthorized\n".to_vec(),
    )
}

fn authorized(setup: &Setup, headers: &HeaderMap) -> bool {
    let Some(token) = &setup.token else {
        return true;
    };
    let Some(value) = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
    else {
        return false;
    };
    let Some(decoded) = base64_decode(value.trim()) else {
        return false;
    };
    let decoded = String::from_utf8_lossy(&decoded).into_owned();
    matches!(decoded.split_once(':'), Some((user, pass)) if !user.is_empty() && pass == token)
}

async fn handle(
    setup: &Setup,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: Bytes,
) -> Answer {
    if let Some(rest) = uri.path().strip_prefix("/elsewhere/") {
        let port = headers
            .get("host")
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.rsplit_once(':'))
            .map(|(_, p)| p.to_string())
            .unwrap_or_default();
        let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
        let scheme = if setup.tls { "https" } else { "http" };
        return (
            301,
            vec![(
                "Location".into(),
                format!("{scheme}://localhost:{port}/{rest}{query}"),
            )],
            Vec::new(),
        );
    }
    if let Some(file) = uri.path().strip_prefix("/files/") {
        if method != Method::GET || file.split('/').any(|c| c == ".." || c.is_empty()) {
            return (400, vec![], b"bad request\n".to_vec());
        }
        return match tokio::fs::read(setup.root.join(file)).await {
            Ok(bytes) => (200, vec![], bytes),
            Err(_) => (404, vec![], b"not found\n".to_vec()),
        };
    }
    if !authorized(setup, headers) {
        return deny();
    }
    setup.backend.answer(method, uri, headers, body).await
}

/// Standard base64 with padding, enough for an Authorization header.
fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let bytes = text.trim_end_matches('=').as_bytes();
    let mut out = Vec::new();
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= value(*c)? << (18 - 6 * i);
        }
        let take = match chunk.len() {
            4 => 3,
            3 => 2,
            2 => 1,
            _ => return None,
        };
        out.extend_from_slice(&n.to_be_bytes()[1..1 + take]);
    }
    Some(out)
}
