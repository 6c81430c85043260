//! The row against deploying to several servers without hoist: the deploy
//! script of the classic self-hosting guide (build, then for each server
//! `rsync -az --delete` over SSH and `pm2 reload` there), against hoist
//! (publish, commit, one webhook per server). Three servers on each side,
//! the same build directory deployed by both, in the same run:
//!
//! - time from a finished build until all three servers answer the new
//!   release, a few rounds, medians;
//! - a build that crashes at start, deployed by both: what each server
//!   answers afterwards, and for how long it answered nothing good.
//!
//! The script's three servers are three directories of this machine behind
//! one real OpenSSH sshd on loopback (the tests' own, `tests/common/sshd.rs`),
//! each with its own pm2 home and app port, so every rsync and every
//! `pm2 reload` goes through a real SSH connection (key auth, host key
//! checked). hoist's three servers are three `hoist run` with their own
//! roots, pm2 homes and ports, following one config repo served by
//! `git http-backend`, no rollout waves.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::daemon::{github_hook, pm2_path, tail};
use super::guarded;
use crate::generate;
use crate::procs::{self, Guard, median, secs};
use crate::servers::GitHttp;
use crate::world::{ConfigRepo, Host, HostOpts, Pm2Home};
use crate::{Ctx, Row, Verdict};

// The same sshd the ssh-transport tests check hoist against.
#[allow(dead_code)]
#[path = "../../../tests/common/sshd.rs"]
mod sshd;

/// What `sshd.rs` asks of the module that includes it.
fn free_port() -> u16 {
    procs::free_port()
}

/// The build's entry point. Three servers run on one machine, so each copy
/// of the app needs its own port: hoist's servers name it in their own
/// `shared/.env` (linked into every release), the script's servers in their
/// pm2 ecosystem file (PORT in the environment).
const START_JS: &str = r#"'use strict';
const fs = require('node:fs');
try {
  const m = /^PORT=(\d+)$/m.exec(fs.readFileSync('.env', 'utf8'));
  if (m) process.env.PORT = m[1];
} catch (_) {
  // No .env here: PORT comes from the environment.
}
require('./server.js');
"#;

/// What makes the bad build crash at start: a file its build step did not write.
const BAD_START_JS: &str = "'use strict';\nrequire('./build/routes.json'); // the build step failed to write it\nrequire('./server.js');\n";

const SERVERS: usize = 3;

/// Writes the build of `release` into `<builds>/<release>/web` (a `web`
/// directory, so `hoist publish` names the artifact `web-<release>`).
fn build(builds: &Path, release: &str, bad: bool) -> Result<PathBuf, String> {
    let dir = builds.join(release).join("web");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let start = if bad { BAD_START_JS } else { START_JS };
    for (name, text) in [
        ("start.js", start),
        ("server.js", generate::SERVER_JS),
        ("RELEASE", &format!("{release}\n")),
    ] {
        std::fs::write(dir.join(name), text).map_err(|e| e.to_string())?;
    }
    Ok(dir)
}

/// One of the script's servers: a directory reached over SSH.
struct RsyncServer {
    dir: PathBuf,
    port: u16,
    pm2: Pm2Home,
}

/// One of hoist's servers.
struct HoistServer {
    host: Host,
    port: u16,
    hook_port: u16,
    context: String,
}

/// The guide's script, for these servers.
fn deploy_script(ssh: &sshd::Sshd, servers: &[RsyncServer], pm2: &Path) -> String {
    let list: Vec<String> = servers
        .iter()
        .map(|s| format!("  {}", s.dir.display()))
        .collect();
    format!(
        r#"#!/usr/bin/env bash
# deploy.sh BUILD_DIR: the deploy script of the classic self-hosting guide.
# For each server: copy the build over with rsync, then reload the app with
# pm2 there. Here the three servers are three directories of one machine
# behind one sshd, each with its own pm2 home.
set -euo pipefail
BUILD=$1
USER_AT={user}@127.0.0.1
SSH="ssh -p {port} -i {key} -o UserKnownHostsFile={known} -o StrictHostKeyChecking=yes -o BatchMode=yes"
SERVERS=(
{list}
)
# (The times echoed are for the benchmark; the guide's script has none.)
for dir in "${{SERVERS[@]}}"; do
  echo "== $dir $EPOCHREALTIME"
  rsync -az --delete -e "$SSH" "$BUILD/" "$USER_AT:$dir/web/"
  echo "rsynced $EPOCHREALTIME"
  $SSH "$USER_AT" "cd $dir && PM2_HOME=$dir/pm2home {pm2} reload ecosystem.config.js"
  echo "reloaded $EPOCHREALTIME"
done
"#,
        port = ssh.port,
        key = ssh.deploy_key.display(),
        known = ssh.known_hosts.display(),
        list = list.join("\n"),
        pm2 = pm2.display(),
        user = ssh.user,
    )
}

