//! Rows about what polling costs the git server: one config repo with many
//! apps, and many daemons against one git HTTP server (`git http-backend`).
//!
//! Both use the pm2 stand-in (`world::pm2_stub`): these rows are about git
//! polling and convergence, and 100 daemons' worth of node processes would
//! measure two CPUs starting node instead.

use std::time::{Duration, Instant};

use super::guarded;
use crate::generate;
use crate::procs::{self, Guard, median, mib_kb, secs};
use crate::servers::GitHttp;
use crate::world::{self, ConfigRepo, Host, HostOpts};
use crate::{Ctx, Row, Verdict};

fn stub_manifest(name: &str, art: &generate::Artifact, release: &str) -> String {
    world::manifest(
        release,
        &art.url(),
        &art.sha256,
        &format!("  - name: {name}\n    script: server.js\n"),
        "  timeout: 10s\n  stable_for: 0s\n",
    )
}

pub fn many_apps(ctx: &Ctx) -> Vec<Row> {
    let n = ctx.scale.many_apps;
    let measure = format!("{n} apps in one config repo: git requests per unchanged poll");
    let target = "one branch check per poll whatever the app count";
    let m = measure.clone();
    guarded(ctx, &[(&m, target)], &["git"], || {
        let dir = ctx.scratch.join("many");
        let root = dir.join("git");
        let many = ConfigRepo::new(&root, "many")?;
        let one = ConfigRepo::new(&root, "one")?;
        let git = GitHttp::start(&ctx.rt, &root)?;
        let store = dir.join("store");
        std::fs::create_dir_all(&store).map_err(|e| e.to_string())?;
        let art = generate::small_app(&store, "v1")?;
        let names: Vec<String> = (0..n).map(|i| format!("app{i:02}")).collect();
        let home = dir.join("stubhome");
        let mut all = names.clone();
        all.push("solo".into());
        let stub = world::pm2_stub(&dir, &home, &all)?;
        for a in &names {
            many.write(a, &stub_manifest(a, &art, "v1"))?;
        }
        many.commit("many apps")?;
        one.write("solo", &stub_manifest("solo", &art, "v1"))?;
        one.commit("one app")?;
        let mk = |name: &str, repo: &str, mport: u16| {
            Host::new(
                &dir.join(name),
                &HostOpts {
                    host: name.into(),
                    repo_url: git.url(repo),
                    poll: "1s",
                    jitter: "0s",
                    pm2_command: stub.clone(),
                    pm2_home: home.clone(),
                    listen: format!("127.0.0.1:{mport}"),
                    extra: String::new(),
                },
            )
        };
        let (mp_many, mp_one) = (procs::free_port(), procs::free_port());
        let h_many = mk("many-host", "many.git", mp_many)?;
        let h_one = mk("one-host", "one.git", mp_one)?;
        let mut d_many = h_many.start(&ctx.tools)?;
        let mut d_one = h_one.start(&ctx.tools)?;
        let t0 = Instant::now();
        let ok = procs::wait_until(Duration::from_secs(300), Duration::from_millis(200), || {
            h_one.release_of("solo").is_some()
                && h_many
                    .state_json()
                    .is_some_and(|s| names.iter().all(|a| s["apps"][a]["release"] == "v1"))
        });
        if !ok {
            return Err(format!(
                "the {n} apps did not all deploy within 300 s: {}",
                h_many.log().lines().last().unwrap_or("")
            ));
        }
        let first = t0.elapsed().as_secs_f64();
        std::thread::sleep(Duration::from_secs(3));
        let (pm, po) = (d_many.pid(), d_one.pid());
        let p0 = (procs::polls_ok(mp_many), procs::polls_ok(mp_one));
        let c0 = (procs::cpu_secs(pm), procs::cpu_secs(po));
        let w0 = Instant::now();
        std::thread::sleep(Duration::from_secs(ctx.scale.idle_window_secs));
        let w1 = Instant::now();
        let c1 = (procs::cpu_secs(pm), procs::cpu_secs(po));
        let p1 = (procs::polls_ok(mp_many), procs::polls_ok(mp_one));
        let (rss_many, rss_one) = (
            procs::status_kb(pm, "VmRSS").unwrap_or(0),
            procs::status_kb(po, "VmRSS").unwrap_or(0),
        );
        d_many.stop();
        d_one.stop();
        let side =
            |p0: Option<u64>, p1: Option<u64>, c0: Option<f64>, c1: Option<f64>, repo: &str| {
                let polls = p1.unwrap_or(0).saturating_sub(p0.unwrap_or(0)).max(1);
                let (refs, packs) = git.count(repo, w0, w1);
                let cpu = (c1.unwrap_or(0.0) - c0.unwrap_or(0.0)) / polls as f64;
                (polls, refs, packs, cpu)
            };
        let (mp, mr, mf, mc) = side(p0.0, p1.0, c0.0, c1.0, "many.git");
        let (op, or, of, oc) = side(p0.1, p1.1, c0.1, c1.1, "one.git");
        let per = |r: usize, f: usize, p: u64| (r + f) as f64 / p as f64;
        let met = mf == 0 && per(mr, mf, mp) <= 1.05;
        Ok(vec![Row {
            measure: measure.clone(),
            hoist: format!(
                "{:.2} requests/poll, {:.2} ms CPU/poll",
                per(mr, mf, mp),
                mc * 1000.0
            ),
            baseline: format!(
                "one app: {:.2} requests/poll, {:.2} ms CPU/poll",
                per(or, of, op),
                oc * 1000.0
            ),
            target: target.into(),
            verdict: if met { Verdict::Met } else { Verdict::Missed },
            details: vec![
                format!(
                    "same {:.0} s window, poll_interval 1s: {n} apps: {mp} polls, {mr} ref requests, {mf} fetches; one app: {op} polls, {or} ref requests, {of} fetches",
                    (w1 - w0).as_secs_f64()
                ),
                format!(
                    "RSS {n} apps {}, one app {}; first deploy of the {n} apps (pm2 stand-in) took {}",
                    mib_kb(rss_many),
                    mib_kb(rss_one),
                    secs(first)
                ),
            ],
        }])
    })
}

