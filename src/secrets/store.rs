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
//! it). A generation is written while it is still hoist's alone, then
//! handed over bottom up through handles (`safe_fs`), so the app can enter
//! nothing before all of it is the app's. hoist, running as its own user
//! with the capabilities the host config's `pm2.user` asks for, then reads a generation back
//! (`same_as`) as the owner (`safe_fs::as_user`, needs
//! CAP_SETUID/CAP_SETGID), and removes one by taking each directory back
//! through a handle first (needs CAP_CHOWN). It never needs to read what
//! other users own (CAP_DAC_READ_SEARCH), and since the app may plant links
//! inside a generation it owns, nothing here follows one.

use super::{Plaintext, SecretsError};
use crate::config::SharedPath;
use crate::fsutil;
use crate::safe_fs::{self, Dir, Kind};
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

pub use crate::safe_fs::Owner;

/// The directory of an app's secrets, beside `releases/`.
pub const SECRETS_DIR: &str = "secrets";
/// The symlink naming the generation in use.
pub const LIVE: &str = "live";
const STAGING: &str = ".staging-";
const TRASH: &str = ".trash-";
/// `fsutil::swap_symlink`'s temporary name for `live`.
const LIVE_SWAP: &str = ".live.swap-";

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
    app_dir: PathBuf,
    dir: PathBuf,
    owner: Option<Owner>,
}

