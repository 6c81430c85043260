//! Rows about one pass of the daemon doing several things at once, under a
//! real pm2 with real Node apps:
//!
//! - one commit changing 1, 4 and 8 apps, from the webhook to every app
//!   deployed (its health gate passed and the commit's `success` status
//!   written), to show that the apps of a commit deploy side by side rather
//!   than one gate after the other;
//! - `/healthz` latency while the daemon prunes releases of 20,000 files and
//!   unpacks others, to show that file-system work stays off the async
//!   workers that answer it.
//!
//! Both drive `hoist run` through its webhook (the poll interval is 10
//! minutes, so nothing else starts a pass) and read the outcome from the
//! `file` status provider.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::daemon::{github_hook, pm2_path, tail};
use super::guarded;
use crate::generate;
use crate::procs::{self, median, quantile, secs};
use crate::world::{self, ConfigRepo, Host, HostOpts, Pm2Home};
use crate::{Ctx, Row, Verdict};

const SECRET: &str = "bench-webhook-secret";

/// A daemon under a real pm2 (through the counting wrapper), listening for
/// webhooks, writing statuses to a file.
struct Daemon {
    repo: ConfigRepo,
    host: Host,
    /// Kept for its drop (`pm2 kill`), after the host's daemon stops.
    _pm2: Pm2Home,
    pm2_home: PathBuf,
    pm2_log: PathBuf,
    port: u16,
    statuses: PathBuf,
}

impl Daemon {
    fn new(ctx: &Ctx, dir: &Path, name: &str) -> Result<Daemon, String> {
        let repo = ConfigRepo::new(&dir.join("git"), "config")?;
        let pm2 = Pm2Home::new(&pm2_path(ctx)?, dir.join("pm2home"));
        let pm2_log = dir.join("pm2-calls.log");
        let counting = world::pm2_counting(dir, &pm2.pm2, &pm2_log)?;
        let port = procs::free_port();
        std::fs::write(dir.join("webhook-secret"), SECRET).map_err(|e| e.to_string())?;
        let statuses = dir.join("statuses.jsonl");
        let host = Host::new(
            &dir.join("host"),
            &HostOpts {
                host: name.into(),
                repo_url: repo.file_url(),
                poll: "10m",
                jitter: "0s",
                pm2_command: counting,
                pm2_home: pm2.home.clone(),
                listen: format!("127.0.0.1:{port}"),
                extra: format!(
                    "webhook_secret_file: {}\nstatus:\n  provider: file\n  path: {}\n",
                    dir.join("webhook-secret").display(),
                    statuses.display()
                ),
            },
        )?;
        Ok(Daemon {
            repo,
            host,
            pm2_home: pm2.home.clone(),
            _pm2: pm2,
            pm2_log,
            port,
            statuses,
        })
    }

