//! What this server has done: `state.json` (per app: what runs, what is
//! kept, what failed, and the change of the live release in flight) and
//! `history.jsonl` (the append-only audit log).
//!
//! The types here are plain values; the engine's ledger (`engine::ledger`)
//! is the only code that changes them, through named transitions, and it
//! writes state.json after each one.
//!
//! An app's lifecycle is an enum ([`Life`]): it has never run here, it runs
//! a release (perhaps held there by a local rollback), it was stopped, or it
//! left this server. What goes with a running release (its commit, since
//! when, its health, a pin) lives inside that variant, so nothing has to be
//! "reset by hand" when the app moves on.
//!
//! The journal is [`AppState::switch`]: before anything changes which
//! release (and which secrets) an app runs, the change is recorded there and
//! state.json is made durable. It is cleared in the same write that records
//! the outcome. A start that finds one finishes or undoes it.
//!
//! state.json is only ever replaced whole (temp file, fsync, rename, fsync of
//! the directory), so a crash leaves either the old or the new file, never a
//! torn one. Version 1 files (before the journal) are read and converted.

use crate::config::Manifest;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

pub const STATE_VERSION: u32 = 2;

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

/// A release ready to run, with everything needed to run it again as it
/// ran: the pair (release, secrets generation) and the manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Live {
    pub release: String,
    pub sha256: String,
    /// The generation of opened secrets (`<root>/<app>/secrets/<gen>`) the
    /// release runs with; None for an app without secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets: Option<String>,
    pub manifest: Manifest,
}

impl Live {
    pub fn processes(&self) -> Vec<String> {
        self.manifest.process_names()
    }
}

/// Health at the end of the last deploy, rollback or recovery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Healthy,
    Unhealthy(String),
    Unknown,
}

impl Health {
    pub fn describe(&self) -> String {
        match self {
            Health::Healthy => "healthy".into(),
            Health::Unhealthy(why) => format!("unhealthy: {why}"),
            Health::Unknown => "unknown".into(),
        }
    }
}

