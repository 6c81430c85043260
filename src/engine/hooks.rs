//! The manifest's `before_activate` and `after_activate` hooks: argv lists
//! run in the release directory, without a shell.
//!
//! A hook runs with an environment of its own, like the apps: the short
//! allowlist of `pm2::ENV_ALLOWLIST` plus `HOIST_*` variables naming what
//! is deployed. hoist's credentials (`AWS_*`, `CREDENTIALS_DIRECTORY`, ...)
//! never reach it.
//!
//! Its output never passes through hoist's log, at any level: a migration
//! is exactly where a connection string gets printed, and a hook reads the
//! app's secrets. The hook's standard output and error go straight to a
//! file in the app's own folder, `<root>/<app>/hooks/<time>-<release>.log`
//! (hoist's, 0600 in a 0700 folder, made through `safe_fs`), followed by
//! its exit code; the history and any error name that file, never a line
//! of it. The last [`KEEP_LOGS`] files of an app are kept.

use crate::pm2::{RunAs, isolate};
use crate::release::AppDir;
use crate::safe_fs::Dir;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

const HOOK_TIMEOUT: Duration = Duration::from_secs(600);

/// The folder of hook output files inside `<root>/<app>/`.
pub const HOOKS_DIR: &str = "hooks";
/// How many hook output files an app keeps.
pub const KEEP_LOGS: usize = 20;

/// What a hook is told about the deploy it belongs to.
pub struct HookEnv<'a> {
    pub app: &'a str,
    pub release: &'a str,
    pub commit: &'a str,
    /// Where it runs: the release directory (or its staging copy).
    pub dir: &'a Path,
    pub shared: &'a Path,
    /// The generation of secrets the release will run with: a hook runs
    /// before the switch, when the release's links still lead to the
    /// running generation.
    pub secrets: Option<&'a Path>,
    /// pm2.user: the hook runs as the apps do.
    pub user: Option<&'a RunAs>,
    /// Where its output goes (there is one whenever the manifest has hooks;
    /// without one the output is discarded, never logged).
    pub log: Option<&'a HookLog>,
}

/// One deploy's hook output file: every hook of the deploy, one after the
/// other, each with its command line and its exit code.
#[derive(Debug)]
pub struct HookLog {
    path: PathBuf,
    file: std::fs::File,
}

impl HookLog {
    /// A new file for the hooks of `release`'s deploy, in the app's
    /// `hooks/` folder (created safely when missing). Older files beyond
    /// [`KEEP_LOGS`] are removed.
    pub fn create(app: &AppDir, release: &str) -> Result<HookLog, String> {
        let err = |e: crate::safe_fs::Error| format!("cannot keep the hooks' output: {e}");
        let app_dir = app.handle().map_err(|e| e.to_string())?;
        let (dir, _) = app_dir.ensure_dir(HOOKS_DIR, 0o700).map_err(err)?;
        dir.chmod(0o700).map_err(err)?;
        let stamp = humantime::format_rfc3339_seconds(std::time::SystemTime::now())
            .to_string()
            .replace(['-', ':'], "");
        let name = format!("{stamp}-{release}-{:04x}.log", rand::random::<u16>());
        let file = dir.create_file(&name, 0o600).map_err(err)?;
        prune_logs(&dir);
        Ok(HookLog {
            path: dir.path().join(name),
            file,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn note(&self, text: &str) {
        let _ = (&self.file).write_all(text.as_bytes());
    }
}

/// Keeps the newest [`KEEP_LOGS`] files (their names start with the time).
fn prune_logs(dir: &Dir) {
    let Ok(entries) = dir.entries() else { return };
    let logs: Vec<String> = entries
        .into_iter()
        .filter(|(n, k)| *k == crate::safe_fs::Kind::File && n.ends_with(".log"))
        .map(|(n, _)| n)
        .collect();
    let extra = logs.len().saturating_sub(KEEP_LOGS);
    for name in &logs[..extra] {
        let _ = dir.remove_file(name);
    }
}

/// Runs one hook argv; the error is one sentence naming the command, its
/// exit code and the file that holds its output.
pub async fn run_hook(env: &HookEnv<'_>, argv: &[String]) -> Result<(), String> {
    let shown = argv.join(" ");
    let out = |e: std::io::Error| format!("cannot run `{shown}`: its output file: {e}");
    let (stdout, stderr) = match env.log {
        Some(log) => {
            log.note(&format!("$ {shown}\n"));
            (
                std::process::Stdio::from(log.file.try_clone().map_err(out)?),
                std::process::Stdio::from(log.file.try_clone().map_err(out)?),
            )
        }
        None => (std::process::Stdio::null(), std::process::Stdio::null()),
    };
    let note = |text: String| {
        if let Some(log) = env.log {
            log.note(&text);
        }
    };
    let where_ = env
        .log
        .map(|l| format!("; its output is in {}", l.path.display()))
        .unwrap_or_default();
    let mut cmd = tokio::process::Command::new(&argv[0]);
    isolate(&mut cmd);
    cmd.args(&argv[1..])
        .current_dir(env.dir)
        .env("HOIST_APP", env.app)
        .env("HOIST_RELEASE", env.release)
        .env("HOIST_RELEASE_DIR", env.dir)
        .env("HOIST_SHARED_DIR", env.shared)
        .env("HOIST_COMMIT", env.commit)
        .envs(env.secrets.map(|p| ("HOIST_SECRETS_DIR", p)))
        .stdin(std::process::Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .kill_on_drop(true);
    if let Some(u) = env.user {
        u.apply(&mut cmd);
    }
    let status = match tokio::time::timeout(HOOK_TIMEOUT, cmd.status()).await {
        Err(_) => {
            note(format!(
                "# stopped: it did not finish within {}s\n",
                HOOK_TIMEOUT.as_secs()
            ));
            return Err(format!(
                "`{shown}` did not finish within {}s{where_}",
                HOOK_TIMEOUT.as_secs()
            ));
        }
        Ok(Err(e)) => {
            note(format!("# cannot run it: {e}\n"));
            return Err(format!("cannot run `{shown}`: {e}"));
        }
        Ok(Ok(s)) => s,
    };
    let code = status
        .code()
        .map(|c| c.to_string())
        .unwrap_or_else(|| "a signal".into());
    note(format!("# exit code: {code}\n"));
    if let Some(log) = env.log {
        let _ = log.file.sync_data();
    }
    if status.success() {
        return Ok(());
    }
    // Not the output itself: it goes to statuses and the history, and a
    // failing migration is where a connection string gets printed.
    Err(format!("`{shown}` exited with {code}{where_}"))
}
