//! The one room where hoist, with its privileges, touches folders an app
//! can write: `shared/`, the secrets generations the app's user owns, the
//! app's pm2 home, and what start-up removes. Nothing here follows a link.
//!
//! hoist may hold CAP_CHOWN (the shipped unit grants it, to hand files to
//! `pm2.user`), or run as root. A path-based `chown("shared/uploads")` or
//! `create_dir_all` follows whatever link the app planted on the way, so an
//! app that swaps `shared/uploads` for a link to `/etc` at the right moment
//! gets `/etc` created into or chowned to itself. So every operation here
//! works on a directory *handle* (`Dir`, an open file descriptor):
//!
//! - a handle below another is opened with `openat2(RESOLVE_BENEATH |
//!   RESOLVE_NO_SYMLINKS)`: no component may be a link, and nothing may
//!   resolve outside the handle it started from. On a kernel without
//!   `openat2` (before 5.6, or filtered by seccomp) the walk is done one
//!   component at a time with `openat(O_NOFOLLOW | O_DIRECTORY)`, which
//!   refuses links just the same;
//! - creating is `mkdirat`/`openat(O_CREAT | O_EXCL | O_NOFOLLOW)` relative
//!   to a handle, and the result is opened again without following links;
//! - owner and mode are set on the handle (`fchown`, `fchmod`), never by
//!   path, so they land on the inode hoist created or checked, whatever
//!   the name points at by then;
//! - removing and moving are `unlinkat`/`renameat` relative to handles.
//!
//! What runs *as* `pm2.user` instead ([`as_user`]: a thread whose
//! file-system identity is that user) can only ever do what the app could
//! do itself; it is used where hoist has no right of its own (creating
//! inside the app's `shared/`, reading the app's plaintext back).
//!
//! The module's shape also serves the moves that come with seeding shared
//! paths and the per-app trash: [`Dir::rename`] between two handles (a
//! move that would cross file systems is refused, naming both paths, never
//! turned into a copy), [`Dir::walk`] without following links, and
//! [`Dir::create_dir`] under a temporary name then renamed into place.

use rustix::fs::{self as rfs, AtFlags, Mode, OFlags, RenameFlags, ResolveFlags};
use rustix::io::Errno;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};

/// Who should own what hoist hands over: `pm2.user`'s ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
}

impl Owner {
    /// hoist's own (file-system) user and group.
    pub fn me() -> Owner {
        Owner {
            uid: rustix::process::geteuid().as_raw(),
            gid: rustix::process::getegid().as_raw(),
        }
    }
}

/// What an entry is, seen without following it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    /// A fifo, socket or device.
    Other,
}

impl Kind {
    fn of(mode: u32) -> Kind {
        match rfs::FileType::from_raw_mode(mode) {
            rfs::FileType::RegularFile => Kind::File,
            rfs::FileType::Directory => Kind::Dir,
            rfs::FileType::Symlink => Kind::Symlink,
            _ => Kind::Other,
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Kind::File => "a file",
            Kind::Dir => "a folder",
            Kind::Symlink => "a symbolic link",
            Kind::Other => "neither a file nor a folder",
        }
    }
}

/// Owner, mode and identity of an inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub kind: Kind,
    pub uid: u32,
    pub gid: u32,
    /// Permission bits (with setuid/setgid/sticky), no file type.
    pub mode: u32,
    pub dev: u64,
    pub ino: u64,
    pub len: u64,
}

impl Meta {
    fn of(st: &rfs::Stat) -> Meta {
        Meta {
            kind: Kind::of(st.st_mode),
            uid: st.st_uid,
            gid: st.st_gid,
            mode: st.st_mode & 0o7777,
            dev: st.st_dev,
            ino: st.st_ino,
            len: st.st_size as u64,
        }
    }
}

/// A failed operation: what, on which path, and why, in words that say
/// when a link or a foreign file system was the reason.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} {}: {}", path.display(), reason(source))]
pub struct Error {
    pub action: &'static str,
    pub path: PathBuf,
    pub source: std::io::Error,
}

