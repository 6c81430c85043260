//! Rows about one `hoist run` (or `hoist once`) deploying a real app under a
//! real pm2: peak memory with a 1 GB artifact, the idle daemon, commit to
//! live through a webhook, and a revert to a release still on disk.

use std::io::{Read, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::guarded;
use crate::generate;
use crate::procs::{self, median, mib_kb, secs};
use crate::servers::{GitHttp, S3};
use crate::world::{self, ConfigRepo, Host, HostOpts, Pm2Home};
use crate::{Ctx, Row, Verdict};

pub fn pm2_path(ctx: &Ctx) -> Result<std::path::PathBuf, String> {
    ctx.tools.pm2.clone().ok_or_else(|| "pm2 is missing".into())
}

/// What the rows deploying from S3 start from, all under one directory.
/// Rows destructure it in field order, so the bindings are dropped as the
/// rows' own locals were: the host first, the S3 server last.
struct S3Host {
    s3: S3,
    repo: ConfigRepo,
    pm2: Pm2Home,
    host: Host,
}

/// s3s-fs holding `artifact` as `key`, a config repo, a pm2 home and the
/// host `name` polling every `poll`, under `dir`.
fn s3_host(
    ctx: &Ctx,
    dir: &Path,
    artifact: &Path,
    key: &str,
    name: &str,
    poll: &str,
) -> Result<S3Host, String> {
    let s3 = S3::start(
        ctx.tools.s3s_fs.as_deref().ok_or("s3s-fs")?,
        &dir.join("s3"),
    )?;
    s3.put(ctx.tools.curl.as_deref().ok_or("curl")?, artifact, key)?;
    let repo = ConfigRepo::new(&dir.join("repo"), "config")?;
    let pm2 = Pm2Home::new(&pm2_path(ctx)?, dir.join("pm2home"));
    let host = Host::new(
        &dir.join("host"),
        &HostOpts {
            host: name.into(),
            repo_url: repo.file_url(),
            poll,
            jitter: "0s",
            pm2_command: pm2.pm2.clone(),
            pm2_home: pm2.home.clone(),
            listen: String::new(),
            extra: s3.host_config_section(dir)?,
        },
    )?;
    Ok(S3Host {
        s3,
        repo,
        pm2,
        host,
    })
}

// ---------------------------------------------------------------------------

pub fn big_artifact_rss(ctx: &Ctx) -> Vec<Row> {
    let measure = "peak memory deploying a 1 GB artifact (S3)";
    let target = "≤ 64 MB RSS";
    guarded(
        ctx,
        &[(measure, target)],
        &["pm2", "node", "s3s-fs", "curl"],
        || {
            let art = generate::big(ctx)?;
            let dir = ctx.scratch.join("big");
            let S3Host {
                s3,
                repo,
                pm2: _pm2,
                host,
            } = s3_host(ctx, &dir, &art.path, "big.tar.zst", "big-1", "2s")?;
            let port = procs::free_port();
            repo.write(
                "big",
                &world::manifest(
                    "big-1",
                    &s3.s3_url("big.tar.zst"),
                    &art.sha256,
                    &world::fork_app("big", port),
                    &world::http_health(port, "1s"),
                ),
            )?;
            repo.commit("big-1")?;
            let t0 = Instant::now();
            let mut daemon = host.start(&ctx.tools)?;
            let pid = daemon.pid();
            let mut peak_sampled = 0;
            let done =
                procs::wait_until(Duration::from_secs(900), Duration::from_millis(50), || {
                    peak_sampled = peak_sampled.max(procs::status_kb(pid, "VmRSS").unwrap_or(0));
                    host.release_of("big").as_deref() == Some("big-1")
                });
            let took = t0.elapsed().as_secs_f64();
            let hwm = procs::status_kb(pid, "VmHWM").unwrap_or(0);
            let after = procs::status_kb(pid, "VmRSS").unwrap_or(0);
            daemon.stop();
            if !done {
                return Err(format!(
                    "the 1 GB deploy did not finish within 900 s; log: {}",
                    tail(&host.log())
                ));
            }
            Ok(vec![Row {
                measure: measure.into(),
                hoist: format!("{} peak (VmHWM)", mib_kb(hwm)),
                baseline: "—".into(),
                target: target.into(),
                verdict: if hwm <= 64 * 1024 {
                    Verdict::Met
                } else {
                    Verdict::Missed
                },
                details: vec![
                    format!(
                        "artifact: {:.0} MB as tar.zst, {} files, {:.0} MB unpacked, from s3s-fs; deploy (download, unpack, pm2 start, health) took {}",
                        art.bytes as f64 / 1e6,
                        art.files,
                        art.unpacked as f64 / 1e6,
                        secs(took)
                    ),
                    format!(
                        "VmRSS sampled every 50 ms peaked at {}; {} after the deploy",
                        mib_kb(peak_sampled),
                        mib_kb(after)
                    ),
                ],
            }])
        },
    )
}

/// The log without terminal colour codes.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

pub fn tail(log: &str) -> String {
    let log = strip_ansi(log);
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" / ")
}

