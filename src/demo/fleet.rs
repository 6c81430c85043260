//! `hoist demo --fleet`: a rollout in waves on this machine (SPEC §5, §8).
//!
//! Three servers, `web-1` (the canary), `web-2` and `web-3`, each a real
//! engine with its own root, state dir and pm2 home, follow one config
//! repository (libgit2, as in `hoist demo`) and coordinate only through
//! commit statuses: the `file` provider, one path they all write and read,
//! stands in for the forge. The story: a good release goes out in waves
//! (the canary, a bake of a few seconds, then the rest), a second one too
//! while the others keep serving the first during the bake, a crash-looping
//! build stops at the canary (which rolls back; the others report the
//! halt), and reverting it turns every server green. `hoist fleet` (the
//! library's [`crate::fleet`]) is printed along the way.
//!
//! The engines run in this process, each in a loop of passes like
//! `hoist run`'s (poll interval, and a wake-up at the end of a bake), so
//! the demo has one process to stop and one output to read. Each server's
//! copy of the sample app needs a port of its own on one machine: a
//! `start.js` in the build reads it from that server's `shared/.env`,
//! which the operator owns, as on real servers. Every pm2 home is killed
//! at the end, and the folder removed unless `HOIST_DEMO_KEEP` is set.

use super::{APP_FILES, commit_tree, free_port, revert_head, tree_of};
use crate::config::HostConfig;
use crate::engine::Engine;
use crate::fleet::{self, Fleet, Snapshot, Verdict};
use crate::metrics::Metrics;
use crate::rollout::Opening;
use git2::Repository;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// The servers; the first is the canary.
const HOSTS: [&str; 3] = ["web-1", "web-2", "web-3"];
/// The canary's bake: long enough to watch, short enough for a demo.
const BAKE: &str = "5s";
const POLL: Duration = Duration::from_secs(1);
/// How long one step may take before the demo gives up.
const STEP_LIMIT: Duration = Duration::from_secs(150);

/// The build's entry point: the sample app on the port this server's
/// `shared/.env` names.
const START_JS: &str = r#"'use strict';
// The fleet demo runs three servers on one machine, so each copy of the app
// needs its own port: it is in that server's shared/.env (PORT=...), which
// `shared: [.env]` links into every release.
const fs = require('node:fs');
const m = /^PORT=(\d+)$/m.exec(fs.readFileSync('.env', 'utf8'));
if (m) process.env.PORT = m[1];
require('./server.js');
"#;

/// What makes the bad build crash at start: a file the build left out.
const BAD_BUILD: &str =
    "require('./build/routes.json'); // 2.1.0's build step failed to write it\n";

fn manifest(release: &str, url: &str, sha256: &str) -> String {
    format!(
        r#"# The fleet demo's `web` app: one process on each server.
release: "{release}"
artifact:
  url: {url}
  sha256: {sha256}
shared: [.env]                 # each server's own .env (here: its port)
pm2:
  - name: web
    script: start.js
    env: {{ APP_NAME: web, NODE_ENV: production }}
health:
  timeout: 20s
  stable_for: 2s
rollout:
  waves:
    - {{ labels: [canary], bake: {BAKE} }}   # web-1, then {BAKE} of real traffic
    - {{ percent: 100 }}                   # every other server
  max_failures: 0
  deadline: 2m
"#
    )
}

const INVENTORY: &str = "hosts:\n  web-1: { labels: [web, canary] }\n  web-2: { labels: [web] }\n  web-3: { labels: [web] }\n";

fn labels(host: &str) -> &'static str {
    if host == HOSTS[0] {
        "[web, canary]"
    } else {
        "[web]"
    }
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

pub async fn run() -> Result<(), String> {
    let homes = HOSTS.map(|host| format!("{host}/pm2home"));
    let homes: Vec<&str> = homes.iter().map(String::as_str).collect();
    super::in_a_folder(
        "hoist demo --fleet",
        "hoist-demo-fleet-",
        "\n· cleaning up: stopping the servers' pm2s",
        &homes,
        |root, pm2| async move { demo(&root, &pm2).await },
    )
    .await
}

/// One server of the fleet, as the demo sees it from outside.
struct Server {
    host: &'static str,
    dir: PathBuf,
    port: u16,
}

