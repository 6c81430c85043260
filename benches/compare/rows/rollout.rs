//! The fleet rollout row (SPEC §8): 100 `hoist run` daemons on this
//! machine, each its own server (root, state dir, pm2 home, host name
//! `web-001`..`web-100`, listed in the environment's inventory, `web-001`
//! labelled `canary`), following one config repository over
//! `git http-backend` and coordinating only through the commit statuses of
//! one GitHub-shaped fake forge (the rollout tests' own, tests/common/forge.rs:
//! statuses served back with `Date`, `ETag`/`304` and `Link` pages, requests
//! counted per token). Each server has a token of its own, so the forge
//! counts reads and writes per server.
//!
//! Waves canary / 10% / 50% / 100% with a bake after each but the last.
//! Three releases in a row: a good one (how long until every server runs
//! it, against the bakes plus one poll interval per wave plus 5 s), a
//! crash-looping one (only the canary may ever deploy it; the others report
//! the halt), and a good one again with the forge's `ETag`s off, so every
//! read is a full read: the reads of a rollout with and without `304`s,
//! measured rather than estimated.
//!
//! pm2 is the stand-in of the polling rows, extended to fail a release
//! (`world::pm2_stub_crashing`: the process shows `errored`, as pm2 shows a
//! process that kept crashing): 100 pm2 daemons and their node processes
//! would measure two CPUs starting node instead of the rollout.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::guarded;
use crate::generate::{self, Artifact};
use crate::procs::{self, Guard, quantile, secs};
use crate::servers::GitHttp;
use crate::servers::forge::{Counters, FakeForge, Flavor};
use crate::world::{self, ConfigRepo, Host, HostOpts};
use crate::{Ctx, Row, Verdict};

const APP: &str = "web";
const ENV: &str = "bench";

/// The row's sizes: the documented run, or a small one for developing it.
struct Params {
    hosts: usize,
    bake_secs: u64,
    poll_secs: u64,
}

impl Params {
    fn of(ctx: &Ctx) -> Params {
        if ctx.scale.name == "small" {
            // 20, not fewer: with 10 or fewer the 10% wave holds only the
            // canary and is skipped.
            Params {
                hosts: 20,
                bake_secs: 3,
                poll_secs: 2,
            }
        } else {
            Params {
                hosts: ctx.scale.daemons,
                bake_secs: 10,
                poll_secs: 5,
            }
        }
    }

    /// How many hosts the waves hold together after each wave (SPEC §8:
    /// the canary label, then max(1, ⌈p × N / 100⌉)), empty waves left out.
    fn cumulative(&self) -> Vec<usize> {
        let n = self.hosts;
        let mut cum: Vec<usize> = vec![1];
        for p in [10, 50, 100] {
            let upto = (p * n).div_ceil(100).max(1);
            if upto > *cum.last().unwrap_or(&0) {
                cum.push(upto);
            }
        }
        cum
    }

    /// Sum of the bakes (every wave but the last has one) plus one poll
    /// interval per wave plus 5 s.
    fn bound_secs(&self) -> u64 {
        let waves = self.cumulative().len() as u64;
        self.bake_secs * (waves - 1) + self.poll_secs * waves + 5
    }

    fn rollout_yaml(&self) -> String {
        let b = self.bake_secs;
        format!(
            "rollout:\n  waves:\n    - {{ labels: [canary], bake: {b}s }}\n    - {{ percent: 10, bake: {b}s }}\n    - {{ percent: 50, bake: {b}s }}\n    - {{ percent: 100 }}\n  max_failures: 0\n  deadline: 5m\n"
        )
    }
}

fn manifest(art: &Artifact, release: &str, crash: bool, rollout: &str) -> String {
    let env = if crash {
        format!("    env: {{ {}: \"1\" }}\n", world::CRASH_LOOP)
    } else {
        String::new()
    };
    let mut m = world::manifest(
        release,
        &art.url(),
        &art.sha256,
        &format!("  - name: {APP}\n    script: server.js\n{env}"),
        "  timeout: 10s\n  stable_for: 0s\n",
    );
    m.push_str(rollout);
    m
}

