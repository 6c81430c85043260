//! The process manager seam: pm2, driven through its CLI, and the health
//! gate that decides whether a release may stay live.
//!
//! hoist writes one ecosystem file per app (`<root>/.ecosystems/<app>.json`)
//! whose every process has `cwd` set to `<root>/<app>/current` — the symlink,
//! never the resolved release — so pm2 always starts what `current` points at,
//! and a reload after a swap picks up the new release. `startOrReload
//! --update-env` then gives cluster-mode apps pm2's zero-downtime reload.

use crate::config::{Health, Manifest};
use futures::future::BoxFuture;
use serde_json::{Map, Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::process::Command;
use tokio::time::Instant;

#[derive(Debug, thiserror::Error)]
pub enum Pm2Error {
    #[error("cannot run pm2 ({command}): {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("pm2 {args} failed: {message}")]
    Failed { args: String, message: String },
    #[error("pm2 {args} did not finish within {secs}s")]
    Timeout { args: String, secs: u64 },
    #[error("cannot write the ecosystem file {path}: {source}")]
    Ecosystem {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("pm2 jlist gave output that is not JSON")]
    BadJson,
}

/// A pm2 process as `pm2 jlist` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Proc {
    pub name: String,
    pub pm_id: i64,
    pub status: String,
    pub restarts: i64,
    pub cwd: String,
    pub hoist_app: Option<String>,
}

/// The process-manager seam: what the engine asks of pm2. The real one
/// drives the pm2 CLI ([`Pm2`]); the engine's unit tests use an in-memory
/// one, so the step machine can be tested without node.
pub trait ProcessManager: Send + Sync + std::fmt::Debug {
    /// Starts or reloads the app's processes so they run `release` from the
    /// `current` link, as `manifest` defines them.
    fn start_or_reload<'a>(
        &'a self,
        app: &'a str,
        current: &'a Path,
        release: &'a str,
        manifest: &'a Manifest,
    ) -> BoxFuture<'a, Result<(), Pm2Error>>;

    /// Deletes processes by name; names it does not know are not an error.
    fn delete<'a>(&'a self, names: &'a [String]) -> BoxFuture<'a, Result<(), Pm2Error>>;

    /// Every process it runs.
    fn list(&self) -> BoxFuture<'_, Result<Vec<Proc>, Pm2Error>>;
}

/// The environment variables of hoist's own that pm2, the apps and the
/// hooks may see. Everything else hoist was started with (`AWS_*`,
/// `CREDENTIALS_DIRECTORY`, `HOIST_*`, `NOTIFY_SOCKET`, ...) stays with
/// hoist: an internet-facing app must never hold the deployer's keys.
pub const ENV_ALLOWLIST: &[&str] = &[
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TERM",
];

/// Whether a variable of hoist's environment may be passed on to the apps.
pub fn env_allowed(name: &str) -> bool {
    ENV_ALLOWLIST.contains(&name) || name.starts_with("LC_")
}

/// What every child hoist starts for an app (pm2, hooks) gets: an
/// environment cleared down to [`ENV_ALLOWLIST`] (plus the `LC_*` locale
/// variables; callers add what the child needs on top), and none of
/// hoist's capabilities. The shipped unit gives hoist CAP_SETUID,
/// CAP_SETGID, CAP_CHOWN and CAP_KILL as ambient capabilities, which a
/// child would otherwise inherit, even after switching to another user.
pub fn isolate(cmd: &mut Command) {
    cmd.env_clear();
    for (k, v) in std::env::vars_os() {
        if k.to_str().is_some_and(env_allowed) {
            cmd.env(k, v);
        }
    }
    // SAFETY: prctl is a plain system call, safe between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let rc = libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            );
            // EINVAL: a kernel without ambient capabilities has none to clear.
            if rc != 0 && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINVAL) {
                return Err(std::io::Error::last_os_error());
            }
            clear_inheritable()
        });
    }
}

