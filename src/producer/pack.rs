//! `hoist pack`: a build directory to a reproducible `.tar.zst`.
//!
//! The artifact's sha256 is the release's identity, so packing the same tree
//! twice (on another CI runner, after a fresh checkout) must give the same
//! bytes. Everything a file system adds on its own is therefore left out or
//! fixed: entries are sorted by path, mtimes are 0, owners are 0 with no
//! names, and modes are reduced to 0644/0755 for files (by the owner exec
//! bit) and 0755 for directories. Only what `unpack` accepts is written:
//! files, directories and symlinks that stay inside the tree, checked with the
//! same rules `unpack` uses, so a packed artifact always deploys.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tar::{EntryType, Header};

use crate::artifact::ArtifactError;
use crate::artifact::verify::{HashingWriter, Kind, RelPath, Tree};

/// Much smaller artifacts than zstd's default level, still quick enough for CI.
const ZSTD_LEVEL: i32 = 9;

/// A reproducible .tar.zst of `dir`: entries sorted by path, mtime 0, uid/gid
/// 0, no user/group names, mode 0644 or 0755 (by the owner exec bit) for
/// files and 0755 for dirs, symlinks kept as symlinks (refusing ones that
/// point outside `dir`), no other file types. Written to a temp file beside
/// `out`, fsynced and renamed. Returns the sha256 (lowercase hex) of the
/// written file. Same tree => same bytes whatever mtimes, owners or directory
/// order. Hardlinked files are stored as separate copies.
pub fn pack(dir: &Path, out: &Path) -> Result<String, ArtifactError> {
    let tree = scan(dir)?;
    tree.check_links()
        .map_err(|(path, problem)| ArtifactError::Unpackable {
            path: dir.join(path.to_path_buf()),
            reason: problem.reason().to_string(),
        })?;
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    refuse_output_inside(dir, parent, out)?;

    let tmp = tempfile::Builder::new()
        .prefix(".hoist-pack-")
        .tempfile_in(parent)
        .map_err(ArtifactError::io(format!(
            "cannot create a temporary file in {}",
            parent.display()
        )))?;
    let write_error = || format!("cannot write {}", tmp.path().display());
    let hashing = HashingWriter::new(BufWriter::new(tmp.as_file()));
    let encoder = zstd::stream::write::Encoder::new(hashing, ZSTD_LEVEL)
        .and_then(|mut e| e.include_checksum(true).map(|()| e))
        .map_err(ArtifactError::io(write_error()))?;
    let mut builder = tar::Builder::new(encoder);
    for id in tree.sorted() {
        let rel = tree.path(id);
        append(&mut builder, dir, &rel, tree.kind(id))?;
    }
    let hashing = builder
        .into_inner()
        .and_then(|encoder| encoder.finish())
        .map_err(ArtifactError::io(write_error()))?;
    let (mut buffered, hash) = hashing.into_parts();
    buffered.flush().map_err(ArtifactError::io(write_error()))?;
    drop(buffered);
    tmp.as_file()
        .set_permissions(fs::Permissions::from_mode(0o644))
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(ArtifactError::io(write_error()))?;
    tmp.persist(out).map_err(|e| ArtifactError::Io {
        context: format!("cannot rename the packed artifact to {}", out.display()),
        error: e.error,
    })?;
    File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(ArtifactError::io(format!(
            "cannot fsync {}",
            parent.display()
        )))?;
    Ok(hash.finish())
}

