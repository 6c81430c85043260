use super::*;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

fn tmp() -> (tempfile::TempDir, Dir) {
    let t = tempfile::tempdir().unwrap();
    let d = Dir::open(t.path()).unwrap();
    (t, d)
}

/// A folder outside the one hoist works in, with a file in it, for links
/// planted to point at.
fn outside(t: &tempfile::TempDir) -> PathBuf {
    let o = t.path().join("outside");
    std::fs::create_dir(&o).unwrap();
    std::fs::write(o.join("victim"), "untouched").unwrap();
    std::fs::set_permissions(&o, std::fs::Permissions::from_mode(0o700)).unwrap();
    o
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Both ways of resolving: openat2, then the per-component walk of a
/// kernel without it. Serialised: the switch is process-wide.
fn both_walks(f: impl Fn()) {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    force_component_walk(false);
    f();
    force_component_walk(true);
    f();
    force_component_walk(false);
}

#[test]
fn links_are_refused_on_the_way_and_at_the_end() {
    both_walks(|| {
        let (t, d) = tmp();
        let out = outside(&t);
        std::fs::create_dir_all(t.path().join("shared/real")).unwrap();
        std::os::unix::fs::symlink(&out, t.path().join("shared/link")).unwrap();
        std::os::unix::fs::symlink("real", t.path().join("shared/rel")).unwrap();
        let shared = d.open_dir("shared").unwrap();
        assert!(shared.open_dir("real").is_ok());
        for rel in [
            "link",
            "rel",
            "link/x",
            "rel/x",
            "../outside",
            "/etc",
            "real/../link",
        ] {
            let e = shared.open_dir(rel).unwrap_err();
            assert!(
                e.is_link_on_the_way() || e.kind() == std::io::ErrorKind::InvalidInput,
                "{rel}: {e}"
            );
        }
        let e = shared.open_dir("link").unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
        assert!(shared.read("link/victim").is_err());
        assert!(d.read("outside/victim").is_ok(), "a real path reads");
        // What a link is, it says without following it.
        assert_eq!(shared.kind_of("link").unwrap(), Some(Kind::Symlink));
        assert_eq!(shared.kind_of("nothing").unwrap(), None);
        assert!(shared.kind_of("link/victim").is_err());
    });
}

#[test]
fn make_dirs_never_creates_through_a_planted_link() {
    both_walks(|| {
        let (t, d) = tmp();
        let out = outside(&t);
        let shared = d.create_dir("shared", 0o755).unwrap();
        // Planted once, one level down: data -> outside.
        std::os::unix::fs::symlink(&out, t.path().join("shared/data")).unwrap();
        let e = shared.make_dirs("data/uploads", 0o755).unwrap_err();
        assert!(e.is_link_on_the_way(), "{e}");
        assert_eq!(names(&out), ["victim"]);
        // Dangling at the last component: not created over, not through.
        std::os::unix::fs::symlink(out.join("new"), t.path().join("shared/up")).unwrap();
        assert!(shared.make_dirs("up", 0o755).is_err());
        assert!(!out.join("new").exists());
        // A real nested path is made, and found again.
        let made = shared.make_dirs("a/b/c", 0o755).unwrap();
        assert!(t.path().join("shared/a/b/c").is_dir());
        assert_eq!(made.path(), t.path().join("shared/a/b/c"));
        shared.make_dirs("a/b/c", 0o755).unwrap();
        // A file where a folder should be.
        std::fs::write(t.path().join("shared/f"), "").unwrap();
        assert!(shared.make_dirs("f/x", 0o755).is_err());
    });
}

#[test]
fn owner_and_mode_land_on_the_handle_not_on_what_the_name_points_at() {
    let (t, d) = tmp();
    let out = outside(&t);
    let shared = d.create_dir("shared", 0o755).unwrap();
    // The name is swapped for a link after the handle was opened: fchmod
    // still lands on the directory that was created.
    std::fs::rename(t.path().join("shared"), t.path().join("moved")).unwrap();
    std::os::unix::fs::symlink(&out, t.path().join("shared")).unwrap();
    shared.chmod(0o750).unwrap();
    let me = Owner::me();
    shared.chown(me).unwrap();
    assert_eq!(
        std::fs::metadata(t.path().join("moved")).unwrap().mode() & 0o777,
        0o750
    );
    assert_eq!(std::fs::metadata(&out).unwrap().mode() & 0o777, 0o700);
}

#[test]
fn chown_tree_and_remove_tree_leave_link_targets_alone() {
    let (t, d) = tmp();
    let out = outside(&t);
    let before = std::fs::metadata(out.join("victim")).unwrap();
    let g = d.create_dir("g1", 0o700).unwrap();
    g.make_dirs("conf", 0o700).unwrap();
    std::fs::write(t.path().join("g1/conf/k"), "key").unwrap();
    std::os::unix::fs::symlink(&out, t.path().join("g1/conf/out")).unwrap();
    std::os::unix::fs::symlink(out.join("victim"), t.path().join("g1/v")).unwrap();
    let nobody = Owner {
        uid: 65534,
        gid: 65534,
    };
    g.chown_tree(nobody).unwrap();
    for p in ["g1", "g1/conf", "g1/conf/k", "g1/conf/out", "g1/v"] {
        let m = std::fs::symlink_metadata(t.path().join(p)).unwrap();
        assert_eq!(m.uid(), 65534, "{p}");
    }
    let after = std::fs::metadata(out.join("victim")).unwrap();
    assert_eq!((after.uid(), after.mode()), (before.uid(), before.mode()));
    assert_eq!(std::fs::metadata(&out).unwrap().uid(), before.uid());
    let mut seen = Vec::new();
    g.walk(&mut |rel, kind| {
        seen.push((rel.to_string(), kind));
        Ok(())
    })
    .unwrap();
    assert_eq!(
        seen,
        [
            ("conf".to_string(), Kind::Dir),
            ("conf/k".to_string(), Kind::File),
            ("conf/out".to_string(), Kind::Symlink),
            ("v".to_string(), Kind::Symlink),
        ]
    );
    drop(g);
    d.remove_tree("g1").unwrap();
    assert_eq!(names(t.path()), ["outside"]);
    assert_eq!(names(&out), ["victim"]);
    assert_eq!(
        std::fs::read_to_string(out.join("victim")).unwrap(),
        "untouched"
    );
    // Removing what is not there is done already.
    d.remove_tree("g1").unwrap();
}

#[test]
fn files_get_exactly_their_mode_and_are_replaced_whole() {
    let (t, d) = tmp();
    d.write_atomic("web.json", b"one", 0o640, None).unwrap();
    d.write_atomic("web.json", b"two", 0o640, Some(65534))
        .unwrap();
    let m = std::fs::metadata(t.path().join("web.json")).unwrap();
    assert_eq!((m.mode() & 0o7777, m.gid()), (0o640, 65534));
    assert_eq!(std::fs::read(t.path().join("web.json")).unwrap(), b"two");
    assert_eq!(names(t.path()), ["web.json"]);
    // Never over an existing name, never through a link.
    std::os::unix::fs::symlink("/etc/passwd", t.path().join("l")).unwrap();
    assert!(d.create_file("l", 0o600).is_err());
    assert!(d.create_file("web.json", 0o600).is_err());
    assert!(d.create_file("a/b", 0o600).is_err());
}

#[test]
fn moves_stay_on_one_file_system_and_between_handles() {
    let (t, d) = tmp();
    let a = d.create_dir("a", 0o755).unwrap();
    let b = d.create_dir("b", 0o755).unwrap();
    std::fs::write(t.path().join("a/x"), "x").unwrap();
    std::fs::write(t.path().join("b/y"), "y").unwrap();
    a.rename("x", &b, "x").unwrap();
    assert!(t.path().join("b/x").exists());
    assert!(b.rename_noreplace("x", &b, "y").is_err());
    b.exchange("x", &a, "x").unwrap_err();
    std::fs::write(t.path().join("a/x"), "new").unwrap();
    b.exchange("x", &a, "x").unwrap();
    assert_eq!(
        std::fs::read_to_string(t.path().join("b/x")).unwrap(),
        "new"
    );
    // Another file system: refused, naming where it was going, nothing copied.
    let shm = tempfile::tempdir_in("/dev/shm").expect("/dev/shm is a tmpfs here");
    let other = Dir::open(shm.path()).unwrap();
    assert_ne!(
        other.meta().unwrap().dev,
        d.meta().unwrap().dev,
        "/dev/shm is another file system"
    );
    let e = b.rename("y", &other, "y").unwrap_err().to_string();
    assert!(
        e.contains("another file system") && e.contains(&shm.path().display().to_string()),
        "{e}"
    );
    assert!(t.path().join("b/y").exists());
    assert!(names(shm.path()).is_empty());
}

#[test]
fn only_plain_relative_names_are_taken() {
    let (_t, d) = tmp();
    for bad in ["..", "a/../b", "/abs", "./x"] {
        assert!(d.make_dirs(bad, 0o755).is_err(), "{bad}");
    }
    for bad in ["a/b", "", ".."] {
        assert!(d.create_dir(bad, 0o755).is_err(), "{bad}");
        assert!(d.remove_tree(bad).is_err(), "{bad}");
    }
}
