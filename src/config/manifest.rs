//! App manifests (`<path>/<app>.yaml` in the config repo, SPEC §2).
//!
//! A manifest says which release an app runs on the servers it targets and
//! how to run it. Manifests are read from a git tree (the daemon) or from a
//! checkout on disk (`hoist check`); both go through `commit.rs`, then
//! `parse_manifest` and `validate_app_set`, so CI and servers agree on what
//! is valid.

use super::{
    AppName, ConfigError, Dur, ReleaseName, Sha256, SharedPath, check_host_glob, glob_match,
    key_path,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub release: ReleaseName,
    pub artifact: Artifact,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targets: Option<Targets>,
    #[serde(default)]
    pub shared: Vec<SharedPath>,
    pub pm2: Vec<serde_json::Value>,
    #[serde(default)]
    pub health: Health,
    #[serde(default)]
    pub hooks: Hooks,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_releases: Option<u32>,
    #[serde(default)]
    pub paused: bool,
    /// Files sealed with age in the config repo, opened on the server (SPEC §7).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<SecretFile>,
    /// Deploy across the environment in waves (SPEC §8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
}

/// One `secrets` entry: a sealed file in the repo and where its plaintext
/// appears in the release.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SecretFile {
    /// A repo path; `{environment}` is replaced by the server's environment.
    pub from: String,
    /// A relative path inside the release (a file, never a directory).
    pub to: SharedPath,
}

impl SecretFile {
    /// The repo path of the sealed file for one environment.
    pub fn from_for(&self, environment: &str) -> String {
        self.from.replace("{environment}", environment)
    }
}

/// `rollout`: the waves an app's new release spreads through.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Rollout {
    pub waves: Vec<Wave>,
    /// Failed hosts tolerated before the rollout halts.
    #[serde(default)]
    pub max_failures: u32,
    /// How long a wave's hosts have, from the wave's opening, to report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<Dur>,
}

/// One wave: hosts chosen by `labels` (all present) and/or `hosts` (any
/// glob), or by `percent` of the app's hosts; then `bake` before the next.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Wave {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub labels: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bake: Option<Dur>,
}

impl Wave {
    pub fn bake(&self) -> std::time::Duration {
        self.bake.map(|d| d.0).unwrap_or_default()
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    pub url: String,
    pub sha256: Sha256,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature_url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Targets {
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub labels: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Health {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    #[serde(default = "default_timeout")]
    pub timeout: Dur,
    #[serde(default = "default_stable")]
    pub stable_for: Dur,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            http: None,
            timeout: default_timeout(),
            stable_for: default_stable(),
        }
    }
}

fn default_timeout() -> Dur {
    Dur(Duration::from_secs(30))
}
fn default_stable() -> Dur {
    Dur(Duration::from_secs(3))
}

#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Hooks {
    #[serde(default)]
    pub before_activate: Vec<Vec<String>>,
    #[serde(default)]
    pub after_activate: Vec<Vec<String>>,
}

/// Every app of one commit (or checkout), by name.
pub type AppSet = BTreeMap<AppName, Manifest>;

impl Targets {
    /// Whether a server with this host name and these labels runs the app:
    /// any host glob matches (or none given) and every label is present.
    pub fn matches(&self, host: &str, labels: &[String]) -> bool {
        let host_ok = self.hosts.is_empty() || self.hosts.iter().any(|g| glob_match(g, host));
        let labels_ok = self.labels.iter().all(|l| labels.contains(l));
        host_ok && labels_ok
    }
}

impl Manifest {
    pub fn targets_host(&self, host: &str, labels: &[String]) -> bool {
        self.targets
            .as_ref()
            .is_none_or(|t| t.matches(host, labels))
    }

    /// The pm2 process names this manifest defines, in order.
    pub fn process_names(&self) -> Vec<String> {
        self.pm2
            .iter()
            .filter_map(|p| p.get("name").and_then(|n| n.as_str()).map(String::from))
            .collect()
    }
}

