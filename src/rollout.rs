//! Fleet rollouts (SPEC §8): which wave each host of an app is in, how far
//! the app's release has spread, and whether one host may start it now.
//! Pure: no I/O and no clock of its own.
//!
//! There is no controller and servers never talk to each other, so every
//! server must reach the same answer from the same inputs: the commit's
//! inventory and manifest (which hosts, which waves), the commit statuses
//! read back from the forge (who runs what since when), and the forge's
//! clock (its `Date`). The server's own clock is never an input: a bake is
//! measured from a forge timestamp to the forge's `Date`, so a server
//! whose clock is ten minutes off decides exactly as the others do, and
//! the caller turns "open at T" into a local wait of `T - forge_now`
//! ([`wait_time`]).
//!
//! The shape, for one app and the release the branch asks:
//!
//! - [`Waves`]: membership, from the inventory and the app's `targets`.
//! - [`run`]: the commits, newest first, that ask this release without a
//!   break; a host's success on any of them counts (carry-forward), and
//!   its earliest one is its success time, so a commit that leaves the
//!   app alone neither restarts a bake nor skips a wave.
//! - [`progress`]: every host's state and every wave's opening, as
//!   `hoist fleet` shows them.
//! - [`gate`]: for one host, go now, already running it, wait (until when
//!   at the earliest, and the `pending` description), or halted (and the
//!   `failure` description).
//!
//! What counts, decided here once (docs/architecture.md has the why). Each
//! status is read by its structure ([`reading`]): the machine-readable
//! heads at the start of its description (`[hoist:halt web 1.4.0] ...`,
//! [`crate::status::Head`]) say when it is no attempt of the host's own (a
//! halt report, a wait) or a report the rollout must count (the app is
//! down, the host is held by a local rollback); a description without any
//! head (a server of an older hoist) is read by the phrases that hoist
//! wrote. A host *reports success* when it posted `success` on a commit
//! of the run (its earliest such, and after a `down` report of the release
//! its earliest after that report, is its success time). It *failed* when
//! its newest report is that the release is down there or that a local
//! rollback holds it, or when its newest attempt is a `failure` posted
//! once its wave was open, or when its wave opened more than `deadline`
//! ago and it had made no report for that attempt by then (a halt report,
//! or a failure from before the opening, is none). `error` (the commit
//! cannot be applied there) is neither: the host holds the next wave until
//! a commit it can apply.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};

use crate::config::{AppSet, Inventory, Rollout, Targets, Wave, glob_match};
use crate::status::{Head, HeadKind, ReadStatus, State, StatusRead, heads, render_context};

/// What a commit asks of one app: the release and the artifact's sha256,
/// together the release's identity (SPEC §2).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ask {
    pub release: String,
    pub sha256: String,
}

impl Ask {
    /// What a manifest asks (the sha256 folded to lower case).
    pub fn of(m: &crate::config::Manifest) -> Ask {
        Ask {
            release: m.release.to_string(),
            sha256: m.artifact.sha256.lower(),
        }
    }
}

/// One commit of the branch (first parents, newest first) and what it asks
/// of the app (`None`: the app is not in that commit, or its manifests are
/// invalid there).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitAsk {
    pub commit: String,
    pub ask: Option<Ask>,
}

/// How many commits of the branch a run looks back at most, here and in
/// every caller, so all of them see the same run. A release unchanged for
/// longer is live on its hosts, which post `success` on every commit; its
/// older successes only make a bake look shorter, never longer.
pub const RUN_DEPTH: usize = 50;

/// The rollout of an app without one: every host at once, no halt, no
/// deadline. `hoist fleet` shows such apps with the same machinery.
pub fn all_at_once() -> Rollout {
    Rollout {
        waves: vec![Wave {
            percent: Some(100),
            ..Wave::default()
        }],
        max_failures: u32::MAX,
        deadline: None,
    }
}

/// The leading commits of `history` (newest first) that ask `asked`: the
/// unbroken run whose statuses speak about this release.
pub fn run<'h>(history: &'h [CommitAsk], asked: &Ask) -> &'h [CommitAsk] {
    let n = history
        .iter()
        .take_while(|c| c.ask.as_ref() == Some(asked))
        .count();
    &history[..n]
}

/// The hosts of each wave of an app's rollout, indexed as the manifest
/// lists the waves (a wave may be empty).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Waves {
    waves: Vec<Vec<String>>,
}

impl Waves {
    /// Membership for `hosts` (name and labels: the app's hosts, those its
    /// `targets` select). Selector waves take the hosts they match
    /// (`hosts`: any glob; `labels`: all of them); a `percent` wave takes
    /// hosts, in the stable order of sha256(`<app>/<host>`), until the
    /// waves so far hold max(1, ⌈percent × N / 100⌉). A host is in the
    /// first wave that takes it; hosts no wave takes are in the last.
    pub fn new(app: &str, rollout: &Rollout, hosts: &[(String, Vec<String>)]) -> Waves {
        let count = rollout.waves.len().max(1);
        let mut waves = vec![Vec::new(); count];
        let order = stable_order(app, hosts);
        let mut taken = vec![false; hosts.len()];
        let mut held = 0usize;
        for (w, wave) in rollout.waves.iter().enumerate() {
            match wave.percent {
                Some(percent) => {
                    let want = (u64::from(percent) * hosts.len() as u64)
                        .div_ceil(100)
                        .max(1);
                    for &i in &order {
                        if held as u64 >= want {
                            break;
                        }
                        if !taken[i] {
                            taken[i] = true;
                            held += 1;
                            waves[w].push(hosts[i].0.clone());
                        }
                    }
                }
                None => {
                    for &i in &order {
                        if !taken[i] && selects(wave, &hosts[i].0, &hosts[i].1) {
                            taken[i] = true;
                            held += 1;
                            waves[w].push(hosts[i].0.clone());
                        }
                    }
                }
            }
        }
        for &i in &order {
            if !taken[i] {
                waves[count - 1].push(hosts[i].0.clone());
            }
        }
        Waves { waves }
    }

    /// Membership from the commit's inventory (`None`: the environment has
    /// none, so every host is outside it and in the last wave) and the
    /// app's `targets`, with the inventory's labels.
    pub fn from_inventory(
        app: &str,
        rollout: &Rollout,
        inventory: Option<&Inventory>,
        targets: Option<&Targets>,
    ) -> Waves {
        let hosts: Vec<(String, Vec<String>)> = inventory
            .map(|inv| {
                inv.hosts
                    .iter()
                    .filter(|(name, h)| targets.is_none_or(|t| t.matches(name, &h.labels)))
                    .map(|(name, h)| (name.clone(), h.labels.clone()))
                    .collect()
            })
            .unwrap_or_default();
        Waves::new(app, rollout, &hosts)
    }

    /// The same waves with `hosts` added to the last, as servers outside
    /// the inventory place themselves: for `hoist fleet` to show an
    /// environment without an inventory, from the servers that posted.
    pub fn with_outsiders(mut self, hosts: impl IntoIterator<Item = String>) -> Waves {
        let last = self.waves.len() - 1;
        for h in hosts {
            if !self.contains(&h) {
                self.waves[last].push(h);
            }
        }
        self
    }

    /// How many waves the manifest lists.
    pub fn len(&self) -> usize {
        self.waves.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waves.iter().all(Vec::is_empty)
    }

    /// The hosts of wave `w` (manifest index), in the stable order.
    pub fn hosts(&self, w: usize) -> &[String] {
        self.waves.get(w).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Whether `host` is one of the app's hosts in the inventory.
    pub fn contains(&self, host: &str) -> bool {
        self.waves.iter().flatten().any(|h| h == host)
    }

    /// The wave of `host`; a host outside the inventory is in the last.
    pub fn wave_of(&self, host: &str) -> usize {
        self.waves
            .iter()
            .position(|w| w.iter().any(|h| h == host))
            .unwrap_or(self.waves.len() - 1)
    }
}

/// Whether a selector wave takes a host: any of its `hosts` globs (when it
/// has some) and all of its `labels`, as `targets` selects.
fn selects(wave: &Wave, host: &str, labels: &[String]) -> bool {
    let host_ok = wave.hosts.is_empty() || wave.hosts.iter().any(|g| glob_match(g, host));
    host_ok && wave.labels.iter().all(|l| labels.contains(l))
}

/// Indexes of `hosts` in the order of sha256(`<app>/<host>`): the same on
/// every server, different per app (so one host is not every app's
/// canary), and stable as hosts come and go.
fn stable_order(app: &str, hosts: &[(String, Vec<String>)]) -> Vec<usize> {
    let mut keyed: Vec<([u8; 32], &str, usize)> = hosts
        .iter()
        .enumerate()
        .map(|(i, (name, _))| {
            let digest: [u8; 32] = Sha256::digest(format!("{app}/{name}").as_bytes()).into();
            (digest, name.as_str(), i)
        })
        .collect();
    keyed.sort();
    keyed.into_iter().map(|(_, _, i)| i).collect()
}

/// The `status.context` template, rendered per host (and per app when the
/// template has `{app}`; without it one host status covers all its apps).
#[derive(Clone, Copy, Debug)]
pub struct Contexts<'a> {
    pub template: &'a str,
    pub environment: &'a str,
}

impl Contexts<'_> {
    pub fn of(&self, host: &str, app: &str) -> String {
        let app = self.template.contains("{app}").then_some(app);
        render_context(self.template, self.environment, host, app)
    }
}

/// Everything a rollout decision is made from.
#[derive(Clone, Copy, Debug)]
pub struct Input<'a> {
    pub app: &'a str,
    pub rollout: &'a Rollout,
    pub waves: &'a Waves,
    /// The release the commit being applied asks for.
    pub asked: &'a Ask,
    /// The branch's first parents from that commit, newest first (the
    /// commit itself first), each with what it asks of the app.
    pub history: &'a [CommitAsk],
    /// The statuses read back, by commit (the commits of the run; others
    /// are ignored).
    pub statuses: &'a BTreeMap<String, StatusRead>,
    pub contexts: Contexts<'a>,
    /// The forge's clock (the `Date` of the last read).
    pub now: SystemTime,
}

/// A host's state for the release, as `hoist fleet` names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HostState {
    /// Reports success for the release.
    Live,
    /// Its wave is open and it has started (its latest status is pending
    /// and newer than the opening).
    Deploying,
    /// Its wave is not open yet (or it has not seen the opening yet).
    Waiting,
    /// It tried the release and failed, or missed its deadline.
    Failed,
    /// The rollout is halted and the host does not run the release.
    Halted,
    /// It posted `error`: the commit cannot be applied there.
    Error,
    /// No status from it on any commit of the run.
    Missing,
}

impl HostState {
    pub fn as_str(self) -> &'static str {
        match self {
            HostState::Live => "live",
            HostState::Deploying => "deploying",
            HostState::Waiting => "waiting",
            HostState::Failed => "failed",
            HostState::Halted => "halted",
            HostState::Error => "error",
            HostState::Missing => "missing",
        }
    }
}

