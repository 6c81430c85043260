//! The configuration one commit of the config repository holds: every app
//! manifest, and the inventory of this server's environment (SPEC §2).
//!
//! The server reads a commit from its git tree, `hoist check` reads a
//! checkout on disk; both go through `read_commit_config` over a
//! [`RepoTree`], so they apply the same rules and cannot disagree:
//!
//! - the manifest folder must exist: a commit without it (deleted, or
//!   `repo.path` mistyped) is invalid, because reading it as "no apps" would
//!   remove every app. A folder with no manifest removes every app on purpose;
//! - inside it, names beginning with `.` are ignored and every other entry
//!   must be a regular `<app>.yaml` file. A symlink is refused by its kind,
//!   never followed or read: in CI, `hoist check` would otherwise print
//!   whatever file of the runner a pull request points it at;
//! - every `fleet/*.yaml` is validated like a manifest, by the server as
//!   by `hoist check` (a server uses only its own environment's); an
//!   entry without `labels` while a manifest targets labels is an error.
//!
//! Paths inside the repository are found by walking from the top through
//! folder listings, so a symlinked folder on the way is not a folder, on
//! disk as in git.

use super::{
    AppSet, ConfigError, FLEET_DIR, Inventory, check_labels_given, parse_inventory, parse_manifest,
    validate_app_set,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What a folder entry is, as git or the file system tells it, without
/// reading or following it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    File,
    Folder,
    Symlink,
    /// A git submodule, a fifo, a socket, a device.
    Other,
}

impl EntryKind {
    fn describe(self) -> &'static str {
        match self {
            EntryKind::File => "a file",
            EntryKind::Folder => "a folder",
            EntryKind::Symlink => "a symlink",
            EntryKind::Other => "neither a file nor a folder",
        }
    }
}

/// One entry of a folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub kind: EntryKind,
}

/// A read-only view of one commit of the config repository: a git tree on
/// the server, a checkout on disk for `hoist check`. Paths are relative to
/// the top of the repository, `/`-separated, `""` being the top.
pub trait RepoTree {
    /// The entries of a folder; only asked for folders found by listing
    /// their parents.
    fn list(&self, folder: &str) -> Result<Vec<Entry>, String>;
    /// The content of a regular file; only asked for files found by
    /// listing their folder.
    fn read(&self, file: &str) -> Result<Vec<u8>, String>;
}

/// What the server applies from one commit.
#[derive(Debug, Clone, PartialEq)]
pub struct CommitConfig {
    pub apps: AppSet,
    /// `fleet/<environment>.yaml` of the server's environment, when the
    /// commit has one.
    pub inventory: Option<Inventory>,
}

/// Which inventories to read.
#[derive(Debug, Clone, Copy)]
pub enum Inventories<'a> {
    /// The server's own environment: `fleet/<environment>.yaml`.
    Of(&'a str),
    /// Every `fleet/*.yaml`, for `hoist check` (none is returned).
    All,
}

/// Reads and validates a commit's manifests (in `apps_path`, `.` being the
/// top) and inventories, collecting every error so `hoist check` shows them
/// all at once. Any error makes the whole commit invalid.
pub fn read_commit_config(
    tree: &dyn RepoTree,
    apps_path: &str,
    inventories: Inventories,
) -> Result<CommitConfig, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let apps_path = apps_path.trim_matches('/');
    let top = apps_path.is_empty() || apps_path == ".";
    let folder = if top { "" } else { apps_path };
    let shown = Path::new(if top { "." } else { apps_path });
    let apps = match find(tree, folder) {
        Ok(Some(EntryKind::Folder)) => {
            read_manifest_folder(tree, folder, shown, top, &mut errors).unwrap_or_default()
        }
        Ok(None) => {
            errors.push(ConfigError::new(
                shown,
                None,
                format!(
                    "the manifest folder is missing from this commit, so nothing is changed (repo.path is {apps_path:?}); a commit that removes every app keeps the folder, e.g. with a .keep file"
                ),
            ));
            AppSet::new()
        }
        Ok(Some(kind)) => {
            errors.push(ConfigError::new(
                shown,
                None,
                format!(
                    "is {}, not the folder of manifests (repo.path), so nothing is changed",
                    kind.describe()
                ),
            ));
            AppSet::new()
        }
        Err(e) => {
            errors.push(ConfigError::new(shown, None, e));
            AppSet::new()
        }
    };
    // Every inventory is validated, whichever one is this server's, so a
    // server and `hoist check` accept and refuse the same commits.
    let mut every = read_every_inventory(tree, &apps, &mut errors);
    let inventory = match inventories {
        Inventories::Of(env) => every.remove(env),
        Inventories::All => None,
    };
    if errors.is_empty() {
        Ok(CommitConfig { apps, inventory })
    } else {
        Err(errors)
    }
}

