//! The ledger: the one owner of what this server records about its apps:
//! `state.json`, `history.jsonl` and the metrics that mirror them.
//!
//! Every change is a named transition (`staged`, `begin`, `deployed`,
//! `rolled_back`, `pinned`, `removed`, ...) that changes the state, writes
//! state.json, appends to the history and updates the metrics, in that
//! order. Nothing else writes state: the step machine and the orchestrator
//! call transitions, so "which fields change together" is written down once,
//! here, instead of at every call site.
//!
//! Writes happen on the blocking pool (an fsync can take tens of
//! milliseconds), while the ledger is locked, so two transitions of two
//! apps deploying at once are written in the order they happened.

use super::blocking;
use crate::metrics::Metrics;
use crate::state::{
    self, AppState, Event, Failed, Health, KnownRelease, Life, Live, Pin, State, StateError,
    Switch, now_rfc3339,
};
use std::path::PathBuf;
use std::sync::Arc;
use tracing::warn;

pub struct Ledger {
    dir: PathBuf,
    state: State,
    metrics: Arc<Metrics>,
}

/// How an unhealthy release was left.
#[derive(Debug, Clone)]
pub enum Back {
    /// The pair before runs again, with this health.
    To(Box<Live>, Health),
    /// There was nothing to go back to: the app's processes are deleted.
    Stopped,
}

/// `live` runs from `releases/<release>` as it is on disk now: the
/// record of that directory's links is `live`'s, and it was just used.
fn linked_as(st: &mut AppState, live: &Live, seq: u64) {
    if let Some(k) = st.releases.get_mut(&live.release) {
        k.used = seq;
        k.manifest = Some(live.manifest.clone());
    }
}

impl Ledger {
    /// Loads `<dir>/state.json` and sets the metrics from it.
    pub async fn load(dir: PathBuf, metrics: Arc<Metrics>) -> Result<Ledger, StateError> {
        let d = dir.clone();
        let state = blocking(move || State::load(&d)).await?;
        for (app, st) in &state.apps {
            metrics.set_current_release(app, st.release());
        }
        Ok(Ledger {
            dir,
            state,
            metrics,
        })
    }

