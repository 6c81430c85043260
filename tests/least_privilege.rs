//! hoist as shipped: run by `tests/common/shipped.rs` with the user,
//! capabilities and umask of `systemd/hoist.service` (read from the file),
//! the apps as a second user (`pm2.user`). Deploys with nested shared
//! folders and sealed secrets, automatic and local rollbacks, crash
//! recovery with leftovers of the apps' user, and what an app that plants
//! links in its `shared/` can get hoist to do (nothing outside `shared/`).
//!
//! These tests run as root (to become those users) and fail otherwise.

mod common;

use common::shipped::{ShippedWorld, snapshot};
use common::{World, http_get};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

const SECRET: &str = "DB_PASSWORD=correct-horse-battery-staple-7f3a";

/// A manifest for `web` without the world's default `shared: [.env]`.
fn manifest(w: &World, release: &str, url: &str, sha: &str, extra: &str) {
    let port = w.app_port;
    let text = format!(
        "release: \"{release}\"\nartifact:\n  url: {url}\n  sha256: {sha}\npm2:\n  - name: web\n    script: server.js\n    env: {{ PORT: \"{port}\" }}\nhealth:\n  http: http://127.0.0.1:{port}/healthz\n  timeout: 15s\n  stable_for: 1s\n{extra}"
    );
    std::fs::write(w.path("work/apps/web.yaml"), text).unwrap();
}

const WITH_SECRETS: &str = "secrets:\n  - from: secrets/{environment}/web.env.age\n    to: .env\n";

fn meta(p: &Path) -> std::fs::Metadata {
    std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Every file below `dir` (not followed) whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let t = e.file_type().unwrap();
            if t.is_dir() {
                stack.push(p);
            } else if t.is_file()
                && std::fs::read(&p)
                    .is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle.as_bytes()))
            {
                out.push(p.display().to_string());
            }
        }
    }
    out
}