impl Server {
    /// What its app answers on `/`.
    fn answers(&self) -> String {
        http_get(self.port, "/").unwrap_or_else(|| "(no answer)".into())
    }

    /// The release directories on its disk.
    fn releases(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.dir.join("srv/web/releases"))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }
}

/// The engines at work, each in its own loop of passes.
struct Running {
    stop: Arc<AtomicBool>,
    wake: Arc<Notify>,
    loops: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    /// Lets each pass in flight finish its step, then posts what is queued.
    async fn shutdown(self) {
        self.stop.store(true, Ordering::SeqCst);
        self.wake.notify_waiters();
        for l in self.loops {
            let _ = l.await;
        }
    }
}

/// `hoist run`'s loop without its signals and listener: a pass, then the
/// next one a poll interval later, or sooner when a bake ends before.
async fn serve(engine: Arc<Engine>, stop: Arc<AtomicBool>, wake: Arc<Notify>) {
    while !stop.load(Ordering::SeqCst) {
        let mut delay = POLL;
        match engine.pass().await {
            Ok(r) => {
                if let Some(at) = r.next_check {
                    let until = at.saturating_duration_since(Instant::now());
                    delay = delay.min(until.max(Duration::from_millis(200)));
                }
            }
            Err(e) => tracing::warn!(host = %engine.host(), "poll failed: {e}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = wake.notified() => {}
        }
    }
    engine.reporter().flush(Duration::from_secs(5)).await;
}

async fn demo(root: &Path, pm2: &Path) -> Result<(), String> {
    std::fs::create_dir_all(root.join("store")).map_err(err)?;
    let repo = Repository::init_bare(root.join("config.git")).map_err(err)?;
    let statuses = root.join("statuses.jsonl");
    let mut servers = Vec::new();
    for host in HOSTS {
        let s = Server {
            host,
            dir: root.join(host),
            port: free_port()?,
        };
        for d in ["srv/web/shared", "state", "pm2home"] {
            std::fs::create_dir_all(s.dir.join(d)).map_err(err)?;
        }
        std::fs::write(
            s.dir.join("srv/web/shared/.env"),
            format!("PORT={}\n", s.port),
        )
        .map_err(err)?;
        let cfg = format!(
            "host: {host}\nlabels: {labels}\nenvironment: demo\nroot: {dir}/srv\nstate_dir: {dir}/state\nrepo:\n  url: file://{root}/config.git\n  branch: main\n  poll_interval: 1s\n  jitter: 0s\nstatus:\n  provider: file\n  path: {statuses}\npm2:\n  command: {pm2}\n  home: {dir}/pm2home\nlisten: \"\"\n",
            labels = labels(host),
            dir = s.dir.display(),
            root = root.display(),
            statuses = statuses.display(),
            pm2 = pm2.display(),
        );
        std::fs::write(s.dir.join("hoist.yaml"), cfg).map_err(err)?;
        servers.push(s);
    }
    // What a promotion pipeline gives `hoist fleet`: three keys.
    let ci = root.join("ci.yaml");
    std::fs::write(
        &ci,
        format!(
            "environment: demo\nrepo:\n  url: file://{root}/config.git\n  branch: main\n  poll_interval: 1s\nstatus:\n  provider: file\n  path: {statuses}\n",
            root = root.display(),
            statuses = statuses.display()
        ),
    )
    .map_err(err)?;

    println!(
        "· three servers on this machine: {} (the canary), {} and {}, each with its own root, state dir and pm2 home",
        HOSTS[0], HOSTS[1], HOSTS[2]
    );
    println!(
        "· they coordinate only through commit statuses: status.provider file, one shared path ({})",
        statuses.display()
    );
    println!(
        "· apps/web.yaml rolls out in two waves: the canary, a bake of {BAKE}, then every other server"
    );
    let first = commit(&repo, "The environment's servers (fleet/demo.yaml)", None)?;

    let stop = Arc::new(AtomicBool::new(false));
    let wake = Arc::new(Notify::new());
    let mut loops = Vec::new();
    for s in &servers {
        let cfg = HostConfig::load(&s.dir.join("hoist.yaml")).map_err(err)?;
        let mut engine = crate::setup::engine(&cfg, Arc::new(Metrics::new()))
            .await
            .map_err(err)?;
        engine.recover().await.map_err(err)?;
        engine.stop = stop.clone();
        loops.push(tokio::spawn(serve(
            Arc::new(engine),
            stop.clone(),
            wake.clone(),
        )));
    }
    let running = Running { stop, wake, loops };
    let story = async {
        settled(&statuses, &first, |_, state| state == "success").await?;
        let cfg = HostConfig::load(&ci).map_err(err)?;
        let mut fleet = Fleet::open(&cfg).map_err(err)?;
        story(root, &repo, &servers, &statuses, &mut fleet).await
    };
    let result = story.await;
    println!("\n· stopping the servers");
    running.shutdown().await;
    result
}

/// Commits the inventory and, when given, `apps/web.yaml` on `main`.
fn commit(repo: &Repository, message: &str, web: Option<&str>) -> Result<String, String> {
    let mut files = vec![("fleet/demo.yaml".to_string(), INVENTORY.as_bytes().to_vec())];
    match web {
        Some(m) => files.push(("apps/web.yaml".into(), m.as_bytes().to_vec())),
        None => files.push(("apps/.keep".into(), Vec::new())),
    }
    let id = tree_of(repo, &files)?;
    let tree = repo.find_tree(id).map_err(err)?;
    commit_tree(repo, message, &tree)
}

/// Packs the sample app as `release` (crashing at start when `bad`);
/// returns (url, sha256).
fn pack(root: &Path, release: &str, bad: bool) -> Result<(String, String), String> {
    let build = root.join(format!("build-{release}"));
    let mut files: Vec<(&str, String)> = APP_FILES
        .iter()
        .map(|(n, t)| (*n, (*t).to_string()))
        .collect();
    files.push(("start.js", START_JS.to_string()));
    files.push(("RELEASE", format!("{release}\n")));
    if bad {
        for f in &mut files {
            if f.0 == "server.js" {
                f.1 = format!("{BAD_BUILD}{}", f.1);
            }
        }
    }
    for (name, text) in &files {
        let p = build.join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).map_err(err)?;
        }
        std::fs::write(&p, text).map_err(err)?;
    }
    let out = root.join(format!("store/web-{release}.tar.zst"));
    let sha = crate::producer::pack(&build, &out).map_err(err)?;
    std::fs::remove_dir_all(&build).map_err(err)?;
    Ok((format!("file://{}", out.display()), sha))
}

