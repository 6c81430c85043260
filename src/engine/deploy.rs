//! One app's deploy as the step machine SPEC §3 describes, each step named
//! (`fault::Step`):
//!
//! ```text
//! Download → Link → Unpack → Hooks → (switch: Swap → Reload → Health) → StateWrite
//!   fetch,     shared and   rename     before_      journalled, then     after hooks,
//!   unpack     secret links into       activate     links, pm2, gate     ledger, prune
//!   to staging in staging   releases/
//! ```
//!
//! A release already on disk with the right links skips the first three.
//! One whose links must change (other `shared` or `secrets` paths) is
//! unpacked afresh from the cache and linked in staging, so a directory
//! that `current` points at is never modified: if it runs, the staged copy
//! is exchanged with it during the switch.
//!
//! Each step's failure has one outcome: a passing fault (network, disk) is
//! `Transient` and tried again at the next poll; bad bytes are refused and
//! held for the commit; a failed hook holds the commit without touching
//! what runs; a failed reload or gate rolls back (`switch::roll_back`).

use super::fault::Step;
use super::hooks::{HookEnv, HookLog, run_hook};
use super::{Engine, EngineError, blocking};
use crate::artifact::{self, ArtifactError};
use crate::config::{Manifest, SharedPath};
use crate::plan::Outcome;
use crate::release::AppDir;
use crate::state::{Exchange, Failed, KnownRelease, Live, Switch, SwitchWhy, now_rfc3339};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tracing::{error, info, warn};

/// Attempts at an artifact download within one deploy.
const FETCH_ATTEMPTS: u32 = 3;
const FETCH_FIRST_PAUSE: Duration = Duration::from_millis(500);

/// What the plan asked: bring `release` live for `commit`.
pub(super) struct Job<'a> {
    pub app: &'a str,
    pub manifest: &'a Manifest,
    pub release: &'a str,
    pub sha256: &'a str,
    pub from: Option<&'a str>,
    pub reuse: bool,
    pub commit: &'a str,
    /// The app's secrets at the commit.
    pub secrets: super::secrets::Wanted,
}

/// How the release directory was made ready.
struct Prepared {
    /// Where hooks run: the release, or its staged copy.
    dir: PathBuf,
    /// The staged copy to exchange with the running directory.
    exchange: Option<Exchange>,
}

/// Why a deploy stopped before its switch.
enum Stop {
    Transient(String),
    Refused(ArtifactError),
    /// The release cannot be laid out as the manifest asks (a secret over
    /// a file of the release, a link planted in `shared/`): status `error`
    /// naming it; `hold` keeps it for the commit.
    Invalid {
        error: String,
        hold: bool,
    },
}

impl Stop {
    fn layout(e: crate::release::ReleaseError) -> Stop {
        use crate::release::ReleaseError;
        match e {
            ReleaseError::Conflict(error) => Stop::Invalid { error, hold: true },
            e if e.is_permanent() => Stop::Invalid {
                error: e.to_string(),
                hold: false,
            },
            e => Stop::Transient(e.to_string()),
        }
    }
}

/// The paths a manifest replaces with links: shared, then secrets.
fn links_of(m: &Manifest) -> (Vec<SharedPath>, Vec<SharedPath>) {
    (
        m.shared.clone(),
        m.secrets.iter().map(|s| s.to.clone()).collect(),
    )
}

