//! The least-privilege world: hoist run exactly as the shipped systemd unit
//! runs it, on this machine, without systemd.
//!
//! What the unit says is read from `systemd/hoist.service` and
//! `systemd/hoist.tmpfile` themselves ([`Unit::shipped`]), so the tests and
//! the unit cannot drift apart. The world stands in for the package's two
//! users with users every Linux has: `daemon` is `hoist` (the deployer) and
//! `nobody` is `hoist-apps` (pm2 and the apps, `pm2.user`); nothing is
//! added to the machine, and everything this world starts is stopped when
//! it is dropped.
//!
//! Reproduced from the unit, for every hoist command the world runs
//! ([`ShippedWorld::hoist`], [`ShippedWorld::start_daemon`]):
//!
//! - `User=`/`Group=`: hoist runs as that user with its groups (`setpriv
//!   --reuid --regid --init-groups`);
//! - `AmbientCapabilities=` and `CapabilityBoundingSet=`: exactly those
//!   (`setpriv --inh-caps --ambient-caps --bounding-set`), nothing else:
//!   no CAP_DAC_OVERRIDE, no CAP_DAC_READ_SEARCH;
//! - `NoNewPrivileges=`: `setpriv --no-new-privs`;
//! - `UMask=`: set before hoist starts;
//! - `WorkingDirectory=`: hoist starts in the world's root;
//! - the environment systemd gives a service: cleared, then `PATH`, `HOME`,
//!   `USER`, `LOGNAME`, `SHELL`, `LANG` and `CREDENTIALS_DIRECTORY`;
//! - `LoadCredential=`: the credentials are copied, readable by the
//!   service's user only, into a folder that exists only while the daemon
//!   runs (as `/run/credentials/hoist.service/` does);
//! - `StateDirectory=`/`StateDirectoryMode=` and the tmpfiles' `root` and
//!   pm2 home: owners and modes as the unit and `hoist.tmpfile` give them
//!   (`root` set-group-ID with the apps' group);
//! - `KillMode=process`: stopping the daemon signals hoist only; pm2 and
//!   the apps keep running.
//!
//! Not reproduced, because it needs systemd itself (namespaces, seccomp,
//! cgroups): `ProtectSystem=`, `ProtectHome=`, `PrivateTmp=`,
//! `PrivateDevices=`, `PrivateMounts=`, `ProtectProc=`, the `ProtectKernel*`
//! and `ProtectControlGroups=` settings, `ProtectClock=`,
//! `ProtectHostname=`, `RestrictNamespaces=`, `RestrictAddressFamilies=`,
//! `RestrictSUIDSGID=`, `RestrictRealtime=`, `LockPersonality=`,
//! `SystemCallArchitectures=`, `RemoveIPC=`, `Type=notify` with the
//! watchdog, and `Restart=`. They narrow what hoist and the apps can reach
//! further; none of them grants anything this world would lack.
//!
//! It needs root (to become those users) and `setpriv`; without them it
//! fails, it does not skip. The binaries it runs (hoist, node, pm2) must be
//! reachable by those users: hoist is copied into the world when the build
//! is not, and node and pm2 must be in folders anyone may read.
//!
//! To add a case (a repair after `pm2 kill`, say): build a
//! [`ShippedWorld`], deploy through [`ShippedWorld::once`] or the daemon,
//! act as the apps' user with [`ShippedWorld::as_apps`] (`pm2 kill` is
//! [`ShippedWorld::pm2`]), and look at the result with the [`World`] helpers
//! (`w.app_says()`, `w.history()`, `w.final_status()`).

use super::{World, git, hoist_bin, pm2_bin};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// What the shipped unit and its tmpfiles snippet say, read from the files.
#[derive(Debug, Clone)]
pub struct Unit {
    pub user: String,
    pub group: String,
    /// Capability names as the unit writes them (`CAP_SETUID`, ...).
    pub ambient: Vec<String>,
    pub bounding: Vec<String>,
    pub umask: u32,
    pub no_new_privileges: bool,
    pub kill_mode: String,
    pub working_directory: PathBuf,
    pub state_directory_mode: u32,
    /// `LoadCredential=` names.
    pub credentials: Vec<String>,
    /// The mode of the apps' root (`/srv/hoist` in hoist.tmpfile).
    pub root_mode: u32,
    /// The mode of the apps' user's home (`/var/lib/hoist-apps`).
    pub apps_home_mode: u32,
}