/// Reads the tree under `dir` without following symlinks.
fn scan(dir: &Path) -> Result<Tree, ArtifactError> {
    let meta = fs::symlink_metadata(dir)
        .map_err(ArtifactError::io(format!("cannot read {}", dir.display())))?;
    if !meta.is_dir() {
        return Err(ArtifactError::Unpackable {
            path: dir.to_path_buf(),
            reason: "it is not a directory".into(),
        });
    }
    let mut tree = Tree::default();
    let mut pending = vec![(Tree::ROOT, dir.to_path_buf())];
    while let Some((node, path)) = pending.pop() {
        let entries = fs::read_dir(&path)
            .map_err(ArtifactError::io(format!("cannot list {}", path.display())))?;
        for entry in entries {
            let entry =
                entry.map_err(ArtifactError::io(format!("cannot list {}", path.display())))?;
            let full = entry.path();
            let file_type = entry
                .file_type()
                .map_err(ArtifactError::io(format!("cannot read {}", full.display())))?;
            let name = entry.file_name();
            let kind = if file_type.is_dir() {
                Kind::Dir
            } else if file_type.is_file() {
                Kind::File
            } else if file_type.is_symlink() {
                let target = fs::read_link(&full)
                    .map_err(ArtifactError::io(format!("cannot read {}", full.display())))?;
                Kind::Symlink(target.into_os_string().into_vec())
            } else {
                return Err(ArtifactError::Unpackable {
                    path: full,
                    reason: "it is not a file, directory or symlink (a release may hold no \
                             devices, fifos or sockets)"
                        .into(),
                });
            };
            let is_dir = matches!(kind, Kind::Dir);
            let id = tree.insert(node, name.as_bytes(), kind);
            if is_dir {
                pending.push((id, full));
            }
        }
    }
    Ok(tree)
}

/// Packing into the tree being packed would make the artifact contain
/// (a partial copy of) itself.
fn refuse_output_inside(dir: &Path, parent: &Path, out: &Path) -> Result<(), ArtifactError> {
    let (Ok(dir), Ok(parent)) = (dir.canonicalize(), parent.canonicalize()) else {
        // A missing parent is reported when the temp file cannot be created.
        return Ok(());
    };
    if parent.starts_with(&dir) {
        return Err(ArtifactError::Unpackable {
            path: dir,
            reason: format!("the output {} would be inside it", out.display()),
        });
    }
    Ok(())
}

fn append<W: Write>(
    builder: &mut tar::Builder<W>,
    dir: &Path,
    rel: &RelPath,
    kind: &Kind,
) -> Result<(), ArtifactError> {
    let full = dir.join(rel.to_path_buf());
    let name = rel.to_path_buf();
    let mut header = Header::new_gnu();
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    let result = match kind {
        Kind::Dir => {
            header.set_entry_type(EntryType::Directory);
            header.set_mode(0o755);
            header.set_size(0);
            builder.append_data(&mut header, &name, io::empty())
        }
        Kind::Symlink(target) => {
            header.set_entry_type(EntryType::Symlink);
            header.set_mode(0o777);
            header.set_size(0);
            builder.append_link(&mut header, &name, OsStr::from_bytes(target))
        }
        Kind::File => {
            let file = open_regular(&full)?;
            let meta = file
                .metadata()
                .map_err(ArtifactError::io(format!("cannot read {}", full.display())))?;
            let exec = meta.permissions().mode() & 0o100 != 0;
            header.set_entry_type(EntryType::Regular);
            header.set_mode(if exec { 0o755 } else { 0o644 });
            header.set_size(meta.len());
            let data = ExactReader {
                file,
                remaining: meta.len(),
            };
            builder.append_data(&mut header, &name, data)
        }
    };
    result.map_err(ArtifactError::io(format!("cannot pack {}", full.display())))
}

/// Opens a file found by the scan, refusing it if it has since become a
/// symlink or something that is not a regular file (O_NONBLOCK: a fifo put
/// in its place must not hang us).
fn open_regular(full: &Path) -> Result<File, ArtifactError> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(full)
        .map_err(ArtifactError::io(format!("cannot open {}", full.display())))?;
    let is_file = file
        .metadata()
        .map_err(ArtifactError::io(format!("cannot read {}", full.display())))?
        .is_file();
    if !is_file {
        return Err(ArtifactError::Unpackable {
            path: PathBuf::from(full),
            reason: "it stopped being a regular file while being packed".into(),
        });
    }
    Ok(file)
}

/// Reads exactly the size written in the entry's header, failing if the file
/// shrank or grew meanwhile (either would make a corrupt or misleading archive).
struct ExactReader {
    file: File,
    remaining: u64,
}

