//! hoist's HTTP listener (SPEC §6): `GET /metrics`, `GET /healthz` and
//! `POST /hooks/git`.
//!
//! The listener is an edge: it reads shared state ([`Metrics`], [`Health`])
//! and pokes the daemon through a [`Notify`], but decides nothing about
//! deploys. A verified webhook only asks for a poll *now*; what is deployed
//! is still whatever the branch says when the poll runs, so a replayed or
//! reordered hook can never deploy anything by itself. A forge `status`
//! event (another server posted a commit status) also lets a rollout gate
//! read statuses again a second after its last read rather than a poll
//! interval (SPEC §8). Bursts coalesce:
//! `Notify` stores at most one permit, and the daemon lets the pokes
//! through `pace::TriggerPace`, at most one poll a second.
//!
//! Webhooks are accepted only when signed with `webhook_secret_file`'s
//! secret, however the forge signs: GitHub `X-Hub-Signature-256`, Gitea
//! `X-Gitea-Signature`, Forgejo `X-Forgejo-Signature` (HMAC-SHA256 of the
//! body), or GitLab's `X-Gitlab-Token` (the secret itself). Every comparison
//! is constant-time. With no secret configured every hook is refused: an
//! open trigger endpoint would let anyone make every server poll at will.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::sync::Notify;

use crate::metrics::{self, Metrics};

/// The largest webhook body read (forges send a few KiB to a few hundred).
pub const MAX_HOOK_BODY: usize = 1024 * 1024;

/// What the handlers share. Cheap to clone (all `Arc`s).
#[derive(Clone)]
pub struct HttpState {
    pub metrics: Arc<Metrics>,
    pub health: Arc<Health>,
    /// The webhook secret; replaced on config reload. `None`: hooks refused.
    pub webhook_secret: Arc<RwLock<Option<String>>>,
    /// Notified (`notify_one`) on every verified hook.
    pub trigger: Arc<Notify>,
    /// Set by a verified commit-status event, taken by the daemon.
    pub status_event: Arc<AtomicBool>,
}

impl std::fmt::Debug for HttpState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpState")
            .field("health", &self.health)
            .field("webhook_secret", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// Whether the poll loop is alive and polling successfully, for `/healthz`.
#[derive(Debug)]
pub struct Health {
    max_silence: Duration,
    inner: Mutex<HealthInner>,
}

#[derive(Debug)]
struct HealthInner {
    started: Instant,
    /// When the last poll finished, and whether it succeeded.
    last_poll: Option<(Instant, bool)>,
    last_error: Option<String>,
}

/// What `/healthz` says.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Starting,
    Ok,
    Unhealthy(String),
}

impl Health {
    /// `/healthz` fails when no poll has finished within `max_silence`
    /// (a stuck loop), or when the last poll failed.
    pub fn new(max_silence: Duration) -> Health {
        Health {
            max_silence,
            inner: Mutex::new(HealthInner {
                started: Instant::now(),
                last_poll: None,
                last_error: None,
            }),
        }
    }

    /// Record a finished poll; `error` says why it failed (a success clears
    /// the last error).
    pub fn record_poll(&self, ok: bool, error: Option<String>) {
        let mut inner = self.lock();
        inner.last_poll = Some((Instant::now(), ok));
        inner.last_error = if ok {
            None
        } else {
            Some(error.unwrap_or_else(|| "the last poll failed".into()))
        };
    }

    pub fn is_healthy(&self) -> bool {
        !matches!(self.verdict(), Verdict::Unhealthy(_))
    }

