//! A fake forge for end-to-end tests: GitHub's, Gitea's or GitLab's
//! commit-status endpoints on 127.0.0.1 (plain or TLS), driven by the real
//! `hoist` binary.
//!
//! No forge can run here, so this is a fake, and it refuses what the real
//! forge refuses by the very rules of the library's own fake
//! (src/report/fake_forge/rules.rs, included here by path; the library's
//! is test-only inside the crate), and on GitLab a status posted twice in
//! the same state. It keeps what is posted and serves it back in the
//! forge's own shape, with `Date` from a clock the test controls, `ETag`
//! and `304` (GitHub), capped pages (Gitea) and GitLab's paging headers
//! (src/report/fake_forge/store.rs, also included by path), and counts
//! reads, `304`s and writes per token so tests can hold hoist to its
//! request budget. Accepted statuses and every attempt (with the answer
//! given) are kept for the test to read.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, Uri};
use axum::response::Response;

use super::serve::{Server, TestCa, axum_service};

#[path = "../../src/report/fake_forge/rules.rs"]
mod rules;
#[path = "../../src/report/fake_forge/store.rs"]
mod store;

pub use rules::{Flavor, Posted as Accepted, REPOSITORY};
use store::{Answer, Request, Store};
pub use store::{Counters, Stored};

/// The identity the main token's requests are counted under.
pub const MAIN_IDENTITY: &str = "hoist";

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
    shared: Arc<Shared>,
}

struct Shared {
    store: Mutex<Store>,
    accepted: Mutex<Vec<Accepted>>,
    /// (HTTP status, the forge's message) for every request.
    attempts: Mutex<Vec<(u16, String)>>,
    /// (method, path and query) of every request, in order.
    targets: Mutex<Vec<(String, String)>>,
    /// When posts were refused by the rate limit.
    limited: Mutex<Vec<std::time::Instant>>,
}

impl FakeForge {
    pub fn start(flavor: Flavor, token: &str, ca: Option<&TestCa>) -> FakeForge {
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::new(flavor, token, MAIN_IDENTITY)),
            accepted: Mutex::new(Vec::new()),
            attempts: Mutex::new(Vec::new()),
            targets: Mutex::new(Vec::new()),
            limited: Mutex::new(Vec::new()),
        });
        let handler = Arc::clone(&shared);
        let router = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let shared = Arc::clone(&handler);
                async move { handle(&shared, &method, &uri, &headers, &body) }
            },
        );
        let server = Server::start(ca, axum_service(router));
        shared
            .store
            .lock()
            .unwrap()
            .set_base_url(&server.base_url());
        FakeForge {
            server,
            flavor,
            token: token.to_string(),
            shared,
        }
    }

    pub fn accepted(&self) -> Vec<Accepted> {
        self.shared.accepted.lock().unwrap().clone()
    }

    pub fn attempts(&self) -> Vec<(u16, String)> {
        self.shared.attempts.lock().unwrap().clone()
    }

    /// (method, path and query) of every request so far, oldest first: a
    /// read's page is in its query.
    pub fn targets(&self) -> Vec<(String, String)> {
        self.shared.targets.lock().unwrap().clone()
    }

    /// Every status the forge keeps, oldest first (GitLab: a job moved on
    /// in place is one entry).
    pub fn stored(&self) -> Vec<Stored> {
        self.shared.store.lock().unwrap().stored()
    }

    /// Accept `token` too, counting its requests under `identity`.
    pub fn add_token(&self, token: &str, identity: &str) {
        self.shared.store.lock().unwrap().add_token(token, identity);
    }

    /// The requests of `identity` (the main token's: [`MAIN_IDENTITY`]).
    pub fn counters(&self, identity: &str) -> Counters {
        self.shared.store.lock().unwrap().counters(identity)
    }

    pub fn all_counters(&self) -> BTreeMap<String, Counters> {
        self.shared.store.lock().unwrap().all_counters()
    }

    /// Store a status as another system (CI) would post it, counted under
    /// its own identity: `state` in the forge's words.
    pub fn seed(&self, sha: &str, context: &str, state: &str, description: &str) {
        let posted = Accepted {
            sha: sha.into(),
            state: state.into(),
            context: context.into(),
            description: description.into(),
            target_url: None,
        };
        let mut store = self.shared.store.lock().unwrap();
        if store.post(posted, "ci").is_err() {
            panic!("the fake forge refused a seeded status");
        }
    }

    /// Statuses stored for (`sha`, `context`).
    pub fn writes_for(&self, sha: &str, context: &str) -> u64 {
        self.shared.store.lock().unwrap().writes_for(sha, context)
    }

    /// The forge's clock now.
    pub fn now(&self) -> SystemTime {
        self.shared.store.lock().unwrap().clock.now()
    }

    /// Move the forge's clock forward.
    pub fn advance(&self, d: Duration) {
        self.shared.store.lock().unwrap().clock.advance(d);
    }

    /// GitHub: serve pages with `ETag`s and answer `If-None-Match` with
    /// `304` (the default), or not.
    pub fn set_etags(&self, on: bool) {
        self.shared.store.lock().unwrap().etags = on;
    }

    /// Run the forge's clock `offset_secs` off this machine's.
    pub fn skew(&self, offset_secs: i64) {
        self.shared.store.lock().unwrap().clock.skew(offset_secs);
    }

    /// Refuse every post for `span` from now, `403` with `Retry-After:
    /// retry_after` seconds, as GitHub's secondary rate limit does.
    pub fn limit_posts(&self, span: Duration, retry_after: u64) {
        self.shared
            .store
            .lock()
            .unwrap()
            .limit_posts(span, retry_after);
    }

    /// When each post was answered `403` by the rate limit (this machine's clock).
    pub fn limited_at(&self) -> Vec<std::time::Instant> {
        self.shared.limited.lock().unwrap().clone()
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

fn handle(
    shared: &Shared,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Response {
    shared.targets.lock().unwrap().push((
        method.to_string(),
        uri.path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
    ));
    let mut store = shared.store.lock().unwrap();
    let date = store.date_header();
    let answer = match store.check(method, uri, headers, body) {
        Err(refusal) => Answer::refusal(refusal),
        Ok((Request::Read(q), identity)) => store.read(&q, &identity),
        Ok((Request::Post(_), _)) if store.post_limited().is_some() => {
            shared
                .limited
                .lock()
                .unwrap()
                .push(std::time::Instant::now());
            store.post_limited().expect("limited")
        }
        Ok((Request::Post(posted), identity)) => match store.post(posted.clone(), &identity) {
            Ok(answer) => {
                shared.accepted.lock().unwrap().push(posted);
                answer
            }
            Err(refusal) => Answer::refusal(refusal),
        },
    };
    let message = serde_json::from_str::<serde_json::Value>(&answer.body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| match answer.code {
            201 => "created".into(),
            304 => "not modified".into(),
            _ => "listed".into(),
        });
    shared.attempts.lock().unwrap().push((answer.code, message));
    let mut resp = Response::builder().status(answer.code).header("date", date);
    if answer.code != 304 {
        resp = resp.header("content-type", "application/json");
    }
    for (k, v) in &answer.headers {
        resp = resp.header(k.as_str(), v.as_str());
    }
    let body = if answer.code == 304 {
        Body::empty()
    } else {
        Body::from(answer.body)
    };
    resp.body(body).unwrap()
}