/// Parses one manifest. `file` is how the file is named in messages
/// (`apps/web.yaml`); the app name is its stem.
pub fn parse_manifest(file: &Path, text: &str) -> Result<(AppName, Manifest), ConfigError> {
    let stem = file
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    let app = AppName::new(stem).map_err(|m| ConfigError::new(file, None, m))?;
    let m: Manifest = super::parse_yaml(file, text)?;
    let err = |key: &str, msg: String| ConfigError::at(file, text, &key_path(key), msg);

    check_artifact_url(&m.artifact.url, "artifact.url").map_err(|e| err("artifact.url", e))?;
    if let Some(sig) = &m.artifact.signature_url {
        check_artifact_url(sig, "artifact.signature_url")
            .map_err(|e| err("artifact.signature_url", e))?;
    }
    if m.pm2.is_empty() {
        return Err(err("pm2", "pm2 must list at least one process".into()));
    }
    let mut seen = std::collections::HashMap::new();
    for (i, p) in m.pm2.iter().enumerate() {
        let at = |key: &str| format!("pm2[{i}]{key}");
        let obj = p.as_object().ok_or_else(|| {
            err(
                &at(""),
                format!("pm2[{i}] must be a mapping like an ecosystem file's apps entry"),
            )
        })?;
        let name = match obj.get("name") {
            Some(serde_json::Value::String(s)) => s.as_str(),
            Some(_) => {
                return Err(err(&at(".name"), format!("pm2[{i}].name must be a string")));
            }
            None => {
                return Err(err(&at(""), format!("pm2[{i}].name is required")));
            }
        };
        check_process_name(name).map_err(|m| err(&at(".name"), format!("pm2[{i}].name: {m}")))?;
        if let Some(first) = seen.insert(name.to_string(), i) {
            return Err(err(
                &at(".name"),
                format!("pm2 process name {name:?} appears twice (pm2[{first}] and pm2[{i}])"),
            ));
        }
        match obj.get("script") {
            Some(serde_json::Value::String(s)) if !s.is_empty() => {}
            Some(_) => {
                return Err(err(
                    &at(".script"),
                    format!("pm2[{i}].script ({name}) must be a file name, like script: server.js"),
                ));
            }
            None => {
                return Err(err(
                    &at(""),
                    format!("pm2[{i}] ({name}) needs a script, like script: server.js"),
                ));
            }
        }
        if obj.contains_key("cwd") {
            return Err(err(
                &at(".cwd"),
                format!(
                    "pm2[{i}].cwd is set by hoist (the app's current release); remove it and use paths relative to the release"
                ),
            ));
        }
    }
    if let Some(url) = &m.health.http
        && !(url.starts_with("http://") || url.starts_with("https://"))
    {
        return Err(err(
            "health.http",
            format!("health.http {url:?} must be an http:// or https:// URL"),
        ));
    }
    if m.health.timeout.0.is_zero() {
        return Err(err(
            "health.timeout",
            "health.timeout must be more than 0s".into(),
        ));
    }
    if m.health.stable_for.0 >= m.health.timeout.0 {
        return Err(err(
            "health.stable_for",
            format!(
                "health.stable_for ({}) must be shorter than health.timeout ({})",
                m.health.stable_for, m.health.timeout
            ),
        ));
    }
    for (kind, hooks) in [
        ("before_activate", &m.hooks.before_activate),
        ("after_activate", &m.hooks.after_activate),
    ] {
        for (i, argv) in hooks.iter().enumerate() {
            if argv.is_empty() || argv[0].is_empty() {
                return Err(err(
                    &format!("hooks.{kind}[{i}]"),
                    format!(
                        "hooks.{kind}[{i}] must be a non-empty argv list like [npm, run, migrate]"
                    ),
                ));
            }
        }
    }
    if m.keep_releases == Some(0) {
        return Err(err(
            "keep_releases",
            "keep_releases must be at least 1".into(),
        ));
    }
    let mut shared_seen = std::collections::HashSet::new();
    for (i, s) in m.shared.iter().enumerate() {
        if !shared_seen.insert(s.rel().to_string()) {
            return Err(err(
                &format!("shared[{i}]"),
                format!("shared path {:?} appears twice", s.rel()),
            ));
        }
    }
    if let Some(t) = &m.targets {
        for (i, h) in t.hosts.iter().enumerate() {
            check_host_glob(h).map_err(|m| {
                err(
                    &format!("targets.hosts[{i}]"),
                    format!("targets.hosts[{i}] {m}"),
                )
            })?;
        }
        for (i, l) in t.labels.iter().enumerate() {
            if l.trim().is_empty() {
                return Err(err(
                    &format!("targets.labels[{i}]"),
                    format!("targets.labels[{i}] is empty"),
                ));
            }
        }
    }
    check_secrets(&m, &err)?;
    check_rollout(&m, &err)?;
    Ok((app, m))
}

