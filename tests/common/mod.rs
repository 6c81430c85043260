//! The world builder for end-to-end tests: a real bare git config repo and a
//! working clone, a file:// store of release tarballs built from a tiny real
//! Node.js app, a pm2 home of the test's own, and a host config pointing the
//! real `hoist` binary at all of it. Dropping the world kills the daemon and
//! the test's pm2, so nothing outlives the test.
//!
//! The submodules run real remotes on 127.0.0.1 for tests/remotes.rs, each
//! stopped when dropped: `git_http` (git http-backend behind a token, run
//! by `git_cgi`),
//! `sshd` (OpenSSH), `s3` (s3s-fs, SigV4), `forge` (a strict fake of the
//! three status APIs) and `serve` (plain or TLS serving, and the test CA).
//! `fleet` builds several servers on this machine for tests/rollout.rs.
//! `raw_tar` writes the hostile archives of tests/hostile.rs. `shipped`
//! runs hoist exactly as the systemd unit does (its user, capabilities and
//! umask, the apps as a second user), for tests/least_privilege.rs.

#![allow(dead_code)]

pub mod fleet;
pub mod forge;
pub mod git_cgi;
pub mod git_http;
pub mod links;
pub mod raw_tar;
pub mod s3;
pub mod serve;
pub mod shipped;
pub mod sshd;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const APP_JS: &str = r#"
const http = require('http');
const fs = require('fs');
const path = require('path');
const here = __dirname;
if (fs.existsSync(path.join(here, 'CRASH'))) { console.error('crashing on purpose'); process.exit(1); }
const version = fs.readFileSync(path.join(here, 'VERSION'), 'utf8').trim();
const unhealthy = fs.existsSync(path.join(here, 'UNHEALTHY'));
http.createServer((req, res) => {
  if (req.url === '/healthz') { res.writeHead(unhealthy ? 500 : 200); res.end(unhealthy ? 'sick' : 'ok'); return; }
  if (req.url === '/env') { let v = ''; try { v = fs.readFileSync(path.join(process.cwd(), '.env'), 'utf8'); } catch (e) {} res.end(v); return; }
  if (req.url === '/cwd') { res.end(process.cwd()); return; }
  if (req.url === '/procenv') { res.end(JSON.stringify(process.env)); return; }
  if (req.url === '/uid') { res.end(String(process.getuid())); return; }
  if (req.url === '/caps') {
    const st = fs.readFileSync('/proc/self/status', 'utf8');
    res.end(st.split('\n').filter(l => l.startsWith('Cap')).join('\n'));
    return;
  }
  if (req.url.startsWith('/write?p=')) {
    try { fs.writeFileSync(decodeURIComponent(req.url.slice(9)), 'written by the app\n'); res.end('ok'); }
    catch (e) { res.writeHead(403); res.end(e.code || 'error'); }
    return;
  }
  if (req.url.startsWith('/symlink?')) {
    const q = new URL(req.url, 'http://x').searchParams;
    try { fs.symlinkSync(q.get('t'), q.get('p')); res.end('ok'); }
    catch (e) { res.writeHead(403); res.end(e.code || 'error'); }
    return;
  }
  if (req.url.startsWith('/read?p=')) {
    try { res.end(fs.readFileSync(decodeURIComponent(req.url.slice(8)), 'utf8')); }
    catch (e) { res.writeHead(403); res.end(e.code || 'error'); }
    return;
  }
  res.end(version);
}).listen(Number(process.env.PORT), '127.0.0.1');
"#;

/// The hoist binary under test: `HOIST_TEST_BIN` when set (a copy taken
/// right after the build, for a target dir other checkouts build into too),
/// else the one cargo built for this test.
pub fn hoist_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("HOIST_TEST_BIN") {
        return PathBuf::from(p);
    }
    PathBuf::from(env!("CARGO_BIN_EXE_hoist"))
}

/// The pm2 the test suite uses: `HOIST_TEST_PM2` (set by scripts/test.sh),
/// else the project's local install, else `pm2` on PATH.
pub fn pm2_bin() -> PathBuf {
    if let Ok(p) = std::env::var("HOIST_TEST_PM2") {
        return PathBuf::from(p);
    }
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/pm2/node_modules/.bin/pm2");
    if local.exists() {
        return local;
    }
    PathBuf::from("pm2")
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "CI")
        .env("GIT_AUTHOR_EMAIL", "ci@example.com")
        .env("GIT_COMMITTER_NAME", "CI")
        .env("GIT_COMMITTER_EMAIL", "ci@example.com")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A plain HTTP GET on 127.0.0.1; None when nothing answers.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = std::net::TcpStream::connect_timeout(
        &format!("127.0.0.1:{port}").parse().unwrap(),
        Duration::from_secs(2),
    )
    .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let status: u16 = buf.split_whitespace().nth(1)?.parse().ok()?;
    let body = buf
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or("")
        .trim()
        .to_string();
    Some((status, body))
}

