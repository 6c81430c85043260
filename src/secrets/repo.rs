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
    AppName, AppSet, ConfigError, DiskTree, EnvName, FLEET_DIR, Inventory, inventory_path,
    load_manifests_from_dir, read_beneath, read_inventories,
};
use age::secrecy::zeroize::Zeroizing;
use std::collections::BTreeMap;
use std::io::Read;
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

    /// Every inventory in `fleet/`, by environment, read and validated as
    /// the servers and `hoist check` do.
    pub fn inventories(&self) -> Result<BTreeMap<EnvName, Inventory>, SecretsError> {
        let read = read_inventories(&DiskTree::new(&self.root)).map_err(|errors| {
            SecretsError::Usage(
                errors
                    .iter()
                    .map(ConfigError::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })?;
        let mut out = BTreeMap::new();
        for (env, inv) in read {
            out.insert(EnvName::new(&env).map_err(SecretsError::Usage)?, inv);
        }
        Ok(out)
    }

    /// The inventory of one environment; an error when the repo has none.
    pub fn inventory(&self, environment: &str) -> Result<Inventory, SecretsError> {
        let env = EnvName::new(environment).map_err(SecretsError::Usage)?;
        let shown = inventory_path(env.as_str());
        self.inventories()?.remove(&env).ok_or_else(|| {
            SecretsError::Usage(format!(
                "{} has no inventory {} for environment {env}; secrets are sealed to the keys it lists",
                self.root.display(),
                shown.display()
            ))
        })
    }

    /// The bytes of the sealed file `rel` (a path inside the repo), read
    /// as the servers and `hoist check` read one: a regular file, with no
    /// link on the way or at the end. The error says what is there instead.
    pub fn read_sealed(&self, rel: &str) -> Result<Vec<u8>, String> {
        let dir = crate::safe_fs::Dir::open(&self.root).map_err(|e| e.to_string())?;
        match dir.meta_of(rel) {
            Ok(None) => return Err("does not exist".into()),
            Ok(Some(m)) if m.kind == crate::safe_fs::Kind::Symlink => {
                return Err(
                    "is a symlink; a sealed file must be a regular file, so hoist neither follows nor reads it"
                        .into(),
                );
            }
            Ok(Some(m)) if m.kind != crate::safe_fs::Kind::File => {
                return Err("is not a regular file".into());
            }
            Ok(Some(_)) => {}
            Err(e) if e.is_link_on_the_way() => {
                return Err(
                    "lies behind a symlink; a sealed file must be a regular file of the repo, so hoist neither follows nor reads it"
                        .into(),
                );
            }
            Err(e) => return Err(format!("cannot be read: {}", e.source)),
        }
        read_beneath(&self.root, rel).map_err(|e| {
            if e.is_link_on_the_way() {
                "lies behind a symlink; hoist neither follows nor reads it".to_string()
            } else {
                format!("cannot be read: {}", e.source)
            }
        })
    }

    /// Writes a re-sealed file `rel` (ciphertext: 0644, as git keeps it),
    /// through the repo's handle: never through a link.
    fn write_sealed(&self, rel: &str, text: &str) -> Result<(), SecretsError> {
        let (parent, name) = match rel.rsplit_once('/') {
            Some((p, n)) => (p, n),
            None => ("", rel),
        };
        let dir = crate::safe_fs::Dir::open(&self.root)?.open_dir(parent)?;
        dir.write_atomic(name, text.as_bytes(), 0o644, None)?;
        Ok(())
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
    /// (`secrets/production/web.env.age`); None when it lies outside. Worked
    /// out from the names as given, never by resolving links (a link in the
    /// repo is for the reader to refuse, not to follow).
    pub fn repo_path_of(&self, file: &Path) -> Option<String> {
        let cwd = std::env::current_dir().ok()?;
        let abs = |p: &Path| normalize(&cwd.join(p));
        let file = abs(file)?;
        let mut roots = vec![abs(&self.root)?];
        if let Ok(c) = self.root.canonicalize() {
            roots.push(c);
        }
        roots.iter().find_map(|root| {
            let rel = file.strip_prefix(root).ok()?;
            let rel = rel.to_str()?;
            (!rel.is_empty()).then(|| rel.to_string())
        })
    }
}

/// `p` with `.` dropped and `..` taken back lexically (no link resolved).
fn normalize(p: &Path) -> Option<PathBuf> {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            c => out.push(c),
        }
    }
    Some(out)
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

/// One `hoist secrets edit` in progress: the sealed file opened into a
/// private copy that the editor changes. Dropping it removes the copy (the
/// command also drops it on SIGINT, SIGTERM and SIGHUP).
pub struct EditSession {
    file: PathBuf,
    /// The file's path inside the repo, when it is in the repo.
    rel: Option<String>,
    before: Plaintext,
    scratch: Scratch,
    path: PathBuf,
}

impl EditSession {
    /// Opens `file` (read as the servers read a sealed file: a regular
    /// file, no link on the way) and writes its plaintext to a private
    /// copy. `recipients` must not be empty.
    pub fn begin(
        repo: &ConfigRepo,
        file: &Path,
        identity: &Identity,
        recipients: &RecipientSet,
    ) -> Result<EditSession, SecretsError> {
        let shown = file.display().to_string();
        let rel = repo.repo_path_of(file);
        let sealed = match &rel {
            Some(rel) => repo
                .read_sealed(rel)
                .map_err(|why| SecretsError::Usage(format!("{shown} {why}")))?,
            None => read_outside(file)?,
        };
        let before = open(identity, &shown, &sealed)?;
        if recipients.is_empty() {
            return Err(SecretsError::Seal(format!(
                "{shown} would be sealed to nobody (no host key and no admins in the inventory)"
            )));
        }
        let scratch = Scratch::new()?;
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .map(|n| n.strip_suffix(".age").unwrap_or(n))
            .filter(|n| !n.is_empty() && !n.starts_with('.'))
            .unwrap_or("secret")
            .to_string();
        let path = scratch.dir.path().join(&name);
        let mut f = scratch.dir.create_file(&name, 0o600)?;
        use std::io::Write;
        f.write_all(before.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(SecretsError::io("write", &path))?;
        Ok(EditSession {
            file: file.to_path_buf(),
            rel,
            before,
            scratch,
            path,
        })
    }

    /// The private copy the editor is to change.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the copy back, removes it, and re-seals `file` to
    /// `recipients` when the plaintext changed.
    pub fn finish(
        self,
        repo: &ConfigRepo,
        recipients: &RecipientSet,
    ) -> Result<EditOutcome, SecretsError> {
        let name = self
            .path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let after = {
            let mut f = self.scratch.dir.open_file(&name)?;
            let len = f.metadata().map(|m| m.len() as usize).unwrap_or(0);
            let mut buf = Zeroizing::new(Vec::with_capacity(len + 1));
            f.read_to_end(&mut buf)
                .map_err(SecretsError::io("read", &self.path))?;
            Plaintext(buf)
        };
        let EditSession {
            file,
            rel,
            before,
            scratch,
            ..
        } = self;
        drop(scratch);
        if after.as_bytes() == before.as_bytes() {
            return Ok(EditOutcome::Unchanged);
        }
        let text = seal(recipients, after.as_bytes())?;
        match rel {
            Some(rel) => repo.write_sealed(&rel, &text)?,
            None => crate::fsutil::write_atomic(&file, text.as_bytes())
                .map_err(SecretsError::io("write", &file))?,
        }
        Ok(EditOutcome::Resealed(recipients.len()))
    }
}

/// A sealed file outside the repo (`edit --env`): the file itself may not
/// be a link.
fn read_outside(file: &Path) -> Result<Vec<u8>, SecretsError> {
    let parent = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = file
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| SecretsError::Usage(format!("{} does not name a file", file.display())))?;
    Ok(crate::safe_fs::Dir::open(parent)?.read(name)?)
}

/// `hoist secrets edit`: opens `file` with `identity`, lets `editor` (a
/// shell command; the file's path is appended) change a private temporary
/// copy, and re-seals it to `recipients` if the plaintext changed.
pub fn edit(
    repo: &ConfigRepo,
    file: &Path,
    identity: &Identity,
    recipients: &RecipientSet,
    editor: &str,
) -> Result<EditOutcome, SecretsError> {
    let session = EditSession::begin(repo, file, identity, recipients)?;
    let status = editor_command(editor, session.path())
        .status()
        .map_err(|e| SecretsError::Edit(format!("cannot run the editor {editor:?}: {e}")))?;
    if !status.success() {
        return Err(SecretsError::Edit(format!(
            "the editor {editor:?} exited with {status}; {} was left as it was",
            file.display()
        )));
    }
    session.finish(repo, recipients)
}

/// `sh -c '<editor> "$1"' sh <path>`: `$EDITOR` may hold arguments.
pub fn editor_command(editor: &str, path: &Path) -> std::process::Command {
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("sh")
        .arg(path);
    cmd
}

/// The private folder of one edit: `hoist-edit-<pid>-<random>`, 0700, in
/// `$XDG_RUNTIME_DIR` or `/dev/shm` (memory, not disk) when there is one,
/// else the temp dir. It holds an exclusive lock on itself for as long as
/// the edit runs, so the next `hoist secrets edit` can tell a folder left
/// by one that was killed (lock free: removed) from one in use (locked).
/// Removed when dropped.
struct Scratch {
    dir: crate::safe_fs::Dir,
    base: crate::safe_fs::Dir,
    name: String,
}

const SCRATCH_PREFIX: &str = "hoist-edit-";

impl Scratch {
    fn new() -> Result<Scratch, SecretsError> {
        let mut last = None;
        for base in scratch_bases() {
            let Ok(handle) = crate::safe_fs::Dir::open(&base) else {
                continue;
            };
            remove_stale(&handle);
            let name = format!(
                "{SCRATCH_PREFIX}{}-{:08x}",
                std::process::id(),
                rand::random::<u32>()
            );
            match handle.create_dir(&name, 0o700) {
                Ok(dir) => {
                    dir.chmod(0o700)?;
                    lock(&dir).map_err(SecretsError::io("lock", dir.path()))?;
                    return Ok(Scratch {
                        dir,
                        base: handle,
                        name,
                    });
                }
                Err(e) => last = Some(e),
            }
        }
        Err(match last {
            Some(e) => e.into(),
            None => SecretsError::Usage(
                "no folder for a private copy: none of $XDG_RUNTIME_DIR, /dev/shm and the temp dir is usable".into(),
            ),
        })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = self.base.remove_tree(&self.name);
    }
}

fn scratch_bases() -> Vec<PathBuf> {
    [
        std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from),
        Some(PathBuf::from("/dev/shm")),
        Some(std::env::temp_dir()),
    ]
    .into_iter()
    .flatten()
    .filter(|b| b.is_dir())
    .collect()
}

