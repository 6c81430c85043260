//! The engine carries out a pass: poll the branch, plan, deploy each app,
//! report. It owns the in-memory state and writes it to disk after every
//! step that changes the server, so a crash at any point can be finished or
//! undone by `recover` on the next start.
//!
//! Deploying one app follows SPEC §3 step by step; each step is named
//! (`Step`) so that a fault can be injected there (`HOIST_FAULT_AT`) and the
//! crash-consistency tests can kill hoist at every step.

use crate::artifact::{self, Cache, FetchSettings, S3Settings, UnpackLimits};
use crate::config::{AppSet, HostConfig, Manifest, ProviderName};
use crate::metrics::Metrics;
use crate::plan::{self, Actual, AppPlan, Decision, Desired, Outcome};
use crate::pm2::{self, Pm2};
use crate::release::{AppDir, releases_to_prune};
use crate::report::{self, ProviderKind, ProviderSettings, Reporter, Status};
use crate::signature::{AllowedSigners, TrustedKeys};
use crate::source::{InvalidCommit, Source, SourceError};
use crate::state::{self, Event, Failed, KnownRelease, Pending, State, now_rfc3339};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::{error, info, warn};

/// The named steps of one deploy, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Download,
    Unpack,
    Link,
    Hooks,
    Swap,
    Reload,
    Health,
    StateWrite,
}

impl Step {
    pub fn name(self) -> &'static str {
        match self {
            Step::Download => "download",
            Step::Unpack => "unpack",
            Step::Link => "link",
            Step::Hooks => "hooks",
            Step::Swap => "swap",
            Step::Reload => "reload",
            Step::Health => "health",
            Step::StateWrite => "state-write",
        }
    }
}

