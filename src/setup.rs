//! The edge's wiring: turns a validated host config into the engine's
//! [`Settings`] and [`Parts`] — reading credential files, building the
//! status provider and the reporter, pm2 — so the engine itself never reads
//! a config file or a secret, and its tests can build it from parts.
//!
//! Errors are one sentence naming the key or file at fault.

use crate::artifact::{Cache, FetchSettings, S3Settings, UnpackLimits};
use crate::config::{HostConfig, ProviderName};
use crate::engine::{Engine, EngineError, Parts, Settings};
use crate::metrics::Metrics;
use crate::pm2::{Pm2, RunAs};
use crate::report::{self, ProviderKind, ProviderSettings, Reporter};
use crate::signature::TrustedKeys;
use crate::source::Source;
use std::path::PathBuf;
use std::sync::Arc;

/// Reads a credential file named by `key`, trimmed.
pub fn read_secret(path: &Option<PathBuf>, key: &str) -> Result<Option<String>, String> {
    match path {
        None => Ok(None),
        Some(p) => std::fs::read_to_string(p)
            .map(|s| Some(s.trim().to_string()))
            .map_err(|e| format!("cannot read {key} {}: {e}", p.display())),
    }
}

/// `pm2.user`, looked up.
pub fn pm2_user(cfg: &HostConfig) -> Result<Option<Arc<RunAs>>, String> {
    cfg.pm2
        .user
        .as_deref()
        .map(|u| RunAs::lookup(u).map(Arc::new))
        .transpose()
}

/// The engine's view of this server.
pub fn settings(cfg: &HostConfig) -> Result<Settings, String> {
    Ok(Settings {
        host: cfg.host_name(),
        environment: cfg.environment_name(),
        labels: cfg.labels.clone(),
        root: cfg.root.clone(),
        state_dir: cfg.state_dir.clone(),
        branch: cfg.repo.branch.clone(),
        keep_releases: cfg.keep_releases,
        context: cfg.status.context.clone(),
        poll_interval: cfg.repo.poll_interval.0,
        allowed_signers_file: cfg.repo.allowed_signers_file.clone(),
        pm2_user: pm2_user(cfg)?,
        faults: crate::engine::Faults::from_env(),
        identity_file: cfg.identity_file.clone(),
    })
}

/// Which credentials a command needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// A pass (`run`, `once`, `retry`): every credential file it names
    /// must be readable.
    Pass,
    /// A command that moves between what is on disk (`rollback`): the
    /// forge token and the S3 keys are read when they can be and left out
    /// when not (under the unit they are systemd credentials a shell cannot
    /// see); nothing is posted or downloaded.
    Local,
    /// A command that only looks (`plan`): as `Local`, and it starts no pm2,
    /// so it does not check that pm2.user can use pm2's home (it may run
    /// as `sudo -u hoist`, without the capabilities to act as that user).
    Look,
}

/// A credential file: an error for a pass, left out (said at debug level)
/// for a local command.
fn credential(path: &Option<PathBuf>, key: &str, need: Need) -> Result<Option<String>, String> {
    match (read_secret(path, key), need) {
        (Ok(v), _) => Ok(v),
        (Err(e), Need::Pass) => Err(e),
        (Err(e), Need::Local | Need::Look) => {
            tracing::debug!("{e}; not needed here");
            Ok(None)
        }
    }
}

/// Builds the engine's providers. Must run inside the tokio runtime (the
/// reporter is a task).
pub fn parts(cfg: &HostConfig, metrics: Arc<Metrics>) -> Result<Parts, String> {
    parts_for(cfg, metrics, Need::Pass)
}

/// [`parts`], reading only the credentials `need` asks for.
pub fn parts_for(cfg: &HostConfig, metrics: Arc<Metrics>, need: Need) -> Result<Parts, String> {
    let trusted = TrustedKeys::parse(&cfg.storage.trusted_keys)?;
    let s3 = match &cfg.storage.s3 {
        Some(s) => Some(S3Settings {
            endpoint: s.endpoint.clone(),
            region: s.region.clone(),
            access_key_id: credential(
                &s.access_key_id_file,
                "storage.s3.access_key_id_file",
                need,
            )?,
            secret_access_key: credential(
                &s.secret_access_key_file,
                "storage.s3.secret_access_key_file",
                need,
            )?,
        }),
        None => None,
    };
    let fetch = FetchSettings {
        allow_http: cfg.allow_http,
        ca_file: cfg.ca_file.clone(),
        s3,
        watch: crate::progress::watcher(),
    };
    let (provider, outbox) = match (build_provider(cfg), need) {
        (Ok(p), _) => (p, Some(cfg.state_dir.join(report::outbox::FILE_NAME))),
        (Err(e), Need::Pass) => return Err(e),
        // Nothing is posted: a provider that keeps nothing, and no outbox
        // it would empty (what waits there is the daemon's to post).
        (Err(e), Need::Local | Need::Look) => {
            tracing::debug!("{e}; not needed here");
            (
                report::build_provider(&ProviderSettings {
                    kind: ProviderKind::None,
                    ..provider_settings(cfg, None)
                })
                .map_err(|e| e.to_string())?,
                None,
            )
        }
    };
    let mut pm2 = Pm2::new(
        &cfg.pm2.command,
        cfg.pm2.home.clone(),
        &cfg.root.join(".ecosystems"),
    );
    if let Some(u) = pm2_user(cfg)? {
        pm2 = pm2.run_as(u);
    }
    let reporter = Reporter::spawn(provider.clone(), outbox).with_metrics(metrics.clone());
    Ok(Parts {
        source: Source::new(cfg),
        pm: Arc::new(pm2),
        cache: Cache::new(cfg.state_dir.join("cache")),
        fetch,
        limits: UnpackLimits {
            max_bytes: cfg.limits.max_unpacked_size.0,
            max_entries: cfg.limits.max_entries,
        },
        trusted,
        reporter,
        forge: provider,
        metrics,
    })
}

