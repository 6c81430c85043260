//! The outbox: every commit status hoist means to post, kept in
//! `state_dir` until the forge has accepted it (SPEC §4: a status is never
//! dropped).
//!
//! Fleet rollouts coordinate only through commit statuses, so a status
//! lost to a rate limit, a forge outage or a restart is a rollout stuck.
//! The outbox is a journal, `<state_dir>/outbox.jsonl`, one JSON object a
//! line, appended with one `write(2)` on an `O_APPEND` file:
//!
//! - `queue`: a status to post (`seq`, the status, when it was queued);
//! - `posted`: the forge accepted it (the status itself, so the journal
//!   also remembers what was posted last per commit and context, and an
//!   unchanged status is not posted twice, across restarts too);
//! - `dropped`: it will never be posted (the forge refused the status
//!   itself, or more than [`PER_CONTEXT`] commits wait in its context);
//! - `wait`: the forge asked hoist to wait until then (`Retry-After`, a
//!   rate limit's reset), which a restarted hoist honours too.
//!
//! A `queue` line is in the kernel before [`Book::queue`] returns, so it
//! survives `kill -9` at once; the poster fsyncs the journal before each
//! post, so a power loss cannot lose a status the forge has seen the
//! outcome of. Replaying the journal gives the same book whatever the
//! order of crashes: lines are applied in order, the latest `queue` of a
//! (commit, context) replaces an earlier one, and a torn last line (a
//! crash mid-write) or a foreign line is skipped and counted. The journal
//! is rewritten whole (temporary file, fsync, rename) when it opens and
//! when it has grown well past what it holds.
//!
//! Only a process holding the `state_dir` lock opens the outbox. The daemon
//! holds it while it runs; a short-lived command (`hoist once`, a local
//! `hoist rollback` with no daemon running) holds it too, appends its
//! statuses, posts what it can before it exits, and leaves the rest for the
//! next hoist that runs with this `state_dir`. A process that does not hold
//! the lock (`hoist status`) only reads the journal ([`peek`]).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use super::{State, Status};

/// The journal's name in `state_dir`.
pub const FILE_NAME: &str = "outbox.jsonl";

/// The de-duplication file of hoist before the outbox, read once.
const OLD_POSTED_FILE: &str = "statuses-posted.json";

/// How many commits may wait per context: the latest status of each of the
/// last 50. A server that cannot post for that long has moved past them;
/// an older one dropped is a WARN.
pub const PER_CONTEXT: usize = 50;

/// How many (commit, context) pairs the journal remembers as posted, so an
/// unchanged status is not posted again.
pub const POSTED_MEMORY: usize = 500;

/// One line of the journal.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Line {
    Queue {
        seq: u64,
        sha: String,
        state: State,
        context: String,
        description: String,
        queued: String,
    },
    Posted {
        /// The entry the forge accepted; 0 when only remembered (a
        /// rewritten journal's memory of what was posted).
        #[serde(default)]
        seq: u64,
        sha: String,
        state: State,
        context: String,
        description: String,
    },
    Dropped {
        seq: u64,
    },
    Wait {
        until: String,
    },
}

fn queue_line(seq: u64, s: &Status, queued: SystemTime) -> Line {
    Line::Queue {
        seq,
        sha: s.sha.clone(),
        state: s.state,
        context: s.context.clone(),
        description: s.description.clone(),
        queued: rfc3339(queued),
    }
}

fn posted_line(seq: u64, s: &Status) -> Line {
    Line::Posted {
        seq,
        sha: s.sha.clone(),
        state: s.state,
        context: s.context.clone(),
        description: s.description.clone(),
    }
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

fn status_of(sha: String, state: State, context: String, description: String) -> Status {
    Status {
        sha,
        state,
        context,
        description,
    }
}

/// A status waiting for the forge.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Entry {
    pub(crate) seq: u64,
    pub(crate) status: Status,
    /// When it was queued (this machine's clock: only shown to people).
    pub(crate) queued: SystemTime,
    /// Being posted right now.
    pub(crate) in_flight: bool,
}

type Key = (String, String);

