//! The decisions: given what the branch asks for and what this server has,
//! what should happen to each app, and why. Pure: no I/O, no clock.
//!
//! Everything that can go subtly wrong in a deployer — re-deploying what
//! already runs, retrying a release that just failed, overriding an
//! operator's emergency rollback, mixing two builds under one release name —
//! is decided here, so it can be tested exhaustively and fast. The daemon
//! gathers the inputs, calls `plan`, carries out the decisions, and calls
//! `summarize` to turn their outcomes into a commit status.

use crate::config::{AppSet, Manifest};
use crate::state::State;
use crate::status::State as StatusState;
use std::collections::{BTreeMap, BTreeSet};

/// What the branch asks of this server.
pub struct Desired<'a> {
    pub commit: &'a str,
    pub apps: &'a AppSet,
    pub host: &'a str,
    pub labels: &'a [String],
    /// Apps whose sealed secrets differ from what runs, or cannot be
    /// opened here (apps absent: unchanged, or no secrets).
    pub secrets: &'a BTreeMap<String, SecretsState>,
}

/// An app's secrets at the commit, against what runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretsState {
    /// Their plaintext differs from the running generation's.
    Changed,
    /// This server cannot open them (the reason names the file and the fix).
    Refused(String),
}

/// What this server has: its state and the release directories on disk.
pub struct Actual<'a> {
    pub state: &'a State,
    pub on_disk: &'a BTreeMap<String, BTreeSet<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Why {
    FirstDeploy,
    NewRelease,
    ManifestChanged,
    PinEnded,
    Redeploy,
    SecretsChanged,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Bring `release` live. `reuse`: it is already unpacked on disk with the
    /// same sha256, so nothing is downloaded.
    Deploy {
        release: String,
        sha256: String,
        from: Option<String>,
        reuse: bool,
        why: Why,
    },
    /// The app already runs what the branch asks for.
    Unchanged { release: String },
    /// `paused: true` in the manifest: leave the app exactly as it is.
    Paused { release: Option<String> },
    /// An operator's local rollback holds the app on `release` until the
    /// branch asks for a different release.
    Pinned { release: String, wanted: String },
    /// This commit already failed for the app; it is not retried until the
    /// branch moves or `hoist retry` is run.
    HeldAfterFailure {
        release: String,
        running: Option<String>,
        error: String,
    },
    /// The release name is on disk with different content; refusing to mix.
    Conflict {
        release: String,
        known_sha256: String,
        wanted_sha256: String,
    },
    /// The app left the manifests or stopped targeting this server: delete
    /// its pm2 processes, keep its files.
    Remove { processes: Vec<String> },
    /// The commit cannot be applied to the app here (its secrets cannot be
    /// opened): nothing changes, the status is `error`.
    Refused { error: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppPlan {
    pub app: String,
    pub decision: Decision,
    /// The operator's pin ends with this pass (the branch changed the app).
    pub unpin: bool,
}

/// Whether two manifests of the same release would run it differently
/// (a reload is needed). Targets, keep_releases, paused, rollout and the
/// artifact URL do not change how it runs.
pub fn runs_differently(a: &Manifest, b: &Manifest) -> bool {
    a.pm2 != b.pm2 || a.shared != b.shared || a.health != b.health || a.secrets != b.secrets
}

pub fn plan(desired: &Desired<'_>, actual: &Actual<'_>) -> Vec<AppPlan> {
    let mut out = Vec::new();
    let no_releases = BTreeSet::new();
    let mut wanted_here: BTreeSet<&str> = BTreeSet::new();

    for (app, m) in desired.apps {
        if !m.targets_host(desired.host, desired.labels) {
            continue;
        }
        wanted_here.insert(app.as_str());
        let st = actual.state.apps.get(app.as_str());
        let on_disk = actual.on_disk.get(app.as_str()).unwrap_or(&no_releases);
        let release = m.release.as_str().to_string();
        let sha = m.artifact.sha256.lower();
        let running = st.and_then(|s| s.release().map(String::from));
        let mut unpin = false;

        if m.paused {
            out.push(AppPlan {
                app: app.to_string(),
                decision: Decision::Paused { release: running },
                unpin: false,
            });
            continue;
        }

        if let Some(pin) = st.and_then(|s| s.pin()) {
            let same_wish = pin.desired_release.as_deref() == Some(release.as_str())
                && pin.desired_sha256.as_deref() == Some(sha.as_str());
            if same_wish {
                out.push(AppPlan {
                    app: app.to_string(),
                    decision: Decision::Pinned {
                        release: running.clone().unwrap_or_default(),
                        wanted: release,
                    },
                    unpin: false,
                });
                continue;
            }
            unpin = true;
        }

        let secrets = desired.secrets.get(app.as_str());
        if let Some(SecretsState::Refused(error)) = secrets {
            out.push(AppPlan {
                app: app.to_string(),
                decision: Decision::Refused {
                    error: error.clone(),
                },
                unpin: false,
            });
            continue;
        }
        let secrets_changed = secrets == Some(&SecretsState::Changed);

        let is_current = st.is_some_and(|s| {
            s.release() == Some(release.as_str()) && s.sha256() == Some(sha.as_str())
        });
        let same_config = st
            .and_then(|s| s.manifest())
            .is_some_and(|applied| !runs_differently(applied, m));
        if is_current && same_config && !secrets_changed {
            out.push(AppPlan {
                app: app.to_string(),
                decision: Decision::Unchanged { release },
                unpin,
            });
            continue;
        }

        if let Some(f) = st.and_then(|s| s.failed.as_ref())
            && f.commit == desired.commit
            && f.release == release
            && f.sha256 == sha
        {
            out.push(AppPlan {
                app: app.to_string(),
                decision: Decision::HeldAfterFailure {
                    release,
                    running,
                    error: f.error.clone(),
                },
                unpin,
            });
            continue;
        }

        let known = st.and_then(|s| s.releases.get(&release));
        let present = on_disk.contains(&release);
        if let Some(k) = known
            && present
            && k.sha256 != sha
        {
            out.push(AppPlan {
                app: app.to_string(),
                decision: Decision::Conflict {
                    release,
                    known_sha256: k.sha256.clone(),
                    wanted_sha256: sha,
                },
                unpin,
            });
            continue;
        }
        let reuse = present && known.is_some_and(|k| k.sha256 == sha);
        let why = if unpin {
            Why::PinEnded
        } else if running.is_none() {
            Why::FirstDeploy
        } else if is_current && same_config {
            Why::SecretsChanged
        } else if is_current {
            Why::ManifestChanged
        } else if running.as_deref() == Some(release.as_str()) {
            Why::Redeploy
        } else {
            Why::NewRelease
        };
        out.push(AppPlan {
            app: app.to_string(),
            decision: Decision::Deploy {
                release,
                sha256: sha,
                from: running,
                reuse,
                why,
            },
            unpin,
        });
    }

    for (app, st) in &actual.state.apps {
        // Only a running app has processes to delete.
        if wanted_here.contains(app.as_str()) || st.live().is_none() {
            continue;
        }
        out.push(AppPlan {
            app: app.clone(),
            decision: Decision::Remove {
                processes: st.processes(),
            },
            unpin: st.pin().is_some(),
        });
    }
    out
}

impl AppPlan {
    /// Whether carrying this out changes anything on the server.
    pub fn acts(&self) -> bool {
        matches!(
            self.decision,
            Decision::Deploy { .. } | Decision::Remove { .. }
        ) || self.unpin
    }

    /// One line for `hoist plan`: what and why.
    pub fn describe(&self) -> String {
        let app = &self.app;
        match &self.decision {
            Decision::Deploy {
                release,
                from,
                reuse,
                why,
                ..
            } => {
                let how = if *reuse {
                    "already on disk, no download"
                } else {
                    "download and unpack"
                };
                let why = match why {
                    Why::FirstDeploy => "first deploy on this server".to_string(),
                    Why::NewRelease => format!(
                        "the branch asks for {release}, {} runs",
                        from.as_deref().unwrap_or("nothing")
                    ),
                    Why::ManifestChanged => "its pm2, shared or health settings changed".into(),
                    Why::PinEnded => "the branch changed it since the local rollback".into(),
                    Why::Redeploy => "the running release is redeployed".into(),
                    Why::SecretsChanged => "its secrets changed".into(),
                };
                format!("{app}: deploy {release} ({how}): {why}")
            }
            Decision::Unchanged { release } => format!("{app}: unchanged, {release} runs"),
            Decision::Paused { release } => format!(
                "{app}: paused, left as it is ({})",
                release.as_deref().unwrap_or("not deployed")
            ),
            Decision::Pinned { release, wanted } => format!(
                "{app}: held at {release} by a local rollback (the branch asks for {wanted})"
            ),
            Decision::HeldAfterFailure { release, error, .. } => format!(
                "{app}: {release} failed on this commit and is not retried until the branch moves or `hoist retry {app}`: {error}"
            ),
            Decision::Conflict {
                release,
                known_sha256,
                wanted_sha256,
            } => format!(
                "{app}: refused: release {release} is on disk with sha256 {} but the manifest says {}; give the new build a new release name",
                &known_sha256[..known_sha256.len().min(12)],
                &wanted_sha256[..wanted_sha256.len().min(12)]
            ),
            Decision::Refused { error } => format!("{app}: refused: {error}"),
            Decision::Remove { processes } => format!(
                "{app}: no longer deployed here: delete its pm2 processes ({}), keep its files",
                if processes.is_empty() {
                    "none recorded".to_string()
                } else {
                    processes.join(", ")
                }
            ),
        }
    }
}

/// How carrying out one app's decision ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Deployed {
        release: String,
        seconds: f64,
    },
    Unchanged {
        release: String,
    },
    Paused,
    Pinned {
        release: String,
    },
    /// Deploy failed (hooks, reload, health) and the previous release runs again.
    Failed {
        release: String,
        error: String,
        rolled_back_to: Option<String>,
    },
    /// Still held after an earlier failure of this commit.
    Held {
        release: String,
    },
    /// The commit cannot be applied for this app (checksum, unsafe archive, name reuse).
    Errored {
        error: String,
    },
    /// A passing fault (network, disk); tried again on the next poll.
    Transient {
        error: String,
    },
    Removed,
    /// The app's rollout (SPEC §8) holds this host until its wave opens:
    /// it keeps its current release. `description` says what it waits for
    /// (`web 1.4.0 waits for wave 1 (web-1), 4m left`).
    Waiting {
        release: String,
        description: String,
    },
    /// The app's rollout is halted (more hosts failed than `max_failures`):
    /// this host keeps its current release. `description` names the halt
    /// (`[hoist:halt web 1.4.0] web 1.4.0 halted: web-1 failed`), whose head
    /// is how the other servers tell this report from an attempt.
    Halted {
        release: String,
        description: String,
    },
}

