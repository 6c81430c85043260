//! The rollout gate in the pass (SPEC §8). Before this server deploys a new
//! release of an app that has a `rollout`, it asks [`crate::rollout::gate`]
//! whether its wave is open. That decision is pure; this file is the I/O
//! and the memory around it:
//!
//! - **Which statuses speak about the release.** The run: the branch's
//!   first parents from the tip that ask the same release and sha256 (at
//!   most `rollout::RUN_DEPTH`), found by `crate::runs`, the one
//!   implementation `hoist fleet` uses too; each commit's manifests are
//!   read once (a commit's tree never changes).
//! - **Reading them.** Through the forge seam's second verb, conditionally
//!   (the last `ETag` goes back as `If-None-Match`), the tip first. Older
//!   commits of the run are read when first needed, and read again only
//!   when the gate is about to let this server go or to report the halt,
//!   the two decisions that post a final status; a wait is looked at again
//!   anyway. A commit is read no more often than `repo.poll_interval` (a
//!   second after a forge `status` webhook), and a waiting app is not
//!   looked at before the earliest moment its gate can open (the end of a
//!   bake), which the gate gives on the forge's clock and this file turns
//!   into a local instant: forge time `T`, read when the forge's `Date` was
//!   `D`, is `T - D` after that read on this server's monotonic clock.
//!   Nothing compares this server's wall clock with anything.
//! - **What the pass posts.** The wait once per commit (the reporter never
//!   posts a `pending` over a `pending`), and nothing at all when another
//!   pass over the same commit changed nothing (a halt whose list of failed
//!   hosts grew would otherwise write again), so a host writes at most a
//!   `pending` and an outcome per commit, and a halt that ends two more.
//! - **Past a halt after `hoist retry`.** A host that failed the release
//!   itself is halted like the others; `hoist retry` there clears its
//!   recorded failure, and a host counted failed by the statuses but with
//!   no failure of this release on record tries again: its success is what
//!   ends the halt.
//! - **The host's labels.** The inventory's when it lists this server
//!   (SPEC §2), for targeting as for waves, with a warning when the host
//!   config says otherwise.

use super::{Engine, EngineError, lock};
use crate::config::{CommitConfig, Inventory, Manifest};
use crate::plan::{AppPlan, Decision, Outcome};
use crate::report::{Read, ReadError, StatusRead};
use crate::rollout::{self, Ask, CommitAsk, Contexts, Gate, Waves};
use crate::runs::Runs;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant, SystemTime};
use tracing::{info, warn};

/// The shortest time between two reads of one commit's statuses after a
/// forge `status` webhook (SPEC §8).
const AFTER_STATUS_HOOK: Duration = Duration::from_secs(1);

/// What the gate decided for one app in this pass.
#[derive(Clone, Debug, PartialEq)]
enum Verdict {
    Go,
    Wait {
        release: String,
        description: String,
    },
    Halted {
        release: String,
        description: String,
    },
    /// The statuses could not be read: nothing is decided.
    Unread {
        error: String,
        transient: bool,
    },
}

impl Verdict {
    /// What a later pass compares to tell news from a repeat.
    fn kind(&self) -> &'static str {
        match self {
            Verdict::Go => "go",
            Verdict::Wait { .. } => "wait",
            Verdict::Halted { .. } => "halted",
            Verdict::Unread { .. } => "unread",
        }
    }
}

/// The last decision for an app, kept until it may change.
struct Held {
    asked: Ask,
    verdict: Verdict,
    /// Not looked at again before this (local time): the end of a bake.
    not_before: Option<Instant>,
}

/// One commit's statuses as last read, and when (local time).
struct Cached {
    read: StatusRead,
    at: Instant,
}

#[derive(Default)]
struct Gates {
    /// The runs, and what each recent commit asks (made at the first check).
    runs: Option<Runs>,
    reads: HashMap<String, Cached>,
    /// The forge's clock: its `Date` at a read, and when that was (local).
    clock: Option<(SystemTime, Instant)>,
    held: BTreeMap<String, Held>,
    /// This pass's decisions: (tip, by app).
    pass: Option<(String, BTreeMap<String, Verdict>)>,
    /// The kinds of the last pass that posted, for the same tip.
    posted: Option<(String, BTreeMap<String, &'static str>)>,
}

impl Gates {
    /// The forge's clock now: the last `Date` plus the time since, on this
    /// server's monotonic clock.
    fn forge_now(&self) -> Option<SystemTime> {
        self.clock.map(|(date, at)| date + at.elapsed())
    }

