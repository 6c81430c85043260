//! One app's directory on the server and the invariants it keeps:
//!
//! ```text
//! <root>/<app>/current -> releases/<release>   relative symlink, swapped by rename(2)
//! <root>/<app>/releases/<release>/             unpacked artifact
//! <root>/<app>/shared/                         survives every release
//! <root>/<app>/.staging-*  .trash-*            work in progress, removed at start
//! ```
//!
//! A release only appears under `releases/` by a rename of a fully written
//! and fsynced staging directory, and only disappears by a rename to a trash
//! name first, so `releases/<name>` is always complete. `current` is only
//! ever replaced by renaming a new symlink over it.
//!
//! `shared/` belongs to the app (`pm2.user`): whatever hoist does there goes
//! through `safe_fs` handles, and creating inside it is done as that user,
//! so a link the app planted never leads hoist anywhere else.

use crate::config::SharedPath;
use crate::fsutil;
use crate::safe_fs::{self, Dir, Kind, Owner};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Fs(#[from] safe_fs::Error),
    /// The manifest asks for something this release cannot hold (a secret
    /// whose `to` is a file of the release): the same at every try.
    #[error("{0}")]
    Conflict(String),
}

impl ReleaseError {
    /// Whether trying again later cannot help until someone changes
    /// something (the manifest, the artifact, or what the app planted in
    /// `shared/`), as opposed to a passing fault of the disk.
    pub fn is_permanent(&self) -> bool {
        match self {
            ReleaseError::Conflict(_) => true,
            ReleaseError::Fs(e) => e.is_link_on_the_way(),
            ReleaseError::Io { .. } => false,
        }
    }
}

fn io<'a>(
    action: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> ReleaseError + 'a {
    move |source| ReleaseError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Clone)]
pub struct AppDir {
    root: PathBuf,
    name: String,
    dir: PathBuf,
}

impl AppDir {
    pub fn new(root: &Path, app: &str) -> AppDir {
        AppDir {
            root: root.to_path_buf(),
            name: app.to_string(),
            dir: root.join(app),
        }
    }

    /// A handle on `<root>/<app>` (a real directory, not a link), created
    /// when missing. hoist's own: the app cannot change its entries.
    pub fn handle(&self) -> Result<Dir, ReleaseError> {
        let root = Dir::open(&self.root)?;
        Ok(root.ensure_dir(&self.name, 0o755)?.0)
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }
    pub fn releases(&self) -> PathBuf {
        self.dir.join("releases")
    }
    pub fn release(&self, name: &str) -> PathBuf {
        self.releases().join(name)
    }
    pub fn current(&self) -> PathBuf {
        self.dir.join("current")
    }
    pub fn shared(&self) -> PathBuf {
        self.dir.join("shared")
    }

    /// Creates `releases/` and `shared/` if missing. A `shared/` made now
    /// is handed to `owner` (pm2.user) on its handle: the apps write there.
    pub fn ensure_layout(&self, owner: Option<Owner>) -> Result<(), ReleaseError> {
        let app = self.handle()?;
        app.ensure_dir("releases", 0o755)?;
        // Looked at, not opened: hoist may not be able to enter the app's
        // shared/ (0750 under the shipped umask), and need not.
        match app.meta_of("shared")? {
            Some(m) if m.kind == Kind::Dir => {}
            Some(m) => {
                return Err(ReleaseError::Conflict(format!(
                    "{} is {}, not a folder",
                    self.shared().display(),
                    m.kind.describe()
                )));
            }
            None => {
                let shared = app.create_dir("shared", 0o755)?;
                if let Some(o) = owner {
                    shared.chown(o)?;
                }
            }
        }
        Ok(())
    }

    /// Release directories on disk.
    pub fn list_releases(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        if let Ok(rd) = std::fs::read_dir(self.releases()) {
            for e in rd.flatten() {
                let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
                if let (true, Some(name)) = (is_dir, e.file_name().to_str()) {
                    out.insert(name.to_string());
                }
            }
        }
        out
    }

    /// The release `current` points at, if it is a `releases/<name>` link.
    pub fn current_release(&self) -> Option<String> {
        let target = std::fs::read_link(self.current()).ok()?;
        let mut comps = target.components();
        match (comps.next(), comps.next(), comps.next()) {
            (Some(Component::Normal(r)), Some(Component::Normal(name)), None)
                if r == "releases" =>
            {
                name.to_str().map(String::from)
            }
            _ => None,
        }
    }

