//! The producer side over a config repo checkout: which sealed files the
//! manifests name and for which environments, whom each is sealed to, and
//! the operations of `hoist secrets seal|edit|rekey` and `hoist check`.
//!
//! Everything here returns plain reports; `commands` prints them. The
//! recipients of a file always come from the same place: for every
//! environment that has an inventory (`fleet/<environment>.yaml`), every
//! manifest `secrets` entry whose `from` (with `{environment}` filled in)
//! is that file adds the hosts its app targets there, plus that
//! inventory's `admins`. A file several apps or environments share is
//! sealed to all of them.

use super::{Identity, Plaintext, RecipientSet, SecretsError, open, seal, sealed_recipient_tags};
use crate::config::{
    AppName, AppSet, ConfigError, EnvName, FLEET_DIR, Inventory, inventory_path,
    load_manifests_from_dir, parse_inventory,
};
use age::secrecy::zeroize::Zeroizing;
use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A config repository checkout and its manifest folder.
#[derive(Debug, Clone)]
pub struct ConfigRepo {
    root: PathBuf,
    apps_path: String,
}

/// Who names one sealed file: (environment, app) pairs.
pub type Users = Vec<(EnvName, AppName)>;

impl ConfigRepo {
    /// `apps_path` is the manifest folder inside the repo (`repo.path`,
    /// default `apps`).
    pub fn new(root: &Path, apps_path: &str) -> ConfigRepo {
        let apps_path = apps_path.trim_matches('/');
        ConfigRepo {
            root: root.to_path_buf(),
            apps_path: if apps_path.is_empty() {
                ".".into()
            } else {
                apps_path.into()
            },
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn apps_path(&self) -> &str {
        &self.apps_path
    }

    /// The manifests, validated as `hoist check` does.
    pub fn manifests(&self) -> Result<AppSet, SecretsError> {
        let folder = self.root.join(&self.apps_path);
        if !folder.is_dir() {
            return Err(SecretsError::Usage(format!(
                "{} has no manifest folder {}/ (give the config repo with --repo)",
                self.root.display(),
                self.apps_path
            )));
        }
        load_manifests_from_dir(&folder, Path::new(&self.apps_path)).map_err(|errors| {
            SecretsError::Usage(
                errors
                    .iter()
                    .map(ConfigError::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })
    }

    /// Every inventory in `fleet/`, by environment.
    pub fn inventories(&self) -> Result<BTreeMap<EnvName, Inventory>, SecretsError> {
        let dir = self.root.join(FLEET_DIR);
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(e) => return Err(SecretsError::io("read", &dir)(e)),
        };
        let mut names: Vec<String> = rd
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str().map(String::from))
            .filter(|n| n.ends_with(".yaml") && !n.starts_with('.'))
            .collect();
        names.sort();
        let mut out = BTreeMap::new();
        for name in names {
            let shown = Path::new(FLEET_DIR).join(&name);
            let (env, inv) = self.read_inventory(&shown)?;
            out.insert(env, inv);
        }
        Ok(out)
    }

    /// The inventory of one environment; an error when the repo has none.
    pub fn inventory(&self, environment: &str) -> Result<Inventory, SecretsError> {
        let env = EnvName::new(environment).map_err(SecretsError::Usage)?;
        let shown = inventory_path(env.as_str());
        if !self.root.join(&shown).is_file() {
            return Err(SecretsError::Usage(format!(
                "{} has no inventory {} for environment {env}; secrets are sealed to the keys it lists",
                self.root.display(),
                shown.display()
            )));
        }
        Ok(self.read_inventory(&shown)?.1)
    }

    fn read_inventory(&self, shown: &Path) -> Result<(EnvName, Inventory), SecretsError> {
        let path = self.root.join(shown);
        let text = std::fs::read_to_string(&path).map_err(SecretsError::io("read", &path))?;
        Ok(parse_inventory(shown, &text)?)
    }

    /// Every sealed file the manifests name, for every environment with an
    /// inventory: repo path → who names it.
    pub fn sealed_files(
        &self,
        apps: &AppSet,
        inventories: &BTreeMap<EnvName, Inventory>,
    ) -> BTreeMap<String, Users> {
        let mut out: BTreeMap<String, Users> = BTreeMap::new();
        for env in inventories.keys() {
            for (app, m) in apps {
                for s in &m.secrets {
                    let users = out.entry(s.from_for(env.as_str())).or_default();
                    if !users.contains(&(env.clone(), app.clone())) {
                        users.push((env.clone(), app.clone()));
                    }
                }
            }
        }
        out
    }

    /// The recipients of a file named by `users`.
    pub fn recipients_of(
        &self,
        users: &Users,
        apps: &AppSet,
        inventories: &BTreeMap<EnvName, Inventory>,
    ) -> Result<RecipientSet, SecretsError> {
        let mut set = RecipientSet::default();
        for (env, app) in users {
            let (Some(inv), Some(m)) = (inventories.get(env), apps.get(app)) else {
                continue;
            };
            let one = RecipientSet::from_inventory(inv, m.targets.as_ref()).map_err(|why| {
                SecretsError::Usage(format!("{}: {why}", inventory_path(env.as_str()).display()))
            })?;
            set.extend(one);
        }
        Ok(set)
    }

    /// A path given on the command line, as a path inside the repo
    /// (`secrets/production/web.env.age`); None when it lies outside.
    pub fn repo_path_of(&self, file: &Path) -> Option<String> {
        let root = self.root.canonicalize().ok()?;
        let file = file.canonicalize().ok()?;
        let rel = file.strip_prefix(&root).ok()?;
        rel.to_str().map(String::from)
    }
}

/// Whom `hoist secrets seal --env ENV [--app APP]` seals to: the hosts APP
/// targets in `fleet/ENV.yaml` (all hosts without APP), plus its admins.
pub fn recipients_for_env(
    repo: &ConfigRepo,
    environment: &str,
    app: Option<&str>,
) -> Result<RecipientSet, SecretsError> {
    let inv = repo.inventory(environment)?;
    let targets = match app {
        Some(a) => {
            let name = AppName::new(a).map_err(SecretsError::Usage)?;
            let apps = repo.manifests()?;
            let m = apps.get(&name).ok_or_else(|| {
                SecretsError::Usage(format!(
                    "there is no manifest {}/{a}.yaml in {}",
                    repo.apps_path(),
                    repo.root().display()
                ))
            })?;
            m.targets.clone()
        }
        None => None,
    };
    RecipientSet::from_inventory(&inv, targets.as_ref()).map_err(|why| {
        SecretsError::Usage(format!("{}: {why}", inventory_path(environment).display()))
    })
}

/// What `edit` did.
#[derive(Debug, PartialEq, Eq)]
pub enum EditOutcome {
    /// The plaintext did not change; the file was left as it was.
    Unchanged,
    /// Re-sealed to this many recipients.
    Resealed(usize),
}

/// The recipients `edit` re-seals `file` to: from `--env/--app` when given,
/// else from the manifests that name the file.
pub fn recipients_for_edit(
    repo: &ConfigRepo,
    file: &Path,
    environment: Option<&str>,
    app: Option<&str>,
) -> Result<RecipientSet, SecretsError> {
    if let Some(env) = environment {
        return recipients_for_env(repo, env, app);
    }
    if app.is_some() {
        return Err(SecretsError::Usage(
            "--app needs --env: an app's hosts are those of one environment".into(),
        ));
    }
    let Some(rel) = repo.repo_path_of(file) else {
        return Err(SecretsError::Usage(format!(
            "{} is not inside the config repo {}; pass --repo, or --env ENV [--app APP] to say whom it is sealed to",
            file.display(),
            repo.root().display()
        )));
    };
    let apps = repo.manifests()?;
    let inventories = repo.inventories()?;
    let files = repo.sealed_files(&apps, &inventories);
    let Some(users) = files.get(&rel) else {
        return Err(SecretsError::Usage(format!(
            "no manifest in {}/ names {rel} for an environment with an inventory ({FLEET_DIR}/*.yaml); pass --env ENV [--app APP] to say whom it is sealed to",
            repo.apps_path()
        )));
    };
    repo.recipients_of(users, &apps, &inventories)
}

/// `hoist secrets edit`: opens `file` with `identity`, lets `editor` (a
/// shell command; the file's path is appended) change a private temporary
/// copy, and re-seals it to `recipients` if the plaintext changed.
pub fn edit(
    file: &Path,
    identity: &Identity,
    recipients: &RecipientSet,
    editor: &str,
) -> Result<EditOutcome, SecretsError> {
    let shown = file.display().to_string();
    let sealed = std::fs::read(file).map_err(SecretsError::io("read", file))?;
    let before = open(identity, &shown, &sealed)?;
    if recipients.is_empty() {
        return Err(SecretsError::Seal(format!(
            "{shown} would be sealed to nobody (no host key and no admins in the inventory)"
        )));
    }
    let dir = private_temp_dir()?;
    let name = file
        .file_name()
        .and_then(|n| n.to_str())
        .map(|n| n.strip_suffix(".age").unwrap_or(n))
        .filter(|n| !n.is_empty())
        .unwrap_or("secret");
    let path = dir.path().join(name);
    write_private(&path, before.as_bytes())?;
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("sh")
        .arg(&path)
        .status()
        .map_err(|e| SecretsError::Edit(format!("cannot run the editor {editor:?}: {e}")))?;
    if !status.success() {
        return Err(SecretsError::Edit(format!(
            "the editor {editor:?} exited with {status}; {shown} was left as it was"
        )));
    }
    let after = read_private(&path)?;
    drop(dir);
    if after.as_bytes() == before.as_bytes() {
        return Ok(EditOutcome::Unchanged);
    }
    let text = seal(recipients, after.as_bytes())?;
    crate::fsutil::write_atomic(file, text.as_bytes()).map_err(SecretsError::io("write", file))?;
    Ok(EditOutcome::Resealed(recipients.len()))
}

/// A directory only this user can enter, removed when dropped: in
/// `$XDG_RUNTIME_DIR` or `/dev/shm` (memory, not disk) when there is one.
fn private_temp_dir() -> Result<tempfile::TempDir, SecretsError> {
    let candidates = [
        std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from),
        Some(PathBuf::from("/dev/shm")),
        Some(std::env::temp_dir()),
    ];
    let mut last = None;
    for base in candidates.into_iter().flatten() {
        if !base.is_dir() {
            continue;
        }
        match tempfile::Builder::new()
            .prefix("hoist-edit-")
            .permissions(std::fs::Permissions::from_mode(0o700))
            .tempdir_in(&base)
        {
            Ok(d) => return Ok(d),
            Err(e) => last = Some((base, e)),
        }
    }
    let (base, e) = last.unwrap_or_else(|| {
        (
            std::env::temp_dir(),
            std::io::Error::from(std::io::ErrorKind::NotFound),
        )
    });
    Err(SecretsError::io("create a private directory in", base)(e))
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), SecretsError> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(SecretsError::io("create", path))?;
    f.write_all(bytes).map_err(SecretsError::io("write", path))
}

