//! What a row deploys with: a config repository (bare + working clone, real
//! git), host configs, manifests, `hoist run` / `hoist once` as child
//! processes, and pm2 homes that are killed when the row ends.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::procs::{self, Guard, Tools};

pub fn git(dir: &Path, args: &[&str]) -> Result<String, String> {
    procs::run_ok(
        Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_AUTHOR_NAME", "bench")
            .env("GIT_AUTHOR_EMAIL", "bench@example.com")
            .env("GIT_COMMITTER_NAME", "bench")
            .env("GIT_COMMITTER_EMAIL", "bench@example.com"),
        Duration::from_secs(60),
    )
    .map(|s| s.trim().to_string())
}

/// A bare config repository `<dir>/<name>.git` and a working clone of it.
pub struct ConfigRepo {
    pub bare: PathBuf,
    pub work: PathBuf,
}

impl ConfigRepo {
    pub fn new(dir: &Path, name: &str) -> Result<ConfigRepo, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let bare = dir.join(format!("{name}.git"));
        let work = dir.join(format!("{name}-work"));
        git(
            dir,
            &[
                "init",
                "-q",
                "--bare",
                "-b",
                "main",
                &bare.to_string_lossy(),
            ],
        )?;
        git(
            dir,
            &[
                "clone",
                "-q",
                &bare.to_string_lossy(),
                &work.to_string_lossy(),
            ],
        )?;
        git(&work, &["checkout", "-q", "-b", "main"])?;
        std::fs::create_dir_all(work.join("apps")).map_err(|e| e.to_string())?;
        Ok(ConfigRepo { bare, work })
    }

    pub fn file_url(&self) -> String {
        format!("file://{}", self.bare.display())
    }

    pub fn write(&self, app: &str, manifest: &str) -> Result<(), String> {
        std::fs::write(self.work.join(format!("apps/{app}.yaml")), manifest)
            .map_err(|e| e.to_string())
    }

    /// Commits everything and pushes; returns the commit id.
    pub fn commit(&self, msg: &str) -> Result<String, String> {
        git(&self.work, &["add", "-A"])?;
        git(&self.work, &["commit", "-q", "--allow-empty", "-m", msg])?;
        git(&self.work, &["push", "-q", "origin", "HEAD:main"])?;
        git(&self.work, &["rev-parse", "HEAD"])
    }

    pub fn revert_head(&self) -> Result<String, String> {
        git(&self.work, &["revert", "--no-edit", "HEAD"])?;
        git(&self.work, &["push", "-q", "origin", "HEAD:main"])?;
        git(&self.work, &["rev-parse", "HEAD"])
    }
}

/// The parts of a host config the rows vary.
pub struct HostOpts<'a> {
    pub host: String,
    pub repo_url: String,
    pub poll: &'a str,
    pub jitter: &'a str,
    pub pm2_command: PathBuf,
    pub pm2_home: PathBuf,
    /// `""` disables the listener.
    pub listen: String,
    /// Extra top-level YAML (storage, status, webhook secret).
    pub extra: String,
}

/// One server's directories and host config under `dir`.
pub struct Host {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub state: PathBuf,
    pub root: PathBuf,
    pub pm2_home: PathBuf,
}

impl Host {
    pub fn new(dir: &Path, o: &HostOpts) -> Result<Host, String> {
        let h = Host {
            dir: dir.to_path_buf(),
            config: dir.join("hoist.yaml"),
            state: dir.join("state"),
            root: dir.join("srv"),
            pm2_home: o.pm2_home.clone(),
        };
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        h.write_config(o)?;
        Ok(h)
    }

    pub fn write_config(&self, o: &HostOpts) -> Result<(), String> {
        let text = format!(
            "host: {host}\nenvironment: bench\nroot: {root}\nstate_dir: {state}\nkeep_releases: 3\n\
             repo:\n  url: {url}\n  branch: main\n  poll_interval: {poll}\n  jitter: {jitter}\n\
             pm2:\n  command: {pm2}\n  home: {home}\nlisten: \"{listen}\"\nallow_http: true\n{extra}",
            host = o.host,
            root = self.root.display(),
            state = self.state.display(),
            url = o.repo_url,
            poll = o.poll,
            jitter = o.jitter,
            pm2 = o.pm2_command.display(),
            home = o.pm2_home.display(),
            listen = o.listen,
            extra = o.extra,
        );
        std::fs::write(&self.config, text).map_err(|e| e.to_string())
    }