/// One host of a wave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostProgress {
    pub host: String,
    pub state: HostState,
    /// Live: its success time; failed: when it failed (or its deadline
    /// passed); otherwise the time of its latest status.
    pub since: Option<SystemTime>,
    /// The description of its latest status on the run.
    pub description: Option<String>,
    /// The commit that latest status is on.
    pub commit: Option<String>,
    /// Counted failed because its deadline passed without a final status.
    pub missed_deadline: bool,
}

/// Where a wave stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Opening {
    /// Open since `at` (wave 0 opens at the first status any host posts
    /// for the release; `None`: nobody has posted yet).
    Open { at: Option<SystemTime> },
    /// Every host before it has reported; the bake of wave `after` runs
    /// until `until`.
    Baking { until: SystemTime, after: usize },
    /// Waits for `hosts` of wave `on` to report. The gate cannot open
    /// before `not_before` (None: it may open at any moment).
    Waiting {
        on: usize,
        hosts: Vec<String>,
        not_before: Option<SystemTime>,
    },
    /// More hosts before it failed than `max_failures`.
    Blocked,
}

impl Opening {
    pub fn is_open(&self) -> bool {
        matches!(self, Opening::Open { .. })
    }

    /// The earliest the wave can open (exact when open or baking).
    fn lower_bound(&self) -> Option<SystemTime> {
        match self {
            Opening::Open { at } => *at,
            Opening::Baking { until, .. } => Some(*until),
            Opening::Waiting { not_before, .. } => *not_before,
            Opening::Blocked => None,
        }
    }
}

/// One wave of the manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WaveProgress {
    /// The manifest's index (0-based; people read it 1-based).
    pub index: usize,
    pub hosts: Vec<HostProgress>,
    pub bake: Duration,
    pub opening: Opening,
    /// The latest success time of its hosts (what its bake counts from).
    pub last_success: Option<SystemTime>,
}

impl WaveProgress {
    /// An empty wave is skipped, bake included.
    pub fn skipped(&self) -> bool {
        self.hosts.is_empty()
    }

    pub fn count(&self, state: HostState) -> usize {
        self.hosts.iter().filter(|h| h.state == state).count()
    }

    /// When its bake ends: every host reported and some succeeded.
    pub fn baked_at(&self) -> Option<SystemTime> {
        let resolved = self
            .hosts
            .iter()
            .all(|h| matches!(h.state, HostState::Live | HostState::Failed));
        (resolved && !self.hosts.is_empty())
            .then_some(self.last_success.map(|t| later(t, self.bake)))
            .flatten()
    }
}

/// How the rollout of the release stands as a whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Overall {
    /// Every host of the app runs the release.
    RolledOut,
    /// Waves are still going.
    InProgress,
    /// Every host reported, and some failed (within `max_failures`).
    Failed,
    /// More hosts failed than `max_failures`: no further host starts it.
    Halted,
}

/// How far the release has spread.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    pub app: String,
    pub asked: Ask,
    /// Every wave the manifest lists, in order (skipped ones included).
    pub waves: Vec<WaveProgress>,
    /// Hosts counted as failed, in wave order.
    pub failed: Vec<String>,
    pub halted: bool,
    /// The commits of the run, newest first.
    pub run: Vec<String>,
    /// The forge's clock.
    pub now: SystemTime,
}

impl Progress {
    pub fn overall(&self) -> Overall {
        if self.halted {
            return Overall::Halted;
        }
        let hosts = || self.waves.iter().flat_map(|w| &w.hosts);
        if hosts().all(|h| h.state == HostState::Live) {
            Overall::RolledOut
        } else if hosts().all(|h| matches!(h.state, HostState::Live | HostState::Failed)) {
            Overall::Failed
        } else {
            Overall::InProgress
        }
    }

    pub fn host(&self, host: &str) -> Option<&HostProgress> {
        self.waves
            .iter()
            .flat_map(|w| &w.hosts)
            .find(|h| h.host == host)
    }
}

/// How one status reads for the rollout of an app's release: by the heads
/// of its description, the same on every server and in `hoist fleet`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reading {
    /// What the host itself did with the commit (deploying, live, failed,
    /// cannot apply it).
    Attempt,
    /// A halt report about the app (a waiting host's `failure`): no attempt.
    Halt,
    /// A waiting host's `pending`: no attempt.
    Wait,
    /// A `failure` saying the app is down on the host, which runs this
    /// release: it counts as failed until it reports success again.
    Down,
    /// The app is down on the host, which runs another release: nothing
    /// to do with this one.
    DownElsewhere,
    /// A `failure` saying a local rollback holds the host at some release:
    /// it counts as failed.
    Held,
}

impl Reading {
    /// Whether the status says what the host did (or what became of it),
    /// rather than what it waits for.
    fn is_report(self) -> bool {
        matches!(self, Reading::Attempt | Reading::Down | Reading::Held)
    }
}

/// How `st` reads for the rollout of `app`'s `release`. Heads about other
/// apps do not change it (with one status for all of a host's apps, the
/// status is then also this app's attempt).
pub fn reading(st: &ReadStatus, app: &str, release: &str) -> Reading {
    let hs = heads(&st.description);
    if hs.is_empty() {
        return legacy_reading(st, app, release);
    }
    let mut mine: Vec<&Head> = hs.iter().filter(|h| h.app == app).collect();
    mine.sort_by_key(|h| h.kind);
    for h in mine {
        match h.kind {
            HeadKind::Halt => return Reading::Halt,
            HeadKind::Down if st.state == State::Failure => {
                return if h.release == release {
                    Reading::Down
                } else {
                    Reading::DownElsewhere
                };
            }
            HeadKind::Held if st.state == State::Failure => return Reading::Held,
            HeadKind::Wait if st.state == State::Pending => return Reading::Wait,
            _ => {}
        }
    }
    Reading::Attempt
}

/// A description without heads, from a server of an older hoist during an
/// upgrade of the fleet: its summary joined each app's part with `"; "`,
/// and each of those parts began with the app's name. A part that begins
/// exactly as that hoist wrote a halt report, a wait or a local rollback's
/// hold reads as one; anywhere else in the text, the same words do not
/// ("public-api 2.0 halted" is no halt of `api`).
fn legacy_reading(st: &ReadStatus, app: &str, release: &str) -> Reading {
    let halted = format!("{app} {release} halted: ");
    let waits = format!("{app} {release} waits for wave ");
    let held = format!("{app} held at ");
    for part in st.description.split("; ") {
        if st.state == State::Failure && part.starts_with(&halted) {
            return Reading::Halt;
        }
        if st.state == State::Pending && part.starts_with(&waits) {
            return Reading::Wait;
        }
        if st.state == State::Failure
            && part.starts_with(&held)
            && part.contains(" by local rollback")
        {
            return Reading::Held;
        }
    }
    Reading::Attempt
}

/// `t + d`, or a century on when that overflows (a `bake` of a million
/// years is "never", not a crash).
fn later(t: SystemTime, d: Duration) -> SystemTime {
    t.checked_add(d)
        .or_else(|| t.checked_add(Duration::from_secs(100 * 365 * 86_400)))
        .unwrap_or(t)
}

/// What one host sees of the release in the statuses of the run.
#[derive(Clone, Debug, Default)]
struct Seen {
    /// Its success time: the earliest success across the run, or after its
    /// latest `down` report of the release, the earliest after that.
    success_at: Option<SystemTime>,
    /// The latest status on the newest commit that has one.
    latest: Option<(ReadStatus, String)>,
    /// The newest report of its own (no halt report, no wait), newest
    /// commit first: what it last did, and how it reads.
    attempt: Option<(ReadStatus, Reading)>,
    /// The earliest status of any kind (wave 0 opens with the first of all
    /// hosts), from every status read, not only the latest.
    first_at: Option<SystemTime>,
    /// Its final reports (failure, error, down), with their times: what
    /// stops its deadline.
    finals: Vec<(SystemTime, State)>,
}

fn seen(input: &Input, run: &[CommitAsk], host: &str) -> Seen {
    let context = input.contexts.of(host, input.app);
    let release = &input.asked.release;
    let mut s = Seen::default();
    let mut down_at: Option<SystemTime> = None;
    let mut successes: Vec<SystemTime> = Vec::new();
    for c in run {
        let Some(read) = input.statuses.get(&c.commit) else {
            continue;
        };
        if s.latest.is_none()
            && let Some(st) = read.get(&context)
        {
            s.latest = Some((st.clone(), c.commit.clone()));
        }
        let history: Vec<&ReadStatus> = read.history(&context).collect();
        for st in history.iter().rev() {
            let r = reading(st, input.app, release);
            if s.attempt.is_none() && r.is_report() {
                s.attempt = Some(((*st).clone(), r));
            }
        }
        for st in history {
            let r = reading(st, input.app, release);
            s.first_at = Some(s.first_at.map_or(st.at, |t| t.min(st.at)));
            match (r, st.state) {
                (Reading::Attempt, State::Success) => successes.push(st.at),
                (Reading::Attempt, State::Failure | State::Error) => {
                    s.finals.push((st.at, st.state));
                }
                (Reading::Down, _) => {
                    down_at = down_at.max(Some(st.at));
                    s.finals.push((st.at, st.state));
                }
                _ => {}
            }
        }
    }
    s.success_at = successes
        .into_iter()
        .filter(|t| down_at.is_none_or(|d| *t > d))
        .min();
    s
}

/// A host resolved (live or failed) at a time, or not yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Resolution {
    Live(SystemTime),
    Failed {
        at: SystemTime,
        missed_deadline: bool,
    },
    Open,
}

fn resolve(s: &Seen, opening: &Opening, deadline: Option<Duration>, now: SystemTime) -> Resolution {
    // The release is down there, or a local rollback holds the host: it
    // counts as failed whatever it reported before, until it reports
    // success again.
    if let Some((a, Reading::Down | Reading::Held)) = &s.attempt {
        return Resolution::Failed {
            at: a.at,
            missed_deadline: false,
        };
    }
    if let Some(t) = s.success_at {
        return Resolution::Live(t);
    }
    let Opening::Open { at } = opening else {
        return Resolution::Open;
    };
    // A failure older than the wave's opening is no attempt at the release
    // (a host starts only after it saw the opening): with one status for
    // all of a host's apps, it is another app's.
    if let Some((a, Reading::Attempt)) = &s.attempt
        && a.state == State::Failure
        && at.is_none_or(|opened| a.at >= opened)
    {
        return Resolution::Failed {
            at: a.at,
            missed_deadline: false,
        };
    }
    if let (Some(d), Some(opened)) = (deadline, at) {
        let due = later(*opened, d);
        // Only a report made for this attempt stops the deadline: a
        // failure from before the wave opened, or a halt report, is none;
        // an `error` (the commit cannot be applied there) is, whenever.
        let reported = s
            .finals
            .iter()
            .any(|(t, state)| *t <= due && (*state == State::Error || *t >= *opened));
        if now >= due && !reported {
            return Resolution::Failed {
                at: due,
                missed_deadline: true,
            };
        }
    }
    Resolution::Open
}