impl Error {
    fn new(action: &'static str, path: PathBuf, source: impl Into<std::io::Error>) -> Error {
        Error {
            action,
            path,
            source: source.into(),
        }
    }

    /// The errno, when there is one.
    pub fn raw_os_error(&self) -> Option<i32> {
        self.source.raw_os_error()
    }

    pub fn kind(&self) -> std::io::ErrorKind {
        self.source.kind()
    }

    /// Whether the reason is that a link (or something not a folder) is on
    /// the way.
    pub fn is_link_on_the_way(&self) -> bool {
        matches!(
            self.raw_os_error(),
            Some(libc::ELOOP) | Some(libc::ENOTDIR) | Some(libc::EXDEV)
        )
    }
}

fn reason(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ELOOP) => {
            "a symbolic link is on the way, and hoist never follows links there".into()
        }
        Some(libc::ENOTDIR) => {
            "it or something on the way is not a folder (a symbolic link is never followed there)"
                .into()
        }
        _ => e.to_string(),
    }
}

impl From<Error> for std::io::Error {
    fn from(e: Error) -> std::io::Error {
        std::io::Error::new(e.source.kind(), e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// A directory, held open. Every path below it is resolved from the
/// handle, never from its name.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

const DIR: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// Whether `openat2` works here: 0 not tried yet, 1 yes, 2 no.
static OPENAT2: AtomicU8 = AtomicU8::new(0);

/// Makes every resolution below use the per-component walk, as on a kernel
/// without `openat2` (tests of the fallback).
pub fn force_component_walk(on: bool) {
    OPENAT2.store(if on { 2 } else { 0 }, Ordering::SeqCst);
}

/// Checks a relative path: components that are names, not `.`/`..`, not
/// empty, not absolute. `""` is the handle itself.
fn components(rel: &str) -> std::io::Result<Vec<&str>> {
    if rel.starts_with('/') {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "an absolute path where a path inside the folder was expected",
        ));
    }
    let parts: Vec<&str> = rel.split('/').filter(|p| !p.is_empty()).collect();
    if parts
        .iter()
        .any(|p| *p == "." || *p == ".." || p.contains('\0'))
    {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "a path with '.' or '..' in it",
        ));
    }
    Ok(parts)
}

/// Opens `rel` below `dir` with `flags`, refusing any link on the way and
/// anything that resolves outside `dir`.
fn open_beneath(dir: &OwnedFd, rel: &str, flags: OFlags, mode: Mode) -> std::io::Result<OwnedFd> {
    let parts = components(rel)?;
    if parts.is_empty() {
        return Ok(rfs::openat(dir, ".", flags | OFlags::CLOEXEC, mode)?);
    }
    let joined = parts.join("/");
    if OPENAT2.load(Ordering::Relaxed) != 2 {
        let resolve =
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
        let mut tries = 0;
        loop {
            match rfs::openat2(
                dir,
                joined.as_str(),
                flags | OFlags::CLOEXEC | OFlags::NOFOLLOW,
                mode,
                resolve,
            ) {
                Ok(fd) => {
                    OPENAT2.store(1, Ordering::Relaxed);
                    return Ok(fd);
                }
                // A rename elsewhere raced the lookup: the kernel asks to try again.
                Err(Errno::AGAIN) if tries < 16 => tries += 1,
                // No openat2 here (an old kernel, or a seccomp filter).
                Err(Errno::NOSYS) | Err(Errno::PERM) if OPENAT2.load(Ordering::Relaxed) == 0 => {
                    OPENAT2.store(2, Ordering::Relaxed);
                    break;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    let mut here: Option<OwnedFd> = None;
    for part in &parts[..parts.len() - 1] {
        let from = here.as_ref().unwrap_or(dir);
        here = Some(rfs::openat(from, *part, DIR, Mode::empty())?);
    }
    let from = here.as_ref().unwrap_or(dir);
    let last = parts[parts.len() - 1];
    Ok(rfs::openat(
        from,
        last,
        flags | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        mode,
    )?)
}

/// Splits `rel` into its folder and last name.
fn split_last(rel: &str) -> std::io::Result<(String, String)> {
    let parts = components(rel)?;
    match parts.split_last() {
        Some((last, dirs)) => Ok((dirs.join("/"), last.to_string())),
        None => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "an empty path",
        )),
    }
}

fn one_name(name: &str) -> std::io::Result<&str> {
    match components(name)?.as_slice() {
        [one] if *one == name => Ok(name),
        _ => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "a path where one name was expected",
        )),
    }
}