    fn saw_date(&mut self, date: SystemTime) {
        let now = Instant::now();
        // Dates have whole seconds: never let the clock go back.
        let date = self.forge_now().map_or(date, |t| t.max(date));
        self.clock = Some((date, now));
    }
}

/// The engine's memory of rollouts between passes.
#[derive(Default)]
pub(super) struct Rollouts {
    gates: tokio::sync::Mutex<Gates>,
    /// When a forge `status` webhook last arrived.
    status_hook: std::sync::Mutex<Option<Instant>>,
    /// The labels last warned about, so the warning is said once.
    warned: std::sync::Mutex<Option<(Vec<String>, Vec<String>)>>,
}

impl super::PassReport {
    /// Nothing failed, and what did not converge waits for its rollout
    /// wave (`hoist once` exits 0 then: the next pass goes on).
    pub fn only_waiting(&self) -> bool {
        let waits = |o: &Outcome| matches!(o, Outcome::Waiting { .. });
        self.outcomes.iter().any(|(_, o)| waits(o))
            && self.outcomes.iter().all(|(_, o)| {
                waits(o)
                    || matches!(
                        o,
                        Outcome::Deployed { .. }
                            | Outcome::Unchanged { .. }
                            | Outcome::Paused
                            | Outcome::Pinned { .. }
                            | Outcome::Removed
                    )
            })
    }
}

/// What the gate needs to know of one app in this pass.
struct Candidate<'a> {
    app: &'a str,
    manifest: &'a Manifest,
    asked: Ask,
    running: Option<Ask>,
    /// This server's own failure of the asked release is on record.
    failed_here: bool,
}

impl Engine {
    /// This server's labels: the inventory's when it lists this host
    /// (SPEC §2), else the host config's.
    pub(super) fn labels_for(&self, inventory: Option<&Inventory>) -> Vec<String> {
        let own = &self.settings.labels;
        let Some(listed) = inventory.and_then(|i| i.labels_of(&self.settings.host)) else {
            return own.clone();
        };
        let listed = listed.to_vec();
        let mut a = own.clone();
        let mut b = listed.clone();
        a.sort();
        b.sort();
        if a != b {
            let mut warned = lock(&self.rollouts.warned);
            let pair = (own.clone(), listed.clone());
            if warned.as_ref() != Some(&pair) {
                warn!(
                    host = %self.settings.host,
                    "the inventory {} lists this server with labels [{}]; the host config's labels [{}] are ignored",
                    crate::config::inventory_path(&self.settings.environment).display(),
                    listed.join(", "),
                    own.join(", ")
                );
                *warned = Some(pair);
            }
        }
        listed
    }

    /// Why the commit cannot be applied with this server's status context
    /// (SPEC §4: a rollout needs `{host}` in it), if it cannot: every
    /// server would report under one context, and the rollout would read
    /// one server's status as another's.
    pub(super) fn context_refusal(&self, config: &CommitConfig) -> Option<String> {
        rollout::context_problem(&self.settings.context, &config.apps)
    }

    /// A forge `status` webhook arrived: the next gate check may read a
    /// second after the last read rather than a poll interval.
    pub fn statuses_changed(&self) {
        *lock(&self.rollouts.status_hook) = Some(Instant::now());
    }

