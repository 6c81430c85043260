//! The background poster: statuses go out without ever holding up a deploy.
//!
//! The pipeline calls [`Reporter::report`], which only queues and returns. A
//! single tokio task owns the provider and the queue, and posts one status
//! at a time. Keeping one owner makes the rules simple to hold:
//!
//! - **Latest wins.** The queue holds at most one status per
//!   `(sha, context)`; a newer one replaces an older one still waiting (it
//!   keeps the older one's backoff, so a rate limit is still respected).
//! - **Retry, then give up.** Transient failures are retried with
//!   exponential backoff (1 s doubling to 60 s, with a little jitter so a
//!   fleet does not retry in step), or after the forge's `Retry-After`;
//!   after about ten minutes the status is dropped with a warning. A
//!   permanent failure (bad token, unknown repository) is dropped at once.
//! - **Never twice.** The last status posted for each `(sha, context)` is
//!   remembered, and persisted to `dedupe_path` (temp file, fsync, rename) so
//!   a restart does not post it again. The file keeps the last
//!   [`DEDUPE_CAPACITY`] entries.
//! - **One `pending` in a row.** A `pending` is not posted over a `pending`
//!   already posted for the same `(sha, context)`, whatever its text: a
//!   server waiting for its rollout wave ("4m left") or retrying a fault
//!   would otherwise write again at every poll (SPEC §8 allows two writes
//!   per host and commit), and GitLab refuses a repeated state anyway.
//!
//! [`Reporter::flush`] lets a short-lived `hoist once` wait for the queue to
//! drain before exiting; it counts every status from `report` until it is
//! posted, deduplicated, superseded or given up.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::{PostError, Provider, State, Status, truncate_description};

/// How many `(sha, context)` pairs the dedupe file remembers.
pub const DEDUPE_CAPACITY: usize = 500;

/// Backoff and give-up times; tests shorten them.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RetryPolicy {
    pub(crate) initial: Duration,
    pub(crate) max: Duration,
    pub(crate) give_up_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(60),
            give_up_after: Duration::from_secs(600),
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

/// Hands statuses to the background poster. Cheap to clone; every clone
/// feeds the same task.
#[derive(Clone, Debug)]
pub struct Reporter {
    tx: mpsc::UnboundedSender<Status>,
    /// Statuses reported and not yet finished with (posted, deduplicated,
    /// superseded or given up).
    outstanding: Arc<watch::Sender<usize>>,
}

impl Reporter {
    /// Start the poster task. Must be called inside a tokio runtime.
    /// `dedupe_path` is where "last posted" survives restarts (`None`: only
    /// in memory).
    pub fn spawn(provider: Arc<dyn Provider>, dedupe_path: Option<PathBuf>) -> Reporter {
        Reporter::spawn_with(provider, dedupe_path, RetryPolicy::default())
    }

    pub(crate) fn spawn_with(
        provider: Arc<dyn Provider>,
        dedupe_path: Option<PathBuf>,
        policy: RetryPolicy,
    ) -> Reporter {
        let (tx, rx) = mpsc::unbounded_channel();
        let outstanding = Arc::new(watch::Sender::new(0usize));
        let worker = Worker {
            provider,
            policy,
            rx,
            outstanding: Arc::clone(&outstanding),
            queue: HashMap::new(),
            next_seq: 0,
            posted: Posted::new(dedupe_path),
        };
        tokio::spawn(worker.run());
        Reporter { tx, outstanding }
    }

    /// Queue `status` for posting. Never blocks, never fails: a status that
    /// cannot be posted is logged, not returned.
    pub fn report(&self, status: Status) {
        let status = Status {
            description: truncate_description(&status.description),
            ..status
        };
        self.outstanding.send_modify(|n| *n += 1);
        if let Err(e) = self.tx.send(status) {
            self.outstanding.send_modify(|n| *n = n.saturating_sub(1));
            tracing::warn!(
                sha = %e.0.sha,
                context = %e.0.context,
                "status reporter has stopped; status not posted"
            );
        }
    }

