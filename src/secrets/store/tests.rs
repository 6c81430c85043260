use super::*;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

fn sp(s: &str) -> SharedPath {
    SharedPath::new(s).unwrap()
}

fn files(list: &[(&str, &str)]) -> Vec<(SharedPath, Plaintext)> {
    list.iter()
        .map(|(to, text)| (sp(to), Plaintext::new(text.as_bytes().to_vec())))
        .collect()
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn stage_writes_private_files_and_nothing_else() {
    let root = tempfile::tempdir().unwrap();
    let app = root.path().join("web");
    let store = SecretStore::new(&app, None);
    let f = files(&[(".env", "A=1\n"), ("config/keys/api.key", "k")]);
    let g = store.stage(&f).unwrap();
    assert!(g.as_str().starts_with("g1-"), "{g}");
    assert_eq!(entries(store.dir()), [g.as_str()]);
    let gd = store.path_of(&g);
    assert_eq!(std::fs::read(gd.join(".env")).unwrap(), b"A=1\n");
    assert_eq!(std::fs::read(gd.join("config/keys/api.key")).unwrap(), b"k");
    assert_eq!(mode(store.dir()), 0o700);
    assert_eq!(mode(&gd), 0o700);
    assert_eq!(mode(&gd.join("config")), 0o700);
    assert_eq!(mode(&gd.join("config/keys")), 0o700);
    assert_eq!(mode(&gd.join(".env")), 0o600);
    assert_eq!(mode(&gd.join("config/keys/api.key")), 0o600);
    // Nothing outside secrets/.
    assert_eq!(entries(&app), ["secrets"]);
    assert_eq!(entries(root.path()), ["web"]);

    let g2 = store.stage(&f).unwrap();
    assert!(g2.number() > g.number());
    assert_eq!(store.generations().unwrap(), [g.clone(), g2.clone()]);
}

#[test]
fn same_as_compares_the_bytes_and_the_set_of_files() {
    let root = tempfile::tempdir().unwrap();
    let store = SecretStore::new(&root.path().join("web"), None);
    let f = files(&[(".env", "A=1\n"), ("conf/k", "key")]);
    let g = store.stage(&f).unwrap();
    assert!(store.same_as(&g, &f).unwrap());
    assert!(
        store
            .same_as(&g, &files(&[("conf/k", "key"), (".env", "A=1\n")]))
            .unwrap()
    );
    for other in [
        files(&[(".env", "A=2\n"), ("conf/k", "key")]),
        files(&[(".env", "A=1\n"), ("conf/k", "kex")]),
        files(&[(".env", "A=1\n")]),
        files(&[(".env", "A=1\n"), ("conf/k", "key"), ("x", "")]),
        files(&[(".env", "A=1\n"), ("conf/j", "key")]),
        files(&[(".env", "A=1\n\n"), ("conf/k", "key")]),
    ] {
        assert!(!store.same_as(&g, &other).unwrap(), "{other:?}");
    }
    // A file replaced by a symlink to the same content is not the same.
    let gd = store.path_of(&g);
    std::fs::write(root.path().join("k"), "key").unwrap();
    std::fs::remove_file(gd.join("conf/k")).unwrap();
    std::os::unix::fs::symlink(root.path().join("k"), gd.join("conf/k")).unwrap();
    assert!(!store.same_as(&g, &f).unwrap());
}

#[test]
fn live_activate_deactivate() {
    let root = tempfile::tempdir().unwrap();
    let store = SecretStore::new(&root.path().join("web"), None);
    assert_eq!(store.live().unwrap(), None);
    let g1 = store.stage(&files(&[(".env", "1")])).unwrap();
    let g2 = store.stage(&files(&[(".env", "2")])).unwrap();
    store.activate(&g1).unwrap();
    assert_eq!(store.live().unwrap(), Some(g1.clone()));
    let link = store.dir().join(LIVE);
    assert_eq!(std::fs::read_link(&link).unwrap(), Path::new(g1.as_str()));
    assert_eq!(std::fs::read(link.join(".env")).unwrap(), b"1");
    store.activate(&g2).unwrap();
    assert_eq!(std::fs::read(link.join(".env")).unwrap(), b"2");
    let missing = Generation::parse("g9-00000000").unwrap();
    assert!(store.activate(&missing).is_err());
    assert_eq!(store.live().unwrap(), Some(g2));
    store.deactivate().unwrap();
    assert_eq!(store.live().unwrap(), None);
    store.deactivate().unwrap();
    // A live link that names something else is an error, not a generation.
    std::os::unix::fs::symlink("../../etc", &link).unwrap();
    assert!(store.live().is_err());
}

#[test]
fn prune_keeps_what_is_asked_and_the_live_one() {
    let root = tempfile::tempdir().unwrap();
    let store = SecretStore::new(&root.path().join("web"), None);
    let gs: Vec<Generation> = (0..4)
        .map(|i| store.stage(&files(&[(".env", &i.to_string())])).unwrap())
        .collect();
    store.activate(&gs[1]).unwrap();
    let removed = store.prune(std::slice::from_ref(&gs[3])).unwrap();
    assert_eq!(removed, [gs[0].clone(), gs[2].clone()]);
    assert_eq!(store.generations().unwrap(), [gs[1].clone(), gs[3].clone()]);
    let mut want = vec![gs[1].to_string(), gs[3].to_string(), LIVE.to_string()];
    want.sort();
    assert_eq!(entries(store.dir()), want);
    // A new generation never reuses a name.
    let g = store.stage(&files(&[(".env", "x")])).unwrap();
    assert!(!gs.contains(&g));
    assert!(g.number() > gs[3].number());
}

#[test]
fn leftovers_are_removed() {
    let root = tempfile::tempdir().unwrap();
    let store = SecretStore::new(&root.path().join("web"), None);
    let g = store.stage(&files(&[(".env", "1")])).unwrap();
    store.activate(&g).unwrap();
    let d = store.dir();
    std::fs::create_dir_all(d.join(".staging-0123/conf")).unwrap();
    std::fs::write(d.join(".staging-0123/conf/x"), "half").unwrap();
    std::fs::create_dir(d.join(".trash-77")).unwrap();
    std::os::unix::fs::symlink("g1-00000000", d.join(".live.swap-12-ab")).unwrap();
    store.remove_leftovers().unwrap();
    let mut want = vec![g.to_string(), LIVE.to_string()];
    want.sort();
    assert_eq!(entries(d), want);
    // No store on disk yet: nothing to do.
    SecretStore::new(&root.path().join("api"), None)
        .remove_leftovers()
        .unwrap();
}

#[test]
fn bad_paths_and_a_non_directory_are_refused_before_writing() {
    let root = tempfile::tempdir().unwrap();
    let app = root.path().join("web");
    let store = SecretStore::new(&app, None);
    for bad in [
        files(&[(".env", "1"), (".env", "2")]),
        files(&[("conf/", "1")]),
        files(&[("conf", "1"), ("conf/x", "2")]),
    ] {
        assert!(store.stage(&bad).is_err(), "{bad:?}");
    }
    assert!(!app.exists());
    std::fs::create_dir_all(&app).unwrap();
    std::fs::write(app.join("secrets"), "not a dir").unwrap();
    let e = store.stage(&files(&[(".env", "1")])).unwrap_err();
    assert!(e.to_string().contains("is not a directory"), "{e}");
    std::fs::remove_file(app.join("secrets")).unwrap();
    std::os::unix::fs::symlink(root.path(), app.join("secrets")).unwrap();
    assert!(store.stage(&files(&[(".env", "1")])).is_err());
    assert_eq!(entries(root.path()), ["web"]);
}

#[test]
fn generation_names() {
    for ok in ["g1-00000000", "g12-0a1b2c3d"] {
        let g = Generation::parse(ok).unwrap();
        let json = serde_json::to_string(&g).unwrap();
        assert_eq!(serde_json::from_str::<Generation>(&json).unwrap(), g);
    }
    for bad in [
        "",
        "g-00000000",
        "g1-0000000",
        "g1-0000000G",
        "x1-00000000",
        "g1",
        "../g1-00000000",
        "g1-00000000/x",
    ] {
        assert!(Generation::parse(bad).is_err(), "{bad}");
        assert!(serde_json::from_str::<Generation>(&format!("{bad:?}")).is_err());
    }
    assert_eq!(Generation::parse("g12-0a1b2c3d").unwrap().number(), 12);
}

#[test]
fn release_links_count_the_levels_up() {
    let root = tempfile::tempdir().unwrap();
    let app = root.path().join("web");
    let rel = app.join("releases/v1");
    std::fs::create_dir_all(rel.join("config")).unwrap();
    std::fs::write(rel.join(".env"), "from the artifact").unwrap();
    std::fs::create_dir_all(rel.join("keys/api.key")).unwrap();
    link_into_release(&app, &rel, &sp(".env")).unwrap();
    link_into_release(&app, &rel, &sp("config/.env.local")).unwrap();
    link_into_release(&app, &rel, &sp("keys/api.key")).unwrap();
    link_into_release(&app, &rel, &sp("a/b/c")).unwrap();
    assert_eq!(
        std::fs::read_link(rel.join(".env")).unwrap(),
        Path::new("../../secrets/live/.env")
    );
    assert_eq!(
        std::fs::read_link(rel.join("config/.env.local")).unwrap(),
        Path::new("../../../secrets/live/config/.env.local")
    );
    assert_eq!(
        std::fs::read_link(rel.join("a/b/c")).unwrap(),
        Path::new("../../../../secrets/live/a/b/c")
    );
    // They resolve to the live generation, through `current` too.
    let store = SecretStore::new(&app, None);
    let g = store
        .stage(&files(&[
            (".env", "E"),
            ("config/.env.local", "L"),
            ("keys/api.key", "K"),
            ("a/b/c", "C"),
        ]))
        .unwrap();
    store.activate(&g).unwrap();
    std::os::unix::fs::symlink("releases/v1", app.join("current")).unwrap();
    for (p, want) in [
        (".env", "E"),
        ("config/.env.local", "L"),
        ("keys/api.key", "K"),
        ("a/b/c", "C"),
    ] {
        assert_eq!(std::fs::read_to_string(rel.join(p)).unwrap(), want, "{p}");
        assert_eq!(
            std::fs::read_to_string(app.join("current").join(p)).unwrap(),
            want,
            "{p}"
        );
    }
    // Idempotent.
    link_into_release(&app, &rel, &sp(".env")).unwrap();
    assert_eq!(std::fs::read_to_string(rel.join(".env")).unwrap(), "E");
}

#[test]
fn release_links_refuse_to_go_through_links() {
    let root = tempfile::tempdir().unwrap();
    let app = root.path().join("web");
    let rel = app.join("releases/v1");
    std::fs::create_dir_all(rel.join("real")).unwrap();
    std::os::unix::fs::symlink("real", rel.join("conf")).unwrap();
    std::fs::write(rel.join("file"), "x").unwrap();
    let e = link_into_release(&app, &rel, &sp("conf/.env")).unwrap_err();
    assert!(e.to_string().contains("is not a directory"), "{e}");
    assert!(link_into_release(&app, &rel, &sp("file/.env")).is_err());
    assert!(!rel.join("real/.env").exists());
    let elsewhere = root.path().join("other/releases/v1");
    std::fs::create_dir_all(&elsewhere).unwrap();
    assert!(link_into_release(&app, &elsewhere, &sp(".env")).is_err());
    assert!(link_into_release(&app, &rel, &sp("dir/")).is_err());
}

/// As root: the plaintext belongs to another user (here `nobody`, whatever
/// its uid), other users cannot read it, and hoist reads and removes it
/// with the file-system identity switch rather than its own rights.
#[test]
fn an_owner_gets_the_files_and_only_the_owner_reads_them() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test hands files to another user: run it as root (CI does)"
    );
    let owner = Owner::of_user("nobody").unwrap();
    let root = tempfile::tempdir().unwrap();
    let app = root.path().join("web");
    let store = SecretStore::new(&app, Some(owner));
    let f = files(&[(".env", "A=1\n"), ("conf/k", "key")]);
    let g = store.stage(&f).unwrap();
    let gd = store.path_of(&g);
    for p in [
        gd.clone(),
        gd.join("conf"),
        gd.join(".env"),
        gd.join("conf/k"),
    ] {
        let m = std::fs::symlink_metadata(&p).unwrap();
        assert_eq!(
            (m.uid(), m.gid()),
            (owner.uid, owner.gid),
            "{}",
            p.display()
        );
    }
    assert_eq!(mode(store.dir()), 0o711);
    assert_eq!(std::fs::symlink_metadata(store.dir()).unwrap().uid(), 0);
    assert_eq!(mode(&gd.join(".env")), 0o600);

    // A third user (as hoist without capabilities would be) reads nothing.
    let stranger = owner.uid.wrapping_add(1000);
    let read_as_stranger = {
        let p = gd.join(".env");
        std::thread::spawn(move || {
            nix::unistd::setfsuid(nix::unistd::Uid::from_raw(stranger));
            nix::unistd::setfsgid(nix::unistd::Gid::from_raw(stranger));
            std::fs::read(&p).map_err(|e| e.kind())
        })
        .join()
        .unwrap()
    };
    assert_eq!(read_as_stranger, Err(std::io::ErrorKind::PermissionDenied));

    // hoist as a user of its own (fsuid not root: no DAC override), owning
    // secrets/ as it does on a server, still compares, through the owner's
    // identity.
    std::os::unix::fs::lchown(store.dir(), Some(stranger), None).unwrap();
    let same = std::thread::scope(|s| {
        s.spawn(|| {
            nix::unistd::setfsuid(nix::unistd::Uid::from_raw(stranger));
            assert!(std::fs::read(gd.join(".env")).is_err());
            (
                store.same_as(&g, &f).unwrap(),
                store
                    .same_as(&g, &files(&[(".env", "A=2\n"), ("conf/k", "key")]))
                    .unwrap(),
            )
        })
        .join()
        .unwrap()
    });
    assert_eq!(same, (true, false));
    std::os::unix::fs::lchown(store.dir(), Some(0), None).unwrap();

    // A generation written for another owner (pm2.user changed since) is
    // not the same, whatever its bytes; nor is one that is not on disk.
    let unowned = SecretStore::new(&app, None);
    assert!(!unowned.same_as(&g, &f).unwrap());
    let g0 = unowned.stage(&f).unwrap();
    assert!(unowned.same_as(&g0, &f).unwrap());
    assert!(!store.same_as(&g0, &f).unwrap());
    assert!(
        !store
            .same_as(&Generation::parse("g99-00000000").unwrap(), &f)
            .unwrap()
    );
    store.prune(std::slice::from_ref(&g)).unwrap();

    // Removal takes the tree back first; a half handed-over staging tree goes too.
    let g2 = store.stage(&f).unwrap();
    store.activate(&g2).unwrap();
    let half = store.dir().join(".staging-feed");
    std::fs::create_dir_all(half.join("conf")).unwrap();
    std::fs::write(half.join("conf/k"), "x").unwrap();
    std::os::unix::fs::lchown(half.join("conf"), Some(owner.uid), Some(owner.gid)).unwrap();
    std::fs::set_permissions(half.join("conf"), std::fs::Permissions::from_mode(0o700)).unwrap();
    store.remove_leftovers().unwrap();
    assert_eq!(store.prune(&[]).unwrap(), [g]);
    let mut want = vec![g2.to_string(), LIVE.to_string()];
    want.sort();
    assert_eq!(entries(store.dir()), want);
}