fn host_name(i: usize) -> String {
    format!("web-{i:03}")
}

fn context(host: &str) -> String {
    format!("hoist/{ENV}/{host}")
}

/// The forge's requests in a window: the sums over every server, and the
/// most reads one server made.
#[derive(Debug, Default)]
struct Requests {
    /// Pages answered with statuses.
    reads: u64,
    not_modified: u64,
    writes: u64,
    /// Reads of a commit's statuses (first pages; a read of 101 to 200
    /// statuses is two pages).
    checks: u64,
    max_reads_per_host: u64,
}

/// Where the forge's counts stood at one moment.
struct Mark {
    counters: BTreeMap<String, Counters>,
    targets: usize,
}

fn mark(forge: &FakeForge) -> Mark {
    Mark {
        counters: forge.all_counters(),
        targets: forge.targets().len(),
    }
}

/// Whether a request is a read of a first page of statuses.
fn is_check(method: &str, target: &str) -> bool {
    method == "GET"
        && target.contains("/statuses")
        && !target
            .split(['?', '&'])
            .any(|kv| kv.strip_prefix("page=").is_some_and(|p| p != "1"))
}

fn requests_since(forge: &FakeForge, from: &Mark, to: &Mark) -> Requests {
    let (before, after) = (&from.counters, &to.counters);
    let checks = forge
        .targets()
        .get(from.targets..to.targets)
        .unwrap_or(&[])
        .iter()
        .filter(|(m, t)| is_check(m, t))
        .count() as u64;
    let mut r = Requests {
        checks,
        ..Requests::default()
    };
    for (who, a) in after {
        let b = before.get(who).copied().unwrap_or_default();
        let reads = a.reads - b.reads;
        r.reads += reads;
        r.not_modified += a.not_modified - b.not_modified;
        r.writes += a.writes - b.writes;
        r.max_reads_per_host = r
            .max_reads_per_host
            .max(reads + a.not_modified - b.not_modified);
    }
    r
}

/// The last (state, description) each context posted for `sha`.
fn last_posted(forge: &FakeForge, sha: &str) -> BTreeMap<String, (String, String)> {
    forge
        .accepted()
        .into_iter()
        .filter(|a| a.sha == sha)
        .map(|a| (a.context, (a.state, a.description)))
        .collect()
}

/// What one good release measured.
struct GoodRun {
    /// Seconds from the push until each server's state.json named it.
    live: Vec<f64>,
    /// ...and until every server had posted `success`.
    all_success: Option<f64>,
    requests: Requests,
    max_writes: u64,
}

impl GoodRun {
    fn max(&self) -> f64 {
        self.live.iter().copied().fold(0.0, f64::max)
    }

    /// When each wave was complete: the k-th server to go live, for the
    /// waves' cumulative sizes (the waves go in order, so the first
    /// `cum[i]` servers live are waves 0..=i).
    fn waves_done(&self, cum: &[usize]) -> Vec<f64> {
        let mut sorted = self.live.clone();
        sorted.sort_by(|a, b| a.total_cmp(b));
        cum.iter()
            .filter_map(|c| sorted.get(c - 1).copied())
            .collect()
    }
}

