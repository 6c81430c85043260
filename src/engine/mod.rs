//! The engine carries out a pass: poll the branch, plan, deploy each app,
//! report. It is split by concern:
//!
//! - this file: the pass, as the orchestrator: which commit, is it
//!   acceptable, what the plan says, carrying out each app's decision
//!   (deploys concurrently, bounded), and the statuses;
//! - `deploy`: one app's deploy as a step machine (SPEC §3);
//! - `switch`: the one routine that changes what runs, journalled, used by
//!   deploys, automatic rollbacks, `hoist rollback` and recovery;
//! - `ledger`: the one owner of state.json, history.jsonl and the metrics,
//!   changed through named transitions;
//! - `rollout`: the gate of fleet rollouts (SPEC §8): whether this
//!   server's wave is open for an app's new release, from the statuses
//!   read back;
//! - `hooks`, `fault`: hooks with a clean environment; the crash tests'
//!   fault points.
//!
//! The engine is built from [`Parts`] made at the edge (`setup`: the daemon
//! and the CLI read the host config and credentials), so its tests can give
//! it an in-memory process manager. All file-system and git work runs on
//! the blocking pool: a pass must never stall `/healthz`, webhooks or the
//! systemd watchdog.

mod deploy;
mod fault;
mod hooks;
pub mod ledger;
mod rollout;
mod secrets;
mod switch;
#[cfg(test)]
mod tests;

pub use fault::{Faults, Step};

use crate::artifact::{Cache, FetchSettings, UnpackLimits};
use crate::config::{AppSet, CommitConfig};
use crate::metrics::Metrics;
use crate::plan::{self, Actual, AppPlan, Decision, Desired, Outcome};
use crate::pm2::{ProcessManager, ProcessWatch};
use crate::release::AppDir;
use crate::report::{self, Reporter, Status};
use crate::signature::{AllowedSigners, TrustedKeys};
use crate::source::{InvalidCommit, Source, SourceError};
use crate::state::{self, Health, Life, Pin, Switch, SwitchWhy, now_rfc3339};
use futures::StreamExt;
use ledger::Ledger;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tracing::{error, info};

/// How many apps of one commit deploy at once. Their health gates mostly
/// wait, and share one process list (`pm2::ProcessWatch`).
const PARALLEL_DEPLOYS: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    State(#[from] state::StateError),
    #[error("{0}")]
    Other(String),
}

/// Runs `f` on the blocking pool (file-system and git work).
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}

/// What the engine needs to know of this server, resolved from the host
/// config at the edge.
#[derive(Debug, Clone)]
pub struct Settings {
    pub host: String,
    pub environment: String,
    pub labels: Vec<String>,
    pub root: PathBuf,
    pub state_dir: PathBuf,
    pub branch: String,
    pub keep_releases: u32,
    /// The `status.context` template.
    pub context: String,
    /// `repo.poll_interval`: rollout gates read statuses no more often.
    pub poll_interval: std::time::Duration,
    pub allowed_signers_file: Option<PathBuf>,
    /// pm2.user: hooks run as the apps do, and the files the apps own
    /// (shared directories, secrets) are handed to it.
    pub pm2_user: Option<Arc<crate::pm2::RunAs>>,
    /// The crash tests' fault points.
    pub faults: Faults,
    /// `identity_file`: opens the apps' sealed secrets. Read when a
    /// secret must be opened, so a key written later needs no restart and
    /// a missing one fails only the apps that have secrets.
    pub identity_file: Option<PathBuf>,
}

/// The engine's providers, built at the edge.
pub struct Parts {
    pub source: Source,
    pub pm: Arc<dyn ProcessManager>,
    pub cache: Cache,
    pub fetch: FetchSettings,
    pub limits: UnpackLimits,
    /// `storage.trusted_keys`: when not empty, every artifact needs a minisign signature.
    pub trusted: TrustedKeys,
    pub reporter: Reporter,
    /// The status provider, to read statuses back (rollout gates).
    pub forge: Arc<dyn report::Provider>,
    pub metrics: Arc<Metrics>,
}