    /// Wait until every queued status is posted or given up, at most
    /// `timeout`.
    pub async fn flush(&self, timeout: Duration) {
        let mut rx = self.outstanding.subscribe();
        if tokio::time::timeout(timeout, rx.wait_for(|n| *n == 0))
            .await
            .is_err()
        {
            let left = *self.outstanding.borrow();
            tracing::warn!(
                unposted = left,
                "commit statuses still unposted after {}",
                humantime::format_duration(timeout)
            );
        }
    }
}

type Key = (String, String);

/// A status waiting for its next attempt.
struct Entry {
    status: Status,
    /// Order of arrival, so due statuses go out first-come first-served.
    seq: u64,
    /// When this status arrived: the give-up clock starts here.
    since: Instant,
    failures: u32,
    next_at: Instant,
}

struct Worker {
    provider: Arc<dyn Provider>,
    policy: RetryPolicy,
    rx: mpsc::UnboundedReceiver<Status>,
    outstanding: Arc<watch::Sender<usize>>,
    queue: HashMap<Key, Entry>,
    next_seq: u64,
    posted: Posted,
}

impl Worker {
    async fn run(mut self) {
        self.posted.load().await;
        let mut closed = false;
        loop {
            if closed && self.queue.is_empty() {
                return;
            }
            let next_at = self.queue.values().map(|e| e.next_at).min();
            tokio::select! {
                // Take in everything already sent before posting, so a
                // newer status supersedes an older one whenever it can.
                biased;
                msg = self.rx.recv(), if !closed => match msg {
                    Some(status) => self.enqueue(status),
                    None => closed = true,
                },
                () = sleep_until(next_at), if next_at.is_some() => self.attempt_next().await,
            }
        }
    }

    fn finished(&self, count: usize) {
        self.outstanding
            .send_modify(|n| *n = n.saturating_sub(count));
    }

    fn enqueue(&mut self, status: Status) {
        let key = (status.sha.clone(), status.context.clone());
        let superseded = self.queue.remove(&key);
        if superseded.is_some() {
            self.finished(1);
        }
        if self.posted.is_last(&status) || self.posted.pending_again(&status) {
            tracing::debug!(
                sha = %status.sha,
                context = %status.context,
                state = %status.state,
                "status unchanged since last posted; not posting again"
            );
            self.finished(1);
            return;
        }
        let now = Instant::now();
        let (failures, next_at) = match superseded {
            // Keep the older status's backoff: the forge's reason to wait
            // (rate limit, outage) has not gone away.
            Some(old) => (old.failures, old.next_at.max(now)),
            None => (0, now),
        };
        self.next_seq += 1;
        self.queue.insert(
            key,
            Entry {
                status,
                seq: self.next_seq,
                since: now,
                failures,
                next_at,
            },
        );
    }

