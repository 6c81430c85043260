//! `hoist fleet [REF] [--json] [--wait [--timeout D]]` (SPEC §5, §8): one
//! commit across the whole environment, by app, by wave, by host, from the
//! commit's inventory and manifests and the commit statuses alone.
//!
//! It runs where no daemon does (a CI job), so it needs only `environment`,
//! `repo` and `status` from a host config. The config repo is fetched into
//! a temporary mirror of its own (never a daemon's `state_dir`), statuses
//! are read through the provider the daemons post with, and every state
//! shown is [`crate::rollout`]'s decision, the one the daemons make: what
//! `hoist fleet` calls halted is what stops the servers.
//!
//! The commit looked at is REF (a commit id or the branch name) or the
//! branch tip, and each app's run is taken around it on the branch's first
//! parents: newer commits that still ask the same release count too, as
//! they do for the daemons. `--wait` is the gate of a promotion pipeline:
//! it looks again, every `repo.poll_interval` (or at the end of a bake,
//! when nothing else can change before), with conditional reads, until
//! every app shown is rolled out (exit 0), or one is halted, failed, or
//! superseded by a newer release on the branch, or the time is up
//! (exit 1).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::config::{
    AppSet, ConfigError, HostConfig, Inventory, Rollout, inventory_path, parse_inventory,
};
use crate::report::{self, Provider, Read, StatusRead};
use crate::rollout::{
    self, Ask, CommitAsk, Contexts, HostProgress, HostState, Opening, Overall, Progress, Waves,
};
use crate::runs::Runs;
use crate::source::{Source, SourceError};

/// Commits looked at beyond a run, to name what a host ran before.
const PREVIOUS_DEPTH: usize = 5;

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    /// The host config (or a key `hoist fleet` needs) is unusable: exit 2.
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The forge could not be read.
    #[error("{0}")]
    Forge(String),
}

impl FleetError {
    /// The exit code for it (SPEC §5).
    pub fn exit_code(&self) -> u8 {
        match self {
            FleetError::Config(_) => 2,
            _ => 1,
        }
    }
}

/// What `hoist fleet` was asked.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// A commit id or the branch name; the branch tip when absent.
    pub reference: Option<String>,
    pub json: bool,
    pub wait: bool,
    /// With `wait`: give up (exit 1) after this long.
    pub timeout: Option<Duration>,
}

/// `--timeout`'s value, or one sentence naming the flag.
pub fn parse_timeout(value: &str) -> Result<Duration, String> {
    match humantime::parse_duration(value.trim()) {
        Ok(d) if !d.is_zero() => Ok(d),
        _ => Err(format!(
            "--timeout {value:?} is not a length of time; give one such as 30m or 90s"
        )),
    }
}

/// The command: look (and with `--wait`, keep looking), print, and return
/// the exit code.
pub async fn command(config: &Path, opts: &Options) -> Result<u8, FleetError> {
    let cfg = HostConfig::load(config).map_err(|e| FleetError::Config(e.to_string()))?;
    let mut fleet = Fleet::open(&cfg)?;
    if !opts.wait {
        let snap = fleet.look(opts.reference.as_deref()).await?;
        print(&snap, opts.json);
        return Ok(0);
    }
    let poll = cfg.repo.poll_interval.0.max(Duration::from_secs(1));
    let (snap, verdict) = fleet
        .wait(opts.reference.as_deref(), poll, opts.timeout, |s| {
            eprintln!("hoist fleet: {}", one_line(s));
        })
        .await?;
    print(&snap, opts.json);
    match verdict {
        Verdict::RolledOut => Ok(0),
        Verdict::TimedOut => {
            eprintln!(
                "hoist: timed out after {} waiting for the rollout: {}",
                humantime::format_duration(opts.timeout.unwrap_or_default()),
                one_line(&snap)
            );
            Ok(1)
        }
        _ => {
            eprintln!("hoist: {}", one_line(&snap));
            Ok(1)
        }
    }
}

/// How a look at the fleet ends a `--wait`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Every app shown runs its release on every host.
    RolledOut,
    InProgress,
    /// An app's rollout is halted.
    Halted,
    /// Every host reported and some failed, or a newer release on the
    /// branch replaced one being waited for.
    Failed,
    /// The commit cannot be applied (an invalid manifest or inventory).
    Invalid,
    TimedOut,
}

/// One app at the commit.
#[derive(Clone, Debug)]
pub struct AppView {
    pub app: String,
    pub asked: Ask,
    /// The manifest's rollout (None: every host at once).
    pub rollout: Option<Rollout>,
    /// The commit changes the app's release (against its first parent).
    pub changed: bool,
    pub progress: Progress,
    /// Servers that posted for the app but are not in the inventory.
    pub outsiders: Vec<HostProgress>,
    /// Whether the environment has an inventory (without one, the hosts
    /// shown are the servers that posted).
    pub inventory: bool,
    /// For hosts not running the release: what they ran before, when a
    /// recent commit says.
    pub previous: BTreeMap<String, String>,
    /// A newer commit on the branch asks another release: (commit, release).
    pub superseded_by: Option<(String, String)>,
}

impl AppView {
    pub fn verdict(&self) -> Verdict {
        if self.superseded_by.is_some() {
            return Verdict::Failed;
        }
        match self.progress.overall() {
            Overall::RolledOut if self.waiting_for_a_first_report() => Verdict::InProgress,
            Overall::RolledOut => Verdict::RolledOut,
            Overall::InProgress => Verdict::InProgress,
            Overall::Failed => Verdict::Failed,
            Overall::Halted => Verdict::Halted,
        }
    }

    /// Without an inventory nobody is known until someone posts.
    fn waiting_for_a_first_report(&self) -> bool {
        !self.inventory && self.progress.waves.iter().all(|w| w.hosts.is_empty())
    }

    /// The release a host runs, as far as the statuses say.
    fn release_of(&self, h: &HostProgress) -> Option<&str> {
        if h.state == HostState::Live {
            Some(&self.asked.release)
        } else {
            self.previous.get(&h.host).map(String::as_str)
        }
    }
}

/// What one look at the fleet found.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub commit: String,
    /// The branch tip when looked at.
    pub tip: String,
    pub branch: String,
    pub environment: String,
    /// The forge's clock at the last read (None: nothing was read).
    pub forge_time: Option<SystemTime>,
    /// Why the commit cannot be applied, when it cannot.
    pub invalid: Option<String>,
    pub apps: Vec<AppView>,
    /// Apps the commit removes.
    pub removed: Vec<String>,
}

impl Snapshot {
    /// The worst of the apps: invalid, halted, failed, in progress, rolled out.
    pub fn verdict(&self) -> Verdict {
        if self.invalid.is_some() {
            return Verdict::Invalid;
        }
        let verdicts: Vec<Verdict> = self.apps.iter().map(AppView::verdict).collect();
        for v in [Verdict::Halted, Verdict::Failed, Verdict::InProgress] {
            if verdicts.contains(&v) {
                return v;
            }
        }
        Verdict::RolledOut
    }
}

