//! The plaintext of one app's secrets on the server, and nowhere else:
//!
//! ```text
//! <root>/<app>/secrets/live -> g7-1c9e04aa          relative symlink, swapped by rename(2)
//! <root>/<app>/secrets/g7-1c9e04aa/<to>            the plaintext, 0600, dirs 0700
//! <root>/<app>/secrets/.staging-*  .trash-*        work in progress, removed at start
//! <root>/<app>/releases/<r>/<to> -> ../../secrets/live/<to>
//! ```
//!
//! It is shaped like the releases beside it, for the same reasons: a
//! generation only appears by the rename of a complete, fsynced staging
//! directory; `live` only changes by renaming a new symlink over it; a
//! generation is removed by a rename to a trash name first. So the engine
//! can record "release R with secrets G" in one journal entry and swap or
//! restore the pair, and a crash leaves a whole generation or none.
//!
//! Generation names come from a counter and a random suffix, never from the
//! plaintext, and no hash of the plaintext is stored anywhere: a hash of a
//! short secret (a 6-digit PIN, a word) can be brute-forced. Whether new
//! plaintext equals a generation's is answered by comparing the bytes.
//!
//! **Ownership (`pm2.user`).** With an [`Owner`], every file and directory
//! of a generation belongs to the app's user, so the app can read its
//! secrets and nothing else can (the `secrets/` directory itself stays
//! hoist's, mode 0711: the app may pass through it but not list or change
//! it). hoist, running as its own user with the capabilities SPEC §1 names,
//! then reads a generation back (`same_as`) by switching the file-system
//! identity of one short-lived thread to the owner (`setfsuid`, needs
//! CAP_SETUID/CAP_SETGID), and removes one by taking it back first (`lchown`,
//! needs CAP_CHOWN). It never needs to read what other users own
//! (CAP_DAC_READ_SEARCH).

use super::{Plaintext, SecretsError};
use crate::config::SharedPath;
use crate::fsutil;
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// The directory of an app's secrets, beside `releases/`.
pub const SECRETS_DIR: &str = "secrets";
/// The symlink naming the generation in use.
pub const LIVE: &str = "live";
const STAGING: &str = ".staging-";
const TRASH: &str = ".trash-";
/// `fsutil::swap_symlink`'s temporary name for `live`.
const LIVE_SWAP: &str = ".live.swap-";

/// The user (and group) that owns the plaintext: `pm2.user`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

impl Owner {
    /// The user named `name` and its primary group.
    pub fn of_user(name: &str) -> Result<Owner, SecretsError> {
        match nix::unistd::User::from_name(name) {
            Ok(Some(u)) => Ok(Owner {
                uid: u.uid.as_raw(),
                gid: u.gid.as_raw(),
            }),
            Ok(None) => Err(SecretsError::Usage(format!(
                "pm2.user {name:?} is not a user on this server"
            ))),
            Err(e) => Err(SecretsError::Usage(format!(
                "cannot look up pm2.user {name:?}: {e}"
            ))),
        }
    }
}

/// The name of one generation: `g<counter>-<random>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Generation(String);