/// Every inventory of a checkout (or commit), validated as a server and
/// `hoist check` do, without the manifests' label rule.
pub fn read_inventories(
    tree: &dyn RepoTree,
) -> Result<BTreeMap<String, Inventory>, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let out = read_every_inventory(tree, &AppSet::new(), &mut errors);
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// Every manifest of a folder of a checkout on disk (`dir`), named in
/// messages under `shown_as`. Only the folder's rules apply: a missing
/// `dir` is an error, like a commit without its manifest folder.
pub fn load_manifests_from_dir(dir: &Path, shown_as: &Path) -> Result<AppSet, Vec<ConfigError>> {
    let tree = DiskTree::new(dir);
    let mut errors = Vec::new();
    match std::fs::symlink_metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(vec![ConfigError::new(
                shown_as,
                None,
                "is not a folder of manifests",
            )]);
        }
        Err(e) => {
            return Err(vec![ConfigError::new(
                shown_as,
                None,
                format!("cannot read the manifest folder: {e}"),
            )]);
        }
    }
    let apps = read_manifest_folder(&tree, "", shown_as, false, &mut errors);
    match apps {
        Some(apps) if errors.is_empty() => Ok(apps),
        _ => Err(errors),
    }
}

fn read_manifest_folder(
    tree: &dyn RepoTree,
    folder: &str,
    shown: &Path,
    top: bool,
    errors: &mut Vec<ConfigError>,
) -> Option<AppSet> {
    let entries = match tree.list(folder) {
        Ok(e) => e,
        Err(e) => {
            errors.push(ConfigError::new(shown, None, e));
            return None;
        }
    };
    let before = errors.len();
    let mut apps = AppSet::new();
    for entry in entries {
        if entry.name.starts_with('.') {
            continue;
        }
        // With the manifests at the top, the inventories' folder sits
        // beside them.
        if top && entry.name == FLEET_DIR && entry.kind == EntryKind::Folder {
            continue;
        }
        let file = shown_path(shown, &entry.name);
        if let Some(why) = not_a_manifest(&entry) {
            errors.push(ConfigError::new(&file, None, why));
            continue;
        }
        let Some(text) = read_text(tree, &join(folder, &entry.name), &file, errors) else {
            continue;
        };
        match parse_manifest(&file, &text) {
            Ok((app, m)) => {
                apps.insert(app, m);
            }
            Err(e) => errors.push(e),
        }
    }
    if errors.len() == before
        && let Err(e) = validate_app_set(&apps, &|a| shown_path(shown, &format!("{a}.yaml")))
    {
        errors.push(e);
    }
    Some(apps)
}

