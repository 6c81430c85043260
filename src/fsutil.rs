//! Durable file-system steps the invariants rest on: atomic replacement of a
//! file, atomic replacement of a symlink, and fsync of directories.
//!
//! rename(2) is atomic for readers, but only durable once the directory that
//! holds the name is fsynced too; every helper here does both.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::symlink;
use std::path::Path;

/// fsyncs a directory so that renames and creations inside it survive a
/// power loss.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn temp_name(path: &Path, tag: &str) -> std::path::PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    parent_of(path).join(format!(
        ".{name}.{tag}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    ))
}

/// Writes `bytes` to `path` through a temporary file and a rename, with
/// fsyncs of the file and the directory: readers see the old or the new
/// content, never a mix, and a crash loses at most the new content.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = temp_name(path, "tmp");
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        sync_dir(parent_of(path))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Points the symlink `link` at `target` atomically: a new symlink under a
/// temporary name, renamed over `link`, then an fsync of the directory. A
/// reader resolving `link` at any moment sees the old or the new target.
pub fn swap_symlink(link: &Path, target: &Path) -> std::io::Result<()> {
    let tmp = temp_name(link, "swap");
    symlink(target, &tmp)?;
    if let Err(e) = std::fs::rename(&tmp, link) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(parent_of(link))
}

/// fsyncs every file and directory below `root` (and `root` itself), without
/// following symlinks.
pub fn sync_tree(root: &Path) -> std::io::Result<()> {
    let meta = std::fs::symlink_metadata(root)?;
    if meta.is_dir() {
        for entry in std::fs::read_dir(root)? {
            let entry = entry?;
            let ft = entry.file_type()?;
            if ft.is_dir() {
                sync_tree(&entry.path())?;
            } else if ft.is_file() {
                File::open(entry.path())?.sync_all()?;
            }
        }
        sync_dir(root)?;
    } else if meta.is_file() {
        File::open(root)?.sync_all()?;
    }
    Ok(())
}

/// Exchanges two directory entries atomically (`renameat2` with
/// `RENAME_EXCHANGE`), then fsyncs both parents: a reader of either name
/// sees the old or the new entry, never neither. Used to replace a release
/// directory that `current` points at by a re-linked copy, without a
/// moment where the release is missing.
pub fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let ca = CString::new(a.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    let cb = CString::new(b.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: both pointers are valid NUL-terminated strings for the call.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    sync_dir(parent_of(a))?;
    if parent_of(a) != parent_of(b) {
        sync_dir(parent_of(b))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swap_replaces_an_existing_link() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("current");
        swap_symlink(&link, Path::new("releases/a")).unwrap();
        swap_symlink(&link, Path::new("releases/b")).unwrap();
        assert_eq!(std::fs::read_link(&link).unwrap(), Path::new("releases/b"));
        let entries: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(entries.len(), 1, "no temporary link is left behind");
    }

    #[test]
    fn readers_never_see_current_missing_during_swaps() {
        // A reader resolving the link in a tight loop while it is swapped
        // back and forth must always find one of the two targets. A
        // remove-then-create swap fails this within a few iterations.
        let dir = tempfile::tempdir().unwrap();
        for r in ["a", "b"] {
            std::fs::create_dir_all(dir.path().join("releases").join(r)).unwrap();
            std::fs::write(dir.path().join("releases").join(r).join("VERSION"), r).unwrap();
        }
        let link = dir.path().join("current");
        swap_symlink(&link, Path::new("releases/a")).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let link = link.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut reads = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let v = std::fs::read_to_string(link.join("VERSION"))
                        .expect("current always resolves");
                    assert!(v == "a" || v == "b", "{v}");
                    reads += 1;
                }
                reads
            })
        };
        for i in 0..500 {
            let t = if i % 2 == 0 {
                "releases/b"
            } else {
                "releases/a"
            };
            swap_symlink(&link, Path::new(t)).unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let reads = reader.join().expect("the reader never failed");
        assert!(reads > 0);
    }

    #[test]
    fn exchange_swaps_two_directories() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("sub/b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(a.join("f"), "A").unwrap();
        std::fs::write(b.join("f"), "B").unwrap();
        exchange(&a, &b).unwrap();
        assert_eq!(std::fs::read_to_string(a.join("f")).unwrap(), "B");
        assert_eq!(std::fs::read_to_string(b.join("f")).unwrap(), "A");
        assert!(exchange(&a, &dir.path().join("missing")).is_err());
    }

    #[test]
    fn write_atomic_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