/// What `hoist fleet` keeps between looks: the mirror, the parsed commits,
/// and the last read of each commit's statuses (for its `ETag`).
pub struct Fleet {
    source: Source,
    provider: Arc<dyn Provider>,
    branch: String,
    environment: String,
    template: String,
    /// Keeps the temporary mirror alive (removed when dropped).
    _mirror: tempfile::TempDir,
    /// The runs, and each commit's manifests: the daemons' own reading.
    runs: Runs,
    inventories: HashMap<String, Result<Option<Inventory>, String>>,
    reads: HashMap<String, StatusRead>,
    /// Commits read only to name previous releases: read once.
    read_once: BTreeSet<String>,
    forge_time: Option<SystemTime>,
}

impl Fleet {
    /// Checks the config's `status:` and prepares a private mirror.
    pub fn open(cfg: &HostConfig) -> Result<Fleet, FleetError> {
        if cfg.status.provider == crate::config::ProviderName::None {
            return Err(FleetError::Config(format!(
                "{}: hoist fleet reads the servers' commit statuses, so status.provider must be github, gitea, gitlab or file",
                cfg.source_path.display()
            )));
        }
        let provider = crate::setup::build_provider(cfg)
            .map_err(|e| FleetError::Config(format!("{}: {e}", cfg.source_path.display())))?;
        let mirror = tempfile::Builder::new()
            .prefix("hoist-fleet-")
            .tempdir()
            .map_err(|e| {
                FleetError::Config(format!(
                    "cannot make a temporary directory for the config repository mirror: {e}"
                ))
            })?;
        let source = Source::new(cfg).with_mirror(mirror.path().join("repo.git"));
        Ok(Fleet {
            runs: Runs::new(source.clone()),
            source,
            provider,
            branch: cfg.repo.branch.clone(),
            environment: cfg.environment_name(),
            template: cfg.status.context.clone(),
            _mirror: mirror,
            inventories: HashMap::new(),
            reads: HashMap::new(),
            read_once: BTreeSet::new(),
            forge_time: None,
        })
    }

    /// Look until the verdict is final or `timeout` passes, calling
    /// `progress` whenever the one-line summary changes.
    pub async fn wait(
        &mut self,
        reference: Option<&str>,
        poll: Duration,
        timeout: Option<Duration>,
        mut progress: impl FnMut(&Snapshot),
    ) -> Result<(Snapshot, Verdict), FleetError> {
        let started = Instant::now();
        let mut last_line = String::new();
        let mut last: Option<Snapshot> = None;
        loop {
            let snap = match self.look(reference).await {
                Ok(s) => s,
                // A forge or git hiccup: say so and look again.
                Err(e @ (FleetError::Forge(_) | FleetError::Source(_))) if last.is_some() => {
                    eprintln!("hoist fleet: {e}; trying again");
                    last.clone().expect("checked")
                }
                Err(e) => return Err(e),
            };
            let line = one_line(&snap);
            if line != last_line {
                progress(&snap);
                last_line = line;
            }
            let verdict = snap.verdict();
            if verdict != Verdict::InProgress {
                return Ok((snap, verdict));
            }
            let mut pause = next_look(&snap, poll);
            if let Some(t) = timeout {
                let left = t.saturating_sub(started.elapsed());
                if left.is_zero() {
                    return Ok((snap, Verdict::TimedOut));
                }
                pause = pause.min(left);
            }
            last = Some(snap);
            tokio::time::sleep(pause).await;
        }
    }

    /// One look: the branch, the commit, its apps, and their statuses.
    pub async fn look(&mut self, reference: Option<&str>) -> Result<Snapshot, FleetError> {
        let src = self.source.clone();
        let reference = reference.map(str::to_string);
        let looked = blocking(move || {
            let tip = src.poll()?;
            let commit = match &reference {
                Some(r) => match src.resolve(r) {
                    Ok(c) => c,
                    Err(_) => return Ok(Err(r.clone())),
                },
                None => tip.clone(),
            };
            let depth = 2 * rollout::RUN_DEPTH + PREVIOUS_DEPTH;
            let mut history = src.first_parents(&tip, depth)?;
            if let Some(i) = history.iter().position(|c| *c == commit) {
                // Keep the newer commits: a run can reach past REF.
                history.truncate(i + rollout::RUN_DEPTH + PREVIOUS_DEPTH + 1);
            } else {
                // Not on the branch's first parents: its own history.
                history = src.first_parents(&commit, rollout::RUN_DEPTH + PREVIOUS_DEPTH + 1)?;
            }
            Ok(Ok((tip, commit, history)))
        })
        .await?;
        let (tip, commit, history) = looked.map_err(|unknown| {
            FleetError::Config(format!(
                "{unknown} is neither a commit of branch {} of {} nor that branch's name",
                self.branch,
                self.source.shown_url()
            ))
        })?;
        let at = history.iter().position(|c| *c == commit).unwrap_or(0);

        let mut snap = Snapshot {
            commit: commit.clone(),
            tip,
            branch: self.branch.clone(),
            environment: self.environment.clone(),
            forge_time: self.forge_time,
            invalid: None,
            apps: Vec::new(),
            removed: Vec::new(),
        };
        let apps = match self.apps_at(&commit).await? {
            Ok(a) => a,
            Err(why) => {
                snap.invalid = Some(why);
                return Ok(snap);
            }
        };
        let inventory = match self.inventory_at(&commit).await? {
            Ok(i) => i,
            Err(why) => {
                snap.invalid = Some(why);
                return Ok(snap);
            }
        };
        let parent = match history.get(at + 1) {
            Some(p) => self.apps_at(p).await?.ok(),
            None => None,
        };

        // Which apps to show, and the commits each one's story is on.
        struct Plan {
            app: String,
            manifest: crate::config::Manifest,
            asked: Ask,
            changed: bool,
            history: Vec<CommitAsk>,
            run_len: usize,
            superseded_by: Option<(String, String)>,
        }
        let mut plans = Vec::new();
        for (name, m) in &apps {
            let asked = Ask::of(m);
            let before = parent.as_ref().and_then(|p| p.get(name)).map(Ask::of);
            let changed = before.as_ref() != Some(&asked);
            if m.rollout.is_none() && !changed {
                continue;
            }
            // The run as the daemons find it, reaching up past the commit
            // while newer ones ask the same; then a few commits before it.
            let run = self
                .runs
                .run(&history, at, name.as_str(), &asked, PREVIOUS_DEPTH)
                .await?;
            plans.push(Plan {
                app: name.to_string(),
                manifest: m.clone(),
                asked,
                changed,
                history: run.history(),
                run_len: run.commits.len(),
                superseded_by: run.superseded_by.map(|(commit, ask)| {
                    (
                        commit,
                        ask.map(|a| a.release)
                            .unwrap_or_else(|| "no release".into()),
                    )
                }),
            });
        }
        if let Some(p) = &parent {
            snap.removed = p
                .keys()
                .filter(|a| !apps.contains_key(*a))
                .map(|a| a.to_string())
                .collect();
        }

        // Read every commit of every run (again, conditionally), and the
        // commits after them once.
        let mut to_read: BTreeSet<String> = BTreeSet::new();
        let mut once: BTreeSet<String> = BTreeSet::new();
        for p in &plans {
            for (i, c) in p.history.iter().enumerate() {
                if i < p.run_len {
                    to_read.insert(c.commit.clone());
                } else {
                    once.insert(c.commit.clone());
                }
            }
        }
        for c in once.difference(&to_read) {
            if !self.read_once.contains(c) {
                self.read(c).await?;
                self.read_once.insert(c.clone());
            }
        }
        for c in &to_read {
            // An app that is rolled out stays so: its commits need no
            // second read (a success is never taken back).
            self.read(c).await?;
        }
        snap.forge_time = self.forge_time;
        let now = self.forge_time.unwrap_or(SystemTime::UNIX_EPOCH);
        let statuses: BTreeMap<String, StatusRead> = self
            .reads
            .iter()
            .map(|(c, r)| (c.clone(), r.clone()))
            .collect();

        let contexts = Contexts {
            template: &self.template,
            environment: &self.environment,
        };
        for p in plans {
            let mut rollout_cfg = p
                .manifest
                .rollout
                .clone()
                .unwrap_or_else(rollout::all_at_once);
            let discovered = discover(&contexts, &p.app, &p.history[..p.run_len], &statuses);
            let waves = Waves::from_inventory(
                &p.app,
                &rollout_cfg,
                inventory.as_ref(),
                p.manifest.targets.as_ref(),
            );
            let waves = if inventory.is_none() {
                // The daemons cannot halt without an inventory (every
                // server is outside it): neither does the picture.
                rollout_cfg.max_failures = u32::MAX;
                waves.with_outsiders(discovered.iter().cloned())
            } else {
                waves
            };
            let input = rollout::Input {
                app: &p.app,
                rollout: &rollout_cfg,
                waves: &waves,
                asked: &p.asked,
                history: &p.history,
                statuses: &statuses,
                contexts,
                now,
            };
            let progress = rollout::progress(&input);
            let outsiders: Vec<HostProgress> = discovered
                .iter()
                .filter(|h| !waves.contains(h))
                .map(|h| rollout::outside_host(&input, &progress, h))
                .collect();
            let mut previous = BTreeMap::new();
            let hosts = progress
                .waves
                .iter()
                .flat_map(|w| &w.hosts)
                .chain(&outsiders)
                .filter(|h| h.state != HostState::Live);
            for h in hosts {
                let context = contexts.of(&h.host, &p.app);
                let ran = p.history[p.run_len..].iter().find_map(|c| {
                    let st = statuses.get(&c.commit)?.get(&context)?;
                    (st.state == report::State::Success)
                        .then(|| c.ask.as_ref().map(|a| a.release.clone()))
                        .flatten()
                });
                if let Some(r) = ran {
                    previous.insert(h.host.clone(), r);
                }
            }
            snap.apps.push(AppView {
                app: p.app,
                asked: p.asked,
                rollout: p.manifest.rollout.clone(),
                changed: p.changed,
                progress,
                outsiders,
                inventory: inventory.is_some(),
                previous,
                superseded_by: p.superseded_by,
            });
        }
        Ok(snap)
    }