impl Dir {
    /// Opens a directory whose way there hoist trusts: the host config's
    /// `root` and `state_dir` (links in them are the operator's), or a
    /// folder hoist made and only hoist can change. Everything below is
    /// then opened from the handle.
    pub fn open(path: &Path) -> Result<Dir> {
        let fd = rfs::open(path, DIR.difference(OFlags::NOFOLLOW), Mode::empty())
            .map_err(|e| Error::new("open", path.to_path_buf(), e))?;
        Ok(Dir {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// [`Dir::open`], creating the directory (mode `mode`, before the
    /// umask) when it is missing and its parent exists.
    pub fn open_or_create(path: &Path, mode: u32) -> Result<Dir> {
        match rfs::mkdir(path, Mode::from_raw_mode(mode)) {
            Ok(()) | Err(Errno::EXIST) => Dir::open(path),
            Err(e) => Err(Error::new("create", path.to_path_buf(), e)),
        }
    }

    /// The path this handle was opened as (for messages only).
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn below(&self, rel: &str) -> PathBuf {
        if rel.is_empty() {
            self.path.clone()
        } else {
            self.path.join(rel)
        }
    }

    /// The directory at `rel` below this one; no link on the way.
    pub fn open_dir(&self, rel: &str) -> Result<Dir> {
        let fd = open_beneath(&self.fd, rel, DIR, Mode::empty())
            .map_err(|e| Error::new("open", self.below(rel), e))?;
        Ok(Dir {
            fd,
            path: self.below(rel),
        })
    }

    /// Another handle on this directory.
    pub fn try_clone(&self) -> Result<Dir> {
        let fd = self
            .fd
            .try_clone()
            .map_err(|e| Error::new("open", self.path.clone(), e))?;
        Ok(Dir {
            fd,
            path: self.path.clone(),
        })
    }

    /// What is at `rel` (not followed), or None when nothing is there. A
    /// link on the way to it is an error, not "nothing".
    pub fn kind_of(&self, rel: &str) -> Result<Option<Kind>> {
        Ok(self.meta_of(rel)?.map(|m| m.kind))
    }

    /// Owner, mode and kind of `rel` (not followed); None when missing.
    pub fn meta_of(&self, rel: &str) -> Result<Option<Meta>> {
        let (dir, name) = split_last(rel).map_err(|e| Error::new("look at", self.below(rel), e))?;
        let parent = match self.open_dir(&dir) {
            Ok(p) => p,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        match rfs::statat(&parent.fd, name.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(Meta::of(&st))),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(Error::new("look at", self.below(rel), e)),
        }
    }

    /// Owner, mode and identity of this directory itself.
    pub fn meta(&self) -> Result<Meta> {
        rfs::fstat(&self.fd)
            .map(|st| Meta::of(&st))
            .map_err(|e| Error::new("look at", self.path.clone(), e))
    }

    /// The entries of this directory (not `.`/`..`), each as it is, sorted.
    pub fn entries(&self) -> Result<Vec<(String, Kind)>> {
        let err = |e: Errno| Error::new("list", self.path.clone(), e);
        let mut dir = rfs::Dir::read_from(&self.fd).map_err(err)?;
        let mut out = Vec::new();
        while let Some(entry) = dir.read() {
            let entry = entry.map_err(err)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == "." || name == ".." {
                continue;
            }
            let kind = match entry.file_type() {
                rfs::FileType::Unknown => {
                    match rfs::statat(&self.fd, entry.file_name(), AtFlags::SYMLINK_NOFOLLOW) {
                        Ok(st) => Kind::of(st.st_mode),
                        Err(Errno::NOENT) => continue,
                        Err(e) => return Err(err(e)),
                    }
                }
                t => Kind::of(t.as_raw_mode()),
            };
            out.push((name, kind));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// Creates the directory `name` here (mode `mode`, before the umask)
    /// and opens it; an existing entry of that name is an error.
    pub fn create_dir(&self, name: &str, mode: u32) -> Result<Dir> {
        let path = self.below(name);
        one_name(name).map_err(|e| Error::new("create", path.clone(), e))?;
        rfs::mkdirat(&self.fd, name, Mode::from_raw_mode(mode))
            .map_err(|e| Error::new("create", path.clone(), e))?;
        self.open_dir(name)
    }

    /// The directory `name` here, created when missing. Returns it, and
    /// whether it was created now. Anything but a real directory at that
    /// name is an error.
    pub fn ensure_dir(&self, name: &str, mode: u32) -> Result<(Dir, bool)> {
        match self.create_dir(name, mode) {
            Ok(d) => Ok((d, true)),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok((self.open_dir(name)?, false)),
            Err(e) => Err(e),
        }
    }

    /// Every directory of `rel` below this one, created as needed (mode
    /// `mode`, before the umask): what `mkdir -p` does, but without ever
    /// following a link or leaving this directory. Returns the last one.
    pub fn make_dirs(&self, rel: &str, mode: u32) -> Result<Dir> {
        let parts = components(rel).map_err(|e| Error::new("create", self.below(rel), e))?;
        let mut here = self.try_clone()?;
        for part in parts {
            here = here.ensure_dir(part, mode)?.0;
        }
        Ok(here)
    }

    /// Hands this directory to `owner` (`fchown` on the handle).
    pub fn chown(&self, owner: Owner) -> Result<()> {
        rfs::fchown(
            &self.fd,
            Some(rfs::Uid::from_raw(owner.uid)),
            Some(rfs::Gid::from_raw(owner.gid)),
        )
        .map_err(|e| Error::new("change the owner of", self.path.clone(), e))
    }

    /// Sets only the group (hoist keeps the directory; `pm2.user` reads it
    /// through the group).
    pub fn chgrp(&self, gid: u32) -> Result<()> {
        rfs::fchown(&self.fd, None, Some(rfs::Gid::from_raw(gid)))
            .map_err(|e| Error::new("change the group of", self.path.clone(), e))
    }

    /// Sets the mode (`fchmod` on the handle): explicit, never left to the
    /// umask.
    pub fn chmod(&self, mode: u32) -> Result<()> {
        rfs::fchmod(&self.fd, Mode::from_raw_mode(mode))
            .map_err(|e| Error::new("set the mode of", self.path.clone(), e))
    }

    /// Creates the file `name` here (never over anything, never through a
    /// link), with exactly `mode` whatever the umask, open for writing.
    pub fn create_file(&self, name: &str, mode: u32) -> Result<std::fs::File> {
        let path = self.below(name);
        one_name(name).map_err(|e| Error::new("create", path.clone(), e))?;
        let fd = rfs::openat(
            &self.fd,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode),
        )
        .map_err(|e| Error::new("create", path.clone(), e))?;
        rfs::fchmod(&fd, Mode::from_raw_mode(mode))
            .map_err(|e| Error::new("set the mode of", path, e))?;
        Ok(std::fs::File::from(fd))
    }

    /// Opens the regular file at `rel` for reading; no link on the way or
    /// at the end, nothing outside this directory, nothing but a file.
    pub fn open_file(&self, rel: &str) -> Result<std::fs::File> {
        let path = self.below(rel);
        let fd = open_beneath(
            &self.fd,
            rel,
            OFlags::RDONLY | OFlags::NONBLOCK,
            Mode::empty(),
        )
        .map_err(|e| Error::new("read", path.clone(), e))?;
        let st = rfs::fstat(&fd).map_err(|e| Error::new("read", path.clone(), e))?;
        if Kind::of(st.st_mode) != Kind::File {
            return Err(Error::new(
                "read",
                path,
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "it is not a regular file"),
            ));
        }
        Ok(std::fs::File::from(fd))
    }

    /// The bytes of the regular file at `rel` ([`Dir::open_file`]).
    pub fn read(&self, rel: &str) -> Result<Vec<u8>> {
        let mut f = self.open_file(rel)?;
        let mut out = Vec::new();
        f.read_to_end(&mut out)
            .map_err(|e| Error::new("read", self.below(rel), e))?;
        Ok(out)
    }

    /// Writes `name` whole: a new file under a temporary name, given
    /// `mode` and (when set) the group `gid`, written, fsynced, renamed
    /// over `name`, and the directory fsynced. Readers see the old or the
    /// new content.
    pub fn write_atomic(
        &self,
        name: &str,
        bytes: &[u8],
        mode: u32,
        gid: Option<u32>,
    ) -> Result<()> {
        let tmp = format!(".{name}.tmp-{:08x}", rand::random::<u32>());
        let result = (|| {
            let mut f = self.create_file(&tmp, mode)?;
            if let Some(g) = gid {
                rfs::fchown(&f, None, Some(rfs::Gid::from_raw(g)))
                    .map_err(|e| Error::new("change the group of", self.below(name), e))?;
            }
            f.write_all(bytes)
                .and_then(|()| f.sync_all())
                .map_err(|e| Error::new("write", self.below(name), e))?;
            self.rename(&tmp, self, name)?;
            self.sync()
        })();
        if result.is_err() {
            let _ = rfs::unlinkat(&self.fd, tmp.as_str(), AtFlags::empty());
        }
        result
    }

    /// Makes the symlink `name` -> `target` here.
    pub fn symlink(&self, target: &Path, name: &str) -> Result<()> {
        let path = self.below(name);
        one_name(name).map_err(|e| Error::new("link", path.clone(), e))?;
        rfs::symlinkat(target, &self.fd, name).map_err(|e| Error::new("link", path, e))
    }

    /// The target of the symlink `name` here.
    pub fn read_link(&self, name: &str) -> Result<PathBuf> {
        let path = self.below(name);
        one_name(name).map_err(|e| Error::new("read", path.clone(), e))?;
        rfs::readlinkat(&self.fd, name, Vec::new())
            .map(|c| {
                use std::os::unix::ffi::OsStringExt;
                PathBuf::from(std::ffi::OsString::from_vec(c.into_bytes()))
            })
            .map_err(|e| Error::new("read", path, e))
    }

    /// Removes the file or link `name` here.
    pub fn remove_file(&self, name: &str) -> Result<()> {
        let path = self.below(name);
        one_name(name).map_err(|e| Error::new("remove", path.clone(), e))?;
        rfs::unlinkat(&self.fd, name, AtFlags::empty()).map_err(|e| Error::new("remove", path, e))
    }

    /// Moves `from` (here) to `to_name` in `to` (this directory or another
    /// on the same file system), replacing what is there. A move across
    /// file systems is refused, naming both paths: nothing is copied.
    pub fn rename(&self, from: &str, to: &Dir, to_name: &str) -> Result<()> {
        self.rename_with(from, to, to_name, RenameFlags::empty())
    }

    /// [`Dir::rename`], but an existing `to_name` is an error.
    pub fn rename_noreplace(&self, from: &str, to: &Dir, to_name: &str) -> Result<()> {
        self.rename_with(from, to, to_name, RenameFlags::NOREPLACE)
    }

    /// Exchanges `a` (here) and `b` (in `other`) atomically.
    pub fn exchange(&self, a: &str, other: &Dir, b: &str) -> Result<()> {
        self.rename_with(a, other, b, RenameFlags::EXCHANGE)
    }

    fn rename_with(&self, from: &str, to: &Dir, to_name: &str, flags: RenameFlags) -> Result<()> {
        let path = self.below(from);
        one_name(from)
            .and_then(|_| one_name(to_name))
            .map_err(|e| Error::new("move", path.clone(), e))?;
        match rfs::renameat_with(&self.fd, from, &to.fd, to_name, flags) {
            Ok(()) => Ok(()),
            Err(Errno::XDEV) => Err(Error::new(
                "move",
                path,
                std::io::Error::other(format!(
                    "{} is on another file system, and hoist moves, never copies",
                    to.below(to_name).display()
                )),
            )),
            Err(e) => Err(Error::new("move", path, e)),
        }
    }

    /// Takes an exclusive lock on this directory (`flock`), held while the
    /// handle is open; an error when another handle holds it.
    pub fn try_lock(&self) -> std::io::Result<()> {
        rfs::flock(&self.fd, rfs::FlockOperation::NonBlockingLockExclusive)?;
        Ok(())
    }

    /// fsyncs this directory (its entries' names).
    pub fn sync(&self) -> Result<()> {
        rfs::fsync(&self.fd).map_err(|e| Error::new("sync", self.path.clone(), e))
    }

    /// Removes `name` here and, for a directory, everything below it,
    /// without following a link anywhere. This directory must be one only
    /// hoist can change (an app's own folder, `secrets/`, a trash folder). A directory that belongs to
    /// another user (a secrets generation of `pm2.user`, one left half
    /// handed over) is taken back first (`fchown` through a handle, needs
    /// CAP_CHOWN when hoist is not that user), so hoist can list it: its
    /// owner loses the right to change it before hoist looks inside.
    pub fn remove_tree(&self, name: &str) -> Result<()> {
        let path = self.below(name);
        one_name(name).map_err(|e| Error::new("remove", path.clone(), e))?;
        let st = match rfs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => return Ok(()),
            Err(e) => return Err(Error::new("remove", path, e)),
        };
        if Kind::of(st.st_mode) != Kind::Dir {
            return match rfs::unlinkat(&self.fd, name, AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => Ok(()),
                Err(e) => Err(Error::new("remove", path, e)),
            };
        }
        let child = self.take_back(name)?;
        for (entry, _) in child.entries()? {
            child.remove_tree(&entry)?;
        }
        drop(child);
        match rfs::unlinkat(&self.fd, name, AtFlags::REMOVEDIR) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(Error::new("remove", path, e)),
        }
    }

    /// Opens the directory `name` here so hoist can list and change it:
    /// as it is when hoist may already, else after taking it back (owner
    /// hoist, mode 0700). The ownership change goes through an `O_PATH`
    /// handle (no permission needed to open it), and the handle that is
    /// returned is checked to be that same inode.
    fn take_back(&self, name: &str) -> Result<Dir> {
        let path = self.below(name);
        let me = Owner::me();
        let pinned = rfs::openat(
            &self.fd,
            name,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::new("open", path.clone(), e))?;
        let st = rfs::fstat(&pinned).map_err(|e| Error::new("open", path.clone(), e))?;
        if st.st_uid != me.uid {
            rfs::chownat(
                &pinned,
                "",
                Some(rfs::Uid::from_raw(me.uid)),
                Some(rfs::Gid::from_raw(me.gid)),
                AtFlags::EMPTY_PATH,
            )
            .map_err(|e| Error::new("take back", path.clone(), e))?;
        }
        if st.st_uid != me.uid || st.st_mode & 0o700 != 0o700 {
            // Owner now, so the mode may be changed. By name, relative to
            // this directory: only hoist can change its entries (see
            // `remove_tree`), and the handle opened below is checked to be
            // the inode that was taken back.
            rfs::chmodat(&self.fd, name, Mode::from_raw_mode(0o700), AtFlags::empty())
                .map_err(|e| Error::new("take back", path.clone(), e))?;
        }
        let dir = self.open_dir(name)?;
        let now = rfs::fstat(&dir.fd).map_err(|e| Error::new("open", path.clone(), e))?;
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) {
            return Err(Error::new(
                "remove",
                path,
                std::io::Error::other("it was replaced while hoist removed it"),
            ));
        }
        if now.st_mode & 0o700 != 0o700 {
            dir.chmod(0o700)?;
        }
        Ok(dir)
    }

