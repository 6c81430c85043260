//! The background poster: statuses go out without ever holding up a deploy,
//! and none is dropped on the way (SPEC §4).
//!
//! The pipeline calls [`Reporter::report`], which writes the status to the
//! outbox in `state_dir` (`outbox.rs`) and returns: it is in the kernel
//! before `report` returns, so a `kill -9` a moment later loses nothing. A
//! tokio task posts what the outbox holds, one status at a time, oldest
//! first, and takes each out once the forge accepted it. Keeping one poster
//! per outbox makes the rules simple to hold:
//!
//! - **Latest wins.** The outbox holds one status per `(sha, context)`; a
//!   newer one replaces an older one still waiting.
//! - **Never dropped, never hurried.** A forge that is down, answers 5xx,
//!   or rate-limits hoist holds the whole outbox (one forge, one token):
//!   after the forge's `Retry-After` or rate-limit reset however long, else
//!   with exponential backoff (1 s doubling to 5 minutes, with a little
//!   jitter so a fleet does not retry in step). A wait the forge asked for
//!   is written to the outbox, so a restarted hoist honours it too. A
//!   refused token or an unknown repository holds the outbox the same way
//!   until the `status:` settings are fixed (a reload takes the new ones at
//!   once). Only a status the forge refuses for what it says (a 422) is
//!   dropped, with a WARN; and past the latest 50 commits of a context,
//!   the oldest, with a WARN.
//! - **Never twice.** What was posted last per `(sha, context)` is kept in
//!   the outbox's journal, so an unchanged status is not posted again, a
//!   restart included, and a `pending` is not posted over a `pending`
//!   already posted for the same `(sha, context)`, whatever its text: a
//!   server waiting for its rollout wave ("4m left") would otherwise write
//!   again at every poll (SPEC §8 allows two writes per host and commit),
//!   and GitLab refuses a repeated state anyway.
//!
//! One process may make several reporters for one outbox (a reload builds
//! a new engine while the old one finishes): they share one poster, which
//! posts with the provider given last, and stops once every reporter is
//! gone, leaving what waits in the outbox for the next start.
//!
//! The outbox is opened by [`Reporter::open_outbox`] (the engine's start,
//! in a process holding the `state_dir` lock) or by the first `report`;
//! until then a reporter touches no file, so `hoist plan`, which builds an
//! engine without the lock, never posts a daemon's statuses.
//! [`Reporter::flush`] lets a short-lived `hoist once` wait for the outbox
//! to empty before it exits, up to a timeout; what is left is posted by
//! the next hoist that runs with the same `state_dir`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, SystemTime};

use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use super::outbox::{Book, Queued};
use super::{PostError, Provider, Status, truncate_description};
use crate::metrics::Metrics;

/// Backoff when the forge gave no time to wait; tests shorten it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RetryPolicy {
    pub(crate) initial: Duration,
    pub(crate) max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(300),
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `failures + 1`, jittered up by at most 10%.
    fn backoff(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(20);
        let base = self.initial.saturating_mul(1u32 << exp).min(self.max);
        base.mul_f64(rand::random_range(1.0..1.1))
    }
}

/// Hands statuses to the outbox and its poster. Cheap to clone; every
/// clone feeds the same outbox.
#[derive(Clone)]
pub struct Reporter {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Reporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reporter")
            .field("outbox", &self.shared.path)
            .finish_non_exhaustive()
    }
}

struct Shared {
    /// The journal (None: in memory only).
    path: Option<PathBuf>,
    provider: Mutex<Arc<dyn Provider>>,
    inner: Mutex<Inner>,
    /// Wakes the poster: a status queued, the outbox opened, a new provider.
    notify: Arc<Notify>,
    /// How many statuses wait.
    depth: watch::Sender<usize>,
    policy: RetryPolicy,
    metrics: Mutex<Option<Arc<Metrics>>>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        // The poster holds only a weak reference: let it see it is gone.
        self.notify.notify_one();
    }
}