/// Empties the inheritable capability set (lowering it needs no privilege),
/// so no program with inheritable file capabilities can pick hoist's up.
fn clear_inheritable() -> std::io::Result<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let mut header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: capget/capset with a version 3 header read and write exactly
    // two Data structs, which `data` holds.
    unsafe {
        if libc::syscall(libc::SYS_capget, &mut header, data.as_mut_ptr()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if data.iter().all(|d| d.inheritable == 0) {
            return Ok(());
        }
        for d in &mut data {
            d.inheritable = 0;
        }
        if libc::syscall(libc::SYS_capset, &mut header, data.as_ptr()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// `pm2.user`: the user pm2, the apps and the hooks run as, resolved at
/// start (SPEC §1). hoist needs CAP_SETUID and CAP_SETGID to start them as
/// that user, and CAP_CHOWN to hand it the files it owns (secrets, shared
/// directories, its pm2 home).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// Its supplementary groups: hoist's own (root's) are dropped.
    pub groups: Vec<u32>,
    pub home: PathBuf,
}

impl RunAs {
    /// Looks `name` up in the user database.
    pub fn lookup(name: &str) -> Result<RunAs, String> {
        let user = nix::unistd::User::from_name(name)
            .map_err(|e| format!("cannot look up pm2.user {name}: {e}"))?
            .ok_or_else(|| format!("pm2.user {name} does not exist on this server"))?;
        let cname = std::ffi::CString::new(name).map_err(|e| e.to_string())?;
        let groups = nix::unistd::getgrouplist(&cname, user.gid)
            .map(|g| g.into_iter().map(|g| g.as_raw()).collect())
            .unwrap_or_else(|_| vec![user.gid.as_raw()]);
        Ok(RunAs {
            name: name.to_string(),
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
            groups,
            home: user.dir,
        })
    }

    /// Makes `cmd` start as this user, with its home and groups.
    pub fn apply(&self, cmd: &mut Command) {
        cmd.env("HOME", &self.home)
            .env("USER", &self.name)
            .env("LOGNAME", &self.name);
        let groups: Vec<nix::unistd::Gid> = self
            .groups
            .iter()
            .map(|g| nix::unistd::Gid::from_raw(*g))
            .collect();
        let gid = nix::unistd::Gid::from_raw(self.gid);
        let uid = nix::unistd::Uid::from_raw(self.uid);
        // Groups first, then the group, then the user: once the user is
        // changed, nothing else may be. (std's own uid()/gid() would drop
        // every supplementary group, the user's own too.)
        // SAFETY: setgroups, setgid and setuid are plain system calls, safe
        // between fork and exec; everything they use was built before.
        unsafe {
            cmd.pre_exec(move || {
                nix::unistd::setgroups(&groups)?;
                nix::unistd::setgid(gid)?;
                nix::unistd::setuid(uid)?;
                Ok(())
            });
        }
    }

    /// Its ids, as the owner of what hoist hands over.
    pub fn owner(&self) -> crate::safe_fs::Owner {
        crate::safe_fs::Owner {
            uid: self.uid,
            gid: self.gid,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Pm2 {
    command: String,
    home: Option<PathBuf>,
    ecosystem_dir: PathBuf,
    run_as: Option<Arc<RunAs>>,
    /// The last `pm2 jlist` and when it started, shared by every caller
    /// (see [`Pm2::jlist`]).
    listed: Arc<tokio::sync::Mutex<Option<Listed>>>,
}

/// A `pm2 jlist`: when it started, and what it showed.
type Listed = (Instant, Vec<Proc>);

const PM2_TIMEOUT: Duration = Duration::from_secs(180);

impl Pm2 {
    /// `ecosystem_dir`: where the generated ecosystem files go
    /// (`<root>/.ecosystems`: pm2 reads them as pm2.user, which may read
    /// the apps' tree but not hoist's state).
    pub fn new(command: &str, home: Option<PathBuf>, ecosystem_dir: &Path) -> Pm2 {
        Pm2 {
            command: command.to_string(),
            home,
            ecosystem_dir: ecosystem_dir.to_path_buf(),
            run_as: None,
            listed: Arc::default(),
        }
    }

    /// pm2 (and so the apps) run as `user`. A missing pm2 home is made by
    /// that user itself (hoist may not even see into its parent: the
    /// shipped /var/lib/hoist-apps is that user's alone); whether the user
    /// can use it is [`check_home`]'s question, asked at start.
    pub fn run_as(mut self, user: Arc<RunAs>) -> Pm2 {
        if let Some(h) = &self.home
            && let Err(e) = make_home(&user, h)
        {
            tracing::debug!(
                "cannot make pm2.home {} as pm2.user {} ({e}); pm2 makes it",
                h.display(),
                user.name
            );
        }
        self.run_as = Some(user);
        self
    }

    /// Writes the app's ecosystem file: hoist's, readable by pm2.user
    /// through its group (0640 in a 0750 folder of that group), whatever
    /// the umask, since pm2 reads it as that user.
    fn write_ecosystem(&self, app: &str, bytes: &[u8]) -> Result<(), Pm2Error> {
        let err = |e: crate::safe_fs::Error| Pm2Error::Ecosystem {
            path: e.path.clone(),
            source: e.source,
        };
        let dir = &self.ecosystem_dir;
        let (parent, name) = match (dir.parent(), dir.file_name().and_then(|n| n.to_str())) {
            (Some(p), Some(n)) => (p, n),
            _ => {
                return Err(Pm2Error::Ecosystem {
                    path: dir.clone(),
                    source: std::io::Error::other("not a folder inside root"),
                });
            }
        };
        let gid = self.run_as.as_ref().map(|u| u.gid);
        let (eco, _) = crate::safe_fs::Dir::open(parent)
            .and_then(|p| p.ensure_dir(name, 0o750))
            .map_err(err)?;
        if let Some(g) = gid {
            eco.chgrp(g).map_err(err)?;
        }
        eco.chmod(0o750).map_err(err)?;
        eco.write_atomic(&format!("{app}.json"), bytes, 0o640, gid)
            .map_err(err)
    }

    async fn run(&self, args: &[&str]) -> Result<String, Pm2Error> {
        let mut cmd = Command::new(&self.command);
        isolate(&mut cmd);
        cmd.args(args)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .env("PM2_DISCRETE_MODE", "true");
        if let Some(h) = &self.home {
            cmd.env("PM2_HOME", h);
        }
        if let Some(u) = &self.run_as {
            u.apply(&mut cmd);
        }
        let shown = args.join(" ");
        let out = tokio::time::timeout(PM2_TIMEOUT, cmd.output())
            .await
            .map_err(|_| Pm2Error::Timeout {
                args: shown.clone(),
                secs: PM2_TIMEOUT.as_secs(),
            })?
            .map_err(|source| Pm2Error::Spawn {
                command: self.command.clone(),
                source,
            })?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let text = if stderr.trim().is_empty() {
                &stdout
            } else {
                stderr.as_ref()
            };
            return Err(Pm2Error::Failed {
                args: shown,
                message: last_lines(text, 3),
            });
        }
        Ok(stdout)
    }

    /// The ecosystem for one app: the manifest's process definitions with
    /// `cwd` set to the app's `current` link and hoist's own variables added.
    pub fn ecosystem(app: &str, current: &Path, release: &str, manifest: &Manifest) -> Value {
        let apps: Vec<Value> = manifest
            .pm2
            .iter()
            .map(|p| {
                let mut obj: Map<String, Value> = p.as_object().cloned().unwrap_or_default();
                obj.insert("cwd".into(), json!(current.to_string_lossy()));
                let mut env = match obj.remove("env") {
                    Some(Value::Object(m)) => m,
                    _ => Map::new(),
                };
                env.insert("HOIST_APP".into(), json!(app));
                env.insert("HOIST_RELEASE".into(), json!(release));
                obj.insert("env".into(), Value::Object(env));
                Value::Object(obj)
            })
            .collect();
        json!({ "apps": apps })
    }

    async fn start_or_reload_now(
        &self,
        app: &str,
        current: &Path,
        release: &str,
        manifest: &Manifest,
    ) -> Result<(), Pm2Error> {
        let path = self.ecosystem_dir.join(format!("{app}.json"));
        let eco = Pm2::ecosystem(app, current, release, manifest);
        let bytes = serde_json::to_vec_pretty(&eco).unwrap_or_default();
        let this = self.clone();
        let a = app.to_string();
        tokio::task::spawn_blocking(move || this.write_ecosystem(&a, &bytes))
            .await
            .map_err(|e| Pm2Error::Ecosystem {
                path: path.clone(),
                source: std::io::Error::other(e),
            })??;
        // A process pm2 stopped or gave up on (`errored`) has nothing left
        // to keep serving through a graceful reload, and reloading it can
        // leave it stopped: start it afresh instead.
        let names = manifest.process_names();
        if let Ok(procs) = self.jlist().await {
            let mut broken: Vec<String> = procs
                .iter()
                .filter(|p| {
                    names.contains(&p.name) && (p.status == "stopped" || p.status == "errored")
                })
                .map(|p| p.name.clone())
                .collect();
            broken.dedup();
            for n in &broken {
                self.run(&["delete", n]).await?;
            }
        }
        let p = path.to_string_lossy().into_owned();
        self.run(&["startOrReload", &p, "--update-env"]).await?;
        Ok(())
    }

    async fn delete_now(&self, names: &[String]) -> Result<(), Pm2Error> {
        let running = self.jlist().await?;
        for n in names {
            if running.iter().any(|p| &p.name == n) {
                self.run(&["delete", n]).await?;
            }
        }
        Ok(())
    }

    /// The processes, as listed by a `pm2 jlist` started after this call.
    /// Each list is a node process costing about 0.2 s of CPU: when the
    /// apps of a commit deploy at once, each reload's check for stopped
    /// processes asks at about the same moment, and one list, run while
    /// the others wait, answers all who asked before it started. Every
    /// command of ours starts with a list, so when several apps deploy
    /// at once the first list alone starts pm2's daemon, and they never
    /// race to start it.
    pub async fn jlist(&self) -> Result<Vec<Proc>, Pm2Error> {
        let asked = Instant::now();
        let mut last = self.listed.lock().await;
        if let Some((started, procs)) = &*last
            && *started >= asked
        {
            return Ok(procs.clone());
        }
        let started = Instant::now();
        let procs = parse_jlist(&self.run(&["jlist"]).await?)?;
        *last = Some((started, procs.clone()));
        Ok(procs)
    }
}

impl ProcessManager for Pm2 {
    fn start_or_reload<'a>(
        &'a self,
        app: &'a str,
        current: &'a Path,
        release: &'a str,
        manifest: &'a Manifest,
    ) -> BoxFuture<'a, Result<(), Pm2Error>> {
        Box::pin(self.start_or_reload_now(app, current, release, manifest))
    }

    fn delete<'a>(&'a self, names: &'a [String]) -> BoxFuture<'a, Result<(), Pm2Error>> {
        Box::pin(self.delete_now(names))
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<Proc>, Pm2Error>> {
        Box::pin(self.jlist())
    }
}

/// One `list` of the processes at a time, shared by every health gate
/// waiting at once: on two cores, eight gates each running `pm2 jlist`
/// every 250 ms would starve the apps they wait for. A gate asks for a
/// snapshot taken after a given moment; whoever asks first runs the list,
/// and the others waiting meanwhile get that same answer.
#[derive(Debug)]
pub struct ProcessWatch {
    pm: Arc<dyn ProcessManager>,
    last: tokio::sync::Mutex<Option<Snapshot>>,
}

/// The processes as listed at `at` (or why listing failed).
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub at: Instant,
    pub procs: Arc<Result<Vec<Proc>, String>>,
}

impl ProcessWatch {
    pub fn new(pm: Arc<dyn ProcessManager>) -> ProcessWatch {
        ProcessWatch {
            pm,
            last: tokio::sync::Mutex::new(None),
        }
    }

    pub fn manager(&self) -> &Arc<dyn ProcessManager> {
        &self.pm
    }

    /// A list of the processes taken after `after`.
    pub async fn snapshot_after(&self, after: Instant) -> Snapshot {
        // Held while listing: the gates that ask meanwhile wait for this
        // answer instead of starting lists of their own.
        let mut last = self.last.lock().await;
        if let Some(s) = &*last
            && s.at > after
        {
            return s.clone();
        }
        let procs = self.pm.list().await.map_err(|e| e.to_string());
        let s = Snapshot {
            at: Instant::now(),
            procs: Arc::new(procs),
        };
        *last = Some(s.clone());
        s
    }
}

/// The last `n` lines of pm2's output, as plain text: pm2 colours its
/// messages, and they end up in statuses and the history.
fn last_lines(text: &str, n: usize) -> String {
    let text = crate::redact::printable(text);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(n);
    lines[start..].join(" / ")
}

/// Makes a missing pm2 home (mode 0700), as `user` itself: it may be the
/// only one who can write its parent (the shipped /var/lib/hoist-apps).
/// When it cannot (a parent of root's), hoist makes the last folder in the
/// parent the host config names and hands it over through its handle.
fn make_home(user: &RunAs, home: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let as_user =
        crate::safe_fs::as_user(Some(user.owner()), || {
            match std::fs::symlink_metadata(home) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(home),
                _ => Ok(()),
            }
        })?;
    let Err(e) = as_user else { return Ok(()) };
    let (Some(parent), Some(name)) = (home.parent(), home.file_name().and_then(|n| n.to_str()))
    else {
        return Err(e);
    };
    let (dir, created) = crate::safe_fs::Dir::open(parent)
        .and_then(|p| p.ensure_dir(name, 0o700))
        .map_err(|_| e)?;
    if created {
        dir.chmod(0o700).map_err(std::io::Error::from)?;
        dir.chown(user.owner()).map_err(std::io::Error::from)?;
    }
    Ok(())
}

/// Whether `user` can reach the apps' `root` (read and enter it): the apps
/// and their hooks run from there. Under the shipped unit's umask only the
/// root's group (set-group-ID, pm2.user's) lets them.
pub fn check_root(user: Option<&RunAs>, root: &Path) -> Result<(), String> {
    let Some(user) = user else { return Ok(()) };
    crate::safe_fs::as_user(Some(user.owner()), || {
        rustix::fs::accessat(
            rustix::fs::CWD,
            root,
            rustix::fs::Access::READ_OK | rustix::fs::Access::EXEC_OK,
            rustix::fs::AtFlags::EACCESS,
        )
    })
    .map_err(|e| e.to_string())
    .and_then(|r| r.map_err(|e| std::io::Error::from(e).to_string()))
    .map_err(|why| {
        let group = nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(user.gid))
            .ok()
            .flatten()
            .map(|g| g.name)
            .unwrap_or_else(|| user.gid.to_string());
        format!(
            "pm2.user {name} cannot read root {root} ({why}), where its apps run from; give root to its group, set-group-ID, as the package does: chgrp {group} {root} && chmod 2750 {root}",
            name = user.name,
            root = root.display(),
        )
    })
}

