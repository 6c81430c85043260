//! A fleet on this machine for the rollout tests: several servers, each a
//! real `hoist run` with its own root, state dir, pm2 home and app port,
//! all following one config repository (a real bare git repo, with the
//! environment's inventory `fleet/test.yaml`) and coordinating through one
//! status store: a fake forge of the given shape, or one `file` provider
//! path they share. Everything lives in one temporary directory, removed
//! when the fleet is dropped (daemons and pm2s killed first).
//!
//! The app is a tiny real Node server. Every server's copy listens on the
//! port its own `shared/.env` names (one manifest serves them all), and a
//! release crashes at start when it holds a `CRASH` file (a bad build, on
//! every server) or when that server's `.env` has the line
//! `CRASH=<release>` (a fault of one server, which `hoist retry` after a
//! fix gets past).

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::forge::{FakeForge, Flavor};
use super::{free_port, git, hoist_bin, http_get, pm2_bin};

const APP_JS: &str = r#"
const http = require('http');
const fs = require('fs');
const path = require('path');
const here = __dirname;
if (fs.existsSync(path.join(here, 'CRASH'))) { console.error('a bad build'); process.exit(1); }
const version = fs.readFileSync(path.join(here, 'VERSION'), 'utf8').trim();
let env = '';
try { env = fs.readFileSync(path.join(process.cwd(), '.env'), 'utf8'); } catch (e) {}
const lines = env.split('\n').map(l => l.trim());
if (lines.includes('CRASH=' + version)) { console.error('a fault of this server'); process.exit(1); }
const port = Number((lines.find(l => l.startsWith('PORT=')) || '').slice(5));
http.createServer((req, res) => { res.end(version); }).listen(port, '127.0.0.1');
"#;

pub const FORGE_TOKEN: &str = "forge-token-rollout-51c9";

/// Where the fleet's statuses go and are read back from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Statuses {
    Forge(Flavor),
    /// Provider `file`, one path shared by every server.
    File,
}

pub struct Server {
    pub host: String,
    pub dir: PathBuf,
    pub app_port: u16,
    pub daemon: Option<Child>,
}

impl Server {
    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.join(p)
    }

    pub fn config_path(&self) -> PathBuf {
        self.path("hoist.yaml")
    }

    /// What its app answers on `/` (the release), if it answers.
    pub fn serves(&self) -> Option<String> {
        http_get(self.app_port, "/").map(|(_, b)| b)
    }

    pub fn current(&self) -> Option<String> {
        std::fs::read_link(self.path("srv/web/current"))
            .ok()
            .map(|p| p.to_string_lossy().into_owned())
    }

    /// The release directories on its disk.
    pub fn releases(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.path("srv/web/releases"))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Its `shared/.env`: its port, and any extra lines.
    pub fn write_env(&self, extra: &str) {
        std::fs::create_dir_all(self.path("srv/web/shared")).unwrap();
        std::fs::write(
            self.path("srv/web/shared/.env"),
            format!("PORT={}\n{extra}", self.app_port),
        )
        .unwrap();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.path("daemon.log")).unwrap_or_default()
    }

    /// Runs `hoist ARGS --config <its config>`.
    pub fn hoist(&self, args: &[&str]) -> Output {
        Command::new(hoist_bin())
            .args(args)
            .arg("--config")
            .arg(self.config_path())
            .env("PM2_HOME", self.path("pm2home"))
            .output()
            .expect("hoist runs")
    }
}

pub struct Fleet {
    pub dir: tempfile::TempDir,
    pub statuses: Statuses,
    pub forge: Option<FakeForge>,
    pub servers: Vec<Server>,
    pm2: PathBuf,
    /// Statuses of other systems stored on each commit before it is
    /// pushed, so that reading a commit takes several pages.
    pub noise: usize,
}