/// Test hook: `HOIST_FAULT_AT=<step>` aborts the process (as a crash would)
/// right after that step completes. Used by the crash-consistency tests.
fn fault_point(step: Step) {
    if let Ok(v) = std::env::var("HOIST_FAULT_AT")
        && v == step.name()
    {
        eprintln!("hoist: HOIST_FAULT_AT={v}: aborting after step {v}");
        std::process::abort();
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(transparent)]
    State(#[from] state::StateError),
    #[error("{0}")]
    Other(String),
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
}

pub struct Engine {
    pub cfg: HostConfig,
    pub host: String,
    pub environment: String,
    pub state: State,
    pub source: Source,
    pub pm2: Pm2,
    cache: Cache,
    fetch: FetchSettings,
    limits: UnpackLimits,
    /// `storage.trusted_keys`: when not empty, every artifact needs a minisign signature.
    trusted: TrustedKeys,
    pub reporter: Reporter,
    pub metrics: Arc<Metrics>,
    /// Set on SIGTERM: the pass stops between apps.
    pub stop: Arc<std::sync::atomic::AtomicBool>,
    /// The commit `pending` was last posted for.
    pending_posted: Option<String>,
    /// The manifests of the last commit read: a commit's tree never changes,
    /// so an unchanged branch is not read and parsed again at every poll.
    manifests: Option<(String, Result<AppSet, InvalidCommit>)>,
}

fn read_secret(path: &Option<PathBuf>, key: &str) -> Result<Option<String>, String> {
    match path {
        None => Ok(None),
        Some(p) => std::fs::read_to_string(p)
            .map(|s| Some(s.trim().to_string()))
            .map_err(|e| format!("cannot read {key} {}: {e}", p.display())),
    }
}

impl Engine {
    /// Builds the engine from a validated host config. Errors are one
    /// sentence naming the key or file.
    pub fn new(cfg: HostConfig, metrics: Arc<Metrics>) -> Result<Engine, EngineError> {
        std::fs::create_dir_all(&cfg.state_dir).map_err(|e| {
            EngineError::Other(format!(
                "cannot create state_dir {}: {e}",
                cfg.state_dir.display()
            ))
        })?;
        std::fs::create_dir_all(&cfg.root).map_err(|e| {
            EngineError::Other(format!("cannot create root {}: {e}", cfg.root.display()))
        })?;
        let state = State::load(&cfg.state_dir)?;
        crate::redact::warn_about_exposed_secrets(&cfg);
        let trusted = TrustedKeys::parse(&cfg.storage.trusted_keys).map_err(EngineError::Other)?;
        let s3 = match &cfg.storage.s3 {
            Some(s) => Some(S3Settings {
                endpoint: s.endpoint.clone(),
                region: s.region.clone(),
                access_key_id: read_secret(&s.access_key_id_file, "storage.s3.access_key_id_file")
                    .map_err(EngineError::Other)?,
                secret_access_key: read_secret(
                    &s.secret_access_key_file,
                    "storage.s3.secret_access_key_file",
                )
                .map_err(EngineError::Other)?,
            }),
            None => None,
        };
        let fetch = FetchSettings {
            allow_http: cfg.allow_http,
            ca_file: cfg.ca_file.clone(),
            s3,
        };
        let provider = build_provider(&cfg).map_err(EngineError::Other)?;
        let reporter = Reporter::spawn(provider, Some(cfg.state_dir.join("statuses-posted.json")));
        Ok(Engine {
            host: cfg.host_name(),
            environment: cfg.environment_name(),
            source: Source::new(&cfg),
            pm2: Pm2::new(&cfg.pm2.command, cfg.pm2.home.clone(), &cfg.state_dir),
            cache: Cache::new(cfg.state_dir.join("cache")),
            fetch,
            limits: UnpackLimits {
                max_bytes: cfg.limits.max_unpacked_size.0,
                max_entries: cfg.limits.max_entries,
            },
            trusted,
            reporter,
            metrics,
            stop: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            pending_posted: None,
            manifests: None,
            state,
            cfg,
        })
    }

    fn app_dir(&self, app: &str) -> AppDir {
        AppDir::new(&self.cfg.root, app)
    }

    fn save(&self) -> Result<(), EngineError> {
        self.state.save(&self.cfg.state_dir)?;
        Ok(())
    }

    fn history(&self, ev: Event) {
        if let Err(e) = state::append_history(&self.cfg.state_dir, &ev) {
            warn!("cannot append to the history: {e}");
        }
    }

    fn per_app_context(&self) -> bool {
        self.cfg.status.context.contains("{app}")
    }

    fn context(&self, app: Option<&str>) -> String {
        report::render_context(&self.cfg.status.context, &self.environment, &self.host, app)
    }

    fn post(&self, sha: &str, state: report::State, app: Option<&str>, description: &str) {
        self.reporter.report(Status {
            sha: sha.to_string(),
            state,
            context: self.context(app),
            description: report::truncate_description(description),
        });
    }

    /// Finishes or undoes what a crash interrupted: a deploy whose swap
    /// happened but whose health gate did not pass goes back to the release
    /// before it; staging and trash directories are removed.
    pub async fn recover(&mut self) -> Result<(), EngineError> {
        let apps: Vec<String> = self.state.apps.keys().cloned().collect();
        for app in &apps {
            let dir = self.app_dir(app);
            for p in dir.clean_leftovers() {
                info!(app = %app, "removed leftover {}", p.display());
            }
            let Some(pending) = self.state.apps[app].pending.clone() else {
                continue;
            };
            let st = self.state.apps[app].clone();
            let on_current = dir.current_release();
            warn!(app = %app, release = %pending.release, "an interrupted deploy is undone");
            if on_current.as_deref() == Some(pending.release.as_str())
                && st.release.as_deref() != Some(pending.release.as_str())
            {
                match (&st.release, &st.manifest) {
                    (Some(prev), Some(m)) if dir.release(prev).is_dir() => {
                        dir.activate(prev)
                            .map_err(|e| EngineError::Other(e.to_string()))?;
                        if let Err(e) = self.pm2.start_or_reload(app, &dir.current(), prev, m).await
                        {
                            error!(app = %app, "reloading {prev} after an interrupted deploy failed: {e}");
                        }
                    }
                    _ => {
                        let names = self.state.apps[app]
                            .releases
                            .get(&pending.release)
                            .and_then(|k| k.manifest.as_ref())
                            .map(Manifest::process_names)
                            .unwrap_or_default();
                        let _ = self.pm2.delete(&names).await;
                        dir.deactivate()
                            .map_err(|e| EngineError::Other(e.to_string()))?;
                    }
                }
            }
            self.state.app_mut(app).pending = None;
            self.save()?;
            self.history(
                Event::new("recover")
                    .app(app)
                    .release(&pending.release)
                    .commit(&pending.commit)
                    .message("an interrupted deploy was undone; it is tried again"),
            );
        }
        // An app directory with leftovers but no state entry (a crash before
        // its first state write) is cleaned too.
        if let Ok(rd) = std::fs::read_dir(&self.cfg.root) {
            for e in rd.flatten() {
                if let Some(name) = e.file_name().to_str()
                    && !self.state.apps.contains_key(name)
                    && e.path().is_dir()
                {
                    self.app_dir(name).clean_leftovers();
                }
            }
        }
        Ok(())
    }

    /// Polls the branch and returns the tip, fetched into the mirror.
    pub async fn poll(&self) -> Result<String, SourceError> {
        let src = self.source.clone();
        tokio::task::spawn_blocking(move || src.poll())
            .await
            .unwrap_or_else(|e| {
                Err(SourceError::Mirror {
                    path: PathBuf::new(),
                    message: e.to_string(),
                })
            })
    }

    /// The manifests in `commit` (or why the commit is invalid), read from
    /// the mirror once per commit.
    pub async fn manifests_at(
        &mut self,
        commit: &str,
    ) -> Result<Result<AppSet, InvalidCommit>, SourceError> {
        if let Some((c, read)) = &self.manifests
            && c == commit
        {
            return Ok(read.clone());
        }
        let src = self.source.clone();
        let c = commit.to_string();
        let read = tokio::task::spawn_blocking(move || src.manifests_at(&c))
            .await
            .unwrap_or_else(|e| {
                Err(SourceError::Mirror {
                    path: PathBuf::new(),
                    message: e.to_string(),
                })
            })?
            .map(|config| config.apps);
        self.manifests = Some((commit.to_string(), read.clone()));
        Ok(read)
    }

    fn on_disk(&self, apps: &AppSet) -> BTreeMap<String, BTreeSet<String>> {
        let mut names: BTreeSet<String> = apps.keys().map(|a| a.to_string()).collect();
        names.extend(self.state.apps.keys().cloned());
        names
            .into_iter()
            .map(|a| {
                let r = self.app_dir(&a).list_releases();
                (a, r)
            })
            .collect()
    }

    /// What the next pass would do, without doing it.
    pub fn plan_for(&self, commit: &str, apps: &AppSet) -> Vec<AppPlan> {
        let on_disk = self.on_disk(apps);
        plan::plan(
            &Desired {
                commit,
                apps,
                host: &self.host,
                labels: &self.cfg.labels,
            },
            &Actual {
                state: &self.state,
                on_disk: &on_disk,
            },
        )
    }

    /// One poll-and-apply pass.
    pub async fn pass(&mut self) -> Result<PassReport, EngineError> {
        let tip = match self.poll().await {
            Ok(t) => t,
            Err(e) => {
                self.metrics.poll(false);
                return Err(e.into());
            }
        };
        self.metrics.poll(true);
        self.apply_commit(&tip).await
    }

    /// Applies one commit of the branch to this server.
    pub async fn apply_commit(&mut self, tip: &str) -> Result<PassReport, EngineError> {
        let mut report = PassReport {
            commit: Some(tip.to_string()),
            ..PassReport::default()
        };
        let new_commit = self.state.last_commit.as_deref() != Some(tip);
        if let Err(msg) = self.check_commit_signature(tip).await? {
            return self.refuse_commit(tip, new_commit, "is refused", msg, report);
        }
        let apps = match self.manifests_at(tip).await? {
            Ok(apps) => apps,
            Err(invalid) => {
                let msg = invalid.to_string();
                return self.refuse_commit(tip, new_commit, "cannot be applied", msg, report);
            }
        };
        let plans = self.plan_for(tip, &apps);
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
            info!(commit = %tip, summary = %self.source.summary(tip).unwrap_or_default(), "new commit on {}", self.cfg.repo.branch);
        }
        let deploying: Vec<&str> = plans
            .iter()
            .filter(|p| matches!(p.decision, Decision::Deploy { .. }))
            .map(|p| p.app.as_str())
            .collect();
        // `pending` once per commit: a deploy tried again on a later poll of
        // the same commit (after a transient fault or a fixable refusal) must
        // not flip the commit's status back and forth.
        if !deploying.is_empty() && self.pending_posted.as_deref() != Some(tip) {
            self.pending_posted = Some(tip.to_string());
            let desc = format!("deploying {}", deploying.join(", "));
            if self.per_app_context() {
                for a in &deploying {
                    self.post(tip, report::State::Pending, Some(a), &desc);
                }
            } else {
                self.post(tip, report::State::Pending, None, &desc);
            }
        }
        for p in &plans {
            if self.stop.load(std::sync::atomic::Ordering::SeqCst) {
                // Stopping: the rest waits for the next start.
                self.save()?;
                return Ok(report);
            }
            let outcome = self.carry_out(p, tip, &apps).await?;
            info!(app = %p.app, "{}", describe_outcome(&outcome));
            report.outcomes.push((p.app.clone(), outcome));
        }
        report.acted = acting;
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
        // Statuses: one per context.
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
        let transient = report
            .outcomes
            .iter()
            .any(|(_, o)| matches!(o, Outcome::Transient { .. }));
        if !transient {
            self.state.last_commit = Some(tip.to_string());
        }
        self.save()?;
        Ok(report)
    }

    /// A commit refused whole (bad signature, invalid manifests): status
    /// `error` and a history entry the first time it is seen, and marked as
    /// seen so later polls do not report it again.
    fn refuse_commit(
        &mut self,
        tip: &str,
        new_commit: bool,
        why: &str,
        msg: String,
        mut report: PassReport,
    ) -> Result<PassReport, EngineError> {
        if new_commit {
            error!(commit = %tip, "the commit {why}: {msg}");
            self.post(tip, report::State::Error, None, &msg);
            self.history(Event::new("error").commit(tip).message(msg.clone()));
            self.state.last_commit = Some(tip.to_string());
            self.save()?;
        }
        report.invalid = Some(msg);
        Ok(report)
    }

    async fn carry_out(
        &mut self,
        p: &AppPlan,
        commit: &str,
        apps: &AppSet,
    ) -> Result<Outcome, EngineError> {
        if p.unpin {
            self.state.app_mut(&p.app).pinned = None;
            self.save()?;
            self.history(Event::new("unpin").app(&p.app).commit(commit));
        }
        let manifest = apps
            .iter()
            .find(|(a, _)| a.as_str() == p.app)
            .map(|(_, m)| m.clone());
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
                self.deploy(&p.app, &m, release, sha256, from.as_deref(), *reuse, commit)
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
            Decision::Conflict { release, .. } => {
                let error = format!(
                    "release {release} is already on this server with different content; publish the new build under a new release name"
                );
                self.state.app_mut(&p.app).last_error = Some(error.clone());
                self.history(
                    Event::new("error")
                        .app(&p.app)
                        .release(release)
                        .commit(commit)
                        .message(error.clone()),
                );
                self.metrics.deploy(&p.app, "error", 0.0);
                Outcome::Errored { error }
            }
            Decision::Remove { processes } => {
                let mut names = processes.clone();
                if let Some(m) = self
                    .state
                    .apps
                    .get(&p.app)
                    .and_then(|s| s.manifest.as_ref())
                {
                    names.extend(m.process_names());
                }
                names.sort();
                names.dedup();
                if let Err(e) = self.pm2.delete(&names).await {
                    return Ok(Outcome::Transient {
                        error: format!("cannot delete its pm2 processes: {e}"),
                    });
                }
                let st = self.state.app_mut(&p.app);
                st.removed = true;
                st.processes.clear();
                st.pinned = None;
                self.save()?;
                self.metrics.set_current_release(&p.app, None);
                self.history(
                    Event::new("remove")
                        .app(&p.app)
                        .commit(commit)
                        .message("processes deleted; files kept"),
                );
                Outcome::Removed
            }
        })
    }

    fn keep_for(&self, m: &Manifest) -> usize {
        m.keep_releases.unwrap_or(self.cfg.keep_releases).max(1) as usize
    }

    /// Deploys one app (SPEC §3 steps 1–8).
    #[allow(clippy::too_many_arguments)]
    async fn deploy(
        &mut self,
        app: &str,
        m: &Manifest,
        release: &str,
        sha256: &str,
        from: Option<&str>,
        reuse: bool,
        commit: &str,
    ) -> Result<Outcome, EngineError> {
        let t0 = Instant::now();
        let dir = self.app_dir(app);
        info!(app, release, from = from.unwrap_or("-"), reuse, "deploying");
        if let Err(e) = dir.ensure_layout() {
            return Ok(self.transient(app, e.to_string()));
        }

        // 1–2. Fetch and unpack, unless the release is already on disk. The
        // staging directory becomes the release only once the sha256 (and
        // the signature) are checked. Without `storage.trusted_keys` the
        // unpack runs while the bytes arrive; with it, nothing is unpacked
        // before the signature is checked.
        if !reuse {
            let staging = dir.new_staging(release);
            let verify_first = !self.trusted.is_empty();
            let unpack_into = (!verify_first).then_some(staging.as_path());
            let path = match self
                .fetch_artifact(app, &m.artifact.url, sha256, unpack_into)
                .await
            {
                Ok(p) => p,
                Err(e) => return Ok(self.artifact_failed(app, release, sha256, commit, e)),
            };
            if let Err(e) = self.check_artifact_signature(m, &path).await {
                let _ = std::fs::remove_dir_all(&staging);
                return Ok(self.artifact_failed(app, release, sha256, commit, e));
            }
            if verify_first {
                // Now cached: this unpacks from the cache, without the network.
                let unpacked = self
                    .fetch_artifact(app, &m.artifact.url, sha256, Some(&staging))
                    .await;
                if let Err(e) = unpacked {
                    return Ok(self.artifact_failed(app, release, sha256, commit, e));
                }
            }
            fault_point(Step::Download);
            if let Err(e) = dir.install(&staging, release) {
                let _ = std::fs::remove_dir_all(&staging);
                return Ok(self.transient(app, e.to_string()));
            }
            fault_point(Step::Unpack);
        }
        let seq = self.state.next_seq();
        self.state.app_mut(app).releases.insert(
            release.to_string(),
            KnownRelease {
                sha256: sha256.to_string(),
                used: seq,
                manifest: Some(m.clone()),
            },
        );
        self.save()?;

        // 3. Shared links and before_activate hooks.
        match dir.link_shared(release, &m.shared) {
            Ok(missing) => {
                for f in missing {
                    warn!(
                        app,
                        "shared file {f} does not exist yet in {}",
                        dir.shared().display()
                    );
                }
            }
            Err(e) => return Ok(self.transient(app, e.to_string())),
        }
        fault_point(Step::Link);
        for argv in &m.hooks.before_activate {
            if let Err(e) = run_hook(app, release, commit, &dir, argv).await {
                let error = format!("before_activate hook failed: {e}");
                return Ok(self.failed_without_swap(app, release, sha256, commit, error, t0));
            }
        }
        fault_point(Step::Hooks);

        // 4. Swap, remembering the deploy in flight first.
        // An app that had left this server has nothing running to go back to.
        let previous = self
            .state
            .apps
            .get(app)
            .filter(|s| !s.removed)
            .and_then(|s| s.release.clone());
        self.state.app_mut(app).pending = Some(Pending {
            release: release.to_string(),
            sha256: sha256.to_string(),
            commit: commit.to_string(),
            started: now_rfc3339(),
        });
        self.save()?;
        if let Err(e) = dir.activate(release) {
            self.state.app_mut(app).pending = None;
            self.save()?;
            return Ok(self.transient(app, e.to_string()));
        }
        fault_point(Step::Swap);

        // 5. Reload under pm2; processes that left the manifest go.
        let new_names = m.process_names();
        let old_names: Vec<String> = self
            .state
            .apps
            .get(app)
            .map(|s| s.processes.clone())
            .unwrap_or_default();
        let gate = match self
            .pm2
            .start_or_reload(app, &dir.current(), release, m)
            .await
        {
            Ok(()) => {
                let gone: Vec<String> = old_names
                    .iter()
                    .filter(|n| !new_names.contains(n))
                    .cloned()
                    .collect();
                if !gone.is_empty()
                    && let Err(e) = self.pm2.delete(&gone).await
                {
                    warn!(app, "cannot delete processes that left the manifest: {e}");
                }
                fault_point(Step::Reload);
                // 6. Health gate.
                pm2::health_gate(&self.pm2, &new_names, &m.health)
                    .await
                    .map_err(|e| e.to_string())
            }
            Err(e) => Err(e.to_string()),
        };
        fault_point(Step::Health);

        if let Err(error) = gate {
            // 7. Roll back.
            return self
                .roll_back_after_failure(
                    app,
                    m,
                    release,
                    sha256,
                    commit,
                    previous.as_deref(),
                    error,
                    t0,
                )
                .await;
        }

        // 8. Success: after hooks, state, history, prune.
        let mut note = None;
        for argv in &m.hooks.after_activate {
            if let Err(e) = run_hook(app, release, commit, &dir, argv).await {
                warn!(app, "after_activate hook failed: {e}");
                note = Some(format!("after_activate hook failed: {e}"));
            }
        }
        let seq = self.state.next_seq();
        let since = now_rfc3339();
        {
            let st = self.state.app_mut(app);
            if st.release.as_deref() != Some(release) {
                st.previous = st.release.clone().or(st.previous.clone());
            }
            st.release = Some(release.to_string());
            st.sha256 = Some(sha256.to_string());
            st.commit = Some(commit.to_string());
            st.since = Some(since);
            st.manifest = Some(m.clone());
            st.processes = new_names.clone();
            st.pending = None;
            st.failed = None;
            st.pinned = None;
            st.removed = false;
            st.health = Some("healthy".into());
            st.last_error = note.clone();
            if let Some(k) = st.releases.get_mut(release) {
                k.used = seq;
            }
        }
        self.save()?;
        fault_point(Step::StateWrite);
        let secs = t0.elapsed().as_secs_f64();
        self.metrics.deploy(app, "success", secs);
        self.metrics.set_current_release(app, Some(release));
        let mut ev = Event::new("deploy")
            .app(app)
            .release(release)
            .from(from)
            .commit(commit)
            .seconds(secs);
        if let Some(n) = note {
            ev = ev.message(n);
        }
        self.history(ev);
        self.prune(app, m);
        Ok(Outcome::Deployed {
            release: release.to_string(),
            seconds: secs,
        })
    }

    /// Fetches the artifact, and unpacks it into `staging` as it arrives
    /// when given one, trying a transient fault (network, 5xx, 429,
    /// truncated body) again after a short, doubling pause, at most
    /// `FETCH_ATTEMPTS` times; then the fault goes to the next poll.
    /// Returns the artifact's path in the cache.
    async fn fetch_artifact(
        &self,
        app: &str,
        url: &str,
        sha256: &str,
        staging: Option<&std::path::Path>,
    ) -> Result<PathBuf, artifact::ArtifactError> {
        let mut pause = FETCH_FIRST_PAUSE;
        let mut attempt = 1;
        loop {
            let fetched = match staging {
                Some(dest) => self
                    .cache
                    .fetch_and_unpack(url, sha256, &self.fetch, dest, &self.limits)
                    .await
                    .map(|(path, _)| path),
                None => self.cache.fetch(url, sha256, &self.fetch).await,
            };
            match fetched {
                Err(e) if e.is_transient() && attempt < FETCH_ATTEMPTS => {
                    warn!(app, attempt, "{e}; trying again in {}ms", pause.as_millis());
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// With `repo.allowed_signers_file`, the commit must be signed by one of
    /// its keys. Ok(Err(reason)) refuses the commit (status `error`); Err is
    /// a fault of this server (the file or the mirror cannot be read).
    pub async fn check_commit_signature(
        &self,
        commit: &str,
    ) -> Result<Result<(), String>, EngineError> {
        let Some(file) = &self.cfg.repo.allowed_signers_file else {
            return Ok(Ok(()));
        };
        let signers = AllowedSigners::load(file).map_err(EngineError::Other)?;
        let src = self.source.clone();
        let c = commit.to_string();
        let signed = tokio::task::spawn_blocking(move || src.commit_signature(&c))
            .await
            .map_err(|e| EngineError::Other(e.to_string()))??;
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

    /// With `storage.trusted_keys`, the artifact (already in the cache, its
    /// sha256 checked) must carry a minisign signature by one of them.
    async fn check_artifact_signature(
        &self,
        m: &Manifest,
        artifact: &std::path::Path,
    ) -> Result<(), artifact::ArtifactError> {
        if self.trusted.is_empty() {
            return Ok(());
        }
        let url = crate::redact::url(&m.artifact.url);
        let refuse = |reason: String| artifact::ArtifactError::Signature {
            url: url.clone(),
            reason,
        };
        let Some(sig_url) = &m.artifact.signature_url else {
            return Err(refuse(
                "is missing: storage.trusted_keys is set, so the manifest needs artifact.signature_url"
                    .into(),
            ));
        };
        let sig = artifact::fetch_small(sig_url, &self.fetch, 64 * 1024).await?;
        let sig = String::from_utf8(sig).map_err(|_| refuse("is not text".into()))?;
        let trusted = self.trusted.clone();
        let path = artifact.to_path_buf();
        tokio::task::spawn_blocking(move || trusted.verify_file(&path, &sig))
            .await
            .map_err(|e| refuse(e.to_string()))?
            .map_err(refuse)
    }

    fn transient(&mut self, app: &str, error: String) -> Outcome {
        warn!(
            app,
            "deploy interrupted, tried again on the next poll: {error}"
        );
        self.state.app_mut(app).last_error = Some(error.clone());
        Outcome::Transient { error }
    }

    fn artifact_failed(
        &mut self,
        app: &str,
        release: &str,
        sha256: &str,
        commit: &str,
        e: artifact::ArtifactError,
    ) -> Outcome {
        let error = e.to_string();
        if e.is_transient() {
            return self.transient(app, error);
        }
        // A refusal someone fixes on the side (credentials, an upload not
        // there yet) is tried again at every poll; it is logged and recorded
        // once, not at every poll, while it stays the same.
        let repeated = self
            .state
            .apps
            .get(app)
            .and_then(|s| s.last_error.as_deref())
            == Some(error.as_str());
        if repeated {
            warn!(app, release, "the artifact still cannot be used: {error}");
            return Outcome::Errored { error };
        }
        error!(app, release, "the artifact cannot be used: {error}");
        if e.condemns_artifact() {
            // Remembered like a failed deploy: the same bad bytes are not
            // downloaded and refused again at every poll, only when the
            // branch moves or `hoist retry` asks for it.
            self.mark_failed(app, release, sha256, commit, &error);
            if let Err(e) = self.save() {
                error!("{e}");
            }
        }
        self.state.app_mut(app).last_error = Some(error.clone());
        self.metrics.deploy(app, "error", 0.0);
        self.history(
            Event::new("error")
                .app(app)
                .release(release)
                .commit(commit)
                .message(error.clone()),
        );
        Outcome::Errored { error }
    }

    fn mark_failed(&mut self, app: &str, release: &str, sha256: &str, commit: &str, error: &str) {
        let st = self.state.app_mut(app);
        st.failed = Some(Failed {
            commit: commit.to_string(),
            release: release.to_string(),
            sha256: sha256.to_string(),
            error: error.to_string(),
            at: now_rfc3339(),
        });
        st.last_error = Some(error.to_string());
        st.pending = None;
    }

    fn failed_without_swap(
        &mut self,
        app: &str,
        release: &str,
        sha256: &str,
        commit: &str,
        error: String,
        t0: Instant,
    ) -> Outcome {
        error!(app, release, "{error}");
        self.mark_failed(app, release, sha256, commit, &error);
        if let Err(e) = self.save() {
            error!("{e}");
        }
        let running = self.state.apps.get(app).and_then(|s| s.release.clone());
        self.metrics
            .deploy(app, "failure", t0.elapsed().as_secs_f64());
        self.history(
            Event::new("failure")
                .app(app)
                .release(release)
                .commit(commit)
                .message(error.clone()),
        );
        Outcome::Failed {
            release: release.to_string(),
            error,
            rolled_back_to: running,
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn roll_back_after_failure(
        &mut self,
        app: &str,
        m: &Manifest,
        release: &str,
        sha256: &str,
        commit: &str,
        previous: Option<&str>,
        error: String,
        t0: Instant,
    ) -> Result<Outcome, EngineError> {
        error!(app, release, "unhealthy, rolling back: {error}");
        let dir = self.app_dir(app);
        let prev_manifest = self.state.apps.get(app).and_then(|s| s.manifest.clone());
        let mut rolled_back_to = None;
        match (previous, prev_manifest) {
            (Some(prev), Some(pm)) if dir.release(prev).is_dir() => {
                dir.activate(prev)
                    .map_err(|e| EngineError::Other(e.to_string()))?;
                let old_names = pm.process_names();
                let extra: Vec<String> = m
                    .process_names()
                    .into_iter()
                    .filter(|n| !old_names.contains(n))
                    .collect();
                if !extra.is_empty() {
                    let _ = self.pm2.delete(&extra).await;
                }
                let back = match self
                    .pm2
                    .start_or_reload(app, &dir.current(), prev, &pm)
                    .await
                {
                    Ok(()) => pm2::health_gate(&self.pm2, &old_names, &pm.health)
                        .await
                        .map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                let st = self.state.app_mut(app);
                match back {
                    Ok(()) => st.health = Some("healthy".into()),
                    Err(e) => {
                        error!(
                            app,
                            "the previous release {prev} is not healthy either: {e}"
                        );
                        st.health = Some(format!("unhealthy: {e}"));
                    }
                }
                rolled_back_to = Some(prev.to_string());
            }
            _ => {
                // Nothing to go back to: stop the bad release rather than
                // leave it serving errors.
                let _ = self.pm2.delete(&m.process_names()).await;
                dir.deactivate()
                    .map_err(|e| EngineError::Other(e.to_string()))?;
                self.state.app_mut(app).health = Some("stopped".into());
            }
        }
        self.mark_failed(app, release, sha256, commit, &error);
        self.save()?;
        self.metrics
            .deploy(app, "failure", t0.elapsed().as_secs_f64());
        self.history(
            Event::new("rollback")
                .app(app)
                .release(rolled_back_to.as_deref().unwrap_or("-"))
                .from(Some(release))
                .commit(commit)
                .message(error.clone()),
        );
        Ok(Outcome::Failed {
            release: release.to_string(),
            error,
            rolled_back_to,
        })
    }

    fn prune(&mut self, app: &str, m: &Manifest) {
        let dir = self.app_dir(app);
        let on_disk = dir.list_releases();
        let Some(st) = self.state.apps.get(app) else {
            return;
        };
        let recency: BTreeMap<String, String> = st
            .releases
            .iter()
            .map(|(k, v)| (k.clone(), format!("{:020}", v.used)))
            .collect();
        let mut protect: Vec<&str> = Vec::new();
        if let Some(r) = &st.release {
            protect.push(r);
        }
        if let Some(r) = &st.previous {
            protect.push(r);
        }
        if let Some(r) = dir.current_release()
            && !protect.contains(&r.as_str())
        {
            // Never delete what `current` points at, whatever the state says.
            let gone = releases_to_prune(&on_disk, &recency, self.keep_for(m), &[&r]);
            let gone: Vec<String> = gone
                .into_iter()
                .filter(|g| !protect.contains(&g.as_str()))
                .collect();
            return self.remove_releases(app, gone);
        }
        let gone = releases_to_prune(&on_disk, &recency, self.keep_for(m), &protect);
        self.remove_releases(app, gone);
    }

    fn remove_releases(&mut self, app: &str, gone: Vec<String>) {
        let dir = self.app_dir(app);
        for r in &gone {
            match dir.remove_release(r) {
                Ok(()) => {
                    info!(app, release = %r, "pruned");
                    self.state.app_mut(app).releases.remove(r);
                }
                Err(e) => warn!(app, "cannot prune {r}: {e}"),
            }
        }
        if !gone.is_empty()
            && let Err(e) = self.save()
        {
            warn!("{e}");
        }
        let keep: HashSet<String> = self
            .state
            .apps
            .values()
            .flat_map(|s| s.releases.values().map(|k| k.sha256.clone()))
            .collect();
        if let Err(e) = self.cache.prune(&keep) {
            warn!("cannot prune the artifact cache: {e}");
        }
    }

    /// `hoist retry APP`: forget the failure so the next pass tries again.
    pub fn retry(&mut self, app: &str) -> Result<String, String> {
        let st = self
            .state
            .apps
            .get_mut(app)
            .ok_or_else(|| format!("app {app} has never been deployed on this server"))?;
        match st.failed.take() {
            Some(f) => {
                self.save().map_err(|e| e.to_string())?;
                self.history(
                    Event::new("retry")
                        .app(app)
                        .release(&f.release)
                        .commit(&f.commit),
                );
                // The commit must be applied again even though it is the last one seen.
                self.state.last_commit = None;
                Ok(format!("{app}: {} will be tried again", f.release))
            }
            None => Err(format!("{app} has no failed deploy to retry")),
        }
    }

    /// `hoist rollback APP [--to RELEASE]`: an emergency local rollback to a
    /// kept release. The app stays there until the branch changes its release.
    pub async fn rollback(&mut self, app: &str, to: Option<&str>) -> Result<String, String> {
        let st = self
            .state
            .apps
            .get(app)
            .cloned()
            .ok_or_else(|| format!("app {app} has never been deployed on this server"))?;
        let current = st
            .release
            .clone()
            .ok_or_else(|| format!("app {app} has no current release"))?;
        let dir = self.app_dir(app);
        let target = match to {
            Some(t) => t.to_string(),
            None => st.previous.clone().ok_or_else(|| {
                format!("app {app} has no previous release to roll back to; name one with --to")
            })?,
        };
        if target == current {
            return Err(format!("{app} already runs {target}"));
        }
        if !dir.release(&target).is_dir() {
            let kept: Vec<String> = dir.list_releases().into_iter().collect();
            return Err(format!(
                "release {target} of {app} is not on this server (kept: {})",
                kept.join(", ")
            ));
        }
        let known = st.releases.get(&target).cloned();
        let m = known
            .as_ref()
            .and_then(|k| k.manifest.clone())
            .or_else(|| st.manifest.clone())
            .ok_or_else(|| format!("no pm2 settings are recorded for {app}"))?;
        let t0 = Instant::now();
        dir.activate(&target).map_err(|e| e.to_string())?;
        let gate = match self
            .pm2
            .start_or_reload(app, &dir.current(), &target, &m)
            .await
        {
            Ok(()) => pm2::health_gate(&self.pm2, &m.process_names(), &m.health)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let seq = self.state.next_seq();
        {
            let s = self.state.app_mut(app);
            s.previous = Some(current.clone());
            s.release = Some(target.clone());
            s.sha256 = known.as_ref().map(|k| k.sha256.clone());
            s.manifest = Some(m.clone());
            s.processes = m.process_names();
            s.since = Some(now_rfc3339());
            s.pinned = Some(state::Pinned {
                release: target.clone(),
                desired_release: st
                    .failed
                    .as_ref()
                    .map(|f| f.release.clone())
                    .or(Some(current.clone())),
                desired_sha256: st
                    .failed
                    .as_ref()
                    .map(|f| f.sha256.clone())
                    .or(st.sha256.clone()),
                at: now_rfc3339(),
            });
            s.failed = None;
            s.health = Some(match &gate {
                Ok(()) => "healthy".into(),
                Err(e) => format!("unhealthy: {e}"),
            });
            if let Some(k) = s.releases.get_mut(&target) {
                k.used = seq;
            }
        }
        self.save().map_err(|e| e.to_string())?;
        self.metrics.set_current_release(app, Some(&target));
        self.history(
            Event::new("rollback")
                .app(app)
                .release(&target)
                .from(Some(&current))
                .seconds(t0.elapsed().as_secs_f64())
                .message("local rollback by an operator; held until the branch changes this app"),
        );
        match gate {
            Ok(()) => Ok(format!(
                "{app} rolled back from {current} to {target}; it stays there until the branch changes its release"
            )),
            Err(e) => Err(format!(
                "{app} rolled back from {current} to {target}, but it is not healthy: {e}"
            )),
        }
    }
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
    }
}

const HOOK_TIMEOUT: Duration = Duration::from_secs(600);
/// Attempts at an artifact download within one deploy.
const FETCH_ATTEMPTS: u32 = 3;
const FETCH_FIRST_PAUSE: Duration = Duration::from_millis(500);

/// Runs one hook argv in the release directory, without a shell.
async fn run_hook(
    app: &str,
    release: &str,
    commit: &str,
    dir: &AppDir,
    argv: &[String],
) -> Result<(), String> {
    let rel_dir = dir.release(release);
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .current_dir(&rel_dir)
        .env("HOIST_APP", app)
        .env("HOIST_RELEASE", release)
        .env("HOIST_RELEASE_DIR", &rel_dir)
        .env("HOIST_SHARED_DIR", dir.shared())
        .env("HOIST_COMMIT", commit)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let shown = argv.join(" ");
    let out = tokio::time::timeout(HOOK_TIMEOUT, cmd.output())
        .await
        .map_err(|_| {
            format!(
                "`{shown}` did not finish within {}s",
                HOOK_TIMEOUT.as_secs()
            )
        })?
        .map_err(|e| format!("cannot run `{shown}`: {e}"))?;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        info!(app, hook = %shown, "{line}");
    }
    if out.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(2).collect();
        Err(format!(
            "`{shown}` exited with {}{}",
            out.status
                .code()
                .map(|c| c.to_string())
                .unwrap_or_else(|| "a signal".into()),
            if tail.is_empty() {
                String::new()
            } else {
                format!(
                    ": {}",
                    tail.into_iter().rev().collect::<Vec<_>>().join(" / ")
                )
            }
        ))
    }
}

fn build_provider(cfg: &HostConfig) -> Result<Arc<dyn report::Provider>, String> {
    let kind = match cfg.status.provider {
        ProviderName::Github => ProviderKind::Github,
        ProviderName::Gitea => ProviderKind::Gitea,
        ProviderName::Gitlab => ProviderKind::Gitlab,
        ProviderName::File => ProviderKind::File,
        ProviderName::None => ProviderKind::None,
    };
    let token = read_secret(&cfg.status.token_file, "status.token_file")?;
    report::build_provider(&ProviderSettings {
        kind,
        api_url: cfg.status.api_url.clone(),
        repository: cfg.status.repository.clone(),
        token,
        path: Some(cfg.status_file()),
        allow_http: cfg.allow_http,
        ca_file: cfg.ca_file.clone(),
        target_url: None,
    })
    .map_err(|e| e.to_string())
}