struct Inner {
    book: Book,
    /// Whether `book` is the journal's (or, without a path, from the start).
    opened: bool,
    /// No post before this: the forge's wait, or a backoff.
    paused_until: Option<Instant>,
    /// Attempts that failed in a row.
    failures: u32,
}

/// The posters of this process, by outbox path: one per outbox.
fn posters() -> &'static Mutex<HashMap<PathBuf, Weak<Shared>>> {
    static POSTERS: OnceLock<Mutex<HashMap<PathBuf, Weak<Shared>>>> = OnceLock::new();
    POSTERS.get_or_init(|| Mutex::new(HashMap::new()))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A wall-clock moment as a local instant from now.
fn instant_of(t: SystemTime) -> Instant {
    Instant::now() + t.duration_since(SystemTime::now()).unwrap_or_default()
}

impl Reporter {
    /// A reporter whose outbox is the journal at `outbox` (`None`: in
    /// memory only). Must be called inside a tokio runtime. Another
    /// reporter of this process on the same journal shares its poster,
    /// which posts with `provider` from now on.
    pub fn spawn(provider: Arc<dyn Provider>, outbox: Option<PathBuf>) -> Reporter {
        Reporter::spawn_with(provider, outbox, RetryPolicy::default())
    }

    pub(crate) fn spawn_with(
        provider: Arc<dyn Provider>,
        outbox: Option<PathBuf>,
        policy: RetryPolicy,
    ) -> Reporter {
        let mut posters = lock(posters());
        if let Some(path) = &outbox {
            posters.retain(|_, w| w.strong_count() > 0);
            if let Some(shared) = posters.get(path).and_then(Weak::upgrade) {
                *lock(&shared.provider) = provider;
                {
                    // New settings (a fixed token) are tried at once; a
                    // wait the forge asked for still holds.
                    let mut inner = lock(&shared.inner);
                    inner.failures = 0;
                    inner.paused_until = inner.book.wait_until().map(instant_of);
                }
                shared.notify.notify_one();
                return Reporter { shared };
            }
        }
        let notify = Arc::new(Notify::new());
        let shared = Arc::new(Shared {
            path: outbox.clone(),
            provider: Mutex::new(provider),
            inner: Mutex::new(Inner {
                book: Book::memory(),
                opened: outbox.is_none(),
                paused_until: None,
                failures: 0,
            }),
            notify: Arc::clone(&notify),
            depth: watch::Sender::new(0),
            policy,
            metrics: Mutex::new(None),
        });
        if let Some(path) = outbox {
            posters.insert(path, Arc::downgrade(&shared));
        }
        tokio::spawn(post_loop(Arc::downgrade(&shared), notify));
        Reporter { shared }
    }

    /// Keep `hoist_status_outbox` up to date in `metrics`.
    pub fn with_metrics(self, metrics: Arc<Metrics>) -> Reporter {
        let depth = *self.shared.depth.borrow();
        metrics.status_outbox(depth);
        *lock(&self.shared.metrics) = Some(metrics);
        self
    }

    /// Opens the outbox (if not yet) and posts what an earlier hoist left
    /// in it. Only in a process holding the `state_dir` lock.
    pub async fn open_outbox(&self) {
        let shared = Arc::clone(&self.shared);
        let _ = tokio::task::spawn_blocking(move || {
            let mut inner = lock(&shared.inner);
            shared.open(&mut inner);
            shared.publish(&inner);
        })
        .await;
        self.shared.notify.notify_one();
    }