/// The commit status for a set of app outcomes: the worst state wins, and
/// the description says what happened to each app (at most 140 chars).
///
/// The machine-readable heads of every part (a halt, a wait, a local
/// rollback's hold: `[hoist:halt web 1.4.0]`) come first, whole, the most
/// important first, since the other servers read them there
/// (`crate::status::compose`); the 140-character cut shortens only the
/// text. In the text, a halt report still comes first, so a server of an
/// older hoist, which looks for the phrase "web 1.4.0 halted", finds it.
/// A host waiting for its wave is `pending`, like a fault tried again.
pub fn summarize(outcomes: &[(String, Outcome)]) -> (StatusState, String) {
    let mut state = StatusState::Success;
    let rank = |s: StatusState| match s {
        StatusState::Success => 0,
        StatusState::Pending => 1,
        StatusState::Failure => 2,
        StatusState::Error => 3,
    };
    let mut parts = Vec::new();
    for (app, o) in outcomes {
        let (s, text) = match o {
            Outcome::Deployed { release, seconds } => (
                StatusState::Success,
                format!("{app} {release} live in {seconds:.1}s"),
            ),
            Outcome::Unchanged { .. } => (StatusState::Success, format!("{app} unchanged")),
            Outcome::Paused => (StatusState::Success, format!("{app} paused")),
            Outcome::Removed => (StatusState::Success, format!("{app} removed")),
            Outcome::Pinned { release } => (
                StatusState::Failure,
                format!(
                    "{} {app} held at {release} by local rollback",
                    crate::status::Head::new(crate::status::HeadKind::Held, app, release)
                ),
            ),
            Outcome::Failed {
                release,
                error,
                rolled_back_to,
            } => (
                StatusState::Failure,
                match rolled_back_to {
                    Some(prev) => {
                        format!("{app} {release} failed ({error}); rolled back to {prev}")
                    }
                    None => format!("{app} {release} failed ({error}); stopped"),
                },
            ),
            Outcome::Held { release } => (
                StatusState::Failure,
                format!("{app} {release} failed earlier; not retried"),
            ),
            Outcome::Errored { error } => (StatusState::Error, format!("{app}: {error}")),
            Outcome::Transient { error } => {
                (StatusState::Pending, format!("{app}: {error}; retrying"))
            }
            Outcome::Waiting { description, .. } => (StatusState::Pending, description.clone()),
            Outcome::Halted { description, .. } => (StatusState::Failure, description.clone()),
        };
        if rank(s) > rank(state) {
            state = s;
        }
        let news = match o {
            Outcome::Unchanged { .. } | Outcome::Paused => 0,
            Outcome::Deployed { .. } | Outcome::Removed => 1,
            Outcome::Halted { .. } => HALT_FIRST,
            _ => 2 + rank(s),
        };
        parts.push((news, text));
    }
    // The most important news first, so truncation drops the least.
    parts.sort_by_key(|p| std::cmp::Reverse(p.0));
    if outcomes.is_empty() {
        return (state, "no apps for this server".into());
    }
    let desc = crate::status::compose(parts.into_iter().map(|(_, t)| t), shorten_digests);
    (state, desc)
}