    /// Why the last poll failed, if it did.
    pub fn last_error(&self) -> Option<String> {
        self.lock().last_error.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HealthInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn verdict(&self) -> Verdict {
        let inner = self.lock();
        let silence = humantime::format_duration(self.max_silence);
        match inner.last_poll {
            None if inner.started.elapsed() <= self.max_silence => Verdict::Starting,
            None => Verdict::Unhealthy(format!("no poll has finished in {silence} since start")),
            Some((at, _)) if at.elapsed() > self.max_silence => {
                let mut msg = format!("no poll has finished in the last {silence}");
                if let Some(e) = &inner.last_error {
                    msg.push_str(&format!("; last error: {e}"));
                }
                Verdict::Unhealthy(msg)
            }
            Some((_, true)) => Verdict::Ok,
            Some((_, false)) => Verdict::Unhealthy(format!(
                "the last poll failed: {}",
                inner.last_error.as_deref().unwrap_or("unknown error")
            )),
        }
    }
}

/// The routes, for [`serve`] (and for tests that drive them directly).
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(get_metrics))
        .route("/healthz", get(get_healthz))
        .route(
            "/hooks/git",
            post(post_hook).layer(DefaultBodyLimit::max(MAX_HOOK_BODY)),
        )
        .with_state(state)
}

/// Serve until `shutdown` completes, then finish the requests in flight.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: HttpState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

async fn get_metrics(State(state): State<HttpState>) -> Response {
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        state.metrics.encode(),
    )
        .into_response()
}

