//! A fake forge for tests: GitHub's, Gitea's or GitLab's commit-status
//! endpoint on 127.0.0.1, as strict as the real one.
//!
//! No forge can run here, so this is the one place hoist tests against a
//! fake (STYLE.md). To be worth anything it refuses whatever the real forge
//! refuses: every rule in [`rules`] (shared with the end-to-end tests' fake),
//! and (GitLab) a transition to the state a status already has. Tests can
//! script answers (429 with `Retry-After`, 5xx) that are returned, in order,
//! to requests that are otherwise valid, and read back every attempt and
//! every accepted status. The server stops when the [`FakeForge`] is dropped.

mod rules;

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{ProviderKind, ProviderSettings, State, Status, build_provider};
pub(crate) use rules::Flavor;

/// One scripted answer.
#[derive(Clone, Debug)]
pub(crate) struct Scripted {
    code: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Scripted {
    pub(crate) fn status(code: u16) -> Scripted {
        Scripted {
            code,
            headers: Vec::new(),
            body: r#"{"message":"scripted"}"#.into(),
        }
    }

    pub(crate) fn header(mut self, name: &str, value: &str) -> Scripted {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// A status the fake accepted.
#[derive(Clone, Debug)]
pub(crate) struct Accepted {
    pub(crate) at: Instant,
    pub(crate) sha: String,
    /// As the forge names it (`failed` on GitLab).
    pub(crate) state: String,
    /// `context` (GitHub, Gitea) or `name` (GitLab).
    pub(crate) context: String,
    pub(crate) description: String,
    pub(crate) target_url: Option<String>,
}

struct Shared {
    flavor: Flavor,
    token: String,
    script: Mutex<VecDeque<Scripted>>,
    attempts: Mutex<Vec<Instant>>,
    accepted: Mutex<Vec<Accepted>>,
    /// GitLab: current state per (sha, name).
    gitlab_states: Mutex<HashMap<(String, String), String>>,
}

pub(crate) struct FakeForge {
    /// Base URL to use as `api_url`, with a trailing slash to prove joining
    /// copes with it.
    pub(crate) url: String,
    pub(crate) token: String,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl FakeForge {
    /// GitHub/Gitea expect `acme/deploy`; GitLab expects `acme%2Fdeploy`.
    pub(crate) async fn start(flavor: Flavor) -> FakeForge {
        let token = "fake-token-6f1c0e".to_string();
        let shared = Arc::new(Shared {
            flavor,
            token: token.clone(),
            script: Mutex::new(VecDeque::new()),
            attempts: Mutex::new(Vec::new()),
            accepted: Mutex::new(Vec::new()),
            gitlab_states: Mutex::new(HashMap::new()),
        });
        let handler_shared = Arc::clone(&shared);
        let app = Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let shared = Arc::clone(&handler_shared);
                async move { handle(&shared, method, uri, headers, body) }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake forge");
        let addr = listener.local_addr().expect("fake forge address");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        FakeForge {
            url: format!("http://{addr}/"),
            token,
            shared,
            stop: Some(stop),
            task,
        }
    }

    /// Answers returned, in order, to the next valid requests.
    pub(crate) fn script(&self, answers: impl IntoIterator<Item = Scripted>) {
        lock(&self.shared.script).extend(answers);
    }

    /// When each request arrived, valid or not.
    pub(crate) fn attempts(&self) -> Vec<Instant> {
        lock(&self.shared.attempts).clone()
    }

    pub(crate) fn accepted(&self) -> Vec<Accepted> {
        lock(&self.shared.accepted).clone()
    }

    /// Settings that point `kind` (github, gitea or gitlab, matching the
    /// flavor) at this fake, with its token.
    pub(crate) fn settings(&self, kind: ProviderKind) -> ProviderSettings {
        // GitLab gets the plain path `acme/deploy`: the provider must
        // encode it.
        ProviderSettings {
            api_url: Some(self.url.clone()),
            token: Some(self.token.clone()),
            allow_http: true,
            ..ProviderSettings::for_test(kind)
        }
    }

    /// Posts `status(state)` for each of `states`, in order, through a
    /// provider of this fake's flavor that links to `target_url`, and
    /// returns what the fake accepted. Each post must succeed.
    pub(crate) async fn post_states(
        &self,
        target_url: &str,
        states: &[State],
        status: impl Fn(State) -> Status,
    ) -> Vec<Accepted> {
        let kind = match self.shared.flavor {
            Flavor::Github => ProviderKind::Github,
            Flavor::Gitea => ProviderKind::Gitea,
            Flavor::Gitlab => ProviderKind::Gitlab,
        };
        let settings = ProviderSettings {
            target_url: Some(target_url.into()),
            ..self.settings(kind)
        };
        let provider = build_provider(&settings).expect("provider");
        for state in states {
            provider.post(&status(*state)).await.expect("accepted");
        }
        self.accepted()
    }
}

impl Drop for FakeForge {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn reply(code: u16, message: &str) -> Response {
    let code = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        code,
        [("content-type", "application/json")],
        serde_json::json!({ "message": message }).to_string(),
    )
        .into_response()
}

fn handle(shared: &Shared, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    lock(&shared.attempts).push(Instant::now());
    match rules::validate(shared.flavor, &shared.token, &method, &uri, &headers, &body) {
        Err((code, message)) => reply(code, &message),
        Ok(posted) => {
            let status = Accepted {
                at: Instant::now(),
                sha: posted.sha,
                state: posted.state,
                context: posted.context,
                description: posted.description,
                target_url: posted.target_url,
            };
            if let Some(s) = lock(&shared.script).pop_front() {
                let mut resp = reply(s.code, &s.body);
                for (k, v) in &s.headers {
                    if let (Ok(k), Ok(v)) = (
                        axum::http::HeaderName::from_bytes(k.as_bytes()),
                        axum::http::HeaderValue::from_str(v),
                    ) {
                        resp.headers_mut().insert(k, v);
                    }
                }
                return resp;
            }
            if shared.flavor == Flavor::Gitlab {
                let key = (status.sha.clone(), status.context.clone());
                let mut states = lock(&shared.gitlab_states);
                if states.get(&key) == Some(&status.state) {
                    let (code, message) = rules::cannot_transition(&status.state);
                    return reply(code, &message);
                }
                states.insert(key, status.state.clone());
            }
            lock(&shared.accepted).push(status);
            (
                StatusCode::CREATED,
                [("content-type", "application/json")],
                r#"{"id":1}"#,
            )
                .into_response()
        }
    }
}