// ---------------------------------------------------------------------------

pub fn idle(ctx: &Ctx) -> Vec<Row> {
    let m1 = "idle daemon, memory";
    let t1 = "≤ 10 MB RSS";
    let m2 = "idle daemon, CPU per unchanged poll (git over HTTP)";
    let t2 = "≤ 2 ms CPU per poll";
    guarded(ctx, &[(m1, t1), (m2, t2)], &["pm2", "node"], || {
        let dir = ctx.scratch.join("idle");
        let repo = ConfigRepo::new(&dir.join("git"), "idle")?;
        let git = GitHttp::start(&ctx.rt, &dir.join("git"))?;
        let store = dir.join("store");
        std::fs::create_dir_all(&store).map_err(|e| e.to_string())?;
        let art = generate::small_app(&store, "v1")?;
        let pm2 = Pm2Home::new(&pm2_path(ctx)?, dir.join("pm2home"));
        let (port, mport) = (procs::free_port(), procs::free_port());
        let host = Host::new(
            &dir.join("host"),
            &HostOpts {
                host: "idle-1".into(),
                repo_url: git.url("idle.git"),
                poll: "1s",
                jitter: "0s",
                pm2_command: pm2.pm2.clone(),
                pm2_home: pm2.home.clone(),
                listen: format!("127.0.0.1:{mport}"),
                extra: String::new(),
            },
        )?;
        repo.write(
            "web",
            &world::manifest(
                "v1",
                &art.url(),
                &art.sha256,
                &world::fork_app("web", port),
                &world::http_health(port, "1s"),
            ),
        )?;
        repo.commit("v1")?;
        let mut daemon = host.start(&ctx.tools)?;
        let pid = daemon.pid();
        if !procs::wait_until(Duration::from_secs(120), Duration::from_millis(100), || {
            host.release_of("web").as_deref() == Some("v1")
        }) {
            return Err(format!(
                "the first deploy did not finish: {}",
                tail(&host.log())
            ));
        }
        std::thread::sleep(Duration::from_secs(3));
        let polls0 = procs::polls_ok(mport).ok_or("no /metrics")?;
        let (c0, w0) = (procs::cpu_secs(pid).ok_or("no /proc stat")?, Instant::now());
        std::thread::sleep(Duration::from_secs(ctx.scale.idle_window_secs));
        let (c1, w1) = (procs::cpu_secs(pid).ok_or("no /proc stat")?, Instant::now());
        let polls1 = procs::polls_ok(mport).ok_or("no /metrics")?;
        let rss = procs::status_kb(pid, "VmRSS").unwrap_or(0);
        let anon = procs::status_kb(pid, "RssAnon").unwrap_or(0);
        let file = procs::status_kb(pid, "RssFile").unwrap_or(0);
        let threads = procs::status_kb(pid, "Threads").unwrap_or(0);
        let maps: Vec<String> = procs::rss_by_mapping(pid)
            .into_iter()
            .take(5)
            .map(|(name, kb)| format!("{name} {}", mib_kb(kb)))
            .collect();
        let (refs, packs) = git.count("idle.git", w0, w1);
        daemon.stop();
        let polls = polls1.saturating_sub(polls0).max(1);
        let per_poll = (c1 - c0) / polls as f64;

        // What a cron job or a shell loop around `git ls-remote` costs.
        let url = git.url("idle.git");
        let mut ls = Vec::new();
        for _ in 0..10 {
            let (cpu, _) = procs::run_rusage(Command::new("git").args([
                "ls-remote",
                &url,
                "refs/heads/main",
            ]))?;
            ls.push(cpu);
        }
        let ls_cpu = median(ls);

        let window = (w1 - w0).as_secs_f64();
        Ok(vec![
            Row {
                measure: m1.into(),
                hoist: format!("{} RSS", mib_kb(rss)),
                baseline: "—".into(),
                target: t1.into(),
                verdict: if rss <= 10 * 1024 {
                    Verdict::Met
                } else {
                    Verdict::Missed
                },
                details: vec![
                    format!(
                        "RSS {} = {} anonymous + {} file-backed (pages of the executable and shared libraries); {threads} threads",
                        mib_kb(rss),
                        mib_kb(anon),
                        mib_kb(file)
                    ),
                    format!("largest resident mappings: {}", maps.join(", ")),
                ],
            },
            Row {
                measure: m2.into(),
                hoist: format!("{:.2} ms", per_poll * 1000.0),
                baseline: format!("`git ls-remote`: {:.1} ms", ls_cpu * 1000.0),
                target: t2.into(),
                verdict: if per_poll <= 0.002 {
                    Verdict::Met
                } else {
                    Verdict::Missed
                },
                details: vec![
                    format!(
                        "{polls} polls in {window:.0} s (poll_interval 1s), {:.0} ms CPU in all (/proc/<pid>/stat, 10 ms ticks); the git server saw {refs} ref requests and {packs} fetches",
                        (c1 - c0) * 1000.0
                    ),
                    "baseline: CPU of one `git ls-remote URL refs/heads/main` against the same server (wait4 rusage, median of 10), what a cron job polling the branch spends".into(),
                ],
            },
        ])
    })
}

