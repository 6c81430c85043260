//! The host config (`/etc/hoist/hoist.yaml`, SPEC §1): one file per server,
//! written by its operator. Secrets are never in it, only paths to them.

use super::{ByteSize, ConfigError, Dur, key_path};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const DEFAULT_CONFIG_PATH: &str = "/etc/hoist/hoist.yaml";
pub const DEFAULT_CONTEXT: &str = "hoist/{environment}/{host}";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9107";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostConfig {
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub labels: Vec<String>,
    #[serde(default)]
    pub environment: Option<String>,
    #[serde(default = "default_root")]
    pub root: PathBuf,
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    #[serde(default = "default_keep")]
    pub keep_releases: u32,
    pub repo: RepoConfig,
    #[serde(default)]
    pub storage: StorageConfig,
    #[serde(default)]
    pub status: StatusConfig,
    #[serde(default)]
    pub pm2: Pm2Config,
    #[serde(default = "default_listen")]
    pub listen: String,
    #[serde(default)]
    pub allow_http: bool,
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    #[serde(default)]
    pub webhook_secret_file: Option<PathBuf>,
    /// This server's private key (age X25519 or OpenSSH ed25519): opens the
    /// app secrets sealed to it (SPEC §7).
    #[serde(default)]
    pub identity_file: Option<PathBuf>,
    /// Unpack limits (not in SPEC §1's example; optional, see docs/security.md).
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Where this config was read from (not a key in the file).
    #[serde(skip)]
    pub source_path: PathBuf,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoConfig {
    pub url: String,
    #[serde(default = "default_branch")]
    pub branch: String,
    #[serde(default = "default_apps_path")]
    pub path: String,
    #[serde(default = "default_poll")]
    pub poll_interval: Dur,
    #[serde(default = "default_jitter")]
    pub jitter: Dur,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    #[serde(default)]
    pub ssh_key_file: Option<PathBuf>,
    #[serde(default)]
    pub known_hosts_file: Option<PathBuf>,
    #[serde(default)]
    pub allowed_signers_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    #[serde(default)]
    pub s3: Option<S3Config>,
    #[serde(default)]
    pub trusted_keys: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default = "default_region")]
    pub region: String,
    #[serde(default)]
    pub access_key_id_file: Option<PathBuf>,
    #[serde(default)]
    pub secret_access_key_file: Option<PathBuf>,
}

/// How much one artifact may unpack to: a hostile or broken archive must not
/// fill the disk or the inode table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Total bytes of file data in one release (default 4GiB).
    #[serde(default = "default_max_unpacked_size")]
    pub max_unpacked_size: ByteSize,
    /// Archive entries (files, dirs, links) in one release (default 200000).
    #[serde(default = "default_max_entries")]
    pub max_entries: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_unpacked_size: default_max_unpacked_size(),
            max_entries: default_max_entries(),
        }
    }
}

fn default_max_unpacked_size() -> ByteSize {
    ByteSize(4 << 30)
}
fn default_max_entries() -> u64 {
    200_000
}