impl Unit {
    /// Reads `systemd/hoist.service` and `systemd/hoist.tmpfile`.
    pub fn shipped() -> Unit {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd");
        let service = std::fs::read_to_string(dir.join("hoist.service")).unwrap();
        let tmpfile = std::fs::read_to_string(dir.join("hoist.tmpfile")).unwrap();
        Unit::parse(&service, &tmpfile)
    }

    pub fn parse(service: &str, tmpfile: &str) -> Unit {
        let values = |key: &str| -> Vec<String> {
            service
                .lines()
                .map(str::trim)
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| l.strip_prefix(key)?.strip_prefix('='))
                .map(|v| v.trim().to_string())
                .collect()
        };
        let one = |key: &str| -> String {
            let v = values(key);
            assert_eq!(v.len(), 1, "hoist.service sets {key}= once: {v:?}");
            v[0].clone()
        };
        let words = |key: &str| -> Vec<String> {
            values(key)
                .iter()
                .flat_map(|v| v.split_whitespace().map(String::from).collect::<Vec<_>>())
                .collect()
        };
        let octal = |v: &str| u32::from_str_radix(v, 8).unwrap();
        let tmpfile_mode = |path: &str| -> u32 {
            let line = tmpfile
                .lines()
                .map(str::trim)
                .filter(|l| !l.starts_with('#'))
                .find(|l| l.split_whitespace().nth(1) == Some(path))
                .unwrap_or_else(|| panic!("hoist.tmpfile has no line for {path}"));
            octal(line.split_whitespace().nth(2).unwrap())
        };
        Unit {
            user: one("User"),
            group: one("Group"),
            ambient: words("AmbientCapabilities"),
            bounding: words("CapabilityBoundingSet"),
            umask: octal(&one("UMask")),
            no_new_privileges: one("NoNewPrivileges") == "yes",
            kill_mode: one("KillMode"),
            working_directory: PathBuf::from(one("WorkingDirectory")),
            state_directory_mode: octal(&one("StateDirectoryMode")),
            credentials: values("LoadCredential")
                .iter()
                .map(|v| v.split(':').next().unwrap().to_string())
                .collect(),
            root_mode: tmpfile_mode("/srv/hoist"),
            apps_home_mode: tmpfile_mode("/var/lib/hoist-apps"),
        }
    }

    /// `CAP_SETUID CAP_CHOWN` as setpriv takes them: `+setuid,+chown`.
    fn setpriv_caps(caps: &[String]) -> String {
        let list: Vec<String> = caps
            .iter()
            .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
            .collect();
        format!("-all,{}", list.join(","))
    }
}

/// A user of this machine.
#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

impl User {
    fn named(name: &str) -> User {
        let u = nix::unistd::User::from_name(name)
            .unwrap()
            .unwrap_or_else(|| panic!("this machine has no user {name}"));
        User {
            name: name.to_string(),
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
        }
    }
}

/// The stand-ins for the package's users: `hoist` and `hoist-apps`.
pub const HOIST_USER: &str = "daemon";
pub const APPS_USER: &str = "nobody";

/// A world served by hoist run as the shipped unit runs it.
pub struct ShippedWorld {
    pub w: World,
    pub unit: Unit,
    /// hoist's user (the unit's `User=`).
    pub hoist: User,
    /// pm2.user.
    pub apps: User,
    /// The hoist binary those users run.
    pub bin: PathBuf,
    /// The folder `$CREDENTIALS_DIRECTORY` names while the daemon runs.
    pub credentials: PathBuf,
    /// pm2's home (`pm2.home`), made by hoist as pm2.user.
    pub pm2_home: PathBuf,
    pub daemon: std::sync::Mutex<Option<Child>>,
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{cmd:?}: {out:?}");
}

fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid)).unwrap();
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Whether `user` may reach and run `path`: every folder on the way
/// searchable, the file readable and executable (by others or the group).
fn reachable(path: &Path, user: &User) -> bool {
    let ok = |p: &Path, need: u32| {
        std::fs::metadata(p).is_ok_and(|m| {
            let mode = m.mode();
            m.uid() == user.uid
                || (m.gid() == user.gid && mode & (need << 3) == need << 3)
                || mode & need == need
        })
    };
    let Ok(real) = path.canonicalize() else {
        return false;
    };
    real.ancestors().skip(1).all(|d| ok(d, 0o1)) && ok(&real, 0o5)
}