// ---------------------------------------------------------------------------

pub fn github_hook(port: u16, secret: &str, body: &str) -> Result<u16, String> {
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).map_err(|e| e.to_string())?;
    mac.update(body.as_bytes());
    let sig = hex::encode(mac.finalize().into_bytes());
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "POST /hooks/git HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nX-GitHub-Event: push\r\nX-Hub-Signature-256: sha256={sig}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no answer to the webhook: {answer:?}"))
}

pub fn webhook_to_live(ctx: &Ctx) -> Vec<Row> {
    let measure = "commit to live, webhook-triggered (small artifact)";
    let target = "≤ 1 s plus app start";
    guarded(ctx, &[(measure, target)], &["pm2", "node"], || {
        let dir = ctx.scratch.join("webhook");
        let repo = ConfigRepo::new(&dir.join("git"), "config")?;
        let git = GitHttp::start(&ctx.rt, &dir.join("git"))?;
        let store = dir.join("store");
        std::fs::create_dir_all(&store).map_err(|e| e.to_string())?;
        let pm2 = Pm2Home::new(&pm2_path(ctx)?, dir.join("pm2home"));
        let (port, hport) = (procs::free_port(), procs::free_port());
        let secret = "bench-webhook-secret";
        std::fs::write(dir.join("webhook-secret"), secret).map_err(|e| e.to_string())?;
        let statuses = dir.join("statuses.jsonl");
        let host = Host::new(
            &dir.join("host"),
            &HostOpts {
                host: "hook-1".into(),
                repo_url: git.url("config.git"),
                poll: "10m",
                jitter: "0s",
                pm2_command: pm2.pm2.clone(),
                pm2_home: pm2.home.clone(),
                listen: format!("127.0.0.1:{hport}"),
                extra: format!(
                    "webhook_secret_file: {}\nstatus:\n  provider: file\n  path: {}\n",
                    dir.join("webhook-secret").display(),
                    statuses.display()
                ),
            },
        )?;
        let deploy = |release: &str| -> Result<String, String> {
            let art = generate::small_app(&store, release)?;
            repo.write(
                "web",
                &world::manifest(
                    release,
                    &art.url(),
                    &art.sha256,
                    &world::fork_app("web", port),
                    &world::http_health(port, "1s"),
                ),
            )?;
            repo.commit(release)
        };
        deploy("v0")?;
        let mut daemon = host.start(&ctx.tools)?;
        if !procs::wait_until(Duration::from_secs(120), Duration::from_millis(100), || {
            host.release_of("web").as_deref() == Some("v0")
        }) {
            return Err(format!(
                "the first deploy did not finish: {}",
                tail(&host.log())
            ));
        }
        let success = |sha: &str| {
            std::fs::read_to_string(&statuses)
                .unwrap_or_default()
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .any(|v| v["sha"] == sha && v["state"] == "success")
        };
        let (mut live, mut done, mut deploy_secs) = (Vec::new(), Vec::new(), Vec::new());
        for k in 1..=ctx.scale.webhook_reps {
            let release = format!("v{k}");
            std::thread::sleep(Duration::from_secs(2));
            let sha = deploy(&release)?;
            let t0 = Instant::now();
            let code = github_hook(hport, secret, &format!("{{\"after\":\"{sha}\"}}"))?;
            if code != 202 {
                return Err(format!("the webhook was answered {code}"));
            }
            let want = format!("web {release}");
            if !procs::wait_until(Duration::from_secs(60), Duration::from_millis(5), || {
                procs::http_get(port, "/").is_some_and(|(_, b)| b == want)
            }) {
                return Err(format!("{release} never went live: {}", tail(&host.log())));
            }
            live.push(t0.elapsed().as_secs_f64());
            if !procs::wait_until(Duration::from_secs(60), Duration::from_millis(10), || {
                success(&sha)
            }) {
                return Err(format!("no success status for {release}"));
            }
            done.push(t0.elapsed().as_secs_f64());
            deploy_secs.push(host.last_deploy_seconds().unwrap_or(f64::NAN));
        }
        daemon.stop();

        // The app's own restart: what a deploy by hand does once the new
        // files are in place, `pm2 reload` (a restart in fork mode), timed
        // until the new release answers. No hoist involved.
        let by_hand = dir.join("by-hand");
        let p2 = procs::free_port();
        std::fs::create_dir_all(&by_hand).map_err(|e| e.to_string())?;
        std::fs::write(by_hand.join("server.js"), generate::SERVER_JS)
            .map_err(|e| e.to_string())?;
        std::fs::write(by_hand.join("RELEASE"), "hand-0\n").map_err(|e| e.to_string())?;
        let eco = dir.join("by-hand.json");
        std::fs::write(
            &eco,
            serde_json::json!({"apps": [{"name": "by-hand", "script": "server.js",
                "cwd": by_hand, "env": {"PORT": p2.to_string(), "APP_NAME": "web"}}]})
            .to_string(),
        )
        .map_err(|e| e.to_string())?;
        procs::run_ok(pm2.cmd().arg("start").arg(&eco), Duration::from_secs(120))?;
        let mut starts = Vec::new();
        for k in 1..=ctx.scale.webhook_reps {
            std::thread::sleep(Duration::from_secs(1));
            let release = format!("hand-{k}");
            std::fs::write(by_hand.join("RELEASE"), format!("{release}\n"))
                .map_err(|e| e.to_string())?;
            let want = format!("web {release}");
            let t0 = Instant::now();
            procs::run_ok(
                pm2.cmd().arg("reload").arg(&eco).arg("--update-env"),
                Duration::from_secs(120),
            )?;
            if !procs::wait_until(Duration::from_secs(60), Duration::from_millis(5), || {
                procs::http_get(p2, "/").is_some_and(|(_, b)| b == want)
            }) {
                return Err("the app did not come back after `pm2 reload` by hand".into());
            }
            starts.push(t0.elapsed().as_secs_f64());
        }
        drop(git);

        let (l, s) = (median(live.clone()), median(starts.clone()));
        let overhead = l - s;
        Ok(vec![Row {
            measure: measure.into(),
            hoist: format!("{} to live", secs(l)),
            baseline: format!("`pm2 reload` by hand: {}", secs(s)),
            target: target.into(),
            verdict: if overhead <= 1.0 {
                Verdict::Met
            } else {
                Verdict::Missed
            },
            details: vec![
                format!(
                    "hoist adds {} to the app's own restart (from the webhook POST right after the push until the new release answers on its port; baseline: new files in place, `pm2 reload` until the new release answers); medians of {}",
                    secs(overhead),
                    live.len()
                ),
                format!(
                    "until the `success` status is written: {} (the health gate's stable_for is 1s); deploy step by hoist's history: {}",
                    secs(median(done)),
                    secs(median(deploy_secs))
                ),
                format!(
                    "runs, seconds: hoist to live {live:.2?}; `pm2 reload` by hand {starts:.2?}"
                ),
            ],
        }])
    })
}