    /// Decides, for every app of the pass whose new release rolls out in
    /// waves, whether this server may start it now. Called once per pass,
    /// before the `pending` status (which says what waits); `carry_out`
    /// then asks [`Engine::rollout_hold`].
    pub(super) async fn check_rollouts(
        &self,
        tip: &str,
        config: &CommitConfig,
        plans: &[AppPlan],
    ) -> Result<(), EngineError> {
        let mut candidates = Vec::new();
        {
            let ledger = self.ledger.lock().await;
            for p in plans {
                let Decision::Deploy { .. } = p.decision else {
                    continue;
                };
                let Some((_, m)) = config.apps.iter().find(|(a, _)| a.as_str() == p.app) else {
                    continue;
                };
                if m.rollout.is_none() {
                    continue;
                }
                let asked = Ask::of(m);
                let st = ledger.app(&p.app);
                let running = st.and_then(|s| s.live()).map(|l| Ask {
                    release: l.release.clone(),
                    sha256: l.sha256.clone(),
                });
                // Only a new release rolls out in waves: a manifest-only
                // or secrets-only change of what runs does not (SPEC §7).
                if running.as_ref() == Some(&asked) {
                    continue;
                }
                let failed_here = st
                    .and_then(|s| s.failed.as_ref())
                    .is_some_and(|f| f.release == asked.release && f.sha256 == asked.sha256);
                candidates.push(Candidate {
                    app: &p.app,
                    manifest: m,
                    asked,
                    running,
                    failed_here,
                });
            }
        }
        let mut gates = self.rollouts.gates.lock().await;
        let mut verdicts = BTreeMap::new();
        for c in &candidates {
            let v = self
                .gate_one(&mut gates, tip, config.inventory.as_ref(), c)
                .await?;
            verdicts.insert(c.app.to_string(), v);
        }
        let apps: BTreeSet<&str> = candidates.iter().map(|c| c.app).collect();
        gates.held.retain(|app, _| apps.contains(app.as_str()));
        gates.pass = Some((tip.to_string(), verdicts));
        Ok(())
    }

    /// What the gate decided for `app` in this pass, when it holds it
    /// back: the outcome to report instead of deploying.
    pub(super) async fn rollout_hold(&self, app: &str, tip: &str) -> Option<Outcome> {
        let gates = self.rollouts.gates.lock().await;
        let (t, verdicts) = gates.pass.as_ref()?;
        if t != tip {
            return None;
        }
        match verdicts.get(app)? {
            Verdict::Go => None,
            Verdict::Wait {
                release,
                description,
            } => Some(Outcome::Waiting {
                release: release.clone(),
                description: description.clone(),
            }),
            Verdict::Halted {
                release,
                description,
            } => Some(Outcome::Halted {
                release: release.clone(),
                description: description.clone(),
            }),
            Verdict::Unread { error, transient } => {
                let error = format!("its rollout cannot read the commit statuses: {error}");
                Some(if *transient {
                    Outcome::Transient { error }
                } else {
                    Outcome::Errored { error }
                })
            }
        }
    }

    /// The apps the gate holds in this pass, with what the `pending`
    /// status says of each (waits first, as they are what a reader of the
    /// status wants to know).
    pub(super) async fn rollout_waits(&self, tip: &str) -> Vec<(String, String)> {
        let gates = self.rollouts.gates.lock().await;
        let Some((t, verdicts)) = gates.pass.as_ref() else {
            return Vec::new();
        };
        if t != tip {
            return Vec::new();
        }
        verdicts
            .iter()
            .filter_map(|(app, v)| match v {
                Verdict::Wait { description, .. } => Some((app.clone(), description.clone())),
                _ => None,
            })
            .collect()
    }

    /// Whether the gate lets `app` deploy in this pass (apps without a
    /// rollout, or not rolling a new release out, always may).
    pub(super) async fn rollout_lets_go(&self, app: &str, tip: &str) -> bool {
        let gates = self.rollouts.gates.lock().await;
        match gates.pass.as_ref() {
            Some((t, verdicts)) if t == tip => {
                verdicts.get(app).is_none_or(|v| matches!(v, Verdict::Go))
            }
            _ => true,
        }
    }