    /// The commit's valid manifests, or why it has none (cached): the
    /// daemons' own reading of a commit, so the same commits are invalid
    /// here and there.
    async fn apps_at(&mut self, commit: &str) -> Result<Result<AppSet, String>, FleetError> {
        Ok(self.runs.apps_at(commit).await?)
    }

    /// The commit's inventory (`None`: the environment has none), or why it
    /// is invalid (cached).
    async fn inventory_at(
        &mut self,
        commit: &str,
    ) -> Result<Result<Option<Inventory>, String>, FleetError> {
        if let Some(i) = self.inventories.get(commit) {
            return Ok(i.clone());
        }
        let src = self.source.clone();
        let c = commit.to_string();
        let path = inventory_path(&self.environment);
        let p = path.clone();
        let found = blocking(move || src.file_at(&c, &p.to_string_lossy())).await?;
        let inv = match found {
            Err(why) => Err(format!("{} {why}", path.display())),
            Ok(None) => Ok(None),
            Ok(Some((_, b))) => match std::str::from_utf8(&b) {
                Err(_) => Err(ConfigError::new(&path, None, "is not UTF-8 text").to_string()),
                Ok(text) => parse_inventory(&path, text)
                    .map(|(_, inv)| Some(inv))
                    .map_err(|e| e.to_string()),
            },
        };
        self.inventories.insert(commit.to_string(), inv.clone());
        Ok(inv)
    }

    /// Read (conditionally, when read before) one commit's statuses.
    async fn read(&mut self, commit: &str) -> Result<(), FleetError> {
        let etag = self.reads.get(commit).and_then(|r| r.etag.clone());
        let read = self
            .provider
            .statuses(commit, etag.as_deref())
            .await
            .map_err(|e| FleetError::Forge(e.to_string()))?;
        let date = read.date();
        self.forge_time = Some(self.forge_time.map_or(date, |t| t.max(date)));
        match read {
            Read::Changed(r) => {
                self.reads.insert(commit.to_string(), r);
            }
            Read::NotModified { .. } => {}
        }
        Ok(())
    }
}

/// Run a git step off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, SourceError> + Send + 'static,
) -> Result<T, FleetError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| FleetError::Forge(format!("a git step did not finish: {e}")))?
        .map_err(FleetError::from)
}

/// The hosts whose contexts for `app` appear in the statuses of `run`.
fn discover(
    contexts: &Contexts,
    app: &str,
    run: &[CommitAsk],
    statuses: &BTreeMap<String, StatusRead>,
) -> BTreeSet<String> {
    const MARK: &str = "\u{1}host\u{1}";
    let pattern = contexts.of(MARK, app);
    let Some((prefix, suffix)) = pattern.split_once(MARK) else {
        return BTreeSet::new();
    };
    run.iter()
        .filter_map(|c| statuses.get(&c.commit))
        .flat_map(|r| &r.statuses)
        .filter_map(|s| {
            let host = s.context.strip_prefix(prefix)?.strip_suffix(suffix)?;
            (!host.is_empty() && !host.contains('/')).then(|| host.to_string())
        })
        .collect()
}

/// How long to wait before the next look: a poll interval while a host
/// of an open wave may report any moment; else until the earliest moment
/// a closed wave can open (the end of a bake), since nothing a look could
/// find changes the picture before then.
fn next_look(snap: &Snapshot, poll: Duration) -> Duration {
    let unsettled = |h: &HostProgress| !matches!(h.state, HostState::Live | HostState::Failed);
    let mut pause: Option<Duration> = None;
    for app in &snap.apps {
        let p = &app.progress;
        let mut soonest = |d: Duration| pause = Some(pause.map_or(d, |x: Duration| x.min(d)));
        if app.outsiders.iter().any(unsettled) {
            soonest(poll);
        }
        for w in p.waves.iter().filter(|w| !w.skipped()) {
            match &w.opening {
                Opening::Open { .. } if w.hosts.iter().any(unsettled) => soonest(poll),
                Opening::Open { .. } | Opening::Blocked => {}
                Opening::Baking { until, .. } => soonest(rollout::wait_time(*until, p.now)),
                Opening::Waiting {
                    not_before: Some(t),
                    ..
                } => soonest(rollout::wait_time(*t, p.now)),
                Opening::Waiting {
                    not_before: None, ..
                } => soonest(poll),
            }
        }
    }
    pause.unwrap_or(poll).max(Duration::from_secs(1))
}