// ---------------------------------------------------------------------------

pub fn revert_to_kept(ctx: &Ctx) -> Vec<Row> {
    let measure = "revert to a kept release (~200 MB artifact)";
    let target = "swap + reload only, no download";
    guarded(
        ctx,
        &[(measure, target)],
        &["pm2", "node", "s3s-fs", "curl"],
        || {
            let art = generate::tree(ctx)?;
            let dir = ctx.scratch.join("revert");
            let S3Host {
                s3,
                repo,
                pm2: _pm2,
                host,
            } = s3_host(ctx, &dir, &art.path, "tree.tar.zst", "revert-1", "1h")?;
            let store = dir.join("store");
            std::fs::create_dir_all(&store).map_err(|e| e.to_string())?;
            let small = generate::small_app(&store, "small")?;
            let port = procs::free_port();
            let pm2_entry = world::fork_app("web", port);
            let health = world::http_health(port, "1s");
            repo.write(
                "web",
                &world::manifest(
                    "tree-1",
                    &s3.s3_url("tree.tar.zst"),
                    &art.sha256,
                    &pm2_entry,
                    &health,
                ),
            )?;
            repo.commit("tree-1")?;
            let t0 = Instant::now();
            host.once(&ctx.tools)?;
            let first = t0.elapsed().as_secs_f64();
            let first_deploy = host.last_deploy_seconds().unwrap_or(f64::NAN);

            repo.write(
                "web",
                &world::manifest("small", &small.url(), &small.sha256, &pm2_entry, &health),
            )?;
            repo.commit("small")?;
            host.once(&ctx.tools)?;

            repo.revert_head()?;
            // The store is gone: the revert can only work from what is on disk.
            drop(s3);
            let t0 = Instant::now();
            let out = host.once(&ctx.tools)?;
            let revert = t0.elapsed().as_secs_f64();
            let revert_deploy = host.last_deploy_seconds().unwrap_or(f64::NAN);
            let answers = procs::http_get(port, "/")
                .map(|(_, b)| b)
                .unwrap_or_default();
            let plain = strip_ansi(&out);
            let reused = plain.contains("reuse=true") || plain.contains("\"reuse\":true");
            let ok = answers == "web tree" && reused;
            Ok(vec![Row {
                measure: measure.into(),
                hoist: format!("revert: {}", secs(revert)),
                baseline: format!("first deploy: {}", secs(first)),
                target: target.into(),
                verdict: if ok { Verdict::Met } else { Verdict::Missed },
                details: vec![
                    format!(
                        "`hoist once` wall time, process start to exit; the deploy step alone (hoist's history): revert {}, first deploy {}",
                        secs(revert_deploy),
                        secs(first_deploy)
                    ),
                    format!(
                        "the S3 server was stopped before the revert; hoist logged reuse={reused}; the app then answered {answers:?}"
                    ),
                    "what remains in a revert: pm2 reload of the app and the health gate (stable_for 1s)".into(),
                ],
            }])
        },
    )
}