fn check_secrets(
    m: &Manifest,
    err: &dyn Fn(&str, String) -> ConfigError,
) -> Result<(), ConfigError> {
    let mut seen = std::collections::HashSet::new();
    for (i, s) in m.secrets.iter().enumerate() {
        let from_key = format!("secrets[{i}].from");
        let to_key = format!("secrets[{i}].to");
        let stripped = s.from.replace("{environment}", "");
        if stripped.contains('{') || stripped.contains('}') {
            return Err(err(
                &from_key,
                format!(
                    "secrets[{i}].from {:?} has an unknown placeholder; only {{environment}} is replaced",
                    s.from
                ),
            ));
        }
        let from = s.from_for("x");
        if from.is_empty()
            || from.starts_with('/')
            || from.ends_with('/')
            || from
                .split('/')
                .any(|p| p.is_empty() || p == "." || p == "..")
        {
            return Err(err(
                &from_key,
                format!(
                    "secrets[{i}].from {:?} must be a relative path to a file in the config repo, without '..'",
                    s.from
                ),
            ));
        }
        if s.to.is_dir() {
            return Err(err(
                &to_key,
                format!(
                    "secrets[{i}].to {:?} must name a file, not a directory",
                    s.to.as_str()
                ),
            ));
        }
        let to = s.to.rel();
        if !seen.insert(to.to_string()) {
            return Err(err(
                &to_key,
                format!("secrets[{i}].to {to:?} appears twice"),
            ));
        }
        for sh in &m.shared {
            let shared = sh.rel();
            let overlaps = to == shared
                || to.starts_with(&format!("{shared}/"))
                || shared.starts_with(&format!("{to}/"));
            if overlaps {
                return Err(err(
                    &to_key,
                    format!(
                        "secrets[{i}].to {to:?} is also under shared ({shared:?}); a path is either shared or a secret"
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn check_rollout(
    m: &Manifest,
    err: &dyn Fn(&str, String) -> ConfigError,
) -> Result<(), ConfigError> {
    let Some(r) = &m.rollout else {
        return Ok(());
    };
    if r.waves.is_empty() {
        return Err(err(
            "rollout.waves",
            "rollout.waves must list at least one wave".into(),
        ));
    }
    for (i, w) in r.waves.iter().enumerate() {
        let wave = format!("rollout.waves[{i}]");
        let selects = !w.labels.is_empty() || !w.hosts.is_empty();
        match (w.percent, selects) {
            (Some(_), true) => {
                return Err(err(
                    &format!("{wave}.percent"),
                    format!("{wave} has both percent and labels/hosts; a wave takes hosts one way"),
                ));
            }
            (None, false) => {
                return Err(err(&wave, format!("{wave} needs labels, hosts or percent")));
            }
            (Some(p), false) if p == 0 || p > 100 => {
                return Err(err(
                    &format!("{wave}.percent"),
                    format!("{wave}.percent must be from 1 to 100, not {p}"),
                ));
            }
            _ => {}
        }
        for (j, h) in w.hosts.iter().enumerate() {
            let key = format!("{wave}.hosts[{j}]");
            check_host_glob(h).map_err(|m| err(&key, format!("{key} {m}")))?;
        }
        for (j, l) in w.labels.iter().enumerate() {
            if l.trim().is_empty() {
                let key = format!("{wave}.labels[{j}]");
                return Err(err(&key, format!("{key} is empty")));
            }
        }
    }
    if let Some(d) = r.deadline
        && d.0.is_zero()
    {
        return Err(err(
            "rollout.deadline",
            "rollout.deadline must be more than 0s (leave it out for no deadline)".into(),
        ));
    }
    Ok(())
}

fn check_artifact_url(url: &str, key: &str) -> Result<(), String> {
    let ok = ["s3://", "https://", "http://", "file://"]
        .iter()
        .any(|s| url.starts_with(s) && url.len() > s.len());
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{key} {} must be an s3://, https:// or file:// URL",
            crate::redact::url(url)
        ))
    }
}

fn check_process_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 128 {
        return Err("must be 1 to 128 characters".into());
    }
    if name.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "{name:?} is all digits, which pm2 takes for a process id"
        ));
    }
    if name == "all" {
        return Err("\"all\" means every process to pm2".into());
    }
    if name
        .chars()
        .any(|c| c.is_whitespace() || c == '/' || c.is_control())
    {
        return Err(format!("{name:?} must not contain spaces or '/'"));
    }
    Ok(())
}