/// Where a halt report sorts in a description: before everything else.
const HALT_FIRST: u8 = u8::MAX;

/// Shortens every sha256 (or other hex digest of 40 digits or more) to its
/// first 12 digits and `…`: a status has 140 characters, and cutting one
/// there mid-hash made it look like the whole value.
fn shorten_digests(text: &str) -> String {
    const KEEP: usize = 12;
    let mut out = String::with_capacity(text.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.len() >= 40 {
            out.push_str(&run[..KEEP]);
            out.push('…');
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in text.chars() {
        if c.is_ascii_hexdigit() {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AppName, parse_manifest};
    use crate::state::{AppState, Failed, Health, KnownRelease, Life, Live, Pin};
    use std::path::Path;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn manifest(release: &str, sha: &str, extra: &str) -> Manifest {
        let text = format!(
            "release: {release}\nartifact:\n  url: file:///store/{release}.tar.gz\n  sha256: {sha}\npm2:\n  - name: web\n    script: server.js\n{extra}"
        );
        parse_manifest(Path::new("apps/web.yaml"), &text).unwrap().1
    }

    fn apps(list: &[(&str, Manifest)]) -> AppSet {
        list.iter()
            .map(|(n, m)| (AppName::new(n).unwrap(), m.clone()))
            .collect()
    }

    fn running(release: &str, sha: &str, m: &Manifest) -> AppState {
        let mut s = AppState {
            life: Life::Running {
                live: Live {
                    release: release.into(),
                    sha256: sha.into(),
                    secrets: None,
                    manifest: m.clone(),
                },
                commit: Some("c0".into()),
                since: "t".into(),
                health: Health::Healthy,
                pin: None,
            },
            ..AppState::default()
        };
        s.releases.insert(
            release.into(),
            KnownRelease {
                sha256: sha.into(),
                used: 1,
                manifest: Some(m.clone()),
            },
        );
        s
    }

    struct World {
        apps: AppSet,
        state: State,
        disk: BTreeMap<String, BTreeSet<String>>,
        host: String,
        labels: Vec<String>,
        secrets: BTreeMap<String, SecretsState>,
    }

    impl World {
        fn new(apps: AppSet) -> World {
            World {
                apps,
                state: State::default(),
                disk: BTreeMap::new(),
                host: "web-1".into(),
                labels: vec!["web".into()],
                secrets: BTreeMap::new(),
            }
        }
        fn with(mut self, app: &str, st: AppState) -> World {
            let on_disk: BTreeSet<String> = st.releases.keys().cloned().collect();
            self.disk.insert(app.into(), on_disk);
            self.state.apps.insert(app.into(), st);
            self
        }
        fn plan(&self, commit: &str) -> Vec<AppPlan> {
            plan(
                &Desired {
                    commit,
                    apps: &self.apps,
                    host: &self.host,
                    labels: &self.labels,
                    secrets: &self.secrets,
                },
                &Actual {
                    state: &self.state,
                    on_disk: &self.disk,
                },
            )
        }
        fn one(&self, commit: &str) -> AppPlan {
            let p = self.plan(commit);
            assert_eq!(p.len(), 1, "{p:?}");
            p.into_iter().next().unwrap()
        }
    }

    #[test]
    fn first_deploy_downloads() {
        let w = World::new(apps(&[("web", manifest("v1", A, ""))]));
        let p = w.one("c1");
        assert_eq!(
            p.decision,
            Decision::Deploy {
                release: "v1".into(),
                sha256: A.into(),
                from: None,
                reuse: false,
                why: Why::FirstDeploy
            }
        );
        assert!(p.acts());
    }

    #[test]
    fn unchanged_when_running_the_same_release_and_config() {
        let m = manifest("v1", A, "");
        let w = World::new(apps(&[("web", m.clone())])).with("web", running("v1", A, &m));
        let p = w.one("c2");
        assert_eq!(
            p.decision,
            Decision::Unchanged {
                release: "v1".into()
            }
        );
        assert!(!p.acts());
    }

    #[test]
    fn new_release_is_deployed_from_the_running_one() {
        let m1 = manifest("v1", A, "");
        let w =
            World::new(apps(&[("web", manifest("v2", B, ""))])).with("web", running("v1", A, &m1));
        match w.one("c2").decision {
            Decision::Deploy {
                from, reuse, why, ..
            } => {
                assert_eq!(from.as_deref(), Some("v1"));
                assert!(!reuse);
                assert_eq!(why, Why::NewRelease);
            }
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn revert_to_a_kept_release_needs_no_download() {
        let m1 = manifest("v1", A, "");
        let m2 = manifest("v2", B, "");
        let mut st = running("v2", B, &m2);
        st.releases.insert(
            "v1".into(),
            KnownRelease {
                sha256: A.into(),
                used: 0,
                manifest: Some(m1.clone()),
            },
        );
        let w = World::new(apps(&[("web", m1)])).with("web", st);
        match w.one("c3").decision {
            Decision::Deploy { reuse, from, .. } => {
                assert!(reuse);
                assert_eq!(from.as_deref(), Some("v2"));
            }
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn known_release_missing_from_disk_is_downloaded_again() {
        let m1 = manifest("v1", A, "");
        let m2 = manifest("v2", B, "");
        let mut st = running("v2", B, &m2);
        st.releases.insert(
            "v1".into(),
            KnownRelease {
                sha256: A.into(),
                used: 0,
                manifest: None,
            },
        );
        let mut w = World::new(apps(&[("web", m1)])).with("web", st);
        w.disk.get_mut("web").unwrap().remove("v1");
        match w.one("c3").decision {
            Decision::Deploy { reuse, .. } => assert!(!reuse),
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn release_name_reused_with_other_content_is_refused() {
        let m1 = manifest("v1", A, "");
        let w =
            World::new(apps(&[("web", manifest("v1", B, ""))])).with("web", running("v1", A, &m1));
        assert!(matches!(w.one("c2").decision, Decision::Conflict { .. }));
    }

    #[test]
    fn changed_pm2_settings_redeploy_the_same_release() {
        let m1 = manifest("v1", A, "");
        let m1b = manifest("v1", A, "    instances: 2\n");
        let w = World::new(apps(&[("web", m1b)])).with("web", running("v1", A, &m1));
        match w.one("c2").decision {
            Decision::Deploy { reuse, why, .. } => {
                assert!(reuse);
                assert_eq!(why, Why::ManifestChanged);
            }
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn targets_change_alone_does_not_redeploy() {
        let m1 = manifest("v1", A, "");
        let m1b = manifest("v1", A, "targets:\n  labels: [web]\nkeep_releases: 2\n");
        let w = World::new(apps(&[("web", m1b)])).with("web", running("v1", A, &m1));
        assert!(matches!(w.one("c2").decision, Decision::Unchanged { .. }));
    }

    #[test]
    fn failed_commit_is_not_retried_until_the_branch_moves() {
        let m1 = manifest("v1", A, "");
        let mut st = running("v1", A, &m1);
        st.failed = Some(Failed {
            commit: "c2".into(),
            release: "v2".into(),
            sha256: B.into(),
            error: "unhealthy".into(),
            at: "t".into(),
        });
        let w = World::new(apps(&[("web", manifest("v2", B, ""))])).with("web", st);
        assert!(matches!(
            w.one("c2").decision,
            Decision::HeldAfterFailure { .. }
        ));
        assert!(!w.one("c2").acts());
        // The branch moved: the same release is tried again.
        assert!(matches!(w.one("c3").decision, Decision::Deploy { .. }));
    }

    #[test]
    fn paused_apps_are_left_alone() {
        let m1 = manifest("v1", A, "");
        let w = World::new(apps(&[("web", manifest("v2", B, "paused: true\n"))]))
            .with("web", running("v1", A, &m1));
        assert_eq!(
            w.one("c2").decision,
            Decision::Paused {
                release: Some("v1".into())
            }
        );
        let w = World::new(apps(&[("web", manifest("v2", B, "paused: true\n"))]));
        assert_eq!(w.one("c2").decision, Decision::Paused { release: None });
    }

    #[test]
    fn a_pin_holds_until_the_branch_asks_for_another_release() {
        let m1 = manifest("v1", A, "");
        let m2 = manifest("v2", B, "");
        let mut st = running("v1", A, &m1);
        if let Life::Running { pin, .. } = &mut st.life {
            *pin = Some(Pin {
                desired_release: Some("v2".into()),
                desired_sha256: Some(B.into()),
                at: "t".into(),
            });
        }
        st.releases.insert(
            "v2".into(),
            KnownRelease {
                sha256: B.into(),
                used: 0,
                manifest: Some(m2.clone()),
            },
        );
        let w = World::new(apps(&[("web", m2)])).with("web", st.clone());
        let p = w.one("c9");
        assert!(matches!(p.decision, Decision::Pinned { .. }));
        assert!(!p.acts());
        // The branch now asks for v3: the pin ends and v3 is deployed.
        let w = World::new(apps(&[("web", manifest("v3", A, ""))])).with("web", st.clone());
        let p = w.one("c10");
        assert!(p.unpin);
        assert!(matches!(
            p.decision,
            Decision::Deploy {
                why: Why::PinEnded,
                ..
            }
        ));
        // The branch reverted to what the pin holds: unpinned, unchanged.
        let w = World::new(apps(&[("web", m1)])).with("web", st);
        let p = w.one("c11");
        assert!(p.unpin);
        assert!(matches!(p.decision, Decision::Unchanged { .. }));
        assert!(p.acts());
    }

    #[test]
    fn apps_leaving_the_repo_or_this_server_are_removed() {
        let m1 = manifest("v1", A, "");
        let w = World::new(AppSet::new()).with("web", running("v1", A, &m1));
        assert_eq!(
            w.one("c2").decision,
            Decision::Remove {
                processes: vec!["web".into()]
            }
        );
        let w = World::new(apps(&[(
            "web",
            manifest("v1", A, "targets:\n  hosts: [\"db-*\"]\n"),
        )]))
        .with("web", running("v1", A, &m1));
        assert!(matches!(w.one("c2").decision, Decision::Remove { .. }));
        // Already removed: nothing more to do.
        let mut st = running("v1", A, &m1);
        st.life = Life::Removed {
            since: "t".into(),
            last: st.live().cloned(),
        };
        let w = World::new(AppSet::new()).with("web", st);
        assert!(w.plan("c3").is_empty());
    }

    #[test]
    fn an_app_coming_back_is_a_first_deploy_even_with_the_same_release() {
        let m1 = manifest("v1", A, "");
        let mut st = running("v1", A, &m1);
        st.life = Life::Removed {
            since: "t".into(),
            last: st.live().cloned(),
        };
        let w = World::new(apps(&[("web", m1)])).with("web", st);
        match w.one("c4").decision {
            Decision::Deploy {
                reuse, why, from, ..
            } => {
                assert!(reuse);
                assert_eq!(why, Why::FirstDeploy);
                assert_eq!(from, None);
            }
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn targeting_by_host_and_labels() {
        let only_db = manifest("v1", A, "targets:\n  hosts: [\"db-*\"]\n");
        let need_label = manifest("v1", A, "targets:\n  labels: [web, eu]\n");
        let w = World::new(apps(&[("api", only_db), ("web", need_label)]));
        assert!(w.plan("c1").is_empty());
        let mut w = w;
        w.labels.push("eu".into());
        let p = w.plan("c1");
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].app, "web");
    }

    #[test]
    fn uppercase_sha_in_manifest_matches_state() {
        let upper = manifest("v1", &A.to_uppercase(), "");
        let st = running("v1", A, &upper);
        let w = World::new(apps(&[("web", upper)])).with("web", st);
        assert!(matches!(w.one("c2").decision, Decision::Unchanged { .. }));
    }

    #[test]
    fn describe_says_why() {
        let w = World::new(apps(&[("web", manifest("v1", A, ""))]));
        assert!(w.one("c1").describe().contains("first deploy"));
    }

    #[test]
    fn summary_worst_state_wins_and_news_first() {
        let (s, d) = summarize(&[
            (
                "api".into(),
                Outcome::Unchanged {
                    release: "1".into(),
                },
            ),
            (
                "web".into(),
                Outcome::Deployed {
                    release: "2026.11.27-3".into(),
                    seconds: 4.21,
                },
            ),
        ]);
        assert_eq!(s, StatusState::Success);
        assert_eq!(d, "web 2026.11.27-3 live in 4.2s; api unchanged");
        let (s, d) = summarize(&[
            (
                "api".into(),
                Outcome::Unchanged {
                    release: "1".into(),
                },
            ),
            (
                "web".into(),
                Outcome::Failed {
                    release: "v3".into(),
                    error: "unhealthy".into(),
                    rolled_back_to: Some("v1".into()),
                },
            ),
        ]);
        assert_eq!(s, StatusState::Failure);
        assert!(
            d.starts_with("web v3 failed (unhealthy); rolled back to v1"),
            "{d}"
        );
        let (s, _) = summarize(&[
            (
                "a".into(),
                Outcome::Errored {
                    error: "checksum".into(),
                },
            ),
            (
                "b".into(),
                Outcome::Failed {
                    release: "x".into(),
                    error: "e".into(),
                    rolled_back_to: None,
                },
            ),
        ]);
        assert_eq!(s, StatusState::Error);
        let (s, _) = summarize(&[(
            "a".into(),
            Outcome::Transient {
                error: "timeout".into(),
            },
        )]);
        assert_eq!(s, StatusState::Pending);
        let (s, d) = summarize(&[]);
        assert_eq!(s, StatusState::Success);
        assert!(!d.is_empty());
    }

    #[test]
    fn a_checksum_mismatch_fits_a_status_without_a_cut_hash() {
        let error = crate::artifact::ArtifactError::ChecksumMismatch {
            url: "s3://acme-releases/web/releases/2026/11/web-2026.11.27-3.tar.zst".into(),
            expected: A.into(),
            actual: B.into(),
        }
        .to_string();
        let (s, d) = summarize(&[("web".into(), Outcome::Errored { error })]);
        assert_eq!(s, StatusState::Error);
        assert!(d.chars().count() <= 140, "{d}");
        assert!(d.starts_with("web: checksum mismatch"), "{d}");
        assert!(d.contains(&format!("{}…", &B[..12])), "{d}");
        assert!(d.contains(&format!("{}…", &A[..12])), "{d}");
        // Every hex run left is either short or one of the marked prefixes.
        for run in d.split(|c: char| !c.is_ascii_hexdigit()) {
            assert!(run.len() <= 12, "a cut hash {run:?} in {d}");
        }
        // Digests only: release names and ports stay as they are.
        assert_eq!(
            shorten_digests("web 2026.11.27 on :3000"),
            "web 2026.11.27 on :3000"
        );
    }

    #[test]
    fn a_halt_report_comes_first_so_the_cut_keeps_it() {
        let halt = crate::rollout::halted_description("web", "1.4.0", &["web-1".into()]);
        let mut outcomes: Vec<(String, Outcome)> = vec![(
            "api".into(),
            Outcome::Errored {
                error: "checksum mismatch for a rather long artifact URL that fills most of the status on its own".into(),
            },
        )];
        outcomes.extend((0..6).map(|i| {
            (
                format!("app{i}"),
                Outcome::Failed {
                    release: "2026.11.27-3".into(),
                    error: "unhealthy".into(),
                    rolled_back_to: Some("2026.11.26-1".into()),
                },
            )
        }));
        outcomes.push((
            "web".into(),
            Outcome::Halted {
                release: "1.4.0".into(),
                description: halt.clone(),
            },
        ));
        let (s, d) = summarize(&outcomes);
        assert_eq!(s, StatusState::Error, "the worst state still wins");
        assert!(d.starts_with(&halt), "{d}");
        assert!(d.chars().count() <= 140);
        assert!(crate::status::has_head(
            &d,
            crate::status::HeadKind::Halt,
            "web",
            "1.4.0"
        ));
        // An older hoist looks for the phrase: it is there, at the start of
        // the text.
        assert!(d.contains("web 1.4.0 halted: web-1 failed"), "{d}");

        // Waiting is pending, and says what for.
        let wait = crate::rollout::waiting_description(
            "web",
            "1.4.0",
            0,
            &["web-1".into()],
            Some(std::time::Duration::from_secs(240)),
        );
        let (s, d) = summarize(&[
            (
                "api".into(),
                Outcome::Unchanged {
                    release: "1".into(),
                },
            ),
            (
                "web".into(),
                Outcome::Waiting {
                    release: "1.4.0".into(),
                    description: wait,
                },
            ),
        ]);
        assert_eq!(s, StatusState::Pending);
        assert_eq!(
            d,
            "[hoist:wait web 1.4.0] web 1.4.0 waits for wave 1 (web-1), 4m left; api unchanged"
        );
    }

    #[test]
    fn the_heads_of_several_apps_come_first_whole_within_140_chars() {
        use crate::status::{Head, HeadKind, heads};
        let long = "2026.11.27-3";
        let mut outcomes: Vec<(String, Outcome)> = vec![
            (
                "worker".into(),
                Outcome::Deployed {
                    release: long.into(),
                    seconds: 2.5,
                },
            ),
            (
                "api".into(),
                Outcome::Halted {
                    release: long.into(),
                    description: crate::rollout::halted_description(
                        "api",
                        long,
                        &["web-1".into(), "web-2".into()],
                    ),
                },
            ),
            (
                "admin".into(),
                Outcome::Pinned {
                    release: "2026.11.20-1".into(),
                },
            ),
            (
                "web".into(),
                Outcome::Waiting {
                    release: long.into(),
                    description: crate::rollout::waiting_description(
                        "web",
                        long,
                        0,
                        &["web-1".into()],
                        None,
                    ),
                },
            ),
        ];
        outcomes.push((
            "cron".into(),
            Outcome::Failed {
                release: long.into(),
                error: "health check http://127.0.0.1:3000/healthz answered 503 for 30s".into(),
                rolled_back_to: Some("2026.11.26-9".into()),
            },
        ));
        let (state, d) = summarize(&outcomes);
        assert_eq!(state, StatusState::Failure);
        assert!(d.chars().count() <= 140, "{d}");
        assert_eq!(
            heads(&d),
            vec![
                Head::new(HeadKind::Halt, "api", long),
                Head::new(HeadKind::Held, "admin", "2026.11.20-1"),
                Head::new(HeadKind::Wait, "web", long),
            ],
            "{d}"
        );
        assert!(
            crate::status::text_after_heads(&d).starts_with("api 2026.11.27-3 halted"),
            "{d}"
        );
        // A release name of 40 hex digits stays whole in its head; only
        // the text shortens digests.
        let hex = "a".repeat(40);
        let (_, d) = summarize(&[(
            "web".into(),
            Outcome::Halted {
                release: hex.clone(),
                description: crate::rollout::halted_description("web", &hex, &["web-1".into()]),
            },
        )]);
        assert_eq!(
            heads(&d),
            vec![Head::new(HeadKind::Halt, "web", &hex)],
            "{d}"
        );
    }

    #[test]
    fn summary_is_at_most_140_chars() {
        let many: Vec<_> = (0..30)
            .map(|i| {
                (
                    format!("app{i}"),
                    Outcome::Deployed {
                        release: "2026.11.27-3".into(),
                        seconds: 1.0,
                    },
                )
            })
            .collect();
        let (_, d) = summarize(&many);
        assert!(d.chars().count() <= 140, "{}", d.len());
    }

    #[test]
    fn a_secret_change_redeploys_the_running_release_and_an_unreadable_one_refuses() {
        let m = manifest("v1", A, "");
        let mut w = World::new(apps(&[("web", m.clone())])).with("web", running("v1", A, &m));
        w.secrets.insert("web".into(), SecretsState::Changed);
        match w.one("c2").decision {
            Decision::Deploy { reuse, why, .. } => {
                assert!(reuse);
                assert_eq!(why, Why::SecretsChanged);
            }
            d => panic!("{d:?}"),
        }
        assert!(w.one("c2").describe().contains("secrets changed"));
        w.secrets.insert(
            "web".into(),
            SecretsState::Refused("x.age: not sealed".into()),
        );
        let p = w.one("c2");
        assert_eq!(
            p.decision,
            Decision::Refused {
                error: "x.age: not sealed".into()
            }
        );
        assert!(!p.acts());
        // A paused app is left alone whatever its secrets say.
        let paused = manifest("v1", A, "paused: true\n");
        let mut w = World::new(apps(&[("web", paused)])).with("web", running("v1", A, &m));
        w.secrets
            .insert("web".into(), SecretsState::Refused("x".into()));
        assert!(matches!(w.one("c2").decision, Decision::Paused { .. }));
    }
}