    /// `hoist run` in the background, logging to `<dir>/daemon.log`.
    pub fn start(&self, tools: &Tools) -> Result<Guard, String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("daemon.log"))
            .map_err(|e| e.to_string())?;
        Guard::spawn(
            "hoist run",
            Command::new(&tools.hoist)
                .args(["run", "--config"])
                .arg(&self.config)
                .env("PM2_HOME", &self.pm2_home)
                .stdout(Stdio::from(log.try_clone().map_err(|e| e.to_string())?))
                .stderr(Stdio::from(log)),
        )
    }

    /// `hoist once`; returns its output, failing unless it exits 0.
    pub fn once(&self, tools: &Tools) -> Result<String, String> {
        let out = procs::run(
            Command::new(&tools.hoist)
                .args(["once", "--config"])
                .arg(&self.config)
                .env("PM2_HOME", &self.pm2_home),
            Duration::from_secs(600),
        )?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if !out.status.success() {
            return Err(format!("hoist once failed ({}): {text}", out.status));
        }
        Ok(text)
    }

    pub fn state_json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&std::fs::read(self.state.join("state.json")).ok()?).ok()
    }

    /// The release `app` runs, by hoist's state (state.json version 2:
    /// `apps.<app>.life.live.release` while it runs; version 1 had
    /// `apps.<app>.release`).
    pub fn release_of(&self, app: &str) -> Option<String> {
        let s = self.state_json()?;
        let a = &s["apps"][app];
        a["life"]["live"]["release"]
            .as_str()
            .or_else(|| a["release"].as_str())
            .map(str::to_string)
    }

    /// The `seconds` of the last `deploy` event in the history.
    pub fn last_deploy_seconds(&self) -> Option<f64> {
        let text = std::fs::read_to_string(self.state.join("history.jsonl")).ok()?;
        text.lines()
            .rev()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["event"] == "deploy" || v["kind"] == "deploy")
            .and_then(|v| v["seconds"].as_f64())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default()
    }
}

/// A manifest for one app running the sample app.
pub fn manifest(release: &str, url: &str, sha256: &str, pm2: &str, health: &str) -> String {
    format!(
        "release: \"{release}\"\nartifact:\n  url: {url}\n  sha256: {sha256}\npm2:\n{pm2}health:\n{health}"
    )
}

/// A pm2 entry running server.js in fork mode on `port`.
pub fn fork_app(name: &str, port: u16) -> String {
    format!(
        "  - name: {name}\n    script: server.js\n    env: {{ PORT: \"{port}\", APP_NAME: {name} }}\n"
    )
}

pub fn http_health(port: u16, stable: &str) -> String {
    format!("  http: http://127.0.0.1:{port}/healthz\n  timeout: 60s\n  stable_for: {stable}\n")
}

/// A pm2 home that is `pm2 kill`ed when dropped.
pub struct Pm2Home {
    pub pm2: PathBuf,
    pub home: PathBuf,
}

impl Pm2Home {
    pub fn new(pm2: &Path, home: PathBuf) -> Pm2Home {
        let _ = std::fs::create_dir_all(&home);
        Pm2Home {
            pm2: pm2.to_path_buf(),
            home,
        }
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(&self.pm2);
        c.env("PM2_HOME", &self.home);
        c
    }
}

impl Drop for Pm2Home {
    fn drop(&mut self) {
        let _ = procs::run(self.cmd().arg("kill"), Duration::from_secs(60));
    }
}

/// Writes the stand-in for pm2 used only by the rows about git polling
/// (many apps, many daemons): `jlist` prints the processes listed in
/// `$PM2_HOME/jlist.json`, all online; every other command succeeds and does
/// nothing. It keeps those rows about polling rather than about starting
/// thousands of node processes on two cores.
pub fn pm2_stub(dir: &Path, home: &Path, names: &[String]) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(home).map_err(|e| e.to_string())?;
    let procs: Vec<serde_json::Value> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            serde_json::json!({
                "name": n, "pm_id": i,
                "pm2_env": { "status": "online", "restart_time": 0, "pm_cwd": "/" }
            })
        })
        .collect();
    std::fs::write(
        home.join("jlist.json"),
        serde_json::to_string(&procs).map_err(|e| e.to_string())? + "\n",
    )
    .map_err(|e| e.to_string())?;
    let stub = dir.join("pm2-stub");
    std::fs::write(
        &stub,
        "#!/bin/sh\n# Stand-in for pm2 (benchmark rows about git polling only).\n\
         if [ \"$1\" = jlist ]; then cat \"$PM2_HOME/jlist.json\"; fi\nexit 0\n",
    )
    .map_err(|e| e.to_string())?;
    std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| e.to_string())?;
    Ok(stub)
}