/// Whether pm2, run as `user` (or as hoist), can use its home: `home`, or
/// `~/.pm2` of that user. A home that is missing is made first, as that
/// user. The error is one sentence naming the home, the user and the fix.
pub fn check_home(user: Option<&RunAs>, home: Option<&Path>) -> Result<(), String> {
    let Some(user) = user else { return Ok(()) };
    let home = match home {
        Some(h) => h.to_path_buf(),
        None => user.home.join(".pm2"),
    };
    let _ = make_home(user, &home);
    crate::safe_fs::user_can_use_dir(Some(user.owner()), &home).map_err(|e| {
        let why = if e.kind() == std::io::ErrorKind::NotFound {
            "does not exist and cannot be made by that user".to_string()
        } else {
            e.to_string()
        };
        format!(
            "pm2.user {name} cannot use pm2's home {home} ({why}); make it that user's: install -d -o {name} -m 0700 {home}, or set pm2.home to a folder {name} owns",
            name = user.name,
            home = home.display(),
        )
    })
}

/// Parses `pm2 jlist`, which may print warnings before the JSON array.
pub fn parse_jlist(out: &str) -> Result<Vec<Proc>, Pm2Error> {
    // The array is printed on one line, after any "[PM2] ..." notices.
    let line = out
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with("[{") || *l == "[]")
        .ok_or(Pm2Error::BadJson)?;
    let v: Value = serde_json::from_str(line).map_err(|_| Pm2Error::BadJson)?;
    let arr = v.as_array().ok_or(Pm2Error::BadJson)?;
    Ok(arr
        .iter()
        .map(|p| {
            let env = p.get("pm2_env").cloned().unwrap_or(Value::Null);
            let hoist_app = env
                .get("HOIST_APP")
                .or_else(|| env.get("env").and_then(|e| e.get("HOIST_APP")))
                .and_then(|v| v.as_str())
                .map(String::from);
            Proc {
                name: p
                    .get("name")
                    .and_then(|v| v.as_str())
                    .unwrap_or("")
                    .to_string(),
                pm_id: p.get("pm_id").and_then(|v| v.as_i64()).unwrap_or(-1),
                status: env
                    .get("status")
                    .and_then(|v| v.as_str())
                    .unwrap_or("")
                    .to_string(),
                restarts: env
                    .get("restart_time")
                    .and_then(|v| v.as_i64())
                    .unwrap_or(0),
                cwd: env
                    .get("pm_cwd")
                    .and_then(|v| v.as_str())
                    .unwrap_or("")
                    .to_string(),
                hoist_app,
            }
        })
        .collect())
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum HealthError {
    #[error("process {0} is {1}")]
    Down(String, String),
    #[error("process {0} is not running")]
    Missing(String),
    #[error("processes kept restarting ({0} restarts)")]
    Restarting(i64),
    #[error("{url} answered {status}")]
    HttpStatus { url: String, status: u16 },
    #[error("{url} did not answer: {message}")]
    HttpDown { url: String, message: String },
    #[error("not healthy within {0}: {1}")]
    Timeout(String, String),
    #[error("{0}")]
    Pm2(String),
}

