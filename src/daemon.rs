//! The loop around the pipeline: poll on a timer (with jitter) or when a
//! webhook, `hoist trigger` or a control request asks; apply; report; serve
//! the HTTP listener; answer signals; talk to systemd.
//!
//! A pass is never cancelled in the middle of a step: SIGTERM sets a flag
//! that the engine checks between apps, and the loop exits once the pass
//! returns. Local commands (`retry`, `rollback`, `trigger`) reach a running
//! daemon through a Unix socket in `state_dir`, because the daemon holds the
//! state lock and is the only process allowed to act.

use crate::config::{HostConfig, ReleaseName};
use crate::engine::Engine;
use crate::http::{Health, HttpState};
use crate::metrics::Metrics;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;
use tracing::{error, info, warn};

/// A request from a local command to the running daemon.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "lowercase")]
pub enum Request {
    Trigger,
    Retry {
        app: String,
    },
    /// `to` is checked when the request is read: it names a directory.
    Rollback {
        app: String,
        to: Option<ReleaseName>,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    pub message: String,
}

pub fn control_socket(state_dir: &Path) -> PathBuf {
    state_dir.join("control.sock")
}

/// Sends a request to the daemon that holds the lock on `state_dir`.
pub async fn send(state_dir: &Path, req: &Request) -> Result<Reply, String> {
    let path = control_socket(state_dir);
    let mut s = UnixStream::connect(&path)
        .await
        .map_err(|e| format!("cannot reach the running hoist at {}: {e}", path.display()))?;
    let mut line = serde_json::to_vec(req).map_err(|e| e.to_string())?;
    line.push(b'\n');
    s.write_all(&line).await.map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(s);
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(600), reader.read_line(&mut answer))
        .await
        .map_err(|_| "the running hoist did not answer in time".to_string())?
        .map_err(|e| e.to_string())?;
    serde_json::from_str(&answer).map_err(|_| "the running hoist gave an unreadable answer".into())
}

type Envelope = (Request, oneshot::Sender<Reply>);

async fn serve_control(listener: UnixListener, tx: mpsc::Sender<Envelope>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors (EMFILE) or memory: retrying at once
                // would spin a core; the connection waits in the backlog.
                warn!("the control socket cannot accept a connection: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            let (r, mut w) = stream.into_split();
            let mut reader = BufReader::new(r);
            let mut line = String::new();
            if reader.read_line(&mut line).await.is_err() {
                return;
            }
            let reply = match serde_json::from_str::<Request>(&line) {
                Ok(req) => {
                    let (otx, orx) = oneshot::channel();
                    if tx.send((req, otx)).await.is_err() {
                        Reply {
                            ok: false,
                            message: "hoist is shutting down".into(),
                        }
                    } else {
                        orx.await.unwrap_or(Reply {
                            ok: false,
                            message: "hoist is shutting down".into(),
                        })
                    }
                }
                Err(e) => Reply {
                    ok: false,
                    message: format!("invalid request: {e}"),
                },
            };
            let mut out = serde_json::to_vec(&reply).unwrap_or_default();
            out.push(b'\n');
            let _ = w.write_all(&out).await;
        });
    }
}

