//! A fake forge for end-to-end tests: GitHub's, Gitea's or GitLab's
//! commit-status endpoint on 127.0.0.1 (plain or TLS), driven by the real
//! `hoist` binary.
//!
//! No forge can run here, so this is a fake, and it refuses what the real
//! forge refuses by the very rules of the library's own fake
//! (src/report/fake_forge/rules.rs, included here by path; the library's
//! is test-only inside the crate), and on GitLab a status posted twice in
//! the same state. Accepted statuses and every attempt (with the answer
//! given) are kept for the test to read.

use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;

use super::serve::{Server, TestCa, axum_service};

#[path = "../../src/report/fake_forge/rules.rs"]
mod rules;

use rules::Refusal;
pub use rules::{Flavor, Posted as Accepted, REPOSITORY};

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
                    let valid = rules::validate(
                        shared.flavor,
                        &shared.token,
                        &method,
                        &uri,
                        &headers,
                        &body,
                    );
                    let (code, message) = match valid {
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

fn accept(shared: &Shared, status: Accepted) -> Refusal {
    let mut accepted = shared.accepted.lock().unwrap();
    if shared.flavor == Flavor::Gitlab {
        let last = accepted
            .iter()
            .rev()
            .find(|a| a.sha == status.sha && a.context == status.context);
        if last.is_some_and(|a| a.state == status.state) {
            return rules::cannot_transition(&status.state);
        }
    }
    accepted.push(status);
    (201, "created".into())
}