/// What one pass did.
#[derive(Debug, Default)]
pub struct PassReport {
    pub commit: Option<String>,
    pub outcomes: Vec<(String, Outcome)>,
    /// The commit's manifests are invalid (status `error`).
    pub invalid: Option<String>,
    /// Anything to do was done and nothing failed.
    pub converged: bool,
    /// Something was carried out (deploy, removal).
    pub acted: bool,
    /// An app waits for its rollout wave: run a pass again at this moment
    /// when it comes before the next poll (the end of a bake).
    pub next_check: Option<std::time::Instant>,
}

pub struct Engine {
    pub settings: Settings,
    parts: Parts,
    watch: ProcessWatch,
    ledger: tokio::sync::Mutex<Ledger>,
    /// Set on SIGTERM: no app starts a deploy after it.
    pub stop: Arc<AtomicBool>,
    /// The commit `pending` was last posted for.
    pending_posted: std::sync::Mutex<Option<String>>,
    /// The config of the last commit read: a commit's tree never changes,
    /// so an unchanged branch is not read and parsed again at every poll.
    manifests: std::sync::Mutex<Option<(String, Result<CommitConfig, InvalidCommit>)>>,
    /// What each app's sealed secrets were found to be, and from what.
    secrets_seen: std::sync::Mutex<std::collections::HashMap<String, secrets::Seen>>,
    /// Rollout gates: statuses read back, decisions held until they may change.
    rollouts: rollout::Rollouts,
}

impl Engine {
    /// Builds the engine; loads state.json.
    pub async fn new(settings: Settings, parts: Parts) -> Result<Engine, EngineError> {
        let ledger = Ledger::load(settings.state_dir.clone(), parts.metrics.clone()).await?;
        Ok(Engine {
            watch: ProcessWatch::new(parts.pm.clone()),
            ledger: tokio::sync::Mutex::new(ledger),
            stop: Arc::new(AtomicBool::new(false)),
            pending_posted: std::sync::Mutex::new(None),
            manifests: std::sync::Mutex::new(None),
            secrets_seen: std::sync::Mutex::new(std::collections::HashMap::new()),
            rollouts: rollout::Rollouts::default(),
            settings,
            parts,
        })
    }