/// A wrapper around the real pm2 that appends `<time> <args>` to `log` for
/// every call, then runs pm2 in its place (bash's `$EPOCHREALTIME`, no extra
/// process): the rows about several apps count the pm2 commands a deploy
/// runs, each a node process on the same two cores as the apps.
pub fn pm2_counting(dir: &Path, pm2: &Path, log: &Path) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let script = dir.join("pm2-counting");
    std::fs::write(
        &script,
        format!(
            "#!/bin/bash\n# Counts pm2 calls for the benchmark, then runs pm2.\n\
             printf '%s %s\\n' \"$EPOCHREALTIME\" \"$*\" >> '{}'\nexec '{}' \"$@\"\n",
            log.display(),
            pm2.display()
        ),
    )
    .map_err(|e| e.to_string())?;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| e.to_string())?;
    Ok(script)
}

/// The pm2 calls logged by [`pm2_counting`] from line `from` on, counted by
/// subcommand, e.g. `jlist 12, startOrReload 4`; and how many lines there are.
pub fn pm2_calls(log: &Path, from: usize) -> (String, usize) {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let mut by: std::collections::BTreeMap<String, usize> = Default::default();
    for l in lines.iter().skip(from) {
        let sub = l.split_whitespace().nth(1).unwrap_or("?").to_string();
        *by.entry(sub).or_default() += 1;
    }
    let shown = by
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ");
    (shown, lines.len())
}

/// The marker a manifest's pm2 `env` carries to make [`pm2_stub_crashing`]
/// report its process `errored`: a crash-looping release.
pub const CRASH_LOOP: &str = "HOIST_BENCH_CRASH_LOOP";

/// A pm2 stand-in like [`pm2_stub`] that can also fail a release, for the
/// rollout row: one process `name` per `$PM2_HOME` (one home per server),
/// listed `online` after a `startOrReload` of an ecosystem file, or
/// `errored` (what pm2 shows once it gives up on a process that keeps
/// crashing) when that file carries [`CRASH_LOOP`]; `delete` empties the
/// list. Each server's home is prepared by [`pm2_stub_home`].
pub fn pm2_stub_crashing(dir: &Path) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let stub = dir.join("pm2-stub-crashing");
    std::fs::write(
        &stub,
        format!(
            "#!/bin/sh\n# Stand-in for pm2 (benchmark rollout row only).\n\
             h=\"$PM2_HOME\"\n\
             case \"$1\" in\n\
             jlist) cat \"$h/jlist.json\" ;;\n\
             startOrReload)\n\
             \x20 if grep -q {CRASH_LOOP} \"$2\"; then s=errored; else s=online; fi\n\
             \x20 cp \"$h/$s.json\" \"$h/jlist.tmp\" && mv \"$h/jlist.tmp\" \"$h/jlist.json\" ;;\n\
             delete) echo '[]' > \"$h/jlist.tmp\" && mv \"$h/jlist.tmp\" \"$h/jlist.json\" ;;\n\
             esac\nexit 0\n"
        ),
    )
    .map_err(|e| e.to_string())?;
    std::fs::set_permissions(&stub, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| e.to_string())?;
    Ok(stub)
}

/// A pm2 home for [`pm2_stub_crashing`] running process `name`: nothing
/// listed yet.
pub fn pm2_stub_home(home: &Path, name: &str) -> Result<(), String> {
    std::fs::create_dir_all(home).map_err(|e| e.to_string())?;
    for status in ["online", "errored"] {
        let list = serde_json::json!([{
            "name": name, "pm_id": 0,
            "pm2_env": { "status": status, "restart_time": 0, "pm_cwd": "/" }
        }]);
        std::fs::write(home.join(format!("{status}.json")), format!("{list}\n"))
            .map_err(|e| e.to_string())?;
    }
    std::fs::write(home.join("jlist.json"), "[]\n").map_err(|e| e.to_string())
}