/// How often the health gate lists the processes while something is wrong
/// (not online yet, restarted, the URL not answering), and at most how
/// long it waits between lists while all looks well.
const GATE_POLL: Duration = Duration::from_millis(250);
const GATE_CALM_POLL_MAX: Duration = Duration::from_secs(1);

/// Waits until every process of the app is `online` and has not restarted
/// for `stable_for`, and `health.http` answers 2xx, all within `timeout`.
/// A process pm2 gave up on (`errored`) fails at once.
pub async fn health_gate(
    watch: &ProcessWatch,
    names: &[String],
    health: &Health,
) -> Result<(), HealthError> {
    let start = Instant::now();
    let deadline = start + health.timeout.0;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .no_proxy()
        .build()
        .map_err(|e| HealthError::Pm2(e.to_string()))?;
    let mut baseline: Option<Vec<(i64, i64)>> = None;
    let mut window_start = Instant::now();
    let mut last_problem: HealthError = HealthError::Missing(names.join(", "));
    let mut total_restarts = 0i64;
    // Only lists taken after the gate started count: an older one may show
    // the processes from before the reload.
    let mut seen = start;
    loop {
        let snapshot = watch.snapshot_after(seen).await;
        seen = snapshot.at;
        let procs = match snapshot.procs.as_ref() {
            Ok(p) => p,
            Err(e) => return Err(HealthError::Pm2(e.clone())),
        };
        let mine: Vec<&Proc> = procs.iter().filter(|p| names.contains(&p.name)).collect();
        let mut problem: Option<HealthError> = None;
        for n in names {
            if !mine.iter().any(|p| &p.name == n) {
                problem = Some(HealthError::Missing(n.clone()));
            }
        }
        for p in &mine {
            match p.status.as_str() {
                "online" => {}
                // pm2 gave up on it (too many unstable restarts).
                "errored" => {
                    return Err(HealthError::Down(p.name.clone(), p.status.clone()));
                }
                other => problem = Some(HealthError::Down(p.name.clone(), other.to_string())),
            }
        }
        let mut now_counts: Vec<(i64, i64)> = mine.iter().map(|p| (p.pm_id, p.restarts)).collect();
        now_counts.sort();
        match &baseline {
            Some(b) if *b != now_counts => {
                let before: i64 = b.iter().map(|x| x.1).sum();
                let after: i64 = now_counts.iter().map(|x| x.1).sum();
                total_restarts += (after - before).max(0);
                window_start = Instant::now();
                baseline = Some(now_counts);
                problem.get_or_insert(HealthError::Restarting(total_restarts));
            }
            None => baseline = Some(now_counts),
            _ => {}
        }
        if problem.is_some() {
            window_start = Instant::now();
        }
        if problem.is_none() && window_start.elapsed() >= health.stable_for.0 {
            match &health.http {
                None => return Ok(()),
                Some(url) => match client.get(url).send().await {
                    Ok(r) if r.status().is_success() => return Ok(()),
                    Ok(r) => {
                        problem = Some(HealthError::HttpStatus {
                            url: url.clone(),
                            status: r.status().as_u16(),
                        })
                    }
                    Err(e) => {
                        problem = Some(HealthError::HttpDown {
                            url: url.clone(),
                            message: short_reqwest(&e),
                        })
                    }
                },
            }
        }
        let calm = problem.is_none();
        if let Some(p) = problem {
            last_problem = p;
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(HealthError::Timeout(
                crate::config::Dur(health.timeout.0).to_string(),
                last_problem.to_string(),
            ));
        }
        // While all looks well, the next list matters only once the window
        // can be complete (a restart meanwhile still shows in the restart
        // counts), or a second on: each list is a node process, and on two
        // cores fewer of them leave more for the apps starting meanwhile.
        let pause = if calm {
            (window_start + health.stable_for.0)
                .saturating_duration_since(now)
                .clamp(GATE_POLL, GATE_CALM_POLL_MAX)
        } else {
            GATE_POLL
        };
        tokio::time::sleep(pause.min(deadline - now)).await;
    }
}

