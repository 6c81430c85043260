//! Requests failed while hoist redeploys a pm2 cluster-mode app again and
//! again under load: wrk keeps 16 connections busy while `hoist once`
//! deploys alternating releases, each a `pm2 startOrReload` (pm2's rolling
//! reload in cluster mode) followed by hoist's health gate.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::guarded;
use crate::generate;
use crate::procs::{self, Guard, median, secs};
use crate::world::{self, ConfigRepo, Host, HostOpts, Pm2Home};
use crate::{Ctx, Row, Verdict};

/// wrk's summary, as printed.
#[derive(Debug, Default)]
struct WrkSummary {
    requests: u64,
    non_2xx_3xx: u64,
    connect: u64,
    read: u64,
    write: u64,
    timeout: u64,
    latency_lines: Vec<String>,
}

fn parse_wrk(out: &str) -> WrkSummary {
    let mut s = WrkSummary::default();
    let num = |t: &str| t.trim_end_matches(',').parse::<u64>().unwrap_or(0);
    for line in out.lines() {
        let l = line.trim();
        if l.contains("requests in") {
            s.requests = num(l.split_whitespace().next().unwrap_or("0"));
        } else if let Some(rest) = l.strip_prefix("Non-2xx or 3xx responses:") {
            s.non_2xx_3xx = num(rest.trim());
        } else if let Some(rest) = l.strip_prefix("Socket errors:") {
            let w: Vec<&str> = rest.split_whitespace().collect();
            for pair in w.chunks(2) {
                if let [k, v] = pair {
                    let v = num(v);
                    match k.trim_end_matches(',') {
                        "connect" => s.connect = v,
                        "read" => s.read = v,
                        "write" => s.write = v,
                        "timeout" => s.timeout = v,
                        _ => {}
                    }
                }
            }
        } else if l.starts_with("50%")
            || l.starts_with("99%")
            || (l.starts_with("Latency ") && !l.contains("Distribution"))
        {
            s.latency_lines
                .push(l.split_whitespace().collect::<Vec<_>>().join(" "));
        }
    }
    s
}

/// Runs wrk against `port` while `during` runs; returns wrk's summary.
fn under_wrk(
    ctx: &Ctx,
    port: u16,
    out_path: &std::path::Path,
    during: impl FnOnce() -> Result<(), String>,
) -> Result<WrkSummary, String> {
    let out = std::fs::File::create(out_path).map_err(|e| e.to_string())?;
    let mut wrk = Guard::spawn(
        "wrk",
        Command::new(ctx.tools.wrk.as_deref().ok_or("wrk")?)
            .args(["-t2", "-c16", "-d600s", "--latency", "--timeout", "5s"])
            .arg(format!("http://127.0.0.1:{port}/"))
            .stdout(Stdio::from(out))
            .stderr(Stdio::null()),
    )?;
    std::thread::sleep(Duration::from_secs(2));
    during()?;
    std::thread::sleep(Duration::from_secs(2));
    if !wrk.alive() {
        return Err("wrk stopped early".into());
    }
    wrk.stop_with(Signal::SIGINT, Duration::from_secs(30));
    let text = std::fs::read_to_string(out_path).unwrap_or_default();
    let s = parse_wrk(&text);
    if s.requests == 0 {
        return Err(format!("wrk gave no summary: {text}"));
    }
    Ok(s)
}

impl WrkSummary {
    fn failed(&self) -> u64 {
        self.non_2xx_3xx + self.connect + self.read + self.write + self.timeout
    }

    fn errors(&self) -> String {
        format!(
            "non-2xx {}, socket errors: connect {}, read {}, write {}, timeout {}",
            self.non_2xx_3xx, self.connect, self.read, self.write, self.timeout
        )
    }
}