impl Engine {
    /// Deploys one app (SPEC §3 steps 1–8).
    pub(super) async fn deploy(&self, job: Job<'_>) -> Result<Outcome, EngineError> {
        let t0 = Instant::now();
        let app = job.app;
        let dir = self.app_dir(app);
        info!(
            app,
            release = job.release,
            from = job.from.unwrap_or("-"),
            reuse = job.reuse,
            "deploying"
        );
        let (running, known) = {
            let ledger = self.ledger.lock().await;
            let st = ledger.app(app);
            (
                st.and_then(|s| s.live().cloned()),
                st.and_then(|s| s.releases.get(job.release).cloned()),
            )
        };
        let mut target = Live {
            release: job.release.to_string(),
            sha256: job.sha256.to_string(),
            secrets: None,
            manifest: job.manifest.clone(),
        };

        // 1–3 (files): the release directory, linked.
        let prepared = match self
            .prepare(&job, &dir, running.as_ref(), known.as_ref())
            .await
        {
            Ok(p) => p,
            Err(Stop::Transient(e)) => return self.transient(app, e).await,
            Err(Stop::Refused(e)) => {
                let hold = e.condemns_artifact();
                return self.refused(&job, e.to_string(), hold).await;
            }
            Err(Stop::Invalid { error, hold }) => return self.refused(&job, error, hold).await,
        };
        // The secrets it runs with: the running generation, or a new one.
        match self.generation_for(app, &job.secrets).await {
            Ok(g) => target.secrets = g,
            Err(e) => {
                if let Some(x) = &prepared.exchange {
                    let staged = x.staged.clone();
                    let _ = blocking(move || std::fs::remove_dir_all(&staged)).await;
                }
                return self
                    .transient(app, format!("cannot write its secrets: {e}"))
                    .await;
            }
        }
        self.ledger
            .lock()
            .await
            .staged(app, &target, prepared.exchange.is_none())
            .await?;

        // 3 (hooks): before_activate, in the release about to run. Their
        // output goes to a file in the app's folder, never to the log.
        let secrets_dir = target
            .secrets
            .as_ref()
            .map(|g| dir.path().join("secrets").join(g));
        let hooks = &job.manifest.hooks;
        let hook_log = if hooks.before_activate.is_empty() && hooks.after_activate.is_empty() {
            None
        } else {
            let (d, r) = (dir.clone(), job.release.to_string());
            match blocking(move || HookLog::create(&d, &r)).await {
                Ok(l) => Some(l),
                Err(e) => {
                    if let Some(x) = &prepared.exchange {
                        let staged = x.staged.clone();
                        let _ = blocking(move || std::fs::remove_dir_all(&staged)).await;
                    }
                    return self.transient(app, e).await;
                }
            }
        };
        let output = hook_log.as_ref().map(|l| l.path().display().to_string());
        let hook_env = HookEnv {
            app,
            release: job.release,
            commit: job.commit,
            dir: &prepared.dir,
            shared: &dir.shared(),
            secrets: secrets_dir.as_deref(),
            user: self.settings.pm2_user.as_deref(),
            log: hook_log.as_ref(),
        };
        for argv in &job.manifest.hooks.before_activate {
            if let Err(e) = run_hook(&hook_env, argv).await {
                let error = format!("before_activate hook failed: {e}");
                error!(app, release = job.release, "{error}");
                if let Some(x) = &prepared.exchange {
                    let staged = x.staged.clone();
                    let _ = blocking(move || std::fs::remove_dir_all(&staged)).await;
                }
                let failed = self.failure(&job, error.clone());
                self.ledger
                    .lock()
                    .await
                    .failed_before_switch(app, failed, t0.elapsed().as_secs_f64(), output)
                    .await?;
                return Ok(Outcome::Failed {
                    release: job.release.to_string(),
                    error,
                    rolled_back_to: running.map(|r| r.release),
                });
            }
        }
        self.settings.faults.point("", Step::Hooks);

        // 4–6: the journalled switch: links, pm2, gate.
        let sw = Switch {
            why: SwitchWhy::Deploy {
                commit: job.commit.to_string(),
            },
            from: running.clone(),
            to: Some(target.clone()),
            exchange: prepared.exchange.clone(),
            started: now_rfc3339(),
        };
        let verdict = match self.switch(app, &sw).await? {
            Ok(v) => v,
            Err(link) => {
                // The links could not be changed: put back what ran (and
                // if even that fails, the journal entry stays for the next
                // pass to finish).
                warn!(app, "cannot switch to {}: {}", job.release, link.0);
                if let Err(e) = self.finish(app, &sw).await? {
                    error!(app, "cannot put back what ran either: {e}");
                }
                return self.transient(app, link.0).await;
            }
        };
        if let Err(error) = verdict {
            // 7. Roll back.
            return Ok(
                match self
                    .roll_back(app, &sw, error.clone(), t0.elapsed().as_secs_f64())
                    .await?
                {
                    Ok(back) => Outcome::Failed {
                        release: job.release.to_string(),
                        error,
                        rolled_back_to: back,
                    },
                    Err(why) => Outcome::Failed {
                        release: job.release.to_string(),
                        error: format!(
                            "{error}; the way back failed too ({why}) and is tried again"
                        ),
                        rolled_back_to: None,
                    },
                },
            );
        }

        // 8. Success: after hooks, state, history, prune.
        let mut note = None;
        for argv in &job.manifest.hooks.after_activate {
            let env = HookEnv {
                dir: &dir.release(job.release),
                ..hook_env
            };
            if let Err(e) = run_hook(&env, argv).await {
                warn!(app, "after_activate hook failed: {e}");
                note = Some(format!("after_activate hook failed: {e}"));
            }
        }
        let secs = t0.elapsed().as_secs_f64();
        self.ledger
            .lock()
            .await
            .deployed(app, target, job.commit, secs, note, output)
            .await?;
        self.settings.faults.point("", Step::StateWrite);
        if let Some(x) = &prepared.exchange {
            // After the exchange the staged path holds the old directory.
            let staged = x.staged.clone();
            let _ = blocking(move || std::fs::remove_dir_all(&staged)).await;
        }
        self.prune(app, job.manifest).await;
        self.prune_secrets(app).await;
        Ok(Outcome::Deployed {
            release: job.release.to_string(),
            seconds: secs,
        })
    }