fn read_private(path: &Path) -> Result<Plaintext, SecretsError> {
    let mut f = std::fs::File::open(path).map_err(SecretsError::io("read", path))?;
    let len = f.metadata().map(|m| m.len() as usize).unwrap_or(0);
    let mut buf = Zeroizing::new(Vec::with_capacity(len + 1));
    f.read_to_end(&mut buf)
        .map_err(SecretsError::io("read", path))?;
    Ok(Plaintext(buf))
}

/// What `rekey` did, file by file.
#[derive(Debug, Default)]
pub struct RekeyReport {
    /// (repo path, what changed) for each re-sealed file.
    pub resealed: Vec<(String, String)>,
    /// Files already sealed to exactly their recipients: left byte for byte.
    pub unchanged: Vec<String>,
    /// Files that could not be re-sealed, with the reason (the others still were).
    pub failed: Vec<String>,
    /// Hosts without a key, per file (they cannot open it).
    pub warnings: Vec<String>,
}

/// `hoist secrets rekey`: every sealed file the manifests name, for every
/// environment with an inventory, re-sealed to its current recipients;
/// files whose recipients did not change are not touched.
pub fn rekey(repo: &ConfigRepo, identity: &Identity) -> Result<RekeyReport, SecretsError> {
    let apps = repo.manifests()?;
    let inventories = repo.inventories()?;
    let mut report = RekeyReport::default();
    for (rel, users) in repo.sealed_files(&apps, &inventories) {
        let path = repo.root().join(&rel);
        let recipients = match repo.recipients_of(&users, &apps, &inventories) {
            Ok(r) => r,
            Err(e) => {
                report.failed.push(format!("{rel}: {e}"));
                continue;
            }
        };
        for host in &recipients.hosts_without_key {
            report.warnings.push(format!(
                "{rel}: host {host} has no key in the inventory, so it cannot open this file"
            ));
        }
        let sealed = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) => {
                report.failed.push(format!(
                    "{rel} (named by {}): cannot read it: {e}",
                    named_by(&users)
                ));
                continue;
            }
        };
        let wanted = recipients.tags();
        let had = sealed_recipient_tags(&sealed);
        if had.as_ref() == Some(&wanted) {
            report.unchanged.push(rel);
            continue;
        }
        if recipients.is_empty() {
            report.failed.push(format!(
                "{rel}: nobody to seal it to (no host key and no admins)"
            ));
            continue;
        }
        let plaintext = match open(identity, &rel, &sealed) {
            Ok(p) => p,
            Err(e) => {
                report.failed.push(e.to_string());
                continue;
            }
        };
        let text = seal(&recipients, plaintext.as_bytes())?;
        crate::fsutil::write_atomic(&path, text.as_bytes())
            .map_err(SecretsError::io("write", &path))?;
        let what = match had {
            None => format!(
                "re-sealed to {} recipients (it did not list its recipients: sealed by another tool)",
                recipients.len()
            ),
            Some(had) => {
                let added: Vec<&str> = recipients
                    .recipients()
                    .iter()
                    .filter(|r| !had.contains(&r.tag()))
                    .map(|r| r.name.as_str())
                    .collect();
                let removed = had.iter().filter(|t| !wanted.contains(*t)).count();
                let mut parts = Vec::new();
                if !added.is_empty() {
                    parts.push(format!("added {}", added.join(", ")));
                }
                if removed > 0 {
                    parts.push(format!("removed {removed}"));
                }
                format!(
                    "re-sealed to {} recipients ({})",
                    recipients.len(),
                    parts.join("; ")
                )
            }
        };
        report.resealed.push((rel, what));
    }
    Ok(report)
}

