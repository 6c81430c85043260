//! The command line: parse arguments, call the library, map outcomes to
//! exit codes (SPEC §5): 0 success, 1 failure, 2 usage or config error,
//! 3 another hoist holds the lock.

use clap::{Parser, Subcommand, ValueEnum};
use hoist::config::{
    DiskTree, HostConfig, Inventories, Preflight, ReleaseName, read_commit_config,
};
use hoist::daemon::{self, Request};
use hoist::engine::Engine;
use hoist::lock::{LockError, StateLock};
use hoist::metrics::Metrics;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "hoist",
    version,
    about = "GitOps pull-based deployer for Node.js apps"
)]
struct Cli {
    /// Host config file.
    #[arg(long, global = true, env = "HOIST_CONFIG", default_value = hoist::config::DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    /// Log format on standard error.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// The daemon: poll, apply, report, serve `listen`.
    Run,
    /// One poll-and-apply pass, then exit (0 converged, 1 a deploy failed).
    Once,
    /// What the next pass would do on this server, and why.
    Plan {
        #[arg(long)]
        json: bool,
    },
    /// Per app: release, commit, since when, health, last error.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// The audit log.
    History {
        app: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Validate a config repo checkout (for its CI).
    Check { dir: Option<PathBuf> },
    /// Local emergency rollback to a kept release.
    Rollback {
        app: String,
        #[arg(long)]
        to: Option<String>,
    },
    /// Try the current commit again for an app that failed.
    Retry { app: String },
    /// Reproducible .tar.zst of a build dir; prints its sha256.
    Pack {
        dir: PathBuf,
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
    },
    /// Pack, upload, and set release/artifact in a manifest.
    Publish {
        dir: PathBuf,
        /// s3:// or file:// URL of the artifact, or a prefix ending in '/'
        /// to which `<dirname>-<release>.tar.zst` is appended.
        #[arg(long)]
        to: String,
        /// Manifest whose `release` and `artifact` are set (needs --release).
        #[arg(long, requires = "release")]
        manifest: Option<PathBuf>,
        /// Release name (also names the file when --to ends with '/').
        #[arg(long)]
        release: Option<String>,
    },
    /// Ask the running daemon to poll now.
    Trigger,
    /// A self-contained demo on this machine.
    Demo {
        /// Several servers, a canary wave and a halted bad release.
        #[arg(long)]
        fleet: bool,
    },
    /// Every server of the environment for one commit, by app and wave.
    Fleet {
        /// A commit id or the branch name (default: the branch tip).
        reference: Option<String>,
        #[arg(long)]
        json: bool,
        /// Wait until rolled out (exit 0), halted, failed or timed out (1).
        #[arg(long)]
        wait: bool,
        /// With --wait: give up after this long (e.g. 30m).
        #[arg(long, requires = "wait", allow_hyphen_values = true)]
        timeout: Option<String>,
    },
    /// Write a new server identity (mode 0600) and print its public key (and, on stderr, the inventory entry to paste).
    Keygen {
        /// Where to write it (default: the host config's identity_file).
        #[arg(short = 'o', long = "output")]
        output: Option<PathBuf>,
    },
    /// Sealed app secrets in the config repo (SPEC §7).
    Secrets {
        #[command(subcommand)]
        command: SecretsCommand,
    },
}

/// The config repo checkout is `--repo` (default: the current directory);
/// its manifest folder is `repo.path` of the host config when one loads,
/// else `apps`, as for `hoist check`.
#[derive(Subcommand)]
enum SecretsCommand {
    /// Seal IN (`-`: stdin) to the hosts of fleet/ENV.yaml (those APP targets, or all) plus admins.
    Seal {
        #[arg(long = "env")]
        env: String,
        #[arg(long)]
        app: Option<String>,
        #[arg(long)]
        repo: Option<PathBuf>,
        input: PathBuf,
        output: PathBuf,
    },
    /// Print the plaintext of a sealed file.
    Open {
        file: PathBuf,
        #[arg(long)]
        identity: PathBuf,
    },
    /// Open in $EDITOR, then re-seal to the same recipients.
    Edit {
        file: PathBuf,
        #[arg(long)]
        identity: PathBuf,
        #[arg(long = "env")]
        env: Option<String>,
        #[arg(long, requires = "env")]
        app: Option<String>,
        #[arg(long)]
        repo: Option<PathBuf>,
    },
    /// Re-seal every sealed file the manifests name to the current inventories.
    Rekey {
        #[arg(long)]
        identity: PathBuf,
        #[arg(long)]
        repo: Option<PathBuf>,
    },
}

struct Failure {
    code: u8,
    message: String,
}

fn fail(code: u8, message: impl Into<String>) -> Failure {
    Failure {
        code,
        message: message.into(),
    }
}

type Res = Result<u8, Failure>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(
        cli.log_format,
        matches!(
            cli.command,
            Command::Run | Command::Once | Command::Publish { .. }
        ),
    );
    // Before any thread exists: libgit2's timeouts are process-wide globals.
    hoist::source::set_network_timeouts();
    if matches!(
        cli.command,
        Command::Once | Command::Publish { .. } | Command::Demo { .. }
    ) {
        hoist::progress::enable();
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hoist: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(dispatch(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            eprintln!("hoist: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

fn init_logging(format: LogFormat, default_info: bool) {
    let format = match format {
        LogFormat::Text => hoist::logging::Format::Text,
        LogFormat::Json => hoist::logging::Format::Json,
    };
    hoist::logging::init(format, if default_info { "info" } else { "warn" });
}

/// A release name given on the command line: it names a directory (and,
/// for `publish`, a file), so it is checked before anything is touched.
fn release_arg(flag: &str, value: Option<String>) -> Result<Option<ReleaseName>, Failure> {
    value
        .map(|v| ReleaseName::new(&v).map_err(|m| fail(2, format!("{flag}: {m}"))))
        .transpose()
}

fn load_config(path: &Path) -> Result<HostConfig, Failure> {
    HostConfig::load(path).map_err(|e| fail(2, e.to_string()))
}

/// The host config for a command that acts on this server: loaded, and
/// what it names checked on this machine (`HostConfig::preflight`).
fn load_runnable(path: &Path, scope: Preflight) -> Result<HostConfig, Failure> {
    let cfg = load_config(path)?;
    preflight(&cfg, scope)?;
    Ok(cfg)
}

fn preflight(cfg: &HostConfig, scope: Preflight) -> Result<(), Failure> {
    cfg.preflight(scope).map_err(|e| fail(2, e.to_string()))
}

/// The host config for a command that reads `state_dir`: a folder that is
/// not there is a mistyped path or another server's config, not a server
/// with nothing deployed.
fn load_with_state(path: &Path) -> Result<HostConfig, Failure> {
    let cfg = load_config(path)?;
    if !cfg.state_dir.is_dir() {
        return Err(fail(
            2,
            format!(
                "state_dir {} (in {}) does not exist: hoist has never run with this config; is it the one the server uses?",
                cfg.state_dir.display(),
                path.display()
            ),
        ));
    }
    Ok(cfg)
}

fn lock(cfg: &HostConfig) -> Result<StateLock, Failure> {
    StateLock::acquire(&cfg.state_dir).map_err(|e| match e {
        LockError::Held(_) => fail(3, e.to_string()),
        LockError::Io { .. } => fail(1, e.to_string()),
    })
}

/// The engine, reading the credentials `need` asks for. A state.json that
/// cannot be read is exit 1 naming the file, as for `status`; the rest is
/// the config's (2).
async fn engine(cfg: &HostConfig, need: hoist::setup::Need) -> Result<Engine, Failure> {
    hoist::setup::engine_for(cfg, Arc::new(Metrics::new()), need)
        .await
        .map_err(|e| match e {
            hoist::engine::EngineError::State(_) => fail(1, e.to_string()),
            e => fail(2, e.to_string()),
        })
}

async fn dispatch(cli: Cli) -> Res {
    match cli.command {
        Command::Run => {
            let cfg = load_runnable(&cli.config, Preflight::Pass)?;
            let _lock = lock(&cfg)?;
            daemon::run(cli.config.clone(), cfg)
                .await
                .map_err(|m| fail(1, m))?;
            Ok(0)
        }
        Command::Once => {
            let cfg = load_runnable(&cli.config, Preflight::Pass)?;
            let _lock = lock(&cfg)?;
            let e = engine(&cfg, hoist::setup::Need::Pass).await?;
            e.recover().await.map_err(|e| fail(1, e.to_string()))?;
            let r = e.pass().await;
            e.reporter().flush(std::time::Duration::from_secs(30)).await;
            let r = r.map_err(|e| fail(1, e.to_string()))?;
            if let Some(inv) = &r.invalid {
                eprintln!("hoist: the commit cannot be applied: {inv}");
                return Ok(1);
            }
            for (app, o) in &r.outcomes {
                // The summary names the app itself ("web v2 live in 3.1s").
                println!("{}", hoist::plan::summarize(&[(app.clone(), o.clone())]).1);
            }
            // An app waiting for its rollout wave is no failure: the
            // rollout works as designed, and a later pass goes on.
            Ok(if r.converged || r.only_waiting() {
                0
            } else {
                1
            })
        }
        Command::Plan { json } => cmd_plan(&cli.config, json).await,
        Command::Status { json } => cmd_status(&cli.config, json),
        Command::History { app, json } => cmd_history(&cli.config, app.as_deref(), json),
        Command::Check { dir } => cmd_check(&cli.config, dir),
        Command::Rollback { app, to } => {
            let to = release_arg("--to", to)?;
            let cfg = load_config(&cli.config)?;
            local_or_daemon(cfg, Request::Rollback { app, to }).await
        }
        Command::Retry { app } => {
            let cfg = load_config(&cli.config)?;
            local_or_daemon(cfg, Request::Retry { app }).await
        }
        Command::Trigger => {
            let cfg = load_config(&cli.config)?;
            match daemon::send(&cfg.state_dir, &Request::Trigger).await {
                Ok(r) if r.ok => {
                    println!("{}", r.message);
                    Ok(0)
                }
                Ok(r) => Err(fail(1, r.message)),
                Err(m) => Err(fail(
                    1,
                    format!("{m}; is `hoist run` running with this config?"),
                )),
            }
        }
        Command::Pack { dir, output } => {
            let d = dir.clone();
            let o = output.clone();
            let sha = tokio::task::spawn_blocking(move || hoist::producer::pack(&d, &o))
                .await
                .map_err(|e| fail(1, e.to_string()))?
                .map_err(|e| fail(1, e.to_string()))?;
            println!("{sha}  {}", output.display());
            Ok(0)
        }
        Command::Publish {
            dir,
            to,
            manifest,
            release,
        } => {
            release_arg("--release", release.clone())?;
            hoist::producer::publish::publish(
                &cli.config,
                &dir,
                &to,
                manifest.as_deref(),
                release.as_deref(),
            )
            .await
            .map_err(|m| fail(1, m))?;
            Ok(0)
        }
        Command::Demo { fleet: false } => {
            hoist::demo::run().await.map(|()| 0).map_err(|m| fail(1, m))
        }
        Command::Demo { fleet: true } => hoist::demo::fleet::run()
            .await
            .map(|()| 0)
            .map_err(|m| fail(1, m)),
        Command::Fleet {
            reference,
            json,
            wait,
            timeout,
        } => {
            let timeout = timeout
                .map(|t| hoist::fleet::parse_timeout(&t).map_err(|m| fail(2, m)))
                .transpose()?;
            let opts = hoist::fleet::Options {
                reference,
                json,
                wait,
                timeout,
            };
            hoist::fleet::command(&cli.config, &opts)
                .await
                .map_err(|e| fail(e.exit_code(), e.to_string()))
        }
        Command::Keygen { output } => cmd_keygen(&cli.config, output),
        Command::Secrets { command } => cmd_secrets(&cli.config, command).await,
    }
}

fn secrets_failure(e: hoist::secrets::SecretsError) -> Failure {
    use hoist::secrets::SecretsError::{Config, Usage};
    let code = if matches!(e, Usage(_) | Config(_)) {
        2
    } else {
        1
    };
    fail(code, e.to_string())
}

fn cmd_keygen(config: &Path, output: Option<PathBuf>) -> Res {
    let loaded = HostConfig::load(config);
    let path = match output {
        Some(p) => p,
        None => load_config(config)?.identity_file.ok_or_else(|| {
            fail(
                2,
                format!(
                    "{} sets no identity_file; give the file with -o FILE",
                    config.display()
                ),
            )
        })?,
    };
    // The entry to paste into the inventory: this server, with its labels.
    let host = match &loaded {
        Ok(c) => hoist::secrets::commands::ThisHost {
            host: c.host_name(),
            environment: c.environment_name(),
            labels: Some(c.labels.clone()),
        },
        Err(_) => hoist::secrets::commands::ThisHost {
            host: nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "this-host".into()),
            environment: "<environment>".into(),
            labels: None,
        },
    };
    hoist::secrets::commands::keygen_cmd(&path, &host).map_err(secrets_failure)?;
    Ok(0)
}

fn config_repo(config: &Path, repo: Option<PathBuf>) -> hoist::secrets::repo::ConfigRepo {
    let apps_path = HostConfig::load(config)
        .map(|c| c.apps_path().to_string())
        .unwrap_or_else(|_| "apps".to_string());
    hoist::secrets::repo::ConfigRepo::new(&repo.unwrap_or_else(|| PathBuf::from(".")), &apps_path)
}

async fn cmd_secrets(config: &Path, command: SecretsCommand) -> Res {
    use hoist::secrets::commands as c;
    let ok = match command {
        SecretsCommand::Seal {
            env,
            app,
            repo,
            input,
            output,
        } => c::seal_cmd(
            &config_repo(config, repo),
            &env,
            app.as_deref(),
            &input,
            &output,
        )
        .map(|()| true),
        SecretsCommand::Open { file, identity } => c::open_cmd(&file, &identity).map(|()| true),
        SecretsCommand::Edit {
            file,
            identity,
            env,
            app,
            repo,
        } => c::edit_cmd(
            &config_repo(config, repo),
            &file,
            &identity,
            env.as_deref(),
            app.as_deref(),
        )
        .await
        .map(|()| true),
        SecretsCommand::Rekey { identity, repo } => {
            c::rekey_cmd(&config_repo(config, repo), &identity)
        }
    }
    .map_err(secrets_failure)?;
    Ok(if ok { 0 } else { 1 })
}

async fn local_or_daemon(cfg: HostConfig, req: Request) -> Res {
    match StateLock::acquire(&cfg.state_dir) {
        Ok(_lock) => {
            // A retry applies the commit again (a pass); a rollback only
            // moves between releases on disk, and needs no credential.
            let (scope, need) = match req {
                Request::Retry { .. } => (Preflight::Pass, hoist::setup::Need::Pass),
                _ => (Preflight::Local, hoist::setup::Need::Local),
            };
            preflight(&cfg, scope)?;
            let e = engine(&cfg, need).await?;
            e.recover().await.map_err(|e| fail(1, e.to_string()))?;
            let r = match req {
                Request::Retry { app } => {
                    let r = e.retry(&app).await;
                    if r.is_ok() {
                        // Nobody else will act on it: apply now.
                        let pass = e.pass().await;
                        e.reporter().flush(std::time::Duration::from_secs(30)).await;
                        match pass {
                            Ok(p) if p.converged => r,
                            Ok(p) => Err(p
                                .outcomes
                                .iter()
                                .map(|(a, o)| hoist::plan::summarize(&[(a.clone(), o.clone())]).1)
                                .collect::<Vec<_>>()
                                .join("; ")),
                            Err(err) => Err(err.to_string()),
                        }
                    } else {
                        r
                    }
                }
                Request::Rollback { app, to } => e.rollback(&app, to.as_deref()).await,
                Request::Trigger => Ok(String::new()),
            };
            match r {
                Ok(m) => {
                    println!("{m}");
                    Ok(0)
                }
                Err(m) => Err(fail(1, m)),
            }
        }
        Err(LockError::Held(_)) => match daemon::send(&cfg.state_dir, &req).await {
            Ok(r) if r.ok => {
                println!("{}", r.message);
                Ok(0)
            }
            Ok(r) => Err(fail(1, r.message)),
            Err(m) => Err(fail(
                3,
                format!(
                    "another hoist holds the lock on {} and {m}",
                    cfg.state_dir.display()
                ),
            )),
        },
        Err(e) => Err(fail(1, e.to_string())),
    }
}

async fn cmd_plan(config: &Path, json: bool) -> Res {
    let cfg = load_runnable(config, Preflight::Local)?;
    let e = engine(&cfg, hoist::setup::Need::Look).await?;
    let tip = e.poll().await.map_err(|e| fail(1, e.to_string()))?;
    let signed = e
        .check_commit_signature(&tip)
        .await
        .map_err(|e| fail(1, e.to_string()))?;
    let apps = match signed {
        Ok(()) => e
            .manifests_at(&tip)
            .await
            .map_err(|e| fail(1, e.to_string()))?
            .map_err(|inv| inv.to_string()),
        Err(refused) => Err(refused),
    };
    let apps = match apps {
        Ok(a) => a,
        Err(inv) => {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"commit": tip, "invalid": inv, "apps": []})
                );
            } else {
                println!("commit {tip} cannot be applied: {inv}");
            }
            return Ok(0);
        }
    };
    let plans = e
        .plan_for(&tip, &apps)
        .await
        .map_err(|e| fail(1, e.to_string()))?;
    if json {
        let items: Vec<_> = plans
            .iter()
            .map(|p| {
                serde_json::json!({
                    "app": p.app,
                    "action": action_name(&p.decision),
                    "acts": p.acts(),
                    "reason": p.describe(),
                })
            })
            .collect();
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"commit": tip, "host": e.host(), "apps": items})
            )
            .unwrap_or_default()
        );
    } else {
        println!(
            "commit {tip} on {} for host {}",
            e.settings.branch,
            e.host()
        );
        if plans.is_empty() {
            println!("no apps target this server");
        }
        for p in &plans {
            println!("  {}", p.describe());
        }
    }
    Ok(0)
}

