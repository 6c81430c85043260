//! The manifest's `before_activate` and `after_activate` hooks: argv lists
//! run in the release directory, without a shell.
//!
//! A hook runs with an environment of its own, like the apps: the short
//! allowlist of `pm2::ENV_ALLOWLIST` plus `HOIST_*` variables naming what
//! is deployed. hoist's credentials (`AWS_*`, `CREDENTIALS_DIRECTORY`, ...)
//! never reach it. Its output is logged at debug level only: a migration
//! is exactly where a connection string gets printed.

use crate::pm2::{RunAs, isolate};
use std::path::Path;
use std::time::Duration;
use tracing::debug;

const HOOK_TIMEOUT: Duration = Duration::from_secs(600);

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
}

/// Runs one hook argv; the error is one sentence with the last lines of
/// its standard error.
pub async fn run_hook(env: &HookEnv<'_>, argv: &[String]) -> Result<(), String> {
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
        .kill_on_drop(true);
    if let Some(u) = env.user {
        u.apply(&mut cmd);
    }
    let shown = argv.join(" ");
    let out = tokio::time::timeout(HOOK_TIMEOUT, cmd.output())
        .await
        .map_err(|_| {
            format!(
                "`{shown}` did not finish within {}s",
                HOOK_TIMEOUT.as_secs()
            )
        })?
        .map_err(|e| format!("cannot run `{shown}`: {e}"))?;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        debug!(app = env.app, hook = %shown, "{line}");
    }
    if out.status.success() {
        return Ok(());
    }
    for line in String::from_utf8_lossy(&out.stderr).lines() {
        debug!(app = env.app, hook = %shown, "{line}");
    }
    // Not the output itself: it goes to statuses and the history, and a
    // failing migration is where a connection string gets printed.
    Err(format!(
        "`{shown}` exited with {}; its output is logged at debug level",
        out.status
            .code()
            .map(|c| c.to_string())
            .unwrap_or_else(|| "a signal".into()),
    ))
}