fn short(commit: &str) -> &str {
    &commit[..commit.len().min(12)]
}

// ---- printing ----

/// Print a look: text for people, or the stable JSON (docs/operations.md).
pub fn print(snap: &Snapshot, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&to_json(snap)).unwrap_or_default()
        );
    } else {
        print!("{}", to_text(snap));
    }
}

/// The summary line of one app: `wave 1 baked · wave 2 3/10 live, 1 failed · HALTED`.
pub fn summary(app: &AppView) -> String {
    let p = &app.progress;
    let mut parts: Vec<String> = Vec::new();
    let waves: Vec<_> = p.waves.iter().filter(|w| !w.skipped()).collect();
    for w in &waves {
        let n = w.index + 1;
        let prefix = if app.rollout.is_some() {
            format!("wave {n} ")
        } else {
            String::new()
        };
        let text = match wave_state(w, p.now) {
            WaveState::Waiting => "waiting".to_string(),
            WaveState::Blocked => "blocked".to_string(),
            WaveState::Baking(left) => format!("baking, {} left", rollout::short_duration(left)),
            WaveState::Baked if w.bake > Duration::ZERO => "baked".to_string(),
            _ => {
                let mut t = format!("{}/{} live", w.count(HostState::Live), w.hosts.len());
                let f = w.count(HostState::Failed);
                if f > 0 {
                    t.push_str(&format!(", {f} failed"));
                }
                t
            }
        };
        parts.push(format!("{prefix}{text}"));
    }
    if !app.outsiders.is_empty() {
        let live = app
            .outsiders
            .iter()
            .filter(|h| h.state == HostState::Live)
            .count();
        parts.push(format!(
            "{live}/{} live outside the inventory",
            app.outsiders.len()
        ));
    }
    if parts.is_empty() {
        parts.push(if app.inventory {
            "no host targeted".into()
        } else {
            "no server has reported yet".into()
        });
    }
    match p.overall() {
        Overall::Halted => parts.push("HALTED".into()),
        Overall::RolledOut if !app.waiting_for_a_first_report() => parts.push("rolled out".into()),
        Overall::Failed => parts.push("done, with failures".into()),
        _ => {}
    }
    if let Some((commit, release)) = &app.superseded_by {
        parts.push(format!("superseded by {release} at {}", short(commit)));
    }
    parts.join(" · ")
}

/// The whole look in one line, for `--wait`'s progress.
pub fn one_line(snap: &Snapshot) -> String {
    if let Some(why) = &snap.invalid {
        return format!("commit {} cannot be applied: {why}", short(&snap.commit));
    }
    if snap.apps.is_empty() {
        return format!(
            "commit {}: no app with a rollout or a change",
            short(&snap.commit)
        );
    }
    snap.apps
        .iter()
        .map(|a| format!("{} {}: {}", a.app, a.asked.release, summary(a)))
        .collect::<Vec<_>>()
        .join("; ")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WaveState {
    Skipped,
    Waiting,
    Blocked,
    Open,
    Baking(Duration),
    Baked,
    /// Every host reported and none runs the release.
    Failed,
    /// Not opened, yet every host already runs the release (it ran there
    /// before this commit, so there was nothing to wait for).
    Live,
}

impl WaveState {
    fn as_str(self) -> &'static str {
        match self {
            WaveState::Skipped => "skipped",
            WaveState::Waiting => "waiting",
            WaveState::Blocked => "blocked",
            WaveState::Open => "open",
            WaveState::Baking(_) => "baking",
            WaveState::Baked => "baked",
            WaveState::Failed => "failed",
            WaveState::Live => "live",
        }
    }
}