/// Why an entry of the manifest folder is not a manifest; None when it is
/// a regular `<name>.yaml` file (its name is checked with its content).
fn not_a_manifest(entry: &Entry) -> Option<String> {
    let yaml = entry.name.ends_with(".yaml");
    match entry.kind {
        EntryKind::File if yaml => None,
        EntryKind::Symlink => Some(
            "is a symlink; a manifest must be a regular file, so hoist neither follows nor reads it"
                .into(),
        ),
        EntryKind::Folder => Some(
            "is a folder; the manifest folder holds only <app>.yaml files (names beginning with '.' are ignored)"
                .into(),
        ),
        EntryKind::Other => Some(format!(
            "is {}; the manifest folder holds only <app>.yaml files",
            entry.kind.describe()
        )),
        EntryKind::File if entry.name.ends_with(".yml") => {
            Some("manifests must end in .yaml, not .yml".into())
        }
        EntryKind::File => Some(
            "is not a manifest; the manifest folder holds only <app>.yaml files (names beginning with '.' are ignored)"
                .into(),
        ),
    }
}

/// Every `fleet/*.yaml`, validated (and checked against the manifests'
/// label targeting), by environment.
fn read_every_inventory(
    tree: &dyn RepoTree,
    apps: &AppSet,
    errors: &mut Vec<ConfigError>,
) -> BTreeMap<String, Inventory> {
    let mut out = BTreeMap::new();
    let shown_dir = Path::new(FLEET_DIR);
    match find(tree, FLEET_DIR) {
        Ok(Some(EntryKind::Folder)) => {}
        Ok(None) => return out,
        Ok(Some(kind)) => {
            errors.push(ConfigError::new(
                shown_dir,
                None,
                format!("is {}, not the folder of inventories", kind.describe()),
            ));
            return out;
        }
        Err(e) => {
            errors.push(ConfigError::new(shown_dir, None, e));
            return out;
        }
    }
    let entries = match tree.list(FLEET_DIR) {
        Ok(e) => e,
        Err(e) => {
            errors.push(ConfigError::new(shown_dir, None, e));
            return out;
        }
    };
    for entry in entries {
        if entry.name.starts_with('.') {
            continue;
        }
        let shown = shown_dir.join(&entry.name);
        if entry.name.ends_with(".yml") {
            errors.push(ConfigError::new(
                &shown,
                None,
                "inventories must end in .yaml, not .yml",
            ));
            continue;
        }
        if !entry.name.ends_with(".yaml") {
            continue;
        }
        if entry.kind != EntryKind::File {
            errors.push(not_an_inventory(&shown, entry.kind));
            continue;
        }
        let path = join(FLEET_DIR, &entry.name);
        let Some(text) = read_text(tree, &path, &shown, errors) else {
            continue;
        };
        match parse_inventory(&shown, &text) {
            Ok((env, inv)) => {
                if let Err(e) = check_labels_given(&shown, &text, apps) {
                    errors.push(e);
                }
                out.insert(env.as_str().to_string(), inv);
            }
            Err(e) => errors.push(e),
        }
    }
    out
}

fn not_an_inventory(shown: &Path, kind: EntryKind) -> ConfigError {
    let why = match kind {
        EntryKind::Symlink => {
            "is a symlink; an inventory must be a regular file, so hoist neither follows nor reads it"
                .to_string()
        }
        other => format!(
            "is {}; an inventory must be a regular file",
            other.describe()
        ),
    };
    ConfigError::new(shown, None, why)
}

fn read_text(
    tree: &dyn RepoTree,
    path: &str,
    shown: &Path,
    errors: &mut Vec<ConfigError>,
) -> Option<String> {
    match tree.read(path) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(t) => Some(t),
            Err(_) => {
                errors.push(ConfigError::new(shown, None, "is not UTF-8 text"));
                None
            }
        },
        Err(e) => {
            errors.push(ConfigError::new(shown, None, e));
            None
        }
    }
}

/// What is at `path` (`""`: the top, a folder), walking from the top; None
/// when nothing is there, or when the way there passes something that is
/// not a folder (a symlinked folder included).
fn find(tree: &dyn RepoTree, path: &str) -> Result<Option<EntryKind>, String> {
    let mut here = String::new();
    let mut kind = EntryKind::Folder;
    for part in path.split('/').filter(|p| !p.is_empty()) {
        if kind != EntryKind::Folder {
            return Ok(None);
        }
        let entries = tree.list(&here)?;
        match entries.iter().find(|e| e.name == part) {
            Some(e) => kind = e.kind,
            None => return Ok(None),
        }
        here = join(&here, part);
    }
    Ok(Some(kind))
}

