//! hoist's own credentials never reach the apps (SPEC §1): pm2, the apps
//! and the hooks run with an environment of their own, built from a short
//! allowlist, whatever hoist itself was started with.

mod common;

use common::World;

/// What hoist is started with under systemd and with S3 keys in its
/// environment: none of it may reach an app or a hook.
const HOIST_ONLY: &[(&str, &str)] = &[
    ("AWS_ACCESS_KEY_ID", "AKIAHOISTONLY0000000"),
    ("AWS_SECRET_ACCESS_KEY", "hoist-only-secret-access-key"),
    ("AWS_SESSION_TOKEN", "hoist-only-session-token"),
    ("CREDENTIALS_DIRECTORY", "/run/credentials/hoist.service"),
    ("NOTIFY_SOCKET", "/run/systemd/notify-hoist-only"),
    ("HOIST_LOG", "debug"),
];

#[test]
fn apps_and_hooks_never_see_hoists_environment() {
    let w = World::new();
    let (url, sha) = w.make_release("v1", true, &[]);
    let hook_env = w.path("hook-env");
    w.manifest(
        "web",
        "v1",
        &url,
        &sha,
        &format!(
            "hooks:\n  before_activate: [[sh, -c, \"env > {}\"]]\n",
            hook_env.display()
        ),
    );
    w.commit("web v1");
    let out = w.hoist_env(&["once"], HOIST_ONLY);
    assert!(out.status.success(), "{out:?}");

    let (_, body) = common::http_get(w.app_port, "/procenv").expect("the app answers");
    let app_env: serde_json::Value = serde_json::from_str(&body).unwrap();
    let hook = std::fs::read_to_string(&hook_env).unwrap();
    for (name, value) in HOIST_ONLY {
        assert!(app_env.get(name).is_none(), "the app sees {name}");
        assert!(!body.contains(value), "the app sees the value of {name}");
        assert!(!hook.contains(name), "the hook sees {name}");
        assert!(!hook.contains(value), "the hook sees the value of {name}");
    }
    // What the app is told about itself, and what it needs to run.
    assert_eq!(app_env["HOIST_APP"], "web");
    assert_eq!(app_env["HOIST_RELEASE"], "v1");
    assert!(app_env.get("PATH").is_some());
    assert!(hook.contains("HOIST_RELEASE=v1"), "{hook}");
}

