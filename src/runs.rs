//! The run of commits that ask a release (SPEC §8): the commits of the
//! branch, on its first parents, that ask an app's release and sha256
//! without a break. A host's success on any of them counts, so a commit
//! that leaves the app alone neither restarts a bake nor skips a wave.
//!
//! The daemons' gate (`engine/rollout.rs`) and `hoist fleet` must find the
//! same run, or `hoist fleet` would show a rollout the servers do not
//! follow; so both ask this module, which reads each commit's manifests
//! once (a commit's tree never changes) through the same
//! `Source::manifests_at` a pass uses, so the same commits are invalid
//! (and break a run) for both.
//!
//! The rule: around the commit looked at (the tip for a daemon, any commit
//! of the branch for `hoist fleet`), newer commits that still ask the
//! release belong to the run too, up to the first that asks another one
//! (which supersedes it); from the newest, the run goes back while commits
//! ask the release, at most [`RUN_DEPTH`] of them, the same for everyone.

use std::collections::HashMap;

use crate::config::AppSet;
use crate::rollout::{Ask, CommitAsk, RUN_DEPTH};
use crate::source::{Source, SourceError};

/// A release's run, and what is around it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Run {
    /// The commits that ask the release without a break, newest first (at
    /// most [`RUN_DEPTH`]).
    pub commits: Vec<CommitAsk>,
    /// Up to the number asked of commits just before the run (older), with
    /// what they ask: what the hosts ran before.
    pub before: Vec<CommitAsk>,
    /// The commit just above the run (newer than the one looked at) that
    /// asks something else of the app, and what (None: no release, or an
    /// invalid commit).
    pub superseded_by: Option<(String, Option<Ask>)>,
}

impl Run {
    /// The run, then the commits before it: the history a rollout's
    /// progress is read from (`rollout::Input::history`).
    pub fn history(&self) -> Vec<CommitAsk> {
        self.commits.iter().chain(&self.before).cloned().collect()
    }
}

/// Finds runs, remembering what each commit asks.
pub struct Runs {
    source: Source,
    /// Each commit's valid manifests, or why it has none.
    apps: HashMap<String, Result<AppSet, String>>,
}

impl Runs {
    pub fn new(source: Source) -> Runs {
        Runs {
            source,
            apps: HashMap::new(),
        }
    }

    /// `from` and its first parents, newest first, at most `depth`.
    pub async fn first_parents(
        &self,
        from: &str,
        depth: usize,
    ) -> Result<Vec<String>, SourceError> {
        let src = self.source.clone();
        let from = from.to_string();
        blocking(move || src.first_parents(&from, depth)).await
    }

    /// The commit's valid manifests, or why it has none (read once).
    pub async fn apps_at(&mut self, commit: &str) -> Result<Result<AppSet, String>, SourceError> {
        if let Some(a) = self.apps.get(commit) {
            return Ok(a.clone());
        }
        let src = self.source.clone();
        let c = commit.to_string();
        let apps = blocking(move || src.manifests_at(&c))
            .await?
            .map(|config| config.apps)
            .map_err(|invalid| invalid.to_string());
        self.apps.insert(commit.to_string(), apps.clone());
        Ok(apps)
    }

    /// What `commit` asks of `app` (None: the app is not there, or the
    /// commit is invalid).
    pub async fn ask(&mut self, commit: &str, app: &str) -> Result<Option<Ask>, SourceError> {
        Ok(self.apps_at(commit).await?.ok().and_then(|apps| {
            apps.iter()
                .find(|(n, _)| n.as_str() == app)
                .map(|(_, m)| Ask::of(m))
        }))
    }

    /// The run of `asked` around `history[at]` (`history`: first parents
    /// from the branch tip, newest first), and up to `before` commits
    /// before it.
    pub async fn run(
        &mut self,
        history: &[String],
        at: usize,
        app: &str,
        asked: &Ask,
        before: usize,
    ) -> Result<Run, SourceError> {
        let mut run = Run::default();
        let mut start = at.min(history.len());
        while start > 0 {
            let newer = &history[start - 1];
            let ask = self.ask(newer, app).await?;
            if ask.as_ref() == Some(asked) {
                start -= 1;
            } else {
                run.superseded_by = Some((newer.clone(), ask));
                break;
            }
        }
        for c in &history[start..] {
            let ask = self.ask(c, app).await?;
            let asks_it = ask.as_ref() == Some(asked);
            if run.before.is_empty() && asks_it {
                if run.commits.len() == RUN_DEPTH {
                    // Deeper than anyone looks: nothing before it either.
                    break;
                }
                run.commits.push(CommitAsk {
                    commit: c.clone(),
                    ask,
                });
                continue;
            }
            if run.before.len() == before {
                break;
            }
            run.before.push(CommitAsk {
                commit: c.clone(),
                ask,
            });
        }
        Ok(run)
    }

    /// Forgets every commit but `keep` (those that left the branch's recent
    /// history).
    pub fn keep_only(&mut self, keep: &[String]) {
        self.apps.retain(|c, _| keep.contains(c));
    }
}

/// Runs a git step on the blocking pool.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    match tokio::task::spawn_blocking(f).await {
        Ok(v) => v,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    }
}