impl Read for ExactReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            let mut probe = [0u8; 1];
            return match self.file.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(io::Error::other("the file grew while being packed")),
            };
        }
        let want = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.file.read(&mut buf[..want])?;
        if n == 0 && want > 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file shrank while being packed",
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifact::verify::Sha256Stream;
    use crate::artifact::{UnpackLimits, unpack};
    use std::collections::BTreeMap;
    use std::os::unix::fs::{MetadataExt, symlink};
    use std::time::{Duration, SystemTime};

    /// Writes `files` (path, content, executable) and `links` (path, target)
    /// into `dir`, creating parents as needed, in the order given.
    fn build(dir: &Path, files: &[(&str, &str, bool)], links: &[(&str, &str)]) {
        for (path, content, exec) in files {
            let full = dir.join(path);
            fs::create_dir_all(full.parent().unwrap()).unwrap();
            fs::write(&full, content).unwrap();
            let mode = if *exec { 0o700 } else { 0o600 };
            fs::set_permissions(&full, fs::Permissions::from_mode(mode)).unwrap();
        }
        for (path, target) in links {
            let full = dir.join(path);
            fs::create_dir_all(full.parent().unwrap()).unwrap();
            symlink(target, full).unwrap();
        }
    }

    fn sha256_of(path: &Path) -> String {
        let mut s = Sha256Stream::default();
        s.update(&fs::read(path).unwrap());
        s.finish()
    }

    const FILES: &[(&str, &str, bool)] = &[
        ("server.js", "require('./lib/app')", false),
        ("lib/app.js", "module.exports = {}", false),
        ("bin/start", "#!/bin/sh\nexec node server.js\n", true),
        ("node_modules/a/index.js", "1", false),
        ("node_modules/b/index.js", "2", false),
        ("empty", "", false),
    ];
    const LINKS: &[(&str, &str)] = &[
        ("node_modules/.bin/start", "../../bin/start"),
        ("current-lib", "lib"),
    ];

    #[test]
    fn the_same_tree_packs_to_the_same_bytes_whatever_the_metadata() {
        let tmp = tempfile::tempdir().unwrap();
        let (one, two) = (tmp.path().join("one"), tmp.path().join("two"));
        build(&one, FILES, LINKS);
        // Other creation order (so another readdir order), other modes, other mtimes.
        let mut reversed: Vec<_> = FILES.to_vec();
        reversed.reverse();
        build(&two, &reversed, &[LINKS[1], LINKS[0]]);
        fs::set_permissions(two.join("server.js"), fs::Permissions::from_mode(0o664)).unwrap();
        fs::set_permissions(two.join("bin/start"), fs::Permissions::from_mode(0o775)).unwrap();
        fs::set_permissions(two.join("lib"), fs::Permissions::from_mode(0o700)).unwrap();
        let past = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        File::options()
            .write(true)
            .open(two.join("lib/app.js"))
            .unwrap()
            .set_modified(past)
            .unwrap();
        // Other owners, where we are allowed to change them.
        let _ = std::os::unix::fs::lchown(two.join("empty"), Some(1234), Some(1234));

        let (a, b) = (tmp.path().join("a.tar.zst"), tmp.path().join("b.tar.zst"));
        let sha_a = pack(&one, &a).unwrap();
        let sha_b = pack(&two, &b).unwrap();
        assert_eq!(sha_a, sha_b);
        assert_eq!(fs::read(&a).unwrap(), fs::read(&b).unwrap());
        assert_eq!(sha_a, sha256_of(&a));
        // And again, in place: same answer.
        assert_eq!(pack(&one, &a).unwrap(), sha_a);
    }

    #[test]
    fn different_content_packs_differently() {
        let tmp = tempfile::tempdir().unwrap();
        let (one, two) = (tmp.path().join("one"), tmp.path().join("two"));
        build(&one, FILES, LINKS);
        build(&two, FILES, LINKS);
        fs::set_permissions(two.join("server.js"), fs::Permissions::from_mode(0o755)).unwrap();
        let a = pack(&one, &tmp.path().join("a")).unwrap();
        let b = pack(&two, &tmp.path().join("b")).unwrap();
        assert_ne!(a, b, "the exec bit is content");
    }

    /// Path -> what unpacking should give back for it.
    fn describe(dir: &Path) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        let mut pending = vec![dir.to_path_buf()];
        while let Some(d) = pending.pop() {
            for entry in fs::read_dir(&d).unwrap() {
                let path = entry.unwrap().path();
                let meta = fs::symlink_metadata(&path).unwrap();
                let rel = path.strip_prefix(dir).unwrap().display().to_string();
                let desc = if meta.is_symlink() {
                    format!("link {}", fs::read_link(&path).unwrap().display())
                } else if meta.is_dir() {
                    pending.push(path);
                    "dir".to_string()
                } else {
                    let exec = meta.mode() & 0o100 != 0;
                    format!("file exec={exec} {:?}", fs::read(&path).unwrap())
                };
                out.insert(rel, desc);
            }
        }
        out
    }

    #[test]
    fn unpacking_a_pack_gives_back_the_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        build(&src, FILES, LINKS);
        let long = format!("{}/{}", "d".repeat(120), "f".repeat(120));
        build(&src, &[(&long, "long", false)], &[("long-link", &long)]);
        fs::create_dir_all(src.join("empty-dir")).unwrap();
        fs::hard_link(src.join("server.js"), src.join("again.js")).unwrap();

        let artifact = tmp.path().join("app.tar.zst");
        pack(&src, &artifact).unwrap();
        let dest = tmp.path().join("dest");
        let stats = unpack(&artifact, &dest, &UnpackLimits::default()).unwrap();
        assert_eq!(stats.files, FILES.len() as u64 + 2);
        assert_eq!(describe(&src), describe(&dest));
        let mode = |p: &str| fs::symlink_metadata(dest.join(p)).unwrap().mode() & 0o777;
        assert_eq!(mode("bin/start"), 0o755);
        assert_eq!(mode("server.js"), 0o644);
        assert_eq!(mode("lib"), 0o755);
    }

    #[test]
    fn an_empty_directory_packs_and_unpacks() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        fs::create_dir(&src).unwrap();
        let artifact = tmp.path().join("a.tar.zst");
        pack(&src, &artifact).unwrap();
        let stats = unpack(
            &artifact,
            &tmp.path().join("dest"),
            &UnpackLimits::default(),
        )
        .unwrap();
        assert_eq!((stats.files, stats.dirs), (0, 0));
    }

    #[test]
    fn gnu_tar_extracts_what_pack_writes() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        build(&src, FILES, LINKS);
        let long = format!("{}/{}", "d".repeat(120), "f".repeat(120));
        build(&src, &[(&long, "long", true)], &[]);
        let artifact = tmp.path().join("app.tar.zst");
        pack(&src, &artifact).unwrap();
        let dest = tmp.path().join("dest");
        fs::create_dir(&dest).unwrap();
        let status = std::process::Command::new("tar")
            .args(["--zstd", "-xf"])
            .arg(&artifact)
            .arg("-C")
            .arg(&dest)
            .status();
        let status = status.expect("this test compares with GNU tar: install it (CI has it)");
        assert!(status.success());
        assert_eq!(describe(&src), describe(&dest));
    }

    /// Refusals leave neither the output nor a temporary file behind.
    fn assert_refused(src: &Path, out_dir: &Path, reason: &str) {
        let out = out_dir.join("out.tar.zst");
        let err = pack(src, &out).unwrap_err();
        assert!(
            matches!(&err, ArtifactError::Unpackable { reason: r, .. } if r.contains(reason)),
            "{err}"
        );
        assert!(!out.exists());
        let leftovers: Vec<_> = fs::read_dir(out_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().starts_with(".hoist-pack-"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn links_out_of_the_tree_and_special_files_are_refused() {
        for (link, target) in [
            ("abs", "/etc/passwd"),
            ("up", ".."),
            ("a/out", "../../elsewhere"),
        ] {
            let tmp = tempfile::tempdir().unwrap();
            let src = tmp.path().join("src");
            build(&src, FILES, &[(link, target)]);
            assert_refused(&src, tmp.path(), "symlink");
        }
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        build(&src, FILES, &[]);
        nix::unistd::mkfifo(&src.join("pipe"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert_refused(&src, tmp.path(), "fifo");
    }

    #[test]
    fn the_output_may_not_be_inside_the_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        build(&src, FILES, &[]);
        assert_refused(&src, &src, "inside");
        assert_refused(&src.join("server.js"), tmp.path(), "not a directory");
    }
}