/// The script's own step times from its output: (rsync, ssh + pm2 reload)
/// seconds, one pair per server.
fn step_times(stdout: &str) -> Vec<(f64, f64)> {
    let mut steps = Vec::new();
    let mut marks: Vec<f64> = Vec::new();
    for l in stdout.lines() {
        let mark = l.rsplit(' ').next().and_then(|t| t.parse::<f64>().ok());
        let Some(t) = mark else { continue };
        if l.starts_with("== ") {
            marks = vec![t];
        } else if l.starts_with("rsynced ") || l.starts_with("reloaded ") {
            marks.push(t);
            if let [a, b, c] = marks[..] {
                steps.push((b - a, c - b));
            }
        }
    }
    steps
}

/// The manifest before the first publish fills in `release` and `artifact`.
fn manifest_template() -> String {
    format!(
        "# The `web` app on three servers; `hoist publish` sets release and artifact.\n\
         release: \"none\"\nartifact:\n  url: file:///nowhere/web-none.tar.zst\n  sha256: {}\n\
         shared: [.env]\npm2:\n  - name: web\n    script: start.js\n    env: {{ APP_NAME: web }}\n\
         health:\n  timeout: 30s\n  stable_for: 1s\n",
        "0".repeat(64)
    )
}

/// What answers `/` on `port`: the body, or why nothing does.
fn answer(port: u16) -> String {
    match procs::http_get(port, "/") {
        Some((200, body)) => body,
        Some((code, _)) => format!("HTTP {code}"),
        None => "nothing (connection refused)".into(),
    }
}

/// Waits until every port answers `web <release>`; the seconds from `t0`
/// at which each did.
fn wait_live(ports: &[u16], release: &str, t0: Instant) -> Option<Vec<f64>> {
    let want = format!("web {release}");
    let mut at: Vec<Option<f64>> = vec![None; ports.len()];
    let done = procs::wait_until(Duration::from_secs(90), Duration::from_millis(5), || {
        for (i, p) in ports.iter().enumerate() {
            if at[i].is_none() && procs::http_get(*p, "/").is_some_and(|(_, b)| b == want) {
                at[i] = Some(t0.elapsed().as_secs_f64());
            }
        }
        at.iter().all(Option::is_some)
    });
    done.then(|| at.into_iter().flatten().collect())
}

/// Statuses by context for `sha`, the last state of each, from the shared
/// `file` provider path.
fn states(statuses: &Path, sha: &str) -> std::collections::BTreeMap<String, (String, String)> {
    let mut by = std::collections::BTreeMap::new();
    for l in std::fs::read_to_string(statuses)
        .unwrap_or_default()
        .lines()
    {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(l) else {
            continue;
        };
        if v["sha"] == sha {
            by.insert(
                v["context"].as_str().unwrap_or("?").to_string(),
                (
                    v["state"].as_str().unwrap_or("?").to_string(),
                    v["description"].as_str().unwrap_or("").to_string(),
                ),
            );
        }
    }
    by
}

