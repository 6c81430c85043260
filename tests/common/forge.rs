//! A fake forge for end-to-end tests: GitHub's, Gitea's or GitLab's
//! commit-status endpoint on 127.0.0.1 (plain or TLS), driven by the real
//! `hoist` binary.
//!
//! No forge can run here, so this is a fake, and like the library's own
//! (`src/report/fake_forge.rs`, test-only inside the crate) it refuses what
//! the real forge refuses: another path or method, a missing or wrong token
//! in that forge's header, a body that is not a JSON object, unknown or
//! missing fields, states the forge does not know, descriptions over 140
//! characters, an unencoded GitLab project path, and on GitLab a status
//! posted twice in the same state. Accepted statuses and every attempt
//! (with the answer given) are kept for the test to read.

use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;

use super::serve::{Server, TestCa, axum_service};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    Github,
    Gitea,
    Gitlab,
}

impl Flavor {
    /// The host config's `status.provider`.
    pub fn provider(self) -> &'static str {
        match self {
            Flavor::Github => "github",
            Flavor::Gitea => "gitea",
            Flavor::Gitlab => "gitlab",
        }
    }
}

/// A status the fake accepted, as the forge names things.
#[derive(Clone, Debug)]
pub struct Accepted {
    pub sha: String,
    /// `failed` on GitLab.
    pub state: String,
    /// `context`, or GitLab's `name`.
    pub context: String,
    pub description: String,
}

pub const REPOSITORY: &str = "acme/deploy";

pub struct FakeForge {
    pub server: Server,
    pub flavor: Flavor,
    pub token: String,
    accepted: Arc<Mutex<Vec<Accepted>>>,
    /// (HTTP status, the forge's message) for every request.
    attempts: Arc<Mutex<Vec<(u16, String)>>>,
}

struct Shared {
    flavor: Flavor,
    token: String,
    accepted: Arc<Mutex<Vec<Accepted>>>,
    attempts: Arc<Mutex<Vec<(u16, String)>>>,
}

impl FakeForge {
    pub fn start(flavor: Flavor, token: &str, ca: Option<&TestCa>) -> FakeForge {
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let attempts = Arc::new(Mutex::new(Vec::new()));
        let shared = Arc::new(Shared {
            flavor,
            token: token.to_string(),
            accepted: Arc::clone(&accepted),
            attempts: Arc::clone(&attempts),
        });
        let router = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let shared = Arc::clone(&shared);
                async move {
                    let (code, message) = match validate(&shared, &method, &uri, &headers, &body) {
                        Ok(status) => accept(&shared, status),
                        Err(refusal) => refusal,
                    };
                    shared
                        .attempts
                        .lock()
                        .unwrap()
                        .push((code, message.clone()));
                    Response::builder()
                        .status(code)
                        .header("content-type", "application/json")
                        .body(Body::from(
                            serde_json::json!({ "message": message }).to_string(),
                        ))
                        .unwrap()
                }
            },
        );
        FakeForge {
            server: Server::start(ca, axum_service(router)),
            flavor,
            token: token.to_string(),
            accepted,
            attempts,
        }
    }

    pub fn accepted(&self) -> Vec<Accepted> {
        self.accepted.lock().unwrap().clone()
    }

    pub fn attempts(&self) -> Vec<(u16, String)> {
        self.attempts.lock().unwrap().clone()
    }

    /// The `status:` section of a host config pointing at this fake.
    pub fn status_config(&self, token_file: &std::path::Path) -> String {
        format!(
            "status:\n  provider: {}\n  api_url: {}/\n  repository: {REPOSITORY}\n  token_file: {}\n",
            self.flavor.provider(),
            self.server.base_url(),
            token_file.display()
        )
    }

    /// The last state the fake accepted for a commit (GitHub's names:
    /// GitLab's `failed` reads `failure`).
    pub fn final_state(&self, sha: &str) -> Option<String> {
        self.accepted()
            .into_iter()
            .rev()
            .find(|a| a.sha == sha)
            .map(|a| {
                if a.state == "failed" {
                    "failure".into()
                } else {
                    a.state
                }
            })
    }
}