/// Runs only as root (it needs to start the apps as another user), with
/// the stock unprivileged user `nobody`, so the machine is left as it was.
#[test]
fn with_pm2_user_the_apps_cannot_read_hoists_credentials() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "pm2.user needs root to start the apps as another user: run the tests as root (CI does)"
    );
    let nobody = nix::unistd::User::from_name("nobody")
        .unwrap()
        .expect("this machine has the user nobody");
    use std::os::unix::fs::PermissionsExt;
    let mut w = World::new();
    // The world's folder is private to its creator; the apps must reach
    // their own release, like /srv/hoist on a server.
    std::fs::set_permissions(w.path(""), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::remove_dir(w.path("pm2home")).unwrap();
    // hoist's credentials, as the .deb's setup leaves them: hoist's alone.
    std::fs::create_dir_all(w.path("etc")).unwrap();
    let creds = ["git-token", "forge-token", "webhook-secret", "identity"];
    for c in creds {
        let p = w.path(&format!("etc/{c}"));
        if c == "identity" {
            // The server's own key, which opens the app's sealed .env.
            let out = w.hoist(&["keygen", "-o", p.to_str().unwrap()]);
            assert!(out.status.success(), "{out:?}");
            let public = String::from_utf8(out.stdout).unwrap();
            std::fs::create_dir_all(w.path("work/fleet")).unwrap();
            std::fs::write(
                w.path("work/fleet/test.yaml"),
                format!("hosts:\n  web-1: {{ key: \"{}\" }}\n", public.trim()),
            )
            .unwrap();
        } else {
            std::fs::write(&p, format!("{c}-of-hoist\n")).unwrap();
        }
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    w.extra_config = format!(
        "webhook_secret_file: {}\nidentity_file: {}\n",
        w.path("etc/webhook-secret").display(),
        w.path("etc/identity").display()
    );
    w.write_config();
    let cfg = std::fs::read_to_string(w.config_path())
        .unwrap()
        .replace("pm2:\n", "pm2:\n  user: nobody\n");
    std::fs::write(w.config_path(), cfg).unwrap();

    let (url, sha) = w.make_release("v1", true, &[]);
    w.manifest(
        "web",
        "v1",
        &url,
        &sha,
        "shared: [uploads/]\nsecrets:\n  - from: secrets/{environment}/web.env.age\n    to: .env\n",
    );
    let text = std::fs::read_to_string(w.path("work/apps/web.yaml"))
        .unwrap()
        .replace("shared: [.env]\n", "");
    std::fs::write(w.path("work/apps/web.yaml"), text).unwrap();
    std::fs::create_dir_all(w.path("work/secrets/test")).unwrap();
    let mut seal = std::process::Command::new(common::hoist_bin())
        .args(["secrets", "seal", "--env", "test", "--app", "web", "--repo"])
        .arg(w.path("work"))
        .arg("-")
        .arg(w.path("work/secrets/test/web.env.age"))
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    seal.stdin
        .take()
        .unwrap()
        .write_all(b"MINE=sealed\n")
        .unwrap();
    assert!(seal.wait().unwrap().success());
    w.commit("web v1");
    w.once(0);

    let get = |path: &str| common::http_get(w.app_port, path);
    assert_eq!(
        get("/uid").unwrap().1,
        nobody.uid.as_raw().to_string(),
        "the app runs as pm2.user"
    );
    for c in creds {
        let p = w.path(&format!("etc/{c}"));
        let (code, body) = get(&format!("/read?p={}", p.display())).unwrap();
        assert_eq!((code, body.as_str()), (403, "EACCES"), "{c}");
    }
    // Its own secret it reads (the plaintext is pm2.user's, 0600), and it
    // may write where it keeps its uploads.
    assert_eq!(get("/env").unwrap().1.trim(), "MINE=sealed");
    let live = std::fs::canonicalize(w.path("srv/web/secrets/live/.env")).unwrap();
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&live).unwrap();
    assert_eq!(
        (meta.uid(), meta.mode() & 0o777),
        (nobody.uid.as_raw(), 0o600)
    );
    let uploads = std::fs::metadata(w.path("srv/web/shared/uploads")).unwrap();
    assert_eq!(uploads.uid(), nobody.uid.as_raw());
    w.stop_daemon();
}

/// hoist under the shipped unit holds CAP_SETUID, CAP_SETGID and CAP_CHOWN
/// as ambient capabilities; the apps it starts must hold none. Runs hoist
/// as `nobody` with those ambient capabilities (setpriv, as root).
#[test]
fn apps_inherit_none_of_hoists_capabilities() {
    assert!(
        nix::unistd::Uid::effective().is_root() && which("setpriv").is_some(),
        "this test runs hoist as another user with capabilities: it needs root and setpriv"
    );
    let nobody = nix::unistd::User::from_name("nobody")
        .unwrap()
        .expect("this machine has the user nobody");
    let w = World::new();
    let (url, sha) = w.make_release("v1", true, &[]);
    w.manifest("web", "v1", &url, &sha, "");
    w.commit("web v1");
    // The whole world belongs to nobody, as /srv/hoist and /var/lib/hoist
    // belong to hoist's user on a server.
    let status = std::process::Command::new("chown")
        .args(["-R", &format!("{}", nobody.uid)])
        .arg(w.path(""))
        .status()
        .unwrap();
    assert!(status.success());
    let out = std::process::Command::new("setpriv")
        .args([
            &format!("--reuid={}", nobody.uid),
            &format!("--regid={}", nobody.gid),
            "--clear-groups",
            "--inh-caps=+setuid,+setgid,+chown",
            "--ambient-caps=+setuid,+setgid,+chown",
        ])
        .arg(common::hoist_bin())
        .args(["once", "--config"])
        .arg(w.config_path())
        .env("PM2_HOME", w.path("pm2home"))
        .env("HOME", w.path(""))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let (_, caps) = common::http_get(w.app_port, "/caps").expect("the app answers");
    for line in caps.lines() {
        let (name, value) = line.split_once(':').unwrap();
        if ["CapInh", "CapPrm", "CapEff", "CapAmb"].contains(&name) {
            assert_eq!(
                u64::from_str_radix(value.trim(), 16).unwrap(),
                0,
                "the app holds capabilities: {caps}"
            );
        }
    }
}

fn which(cmd: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(cmd))
            .find(|f| f.is_file())
    })
}