    /// A fresh, not yet existing, staging path beside `releases/`.
    pub fn new_staging(&self, release: &str) -> PathBuf {
        self.dir
            .join(format!(".staging-{release}-{:08x}", rand::random::<u32>()))
    }

    /// Removes what an interrupted run left: staging and trash directories,
    /// and temporary symlinks from an unfinished swap. Returns what it
    /// removed. Through handles, without following links.
    pub fn clean_leftovers(&self) -> Vec<PathBuf> {
        let mut removed = Vec::new();
        let Ok(app) = Dir::open(&self.root).and_then(|r| r.open_dir(&self.name)) else {
            return removed;
        };
        let Ok(entries) = app.entries() else {
            return removed;
        };
        for (name, _) in entries {
            let leftover = name.starts_with(".staging-")
                || name.starts_with(".trash-")
                || name.starts_with(".current.swap-");
            if !leftover {
                continue;
            }
            match app.remove_tree(&name) {
                Ok(()) => removed.push(self.dir.join(&name)),
                Err(e) => tracing::warn!(app = %self.name, "cannot remove a leftover: {e}"),
            }
        }
        removed
    }

    /// Moves a complete, fsynced staging directory to `releases/<release>`.
    /// An existing directory of that name (an unrecorded leftover) is moved
    /// to the trash first.
    pub fn install(&self, staging: &Path, release: &str) -> Result<PathBuf, ReleaseError> {
        let dest = self.release(release);
        if std::fs::symlink_metadata(&dest).is_ok() {
            self.remove_release(release)?;
        }
        std::fs::rename(staging, &dest).map_err(io("cannot move the release into", &dest))?;
        fsutil::sync_dir(&self.releases()).map_err(io("cannot sync", &self.releases()))?;
        Ok(dest)
    }

    /// Removes a release: renamed to a trash name first (so the name is
    /// gone at once), then deleted.
    pub fn remove_release(&self, release: &str) -> Result<(), ReleaseError> {
        let path = self.release(release);
        let trash = self
            .dir
            .join(format!(".trash-{release}-{:08x}", rand::random::<u32>()));
        std::fs::rename(&path, &trash).map_err(io("cannot remove", &path))?;
        fsutil::sync_dir(&self.releases()).map_err(io("cannot sync", &self.releases()))?;
        std::fs::remove_dir_all(&trash).map_err(io("cannot delete", &trash))?;
        Ok(())
    }

    /// Replaces each shared path inside `dir` (a staging directory, or a
    /// release not running) with a relative symlink into `shared/`, and
    /// each secret's `to` with one into `secrets/live/`. The links are
    /// computed for the directory's place under `releases/`. Directories
    /// (`uploads/`, `data/uploads/`) are created in `shared/` when missing,
    /// as `owner` (pm2.user, whose folder it is) and through handles that
    /// never follow a link nor leave `shared/`; a missing shared file is
    /// left for the operator to provide (the link dangles until then) and
    /// reported back.
    pub fn link_into(
        &self,
        dir: &Path,
        shared: &[SharedPath],
        secrets: &[SharedPath],
        owner: Option<Owner>,
    ) -> Result<Vec<String>, ReleaseError> {
        let mut missing = Vec::new();
        if !shared.is_empty() {
            // Opened as the owner too: hoist itself may not even be able to
            // enter the app's shared/ (0750 under the shipped umask).
            let app = self.handle()?;
            missing = safe_fs::as_user(owner, || make_shared(&app.open_dir("shared")?, shared))
                .map_err(io("cannot act in", &self.shared()))??;
        }
        let staged = Dir::open(dir)?;
        for s in shared {
            link_up(&staged, s.rel(), "shared")?;
        }
        for (i, s) in secrets.iter().enumerate() {
            // A fresh staging directory holds only what the artifact
            // brought: a secret never replaces a file of the release.
            if let Some(kind) = staged.kind_of(s.rel())? {
                return Err(ReleaseError::Conflict(format!(
                    "secrets[{i}].to {} would replace {} of the release ({}); a secret's `to` must name a path the build does not have",
                    s.rel(),
                    kind.describe(),
                    s.rel()
                )));
            }
            link_up(&staged, s.rel(), "secrets/live")?;
        }
        Ok(missing)
    }