fn sd_notify(state: &[sd_notify::NotifyState<'_>]) {
    let _ = sd_notify::notify(state);
}

fn read_webhook_secret(cfg: &HostConfig) -> Option<String> {
    let p = cfg.webhook_secret_file.as_ref()?;
    match std::fs::read_to_string(p) {
        Ok(s) => Some(s.trim().to_string()),
        Err(e) => {
            warn!(
                "cannot read webhook_secret_file {}: {e}; webhooks are refused",
                p.display()
            );
            None
        }
    }
}

/// A random extra delay in [0, repo.jitter).
fn jitter(cfg: &HostConfig) -> Duration {
    let jitter = cfg.repo.jitter.0;
    if jitter.is_zero() {
        Duration::ZERO
    } else {
        jitter.mul_f64(rand::random::<f64>())
    }
}

fn next_delay(cfg: &HostConfig) -> Duration {
    cfg.repo.poll_interval.0 + jitter(cfg)
}

/// The soonest a rollout's wake-up runs the next pass.
const MIN_WAKE: Duration = Duration::from_millis(200);

/// Runs the daemon until SIGTERM or SIGINT. The caller holds the state lock.
pub async fn run(config_path: PathBuf, cfg: HostConfig) -> Result<(), String> {
    let metrics = Arc::new(Metrics::new());
    let mut engine = crate::setup::engine(&cfg, metrics.clone())
        .await
        .map_err(|e| e.to_string())?;
    engine.recover().await.map_err(|e| e.to_string())?;
    let stop = Arc::new(AtomicBool::new(false));
    engine.stop = stop.clone();

    let max_silence = (cfg.repo.poll_interval.0 + cfg.repo.jitter.0) * 3 + Duration::from_secs(300);
    let health = Arc::new(Health::new(max_silence));
    let trigger = Arc::new(Notify::new());
    let status_event = Arc::new(AtomicBool::new(false));
    let secret = Arc::new(std::sync::RwLock::new(read_webhook_secret(&cfg)));
    let shutdown = Arc::new(Notify::new());

    if !cfg.listen.is_empty() {
        let listener = tokio::net::TcpListener::bind(&cfg.listen)
            .await
            .map_err(|e| format!("cannot listen on {} (key listen): {e}", cfg.listen))?;
        let state = HttpState {
            metrics: metrics.clone(),
            health: health.clone(),
            webhook_secret: secret.clone(),
            trigger: trigger.clone(),
            status_event: status_event.clone(),
        };
        let sd = shutdown.clone();
        tokio::spawn(async move {
            let fut = async move { sd.notified().await };
            if let Err(e) = crate::http::serve(listener, state, fut).await {
                error!("the HTTP listener stopped: {e}");
            }
        });
        info!("listening on {}", cfg.listen);
    }

    let sock = control_socket(&cfg.state_dir);
    let _ = std::fs::remove_file(&sock);
    let (ctl_tx, mut ctl_rx) = mpsc::channel::<Envelope>(16);
    match UnixListener::bind(&sock) {
        Ok(l) => {
            tokio::spawn(serve_control(l, ctl_tx));
        }
        Err(e) => warn!("cannot open the control socket {}: {e}", sock.display()),
    }

    let mut sigterm = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    let mut sighup = signal(SignalKind::hangup()).map_err(|e| e.to_string())?;
    {
        let stop = stop.clone();
        let wake = trigger.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = sigterm.recv() => {}
                _ = sigint.recv() => {}
            }
            info!("stopping after the current step");
            stop.store(true, Ordering::SeqCst);
            wake.notify_one();
        });
    }

    let heartbeat = Arc::new(std::sync::Mutex::new(Instant::now()));
    if let Some(period) = sd_notify::watchdog_enabled() {
        let heartbeat = heartbeat.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(period / 2).await;
                let last = *heartbeat.lock().unwrap_or_else(|p| p.into_inner());
                if last.elapsed() <= max_silence {
                    sd_notify(&[sd_notify::NotifyState::Watchdog]);
                }
            }
        });
    }
    let beat = || *heartbeat.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    let (_watcher, mut config_changes) = watch_config(&config_path);
    sd_notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status("started"),
    ]);
    info!(host = %engine.host(), branch = %cfg.repo.branch, repo = %engine.source().shown_url(), "hoist is running");

    let mut cfg = cfg;
    let mut pace = crate::pace::TriggerPace::new(trigger.clone(), stop.clone());
    loop {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        beat();
        if status_event.swap(false, Ordering::SeqCst) {
            engine.statuses_changed();
        }
        let mut next_check = None;
        match engine.pass().await {
            Ok(r) => {
                next_check = r.next_check;
                health.record_poll(true, None);
                let status = match (&r.invalid, r.converged) {
                    (Some(e), _) => format!("commit {} is invalid: {e}", short(&r.commit)),
                    (None, true) => format!("converged on {}", short(&r.commit)),
                    (None, false) => format!("not converged on {}", short(&r.commit)),
                };
                sd_notify(&[sd_notify::NotifyState::Status(&status)]);
            }
            Err(e) => {
                let msg = e.to_string();
                warn!("poll failed: {msg}");
                health.record_poll(false, Some(msg.clone()));
                sd_notify(&[sd_notify::NotifyState::Status(&format!(
                    "poll failed: {msg}"
                ))]);
            }
        }
        if stop.load(Ordering::SeqCst) {
            break;
        }
        beat();
        let delay = next_delay(&cfg);
        let mut wait_until = Instant::now() + delay;
        if let Some(at) = next_check {
            // A rollout wave can open (a bake ends) before the next poll:
            // look then, spread by the jitter so a fleet does not ask the
            // forge in the same instant.
            let at = Instant::from_std(at) + jitter(&cfg);
            wait_until = wait_until.min(at.max(Instant::now() + MIN_WAKE));
        }
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(wait_until) => break,
                _ = pace.next() => break,
                _ = tokio::time::sleep(Duration::from_secs(10)) => {
                    beat();
                    continue;
                }
                _ = sighup.recv() => {
                    info!("SIGHUP: reloading {}", config_path.display());
                    let mut live = Live { cfg: &mut cfg, engine: &mut engine, metrics: &metrics, stop: &stop, secret: &secret };
                    live.reload(&config_path, true).await;
                    break;
                }
                Some(()) = config_changes.recv() => {
                    // Editors write in several steps: let them finish.
                    tokio::time::sleep(DEBOUNCE).await;
                    while config_changes.try_recv().is_ok() {}
                    let mut live = Live { cfg: &mut cfg, engine: &mut engine, metrics: &metrics, stop: &stop, secret: &secret };
                    if live.reload(&config_path, false).await {
                        break;
                    }
                }
                Some((req, reply)) = ctl_rx.recv() => {
                    let r = handle(&engine, req).await;
                    let _ = reply.send(r);
                    break;
                }
            }
        }
    }
    sd_notify(&[sd_notify::NotifyState::Stopping]);
    engine.reporter().flush(Duration::from_secs(5)).await;
    shutdown.notify_waiters();
    let _ = std::fs::remove_file(&sock);
    info!("stopped");
    Ok(())
}