/// How far the release has spread through the app's waves.
pub fn progress(input: &Input) -> Progress {
    let run = run(input.history, input.asked);
    let deadline = input.rollout.deadline.map(|d| d.0);
    let max_failures = input.rollout.max_failures as usize;
    let count = input.waves.len();

    let seen_of: BTreeMap<&str, Seen> = (0..count)
        .flat_map(|w| input.waves.hosts(w))
        .map(|h| (h.as_str(), seen(input, run, h)))
        .collect();
    let started = seen_of.values().filter_map(|s| s.first_at).min();

    let mut waves: Vec<WaveProgress> = Vec::with_capacity(count);
    let mut failed: Vec<String> = Vec::new();
    // Over the non-empty waves before the one being opened.
    let mut unresolved: Vec<(usize, String)> = Vec::new();
    let mut latest_resolution: Option<SystemTime> = None;
    let mut prev: Option<usize> = None;

    for w in 0..count {
        let opening = match prev {
            None => Opening::Open { at: started },
            Some(_) if failed.len() > max_failures => Opening::Blocked,
            Some(p) if !unresolved.is_empty() => {
                let on = unresolved[0].0;
                let hosts: Vec<String> = unresolved
                    .iter()
                    .filter(|(wave, _)| *wave == on)
                    .map(|(_, h)| h.clone())
                    .collect();
                let not_before = waiting_bound(
                    &waves[p],
                    &unresolved,
                    max_failures - failed.len(),
                    input.now,
                );
                Opening::Waiting {
                    on,
                    hosts,
                    not_before,
                }
            }
            Some(p) => {
                let before = &waves[p];
                let opens = [
                    before.opening.lower_bound(),
                    latest_resolution,
                    before.last_success.map(|t| later(t, before.bake)),
                ]
                .into_iter()
                .flatten()
                .max();
                match opens {
                    Some(t) if t > input.now => Opening::Baking { until: t, after: p },
                    at => Opening::Open { at },
                }
            }
        };

        let mut hosts = Vec::new();
        let mut last_success = None;
        for host in input.waves.hosts(w) {
            let s = &seen_of[host.as_str()];
            let r = resolve(s, &opening, deadline, input.now);
            match r {
                Resolution::Live(t) => {
                    last_success = last_success.max(Some(t));
                    latest_resolution = latest_resolution.max(Some(t));
                }
                Resolution::Failed { at, .. } => {
                    failed.push(host.clone());
                    latest_resolution = latest_resolution.max(Some(at));
                }
                Resolution::Open => unresolved.push((w, host.clone())),
            }
            hosts.push((host.clone(), r));
        }
        let hosts = hosts
            .into_iter()
            .map(|(host, r)| HostProgress {
                state: HostState::Waiting, // settled below, once the halt is known
                since: match r {
                    Resolution::Live(t) => Some(t),
                    Resolution::Failed { at, .. } => Some(at),
                    Resolution::Open => seen_of[host.as_str()].latest.as_ref().map(|l| l.0.at),
                },
                description: seen_of[host.as_str()]
                    .latest
                    .as_ref()
                    .map(|l| l.0.description.clone()),
                commit: seen_of[host.as_str()].latest.as_ref().map(|l| l.1.clone()),
                missed_deadline: matches!(
                    r,
                    Resolution::Failed {
                        missed_deadline: true,
                        ..
                    }
                ),
                host,
            })
            .collect::<Vec<_>>();
        if !hosts.is_empty() {
            prev = Some(w);
        }
        waves.push(WaveProgress {
            index: w,
            hosts,
            bake: input
                .rollout
                .waves
                .get(w)
                .map(Wave::bake)
                .unwrap_or_default(),
            opening,
            last_success,
        });
    }

    let halted = failed.len() > max_failures;
    for wave in &mut waves {
        for h in &mut wave.hosts {
            let s = &seen_of[h.host.as_str()];
            h.state = if s.success_at.is_some() {
                HostState::Live
            } else if failed.contains(&h.host) {
                HostState::Failed
            } else if s
                .attempt
                .as_ref()
                .is_some_and(|a| a.0.state == State::Error)
            {
                HostState::Error
            } else if halted {
                HostState::Halted
            } else if s.latest.is_none() {
                HostState::Missing
            } else if let Opening::Open { at } = wave.opening {
                let started = s.attempt.as_ref().is_some_and(|(a, _)| {
                    a.state == State::Pending && at.is_none_or(|at| a.at >= at)
                });
                if started {
                    HostState::Deploying
                } else {
                    HostState::Waiting
                }
            } else {
                HostState::Waiting
            };
        }
    }

    Progress {
        app: input.app.to_string(),
        asked: input.asked.clone(),
        waves,
        failed,
        halted,
        run: run.iter().map(|c| c.commit.clone()).collect(),
        now: input.now,
    }
}

/// How a host outside the inventory stands, for display: it places itself
/// in the last wave, and nobody else counts it.
pub fn outside_host(input: &Input, p: &Progress, host: &str) -> HostProgress {
    let run = run(input.history, input.asked);
    let s = seen(input, run, host);
    let last = p.waves.last().map(|w| &w.opening);
    let opening = last.cloned().unwrap_or(Opening::Open { at: None });
    let r = resolve(&s, &opening, input.rollout.deadline.map(|d| d.0), input.now);
    let state = match r {
        Resolution::Live(_) => HostState::Live,
        Resolution::Failed { .. } => HostState::Failed,
        Resolution::Open
            if s.attempt
                .as_ref()
                .is_some_and(|a| a.0.state == State::Error) =>
        {
            HostState::Error
        }
        Resolution::Open if p.halted => HostState::Halted,
        Resolution::Open if s.latest.is_none() => HostState::Missing,
        Resolution::Open
            if opening.is_open()
                && s.attempt
                    .as_ref()
                    .is_some_and(|a| a.0.state == State::Pending) =>
        {
            HostState::Deploying
        }
        Resolution::Open => HostState::Waiting,
    };
    HostProgress {
        host: host.to_string(),
        state,
        since: match r {
            Resolution::Live(t) => Some(t),
            Resolution::Failed { at, .. } => Some(at),
            Resolution::Open => s.latest.as_ref().map(|l| l.0.at),
        },
        description: s.latest.as_ref().map(|l| l.0.description.clone()),
        commit: s.latest.as_ref().map(|l| l.1.clone()),
        missed_deadline: matches!(
            r,
            Resolution::Failed {
                missed_deadline: true,
                ..
            }
        ),
    }
}

/// The earliest moment a gate waiting on `unresolved` hosts can open, the
/// wave just before it being `prev`. Statuses only ever push it later: a
/// success already seen stays, and one still to come is at least `now`.
/// `budget`: failures still tolerated.
fn waiting_bound(
    prev: &WaveProgress,
    unresolved: &[(usize, String)],
    budget: usize,
    now: SystemTime,
) -> Option<SystemTime> {
    let prev_open = prev.opening.lower_bound();
    let pending_in_prev = unresolved.iter().filter(|(w, _)| *w == prev.index).count();
    // If all of them failed the rollout would halt: one at least must
    // succeed, at `now` at the earliest, and then bake.
    let must_succeed = pending_in_prev > budget;
    let bound = [
        prev_open,
        prev.last_success.map(|t| later(t, prev.bake)),
        must_succeed.then(|| later(prev_open.map_or(now, |o| o.max(now)), prev.bake)),
    ]
    .into_iter()
    .flatten()
    .max();
    bound.filter(|t| *t > now)
}

/// What one host should do about the release.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Gate {
    /// It already runs the release: report `success` without waiting.
    Running,
    /// Start now.
    Go,
    /// Not yet: post `pending` with `description`, and check again no
    /// sooner than `not_before` (forge time; None: at the next poll).
    Wait {
        /// The wave (manifest index) waited on.
        wave: usize,
        not_before: Option<SystemTime>,
        description: String,
    },
    /// The rollout is halted: report `failure` with `description`, keep
    /// the current release.
    Halted {
        failed: Vec<String>,
        description: String,
    },
}

/// What `host` should do about the release now. `running`: what it runs.
///
/// A halted rollout lets no further host start; the hosts counted failed
/// only for missing their deadline (servers that were down) may still
/// start it when no host actually failed, since their success is what ends
/// that halt. A host that failed itself is halted like the rest: `hoist
/// retry` there is the way to try again (its success ends the halt).
pub fn gate(p: &Progress, waves: &Waves, host: &str, running: Option<&Ask>) -> Gate {
    if running == Some(&p.asked) {
        return Gate::Running;
    }
    let w = waves.wave_of(host);
    if p.halted {
        let me = p.host(host);
        let only_late = p
            .failed
            .iter()
            .all(|f| p.host(f).is_some_and(|h| h.missed_deadline));
        if only_late && me.is_some_and(|h| h.missed_deadline) {
            return Gate::Go;
        }
        return Gate::Halted {
            failed: p.failed.clone(),
            description: halted_description(&p.app, &p.asked.release, &p.failed),
        };
    }
    let release = &p.asked.release;
    let Some(wave) = p.waves.get(w) else {
        // Waves computed for another rollout than the progress: be safe.
        return Gate::Wait {
            wave: w,
            not_before: None,
            description: waiting_description(&p.app, release, w, &[], None),
        };
    };
    match &wave.opening {
        Opening::Open { .. } => Gate::Go,
        Opening::Baking { until, after } => Gate::Wait {
            wave: *after,
            not_before: Some(*until),
            description: waiting_description(
                &p.app,
                release,
                *after,
                &names(&p.waves[*after]),
                Some(until.duration_since(p.now).unwrap_or_default()),
            ),
        },
        Opening::Waiting {
            on,
            hosts,
            not_before,
        } => Gate::Wait {
            wave: *on,
            not_before: *not_before,
            description: waiting_description(&p.app, release, *on, hosts, None),
        },
        Opening::Blocked => Gate::Halted {
            failed: p.failed.clone(),
            description: halted_description(&p.app, &p.asked.release, &p.failed),
        },
    }
}

fn names(w: &WaveProgress) -> Vec<String> {
    w.hosts.iter().map(|h| h.host.clone()).collect()
}

/// How long to wait locally for a forge moment: `at - forge_now`, both on
/// the forge's clock, so this server's own clock never enters. At most a
/// day: a bake longer than that is looked at again daily.
pub fn wait_time(at: SystemTime, forge_now: SystemTime) -> Duration {
    at.duration_since(forge_now)
        .unwrap_or_default()
        .min(Duration::from_secs(86_400))
}