#[test]
fn deploys_as_shipped_with_nested_shared_folders_sealed_secrets_and_hooks() {
    let sw = ShippedWorld::new();
    let w = &sw.w;
    let (url, sha) = w.make_release("v1", true, &[]);
    manifest(
        w,
        "v1",
        &url,
        &sha,
        &format!(
            "shared: [data/uploads/, logs/]\n{WITH_SECRETS}hooks:\n  before_activate: [[sh, -c, 'cat \"$HOIST_SECRETS_DIR/.env\"; echo hook-ran']]\n"
        ),
    );
    sw.seal("web", "secrets/test/web.env.age", &format!("{SECRET}\n"));
    sw.commit("web v1");
    sw.load_credentials();
    let out = sw.hoist(&["once"], &[("HOIST_LOG", "trace"), ("RUST_LOG", "trace")]);
    sw.unload_credentials();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{log}");
    // hoist's log, at trace level, while a hook printed the secret.
    assert!(
        log.contains("TRACE") || log.contains("DEBUG"),
        "trace logging was on: {log}"
    );
    assert!(
        !log.contains("correct-horse"),
        "the plaintext reached hoist's log: {log}"
    );

    // The app runs as pm2.user, reads its secret, writes where it keeps
    // its uploads.
    assert_eq!(w.app_says().as_deref(), Some("v1"));
    let get = |p: &str| http_get(w.app_port, p).unwrap();
    assert_eq!(get("/uid").1, sw.apps.uid.to_string());
    assert_eq!(get("/env").1, SECRET);
    let upload = w.path("srv/web/shared/data/uploads/photo.jpg");
    assert_eq!(
        get(&format!("/write?p={}", upload.display())),
        (200, "ok".into())
    );
    assert_eq!(meta(&upload).uid(), sw.apps.uid);
    for d in [
        "shared",
        "shared/data",
        "shared/data/uploads",
        "shared/logs",
    ] {
        let m = meta(&w.path(&format!("srv/web/{d}")));
        assert!(m.is_dir(), "{d}");
        assert_eq!(m.uid(), sw.apps.uid, "{d} belongs to pm2.user");
    }

    // What pm2.user must read is given to it, whatever the umask.
    let eco_dir = meta(&w.path("srv/.ecosystems"));
    assert_eq!((eco_dir.uid(), eco_dir.gid()), (sw.hoist.uid, sw.apps.gid));
    assert_eq!(eco_dir.mode() & 0o777, 0o750);
    let eco = meta(&w.path("srv/.ecosystems/web.json"));
    assert_eq!((eco.uid(), eco.gid()), (sw.hoist.uid, sw.apps.gid));
    assert_eq!(eco.mode() & 0o777, 0o640);
    let live = std::fs::canonicalize(w.path("srv/web/secrets/live/.env")).unwrap();
    let m = meta(&live);
    assert_eq!((m.uid(), m.mode() & 0o777), (sw.apps.uid, 0o600));
    // hoist really ran as its own user; pm2's home was made by pm2.user.
    assert_eq!(meta(&w.path("state/state.json")).uid(), sw.hoist.uid);
    assert_eq!(meta(&sw.pm2_home).uid(), sw.apps.uid);

    // The hook's output: in a file of the app's folder, hoist's alone,
    // named in the history, with its exit code.
    let deploy = w
        .history()
        .into_iter()
        .find(|e| e["event"] == "deploy")
        .expect("a deploy event");
    let output = deploy["output"]
        .as_str()
        .expect("the deploy names the hooks' output");
    assert!(
        output.starts_with(&w.path("srv/web/hooks/").display().to_string()),
        "{output}"
    );
    let text = std::fs::read_to_string(output).unwrap();
    assert!(text.contains(SECRET) && text.contains("hook-ran"), "{text}");
    assert!(text.contains("# exit code: 0"), "{text}");
    let m = meta(Path::new(output));
    assert_eq!((m.uid(), m.mode() & 0o777), (sw.hoist.uid, 0o600));
    assert_eq!(meta(&w.path("srv/web/hooks")).mode() & 0o777, 0o700);
    // Nowhere else: not in the state, the history, the statuses.
    for dir in ["state", "forge"] {
        assert_eq!(
            files_containing(&w.path(dir), "correct-horse"),
            Vec::<String>::new()
        );
    }
    let (state, _) = w.final_status(&w.statuses().last().unwrap().0).unwrap();
    assert_eq!(state, "success");
}

#[test]
fn rolls_back_by_itself_and_on_demand_as_shipped() {
    let sw = ShippedWorld::new();
    let w = &sw.w;
    let (u1, s1) = w.make_release("v1", true, &[]);
    manifest(
        w,
        "v1",
        &u1,
        &s1,
        &format!("shared: [data/uploads/]\n{WITH_SECRETS}"),
    );
    sw.seal("web", "secrets/test/web.env.age", "A=1\n");
    sw.commit("v1");
    sw.once(0);
    assert_eq!(w.app_says().as_deref(), Some("v1"));

    // A release that fails its gate is rolled back, secrets and all.
    let (u2, s2) = w.make_release("v2", true, &["UNHEALTHY"]);
    sw.seal("web", "secrets/test/web.env.age", "A=2\n");
    manifest(
        w,
        "v2",
        &u2,
        &s2,
        &format!("shared: [data/uploads/]\n{WITH_SECRETS}"),
    );
    let c2 = sw.commit("v2 (unhealthy)");
    let text = sw.once(1);
    assert!(text.contains("rolled back to v1"), "{text}");
    assert_eq!(w.app_says().as_deref(), Some("v1"));
    assert_eq!(http_get(w.app_port, "/env").unwrap().1, "A=1");
    assert_eq!(w.final_status(&c2).unwrap().0, "failure");

    let (u3, s3) = w.make_release("v3", true, &[]);
    manifest(
        w,
        "v3",
        &u3,
        &s3,
        &format!("shared: [data/uploads/]\n{WITH_SECRETS}"),
    );
    sw.commit("v3");
    sw.once(0);
    assert_eq!(w.app_says().as_deref(), Some("v3"));
    assert_eq!(http_get(w.app_port, "/env").unwrap().1, "A=2");

    // `hoist rollback` with no daemon and none of its credentials (the
    // service is stopped, so systemd has removed them).
    assert!(!sw.credentials.exists());
    let out = sw.hoist(&["rollback", "web"], &[]);
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("from v3 to v1"), "{said}");
    assert_eq!(w.app_says().as_deref(), Some("v1"));
    assert_eq!(http_get(w.app_port, "/env").unwrap().1, "A=1");
    // `plan` too, and the daemon takes over from there.
    let out = sw.hoist(&["plan"], &[]);
    assert!(out.status.success(), "{out:?}");
    sw.start_daemon(&[]);
    // A few passes later (poll_interval 1s), the daemon still holds it there.
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(w.app_says().as_deref(), Some("v1"), "{}", sw.daemon_log());
    let st = w.status_json();
    assert_ne!(st["apps"]["web"]["pinned"], serde_json::Value::Null, "{st}");
    assert_eq!(sw.stop_daemon(), Some(0));
    // KillMode=process: the apps outlive hoist.
    assert_eq!(w.app_says().as_deref(), Some("v1"));
}