pub struct World {
    pub dir: tempfile::TempDir,
    pub host: String,
    pub app_port: u16,
    pub daemon: Option<Child>,
    pub pm2: PathBuf,
    pub keep_releases: u32,
    pub extra_config: String,
    /// `repo.url`; None is the world's bare repo as `file://`.
    pub repo_url: Option<String>,
    /// More `repo:` keys, each line indented by two spaces.
    pub repo_extra: String,
    /// Replaces the `status:` section (provider file) when set.
    pub status_config: Option<String>,
}

impl World {
    pub fn new() -> World {
        let dir = tempfile::Builder::new()
            .prefix("hoist-test-")
            .tempdir()
            .unwrap();
        let w = World {
            dir,
            host: "web-1".into(),
            app_port: free_port(),
            daemon: None,
            pm2: pm2_bin(),
            keep_releases: 3,
            extra_config: String::new(),
            repo_url: None,
            repo_extra: String::new(),
            status_config: None,
        };
        for d in ["store", "srv", "state", "pm2home"] {
            std::fs::create_dir_all(w.path(d)).unwrap();
        }
        let bare = w.path("config.git");
        git(
            w.dir.path(),
            &["init", "-q", "--bare", "-b", "main", bare.to_str().unwrap()],
        );
        git(
            w.dir.path(),
            &[
                "clone",
                "-q",
                bare.to_str().unwrap(),
                w.path("work").to_str().unwrap(),
            ],
        );
        // As a user's repository would, the manifest folder is in every
        // commit, apps or none (a commit without it is refused).
        std::fs::create_dir_all(w.path("work/apps")).unwrap();
        std::fs::write(w.path("work/apps/.keep"), "").unwrap();
        w.write_config();
        w
    }

    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    pub fn config_path(&self) -> PathBuf {
        self.path("hoist.yaml")
    }

    pub fn write_config(&self) {
        let root = self.dir.path().display().to_string();
        let repo_url = self
            .repo_url
            .clone()
            .unwrap_or_else(|| format!("file://{root}/config.git"));
        let status = self.status_config.clone().unwrap_or_else(|| {
            format!("status:\n  provider: file\n  path: {root}/statuses.jsonl\n")
        });
        let text = format!(
            "host: {host}\nlabels: [web]\nenvironment: test\nroot: {root}/srv\nstate_dir: {root}/state\nkeep_releases: {keep}\nrepo:\n  url: {repo_url}\n  branch: main\n  poll_interval: 1s\n  jitter: 0s\n{repo_extra}{status}pm2:\n  command: {pm2}\n  home: {root}/pm2home\nlisten: \"\"\n{extra}",
            host = self.host,
            keep = self.keep_releases,
            repo_extra = self.repo_extra,
            pm2 = self.pm2.display(),
            extra = self.extra_config,
        );
        std::fs::write(self.config_path(), text).unwrap();
    }

    /// Packs the test app as a release into the store; returns (url, sha256).
    /// `zst` picks the format; markers are empty files (CRASH, UNHEALTHY).
    pub fn make_release(&self, version: &str, zst: bool, markers: &[&str]) -> (String, String) {
        let build = self.path(&format!("build-{version}"));
        std::fs::create_dir_all(&build).unwrap();
        std::fs::write(build.join("server.js"), APP_JS).unwrap();
        std::fs::write(build.join("VERSION"), format!("{version}\n")).unwrap();
        for m in markers {
            std::fs::write(build.join(m), "1\n").unwrap();
        }
        if zst {
            let out = self.path(&format!("store/web-{version}.tar.zst"));
            let sha = hoist::producer::pack(&build, &out).unwrap();
            (format!("file://{}", out.display()), sha)
        } else {
            let out = self.path(&format!("store/web-{version}.tar.gz"));
            let f = std::fs::File::create(&out).unwrap();
            let gz = flate2::write::GzEncoder::new(f, flate2::Compression::default());
            let mut t = tar::Builder::new(gz);
            t.append_dir_all(".", &build).unwrap();
            t.into_inner().unwrap().finish().unwrap();
            let bytes = std::fs::read(&out).unwrap();
            use sha2::Digest;
            (
                format!("file://{}", out.display()),
                hex::encode(sha2::Sha256::digest(&bytes)),
            )
        }
    }

    pub fn manifest(&self, app: &str, release: &str, url: &str, sha: &str, extra: &str) {
        let text = format!(
            "release: \"{release}\"\nartifact:\n  url: {url}\n  sha256: {sha}\nshared: [.env]\npm2:\n  - name: {app}\n    script: server.js\n    env: {{ PORT: \"{port}\" }}\nhealth:\n  http: http://127.0.0.1:{port}/healthz\n  timeout: 15s\n  stable_for: 1s\n{extra}",
            port = self.app_port
        );
        std::fs::write(self.path(&format!("work/apps/{app}.yaml")), text).unwrap();
    }