async fn get_healthz(State(state): State<HttpState>) -> Response {
    let (code, body) = match state.health.verdict() {
        Verdict::Starting => (StatusCode::OK, "starting\n".to_string()),
        Verdict::Ok => (StatusCode::OK, "ok\n".to_string()),
        Verdict::Unhealthy(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    };
    (
        code,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

async fn post_hook(State(state): State<HttpState>, headers: HeaderMap, body: Bytes) -> Response {
    let verified = {
        let secret = state
            .webhook_secret
            .read()
            .unwrap_or_else(|e| e.into_inner());
        match secret.as_deref() {
            Some(secret) if !secret.is_empty() => verify(secret.as_bytes(), &headers, &body),
            _ => {
                tracing::warn!("webhook refused: no webhook_secret_file is configured");
                return (
                    StatusCode::UNAUTHORIZED,
                    "webhooks are disabled: no webhook_secret_file is configured\n",
                )
                    .into_response();
            }
        }
    };
    if !verified {
        tracing::warn!("webhook refused: missing or invalid signature");
        return (StatusCode::UNAUTHORIZED, "missing or invalid signature\n").into_response();
    }
    let event = headers
        .get("x-github-event")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if event == "ping" {
        return (StatusCode::OK, "pong\n").into_response();
    }
    if is_status_event(&headers) {
        state.status_event.store(true, Ordering::SeqCst);
    }
    tracing::debug!("verified webhook; polling now");
    state.trigger.notify_one();
    (StatusCode::ACCEPTED, "poll scheduled\n").into_response()
}

/// Whether the hook says a commit status changed: GitHub's and Gitea's
/// (Forgejo's) `status` event; GitLab keeps external statuses as jobs of a
/// pipeline, so its job and pipeline events.
fn is_status_event(headers: &HeaderMap) -> bool {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    ["x-github-event", "x-gitea-event", "x-forgejo-event"]
        .iter()
        .any(|h| header(h) == Some("status"))
        || matches!(header("x-gitlab-event"), Some("Job Hook" | "Pipeline Hook"))
}

/// True when any signature header present checks out against `secret`.
/// Several may be present (Gitea sends its own and GitHub's); one valid
/// signature proves the sender holds the secret.
fn verify(secret: &[u8], headers: &HeaderMap, body: &[u8]) -> bool {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let mut ok = false;
    if let Some(sig) = header("x-hub-signature-256") {
        ok |= sig
            .strip_prefix("sha256=")
            .is_some_and(|hex| hmac_matches(secret, body, hex));
    }
    for name in ["x-gitea-signature", "x-forgejo-signature"] {
        if let Some(sig) = header(name) {
            ok |= hmac_matches(secret, body, sig);
        }
    }
    if let Some(token) = headers.get("x-gitlab-token") {
        // Compare digests so that neither content nor length leaks.
        let given = Sha256::digest(token.as_bytes());
        let expected = Sha256::digest(secret);
        ok |= bool::from(given.as_slice().ct_eq(expected.as_slice()));
    }
    ok
}

/// Whether `hex_sig` is the hex HMAC-SHA256 of `body` under `secret`.
fn hmac_matches(secret: &[u8], body: &[u8], hex_sig: &str) -> bool {
    let Ok(sig) = hex::decode(hex_sig.trim()) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "It's a Secret to Everybody";

    struct Server {
        base: String,
        state: HttpState,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        task: tokio::task::JoinHandle<std::io::Result<()>>,
    }

    impl Server {
        async fn start(secret: Option<&str>, health: Health) -> Server {
            let state = HttpState {
                metrics: Arc::new(Metrics::new()),
                health: Arc::new(health),
                webhook_secret: Arc::new(RwLock::new(secret.map(str::to_string))),
                trigger: Arc::new(Notify::new()),
                status_event: Arc::new(AtomicBool::new(false)),
            };
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let base = format!("http://{}", listener.local_addr().expect("addr"));
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(serve(listener, state.clone(), async {
                let _ = stopped.await;
            }));
            Server {
                base,
                state,
                stop: Some(stop),
                task,
            }
        }

        /// POSTs `body` to `/hooks/git` with `headers`; the answer's status.
        async fn hook(&self, headers: &[(&str, &str)], body: &[u8]) -> reqwest::StatusCode {
            let mut req = reqwest::Client::new().post(format!("{}/hooks/git", self.base));
            for (name, value) in headers {
                req = req.header(*name, *value);
            }
            req.body(body.to_vec()).send().await.expect("send").status()
        }

        /// Whether the trigger holds a permit (consuming it).
        async fn triggered(&self) -> bool {
            tokio::time::timeout(Duration::from_millis(50), self.state.trigger.notified())
                .await
                .is_ok()
        }
    }

    impl Drop for Server {
        fn drop(&mut self) {
            if let Some(stop) = self.stop.take() {
                let _ = stop.send(());
            }
            self.task.abort();
        }
    }

    fn sign(secret: &str, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key size");
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    }

    const BODY: &[u8] = br#"{"ref":"refs/heads/main","after":"0123456789abcdef"}"#;

    #[tokio::test]
    async fn status_events_of_each_forge_are_told_apart_from_pushes() {
        let s = Server::start(Some(SECRET), Health::new(Duration::from_secs(60))).await;
        let sig = sign(SECRET, BODY);
        let github = format!("sha256={sig}");
        let taken = |s: &Server| s.state.status_event.swap(false, Ordering::SeqCst);

        let push = [("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &github)];
        assert_eq!(s.hook(&push, BODY).await, 202);
        assert!(s.triggered().await);
        assert!(!taken(&s), "a push is no status event");

        let events: [&[(&str, &str)]; 4] = [
            &[
                ("X-GitHub-Event", "status"),
                ("X-Hub-Signature-256", &github),
            ],
            &[("X-Gitea-Event", "status"), ("X-Gitea-Signature", &sig)],
            &[("X-Forgejo-Event", "status"), ("X-Forgejo-Signature", &sig)],
            &[
                ("X-Gitlab-Event", "Pipeline Hook"),
                ("X-Gitlab-Token", SECRET),
            ],
        ];
        for headers in events {
            assert_eq!(s.hook(headers, BODY).await, 202, "{headers:?}");
            assert!(s.triggered().await, "{headers:?}");
            assert!(taken(&s), "{headers:?}");
        }
        // Unsigned, it is nothing at all.
        assert_eq!(s.hook(&[("X-GitHub-Event", "status")], BODY).await, 401);
        assert!(!taken(&s));
    }

    #[tokio::test]
    async fn github_signatures_are_verified() {
        let s = Server::start(Some(SECRET), Health::new(Duration::from_secs(60))).await;
        let good = format!("sha256={}", sign(SECRET, BODY));
        let headers = [("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &good)];
        assert_eq!(s.hook(&headers, BODY).await, 202);
        assert!(s.triggered().await);

        let forged = format!("sha256={}", sign("guess", BODY));
        for sig in [forged.as_str(), "sha256=", "sha1=abc", &sign(SECRET, BODY)] {
            assert_eq!(
                s.hook(&[("X-Hub-Signature-256", sig)], BODY).await,
                401,
                "{sig}"
            );
        }
        // A valid signature for another body.
        assert_eq!(s.hook(&[("X-Hub-Signature-256", &good)], b"{}").await, 401);
        assert!(!s.triggered().await, "refused hooks must not trigger");
    }

    #[tokio::test]
    async fn gitea_and_forgejo_signatures_are_verified() {
        let s = Server::start(Some(SECRET), Health::new(Duration::from_secs(60))).await;
        for header in ["X-Gitea-Signature", "X-Forgejo-Signature"] {
            assert_eq!(
                s.hook(&[(header, &sign(SECRET, BODY))], BODY).await,
                202,
                "{header}"
            );
            assert!(s.triggered().await);

            assert_eq!(
                s.hook(&[(header, &sign("not the secret", BODY))], BODY)
                    .await,
                401,
                "{header}"
            );
            assert_eq!(
                s.hook(&[(header, "zz-not-hex")], BODY).await,
                401,
                "{header}"
            );
            assert!(!s.triggered().await);
        }
    }

    #[tokio::test]
    async fn gitlab_tokens_are_verified() {
        let s = Server::start(Some(SECRET), Health::new(Duration::from_secs(60))).await;
        assert_eq!(s.hook(&[("X-Gitlab-Token", SECRET)], BODY).await, 202);
        assert!(s.triggered().await);
        for token in [
            "It's a Secret to Everybod",
            "It's a Secret to Everybody!",
            "",
        ] {
            assert_eq!(
                s.hook(&[("X-Gitlab-Token", token)], BODY).await,
                401,
                "{token:?}"
            );
        }
        assert!(!s.triggered().await);
    }

    #[tokio::test]
    async fn unsigned_hooks_and_a_missing_secret_are_refused() {
        let s = Server::start(Some(SECRET), Health::new(Duration::from_secs(60))).await;
        assert_eq!(s.hook(&[], BODY).await, 401);

        let s = Server::start(None, Health::new(Duration::from_secs(60))).await;
        assert_eq!(
            s.hook(&[("X-Gitlab-Token", "")], BODY).await,
            401,
            "no secret: even an empty token is refused"
        );
        let sig = format!("sha256={}", sign("", BODY));
        assert_eq!(s.hook(&[("X-Hub-Signature-256", &sig)], BODY).await, 401);
        assert!(!s.triggered().await);
    }

    #[tokio::test]
    async fn a_reloaded_secret_takes_effect() {
        let s = Server::start(Some("old"), Health::new(Duration::from_secs(60))).await;
        *s.state.webhook_secret.write().expect("lock") = Some("new".into());
        assert_eq!(s.hook(&[("X-Gitlab-Token", "old")], b"").await, 401);
        assert_eq!(s.hook(&[("X-Gitlab-Token", "new")], b"").await, 202);
    }

    #[tokio::test]
    async fn github_ping_is_answered_without_a_poll() {
        let s = Server::start(Some(SECRET), Health::new(Duration::from_secs(60))).await;
        let sig = format!("sha256={}", sign(SECRET, BODY));
        let headers = [("X-GitHub-Event", "ping"), ("X-Hub-Signature-256", &sig)];
        assert_eq!(s.hook(&headers, BODY).await, 200);
        assert!(!s.triggered().await);
    }

    #[tokio::test]
    async fn a_burst_of_hooks_coalesces_into_one_poll() {
        let s = Server::start(Some(SECRET), Health::new(Duration::from_secs(60))).await;
        let sig = format!("sha256={}", sign(SECRET, BODY));
        for _ in 0..10 {
            assert_eq!(s.hook(&[("X-Hub-Signature-256", &sig)], BODY).await, 202);
        }
        assert!(s.triggered().await, "one poll");
        assert!(!s.triggered().await, "and only one");
    }

    #[tokio::test]
    async fn oversized_hooks_are_refused() {
        let s = Server::start(Some(SECRET), Health::new(Duration::from_secs(60))).await;
        let body = vec![b' '; MAX_HOOK_BODY + 1];
        let sig = format!("sha256={}", sign(SECRET, &body));
        assert_eq!(s.hook(&[("X-Hub-Signature-256", &sig)], &body).await, 413);
        assert!(!s.triggered().await);
    }

    #[tokio::test]
    async fn metrics_are_served_as_prometheus_text() {
        let s = Server::start(None, Health::new(Duration::from_secs(60))).await;
        s.state.metrics.poll(true);
        s.state.metrics.deploy("web", "success", 4.2);
        let r = reqwest::get(format!("{}/metrics", s.base))
            .await
            .expect("get");
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok()),
            Some("text/plain; version=0.0.4; charset=utf-8")
        );
        let text = r.text().await.expect("body");
        assert!(
            text.contains("hoist_polls_total{result=\"ok\"} 1"),
            "{text}"
        );
        assert!(text.contains("hoist_deploys_total{app=\"web\",result=\"success\"} 1"));

        let r = reqwest::Client::new()
            .post(format!("{}/metrics", s.base))
            .send()
            .await
            .expect("post");
        assert_eq!(r.status(), 405);
    }

    async fn healthz(s: &Server) -> (u16, String) {
        let r = reqwest::get(format!("{}/healthz", s.base))
            .await
            .expect("get");
        (r.status().as_u16(), r.text().await.expect("body"))
    }

    #[tokio::test]
    async fn healthz_follows_the_poll_loop() {
        let s = Server::start(None, Health::new(Duration::from_millis(400))).await;
        assert_eq!(healthz(&s).await, (200, "starting\n".into()));

        s.state.health.record_poll(true, None);
        assert_eq!(healthz(&s).await, (200, "ok\n".into()));
        assert!(s.state.health.is_healthy());

        s.state.health.record_poll(
            false,
            Some("cannot fetch https://git.example.com/acme/deploy.git".into()),
        );
        let (code, body) = healthz(&s).await;
        assert_eq!(code, 503);
        assert!(
            body.contains("cannot fetch https://git.example.com"),
            "{body}"
        );
        assert_eq!(
            s.state.health.last_error().as_deref(),
            Some("cannot fetch https://git.example.com/acme/deploy.git")
        );

        s.state.health.record_poll(true, None);
        assert_eq!(healthz(&s).await.0, 200);
        assert_eq!(s.state.health.last_error(), None);

        // The loop goes silent.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (code, body) = healthz(&s).await;
        assert_eq!(code, 503);
        assert!(body.contains("no poll has finished"), "{body}");
        assert!(!s.state.health.is_healthy());
    }

    #[tokio::test]
    async fn healthz_fails_when_the_first_poll_never_finishes() {
        let s = Server::start(None, Health::new(Duration::from_millis(100))).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (code, body) = healthz(&s).await;
        assert_eq!(code, 503);
        assert!(body.contains("since start"), "{body}");
    }

    #[tokio::test]
    async fn serve_stops_on_shutdown() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let state = HttpState {
            metrics: Arc::new(Metrics::new()),
            health: Arc::new(Health::new(Duration::from_secs(1))),
            webhook_secret: Arc::new(RwLock::new(None)),
            trigger: Arc::new(Notify::new()),
            status_event: Arc::new(AtomicBool::new(false)),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, state, async {
            let _ = stopped.await;
        }));
        let _ = stop.send(());
        let done = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("serve returns after shutdown")
            .expect("join");
        assert!(done.is_ok());
    }
}