    async fn attempt_next(&mut self) {
        let now = Instant::now();
        let Some(key) = self
            .queue
            .iter()
            .filter(|(_, e)| e.next_at <= now)
            .min_by_key(|(_, e)| (e.next_at, e.seq))
            .map(|(k, _)| k.clone())
        else {
            return;
        };
        let Some(status) = self.queue.get(&key).map(|e| e.status.clone()) else {
            return;
        };
        let provider = self.provider.name();
        match self.provider.post(&status).await {
            Ok(()) => {
                tracing::info!(
                    provider,
                    sha = %status.sha,
                    context = %status.context,
                    state = %status.state,
                    "commit status posted"
                );
                self.queue.remove(&key);
                self.posted.record(&status).await;
                self.finished(1);
            }
            Err(PostError::Permanent { message }) => {
                tracing::warn!(
                    provider,
                    sha = %status.sha,
                    context = %status.context,
                    state = %status.state,
                    "giving up on commit status: {message}"
                );
                self.queue.remove(&key);
                self.finished(1);
            }
            Err(PostError::Transient {
                message,
                retry_after,
            }) => {
                let Some(entry) = self.queue.get_mut(&key) else {
                    return;
                };
                entry.failures += 1;
                let delay = retry_after.unwrap_or_else(|| self.policy.backoff(entry.failures));
                let now = Instant::now();
                if now + delay > entry.since + self.policy.give_up_after {
                    tracing::warn!(
                        provider,
                        sha = %status.sha,
                        context = %status.context,
                        state = %status.state,
                        attempts = entry.failures,
                        "giving up on commit status after {}: {message}",
                        humantime::format_duration(now - entry.since)
                    );
                    self.queue.remove(&key);
                    self.finished(1);
                } else {
                    tracing::warn!(
                        provider,
                        sha = %status.sha,
                        context = %status.context,
                        state = %status.state,
                        attempts = entry.failures,
                        "commit status not posted, retrying in {:.1}s: {message}",
                        delay.as_secs_f64()
                    );
                    entry.next_at = now + delay;
                }
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// One remembered "last posted" status.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct PostedRecord {
    sha: String,
    context: String,
    state: State,
    description: String,
}

/// The dedupe file's shape.
#[derive(serde::Serialize, serde::Deserialize)]
struct PostedFile {
    version: u32,
    /// Oldest first.
    posted: Vec<PostedRecord>,
}

/// The last status posted per `(sha, context)`, oldest first, bounded.
struct Posted {
    path: Option<PathBuf>,
    records: VecDeque<PostedRecord>,
}

impl Posted {
    fn new(path: Option<PathBuf>) -> Posted {
        Posted {
            path,
            records: VecDeque::new(),
        }
    }

    async fn load(&mut self) {
        let Some(path) = self.path.clone() else {
            return;
        };
        let read = tokio::task::spawn_blocking(move || std::fs::read(&path)).await;
        let bytes = match read {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::NotFound => return,
            Ok(Err(e)) => {
                self.warn_unreadable(&e.to_string());
                return;
            }
            Err(e) => {
                self.warn_unreadable(&e.to_string());
                return;
            }
        };
        match serde_json::from_slice::<PostedFile>(&bytes) {
            Ok(file) => {
                self.records = file.posted.into();
                while self.records.len() > DEDUPE_CAPACITY {
                    self.records.pop_front();
                }
            }
            Err(e) => self.warn_unreadable(&e.to_string()),
        }
    }

    fn warn_unreadable(&self, reason: &str) {
        if let Some(path) = &self.path {
            tracing::warn!(
                "cannot read {} ({reason}); statuses posted before this start may be posted again",
                path.display()
            );
        }
    }

    fn is_last(&self, s: &Status) -> bool {
        self.records.iter().rev().any(|r| {
            r.sha == s.sha
                && r.context == s.context
                && r.state == s.state
                && r.description == s.description
        })
    }

    /// Whether `s` is a `pending` and the last status posted for its
    /// `(sha, context)` is one too.
    fn pending_again(&self, s: &Status) -> bool {
        s.state == State::Pending
            && self
                .records
                .iter()
                .rev()
                .find(|r| r.sha == s.sha && r.context == s.context)
                .is_some_and(|r| r.state == State::Pending)
    }

    async fn record(&mut self, s: &Status) {
        self.records
            .retain(|r| !(r.sha == s.sha && r.context == s.context));
        self.records.push_back(PostedRecord {
            sha: s.sha.clone(),
            context: s.context.clone(),
            state: s.state,
            description: s.description.clone(),
        });
        while self.records.len() > DEDUPE_CAPACITY {
            self.records.pop_front();
        }
        let Some(path) = self.path.clone() else {
            return;
        };
        let file = PostedFile {
            version: 1,
            posted: self.records.iter().cloned().collect(),
        };
        let bytes = match serde_json::to_vec(&file) {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!("cannot encode the status dedupe file: {e}");
                return;
            }
        };
        let target = path.clone();
        let written =
            tokio::task::spawn_blocking(move || crate::fsutil::write_atomic(&target, &bytes)).await;
        let err = match written {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        tracing::warn!(
            "cannot write {} ({err}); after a restart this status may be posted again",
            path.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fake_forge::{FakeForge, Flavor, Scripted};
    use crate::report::{ProviderKind, ProviderSettings, build_provider};

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
            give_up_after: Duration::from_secs(5),
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
    async fn permanent_errors_are_given_up_at_once() {
        let fake = FakeForge::start(Flavor::Github).await;
        let provider = build_provider(&ProviderSettings {
            token: Some("wrong-token".into()),
            ..fake.settings(ProviderKind::Github)
        })
        .expect("provider");
        let reporter = Reporter::spawn(provider, None);
        reporter.report(status(State::Success, "web live"));
        let started = std::time::Instant::now();
        reporter.flush(Duration::from_secs(10)).await;
        assert!(started.elapsed() < Duration::from_secs(2));
        assert_eq!(fake.attempts().len(), 1, "a 401 is not retried");
        assert!(fake.accepted().is_empty());
    }

    #[tokio::test]
    async fn transient_errors_are_given_up_eventually() {
        let fake = FakeForge::start(Flavor::Github).await;
        fake.script((0..1000).map(|_| Scripted::status(503)));
        let policy = RetryPolicy {
            initial: Duration::from_millis(20),
            max: Duration::from_millis(50),
            give_up_after: Duration::from_millis(300),
        };
        let reporter = Reporter::spawn_with(github(&fake), None, policy);
        reporter.report(status(State::Success, "web live"));
        let started = std::time::Instant::now();
        reporter.flush(Duration::from_secs(10)).await;
        assert!(started.elapsed() < Duration::from_secs(2));
        assert!(fake.attempts().len() >= 3);
        assert!(fake.accepted().is_empty());
    }

    #[tokio::test]
    async fn the_same_status_is_posted_once_even_across_restarts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let dedupe = dir.path().join("posted.json");
        let fake = FakeForge::start(Flavor::Github).await;

        let reporter = Reporter::spawn(github(&fake), Some(dedupe.clone()));
        reporter.report(status(State::Success, "web live"));
        reporter.flush(Duration::from_secs(5)).await;
        reporter.report(status(State::Success, "web live"));
        reporter.flush(Duration::from_secs(5)).await;
        assert_eq!(fake.accepted().len(), 1);
        drop(reporter);

        let restarted = Reporter::spawn(github(&fake), Some(dedupe.clone()));
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
        let dedupe = dir.path().join("posted.json");
        let fake = FakeForge::start(Flavor::Github).await;
        let reporter = Reporter::spawn(github(&fake), Some(dedupe.clone()));
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

        let restarted = Reporter::spawn(github(&fake), Some(dedupe));
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
        restarted.report(status(State::Failure, "web 1.4.0 halted: web-1 failed"));
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
            give_up_after: Duration::from_secs(5),
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
    async fn the_dedupe_file_stays_bounded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("posted.json");
        let mut posted = Posted::new(Some(path.clone()));
        for i in 0..(DEDUPE_CAPACITY + 20) {
            let mut s = status(State::Success, "ok");
            s.context = format!("ctx-{i}");
            posted.record(&s).await;
        }
        let file: PostedFile =
            serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
        assert_eq!(file.posted.len(), DEDUPE_CAPACITY);
        assert_eq!(file.posted[0].context, "ctx-20", "oldest dropped first");

        let mut reloaded = Posted::new(Some(path));
        reloaded.load().await;
        let mut last = status(State::Success, "ok");
        last.context = format!("ctx-{}", DEDUPE_CAPACITY + 19);
        assert!(reloaded.is_last(&last));
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .expect("ls")
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "temp files left behind");
    }

    #[tokio::test]
    async fn a_corrupt_dedupe_file_is_not_fatal() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("posted.json");
        std::fs::write(&path, "{not json").expect("write");
        let fake = FakeForge::start(Flavor::Github).await;
        let reporter = Reporter::spawn(github(&fake), Some(path.clone()));
        reporter.report(status(State::Success, "web live"));
        reporter.flush(Duration::from_secs(5)).await;
        assert_eq!(fake.accepted().len(), 1);
        let file: PostedFile =
            serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("rewritten");
        assert_eq!(file.posted.len(), 1);
    }
}