type Refusal = (u16, String);

fn refuse(code: u16, message: &str) -> Refusal {
    (code, message.to_string())
}

fn accept(shared: &Shared, status: Accepted) -> Refusal {
    let mut accepted = shared.accepted.lock().unwrap();
    if shared.flavor == Flavor::Gitlab {
        let last = accepted
            .iter()
            .rev()
            .find(|a| a.sha == status.sha && a.context == status.context);
        if last.is_some_and(|a| a.state == status.state) {
            return refuse(
                400,
                &format!("Cannot transition status via :{0} from :{0}", status.state),
            );
        }
    }
    accepted.push(status);
    (201, "created".into())
}

fn validate(
    shared: &Shared,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Accepted, Refusal> {
    let prefix = match shared.flavor {
        Flavor::Github => format!("/repos/{REPOSITORY}/statuses/"),
        Flavor::Gitea => format!("/api/v1/repos/{REPOSITORY}/statuses/"),
        Flavor::Gitlab => format!(
            "/api/v4/projects/{}/statuses/",
            REPOSITORY.replace('/', "%2F")
        ),
    };
    let sha = uri
        .path()
        .strip_prefix(&prefix)
        .filter(|sha| sha.len() == 40 && sha.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| refuse(404, "Not Found"))?;
    if uri.query().is_some() {
        return Err(refuse(404, "Not Found"));
    }
    if method != Method::POST {
        return Err(refuse(405, "Method Not Allowed"));
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let authorized = match shared.flavor {
        Flavor::Github => header("authorization") == Some(&format!("Bearer {}", shared.token)),
        Flavor::Gitea => header("authorization") == Some(&format!("token {}", shared.token)),
        Flavor::Gitlab => header("private-token") == Some(shared.token.as_str()),
    };
    if !authorized {
        return Err(refuse(401, "Bad credentials"));
    }
    if shared.flavor == Flavor::Github {
        if header("accept") != Some("application/vnd.github+json") {
            return Err(refuse(415, "Unsupported 'Accept' header"));
        }
        if !header("user-agent").is_some_and(|ua| ua.starts_with("hoist/")) {
            return Err(refuse(403, "Request forbidden by administrative rules"));
        }
    }
    if !header("content-type").is_some_and(|ct| ct.starts_with("application/json")) {
        return Err(refuse(415, "Unsupported Media Type"));
    }
    let json: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| refuse(400, "Problems parsing JSON"))?;
    let obj = json
        .as_object()
        .ok_or_else(|| refuse(400, "Body should be a JSON object"))?;
    let (context_key, states): (&str, &[&str]) = match shared.flavor {
        Flavor::Github => ("context", &["pending", "success", "failure", "error"]),
        Flavor::Gitea => (
            "context",
            &["pending", "success", "failure", "error", "warning"],
        ),
        Flavor::Gitlab => (
            "name",
            &[
                "pending", "running", "success", "failed", "canceled", "skipped",
            ],
        ),
    };
    for key in obj.keys() {
        if ![context_key, "state", "description", "target_url"].contains(&key.as_str()) {
            return Err(refuse(422, &format!("unknown field {key}")));
        }
    }
    let string = |key: &str| obj.get(key).and_then(|v| v.as_str()).map(str::to_string);
    let state = string("state")
        .filter(|s| states.contains(&s.as_str()))
        .ok_or_else(|| refuse(422, "state is missing or invalid"))?;
    let context = string(context_key)
        .filter(|c| !c.is_empty())
        .ok_or_else(|| refuse(422, &format!("{context_key} is missing")))?;
    let description = string("description").ok_or_else(|| refuse(422, "description is missing"))?;
    if description.chars().count() > 140 {
        return Err(refuse(
            422,
            "description is too long (maximum is 140 characters)",
        ));
    }
    if let Some(v) = obj.get("target_url")
        && !v
            .as_str()
            .is_some_and(|u| u.starts_with("http://") || u.starts_with("https://"))
    {
        return Err(refuse(422, "target_url is invalid"));
    }
    Ok(Accepted {
        sha: sha.to_string(),
        state,
        context,
        description,
    })
}