    /// The inode of `releases/<release>`: which of two directories of one
    /// name is there (see `exchange`).
    pub fn release_ino(&self, release: &str) -> Result<u64, ReleaseError> {
        use std::os::unix::fs::MetadataExt;
        let p = self.release(release);
        std::fs::symlink_metadata(&p)
            .map(|m| m.ino())
            .map_err(io("cannot read", &p))
    }

    /// Exchanges `releases/<release>` with `other` atomically.
    pub fn exchange(&self, other: &Path, release: &str) -> Result<(), ReleaseError> {
        let p = self.release(release);
        fsutil::exchange(other, &p).map_err(io("cannot exchange", &p))
    }

    /// Points `current` at `releases/<release>` atomically.
    pub fn activate(&self, release: &str) -> Result<(), ReleaseError> {
        let target = Path::new("releases").join(release);
        fsutil::swap_symlink(&self.current(), &target).map_err(io("cannot swap", &self.current()))
    }

    /// Removes the `current` link (an app whose first deploy failed).
    pub fn deactivate(&self) -> Result<(), ReleaseError> {
        match std::fs::remove_file(self.current()) {
            Ok(()) => fsutil::sync_dir(&self.dir).map_err(io("cannot sync", &self.dir)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io("cannot remove", &self.current())(e)),
        }
    }
}

/// Creates the missing folders of `shared` paths inside `shared/` (run
/// as the app's user) and returns the shared files that are not there.
fn make_shared(shared_dir: &Dir, shared: &[SharedPath]) -> Result<Vec<String>, ReleaseError> {
    let mut missing = Vec::new();
    for s in shared {
        let rel = s.rel();
        if s.is_dir() {
            shared_dir.make_dirs(rel, 0o755)?;
            continue;
        }
        if let Some((parent, _)) = rel.rsplit_once('/') {
            shared_dir.make_dirs(parent, 0o755)?;
        }
        if shared_dir.kind_of(rel)?.is_none() {
            missing.push(rel.to_string());
        }
    }
    Ok(missing)
}

/// Makes `<dir>/<rel>` a relative symlink to `<app>/<under>/<rel>`, for a
/// `dir` that is (or will be renamed to) `<app>/releases/<release>`:
/// whatever the build put at that path is replaced. The folders on the way
/// must be real folders of the release, not links.
fn link_up(dir: &Dir, rel: &str, under: &str) -> Result<(), ReleaseError> {
    let (parent_rel, name) = match rel.rsplit_once('/') {
        Some((p, n)) => (p, n),
        None => ("", rel),
    };
    let parent = dir.make_dirs(parent_rel, 0o755)?;
    match parent.kind_of(name)? {
        Some(Kind::Dir) => parent.remove_tree(name)?,
        Some(_) => parent.remove_file(name)?,
        None => {}
    }
    // From releases/<release>/<rel> up to <app>/, then down.
    let depth = 2 + rel.split('/').count() - 1;
    let mut target = PathBuf::new();
    for _ in 0..depth {
        target.push("..");
    }
    target.push(under);
    target.push(rel);
    parent.symlink(&target, name)?;
    parent.sync()?;
    Ok(())
}