fn lock(dir: &crate::safe_fs::Dir) -> std::io::Result<()> {
    dir.try_lock()
}

/// Removes the private folders of edits that were killed before they
/// could clean up (their lock is free), this user's only.
fn remove_stale(base: &crate::safe_fs::Dir) {
    let me = nix::unistd::geteuid().as_raw();
    let Ok(entries) = base.entries() else { return };
    for (name, kind) in entries {
        if !name.starts_with(SCRATCH_PREFIX) || kind != crate::safe_fs::Kind::Dir {
            continue;
        }
        let Ok(dir) = base.open_dir(&name) else {
            continue;
        };
        if dir.meta().map(|m| m.uid).ok() != Some(me) || dir.try_lock().is_err() {
            continue;
        }
        drop(dir);
        if base.remove_tree(&name).is_ok() {
            eprintln!(
                "hoist: removed {}, the plaintext copy of an edit that was interrupted",
                base.path().join(&name).display()
            );
        }
    }
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
        let sealed = match repo.read_sealed(&rel) {
            Ok(b) => b,
            Err(why) => {
                report
                    .failed
                    .push(format!("{rel} (named by {}) {why}", named_by(&users)));
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
        repo.write_sealed(&rel, &text)?;
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
            let key = format!("secrets[{i}].from");
            let at = match crate::config::line_of_key(&text, &crate::config::key_path(&key)) {
                Some(line) => format!("{}:{line}", manifest.display()),
                None => manifest.display().to_string(),
            };
            for env in inventories.keys() {
                let rel = s.from_for(env.as_str());
                let inventory = inventory_path(env.as_str());
                let problem = match repo.read_sealed(&rel) {
                    Err(why) => Some(why),
                    Ok(bytes) => super::is_age_file(&bytes)
                        .err()
                        .map(|why| format!("cannot be used: {why}")),
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
        let Some(had) = repo
            .read_sealed(&rel)
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