/// Checks that apps of one commit can live side by side: pm2 process names
/// are global within one pm2 home, so two apps must not share one.
pub fn validate_app_set(
    apps: &AppSet,
    file_of: &dyn Fn(&AppName) -> PathBuf,
) -> Result<(), ConfigError> {
    let mut owner: HashMap<String, &AppName> = HashMap::new();
    for (app, m) in apps {
        for name in m.process_names() {
            if let Some(other) = owner.insert(name.clone(), app) {
                return Err(ConfigError::new(
                    file_of(app),
                    None,
                    format!("pm2 process name {name:?} is also used by app {other}"),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::load_manifests_from_dir;

    const SHA: &str = "3a7bd3e2360a3d29eea436fcfb7e44c735d117c42d1c1835420b6b9942dd4f1b";

    fn good() -> String {
        format!(
            r#"release: "2026.11.27-3"
artifact:
  url: s3://acme-releases/web/web-2026.11.27-3.tar.zst
  sha256: {SHA}
targets:
  hosts: ["web-*"]
  labels: [web]
shared: [.env, uploads/]
pm2:
  - name: web
    script: server.js
    instances: 2
    exec_mode: cluster
    env: {{ PORT: "3000", NODE_ENV: production }}
health:
  http: http://127.0.0.1:3000/healthz
  timeout: 30s
  stable_for: 3s
hooks:
  before_activate: [[npm, run, migrate]]
  after_activate: []
keep_releases: 5
paused: false
"#
        )
    }

    fn parse(text: &str) -> Result<Manifest, ConfigError> {
        parse_manifest(Path::new("apps/web.yaml"), text).map(|(_, m)| m)
    }

    #[test]
    fn spec_example_parses() {
        let m = parse(&good()).unwrap();
        assert_eq!(m.release.as_str(), "2026.11.27-3");
        assert_eq!(m.shared.len(), 2);
        assert_eq!(m.process_names(), vec!["web"]);
        assert_eq!(m.health.stable_for.0, Duration::from_secs(3));
        assert_eq!(m.hooks.before_activate, vec![vec!["npm", "run", "migrate"]]);
        assert!(m.targets_host("web-1", &["web".into()]));
        assert!(!m.targets_host("web-1", &[]));
        assert!(!m.targets_host("db-1", &["web".into()]));
    }

    #[test]
    fn unknown_key_is_located() {
        let text = good() + "bogus_key: 1\n";
        let e = parse(&text).unwrap_err();
        assert!(e.message.contains("bogus_key"), "{e}");
        assert_eq!(e.line, Some(text.lines().count()));
        assert!(e.to_string().starts_with("apps/web.yaml:"), "{e}");
    }

    #[test]
    fn bad_sha_is_located() {
        let text = good().replace(SHA, "abc");
        let e = parse(&text).unwrap_err();
        assert_eq!(e.line, Some(4), "{e}");
        assert!(e.message.contains("sha256"), "{e}");
    }

    #[test]
    fn release_name_checked() {
        let e = parse(&good().replace("2026.11.27-3\"", "../etc\"")).unwrap_err();
        assert_eq!(e.line, Some(1), "{e}");
    }

    #[test]
    fn missing_required_keys() {
        let e = parse("release: v1\n").unwrap_err();
        assert!(e.message.contains("artifact"), "{e}");
        let no_pm2 = format!("release: v1\nartifact:\n  url: file:///x\n  sha256: {SHA}\n");
        assert!(parse(&no_pm2).unwrap_err().message.contains("pm2"));
    }

    #[test]
    fn pm2_entries_checked() {
        let base = format!("release: v1\nartifact:\n  url: file:///x\n  sha256: {SHA}\n");
        let cases = [
            ("pm2: []\n", "at least one"),
            ("pm2:\n  - script: a.js\n", "name"),
            ("pm2:\n  - name: web\n", "script"),
            ("pm2:\n  - name: \"42\"\n    script: a.js\n", "digits"),
            (
                "pm2:\n  - name: web\n    script: a.js\n    cwd: /tmp\n",
                "cwd",
            ),
            (
                "pm2:\n  - name: web\n    script: a.js\n  - name: web\n    script: b.js\n",
                "twice",
            ),
            ("pm2:\n  - just-a-string\n", "mapping"),
        ];
        for (tail, want) in cases {
            let e = parse(&(base.clone() + tail)).unwrap_err();
            assert!(e.message.contains(want), "{tail}: {e}");
        }
    }

    #[test]
    fn artifact_scheme_checked() {
        let e = parse(&good().replace("s3://acme-releases", "ftp://acme-releases")).unwrap_err();
        assert!(e.message.contains("artifact.url"), "{e}");
        assert_eq!(e.line, Some(3));
    }

    #[test]
    fn health_checks() {
        let e = parse(&good().replace("stable_for: 3s", "stable_for: 40s")).unwrap_err();
        assert!(e.message.contains("stable_for"), "{e}");
        let e = parse(&good().replace("http: http://127", "http: ftp://127")).unwrap_err();
        assert!(e.message.contains("health.http"), "{e}");
    }

    #[test]
    fn hooks_and_shared_checked() {
        let e = parse(&good().replace("[[npm, run, migrate]]", "[[]]")).unwrap_err();
        assert!(e.message.contains("before_activate"), "{e}");
        let e = parse(&good().replace("[.env, uploads/]", "[../x]")).unwrap_err();
        assert!(e.message.contains("shared"), "{e}");
        let e = parse(&good().replace("[.env, uploads/]", "[.env, .env]")).unwrap_err();
        assert!(e.message.contains("twice"), "{e}");
    }

    #[test]
    fn app_name_from_file_stem() {
        let e = parse_manifest(Path::new("apps/Web.yaml"), &good()).unwrap_err();
        assert!(e.message.contains("app name"), "{e}");
        let (app, _) = parse_manifest(Path::new("apps/api-2.yaml"), &good()).unwrap();
        assert_eq!(app.as_str(), "api-2");
    }

    #[test]
    fn process_names_are_unique_across_apps() {
        let (_, m) = parse_manifest(Path::new("apps/web.yaml"), &good()).unwrap();
        let mut apps = AppSet::new();
        apps.insert(AppName::new("web").unwrap(), m.clone());
        apps.insert(AppName::new("api").unwrap(), m);
        let e = validate_app_set(&apps, &|a| PathBuf::from(format!("apps/{a}.yaml"))).unwrap_err();
        assert!(e.message.contains("also used by app"), "{e}");
    }

    #[test]
    fn targets_matching() {
        let t = Targets {
            hosts: vec!["web-*".into(), "api-1".into()],
            labels: vec![],
        };
        assert!(t.matches("api-1", &[]));
        assert!(t.matches("web-9", &[]));
        assert!(!t.matches("api-2", &[]));
        let t = Targets {
            hosts: vec![],
            labels: vec!["web".into(), "eu".into()],
        };
        assert!(t.matches("x", &["eu".into(), "web".into(), "z".into()]));
        assert!(!t.matches("x", &["web".into()]));
    }

    #[test]
    fn load_dir_collects_all_errors() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("web.yaml"), good()).unwrap();
        std::fs::write(dir.path().join("bad.yaml"), good() + "x: 1\n").unwrap();
        std::fs::write(dir.path().join("typo.yml"), good()).unwrap();
        std::fs::write(dir.path().join("README.md"), "hi").unwrap();
        let errs = load_manifests_from_dir(dir.path(), Path::new("apps")).unwrap_err();
        assert_eq!(errs.len(), 3, "{errs:?}");
        std::fs::remove_file(dir.path().join("bad.yaml")).unwrap();
        std::fs::remove_file(dir.path().join("typo.yml")).unwrap();
        std::fs::remove_file(dir.path().join("README.md")).unwrap();
        let apps = load_manifests_from_dir(dir.path(), Path::new("apps")).unwrap();
        assert_eq!(apps.len(), 1);
    }

    #[test]
    fn secrets_entries_checked() {
        let text = good()
            + "secrets:\n  - from: secrets/{environment}/web.env.age\n    to: config/.env.local\n";
        let m = parse(&text).unwrap();
        assert_eq!(
            m.secrets[0].from_for("staging"),
            "secrets/staging/web.env.age"
        );
        assert_eq!(m.secrets[0].to.rel(), "config/.env.local");
        let cases = [
            (
                "secrets:\n  - from: ../x.age\n    to: .env.x\n",
                "secrets[0].from",
            ),
            (
                "secrets:\n  - from: /etc/x.age\n    to: .env.x\n",
                "secrets[0].from",
            ),
            (
                "secrets:\n  - from: s/{env}.age\n    to: .env.x\n",
                "placeholder",
            ),
            ("secrets:\n  - from: s/x.age\n    to: ../x\n", "shared path"),
            (
                "secrets:\n  - from: s/x.age\n    to: conf/\n",
                "not a directory",
            ),
            (
                "secrets:\n  - from: s/x.age\n    to: .env\n",
                "also under shared",
            ),
            (
                "secrets:\n  - from: s/x.age\n    to: uploads/key\n",
                "also under shared",
            ),
            (
                "secrets:\n  - from: s/x.age\n    to: a\n  - from: s/y.age\n    to: a\n",
                "twice",
            ),
            ("secrets:\n  - from: s/x.age\n    too: a\n", "too"),
        ];
        for (tail, want) in cases {
            let e = parse(&(good() + tail)).unwrap_err();
            assert!(e.message.contains(want), "{tail}: {e}");
        }
    }

    #[test]
    fn rollout_checked() {
        let text = good()
            + "rollout:\n  waves:\n    - { labels: [canary], bake: 10m }\n    - { percent: 50, bake: 5m }\n    - { percent: 100 }\n  max_failures: 0\n  deadline: 30m\n";
        let m = parse(&text).unwrap();
        let r = m.rollout.unwrap();
        assert_eq!(r.waves.len(), 3);
        assert_eq!(r.waves[0].bake(), Duration::from_secs(600));
        assert_eq!(r.waves[2].bake(), Duration::ZERO);
        assert_eq!(r.deadline.unwrap().0, Duration::from_secs(1800));
        let cases = [
            ("rollout:\n  waves: []\n", "at least one wave"),
            ("rollout:\n  waves:\n    - { bake: 1m }\n", "needs labels"),
            (
                "rollout:\n  waves:\n    - { percent: 0 }\n",
                "from 1 to 100",
            ),
            (
                "rollout:\n  waves:\n    - { percent: 101 }\n",
                "from 1 to 100",
            ),
            (
                "rollout:\n  waves:\n    - { percent: 5, labels: [a] }\n",
                "both",
            ),
            (
                "rollout:\n  waves:\n    - { percent: 5 }\n  deadline: 0s\n",
                "deadline",
            ),
            (
                "rollout:\n  waves:\n    - { percent: 5, bake: soon }\n",
                "duration",
            ),
            ("rollout:\n  wave:\n    - { percent: 5 }\n", "wave"),
        ];
        for (tail, want) in cases {
            let e = parse(&(good() + tail)).unwrap_err();
            assert!(e.message.contains(want), "{tail}: {e}");
        }
    }
}