#[test]
fn recovers_from_a_crash_and_removes_leftovers_of_the_apps_user() {
    let sw = ShippedWorld::new();
    let w = &sw.w;
    let (u1, s1) = w.make_release("v1", true, &[]);
    manifest(
        w,
        "v1",
        &u1,
        &s1,
        &format!("shared: [data/uploads/]\n{WITH_SECRETS}"),
    );
    sw.seal("web", "secrets/test/web.env.age", "A=1\n");
    sw.commit("v1");
    sw.once(0);

    // A deploy with new secrets, killed right after it swapped the links.
    sw.seal("web", "secrets/test/web.env.age", "A=2\n");
    let (u2, s2) = w.make_release("v2", true, &[]);
    manifest(
        w,
        "v2",
        &u2,
        &s2,
        &format!("shared: [data/uploads/]\n{WITH_SECRETS}"),
    );
    sw.commit("v2");
    sw.load_credentials();
    let out = sw.hoist(&["once"], &[("HOIST_FAULT_AT", "swap")]);
    sw.unload_credentials();
    assert_eq!(
        out.status.code(),
        None,
        "aborted by the fault point: {out:?}"
    );

    // What else a crash can leave: a generation half handed over to the
    // apps' user (its folders theirs, 0700 and 0000, the plaintext theirs),
    // an old one being removed, a release being unpacked.
    let secrets = w.path("srv/web/secrets");
    let plant = |name: &str| {
        let d = secrets.join(name);
        std::fs::create_dir_all(d.join("conf")).unwrap();
        std::fs::write(d.join(".env"), "LEFTOVER-PLAINTEXT-9c1\n").unwrap();
        std::fs::write(d.join("conf/key"), "LEFTOVER-PLAINTEXT-9c1\n").unwrap();
        for p in [
            d.join(".env"),
            d.join("conf/key"),
            d.join("conf"),
            d.clone(),
        ] {
            std::os::unix::fs::lchown(&p, Some(sw.apps.uid), Some(sw.apps.gid)).unwrap();
        }
        for (p, mode) in [
            (d.join(".env"), 0o600),
            (d.join("conf/key"), 0o600),
            (d.join("conf"), 0o000),
            (d.clone(), 0o700),
        ] {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        }
    };
    plant(".staging-00000000deadbeef");
    plant(".trash-00000000feedface");
    let staging = w.path("srv/web/.staging-v9-0badc0de");
    std::fs::create_dir_all(staging.join("node_modules/x")).unwrap();
    std::os::unix::fs::lchown(&staging, Some(sw.hoist.uid), Some(sw.apps.gid)).unwrap();
    assert_eq!(
        files_containing(&w.path("srv"), "LEFTOVER-PLAINTEXT").len(),
        4
    );

    // The next start finishes the work and leaves nothing of it behind.
    sw.start_daemon(&[]);
    assert!(
        w.wait_for(Duration::from_secs(60), || w.app_says().as_deref()
            == Some("v2")),
        "{}",
        w.daemon_log()
    );
    assert!(
        w.wait_for(Duration::from_secs(10), || files_containing(
            &w.path("srv"),
            "LEFTOVER-PLAINTEXT"
        )
        .is_empty()),
        "plaintext left on disk: {:?}\n{}",
        files_containing(&w.path("srv"), "LEFTOVER-PLAINTEXT"),
        w.daemon_log()
    );
    assert_eq!(http_get(w.app_port, "/env").unwrap().1, "A=2");
    assert_eq!(sw.stop_daemon(), Some(0));
    assert_eq!(w.leftovers("web"), Vec::<String>::new());
    let mut names: Vec<String> = std::fs::read_dir(&secrets)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    names.sort();
    assert_eq!(names, Vec::<String>::new(), "leftovers in secrets/");
    let st = w.state_json();
    assert_eq!(st["apps"]["web"]["switch"], serde_json::Value::Null, "{st}");
}