fn key_of(s: &Status) -> Key {
    (s.sha.clone(), s.context.clone())
}

/// What [`Book::queue`] did with a status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Queued {
    /// Written to the journal; it will be posted.
    New,
    /// The forge already shows it (or a `pending` already stands for the
    /// commit and context), or the same status waits already: nothing to do.
    Unchanged,
}

/// The outbox in memory, and its journal when it has one.
#[derive(Debug, Default)]
pub(crate) struct Book {
    path: Option<PathBuf>,
    /// The journal, opened for appending.
    file: Option<File>,
    entries: BTreeMap<u64, Entry>,
    keys: HashMap<Key, u64>,
    /// The last status posted per (commit, context), oldest first.
    posted: VecDeque<Status>,
    /// The forge asked to wait until then (wall clock).
    wait_until: Option<SystemTime>,
    next_seq: u64,
    /// Lines in the journal since it was last rewritten.
    lines: usize,
    /// Lines written but not yet fsynced.
    unsynced: bool,
    /// Lines of the journal that could not be read when it was opened.
    pub(crate) skipped: usize,
}

impl Book {
    /// An outbox that lives in memory only (tests, and a `state_dir` that
    /// refuses writes).
    pub(crate) fn memory() -> Book {
        Book {
            next_seq: 1,
            ..Book::default()
        }
    }

    /// Opens the journal at `path`: replays it (skipping lines it cannot
    /// read), drops what is beyond the bounds (a WARN each), rewrites it
    /// whole, and keeps it open for appending. A journal that cannot be
    /// read or written is said once; the outbox then lives in memory.
    pub(crate) fn open(path: &Path) -> Book {
        let mut book = Book::memory();
        match std::fs::read(path) {
            Ok(bytes) => book.replay(&bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                book.migrate(&path.with_file_name(OLD_POSTED_FILE));
            }
            Err(e) => {
                tracing::warn!(
                    "cannot read {} ({e}); commit statuses queued before this start are lost",
                    path.display()
                );
            }
        }
        if book.skipped > 0 {
            tracing::warn!(
                skipped = book.skipped,
                "{}: skipped {} line(s) that cannot be read (a crash mid-write leaves one)",
                path.display(),
                book.skipped
            );
        }
        for context in book.contexts() {
            book.bound(&context);
        }
        book.path = Some(path.to_path_buf());
        if let Err(e) = book.rewrite() {
            tracing::warn!(
                "cannot write {} ({e}); commit statuses are kept in memory only until it can be",
                path.display()
            );
            book.path = None;
        }
        book
    }

    /// Applies the journal's lines, in order.
    fn replay(&mut self, bytes: &[u8]) {
        for raw in bytes.split(|b| *b == b'\n') {
            if raw.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let Ok(line) = serde_json::from_slice::<Line>(raw) else {
                self.skipped += 1;
                continue;
            };
            self.apply(line);
        }
    }

    fn apply(&mut self, line: Line) {
        match line {
            Line::Queue {
                seq,
                sha,
                state,
                context,
                description,
                queued,
            } => {
                let status = status_of(sha, state, context, description);
                let queued = super::forge::parse_rfc3339(&queued).unwrap_or_else(SystemTime::now);
                self.insert(seq, status, queued);
            }
            Line::Posted {
                seq,
                sha,
                state,
                context,
                description,
            } => {
                let status = status_of(sha, state, context, description);
                if self.entries.get(&seq).is_some_and(|e| e.status == status) {
                    self.remove(seq);
                }
                self.remember(&status);
            }
            Line::Dropped { seq } => {
                self.remove(seq);
            }
            Line::Wait { until } => {
                self.wait_until = super::forge::parse_rfc3339(&until);
            }
        }
    }

    /// Statuses posted by a hoist from before the outbox: remembered, so
    /// they are not posted again.
    fn migrate(&mut self, old: &Path) {
        #[derive(serde::Deserialize)]
        struct OldFile {
            posted: Vec<Status>,
        }
        let Ok(bytes) = std::fs::read(old) else {
            return;
        };
        if let Ok(f) = serde_json::from_slice::<OldFile>(&bytes) {
            for s in f.posted {
                self.remember(&s);
            }
        }
        let _ = std::fs::remove_file(old);
    }