async fn story(
    root: &Path,
    repo: &Repository,
    servers: &[Server],
    statuses: &Path,
    fleet: &mut Fleet,
) -> Result<(), String> {
    println!("· packing the sample app as 1.0.0, 2.0.0 and a bad 2.1.0 into a file:// store");
    let (url1, sha1) = pack(root, "1.0.0", false)?;
    let (url2, sha2) = pack(root, "2.0.0", false)?;
    let (url3, sha3) = pack(root, "2.1.0", true)?;

    println!("\n== step 1: release 1.0.0, in waves");
    let c = commit(repo, "web 1.0.0", Some(&manifest("1.0.0", &url1, &sha1)))?;
    rolls_out(fleet, servers, &c, "1.0.0").await?;

    println!("\n== step 2: release 2.0.0: web-2 and web-3 serve 1.0.0 until the canary has baked");
    let c = commit(repo, "web 2.0.0", Some(&manifest("2.0.0", &url2, &sha2)))?;
    rolls_out(fleet, servers, &c, "2.0.0").await?;

    println!("\n== step 3: release 2.1.0, a bad build that crashes at start");
    let bad = commit(repo, "web 2.1.0", Some(&manifest("2.1.0", &url3, &sha3)))?;
    println!("· commit {} on main", short(&bad));
    let (snap, verdict) = watch(fleet, servers, &bad).await?;
    if verdict != Verdict::Halted {
        return Err(format!(
            "2.1.0 should have halted at the canary: {}",
            fleet::one_line(&snap)
        ));
    }
    println!("· the canary failed: the others report the halt and keep 2.0.0");
    settled(statuses, &bad, |host, state| {
        host == HOSTS[0] || state == "failure"
    })
    .await?;
    let snap = fleet.look(Some(&bad)).await.map_err(err)?;
    println!();
    fleet::print(&snap, false);
    answers(servers);
    for s in servers {
        if s.answers() != "web 2.0.0" {
            return Err(format!("{} should still serve 2.0.0", s.host));
        }
        if s.host != HOSTS[0] && s.releases().iter().any(|r| r == "2.1.0") {
            return Err(format!("2.1.0 reached {} past the halt", s.host));
        }
    }

    println!("\n== step 4: revert the bad commit");
    let c = revert_head(repo)?;
    rolls_out(fleet, servers, &c, "2.0.0").await?;

    println!(
        "\ndemo finished: releases went out in waves, the bad one stopped at the canary, and the revert turned every server green."
    );
    Ok(())
}

