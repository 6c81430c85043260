//! A fake forge for tests: GitHub's, Gitea's or GitLab's commit-status
//! endpoints on 127.0.0.1, as strict as the real ones.
//!
//! No forge can run here, so this is the one place hoist tests against a
//! fake (STYLE.md). To be worth anything it refuses whatever the real forge
//! refuses: every rule in [`rules`] (shared with the end-to-end tests' fake),
//! and (GitLab) a transition to the state a status already has. It keeps
//! what is posted and serves it back as that forge does ([`store`]: paging,
//! `ETag`/`304`, `Date` from a clock the test controls) and counts reads,
//! `304`s and writes per token. Tests can script answers (429 with
//! `Retry-After`, 5xx) that are returned, in order, to requests that are
//! otherwise valid, and read back every attempt and every accepted status.
//! The server stops when the [`FakeForge`] is dropped.

mod rules;
mod store;

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{ProviderKind, ProviderSettings, State, Status, build_provider};
pub(crate) use rules::Flavor;
pub(crate) use store::Counters;
use store::{Answer, Request, Store};

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

    pub(crate) fn body(mut self, body: &str) -> Scripted {
        self.body = body.into();
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
    script: Mutex<VecDeque<Scripted>>,
    attempts: Mutex<Vec<Instant>>,
    accepted: Mutex<Vec<Accepted>>,
    store: Mutex<Store>,
}