fn short_reqwest(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "connection refused".into()
    } else {
        e.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_manifest;

    #[test]
    fn ecosystem_uses_the_current_link_and_keeps_settings() {
        let text = "release: v1\nartifact:\n  url: file:///x\n  sha256: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\npm2:\n  - name: web\n    script: server.js\n    instances: 2\n    exec_mode: cluster\n    env: { PORT: \"3000\" }\n";
        let (_, m) = parse_manifest(Path::new("apps/web.yaml"), text).unwrap();
        let eco = Pm2::ecosystem("web", Path::new("/srv/hoist/web/current"), "v1", &m);
        let p = &eco["apps"][0];
        assert_eq!(p["cwd"], "/srv/hoist/web/current");
        assert_eq!(p["script"], "server.js");
        assert_eq!(p["instances"], 2);
        assert_eq!(p["exec_mode"], "cluster");
        assert_eq!(p["env"]["PORT"], "3000");
        assert_eq!(p["env"]["HOIST_APP"], "web");
        assert_eq!(p["env"]["HOIST_RELEASE"], "v1");
    }

    /// A pm2 that counts its `jlist` calls and takes a while to answer.
    fn slow_counting_pm2(dir: &Path) -> Pm2 {
        use std::os::unix::fs::PermissionsExt;
        let script = dir.join("pm2");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\necho x >> '{}'\nsleep 0.3\necho '[]'\n",
                dir.join("calls").display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        Pm2::new(&script.to_string_lossy(), None, dir)
    }

    fn calls(dir: &Path) -> usize {
        std::fs::read_to_string(dir.join("calls"))
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lists_asked_for_at_once_share_one_pm2_jlist() {
        let tmp = tempfile::tempdir().unwrap();
        let pm2 = slow_counting_pm2(tmp.path());
        let lists = (0..8).map(|_| pm2.jlist());
        for l in futures::future::join_all(lists).await {
            assert_eq!(l.unwrap(), vec![]);
        }
        // The first caller's list, then one for all who asked while it ran.
        assert!(calls(tmp.path()) <= 2, "{} lists", calls(tmp.path()));
        // A list that started before the call is never the answer.
        let before = calls(tmp.path());
        pm2.jlist().await.unwrap();
        assert_eq!(calls(tmp.path()), before + 1);
    }

    /// A process manager whose one process `web` is online, restarts at
    /// the lists named in `restart_at` (1-based), and is errored from the
    /// list `errored_from` on; it counts the lists.
    #[derive(Debug, Default)]
    struct Scripted {
        lists: std::sync::Mutex<i64>,
        restart_at: Vec<i64>,
        errored_from: Option<i64>,
    }

    impl ProcessManager for Scripted {
        fn start_or_reload<'a>(
            &'a self,
            _: &'a str,
            _: &'a Path,
            _: &'a str,
            _: &'a Manifest,
        ) -> BoxFuture<'a, Result<(), Pm2Error>> {
            Box::pin(async { Ok(()) })
        }

        fn delete<'a>(&'a self, _: &'a [String]) -> BoxFuture<'a, Result<(), Pm2Error>> {
            Box::pin(async { Ok(()) })
        }

        fn list(&self) -> BoxFuture<'_, Result<Vec<Proc>, Pm2Error>> {
            let mut n = self.lists.lock().unwrap();
            *n += 1;
            let restarts = self.restart_at.iter().filter(|&&k| k <= *n).count() as i64;
            let errored = self.errored_from.is_some_and(|k| *n >= k);
            let p = Proc {
                name: "web".into(),
                pm_id: 0,
                status: if errored { "errored" } else { "online" }.into(),
                restarts,
                cwd: "/srv/web/current".into(),
                hoist_app: Some("web".into()),
            };
            Box::pin(async move { Ok(vec![p]) })
        }
    }

    fn gate_settings(stable_for_ms: u64) -> Health {
        Health {
            http: None,
            timeout: crate::config::Dur(Duration::from_secs(30)),
            stable_for: crate::config::Dur(Duration::from_millis(stable_for_ms)),
        }
    }

    /// Runs the gate over `pm`: its verdict, how long it took, how many
    /// lists it asked for.
    async fn gate(pm: Scripted, stable_for_ms: u64) -> (Result<(), HealthError>, u128, i64) {
        let pm = Arc::new(pm);
        let watch = ProcessWatch::new(pm.clone());
        let t0 = Instant::now();
        let settings = gate_settings(stable_for_ms);
        let verdict = health_gate(&watch, &["web".to_string()], &settings).await;
        let lists = *pm.lists.lock().unwrap();
        (verdict, t0.elapsed().as_millis(), lists)
    }

    /// `took` is `expected` ms, give or take a busy machine's delays.
    fn about(took: u128, expected: u128) -> bool {
        (expected..expected + 200).contains(&took)
    }

    #[tokio::test]
    async fn a_calm_gate_lists_the_processes_only_when_the_window_can_end() {
        let (verdict, took, lists) = gate(Scripted::default(), 600).await;
        assert_eq!(verdict, Ok(()));
        assert!(about(took, 600), "{took} ms");
        assert_eq!(lists, 2);
        // A long window is still checked every second.
        let (verdict, took, lists) = gate(Scripted::default(), 2500).await;
        assert_eq!(verdict, Ok(()));
        assert!(about(took, 2500), "{took} ms");
        assert_eq!(lists, 4);
    }

    #[tokio::test]
    async fn a_restart_between_two_lists_starts_the_window_again() {
        // The process restarted while the gate waited: the second list
        // shows it only in the count, and the window starts over then.
        let pm = Scripted {
            restart_at: vec![2],
            ..Scripted::default()
        };
        let (verdict, took, lists) = gate(pm, 600).await;
        assert_eq!(verdict, Ok(()));
        assert!(about(took, 1200), "{took} ms");
        // At 0, 600 (the restart), 850 (soon after a problem), 1200 ms.
        assert_eq!(lists, 4);
    }

    #[tokio::test]
    async fn an_errored_process_fails_the_gate_within_a_second() {
        let pm = Scripted {
            errored_from: Some(3),
            ..Scripted::default()
        };
        let (verdict, took, _) = gate(pm, 10_000).await;
        assert_eq!(
            verdict,
            Err(HealthError::Down("web".into(), "errored".into()))
        );
        assert!(about(took, 2000), "{took} ms");
    }

    #[test]
    fn jlist_parsing_tolerates_noise() {
        let out = "[PM2] some warning\n[{\"name\":\"web\",\"pm_id\":0,\"pm2_env\":{\"status\":\"online\",\"restart_time\":3,\"pm_cwd\":\"/srv/web/current\",\"HOIST_APP\":\"web\"}}]\n";
        let p = parse_jlist(out).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].restarts, 3);
        assert_eq!(p[0].cwd, "/srv/web/current");
        assert_eq!(p[0].hoist_app.as_deref(), Some("web"));
        assert!(parse_jlist("garbage").is_err());
        assert_eq!(parse_jlist("[]").unwrap(), vec![]);
    }
}