    /// Queue `status` for posting: it is in the outbox when this returns.
    /// Never fails: a status that cannot be written is posted from memory
    /// (and logged).
    pub fn report(&self, status: Status) {
        let status = Status {
            description: truncate_description(&status.description),
            ..status
        };
        let mut inner = lock(&self.shared.inner);
        self.shared.open(&mut inner);
        match inner.book.queue(status.clone(), SystemTime::now()) {
            Queued::New => tracing::debug!(
                sha = %status.sha,
                context = %status.context,
                state = %status.state,
                "commit status queued"
            ),
            Queued::Unchanged => tracing::debug!(
                sha = %status.sha,
                context = %status.context,
                state = %status.state,
                "status unchanged since last posted; not posting again"
            ),
        }
        self.shared.publish(&inner);
        drop(inner);
        self.shared.notify.notify_one();
    }

    /// How many statuses wait to be posted.
    pub fn depth(&self) -> usize {
        *self.shared.depth.borrow()
    }

    /// Wait until the outbox is empty, at most `timeout`; what is left
    /// stays in the outbox for the next hoist.
    pub async fn flush(&self, timeout: Duration) {
        let mut rx = self.shared.depth.subscribe();
        if tokio::time::timeout(timeout, rx.wait_for(|n| *n == 0))
            .await
            .is_err()
        {
            let left = *self.shared.depth.borrow();
            match &self.shared.path {
                Some(p) => tracing::warn!(
                    unposted = left,
                    "{left} commit status(es) not posted after {}; they wait in {} for the next hoist that runs with this state_dir",
                    humantime::format_duration(timeout),
                    p.display()
                ),
                None => tracing::warn!(
                    unposted = left,
                    "commit statuses still unposted after {}",
                    humantime::format_duration(timeout)
                ),
            }
        }
    }
}

impl Shared {
    /// Opens the journal, once.
    fn open(&self, inner: &mut Inner) {
        if inner.opened {
            return;
        }
        inner.opened = true;
        if let Some(path) = &self.path {
            inner.book = Book::open(path);
            inner.paused_until = inner.book.wait_until().map(instant_of);
            let n = inner.book.depth();
            if n > 0 {
                tracing::info!(
                    "{n} commit status(es) queued before this start wait in {}",
                    path.display()
                );
            }
        }
    }

    /// Publishes the depth (watchers, metrics).
    fn publish(&self, inner: &Inner) {
        let n = inner.book.depth();
        self.depth.send_replace(n);
        if let Some(m) = lock(&self.metrics).as_ref() {
            m.status_outbox(n);
        }
    }

    fn provider(&self) -> Arc<dyn Provider> {
        Arc::clone(&lock(&self.provider))
    }

    /// What the poster does next.
    fn next_step(&self) -> Step {
        let mut inner = lock(&self.inner);
        if !inner.opened {
            return Step::Idle(None);
        }
        if let Some(t) = inner.paused_until {
            if t > Instant::now() {
                return Step::Idle(Some(t));
            }
            inner.paused_until = None;
        }
        loop {
            let Some((seq, status)) = inner.book.take_next() else {
                return Step::Idle(None);
            };
            // Superseded while an older one was being posted, by something
            // the forge now shows already.
            if inner.book.already_posted(&status) {
                inner.book.posted(seq, &status);
                self.publish(&inner);
                continue;
            }
            let sync = inner.book.sync_handle();
            return Step::Post { seq, status, sync };
        }
    }