    /// Steps 1–3 on disk: fetch and unpack into staging (unless the release
    /// is on disk already), link, install.
    async fn prepare(
        &self,
        job: &Job<'_>,
        dir: &AppDir,
        running: Option<&Live>,
        known: Option<&KnownRelease>,
    ) -> Result<Prepared, Stop> {
        let d = dir.clone();
        let owner = self.settings.pm2_user.as_ref().map(|u| u.owner());
        blocking(move || d.ensure_layout(owner))
            .await
            .map_err(Stop::layout)?;
        let (shared, secrets) = links_of(job.manifest);
        let linked_as = known.and_then(|k| k.manifest.as_ref()).map(links_of);
        let same_links = linked_as.as_ref() == Some(&(shared.clone(), secrets.clone()));
        if job.reuse && same_links {
            // On disk and linked as wanted: nothing on disk changes.
            return Ok(Prepared {
                dir: dir.release(job.release),
                exchange: None,
            });
        }

        // A fresh directory: from the network, or from the cache when the
        // release is kept and only its links change.
        let staging = dir.new_staging(job.release);
        if let Err(e) = self.fetch_into(job, &staging).await {
            let s = staging.clone();
            let _ = blocking(move || std::fs::remove_dir_all(&s)).await;
            return Err(e);
        }
        self.settings.faults.point("", Step::Download);
        let linked = {
            let (d, s) = (dir.clone(), staging.clone());
            blocking(move || d.link_into(&s, &shared, &secrets, owner)).await
        };
        match linked {
            Ok(missing) => {
                for f in missing {
                    warn!(
                        app = job.app,
                        "shared file {f} does not exist yet in {}",
                        dir.shared().display()
                    );
                }
            }
            Err(e) => {
                let s = staging.clone();
                let _ = blocking(move || std::fs::remove_dir_all(&s)).await;
                return Err(Stop::layout(e));
            }
        }
        self.settings.faults.point("", Step::Link);

        if running.is_some_and(|r| r.release == job.release) && dir.release(job.release).is_dir() {
            // The running directory is never modified: the staged copy is
            // exchanged with it during the switch.
            let (d, r) = (dir.clone(), job.release.to_string());
            let old_ino = blocking(move || d.release_ino(&r))
                .await
                .map_err(|e| Stop::Transient(e.to_string()))?;
            return Ok(Prepared {
                dir: staging.clone(),
                exchange: Some(Exchange {
                    staged: staging,
                    old_ino,
                }),
            });
        }
        let installed = {
            let (d, s, r) = (dir.clone(), staging.clone(), job.release.to_string());
            blocking(move || d.install(&s, &r)).await
        };
        if let Err(e) = installed {
            let s = staging.clone();
            let _ = blocking(move || std::fs::remove_dir_all(&s)).await;
            return Err(Stop::Transient(e.to_string()));
        }
        self.settings.faults.point("", Step::Unpack);
        Ok(Prepared {
            dir: dir.release(job.release),
            exchange: None,
        })
    }

