//! What this server has done: `state.json` (per app: what runs, what is
//! kept, what failed) and `history.jsonl` (the append-only audit log).
//!
//! state.json is only ever replaced whole (temp file, fsync, rename, fsync of
//! the directory), so a crash leaves either the old or the new file, never a
//! torn one. The daemon holds the state in memory and writes it after every
//! step that changes what is on disk, before the next step starts.

use crate::config::Manifest;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

pub const STATE_VERSION: u32 = 1;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    #[serde(default)]
    pub version: u32,
    /// The last commit a pass finished with (whatever its outcome).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_commit: Option<String>,
    #[serde(default)]
    pub apps: BTreeMap<String, AppState>,
    /// A counter for `KnownRelease::used`.
    #[serde(default)]
    pub seq: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AppState {
    /// The release `current` points at (None before the first deploy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// The commit whose manifest put the current release there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// When the current release went live (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// The release that was current before this one; kept by pruning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    /// The manifest the current release runs with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<Manifest>,
    /// Releases unpacked on disk, with their content hash and the manifest
    /// they were deployed with (so a rollback runs them as they ran).
    #[serde(default)]
    pub releases: BTreeMap<String, KnownRelease>,
    /// A deploy that was started and not finished (a crash happened during it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<Pending>,
    /// The last failed deploy; that commit is not retried for this app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<Failed>,
    /// A local rollback holds the app until the branch changes its release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pinned: Option<Pinned>,
    /// pm2 process names hoist started for this app.
    #[serde(default)]
    pub processes: Vec<String>,
    /// The app left the manifests (or this server): processes deleted.
    #[serde(default)]
    pub removed: bool,
    /// Health at the end of the last deploy or check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KnownRelease {
    pub sha256: String,
    /// Larger is more recent: bumped when the release is unpacked or goes
    /// live, so pruning removes the least recently used first.
    #[serde(default)]
    pub used: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<Manifest>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    pub release: String,
    pub sha256: String,
    pub commit: String,
    pub started: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failed {
    pub commit: String,
    pub release: String,
    pub sha256: String,
    pub error: String,
    pub at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pinned {
    /// The release the operator rolled back to.
    pub release: String,
    /// What the branch asked for when the pin was made; when the branch asks
    /// for something else, the pin ends.
    pub desired_release: Option<String>,
    pub desired_sha256: Option<String>,
    pub at: String,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not valid hoist state ({source}); move it away to start afresh")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

impl State {
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join("state.json")
    }

    /// Loads state.json; a missing file is an empty state.
    pub fn load(state_dir: &Path) -> Result<State, StateError> {
        let path = State::path(state_dir);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| StateError::Parse {
                path: path.clone(),
                source,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State {
                version: STATE_VERSION,
                ..State::default()
            }),
            Err(source) => Err(StateError::Read { path, source }),
        }
    }

    /// Replaces state.json atomically and durably.
    pub fn save(&self, state_dir: &Path) -> Result<(), StateError> {
        let path = State::path(state_dir);
        let mut s = self.clone();
        s.version = STATE_VERSION;
        let bytes = serde_json::to_vec_pretty(&s).map_err(|e| StateError::Write {
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        crate::fsutil::write_atomic(&path, &bytes)
            .map_err(|source| StateError::Write { path, source })
    }

    pub fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    pub fn app_mut(&mut self, app: &str) -> &mut AppState {
        self.apps.entry(app.to_string()).or_default()
    }
}

/// One line of history.jsonl.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub at: String,
    /// deploy, rollback, failure, error, remove, retry, pin, recover
    pub event: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seconds: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl Event {
    pub fn new(event: &str) -> Event {
        Event {
            at: now_rfc3339(),
            event: event.into(),
            app: None,
            release: None,
            from: None,
            commit: None,
            seconds: None,
            message: None,
        }
    }
    pub fn app(mut self, app: &str) -> Self {
        self.app = Some(app.into());
        self
    }
    pub fn release(mut self, r: &str) -> Self {
        self.release = Some(r.into());
        self
    }
    pub fn from(mut self, r: Option<&str>) -> Self {
        self.from = r.map(String::from);
        self
    }
    pub fn commit(mut self, c: &str) -> Self {
        self.commit = Some(c.into());
        self
    }
    pub fn seconds(mut self, s: f64) -> Self {
        self.seconds = Some((s * 1000.0).round() / 1000.0);
        self
    }
    pub fn message(mut self, m: impl Into<String>) -> Self {
        self.message = Some(m.into());
        self
    }
}

pub fn history_path(state_dir: &Path) -> PathBuf {
    state_dir.join("history.jsonl")
}

/// Appends one event as a line and fsyncs it. A torn last line (power loss
/// mid-write) is skipped by `read_history`.
pub fn append_history(state_dir: &Path, event: &Event) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(event).map_err(std::io::Error::other)?;
    line.push(b'\n');
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(history_path(state_dir))?;
    f.write_all(&line)?;
    f.sync_data()
}

/// Reads the audit log, oldest first, skipping lines that do not parse.
pub fn read_history(state_dir: &Path) -> std::io::Result<Vec<Event>> {
    let text = match std::fs::read_to_string(history_path(state_dir)) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    Ok(text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let empty = State::load(dir.path()).unwrap();
        assert!(empty.apps.is_empty());
        let mut s = State::default();
        let a = s.app_mut("web");
        a.release = Some("v1".into());
        a.releases.insert(
            "v1".into(),
            KnownRelease {
                sha256: "ab".into(),
                used: 1,
                manifest: None,
            },
        );
        s.save(dir.path()).unwrap();
        let back = State::load(dir.path()).unwrap();
        assert_eq!(back.apps["web"].release.as_deref(), Some("v1"));
        assert_eq!(back.version, STATE_VERSION);
        // No temporary file is left beside it.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
    }

    #[test]
    fn corrupt_state_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("state.json"), "{not json").unwrap();
        let e = State::load(dir.path()).unwrap_err();
        assert!(e.to_string().contains("state.json"), "{e}");
    }

    #[test]
    fn history_appends_and_skips_torn_lines() {
        let dir = tempfile::tempdir().unwrap();
        append_history(dir.path(), &Event::new("deploy").app("web").release("v1")).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(history_path(dir.path()))
            .unwrap()
            .write_all(b"{\"at\":\"x\",\"ev")
            .unwrap();
        let h = read_history(dir.path()).unwrap();
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].release.as_deref(), Some("v1"));
    }
}