    fn insert(&mut self, seq: u64, status: Status, queued: SystemTime) {
        if let Some(old) = self.keys.insert(key_of(&status), seq) {
            self.entries.remove(&old);
        }
        self.entries.insert(
            seq,
            Entry {
                seq,
                status,
                queued,
                in_flight: false,
            },
        );
        self.next_seq = self.next_seq.max(seq + 1);
    }

    fn remove(&mut self, seq: u64) -> Option<Entry> {
        let e = self.entries.remove(&seq)?;
        let key = key_of(&e.status);
        if self.keys.get(&key) == Some(&seq) {
            self.keys.remove(&key);
        }
        Some(e)
    }

    fn remember(&mut self, s: &Status) {
        self.posted
            .retain(|p| !(p.sha == s.sha && p.context == s.context));
        self.posted.push_back(s.clone());
        while self.posted.len() > POSTED_MEMORY {
            self.posted.pop_front();
        }
    }

    fn last_posted(&self, s: &Status) -> Option<&Status> {
        self.posted
            .iter()
            .rev()
            .find(|p| p.sha == s.sha && p.context == s.context)
    }

    /// Whether the forge already shows what `s` says: the same state and
    /// description, or a `pending` over a `pending` (SPEC §8: a waiting
    /// server posts its `pending` once per commit, whatever its text).
    pub(crate) fn already_posted(&self, s: &Status) -> bool {
        self.last_posted(s).is_some_and(|p| {
            (p.state == s.state && p.description == s.description)
                || (p.state == State::Pending && s.state == State::Pending)
        })
    }

    fn contexts(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .entries
            .values()
            .map(|e| e.status.context.clone())
            .collect();
        v.sort();
        v.dedup();
        v
    }

    /// Appends `line` to the journal (one `write(2)`, no fsync: see
    /// [`Book::sync_handle`]).
    fn write(&mut self, line: &Line) {
        self.lines += 1;
        let Some(f) = self.file.as_mut() else {
            return;
        };
        let Ok(mut bytes) = serde_json::to_vec(line) else {
            return;
        };
        bytes.push(b'\n');
        match f.write(&bytes) {
            Ok(n) if n == bytes.len() => self.unsynced = true,
            Ok(n) => {
                // A full disk: end the fragment so the next line stands alone.
                let _ = f.write(b"\n");
                self.warn_write(&format!("only {n} of {} bytes were written", bytes.len()));
            }
            Err(e) => self.warn_write(&e.to_string()),
        }
    }

    fn warn_write(&self, why: &str) {
        if let Some(p) = &self.path {
            tracing::warn!(
                "cannot append to {} ({why}); a status queued now is lost if hoist stops before it is posted",
                p.display()
            );
        }
    }

    /// Queues `status` (the latest state per commit and context wins), unless
    /// the forge or the outbox already has it.
    pub(crate) fn queue(&mut self, status: Status, now: SystemTime) -> Queued {
        let key = key_of(&status);
        let waiting = self.keys.get(&key).copied();
        if let Some(seq) = waiting
            && self.entries.get(&seq).is_some_and(|e| e.status == status)
        {
            return Queued::Unchanged;
        }
        if self.already_posted(&status) {
            // What waits is older than what the forge shows again.
            if let Some(seq) = waiting
                && self.entries.get(&seq).is_some_and(|e| !e.in_flight)
            {
                self.remove(seq);
                self.write(&Line::Dropped { seq });
            }
            return Queued::Unchanged;
        }
        let seq = self.next_seq;
        self.write(&queue_line(seq, &status, now));
        let context = status.context.clone();
        self.insert(seq, status, now);
        self.bound(&context);
        Queued::New
    }

