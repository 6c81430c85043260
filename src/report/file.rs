//! `provider: file`: statuses appended to a local JSON-lines file.
//!
//! For servers without a forge, for tests, and for anyone who wants to
//! `tail -f` what hoist would have told the forge. One object a line:
//! `{"sha","state","context","description","time"}` with `time` in RFC 3339
//! (UTC, milliseconds). Each line is written with a single `write` on an
//! `O_APPEND` file and then fsynced: the kernel places each such write
//! whole at the end of the file, so several servers of one machine can
//! share one `path` (a small fleet, the fleet demo) without their lines
//! mixing, and a crash leaves whole lines behind.
//!
//! Reading back is the forge's read for this provider: every line of the
//! commit, the latest per context (ties by line order). The clock is this
//! machine's, which is also the clock that wrote every `time`, so a rollout
//! still compares one clock with itself. The `ETag` is the file's identity,
//! size and modification time, so an unchanged file is not read again.
//! Lines that do not parse (a torn last line, another program's output)
//! or whose time cannot be true (after now, before 2000, `"at": 1e300`) are
//! skipped and counted, never trusted; lines written before `time` existed
//! (`at`, Unix seconds) are still read.

use std::io::{Read as _, Write};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;

use super::{
    PostError, Provider, ProviderSettings, Read, ReadError, ReadStatus, ReportError, State, Status,
    StatusRead,
};

#[derive(Debug)]
pub(crate) struct FileProvider {
    path: PathBuf,
    /// Serialises appends from this process (the reporter posts one at a
    /// time, but the provider may be shared).
    lock: Arc<Mutex<()>>,
}

impl FileProvider {
    pub(crate) fn new(s: &ProviderSettings) -> Result<FileProvider, ReportError> {
        match &s.path {
            Some(p) if !p.as_os_str().is_empty() => Ok(FileProvider {
                path: p.clone(),
                lock: Arc::new(Mutex::new(())),
            }),
            _ => Err(ReportError::Config(
                "status.path is required for provider file (the JSON-lines file to append to)"
                    .into(),
            )),
        }
    }
}

#[derive(serde::Serialize)]
struct Line<'a> {
    sha: &'a str,
    state: State,
    context: &'a str,
    description: &'a str,
    time: String,
}

/// A line read back; `at` is the older form of `time`.
#[derive(serde::Deserialize)]
struct ReadLine {
    sha: String,
    state: State,
    context: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    time: Option<String>,
    #[serde(default)]
    at: Option<f64>,
}

impl ReadLine {
    /// When the line was written, if that can be true now (`now`: this
    /// machine's clock, which wrote it): a damaged `"at": 1e300` is not.
    fn time(&self, now: SystemTime) -> Option<SystemTime> {
        let t = match (&self.time, self.at) {
            (Some(t), _) => super::forge::parse_rfc3339(t)?,
            (None, Some(at)) => UNIX_EPOCH.checked_add(Duration::try_from_secs_f64(at).ok()?)?,
            (None, None) => return None,
        };
        crate::status::plausible(t, now).then_some(t)
    }
}

/// The statuses of commit `sha` in the lines of a statuses file read at
/// `now`, with each line's number as its order, and how many lines could
/// not be read or had an impossible time (skipped, never trusted). Lines
/// of other commits are neither.
pub(crate) fn parse_lines(bytes: &[u8], sha: &str, now: SystemTime) -> (Vec<ReadStatus>, usize) {
    let mut statuses = Vec::new();
    let mut skipped = 0;
    for (n, line) in bytes.split(|b| *b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let Ok(l) = serde_json::from_slice::<ReadLine>(line) else {
            skipped += 1;
            continue;
        };
        if l.sha != sha {
            continue;
        }
        let Some(at) = l.time(now) else {
            skipped += 1;
            continue;
        };
        statuses.push(ReadStatus {
            context: l.context,
            state: l.state,
            description: l.description,
            at,
            order: n as u64,
        });
    }
    (statuses, skipped)
}