/// What `HostConfig::preflight` checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preflight {
    /// For a pass (`run`, `once`, a local `retry`, a reload): everything,
    /// the credential files included.
    Pass,
    /// For `plan` and a local `rollback`, run from an operator's shell: the
    /// credential files are left out, since the service may get them as
    /// systemd credentials that a shell cannot see, and a rollback needs
    /// none of them.
    Local,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ProviderName {
    Github,
    Gitea,
    Gitlab,
    File,
    #[default]
    None,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusConfig {
    #[serde(default)]
    pub provider: ProviderName,
    #[serde(default)]
    pub api_url: Option<String>,
    #[serde(default)]
    pub repository: Option<String>,
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    #[serde(default = "default_context")]
    pub context: String,
    #[serde(default)]
    pub path: Option<PathBuf>,
}

impl Default for StatusConfig {
    fn default() -> Self {
        StatusConfig {
            provider: ProviderName::None,
            api_url: None,
            repository: None,
            token_file: None,
            context: default_context(),
            path: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pm2Config {
    #[serde(default = "default_pm2")]
    pub command: String,
    #[serde(default)]
    pub home: Option<PathBuf>,
    /// pm2 and the apps run as this user (default: hoist's own).
    #[serde(default)]
    pub user: Option<String>,
}

impl Default for Pm2Config {
    fn default() -> Self {
        Pm2Config {
            command: default_pm2(),
            home: None,
            user: None,
        }
    }
}

fn default_root() -> PathBuf {
    PathBuf::from("/srv/hoist")
}
fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/hoist")
}
fn default_keep() -> u32 {
    5
}
fn default_branch() -> String {
    "main".into()
}
fn default_apps_path() -> String {
    "apps".into()
}
fn default_poll() -> Dur {
    Dur(Duration::from_secs(15))
}
fn default_jitter() -> Dur {
    Dur(Duration::from_secs(3))
}
fn default_region() -> String {
    "us-east-1".into()
}
fn default_context() -> String {
    DEFAULT_CONTEXT.into()
}
fn default_pm2() -> String {
    "pm2".into()
}
fn default_listen() -> String {
    DEFAULT_LISTEN.into()
}

impl HostConfig {
    /// Reads and validates the host config at `path`.
    pub fn load(path: &Path) -> Result<HostConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new(path, None, format!("cannot read the host config: {e}"))
        })?;
        HostConfig::parse(path, &text)
    }

    /// Parses host config text; `path` is used for messages and to resolve
    /// relative paths (against the config file's directory).
    pub fn parse(path: &Path, text: &str) -> Result<HostConfig, ConfigError> {
        let mut cfg: HostConfig = super::parse_yaml(path, text)?;
        cfg.source_path = path.to_path_buf();
        let base = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        let base = if base.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            base
        };
        cfg.resolve_paths(&base);
        // The default jitter (3s) never exceeds a shorter poll_interval;
        // a jitter the user wrote does, and validate says so.
        let jitter_written = super::locate::line_of(text, &key_path("repo.jitter")).is_some();
        if !jitter_written {
            cfg.repo.jitter = cfg.repo.jitter.min(cfg.repo.poll_interval);
        }
        cfg.validate(path, text)?;
        Ok(cfg)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        let fix_opt = |p: &mut Option<PathBuf>| {
            if let Some(p) = p
                && p.is_relative()
            {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.root);
        fix(&mut self.state_dir);
        fix_opt(&mut self.repo.token_file);
        fix_opt(&mut self.repo.ssh_key_file);
        fix_opt(&mut self.repo.known_hosts_file);
        fix_opt(&mut self.repo.allowed_signers_file);
        if let Some(s3) = &mut self.storage.s3 {
            fix_opt(&mut s3.access_key_id_file);
            fix_opt(&mut s3.secret_access_key_file);
        }
        fix_opt(&mut self.status.token_file);
        fix_opt(&mut self.status.path);
        fix_opt(&mut self.pm2.home);
        fix_opt(&mut self.ca_file);
        fix_opt(&mut self.webhook_secret_file);
        fix_opt(&mut self.identity_file);
        // A local path as the repo URL is relative to the config too.
        let url = &self.repo.url;
        if !url.contains("://") && !is_scp_like(url) && Path::new(url).is_relative() {
            self.repo.url = base.join(url).to_string_lossy().into_owned();
        }
    }

    fn validate(&self, path: &Path, text: &str) -> Result<(), ConfigError> {
        let err = |key: &str, msg: String| ConfigError::at(path, text, &key_path(key), msg);
        if let Some(h) = &self.host
            && h.trim().is_empty()
        {
            return Err(err("host", "host must not be empty".into()));
        }
        if self.keep_releases == 0 {
            return Err(err(
                "keep_releases",
                "keep_releases must be at least 1".into(),
            ));
        }
        let url = self.repo.url.as_str();
        if url.is_empty() {
            return Err(err("repo.url", "repo.url must not be empty".into()));
        }
        if let Some(rest) = url.strip_prefix("http://") {
            let _ = rest;
            if !self.allow_http {
                return Err(err(
                    "repo.url",
                    format!(
                        "repo.url {} uses plain http; use https or set allow_http: true",
                        crate::redact::url(url)
                    ),
                ));
            }
        } else if url.contains("://")
            && !["https://", "ssh://", "file://"]
                .iter()
                .any(|s| url.starts_with(s))
        {
            return Err(err(
                "repo.url",
                format!(
                    "repo.url {} has an unsupported scheme; use https://, ssh://, file:// or a local path",
                    crate::redact::url(url)
                ),
            ));
        }
        let ssh = url.starts_with("ssh://") || (!url.contains("://") && is_scp_like(url));
        if ssh && self.repo.known_hosts_file.is_none() {
            return Err(err(
                "repo.url",
                format!(
                    "repo.url {} is an SSH remote, so repo.known_hosts_file must name the host keys to trust",
                    crate::redact::url(url)
                ),
            ));
        }
        if self.repo.branch.trim().is_empty() || self.repo.branch.contains("..") {
            return Err(err(
                "repo.branch",
                "repo.branch is not a valid branch name".into(),
            ));
        }
        let p = self.repo.path.trim_matches('/');
        if p.split('/').any(|c| c == "..") {
            return Err(err(
                "repo.path",
                "repo.path must stay inside the repository".into(),
            ));
        }
        if self.repo.poll_interval.0.is_zero() {
            return Err(err(
                "repo.poll_interval",
                "repo.poll_interval must be more than 0s".into(),
            ));
        }
        if self.repo.jitter > self.repo.poll_interval {
            return Err(err(
                "repo.jitter",
                format!(
                    "repo.jitter ({}) is longer than repo.poll_interval ({}); the jitter spreads the polls within one interval, so make it at most as long",
                    self.repo.jitter, self.repo.poll_interval
                ),
            ));
        }
        if let Some(s3) = &self.storage.s3
            && let Some(ep) = &s3.endpoint
        {
            check_http_url(ep, "storage.s3.endpoint", self.allow_http)
                .map_err(|m| err("storage.s3.endpoint", m))?;
        }
        if self.limits.max_entries == 0 {
            return Err(err(
                "limits.max_entries",
                "limits.max_entries must be at least 1".into(),
            ));
        }
        if self.limits.max_unpacked_size.0 == 0 {
            return Err(err(
                "limits.max_unpacked_size",
                "limits.max_unpacked_size must be more than 0".into(),
            ));
        }
        for (i, key) in self.storage.trusted_keys.iter().enumerate() {
            if key.trim().is_empty() {
                return Err(err(
                    &format!("storage.trusted_keys[{i}]"),
                    format!("storage.trusted_keys[{i}] is empty"),
                ));
            }
        }
        match self.status.provider {
            ProviderName::Github | ProviderName::Gitea | ProviderName::Gitlab => {
                if let Some(api) = &self.status.api_url {
                    check_http_url(api, "status.api_url", self.allow_http)
                        .map_err(|m| err("status.api_url", m))?;
                } else if self.status.provider != ProviderName::Github {
                    return Err(err(
                        "status.provider",
                        "status.api_url is required for providers gitea and gitlab".into(),
                    ));
                }
                if self.status.repository.as_deref().unwrap_or("").is_empty() {
                    return Err(err(
                        "status.provider",
                        "status.repository is required for forge status providers".into(),
                    ));
                }
            }
            ProviderName::File | ProviderName::None => {}
        }
        let ctx = &self.status.context;
        let stripped = ctx
            .replace("{environment}", "")
            .replace("{host}", "")
            .replace("{app}", "");
        if stripped.contains('{') || stripped.contains('}') {
            return Err(err(
                "status.context",
                format!(
                    "status.context {ctx:?} has an unknown placeholder; use {{environment}}, {{host}} and {{app}}"
                ),
            ));
        }
        if !self.listen.is_empty() && self.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(err(
                "listen",
                format!(
                    "listen {:?} is not an address like 127.0.0.1:9107 (an empty string disables it)",
                    self.listen
                ),
            ));
        }
        if self.pm2.command.trim().is_empty() {
            return Err(err("pm2.command", "pm2.command must not be empty".into()));
        }
        if let Some(u) = &self.pm2.user
            && (u.trim().is_empty() || u.contains(char::is_whitespace))
        {
            return Err(err(
                "pm2.user",
                format!("pm2.user {u:?} is not a user name"),
            ));
        }
        if let Some(env) = &self.environment
            && let Err(m) = super::EnvName::new(env)
        {
            return Err(err("environment", m));
        }
        Ok(())
    }

    /// Checks what the config names on this machine, for the commands that
    /// act on it: a config that cannot work is said at start, naming its
    /// key, not at the first deploy. Paths are checked, nothing is created
    /// and no secret is read: `root` and `state_dir` must exist or have a
    /// parent that does (a mistyped path is not created), `pm2.command` must
    /// be an executable, a local `repo.url` must exist, and with
    /// [`Preflight::Pass`] every file a `*_file` key names must be a
    /// readable file (`identity_file` aside: `hoist keygen` writes it).
    pub fn preflight(&self, scope: Preflight) -> Result<(), ConfigError> {
        let text = std::fs::read_to_string(&self.source_path).unwrap_or_default();
        let err =
            |key: &str, msg: String| ConfigError::at(&self.source_path, &text, &key_path(key), msg);
        for (key, dir) in [("root", &self.root), ("state_dir", &self.state_dir)] {
            match std::fs::metadata(dir) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => return Err(err(key, format!("{key} {} is not a folder", dir.display()))),
                Err(_) => {
                    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty());
                    if let Some(parent) = parent
                        && !parent.is_dir()
                    {
                        return Err(err(
                            key,
                            format!(
                                "{key} {} cannot be created: its parent {} does not exist (a typo?)",
                                dir.display(),
                                parent.display()
                            ),
                        ));
                    }
                }
            }
        }
        if let Err(why) = find_executable(&self.pm2.command) {
            return Err(err(
                "pm2.command",
                format!("pm2.command {:?} {why}", self.pm2.command),
            ));
        }
        if let Some(path) = crate::source::local_repo_path(&self.repo.url)
            && !path.exists()
        {
            return Err(err(
                "repo.url",
                format!(
                    "repo.url {} does not exist; a local config repository must be a path to a git repository",
                    path.display()
                ),
            ));
        }
        if scope == Preflight::Local {
            return Ok(());
        }
        let forge = matches!(
            self.status.provider,
            ProviderName::Github | ProviderName::Gitea | ProviderName::Gitlab
        );
        let s3 = self.storage.s3.as_ref();
        let files = [
            ("repo.token_file", self.repo.token_file.as_ref()),
            ("repo.ssh_key_file", self.repo.ssh_key_file.as_ref()),
            ("repo.known_hosts_file", self.repo.known_hosts_file.as_ref()),
            (
                "repo.allowed_signers_file",
                self.repo.allowed_signers_file.as_ref(),
            ),
            (
                "storage.s3.access_key_id_file",
                s3.and_then(|s| s.access_key_id_file.as_ref()),
            ),
            (
                "storage.s3.secret_access_key_file",
                s3.and_then(|s| s.secret_access_key_file.as_ref()),
            ),
            (
                "status.token_file",
                self.status.token_file.as_ref().filter(|_| forge),
            ),
            ("ca_file", self.ca_file.as_ref()),
            ("webhook_secret_file", self.webhook_secret_file.as_ref()),
        ];
        for (key, file) in files {
            let Some(file) = file else { continue };
            let readable = std::fs::File::open(file).and_then(|f| f.metadata());
            match readable {
                Ok(m) if m.is_file() => {}
                Ok(_) => {
                    return Err(err(key, format!("{key} {} is not a file", file.display())));
                }
                Err(e) => {
                    return Err(err(
                        key,
                        format!("{key} {} cannot be read: {e}", file.display()),
                    ));
                }
            }
        }
        Ok(())
    }

    /// This server's name: `host`, or the machine's hostname.
    pub fn host_name(&self) -> String {
        if let Some(h) = &self.host {
            return h.clone();
        }
        nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_else(|| "localhost".into())
    }

    /// The environment named in statuses: `environment`, or the branch.
    pub fn environment_name(&self) -> String {
        self.environment
            .clone()
            .unwrap_or_else(|| self.repo.branch.clone())
    }

    /// The folder of manifests inside the repo, without surrounding slashes.
    pub fn apps_path(&self) -> &str {
        let p = self.repo.path.trim_matches('/');
        if p.is_empty() { "." } else { p }
    }

    /// The status file for provider `file` (default `<state_dir>/statuses.jsonl`).
    pub fn status_file(&self) -> PathBuf {
        self.status
            .path
            .clone()
            .unwrap_or_else(|| self.state_dir.join("statuses.jsonl"))
    }
}