    /// Whether this pass over `tip` has nothing new to say: every outcome
    /// is one that changes nothing, and each app the gate holds is held
    /// as it was when the statuses of this commit were last posted. Then
    /// nothing is posted (SPEC §8: two writes per host and commit).
    pub(super) async fn rollout_quiet(&self, tip: &str, outcomes: &[(String, Outcome)]) -> bool {
        let mut gates = self.rollouts.gates.lock().await;
        let kinds: BTreeMap<String, &'static str> = match gates.pass.as_ref() {
            Some((t, verdicts)) if t == tip => verdicts
                .iter()
                .map(|(a, v)| (a.clone(), v.kind()))
                .collect(),
            _ => BTreeMap::new(),
        };
        let held = outcomes
            .iter()
            .any(|(_, o)| matches!(o, Outcome::Waiting { .. } | Outcome::Halted { .. }));
        let nothing_new = outcomes.iter().all(|(_, o)| {
            matches!(
                o,
                Outcome::Unchanged { .. }
                    | Outcome::Paused
                    | Outcome::Pinned { .. }
                    | Outcome::Held { .. }
                    | Outcome::Waiting { .. }
                    | Outcome::Halted { .. }
            )
        });
        let same = gates
            .posted
            .as_ref()
            .is_some_and(|(t, k)| t == tip && *k == kinds);
        if held && nothing_new && same {
            return true;
        }
        gates.posted = Some((tip.to_string(), kinds));
        false
    }

    /// When the daemon should run a pass again for a waiting app, if that
    /// is sooner than its next poll: a poll interval after the last read
    /// of the tip, and not before the end of the bake.
    pub(super) async fn rollout_next_check(&self, tip: &str) -> Option<Instant> {
        let gates = self.rollouts.gates.lock().await;
        let tip_read = gates.reads.get(tip).map(|c| c.at);
        gates
            .held
            .values()
            .filter(|h| matches!(h.verdict, Verdict::Wait { .. }))
            .map(|h| {
                let after_read = tip_read.map(|t| t + self.settings.poll_interval);
                [h.not_before, after_read]
                    .into_iter()
                    .flatten()
                    .max()
                    .unwrap_or_else(|| Instant::now() + self.settings.poll_interval)
            })
            .min()
    }

    /// The gate for one app.
    async fn gate_one(
        &self,
        gates: &mut Gates,
        tip: &str,
        inventory: Option<&Inventory>,
        c: &Candidate<'_>,
    ) -> Result<Verdict, EngineError> {
        let Some(rollout_cfg) = c.manifest.rollout.as_ref() else {
            return Ok(Verdict::Go);
        };
        // Without an inventory every server is outside it, in the last
        // wave: no wave waits for another and nothing halts.
        if inventory.is_none() {
            return Ok(Verdict::Go);
        }
        if let Some(h) = gates.held.get(c.app)
            && h.asked == c.asked
            && h.not_before.is_some_and(|t| Instant::now() < t)
        {
            return Ok(h.verdict.clone());
        }
        let run = self.run_of(gates, tip, c.app, &c.asked).await?;
        let waves =
            Waves::from_inventory(c.app, rollout_cfg, inventory, c.manifest.targets.as_ref());
        let contexts = Contexts {
            template: &self.settings.context,
            environment: &self.settings.environment,
        };
        // The tip first; older commits of the run when not read yet.
        let mut refreshed: BTreeSet<String> = BTreeSet::new();
        for (i, commit) in run.iter().map(|r| &r.commit).enumerate() {
            let due = i == 0 || !gates.reads.contains_key(commit);
            if due
                && let Err(e) = self
                    .read_statuses(gates, commit, false, &mut refreshed)
                    .await
            {
                return Ok(self.unread(gates, c, e));
            }
        }
        let decide = |gates: &Gates| {
            let statuses: BTreeMap<String, StatusRead> = run
                .iter()
                .filter_map(|r| {
                    gates
                        .reads
                        .get(&r.commit)
                        .map(|x| (r.commit.clone(), x.read.clone()))
                })
                .collect();
            let now = gates.forge_now().unwrap_or(SystemTime::UNIX_EPOCH);
            let input = rollout::Input {
                app: c.app,
                rollout: rollout_cfg,
                waves: &waves,
                asked: &c.asked,
                history: &run,
                statuses: &statuses,
                contexts,
                now,
            };
            let progress = rollout::progress(&input);
            let gate = rollout::gate(&progress, &waves, &self.settings.host, c.running.as_ref());
            (progress, gate, now)
        };
        let (mut progress, mut gate, mut now) = decide(gates);
        if matches!(gate, Gate::Go | Gate::Running | Gate::Halted { .. }) {
            // A final status follows: decide on every commit of the run
            // as the forge has it now. Before going, that is now, read
            // again whatever the interval (once per release and server):
            // a failure posted meanwhile must stop it.
            let go = !matches!(gate, Gate::Halted { .. });
            for r in &run {
                if let Err(e) = self
                    .read_statuses(gates, &r.commit, go, &mut refreshed)
                    .await
                {
                    return Ok(self.unread(gates, c, e));
                }
            }
            (progress, gate, now) = decide(gates);
        }
        let host = &self.settings.host;
        let verdict = match gate {
            Gate::Go | Gate::Running => Verdict::Go,
            Gate::Halted { .. }
                if !c.failed_here
                    && progress.failed.iter().any(|f| f == host)
                    && progress.host(host).is_some_and(|h| !h.missed_deadline) =>
            {
                info!(
                    app = c.app,
                    release = %c.asked.release,
                    "this server failed the release, and its failure was cleared (hoist retry): trying again past the halt"
                );
                Verdict::Go
            }
            Gate::Halted { description, .. } => Verdict::Halted {
                release: c.asked.release.clone(),
                description,
            },
            Gate::Wait {
                not_before,
                description,
                ..
            } => {
                let local = not_before.map(|t| Instant::now() + rollout::wait_time(t, now));
                gates.held.insert(
                    c.app.to_string(),
                    Held {
                        asked: c.asked.clone(),
                        verdict: Verdict::Wait {
                            release: c.asked.release.clone(),
                            description: description.clone(),
                        },
                        not_before: local,
                    },
                );
                return Ok(Verdict::Wait {
                    release: c.asked.release.clone(),
                    description,
                });
            }
        };
        gates.held.insert(
            c.app.to_string(),
            Held {
                asked: c.asked.clone(),
                verdict: verdict.clone(),
                not_before: None,
            },
        );
        Ok(verdict)
    }

    /// The statuses could not be read: say so, and do not ask again
    /// before a poll interval, or before the forge said to (a rate limit).
    fn unread(&self, gates: &mut Gates, c: &Candidate<'_>, e: ReadError) -> Verdict {
        warn!(
            app = c.app,
            "cannot read the commit statuses for its rollout: {e}"
        );
        let wait = match &e {
            ReadError::Transient {
                retry_after: Some(d),
                ..
            } => (*d).max(self.settings.poll_interval),
            _ => self.settings.poll_interval,
        };
        let v = Verdict::Unread {
            transient: e.is_transient(),
            error: e.to_string(),
        };
        gates.held.insert(
            c.app.to_string(),
            Held {
                asked: c.asked.clone(),
                verdict: v.clone(),
                not_before: Some(Instant::now() + wait),
            },
        );
        v
    }

    /// Reads (conditionally) one commit's statuses, unless it was read
    /// already in this check or, unless `now`, less than a poll interval
    /// ago (a second after a `status` webhook).
    async fn read_statuses(
        &self,
        gates: &mut Gates,
        commit: &str,
        now: bool,
        refreshed: &mut BTreeSet<String>,
    ) -> Result<(), ReadError> {
        if refreshed.contains(commit) {
            return Ok(());
        }
        if !now && let Some(c) = gates.reads.get(commit) {
            let hook = *lock(&self.rollouts.status_hook);
            let gap = if hook.is_some_and(|h| h > c.at) {
                AFTER_STATUS_HOOK
            } else {
                self.settings.poll_interval
            };
            if c.at.elapsed() < gap {
                return Ok(());
            }
        }
        let etag = gates.reads.get(commit).and_then(|c| c.read.etag.clone());
        let read = self.parts.forge.statuses(commit, etag.as_deref()).await?;
        gates.saw_date(read.date());
        let at = Instant::now();
        match read {
            Read::Changed(read) => {
                gates.reads.insert(commit.to_string(), Cached { read, at });
            }
            Read::NotModified { .. } => {
                if let Some(c) = gates.reads.get_mut(commit) {
                    c.at = at;
                }
            }
        }
        refreshed.insert(commit.to_string());
        Ok(())
    }

    /// The commits, newest first from `tip`, that ask `asked` of `app`
    /// without a break (at most `rollout::RUN_DEPTH`). Forgets what it
    /// knew of commits that left the branch's recent history.
    async fn run_of(
        &self,
        gates: &mut Gates,
        tip: &str,
        app: &str,
        asked: &Ask,
    ) -> Result<Vec<CommitAsk>, EngineError> {
        let runs = gates
            .runs
            .get_or_insert_with(|| Runs::new(self.parts.source.clone()));
        let history = runs.first_parents(tip, rollout::RUN_DEPTH).await?;
        let run = runs.run(&history, 0, app, asked, 0).await?;
        runs.keep_only(&history);
        let recent: BTreeSet<&String> = history.iter().collect();
        gates.reads.retain(|c, _| recent.contains(c));
        Ok(run.commits)
    }
}