/// The status provider `status:` asks for.
pub fn build_provider(cfg: &HostConfig) -> Result<Arc<dyn report::Provider>, String> {
    let kind = match cfg.status.provider {
        ProviderName::Github => ProviderKind::Github,
        ProviderName::Gitea => ProviderKind::Gitea,
        ProviderName::Gitlab => ProviderKind::Gitlab,
        ProviderName::File => ProviderKind::File,
        ProviderName::None => ProviderKind::None,
    };
    let token = read_secret(&cfg.status.token_file, "status.token_file")?;
    report::build_provider(&ProviderSettings {
        kind,
        ..provider_settings(cfg, token)
    })
    .map_err(|e| e.to_string())
}

fn provider_settings(cfg: &HostConfig, token: Option<String>) -> ProviderSettings {
    ProviderSettings {
        kind: ProviderKind::None,
        api_url: cfg.status.api_url.clone(),
        repository: cfg.status.repository.clone(),
        token,
        path: Some(cfg.status_file()),
        allow_http: cfg.allow_http,
        ca_file: cfg.ca_file.clone(),
        target_url: None,
    }
}

/// The engine for this host config: creates `state_dir` and `root` when
/// missing, checks that pm2.user can use pm2's home, reads the
/// credentials, loads state.json.
pub async fn engine(cfg: &HostConfig, metrics: Arc<Metrics>) -> Result<Engine, EngineError> {
    engine_for(cfg, metrics, Need::Pass).await
}

/// [`engine`], reading only the credentials `need` asks for.
pub async fn engine_for(
    cfg: &HostConfig,
    metrics: Arc<Metrics>,
    need: Need,
) -> Result<Engine, EngineError> {
    for (key, dir) in [("state_dir", &cfg.state_dir), ("root", &cfg.root)] {
        std::fs::create_dir_all(dir).map_err(|e| {
            EngineError::Other(format!("cannot create {key} {}: {e}", dir.display()))
        })?;
    }
    warn_about_exposed_secrets(cfg);
    let settings = settings(cfg).map_err(EngineError::Other)?;
    if need != Need::Look {
        crate::pm2::check_home(settings.pm2_user.as_deref(), cfg.pm2.home.as_deref())
            .map_err(EngineError::Other)?;
        crate::pm2::check_root(settings.pm2_user.as_deref(), &cfg.root)
            .map_err(EngineError::Other)?;
    }
    let parts = parts_for(cfg, metrics, need).map_err(EngineError::Other)?;
    Engine::new(settings, parts).await
}

/// Logs a warning for each secret file of the host config that users other
/// than its owner may read: hoist still starts (refusing would take a server
/// down over a chmod), but the operator is told what to fix. Called once at
/// start.
pub fn warn_about_exposed_secrets(cfg: &HostConfig) {
    let mut files = vec![
        ("repo.token_file", &cfg.repo.token_file),
        ("repo.ssh_key_file", &cfg.repo.ssh_key_file),
        ("status.token_file", &cfg.status.token_file),
        ("webhook_secret_file", &cfg.webhook_secret_file),
        ("identity_file", &cfg.identity_file),
    ];
    if let Some(s3) = &cfg.storage.s3 {
        files.push(("storage.s3.access_key_id_file", &s3.access_key_id_file));
        files.push((
            "storage.s3.secret_access_key_file",
            &s3.secret_access_key_file,
        ));
    }
    for (key, path) in files {
        let Some(path) = path else { continue };
        if let Some(mode) = exposed_mode(path) {
            tracing::warn!(
                "{key} {} can be read by other users (mode {:o}); run: chmod 600 {}",
                path.display(),
                mode & 0o777,
                path.display()
            );
        }
    }
}

/// The file's mode when group or others may read it.
fn exposed_mode(path: &std::path::Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    (mode & 0o044 != 0).then_some(mode)
}

#[cfg(test)]
mod exposed_tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn only_files_readable_by_others_are_exposed() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("token");
        std::fs::write(&f, "t").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(exposed_mode(&f), None);
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(exposed_mode(&f).is_some());
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(exposed_mode(&f).is_some());
        assert_eq!(exposed_mode(&dir.path().join("missing")), None);
    }
}
