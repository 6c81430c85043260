//! The one routine that changes what runs: a deploy's switch to the new
//! release, the automatic rollback from an unhealthy one, `hoist rollback`,
//! and recovery after a crash all go through [`Engine::apply_pair`], and all
//! but recovery first write the change to the journal
//! (`AppState::switch`, via the ledger).
//!
//! Applying a pair is idempotent: point `secrets/live` and `current` (or
//! exchange a re-linked release directory) at it, have pm2 run it, and gate
//! on its health. So recovery needs no journal of its own: it applies the
//! pair the entry says to end on (the old one for a deploy, the new one
//! for every other change) as often as it takes, and only then records the
//! outcome, in the same write that clears the entry.

use super::fault::Step;
use super::ledger::Back;
use super::{Engine, EngineError, blocking};
use crate::pm2;
use crate::release::AppDir;
use crate::state::{Exchange, Failed, Health, Live, Switch, SwitchWhy, now_rfc3339};
use tracing::{error, info, warn};

/// Applying a pair could not change the links: nothing of pm2 was touched.
#[derive(Debug)]
pub(super) struct LinkError(pub String);

impl Engine {
    fn prefix(why: &SwitchWhy) -> &'static str {
        match why {
            SwitchWhy::Deploy { .. } => "",
            SwitchWhy::AutoRollback { .. } => "auto-rollback-",
            SwitchWhy::Rollback { .. } => "local-rollback-",
        }
    }

    /// Makes `target` run: links, then pm2, then the health gate. `other`
    /// is the pair on the other side of the switch, whose processes that
    /// `target` does not define are deleted. With an exchange, `new` says
    /// whether `releases/<release>` must end holding the re-linked copy.
    /// Ok(Err(why)) is an unhealthy target.
    pub(super) async fn apply_pair(
        &self,
        app: &str,
        why: &SwitchWhy,
        target: Option<&Live>,
        other: Option<&Live>,
        exchange: Option<(&Exchange, bool)>,
    ) -> Result<Result<(), String>, LinkError> {
        let prefix = Self::prefix(why);
        let dir = self.app_dir(app);
        {
            let dir = dir.clone();
            let target = target.cloned();
            let exchange = exchange.map(|(x, new)| (x.clone(), new));
            let fail = self.settings.faults.fail(prefix, Step::Swap);
            blocking(move || {
                fail.map_err(|e| e.to_string())?;
                link_pair(&dir, target.as_ref(), exchange)
            })
            .await
            .map_err(LinkError)?;
        }
        self.settings.faults.point(prefix, Step::Swap);

        let pm = self.watch.manager();
        let keep: Vec<String> = target.map(Live::processes).unwrap_or_default();
        let gone: Vec<String> = other
            .map(Live::processes)
            .unwrap_or_default()
            .into_iter()
            .filter(|n| !keep.contains(n))
            .collect();
        let reloaded = match target {
            Some(t) => pm
                .start_or_reload(app, &dir.current(), &t.release, &t.manifest)
                .await
                .map_err(|e| e.to_string()),
            None => Ok(()),
        };
        if !gone.is_empty()
            && let Err(e) = pm.delete(&gone).await
        {
            warn!(app, "cannot delete processes that left the manifest: {e}");
        }
        self.settings.faults.point(prefix, Step::Reload);
        let verdict = match (reloaded, target) {
            (Err(e), _) => Err(e),
            (Ok(()), Some(t)) => pm2::health_gate(&self.watch, &t.processes(), &t.manifest.health)
                .await
                .map_err(|e| e.to_string()),
            (Ok(()), None) => Ok(()),
        };
        self.settings.faults.point(prefix, Step::Health);
        Ok(verdict)
    }

    /// Journals `sw` and applies its new pair.
    pub(super) async fn switch(
        &self,
        app: &str,
        sw: &Switch,
    ) -> Result<Result<Result<(), String>, LinkError>, EngineError> {
        self.ledger.lock().await.begin(app, sw.clone()).await?;
        let exchange = sw.exchange.as_ref().map(|x| (x, true));
        Ok(self
            .apply_pair(app, &sw.why, sw.to.as_ref(), sw.from.as_ref(), exchange)
            .await)
    }

    /// The deploy `sw` failed (`error`): back to what ran before, recorded
    /// as failed; returns what runs now. When the way back breaks too
    /// (Ok(Err)), the failure is recorded anyway (the commit is not tried
    /// again) and the journal entry stays, for the next pass or start to
    /// finish.
    pub(super) async fn roll_back(
        &self,
        app: &str,
        sw: &Switch,
        error: String,
        seconds: f64,
    ) -> Result<Result<Option<String>, String>, EngineError> {
        let SwitchWhy::Deploy { commit } = &sw.why else {
            return Err(EngineError::Other("only a deploy is rolled back".into()));
        };
        let Some(new) = &sw.to else {
            return Err(EngineError::Other("a deploy always has a new pair".into()));
        };
        error!(app, release = %new.release, "unhealthy, rolling back: {error}");
        let failed = Failed {
            commit: commit.clone(),
            release: new.release.clone(),
            sha256: new.sha256.clone(),
            error,
            at: now_rfc3339(),
        };
        let back = Switch {
            why: SwitchWhy::AutoRollback {
                failed: failed.clone(),
            },
            from: sw.to.clone(),
            to: sw.from.clone(),
            exchange: sw.exchange.clone(),
            started: now_rfc3339(),
        };
        self.ledger.lock().await.begin(app, back.clone()).await?;
        self.finish_timed(app, &back, seconds).await
    }

    /// Recovery: finishes or undoes the change `sw` records, and records
    /// the outcome. Returns the release that runs afterwards.
    pub(super) async fn finish(
        &self,
        app: &str,
        sw: &Switch,
    ) -> Result<Result<Option<String>, String>, EngineError> {
        self.finish_timed(app, sw, 0.0).await
    }

    /// `finish`, counting `before` seconds already spent (a deploy's).
    async fn finish_timed(
        &self,
        app: &str,
        sw: &Switch,
        before: f64,
    ) -> Result<Result<Option<String>, String>, EngineError> {
        let t0 = std::time::Instant::now();
        // A deploy is undone; every other change is carried through.
        let (target, other, new) = match &sw.why {
            SwitchWhy::Deploy { .. } => (sw.from.as_ref(), sw.to.as_ref(), false),
            _ => (sw.to.as_ref(), sw.from.as_ref(), false),
        };
        let exchange = sw.exchange.as_ref().map(|x| (x, new));
        let verdict = match self.apply_pair(app, &sw.why, target, other, exchange).await {
            Ok(v) => v,
            Err(LinkError(e)) => {
                error!(
                    app,
                    "cannot finish the {} ({e}); trying again at the next pass",
                    sw.why.name()
                );
                if let SwitchWhy::AutoRollback { failed } = &sw.why {
                    // The failure holds the commit even while the way back
                    // is blocked: the broken release is not deployed again.
                    let mut ledger = self.ledger.lock().await;
                    if ledger.app(app).and_then(|s| s.failed.as_ref()) != Some(failed) {
                        ledger
                            .refused(app, failed.clone(), true)
                            .await
                            .map_err(EngineError::State)?;
                    }
                }
                return Ok(Err(e));
            }
        };
        let health = match &verdict {
            Ok(()) => Health::Healthy,
            Err(e) => {
                error!(app, "{} is not healthy either: {e}", describe(target));
                Health::Unhealthy(e.clone())
            }
        };
        let secs = before + t0.elapsed().as_secs_f64();
        let mut ledger = self.ledger.lock().await;
        match &sw.why {
            SwitchWhy::Deploy { .. } => {
                warn!(
                    app,
                    "an interrupted deploy of {} was undone",
                    describe(other)
                );
                ledger.undone(app, sw).await?;
            }
            SwitchWhy::AutoRollback { failed } => {
                let back = match target {
                    Some(t) => Back::To(Box::new(t.clone()), health),
                    None => Back::Stopped,
                };
                ledger.rolled_back(app, failed.clone(), back, secs).await?;
            }
            SwitchWhy::Rollback { pin } => match target {
                Some(t) => {
                    info!(app, "the local rollback to {} is finished", t.release);
                    ledger
                        .pinned(app, t.clone(), pin.clone(), health, secs)
                        .await?
                }
                None => ledger.undone(app, sw).await?,
            },
        }
        drop(ledger);
        if let Some(x) = &sw.exchange {
            let staged = x.staged.clone();
            let _ = blocking(move || std::fs::remove_dir_all(&staged)).await;
        }
        self.settings
            .faults
            .point(Self::prefix(&sw.why), Step::StateWrite);
        Ok(Ok(target.map(|t| t.release.clone())))
    }

    /// Every journal entry left by a crash, or by a way back that broke in
    /// this process, is finished or undone. One that cannot be finished
    /// now stays; its app is left alone until it is (`carry_out`).
    pub(super) async fn finish_switches(&self) -> Result<(), EngineError> {
        let pending: Vec<(String, Switch)> = {
            let ledger = self.ledger.lock().await;
            ledger
                .state()
                .apps
                .iter()
                .filter_map(|(a, s)| s.switch.clone().map(|sw| (a.clone(), sw)))
                .collect()
        };
        for (app, sw) in pending {
            warn!(app = %app, "finishing an interrupted {}", sw.why.name());
            if let Err(e) = self.finish(&app, &sw).await? {
                warn!(app = %app, "the {} is still not finished: {e}", sw.why.name());
            }
        }
        Ok(())
    }
}

fn describe(l: Option<&Live>) -> String {
    l.map(|l| l.release.clone())
        .unwrap_or_else(|| "nothing".into())
}

/// The file-system half of applying a pair: the exchanged release
/// directory, `secrets/live`, then `current`.
fn link_pair(
    dir: &AppDir,
    target: Option<&Live>,
    exchange: Option<(Exchange, bool)>,
) -> Result<(), String> {
    if let (Some((x, new)), Some(t)) = (&exchange, target) {
        let ino = dir.release_ino(&t.release).map_err(|e| e.to_string())?;
        let exchanged = ino != x.old_ino;
        if exchanged != *new {
            dir.exchange(&x.staged, &t.release)
                .map_err(|e| e.to_string())?;
        }
    }
    match target {
        Some(t) => {
            if let Some(generation) = &t.secrets {
                crate::fsutil::swap_symlink(&dir.path().join("secrets/live"), generation.as_ref())
                    .map_err(|e| {
                        format!("cannot swap {}/secrets/live: {e}", dir.path().display())
                    })?;
            }
            dir.activate(&t.release).map_err(|e| e.to_string())
        }
        None => dir.deactivate().map_err(|e| e.to_string()),
    }
}