/// Whether `command` runs: a path to an executable file, or a name found
/// in one of `PATH`'s folders. The error completes "pm2.command \"x\" ...".
fn find_executable(command: &str) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if command.contains('/') {
        let p = Path::new(command);
        if !p.exists() {
            return Err("does not exist".into());
        }
        return if executable(p) {
            Ok(())
        } else {
            Err("is not an executable file".into())
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    if std::env::split_paths(&path).any(|d| executable(&d.join(command))) {
        Ok(())
    } else {
        Err("is not found on PATH; install pm2 (npm install -g pm2) or give its full path".into())
    }
}

fn is_scp_like(url: &str) -> bool {
    // git@host:path — a colon before any slash, and something before it.
    match (url.find(':'), url.find('/')) {
        (Some(c), Some(s)) => c > 0 && c < s,
        (Some(c), None) => c > 0,
        _ => false,
    }
}

fn check_http_url(url: &str, key: &str, allow_http: bool) -> Result<(), String> {
    if url.starts_with("https://") {
        Ok(())
    } else if url.starts_with("http://") {
        if allow_http {
            Ok(())
        } else {
            Err(format!(
                "{key} {} uses plain http; use https or set allow_http: true",
                crate::redact::url(url)
            ))
        }
    } else {
        Err(format!(
            "{key} {} must be an https:// URL",
            crate::redact::url(url)
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<HostConfig, ConfigError> {
        HostConfig::parse(Path::new("/etc/hoist/hoist.yaml"), text)
    }

    const MINIMAL: &str = "repo:\n  url: https://git.example.com/acme/deploy.git\n";

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.root, PathBuf::from("/srv/hoist"));
        assert_eq!(c.state_dir, PathBuf::from("/var/lib/hoist"));
        assert_eq!(c.keep_releases, 5);
        assert_eq!(c.repo.branch, "main");
        assert_eq!(c.apps_path(), "apps");
        assert_eq!(c.repo.poll_interval.0, Duration::from_secs(15));
        assert_eq!(c.status.provider, ProviderName::None);
        assert_eq!(c.status.context, DEFAULT_CONTEXT);
        assert_eq!(c.listen, DEFAULT_LISTEN);
        assert_eq!(c.environment_name(), "main");
    }

    #[test]
    fn full_spec_example_parses() {
        let text = r#"
host: web-1
labels: [web, eu-west]
environment: production
root: /srv/hoist
state_dir: /var/lib/hoist
keep_releases: 5
repo:
  url: https://git.example.com/acme/deploy.git
  branch: main
  path: apps
  poll_interval: 15s
  jitter: 3s
  token_file: /etc/hoist/git-token
  ssh_key_file: /etc/hoist/id_ed25519
  known_hosts_file: /etc/hoist/known_hosts
  allowed_signers_file: /etc/hoist/allowed_signers
storage:
  s3:
    endpoint: https://s3.example.com
    region: us-east-1
    access_key_id_file: /etc/hoist/s3-key-id
    secret_access_key_file: /etc/hoist/s3-secret
  trusted_keys: []
status:
  provider: github
  api_url: https://api.github.com
  repository: acme/deploy
  token_file: /etc/hoist/forge-token
  context: "hoist/{environment}/{host}"
  path: /var/lib/hoist/statuses.jsonl
pm2:
  command: pm2
  home: /home/deploy/.pm2
  user: hoist-apps
listen: 127.0.0.1:9107
allow_http: false
ca_file: /etc/hoist/ca.pem
webhook_secret_file: /etc/hoist/webhook-secret
identity_file: /etc/hoist/identity
"#;
        let c = parse(text).unwrap();
        assert_eq!(c.host_name(), "web-1");
        assert_eq!(c.labels, vec!["web", "eu-west"]);
        assert_eq!(c.status.provider, ProviderName::Github);
        assert_eq!(c.environment_name(), "production");
    }

    #[test]
    fn unknown_key_names_file_and_line() {
        let e = parse("repo:\n  url: https://x/y.git\n  brnch: main\n").unwrap_err();
        assert_eq!(e.line, Some(3), "{e}");
        assert!(e.to_string().starts_with("/etc/hoist/hoist.yaml:3:"), "{e}");
        assert!(e.message.contains("brnch"), "{e}");
    }

    #[test]
    fn bad_duration_is_located() {
        let e = parse("repo:\n  url: https://x/y.git\n  poll_interval: fast\n").unwrap_err();
        assert_eq!(e.line, Some(3), "{e}");
        assert!(e.message.contains("invalid duration"), "{e}");
    }

    #[test]
    fn plain_http_refused_unless_allowed() {
        let e = parse("repo:\n  url: http://git.local/x.git\n").unwrap_err();
        assert!(e.message.contains("allow_http"), "{e}");
        assert_eq!(e.line, Some(2));
        assert!(parse("allow_http: true\nrepo:\n  url: http://git.local/x.git\n").is_ok());
        let e = parse(
            "repo:\n  url: https://x/y.git\nstatus:\n  provider: github\n  repository: a/b\n  api_url: http://127.0.0.1:1\n",
        )
        .unwrap_err();
        assert!(e.message.contains("status.api_url"), "{e}");
    }

    #[test]
    fn ssh_remotes_need_known_hosts() {
        for url in [
            "ssh://git@git.example.com/acme/deploy.git",
            "git@git.example.com:acme/deploy.git",
        ] {
            let e = parse(&format!("repo:\n  url: {url}\n")).unwrap_err();
            assert!(e.message.contains("repo.known_hosts_file"), "{e}");
            assert_eq!(e.line, Some(2));
            parse(&format!(
                "repo:\n  url: {url}\n  known_hosts_file: /etc/hoist/known_hosts\n"
            ))
            .unwrap();
        }
    }

    #[test]
    fn credentials_in_urls_never_echoed() {
        let e = parse("repo:\n  url: http://user:s3cret@git.local/x.git\n").unwrap_err();
        assert!(!e.to_string().contains("s3cret"), "{e}");
    }

    #[test]
    fn relative_paths_resolve_against_the_config_dir() {
        let c = HostConfig::parse(
            Path::new("/opt/h/hoist.yaml"),
            "root: srv\nstate_dir: state\nrepo:\n  url: config.git\n  token_file: tok\n",
        )
        .unwrap();
        assert_eq!(c.root, PathBuf::from("/opt/h/srv"));
        assert_eq!(c.state_dir, PathBuf::from("/opt/h/state"));
        assert_eq!(c.repo.url, "/opt/h/config.git");
        assert_eq!(c.repo.token_file, Some(PathBuf::from("/opt/h/tok")));
    }

    #[test]
    fn context_placeholders_checked() {
        let e = parse("repo:\n  url: https://x/y.git\nstatus:\n  context: \"hoist/{env}\"\n")
            .unwrap_err();
        assert!(e.message.contains("placeholder"), "{e}");
        assert_eq!(e.line, Some(4));
    }

    #[test]
    fn forge_needs_repository() {
        let e = parse("repo:\n  url: https://x/y.git\nstatus:\n  provider: github\n").unwrap_err();
        assert!(e.message.contains("status.repository"), "{e}");
        let e =
            parse("repo:\n  url: https://x/y.git\nstatus:\n  provider: gitea\n  repository: a/b\n")
                .unwrap_err();
        assert!(e.message.contains("api_url"), "{e}");
    }

    #[test]
    fn bad_listen_and_keep() {
        assert!(parse("listen: nope\nrepo:\n  url: https://x/y.git\n").is_err());
        assert_eq!(
            parse("listen: \"\"\nrepo:\n  url: https://x/y.git\n")
                .unwrap()
                .listen,
            ""
        );
        assert!(parse("keep_releases: 0\nrepo:\n  url: https://x/y.git\n").is_err());
        assert!(parse("keep_releases: -1\nrepo:\n  url: https://x/y.git\n").is_err());
    }

    #[test]
    fn jitter_longer_than_the_poll_interval_is_refused_at_its_line() {
        let e = parse("repo:\n  url: https://x/y.git\n  poll_interval: 10s\n  jitter: 1m\n")
            .unwrap_err();
        assert_eq!(e.line, Some(4), "{e}");
        assert!(e.message.contains("repo.jitter (1m)"), "{e}");
        assert!(e.message.contains("repo.poll_interval (10s)"), "{e}");
        // Equal is fine; the default jitter (3s) shrinks to a shorter interval.
        parse("repo:\n  url: https://x/y.git\n  poll_interval: 10s\n  jitter: 10s\n").unwrap();
        let c = parse("repo:\n  url: https://x/y.git\n  poll_interval: 1s\n").unwrap();
        assert_eq!(c.repo.jitter.0, Duration::from_secs(1));
        assert_eq!(
            parse(MINIMAL).unwrap().repo.jitter.0,
            Duration::from_secs(3)
        );
        let e = parse("repo:\n  url: https://x/y.git\n  poll_interval: 0s\n").unwrap_err();
        assert_eq!(e.line, Some(3), "{e}");
        assert!(e.message.contains("repo.poll_interval"), "{e}");
    }

    #[test]
    fn missing_repo_is_an_error() {
        let e = parse("host: a\n").unwrap_err();
        assert!(e.message.contains("repo"), "{e}");
    }

    #[test]
    fn unpack_limits_have_defaults_and_take_sizes_with_units() {
        let c = parse("repo:\n  url: https://x/y.git\n").unwrap();
        assert_eq!(c.limits.max_unpacked_size, ByteSize(4 << 30));
        assert_eq!(c.limits.max_entries, 200_000);
        let c = parse(
            "repo:\n  url: https://x/y.git\nlimits:\n  max_unpacked_size: 512MiB\n  max_entries: 1000\n",
        )
        .unwrap();
        assert_eq!(c.limits.max_unpacked_size, ByteSize(512 << 20));
        assert_eq!(c.limits.max_entries, 1000);
        for (text, bytes) in [("4GiB", 4u64 << 30), ("10MB", 10_000_000), ("123", 123)] {
            assert_eq!(ByteSize::parse(text), Ok(ByteSize(bytes)), "{text}");
        }
        let e = parse("repo:\n  url: https://x/y.git\nlimits:\n  max_unpacked_size: huge\n")
            .unwrap_err();
        assert_eq!(e.line, Some(4), "{e}");
        assert!(e.message.contains("invalid size"), "{e}");
        assert!(parse("repo:\n  url: https://x/y.git\nlimits:\n  max_entries: 0\n").is_err());
        assert!(parse("repo:\n  url: https://x/y.git\nlimits:\n  max_files: 3\n").is_err());
    }
}