    /// Keeps the latest status of at most [`PER_CONTEXT`] commits in
    /// `context`, dropping the oldest beyond (a WARN each).
    fn bound(&mut self, context: &str) {
        loop {
            let mut in_context: Vec<&Entry> = self
                .entries
                .values()
                .filter(|e| e.status.context == context)
                .collect();
            if in_context.len() <= PER_CONTEXT {
                return;
            }
            // The oldest one not being posted right now.
            in_context.retain(|e| !e.in_flight);
            let Some(oldest) = in_context.first().map(|e| e.seq) else {
                return;
            };
            if let Some(e) = self.remove(oldest) {
                tracing::warn!(
                    sha = %e.status.sha,
                    context = %e.status.context,
                    state = %e.status.state,
                    "dropping a commit status never posted: more than {PER_CONTEXT} commits wait for the forge in this context, and only the latest {PER_CONTEXT} are kept"
                );
                self.write(&Line::Dropped { seq: oldest });
            }
        }
    }

    /// How many statuses wait (being posted included).
    pub(crate) fn depth(&self) -> usize {
        self.entries.len()
    }

    /// The oldest status waiting that is not being posted, marked as being
    /// posted.
    pub(crate) fn take_next(&mut self) -> Option<(u64, Status)> {
        let e = self.entries.values_mut().find(|e| !e.in_flight)?;
        e.in_flight = true;
        Some((e.seq, e.status.clone()))
    }

    /// A handle to fsync, when lines were written since the last one.
    pub(crate) fn sync_handle(&mut self) -> Option<File> {
        if !self.unsynced {
            return None;
        }
        self.unsynced = false;
        self.file.as_ref().and_then(|f| f.try_clone().ok())
    }

    /// The forge accepted entry `seq`, which said `status`.
    pub(crate) fn posted(&mut self, seq: u64, status: &Status) {
        if self.entries.get(&seq).is_some_and(|e| e.status == *status) {
            self.remove(seq);
        } else if let Some(e) = self.entries.get_mut(&seq) {
            e.in_flight = false;
        }
        self.remember(status);
        self.write(&posted_line(seq, status));
    }

    /// Entry `seq` was not posted this time: it waits for the next try.
    pub(crate) fn not_posted(&mut self, seq: u64) {
        if let Some(e) = self.entries.get_mut(&seq) {
            e.in_flight = false;
        }
    }

    /// Entry `seq` will never be posted.
    pub(crate) fn drop_entry(&mut self, seq: u64) -> Option<Entry> {
        let e = self.remove(seq)?;
        self.write(&Line::Dropped { seq });
        Some(e)
    }

    /// The forge asked to wait until `until` (wall clock), or it no longer
    /// does (`None`).
    pub(crate) fn set_wait(&mut self, until: Option<SystemTime>) {
        if self.wait_until == until {
            return;
        }
        self.wait_until = until;
        let until = until.map(rfc3339).unwrap_or_default();
        self.write(&Line::Wait { until });
    }

    /// What the forge asked to wait for, as found in the journal.
    pub(crate) fn wait_until(&self) -> Option<SystemTime> {
        self.wait_until
    }

    /// Whether the journal has grown well past what it holds.
    pub(crate) fn wants_rewrite(&self) -> bool {
        self.path.is_some() && self.lines > 1024 + 2 * (self.entries.len() + self.posted.len())
    }

    /// Writes the journal afresh with only what it holds (temporary file,
    /// fsync, rename, fsync of the folder), and reopens it for appending.
    pub(crate) fn rewrite(&mut self) -> std::io::Result<()> {
        let Some(path) = self.path.clone() else {
            return Ok(());
        };
        let mut lines: Vec<Line> = self.posted.iter().map(|s| posted_line(0, s)).collect();
        lines.extend(
            self.entries
                .values()
                .map(|e| queue_line(e.seq, &e.status, e.queued)),
        );
        if let Some(t) = self.wait_until.filter(|t| *t > SystemTime::now()) {
            lines.push(Line::Wait { until: rfc3339(t) });
        }
        let mut bytes = Vec::new();
        for l in &lines {
            bytes.extend(serde_json::to_vec(l).map_err(std::io::Error::other)?);
            bytes.push(b'\n');
        }
        crate::fsutil::write_atomic(&path, &bytes)?;
        self.file = Some(std::fs::OpenOptions::new().append(true).open(&path)?);
        self.lines = lines.len();
        self.unsynced = false;
        Ok(())
    }