fn action_name(d: &hoist::plan::Decision) -> &'static str {
    use hoist::plan::Decision::*;
    match d {
        Deploy { .. } => "deploy",
        Unchanged { .. } => "unchanged",
        Paused { .. } => "paused",
        Pinned { .. } => "pinned",
        HeldAfterFailure { .. } => "held",
        Conflict { .. } => "conflict",
        Remove { .. } => "remove",
        Refused { .. } => "refused",
    }
}

fn cmd_status(config: &Path, json: bool) -> Res {
    let cfg = load_with_state(config)?;
    let state = hoist::state::State::load(&cfg.state_dir).map_err(|e| fail(1, e.to_string()))?;
    // Commit statuses not posted yet (the daemon may be posting them now).
    let outbox = hoist::report::outbox::peek(&cfg.state_dir).unwrap_or_default();
    if json {
        let apps: serde_json::Map<String, serde_json::Value> = state
            .apps
            .iter()
            .map(|(name, s)| {
                (
                    name.clone(),
                    serde_json::json!({
                        "release": s.release(),
                        "sha256": s.sha256(),
                        "secrets": s.live().and_then(|l| l.secrets.as_deref()),
                        "commit": s.commit(),
                        "since": s.since(),
                        "previous": s.previous.as_ref().map(|p| &p.release),
                        "health": s.health(),
                        "last_error": s.last_error,
                        "failed": s.failed,
                        "pinned": s.pin(),
                        "removed": s.is_removed(),
                        "switching": s.switch.as_ref().map(|w| serde_json::json!({
                            "kind": w.why.name(),
                            "from": w.from.as_ref().map(|l| &l.release),
                            "to": w.to.as_ref().map(|l| &l.release),
                            "started": w.started,
                        })),
                        "releases": s.releases.keys().collect::<Vec<_>>(),
                    }),
                )
            })
            .collect();
        let out = serde_json::json!({
            "host": cfg.host_name(),
            "last_commit": state.last_commit,
            "apps": apps,
            "statuses_waiting": outbox.waiting,
            "statuses_wait_until": outbox
                .wait_until
                .map(|t| humantime::format_rfc3339_seconds(t).to_string()),
        });
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
        return Ok(0);
    }
    println!(
        "host {}  commit {}",
        cfg.host_name(),
        state.last_commit.as_deref().unwrap_or("-")
    );
    if outbox.waiting > 0 {
        let mut line = format!(
            "{} commit status(es) wait to be posted to the forge",
            outbox.waiting
        );
        if let Some(t) = outbox.wait_until {
            line.push_str(&format!(
                ", which asked to wait until {}",
                humantime::format_rfc3339_seconds(t)
            ));
        }
        println!("{line}");
    }
    if state.apps.is_empty() {
        println!("no apps deployed yet");
    }
    for (name, s) in &state.apps {
        let mut line = format!(
            "{name}: {} (commit {}, since {}), health {}",
            s.release().unwrap_or("-"),
            s.commit().map(|c| &c[..c.len().min(12)]).unwrap_or("-"),
            s.since().unwrap_or("-"),
            s.health(),
        );
        if s.is_removed() {
            line.push_str(", removed from this server");
        }
        if s.pin().is_some() {
            line.push_str(", held by a local rollback");
        }
        if let Some(w) = &s.switch {
            line.push_str(&format!(
                ", an interrupted {} to {} is finished at the next start",
                w.why.name(),
                w.to.as_ref()
                    .map(|l| l.release.as_str())
                    .unwrap_or("nothing")
            ));
        }
        if let Some(f) = &s.failed {
            line.push_str(&format!(", {} failed: {}", f.release, f.error));
        } else if let Some(e) = &s.last_error {
            line.push_str(&format!(", last error: {e}"));
        }
        println!("{line}");
    }
    Ok(0)
}