/// Links the app plants in its `shared/` lead hoist nowhere: a link one
/// level up from a nested shared folder, to a folder outside that hoist
/// could otherwise create into and hand over.
#[test]
fn a_link_planted_in_shared_gets_nothing_outside_created_or_handed_over() {
    let sw = ShippedWorld::new();
    let w = &sw.w;
    let outside = w.path("outside");
    std::fs::create_dir_all(outside.join("dir")).unwrap();
    std::fs::write(outside.join("dir/victim"), "x").unwrap();
    std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(outside.join("dir"), std::fs::Permissions::from_mode(0o700)).unwrap();
    let before = snapshot(&outside);

    let (u1, s1) = w.make_release("v1", true, &[]);
    manifest(w, "v1", &u1, &s1, "shared: [logs/]\n");
    sw.commit("v1");
    sw.once(0);
    // The app, as itself, plants data -> outside/dir in its shared/.
    let link = w.path("srv/web/shared/data");
    let plant = format!(
        "/symlink?t={}&p={}",
        outside.join("dir").display(),
        link.display()
    );
    assert_eq!(http_get(w.app_port, &plant).unwrap(), (200, "ok".into()));
    assert_eq!(meta(&link).uid(), sw.apps.uid);

    // v2 shares data/uploads/: hoist must not create uploads in outside/dir.
    let (u2, s2) = w.make_release("v2", true, &[]);
    manifest(w, "v2", &u2, &s2, "shared: [logs/, data/uploads/]\n");
    let c2 = sw.commit("v2");
    let text = sw.once(1);
    assert!(text.contains("symbolic link"), "{text}");
    let (state, desc) = w.final_status(&c2).unwrap();
    assert_eq!(state, "error", "{desc}");
    assert!(desc.contains("shared/data"), "{desc}");
    assert_eq!(
        snapshot(&outside),
        before,
        "something outside shared/ changed"
    );
    assert_eq!(w.app_says().as_deref(), Some("v1"));
}