impl Generation {
    pub fn parse(s: &str) -> Result<Generation, String> {
        let ok = s
            .strip_prefix('g')
            .and_then(|rest| rest.split_once('-'))
            .is_some_and(|(n, r)| {
                !n.is_empty()
                    && n.len() <= 19
                    && n.bytes().all(|b| b.is_ascii_digit())
                    && r.len() == 8
                    && r.bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
            });
        if ok {
            Ok(Generation(s.to_string()))
        } else {
            Err(format!("{s:?} is not a secrets generation name"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Its counter: later generations have larger numbers.
    pub fn number(&self) -> u64 {
        self.0[1..]
            .split('-')
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    }
}

impl std::fmt::Display for Generation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl serde::Serialize for Generation {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for Generation {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Generation::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// `<root>/<app>/secrets/`.
#[derive(Debug, Clone)]
pub struct SecretStore {
    dir: PathBuf,
    owner: Option<Owner>,
}

impl SecretStore {
    /// The store of the app whose directory is `app_dir` (`<root>/<app>`);
    /// `owner` is `pm2.user`, when set.
    pub fn new(app_dir: &Path, owner: Option<Owner>) -> SecretStore {
        SecretStore {
            dir: app_dir.join(SECRETS_DIR),
            owner,
        }
    }

    /// `<root>/<app>/secrets`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path_of(&self, g: &Generation) -> PathBuf {
        self.dir.join(g.as_str())
    }

    /// Creates `secrets/` (0700, or 0711 when an owner must pass through)
    /// and refuses anything but a real directory there.
    fn ensure_dir(&self) -> Result<(), SecretsError> {
        let mode = if self.owner.is_some() { 0o711 } else { 0o700 };
        match std::fs::symlink_metadata(&self.dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(SecretsError::Usage(format!(
                    "{} is not a directory; hoist keeps the apps' secrets there",
                    self.dir.display()
                )));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some(parent) = self.dir.parent() {
                    std::fs::create_dir_all(parent).map_err(SecretsError::io("create", parent))?;
                }
                std::fs::DirBuilder::new()
                    .mode(mode)
                    .create(&self.dir)
                    .map_err(SecretsError::io("create", &self.dir))?;
            }
            Err(e) => return Err(SecretsError::io("read", &self.dir)(e)),
        }
        std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(mode))
            .map_err(SecretsError::io("set the mode of", &self.dir))
    }

    /// Writes a new generation holding each `(to, plaintext)` and returns
    /// its name. Nothing is written outside `secrets/`; the generation
    /// appears whole (fsynced, then renamed into place) or not at all.
    pub fn stage(&self, files: &[(SharedPath, Plaintext)]) -> Result<Generation, SecretsError> {
        check_paths(files)?;
        self.ensure_dir()?;
        let tmp = self
            .dir
            .join(format!("{STAGING}{:016x}", rand::random::<u64>()));
        let result = self.write_generation(&tmp, files);
        if let Err(e) = result {
            let _ = self.remove_tree(&tmp);
            return Err(e);
        }
        let name = self.next_name()?;
        let dest = self.path_of(&name);
        if let Err(e) = std::fs::rename(&tmp, &dest) {
            let _ = self.remove_tree(&tmp);
            return Err(SecretsError::io("rename into place", &dest)(e));
        }
        fsutil::sync_dir(&self.dir).map_err(SecretsError::io("sync", &self.dir))?;
        Ok(name)
    }

    fn write_generation(
        &self,
        tmp: &Path,
        files: &[(SharedPath, Plaintext)],
    ) -> Result<(), SecretsError> {
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(tmp)
            .map_err(SecretsError::io("create", tmp))?;
        for (to, plaintext) in files {
            let path = tmp.join(to.rel());
            if let Some(parent) = path.parent()
                && parent != tmp
            {
                std::fs::DirBuilder::new()
                    .mode(0o700)
                    .recursive(true)
                    .create(parent)
                    .map_err(SecretsError::io("create", parent))?;
            }
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path)
                .map_err(SecretsError::io("create", &path))?;
            f.write_all(plaintext.as_bytes())
                .map_err(SecretsError::io("write", &path))?;
        }
        if let Some(owner) = self.owner {
            chown_tree(tmp, owner).map_err(SecretsError::io("hand over to pm2.user", tmp))?;
        }
        as_owner(self.owner, || fsutil::sync_tree(tmp))
            .and_then(|r| r)
            .map_err(SecretsError::io("sync", tmp))
    }

    /// The next generation name: one more than the largest counter on disk.
    fn next_name(&self) -> Result<Generation, SecretsError> {
        let n = self
            .generations()?
            .iter()
            .map(Generation::number)
            .max()
            .unwrap_or(0);
        Generation::parse(&format!("g{}-{:08x}", n + 1, rand::random::<u32>()))
            .map_err(SecretsError::Usage)
    }

    /// Whether generation `g` holds exactly these files with exactly these
    /// bytes (and nothing else), owned by whom they should be (a generation
    /// written before `pm2.user` changed is not the same: it must be
    /// written again for the new owner). A generation not on disk is not
    /// the same either.
    pub fn same_as(
        &self,
        g: &Generation,
        files: &[(SharedPath, Plaintext)],
    ) -> Result<bool, SecretsError> {
        let dir = self.path_of(g);
        let uid = self.expected_uid();
        match std::fs::symlink_metadata(&dir) {
            Ok(m) if m.is_dir() && m.uid() == uid => {}
            Ok(_) => return Ok(false),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(SecretsError::io("read", &dir)(e)),
        }
        as_owner(self.owner, || compare_tree(&dir, files, uid))
            .and_then(|r| r)
            .map_err(SecretsError::io("read", &dir))
    }

    /// Who owns the plaintext: the owner, else hoist itself.
    fn expected_uid(&self) -> u32 {
        self.owner
            .map(|o| o.uid)
            .unwrap_or_else(|| nix::unistd::geteuid().as_raw())
    }

    /// The generation `live` names, if any.
    pub fn live(&self) -> Result<Option<Generation>, SecretsError> {
        let link = self.dir.join(LIVE);
        match std::fs::read_link(&link) {
            Ok(target) => {
                let name = target.to_str().unwrap_or_default();
                let g = Generation::parse(name).map_err(|_| {
                    SecretsError::Usage(format!(
                        "{} points at {}, which is not a secrets generation",
                        link.display(),
                        target.display()
                    ))
                })?;
                Ok(Some(g))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(SecretsError::io("read", &link)(e)),
        }
    }

    /// Points `live` at `g` (rename of a new symlink, then a directory fsync).
    pub fn activate(&self, g: &Generation) -> Result<(), SecretsError> {
        let dir = self.path_of(g);
        match std::fs::symlink_metadata(&dir) {
            Ok(m) if m.is_dir() => {}
            _ => {
                return Err(SecretsError::Usage(format!(
                    "cannot make {} live: it is not on disk",
                    dir.display()
                )));
            }
        }
        let link = self.dir.join(LIVE);
        fsutil::swap_symlink(&link, Path::new(g.as_str())).map_err(SecretsError::io("swap", &link))
    }

    /// Removes `live` (the app has no secrets any more).
    pub fn deactivate(&self) -> Result<(), SecretsError> {
        let link = self.dir.join(LIVE);
        match std::fs::remove_file(&link) {
            Ok(()) => fsutil::sync_dir(&self.dir).map_err(SecretsError::io("sync", &self.dir)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(SecretsError::io("remove", &link)(e)),
        }
    }

    /// The generations on disk, oldest first.
    pub fn generations(&self) -> Result<Vec<Generation>, SecretsError> {
        let rd = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(SecretsError::io("read", &self.dir)(e)),
        };
        let mut out = Vec::new();
        for entry in rd {
            let entry = entry.map_err(SecretsError::io("read", &self.dir))?;
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            if let (true, Some(name)) = (is_dir, entry.file_name().to_str())
                && let Ok(g) = Generation::parse(name)
            {
                out.push(g);
            }
        }
        out.sort_by_key(|g| (g.number(), g.0.clone()));
        Ok(out)
    }

    /// Removes every generation but those in `keep` and the live one;
    /// returns what it removed.
    pub fn prune(&self, keep: &[Generation]) -> Result<Vec<Generation>, SecretsError> {
        let live = self.live()?;
        let mut removed = Vec::new();
        for g in self.generations()? {
            if keep.contains(&g) || live.as_ref() == Some(&g) {
                continue;
            }
            let trash = self
                .dir
                .join(format!("{TRASH}{:016x}", rand::random::<u64>()));
            let from = self.path_of(&g);
            std::fs::rename(&from, &trash).map_err(SecretsError::io("remove", &from))?;
            fsutil::sync_dir(&self.dir).map_err(SecretsError::io("sync", &self.dir))?;
            self.remove_tree(&trash)?;
            removed.push(g);
        }
        Ok(removed)
    }

    /// Removes what an interrupted `stage` or `prune` left behind.
    pub fn remove_leftovers(&self) -> Result<(), SecretsError> {
        let rd = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(SecretsError::io("read", &self.dir)(e)),
        };
        for entry in rd {
            let entry = entry.map_err(SecretsError::io("read", &self.dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if name.starts_with(STAGING) || name.starts_with(TRASH) {
                self.remove_tree(&path)?;
            } else if name.starts_with(LIVE_SWAP) {
                std::fs::remove_file(&path).map_err(SecretsError::io("remove", &path))?;
            }
        }
        Ok(())
    }

    /// Removes a tree below `secrets/`, taking it back from the owner first
    /// (hoist may not be able to list a directory the app's user owns).
    fn remove_tree(&self, path: &Path) -> Result<(), SecretsError> {
        if self.owner.is_some() {
            reclaim_tree(path).map_err(SecretsError::io("take back", path))?;
        }
        match std::fs::remove_dir_all(path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(SecretsError::io("remove", path)(e)),
        }
    }
}

/// Each `to` names a file once, and no `to` lies inside another.
fn check_paths(files: &[(SharedPath, Plaintext)]) -> Result<(), SecretsError> {
    let mut seen = BTreeSet::new();
    for (to, _) in files {
        if to.is_dir() {
            return Err(SecretsError::Usage(format!(
                "secret path {:?} names a directory; a secret is a file",
                to.as_str()
            )));
        }
        if !seen.insert(to.rel().to_string()) {
            return Err(SecretsError::Usage(format!(
                "secret path {:?} appears twice",
                to.rel()
            )));
        }
    }
    for a in &seen {
        if seen.iter().any(|b| b.starts_with(&format!("{a}/"))) {
            return Err(SecretsError::Usage(format!(
                "secret path {a:?} is also a directory of another secret"
            )));
        }
    }
    Ok(())
}

/// Runs `f` with the file-system identity of `owner` (on a thread of its
/// own, so no other thread of hoist is affected), or directly when there is
/// no owner or hoist already is that user.
fn as_owner<T: Send>(owner: Option<Owner>, f: impl FnOnce() -> T + Send) -> std::io::Result<T> {
    use nix::unistd::{Gid, Uid, geteuid, setfsgid, setfsuid};
    let Some(o) = owner else { return Ok(f()) };
    if geteuid().as_raw() == o.uid {
        return Ok(f());
    }
    std::thread::scope(|s| {
        let worker = s.spawn(move || {
            // The calls report the previous id whatever happens; asking
            // again tells whether the switch took.
            setfsgid(Gid::from_raw(o.gid));
            setfsuid(Uid::from_raw(o.uid));
            if setfsgid(Gid::from_raw(o.gid)).as_raw() != o.gid
                || setfsuid(Uid::from_raw(o.uid)).as_raw() != o.uid
            {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!(
                        "cannot act as pm2.user (uid {}); hoist needs CAP_SETUID and CAP_SETGID",
                        o.uid
                    ),
                ));
            }
            Ok(f())
        });
        match worker.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

fn chown_tree(path: &Path, owner: Owner) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(path)?;
    if meta.is_dir() {
        for entry in std::fs::read_dir(path)? {
            chown_tree(&entry?.path(), owner)?;
        }
    }
    std::os::unix::fs::lchown(path, Some(owner.uid), Some(owner.gid))
}

/// Gives a tree back to hoist's own user, top down, so it can be listed
/// and removed.
fn reclaim_tree(path: &Path) -> std::io::Result<()> {
    let uid = nix::unistd::geteuid().as_raw();
    let gid = nix::unistd::getegid().as_raw();
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))?;
    if meta.is_dir() {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))?;
        for entry in std::fs::read_dir(path)? {
            reclaim_tree(&entry?.path())?;
        }
    }
    Ok(())
}