/// Watches the servers' ports every 100 ms until `done` holds (or `limit`):
/// per server, the seconds it answered something other than `web <good>`.
fn watch_down(
    ports: &[u16],
    good: &str,
    limit: Duration,
    mut done: impl FnMut() -> bool,
) -> (Vec<f64>, f64) {
    let want = format!("web {good}");
    let t0 = Instant::now();
    let mut down = vec![0.0; ports.len()];
    let mut last = Instant::now();
    loop {
        let now = Instant::now();
        let step = (now - last).as_secs_f64();
        last = now;
        for (i, p) in ports.iter().enumerate() {
            if procs::http_get(*p, "/").is_none_or(|(_, b)| b != want) {
                down[i] += step;
            }
        }
        if done() || t0.elapsed() > limit {
            return (down, t0.elapsed().as_secs_f64());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// pm2's view of the script's server: `web <status>, <n> restarts`.
fn pm2_state(pm2: &Pm2Home) -> String {
    let Ok(out) = procs::run_ok(pm2.cmd().arg("jlist"), Duration::from_secs(60)) else {
        return "pm2 jlist failed".into();
    };
    let list: serde_json::Value = serde_json::from_str(out.trim()).unwrap_or_default();
    list.as_array()
        .and_then(|a| a.iter().find(|p| p["name"] == "web"))
        .map(|p| {
            format!(
                "pm2: web {}, {} restarts",
                p["pm2_env"]["status"].as_str().unwrap_or("?"),
                p["pm2_env"]["restart_time"]
            )
        })
        .unwrap_or_else(|| "pm2: no `web` process".into())
}

pub fn rsync_over_ssh(ctx: &Ctx) -> Vec<Row> {
    let m1 = "three servers, build to all live (small app)";
    let t1 = "hoist ≤ the rsync script";
    let m2 = "three servers, a release that crashes at start";
    let t2 = "every server still serves the last good release";
    guarded(ctx, &[(m1, t1), (m2, t2)], &["pm2", "node"], || {
        for tool in ["rsync", "ssh", "bash"] {
            if which(tool).is_none() {
                return Err(format!(
                    "{tool} is not installed (scripts/bench.sh installs it)"
                ));
            }
        }
        if !Path::new(sshd::SSHD).exists() {
            return Err(format!(
                "{} is missing (scripts/bench.sh installs openssh-server)",
                sshd::SSHD
            ));
        }
        let load0 = procs::load_average().unwrap_or(f64::NAN);
        let dir = ctx.scratch.join("rsync");
        let pm2_bin = pm2_path(ctx)?;
        let builds = dir.join("builds");

        // --- The script's servers, behind one sshd.
        let ssh = std::panic::catch_unwind(|| sshd::Sshd::start(&dir.join("sshd")))
            .map_err(|_| "sshd did not start (its log is in the scratch dir)".to_string())?;
        let mut rsync_servers = Vec::new();
        for n in 1..=SERVERS {
            let sdir = dir.join(format!("rsync-server-{n}"));
            std::fs::create_dir_all(sdir.join("web")).map_err(|e| e.to_string())?;
            let port = procs::free_port();
            // The ecosystem file lives beside the app dir, so `--delete` keeps it.
            std::fs::write(
                sdir.join("ecosystem.config.js"),
                format!(
                    "module.exports = {{ apps: [{{ name: 'web', script: 'start.js', cwd: '{}', env: {{ PORT: '{port}', APP_NAME: 'web' }} }}] }};\n",
                    sdir.join("web").display()
                ),
            )
            .map_err(|e| e.to_string())?;
            let pm2 = Pm2Home::new(&pm2_bin, sdir.join("pm2home"));
            rsync_servers.push(RsyncServer {
                dir: sdir,
                port,
                pm2,
            });
        }
        let script = dir.join("deploy.sh");
        std::fs::write(&script, deploy_script(&ssh, &rsync_servers, &pm2_bin))
            .map_err(|e| e.to_string())?;
        let rsync_ports: Vec<u16> = rsync_servers.iter().map(|s| s.port).collect();
        let run_script = |build: &Path| {
            procs::run(
                std::process::Command::new("bash").arg(&script).arg(build),
                Duration::from_secs(300),
            )
        };

        // --- hoist's servers.
        let repo = ConfigRepo::new(&dir.join("git"), "config")?;
        let git = GitHttp::start(&ctx.rt, &dir.join("git"))?;
        let store = dir.join("store");
        std::fs::create_dir_all(&store).map_err(|e| e.to_string())?;
        let secret = "bench-webhook-secret";
        let secret_file = dir.join("webhook-secret");
        std::fs::write(&secret_file, secret).map_err(|e| e.to_string())?;
        let statuses = dir.join("statuses.jsonl");
        let mut hoist_pm2s = Vec::new();
        let mut hoist_servers = Vec::new();
        for n in 1..=SERVERS {
            let hdir = dir.join(format!("hoist-server-{n}"));
            let pm2 = Pm2Home::new(&pm2_bin, hdir.join("pm2home"));
            let (port, hook_port) = (procs::free_port(), procs::free_port());
            let name = format!("web-{n}");
            let host = Host::new(
                &hdir,
                &HostOpts {
                    host: name.clone(),
                    repo_url: git.url("config.git"),
                    poll: "10m",
                    jitter: "0s",
                    pm2_command: pm2.pm2.clone(),
                    pm2_home: pm2.home.clone(),
                    listen: format!("127.0.0.1:{hook_port}"),
                    extra: format!(
                        "webhook_secret_file: {}\nstatus:\n  provider: file\n  path: {}\n",
                        secret_file.display(),
                        statuses.display()
                    ),
                },
            )?;
            let shared = host.root.join("web/shared");
            std::fs::create_dir_all(&shared).map_err(|e| e.to_string())?;
            std::fs::write(shared.join(".env"), format!("PORT={port}\n"))
                .map_err(|e| e.to_string())?;
            hoist_pm2s.push(pm2);
            hoist_servers.push(HoistServer {
                host,
                port,
                hook_port,
                context: format!("hoist/bench/{name}"),
            });
        }
        let hoist_ports: Vec<u16> = hoist_servers.iter().map(|s| s.port).collect();
        let manifest = repo.work.join("apps/web.yaml");
        std::fs::write(&manifest, manifest_template()).map_err(|e| e.to_string())?;
        let to = format!("file://{}/", store.display());
        // publish + commit: the steps of a CI job after its build.
        let publish_commit = |build: &Path, release: &str| -> Result<String, String> {
            procs::run_ok(
                std::process::Command::new(&ctx.tools.hoist)
                    .arg("publish")
                    .arg(build)
                    .args(["--to", &to, "--manifest"])
                    .arg(&manifest)
                    .args(["--release", release]),
                Duration::from_secs(60),
            )?;
            repo.commit(&format!("web {release}"))
        };
        let hooks = |sha: &str| -> Result<(), String> {
            for s in &hoist_servers {
                let code = github_hook(s.hook_port, secret, &format!("{{\"after\":\"{sha}\"}}"))?;
                if code != 202 {
                    return Err(format!("the webhook was answered {code}"));
                }
            }
            Ok(())
        };
        let all_states = |sha: &str, want: &str| {
            let by = states(&statuses, sha);
            hoist_servers
                .iter()
                .all(|s| by.get(&s.context).is_some_and(|(st, _)| st == want))
        };
        // Whether every server has said how its deploy of `sha` ended.
        let finished = |sha: &str| {
            let by = states(&statuses, sha);
            hoist_servers
                .iter()
                .all(|s| by.get(&s.context).is_some_and(|(st, _)| st != "pending"))
        };
        let logs = |servers: &[HoistServer]| {
            servers
                .iter()
                .map(|s| format!("{}: {}", s.context, tail(&s.host.log())))
                .collect::<Vec<_>>()
                .join(" | ")
        };

        // --- v0 everywhere (not timed): the script's first run starts the
        // apps (`pm2 reload` of an ecosystem file starts what is not running).
        let v0 = build(&builds, "v0", false)?;
        let out = run_script(&v0)?;
        if !out.status.success() {
            return Err(format!(
                "the deploy script failed on v0: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        wait_live(&rsync_ports, "v0", Instant::now())
            .ok_or("the script's servers never answered v0")?;
        let sha0 = publish_commit(&v0, "v0")?;
        let mut daemons: Vec<Guard> = Vec::new();
        for s in &hoist_servers {
            daemons.push(s.host.start(&ctx.tools)?);
        }
        if !procs::wait_until(Duration::from_secs(120), Duration::from_millis(100), || {
            all_states(&sha0, "success")
        }) {
            return Err(format!(
                "hoist's servers did not deploy v0: {}",
                logs(&hoist_servers)
            ));
        }

        // --- Rounds: the same build deployed by both, alternating who goes first.
        let rounds = ctx.scale.reps.clamp(2, 5);
        let (mut hoist_live, mut script_live, mut script_ran) =
            (Vec::new(), Vec::new(), Vec::new());
        let mut hoist_spread = Vec::new();
        let mut script_steps = Vec::new();
        let mut release = String::new();
        for k in 1..=rounds {
            release = format!("v{k}");
            let b = build(&builds, &release, false)?;
            for side in [k % 2, (k + 1) % 2] {
                std::thread::sleep(Duration::from_secs(1));
                if side == 0 {
                    let t0 = Instant::now();
                    let out = run_script(&b)?;
                    let ran = t0.elapsed().as_secs_f64();
                    if !out.status.success() {
                        return Err(format!(
                            "the deploy script failed on {release}: {}",
                            String::from_utf8_lossy(&out.stderr)
                        ));
                    }
                    let at = wait_live(&rsync_ports, &release, t0)
                        .ok_or_else(|| format!("the script's servers never answered {release}"))?;
                    script_ran.push(ran);
                    script_steps.extend(step_times(&String::from_utf8_lossy(&out.stdout)));
                    script_live.push(at.iter().copied().fold(0.0, f64::max));
                } else {
                    let t0 = Instant::now();
                    let sha = publish_commit(&b, &release)?;
                    hooks(&sha)?;
                    let at = wait_live(&hoist_ports, &release, t0).ok_or_else(|| {
                        format!(
                            "hoist's servers never answered {release}: {}",
                            logs(&hoist_servers)
                        )
                    })?;
                    let (lo, hi) = at
                        .iter()
                        .fold((f64::MAX, 0f64), |(lo, hi), x| (lo.min(*x), hi.max(*x)));
                    hoist_live.push(hi);
                    hoist_spread.push(hi - lo);
                    if !procs::wait_until(
                        Duration::from_secs(60),
                        Duration::from_millis(50),
                        || all_states(&sha, "success"),
                    ) {
                        return Err(format!("no success from every server for {release}"));
                    }
                }
            }
        }
        let good = release.clone();

        // --- The bad release: the same crashing build through both.
        let bad = format!("v{}", rounds + 1);
        let b = build(&builds, &bad, true)?;
        std::thread::sleep(Duration::from_secs(1));
        let t0 = Instant::now();
        let out = run_script(&b)?;
        let script_exit = out.status.code().unwrap_or(-1);
        let script_secs = t0.elapsed().as_secs_f64();
        // As long as hoist takes to give up on it, at least 20 s: pm2's own
        // restarts of a crashing app have run out by then.
        let (script_down, _) = watch_down(&rsync_ports, &good, Duration::from_secs(20), || false);
        let script_after: Vec<String> = rsync_servers
            .iter()
            .map(|s| {
                let on_disk = std::fs::read_to_string(s.dir.join("web/RELEASE"))
                    .map(|r| r.trim().to_string())
                    .unwrap_or_else(|_| "?".into());
                format!(
                    "port answers {:?}; files on disk: {on_disk}; {}",
                    answer(s.port),
                    pm2_state(&s.pm2)
                )
            })
            .collect();

        std::thread::sleep(Duration::from_secs(1));
        let t0 = Instant::now();
        let sha = publish_commit(&b, &bad)?;
        hooks(&sha)?;
        let (hoist_down, hoist_watch) =
            watch_down(&hoist_ports, &good, Duration::from_secs(120), || {
                finished(&sha)
            });
        let hoist_failed = all_states(&sha, "failure");
        let hoist_rolled = t0.elapsed().as_secs_f64();
        let by = states(&statuses, &sha);
        let hoist_after: Vec<String> = hoist_servers
            .iter()
            .map(|s| {
                let current = std::fs::read_link(s.host.root.join("web/current"))
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|_| "?".into());
                let (state, desc) = by.get(&s.context).cloned().unwrap_or_default();
                format!(
                    "port answers {:?}; current -> {current}; status {state}: {desc}",
                    answer(s.port)
                )
            })
            .collect();
        let hoist_ok = hoist_failed
            && hoist_servers
                .iter()
                .all(|s| answer(s.port) == format!("web {good}"));
        let script_serving = rsync_servers
            .iter()
            .filter(|s| answer(s.port) == format!("web {good}"))
            .count();
        let hoist_serving = hoist_servers
            .iter()
            .filter(|s| answer(s.port) == format!("web {good}"))
            .count();

        for mut d in daemons {
            d.stop();
        }
        drop(git);
        // One SSH connection doing nothing, the floor of every step above.
        let mut ssh_rtt = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            procs::run_ok(
                std::process::Command::new("ssh")
                    .args(["-p", &ssh.port.to_string(), "-i"])
                    .arg(&ssh.deploy_key)
                    .arg("-o")
                    .arg(format!("UserKnownHostsFile={}", ssh.known_hosts.display()))
                    .args(["-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes"])
                    .arg(format!("{}@127.0.0.1", ssh.user))
                    .arg("true"),
                Duration::from_secs(30),
            )?;
            ssh_rtt.push(t.elapsed().as_secs_f64());
        }
        let ssh_port = ssh.port;
        drop(ssh);
        let load1 = procs::load_average().unwrap_or(f64::NAN);

        let (h, s) = (median(hoist_live.clone()), median(script_live.clone()));
        let mut bad_details = vec![format!(
            "the bad build ({bad}): start.js requires ./build/routes.json, which the build did not write; deployed by the script (exit {script_exit} after {}), then by hoist (publish, commit, webhooks)",
            secs(script_secs)
        )];
        for (n, a) in script_after.iter().enumerate() {
            bad_details.push(format!(
                "script, server {}: {a}; without `web {good}` for {:.1} s of the 20 s watched after the script ended",
                n + 1,
                script_down[n].min(20.0)
            ));
        }
        for (n, a) in hoist_after.iter().enumerate() {
            bad_details.push(format!(
                "hoist, server {}: {a}; without `web {good}` for {:.1} s of {:.1} s watched",
                n + 1,
                hoist_down[n].min(hoist_watch),
                hoist_watch
            ));
        }
        bad_details.push(if hoist_failed {
            format!(
                "hoist: all three servers had reported `failure` (rolled back) {} after the publish began",
                secs(hoist_rolled)
            )
        } else {
            format!(
                "hoist: NOT every server reported `failure` ({} after the publish began)",
                secs(hoist_rolled)
            )
        });
        Ok(vec![
            Row {
                measure: m1.into(),
                hoist: format!("{} to all live", secs(h)),
                baseline: format!("rsync + `pm2 reload`: {}", secs(s)),
                target: t1.into(),
                verdict: if h <= s { Verdict::Met } else { Verdict::Missed },
                details: vec![
                    format!(
                        "same build dir (start.js, server.js, RELEASE) deployed by both, {rounds} rounds alternating which side goes first, medians; clock from the finished build until the third server answers the new release"
                    ),
                    "hoist: `hoist publish` to a file:// store (sets release and artifact in apps/web.yaml), commit + push to the config repo (git http-backend), one signed webhook POST to each of three `hoist run`; no rollout waves".into(),
                    format!(
                        "script: bash, for each server in turn `rsync -az --delete -e ssh` then `ssh ... pm2 reload ecosystem.config.js` (one OpenSSH sshd on 127.0.0.1:{}, key auth, host key checked; three server dirs with their own pm2 homes); the script alone ran {} (median), the rest is the last app starting",
                        ssh_port,
                        secs(median(script_ran.clone()))
                    ),
                    format!(
                        "script, per server (medians of {}): rsync {}, `ssh ... pm2 reload` {}; one `ssh host true` alone: {}",
                        script_steps.len(),
                        secs(median(script_steps.iter().map(|s| s.0).collect())),
                        secs(median(script_steps.iter().map(|s| s.1).collect())),
                        secs(median(ssh_rtt))
                    ),
                    format!(
                        "hoist: first to last server live within {} (median)",
                        secs(median(hoist_spread.clone()))
                    ),
                    format!(
                        "runs, seconds: hoist {hoist_live:.2?}; script {script_live:.2?}"
                    ),
                    format!("1-minute load average {load0:.2} before the row, {load1:.2} after (2 CPUs, shared with other work)"),
                ],
            },
            Row {
                measure: m2.into(),
                hoist: format!("{hoist_serving}/3 serve {good}"),
                baseline: format!("rsync script: {script_serving}/3 serve {good}"),
                target: t2.into(),
                verdict: if hoist_ok { Verdict::Met } else { Verdict::Missed },
                details: bad_details,
            },
        ])
    })
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}