fn join(folder: &str, name: &str) -> String {
    if folder.is_empty() {
        name.to_string()
    } else {
        format!("{folder}/{name}")
    }
}

fn shown_path(shown: &Path, name: &str) -> PathBuf {
    if shown == Path::new(".") {
        PathBuf::from(name)
    } else {
        shown.join(name)
    }
}

/// The regular file `rel` of the checkout at `root`, read without
/// following a link anywhere below `root` (openat2 beneath, no symlinks):
/// the reader `hoist check` and the `hoist secrets` commands share, as a
/// git tree's regular blobs are the server's.
pub fn read_beneath(root: &Path, rel: &str) -> Result<Vec<u8>, crate::safe_fs::Error> {
    crate::safe_fs::Dir::open(root)?.read(rel)
}

/// A checkout on disk, for `hoist check`. Entries are classified by their
/// own type (`lstat`), and files are opened with `O_NOFOLLOW`, so a symlink
/// is never followed even if it replaced a file in between.
pub struct DiskTree {
    root: PathBuf,
}

impl DiskTree {
    pub fn new(root: &Path) -> DiskTree {
        DiskTree {
            root: root.to_path_buf(),
        }
    }

    fn at(&self, path: &str) -> PathBuf {
        if path.is_empty() {
            self.root.clone()
        } else {
            self.root.join(path)
        }
    }
}