/// The file's identity, size and modification time: changes whenever a
/// line is appended (or the file is replaced).
fn etag_of(meta: &std::fs::Metadata) -> String {
    format!(
        "\"{}-{}-{}.{}\"",
        meta.ino(),
        meta.len(),
        meta.mtime(),
        meta.mtime_nsec()
    )
}

impl FileProvider {
    fn read_blocking(&self, sha: &str, etag: Option<&str>) -> Result<Read, ReadError> {
        let now = SystemTime::now();
        let file = match std::fs::File::open(&self.path) {
            Ok(f) => f,
            // Nobody has posted yet.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Read::Changed(StatusRead::new(Vec::new(), now)));
            }
            Err(e) => {
                return Err(ReadError::transient(format!(
                    "file: cannot read {}: {e}",
                    self.path.display()
                )));
            }
        };
        let meta = file.metadata().map_err(|e| {
            ReadError::transient(format!("file: cannot read {}: {e}", self.path.display()))
        })?;
        let tag = etag_of(&meta);
        if etag == Some(tag.as_str()) {
            return Ok(Read::NotModified { date: now });
        }
        let mut bytes = Vec::new();
        let mut file = file;
        file.read_to_end(&mut bytes).map_err(|e| {
            ReadError::transient(format!("file: cannot read {}: {e}", self.path.display()))
        })?;
        let (statuses, skipped) = parse_lines(&bytes, sha, now);
        if skipped > 0 {
            tracing::debug!(
                skipped,
                "{}: skipped lines that cannot be read or whose time is impossible",
                self.path.display()
            );
        }
        let mut read = StatusRead::new(statuses, now);
        read.etag = Some(tag);
        read.skipped = skipped;
        Ok(Read::Changed(read))
    }
}

/// Append `bytes` (one whole line) with a single `write`: on an `O_APPEND`
/// file the kernel places it whole at the end, whoever else appends. A
/// short write (a full disk) is ended with a newline so the fragment stays
/// a line of its own that readers skip, and reported.
fn append_line(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    let written = f.write(bytes)?;
    if written != bytes.len() {
        let _ = f.write(b"\n");
        return Err(std::io::Error::other(format!(
            "only {written} of {} bytes were written",
            bytes.len()
        )));
    }
    f.sync_data()
}