/// Up to three names, then how many more.
fn list(hosts: &[String]) -> String {
    match hosts.len() {
        0 => "no host".into(),
        1..=3 => hosts.join(", "),
        n => format!("{} +{} more", hosts[..2].join(", "), n - 2),
    }
}

/// A duration as a person reads it, rounded up: `45s`, `4m`, `1h5m`.
pub fn short_duration(d: Duration) -> String {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    if secs < 60 {
        return format!("{secs}s");
    }
    let mins = secs.div_ceil(60);
    if mins < 60 {
        format!("{mins}m")
    } else if mins.is_multiple_of(60) {
        format!("{}h", mins / 60)
    } else {
        format!("{}h{}m", mins / 60, mins % 60)
    }
}

/// The `pending` description of a host waiting for wave `wave` (manifest
/// index): `[hoist:wait web 1.4.0] web 1.4.0 waits for wave 1 (web-1), 4m
/// left`. The head tells the other servers this is no attempt.
pub fn waiting_description(
    app: &str,
    release: &str,
    wave: usize,
    hosts: &[String],
    left: Option<Duration>,
) -> String {
    let mut s = format!(
        "{}{app} {release} waits for wave {} ({})",
        head_of(HeadKind::Wait, app, release),
        wave + 1,
        list(hosts)
    );
    if let Some(left) = left {
        s.push_str(&format!(", {} left", short_duration(left)));
    }
    s
}

/// The `failure` description of a host the halt keeps from starting:
/// `[hoist:halt web 1.4.0] web 1.4.0 halted: web-1 failed`. The head is
/// what the other servers read; the text keeps the phrase an older hoist
/// looks for, so a fleet in the middle of an upgrade reads it too.
pub fn halted_description(app: &str, release: &str, failed: &[String]) -> String {
    format!(
        "{}{app} {release} halted: {} failed",
        head_of(HeadKind::Halt, app, release),
        list(failed)
    )
}

/// A head and the space after it.
fn head_of(kind: HeadKind, app: &str, release: &str) -> String {
    format!("{} ", Head::new(kind, app, release))
}

/// Why a status context cannot carry a rollout (SPEC §4): without
/// `{host}`, every server reports under one context, so the canary's
/// success is overwritten by the next server's status and a later wave's
/// failure reads as the canary's. `None` when the template is fine or no
/// app of the commit has a rollout.
pub fn context_problem(template: &str, apps: &AppSet) -> Option<String> {
    if template.contains("{host}") {
        return None;
    }
    let (app, _) = apps.iter().find(|(_, m)| m.rollout.is_some())?;
    Some(format!(
        "status.context {template:?} has no {{host}}, but {app} rolls out in waves: every server would report under that one context, so none could tell how another server's wave went; put {{host}} in status.context (the default is hoist/{{environment}}/{{host}})"
    ))
}