pub fn waves(ctx: &Ctx) -> Vec<Row> {
    let p = Params::of(ctx);
    let n = p.hosts;
    let bound = p.bound_secs();
    let m_good =
        format!("rollout of a good release to {n} daemons, waves canary / 10% / 50% / 100%");
    let t_good = format!("all live within bakes + a poll per wave + 5 s ({bound} s)");
    let m_bad = format!("rollout of a crash-looping release to {n} daemons, same waves");
    let t_bad = "only the canary deploys it; the others report the halt".to_string();
    let m_forge = format!("forge requests of one rollout to {n} daemons (GitHub-shaped)");
    let t_forge = "≤ 2 status writes per server per commit".to_string();
    let measures = [
        (m_good.as_str(), t_good.as_str()),
        (m_bad.as_str(), t_bad.as_str()),
        (m_forge.as_str(), t_forge.as_str()),
    ];
    guarded(ctx, &measures, &["git"], || {
        let load0 = procs::load_average();
        let dir = ctx.scratch.join("rollout");
        let root = dir.join("git");
        let repo = ConfigRepo::new(&root, "fleet")?;
        let git = GitHttp::start(&ctx.rt, &root)?;
        let forge = FakeForge::start(Flavor::Github, "bench-forge-main-token", None);
        let store = dir.join("store");
        std::fs::create_dir_all(&store).map_err(|e| e.to_string())?;
        let arts: Vec<Artifact> = ["r1", "r2", "r3", "r4"]
            .iter()
            .map(|r| generate::small_app(&store, r))
            .collect::<Result<_, _>>()?;
        let stub = world::pm2_stub_crashing(&dir)?;

        // The inventory, and the first release without a rollout, so every
        // server starts from a deployed app.
        let mut inventory = String::from("hosts:\n");
        for i in 1..=n {
            let labels = if i == 1 { "[web, canary]" } else { "[web]" };
            inventory.push_str(&format!("  {}: {{ labels: {labels} }}\n", host_name(i)));
        }
        std::fs::create_dir_all(repo.work.join("fleet")).map_err(|e| e.to_string())?;
        std::fs::write(repo.work.join(format!("fleet/{ENV}.yaml")), inventory)
            .map_err(|e| e.to_string())?;
        repo.write(APP, &manifest(&arts[0], "r1", false, ""))?;
        repo.commit("r1, and the inventory")?;

        let poll = format!("{}s", p.poll_secs);
        let mut hosts = Vec::new();
        for i in 1..=n {
            let name = host_name(i);
            let hdir = dir.join(format!("hosts/{name}"));
            std::fs::create_dir_all(&hdir).map_err(|e| e.to_string())?;
            let token = format!("bench-token-{name}");
            let token_file = hdir.join("forge-token");
            std::fs::write(&token_file, &token).map_err(|e| e.to_string())?;
            forge.add_token(&token, &name);
            let home = hdir.join("pm2home");
            world::pm2_stub_home(&home, APP)?;
            let labels = if i == 1 { "[web, canary]" } else { "[web]" };
            hosts.push(Host::new(
                &hdir,
                &HostOpts {
                    host: name.clone(),
                    repo_url: git.url("fleet.git"),
                    poll: &poll,
                    jitter: "0s",
                    pm2_command: stub.clone(),
                    pm2_home: home,
                    listen: String::new(),
                    extra: format!("labels: {labels}\n{}", forge.status_config(&token_file)),
                },
            )?);
        }
        let mut daemons: Vec<Guard> = Vec::new();
        for h in &hosts {
            daemons.push(h.start(&ctx.tools)?);
        }
        let result = measure(ctx, &p, &repo, &forge, &hosts, &arts);
        for d in &daemons {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(d.pid()),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        daemons.clear();
        let (good, bad, plain) = result?;
        let load = format!(
            "1-minute load average {} at the start of the row, {} at the end (2 CPUs)",
            load0
                .map(|l| format!("{l:.2}"))
                .unwrap_or_else(|| "?".into()),
            procs::load_average()
                .map(|l| format!("{l:.2}"))
                .unwrap_or_else(|| "?".into())
        );

        let cum = p.cumulative();
        let good_ok = good.live.len() == n && good.max() <= bound as f64;
        let plain_ok = plain.live.len() == n && plain.max() <= bound as f64;
        let waves = |g: &GoodRun| {
            g.waves_done(&cum)
                .iter()
                .map(|s| format!("{s:.1}"))
                .collect::<Vec<_>>()
                .join(" / ")
        };
        let live = |g: &GoodRun| {
            if g.live.len() == n {
                format!("all {n} live in {}", secs(g.max()))
            } else {
                format!("only {} of {n} live", g.live.len())
            }
        };
        let wave_sizes = cum
            .iter()
            .scan(0, |prev, c| {
                let size = c - *prev;
                *prev = *c;
                Some(size.to_string())
            })
            .collect::<Vec<_>>()
            .join(", ");
        let good_row = Row {
            measure: m_good.clone(),
            hoist: format!("{}; again (ETags off): {}", live(&good), secs(plain.max())),
            baseline: "—".into(),
            target: t_good.clone(),
            verdict: if good_ok && plain_ok {
                Verdict::Met
            } else {
                Verdict::Missed
            },
            details: vec![
                format!(
                    "{n} servers, waves of {wave_sizes} (the canary by label, then 10%, 50%, 100% of the app's hosts), bake {}s after each but the last, max_failures 0; poll_interval {}s, jitter 0s, no webhooks (statuses read back by polling); bound {} × {}s bakes + {} × {}s polls + 5 s = {bound} s",
                    p.bake_secs,
                    p.poll_secs,
                    cum.len() - 1,
                    p.bake_secs,
                    cum.len(),
                    p.poll_secs
                ),
                format!(
                    "push to each server's state.json naming the release, seconds: waves complete at {} (ETags on), {} (ETags off); median {}, p95 {}",
                    waves(&good),
                    waves(&plain),
                    secs(quantile(good.live.clone(), 0.5)),
                    secs(quantile(good.live.clone(), 0.95)),
                ),
                load,
                format!(
                    "push to every server's `success` on the forge: {} (ETags on), {} (ETags off)",
                    good.all_success.map(secs).unwrap_or_else(|| "never".into()),
                    plain
                        .all_success
                        .map(secs)
                        .unwrap_or_else(|| "never".into()),
                ),
            ],
        };

        let bad_ok = bad.deployed == vec![host_name(1)] && bad.halted == n - 1;
        let bad_row = Row {
            measure: m_bad.clone(),
            hoist: format!(
                "deployed on {} of {n} ({}); {} reported the halt {} after the push",
                bad.deployed.len(),
                if bad.deployed == vec![host_name(1)] {
                    "the canary".to_string()
                } else {
                    bad.deployed.join(", ")
                },
                bad.halted,
                bad.all_halted.map(secs).unwrap_or_else(|| "—".into())
            ),
            baseline: "—".into(),
            target: t_bad.clone(),
            verdict: if bad_ok {
                Verdict::Met
            } else {
                Verdict::Missed
            },
            details: vec![
                format!(
                    "the release's process shows `errored` under the pm2 stand-in; the canary's `failure` {} after the push, its state.json back on the good release: {}",
                    bad.canary_failed
                        .map(secs)
                        .unwrap_or_else(|| "never".into()),
                    bad.canary_rolled_back
                ),
                format!(
                    "checked {} s after the last halt report: no other server's state.json, history.jsonl or releases directory names the release{}",
                    bad.settle_secs,
                    if bad.named_elsewhere.is_empty() {
                        String::new()
                    } else {
                        format!(" — except {}", bad.named_elsewhere.join(", "))
                    }
                ),
                format!(
                    "forge, from the push to the end of that check: {} writes, {} reads ({} full pages, {} 304s); at most {} writes by one server on the commit",
                    bad.requests.writes,
                    bad.requests.checks,
                    bad.requests.reads,
                    bad.requests.not_modified,
                    bad.max_writes
                ),
                format!(
                    "while halted (the waiting servers keep reading, once per poll interval, for the canary's retry that would end the halt): {} reads of the commit, answered by {} full pages and {} 304s, in {} s",
                    bad.while_halted.checks,
                    bad.while_halted.reads,
                    bad.while_halted.not_modified,
                    bad.settle_secs - p.poll_secs
                ),
            ],
        };

        let max_writes = good.max_writes.max(bad.max_writes).max(plain.max_writes);
        let forge_row = Row {
            measure: m_forge.clone(),
            hoist: format!(
                "≤ {} writes per server per commit; {} reads: {} full pages + {} 304s",
                max_writes, good.requests.checks, good.requests.reads, good.requests.not_modified
            ),
            baseline: format!(
                "without 304s: {} full pages (ETags off, the next release: {})",
                good.requests.reads + good.requests.not_modified,
                plain.requests.reads
            ),
            target: t_forge.clone(),
            verdict: if max_writes <= 2 {
                Verdict::Met
            } else {
                Verdict::Missed
            },
            details: vec![
                format!(
                    "good release, ETags on: {} writes; {} reads of the commit's statuses, answered by {} full pages + {} 304s = {} requests (without 304s: {} full pages); at most {} read requests by one server",
                    good.requests.writes,
                    good.requests.checks,
                    good.requests.reads,
                    good.requests.not_modified,
                    good.requests.reads + good.requests.not_modified,
                    good.requests.reads + good.requests.not_modified,
                    good.requests.max_reads_per_host
                ),
                format!(
                    "good release, ETags off (the forge sends no ETag, so every read is a full one): {} writes; {} reads, {} full pages; at most {} read requests by one server",
                    plain.requests.writes,
                    plain.requests.checks,
                    plain.requests.reads,
                    plain.requests.max_reads_per_host
                ),
                format!(
                    "writes per server per commit, most of any server: good {}, crash-looping {}, good again {} (each server its own token; counted from the push until every server reported and one more poll interval)",
                    good.max_writes, bad.max_writes, plain.max_writes
                ),
            ],
        };
        Ok(vec![good_row, bad_row, forge_row])
    })
}

/// What the crash-looping release measured.
struct BadRun {
    /// Servers whose state, history or disk shows they deployed it.
    deployed: Vec<String>,
    /// Servers other than the canary that named it anywhere.
    named_elsewhere: Vec<String>,
    /// Servers whose last status is a halt report.
    halted: usize,
    all_halted: Option<f64>,
    canary_failed: Option<f64>,
    canary_rolled_back: bool,
    settle_secs: u64,
    requests: Requests,
    /// The requests of the settle window, all servers idle and halted.
    while_halted: Requests,
    max_writes: u64,
}

fn measure(
    _ctx: &Ctx,
    p: &Params,
    repo: &ConfigRepo,
    forge: &FakeForge,
    hosts: &[Host],
    arts: &[Artifact],
) -> Result<(GoodRun, BadRun, GoodRun), String> {
    let n = hosts.len();
    let release_count = |r: &str| {
        hosts
            .iter()
            .filter(|h| h.release_of(APP).as_deref() == Some(r))
            .count()
    };
    if !procs::wait_until(Duration::from_secs(120), Duration::from_millis(250), || {
        release_count("r1") == n
    }) {
        return Err(format!(
            "only {} of {n} servers deployed the first release within 120 s: {}",
            release_count("r1"),
            hosts[0].log().lines().last().unwrap_or("")
        ));
    }
    // Let the first release's statuses land before counting anything.
    std::thread::sleep(Duration::from_secs(p.poll_secs * 2));
    let rollout = p.rollout_yaml();

    let good = good_release(p, repo, forge, hosts, &arts[1], "r2", &rollout)?;

    // The crash-looping release.
    let before = mark(forge);
    repo.write(APP, &manifest(&arts[2], "r3", true, &rollout))?;
    let sha = repo.commit("r3, which crash-loops")?;
    let t0 = Instant::now();
    let canary = context(&host_name(1));
    let mut canary_failed = None;
    let mut all_halted = None;
    let mut halted = 0;
    procs::wait_until(
        Duration::from_secs(p.bound_secs() + 60),
        Duration::from_millis(200),
        || {
            let last = last_posted(forge, &sha);
            if canary_failed.is_none() && last.get(&canary).is_some_and(|s| s.0 == "failure") {
                canary_failed = Some(t0.elapsed().as_secs_f64());
            }
            halted = (2..=n)
                .filter(|i| {
                    last.get(&context(&host_name(*i)))
                        .is_some_and(|s| s.0 == "failure" && s.1.contains("halted"))
                })
                .count();
            if halted == n - 1 && all_halted.is_none() {
                all_halted = Some(t0.elapsed().as_secs_f64());
            }
            canary_failed.is_some() && all_halted.is_some()
        },
    );
    // Then a while with nothing new: no server may move on to it later.
    // The halted servers keep looking (a retry on the canary would end the
    // halt): what that costs the forge is counted over the last two poll
    // intervals, once each server has read the last halt report.
    let settle_secs = p.poll_secs * 3;
    std::thread::sleep(Duration::from_secs(p.poll_secs));
    let halt_start = mark(forge);
    std::thread::sleep(Duration::from_secs(settle_secs - p.poll_secs));
    let end = mark(forge);
    let while_halted = requests_since(forge, &halt_start, &end);
    let requests = requests_since(forge, &before, &end);
    let mut deployed = Vec::new();
    let mut named_elsewhere = Vec::new();
    for (i, h) in hosts.iter().enumerate() {
        let history = std::fs::read_to_string(h.state.join("history.jsonl")).unwrap_or_default();
        let state = std::fs::read_to_string(h.state.join("state.json")).unwrap_or_default();
        let on_disk = h.root.join(format!("{APP}/releases/r3")).exists();
        let deployed_it = on_disk
            || history
                .lines()
                .any(|l| l.contains("\"r3\"") && l.contains("deploy"));
        if deployed_it {
            deployed.push(host_name(i + 1));
        }
        if i > 0 && (deployed_it || state.contains("\"r3\"") || history.contains("\"r3\"")) {
            named_elsewhere.push(host_name(i + 1));
        }
    }
    let bad = BadRun {
        deployed,
        named_elsewhere,
        halted,
        all_halted,
        canary_failed,
        canary_rolled_back: hosts[0].release_of(APP).as_deref() == Some("r2"),
        settle_secs,
        requests,
        while_halted,
        max_writes: max_writes(forge, &sha, n),
    };

    // A good release again (it also ends the halt), every read a full one.
    forge.set_etags(false);
    let plain = good_release(p, repo, forge, hosts, &arts[3], "r4", &rollout)?;
    Ok((good, bad, plain))
}

fn max_writes(forge: &FakeForge, sha: &str, n: usize) -> u64 {
    (1..=n)
        .map(|i| forge.writes_for(sha, &context(&host_name(i))))
        .max()
        .unwrap_or(0)
}

fn good_release(
    p: &Params,
    repo: &ConfigRepo,
    forge: &FakeForge,
    hosts: &[Host],
    art: &Artifact,
    release: &str,
    rollout: &str,
) -> Result<GoodRun, String> {
    let n = hosts.len();
    let before = mark(forge);
    repo.write(APP, &manifest(art, release, false, rollout))?;
    let sha = repo.commit(release)?;
    let t0 = Instant::now();
    let mut when: Vec<Option<f64>> = vec![None; n];
    let mut all_success = None;
    procs::wait_until(
        Duration::from_secs(p.bound_secs() + 60),
        Duration::from_millis(200),
        || {
            for (i, h) in hosts.iter().enumerate() {
                if when[i].is_none() && h.release_of(APP).as_deref() == Some(release) {
                    when[i] = Some(t0.elapsed().as_secs_f64());
                }
            }
            if all_success.is_none() {
                let last = last_posted(forge, &sha);
                if (1..=n).all(|i| {
                    last.get(&context(&host_name(i)))
                        .is_some_and(|s| s.0 == "success")
                }) {
                    all_success = Some(t0.elapsed().as_secs_f64());
                }
            }
            when.iter().all(Option::is_some) && all_success.is_some()
        },
    );
    // Reads that a late server makes after the last success still count.
    std::thread::sleep(Duration::from_secs(p.poll_secs));
    Ok(GoodRun {
        live: when.iter().flatten().copied().collect(),
        all_success,
        requests: requests_since(forge, &before, &mark(forge)),
        max_writes: max_writes(forge, &sha, n),
    })
}