impl SecretStore {
    /// The store of the app whose directory is `app_dir` (`<root>/<app>`);
    /// `owner` is `pm2.user`, when set.
    pub fn new(app_dir: &Path, owner: Option<Owner>) -> SecretStore {
        SecretStore {
            app_dir: app_dir.to_path_buf(),
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

    /// A handle on `<root>/<app>`: the app's directory is opened from the
    /// root's, so neither it nor `secrets/` may be a link.
    fn app_handle(&self) -> Result<Dir, SecretsError> {
        let (root, name) = match (
            self.app_dir.parent(),
            self.app_dir.file_name().and_then(|n| n.to_str()),
        ) {
            (Some(r), Some(n)) if !r.as_os_str().is_empty() => (r, n),
            _ => return Ok(Dir::open(&self.app_dir)?),
        };
        Ok(Dir::open(root)?.open_dir(name)?)
    }

    /// A handle on `secrets/`, or None when there is none yet.
    fn handle(&self) -> Result<Option<Dir>, SecretsError> {
        let app = match self.app_handle() {
            Ok(a) => a,
            Err(SecretsError::Fs(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        match app.open_dir(SECRETS_DIR) {
            Ok(d) => Ok(Some(d)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.not_a_dir(e)),
        }
    }

    fn not_a_dir(&self, e: safe_fs::Error) -> SecretsError {
        if e.is_link_on_the_way() {
            SecretsError::Usage(format!(
                "{} is not a directory; hoist keeps the apps' secrets there",
                self.dir.display()
            ))
        } else {
            e.into()
        }
    }

    /// Creates `secrets/` (0700, or 0711 when an owner must pass through)
    /// and refuses anything but a real directory there.
    fn ensure_dir(&self) -> Result<Dir, SecretsError> {
        let mode = if self.owner.is_some() { 0o711 } else { 0o700 };
        let app = match self.app_handle() {
            Ok(a) => a,
            Err(SecretsError::Fs(e)) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(&self.app_dir)
                    .map_err(SecretsError::io("create", &self.app_dir))?;
                self.app_handle()?
            }
            Err(e) => return Err(e),
        };
        let (dir, _) = app
            .ensure_dir(SECRETS_DIR, mode)
            .map_err(|e| self.not_a_dir(e))?;
        dir.chmod(mode)?;
        Ok(dir)
    }

    /// Writes a new generation holding each `(to, plaintext)` and returns
    /// its name. Nothing is written outside `secrets/`; the generation
    /// appears whole (fsynced, then renamed into place) or not at all.
    pub fn stage(&self, files: &[(SharedPath, Plaintext)]) -> Result<Generation, SecretsError> {
        check_paths(files)?;
        let secrets = self.ensure_dir()?;
        let tmp = format!("{STAGING}{:016x}", rand::random::<u64>());
        let staged = secrets.create_dir(&tmp, 0o700)?;
        if let Err(e) = self.write_generation(staged, files) {
            let _ = secrets.remove_tree(&tmp);
            return Err(e);
        }
        let name = self.next_name()?;
        if let Err(e) = secrets.rename_noreplace(&tmp, &secrets, name.as_str()) {
            let _ = secrets.remove_tree(&tmp);
            return Err(e.into());
        }
        secrets.sync()?;
        Ok(name)
    }

    /// Fills a staging directory that is still hoist's alone, then hands
    /// it over (bottom up) and syncs it.
    fn write_generation(
        &self,
        tmp: Dir,
        files: &[(SharedPath, Plaintext)],
    ) -> Result<(), SecretsError> {
        tmp.chmod(0o700)?;
        for (to, plaintext) in files {
            let (parent, name) = match to.rel().rsplit_once('/') {
                Some((p, n)) => (tmp.make_dirs(p, 0o700)?, n),
                None => (tmp.try_clone()?, to.rel()),
            };
            let mut f = parent.create_file(name, 0o600)?;
            let path = parent.path().join(name);
            f.write_all(plaintext.as_bytes())
                .and_then(|()| f.sync_all())
                .map_err(SecretsError::io("write", &path))?;
        }
        if let Some(owner) = self.owner {
            tmp.chown_tree(owner)?;
        }
        safe_fs::as_user(self.owner, move || tmp.sync_tree())
            .map_err(SecretsError::io("sync", &self.dir))??;
        Ok(())
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
    /// the same either. Read as the owner, through handles, no link followed.
    pub fn same_as(
        &self,
        g: &Generation,
        files: &[(SharedPath, Plaintext)],
    ) -> Result<bool, SecretsError> {
        let Some(secrets) = self.handle()? else {
            return Ok(false);
        };
        let uid = self.expected_uid();
        match secrets.meta_of(g.as_str())? {
            Some(m) if m.kind == Kind::Dir && m.uid == uid => {}
            _ => return Ok(false),
        }
        let name = g.as_str().to_string();
        safe_fs::as_user(self.owner, move || -> Result<bool, SecretsError> {
            let dir = secrets.open_dir(&name)?;
            compare_tree(&dir, files, uid)
        })
        .map_err(SecretsError::io("read", self.path_of(g)))?
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
        let Some(secrets) = self.handle()? else {
            return Ok(None);
        };
        match secrets.read_link(LIVE) {
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
            Err(e) => Err(e.into()),
        }
    }

    /// Points `live` at `g` (rename of a new symlink, then a directory fsync).
    pub fn activate(&self, g: &Generation) -> Result<(), SecretsError> {
        let dir = self.path_of(g);
        let secrets = self.handle()?;
        let present = match &secrets {
            Some(s) => s.kind_of(g.as_str())? == Some(Kind::Dir),
            None => false,
        };
        let Some(secrets) = secrets.filter(|_| present) else {
            return Err(SecretsError::Usage(format!(
                "cannot make {} live: it is not on disk",
                dir.display()
            )));
        };
        let tmp = format!("{LIVE_SWAP}{:08x}", rand::random::<u32>());
        secrets.symlink(Path::new(g.as_str()), &tmp)?;
        if let Err(e) = secrets.rename(&tmp, &secrets, LIVE) {
            let _ = secrets.remove_file(&tmp);
            return Err(e.into());
        }
        secrets.sync()?;
        Ok(())
    }

    /// Removes `live` (the app has no secrets any more).
    pub fn deactivate(&self) -> Result<(), SecretsError> {
        let Some(secrets) = self.handle()? else {
            return Ok(());
        };
        match secrets.remove_file(LIVE) {
            Ok(()) => Ok(secrets.sync()?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// The generations on disk, oldest first.
    pub fn generations(&self) -> Result<Vec<Generation>, SecretsError> {
        let Some(secrets) = self.handle()? else {
            return Ok(Vec::new());
        };
        let mut out: Vec<Generation> = secrets
            .entries()?
            .into_iter()
            .filter(|(_, kind)| *kind == Kind::Dir)
            .filter_map(|(name, _)| Generation::parse(&name).ok())
            .collect();
        out.sort_by_key(|g| (g.number(), g.0.clone()));
        Ok(out)
    }

    /// Removes every generation but those in `keep` and the live one;
    /// returns what it removed.
    pub fn prune(&self, keep: &[Generation]) -> Result<Vec<Generation>, SecretsError> {
        let live = self.live()?;
        let Some(secrets) = self.handle()? else {
            return Ok(Vec::new());
        };
        let mut removed = Vec::new();
        for g in self.generations()? {
            if keep.contains(&g) || live.as_ref() == Some(&g) {
                continue;
            }
            let trash = format!("{TRASH}{:016x}", rand::random::<u64>());
            secrets.rename_noreplace(g.as_str(), &secrets, &trash)?;
            secrets.sync()?;
            secrets.remove_tree(&trash)?;
            removed.push(g);
        }
        Ok(removed)
    }

    /// Removes what an interrupted `stage` or `prune` left behind, whoever
    /// owns it by now (a generation half handed over to the app's user).
    pub fn remove_leftovers(&self) -> Result<(), SecretsError> {
        let Some(secrets) = self.handle()? else {
            return Ok(());
        };
        for (name, _) in secrets.entries()? {
            if name.starts_with(STAGING) || name.starts_with(TRASH) {
                secrets.remove_tree(&name)?;
            } else if name.starts_with(LIVE_SWAP) {
                secrets.remove_file(&name)?;
            }
        }
        Ok(())
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

/// Whether the regular files under `dir` are exactly `wanted`, byte for
/// byte, each owned by `uid`. Anything else there (a link, a fifo) makes
/// them differ; nothing is followed.
fn compare_tree(
    dir: &Dir,
    wanted: &[(SharedPath, Plaintext)],
    uid: u32,
) -> Result<bool, SecretsError> {
    let mut found = BTreeSet::new();
    let mut other = false;
    dir.walk(&mut |rel, kind| {
        match kind {
            Kind::File => {
                found.insert(rel.to_string());
            }
            Kind::Dir => {}
            _ => other = true,
        }
        Ok(())
    })?;
    let names: BTreeSet<String> = wanted.iter().map(|(n, _)| n.rel().to_string()).collect();
    if other || found != names {
        return Ok(false);
    }
    for (name, plaintext) in wanted {
        let mut f = dir.open_file(name.rel())?;
        let path = dir.path().join(name.rel());
        let meta = f.metadata().map_err(SecretsError::io("read", &path))?;
        use std::os::unix::fs::MetadataExt;
        if meta.len() != plaintext.len() as u64 || meta.uid() != uid {
            return Ok(false);
        }
        let mut have = Plaintext::new(Vec::with_capacity(plaintext.len() + 1));
        f.read_to_end(&mut have.0)
            .map_err(SecretsError::io("read", &path))?;
        if have.as_bytes() != plaintext.as_bytes() {
            return Ok(false);
        }
    }
    Ok(true)
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