    /// Fetches the artifact and unpacks it into `staging`. Without
    /// `storage.trusted_keys` the unpack runs while the bytes arrive; with
    /// them, nothing is unpacked before the signature is checked.
    async fn fetch_into(&self, job: &Job<'_>, staging: &Path) -> Result<(), Stop> {
        let verify_first = !self.parts.trusted.is_empty();
        let unpack_into = (!verify_first).then_some(staging);
        let stop = |e: ArtifactError| {
            if e.is_transient() {
                Stop::Transient(e.to_string())
            } else {
                Stop::Refused(e)
            }
        };
        let path = self
            .fetch_artifact(job.app, &job.manifest.artifact.url, job.sha256, unpack_into)
            .await
            .map_err(stop)?;
        self.check_artifact_signature(job.manifest, &path)
            .await
            .map_err(stop)?;
        if verify_first {
            // Now cached: this unpacks from the cache, without the network.
            self.fetch_artifact(
                job.app,
                &job.manifest.artifact.url,
                job.sha256,
                Some(staging),
            )
            .await
            .map_err(stop)?;
        }
        Ok(())
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
        staging: Option<&Path>,
    ) -> Result<PathBuf, ArtifactError> {
        let p = &self.parts;
        let mut pause = FETCH_FIRST_PAUSE;
        let mut attempt = 1;
        loop {
            let fetched = match staging {
                Some(dest) => p
                    .cache
                    .fetch_and_unpack(url, sha256, &p.fetch, dest, &p.limits)
                    .await
                    .map(|(path, _)| path),
                None => p.cache.fetch(url, sha256, &p.fetch).await,
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

    /// With `storage.trusted_keys`, the artifact (already in the cache, its
    /// sha256 checked) must carry a minisign signature by one of them.
    async fn check_artifact_signature(
        &self,
        m: &Manifest,
        artifact: &Path,
    ) -> Result<(), ArtifactError> {
        let p = &self.parts;
        if p.trusted.is_empty() {
            return Ok(());
        }
        let url = crate::redact::url(&m.artifact.url);
        let refuse = |reason: String| ArtifactError::Signature {
            url: url.clone(),
            reason,
        };
        let Some(sig_url) = &m.artifact.signature_url else {
            return Err(refuse(
                "is missing: storage.trusted_keys is set, so the manifest needs artifact.signature_url"
                    .into(),
            ));
        };
        let sig = artifact::fetch_small(sig_url, &p.fetch, 64 * 1024).await?;
        let sig = String::from_utf8(sig).map_err(|_| refuse("is not text".into()))?;
        let trusted = p.trusted.clone();
        let path = artifact.to_path_buf();
        tokio::task::spawn_blocking(move || trusted.verify_file(&path, &sig))
            .await
            .map_err(|e| refuse(e.to_string()))?
            .map_err(refuse)
    }

    fn failure(&self, job: &Job<'_>, error: String) -> Failed {
        Failed {
            commit: job.commit.to_string(),
            release: job.release.to_string(),
            sha256: job.sha256.to_string(),
            error,
            at: now_rfc3339(),
        }
    }

    pub(super) async fn transient(&self, app: &str, error: String) -> Result<Outcome, EngineError> {
        warn!(
            app,
            "deploy interrupted, tried again on the next poll: {error}"
        );
        self.ledger.lock().await.transient(app, &error).await?;
        Ok(Outcome::Transient { error })
    }

    /// The artifact cannot be used. A refusal someone fixes on the side
    /// (credentials, an upload not there yet) is tried again at every poll
    /// and recorded once while it stays the same; bad bytes are held for
    /// the commit so they are not fetched again at every poll.
    async fn refused(
        &self,
        job: &Job<'_>,
        error: String,
        hold: bool,
    ) -> Result<Outcome, EngineError> {
        let mut ledger = self.ledger.lock().await;
        let repeated = ledger.app(job.app).and_then(|s| s.last_error.as_deref()) == Some(&error);
        if repeated {
            warn!(
                app = job.app,
                release = job.release,
                "the release still cannot be deployed: {error}"
            );
            return Ok(Outcome::Errored { error });
        }
        error!(
            app = job.app,
            release = job.release,
            "the release cannot be deployed: {error}"
        );
        ledger
            .refused(job.app, self.failure(job, error.clone()), hold)
            .await?;
        Ok(Outcome::Errored { error })
    }

    /// Removes releases beyond `keep_releases`, never the running one, the
    /// previous one or what `current` points at; then the cache entries of
    /// releases no longer kept. On the blocking pool: a release can be a
    /// node_modules tree of tens of thousands of files.
    pub(super) async fn prune(&self, app: &str, m: &Manifest) {
        let keep = m
            .keep_releases
            .unwrap_or(self.settings.keep_releases)
            .max(1) as usize;
        let (recency, mut protect) = {
            let ledger = self.ledger.lock().await;
            let Some(st) = ledger.app(app) else {
                return;
            };
            let recency: std::collections::BTreeMap<String, String> = st
                .releases
                .iter()
                .map(|(k, v)| (k.clone(), format!("{:020}", v.used)))
                .collect();
            let mut protect: Vec<String> = Vec::new();
            protect.extend(st.release().map(String::from));
            protect.extend(st.previous.as_ref().map(|p| p.release.clone()));
            if let Some(sw) = &st.switch {
                protect.extend(sw.from.as_ref().map(|l| l.release.clone()));
                protect.extend(sw.to.as_ref().map(|l| l.release.clone()));
            }
            (recency, protect)
        };
        let dir = self.app_dir(app);
        let gone = {
            let d = dir.clone();
            let app = app.to_string();
            blocking(move || {
                // Never what `current` points at, whatever the state says.
                protect.extend(d.current_release());
                let refs: Vec<&str> = protect.iter().map(String::as_str).collect();
                let on_disk = d.list_releases();
                let candidates = crate::release::releases_to_prune(&on_disk, &recency, keep, &refs);
                let mut gone = Vec::new();
                for r in candidates {
                    match d.remove_release(&r) {
                        Ok(()) => {
                            info!(app = %app, release = %r, "pruned");
                            gone.push(r);
                        }
                        Err(e) => warn!(app = %app, "cannot prune {r}: {e}"),
                    }
                }
                gone
            })
            .await
        };
        let keep_hashes = {
            let mut ledger = self.ledger.lock().await;
            if let Err(e) = ledger.pruned(app, &gone).await {
                warn!("{e}");
            }
            ledger.kept_hashes()
        };
        let cache = self.parts.cache.clone();
        if let Err(e) = blocking(move || cache.prune(&keep_hashes)).await {
            warn!("cannot prune the artifact cache: {e}");
        }
    }
}