/// The app's lifecycle on this server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "state", rename_all = "lowercase")]
pub enum Life {
    /// Never deployed here.
    #[default]
    New,
    /// A release runs.
    Running {
        live: Live,
        /// The commit whose manifest put it there (None for a local rollback
        /// or a rollback to a release whose commit is gone).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        commit: Option<String>,
        since: String,
        health: Health,
        /// An operator's local rollback holds the app here.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pin: Option<Pin>,
    },
    /// Nothing runs: a first deploy failed and there was nothing to go
    /// back to, so its processes were deleted.
    Stopped { since: String, reason: String },
    /// The app left the manifests or this server: processes deleted, files
    /// kept.
    Removed {
        since: String,
        /// What ran before it was removed.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        last: Option<Live>,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AppState {
    #[serde(default)]
    pub life: Life,
    /// What ran before the running release: what an unhealthy deploy and
    /// `hoist rollback` go back to; pruning keeps it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<Live>,
    /// Releases unpacked on disk, with their content hash and the manifest
    /// they were deployed with (so a rollback runs them as they ran).
    #[serde(default)]
    pub releases: BTreeMap<String, KnownRelease>,
    /// The journal: a change of the running pair that was started and whose
    /// outcome is not recorded yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switch: Option<Switch>,
    /// The last failed deploy; that commit is not retried for this app.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<Failed>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

impl AppState {
    /// What runs, if anything.
    pub fn live(&self) -> Option<&Live> {
        match &self.life {
            Life::Running { live, .. } => Some(live),
            _ => None,
        }
    }
    pub fn release(&self) -> Option<&str> {
        self.live().map(|l| l.release.as_str())
    }
    pub fn sha256(&self) -> Option<&str> {
        self.live().map(|l| l.sha256.as_str())
    }
    pub fn manifest(&self) -> Option<&Manifest> {
        self.live().map(|l| &l.manifest)
    }
    pub fn commit(&self) -> Option<&str> {
        match &self.life {
            Life::Running { commit, .. } => commit.as_deref(),
            _ => None,
        }
    }
    pub fn since(&self) -> Option<&str> {
        match &self.life {
            Life::Running { since, .. }
            | Life::Stopped { since, .. }
            | Life::Removed { since, .. } => Some(since),
            Life::New => None,
        }
    }
    pub fn pin(&self) -> Option<&Pin> {
        match &self.life {
            Life::Running { pin, .. } => pin.as_ref(),
            _ => None,
        }
    }
    pub fn health(&self) -> String {
        match &self.life {
            Life::Running { health, .. } => health.describe(),
            Life::Stopped { reason, .. } => format!("stopped: {reason}"),
            Life::Removed { .. } => "removed".into(),
            Life::New => "not deployed".into(),
        }
    }
    pub fn is_removed(&self) -> bool {
        matches!(self.life, Life::Removed { .. })
    }
    /// The pm2 process names hoist runs for the app (none unless running).
    pub fn processes(&self) -> Vec<String> {
        self.live().map(Live::processes).unwrap_or_default()
    }
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
pub struct Failed {
    pub commit: String,
    pub release: String,
    pub sha256: String,
    pub error: String,
    pub at: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pin {
    /// What the branch asked for when the pin was made; when the branch asks
    /// for something else, the pin ends.
    pub desired_release: Option<String>,
    pub desired_sha256: Option<String>,
    pub at: String,
}

/// One journal entry: a change of which pair (release, secrets) runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Switch {
    pub why: SwitchWhy,
    /// What ran before (None: nothing).
    pub from: Option<Live>,
    /// What runs after (None: nothing; the app's processes are deleted and
    /// `current` removed).
    pub to: Option<Live>,
    /// The same release with other links: its directory is exchanged with
    /// a re-linked copy instead of re-linked in place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exchange: Option<Exchange>,
    pub started: String,
}

/// Why the running pair changes, and so what recovery does with an
/// unfinished change: a deploy is undone (the next pass deploys it again),
/// every other change is finished.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SwitchWhy {
    Deploy {
        commit: String,
    },
    /// Back from an unhealthy release, which is recorded as failed.
    AutoRollback {
        failed: Failed,
    },
    /// `hoist rollback`: held there by a pin.
    Rollback {
        pin: Pin,
    },
}

impl SwitchWhy {
    pub fn name(&self) -> &'static str {
        match self {
            SwitchWhy::Deploy { .. } => "deploy",
            SwitchWhy::AutoRollback { .. } => "automatic rollback",
            SwitchWhy::Rollback { .. } => "local rollback",
        }
    }
}

/// A re-linked copy of the running release directory, and the inode of the
/// directory that ran before, so a restart can tell whether the exchange
/// happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Exchange {
    /// The copy's path while it waits (after the exchange: the old one's).
    pub staged: PathBuf,
    /// The inode of `releases/<release>` before the exchange.
    pub old_ino: u64,
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
    #[error("{path} was written by a newer hoist (state version {version}); upgrade hoist")]
    TooNew { path: PathBuf, version: u32 },
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

    /// Loads state.json; a missing file is an empty state. A version 1 file
    /// is converted.
    pub fn load(state_dir: &Path) -> Result<State, StateError> {
        let path = State::path(state_dir);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(State {
                    version: STATE_VERSION,
                    ..State::default()
                });
            }
            Err(source) => return Err(StateError::Read { path, source }),
        };
        let parse_err = |source| StateError::Parse {
            path: path.clone(),
            source,
        };
        #[derive(Deserialize)]
        struct Version {
            #[serde(default)]
            version: u32,
        }
        let v: Version = serde_json::from_slice(&bytes).map_err(parse_err)?;
        match v.version {
            0 | 1 => {
                let old: v1::State = serde_json::from_slice(&bytes).map_err(parse_err)?;
                Ok(old.upgrade())
            }
            STATE_VERSION => serde_json::from_slice(&bytes).map_err(parse_err),
            version => Err(StateError::TooNew { path, version }),
        }
    }

    /// The bytes `save` writes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut s = self.clone();
        s.version = STATE_VERSION;
        serde_json::to_vec_pretty(&s).unwrap_or_default()
    }

    /// Replaces state.json atomically and durably.
    pub fn save(&self, state_dir: &Path) -> Result<(), StateError> {
        write_state(state_dir, &self.to_bytes())
    }

    pub fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    pub fn app_mut(&mut self, app: &str) -> &mut AppState {
        self.apps.entry(app.to_string()).or_default()
    }
}

/// Writes serialized state (`State::to_bytes`) to `<state_dir>/state.json`.
pub fn write_state(state_dir: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let path = State::path(state_dir);
    crate::fsutil::write_atomic(&path, bytes).map_err(|source| StateError::Write { path, source })
}