    /// Hands everything below this directory, then the directory itself,
    /// to `owner`, through handles and without following links (a link is
    /// re-owned itself). Bottom up, so `owner` can enter nothing before
    /// everything in it is theirs. For trees hoist made and `owner` could
    /// not yet reach.
    pub fn chown_tree(&self, owner: Owner) -> Result<()> {
        for (name, kind) in self.entries()? {
            match kind {
                Kind::Dir => self.open_dir(&name)?.chown_tree(owner)?,
                _ => rfs::chownat(
                    &self.fd,
                    name.as_str(),
                    Some(rfs::Uid::from_raw(owner.uid)),
                    Some(rfs::Gid::from_raw(owner.gid)),
                    AtFlags::SYMLINK_NOFOLLOW,
                )
                .map_err(|e| Error::new("change the owner of", self.below(&name), e))?,
            }
        }
        self.chown(owner)
    }

    /// fsyncs every regular file and directory below this one, and this
    /// one, without following links.
    pub fn sync_tree(&self) -> Result<()> {
        for (name, kind) in self.entries()? {
            match kind {
                Kind::Dir => self.open_dir(&name)?.sync_tree()?,
                Kind::File => {
                    let f = self.open_file(&name)?;
                    f.sync_all()
                        .map_err(|e| Error::new("sync", self.below(&name), e))?;
                }
                _ => {}
            }
        }
        self.sync()
    }