    pub fn commit(&self, msg: &str) -> String {
        let work = self.path("work");
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-q", "--allow-empty", "-m", msg]);
        git(&work, &["push", "-q", "origin", "HEAD:main"]);
        git(&work, &["rev-parse", "HEAD"])
    }

    pub fn revert_head(&self) -> String {
        let work = self.path("work");
        git(&work, &["revert", "--no-edit", "HEAD"]);
        git(&work, &["push", "-q", "origin", "HEAD:main"]);
        git(&work, &["rev-parse", "HEAD"])
    }

    pub fn hoist(&self, args: &[&str]) -> Output {
        self.hoist_env(args, &[])
    }

    pub fn hoist_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut cmd = Command::new(hoist_bin());
        cmd.args(args)
            .arg("--config")
            .arg(self.config_path())
            .env("PM2_HOME", self.path("pm2home"))
            .env_remove("HOIST_FAULT_AT");
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().expect("hoist runs")
    }

    /// `hoist once`, asserting its exit code; returns stdout+stderr.
    pub fn once(&self, expect: i32) -> String {
        let out = self.hoist(&["once"]);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(expect), "hoist once: {text}");
        text
    }

    pub fn start_daemon(&mut self) {
        let log = std::fs::File::create(self.path("daemon.log")).unwrap();
        let child = Command::new(hoist_bin())
            .args(["run", "--config"])
            .arg(self.config_path())
            .env("PM2_HOME", self.path("pm2home"))
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        self.daemon = Some(child);
    }

    pub fn stop_daemon(&mut self) -> Option<i32> {
        let mut child = self.daemon.take()?;
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let t0 = Instant::now();
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                return st.code();
            }
            if t0.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.path("daemon.log")).unwrap_or_default()
    }

    pub fn app_says(&self) -> Option<String> {
        http_get(self.app_port, "/").map(|(_, b)| b)
    }

    pub fn current_target(&self, app: &str) -> Option<String> {
        std::fs::read_link(self.path(&format!("srv/{app}/current")))
            .ok()
            .map(|p| p.to_string_lossy().into_owned())
    }

    pub fn releases_on_disk(&self, app: &str) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.path(&format!("srv/{app}/releases")))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Every status posted, as (sha, state, context, description).
    pub fn statuses(&self) -> Vec<(String, String, String, String)> {
        let text = std::fs::read_to_string(self.path("statuses.jsonl")).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .map(|v| {
                let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
                (s("sha"), s("state"), s("context"), s("description"))
            })
            .collect()
    }

    /// The last state posted for a commit.
    pub fn final_status(&self, sha: &str) -> Option<(String, String)> {
        self.statuses()
            .into_iter()
            .rev()
            .find(|s| s.0 == sha)
            .map(|s| (s.1, s.3))
    }

    pub fn pm2_list(&self) -> Vec<serde_json::Value> {
        let out = Command::new(&self.pm2)
            .arg("jlist")
            .env("PM2_HOME", self.path("pm2home"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .rev()
            .find(|l| l.trim_start().starts_with("[{") || l.trim() == "[]")
            .and_then(|l| serde_json::from_str::<Vec<serde_json::Value>>(l).ok())
            .unwrap_or_default()
    }

    pub fn state_json(&self) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.path("state/state.json")).unwrap()).unwrap()
    }

    /// `hoist status --json`: per app, what runs (release, previous,
    /// commit, failed, and the change in flight as `switching`).
    pub fn status_json(&self) -> serde_json::Value {
        let out = self.hoist(&["status", "--json"]);
        assert!(out.status.success(), "hoist status: {out:?}");
        serde_json::from_slice(&out.stdout).expect("hoist status --json prints JSON")
    }

    pub fn history(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.path("state/history.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
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

    /// Paths under the world's root that are neither the app dirs' expected
    /// contents nor anything else hoist should leave: staging or trash dirs.
    pub fn leftovers(&self, app: &str) -> Vec<String> {
        std::fs::read_dir(self.path(&format!("srv/{app}")))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with('.'))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let home = self.path("pm2home");
        stop_server(&mut self.daemon, &self.pm2, &home);
        keep_if_asked(&mut self.dir, "test world");
    }
}

/// Stops one test server: its daemon, then its pm2 (and so its apps).
pub fn stop_server(daemon: &mut Option<Child>, pm2: &Path, pm2_home: &Path) {
    if let Some(mut c) = daemon.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
    let _ = Command::new(pm2)
        .arg("kill")
        .env("PM2_HOME", pm2_home)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Leaves `dir` on disk when `HOIST_TEST_KEEP` is set (to look at after a
/// failure); otherwise it is removed as usual.
pub fn keep_if_asked(dir: &mut tempfile::TempDir, what: &str) {
    if std::env::var_os("HOIST_TEST_KEEP").is_some() {
        eprintln!("kept {what} {}", dir.path().display());
        std::mem::forget(std::mem::replace(dir, tempfile::tempdir().unwrap()));
    }
}