fn named_by(users: &Users) -> String {
    users
        .iter()
        .map(|(env, app)| format!("{app} in {env}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What `hoist check` found about sealed secrets.
#[derive(Debug, Default)]
pub struct CheckReport {
    /// Each makes the repo invalid: `file:line: message`.
    pub errors: Vec<String>,
    /// Worth knowing, not invalid.
    pub warnings: Vec<String>,
}

/// The `hoist check` rules for `secrets` entries (SPEC §7): for every
/// environment with an inventory, each sealed file must exist as a regular
/// file and be an age file. (`to` is checked with the manifest itself.)
/// Inventories that do not parse are errors too, since the rules need them.
pub fn check(repo: &ConfigRepo, apps: &AppSet) -> CheckReport {
    let mut report = CheckReport::default();
    let inventories = match repo.inventories() {
        Ok(i) => i,
        Err(e) => {
            report.errors.push(e.to_string());
            return report;
        }
    };
    if inventories.is_empty() {
        for (app, m) in apps {
            if !m.secrets.is_empty() {
                report.warnings.push(format!(
                    "{}/{app}.yaml has secrets, but the repo has no inventory ({FLEET_DIR}/<environment>.yaml), so no server can open them",
                    repo.apps_path()
                ));
            }
        }
        return report;
    }
    for (app, m) in apps {
        if m.secrets.is_empty() {
            continue;
        }
        let manifest = Path::new(repo.apps_path()).join(format!("{app}.yaml"));
        let text = std::fs::read_to_string(repo.root().join(&manifest)).unwrap_or_default();
        for (i, s) in m.secrets.iter().enumerate() {
            let at = match crate::config::line_of(&text, &s.from) {
                Some(line) => format!("{}:{line}", manifest.display()),
                None => manifest.display().to_string(),
            };
            for env in inventories.keys() {
                let rel = s.from_for(env.as_str());
                let inventory = inventory_path(env.as_str());
                let path = repo.root().join(&rel);
                let problem = match std::fs::symlink_metadata(&path) {
                    Err(_) => Some("does not exist".to_string()),
                    Ok(meta) if meta.file_type().is_symlink() => {
                        Some("is a symlink; a sealed file must be a regular file".into())
                    }
                    Ok(meta) if !meta.is_file() => Some("is not a regular file".into()),
                    Ok(_) => match std::fs::read(&path) {
                        Err(e) => Some(format!("cannot be read: {e}")),
                        Ok(bytes) => super::is_age_file(&bytes)
                            .err()
                            .map(|why| format!("cannot be used: {why}")),
                    },
                };
                if let Some(p) = problem {
                    report.errors.push(format!(
                        "{at}: secrets[{i}].from: {rel} {p} (environment {env} has an inventory, {})",
                        inventory.display()
                    ));
                }
            }
        }
    }
    stale_warnings(&mut report, repo, apps, &inventories);
    report
}

/// Warnings for files hoist sealed whose recipient list differs from what
/// the inventories give now (a host joined or left and nobody ran rekey),
/// and for hosts that have no key.
fn stale_warnings(
    report: &mut CheckReport,
    repo: &ConfigRepo,
    apps: &AppSet,
    inventories: &BTreeMap<EnvName, Inventory>,
) {
    for (rel, users) in repo.sealed_files(apps, inventories) {
        let Ok(now) = repo.recipients_of(&users, apps, inventories) else {
            continue;
        };
        for host in &now.hosts_without_key {
            report.warnings.push(format!(
                "{rel}: host {host} has no key in the inventory, so it cannot open this file"
            ));
        }
        let Some(had) = std::fs::read(repo.root().join(&rel))
            .ok()
            .and_then(|b| sealed_recipient_tags(&b))
        else {
            continue;
        };
        let wanted = now.tags();
        let missing: Vec<&str> = now
            .recipients()
            .iter()
            .filter(|r| !had.contains(&r.tag()))
            .map(|r| r.name.as_str())
            .collect();
        let extra = had.iter().filter(|t| !wanted.contains(*t)).count();
        if !missing.is_empty() {
            report.warnings.push(format!(
                "{rel} is not sealed to {}, who should open it; run `hoist secrets rekey`",
                missing.join(", ")
            ));
        }
        if extra > 0 {
            report.warnings.push(format!(
                "{rel} is still sealed to {extra} key(s) no longer in the inventory; run `hoist secrets rekey`"
            ));
        }
    }
}

#[cfg(test)]
mod tests;