    /// Calls `f` with the path (relative to this directory) and kind of
    /// every entry below it, parents before children, without following
    /// links: a link is reported as a link and not entered.
    pub fn walk(&self, f: &mut dyn FnMut(&str, Kind) -> Result<()>) -> Result<()> {
        self.walk_from("", f)
    }

    fn walk_from(&self, prefix: &str, f: &mut dyn FnMut(&str, Kind) -> Result<()>) -> Result<()> {
        for (name, kind) in self.entries()? {
            let rel = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}/{name}")
            };
            f(&rel, kind)?;
            if kind == Kind::Dir {
                self.open_dir(&name)?.walk_from(&rel, f)?;
            }
        }
        Ok(())
    }
}

/// Runs `f` with the file-system identity of `owner`, on a thread of its
/// own so no other thread of hoist is affected; directly when there is no
/// owner or hoist already is that user. What `f` does is checked by the
/// kernel as if `owner` did it: creating inside the app's `shared/`, or
/// reading the app's plaintext back, then needs no right of hoist's own
/// (only CAP_SETUID/CAP_SETGID to switch).
pub fn as_user<T: Send>(owner: Option<Owner>, f: impl FnOnce() -> T + Send) -> std::io::Result<T> {
    use nix::unistd::{Gid, Uid, geteuid, setfsgid, setfsuid};
    let Some(o) = owner else { return Ok(f()) };
    if geteuid().as_raw() == o.uid {
        return Ok(f());
    }
    std::thread::scope(|s| {
        let worker = s.spawn(move || {
            // The calls return the previous id whatever happens; asking
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

/// Whether `owner` may read, write and enter the directory `path` (checked
/// as that user, with its file-system identity); missing is `NotFound`.
pub fn user_can_use_dir(owner: Option<Owner>, path: &Path) -> std::io::Result<()> {
    as_user(owner, || {
        let st = rfs::stat(path)?;
        if Kind::of(st.st_mode) != Kind::Dir {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "it is not a folder",
            ));
        }
        rfs::accessat(
            rfs::CWD,
            path,
            rfs::Access::READ_OK | rfs::Access::WRITE_OK | rfs::Access::EXEC_OK,
            AtFlags::EACCESS,
        )?;
        Ok(())
    })?
}

#[cfg(test)]
mod tests;