fn short(c: &Option<String>) -> String {
    c.as_deref()
        .map(|c| c[..c.len().min(12)].to_string())
        .unwrap_or_default()
}

fn reload(path: &Path, old: &HostConfig) -> Result<HostConfig, String> {
    let new = HostConfig::load(path).map_err(|e| e.to_string())?;
    new.preflight(crate::config::Preflight::Pass)
        .map_err(|e| e.to_string())?;
    if new.state_dir != old.state_dir {
        return Err("state_dir cannot change while hoist runs; restart it".into());
    }
    if new.listen != old.listen {
        warn!("a new listen address takes effect on restart");
    }
    Ok(new)
}

/// How long a burst of file events must be quiet before the config is read.
const DEBOUNCE: Duration = Duration::from_millis(300);

/// Watches the directory holding the config file (editors and config
/// management replace the file by a rename, which a watch on the file itself
/// would miss) and sends `()` for every change to the file's name. Without
/// inotify, SIGHUP still works; the watcher must be kept alive.
fn watch_config(
    path: &Path,
) -> (
    Option<notify::RecommendedWatcher>,
    mpsc::UnboundedReceiver<()>,
) {
    use notify::{EventKind, RecursiveMode, Watcher};
    let (tx, rx) = mpsc::unbounded_channel();
    let Some(name) = path.file_name().map(|n| n.to_os_string()) else {
        return (None, rx);
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let handler = move |res: notify::Result<notify::Event>| {
        let Ok(event) = res else { return };
        // Opening and reading the file (our own reload does) is no change.
        if !matches!(
            event.kind,
            EventKind::Create(_) | EventKind::Modify(_) | EventKind::Remove(_) | EventKind::Any
        ) {
            return;
        }
        if event.paths.iter().any(|p| p.file_name() == Some(&name)) {
            let _ = tx.send(());
        }
    };
    match notify::recommended_watcher(handler) {
        Ok(mut w) => match w.watch(&dir, RecursiveMode::NonRecursive) {
            Ok(()) => (Some(w), rx),
            Err(e) => {
                warn!(
                    "cannot watch {} for changes ({e}); reload with SIGHUP",
                    dir.display()
                );
                (None, rx)
            }
        },
        Err(e) => {
            warn!(
                "cannot watch {} for changes ({e}); reload with SIGHUP",
                path.display()
            );
            (None, rx)
        }
    }
}

/// What a reload replaces, borrowed from the loop.
struct Live<'a> {
    cfg: &'a mut HostConfig,
    engine: &'a mut Engine,
    metrics: &'a Arc<Metrics>,
    stop: &'a Arc<AtomicBool>,
    secret: &'a Arc<std::sync::RwLock<Option<String>>>,
}

impl Live<'_> {
    /// Re-reads the host config and, when it loads and differs from the one
    /// in use (or `forced`, as on SIGHUP, which also re-reads the secret
    /// files), rebuilds the engine from it. Returns whether anything was
    /// reloaded. A config that does not load changes nothing.
    async fn reload(&mut self, path: &Path, forced: bool) -> bool {
        let new_cfg = match reload(path, self.cfg) {
            Ok(c) => c,
            Err(e) => {
                error!("keeping the old config: {e}");
                return false;
            }
        };
        if !forced && same_config(self.cfg, &new_cfg) {
            return false;
        }
        if let Ok(t) = sd_notify::NotifyState::monotonic_usec_now() {
            sd_notify(&[sd_notify::NotifyState::Reloading, t]);
        }
        // Statuses queued by the old engine are posted before it goes.
        self.engine.reporter().flush(Duration::from_secs(5)).await;
        match crate::setup::engine(&new_cfg, self.metrics.clone()).await {
            Ok(mut e) => {
                e.stop = self.stop.clone();
                *self.engine = e;
                *self.secret.write().unwrap_or_else(|p| p.into_inner()) =
                    read_webhook_secret(&new_cfg);
                *self.cfg = new_cfg;
                info!("reloaded {}", path.display());
            }
            Err(e) => error!("keeping the old config: {e}"),
        }
        sd_notify(&[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status("config reloaded"),
        ]);
        true
    }
}

/// Whether two loaded configs say the same (compared by their parsed
/// values, so a touched or re-saved file does not rebuild anything).
fn same_config(a: &HostConfig, b: &HostConfig) -> bool {
    format!("{a:?}") == format!("{b:?}")
}

async fn handle(engine: &Engine, req: Request) -> Reply {
    let r = match req {
        Request::Trigger => Ok("polling now".to_string()),
        Request::Retry { app } => engine.retry(&app).await,
        Request::Rollback { app, to } => engine.rollback(&app, to.as_deref()).await,
    };
    match r {
        Ok(message) => Reply { ok: true, message },
        Err(message) => Reply { ok: false, message },
    }
}