impl RepoTree for DiskTree {
    fn list(&self, folder: &str) -> Result<Vec<Entry>, String> {
        let dir = self.at(folder);
        let rd = std::fs::read_dir(&dir).map_err(|e| format!("cannot read the folder: {e}"))?;
        let mut out = Vec::new();
        for e in rd {
            let e = e.map_err(|e| format!("cannot read the folder: {e}"))?;
            let kind = match e.file_type() {
                Ok(t) if t.is_symlink() => EntryKind::Symlink,
                Ok(t) if t.is_dir() => EntryKind::Folder,
                Ok(t) if t.is_file() => EntryKind::File,
                Ok(_) => EntryKind::Other,
                Err(e) => return Err(format!("cannot read the folder: {e}")),
            };
            out.push(Entry {
                name: e.file_name().to_string_lossy().into_owned(),
                kind,
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    fn read(&self, file: &str) -> Result<Vec<u8>, String> {
        read_beneath(&self.root, file).map_err(|e| format!("cannot read: {}", e.source))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "3a7bd3e2360a3d29eea436fcfb7e44c735d117c42d1c1835420b6b9942dd4f1b";
    const AGE: &str = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";

    fn manifest(name: &str) -> String {
        format!(
            "release: v1\nartifact:\n  url: file:///x.tar.zst\n  sha256: {SHA}\npm2:\n  - name: {name}\n    script: s.js\n"
        )
    }

    fn checkout() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("apps")).unwrap();
        std::fs::write(d.path().join("apps/web.yaml"), manifest("web")).unwrap();
        d
    }

    fn read(
        d: &tempfile::TempDir,
        apps: &str,
        inv: Inventories,
    ) -> Result<CommitConfig, Vec<ConfigError>> {
        read_commit_config(&DiskTree::new(d.path()), apps, inv)
    }

    fn messages(errs: &[ConfigError]) -> String {
        errs.iter().map(|e| format!("{e}\n")).collect()
    }

    #[test]
    fn a_missing_manifest_folder_is_an_error_and_an_empty_one_means_no_apps() {
        let d = checkout();
        let c = read(&d, "apps", Inventories::All).unwrap();
        assert_eq!(c.apps.len(), 1);
        let errs = read(&d, "appz", Inventories::All).unwrap_err();
        assert!(
            messages(&errs).starts_with("appz: the manifest folder is missing"),
            "{errs:?}"
        );
        let errs = read(&d, "apps/web.yaml", Inventories::All).unwrap_err();
        assert!(
            messages(&errs).contains("is a file, not the folder"),
            "{errs:?}"
        );
        std::fs::remove_file(d.path().join("apps/web.yaml")).unwrap();
        std::fs::write(d.path().join("apps/.keep"), "").unwrap();
        assert!(read(&d, "apps", Inventories::All).unwrap().apps.is_empty());
    }

    #[test]
    fn every_entry_but_dot_files_must_be_a_regular_yaml_file() {
        let d = checkout();
        let apps = d.path().join("apps");
        let secret = d.path().join("token");
        std::fs::write(&secret, "forge-token-s3cret").unwrap();
        std::os::unix::fs::symlink(&secret, apps.join("evil.yaml")).unwrap();
        std::fs::create_dir(apps.join("x.yaml")).unwrap();
        std::fs::write(apps.join("api.yml"), manifest("api")).unwrap();
        std::fs::write(apps.join("README.md"), "hi").unwrap();
        std::fs::write(apps.join(".hidden.yaml"), "not: [yaml").unwrap();
        let errs = read(&d, "apps", Inventories::All).unwrap_err();
        let text = messages(&errs);
        assert_eq!(errs.len(), 4, "{text}");
        assert!(text.contains("apps/evil.yaml: is a symlink"), "{text}");
        assert!(text.contains("apps/x.yaml: is a folder"), "{text}");
        assert!(
            text.contains("apps/api.yml: manifests must end in .yaml"),
            "{text}"
        );
        assert!(text.contains("apps/README.md: is not a manifest"), "{text}");
        assert!(
            !text.contains("s3cret"),
            "the symlink's target was read: {text}"
        );
    }

    #[test]
    fn the_manifest_folder_reached_through_a_symlink_is_missing() {
        let d = checkout();
        std::fs::rename(d.path().join("apps"), d.path().join("real")).unwrap();
        std::os::unix::fs::symlink("real", d.path().join("apps")).unwrap();
        let errs = read(&d, "apps", Inventories::All).unwrap_err();
        assert!(
            messages(&errs).contains("apps: is a symlink, not the folder"),
            "{errs:?}"
        );
        let errs = read(&d, "apps/sub", Inventories::All).unwrap_err();
        assert!(messages(&errs).contains("missing"), "{errs:?}");
    }

    /// What a server and `hoist check` accept is the same set of commits:
    /// each case is refused (or accepted) by both.
    #[test]
    fn the_server_and_check_agree_on_the_fleet_folder() {
        type Case<'a> = (&'a str, &'a dyn Fn(&Path), Option<&'a str>);
        let cases: &[Case] = &[
            (
                "fleet is a file",
                &|d| std::fs::write(d.join("fleet"), "x").unwrap(),
                Some("fleet: is a file, not the folder of inventories"),
            ),
            (
                "a stray .yml",
                &|d| {
                    std::fs::create_dir(d.join("fleet")).unwrap();
                    std::fs::write(d.join("fleet/test.yml"), "hosts: {}\n").unwrap();
                },
                Some("fleet/test.yml: inventories must end in .yaml"),
            ),
            (
                "a folder named like an inventory",
                &|d| {
                    std::fs::create_dir_all(d.join("fleet/test.yaml")).unwrap();
                },
                Some("fleet/test.yaml: is a folder"),
            ),
            (
                "another environment's broken inventory",
                &|d| {
                    std::fs::create_dir(d.join("fleet")).unwrap();
                    std::fs::write(d.join("fleet/staging.yaml"), "hosts: [\n").unwrap();
                },
                Some("fleet/staging.yaml"),
            ),
            (
                "an entry without labels while an app targets labels",
                &|d| {
                    std::fs::create_dir(d.join("fleet")).unwrap();
                    std::fs::write(
                        d.join("fleet/staging.yaml"),
                        format!("hosts:\n  web-9: {{ key: \"{AGE}\" }}\n"),
                    )
                    .unwrap();
                    let m = manifest("web") + "targets:\n  labels: [web]\n";
                    std::fs::write(d.join("apps/web.yaml"), m).unwrap();
                },
                Some("fleet/staging.yaml:2: web-9 has no labels; web targets [web]"),
            ),
            (
                "the same entry with labels: []",
                &|d| {
                    std::fs::create_dir(d.join("fleet")).unwrap();
                    std::fs::write(
                        d.join("fleet/staging.yaml"),
                        "hosts:\n  web-9: { labels: [] }\n",
                    )
                    .unwrap();
                    let m = manifest("web") + "targets:\n  labels: [web]\n";
                    std::fs::write(d.join("apps/web.yaml"), m).unwrap();
                },
                None,
            ),
            (
                "other files beside the inventories",
                &|d| {
                    std::fs::create_dir(d.join("fleet")).unwrap();
                    std::fs::write(d.join("fleet/README.md"), "hi").unwrap();
                },
                None,
            ),
        ];
        for (what, make, refused) in cases {
            let d = checkout();
            make(d.path());
            for inv in [Inventories::Of("test"), Inventories::All] {
                let got = read(&d, "apps", inv);
                match refused {
                    None => assert!(got.is_ok(), "{what}: {got:?}"),
                    Some(msg) => {
                        let errs = got.unwrap_err();
                        assert!(messages(&errs).contains(msg), "{what}: {errs:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn manifests_at_the_top_live_beside_the_fleet_folder() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("web.yaml"), manifest("web")).unwrap();
        std::fs::create_dir(d.path().join("fleet")).unwrap();
        std::fs::write(d.path().join("fleet/prod.yaml"), "hosts: {}\n").unwrap();
        let c = read(&d, ".", Inventories::Of("prod")).unwrap();
        assert_eq!(c.apps.len(), 1);
        assert!(c.inventory.is_some());
        let errs = read_commit_config(&DiskTree::new(d.path()), "", Inventories::All);
        assert!(errs.is_ok(), "{errs:?}");
    }

    #[test]
    fn the_inventory_is_validated_like_a_manifest() {
        let d = checkout();
        let fleet = d.path().join("fleet");
        std::fs::create_dir(&fleet).unwrap();
        std::fs::write(
            fleet.join("production.yaml"),
            format!("hosts:\n  web-1: {{ labels: [web], key: \"{AGE}\" }}\n"),
        )
        .unwrap();
        let c = read(&d, "apps", Inventories::Of("production")).unwrap();
        assert_eq!(c.inventory.unwrap().labels_of("web-1").unwrap(), ["web"]);
        assert_eq!(
            read(&d, "apps", Inventories::Of("staging"))
                .unwrap()
                .inventory,
            None
        );
        // Another environment's broken inventory: refused by every server
        // and by check alike, so CI and the servers never disagree.
        std::fs::write(
            fleet.join("staging.yaml"),
            "hosts:\n  web-1: { lables: [x] }\n",
        )
        .unwrap();
        for inv in [
            Inventories::Of("production"),
            Inventories::Of("staging"),
            Inventories::All,
        ] {
            let errs = read(&d, "apps", inv).unwrap_err();
            assert!(
                messages(&errs).contains("fleet/staging.yaml:2:"),
                "{errs:?}"
            );
        }
        // A symlink is refused unread, by both.
        std::fs::remove_file(fleet.join("staging.yaml")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", fleet.join("staging.yaml")).unwrap();
        for inv in [Inventories::Of("staging"), Inventories::All] {
            let errs = read(&d, "apps", inv).unwrap_err();
            let text = messages(&errs);
            assert!(text.contains("fleet/staging.yaml: is a symlink"), "{text}");
            assert!(!text.contains("root"), "{text}");
        }
    }
}