impl ShippedWorld {
    /// A world whose host config says `pm2.user` and names the credentials
    /// as the unit exposes them; apps, releases and the repo as in
    /// [`World`]. Panics (fails the test) when it cannot run here.
    pub fn new() -> ShippedWorld {
        assert!(
            nix::unistd::Uid::effective().is_root(),
            "the least-privilege world runs hoist as other users: run the tests as root (CI does)"
        );
        assert!(
            which("setpriv").is_some(),
            "the least-privilege world needs setpriv (util-linux) to run hoist with the unit's capabilities"
        );
        let unit = Unit::shipped();
        assert_eq!(
            unit.kill_mode, "process",
            "the world stops hoist alone, as KillMode=process does"
        );
        let hoist = User::named(HOIST_USER);
        let apps = User::named(APPS_USER);
        let mut w = World::new();
        let top = w.path("");
        chmod(&top, 0o711);

        // The binaries: hoist copied when its build folder is private; node
        // and pm2 must be readable where they are.
        let mut bin = hoist_bin();
        if !reachable(&bin, &hoist) {
            let copy = w.path("bin/hoist");
            std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
            std::fs::copy(&bin, &copy).unwrap();
            chmod(copy.parent().unwrap(), 0o755);
            chmod(&copy, 0o755);
            bin = copy;
        }
        let node = which("node").expect("node is on PATH");
        let pm2 = Some(pm2_bin())
            .filter(|p| p.is_absolute())
            .or_else(|| which("pm2"))
            .expect("pm2 is installed (HOIST_TEST_PM2, or pm2 on PATH)");
        for (what, p) in [("node", node.clone()), ("pm2", pm2)] {
            assert!(
                reachable(&p, &apps) && reachable(&p, &hoist),
                "{what} ({}) must be in a folder {} and {} can read",
                p.display(),
                hoist.name,
                apps.name
            );
        }

        // tmpfiles and StateDirectory=: root (set-group-ID, the apps'
        // group), state_dir, the apps' user's home.
        let srv = w.path("srv");
        chown(&srv, hoist.uid, apps.gid);
        chmod(&srv, unit.root_mode);
        let state = w.path("state");
        chown(&state, hoist.uid, hoist.gid);
        chmod(&state, unit.state_directory_mode);
        let apps_home = w.path("apps-home");
        std::fs::create_dir(&apps_home).unwrap();
        chown(&apps_home, apps.uid, apps.gid);
        chmod(&apps_home, unit.apps_home_mode);
        let pm2_home = apps_home.join(".pm2");
        std::fs::remove_dir(w.path("pm2home")).unwrap();
        // The artifacts: anyone may read them.
        chmod(&w.path("store"), 0o755);
        // The config repository: hoist's (git refuses a repository that
        // another user owns); the tests push to it as root.
        run(Command::new("chown")
            .arg("-R")
            .arg(format!("{}:{}", hoist.uid, hoist.gid))
            .arg(w.path("config.git")));
        // Statuses (provider file) where hoist may write.
        let forge = w.path("forge");
        std::fs::create_dir(&forge).unwrap();
        chown(&forge, hoist.uid, hoist.gid);
        std::os::unix::fs::symlink("forge/statuses.jsonl", w.path("statuses.jsonl")).unwrap();

        // The credentials' sources (root-only, as in /etc/hoist), and the
        // server's key.
        let etc = w.path("etc");
        std::fs::create_dir(&etc).unwrap();
        chmod(&etc, 0o700);
        let out = Command::new(hoist_bin())
            .args(["keygen", "-o"])
            .arg(etc.join("identity"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let public = String::from_utf8(out.stdout).unwrap().trim().to_string();
        std::fs::write(etc.join("webhook-secret"), "webhook-secret-of-hoist\n").unwrap();
        std::fs::create_dir_all(w.path("work/fleet")).unwrap();
        std::fs::write(
            w.path("work/fleet/test.yaml"),
            format!(
                "hosts:\n  {}: {{ labels: [web], key: \"{public}\" }}\n",
                w.host
            ),
        )
        .unwrap();

        let credentials = w.path("run-credentials");
        let root = w.dir.path().display().to_string();
        w.status_config = Some(format!(
            "status:\n  provider: file\n  path: {root}/forge/statuses.jsonl\n"
        ));
        w.extra_config = format!(
            "identity_file: {c}/identity\nwebhook_secret_file: {c}/webhook-secret\n",
            c = credentials.display()
        );
        w.write_config();
        // pm2.user and pm2.home, as the example config sets them.
        let cfg = std::fs::read_to_string(w.config_path()).unwrap().replace(
            &format!("  home: {root}/pm2home\n"),
            &format!("  home: {}\n  user: {}\n", pm2_home.display(), apps.name),
        );
        std::fs::write(w.config_path(), cfg).unwrap();
        // /etc/hoist/hoist.yaml: root's, readable by hoist's group.
        chown(&w.config_path(), 0, hoist.gid);
        chmod(&w.config_path(), 0o640);

        ShippedWorld {
            w,
            unit,
            hoist,
            apps,
            bin,
            credentials,
            pm2_home,
            daemon: std::sync::Mutex::new(None),
        }
    }

    /// `PATH` as systemd gives a service, with node's folder first.
    fn path_env() -> String {
        let node = which("node").unwrap();
        format!(
            "{}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            node.parent().unwrap().display()
        )
    }

    /// `hoist <args>` as the unit runs it (`env`: more variables, e.g.
    /// `HOIST_FAULT_AT` or `RUST_LOG`).
    pub fn command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let u = &self.unit;
        let mut cmd = Command::new("setpriv");
        cmd.arg(format!("--reuid={}", self.hoist.uid))
            .arg(format!("--regid={}", self.hoist.gid))
            .arg("--init-groups")
            .arg(format!("--inh-caps={}", Unit::setpriv_caps(&u.ambient)))
            .arg(format!("--ambient-caps={}", Unit::setpriv_caps(&u.ambient)))
            .arg(format!(
                "--bounding-set={}",
                Unit::setpriv_caps(&u.bounding)
            ));
        if u.no_new_privileges {
            cmd.arg("--no-new-privs");
        }
        cmd.arg(&self.bin)
            .args(args)
            .arg("--config")
            .arg(self.w.config_path())
            .current_dir(self.w.path("srv"))
            .env_clear()
            .env("PATH", Self::path_env())
            .env("HOME", self.w.path("state"))
            .env("USER", &self.hoist.name)
            .env("LOGNAME", &self.hoist.name)
            .env("SHELL", "/usr/sbin/nologin")
            .env("LANG", "C.UTF-8")
            .env("CREDENTIALS_DIRECTORY", &self.credentials);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let umask = u.umask;
        // SAFETY: umask is a plain system call, safe between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                libc::umask(umask as libc::mode_t);
                Ok(())
            });
        }
        cmd
    }

    /// Copies the credentials where hoist finds them, as systemd does when
    /// the service starts: a folder and files of the service's user alone.
    pub fn load_credentials(&self) {
        let c = &self.credentials;
        std::fs::create_dir_all(c).unwrap();
        for name in ["identity", "webhook-secret"] {
            assert!(
                self.unit.credentials.iter().any(|n| n == name),
                "hoist.service loads {name}"
            );
            std::fs::copy(self.w.path(&format!("etc/{name}")), c.join(name)).unwrap();
            chown(&c.join(name), self.hoist.uid, self.hoist.gid);
            chmod(&c.join(name), 0o400);
        }
        chown(c, self.hoist.uid, self.hoist.gid);
        chmod(c, 0o500);
    }

    /// Removes them, as systemd does when the service stops.
    pub fn unload_credentials(&self) {
        let _ = std::fs::remove_dir_all(&self.credentials);
    }

    /// Runs `hoist <args>` once, as the unit would (credentials loaded for
    /// the commands that run a pass).
    pub fn hoist(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        self.command(args, env).output().unwrap()
    }

    /// `hoist once` with the credentials loaded, asserting its exit code;
    /// returns stdout+stderr.
    pub fn once(&self, expect: i32) -> String {
        self.load_credentials();
        let out = self.hoist(&["once"], &[]);
        self.unload_credentials();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(expect), "hoist once: {text}");
        text
    }

    /// What the daemon logged.
    pub fn daemon_log(&self) -> String {
        self.w.daemon_log()
    }

    /// `hoist run`, its output to `daemon.log`.
    pub fn start_daemon(&self, env: &[(&str, &str)]) {
        self.load_credentials();
        let log = std::fs::File::create(self.w.path("daemon.log")).unwrap();
        let child = self
            .command(&["run"], env)
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap();
        *self.daemon.lock().unwrap() = Some(child);
    }

    /// SIGTERM to hoist alone (`KillMode=process`): pm2 and the apps stay.
    /// Returns its exit code.
    pub fn stop_daemon(&self) -> Option<i32> {
        let mut child = self.daemon.lock().unwrap().take()?;
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let t0 = Instant::now();
        let code = loop {
            if let Ok(Some(st)) = child.try_wait() {
                break st.code();
            }
            if t0.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        self.unload_credentials();
        code
    }

    /// `kill -9` of the daemon, as a crash or the OOM killer would.
    pub fn kill_daemon(&self) {
        if let Some(mut c) = self.daemon.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.unload_credentials();
    }

    /// A command as the apps' user (pm2.user), with pm2's home set.
    pub fn as_apps(&self, program: &Path) -> Command {
        let mut cmd = Command::new("setpriv");
        cmd.arg(format!("--reuid={}", self.apps.uid))
            .arg(format!("--regid={}", self.apps.gid))
            .arg("--clear-groups")
            .arg(program)
            .env_clear()
            .env("PATH", Self::path_env())
            .env("HOME", self.w.path("apps-home"))
            .env("PM2_HOME", &self.pm2_home);
        cmd
    }

    /// `pm2 <args>` as the apps' user.
    pub fn pm2(&self, args: &[&str]) -> Output {
        self.as_apps(&pm2_bin()).args(args).output().unwrap()
    }

    /// The processes pm2 runs, as `pm2 jlist` shows them.
    pub fn pm2_list(&self) -> Vec<serde_json::Value> {
        let out = self.pm2(&["jlist"]);
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .rev()
            .find(|l| l.trim_start().starts_with("[{") || l.trim() == "[]")
            .and_then(|l| serde_json::from_str(l).ok())
            .unwrap_or_default()
    }

    /// Pushes the working clone (the repo is hoist's; git would refuse to
    /// push into it as root otherwise).
    pub fn commit(&self, msg: &str) -> String {
        let work = self.w.path("work");
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-q", "--allow-empty", "-m", msg]);
        // git refuses to write into a repository another user owns; this
        // one is hoist's on purpose, and the push is the test's.
        git(
            &work,
            &[
                "push",
                "-q",
                "--receive-pack=git -c safe.directory=* receive-pack",
                "origin",
                "HEAD:main",
            ],
        );
        git(&work, &["rev-parse", "HEAD"])
    }

    /// Seals `plaintext` into the working clone for the app, as an admin
    /// would (`hoist secrets seal`).
    pub fn seal(&self, app: &str, rel: &str, plaintext: &str) {
        use std::io::Write;
        let out = self.w.path("work").join(rel);
        std::fs::create_dir_all(out.parent().unwrap()).unwrap();
        let mut seal = Command::new(hoist_bin())
            .args(["secrets", "seal", "--env", "test", "--app", app, "--repo"])
            .arg(self.w.path("work"))
            .arg("-")
            .arg(&out)
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        seal.stdin
            .take()
            .unwrap()
            .write_all(plaintext.as_bytes())
            .unwrap();
        assert!(seal.wait().unwrap().success());
    }
}

impl Drop for ShippedWorld {
    fn drop(&mut self) {
        self.kill_daemon();
        let _ = self
            .as_apps(&pm2_bin())
            .arg("kill")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

pub fn which(cmd: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(cmd))
            .find(|f| f.is_file())
    })
}

/// Owner, group and mode of every entry below `dir` (not followed), and of
/// `dir` itself: what "nothing was created, chowned or chmodded" compares.
pub fn snapshot(dir: &Path) -> Vec<(String, u32, u32, u32)> {
    fn walk(dir: &Path, rel: &str, out: &mut Vec<(String, u32, u32, u32)>) {
        let m = std::fs::symlink_metadata(dir).unwrap();
        out.push((rel.to_string(), m.uid(), m.gid(), m.mode()));
        if m.is_dir() {
            let mut names: Vec<_> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            names.sort();
            for n in names {
                walk(
                    &dir.join(&n),
                    &format!("{rel}/{}", n.to_string_lossy()),
                    out,
                );
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, ".", &mut out);
    out
}
