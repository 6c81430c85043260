//! `provider: file`: statuses appended to a local JSON-lines file.
//!
//! For servers without a forge, for tests, and for anyone who wants to
//! `tail -f` what hoist would have told the forge. One object a line:
//! `{"sha","state","context","description","at"}` with `at` in Unix seconds
//! (a float). Each line is written with a single `write` on an `O_APPEND`
//! file and then fsynced, so a crash leaves whole lines behind, and readers
//! never see half of one.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use futures::future::BoxFuture;

use super::{PostError, Provider, ProviderSettings, ReportError, State, Status};

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
    at: f64,
}

impl Provider for FileProvider {
    fn name(&self) -> &'static str {
        "file"
    }

    fn post<'a>(&'a self, status: &'a Status) -> BoxFuture<'a, Result<(), PostError>> {
        Box::pin(async move {
            let at = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0);
            let description = super::truncate_description(&status.description);
            let line = Line {
                sha: &status.sha,
                state: status.state,
                context: &status.context,
                description: &description,
                at,
            };
            let mut bytes = serde_json::to_vec(&line).map_err(|e| PostError::Permanent {
                message: format!("file: cannot encode status: {e}"),
            })?;
            bytes.push(b'\n');

            let path = self.path.clone();
            let lock = Arc::clone(&self.lock);
            let result = tokio::task::spawn_blocking(move || {
                let _guard = lock.lock().unwrap_or_else(|e| e.into_inner());
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)?;
                f.write_all(&bytes)?;
                f.sync_data()
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
        let at = lines[1]["at"].as_f64().expect("at is a number");
        assert!(at > 1_600_000_000.0, "{at}");
        assert!(text.ends_with('\n'));
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