    /// Records how posting `status` (entry `seq`) went. Returns whether
    /// the journal wants rewriting.
    fn after(&self, seq: u64, status: &Status, result: Result<(), PostError>) -> bool {
        let provider = lock(&self.provider).name();
        let mut inner = lock(&self.inner);
        match result {
            Ok(()) => {
                tracing::info!(
                    provider,
                    sha = %status.sha,
                    context = %status.context,
                    state = %status.state,
                    "commit status posted"
                );
                inner.book.posted(seq, status);
                inner.failures = 0;
                inner.paused_until = None;
                inner.book.set_wait(None);
            }
            Err(PostError::Transient {
                message,
                retry_after,
            }) => {
                inner.book.not_posted(seq);
                inner.failures += 1;
                let delay = match retry_after {
                    Some(d) => {
                        inner.book.set_wait(SystemTime::now().checked_add(d));
                        d
                    }
                    None => self.policy.backoff(inner.failures),
                };
                inner.paused_until = Some(Instant::now() + delay);
                tracing::warn!(
                    provider,
                    sha = %status.sha,
                    context = %status.context,
                    state = %status.state,
                    waiting = inner.book.depth(),
                    "commit status not posted; {} wait in {}, next attempt in {}: {message}",
                    inner.book.depth(),
                    self.place(),
                    humantime::format_duration(Duration::from_secs(delay.as_secs().max(1)))
                );
            }
            Err(PostError::Config { message }) => {
                inner.book.not_posted(seq);
                inner.failures += 1;
                let delay = self.policy.backoff(inner.failures);
                inner.paused_until = Some(Instant::now() + delay);
                tracing::warn!(
                    provider,
                    sha = %status.sha,
                    context = %status.context,
                    waiting = inner.book.depth(),
                    "the forge refuses hoist's commit statuses ({message}); {} wait in {} until the status settings are fixed (a reload takes them), next attempt in {}",
                    inner.book.depth(),
                    self.place(),
                    humantime::format_duration(Duration::from_secs(delay.as_secs().max(1)))
                );
            }
            Err(PostError::Permanent { message }) => {
                inner.book.drop_entry(seq);
                tracing::warn!(
                    provider,
                    sha = %status.sha,
                    context = %status.context,
                    state = %status.state,
                    "dropping a commit status the forge refuses for what it says: {message}"
                );
            }
        }
        self.publish(&inner);
        inner.book.wants_rewrite()
    }

    fn place(&self) -> String {
        match &self.path {
            Some(p) => p.display().to_string(),
            None => "memory".into(),
        }
    }
}

enum Step {
    Post {
        seq: u64,
        status: Status,
        /// The journal, to fsync before posting.
        sync: Option<std::fs::File>,
    },
    /// Nothing to do until then (None: until woken).
    Idle(Option<Instant>),
}