    /// The state the commit `sha` was last reported with, if any.
    fn status(&self, sha: &str) -> Option<String> {
        std::fs::read_to_string(&self.statuses)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["sha"] == sha)
            .filter_map(|v| v["state"].as_str().map(str::to_string))
            .next_back()
    }

    fn hook(&self, sha: &str) -> Result<(), String> {
        let code = github_hook(self.port, SECRET, &format!("{{\"after\":\"{sha}\"}}"))?;
        if code != 202 {
            return Err(format!("the webhook was answered {code}"));
        }
        Ok(())
    }

    /// Waits until `sha` has a final status; Err unless it is `success`.
    fn wait_success(&self, sha: &str, limit: Duration) -> Result<(), String> {
        let mut last = None;
        procs::wait_until(limit, Duration::from_millis(20), || {
            last = self.status(sha);
            matches!(last.as_deref(), Some("success" | "failure" | "error"))
        });
        match last.as_deref() {
            Some("success") => Ok(()),
            other => Err(format!(
                "commit {sha} ended {other:?}: {}",
                tail(&self.host.log())
            )),
        }
    }

    /// The pid of pm2's daemon, whose children are the apps.
    fn pm2_god(&self) -> Option<i32> {
        std::fs::read_to_string(self.pm2_home.join("pm2.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

// ---------------------------------------------------------------------------

const APP_COUNTS: [usize; 3] = [1, 4, 8];

/// What one deploy of `n` apps took.
#[derive(Default, Clone)]
struct Deploy {
    n: usize,
    /// Webhook to the `success` status (every gate passed).
    success: f64,
    /// Webhook to the last app answering with its new release.
    live: f64,
    /// CPU seconds: hoist itself, the pm2 commands it ran, pm2's daemon
    /// and the apps.
    cpu_hoist: f64,
    cpu_pm2_cli: f64,
    cpu_pm2_apps: f64,
    pm2_calls: String,
    load: f64,
}

pub fn apps_in_one_commit(ctx: &Ctx) -> Vec<Row> {
    let measure = "one commit changing 1, 4 and 8 apps: commit to all deployed";
    let target = "4 apps ≤ 1.5 × one app, 8 apps ≤ 2 × one app";
    guarded(ctx, &[(measure, target)], &["pm2", "node"], || {
        let dir = ctx.scratch.join("multi");
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let store = dir.join("store");
        std::fs::create_dir_all(&store).map_err(|e| e.to_string())?;
        let d = Daemon::new(ctx, &dir, "multi-1")?;
        let apps: Vec<(String, u16)> = (0..8)
            .map(|i| (format!("app{i}"), procs::free_port()))
            .collect();
        // Each app its own artifact, as different apps have.
        let write = |(name, port): &(String, u16), tag: &str| -> Result<String, String> {
            let release = format!("{name}-{tag}");
            let art = generate::small_app(&store, &release)?;
            d.repo.write(
                name,
                &world::manifest(
                    &release,
                    &art.url(),
                    &art.sha256,
                    &world::fork_app(name, *port),
                    &world::http_health(*port, "1s"),
                ),
            )?;
            Ok(format!("{name} {release}"))
        };
        for a in &apps {
            write(a, "v0")?;
        }
        let first = d.repo.commit("8 apps")?;
        let mut daemon = d.host.start(&ctx.tools)?;
        d.wait_success(&first, Duration::from_secs(300))?;
        let god = d.pm2_god().ok_or("pm2 wrote no pm2.pid")?;

        let mut runs: Vec<Deploy> = Vec::new();
        for round in 0..ctx.scale.multi_rounds {
            // A different order each round, so a slow spell of the shared
            // machine does not always fall on the same count.
            let mut order = APP_COUNTS.to_vec();
            order.rotate_left(round % APP_COUNTS.len());
            for n in order {
                std::thread::sleep(Duration::from_secs(2));
                let tag = format!("r{round}n{n}");
                let mut want = Vec::new();
                for a in &apps[..n] {
                    want.push((a.1, write(a, &tag)?));
                }
                let sha = d.repo.commit(&tag)?;
                let (_, calls_before) = world::pm2_calls(&d.pm2_log, 0);
                let (h0, c0, _) = procs::tree_cpu(daemon.pid());
                let g0 = sum3(procs::tree_cpu(god));
                let load = procs::load_average().unwrap_or(f64::NAN);
                let t0 = Instant::now();
                d.hook(&sha)?;
                let mut live: Vec<Option<f64>> = vec![None; n];
                let mut success = None;
                let done =
                    procs::wait_until(Duration::from_secs(180), Duration::from_millis(20), || {
                        for (k, (port, body)) in want.iter().enumerate() {
                            if live[k].is_none()
                                && procs::http_get(*port, "/").is_some_and(|(_, b)| &b == body)
                            {
                                live[k] = Some(t0.elapsed().as_secs_f64());
                            }
                        }
                        if success.is_none() {
                            match d.status(&sha).as_deref() {
                                Some("success") => success = Some(t0.elapsed().as_secs_f64()),
                                Some("failure" | "error") => return true,
                                _ => {}
                            }
                        }
                        success.is_some() && live.iter().all(Option::is_some)
                    });
                let (Some(success), true) = (success, done) else {
                    return Err(format!(
                        "the commit changing {n} apps did not deploy: {}",
                        tail(&d.host.log())
                    ));
                };
                let (h1, c1, _) = procs::tree_cpu(daemon.pid());
                let g1 = sum3(procs::tree_cpu(god));
                let (pm2_calls, _) = world::pm2_calls(&d.pm2_log, calls_before);
                runs.push(Deploy {
                    n,
                    success,
                    live: live.iter().flatten().copied().fold(0.0, f64::max),
                    cpu_hoist: h1 - h0,
                    cpu_pm2_cli: c1 - c0,
                    cpu_pm2_apps: g1 - g0,
                    pm2_calls,
                    load,
                });
            }
        }
        daemon.stop();

        let of = |n: usize| -> Vec<&Deploy> { runs.iter().filter(|r| r.n == n).collect() };
        let med = |n: usize, f: fn(&Deploy) -> f64| median(of(n).into_iter().map(f).collect());
        let one = med(1, |r| r.success);
        let (four, eight) = (med(4, |r| r.success), med(8, |r| r.success));
        let (r4, r8) = (four / one, eight / one);
        let mut details = vec![format!(
            "`hoist run` with 8 apps (the sample app, fork mode, each its own artifact, health URL and stable_for 1s) under a real pm2; a commit changes the first n; clock from the webhook POST right after the push to the commit's `success` status (every changed app's gate passed); {} rounds, counts in a rotating order; medians",
            ctx.scale.multi_rounds
        )];
        for n in APP_COUNTS {
            let rs = of(n);
            details.push(format!(
                "{n} app{}: to success {} (runs {}); to the last app answering its new release {}; CPU per deploy: hoist {}, the pm2 commands it ran {}, pm2's daemon and the apps {}; pm2 commands per deploy: {}; load {}",
                if n == 1 { "" } else { "s" },
                secs(med(n, |r| r.success)),
                rs.iter()
                    .map(|r| format!("{:.2}", r.success))
                    .collect::<Vec<_>>()
                    .join(", "),
                secs(med(n, |r| r.live)),
                secs(med(n, |r| r.cpu_hoist)),
                secs(med(n, |r| r.cpu_pm2_cli)),
                secs(med(n, |r| r.cpu_pm2_apps)),
                rs.first().map(|r| r.pm2_calls.clone()).unwrap_or_default(),
                rs.iter()
                    .map(|r| format!("{:.1}", r.load))
                    .collect::<Vec<_>>()
                    .join(", "),
            ));
        }
        Ok(vec![Row {
            measure: measure.into(),
            hoist: format!(
                "1: {}, 4: {} ({r4:.2}×), 8: {} ({r8:.2}×)",
                secs(one),
                secs(four),
                secs(eight)
            ),
            baseline: format!("one app: {}", secs(one)),
            target: target.into(),
            verdict: if r4 <= 1.5 && r8 <= 2.0 {
                Verdict::Met
            } else {
                Verdict::Missed
            },
            details,
        }])
    })
}

fn sum3((a, b, c): (f64, f64, f64)) -> f64 {
    a + b + c
}

// ---------------------------------------------------------------------------

/// One `/healthz` request: when it was sent, how long the answer took (None:
/// no 200 answer).
struct Probe {
    at: Instant,
    took: Option<f64>,
}

/// GETs `/healthz` on a fresh connection every `every` until `stop` is set.
fn probe(port: u16, every: Duration, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<Probe>> {
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let mut next = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let at = Instant::now();
            let ok = procs::http_get(port, "/healthz").is_some_and(|(code, _)| code == 200);
            out.push(Probe {
                at,
                took: ok.then(|| at.elapsed().as_secs_f64()),
            });
            next += every;
            if let Some(wait) = next.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            } else {
                next = Instant::now();
            }
        }
        out
    })
}