    pub fn host(&self) -> &str {
        &self.settings.host
    }
    pub fn source(&self) -> &Source {
        &self.parts.source
    }
    pub fn reporter(&self) -> &Reporter {
        &self.parts.reporter
    }
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.parts.metrics
    }

    /// A copy of the state as the ledger holds it.
    pub async fn state(&self) -> state::State {
        self.ledger.lock().await.state().clone()
    }

    fn app_dir(&self, app: &str) -> AppDir {
        AppDir::new(&self.settings.root, app)
    }

    fn per_app_context(&self) -> bool {
        self.settings.context.contains("{app}")
    }

    fn post(&self, sha: &str, state: report::State, app: Option<&str>, description: &str) {
        self.parts.reporter.report(Status {
            sha: sha.to_string(),
            state,
            context: report::render_context(
                &self.settings.context,
                &self.settings.environment,
                &self.settings.host,
                app,
            ),
            // pm2's messages carry terminal colours; a status is plain text.
            description: report::truncate_description(&crate::redact::printable(description)),
        });
    }

    /// At start: opens the outbox of commit statuses, finishes or undoes
    /// what a crash interrupted (every journal entry), then removes staging
    /// and trash leftovers.
    pub async fn recover(&self) -> Result<(), EngineError> {
        // Statuses an earlier hoist could not post are posted now.
        self.parts.reporter.open_outbox().await;
        self.finish_switches().await?;
        let root = self.settings.root.clone();
        // Secrets leftovers belong to pm2.user by now: taken back to remove.
        let owner = self.settings.pm2_user.as_ref().map(|u| u.owner());
        blocking(move || {
            let Ok(rd) = std::fs::read_dir(&root) else {
                return;
            };
            for e in rd.flatten() {
                if let Some(name) = e.file_name().to_str()
                    && !name.starts_with('.')
                    && e.path().is_dir()
                {
                    let dir = AppDir::new(&root, name);
                    for p in dir.clean_leftovers() {
                        info!(app = %name, "removed leftover {}", p.display());
                    }
                    let store = crate::secrets::SecretStore::new(dir.path(), owner);
                    if let Err(e) = store.remove_leftovers() {
                        tracing::warn!(app = %name, "{e}");
                    }
                }
            }
        })
        .await;
        Ok(())
    }

    /// Polls the branch and returns the tip, fetched into the mirror.
    pub async fn poll(&self) -> Result<String, SourceError> {
        let src = self.parts.source.clone();
        blocking(move || src.poll()).await
    }

    /// The manifests and inventory in `commit` (or why the commit is
    /// invalid), read from the mirror once per commit.
    pub async fn manifests_at(
        &self,
        commit: &str,
    ) -> Result<Result<CommitConfig, InvalidCommit>, SourceError> {
        if let Some((c, read)) = &*lock(&self.manifests)
            && c == commit
        {
            return Ok(read.clone());
        }
        let src = self.parts.source.clone();
        let c = commit.to_string();
        let read = blocking(move || src.manifests_at(&c)).await?;
        *lock(&self.manifests) = Some((commit.to_string(), read.clone()));
        Ok(read)
    }

    /// What the next pass would do, without doing it.
    pub async fn plan_for(
        &self,
        commit: &str,
        config: &CommitConfig,
    ) -> Result<Vec<AppPlan>, EngineError> {
        Ok(self.plan_with(commit, config).await?.0)
    }

    /// The plan, and each app's secrets at the commit.
    async fn plan_with(
        &self,
        commit: &str,
        config: &CommitConfig,
    ) -> Result<(Vec<AppPlan>, BTreeMap<String, secrets::Wanted>), EngineError> {
        let apps = &config.apps;
        let labels = self.labels_for(config.inventory.as_ref());
        let here: Vec<(String, crate::config::Manifest)> = apps
            .iter()
            .filter(|(_, m)| m.targets_host(&self.settings.host, &labels))
            .map(|(a, m)| (a.to_string(), m.clone()))
            .collect();
        let wanted = self
            .secrets_at(commit, &here, config.inventory.as_ref())
            .await?;
        let secrets: BTreeMap<String, plan::SecretsState> = wanted
            .iter()
            .filter_map(|(a, w)| w.state().map(|s| (a.clone(), s)))
            .collect();
        let state = self.state().await;
        let mut names: BTreeSet<String> = apps.keys().map(|a| a.to_string()).collect();
        names.extend(state.apps.keys().cloned());
        let root = self.settings.root.clone();
        let on_disk: BTreeMap<String, BTreeSet<String>> = blocking(move || {
            names
                .into_iter()
                .map(|a| {
                    let r = AppDir::new(&root, &a).list_releases();
                    (a, r)
                })
                .collect()
        })
        .await;
        let plans = plan::plan(
            &Desired {
                commit,
                apps,
                host: &self.settings.host,
                labels: &labels,
                secrets: &secrets,
            },
            &Actual {
                state: &state,
                on_disk: &on_disk,
            },
        );
        Ok((plans, wanted))
    }

    /// One poll-and-apply pass.
    pub async fn pass(&self) -> Result<PassReport, EngineError> {
        // A way back that broke in an earlier pass is finished first.
        self.finish_switches().await?;
        let tip = match self.poll().await {
            Ok(t) => t,
            Err(e) => {
                self.parts.metrics.poll(false);
                return Err(e.into());
            }
        };
        self.parts.metrics.poll(true);
        self.apply_commit(&tip).await
    }

    /// Applies one commit of the branch to this server.
    pub async fn apply_commit(&self, tip: &str) -> Result<PassReport, EngineError> {
        let mut report = PassReport {
            commit: Some(tip.to_string()),
            ..PassReport::default()
        };
        let last_commit = self.ledger.lock().await.state().last_commit.clone();
        let new_commit = last_commit.as_deref() != Some(tip);
        if let Err(msg) = self.check_commit_signature(tip).await? {
            return self
                .refuse_commit(tip, new_commit, "is refused", msg, report)
                .await;
        }
        let config = match self.manifests_at(tip).await? {
            Ok(config) => config,
            Err(invalid) => {
                let msg = invalid.to_string();
                return self
                    .refuse_commit(tip, new_commit, "cannot be applied", msg, report)
                    .await;
            }
        };
        if let Some(msg) = self.context_refusal(&config) {
            return self
                .refuse_commit(tip, new_commit, "cannot be applied", msg, report)
                .await;
        }
        let (plans, wanted) = self.plan_with(tip, &config).await?;
        self.check_rollouts(tip, &config, &plans).await?;
        let apps = config.apps;
        let acting = plans.iter().any(AppPlan::acts);
        if !acting && !new_commit {
            report.converged = plans.iter().all(|p| {
                !matches!(
                    p.decision,
                    Decision::HeldAfterFailure { .. } | Decision::Conflict { .. }
                )
            });
            return Ok(report);
        }
        if new_commit {
            let src = self.parts.source.clone();
            let c = tip.to_string();
            let summary = blocking(move || src.summary(&c)).await;
            info!(commit = %tip, summary = %summary.unwrap_or_default(), "new commit on {}", self.settings.branch);
        }
        let mut deploying: Vec<&str> = Vec::new();
        for p in &plans {
            if matches!(p.decision, Decision::Deploy { .. })
                && self.rollout_lets_go(&p.app, tip).await
            {
                deploying.push(p.app.as_str());
            }
        }
        let waiting = self.rollout_waits(tip).await;
        // `pending` once per commit: a deploy tried again on a later poll of
        // the same commit (after a transient fault or a fixable refusal), or
        // an app waiting for its rollout wave, must not flip the commit's
        // status back and forth.
        let post_pending = !(deploying.is_empty() && waiting.is_empty()) && {
            let mut posted = lock(&self.pending_posted);
            let first = posted.as_deref() != Some(tip);
            *posted = Some(tip.to_string());
            first
        };
        if post_pending {
            let desc = format!("deploying {}", deploying.join(", "));
            if self.per_app_context() {
                for a in &deploying {
                    self.post(tip, report::State::Pending, Some(a), &desc);
                }
                for (a, wait) in &waiting {
                    self.post(tip, report::State::Pending, Some(a), wait);
                }
            } else {
                let mut parts: Vec<&str> = waiting.iter().map(|(_, w)| w.as_str()).collect();
                if !deploying.is_empty() {
                    parts.push(&desc);
                }
                let desc = crate::status::compose(parts, str::to_string);
                self.post(tip, report::State::Pending, None, &desc);
            }
        }
        let runs: Vec<_> = plans
            .iter()
            .map(|p| self.run_plan(p, tip, &apps, &wanted))
            .collect();
        let results: Vec<(String, Result<Outcome, EngineError>)> = futures::stream::iter(runs)
            .buffered(PARALLEL_DEPLOYS)
            .filter_map(|(app, r)| async move { r.map(|r| (app, r)) })
            .collect()
            .await;
        let stopped = results.len() < plans.len();
        let mut first_error = None;
        for (app, r) in results {
            match r {
                Ok(outcome) => {
                    info!(app = %app, "{}", describe_outcome(&outcome));
                    report.outcomes.push((app, outcome));
                }
                Err(e) => {
                    error!(app = %app, "{e}");
                    first_error.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        if stopped {
            return Ok(report);
        }
        report.acted = acting;
        report.next_check = self.rollout_next_check(tip).await;
        report.converged = report.outcomes.iter().all(|(_, o)| {
            matches!(
                o,
                Outcome::Deployed { .. }
                    | Outcome::Unchanged { .. }
                    | Outcome::Paused
                    | Outcome::Pinned { .. }
                    | Outcome::Removed
            )
        });
        // Statuses: one per context, unless this pass over the commit only
        // repeats what the last one said (an app still held by its rollout).
        if !self.rollout_quiet(tip, &report.outcomes).await {
            if self.per_app_context() {
                for (app, o) in &report.outcomes {
                    if matches!(o, Outcome::Removed) {
                        continue;
                    }
                    let (st, desc) = plan::summarize(&[(app.clone(), o.clone())]);
                    self.post(tip, st, Some(app), &desc);
                }
            } else {
                let (st, desc) = plan::summarize(&report.outcomes);
                self.post(tip, st, None, &desc);
            }
        }
        let transient = report
            .outcomes
            .iter()
            .any(|(_, o)| matches!(o, Outcome::Transient { .. }));
        if !transient {
            self.ledger.lock().await.commit_done(tip).await?;
        }
        Ok(report)
    }

    /// A commit refused whole (bad signature, invalid manifests): status
    /// `error` and a history entry the first time it is seen, and marked as
    /// seen so later polls do not report it again.
    async fn refuse_commit(
        &self,
        tip: &str,
        new_commit: bool,
        why: &str,
        msg: String,
        mut report: PassReport,
    ) -> Result<PassReport, EngineError> {
        if new_commit {
            error!(commit = %tip, "the commit {why}: {msg}");
            self.post(tip, report::State::Error, None, &msg);
            self.ledger.lock().await.commit_refused(tip, &msg).await?;
        }
        report.invalid = Some(msg);
        Ok(report)
    }

    /// One app's decision, unless hoist is stopping (then None: the rest
    /// waits for the next start).
    async fn run_plan(
        &self,
        p: &AppPlan,
        tip: &str,
        apps: &AppSet,
        secrets: &BTreeMap<String, secrets::Wanted>,
    ) -> (String, Option<Result<Outcome, EngineError>>) {
        if self.stop.load(Ordering::SeqCst) {
            return (p.app.clone(), None);
        }
        let wanted = secrets
            .get(&p.app)
            .cloned()
            .unwrap_or(secrets::Wanted::None);
        (
            p.app.clone(),
            Some(self.carry_out(p, tip, apps, wanted).await),
        )
    }

    async fn carry_out(
        &self,
        p: &AppPlan,
        commit: &str,
        apps: &AppSet,
        secrets: secrets::Wanted,
    ) -> Result<Outcome, EngineError> {
        if p.acts()
            && let Some(sw) = self
                .ledger
                .lock()
                .await
                .app(&p.app)
                .and_then(|s| s.switch.clone())
        {
            // What runs is not settled: nothing else may change it first.
            return Ok(Outcome::Transient {
                error: format!(
                    "an interrupted {} is not finished yet (see the log)",
                    sw.why.name()
                ),
            });
        }
        if p.unpin {
            self.ledger.lock().await.unpinned(&p.app, commit).await?;
        }
        let manifest = apps
            .iter()
            .find(|(a, _)| a.as_str() == p.app)
            .map(|(_, m)| m);
        Ok(match &p.decision {
            Decision::Deploy {
                release,
                sha256,
                from,
                reuse,
                ..
            } => {
                let Some(m) = manifest else {
                    return Ok(Outcome::Errored {
                        error: "manifest vanished".into(),
                    });
                };
                if let Some(held) = self.rollout_hold(&p.app, commit).await {
                    return Ok(held);
                }
                self.deploy(deploy::Job {
                    app: &p.app,
                    manifest: m,
                    release,
                    sha256,
                    from: from.as_deref(),
                    reuse: *reuse,
                    commit,
                    secrets,
                })
                .await?
            }
            Decision::Unchanged { release } => Outcome::Unchanged {
                release: release.clone(),
            },
            Decision::Paused { .. } => Outcome::Paused,
            Decision::Pinned { release, .. } => Outcome::Pinned {
                release: release.clone(),
            },
            Decision::HeldAfterFailure { release, .. } => Outcome::Held {
                release: release.clone(),
            },
            Decision::Conflict {
                release,
                wanted_sha256,
                ..
            } => {
                let error = format!(
                    "release {release} is already on this server with different content; publish the new build under a new release name"
                );
                let failed = state::Failed {
                    commit: commit.to_string(),
                    release: release.clone(),
                    sha256: wanted_sha256.clone(),
                    error: error.clone(),
                    at: now_rfc3339(),
                };
                self.ledger
                    .lock()
                    .await
                    .refused(&p.app, failed, false)
                    .await?;
                Outcome::Errored { error }
            }
            Decision::Refused { error } => {
                let release = manifest.map(|m| m.release.to_string()).unwrap_or_default();
                let mut ledger = self.ledger.lock().await;
                let st = ledger.app(&p.app);
                // Said once while it stays the same, not at every poll.
                if st.and_then(|s| s.last_error.as_deref()) != Some(error.as_str()) {
                    error!(app = %p.app, "{error}");
                    let failed = state::Failed {
                        commit: commit.to_string(),
                        sha256: manifest
                            .map(|m| m.artifact.sha256.lower())
                            .unwrap_or_default(),
                        release,
                        error: error.clone(),
                        at: now_rfc3339(),
                    };
                    ledger.refused(&p.app, failed, false).await?;
                }
                Outcome::Errored {
                    error: error.clone(),
                }
            }
            Decision::Remove { processes } => {
                let mut names = processes.clone();
                let running = {
                    let ledger = self.ledger.lock().await;
                    ledger
                        .app(&p.app)
                        .map(|s| s.processes())
                        .unwrap_or_default()
                };
                names.extend(running);
                names.sort();
                names.dedup();
                if let Err(e) = self.watch.manager().delete(&names).await {
                    return Ok(Outcome::Transient {
                        error: format!("cannot delete its pm2 processes: {e}"),
                    });
                }
                self.ledger.lock().await.removed(&p.app, commit).await?;
                Outcome::Removed
            }
        })
    }

    /// With `repo.allowed_signers_file`, the commit must be signed by one of
    /// its keys. Ok(Err(reason)) refuses the commit (status `error`); Err is
    /// a fault of this server (the file or the mirror cannot be read).
    pub async fn check_commit_signature(
        &self,
        commit: &str,
    ) -> Result<Result<(), String>, EngineError> {
        let Some(file) = self.settings.allowed_signers_file.clone() else {
            return Ok(Ok(()));
        };
        let src = self.parts.source.clone();
        let c = commit.to_string();
        let (signers, signed) = blocking(move || {
            let signers = AllowedSigners::load(&file).map_err(EngineError::Other)?;
            let signed = src.commit_signature(&c)?;
            Ok::<_, EngineError>((signers, signed))
        })
        .await?;
        let short = &commit[..commit.len().min(12)];
        Ok(match signed {
            None => Err(format!(
                "commit {short} is not signed, and repo.allowed_signers_file requires a signature"
            )),
            Some((sig, data)) => match signers.verify(&sig, &data) {
                Ok(who) => {
                    tracing::debug!(commit = %commit, "signed by {who}");
                    Ok(())
                }
                Err(why) => Err(format!("commit {short} is refused: {why}")),
            },
        })
    }

    /// `hoist retry APP`: forget the failure so the next pass tries again.
    pub async fn retry(&self, app: &str) -> Result<String, String> {
        let f = self.ledger.lock().await.retry(app).await?;
        Ok(format!("{app}: {} will be tried again", f.release))
    }

    /// `hoist rollback APP [--to RELEASE]`: an emergency local rollback to a
    /// kept release, through the journalled switch. The app stays there
    /// until the branch changes its release.
    pub async fn rollback(&self, app: &str, to: Option<&str>) -> Result<String, String> {
        let st = self
            .ledger
            .lock()
            .await
            .app(app)
            .cloned()
            .ok_or_else(|| format!("app {app} has never been deployed on this server"))?;
        let current = st
            .live()
            .cloned()
            .ok_or_else(|| format!("app {app} has no current release"))?;
        let dir = self.app_dir(app);
        let target = match to {
            Some(t) => {
                crate::config::ReleaseName::new(t).map_err(|m| format!("--to: {m}"))?;
                let known = st.releases.get(t);
                let manifest = known
                    .and_then(|k| k.manifest.clone())
                    .or_else(|| {
                        st.previous
                            .as_ref()
                            .filter(|p| p.release == t)
                            .map(|p| p.manifest.clone())
                    })
                    .unwrap_or_else(|| current.manifest.clone());
                let sha256 = known.map(|k| k.sha256.clone()).unwrap_or_default();
                // Secrets go with the release when it ran before with them.
                let secrets = st
                    .previous
                    .as_ref()
                    .filter(|p| p.release == t)
                    .and_then(|p| p.secrets.clone())
                    .or_else(|| current.secrets.clone());
                state::Live {
                    release: t.to_string(),
                    sha256,
                    secrets,
                    manifest,
                }
            }
            None => st.previous.clone().ok_or_else(|| {
                format!("app {app} has no previous release to roll back to; name one with --to")
            })?,
        };
        if target.release == current.release && target.secrets == current.secrets {
            return Err(format!("{app} already runs {}", target.release));
        }
        let release_dir = dir.release(&target.release);
        let present = blocking(move || release_dir.is_dir()).await;
        if !present {
            let d = dir.clone();
            let kept: Vec<String> = blocking(move || d.list_releases())
                .await
                .into_iter()
                .collect();
            return Err(format!(
                "release {} of {app} is not on this server (kept: {})",
                target.release,
                kept.join(", ")
            ));
        }
        let linked_as = st
            .releases
            .get(&target.release)
            .and_then(|k| k.manifest.as_ref());
        if target.release == current.release
            && linked_as.is_some_and(|m| m.shared != target.manifest.shared)
        {
            return Err(format!(
                "{app} runs {} with other shared paths; deploy it from the branch instead",
                target.release
            ));
        }
        let wish = st.failed.as_ref();
        let pin = Pin {
            desired_release: wish
                .map(|f| f.release.clone())
                .or(Some(current.release.clone())),
            desired_sha256: wish
                .map(|f| f.sha256.clone())
                .or(Some(current.sha256.clone())),
            at: now_rfc3339(),
        };
        let sw = Switch {
            why: SwitchWhy::Rollback { pin },
            from: Some(current.clone()),
            to: Some(target.clone()),
            exchange: None,
            started: now_rfc3339(),
        };
        self.ledger
            .lock()
            .await
            .begin(app, sw.clone())
            .await
            .map_err(|e| e.to_string())?;
        let finished = self
            .finish(app, &sw)
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| {
                format!("the rollback of {app} could not change the links: {e}; it is finished at the next pass")
            })?;
        let health = self.ledger.lock().await.app(app).map(|s| s.life.clone());
        let to_name = finished.unwrap_or_else(|| target.release.clone());
        match health {
            Some(Life::Running {
                health: Health::Unhealthy(e),
                ..
            }) => Err(format!(
                "{app} rolled back from {} to {to_name}, but it is not healthy: {e}",
                current.release
            )),
            _ => Ok(format!(
                "{app} rolled back from {} to {to_name}; it stays there until the branch changes its release",
                current.release
            )),
        }
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn describe_outcome(o: &Outcome) -> String {
    match o {
        Outcome::Deployed { release, seconds } => format!("{release} live in {seconds:.1}s"),
        Outcome::Unchanged { release } => format!("unchanged ({release})"),
        Outcome::Paused => "paused".into(),
        Outcome::Pinned { release } => format!("held at {release} by a local rollback"),
        Outcome::Failed {
            release,
            error,
            rolled_back_to,
        } => format!(
            "{release} failed: {error}; {}",
            rolled_back_to
                .as_deref()
                .map(|p| format!("rolled back to {p}"))
                .unwrap_or_else(|| "stopped".into())
        ),
        Outcome::Held { release } => {
            format!("{release} failed earlier on this commit; not retried")
        }
        Outcome::Errored { error } => format!("cannot apply: {error}"),
        Outcome::Transient { error } => format!("will retry: {error}"),
        Outcome::Removed => "removed from this server".into(),
        Outcome::Waiting { description, .. } | Outcome::Halted { description, .. } => {
            description.clone()
        }
    }
}

#[allow(dead_code)]
fn _assert_send(e: &Engine) -> impl Send + '_ {
    // The pass must be Send so the daemon can run it beside its listeners.
    async move {
        let _ = e.pass().await;
    }
}