fn cmd_history(config: &Path, app: Option<&str>, json: bool) -> Res {
    let cfg = load_with_state(config)?;
    let events = hoist::state::read_history(&cfg.state_dir).map_err(|e| fail(1, e.to_string()))?;
    if let Some(app) = app
        && !events.iter().any(|e| e.app.as_deref() == Some(app))
    {
        let mut known: Vec<&str> = events.iter().filter_map(|e| e.app.as_deref()).collect();
        known.sort_unstable();
        known.dedup();
        let known = if known.is_empty() {
            "none yet".to_string()
        } else {
            known.join(", ")
        };
        return Err(fail(
            2,
            format!("no app {app:?} in the history of this server (apps with history: {known})"),
        ));
    }
    let events: Vec<_> = events
        .into_iter()
        .filter(|e| app.is_none() || e.app.as_deref() == app)
        .collect();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&events).unwrap_or_default()
        );
        return Ok(0);
    }
    for e in &events {
        let mut line = format!("{} {:<8}", e.at, e.event);
        if let Some(a) = &e.app {
            line.push_str(&format!(" {a}"));
        }
        if let Some(r) = &e.release {
            line.push_str(&format!(" {r}"));
        }
        if let Some(f) = &e.from {
            line.push_str(&format!(" (from {f})"));
        }
        if let Some(c) = &e.commit {
            line.push_str(&format!(" commit {}", &c[..c.len().min(12)]));
        }
        if let Some(s) = e.seconds {
            line.push_str(&format!(" in {s:.1}s"));
        }
        if let Some(m) = &e.message {
            line.push_str(&format!(": {m}"));
        }
        if let Some(o) = &e.output {
            line.push_str(&format!(" (hooks' output: {o})"));
        }
        println!("{line}");
    }
    Ok(0)
}

