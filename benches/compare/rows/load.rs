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
        } else if l.starts_with("50%") || l.starts_with("99%") || l.starts_with("Latency ") {
            s.latency_lines
                .push(l.split_whitespace().collect::<Vec<_>>().join(" "));
        }
    }
    s
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
        let releases = [
            generate::small_app(&store, "r1")?,
            generate::small_app(&store, "r2")?,
        ];
        let commit = |i: usize| -> Result<String, String> {
            let a = &releases[i % 2];
            let name = if i.is_multiple_of(2) { "r1" } else { "r2" };
            repo.write(
                "web",
                &world::manifest(
                    name,
                    &a.url(),
                    &a.sha256,
                    &pm2_entry,
                    &world::http_health(port, "1s"),
                ),
            )?;
            repo.commit(name)?;
            Ok(name.to_string())
        };
        commit(0)?;
        host.once(&ctx.tools)?;

        let out_path = dir.join("wrk.out");
        let out = std::fs::File::create(&out_path).map_err(|e| e.to_string())?;
        let mut wrk = Guard::spawn(
            "wrk",
            Command::new(ctx.tools.wrk.as_deref().ok_or("wrk")?)
                .args(["-t2", "-c16", "-d600s", "--latency", "--timeout", "5s"])
                .arg(format!("http://127.0.0.1:{port}/"))
                .stdout(Stdio::from(out))
                .stderr(Stdio::null()),
        )?;
        std::thread::sleep(Duration::from_secs(2));
        let t_all = Instant::now();
        let mut times = Vec::new();
        let mut wrong = 0;
        for i in 1..=n {
            let name = commit(i)?;
            let t0 = Instant::now();
            host.once(&ctx.tools)?;
            times.push(t0.elapsed().as_secs_f64());
            if procs::http_get(port, "/").map(|(_, b)| b) != Some(format!("web {name}")) {
                wrong += 1;
            }
        }
        let under_load = t_all.elapsed().as_secs_f64();
        std::thread::sleep(Duration::from_secs(2));
        if !wrk.alive() {
            return Err("wrk stopped early".into());
        }
        wrk.stop_with(Signal::SIGINT, Duration::from_secs(30));
        let text = std::fs::read_to_string(&out_path).unwrap_or_default();
        let s = parse_wrk(&text);
        if s.requests == 0 {
            return Err(format!("wrk gave no summary: {text}"));
        }
        let failed = s.non_2xx_3xx + s.connect + s.read + s.write + s.timeout;
        Ok(vec![Row {
            measure: measure.clone(),
            hoist: format!("{failed} of {} requests", s.requests),
            baseline: "—".into(),
            target: target.into(),
            verdict: if failed == 0 && wrong == 0 {
                Verdict::Met
            } else {
                Verdict::Missed
            },
            details: vec![
                format!(
                    "wrk -t2 -c16 --latency for {:.0} s around {n} deploys (instances: 2, exec_mode: cluster; alternating releases r2, r1, ...; each `hoist once` took a median {})",
                    under_load + 4.0,
                    secs(median(times))
                ),
                format!(
                    "non-2xx {}, socket errors: connect {}, read {}, write {}, timeout {}; {}",
                    s.non_2xx_3xx,
                    s.connect,
                    s.read,
                    s.write,
                    s.timeout,
                    s.latency_lines.join("; ")
                ),
                format!(
                    "after each deploy the app answered the new release: {} of {n}",
                    n - wrong
                ),
            ],
        }])
    })
}