pub fn cluster_reloads_under_load(ctx: &Ctx) -> Vec<Row> {
    let n = ctx.scale.wrk_deploys;
    let measure = format!("requests failed while deploying a pm2 cluster app {n} times under wrk");
    let target = "0";
    let m = measure.clone();
    guarded(ctx, &[(&m, target)], &["pm2", "node", "wrk"], || {
        let dir = ctx.scratch.join("wrk");
        let store = dir.join("store");
        std::fs::create_dir_all(&store).map_err(|e| e.to_string())?;
        let repo = ConfigRepo::new(&dir.join("repo"), "config")?;
        let pm2 = Pm2Home::new(ctx.tools.pm2.as_deref().ok_or("pm2")?, dir.join("pm2home"));
        let port = procs::free_port();
        let host = Host::new(
            &dir.join("host"),
            &HostOpts {
                host: "load-1".into(),
                repo_url: repo.file_url(),
                poll: "1h",
                jitter: "0s",
                pm2_command: pm2.pm2.clone(),
                pm2_home: pm2.home.clone(),
                listen: String::new(),
                extra: String::new(),
            },
        )?;
        let pm2_entry = format!(
            "  - name: web\n    script: server.js\n    instances: 2\n    exec_mode: cluster\n    env: {{ PORT: \"{port}\", APP_NAME: web }}\n"
        );
        // The sample app as shipped, and the same app stopping the way it
        // did before it had a grace period: closing idle keep-alive
        // connections at once.
        let no_grace = generate::SERVER_JS.replace(
            "const GRACE_MS = cluster.isWorker ? 1000 : 0;",
            "const GRACE_MS = 0;",
        );
        let releases = [
            generate::small_app(&store, "r1")?,
            generate::small_app(&store, "r2")?,
            generate::small_app_with(&store, "nograce", &no_grace)?,
        ];
        let names = ["r1", "r2", "nograce"];
        let commit = |i: usize| -> Result<String, String> {
            let a = &releases[i];
            repo.write(
                "web",
                &world::manifest(
                    names[i],
                    &a.url(),
                    &a.sha256,
                    &pm2_entry,
                    &world::http_health(port, "1s"),
                ),
            )?;
            repo.commit(names[i])?;
            Ok(names[i].to_string())
        };
        commit(0)?;
        host.once(&ctx.tools)?;

        // hoist deploying alternating releases.
        let mut times = Vec::new();
        let mut wrong = 0;
        let t_all = Instant::now();
        let with_hoist = under_wrk(ctx, port, &dir.join("wrk-hoist.out"), || {
            for i in 1..=n {
                let name = commit(i % 2)?;
                let t0 = Instant::now();
                host.once(&ctx.tools)?;
                times.push(t0.elapsed().as_secs_f64());
                if procs::http_get(port, "/").map(|(_, b)| b) != Some(format!("web {name}")) {
                    wrong += 1;
                }
            }
            Ok(())
        })?;
        let under_load = t_all.elapsed().as_secs_f64();

        // What users do by hand: `pm2 reload` of the same ecosystem.
        let eco = host.state.join("pm2/web.json");
        let reload_by_hand = || -> Result<(), String> {
            for _ in 0..n {
                procs::run_ok(
                    pm2.cmd().arg("reload").arg(&eco).arg("--update-env"),
                    Duration::from_secs(120),
                )?;
                std::thread::sleep(Duration::from_secs(1));
            }
            Ok(())
        };
        let by_hand = under_wrk(ctx, port, &dir.join("wrk-pm2.out"), reload_by_hand)?;

        // The cause, shown: the same reloads of the app without a grace period.
        let nograce = if no_grace != generate::SERVER_JS {
            commit(2)?;
            host.once(&ctx.tools)?;
            Some(under_wrk(
                ctx,
                port,
                &dir.join("wrk-nograce.out"),
                reload_by_hand,
            )?)
        } else {
            None
        };

        let failed = with_hoist.failed();
        let mut details = vec![
            format!(
                "wrk -t2 -c16 --latency, {:.0} s around {n} `hoist once` deploys of alternating releases (instances: 2, exec_mode: cluster; each deploy took a median {}); the app answered the new release after {} of {n}",
                under_load + 4.0,
                secs(median(times)),
                n - wrong
            ),
            format!(
                "hoist: {}; {}",
                with_hoist.errors(),
                with_hoist.latency_lines.join("; ")
            ),
            format!(
                "baseline, `pm2 reload <ecosystem> --update-env` by hand {n} times, 1 s apart: {}",
                by_hand.errors()
            ),
        ];
        if let Some(ng) = &nograce {
            details.push(format!(
                "the cause, shown: the same app closing idle keep-alive connections as soon as pm2 says stop (no grace period, as the sample app did before), `pm2 reload` by hand {n} times: {} of {} requests failed ({})",
                ng.failed(),
                ng.requests,
                ng.errors()
            ));
        }
        Ok(vec![Row {
            measure: measure.clone(),
            hoist: format!("{failed} of {} requests", with_hoist.requests),
            baseline: format!(
                "`pm2 reload` by hand: {} of {}",
                by_hand.failed(),
                by_hand.requests
            ),
            target: target.into(),
            verdict: if failed == 0 && wrong == 0 {
                Verdict::Met
            } else {
                Verdict::Missed
            },
            details,
        }])
    })
}