fn latencies<'a>(probes: impl Iterator<Item = &'a Probe>) -> (Vec<f64>, usize) {
    let mut ok = Vec::new();
    let mut failed = 0;
    for p in probes {
        match p.took {
            Some(t) => ok.push(t),
            None => failed += 1,
        }
    }
    (ok, failed)
}

fn ms(s: f64) -> String {
    format!("{:.1} ms", s * 1000.0)
}

fn describe(v: &[f64], failed: usize) -> String {
    format!(
        "{} requests, p50 {}, p99 {}, max {}, {failed} failed",
        v.len(),
        ms(quantile(v.to_vec(), 0.5)),
        ms(quantile(v.to_vec(), 0.99)),
        ms(v.iter().copied().fold(0.0, f64::max))
    )
}

pub fn healthz_while_pruning(ctx: &Ctx) -> Vec<Row> {
    let measure = "`/healthz` latency while pruning 20,000-file releases and deploying others";
    let target = "p99 < 50 ms";
    guarded(ctx, &[(measure, target)], &["pm2", "node"], || {
        let art = generate::tree20k(ctx)?;
        let dir = ctx.scratch.join("healthz");
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let d = Daemon::new(ctx, &dir, "prune-1")?;
        let apps: Vec<(String, u16)> = ["left", "right"]
            .iter()
            .map(|a| (a.to_string(), procs::free_port()))
            .collect();
        // keep_releases 1: the live release and the previous one stay, so
        // the third deploy of each app prunes its first release.
        let commit = |k: usize| -> Result<String, String> {
            for (name, port) in &apps {
                let manifest = world::manifest(
                    &format!("{name}-{k}"),
                    &art.url(),
                    &art.sha256,
                    &world::fork_app(name, *port),
                    &world::http_health(*port, "1s"),
                );
                d.repo
                    .write(name, &format!("{manifest}keep_releases: 1\n"))?;
            }
            d.repo.commit(&format!("release {k}"))
        };
        let first = commit(1)?;
        let mut daemon = d.host.start(&ctx.tools)?;
        d.wait_success(&first, Duration::from_secs(300))?;
        let second = commit(2)?;
        d.hook(&second)?;
        d.wait_success(&second, Duration::from_secs(300))?;

        // The same daemon with nothing to do, for the probe's own noise.
        std::thread::sleep(Duration::from_secs(2));
        let every = Duration::from_millis(5);
        let stop = Arc::new(AtomicBool::new(false));
        let idle = probe(d.port, every, Arc::clone(&stop));
        std::thread::sleep(Duration::from_secs(if ctx.scale.name == "full" {
            10
        } else {
            3
        }));
        stop.store(true, Ordering::Relaxed);
        let idle = idle.join().map_err(|_| "the probe panicked")?;

        let third = commit(3)?;
        let stop = Arc::new(AtomicBool::new(false));
        let busy = probe(d.port, every, Arc::clone(&stop));
        std::thread::sleep(Duration::from_millis(200));
        let t0 = Instant::now();
        d.hook(&third)?;
        // When each app's prune (rename to `.trash-*`, then removal) ran.
        let mut pruning: Vec<(Instant, Instant)> = Vec::new();
        let mut open: Vec<Option<Instant>> = vec![None; apps.len()];
        let mut success = None;
        let load = procs::load_average().unwrap_or(f64::NAN);
        let done = procs::wait_until(Duration::from_secs(300), Duration::from_millis(5), || {
            for (k, (name, _)) in apps.iter().enumerate() {
                let trash = has_trash(&d.host.root.join(name));
                match (open[k], trash) {
                    (None, true) => open[k] = Some(Instant::now()),
                    (Some(from), false) => {
                        pruning.push((from, Instant::now()));
                        open[k] = None;
                    }
                    _ => {}
                }
            }
            if success.is_none() {
                match d.status(&third).as_deref() {
                    Some("success") => success = Some(t0.elapsed().as_secs_f64()),
                    Some("failure" | "error") => return true,
                    _ => {}
                }
            }
            let pruned = apps.iter().all(|(name, _)| {
                !d.host
                    .root
                    .join(format!("{name}/releases/{name}-1"))
                    .exists()
            });
            success.is_some() && pruned && open.iter().all(Option::is_none)
        });
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, Ordering::Relaxed);
        let busy = busy.join().map_err(|_| "the probe panicked")?;
        daemon.stop();
        let Some(success) = success.filter(|_| done) else {
            return Err(format!(
                "the third deploy did not finish with both first releases pruned: {}",
                tail(&d.host.log())
            ));
        };

        let end = t0 + Duration::from_secs_f64(success);
        let (during, failed) = latencies(busy.iter().filter(|p| p.at >= t0 && p.at <= end));
        let (in_prune, prune_failed) = latencies(
            busy.iter()
                .filter(|p| pruning.iter().any(|(a, b)| p.at >= *a && p.at <= *b)),
        );
        let (quiet, quiet_failed) = latencies(idle.iter());
        let p99 = quantile(during.clone(), 0.99);
        let prune_secs: Vec<String> = pruning
            .iter()
            .map(|(a, b)| format!("{:.2} s", (*b - *a).as_secs_f64()))
            .collect();
        Ok(vec![Row {
            measure: measure.into(),
            hoist: format!("p50 {}, p99 {}", ms(quantile(during.clone(), 0.5)), ms(p99)),
            baseline: format!(
                "idle daemon: p50 {}, p99 {}",
                ms(quantile(quiet.clone(), 0.5)),
                ms(quantile(quiet.clone(), 0.99))
            ),
            target: target.into(),
            verdict: if p99 < 0.050 && failed == 0 {
                Verdict::Met
            } else {
                Verdict::Missed
            },
            details: vec![
                format!(
                    "two apps, each a {}-file, {:.0} MB release, keep_releases 1; one commit deploys a third release of both (unpacked from the cache), and each deploy then prunes its first release; `GET /healthz` on a fresh connection every {} ms from the webhook to the `success` status ({}, load {load:.1})",
                    art.files,
                    art.unpacked as f64 / 1e6,
                    every.as_millis(),
                    secs(success)
                ),
                format!("during the deploy: {}", describe(&during, failed)),
                format!(
                    "while a prune ran ({}): {}",
                    prune_secs.join(" and "),
                    describe(&in_prune, prune_failed)
                ),
                format!(
                    "the same daemon idle, before: {}",
                    describe(&quiet, quiet_failed)
                ),
            ],
        }])
    })
}

/// Whether an app's directory holds a release being removed.
fn has_trash(app_dir: &Path) -> bool {
    std::fs::read_dir(app_dir).is_ok_and(|rd| {
        rd.flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with(".trash-"))
    })
}