    /// A ledger over `state`, for tests.
    #[cfg(test)]
    pub fn new_for_test(dir: PathBuf, state: State, metrics: Arc<Metrics>) -> Ledger {
        Ledger {
            dir,
            state,
            metrics,
        }
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn app(&self, app: &str) -> Option<&AppState> {
        self.state.apps.get(app)
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    async fn save(&self) -> Result<(), StateError> {
        let bytes = self.state.to_bytes();
        let dir = self.dir.clone();
        blocking(move || state::write_state(&dir, &bytes)).await
    }

    async fn history(&self, ev: Event) {
        let dir = self.dir.clone();
        if let Err(e) = blocking(move || state::append_history(&dir, &ev)).await {
            warn!("cannot append to the history: {e}");
        }
    }

    /// A release was unpacked into `releases/` (or is about to be reused):
    /// remember its content hash, and bump its recency. `linked`: the
    /// directory at `releases/<release>` holds `live`'s links now (a fresh
    /// install, or a reuse as linked); not so for a running release whose
    /// re-linked copy waits in staging for the switch to exchange it in,
    /// whose record of links stays what is on disk until then.
    pub async fn staged(&mut self, app: &str, live: &Live, linked: bool) -> Result<(), StateError> {
        let seq = self.state.next_seq();
        let releases = &mut self.state.app_mut(app).releases;
        let manifest = match releases.get(&live.release) {
            Some(k) if !linked => k.manifest.clone(),
            _ => Some(live.manifest.clone()),
        };
        releases.insert(
            live.release.clone(),
            KnownRelease {
                sha256: live.sha256.clone(),
                used: seq,
                manifest,
            },
        );
        self.save().await
    }

    /// The journal: `switch` is about to change what runs. Durable before
    /// anything on disk or in pm2 changes.
    pub async fn begin(&mut self, app: &str, switch: Switch) -> Result<(), StateError> {
        self.state.app_mut(app).switch = Some(switch);
        self.save().await
    }

    /// A switch that did not start after all (its first step failed before
    /// changing anything): forget it.
    pub async fn abandon(&mut self, app: &str) -> Result<(), StateError> {
        self.state.app_mut(app).switch = None;
        self.save().await
    }

    /// A deploy passed its gate: `live` runs for `commit`.
    pub async fn deployed(
        &mut self,
        app: &str,
        live: Live,
        commit: &str,
        seconds: f64,
        note: Option<String>,
        output: Option<String>,
    ) -> Result<(), StateError> {
        let seq = self.state.next_seq();
        let st = self.state.app_mut(app);
        let from = match &st.life {
            Life::Running { live: old, .. } => Some(old.clone()),
            _ => None,
        };
        let from_name = from.as_ref().map(|l| l.release.clone());
        if let Some(old) = from
            && (old.release != live.release || old.secrets != live.secrets)
        {
            st.previous = Some(old);
        }
        linked_as(st, &live, seq);
        let release = live.release.clone();
        st.life = Life::Running {
            live,
            commit: Some(commit.to_string()),
            since: now_rfc3339(),
            health: Health::Healthy,
            pin: None,
        };
        st.switch = None;
        st.failed = None;
        st.last_error = note.clone();
        self.save().await?;
        self.metrics.deploy(app, "success", seconds);
        self.metrics.set_current_release(app, Some(&release));
        let mut ev = Event::new("deploy")
            .app(app)
            .release(&release)
            .from(from_name.as_deref().filter(|f| *f != release))
            .commit(commit)
            .seconds(seconds)
            .output(output);
        if let Some(n) = note {
            ev = ev.message(n);
        }
        self.history(ev).await;
        Ok(())
    }

    /// A deploy failed after its switch: what runs now, and the failure
    /// that holds the commit.
    pub async fn rolled_back(
        &mut self,
        app: &str,
        failed: Failed,
        back: Back,
        seconds: f64,
    ) -> Result<(), StateError> {
        let seq = self.state.next_seq();
        let st = self.state.app_mut(app);
        let to = match back {
            Back::To(live, health) => {
                let live = *live;
                // Back on its directory as it was (an exchanged copy is
                // exchanged back out): the record follows what runs.
                linked_as(st, &live, seq);
                let name = live.release.clone();
                let keep_commit = st.release() == Some(name.as_str());
                let (commit, pin) = match &st.life {
                    Life::Running { commit, pin, .. } if keep_commit => {
                        (commit.clone(), pin.clone())
                    }
                    _ => (None, None),
                };
                st.life = Life::Running {
                    live,
                    commit,
                    since: now_rfc3339(),
                    health,
                    pin,
                };
                Some(name)
            }
            Back::Stopped => {
                st.life = Life::Stopped {
                    since: now_rfc3339(),
                    reason: failed.error.clone(),
                };
                None
            }
        };
        st.switch = None;
        st.last_error = Some(failed.error.clone());
        st.failed = Some(failed.clone());
        self.save().await?;
        self.metrics.deploy(app, "failure", seconds);
        self.metrics.set_current_release(app, to.as_deref());
        self.history(
            Event::new("rollback")
                .app(app)
                .release(to.as_deref().unwrap_or("-"))
                .from(Some(&failed.release))
                .commit(&failed.commit)
                .message(failed.error),
        )
        .await;
        Ok(())
    }

    /// A deploy failed before anything changed what runs (a
    /// `before_activate` hook): the commit is held for the app.
    pub async fn failed_before_switch(
        &mut self,
        app: &str,
        failed: Failed,
        seconds: f64,
        output: Option<String>,
    ) -> Result<(), StateError> {
        let st = self.state.app_mut(app);
        st.last_error = Some(failed.error.clone());
        st.failed = Some(failed.clone());
        self.save().await?;
        self.metrics.deploy(app, "failure", seconds);
        self.history(
            Event::new("failure")
                .app(app)
                .release(&failed.release)
                .commit(&failed.commit)
                .message(failed.error)
                .output(output),
        )
        .await;
        Ok(())
    }

    /// The release could not be used at all (checksum, signature, unsafe
    /// archive, a release name reused for other content, secrets this
    /// server cannot open). `hold`: remember it for the commit, so the same
    /// bad bytes are not fetched again at every poll.
    pub async fn refused(
        &mut self,
        app: &str,
        failed: Failed,
        hold: bool,
    ) -> Result<(), StateError> {
        let st = self.state.app_mut(app);
        st.last_error = Some(failed.error.clone());
        if hold {
            st.failed = Some(failed.clone());
        }
        self.save().await?;
        self.metrics.deploy(app, "error", 0.0);
        self.history(
            Event::new("error")
                .app(app)
                .release(&failed.release)
                .commit(&failed.commit)
                .message(failed.error),
        )
        .await;
        Ok(())
    }

    /// A passing fault: remembered as the app's last error only.
    pub async fn transient(&mut self, app: &str, error: &str) -> Result<(), StateError> {
        self.state.app_mut(app).last_error = Some(error.to_string());
        self.save().await
    }

    /// `hoist rollback` finished: `to` runs, held by `pin`.
    pub async fn pinned(
        &mut self,
        app: &str,
        to: Live,
        pin: Pin,
        health: Health,
        seconds: f64,
    ) -> Result<(), StateError> {
        let seq = self.state.next_seq();
        let st = self.state.app_mut(app);
        let from = st.live().cloned();
        linked_as(st, &to, seq);
        let release = to.release.clone();
        st.life = Life::Running {
            live: to,
            commit: None,
            since: now_rfc3339(),
            health,
            pin: Some(pin),
        };
        let from_name = from.as_ref().map(|l| l.release.clone());
        if from.is_some() {
            st.previous = from;
        }
        st.switch = None;
        st.failed = None;
        self.save().await?;
        self.metrics.set_current_release(app, Some(&release));
        self.history(
            Event::new("rollback")
                .app(app)
                .release(&release)
                .from(from_name.as_deref())
                .seconds(seconds)
                .message("local rollback by an operator; held until the branch changes this app"),
        )
        .await;
        Ok(())
    }

    /// Recovery undid an interrupted deploy: what ran before runs again
    /// (recorded as it was), and the next pass deploys the commit anew.
    pub async fn undone(&mut self, app: &str, switch: &Switch) -> Result<(), StateError> {
        let seq = self.state.next_seq();
        let st = self.state.app_mut(app);
        // What ran before runs again, from its directory as it was.
        if let Some(from) = &switch.from {
            linked_as(st, from, seq);
        }
        st.switch = None;
        let release = st.release().map(String::from);
        self.save().await?;
        self.metrics.set_current_release(app, release.as_deref());
        let to = switch
            .to
            .as_ref()
            .map(|l| l.release.as_str())
            .unwrap_or("-");
        self.history(Event::new("recover").app(app).release(to).message(format!(
            "an interrupted {} was undone; it is tried again",
            switch.why.name()
        )))
        .await;
        Ok(())
    }

    /// The app left the manifests or this server.
    pub async fn removed(&mut self, app: &str, commit: &str) -> Result<(), StateError> {
        let st = self.state.app_mut(app);
        let last = st.live().cloned();
        st.life = Life::Removed {
            since: now_rfc3339(),
            last,
        };
        st.previous = None;
        self.save().await?;
        self.metrics.set_current_release(app, None);
        self.history(
            Event::new("remove")
                .app(app)
                .commit(commit)
                .message("processes deleted; files kept"),
        )
        .await;
        Ok(())
    }

    /// The branch changed an app held by a local rollback: the pin ends.
    pub async fn unpinned(&mut self, app: &str, commit: &str) -> Result<(), StateError> {
        if let Life::Running { pin, .. } = &mut self.state.app_mut(app).life {
            *pin = None;
        }
        self.save().await?;
        self.history(Event::new("unpin").app(app).commit(commit))
            .await;
        Ok(())
    }

    /// `hoist retry APP`: forget the failure so the next pass tries again.
    pub async fn retry(&mut self, app: &str) -> Result<Failed, String> {
        let st = self
            .state
            .apps
            .get_mut(app)
            .ok_or_else(|| format!("app {app} has never been deployed on this server"))?;
        let f = st
            .failed
            .take()
            .ok_or_else(|| format!("{app} has no failed deploy to retry"))?;
        // The commit must be applied again even though it is the last one seen.
        self.state.last_commit = None;
        self.save().await.map_err(|e| e.to_string())?;
        self.history(
            Event::new("retry")
                .app(app)
                .release(&f.release)
                .commit(&f.commit),
        )
        .await;
        Ok(f)
    }

    /// Releases removed from disk by pruning.
    pub async fn pruned(&mut self, app: &str, gone: &[String]) -> Result<(), StateError> {
        if gone.is_empty() {
            return Ok(());
        }
        let st = self.state.app_mut(app);
        for r in gone {
            st.releases.remove(r);
        }
        self.save().await
    }

    /// A pass finished with `commit` (whatever its outcome).
    pub async fn commit_done(&mut self, commit: &str) -> Result<(), StateError> {
        if self.state.last_commit.as_deref() == Some(commit) {
            return Ok(());
        }
        self.state.last_commit = Some(commit.to_string());
        self.save().await
    }

    /// A commit refused whole (bad signature, invalid manifests).
    pub async fn commit_refused(&mut self, commit: &str, msg: &str) -> Result<(), StateError> {
        self.history(Event::new("error").commit(commit).message(msg))
            .await;
        self.commit_done(commit).await
    }

    /// The content hashes of every release kept on disk, for pruning the
    /// artifact cache.
    pub fn kept_hashes(&self) -> std::collections::HashSet<String> {
        self.state
            .apps
            .values()
            .flat_map(|s| s.releases.values().map(|k| k.sha256.clone()))
            .collect()
    }
}