/// Which releases to delete: all but the `keep` most recent, never one in
/// `protect` (current and previous). `recency` orders releases (larger is
/// more recent); releases without an entry count as oldest.
pub fn releases_to_prune(
    on_disk: &BTreeSet<String>,
    recency: &BTreeMap<String, String>,
    keep: usize,
    protect: &[&str],
) -> Vec<String> {
    let mut ordered: Vec<&String> = on_disk.iter().collect();
    // Most recent first; unknown ones last.
    ordered.sort_by(|a, b| {
        let ra = recency.get(*a);
        let rb = recency.get(*b);
        rb.cmp(&ra).then_with(|| b.cmp(a))
    });
    let mut kept = 0usize;
    let mut out = Vec::new();
    // Protected releases count toward `keep` first.
    let protected: BTreeSet<&str> = protect.iter().copied().collect();
    kept += ordered
        .iter()
        .filter(|r| protected.contains(r.as_str()))
        .count();
    for r in ordered {
        if protected.contains(r.as_str()) {
            continue;
        }
        if kept < keep {
            kept += 1;
        } else {
            out.push(r.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    fn rec(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn prune_keeps_the_most_recent() {
        let disk = set(&["v1", "v2", "v3", "v4"]);
        let r = rec(&[("v1", "1"), ("v2", "2"), ("v3", "3"), ("v4", "4")]);
        assert_eq!(
            releases_to_prune(&disk, &r, 2, &["v4", "v3"]),
            vec!["v2", "v1"]
        );
        assert_eq!(releases_to_prune(&disk, &r, 3, &["v4", "v3"]), vec!["v1"]);
    }

    #[test]
    fn prune_never_removes_current_or_previous() {
        // After a revert: current v1 is the oldest unpacked, previous is v3.
        let disk = set(&["v1", "v2", "v3"]);
        let r = rec(&[("v1", "1"), ("v2", "2"), ("v3", "3")]);
        let gone = releases_to_prune(&disk, &r, 1, &["v1", "v3"]);
        assert_eq!(gone, vec!["v2"]);
    }

    #[test]
    fn unknown_dirs_are_oldest() {
        let disk = set(&["v1", "stray", "v2"]);
        let r = rec(&[("v1", "1"), ("v2", "2")]);
        assert_eq!(releases_to_prune(&disk, &r, 2, &["v2"]), vec!["stray"]);
    }

    #[test]
    fn shared_links_are_relative_and_replace_release_content() {
        let root = tempfile::tempdir().unwrap();
        let app = AppDir::new(root.path(), "web");
        app.ensure_layout(None).unwrap();
        let rel = app.release("v1");
        std::fs::create_dir_all(rel.join("uploads")).unwrap();
        std::fs::write(rel.join("uploads/x"), "from the build").unwrap();
        std::fs::create_dir_all(rel.join("config")).unwrap();
        std::fs::write(app.shared().join(".env"), "A=1").unwrap();
        let shared = [
            SharedPath::new(".env").unwrap(),
            SharedPath::new("uploads/").unwrap(),
            SharedPath::new("config/local.json").unwrap(),
        ];
        let missing = app.link_into(&rel, &shared, &[], None).unwrap();
        assert_eq!(missing, vec!["config/local.json"]);
        assert_eq!(
            std::fs::read_link(rel.join(".env")).unwrap(),
            Path::new("../../shared/.env")
        );
        assert_eq!(
            std::fs::read_link(rel.join("config/local.json")).unwrap(),
            Path::new("../../../shared/config/local.json")
        );
        assert_eq!(std::fs::read_to_string(rel.join(".env")).unwrap(), "A=1");
        assert!(app.shared().join("uploads").is_dir());
        assert!(!rel.join("uploads/x").exists());
        // Idempotent on a re-deploy of the same release.
        app.link_into(&rel, &shared, &[], None).unwrap();
        assert_eq!(std::fs::read_to_string(rel.join(".env")).unwrap(), "A=1");
        // Secrets link into secrets/live, at any depth.
        let secrets = [SharedPath::new("config/key.pem").unwrap()];
        app.link_into(&rel, &[], &secrets, None).unwrap();
        assert_eq!(
            std::fs::read_link(rel.join("config/key.pem")).unwrap(),
            Path::new("../../../secrets/live/config/key.pem")
        );
    }

    #[test]
    fn activate_install_remove_and_leftovers() {
        let root = tempfile::tempdir().unwrap();
        let app = AppDir::new(root.path(), "web");
        app.ensure_layout(None).unwrap();
        for r in ["v1", "v2"] {
            let st = app.new_staging(r);
            std::fs::create_dir(&st).unwrap();
            std::fs::write(st.join("VERSION"), r).unwrap();
            app.install(&st, r).unwrap();
        }
        app.activate("v1").unwrap();
        assert_eq!(app.current_release().as_deref(), Some("v1"));
        app.activate("v2").unwrap();
        assert_eq!(app.current_release().as_deref(), Some("v2"));
        assert_eq!(
            std::fs::read_to_string(app.current().join("VERSION")).unwrap(),
            "v2"
        );
        assert_eq!(app.list_releases(), set(&["v1", "v2"]));
        app.remove_release("v1").unwrap();
        assert_eq!(app.list_releases(), set(&["v2"]));
        std::fs::create_dir(app.new_staging("v3")).unwrap();
        assert_eq!(app.clean_leftovers().len(), 1);
        let names: Vec<_> = std::fs::read_dir(app.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
        app.deactivate().unwrap();
        assert_eq!(app.current_release(), None);
    }
}