/// The same link, with hoist as root (no unit, the apps as `nobody`):
/// with path-based calls this one link, planted once, was enough to get a
/// folder of root's made and handed to the app.
#[test]
fn a_link_planted_once_gets_nothing_from_hoist_as_root_either() {
    let w = root_world_with_apps_user();
    let outside = w.path("outside");
    std::fs::create_dir_all(outside.join("dir")).unwrap();
    std::fs::set_permissions(outside.join("dir"), std::fs::Permissions::from_mode(0o700)).unwrap();
    let before = snapshot(&outside);
    let (u1, s1) = w.make_release("v1", true, &[]);
    manifest(&w, "v1", &u1, &s1, "shared: [logs/]\n");
    w.commit("v1");
    w.once(0);
    let plant = format!(
        "/symlink?t={}&p={}",
        outside.join("dir").display(),
        w.path("srv/web/shared/data").display()
    );
    assert_eq!(http_get(w.app_port, &plant).unwrap(), (200, "ok".into()));
    let (u2, s2) = w.make_release("v2", true, &[]);
    manifest(&w, "v2", &u2, &s2, "shared: [logs/, data/uploads/]\n");
    let c2 = w.commit("v2");
    w.once(1);
    assert_eq!(w.final_status(&c2).unwrap().0, "error");
    assert_eq!(
        snapshot(&outside),
        before,
        "something outside shared/ changed"
    );
    assert_eq!(w.app_says().as_deref(), Some("v1"));
}

/// A local config repository that belongs to another user than hoist's:
/// git refuses it, and hoist says in one line what to change.
#[test]
fn a_config_repository_of_another_user_is_said_in_one_line() {
    let sw = ShippedWorld::new();
    let w = &sw.w;
    let repo = w.path("config.git");
    let status = std::process::Command::new("chown")
        .args(["-R", "root:root"])
        .arg(&repo)
        .status()
        .unwrap();
    assert!(status.success());
    let text = sw.once(1);
    let line = text
        .lines()
        .find(|l| l.starts_with("hoist: "))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.contains(&format!("chown -R {} {}", sw.hoist.name, repo.display())),
        "{line}"
    );
    assert!(line.contains("belongs to root"), "{line}");
}

/// pm2's home that pm2.user cannot use is found at start, not when a
/// deploy fails.
#[test]
fn a_pm2_home_the_apps_user_cannot_use_is_refused_at_start() {
    let sw = ShippedWorld::new();
    let w = &sw.w;
    std::fs::create_dir(&sw.pm2_home).unwrap();
    std::fs::set_permissions(&sw.pm2_home, std::fs::Permissions::from_mode(0o700)).unwrap();
    let (u1, s1) = w.make_release("v1", true, &[]);
    manifest(w, "v1", &u1, &s1, "");
    sw.commit("v1");
    let text = sw.once(2);
    assert!(
        text.contains(&format!(
            "pm2.user {} cannot use pm2's home {}",
            sw.apps.name,
            sw.pm2_home.display()
        )),
        "{text}"
    );
    assert!(text.contains("install -d -o nobody -m 0700"), "{text}");
    assert_eq!(w.app_says(), None);
}

/// A root the apps' user cannot read is found at start too.
#[test]
fn a_root_the_apps_user_cannot_read_is_refused_at_start() {
    let sw = ShippedWorld::new();
    let w = &sw.w;
    std::fs::set_permissions(w.path("srv"), std::fs::Permissions::from_mode(0o700)).unwrap();
    let text = sw.once(2);
    assert!(
        text.contains(&format!(
            "pm2.user nobody cannot read root {}",
            w.path("srv").display()
        )),
        "{text}"
    );
    let group = nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(sw.apps.gid))
        .unwrap()
        .unwrap()
        .name;
    assert!(text.contains(&format!("chgrp {group} ")), "{text}");
}