impl Fleet {
    /// `hosts` servers `web-1` (the canary) .. `web-N`, listed in the
    /// inventory; nothing running yet.
    pub fn new(statuses: Statuses, hosts: usize) -> Fleet {
        let dir = tempfile::Builder::new()
            .prefix("hoist-fleet-test-")
            .tempdir()
            .unwrap();
        let forge = match statuses {
            Statuses::Forge(flavor) => Some(FakeForge::start(flavor, FORGE_TOKEN, None)),
            Statuses::File => None,
        };
        let root = dir.path().to_path_buf();
        std::fs::write(root.join("forge-token"), FORGE_TOKEN).unwrap();
        std::fs::create_dir_all(root.join("store")).unwrap();
        let bare = root.join("config.git");
        git(
            &root,
            &["init", "-q", "--bare", "-b", "main", bare.to_str().unwrap()],
        );
        git(
            &root,
            &[
                "clone",
                "-q",
                bare.to_str().unwrap(),
                root.join("work").to_str().unwrap(),
            ],
        );
        std::fs::create_dir_all(root.join("work/apps")).unwrap();
        std::fs::write(root.join("work/apps/.keep"), "").unwrap();
        std::fs::create_dir_all(root.join("work/fleet")).unwrap();
        let mut inventory = String::from("hosts:\n");
        let mut servers = Vec::new();
        for i in 1..=hosts {
            let host = format!("web-{i}");
            let labels = if i == 1 { "[web, canary]" } else { "[web]" };
            inventory.push_str(&format!("  {host}: {{ labels: {labels} }}\n"));
            let s = Server {
                dir: root.join(&host),
                host,
                app_port: free_port(),
                daemon: None,
            };
            for d in ["srv", "state", "pm2home"] {
                std::fs::create_dir_all(s.path(d)).unwrap();
            }
            s.write_env("");
            servers.push(s);
        }
        std::fs::write(root.join("work/fleet/test.yaml"), inventory).unwrap();
        let fleet = Fleet {
            dir,
            statuses,
            forge,
            servers,
            pm2: pm2_bin(),
            noise: 0,
        };
        for s in &fleet.servers {
            std::fs::write(s.config_path(), fleet.host_config(&s.host, s)).unwrap();
        }
        std::fs::write(fleet.path("ci.yaml"), fleet.ci_config()).unwrap();
        fleet.commit("the environment's inventory");
        fleet
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    pub fn server(&self, host: &str) -> &Server {
        self.servers
            .iter()
            .find(|s| s.host == host)
            .expect("a server of the fleet")
    }

    fn status_config(&self) -> String {
        match &self.forge {
            Some(f) => f.status_config(&self.path("forge-token")),
            None => format!(
                "status:\n  provider: file\n  path: {}\n",
                self.path("statuses.jsonl").display()
            ),
        }
    }

    fn host_config(&self, host: &str, s: &Server) -> String {
        format!(
            "host: {host}\nlabels: [web]\nenvironment: test\nroot: {}\nstate_dir: {}\nrepo:\n  url: file://{}\n  branch: main\n  poll_interval: 1s\n  jitter: 0s\n{}pm2:\n  command: {}\n  home: {}\nlisten: \"\"\nallow_http: true\n",
            s.path("srv").display(),
            s.path("state").display(),
            self.path("config.git").display(),
            self.status_config(),
            self.pm2.display(),
            s.path("pm2home").display(),
        )
    }

    /// What a promotion pipeline gives `hoist fleet`: three keys.
    fn ci_config(&self) -> String {
        format!(
            "environment: test\nrepo:\n  url: file://{}\n  poll_interval: 1s\n{}allow_http: true\n",
            self.path("config.git").display(),
            self.status_config()
        )
    }

    /// Packs the app as `release` (markers: empty files such as `CRASH`);
    /// returns (url, sha256).
    pub fn build(&self, release: &str, markers: &[&str]) -> (String, String) {
        let build = self.path(&format!("build-{release}"));
        std::fs::create_dir_all(&build).unwrap();
        std::fs::write(build.join("server.js"), APP_JS).unwrap();
        std::fs::write(build.join("VERSION"), format!("{release}\n")).unwrap();
        for m in markers {
            std::fs::write(build.join(m), "1\n").unwrap();
        }
        let out = self.path(&format!("store/web-{release}.tar.zst"));
        let sha = hoist::producer::pack(&build, &out).unwrap();
        std::fs::remove_dir_all(&build).unwrap();
        (format!("file://{}", out.display()), sha)
    }

    /// Writes `apps/web.yaml` asking `release` with `rollout` (YAML of the
    /// `rollout:` section, indented), and commits it.
    pub fn release(&self, release: &str, markers: &[&str], rollout: &str) -> String {
        let (url, sha) = self.build(release, markers);
        let text = format!(
            "release: \"{release}\"\nartifact:\n  url: {url}\n  sha256: {sha}\nshared: [.env]\npm2:\n  - name: web\n    script: server.js\nhealth:\n  timeout: 20s\n  stable_for: 2s\nrollout:\n{rollout}"
        );
        std::fs::write(self.path("work/apps/web.yaml"), text).unwrap();
        self.commit(&format!("web {release}"))
    }

    /// Commits the work tree and pushes it; returns the commit.
    pub fn commit(&self, msg: &str) -> String {
        let work = self.path("work");
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-q", "--allow-empty", "-m", msg]);
        let sha = git(&work, &["rev-parse", "HEAD"]);
        self.seed_noise(&sha);
        git(&work, &["push", "-q", "origin", "HEAD:main"]);
        sha
    }

    /// `git revert` of the last commit, pushed.
    pub fn revert(&self) -> String {
        let work = self.path("work");
        git(&work, &["revert", "--no-edit", "HEAD"]);
        let sha = git(&work, &["rev-parse", "HEAD"]);
        self.seed_noise(&sha);
        git(&work, &["push", "-q", "origin", "HEAD:main"]);
        sha
    }

    fn seed_noise(&self, sha: &str) {
        if let Some(f) = &self.forge {
            for i in 0..self.noise {
                f.seed(sha, &format!("ci/check-{i:03}"), "success", "passed");
            }
        }
    }

    pub fn start(&mut self) {
        for s in &mut self.servers {
            let log = std::fs::File::create(s.path("daemon.log")).unwrap();
            s.daemon = Some(spawn_daemon(s, log));
        }
    }

    /// `kill -9` of `host`'s daemon (its pm2 and apps go on).
    pub fn kill9(&mut self, host: &str) {
        let s = self
            .servers
            .iter_mut()
            .find(|s| s.host == host)
            .expect("a server of the fleet");
        let mut child = s.daemon.take().expect("a daemon runs");
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9)
        );
    }

    /// Starts `host`'s daemon again, its log going on where it was.
    pub fn restart(&mut self, host: &str) {
        let s = self
            .servers
            .iter_mut()
            .find(|s| s.host == host)
            .expect("a server of the fleet");
        assert!(s.daemon.is_none(), "{host} still runs");
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(s.path("daemon.log"))
            .unwrap();
        s.daemon = Some(spawn_daemon(s, log));
    }

    /// Every status the servers posted for `commit` (context, state,
    /// description), oldest first, whichever store holds them (GitLab's
    /// `failed` read as `failure`).
    pub fn posted(&self, commit: &str) -> Vec<(String, String, String)> {
        let norm = |s: String| if s == "failed" { "failure".into() } else { s };
        match &self.forge {
            Some(f) => f
                .accepted()
                .into_iter()
                .filter(|a| a.sha == commit && a.context.starts_with("hoist/"))
                .map(|a| (a.context, norm(a.state), a.description))
                .collect(),
            None => std::fs::read_to_string(self.path("statuses.jsonl"))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .filter(|v| v["sha"] == commit)
                .map(|v| {
                    let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
                    (s("context"), s("state"), s("description"))
                })
                .collect(),
        }
    }

    /// What `host` posted for `commit`: (state, description), oldest first.
    pub fn posted_by(&self, commit: &str, host: &str) -> Vec<(String, String)> {
        let context = format!("hoist/test/{host}");
        self.posted(commit)
            .into_iter()
            .filter(|p| p.0 == context)
            .map(|p| (p.1, p.2))
            .collect()
    }

    /// The last state `host` posted for `commit`.
    pub fn state_of(&self, commit: &str, host: &str) -> Option<String> {
        self.posted_by(commit, host).pop().map(|p| p.0)
    }

    /// `hoist fleet ARGS` with the pipeline's config.
    pub fn fleet_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(hoist_bin());
        cmd.arg("fleet")
            .args(args)
            .arg("--config")
            .arg(self.path("ci.yaml"));
        cmd
    }

    pub fn wait_for(&self, timeout: Duration, mut pred: impl FnMut() -> bool) -> bool {
        let t0 = Instant::now();
        while t0.elapsed() < timeout {
            if pred() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    /// The daemons' logs, for failure messages.
    pub fn logs(&self) -> String {
        self.servers
            .iter()
            .map(|s| format!("==== {} ====\n{}", s.host, tail(&s.log(), 60)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn spawn_daemon(s: &Server, log: std::fs::File) -> Child {
    Command::new(hoist_bin())
        .args(["run", "--config"])
        .arg(s.config_path())
        .env("PM2_HOME", s.path("pm2home"))
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap()
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for s in &mut self.servers {
            let home = s.path("pm2home");
            super::stop_server(&mut s.daemon, &self.pm2, &home);
        }
        super::keep_if_asked(&mut self.dir, "test fleet");
    }
}