/// One line of history.jsonl.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub at: String,
    /// deploy, rollback, failure, error, remove, retry, unpin, recover, prune
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
    /// The file that holds the output of the hooks this event ran (in the
    /// app's folder; the output itself is never in the history).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
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
            output: None,
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
    pub fn output(mut self, path: Option<String>) -> Self {
        self.output = path;
        self
    }
}

pub fn history_path(state_dir: &Path) -> PathBuf {
    state_dir.join("history.jsonl")
}

/// Appends one event as a line and fsyncs it. A torn last line (power loss
/// mid-write) is first ended with a newline, so the new event starts a line
/// of its own and only the torn fragment is skipped by `read_history`.
pub fn append_history(state_dir: &Path, event: &Event) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(event).map_err(std::io::Error::other)?;
    line.push(b'\n');
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(history_path(state_dir))?;
    let len = f.seek(SeekFrom::End(0))?;
    if len > 0 {
        f.seek(SeekFrom::Start(len - 1))?;
        let mut last = [0u8; 1];
        f.read_exact(&mut last)?;
        if last[0] != b'\n' {
            line.insert(0, b'\n');
        }
    }
    // O_APPEND: the write goes to the end whatever the read position.
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

/// state.json as hoist wrote it before the journal (version 1), read only
/// to convert it.
mod v1 {
    use super::{Failed, Health, KnownRelease, Life, Live, Pin};
    use crate::config::Manifest;
    use serde::Deserialize;
    use std::collections::BTreeMap;

    #[derive(Deserialize)]
    pub struct State {
        #[serde(default)]
        last_commit: Option<String>,
        #[serde(default)]
        apps: BTreeMap<String, AppState>,
        #[serde(default)]
        seq: u64,
    }

    #[derive(Deserialize)]
    struct AppState {
        #[serde(default)]
        release: Option<String>,
        #[serde(default)]
        sha256: Option<String>,
        #[serde(default)]
        commit: Option<String>,
        #[serde(default)]
        since: Option<String>,
        #[serde(default)]
        previous: Option<String>,
        #[serde(default)]
        manifest: Option<Manifest>,
        #[serde(default)]
        releases: BTreeMap<String, KnownRelease>,
        #[serde(default)]
        failed: Option<Failed>,
        #[serde(default)]
        pinned: Option<Pinned>,
        #[serde(default)]
        removed: bool,
        #[serde(default)]
        health: Option<String>,
        #[serde(default)]
        last_error: Option<String>,
    }

    #[derive(Deserialize)]
    struct Pinned {
        desired_release: Option<String>,
        desired_sha256: Option<String>,
        at: String,
    }

    impl State {
        pub fn upgrade(self) -> super::State {
            let apps = self
                .apps
                .into_iter()
                .map(|(name, a)| (name, a.upgrade()))
                .collect();
            super::State {
                version: super::STATE_VERSION,
                last_commit: self.last_commit,
                apps,
                seq: self.seq,
            }
        }
    }