fn cmd_check(config: &Path, dir: Option<PathBuf>) -> Res {
    let dir = dir.unwrap_or_else(|| PathBuf::from("."));
    // The manifest folder comes from the host config when there is one (a
    // server), else the default `apps` (CI). A config that is there but
    // does not load is said, not replaced by the default.
    // The status context too: the rollouts' rules depend on it.
    let (apps_path, context) = match HostConfig::load(config) {
        Ok(c) => (
            c.apps_path().to_string(),
            Some((c.status.context.clone(), c.source_path.clone())),
        ),
        Err(e) if config.exists() => return Err(fail(2, e.to_string())),
        Err(_) => ("apps".to_string(), None),
    };
    if !dir.is_dir() {
        return Err(fail(2, format!("{} is not a folder", dir.display())));
    }
    // The same rules as a server reading a commit, and every inventory.
    let tree = DiskTree::new(&dir);
    match read_commit_config(&tree, &apps_path, Inventories::All) {
        Ok(c) if !check_sealed_secrets(&dir, &apps_path, &c.apps) => Ok(1),
        Ok(c) if !check_context(&dir, context.as_ref(), &c.apps) => Ok(1),
        Ok(c) => {
            println!(
                "{} valid: {} app(s): {}",
                dir.display(),
                c.apps.len(),
                c.apps
                    .keys()
                    .map(|a| a.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            Ok(0)
        }
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            eprintln!("{} invalid: {} error(s)", dir.display(), errors.len());
            Ok(1)
        }
    }
}

/// The status context the servers post under, against the manifests'
/// rollouts: the one of the host config checked with, else the default.
/// Without `{host}` it is an error; several apps with rollouts sharing one
/// host status is a warning.
fn check_context(
    dir: &Path,
    context: Option<&(String, PathBuf)>,
    apps: &hoist::config::AppSet,
) -> bool {
    let (template, from) = match context {
        Some((t, path)) => (t.as_str(), path.display().to_string()),
        None => (hoist::config::DEFAULT_CONTEXT, "the default".to_string()),
    };
    if let Some(problem) = hoist::rollout::context_problem(template, apps) {
        eprintln!("{from}: {problem}");
        eprintln!("{} invalid: status.context", dir.display());
        return false;
    }
    if let Some(warning) = hoist::rollout::shared_context_warning(template, apps) {
        eprintln!("warning: {from}: {warning}");
    }
    true
}

/// The sealed-secret rules of SPEC §7, on top of the manifests' own.
fn check_sealed_secrets(dir: &Path, apps_path: &str, apps: &hoist::config::AppSet) -> bool {
    let repo = hoist::secrets::repo::ConfigRepo::new(dir, apps_path);
    let ok = hoist::secrets::commands::check_cmd(&repo, apps);
    if !ok {
        eprintln!("{} invalid: sealed secrets", dir.display());
    }
    ok
}