impl Provider for FileProvider {
    fn name(&self) -> &'static str {
        "file"
    }

    fn post<'a>(&'a self, status: &'a Status) -> BoxFuture<'a, Result<(), PostError>> {
        Box::pin(async move {
            let time = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
            let description = super::truncate_description(&status.description);
            let line = Line {
                sha: &status.sha,
                state: status.state,
                context: &status.context,
                description: &description,
                time,
            };
            let mut bytes = serde_json::to_vec(&line).map_err(|e| PostError::Permanent {
                message: format!("file: cannot encode status: {e}"),
            })?;
            bytes.push(b'\n');

            let path = self.path.clone();
            let lock = Arc::clone(&self.lock);
            let result = tokio::task::spawn_blocking(move || {
                let _guard = lock.lock().unwrap_or_else(|e| e.into_inner());
                append_line(&path, &bytes)
            })
            .await;
            match result {
                Ok(Ok(())) => Ok(()),
                // A full or read-only disk may recover: retry.
                Ok(Err(e)) => Err(PostError::Transient {
                    message: format!("file: cannot append to {}: {e}", self.path.display()),
                    retry_after: None,
                }),
                Err(e) => Err(PostError::Transient {
                    message: format!(
                        "file: append to {} did not finish: {e}",
                        self.path.display()
                    ),
                    retry_after: None,
                }),
            }
        })
    }

    fn statuses<'a>(
        &'a self,
        sha: &'a str,
        etag: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Read, ReadError>> {
        Box::pin(async move {
            let this = FileProvider {
                path: self.path.clone(),
                lock: Arc::clone(&self.lock),
            };
            let sha = sha.to_string();
            let etag = etag.map(str::to_string);
            tokio::task::spawn_blocking(move || this.read_blocking(&sha, etag.as_deref()))
                .await
                .unwrap_or_else(|e| {
                    Err(ReadError::transient(format!(
                        "file: the read did not finish: {e}"
                    )))
                })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{ProviderKind, build_provider};

    fn settings(path: Option<PathBuf>) -> ProviderSettings {
        ProviderSettings {
            kind: ProviderKind::File,
            api_url: None,
            repository: None,
            token: None,
            path,
            allow_http: false,
            ca_file: None,
            target_url: None,
        }
    }

    #[test]
    fn path_is_required() {
        let err = build_provider(&settings(None))
            .expect_err("no path")
            .to_string();
        assert_eq!(
            err,
            "status.path is required for provider file (the JSON-lines file to append to)"
        );
    }

    #[tokio::test]
    async fn appends_one_json_object_a_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("statuses.jsonl");
        let p = build_provider(&settings(Some(path.clone()))).expect("file provider");
        let sha = "0123456789abcdef0123456789abcdef01234567";
        for (state, desc) in [(State::Pending, "applying"), (State::Success, "web live")] {
            p.post(&Status {
                sha: sha.into(),
                state,
                context: "hoist/production/web-1".into(),
                description: desc.into(),
            })
            .await
            .expect("append");
        }
        let text = std::fs::read_to_string(&path).expect("read");
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["sha"], sha);
        assert_eq!(lines[0]["state"], "pending");
        assert_eq!(lines[1]["state"], "success");
        assert_eq!(lines[1]["context"], "hoist/production/web-1");
        assert_eq!(lines[1]["description"], "web live");
        let time = lines[1]["time"].as_str().expect("time is a string");
        let at = crate::report::forge::parse_rfc3339(time).expect("RFC 3339");
        let age = SystemTime::now()
            .duration_since(at)
            .expect("not in the future");
        assert!(age < Duration::from_secs(60), "{time}");
        assert!(text.ends_with('\n'));
    }

    fn status(sha: &str, host: &str, state: State, description: &str) -> Status {
        Status {
            sha: sha.into(),
            state,
            context: format!("hoist/fleet/{host}"),
            description: description.into(),
        }
    }

    #[tokio::test]
    async fn servers_sharing_one_path_append_whole_lines_and_read_them_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("statuses.jsonl");
        let sha = "0123456789abcdef0123456789abcdef01234567";
        let other = "89abcdef0123456789abcdef0123456789abcdef";
        // Three servers of one machine, each with its own provider (as
        // three `hoist run` would have), posting at once.
        let mut tasks = Vec::new();
        for host in ["web-1", "web-2", "web-3"] {
            let p = build_provider(&settings(Some(path.clone()))).expect("file provider");
            tasks.push(tokio::spawn(async move {
                for i in 0..50 {
                    let long = format!("{host} try {i} {}", "x".repeat(100));
                    p.post(&status(sha, host, State::Pending, &long))
                        .await
                        .expect("append");
                }
                p.post(&status(sha, host, State::Success, &format!("{host} live")))
                    .await
                    .expect("append");
                p.post(&status(other, host, State::Failure, "elsewhere"))
                    .await
                    .expect("append");
            }));
        }
        for t in tasks {
            t.await.expect("task");
        }
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text.lines().count(), 3 * 52);
        for line in text.lines() {
            serde_json::from_str::<serde_json::Value>(line).expect("every line whole");
        }
        let reader = build_provider(&settings(Some(path.clone()))).expect("file provider");
        let Read::Changed(r) = reader.statuses(sha, None).await.expect("read") else {
            panic!("first read");
        };
        assert_eq!(r.statuses.len(), 3);
        for (s, host) in r.statuses.iter().zip(["web-1", "web-2", "web-3"]) {
            assert_eq!(s.context, format!("hoist/fleet/{host}"));
            assert_eq!(s.state, State::Success, "the latest line of each context");
            assert_eq!(s.description, format!("{host} live"));
        }
        let age = SystemTime::now().duration_since(r.date).unwrap_or_default();
        assert!(
            age < Duration::from_secs(5),
            "the file's clock is this machine's"
        );
        let tag = r.etag.clone().expect("etag");
        assert!(matches!(
            reader.statuses(sha, Some(&tag)).await.expect("read"),
            Read::NotModified { .. }
        ));
        reader
            .post(&status(sha, "web-2", State::Failure, "web-2 failed"))
            .await
            .expect("append");
        let Read::Changed(r) = reader.statuses(sha, Some(&tag)).await.expect("read") else {
            panic!("the file changed");
        };
        assert_eq!(r.statuses[1].state, State::Failure);
    }

    #[tokio::test]
    async fn torn_and_foreign_lines_are_skipped_and_old_lines_still_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("statuses.jsonl");
        let sha = "0123456789abcdef0123456789abcdef01234567";
        std::fs::write(
            &path,
            format!(
                "{{\"sha\":\"{sha}\",\"state\":\"success\",\"context\":\"c/old\",\"description\":\"d\",\"at\":1700000000.5}}\n\
                 not json at all\n\
                 {{\"sha\":\"{sha}\",\"state\":\"pend"
            ),
        )
        .expect("write");
        let p = build_provider(&settings(Some(path.clone()))).expect("file provider");
        p.post(&status(sha, "new", State::Pending, "applying"))
            .await
            .expect("append after a torn line");
        let Read::Changed(r) = p.statuses(sha, None).await.expect("read") else {
            panic!("first read");
        };
        let contexts: Vec<_> = r.statuses.iter().map(|s| s.context.as_str()).collect();
        assert_eq!(
            contexts,
            ["c/old"],
            "the line glued to the torn one is lost, as it must be"
        );
        assert_eq!(
            r.statuses[0].at,
            UNIX_EPOCH + Duration::from_millis(1_700_000_000_500)
        );
        assert_eq!(r.skipped, 2, "the foreign line and the torn one");
        // The next append is a whole line again.
        p.post(&status(sha, "new", State::Success, "live"))
            .await
            .expect("append");
        let Read::Changed(r) = p.statuses(sha, None).await.expect("read") else {
            panic!("changed");
        };
        assert_eq!(r.statuses.len(), 2);
    }

    #[tokio::test]
    async fn impossible_and_damaged_lines_are_skipped_counted_and_never_trusted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("statuses.jsonl");
        let sha = "0123456789abcdef0123456789abcdef01234567";
        let line = |rest: &str| {
            format!(
                r#"{{"sha":"{sha}","state":"success","context":"hoist/fleet/web-1","description":"d",{rest}}}"#
            )
        };
        let text = [
            line(r#""at":1e300"#),
            line(r#""at":-5"#),
            line(r#""at":"soon""#),
            line(r#""time":"9999-12-31T23:59:59Z""#),
            line(r#""time":"1970-01-01T00:00:01Z""#),
            line(r#""time":"2026-13-40T99:99:99Z""#),
            r#"{"sha":7,"state":"success"}"#.to_string(),
            r#"{"sha":"x","state":"bogus","context":"c"}"#.to_string(),
            "\u{0}\u{7f}".to_string(),
            "[".repeat(10_000),
        ]
        .join("\n");
        std::fs::write(&path, text).expect("write");
        let p = build_provider(&settings(Some(path))).expect("file provider");
        let Read::Changed(r) = p.statuses(sha, None).await.expect("read") else {
            panic!("first read");
        };
        assert!(r.statuses.is_empty(), "{:?}", r.statuses);
        assert_eq!(r.skipped, 10);
    }

    #[tokio::test]
    async fn no_file_yet_means_no_statuses() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = build_provider(&settings(Some(dir.path().join("none.jsonl")))).expect("file");
        let Read::Changed(r) = p.statuses(&"a".repeat(40), None).await.expect("read") else {
            panic!("no etag given");
        };
        assert!(r.statuses.is_empty());
    }

    #[tokio::test]
    async fn a_missing_directory_is_a_retryable_error_naming_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nope").join("statuses.jsonl");
        let p = build_provider(&settings(Some(path))).expect("file provider");
        let err = p
            .post(&Status {
                sha: "a".repeat(40),
                state: State::Success,
                context: "c".into(),
                description: "d".into(),
            })
            .await
            .expect_err("no dir");
        assert!(err.is_transient());
        assert!(err.to_string().contains("statuses.jsonl"), "{err}");
    }
}