    impl AppState {
        fn upgrade(self) -> super::AppState {
            let since = self.since.clone().unwrap_or_else(super::now_rfc3339);
            let live = match (&self.release, &self.sha256, &self.manifest) {
                (Some(r), Some(s), Some(m)) => Some(Live {
                    release: r.clone(),
                    sha256: s.clone(),
                    secrets: None,
                    manifest: m.clone(),
                }),
                _ => None,
            };
            let previous = self.previous.as_ref().and_then(|p| {
                let k = self.releases.get(p)?;
                Some(Live {
                    release: p.clone(),
                    sha256: k.sha256.clone(),
                    secrets: None,
                    manifest: k.manifest.clone().or_else(|| self.manifest.clone())?,
                })
            });
            let life = match (live, self.removed) {
                (last, true) => Life::Removed { since, last },
                (Some(live), false) => Life::Running {
                    live,
                    commit: self.commit,
                    since,
                    health: match self.health.as_deref() {
                        Some("healthy") => Health::Healthy,
                        Some(other) => Health::Unhealthy(
                            other.strip_prefix("unhealthy: ").unwrap_or(other).into(),
                        ),
                        None => Health::Unknown,
                    },
                    pin: self.pinned.map(|p| Pin {
                        desired_release: p.desired_release,
                        desired_sha256: p.desired_sha256,
                        at: p.at,
                    }),
                },
                (None, false) if self.health.as_deref() == Some("stopped") => Life::Stopped {
                    since,
                    reason: self
                        .failed
                        .as_ref()
                        .map(|f| f.error.clone())
                        .unwrap_or_default(),
                },
                (None, false) => Life::New,
            };
            // A v1 `pending` deploy is dropped: v1 recovery ran at every
            // start before any pass, and the v1 binary was stopped to
            // upgrade, so one can only be left by a crash of v1 itself; the
            // next pass deploys the commit again from the running release.
            super::AppState {
                life,
                previous,
                releases: self.releases,
                switch: None,
                failed: self.failed,
                last_error: self.last_error,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(release: &str) -> Manifest {
        let text = format!(
            "release: {release}\nartifact:\n  url: file:///x\n  sha256: {}\npm2:\n  - name: web\n    script: s.js\n",
            "a".repeat(64)
        );
        crate::config::parse_manifest(Path::new("apps/web.yaml"), &text)
            .unwrap()
            .1
    }

    #[test]
    fn roundtrip_and_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let empty = State::load(dir.path()).unwrap();
        assert!(empty.apps.is_empty());
        let mut s = State::default();
        let a = s.app_mut("web");
        a.life = Life::Running {
            live: Live {
                release: "v1".into(),
                sha256: "ab".into(),
                secrets: None,
                manifest: manifest("v1"),
            },
            commit: Some("c1".into()),
            since: now_rfc3339(),
            health: Health::Healthy,
            pin: None,
        };
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
        assert_eq!(back.apps["web"].release(), Some("v1"));
        assert_eq!(back.apps["web"].commit(), Some("c1"));
        assert_eq!(back.version, STATE_VERSION);
        // No temporary file is left beside it.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
    }

    #[test]
    fn corrupt_or_newer_state_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("state.json"), "{not json").unwrap();
        let e = State::load(dir.path()).unwrap_err();
        assert!(e.to_string().contains("state.json"), "{e}");
        std::fs::write(dir.path().join("state.json"), "{\"version\": 99}").unwrap();
        let e = State::load(dir.path()).unwrap_err();
        assert!(e.to_string().contains("newer hoist"), "{e}");
    }

    #[test]
    fn version_1_state_is_converted() {
        let dir = tempfile::tempdir().unwrap();
        let m = serde_json::to_value(manifest("v2")).unwrap();
        let m1 = serde_json::to_value(manifest("v1")).unwrap();
        let v1 = serde_json::json!({
            "version": 1,
            "last_commit": "c2",
            "seq": 4,
            "apps": {
                "web": {
                    "release": "v2", "sha256": "bb", "commit": "c2",
                    "since": "2026-11-01T10:00:00Z", "previous": "v1",
                    "manifest": m,
                    "releases": {
                        "v1": {"sha256": "aa", "used": 1, "manifest": m1},
                        "v2": {"sha256": "bb", "used": 3, "manifest": m}
                    },
                    "processes": ["web"], "health": "healthy",
                    "pinned": {"release": "v2", "desired_release": "v3",
                               "desired_sha256": "cc", "at": "2026-11-01T10:00:00Z"}
                },
                "api": {"release": "a1", "sha256": "dd", "manifest": m, "removed": true}
            }
        });
        std::fs::write(dir.path().join("state.json"), v1.to_string()).unwrap();
        let s = State::load(dir.path()).unwrap();
        let web = &s.apps["web"];
        assert_eq!(web.release(), Some("v2"));
        assert_eq!(web.commit(), Some("c2"));
        assert_eq!(web.previous.as_ref().unwrap().release, "v1");
        assert_eq!(web.previous.as_ref().unwrap().sha256, "aa");
        assert_eq!(web.pin().unwrap().desired_release.as_deref(), Some("v3"));
        assert_eq!(web.health(), "healthy");
        assert!(s.apps["api"].is_removed());
        assert_eq!(s.seq, 4);
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
        // Events after a torn line are not glued to it.
        append_history(dir.path(), &Event::new("deploy").app("web").release("v2")).unwrap();
        append_history(dir.path(), &Event::new("deploy").app("web").release("v3")).unwrap();
        let h = read_history(dir.path()).unwrap();
        let releases: Vec<_> = h.iter().filter_map(|e| e.release.as_deref()).collect();
        assert_eq!(releases, vec!["v1", "v2", "v3"]);
    }
}