/// The poster: one per outbox, as long as a reporter of it lives.
async fn post_loop(shared: Weak<Shared>, notify: Arc<Notify>) {
    loop {
        let Some(s) = shared.upgrade() else {
            return;
        };
        match s.next_step() {
            Step::Post { seq, status, sync } => {
                if let Some(f) = sync {
                    // Before the forge sees it, the journal is on disk.
                    let _ = tokio::task::spawn_blocking(move || f.sync_data()).await;
                }
                let result = s.provider().post(&status).await;
                if s.after(seq, &status, result) {
                    let s = Arc::clone(&s);
                    let _ = tokio::task::spawn_blocking(move || {
                        let mut inner = lock(&s.inner);
                        if let Err(e) = inner.book.rewrite() {
                            tracing::warn!("cannot rewrite {}: {e}", s.place());
                        }
                    })
                    .await;
                }
            }
            Step::Idle(until) => {
                drop(s);
                match until {
                    Some(t) => {
                        tokio::select! {
                            () = notify.notified() => {}
                            () = tokio::time::sleep_until(t) => {}
                        }
                    }
                    None => notify.notified().await,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fake_forge::{FakeForge, Flavor, Scripted};
    use crate::report::outbox::{self, FILE_NAME};
    use crate::report::{ProviderKind, ProviderSettings, State, build_provider};

    const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

    fn status(state: State, description: &str) -> Status {
        Status {
            sha: SHA.into(),
            state,
            context: "hoist/production/web-1".into(),
            description: description.into(),
        }
    }

    fn github(fake: &FakeForge) -> Arc<dyn Provider> {
        build_provider(&fake.settings(ProviderKind::Github)).expect("github provider")
    }

    fn fast() -> RetryPolicy {
        RetryPolicy {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(100),
        }
    }

    #[tokio::test]
    async fn retry_after_is_honoured() {
        let fake = FakeForge::start(Flavor::Github).await;
        fake.script([Scripted::status(429).header("Retry-After", "1")]);
        let reporter = Reporter::spawn(github(&fake), None);
        reporter.report(status(State::Success, "web live"));
        reporter.flush(Duration::from_secs(10)).await;

        let attempts = fake.attempts();
        let accepted = fake.accepted();
        assert_eq!(attempts.len(), 2, "one 429, then the post");
        assert_eq!(accepted.len(), 1);
        let waited = accepted[0].at - attempts[0];
        assert!(
            waited >= Duration::from_millis(950),
            "retried after only {waited:?}"
        );
    }

    #[tokio::test]
    async fn server_errors_are_retried_with_backoff() {
        let fake = FakeForge::start(Flavor::Github).await;
        fake.script([
            Scripted::status(500),
            Scripted::status(502),
            Scripted::status(503),
        ]);
        let reporter = Reporter::spawn_with(github(&fake), None, fast());
        reporter.report(status(State::Failure, "web failed its health gate"));
        reporter.flush(Duration::from_secs(10)).await;
        assert_eq!(fake.attempts().len(), 4);
        let accepted = fake.accepted();
        assert_eq!(accepted.len(), 1);
        assert_eq!(accepted[0].state, "failure");
    }

    #[tokio::test]
    async fn a_forge_that_stays_down_never_makes_hoist_give_up() {
        let fake = FakeForge::start(Flavor::Github).await;
        fake.script((0..40).map(|_| Scripted::status(503)));
        let policy = RetryPolicy {
            initial: Duration::from_millis(5),
            max: Duration::from_millis(20),
        };
        let reporter = Reporter::spawn_with(github(&fake), None, policy);
        reporter.report(status(State::Success, "web live"));
        reporter.flush(Duration::from_secs(20)).await;
        assert_eq!(fake.attempts().len(), 41, "40 refusals, then the post");
        assert_eq!(fake.accepted().len(), 1);
        assert_eq!(reporter.depth(), 0);
    }

    #[tokio::test]
    async fn a_refused_token_holds_the_statuses_until_a_reload_fixes_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(FILE_NAME);
        let fake = FakeForge::start(Flavor::Github).await;
        let wrong = build_provider(&ProviderSettings {
            token: Some("wrong-token".into()),
            ..fake.settings(ProviderKind::Github)
        })
        .expect("provider");
        let reporter = Reporter::spawn_with(wrong, Some(path.clone()), fast());
        reporter.report(status(State::Success, "web live"));
        reporter.flush(Duration::from_millis(300)).await;
        assert!(!fake.attempts().is_empty());
        assert!(fake.accepted().is_empty());
        assert_eq!(reporter.depth(), 1, "the status waits");
        assert_eq!(outbox::peek(dir.path()).expect("peek").waiting, 1);

        // A reload builds a reporter with the fixed token: the same poster
        // posts what waits, at once.
        let fixed = Reporter::spawn_with(github(&fake), Some(path), fast());
        fixed.flush(Duration::from_secs(5)).await;
        assert_eq!(fake.accepted().len(), 1);
        assert_eq!(reporter.depth(), 0);
        assert_eq!(outbox::peek(dir.path()).expect("peek").waiting, 0);
    }

    #[tokio::test]
    async fn a_status_the_forge_refuses_for_what_it_says_is_dropped() {
        let fake = FakeForge::start(Flavor::Github).await;
        fake.script([Scripted::status(422).body(
            r#"{"message":"This SHA and context has reached the maximum number of statuses."}"#,
        )]);
        let reporter = Reporter::spawn(github(&fake), None);
        reporter.report(status(State::Pending, "deploying web"));
        let started = std::time::Instant::now();
        reporter.flush(Duration::from_secs(10)).await;
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(fake.attempts().len(), 1, "a 422 is not retried");
        assert!(fake.accepted().is_empty());
        assert_eq!(reporter.depth(), 0);
    }

    #[tokio::test]
    async fn a_long_retry_after_is_honoured_and_kept_across_a_restart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(FILE_NAME);
        let fake = FakeForge::start(Flavor::Github).await;
        // GitHub's secondary rate limit: 403 and a wait of fifteen minutes.
        fake.script([Scripted::status(403)
            .header("Retry-After", "900")
            .body(r#"{"message":"You have exceeded a secondary rate limit."}"#)]);
        let reporter = Reporter::spawn(github(&fake), Some(path.clone()));
        reporter.open_outbox().await;
        reporter.report(status(State::Success, "web live"));
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(fake.attempts().len(), 1, "no second attempt before 900s");
        assert_eq!(reporter.depth(), 1, "not given up");
        let view = outbox::peek(dir.path()).expect("peek");
        assert_eq!(view.waiting, 1);
        let left = view
            .wait_until
            .expect("the wait is in the outbox")
            .duration_since(SystemTime::now())
            .expect("in the future");
        assert!(left > Duration::from_secs(890), "{left:?}");

        // A restart (the old poster gone) honours the same wait.
        drop(reporter);
        tokio::task::yield_now().await;
        let restarted = Reporter::spawn(github(&fake), Some(path));
        restarted.open_outbox().await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(fake.attempts().len(), 1, "the restart waits too");
        assert_eq!(restarted.depth(), 1);
    }

    #[tokio::test]
    async fn a_rate_limit_reset_is_honoured_across_a_restart_then_the_status_goes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(FILE_NAME);
        let fake = FakeForge::start(Flavor::Github).await;
        // GitHub's primary limit: remaining 0 and the reset, in Unix
        // seconds on the forge's clock, which runs an hour ahead of this
        // machine's: only the difference to its `Date` counts.
        fake.skew(3600);
        let reset = fake
            .now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs()
            + 3;
        fake.script([Scripted::status(403)
            .header("x-ratelimit-remaining", "0")
            .header("x-ratelimit-reset", &reset.to_string())]);
        let reporter = Reporter::spawn(github(&fake), Some(path.clone()));
        reporter.open_outbox().await;
        reporter.report(status(State::Success, "web live"));
        tokio::time::sleep(Duration::from_millis(300)).await;
        let refused_at = fake.attempts()[0];
        drop(reporter);
        tokio::task::yield_now().await;
        let restarted = Reporter::spawn(github(&fake), Some(path));
        restarted.open_outbox().await;
        restarted.flush(Duration::from_secs(10)).await;
        let accepted = fake.accepted();
        assert_eq!(accepted.len(), 1);
        let waited = accepted[0].at - refused_at;
        assert!(
            waited >= Duration::from_millis(1900),
            "posted {waited:?} after the refusal"
        );
        assert_eq!(fake.attempts().len(), 2, "no attempt in between");
    }

    #[tokio::test]
    async fn a_rate_limit_that_lasts_is_waited_out_retry_after_by_retry_after() {
        let fake = FakeForge::start(Flavor::Github).await;
        fake.limit_posts(Duration::from_millis(2500), 1);
        let reporter = Reporter::spawn(github(&fake), None);
        let started = std::time::Instant::now();
        reporter.report(status(State::Success, "web live"));
        reporter.flush(Duration::from_secs(20)).await;
        let accepted = fake.accepted();
        assert_eq!(accepted.len(), 1);
        assert!(started.elapsed() >= Duration::from_millis(2500));
        let attempts = fake.attempts();
        assert_eq!(attempts.len(), 4, "refused at 0, 1 and 2 s, posted at 3 s");
        for pair in attempts.windows(2) {
            assert!(
                pair[1] - pair[0] >= Duration::from_millis(950),
                "{attempts:?}"
            );
        }
    }

    #[tokio::test]
    async fn statuses_left_by_a_command_are_posted_by_the_next_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(FILE_NAME);
        let fake = FakeForge::start(Flavor::Github).await;
        fake.script((0..3).map(|_| Scripted::status(503)));
        // A short-lived command: queues, tries for a while, exits.
        let command = Reporter::spawn(github(&fake), Some(path.clone()));
        command.report(status(
            State::Failure,
            "web held at 1.2.0 by a local rollback",
        ));
        command.flush(Duration::from_millis(100)).await;
        assert_eq!(command.depth(), 1);
        drop(command);
        tokio::task::yield_now().await;
        // The next daemon posts it without being told anything.
        let daemon = Reporter::spawn(github(&fake), Some(path));
        daemon.open_outbox().await;
        daemon.flush(Duration::from_secs(20)).await;
        let accepted = fake.accepted();
        assert_eq!(accepted.len(), 1);
        assert_eq!(
            accepted[0].description,
            "web held at 1.2.0 by a local rollback"
        );
    }

    #[tokio::test]
    async fn the_same_status_is_posted_once_even_across_restarts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(FILE_NAME);
        let fake = FakeForge::start(Flavor::Github).await;

        let reporter = Reporter::spawn(github(&fake), Some(path.clone()));
        reporter.report(status(State::Success, "web live"));
        reporter.flush(Duration::from_secs(5)).await;
        reporter.report(status(State::Success, "web live"));
        reporter.flush(Duration::from_secs(5)).await;
        assert_eq!(fake.accepted().len(), 1);
        drop(reporter);
        tokio::task::yield_now().await;

        let restarted = Reporter::spawn(github(&fake), Some(path.clone()));
        restarted.report(status(State::Success, "web live"));
        restarted.flush(Duration::from_secs(5)).await;
        assert_eq!(fake.accepted().len(), 1, "not posted again after restart");

        restarted.report(status(State::Success, "web live; api unchanged"));
        restarted.flush(Duration::from_secs(5)).await;
        assert_eq!(fake.accepted().len(), 2, "a new description is news");

        // Going back to an earlier state is posted: only the last counts.
        restarted.report(status(State::Success, "web live"));
        restarted.flush(Duration::from_secs(5)).await;
        assert_eq!(fake.accepted().len(), 3);
    }

    #[tokio::test]
    async fn a_pending_is_not_posted_over_a_pending_even_across_restarts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(FILE_NAME);
        let fake = FakeForge::start(Flavor::Github).await;
        let reporter = Reporter::spawn(github(&fake), Some(path.clone()));
        reporter.report(status(
            State::Pending,
            "web 1.4.0 waits for wave 1 (web-1), 4m left",
        ));
        reporter.flush(Duration::from_secs(5)).await;
        reporter.report(status(
            State::Pending,
            "web 1.4.0 waits for wave 1 (web-1), 3m left",
        ));
        reporter.flush(Duration::from_secs(5)).await;
        assert_eq!(fake.accepted().len(), 1);
        drop(reporter);
        tokio::task::yield_now().await;

        let restarted = Reporter::spawn(github(&fake), Some(path));
        restarted.report(status(
            State::Pending,
            "web 1.4.0 waits for wave 1 (web-1), 1m left",
        ));
        restarted.flush(Duration::from_secs(5)).await;
        assert_eq!(
            fake.accepted().len(),
            1,
            "still one pending after a restart"
        );

        // After another state, a pending is news again (a halt that ends).
        restarted.report(status(
            State::Failure,
            "[hoist:halt web 1.4.0] web 1.4.0 halted: web-1 failed",
        ));
        restarted.flush(Duration::from_secs(5)).await;
        restarted.report(status(State::Pending, "deploying web"));
        restarted.flush(Duration::from_secs(5)).await;
        let states: Vec<String> = fake.accepted().into_iter().map(|a| a.state).collect();
        assert_eq!(states, ["pending", "failure", "pending"]);
    }

    #[tokio::test]
    async fn a_newer_status_supersedes_one_still_waiting() {
        let fake = FakeForge::start(Flavor::Github).await;
        fake.script([Scripted::status(503)]);
        let policy = RetryPolicy {
            initial: Duration::from_millis(300),
            max: Duration::from_millis(300),
        };
        let reporter = Reporter::spawn_with(github(&fake), None, policy);
        reporter.report(status(State::Pending, "applying"));
        // Let the pending status fail once and wait for its retry.
        tokio::time::sleep(Duration::from_millis(100)).await;
        reporter.report(status(State::Success, "web live"));
        reporter.flush(Duration::from_secs(5)).await;

        let accepted = fake.accepted();
        assert_eq!(accepted.len(), 1, "{accepted:?}");
        assert_eq!(accepted[0].state, "success");
        assert_eq!(fake.attempts().len(), 2);
    }

    #[tokio::test]
    async fn a_rate_limit_holds_every_status_not_only_the_one_refused() {
        let fake = FakeForge::start(Flavor::Github).await;
        fake.script([Scripted::status(429).header("Retry-After", "1")]);
        let reporter = Reporter::spawn(github(&fake), None);
        for host in ["web-1", "web-2", "web-3"] {
            reporter.report(Status {
                context: format!("hoist/production/{host}"),
                ..status(State::Success, "web live")
            });
        }
        reporter.flush(Duration::from_secs(10)).await;
        let attempts = fake.attempts();
        assert_eq!(attempts.len(), 4, "one refusal, then three posts");
        assert!(
            attempts[1] - attempts[0] >= Duration::from_millis(950),
            "the others waited too"
        );
        let order: Vec<String> = fake.accepted().into_iter().map(|a| a.context).collect();
        assert_eq!(
            order,
            [
                "hoist/production/web-1",
                "hoist/production/web-2",
                "hoist/production/web-3"
            ],
            "oldest first"
        );
    }

    #[tokio::test]
    async fn descriptions_are_truncated_before_posting() {
        let fake = FakeForge::start(Flavor::Github).await;
        let reporter = Reporter::spawn(github(&fake), None);
        reporter.report(status(State::Error, &"x".repeat(300)));
        reporter.flush(Duration::from_secs(5)).await;
        let accepted = fake.accepted();
        assert_eq!(accepted.len(), 1, "the fake rejects descriptions over 140");
        assert_eq!(accepted[0].description.chars().count(), 140);
    }

    #[tokio::test]
    async fn flush_returns_at_its_timeout() {
        let fake = FakeForge::start(Flavor::Github).await;
        fake.script([Scripted::status(429).header("Retry-After", "30")]);
        let reporter = Reporter::spawn(github(&fake), None);
        reporter.report(status(State::Success, "web live"));
        let started = std::time::Instant::now();
        reporter.flush(Duration::from_millis(300)).await;
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(300) && took < Duration::from_secs(3));
    }

    #[tokio::test]
    async fn a_corrupt_outbox_is_not_fatal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(FILE_NAME);
        std::fs::write(&path, "{not json\n\u{0}\u{1}\n").expect("write");
        let fake = FakeForge::start(Flavor::Github).await;
        let reporter = Reporter::spawn(github(&fake), Some(path.clone()));
        reporter.report(status(State::Success, "web live"));
        reporter.flush(Duration::from_secs(5)).await;
        assert_eq!(fake.accepted().len(), 1);
        assert_eq!(outbox::peek(dir.path()).expect("peek").waiting, 0);
    }

    #[tokio::test]
    async fn the_depth_is_a_metric() {
        let fake = FakeForge::start(Flavor::Github).await;
        fake.script([Scripted::status(429).header("Retry-After", "30")]);
        let metrics = Arc::new(Metrics::new());
        let reporter = Reporter::spawn(github(&fake), None).with_metrics(metrics.clone());
        reporter.report(status(State::Success, "web live"));
        reporter.report(Status {
            sha: "89abcdef0123456789abcdef0123456789abcdef".into(),
            ..status(State::Pending, "deploying web")
        });
        let text = metrics.encode();
        assert!(text.contains("hoist_status_outbox 2"), "{text}");
    }
}