/// hoist as root (no unit), the apps as `nobody`: the case where a
/// followed link would be a root compromise. An app flips `shared/uploads`
/// between a link to a folder outside, a dangling link and a folder of its
/// own, as fast as it can, during 50 deploys: nothing outside `shared/` is
/// created, chowned or chmodded.
#[test]
fn flipping_a_link_in_shared_during_50_deploys_gets_nothing_outside() {
    let w = root_world_with_apps_user();
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let outside = w.path("outside");
    std::fs::create_dir_all(outside.join("dir")).unwrap();
    std::fs::write(outside.join("dir/victim"), "x").unwrap();
    std::fs::set_permissions(outside.join("dir"), std::fs::Permissions::from_mode(0o700)).unwrap();
    let watched = [outside.clone(), w.path("state")];
    let before: Vec<_> = watched.iter().map(|p| snapshot(p)).collect();

    let (url, sha) = w.make_release("r0", true, &[]);
    let deploy = |i: usize| {
        let port = w.app_port;
        std::fs::write(
            w.path("work/apps/web.yaml"),
            format!("release: \"r{i}\"\nartifact:\n  url: {url}\n  sha256: {sha}\nshared: [uploads/]\nkeep_releases: 2\npm2:\n  - name: web\n    script: server.js\n    env: {{ PORT: \"{port}\" }}\nhealth:\n  timeout: 15s\n  stable_for: 0s\n"),
        )
        .unwrap();
        w.commit(&format!("r{i}"));
        w.hoist(&["once"])
    };
    let first = deploy(0);
    assert!(first.status.success(), "{first:?}");

    // The app's user flips shared/uploads as fast as it can: a link to a
    // folder of root's outside, a dangling link, each swapped in whole by
    // rename(2) so the name always exists; now and then its own folder.
    let shared = w.path("srv/web/shared");
    let script = format!(
        r#"
const fs = require('fs');
process.chdir({shared:?});
const swap = (t) => {{ try {{ fs.symlinkSync(t, 'u.tmp'); fs.renameSync('u.tmp', 'uploads'); }} catch (e) {{ try {{ fs.unlinkSync('u.tmp'); }} catch (e) {{}} }} }};
const clear = () => {{ try {{ fs.unlinkSync('uploads'); }} catch (e) {{ try {{ fs.rmdirSync('uploads'); }} catch (e) {{}} }} }};
for (let i = 0; ; i++) {{
  // A folder where a link was (hoist's, or the app's own) goes first.
  if (i % 100 === 0) {{ clear(); try {{ fs.mkdirSync('uploads'); }} catch (e) {{}} clear(); }}
  swap({dir:?});
  swap({none:?});
  swap({state:?});
}}
"#,
        shared = shared.display().to_string(),
        dir = outside.join("dir").display().to_string(),
        none = outside.join("none").display().to_string(),
        state = w.path("state").display().to_string(),
    );
    let mut flipper = std::process::Command::new("setpriv")
        .arg(format!("--reuid={}", nobody.uid))
        .arg(format!("--regid={}", nobody.gid))
        .arg("--clear-groups")
        .args(["node", "-e", &script])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut live = 0;
    let mut refused = 0;
    for i in 1..=50 {
        let out = deploy(i);
        match out.status.code() {
            Some(0) => live += 1,
            Some(1) => refused += 1,
            _ => panic!("{out:?}"),
        }
    }
    let _ = flipper.kill();
    let _ = flipper.wait();
    eprintln!("50 deploys under a flipping link: {live} went live, {refused} refused");
    let after: Vec<_> = watched.iter().map(|p| snapshot(p)).collect();
    assert_eq!(after[0], before[0], "outside/ changed");
    // state/ changes (state.json, the cache), but nothing there became
    // the app's.
    for (path, uid, _, _) in &after[1] {
        assert_ne!(
            *uid,
            nobody.uid.as_raw(),
            "state/{path} was handed to the app"
        );
    }
    assert_eq!(live + refused, 50);
}

/// A plain world (hoist as root) whose apps run as `nobody`.
fn root_world_with_apps_user() -> World {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "this test starts the apps as another user: run it as root (CI does)"
    );
    let w = World::new();
    std::fs::set_permissions(w.path(""), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::remove_dir(w.path("pm2home")).unwrap();
    let cfg = std::fs::read_to_string(w.config_path())
        .unwrap()
        .replace("pm2:\n", "pm2:\n  user: nobody\n");
    std::fs::write(w.config_path(), cfg).unwrap();
    w
}