/// Watches `commit` until it is rolled out, printing `hoist fleet` along
/// the way; fails unless every server then serves `release`.
async fn rolls_out(
    fleet: &mut Fleet,
    servers: &[Server],
    commit: &str,
    release: &str,
) -> Result<(), String> {
    println!("· commit {} on main", short(commit));
    let (snap, verdict) = watch(fleet, servers, commit).await?;
    if verdict != Verdict::RolledOut {
        return Err(format!(
            "{release} did not roll out: {}",
            fleet::one_line(&snap)
        ));
    }
    println!();
    fleet::print(&snap, false);
    answers(servers);
    let want = format!("web {release}");
    match servers.iter().find(|s| s.answers() != want) {
        Some(s) => Err(format!("{} does not serve {release}", s.host)),
        None => Ok(()),
    }
}

/// `hoist fleet --wait` on `commit`: a line each time the picture changes,
/// and the whole picture (with what each server answers) while the others
/// wait for the canary's bake.
async fn watch(
    fleet: &mut Fleet,
    servers: &[Server],
    commit: &str,
) -> Result<(Snapshot, Verdict), String> {
    let mut shown_bake = false;
    let (snap, verdict) = fleet
        .wait(Some(commit), POLL, Some(STEP_LIMIT), |snap| {
            println!("  hoist fleet: {}", fleet::one_line(snap));
            if !shown_bake && baking(snap) && snap.verdict() == Verdict::InProgress {
                shown_bake = true;
                println!();
                fleet::print(snap, false);
                answers(servers);
                println!();
            }
        })
        .await
        .map_err(err)?;
    if verdict == Verdict::TimedOut {
        return Err(format!(
            "nothing settled within {}: {}",
            humantime::format_duration(STEP_LIMIT),
            fleet::one_line(&snap)
        ));
    }
    Ok((snap, verdict))
}

/// A wave waits for the bake of the one before it.
fn baking(snap: &Snapshot) -> bool {
    snap.apps.iter().any(|a| {
        a.progress
            .waves
            .iter()
            .any(|w| matches!(w.opening, Opening::Baking { .. }))
    })
}

fn answers(servers: &[Server]) {
    let line: Vec<String> = servers
        .iter()
        .map(|s| format!("{} answers \"{}\"", s.host, s.answers()))
        .collect();
    println!("  {}", line.join(" · "));
}

/// Waits until every server's latest status for `commit` in the shared
/// file satisfies `done(host, state)`.
async fn settled(
    statuses: &Path,
    commit: &str,
    done: impl Fn(&str, &str) -> bool,
) -> Result<(), String> {
    let t0 = Instant::now();
    loop {
        let text = std::fs::read_to_string(statuses).unwrap_or_default();
        let latest = |host: &str| {
            let context = format!("hoist/demo/{host}");
            text.lines()
                .rev()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter(|v| v["sha"] == commit && v["context"] == context.as_str())
                .find_map(|v| v["state"].as_str().map(str::to_string))
        };
        if HOSTS
            .iter()
            .all(|h| latest(h).is_some_and(|state| done(h, &state)))
        {
            return Ok(());
        }
        if t0.elapsed() > STEP_LIMIT {
            let now: Vec<String> = HOSTS
                .iter()
                .map(|h| format!("{h} {}", latest(h).unwrap_or_else(|| "nothing".into())))
                .collect();
            return Err(format!(
                "the servers did not report on {} in time: {}",
                short(commit),
                now.join(", ")
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn short(commit: &str) -> &str {
    &commit[..commit.len().min(12)]
}

/// A plain GET on 127.0.0.1 (the apps are this machine's): the body.
fn http_get(port: u16, path: &str) -> Option<String> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let (head, body) = buf.split_once("\r\n\r\n")?;
    (head.split_whitespace().nth(1) == Some("200")).then(|| body.trim().to_string())
}