fn wave_state(w: &rollout::WaveProgress, now: SystemTime) -> WaveState {
    if w.skipped() {
        return WaveState::Skipped;
    }
    let all_live = !w.hosts.is_empty() && w.hosts.iter().all(|h| h.state == HostState::Live);
    match &w.opening {
        Opening::Waiting { .. } | Opening::Baking { .. } | Opening::Blocked if all_live => {
            WaveState::Live
        }
        Opening::Blocked => WaveState::Blocked,
        Opening::Waiting { .. } | Opening::Baking { .. } => WaveState::Waiting,
        Opening::Open { .. } => {
            let resolved = w
                .hosts
                .iter()
                .all(|h| matches!(h.state, HostState::Live | HostState::Failed));
            match w.baked_at() {
                Some(t) if t > now => WaveState::Baking(rollout::wait_time(t, now)),
                Some(_) => WaveState::Baked,
                None if resolved => WaveState::Failed,
                None => WaveState::Open,
            }
        }
    }
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// A forge time for people: the time of day, with the date when it is not
/// the forge's today, and how long ago by the forge's clock.
fn when(t: SystemTime, now: SystemTime) -> String {
    let full = rfc3339(t);
    let today = rfc3339(now);
    let clock = if full[..10] == today[..10] {
        full[11..19].to_string()
    } else {
        format!("{} {}", &full[..10], &full[11..16])
    };
    match now.duration_since(t) {
        Ok(ago) => format!("{clock} ({} ago)", rollout::short_duration(ago)),
        Err(_) => clock,
    }
}

fn wave_label(app: &AppView, index: usize) -> String {
    let Some(r) = &app.rollout else {
        return "every host at once".into();
    };
    let Some(w) = r.waves.get(index) else {
        return String::new();
    };
    let mut parts = Vec::new();
    if let Some(p) = w.percent {
        parts.push(format!("{p}%"));
    }
    if !w.labels.is_empty() {
        parts.push(format!("labels {}", w.labels.join(",")));
    }
    if !w.hosts.is_empty() {
        parts.push(format!("hosts {}", w.hosts.join(",")));
    }
    if w.bake() > Duration::ZERO {
        parts.push(format!("bake {}", humantime::format_duration(w.bake())));
    }
    parts.join(" · ")
}

fn to_text(snap: &Snapshot) -> String {
    let mut out = String::new();
    let place = if snap.commit == snap.tip {
        format!("the tip of {}", snap.branch)
    } else {
        format!("{}, whose tip is {}", snap.branch, short(&snap.tip))
    };
    out.push_str(&format!(
        "commit {} ({place}), environment {}",
        short(&snap.commit),
        snap.environment,
    ));
    if let Some(t) = snap.forge_time {
        out.push_str(&format!(", forge time {}", rfc3339(t)));
    }
    out.push('\n');
    let now = snap.forge_time.unwrap_or(SystemTime::UNIX_EPOCH);
    if let Some(why) = &snap.invalid {
        out.push_str(&format!("cannot be applied: {why}\n"));
        return out;
    }
    if snap.apps.is_empty() {
        out.push_str("no app with a rollout or a change\n");
    }
    for app in &snap.apps {
        let kind = if app.rollout.is_some() {
            ""
        } else {
            " (no rollout)"
        };
        out.push_str(&format!(
            "\n{} {}{kind}: {}\n",
            app.app,
            app.asked.release,
            summary(app)
        ));
        let rows = app
            .progress
            .waves
            .iter()
            .flat_map(|w| &w.hosts)
            .chain(&app.outsiders);
        let host_w = rows.clone().map(|h| h.host.len()).max().unwrap_or(4).max(4);
        let rel_w = rows
            .map(|h| app.release_of(h).unwrap_or("-").len())
            .max()
            .unwrap_or(1);
        let row = |h: &HostProgress| {
            let mut line = format!(
                "    {:<host_w$}  {:<9}  {:<rel_w$}",
                h.host,
                h.state.as_str(),
                app.release_of(h).unwrap_or("-"),
            );
            if let Some(t) = h.since {
                line.push_str(&format!("  since {}", when(t, now)));
            }
            if h.missed_deadline {
                line.push_str("  missed its deadline");
            } else if let Some(d) = &h.description {
                line.push_str(&format!("  {d}"));
            }
            line.push('\n');
            line
        };
        for w in &app.progress.waves {
            let state = wave_state(w, now);
            let mut head = format!("  wave {}", w.index + 1);
            let label = wave_label(app, w.index);
            if !label.is_empty() {
                head.push_str(&format!(" ({label})"));
            }
            head.push_str(": ");
            head.push_str(&match (state, &w.opening) {
                (WaveState::Skipped, _) => "skipped, no host".to_string(),
                (WaveState::Live, _) => "live: its servers already ran this release".to_string(),
                (_, Opening::Baking { until, after }) => format!(
                    "opens at {} after wave {}'s bake",
                    when(*until, now),
                    after + 1
                ),
                (_, Opening::Waiting { on, .. }) => format!("waits for wave {}", on + 1),
                (WaveState::Blocked, _) => "blocked by the failures before it".to_string(),
                (WaveState::Baking(left), _) => {
                    format!("baking, {} left", rollout::short_duration(left))
                }
                (s, Opening::Open { at }) => {
                    let mut t = s.as_str().to_string();
                    if let Some(at) = at {
                        t.push_str(&format!(", opened {}", when(*at, now)));
                    }
                    t
                }
                (s, _) => s.as_str().to_string(),
            });
            out.push_str(&head);
            out.push('\n');
            let mut hosts: Vec<&HostProgress> = w.hosts.iter().collect();
            hosts.sort_by(|a, b| a.host.cmp(&b.host));
            for h in hosts {
                out.push_str(&row(h));
            }
        }
        if !app.outsiders.is_empty() {
            out.push_str("  not in the inventory (placed in the last wave, counted by nobody)\n");
            for h in &app.outsiders {
                out.push_str(&row(h));
            }
        }
    }
    if !snap.removed.is_empty() {
        out.push_str(&format!(
            "\nremoved by this commit: {}\n",
            snap.removed.join(", ")
        ));
    }
    out
}

/// The `--json` document (its shape is documented in docs/operations.md
/// and kept stable: fields are added, never renamed or removed).
pub fn to_json(snap: &Snapshot) -> serde_json::Value {
    let host = |app: &AppView, h: &HostProgress, in_inventory: bool| {
        serde_json::json!({
            "host": h.host,
            "state": h.state,
            "release": app.release_of(h),
            "since": h.since.map(rfc3339),
            "description": h.description,
            "commit": h.commit,
            "missed_deadline": h.missed_deadline,
            "in_inventory": in_inventory,
        })
    };
    let apps: Vec<serde_json::Value> = snap
        .apps
        .iter()
        .map(|app| {
            let p = &app.progress;
            let waves: Vec<serde_json::Value> = p
                .waves
                .iter()
                .map(|w| {
                    let state = wave_state(w, p.now);
                    let opened_at = match w.opening {
                        Opening::Open { at } => at.map(rfc3339),
                        _ => None,
                    };
                    let opens_at = match w.opening {
                        Opening::Baking { until, .. } => Some(rfc3339(until)),
                        _ => None,
                    };
                    let mut hosts: Vec<&HostProgress> = w.hosts.iter().collect();
                    hosts.sort_by(|a, b| a.host.cmp(&b.host));
                    serde_json::json!({
                        "wave": w.index + 1,
                        "state": state.as_str(),
                        "bake": humantime::format_duration(w.bake).to_string(),
                        "opened_at": opened_at,
                        "opens_at": opens_at,
                        "baked_at": w.baked_at().map(rfc3339),
                        "hosts": hosts.iter().map(|h| host(app, h, app.inventory)).collect::<Vec<_>>(),
                    })
                })
                .collect();
            serde_json::json!({
                "app": app.app,
                "release": app.asked.release,
                "sha256": app.asked.sha256,
                "rollout": app.rollout.is_some(),
                "changed": app.changed,
                "state": app.verdict(),
                "summary": summary(app),
                "halted": p.halted,
                "failed": p.failed,
                "superseded_by": app.superseded_by.as_ref().map(|(c, r)| serde_json::json!({"commit": c, "release": r})),
                "run": p.run,
                "waves": waves,
                "outside_inventory": app.outsiders.iter().map(|h| host(app, h, false)).collect::<Vec<_>>(),
            })
        })
        .collect();
    serde_json::json!({
        "commit": snap.commit,
        "tip": snap.tip,
        "branch": snap.branch,
        "environment": snap.environment,
        "forge_time": snap.forge_time.map(rfc3339),
        "state": snap.verdict(),
        "invalid": snap.invalid,
        "apps": apps,
        "removed": snap.removed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fake_forge::{FakeForge, Flavor};
    use crate::report::{State, Status};
    use std::process::Command;
    use std::time::UNIX_EPOCH;

    const SHA_A: &str = "3a7bd3e2360a3d29eea436fcfb7e44c735d117c42d1c1835420b6b9942dd4f1b";

    fn git(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.com")
            .output()
            .expect("git");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// 2027-01-15T08:00:00Z plus `secs`.
    fn t(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    const ROLLOUT: &str = "rollout:\n  waves:\n    - { labels: [canary], bake: 10m }\n    - { percent: 100 }\n  deadline: 30m\n";

    fn manifest(release: &str, rollout: &str) -> String {
        format!(
            "release: \"{release}\"\nartifact:\n  url: file:///srv/web-{release}.tar.zst\n  sha256: {SHA_A}\npm2:\n  - name: web\n    script: server.js\n{rollout}"
        )
    }

    /// A config repo on disk, a fake forge, and a host config for `hoist
    /// fleet` pointing at both.
    struct World {
        dir: tempfile::TempDir,
        work: std::path::PathBuf,
        forge: FakeForge,
        cfg: HostConfig,
    }

    impl World {
        async fn new(flavor: Flavor, inventory: Option<&str>) -> World {
            let dir = tempfile::tempdir().expect("tempdir");
            let bare = dir.path().join("config.git");
            let work = dir.path().join("work");
            git(
                dir.path(),
                &["init", "-q", "--bare", "-b", "main", bare.to_str().unwrap()],
            );
            git(
                dir.path(),
                &[
                    "clone",
                    "-q",
                    bare.to_str().unwrap(),
                    work.to_str().unwrap(),
                ],
            );
            std::fs::create_dir_all(work.join("apps")).expect("apps");
            std::fs::create_dir_all(work.join("fleet")).expect("fleet");
            if let Some(inv) = inventory {
                std::fs::write(work.join("fleet/production.yaml"), inv).expect("inventory");
            }
            let forge = FakeForge::start(flavor).await;
            std::fs::write(dir.path().join("token"), &forge.token).expect("token");
            let provider = match flavor {
                Flavor::Github => "github",
                Flavor::Gitea => "gitea",
                Flavor::Gitlab => "gitlab",
            };
            let text = format!(
                "environment: production\nrepo:\n  url: file://{}\n  branch: main\n  poll_interval: 1s\nstatus:\n  provider: {provider}\n  api_url: {}\n  repository: acme/deploy\n  token_file: {}/token\nallow_http: true\n",
                bare.display(),
                forge.url,
                dir.path().display()
            );
            std::fs::write(dir.path().join("hoist.yaml"), &text).expect("config");
            let cfg = HostConfig::load(&dir.path().join("hoist.yaml")).expect("config");
            World {
                dir,
                work,
                forge,
                cfg,
            }
        }

        fn commit(&self, files: &[(&str, &str)]) -> String {
            for (path, text) in files {
                std::fs::write(self.work.join(path), text).expect("write");
            }
            git(&self.work, &["add", "-A"]);
            git(
                &self.work,
                &["commit", "-q", "--allow-empty", "-m", "change"],
            );
            git(&self.work, &["push", "-q", "origin", "HEAD:main"]);
            git(&self.work, &["rev-parse", "HEAD"])
        }

        /// What a server posts, at forge time `at`.
        async fn post(
            &self,
            sha: &str,
            host: &str,
            state: State,
            description: &str,
            at: SystemTime,
        ) {
            self.forge.set_time(at);
            self.forge
                .provider()
                .post(&Status {
                    sha: sha.into(),
                    state,
                    context: format!("hoist/production/{host}"),
                    description: description.into(),
                })
                .await
                .expect("posted");
        }

        async fn look(&self, reference: Option<&str>) -> Snapshot {
            let mut f = Fleet::open(&self.cfg).expect("fleet");
            f.look(reference).await.expect("look")
        }
    }

    const INVENTORY: &str = "hosts:\n  web-1: { labels: [web, canary] }\n  web-2: { labels: [web] }\n  web-3: { labels: [web] }\n";

    fn hosts_of(app: &AppView) -> Vec<(String, HostState, Option<String>)> {
        let mut v: Vec<_> = app
            .progress
            .waves
            .iter()
            .flat_map(|w| &w.hosts)
            .map(|h| {
                (
                    h.host.clone(),
                    h.state,
                    app.release_of(h).map(str::to_string),
                )
            })
            .collect();
        v.sort();
        v
    }

    async fn rolled_out_then_new_release(flavor: Flavor) {
        let w = World::new(flavor, Some(INVENTORY)).await;
        let c1 = w.commit(&[("apps/web.yaml", &manifest("1.0.0", ROLLOUT))]);
        for h in ["web-1", "web-2", "web-3"] {
            w.post(&c1, h, State::Pending, "applying", t(0)).await;
            w.post(&c1, h, State::Success, "web 1.0.0 live in 2.0s", t(5))
                .await;
        }
        let c2 = w.commit(&[("apps/web.yaml", &manifest("1.1.0", ROLLOUT))]);
        w.post(&c2, "web-1", State::Pending, "applying", t(100))
            .await;
        for h in ["web-2", "web-3"] {
            w.post(
                &c2,
                h,
                State::Pending,
                "web 1.1.0 waits for wave 1 (web-1)",
                t(101),
            )
            .await;
        }
        w.post(
            &c2,
            "web-1",
            State::Success,
            "web 1.1.0 live in 2.0s",
            t(130),
        )
        .await;
        w.forge.set_time(t(190));
        let snap = w.look(None).await;
        assert_eq!(snap.commit, c2);
        assert_eq!(
            snap.forge_time,
            Some(t(190)),
            "{flavor:?}: the forge's clock"
        );
        assert_eq!(snap.apps.len(), 1);
        let web = &snap.apps[0];
        assert!(web.changed);
        assert_eq!(web.progress.run, std::slice::from_ref(&c2));
        assert_eq!(
            summary(web),
            "wave 1 baking, 9m left · wave 2 waiting",
            "{flavor:?}"
        );
        assert_eq!(
            hosts_of(web),
            [
                ("web-1".into(), HostState::Live, Some("1.1.0".into())),
                ("web-2".into(), HostState::Waiting, Some("1.0.0".into())),
                ("web-3".into(), HostState::Waiting, Some("1.0.0".into())),
            ],
            "{flavor:?}"
        );
        assert_eq!(snap.verdict(), Verdict::InProgress);

        // The bake ends; wave 2 goes.
        for (i, h) in ["web-2", "web-3"].iter().enumerate() {
            w.post(
                &c2,
                h,
                State::Success,
                "web 1.1.0 live in 2.0s",
                t(130 + 600 + i as u64),
            )
            .await;
        }
        w.forge.set_time(t(800));
        let snap = w.look(None).await;
        assert_eq!(
            summary(&snap.apps[0]),
            "wave 1 baked · wave 2 2/2 live · rolled out"
        );
        assert_eq!(snap.verdict(), Verdict::RolledOut);
        // The older commit, by its short id: its own release, rolled out.
        let old = w.look(Some(&c1[..10])).await;
        assert_eq!(old.commit, c1);
        assert_eq!(old.apps[0].asked.release, "1.0.0");
        assert_eq!(
            old.apps[0].superseded_by,
            Some((c2.clone(), "1.1.0".into()))
        );
        assert_eq!(
            old.verdict(),
            Verdict::Failed,
            "superseded: never what the branch runs"
        );

        // A bad release halts at the canary, and its revert names the
        // release every server still runs: the second wave's servers have
        // nothing to wait for, and the view says so instead of "waiting".
        let c3 = w.commit(&[("apps/web.yaml", &manifest("1.2.0", ROLLOUT))]);
        w.post(
            &c3,
            "web-1",
            State::Failure,
            "web 1.2.0 failed (process web is errored); rolled back to 1.1.0",
            t(850),
        )
        .await;
        for h in ["web-2", "web-3"] {
            w.post(
                &c3,
                h,
                State::Failure,
                "web 1.2.0 halted: web-1 failed",
                t(851),
            )
            .await;
        }
        let c4 = w.commit(&[("apps/web.yaml", &manifest("1.1.0", ROLLOUT))]);
        for (i, h) in ["web-1", "web-2", "web-3"].iter().enumerate() {
            w.post(&c4, h, State::Success, "web unchanged", t(900 + i as u64))
                .await;
        }
        w.forge.set_time(t(960));
        let snap = w.look(None).await;
        assert_eq!(snap.commit, c4);
        assert_eq!(
            summary(&snap.apps[0]),
            "wave 1 baking, 9m left · wave 2 2/2 live · rolled out",
            "{flavor:?}"
        );
        assert_eq!(snap.verdict(), Verdict::RolledOut);
    }

    #[tokio::test]
    async fn a_release_rolls_out_in_waves_on_github() {
        rolled_out_then_new_release(Flavor::Github).await;
    }

    #[tokio::test]
    async fn a_release_rolls_out_in_waves_on_gitea() {
        rolled_out_then_new_release(Flavor::Gitea).await;
    }

    #[tokio::test]
    async fn a_release_rolls_out_in_waves_on_gitlab() {
        rolled_out_then_new_release(Flavor::Gitlab).await;
    }

    #[tokio::test]
    async fn a_halted_rollout_is_shown_and_ends_a_wait_with_halted() {
        let w = World::new(Flavor::Github, Some(INVENTORY)).await;
        let c1 = w.commit(&[("apps/web.yaml", &manifest("1.2.0", ROLLOUT))]);
        w.post(&c1, "web-1", State::Pending, "applying", t(0)).await;
        w.post(
            &c1,
            "web-1",
            State::Failure,
            "web 1.2.0 failed its health gate; rolled back",
            t(40),
        )
        .await;
        w.post(
            &c1,
            "web-2",
            State::Failure,
            "web 1.2.0 halted: web-1 failed",
            t(50),
        )
        .await;
        w.forge.set_time(t(60));
        let mut f = Fleet::open(&w.cfg).expect("fleet");
        let mut lines = Vec::new();
        let (snap, verdict) = f
            .wait(
                None,
                Duration::from_secs(1),
                Some(Duration::from_secs(30)),
                |s| lines.push(one_line(s)),
            )
            .await
            .expect("wait");
        assert_eq!(verdict, Verdict::Halted);
        let web = &snap.apps[0];
        assert_eq!(
            summary(web),
            "wave 1 0/1 live, 1 failed · wave 2 blocked · HALTED"
        );
        assert_eq!(web.progress.failed, ["web-1"]);
        assert_eq!(
            hosts_of(web),
            [
                ("web-1".into(), HostState::Failed, None),
                ("web-2".into(), HostState::Halted, None),
                ("web-3".into(), HostState::Halted, None),
            ]
        );
        assert_eq!(
            lines,
            ["web 1.2.0: wave 1 0/1 live, 1 failed · wave 2 blocked · HALTED"]
        );
        let text = to_text(&snap);
        assert!(
            text.contains("web 1.2.0: wave 1 0/1 live, 1 failed · wave 2 blocked · HALTED"),
            "{text}"
        );
        assert!(text.contains("web-2  halted"), "{text}");
        assert!(text.contains("web 1.2.0 halted: web-1 failed"), "{text}");
        let json = to_json(&snap);
        assert_eq!(json["state"], "halted");
        assert_eq!(json["apps"][0]["failed"][0], "web-1");
        assert_eq!(json["apps"][0]["waves"][0]["hosts"][0]["state"], "failed");
        assert_eq!(json["apps"][0]["waves"][1]["state"], "blocked");
        assert_eq!(
            json["apps"][0]["waves"][1]["hosts"][1]["description"],
            serde_json::Value::Null
        );
    }

    #[tokio::test]
    async fn wait_follows_the_rollout_to_its_end_on_the_forge_clock() {
        let w = World::new(Flavor::Github, Some(INVENTORY)).await;
        let quick =
            "rollout:\n  waves:\n    - { labels: [canary], bake: 2s }\n    - { percent: 100 }\n";
        let c1 = w.commit(&[("apps/web.yaml", &manifest("2.0.0", quick))]);
        // The forge runs ten minutes ahead of this machine: nothing may
        // compare the two.
        w.forge.skew(600);
        let p = w.forge.provider();
        let post = |host: &'static str, state: State| {
            let p = Arc::clone(&p);
            let sha = c1.clone();
            async move {
                p.post(&Status {
                    sha,
                    state,
                    context: format!("hoist/production/{host}"),
                    description: format!("web 2.0.0 {state}"),
                })
                .await
                .expect("posted");
            }
        };
        post("web-1", State::Success).await;
        let servers = {
            let post2 = post("web-2", State::Success);
            let post3 = post("web-3", State::Success);
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(2500)).await;
                post2.await;
                post3.await;
            })
        };
        let mut f = Fleet::open(&w.cfg).expect("fleet");
        let started = Instant::now();
        let mut lines = Vec::new();
        let (snap, verdict) = f
            .wait(
                None,
                Duration::from_secs(1),
                Some(Duration::from_secs(30)),
                |s| lines.push(one_line(s)),
            )
            .await
            .expect("wait");
        servers.await.expect("servers");
        assert_eq!(verdict, Verdict::RolledOut, "{lines:?}");
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{:?}",
            started.elapsed()
        );
        // How much of the bake is left when first seen depends on how busy
        // this machine is; that it is seen baking, and the next wave
        // waiting, does not.
        let first = lines.first().map(String::as_str).unwrap_or_default();
        assert!(
            first.starts_with("web 2.0.0: wave 1 baking, ")
                && first.ends_with("s left · wave 2 waiting"),
            "{lines:?}"
        );
        assert_eq!(
            lines.last().map(String::as_str),
            Some("web 2.0.0: wave 1 baked · wave 2 2/2 live · rolled out")
        );
        assert!(
            snap.forge_time
                .expect("read")
                .duration_since(SystemTime::now())
                .is_ok(),
            "the forge's time, ahead"
        );
    }

    #[tokio::test]
    async fn a_clock_off_by_ten_minutes_either_way_sees_the_same_fleet() {
        let mut seen = Vec::new();
        for skew in [-600i64, 0, 600] {
            let w = World::new(Flavor::Github, Some(INVENTORY)).await;
            let c1 = w.commit(&[("apps/web.yaml", &manifest("1.0.0", ROLLOUT))]);
            w.forge.skew(skew);
            let p = w.forge.provider();
            p.post(&Status {
                sha: c1.clone(),
                state: State::Success,
                context: "hoist/production/web-1".into(),
                description: "web 1.0.0 live".into(),
            })
            .await
            .expect("posted");
            let snap = w.look(None).await;
            seen.push(summary(&snap.apps[0]));
        }
        assert_eq!(
            seen, ["wave 1 baking, 10m left · wave 2 waiting"; 3],
            "the bake is measured on the forge's clock"
        );
    }

    #[tokio::test]
    async fn a_wait_that_nobody_answers_times_out() {
        let w = World::new(Flavor::Github, Some(INVENTORY)).await;
        w.commit(&[("apps/web.yaml", &manifest("1.0.0", ROLLOUT))]);
        let mut f = Fleet::open(&w.cfg).expect("fleet");
        let started = Instant::now();
        let (snap, verdict) = f
            .wait(
                None,
                Duration::from_secs(1),
                Some(Duration::from_secs(2)),
                |_| {},
            )
            .await
            .expect("wait");
        assert_eq!(verdict, Verdict::TimedOut);
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(
            hosts_of(&snap.apps[0])
                .iter()
                .map(|h| h.1)
                .collect::<Vec<_>>(),
            [HostState::Missing; 3]
        );
    }

    #[tokio::test]
    async fn newer_commits_that_keep_the_release_count_for_it() {
        let w = World::new(Flavor::Github, Some(INVENTORY)).await;
        let c1 = w.commit(&[("apps/web.yaml", &manifest("1.0.0", ROLLOUT))]);
        w.post(&c1, "web-1", State::Success, "web 1.0.0 live", t(0))
            .await;
        // Another app arrives; web is left alone. The servers act on the tip.
        let c2 = w.commit(&[(
            "apps/api.yaml",
            &manifest("7.0.0", "").replace("name: web", "name: api"),
        )]);
        for h in ["web-2", "web-3"] {
            w.post(
                &c2,
                h,
                State::Success,
                "web 1.0.0 live; api 7.0.0 live",
                t(700),
            )
            .await;
        }
        w.forge.set_time(t(701));
        let snap = w.look(Some(&c1)).await;
        assert_eq!(snap.apps[0].progress.run, [c2.clone(), c1.clone()]);
        assert_eq!(snap.verdict(), Verdict::RolledOut);
        // At the tip: web has a rollout (shown) and api changed (shown).
        let tip = w.look(None).await;
        let names: Vec<_> = tip.apps.iter().map(|a| a.app.as_str()).collect();
        assert_eq!(names, ["api", "web"]);
        assert!(tip.apps[0].rollout.is_none());
        assert_eq!(summary(&tip.apps[0]), "2/3 live");
        assert!(!tip.apps[1].changed);
    }

    #[tokio::test]
    async fn without_an_inventory_the_servers_that_posted_are_the_fleet() {
        let w = World::new(Flavor::Github, None).await;
        let c1 = w.commit(&[("apps/web.yaml", &manifest("1.0.0", ""))]);
        let snap = w.look(None).await;
        assert_eq!(snap.verdict(), Verdict::InProgress, "nobody reported yet");
        assert_eq!(summary(&snap.apps[0]), "no server has reported yet");
        w.post(&c1, "a-1", State::Success, "web 1.0.0 live", t(0))
            .await;
        w.post(&c1, "b-2", State::Pending, "applying", t(1)).await;
        let snap = w.look(None).await;
        let web = &snap.apps[0];
        assert!(!web.inventory);
        assert_eq!(summary(web), "1/2 live");
        assert_eq!(
            hosts_of(web),
            [
                ("a-1".into(), HostState::Live, Some("1.0.0".into())),
                ("b-2".into(), HostState::Deploying, None),
            ]
        );
        w.post(&c1, "b-2", State::Failure, "web 1.0.0 failed", t(2))
            .await;
        let snap = w.look(None).await;
        assert_eq!(
            snap.verdict(),
            Verdict::Failed,
            "no halt without an inventory"
        );
    }

    #[tokio::test]
    async fn servers_outside_the_inventory_are_shown_apart() {
        let w = World::new(Flavor::Github, Some(INVENTORY)).await;
        let c1 = w.commit(&[("apps/web.yaml", &manifest("1.0.0", ""))]);
        for h in ["web-1", "web-2", "web-3", "stray-9"] {
            w.post(&c1, h, State::Success, "web 1.0.0 live", t(0)).await;
        }
        let snap = w.look(None).await;
        let web = &snap.apps[0];
        assert_eq!(web.outsiders.len(), 1);
        assert_eq!(web.outsiders[0].host, "stray-9");
        assert_eq!(
            summary(web),
            "3/3 live · 1/1 live outside the inventory · rolled out"
        );
        let json = to_json(&snap);
        assert_eq!(
            json["apps"][0]["outside_inventory"][0]["in_inventory"],
            false
        );
        assert_eq!(
            json["apps"][0]["waves"][0]["hosts"][0]["in_inventory"],
            true
        );
    }

    #[tokio::test]
    async fn an_invalid_commit_is_said_so_and_fails_a_wait() {
        let w = World::new(Flavor::Github, Some(INVENTORY)).await;
        w.commit(&[("apps/web.yaml", &(manifest("1.0.0", "") + "bogus: 1\n"))]);
        let mut f = Fleet::open(&w.cfg).expect("fleet");
        let (snap, verdict) = f
            .wait(None, Duration::from_secs(1), None, |_| {})
            .await
            .expect("wait");
        assert_eq!(verdict, Verdict::Invalid);
        let why = snap.invalid.as_deref().expect("invalid");
        assert!(why.contains("apps/web.yaml"), "{why}");
        assert_eq!(to_json(&snap)["state"], "invalid");
        // So is an invalid inventory.
        w.commit(&[
            ("apps/web.yaml", &manifest("1.0.0", "")),
            (
                "fleet/production.yaml",
                "hosts:\n  web-1: { lables: [x] }\n",
            ),
        ]);
        let snap = w.look(None).await;
        assert!(
            snap.invalid
                .as_deref()
                .expect("invalid")
                .contains("fleet/production.yaml")
        );
    }

    #[tokio::test]
    async fn a_config_without_statuses_or_a_readable_token_is_a_config_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("hoist.yaml");
        std::fs::write(&path, "repo:\n  url: /nowhere\n").expect("write");
        let err = command(&path, &Options::default())
            .await
            .expect_err("no provider");
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("status.provider"), "{err}");
        std::fs::write(
            &path,
            "repo:\n  url: /nowhere\nstatus:\n  provider: github\n  repository: a/b\n  token_file: /nonexistent/token\n",
        )
        .expect("write");
        let err = command(&path, &Options::default())
            .await
            .expect_err("no token");
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("/nonexistent/token"), "{err}");
        let err = command(&dir.path().join("missing.yaml"), &Options::default())
            .await
            .expect_err("no config");
        assert_eq!(err.exit_code(), 2);
        // A forge that refuses the token: found only by asking, exit 1,
        // and the token never shown.
        let w = World::new(Flavor::Github, Some(INVENTORY)).await;
        w.commit(&[("apps/web.yaml", &manifest("1.0.0", ROLLOUT))]);
        std::fs::write(w.dir.path().join("token"), "wrong-secret-token").expect("token");
        let err = command(&w.cfg.source_path, &Options::default())
            .await
            .expect_err("401");
        assert_eq!(err.exit_code(), 1);
        assert!(err.to_string().contains("401"), "{err}");
        assert!(!err.to_string().contains("wrong-secret-token"), "{err}");
        // With the right token, the plain command prints and exits 0.
        std::fs::write(w.dir.path().join("token"), &w.forge.token).expect("token");
        assert_eq!(
            command(&w.cfg.source_path, &Options::default())
                .await
                .expect("ok"),
            0
        );
    }
}