/// Whether the regular files under `dir` are exactly `wanted`, byte for byte.
fn compare_tree(dir: &Path, wanted: &[(SharedPath, Plaintext)], uid: u32) -> std::io::Result<bool> {
    let mut found = BTreeSet::new();
    list_files(dir, "", &mut found)?;
    let names: BTreeSet<String> = wanted.iter().map(|(n, _)| n.rel().to_string()).collect();
    if found != names {
        return Ok(false);
    }
    for (name, plaintext) in wanted {
        let path = dir.join(name.rel());
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)?;
        let meta = f.metadata()?;
        if meta.len() != plaintext.len() as u64 || meta.uid() != uid {
            return Ok(false);
        }
        let mut have = Plaintext::new(Vec::with_capacity(plaintext.len() + 1));
        f.read_to_end(&mut have.0)?;
        if have.as_bytes() != plaintext.as_bytes() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Relative paths of regular files below `dir`; anything else (a symlink, a
/// fifo) is listed under a name no `to` can have, so the comparison fails.
fn list_files(dir: &Path, prefix: &str, out: &mut BTreeSet<String>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let t = entry.file_type()?;
        if t.is_dir() {
            list_files(&entry.path(), &rel, out)?;
        } else if t.is_file() {
            out.insert(rel);
        } else {
            out.insert(format!("{rel}/(not a file)"));
        }
    }
    Ok(())
}

/// Makes `<release_dir>/<to>` a relative symlink to `secrets/live/<to>` of
/// the app whose directory is `app_dir`. `release_dir` must be where the
/// release serves from (`<app>/releases/<release>`), since the link counts
/// the levels up from there. Whatever the artifact had at `<to>` is
/// replaced; a symlink or file among `<to>`'s parent directories is refused,
/// so the link is never written through a link.
pub fn link_into_release(
    app_dir: &Path,
    release_dir: &Path,
    to: &SharedPath,
) -> Result<(), SecretsError> {
    let inside = release_dir.strip_prefix(app_dir).map_err(|_| {
        SecretsError::Usage(format!(
            "{} is not inside {}",
            release_dir.display(),
            app_dir.display()
        ))
    })?;
    if inside.as_os_str().is_empty()
        || inside
            .components()
            .any(|c| !matches!(c, Component::Normal(_)))
    {
        return Err(SecretsError::Usage(format!(
            "{} is not a release directory inside {}",
            release_dir.display(),
            app_dir.display()
        )));
    }
    if to.is_dir() {
        return Err(SecretsError::Usage(format!(
            "secret path {:?} names a directory; a secret is a file",
            to.as_str()
        )));
    }
    let parts: Vec<&str> = to.rel().split('/').collect();
    let mut dir = release_dir.to_path_buf();
    for part in &parts[..parts.len() - 1] {
        dir.push(part);
        match std::fs::symlink_metadata(&dir) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(SecretsError::Usage(format!(
                    "cannot link the secret {} into the release: {} is not a directory",
                    to.rel(),
                    dir.display()
                )));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir(&dir).map_err(SecretsError::io("create", &dir))?;
            }
            Err(e) => return Err(SecretsError::io("read", &dir)(e)),
        }
    }
    let link = release_dir.join(to.rel());
    match std::fs::symlink_metadata(&link) {
        Ok(m) if m.is_dir() => {
            std::fs::remove_dir_all(&link).map_err(SecretsError::io("replace", &link))?
        }
        Ok(_) => std::fs::remove_file(&link).map_err(SecretsError::io("replace", &link))?,
        Err(_) => {}
    }
    // Up from the link's directory to <app>/, then into secrets/live/.
    let depth = inside.components().count() + parts.len() - 1;
    let mut target = PathBuf::new();
    for _ in 0..depth {
        target.push("..");
    }
    target.push(SECRETS_DIR);
    target.push(LIVE);
    target.push(to.rel());
    std::os::unix::fs::symlink(&target, &link).map_err(SecretsError::io("link", &link))?;
    let parent = link.parent().unwrap_or(release_dir);
    fsutil::sync_dir(parent).map_err(SecretsError::io("sync", parent))
}

#[cfg(test)]
mod tests;