/// A warning when several apps with rollouts would share a host's one
/// status (a context without `{app}`): one app's failure there counts
/// against the others' rollouts, and two apps whose releases change in the
/// same commit can each wait for the other's canary.
pub fn shared_context_warning(template: &str, apps: &AppSet) -> Option<String> {
    if template.contains("{app}") || !template.contains("{host}") {
        return None;
    }
    let with: Vec<String> = apps
        .iter()
        .filter(|(_, m)| m.rollout.is_some())
        .map(|(a, _)| a.to_string())
        .collect();
    (with.len() > 1).then(|| {
        format!(
            "status.context {template:?} has no {{app}}, and {} roll out in waves: each server posts one status for all of them, so one app's failure counts against the others' rollouts and two releases merged together can wait for each other's canary; use hoist/{{environment}}/{{host}}/{{app}}",
            with.join(", ")
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::InventoryHost;
    use std::time::UNIX_EPOCH;

    const APP: &str = "web";

    /// Forge time: `secs` after 2027-01-15T08:00:00Z.
    fn t(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    const MIN: u64 = 60;

    fn rollout(yaml: &str) -> Rollout {
        serde_norway::from_str(yaml).expect("rollout")
    }

    fn ask(release: &str) -> Ask {
        Ask {
            release: release.into(),
            sha256: format!("{:0<64}", release.replace('.', "")),
        }
    }

    fn hosts(list: &[(&str, &[&str])]) -> Vec<(String, Vec<String>)> {
        list.iter()
            .map(|(h, l)| (h.to_string(), l.iter().map(|l| l.to_string()).collect()))
            .collect()
    }

    fn names(n: usize) -> Vec<(String, Vec<String>)> {
        (1..=n).map(|i| (format!("web-{i}"), vec![])).collect()
    }

    /// A branch, its statuses and an app's rollout, as the forge has them.
    struct World {
        rollout: Rollout,
        waves: Waves,
        asked: Ask,
        history: Vec<CommitAsk>,
        statuses: BTreeMap<String, StatusRead>,
        template: &'static str,
        order: u64,
    }

    impl World {
        /// `hosts` in the inventory; commit `c1` asks 1.4.0.
        fn new(rollout_yaml: &str, hosts: Vec<(String, Vec<String>)>) -> World {
            let rollout = rollout(rollout_yaml);
            let waves = Waves::new(APP, &rollout, &hosts);
            World {
                rollout,
                waves,
                asked: ask("1.4.0"),
                history: vec![CommitAsk {
                    commit: "c1".into(),
                    ask: Some(ask("1.4.0")),
                }],
                statuses: BTreeMap::new(),
                template: "hoist/{environment}/{host}",
                order: 0,
            }
        }

        /// A canary, then 50%, then the rest.
        fn standard(n: usize) -> World {
            let mut hs = names(n);
            hs[0].1.push("canary".into());
            World::new(
                "waves:\n  - { labels: [canary], bake: 10m }\n  - { percent: 50, bake: 5m }\n  - { percent: 100 }\ndeadline: 30m\n",
                hs,
            )
        }

        /// A new commit on top asking `release` (None: no such app).
        fn commit(&mut self, name: &str, release: Option<&str>) {
            self.history.insert(
                0,
                CommitAsk {
                    commit: name.into(),
                    ask: release.map(ask),
                },
            );
            if let Some(r) = release {
                self.asked = ask(r);
            }
        }

        fn post(
            &mut self,
            commit: &str,
            host: &str,
            state: State,
            description: &str,
            at: SystemTime,
        ) {
            self.order += 1;
            let context = Contexts {
                template: self.template,
                environment: "production",
            }
            .of(host, APP);
            let read = self
                .statuses
                .entry(commit.into())
                .or_insert_with(|| StatusRead::new(Vec::new(), at));
            let mut all = std::mem::take(&mut read.all);
            all.push(ReadStatus {
                context,
                state,
                description: description.into(),
                at,
                order: self.order,
            });
            *read = StatusRead::new(all, at);
        }

        fn ok(&mut self, commit: &str, host: &str, at: SystemTime) {
            self.post(commit, host, State::Success, "web 1.4.0 live in 2.0s", at);
        }

        fn pending(&mut self, commit: &str, host: &str, at: SystemTime) {
            self.post(commit, host, State::Pending, "applying", at);
        }

        fn fail(&mut self, commit: &str, host: &str, at: SystemTime) {
            let d = format!(
                "web {} failed its health gate; rolled back",
                self.asked.release
            );
            self.post(commit, host, State::Failure, &d, at);
        }

        fn input(&self, now: SystemTime) -> Input<'_> {
            Input {
                app: APP,
                rollout: &self.rollout,
                waves: &self.waves,
                asked: &self.asked,
                history: &self.history,
                statuses: &self.statuses,
                contexts: Contexts {
                    template: self.template,
                    environment: "production",
                },
                now,
            }
        }

        fn progress(&self, now: SystemTime) -> Progress {
            progress(&self.input(now))
        }

        fn gate(&self, host: &str, now: SystemTime) -> Gate {
            gate(&self.progress(now), &self.waves, host, None)
        }

        fn state(&self, host: &str, now: SystemTime) -> HostState {
            self.progress(now)
                .host(host)
                .expect("a host of the app")
                .state
        }
    }

    fn is_go(g: &Gate) -> bool {
        matches!(g, Gate::Go)
    }

    fn wait_description(g: &Gate) -> &str {
        match g {
            Gate::Wait { description, .. } => description,
            other => panic!("expected a wait, got {other:?}"),
        }
    }

    fn not_before(g: &Gate) -> Option<SystemTime> {
        match g {
            Gate::Wait { not_before, .. } => *not_before,
            other => panic!("expected a wait, got {other:?}"),
        }
    }

    // ---- membership ----

    #[test]
    fn percent_waves_round_up_cumulatively_with_at_least_one_host() {
        let r = rollout("waves:\n  - { percent: 10 }\n  - { percent: 50 }\n  - { percent: 100 }\n");
        for (n, sizes) in [
            (1, [1, 0, 0]),
            (2, [1, 0, 1]),
            (3, [1, 1, 1]),
            (7, [1, 3, 3]),
            (10, [1, 4, 5]),
            (11, [2, 4, 5]),
            (100, [10, 40, 50]),
        ] {
            let w = Waves::new(APP, &r, &names(n));
            let got: Vec<usize> = (0..3).map(|i| w.hosts(i).len()).collect();
            assert_eq!(got, sizes, "{n} hosts");
        }
        let w = Waves::new(APP, &r, &[]);
        assert!(w.is_empty());
    }

    #[test]
    fn selectors_take_what_they_match_and_a_host_stays_in_its_first_wave() {
        let hs = hosts(&[
            ("web-1", &["web", "canary"]),
            ("web-2", &["web", "eu"]),
            ("web-3", &["web", "eu", "canary"]),
            ("api-1", &["api"]),
            ("web-4", &["web"]),
        ]);
        let r = rollout(
            "waves:\n  - { labels: [canary] }\n  - { labels: [eu], hosts: ['web-*'] }\n  - { hosts: ['api-*', 'web-1'] }\n  - { labels: [nothing] }\n",
        );
        let w = Waves::new(APP, &r, &hs);
        let sorted = |i: usize| {
            let mut v = w.hosts(i).to_vec();
            v.sort();
            v
        };
        assert_eq!(sorted(0), ["web-1", "web-3"], "labels: all present");
        assert_eq!(
            sorted(1),
            ["web-2"],
            "web-3 stays in wave 1; hosts and labels both"
        );
        assert_eq!(sorted(2), ["api-1"], "web-1 is taken already");
        assert_eq!(sorted(3), ["web-4"], "no wave takes web-4: the last wave");
        assert_eq!(w.wave_of("web-3"), 0);
        assert_eq!(w.wave_of("web-4"), 3);
        assert_eq!(w.wave_of("db-9"), 3, "outside the inventory: the last wave");
        assert!(!w.contains("db-9"));
    }

    #[test]
    fn a_percent_already_held_takes_no_more_hosts() {
        let mut hs = names(4);
        for h in &mut hs[..3] {
            h.1.push("canary".into());
        }
        let r = rollout(
            "waves:\n  - { labels: [canary] }\n  - { percent: 50 }\n  - { percent: 100 }\n",
        );
        let w = Waves::new(APP, &r, &hs);
        assert_eq!(
            (w.hosts(0).len(), w.hosts(1).len(), w.hosts(2).len()),
            (3, 0, 1),
            "3 of 4 already hold 50%"
        );
    }

    #[test]
    fn the_order_is_sha256_of_app_and_host_the_same_everywhere() {
        let r = rollout("waves:\n  - { percent: 1 }\n  - { percent: 100 }\n");
        let hs = names(20);
        let mut reversed = hs.clone();
        reversed.reverse();
        let w = Waves::new(APP, &r, &hs);
        assert_eq!(
            w,
            Waves::new(APP, &r, &reversed),
            "input order does not matter"
        );
        // The first is the host with the smallest sha256("web/<host>").
        let first = hs
            .iter()
            .map(|(h, _)| (hex::encode(Sha256::digest(format!("web/{h}"))), h.clone()))
            .min()
            .expect("hosts")
            .1;
        assert_eq!(w.hosts(0), [first]);
        // Another app has another canary for the same percent (not always,
        // but for this fleet), so one server is not every app's guinea pig.
        let other = Waves::new("api", &r, &hs);
        assert_ne!(w.hosts(0), other.hosts(0));
        // A host joining moves at most itself into the first wave.
        let mut more = hs.clone();
        more.push(("web-21".into(), vec![]));
        let grown = Waves::new(APP, &r, &more);
        assert!(grown.hosts(0) == w.hosts(0) || grown.hosts(0) == ["web-21".to_string()]);
    }

    #[test]
    fn membership_follows_the_inventory_and_the_apps_targets() {
        let inv = Inventory {
            hosts: [
                ("web-1", &["web", "canary"][..]),
                ("web-2", &["web"]),
                ("db-1", &["db"]),
            ]
            .into_iter()
            .map(|(h, l)| {
                (
                    h.to_string(),
                    InventoryHost {
                        labels: l.iter().map(|l| l.to_string()).collect(),
                        key: None,
                    },
                )
            })
            .collect(),
            admins: vec![],
        };
        let r = rollout("waves:\n  - { labels: [canary] }\n  - { percent: 100 }\n");
        let targets = Targets {
            hosts: vec![],
            labels: vec!["web".into()],
        };
        let w = Waves::from_inventory(APP, &r, Some(&inv), Some(&targets));
        assert_eq!(w.hosts(0), ["web-1"]);
        assert_eq!(w.hosts(1), ["web-2"]);
        assert!(!w.contains("db-1"), "not targeted");
        let none = Waves::from_inventory(APP, &r, None, Some(&targets));
        assert!(
            none.is_empty(),
            "without an inventory every host is outside it"
        );
        assert_eq!(none.wave_of("web-1"), 1);
    }

    // ---- the gate ----

    #[test]
    fn the_canary_goes_at_once_and_the_others_wait_for_it() {
        let w = World::standard(10);
        assert!(is_go(&w.gate("web-1", t(0))));
        let second = w.waves.hosts(1)[0].clone();
        let g = w.gate(&second, t(0));
        assert_eq!(
            wait_description(&g),
            "[hoist:wait web 1.4.0] web 1.4.0 waits for wave 1 (web-1)",
            "{g:?}"
        );
        // The canary must succeed first (max_failures 0), then bake 10m:
        // nobody needs to read statuses again before then; and wave 3
        // needs wave 2 to succeed after that, and bake 5m.
        assert_eq!(not_before(&g), Some(t(10 * MIN)));
        let third = w.waves.hosts(2)[0].clone();
        let g = w.gate(&third, t(0));
        assert_eq!(
            wait_description(&g),
            "[hoist:wait web 1.4.0] web 1.4.0 waits for wave 1 (web-1)"
        );
        assert_eq!(not_before(&g), Some(t(15 * MIN)));
        let p = w.progress(t(0));
        assert_eq!(p.overall(), Overall::InProgress);
        assert_eq!(p.host("web-1").map(|h| h.state), Some(HostState::Missing));
    }

    #[test]
    fn wave_2_opens_only_after_the_canary_baked_on_the_forge_clock() {
        let mut w = World::standard(10);
        w.pending("c1", "web-1", t(0));
        for i in 2..=10 {
            w.post(
                "c1",
                &format!("web-{i}"),
                State::Pending,
                "web 1.4.0 waits for wave 1 (web-1)",
                t(5),
            );
        }
        let wave2 = w.waves.hosts(1).to_vec();
        assert_eq!(w.state("web-1", t(20)), HostState::Deploying);
        assert_eq!(w.state(&wave2[0], t(20)), HostState::Waiting);
        w.ok("c1", "web-1", t(30));
        let g = w.gate(&wave2[0], t(31));
        assert_eq!(
            wait_description(&g),
            "[hoist:wait web 1.4.0] web 1.4.0 waits for wave 1 (web-1), 10m left"
        );
        assert_eq!(not_before(&g), Some(t(30 + 10 * MIN)));
        let g = w.gate(&wave2[0], t(30 + 10 * MIN - 1));
        assert_eq!(
            wait_description(&g),
            "[hoist:wait web 1.4.0] web 1.4.0 waits for wave 1 (web-1), 1s left"
        );
        assert_eq!(wave2.len(), 4);
        for h in &wave2 {
            assert!(is_go(&w.gate(h, t(30 + 10 * MIN))), "{h}");
        }
        // Wave 3 waits for wave 2's hosts, then for its 5m bake.
        let last = w.waves.hosts(2)[0].clone();
        let g = w.gate(&last, t(30 + 10 * MIN));
        assert!(
            wait_description(&g).starts_with("[hoist:wait web 1.4.0] web 1.4.0 waits for wave 2 ("),
            "{g:?}"
        );
        assert_eq!(
            not_before(&g),
            Some(t(30 + 15 * MIN)),
            "at least a success plus 5m"
        );
        for (i, h) in wave2.iter().enumerate() {
            w.ok("c1", h, t(11 * MIN + i as u64 * 10));
        }
        let g = w.gate(&last, t(12 * MIN));
        assert_eq!(not_before(&g), Some(t(11 * MIN + 30 + 5 * MIN)));
        assert!(is_go(&w.gate(&last, t(16 * MIN + 30))));
        let p = w.progress(t(16 * MIN + 30));
        assert_eq!(
            p.waves[1].opening,
            Opening::Open {
                at: Some(t(10 * MIN + 30))
            }
        );
        assert_eq!(
            p.waves[2].opening,
            Opening::Open {
                at: Some(t(16 * MIN + 30))
            }
        );
    }

    #[test]
    fn the_bake_never_opens_before_the_bound_it_announced() {
        // Whatever happens in between, a gate closed at some moment does not
        // open before the not_before it gave then.
        let mut w = World::standard(6);
        let wave2: Vec<String> = w.waves.hosts(1).to_vec();
        let mut checks = Vec::new();
        w.pending("c1", "web-1", t(0));
        checks.push((t(1), w.gate(&wave2[0], t(1))));
        w.ok("c1", "web-1", t(40));
        checks.push((t(41), w.gate(&wave2[0], t(41))));
        for (at, g) in checks {
            let bound = not_before(&g).expect("a bound");
            for s in (at.duration_since(t(0)).unwrap().as_secs()
                ..bound.duration_since(t(0)).unwrap().as_secs())
                .step_by(7)
            {
                assert!(
                    !is_go(&w.gate(&wave2[0], t(s))),
                    "open at {s}s before {bound:?}"
                );
            }
            assert!(bound > at);
        }
    }

    #[test]
    fn a_commit_that_leaves_the_release_alone_keeps_the_bake_and_the_waves() {
        let mut w = World::standard(4);
        w.pending("c1", "web-1", t(0));
        w.ok("c1", "web-1", t(60));
        // c2 changes another app: web's release is the same.
        w.commit("c2", Some("1.4.0"));
        w.pending("c2", "web-1", t(120));
        w.ok("c2", "web-1", t(125));
        let h2 = w.waves.hosts(1)[0].clone();
        let g = w.gate(&h2, t(180));
        assert_eq!(
            not_before(&g),
            Some(t(60 + 10 * MIN)),
            "the earliest success across the run, not the newest"
        );
        assert!(is_go(&w.gate(&h2, t(60 + 10 * MIN))));
        // A host that succeeded only on c1 still counts on c2.
        w.ok("c1", &h2, t(11 * MIN));
        assert_eq!(w.state(&h2, t(12 * MIN)), HostState::Live);
        // Another release in between breaks the run: c1's statuses no
        // longer speak for 1.4.0.
        let mut broken = World::standard(4);
        broken.ok("c1", "web-1", t(60));
        broken.commit("c2", Some("1.3.9"));
        broken.commit("c3", Some("1.4.0"));
        let p = broken.progress(t(20 * MIN));
        assert_eq!(p.run, ["c3"]);
        assert_eq!(p.host("web-1").map(|h| h.state), Some(HostState::Missing));
    }

    #[test]
    fn a_failed_canary_halts_the_rollout_and_waiting_hosts_report_it() {
        let mut w = World::standard(10);
        w.pending("c1", "web-1", t(0));
        w.fail("c1", "web-1", t(40));
        let p = w.progress(t(50));
        assert!(p.halted);
        assert_eq!(p.failed, ["web-1"]);
        assert_eq!(p.overall(), Overall::Halted);
        match w.gate("web-5", t(50)) {
            Gate::Halted {
                failed,
                description,
            } => {
                assert_eq!(failed, ["web-1"]);
                assert_eq!(
                    description,
                    "[hoist:halt web 1.4.0] web 1.4.0 halted: web-1 failed"
                );
            }
            other => panic!("{other:?}"),
        }
        // The canary itself is halted too: retrying is `hoist retry`.
        assert!(matches!(w.gate("web-1", t(50)), Gate::Halted { .. }));
        assert_eq!(w.state("web-5", t(50)), HostState::Halted);
        assert_eq!(w.state("web-1", t(50)), HostState::Failed);
        // Long after: still halted, nothing opened.
        assert!(matches!(w.gate("web-9", t(600 * MIN)), Gate::Halted { .. }));
    }

    #[test]
    fn halt_reports_are_no_failures_and_the_halt_ends_when_the_failed_host_succeeds() {
        let mut w = World::standard(6);
        w.pending("c1", "web-1", t(0));
        w.fail("c1", "web-1", t(40));
        for i in 2..=6 {
            w.post(
                "c1",
                &format!("web-{i}"),
                State::Failure,
                "web 1.4.0 halted: web-1 failed",
                t(50),
            );
        }
        assert_eq!(
            w.progress(t(60)).failed,
            ["web-1"],
            "halt reports are not attempts"
        );
        // A new commit that leaves web alone: the canary's own halt report
        // there does not hide its failure.
        w.commit("c2", Some("1.4.0"));
        w.post(
            "c2",
            "web-1",
            State::Failure,
            "web 1.4.0 halted: web-1 failed; api unchanged",
            t(70),
        );
        assert!(w.progress(t(80)).halted);
        // `hoist retry` on the canary: success on c2.
        w.pending("c2", "web-1", t(90));
        assert!(!w.progress(t(91)).halted, "retrying: no longer failed");
        assert!(
            !is_go(&w.gate("web-2", t(91))),
            "but the canary must succeed first"
        );
        w.ok("c2", "web-1", t(100));
        let p = w.progress(t(101));
        assert!(!p.halted);
        assert_eq!(p.overall(), Overall::InProgress);
        let h = w.waves.hosts(1)[0].clone();
        assert_eq!(not_before(&w.gate(&h, t(101))), Some(t(100 + 10 * MIN)));
        assert!(is_go(&w.gate(&h, t(100 + 10 * MIN))));
    }

    #[test]
    fn a_new_release_ends_a_halt() {
        let mut w = World::standard(4);
        w.fail("c1", "web-1", t(40));
        w.post(
            "c1",
            "web-2",
            State::Failure,
            "web 1.4.0 halted: web-1 failed",
            t(50),
        );
        assert!(w.progress(t(60)).halted);
        w.commit("c2", Some("1.4.1"));
        let p = w.progress(t(70));
        assert!(!p.halted);
        assert!(is_go(&w.gate("web-1", t(70))));
        assert!(!is_go(&w.gate("web-2", t(70))));
        // A revert to the release the hosts still run: they are done.
        w.commit("c3", Some("1.3.0"));
        assert_eq!(
            gate(&w.progress(t(80)), &w.waves, "web-2", Some(&ask("1.3.0"))),
            Gate::Running
        );
    }

    #[test]
    fn max_failures_tolerates_that_many_and_halts_beyond() {
        let mut w = World::new(
            "waves:\n  - { percent: 50, bake: 1m }\n  - { percent: 100 }\nmax_failures: 1\n",
            names(6),
        );
        let first: Vec<String> = w.waves.hosts(0).to_vec();
        let second: Vec<String> = w.waves.hosts(1).to_vec();
        w.fail("c1", &first[0], t(10));
        w.ok("c1", &first[1], t(20));
        assert!(!w.progress(t(25)).halted, "one failure is tolerated");
        assert!(
            !is_go(&w.gate(&second[0], t(25))),
            "{} still deploying",
            first[2]
        );
        w.ok("c1", &first[2], t(30));
        assert_eq!(not_before(&w.gate(&second[0], t(31))), Some(t(90)));
        assert!(is_go(&w.gate(&second[0], t(90))));
        w.fail("c1", &second[0], t(100));
        let p = w.progress(t(101));
        assert!(p.halted);
        assert_eq!(p.failed, [first[0].clone(), second[0].clone()]);
        assert!(matches!(w.gate(&second[1], t(101)), Gate::Halted { .. }));
        // Done with a tolerated failure is not a clean rollout.
        let mut done = World::new("waves:\n  - { percent: 100 }\nmax_failures: 1\n", names(2));
        done.fail("c1", "web-1", t(10));
        done.ok("c1", "web-2", t(10));
        assert_eq!(done.progress(t(11)).overall(), Overall::Failed);
    }

    #[test]
    fn a_host_silent_past_the_deadline_counts_as_failed_until_it_succeeds() {
        let mut w = World::standard(8);
        w.ok("c1", "web-1", t(0));
        let wave2: Vec<String> = w.waves.hosts(1).to_vec();
        assert_eq!(wave2.len(), 3);
        let opened = t(10 * MIN);
        // Two of wave 2 succeed; the third is down and says nothing.
        w.ok("c1", &wave2[0], opened + Duration::from_secs(20));
        w.ok("c1", &wave2[1], opened + Duration::from_secs(25));
        let down = wave2[2].clone();
        let just_before = opened + Duration::from_secs(30 * MIN - 1);
        assert!(!w.progress(just_before).halted);
        assert_eq!(w.state(&down, just_before), HostState::Missing);
        let late = opened + Duration::from_secs(30 * MIN);
        let p = w.progress(late);
        assert!(p.halted);
        assert_eq!(p.failed, std::slice::from_ref(&down));
        let h = p.host(&down).expect("down");
        assert!(h.missed_deadline);
        assert_eq!(h.since, Some(late));
        let third = w.waves.hosts(2)[0].clone();
        assert_eq!(
            w.gate(&third, late),
            Gate::Halted {
                failed: vec![down.clone()],
                description: format!("[hoist:halt web 1.4.0] web 1.4.0 halted: {down} failed"),
            }
        );
        // The host comes back: only late hosts failed, so it may start, and
        // its success ends the halt.
        assert!(is_go(&w.gate(&down, late + Duration::from_secs(60))));
        w.pending("c1", &down, late + Duration::from_secs(70));
        assert!(
            w.progress(late + Duration::from_secs(75)).halted,
            "still late until success"
        );
        w.ok("c1", &down, late + Duration::from_secs(80));
        let p = w.progress(late + Duration::from_secs(81));
        assert!(!p.halted);
        let bake_end = late + Duration::from_secs(80 + 5 * MIN);
        assert_eq!(
            not_before(&w.gate(&third, late + Duration::from_secs(81))),
            Some(bake_end)
        );
        assert!(is_go(&w.gate(&third, bake_end)));
    }

    #[test]
    fn a_late_host_waits_when_another_actually_failed() {
        let mut w = World::new("waves:\n  - { percent: 100 }\ndeadline: 10m\n", names(3));
        w.pending("c1", "web-1", t(0));
        w.fail("c1", "web-2", t(30));
        w.ok("c1", "web-1", t(40));
        let late = t(11 * MIN);
        let p = w.progress(late);
        let mut failed = p.failed.clone();
        failed.sort();
        assert_eq!(failed, ["web-2", "web-3"]);
        assert!(matches!(w.gate("web-3", late), Gate::Halted { .. }));
    }

    #[test]
    fn a_halt_report_is_no_final_status_so_the_deadline_of_the_reopened_wave_fires() {
        // The canary fails and the others report the halt; the canary is
        // fixed (`hoist retry`) and succeeds: the halt ends and wave 2
        // opens. web-3, down since, never reports for that wave: a minute
        // later it counts as failed. Its halt report, made before the wave
        // opened, is no report of this wave's attempt.
        let mut w = World::new(
            "waves:\n  - { labels: [canary] }\n  - { percent: 100 }\ndeadline: 1m\nmax_failures: 0\n",
            {
                let mut h = names(3);
                h[0].1.push("canary".into());
                h
            },
        );
        w.pending("c1", "web-1", t(0));
        w.fail("c1", "web-1", t(10));
        for h in ["web-2", "web-3"] {
            let d = halted_description(APP, "1.4.0", &["web-1".into()]);
            w.post("c1", h, State::Failure, &d, t(20));
        }
        assert!(w.progress(t(30)).halted);
        w.pending("c1", "web-1", t(100));
        w.ok("c1", "web-1", t(110));
        let p = w.progress(t(120));
        assert!(!p.halted, "the canary's success ends the halt");
        assert_eq!(p.waves[1].opening, Opening::Open { at: Some(t(110)) });
        w.ok("c1", "web-2", t(130));
        // Before the deadline: web-3 is still only waiting.
        assert_eq!(w.state("web-3", t(169)), HostState::Waiting);
        // A minute after the opening it has made no report for it.
        let p = w.progress(t(171));
        assert_eq!(p.failed, ["web-3"]);
        let h = p.host("web-3").expect("web-3");
        assert_eq!(
            (h.state, h.missed_deadline, h.since),
            (HostState::Failed, true, Some(t(170)))
        );
        // It counts as failed until it succeeds (it may still go: the
        // halt is made only of a late server).
        assert!(is_go(&w.gate("web-3", t(171))));
        w.ok("c1", "web-3", t(200));
        assert_eq!(w.progress(t(201)).overall(), Overall::RolledOut);
    }

    #[test]
    fn a_report_of_the_attempt_before_the_deadline_is_not_a_missed_deadline() {
        let mut w = World::new(
            "waves:\n  - { labels: [canary] }\n  - { percent: 100 }\ndeadline: 10m\nmax_failures: 1\n",
            {
                let mut h = names(3);
                h[0].1.push("canary".into());
                h
            },
        );
        w.ok("c1", "web-1", t(0));
        // web-2 fails (tolerated); web-3 cannot apply the commit (`error`
        // counts whenever it came: it will not attempt).
        w.fail("c1", "web-2", t(30));
        w.post(
            "c1",
            "web-3",
            State::Error,
            "web: invalid manifest apps/api.yaml",
            t(40),
        );
        let p = w.progress(t(60 * MIN));
        assert_eq!(p.failed, ["web-2"]);
        assert!(!p.halted);
        assert_eq!(p.host("web-3").map(|h| h.state), Some(HostState::Error));
    }

    #[test]
    fn wave_0_opens_with_the_earliest_status_of_every_page_not_the_latest_per_host() {
        // Two hosts per wave. web-a posts `pending` at 0 and `success` at
        // 60: its latest status alone says 60. The other wave-0 host never
        // reports; its deadline runs from 0, the first status of all.
        let hosts = names(4);
        let mut w = World::new(
            "waves:\n  - { percent: 50 }\n  - { percent: 100 }\ndeadline: 10m\nmax_failures: 0\n",
            hosts,
        );
        let wave0 = w.waves.hosts(0).to_vec();
        let wave1 = w.waves.hosts(1).to_vec();
        w.pending("c1", &wave0[0], t(0));
        w.ok("c1", &wave0[0], t(60));
        for h in &wave1 {
            let d = waiting_description(APP, "1.4.0", 0, &wave0, None);
            w.post("c1", h, State::Pending, &d, t(61));
        }
        let p = w.progress(t(10 * MIN + 2));
        assert_eq!(p.waves[0].opening, Opening::Open { at: Some(t(0)) });
        assert_eq!(
            p.failed,
            [wave0[1].clone()],
            "missed: 10m after 0, not after 60"
        );
        assert!(p.halted);
    }

    #[test]
    fn a_halt_of_another_app_whose_name_ends_the_same_is_no_halt_of_this_one() {
        // One host status for every app: the canary's says that
        // `public-web` (another app) is halted, and that web failed. For
        // web's rollout that is the canary's failure: the rollout halts.
        let mut w = World::standard(4);
        w.pending("c1", "web-1", t(0));
        let with_heads = format!(
            "{}public-web 1.4.0 halted: web-9 failed; web 1.4.0 failed its health gate; rolled back",
            Head::new(HeadKind::Halt, "public-web", "1.4.0")
        );
        w.post("c1", "web-1", State::Failure, &with_heads, t(30));
        let p = w.progress(t(40));
        assert_eq!(p.failed, ["web-1"]);
        assert!(p.halted);
        // The same from a server of an older hoist, without heads.
        let mut w = World::standard(4);
        w.pending("c1", "web-1", t(0));
        w.post(
            "c1",
            "web-1",
            State::Failure,
            "public-web 1.4.0 halted: web-9 failed; web 1.4.0 failed its health gate; rolled back",
            t(30),
        );
        assert!(w.progress(t(40)).halted);
    }

    #[test]
    fn reports_are_read_by_their_heads_and_an_older_hoists_phrases() {
        let st = |state, d: &str| ReadStatus {
            context: "hoist/production/web-1".into(),
            state,
            description: d.into(),
            at: t(0),
            order: 1,
        };
        let r = |state, d: &str| reading(&st(state, d), "web", "1.4.0");
        let halt = halted_description("web", "1.4.0", &["web-1".into()]);
        assert_eq!(r(State::Failure, &halt), Reading::Halt);
        let wait = waiting_description("web", "1.4.0", 0, &["web-1".into()], None);
        assert_eq!(r(State::Pending, &wait), Reading::Wait);
        assert_eq!(
            r(
                State::Failure,
                "[hoist:down web 1.4.0] web 1.4.0 down since 12:03: web errored; retrying"
            ),
            Reading::Down
        );
        assert_eq!(
            r(
                State::Failure,
                "[hoist:down web 1.3.0] web 1.3.0 down since 12:03"
            ),
            Reading::DownElsewhere
        );
        assert_eq!(
            r(
                State::Failure,
                "[hoist:held web 1.2.0] web held at 1.2.0 by local rollback"
            ),
            Reading::Held
        );
        // Heads about other apps leave the status this app's attempt.
        assert_eq!(
            r(
                State::Failure,
                "[hoist:halt api 2.0] api 2.0 halted: x failed; web 1.4.0 failed"
            ),
            Reading::Attempt
        );
        // An older hoist's phrases, at the start of one of its parts.
        assert_eq!(
            r(
                State::Failure,
                "api unchanged; web 1.4.0 halted: web-1 failed"
            ),
            Reading::Halt
        );
        assert_eq!(
            r(
                State::Pending,
                "web 1.4.0 waits for wave 1 (web-1), 4m left"
            ),
            Reading::Wait
        );
        assert_eq!(
            r(State::Failure, "web held at 1.2.0 by local rollback"),
            Reading::Held
        );
        for attempt in [
            "public-web 1.4.0 halted: web-1 failed",
            "the log says web 1.4.0 halted: web-1 failed",
            "web 1.4.1 halted: web-1 failed",
            "web 1.4.0 failed its health gate; rolled back",
        ] {
            assert_eq!(r(State::Failure, attempt), Reading::Attempt, "{attempt}");
        }
    }

    #[test]
    fn a_host_whose_release_is_down_counts_as_failed_and_bakes_again_after() {
        let mut w = World::standard(4);
        w.ok("c1", "web-1", t(0));
        // The canary's app goes down 5 minutes into its 10-minute bake.
        w.post(
            "c1",
            "web-1",
            State::Failure,
            "[hoist:down web 1.4.0] web 1.4.0 down since 08:05: web errored; retrying",
            t(5 * MIN),
        );
        let p = w.progress(t(6 * MIN));
        assert_eq!(p.failed, ["web-1"]);
        assert!(p.halted, "max_failures 0");
        // Repaired: its success time is its first success after the down
        // report, so the bake starts again.
        w.ok("c1", "web-1", t(7 * MIN));
        let p = w.progress(t(11 * MIN));
        assert!(!p.halted);
        assert_eq!(p.host("web-1").and_then(|h| h.since), Some(t(7 * MIN)));
        let next = w.waves.hosts(1)[0].clone();
        assert_eq!(not_before(&w.gate(&next, t(11 * MIN))), Some(t(17 * MIN)));
        assert!(is_go(&w.gate(&next, t(17 * MIN))));
    }

    #[test]
    fn a_host_down_on_its_old_release_is_no_failure_of_the_new_one() {
        let mut w = World::standard(6);
        w.ok("c1", "web-1", t(0));
        let next = w.waves.hosts(1)[0].clone();
        w.ok("c1", &next, t(10 * MIN + 5));
        // Another wave-2 host, still on 1.3.0, is down there: it has not
        // tried 1.4.0, and runs no 1.4.0 to be down.
        let other = w.waves.hosts(1)[1].clone();
        w.post(
            "c1",
            &other,
            State::Failure,
            "[hoist:down web 1.3.0] web 1.3.0 down since 08:10: web errored; retrying",
            t(10 * MIN + 6),
        );
        let p = w.progress(t(10 * MIN + 10));
        assert!(p.failed.is_empty(), "{:?}", p.failed);
        assert!(!p.halted);
    }

    #[test]
    fn a_host_held_by_a_local_rollback_counts_as_failed() {
        let mut w = World::standard(4);
        w.ok("c1", "web-1", t(0));
        w.post(
            "c1",
            "web-1",
            State::Failure,
            "[hoist:held web 1.3.0] web held at 1.3.0 by local rollback",
            t(2 * MIN),
        );
        let p = w.progress(t(3 * MIN));
        assert_eq!(p.failed, ["web-1"]);
        assert!(p.halted);
        // The hold ends when the branch moves it on and it succeeds again.
        w.ok("c1", "web-1", t(4 * MIN));
        assert!(!w.progress(t(5 * MIN)).halted);
    }

    #[test]
    fn impossible_durations_are_never_a_crash() {
        let mut w = World::new(
            "waves:\n  - { labels: [canary], bake: 500000000y }\n  - { percent: 100 }\ndeadline: 500000000y\n",
            {
                let mut h = names(3);
                h[0].1.push("canary".into());
                h
            },
        );
        w.ok("c1", "web-1", t(0));
        let g = w.gate("web-2", t(10));
        assert!(matches!(g, Gate::Wait { .. }), "{g:?}");
        assert!(wait_time(not_before(&g).expect("a bound"), t(10)) <= Duration::from_secs(86_400));
    }

    #[test]
    fn a_context_without_host_cannot_carry_a_rollout_and_apps_sharing_one_are_warned() {
        let manifest = |rollout: bool| {
            let mut text = format!(
                "release: \"1\"\nartifact:\n  url: file:///a.tar.zst\n  sha256: {}\npm2:\n  - name: x\n    script: s.js\n",
                "a".repeat(64)
            );
            if rollout {
                text.push_str("rollout:\n  waves:\n    - { percent: 100 }\n");
            }
            crate::config::parse_manifest(std::path::Path::new("apps/x.yaml"), &text)
                .expect("manifest")
                .1
        };
        let apps = |list: &[(&str, bool)]| -> AppSet {
            list.iter()
                .map(|(n, r)| (crate::config::AppName::new(n).expect("name"), manifest(*r)))
                .collect()
        };
        let plain = apps(&[("web", false), ("api", false)]);
        let one = apps(&[("web", true), ("api", false)]);
        let two = apps(&[("web", true), ("api", true)]);
        assert_eq!(context_problem("hoist/{environment}", &plain), None);
        let e = context_problem("hoist/{environment}", &one).expect("refused");
        assert!(
            e.starts_with("status.context \"hoist/{environment}\" has no {host}"),
            "{e}"
        );
        assert!(e.contains("web"), "{e}");
        assert_eq!(context_problem("hoist/{environment}/{host}", &two), None);
        assert_eq!(
            shared_context_warning("hoist/{environment}/{host}", &one),
            None
        );
        let warn = shared_context_warning("hoist/{environment}/{host}", &two).expect("warned");
        assert!(warn.contains("api, web"), "{warn}");
        assert!(warn.contains("{app}"), "{warn}");
        assert_eq!(
            shared_context_warning("hoist/{environment}/{host}/{app}", &two),
            None
        );
    }

    #[test]
    fn without_a_deadline_a_silent_host_holds_the_next_wave_forever() {
        let mut w = World::new(
            "waves:\n  - { percent: 50 }\n  - { percent: 100 }\n",
            names(4),
        );
        let first = w.waves.hosts(0).to_vec();
        w.ok("c1", &first[0], t(0));
        let p = w.progress(t(1000 * MIN));
        assert!(!p.halted);
        let next = w.waves.hosts(1)[0].clone();
        let g = w.gate(&next, t(1000 * MIN));
        assert_eq!(
            wait_description(&g),
            format!(
                "[hoist:wait web 1.4.0] web 1.4.0 waits for wave 1 ({})",
                first[1]
            )
        );
        assert_eq!(not_before(&g), None, "it could report any moment");
    }

    #[test]
    fn an_error_is_no_failure_but_holds_the_next_wave() {
        let mut w = World::standard(4);
        w.post(
            "c1",
            "web-1",
            State::Error,
            "apps/api.yaml:3: unknown field",
            t(10),
        );
        let p = w.progress(t(60 * MIN));
        assert!(!p.halted);
        assert_eq!(p.host("web-1").map(|h| h.state), Some(HostState::Error));
        assert!(!is_go(&w.gate("web-2", t(60 * MIN))));
        // The fix: a new commit, same release; the canary deploys.
        w.commit("c2", Some("1.4.0"));
        w.ok("c2", "web-1", t(61 * MIN));
        assert_eq!(w.state("web-1", t(62 * MIN)), HostState::Live);
    }

    #[test]
    fn a_host_already_running_the_release_does_not_wait() {
        let mut w = World::standard(4);
        w.fail("c1", "web-1", t(10));
        let me = w.waves.hosts(2)[0].clone();
        assert_eq!(
            gate(&w.progress(t(20)), &w.waves, &me, Some(&ask("1.4.0"))),
            Gate::Running,
            "even halted"
        );
        assert!(matches!(
            gate(&w.progress(t(20)), &w.waves, &me, Some(&ask("1.3.0"))),
            Gate::Halted { .. }
        ));
        // Same name, other content: not the release.
        let other = Ask {
            release: "1.4.0".into(),
            sha256: "f".repeat(64),
        };
        assert!(matches!(
            gate(&w.progress(t(20)), &w.waves, &me, Some(&other)),
            Gate::Halted { .. }
        ));
    }

    #[test]
    fn a_revert_follows_the_waves_for_hosts_that_moved() {
        // 1.4.0 reached the canary and wave 2; the branch reverts to 1.3.0.
        let mut w = World::standard(6);
        w.commit("c2", Some("1.3.0"));
        let wave2 = w.waves.hosts(1).to_vec();
        let wave3 = w.waves.hosts(2).to_vec();
        // Wave 3 never left 1.3.0: done at once.
        for h in &wave3 {
            assert_eq!(
                gate(&w.progress(t(0)), &w.waves, h, Some(&ask("1.3.0"))),
                Gate::Running
            );
            w.ok("c2", h, t(5));
        }
        // Wave 2 runs 1.4.0: it waits for the canary's revert and its bake.
        assert!(!is_go(&w.gate(&wave2[0], t(6))));
        w.ok("c2", "web-1", t(20));
        assert_eq!(
            not_before(&w.gate(&wave2[0], t(21))),
            Some(t(20 + 10 * MIN))
        );
        assert!(is_go(&w.gate(&wave2[0], t(20 + 10 * MIN))));
    }

    #[test]
    fn empty_waves_are_skipped_bake_included() {
        // No canary in this fleet: the 50% wave is the first.
        let w = World::new(
            "waves:\n  - { labels: [canary], bake: 1h }\n  - { percent: 50, bake: 5m }\n  - { percent: 100 }\n",
            names(4),
        );
        assert!(w.waves.hosts(0).is_empty());
        let first = w.waves.hosts(1)[0].clone();
        assert!(is_go(&w.gate(&first, t(0))));
        let p = w.progress(t(0));
        assert!(p.waves[0].skipped());
        let last = w.waves.hosts(2)[0].clone();
        assert_eq!(
            wait_description(&w.gate(&last, t(0))),
            format!(
                "[hoist:wait web 1.4.0] web 1.4.0 waits for wave 2 ({})",
                w.waves.hosts(1).join(", ")
            )
        );
    }

    #[test]
    fn a_host_outside_the_inventory_goes_last() {
        let mut w = World::new(
            "waves:\n  - { percent: 50, bake: 2m }\n  - { percent: 100, bake: 3m }\n  - { labels: [late] }\n",
            names(2),
        );
        assert!(w.waves.hosts(2).is_empty(), "no host has the label");
        assert!(!w.waves.contains("stray-1"));
        let first = w.waves.hosts(0)[0].clone();
        let second = w.waves.hosts(1)[0].clone();
        w.ok("c1", &first, t(0));
        w.ok("c1", &second, t(2 * MIN + 10));
        // Alone in the (otherwise empty) last wave: after wave 2's bake.
        let g = w.gate("stray-1", t(2 * MIN + 11));
        assert_eq!(not_before(&g), Some(t(5 * MIN + 10)));
        assert!(is_go(&w.gate("stray-1", t(5 * MIN + 10))));
        // Its own statuses are nobody's business: the app's hosts are done.
        w.fail("c1", "stray-1", t(6 * MIN));
        assert_eq!(w.progress(t(6 * MIN)).overall(), Overall::RolledOut);
    }

    #[test]
    fn a_host_that_comes_back_after_its_wave_opened_goes_at_once() {
        let mut w = World::standard(6);
        w.ok("c1", "web-1", t(0));
        for h in w.waves.hosts(1).to_vec() {
            w.ok("c1", &h, t(11 * MIN));
        }
        let back = w.waves.hosts(2)[0].clone();
        // Hours later, never having posted: past its wave's deadline it
        // counts as failed, and being only late, it may start.
        let p = w.progress(t(3 * 60 * MIN));
        assert_eq!(p.host(&back).map(|h| h.state), Some(HostState::Failed));
        assert!(is_go(&w.gate(&back, t(3 * 60 * MIN))));
        // Shortly after the opening it is simply missing, and goes.
        let p = w.progress(t(17 * MIN));
        assert_eq!(p.host(&back).map(|h| h.state), Some(HostState::Missing));
        assert!(is_go(&w.gate(&back, t(17 * MIN))));
    }

    #[test]
    fn a_failure_before_the_hosts_wave_opened_is_no_attempt() {
        // One status per host for all its apps: a host of the last wave
        // reports failure because another app failed there. It has not
        // tried web 1.4.0, so web's rollout does not halt.
        let mut w = World::standard(6);
        let last = w.waves.hosts(2)[0].clone();
        w.post(
            "c1",
            &last,
            State::Failure,
            "api 2.0 failed its health gate; web waits",
            t(5),
        );
        w.pending("c1", "web-1", t(6));
        let p = w.progress(t(10));
        assert!(!p.halted);
        assert!(p.failed.is_empty());
        assert_eq!(p.host(&last).map(|h| h.state), Some(HostState::Waiting));
    }

    #[test]
    fn a_failure_from_before_the_opening_does_not_count_once_the_wave_opens() {
        // The host of the last wave reported another app's failure while
        // web waited; web's wave then opens: the old failure is still no
        // attempt, so web does not halt before the host has even started.
        let mut w = World::standard(3);
        let second = w.waves.hosts(1)[0].clone();
        let last = w.waves.hosts(2)[0].clone();
        w.ok("c1", "web-1", t(0));
        w.post(
            "c1",
            &last,
            State::Failure,
            "api 2.0 failed its health gate; web waits",
            t(60),
        );
        w.ok("c1", &second, t(11 * MIN));
        let now = t(17 * MIN);
        let p = w.progress(now);
        assert!(p.waves[2].opening.is_open(), "{:?}", p.waves[2].opening);
        assert!(!p.halted);
        assert!(p.failed.is_empty());
        assert!(is_go(&w.gate(&last, now)));
        // Its own failure, once it tried, counts.
        w.fail("c1", &last, t(17 * MIN + 5));
        assert!(w.progress(t(17 * MIN + 6)).halted);
    }

    #[test]
    fn per_app_contexts_keep_apps_apart() {
        let mut w = World::standard(3);
        w.template = "hoist/{environment}/{host}/{app}";
        w.ok("c1", "web-1", t(0));
        // A status of another app on the canary does not count for web.
        let api_context = "hoist/production/web-1/api".to_string();
        w.statuses
            .get_mut("c1")
            .expect("c1")
            .statuses
            .push(ReadStatus {
                context: api_context,
                state: State::Failure,
                description: "api 2.0 failed".into(),
                at: t(5),
                order: 99,
            });
        w.statuses
            .get_mut("c1")
            .expect("c1")
            .statuses
            .sort_by(|a, b| a.context.cmp(&b.context));
        let p = w.progress(t(11 * MIN));
        assert_eq!(p.host("web-1").map(|h| h.state), Some(HostState::Live));
        assert!(!p.halted);
    }

    #[test]
    fn display_states_follow_what_each_host_posted() {
        let mut w = World::standard(6);
        w.pending("c1", "web-1", t(0));
        let wave2 = w.waves.hosts(1).to_vec();
        w.post(
            "c1",
            &wave2[0],
            State::Pending,
            "web 1.4.0 waits for wave 1 (web-1)",
            t(3),
        );
        let p = w.progress(t(10));
        assert_eq!(p.host("web-1").map(|h| h.state), Some(HostState::Deploying));
        assert_eq!(p.host(&wave2[0]).map(|h| h.state), Some(HostState::Waiting));
        assert_eq!(p.host(&wave2[1]).map(|h| h.state), Some(HostState::Missing));
        let h = p.host(&wave2[0]).expect("host");
        assert_eq!(h.since, Some(t(3)));
        assert_eq!(h.commit.as_deref(), Some("c1"));
        assert_eq!(
            h.description.as_deref(),
            Some("web 1.4.0 waits for wave 1 (web-1)")
        );
        assert_eq!(p.waves[0].opening, Opening::Open { at: Some(t(0)) });
        w.ok("c1", "web-1", t(60));
        let p = w.progress(t(61));
        assert_eq!(p.waves[0].baked_at(), Some(t(60 + 10 * MIN)));
        assert_eq!(
            p.waves[1].opening,
            Opening::Baking {
                until: t(60 + 10 * MIN),
                after: 0
            }
        );
        // Open, but wave2[0] has not picked it up yet: still waiting.
        let p = w.progress(t(60 + 10 * MIN));
        assert_eq!(p.host(&wave2[0]).map(|h| h.state), Some(HostState::Waiting));
        w.pending("c1", &wave2[0], t(60 + 10 * MIN + 2));
        let p = w.progress(t(60 + 10 * MIN + 3));
        assert_eq!(
            p.host(&wave2[0]).map(|h| h.state),
            Some(HostState::Deploying)
        );
    }

    #[test]
    fn a_server_whose_clock_is_ten_minutes_off_decides_the_same() {
        // The gate takes only forge times. A server 10 minutes ahead turns
        // "not before T (forge)" into a local wait of T - forge_now, the same
        // wait as a server with the right time.
        let mut w = World::standard(4);
        w.ok("c1", "web-1", t(30));
        let second = w.waves.hosts(1)[0].clone();
        let forge_now = t(5 * MIN);
        let g = w.gate(&second, forge_now);
        let at = not_before(&g).expect("bake end");
        let wait = wait_time(at, forge_now);
        assert_eq!(wait, Duration::from_secs(5 * MIN + 30));
        for skew in [-600i64, 0, 600] {
            let local_now = if skew >= 0 {
                forge_now + Duration::from_secs(skew as u64)
            } else {
                forge_now - Duration::from_secs((-skew) as u64)
            };
            // The server wakes after `wait` by its own clock, reads again
            // (getting the forge's Date, not its clock), and goes.
            let local_wake = local_now + wait;
            let forge_at_wake = forge_now + local_wake.duration_since(local_now).expect("later");
            assert!(is_go(&w.gate(&second, forge_at_wake)), "skew {skew}s");
            // Had it compared its own clock with forge times, a server 10
            // minutes ahead would have gone at once, mid-bake.
            if skew > 0 {
                assert!(local_now >= at, "the trap this design avoids");
            }
        }
        assert_eq!(wait_time(t(0), t(10)), Duration::ZERO);
    }

    #[test]
    fn descriptions_read_well_and_fit() {
        assert_eq!(
            waiting_description(
                "web",
                "1.4.0",
                0,
                &["web-1".into()],
                Some(Duration::from_secs(230))
            ),
            "[hoist:wait web 1.4.0] web 1.4.0 waits for wave 1 (web-1), 4m left"
        );
        let many: Vec<String> = (1..=40).map(|i| format!("web-{i}")).collect();
        assert_eq!(
            waiting_description("web", "1.4.0", 1, &many, None),
            "[hoist:wait web 1.4.0] web 1.4.0 waits for wave 2 (web-1, web-2 +38 more)"
        );
        assert_eq!(
            halted_description("web", "1.4.0", &["web-1".into(), "web-7".into()]),
            "[hoist:halt web 1.4.0] web 1.4.0 halted: web-1, web-7 failed"
        );
        for (secs, text) in [
            (0, "0s"),
            (1, "1s"),
            (59, "59s"),
            (60, "1m"),
            (61, "2m"),
            (3600, "1h"),
            (3660, "1h1m"),
            (7199, "2h"),
        ] {
            assert_eq!(short_duration(Duration::from_secs(secs)), text, "{secs}");
        }
        assert_eq!(short_duration(Duration::from_millis(1500)), "2s");
    }
}