    /// The statuses waiting, oldest first.
    #[cfg(test)]
    pub(crate) fn entries(&self) -> Vec<Entry> {
        self.entries.values().cloned().collect()
    }
}

/// What the outbox of a `state_dir` holds, read without opening it (for
/// `hoist status`, which may run beside the daemon).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct View {
    /// Statuses waiting to be posted.
    pub waiting: usize,
    /// When the oldest of them was queued.
    pub oldest: Option<SystemTime>,
    /// The forge asked to wait until then.
    pub wait_until: Option<SystemTime>,
}

/// Reads the outbox of `state_dir` (nothing there: empty).
pub fn peek(state_dir: &Path) -> std::io::Result<View> {
    let path = state_dir.join(FILE_NAME);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(View::default()),
        Err(e) => return Err(e),
    };
    let mut book = Book::memory();
    book.replay(&bytes);
    Ok(View {
        waiting: book.depth(),
        oldest: book.entries.values().map(|e| e.queued).min(),
        wait_until: book
            .wait_until
            .filter(|t| *t > SystemTime::now() - Duration::from_secs(1)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(sha: &str, context: &str, state: State, description: &str) -> Status {
        Status {
            sha: sha.repeat(40 / sha.len()),
            state,
            context: context.into(),
            description: description.into(),
        }
    }

    fn t(secs: u64) -> SystemTime {
        std::time::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    #[test]
    fn a_queued_status_survives_a_restart_until_it_is_posted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(FILE_NAME);
        let mut book = Book::open(&path);
        let s = status("a", "hoist/p/web-1", State::Pending, "deploying web");
        assert_eq!(book.queue(s.clone(), t(0)), Queued::New);
        // No fsync, no drop: as after kill -9, the line is in the file.
        let again = Book::open(&path);
        assert_eq!(again.entries().len(), 1);
        assert_eq!(again.entries()[0].status, s);
        assert_eq!(again.entries()[0].queued, t(0));

        let mut book = again;
        let (seq, taken) = book.take_next().expect("due");
        assert_eq!(taken, s);
        book.posted(seq, &taken);
        assert_eq!(book.depth(), 0);
        let after = Book::open(&path);
        assert_eq!(after.depth(), 0, "posted: gone");
        assert!(after.already_posted(&s), "and remembered as posted");
    }

    #[test]
    fn the_latest_state_per_commit_and_context_wins() {
        let mut book = Book::memory();
        let c = "hoist/p/web-1";
        book.queue(status("a", c, State::Pending, "deploying"), t(0));
        book.queue(status("b", c, State::Pending, "deploying"), t(1));
        book.queue(status("a", c, State::Success, "web live"), t(2));
        let e = book.entries();
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].status.sha, "b".repeat(40));
        assert_eq!(e[1].status.state, State::Success);
        // The same again is nothing new.
        assert_eq!(
            book.queue(status("a", c, State::Success, "web live"), t(3)),
            Queued::Unchanged
        );
    }

    #[test]
    fn what_the_forge_shows_already_is_not_queued_and_replaces_what_waits() {
        let mut book = Book::memory();
        let c = "hoist/p/web-1";
        let live = status("a", c, State::Success, "web live");
        book.queue(live.clone(), t(0));
        let (seq, s) = book.take_next().expect("due");
        book.posted(seq, &s);
        assert_eq!(book.queue(live.clone(), t(1)), Queued::Unchanged);
        // A failure waits, then the success comes back before it is posted:
        // the forge shows the success already, so nothing is left to post.
        book.queue(status("a", c, State::Failure, "web down"), t(2));
        assert_eq!(book.depth(), 1);
        assert_eq!(book.queue(live, t(3)), Queued::Unchanged);
        assert_eq!(book.depth(), 0);
        // A pending over a pending, whatever its text.
        let p = status(
            "b",
            c,
            State::Pending,
            "web 2 waits for wave 1 (web-1), 4m left",
        );
        book.queue(p, t(4));
        let (seq, s) = book.take_next().expect("due");
        book.posted(seq, &s);
        assert_eq!(
            book.queue(
                status(
                    "b",
                    c,
                    State::Pending,
                    "web 2 waits for wave 1 (web-1), 3m left"
                ),
                t(5)
            ),
            Queued::Unchanged
        );
    }

    #[test]
    fn only_the_last_50_commits_of_a_context_wait() {
        let mut book = Book::memory();
        for i in 0..(PER_CONTEXT + 3) {
            let sha = format!("{i:040x}");
            book.queue(
                Status {
                    sha,
                    state: State::Success,
                    context: "hoist/p/web-1".into(),
                    description: "ok".into(),
                },
                t(i as u64),
            );
        }
        book.queue(status("f", "hoist/p/web-2", State::Success, "ok"), t(99));
        let e = book.entries();
        assert_eq!(e.len(), PER_CONTEXT + 1);
        let web1: Vec<&Entry> = e
            .iter()
            .filter(|e| e.status.context == "hoist/p/web-1")
            .collect();
        assert_eq!(web1.len(), PER_CONTEXT);
        assert_eq!(
            web1[0].status.sha,
            format!("{:040x}", 3),
            "the oldest dropped"
        );
    }

    #[test]
    fn torn_and_foreign_lines_are_skipped_and_counted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(FILE_NAME);
        let mut book = Book::open(&path);
        book.queue(status("a", "c", State::Failure, "web failed"), t(0));
        book.queue(status("b", "c", State::Pending, "deploying"), t(1));
        drop(book);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open");
        f.write_all(b"not json\n{\"op\":\"queue\",\"seq\":9,\"sha\":\"")
            .expect("write");
        let book = Book::open(&path);
        assert_eq!(book.skipped, 2);
        assert_eq!(book.depth(), 2);
        // Rewritten whole: the next open finds nothing to skip.
        assert_eq!(Book::open(&path).skipped, 0);
    }

    #[test]
    fn a_wait_the_forge_asked_for_is_kept_across_restarts_and_shown() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(FILE_NAME);
        let mut book = Book::open(&path);
        book.queue(status("a", "c", State::Success, "live"), SystemTime::now());
        let until = SystemTime::now() + Duration::from_secs(900);
        book.set_wait(Some(until));
        drop(book);
        let view = peek(dir.path()).expect("peek");
        assert_eq!(view.waiting, 1);
        let shown = view.wait_until.expect("a wait");
        assert!(shown.duration_since(until).unwrap_or_default() < Duration::from_millis(1));
        let reopened = Book::open(&path);
        assert!(reopened.wait_until().is_some());
    }

    #[test]
    fn the_journal_is_rewritten_when_it_has_grown() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(FILE_NAME);
        let mut book = Book::open(&path);
        for i in 0..2000u64 {
            book.queue(status("a", "c", State::Pending, &format!("try {i}")), t(i));
            let (seq, s) = book.take_next().expect("due");
            book.posted(seq, &s);
            // A different state each time, so each is news.
            book.queue(status("a", "c", State::Success, &format!("ok {i}")), t(i));
            let (seq, s) = book.take_next().expect("due");
            book.posted(seq, &s);
            if book.wants_rewrite() {
                book.rewrite().expect("rewrite");
            }
        }
        let lines = std::fs::read_to_string(&path)
            .expect("read")
            .lines()
            .count();
        assert!(lines < 1100, "{lines} lines");
        let again = Book::open(&path);
        assert!(again.already_posted(&status("a", "c", State::Success, "ok 1999")));
    }

    #[test]
    fn the_old_dedupe_file_is_taken_over() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = status("a", "c", State::Success, "web live");
        std::fs::write(
            dir.path().join(OLD_POSTED_FILE),
            serde_json::json!({"version": 1, "posted": [s]}).to_string(),
        )
        .expect("write");
        let mut book = Book::open(&dir.path().join(FILE_NAME));
        assert_eq!(book.queue(s, t(0)), Queued::Unchanged);
        assert!(!dir.path().join(OLD_POSTED_FILE).exists());
    }
}