pub fn hundred_daemons(ctx: &Ctx) -> Vec<Row> {
    let s = &ctx.scale;
    let n = s.daemons;
    let (interval, jitter) = (s.fleet_interval_secs, s.fleet_jitter_secs);
    let measure = format!("{n} daemons against one git HTTP server");
    let target = format!(
        "all converge within interval + jitter + 5 s ({} s)",
        interval + jitter + 5
    );
    let (m, t) = (measure.clone(), target.clone());
    guarded(ctx, &[(&m, &t)], &["git"], || {
        let dir = ctx.scratch.join("fleet");
        let root = dir.join("git");
        let repo = ConfigRepo::new(&root, "fleet")?;
        let git = GitHttp::start(&ctx.rt, &root)?;
        let store = dir.join("store");
        std::fs::create_dir_all(&store).map_err(|e| e.to_string())?;
        let v1 = generate::small_app(&store, "v1")?;
        let v2 = generate::small_app(&store, "v2")?;
        let home = dir.join("stubhome");
        let stub = world::pm2_stub(&dir, &home, &["tiny".to_string()])?;
        repo.write("tiny", &stub_manifest("tiny", &v1, "v1"))?;
        repo.commit("v1")?;
        let (poll, jit) = (format!("{interval}s"), format!("{jitter}s"));
        let mut hosts = Vec::new();
        for i in 0..n {
            hosts.push(Host::new(
                &dir.join(format!("hosts/{i:03}")),
                &HostOpts {
                    host: format!("fleet-{i:03}"),
                    repo_url: git.url("fleet.git"),
                    poll: &poll,
                    jitter: &jit,
                    pm2_command: stub.clone(),
                    pm2_home: home.clone(),
                    listen: String::new(),
                    extra: String::new(),
                },
            )?);
        }
        let t_start = Instant::now();
        let mut daemons: Vec<Guard> = Vec::new();
        for h in &hosts {
            daemons.push(h.start(&ctx.tools)?);
        }
        let stop_all = |daemons: &mut Vec<Guard>| {
            for d in daemons.iter() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(d.pid()),
                    nix::sys::signal::Signal::SIGTERM,
                );
            }
            daemons.clear();
        };
        let converged = |release: &str| {
            hosts
                .iter()
                .filter(|h| h.release_of("tiny").as_deref() == Some(release))
                .count()
        };
        if !procs::wait_until(Duration::from_secs(300), Duration::from_millis(200), || {
            converged("v1") == n
        }) {
            let got = converged("v1");
            stop_all(&mut daemons);
            return Err(format!(
                "only {got} of {n} daemons made their first deploy within 300 s"
            ));
        }
        let startup = t_start.elapsed().as_secs_f64();

        // Steady state: nothing changes, every daemon polls.
        std::thread::sleep(Duration::from_secs(interval + jitter));
        let w0 = Instant::now();
        std::thread::sleep(Duration::from_secs(s.fleet_window_secs));
        let w1 = Instant::now();
        let (refs, packs) = git.count("fleet.git", w0, w1);
        let per_min = (refs + packs) as f64 * 60.0 / (w1 - w0).as_secs_f64();
        let rss: u64 = daemons
            .iter()
            .map(|d| procs::status_kb(d.pid(), "VmRSS").unwrap_or(0))
            .sum();

        // A commit: how long until every daemon runs it.
        repo.write("tiny", &stub_manifest("tiny", &v2, "v2"))?;
        repo.commit("v2")?;
        let t0 = Instant::now();
        let mut when: Vec<Option<f64>> = vec![None; n];
        let limit = Duration::from_secs(interval + jitter + 60);
        procs::wait_until(limit, Duration::from_millis(100), || {
            for (i, h) in hosts.iter().enumerate() {
                if when[i].is_none() && h.release_of("tiny").as_deref() == Some("v2") {
                    when[i] = Some(t0.elapsed().as_secs_f64());
                }
            }
            when.iter().all(Option::is_some)
        });
        let c1 = Instant::now();
        let (crefs, cpacks) = git.count("fleet.git", t0, c1);
        stop_all(&mut daemons);
        let done: Vec<f64> = when.iter().flatten().copied().collect();
        let max = done.iter().copied().fold(0.0, f64::max);
        let bound = (interval + jitter + 5) as f64;
        let all = done.len() == n;
        let mut sorted = done.clone();
        sorted.sort_by(|a, b| a.total_cmp(b));
        let p95 = sorted
            .get(((sorted.len() as f64 * 0.95).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or(f64::NAN);
        Ok(vec![Row {
            measure: measure.clone(),
            hoist: if all {
                format!(
                    "all {n} in {} (max); {per_min:.0} git requests/min idle",
                    secs(max)
                )
            } else {
                format!(
                    "{} of {n} converged in {}",
                    done.len(),
                    secs(limit.as_secs_f64())
                )
            },
            baseline: "—".into(),
            target: target.clone(),
            verdict: if all && max <= bound {
                Verdict::Met
            } else {
                Verdict::Missed
            },
            details: vec![
                format!(
                    "poll_interval {interval}s, jitter {jitter}s; commit to each daemon's state.json naming the new release: median {}, p95 {}, max {}",
                    secs(median(done.clone())),
                    secs(p95),
                    secs(max)
                ),
                format!(
                    "idle: {refs} ref requests and {packs} fetches in {:.0} s = {per_min:.0} requests/min (one per poll: {:.0}/min expected); during convergence {crefs} ref requests + {cpacks} fetches",
                    (w1 - w0).as_secs_f64(),
                    n as f64 * 60.0 / (interval as f64 + jitter as f64 / 2.0)
                ),
                format!(
                    "{n} daemons, each with its own root, state_dir and host name, status provider none, no listener; together {} RSS; first start to all deployed {}",
                    mib_kb(rss),
                    secs(startup)
                ),
            ],
        }])
    })
}
