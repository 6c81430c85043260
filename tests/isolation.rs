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