/// The identity the main token's requests are counted under.
pub(crate) const MAIN_IDENTITY: &str = "hoist";

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
            script: Mutex::new(VecDeque::new()),
            attempts: Mutex::new(Vec::new()),
            accepted: Mutex::new(Vec::new()),
            store: Mutex::new(Store::new(flavor, &token, MAIN_IDENTITY)),
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
        lock(&shared.store).set_base_url(&format!("http://{addr}"));
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

    /// Accept `token` too, counting its requests under `identity`.
    pub(crate) fn add_token(&self, token: &str, identity: &str) {
        lock(&self.shared.store).add_token(token, identity);
    }

    /// The requests of `identity` (the main token's: [`MAIN_IDENTITY`]).
    pub(crate) fn counters(&self, identity: &str) -> Counters {
        lock(&self.shared.store).counters(identity)
    }

    /// Every identity's requests.
    pub(crate) fn all_counters(&self) -> BTreeMap<String, Counters> {
        lock(&self.shared.store).all_counters()
    }

    /// Statuses stored for (`sha`, `context`).
    pub(crate) fn writes_for(&self, sha: &str, context: &str) -> u64 {
        lock(&self.shared.store).writes_for(sha, context)
    }

    /// Every status the forge keeps, oldest first.
    pub(crate) fn stored(&self) -> Vec<store::Stored> {
        lock(&self.shared.store).stored()
    }

    /// The forge's clock now.
    pub(crate) fn now(&self) -> SystemTime {
        lock(&self.shared.store).clock.now()
    }

    /// Stop the forge's clock at `t`.
    pub(crate) fn set_time(&self, t: SystemTime) {
        lock(&self.shared.store).clock.set(t);
    }

    /// Move the forge's clock forward.
    pub(crate) fn advance(&self, d: Duration) {
        lock(&self.shared.store).clock.advance(d);
    }

    /// Run the forge's clock `offset_secs` off this machine's.
    pub(crate) fn skew(&self, offset_secs: i64) {
        lock(&self.shared.store).clock.skew(offset_secs);
    }

    /// Refuse every post for `span` from now (`403`, `Retry-After:
    /// retry_after` seconds), as GitHub's secondary rate limit does.
    pub(crate) fn limit_posts(&self, span: Duration, retry_after: u64) {
        lock(&self.shared.store).limit_posts(span, retry_after);
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

    /// A provider of this fake's flavor pointed at it, with its token.
    pub(crate) fn provider(&self) -> Arc<dyn super::Provider> {
        build_provider(&self.settings(self.kind())).expect("provider")
    }

    fn kind(&self) -> ProviderKind {
        match self.shared.flavor {
            Flavor::Github => ProviderKind::Github,
            Flavor::Gitea => ProviderKind::Gitea,
            Flavor::Gitlab => ProviderKind::Gitlab,
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
        let settings = ProviderSettings {
            target_url: Some(target_url.into()),
            ..self.settings(self.kind())
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

fn respond(answer: Answer, date: &str) -> Response {
    let code = StatusCode::from_u16(answer.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = if code == StatusCode::NOT_MODIFIED {
        code.into_response()
    } else {
        (code, [("content-type", "application/json")], answer.body).into_response()
    };
    // A scripted answer may set its own Date (or an unreadable one).
    let mut headers = vec![("date".to_string(), date.to_string())];
    headers.extend(answer.headers);
    for (k, v) in &headers {
        if let (Ok(k), Ok(v)) = (
            axum::http::HeaderName::from_bytes(k.as_bytes()),
            axum::http::HeaderValue::from_str(v),
        ) {
            resp.headers_mut().insert(k, v);
        }
    }
    resp
}

fn handle(shared: &Shared, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    lock(&shared.attempts).push(Instant::now());
    let mut store = lock(&shared.store);
    let date = store.date_header();
    let (request, identity) = match store.check(&method, &uri, &headers, &body) {
        Ok(r) => r,
        Err(refusal) => return respond(Answer::refusal(refusal), &date),
    };
    if let Some(s) = lock(&shared.script).pop_front() {
        return respond(
            Answer {
                code: s.code,
                headers: s.headers,
                body: s.body,
            },
            &date,
        );
    }
    match request {
        Request::Read(q) => respond(store.read(&q, &identity), &date),
        Request::Post(_) if store.post_limited().is_some() => {
            respond(store.post_limited().expect("limited"), &date)
        }
        Request::Post(posted) => {
            let status = Accepted {
                at: Instant::now(),
                sha: posted.sha.clone(),
                state: posted.state.clone(),
                context: posted.context.clone(),
                description: posted.description.clone(),
                target_url: posted.target_url.clone(),
            };
            match store.post(posted, &identity) {
                Ok(answer) => {
                    lock(&shared.accepted).push(status);
                    respond(answer, &date)
                }
                Err(refusal) => respond(Answer::refusal(refusal), &date),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Read;

    const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

    #[tokio::test]
    async fn requests_are_counted_per_token_and_times_follow_the_forge_clock() {
        let fake = FakeForge::start(Flavor::Github).await;
        fake.add_token("token-of-web-2", "web-2");
        fake.skew(600);
        let main = fake.provider();
        let web2 = build_provider(&ProviderSettings {
            token: Some("token-of-web-2".into()),
            ..fake.settings(ProviderKind::Github)
        })
        .expect("provider");
        let status = |host: &str| Status {
            sha: SHA.into(),
            state: State::Pending,
            context: format!("hoist/production/{host}"),
            description: "applying".into(),
        };
        main.post(&status("web-1")).await.expect("posted");
        web2.post(&status("web-2")).await.expect("posted");
        let Read::Changed(first) = web2.statuses(SHA, None).await.expect("read") else {
            panic!("first read");
        };
        let etag = first.etag.clone();
        web2.statuses(SHA, etag.as_deref()).await.expect("read");
        web2.statuses(SHA, etag.as_deref()).await.expect("read");

        let counters = fake.all_counters();
        assert_eq!(
            counters.get(MAIN_IDENTITY),
            Some(&Counters {
                reads: 0,
                not_modified: 0,
                writes: 1
            })
        );
        assert_eq!(
            counters.get("web-2"),
            Some(&Counters {
                reads: 1,
                not_modified: 2,
                writes: 1
            })
        );
        let stored = fake.stored();
        assert_eq!(stored.len(), 2);
        assert_eq!(stored[1].creator, "web-2");
        // Ten minutes ahead of this machine: so are its times and its Date.
        let ahead = stored[0]
            .created_at
            .duration_since(SystemTime::now())
            .expect("the forge is ahead");
        assert!(ahead > Duration::from_secs(590), "{ahead:?}");
        let date_ahead = first.date.duration_since(SystemTime::now()).expect("ahead");
        assert!(date_ahead > Duration::from_secs(580), "{date_ahead:?}");
    }
}
